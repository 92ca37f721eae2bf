"""Publishing a zone: never a partial or invalid file where a resolver can read it.

Write to a temporary file in the same folder, fsync, check, rename over the old zone, fsync
the folder, record the serial, then ask the resolver to reload. A failed reload leaves the
publish recorded as "not yet in effect".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from blocker.audit import fsync_dir
from blocker.config import OperatorConfig
from blocker.rpz import structural_check


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
        proc = subprocess.run([checker, "-q", "-k", "fail", "-n", "fail", origin, str(path)],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            out = subprocess.run([checker, "-k", "fail", "-n", "fail", origin, str(path)],
                                 capture_output=True, text=True, timeout=600)
            lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
            return lines[:5] or [f"named-checkzone exited {proc.returncode}"]
        return []
    return structural_check(data, origin)


# Bodies named-checkzone accepted in this process, with the longest origin they were checked
# under: operators sharing one body then need only the structural check (their owners are
# the same relative names; only a longer origin could push a name past 255 octets).
_CHECKED: dict[str, int] = {}


def write_zone(path: Path, data: bytes, origin: str, check: str, body_checksum: str | None = None) -> None:
    """Atomically replace `path` with `data` after checking it; the old file stays on any failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        if body_checksum is not None and _CHECKED.get(body_checksum, -1) >= len(origin):
            problems = structural_check(data, origin)
        else:
            problems = check_zone(tmp, data, origin, check)
            if not problems and body_checksum is not None and check != "none":
                if len(_CHECKED) > 64:
                    _CHECKED.clear()
                _CHECKED[body_checksum] = len(origin)
        if problems:
            raise PublishError(f"{path.name}: zone check failed: {'; '.join(problems)}")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise PublishError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def reload_argv(op: OperatorConfig, zone_path: Path, serial: int) -> list[str] | None:
    """The command that makes this operator's resolver read the new zone (None: nothing to run)."""
    hook = op.reload
    zone_name = op.origin.rstrip(".")
    if hook.kind == "none":
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
        return [*argv, *hook.command, "reload", zone_name]
    if hook.kind == "unbound":
        argv = ["unbound-control"]
        if hook.key_file:
            argv += ["-c", hook.key_file]
        if hook.server:
            argv += ["-s", hook.server.replace(":", "@")]
        return [*argv, *hook.command, "auth_zone_reload", op.origin]
    if hook.kind == "powerdns-recursor":
        argv = ["rec_control"]
        if hook.socket:
            argv.append(f"--socket-dir={hook.socket}")
        return [*argv, *hook.command, "reload-lua-config"]
    if hook.kind == "knot-resolver":
        # kresd re-reads an RPZ file it watches (policy.rpz(..., true)); a socket, when given,
        # lets blocker ask for the reload explicitly through kresd's control socket.
        if not hook.socket:
            return None
        return ["socat", "-", f"UNIX-CONNECT:{hook.socket}", *hook.command]
    raise PublishError(f"unknown reload kind {hook.kind!r}")


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    message: str
    argv: tuple[str, ...] = ()


def run_reload(op: OperatorConfig, zone_path: Path, serial: int, timeout: float) -> ReloadResult:
    argv = reload_argv(op, zone_path, serial)
    if argv is None:
        return ReloadResult(True, "no reload hook configured")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return ReloadResult(False, f"{argv[0]}: command not found", tuple(argv))
    except subprocess.TimeoutExpired:
        return ReloadResult(False, f"{argv[0]}: no answer within {timeout:g} s", tuple(argv))
    output = " ".join((proc.stdout + " " + proc.stderr).split())[:500]
    if proc.returncode != 0:
        return ReloadResult(False, f"{argv[0]} exited {proc.returncode}: {output}", tuple(argv))
    return ReloadResult(True, output or "ok", tuple(argv))

