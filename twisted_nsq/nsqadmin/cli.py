"""
The C{nsqadmin} console script: Go nsqadmin's command line, log format and exit statuses.

Exit statuses: 0 after a clean stop (SIGINT/SIGTERM), C{--help} or C{--version}; 2 for a bad
flag; 1 when the config file, the options or the listener stop nsqadmin from starting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.application.service import IService

from twisted_nsq._daemon import run_daemon
from twisted_nsq.nsqadmin.options import NSQADMIN_FLAGS, NSQAdminOptions, options_from_values


def _service(options: NSQAdminOptions, reactor: Any) -> IService:
    # Imported only now: --help and --version need none of the server.
    from twisted_nsq.nsqadmin.service import NSQAdminService

    return NSQAdminService(options, reactor)


def main(argv: Sequence[str] | None = None) -> None:
    """Run nsqadmin until SIGINT or SIGTERM; exits the process with nsqadmin's exit status."""
    from twisted_nsq._reactor import global_reactor

    reactor = global_reactor()

    run_daemon("nsqadmin", reactor, NSQADMIN_FLAGS, argv, options_from_values, _service)
