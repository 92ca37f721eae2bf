"""`probe`: ask real resolvers whether every block holds and every lift took, and prove it.

Without `--operator`, every operator with resolvers is probed, as the daemon does. A resolver
that answers nothing is one line ("unreachable"), not one error line per check.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from blocker.cli.common import open_state, parse_at, shown_path, valid_orders
from blocker.cli.errors import EXIT_USAGE, CliError, with_epilog
from blocker.cli.output import plural, table
from blocker.config.model import Config
from blocker.orders.names import InvalidName, normalize_name
from blocker.probe.model import Check, CheckResult, exit_code
from blocker.textsafe import display_path, printable
from blocker.vocab import Verdict
from blocker.zone.read import ZoneMeta, read_meta

if TYPE_CHECKING:
    from blocker.config.model import OperatorConfig
    from blocker.orders.model import LoadResult
    from blocker.probe.expectations import Published
    from blocker.probe.passes import PassOutcome


def cmd_probe(args: argparse.Namespace, config: Config) -> int:
    ops = _operators_to_probe(args, config)
    controls = _controls(args, config)
    at = parse_at(args.at, config)
    result = _every_order(args, config)
    state_dir = _state_dir(args, config)
    every: list[CheckResult] = []
    json_rows: list[dict[str, object]] = []
    for op in ops:
        outcome, checks, proof = _probe_operator(args, config, op, at, result, controls, state_dir)
        every += outcome.results
        if args.json:
            json_rows += [{**r.to_json(), "operator": op.id} for r in outcome.results]
        else:
            if len(ops) > 1:
                print(f"{'' if op is ops[0] else chr(10)}operator {op.id}:")
            print_probe(outcome.results, checks)
        _print_serial_notes(outcome, op.id, proof.published)
    if args.json:
        print(json.dumps(json_rows, indent=2))
    return exit_code(every)


def _operators_to_probe(args: argparse.Namespace, config: Config) -> list[OperatorConfig]:
    """The operators asked for (all by default), each with the resolvers to ask; an operator with
    none is said on stderr and left out (refused when it was named)."""
    from blocker.probe.passes import with_resolvers

    chosen = sorted(set(args.operator)) if args.operator else sorted(config.operators)
    for name in chosen:
        if name not in config.operators:
            raise CliError(f"unknown operator {name!r} (known: {', '.join(sorted(config.operators))})", EXIT_USAGE)
    addresses = [_resolver_address(text) for text in args.resolver or ()]
    if addresses and len(chosen) != 1:
        raise CliError("--resolver probes one operator's zone: name it with --operator", EXIT_USAGE)
    ops = [with_resolvers(config.operators[name], addresses, args.tcp) for name in chosen]
    skipped = [op.id for op in ops if not op.resolvers]
    ops = [op for op in ops if op.resolvers]
    if not ops:
        where = f"operators.{skipped[0]}.resolvers" if len(skipped) == 1 else "operators.<id>.resolvers"
        raise CliError(f"no resolver to probe: give --resolver or set {where}", EXIT_USAGE)
    if skipped and args.operator:
        raise CliError(f"no resolver to probe for {', '.join(skipped)}: give --resolver or set "
                       f"operators.{skipped[0]}.resolvers", EXIT_USAGE)
    for name in skipped:
        print(f"{name}: no resolvers configured, not probed", file=sys.stderr)
    return ops


def _controls(args: argparse.Namespace, config: Config) -> list[str]:
    try:
        return [normalize_name(n) for n in args.control] if args.control else list(config.control_names)
    except InvalidName as exc:
        raise CliError(f"--control: {exc}", EXIT_USAGE) from None


def _every_order(args: argparse.Namespace, config: Config) -> LoadResult:
    try:
        return valid_orders(args, config)
    except CliError as exc:  # no verdict is possible without every order: not a "block missing" (1)
        raise CliError(str(exc), EXIT_USAGE) from None


def _state_dir(args: argparse.Namespace, config: Config) -> Path:
    state_dir = Path(args.state_dir) if args.state_dir else config.state_dir
    if args.state_dir and not state_dir.is_dir():
        raise CliError(f"--state-dir {shown_path(state_dir)}: no such directory", EXIT_USAGE)
    return state_dir


def _probe_operator(args: argparse.Namespace, config: Config, op: OperatorConfig, at: datetime,
                    result: LoadResult, controls: list[str],
                    state_dir: Path) -> tuple[PassOutcome, list[Check], _ZoneProof]:
    """One operator's pass: its checks asked of its resolvers (a progress bar on a terminal when
    they are many), then what its published zone proves."""
    from blocker.probe.expectations import expected_checks
    from blocker.probe.passes import run_pass

    checks = expected_checks(result.orders.values(), op.id, at, recent_days=config.probe_recent_window_days,
                             control_names=controls)
    lanes = len(checks) * sum(len(r.transports) for r in op.resolvers)
    bar = None
    if sys.stderr.isatty() and not args.json and len(checks) * len(op.resolvers) > 200:
        from tqdm import tqdm

        bar = tqdm(total=lanes, unit="check", file=sys.stderr)

    def progress(done: int, total: int, bar: object = bar) -> None:
        if bar is not None:
            bar.total = total  # type: ignore[attr-defined]
            bar.update(done - bar.n)  # type: ignore[attr-defined]

    proof = _ZoneProof((Path(args.out) if args.out else config.zones_dir) / f"{op.id}.rpz", op.id, state_dir)
    done: Callable[[], None] | None = bar.close if bar is not None else None
    outcome = run_pass(config, op, checks, result.orders.values(), proof, progress=progress, done=done)
    return outcome, checks, proof


class _ZoneProof:
    """What the zone on disk and the state say was published, read when the pass asks (after
    its answers); `published` is the zone's header then, None when there is no zone."""

    def __init__(self, zone_path: Path, operator: str, state_dir: Path) -> None:
        self.zone_path, self.operator, self.state_dir = zone_path, operator, state_dir
        self.published: ZoneMeta | None = None

    def __call__(self) -> Published | None:
        from blocker.probe.expectations import published_from_state
        from blocker.zone.read import read_entries

        zone_path = self.zone_path
        self.published = published = read_meta(zone_path)
        try:
            entries = read_entries(zone_path) if published is not None else None
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # a damaged zone proves nothing
            print(f"{display_path(zone_path)}: unreadable zone ({printable(str(exc), limit=200)})",
                  file=sys.stderr)
            entries = None
        if published is None or entries is None:
            print(f"{display_path(zone_path)}: no published zone: no block or lift can be proven", file=sys.stderr)
            return None
        state = open_state(self.state_dir)
        try:
            return published_from_state(published.serial, entries, self.operator, state)
        finally:
            if state is not None:
                state.close()


