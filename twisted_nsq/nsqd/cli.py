"""
The C{nsqd} console script: Go nsqd's command line, log format and exit statuses.

Exit statuses: 0 after a clean stop (SIGINT/SIGTERM), C{--help} or C{--version}; 2 for a bad
flag; 1 when the config file, the options or a listener stop nsqd from starting.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Sequence

from twisted_nsq._cli import ConfigError, parse_or_exit
from twisted_nsq._log import format_line
from twisted_nsq._runner import serve
from twisted_nsq.nsqd.options import NSQD_FLAGS, options_from_values


def main(argv: Sequence[str] | None = None) -> None:
    """Run nsqd until SIGINT or SIGTERM; exits the process with nsqd's exit status."""
    from twisted.internet import reactor

    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        values = parse_or_exit("nsqd", NSQD_FLAGS, arguments, stdout=sys.stdout, stderr=sys.stderr)
    except ConfigError as e:
        # Logging starts once the options (and so the prefix) are known; write Go's line directly.
        sys.stderr.write(format_line("[nsqd] ", "FATAL", str(e), datetime.datetime.now()))
        raise SystemExit(1) from None
    options = options_from_values(values)
    # Imported only now: --help and --version need none of the server.
    from twisted_nsq.nsqd.service import NSQDService, StartupError

    serve(
        "nsqd",
        reactor,
        NSQDService(options, reactor),
        (StartupError,),
        options.log_prefix,
        options.log_level,
    )
