"""Order files written the way a legal team writes them, for tests that drive the CLI or the daemon.

Shared here (not in one test module) so a test of another package does not import a test module,
which would collect nothing new but tie the two modules' imports and fixtures together.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

PARIS_WINTER = timezone(timedelta(hours=1))  # orders carry an explicit offset, not UTC

# A complete order with 18 months from 2026-11-20 for orange and sfr; `{id}` names it and its target.
GOOD = """\
id: {id}
court: Tribunal judiciaire de Paris
case_number: RG 26/53123
decision_date: 2026-11-18
operators: [orange, sfr]
start: 2026-11-20
duration: 18 months
targets:
  - {id}.example
"""


def whole_second(offset: float) -> datetime:
    """An instant `offset` seconds from now, on a whole second, with a +01:00 offset."""
    return datetime.fromtimestamp(math.ceil(time.time() + offset), PARIS_WINTER)


def write_order(folder: Path, order_id: str, start: datetime, end: datetime, targets: Sequence[str],
                operators: Sequence[str] = ("orange",), name: str | None = None) -> Path:
    """An order file as a legal team writes it: datetimes with their UTC offset; it appears at once
    (renamed into place), so a watching daemon never reads half of it."""
    decision = (start - timedelta(days=1)).date().isoformat()
    text = (
        f"id: {order_id}\n"
        "court: Tribunal judiciaire de Paris\n"
        "case_number: RG 26/00042\n"
        f"decision_date: {decision}\n"
        f"operators: [{', '.join(operators)}]\n"
        f"start: {start.isoformat()}\n"
        f"end: {end.isoformat()}\n"
        f"targets: [{', '.join(targets)}]\n"
    )
    path = folder / (name or f"{order_id}.yaml")
    tmp = path.with_name(f".{path.name}.tmp")  # dot files are not order files
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write(folder: Path, name: str, text: str | bytes) -> Path:
    """`folder/name` with `text` (bytes as they are, so a test can write what no editor would)."""
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path
