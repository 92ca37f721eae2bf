"""Plans: what publishing the orders in force at an instant would change, zone by zone, and why.

A plan is computed from the orders and the zones last published, never from memory of what
was meant, so `plan` shows exactly what `apply` will write. Removals that no order's end
explains (a deleted file, a bad checkout) are held back until a human says `--force`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import compress, filterfalse, repeat
from operator import attrgetter, eq, itemgetter, ne
from pathlib import Path
from typing import Any, NamedTuple, cast, overload

from blocker.config.model import Config
from blocker.gcpause import no_cyclic_gc
from blocker.orders.legaltime import fmt_instant
from blocker.orders.model import Order
from blocker.policy import Entry, PolicyCache, ZoneContent, ZoneEntries, canonical_order, desired, sort_key
from blocker.record.state import State
from blocker.zone.read import ZoneMeta, entries_from_bytes, read_meta, read_regular, structural_check
from blocker.zone.render import RenderedZone, prune_renderings, render_body

JUSTIFIED = frozenset({"expired", "lifted"})

class Change(NamedTuple):
    owner: str
    kind: str  # "add" | "remove" | "change"
    action: str | None
    order_ids: tuple[str, ...]
    old_action: str | None
    old_order_ids: tuple[str, ...]
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.owner, "change": self.kind, "action": self.action, "order_ids": list(self.order_ids),
            "old_action": self.old_action, "old_order_ids": list(self.old_order_ids), "reasons": list(self.reasons),
        }


ChangeFields = tuple[str, str, str | None, tuple[str, ...], str | None, tuple[str, ...], tuple[str, ...]]
ChangeTail = tuple[str, str | None, tuple[str, ...], str | None, tuple[str, ...], tuple[str, ...]]  # after the owner


def change_reference(fields: ChangeFields) -> Change:
    """What `change_new(Change, fields)` stands for: the NamedTuple's own constructor."""
    return Change(*fields)


# `change_reference` at C speed, called as `change_new(Change, fields)`: NamedTuple's
# keyword-capable `__new__` is a Python call per change, and a first publish of 1M names builds
# 1M of them (34% of its diff). `tuple.__new__` fills the same fields in the same order with no
# Python frame (a functools.partial of it measured 10-25% slower, so the class is passed at each
# call); tests/publish/test_plan_fast.py checks both give equal Changes.
change_new: Callable[[type[Change], ChangeFields], Change] = cast(
    "Callable[[type[Change], ChangeFields], Change]", tuple.__new__)


@dataclass
class OperatorPlan:
    operator: str
    previous: ZoneMeta | None
    zone: RenderedZone
    entries: ZoneEntries
    changes: Sequence[Change] = field(default_factory=list)
    held: list[Change] = field(default_factory=list)
    guard: str = ""  # why removals were held, in words
    # The ids `entries` names, when the plan knows them without a pass over every entry.
    known_order_ids: list[str] | None = field(default=None, repr=False, compare=False)
    # Why the zone file must be rewritten although its content does not change ("" when it is
    # what was last published): edited, truncated, emptied, deleted, replaced behind our back.
    restore: str = ""
    file_sha256: str | None = None  # of the zone file as found (None: missing or not a regular file)
    published_sha256: str = ""  # of the bytes last published, as the state holds them ("" unknown)
    # Set by blocker.publish.lean.shed, which empties `changes`: what publishing needs of them.
    shed: Any = field(default=None, repr=False, compare=False)

    @property
    def order_ids(self) -> list[str]:
        """Sorted ids of every order an entry of the zone names (what publishing records):
        `sorted({i for e in entries.values() for i in e.order_ids})`, without that pass over
        1.5M entries when the orders in force say it."""
        if self.known_order_ids is None:
            self.known_order_ids = sorted({i for e in self.entries.values() for i in e.order_ids})
        return self.known_order_ids

    @property
    def changed(self) -> bool:
        return self.previous is None or self.previous.checksum != self.zone.checksum

    @property
    def writes(self) -> bool:
        """Whether applying this plan writes the zone file (new content, or a damaged file)."""
        return self.changed or bool(self.restore)

    def to_json(self) -> dict[str, Any]:
        return {
            "operator": self.operator,
            "changed": self.changed,
            "restore": self.restore,
            "file_sha256": self.file_sha256,
            "previous_serial": None if self.previous is None else self.previous.serial,
            "previous_checksum": None if self.previous is None else self.previous.checksum,
            "checksum": self.zone.checksum,
            "names": self.zone.names,
            "records": self.zone.entries,
            "added": [c.to_json() for c in of_kind(self.changes, "add")],
            "removed": [c.to_json() for c in of_kind(self.changes, "remove")],
            "changed_entries": [c.to_json() for c in of_kind(self.changes, "change")],
            "held": [c.to_json() for c in self.held],
            "guard": self.guard,
        }


