"""Memory benchmark: the peak RSS of the whole process tree of a cold `blocker apply` (figures, not a test).

A cold `blocker apply` (empty state and zones folder) of N names in F order files (bench/render.py's
generator: 1M names in 1,000 files by default, half with a `*.name` twin) on four operators, reload
hooks `none`, `publish.check` as given (default auto: named-checkzone when installed). The RSS of
blocker and of every descendant (load workers, named-checkzone) is read from /proc (psutil when
installed) every --every seconds; the peak of their sum is the tree's peak, and each process's own
peak is shown by itself.

Target (issue 11): the tree's peak under 600 MB at 1M names.

`--trace` also runs the same apply inside this process under tracemalloc (slow: figures of where
Python memory goes, not of time): a snapshot by line is taken when blocker is about to start the
zone check (where the tree peaked before issue 11) and at tracemalloc's own peak is reported next to it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.render import write_orders  # noqa: E402

OPERATORS = ("orange", "sfr", "bouygues", "free")
TARGET_MB = 600


def write_config(path: Path, check: str) -> None:
    lines = [f"publish: {{check: {check}}}", "operators:"]
    lines += [f"  {op}: {{reload: {{kind: none}}}}" for op in OPERATORS]
    path.write_text("\n".join(lines) + "\n")


# --- the RSS of a process tree ------------------------------------------------------------------

try:
    import psutil  # type: ignore[import-untyped, unused-ignore]
except ImportError:  # not a dependency: /proc says the same on Linux
    psutil = None


def _proc_tree(pid: int) -> list[tuple[int, str, int]]:
    """(pid, name, RSS in kB) of `pid` and of every descendant alive now."""
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        out = []
        for p in procs:
            try:
                out.append((p.pid, p.name(), p.memory_info().rss // 1024))
            except psutil.Error:
                continue
        return out
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
        todo.extend(children.get(current, ()))
        name, rss = "?", 0
        try:
            with open(f"/proc/{current}/status") as fh:
                for line in fh:
                    if line.startswith("Name:"):
                        name = line.split(None, 1)[1].strip()
                    elif line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
        except OSError:
            continue
        out.append((current, name, rss))
    return out


class TreeSampler:
    """Samples the RSS of a process tree every `every` seconds: the peak of the sum, each
    process's own peak, and what ran beside what at the tree's peak."""

    def __init__(self, pid: int, every: float) -> None:
        self.pid, self.every = pid, every
        self.peak_tree = 0
        self.at_peak: list[tuple[int, str, int]] = []
        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> (name, peak kB)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            tree = _proc_tree(self.pid)
            self.samples += 1
            total = sum(rss for _, _, rss in tree)
            if total > self.peak_tree:
                self.peak_tree, self.at_peak = total, tree
            for pid, name, rss in tree:
                if rss > self.peaks.get(pid, ("", 0))[1]:
                    self.peaks[pid] = (name, rss)
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def cold_apply(orders: Path, base: Path, config: Path, every: float) -> tuple[float, TreeSampler, str]:
    zones, state = base / "zones", base / "state"
    for folder in (zones, state):
        if folder.exists():
            subprocess.run(["rm", "-rf", str(folder)], check=True)
    t0 = time.perf_counter()
    # The plan's 6M lines go to a file: a pipe read here would hold them in this process.
    with (base / "apply.out").open("w+") as out:
        proc = subprocess.Popen([sys.executable, "-m", "blocker", "--config", str(config), "apply", "--orders",
                                 str(orders), "--out", str(zones), "--state-dir", str(state)],
                                stdout=out, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        sampler = TreeSampler(proc.pid, every)
        _, stderr = proc.communicate()
        wall = time.perf_counter() - t0
        sampler.stop()
        out.seek(0)
        stdout = "".join(line for line in out if "published" in line or "NOT" in line)
    if proc.returncode != 0:
        raise SystemExit(f"apply exited {proc.returncode}: {stderr[-2000:]}")
    published = [ln for ln in stdout.splitlines() if "published serial" in ln]
    if len(published) != len(OPERATORS):
        raise SystemExit(f"apply published {len(published)} zone(s), not {len(OPERATORS)}: {stdout[-2000:]}")
    return wall, sampler, published[0]


def traced_apply(orders: Path, base: Path, config: Path, top: int) -> None:
    """The same apply in this process under tracemalloc: where blocker's Python memory is when
    the first zone check starts, by line."""
    import tracemalloc

    import blocker.publish.lean as lean
    import blocker.publish.writer as writer
    from blocker.cli.main import main as blocker_main

    zones, state = base / "zones-traced", base / "state-traced"
    snaps: list[tuple[str, tracemalloc.Snapshot, int]] = []
    original = writer.check_zone

    def check_zone(path: Path, data: bytes, origin: str, mode: str) -> list[str]:
        if not snaps:
            snaps.append(("at the first zone check", tracemalloc.take_snapshot(), tracemalloc.get_traced_memory()[0]))
        return original(path, data, origin, mode)

    writer.check_zone = lean.check_zone = check_zone  # lean: `apply`'s named-checkzone before the publish loop
    tracemalloc.start(1)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # 1.5M plan lines
                code = blocker_main(["--config", str(config), "apply", "--orders", str(orders), "--out",
                                 str(zones), "--state-dir", str(state)])
    except SystemExit as exc:
        code = exc.code  # type: ignore[assignment]
    finally:
        writer.check_zone = lean.check_zone = original
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(f"    traced apply exited {code}; tracemalloc peak {peak / 2**20:.0f} MB")
    for label, snap, current in snaps:
        print(f"    {label}: {current / 2**20:.0f} MB traced; top {top} lines:")
        for stat in snap.statistics("lineno")[:top]:
            frame = stat.traceback[0]
            print(f"      {stat.size / 2**20:7.1f} MB {stat.count:>9,} blocks  {frame.filename}:{frame.lineno}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--per-file", type=int, default=1000)
    parser.add_argument("--check", default="auto", help="publish.check (auto | named-checkzone | structural | none)")
    parser.add_argument("--every", type=float, default=0.02, help="seconds between samples")
    parser.add_argument("--repeat", type=int, default=1, help="runs; medians are printed")
    parser.add_argument("--trace", action="store_true", help="also a tracemalloc snapshot by line (slow)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blocker-membench-") as tmp:
        base = Path(tmp)
        write_orders(base / "orders", args.files, args.per_file)
        config = base / "blocker.yaml"
        write_config(config, args.check)
        print(f"{args.files} order files x {args.per_file} targets ({args.files * args.per_file:,} names, half "
              f"with subdomains), {len(OPERATORS)} operators, publish.check: {args.check}; {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.2f}; sampling {'psutil' if psutil else '/proc'} every "
              f"{args.every * 1000:.0f} ms")
        runs = [cold_apply(base / "orders", base, config, args.every) for _ in range(args.repeat)]
        tree = statistics.median(s.peak_tree for _, s, _ in runs) / 1024
        wall = statistics.median(w for w, _, _ in runs)
        each = (f"; median of {args.repeat}: " + ", ".join(f"{s.peak_tree / 1024:.0f}" for _, s, _ in runs)
                if args.repeat > 1 else "")
        verdict = "under" if tree < TARGET_MB else "NOT under"
        print(f"cold apply: {wall:.1f} s; whole tree peak {tree:.0f} MB ({verdict} the {TARGET_MB} MB target){each}")
        _, last, line = runs[-1]
        print("    at the tree's peak: " + ", ".join(f"{name} {rss / 1024:.0f} MB"
                                                    for _, name, rss in sorted(last.at_peak, key=lambda t: -t[2])))
        print("    each process's own peak: " + ", ".join(
            f"{name} (pid {pid}) {rss / 1024:.0f} MB" for pid, (name, rss) in
            sorted(last.peaks.items(), key=lambda kv: -kv[1][1])))
        print(f"    {last.samples} samples; {line}")
        if args.trace:
            traced_apply(base / "orders", base, config, args.top)


if __name__ == "__main__":
    main()
