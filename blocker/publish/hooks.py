"""Reload hooks: how each resolver is told to read a new zone, and its caches flushed.

Kept apart from the writer: the zone is in place (or not) before any hook runs, and a hook that
fails or hangs must never be able to leave a partial file; what the writer guarantees does not
depend on which resolver reads the file.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from blocker.config.model import OperatorConfig
from blocker.publish.writer import PublishError
from blocker.zone.render import canary_owner


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
                out = b"".join(iter(functools.partial(sock.recv, 65536), b"")).decode(errors="replace")
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
