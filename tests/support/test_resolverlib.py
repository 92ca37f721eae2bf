"""The real-resolver helpers work, and the shipped configs/resolvers/ snippets do what the
compatibility notes (notes/resolvers-compat.md) say, on Unbound, BIND, Knot Resolver and PowerDNS.

Every resolver test first publishes the base rules itself (session fixtures are shared, other
tests may have changed the zone files), through the same argv a publish hook would run.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import time
import uuid
from pathlib import Path

import dns.zone
import pytest

from tests.conftest_resolvers import RESOLVER_FIXTURES
from tests.resolverlib import (
    AUTH_ADDRESS,
    IDN_NAME,
    INFO_ADDRESS,
    TEST_ORIGINS,
    AuthServer,
    Resolver,
    ResolverError,
    RpzZone,
    ask,
    base_rules,
    canary_name,
    free_port,
    render_snippet,
    require_binary,
    rpz_zone,
    write_atomically,
    zone_text,
)

pytestmark = pytest.mark.integration  # the real resolvers, mostly through request.getfixturevalue

ORANGE, FREE = TEST_ORIGINS
_serials = itertools.count(int(time.time()))

# Every test name a rule may touch: flushed on each publish, so PowerDNS's packet cache cannot
# carry one test's answers into the next.
ALL_NAMES = sorted({name for origin in TEST_ORIGINS for name in base_rules(origin)} | {"added.example.gg"})

# What each resolver answers for each RPZ action (the compatibility table, checked).
# "redir2" is `CNAME info.operator.example.`: the answer's final address, or the rcode.
EXPECTED_ACTIONS = {
    "unbound": {"nodata": "NOERROR", "drop": "TIMEOUT", "redir": "192.0.2.80", "redir2": INFO_ADDRESS},
    "bind": {"nodata": "NOERROR", "drop": "TIMEOUT", "redir": "192.0.2.80", "redir2": INFO_ADDRESS},
    # kresd 5 answers rpz-drop with SERVFAIL, and ignores a CNAME to a real name (logged).
    "kresd": {"nodata": "NOERROR", "drop": "SERVFAIL", "redir": "192.0.2.80", "redir2": AUTH_ADDRESS},
    "pdns": {"nodata": "NOERROR", "drop": "TIMEOUT", "redir": "192.0.2.80", "redir2": INFO_ADDRESS},
}


@pytest.fixture(params=RESOLVER_FIXTURES)
def resolver(request: pytest.FixtureRequest) -> Resolver:
    """Each resolver in turn, with every zone back to its base rules (fresh serial)."""
    res: Resolver = request.getfixturevalue(request.param)
    for origin in TEST_ORIGINS:
        publish(res, origin, base_rules(origin))
    return res


def publish(res: Resolver, origin: str, rules: dict[str, str]) -> int:
    """Write the zone, then run the resolver's own reload (and flush) argv, as blocker would."""
    serial = next(_serials)
    write_atomically(res.zone(origin).path, rpz_zone(origin, rules, serial))
    run(res.reload_command(origin))
    flush = res.flush_command(ALL_NAMES)
    if flush:
        run(flush)
    return serial


def run(argv: list[str]) -> None:
    assert all(isinstance(arg, str) for arg in argv), argv
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{argv[:3]}... exited {done.returncode}: {done.stdout}{done.stderr}"


def random_label() -> str:
    return "r" + uuid.uuid4().hex[:10]


# ------------------------------------------------------------------------------------------
# Helpers that need no daemon


