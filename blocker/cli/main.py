"""The `blocker` command line: one sub-command per job, exit codes a script can rely on.

Exit codes: 0 ok / nothing to do; 1 invalid input or a check failed; 2 usage error (or, for
`probe`, only errors prevented a verdict); 3 `plan` has changes; 4 refused by a safety guard
(needs review or --force); 5 publish or reload failed.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blocker import __version__
from blocker.cli import agent as cli_agent
from blocker.cli import legal as cli_legal
from blocker.config.model import Config, ConfigError, load_config
from blocker.crashlog import write_crash_log
from blocker.orders.legaltime import LegalTimeError, fmt_instant, parse_instant, zone
from blocker.orders.model import LoadResult, load_orders
from blocker.policy import desired
from blocker.publish.plan import Caches, Change, Plan, compute_plan
from blocker.publish.reconcile import (
    FLAG_ORPHANED,
    Effective,
    choose_serial,
    effective_orders,
    publish_lock,
    publish_plan,
)
from blocker.publish.writer import PublishError, remove_stale_temps, write_zone
from blocker.record.audit import AuditLog, AuditWriteError
from blocker.record.state import State
from blocker.textsafe import display_path, printable
from blocker.zone.admit import UnsafeOwnerError
from blocker.zone.read import read_meta
from blocker.zone.render import render_body

if TYPE_CHECKING:
    from blocker.probe.model import Check, CheckResult

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_CHANGES, EXIT_REFUSED, EXIT_FAILED = 0, 1, 2, 3, 4, 5


class CliError(Exception):
    """A problem to report in one line, with the exit code to leave with."""

    def __init__(self, message: str, code: int = EXIT_INVALID) -> None:
        super().__init__(message)
        self.code = code


AT_SKEW = timedelta(minutes=5)  # how far `apply --at` may be from the clock without --force


def wall_clock() -> datetime:
    """The instant records carry: when a change was made, whatever `--at` it was made for."""
    return datetime.now(UTC)


def parse_at(text: str | None, config: Config) -> datetime:
    """`--at`: ISO 8601; without an offset it is read in the configured time zone."""
    if text is None:
        return wall_clock()
    try:
        instant, _ = parse_instant(text, zone(config.timezone))
    except LegalTimeError as exc:
        raise CliError(f"--at: {exc}", EXIT_USAGE) from None
    return instant.astimezone(UTC)


def _skew(at: datetime, now: datetime) -> str:
    """`--at` away from the clock, in words ("" within AT_SKEW): a mistyped year lifts an order
    in force, or blocks again one that ended, and back-dates what the records say."""
    gap = at - now
    if abs(gap) <= AT_SKEW:
        return ""
    seconds = abs(gap.total_seconds())
    size = f"{seconds / 86400:.1f} days" if seconds >= 86400 else f"{seconds / 60:.0f} minutes"
    return f"--at {fmt_instant(at)} is {size} {'ahead of' if gap > timedelta(0) else 'behind'} the clock"


def require_dir(path: Path, what: str, flag: str | None) -> None:
    """A folder a command reads must exist: a mistyped path is a usage error (exit 2) naming
    it, not an empty answer ("unknown" everywhere). An existing folder with nothing in it yet
    is not a typo: it is a fresh install, and commands say what is missing in it."""
    if not path.is_dir():
        origin = flag if flag else f"the config's {what}"
        state = "is not a folder" if path.exists() else "does not exist"
        raise CliError(f"{display_path(path)} ({origin}) {state}", EXIT_USAGE)


def _orders(args: argparse.Namespace, config: Config, *, state_only: bool = False) -> tuple[LoadResult, Path]:
    """The orders of the folder given (`--orders`, else the config's). With `state_only` (the
    legal commands, which can run on a host with only the state), a missing *configured*
    folder is allowed: the state's versions are then the orders. A missing `--orders` never is."""
    given = getattr(args, "orders", None)
    folder = Path(given) if given else config.orders_dir
    if given or not state_only:
        require_dir(folder, "orders_dir", "--orders" if given else None)
    return load_orders(folder, config), folder


def _print_errors(result: LoadResult) -> None:
    for error in result.errors:
        print(error, file=sys.stderr)


