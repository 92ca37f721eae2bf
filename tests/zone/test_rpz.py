"""RPZ zones: rendering contract, serials, canonical order, and render/plan/apply on files.

Pure tests build orders with `parse_order` and render them with `blocker.zone.render`; CLI tests run
`blocker.cli.main.main` in-process on temp folders (a few run the installed `blocker` script), so
the exit codes and the files left behind are the ones a user gets.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dns.name
import dns.rdatatype
import dns.zone
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocker import files
from blocker.config.load import load_config
from blocker.config.model import Config
from blocker.orders.legaltime import parse_instant, zone
from blocker.orders.model import Order
from blocker.orders.parse import parse_order
from blocker.policy import PolicyCache, desired
from blocker.publish import hooks
from blocker.publish import writer as publish
from blocker.publish.writer import PublishError, write_zone
from blocker.record.state import State
from blocker.zone.read import read_entries, read_meta, structural_check
from blocker.zone.render import canary_owner, render_body
from blocker.zone.serial import SERIAL_MOD, next_serial, serial_gt
from tests.clock import run_at
from tests.support.cli import blocker as run_bin
from tests.support.properties import examples

pytestmark = pytest.mark.integration  # about half the tests here run blocker or named-checkzone

NAMED_CHECKZONE = shutil.which("named-checkzone") or shutil.which("named-checkzone", path="/usr/sbin:/usr/bin")

CONFIG_YAML = """\
timezone: Europe/Paris
operators:
  orange:
    redirect: {a: [192.0.2.10], aaaa: ["2001:db8::10"]}
  free:
    redirect: {cname: info.operator.example}
  quiet:                    # named by no order: its zone must still be valid, and empty
    redirect: {a: [192.0.2.99]}
