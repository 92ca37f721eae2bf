"""Exit codes, the CLI's own error, and the one error hook every command ends through.

As certbot's `post_arg_parse_except_hook`: once the arguments are parsed, whatever a command
raises comes here. An expected failure (any `blocker.errors.BlockerError`) is one line on stderr
and its exit code; anything else is a bug: one line naming the crash log that holds the full
traceback (blocker.crashlog), and exit 70. A user never sees a traceback.

Exit codes: 0 ok / nothing to do; 1 invalid input or a check failed; 2 usage error (or, for
`probe`, only errors prevented a verdict); 3 `plan` has changes; 4 refused by a safety guard
(needs review or --force); 5 publish or reload failed; 70 internal error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from blocker.config.model import ConfigError
from blocker.crashlog import write_crash_log
from blocker.errors import BlockerError
from blocker.record.audit import AuditWriteError
from blocker.textsafe import display_path, printable
from blocker.zone.admit import UnsafeOwnerError

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_CHANGES, EXIT_REFUSED, EXIT_FAILED = 0, 1, 2, 3, 4, 5
EXIT_INTERNAL, EXIT_INTERRUPTED = 70, 130


class CliError(BlockerError):
    """A problem to report in one line, with the exit code to leave with."""

    def __init__(self, message: str, code: int = EXIT_INVALID) -> None:
        super().__init__(message)
        self.code = code


def _line_and_code(exc: BaseException) -> tuple[str, int]:
    """What one expected error says, and the exit code it leaves with."""
    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, ConfigError):
        return f"config: {exc}", EXIT_INVALID
    if isinstance(exc, AuditWriteError):  # any command that records: one line, exit 5, never 70
        return f"audit trail cannot be written: {exc}", EXIT_FAILED
    # UnsafeOwnerError (render's second line of defence: an order, not the tool, is wrong) and
    # every other error the package raises on purpose.
    return str(exc), EXIT_INVALID


def is_expected(exc: BaseException) -> bool:
    # ConfigError and UnsafeOwnerError are named until their packages derive them from BlockerError.
    return isinstance(exc, (BlockerError, ConfigError, UnsafeOwnerError))


def post_arg_parse_hook(exc: BaseException, command: str, state_dir: Path | None) -> int:
    """The exit code for `exc`, raised by `blocker COMMAND`, after saying so in one line.

    `state_dir` takes the crash log of an internal error (None: the system temp folder).
    """
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        return EXIT_OK
    if is_expected(exc):
        line, code = _line_and_code(exc)
        print(f"blocker: {line}", file=sys.stderr)
        return code
    written = write_crash_log(state_dir, exc, f"blocker {command}")
    where = f"full traceback in {display_path(written)}" if written else "no folder could take the traceback"
    print(f"blocker: internal error: {printable(f'{type(exc).__name__}: {exc}', limit=500)} ({where})",
          file=sys.stderr)
    return EXIT_INTERNAL


def with_epilog(parser: argparse.ArgumentParser, codes: dict[int, str], example: str) -> argparse.ArgumentParser:
    """End `parser`'s help with its exit codes and one example, as `git` and `kubectl` do: what
    a script may test, and a command line to start from. Used by every sub-command (a test over
    the whole parser checks it)."""
    codes = {**codes}
    codes.setdefault(EXIT_INTERNAL, "internal error: a bug (one line names the crash log with the traceback)")
    lines = ["exit codes:"] + [f"  {code:<3} {meaning}" for code, meaning in sorted(codes.items())]
    parser.epilog = "\n".join([*lines, "", "example:", f"  {example}"])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser
