"""Commands for the legal team: audit, report, expiring, evidence (registered by blocker.cli)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def register(add: Callable[[str, str], Any]) -> None:
    del add
