"""HOST:PORT in one place: listen addresses and resolver addresses (config and `--resolver`)."""

from __future__ import annotations

import pytest

from blocker.config.address import parse_listen, parse_resolver_address
from blocker.config.load import load_config
from blocker.config.model import ConfigError


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9153", ("127.0.0.1", 9153)),
    (":9153", ("127.0.0.1", 9153)),
    ("[::1]:9153", ("::1", 9153)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
    ("localhost:80", ("localhost", 80)),
])
def test_listen_addresses(text, expected):
    assert parse_listen(text, "http.listen") == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:65536"])
def test_listen_addresses_refused(text):
    with pytest.raises(ConfigError, match=r"http.listen: expected HOST:PORT"):
        parse_listen(text, "http.listen")


@pytest.mark.parametrize(("text", "expected"), [
    ("192.0.2.1", ("192.0.2.1", 53)),
    ("192.0.2.1:5353", ("192.0.2.1", 5353)),
    ("[2001:db8::1]:5353", ("2001:db8::1", 5353)),
    ("[2001:db8::1]", ("2001:db8::1", 53)),
    ("2001:db8::1", ("2001:db8::1", 53)),  # a bare IPv6 address: its colons are not a port
])
def test_resolver_addresses(text, expected):
    assert parse_resolver_address(text, "--resolver") == expected


@pytest.mark.parametrize("text", ["resolver.example", "192.0.2.1:0", "192.0.2.1:65536", "192.0.2.1:x",
                                  "192.0.2.1:+53", "[2001:db8::1]x", "192.0.2.1:٥٣", ""])
def test_resolver_addresses_refused(text):
    with pytest.raises(ConfigError, match=r"^--resolver: "):
        parse_resolver_address(text, "--resolver")


def test_a_configured_resolver_may_use_port_zero_as_before():
    assert parse_resolver_address("192.0.2.1:0", "x", min_port=0) == ("192.0.2.1", 0)


def test_configured_resolver_addresses_take_the_same_shapes(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("operators:\n  acme:\n    resolvers:\n      - 192.0.2.1\n      - '[2001:db8::1]:5353'\n"
                    "      - {address: '2001:db8::2', name: six}\n")
    resolvers = load_config(path).operators["acme"].resolvers
    assert [(r.host, r.port) for r in resolvers] == [("192.0.2.1", 53), ("2001:db8::1", 5353), ("2001:db8::2", 53)]
    path.write_text("operators:\n  acme:\n    resolvers: [resolver.example]\n")
    with pytest.raises(ConfigError, match=r"operators.acme.resolvers\[0\].address: 'resolver.example' is not an IP"):
        load_config(path)
