"""Real daemons for the fleet tests: a Knot DNS primary and secondaries (BIND, Unbound, PowerDNS
Recursor), each started from the exact text `blocker fleet primary-config` / `secondary-config`
printed, wrapped only in the resolver's own server settings (port, folders, upstream)."""

from __future__ import annotations

import re
from pathlib import Path

import dns.exception
import dns.rcode

from tests.resolverlib import LOOPBACK, DnsProcess, query, root_hints

# The fleet tests' TSIG secret (32 bytes, base64; for tests only) and its key file, as
# `tsig-keygen -a hmac-sha256 blocker-xfr` prints one.
SECRET = "c2VjcmV0LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY3ODk="


def bind_key(secret: str = SECRET) -> str:
    return f'key "blocker-xfr" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n'


class KnotPrimary(DnsProcess):
    name = "knotd"
    binary = "knotd"
    package = "knot"
    fatal_log = ("critical:", "failed to open configuration")

    def __init__(self, workdir: Path, config_text: str, port: int, origin: str) -> None:
        super().__init__(workdir, port)
        self.config_text = config_text
        self.origin = origin

    def write_config(self) -> None:
        (self.workdir / "knot.conf").write_text(self.config_text)

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.workdir / "knot.conf")]

    def ready(self) -> bool:
        return "server started" in self.log_text() and "control, binding" in self.log_text()

    def xfr_lines(self, kind: str = "IXFR") -> list[str]:
        return [ln for ln in self.log_text().splitlines() if f"{kind}, outgoing" in ln and "finished" in ln]


class _Secondary(DnsProcess):
    """A recursive resolver forwarding to the test AuthServer, following the primary for one RPZ."""

    probe_name = "www.example.gg."

    def __init__(self, workdir: Path, snippet: str, upstream: tuple[str, int], port: int) -> None:
        super().__init__(workdir, port)
        self.snippet = snippet
        self.upstream = upstream

    def ready(self) -> bool:
        try:
            msg = query(self.port, self.probe_name, "A", timeout=0.2)
        except (dns.exception.DNSException, OSError):
            return False
        return msg.rcode() == dns.rcode.NOERROR and bool(msg.answer)


class BindSecondary(_Secondary):
    name = "bind"
    binary = "named"
    package = "bind9"

    def write_config(self) -> None:
        hints = root_hints(self.workdir / "root.hints")
        # The snippet's first comment names the response-policy statement for options { }.
        rp = re.search(r"In options \{ \}: (response-policy \{.*\};)", self.snippet)
        assert rp is not None, self.snippet
        (self.workdir / "named.conf").write_text(f"""
options {{
    directory "{self.workdir}";
    pid-file "{self.workdir}/named.pid";
    session-keyfile "{self.workdir}/session.key";
    managed-keys-directory "{self.workdir}";
    listen-on port {self.port} {{ {LOOPBACK}; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-query {{ 127.0.0.0/8; }};
    dnssec-validation no;
    notify no;
    forward only;
    forwarders {{ {self.upstream[0]} port {self.upstream[1]}; }};
    {rp.group(1)}
}};
controls {{ }};
zone "." {{ type hint; file "{hints}"; }};
{self.snippet}""")

    def command(self) -> list[str]:
        return [self.binary, "-g", "-4", "-n", "1", "-u", "root", "-c", str(self.workdir / "named.conf")]


class UnboundSecondary(_Secondary):
    name = "unbound"
    binary = "unbound"
    package = "unbound"

    def write_config(self) -> None:
        # Two threads, as a resolver runs (one per core): after every transfer Unbound writes
        # the whole zone to its `zonefile:` in the thread that made the transfer, which answers
        # nothing meanwhile (5.5 s at 1M names, bench/fleet.py); another thread serves the new
        # serial at once.
        hints = root_hints(self.workdir / "root.hints")
        (self.workdir / "unbound.conf").write_text(f"""
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
    num-threads: 2
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    root-hints: "{hints}"
    module-config: "respip iterator"
forward-zone:
    name: "."
    forward-addr: {self.upstream[0]}@{self.upstream[1]}
remote-control:
    control-enable: no
{self.snippet}""")

    def command(self) -> list[str]:
        return [self.binary, "-d", "-c", str(self.workdir / "unbound.conf")]


class PdnsSecondary(_Secondary):
    name = "pdns"
    binary = "pdns_recursor"
    package = "pdns-recursor"

    def write_config(self) -> None:
        hints = root_hints(self.workdir / "root.hints")
        (self.workdir / "recursor.lua").write_text(self.snippet)
        (self.workdir / "recursor.conf").write_text(f"""
config-dir={self.workdir}
socket-dir={self.workdir}
local-address={LOOPBACK}
local-port={self.port}
daemon=no
disable-syslog=yes
log-timestamp=no
threads=1
dnssec=off
hint-file={hints}
dont-query=
forward-zones-recurse=.={self.upstream[0]}:{self.upstream[1]}
security-poll-suffix=
lua-config-file={self.workdir}/recursor.lua
""")

    def command(self) -> list[str]:
        return [self.binary, f"--config-dir={self.workdir}"]


class KresdSecondary(_Secondary):
    """kresd with the rule `fleet secondary-config --kind knot-resolver` prints (below its split
    line), reading the RPZ file a local Knot DNS secondary writes."""

    name = "kresd"
    binary = "kresd"
    package = "knot-resolver"

    def write_config(self) -> None:
        (self.workdir / "kresd.conf").write_text(f"""
net.ipv6 = false
net.listen('{LOOPBACK}', {self.port}, {{ kind = 'dns' }})
cache.open(10 * MB, 'lmdb://{self.workdir}/cache')
trust_anchors.remove('.')
{self.snippet}
policy.add(policy.all(policy.STUB({{'{self.upstream[0]}@{self.upstream[1]}'}})))
""")

    def command(self) -> list[str]:
        return [self.binary, "-n", "-c", str(self.workdir / "kresd.conf"), str(self.workdir)]
