"""When an answer proves the order: the canary serial and the control names.

A negative answer, a silence or a SERVFAIL can come from something other than our policy (a
resolver that answers NXDOMAIN to everything, a site whose servers are offline, another policy),
so `blocked` and `resolves` are only proofs after prove(): the resolver must serve, on the same
transport, the canary serial of a zone that holds the entry (for a lift: of the zone that removed
it), and every control name must have resolved on it in the same pass; otherwise the check is
`unverified`. Pure functions: the canary reads themselves are in blocker.probe.canary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from blocker.probe.model import PROVEN, Check, CheckResult, Lane, VerdictText
from blocker.vocab import Verdict
from blocker.zone.serial import serial_gt


def proof_gap(check: Check, need: int | None, served: int | None, control: str = "") -> str:
    """Why a `blocked`/`resolves` answer to `check` proves nothing on a lane ("" when it proves it).

    need: the first published serial whose zone holds the entry (a lift: the first whose zone no
    longer covers the name); None when no published zone does. served: the canary serial the
    lane applied throughout the pass (None: no canary, so which zone it applies is unknown).
    control: what went wrong with a control name on the lane ("" when all of them resolved).
    """
    if control:
        return control
    if served is None:
        return "the resolver serves no canary serial for this operator: which zone it applies is unknown"
    lifted = check.expected == "resolves"
    if need is None:
        return ("the published zone still covers this name" if lifted
                else "no published zone holds this entry")
    if serial_gt(need, served):
        what = "no longer covers this name" if lifted else "holds this entry"
        return f"the resolver serves serial {served}, older than {need}, the first published zone that {what}"
    return ""


def prove(checks: Sequence[Check], results: Sequence[CheckResult], need: Sequence[int | None],
          served: Mapping[Lane, int | None]) -> list[CheckResult]:
    """Turn every `blocked`/`resolves` that its lane cannot prove into `unverified`.

    Why: those answers are also what a resolver gives that answers NXDOMAIN to everything, that
    applies an older zone, or that cannot reach an offline site (a drop). They prove our policy
    only when, on the same resolver and transport, every control name resolved in this pass (and
    there was at least one) and the canary serial applied is at or after need[i] (see proof_gap). Failures (not-blocked,
    overblocked, error) stand as they are: an answer that contradicts the order is a fact whatever
    zone produced it. Control checks keep their verdict: they are the evidence, not the claim.
    results: as probe() returns them (check order, then lane order); need: one per check.
    """
    if not results:
        return []
    if len(need) != len(checks) or len(results) % len(checks):
        raise ValueError("prove(): results, checks and need do not line up")
    lanes = len(results) // len(checks)
    control: dict[Lane, str] = {}
    no_control = ("no control name was probed in this pass (probe.control_names, or all of them are "
                  "blocked): a resolver that blocks everything looks the same")
    if any(check.kind == "control" for check in checks):
        no_control = ""
    for ci, check in enumerate(checks):
        if check.kind != "control":
            continue
        for r in results[ci * lanes:(ci + 1) * lanes]:
            if r.verdict != "resolves":
                control.setdefault((r.resolver, r.transport),
                                   f"the control name {r.name} did not resolve in this pass ({r.verdict})")
    out = list(results)
    # Fast path, the usual pass: every lane proves every serial needed (a pass has few distinct ones).
    pass_lanes = [(r.resolver, r.transport) for r in results[:lanes]]
    if all(not proof_gap(checks[0], n, served.get(lane), control.get(lane, no_control))
           for lane in pass_lanes for n in set(need)):
        return out
    gaps: dict[tuple[Lane, int | None, str], str] = {}
    reasons: dict[tuple[str, str, str], str] = {}
    for i, r in enumerate(results):
        if r.verdict not in PROVEN or r.kind == "control":
            continue
        lane = (r.resolver, r.transport)
        check = checks[i // lanes]
        key = (lane, need[i // lanes], check.expected)
        gap = gaps.get(key)
        if gap is None:
            gap = gaps[key] = proof_gap(check, key[1], served.get(lane), control.get(lane, no_control))
        if gap:
            text = reasons.get((r.verdict, r.reason, gap))
            if text is None:
                seen = f"answered as {r.verdict} ({r.reason})" if r.reason else f"answered as {r.verdict}"
                text = reasons[r.verdict, r.reason, gap] = f"{seen}, but {gap}"
            out[i] = _with_verdict(r, Verdict.UNVERIFIED.value, text)
    return out


def _with_verdict(r: CheckResult, verdict: VerdictText, reason: str) -> CheckResult:
    """A copy of r with another verdict and reason. Why not dataclasses.replace: a frozen
    dataclass's __init__ costs ~10 us, and a lying resolver makes every result of a 10^6-check
    pass unverified; copying the instance dict is a tenth of that."""
    new = object.__new__(CheckResult)
    fields = new.__dict__
    fields.update(r.__dict__)
    fields["verdict"], fields["reason"] = verdict, reason
    return new



def served_throughout(before: Mapping[Lane, int | None], after: Mapping[Lane, int | None]) -> dict[Lane, int | None]:
    """The serial a lane applied for the whole pass: the older of the reads before and after it
    (a reload during the pass leaves the early answers to the old zone); None if either failed."""
    out: dict[Lane, int | None] = {}
    for lane in set(before) | set(after):
        a, b = before.get(lane), after.get(lane)
        out[lane] = None if a is None or b is None else (a if serial_gt(b, a) else b)
    return out



__all__ = ["proof_gap", "prove", "served_throughout"]
