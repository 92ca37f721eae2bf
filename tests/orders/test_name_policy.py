"""Issue 9, sections 1 and 9: names that would change a resolver's policy or collide with blocker's
own records are refused (at validation, and again at render); names reach what a browser resolves.
"""

from __future__ import annotations

import re
from pathlib import Path

import idna
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from blocker.config.load import load_config
from blocker.config.model import ConfigError
from blocker.orders.load import load_orders
from blocker.orders.model import Order
from blocker.orders.names import InvalidName, known_tlds, name_warnings, normalize_name
from blocker.orders.parse import parse_order
from blocker.policy import Entry, ZoneContent, canonical_order
from blocker.zone.admit import UnsafeOwnerError, check_owners, owner_problem
from blocker.zone.render import render_body
from tests.support.cli import blocker
from tests.support.properties import examples

REPO = Path(__file__).resolve().parents[2]
CONFIG = load_config(REPO / "blocker" / "config" / "default.yaml")

TRIGGERS = ["rpz-ip", "rpz-nsip", "rpz-nsdname", "rpz-client-ip", "rpz-passthru", "rpz-drop", "rpz-tcp-only",
            "rpz-future-trigger"]


def _cases(label: str) -> list[str]:
    return [label, label.upper(), label.title(), label[:4].upper() + label[4:]]


def _positions(label: str) -> list[str]:
    """The label as the top label (where BIND, Unbound and PowerDNS read a trigger), the only
    label, in the middle, first, and with a trailing dot."""
    return [f"32.1.0.0.127.{label}", label, f"a.{label}.example", f"{label}.example.gg", f"x.{label}.",
            f"ns1.example.com.{label}"]


TRIGGER_NAMES = sorted({name for label in TRIGGERS for case in _cases(label) for name in _positions(case)})


def order_text(targets: list[str], order_id: str = "t-1", operators: str = "[orange]") -> str:
    return ("id: " + order_id + "\ncourt: TJ Paris\ncase_number: RG 1\ndecision_date: 2026-11-01\n"
            f"operators: {operators}\nstart: 2026-11-02\nduration: 1 month\ntargets:\n"
            + "".join(f"  - {t}\n" for t in targets))


# --- section 1: validation --------------------------------------------------------------------

@pytest.mark.parametrize("name", TRIGGER_NAMES)
def test_trigger_labels_are_refused_in_every_position_and_case(name):
    with pytest.raises(InvalidName, match=r"rpz-|public suffix|empty"):
        normalize_name(name)


@pytest.mark.parametrize("name", TRIGGER_NAMES)
def test_trigger_labels_are_refused_in_urls_and_domain_mappings(name):
    text = order_text([f"{{domain: {name!r}, subdomains: false}}", f"{{url: 'https://{name.rstrip('.')}/x'}}"])
    result = parse_order(text.encode(), "o.yaml", CONFIG.order_rules)
    assert isinstance(result, list)
    assert {e.field for e in result} == {"targets[0]", "targets[1]"}
    assert {e.line for e in result} == {9, 10}


def test_the_issue_example_is_refused_with_file_field_and_line():
    text = order_text(["ok.example", "32.1.0.0.127.rpz-client-ip"])
    result = parse_order(text.encode(), "o.yaml", CONFIG.order_rules)
    assert isinstance(result, list) and len(result) == 1
    line = str(result[0])
    assert line.startswith("o.yaml: targets[1]: '32.1.0.0.127.rpz-client-ip' has the label 'rpz-client-ip'")
    assert line.endswith("(line 10)")


