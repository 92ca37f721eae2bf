"""What a parse takes from the configuration (`OrderRules`), and the one re-parse of stored versions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from blocker.config.load import load_config
from blocker.orders.model import Order
from blocker.orders.parse import parse_order, parse_stored
from blocker.orders.rules import OperatorRules, OrderRules

REPO = Path(__file__).resolve().parents[2]
CONFIG = load_config(REPO / "blocker" / "config" / "default.yaml")
TEXT = (b"id: t1\ncourt: TJ Paris\ncase_number: RG 1\ndecision_date: 2026-11-18\noperators: [orange]\n"
        b"start: 2026-11-20\nduration: 18 months\naction: redirect\ntargets:\n  - files.example.gg\n")


def test_the_rules_are_what_the_config_says_of_operators_and_time():
    rules = CONFIG.order_rules
    assert [op_id for op_id, _ in rules.operators] == sorted(CONFIG.operators)
    for op_id, op in CONFIG.operators.items():
        assert rules.by_id[op_id] == OperatorRules(op.origin, op.redirect.configured)
    assert rules.reserved_origins == tuple(sorted(op.origin.rstrip(".") for op in CONFIG.operators.values()))
    assert (rules.timezone, rules.extend_to_working_day, rules.holidays_country) == (
        CONFIG.timezone, CONFIG.extend_to_working_day, CONFIG.holidays_country)
    assert CONFIG.order_rules is rules  # built once per Config
    assert hash(rules) == hash(dataclasses.replace(rules))


def test_a_parse_needs_only_the_rules():
    rules = OrderRules(operators=(("orange", OperatorRules("orange.rpz.blocker.", redirect=True)),))
    order = parse_order(TEXT, "t1.yaml", rules)
    assert isinstance(order, Order) and order.operators == ("orange",) and order.timezone == "Europe/Paris"
    no_page = OrderRules(operators=(("orange", OperatorRules("orange.rpz.blocker.", redirect=False)),))
    errors = parse_order(TEXT, "t1.yaml", no_page)
    assert isinstance(errors, list) and errors[0].field == "action"


def test_a_stored_version_is_parsed_once_per_bytes_path_and_rules():
    rules = CONFIG.order_rules
    first = parse_stored(TEXT, "t1.yaml", rules)
    assert first == parse_order(TEXT, "t1.yaml", rules)
    assert parse_stored(TEXT, "t1.yaml", rules) is first
    assert parse_stored(bytes(TEXT), "t1.yaml", dataclasses.replace(rules)) is first  # equal rules, equal key
    other = dataclasses.replace(rules, timezone="America/New_York")
    assert parse_stored(TEXT, "t1.yaml", other) is not first
    assert parse_stored(TEXT, "moved/t1.yaml", rules) is not first