@dataclass
class Plan:
    at: datetime
    operators: list[OperatorPlan]
    orders: dict[str, Order]
    warnings: list[str] = field(default_factory=list)  # one line each: shown, never fatal

    @property
    def checksum(self) -> str:
        """Identifies the reviewed change: same previous and next content per zone (and, for a
        zone file found damaged, that it is rewritten)."""
        text = "".join(
            f"{p.operator} {p.previous.checksum if p.previous else '-'} {p.zone.checksum}"
            + (" rewrite" if p.restore and not p.changed else "") + "\n" for p in self.operators
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def result(self) -> str:
        """What the zones are once this plan is applied: an apply of a checksum already applied
        finds the zones in this state, and has nothing to do."""
        text = "".join(f"{p.operator} {p.zone.checksum}\n" for p in self.operators)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def has_changes(self) -> bool:
        """Whether applying writes a zone file: new content, or a damaged file rewritten."""
        return any(p.writes for p in self.operators)

    @property
    def held(self) -> list[tuple[str, Change]]:
        return [(p.operator, c) for p in self.operators for c in p.held]

    def to_json(self) -> dict[str, Any]:
        return {"at": fmt_instant(self.at), "checksum": self.checksum, "has_changes": self.has_changes,
                "operators": [p.to_json() for p in self.operators], "warnings": list(self.warnings)}


def _removal_reasons(ids: Iterable[str], orders: Mapping[str, Order], at: datetime) -> tuple[str, ...]:
    if not ids:  # a line no order asked for (hand-edited, another tool): nothing explains removing it
        return ("orphaned",)
    reasons = set()
    for order_id in ids:
        order = orders.get(order_id)
        if order is None:
            reasons.add("orphaned")
            continue
        status = order.status_at(at)
        reasons.add(status if status in JUSTIFIED else "order-changed")
    return tuple(sorted(reasons))


def _addition_reasons(ids: Iterable[str], orders: Mapping[str, Order], known_ids: set[str],
                      last_publish: datetime | None, at: datetime) -> tuple[str, ...]:
    reasons = set()
    for order_id in ids:
        order = orders[order_id]
        if last_publish is not None and last_publish < order.start <= at:
            reasons.add("started")
        elif order_id not in known_ids:
            reasons.add("order-added")
        else:
            reasons.add("order-changed")
    return tuple(sorted(reasons))


class _Reasons:
    """Why entries are added or removed: the reasons depend only on the order ids, so each
    distinct tuple of ids is explained once per diff."""

    def __init__(self, previous: ZoneEntries, orders: Mapping[str, Order], at: datetime,
                 last_publish: datetime | None, known_ids: set[str] | None) -> None:
        self.previous, self.orders, self.at, self.last_publish = previous, orders, at, last_publish
        self.known = known_ids  # order ids the previous zone names: built on first need
        self._added: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._removed: dict[tuple[str, ...], tuple[str, ...]] = {}

    def added(self, ids: tuple[str, ...]) -> tuple[str, ...]:
        reasons = self._added.get(ids)
        if reasons is None:
            if self.known is None:
                self.known = {i for e in set(self.previous.values()) for i in e.order_ids}
            reasons = self._added[ids] = _addition_reasons(ids, self.orders, self.known, self.last_publish, self.at)
        return reasons

    def removed(self, ids: tuple[str, ...]) -> tuple[str, ...]:
        reasons = self._removed.get(ids)
        if reasons is None:
            reasons = self._removed[ids] = _removal_reasons(ids, self.orders, self.at)
        return reasons


def _differing(previous: ZoneEntries, desired: ZoneEntries, ordered: Iterable[str] | None,
               candidates: Iterable[str] | None) -> tuple[list[str], list[str]]:
    """The owners to visit: those in `desired` whose entry differs (in canonical order when
    `ordered` gives it, else sorted), and those gone from it (sorted)."""
    if candidates is not None:
        differing = [o for o in candidates if previous.get(o) != desired.get(o)]
        return (sorted((o for o in differing if o in desired), key=sort_key),
                sorted((o for o in differing if o not in desired), key=sort_key))
    walk: list[str]
    if not previous and ordered is not None:  # a first publish: everything is added
        walk = list(filter(desired.__contains__, ordered))
    else:
        # Compared at C speed; only what differs is visited in Python.
        keys = list(desired)
        different = list(compress(keys, map(ne, map(previous.get, keys), desired.values())))
        if ordered is not None and len(different) > len(desired) // 4:
            differing_set = set(different)
            walk = [o for o in ordered if o in differing_set]
        else:
            walk = sorted(different, key=sort_key)
    gone = sorted(filterfalse(desired.__contains__, previous), key=sort_key) if previous else []
    return walk, gone


class FirstPublish(Sequence[Change]):
    """Every owner of a first publish added: the changes `_changes` would list, each made when
    read. A first publish of 1M names held 1.5M Change tuples (~170 MB, a third of `apply`'s
    peak) from the plan to the publish, and every reader (the printed plan, the audit's
    groupings, a PowerDNS flush) walks them once: made from the owner and its entry's fields
    on each read, they cost one list of owners. Equal to that list (tests/publish/test_plan_fast.py)."""

    __slots__ = ("_desired", "_tails", "_walk")

    def __init__(self, walk: list[str], desired: ZoneEntries, why: _Reasons) -> None:
        self._walk, self._desired = walk, desired
        # An entry is shared by many owners: what follows the owner in its changes is made once,
        # keyed by the entry's identity (`desired` keeps every entry alive, so no id is reused
        # while this lives).
        entries = dict(zip(map(id, desired.values()), desired.values(), strict=True))
        self._tails: dict[int, ChangeTail] = {key: ("add", e.action, e.order_ids, None, (), why.added(e.order_ids))
                       for key, e in entries.items()}

    def owners(self) -> Iterator[str]:
        return iter(self._walk)

    def owners_at(self, positions: Iterable[int]) -> list[str]:
        return list(map(self._walk.__getitem__, positions))

    def tails(self) -> Iterator[ChangeTail]:
        return self._tails_of(self._walk)

    def _tails_of(self, owners: list[str]) -> Iterator[ChangeTail]:
        return map(self._tails.__getitem__, map(id, map(self._desired.__getitem__, owners)))

    def _made(self, owners: list[str]) -> Iterator[Change]:
        """The changes of `owners`, at C speed: `(owner,) + tail` made a Change by `change_new`
        (a Python call per change made reading them 4x slower than reading a list)."""
        fields = cast("Iterator[ChangeFields]", map(tuple.__add__, zip(owners), self._tails_of(owners)))
        return map(change_new, repeat(Change), fields)

    def _make(self, owner: str) -> Change:
        return change_new(Change, (owner, *self._tails[id(self._desired[owner])]))

    def __len__(self) -> int:
        return len(self._walk)

    @overload
    def __getitem__(self, index: int) -> Change: ...

    @overload
    def __getitem__(self, index: slice) -> list[Change]: ...

    def __getitem__(self, index: int | slice) -> Change | list[Change]:
        if isinstance(index, slice):
            return list(self._made(self._walk[index]))
        return self._make(self._walk[index])

    def __iter__(self) -> Iterator[Change]:
        return self._made(self._walk)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (list, tuple, FirstPublish)):
            return NotImplemented
        return len(self) == len(other) and all(map(eq, self, other))

    __hash__ = None  # type: ignore[assignment]  # equal to a list: unhashable like one

    def __repr__(self) -> str:
        return f"FirstPublish({len(self)} changes)"


