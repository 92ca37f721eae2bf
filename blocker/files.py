"""The one way a file of ours is replaced in place: a reader sees the old file or the whole new one.

Zones (publish/writer.py), the audit head file (record/audit.py), the reports and evidence files a
person asks for (safeio.py) and the fleet's key file all go through `replace_file`:

1. a new temp file in the target's own folder (a rename never crosses file systems), named
   `.<target name>.<16 hex>.tmp` so that `remove_stale_temps` can tell ours from anything else,
   created `O_CREAT | O_EXCL | O_NOFOLLOW` relative to a descriptor of that folder: a planted
   name or link fails the open and another random name is tried, nothing is ever followed;
2. an exclusive flock on it while it lives, so that a sweep of stale temps leaves a live
   writer's file alone (a killed writer's lock dies with it);
3. every byte written (a short write is continued), fsynced;
4. the caller's check on the temp file (`before_replace`): the zone check, the audit records
   of a publish, a last look at the target;
5. renamed onto the target, then the folder fsynced, so the rename itself survives a crash.

On any failure (a full disk, a failed check, an exception of the caller's) the temp file is
removed and the target is left as it was; the error propagates (OSError for the file system, so
each caller words it for its own reader).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import stat
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

TEMP_SUFFIX = ".tmp"
NAME_BYTES = 160  # of the target's name kept in a temp name: the whole name stays under NAME_MAX (255)
ATTEMPTS = 16  # random names tried before giving up (each taken one was planted, or a collision)
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
TOKEN_PATTERN = r"[0-9a-f]{16}"  # what `token` gives


def token() -> str:
    """The random part of a temp name (a function of its own, so tests can force collisions)."""
    return secrets.token_hex(8)


def temp_name(name: str, suffix: str = TEMP_SUFFIX) -> str:
    """`.<name>.<random>.tmp`, `name` cut to its first NAME_BYTES bytes if longer."""
    head = os.fsdecode(os.fsencode(name)[:NAME_BYTES])
    return f".{head}.{token()}{suffix}"


def temp_pattern(name_pattern: str) -> re.Pattern[str]:
    """The temp names `replace_file` gives the targets matching `name_pattern` (a regex)."""
    return re.compile(rf"\.{name_pattern}\.{TOKEN_PATTERN}{re.escape(TEMP_SUFFIX)}\Z")


def open_dir(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def fsync_dir(path: Path) -> None:
    """Make the names in `path` (a rename, a new file) durable, not only the files' bytes."""
    fd = open_dir(path)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written: a write may be short (a signal, a nearly full disk)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, "no byte written (no space left on device?)")
        view = view[written:]


def create_temp(name: str, dir_fd: int, mode: int, suffix: str = TEMP_SUFFIX) -> tuple[int, str]:
    """A new file with a random temp name for `name` in `dir_fd`: never an existing file, never
    through a link (a name taken or planted: another random one, ATTEMPTS times)."""
    for _ in range(ATTEMPTS):
        tmp = temp_name(name, suffix)
        try:
            return os.open(tmp, CREATE_FLAGS, mode, dir_fd=dir_fd), tmp
        except (FileExistsError, IsADirectoryError):
            continue
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
    raise OSError(errno.EEXIST, f"no free temporary name after {ATTEMPTS} attempts")


def replace_file(path: Path, data: bytes, *, mode: int = 0o644, exact_mode: bool = False,
                 dir_fd: int | None = None, before_replace: Callable[[Path], None] | None = None) -> None:
    """Replace `path` with `data` as the module docstring says, or leave it as it was.

    `mode` is the new file's permission bits, less the umask unless `exact_mode` (a zone is 0o644
    whatever the umask, for the resolver's user; a key file 0o600). `dir_fd`, when given, is a
    descriptor of `path`'s folder the caller holds (and closes): the folder cannot be swapped
    between its checks and this write. `before_replace(temp path)` runs after the fsync, just
    before the rename; whatever it raises leaves the target untouched and propagates.
    """
    own_dir = dir_fd is None
    folder_fd = open_dir(path.parent) if dir_fd is None else dir_fd
    tmp: str | None = None
    fd = -1
    try:
        fd, tmp = create_temp(path.name, folder_fd, mode)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until renamed or removed: see remove_stale_temps
        if exact_mode:
            os.fchmod(fd, mode)
        write_all(fd, data)
        os.fsync(fd)
        if before_replace is not None:
            before_replace(path.parent / tmp)
        os.rename(tmp, path.name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
        tmp = None
        os.fsync(folder_fd)
    finally:
        if tmp is not None:
            with suppress(OSError):
                os.unlink(tmp, dir_fd=folder_fd)
        if fd >= 0:
            os.close(fd)
        if own_dir:
            os.close(folder_fd)


def remove_stale_temps(folder: Path, pattern: re.Pattern[str]) -> list[Path]:
    """Remove the temp files a killed writer left in `folder`: names matching `pattern` only,
    regular files only, and only one no live writer holds locked (`replace_file` keeps an flock
    on its temp file; a killed one's lock died with it). A file that cannot be checked is left."""
    removed: list[Path] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in sorted(names):
        if not pattern.match(name):
            continue
        path = folder / name
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
