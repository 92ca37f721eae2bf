"""The obviously-correct computation of a zone's content: what the fast paths must equal.

Nothing in production depends on its speed: it is the specification that
`blocker.policy.incremental` (a full computation at C speed, and the patch of a previous content)
is property-tested against in tests/policy, over sequences of order edits.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from blocker.orders.model import Order
from blocker.policy.model import Entry, ZoneContent, ZoneEntries, orders_in_force, owners, sort_key
from blocker.vocab import STRENGTH


def merge_entries(active: Iterable[Order]) -> ZoneEntries:
    """Union of the owners of `active` orders (sorted by id), strongest action per owner; the ids
    of the orders naming an owner, in the order of `active`."""
    out: ZoneEntries = {}
    for order in active:
        for owner in owners(order):
            prev = out.get(owner)
            if prev is None:
                out[owner] = Entry(order.action, (order.id,))
            elif order.id not in prev.order_ids:
                action = prev.action if STRENGTH[prev.action] >= STRENGTH[order.action] else order.action
                out[owner] = Entry(action, (*prev.order_ids, order.id))
    return out


def canonical_order(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=sort_key)


def fold_wildcards(entries: ZoneEntries, ordered: list[str]) -> ZoneEntries:
    """Fold an ancestor's `*.apex` entry into every owner it also covers.

    RPZ prefers an exact owner (or a longer wildcard) to a shorter wildcard, so without this a
    `redirect` for `www.example.com` would shadow an `nxdomain` for `*.example.com`: the name is
    in both orders and the strongest action must win (and the owner names every order that
    blocks it, sorted). In canonical order every descendant of a name follows it directly, so a
    stack of the wildcards in scope does this in one pass.
    """
    out = dict(entries)
    stack: list[tuple[str, Entry]] = []  # (".apex", wildcard entry), innermost last
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
                out[owner] = Entry(action, tuple(sorted(ids)))
        if owner.startswith("*."):
            stack.append((owner[1:], entries[owner]))
    return out


def zone_content(active: list[Order]) -> ZoneContent:
    entries = merge_entries(active)
    ordered = canonical_order(entries)
    return ZoneContent(fold_wildcards(entries, ordered), ordered, tuple((o.id, o.digest) for o in active))


def desired(orders: Iterable[Order], operator: str, at: datetime) -> ZoneContent:
    """What `blocker.policy.desired` gives, computed the plain way."""
    return zone_content(orders_in_force(orders, operator, at))
