"""One reconcile: orders -> orders in force (fail closed) -> plan -> publish -> audit.

`blocker apply` and the daemon both run exactly these steps, each defined once here: under the
publish lock, the audit trail's torn end repaired and stale temps removed (`reconcile`; the
daemon at its start), the orders loaded and their new versions recorded write-ahead
(`record_orders`), the plan against what the state says was published (`plan_for`), the
changed zones published with their records written ahead of the rename and the plan recorded
as applied (`publish`). Then, outside the lock, the caller asks the resolvers whether they
serve the new serial (probe.canary.wait_for_serial: probing is above publishing) and records
the answer under the lock again (`record_served`). `reconcile()` is that sequence for one
process run (`apply`); the daemon runs the same steps, fanned out: one load, one plan per group
of operators with the same orders in force, one publisher per operator (blocker.run.publishing,
which hands a `PublishHold` from one to the next so the lock never lapses between them).

The state directory remembers the last good version of every order, so a file that breaks or
disappears never lifts a block: the last good version stays in force (flagged), until the
order is lifted in a file or a human runs `apply --force`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import heapq
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any

from blocker.config.model import Config, OperatorConfig
from blocker.gcpause import no_cyclic_gc
from blocker.orders.legaltime import fmt_instant
from blocker.orders.load import read_order_file
from blocker.orders.model import LoadResult, Order
from blocker.orders.parse import parse_stored
from blocker.orders.yamlio import YamlError
from blocker.policy import ZoneEntries
from blocker.publish import lean as lean_publish
from blocker.publish.hooks import ReloadResult, run_reload
from blocker.publish.plan import Caches, Plan, change_owners, change_tails, compute_plan, file_digest, owners_at
from blocker.publish.primary import reload_after_publish
from blocker.publish.writer import PublishError, remove_stale_temps, write_zone
from blocker.record.audit import AuditLog
from blocker.record.state import OrderVersion, State, ZoneRecord
from blocker.zone.read import read_meta, read_regular
from blocker.zone.serial import next_serial, serial_gt

FLAG_INVALID = "invalid-file"  # file is broken now: its last good version stays in force
FLAG_ORPHANED = "orphaned"  # file is gone while the order is still in force


@dataclass
class Effective:
    """The orders to plan with, and why some of them come from the state, not from a file."""

    orders: dict[str, Order]
    flags: dict[str, str] = field(default_factory=dict)


def field_diff(old: Order, new: Order) -> dict[str, Any]:
    """What changed between two versions of an order, for the audit trail."""
    at = datetime.now(UTC)
    a, b = old.to_json(at), new.to_json(at)
    out: dict[str, Any] = {}
    for key in sorted(set(a) | set(b)):
        if key in ("status", "targets", "sha256", "file"):
            continue
        if a.get(key) != b.get(key):
            out[key] = {"from": a.get(key), "to": b.get(key)}
    old_t = {t["source"]: t for t in a["targets"]}
    new_t = {t["source"]: t for t in b["targets"]}
    if old_t != new_t:
        out["targets"] = {"added": sorted(set(new_t) - set(old_t)), "removed": sorted(set(old_t) - set(new_t))}
    return out


def effective_orders(result: LoadResult, config: Config, state: State | None, audit: AuditLog | None,
                     at: datetime, *, force: bool = False, actor: str | None = None,
                     record: bool = True, now: datetime | None = None) -> Effective:
    """Valid orders, plus the last good version of orders whose file broke or vanished.

    With `record` (apply, daemon) new versions are stored and audited; without it (plan) the
    state is only read. `at` decides what is in force; what is stored carries `now` (the
    wall clock, default `at`): an `apply --at` in another year must not back-date receipts.
    """
    seen_at = now or at
    if state is None:
        return Effective(dict(result.orders))
    eff = Effective(dict(result.orders))
    last = state.last_good()
    if not record:
        audit = None
    else:
        _record_versions(result, config, state, audit, last, seen_at, actor)
    for order_id, version in sorted(last.items()):
        if order_id not in result.orders:
            _keep_stored(eff, order_id, version, result, config, state, audit, at, seen_at,
                         force=force, record=record, actor=actor)
    return eff


def _record_versions(result: LoadResult, config: Config, state: State, audit: AuditLog | None,
                     last: Mapping[str, OrderVersion], seen_at: datetime, actor: str | None) -> None:
    """Store (and audit) the versions of valid orders the state does not hold yet.

    New versions are audited in one batch, then stored in one transaction (the same records in
    the same order as one write per order, without two fsyncs per order: a first reconcile of
    1,000 files spent most of its time there)."""
    versions: list[tuple[str, str, str, bytes]] = []
    records: list[tuple[str, dict[str, Any]]] = []
    for order_id, order in sorted(result.orders.items()):
        prev = last.get(order_id)
        if prev is not None and prev.digest == order.digest:
            if not prev.present:
                state.set_present(order_id, True, seen_at)
            continue
        try:
            content = read_order_file(Path(order.path))  # never blocks: a FIFO swapped in is refused
        except (OSError, YamlError):
            continue
        if hashlib.sha256(content).hexdigest() != order.digest:
            continue  # the file changed again under us: the next reconcile takes it
        versions.append((order_id, order.digest, order.path, content))
        if audit is not None:
            records += _version_records(order_id, order, prev, state, config)
    # Write-ahead: the receipts are durable before the state knows the versions, so a failed
    # append (AuditWriteError) leaves them new and the next reconcile records them again.
    if audit is not None and records:
        audit.append_many(records, actor=actor)
    if versions:
        state.remember_orders(versions, seen_at)


def _version_records(order_id: str, order: Order, prev: OrderVersion | None, state: State,
                     config: Config) -> list[tuple[str, dict[str, Any]]]:
    """The audit records of a new version of `order` (`prev`: the version stored before it)."""
    records: list[tuple[str, dict[str, Any]]] = []
    if prev is None:
        records.append(("order-added", _order_summary(order)))
    else:
        old = _stored_order(state, prev, config)
        changes = field_diff(old, order) if old is not None else {}
        records.append(("order-changed", {**_order_summary(order), "changes": changes}))
    if order.lifted_early and order.lifted is not None:
        records.append(("order-lifted-early", {"order": order_id, "at": fmt_instant(order.lifted.at),
                                               "reason": order.lifted.reason}))
    return records


def _keep_stored(eff: Effective, order_id: str, version: OrderVersion, result: LoadResult, config: Config,
                 state: State, audit: AuditLog | None, at: datetime, seen_at: datetime, *, force: bool,
                 record: bool, actor: str | None) -> None:
    """Fail closed for an order with no valid file now: its last good version stays in force
    (flagged) unless it ended, or a human forces the orphan out."""
    old = _stored_order(state, version, config)
    if old is None:
        return  # no longer valid under this config: nothing safe to keep
    if old.end <= at:
        eff.orders[order_id] = old  # ended: contributes no entry, but explains its removal
    elif version.path in result.invalid_files:
        eff.orders[order_id], eff.flags[order_id] = old, FLAG_INVALID
    elif not force:
        eff.orders[order_id], eff.flags[order_id] = old, FLAG_ORPHANED
        if version.present and record:
            if audit is not None:
                audit.append("order-orphaned", {"order": order_id, "file": version.path,
                                                "note": "file removed while in force; entries kept"}, actor=actor)
            state.set_present(order_id, False, seen_at)
    elif record:  # forced: a human lifts the orphan
        if audit is not None:
            audit.append("order-forgotten", {"order": order_id, "file": version.path, "forced": True},
                         actor=actor)
        state.forget_order(order_id)


def _stored_order(state: State, version: OrderVersion, config: Config) -> Order | None:
    """A stored version re-parsed: it is what stays in force."""
    parsed = parse_stored(state.content_of(version.order_id, version.digest), version.path, config.order_rules)
    return parsed if isinstance(parsed, Order) else None


def _order_summary(order: Order) -> dict[str, Any]:
    return {
        "order": order.id, "file": order.path, "sha256": order.digest, "court": order.court,
        "case_number": order.case_number, "operators": list(order.operators),
        "start": fmt_instant(order.start, order.tz), "end": fmt_instant(order.end, order.tz), "rule": order.rule,
        "targets": len(order.targets),
    }


def scheme_serial(orders: Mapping[str, Order], operator: str, at: datetime) -> int:
    """The serial two replicas agree on: the Unix time of the last transition at or before `at`."""
    instants = [t for o in orders.values() if operator in o.operators for t in o.transitions() if t <= at]
    return int(max(instants).timestamp()) if instants else 1


def choose_serial(path: Path, recorded: int | None, orders: Mapping[str, Order], operator: str,
                  at: datetime) -> int:
    """The serial of a changed zone: after both the one recorded in the state and the one in the
    file on disk (whichever is later under RFC 1982), and at least the scheme value."""
    previous = recorded
    on_disk = read_meta(path)
    if on_disk is not None and (previous is None or serial_gt(on_disk.serial, previous)):
        previous = on_disk.serial
    return next_serial(previous, scheme_serial(orders, operator, at))


@dataclass(frozen=True)
class OperatorOutcome:
    operator: str
    published: bool
    serial: int | None
    reload: ReloadResult | None
    error: str = ""
    # The reload succeeded and the operator has resolvers: whether they serve `serial` is for
    # the caller to ask (probe.canary.wait_for_serial, outside the publish lock), and the
    # reload's record waits for the answer (`record_served`).
    awaiting_serial: bool = False
    retry: bool = False  # a reload asked again of a zone already published (`retry_reload`)


@no_cyclic_gc()
def publish_plan(plan: Plan, config: Config, zones_dir: Path, state: State | None, audit: AuditLog | None, *,
                 actor: str | None = None, now: datetime | None = None) -> list[OperatorOutcome]:
    """Write every changed zone, record it, reload; one operator's failure does not stop the others."""
    outcomes = []
    groups: dict[int, tuple[Any, ...]] = {}  # audit groupings, shared by operators with the same changes
    for op_plan in plan.operators:
        if not op_plan.writes:
            if state is not None and op_plan.previous is not None:
                _adopt(state, audit, op_plan, zones_dir, now or datetime.now(UTC), actor)
            continue
        operator, op = op_plan.operator, config.operators[op_plan.operator]
        path = zones_dir / f"{operator}.rpz"
        recorded = state.zone(operator) if state is not None else None
        serial = choose_serial(path, recorded.serial if recorded is not None else None, plan.orders, operator,
                               plan.at)
        published_at = now or datetime.now(UTC)
        order_ids = list(op_plan.order_ids)
        announced: list[bool] = []

        data = op_plan.zone.text(serial, config)
        digest = hashlib.sha256(data).hexdigest()

        def write_ahead(op_plan: Any = op_plan, serial: int = serial, order_ids: list[str] = order_ids,
                        announced: list[bool] = announced, digest: str = digest, path: Path = path) -> None:
            # Write-ahead: the records of the change are durable before the zone is renamed into
            # place; an AuditWriteError here leaves the previous zone serving, nothing published.
            if audit is None:
                return
            if op_plan.restore:
                audit.append("zone-restored", {
                    "operator": op_plan.operator, "file": str(path), "serial": serial, "reason": op_plan.restore,
                    "found_sha256": op_plan.file_sha256, "published_sha256": op_plan.published_sha256,
                    "new_sha256": digest, "content_changed": op_plan.changed,
                }, actor=actor)
            _audit_publish(audit, op_plan, serial, order_ids, actor, memo=groups)
            announced.append(True)

        try:
            write_zone(path, data, op.origin, config.zone_check, op_plan.zone.checksum,
                       before_replace=write_ahead)
        except PublishError as exc:
            if audit is not None:
                failed: dict[str, Any] = {"operator": operator, "error": str(exc)}
                if announced:  # the rename failed after the change was recorded: say it did not happen
                    failed.update(serial=serial, note="the records of this change were written; the zone "
                                  "was not put in place")
                audit.append("publish-failed", failed, actor=actor)
            outcomes.append(OperatorOutcome(operator, False, None, None, str(exc)))
            continue
        if state is not None:
            # The row now; the body after the reload hooks (`keep_body`, below): compressing a
            # 1M-name body took ~1 s that every secondary waited for behind the hidden primary. A
            # crash in between leaves the row without its body, which the plans and the daemon
            # already handle: they read the file, trusted only while its SHA-256 is the row's digest.
            state.record_publish(ZoneRecord(operator, serial, op_plan.zone.checksum, op_plan.zone.names,
                                            op_plan.zone.entries, published_at, False, "reload pending",
                                            digest), order_ids)
        # Only PowerDNS flushes changed names from its cache: no list of 1.5M owners for the others.
        changed = (list(change_owners(op_plan.changes)) if op_plan.shed is None else op_plan.shed.flush) \
            if op.reload.kind == "powerdns-recursor" else []
        result = run_reload(op, path, serial, config.reload_timeout, changed)
        result = reload_after_publish(config, op, result, op_plan, serial)  # blocker.fleet: the hidden primary
        if state is not None:
            # A full state disk now, after the zone was put in place and recorded: the body is a
            # copy (the row's digest vouches for the file, which plans then read); the next
            # publish or reconcile keeps it, and the next state write says what is wrong.
            with contextlib.suppress(sqlite3.OperationalError):
                state.keep_body(operator, serial, digest, op_plan.zone.body)
        if needs_serving_check(op, result):
            outcomes.append(OperatorOutcome(operator, True, serial, result, awaiting_serial=True))
            continue
        record_reload(state, audit, operator, serial, result, actor=actor)
        outcomes.append(OperatorOutcome(operator, True, serial, result, "" if result.ok else result.message))
    return outcomes


