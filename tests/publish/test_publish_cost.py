"""Publishing: the same audit records, state and zones as before the cost work, at linear cost.

The contract test replays a small history (first publish, an order edited, an order lifted, an
order expired, a removal forced) through `effective_orders`, `compute_plan` and `publish_plan`
and compares every audit record (event and data) with the records the code wrote before the
publish path was made linear (kept here verbatim). The scaling tests count work, not time: the
number of comparisons the audit grouping and the flush lists make, as the zone doubles.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from blocker.config.load import load_config
from blocker.config.model import Config
from blocker.orders.load import load_orders
from blocker.publish.plan import Change, compute_plan
from blocker.publish.reconcile import _change_groups, effective_orders, publish_plan
from blocker.record.audit import AuditLog
from blocker.record.state import State
from tests.support.audit import events, verify_audit
from tests.support.daemon import Env, wait_until
from tests.support.orders import whole_second, write_order
from tests.support.zones import zone_owners

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
        result = load_orders(orders, config.order_rules)
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


BEFORE = Path(__file__).resolve().parents[1] / "data" / "publish_audit_before.json"


def test_the_audit_records_of_a_publish_history_are_those_written_before(tmp_path: Path) -> None:
    """Same events, same order, same data (names, counts, reasons, serials, checksums) as the
    quadratic code wrote for the same history (tests/data/publish_audit_before.json)."""
    expected = [(event, data) for event, data in json.loads(BEFORE.read_text())]
    assert history(tmp_path) == expected


# --- a real daemon: a large publish does not make another transition late ---------------------

LATENESS_SLA = 1.0  # seconds after its instant by which an unrelated lift must be in its zone


def test_an_unrelated_lift_just_after_a_large_order_starts_is_on_time(env: Env) -> None:
    """A 20,000-target order starts at T on orange; an order on sfr lifts at T+3 s. The lift
    must be in sfr's zone within 1 s of its instant (it was 62.8 s late at 16k targets)."""
    config = env.config({"orange": {}, "sfr": {}}, reconcile=30)
    start = whole_second(5)
    lift = start + timedelta(seconds=3)
    big = [f"site{i:05d}.big.example" for i in range(20_000)]
    write_order(env.orders, "large", start, start + timedelta(days=30), big, operators=("orange",))
    write_order(env.orders, "small", start - timedelta(days=1), lift, ["small.example"], operators=("sfr",))
    daemon = env.start(config)
    assert "small.example" in zone_owners(env.zone("sfr"))
    assert "site00000.big.example" not in zone_owners(env.zone("orange"))
    seen = wait_until(lambda: "small.example" not in zone_owners(env.zone("sfr")),
                      lift.timestamp() + 30, "the lift on sfr")
    late = seen - lift.timestamp()
    print(f"\n[latency] unrelated lift while a 20k order is published: {late:+.3f} s")
    assert "site19999.big.example" in zone_owners(env.zone("orange"))
    assert late < LATENESS_SLA, f"lift applied {late:.3f} s after its instant\n{daemon.log()}"
    records = verify_audit(env.state)
    lifted = [d for d in events(records, "entries-lifted") if d["order"] == "small"]
    assert [(d["operator"], d["names"], d["reasons"]) for d in lifted] == [("sfr", ["small.example", "*.small.example"],
                                                                             ["expired"])]


SLOW_RELOAD = 5.0  # seconds orange's reload hook takes once the large order is in its zone


