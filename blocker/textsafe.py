"""Text from order files and file names, made safe to show a person.

Order fields, file names and resolver answers are written by people and programs we do not
trust with a terminal: a newline forges a line in a table, an ESC sequence repaints the screen,
a bidirectional override reorders what a lawyer reads. Everything shown in a terminal table,
an error line or a log line goes through `printable`; structured outputs (JSON) keep the text
as it is, escaped by their own encoder.
"""

from __future__ import annotations

import unicodedata

# Categories that never belong in one displayed line: controls (C0, C1, DEL), format characters
# (bidi overrides, zero-width joiners), line and paragraph separators, unassigned code points, and
# lone surrogates (from file names that are not UTF-8, via os.fsdecode's surrogateescape).
_UNSAFE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cn", "Cs"})
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
MAX_LINE = 2000  # characters of one error or table cell before it is cut


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape): show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object, limit: int | None = MAX_LINE) -> str:
    """`text` as one safe line: unsafe characters escaped (backslash too, so an escape cannot be
    forged), cut to `limit` characters with a note saying how much was left out."""
    raw = str(text)
    if raw.isascii() and raw.isprintable() and "\\" not in raw:
        out = raw
    else:
        out = "".join(_escape(c) if c in _SHORT or unicodedata.category(c) in _UNSAFE else c for c in raw)
    if limit is not None and len(out) > limit:
        return f"{out[:limit]}... ({len(out) - limit} more characters)"
    return out


def display_path(path: object) -> str:
    """A file name as a person should see it: undecodable bytes and controls escaped."""
    return printable(path, limit=None)
