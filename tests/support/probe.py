"""The probe CLI's test world: the names its orders block, the config it runs with, the zones put
back to their base rules afterwards, and the daemon's metrics read as samples; shared by the probe
tests (tests/probe/test_probe_cli.py, test_probe_proof.py)."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

from blocker.zone.read import read_meta
from tests.resolverlib import TEST_ORIGINS, Resolver, base_rules, canary_name, rpz_zone, write_atomically

# What each resolver's blocked answers carry (see tests/resolverlib.py, BlockSignature per class).
MODES = {"unbound": "empty", "bind": "rpz", "kresd": "any", "pdns_recursor": "empty"}

REDIRECT_A = "192.0.2.10"                 # orange's information page
BLOCKED = "added.example.gg"              # order cli-block (nxdomain, with subdomains)
REDIRECTED = "redir.example.gg"           # order cli-redirect (redirect, with subdomains)
LIFTED = "open.example.gg"                # order cli-old: ended before T_IN, within the recent window
CONTROL = "www.example.gg"                # the AuthServer answers it; no order names it
OUR_NAMES = (BLOCKED, REDIRECTED, LIFTED, CONTROL)


def config_text(*, zones: Path, state: Path, orders: Path, mode: str, orange_extra: str = "") -> str:
    """orange (redirect A REDIRECT_A) and free; short probe timeouts so a dead resolver costs ~1 s."""
    return f"""\
orders_dir: {orders}
state_dir: {state}
zones_dir: {zones}
timezone: UTC
publish:
  verify_timeout: 5
daemon:
  watch_interval: 0.2
probe:
  interval: 1
  control_names: [{CONTROL}]
  timeout: 0.4
  retries: 1
operators:
  orange:
    name: Orange
    redirect: {{a: [{REDIRECT_A}]}}
    signature: {{nxdomain_authority: {mode}}}
{orange_extra}  free:
    name: Free
    redirect: {{a: [192.0.2.40]}}
"""


def restore_base_rules(resolvers: dict[str, Resolver], zones_dir: Path) -> None:
    """Every zone back to its base rules (serial above any written here), reloaded everywhere."""
    flush = [*{n for origin in TEST_ORIGINS for n in base_rules(origin)}, *OUR_NAMES,
             *(canary_name(origin) for origin in TEST_ORIGINS)]
    serials = {}
    for origin in TEST_ORIGINS:
        path = zones_dir / f"{origin.split('.')[0]}.rpz"
        meta = read_meta(path)
        serials[origin] = max((meta.serial + 1) if meta else 1, int(time.time()))
        write_atomically(path, rpz_zone(origin, base_rules(origin), serial=serials[origin]))
    for res in resolvers.values():
        res.reload(changed=flush)
        for origin in TEST_ORIGINS:
            res.wait_for(lambda r, o=origin: r.canary_serial(canary_name(o)) == serials[o], timeout=10,
                         what=f"base rules of {origin} back")
        # PowerDNS keeps the canary answers just asked in its packet cache (TTL 60): a module
        # that publishes next and waits for its own serial must not get ours.
        flush_canaries = res.flush_command([canary_name(origin) for origin in TEST_ORIGINS])
        if flush_canaries:
            res.run_tool(flush_canaries)


def metrics(port: int) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    out = []
    for line in text.splitlines():
        m = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if m is None or line.startswith("#"):
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def metric(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float | None:
    for sample, have, value in samples:
        if sample == name and all(have.get(k) == v for k, v in labels.items()):
            return value
    return None
