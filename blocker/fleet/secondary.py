"""What an ops engineer pastes into a resolver so it follows the primary by zone transfer.

Every snippet names the key by its file, never by its secret: the key file is copied to the
resolver host (same path by default, `--key-file` otherwise) with the resolver's user as the
only reader.
"""

from __future__ import annotations

from blocker.config.model import Config, ConfigError, OperatorConfig
from blocker.fleet.model import Distribution


def primaries(dist: Distribution) -> list[tuple[str, int]]:
    return [(dist.primary.host, dist.primary.port), *dist.peers]


def _bind(op: OperatorConfig, dist: Distribution, key_file: str) -> str:
    zone = op.origin.rstrip(".")
    prim = " ".join(f'{h} port {p} key "{dist.key_name}";' for h, p in primaries(dist))
    notify = " ".join(f"{h};" for h, _ in primaries(dist))
    return "\n".join([
        f"// BIND 9.18 secondary RPZ for {op.id}, printed by `blocker fleet secondary-config`.",
        f'// In options {{ }}: response-policy {{ zone "{zone}" min-update-interval 0; }};',
        f'include "{key_file}";',
        f'zone "{zone}" {{',
        "  type secondary;",
        f"  primaries {{ {prim} }};",
        f"  allow-notify {{ {notify} }};",
        f'  file "{op.id}.rpz.db";',
        "  masterfile-format text;",
        "};",
    ]) + "\n"


def _unbound(op: OperatorConfig, dist: Distribution) -> str:
    lines = [
        f"# Unbound secondary RPZ for {op.id}, printed by `blocker fleet secondary-config`.",
        "# Unbound has no TSIG for transfers: the primary allows this resolver by address (tsig: false).",
        "rpz:",
        f'  name: "{op.origin}"',
    ]
    lines += [f"  primary: {h}@{p}" for h, p in primaries(dist)]
    lines += [f"  allow-notify: {h}" for h, _ in primaries(dist)]
    lines += [f'  zonefile: "{op.id}.rpz"', "  rpz-log: yes", f'  rpz-log-name: "{op.id}"']
    return "\n".join(lines) + "\n"


def _pdns(op: OperatorConfig, dist: Distribution, key_file: str) -> str:
    # The secret is read from the key file at start, so the Lua config holds none.
    prims = ", ".join(f'"{h}:{p}"' for h, p in primaries(dist))
    return "\n".join([
        f"-- PowerDNS Recursor 4.8 secondary RPZ for {op.id}, printed by `blocker fleet secondary-config`.",
        "-- Put in the file named by lua-config-file in recursor.conf.",
        "do",
        f'  local f = assert(io.open("{key_file}", "r"))',
        "  local text = f:read('*a')",
        "  f:close()",
        "  local secret = string.match(text, 'secret%s+\"([^\"]+)\"')",
        f'  rpzPrimary({{{prims}}}, "{op.origin}", {{tsigname="{dist.key_name}", tsigalgo="{dist.key_algorithm}",',
        f'    tsigsecret=secret, refresh=5, policyName="{op.id}", seedFile="{op.id}.rpz.seed"}})',
        "end",
    ]) + "\n"


def _knot_resolver(op: OperatorConfig, dist: Distribution, key_file: str) -> str:
    prim = "\n".join(f"    address: {h}@{p}\n    key: {dist.key_name}" for h, p in primaries(dist))
    return "\n".join([
        f"# Knot Resolver reads RPZ from a file only: a Knot DNS on the same host follows the primary for {op.id}",
        "# and writes the file kresd watches. Part 1, knot.conf of that local secondary",
        f"# ({key_file}.knot: the key in Knot syntax, `blocker fleet primary-config` writes it under state_dir/fleet):",
        "server:",
        "    listen: 127.0.0.1@5398",
        f"include: {key_file}.knot",
        "remote:",
        "  - id: blocker-primary",
        prim,
        "acl:",
        "  - id: notify-from-primary",
        f"    address: [{', '.join(h for h, _ in primaries(dist))}]",
        "    action: notify",
        "zone:",
        f"  - domain: {op.origin}",
        "    master: blocker-primary",
        "    acl: notify-from-primary",
        f"    file: /var/lib/knot/{op.id}.rpz",
        "    zonefile-sync: 0",
        "    journal-content: changes",
        "",
        "-- Part 2, kresd config (Lua):",
        f"-- policy.add(policy.rpz(policy.DENY, '/var/lib/knot/{op.id}.rpz', true))",
    ]) + "\n"


def secondary_config(config: Config, operator: str, kind: str, key_file: str | None = None) -> str:
    if config.distribution is None:
        raise ConfigError("distribution: not configured (see README, Scaling out)")
    if operator not in config.operators:
        raise ConfigError(f"operators: no operator {operator!r} ({', '.join(sorted(config.operators))})")
    dist = config.distribution
    op = config.operators[operator]
    key = key_file or str(dist.tsig_key.absolute())
    if kind == "bind":
        return _bind(op, dist, key)
    if kind == "unbound":
        return _unbound(op, dist)
    if kind == "powerdns-recursor":
        return _pdns(op, dist, key)
    return _knot_resolver(op, dist, key)
