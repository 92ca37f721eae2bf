"""What must be blocked, per operator, at an instant: the one computation zones and probes share.

Pure functions over validated orders. An entry is one RPZ owner name: a target's apex, or
`*.apex` when the order also blocks subdomains (an RPZ wildcard does not cover the apex).
The result also carries the owners in canonical DNS order, which the zone file needs and
which lets wildcard folding run in one linear pass.

A daemon recomputes the content every time a file changes; with a `PolicyCache` the new
content is a patch of the previous one (only the owners the changed orders name, and the
descendants of the wildcards among them, are recomputed), and it remembers which owners it
touched so that the diff and the rendering can be patched too.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from itertools import compress, repeat
from operator import attrgetter, itemgetter
from typing import NamedTuple

from blocker.orders.model import Order

# When orders in force disagree on one name, the strongest action wins.
STRENGTH = {"nxdomain": 4, "nodata": 3, "drop": 2, "redirect": 1}


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
    entries it was patched from and every owner whose entry may differ from them.
    """

    entries: ZoneEntries
    owners: list[str]
    key: tuple[tuple[str, str], ...] = ()  # (order id, file digest) of the orders in force
    orders: tuple[Order, ...] = field(default=(), compare=False, repr=False)
    unfolded: ZoneEntries | None = field(default=None, compare=False, repr=False)
    patched_from: Callable[[], ZoneContent | None] | None = field(default=None, compare=False, repr=False)
    touched: frozenset[str] | None = field(default=None, compare=False, repr=False)

    @cached_property
    def action_counts(self) -> Counter[str]:
        """Entries per action (a patched content derives it from the one it was patched from)."""
        return Counter(map(itemgetter(0), self.entries.values()))

    @cached_property
    def actions(self) -> frozenset[str]:
        return frozenset(self.action_counts)

    @cached_property
    def names(self) -> int:
        return blocked_names(self.entries)


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


_NAME = attrgetter("name")
_SUBDOMAINS = attrgetter("subdomains")


def merge_entries(active: Iterable[Order]) -> ZoneEntries:
    """Union of the owners of `active` orders (sorted by id), strongest action per owner."""
    out: dict[str, Entry] = {}
    for order in active:
        # The owners of `owners(order)`, apexes first then wildcards (the entries do not depend
        # on the order of one order's owners), built at C speed.
        targets = order.targets
        names = list(map(_NAME, targets))
        names += map("*.".__add__, compress(names, map(_SUBDOMAINS, targets)))
        single = Entry(order.action, (order.id,))
        if out.keys().isdisjoint(names):  # the common case, at C speed: no other order names these
            out.update(zip(names, repeat(single)))
            continue
        for owner in names:
            prev = out.get(owner)
            if prev is None:
                out[owner] = single
            elif order.id not in prev.order_ids:
                action = prev.action if STRENGTH[prev.action] >= STRENGTH[order.action] else order.action
                out[owner] = Entry(action, (*prev.order_ids, order.id))
    return out


def _fold_range(entries: ZoneEntries, ordered: list[str], start: int, stop: int,
                folded: dict[str, Entry]) -> None:
    """The wildcard folding pass over `ordered[start:stop]`, a range no outer wildcard covers."""
    stack: list[tuple[str, Entry]] = []  # (".apex", wildcard entry), innermost last
    for owner in ordered[start:stop]:  # a slice: islice would walk the list from its start
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
                folded[owner] = Entry(action, tuple(sorted(ids)))
        if owner.startswith("*."):
            stack.append((owner[1:], entries[owner]))


def _fold(entries: ZoneEntries, ordered: list[str]) -> dict[str, Entry]:
    """The owners wildcard folding changes, with their folded entries.

    Only an owner inside the subtree of a `*.apex` can change, and in canonical order that
    subtree follows `*.apex` directly: so only wildcards followed by a descendant start a range
    to walk, and the usual zone (no name below another's wildcard) costs one pass at C speed.
    """
    folded: dict[str, Entry] = {}
    n = len(ordered)
    wild = compress(range(n), map(str.startswith, ordered, repeat("*.")))
    end = 0
    for i in wild:
        if i < end or i + 1 >= n:
            continue
        suffix = ordered[i][1:]
        if not ordered[i + 1].endswith(suffix):
            continue
        j = i + 2
        while j < n and ordered[j].endswith(suffix):
            j += 1
        _fold_range(entries, ordered, i, j, folded)
        end = j
    return folded


