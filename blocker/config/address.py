"""HOST:PORT, parsed in one place: `http.listen` and `--listen`, resolver addresses in the config,
`--resolver` on the command line.

Two shapes, because they are two contracts: a listen address needs its port and may leave the host
out (`:9153`); a resolver address is an IP whose port defaults to 53, and a bare IPv6 address is
one (its colons are not a port separator).
"""

from __future__ import annotations

import ipaddress

from blocker.config.model import ConfigError


def parse_listen(text: str, where: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `:PORT` (host 127.0.0.1): where the daemon serves /metrics."""
    host, sep, port = str(text).rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where}: expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def split_resolver_address(text: str) -> tuple[str, str]:
    """`IP:PORT`, `[V6]:PORT`, `[V6]`, a bare IP (port "53"): host and port as written, unchecked."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest.removeprefix(":") or "53"
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, port
    return text, "53"


def parse_resolver_address(text: str, where: str, *, min_port: int = 1) -> tuple[str, int]:
    """A resolver's IP address and port (53 when not given), or ConfigError naming `where`."""
    host, port = split_resolver_address(text)
    if not (port.isascii() and port.isdigit()) or not min_port <= int(port) <= 65535:
        raise ConfigError(f"{where}: expected HOST:PORT, got {text!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{where}: {host!r} is not an IP address") from None
    return host, int(port)
