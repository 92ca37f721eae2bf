"""Session fixtures for the real-resolver tests: import them into conftest.py with
`from tests.conftest_resolvers import *`.

Each daemon starts once per session (about half a second each) and is stopped at the end. All four
resolvers read the same zones directory (rpz_zones_dir), like resolvers fed by one blocker: one
zone file per operator (TEST_ORIGINS), which starts with base_rules(origin). A test that rewrites a
file must reload the resolver it checks, and put the base rules back when done (Resolver.publish).
A missing daemon is an error with the package to install, never a skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.resolverlib import (
    TEST_ORIGINS,
    AuthServer,
    Bind,
    KnotResolver,
    PdnsRecursor,
    Resolver,
    Unbound,
    base_rules,
    rpz_zone,
    write_atomically,
)

__all__ = [
    "RESOLVER_FIXTURES",
    "auth_server",
    "bind",
    "kresd",
    "pdns_recursor",
    "resolver_workdir",
    "rpz_zones",
    "rpz_zones_dir",
    "unbound",
]

# Fixture names, for tests parametrized over every resolver (request.getfixturevalue(name)).
RESOLVER_FIXTURES = ("unbound", "bind", "kresd", "pdns_recursor")


@pytest.fixture(scope="session")
def resolver_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory per session for the daemons' configs, logs and control sockets."""
    return tmp_path_factory.mktemp("resolvers")


@pytest.fixture(scope="session")
def rpz_zones_dir(resolver_workdir: Path) -> Path:
    """The zones directory every resolver reads, as blocker's zones dir would be."""
    path = resolver_workdir / "zones"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def rpz_zones(rpz_zones_dir: Path) -> list[tuple[str, Path]]:
    """(origin, file) per operator zone, written with the base rules (serial 1) before any resolver
    starts: BIND refuses a missing zone file and PowerDNS would run without the zone."""
    zones = []
    for origin in TEST_ORIGINS:
        path = rpz_zones_dir / f"{origin.split('.')[0]}.rpz"
        write_atomically(path, rpz_zone(origin, base_rules(origin), serial=1))
        zones.append((origin, path))
    return zones


@pytest.fixture(scope="session")
def auth_server(resolver_workdir: Path) -> Iterator[AuthServer]:
    """BIND authoritative for the test zones (example.gg., example., a stand-in root)."""
    with AuthServer(resolver_workdir / "auth") as server:
        yield server


R = TypeVar("R", bound=Resolver)


def _run(cls: type[R], workdir: Path, zones: list[tuple[str, Path]], auth: AuthServer) -> Iterator[R]:
    with cls(workdir / cls.name, zones, auth) as resolver:
        yield resolver


@pytest.fixture(scope="session")
def unbound(resolver_workdir: Path, rpz_zones: list[tuple[str, Path]],
            auth_server: AuthServer) -> Iterator[Unbound]:
    yield from _run(Unbound, resolver_workdir, rpz_zones, auth_server)


@pytest.fixture(scope="session")
def bind(resolver_workdir: Path, rpz_zones: list[tuple[str, Path]],
         auth_server: AuthServer) -> Iterator[Bind]:
    yield from _run(Bind, resolver_workdir, rpz_zones, auth_server)


@pytest.fixture(scope="session")
def kresd(resolver_workdir: Path, rpz_zones: list[tuple[str, Path]],
          auth_server: AuthServer) -> Iterator[KnotResolver]:
    yield from _run(KnotResolver, resolver_workdir, rpz_zones, auth_server)


@pytest.fixture(scope="session")
def pdns_recursor(resolver_workdir: Path, rpz_zones: list[tuple[str, Path]],
                  auth_server: AuthServer) -> Iterator[PdnsRecursor]:
    yield from _run(PdnsRecursor, resolver_workdir, rpz_zones, auth_server)
