"""What many verbs read from their arguments: the instant, the orders folder, the operators, the
state folder. Usage mistakes are refused here, naming the flag (exit 2)."""

from __future__ import annotations

import argparse
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from blocker.cli.errors import EXIT_INVALID, EXIT_USAGE, CliError
from blocker.cli.output import print_errors
from blocker.config.model import Config
from blocker.orders.legaltime import LegalTimeError, fmt_instant, parse_instant, zone
from blocker.orders.load import load_orders
from blocker.orders.model import LoadResult
from blocker.record.state import State
from blocker.textsafe import display_path

AT_SKEW = timedelta(minutes=5)  # how far `apply --at` may be from the clock without --force


def wall_clock() -> datetime:
    """The instant records carry: when a change was made, whatever `--at` it was made for."""
    return datetime.now(UTC)


def parse_at(text: str | None, config: Config, flag: str = "--at") -> datetime:
    """`--at` (or `flag`): ISO 8601; without an offset it is read in the configured time zone."""
    if text is None:
        return wall_clock()
    try:
        instant, _ = parse_instant(text, zone(config.timezone))
    except LegalTimeError as exc:
        raise CliError(f"{flag}: {exc}", EXIT_USAGE) from None
    return instant.astimezone(UTC)


UTC_HELP = "show the instants of the text output in UTC (+00:00), as the daemon's log does (JSON keeps its offsets)"


def shown_zone(args: argparse.Namespace, config: Config) -> ZoneInfo:
    """The zone instants are shown in: the config's `timezone`, or UTC with `--utc` (the zone of
    the daemon's log lines, to match them by eye)."""
    return ZoneInfo("UTC") if getattr(args, "utc", False) else zone(config.timezone)


def shown_zone_name(args: argparse.Namespace, config: Config) -> str:
    return "UTC" if getattr(args, "utc", False) else config.timezone


def skew(at: datetime, now: datetime) -> str:
    """`--at` away from the clock, in words ("" within AT_SKEW): a mistyped year lifts an order
    in force, or blocks again one that ended, and back-dates what the records say."""
    gap = at - now
    if abs(gap) <= AT_SKEW:
        return ""
    seconds = abs(gap.total_seconds())
    size = f"{seconds / 86400:.1f} days" if seconds >= 86400 else f"{seconds / 60:.0f} minutes"
    return f"--at {fmt_instant(at)} is {size} {'ahead of' if gap > timedelta(0) else 'behind'} the clock"


FOLDER_WORDS = {"orders_dir": "orders folder", "state_dir": "state folder", "zones_dir": "zones folder"}


def shown_path(path: Path) -> str:
    """A path as an error shows it: absolute. The config's paths are relative to the folder the
    command runs in, not to the config file; `orders` alone does not say which folder was read."""
    return display_path(path.absolute())


def require_dir(path: Path, what: str, flag: str | None) -> None:
    """A folder a command reads must exist: a mistyped path is a usage error (exit 2) naming
    it, absolute, not an empty answer ("unknown" everywhere). An existing folder with nothing in
    it yet is not a typo: it is a fresh install, and commands say what is missing in it."""
    if not path.is_dir():
        origin = flag if flag else f"the config's {what}"
        state = "is not a folder" if path.exists() else "does not exist"
        raise CliError(f"{FOLDER_WORDS.get(what, what)} {shown_path(path)} ({origin}) {state}", EXIT_USAGE)


def load_folder(args: argparse.Namespace, config: Config, *, state_only: bool = False) -> tuple[LoadResult, Path]:
    """The orders of the folder given (`--orders`, else the config's). With `state_only` (the
    legal commands, which can run on a host with only the state), a missing *configured*
    folder is allowed: the state's versions are then the orders. A missing `--orders` never is."""
    given = getattr(args, "orders", None)
    folder = Path(given) if given else config.orders_dir
    if given or not state_only:
        require_dir(folder, "orders_dir", "--orders" if given else None)
    return load_orders(folder, config.order_rules), folder


def valid_orders(args: argparse.Namespace, config: Config) -> LoadResult:
    """Fail closed: any invalid order file stops the command before anything is written."""
    result, folder = load_folder(args, config)
    if not result.ok:
        print_errors(result)
        raise CliError(f"{len(result.errors)} problem(s) in {folder}: nothing written", EXIT_INVALID)
    return result


def chosen_operators(args: argparse.Namespace, config: Config) -> list[str]:
    """`--operator` (repeatable), else every configured operator; an unknown one is a usage error."""
    chosen = args.operator or sorted(config.operators)
    unknown = [op for op in chosen if op not in config.operators]
    if unknown:
        raise CliError(f"unknown operator {unknown[0]!r} (known: {', '.join(sorted(config.operators))})", EXIT_USAGE)
    return sorted(set(chosen))


def state_dir_of(args: argparse.Namespace, config: Config) -> Path:
    """`--state-dir`, else the config's."""
    return Path(args.state_dir) if getattr(args, "state_dir", None) else config.state_dir


def open_state(state_dir: Path) -> State | None:
    """The state database, read-only, or None when nothing was ever applied there.

    Read-only (`mode=ro`) rather than `State.open_existing`, which opens for writing and runs the
    schema: a report run by the legal team must not need, or take, write access to the daemon's
    database.
    """
    if not (state_dir / "state.sqlite3").is_file():
        return None
    try:
        return State(state_dir, readonly=True)
    except sqlite3.Error as exc:
        raise CliError(f"{state_dir / 'state.sqlite3'}: cannot open read-only: {exc}") from None


def require_state_dir(state_dir: Path, args: argparse.Namespace | None = None) -> None:
    """A state folder that does not exist is a typo (exit 2, naming it); one that exists but
    holds no state yet is a fresh install: the commands run, and say nothing was applied."""
    if not state_dir.is_dir():
        flag = "--state-dir" if args is not None and getattr(args, "state_dir", None) else "the config's state_dir"
        raise CliError(f"{shown_path(state_dir)}: no such state directory ({flag})", EXIT_USAGE)


def refuse_undecodable(args: argparse.Namespace) -> None:
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
