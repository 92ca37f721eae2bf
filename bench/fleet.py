"""Fleet benchmark: a zone of N names served by a Knot DNS hidden primary (from `blocker fleet
primary-config`) to real secondaries (BIND with TSIG, Unbound without, from `fleet
secondary-config`); one name changes: how long until every secondary serves it, and the bytes
of that IXFR next to the full AXFR each secondary made at start, in the same run (sizes from
knotd's own transfer log lines). Targets (issue 11): within 5 s, under 10 kB. Then a real
`blocker probe-agent` makes one pass of --agent-checks checks on those secondaries: its throughput.

    .venv/bin/python bench/fleet.py --names 1000000      # the issue's figure
    .venv/bin/python bench/fleet.py --names 20000        # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.render import bench_name  # noqa: E402
from blocker.config.distribution import Secondary  # noqa: E402
from blocker.config.load import load_config  # noqa: E402
from blocker.fleet.status import served_serial  # noqa: E402
from tests.fleet.fleetlib import BindSecondary, KnotPrimary, UnboundSecondary  # noqa: E402
from tests.resolverlib import AuthServer, free_port  # noqa: E402

TARGET_S, TARGET_BYTES = 5.0, 10_000
XFR = re.compile(r"(AXFR|IXFR), outgoing, remote (\S+?),.*?finished.*?(\d+) messages, (\d+) bytes")


def write_orders(folder: Path, names: int, per_file: int = 50_000) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in range((names + per_file - 1) // per_file):
        lines = [f"id: bench-{f:04d}", "court: Tribunal judiciaire de Paris", f"case_number: RG 26/{f:05d}",
                 "decision_date: 2026-11-01", "operators: [orange]", "start: 2026-11-02", "duration: 18 months",
                 "targets:"]
        lines += [f"  - {bench_name(f, i)}" for i in range(min(per_file, names - f * per_file))]
        (folder / f"bench-{f:04d}.yaml").write_text("\n".join(lines) + "\n")


def blocker(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "blocker", "--config", str(config), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"blocker {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def agent_pass(root: Path, secondaries: list[tuple[str, int]], sample: int, timeout: float) -> None:
    """One pass of a real `blocker probe-agent` over `sample` checks of the rotation on every
    secondary (each check asked on each; rate cap lifted): its own words for how long the pass
    took ("probe pass done"), its audit for how many checks and their verdicts."""
    state, port = root / "agent-state", free_port()
    resolvers = ", ".join(f"{{address: 127.0.0.1:{p}, name: {k}}}" for k, p in secondaries)
    cfg = root / "agent.yaml"
    cfg.write_text(f"""orders_dir: {root}/orders
zones_dir: {root}/zones
state_dir: {state}
log_format: json
probe: {{interval: 3600, sample_per_pass: {sample}, sweep_period: 0, rate_per_resolver: 1000000,
         agent_name: bench-agent}}
operators:
  orange:
    resolvers: [{resolvers}]
""")
    log_path = root / "agent.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "blocker", "probe-agent", "--config", str(cfg), "--listen",
                                 f"127.0.0.1:{port}"], cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline, seconds = time.monotonic() + timeout, None
        while seconds is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            for line in log_path.read_text(errors="replace").splitlines():
                if '"probe pass done"' in line:
                    seconds = float(json.loads(line)["seconds"])
        if seconds is None:
            print(f"probe-agent: no pass done within {timeout:g} s (exit {proc.poll()}): "
                  f"{log_path.read_text(errors='replace')[-1500:]}")
            return
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    from blocker.record.audit import AuditLog

    passes = [r for r in AuditLog(state).records() if r.get("event") == "probe-pass"]
    checks = sum(int(r["data"]["checks"]) for r in passes) if passes else 0
    verdicts = passes[-1]["data"]["verdicts"] if passes else {}
    print(f"probe-agent throughput: one pass of {checks:,} checks ({len(secondaries)} secondaries, each "
          f"check asked on each) in {seconds:.1f} s: {checks / seconds:,.0f} checks/s; verdicts {verdicts}")


def transfers(log: str) -> list[tuple[str, str, int, int]]:
    return [(m[1], m[2], int(m[3]), int(m[4])) for m in XFR.finditer(log)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", type=int, default=1_000_000)
    ap.add_argument("--secondaries", default="bind,unbound", help="comma-separated: bind, unbound")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for a secondary")
    ap.add_argument("--agent-checks", type=int, default=100_000,
                    help="checks of one probe-agent pass over the secondaries (0: no agent)")
    args = ap.parse_args()
    kinds = [k for k in args.secondaries.split(",") if k]
    with tempfile.TemporaryDirectory(prefix="blocker-fleet-bench-") as tmp:
        root = Path(tmp)
        key = root / "xfr.key"
        key.write_text(subprocess.run(["tsig-keygen", "-a", "hmac-sha256", "blocker-xfr"], capture_output=True,
                                      text=True, check=True).stdout)
        os.chmod(key, 0o600)
        write_orders(root / "orders", args.names)
        primary_port = free_port()
        ports = {k: free_port() for k in kinds}
        notsig = {"unbound": ", tsig: false"}  # Unbound has no TSIG: allowed by address
        secs = "\n".join(f"      - {{address: 127.0.0.1:{ports[k]}, name: {k}{notsig.get(k, '')}}}" for k in kinds)
        cfg = root / "blocker.yaml"
        cfg.write_text(f"""orders_dir: {root}/orders
state_dir: {root}/var
zones_dir: {root}/zones
publish: {{check: structural, max_removal_share: 1}}
distribution:
  primary: {{kind: knot, listen: 127.0.0.1:{primary_port}, control: {root}/knot.sock}}
  tsig_key: {key}
