"""What the commands print for a person: tables, JSON, problem lists.

Every cell of text that came from outside (order files, the audit trail) is escaped here
(blocker.textsafe): a newline or an ESC sequence in an order's field must not forge a row or
repaint the reader's terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from blocker.orders.model import LoadResult
from blocker.textsafe import printable


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`1 target`, `2 targets`, `0 targets` (`many` for the irregular ones)."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def _cut(cell: str, width: int) -> str:
    return cell if len(cell) <= width else cell[: max(width - 1, 0)] + "…"


def table(rows: Sequence[Sequence[str]], headers: Sequence[str], *, width: int | None = None,
          shrink: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; every cell escaped.

    With `width`, the columns in `shrink` (indices, the free-text ones) are narrowed, widest
    in that order of priority, until a line fits, their cells cut with `…`: a terminal table
    that wraps cannot be read. The other columns (instants, counts) are never cut.
    """
    cells = [[printable(c) for c in row] for row in rows]
    heads = [printable(h) for h in headers]
    widths = [max(len(x) for x in col) for col in zip(heads, *cells, strict=False)]
    if width is not None and shrink:
        floor = {i: max(len(heads[i]), 12) for i in shrink}
        while sum(widths) + 2 * (len(widths) - 1) > width:
            room = [i for i in shrink if widths[i] > floor[i]]
            if not room:
                break
            widths[room[0]] -= 1
        cells = [[_cut(c, widths[i]) if i in floor else c for i, c in enumerate(row)] for row in cells]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=False)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells]
    return "\n".join(lines)


def print_json(data: Any, *, ensure_ascii: bool = True) -> None:
    """`data` as indented JSON on stdout (the `--json` outputs; their bytes are a contract)."""
    print(json.dumps(data, indent=2, ensure_ascii=ensure_ascii))


def print_errors(result: LoadResult) -> None:
    """The order files' problems, one line each, on stderr."""
    for error in result.errors:
        print(error, file=sys.stderr)