_OWNER = attrgetter("owner")
_TAIL = itemgetter(slice(1, None))


def change_owners(changes: Sequence[Change]) -> Iterator[str]:
    """The owner of each change, in order (a first publish's without making its Changes)."""
    return changes.owners() if isinstance(changes, FirstPublish) else map(_OWNER, changes)


def owners_at(changes: Sequence[Change], positions: Iterable[int]) -> list[str]:
    """The owners of the changes at `positions` (a first publish's without making its Changes)."""
    if isinstance(changes, FirstPublish):
        return changes.owners_at(positions)
    return [changes[i].owner for i in positions]


def change_tails(changes: Sequence[Change]) -> Iterator[ChangeTail]:
    """What follows the owner in each change, in order: (kind, action, order_ids, old_action,
    old_order_ids, reasons). A first publish shares one tail object among the owners of an
    entry and gives them without making its Changes: read together with `change_owners`, a
    pass over 1.5M changes stays at C speed."""
    return changes.tails() if isinstance(changes, FirstPublish) else map(_TAIL, changes)


def of_kind(changes: Sequence[Change], kind: str) -> list[Change]:
    """The changes of one kind ("add", "remove", "change"), in order; only those are made."""
    if isinstance(changes, FirstPublish):  # adds only
        return list(changes) if kind == "add" else []
    return [changes[i] for i, tail in enumerate(change_tails(changes)) if tail[0] == kind]


