"""
L{NSQLookupdService}: one nsqlookupd's start-up and shutdown, in Go nsqlookupd's order.

Start: validate the options, bind TCP (nsqd registrations) then HTTP (the lookup API), and tell the
core which ports it got (it returns them in IDENTIFY answers). Stop: close the TCP listener, then
every nsqd connection (each producer's registrations go with it), then the HTTP listener.
"""

from __future__ import annotations

import platform

from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import Logger

from twisted_nsq._listen import ListenAddress, StartupError, describe_port
from twisted_nsq._service import DrainingService, bind_listener, close_listener
from twisted_nsq._version import VERSION_STRING
from twisted_nsq.nsqlookupd.core import NSQLookupd
from twisted_nsq.nsqlookupd.http import LookupdHTTP
from twisted_nsq.nsqlookupd.options import NSQLookupdOptions
from twisted_nsq.nsqlookupd.protocol import LookupdFactory

__all__ = ["NSQLookupdService", "StartupError"]

_log = Logger()


class NSQLookupdService(DrainingService):
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
        self.tcp_listening_port = bind_listener(self._reactor, _log, "TCP", tcp, factory)
        _, lookupd.tcp_port = describe_port(self.tcp_listening_port)
        site = LookupdHTTP(lookupd).site(self._reactor)
        site.noisy = False
        self.http_listening_port = bind_listener(self._reactor, _log, "HTTP", http, site)
        _, lookupd.http_port = describe_port(self.http_listening_port)

    def _undo_start(self) -> None:
        for port in (self.http_listening_port, self.tcp_listening_port):
            if port is not None:
                port.stopListening()
        self.tcp_listening_port = self.http_listening_port = None

    async def _drain(self) -> None:
        # MultiService would stop the listeners concurrently; nsqlookupd's order is written out:
        # no new nsqd may connect while the registered ones are dropped, and clients can look
        # producers up until the last nsqd connection is gone.
        await close_listener(_log, "TCP", self.tcp_listening_port)
        self.tcp_listening_port = None
        if self.factory is not None:
            await self.factory.close_connections()
        await close_listener(_log, "HTTP", self.http_listening_port)
        self.http_listening_port = None