def needs_serving_check(op: OperatorConfig, reloaded: ReloadResult) -> bool:
    """Whether a reload must be confirmed by asking the resolvers which serial they serve."""
    return reloaded.ok and bool(op.resolvers) and op.reload.kind != "none"


def served_result(reloaded: ReloadResult, serial: int, timeout: float, resolvers: int,
                  behind: list[str]) -> ReloadResult:
    """The reload's result once the resolvers were asked (`behind`: those not serving `serial`)."""
    if not behind:
        return ReloadResult(True, f"{reloaded.message}; serial {serial} served by all {resolvers} resolver(s)",
                            reloaded.argv)
    return ReloadResult(False, f"reloaded, but serial {serial} not served after {timeout:g} s: "
                        + "; ".join(behind), reloaded.argv)


def record_reload(state: State | None, audit: AuditLog | None, operator: str, serial: int, result: ReloadResult,
                  *, actor: str | None = None, retry: bool = False) -> None:
    if state is not None:
        state.mark_in_effect(operator, result.ok, result.message)
    if audit is not None:
        data: dict[str, Any] = {"operator": operator, "serial": serial, "ok": result.ok,
                                "message": result.message, "argv": list(result.argv)}
        if retry:
            data["retry"] = True
        audit.append("reload", data, actor=actor)


