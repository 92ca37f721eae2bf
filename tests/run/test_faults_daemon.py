"""Faults of files and processes around a real daemon and real `apply` runs (issue 9, sections 2, 8, 10).

Odd files in the orders folder, edits that fool a stat, a missing orders folder, 1,100 idle
HTTP connections to a daemon limited to 1,024 descriptors, `kill -9` during a parallel parse and
during a publish, a reload hook that hangs with children, a corrupt state: each with real
processes, as tests/test_daemon.py runs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.support.audit import audit_records
from tests.support.cli import BLOCKER
from tests.support.daemon import Env, wait_until
from tests.support.orders import whole_second, write_order
from tests.support.zones import zone_owners

ZONE_TEMP = re.compile(r"\.orange\.rpz\.[0-9a-f]{16}\.tmp\Z")  # blocker.files.replace_file's temp names


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that a container may not have is not running)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _session(sid: int) -> list[int]:
    """Live processes of session `sid` (a child started with start_new_session=True leads one)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            out.append(int(entry.name))
    return out


# ------------------------------------------------------------------------------------------
# section 2: one odd file stops nothing


def test_odd_files_are_listed_invalid_and_every_other_order_goes_on(env: Env) -> None:
    config = env.config(reconcile=1)
    write_order(env.orders, "kept", whole_second(-3600), whole_second(3600), ["kept.example.gg"])
    lift = whole_second(4)
    write_order(env.orders, "lifts", whole_second(-3600), lift, ["lifts.example.gg"])
    os.mkfifo(env.orders / "fifo.yaml")
    (env.orders / "folder.yaml").mkdir()
    (env.orders / "dangling.yaml").symlink_to(env.orders / "nowhere")
    (env.orders / "loop.yaml").symlink_to("loop.yaml")
    with open(os.fsencode(env.orders) + b"/d\xe9cision.yaml", "wb") as fh:
        write_order(env.root, "latin1", whole_second(-3600), whole_second(3600), ["latin1.example.gg"])
        fh.write((env.root / "latin1.yaml").read_bytes())
    daemon = env.start(config)
    assert {"kept.example.gg", "lifts.example.gg"} <= zone_owners(env.zone())
    escaped = f"{env.orders}/d\\xe9cision.yaml"
    odd = sorted([str(env.orders / n) for n in ("fifo.yaml", "folder.yaml", "dangling.yaml", "loop.yaml")]
                 + [escaped])
    status, health = daemon.health()
    assert status == 200 and health["orders_invalid"] == odd, health
    assert daemon.metric("blocker_orders_invalid") == len(odd)
    # An unrelated order still lifts on time.
    wait_until(lambda: "lifts.example.gg" not in zone_owners(env.zone()), lift.timestamp() + 2, "lifted on time")
    assert "kept.example.gg" in zone_owners(env.zone()) and "latin1.example.gg" not in zone_owners(env.zone())
    log = daemon.log()
    assert "Traceback" not in log and "reconcile failed" not in log and "d\\\\xe9cision.yaml" in log
    assert daemon.stop() == 0
    raw = (env.state / "audit.jsonl").read_bytes()
    raw.decode("utf-8")  # every record is UTF-8: no lone surrogate reached the trail
    invalid = sorted(e["data"]["file"] for e in audit_records(env.state) if e["event"] == "order-invalid")
    assert invalid == odd
    with sqlite3.connect(env.state / "state.sqlite3") as db:
        assert sorted(r[0] for r in db.execute("SELECT order_id FROM orders")) == ["kept", "lifts"]