def test_render_snippet_repeats_zone_block_and_splits_sections(tmp_path: Path) -> None:
    (tmp_path / "x.conf").write_text(
        "// ${origin} stays as is in a comment\n"
        "// blocker:section options\n"
        "policy {\n"
        "    // blocker:zone-begin\n"
        '    zone "${origin}";\n'
        "    // blocker:zone-end\n"
        "} interval ${interval};\n"
        "// blocker:section top\n"
        "# blocker:zone-begin\n"
        'file "${zone_file}";\n'
        "# blocker:zone-end\n"
    )
    zones = [RpzZone.of("a.rpz", tmp_path / "a.rpz"), RpzZone.of("b.rpz.", tmp_path / "b.rpz")]
    parts = render_snippet("x.conf", zones, {"interval": 0}, directory=tmp_path)
    assert parts["main"] == "// ${origin} stays as is in a comment\n"
    assert 'zone "a.rpz.";\n    zone "b.rpz.";' in parts["options"]
    assert "} interval 0;" in parts["options"]
    assert parts["top"].count("file ") == 2 and str(tmp_path / "b.rpz") in parts["top"]
    with pytest.raises(KeyError):
        render_snippet("x.conf", zones, {}, directory=tmp_path)


@pytest.mark.parametrize("name", ["unbound.conf", "named.conf", "kresd.conf", "recursor.lua", "recursor.conf"])
def test_every_shipped_snippet_renders(name: str, tmp_path: Path) -> None:
    zones = [RpzZone.of(ORANGE, tmp_path / "orange.rpz")]
    values = {"min_update_interval": 5, "lua_config_file": "/etc/powerdns/recursor.lua"}
    text = "".join(render_snippet(name, zones, values).values())
    assert "$" not in "".join(line for line in text.splitlines() if not line.lstrip().startswith(("#", "//", "--")))


def test_rpz_zone_is_a_valid_zone_with_canary_last() -> None:
    text = rpz_zone(ORANGE, base_rules(ORANGE), serial=2026112901)
    zone = dns.zone.from_text(text, origin=ORANGE, relativize=False, check_origin=True)
    assert zone.get_soa().serial == 2026112901
    assert text.splitlines()[-1] == f'{canary_name(ORANGE).rstrip(".")} TXT "2026112901"'
    assert zone.get_rdataset(f"{canary_name(ORANGE)}{ORANGE}", "TXT") is not None
    assert IDN_NAME == "xn--bcher-kva.example.gg."


def test_missing_daemon_fails_with_the_package_to_install() -> None:
    with pytest.raises(ResolverError, match="apt-get install some-package"):
        require_binary("no-such-daemon-here", "some-package")


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))


# ------------------------------------------------------------------------------------------
# Process handling


def test_failed_start_raises_with_log_and_leaves_nothing(tmp_path: Path) -> None:
    broken = AuthServer(tmp_path / "broken", zones={"example.gg.": "this is not a zone\n"})
    with pytest.raises(ResolverError, match="auth") as info:
        broken.start(timeout=5)
    assert "example.gg" in str(info.value)          # the log tail names the failing zone
    assert not broken.running and broken.proc is None


def test_stop_reaps_the_daemon(tmp_path: Path) -> None:
    server = AuthServer(tmp_path / "auth", zones={"example.": zone_text("example.", ["www"])}).start()
    pid = server.proc.pid if server.proc else 0
    server.stop()
    time.sleep(0.05)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_auth_server_serves_the_test_zones(auth_server: AuthServer) -> None:
    assert ask(auth_server.port, "open.example.gg").addresses == {AUTH_ADDRESS}
    assert ask(auth_server.port, f"{random_label()}.blocked.example.gg").addresses == {AUTH_ADDRESS}
    assert ask(auth_server.port, IDN_NAME).addresses == {AUTH_ADDRESS}
    assert ask(auth_server.port, "info.operator.example").addresses == {INFO_ADDRESS}
    reply = ask(auth_server.port, "nosuch.example.gg")
    assert (reply.rcode, reply.aa, reply.authority_soa) == ("NXDOMAIN", True, "example.gg.")


# ------------------------------------------------------------------------------------------
# Each resolver, through its shipped snippet


