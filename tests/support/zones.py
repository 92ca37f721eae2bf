"""Published RPZ zones read back as text, and the Unbound fixture's zone refreshed, for any test."""

from __future__ import annotations

import re
from pathlib import Path

from tests.resolverlib import TEST_ORIGINS, Unbound, canary_name

ORANGE = TEST_ORIGINS[0]


def zone_owners(path: Path) -> set[str]:
    """Owner names of the policy records in a published zone (not the SOA, NS or serial canary)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return set()
    return {line.split()[0] for line in text.splitlines()
            if line and line[0] not in ";$@" and line.split()[1] != "TXT"}


def zone_serial(path: Path) -> int | None:
    """The SOA serial of a published zone; None when there is no zone (yet) or no SOA in it."""
    try:
        found = re.search(r"^@(?:\s+\d+)?\s+IN\s+SOA\s+\S+\s+\S+\s+(\d+)\s", path.read_text(), re.M)
    except FileNotFoundError:
        return None
    return int(found.group(1)) if found else None


def serial_ge(a: int, b: int) -> bool:
    """RFC 1982: a is b or after it."""
    return a == b or 0 < (a - b) % 2**32 < 2**31


def unbound_publish_fresh(unbound: Unbound, rules: dict[str, str]) -> None:
    """Publish `rules` in the fixture's orange zone with a serial above the one it serves now."""
    serial = (zone_serial(unbound.zone(ORANGE).path) or 0) + 1
    unbound.publish(ORANGE, rules, serial)
    unbound.wait_for(lambda r: r.canary_serial(canary_name(ORANGE)) == serial, what=f"serial {serial}")
