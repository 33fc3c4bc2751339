"""
The reactor the daemons' console scripts run on: Twisted's epoll reactor without the per-event
legacy log context.

Twisted's epoll reactor handles each ready descriptor inside C{log.callWithLogger}, which pushes
a C{twisted.python.log} context (the C{system} prefix of legacy log lines) around every read and
write. The daemons log through C{twisted.logger} with their own namespaces and never show that
prefix, and the push and pop cost a few microseconds per event: for a PUB answered one at a time,
one event per message (docs/performance.md). Everything else, including the handling of errors
raised by C{doRead}/C{doWrite}, is the epoll reactor's own C{_doReadOrWrite}.

Only the console scripts install it (L{global_reactor}); C{twistd}/C{twist} keep the reactor they
chose.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

from twisted.internet.epollreactor import EPollReactor


class DaemonEPollReactor(EPollReactor):
    """L{EPollReactor} that dispatches ready descriptors without pushing a log context."""

    def doPoll(self, timeout: float | None) -> None:
        """Wait for events (at most C{timeout} seconds; C{None}: until one comes) and handle them."""
        try:
            events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        handle = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                handle(selectable, fd, event)  # type: ignore[no-untyped-call]

    doIteration = doPoll


def install() -> None:
    """
    Make L{DaemonEPollReactor} the global reactor, where epoll exists and no reactor is installed
    yet (a process that already has one, such as a test calling a script's C{main}, keeps it).
    """
    if "twisted.internet.reactor" in sys.modules or not sys.platform.startswith("linux"):
        return
    from twisted.internet.main import installReactor

    installReactor(DaemonEPollReactor())  # type: ignore[no-untyped-call]


def global_reactor() -> Any:
    """The global reactor for a console script: L{install}, then C{twisted.internet.reactor}."""
    install()
    from twisted.internet import reactor

    return reactor
