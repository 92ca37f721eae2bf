"""`why NAME`: which orders block a name, on which operator, and whether the zone and probes agree.

The question every support desk gets. What covers NAME is asked of the policy package
(`desired`, `lookup`, `covers`): the computation the zones are rendered from, not a copy of it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from blocker.cli.common import UTC_HELP, load_folder, open_state, parse_at, shown_zone, state_dir_of
from blocker.cli.errors import EXIT_INVALID, EXIT_OK, EXIT_USAGE, CliError, with_epilog
from blocker.cli.output import plural, print_errors, print_json
from blocker.config.model import Config
from blocker.orders.legaltime import fmt_instant, zone
from blocker.orders.model import Order
from blocker.orders.names import InvalidName, normalize_name
from blocker.policy import covers, desired, lookup, owners
from blocker.textsafe import printable
from blocker.zone.read import read_entries


def unicode_form(name: str) -> str:
    """The name as a court wrote it (U-labels), beside the A-label the zone holds."""
    try:
        import idna

        return str(idna.decode(name))
    except Exception:
        return name


# (order, operator) -> last verified, last failure, failures (State.probe_last)
Probes = dict[tuple[str, str], tuple[datetime | None, datetime | None, int]]
Shown = Callable[[datetime | None, str | None], str | None]  # an instant as the text shows it


def cmd_why(args: argparse.Namespace, config: Config) -> int:
    name = _name(args)
    at = parse_at(args.at, config)
    tz = zone(config.timezone)
    operators = _operators(args, config)
    orders = _every_order(args, config)
    probes = _last_probes(args, config)
    covering = _covering(orders, name, at)
    per_operator = [_operator_answer(config, orders, op, name, at, probes, tz) for op in operators]
    blocked = any(p["blocked"] for p in per_operator)
    if args.json:
        print_json({"name": name, "unicode": unicode_form(name), "at": fmt_instant(at, tz), "blocked": blocked,
                    "orders": covering, "operators": per_operator}, ensure_ascii=False)
        return EXIT_OK if blocked else EXIT_INVALID
    show_tz = shown_zone(args, config)  # text only: the JSON keeps each instant's own offset

    def text(instant: datetime | None, json_form: str | None) -> str | None:
        return json_form if not args.utc or instant is None else fmt_instant(instant, show_tz)

    _print_verdict(name, at, show_tz, blocked, per_operator)
    _print_orders(covering, {o.id: o for o in orders}, text)
    _print_operators(per_operator, probes, text)
    print(f"{plural(len(covering), 'order')} {'covers' if len(covering) == 1 else 'cover'} it", file=sys.stderr)
    return EXIT_OK if blocked else EXIT_INVALID


def _name(args: argparse.Namespace) -> str:
    try:
        return normalize_name(args.name)
    except InvalidName as exc:
        raise CliError(f"NAME: {exc}", EXIT_USAGE) from None


def _operators(args: argparse.Namespace, config: Config) -> list[str]:
    operators = sorted(set(args.operator)) if args.operator else sorted(config.operators)
    for op in operators:
        if op not in config.operators:
            raise CliError(f"unknown operator {op!r} (known: {', '.join(sorted(config.operators))})", EXIT_USAGE)
    return operators


def _every_order(args: argparse.Namespace, config: Config) -> list[Order]:
    result, folder = load_folder(args, config)
    if not result.ok:  # an answer without every order could say "not blocked" wrongly: no answer
        print_errors(result)
        raise CliError(f"{len(result.errors)} problem(s) in {folder}: no answer without every order", EXIT_USAGE)
    return sorted(result.orders.values(), key=lambda o: o.id)


def _last_probes(args: argparse.Namespace, config: Config) -> Probes:
    state = open_state(state_dir_of(args, config))
    try:
        return state.probe_last() if state is not None else {}
    finally:
        if state is not None:
            state.close()


def _covering(orders: list[Order], name: str, at: datetime) -> list[dict[str, Any]]:
    """Every order with an owner that covers the name (itself, or a parent with subdomains)."""
    covering = []
    for o in orders:
        hits = [owner for owner in owners(o) if covers(owner, name)]
        if hits:
            covering.append({
                "id": o.id, "court": o.court, "case_number": o.case_number, "action": o.action,
                "start": fmt_instant(o.start, o.tz), "end": fmt_instant(o.end, o.tz), "rule": o.rule,
                "operators": list(o.operators), "status": o.status_at(at), "owners": hits,
            })
    return covering


def _operator_answer(config: Config, orders: list[Order], op: str, name: str, at: datetime, probes: Probes,
                     tz: ZoneInfo) -> dict[str, Any]:
    """What the policy wants for the name on one operator, what its published zone holds, and
    what the probes last found."""
    want = lookup(desired(orders, op, at).entries, name)
    path = config.zones_dir / f"{op}.rpz"
    published = lookup(read_entries(path), name)
    ids = list(want[1].order_ids) if want else []
    last = {oid: probes[(oid, op)] for oid in ids if (oid, op) in probes}
    return {
        "operator": op, "blocked": want is not None,
        "owner": want[0] if want else None, "action": want[1].action if want else None, "orders": ids,
        "zone_published": path.is_file(),
        "published": None if published is None else {"owner": published[0], "action": published[1].action},
        "zone_agrees": (published is None) == (want is None) and (
            want is None or published is None or published[1].action == want[1].action),
        "last_probe": {oid: {"last_ok": None if ok is None else fmt_instant(ok, tz),
                             "last_failure": None if bad is None else fmt_instant(bad, tz), "failures": n}
                       for oid, (ok, bad, n) in last.items()},
    }


def _print_verdict(name: str, at: datetime, show_tz: ZoneInfo, blocked: bool,
                   per_operator: list[dict[str, Any]]) -> None:
    shown = unicode_form(name)
    print(f"{printable(shown)}" + (f" ({name})" if shown != name else "") + f" at {fmt_instant(at, show_tz)}: "
          + ("BLOCKED on " + ", ".join(p["operator"] for p in per_operator if p["blocked"]) if blocked
             else "not blocked"))


def _print_orders(covering: list[dict[str, Any]], by_id: dict[str, Order], text: Shown) -> None:
    for c in covering:
        print(f"  order {printable(c['id'])} ({c['status']}): {printable(c['court'])}; {printable(c['case_number'])}")
        o = by_id[str(c["id"])]
        print(f"    action {c['action']}, {text(o.start, str(c['start']))} to {text(o.end, str(c['end']))}; "
              f"{printable(c['rule'])}")
        print(f"    operators {', '.join(c['operators'])}; covers it as {', '.join(c['owners'])}")
    if not covering:
        print("  no order names it, nor a parent with subdomains")


def _print_operators(per_operator: list[dict[str, Any]], probes: Probes, text: Shown) -> None:
    for p in per_operator:
        entry = p["published"]
        has = f"has {entry['owner']} {entry['action']}" if entry else "no entry"
        agree = ("no zone published yet" if not p["zone_published"] else "the published zone agrees"
                 if p["zone_agrees"] else f"the published zone DISAGREES ({has})")
        what = f"{p['action']} via {p['owner']} ({', '.join(p['orders'])})" if p["blocked"] else "not blocked"
        probe = "; ".join(
            f"{oid}: last verified {text(probes[oid, p['operator']][0], v['last_ok']) or 'never'}"
            + (f", {plural(v['failures'], 'failure')} (last {text(probes[oid, p['operator']][1], v['last_failure'])})"
               if v["failures"] else "")
            for oid, v in p["last_probe"].items())
        print(f"  {p['operator']}: {what}; {agree}" + (f"; probes: {probe}" if probe else ""))


def register(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("why", "why is NAME blocked (or not): the orders covering it, per operator, zone and probes")
    p.add_argument("name", metavar="NAME", help="domain name, in Unicode or as its A-label (xn--)")
    p.add_argument("--operator", metavar="OP", action="append", help="only this operator (repeatable)")
    p.add_argument("--at", metavar="ISO8601", help="status at this instant (default: now)")
    p.add_argument("--orders", metavar="DIR", help="orders folder (default: config orders_dir)")
    p.add_argument("--state-dir", metavar="DIR", help="state folder, for the last probes (default: state_dir)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--utc", action="store_true", help=UTC_HELP + "; default: the config's timezone, and each "
                   "order's window in its own")
    with_epilog(p, {0: "NAME is blocked for some operator at --at", 1: "it is not",
                    2: "bad input (a bad name, flag, or an invalid order file)"},
                "blocker why bücher-propagande.example.gg --operator orange")
    p.set_defaults(func=cmd_why)