def retry_reload(operator: str, config: Config, zones_dir: Path, state: State,
                 files: dict[Path, tuple[tuple[int, ...], str]] | None = None) -> OperatorOutcome | None:
    """Reload again a zone on disk whose reload failed (with nothing else changing, no publish
    would ever ask again); None when there is nothing to retry. What was published is the
    state's; the file is only checked to still be those bytes. Its record is the caller's:
    `record_served` once the resolvers were asked when it is `awaiting_serial`, else
    `record_reload(..., retry=True)`."""
    record = state.zone(operator)
    if record is None or record.in_effect:
        return None
    path = zones_dir / f"{operator}.rpz"
    if record.digest:
        if file_digest(path, files)[0] != record.digest:
            return None
    else:  # recorded before the state kept digests: the file's header is all there is
        meta = read_meta(path)
        if meta is None or (meta.serial, meta.checksum) != (record.serial, record.checksum):
            return None
    op = config.operators[operator]
    result = run_reload(op, path, record.serial, config.reload_timeout)
    return OperatorOutcome(operator, True, record.serial, result, "" if result.ok else result.message,
                           awaiting_serial=needs_serving_check(op, result), retry=True)


def record_served(outcome: OperatorOutcome, behind: list[str], config: Config, state: State | None,
                  audit: AuditLog | None, *, actor: str | None = None) -> OperatorOutcome:
    """Finish an outcome `awaiting_serial` with the answer of `wait_for_serial` (`behind`).

    Called under the publish lock again (the wait itself runs outside it): the state is marked
    only while it still holds this serial, so a publisher that put a newer zone in place in
    between keeps its own mark.
    """
    if not outcome.awaiting_serial or outcome.serial is None or outcome.reload is None:
        return outcome
    serial = outcome.serial
    result = served_result(outcome.reload, serial, config.publish_verify_timeout,
                           len(config.operators[outcome.operator].resolvers), behind)
    current = state.zone(outcome.operator) if state is not None else None
    record_reload(state if current is not None and current.serial == serial else None, audit, outcome.operator,
                  serial, result, actor=actor, retry=outcome.retry)
    return OperatorOutcome(outcome.operator, True, serial, result, "" if result.ok else result.message,
                           retry=outcome.retry)


