"""What must be blocked, per operator, at an instant: the one computation zones and probes share.

Pure functions over validated orders. `desired()` is the interface; behind it,
`blocker.policy.incremental` computes (a full computation at C speed, or, with a `PolicyCache`,
a patch of the previous content), and `blocker.policy.reference` is the obviously-correct
computation it is property-tested against. `blocker.policy.model` holds the data both share.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from blocker.orders.model import Order
from blocker.policy.incremental import PolicyCache, canonical_order, zone_content
from blocker.policy.model import (
    Entry,
    ZoneContent,
    ZoneEntries,
    blocked_names,
    covers,
    lookup,
    next_transition,
    orders_in_force,
    owners,
    sort_key,
)

__all__ = [
    "Entry", "PolicyCache", "ZoneContent", "ZoneEntries", "blocked_names", "canonical_order", "covers", "desired",
    "lookup", "next_transition", "orders_in_force", "owners", "sort_key",
]


def desired(orders: Iterable[Order], operator: str, at: datetime, cache: PolicyCache | None = None) -> ZoneContent:
    """The zone content of `operator` at `at`: the orders in force there, merged, wildcards folded.

    With `cache` (a daemon's), an operator whose orders are unchanged costs nothing and a few
    changed orders cost a patch of the last content; equal, always, to `reference.desired`.
    """
    active = orders_in_force(orders, operator, at)
    return cache.get(operator, active) if cache is not None else zone_content(active)
