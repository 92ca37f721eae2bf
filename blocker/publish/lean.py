"""A one-shot publisher's memory: drop what was parsed before the zone check runs beside it.

At 1M names, `blocker apply` held the parsed orders (1M targets), the entries, the plan's 1.5M
changes and two copies of the zone (its body, and the file's bytes) while named-checkzone, itself
~430 MB on that zone, loaded the file beside it: the process tree peaked at 1.16 GB (issue 11).
A process that exits after publishing needs none of that once the plan was shown and recorded:

- `shed` keeps of a plan only what publishing reads (counts, checksums, the audit groupings and
  the owners a PowerDNS reload flushes, made first), and the orders without their targets (the
  serial needs their instants only); then frees the rest and hands it back to the system.
- `precheck` runs named-checkzone on each distinct body once, written from the body itself (no
  second copy), before the publish loop builds any file's bytes; the loop then finds the body
  checked (`writer.mark_checked`, the rule operators sharing a body already used) and checks
  each file structurally. A body named-checkzone refuses is not marked: the publish checks it
  again and fails as before, with named-checkzone's own words.

The daemon keeps its plans (the next one patches them) and does not call these.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import gc
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from blocker import files
from blocker.config.model import Config
from blocker.publish.plan import Plan, change_owners
from blocker.publish.writer import _uses_checker, check_zone, mark_checked
from blocker.zone.render import canary, header
from blocker.zone.serial import next_serial


@dataclasses.dataclass(frozen=True)
class Shed:
    """What `publish_plan` needs of an operator's dropped changes."""

    groups: list[tuple[str, str, int, list[str], list[str]]]  # reconcile._change_groups
    counts: dict[str, int]
    flush: list[str]  # owners a PowerDNS reload flushes (empty for the other kinds)


def shed(plan: Plan, config: Config, change_groups: Callable[[Sequence[Any]], tuple[Any, Any]]) -> None:
    """Drop, in place, what `plan` holds that publishing does not read (see the module's doc).

    The plan's changes, entries and contents are gone afterwards: show it (`to_json`) before.
    `change_groups` is `reconcile._change_groups` (passed in: reconcile imports this module).
    """
    made: dict[int, tuple[Sequence[Any], Shed]] = {}  # operators sharing one list of changes share one grouping
    for p in plan.operators:
        if p.writes:
            p.order_ids  # noqa: B018 - computed while the entries are here, kept in known_order_ids
            kind = config.operators[p.operator].reload.kind
            hit = made.get(id(p.changes))
            if hit is None or hit[0] is not p.changes:
                groups, counts = change_groups(p.changes)
                hit = made[id(p.changes)] = (p.changes, Shed(groups, counts, []))
            flush = list(change_owners(p.changes)) if kind == "powerdns-recursor" else []
            p.shed = dataclasses.replace(hit[1], flush=flush)
        # A hidden primary takes the difference from the changes (blocker.publish.primary): kept
        # whenever it may use them (not on a first publish, which reloads the file).
        if config.distribution is None or p.previous is None:
            p.changes = []
        p.entries = {}
        p.zone = dataclasses.replace(p.zone, content=None)
    made.clear()
    plan.orders = {order_id: dataclasses.replace(order, targets=()) for order_id, order in plan.orders.items()}
    release_memory()


def release_memory() -> None:
    """Collect, then hand freed heap back to the system (glibc's malloc_trim): a freed object's
    memory otherwise stays counted in the process's RSS."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)


def precheck(plan: Plan, config: Config, zones_dir: Path) -> None:
    """named-checkzone once per distinct body about to be published, under the longest origin
    that publishes it (what `write_zone` would check), from a temporary file in `zones_dir`
    written from the body as it is (header, body, canary: no joined copy)."""
    if not _uses_checker(config.zone_check):
        return
    longest: dict[str, Any] = {}
    for p in plan.operators:
        if p.writes:
            best = longest.get(p.zone.checksum)
            if best is None or len(p.zone.origin) > len(best.zone.origin):
                longest[p.zone.checksum] = p
    for checksum, p in longest.items():
        # The serial written does not change what named-checkzone says of the body; the
        # publish writes its own header and canary and checks those structurally.
        serial = next_serial(p.previous.serial if p.previous is not None else None, 1)
        tmp: Path | None = None
        try:
            zones_dir.mkdir(parents=True, exist_ok=True)
            # The one writer's temp names (blocker.files): one a killed apply leaves is removed by
            # the next (`remove_stale_temps`), and never a planted link followed.
            dir_fd = files.open_dir(zones_dir)
            try:
                fd, name = files.create_temp(f"{p.operator}.rpz", dir_fd, 0o600)
            finally:
                os.close(dir_fd)
            tmp = zones_dir / name
            with os.fdopen(fd, "wb") as fh:
                fh.writelines((header(p.zone, serial, config), p.zone.body, canary(p.operator, serial)))
            if not check_zone(tmp, b"", p.zone.origin, config.zone_check):
                mark_checked(checksum, p.zone.origin)
        except OSError:
            pass  # the publish writes and checks it itself, and says what failed
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
