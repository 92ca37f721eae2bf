"""Probe engine throughput against a local Unbound, next to dnsperf on the same names.

Why: a pass over a large operator's names must finish between two publishes; the notes put
dnsperf at ~130,000 q/s here and set the engine's floor at 13,000 verified checks/s (aim: half of
dnsperf). This script builds an N-name RPZ (every name `CNAME .`, i.e. NXDOMAIN) and a test zone
with a wildcard (so an unblocked name would resolve), starts Unbound on a free loopback port with
both (auth-zone for upstream + rpz), runs blocker.probe.engine over every name expecting "blocked", then
runs dnsperf with the same names for a few seconds, and prints both rates and their ratio.

Run: .venv/bin/python bench/probe.py [--names 100000] [--dnsperf-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dns.exception
import dns.message
import dns.query
import dns.rcode

from blocker.probe.engine import probe
from blocker.probe.model import Check, ResolverTarget, Signature, exit_code

ORIGIN = "bench.rpz.blocker."
TEST_ZONE = "example.gg."
FLOOR = 13_000.0


def free_port() -> int:
    """A loopback port free for UDP and TCP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free loopback port")


def bench_names(count: int) -> list[str]:
    """Distinct names under the test zone, spread over a few parents like real targets."""
    return [f"site{i:07d}.shop{i % 97}.{TEST_ZONE.rstrip('.')}" for i in range(count)]


def write_zones(workdir: Path, names: list[str]) -> tuple[Path, Path]:
    """The RPZ (one `CNAME .` per name) and the test zone (a wildcard: every name would resolve)."""
    rpz = workdir / "bench.rpz"
    body = "".join(f"{name} CNAME .\n" for name in names)
    rpz.write_text(
        f"$ORIGIN {ORIGIN}\n$TTL 60\n@ IN SOA localhost. hostmaster.localhost. 1 60 60 604800 30\n"
        f"@ IN NS localhost.\n{body}"
    )
    zone = workdir / "example.gg.zone"
    zone.write_text(
        f"$ORIGIN {TEST_ZONE}\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\n"
        "ns1 IN A 127.0.0.1\n* IN A 198.51.100.10\n*.* IN A 198.51.100.10\n"
    )
    return rpz, zone


def write_unbound_conf(workdir: Path, port: int, rpz: Path, zone: Path, threads: int) -> Path:
    conf = workdir / "unbound.conf"
    conf.write_text(f"""server:
  interface: 127.0.0.1
  port: {port}
  do-ip6: no
  do-daemonize: no
  use-syslog: no
  logfile: ""
  verbosity: 0
  username: ""
  chroot: ""
  directory: "{workdir}"
  pidfile: "{workdir}/unbound.pid"
  num-threads: {threads}
  so-rcvbuf: 4m
  so-sndbuf: 4m
  access-control: 127.0.0.0/8 allow
  module-config: "respip iterator"
auth-zone:
  name: "{TEST_ZONE}"
  zonefile: "{zone}"
  for-upstream: yes
  for-downstream: no
  fallback-enabled: no
rpz:
  name: "{ORIGIN}"
  zonefile: "{rpz}"
remote-control:
  control-enable: no
""")
    return conf


def wait_blocking(port: int, name: str, proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Seconds until Unbound answers a blocked name with NXDOMAIN (the RPZ is loaded)."""
    start = time.monotonic()
    query = dns.message.make_query(name, "A")
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError("unbound exited during start")
        with contextlib.suppress(dns.exception.DNSException, OSError):
            if dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5).rcode() == dns.rcode.NXDOMAIN:
                return time.monotonic() - start
        time.sleep(0.1)
    raise RuntimeError(f"unbound did not apply the RPZ within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_engine(names: list[str], port: int, concurrency: int) -> tuple[float, collections.Counter[str], int]:
    """Checks/s over all names (expected blocked by NXDOMAIN), the verdict counts, the exit code."""
    checks = [Check(name, "blocked", "nxdomain", ("BENCH",)) for name in names]
    target = ResolverTarget("127.0.0.1", port, name="unbound")
    signature = Signature(ORIGIN, nxdomain_authority="empty")
    start = time.perf_counter()
    results = asyncio.run(probe(checks, [target], signature, timeout=2.0, retries=2,
                                concurrency=concurrency, rate_per_resolver=float("inf")))
    elapsed = time.perf_counter() - start
    return len(results) / elapsed, collections.Counter(r.verdict for r in results), exit_code(results)


def run_dnsperf(names: list[str], port: int, seconds: float, workdir: Path, extra: list[str]) -> float:
    """dnsperf's queries/s over the same names, looping the file for `seconds`."""
    if shutil.which("dnsperf") is None:
        raise RuntimeError("dnsperf not found: apt-get install dnsperf")
    data = workdir / "names.txt"
    data.write_text("".join(f"{name} A\n" for name in names))
    out = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(data), "-l", str(seconds),
         *extra],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout
    found = re.search(r"Queries per second:\s*([\d.]+)", out)
    if not found:
        raise RuntimeError(f"cannot read dnsperf output:\n{out}")
    return float(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=100_000, help="names in the RPZ (default 100000)")
    parser.add_argument("--dnsperf-seconds", type=float, default=10.0, help="dnsperf run time (default 10)")
    parser.add_argument("--concurrency", type=int, default=256, help="engine in-flight window (default 256)")
    parser.add_argument("--threads", type=int, default=1, help="Unbound num-threads (default 1)")
    parser.add_argument("--runs", type=int, default=3, help="engine passes (default 3): median and best")
    parser.add_argument("--dnsperf-args", default="-c 1 -T 1 -q 500",
                        help="dnsperf options (default: its fastest setting measured here, '-c 1 -T 1 -q 500')")
    parser.add_argument("--no-dnsperf", action="store_true", help="skip the dnsperf comparison")
    args = parser.parse_args(argv)

    names = bench_names(args.names)
    with tempfile.TemporaryDirectory(prefix="blocker-bench-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        rpz, zone = write_zones(workdir, names)
        conf = write_unbound_conf(workdir, port, rpz, zone, args.threads)
        log = open(workdir / "unbound.log", "wb")  # noqa: SIM115 - closed in finally
        proc = subprocess.Popen(["unbound", "-d", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                loaded = wait_blocking(port, names[-1], proc, timeout=120)
            except RuntimeError:
                log.flush()
                print((workdir / "unbound.log").read_text(errors="replace")[-3000:], file=sys.stderr)
                raise
            print(f"unbound: {args.names} RPZ names, answering blocks after {loaded:.1f} s (port {port})")
            rates: list[float] = []
            code = 0
            for run in range(args.runs):
                rate, counts, code = run_engine(names, port, args.concurrency)
                print(f"engine run {run + 1}: {rate:,.0f} verified checks/s  verdicts {dict(counts)}  exit {code}")
                rates.append(rate)
                if code != 0:
                    break
            median = statistics.median(rates)
            print(f"engine: {median:,.0f} verified checks/s median, {max(rates):,.0f} best "
                  f"of {len(rates)} (floor {FLOOR:,.0f})")
            ok = median >= FLOOR and code == 0
            if args.no_dnsperf:
                return 0 if ok else 1
            qps = run_dnsperf(names, port, args.dnsperf_seconds, workdir, args.dnsperf_args.split())
            print(f"dnsperf: {qps:,.0f} queries/s ({args.dnsperf_seconds:g} s, {args.dnsperf_args})")
            print(f"ratio engine/dnsperf: {median / qps:.2f} median, {max(rates) / qps:.2f} best")
        finally:
            stop(proc)
            log.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
