"""What `/healthz` says: each operator's last publish and the last load of the orders, composed
under one lock (each publisher thread updates its own operator's part)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class Health:
    ok: bool = False
    reasons: list[str] = field(default_factory=lambda: ["starting"])
    flags: dict[str, Any] = field(default_factory=dict)
    last_reconcile: datetime | None = None


class HealthBoard:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.health = Health()
        self._reasons: dict[str, list[str]] = {}  # operator ("" for the orders) -> why unhealthy
        self._flags: dict[str, Any] = {}
        self._held: dict[str, int] = {}
        self._last_done: datetime | None = None  # the instant of the last reconcile that finished

    def set_reasons(self, operator: str, reasons: list[str], operators: Iterable[str]) -> None:
        """Why an operator (or, for "", loading the orders) is unhealthy now."""
        with self.lock:
            self._reasons[operator] = reasons
            self.compose(operators)

    def set_orders(self, reasons: list[str], flags: dict[str, Any], operators: Iterable[str]) -> None:
        with self.lock:
            self._flags = flags
            self._reasons[""] = reasons
            self.compose(operators)

    def set_operator(self, operator: str, reasons: list[str], held: int) -> None:
        """Lock held by the caller (it updates what the probes expect in the same breath)."""
        self._reasons[operator] = reasons
        self._held[operator] = held

    def reconciled(self, at: datetime, operators: Iterable[str]) -> None:
        with self.lock:
            self._last_done = at
            self.compose(operators)

    def compose(self, operators: Iterable[str]) -> None:
        """The health of `operators` (the config's) from their parts; lock held."""
        names = sorted(operators)
        reasons: list[str] = []
        for operator in names:
            reasons += self._reasons.get(operator, [f"{operator}: not planned yet"])
        reasons += self._reasons.get("", [])
        flags = {**self._flags, "removals_held": {op: n for op, n in sorted(self._held.items())
                                                   if n and op in names}}
        self.health = Health(not reasons, reasons, flags, self._last_done)

    def payload(self, now: datetime, audit_error: str | None, reconcile_interval: float) -> tuple[int, dict[str, Any]]:
        """The `/healthz` status and body: the composed health, plus what is true only now (an
        audit append that failed since, a reconcile overdue)."""
        h = self.health
        reasons = list(h.reasons)
        if audit_error is not None and not any(r.startswith("audit trail cannot be written") for r in reasons):
            reasons.append(f"audit trail cannot be written: {audit_error}")  # a probe pass's append, say
        if h.last_reconcile is not None:
            age = (now - h.last_reconcile).total_seconds()
            if age > 3 * reconcile_interval + 30:
                reasons.append(f"last reconcile {age:.0f} s ago")
        ok = h.ok and not reasons
        payload = {
            "status": "ok" if ok else "unhealthy",
            "reasons": reasons,
            "last_reconcile": h.last_reconcile.isoformat() if h.last_reconcile else None,
            **h.flags,
        }
        return (200 if ok else 503), payload
