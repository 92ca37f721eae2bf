"""Putting a published zone into the hidden primary: the difference in one Knot control
transaction when it is known exactly, else a reload of the file (`knotc zone-reload`, `rndc
reload`). Either way the primary then NOTIFYs its secondaries, which transfer the IXFR.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from blocker.config.distribution import FLEET_DIR
from blocker.config.distribution import absolute as _abs
from blocker.config.distribution import distribution_of as _dist
from blocker.config.model import Config, OperatorConfig
from blocker.publish.hooks import ReloadResult
from blocker.publish.knotctl import KnotCtl, KnotCtlError
from blocker.zone.render import _templates, canary_owner

if TYPE_CHECKING:
    from blocker.publish.plan import OperatorPlan


def reload_wait(config: Config, records: int) -> float:
    """How long a blocking reload of a zone of `records` records may take: `publish.reload_timeout`,
    or a bound on Knot's load of them when longer (measured ~12 us a record here: five times
    that, plus 10 s), so a big zone is not called failed while it loads."""
    return max(config.reload_timeout, 10.0 + records * 60e-6)


def reload_argv(config: Config, op: OperatorConfig, records: int = 0) -> list[str]:
    """Knot: `-b`, so knotc answers when the load is done, `OK` only if the zone loaded (without
    it, knotc says `OK` when the event is queued, and a file Knot refuses looked published)."""
    dist = _dist(config)
    if dist.primary.kind == "knot":
        return ["knotc", "-s", _abs(dist.primary.control), "-b", "-t", str(int(reload_wait(config, records)) + 1),
                "zone-reload", op.origin]
    host, _, port = dist.primary.control.rpartition(":")
    return ["rndc", "-s", host, "-p", port, "-k", _abs(dist.tsig_key), "reload", op.origin.rstrip(".")]


def reload_zone(config: Config, op: OperatorConfig, records: int = 0) -> tuple[bool, str, list[str]]:
    """Make the primary load the zone file just replaced; it then NOTIFYs the secondaries.
    `knotc -b` exits 0 with `OK` only when the zone was loaded (a file it refuses, an unknown
    zone: exit 1, and Knot keeps serving the zone it had)."""
    argv = reload_argv(config, op, records)
    wait = reload_wait(config, records)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=wait + 5,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return False, f"{argv[0]}: command not found", argv
    except subprocess.TimeoutExpired:
        return False, f"{argv[0]}: no answer within {wait:g} s", argv
    output = " ".join((proc.stdout + " " + proc.stderr).split())[:500]
    if proc.returncode != 0:
        return False, f"primary reload: {argv[0]} exited {proc.returncode}: {output}", argv
    return True, f"primary reloaded ({output or 'ok'})", argv


# Past this many record commands, Knot re-reading the file is about as fast as the transaction
# (measured: ~0.1 ms per command over the control connection; zone-reload ~12 us per record).
MIN_TRANSACTION_LIMIT = 1000


@dataclass(frozen=True)
class Delta:
    """The exact difference between the zone Knot serves (serial `base`) and the file just
    written (serial `serial`), as control commands: (owner, ttl, type, rdata) to remove and add."""

    base: int
    serial: int
    soa: str
    ttl: int
    removes: tuple[tuple[str, str, str], ...]
    adds: tuple[tuple[str, str, str], ...]


def _shape(config: Config, op: OperatorConfig) -> str:
    """What, besides the entries and the serial, decides the records of a zone: TTL, SOA fields,
    NS, the records of each action. Equal shapes and equal entries: equal records."""
    soa = config.soa
    parts = [op.origin, str(config.rpz_ttl), config.ns, soa.mname, soa.rname,
             *map(str, (soa.refresh, soa.retry, soa.expire, soa.minimum)),
             *(f"{a}={'|'.join(r)}" for a, r in sorted(_templates(op).items()))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _shape_file(config: Config, op: OperatorConfig) -> Path:
    return config.state_dir.absolute() / FLEET_DIR / "knot" / f"{op.id}.served"


def _read_served(config: Config, op: OperatorConfig) -> tuple[int, str] | None:
    """The serial and shape of the zone blocker last put into the primary (None: unknown)."""
    try:
        serial, shape = _shape_file(config, op).read_text().split()
        return int(serial), shape
    except (OSError, ValueError):
        return None


def _write_served(config: Config, op: OperatorConfig, serial: int) -> None:
    path = _shape_file(config, op)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(f"{serial} {_shape(config, op)}\n")
        os.replace(tmp, path)
    except OSError:  # unknown next time: the next publish reloads the file, always correct
        _forget_served(config, op)


def _forget_served(config: Config, op: OperatorConfig) -> None:
    with contextlib.suppress(OSError):
        _shape_file(config, op).unlink()


def _split(record: str) -> tuple[str, str]:
    rtype, _, rdata = record.partition(" ")
    return rtype, rdata


def plan_delta(config: Config, op: OperatorConfig, plan: OperatorPlan, serial: int) -> tuple[Delta | None, str]:
    """The records that change, from the plan's changes per owner, or None (and why) when only
    re-reading the file is sure to be right: a first publish, a damaged file rewritten, the
    zone's shape (TTL, SOA, NS, redirect records) changed since the zone Knot has, or a change
    too large for a transaction to beat the reload."""
    previous = plan.previous
    if previous is None:
        return None, "first publish"
    if plan.restore:
        return None, "zone file was rewritten"
    if plan.shed is not None and not plan.changes:  # dropped by a lean apply: no change is not "none"
        return None, "the plan's changes were not kept"
    served = _read_served(config, op)
    if served is None or served != (previous.serial, _shape(config, op)):
        return None, "the zone the primary has is not known to be the last published one"
    templates = _templates(op)
    origin = op.origin
    removes: list[tuple[str, str, str]] = []
    adds: list[tuple[str, str, str]] = []
    limit = max(MIN_TRANSACTION_LIMIT, plan.zone.entries // 20)
    for change in plan.changes:
        old = templates[change.old_action] if change.old_action else ()
        new = templates[change.action] if change.action else ()
        owner = f"{change.owner}.{origin}"
        removes += [(owner, *_split(r)) for r in old if r not in new]
        adds += [(owner, *_split(r)) for r in new if r not in old]
        if len(removes) + len(adds) > limit:
            return None, f"more than {limit} records change"
    canary = f"{canary_owner(op.id)}.{origin}"
    removes.append((canary, "TXT", f'"{previous.serial}"'))
    adds.append((canary, "TXT", f'"{serial}"'))
    soa = config.soa
    return Delta(previous.serial, serial, f"{soa.mname} {soa.rname} {serial} {soa.refresh} {soa.retry} "
                 f"{soa.expire} {soa.minimum}", config.rpz_ttl, tuple(removes), tuple(adds)), ""


def apply_delta(config: Config, op: OperatorConfig, delta: Delta) -> tuple[bool, str]:
    """Hand Knot the difference in one transaction: zone-begin, zone-unset/zone-set per record
    and the new SOA, zone-commit. Knot checks each command (a record to remove that it does not
    have is an error): on any error the transaction is aborted, and the caller reloads the file."""
    dist = _dist(config)
    zone = op.origin
    try:
        ctl = KnotCtl(_abs(dist.primary.control), config.reload_timeout)
    except KnotCtlError as exc:
        return False, str(exc)
    began = False
    t0 = time.monotonic()
    try:
        with ctl:
            ctl.call("zone-begin", zone=zone)
            began = True
            got = ctl.call("zone-get", zone=zone, owner="@", type="SOA")
            fields = got[0].get("data", "").split() if got else []
            if len(fields) < 3 or fields[2] != str(delta.base):
                raise KnotCtlError(f"the primary serves serial {fields[2] if len(fields) > 2 else '?'}, "
                                   f"not {delta.base}")
            for owner, rtype, rdata in delta.removes:
                ctl.call("zone-unset", zone=zone, owner=owner, type=rtype, data=rdata)
            ttl = str(delta.ttl)
            for owner, rtype, rdata in delta.adds:
                ctl.call("zone-set", zone=zone, owner=owner, ttl=ttl, type=rtype, data=rdata)
            ctl.call("zone-set", zone=zone, owner="@", ttl=ttl, type="SOA", data=delta.soa)
            ctl.call("zone-commit", zone=zone)
            began = False
    except KnotCtlError as exc:
        if began:
            try:
                with KnotCtl(_abs(dist.primary.control), config.reload_timeout) as again:
                    again.call("zone-abort", zone=zone)
            except KnotCtlError:
                pass  # no transaction left open (the connection's end aborted it, or it never began)
        return False, str(exc)
    return True, (f"primary updated in one transaction: serial {delta.base} -> {delta.serial}, "
                  f"{len(delta.removes)} record(s) removed, {len(delta.adds)} added, {time.monotonic() - t0:.3f} s")


def update_primary(config: Config, op: OperatorConfig, plan: OperatorPlan | None,
                   serial: int | None) -> tuple[bool, str, list[str]]:
    """Bring the primary to the zone file just written: Knot gets only the difference through
    its control socket when the plan says it exactly, else (BIND, an unknown base, a failed
    transaction) reloads the file, which is always right."""
    dist = _dist(config)
    why = ""
    if dist.primary.kind == "knot" and plan is not None and serial is not None:
        delta, why = plan_delta(config, op, plan, serial)
        if delta is not None:
            ok, message = apply_delta(config, op, delta)
            if ok:
                _write_served(config, op, serial)
                return True, message, ["knot-control", _abs(dist.primary.control), "zone-commit", op.origin]
            why = f"transaction failed ({message})"
    ok, message, argv = reload_zone(config, op, plan.zone.entries if plan is not None else 0)
    if ok and serial is not None:
        _write_served(config, op, serial)
    elif not ok:
        _forget_served(config, op)
    return ok, (f"{message}; zone-reload because {why}" if why and ok else message), argv


def reload_after_publish(config: Config, op: OperatorConfig, result: ReloadResult,
                         plan: OperatorPlan | None = None, serial: int | None = None) -> ReloadResult:
    """The publish step's hook: with `distribution` set, the primary takes the zone just
    written (and NOTIFYs the secondaries); a failed primary update is a failed publish (exit 5),
    like a failed resolver reload hook. Without `distribution`, `result` is returned as is."""
    if config.distribution is None:
        return result
    ok, message, argv = update_primary(config, op, plan, serial)
    if not ok:
        return ReloadResult(False, message if result.ok else f"{result.message}; {message}", tuple(argv))
    if result.argv:  # a resolver hook ran too: keep its argv, say both
        return ReloadResult(result.ok, f"{message}; {result.message}", result.argv)
    return ReloadResult(result.ok, message, tuple(argv))
