"""
L{NSQLookupd}: one nsqlookupd's state, shared by its TCP protocol and its HTTP API.

A plain object on an injected clock: the options, the registration database and the ports the
service bound (which IDENTIFY replies report). It knows nothing of sockets.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from twisted_nsq.nsqlookupd.options import NSQLookupdOptions
from twisted_nsq.nsqlookupd.registration import RegistrationDB


class NSQLookupd:
    """
    The nsqlookupd core.

    @ivar db: the registration database, with the options' inactivity timeout and tombstone lifetime.
    @ivar tcp_port: the bound TCP port (0 until the service binds and sets it).
    @ivar http_port: the bound HTTP port (0 until the service binds and sets it).
    @ivar start_time: clock time (seconds) the core was made at.
    """

    def __init__(
        self,
        options: NSQLookupdOptions,
        clock: IReactorTime,
        hostname: Callable[[], str] = socket.gethostname,
    ) -> None:
        self.options = options
        self.clock = clock
        self.db = RegistrationDB(clock, options.inactive_producer_timeout, options.tombstone_lifetime)
        self.tcp_port = 0
        self.http_port = 0
        self.start_time = clock.seconds()
        self._hostname = hostname

    def hostname(self) -> str:
        """The OS hostname, asked each time as Go does (IDENTIFY replies carry it)."""
        return self._hostname()
