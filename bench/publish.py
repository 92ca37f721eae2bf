"""Publish benchmark: prints wall times next to `render` of the same orders (figures, not a test).

(1) the first `blocker apply` of N names (F order files, bench/render.py's generator) on four
    operators, against a cold `blocker render` of the same orders in the same run;
(2) a cold daemon start (`blocker run`, empty state and zones) until all four zones hold what
    `render` wrote, against the same `render`;
(3) with that daemon running: a large order (--large targets) starts on one operator at T, an
    unrelated order on another operator lifts at T+3 s: how late the lift reaches its zone.

Targets (issue 9 section 5): (1) and (2) within 3x of render; (3) under 1 s. The zone check is
`publish.check` (default auto: named-checkzone when installed, which alone takes 4-8 s on 1M
names); the line for (1) says which check ran. Reload hooks are `none`: this measures blocker.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.render import write_orders  # noqa: E402
from blocker.zone.read import read_meta  # noqa: E402

OPERATORS = ("orange", "sfr", "bouygues", "free")
TARGET_RATIO, TARGET_LATE_S = 3.0, 1.0
PARIS = timezone(timedelta(hours=1))


def write_config(path: Path, check: str) -> None:
    lines = [f"publish: {{check: {check}}}", "daemon: {reconcile_interval: 600, watch_interval: 0.2}", "operators:"]
    lines += [f"  {op}: {{reload: {{kind: none}}}}" for op in OPERATORS]
    path.write_text("\n".join(lines) + "\n")


def blocker(config: Path, *args: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "blocker", "--config", str(config), *args], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"blocker {args[0]} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return wall


def checksums(zones: Path) -> dict[str, str | None]:
    out = {}
    for op in OPERATORS:
        meta = read_meta(zones / f"{op}.rpz")
        out[op] = meta.checksum if meta is not None else None
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate, timeout: float, what: str, every: float = 0.02) -> float:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while True:
        now = time.time()
        if predicate():
            return now
        if now > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def order_text(order_id: str, operators: str, start: datetime, end: datetime, targets: list[str]) -> str:
    return (f"id: {order_id}\ncourt: Tribunal judiciaire de Paris\ncase_number: RG 26/99999\n"
            f"decision_date: {(start - timedelta(days=1)).date().isoformat()}\noperators: [{operators}]\n"
            f"start: {start.isoformat()}\nend: {end.isoformat()}\ntargets:\n"
            + "".join(f"  - {t}\n" for t in targets))


def place(folder: Path, name: str, text: str) -> None:
    tmp = folder / f".{name}.tmp"  # dot files are not order files
    tmp.write_text(text)
    os.replace(tmp, folder / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--per-file", type=int, default=1000)
    parser.add_argument("--large", type=int, default=100_000, help="targets of the large order in (3)")
    parser.add_argument("--check", default="auto", choices=["auto", "named-checkzone", "structural", "none"])
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the daemon")
    args = parser.parse_args()
    check = args.check
    found = "named-checkzone" if shutil.which("named-checkzone") else "structural"
    check_used = found if check == "auto" else check
    with tempfile.TemporaryDirectory(prefix="blocker-bench-publish-") as tmp:
        base = Path(tmp)
        orders, config = base / "orders", base / "blocker.yaml"
        write_config(config, check)
        t0 = time.perf_counter()
        write_orders(orders, args.files, args.per_file)
        names = args.files * args.per_file
        print(f"generated {args.files} order files x {args.per_file} targets ({names:,} names, half with "
              f"subdomains) on {len(OPERATORS)} operators in {time.perf_counter() - t0:.1f} s; {os.cpu_count()} "
              f"cores, load average {os.getloadavg()[0]:.2f}; publish.check: {check} ({check_used} ran)")

        # (1) render, then the first apply, of the same orders
        render = blocker(config, "render", "--orders", str(orders), "--out", str(base / "rendered"))
        want = checksums(base / "rendered")
        apply = blocker(config, "apply", "--orders", str(orders), "--out", str(base / "applied"),
                        "--state-dir", str(base / "state-apply"))
        assert checksums(base / "applied") == want, "apply published other zones than render wrote"
        print(f"    render (cold): {render:.2f} s")
        print(f"(1) first apply: {apply:.2f} s = {apply / render:.2f}x render (target <= {TARGET_RATIO:.0f}x); "
              f"zones identical to render's; check: {check_used}")

        # (2) a cold daemon start until all four zones are published
        zones, state, port = base / "zones", base / "state", free_port()
        log = (base / "daemon.log").open("wb")
        t0 = time.time()
        daemon = subprocess.Popen([sys.executable, "-m", "blocker", "--config", str(config), "run",
                                   "--orders", str(orders), "--state-dir", str(state), "--out", str(zones),
                                   "--listen", f"127.0.0.1:{port}"], cwd=ROOT, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=log)
        try:
            done = wait_for(lambda: checksums(zones) == want, args.timeout, "the daemon's first publish", 0.05)
            cold = done - t0
            print(f"(2) cold daemon start to all {len(OPERATORS)} zones published: {cold:.2f} s = "
                  f"{cold / render:.2f}x render (target <= {TARGET_RATIO:.0f}x)")

            # (3) a large order starts on orange at T; an unrelated order on sfr lifts at T+3 s
            before_sfr = checksums(zones)["sfr"]
            small_start = datetime.now(PARIS) - timedelta(hours=1)
            place(orders, "zz-small.yaml", order_text("zz-small", "sfr", small_start, small_start + timedelta(days=1),
                                                      ["unrelated.bench.example"]))
            wait_for(lambda: checksums(zones)["sfr"] != before_sfr, 120, "the unrelated order on sfr")
            time.sleep(1.0)
            start = datetime.fromtimestamp(math.ceil(time.time() + 8), PARIS)
            lift = start + timedelta(seconds=3)
            place(orders, "zz-small.yaml", order_text("zz-small", "sfr", small_start, lift,
                                                      ["unrelated.bench.example"]))
            large = [f"big{i:07d}.large.example" for i in range(args.large)]
            place(orders, "zz-large.yaml", order_text("zz-large", "orange", start, start + timedelta(days=30), large))
            wait_for(lambda: time.time() >= start.timestamp() - 1, 60, "the large order's start")
            sfr_now, orange_now = checksums(zones)["sfr"], checksums(zones)["orange"]
            # Both zones watched in one loop: each change is timed when it happens, whichever comes first.
            seen: dict[str, float] = {}

            def both_changed() -> bool:
                now, found = time.time(), checksums(zones)
                for op, before in (("orange", orange_now), ("sfr", sfr_now)):
                    if op not in seen and found[op] != before:
                        seen[op] = now
                return len(seen) == 2

            wait_for(both_changed, 600, "the large order's publish and the unrelated lift")
            started, lifted = seen["orange"], seen["sfr"]
            late = lifted - lift.timestamp()
            print(f"(3) unrelated lift on sfr at T+3 s while a {args.large:,}-target order starting at T is published "
                  f"on orange: {late:+.2f} s late (target < {TARGET_LATE_S:.0f} s); the large order itself "
                  f"published {started - start.timestamp():+.2f} s after T")
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            log.close()


if __name__ == "__main__":
    main()
