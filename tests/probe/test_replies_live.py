"""The stored resolver replies (tests/probe/data) still say what the real resolvers say.

One test: every case is asked again of Unbound, BIND, Knot Resolver and PowerDNS Recursor, and the
fresh reply must classify as the stored one for every check and signature mode (a silence must
still be a silence). With BLOCKER_RECAPTURE=1 the files are rewritten from the fresh replies first.
"""

from __future__ import annotations

import os

import pytest

from blocker.probe.classify import classify_reply
from tests.conftest_resolvers import RESOLVER_FIXTURES
from tests.probe.replies import CASES, MODES, capture, checks_for, load, path, reset_rules, signature
from tests.resolverlib import Resolver

pytestmark = pytest.mark.integration  # asks the real resolvers (started through request.getfixturevalue)


def test_stored_replies_classify_as_the_live_resolvers_answer(request: pytest.FixtureRequest) -> None:
    recapture = os.environ.get("BLOCKER_RECAPTURE") == "1"
    differ = []
    for fixture in RESOLVER_FIXTURES:
        resolver: Resolver = request.getfixturevalue(fixture)
        reset_rules(resolver)
        for case, (name, qtype, _) in CASES.items():
            fresh = capture(resolver.port, name, qtype)
            if recapture:
                path(fixture, case).unlink(missing_ok=True)
                if fresh is not None:
                    path(fixture, case).write_bytes(fresh)
            stored = load(fixture, case)
            if (fresh is None) != (stored is None):
                differ.append(f"{fixture} {case}: {'silent' if fresh is None else 'answers'} now, "
                              f"{'silent' if stored is None else 'answered'} in {path(fixture, case).name}")
                continue
            if fresh is None or stored is None:
                continue
            for check in checks_for(case):
                for mode in MODES:
                    now, then = (classify_reply(check, wire, signature(mode)) for wire in (fresh, stored))
                    if now != then:
                        differ.append(f"{fixture} {case} {check.expected}/{check.action} ({mode}): {now} now, "
                                      f"{then} stored")
    assert not differ, "\n".join(differ)