def _audit_publish(audit: AuditLog, op_plan: Any, serial: int, order_ids: list[str], actor: str | None, *,
                   memo: dict[int, tuple[Any, ...]] | None = None) -> None:
    operator = op_plan.operator
    changes = op_plan.changes
    hit = memo.get(id(changes)) if memo is not None else None
    if op_plan.shed is not None:  # the changes were dropped (blocker.publish.lean), their groupings kept
        groups, counts = op_plan.shed.groups, op_plan.shed.counts
    elif hit is not None and hit[0] is changes:  # operators with the same changes share one grouping
        groups, counts = hit[1], hit[2]
    else:
        groups, counts = _change_groups(changes)
        if memo is not None:
            memo[id(changes)] = (changes, groups, counts)
    items: list[tuple[str, dict[str, Any]]] = [
        (kind, {"operator": operator, "order": order_id, "serial": serial, "count": count, "names": names,
                "reasons": reasons})
        for kind, order_id, count, names, reasons in groups
    ]
    items.append(("zone-published", {
        "operator": operator, "serial": serial, "checksum": op_plan.zone.checksum, "names": op_plan.zone.names,
        "records": op_plan.zone.entries, "orders": order_ids,
        "added": counts["add"], "removed": counts["remove"], "changed": counts["change"],
        "held": len(op_plan.held),
    }))
    audit.append_many(items, actor=actor)


