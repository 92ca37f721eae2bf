"""The `blocker` command line: the parser, `main`, and the publish verbs (render, plan, apply).

One module per group of verbs: blocker.cli.orders (validate, status), this one (render, plan,
apply), blocker.cli.probe, blocker.cli.run, blocker.cli.audit,
blocker.cli.legal (report, expiring, evidence). Exit codes a script can rely on, and the one
error hook every command ends through, are in blocker.cli.errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

from blocker import __version__
from blocker.cli import agent as cli_agent
from blocker.cli import audit as cli_audit
from blocker.cli import fleet as cli_fleet
from blocker.cli import legal as cli_legal
from blocker.cli import orders as cli_orders
from blocker.cli import probe as cli_probe
from blocker.cli import run as cli_run
from blocker.cli import why as cli_why
from blocker.cli.common import (
    chosen_operators,
    parse_at,
    refuse_undecodable,
    skew,
    valid_orders,
    wall_clock,
)
from blocker.cli.errors import (
    EXIT_CHANGES,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    CliError,
    post_arg_parse_hook,
    with_epilog,
)
from blocker.config.load import load_config
from blocker.config.model import Config
from blocker.orders.legaltime import fmt_instant
from blocker.orders.model import LoadResult
from blocker.policy import desired
from blocker.publish.plan import Caches, Change, ChangeTail, Plan, change_owners, change_tails
from blocker.publish.reconcile import (
    FLAG_ORPHANED,
    Effective,
    choose_serial,
    plan_for,
    publish_lock,
    reconcile,
    record_served,
)
from blocker.publish.writer import PublishError, write_zone
from blocker.record.audit import AuditLog, AuditWriteError
from blocker.record.state import State
from blocker.textsafe import display_path
from blocker.zone.read import read_meta
from blocker.zone.render import render_body


def cmd_render(args: argparse.Namespace, config: Config) -> int:
    """A preview: the zones the orders give at an instant, written where they change nothing.
    Only `apply` and the daemon publish: they check, record, audit and reload."""
    if not args.out:
        raise CliError("render is a preview and needs --out DIR (a folder other than the zones folder) or "
                       "--out - (one operator, to stdout); to publish, use `blocker plan` then `blocker apply`",
                       EXIT_USAGE)
    operators = chosen_operators(args, config)
    to_stdout = args.out == "-"
    if to_stdout and len(operators) != 1:
        raise CliError(f"--out - writes one zone: name one operator with --operator (known: "
                       f"{', '.join(sorted(config.operators))})", EXIT_USAGE)
    out = config.zones_dir if to_stdout else Path(args.out)
    if not to_stdout and out.resolve() == config.zones_dir.resolve():
        raise CliError(f"--out {args.out} is the zones folder resolvers read ({config.zones_dir}): render never "
                       "publishes; preview elsewhere, or use `blocker plan` then `blocker apply`", EXIT_USAGE)
    at = parse_at(args.at, config)
    result = valid_orders(args, config)
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
            write_zone(path, zone.text(serial, config), op.origin, config.zone_check,
                       zone.checksum)
        except PublishError as exc:
            raise CliError(str(exc), EXIT_FAILED) from None
        print(f"{path}: written, serial {serial}, {zone.names} names, {zone.entries} records")
    return EXIT_OK


def _plan(args: argparse.Namespace, config: Config, *, force: bool = False) -> tuple[
        Plan, Effective, State | None, LoadResult]:
    """The plan, read-only: nothing is recorded (see `cmd_apply` for when it is)."""
    at = parse_at(args.at, config)
    result = valid_orders(args, config)
    state_dir = Path(args.state_dir) if args.state_dir else config.state_dir
    state = State.open_existing(state_dir)
    plan, eff = plan_for(result, config, state, Path(args.out) if args.out else config.zones_dir, at,
                         operators=chosen_operators(args, config), force=force)
    return plan, eff, state, result


def _orphaned(eff: Effective) -> list[str]:
    return sorted(i for i, flag in eff.flags.items() if flag == FLAG_ORPHANED)


def _plan_json(plan: Plan, eff: Effective, notes: Sequence[str] = ()) -> dict[str, Any]:
    data = plan.to_json()
    data["flags"] = eff.flags
    data["refusals"] = list(notes)
    return data


def _print_plan(plan: Plan, eff: Effective, as_json: bool, notes: Sequence[str] = ()) -> None:
    for warning in plan.warnings:
        print(f"blocker: warning: {warning}", file=sys.stderr)
    if as_json:
        print(json.dumps(_plan_json(plan, eff, notes), indent=2))
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


def _print_changes(changes: Sequence[Change], chunk: int = 65536) -> None:
    """One line per change, `  + owner action [ids] (reasons)`, written a chunk at a time: a
    first apply of 1M names on four operators is 6M lines, and a print() per line took longer
    than the whole publish. What follows the owner is made once per distinct change value."""
    made: dict[ChangeTail, tuple[str, str]] = {}
    out = sys.stdout
    rows = zip(change_owners(changes), change_tails(changes), strict=True)
    while part := list(islice(rows, chunk)):
        lines = []
        for owner, rest in part:
            sign_tail = made.get(rest)
            if sign_tail is None:
                kind, action, ids, old_action, old_ids, reasons = rest
                sign_tail = made[rest] = (f"  {_SIGNS[kind]} ", f" {action or old_action} [{','.join(ids or old_ids)}] "
                                                                 f"({', '.join(reasons)})\n")
            lines.append(sign_tail[0] + owner + sign_tail[1])
        out.write("".join(lines))
    out.flush()


def _refusals(plan: Plan, eff: Effective, gap: str) -> list[str]:
    """Why `apply` (without --force) would refuse this plan; empty when it would go ahead."""
    notes = []
    if gap:
        notes.append(f"{gap}: apply refuses it without --force (exit 4)")
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
    gap = "" if args.force else skew(plan.at, wall_clock())
    notes = _refusals(plan, eff, gap)
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
    gap = skew(at, now) if args.at else ""
    if gap and not args.force:
        raise CliError(f"refused: {gap}: apply publishes what resolvers serve from now on, and records it as "
                       "published now; preview another instant with `blocker plan --at`, or review "
                       "`blocker plan --force --at ...` and apply it with --force --checksum", EXIT_REFUSED)
    state_dir = Path(args.state_dir) if args.state_dir else config.state_dir
    zones_dir = Path(args.out) if args.out else config.zones_dir
    audit = AuditLog(state_dir)

    def stale(path: Path) -> None:
        print(f"removed {display_path(path)}: a temp file left by a killed publisher", file=sys.stderr)

    # With --json, stdout is ONE document: the plan's fields, then what was published ("outcomes"),
    # printed whatever the ending (a refusal too); the human lines go to stderr.
    document: dict[str, Any] = {}
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print

    def review(plan: Plan, eff: Effective, state: State | None) -> bool:
        # First read only: a refused apply changes nothing, not even the state's orders.
        if args.json:
            for warning in plan.warnings:
                print(f"blocker: warning: {warning}", file=sys.stderr)
            document.update(_plan_json(plan, eff), outcomes=[])
        else:
            _print_plan(plan, eff, False)
        done = state.applied_result(args.checksum) if state is not None and args.checksum else None
        if args.checksum and args.checksum != plan.checksum:
            if done == plan.result and not plan.has_changes and not plan.held and not _orphaned(eff):
                say(f"nothing to do: plan {args.checksum} is already applied")
                return False
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
        return True

    def record_apply(plan: Plan, audit: AuditLog) -> None:
        # The `apply` record says which --at the zones were computed for.
        audit.append("apply", {"checksum": plan.checksum, "force": args.force,
                               "operators": [p.operator for p in plan.operators if p.writes],
                               "at": fmt_instant(plan.at) if args.at else None,
                               "restored": [p.operator for p in plan.operators if p.restore]})

    try:
        return _apply(args, config, review, stale, record_apply, audit, state_dir, zones_dir, at, now, say, document)
    finally:
        if args.json and document:
            print(json.dumps(document, indent=2))


def _apply(args: argparse.Namespace, config: Config, review: Callable[[Plan, Effective, State | None], bool],
           stale: Callable[[Path], None], record_apply: Callable[[Plan, AuditLog], None], audit: AuditLog,
           state_dir: Path, zones_dir: Path, at: datetime, now: datetime, say: Callable[[str], None],
           document: dict[str, Any]) -> int:
    """Reconcile, then wait for the resolvers outside the publish lock, then say what happened."""
    try:
        done = reconcile(lambda: valid_orders(args, config), config, state_dir, zones_dir, at, now=now,
                         operators=chosen_operators(args, config), force=args.force, audit=audit, review=review,
                         on_stale=stale, before_publish=record_apply, lean=True)
        if done.stopped:
            return EXIT_OK
        if not done.published:
            say("nothing to apply")
            return EXIT_OK
        # The resolvers are asked outside the publish lock: a slow one holds back no other publisher.
        outcomes = []
        for o in done.outcomes:
            if o.awaiting_serial and o.serial is not None:
                # Imported here: dnspython and asyncio are a third of every other command's start.
                from blocker.probe.canary import wait_for_serial

                behind = wait_for_serial(config, o.operator, o.serial, config.publish_verify_timeout)
                with publish_lock(state_dir):
                    o = record_served(o, behind, config, done.state, audit)
            outcomes.append(o)
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
        document.setdefault("outcomes", []).append({
            "operator": o.operator, "published": o.published, "serial": o.serial, "error": o.error or None,
            "reload_ok": None if o.reload is None else o.reload.ok,
            "reload_message": None if o.reload is None else o.reload.message})
        if not o.published:
            print(f"{o.operator}: NOT published: {o.error}", file=sys.stderr)
            failed = True
        elif o.reload is not None and not o.reload.ok:
            print(f"{o.operator}: published serial {o.serial}, reload FAILED (not yet in effect): "
                  f"{o.reload.message}", file=sys.stderr)
            failed = True
        else:
            say(f"{o.operator}: published serial {o.serial}" + (f", {o.reload.message}" if o.reload else ""))
    return EXIT_FAILED if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    config_help = "daemon config (default: $BLOCKER_CONFIG, else ./configs/blocker.yaml, else built-in defaults)"
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a --config after the sub-command must not erase one given before it.
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=config_help)
    parser = argparse.ArgumentParser(
        prog="blocker",
        description="Apply court-ordered DNS blocks as RPZ zones, prove they hold, lift them on time. "
                    "`blocker COMMAND --help` gives each command's flags, exit codes and an example.",
    )
    with_epilog(parser, {EXIT_OK: "ok", 1: "invalid input or a failed check", EXIT_USAGE: "usage error",
                         EXIT_CHANGES: "plan has changes", EXIT_REFUSED: "refused by a safety guard",
                         EXIT_FAILED: "publish or reload failed"},
                "blocker --config /etc/blocker/blocker.yaml status")
    parser.add_argument("--config", metavar="FILE", default=None, help=config_help)
    parser.add_argument("--version", action="version", version=f"blocker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text)

    cli_orders.register(add)

    p = add("render", "preview: write the RPZ zones of the orders in force to a folder or stdout (never published)")
    p.add_argument("--orders", metavar="DIR", help=ORDERS_HELP)
    p.add_argument("--at", metavar="ISO8601", help=AT_HELP)
    p.add_argument("--out", metavar="DIR", help="required: a folder other than zones_dir, or - (stdout, one operator)")
    p.add_argument("--operator", metavar="OP", action="append", help="only this operator (repeatable)")
    with_epilog(p, {EXIT_OK: "the zones were written (or are unchanged)",
                    1: "an order file is invalid (nothing written)",
                    EXIT_USAGE: "usage error (no --out, --out is the zones folder, an unknown operator)",
                    EXIT_FAILED: "a zone failed its check (nothing replaced)"},
                "blocker render --out /tmp/preview --at 2026-12-01T09:00")
    p.set_defaults(func=cmd_render)

    p = add("plan", "show what apply would change, per operator, and why (exit 3: apply would do something)")
    _publish_args(p)
    p.add_argument("--force", action="store_true", help="preview what `apply --force` would do, with its checksum")
    p.add_argument("--json", action="store_true", help="the plan as one JSON object (with flags and refusals)")
    with_epilog(p, {EXIT_OK: "apply would change nothing", 1: "an order file is invalid",
                    EXIT_USAGE: "usage error (a bad --at, a missing folder, an unknown operator)",
                    EXIT_CHANGES: "apply would change, hold or refuse something"},
                "blocker plan --operator orange")
    p.set_defaults(func=cmd_plan)

    p = add("apply", "publish the plan: atomic write, check, reload; refuses unexplained removals")
    _publish_args(p)
    p.add_argument("--checksum", metavar="SUM", help="refuse unless the plan is the one reviewed")
    p.add_argument("--force", action="store_true",
                   help="also apply removals no order's end explains, and an --at far from the clock "
                        "(needs --checksum from `blocker plan --force`)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing (same as plan)")
    p.add_argument("--json", action="store_true",
                   help="the plan reviewed as one JSON object (the publish lines follow it)")
    with_epilog(p, {EXIT_OK: "published, or nothing to apply", 1: "an order file is invalid (nothing written)",
                    EXIT_USAGE: "usage error (a bad --at, a missing folder, an unknown operator)",
                    EXIT_CHANGES: "with --dry-run: the plan has changes",
                    EXIT_REFUSED: "refused by a guard (removals to review, --at far from the clock, a checksum "
                                  "that is not the plan's)",
                    EXIT_FAILED: "publish or reload failed, or the audit trail or state cannot be written"},
                "blocker apply --checksum SUM   (SUM from `blocker plan`)")
    p.set_defaults(func=cmd_apply)

    cli_run.register(add)

    cli_probe.register(add)

    cli_audit.register(add)
    cli_legal.register(add)
    cli_fleet.register(sub, [common])
    cli_agent.register(add)
    cli_why.register(add)
    return parser

ORDERS_HELP = "orders folder (default: config orders_dir)"
AT_HELP = "instant the zones are computed for (default: now; no offset = config timezone)"


def _publish_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--orders", metavar="DIR", help=ORDERS_HELP)
    p.add_argument("--at", metavar="ISO8601", help=AT_HELP)
    p.add_argument("--out", metavar="DIR", help="zones folder (default: config zones_dir)")
    p.add_argument("--state-dir", metavar="DIR", help="state folder (default: config state_dir)")
    p.add_argument("--operator", metavar="OP", action="append", help="only this operator (repeatable)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config: Config | None = None
    try:
        refuse_undecodable(args)
        # --config, else $BLOCKER_CONFIG (a production host's legal team need not type it), else default.
        chosen = args.config or os.environ.get("BLOCKER_CONFIG") or None
        if chosen and not args.config:
            args.config = chosen  # the daemon re-reads the same file on reload
        config = load_config(Path(chosen) if chosen else None)
        return int(args.func(args, config))
    except (Exception, KeyboardInterrupt) as exc:  # never a traceback to a user: see blocker.cli.errors
        state_dir = Path(args.state_dir) if getattr(args, "state_dir", None) else (
            config.state_dir if config is not None else None)
        return post_arg_parse_hook(exc, getattr(args, "command", "?"), state_dir)