def cmd_validate(args: argparse.Namespace, config: Config) -> int:
    result, folder = _orders(args, config)
    good = sorted(result.orders.values(), key=lambda o: o.path)
    for order in good:
        print(f"{display_path(order.path)}: ok ({order.id}, {len(order.targets)} targets)")
    for error in result.errors:
        print(error)
    for warning in result.warnings:  # to check, not to fix: the exit code stays 0
        print(f"warning: {printable(warning)}")
    bad = len(result.invalid_files) + (1 if any(e.field == "(folder)" for e in result.errors) else 0)
    print(f"{len(good)} valid, {bad} invalid in {display_path(folder)}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_INVALID


def _table(rows: list[list[str]], headers: list[str]) -> str:
    """Columns padded to their widest cell; every cell escaped (textsafe): order fields are text
    from outside, and a newline or ESC sequence in one must not forge a row or repaint a screen."""
    rows = [[printable(c) for c in row] for row in rows]
    headers = [printable(h) for h in headers]
    widths = [max(len(x) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in rows]
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
    """A preview: the zones the orders give at an instant, written where they change nothing.
    Only `apply` and the daemon publish: they check, record, audit and reload."""
    if not args.out:
        raise CliError("render is a preview and needs --out DIR (a folder other than the zones folder) or "
                       "--out - (one operator, to stdout); to publish, use `blocker plan` then `blocker apply`",
                       EXIT_USAGE)
    operators = _operators(args, config)
    to_stdout = args.out == "-"
    if to_stdout and len(operators) != 1:
        raise CliError(f"--out - writes one zone: name one operator with --operator (known: "
                       f"{', '.join(sorted(config.operators))})", EXIT_USAGE)
    out = config.zones_dir if to_stdout else Path(args.out)
    if not to_stdout and out.resolve() == config.zones_dir.resolve():
        raise CliError(f"--out {args.out} is the zones folder resolvers read ({config.zones_dir}): render never "
                       "publishes; preview elsewhere, or use `blocker plan` then `blocker apply`", EXIT_USAGE)
    at = parse_at(args.at, config)
    result = _valid_orders(args, config)
    caches = Caches()
    for operator in operators:
        op = config.operators[operator]
        zone = render_body(desired(result.orders.values(), operator, at, caches.policy), op, caches.render)
        path = out / f"{operator}.rpz"
        if to_stdout:  # the serial apply would give it after the published zone (read, never written)
            sys.stdout.buffer.write(zone.text(choose_serial(path, None, result.orders, operator, at), config))
            sys.stdout.flush()
            continue
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


def _plan(args: argparse.Namespace, config: Config, *, force: bool = False) -> tuple[
        Plan, Effective, State | None, LoadResult]:
    """The plan, read-only: nothing is recorded (see `cmd_apply` for when it is)."""
    at = parse_at(args.at, config)
    result = _valid_orders(args, config)
    state_dir = Path(args.state_dir) if args.state_dir else config.state_dir
    state = State.open_existing(state_dir)
    eff = effective_orders(result, config, state, None, at, force=force, record=False)
    zones = state.zones() if state is not None else {}
    plan = compute_plan(eff.orders, at, config, Path(args.out) if args.out else config.zones_dir,
                        operators=_operators(args, config), force=force,
                        last_publish={op: z.published_at for op, z in zones.items()}, state=state)
    return plan, eff, state, result


def _orphaned(eff: Effective) -> list[str]:
    return sorted(i for i, flag in eff.flags.items() if flag == FLAG_ORPHANED)


def _print_plan(plan: Plan, eff: Effective, as_json: bool, notes: Sequence[str] = ()) -> None:
    for warning in plan.warnings:
        print(f"blocker: warning: {warning}", file=sys.stderr)
    if as_json:
        data = plan.to_json()
        data["flags"] = eff.flags
        data["refusals"] = list(notes)
        print(json.dumps(data, indent=2))
        return
    for order_id, flag in sorted(eff.flags.items()):
        print(f"! order {order_id}: {flag} (its last good version stays in force)")
    for note in notes:
        print(f"! {note}")
    for p in plan.operators:
        state = "changes" if p.changed else "rewrite" if p.restore else "no change"
        prev = f"serial {p.previous.serial}" if p.previous else "no zone yet"
        print(f"{p.operator}: {state} ({prev}; {p.zone.names} names, {p.zone.entries} records after)")
        if p.restore:
            print(f"  ! {p.restore}")
        _print_changes(p.changes)
        for c in p.held:
            print(f"  = {c.owner} {c.old_action} [{','.join(c.old_order_ids)}] HELD ({', '.join(c.reasons)})")
        if p.guard:
            print(f"  held: {p.guard}; review `blocker plan --force`, then `blocker apply --force --checksum SUM`")
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


def _refusals(plan: Plan, eff: Effective, skew: str) -> list[str]:
    """Why `apply` (without --force) would refuse this plan; empty when it would go ahead."""
    notes = []
    if skew:
        notes.append(f"{skew}: apply refuses it without --force (exit 4)")
    if plan.held:
        notes.append(f"{len(plan.held)} removal(s) need review: apply refuses them without --force (exit 4)")
    orphaned = _orphaned(eff)
    if orphaned:
        notes.append(f"order(s) {', '.join(orphaned)} in force lost their file: apply refuses without --force "
                     "(exit 4); lift them with `lifted:` in a file, or review `blocker plan --force`")
    return notes


def cmd_plan(args: argparse.Namespace, config: Config) -> int:
    """Exit 3 whenever `apply` with the same arguments would change, hold or refuse something:
    a script that sees 0 knows apply has nothing to do."""
    plan, eff, _, _ = _plan(args, config, force=args.force)
    skew = "" if args.force else _skew(plan.at, wall_clock())
    notes = _refusals(plan, eff, skew)
    _print_plan(plan, eff, args.json, notes)
    return EXIT_CHANGES if plan.has_changes or notes else EXIT_OK


def cmd_apply(args: argparse.Namespace, config: Config) -> int:
    if args.dry_run:
        return cmd_plan(args, config)
    if args.force and not args.checksum:
        raise CliError("apply --force needs --checksum: review what it removes with `blocker plan --force` (same "
                       "--at, --orders, --operator), then `blocker apply --force --checksum SUM`", EXIT_REFUSED)
    now = wall_clock()
    at = parse_at(args.at, config)
    skew = _skew(at, now) if args.at else ""
    if skew and not args.force:
        raise CliError(f"refused: {skew}: apply publishes what resolvers serve from now on, and records it as "
                       "published now; preview another instant with `blocker plan --at`, or review "
                       "`blocker plan --force --at ...` and apply it with --force --checksum", EXIT_REFUSED)
    state_dir = Path(args.state_dir) if args.state_dir else config.state_dir
    audit = AuditLog(state_dir)
    try:
        with publish_lock(state_dir):
            audit.repair()  # a torn end left by a crash or a full disk is moved aside before anything
            for stale in remove_stale_temps(Path(args.out) if args.out else config.zones_dir):
                print(f"removed {display_path(stale)}: a temp file left by a killed publisher", file=sys.stderr)
            # First read only: a refused apply changes nothing, not even the state's orders.
            plan, eff, state, result = _plan(args, config, force=args.force)
            _print_plan(plan, eff, args.json)
            done = state.applied_result(args.checksum) if state is not None and args.checksum else None
            if args.checksum and args.checksum != plan.checksum:
                if done == plan.result and not plan.has_changes and not plan.held and not _orphaned(eff):
                    print(f"nothing to do: plan {args.checksum} is already applied")
                    return EXIT_OK
                raise CliError(f"plan checksum is {plan.checksum}, not the reviewed {args.checksum}: "
                               "the orders or zones changed; review the plan again", EXIT_REFUSED)
            if plan.held:
                raise CliError(f"refused: {len(plan.held)} removal(s) need review: see them with "
                               "`blocker plan --force`, then `blocker apply --force --checksum SUM`", EXIT_REFUSED)
            orphaned = _orphaned(eff)
            if orphaned:
                raise CliError(f"refused: order(s) {', '.join(orphaned)} in force lost their file (kept in force "
                               "from the state); lift them with `lifted:` in a file, or review "
                               "`blocker plan --force` and run `blocker apply --force --checksum SUM` to drop them",
                               EXIT_REFUSED)
            if state is not None:
                state.close()
            # Now record: new order versions (audited), orphans forgotten when forced. The orders
            # in force are the ones just planned with (same files, same state, under the lock).
            state = State(state_dir)
            effective_orders(result, config, state, audit, plan.at, force=args.force, record=True, now=now)
            if not plan.has_changes:
                print("nothing to apply")
                return EXIT_OK
            audit.append("apply", {"checksum": plan.checksum, "force": args.force,
                                   "operators": [p.operator for p in plan.operators if p.writes],
                                   "at": fmt_instant(plan.at) if args.at else None,
                                   "restored": [p.operator for p in plan.operators if p.restore]})
            # Published now, whatever --at says: records carry the wall-clock instant (the
            # `apply` record says which --at the zones were computed for).
            outcomes = publish_plan(plan, config, Path(args.out) if args.out else config.zones_dir, state, audit,
                                    now=now)
            if state is not None and all(o.published for o in outcomes):
                state.record_applied(plan.checksum, plan.result, now)
    except PublishError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    except AuditWriteError as exc:
        raise CliError(f"audit trail cannot be written; no zone was published without its record (the "
                       f"previous zones keep serving): {exc}", EXIT_FAILED) from None
    except sqlite3.OperationalError as exc:  # a full or read-only state folder: nothing recorded
        raise CliError(f"{state_dir}: the state cannot be written ({exc}); no zone was published without its "
                       "record", EXIT_FAILED) from None
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

    p = add("render", "preview: write the RPZ zones of the orders in force to a folder or stdout (never published)")
    p.add_argument("--orders", metavar="DIR")
    p.add_argument("--at", metavar="ISO8601")
    p.add_argument("--out", metavar="DIR", help="required: a folder other than zones_dir, or - (stdout, one operator)")
    p.add_argument("--operator", metavar="OP", action="append", help="only this operator (repeatable)")
    p.set_defaults(func=cmd_render)

    p = add("plan", "show what apply would change, per operator, and why (exit 3: apply would do something)")
    _publish_args(p)
    p.add_argument("--force", action="store_true", help="preview what `apply --force` would do, with its checksum")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)

    p = add("apply", "publish the plan: atomic write, check, reload; refuses unexplained removals")
    _publish_args(p)
    p.add_argument("--checksum", metavar="SUM", help="refuse unless the plan is the one reviewed")
    p.add_argument("--force", action="store_true",
                   help="also apply removals no order's end explains, and an --at far from the clock "
                        "(needs --checksum from `blocker plan --force`)")
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
    p.add_argument("--state-dir", metavar="DIR",
                   help="state folder, for the serials that first held each entry (default: state_dir, if any)")
    p.add_argument("--tcp", action="store_true", help="probe over TCP as well as UDP")
    p.add_argument("--json", action="store_true", help="JSON array, one object per check")
    p.epilog = ("a block or lift counts only when the resolver serves (canary TXT) the serial of a zone "
                "that holds the entry (a lift: that removed it) and every control name resolves on it; "
                "otherwise the check is `unverified`. exit codes: 0 every check holds, 1 not-blocked, "
                "overblocked or unverified, 2 only errors (or a usage error)")
    p.set_defaults(func=cmd_probe)

    cli_legal.register(add)
    cli_agent.register(add)
    return parser


def cmd_probe(args: argparse.Namespace, config: Config) -> int:
    from blocker.orders.names import NameError_, normalize_name
    from blocker.probe.expectations import Published, expected_checks, published_from_state
    from blocker.probe.model import exit_code
    from blocker.probe.passes import run_pass, serial_notes, with_resolvers
    from blocker.zone.read import read_entries

    if args.operator not in config.operators:
        raise CliError(f"unknown operator {args.operator!r} (known: {', '.join(sorted(config.operators))})",
                       EXIT_USAGE)
    addresses = [_resolver_address(text) for text in args.resolver or ()]
    op = with_resolvers(config.operators[args.operator], addresses, args.tcp)
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
    lanes = len(checks) * sum(len(r.transports) for r in op.resolvers)
    bar = None
    if sys.stderr.isatty() and not args.json and len(checks) * len(op.resolvers) > 200:
        from tqdm import tqdm

        bar = tqdm(total=lanes, unit="check", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    state_dir = Path(args.state_dir) if args.state_dir else config.state_dir
    if args.state_dir and not state_dir.is_dir():
        raise CliError(f"--state-dir {state_dir}: no such directory", EXIT_USAGE)
    zone_path = (Path(args.out) if args.out else config.zones_dir) / f"{op.id}.rpz"
    published = None

    def proof() -> Published | None:
        nonlocal published
        published = read_meta(zone_path)
        try:
            entries = read_entries(zone_path) if published is not None else None
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # a damaged zone proves nothing
            print(f"{display_path(zone_path)}: unreadable zone ({printable(str(exc), limit=200)})", file=sys.stderr)
            entries = None
        if published is None or entries is None:
            print(f"{display_path(zone_path)}: no published zone: no block or lift can be proven", file=sys.stderr)
            return None
        state = cli_legal.open_state(state_dir)
        try:
            return published_from_state(published.serial, entries, op.id, state)
        finally:
            if state is not None:
                state.close()

    outcome = run_pass(config, op, checks, result.orders.values(), proof, progress=progress,
                       done=bar.close if bar is not None else None)
    if args.json:
        print(json.dumps([r.to_json() for r in outcome.results], indent=2))
    else:
        _print_probe(outcome.results, checks)
    if published is not None:
        for note in serial_notes(outcome, op.id, published.serial):
            print(note, file=sys.stderr)
    return exit_code(outcome.results)


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


def _print_probe(results: Sequence[CheckResult], checks: Sequence[Check]) -> None:
    from blocker.vocab import Verdict

    rows: dict[tuple[str, str], dict[str, int]] = {}
    for r in results:
        counts = rows.setdefault((r.resolver, r.transport), {})
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    # The table's columns, in this order (what holds first): a contract scripts may read.
    verdicts = [v.value for v in (Verdict.BLOCKED, Verdict.RESOLVES, Verdict.NOT_BLOCKED, Verdict.OVERBLOCKED,
                                  Verdict.ERROR, Verdict.UNVERIFIED)]
    table = [[res, tr, *[str(c.get(v, 0)) for v in verdicts]] for (res, tr), c in sorted(rows.items())]
    print(_table(table, ["RESOLVER", "TRANSPORT", *[v.upper() for v in verdicts]]))
    bad = [r for r in results if r.verdict not in (Verdict.BLOCKED.value, Verdict.RESOLVES.value)]
    for r in bad[:50]:
        ids = ",".join(r.order_ids) or "-"
        print(f"  {r.verdict}: {r.name} on {r.resolver}/{r.transport} (expected {r.expected}; orders {ids}; "
              f"rcode {r.rcode or 'none'}) {r.reason}")
    if len(bad) > 50:
        print(f"  ... and {len(bad) - 50} more (use --json)")
    print(f"{len(checks)} checks x resolvers: {len(results)} results, {len(bad)} not holding")


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from blocker.run import logs
    from blocker.run.daemon import Daemon, DaemonError

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


def _refuse_undecodable(args: argparse.Namespace) -> None:
    """An argument that is not UTF-8 (a path typed in a Latin-1 terminal) arrives with lone
    surrogates, which the state, the audit trail and the reports cannot store: refused here,
    shown escaped, so that no such text gets past the command line."""
    for key, value in sorted(vars(args).items()):
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    flag = "--" + key.replace("_", "-")
                    raise CliError(f"{flag} {display_path(item)}: not valid UTF-8", EXIT_USAGE) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config: Config | None = None
    try:
        _refuse_undecodable(args)
        config = load_config(Path(args.config) if args.config else None)
        return int(args.func(args, config))
    except CliError as exc:
        print(f"blocker: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"blocker: config: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except AuditWriteError as exc:  # any command that records: one line, exit 5, never 70
        print(f"blocker: audit trail cannot be written: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except UnsafeOwnerError as exc:  # render's second line of defence: an order, not the tool, is wrong
        print(f"blocker: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # never a traceback to a user: one line, and the log for developers
        state_dir = Path(args.state_dir) if getattr(args, "state_dir", None) else (
            config.state_dir if config is not None else None)
        written = write_crash_log(state_dir, exc, f"blocker {getattr(args, 'command', '?')}")
        where = f"full traceback in {display_path(written)}" if written else "no folder could take the traceback"
        print(f"blocker: internal error: {printable(f'{type(exc).__name__}: {exc}', limit=500)} ({where})",
              file=sys.stderr)
        return 70
