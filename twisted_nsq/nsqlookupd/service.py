"""
L{NSQLookupdService}: one nsqlookupd's start-up and shutdown, in Go nsqlookupd's order.

Start: validate the options, bind TCP (nsqd registrations) then HTTP (the lookup API), and tell the
core which ports it got (it returns them in IDENTIFY answers). Stop: close the TCP listener, then
every nsqd connection (each producer's registrations go with it), then the HTTP listener.
"""

from __future__ import annotations

import platform

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorTime
from twisted.logger import Logger

from twisted_nsq._listen import (
    ListenAddress,
    StartupError,
    describe_port,
    display_address,
    listen_now,
)
from twisted_nsq._version import VERSION_STRING
from twisted_nsq.nsqlookupd.core import NSQLookupd
from twisted_nsq.nsqlookupd.http import LookupdHTTP
from twisted_nsq.nsqlookupd.options import NSQLookupdOptions
from twisted_nsq.nsqlookupd.protocol import LookupdFactory

__all__ = ["NSQLookupdService", "StartupError"]

_log = Logger()


class NSQLookupdService(MultiService):
    """
    Runs one nsqlookupd: the registration core, the TCP listener nsqd nodes register through, and
    the HTTP listener clients look producers up on.

    C{startService} raises L{StartupError} (after closing whatever it had bound) when nsqlookupd
    cannot start. C{stopService} returns a Deferred that fires once every listener and connection
    is closed. After a start, C{lookupd}, C{factory} and the C{*_listening_port} attributes are set.
    """

    def __init__(self, options: NSQLookupdOptions, reactor: IReactorTime) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.options = options
        self._reactor = reactor
        self.lookupd: NSQLookupd | None = None
        self.factory: LookupdFactory | None = None
        self.tcp_listening_port: IListeningPort | None = None
        self.http_listening_port: IListeningPort | None = None

    def startService(self) -> None:
        if self.running:
            return
        try:
            self._start()
        except BaseException:
            self._undo_start()
            raise
        super().startService()  # type: ignore[no-untyped-call]

    def _start(self) -> None:
        options = self.options
        try:
            options.validate()
            tcp = ListenAddress.parse(options.tcp_address)
            http = ListenAddress.parse(options.http_address)
        except ValueError as e:
            raise StartupError(str(e)) from None
        _log.info(
            "nsqlookupd v{version} (built w/python{python})",
            version=VERSION_STRING,
            python=platform.python_version(),
        )
        lookupd = self.lookupd = NSQLookupd(options, self._reactor)
        factory = self.factory = LookupdFactory(lookupd)
        # Twisted announces every factory start and stop at info level; lookupd's log has its own lines.
        factory.noisy = False
        self.tcp_listening_port = self._bind("TCP", tcp, factory)
        _, lookupd.tcp_port = describe_port(self.tcp_listening_port)
        site = LookupdHTTP(lookupd).site(self._reactor)
        site.noisy = False
        self.http_listening_port = self._bind("HTTP", http, site)
        _, lookupd.http_port = describe_port(self.http_listening_port)

    def _bind(self, name: str, address: ListenAddress, factory: IProtocolFactory) -> IListeningPort:
        try:
            port = listen_now(self._reactor, address, factory)
        except StartupError as e:
            raise StartupError(f"listen ({display_address(address)}) failed - {e}") from None
        printable, _ = describe_port(port)
        _log.info("{protocol}: listening on {address}", protocol=name, address=printable)
        return port

    def _undo_start(self) -> None:
        for port in (self.http_listening_port, self.tcp_listening_port):
            if port is not None:
                port.stopListening()
        self.tcp_listening_port = self.http_listening_port = None

    def stopService(self) -> Deferred[None]:
        if not self.running:
            return succeed(None)
        return ensureDeferred(self._drain())

    async def _drain(self) -> None:
        # MultiService would stop the listeners concurrently; nsqlookupd's order is written out:
        # no new nsqd may connect while the registered ones are dropped, and clients can look
        # producers up until the last nsqd connection is gone.
        try:
            await self._close_port("TCP", self.tcp_listening_port)
            self.tcp_listening_port = None
            if self.factory is not None:
                await self.factory.close_connections()
            await self._close_port("HTTP", self.http_listening_port)
            self.http_listening_port = None
            await super().stopService()  # type: ignore[no-untyped-call]
        finally:
            self.running = False

    async def _close_port(self, name: str, port: IListeningPort | None) -> None:
        if port is None:
            return
        printable, _ = describe_port(port)
        _log.info("{protocol}: closing {address}", protocol=name, address=printable)
        stopped = port.stopListening()
        if stopped is not None:
            await stopped
