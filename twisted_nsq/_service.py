"""
What the daemons' services share: a C{MultiService} whose start is one step undone when it fails
and whose stop is an ordered drain (L{DrainingService}), and binding and closing a listener with
Go's error message and log lines (L{bind_listener}, L{close_listener}).
"""

from __future__ import annotations

import abc

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorTime
from twisted.logger import Logger

from twisted_nsq._listen import ListenAddress, StartupError, describe_port, display_address, listen_now

__all__ = ["DrainingService", "bind_listener", "close_listener"]


def bind_listener(
    reactor: IReactorTime, log: Logger, name: str, address: ListenAddress, factory: IProtocolFactory
) -> IListeningPort:
    """
    Listen on C{address} now and log C{NAME: listening on ADDR} to C{log} (the daemon's own logger,
    so the line keeps the daemon's namespace).

    @raise StartupError: C{listen (ADDR) failed - REASON}, as Go words it.
    """
    try:
        port = listen_now(reactor, address, factory)
    except StartupError as e:
        raise StartupError(f"listen ({display_address(address)}) failed - {e}") from None
    printable, _ = describe_port(port)
    log.info("{protocol}: listening on {address}", protocol=name, address=printable)
    return port


async def close_listener(log: Logger, name: str, port: IListeningPort | None) -> None:
    """Log C{NAME: closing ADDR} and stop listening on C{port} (nothing when it is C{None})."""
    if port is None:
        return
    printable, _ = describe_port(port)
    log.info("{protocol}: closing {address}", protocol=name, address=printable)
    stopped = port.stopListening()
    if stopped is not None:
        await stopped


class DrainingService(MultiService, metaclass=abc.ABCMeta):
    """
    A daemon's service: C{startService} runs L{_start} and, when it raises, L{_undo_start} before
    re-raising (so a failed start leaves nothing bound); C{stopService} runs L{_drain}, the
    daemon's shutdown in its written-out order, then stops the children, then L{_release} (even
    when the drain fails), and returns a Deferred that fires once all of it is done. Starting a
    running service or stopping a stopped one does nothing.
    """

    @abc.abstractmethod
    def _start(self) -> None:
        """Bind and start everything, in order; raise L{StartupError} when the daemon cannot start."""

    @abc.abstractmethod
    def _undo_start(self) -> None:
        """Release whatever a failed L{_start} had already bound or opened."""

    @abc.abstractmethod
    async def _drain(self) -> None:
        """Close listeners and connections in the daemon's order."""

    def _release(self) -> None:
        """Release what must outlive the children (nothing unless a daemon has such a thing)."""

    def startService(self) -> None:
        if self.running:
            return
        try:
            self._start()
        except BaseException:
            self._undo_start()
            raise
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> Deferred[None]:
        if not self.running:
            return succeed(None)
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        try:
            await self._drain()
            await MultiService.stopService(self)  # type: ignore[no-untyped-call]
        finally:
            self.running = False
            self._release()
