"""The fast computation of a zone's content: a full one at C speed, and the patch of a previous one.

A daemon recomputes the content every time a file changes; with a `PolicyCache` the new content
is a patch of the previous one (only the owners the changed orders name, and the descendants of
the wildcards among them, are recomputed), and it remembers which owners it touched so that the
diff and the rendering can be patched too. Everything here must give exactly what
`blocker.policy.reference` gives: tests/policy property-tests it over sequences of order edits.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import attrgetter, itemgetter

from blocker.orders.model import Order
from blocker.policy.model import Entry, ZoneContent, ZoneEntries, owners, sort_key
from blocker.vocab import STRENGTH

Key = tuple[tuple[str, str], ...]  # (order id, file digest) of the orders in force

_NAME = attrgetter("name")
_SUBDOMAINS = attrgetter("subdomains")


def merge_entries(active: Iterable[Order]) -> ZoneEntries:
    """`reference.merge_entries`, with the common case (an order naming no owner another order
    already named) at C speed."""
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


def folded_owners(entries: ZoneEntries, ordered: list[str]) -> dict[str, Entry]:
    """The owners `reference.fold_wildcards` changes, with their folded entries.

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
    """`reference.fold_wildcards`, walking only the subtrees of wildcards (`folded_owners`);
    `entries` itself when nothing folds."""
    folded = folded_owners(entries, ordered)
    if not folded:
        return entries
    out = dict(entries)
    out.update(folded)
    return out


def patch_order(ordered: list[str], removed: Iterable[str], added: Iterable[str]) -> list[str]:
    """`ordered` without `removed` (all in it) and with `added` (none in it), still canonical:
    a binary search per changed owner, then one pass of slices."""
    cuts: list[tuple[int, int, str]] = []  # (position, 0 insert before / 1 remove, owner)
    for owner in sorted(added, key=sort_key):
        cuts.append((bisect_left(ordered, sort_key(owner), key=sort_key), 0, owner))
    for owner in removed:
        cuts.append((bisect_left(ordered, sort_key(owner), key=sort_key), 1, owner))
    cuts.sort(key=itemgetter(0, 1))  # stable: added owners keep their canonical order
    out: list[str] = []
    at = 0
    for pos, kind, owner in cuts:
        out.extend(ordered[at:pos])  # a slice, not islice: that walks the list from its start each time
        if kind:
            at = pos + 1
        else:
            out.append(owner)
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
            return patch_order(previous.owners, removed, added)
    # `*.apex` sorts straight after `apex` (`*` is the lowest label): one sort places both, and
    # the list holds the very strings the entries are keyed by.
    return sorted(wanted, key=sort_key)


# --- the patch ------------------------------------------------------------------------------------

Merged = Callable[[str], Entry | None]  # owner -> its merged (pre-fold) entry, None: not in the zone


def _merged_of(content: ZoneContent, owner: str) -> Entry | None:
    assert content.unfolded is not None
    entry = content.unfolded.get(owner)
    return entry if entry is not None else content.entries.get(owner)


def _changed_orders(active: list[Order], prev: ZoneContent) -> tuple[list[Order], list[Order]] | None:
    """The orders of `prev` gone or changed, and the orders of `active` new or changed; None when
    `prev` cannot be patched or too much changed for a patch to pay."""
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
    return gone, came


def _merge_touched(active: list[Order], prev: ZoneContent, gone: list[Order],
                   came: list[Order]) -> dict[str, Entry | None]:
    """The merged (pre-fold) entries of every owner a gone or new order names, as
    `merge_entries` would build them (None: no order names it any more)."""
    changed_ids = {o.id for o in gone} | {o.id for o in came}
    new_by_id = {o.id: o for o in active}
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
    merged_new: dict[str, Entry | None] = {}
    for owner in touched:
        old = _merged_of(prev, owner)
        kept = [i for i in old.order_ids if i not in changed_ids] if old is not None else []
        kept.extend(namers.get(owner, ()))
        if not kept:
            merged_new[owner] = None
            continue
        kept.sort(key=position.__getitem__)
        action = max((new_by_id[i].action for i in kept), key=STRENGTH.__getitem__)
        merged_new[owner] = Entry(action, tuple(kept))
    return merged_new


