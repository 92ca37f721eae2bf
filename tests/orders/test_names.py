"""Names as they may enter a zone: normalised, validated, never a public suffix."""

from __future__ import annotations

import re

import idna
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocker.orders.names import MAX_LABEL, MAX_NAME, InvalidName, host_from_url, is_public_suffix, normalize_name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("WWW.Example.Com.", "www.example.com"),
        ("files.example.gg", "files.example.gg"),
        ("a-b.example", "a-b.example"),
        ("123.example", "123.example"),
        ("xn--fa-hia.de", "xn--fa-hia.de"),
        ("faß.de", "xn--fa-hia.de"),
        ("FAß.DE.", "xn--fa-hia.de"),
        ("münchen.de", "xn--mnchen-3ya.de"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("ÉCOLE.fr", "xn--cole-9oa.fr"),
        ("bücher-propagande.example.gg", "xn--bcher-propagande-jzb.example.gg"),
        ("example.co.uk", "example.co.uk"),
        ("example.gg", "example.gg"),
        ("someone.github.io", "someone.github.io"),
    ],
)
def test_names_are_normalised(raw, expected):
    assert normalize_name(raw) == expected


def test_idna_2008_not_2003():
    # IDNA 2003 (Python's codec) maps ß to "ss" and would block another registrant's domain.
    assert "faß.de".encode("idna") == b"fass.de"
    assert normalize_name("faß.de") == "xn--fa-hia.de"
    assert normalize_name("faß.de") != normalize_name("fass.de")
    assert normalize_name("faß.de") == idna.encode("faß.de").decode()


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        # whitespace and control characters
        (" example.com", "whitespace"),
        ("example.com ", "whitespace"),
        ("example.com\n", "whitespace"),
        ("exa mple.com", "not a valid hostname"),
        ("exa\tmple.com", "not a valid hostname"),
        ("exa\u00a0mple.com", "not a valid"),
        ("exa\x00mple.com", "not a valid"),
        ("exa\x01mple.com", "not a valid"),
        ("exa\x1bmple.com", "not a valid"),
        ("exa\x7fmple.com", "not a valid"),
        # forbidden characters
        ("exa$mple.com", "not a valid"),
        ("example.com;", "not a valid"),
        ("exa;mple.com", "not a valid"),
        ("_dmarc.example.com", "not a valid"),
        ("ex_ample.com", "not a valid"),
        ("ex@mple.com", "not a valid"),
        ("example.com/path", "not a valid"),
        ("example.com:80", "not a valid"),
        ("ex%41mple.com", "not a valid"),
        # wildcards: use `subdomains`
        ("*.example.com", "subdomains"),
        ("*example.com", "subdomains"),
        ("www.*.example.com", "subdomains"),
        ("＊.example.com", "not a valid"),  # fullwidth asterisk maps to `*`
        # empty labels
        ("", "empty"),
        (".", "empty"),
        ("..", "empty"),
        ("a..example.com", "empty label"),
        (".example.com", "empty label"),
        ("example.com..", "empty label"),
        # label rules
        ("-a.example.com", "not a valid hostname"),
        ("a-.example.com", "not a valid hostname"),
        ("xn--zz.example.com", "invalid IDN label"),
        ("a" * 64 + ".example", "longer than 63"),
        # IP literals
        ("192.0.2.1", "IP address"),
        ("192.0.2.1.", "IP address"),
        ("[192.0.2.1]", "IP address"),
        ("2001:db8::1", "IP address"),
        ("[2001:db8::1]", "IP address"),
        ("::1", "IP address"),
        ("::ffff:192.0.2.1", "IP address"),
        ("１９２.０.２.１", "IP address"),  # fullwidth digits: an address after IDNA mapping
        ("127.1", "IP address"),  # short forms resolvers read as addresses
        ("10.0.1", "IP address"),
        ("010.010.010.010", "IP address"),
        ("0x7f.1", "IP address"),
        # public suffixes (ICANN and private sections)
        ("gg", "public suffix"),
        ("GG.", "public suffix"),
        ("com", "public suffix"),
        ("co.uk", "public suffix"),
        ("CO.UK.", "public suffix"),
        ("github.io", "public suffix"),
        ("blogspot.com", "public suffix"),
        ("co。uk", "public suffix"),  # ideographic full stop is a dot after mapping
        ("localhost", "public suffix"),
    ],
)
def test_refused_names_say_why(raw, why):
    with pytest.raises(InvalidName, match=re.escape(why)):
        normalize_name(raw)


def test_refusal_names_the_input():
    with pytest.raises(InvalidName) as info:
        normalize_name("co.uk")
    assert "'co.uk'" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("raw", [None, 5, b"example.com", ["example.com"], {"domain": "example.com"}])
def test_non_text_is_refused(raw):
    with pytest.raises(InvalidName, match="text"):
        normalize_name(raw)


