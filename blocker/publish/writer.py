"""Publishing a zone: never a partial or invalid file where a resolver can read it.

Write to a temporary file in the same folder, fsync, check, rename over the old zone, fsync
the folder, record the serial, then ask the resolver to reload. A failed reload leaves the
publish recorded as "not yet in effect".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from blocker.config.model import OperatorConfig
from blocker.record.audit import fsync_dir
from blocker.zone.read import structural_check
from blocker.zone.render import canary_owner


class PublishError(Exception):
    """A zone that could not be published; the old zone stays in place."""


def check_zone(path: Path, data: bytes, origin: str, mode: str) -> list[str]:
    """Problems found in a rendered zone: named-checkzone when asked or installed, else structural."""
    if mode == "none":
        return []
    checker = shutil.which("named-checkzone")
    if mode == "named-checkzone" and checker is None:
        return ["publish.check is named-checkzone but named-checkzone is not installed"]
    if mode in ("named-checkzone", "auto") and checker is not None:
        proc = subprocess.run([checker, "-k", "fail", "-n", "fail", origin, str(path)],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
            return lines[:5] or [f"named-checkzone exited {proc.returncode}"]
        return []
    return structural_check(data, origin)


def _uses_checker(mode: str) -> bool:
    return mode in ("named-checkzone", "auto") and shutil.which("named-checkzone") is not None


# Bodies named-checkzone accepted in this process, with the longest origin they were checked
# under: operators sharing one body then need only the structural check (their owners are
# the same relative names; only a longer origin could push a name past 255 octets).
_CHECKED: dict[str, int] = {}


def write_zone(path: Path, data: bytes, origin: str, check: str, body_checksum: str | None = None,
               before_replace: Callable[[], None] | None = None) -> None:
    """Atomically replace `path` with `data` after checking it; the old file stays on any failure.

    `before_replace` runs once the new zone passed its check, just before the rename: the audit
    records of the change are written there, so no zone is served whose change is not on record
    (an exception it raises leaves the old file in place and propagates)."""
    tmp: Path | None = None
    lock_fd = -1
    try:
        # Inside the try: an unwritable or missing folder is a publish error like any other.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(tmp_name)
        # Held until the file is renamed or removed: `remove_stale_temps` leaves a locked one alone.
        lock_fd = os.dup(fd)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        if body_checksum is not None and _CHECKED.get(body_checksum, -1) >= len(origin):
            problems = structural_check(data, origin)
        else:
            problems = check_zone(tmp, data, origin, check)
            # Remember only what named-checkzone itself accepted (not a structural pass).
            if not problems and body_checksum is not None and _uses_checker(check):
                if len(_CHECKED) > 64:
                    _CHECKED.clear()
                _CHECKED[body_checksum] = len(origin)
        if problems:
            raise PublishError(f"{path.name}: zone check failed: {'; '.join(problems)}")
        if path.is_dir() and not path.is_symlink():
            path.rmdir()  # an empty folder in its place (a non-empty one is refused: not ours to delete)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise PublishError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
        if lock_fd >= 0:
            os.close(lock_fd)


# `tempfile.mkstemp(prefix=".<zone file>.", suffix=".tmp")` of write_zone: nothing else matches.
_ZONE_TEMP = re.compile(r"\.[^/]+\.rpz\.[a-z0-9_]{8}\.tmp\Z")


def remove_stale_temps(zones_dir: Path) -> list[Path]:
    """Remove the temp files a killed `write_zone` left in `zones_dir` (run at daemon start and
    by `apply`, under the publish lock). Only our own pattern, only regular files, and only one
    no live writer holds locked (a writer keeps an flock on its temp file; a killed one's lock
    died with it). A file that cannot be checked is left alone."""
    removed: list[Path] = []
    try:
        names = os.listdir(zones_dir)
    except OSError:
        return removed
    for name in sorted(names):
        if not _ZONE_TEMP.match(name):
            continue
        path = zones_dir / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer holds it
            # Still the file we locked (not replaced since the open)? Then it is stale.
            if os.path.samestat(os.fstat(fd), os.lstat(path)):
                path.unlink()
                removed.append(path)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def reload_argv(op: OperatorConfig, zone_path: Path, serial: int) -> list[str] | None:
    """The command that makes this operator's resolver read the new zone (None: nothing to run).

    knot-resolver has no command-line tool that takes a piped command reliably: blocker talks
    to its control socket itself (see `kresd_control`), so it has no argv here.
    """
    hook = op.reload
    if hook.kind in ("none", "knot-resolver"):
        return None
    if hook.kind == "command":
        values = {"zone_file": str(zone_path), "origin": op.origin, "operator": op.id, "serial": str(serial)}
        return [part.format(**values) for part in hook.command]
    if hook.kind == "bind":
        argv = ["rndc"]
        if hook.server:
            host, _, port = hook.server.rpartition(":")
            argv += ["-s", host or hook.server, *(["-p", port] if host else [])]
        if hook.key_file:
            argv += ["-k", hook.key_file]
        return [*argv, *hook.command, "reload", op.origin]
    if hook.kind == "unbound":
        argv = ["unbound-control"]
        if hook.key_file:
            argv += ["-c", hook.key_file]
        if hook.server:
            argv += ["-s", hook.server.replace(":", "@")]
        return [*argv, *hook.command, "auth_zone_reload", op.origin]
    if hook.kind == "powerdns-recursor":
        return [*_rec_control(op), "reload-lua-config"]
    raise PublishError(f"unknown reload kind {hook.kind!r}")


def _rec_control(op: OperatorConfig) -> list[str]:
    argv = ["rec_control", "--timeout=60"]
    if op.reload.socket:
        argv.append(f"--socket-dir={op.reload.socket}")
    return [*argv, *op.reload.command]


def flush_argvs(op: OperatorConfig, changed: list[str], batch: int = 500) -> list[list[str]]:
    """PowerDNS Recursor 4.8 answers from its packet cache before RPZ: a name blocked after it
    was asked keeps its cached address, a lifted one its cached NXDOMAIN, until the TTL ends
    (PowerDNS issue #14854). `wipe-cache NAME$` drops the name and its subtree. The serial canary
    changes with every publish: without it, a probe asking it would see the old serial for its TTL."""
    if op.reload.kind != "powerdns-recursor":
        return []
    names = sorted({name.removeprefix("*.") for name in changed} | {canary_owner(op.id)})
    return [[*_rec_control(op), "wipe-cache", *(f"{n}.$" for n in names[i:i + batch])]
            for i in range(0, len(names), batch)]


def kresd_control(socket_path: str, command: str, expect: str, timeout: float) -> tuple[bool, str]:
    """Send one Lua expression to every kresd instance's control socket (a folder of sockets, or
    one socket), and check each answer contains `expect`."""
    target = Path(socket_path)
    paths = sorted(target.iterdir()) if target.is_dir() else [target]
    if not paths:
        return False, f"no kresd control socket in {socket_path}"
    answers = []
    ok = True
    for path in paths:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(timeout)
                sock.connect(str(path))
                sock.sendall(command.encode() + b"\n")
                sock.shutdown(socket.SHUT_WR)
                out = b"".join(iter(lambda s=sock: s.recv(65536), b"")).decode(errors="replace")
        except OSError as exc:
            return False, f"{path}: {exc.strerror or exc}"
        answers.append(f"{path.name}: {' '.join(out.replace('>', ' ').split())}")
        ok = ok and expect in out
    return ok, "; ".join(answers)


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    message: str
    argv: tuple[str, ...] = ()


def _run(argv: list[str], timeout: float) -> ReloadResult:
    """Run one hook in a process group of its own: on timeout the whole group is killed, so a
    hook's children (a shell's `sleep`, a stuck `rndc`) do not outlive it."""
    try:
        popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    except FileNotFoundError:
        return ReloadResult(False, f"{argv[0]}: command not found", tuple(argv))
    try:
        stdout, stderr = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(popen)
        return ReloadResult(False, f"{argv[0]}: no answer within {timeout:g} s", tuple(argv))
    except BaseException:
        _kill_group(popen)
        raise
    proc = subprocess.CompletedProcess(argv, popen.returncode, stdout, stderr)
    output = " ".join((proc.stdout + " " + proc.stderr).split())[:500]
    if proc.returncode != 0:
        return ReloadResult(False, f"{argv[0]} exited {proc.returncode}: {output}", tuple(argv))
    return ReloadResult(True, output or "ok", tuple(argv))


def _kill_group(popen: subprocess.Popen[str]) -> None:
    """SIGKILL the hook's whole process group, then reap the hook."""
    with contextlib.suppress(OSError):  # already gone
        os.killpg(popen.pid, signal.SIGKILL)
    try:
        popen.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a pipe still held by a process that left the group
        popen.kill()
        popen.wait()


def run_reload(op: OperatorConfig, zone_path: Path, serial: int, timeout: float,
               changed: list[str] | None = None) -> ReloadResult:
    """Ask the operator's resolver to load the new zone; then flush caches where it needs it."""
    if op.reload.kind == "knot-resolver":
        if not op.reload.socket:
            return ReloadResult(False, "reload.socket (kresd control socket or folder) is required")
        ok, message = kresd_control(op.reload.socket, f"blocker_reload('{op.origin}')", "blocker-reloaded", timeout)
        return ReloadResult(ok, message, ("kresd-control", op.reload.socket))
    argv = reload_argv(op, zone_path, serial)
    if argv is None:
        return ReloadResult(True, "no reload hook configured")
    result = _run(argv, timeout)
    for flush in flush_argvs(op, changed or []) if result.ok else []:
        flushed = _run(flush, timeout)
        if not flushed.ok:
            return ReloadResult(False, f"reloaded, but cache flush failed: {flushed.message}", flushed.argv)
    return result