operators:
  orange:
    secondaries:
{secs}
""")
        config = load_config(cfg)
        op = config.operators["orange"]
        started: list[object] = []
        try:
            auth = AuthServer(root / "auth").start()
            started.append(auth)
            primary = KnotPrimary(root / "knot", blocker(cfg, "fleet", "primary-config").stdout, primary_port,
                                  op.origin).start()
            started.append(primary)
            t0 = time.perf_counter()
            serial0 = int(re.findall(r"published serial (\d+)", blocker(cfg, "apply").stdout)[0])
            print(f"names: {args.names:,}; cold apply + primary load: {time.perf_counter() - t0:.1f} s; "
                  f"zone file {(root / 'zones' / 'orange.rpz').stat().st_size / 1e6:.1f} MB")
            secondaries = []
            for kind in kinds:
                snippet = blocker(cfg, "fleet", "secondary-config", "--operator", "orange", "--kind", kind).stdout
                cls = BindSecondary if kind == "bind" else UnboundSecondary
                t0 = time.perf_counter()
                sec = cls(root / kind, snippet, auth.address, ports[kind]).start(timeout=600)
                started.append(sec)
                secondaries.append(sec)
                print(f"{kind}: started and answering in {time.perf_counter() - t0:.1f} s")
            wait = list(op.secondaries)
            deadline = time.monotonic() + args.timeout
            while wait and time.monotonic() < deadline:
                wait = [s for s in wait if served_serial(s, op, 2.0)[0] != serial0]
                time.sleep(0.5)
            if wait:
                sys.exit(f"initial transfer not served by {[s.label for s in wait]} within {args.timeout} s")
            print(f"initial transfers: every secondary serves serial {serial0}")
            full = transfers(primary.log_text())
            # One name more: a new order file.
            time.sleep(1.1)
            (root / "orders" / "zz-one.yaml").write_text(
                "id: bench-one\ncourt: Tribunal judiciaire de Paris\ncase_number: RG 26/99999\n"
                f"decision_date: 2026-11-01\noperators: [orange]\nstart: {datetime.now(UTC).isoformat()}\n"
                "duration: 18 months\ntargets: [one-more-name.example]\n")
            # Timed from the zone file's rename (the primary reload follows it at once), while
            # apply runs: apply's own audit and state writes come after the reload.
            zone_file = root / "zones" / "orange.rpz"
            inode = zone_file.stat().st_ino
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "blocker", "--config", str(cfg), "apply"], cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            written: float | None = None
            on_primary: float | None = None
            primary_sec = Secondary(config.distribution.primary.host, primary_port, "primary")  # type: ignore[union-attr]
            seen: dict[str, float] = {}
            while time.perf_counter() - t0 < args.timeout + 600:
                if written is None and zone_file.stat().st_ino != inode:
                    written = time.perf_counter()
                if written is not None and on_primary is None:
                    got = served_serial(primary_sec, op, 1.0)[0]
                    if got is not None and got != serial0:
                        on_primary = time.perf_counter()
                if written is not None:
                    for s in op.secondaries:
                        got = served_serial(s, op, 1.0)[0]
                        if s.label not in seen and got is not None and got != serial0:
                            seen[s.label] = time.perf_counter() - written
                    if len(seen) == len(op.secondaries) or time.perf_counter() - written > args.timeout:
                        break
                time.sleep(0.01)
            out, err = proc.communicate()
            applied = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"apply exited {proc.returncode}: {err.strip()}")
            serial1 = int(re.findall(r"published serial (\d+)", out)[0])
            audit = blocker(cfg, "audit", "show").stdout
            how = [ln.strip() for ln in audit.splitlines() if "primary updated" in ln or "primary reloaded" in ln]
            times = seen
            time.sleep(0.5)
            incr = transfers(primary.log_text())[len(full):]
            print(f"one-name change: apply {applied:.2f} s (a cold CLI: load, plan, render, write, reload), and")
            print(f"  how the primary got it: {how[-1].partition('message=')[2][:300] if how else 'not in the audit'}")
            if on_primary is not None and written is not None:
                print(f"  the primary serves it {on_primary - written:.3f} s after the zone file was replaced "
                      "(blocker's state write, then the primary's update: a control transaction of the "
                      "difference, or zone-reload)")
            for s in op.secondaries:
                got = times.get(s.label)
                print(f"  {s.label}: serves serial {serial1} {got:.3f} s after the zone file was replaced"
                      if got is not None
                      else f"  {s.label}: NOT serving {serial1} after {args.timeout} s")
            for kind, remote, msgs, size in full:
                print(f"  full {kind} at start to {remote}: {size:,} bytes ({msgs} messages)")
            for kind, remote, msgs, size in incr:
                print(f"  {kind} for the change to {remote}: {size:,} bytes ({msgs} messages)")
            worst = max(times.values(), default=float("inf"))
            if on_primary is not None and written is not None and times:
                print(f"  distribution alone (primary serving -> last secondary serving): "
                      f"{worst - (on_primary - written):.3f} s")
            biggest = max((size for kind, _, _, size in incr if kind == "IXFR"), default=None)
            print(f"target: every secondary within {TARGET_S:g} s of the publish: {worst:.2f} s "
                  f"{'OK' if worst < TARGET_S else 'MISSED'}; IXFR under {TARGET_BYTES:,} bytes: "
                  f"{biggest if biggest is not None else 'none seen'} "
                  f"{'OK' if biggest is not None and biggest < TARGET_BYTES else 'MISSED'}")
            if args.agent_checks:
                agent_pass(root, [(k, ports[k]) for k in kinds], args.agent_checks, args.timeout)
        finally:
            for proc in reversed(started):
                proc.stop()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