def test_an_in_place_edit_keeping_size_and_mtime_is_published_by_the_periodic_reconcile(env: Env) -> None:
    interval = 2
    config = env.config(reconcile=interval, watch=0.2)
    path = write_order(env.orders, "same", whole_second(-3600), whole_second(3600), ["aaaa.example.gg"])
    daemon = env.start(config)
    assert "aaaa.example.gg" in zone_owners(env.zone())
    before = path.stat()
    text = path.read_text().replace("aaaa.example.gg", "bbbb.example.gg")
    with path.open("r+") as fh:  # same inode, same size
        fh.write(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # touch -r
    edited = time.time()
    assert (path.stat().st_size, path.stat().st_mtime_ns, path.stat().st_ino) == (
        before.st_size, before.st_mtime_ns, before.st_ino)
    seen = wait_until(lambda: "bbbb.example.gg" in zone_owners(env.zone()), edited + interval + 2,
                      "the edit published within the periodic interval")
    print(f"\n[latency] in-place edit (size and mtime kept) published after {seen - edited:.2f} s")
    # (aaaa's removal is no end of the order: the removal guard holds it for review, as for any edit.)
    assert daemon.stop() == 0
    changed = [e for e in audit_records(env.state) if e["event"] == "order-changed"]
    assert [e["data"]["order"] for e in changed] == ["same"]


def test_healthz_is_503_while_the_orders_folder_is_missing(env: Env) -> None:
    config = env.config(reconcile=1)
    write_order(env.orders, "kept", whole_second(-3600), whole_second(3600), ["kept.example.gg"])
    daemon = env.start(config)
    assert daemon.health()[0] == 200
    gone = env.root / "orders.unmounted"
    env.orders.rename(gone)

    def missing() -> bool:
        status, health = daemon.health()
        return status == 503 and any("orders folder" in r and "does not exist" in r for r in health["reasons"])

    wait_until(missing, time.time() + 4, "503 naming the missing orders folder")
    assert "kept.example.gg" in zone_owners(env.zone())  # fail closed: nothing lifted
    gone.rename(env.orders)
    wait_until(lambda: daemon.health()[0] == 200, time.time() + 4, "200 once the folder is back")
    assert daemon.stop() == 0


# ------------------------------------------------------------------------------------------
# section 8: exhaustion and leftovers


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_1100_idle_connections_neither_stop_metrics_nor_publishing(env: Env) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    config = env.config(reconcile=1)
    write_order(env.orders, "first", whole_second(-3600), whole_second(3600), ["first.example.gg"])
    daemon = env.start(config)
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (1024, 1024))  # the systemd default
    idle: list[socket.socket] = []
    try:
        for _ in range(1100):
            sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
            idle.append(sock)  # connected, and never a byte sent
        held = _fds(daemon.pid)
        print(f"\n[fds] daemon descriptors with 1,100 idle connections open: {held}")
        assert held < 200
        started = time.time()
        wait_until(lambda: _metrics_answer(daemon.port), started + 10, "/metrics answers")
        print(f"[latency] /metrics answered {time.time() - started:.2f} s after 1,100 idle connections")
        write_order(env.orders, "second", whole_second(-3600), whole_second(3600), ["second.example.gg"])
        wait_until(lambda: "second.example.gg" in zone_owners(env.zone()), time.time() + 5, "new order published")
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert "Too many open files" not in daemon.log() and "Traceback" not in daemon.log()
    assert daemon.stop() == 0


