"""The `distribution:` section and `operators.<op>.secondaries`: parsed strictly like the rest.

The TSIG key file is the only secret blocker handles: its path and its (non-secret) name and
algorithm are kept in the config; the secret itself is read only by `read_secret`, where a
config for a primary or a secondary needs it, and never enters a repr, a log line or an output.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blocker.config.address import parse_listen
from blocker.config.model import Config, ConfigError

PRIMARY_KINDS = ("knot", "bind")
SECONDARY_KINDS = ("bind", "unbound", "powerdns-recursor", "knot-resolver")
ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5")

# What `tsig-keygen -a hmac-sha256 NAME` prints: key "NAME" { algorithm ALG; secret "B64"; };
_KEY = re.compile(
    r'\A\s*key\s+"?(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)"?\s*\{\s*'
    r'(?:algorithm\s+"?(?P<alg>[a-z0-9-]+)"?\s*;\s*secret\s+"(?P<s1>[A-Za-z0-9+/=]+)"\s*;'
    r'|secret\s+"(?P<s2>[A-Za-z0-9+/=]+)"\s*;\s*algorithm\s+"?(?P<alg2>[a-z0-9-]+)"?\s*;)'
    r'\s*\}\s*;\s*\Z')


class KeyFileError(ConfigError):
    """A TSIG key file blocker will not use (missing, unreadable, not private, not BIND key syntax)."""


@dataclass(frozen=True)
class TsigKey:
    """A key as read for a config that needs it: `secret` is excluded from repr and comparisons."""

    name: str
    algorithm: str
    path: Path
    secret: str = field(repr=False, compare=False)


@dataclass(frozen=True)
class Primary:
    kind: str
    host: str
    port: int
    control: str  # knot: control socket path; bind: rndc HOST:PORT

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Distribution:
    primary: Primary
    tsig_key: Path
    key_name: str
    key_algorithm: str
    peers: tuple[tuple[str, int], ...] = ()  # other blocker primaries serving the same zones
    propagation_timeout: float = 60.0

    def key(self) -> TsigKey:
        return read_key(self.tsig_key, "distribution.tsig_key")


@dataclass(frozen=True)
class Secondary:
    host: str
    port: int
    name: str
    tsig: bool = True

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def label(self) -> str:
        return self.name or self.address


def _host_port(text: Any, where: str, default_port: int) -> tuple[str, int]:
    if not isinstance(text, str) or not text:
        raise ConfigError(f"{where}: expected HOST:PORT, got {text!r}")
    try:
        return str(ipaddress.ip_address(text.strip("[]"))), default_port  # a bare address
    except ValueError:
        pass
    host, port = parse_listen(text, where)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{where}: {host!r} is not an IP address") from None
    return host, port


def _mapping(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = sorted(map(str, set(value) - allowed))
    if unknown:
        line = value.line_of(unknown[0]) if hasattr(value, "line_of") else None
        raise ConfigError(f"{where}.{unknown[0]}: unknown key" + (f" (line {line})" if line else ""))
    return value


def read_key(path: Path, where: str = "tsig_key") -> TsigKey:
    """Read a BIND-syntax key file, refusing one that anyone but its owner may read: the key lets
    whoever holds it pull every operator's zone (the list of blocked names) or pose as the primary."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(f"{where}: {path}: no such file (create it with `tsig-keygen -a hmac-sha256 "
                           f"blocker-xfr > {path}; chmod 600 {path}`)") from None
    except OSError as exc:
        raise KeyFileError(f"{where}: {path}: cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{where}: {path}: not a regular file")
        if info.st_mode & 0o077:
            raise KeyFileError(f"{where}: {path}: readable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                               f"run `chmod 600 {path}`")
        raw = os.read(fd, 65536)
    finally:
        os.close(fd)
    text = re.sub(r"(?m)(#|//).*$", "", raw.decode("utf-8", errors="replace"))
    match = _KEY.match(text)
    if match is None:
        # Never quote the file: its content is the secret.
        raise KeyFileError(f"{where}: {path}: not a BIND key statement as `tsig-keygen -a hmac-sha256 NAME` "
                           "prints it")
    algorithm = (match["alg"] or match["alg2"]).lower()
    if algorithm not in ALGORITHMS:
        raise KeyFileError(f"{where}: {path}: algorithm {algorithm!r} not supported ({', '.join(ALGORITHMS)})")
    return TsigKey(match["name"], algorithm, Path(path), match["s1"] or match["s2"])


def parse_distribution(value: Any) -> Distribution | None:
    """`distribution:` of the config file (None: not set, blocker publishes files only)."""
    if value is None:
        return None
    d = _mapping(value, "distribution", {"primary", "tsig_key", "peers", "propagation_timeout"})
    p = _mapping(d.get("primary") or {}, "distribution.primary", {"kind", "listen", "control"})
    kind = p.get("kind", "knot")
    if kind not in PRIMARY_KINDS:
        raise ConfigError(f"distribution.primary.kind: expected one of {', '.join(PRIMARY_KINDS)}")
    host, port = _host_port(p.get("listen", "127.0.0.1:5399"), "distribution.primary.listen", 53)
    control = p.get("control", "var/knot/knot.sock" if kind == "knot" else "127.0.0.1:953")
    if not isinstance(control, str) or not control:
        raise ConfigError("distribution.primary.control: expected a socket path (knot) or HOST:PORT (bind)")
    if kind == "bind":
        _host_port(control, "distribution.primary.control", 953)
    key_path = d.get("tsig_key")
    if not isinstance(key_path, str) or not key_path:
        raise ConfigError("distribution.tsig_key: required (a key file as `tsig-keygen -a hmac-sha256 NAME` "
                          "prints it)")
    key = read_key(Path(key_path), "distribution.tsig_key")
    peers_raw = d.get("peers") or []
    if not isinstance(peers_raw, list):
        raise ConfigError("distribution.peers: expected a list of HOST:PORT")
    peers = tuple(_host_port(v, f"distribution.peers[{i}]", 53) for i, v in enumerate(peers_raw))
    timeout = d.get("propagation_timeout", 60)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError("distribution.propagation_timeout: expected a number of seconds > 0")
    return Distribution(Primary(kind, host, port, control), Path(key_path), key.name, key.algorithm, peers,
                        float(timeout))


def parse_secondaries(value: Any, where: str) -> tuple[Secondary, ...]:
    """`operators.<op>.secondaries`: where the primary sends NOTIFY and `fleet status` asks."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of {{address: HOST:PORT, name: NAME}}")
    out = []
    for i, item in enumerate(value):
        w = f"{where}[{i}]"
        if isinstance(item, str):
            item = {"address": item}
        m = _mapping(item, w, {"address", "name", "tsig"})
        host, port = _host_port(m.get("address"), f"{w}.address", 53)
        name = m.get("name", "")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]{0,63}", name):
            raise ConfigError(f"{w}.name: expected letters, digits, . _ - (it names config blocks and metrics)")
        tsig = m.get("tsig", True)
        if not isinstance(tsig, bool):
            raise ConfigError(f"{w}.tsig: expected true or false")
        out.append(Secondary(host, port, name, tsig))
    labels = [s.label for s in out]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: two secondaries share a name or address")
    return tuple(out)


FLEET_DIR = "fleet"  # under state_dir: the primary's generated files, the served-zone markers


def distribution_of(config: Config) -> Distribution:
    """The `distribution` section, or a one-line error for a command that needs it."""
    if config.distribution is None:
        raise ConfigError("distribution: not configured (see README, Scaling out)")
    return config.distribution


def absolute(path: Path | str) -> str:
    return str(Path(path).absolute())