_GROUP_KEY = itemgetter(0, 2, 4, 5)  # of a change's tail: kind, order_ids, old_order_ids, reasons


def _change_groups(changes: Sequence[Any]) -> tuple[list[tuple[str, str, int, list[str], list[str]]], dict[str, int]]:
    """Per (entries-activated | entries-lifted, order): how many owners, the first 1,000 in plan
    order, and the union of their reasons; and the count of changes per kind.

    Linear in the changes: one pass sorts their positions by (kind, ids, reasons), which few
    distinct values take (one per order, or per set of orders naming one owner); each group then
    takes the positions of the values that name its order, merged back into plan order only as
    far as the 1,000 names a record carries.
    """
    by_key: dict[tuple[Any, ...], list[int]] = {}
    for position, key in enumerate(map(_GROUP_KEY, change_tails(changes))):
        found = by_key.get(key)
        if found is None:
            by_key[key] = [position]
        else:
            found.append(position)
    counts = {"add": 0, "remove": 0, "change": 0}
    parts: dict[tuple[str, str], tuple[list[list[int]], set[str]]] = {}
    for (kind, ids, old_ids, reasons), positions in by_key.items():
        counts[kind] += len(positions)
        if kind == "change":
            continue
        event, named = ("entries-activated", ids) if kind == "add" else ("entries-lifted", old_ids)
        for order_id in named:
            part = parts.get((event, order_id))
            if part is None:
                part = parts[(event, order_id)] = ([], set())
            part[0].append(positions)
            part[1].update(reasons)
    groups = []
    for (event, order_id), (lists, reasons) in sorted(parts.items()):
        first = lists[0][:1000] if len(lists) == 1 else list(islice(heapq.merge(*lists), 1000))
        groups.append((event, order_id, sum(map(len, lists)), owners_at(changes, first), sorted(reasons)))
    return groups, counts


