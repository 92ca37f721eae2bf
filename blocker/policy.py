"""What must be blocked, per operator, at an instant: the one computation zones and probes share.

Pure functions over validated orders. An entry is one RPZ owner name: a target's apex, or
`*.apex` when the order also blocks subdomains (an RPZ wildcard does not cover the apex).
The result also carries the owners in canonical DNS order, which the zone file needs and
which lets wildcard folding run in one linear pass.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import NamedTuple

from blocker.orders import Order

# When orders in force disagree on one name, the strongest action wins.
STRENGTH = {"nxdomain": 4, "nodata": 3, "drop": 2, "redirect": 1}


class Entry(NamedTuple):
    action: str
    order_ids: tuple[str, ...]


ZoneEntries = dict[str, Entry]  # owner name (absolute, without the trailing dot) -> entry


@dataclass(frozen=True)
class ZoneContent:
    """One operator's zone as data: entries, and their owners in canonical order."""

    entries: ZoneEntries
    owners: list[str]
    key: tuple[tuple[str, str], ...] = ()  # (order id, file digest) of the orders in force

    @cached_property
    def actions(self) -> frozenset[str]:
        return frozenset(entry.action for entry in self.entries.values())

    @property
    def names(self) -> int:
        """Distinct blocked names (a wildcard twin is the same name's subdomains, not another name)."""
        return sum(1 for owner in self.entries if not owner.startswith("*."))


def sort_key(name: str) -> str:
    """Canonical DNS order (RFC 4034 §6.1) as one string: labels right to left, NUL-separated.

    NUL sorts below every character a validated label may hold, so comparing these strings
    compares label sequences, shorter (the parent) first; `*` sorts below every other label.
    """
    return "\x00".join(reversed(name.split(".")))


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


def merge_entries(active: Iterable[Order]) -> ZoneEntries:
    """Union of the owners of `active` orders (sorted by id), strongest action per owner."""
    out: dict[str, Entry] = {}
    for order in active:
        names = owners(order)
        single = Entry(order.action, (order.id,))
        shared = out.keys() & names
        if not shared:  # the common case, at C speed: no other order names these
            out.update(dict.fromkeys(names, single))
            continue
        for owner in names:
            prev = out.get(owner)
            if prev is None:
                out[owner] = single
            elif order.id not in prev.order_ids:
                action = prev.action if STRENGTH[prev.action] >= STRENGTH[order.action] else order.action
                out[owner] = Entry(action, (*prev.order_ids, order.id))
    return out


def fold_wildcards(entries: ZoneEntries, ordered: list[str]) -> ZoneEntries:
    """Fold an ancestor's `*.apex` entry into every owner it also covers.

    RPZ prefers an exact owner (or a longer wildcard) to a shorter wildcard, so without this a
    `redirect` for `www.example.com` would shadow an `nxdomain` for `*.example.com`: the name is
    in both orders and the strongest action must win. In canonical order every descendant of a
    name follows it directly, so a stack of the wildcards in scope does this in one pass.
    """
    stack: list[tuple[str, Entry]] = []  # (".apex", wildcard entry), innermost last
    folded: ZoneEntries | None = None
    for owner in ordered:
        while stack and not owner.endswith(stack[-1][0]):
            stack.pop()
        if stack:
            entry = entries[owner]
            action, ids = entry.action, entry.order_ids
            for _, cover in stack:
                if STRENGTH[cover.action] > STRENGTH[action]:
                    action = cover.action
                ids = (*ids, *(oid for oid in cover.order_ids if oid not in ids))
            if action != entry.action or ids != entry.order_ids:
                if folded is None:
                    folded = dict(entries)
                folded[owner] = Entry(action, tuple(sorted(ids)))
        if owner.startswith("*."):
            stack.append((owner[1:], entries[owner]))
    return entries if folded is None else folded


def canonical_order(names: Iterable[str], previous: ZoneContent | None = None) -> list[str]:
    """Owners in canonical order; patches the previous order when only a few names changed."""
    wanted = names if isinstance(names, dict | set) else set(names)
    if previous is not None:
        added = wanted.keys() - previous.entries.keys() if isinstance(wanted, dict) else wanted - set(previous.owners)
        removed = previous.entries.keys() - wanted
        if len(added) + len(removed) < max(1000, len(previous.owners) // 20):
            ordered = [o for o in previous.owners if o not in removed] if removed else list(previous.owners)
            for owner in added:
                insort(ordered, owner, key=sort_key)
            return ordered
    apexes = sorted((o for o in wanted if not o.startswith("*.")), key=sort_key)
    out: list[str] = []
    for apex in apexes:  # `*.apex` sorts straight after `apex`: `*` is the lowest label
        out.append(apex)
        if "*." + apex in wanted:
            out.append("*." + apex)
    return out


def zone_content(active: list[Order], previous: ZoneContent | None = None) -> ZoneContent:
    key = tuple((o.id, o.digest) for o in active)
    if previous is not None and previous.key == key:
        return previous
    entries = merge_entries(active)
    ordered = canonical_order(entries, previous)
    return ZoneContent(fold_wildcards(entries, ordered), ordered, key)


@dataclass
class PolicyCache:
    """The last zone content per operator: a daemon keeps one, so an unchanged operator costs
    nothing, operators with the same orders share one computation, and one changed file costs
    a small patch of the canonical order instead of a full sort."""

    last: dict[str, ZoneContent] = field(default_factory=dict)

    def get(self, operator: str, active: list[Order]) -> ZoneContent:
        key = tuple((o.id, o.digest) for o in active)
        for content in self.last.values():
            if content.key == key:
                self.last[operator] = content
                return content
        content = zone_content(active, self.last.get(operator))
        self.last[operator] = content
        return content


def desired(orders: Iterable[Order], operator: str, at: datetime, cache: PolicyCache | None = None) -> ZoneContent:
    active = orders_in_force(orders, operator, at)
    return cache.get(operator, active) if cache is not None else zone_content(active)


def desired_entries(orders: Iterable[Order], operator: str, at: datetime) -> ZoneEntries:
    return desired(orders, operator, at).entries


def blocked_names(entries: ZoneEntries) -> int:
    """Distinct blocked names (a wildcard twin is the same name's subdomains, not another name)."""
    return sum(1 for owner in entries if not owner.startswith("*."))


def next_transition(orders: Iterable[Order], after: datetime) -> datetime | None:
    """The first start or lift instant strictly after `after`: when the zones must change next."""
    upcoming = [t for o in orders for t in o.transitions() if t > after]
    return min(upcoming) if upcoming else None