def _metrics_answer(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.startswith(b"HTTP/1.0 200") and b"blocker_reconciles_total" in data
    except OSError:
        return False


def test_publish_lock_needs_no_new_descriptor_per_attempt(tmp_path: Path) -> None:
    from blocker.publish.reconcile import publish_lock
    from blocker.publish.writer import PublishError

    with publish_lock(tmp_path / "a"):
        pass
    before = _fds(os.getpid())
    for _ in range(200):
        with publish_lock(tmp_path / "a"):
            pass
    assert _fds(os.getpid()) == before
    # Out of descriptors on a first use: a clean PublishError (the daemon retries), no OSError.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    (tmp_path / "b").mkdir()
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # the next open fails: EMFILE
    try:
        try:
            with publish_lock(tmp_path / "b"):
                raise AssertionError("locked without a descriptor")
        except PublishError as exc:
            assert "Too many open files" in str(exc)
        with publish_lock(tmp_path / "a"):  # the one already open still works
            pass
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _big_folder(folder: Path, files: int, targets: int) -> None:
    start, end = whole_second(-3600), whole_second(3600)
    for i in range(files):
        write_order(folder, f"o{i:04d}", start, end, [f"n{j}.o{i}.example.gg" for j in range(targets)])


def test_kill_9_of_apply_during_a_parallel_parse_leaves_no_worker(env: Env) -> None:
    env.config()
    _big_folder(env.orders, 160, 2500)
    proc = subprocess.Popen([BLOCKER, "apply", "--config", str(env.root / "blocker.yaml"), "--orders",
                             str(env.orders), "--state-dir", str(env.state), "--out", str(env.zones)],
                            cwd=env.root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: len(_session(proc.pid)) >= 4 or proc.poll() is not None, time.time() + 20,
                   "parse workers started")
        assert proc.poll() is None, "apply finished before its workers could be seen: make the folder bigger"
        workers = [p for p in _session(proc.pid) if p != proc.pid]
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        wait_until(lambda: not any(_alive(p) for p in workers), time.time() + 5,
                   f"no worker left after kill -9 (left: {[p for p in workers if _alive(p)]})")
        assert not _session(proc.pid)
    finally:
        with_left = _session(proc.pid)
        for pid in with_left:
            os.kill(pid, signal.SIGKILL)


def _slow_checker(root: Path) -> dict[str, str]:
    """A `named-checkzone` that takes its time: a publish is then killed while its temp file exists."""
    bin_dir = root / "slow-bin"
    bin_dir.mkdir(exist_ok=True)
    checker = bin_dir / "named-checkzone"
    checker.write_text("#!/bin/sh\nsleep 30\n")
    checker.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _kill_mid_publish(work: Env, config: Path) -> Path:
    proc = subprocess.Popen([BLOCKER, "apply", "--config", str(config), "--orders", str(work.orders),
                             "--state-dir", str(work.state), "--out", str(work.zones)],
                            cwd=work.root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=_slow_checker(work.root))

    before = set(work.zones.iterdir()) if work.zones.is_dir() else set()

    def temps() -> list[Path]:
        found = work.zones.iterdir() if work.zones.is_dir() else ()
        return [p for p in found if ZONE_TEMP.match(p.name) and p not in before]

    try:
        wait_until(lambda: temps(), time.time() + 20, "zone temp file written")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    left = temps()
    assert len(left) == 1
    return left[0]


def test_stale_zone_temp_files_are_removed_at_the_next_start(env: Env) -> None:
    slow = write_config_check(env, "named-checkzone")
    write_order(env.orders, "any", whole_second(-3600), whole_second(3600), ["any.example.gg"])
    stale = _kill_mid_publish(env, slow)
    # Not ours, or held by a live writer: kept.
    foreign = [env.zones / ".orange.rpz.tmp", env.zones / "orange.rpz.abcdefgh.tmp", env.zones / "notes.tmp"]
    for path in foreign:
        path.write_text("not ours\n")
    older = env.zones / ".orange.rpz.k1ll3d_x.tmp"  # the name an older version's killed publish left
    older.write_text("half a zone\n")
    live = env.zones / ".orange.rpz.live0001.tmp"
    live.write_text("being written\n")
    holder = subprocess.Popen(["python3", "-c", "import fcntl,sys,time; f=open(sys.argv[1]); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
                               str(live)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        fast = write_config_check(env, "structural")
        done = env.run_cli("apply", config=fast)
        assert done.returncode == 0, done.stdout + done.stderr
        assert not stale.exists() and f"removed {stale}" in done.stderr
        assert not older.exists() and f"removed {older}" in done.stderr
        assert live.exists() and all(p.exists() for p in foreign)
        # The daemon's start cleans up too.
        write_order(env.orders, "more", whole_second(-3600), whole_second(3600), ["more.example.gg"])
        stale = _kill_mid_publish(env, slow)
        daemon = env.start(fast)
        assert not stale.exists() and live.exists()
        assert "removed a temp file left by a killed publisher" in daemon.log()
        assert daemon.stop() == 0
    finally:
        holder.kill()
        holder.wait()


def write_config_check(work: Env, check: str) -> Path:
    path = work.config(publish={"check": check}, reconcile=1)
    target = work.root / f"blocker-{check}.yaml"
    path.rename(target)
    return target


def test_a_timed_out_reload_hook_is_killed_with_its_children(env: Env) -> None:
    hook = env.root / "hook.sh"
    hook.write_text("#!/bin/sh\nsleep 1000 &\necho $! > \"$1/child.pid\"\necho $$ > \"$1/hook.pid\"\nsleep 1000\n")
    hook.chmod(0o755)
    config = env.config({"orange": {"reload": {"kind": "command", "command": [str(hook), str(env.root)]}}},
                        publish={"check": "structural", "reload_timeout": 1})
    write_order(env.orders, "any", whole_second(-3600), whole_second(3600), ["any.example.gg"])
    started = time.time()
    done = env.run_cli("apply", config=config)
    assert done.returncode == 5 and "no answer within 1 s" in done.stderr, done.stdout + done.stderr
    assert time.time() - started < 15
    pids = [int((env.root / name).read_text()) for name in ("hook.pid", "child.pid")]
    wait_until(lambda: not any(_alive(p) for p in pids), time.time() + 3, f"hook and child gone: {pids}")


# ------------------------------------------------------------------------------------------
# section 10: the daemon's internal errors name a file with the whole traceback


def test_a_daemon_internal_error_logs_one_line_naming_its_traceback_file(env: Env) -> None:
    config = env.config(reconcile=1)
    write_order(env.orders, "any", whole_second(-3600), whole_second(3600), ["any.example.gg"])
    daemon = env.start(config)
    with sqlite3.connect(env.state / "state.sqlite3", timeout=10) as db:  # a corrupt state row
        db.execute("UPDATE zones SET published_at='not an instant'")
    wait_until(lambda: "reconcile failed" in daemon.log(), time.time() + 4, "reconcile failed logged")
    line = next(ln for ln in daemon.log().splitlines() if "reconcile failed" in ln)
    assert "Traceback" not in daemon.log()
    found = re.search(r"traceback=(\S+)", line)
    assert found, line
    crash = Path(found.group(1))
    assert crash.parent == env.state / "log"
    text = crash.read_text()
    assert "Traceback (most recent call last)" in text and "not an instant" in text and "fromisoformat" in text
    status, health = daemon.health()
    assert status == 503 and any("reconcile failed" in r for r in health["reasons"])
    assert daemon.stop() == 0
    assert json.loads(json.dumps(health))


def test_clients_trickling_bytes_cannot_hold_the_endpoint(env: Env) -> None:
    """Slowloris: 40 clients sending one byte a second (each wait under the socket timeout)."""
    from blocker.run.http import HTTP_DEADLINE

    config = env.config(reconcile=1)
    daemon = env.start(config)
    slow = [socket.create_connection(("127.0.0.1", daemon.port), timeout=5) for _ in range(40)]
    try:
        started = time.time()
        answered = None
        while time.time() < started + HTTP_DEADLINE + 6:
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.send(b"G")
            if answered is None and _metrics_answer(daemon.port):
                answered = time.time() - started
                break
            time.sleep(1)
        assert answered is not None, "/metrics never answered while 40 clients trickled bytes"
        print(f"\n[latency] /metrics answered {answered:.2f} s into a 40-client slowloris")
    finally:
        for sock in slow:
            sock.close()
    assert daemon.stop() == 0
