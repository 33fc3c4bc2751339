"""
Publishing to nsqd over TCP, as go-nsq's C{Producer} does (spec 7.2), over a pool of addresses.

The first publish connects to every address at once. Publishes are spread round-robin over the
connections that are ready; on each connection commands are pipelined and replies matched in
order. A lost connection is opened again lazily, by a later publish, while the others keep serving;
an address whose connection attempt failed is retried only after a growing backoff, unless no
connection is ready at all, in which case a publish tries every address again.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.internet.interfaces import IAddress, IProtocol, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from twisted_nsq.client.connection import (
    ConnectionClosedError,
    ConnectionOptions,
    NSQConnection,
    encode_mpub_body,
)
from twisted_nsq.wire.names import is_valid_topic_name

__all__ = ["Producer", "ProducerStoppedError", "default_endpoint", "parse_address"]


class ProducerStoppedError(Exception):
    """The producer was stopped; it publishes nothing more."""


def parse_address(address: str) -> tuple[str, int]:
    """
    Split a Go-style C{host:port} (C{[v6]:port} for IPv6 literals).

    @raise ValueError: no port, or a port outside 1-65535.
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"nsqd address must be host:port, not {address!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def default_endpoint(reactor: Any, address: str) -> IStreamClientEndpoint:
    """A TCP endpoint for C{host:port} on C{reactor}: IPv4 literals directly, others resolved."""
    host, port = parse_address(address)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and literal.version == 4:
        return TCP4ClientEndpoint(reactor, host, port)
    return HostnameEndpoint(reactor, host, port)


def _check_topic(topic: str) -> bytes:
    if not isinstance(topic, str) or not is_valid_topic_name(topic):
        raise ValueError(
            f"invalid topic name {topic!r}: 1-64 characters from [.a-zA-Z0-9_-], "
            "optionally ending in #ephemeral"
        )
    return topic.encode("ascii")


def _check_body(body: bytes) -> None:
    if not isinstance(body, bytes):
        raise TypeError(f"message body must be bytes, not {type(body).__name__}")
    if not body:
        # nsqd answers an empty body with a fatal E_BAD_MESSAGE.
        raise ValueError("message body must not be empty")


def _discard(payload: bytes) -> None:
    return None


class _ConnectionFactory(Factory):
    """Hands the endpoint the one connection object made for this attempt."""

    def __init__(self, connection: NSQConnection) -> None:
        self._connection = connection

    def buildProtocol(self, addr: IAddress | None) -> NSQConnection:
        return self._connection


#: The backoff before retrying an address whose connection attempt failed: this many seconds after
#: the first failure, doubled after each further one, up to L{_MAX_RETRY_DELAY}.
_FIRST_RETRY_DELAY = 1.0
_MAX_RETRY_DELAY = 60.0


class _Slot:
    """One address of the pool and the state of its connection."""

    def __init__(self, address: str) -> None:
        self.address = address
        #: The ready connection, while it is open.
        self.connection: NSQConnection | None = None
        #: The connection attempt in progress (endpoint connect, then handshake).
        self.connecting: Deferred[Any] | None = None
        #: The connection being handshaken, so that stop() can close it.
        self.handshaking: NSQConnection | None = None
        #: Consecutive failed connection attempts, and when the next one may start.
        self.failures = 0
        self.retry_at = 0.0

    @property
    def idle(self) -> bool:
        """Neither connected nor connecting."""
        return self.connection is None and self.connecting is None


