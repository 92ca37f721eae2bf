"""The rotating sample: every name of the set is asked within one sweep period, whatever names
come and go meanwhile; changed and failing names are asked at once; the load per pass stays the
sample's size (a resolver down does not turn later passes into full ones)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from blocker.probe.model import Check, CheckResult
from blocker.probe.sampling import Sampler, check_key, sample_size
from tests.support.properties import examples


def _checks(names: set[str]) -> list[Check]:
    return [Check(n, "blocked", "nxdomain", ("o",)) for n in sorted(names)] + [
        Check("www.example.gg", "resolves", None, (), kind="control")]


def _results(checks: list[Check], verdict: str = "blocked") -> list[CheckResult]:
    return [CheckResult(c.name, "r", "udp", c.expected, verdict if c.kind != "control" else "resolves",
                        c.order_ids, "NXDOMAIN", (), 1.0) for c in checks]


@settings(max_examples=examples(200), deadline=None)
@given(st.integers(1, 400), st.integers(0, 50), st.sampled_from([60.0, 300.0]), st.sampled_from([600.0, 3600.0]),
       st.lists(st.tuples(st.integers(0, 999), st.booleans()), max_size=40))
def test_rotation_covers_every_name_within_one_sweep_period(n: int, floor: int, interval: float, sweep: float,
                                                            churn: list[tuple[int, bool]]) -> None:
    names = {f"n{i:04d}.example" for i in range(n)}
    sampler = Sampler()
    passes = math.floor(sweep / interval)
    # A few passes first: the cursor is anywhere when the window starts.
    for _ in range(3):
        checks = _checks(names)
        sel = sampler.select(checks, sample_size(len(checks) - 1, sample_per_pass=floor, interval=interval,
                                                 sweep_period=sweep))
        sampler.observe(sel.checks, _results(sel.checks))
    present_throughout = set(names)
    asked: set[str] = set()
    for p in range(passes):
        for index, add in churn[p::passes]:  # names come and go during the window
            name = f"c{index:04d}.example"
            if add:
                names.add(name)
            else:
                names.discard(name)
                present_throughout.discard(name)
        checks = _checks(names)
        size = sample_size(len(checks) - 1, sample_per_pass=floor, interval=interval, sweep_period=sweep)
        sel = sampler.select(checks, size)
        chosen = [c for c in sel.checks if c.kind != "control"]
        assert len(chosen) <= size + sel.changed
        assert any(c.kind == "control" for c in sel.checks), "the control names are asked every pass"
        asked.update(c.name for c in chosen)
        sampler.observe(sel.checks, _results(sel.checks))
    assert present_throughout <= asked


def test_a_new_name_is_asked_at_once_and_again_until_it_holds() -> None:
    names = {f"n{i}.example" for i in range(100)}
    sampler = Sampler()
    sel = sampler.select(_checks(names), 10)
    sampler.observe(sel.checks, _results(sel.checks))
    names.add("new.example")
    sel = sampler.select(_checks(names), 10)
    assert "new.example" in {c.name for c in sel.checks} and sel.changed == 1
    sampler.observe(sel.checks, _results(sel.checks, "not-blocked"))
    sel = sampler.select(_checks(names), 10)
    assert "new.example" in {c.name for c in sel.checks}, "still not holding: asked again"
    sampler.observe(sel.checks, _results(sel.checks))
    for _ in range(3):
        sel = sampler.select(_checks(names), 10)
        sampler.observe(sel.checks, _results(sel.checks))
    assert sel.changed == 0


def test_failing_rotation_names_are_asked_again_but_the_pass_stays_bounded() -> None:
    """Every answer an error (a resolver down): the failures carried over never exceed the
    sample's size, so a pass asks at most twice the sample, not the whole set."""
    names = {f"n{i:05d}.example" for i in range(10_000)}
    sampler = Sampler()
    for _ in range(20):
        sel = sampler.select(_checks(names), 100)
        assert len(sel.checks) <= 2 * 100 + 1
        sampler.observe(sel.checks, _results(sel.checks, "error"))


def test_sample_size_defaults_keep_small_sets_whole_and_split_large_ones() -> None:
    assert sample_size(5_000, sample_per_pass=10_000, interval=300, sweep_period=3600) == 5_000
    assert sample_size(1_000_000, sample_per_pass=10_000, interval=300, sweep_period=3600) == 83_334
    assert sample_size(1_000_000, sample_per_pass=0, interval=300, sweep_period=0) == 1_000_000
    assert sample_size(0, sample_per_pass=10, interval=300, sweep_period=3600) == 0


def test_subdomain_checks_keep_their_key_across_random_labels() -> None:
    a = Check("probe-0a1b2c3d.x.example", "blocked", "nxdomain", ("o",), kind="subdomain")
    b = Check("probe-ffffffff.x.example", "blocked", "nxdomain", ("o",), kind="subdomain")
    assert check_key(a) == check_key(b)