def fold_wildcards(entries: ZoneEntries, ordered: list[str]) -> ZoneEntries:
    """Fold an ancestor's `*.apex` entry into every owner it also covers.

    RPZ prefers an exact owner (or a longer wildcard) to a shorter wildcard, so without this a
    `redirect` for `www.example.com` would shadow an `nxdomain` for `*.example.com`: the name is
    in both orders and the strongest action must win. In canonical order every descendant of a
    name follows it directly, so a stack of the wildcards in scope does this in one pass.
    """
    folded = _fold(entries, ordered)
    if not folded:
        return entries
    out = dict(entries)
    out.update(folded)
    return out


def _patch_order(ordered: list[str], removed: Iterable[str], added: Iterable[str]) -> list[str]:
    """`ordered` without `removed` (all in it) and with `added` (none in it), still canonical:
    a binary search per changed owner, then one pass of slices."""
    cuts: list[tuple[int, int, str | None]] = []  # (position, 0 insert before / 1 remove, owner)
    for owner in sorted(added, key=sort_key):
        cuts.append((bisect_left(ordered, sort_key(owner), key=sort_key), 0, owner))
    for owner in removed:
        cuts.append((bisect_left(ordered, sort_key(owner), key=sort_key), 1, None))
    cuts.sort(key=itemgetter(0, 1))  # stable: added owners keep their canonical order
    out: list[str] = []
    at = 0
    for pos, kind, owner in cuts:
        out.extend(ordered[at:pos])  # a slice, not islice: that walks the list from its start each time
        if kind:
            at = pos + 1
        else:
            out.append(owner)  # type: ignore[arg-type]
            at = pos
    out.extend(ordered[at:])
    return out


