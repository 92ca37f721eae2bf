"""What a probe must find on an operator's resolvers at an instant, from the same policy code the
zones come from: active names blocked, recently lifted names resolving, control names resolving.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from blocker.config import OperatorConfig
from blocker.names import MAX_NAME
from blocker.orders import Order
from blocker.policy import ZoneContent, desired
from blocker.probe import Check, ResolverTarget, Signature


def _covered(name: str, entries: dict) -> bool:
    """Is `name` still blocked by the zone, itself or through an ancestor's wildcard?"""
    if name in entries:
        return True
    labels = name.split(".")
    return any("*." + ".".join(labels[i:]) in entries for i in range(1, len(labels)))


RANDOM_LABEL_PREFIX = "probe-"


def random_label() -> str:
    # A fresh label per pass: the answer cannot come from a cache filled by an earlier probe.
    return RANDOM_LABEL_PREFIX + secrets.token_hex(4)


def _under(label: str, parent: str) -> str | None:
    """`label.parent`, the label cut to fit a name's 253 octets; None when no subdomain fits
    (a name that long has no subdomain to probe, and a too-long one would fail the whole pass)."""
    room = MAX_NAME - len(parent) - 1
    if room < 1:
        return None
    if len(label) > room:
        label = label[-room:].lstrip("-") or label[-1]
    return f"{label}.{parent}"


def expected_checks(orders: Iterable[Order], operator: str, at: datetime, *, recent_days: int,
                    control_names: Iterable[str], content: ZoneContent | None = None,
                    label: str | None = None) -> list[Check]:
    orders = list(orders)
    content = content or desired(orders, operator, at)
    entries = content.entries
    sub = label or random_label()
    checks: list[Check] = []
    for owner in content.owners:
        action, ids = entries[owner]
        if owner.startswith("*."):
            name = _under(sub, owner[2:])
            if name is not None:
                checks.append(Check(name, "blocked", action, ids, kind="subdomain"))
        else:
            checks.append(Check(owner, "blocked", action, ids, kind="target"))
    since = at - timedelta(days=recent_days)
    seen: set[str] = set()
    for order in sorted(orders, key=lambda o: o.id):
        if operator not in order.operators or not since < order.end <= at:
            continue
        for target in order.targets:
            names = [target.name] + ([_under(sub, target.name)] if target.subdomains else [])
            for name in names:
                if name is not None and name not in seen and not _covered(name, entries):
                    seen.add(name)
                    checks.append(Check(name, "resolves", None, (order.id,), kind="lifted"))
    for name in control_names:
        if not _covered(name, entries):
            checks.append(Check(name, "resolves", None, (), kind="control"))
    return checks


def signature_for(op: OperatorConfig) -> Signature:
    return Signature(
        rpz_origin=op.origin, nxdomain_authority=op.nxdomain_authority, redirect_a=op.redirect.a,
        redirect_aaaa=op.redirect.aaaa, redirect_cname=op.redirect.cname,
    )


def targets_for(op: OperatorConfig) -> list[ResolverTarget]:
    return [ResolverTarget(r.host, r.port, r.name, r.site, r.transports) for r in op.resolvers]
