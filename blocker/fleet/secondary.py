"""What an ops engineer pastes into a resolver so it follows the primary by zone transfer.

Every snippet names the key by its file, never by its secret: the key file is copied to the
resolver host (same path by default, `--key-file` otherwise) with the resolver's user as the
only reader.
"""

from __future__ import annotations

from blocker.config.address import parse_listen
from blocker.config.distribution import Distribution
from blocker.config.model import Config, ConfigError, OperatorConfig


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
    lines += ["  # The zone survives a restart in this file (no window without the policy while it",
              "  # transfers again). Unbound rewrites it whole after every transfer, in the thread that",
              "  # made the transfer (~5 s at 1M names): run num-threads: 2 or more, the others serve.",
              f'  zonefile: "{op.id}.rpz"', "  rpz-log: yes", f'  rpz-log-name: "{op.id}"']
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


KRESD_SPLIT = "-- ==== kresd.conf (Lua), above any policy.FORWARD / policy.STUB rule ===="
KNOT_RESOLVER_LISTEN = "127.0.0.1:5398"
KNOT_RESOLVER_DIR = "/var/lib/knot/blocker"


def _knot_resolver(op: OperatorConfig, dist: Distribution, key_file: str, listen: str, folder: str) -> str:
    """Knot Resolver 5 reads RPZ from a file only: a Knot DNS on the resolver host follows the
    primary and writes the zone file (`zonefile-sync: 0`: at once, after every transfer);
    `policy.rpz(..., true)` watches it (with lua-cqueues installed) and re-reads it on change."""
    host, port = parse_listen(listen, "--listen")
    ids = [f"blocker-primary-{i + 1}" for i in range(len(primaries(dist)))]
    remotes: list[str] = []
    for rid, (h, p) in zip(ids, primaries(dist), strict=True):
        remotes += [f"  - id: {rid}", f"    address: {h}@{p}", f"    key: {dist.key_name}"]
    zone_file = f"{folder}/{op.id}.rpz"
    return "\n".join([
        f"# Knot Resolver follows the primary for {op.id} through a Knot DNS on the same host, which",
        "# writes the RPZ file kresd watches (printed by `blocker fleet secondary-config --kind knot-resolver`).",
        f"# Above the {KRESD_SPLIT.split()[1]} line: knot.conf of that Knot DNS (run: knotd -c knot.conf).",
        f"# {key_file}: the key in Knot's syntax (`blocker fleet primary-config` writes it under",
        "# state_dir/fleet/knot-key.conf), readable by the knot user only.",
        f"# List {host}:{port} (this host's address) under operators.{op.id}.secondaries: the primary",
        "# then NOTIFYs it on every change.",
        "# Below: the kresd rule; kresd watches the file only with Debian package lua-cqueues installed.",
        "server:",
        f"    rundir: {folder}/run",
        f"    listen: {host}@{port}",
        f"include: {key_file}",
        "remote:",
        *remotes,
        "acl:",
        "  - id: notify-from-primary",
        f"    address: [{', '.join(h for h, _ in primaries(dist))}]",
        f"    key: {dist.key_name}",
        "    action: notify",
        "database:",
        f"    storage: {folder}/db",
        "control:",
        f"    listen: {folder}/run/knot.sock",
        "template:",
        "  - id: default",
        f"    storage: {folder}",
        "    zonefile-sync: 0               # the file kresd reads, written after every transfer",
        "    journal-content: changes",
        "    semantic-checks: off",
        "zone:",
        f"  - domain: {op.origin}",
        f"    master: [{', '.join(ids)}]",
        "    acl: notify-from-primary",
        f"    file: {op.id}.rpz",
        KRESD_SPLIT,
        f"policy.add(policy.rpz(policy.DENY, '{zone_file}', true))",
    ]) + "\n"


def secondary_config(config: Config, operator: str, kind: str, key_file: str | None = None,
                     listen: str | None = None, folder: str | None = None) -> str:
    """`listen` and `folder` (knot-resolver only): where the local Knot DNS listens and keeps
    the zone file kresd reads, its journal and its control socket."""
    if config.distribution is None:
        raise ConfigError("distribution: not configured (see README, Scaling out)")
    if operator not in config.operators:
        raise ConfigError(f"operators: no operator {operator!r} ({', '.join(sorted(config.operators))})")
    dist = config.distribution
    op = config.operators[operator]
    if kind == "knot-resolver":
        from blocker.fleet.primary import knot_key_file

        return _knot_resolver(op, dist, key_file or str(knot_key_file(config)), listen or KNOT_RESOLVER_LISTEN,
                              (folder or KNOT_RESOLVER_DIR).rstrip("/") or "/")
    key = key_file or str(dist.tsig_key.absolute())
    if kind == "bind":
        return _bind(op, dist, key)
    if kind == "unbound":
        return _unbound(op, dist)
    return _pdns(op, dist, key)