def _print_serial_notes(outcome: PassOutcome, operator: str, published: ZoneMeta | None) -> None:
    from blocker.probe.passes import serial_notes

    if published is not None:
        for note in serial_notes(outcome, operator, published.serial):
            print(note, file=sys.stderr)


def _resolver_address(text: str) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT, or a bare address (port 53)."""
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ipaddress.ip_address(host)
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise CliError(f"--resolver: expected IP, IP:PORT or [IPv6]:PORT, got {text!r}", EXIT_USAGE) from None
    return host, number


def _unreachable(results: Sequence[CheckResult]) -> dict[tuple[str, str], list[CheckResult]]:
    """Lanes (resolver, transport) where no check got any reply: one fact, not one per check."""
    lanes: dict[tuple[str, str], list[CheckResult]] = {}
    for r in results:
        lanes.setdefault((r.resolver, r.transport), []).append(r)
    return {lane: rs for lane, rs in lanes.items()
            if all(r.verdict == Verdict.ERROR.value and not r.rcode for r in rs)}


def print_probe(results: Sequence[CheckResult], checks: Sequence[Check]) -> None:
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for r in results:
        counts = rows.setdefault((r.resolver, r.transport), {})
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    # The table's columns, in this order (what holds first): a contract scripts may read.
    verdicts = [v.value for v in (Verdict.BLOCKED, Verdict.RESOLVES, Verdict.NOT_BLOCKED, Verdict.OVERBLOCKED,
                                  Verdict.ERROR, Verdict.UNVERIFIED)]
    cells = [[res, tr, *[str(c.get(v, 0)) for v in verdicts]] for (res, tr), c in sorted(rows.items())]
    print(table(cells, ["RESOLVER", "TRANSPORT", *[v.upper() for v in verdicts]]))
    dead = _unreachable(results)
    for (res, tr), rs in sorted(dead.items()):
        print(f"  unreachable: {res}/{tr}: no reply to any of {plural(len(rs), 'check')} "
              f"({printable(rs[0].reason, limit=200)})")
    bad = [r for r in results if r.verdict not in (Verdict.BLOCKED.value, Verdict.RESOLVES.value)
           and (r.resolver, r.transport) not in dead]
    for r in bad[:50]:
        ids = ",".join(r.order_ids) or "-"
        print(f"  {r.verdict}: {r.name} on {r.resolver}/{r.transport} (expected {r.expected}; orders {ids}; "
              f"rcode {r.rcode or 'none'}) {r.reason}")
    if len(bad) > 50:
        print(f"  ... and {len(bad) - 50} more (use --json)")
    resolvers = len({r.resolver for r in results})
    failing = len(bad) + sum(len(rs) for rs in dead.values())
    print(f"{plural(len(checks), 'check')} on {plural(resolvers, 'resolver')}: {plural(len(results), 'result')}, "
          f"{failing} not holding")


def register(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("probe", "check on real resolvers that every block holds and every lift took")
    p.add_argument("--operator", metavar="OP", action="append",
                   help="only this operator (repeatable; default: every operator with resolvers)")
    p.add_argument("--resolver", metavar="HOST:PORT", action="append",
                   help="resolver to probe (repeatable; one --operator; default: the operator's resolvers)")
    p.add_argument("--orders", metavar="DIR", help="orders folder (default: config orders_dir)")
    p.add_argument("--at", metavar="ISO8601", help="expected state at this instant (default: now)")
    p.add_argument("--control", metavar="NAME", action="append",
                   help="a name that must resolve (repeatable; replaces the config's control names)")
    p.add_argument("--out", metavar="DIR", help="zones folder, for the published serial (default: zones_dir)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="state folder, for the serials that first held each entry (default: state_dir, if any)")
    p.add_argument("--tcp", action="store_true", help="probe over TCP as well as UDP")
    p.add_argument("--json", action="store_true", help="JSON array, one object per check (with its operator)")
    p.description = ("check on real resolvers that every block holds and every lift took. A block or lift "
                     "counts only when the resolver serves (canary TXT) the serial of a zone that holds the "
                     "entry (a lift: that removed it) and every control name resolves on it; otherwise the "
                     "check is `unverified`.")
    with_epilog(p, {0: "every check holds", 1: "not-blocked, overblocked or unverified",
                    2: "only errors (no resolver answered), or a usage error"},
                "blocker probe --operator orange --resolver 127.0.0.1:5353")
    p.set_defaults(func=cmd_probe)
