"""`run`: the daemon in the foreground, with the command line's overrides of the config."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from blocker.cli.errors import EXIT_INVALID, CliError, with_epilog
from blocker.config.model import Config


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


def register(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("run", "the daemon: publish on every change and at every start/lift instant (foreground)")
    p.add_argument("--orders", metavar="DIR", help="overrides config orders_dir")
    p.add_argument("--state-dir", metavar="DIR", help="overrides config state_dir")
    p.add_argument("--out", metavar="DIR", help="overrides config zones_dir")
    p.add_argument("--listen", metavar="HOST:PORT", help="overrides config http.listen (/metrics, /healthz)")
    p.add_argument("--log-format", choices=("plain", "json"),
                   help="overrides config log_format (every log time in UTC, with its +00:00 offset)")
    with_epilog(p, {0: "stopped by SIGTERM or SIGINT after a clean shutdown",
                    1: "cannot start (config, folders, the listen address, another daemon holds the lock)",
                    2: "usage error"},
                "blocker run --config /etc/blocker/blocker.yaml --log-format json")
    p.set_defaults(func=cmd_run)
