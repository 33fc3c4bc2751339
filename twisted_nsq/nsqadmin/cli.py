"""
The C{nsqadmin} console script: Go nsqadmin's command line, log format and exit statuses.

Exit statuses: 0 after a clean stop (SIGINT/SIGTERM), C{--help} or C{--version}; 2 for a bad
flag; 1 when the config file, the options or the listener stop nsqadmin from starting.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Sequence

from twisted_nsq._cli import ConfigError, parse_or_exit
from twisted_nsq._log import format_line
from twisted_nsq._runner import serve
from twisted_nsq.nsqadmin.options import NSQADMIN_FLAGS, options_from_values

#: The prefix of lines written before the options (and so C{--log-prefix}) are known.
DEFAULT_PREFIX = "[nsqadmin] "


def main(argv: Sequence[str] | None = None) -> None:
    """Run nsqadmin until SIGINT or SIGTERM; exits the process with nsqadmin's exit status."""
    from twisted.internet import reactor

    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        values = parse_or_exit("nsqadmin", NSQADMIN_FLAGS, arguments, stdout=sys.stdout, stderr=sys.stderr)
    except ConfigError as e:
        sys.stderr.write(format_line(DEFAULT_PREFIX, "FATAL", str(e), datetime.datetime.now()))
        raise SystemExit(1) from None
    options = options_from_values(values)
    # Imported only now: --help and --version need none of the server.
    from twisted_nsq.nsqadmin.service import NSQAdminService, StartupError

    serve(
        "nsqadmin",
        reactor,
        NSQAdminService(options, reactor),
        (StartupError,),
        options.log_prefix,
        options.log_level,
    )
