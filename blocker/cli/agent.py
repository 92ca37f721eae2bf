"""`blocker probe-agent`: the probe schedule alone (blocker.run.agent), with its own /metrics."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from blocker.cli.errors import with_epilog
from blocker.config.model import Config


def cmd_probe_agent(args: argparse.Namespace, config: Config) -> int:
    from blocker.cli.errors import EXIT_INVALID, CliError
    from blocker.run import logs
    from blocker.run.agent import ProbeAgent
    from blocker.run.lifecycle import DaemonError

    overrides = {
        "orders_dir": Path(args.orders) if args.orders else None,
        "state_dir": Path(args.state_dir) if args.state_dir else None,
        "zones_dir": Path(args.zones) if args.zones else None,
        "http_listen": args.listen,
    }
    config = config.with_paths(**overrides)
    logs.setup(args.log_format or config.log_format)
    agent = ProbeAgent(config, Path(args.config) if getattr(args, "config", None) else None, overrides)
    try:
        return agent.run()
    except DaemonError as exc:
        raise CliError(str(exc), EXIT_INVALID) from None


def register(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("probe-agent", "probes only, for a vantage point inside an operator's network: the probe "
                           "schedule, its own /metrics and /healthz; never publishes (foreground)")
    p.add_argument("--orders", metavar="DIR", help="overrides config orders_dir (a copy of the daemon's)")
    p.add_argument("--zones", metavar="DIR", help="overrides config zones_dir (a copy, read for the proof)")
    p.add_argument("--state-dir", metavar="DIR", help="overrides config state_dir (the agent's own)")
    p.add_argument("--listen", metavar="HOST:PORT", help="overrides config http.listen (/metrics, /healthz)")
    p.add_argument("--log-format", choices=("plain", "json"),
                   help="overrides config log_format (every log time in UTC, with its +00:00 offset)")
    with_epilog(p, {0: "stopped by SIGTERM or SIGINT after a clean shutdown",
                    1: "cannot start (config, folders, the listen address)", 2: "usage error"},
                "blocker probe-agent --zones /srv/blocker-copy/zones --listen 127.0.0.1:9181")
    p.set_defaults(func=cmd_probe_agent)