def _first_publish(walk: list[str], desired: ZoneEntries, why: _Reasons) -> Sequence[Change]:
    """Every owner added (a first publish), made when read: see `FirstPublish`."""
    return FirstPublish(walk, desired, why)


def _changes(walk: list[str], gone: list[str], previous: ZoneEntries, desired: ZoneEntries,
             why: _Reasons) -> list[Change]:
    changes: list[Change] = []
    append = changes.append
    for owner in walk:
        new = desired[owner]
        old = previous.get(owner)
        if old is None:
            append(Change(owner, "add", new.action, new.order_ids, None, (), why.added(new.order_ids)))
        else:
            gone_ids = tuple(i for i in old.order_ids if i not in new.order_ids)
            came = tuple(i for i in new.order_ids if i not in old.order_ids)
            reasons = set(why.removed(gone_ids) if gone_ids else ()) | set(why.added(came) if came else ())
            append(Change(owner, "change", new.action, new.order_ids, old.action, old.order_ids,
                          tuple(sorted(reasons or {"order-changed"}))))
    for owner in gone:
        old = previous[owner]
        append(Change(owner, "remove", None, (), old.action, old.order_ids, why.removed(old.order_ids)))
    return changes


def diff(previous: ZoneEntries, desired: ZoneEntries, orders: Mapping[str, Order], at: datetime,
         last_publish: datetime | None, ordered: Iterable[str] | None = None,
         candidates: Iterable[str] | None = None, known_ids: set[str] | None = None) -> Sequence[Change]:
    """Changes from `previous` to `desired`, in canonical order when `ordered` gives it.

    `candidates`, when given, holds every owner whose entry may differ (a patched content knows
    them): only those are compared. `known_ids`, when given, is every order id `previous` names.
    """
    if previous is desired or previous == desired:  # compared at C speed: the usual reconcile changes nothing
        return []
    walk, gone = _differing(previous, desired, ordered, candidates)
    why = _Reasons(previous, orders, at, last_publish, known_ids)
    if not previous:
        return _first_publish(walk, desired, why)
    return _changes(walk, gone, previous, desired, why)


def apply_guards(changes: Sequence[Change], previous: ZoneEntries, config: Config, force: bool) -> tuple[
        Sequence[Change], list[Change], str]:
    """Split removals into those allowed now and those held for a human (`--force`)."""
    if force:
        return changes, [], ""
    removals = of_kind(changes, "remove")
    unexplained = [c for c in removals if not set(c.reasons) <= JUSTIFIED]
    guard = ""
    if unexplained:
        guard = (f"{len(unexplained)} removal(s) not explained by an order's expiry or lift "
                 f"({', '.join(sorted({r for c in unexplained for r in c.reasons} - JUSTIFIED))})")
    share = len(removals) / len(previous) if previous else 0.0
    if len(removals) >= config.removal_guard_min and share > config.max_removal_share:
        guard = (f"removes {len(removals)} of {len(previous)} entries ({share:.0%}), more than "
                 f"publish.max_removal_share={config.max_removal_share:.0%}")
        unexplained = removals
    if not unexplained:  # the list itself: operators sharing a diff then share what is built from it
        return changes, [], guard
    held_set = {c.owner for c in unexplained}
    return [c for c in changes if c.owner not in held_set], unexplained, guard