_LOCK_FILES: dict[str, tuple[threading.Lock, Any]] = {}  # path -> (thread lock, the one open file)
_LOCK_FILES_GUARD = threading.Lock()


def _lock_file(path: Path) -> tuple[threading.Lock, Any]:
    """One open `publish.lock` per process and path, opened on first use: a publish must need no
    new descriptor per attempt (1,000 idle connections once took the last one). Reopened only
    when the file on disk is no longer the one held open (the state folder was replaced)."""
    key = str(path)
    with _LOCK_FILES_GUARD:
        held = _LOCK_FILES.get(key)
        if held is not None:
            try:
                same = os.path.samestat(os.fstat(held[1].fileno()), os.stat(path))
            except OSError:
                same = False
            if same:
                return held
            with held[0]:  # nobody holds the flock through the old file any more
                held[1].close()
        try:
            fh = path.open("a")
        except OSError as exc:
            raise PublishError(f"cannot open {path}: {exc.strerror or exc}; nothing published, "
                               "the next attempt retries") from None
        _LOCK_FILES[key] = held = (threading.Lock(), fh)
        return held


@contextmanager
def publish_lock(state_dir: Path, timeout: float = 120.0) -> Iterator[None]:
    """Serialises publishers (the daemon's reconciles, `blocker apply`) on one state directory:
    across processes by `flock`, across threads of this one by a lock around it (they share
    the one open file, and `flock` on one open file does not exclude its other users)."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PublishError(f"cannot create {state_dir}: {exc.strerror or exc}") from None
    path = state_dir / "publish.lock"
    deadline = time.monotonic() + timeout
    while True:
        thread_lock, fh = _lock_file(path)
        if not thread_lock.acquire(timeout=timeout):
            raise PublishError(f"another publisher holds {path}")
        if not fh.closed:
            break
        thread_lock.release()  # replaced while we waited: take the new one
    try:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PublishError(f"another publisher holds {path}") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        thread_lock.release()


class _SharedHold:
    """The one hold of `publish_lock` that the threads of this process publishing at once share."""

    def __init__(self) -> None:
        self.guard = threading.Lock()  # taken to enter the first and to leave the last
        self.count = 0
        self.held: Any = None  # the entered publish_lock context, while count > 0


_SHARED: dict[str, _SharedHold] = {}
_SHARED_GUARD = threading.Lock()


def _enter_shared(state_dir: Path, timeout: float) -> _SharedHold:
    with _SHARED_GUARD:
        hold = _SHARED.setdefault(str(state_dir), _SharedHold())
    with hold.guard:
        if hold.count == 0:
            held = publish_lock(state_dir, timeout)
            held.__enter__()  # raises PublishError: count stays 0
            hold.held = held
        hold.count += 1
    return hold


def _leave_shared(hold: _SharedHold) -> None:
    with hold.guard:
        hold.count -= 1
        if hold.count == 0:
            held, hold.held = hold.held, None
            held.__exit__(None, None, None)


@contextmanager
def shared_publish_lock(state_dir: Path, timeout: float = 120.0) -> Iterator[None]:
    """`publish_lock`, held once for all the threads of this process inside it (reference
    counted): another process (`blocker apply`) is excluded as by `publish_lock`, while the
    daemon's publishers of different operators do not exclude each other (they exclude each
    other per operator, and share the state and the audit trail, which lock themselves)."""
    hold = _enter_shared(state_dir, timeout)
    try:
        yield
    finally:
        _leave_shared(hold)


class PublishHold:
    """One share of `shared_publish_lock` that is handed on: taken by a thread for a publisher
    it starts (so the lock never lapses between the load and that publisher), left by the
    publisher when its locked part is done (before it waits for the resolvers). `release` is
    idempotent: a `finally` may call it again."""

    def __init__(self, state_dir: Path, timeout: float = 120.0) -> None:
        self.state_dir = state_dir
        self._hold: _SharedHold | None = _enter_shared(state_dir, timeout)

    def share(self) -> PublishHold:
        """Another share, for a publisher this holder starts (cheap: the lock is held)."""
        if self._hold is None:
            raise PublishError(f"the publish lock of {self.state_dir} was already left")
        return PublishHold(self.state_dir)

    @property
    def held(self) -> bool:
        return self._hold is not None

    def release(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            _leave_shared(hold)


def _adopt(state: State, audit: AuditLog | None, op_plan: Any, zones_dir: Path, at: datetime,
           actor: str | None) -> None:
    """A current zone the state does not hold (written before this state dir existed, or before
    the state kept zone bytes) is recorded as found, bytes and all, so reports and later plans
    know which serial carries what, and a later edit of the file is seen."""
    recorded = state.zone(op_plan.operator)
    assert op_plan.previous is not None
    if recorded is not None and recorded.checksum == op_plan.zone.checksum and recorded.digest \
            and state.has_body(recorded.checksum):
        return
    data = read_regular(zones_dir / f"{op_plan.operator}.rpz")
    if data is None or hashlib.sha256(data).hexdigest() != op_plan.file_sha256:
        return  # changed since the plan read it: the next plan looks again
    if recorded is not None and recorded.checksum == op_plan.zone.checksum:
        # Recorded before the state kept digests and bodies, or a publish killed before it kept
        # the body: the body is the file's (the plan checked it).
        state.keep_body(op_plan.operator, recorded.serial, op_plan.file_sha256, op_plan.zone.body)
        return
    order_ids = list(op_plan.order_ids)
    state.record_publish(ZoneRecord(op_plan.operator, op_plan.previous.serial, op_plan.zone.checksum,
                                    op_plan.zone.names, op_plan.zone.entries, at, True,
                                    "adopted: zone already current on disk", op_plan.file_sha256), order_ids,
                        op_plan.zone.body)
    if audit is not None:
        audit.append("zone-adopted", {"operator": op_plan.operator, "serial": op_plan.previous.serial,
                                      "checksum": op_plan.zone.checksum, "orders": order_ids}, actor=actor)



def plan_for(result: LoadResult, config: Config, state: State | None, zones_dir: Path, at: datetime, *,
             operators: Iterable[str] | None = None, force: bool = False, eff: Effective | None = None,
             caches: Caches | None = None,
             remembered: Mapping[str, tuple[str, ZoneEntries]] | None = None) -> tuple[Plan, Effective]:
    """The plan, read-only: the orders in force (nothing recorded) against what was published.

    The daemon passes what it keeps between plans: `eff` (the orders in force, recorded at its
    load), `caches`, and `remembered` (operator -> checksum and entries of the zone it last
    published or found current). Remembered entries hold only while the state says the zone
    published is the one they came from: another publisher (`blocker apply --force`) may have
    replaced it since.
    """
    if operators is not None:
        operators = list(operators)
    if eff is None:
        eff = effective_orders(result, config, state, None, at, force=force, record=False)
    zones = state.zones() if state is not None else {}
    previous = {op: entries for op, (checksum, entries) in (remembered or {}).items()
                if (operators is None or op in operators) and op in zones and zones[op].checksum == checksum}
    if caches is not None:
        # Plans of different operators may run at once, sharing the caches (each entry is checked
        # by identity before use; one dropped by another plan costs a recomputation), each with
        # its own memo of diffs (it lives for one plan).
        caches = dataclasses.replace(caches, diffs={})
    plan = compute_plan(eff.orders, at, config, zones_dir, operators=operators, force=force, caches=caches,
                        previous=previous or None, last_publish={op: z.published_at for op, z in zones.items()},
                        state=state)
    return plan, eff


def record_orders(result: LoadResult, config: Config, state: State, audit: AuditLog | None, at: datetime, *,
                  now: datetime, force: bool = False, actor: str | None = None) -> Effective:
    """Record the new order versions (audited, write-ahead) and, when forced, forget orphans:
    the orders in force at `at`, as `plan_for` computes them read-only."""
    return effective_orders(result, config, state, audit, at, force=force, record=True, actor=actor, now=now)


def publish(plan: Plan, config: Config, zones_dir: Path, state: State, audit: AuditLog, *, now: datetime,
            actor: str | None = None, before_publish: Callable[[Plan, AuditLog], None] | None = None,
            record_applied: bool = True) -> list[OperatorOutcome]:
    """The caller's record of the change (`before_publish`), then every changed zone written
    (its records write-ahead), recorded and reloaded; the plan's checksum recorded as applied
    when every zone was put in place (`record_applied`: `apply --checksum` asks for it; the
    daemon publishes one operator's part of a plan at a time, and does not)."""
    if before_publish is not None:
        before_publish(plan, audit)
    # Published now, whatever `at` says: records carry the wall-clock instant.
    outcomes = publish_plan(plan, config, zones_dir, state, audit, actor=actor, now=now)
    if record_applied and all(o.published for o in outcomes):
        state.record_applied(plan.checksum, plan.result, now)
    return outcomes


@dataclass
class Reconciled:
    """What one reconcile did. `outcomes` may hold some `awaiting_serial`: the caller asks the
    resolvers (probe.canary.wait_for_serial) outside the publish lock, then `record_served`."""

    plan: Plan
    eff: Effective
    state: State | None
    outcomes: list[OperatorOutcome] = field(default_factory=list)
    stopped: bool = False  # the review said there is nothing to do
    published: bool = False  # False: stopped, or nothing to write


def reconcile(load: Callable[[], LoadResult], config: Config, state_dir: Path, zones_dir: Path, at: datetime, *,
              now: datetime, operators: Iterable[str] | None = None, force: bool = False,
              actor: str | None = None, audit: AuditLog | None = None,
              review: Callable[[Plan, Effective, State | None], bool] | None = None,
              on_stale: Callable[[Path], None] | None = None,
              before_publish: Callable[[Plan, AuditLog], None] | None = None, lean: bool = False) -> Reconciled:
    """Orders -> orders in force (fail closed) -> plan -> review -> record -> publish, under the
    publish lock.

    `load` reads the orders under the lock (a loader that fails closed raises before anything is
    recorded). The plan is computed read-only first: `review` (the caller's guards: a reviewed checksum, held
    removals, orphans) sees it and raises to refuse, or returns False to stop with nothing done,
    not even the state's orders recorded. Then the new order versions are recorded (audited) and
    the changed zones published; `before_publish` writes the caller's own record of the change.
    With `lean` (a one-shot publisher: `blocker apply`), the orders and most of the plan are
    dropped before the zones are checked and written (blocker.publish.lean): the `Reconciled`
    then holds the plan's checksums and counts, not its changes, entries or orders.
    """
    audit = audit if audit is not None else AuditLog(state_dir)
    with publish_lock(state_dir):
        audit.repair()  # a torn end left by a crash or a full disk is moved aside before anything
        for stale in remove_stale_temps(zones_dir):
            if on_stale is not None:
                on_stale(stale)
        result = load()
        state = State.open_existing(state_dir)
        plan, eff = plan_for(result, config, state, zones_dir, at, operators=operators, force=force)
        done = Reconciled(plan, eff, state)
        if review is not None and not review(plan, eff, state):
            done.stopped = True
            return done
        if state is not None:
            state.close()
        # Now record: new order versions (audited), orphans forgotten when forced. The orders
        # in force are the ones just planned with (same files, same state, under the lock).
        done.state = state = State(state_dir)
        record_orders(result, config, state, audit, plan.at, now=now, force=force, actor=actor)
        if not plan.has_changes:
            # Nothing to write; a current zone the state does not hold (or holds without its
            # body: a publish killed before it kept it) is still recorded as found.
            for op_plan in plan.operators:
                if op_plan.previous is not None:
                    _adopt(state, audit, op_plan, zones_dir, now, actor)
            return done
        if lean:  # nothing parsed is needed beside named-checkzone's 430 MB at 1M names (issue 11)
            del result
            eff.orders.clear()
            lean_publish.shed(plan, config, _change_groups)
            lean_publish.precheck(plan, config, zones_dir)
        done.outcomes = publish(plan, config, zones_dir, state, audit, now=now, actor=actor,
                                before_publish=before_publish)
        done.published = True
    return done
