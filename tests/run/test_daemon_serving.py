"""The daemon asks the resolvers whether they serve a new serial OUTSIDE the publish lock (issue
10): while it waits for a resolver that never answers, another publisher (`blocker apply`) can
take the lock; the reload's record, written once the wait is over, says the serial was not served."""

from __future__ import annotations

import fcntl
import json
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.resolverlib import free_port
from tests.support.audit import events, verify_audit
from tests.support.daemon import Env, wait_until
from tests.support.orders import whole_second, write_order

pytestmark = pytest.mark.integration

VERIFY_TIMEOUT = 8.0  # how long the daemon waits for a resolver that never answers


def _events_so_far(state_dir: Path) -> list[str]:
    """The events of the whole lines written so far (the daemon may be mid-append)."""
    path = state_dir / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["event"] for line in path.read_bytes().splitlines(keepends=True) if line.endswith(b"\n")]


def _lock_is_free(state_dir: Path) -> bool:
    with (state_dir / "publish.lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


def test_the_publish_lock_is_free_while_the_daemon_waits_for_the_served_serial(env: Env) -> None:
    silent = f"127.0.0.1:{free_port()}"  # nobody answers there: the serial is never served
    config = env.config({"orange": {"reload": {"kind": "command", "command": ["true"]},
                                    "resolvers": [{"address": silent, "name": "r1"}]}},
                        reconcile=60, publish={"check": "structural", "verify_timeout": VERIFY_TIMEOUT})
    start = whole_second(-60)
    write_order(env.orders, "one", start, start + timedelta(days=30), ["one.example"])
    daemon = env.start(config, ready=False)
    wait_until(lambda: "zone-published" in _events_so_far(env.state), time.time() + 15,
               f"the zone published\n{daemon.log()}")
    published = time.time()
    # The daemon now waits up to VERIFY_TIMEOUT for r1; the lock must be free meanwhile.
    freed = wait_until(lambda: _lock_is_free(env.state) or "reload" in _events_so_far(env.state),
                       published + VERIFY_TIMEOUT + 15, "the lock free, or the reload recorded")
    assert "reload" not in _events_so_far(env.state), "the lock stayed held until the resolvers were asked"
    assert freed - published < VERIFY_TIMEOUT / 2
    # `blocker apply` takes the lock and finds nothing to do (when it ends the daemon may be done
    # waiting too: a CLI start takes seconds on a loaded machine; the lock above is the proof).
    before = time.time()
    done = env.run_cli("apply")
    assert done.returncode == 0 and "nothing to apply" in done.stdout, done.stdout + done.stderr
    print(f"\n[serving] lock free {freed - published:.3f} s after the publish; apply took {time.time() - before:.3f} s")
    wait_until(lambda: "reload" in _events_so_far(env.state), time.time() + VERIFY_TIMEOUT + 15,
               f"the reload recorded\n{daemon.log()}")
    daemon.wait_ready()
    records = verify_audit(env.state)
    [reload] = events(records, "reload")
    assert reload["ok"] is False and f"not served after {VERIFY_TIMEOUT:g} s" in reload["message"], reload
    status, health = daemon.health()
    assert status == 503 and any("reload failed" in r for r in health.get("reasons", [])), health