"""

# Instants (Europe/Paris unless an offset is given), far enough ahead of the wall clock that an
# order "starts" after any real `apply` (see test_apply_records_the_publish_instant_of_the_plan).
JAN = "2030-01-01"
FEB = "2030-02-01"
T_BEFORE = "2029-12-15T12:00:00+01:00"
T_FEB = "2030-02-10T12:00:00+01:00"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    path = tmp_path_factory.mktemp("cfg") / "blocker.yaml"
    path.write_text(CONFIG_YAML)
    return load_config(path)


def order_yaml(order_id: str, targets: Iterable[str], *, action: str | None = None,
               operators: Iterable[str] = ("orange", "free"), start: str = JAN, end: str | None = "2030-12-31",
               duration: str | None = None, lifted: str | None = None) -> str:
    lines = [
        f"id: {order_id}",
        "court: Tribunal judiciaire de Paris",
        f"case_number: RG {order_id}",
        "decision_date: 2019-12-01",
        f"operators: [{', '.join(operators)}]",
        f"start: '{start}'",
        f"duration: {duration}" if duration else f"end: '{end}'",
    ]
    if action:
        lines.append(f"action: {action}")
    if lifted:
        lines += ["lifted:", f"  at: '{lifted}'", "  reason: mainlevée"]
    lines.append("targets:")
    lines += [f"  - {t}" for t in targets]
    return "\n".join(lines) + "\n"


def make_order(config: Config, order_id: str, targets: Iterable[str], **kw: object) -> Order:
    result = parse_order(order_yaml(order_id, targets, **kw).encode(), f"{order_id}.yaml", config.order_rules)  # type: ignore[arg-type]
    assert isinstance(result, Order), [str(e) for e in result]
    return result


def render(config: Config, orders: Iterable[Order], operator: str = "orange", when: str = T_FEB,
           serial: int = 2030010101) -> str:
    zone = render_body(desired(list(orders), operator, at(when)), config.operators[operator])
    return zone.text(serial, config).decode("ascii")


def body(text: str) -> list[str]:
    """The rule lines (no header, no directives, no canary)."""
    return [ln for ln in text.splitlines() if ln and ln[0] not in ";$@" and " TXT " not in ln]


def rules(text: str) -> dict[str, list[str]]:
    """owner -> ["CNAME .", ...] from the rule lines, comments stripped."""
    out: dict[str, list[str]] = {}
    for line in body(text):
        record = line.partition(" ; ")[0]
        owner, rest = record.split(" ", 1)
        out.setdefault(owner, []).append(rest)
    return out


def comments(text: str) -> dict[str, str]:
    return {ln.split(" ", 1)[0]: ln.partition(" ; ")[2] for ln in body(text)}


def parse_zone(text: str, origin: str) -> dns.zone.Zone:
    return dns.zone.from_text(text, origin=origin, relativize=False, allow_include=False, check_origin=True)


def named_checkzone(text: str, origin: str, tmp_path: Path) -> None:
    assert NAMED_CHECKZONE, "named-checkzone not found: install the Debian package bind9-utils (make debs)"
    path = tmp_path / f"check-{abs(hash(text))}.rpz"
    path.write_text(text)
    proc = subprocess.run([NAMED_CHECKZONE, "-k", "fail", "-n", "fail", origin, str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------
# Record templates, one per action


@pytest.mark.parametrize(("action", "operator", "expected"), [
    ("nxdomain", "orange", ["CNAME ."]),
    ("nodata", "orange", ["CNAME *."]),
    ("drop", "orange", ["CNAME rpz-drop."]),
    ("redirect", "orange", ["A 192.0.2.10", "AAAA 2001:db8::10"]),
    ("redirect", "free", ["CNAME info.operator.example."]),
])
def test_each_action_renders_its_fixed_record_template(config, action, operator, expected):
    o = make_order(config, "a", ["site.example"], action=action)
    text = render(config, [o], operator)
    assert rules(text) == {"site.example": expected, "*.site.example": expected}
    # The resolvers read the rdata as absolute names: check what dnspython makes of them.
    origin = config.operators[operator].origin
    zone = parse_zone(text, origin)
    node = zone.find_node(f"site.example.{origin}")
    got = sorted(f"{dns.rdatatype.to_text(rds.rdtype)} {rd.to_text()}" for rds in node for rd in rds)
    assert got == sorted(expected)


def test_subdomains_give_a_wildcard_twin_and_apex_only_targets_do_not(config):
    o = make_order(config, "a", [
        "all.example",
        "{domain: apex-only.example, subdomains: false}",
        "{url: 'https://cdn.files.example.gg/d/8f3e/leak.csv?x=1'}",
    ])
    owners = list(rules(render(config, [o])))
    assert "*.all.example" in owners and "all.example" in owners
    assert "apex-only.example" in owners and "*.apex-only.example" not in owners
    assert "cdn.files.example.gg" in owners and "*.cdn.files.example.gg" not in owners  # url-escalated
    assert len(owners) == 4


def test_url_target_and_domain_target_on_one_host_render_one_rule_per_owner(config):
    o = make_order(config, "a", ["files.example.gg", "{url: 'https://files.example.gg/d/leak.csv'}"])
    assert rules(render(config, [o])) == {"files.example.gg": ["CNAME ."], "*.files.example.gg": ["CNAME ."]}


def test_a_name_in_several_orders_appears_once_and_names_every_order(config):
    orders = [
        make_order(config, "zeta-2026", ["shared.example", "only-zeta.example"]),
        make_order(config, "alpha-2026", ["shared.example"]),
        make_order(config, "mid-2026", ["{domain: shared.example, subdomains: false}"]),
    ]
    text = render(config, orders)
    lines = body(text)
    assert sum(1 for ln in lines if ln.startswith("shared.example ")) == 1
    assert sum(1 for ln in lines if ln.startswith("*.shared.example ")) == 1
    assert comments(text)["shared.example"] == "alpha-2026,mid-2026,zeta-2026"
    assert comments(text)["*.shared.example"] == "alpha-2026,zeta-2026"
    assert comments(text)["only-zeta.example"] == "zeta-2026"


STRONGEST_FIRST = ["nxdomain", "nodata", "drop", "redirect"]
TEMPLATE = {"nxdomain": ["CNAME ."], "nodata": ["CNAME *."], "drop": ["CNAME rpz-drop."],
            "redirect": ["A 192.0.2.10", "AAAA 2001:db8::10"]}


@pytest.mark.parametrize(("stronger", "weaker"), list(itertools.combinations(STRONGEST_FIRST, 2)))
def test_strongest_action_wins_whichever_order_says_it(config, stronger, weaker):
    for ids in (("a", "b"), ("b", "a")):
        orders = [make_order(config, ids[0], ["both.example"], action=stronger),
                  make_order(config, ids[1], ["both.example"], action=weaker)]
        got = rules(render(config, orders))
        assert got["both.example"] == TEMPLATE[stronger]
        assert got["*.both.example"] == TEMPLATE[stronger]
        assert comments(render(config, orders))["both.example"] == "a,b"


def test_a_stronger_wildcard_covers_a_weaker_exact_name(config):
    orders = [make_order(config, "wide", ["example.gg"], action="nxdomain"),
              make_order(config, "narrow", ["www.example.gg"], action="redirect")]
    got = rules(render(config, orders))
    assert got["www.example.gg"] == ["CNAME ."]    # an RPZ exact rule would otherwise shadow *.example.gg
    assert got["*.www.example.gg"] == ["CNAME ."]


def test_idn_target_reaches_the_zone_as_its_a_label(config):
    o = make_order(config, "a", ["bücher.example.gg", "{domain: 'ÉCOLE.example', subdomains: false}"])
    owners = set(rules(render(config, [o])))
    assert owners == {"xn--bcher-kva.example.gg", "*.xn--bcher-kva.example.gg", "xn--cole-9oa.example"}


def test_empty_operator_gets_a_valid_empty_zone(config, tmp_path):
    orders = [make_order(config, "a", ["site.example"])]           # orange and free, not quiet
    text = render(config, orders, "quiet", serial=7)
    assert body(text) == []
    origin = config.operators["quiet"].origin
    zone = parse_zone(text, origin)
    assert zone.get_soa().serial == 7
    assert zone.get_rdataset(origin, "NS") is not None
    names = {n.to_text() for n in zone.nodes}
    assert names == {origin, f"{canary_owner('quiet')}.{origin}"}
    assert structural_check(text.encode(), origin) == []
    named_checkzone(text, origin, tmp_path)
    # Same for an operator whose orders are all over (pending or lifted): nothing stays behind.
    assert body(render(config, orders, "orange", when=T_BEFORE)) == []


def test_canary_is_the_last_line_and_carries_the_serial(config):
    text = render(config, [make_order(config, "a", ["site.example"])], serial=123456)
    assert text.endswith(f'{canary_owner("orange")} TXT "123456"\n')
    assert text.count(" TXT ") == 1
    zone = parse_zone(text, "orange.rpz.blocker.")
    txt = zone.get_rdataset(f"{canary_owner('orange')}.orange.rpz.blocker.", "TXT")
    assert [r.to_text() for r in txt] == ['"123456"']


def _rich_orders(config: Config) -> list[Order]:
    return [
        make_order(config, "nx", ["blocked.example.gg", "bücher.example.gg", "{url: 'https://u.example/p'}"]),
        make_order(config, "nd", ["nodata.example.gg", "{domain: solo.example, subdomains: false}"],
                   action="nodata"),
        make_order(config, "dr", ["drop.example.gg", "blocked.example.gg"], action="drop"),
        make_order(config, "rd", ["redir.example.gg", "a-b.example", "a.example", "x.a.example"],
                   action="redirect"),
    ]


@pytest.mark.parametrize("operator", ["orange", "free", "quiet"])
def test_every_rendered_zone_round_trips_through_dnspython_and_named_checkzone(config, tmp_path, operator):
    orders = _rich_orders(config)
    text = render(config, orders, operator, serial=4_000_000_000)
    origin = config.operators[operator].origin
    zone = parse_zone(text, origin)
    soa = zone.get_soa()
    assert (soa.serial, soa.minimum) == (4_000_000_000, config.soa.minimum)
    parsed: dict[str, list[str]] = {}
    for name, ttl, rdata in zone.iterate_rdatas():
        assert ttl == config.rpz_ttl
        owner = name.to_text()
        if rdata.rdtype in (dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.TXT):
            continue
        assert owner.endswith("." + origin), owner
        parsed.setdefault(owner.removesuffix("." + origin), []).append(
            f"{dns.rdatatype.to_text(rdata.rdtype)} {rdata.to_text()}")
    assert {k: sorted(v) for k, v in parsed.items()} == {k: sorted(v) for k, v in rules(text).items()}
    named_checkzone(text, origin, tmp_path)
    # What plan/apply read back from the file is what was rendered.
    path = tmp_path / f"{operator}.rpz"
    path.write_text(text)
    assert read_entries(path) == desired(orders, operator, at(T_FEB)).entries
    meta = read_meta(path)
    assert meta is not None and meta.serial == 4_000_000_000
    assert meta.checksum == render_body(desired(orders, operator, at(T_FEB)), config.operators[operator]).checksum
    assert structural_check(text.encode(), origin) == []


def test_zone_has_no_include_and_refuses_one(config):
    text = render(config, _rich_orders(config))
    assert "$INCLUDE" not in text and "$GENERATE" not in text
    with pytest.raises(dns.exception.DNSException):
        parse_zone(text + "$INCLUDE /etc/passwd\n", "orange.rpz.blocker.")


# ------------------------------------------------------------------------------------------
# Canonical order


_LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,5}[a-z0-9])?", fullmatch=True).filter(
    lambda s: not s.startswith("xn--") and "--" not in s)
_NAME = st.builds(
    lambda labels, suffix: ".".join([*labels, suffix]),
    st.lists(st.one_of(_LABEL, st.sampled_from(["bücher", "é", "a", "b", "a-b", "a0", "0"])),
             min_size=1, max_size=3),
    st.sampled_from(["example", "example.gg", "gg.example", "example.com"]),
)


def _owners_in_file(text: str) -> list[str]:
    seen: list[str] = []
    for line in body(text):
        owner = line.split(" ", 1)[0]
        if not seen or seen[-1] != owner:
            assert owner not in seen, f"{owner} appears in two places"
            seen.append(owner)
    return seen


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_NAME, st.booleans(), st.sampled_from(STRONGEST_FIRST)), min_size=1, max_size=25))
def test_rendered_owner_order_is_dnspython_canonical_order(config, targets):
    orders = []
    for i, action in enumerate(STRONGEST_FIRST):
        mine = [f"{{domain: '{name}', subdomains: {str(sub).lower()}}}" for name, sub, act in targets if act == action]
        if mine:
            orders.append(make_order(config, f"o{i}", mine, action=action))
    owners = _owners_in_file(render(config, orders))
    as_names = [dns.name.from_text(o) for o in owners]
    assert as_names == sorted(as_names)
    assert all(a < b for a, b in itertools.pairwise(as_names))   # strictly: each name once


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_NAME, min_size=1, max_size=20, unique=True), st.lists(_NAME, min_size=1, max_size=20, unique=True))
def test_a_warm_re_render_equals_a_cold_one(config, first, second):
    """The daemon patches the previous canonical order when few names change: same bytes as a full sort."""
    def orders(names: list[str]) -> list[Order]:
        return [make_order(config, "one", [f"'{n}'" for n in names])]

    cache = PolicyCache()
    desired(orders(first), "orange", at(T_FEB), cache)
    warm = render_body(desired(orders(second), "orange", at(T_FEB), cache), config.operators["orange"])
    cold = render_body(desired(orders(second), "orange", at(T_FEB)), config.operators["orange"])
    assert warm.body == cold.body


def test_canonical_order_examples(config):
    o = make_order(config, "a", ["'b.example'", "'a.example'", "'z.a.example'", "'a-b.example'", "'a0.example'",
                                 "'example.gg'", "'0.example'"])
    assert _owners_in_file(render(config, [o])) == [
        "0.example", "*.0.example",
        "a.example", "*.a.example", "z.a.example", "*.z.a.example",
        "a-b.example", "*.a-b.example", "a0.example", "*.a0.example",
        "b.example", "*.b.example",
        "example.gg", "*.example.gg",
    ]


# ------------------------------------------------------------------------------------------
# Serials (RFC 1982)

SERIALS = st.integers(min_value=0, max_value=SERIAL_MOD - 1)


@given(SERIALS, st.integers(min_value=0, max_value=2**40))
def test_next_serial_is_always_after_the_previous_and_within_32_bits(previous, scheme):
    serial = next_serial(previous, scheme)
    assert 0 <= serial < SERIAL_MOD
    assert serial_gt(serial, previous)
    assert not serial_gt(previous, serial)
    # max(previous + 1, scheme): the scheme value when it is ahead (of previous too: a distance of
    # exactly 2^31 is undefined under RFC 1982), else one more than before.
    ahead = scheme % SERIAL_MOD
    bumped = (previous + 1) % SERIAL_MOD
    expected = ahead if serial_gt(ahead, bumped) and serial_gt(ahead, previous) else bumped
    assert serial == expected


@given(SERIALS, st.lists(st.integers(min_value=0, max_value=SERIAL_MOD - 1), min_size=1, max_size=30))
def test_a_run_of_publishes_never_goes_back_whatever_the_clock_says(start, schemes):
    serial = start
    for scheme in schemes:
        nxt = next_serial(serial, scheme)
        assert serial_gt(nxt, serial)
        serial = nxt


def test_serial_wraps_at_2_pow_32():
    assert next_serial(SERIAL_MOD - 1, SERIAL_MOD - 1) == 0         # clock unchanged: 2^32-1 + 1 wraps to 0
    assert next_serial(SERIAL_MOD - 1, 5) == 5                      # 5 is after 2^32-1 in RFC 1982
    assert serial_gt(0, SERIAL_MOD - 1) and serial_gt(5, SERIAL_MOD - 1)
    assert next_serial(SERIAL_MOD - 2, SERIAL_MOD + 10) == 10       # the scheme value is taken mod 2^32


def test_a_clock_set_back_still_increments():
    assert next_serial(2_000_000_000, 1_900_000_000) == 2_000_000_001
    assert next_serial(2_000_000_000, 2_000_000_000) == 2_000_000_001
    assert next_serial(2_000_000_000, 2_100_000_000) == 2_100_000_000


def test_first_serial_is_the_scheme_value_and_never_zero():
    assert next_serial(None, 1_893_452_400) == 1_893_452_400
    assert next_serial(None, 0) == 1
    assert next_serial(None, SERIAL_MOD) == 1


@given(SERIALS, SERIALS)
def test_serial_gt_is_antisymmetric(a, b):
    assert not (serial_gt(a, b) and serial_gt(b, a))
    if a == b:
        assert not serial_gt(a, b)


# ------------------------------------------------------------------------------------------
# Reading zones back, structural check, atomic write


def test_read_meta_of_a_zone_blocker_did_not_write(tmp_path):
    """A zone another writer left in the folder (SOA with TTL and class): its serial still counts,
    so the first render after it does not go backwards."""
    path = tmp_path / "orange.rpz"
    path.write_text("$ORIGIN orange.rpz.blocker.\n$TTL 60\n"
                    "@ 60 IN SOA localhost. hostmaster.localhost. 1796000000 60 60 604800 30\n"
                    "@ 60 IN NS localhost.\nold.example CNAME .\n")
    meta = read_meta(path)
    assert meta is not None and (meta.serial, meta.checksum) == (1796000000, None)
    assert read_meta(tmp_path / "missing.rpz") is None
    assert read_entries(path) == {"old.example": ("nxdomain", ())}


def test_structural_check_catches_partial_and_tampered_zones(config):
    text = render(config, _rich_orders(config)).encode()
    origin = "orange.rpz.blocker."
    assert structural_check(text, origin) == []
    assert "truncated (no final newline)" in structural_check(text[:-5], origin)
    cut = text[: text.rindex(b"\n", 0, len(text) - 1) + 1]              # the canary line is gone
    assert structural_check(cut, origin)
    tampered = text.replace(b"nodata.example.gg CNAME *.", b"nodata.example.gg CNAME .")
    assert "body does not match its content-sha256" in structural_check(tampered, origin)
    assert "missing $ORIGIN" in structural_check(text, "free.rpz.blocker.")
    assert structural_check(b"", origin)


def test_write_zone_is_atomic_when_the_check_fails(config, tmp_path):
    path = tmp_path / "orange.rpz"
    good = render(config, _rich_orders(config), serial=10).encode()
    write_zone(path, good, "orange.rpz.blocker.", "structural")
    with pytest.raises(PublishError, match="zone check failed"):
        write_zone(path, good[:-3], "orange.rpz.blocker.", "structural")
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orange.rpz"]      # no temp file left


def test_write_zone_is_atomic_when_the_rename_fails(config, tmp_path, monkeypatch):
    path = tmp_path / "orange.rpz"
    good = render(config, _rich_orders(config), serial=10).encode()
    write_zone(path, good, "orange.rpz.blocker.", "structural")

    def refuse(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "rename", refuse)
    with pytest.raises(PublishError, match="No space left"):
        write_zone(path, render(config, [], serial=11).encode(), "orange.rpz.blocker.", "structural")
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orange.rpz"]


def test_write_zone_reports_an_unwritable_folder_as_a_publish_error(tmp_path, monkeypatch):
    """Root ignores permission bits: the failure is simulated where the temp file is created."""
    def refuse(*_: object, **__: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files, "create_temp", refuse)
    with pytest.raises(PublishError, match="Permission denied"):
        write_zone(tmp_path / "orange.rpz", b"x\n", "orange.rpz.blocker.", "none")


def test_write_zone_runs_named_checkzone_and_keeps_the_old_zone_on_failure(config, tmp_path, monkeypatch):
    path = tmp_path / "orange.rpz"
    good = render(config, _rich_orders(config), serial=10).encode()
    write_zone(path, good, "orange.rpz.blocker.", "named-checkzone")
    # Structurally fine, but not a zone: the NS target has an empty label.
    bad = good.replace(b"@ IN NS localhost.", b"@ IN NS bad..name.")
    assert structural_check(bad, "orange.rpz.blocker.") == []
    monkeypatch.setattr(publish, "_CHECKED", {})
    with pytest.raises(PublishError, match="zone check failed"):
        write_zone(path, bad, "orange.rpz.blocker.", "named-checkzone")
    assert path.read_bytes() == good


def test_a_structural_check_does_not_stand_in_for_named_checkzone_later(config, tmp_path, monkeypatch):
    """The per-process cache of checked bodies must only remember what named-checkzone accepted."""
    monkeypatch.setattr(publish, "_CHECKED", {})
    zone = render_body(desired(_rich_orders(config), "orange", at(T_FEB)), config.operators["orange"])
    good = zone.text(10, config)
    write_zone(tmp_path / "a.rpz", good, "orange.rpz.blocker.", "structural", zone.checksum)
    bad = good.replace(b"@ IN NS localhost.", b"@ IN NS bad..name.")
    with pytest.raises(PublishError, match="zone check failed"):
        write_zone(tmp_path / "b.rpz", bad, "orange.rpz.blocker.", "named-checkzone", zone.checksum)


# ------------------------------------------------------------------------------------------
# The CLI on files


@dataclass
class Work:
    root: Path
    config_path: Path

    @property
    def orders(self) -> Path:
        return self.root / "orders"

    @property
    def zones(self) -> Path:
        return self.root / "zones"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def write(self, order_id: str, targets: Iterable[str], **kw: object) -> Path:
        path = self.orders / f"{order_id}.yaml"
        path.write_text(order_yaml(order_id, targets, **kw), encoding="utf-8")  # type: ignore[arg-type]
        return path

    def remove(self, order_id: str) -> None:
        (self.orders / f"{order_id}.yaml").unlink()

    def cli(self, command: str, *args: str) -> tuple[int, str, str]:
        argv = ["--config", str(self.config_path), command, "--orders", str(self.orders)]
        if command in ("render", "plan", "apply"):
            argv += ["--out", str(self.zones)]
        if command in ("plan", "apply"):
            argv += ["--state-dir", str(self.state)]
        # A plan or apply --at T is run as if the clock read T (tests/clock.py): these tests are about
        # what apply publishes at an instant; test_publish_guards.py is about --at and the clock.
        instant = None
        if command in ("plan", "apply") and "--at" in args:
            instant = parse_instant(args[args.index("--at") + 1], zone("Europe/Paris"))[0]
        return run_at(instant, [*argv, *args])

    def plan(self, when: str) -> tuple[int, dict]:
        code, out, err = self.cli("plan", "--at", when, "--json")
        assert code in (0, 3), out + err
        return code, json.loads(out)

    def zone(self, operator: str = "orange") -> bytes:
        return (self.zones / f"{operator}.rpz").read_bytes()

    def force(self, when: str, *args: str) -> tuple[int, str, str]:
        """`apply --force`, the way it is meant to be run: with the checksum `plan --force` showed."""
        code, out, err = self.cli("plan", "--at", when, "--force", "--json", *args)
        assert code in (0, 3), out + err
        return self.cli("apply", "--at", when, "--force", "--checksum", json.loads(out)["checksum"], *args)


def make_work(root: Path, extra_config: str = "") -> Work:
    root.mkdir(parents=True, exist_ok=True)
    (root / "orders").mkdir()
    cfg = root / "blocker.yaml"
    cfg.write_text(CONFIG_YAML + extra_config)
    return Work(root, cfg)


@pytest.fixture
def work(tmp_path: Path) -> Work:
    return make_work(tmp_path / "w")


def changes(plan: dict, operator: str = "orange") -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (kind, reasons) over added, removed and changed entries."""
    (op,) = [p for p in plan["operators"] if p["operator"] == operator]
    out = {}
    for key in ("added", "removed", "changed_entries"):
        for c in op[key]:
            out[c["name"]] = (c["change"], tuple(c["reasons"]))
    return out


