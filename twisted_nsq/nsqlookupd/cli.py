"""
The C{nsqlookupd} console script: Go nsqlookupd's command line, log format and exit statuses.

Exit statuses: 0 after a clean stop (SIGINT/SIGTERM), C{--help} or C{--version}; 2 for a bad
flag; 1 when the config file, the options or a listener stop nsqlookupd from starting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.application.service import IService

from twisted_nsq._daemon import run_daemon
from twisted_nsq.nsqlookupd.options import NSQLOOKUPD_FLAGS, NSQLookupdOptions, options_from_values


def _service(options: NSQLookupdOptions, reactor: Any) -> IService:
    # Imported only now: --help and --version need none of the server.
    from twisted_nsq.nsqlookupd.service import NSQLookupdService

    return NSQLookupdService(options, reactor)


def main(argv: Sequence[str] | None = None) -> None:
    """Run nsqlookupd until SIGINT or SIGTERM; exits the process with nsqlookupd's exit status."""
    from twisted_nsq._reactor import global_reactor

    reactor = global_reactor()

    run_daemon("nsqlookupd", reactor, NSQLOOKUPD_FLAGS, argv, options_from_values, _service)
