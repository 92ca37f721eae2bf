"""The `blocker` command line: one sub-command per job, exit codes a script can rely on.

Exit codes: 0 ok / nothing to do; 1 invalid input or a check failed; 2 usage error (or, for
`probe`, only errors prevented a verdict); 3 `plan` has changes; 4 refused by a safety guard
(needs review or --force); 5 publish or reload failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blocker import __version__, cli_legal
from blocker.audit import AuditLog
from blocker.config import Config, ConfigError, load_config
from blocker.legaltime import LegalTimeError, parse_instant, zone
from blocker.orders import LoadResult, load_orders
from blocker.plan import Caches, Change, Plan, compute_plan
from blocker.policy import desired
from blocker.publish import PublishError, write_zone
from blocker.reconcile import (
    FLAG_ORPHANED,
    Effective,
    choose_serial,
    effective_orders,
    publish_lock,
    publish_plan,
)
from blocker.rpz import read_meta, render_body
from blocker.state import State

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_CHANGES, EXIT_REFUSED, EXIT_FAILED = 0, 1, 2, 3, 4, 5


class CliError(Exception):
    """A problem to report in one line, with the exit code to leave with."""

    def __init__(self, message: str, code: int = EXIT_INVALID) -> None:
        super().__init__(message)
        self.code = code


def parse_at(text: str | None, config: Config) -> datetime:
    """`--at`: ISO 8601; without an offset it is read in the configured time zone."""
    if text is None:
        return datetime.now(UTC)
    try:
        instant, _ = parse_instant(text, zone(config.timezone))
    except LegalTimeError as exc:
        raise CliError(f"--at: {exc}", EXIT_USAGE) from None
    return instant.astimezone(UTC)


def _orders(args: argparse.Namespace, config: Config) -> tuple[LoadResult, Path]:
    folder = Path(args.orders) if getattr(args, "orders", None) else config.orders_dir
    return load_orders(folder, config), folder


def _print_errors(result: LoadResult) -> None:
    for error in result.errors:
        print(error, file=sys.stderr)


def cmd_validate(args: argparse.Namespace, config: Config) -> int:
    result, folder = _orders(args, config)
    good = sorted(result.orders.values(), key=lambda o: o.path)
    for order in good:
        print(f"{order.path}: ok ({order.id}, {len(order.targets)} targets)")
    for error in result.errors:
        print(error)
    bad = len(result.invalid_files) + (1 if any(e.field == "(folder)" for e in result.errors) else 0)
    print(f"{len(good)} valid, {bad} invalid in {folder}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_INVALID


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in rows]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    at = parse_at(args.at, config)
    result, _ = _orders(args, config)
    _print_errors(result)
    orders = sorted(result.orders.values(), key=lambda o: (o.start, o.id))
    if args.json:
        print(json.dumps([o.to_json(at) for o in orders], indent=2, ensure_ascii=False))
    else:
        rows = []
        for o in orders:
            j = o.to_json(at)
            escalated = sum(1 for t in o.targets if t.kind == "url-escalated")
            targets = f"{len(o.targets)}" + (f" ({escalated} url-escalated)" if escalated else "")
            rows.append([o.id, j["status"], j["start"], j["end"], ",".join(o.operators), targets, o.rule])
        print(_table(rows, ["ORDER", "STATUS", "START", "END", "OPERATORS", "TARGETS", "RULE"]))
        print(f"\nat {at.astimezone(zone(config.timezone)).isoformat(timespec='seconds')} "
              f"({config.timezone}); {len(orders)} orders", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_INVALID


def _operators(args: argparse.Namespace, config: Config) -> list[str]:
    chosen = args.operator or sorted(config.operators)
    unknown = [op for op in chosen if op not in config.operators]
    if unknown:
        raise CliError(f"unknown operator {unknown[0]!r} (known: {', '.join(sorted(config.operators))})", EXIT_USAGE)
    return sorted(set(chosen))


def _valid_orders(args: argparse.Namespace, config: Config) -> LoadResult:
    """Fail closed: any invalid order file stops the command before anything is written."""
    result, folder = _orders(args, config)
    if not result.ok:
        _print_errors(result)
        raise CliError(f"{len(result.errors)} problem(s) in {folder}: nothing written", EXIT_INVALID)
    return result


def cmd_render(args: argparse.Namespace, config: Config) -> int:
    at = parse_at(args.at, config)
    result = _valid_orders(args, config)
    out = Path(args.out) if args.out else config.zones_dir
    caches = Caches()
    for operator in _operators(args, config):
        op = config.operators[operator]
        zone = render_body(desired(result.orders.values(), operator, at, caches.policy), op, caches.render)
        path = out / f"{operator}.rpz"
        meta = read_meta(path)
        if meta is not None and meta.checksum == zone.checksum:
            print(f"{path}: unchanged, serial {meta.serial}, {zone.names} names, {zone.entries} records")
            continue
        serial = choose_serial(path, None, result.orders, operator, at)
        try:
            write_zone(path, zone.text(serial, config), op.origin, config.publish_check,
                       zone.checksum)
        except PublishError as exc:
            raise CliError(str(exc), EXIT_FAILED) from None
        print(f"{path}: written, serial {serial}, {zone.names} names, {zone.entries} records")
    return EXIT_OK


def _plan(args: argparse.Namespace, config: Config, *, record: bool, force: bool = False,
          audit: AuditLog | None = None) -> tuple[Plan, Effective, State | None]:
    at = parse_at(args.at, config)
    result = _valid_orders(args, config)
    state_dir = Path(args.state_dir) if args.state_dir else config.state_dir
    state = State(state_dir) if record else State.open_existing(state_dir)
    eff = effective_orders(result, config, state, audit, at, force=force, record=record)
    zones = state.zones() if state is not None else {}
    plan = compute_plan(eff.orders, at, config, Path(args.out) if args.out else config.zones_dir,
                        operators=_operators(args, config), force=force,
                        last_publish={op: z.published_at for op, z in zones.items()})
    return plan, eff, state


def _print_plan(plan: Plan, eff: Effective, as_json: bool) -> None:
    if as_json:
        data = plan.to_json()
        data["flags"] = eff.flags
        print(json.dumps(data, indent=2))
        return
    for order_id, flag in sorted(eff.flags.items()):
        print(f"! order {order_id}: {flag} (its last good version stays in force)")
    for p in plan.operators:
        state = "changes" if p.changed else "no change"
        prev = f"serial {p.previous.serial}" if p.previous else "no zone yet"
        print(f"{p.operator}: {state} ({prev}; {p.zone.names} names, {p.zone.entries} records after)")
        _print_changes(p.changes)
        for c in p.held:
            print(f"  = {c.owner} {c.old_action} [{','.join(c.old_order_ids)}] HELD ({', '.join(c.reasons)})")
        if p.guard:
            print(f"  held: {p.guard}; review, then `blocker apply --force`")
    print(f"plan checksum: {plan.checksum}")


_SIGNS = {"add": "+", "remove": "-", "change": "~"}


def _print_changes(changes: list[Change], chunk: int = 65536) -> None:
    """One line per change, `  + owner action [ids] (reasons)`, written a chunk at a time: a
    first apply of 1M names on four operators is 6M lines, and a print() per line took longer
    than the whole publish. What follows the owner is made once per distinct change value."""
    tails: dict[tuple[Any, ...], str] = {}
    out = sys.stdout
    for start in range(0, len(changes), chunk):
        lines = []
        for c in changes[start:start + chunk]:
            key = (c.kind, c.action, c.old_action, c.order_ids, c.old_order_ids, c.reasons)
            tail = tails.get(key)
            if tail is None:
                tail = tails[key] = (f" {c.action or c.old_action} [{','.join(c.order_ids or c.old_order_ids)}] "
                                     f"({', '.join(c.reasons)})\n")
            lines.append(f"  {_SIGNS[c.kind]} {c.owner}{tail}")
        out.write("".join(lines))
    out.flush()


def cmd_plan(args: argparse.Namespace, config: Config) -> int:
    plan, eff, _ = _plan(args, config, record=False)
    _print_plan(plan, eff, args.json)
    return EXIT_CHANGES if plan.has_changes else EXIT_OK


def cmd_apply(args: argparse.Namespace, config: Config) -> int:
    if args.dry_run:
        return cmd_plan(args, config)
    state_dir = Path(args.state_dir) if args.state_dir else config.state_dir
    audit = AuditLog(state_dir)
    try:
        with publish_lock(state_dir):
            plan, eff, state = _plan(args, config, record=True, force=args.force, audit=audit)
            _print_plan(plan, eff, args.json)
            if args.checksum and args.checksum != plan.checksum:
                raise CliError(f"plan checksum is {plan.checksum}, not the reviewed {args.checksum}: "
                               "the orders or zones changed; review the plan again", EXIT_REFUSED)
            if plan.held:
                raise CliError(f"refused: {len(plan.held)} removal(s) need review; "
                               "run `blocker apply --force` once they are intended", EXIT_REFUSED)
            orphaned = sorted(i for i, flag in eff.flags.items() if flag == FLAG_ORPHANED)
            if orphaned:
                raise CliError(f"refused: order(s) {', '.join(orphaned)} in force lost their file (kept in force "
                               "from the state); lift them with `lifted:` in a file, or run "
                               "`blocker apply --force` to drop them", EXIT_REFUSED)
            if not plan.has_changes:
                print("nothing to apply")
                return EXIT_OK
            audit.append("apply", {"checksum": plan.checksum, "force": args.force,
                                   "operators": [p.operator for p in plan.operators if p.changed]})
            # With --at, the zones published are the state at that instant: record them as such, so
            # later plans explain changes relative to it.
            outcomes = publish_plan(plan, config, Path(args.out) if args.out else config.zones_dir, state, audit,
                                    now=plan.at if args.at else None)
    except PublishError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    failed = False
    for o in outcomes:
        if not o.published:
            print(f"{o.operator}: NOT published: {o.error}", file=sys.stderr)
            failed = True
        elif o.reload is not None and not o.reload.ok:
            print(f"{o.operator}: published serial {o.serial}, reload FAILED (not yet in effect): "
                  f"{o.reload.message}", file=sys.stderr)
            failed = True
        else:
            print(f"{o.operator}: published serial {o.serial}" + (f", {o.reload.message}" if o.reload else ""))
    return EXIT_FAILED if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    config_help = "daemon config (default: ./configs/blocker.yaml, else built-in defaults)"
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a --config after the sub-command must not erase one given before it.
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=config_help)
    parser = argparse.ArgumentParser(
        prog="blocker",
        description="Apply court-ordered DNS blocks as RPZ zones, prove they hold, lift them on time.",
        epilog="exit codes: 0 ok, 1 invalid input or failed check, 2 usage, 3 plan has changes, "
               "4 refused by a safety guard, 5 publish/reload failed",
    )
    parser.add_argument("--config", metavar="FILE", default=None, help=config_help)
    parser.add_argument("--version", action="version", version=f"blocker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text)

    p = add("validate", "check every order file; one line per problem")
    p.add_argument("--orders", metavar="DIR", help="orders folder (default: config orders_dir)")
    p.set_defaults(func=cmd_validate)

    p = add("status", "every order with its status at an instant")
    p.add_argument("--orders", metavar="DIR")
    p.add_argument("--at", metavar="ISO8601", help="instant (default: now; no offset = config time zone)")
    p.add_argument("--json", action="store_true", help="JSON array instead of a table")
    p.set_defaults(func=cmd_status)

    p = add("render", "write one RPZ zone per operator for the orders in force")
    p.add_argument("--orders", metavar="DIR")
    p.add_argument("--at", metavar="ISO8601")
    p.add_argument("--out", metavar="DIR", help="output folder (default: config zones_dir)")
    p.add_argument("--operator", metavar="OP", action="append", help="only this operator (repeatable)")
    p.set_defaults(func=cmd_render)

    p = add("plan", "show what apply would change, per operator, and why")
    _publish_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)

    p = add("apply", "publish the plan: atomic write, check, reload; refuses unexplained removals")
    _publish_args(p)
    p.add_argument("--checksum", metavar="SUM", help="refuse unless the plan is the one reviewed")
    p.add_argument("--force", action="store_true", help="also apply removals no order's end explains")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing (same as plan)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_apply)

    p = add("run", "the daemon: publish on every change and at every start/lift instant (foreground)")
    p.add_argument("--orders", metavar="DIR", help="overrides config orders_dir")
    p.add_argument("--state-dir", metavar="DIR", help="overrides config state_dir")
    p.add_argument("--out", metavar="DIR", help="overrides config zones_dir")
    p.add_argument("--listen", metavar="HOST:PORT", help="overrides config http.listen (/metrics, /healthz)")
    p.add_argument("--log-format", choices=("plain", "json"), help="overrides config log_format")
    p.set_defaults(func=cmd_run)

    p = add("probe", "check on real resolvers that every block holds and every lift took")
    p.add_argument("--operator", metavar="OP", required=True)
    p.add_argument("--resolver", metavar="HOST:PORT", action="append",
                   help="resolver to probe (repeatable; default: the operator's resolvers in the config)")
    p.add_argument("--orders", metavar="DIR")
    p.add_argument("--at", metavar="ISO8601", help="expected state at this instant (default: now)")
    p.add_argument("--control", metavar="NAME", action="append",
                   help="a name that must resolve (repeatable; replaces the config's control names)")
    p.add_argument("--out", metavar="DIR", help="zones folder, for the published serial (default: zones_dir)")
    p.add_argument("--tcp", action="store_true", help="probe over TCP as well as UDP")
    p.add_argument("--json", action="store_true", help="JSON array, one object per check")
    p.set_defaults(func=cmd_probe)

    cli_legal.register(add)
    return parser


def cmd_probe(args: argparse.Namespace, config: Config) -> int:
    import asyncio

    from blocker.config import ResolverConfig
    from blocker.expectations import expected_checks, signature_for, targets_for
    from blocker.names import NameError_, normalize_name
    from blocker.probe import exit_code, probe_sync, read_canaries
    from blocker.rpz import canary_owner, serial_gt

    if args.operator not in config.operators:
        raise CliError(f"unknown operator {args.operator!r} (known: {', '.join(sorted(config.operators))})",
                       EXIT_USAGE)
    op = config.operators[args.operator]
    transports = ("udp", "tcp") if args.tcp else ("udp",)
    if args.resolver:
        resolvers = []
        for text in args.resolver:
            host, port = _resolver_address(text)
            resolvers.append(ResolverConfig(host, port, transports=transports))
        op = replace(op, resolvers=tuple(resolvers))
    elif args.tcp:
        op = replace(op, resolvers=tuple(replace(r, transports=transports) for r in op.resolvers))
    if not op.resolvers:
        raise CliError(f"no resolver to probe: give --resolver or set operators.{op.id}.resolvers", EXIT_USAGE)
    try:
        controls = [normalize_name(n) for n in args.control] if args.control else list(config.control_names)
    except NameError_ as exc:
        raise CliError(f"--control: {exc}", EXIT_USAGE) from None
    at = parse_at(args.at, config)
    try:
        result = _valid_orders(args, config)
    except CliError as exc:  # no verdict is possible without every order: not a "block missing" (1)
        raise CliError(str(exc), EXIT_USAGE) from None
    checks = expected_checks(result.orders.values(), op.id, at, recent_days=config.probe_recent_window_days,
                             control_names=controls)
    targets = targets_for(op)
    bar = None
    if sys.stderr.isatty() and not args.json and len(checks) * len(targets) > 200:
        from tqdm import tqdm

        bar = tqdm(total=len(checks) * sum(len(t.transports) for t in targets), unit="check", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    results = probe_sync(checks, targets, signature_for(op), timeout=config.probe_timeout,
                         retries=config.probe_retries, concurrency=config.probe_concurrency,
                         rate_per_resolver=config.probe_rate_per_resolver, progress=progress)
    if bar is not None:
        bar.close()
    published = read_meta((Path(args.out) if args.out else config.zones_dir) / f"{op.id}.rpz")
    serials = asyncio.run(read_canaries(targets, canary_owner(op.id), config.probe_timeout))
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        _print_probe(results, checks)
    for target, serial in zip(targets, serials, strict=True):
        if published is None:
            break
        if serial is None:
            print(f"{target.address}: serves no canary serial for {op.id} (zone not loaded?)", file=sys.stderr)
        elif serial_gt(published.serial, serial):
            print(f"{target.address}: STALE: serves serial {serial}, published {published.serial}", file=sys.stderr)
        elif serial != published.serial:
            print(f"{target.address}: serves serial {serial}, newer than {published.serial} in the zones folder "
                  "(another publisher?)", file=sys.stderr)
    return exit_code(results)


def _resolver_address(text: str) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT, or a bare address (port 53)."""
    import ipaddress

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


