"""Which checks a probe pass asks, when the whole set is too large to ask every pass.

At 10^6 names and tens of resolvers a full pass takes longer than the probe interval, and asking
everything every pass would put the whole load on every resolver all the time. A pass therefore
asks (1) every check that is new or changed since the last pass, and every such check that has not
yet held on every lane (a new order is proven as soon as its resolvers serve it, not a sweep
later), (2) the control names (prove() needs them on every pass), and (3) a rotating sample of the
rest, sized so that the rotation covers the whole set within `sweep_period` when passes run every
`interval`.

The rotation's cursor is a check key (the last one asked, in sorted order), not a position: names
added or removed between passes do not shift it, so no name is skipped by the rotation, and a name
added behind the cursor is asked at once anyway (it is new). Keys, not names: a subdomain check
asks a fresh random label each pass, so it is keyed by its wildcard owner.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from blocker.probe.expectations import RANDOM_LABEL_PREFIX
from blocker.probe.model import PROVEN, Check, CheckResult

# What identifies a check across passes: (kind, name without the random label, expected, action).
CheckKey = tuple[str, str, str, str]


def check_key(check: Check) -> CheckKey:
    name = check.name
    if name.startswith(RANDOM_LABEL_PREFIX) and check.kind in ("subdomain", "lifted"):
        name = "*." + name.split(".", 1)[1]
    return (check.kind, name, check.expected, check.action or "")


def sample_size(total: int, *, sample_per_pass: int, interval: float, sweep_period: float) -> int:
    """Names of the rotation asked per pass: at least `sample_per_pass`, and enough for the whole
    set within the sweep period (ceil(total / size) passes of `interval` seconds fit in it).
    sample_per_pass 0 and sweep_period 0: the whole set every pass."""
    if total <= 0:
        return 0
    if sweep_period <= 0:
        return total if sample_per_pass <= 0 else min(total, sample_per_pass)
    passes = max(1, math.floor(sweep_period / max(interval, 1e-9)))
    return min(total, max(sample_per_pass, math.ceil(total / passes)))


@dataclass(frozen=True)
class Selection:
    """The checks of one pass, in the order given, and why each was chosen."""

    checks: list[Check]
    changed: int        # new or changed since the last pass, or not yet held
    sampled: int        # from the rotation
    total: int          # the whole set this pass was chosen from
    wrapped: bool       # the rotation passed the end of the set this pass (a sweep completed)


class Sampler:
    """One operator's rotation, kept across passes by whoever runs them (daemon or probe agent)."""

    def __init__(self) -> None:
        self._known: set[CheckKey] | None = None  # keys of the last pass's whole set; None: no pass yet
        self._pending: set[CheckKey] = set()      # keys asked again next pass (changed, or failing)
        self._cursor: CheckKey | None = None      # the last key the rotation asked
        self._new: set[CheckKey] = set()          # keys new or changed in the last selection
        self._cap = 0                              # failing rotation keys carried over: at most this many

    def select(self, checks: Sequence[Check], size: int) -> Selection:
        """The checks to ask this pass: changed and pending ones, controls, and `size` of the rest
        from the cursor on (wrapping). The first pass has nothing to compare with: the rotation
        alone (a restart does not ask 10^6 names at once)."""
        keys = [check_key(c) for c in checks]
        known = self._known if self._known is not None else set(keys)
        chosen: set[int] = set()
        self._new = set()
        changed = 0
        for i, (check, key) in enumerate(zip(checks, keys, strict=True)):
            if check.kind == "control":
                chosen.add(i)
            elif key not in known or key in self._pending:
                chosen.add(i)
                changed += 1
                if key not in known:
                    self._new.add(key)
        rest = sorted((key, i) for i, key in enumerate(keys) if i not in chosen)
        take = min(max(0, size), len(rest))
        if take >= len(rest):
            picked = [i for _, i in rest]
            wrapped = bool(rest)
            self._cursor = None
        else:
            start = 0 if self._cursor is None else bisect.bisect_right(rest, (self._cursor, len(keys)))
            start %= len(rest)
            pairs = [rest[(start + j) % len(rest)] for j in range(take)]
            wrapped = start + take >= len(rest)
            picked = [i for _, i in pairs]
            if pairs:
                self._cursor = pairs[-1][0]
        chosen.update(picked)
        self._known = set(keys)
        self._pending &= self._known
        self._cap = max(size, 0)
        return Selection([c for i, c in enumerate(checks) if i in chosen], changed, len(picked), len(checks),
                         wrapped)

    def observe(self, checks: Iterable[Check], results: Sequence[CheckResult]) -> None:
        """After the pass: a new or changed check is asked again every pass until it held on every
        lane; a rotation check that did not hold is asked again too, but at most `size` of those
        (a resolver down must not turn every later pass into a full one)."""
        by_name: dict[str, list[CheckResult]] = {}
        for r in results:
            by_name.setdefault(r.name, []).append(r)
        failing: list[CheckKey] = []
        for check in checks:
            if check.kind == "control":
                continue
            rs = by_name.get(check.name, [])
            key = check_key(check)
            if rs and all(r.verdict in PROVEN for r in rs):
                self._pending.discard(key)
            elif key in self._new or key in self._pending:
                self._pending.add(key)
            else:
                failing.append(key)
        room = max(0, self._cap - len(self._pending))
        self._pending.update(failing[:room])


__all__ = ["CheckKey", "Sampler", "Selection", "check_key", "sample_size"]
