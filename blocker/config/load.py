"""The configuration file -> a checked `Config`: strict like the orders (an unknown key, a value of
the wrong kind, a name that is not a host name is an error naming the key and line), a user file
laid over the built-in defaults key by key.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from pathlib import Path
from typing import Any

import idna

from blocker.config.address import parse_listen, parse_resolver_address
from blocker.config.default import DEFAULT_CONFIG_PATH, default_text
from blocker.config.model import (
    RELOAD_KINDS,
    Config,
    ConfigError,
    OperatorConfig,
    Redirect,
    ReloadHook,
    ResolverConfig,
    SoaConfig,
)
from blocker.orders.legaltime import LegalTimeError, zone
from blocker.orders.names import InvalidName, normalize_name
from blocker.orders.yamlio import LineDict, YamlError, load_mapping, loads_mapping

TOP_KEYS = {"orders_dir", "state_dir", "zones_dir", "timezone", "legal", "rpz", "publish", "http", "daemon",
            "log_format", "probe", "operators", "distribution"}
PUBLISH_CHECKS = ("auto", "named-checkzone", "structural", "none")
NXDOMAIN_AUTHORITIES = ("any", "rpz", "empty")


def load_config(path: Path | None = None) -> Config:
    """`--config FILE`, else ./configs/blocker.yaml when present, else the built-in defaults."""
    defaults = loads_mapping(default_text())
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    if path is None:
        return build(defaults, "<built-in defaults>")
    try:
        user = load_mapping(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except YamlError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        merged = _merge(defaults, user, "")
        if "operators" in user:  # a file that lists operators replaces the default four
            merged["operators"] = user["operators"]
        return build(merged, str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


_OPTIONAL_SECTIONS = {"distribution"}  # sections without defaults (absent: the feature is off)


def _merge(base: dict[str, Any], over: LineDict, where: str) -> dict[str, Any]:
    merged: dict[str, Any] = dict(base)
    for key, value in over.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in base and where != "operators" and path not in _OPTIONAL_SECTIONS:
            raise ConfigError(f"{path}: unknown key (line {over.line_of(key)})")
        if isinstance(value, LineDict) and isinstance(base.get(key), dict) and where != "operators":
            merged[key] = _merge(base[key], value, path)
        else:
            merged[key] = value
    return merged


class _Reader:
    """Typed access to one section, with errors that name the key path."""

    def __init__(self, data: dict[str, Any], path: str, allowed: set[str]) -> None:
        self.data, self.path = data, path
        unknown = set(data) - allowed
        if unknown:
            key = sorted(map(str, unknown))[0]
            line = data.line_of(key) if isinstance(data, LineDict) else None
            raise ConfigError(f"{self._p(key)}: unknown key" + (f" (line {line})" if line else ""))

    def _p(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        value = self.data.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise ConfigError(f"{self._p(key)}: expected a number")
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ConfigError(f"{self._p(key)}: expected {names}, got {value!r}")
        return value

    def number(self, key: str, minimum: float = 0) -> float:
        value = self.get(key, (int, float))
        if value is None or value < minimum:
            raise ConfigError(f"{self._p(key)}: expected a number >= {minimum}")
        return value  # type: ignore[no-any-return]  # checked a number just above

    def section(self, key: str, allowed: set[str]) -> _Reader:
        return _Reader(self.get(key, dict, {}), self._p(key), allowed)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list, [])
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self._p(key)}: expected a list of text values")
        return tuple(value)


def _resolver(value: Any, where: str) -> ResolverConfig:
    if isinstance(value, str):
        value = {"address": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected HOST:PORT or a mapping with `address`")
    r = _Reader(value, where, {"address", "name", "site", "transports"})
    address = r.get("address", str)
    if not address:
        raise ConfigError(f"{where}.address: required (HOST:PORT)")
    host, port = parse_resolver_address(address, f"{where}.address", min_port=0)
    transports = r.strings("transports") or ("udp",)
    if not set(transports) <= {"udp", "tcp"}:
        raise ConfigError(f"{where}.transports: expected udp and/or tcp")
    return ResolverConfig(host, port, r.get("name", str, ""), r.get("site", str, ""), tuple(transports))


def _checked_name(value: str, key: str) -> str:
    try:
        return normalize_name(value)
    except InvalidName as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _checked_origin(value: str, key: str) -> str:
    try:
        return normalize_origin(value)
    except InvalidName as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _redirect(r: _Reader, where: str) -> Redirect:
    red = r.section("redirect", {"a", "aaaa", "cname"})
    for addr in (*red.strings("a"), *red.strings("aaaa")):
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ConfigError(f"{where}.redirect: {addr!r} is not an IP address") from None
    cname = red.get("cname", str)
    if cname is not None:
        cname = _checked_name(cname, f"{where}.redirect.cname")
    return Redirect(red.strings("a"), red.strings("aaaa"), cname)


def _reload(r: _Reader, where: str) -> ReloadHook:
    rel = r.section("reload", {"kind", "command", "server", "key_file", "socket"})
    kind = rel.get("kind", str, "none")
    if kind not in RELOAD_KINDS:
        raise ConfigError(f"{where}.reload.kind: expected one of {', '.join(RELOAD_KINDS)}")
    command = rel.strings("command")
    if kind == "command" and not command:
        raise ConfigError(f"{where}.reload.command: required for kind `command` (an argv list)")
    return ReloadHook(kind, command, rel.get("server", str), rel.get("key_file", str), rel.get("socket", str))


def _operator(op_id: str, value: Any) -> OperatorConfig:
    where = f"operators.{op_id}"
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping")
    r = _Reader(value, where, {"name", "origin", "redirect", "reload", "resolvers", "signature", "secondaries"})
    origin = _checked_origin(r.get("origin", str, f"{op_id}.rpz.blocker."), f"{where}.origin")
    redirect = _redirect(r, where)
    reload = _reload(r, where)
    authority = r.section("signature", {"nxdomain_authority"}).get("nxdomain_authority", str, "any")
    if authority not in NXDOMAIN_AUTHORITIES:
        raise ConfigError(f"{where}.signature.nxdomain_authority: expected any, rpz or empty")
    resolvers = tuple(_resolver(v, f"{where}.resolvers[{i}]") for i, v in enumerate(r.get("resolvers", list, [])))
    labels = [res.name or res.address for res in resolvers]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}.resolvers: two resolvers share a name or address (metrics and probe results "
                          "are labelled by it)")
    return OperatorConfig(id=op_id, name=r.get("name", str, op_id), origin=origin, redirect=redirect,
                          reload=reload, resolvers=resolvers, nxdomain_authority=authority,
                          secondaries=_fleet().parse_secondaries(value.get("secondaries"), f"{where}.secondaries"))


_AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")  # a metric label a dashboard shows
_ASCII_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_OPERATOR_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}\Z")


def normalize_origin(origin: str) -> str:
    """Zone origins (and the NS and SOA names) are absolute (trailing dot); they may be private
    names, not public suffixes. They are written as they are into every zone file and asked as
    they are in DNS queries: ASCII host names only (`orangé.rpz.blocker.` would fail at the
    first render), the A-label of an IDN being named in the error."""
    if not isinstance(origin, str):
        raise InvalidName(f"expected a host name, got {origin!r}")
    text = origin.strip()
    if not text.isascii():  # checked before lower(): `"\u212a".lower()` is an ASCII `k`
        hint = ""
        with contextlib.suppress(idna.IDNAError, UnicodeError):
            hint = f" (its A-label: {idna.encode(text.rstrip('.'), uts46=True).decode('ascii')}.)"
        raise InvalidName(f"{origin!r} is not an ASCII host name: it is written as is into zone files and DNS "
                          f"queries{hint}")
    text = text.lower()
    if text.endswith("."):
        text = text[:-1]
    if text and len(text) <= 253 and all(map(_ASCII_LABEL.match, text.split("."))):
        return text + "."
    raise InvalidName(f"{origin!r} is not a valid zone origin (ASCII letters, digits and inner hyphens, "
                      "labels of 1 to 63, at most 253 in all)")


# --- build: one function per section, each returning the Config fields it gives ------------------


def _timezone(top: _Reader) -> dict[str, Any]:
    tz = top.get("timezone", str)
    try:
        zone(tz)
    except LegalTimeError as exc:
        raise ConfigError(f"timezone: {exc}") from None
    return {"timezone": tz}


def _legal(top: _Reader) -> dict[str, Any]:
    legal = top.section("legal", {"extend_to_working_day", "holidays_country", "exported_by"})
    country = legal.get("holidays_country", str, "FR")
    try:
        import holidays

        holidays.country_holidays(country)
    except (NotImplementedError, KeyError, AttributeError):
        raise ConfigError(f"legal.holidays_country: {country!r} is not a country python-holidays knows") from None
    return {"extend_to_working_day": legal.get("extend_to_working_day", bool, False), "holidays_country": country,
            "legal_exported_by": legal.get("exported_by", str, None)}


def _rpz(top: _Reader) -> dict[str, Any]:
    rpz = top.section("rpz", {"ttl", "soa", "ns"})
    soa = rpz.section("soa", {"mname", "rname", "refresh", "retry", "expire", "minimum"})
    for key, value in (("rpz.ns", rpz.get("ns", str)), ("rpz.soa.mname", soa.get("mname", str)),
                       ("rpz.soa.rname", soa.get("rname", str))):
        _checked_origin(value, key)
    return {
        "rpz_ttl": int(rpz.number("ttl", 0)),
        "soa": SoaConfig(
            mname=soa.get("mname", str), rname=soa.get("rname", str),
            refresh=int(soa.number("refresh", 1)), retry=int(soa.number("retry", 1)),
            expire=int(soa.number("expire", 1)), minimum=int(soa.number("minimum", 0)),
        ),
        "ns": rpz.get("ns", str),
    }


def _publish(top: _Reader) -> dict[str, Any]:
    pub = top.section("publish", {"check", "max_removal_share", "removal_guard_min", "reload_timeout",
                                  "verify_timeout"})
    check = pub.get("check", str)
    if check not in PUBLISH_CHECKS:
        raise ConfigError("publish.check: expected auto, named-checkzone, structural or none")
    share = pub.number("max_removal_share")
    if share > 1:
        raise ConfigError("publish.max_removal_share: expected a share between 0 and 1")
    return {
        "publish_check": check,
        "max_removal_share": float(share),
        "removal_guard_min": int(pub.number("removal_guard_min")),
        "reload_timeout": float(pub.number("reload_timeout", 1)),
        "publish_verify_timeout": float(pub.number("verify_timeout")),
    }


def _daemon(top: _Reader) -> dict[str, Any]:
    daemon = top.section("daemon", {"reconcile_interval", "watch_interval", "misfire_grace"})
    return {
        "http_listen": parse_listen(top.section("http", {"listen"}).get("listen", str), "http.listen"),
        "reconcile_interval": float(daemon.number("reconcile_interval", 1)),
        "watch_interval": float(daemon.number("watch_interval", 0.1)),
        "misfire_grace": int(daemon.number("misfire_grace", 1)),
    }


def _probe(top: _Reader) -> dict[str, Any]:
    probe = top.section("probe", {
        "interval", "recent_window_days", "control_names", "timeout", "retries", "concurrency",
        "rate_per_resolver", "sample_per_pass", "sweep_period", "agent_name",
    })
    agent_name = probe.get("agent_name", str) or ""
    if agent_name and not _AGENT_NAME.match(agent_name):
        raise ConfigError("probe.agent_name: expected ASCII letters, digits, . _ - (at most 63), or empty")
    return {
        "control_names": tuple(_checked_name(raw, "probe.control_names") for raw in probe.strings("control_names")),
        "probe_interval": float(probe.number("interval", 1)),
        "probe_recent_window_days": int(probe.number("recent_window_days")),
        "probe_timeout": float(probe.number("timeout", 0.05)),
        "probe_retries": int(probe.number("retries")),
        "probe_concurrency": int(probe.number("concurrency", 1)),
        "probe_rate_per_resolver": float(probe.number("rate_per_resolver", 1)),
        "probe_sample_per_pass": int(probe.number("sample_per_pass")),
        "probe_sweep_period": float(probe.number("sweep_period")),
        "probe_agent_name": agent_name,
    }


def _log_format(top: _Reader) -> dict[str, Any]:
    log_format = top.get("log_format", str)
    if log_format not in ("plain", "json"):
        raise ConfigError("log_format: expected plain or json")
    return {"log_format": log_format}


def _operators(top: _Reader) -> dict[str, Any]:
    ops_raw = top.get("operators", dict, {})
    if not ops_raw:
        raise ConfigError("operators: at least one operator is required")
    operators = {}
    for op_id in sorted(ops_raw):
        # The id is a label of the canary name (`serial.<id>.canary.blocker`) and of file names:
        # ASCII only (`isalnum()` alone would let `orangé` through, to a UnicodeEncodeError later).
        if not isinstance(op_id, str) or not _OPERATOR_ID.match(op_id):
            raise ConfigError(f"operators: {op_id!r} is not a valid operator id (ASCII lower-case letters, digits, "
                              "- _; at most 63)")
        operators[op_id] = _operator(op_id, ops_raw[op_id])
    origins = [op.origin for op in operators.values()]
    if len(set(origins)) != len(origins):
        raise ConfigError("operators: two operators share one zone origin")
    return {"operators": operators}


# In the order the sections are checked: the first problem found is the one reported.
_SECTIONS = (_timezone, _legal, _rpz, _publish, _daemon, _probe, _log_format, _operators)


def build(data: dict[str, Any], source: str) -> Config:
    top = _Reader(data, "", TOP_KEYS)
    values: dict[str, Any] = {
        "orders_dir": Path(top.get("orders_dir", str)),
        "state_dir": Path(top.get("state_dir", str)),
        "zones_dir": Path(top.get("zones_dir", str)),
    }
    for section in _SECTIONS:
        values.update(section(top))
    values["distribution"] = _fleet().parse_distribution(data.get("distribution"))
    return Config(**values, source=source)


def _fleet() -> Any:
    from blocker.config import distribution as model  # imported late: it builds on the config model

    return model
