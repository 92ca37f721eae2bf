"""Render benchmark: prints wall time and peak memory (figures for the closing note, not a test).

(a) a cold `blocker render` of N names (half with subdomains) from F order files on disk;
(b) the daemon's warm path: orders loaded, one file changes, re-plan and publish;
(c) a naive baseline: a dns.zone.Zone built record by record, then to_file, at 100k names.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blocker.config import load_config  # noqa: E402
from blocker.orders import OrderCache, load_orders  # noqa: E402
from blocker.plan import Caches, compute_plan  # noqa: E402
from blocker.reconcile import publish_plan  # noqa: E402

AT = "2026-12-15T12:00:00+01:00"


def write_orders(folder: Path, files: int, per_file: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        lines = [
            f"id: bench-{f:04d}", "court: Tribunal judiciaire de Paris", f"case_number: RG 26/{f:05d}",
            "decision_date: 2026-11-01", "operators: [orange, sfr, bouygues, free]", "start: 2026-11-02",
            "duration: 18 months", "targets:",
        ]
        for i in range(per_file):
            name = f"site{i:04d}-o{f:04d}.bench{f % 50:02d}.example"
            lines.append(f"  - {name}" if i % 2 == 0 else f"  - {{domain: {name}, subdomains: false}}")
        (folder / f"bench-{f:04d}.yaml").write_text("\n".join(lines) + "\n")


def peak_child_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def cold_render(orders: Path, out: Path) -> None:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "blocker", "render", "--orders", str(orders), "--out", str(out),
                           "--at", AT], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"render failed: {proc.stderr[-2000:]}")
    print(f"(a) cold render: {wall:.2f} s wall, peak RSS {peak_child_rss_mb():.0f} MB")
    print("    " + proc.stdout.strip().splitlines()[0])


def warm_path(orders: Path, out: Path, state_dir: Path) -> None:
    config = load_config(None)
    at = datetime.fromisoformat(AT).astimezone(UTC)
    cache, caches = OrderCache(), Caches()
    t0 = time.perf_counter()
    result = load_orders(orders, config, cache)
    plan = compute_plan(result.orders, at, config, out, caches=caches)
    publish_plan(plan, config, out, None, None)
    first = time.perf_counter() - t0
    previous = {p.operator: p.entries for p in plan.operators}
    changed = orders / "bench-0007.yaml"  # a mirror site added to an order in force
    changed.write_text(changed.read_text() + "  - mirror-site0000-o0007.bench07.example\n")
    t0 = time.perf_counter()
    result = load_orders(orders, config, cache)
    t_load = time.perf_counter() - t0
    plan = compute_plan(result.orders, at, config, out, previous=previous, caches=caches)
    t_plan = time.perf_counter() - t0 - t_load
    outcomes = publish_plan(plan, config, out, None, None)
    total = time.perf_counter() - t0
    changes = sum(len(p.changes) for p in plan.operators)
    print(f"(b) warm path (one file changed): {total:.2f} s (re-load {t_load:.2f}, plan {t_plan:.2f}, "
          f"publish {total - t_load - t_plan:.2f}); {changes} changes, {len(outcomes)} zones published "
          f"(first full pass in-process: {first:.2f} s)")
    del state_dir


def naive_baseline(names: int, out: Path) -> None:
    import dns.name
    import dns.rdataclass
    import dns.rdatatype
    import dns.rdtypes.ANY.CNAME
    import dns.zone

    t0 = time.perf_counter()
    zone = dns.zone.Zone("orange.rpz.blocker.", relativize=True)
    target = dns.name.root
    for i in range(names):
        for owner in (f"site{i}.bench.example", f"*.site{i}.bench.example") if i % 2 == 0 else (f"site{i}.bench.example",):
            rds = zone.find_rdataset(owner, dns.rdatatype.CNAME, create=True)
            rds.update_ttl(60)
            rds.add(dns.rdtypes.ANY.CNAME.CNAME(dns.rdataclass.IN, dns.rdatatype.CNAME, target))
    zone.to_file(str(out / "naive.rpz"))
    wall = time.perf_counter() - t0
    print(f"(c) naive dns.zone baseline at {names:,} names: {wall:.2f} s, "
          f"peak RSS (this process) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--per-file", type=int, default=1000)
    parser.add_argument("--naive-names", type=int, default=100_000)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blocker-bench-") as tmp:
        base = Path(tmp)
        t0 = time.perf_counter()
        write_orders(base / "orders", args.files, args.per_file)
        print(f"generated {args.files} order files x {args.per_file} targets "
              f"({args.files * args.per_file:,} names, half with subdomains) in {time.perf_counter() - t0:.1f} s")
        cold_render(base / "orders", base / "zones-cold")
        warm_path(base / "orders", base / "zones-warm", base / "state")
        if not args.skip_naive:
            naive_baseline(args.naive_names, base)


if __name__ == "__main__":
    main()
