"""Admission of owner names into a zone: the render's second line of defence behind order validation.

Only names validated by `blocker.orders.names` should reach the renderer; these checks make sure
nothing else does (an owner that is not host-name syntax, an `rpz-` trigger or action label, a name
at or under an origin or the canary domain), so nothing an order says can inject zone-file syntax
or a policy trigger. A cheap whole-chunk scan runs first; the careful per-owner check only when it fails.
"""

from __future__ import annotations

import re

from blocker.errors import BlockerError
from blocker.policy import ZoneEntries


class UnsafeOwnerError(BlockerError, ValueError):
    """An owner that is not a plain domain reached the zone writer: the render is refused (the
    zones in place keep serving) and the message names the order that carries it.

    Still a ValueError, as it was before the error root, for code that caught it as one."""


# What an owner may be: `*.` then LDH labels (validated targets hold only these).
# Checked per owner only when the cheap whole-chunk checks below fail: both say the same.
_OWNER_RE = re.compile(r"(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_OWNER_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789.-*\n"
_SHAPE = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz0123456789\n", b"a" * 36 + b".")
_LONG_LABEL = b"a" * 64


def owner_problem(owner: str, origin: str) -> str | None:
    """Why `owner` must not be written into a zone of `origin` (absolute), or None: not
    host-name syntax, an `rpz-` label (a trigger or action, not a domain), at or under an
    origin or the canary domain."""
    from blocker.orders.names import RPZ_LABEL_PREFIX, reserved_for

    if not isinstance(owner, str) or not owner.isascii() or not _OWNER_RE.match(owner):
        return f"{owner!r} is not a plain domain name"
    if len(owner) + len(origin) > 253:
        return f"{owner!r} is too long under the origin {origin}"
    labels = owner.split(".")
    for label in labels:
        if label.startswith(RPZ_LABEL_PREFIX):
            return f"{owner!r} has the RPZ trigger/action label {label!r}"
    return reserved_for(owner.removeprefix("*."), (origin.rstrip("."),))


def _check_chunk(part: list[str], origin: str, tails: tuple[bytes, ...]) -> bool:
    """True when every owner of `part` is plain: one join, then C-speed scans of it (the alphabet
    by bytes.translate; the same bytes with letters and digits as `a` and newlines as dots,
    searched for an empty label, a hyphen at a label's edge, a label over 63)."""
    try:
        data = b"\n" + "\n".join(part).encode("ascii") + b"\n"
    except (UnicodeEncodeError, TypeError):
        return False
    if data.translate(None, _OWNER_BYTES) or b"rpz-" in data or data.count(b"\n") != len(part) + 1:
        return False  # (a newline inside an owner would pass for two owners)
    shape = data.translate(_SHAPE)
    return (b".." not in shape and b"-." not in shape and b".-" not in shape and _LONG_LABEL not in shape
            and data.count(b"*") == data.count(b"\n*.") and not any(t in data for t in tails))


def origin_tails(origin: str) -> tuple[bytes, ...]:
    rel = origin.rstrip(".")
    return (f".{rel}\n".encode(), f"\n{rel}\n".encode(), b".canary.blocker\n", b"\ncanary.blocker\n")


def check_owners(owners: list[str], entries: ZoneEntries, origin: str, tails: tuple[bytes, ...] = ()) -> None:
    """Second line of defence behind order validation: every owner is a plain domain, or
    UnsafeOwnerError naming its orders. The careful per-owner check runs only when the cheap
    scan of `_check_chunk` fails. The length of a whole name under the origin is order
    validation's (`_check_fits`), and named-checkzone's."""
    if owners and _check_chunk(owners, origin, tails or origin_tails(origin)):
        return
    for owner in owners:
        why = owner_problem(owner, origin)
        if why is not None:
            entry = entries.get(owner)
            ids = ", ".join(entry.order_ids) if entry is not None and entry.order_ids else "unknown"
            raise UnsafeOwnerError(f"order {ids}: {why}: refusing to render the zone {origin} "
                                   "(the zones in place keep serving)")

