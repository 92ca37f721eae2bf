"""wait_for_serial: the publish side's "until every resolver serves serial N" (blocker.probe.canary)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from blocker.probe.canary import wait_for_serial
from blocker.probe.model import ResolverTarget
from tests.resolverlib import free_port


def config(*resolvers: ResolverTarget) -> Any:
    return SimpleNamespace(operators={"orange": SimpleNamespace(id="orange", resolvers=resolvers)})


def test_no_resolver_has_nothing_to_wait_for() -> None:
    assert wait_for_serial(config(), "orange", 7, 5.0) == []


def test_a_resolver_that_never_answers_is_named_after_the_timeout() -> None:
    dead = ResolverTarget("127.0.0.1", free_port(), name="dead")
    start = time.monotonic()
    assert wait_for_serial(config(dead), "orange", 7, 0.5) == ["dead serves no canary"]
    assert 0.5 <= time.monotonic() - start < 5
