"""
The start of every utility's console script: parse the command line (and C{--config} file) with
Go's flag rules, then validate the values; any error is reported on stderr with the exit status Go
uses (2 for a bad flag, with the usage; 1 for a missing or contradictory flag or a bad config file).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TextIO

from twisted_nsq._cli import ConfigError, FlagError, FlagSpec, parse_or_exit

__all__ = ["parse_checked"]


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