class Producer:
    """
    Publishes messages over a pool of connections, one per address in C{nsqd_tcp_addresses}.

    Each publish returns a Deferred that fires with C{None} once nsqd answered C{OK}, or fails
    with L{NSQResponseError} (its C{code} is nsqd's C{E_*} code, from the publish or from
    IDENTIFY), L{ConnectionClosedError} (its connection was lost first), the endpoint's error
    (e.g. C{ConnectionRefusedError}) when no address could be connected, or
    L{ProducerStoppedError}.
    """

    def __init__(
        self,
        nsqd_tcp_addresses: Sequence[str],
        *,
        reactor: Any = None,
        endpoint_factory: Callable[[str], IStreamClientEndpoint] | None = None,
        **options: Any,
    ) -> None:
        """
        @param nsqd_tcp_addresses: nsqd TCP addresses as C{host:port}.
        @param reactor: the reactor to connect with, and the clock for reconnection backoff;
            C{None} means the global one, imported when first needed.
        @param endpoint_factory: makes the endpoint for an address (tests pass fakes); the
            default is a TCP endpoint on C{reactor}.
        @param options: L{ConnectionOptions} fields (C{client_id}, C{heartbeat_interval},
            C{snappy}, C{tls_v1} with C{tls_options}, ...).
        """
        if isinstance(nsqd_tcp_addresses, str):
            raise TypeError("nsqd_tcp_addresses must be a sequence of host:port strings")
        if not nsqd_tcp_addresses:
            raise ValueError("Producer needs at least one nsqd address")
        for address in nsqd_tcp_addresses:
            parse_address(address)
        self._slots = [_Slot(address) for address in nsqd_tcp_addresses]
        self._reactor = reactor
        self._endpoint_factory = endpoint_factory if endpoint_factory is not None else self._tcp_endpoint
        self.options = ConnectionOptions(**options)
        # The slot the next publish starts looking from, for round-robin.
        self._next_slot = 0
        self._idle_count = len(self._slots)
        # Publishes waiting for the first connection to become ready, in order.
        self._waiters: list[Deferred[NSQConnection]] = []
        # Set while _connect_idle starts attempts, so that an attempt failing at once does not
        # fail the waiters before the other addresses were tried.
        self._starting = False
        # What the waiting publishes fail with when no address could be connected.
        self._last_error: Exception = ConnectionClosedError("no nsqd address could be connected")
        self._stopped = False

    @property
    def connection(self) -> NSQConnection | None:
        """A ready connection (the first in address order), if there is one."""
        for slot in self._slots:
            connection = slot.connection
            if connection is not None and connection.ready:
                return connection
        return None

    def _clock(self) -> IReactorTime:
        if self._reactor is None:
            # Imported here, never at import time, so that importing the client picks no reactor.
            from twisted.internet import reactor

            self._reactor = reactor
        return cast(IReactorTime, self._reactor)

    def _tcp_endpoint(self, address: str) -> IStreamClientEndpoint:
        return default_endpoint(self._clock(), address)

    # Publishing

    def publish(self, topic: str, body: bytes) -> Deferred[None]:
        """PUB one message."""
        topic_bytes = _check_topic(topic)
        _check_body(body)
        return self._send(b"PUB", (topic_bytes,), body)

    def multi_publish(self, topic: str, bodies: Sequence[bytes]) -> Deferred[None]:
        """MPUB several messages at once; nsqd queues all of them or none."""
        topic_bytes = _check_topic(topic)
        if isinstance(bodies, bytes) or not bodies:
            raise ValueError("multi_publish needs a non-empty sequence of bodies")
        for body in bodies:
            _check_body(body)
        return self._send(b"MPUB", (topic_bytes,), encode_mpub_body(bodies))

    def deferred_publish(self, topic: str, body: bytes, delay_ms: int) -> Deferred[None]:
        """DPUB one message that nsqd delivers after C{delay_ms} milliseconds."""
        topic_bytes = _check_topic(topic)
        _check_body(body)
        if not isinstance(delay_ms, int) or isinstance(delay_ms, bool) or delay_ms < 0:
            raise ValueError(f"delay_ms must be an int >= 0, not {delay_ms!r}")
        return self._send(b"DPUB", (topic_bytes, b"%d" % (delay_ms,)), body)

    def _send(self, name: bytes, params: tuple[bytes, ...], body: bytes) -> Deferred[None]:
        if self._stopped:
            return fail(ProducerStoppedError("the producer was stopped"))
        connection = self._pick()
        if self._idle_count:
            # Lazy (re)connection: a lost address comes back with a publish, at once when nothing
            # serves, otherwise once its backoff is over.
            self._connect_idle(force=connection is None)
            if connection is None:
                connection = self._pick()
        if connection is not None:
            return connection.send_command(name, *params, body=body).addCallback(_discard)
        waiter: Deferred[NSQConnection] = Deferred()
        self._waiters.append(waiter)
        self._fail_waiters_if_hopeless()
        return waiter.addCallback(lambda c: c.send_command(name, *params, body=body)).addCallback(_discard)

    def _pick(self) -> NSQConnection | None:
        """The next ready connection in round-robin order."""
        slots = self._slots
        count = len(slots)
        start = self._next_slot
        for offset in range(count):
            index = (start + offset) % count
            connection = slots[index].connection
            if connection is not None and connection.ready:
                self._next_slot = index + 1
                return connection
        return None

    # Connecting

    def _connect_idle(self, force: bool) -> None:
        """Start a connection attempt for each idle address whose backoff is over (any if C{force})."""
        now = self._clock().seconds() if not force else 0.0
        self._starting = True
        try:
            for slot in self._slots:
                if slot.idle and (force or slot.retry_at <= now):
                    self._connect(slot)
        finally:
            self._starting = False

    def _connect(self, slot: _Slot) -> None:
        connection = NSQConnection(self.options)
        connecting = self._endpoint_factory(slot.address).connect(_ConnectionFactory(connection))
        # Set before the callbacks, which clear it, so that an endpoint that connects at once works.
        slot.connecting = connecting
        self._idle_count -= 1
        connecting.addCallback(self._handshake, slot)
        connecting.addCallbacks(self._connected, self._connect_failed, (slot,), errbackArgs=(slot,))

    def _handshake(self, protocol: IProtocol, slot: _Slot) -> Deferred[NSQConnection]:
        assert isinstance(protocol, NSQConnection)
        connection = protocol
        slot.handshaking = connection
        return connection.when_ready().addCallback(lambda _: connection)

    def _connected(self, connection: NSQConnection, slot: _Slot) -> None:
        slot.connecting = None
        slot.handshaking = None
        slot.failures = 0
        if self._stopped:
            # stop() ran after the handshake finished but before this callback did.
            self._idle_count += 1
            if connection.transport is not None:
                connection.transport.loseConnection()
            return
        slot.connection = connection
        connection.when_closed().addCallback(self._lost, slot, connection)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(connection)

    def _connect_failed(self, failure: Failure, slot: _Slot) -> None:
        slot.connecting = None
        slot.handshaking = None
        self._idle_count += 1
        if isinstance(failure.value, CancelledError) or self._stopped:
            return
        slot.failures += 1
        delay = min(_FIRST_RETRY_DELAY * 2 ** (slot.failures - 1), _MAX_RETRY_DELAY)
        slot.retry_at = self._clock().seconds() + delay
        error = failure.value
        if not isinstance(error, Exception):
            error = ConnectionClosedError(failure.getErrorMessage())
        self._last_error = error
        self._fail_waiters_if_hopeless()

    def _fail_waiters_if_hopeless(self) -> None:
        """Fail the waiting publishes once every attempt failed and none is left in progress."""
        if not self._waiters or self._starting:
            return
        if any(slot.connecting is not None or slot.connection is not None for slot in self._slots):
            return
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(self._last_error)

    def _lost(self, _: None, slot: _Slot, connection: NSQConnection) -> None:
        if slot.connection is connection:
            slot.connection = None
            # It had worked: the next publish may open it again at once.
            slot.retry_at = 0.0
            self._idle_count += 1
            if self._waiters and not self._stopped:
                # Publishes wait while every connection was closing: this one may serve them.
                self._connect_idle(force=True)
                self._fail_waiters_if_hopeless()

    # Stopping

    def stop(self) -> Deferred[None]:
        """
        Stop for good: close every connection and fail every publish still waiting for a reply.
        Fires once all connections are closed.
        """
        self._stopped = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(ProducerStoppedError("the producer was stopped"))
        closing: list[Deferred[None]] = []
        for slot in self._slots:
            for connection in (slot.handshaking, slot.connection):
                if connection is not None and not connection.closed and connection.transport is not None:
                    closing.append(connection.when_closed())
                    connection.transport.loseConnection()
            if slot.connecting is not None:
                slot.connecting.cancel()
        if not closing:
            return succeed(None)
        return DeferredList(closing).addCallback(lambda _: None)
