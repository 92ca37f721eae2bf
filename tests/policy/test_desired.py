"""`desired()` (the fast path, with or without a daemon's cache) equals `reference.desired`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocker.config.load import load_config
from blocker.orders.model import Order
from blocker.orders.parse import parse_order
from blocker.policy import PolicyCache, desired, reference
from tests.support.properties import examples

REPO = Path(__file__).resolve().parents[2]
CONFIG = load_config(REPO / "blocker" / "config" / "default.yaml")
NAMES = ["example.gg", "a.example.gg", "b.a.example.gg", "www.example.gg", "test.example", "x.test.example"]
OPERATORS = ["orange", "sfr", "free"]
INSTANTS = [datetime(2027, 2, 1, tzinfo=UTC), datetime(2027, 7, 1, tzinfo=UTC)]


def make_order(order_id: str, targets: list[tuple[str, bool]], action: str, operators: list[str],
               start: str) -> Order:
    lines = "".join(f"  - {{domain: '{n}', subdomains: {str(s).lower()}}}\n" for n, s in targets)
    text = (f"id: {order_id}\ncourt: TJ Paris\ncase_number: RG {order_id}\ndecision_date: 2026-12-01\n"
            f"operators: [{', '.join(operators)}]\nstart: '{start}'\nend: '2027-12-31'\naction: {action}\n"
            f"targets:\n{lines}")
    order = parse_order(text.encode(), f"{order_id}.yaml", CONFIG.order_rules)
    assert isinstance(order, Order), [str(e) for e in order]
    return order


orders_st = st.dictionaries(
    st.sampled_from([f"o{i}" for i in range(5)]),
    st.tuples(st.lists(st.tuples(st.sampled_from(NAMES), st.booleans()), min_size=1, max_size=5),
              st.sampled_from(["nxdomain", "nodata", "drop", "redirect"]),
              st.lists(st.sampled_from(OPERATORS), min_size=1, max_size=3, unique=True),
              st.sampled_from(["2027-01-01", "2027-06-01"])),
    max_size=5)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(orders_st, min_size=1, max_size=5))
def test_desired_equals_the_reference_over_edits_operators_and_instants(states):
    cache = PolicyCache()
    for spec in states:
        orders = [make_order(i, *spec[i]) for i in sorted(spec)]
        for at in INSTANTS:
            for operator in OPERATORS:
                want = reference.desired(orders, operator, at)
                for got in (desired(orders, operator, at), desired(orders, operator, at, cache)):
                    assert got == want  # entries, canonical owners, key
                    assert got.names == want.names
                    assert got.action_counts == want.action_counts