def canonical_order(names: Iterable[str], previous: ZoneContent | None = None) -> list[str]:
    """Owners in canonical order; patches the previous order when only a few names changed."""
    wanted = names if isinstance(names, dict | set) else set(names)
    if previous is not None:
        added = wanted.keys() - previous.entries.keys() if isinstance(wanted, dict) else wanted - set(previous.owners)
        removed = previous.entries.keys() - wanted
        if len(added) + len(removed) < max(1000, len(previous.owners) // 20):
            return _patch_order(previous.owners, removed, added)
    # `*.apex` sorts straight after `apex` (`*` is the lowest label): one sort places both, and
    # the list holds the very strings the entries are keyed by.
    return sorted(wanted, key=sort_key)


def _merged_of(content: ZoneContent, owner: str) -> Entry | None:
    assert content.unfolded is not None
    entry = content.unfolded.get(owner)
    return entry if entry is not None else content.entries.get(owner)


def _patch(active: list[Order], key: tuple[tuple[str, str], ...], prev: ZoneContent) -> ZoneContent | None:
    """The content for `active` as a patch of `prev`, or None when a full computation is due
    (too much changed, or `prev` lacks what a patch needs)."""
    if prev.unfolded is None or len(prev.orders) != len(prev.key):
        return None
    new_by_id = {o.id: o for o in active}
    old_by_id = {o.id: o for o in prev.orders}
    if len(new_by_id) != len(active) or len(old_by_id) != len(prev.orders):
        return None
    gone = [o for o in prev.orders if (n := new_by_id.get(o.id)) is None or n.digest != o.digest]
    came = [o for o in active if (p := old_by_id.get(o.id)) is None or p.digest != o.digest]
    if sum(len(o.targets) for o in gone) + sum(len(o.targets) for o in came) > max(1000, len(prev.owners) // 8):
        return None
    changed_ids = {o.id for o in gone} | {o.id for o in came}
    position = {o.id: i for i, o in enumerate(active)}
    namers: dict[str, list[str]] = {}  # owner -> ids of new or changed orders that name it
    for order in came:
        for owner in owners(order):
            ids = namers.setdefault(owner, [])
            if order.id not in ids:
                ids.append(order.id)
    touched = set(namers)
    for order in gone:
        touched.update(owners(order))

    # 1. Merged (pre-fold) entries of the touched owners, as merge_entries would build them.
    merged_new: dict[str, Entry | None] = {}
    for owner in touched:
        old = _merged_of(prev, owner)
        ids = [i for i in old.order_ids if i not in changed_ids] if old is not None else []
        ids.extend(namers.get(owner, ()))
        if not ids:
            merged_new[owner] = None
            continue
        ids.sort(key=position.__getitem__)
        action = max((new_by_id[i].action for i in ids), key=STRENGTH.__getitem__)
        merged_new[owner] = Entry(action, tuple(ids))
    removed = [o for o in touched if merged_new[o] is None and o in prev.entries]
    added = [o for o in touched if merged_new[o] is not None and o not in prev.entries]
    ordered = _patch_order(prev.owners, removed, added) if removed or added else list(prev.owners)

    def merged(owner: str) -> Entry | None:
        if owner in merged_new:
            return merged_new[owner]
        return _merged_of(prev, owner)

    # 2. Refold the touched owners, and every descendant of a wildcard whose entry changed.
    refold = {o for o in touched if merged_new[o] is not None}
    for owner in touched:
        if owner.startswith("*.") and merged_new[owner] != _merged_of(prev, owner):
            prefix = sort_key(owner[2:]) + "\x00"
            lo = bisect_left(ordered, prefix, key=sort_key)
            hi = bisect_left(ordered, prefix[:-1] + "\x01", lo=lo, key=sort_key)
            refold.update(ordered[lo:hi])  # a slice: islice walked from the start for each wildcard
    entries = dict(prev.entries)
    unfolded = dict(prev.unfolded)  # type: ignore[arg-type]
    for owner in removed:
        del entries[owner]
        unfolded.pop(owner, None)
    for owner in refold:
        entry = merged(owner)
        assert entry is not None
        folded = _fold_one(owner, entry, merged)
        entries[owner] = folded
        if folded is entry:
            unfolded.pop(owner, None)
        else:
            unfolded[owner] = entry
    # What differs from `prev`: an order's new version names mostly what the old one did.
    prev_entries = prev.entries
    changed = frozenset(o for o in touched | refold if entries.get(o) != prev_entries.get(o))
    content = ZoneContent(entries, ordered, key, tuple(active), unfolded, weakref.ref(prev), changed)
    wild = sum(1 for o in added if o.startswith("*.")) - sum(1 for o in removed if o.startswith("*."))
    content.__dict__["names"] = prev.names + (len(added) - len(removed)) - wild
    counts = Counter(prev.action_counts)
    for owner in changed:
        old, new = prev_entries.get(owner), entries.get(owner)
        if old is not None:
            counts[old.action] -= 1
        if new is not None:
            counts[new.action] += 1
    content.__dict__["action_counts"] = +counts
    return content


def _fold_one(owner: str, entry: Entry, merged: object) -> Entry:
    """`owner`'s entry after folding in the wildcards of its ancestors (what `fold_wildcards`
    gives it: the strongest action, and, when a wildcard adds orders, the sorted union of ids)."""
    lookup = merged  # (owner) -> merged entry or None
    apex = owner[2:] if owner.startswith("*.") else owner
    labels = apex.split(".")
    action, ids = entry.action, entry.order_ids
    extra: set[str] = set()
    for k in range(1, len(labels)):
        cover = lookup("*." + ".".join(labels[k:]))  # type: ignore[operator]
        if cover is None:
            continue
        if STRENGTH[cover.action] > STRENGTH[action]:
            action = cover.action
        extra.update(oid for oid in cover.order_ids if oid not in ids)
    if action == entry.action and not extra:
        return entry
    return Entry(action, tuple(sorted({*ids, *extra})))


def _full(active: list[Order], key: tuple[tuple[str, str], ...], previous: ZoneContent | None) -> ZoneContent:
    entries = merge_entries(active)
    ordered = canonical_order(entries, previous)
    folded = _fold(entries, ordered)
    if folded:
        unfolded = {owner: entries[owner] for owner in folded}
        entries = dict(entries)
        entries.update(folded)
    else:
        unfolded = {}
    return ZoneContent(entries, ordered, key, tuple(active), unfolded)


def zone_content(active: list[Order], previous: ZoneContent | None = None) -> ZoneContent:
    key = tuple((o.id, o.digest) for o in active)
    if previous is not None and previous.key == key:
        return previous
    if previous is not None:
        patched = _patch(active, key, previous)
        if patched is not None:
            return patched
    return _full(active, key, previous)


@dataclass
class PolicyCache:
    """The last zone content per operator: a daemon keeps one, so an unchanged operator costs
    nothing, operators with the same orders share one computation, and one changed file costs
    a patch of the owners it names instead of a full computation."""

    last: dict[str, ZoneContent] = field(default_factory=dict)

    def get(self, operator: str, active: list[Order]) -> ZoneContent:
        key = tuple((o.id, o.digest) for o in active)
        for content in list(self.last.values()):  # a snapshot: the daemon plans operators at once
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
    return len(entries) - sum(map(str.startswith, entries, repeat("*.")))


def next_transition(orders: Iterable[Order], after: datetime) -> datetime | None:
    """The first start or lift instant strictly after `after`: when the zones must change next."""
    upcoming = [t for o in orders for t in o.transitions() if t > after]
    return min(upcoming) if upcoming else None
