"""`blocker fleet ...`: the hidden primary's config, the secondaries' snippets, their serials."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from blocker.cli.errors import with_epilog
from blocker.config.distribution import SECONDARY_KINDS
from blocker.config.model import Config, ConfigError
from blocker.textsafe import printable


def cmd_primary_config(args: argparse.Namespace, config: Config) -> int:
    from blocker.fleet.primary import primary_config

    sys.stdout.write(primary_config(config, args.kind))
    return 0


def cmd_secondary_config(args: argparse.Namespace, config: Config) -> int:
    from blocker.fleet.secondary import secondary_config

    sys.stdout.write(secondary_config(config, args.operator, args.kind, args.key_file, args.listen, args.dir))
    return 0


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    from blocker.fleet.status import fleet_status

    if config.distribution is None:
        raise ConfigError("distribution: not configured (see README, Scaling out)")
    rows = fleet_status(config, args.timeout)
    if args.json:
        print(json.dumps([r.to_json() for r in rows], indent=2))
    else:
        head = ("OPERATOR", "SECONDARY", "ADDRESS", "SERIAL", "PUBLISHED", "BEHIND", "ERROR")
        table: list[tuple[Any, ...]] = [head]
        for r in rows:
            table.append((r.operator, r.name, r.address, r.serial if r.serial is not None else "-",
                          r.published_serial if r.published_serial is not None else "-",
                          "-" if r.in_sync else (f"{r.behind_seconds:g}s" if r.behind_seconds is not None else "?"),
                          printable(r.last_error, limit=200) or "-"))
        widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
        for row in table:
            print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if not rows:
            print("no secondaries configured (operators.<op>.secondaries)")
    return 0 if all(r.in_sync for r in rows) else 1


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Called once from the CLI's parser setup: the `fleet` group and its three sub-commands."""
    desc = "distribution by zone transfer: the hidden primary, its secondaries, their serials"
    group = sub.add_parser("fleet", parents=parents, help=desc, description=desc)
    fsub = group.add_subparsers(dest="fleet_command", required=True, metavar="SUBCOMMAND")
    config_codes = {0: "the config was printed", 1: "the config does not allow it (no distribution:, an unknown "
                    "operator, a missing key file)", 2: "usage error"}
    with_epilog(group, {0: "ok", 1: "the config does not allow it, or a secondary lags (see each sub-command)",
                        2: "usage error"}, "blocker fleet status --json")

    text = "print the hidden primary's complete config (knotd -c FILE / named -c FILE)"
    p = fsub.add_parser("primary-config", parents=parents, help=text, description=text)
    p.add_argument("--kind", choices=("knot", "bind"), default=None, help="default: distribution.primary.kind")
    with_epilog(p, config_codes, "blocker fleet primary-config --kind knot > /etc/knot/knot.conf")
    p.set_defaults(func=cmd_primary_config)

    text = "print the snippet a resolver needs to follow the primary for one operator"
    p = fsub.add_parser("secondary-config", parents=parents, help=text, description=text)
    p.add_argument("--operator", metavar="OP", required=True, help="the operator whose zone the resolver follows")
    p.add_argument("--kind", choices=SECONDARY_KINDS, required=True, help="the resolver software of that host")
    p.add_argument("--key-file", metavar="PATH", default=None,
                   help="where the key file is on the resolver host (default: distribution.tsig_key; "
                   "knot-resolver: the key in Knot syntax, default state_dir/fleet/knot-key.conf)")
    p.add_argument("--listen", metavar="HOST:PORT", default=None,
                   help="knot-resolver: where its local Knot DNS secondary listens (default 127.0.0.1:5398)")
    p.add_argument("--dir", metavar="DIR", default=None,
                   help="knot-resolver: the local Knot DNS's folder: the zone file kresd reads, journal, "
                   "socket (default /var/lib/knot/blocker)")
    with_epilog(p, config_codes, f"blocker fleet secondary-config --operator orange --kind {SECONDARY_KINDS[0]}")
    p.set_defaults(func=cmd_secondary_config)

    text = "the serial each secondary serves against the published one (exit 1: any lags or cannot be asked)"
    p = fsub.add_parser("status", parents=parents, help=text, description=text)
    p.add_argument("--json", action="store_true", help="JSON array, one object per secondary")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per query (default 2)")
    with_epilog(p, {0: "every secondary serves the published serial", 1: "one lags or cannot be asked, or no "
                    "distribution: is configured", 2: "usage error"}, "blocker fleet status --json")
    p.set_defaults(func=cmd_status)