@pytest.mark.parametrize("slow,other", [("orange", "sfr"), ("sfr", "orange")])
def test_a_transition_on_another_operator_is_not_held_by_a_slow_publish(env: Env, slow: str,
                                                                        other: str) -> None:
    """A large order starts at T on one operator whose publish then takes 5 s (its reload hook
    sleeps); at T+1 s an order on another operator lifts, and one on the busy operator lifts too.
    The other operator's lift is in its zone within 1 s of its instant, while the slow reload
    still runs (it was 4+ s late: every reconcile waited for the one before); the busy
    operator's own lift comes right after its publish (its publisher plans it again); the trail
    verifies; both zones end up right and /healthz is 200."""
    hook = ["sh", "-c", f"if grep -q big.example {{zone_file}}; then sleep {SLOW_RELOAD:g}; fi"]
    config = env.config({slow: {"reload": {"kind": "command", "command": hook}}, other: {}},
                        reconcile=30, publish={"reload_timeout": 20})
    start = whole_second(4)
    lift = start + timedelta(seconds=1)
    write_order(env.orders, "large", start, start + timedelta(days=30), [f"s{i}.big.example" for i in range(2000)],
                operators=(slow,))
    write_order(env.orders, "other", start - timedelta(days=1), lift, ["other.example"], operators=(other,))
    write_order(env.orders, "same", start - timedelta(days=1), lift, ["same.example"], operators=(slow,))
    daemon = env.start(config)
    assert "other.example" in zone_owners(env.zone(other)) and "same.example" in zone_owners(env.zone(slow))
    seen = wait_until(lambda: "other.example" not in zone_owners(env.zone(other)), lift.timestamp() + 30,
                      "the lift on the other operator")
    late = seen - lift.timestamp()
    print(f"\n[latency] lift on {other} while {slow}'s publish takes {SLOW_RELOAD:g} s: {late:+.3f} s")
    assert late < LATENESS_SLA, f"lift applied {late:.3f} s after its instant\n{daemon.log()}"
    assert "s0.big.example" in zone_owners(env.zone(slow))  # the large order is written; its reload runs
    assert time.time() < start.timestamp() + SLOW_RELOAD, "the slow publish was over before the lift"
    done = wait_until(lambda: "same.example" not in zone_owners(env.zone(slow)),
                      start.timestamp() + SLOW_RELOAD + 10, "the lift on the busy operator")
    assert done >= start.timestamp() + SLOW_RELOAD - 0.5  # it waited for its operator's publish only
    wait_until(lambda: daemon.health()[0] == 200, time.time() + 5, f"healthz 200 {daemon.health()}")
    assert daemon.stop() == 0
    records = verify_audit(env.state)
    seq = {id(r): i for i, r in enumerate(records)}
    lifted = [r for r in records if r["event"] == "entries-lifted"]
    assert sorted((r["data"]["operator"], r["data"]["order"], r["data"]["reasons"]) for r in lifted) == sorted(
        [(other, "other", ["expired"]), (slow, "same", ["expired"])])
    big = next(r for r in records if r["event"] == "entries-activated" and r["data"]["order"] == "large")
    slow_reload = next(r for r in records if r["event"] == "reload" and r["data"]["operator"] == slow
                       and r["data"]["serial"] == big["data"]["serial"])
    other_lift = next(r for r in lifted if r["data"]["operator"] == other)
    assert seq[id(big)] < seq[id(other_lift)] < seq[id(slow_reload)], "the lift waited for the slow reload"
    assert slow_reload["data"]["ok"] and all(d["ok"] for d in events(records, "reload"))
    assert records[-1]["event"] == "daemon-stop"
    assert zone_owners(env.zone(other)) == set()
    assert zone_owners(env.zone(slow)) == {f"{p}s{i}.big.example" for i in range(2000) for p in ("", "*.")}
    assert "Traceback" not in daemon.log() and "reconcile failed" not in daemon.log()