def test_render_is_deterministic_across_folders_and_file_names(tmp_path):
    a, b = make_work(tmp_path / "a"), make_work(tmp_path / "b")
    a.write("alpha", ["one.example", "bücher.example.gg"], action="nodata")
    a.write("beta", ["one.example", "two.example"])
    # Same orders under other file names, written in the other order.
    (b.orders / "zz-beta.yml").write_text((a.orders / "beta.yaml").read_text())
    (b.orders / "aa-alpha.yaml").write_text((a.orders / "alpha.yaml").read_text())
    for w in (a, b):
        proc = run_bin("--config", str(w.config_path), "render", "--orders", str(w.orders), "--out", str(w.zones),
                       "--at", T_FEB, cwd=w.root)
        assert proc.returncode == 0, proc.stderr
    for op in ("orange", "free", "quiet"):
        assert a.zone(op) == b.zone(op)
    assert sorted(p.name for p in a.zones.iterdir()) == ["free.rpz", "orange.rpz", "quiet.rpz"]


def test_unchanged_state_keeps_its_serial_and_bytes_and_a_change_bumps_it(work):
    work.write("now", ["one.example"], start=JAN)
    work.write("later", ["two.example"], start="2030-03-01")
    assert work.cli("render", "--at", T_FEB)[0] == 0
    first, meta = work.zone(), read_meta(work.zones / "orange.rpz")
    assert meta is not None
    assert meta.serial == int(at("2030-01-01T00:00:00+01:00").timestamp())   # the last transition
    code, out, _ = work.cli("render", "--at", "2030-02-20T08:00:00+01:00")   # same orders in force
    assert code == 0 and "unchanged" in out
    assert work.zone() == first
    assert work.cli("render", "--at", "2030-03-05")[0] == 0                  # "later" started
    meta2 = read_meta(work.zones / "orange.rpz")
    assert meta2 is not None and serial_gt(meta2.serial, meta.serial)
    assert meta2.serial == int(at("2030-03-01T00:00:00+01:00").timestamp())
    assert b"two.example CNAME ." in work.zone()


