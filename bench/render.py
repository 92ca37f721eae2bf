"""Render benchmark: prints wall time and peak memory (figures for the closing note, not a test).

(a) a cold `blocker render` of N names (half with subdomains) from F order files on disk, against
    the floor measured in the same run on the same files: a plain `yaml.CSafeLoader` parse of
    every file, plus a sorted streaming write of the same owner names;
(b) the daemon's warm path: orders loaded, one file changes, re-plan and publish (with
    `publish.check: structural`; named-checkzone on the new zone is timed on its own);
(c) a naive baseline: a dns.zone.Zone built record by record, then to_file, at 100k names, against
    blocker's own path for the same names (orders in memory -> policy -> render -> write).

Targets (issue 3): (a) <= 2x the floor and < 600 MB peak RSS; (b) <= 3 s; (c) >= 20x the baseline.
The machine may be shared: `--repeat N` runs (a) and (b) N times and prints the median.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blocker.config.load import load_config  # noqa: E402
from blocker.orders.load import load_orders  # noqa: E402
from blocker.orders.model import OrderCache  # noqa: E402
from blocker.publish.plan import Caches, compute_plan  # noqa: E402
from blocker.publish.reconcile import publish_plan  # noqa: E402

AT = "2026-12-15T12:00:00+01:00"
TARGET_A_RATIO, TARGET_A_MB, TARGET_B_S, TARGET_C_RATIO = 2.0, 600, 3.0, 20.0


def bench_name(f: int, i: int) -> str:
    return f"site{i:04d}-o{f:04d}.bench{f % 50:02d}.example"


def write_orders(folder: Path, files: int, per_file: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        lines = [
            f"id: bench-{f:04d}", "court: Tribunal judiciaire de Paris", f"case_number: RG 26/{f:05d}",
            "decision_date: 2026-11-01", "operators: [orange, sfr, bouygues, free]", "start: 2026-11-02",
            "duration: 18 months", "targets:",
        ]
        for i in range(per_file):
            name = bench_name(f, i)
            lines.append(f"  - {name}" if i % 2 == 0 else f"  - {{domain: {name}, subdomains: false}}")
        (folder / f"bench-{f:04d}.yaml").write_text("\n".join(lines) + "\n")


# --- memory of a process tree ------------------------------------------------------------------

def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """`pid` and every descendant alive now, from /proc (bench/memory.py reads the same)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, ()))
    return out


