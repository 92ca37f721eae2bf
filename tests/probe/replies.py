"""Real resolver replies kept as files (tests/probe/data/<resolver>-<case>.bin), for the
classification tests that need no daemon (test_classify.py); test_replies_live.py asks the four
resolvers again and checks that their answers today classify exactly as the files do.

A file holds the wire of the reply of the session resolver (resolverlib's base rules, forwarding
the rest to the test authoritative server) to an EDNS query with RD, as the engine sends it.
`BLOCKER_RECAPTURE=1 pytest tests/probe/test_replies_live.py` rewrites them.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterable
from pathlib import Path

import dns.message

from blocker.probe.model import Check, Signature
from tests.resolverlib import INFO_HOST, TEST_ORIGINS, Resolver, base_rules

DATA = Path(__file__).parent / "data"
ORIGIN = TEST_ORIGINS[0]
REDIRECT_A = "192.0.2.80"            # base_rules: redir.example.gg A 192.0.2.80
MODES = ("rpz", "empty", "any")
# What each resolver's blocked answers look like (see resolverlib's BlockSignature per class).
RESOLVER_MODES = {"unbound": "empty", "bind": "rpz", "kresd": "any", "pdns_recursor": "empty"}

# case -> (qname, qtype, what the base rules make of it)
CASES: dict[str, tuple[str, str, str]] = {
    "blocked": ("blocked.example.gg", "A", "nxdomain"),      # a blocked name (RPZ CNAME .)
    "nodata": ("nodata.example.gg", "A", "nodata"),          # CNAME *.
    "drop": ("drop.example.gg", "A", "drop"),                # rpz-drop.: silence (kresd: SERVFAIL + EDE)
    "redirect": ("redir.example.gg", "A", "redirect"),       # local data A 192.0.2.80
    "redirect-cname": ("redir2.example.gg", "A", "redirect"),  # CNAME to the information host
    "other-zone": ("late.example.gg", "A", "nxdomain"),      # blocked by the second operator's zone
    "open": ("open.example.gg", "A", ""),                    # not blocked (a lifted name, a control)
    "nxdomain": ("absent.example.gg", "A", ""),              # a natural NXDOMAIN
    "nodata-natural": ("www.example.gg", "AAAA", ""),        # a natural NODATA
}


def signature(mode: str, origin: str = ORIGIN) -> Signature:
    return Signature(origin, mode, redirect_a=(REDIRECT_A,), redirect_cname=INFO_HOST)


def checks_for(case: str) -> list[Check]:
    """Every way a probe may ask the case's name: as each action's block, and as a lift."""
    name, qtype, _ = CASES[case]
    return [Check(name, "blocked", action, qtype=qtype) for action in ("nxdomain", "nodata", "drop", "redirect")] \
        + [Check(name, "resolves", None, qtype=qtype)]


def path(resolver: str, case: str) -> Path:
    return DATA / f"{resolver}-{case}.bin"


def load(resolver: str, case: str) -> bytes | None:
    """The stored reply; None when the resolver stays silent (its drop)."""
    file = path(resolver, case)
    return file.read_bytes() if file.exists() else None


def capture(port: int, name: str, qtype: str = "A", timeout: float = 1.0) -> bytes | None:
    """The raw reply of the resolver on 127.0.0.1:port over UDP; None when it stays silent."""
    query = dns.message.make_query(name, qtype, use_edns=0, payload=1232).to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        sock.send(query)
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


_serials = itertools.count(int(time.time()))


def reset_rules(resolver: Resolver, names: Iterable[str] = ()) -> None:
    """Base rules in every zone with a fresh serial (other tests may have changed the files);
    names: the ones PowerDNS must flush from its cache."""
    changed = set(names) | {name for name, _, _ in CASES.values()}
    for origin in TEST_ORIGINS:
        resolver.publish(origin, base_rules(origin), next(_serials), changed=changed)
