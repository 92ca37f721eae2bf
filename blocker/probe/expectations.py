"""What a probe must find on an operator's resolvers at an instant, from the same policy code the
zones come from: active names blocked, recently lifted names resolving, control names resolving.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from blocker.config.model import OperatorConfig
from blocker.orders.model import Order
from blocker.orders.names import MAX_NAME
from blocker.policy import ZoneContent, ZoneEntries, desired
from blocker.probe.model import Check, ResolverTarget, Signature


def _covered(name: str, entries: Mapping[str, Any]) -> bool:
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


# --------------------------------------------------------------------------------------------
# Which canary serial proves a check (see probe.prove)

# One publish of an operator's zone: (serial, published at, ids of the orders with entries in it).
Publish = tuple[int, datetime, frozenset[str]]


@dataclass(frozen=True)
class Published:
    """What the operator's resolvers were last given, as far as this process can know it.

    serial and entries: the zone file in the zones folder. history (oldest first, this operator
    only) and since (order id -> when the version of it now in force was stored) come from the
    state directory; without them, only the published serial itself proves anything.
    """

    serial: int
    entries: ZoneEntries
    history: Sequence[Publish] = ()
    since: Mapping[str, datetime] = field(default_factory=dict)


class PublishHistory(Protocol):
    """What proof_serials needs of the state (blocker.record.state.State has it): probe/ stays
    below record/ in the data flow, so it names the two methods, not the class."""

    def zone_history(self) -> Sequence[tuple[str, int, str, datetime, Sequence[str]]]: ...

    def order_since(self) -> Mapping[str, datetime]: ...


def published_from_state(serial: int, entries: ZoneEntries, operator: str,
                         state: PublishHistory | None) -> Published:
    """Published with the history the state holds (a State, or None)."""
    if state is None:
        return Published(serial, entries)
    history = [(s, at, frozenset(ids)) for op, s, _sum, at, ids in state.zone_history() if op == operator]
    return Published(serial, entries, history, state.order_since())


def _owner_of(check: Check) -> str:
    if check.kind == "subdomain":
        return "*." + check.name.split(".", 1)[1]
    return check.name


def proof_serials(checks: Sequence[Check], orders: Iterable[Order], published: Published | None) -> list[int | None]:
    """Per check, the canary serial a resolver must serve (or serve a later one) for its
    `blocked`/`resolves` answer to prove the order: the first serial of the unbroken run of
    publishes, ending with the published zone, that holds the entry (a lift: that no longer
    covers the name). None when no published zone does: such a check can only be `unverified`.

    Exact where the state allows, never early: a publish counts as holding an entry only when it
    lists an order of that entry and was published after the order's version now in force was
    stored (an edit may have added the target); a publish counts as not covering a lifted name
    only when every order it lists is known, in the version it had then, not to cover it.
    Without a history (no state, or a zone file the state did not record last) the published
    serial itself is the only proof. A control check gets the published serial (prove() does not
    use it).
    """
    if published is None:
        return [None] * len(checks)
    serial, entries = published.serial, published.entries
    run = _Run(published, checks, orders)
    first_holding, first_clear, history = run.first_holding, run.first_clear, run.history
    out: list[int | None] = []
    append = out.append
    for check in checks:
        kind = check.kind
        if kind == "target":  # the common case, first: 10^6 checks in a pass
            entry = entries.get(check.name)
            if entry is None or entry[0] != check.action:
                append(None)
            else:
                append(first_holding(entry[1]) if history else serial)
        elif kind == "control":
            append(serial)
        elif check.expected == "blocked":
            entry = entries.get(_owner_of(check))
            if entry is None or entry.action != check.action:
                append(None)
            else:
                append(first_holding(tuple(entry.order_ids)) if history else serial)
        elif _covered(check.name, entries):
            append(None)
        else:
            append(first_clear(check.name) if history else serial)
    return out


class _Run:
    """The unbroken run of publishes ending with the published zone (empty when the state did not
    record that zone last), and where in it an entry starts to hold or a lifted name to be clear:
    remembered per set of orders, since many checks share them (see proof_serials)."""

    def __init__(self, published: Published, checks: Sequence[Check], orders: Iterable[Order]) -> None:
        self.serial = published.serial
        history = list(published.history)
        if not history or history[-1][0] != self.serial:
            history = []
        self.history = history
        self.since = published.since
        self.by_id = {o.id: o for o in orders}
        self.holding: dict[tuple[str, ...], int] = {}
        self.clear: dict[frozenset[str], int] = {}
        self.coverers = (_coverers([c.name for c in checks if c.kind == "lifted"], self.by_id.values())
                         if history else {})
        self.unknown: dict[int, bool] = {}

    def holds(self, row: Publish, ids: tuple[str, ...]) -> bool:
        since = self.since
        return any(i in row[2] and i in since and row[1] >= since[i] for i in ids)

    def first_holding(self, ids: tuple[str, ...]) -> int:
        found = self.holding.get(ids)
        if found is None:
            found = self.serial
            for row in reversed(self.history):
                if not self.holds(row, ids):
                    break
                found = row[0]
            self.holding[ids] = found
        return found

    def opaque(self, index: int) -> bool:
        """Does this publish list an order whose targets then are unknown (so it may cover anything)?"""
        if index not in self.unknown:
            row, by_id, since = self.history[index], self.by_id, self.since
            self.unknown[index] = any(i not in by_id or i not in since or row[1] < since[i] for i in row[2])
        return self.unknown[index]

    def first_clear(self, name: str) -> int:
        by = self.coverers.get(name, frozenset())
        found = self.clear.get(by)
        if found is None:
            found = self.serial
            for index in range(len(self.history) - 1, -1, -1):
                row = self.history[index]
                if self.opaque(index) or by & row[2]:
                    break
                found = row[0]
            self.clear[by] = found
        return found


def _coverers(names: Iterable[str], orders: Iterable[Order]) -> dict[str, frozenset[str]]:
    """name -> ids of the orders whose targets (as stored now) cover it: one pass over every target."""
    wanted = set(names)
    if not wanted:
        return {}
    under: dict[str, list[str]] = {}
    for name in wanted:
        labels = name.split(".")
        for i in range(1, len(labels)):
            under.setdefault(".".join(labels[i:]), []).append(name)
    found: dict[str, set[str]] = {}
    for order in orders:
        for target in order.targets:
            if target.name in wanted:
                found.setdefault(target.name, set()).add(order.id)
            if target.subdomains:
                for name in under.get(target.name, ()):
                    found.setdefault(name, set()).add(order.id)
    return {name: frozenset(ids) for name, ids in found.items()}
