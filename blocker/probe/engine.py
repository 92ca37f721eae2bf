"""The probe engine: ask operators' resolvers every blocked, lifted and control name, fast, and say
for each answer whether the block holds.

Why hand-rolled and not dnspython's query functions: see blocker.probe.wire (queries built once,
replies read lazily from their bytes). This module schedules: one global in-flight window shared
round-robin by the lanes (blocker.probe.transports), a token bucket per resolver, retries with
exponential backoff and jitter from one heap, and one timer that expires queries and reports
progress. Measured with bench/probe.py: see its docstring.

A verdict is never inferred from silence, except for the `drop` action (see settle_drops): a
timeout there counts as blocked only when the same lane answered something after that query was
sent, so a dead resolver never looks compliant. What a pass returns is what the answers LOOK like
(blocker.probe.classify); blocker.probe.proof decides what they prove.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

from blocker.gcpause import no_cyclic_gc
from blocker.probe.classify import Rules, classify
from blocker.probe.model import EXPECTATIONS, TRANSPORTS, Check, CheckResult, ResolverTarget, Signature, VerdictText
from blocker.probe.transports import LaneBase, TcpLane, UdpLane, os_reason, tcp_exchange
from blocker.probe.wire import NameWires, QuerySpec, id_bytes, qtype_code
from blocker.vocab import ACTIONS, Verdict


class Job:
    """One check on one lane (resolver x transport): retries, timing, and where it is."""

    __slots__ = ("attempt", "edns", "first_sent", "heartbeat", "idx", "lane", "qid", "reason",
                 "requeues", "spec", "timeouts")

    def __init__(self, idx: int, spec: QuerySpec, lane: LaneBase, heartbeat: bool = False) -> None:
        self.idx = idx
        self.spec = spec
        self.lane = lane
        self.attempt = 0
        self.qid = -1
        self.first_sent = -1.0
        self.timeouts = 0
        self.edns = True
        self.reason = ""
        self.requeues = 0
        self.heartbeat = heartbeat


class Bucket:
    """Token bucket per resolver: rate queries/s, bursts of 50 ms worth. rate <= 0 or inf: no limit."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate if rate > 0 and math.isfinite(rate) else math.inf
        self.burst = max(1.0, self.rate * 0.05) if math.isfinite(self.rate) else math.inf
        self.tokens = self.burst
        self.stamp = now

    def allow(self, want: int, now: float) -> int:
        """How many of `want` sends may go now (and take them)."""
        if self.rate == math.inf:
            return want
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        n = min(want, int(self.tokens))
        self.tokens -= n
        return n




