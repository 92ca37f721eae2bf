"""Running the CLI in-process as if the wall clock read a given instant.

`apply --at` far from the clock is refused without --force, and what apply records carries the
wall-clock instant. Tests that build a history at fixed instants (orders of 2030, 2091) run
`apply` in-process with the clock of `blocker.cli.common`, `blocker.publish.reconcile` and `blocker.record.audit` set
to that instant: the records are then those of an apply really run at that instant.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from datetime import UTC, datetime, tzinfo
from pathlib import Path

import pytest

import blocker.cli.common
import blocker.publish.reconcile
import blocker.record.audit
from blocker.cli.main import main


def _frozen(instant: datetime) -> type[datetime]:
    class Frozen(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Frozen:  # type: ignore[override]
            value = instant.astimezone(tz or UTC)
            return cls(value.year, value.month, value.day, value.hour, value.minute, value.second,
                       value.microsecond, value.tzinfo)

    return Frozen


@contextlib.contextmanager
def wall_clock_at(instant: datetime) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        frozen = _frozen(instant)
        for module in (blocker.cli.common, blocker.publish.reconcile, blocker.record.audit):
            mp.setattr(module, "datetime", frozen)
        yield


def run_at(instant: datetime | None, argv: list[str], cwd: Path | None = None) -> tuple[int, str, str]:
    """`blocker ARGV` in this process (with the clock at `instant` when given): (code, out, err)."""
    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.ExitStack() as stack:
            if instant is not None:
                stack.enter_context(wall_clock_at(instant))
            stack.enter_context(contextlib.redirect_stdout(out))
            stack.enter_context(contextlib.redirect_stderr(err))
            code = main(argv)
    finally:
        os.chdir(before)
    assert "internal error" not in err.getvalue(), err.getvalue()
    return code, out.getvalue(), err.getvalue()


def apply_at(text: str, argv: list[str], cwd: Path | None = None, timezone: str = "Europe/Paris") -> tuple[
        int, str, str]:
    """`blocker apply ARGV --at TEXT`, run as if the clock read TEXT (no offset: `timezone`)."""
    from blocker.orders.legaltime import parse_instant, zone

    instant, _ = parse_instant(text, zone(timezone))
    return run_at(instant, [*argv, "--at", text], cwd)
