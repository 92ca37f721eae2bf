"""Files the tool writes because a person asked it to: reports, evidence packs.

The target is a path the person typed, in a folder other people may write to (a shared
`/tmp`, a team share). Writing through a fixed temp name there lets anyone who plants a symlink
at that name choose which file we overwrite; renaming over a device node, a FIFO or a symlink
replaces something that was not a report. So every such file is:

- refused when the target exists and is not a regular file (checked before and right before
  the rename; `rename(2)` itself never follows a symlink, and refuses to put a file over a
  folder);
- written to a new file with a random name in the target's own folder, opened with
  `O_CREAT | O_EXCL | O_NOFOLLOW` (a planted name or link fails the open, it is never
  followed), relative to a descriptor of that folder (the folder cannot be swapped midway);
- fsynced, renamed into place, and the folder fsynced: a reader sees the old file or the whole
  new one, never half of it, even after a crash (blocker.files.replace_file, the writer zones
  and the audit head file use too; this module adds the checks on a target a person typed).

An evidence pack (a folder) is built the same way: a new folder with a random name next to the
target, every file in it created `O_EXCL | O_NOFOLLOW` relative to its folder's descriptor,
then the whole folder renamed onto the target, which must be absent or an empty folder.

`-` as a target is standard output.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from blocker.errors import BlockerError
from blocker.files import ATTEMPTS, CREATE_FLAGS, open_dir, replace_file, temp_name
from blocker.textsafe import display_path

FILE_MODE = 0o640  # the facts of the audit trail (itself 0o640): the owner's group may read them
DIR_MODE = 0o750
SCRIPT_MODE = 0o750
STDOUT = "-"


class OutputError(BlockerError):
    """An output that cannot be written; `usage` when the target itself is wrong (exit 2)."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "symbolic link"), (stat.S_ISDIR, "folder"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _existing(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _refuse_special(target: Path, name: str, dir_fd: int) -> os.stat_result | None:
    st = _existing(name, dir_fd)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{display_path(target)}: exists and is a {_kind(st.st_mode)}, not a regular file: "
                          "refusing to replace it; choose another --out", usage=True)
    return st


def check_output(target: str | Path) -> None:
    """Refuse a wrong `--out` before the work (a report of a large trail takes a while); the
    writer checks again, since the folder may change meanwhile."""
    if str(target) == STDOUT:
        return
    path = Path(target)
    if not path.name or path.name in (".", ".."):
        raise OutputError(f"{display_path(target)}: not a file name; give the file to write", usage=True)
    try:
        dir_fd = open_dir(path.parent)
    except OSError as exc:
        raise OutputError(f"{display_path(target)}: cannot open its folder: {exc.strerror or exc}",
                          usage=exc.errno in (errno.ENOENT, errno.ENOTDIR)) from None
    try:
        _refuse_special(path, path.name, dir_fd)
    finally:
        os.close(dir_fd)


def check_output_dir(target: str | Path) -> None:
    """`check_output` for a pack folder: absent, or an empty folder that is not a link."""
    path = Path(target)
    if str(target) == STDOUT or not path.name or path.name in (".", ".."):
        raise OutputError(f"{display_path(target)}: an evidence pack is a folder: give its path", usage=True)
    try:
        parent_fd = open_dir(path.parent)
    except FileNotFoundError:
        return  # created with its parents
    except OSError as exc:
        raise OutputError(f"{display_path(path.parent)}: cannot open: {exc.strerror or exc}") from None
    try:
        _check_pack_target(path, parent_fd)
    finally:
        os.close(parent_fd)


