"""Shared fixtures and the `integration` marker; the real-resolver fixtures live in
tests/conftest_resolvers.py, the CLI runner in tests/support/cli.py, the daemon in tests/support/daemon.py.

`make unit` runs `pytest -m "not integration"`: the pure tests, with no Debian package and no process
started, in seconds: it loads the `unit` hypothesis profile (tests/support/properties.py), which
runs each property test with a few examples; `make test` runs the `ci` profile, the full counts.
A test is integration when it starts a process of any kind (the real `blocker` console script or
daemon, a resolver, promtool, chromium, a Python child...). It is marked so either by using one of
the fixtures below that start one (automatic) or by its module's `pytestmark` /
`@pytest.mark.integration`. The unit run keeps the marking honest: there, a test that is not marked
and starts a process fails, naming the program, instead of quietly needing a resolver.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest_resolvers import *  # noqa: F403
from tests.conftest_resolvers import __all__ as RESOLVER_FIXTURE_NAMES
from tests.support.cli import use_pycache_prefix
from tests.support.daemon import Env
from tests.support.legal import copy, scenario  # noqa: F401 - the legal scenario's fixtures, for tests/legal and tests/cli
from tests.support.properties import register_profiles

register_profiles()  # before any test module is imported: their @settings read the profile
use_pycache_prefix()  # before any child starts

# Fixtures that start processes: a test using one (directly or through another fixture) is
# integration without saying so.
INTEGRATION_FIXTURES = frozenset(RESOLVER_FIXTURE_NAMES) - {"RESOLVER_FIXTURES"} | {"env"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _unit_run(config: pytest.Config) -> bool:
    return "not integration" in (config.getoption("markexpr", "") or "")


@contextlib.contextmanager
def _no_process(item: pytest.Item) -> Iterator[None]:
    """Popen fails for `item`, naming the program, while the block runs."""
    popen_init = subprocess.Popen.__init__

    def refuse(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        program = args if isinstance(args, (str, bytes, os.PathLike)) else args[0]
        pytest.fail(f"{item.nodeid} starts {os.fsdecode(program)!r}: mark it integration "
                    "(module `pytestmark = pytest.mark.integration` or @pytest.mark.integration)", pytrace=False)

    subprocess.Popen.__init__ = refuse  # type: ignore[method-assign]  # restored below
    try:
        yield
    finally:
        subprocess.Popen.__init__ = popen_init  # type: ignore[method-assign]


def _guarded(item: pytest.Item) -> contextlib.AbstractContextManager[None]:
    """In the unit run, an unmarked test that starts a process (in its own fixtures of any scope
    too) fails at once, saying what to mark."""
    if _unit_run(item.config) and item.get_closest_marker("integration") is None:
        return _no_process(item)
    return contextlib.nullcontext()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _guarded(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _guarded(item):
        yield


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """One daemon test environment (orders, state, zones folders, started daemons): every daemon it
    started is killed at the end, whatever the test did."""
    environment = Env(tmp_path)
    try:
        yield environment
    finally:
        environment.close()
