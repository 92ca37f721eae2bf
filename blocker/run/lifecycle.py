"""What a daemon process needs around its work: one daemon per state folder (a lock file naming
its pid), the signals that stop it or reload its config, and the config reload itself."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO, Any

from blocker.config.load import load_config
from blocker.config.model import Config, ConfigError
from blocker.errors import BlockerError

log = logging.getLogger(__name__)


class DaemonError(BlockerError):
    """The daemon cannot start; the message says why, for a person."""


class StateDirLock:
    """`<state_dir>/daemon.lock`, held with flock for the daemon's life: a second daemon on the
    same state would interleave publishes and audit records."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fh = (self.state_dir / "daemon.lock").open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise DaemonError(f"another blocker daemon is running on state dir {self.state_dir} (pid {holder}); "
                              "one daemon per state directory") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def install_signals(on_stop: Callable[[], None], on_hup: Callable[[], None]) -> None:
    """SIGTERM and SIGINT stop, SIGHUP reloads; the handlers only set flags (the main loop acts)."""
    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        on_stop()

    def hup(_signum: int, _frame: FrameType | None) -> None:
        on_hup()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hup)


def reread_config(path: Path | None, overrides: dict[str, Any]) -> Config | None:
    """SIGHUP: the config file read again with the command line's overrides; None when there is no
    file or it is broken (the running config stays: fail closed)."""
    if path is None:
        return None
    try:
        return load_config(path).with_paths(**overrides)
    except ConfigError as exc:
        log.error("config reload failed, keeping the running config", extra={"error": str(exc)})
        return None


class Foreground:
    """What the daemon and the probe agent share as foreground services: `stop()` (a signal, a
    test) wakes the main loop to end, and SIGHUP is a flag the loop reads at its next turn (no
    work in a signal handler)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._hup = False

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _on_hup(self) -> None:
        self._hup = True
        self._wake.set()
