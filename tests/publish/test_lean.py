"""A lean publish (`blocker apply`: the plan shed, named-checkzone run before the files are made,
issue 11) writes the same zones and the same audit records as the full one the daemon runs, and
still refuses what named-checkzone refuses."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from blocker.config.load import load_config
from blocker.config.model import Config
from blocker.orders.load import load_orders
from blocker.publish import lean, writer
from blocker.publish.plan import compute_plan
from blocker.publish.reconcile import _change_groups, reconcile
from blocker.record.audit import AuditLog

pytestmark = pytest.mark.integration  # named-checkzone runs (publish.check: auto)

AT = datetime(2026, 6, 1, tzinfo=UTC)
ORDER = """\
id: {id}
court: Tribunal judiciaire de Paris
case_number: RG 26/{n:05d}
decision_date: 2026-01-01
operators: [{ops}]
start: 2026-01-02
end: 2099-01-01
targets:
{targets}
"""
CONFIG = """\
publish: {{check: {check}}}
operators:
  orange: {{reload: {{kind: none}}}}
  sfr: {{reload: {{kind: none}}}}
  bouygues: {{reload: {{kind: {bouygues}}}}}
"""


def _setup(root: Path, bouygues: str = "none") -> Config:
    (root / "orders").mkdir(parents=True, exist_ok=True)
    for n, ops in enumerate(["orange, sfr, bouygues", "orange", "sfr, bouygues", "orange, sfr, bouygues"]):
        targets = "\n".join(f"  - {{domain: site{i}.o{n}.example, subdomains: {str(i % 2 == 0).lower()}}}"
                            for i in range(200))
        if n == 3:  # an order naming owners another names too, with a stronger action
            targets = "  - site0.o0.example\n  - {domain: site1.o0.example, subdomains: true}\naction: drop"
        (root / "orders" / f"o{n}.yaml").write_text(ORDER.format(id=f"o{n}", n=n, ops=ops, targets=targets))
    (root / "config.yaml").write_text(CONFIG.format(check="auto", bouygues=bouygues))
    return load_config(root / "config.yaml").with_paths(orders_dir=root / "orders", state_dir=root / "state",
                                                        zones_dir=root / "zones")


def _records(root: Path) -> list[str]:
    """The audit records, with the folder they were made in left out (the runs use two)."""
    return [json.dumps([r["event"], r["data"]], sort_keys=True).replace(str(root), "ROOT")
            for r in AuditLog(root / "state").records()]


def _run(root: Path, config: Config, lean_: bool) -> None:
    done = reconcile(lambda: load_orders(config.orders_dir, config.order_rules), config, config.state_dir,
                     config.zones_dir, AT, now=AT, lean=lean_)
    assert done.published and all(o.published for o in done.outcomes), done.outcomes


def test_lean_apply_writes_the_same_zones_and_records(tmp_path: Path) -> None:
    full, slim = _setup(tmp_path / "full"), _setup(tmp_path / "lean")
    _run(tmp_path / "full", full, False)
    _run(tmp_path / "lean", slim, True)
    for op in ("orange", "sfr", "bouygues"):
        assert (slim.zones_dir / f"{op}.rpz").read_bytes() == (full.zones_dir / f"{op}.rpz").read_bytes()
    assert _records(tmp_path / "lean") == _records(tmp_path / "full")
    assert sorted(p.name for p in slim.zones_dir.iterdir()) == ["bouygues.rpz", "orange.rpz", "sfr.rpz"]


def test_shed_keeps_what_publishing_reads(tmp_path: Path) -> None:
    config = _setup(tmp_path, bouygues="powerdns-recursor")  # only planned here: no rec_control runs
    orders = load_orders(config.orders_dir, config.order_rules).orders
    plan = compute_plan(orders, AT, config, config.zones_dir)
    before = {p.operator: (p.order_ids, _change_groups(p.changes), [c.owner for c in p.changes])
              for p in plan.operators}
    checksum, result = plan.checksum, plan.result
    lean.shed(plan, config, _change_groups)
    assert (plan.checksum, plan.result) == (checksum, result)
    for p in plan.operators:
        ids, (groups, counts), owners = before[p.operator]
        assert p.changes == [] and p.entries == {} and p.zone.content is None
        assert p.order_ids == ids and (p.shed.groups, p.shed.counts) == (groups, counts)
        assert p.shed.flush == (owners if p.operator == "bouygues" else [])
    assert all(o.targets == () for o in plan.orders.values()) and set(plan.orders) == set(orders)


def test_a_body_named_checkzone_refuses_is_not_marked_and_the_publish_fails(tmp_path: Path) -> None:
    """The precheck only ever marks what named-checkzone accepted: a body it refuses (an owner
    too long once the longest origin is appended) is checked again by the publish, which fails."""
    config = _setup(tmp_path)
    orders = load_orders(config.orders_dir, config.order_rules).orders
    plan = compute_plan(orders, AT, config, config.zones_dir)
    p = plan.operators[0]
    bad = p.zone.body + b"a" * 63 + b"." + b"b" * 63 + b"." + b"c" * 63 + b"." + b"d" * 50 + b" CNAME .\n"
    p.zone = type(p.zone)(p.zone.operator, p.zone.origin, bad, "not-a-real-checksum", p.zone.entries,
                          p.zone.names)
    lean.precheck(plan, config, config.zones_dir)
    assert "not-a-real-checksum" not in writer._CHECKED
    assert [q.zone.checksum in writer._CHECKED for q in plan.operators[1:]] == [True] * (len(plan.operators) - 1)
    assert list(config.zones_dir.iterdir()) == []  # its temporary files are gone
