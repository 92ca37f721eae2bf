"""Publishing a zone: never a partial or invalid file where a resolver can read it.

Write to a temporary file in the same folder, fsync, check, rename over the old zone, fsync
the folder (blocker.files.replace_file, the one atomic writer). Recording the serial and asking
the resolver to reload (publish/hooks.py) come after, in publish/reconcile.py: a failed reload
leaves the publish recorded as "not yet in effect".
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from blocker import files
from blocker.errors import BlockerError
from blocker.files import replace_file
from blocker.zone.read import structural_check


class PublishError(BlockerError):
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


def mark_checked(body_checksum: str, origin: str) -> None:
    """named-checkzone accepted the body `body_checksum` under `origin` (blocker.publish.lean
    checks a body before the files are made): `write_zone` then checks each file structurally."""
    if len(_CHECKED) > 64:
        _CHECKED.clear()
    _CHECKED[body_checksum] = max(len(origin), _CHECKED.get(body_checksum, -1))


def write_zone(path: Path, data: bytes, origin: str, check: str, body_checksum: str | None = None,
               before_replace: Callable[[], None] | None = None) -> None:
    """Atomically replace `path` with `data` after checking it; the old file stays on any failure.

    `before_replace` runs once the new zone passed its check, just before the rename: the audit
    records of the change are written there, so no zone is served whose change is not on record
    (an exception it raises leaves the old file in place and propagates)."""

    def checked(tmp: Path) -> None:
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

    try:
        # Inside the try: an unwritable or missing folder is a publish error like any other.
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0o644 whatever the umask: the resolver reads the zone as a user of its own.
        replace_file(path, data, mode=0o644, exact_mode=True, before_replace=checked)
    except OSError as exc:
        raise PublishError(f"{path}: cannot write: {exc.strerror or exc}") from None


# The temp names `replace_file` gives zone files, and those older versions left
# (`tempfile.mkstemp(prefix=".<zone file>.", suffix=".tmp")`): nothing else matches.
_ZONE_TEMP = re.compile(rf"\.[^/]+\.rpz\.(?:{files.TOKEN_PATTERN}|[a-z0-9_]{{8}})\.tmp\Z")


def remove_stale_temps(zones_dir: Path) -> list[Path]:
    """Remove the temp files a killed `write_zone` left in `zones_dir` (run at daemon start and
    by `apply`, under the publish lock): blocker.files.remove_stale_temps over the zone temps."""
    return files.remove_stale_temps(zones_dir, _ZONE_TEMP)
