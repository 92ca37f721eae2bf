"""The one atomic writer: after any failure at any step the folder holds the old file, whole, and
nothing else; after success the new file, whole, and nothing else. A full disk is a real one (a
small tmpfs); a kill mid-write leaves a temp file that the sweep removes, unless a live writer holds it.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from blocker import files
from blocker.files import TEMP_SUFFIX, remove_stale_temps, replace_file, temp_pattern
from blocker.record.audit import AuditLog
from blocker.record.verify import HEAD_NAME
from tests.record.test_audit_repair import fill, small_fs  # noqa: F401 - fixture

STEPS = ("create", "write", "fsync", "before", "rename", "dir-fsync")


@contextmanager
def failing(step: str, err: int) -> Iterator[None]:
    """The system call of `step` fails with `err` (the file system refusing, as a full disk does)."""
    real_open, real_write, real_fsync, real_rename = os.open, os.write, os.fsync, os.rename
    fsyncs = iter(range(2))

    def fail(*_: object, **__: object) -> int:
        raise OSError(err, os.strerror(err))

    def open_(path: str, flags: int, *args: object, **kw: object) -> int:
        if flags & os.O_EXCL:
            fail()
        return real_open(path, flags, *args, **kw)  # type: ignore[arg-type]

    def fsync(fd: int) -> None:
        if (next(fsyncs) == 0) == (step == "fsync"):  # the file's fsync comes first, the folder's second
            fail()
        real_fsync(fd)

    patches: dict[str, Callable[..., object]] = {"create": open_, "write": fail, "rename": fail}
    if step in ("fsync", "dir-fsync"):
        os.fsync = fsync
    elif step in patches:
        setattr(os, {"create": "open", "write": "write", "rename": "rename"}[step], patches[step])
    try:
        yield
    finally:
        os.open, os.write, os.fsync, os.rename = real_open, real_write, real_fsync, real_rename


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(step=st.sampled_from(STEPS), err=st.sampled_from([errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG]),
       old=st.one_of(st.none(), st.binary(max_size=300)), new=st.binary(max_size=3000))
def test_a_failure_at_any_step_leaves_the_old_file_whole_and_no_temp(tmp_path_factory: pytest.TempPathFactory,
                                                                     step: str, err: int, old: bytes | None,
                                                                     new: bytes) -> None:
    assume(step != "write" or new)  # nothing to write: no write to fail
    folder = tmp_path_factory.mktemp("replace")
    target = folder / "zone.rpz"
    if old is not None:
        target.write_bytes(old)

    def before(tmp: Path) -> None:
        assert tmp.read_bytes() == new and tmp.parent == folder  # the whole new file, beside the target
        if step == "before":
            raise OSError(err, os.strerror(err))

    with pytest.raises(OSError) as raised, failing(step, err):
        replace_file(target, new, before_replace=before)
    assert raised.value.errno == err
    if step == "dir-fsync":  # the rename happened: the new file, whole (the error says it may not be durable)
        assert listing(folder) == {"zone.rpz": new}
    else:
        assert listing(folder) == ({} if old is None else {"zone.rpz": old})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=st.one_of(st.none(), st.binary(max_size=300)), new=st.binary(max_size=3000),
       name=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1,
                    max_size=120).filter(lambda n: n not in (".", "..") and len(n.encode()) <= 255))
def test_success_leaves_the_new_file_whole_and_nothing_else(tmp_path_factory: pytest.TempPathFactory,
                                                            old: bytes | None, new: bytes, name: str) -> None:
    folder = tmp_path_factory.mktemp("replace")
    if old is not None:
        (folder / name).write_bytes(old)
    replace_file(folder / name, new)
    assert listing(folder) == {name: new}


def test_exact_mode_ignores_the_umask_and_plain_mode_honours_it(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        replace_file(tmp_path / "zone.rpz", b"z", mode=0o644, exact_mode=True)
        replace_file(tmp_path / "report", b"r", mode=0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "zone.rpz").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "report").stat().st_mode) == 0o600


@pytest.mark.parametrize("kind", ["symlink", "fifo", "dir"])
def test_a_planted_temp_name_is_never_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    planted = tmp_path / f".audit.head.{'a' * 16}{TEMP_SUFFIX}"
    {"symlink": lambda: planted.symlink_to(victim), "fifo": lambda: os.mkfifo(planted), "dir": planted.mkdir}[kind]()
    tokens = ["a" * 16]
    real = files.token
    monkeypatch.setattr(files, "token", lambda: tokens.pop() if tokens else real())
    replace_file(tmp_path / "audit.head", b"1 abc\n")
    assert (tmp_path / "audit.head").read_bytes() == b"1 abc\n" and victim.read_text() == "precious"
    assert os.path.lexists(planted) and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["victim", "audit.head", planted.name])


@pytest.mark.integration  # mounts a tmpfs
def test_a_real_full_disk_keeps_the_old_file_and_leaves_no_temp(small_fs: Path) -> None:  # noqa: F811
    target = small_fs / "orange.rpz"
    target.write_bytes(b"old zone\n")
    filler = fill(small_fs)
    with pytest.raises(OSError) as raised:
        replace_file(target, b"x" * 1_000_000)
    assert raised.value.errno == errno.ENOSPC
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler", "orange.rpz"]
    assert target.read_bytes() == b"old zone\n"
    filler.unlink()
    replace_file(target, b"x" * 1_000_000)
    assert target.read_bytes() == b"x" * 1_000_000


KILLED_WRITER = """
import sys, time
from pathlib import Path
from blocker.files import replace_file
def hold(tmp):
    print(tmp, flush=True)
    time.sleep(60)
replace_file(Path(sys.argv[1]), b"half", before_replace=hold)
"""


@pytest.mark.integration  # runs a writer process and kills it
def test_the_sweep_removes_a_killed_writers_temp_and_keeps_a_live_ones(tmp_path: Path) -> None:
    pattern = temp_pattern(re.escape("orange.rpz"))

    def writer() -> tuple[subprocess.Popen[str], Path]:
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "orange.rpz")],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        return proc, Path(proc.stdout.readline().strip())

    killed, stale = writer()
    killed.kill()
    killed.wait()
    live, held = writer()
    foreign = tmp_path / ".orange.rpz.tmp"
    foreign.write_text("not ours")
    try:
        assert pattern.match(stale.name) and pattern.match(held.name)
        assert remove_stale_temps(tmp_path, pattern) == [stale]
        assert held.exists() and foreign.exists() and not stale.exists()
    finally:
        live.kill()
        live.wait()
    assert remove_stale_temps(tmp_path, pattern) == [held]


def test_a_head_update_cut_short_is_swept_at_repair(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, actor="test")
    log.append("note", {})
    stale = tmp_path / f".{HEAD_NAME}.{'0' * 16}{TEMP_SUFFIX}"
    stale.write_text("1 half")
    other = tmp_path / f".{HEAD_NAME}.notours.tmp"
    other.write_text("kept")
    log.repair()
    assert not stale.exists() and other.exists() and log.head() is not None
