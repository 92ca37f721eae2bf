"""The whole command tree, walked from `build_parser()`: every command a user can type documents
each flag, ends its help with its exit codes (70 included) and one example, and every command
that prints a result accepts `--json`. A command added later without them fails here."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

from blocker.cli.main import build_parser

# Commands that print no result a script would parse, and why: each exemption is a decision.
NO_JSON = {
    "render": "writes zones (to a folder, or one zone to stdout): its output is the RPZ zone itself",
    "run": "the daemon, in the foreground: it prints log lines (--log-format json), not a result",
    "probe-agent": "a daemon too: log lines (--log-format json)",
    "fleet primary-config": "prints a config file for knotd/named, in their syntax",
    "fleet secondary-config": "prints a config snippet for a resolver, in its syntax",
}


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser, bool]]:
    """(command path, parser, is a leaf that runs something) for the root and every sub-command."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    yield path, parser, not subs
    for action in subs:
        for name, child in action.choices.items():
            yield from walk(child, (*path, name))


COMMANDS = list(walk(build_parser()))
IDS = [" ".join(path) or "(root)" for path, _p, _leaf in COMMANDS]


def test_the_walk_sees_every_command() -> None:
    leaves = {" ".join(path) for path, _p, leaf in COMMANDS if leaf}
    assert {"validate", "status", "render", "plan", "apply", "run", "probe", "audit verify", "audit show",
            "report", "expiring", "evidence", "fleet primary-config", "fleet secondary-config", "fleet status",
            "probe-agent", "why"} <= leaves
    assert set(NO_JSON) <= leaves  # an exemption for a command that no longer exists is stale


@pytest.mark.parametrize(("path", "parser", "leaf"), COMMANDS, ids=IDS)
def test_every_flag_has_help(path: tuple[str, ...], parser: argparse.ArgumentParser, leaf: bool) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:  # the listed sub-commands say what they do
                assert choice.help and choice.help.strip(), (path, choice.dest)
            continue
        assert action.help and action.help != argparse.SUPPRESS and action.help.strip(), (
            f"`blocker {' '.join(path)}`: {'/'.join(action.option_strings) or action.dest} has no help")


@pytest.mark.parametrize(("path", "parser", "leaf"), COMMANDS, ids=IDS)
def test_help_ends_with_exit_codes_and_one_example(path: tuple[str, ...], parser: argparse.ArgumentParser,
                                                   leaf: bool) -> None:
    text = parser.format_help()
    assert "\nexit codes:\n" in text, text
    codes_part, _, example_part = text.partition("\nexit codes:\n")[2].partition("\nexample:\n")
    codes = [int(m.group(1)) for m in re.finditer(r"^  (\d+)\s+\S", codes_part, re.MULTILINE)]
    assert codes == sorted(codes) and 0 in codes and 2 in codes and 70 in codes, codes_part
    lines = [line for line in example_part.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("  blocker "), example_part
    # The example runs the command it documents.
    assert lines[0].split()[1:1 + len(path)] == list(path) or path == (), lines[0]
    assert text.rstrip().endswith(lines[0].strip())


@pytest.mark.parametrize(("path", "parser", "leaf"), [c for c in COMMANDS if c[2]], ids=[
    i for i, c in zip(IDS, COMMANDS, strict=True) if c[2]])
def test_every_printing_command_accepts_json(path: tuple[str, ...], parser: argparse.ArgumentParser,
                                             leaf: bool) -> None:
    name = " ".join(path)
    flags = {s for a in parser._actions for s in a.option_strings}
    if name in NO_JSON:
        assert "--json" not in flags, f"{name} has --json now: drop its exemption"
    else:
        assert "--json" in flags, f"`blocker {name}` prints a result but has no --json"


@pytest.mark.parametrize("name", ["status", "audit show", "report", "expiring", "why"])
def test_read_commands_offer_utc_and_say_the_default_zone(name: str) -> None:
    [parser] = [p for path, p, _leaf in COMMANDS if " ".join(path) == name]
    [utc] = [a for a in parser._actions if "--utc" in a.option_strings]
    assert utc.help is not None and "+00:00" in utc.help and "default:" in utc.help and "timezone" in utc.help
