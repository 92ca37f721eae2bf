"""Real DNS servers on loopback for the test suite: an authoritative BIND and four RPZ resolvers.

Why real servers: blocker's output is only correct if the resolvers ISPs run accept it and answer
what we expect. Each class here starts one daemon as a foreground child process on 127.0.0.1, with
its config built FROM the shipped snippets in configs/resolvers/ (so the tests prove the snippets),
waits until it answers DNS, and stops it by PID. Nothing leaves loopback: every resolver forwards
all names to the local AuthServer, whose stand-in root answers NXDOMAIN for anything else.

No pytest import here: session fixtures (tests/conftest_resolvers.py) and scripts both use it.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import idna

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]
SNIPPETS_DIR = REPO_ROOT / "configs" / "resolvers"

# What the AuthServer answers for every test name (and its www./wildcard children), and for the
# host a CNAME redirect points to. Both are documentation ranges (RFC 5737): never routed.
AUTH_ADDRESS = "198.51.100.10"
INFO_HOST = "info.operator.example."
INFO_ADDRESS = "198.51.100.80"
# An IDN test name, as the A-label an RPZ must carry (IDNA 2008, via the idna package).
IDN_NAME = idna.encode("bücher.example.gg").decode() + "."

# Test names under each test zone. Each gets an A record, a www. child and a wildcard child, so a
# probe can ask a random subdomain and tell a block (rewritten) from a name that does not exist.
DEFAULT_TEST_NAMES: dict[str, tuple[str, ...]] = {
    "example.gg.": (
        "www", "blocked", "open", "wild", "nodata", "drop", "redir", "redir2", "added", "late",
        IDN_NAME.removesuffix(".example.gg."),
    ),
    "example.": ("www",),
}

# The RPZ zones the session fixtures serve, one per operator, as blocker publishes them.
TEST_ORIGINS = ("orange.rpz.blocker.", "free.rpz.blocker.")


def canary_name(origin: str) -> str:
    """A name whose local-data TXT rule in the zone carries its serial (see Resolver.canary_serial).

    Outside the RPZ origin (BIND serves that zone authoritatively, to localhost only) and outside
    special-use TLDs (Unbound's built-in local zones for invalid., test., ... win over RPZ).
    """
    return f"serial.{absolute(origin).split('.')[0]}.canary.blocker."


def base_rules(origin: str) -> dict[str, str]:
    """The rules the test zones start with: every action blocker may write, on test names.

    The second operator's zone blocks only "late" (and its subdomains), to prove that several
    zones are applied side by side.
    """
    if absolute(origin) != TEST_ORIGINS[0]:
        return {"late.example.gg": "CNAME .", "*.late.example.gg": "CNAME ."}
    return {
        "blocked.example.gg": "CNAME .",               # NXDOMAIN
        "*.blocked.example.gg": "CNAME .",             # ... and every subdomain
        "*.wild.example.gg": "CNAME .",                # subdomains only: wild.example.gg resolves
        IDN_NAME: "CNAME .",                           # bücher.example.gg, as its A-label
        "nodata.example.gg": "CNAME *.",               # NODATA
        "drop.example.gg": "CNAME rpz-drop.",          # no answer (kresd: SERVFAIL)
        "redir.example.gg": "A 192.0.2.80",            # local data: the information page's address
        "redir2.example.gg": f"CNAME {INFO_HOST}",     # CNAME to the information page's host
    }


START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


class ResolverError(RuntimeError):
    """A DNS daemon could not be started, reloaded or controlled (message carries its log tail)."""


# --------------------------------------------------------------------------------------------
# Small helpers


def free_port() -> int:
    """Return a loopback port free for both UDP and TCP right now (DNS daemons bind both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise ResolverError("no free loopback port found")


def require_binary(name: str, package: str) -> str:
    """Absolute path of a daemon or tool; fail loudly (never skip) when its package is missing."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise ResolverError(
            f"{name} not found: install the Debian package {package} (make debs, or "
            f"apt-get install {package}); the resolver tests need the real daemon"
        )
    return found


def absolute(name: str) -> str:
    """A domain name with its final dot, lower case (the form RPZ origins and probes use)."""
    return name.lower().rstrip(".") + "."


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02,
             what: str = "condition") -> float:
    """Poll predicate until it is true; return the seconds it took. Raise TimeoutError otherwise."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


@dataclass(frozen=True)
class Reply:
    """What a probe needs from a DNS answer; rcode is "TIMEOUT" when nothing came back (drop)."""

    rcode: str
    aa: bool = False
    ra: bool = False
    answer: tuple[str, ...] = ()          # "A 198.51.100.10", "CNAME info.operator.example."
    authority_soa: str | None = None      # owner name of an SOA in the authority section
    authority_soa_serial: int | None = None
    additional_soa: str | None = None     # owner name of an SOA in the additional section (BIND RPZ)
    ede: tuple[int, ...] = ()             # RFC 8914 extended error codes

    @property
    def addresses(self) -> set[str]:
        return {rr.split(" ", 1)[1] for rr in self.answer if rr.startswith(("A ", "AAAA "))}

    @property
    def txt(self) -> list[str]:
        return [rr.split(" ", 1)[1].strip('"') for rr in self.answer if rr.startswith("TXT ")]


def query(port: int, qname: str, rdtype: str = "A", *, timeout: float = 1.0,
          tcp: bool = False, host: str = LOOPBACK) -> dns.message.Message:
    """One DNS query with RD set and EDNS (so extended errors come back); raises on timeout."""
    msg = dns.message.make_query(qname, rdtype, use_edns=0, payload=1232)
    if tcp:
        return dns.query.tcp(msg, host, port=port, timeout=timeout)
    return dns.query.udp(msg, host, port=port, timeout=timeout)


def summarize(msg: dns.message.Message) -> Reply:
    """Reduce a dnspython message to the fields a block signature is made of."""
    answer = tuple(
        f"{dns.rdatatype.to_text(rrset.rdtype)} {rdata.to_text()}"
        for rrset in msg.answer for rdata in rrset
    )
    soa_owner, soa_serial, additional_soa = None, None, None
    for rrset in msg.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            soa_owner, soa_serial = rrset.name.to_text(), rrset[0].serial
    for rrset in msg.additional:
        if rrset.rdtype == dns.rdatatype.SOA:
            additional_soa = rrset.name.to_text()
    ede = tuple(opt.code for opt in msg.options if isinstance(opt, dns.edns.EDEOption))
    return Reply(
        rcode=dns.rcode.to_text(msg.rcode()),
        aa=bool(msg.flags & dns.flags.AA),
        ra=bool(msg.flags & dns.flags.RA),
        answer=answer,
        authority_soa=soa_owner,
        authority_soa_serial=soa_serial,
        additional_soa=additional_soa,
        ede=ede,
    )


def ask(port: int, qname: str, rdtype: str = "A", *, timeout: float = 1.0, tcp: bool = False) -> Reply:
    """Query and summarize; a timeout (the RPZ drop action) becomes Reply(rcode="TIMEOUT")."""
    try:
        return summarize(query(port, qname, rdtype, timeout=timeout, tcp=tcp))
    except dns.exception.Timeout:
        return Reply(rcode="TIMEOUT")


# --------------------------------------------------------------------------------------------
# Zones


def zone_text(origin: str, names: Iterable[str], address: str = AUTH_ADDRESS, ttl: int = 300,
              extra: Mapping[str, str] | None = None) -> str:
    """Zone text for the AuthServer: apex, plus name, www.name and *.name A records per test name.

    ttl is realistic (300 s) on purpose: a resolver that keeps serving a cached answer after a
    reload, instead of applying the new RPZ, must fail the tests.
    """
    origin = absolute(origin)
    lines = [
        f"$ORIGIN {origin}",
        f"$TTL {ttl}",
        f"@ IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 60",
        f"@ IN NS ns.{origin}",
        f"ns IN A {LOOPBACK}",
        f"@ IN A {address}",
    ]
    for name in names:
        rel = _relative(name, origin)
        lines += [f"{rel} IN A {address}", f"www.{rel} IN A {address}", f"*.{rel} IN A {address}"]
    for owner, rdata in (extra or {}).items():
        lines.append(f"{owner} IN {rdata}")
    return "\n".join(lines) + "\n"


def _relative(name: str, origin: str) -> str:
    """A test name relative to its zone: "blocked" and "blocked.example.gg." both give "blocked"."""
    if not name.endswith("."):
        return name
    suffix = "." + origin
    if not name.lower().endswith(suffix):
        raise ValueError(f"{name} is not under {origin}")
    return name[: -len(suffix)]


def root_zone(origins: Iterable[str]) -> str:
    """A stand-in root zone that delegates each test zone back to the AuthServer itself.

    Why: resolvers prime the root and (PowerDNS, with QNAME minimisation) ask for "gg" before
    "example.gg"; without delegations those get NXDOMAIN/REFUSED and the test names fail.
    """
    lines = [
        "$ORIGIN .",
        "$TTL 300",
        "@ IN SOA a.root-servers.test. hostmaster.test. 1 3600 600 86400 60",
        "@ IN NS a.root-servers.test.",
        f"a.root-servers.test. IN A {LOOPBACK}",
    ]
    lines += [f"{absolute(origin)} IN NS a.root-servers.test." for origin in origins if origin != "."]
    return "\n".join(lines) + "\n"


def default_zones() -> dict[str, str]:
    """The test zones every resolver test uses: example.gg. (test names), example. (info page host)."""
    zones = {origin: zone_text(origin, names) for origin, names in DEFAULT_TEST_NAMES.items()}
    zones["example."] = zone_text("example.", ("www",), extra={"info.operator": f"A {INFO_ADDRESS}"})
    return zones


def rpz_zone(origin: str, rules: Mapping[str, str] | Iterable[tuple[str, str]], serial: int = 1,
             ttl: int = 60, canary: bool = True) -> str:
    """RPZ zone text in the shape blocker publishes: SOA and NS at the apex, one rule per line.

    rules maps a trigger (a domain name, without the origin) to its action's RR, e.g.
    {"blocked.example.gg": "CNAME .", "*.blocked.example.gg": "CNAME ."}. With canary, the last
    line is canary_name(origin) TXT "<serial>": last, so a zone loaded only partly lacks it.
    """
    origin = absolute(origin)
    items = list(rules.items() if isinstance(rules, Mapping) else rules)
    if canary:
        items.append((canary_name(origin), f'TXT "{serial}"'))
    lines = [
        f"$ORIGIN {origin}",
        f"$TTL {ttl}",
        f"@ {ttl} IN SOA localhost. hostmaster.localhost. {serial} 60 60 604800 30",
        f"@ {ttl} IN NS localhost.",
    ]
    lines += [f"{trigger.rstrip('.')} {action}" for trigger, action in items]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path | str, text: str) -> None:
    """Replace a file the way a publisher must: write a temp file, fsync, rename over the old one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Config snippets (configs/resolvers/*) as templates

# A marker is a comment line of its own: "# blocker:zone-begin", "// blocker:section options".
_MARKER = re.compile(r"^\s*(?:#|//|--|;)\s*blocker:(?:section\s+(?P<section>[\w-]+)|(?P<zone>zone-begin|zone-end))\s*$")
_COMMENT = ("#", "//", "--", ";")


def _fill(lines: Sequence[str], values: Mapping[str, object]) -> str:
    """Substitute placeholders in config lines; comment lines stay verbatim (they document them)."""
    return "".join(
        line if line.lstrip().startswith(_COMMENT) else string.Template(line).substitute(values)
        for line in lines
    )


@dataclass(frozen=True)
class RpzZone:
    """One RPZ zone a resolver serves from a file: the operator's origin and the published path."""

    origin: str
    path: Path

    @classmethod
    def of(cls, origin: str, path: Path | str) -> RpzZone:
        return cls(absolute(origin), Path(path).resolve())


def render_snippet(name: str, zones: Sequence[RpzZone], values: Mapping[str, object] | None = None,
                   directory: Path = SNIPPETS_DIR) -> dict[str, str]:
    """Render configs/resolvers/<name> for these zones; return its text per section.

    A snippet is a string.Template (${origin}, ${zone_file}, plus snippet-specific values). Lines
    between "blocker:zone-begin" and "blocker:zone-end" are repeated once per zone. A line holding
    "blocker:section NAME" starts a section (BIND's options part vs top-level part); a snippet
    without one is a single section "main". Comment lines are kept verbatim. A missing value
    raises KeyError: a typo fails loudly.
    """
    values = dict(values or {})
    sections: dict[str, list[str]] = {}
    current, block, in_block = "main", [], False
    for line in (directory / name).read_text().splitlines(keepends=True):
        marker = _MARKER.search(line)
        if marker and marker.group("section"):
            current = marker.group("section")
        elif marker and marker.group("zone") == "zone-begin":
            in_block, block = True, []
        elif marker and marker.group("zone") == "zone-end":
            in_block = False
            for zone in zones:
                zone_values = {**values, "origin": zone.origin, "zone_file": str(zone.path)}
                sections.setdefault(current, []).append(_fill(block, zone_values))
            continue
        elif in_block:
            block.append(line)
            continue
        sections.setdefault(current, []).append(_fill([line], values))
    return {section: "".join(parts) for section, parts in sections.items()}


def root_hints(path: Path) -> Path:
    """Root hints that point at loopback: a resolver that tries to prime never leaves the machine."""
    path.write_text(
        ".                3600000 IN NS a.root-servers.test.\n"
        f"a.root-servers.test. 3600000 IN A {LOOPBACK}\n"
    )
    return path


# --------------------------------------------------------------------------------------------
# Processes

_RUNNING: set[DnsProcess] = set()


def _stop_all_at_exit() -> None:
    for proc in list(_RUNNING):
        proc.stop()


atexit.register(_stop_all_at_exit)


def _die_with_parent() -> None:
    """preexec_fn: the kernel SIGTERMs the daemon if the test process dies without cleaning up."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class DnsProcess:
    """A DNS daemon run in the foreground on 127.0.0.1:port, logging to <workdir>/<name>.log.

    Subclasses write their config in write_config(), give the argv in command(), and say when the
    daemon is usable in ready(). start() is bounded by START_TIMEOUT and raises ResolverError with
    the log tail; stop() terminates, then kills, and always reaps the child.
    """

    name = "dns"
    binary = ""
    package = ""

    def __init__(self, workdir: Path | str, port: int | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / f"{self.name}.log"
        self.log_offset = 0           # where this run's lines start (the log is appended to)
        self.started_in: float | None = None

    # --- for subclasses
    def write_config(self) -> None:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    # Log lines that mean the start failed although the daemon keeps running (fail fast on them).
    fatal_log = ("not loaded due to errors",)

    def ready(self) -> bool:
        """Default readiness: any DNS reply at all on the port."""
        try:
            query(self.port, ".", "SOA", timeout=0.2)
        except (dns.exception.DNSException, OSError):
            return False
        return True

    # --- lifecycle
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        require_binary(self.binary, self.package)
        self.write_config()
        start = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.log_offset = log.tell()
            self.proc = subprocess.Popen(
                self.command(), cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, start_new_session=True,
            )
        _RUNNING.add(self)
        try:
            while not self.ready():
                if not self.running:
                    raise ResolverError(f"{self.name} exited during start:\n{self.log_tail()}")
                if any(line in self.log_text() for line in self.fatal_log):
                    raise ResolverError(f"{self.name} failed to start:\n{self.log_tail()}")
                if time.monotonic() - start > timeout:
                    raise ResolverError(f"{self.name} not answering within {timeout} s:\n{self.log_tail()}")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - start
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        proc, self.proc = self.proc, None
        _RUNNING.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Self:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __hash__(self) -> int:
        return id(self)

    def log_text(self) -> str:
        """This run's log (earlier runs in the same workdir are skipped)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(empty log)"

    # --- DNS
    def query(self, qname: str, rdtype: str = "A", *, timeout: float = 1.0,
              tcp: bool = False) -> dns.message.Message:
        return query(self.port, qname, rdtype, timeout=timeout, tcp=tcp)

    def ask(self, qname: str, rdtype: str = "A", *, timeout: float = 1.0, tcp: bool = False) -> Reply:
        return ask(self.port, qname, rdtype, timeout=timeout, tcp=tcp)

    def run_tool(self, argv: Sequence[str], timeout: float = 30.0) -> str:
        """Run a control tool; raise ResolverError with its output if it fails."""
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise ResolverError(
                f"{' '.join(argv)} exited {done.returncode}: {done.stdout}{done.stderr}\n"
                f"--- {self.name} log:\n{self.log_tail()}"
            )
        return done.stdout


# --------------------------------------------------------------------------------------------
# Authoritative server


class AuthServer(DnsProcess):
    """BIND named, authoritative only (recursion no), serving the test zones on loopback.

    zones maps an origin to its zone text (see zone_text / default_zones). A stand-in root zone
    that delegates them to this server is added (see root_zone), so every other name gets a real
    NXDOMAIN here and resolvers that forward to it never reach out to the Internet.
    """

    name = "auth"
    binary = "named"
    package = "bind9"

    def __init__(self, workdir: Path | str, zones: Mapping[str, str] | None = None,
                 port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.zones = {absolute(origin): text for origin, text in (zones or default_zones()).items()}
        if "." not in self.zones:
            self.zones["."] = root_zone(self.zones)

    @property
    def address(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    def write_config(self) -> None:
        zone_blocks = []
        for i, (origin, text) in enumerate(self.zones.items()):
            path = self.workdir / f"zone{i}.db"
            path.write_text(text)
            zone_blocks.append(f'zone "{origin}" {{ type primary; file "{path}"; }};')
        zones = "\n".join(zone_blocks)
        (self.workdir / "named.conf").write_text(f"""
options {{
    directory "{self.workdir}";
    pid-file "{self.workdir}/named.pid";
    session-keyfile "{self.workdir}/session.key";
    managed-keys-directory "{self.workdir}";
    listen-on port {self.port} {{ {LOOPBACK}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    allow-query {{ any; }};
    dnssec-validation no;
    notify no;
}};
controls {{ }};
{zones}
""")

    def command(self) -> list[str]:
        return [self.binary, "-g", "-4", "-n", "1", "-u", "root", "-c", str(self.workdir / "named.conf")]

    def ready(self) -> bool:
        """Ready when every zone is loaded: its SOA comes back authoritative."""
        for origin in self.zones:
            try:
                msg = query(self.port, origin, "SOA", timeout=0.2)
            except (dns.exception.DNSException, OSError):
                return False
            if msg.rcode() != dns.rcode.NOERROR or not msg.flags & dns.flags.AA:
                return False
        return True


# --------------------------------------------------------------------------------------------
# Resolvers


@dataclass(frozen=True)
class BlockSignature:
    """How a resolver's RPZ NXDOMAIN looks, as opposed to a real one (always aa=0 and the real
    zone's SOA in authority). For probes, and checked by the tests so the compat table stays true.

    authority_soa / additional_soa: "rpz" = an SOA owned by the RPZ origin, None = no SOA there.
    """

    rcode: str
    aa: bool
    authority_soa: str | None
    additional_soa: str | None
    ede: tuple[int, ...] = ()

    def matches(self, reply: Reply, origin: str) -> bool:
        def soa(kind: str | None) -> str | None:
            return absolute(origin) if kind == "rpz" else None

        return (
            reply.rcode == self.rcode and reply.aa == self.aa and reply.ede == self.ede
            and reply.authority_soa == soa(self.authority_soa)
            and reply.additional_soa == soa(self.additional_soa)
        )


class Resolver(DnsProcess):
    """A recursive resolver serving RPZ zones from files, forwarding every name to an upstream.

    zones: (origin, rpz_file_path) pairs, in policy order. upstream: the AuthServer (or its
    (host, port)) that serves the test domains. reload() re-reads the RPZ files with the
    resolver's own control mechanism; reload_command(origin) is that mechanism as an argv list,
    for blocker's publish hook.
    """

    signature: BlockSignature
    probe_name = "www.example.gg."

    def __init__(self, workdir: Path | str, zones: Sequence[tuple[str, Path | str]],
                 upstream: AuthServer | tuple[str, int], port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.zones = [RpzZone.of(origin, path) for origin, path in zones]
        self.upstream = upstream.address if isinstance(upstream, AuthServer) else upstream
        self.control_port = free_port()
        self.last_reload_seconds: float | None = None

    @property
    def upstream_host(self) -> str:
        return self.upstream[0]

    @property
    def upstream_port(self) -> int:
        return self.upstream[1]

    def zone(self, origin: str) -> RpzZone:
        origin = absolute(origin)
        for zone in self.zones:
            if zone.origin == origin:
                return zone
        raise KeyError(f"{self.name} does not serve RPZ {origin}")

    def ready(self) -> bool:
        """Ready when a test name resolves through the upstream (config, RPZ and forwarding work)."""
        try:
            msg = query(self.port, self.probe_name, "A", timeout=0.2)
        except (dns.exception.DNSException, OSError):
            return False
        return msg.rcode() == dns.rcode.NOERROR and bool(msg.answer)

    def reload_command(self, origin: str) -> list[str]:
        """The argv that makes the running resolver re-read the RPZ file of this origin."""
        raise NotImplementedError

    def flush_command(self, names: Iterable[str]) -> list[str] | None:
        """argv to run after a reload so cached answers for these names (and their subdomains)
        cannot outlive the new policy; None when the resolver applies RPZ before its cache."""
        return None

    def reload(self, origin: str | None = None, changed: Iterable[str] = ()) -> float:
        """Re-read one zone (or all) through the control mechanism, then flush the names whose
        rules changed (added or removed) where the resolver needs it; return the seconds taken."""
        start = time.monotonic()
        origins = [absolute(origin)] if origin else [zone.origin for zone in self.zones]
        done: set[tuple[str, ...]] = set()
        for one in origins:
            argv = tuple(self.reload_command(one))
            if argv not in done:      # PowerDNS reloads every zone with one command
                self.run_tool(argv)
                done.add(argv)
        flush = self.flush_command(list(changed))
        if flush:
            self.run_tool(flush)
        self.last_reload_seconds = time.monotonic() - start
        return self.last_reload_seconds

    def publish(self, origin: str, rules: Mapping[str, str], serial: int,
                changed: Iterable[str] = ()) -> float:
        """Do what blocker's publish step does for this resolver: write the zone file atomically,
        then run the reload (and flush) commands. Returns the seconds the commands took."""
        write_atomically(self.zone(origin).path, rpz_zone(origin, rules, serial))
        return self.reload(origin, changed=changed)

    def served_serial(self, origin: str) -> int | None:
        """SOA serial of the RPZ zone as the resolver reports it (None where it cannot tell)."""
        raise NotImplementedError

    def canary_serial(self, name: str) -> int | None:
        """Serial published in a canary rule `name TXT "<serial>"` of an RPZ zone, asked over DNS.

        Works the same on all four resolvers, and says which zone version is APPLIED (BIND's SOA
        says which is loaded, which can be ahead by min-update-interval).
        """
        txt = self.ask(name, "TXT", timeout=0.5).txt
        return int(txt[0]) if txt and txt[0].isdigit() else None

    def wait_for(self, predicate: Callable[[Self], bool], timeout: float = 5.0,
                 what: str = "condition") -> float:
        """Poll predicate(self) until true; return seconds. Raise TimeoutError with the log tail."""
        try:
            return wait_for(lambda: predicate(self), timeout=timeout, what=f"{self.name}: {what}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n--- {self.name} log:\n{self.log_tail()}") from None

    def wait_rcode(self, qname: str, rcode: str, rdtype: str = "A", timeout: float = 5.0) -> float:
        """Wait until qname gets this rcode (e.g. NXDOMAIN after a block, NOERROR after a lift)."""
        return self.wait_for(lambda r: r.ask(qname, rdtype, timeout=0.5).rcode == rcode,
                             timeout=timeout, what=f"{qname} {rdtype} -> {rcode}")

    def wait_serial(self, origin: str, serial: int, timeout: float = 5.0) -> float:
        return self.wait_for(lambda r: r.served_serial(origin) == serial, timeout=timeout,
                             what=f"{origin} serial {serial}")


class Unbound(Resolver):
    """Unbound with rpz: clauses from configs/resolvers/unbound.conf, reloaded by unbound-control."""

    name = "unbound"
    binary = "unbound"
    package = "unbound"
    signature = BlockSignature(rcode="NXDOMAIN", aa=True, authority_soa=None, additional_soa=None)

    @property
    def conf_path(self) -> Path:
        return self.workdir / "unbound.conf"

    def write_config(self) -> None:
        hints = root_hints(self.workdir / "root.hints")
        snippet = render_snippet("unbound.conf", self.zones)["main"]
        self.conf_path.write_text(f"""
server:
    interface: {LOOPBACK}
    port: {self.port}
    do-ip6: no
    do-daemonize: no
    use-syslog: no
    logfile: ""
    verbosity: 1
    username: ""
    chroot: ""
    directory: "{self.workdir}"
    pidfile: "{self.workdir}/unbound.pid"
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    # The upstream (AuthServer) is on 127.0.0.1, which Unbound refuses to query by default.
    do-not-query-localhost: no
    root-hints: "{hints}"
forward-zone:
    name: "."
    forward-addr: {self.upstream_host}@{self.upstream_port}
remote-control:
    control-enable: yes
    control-interface: {LOOPBACK}
    control-port: {self.control_port}
    control-use-cert: no
{snippet}""")

    def command(self) -> list[str]:
        return [self.binary, "-d", "-c", str(self.conf_path)]

    def control(self, *args: str) -> list[str]:
        return ["unbound-control", "-c", str(self.conf_path), *args]

    def reload_command(self, origin: str) -> list[str]:
        return self.control("auth_zone_reload", absolute(origin))

    def served_serial(self, origin: str) -> int | None:
        """From `unbound-control list_auth_zones` (RPZ zones are listed with their serial)."""
        out = self.run_tool(self.control("list_auth_zones"))
        for line in out.splitlines():
            fields = line.split()
            if fields and absolute(fields[0]) == absolute(origin) and "serial" in fields:
                return int(fields[fields.index("serial") + 1])
        return None


class Bind(Resolver):
    """BIND named as a resolver with response-policy from configs/resolvers/named.conf; rndc reload."""

    name = "bind"
    binary = "named"
    package = "bind9"
    signature = BlockSignature(rcode="NXDOMAIN", aa=False, authority_soa=None, additional_soa="rpz")
    # Test value; the snippet documents the production one (BIND's default 60 s holds blocks back).
    min_update_interval = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.rndc_secret = base64.b64encode(secrets.token_bytes(32)).decode()

    @property
    def conf_path(self) -> Path:
        return self.workdir / "named.conf"

    @property
    def rndc_conf(self) -> Path:
        return self.workdir / "rndc.conf"

    def write_config(self) -> None:
        hints = root_hints(self.workdir / "root.hints")
        parts = render_snippet("named.conf", self.zones, {"min_update_interval": self.min_update_interval})
        key = f'key "blocker-test" {{ algorithm hmac-sha256; secret "{self.rndc_secret}"; }};'
        self.rndc_conf.write_text(
            f'{key}\noptions {{ default-key "blocker-test"; default-server {LOOPBACK}; '
            f"default-port {self.control_port}; }};\n"
        )
        self.conf_path.write_text(f"""
options {{
    directory "{self.workdir}";
    pid-file "{self.workdir}/named.pid";
    session-keyfile "{self.workdir}/session.key";
    managed-keys-directory "{self.workdir}";
    listen-on port {self.port} {{ {LOOPBACK}; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-query {{ 127.0.0.0/8; }};
    allow-recursion {{ 127.0.0.0/8; }};
    dnssec-validation no;
    notify no;
    forward only;
    forwarders {{ {self.upstream_host} port {self.upstream_port}; }};
{parts["options"]}
}};
{key}
controls {{ inet {LOOPBACK} port {self.control_port} allow {{ {LOOPBACK}; }} keys {{ "blocker-test"; }}; }};
zone "." {{ type hint; file "{hints}"; }};
{parts["top"]}""")

    def command(self) -> list[str]:
        return [self.binary, "-g", "-4", "-n", "1", "-u", "root", "-c", str(self.conf_path)]

    def ready(self) -> bool:
        """Also wait until every policy zone is APPLIED: BIND answers queries before, and loads a
        zone (its SOA answers) before it has built the policy data from it."""
        if not super().ready():
            return False
        log = self.log_text()
        return all(f"rpz: {zone.origin.rstrip('.')}: reload done" in log for zone in self.zones)

    def rndc(self, *args: str) -> list[str]:
        return ["rndc", "-c", str(self.rndc_conf), *args]

    def reload_command(self, origin: str) -> list[str]:
        return self.rndc("reload", absolute(origin))

    def served_serial(self, origin: str) -> int | None:
        """The RPZ zone's SOA, asked from loopback (the snippet's allow-query { localhost; }).

        Caution: this is the LOADED zone. BIND applies it to answers only min-update-interval
        after the previous policy update ("new zone version came too soon, deferring update").
        """
        try:
            msg = query(self.port, absolute(origin), "SOA", timeout=0.5)
        except (dns.exception.DNSException, OSError):
            return None
        for rrset in msg.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                return int(rrset[0].serial)
        return None


# Minimal client for kresd's control sockets: send one Lua expression to every socket in a
# directory (one per kresd instance), print the replies, fail unless each reply has `expect`.
KRESD_CONTROL_CLIENT = """\
import glob, os, socket, sys
target, expr, expect = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ''
paths = sorted(glob.glob(os.path.join(target, '*'))) if os.path.isdir(target) else [target]
ok = bool(paths)
for path in paths:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(60)
        s.connect(path)
        s.sendall(expr.encode() + b'\\n')
        s.shutdown(socket.SHUT_WR)
        out = b''.join(iter(lambda: s.recv(65536), b'')).decode(errors='replace')
    print(path, out.replace('>', '').strip())
    ok = ok and expect in out
sys.exit(0 if ok else 1)
"""


class KnotResolver(Resolver):
    """kresd with the Lua rules of configs/resolvers/kresd.conf, reloaded over its control socket."""

    name = "kresd"
    binary = "kresd"
    package = "knot-resolver"
    # With the snippet's blocker_deny; kresd's own policy.DENY would put an SOA owned by the qname.
    signature = BlockSignature(rcode="NXDOMAIN", aa=True, authority_soa="rpz", additional_soa=None,
                               ede=(15,))

    @property
    def conf_path(self) -> Path:
        return self.workdir / "kresd.conf"

    @property
    def control_dir(self) -> Path:
        return self.workdir / "control"

    def write_config(self) -> None:
        snippet = render_snippet("kresd.conf", self.zones)["main"]
        self.conf_path.write_text(f"""
net.ipv6 = false
net.listen('{LOOPBACK}', {self.port}, {{ kind = 'dns' }})
cache.open(10 * MB, 'lmdb://{self.workdir}/cache')
-- The test zones are unsigned and there is no real root to prove it: no validation here.
trust_anchors.remove('.')
{snippet}
-- After the blocker rules (first match wins): every other name goes to the test upstream.
policy.add(policy.all(policy.STUB({{'{self.upstream_host}@{self.upstream_port}'}})))
""")

    def command(self) -> list[str]:
        return [self.binary, "-n", "-c", str(self.conf_path), str(self.workdir)]

    def control(self, expr: str, expect: str = "") -> list[str]:
        """argv sending one Lua expression to every kresd control socket of this instance."""
        return ["python3", "-c", KRESD_CONTROL_CLIENT, str(self.control_dir), expr, expect]

    def reload_command(self, origin: str) -> list[str]:
        return self.control(f"blocker_reload('{absolute(origin)}')", "blocker-reloaded")

    def served_serial(self, origin: str) -> int | None:
        out = self.run_tool(self.control("blocker_serials()"))
        found = re.search(rf"\['{re.escape(absolute(origin))}'\]\s*=\s*(\d+)", out)
        return int(found.group(1)) if found else None


class PdnsRecursor(Resolver):
    """pdns_recursor 4.8 with rpzFile() from configs/resolvers/recursor.lua; rec_control reloads it."""

    name = "pdns"
    binary = "pdns_recursor"
    package = "pdns-recursor"
    # EDE 15 comes from the snippet's extendedErrorCode; without it there is none.
    signature = BlockSignature(rcode="NXDOMAIN", aa=False, authority_soa=None, additional_soa=None,
                               ede=(15,))

    @property
    def lua_path(self) -> Path:
        return self.workdir / "recursor.lua"

    def write_config(self) -> None:
        hints = root_hints(self.workdir / "root.hints")
        self.lua_path.write_text(render_snippet("recursor.lua", self.zones)["main"])
        snippet = render_snippet("recursor.conf", self.zones, {"lua_config_file": self.lua_path})["main"]
        (self.workdir / "recursor.conf").write_text(f"""
config-dir={self.workdir}
socket-dir={self.workdir}
local-address={LOOPBACK}
local-port={self.port}
daemon=no
disable-syslog=yes
log-timestamp=no
quiet=yes
threads=1
dnssec=off
hint-file={hints}
# pdns refuses to query 127.0.0.0/8 by default; the test upstream lives there.
dont-query=
# -recurse: treat the upstream as a resolver. With plain forward-zones, pdns takes the NS records
# in its answers (ns.example.gg -> 127.0.0.1 port 53) and goes there instead.
forward-zones-recurse=.={self.upstream_host}:{self.upstream_port}
security-poll-suffix=
{snippet}""")

    def command(self) -> list[str]:
        return [self.binary, f"--config-dir={self.workdir}"]

    def rec_control(self, *args: str) -> list[str]:
        # --timeout: the default (5 s) is shorter than a reload of a 1M-name zone (3 s measured).
        return ["rec_control", f"--socket-dir={self.workdir}", "--timeout=60", *args]

    def reload_command(self, origin: str) -> list[str]:
        # One command re-reads the Lua config, hence every rpzFile(): origin does not matter.
        return self.rec_control("reload-lua-config")

    def flush_command(self, names: Iterable[str]) -> list[str] | None:
        """pdns 4.8 answers from its packet cache first: a name blocked after it was asked keeps
        its cached address, and a lifted name its cached NXDOMAIN, until the entry's TTL runs
        out. wipe-cache NAME$ drops the name and its subtree from every cache."""
        # The serial canary changes with every publish: wipe it too, or a probe asking it within
        # its TTL would read the previous serial.
        names = [absolute(name).removeprefix("*.") for name in names]
        names += [canary_name(zone.origin) for zone in self.zones]
        return self.rec_control("wipe-cache", *(f"{name}$" for name in names))

    def served_serial(self, origin: str) -> int | None:
        """Not available: rpzFile() zones keep no SOA (dump-rpz shows a fake one, serial 0)."""
        return None


RESOLVER_CLASSES: tuple[type[Resolver], ...] = (Unbound, Bind, KnotResolver, PdnsRecursor)