def write_output(target: str | Path, data: bytes | str, *, mode: int = FILE_MODE) -> None:
    """Write `data` whole to `target` (`-`: standard output), as the module docstring says."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if str(target) == STDOUT:
        buffer = getattr(sys.stdout, "buffer", None)
        sys.stdout.flush()
        if buffer is None:  # a text-only stream (a test's capture)
            sys.stdout.write(raw.decode("utf-8", "surrogateescape"))
        else:
            buffer.write(raw)
            buffer.flush()
        return
    path = Path(target)
    check_output(path)
    dir_fd = open_dir(path.parent)
    try:
        before = _refuse_special(path, path.name, dir_fd)
        if before is not None:  # the new file keeps the old one's permissions, never more than 0o644
            mode = stat.S_IMODE(before.st_mode) & 0o644

        def still_regular(_tmp: Path) -> None:  # again right before the rename: it may have been swapped
            _refuse_special(path, path.name, dir_fd)

        replace_file(path, raw, mode=mode, dir_fd=dir_fd, before_replace=still_regular)
    except OSError as exc:
        raise OutputError(f"{display_path(target)}: cannot write: {exc.strerror or exc}") from None
    finally:
        os.close(dir_fd)


class OutputDir:
    """A folder being filled: every path is relative to it, every file is new, nothing is followed.

    Sub-folders are made with `mkdir` (which never follows a link) and opened `O_NOFOLLOW`;
    each file is opened `O_EXCL | O_NOFOLLOW` relative to its folder's descriptor.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._dirs: dict[str, int] = {"": fd}
        self.files: list[str] = []

    def _dir(self, rel: str) -> int:
        if rel in self._dirs:
            return self._dirs[rel]
        parent, _, name = rel.rpartition("/")
        parent_fd = self._dir(parent)
        os.mkdir(name, DIR_MODE, dir_fd=parent_fd)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        self._dirs[rel] = fd
        return fd

    def _split(self, rel: str) -> tuple[int, str]:
        folder, _, name = rel.rpartition("/")
        if not name or any(part in ("", ".", "..") for part in rel.split("/")):
            raise OSError(errno.EINVAL, f"not a relative file name: {rel!r}")
        return self._dir(folder), name

    @contextmanager
    def open(self, rel: str, mode: int = FILE_MODE) -> Iterator[BinaryIO]:
        """A new file `rel`, for writing in pieces; fsynced when the block ends."""
        dir_fd, name = self._split(rel)
        fd = os.open(name, CREATE_FLAGS, mode, dir_fd=dir_fd)
        self.files.append(rel)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())

    def write(self, rel: str, data: bytes | str, mode: int = FILE_MODE) -> None:
        with self.open(rel, mode) as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)

    def sha256(self, rel: str) -> str:
        dir_fd, name = self._split(rel)
        digest = hashlib.sha256()
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def close(self) -> None:
        for fd in sorted(self._dirs.values(), reverse=True):
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._dirs.clear()


def _check_pack_target(target: Path, parent_fd: int) -> None:
    st = _existing(target.name, parent_fd)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{display_path(target)}: exists and is a {_kind(st.st_mode)}, not a folder: "
                          "choose a new --out", usage=True)
    fd = os.open(target.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    try:
        empty = not os.listdir(fd)
    finally:
        os.close(fd)
    if not empty:
        raise OutputError(f"{display_path(target)}: exists and is not an empty folder; choose a new --out")


@contextmanager
def output_dir(target: str | Path) -> Iterator[OutputDir]:
    """A new folder that appears at `target` whole when the block ends without an error.

    `target` must be absent or an empty folder (an existing empty folder is replaced: a pack
    never mixes with other files, or the manifest would lie). On an error nothing appears at
    `target` and the partial folder is removed.
    """
    path = Path(target)
    if str(target) == STDOUT or not path.name or path.name in (".", ".."):
        raise OutputError(f"{display_path(target)}: an evidence pack is a folder: give its path", usage=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        parent_fd = open_dir(path.parent)
    except OSError as exc:
        raise OutputError(f"{display_path(path.parent)}: cannot create or open: {exc.strerror or exc}") from None
    tmp: str | None = None
    out: OutputDir | None = None
    try:
        try:
            _check_pack_target(path, parent_fd)
            for _ in range(ATTEMPTS):
                tmp = temp_name(path.name, ".tmp")
                try:
                    os.mkdir(tmp, DIR_MODE, dir_fd=parent_fd)
                    break
                except FileExistsError:
                    tmp = None
            if tmp is None:
                raise OSError(errno.EEXIST, f"no free temporary name after {ATTEMPTS} attempts")
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
            out = OutputDir(fd)
        except OSError as exc:
            raise OutputError(f"{display_path(target)}: cannot create: {exc.strerror or exc}") from None
        yield out
        try:
            out.close()
            _check_pack_target(path, parent_fd)
            os.rename(tmp, path.name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
            tmp = None
            os.fsync(parent_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise OutputError(f"{display_path(target)}: exists and is not an empty folder; "
                                  "choose a new --out") from None
            if exc.errno in (errno.ENOTDIR, errno.EISDIR):
                raise OutputError(f"{display_path(target)}: exists and is not a folder: choose a new --out",
                                  usage=True) from None
            raise OutputError(f"{display_path(target)}: cannot write: {exc.strerror or exc}") from None
    finally:
        if out is not None:
            with suppress(OSError):
                out.close()
        if tmp is not None:
            shutil.rmtree(tmp, dir_fd=parent_fd, ignore_errors=True)
        os.close(parent_fd)
