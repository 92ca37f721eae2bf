"""What must be blocked, as data: entries, the zone content of one operator, canonical order.

An entry is one RPZ owner name: a target's apex, or `*.apex` when the order also blocks
subdomains (an RPZ wildcard does not cover the apex). A content also carries its owners in
canonical DNS order, which the zone file needs and which lets wildcard folding run in one
linear pass. Both computations of it (`blocker.policy.reference`, `blocker.policy.incremental`)
build on what is here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from itertools import repeat
from operator import itemgetter
from typing import NamedTuple

from blocker.orders.model import Order


class Entry(NamedTuple):
    action: str
    order_ids: tuple[str, ...]


ZoneEntries = dict[str, Entry]  # owner name (absolute, without the trailing dot) -> entry


@dataclass(frozen=True)
class ZoneContent:
    """One operator's zone as data: entries, and their owners in canonical order.

    The fields after `key` are bookkeeping for the next patch, not part of what the zone is:
    the orders in force (`key` in full), the merged entries of the owners that wildcard folding
    changed (None: unknown, so this content cannot be patched), and, for a patched content, the
    entries it was patched from and every owner whose entry may differ from them. A patch also
    knows its counts from the content it was patched from (`known_counts`, `known_names`): the
    properties below then need no pass over a million entries.
    """

    entries: ZoneEntries
    owners: list[str]
    key: tuple[tuple[str, str], ...] = ()  # (order id, file digest) of the orders in force
    orders: tuple[Order, ...] = field(default=(), compare=False, repr=False)
    unfolded: ZoneEntries | None = field(default=None, compare=False, repr=False)
    patched_from: Callable[[], ZoneContent | None] | None = field(default=None, compare=False, repr=False)
    touched: frozenset[str] | None = field(default=None, compare=False, repr=False)
    known_counts: Counter[str] | None = field(default=None, compare=False, repr=False)
    known_names: int | None = field(default=None, compare=False, repr=False)

    @cached_property
    def action_counts(self) -> Counter[str]:
        """Entries per action."""
        if self.known_counts is not None:
            return self.known_counts
        return Counter(map(itemgetter(0), self.entries.values()))

    @cached_property
    def actions(self) -> frozenset[str]:
        return frozenset(self.action_counts)

    @cached_property
    def names(self) -> int:
        return self.known_names if self.known_names is not None else blocked_names(self.entries)


def sort_key(name: str) -> str:
    """Canonical DNS order (RFC 4034 §6.1) as one string: labels right to left, NUL-separated.

    NUL sorts below every character a validated label may hold, so comparing these strings
    compares label sequences, shorter (the parent) first; `*` sorts below every other label.
    """
    return "\x00".join(name.split(".")[::-1])


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


def blocked_names(entries: ZoneEntries) -> int:
    """Distinct blocked names (a wildcard twin is the same name's subdomains, not another name)."""
    return len(entries) - sum(map(str.startswith, entries, repeat("*.")))


def next_transition(orders: Iterable[Order], after: datetime) -> datetime | None:
    """The first start or lift instant strictly after `after`: when the zones must change next."""
    upcoming = [t for o in orders for t in o.transitions() if t > after]
    return min(upcoming) if upcoming else None


def covers(owner: str, name: str) -> bool:
    """Whether the RPZ owner `owner` matches `name`: itself, or, for `*.apex`, a name below apex
    (an RPZ wildcard does not cover the apex)."""
    return owner == name or (owner.startswith("*.") and name.endswith(owner[1:]))


def lookup(entries: ZoneEntries, name: str) -> tuple[str, Entry] | None:
    """The owner and entry a resolver applies to `name`, as RPZ chooses: the exact owner, else the
    nearest `*.ancestor` (the longest wildcard). None: the zone does not touch `name`."""
    if name in entries:
        return name, entries[name]
    labels = name.split(".")
    for i in range(1, len(labels)):
        owner = "*." + ".".join(labels[i:])
        if owner in entries:
            return owner, entries[owner]
    return None