class TreeSampler:
    """Samples the RSS of a process and of all its descendants (workers, named-checkzone)."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.pid, self.every = pid, every
        self.peak_main = self.peak_tree = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = descendants(self.pid)
            sizes = [_rss_kb(p) for p in pids]
            self.peak_main = max(self.peak_main, sizes[0] if sizes else 0)
            self.peak_tree = max(self.peak_tree, sum(sizes))
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --- floors --------------------------------------------------------------------------------------

def floor_parse(orders: Path) -> float:
    """Every order file through a plain `yaml.CSafeLoader`, one core: the parse floor."""
    import yaml

    files = sorted(orders.iterdir())
    t0 = time.perf_counter()
    for path in files:
        yaml.load(path.read_bytes(), Loader=yaml.CSafeLoader)
    return time.perf_counter() - t0


def floor_write(files: int, per_file: int, out: Path) -> float:
    """The same owners (names, and `*.name` for half), sorted canonically, streamed to a file."""
    t0 = time.perf_counter()
    owners = []
    for f in range(files):
        for i in range(per_file):
            name = bench_name(f, i)
            owners.append(name)
            if i % 2 == 0:
                owners.append("*." + name)
    owners.sort(key=lambda n: "\x00".join(n.split(".")[::-1]))
    with out.open("w", buffering=1 << 20) as fh:
        for owner in owners:
            fh.write(f"{owner} CNAME .\n")
    return time.perf_counter() - t0


# --- (a) -----------------------------------------------------------------------------------------

def cold_render(orders: Path, out: Path) -> tuple[float, float, float, float, str]:
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "blocker", "render", "--orders", str(orders), "--out", str(out),
                             "--at", AT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    sampler = TreeSampler(proc.pid)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"render failed: {stderr[-2000:]}")
    # ru_maxrss of waited-for children: the largest single process of the run (render, a worker,
    # or named-checkzone), as measured since the first run; only meaningful when it grew.
    largest = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
    return wall, sampler.peak_main / 1024, sampler.peak_tree / 1024, largest, stdout.strip().splitlines()[0]


# --- (b) -----------------------------------------------------------------------------------------

def warm_path(orders: Path, out: Path, round_: int) -> dict[str, float]:
    config = dataclasses.replace(load_config(None), publish_check="structural")
    at = datetime.fromisoformat(AT).astimezone(UTC)
    cache, caches = OrderCache(), Caches()
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    # This script runs code at its top level (sys.path): blocker would not start workers that
    # import it again on its own; they may (that code only sets a path), as before.
    result = load_orders(orders, config.order_rules, cache, workers=len(os.sched_getaffinity(0)))
    plan = compute_plan(result.orders, at, config, out, caches=caches)
    publish_plan(plan, config, out, None, None)
    first = time.perf_counter() - t0
    previous = {p.operator: p.entries for p in plan.operators}
    del plan  # as in the daemon, where a reconcile's plan (1.5M changes the first time) dies with it
    changed = orders / "bench-0007.yaml"  # a mirror site added to an order in force
    changed.write_text(changed.read_text() + f"  - mirror{round_}-site0000-o0007.bench07.example\n")
    t0 = time.perf_counter()
    result = load_orders(orders, config.order_rules, cache)
    t_load = time.perf_counter() - t0
    plan = compute_plan(result.orders, at, config, out, previous=previous, caches=caches)
    t_plan = time.perf_counter() - t0 - t_load
    outcomes = publish_plan(plan, config, out, None, None)
    total = time.perf_counter() - t0
    changes = sum(len(p.changes) for p in plan.operators)
    # named-checkzone, which `publish.check: auto` would run on the new body (once: the
    # operators share it), timed on its own.
    checker = shutil.which("named-checkzone")
    t_check = float("nan")
    if checker:
        op = plan.operators[0]
        t1 = time.perf_counter()
        subprocess.run([checker, "-q", "-k", "fail", "-n", "fail", config.operators[op.operator].origin,
                        str(out / f"{op.operator}.rpz")], check=True)
        t_check = time.perf_counter() - t1
    return {"total": total, "load": t_load, "plan": t_plan, "publish": total - t_load - t_plan, "first": first,
            "changes": changes, "zones": len(outcomes), "checkzone": t_check}


# --- (c) -----------------------------------------------------------------------------------------

def naive_baseline(names: int, out: Path) -> tuple[float, float]:
    import dns.name
    import dns.rdataclass
    import dns.rdatatype
    import dns.rdtypes.ANY.CNAME
    import dns.zone

    t0 = time.perf_counter()
    zone = dns.zone.Zone("orange.rpz.blocker.", relativize=True)
    target = dns.name.root
    for i in range(names):
        apex = f"site{i}.bench.example"
        for owner in (apex, "*." + apex) if i % 2 == 0 else (apex,):
            rds = zone.find_rdataset(owner, dns.rdatatype.CNAME, create=True)
            rds.update_ttl(60)
            rds.add(dns.rdtypes.ANY.CNAME.CNAME(dns.rdataclass.IN, dns.rdatatype.CNAME, target))
    zone.to_file(str(out / "naive.rpz"))
    return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ours_at(names: int, out: Path) -> float:
    """blocker's path for the same names as the baseline (orders in memory, as the baseline's
    names are): policy, render, header and canary, written to a file."""
    from blocker.orders.model import Order
    from blocker.orders.parse import parse_order
    from blocker.policy import desired
    from blocker.zone.render import render_body

    config = load_config(None)
    at = datetime.fromisoformat(AT).astimezone(UTC)
    per_file = 1000
    orders = {}
    for f in range(max(1, names // per_file)):
        lines = [f"id: naive-{f:04d}", "court: TJ Paris", f"case_number: RG {f}", "decision_date: 2026-11-01",
                 "operators: [orange]", "start: 2026-11-02", "duration: 18 months", "targets:"]
        for i in range(f * per_file, min(names, (f + 1) * per_file)):
            lines.append(f"  - site{i}.bench.example" if i % 2 == 0
                         else f"  - {{domain: site{i}.bench.example, subdomains: false}}")
        order = parse_order(("\n".join(lines) + "\n").encode(), f"naive-{f:04d}.yaml", config.order_rules)
        assert isinstance(order, Order), order
        orders[order.id] = order
    t0 = time.perf_counter()
    zone = render_body(desired(orders.values(), "orange", at), config.operators["orange"])
    (out / "ours.rpz").write_bytes(zone.text(1, config))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--per-file", type=int, default=1000)
    parser.add_argument("--naive-names", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of (a) and (b); medians are printed")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--only", choices=["a", "b", "c"], action="append", help="run only these parts")
    args = parser.parse_args()
    parts = set(args.only or ["a", "b", "c"]) - ({"c"} if args.skip_naive else set())
    with tempfile.TemporaryDirectory(prefix="blocker-bench-") as tmp:
        base = Path(tmp)
        t0 = time.perf_counter()
        write_orders(base / "orders", args.files, args.per_file)
        print(f"generated {args.files} order files x {args.per_file} targets "
              f"({args.files * args.per_file:,} names, half with subdomains) in {time.perf_counter() - t0:.1f} s; "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
        if "a" in parts:
            runs = []
            for _ in range(args.repeat):
                parse = floor_parse(base / "orders")
                write = floor_write(args.files, args.per_file, base / "floor.txt")
                runs.append((parse, write, *cold_render(base / "orders", base / "zones-cold")))
            parse, write, wall, main_mb, tree_mb, largest_mb = (statistics.median(r[i] for r in runs)
                                                                for i in range(6))
            floor = parse + write
            print(f"    floor: CSafeLoader parse {parse:.2f} s + sorted streaming write {write:.2f} s "
                  f"= {floor:.2f} s (target <= {TARGET_A_RATIO * floor:.1f} s)")
            each = f"; median of {args.repeat}: " + ", ".join(f"{r[2]:.1f}" for r in runs) if args.repeat > 1 else ""
            print(f"(a) cold render: {wall:.2f} s wall = {wall / floor:.2f}x the floor "
                  f"(target <= {TARGET_A_RATIO:.1f}x); peak RSS {main_mb:.0f} MB blocker process "
                  f"(target < {TARGET_A_MB} MB), largest single process {largest_mb:.0f} MB, whole tree "
                  f"{tree_mb:.0f} MB (with workers and named-checkzone){each}")
            print("    " + runs[-1][6])
        if "b" in parts:
            runs_b = [warm_path(base / "orders", base / "zones-warm", i) for i in range(args.repeat)]
            b = {k: statistics.median(r[k] for r in runs_b) for k in runs_b[0]}
            print(f"(b) warm path (one file changed, publish.check: structural): {b['total']:.2f} s "
                  f"(target <= {TARGET_B_S:.0f} s; re-load {b['load']:.2f}, plan {b['plan']:.2f}, "
                  f"publish {b['publish']:.2f}); {b['changes']:.0f} changes, {b['zones']:.0f} zones published; "
                  f"named-checkzone on the new zone alone: {b['checkzone']:.2f} s "
                  f"(first full pass in-process: {b['first']:.2f} s)"
                  + (f"; median of {args.repeat}: " + ", ".join(f"{r['total']:.2f}" for r in runs_b)
                     if args.repeat > 1 else ""))
        if "c" in parts:
            ours = ours_at(args.naive_names, base)
            naive, rss = naive_baseline(args.naive_names, base)
            print(f"(c) at {args.naive_names:,} names: naive dns.zone build + to_file {naive:.2f} s, "
                  f"blocker policy + render + write {ours:.3f} s = {naive / ours:.0f}x faster "
                  f"(target >= {TARGET_C_RATIO:.0f}x); peak RSS (this process) {rss:.0f} MB")


if __name__ == "__main__":
    main()