def _to_refold(prev: ZoneContent, merged_new: dict[str, Entry | None], ordered: list[str]) -> set[str]:
    """The touched owners still in the zone, and every descendant of a wildcard whose entry changed."""
    refold = {o for o, entry in merged_new.items() if entry is not None}
    for owner, entry in merged_new.items():
        if owner.startswith("*.") and entry != _merged_of(prev, owner):
            prefix = sort_key(owner[2:]) + "\x00"
            lo = bisect_left(ordered, prefix, key=sort_key)
            hi = bisect_left(ordered, prefix[:-1] + "\x01", lo=lo, key=sort_key)
            refold.update(ordered[lo:hi])  # a slice: islice walked from the start for each wildcard
    return refold


def _fold_one(owner: str, entry: Entry, merged: Merged) -> Entry:
    """`owner`'s entry after folding in the wildcards of its ancestors (what `fold_wildcards`
    gives it: the strongest action, and, when a wildcard adds orders, the sorted union of ids)."""
    apex = owner[2:] if owner.startswith("*.") else owner
    labels = apex.split(".")
    action, ids = entry.action, entry.order_ids
    extra: set[str] = set()
    for k in range(1, len(labels)):
        cover = merged("*." + ".".join(labels[k:]))
        if cover is None:
            continue
        if STRENGTH[cover.action] > STRENGTH[action]:
            action = cover.action
        extra.update(oid for oid in cover.order_ids if oid not in ids)
    if action == entry.action and not extra:
        return entry
    return Entry(action, tuple(sorted({*ids, *extra})))


def _patched_counts(prev: ZoneContent, changed: Iterable[str], entries: ZoneEntries) -> Counter[str]:
    counts = Counter(prev.action_counts)
    for owner in changed:
        old, new = prev.entries.get(owner), entries.get(owner)
        if old is not None:
            counts[old.action] -= 1
        if new is not None:
            counts[new.action] += 1
    return +counts


def _patch(active: list[Order], key: Key, prev: ZoneContent) -> ZoneContent | None:
    """The content for `active` as a patch of `prev`, or None when a full computation is due
    (too much changed, or `prev` lacks what a patch needs)."""
    delta = _changed_orders(active, prev)
    if delta is None:
        return None
    assert prev.unfolded is not None
    merged_new = _merge_touched(active, prev, *delta)
    removed = [o for o, entry in merged_new.items() if entry is None and o in prev.entries]
    added = [o for o, entry in merged_new.items() if entry is not None and o not in prev.entries]
    ordered = patch_order(prev.owners, removed, added) if removed or added else list(prev.owners)

    def merged(owner: str) -> Entry | None:
        return merged_new[owner] if owner in merged_new else _merged_of(prev, owner)

    refold = _to_refold(prev, merged_new, ordered)
    entries = dict(prev.entries)
    unfolded = dict(prev.unfolded)
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
    changed = frozenset(o for o in merged_new.keys() | refold if entries.get(o) != prev.entries.get(o))
    wild = sum(1 for o in added if o.startswith("*.")) - sum(1 for o in removed if o.startswith("*."))
    return ZoneContent(entries, ordered, key, tuple(active), unfolded, weakref.ref(prev), changed,
                       known_counts=_patched_counts(prev, changed, entries),
                       known_names=prev.names + (len(added) - len(removed)) - wild)


def _full(active: list[Order], key: Key, previous: ZoneContent | None) -> ZoneContent:
    entries = merge_entries(active)
    ordered = canonical_order(entries, previous)
    folded = folded_owners(entries, ordered)
    if folded:
        unfolded = {owner: entries[owner] for owner in folded}
        entries = dict(entries)
        entries.update(folded)
    else:
        unfolded = {}
    return ZoneContent(entries, ordered, key, tuple(active), unfolded)


def zone_content(active: list[Order], previous: ZoneContent | None = None) -> ZoneContent:
    """The content of the orders `active` (in force, sorted by id): `previous` itself when they
    are its orders, a patch of it when a few changed, else a full computation."""
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