def test_render_with_the_clock_set_back_still_bumps_the_serial(work):
    work.write("now", ["one.example"], start=JAN, end="2030-06-30")
    assert work.cli("render", "--at", "2030-07-15")[0] == 0                    # after the lift: empty
    after = read_meta(work.zones / "orange.rpz")
    assert work.cli("render", "--at", T_FEB)[0] == 0                           # clock back: blocked again
    back = read_meta(work.zones / "orange.rpz")
    assert after is not None and back is not None
    assert back.serial == after.serial + 1


def test_render_continues_from_the_serial_of_a_foreign_zone_in_the_folder(work):
    work.zones.mkdir()
    (work.zones / "orange.rpz").write_text(
        "$ORIGIN orange.rpz.blocker.\n$TTL 60\n"
        "@ 60 IN SOA localhost. hostmaster.localhost. 2100000000 60 60 604800 30\n@ 60 IN NS localhost.\n")
    work.write("now", ["one.example"])
    assert work.cli("render", "--at", T_FEB)[0] == 0
    meta = read_meta(work.zones / "orange.rpz")
    assert meta is not None and meta.serial == 2100000001


def test_render_writes_every_operator_or_only_those_named(work):
    work.write("a", ["one.example"], operators=["orange"])
    code, _out, _ = work.cli("render", "--at", T_FEB, "--operator", "free")
    assert code == 0 and sorted(p.name for p in work.zones.iterdir()) == ["free.rpz"]
    assert body(work.zone("free").decode()) == []
    assert work.cli("render", "--at", T_FEB, "--operator", "nosuch")[0] == 2
    assert work.cli("render", "--at", T_FEB)[0] == 0
    assert sorted(p.name for p in work.zones.iterdir()) == ["free.rpz", "orange.rpz", "quiet.rpz"]


