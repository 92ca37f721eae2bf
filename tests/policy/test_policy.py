"""What must be blocked per operator at an instant: owners, strongest action, operators, time."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocker.config.load import load_config
from blocker.orders.model import Order
from blocker.orders.parse import parse_order
from blocker.policy import (
    Entry,
    ZoneEntries,
    blocked_names,
    desired,
    incremental,
    next_transition,
    orders_in_force,
    owners,
    reference,
)
from blocker.vocab import STRENGTH
from tests.support.properties import examples

REPO = Path(__file__).resolve().parents[2]
CONFIG = load_config(REPO / "blocker" / "config" / "default.yaml")
ACTIONS = ["nxdomain", "nodata", "drop", "redirect"]  # strongest first


def desired_entries(orders: list[Order], operator: str, at: datetime) -> ZoneEntries:
    entries = desired(orders, operator, at).entries
    assert entries == reference.desired(orders, operator, at).entries
    return entries


def order(
    order_id: str,
    targets: list[str],
    *,
    action: str = "nxdomain",
    operators: str = "[orange, sfr, bouygues, free]",
    start: str = "2027-01-01",
    end: str = "2027-12-31",
) -> Order:
    text = (
        f"id: {order_id}\ncourt: TJ Paris\ncase_number: RG {order_id}\ndecision_date: 2026-12-01\n"
        f"operators: {operators}\nstart: '{start}'\nend: '{end}'\naction: {action}\ntargets:\n"
        + "".join(f"  - {t}\n" for t in targets)
    )
    result = parse_order(text.encode(), f"{order_id}.yaml", CONFIG.order_rules)
    assert isinstance(result, Order), [str(e) for e in result]
    return result


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


MID_2027 = at("2027-06-01T12:00:00+02:00")


def test_owners_add_a_wildcard_only_for_subdomains():
    o = order("a", [
        "all.example",
        "{domain: apex-only.example, subdomains: false}",
        "{url: 'https://host.example/some/path'}",
    ])
    assert owners(o) == ["all.example", "*.all.example", "apex-only.example", "host.example"]


def test_url_escalated_target_never_blocks_subdomains():
    entries = desired_entries([order("a", ["{url: 'https://files.example.gg/x.csv'}"])], "orange", MID_2027)
    assert set(entries) == {"files.example.gg"}


def test_merge_is_the_union_of_owners_with_the_strongest_action_per_owner():
    a = order("a", ["x.example", "y.example"], action="redirect")
    b = order("b", ["{domain: y.example, subdomains: false}"], action="drop")
    want = {
        "x.example": Entry("redirect", ("a",)), "*.x.example": Entry("redirect", ("a",)),
        "y.example": Entry("drop", ("a", "b")), "*.y.example": Entry("redirect", ("a",)),
    }
    assert reference.merge_entries([a, b]) == want
    assert incremental.merge_entries([a, b]) == want


def test_single_order_entries():
    entries = desired_entries([order("a", ["x.example"], action="nodata")], "orange", MID_2027)
    assert entries == {"x.example": Entry("nodata", ("a",)), "*.x.example": Entry("nodata", ("a",))}
    assert blocked_names(entries) == 1


@pytest.mark.parametrize(("first", "second"), list(itertools.permutations(ACTIONS, 2)))
def test_strongest_action_wins_whatever_the_order(first, second):
    a = order("a", ["x.example"], action=first)
    b = order("b", ["x.example"], action=second)
    expected = first if ACTIONS.index(first) < ACTIONS.index(second) else second
    for orders in ([a, b], [b, a]):
        entries = desired_entries(orders, "orange", MID_2027)
        assert entries["x.example"] == Entry(expected, ("a", "b"))
        assert entries["*.x.example"] == Entry(expected, ("a", "b"))


def test_three_orders_on_one_name():
    orders = [order("c", ["x.example"], action="redirect"), order("a", ["x.example"], action="drop"),
              order("b", ["x.example"], action="nodata")]
    assert desired_entries(orders, "free", MID_2027)["x.example"] == Entry("nodata", ("a", "b", "c"))


def test_a_stronger_wildcard_is_not_shadowed_by_a_weaker_exact_name():
    # RPZ prefers an exact owner to a wildcard: www.x.example must carry the strongest action itself.
    whole = order("whole", ["x.example"], action="nxdomain")
    page = order("page", ["{domain: www.x.example, subdomains: false}"], action="redirect")
    entries = desired_entries([whole, page], "orange", MID_2027)
    assert entries["www.x.example"] == Entry("nxdomain", ("page", "whole"))
    assert entries["*.x.example"] == Entry("nxdomain", ("whole",))
    # ... also for a deeper wildcard of the weaker order
    deep = order("deep", ["a.b.x.example"], action="drop")
    entries = desired_entries([whole, deep], "orange", MID_2027)
    assert entries["a.b.x.example"].action == "nxdomain"
    assert entries["*.a.b.x.example"].action == "nxdomain"
    # once the stronger order is over, the weaker one applies alone again
    assert desired_entries([page], "orange", MID_2027)["www.x.example"] == Entry("redirect", ("page",))


def test_a_weaker_wildcard_does_not_weaken_a_stronger_exact_name():
    whole = order("whole", ["x.example"], action="redirect")
    page = order("page", ["{domain: www.x.example, subdomains: false}"], action="nxdomain")
    entries = desired_entries([whole, page], "orange", MID_2027)
    assert entries["www.x.example"].action == "nxdomain"
    assert entries["*.x.example"] == Entry("redirect", ("whole",))
    assert entries["x.example"] == Entry("redirect", ("whole",))


def test_apex_only_target_does_not_cover_subdomains_of_another_order():
    apex = order("apex", ["{domain: x.example, subdomains: false}"], action="nxdomain")
    sub = order("sub", ["{domain: www.x.example, subdomains: false}"], action="redirect")
    entries = desired_entries([apex, sub], "orange", MID_2027)
    assert entries == {"x.example": Entry("nxdomain", ("apex",)), "www.x.example": Entry("redirect", ("sub",))}


def test_a_name_in_two_orders_stays_blocked_while_either_is_active():
    early = order("early", ["x.example"], start="2027-01-01", end="2027-03-31")
    late = order("late", ["x.example", "y.example"], start="2027-03-01", end="2027-06-30")
    orders = [early, late]
    timeline = [
        ("2026-12-31T23:59:59+01:00", None),
        ("2027-01-01T00:00:00+01:00", ("early",)),
        ("2027-02-28T23:59:59+01:00", ("early",)),
        ("2027-03-01T00:00:00+01:00", ("early", "late")),
        ("2027-03-31T23:59:59+02:00", ("early", "late")),
        ("2027-04-01T00:00:00+02:00", ("late",)),
        ("2027-06-30T23:59:59+02:00", ("late",)),
        ("2027-07-01T00:00:00+02:00", None),
    ]
    for instant, ids in timeline:
        entries = desired_entries(orders, "orange", at(instant))
        if ids is None:
            assert "x.example" not in entries, instant
        else:
            assert entries["x.example"].order_ids == ids, instant
    assert "y.example" not in desired_entries(orders, "orange", at("2027-02-01T00:00:00+01:00"))


def test_operator_filtering():
    both = order("both", ["x.example"], operators="[orange, free]")
    sfr_only = order("sfr-only", ["y.example"], operators="[sfr]")
    orders = [both, sfr_only]
    assert set(desired_entries(orders, "orange", MID_2027)) == {"x.example", "*.x.example"}
    assert set(desired_entries(orders, "free", MID_2027)) == {"x.example", "*.x.example"}
    assert set(desired_entries(orders, "sfr", MID_2027)) == {"y.example", "*.y.example"}
    assert desired_entries(orders, "bouygues", MID_2027) == {}
    assert desired_entries(orders, "unknown-operator", MID_2027) == {}


def test_orders_in_force_sorted_by_id_and_filtered():
    orders = [order("c", ["c.example"]), order("a", ["a.example"]), order("b", ["b.example"], operators="[sfr]"),
              order("d", ["d.example"], start="2028-01-01", end="2028-02-01")]
    assert [o.id for o in orders_in_force(orders, "orange", MID_2027)] == ["a", "c"]


def test_lifted_order_stops_blocking_at_the_lift_instant():
    text = (
        "id: lifted\ncourt: TJ\ncase_number: RG 1\ndecision_date: 2026-12-01\noperators: [orange]\n"
        "start: 2027-01-01\nend: 2027-12-31\ntargets: [x.example]\n"
        "lifted: {at: '2027-05-01T12:00:00+02:00', reason: mainlevée}\n"
    )
    lifted = parse_order(text.encode(), "lifted.yaml", CONFIG.order_rules)
    assert isinstance(lifted, Order)
    assert "x.example" in desired_entries([lifted], "orange", at("2027-05-01T11:59:59+02:00"))
    assert desired_entries([lifted], "orange", at("2027-05-01T12:00:00+02:00")) == {}


def test_blocked_names_counts_names_not_wildcards():
    entries = desired_entries([order("a", ["x.example", "{domain: y.example, subdomains: false}"])], "orange",
                              MID_2027)
    assert len(entries) == 3
    assert blocked_names(entries) == 2


def test_next_transition():
    a = order("a", ["x.example"], start="2027-01-01", end="2027-03-31")
    b = order("b", ["y.example"], start="2027-02-01T09:00:00+01:00", end="2027-06-30")
    assert next_transition([a, b], at("2026-06-01T00:00:00+02:00")) == at("2027-01-01T00:00:00+01:00")
    assert next_transition([a, b], at("2027-01-01T00:00:00+01:00")) == at("2027-02-01T09:00:00+01:00")
    assert next_transition([a, b], at("2027-02-01T09:00:00+01:00")) == at("2027-04-01T00:00:00+02:00")
    assert next_transition([a, b], at("2027-04-01T00:00:00+02:00")) == at("2027-07-01T00:00:00+02:00")
    assert next_transition([a, b], at("2027-07-01T00:00:00+02:00")) is None
    assert next_transition([], MID_2027) is None


def test_merge_does_not_depend_on_input_order():
    orders = [order("a", ["x.example", "y.example"], action="drop"),
              order("b", ["y.example", "{domain: www.x.example, subdomains: false}"], action="nodata"),
              order("c", ["x.example"], action="redirect")]
    results = {tuple(sorted(desired_entries(p, "orange", MID_2027).items())) for p in itertools.permutations(orders)}
    assert len(results) == 1


# --- properties ---------------------------------------------------------------------------------------------

names = st.sampled_from(["x.example", "www.x.example", "a.www.x.example", "y.example", "x.example.gg"])
specs = st.lists(
    st.tuples(st.sampled_from(ACTIONS), st.lists(st.tuples(names, st.booleans()), min_size=1, max_size=3)),
    min_size=1, max_size=4,
)


def _covers(target: str, subdomains: bool, name: str) -> bool:
    return name == target or (subdomains and name.endswith("." + target))


@settings(max_examples=examples(100))
@given(specs)
def test_every_blocked_name_gets_the_strongest_action_of_the_orders_covering_it(spec):
    orders = []
    for i, (action, targets) in enumerate(spec):
        items = [f"{{domain: {n}, subdomains: {str(s).lower()}}}" for n, s in targets]
        orders.append(order(f"o{i}", items, action=action))
    entries = desired_entries(orders, "orange", MID_2027)
    probes = ["x.example", "www.x.example", "a.www.x.example", "b.a.www.x.example", "z.x.example", "y.example",
              "q.y.example", "x.example.gg", "other.example"]
    for name in probes:
        covering = [o for o in orders if any(_covers(t.name, t.subdomains, name) for t in o.targets)]
        # what an RPZ resolver answers: the exact owner, else the longest matching wildcard
        entry = entries.get(name)
        if entry is None:
            labels = name.split(".")
            for i in range(1, len(labels)):
                entry = entries.get("*." + ".".join(labels[i:]))
                if entry is not None:
                    break
        if not covering:
            assert entry is None, name
            continue
        assert entry is not None, name
        strongest = max((o.action for o in covering), key=STRENGTH.get)
        assert entry.action == strongest, name
        assert set(entry.order_ids) <= {o.id for o in orders}


@settings(max_examples=examples(50))
@given(st.datetimes(min_value=datetime(2026, 6, 1), max_value=datetime(2028, 6, 1), timezones=st.just(UTC)))
def test_entries_come_only_from_orders_active_at_the_instant(instant):
    early = order("early", ["x.example"], start="2027-01-01", end="2027-03-31")
    late = order("late", ["x.example"], start="2027-03-01", end="2027-06-30", action="redirect")
    entries = desired_entries([early, late], "orange", instant)
    active = {o.id for o in (early, late) if o.active_at(instant)}
    if not active:
        assert entries == {}
    else:
        assert set(entries["x.example"].order_ids) == active
        assert entries["x.example"].action == ("nxdomain" if "early" in active else "redirect")
