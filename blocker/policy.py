"""What must be blocked, per operator, at an instant: the one computation zones and probes share.

Pure functions over validated orders. An entry is one RPZ owner name: a target's apex, or
`*.apex` when the order also blocks subdomains (an RPZ wildcard does not cover the apex).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from blocker.orders import Order

# When orders in force disagree on one name, the strongest action wins.
STRENGTH = {"nxdomain": 4, "nodata": 3, "drop": 2, "redirect": 1}


@dataclass(frozen=True)
class Entry:
    action: str
    order_ids: tuple[str, ...]


ZoneEntries = dict[str, Entry]  # owner name (relative to nothing: the full name) -> entry


def owners(order: Order) -> list[str]:
    """The RPZ owner names one order contributes, in file order."""
    out: list[str] = []
    for target in order.targets:
        out.append(target.name)
        if target.subdomains:
            out.append("*." + target.name)
    return out


def orders_in_force(orders: Iterable[Order], operator: str, at: datetime) -> list[Order]:
    return sorted((o for o in orders if operator in o.operators and o.active_at(at)), key=lambda o: o.id)


def desired_entries(orders: Iterable[Order], operator: str, at: datetime) -> ZoneEntries:
    return merge_entries(orders_in_force(orders, operator, at))


def merge_entries(active: Iterable[Order]) -> ZoneEntries:
    """Union of the owners of `active` orders (sorted by id), strongest action per owner."""
    out: dict[str, Entry] = {}
    cache: dict[tuple[str, str], Entry] = {}
    for order in active:
        single = cache.setdefault((order.action, order.id), Entry(order.action, (order.id,)))
        for owner in owners(order):
            prev = out.get(owner)
            if prev is None:
                out[owner] = single
            elif order.id not in prev.order_ids:
                action = prev.action if STRENGTH[prev.action] >= STRENGTH[order.action] else order.action
                out[owner] = Entry(action, (*prev.order_ids, order.id))
    return _inherit_wildcards(out)


def _inherit_wildcards(entries: ZoneEntries) -> ZoneEntries:
    """Fold an ancestor's `*.apex` entry into every owner it also covers.

    RPZ prefers an exact owner (or a longer wildcard) to a shorter wildcard, so without this a
    `redirect` for `www.example.com` would shadow an `nxdomain` for `*.example.com`: the name is
    in both orders and the strongest action must win.
    """
    if not any(owner.startswith("*.") for owner in entries):
        return entries
    out = dict(entries)
    for owner, entry in entries.items():
        labels = owner.split(".")
        if labels[0] == "*":
            labels = labels[1:]
        action, ids = entry.action, entry.order_ids
        for i in range(1, len(labels)):
            cover = entries.get("*." + ".".join(labels[i:]))
            if cover is None:
                continue
            if STRENGTH[cover.action] > STRENGTH[action]:
                action = cover.action
            ids = (*ids, *(oid for oid in cover.order_ids if oid not in ids))
        if action != entry.action or ids != entry.order_ids:
            out[owner] = Entry(action, tuple(sorted(ids)))
    return out


def blocked_names(entries: ZoneEntries) -> int:
    """Distinct blocked names (a wildcard twin is the same name's subdomains, not another name)."""
    return sum(1 for owner in entries if not owner.startswith("*."))


def next_transition(orders: Iterable[Order], after: datetime) -> datetime | None:
    """The first start or lift instant strictly after `after`: when the zones must change next."""
    upcoming = [t for o in orders for t in o.transitions() if t > after]
    return min(upcoming) if upcoming else None
