"""The hidden primary: its complete config, and reloading a zone through its control channel.

Knot DNS computes the IXFR itself from the zone file blocker replaces (`zonefile-load:
difference`, the journal holding the full zone so a restart keeps the history). Not
`difference-no-serial`: with it Knot ignores the file's serial and serves its own increment
(measured: file serial 5000 -> served 1001), which breaks the serial rules (equal on replicas,
never backwards) and the serial `fleet status` compares.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from blocker.config.model import Config, OperatorConfig
from blocker.files import replace_file
from blocker.fleet.knotctl import KnotCtl, KnotCtlError
from blocker.fleet.model import Distribution, Secondary, TsigKey
from blocker.publish.hooks import ReloadResult
from blocker.zone.render import _templates, canary_owner

if TYPE_CHECKING:
    from blocker.publish.plan import OperatorPlan

FLEET_DIR = "fleet"


def _dist(config: Config) -> Distribution:
    if config.distribution is None:
        from blocker.config.model import ConfigError

        raise ConfigError("distribution: not configured (see README, Scaling out)")
    return config.distribution


def _knot_addr(host: str, port: int) -> str:
    return f"{host}@{port}"


def _abs(path: Path | str) -> str:
    return str(Path(path).absolute())


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
        f"# Run: knotd -c THIS_FILE   (reload a zone: knotc -s {_abs(dist.primary.control)} zone-reload ZONE)",
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


def reload_argv(config: Config, op: OperatorConfig) -> list[str]:
    dist = _dist(config)
    if dist.primary.kind == "knot":
        return ["knotc", "-s", _abs(dist.primary.control), "-t", str(max(1, int(config.reload_timeout))),
                "zone-reload", op.origin]
    host, _, port = dist.primary.control.rpartition(":")
    return ["rndc", "-s", host, "-p", port, "-k", _abs(dist.tsig_key), "reload", op.origin.rstrip(".")]


def reload_zone(config: Config, op: OperatorConfig) -> tuple[bool, str, list[str]]:
    """Make the primary load the zone file just replaced; it then NOTIFYs the secondaries.
    `knotc` exits 0 with `OK` only when the zone was reloaded (an unknown zone: exit 1)."""
    argv = reload_argv(config, op)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=config.reload_timeout + 5,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return False, f"{argv[0]}: command not found", argv
    except subprocess.TimeoutExpired:
        return False, f"{argv[0]}: no answer within {config.reload_timeout:g} s", argv
    output = " ".join((proc.stdout + " " + proc.stderr).split())[:500]
    if proc.returncode != 0:
        return False, f"primary reload: {argv[0]} exited {proc.returncode}: {output}", argv
    return True, f"primary reloaded ({output or 'ok'})", argv


# Past this many record commands, Knot re-reading the file is about as fast as the transaction
# (measured: ~0.1 ms per command over the control connection; zone-reload ~12 us per record).
MIN_TRANSACTION_LIMIT = 1000


@dataclass(frozen=True)
class Delta:
    """The exact difference between the zone Knot serves (serial `base`) and the file just
    written (serial `serial`), as control commands: (owner, ttl, type, rdata) to remove and add."""

    base: int
    serial: int
    soa: str
    ttl: int
    removes: tuple[tuple[str, str, str], ...]
    adds: tuple[tuple[str, str, str], ...]


def _shape(config: Config, op: OperatorConfig) -> str:
    """What, besides the entries and the serial, decides the records of a zone: TTL, SOA fields,
    NS, the records of each action. Equal shapes and equal entries: equal records."""
    soa = config.soa
    parts = [op.origin, str(config.rpz_ttl), config.ns, soa.mname, soa.rname,
             *map(str, (soa.refresh, soa.retry, soa.expire, soa.minimum)),
             *(f"{a}={'|'.join(r)}" for a, r in sorted(_templates(op).items()))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _shape_file(config: Config, op: OperatorConfig) -> Path:
    return config.state_dir.absolute() / FLEET_DIR / "knot" / f"{op.id}.served"


def _read_served(config: Config, op: OperatorConfig) -> tuple[int, str] | None:
    """The serial and shape of the zone blocker last put into the primary (None: unknown)."""
    try:
        serial, shape = _shape_file(config, op).read_text().split()
        return int(serial), shape
    except (OSError, ValueError):
        return None


def _write_served(config: Config, op: OperatorConfig, serial: int) -> None:
    path = _shape_file(config, op)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(f"{serial} {_shape(config, op)}\n")
        os.replace(tmp, path)
    except OSError:  # unknown next time: the next publish reloads the file, always correct
        _forget_served(config, op)


def _forget_served(config: Config, op: OperatorConfig) -> None:
    with contextlib.suppress(OSError):
        _shape_file(config, op).unlink()


def _split(record: str) -> tuple[str, str]:
    rtype, _, rdata = record.partition(" ")
    return rtype, rdata


def plan_delta(config: Config, op: OperatorConfig, plan: OperatorPlan, serial: int) -> tuple[Delta | None, str]:
    """The records that change, from the plan's changes per owner, or None (and why) when only
    re-reading the file is sure to be right: a first publish, a damaged file rewritten, the
    zone's shape (TTL, SOA, NS, redirect records) changed since the zone Knot has, or a change
    too large for a transaction to beat the reload."""
    previous = plan.previous
    if previous is None:
        return None, "first publish"
    if plan.restore:
        return None, "zone file was rewritten"
    served = _read_served(config, op)
    if served is None or served != (previous.serial, _shape(config, op)):
        return None, "the zone the primary has is not known to be the last published one"
    templates = _templates(op)
    origin = op.origin
    removes: list[tuple[str, str, str]] = []
    adds: list[tuple[str, str, str]] = []
    limit = max(MIN_TRANSACTION_LIMIT, plan.zone.entries // 20)
    for change in plan.changes:
        old = templates[change.old_action] if change.old_action else ()
        new = templates[change.action] if change.action else ()
        owner = f"{change.owner}.{origin}"
        removes += [(owner, *_split(r)) for r in old if r not in new]
        adds += [(owner, *_split(r)) for r in new if r not in old]
        if len(removes) + len(adds) > limit:
            return None, f"more than {limit} records change"
    canary = f"{canary_owner(op.id)}.{origin}"
    removes.append((canary, "TXT", f'"{previous.serial}"'))
    adds.append((canary, "TXT", f'"{serial}"'))
    soa = config.soa
    return Delta(previous.serial, serial, f"{soa.mname} {soa.rname} {serial} {soa.refresh} {soa.retry} "
                 f"{soa.expire} {soa.minimum}", config.rpz_ttl, tuple(removes), tuple(adds)), ""


def apply_delta(config: Config, op: OperatorConfig, delta: Delta) -> tuple[bool, str]:
    """Hand Knot the difference in one transaction: zone-begin, zone-unset/zone-set per record
    and the new SOA, zone-commit. Knot checks each command (a record to remove that it does not
    have is an error): on any error the transaction is aborted, and the caller reloads the file."""
    dist = _dist(config)
    zone = op.origin
    try:
        ctl = KnotCtl(_abs(dist.primary.control), config.reload_timeout)
    except KnotCtlError as exc:
        return False, str(exc)
    began = False
    t0 = time.monotonic()
    try:
        with ctl:
            ctl.call("zone-begin", zone=zone)
            began = True
            got = ctl.call("zone-get", zone=zone, owner="@", type="SOA")
            fields = got[0].get("data", "").split() if got else []
            if len(fields) < 3 or fields[2] != str(delta.base):
                raise KnotCtlError(f"the primary serves serial {fields[2] if len(fields) > 2 else '?'}, "
                                   f"not {delta.base}")
            for owner, rtype, rdata in delta.removes:
                ctl.call("zone-unset", zone=zone, owner=owner, type=rtype, data=rdata)
            ttl = str(delta.ttl)
            for owner, rtype, rdata in delta.adds:
                ctl.call("zone-set", zone=zone, owner=owner, ttl=ttl, type=rtype, data=rdata)
            ctl.call("zone-set", zone=zone, owner="@", ttl=ttl, type="SOA", data=delta.soa)
            ctl.call("zone-commit", zone=zone)
            began = False
    except KnotCtlError as exc:
        if began:
            try:
                with KnotCtl(_abs(dist.primary.control), config.reload_timeout) as again:
                    again.call("zone-abort", zone=zone)
            except KnotCtlError:
                pass  # no transaction left open (the connection's end aborted it, or it never began)
        return False, str(exc)
    return True, (f"primary updated in one transaction: serial {delta.base} -> {delta.serial}, "
                  f"{len(delta.removes)} record(s) removed, {len(delta.adds)} added, {time.monotonic() - t0:.3f} s")


def update_primary(config: Config, op: OperatorConfig, plan: OperatorPlan | None,
                   serial: int | None) -> tuple[bool, str, list[str]]:
    """Bring the primary to the zone file just written: Knot gets only the difference through
    its control socket when the plan says it exactly, else (BIND, an unknown base, a failed
    transaction) reloads the file, which is always right."""
    dist = _dist(config)
    why = ""
    if dist.primary.kind == "knot" and plan is not None and serial is not None:
        delta, why = plan_delta(config, op, plan, serial)
        if delta is not None:
            ok, message = apply_delta(config, op, delta)
            if ok:
                _write_served(config, op, serial)
                return True, message, ["knot-control", _abs(dist.primary.control), "zone-commit", op.origin]
            why = f"transaction failed ({message})"
    ok, message, argv = reload_zone(config, op)
    if ok and serial is not None:
        _write_served(config, op, serial)
    elif not ok:
        _forget_served(config, op)
    return ok, (f"{message}; zone-reload because {why}" if why and ok else message), argv


def reload_after_publish(config: Config, op: OperatorConfig, result: ReloadResult,
                         plan: OperatorPlan | None = None, serial: int | None = None) -> ReloadResult:
    """The publish step's hook: with `distribution` set, the primary takes the zone just
    written (and NOTIFYs the secondaries); a failed primary update is a failed publish (exit 5),
    like a failed resolver reload hook. Without `distribution`, `result` is returned as is."""
    if config.distribution is None:
        return result
    ok, message, argv = update_primary(config, op, plan, serial)
    if not ok:
        return ReloadResult(False, message if result.ok else f"{result.message}; {message}", tuple(argv))
    if result.argv:  # a resolver hook ran too: keep its argv, say both
        return ReloadResult(result.ok, f"{message}; {result.message}", result.argv)
    return ReloadResult(result.ok, message, tuple(argv))