def test_render_fails_closed_on_an_invalid_order_file(work, tmp_path):
    work.write("good", ["one.example"])
    (work.orders / "bad.yaml").write_text(order_yaml("bad", ["gg"]))            # a public suffix
    proc = run_bin("--config", str(work.config_path), "render", "--orders", str(work.orders),
                   "--out", str(work.zones), "--at", T_FEB, cwd=work.root)
    assert proc.returncode == 1
    assert "bad.yaml" in proc.stderr and "nothing written" in proc.stderr
    assert not work.zones.exists()
    # With zones already published, they are left exactly as they were.
    (work.orders / "bad.yaml").unlink()
    assert work.cli("render", "--at", T_FEB)[0] == 0
    before = {p.name: p.read_bytes() for p in work.zones.iterdir()}
    (work.orders / "bad.yaml").write_text("id: [unclosed\n")
    work.write("good", ["one.example", "two.example"])
    code, _, err = work.cli("render", "--at", T_FEB)
    assert code == 1 and "bad.yaml" in err
    assert {p.name: p.read_bytes() for p in work.zones.iterdir()} == before


def test_render_output_round_trips_through_named_checkzone(work, tmp_path):
    work.write("nx", ["blocked.example.gg", "bücher.example.gg"])
    work.write("rd", ["redir.example.gg"], action="redirect")
    work.write("dr", ["{url: 'https://drop.example.gg/x'}"], action="drop")
    assert work.cli("render", "--at", T_FEB)[0] == 0
    for op in ("orange", "free", "quiet"):
        text = work.zone(op).decode()
        origin = f"{op}.rpz.blocker."
        parse_zone(text, origin)
        named_checkzone(text, origin, tmp_path)