@dataclass
class Caches:
    """Work kept between plans by a long-running daemon; a CLI run starts with empty ones."""

    policy: PolicyCache = field(default_factory=PolicyCache)
    render: dict[tuple[Any, ...], RenderedZone] = field(default_factory=dict)
    # Within one plan: operators with the same previous and desired entries share one diff. The
    # value keeps what the key names by id() alive and is checked by identity, so a freed
    # object's id reused by another cannot hit.
    diffs: dict[tuple[Any, ...], tuple[Any, ...]] = field(default_factory=dict)
    # Zone file -> (its lstat signature, the SHA-256 of its bytes): a file whose inode, size,
    # mtime and ctime are unchanged is not read again. ctime moves on every write and cannot be
    # set back by a user, but ticks coarsely: the daemon clears this at every periodic reconcile,
    # so a full digest of every file is taken at least then.
    files: dict[Path, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    # Operator -> the rendering its last plan used: a plan of some operators (the daemon plans
    # each one when it is free) keeps the others' renderings, which their next plans patch.
    used: dict[str, RenderedZone] = field(default_factory=dict)


def _signature(path: Path) -> tuple[int, ...] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_digest(path: Path, cache: dict[Path, tuple[tuple[int, ...], str]] | None = None) -> tuple[
        str, bytes | None]:
    """SHA-256 of the zone file at `path` ("" when missing or not a regular file), and its bytes
    when they had to be read (None when the cache answered, or there is no file)."""
    signature = _signature(path)
    if signature is None:
        if cache is not None:
            cache.pop(path, None)
        return "", None
    hit = cache.get(path) if cache is not None else None
    if hit is not None and hit[0] == signature:
        return hit[1], None
    data = read_regular(path)
    if data is None:
        return "", None
    sha = hashlib.sha256(data).hexdigest()
    if cache is not None and _signature(path) == signature:  # not changed while it was read
        cache[path] = (signature, sha)
    return sha, data


def plan_operator(operator: str, orders: Mapping[str, Order], at: datetime, config: Config, *,
                  previous: ZoneEntries, previous_meta: ZoneMeta | None, last_publish: datetime | None,
                  force: bool = False, caches: Caches | None = None) -> OperatorPlan:
    op = config.operators[operator]
    caches = caches or Caches()
    content = desired(orders.values(), operator, at, caches.policy)
    # Every empty previous zone (a first publish) is the same: one diff serves all operators.
    memo_key = (0 if not previous else id(previous), id(content.entries), id(orders), at, last_publish)
    hit = caches.diffs.get(memo_key)
    if (hit is not None and hit[2] is orders and hit[1] is content.entries
            and (hit[0] is previous or (not previous and not hit[0]))):
        changes = hit[3]
    else:
        base = content.patched_from() if content.patched_from is not None else None
        candidates = known = None
        if base is not None and base.entries is previous:
            candidates = content.touched
            if all(o.targets for o in base.orders):  # each order in force names at least one owner
                known = {order_id for order_id, _ in base.key}
        changes = diff(previous, content.entries, orders, at, last_publish, content.owners, candidates,
                       known)
        caches.diffs[memo_key] = (previous, content.entries, orders, changes)
    allowed, held, guard = apply_guards(changes, previous, config, force)
    order_ids = None
    if len(content.orders) == len(content.key) and all(o.targets for o in content.orders):
        # Every order in force names at least one owner, and folding only adds ids of orders in
        # force; held entries add the ids they had (they are removals: no entry is replaced).
        order_ids = sorted({order_id for order_id, _ in content.key} | {i for c in held for i in c.old_order_ids})
    if held:
        entries = dict(content.entries)
        for change in held:  # kept exactly as resolvers have them now
            entries[change.owner] = Entry(change.old_action or "nxdomain", change.old_order_ids)
        content = ZoneContent(entries, canonical_order(entries, content))
    zone = render_body(content, op, caches.render)
    return OperatorPlan(operator, previous_meta, zone, content.entries, allowed, held, guard, order_ids)


def _no_zone_file(path: Path, warnings: list[str]) -> ZoneEntries:
    """No previous zone: the state does not hold one and `path` is no regular file (missing, or
    something else in its place, which apply rewrites)."""
    if path.exists() or path.is_symlink():
        warnings.append(f"{path}: not a regular file: treated as no previous zone, rewritten on apply")
    return {}


def _entries_of(data: bytes, sha: str, seen: dict[tuple[int, str], ZoneEntries | None], path: Path,
                warnings: list[str] | None) -> ZoneEntries | None:
    """The entries of zone bytes, from their comments; None for bytes that are not a zone
    blocker wrote (half a line, tabs, a non-ASCII comment, a bare owner, binary garbage), with
    a warning: never an error, publishing rewrites such a file. Zones with the same bytes
    (operators with the same content) are read once and share one mapping, so their diffs are
    shared too."""
    fingerprint = (len(data), sha)
    if fingerprint in seen:
        return seen[fingerprint]
    entries: ZoneEntries | None
    try:
        entries = entries_from_bytes(data)
    except (UnicodeDecodeError, ValueError) as exc:
        if warnings is not None:
            reason = "not ASCII" if isinstance(exc, UnicodeDecodeError) else "a line blocker does not write"
            warnings.append(f"{path}: not a zone blocker wrote ({reason}): treated as no previous zone, "
                            "rewritten on apply")
        entries = None
    seen[fingerprint] = entries
    return entries


@no_cyclic_gc()
def compute_plan(orders: Mapping[str, Order], at: datetime, config: Config, zones_dir: Path, *,
                 operators: Iterable[str] | None = None, force: bool = False,
                 last_publish: Mapping[str, datetime] | None = None,
                 previous: Mapping[str, ZoneEntries] | None = None, caches: Caches | None = None,
                 state: State | None = None) -> Plan:
    """The plan for the named operators (default: all), against what was last published.

    With a `state` that holds an operator's published zone, that is the previous zone (never
    the file, which anyone with access to the folder can edit): a file whose digest differs is
    to be rewritten (`restore`). Without one, the file in `zones_dir` is read. `previous`, when
    given, holds entries already known for the previous zone (the daemon's memory).
    """
    plans = []
    caches = caches or Caches()
    caches.diffs.clear()
    seen: dict[tuple[int, str], ZoneEntries | None] = {}
    warnings: list[str] = []
    try:
        for operator in operators or sorted(config.operators):
            path = zones_dir / f"{operator}.rpz"
            file_sha, data = file_digest(path, caches.files)
            record = state.zone(operator) if state is not None else None
            known = previous.get(operator) if previous is not None else None
            prev_entries: ZoneEntries | None = None
            previous_meta: ZoneMeta | None = None
            published = ""
            if record is not None and record.digest:
                if known is not None:
                    prev_entries = known
                elif file_sha == record.digest and (data is not None or (data := read_regular(path)) is not None):
                    # The file holds the published bytes: no need to inflate the stored copy.
                    prev_entries = _entries_of(data, file_sha, seen, path, warnings)
                else:
                    stored = state.published_body(operator) if state is not None else None
                    if stored is not None:
                        prev_entries = _entries_of(stored, record.checksum, seen, path, None)
                if prev_entries is not None:
                    published = record.digest
                    previous_meta = ZoneMeta(record.serial, record.checksum)
            if not published:  # the state does not hold this zone: what the folder has is all there is
                if data is None and file_sha:
                    data = read_regular(path)
                if known is not None:
                    prev_entries = known
                elif data is None:
                    prev_entries = _no_zone_file(path, warnings)
                else:
                    prev_entries = _entries_of(data, file_sha, seen, path, warnings)
                # Bytes that are not one of our zones, or whose body is not the one its header
                # names (a truncation keeps the header), were not published by us: rewritten.
                previous_meta = read_meta(path) if prev_entries is not None and data is not None else None
                if previous_meta is not None and data is not None and previous_meta.checksum is not None:
                    problems = structural_check(data, config.operators[operator].origin)
                    if problems:
                        warnings.append(f"{path}: damaged ({'; '.join(problems)}): rewritten on apply")
                        previous_meta = None
                prev_entries = prev_entries or {}
            assert prev_entries is not None
            op_plan = plan_operator(
                operator, orders, at, config, previous=prev_entries, previous_meta=previous_meta,
                last_publish=(last_publish or {}).get(operator), force=force, caches=caches,
            )
            op_plan.file_sha256, op_plan.published_sha256 = file_sha or None, published
            if published and file_sha != published:
                found = f"sha256 {file_sha[:16]}" if file_sha else "missing or not a regular file"
                op_plan.restore = (f"{path.name} is not what was published ({found}, published "
                                   f"sha256 {published[:16]}): rewritten")
            plans.append(op_plan)
    finally:
        caches.diffs.clear()  # it holds whole zones: keep them no longer than this plan
    # The renderings this plan uses are the ones the next plan patches; the others hold whole
    # zones for nothing.
    for p in plans:
        caches.used[p.operator] = p.zone
    prune_renderings(caches.render, list(caches.used.values()))  # a snapshot: plans run at once
    return Plan(at, plans, dict(orders), warnings)
