"""Run one daemon's service on the global reactor: the part every console script shares."""

from __future__ import annotations

import sys
from typing import Any, NoReturn, cast

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.logger import Logger, globalLogBeginner
from twisted.python.failure import Failure

from twisted_nsq._cli import stop_on_signals
from twisted_nsq._log import GoLogObserver
from twisted_nsq._runtime import tune_gc

_log = Logger()


def serve(
    program: str,
    reactor: IReactorCore,
    service: IService,
    startup_errors: tuple[type[Exception], ...],
    log_prefix: str,
    log_level: str,
) -> NoReturn:
    """
    Start ``service`` and run the reactor until SIGINT or SIGTERM, then drain and exit.

    Signal handlers go in before start-up prints its ``TCP: listening on`` lines, and the
    reactor installs none of its own: a test harness may signal as soon as it has read its
    ports, before the reactor runs. Exit status 1 when start-up fails (logged as Go logs it),
    1 when the drain fails, else 0.
    """
    observer = GoLogObserver(sys.stderr, prefix=log_prefix, level=log_level)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    tune_gc()
    stop_on_signals(reactor, cast(IReactorFromThreads, reactor).callFromThread)
    try:
        service.startService()  # type: ignore[no-untyped-call]
    except startup_errors as e:
        _log.critical("failed to instantiate {program} - {error}", program=program, error=e)
        raise SystemExit(1) from None
    except Exception:
        _log.failure("failed to instantiate {program}", program=program)
        raise SystemExit(1) from None

    status = 0

    def drain() -> object:
        def failed(failure: Failure) -> None:
            nonlocal status
            status = 1
            _log.failure("shutdown did not complete", failure)

        stopped: Any = service.stopService()  # type: ignore[no-untyped-call]
        return stopped.addErrback(failed) if stopped is not None else None

    reactor.addSystemEventTrigger("before", "shutdown", drain)
    # Every posix reactor's run() takes this; IReactorCore does not declare it.
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]
    raise SystemExit(status)