def test_sighup_with_a_new_operator_during_a_slow_publish_and_stop_waits_for_it(env: Env) -> None:
    """While orange's publish takes 5 s, a SIGHUP brings a config with one more operator: its
    zone is published at once (orange's publisher keeps the config it started with); a SIGTERM
    then waits for orange's publish to finish, and the trail ends with it, then daemon-stop."""
    hook = ["sh", "-c", f"if grep -q big.example {{zone_file}}; then sleep {SLOW_RELOAD:g}; fi"]
    slow = {"orange": {"reload": {"kind": "command", "command": hook}}}
    config = env.config(slow, reconcile=30, publish={"reload_timeout": 20})
    write_order(env.orders, "both", whole_second(-3600), whole_second(3600), ["both.example"],
                operators=("orange", "sfr"))
    daemon = env.start(config)
    assert not env.zone("sfr").exists()
    write_order(env.orders, "large", whole_second(-60), whole_second(3600), ["s1.big.example", "s2.big.example"])
    written = wait_until(lambda: "s1.big.example" in zone_owners(env.zone()), time.time() + 5, "orange written")
    env.config({**slow, "sfr": {}}, reconcile=30, publish={"reload_timeout": 20})
    sent = time.time()
    daemon.send(signal.SIGHUP)
    seen = wait_until(lambda: "both.example" in zone_owners(env.zone("sfr")), sent + 5, "sfr published")
    assert seen - sent < LATENESS_SLA, f"sfr published {seen - sent:.3f} s after SIGHUP\n{daemon.log()}"
    assert seen < written + SLOW_RELOAD - 1, "orange's slow reload was over before sfr was published"
    assert daemon.stop(timeout=15) == 0
    assert time.time() >= written + SLOW_RELOAD - 0.5  # the stop waited for orange's reload
    records = verify_audit(env.state)
    assert records[-1]["event"] == "daemon-stop"
    reloads = events(records, "reload")
    assert all(d["ok"] for d in reloads) and {d["operator"] for d in reloads} == {"orange", "sfr"}
    orange = [d for d in events(records, "zone-published") if d["operator"] == "orange"][-1]
    assert [d["serial"] for d in reloads if d["operator"] == "orange"][-1] == orange["serial"]
    assert "Traceback" not in daemon.log() and "reconcile failed" not in daemon.log()


@pytest.mark.integration
def test_the_shared_publish_lock_is_held_once_for_the_threads_and_excludes_another_process(tmp_path: Path) -> None:
    """Threads of the daemon publishing different operators are inside at once; `blocker apply`
    in another process waits until the last of them is out."""
    import subprocess
    import sys
    import threading

    from blocker.publish.reconcile import shared_publish_lock

    probe = ("import sys; from pathlib import Path; from blocker.publish.reconcile import publish_lock\n"
             "from blocker.publish.writer import PublishError\n"
             "try:\n    with publish_lock(Path(sys.argv[1]), timeout=0.3): print('locked')\n"
             "except PublishError: print('refused')\n")

    def other_process() -> str:
        return subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                              timeout=30).stdout.strip()

    inside, go = threading.Barrier(3), threading.Event()

    def publisher() -> None:
        with shared_publish_lock(tmp_path):
            inside.wait(5)  # all three at once: no thread excludes another
            go.wait(10)

    threads = [threading.Thread(target=publisher) for _ in range(2)]
    for t in threads:
        t.start()
    with shared_publish_lock(tmp_path):
        inside.wait(5)
        assert other_process() == "refused"
        go.set()
        for t in threads:
            t.join(10)
        assert other_process() == "refused"  # this thread is still inside
    assert other_process() == "locked"


# --- scaling: work counted, not timed ----------------------------------------------------------

class CountingList(list):  # type: ignore[type-arg]
    """A list that counts the items read from it (by iteration or by index)."""

    reads = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        for item in super().__iter__():
            CountingList.reads += 1
            yield item

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        CountingList.reads += 1
        return super().__getitem__(index)


def _changes(orders: int, per_order: int) -> list[Change]:
    out = []
    for i in range(per_order):
        for o in range(orders):
            kind = ("add", "remove", "change")[(i + o) % 3]
            ids = (f"order-{o:03d}",) if i % 5 else (f"order-{o:03d}", f"order-{(o + 1) % orders:03d}")
            out.append(Change(f"n{i}-{o}.example", kind, None, ids if kind != "remove" else (), None,
                              ids if kind != "add" else (), ("order-added",) if i % 2 else ("started",)))
    return out


