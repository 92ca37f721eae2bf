"""The hidden primary's complete config (Knot DNS or BIND), as `blocker fleet primary-config` prints it.

Reloading it after a publish is publishing's part: `blocker.publish.primary`.

Knot DNS computes the IXFR itself from the zone file blocker replaces (`zonefile-load:
difference`, the journal holding the full zone so a restart keeps the history). Not
`difference-no-serial`: with it Knot ignores the file's serial and serves its own increment
(measured: file serial 5000 -> served 1001), which breaks the serial rules (equal on replicas,
never backwards) and the serial `fleet status` compares.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from blocker.config.distribution import FLEET_DIR, Secondary, TsigKey
from blocker.config.distribution import absolute as _abs
from blocker.config.distribution import distribution_of as _dist
from blocker.config.model import Config, OperatorConfig
from blocker.files import replace_file

if TYPE_CHECKING:
    pass

def _knot_addr(host: str, port: int) -> str:
    return f"{host}@{port}"


def knot_key_file(config: Config) -> Path:
    return config.state_dir.absolute() / FLEET_DIR / "knot-key.conf"


def write_knot_key(config: Config, key: TsigKey) -> Path:
    """Knot cannot read BIND key syntax: the key goes, in Knot's syntax, to a file only the
    daemon's user reads, that the printed config `include:`s (the printed text holds no secret)."""
    path = knot_key_file(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"key:\n  - id: {key.name}\n    algorithm: {key.algorithm}\n    secret: {key.secret}\n"
    replace_file(path, text.encode(), mode=0o600, exact_mode=True)
    return path


def _acl_id(op: OperatorConfig, sec: Secondary) -> str:
    return f"xfr-{op.id}-{sec.label}".replace(":", "_").replace("[", "").replace("]", "")


def knot_config(config: Config) -> str:
    dist = _dist(config)
    base = config.state_dir.absolute() / FLEET_DIR / "knot"
    lines = [
        "# Knot DNS hidden primary, printed by `blocker fleet primary-config` (do not edit: re-print it).",
        f"# Run: knotd -c THIS_FILE   (reload a zone: knotc -s {_abs(dist.primary.control)} -b zone-reload ZONE)",
        "server:",
        f"    rundir: {base / 'run'}",
        f"    listen: {_knot_addr(dist.primary.host, dist.primary.port)}",
        "",
        f"include: {knot_key_file(config)}",
        "",
        "log:",
        "  - target: stderr",
        "    any: info",
        "",
    ]
    remotes: list[str] = []
    acls = [
        "  - id: xfr-key",
        "    address: [0.0.0.0/0, ::/0]",
        f"    key: {dist.key_name}",
        "    action: transfer",
    ]
    for op in config.operators.values():
        for sec in op.secondaries:
            rid = _acl_id(op, sec).removeprefix("xfr-")
            remotes += [f"  - id: {rid}", f"    address: {_knot_addr(sec.host, sec.port)}"]
            if sec.tsig:
                remotes.append(f"    key: {dist.key_name}")
            else:  # e.g. Unbound: no TSIG at all, allowed by its address alone
                acls += [f"  - id: {_acl_id(op, sec)}", f"    address: {sec.host}", "    action: transfer"]
    if remotes:
        lines += ["remote:", *remotes, ""]
    lines += ["acl:", *acls, ""]
    lines += [
        "template:",
        "  - id: default",
        f"    storage: {config.zones_dir.absolute()}",
        "    zonefile-sync: -1               # never write the zone back: the file is blocker's",
        "    zonefile-load: difference       # IXFR computed from the file blocker replaced; its serial kept",
        "    journal-content: all            # the full zone in the journal: history survives a restart",
        "    journal-max-usage: 2G            # the full zone plus its history: ~200 MB per million names",
        "    semantic-checks: off",
        "    serial-policy: increment",
        "",
        "database:",
        f"    storage: {base / 'db'}",
        "",
        "control:",
        f"    listen: {_abs(dist.primary.control)}",
        "",
        "zone:",
    ]
    for op in config.operators.values():
        lines += [f"  - domain: {op.origin}", f"    file: {op.id}.rpz"]
        acl = ["xfr-key", *(_acl_id(op, s) for s in op.secondaries if not s.tsig)]
        lines.append(f"    acl: [{', '.join(acl)}]")
        if op.secondaries:
            lines.append(f"    notify: [{', '.join(_acl_id(op, s).removeprefix('xfr-') for s in op.secondaries)}]")
    return "\n".join(lines) + "\n"


def bind_config(config: Config) -> str:
    dist = _dist(config)
    base = config.state_dir.absolute() / FLEET_DIR / "bind"
    chost, _, cport = dist.primary.control.rpartition(":")
    if not chost or not cport.isdigit():
        from blocker.config.model import ConfigError

        raise ConfigError(f"distribution.primary.control: {dist.primary.control!r}: a BIND primary is reloaded "
                          "with rndc: HOST:PORT of its control channel (e.g. 127.0.0.1:953)")
    host = dist.primary.host
    out = [
        "// BIND hidden primary, printed by `blocker fleet primary-config --kind bind` (re-print it, do not edit).",
        f"// Run: named -g -c THIS_FILE   (reload a zone: rndc -s {chost} -p {cport} -k {_abs(dist.tsig_key)} "
        "reload ZONE)",
        f'include "{_abs(dist.tsig_key)}";',
        "options {",
        f'  directory "{base}";',
        f'  pid-file "{base / "named.pid"}";',
        f"  listen-on port {dist.primary.port} {{ {host}; }};" if ":" not in host else "  listen-on { none; };",
        f"  listen-on-v6 port {dist.primary.port} {{ {host}; }};" if ":" in host else "  listen-on-v6 { none; };",
        "  recursion no;",
        "  allow-query { any; };",
        "  notify explicit;",
        "  ixfr-from-differences yes;      // IXFR computed from the file blocker replaced",
        "  max-journal-size 512M;",
        "  dnssec-validation no;",
        '  version none;',
        "};",
        f'controls {{ inet {chost} port {cport} allow {{ {chost}; }} keys {{ "{dist.key_name}"; }}; }};',
    ]
    for op in config.operators.values():
        allow = [f'key "{dist.key_name}";', *(f"{s.host};" for s in op.secondaries if not s.tsig)]
        notify = [f'{s.host} port {s.port}' + (f' key "{dist.key_name}"' if s.tsig else "") + ";"
                  for s in op.secondaries]
        out += [
            f'zone "{op.origin.rstrip(".")}" {{',
            "  type primary;",
            f'  file "{config.zones_dir.absolute() / (op.id + ".rpz")}";',
            f'  journal "{base / (op.id + ".rpz.jnl")}";',
            f"  allow-transfer {{ {' '.join(allow)} }};",
            f"  also-notify {{ {' '.join(notify)} }};" if notify else "  notify no;",
            "};",
        ]
    return "\n".join(out) + "\n"


def primary_config(config: Config, kind: str | None = None) -> str:
    dist = _dist(config)
    kind = kind or dist.primary.kind
    key = dist.key()  # checks the key file (mode, syntax) whatever the kind
    if kind == "knot":
        write_knot_key(config, key)
        (config.state_dir.absolute() / FLEET_DIR / "knot" / "db").mkdir(parents=True, exist_ok=True)
        (config.state_dir.absolute() / FLEET_DIR / "knot" / "run").mkdir(parents=True, exist_ok=True)
        Path(_abs(dist.primary.control)).parent.mkdir(parents=True, exist_ok=True)
        return knot_config(config)
    (config.state_dir.absolute() / FLEET_DIR / "bind").mkdir(parents=True, exist_ok=True)
    return bind_config(config)