def _print_probe(results: list, checks: list) -> None:
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for r in results:
        counts = rows.setdefault((r.resolver, r.transport), {})
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    verdicts = ["blocked", "resolves", "not-blocked", "overblocked", "error"]
    table = [[res, tr, *[str(c.get(v, 0)) for v in verdicts]] for (res, tr), c in sorted(rows.items())]
    print(_table(table, ["RESOLVER", "TRANSPORT", *[v.upper() for v in verdicts]]))
    bad = [r for r in results if r.verdict in ("not-blocked", "overblocked", "error")]
    for r in bad[:50]:
        ids = ",".join(r.order_ids) or "-"
        print(f"  {r.verdict}: {r.name} on {r.resolver}/{r.transport} (expected {r.expected}; orders {ids}; "
              f"rcode {r.rcode or 'none'}) {r.reason}")
    if len(bad) > 50:
        print(f"  ... and {len(bad) - 50} more (use --json)")
    print(f"{len(checks)} checks x resolvers: {len(results)} results, {len(bad)} not holding")


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from blocker import logs
    from blocker.daemon import Daemon, DaemonError

    overrides = {
        "orders_dir": Path(args.orders) if args.orders else None,
        "state_dir": Path(args.state_dir) if args.state_dir else None,
        "zones_dir": Path(args.out) if args.out else None,
        "http_listen": args.listen,
    }
    config = config.with_paths(**overrides)
    logs.setup(args.log_format or config.log_format)
    daemon = Daemon(config, Path(args.config) if args.config else None, overrides)
    try:
        return daemon.run()
    except DaemonError as exc:
        raise CliError(str(exc), EXIT_INVALID) from None


def _publish_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--orders", metavar="DIR")
    p.add_argument("--at", metavar="ISO8601")
    p.add_argument("--out", metavar="DIR", help="zones folder (default: config zones_dir)")
    p.add_argument("--state-dir", metavar="DIR", help="state folder (default: config state_dir)")
    p.add_argument("--operator", metavar="OP", action="append", help="only this operator (repeatable)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(Path(args.config) if args.config else None)
        return int(args.func(args, config))
    except CliError as exc:
        print(f"blocker: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"blocker: config: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # never a traceback to a user: one line, and the log for developers
        print(f"blocker: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 70