class Engine:
    """One probe pass: global in-flight window, per-resolver rate, one timer, results by index."""

    def __init__(self, checks: Sequence[Check], resolvers: Sequence[ResolverTarget], signature: Signature,
                 timeout: float, retries: int, concurrency: int, rate: float,
                 progress: Callable[[int, int], None] | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.rules = Rules(signature)
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.window = max(1, int(concurrency))
        self.progress = progress
        self.in_flight = 0
        self.closed = False
        self.pumping = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.retry_heap: list[tuple[float, int, Job]] = []
        self.retry_seq = 0
        self.backoff = min(0.25, max(0.01, self.timeout / 8))
        self.tick_every = min(0.05, max(0.005, self.timeout / 20))
        now = self.loop.time()
        buckets: dict[tuple[str, int], Bucket] = {}
        self.lanes: list[LaneBase] = []
        for target in resolvers:
            bucket = buckets.setdefault((target.host, target.port), Bucket(rate, now))
            for transport in target.transports:
                lane_type = UdpLane if transport == "udp" else TcpLane
                self.lanes.append(lane_type(self, target, bucket))
        self.total = len(checks) * len(self.lanes)
        self.results: list[CheckResult | None] = [None] * self.total
        specs = _specs(checks)
        n_lanes = len(self.lanes)
        for ci, spec in enumerate(specs):
            for li, lane in enumerate(self.lanes):
                job = Job(ci * n_lanes + li, spec, lane)
                lane.queue.append(job)
        self.done = 0
        self.outstanding = self.total
        self.reported = -1
        self.idle: asyncio.Future[None] = self.loop.create_future()
        self.timer: asyncio.TimerHandle | None = None
        self.failure: BaseException | None = None

    # --- running
    async def run(self) -> list[CheckResult]:
        id_bytes()
        try:
            for lane in self.lanes:
                try:
                    await lane.open()
                except OSError as exc:
                    self.kill_lane(lane, f"cannot open: {os_reason(exc)}")
            self._check_idle()
            self.timer = self.loop.call_later(self.tick_every, self.tick)
            self.pump()
            await self.idle
            await self.settle_drops()
            if self.failure is not None:
                raise self.failure
        finally:
            self.shutdown()
        self.report(force=True)
        # idle resolves only once every index is finished: no None is left.
        return cast("list[CheckResult]", self.results)

    def shutdown(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        for lane in self.lanes:
            lane.close()
        for task in list(self.tasks):
            task.cancel()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self.crash(exc)

    def kill_lane(self, lane: LaneBase, reason: str) -> None:
        """A lane that cannot even be opened: every check on it is an error, now."""
        lane.dead = reason
        now = self.loop.time()
        jobs = list(lane.queue)
        lane.queue.clear()
        for job in jobs:
            job.first_sent = now
            self.finish(job, Verdict.ERROR.value, "", (), reason, now)

    def pump(self) -> None:
        """Fill the global window from the lanes' queues, round-robin, within each rate limit."""
        if self.pumping or self.closed:
            return
        self.pumping = True
        try:
            now = self.loop.time()
            lanes = self.lanes
            while self.in_flight < self.window:
                progressed = False
                free = self.window - self.in_flight
                share = max(1, free // max(1, len(lanes)))
                for lane in lanes:
                    if not lane.queue or lane.dead:
                        continue
                    want = min(share, self.window - self.in_flight, lane.can_send())
                    if want <= 0:
                        continue
                    allowed = lane.bucket.allow(want, now)
                    if allowed <= 0:
                        continue
                    sent = lane.send_some(allowed, now)
                    if sent < allowed:
                        lane.bucket.tokens += allowed - sent
                    progressed = progressed or sent > 0
                if not progressed:
                    break
        finally:
            self.pumping = False

    def crash(self, exc: BaseException) -> None:
        """An exception in a callback (or the progress hook): make probe() raise it."""
        if self.failure is None:
            self.failure = exc
        if not self.idle.done():
            self.idle.set_exception(exc)

    def tick(self) -> None:
        """The one timer: expire queries, release due retries, report progress, refill."""
        if self.closed:
            return
        try:
            self._tick()
        except Exception as exc:
            self.crash(exc)
            return
        self.timer = self.loop.call_later(self.tick_every, self.tick)

    def _tick(self) -> None:
        now = self.loop.time()
        for lane in self.lanes:
            lane.expire(now)
        heap = self.retry_heap
        while heap and heap[0][0] <= now:
            _, _, job = heapq.heappop(heap)
            job.lane.queue.appendleft(job)
        self.report()
        self.pump()

    def report(self, force: bool = False) -> None:
        if self.progress is not None and (force or self.done != self.reported):
            self.reported = self.done
            self.progress(self.done, self.total)

    # --- outcomes
    def on_reply(self, job: Job, data: bytes, now: float) -> None:
        if job.heartbeat:
            self.heartbeat_done(job)
            return
        outcome = classify(job.spec, data, self.rules)
        verdict, rcode, answer, reason = outcome
        if verdict is not None:
            self.finish(job, verdict, rcode, answer, reason, now)
        elif reason == "truncated" and job.lane.transport == "udp":
            self.spawn(self.tcp_fallback(job))
        else:
            if rcode == "FORMERR":
                job.edns = False        # an old server that rejects EDNS: ask plainly next time
            self.attempt_failed(job, reason, now)

    async def tcp_fallback(self, job: Job) -> None:
        """A truncated UDP answer: ask the same question over TCP, once, outside the window."""
        lane = job.lane
        wire = id_bytes()[lane.next_qid()] + job.spec.tail
        try:
            data = await tcp_exchange(lane.target.host, lane.target.port, wire, self.timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            now = self.loop.time()
            self.attempt_failed(job, f"truncated; TCP retry failed: {exc or type(exc).__name__}", now)
            self.pump()
            return
        now = self.loop.time()
        verdict, rcode, answer, reason = classify(job.spec, data, self.rules)
        if verdict is None:
            self.attempt_failed(job, reason, now)
        else:
            self.finish(job, verdict, rcode, answer, reason or "answered over TCP after truncation", now)
        self.pump()

    def attempt_failed(self, job: Job, reason: str, now: float) -> None:
        """Retry with exponential backoff and jitter, or give the final verdict."""
        job.reason = reason
        if job.attempt <= self.retries:
            delay = self.backoff * (2 ** (job.attempt - 1)) * random.uniform(0.75, 1.25)
            self.retry_seq += 1
            heapq.heappush(self.retry_heap, (now + delay, self.retry_seq, job))
            return
        if job.heartbeat:
            self.heartbeat_done(job)
            return
        check = job.spec.check
        if check.expected == "blocked" and check.action == "drop" and job.timeouts == job.attempt:
            lane = job.lane
            if lane.last_reply > job.first_sent:
                self.finish(job, Verdict.BLOCKED.value, "", (), _drop_reason(job), now)
            else:
                lane.deferred.append(job)
                self.outstanding -= 1
                self._check_idle()
            return
        attempts = f"{job.attempt} attempt" + ("s" if job.attempt != 1 else "")
        self.finish(job, Verdict.ERROR.value, "", (), f"{reason} ({attempts})", now)

    def finish(self, job: Job, verdict: VerdictText, rcode: str, answer: tuple[str, ...], reason: str,
               now: float) -> None:
        check = job.spec.check
        self.results[job.idx] = CheckResult(
            check.name, job.lane.label, job.lane.transport, check.expected, verdict,
            check.order_ids, rcode, answer, round((now - job.first_sent) * 1000.0, 3), reason, check.kind,
        )
        self.done += 1
        self.outstanding -= 1
        if self.outstanding <= 0:
            self._check_idle()

    def _check_idle(self) -> None:
        if self.outstanding <= 0 and not self.idle.done():
            self.idle.set_result(None)

    # --- drop checks that only timed out
    async def settle_drops(self) -> None:
        """Decide drop checks left waiting for proof that their resolver was alive.

        Replies that came in later may already prove it; otherwise one heartbeat (a name this lane
        answered before) is asked now. A lane that never answered anything proves nothing.
        """
        waiting: list[LaneBase] = []
        now = self.loop.time()
        for lane in self.lanes:
            self._settle_lane(lane, now)
            if lane.deferred and lane.heartbeat is not None and not lane.dead:
                waiting.append(lane)
        if waiting:
            self.idle = self.loop.create_future()
            self.outstanding = len(waiting)
            for lane in waiting:
                assert lane.heartbeat is not None  # (the filter above)
                lane.queue.append(Job(-1, lane.heartbeat, lane, heartbeat=True))
            self.pump()
            await self.idle
        now = self.loop.time()
        for lane in self.lanes:
            self._settle_lane(lane, now)
            for job in lane.deferred:
                why = ("the resolver answered no other query after it"
                       if lane.replies else "the resolver answered no query at all in this pass")
                self.results[job.idx] = _drop_error(job, why, now)
                self.done += 1
            lane.deferred.clear()

    def _settle_lane(self, lane: LaneBase, now: float) -> None:
        still: list[Job] = []
        for job in lane.deferred:
            if lane.last_reply > job.first_sent:
                self.outstanding += 1      # finish() takes it back off
                self.finish(job, Verdict.BLOCKED.value, "", (), _drop_reason(job), now)
            else:
                still.append(job)
        lane.deferred = still

    def heartbeat_done(self, job: Job) -> None:
        self.outstanding -= 1
        self._check_idle()


def _drop_reason(job: Job) -> str:
    return f"no answer to {job.attempt} attempts while the resolver answered other queries (drop)"


def _drop_error(job: Job, why: str, now: float) -> CheckResult:
    check = job.spec.check
    return CheckResult(
        check.name, job.lane.label, job.lane.transport, check.expected, Verdict.ERROR.value, check.order_ids, "", (),
        round((now - job.first_sent) * 1000.0, 3),
        f"no answer to {job.attempt} attempts, and {why}: a drop cannot be told from an outage", check.kind,
    )


def _specs(checks: Sequence[Check]) -> list[QuerySpec]:
    """Validate the checks and build each one's query wire (shared by every lane)."""
    codes: dict[str, int] = {}
    wires = NameWires()
    out: list[QuerySpec] = []
    for check in checks:
        if check.expected not in EXPECTATIONS:
            raise ValueError(f"{check.name}: expected must be one of {EXPECTATIONS}, not {check.expected!r}")
        if check.expected == "blocked" and check.action not in ACTIONS:
            raise ValueError(f"{check.name}: action must be one of {ACTIONS}, not {check.action!r}")
        code = codes.get(check.qtype)
        if code is None:
            code = codes[check.qtype] = qtype_code(check.qtype)
        out.append(QuerySpec(check, code, wires(check.name)))
    return out



async def probe(checks: Sequence[Check], resolvers: Sequence[ResolverTarget], signature: Signature, *,
                timeout: float = 2.0, retries: int = 2, concurrency: int = 256,
                rate_per_resolver: float = 2000.0,
                progress: Callable[[int, int], None] | None = None) -> list[CheckResult]:
    """Ask every check of every resolver over each of its transports; one result per triple.

    Results come in check order, then resolver order, then transport order. timeout is per
    attempt; a failed attempt (timeout, SERVFAIL, REFUSED, FORMERR, ...) is retried `retries`
    times after an exponential backoff. concurrency bounds the queries in flight over all
    resolvers; rate_per_resolver bounds queries per second per resolver (0 or math.inf: none).
    progress(done, total) is called from the engine's timer (at most every few tens of ms) and
    once at the end, never once per check: a terminal bar needs no more.
    """
    for target in resolvers:
        bad = [t for t in target.transports if t not in TRANSPORTS]
        if bad:
            raise ValueError(f"{target.address}: unknown transport(s) {bad}; use {TRANSPORTS}")
    with no_cyclic_gc():  # see blocker.gcpause: a pass makes no cycles, only garbage to re-scan
        engine = Engine(checks, resolvers, signature, timeout, retries, concurrency, rate_per_resolver,
                         progress)
        if engine.total == 0:
            engine.report(force=True)
            return []
        return await engine.run()


def probe_sync(checks: Sequence[Check], resolvers: Sequence[ResolverTarget], signature: Signature, *,
               timeout: float = 2.0, retries: int = 2, concurrency: int = 256,
               rate_per_resolver: float = 2000.0,
               progress: Callable[[int, int], None] | None = None) -> list[CheckResult]:
    """probe() for callers without an event loop (the CLI, the scheduler's worker thread)."""
    return asyncio.run(probe(checks, resolvers, signature, timeout=timeout, retries=retries,
                             concurrency=concurrency, rate_per_resolver=rate_per_resolver,
                             progress=progress))



__all__ = ["probe", "probe_sync"]