# --- plan and apply ---------------------------------------------------------------------------


def timeline(work: Work) -> None:
    """Three orders around one apply on 2030-02-01: one starts later, one expires, one is lifted."""
    work.write("soon", ["soon.example"], start="2030-03-01", end="2030-05-31")
    work.write("exp", ["exp.example"], start=JAN, end="2030-06-30")
    work.write("lift", ["lift.example"], start=JAN, end="2030-12-31", lifted="2030-04-01T12:00:00+02:00")
    code, out, err = work.cli("apply", "--at", FEB)
    assert code == 0, out + err


def test_plan_reasons_started_lifted_expired_across_instants(work):
    timeline(work)
    code, plan = work.plan(T_FEB)
    assert code == 0 and not plan["has_changes"] and changes(plan) == {}

    code, plan = work.plan("2030-03-15")
    assert code == 3 and plan["has_changes"]
    assert changes(plan) == {"soon.example": ("add", ("started",)), "*.soon.example": ("add", ("started",))}

    code, plan = work.plan("2030-04-15")
    assert code == 3
    assert changes(plan) == {
        "soon.example": ("add", ("started",)), "*.soon.example": ("add", ("started",)),
        "lift.example": ("remove", ("lifted",)), "*.lift.example": ("remove", ("lifted",)),
    }

    code, plan = work.plan("2030-07-15")          # "soon" has come and gone: it never shows
    assert code == 3
    assert changes(plan) == {
        "exp.example": ("remove", ("expired",)), "*.exp.example": ("remove", ("expired",)),
        "lift.example": ("remove", ("lifted",)), "*.lift.example": ("remove", ("lifted",)),
    }
    # Every operator in the config gets a plan; free is planned like orange, quiet has nothing.
    assert changes(plan, "free") == changes(plan)
    assert changes(plan, "quiet") == {}
    # The lift instant itself: in force through 2030-06-30 24:00 local time, removed at 00:00.
    assert "exp.example" not in changes(work.plan("2030-06-30T23:59:59+02:00")[1])
    assert changes(work.plan("2030-07-01T00:00:00+02:00")[1])["exp.example"] == ("remove", ("expired",))


def test_plan_reasons_order_added_and_order_changed(work):
    work.write("old", ["old.example"], start="2020-01-01", end="2031-12-31")
    timeline(work)
    work.write("new", ["new.example"], start="2020-01-01", end="2031-12-31")   # in force before the apply
    work.write("old", ["old.example", "old2.example"], start="2020-01-01", end="2031-12-31")  # a target added
    code, plan = work.plan(T_FEB)
    assert code == 3
    assert changes(plan) == {
        "new.example": ("add", ("order-added",)), "*.new.example": ("add", ("order-added",)),
        "old2.example": ("add", ("order-changed",)), "*.old2.example": ("add", ("order-changed",)),
    }
    # An order made stronger on a name it already blocks: the entry changes, for that reason.
    work.write("lift", ["lift.example"], start=JAN, end="2030-12-31", lifted="2030-04-01T12:00:00+02:00",
               action="nodata")
    code, plan = work.plan(T_FEB)
    (op,) = [p for p in plan["operators"] if p["operator"] == "orange"]
    (change,) = [c for c in op["changed_entries"] if c["name"] == "lift.example"]
    assert (change["old_action"], change["action"], change["reasons"]) == ("nxdomain", "nodata", ["order-changed"])


def test_plan_json_fields(work):
    timeline(work)
    code, plan = work.plan("2030-04-15")
    assert code == 3
    assert set(plan) >= {"at", "checksum", "has_changes", "operators", "flags"}
    assert plan["at"].startswith("2030-04-1") and re.fullmatch(r"[0-9a-f]{16}", plan["checksum"])
    assert [p["operator"] for p in plan["operators"]] == ["free", "orange", "quiet"]
    (op,) = [p for p in plan["operators"] if p["operator"] == "orange"]
    assert set(op) >= {"operator", "changed", "previous_serial", "previous_checksum", "checksum", "names",
                       "records", "added", "removed", "changed_entries", "held", "guard"}
    meta = read_meta(work.zones / "orange.rpz")
    assert meta is not None
    assert (op["changed"], op["previous_serial"], op["previous_checksum"]) == (True, meta.serial, meta.checksum)
    assert (op["names"], op["records"], op["held"], op["guard"]) == (2, 4, [], "")
    add = op["added"][0]
    assert add == {"name": "soon.example", "change": "add", "action": "nxdomain", "order_ids": ["soon"],
                   "old_action": None, "old_order_ids": [], "reasons": ["started"]}
    rem = op["removed"][0]
    assert rem == {"name": "lift.example", "change": "remove", "action": None, "order_ids": [],
                   "old_action": "nxdomain", "old_order_ids": ["lift"], "reasons": ["lifted"]}
    # The text plan carries the same checksum.
    code, out, _ = work.cli("plan", "--at", "2030-04-15")
    assert code == 3 and f"plan checksum: {plan['checksum']}" in out
    assert "+ soon.example nxdomain [soon] (started)" in out and "- lift.example nxdomain [lift] (lifted)" in out


