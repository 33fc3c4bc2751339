"""
The console script of every daemon (nsqd, nsqlookupd, nsqadmin): Go's command line, the config
file error as Go's C{FATAL} log line, then L{twisted_nsq._runner.serve} until SIGINT or SIGTERM.

Exit statuses: 0 after a clean stop, C{--help} or C{--version}; 2 for a bad flag; 1 when the
config file, the options or a listener stop the daemon from starting.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Protocol, TypeVar

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorCore

from twisted_nsq._cli import ConfigError, FlagSpec, parse_or_exit
from twisted_nsq._listen import StartupError
from twisted_nsq._log import format_line
from twisted_nsq._runner import serve

__all__ = ["daemon_flag_values", "run_daemon"]


class _LogSettings(Protocol):
    @property
    def log_prefix(self) -> str: ...

    @property
    def log_level(self) -> str: ...


_Options = TypeVar("_Options", bound=_LogSettings)


def daemon_flag_values(
    program: str, flags: Sequence[FlagSpec], argv: Sequence[str] | None
) -> dict[str, object]:
    """
    A daemon's flag values: L{parse_or_exit} on C{argv} (C{sys.argv[1:]} when C{None}) with the
    process's streams. A L{ConfigError} becomes Go's C{FATAL} line on stderr, with the
    C{[program] } prefix (logging has not started yet), and exit status 1.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        return parse_or_exit(program, flags, arguments, stdout=sys.stdout, stderr=sys.stderr)
    except ConfigError as e:
        sys.stderr.write(format_line(f"[{program}] ", "FATAL", str(e), datetime.datetime.now()))
        raise SystemExit(1) from None


def run_daemon(
    program: str,
    reactor: IReactorCore,
    flags: Sequence[FlagSpec],
    argv: Sequence[str] | None,
    convert: Callable[[dict[str, object]], _Options],
    make_service: Callable[[_Options, Any], IService],
) -> NoReturn:
    """
    Parse the command line, build the service and serve it on C{reactor} (the console script's
    global reactor) until SIGINT or SIGTERM; exits the process with the daemon's exit status.

    @param convert: the flag values as the daemon's options.
    @param make_service: the daemon's service for the options and the reactor; called only after
        parsing, so C{--help} and C{--version} need not import the server.
    """
    options = convert(daemon_flag_values(program, flags, argv))
    serve(
        program,
        reactor,
        make_service(options, reactor),
        (StartupError,),
        options.log_prefix,
        options.log_level,
    )