def test_blocked_name_gets_nxdomain_with_the_resolver_signature(resolver: Resolver) -> None:
    reply = resolver.ask("blocked.example.gg")
    assert reply.rcode == "NXDOMAIN", reply
    assert resolver.signature.matches(reply, ORANGE), reply
    real = resolver.ask(f"{random_label()}.example.gg")      # a name that really does not exist
    assert (real.rcode, real.authority_soa) == ("NXDOMAIN", "example.gg."), real
    assert not resolver.signature.matches(real, ORANGE)


def test_unblocked_sibling_resolves_through_the_auth_server(resolver: Resolver) -> None:
    assert resolver.ask("open.example.gg").addresses == {AUTH_ADDRESS}
    assert resolver.ask("wild.example.gg").addresses == {AUTH_ADDRESS}     # only *.wild is blocked


def test_wildcard_rule_blocks_random_subdomains(resolver: Resolver) -> None:
    for parent in ("blocked.example.gg", "wild.example.gg"):
        reply = resolver.ask(f"{random_label()}.{parent}")
        assert reply.rcode == "NXDOMAIN" and resolver.signature.matches(reply, ORANGE), reply
    assert resolver.ask(f"{random_label()}.open.example.gg").addresses == {AUTH_ADDRESS}


def test_idn_name_blocked_by_its_a_label(resolver: Resolver) -> None:
    assert resolver.ask(IDN_NAME).rcode == "NXDOMAIN"


def test_second_operator_zone_applies_too(resolver: Resolver) -> None:
    reply = resolver.ask(f"{random_label()}.late.example.gg")
    assert reply.rcode == "NXDOMAIN" and resolver.signature.matches(reply, FREE), reply


def test_actions_match_the_compatibility_table(resolver: Resolver) -> None:
    expected = EXPECTED_ACTIONS[resolver.name]
    nodata = resolver.ask("nodata.example.gg")
    assert (nodata.rcode, nodata.answer) == (expected["nodata"], ()), nodata
    assert resolver.ask("drop.example.gg", timeout=0.5).rcode == expected["drop"]
    assert resolver.ask("redir.example.gg").addresses == {expected["redir"]}
    assert resolver.ask("redir.example.gg", "AAAA").answer == ()      # A-only local data: NODATA
    assert resolver.ask("redir2.example.gg").addresses == {expected["redir2"]}


def test_reload_argv_blocks_and_lifts_at_once(resolver: Resolver) -> None:
    # "added" is asked first, so a resolver that answers from its cache after a reload fails.
    assert resolver.ask("added.example.gg").addresses == {AUTH_ADDRESS}
    assert resolver.ask("www.added.example.gg").addresses == {AUTH_ADDRESS}
    rules = base_rules(ORANGE)
    del rules["blocked.example.gg"], rules["*.blocked.example.gg"]
    rules |= {"added.example.gg": "CNAME .", "*.added.example.gg": "CNAME ."}
    start = time.monotonic()
    publish(resolver, ORANGE, rules)
    resolver.wait_rcode("added.example.gg", "NXDOMAIN", timeout=3)
    resolver.wait_rcode("www.added.example.gg", "NXDOMAIN", timeout=3)
    resolver.wait_rcode("blocked.example.gg", "NOERROR", timeout=3)
    assert time.monotonic() - start < 2.0
    assert resolver.ask("blocked.example.gg").addresses == {AUTH_ADDRESS}
    publish(resolver, ORANGE, base_rules(ORANGE))
    resolver.wait_rcode("added.example.gg", "NOERROR", timeout=3)
    resolver.wait_rcode("blocked.example.gg", "NXDOMAIN", timeout=3)


def test_serial_in_force_is_readable(resolver: Resolver) -> None:
    serial = publish(resolver, ORANGE, base_rules(ORANGE))
    resolver.wait_for(lambda r: r.canary_serial(canary_name(ORANGE)) == serial, timeout=3,
                      what=f"canary serial {serial}")
    served = resolver.served_serial(ORANGE)
    assert served == (None if resolver.name == "pdns" else serial)