def test_apply_publishes_exactly_the_plan_then_nothing_is_left_to_do(work):
    timeline(work)
    code, plan = work.plan("2030-04-15")
    code, out, err = work.cli("apply", "--at", "2030-04-15", "--checksum", plan["checksum"])
    assert code == 0, out + err
    owners = set(rules(work.zone().decode()))
    assert owners == {"soon.example", "*.soon.example", "exp.example", "*.exp.example"}
    (op,) = [p for p in plan["operators"] if p["operator"] == "orange"]
    meta = read_meta(work.zones / "orange.rpz")
    assert meta is not None and meta.checksum == op["checksum"]
    assert work.plan("2030-04-15")[0] == 0
    code, out, _ = work.cli("apply", "--at", "2030-04-15")
    assert code == 0 and "nothing to apply" in out
    record = State(work.state).zone("orange")
    assert record is not None and record.serial == meta.serial and record.in_effect


def test_apply_refuses_a_plan_other_than_the_reviewed_one(work):
    timeline(work)
    _, reviewed = work.plan("2030-03-15")
    work.write("extra", ["extra.example"], start="2020-01-01", end="2031-01-01")   # the orders moved on
    before = work.zone()
    code, _, err = work.cli("apply", "--at", "2030-03-15", "--checksum", reviewed["checksum"])
    assert code == 4 and reviewed["checksum"] in err
    assert work.zone() == before
    _, fresh = work.plan("2030-03-15")
    assert fresh["checksum"] != reviewed["checksum"]
    assert work.cli("apply", "--at", "2030-03-15", "--checksum", fresh["checksum"])[0] == 0
    assert b"extra.example CNAME ." in work.zone()


def test_apply_keeps_the_entries_of_an_order_file_deleted_while_in_force_until_forced(work):
    timeline(work)
    before = {op: work.zone(op) for op in ("orange", "free")}
    work.remove("exp")
    code, plan = work.plan(T_FEB)
    assert plan["flags"] == {"exp": "orphaned"}
    assert changes(plan) == {}
    assert code == 3 and "lost their file" in plan["refusals"][0]    # apply refuses: plan says so
    code, out, _ = work.cli("apply", "--at", T_FEB)
    assert code == 4
    assert "exp: orphaned" in out
    assert {op: work.zone(op) for op in ("orange", "free")} == before     # still blocked, byte for byte
    code, out, err = work.force(T_FEB)
    assert code == 0, out + err
    assert "- exp.example nxdomain [exp] (orphaned)" in out
    assert "exp.example" not in rules(work.zone().decode())
    code, plan = work.plan(T_FEB)
    assert code == 0 and plan["flags"] == {}


def test_apply_exits_4_when_an_order_file_was_deleted_while_in_force(work):
    timeline(work)
    work.remove("exp")
    assert work.cli("apply", "--at", T_FEB)[0] == 4


def test_apply_holds_an_orphaned_removal_found_in_the_published_zone(work):
    """No state yet (zones rendered by hand): the guard reads the orders from the zone's comments."""
    work.write("exp", ["exp.example"])
    work.write("keep", ["keep.example"])
    assert work.cli("render", "--at", T_FEB)[0] == 0
    before = work.zone()
    work.remove("exp")
    code, plan = work.plan(T_FEB)
    (op,) = [p for p in plan["operators"] if p["operator"] == "orange"]
    assert code == 3 and not op["changed"]                      # nothing changes, but apply refuses
    assert {c["name"]: c["reasons"] for c in op["held"]} == {"exp.example": ["orphaned"],
                                                            "*.exp.example": ["orphaned"]}
    assert "orphaned" in op["guard"]
    code, out, err = work.cli("apply", "--at", T_FEB)
    assert code == 4 and "--force" in err and "HELD (orphaned)" in out
    assert work.zone() == before
    assert work.force(T_FEB)[0] == 0
    assert set(rules(work.zone().decode())) == {"keep.example", "*.keep.example"}


def test_apply_holds_a_target_removed_from_an_order_still_in_force(work):
    timeline(work)
    work.write("exp", ["other.example"], start=JAN, end="2030-06-30")      # exp.example silently dropped
    code, out, _err = work.cli("apply", "--at", T_FEB)
    assert code == 4
    assert "= exp.example nxdomain [exp] HELD (order-changed)" in out
    assert b"exp.example CNAME ." in work.zone() and b"other.example" not in work.zone()
    assert work.force(T_FEB)[0] == 0
    assert b"exp.example" not in work.zone() and b"other.example CNAME ." in work.zone()


def test_entries_no_order_explains_are_held_too(work):
    """A zone line without an order comment (hand-edited, another tool) is not removed silently."""
    work.write("keep", ["keep.example"])
    assert work.cli("render", "--at", T_FEB)[0] == 0
    path = work.zones / "orange.rpz"
    text = path.read_text().replace("@ IN NS localhost.\n", "@ IN NS localhost.\nhand.example CNAME .\n")
    path.write_text(text)
    code, out, _ = work.cli("apply", "--at", T_FEB)
    assert code == 4 and "hand.example" in out
    assert b"hand.example CNAME ." in path.read_bytes()


def test_apply_refuses_removing_more_than_the_configured_share(tmp_path):
    work = make_work(tmp_path / "w", "publish: {max_removal_share: 0.5, removal_guard_min: 2}\n")
    work.write("big", ["a.example", "b.example", "c.example"], end="2030-03-31")
    work.write("small", ["d.example"])
    assert work.cli("apply", "--at", FEB)[0] == 0
    before = work.zone()
    code, out, _err = work.cli("apply", "--at", "2030-04-15")     # "big" expired: 6 of 8 entries, 75 %
    assert code == 4 and "max_removal_share" in out
    assert work.zone() == before
    assert work.force("2030-04-15")[0] == 0
    assert set(rules(work.zone().decode())) == {"d.example", "*.d.example"}


