"""Shared fixtures; the real-resolver fixtures live in tests/conftest_resolvers.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest_resolvers import *  # noqa: F403

if TYPE_CHECKING:
    from tests.run.test_daemon import Env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """One daemon test environment (orders, state, zones folders, started daemons): every daemon it
    started is killed at the end, whatever the test did."""
    from tests.run.test_daemon import Env

    environment = Env(tmp_path)
    try:
        yield environment
    finally:
        for daemon in environment.daemons:
            daemon.kill()
