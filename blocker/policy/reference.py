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
    blocks it, sorted). Written from the definition, owner by owner: the wildcards covering an
    owner are `*.S` for every proper label suffix S of it (never the owner itself). The fast path
    (`blocker.policy.incremental`) does the same in one pass over the canonical order with a
    stack; `ordered` is accepted for the same signature and not needed here.
    """
    del ordered
    out = dict(entries)
    for owner, entry in entries.items():
        labels = owner.split(".")
        covers = [entries[w] for w in ("*." + ".".join(labels[i:]) for i in range(1, len(labels)))
                  if w != owner and w in entries]
        if not covers:
            continue
        action = max((entry.action, *(c.action for c in covers)), key=STRENGTH.__getitem__)
        ids = set(entry.order_ids).union(*(c.order_ids for c in covers))
        if action != entry.action or ids != set(entry.order_ids):
            out[owner] = Entry(action, tuple(sorted(ids)))
    return out


def zone_content(active: list[Order]) -> ZoneContent:
    entries = merge_entries(active)
    ordered = canonical_order(entries)
    return ZoneContent(fold_wildcards(entries, ordered), ordered, tuple((o.id, o.digest) for o in active))


def desired(orders: Iterable[Order], operator: str, at: datetime) -> ZoneContent:
    """What `blocker.policy.desired` gives, computed the plain way."""
    return zone_content(orders_in_force(orders, operator, at))