def test_a_failing_reload_hook_exits_5_writes_the_zone_and_records_it_not_in_effect(tmp_path):
    work = make_work(tmp_path / "w")
    work.config_path.write_text(CONFIG_YAML.replace(
        "redirect: {a: [192.0.2.10], aaaa: [\"2001:db8::10\"]}",
        "redirect: {a: [192.0.2.10], aaaa: [\"2001:db8::10\"]}\n    reload: {kind: command, command: [\"false\"]}"))
    work.write("a", ["one.example"])
    code, out, err = work.cli("apply", "--at", T_FEB)
    assert code == 5
    assert "orange" in err and "reload FAILED" in err
    assert b"one.example CNAME ." in work.zone()                   # written: the resolver may pick it up
    meta = read_meta(work.zones / "orange.rpz")
    state = State(work.state)
    orange, free = state.zone("orange"), state.zone("free")
    assert orange is not None and meta is not None
    assert (orange.serial, orange.in_effect) == (meta.serial, False)
    assert "false" in orange.reload_message and "exited 1" in orange.reload_message
    assert free is not None and free.in_effect                    # one operator's failure stops no other
    assert "free: published serial" in out


def test_a_reload_command_gets_the_zone_file_origin_and_serial(tmp_path):
    work = make_work(tmp_path / "w")
    log = tmp_path / "hook.log"
    hook = (f'reload: {{kind: command, command: ["sh", "-c", "echo $0 $1 $2 $3 >> {log}", '
            '"{operator}", "{origin}", "{serial}", "{zone_file}"]}')
    work.config_path.write_text(CONFIG_YAML.replace("redirect: {cname: info.operator.example}",
                                                    "redirect: {cname: info.operator.example}\n    " + hook))
    work.write("a", ["one.example"])
    assert work.cli("apply", "--at", T_FEB)[0] == 0
    meta = read_meta(work.zones / "free.rpz")
    assert meta is not None
    assert log.read_text().split() == ["free", "free.rpz.blocker.", str(meta.serial), str(work.zones / "free.rpz")]


def test_a_failing_zone_check_exits_5_and_leaves_the_old_zone(tmp_path, monkeypatch):
    """publish.check: named-checkzone, and the checker refuses the zone: nothing is replaced."""
    work = make_work(tmp_path / "w", "publish: {check: named-checkzone}\n")
    work.write("a", ["one.example"])
    assert work.cli("apply", "--at", T_FEB)[0] == 0
    before = {op: work.zone(op) for op in ("orange", "free", "quiet")}
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "named-checkzone").write_text("#!/bin/sh\necho 'zone orange.rpz.blocker/IN: refused by test'\nexit 1\n")
    (fake / "named-checkzone").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setattr(publish, "_CHECKED", {})
    work.write("a", ["one.example", "two.example"])
    code, _out, err = work.cli("apply", "--at", T_FEB)
    assert code == 5
    assert "refused by test" in err and "NOT published" in err
    assert {op: work.zone(op) for op in ("orange", "free", "quiet")} == before
    assert [p.name for p in work.zones.iterdir() if p.name.startswith(".")] == []
    record = State(work.state).zone("orange")
    meta = read_meta(work.zones / "orange.rpz")
    assert record is not None and meta is not None and record.serial == meta.serial   # the state did not move


def test_apply_records_the_serial_and_continues_from_it(work):
    timeline(work)
    first = read_meta(work.zones / "orange.rpz")
    assert work.cli("apply", "--at", "2030-03-15")[0] == 0
    second = read_meta(work.zones / "orange.rpz")
    assert first is not None and second is not None and serial_gt(second.serial, first.serial)
    record = State(work.state).zone("orange")
    assert record is not None and record.serial == second.serial
    # Clock set back to before the last publish: a change still moves the serial forward.
    # (--force: "soon" is pending again at that instant, an unexplained removal.)
    work.write("back", ["back.example"], start="2020-01-01", end="2031-01-01")
    assert work.force(FEB)[0] == 0
    third = read_meta(work.zones / "orange.rpz")
    assert third is not None and third.serial == second.serial + 1


def test_apply_records_the_publish_instant_of_the_plan(work):
    timeline(work)                                                      # applied --at 2030-02-01
    work.write("new", ["new.example"], start="2029-06-01", end="2031-12-31")
    assert changes(work.plan(T_FEB)[1])["new.example"] == ("add", ("order-added",))


def test_powerdns_flush_wipes_every_changed_name_and_the_serial_canary(tmp_path):
    """PowerDNS answers from its packet cache first: the canary must go too, or the post-reload
    check reads the previous publish's serial for the canary's TTL."""
    cfg = tmp_path / "blocker.yaml"
    cfg.write_text("operators:\n  orange:\n    reload: {kind: powerdns-recursor, socket: /run/pdns-recursor}\n"
                   "  free: {}\n")
    config = load_config(cfg)
    (argv,) = hooks.flush_argvs(config.operators["orange"], ["a.example", "*.a.example", "b.example"])
    assert argv[:3] == ["rec_control", "--timeout=60", "--socket-dir=/run/pdns-recursor"]
    assert argv[3] == "wipe-cache"
    assert sorted(argv[4:]) == ["a.example.$", "b.example.$", f"{canary_owner('orange')}.$"]
    assert hooks.flush_argvs(config.operators["orange"], []) == [[*argv[:4], f"{canary_owner('orange')}.$"]]
    assert hooks.flush_argvs(config.operators["free"], ["a.example"]) == []      # no pdns: nothing to wipe


def test_a_target_too_long_for_the_zone_is_refused_where_it_enters(work):
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 50]) + ".example"     # 250 octets: a valid hostname
    work.write("long", [name])
    code, out, _ = work.cli("validate")
    assert code == 1 and "long.yaml: targets[0]" in out


def test_a_zones_path_that_is_not_a_folder_is_a_publish_failure_not_a_crash(work):
    work.zones.write_text("not a folder\n")
    work.write("a", ["one.example"])
    code, _, err = work.cli("render", "--at", T_FEB)
    assert code == 5 and "cannot write" in err
    code, _, err = work.cli("apply", "--at", T_FEB)
    assert code == 5 and "orange: NOT published" in err
    assert work.zones.read_text() == "not a folder\n"
