"""
The C{nsqlookupd} console script: Go nsqlookupd's command line, log format and exit statuses.

Exit statuses: 0 after a clean stop (SIGINT/SIGTERM), C{--help} or C{--version}; 2 for a bad
flag; 1 when the config file, the options or a listener stop nsqlookupd from starting.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Sequence
from typing import cast

from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger, globalLogBeginner
from twisted.python.failure import Failure

from twisted_nsq._cli import ConfigError, parse_or_exit, stop_on_signals
from twisted_nsq._log import GoLogObserver, format_line
from twisted_nsq._runtime import tune_gc
from twisted_nsq.nsqlookupd.options import NSQLOOKUPD_FLAGS, options_from_values

_log = Logger()

#: The prefix of lines written before the options (and so C{--log-prefix}) are known.
DEFAULT_PREFIX = "[nsqlookupd] "


def main(argv: Sequence[str] | None = None) -> None:
    """Run nsqlookupd until SIGINT or SIGTERM; exits the process with nsqlookupd's exit status."""
    from twisted.internet import reactor

    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        values = parse_or_exit(
            "nsqlookupd", NSQLOOKUPD_FLAGS, arguments, stdout=sys.stdout, stderr=sys.stderr
        )
    except ConfigError as e:
        sys.stderr.write(format_line(DEFAULT_PREFIX, "FATAL", str(e), datetime.datetime.now()))
        raise SystemExit(1) from None
    options = options_from_values(values)
    # Imported only now: --help and --version need none of the server.
    from twisted_nsq.nsqlookupd.service import NSQLookupdService, StartupError

    globalLogBeginner.beginLoggingTo(
        [GoLogObserver(sys.stderr, prefix=options.log_prefix, level=options.log_level)],
        redirectStandardIO=False,
    )
    tune_gc()
    # Our handlers go in before the listening lines are printed, and the reactor installs none of
    # its own: a harness may signal as soon as it has read its ports, before the reactor runs.
    stop_on_signals(reactor, cast(IReactorFromThreads, reactor).callFromThread)
    service = NSQLookupdService(options, reactor)
    try:
        service.startService()
    except StartupError as e:
        _log.critical("failed to instantiate nsqlookupd - {error}", error=e)
        raise SystemExit(1) from None
    except Exception:
        _log.failure("failed to instantiate nsqlookupd")
        raise SystemExit(1) from None

    status = 0

    def drain() -> object:
        def failed(failure: Failure) -> None:
            nonlocal status
            status = 1
            _log.failure("shutdown did not complete", failure)

        return service.stopService().addErrback(failed)

    reactor.addSystemEventTrigger("before", "shutdown", drain)
    # Every posix reactor's run() takes this; IReactorCore does not declare it.
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]
    raise SystemExit(status)
