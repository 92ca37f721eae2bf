"""Which operators a publisher of the daemon holds: one publisher per operator at a time.

A reconcile claims the operators it may publish now; one busy elsewhere is marked, and its
publisher, when done, learns it must plan it again from the newest orders (at most one such
rerun: marks coalesce). Closing waits for every publisher to finish and refuses new claims.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable


class Claims:
    """The operators claimed by publishers (`busy`) and those another reconcile found busy
    (`pending`), under one condition."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy: set[str] = set()
        self._pending: set[str] = set()
        self._closing = False

    @property
    def closing(self) -> bool:
        return self._closing

    def claim(self, operators: Iterable[str], *, mark: bool = True) -> list[str]:
        """The operators of `operators` this caller may publish now; with `mark`, each busy one
        is marked for its publisher to plan again when done (coalesced: one mark per operator)."""
        operators = list(operators)
        with self._cond:
            if self._closing:
                return []
            mine = [op for op in operators if op not in self._busy]
            if mark:
                self._pending.update(op for op in operators if op in self._busy)
            self._busy.update(mine)
            return mine

    def release(self, operator: str) -> bool:
        """Done with `operator`: whether it was marked meanwhile (it must be planned again)."""
        with self._cond:
            pending = operator in self._pending and not self._closing
            self._pending.discard(operator)
            self._busy.discard(operator)
            self._cond.notify_all()
            return pending

    def close(self) -> None:
        """No new claim from now on; returns once every claimed operator is released."""
        with self._cond:
            self._closing = True
            self._cond.wait_for(lambda: not self._busy)