def _reference_groups(changes: list[Change]) -> list[tuple[str, str, int, list[str], list[str]]]:
    """What the old `_audit_publish` computed (quadratic), for the same changes."""
    by_order: dict[tuple[str, str], list[str]] = {}
    for change in changes:
        kind = "entries-activated" if change.kind == "add" else "entries-lifted" if change.kind == "remove" else ""
        if not kind:
            continue
        for order_id in change.order_ids if change.kind == "add" else change.old_order_ids:
            by_order.setdefault((kind, order_id), []).append(change.owner)
    return [(kind, order_id, len(names), names[:1000],
             sorted({r for c in changes if c.owner in set(names) for r in c.reasons}))
            for (kind, order_id), names in sorted(by_order.items())]


def test_the_audit_grouping_equals_the_old_one_and_reads_each_change_once_per_use() -> None:
    small = _changes(7, 60)
    assert _change_groups(small)[0] == _reference_groups(small)
    reads = []
    for per_order in (1500, 3000):  # twice the changes, the same 40 orders
        changes = CountingList(_changes(40, per_order))
        CountingList.reads = 0
        groups, counts = _change_groups(changes)
        assert sum(counts.values()) == len(changes)
        reads.append(CountingList.reads)
        # One pass, then at most the 1,000 names each record carries: not changes x groups.
        assert CountingList.reads <= len(changes) + 1000 * len(groups)
    assert reads[1] <= 2 * reads[0]


def test_the_fsyncs_of_a_first_publish_do_not_grow_with_the_orders(tmp_path: Path, monkeypatch) -> None:
    """The audit and state writes of a reconcile are batched: 10 or 40 new orders on two
    operators cost the same number of fsyncs (it was three per record, records per order)."""
    import os

    counted = []
    for n in (10, 40):
        root = tmp_path / str(n)
        orders = root / "orders"
        orders.mkdir(parents=True)
        (root / "blocker.yaml").write_text(CONFIG_YAML)
        config = load_config(root / "blocker.yaml")
        for i in range(n):
            _order(orders, f"o{i:03d}", [f"a{i}.example", f"b{i}.example"])
        state, audit = State(root / "state"), AuditLog(root / "state", actor="test")
        instant = _at("2030-01-10T12:00:00+01:00")
        calls = [0]

        def fsync(fd: int, calls: list[int] = calls, real=os.fsync) -> None:  # type: ignore[no-untyped-def]
            calls[0] += 1
            real(fd)

        result = load_orders(orders, config.order_rules)
        monkeypatch.setattr(os, "fsync", fsync)
        eff = effective_orders(result, config, state, audit, instant, actor="test")
        plan = compute_plan(eff.orders, instant, config, root / "zones")
        publish_plan(plan, config, root / "zones", state, audit, actor="test", now=instant)
        monkeypatch.undo()
        records = list(audit.records())
        assert sum(r["event"] == "entries-activated" for r in records) == 2 * n
        state.close()
        counted.append(calls[0])
    assert counted[0] == counted[1], counted


def test_patching_the_owner_order_reads_the_list_once_not_once_per_change() -> None:
    """A large order added to a large zone (100k owners into 1M) patches the canonical order by
    a binary search per owner and one pass of slices: `islice` from the start for each cut made
    it quadratic (the daemon's 100k-target order on a 1M-name zone had not been planned after
    minutes)."""
    import math

    from blocker.policy import sort_key
    from blocker.policy.incremental import patch_order

    for size, changes in ((4000, 400), (8000, 800), (16000, 1600)):
        ordered = sorted((f"n{i}.example" for i in range(size)), key=sort_key)
        added = [f"n{i}x.example" for i in range(0, size, size // changes)]
        removed = ordered[1::size // changes][: changes // 2]
        counted = CountingList(ordered)
        CountingList.reads = 0
        out = patch_order(counted, removed, added)
        assert out == sorted((set(ordered) - set(removed)) | set(added), key=sort_key)
        cuts = len(added) + len(removed)
        assert CountingList.reads <= cuts * (2 * math.log2(size) + 4), (size, CountingList.reads)