def test_length_limits_are_exact():
    label63 = "a" * MAX_LABEL
    assert normalize_name(f"{label63}.example") == f"{label63}.example"
    name253 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 57, "com"])
    assert len(name253) == MAX_NAME == 253
    assert normalize_name(name253) == name253
    assert normalize_name(name253 + ".") == name253  # the trailing dot is not counted
    with pytest.raises(InvalidName, match="longer than 253"):
        normalize_name("e" + name253)
    # the limit applies to the A-label form, not to the Unicode text
    label = "aüébçdñeöfägßhàiìjòkù"
    unicode_name = ".".join([label] * 7 + ["com"])
    assert len(unicode_name) < MAX_NAME < 7 * (len(idna.encode(label)) + 1) + 3
    with pytest.raises(InvalidName, match=r"too long|longer than 253"):
        normalize_name(unicode_name)


def test_public_suffix_list_sections():
    for suffix in ("gg", "co.uk", "github.io", "com", "fr", "gouv.fr"):
        assert is_public_suffix(suffix)
    for name in ("example.gg", "example.co.uk", "someone.github.io", "files.example.gg"):
        assert not is_public_suffix(name)
        assert normalize_name(name) == name


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://files.example.gg/d/8f3e1c/fichier-patients.csv", "files.example.gg"),
        ("http://Example.COM:8080/path?q=1#frag", "example.com"),
        ("https://EXAMPLE.com./", "example.com"),
        ("https://example.com", "example.com"),
        ("HTTPS://example.com/", "example.com"),
        ("https://faß.de/x", "xn--fa-hia.de"),
        ("https://xn--fa-hia.de/x", "xn--fa-hia.de"),
        ("https://example.com:443/a/b/c.html", "example.com"),
    ],
)
def test_url_host_is_extracted_and_normalised(url, host):
    assert host_from_url(url) == host


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/file", "http(s)"),
        ("example.com/path", "http(s)"),
        ("//example.com/path", "http(s)"),
        ("javascript:alert(1)", "http(s)"),
        ("https://", "no host"),
        ("https:///path", "no host"),
        ("https://user:secret@example.com/", "credentials"),
        ("https://user@example.com/", "credentials"),
        ("http://192.0.2.1/x", "IP address"),
        ("http://[2001:db8::1]/x", "IP address"),
        ("https://example.com:99999/", "not a valid URL"),
        ("https://example.com:port/", "not a valid URL"),
        ("https://exa mple.com/", "whitespace"),
        ("https://example.com/\n", "whitespace"),
        ("https://co.uk/x", "public suffix"),
        ("https://github.io/", "public suffix"),
        ("https://ex_ample.com/", "not a valid"),
        ("https://[::1/", "not a valid URL"),
    ],
)
def test_bad_urls_are_refused(url, why):
    with pytest.raises(InvalidName, match=re.escape(why)):
        host_from_url(url)


@pytest.mark.parametrize("raw", [None, 42, {"url": "https://example.com/"}])
def test_url_must_be_text(raw):
    with pytest.raises(InvalidName):
        host_from_url(raw)


# --- properties ----------------------------------------------------------------------------------

_ASCII_OUT = re.compile(r"[a-z0-9.-]+\Z")
_label_chars = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-ßüéçñжд中文")
labels = st.text(_label_chars, min_size=1, max_size=20)
suffixes = st.sampled_from(["example", "example.gg", "co.uk", "gg", "fr", "github.io", "com", "xn--p1ai"])
plausible_names = st.builds(
    lambda parts, suffix, dot: ".".join([*parts, suffix]) + dot,
    st.lists(labels, min_size=0, max_size=4), suffixes, st.sampled_from(["", "."]),
)
any_text = st.text(max_size=80)


def _check_accepted(name: str) -> None:
    assert _ASCII_OUT.match(name)
    assert normalize_name(name) == name  # idempotent
    assert len(name) <= MAX_NAME
    assert all(0 < len(label) <= MAX_LABEL for label in name.split("."))
    assert "." in name
    assert not is_public_suffix(name)
    assert not name.rsplit(".", 1)[-1].isdigit()


@given(st.one_of(plausible_names, any_text))
def test_any_accepted_name_is_ascii_and_idempotent(raw):
    try:
        name = normalize_name(raw)
    except InvalidName:
        return
    _check_accepted(name)


@given(st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12), min_size=1, max_size=3),
       st.sampled_from(["example", "example.gg", "example.co.uk"]))
def test_ascii_names_ignore_case_and_trailing_dot(parts, suffix):
    name = ".".join([*parts, suffix])
    assert normalize_name(name) == name
    assert normalize_name(name.upper()) == name
    assert normalize_name(name + ".") == name


@given(plausible_names, st.sampled_from(["/", "/a/b?c=1", ":8443/x", "#frag"]), st.sampled_from(["http", "https"]))
def test_url_host_is_the_normalised_host(raw, rest, scheme):
    try:
        expected = normalize_name(raw.rstrip(".") if raw.endswith("..") else raw)
    except InvalidName:
        expected = None
    url = f"{scheme}://{raw}{rest}"
    try:
        host = host_from_url(url)
    except InvalidName:
        return
    _check_accepted(host)
    if expected is not None:
        assert host == expected
