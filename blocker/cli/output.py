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


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    """Columns padded to their widest cell; every cell escaped."""
    cells = [[printable(c) for c in row] for row in rows]
    heads = [printable(h) for h in headers]
    widths = [max(len(x) for x in col) for col in zip(heads, *cells, strict=False)]
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
