"""Every counter and every per-operator count has a sample from the first scrape: an alert on
`increase()` needs the 0 before the first failure (tests/deploy/test_prometheus_live.py shows it
in a real Prometheus)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from blocker.run.metrics import Snapshot, registry_for, render, set_operators

OPERATORS = ("free", "orange", "sfr")
# per-operator series that stay absent until known: a 0 would read as "published in 1970"
UNTIL_KNOWN = {"blocker_zone_serial", "blocker_zone_publish_timestamp_seconds", "blocker_zone_in_effect",
               "blocker_probe_last_pass_timestamp_seconds"}


def _families(s: Snapshot) -> dict[str, tuple[str, list[dict[str, str]], list[float]]]:
    out = {}
    for family in text_string_to_metric_families(render(registry_for(s)).decode()):
        samples = [x for x in family.samples if not x.name.endswith("_created")]
        out[family.name] = (family.type, [x.labels for x in samples], [x.value for x in samples])
    return out


def test_a_fresh_daemon_exposes_every_counter_and_per_operator_count_at_zero() -> None:
    s = Snapshot()
    set_operators(s, OPERATORS)
    families = _families(s)
    counters = {name for name, (kind, _l, _v) in families.items() if kind == "counter"}
    assert {"blocker_publish_failures", "blocker_reload_failures", "blocker_zone_changed_outside",
            "blocker_reconciles", "blocker_audit_write_failures"} <= counters
    for name in counters:
        _kind, labels, values = families[name]
        assert labels, f"{name} has no sample before its first event"
        assert all(v == 0 for v in values), name
    # The whole class: every family labelled by operator alone has each configured operator.
    per_operator = [name for name, (_k, labels, _v) in families.items()
                    if labels and all(set(lab) == {"operator"} for lab in labels)]
    assert len(per_operator) >= 7
    for name in per_operator:
        assert sorted(lab["operator"] for lab in families[name][1]) == list(OPERATORS), name
    # A family that could be per-operator but shows nothing must be one that waits to be known.
    s.zone_serial = {"orange": 5}
    s.zone_publish_ts = {"orange": 5.0}
    s.zone_in_effect = {"orange": True}
    s.probe_last_pass_ts = {"orange": 5.0}
    later = _families(s)
    appeared = {name for name in later if name not in per_operator and later[name][1]
                and all(set(lab) == {"operator"} for lab in later[name][1])}
    assert appeared == UNTIL_KNOWN


def test_operators_from_a_config_reload_get_their_zeros_and_counts_keep() -> None:
    s = Snapshot()
    set_operators(s, ["orange"])
    s.reload_failures["orange"] = 3
    set_operators(s, ["orange", "bouygues"])
    _kind, labels, values = _families(s)["blocker_reload_failures"]
    assert dict(zip((lab["operator"] for lab in labels), values, strict=True)) == {"bouygues": 0, "orange": 3}