@given(st.lists(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-"), min_size=1, max_size=12),
       st.sampled_from(TRIGGERS), st.integers(0, 3), st.booleans())
def test_property_no_accepted_name_has_an_rpz_label(chars, trigger, where, upper):
    label = "".join(chars).strip("-") or "a"
    parts = [label, "example", "gg"]
    parts.insert(where, trigger.upper() if upper else trigger)
    with pytest.raises(InvalidName):
        normalize_name(".".join(parts))


@pytest.mark.parametrize("name", [
    "orange.rpz.blocker", "x.orange.rpz.blocker", "ORANGE.RPZ.BLOCKER.", "a.b.sfr.rpz.blocker",
    "canary.blocker", "serial.orange.canary.blocker", "x.serial.free.canary.blocker", "Serial.Orange.Canary.Blocker",
])
def test_targets_at_or_under_an_origin_or_the_canary_are_refused(name):
    for target in (name, f"{{domain: {name}, subdomains: false}}"):
        result = parse_order(order_text([target]).encode(), "o.yaml", CONFIG.order_rules)
        assert isinstance(result, list), target
        assert result[0].field == "targets[0]" and result[0].line == 9
        assert re.search(r"zone origin|canary", result[0].message), result[0].message


def test_an_origin_under_a_real_tld_is_reserved_too(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("operators:\n  orange: {origin: rpz.isp.fr.}\n  sfr: {}\n")
    config = load_config(config_file)
    for name in ("rpz.isp.fr", "x.rpz.isp.fr", "X.RPZ.ISP.FR."):
        result = parse_order(order_text([name], operators="[sfr]").encode(), "o.yaml", config.order_rules)
        assert isinstance(result, list), name
        assert "zone origin 'rpz.isp.fr.'" in result[0].message
    assert isinstance(parse_order(order_text(["isp.fr", "www.isp.fr"]).encode(), "o.yaml", config.order_rules), Order)


@pytest.mark.parametrize("name", ["example.cmo", "www.example.cmo", "x.invalid", "x.localhost", "x.local", "x.internal",
                                  "x.home.arpa.lan", "x.blocker", "x.alt", "x.onion2", "x.corp", "x.xn--zzzzz"])
def test_unknown_top_level_domains_are_refused(name):
    with pytest.raises(InvalidName, match=r"not a top-level domain|invalid IDN"):
        normalize_name(name)


@pytest.mark.parametrize("name", ["x.example", "x.test", "a.b.example.gg", "x.co.uk", "x.xn--p1ai", "x.fr"])
def test_reserved_and_listed_tlds_are_accepted(name):
    assert normalize_name(name) == name


def test_every_sample_order_is_still_valid():
    result = load_orders(REPO / "orders", CONFIG.order_rules)
    assert result.ok, [str(e) for e in result.errors]
    assert "example" in known_tlds() and "test" in known_tlds()
    assert "invalid" not in known_tlds() and "localhost" not in known_tlds()


# --- section 1: render, the second line of defence ------------------------------------------

BAD_OWNERS = [
    "32.1.0.0.127.rpz-client-ip", "*.x.rpz-ip", "ns.example.com.rpz-nsdname", "RPZ-IP.example", "a..example",
    ".example", "example.", "-a.example", "a-.example", "a.-b.example", "a b.example", "a;b.example", "a\nb.example",
    "exämple.example", "a*.example", "*.*.example", "x.*.example", "*", "", "orange.rpz.blocker",
    "x.orange.rpz.blocker", "*.orange.rpz.blocker", "serial.orange.canary.blocker", "canary.blocker",
    "*.canary.blocker", "a" * 64 + ".example", "A.example", "a_b.example",
]


def _content(owners: list[str], bad_id: str = "bad-order") -> ZoneContent:
    entries = {o: Entry("nxdomain", (f"good-{i % 3}",)) for i, o in enumerate(owners)}
    return ZoneContent(entries, canonical_order(entries))


@pytest.mark.parametrize("bad", BAD_OWNERS)
@pytest.mark.parametrize("where", [0, 500, 1999])
def test_render_refuses_an_owner_that_is_not_a_plain_domain(bad, where):
    owners = [f"site{i}.example.gg" for i in range(2000)]
    owners.insert(where, bad)
    entries = {o: Entry("nxdomain", ("good",)) for o in owners}
    entries[bad] = Entry("nxdomain", ("bad-order", "other"))
    content = ZoneContent(entries, owners)  # as given: the bad owner at `where`
    with pytest.raises(UnsafeOwnerError, match=r"^order bad-order, other: .*refusing to render") as info:
        render_body(content, CONFIG.operators["orange"])
    assert "orange.rpz.blocker." in str(info.value)


def test_render_of_plain_owners_is_unchanged():
    owners = [f"site{i}.example.gg" for i in range(100)] + [f"*.w{i}.xn--bcher-kva.example" for i in range(100)]
    zone = render_body(_content(owners), CONFIG.operators["orange"])
    assert zone.entries == 200


_owner_chars = st.text(st.sampled_from("abz09-.*_ A\nä"), min_size=0, max_size=20)


@settings(max_examples=examples(400))
@given(st.lists(st.one_of(_owner_chars, st.sampled_from(["a.example", "*.a.example", "rpz-ip", "x.canary.blocker",
                                                         "orange.rpz.blocker", "a" * 64])), min_size=1, max_size=6))
def test_property_the_fast_owner_scan_agrees_with_the_careful_check(owners):
    """The chunk scan never lets through an owner the per-owner check refuses."""
    origin = "orange.rpz.blocker."
    careful = [o for o in owners if owner_problem(o, origin) is not None]
    entries = {o: Entry("nxdomain", ("x",)) for o in owners}
    if careful:
        with pytest.raises(UnsafeOwnerError):
            check_owners(owners, entries, origin)
    else:
        check_owners(owners, entries, origin)


# --- section 9: what browsers resolve ---------------------------------------------------------

def test_final_sigma_follows_uts46_not_str_lower():
    assert normalize_name("ΚΑΦΕΣ-ΜΠΑΡ.gr") == "xn----ylbboxp2ajn2a.gr"
    assert normalize_name("ΚΑΦΕΣ-ΜΠΑΡ.gr") == idna.encode("ΚΑΦΕΣ-ΜΠΑΡ.gr", uts46=True).decode()
    assert normalize_name("καφεσ-μπαρ.gr") == "xn----ylbboxp2ajn2a.gr"
    assert normalize_name("καφες-μπαρ.gr") == "xn----ylbboxp2aje2b.gr"  # a written final sigma stays one


@pytest.mark.parametrize("dot", ["\u3002", "\uff0e", "\uff61"])
def test_ideographic_fullwidth_and_halfwidth_stops_separate_labels(dot):
    assert normalize_name(f"www{dot}example{dot}gg") == "www.example.gg"
    assert normalize_name(f"www.example.gg{dot}") == "www.example.gg"  # a trailing one is a trailing dot
    assert normalize_name(f"bücher{dot}example{dot}") == "xn--bcher-kva.example"
    for bad in (f"www.example.gg.{dot}", f"www.example.gg{dot}{dot}", f"www{dot}{dot}example.gg", f"{dot}example.gg"):
        with pytest.raises(InvalidName, match="empty"):
            normalize_name(bad)
    with pytest.raises(InvalidName, match="public suffix"):
        normalize_name(f"co{dot}uk{dot}")


_idn_chars = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-ßüéçñжДΣσςΚΑΦΕΜΠΡİıǅẞ中文ラーメンÅ")


@settings(max_examples=examples(500))
@given(st.lists(st.text(_idn_chars, min_size=1, max_size=15), min_size=1, max_size=3),
       st.sampled_from(["gr", "example", "example.gg", "de", "jp", "Example", "GR"]))
def test_property_normalize_is_what_uts46_gives_in_any_case(parts, suffix):
    name = ".".join([*parts, suffix])
    forms = {}
    for form in (name, name.upper(), name.lower(), name.title()):
        try:
            forms[form] = idna.encode(form, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            continue
    assume(forms)
    for form, expected in forms.items():
        try:
            got = normalize_name(form)
        except InvalidName as exc:
            # Refused only for a reason of its own, never because of the case or the script.
            why = r"public suffix|IP address|longer than|invisible|not a valid hostname|empty"
            assert re.search(why, str(exc)), exc
            continue
        assert got == expected, form
    # A name and its upper-case form are one name wherever UTS #46 says so (browsers too).
    if name in forms and name.upper() in forms and forms[name] == forms[name.upper()]:
        try:
            assert normalize_name(name) == normalize_name(name.upper())
        except InvalidName:
            with pytest.raises(InvalidName):
                normalize_name(name.upper())


def test_the_ascii_path_is_unchanged():
    assert normalize_name("WWW.Example.GG.") == "www.example.gg"
    assert normalize_name("XN--BCHER-KVA.example") == "xn--bcher-kva.example"


def test_an_emoji_a_label_is_accepted_with_a_warning():
    assert normalize_name("xn--ls8h.la") == "xn--ls8h.la"
    assert normalize_name("XN--LS8H.LA.") == "xn--ls8h.la"
    (warning,) = name_warnings("xn--ls8h.la")
    assert "outside IDNA 2008" in warning and "💩" in warning
    with pytest.raises(InvalidName, match=r"browsers resolve it as 'xn--ls8h.la'"):
        normalize_name("💩.la")  # the U-label: refused, naming the A-label to give
    for bad in ("xn--zz.example", "xn--.example", "xn--a-.example", "xn--ls8h-.la"):
        with pytest.raises(InvalidName):
            normalize_name(bad)


def test_mixed_scripts_are_accepted_with_a_warning():
    name = normalize_name("pаypal.example")  # Cyrillic а
    assert name == "xn--pypal-4ve.example"
    (warning,) = name_warnings(name)
    assert "Cyrillic and Latin" in warning
    for single in ("bücher.example", "пример.example", "日本語.jp", "ラーメン屋.jp", "καφεσ.gr", "paypal.example"):
        assert name_warnings(normalize_name(single)) == [], single


def test_warnings_ride_on_the_order_and_the_load_result(tmp_path):
    (tmp_path / "a.yaml").write_text(order_text(["ok.example", "xn--ls8h.la", "pаypal.example"]), encoding="utf-8")
    result = load_orders(tmp_path, CONFIG.order_rules)
    assert result.ok and list(result.orders) == ["t-1"]
    assert [(w.field, w.line) for w in result.warnings] == [("targets[1]", 10), ("targets[2]", 11)]
    assert result.orders["t-1"].warnings == tuple(result.warnings)


@pytest.mark.integration
def test_validate_prints_warnings_escaped_and_exits_0(tmp_path):
    orders = tmp_path / "orders"
    orders.mkdir()
    (orders / "a.yaml").write_text(order_text(["ok.example", "xn--ls8h.la", "pаypal.example"]), encoding="utf-8")
    proc = blocker("validate", "--orders", str(orders), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    warnings = [ln for ln in proc.stdout.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 2
    assert warnings[0].startswith(f"warning: {orders / 'a.yaml'}: targets[1]: 'xn--ls8h'")
    assert "(line 10)" in warnings[0] and "(line 11)" in warnings[1]
    assert all(ln.isprintable() for ln in proc.stdout.splitlines())
    # Warnings never block: the zone holds the names.
    (tmp_path / "zones").mkdir()
    proc = blocker("render", "--orders", str(orders), "--out", str(tmp_path / "zones"),
                   "--at", "2026-11-10T12:00:00+01:00", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    zone = (tmp_path / "zones" / "orange.rpz").read_text()
    assert "\nxn--ls8h.la CNAME . ; t-1\n" in zone and "\nxn--pypal-4ve.example CNAME . ; t-1\n" in zone


# --- section 9: config fields that reach a zone file or a query --------------------------------

@pytest.mark.integration
@pytest.mark.parametrize(("text", "key"), [
    ("operators:\n  orange: {origin: 'orangé.rpz.blocker.'}\n", "operators.orange.origin"),
    ("operators:\n  orange: {origin: 'orange\u212a.rpz.blocker.'}\n", "operators.orange.origin"),  # Kelvin sign
    ("operators:\n  orange: {origin: 'orange\u3002rpz.blocker.'}\n", "operators.orange.origin"),
    ("rpz:\n  ns: 'nś.example.'\n", "rpz.ns"),
    ("rpz:\n  soa: {mname: 'ñs.example.'}\n", "rpz.soa.mname"),
    ("rpz:\n  soa: {rname: 'hostmästér.example.'}\n", "rpz.soa.rname"),
    ("operators:\n  orangé: {}\n", "operators"),
    ("operators:\n  orange: {redirect: {cname: 'info.rpz-drop'}}\n", "operators.orange.redirect.cname"),
    ("operators:\n  orange: {redirect: {cname: 'info.cmo'}}\n", "operators.orange.redirect.cname"),
    ("probe:\n  control_names: ['www.example.invalid']\n", "probe.control_names"),
    ("probe:\n  control_names: ['x.rpz-ip']\n", "probe.control_names"),
])
def test_config_names_must_be_ascii_host_names(tmp_path, text, key):
    path = tmp_path / "blocker.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {key}"), str(info.value)
    # and the CLI says so in one line, exit 1, never an internal error
    proc = blocker("validate", "--orders", str(tmp_path), config=path, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and key in proc.stderr, proc.stderr


def test_an_idn_control_name_becomes_its_a_label(tmp_path):
    path = tmp_path / "blocker.yaml"
    path.write_text("probe:\n  control_names: ['Bücher.example.gg']\n", encoding="utf-8")
    assert load_config(path).control_names == ("xn--bcher-kva.example.gg",)
