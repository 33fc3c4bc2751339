"""
Publishing to nsqd over TCP, as go-nsq's C{Producer} does (spec 7.2).

One connection at a time carries every command, pipelined, with replies matched in order. It is
opened lazily by the first publish and again by the first publish after it was lost; each new
connection goes to the next address in the list, so a dead nsqd is skipped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.internet.interfaces import IAddress, IProtocol, IStreamClientEndpoint
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


class Producer:
    """
    Publishes messages to one of C{nsqd_tcp_addresses} at a time.

    Each publish returns a Deferred that fires with C{None} once nsqd answered C{OK}, or fails
    with L{NSQResponseError} (its C{code} is nsqd's C{E_*} code, from the publish or from
    IDENTIFY), L{ConnectionClosedError} (the connection was lost first), the endpoint's error
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
        @param reactor: the reactor to connect with; C{None} means the global one, imported
            when the first connection is made.
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
        self._addresses = list(nsqd_tcp_addresses)
        self._reactor = reactor
        self._endpoint_factory = endpoint_factory if endpoint_factory is not None else self._tcp_endpoint
        self.options = ConnectionOptions(**options)
        self._next_address = 0
        self._connection: NSQConnection | None = None
        # The connection being set up, and the publishes waiting for it, in order.
        self._connecting: Deferred[Any] | None = None
        self._handshaking: NSQConnection | None = None
        self._waiters: list[Deferred[NSQConnection]] = []
        self._stopped = False

    @property
    def connection(self) -> NSQConnection | None:
        """The open, ready connection, if there is one."""
        connection = self._connection
        return connection if connection is not None and connection.ready else None

    def _tcp_endpoint(self, address: str) -> IStreamClientEndpoint:
        if self._reactor is None:
            # Imported here, never at import time, so that importing the client picks no reactor.
            from twisted.internet import reactor

            self._reactor = reactor
        return default_endpoint(self._reactor, address)

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
        connection = self.connection
        if connection is not None:
            return connection.send_command(name, *params, body=body).addCallback(_discard)
        waiter: Deferred[NSQConnection] = Deferred()
        self._waiters.append(waiter)
        if self._connecting is None:
            self._connect(len(self._addresses))
        return waiter.addCallback(lambda c: c.send_command(name, *params, body=body)).addCallback(_discard)

    # Connecting

    def _connect(self, tries_left: int) -> None:
        address = self._addresses[self._next_address % len(self._addresses)]
        self._next_address += 1
        connection = NSQConnection(self.options)
        connecting = self._endpoint_factory(address).connect(_ConnectionFactory(connection))
        # Set before the callbacks, which clear it, so that an endpoint that connects at once works.
        self._connecting = connecting
        connecting.addCallback(self._handshake)
        connecting.addCallbacks(self._connected, self._connect_failed, errbackArgs=(tries_left - 1,))

    def _handshake(self, protocol: IProtocol) -> Deferred[NSQConnection]:
        assert isinstance(protocol, NSQConnection)
        connection = protocol
        self._handshaking = connection
        return connection.when_ready().addCallback(lambda _: connection)

    def _connected(self, connection: NSQConnection) -> None:
        self._connecting = None
        self._handshaking = None
        self._connection = connection
        connection.when_closed().addCallback(self._lost, connection)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(connection)

    def _connect_failed(self, failure: Failure, tries_left: int) -> None:
        self._connecting = None
        self._handshaking = None
        if isinstance(failure.value, CancelledError) or self._stopped:
            return
        if tries_left > 0 and self._waiters:
            self._connect(tries_left)
            return
        error = failure.value
        if not isinstance(error, Exception) or isinstance(error, CancelledError):
            error = ConnectionClosedError(failure.getErrorMessage())
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(error)

    def _lost(self, _: None, connection: NSQConnection) -> None:
        if self._connection is connection:
            self._connection = None

    # Stopping

    def stop(self) -> Deferred[None]:
        """
        Stop for good: close the connection and fail every publish still waiting for a reply.
        Fires once the connection is closed.
        """
        self._stopped = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(ProducerStoppedError("the producer was stopped"))
        closing: list[Deferred[None]] = []
        for connection in (self._handshaking, self._connection):
            if connection is not None and not connection.closed and connection.transport is not None:
                closing.append(connection.when_closed())
                connection.transport.loseConnection()
        if self._connecting is not None:
            self._connecting.cancel()
        if not closing:
            return succeed(None)
        return DeferredList(closing).addCallback(lambda _: None)
