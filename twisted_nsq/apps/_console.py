"""
The start of every utility's console script: parse the command line (and C{--config} file) with
Go's flag rules, then validate the values; any error is reported on stderr with the exit status Go
uses (2 for a bad flag, with the usage; 1 for a missing or contradictory flag or a bad config file).
L{run_console} then runs the utility under C{react}.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from twisted_nsq._cli import ConfigError, FlagError, FlagSpec, parse_or_exit

__all__ = ["parse_checked", "run_console"]


def parse_checked(
    program: str,
    flags: Sequence[FlagSpec],
    argv: Sequence[str],
    check: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    stdout: TextIO,
    stderr: TextIO,
) -> dict[str, Any]:
    """
    The checked flag values, or C{SystemExit} after writing the reason to C{stderr}.

    @param check: validates and completes the values; raises L{FlagError} with Go's message.
    """
    try:
        values = parse_or_exit(program, flags, argv, stdout=stdout, stderr=stderr)
        return check(values)
    except (FlagError, ConfigError) as e:
        stderr.write(f"{program}: {e}\n")
        raise SystemExit(1) from None


def run_console(
    program: str,
    flags: Sequence[FlagSpec],
    argv: Sequence[str] | None,
    check: Callable[[dict[str, Any]], dict[str, Any]],
    run: Callable[..., Any],
    *streams: Any,
) -> None:
    """
    A utility's console script: the checked flags of C{argv} (C{sys.argv[1:]} when C{None}), then
    C{react(run, (checked, *streams))}, which exits the process when C{run}'s Deferred fires.
    """
    from twisted.internet.task import react

    arguments = sys.argv[1:] if argv is None else list(argv)
    checked = parse_checked(program, flags, arguments, check, stdout=sys.stdout, stderr=sys.stderr)
    react(run, (checked, *streams))
