"""Publishing: the same audit records, state and zones as before the cost work, at linear cost.

The contract test replays a small history (first publish, an order edited, an order lifted, an
order expired, a removal forced) through `effective_orders`, `compute_plan` and `publish_plan`
and compares every audit record (event and data) with the records the code wrote before the
publish path was made linear (kept here verbatim). The scaling tests count work, not time: the
number of comparisons the audit grouping and the flush lists make, as the zone doubles.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blocker.audit import AuditLog
from blocker.config import Config, load_config
from blocker.orders import load_orders
from blocker.plan import compute_plan
from blocker.reconcile import effective_orders, publish_plan
from blocker.state import State

CONFIG_YAML = """\
timezone: Europe/Paris
publish: {check: structural}
operators:
  orange:
    redirect: {a: [192.0.2.10]}
  free:
    redirect: {cname: info.operator.example}
"""


def _order(folder: Path, order_id: str, targets: list[str], *, operators: str = "[orange, free]",
           start: str = "2030-01-01", end: str = "2030-06-01", action: str = "nxdomain",
           lifted: str | None = None) -> None:
    text = (f"id: {order_id}\ncourt: Tribunal judiciaire de Paris\ncase_number: RG 30/{len(order_id):05d}\n"
            f"decision_date: 2029-12-20\noperators: {operators}\nstart: {start}\nend: {end}\naction: {action}\n"
            + (f"lifted: {{at: '{lifted}', reason: appeal}}\n" if lifted else "")
            + "targets:\n" + "".join(f"  - {t}\n" for t in targets))
    (folder / f"{order_id}.yaml").write_text(text)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def history(root: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every audit record (event, data) of a short history of publishes; paths made relative."""
    orders, state_dir, zones = root / "orders", root / "state", root / "zones"
    orders.mkdir(parents=True)
    (root / "blocker.yaml").write_text(CONFIG_YAML)
    config: Config = load_config(root / "blocker.yaml")
    state, audit = State(state_dir), AuditLog(state_dir, actor="test")

    def step(at: str, force: bool = False) -> None:
        instant = _at(at)
        result = load_orders(orders, config)
        assert result.ok, result.errors
        eff = effective_orders(result, config, state, audit, instant, force=force, actor="test")
        last = {op: z.published_at for op, z in state.zones().items()}
        plan = compute_plan(eff.orders, instant, config, zones, force=force, last_publish=last)
        publish_plan(plan, config, zones, state, audit, actor="test", now=instant)

    _order(orders, "alpha", ["a.example", "{domain: b.example, subdomains: false}", "shared.example",
                             "www.c.example"])
    _order(orders, "beta", ["shared.example", "c.example", "d.example"], action="redirect")
    _order(orders, "gamma", ["g1.example", "g2.example"], operators="[free]", end="2030-02-01")
    _order(orders, "later", ["l.example"], start="2030-03-01")
    step("2030-01-10T12:00:00+01:00")
    # alpha edited: one target gone (a forced removal), one added; gamma expires; later starts.
    _order(orders, "alpha", ["{domain: b.example, subdomains: false}", "shared.example", "www.c.example",
                             "e.example"])
    step("2030-03-02T12:00:00+01:00", force=True)
    # beta lifted early: its names go, shared.example stays for alpha with alpha's action.
    _order(orders, "beta", ["shared.example", "c.example", "d.example"], action="redirect",
           lifted="2030-03-05T00:00:00+01:00")
    step("2030-03-06T12:00:00+01:00")
    state.close()
    prefix = str(orders) + "/"
    out = []
    for record in audit.records():
        data = json.loads(json.dumps(record["data"]).replace(prefix, "<orders>/"))
        out.append((record["event"], data))
    return out


BEFORE = Path(__file__).with_name("data") / "publish_audit_before.json"


def test_the_audit_records_of_a_publish_history_are_those_written_before(tmp_path: Path) -> None:
    """Same events, same order, same data (names, counts, reasons, serials, checksums) as the
    quadratic code wrote for the same history (tests/data/publish_audit_before.json)."""
    expected = [(event, data) for event, data in json.loads(BEFORE.read_text())]
    assert history(tmp_path) == expected
