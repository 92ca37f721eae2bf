"""Plans: what publishing the orders in force at an instant would change, zone by zone, and why.

A plan is computed from the orders and the zones last published, never from memory of what
was meant, so `plan` shows exactly what `apply` will write. Removals that no order's end
explains (a deleted file, a bad checkout) are held back until a human says `--force`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from blocker.config import Config
from blocker.legaltime import fmt_instant
from blocker.orders import Order
from blocker.policy import Entry, PolicyCache, ZoneContent, ZoneEntries, canonical_order, desired, sort_key
from blocker.rpz import RenderedZone, ZoneMeta, read_entries, read_meta, render_body

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


@dataclass
class OperatorPlan:
    operator: str
    previous: ZoneMeta | None
    zone: RenderedZone
    entries: ZoneEntries
    changes: list[Change] = field(default_factory=list)
    held: list[Change] = field(default_factory=list)
    guard: str = ""  # why removals were held, in words

    @property
    def changed(self) -> bool:
        return self.previous is None or self.previous.checksum != self.zone.checksum

    def to_json(self) -> dict[str, Any]:
        return {
            "operator": self.operator,
            "changed": self.changed,
            "previous_serial": None if self.previous is None else self.previous.serial,
            "previous_checksum": None if self.previous is None else self.previous.checksum,
            "checksum": self.zone.checksum,
            "names": self.zone.names,
            "records": self.zone.entries,
            "added": [c.to_json() for c in self.changes if c.kind == "add"],
            "removed": [c.to_json() for c in self.changes if c.kind == "remove"],
            "changed_entries": [c.to_json() for c in self.changes if c.kind == "change"],
            "held": [c.to_json() for c in self.held],
            "guard": self.guard,
        }


@dataclass
class Plan:
    at: datetime
    operators: list[OperatorPlan]
    orders: dict[str, Order]

    @property
    def checksum(self) -> str:
        """Identifies the reviewed change: same previous and next content per zone."""
        text = "".join(
            f"{p.operator} {p.previous.checksum if p.previous else '-'} {p.zone.checksum}\n" for p in self.operators
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def has_changes(self) -> bool:
        return any(p.changed for p in self.operators)

    @property
    def held(self) -> list[tuple[str, Change]]:
        return [(p.operator, c) for p in self.operators for c in p.held]

    def to_json(self) -> dict[str, Any]:
        return {"at": fmt_instant(self.at), "checksum": self.checksum, "has_changes": self.has_changes,
                "operators": [p.to_json() for p in self.operators]}


def _removal_reasons(ids: Iterable[str], owner: str, operator: str, orders: Mapping[str, Order],
                     at: datetime) -> tuple[str, ...]:
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


def diff(previous: ZoneEntries, desired: ZoneEntries, operator: str, orders: Mapping[str, Order], at: datetime,
         last_publish: datetime | None, ordered: Iterable[str] | None = None) -> list[Change]:
    """Changes from `previous` to `desired`, in canonical order when `ordered` gives it."""
    if previous == desired:  # compared at C speed: the usual reconcile changes nothing
        return []
    known_ids = {i for e in set(previous.values()) for i in e.order_ids}
    added_why: dict[tuple[str, ...], tuple[str, ...]] = {}  # reasons depend only on the order ids
    removed_why: dict[tuple[str, ...], tuple[str, ...]] = {}

    def why_added(ids: tuple[str, ...]) -> tuple[str, ...]:
        if ids not in added_why:
            added_why[ids] = _addition_reasons(ids, orders, known_ids, last_publish, at)
        return added_why[ids]

    def why_removed(ids: tuple[str, ...]) -> tuple[str, ...]:
        if ids not in removed_why:
            removed_why[ids] = _removal_reasons(ids, "", operator, orders, at)
        return removed_why[ids]

    # Set operations on the dict views run at C speed; only what differs is visited in Python.
    differing = {owner for owner, _ in desired.items() - previous.items()}
    if ordered is not None and len(differing) > len(desired) // 4:
        walk = [o for o in ordered if o in differing]
    else:
        walk = sorted(differing, key=sort_key)
    changes: list[Change] = []
    for owner in walk:
        new = desired[owner]
        old = previous.get(owner)
        if old is None:
            changes.append(Change(owner, "add", new.action, new.order_ids, None, (), why_added(new.order_ids)))
        else:
            gone = tuple(i for i in old.order_ids if i not in new.order_ids)
            came = tuple(i for i in new.order_ids if i not in old.order_ids)
            reasons = set(why_removed(gone) if gone else ()) | set(why_added(came) if came else ())
            changes.append(Change(owner, "change", new.action, new.order_ids, old.action, old.order_ids,
                                  tuple(sorted(reasons or {"order-changed"}))))
    for owner in sorted(previous.keys() - desired.keys(), key=sort_key):
        old = previous[owner]
        changes.append(Change(owner, "remove", None, (), old.action, old.order_ids, why_removed(old.order_ids)))
    return changes


def apply_guards(changes: list[Change], previous: ZoneEntries, config: Config, force: bool) -> tuple[
        list[Change], list[Change], str]:
    """Split removals into those allowed now and those held for a human (`--force`)."""
    if force:
        return changes, [], ""
    removals = [c for c in changes if c.kind == "remove"]
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
    held_set = {c.owner for c in unexplained}
    return [c for c in changes if c.owner not in held_set], unexplained, guard


@dataclass
class Caches:
    """Work kept between plans by a long-running daemon; a CLI run starts with empty ones."""

    policy: PolicyCache = field(default_factory=PolicyCache)
    render: dict[tuple[Any, ...], RenderedZone] = field(default_factory=dict)
    # Within one plan: operators with the same previous and desired entries share one diff.
    # The memo keeps the keyed dicts alive: an id() is only unique while its object lives.
    diffs: dict[tuple[int, int, datetime | None], tuple[ZoneEntries, ZoneEntries, list[Change]]] = field(
        default_factory=dict)


def plan_operator(operator: str, orders: Mapping[str, Order], at: datetime, config: Config, *,
                  previous: ZoneEntries, previous_meta: ZoneMeta | None, last_publish: datetime | None,
                  force: bool = False, caches: Caches | None = None) -> OperatorPlan:
    op = config.operators[operator]
    caches = caches or Caches()
    content = desired(orders.values(), operator, at, caches.policy)
    memo_key = (id(previous), id(content.entries), last_publish)
    hit = caches.diffs.get(memo_key)
    changes = hit[2] if hit is not None and hit[0] is previous and hit[1] is content.entries else None
    if changes is None:
        changes = diff(previous, content.entries, operator, orders, at, last_publish, content.owners)
        caches.diffs[memo_key] = (previous, content.entries, changes)
    allowed, held, guard = apply_guards(changes, previous, config, force)
    if held:
        entries = dict(content.entries)
        for change in held:  # kept exactly as resolvers have them now
            entries[change.owner] = Entry(change.old_action or "nxdomain", change.old_order_ids)
        content = ZoneContent(entries, canonical_order(entries, content))
    zone = render_body(content, op, caches.render)
    return OperatorPlan(operator, previous_meta, zone, content.entries, allowed, held, guard)


def compute_plan(orders: Mapping[str, Order], at: datetime, config: Config, zones_dir: Path, *,
                 operators: Iterable[str] | None = None, force: bool = False,
                 last_publish: Mapping[str, datetime] | None = None,
                 previous: Mapping[str, ZoneEntries] | None = None, caches: Caches | None = None) -> Plan:
    """The plan for the named operators (default: all), against the zones in `zones_dir`."""
    plans = []
    caches = caches or Caches()
    caches.diffs.clear()
    for operator in operators or sorted(config.operators):
        path = zones_dir / f"{operator}.rpz"
        prev_entries = previous[operator] if previous is not None and operator in previous else read_entries(path)
        plans.append(plan_operator(
            operator, orders, at, config, previous=prev_entries, previous_meta=read_meta(path),
            last_publish=(last_publish or {}).get(operator), force=force, caches=caches,
        ))
    return Plan(at, plans, dict(orders))
