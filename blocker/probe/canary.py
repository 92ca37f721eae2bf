"""Canary reads on the caller's side of a publish: which serial each resolver applies.

`wait_for_serial` is the step after a reload (see publish/reconcile.py): a reload command that
exits 0 proves nothing on BIND (deferred by min-update-interval) or PowerDNS (a bad file silently
drops the zone). It runs outside the publish lock, so a slow resolver holds back no other publisher.

NOTE (publish helper, issue 10): a placeholder with the agreed signature; the probe helper's
probe/canary.py, which moves the canary reads here too, replaces this file at the merge.
"""

from __future__ import annotations

import asyncio
import time

from blocker.config.model import Config
from blocker.probe.engine import read_canaries
from blocker.probe.expectations import targets_for
from blocker.zone.rpz import canary_owner, serial_gt


def wait_for_serial(config: Config, operator: str, serial: int, timeout: float) -> list[str]:
    """Ask each of the operator's resolvers for the zone's canary until all serve `serial` (or
    a later one) or `timeout` passes; what is still behind, one line per resolver (empty: all
    serve it)."""
    op = config.operators[operator]
    targets = targets_for(op)
    deadline = time.monotonic() + timeout
    while True:
        served = asyncio.run(read_canaries(targets, canary_owner(op.id), 1.0))
        behind = [f"{t.name or t.address} serves {s if s is not None else 'no canary'}"
                  for t, s in zip(targets, served, strict=True) if s is None or serial_gt(serial, s)]
        if not behind or time.monotonic() > deadline:
            return behind
        time.sleep(0.2)
