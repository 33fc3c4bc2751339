"""
Consuming a topic's channel from a fixed list of nsqd, as go-nsq's C{Consumer} does (spec 7.1).

Each nsqd gets one connection, kept up by a C{ClientService} with a jittered exponential backoff.
A connection is prepared by IDENTIFY (and upgrades), then C{SUB}, then C{RDY}: C{max_in_flight}
is spread evenly over the subscribed connections, at least 1 each, lowering the others before a
new connection is raised, and RDY is only sent when a connection's value changes.

Every message goes to the handler. Returning (a value, or a Deferred or coroutine that succeeds)
finishes it; raising requeues it with go-nsq's default delay (90 s times the attempts, at most
15 min). A message delivered more than C{max_attempts} times is finished without the handler and
passed to C{giving_up}.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IAddress, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_nsq.client.connection import ConnectionOptions, NSQConnection, NSQResponseError
from twisted_nsq.client.message import DEFAULT_REQUEUE_DELAY, MAX_REQUEUE_DELAY, Message
from twisted_nsq.client.producer import default_endpoint, parse_address
from twisted_nsq.wire.frames import DecodedMessage
from twisted_nsq.wire.names import is_valid_channel_name, is_valid_topic_name

__all__ = ["Consumer", "Handler"]

#: What a handler may be: called with each message, returning anything, a Deferred or a coroutine.
Handler = Callable[[Message], object]


def rdy_counts(max_in_flight: int, connections: int, max_rdy_counts: Sequence[int]) -> list[int]:
    """
    The RDY each of C{connections} subscribed connections gets: C{max_in_flight} split evenly,
    truncated, at least 1, and at most each connection's C{max_rdy_count}.
    """
    if connections == 0:
        return []
    per_connection = max(1, max_in_flight // connections)
    return [min(per_connection, limit) for limit in max_rdy_counts]


class _Link(Factory):
    """One nsqd: its connection service, and the connection it currently has."""

    def __init__(self, consumer: Consumer, address: str) -> None:
        self.consumer = consumer
        self.address = address
        self.connection: NSQConnection | None = None
        self.subscribed = False
        self.rdy = 0
        self.in_flight = 0
        self.on_response: Callable[[Message, bool, bool], object] | None = None

    def buildProtocol(self, addr: IAddress | None) -> NSQConnection:
        consumer = self.consumer
        connection = NSQConnection(consumer.options, self._message, self._error)
        self.connection = connection
        self.subscribed = False
        self.rdy = 0
        self.in_flight = 0
        # One callback per connection rather than one closure per message.
        self.on_response = lambda message, finished, backoff: consumer._responded(self, connection)
        connection.when_closed().addCallback(self._closed, connection)
        # The handshake is driven from here rather than by ClientService's prepareConnection, so
        # that stopping mid-handshake closes the connection like stopping at any other time.
        connection.when_ready().addCallback(self._subscribe, connection).addCallbacks(
            self._subscribed, self._not_subscribed, callbackArgs=(connection,), errbackArgs=(connection,)
        )
        return connection

    def _subscribe(self, _: None, connection: NSQConnection) -> Deferred[bytes]:
        return connection.subscribe(self.consumer.topic, self.consumer.channel)

    def _subscribed(self, _: bytes, connection: NSQConnection) -> None:
        if connection.closed or connection is not self.connection:
            return
        self.subscribed = True
        self.consumer._update_rdy()

    def _not_subscribed(self, failure: Failure, connection: NSQConnection) -> None:
        # The connection is closed by now (by nsqd or by us); its service reconnects.
        self.consumer._log.warn(
            "could not subscribe on nsqd {address}: {error}",
            address=self.address,
            error=failure.getErrorMessage(),
        )

    def _closed(self, _: None, connection: NSQConnection) -> None:
        if self.connection is connection:
            self.connection = None
            was_subscribed = self.subscribed
            self.subscribed = False
            self.rdy = 0
            if was_subscribed:
                self.consumer._update_rdy()

    def set_rdy(self, count: int) -> None:
        connection = self.connection
        if count != self.rdy and connection is not None and connection.ready:
            self.rdy = count
            connection.rdy(count)

    def max_rdy_count(self) -> int:
        connection = self.connection
        if connection is None:
            return 0
        return int(connection.identify_response.get("max_rdy_count", 2500))

    def _message(self, connection: NSQConnection, decoded: DecodedMessage) -> None:
        self.in_flight += 1
        self.consumer._received(self, connection, decoded)

    def _error(self, connection: NSQConnection, error: NSQResponseError) -> None:
        self.consumer._log.warn("nsqd {address} error: {error}", address=self.address, error=str(error))


class Consumer:
    """
    Receives messages of C{topic} on C{channel} from each of C{nsqd_tcp_addresses}.

    Lookupd discovery, backoff on handler failures and the periodic RDY redistribution of go-nsq
    are not implemented: with more nsqd than C{max_in_flight} each connection still gets RDY 1.
    """

    _log = Logger()

    def __init__(
        self,
        topic: str,
        channel: str,
        handler: Handler,
        nsqd_tcp_addresses: Sequence[str] = (),
        max_in_flight: int = 1,
        *,
        max_attempts: int = 5,
        giving_up: Callable[[Message], object] | None = None,
        default_requeue_delay: float = DEFAULT_REQUEUE_DELAY,
        max_requeue_delay: float = MAX_REQUEUE_DELAY,
        stop_timeout: float = 30.0,
        reactor: Any = None,
        endpoint_factory: Callable[[str], IStreamClientEndpoint] | None = None,
        retry_policy: Callable[[int], float] | None = None,
        **options: Any,
    ) -> None:
        """
        @param max_attempts: deliveries after which a message is given up (0: never).
        @param giving_up: called with each message given up (go-nsq's C{LogFailedMessage}).
        @param stop_timeout: how long L{stop} waits for CLOSE_WAIT and running handlers.
        @param reactor: C{None} means the global reactor, imported by L{start}.
        @param retry_policy: seconds to wait before reconnect attempt N; a jittered exponential
            backoff (1 s up to 60 s) by default.
        @param options: L{ConnectionOptions} fields.
        """
        if not is_valid_topic_name(topic):
            raise ValueError(f"invalid topic name {topic!r}")
        if not is_valid_channel_name(channel):
            raise ValueError(f"invalid channel name {channel!r}")
        if isinstance(nsqd_tcp_addresses, str):
            raise TypeError("nsqd_tcp_addresses must be a sequence of host:port strings")
        if not nsqd_tcp_addresses:
            raise ValueError("Consumer needs at least one nsqd address (lookupd discovery is not supported)")
        for address in nsqd_tcp_addresses:
            parse_address(address)
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, not {max_in_flight}")
        if max_attempts < 0:
            raise ValueError(f"max_attempts must be >= 0, not {max_attempts}")
        self.topic = topic
        self.channel = channel
        self.handler = handler
        self.max_in_flight = max_in_flight
        self.max_attempts = max_attempts
        self.options = ConnectionOptions(**options)
        if self.options.heartbeat_interval == -1:
            raise ValueError("nsqd refuses SUB with heartbeats disabled")
        self._giving_up = giving_up
        self._default_requeue_delay = default_requeue_delay
        self._max_requeue_delay = max_requeue_delay
        self._stop_timeout = stop_timeout
        self._reactor = reactor
        self._endpoint_factory = endpoint_factory
        self._retry_policy = retry_policy if retry_policy is not None else backoffPolicy(maxDelay=60.0)
        self._links = [_Link(self, address) for address in nsqd_tcp_addresses]
        self._services: list[ClientService] = []
        self._running = False
        self._drained: list[Deferred[None]] = []

    def _wait_drained(self) -> Deferred[None]:
        if not self.in_flight:
            return succeed(None)
        drained: Deferred[None] = Deferred()
        self._drained.append(drained)
        return drained

    @property
    def connections(self) -> list[NSQConnection]:
        """The connections currently subscribed."""
        return [link.connection for link in self._links if link.subscribed and link.connection is not None]

    @property
    def in_flight(self) -> int:
        """Messages received and not yet finished or requeued."""
        return sum(link.in_flight for link in self._links)

    def rdy_state(self) -> dict[str, int]:
        """The RDY last sent to each nsqd address."""
        return {link.address: link.rdy for link in self._links}

    def start(self) -> None:
        """Connect to every nsqd (and keep reconnecting until L{stop})."""
        if self._running:
            return
        self._running = True
        reactor = self._reactor
        if reactor is None:
            # Imported here, never at import time, so that importing the client picks no reactor.
            from twisted.internet import reactor as global_reactor

            reactor = self._reactor = global_reactor
        for link in self._links:
            if self._endpoint_factory is not None:
                endpoint = self._endpoint_factory(link.address)
            else:
                endpoint = default_endpoint(reactor, link.address)
            clock: IReactorTime = reactor
            service = ClientService(endpoint, link, retryPolicy=self._retry_policy, clock=clock)
            self._services.append(service)
            service.startService()

    def stop(self) -> Deferred[None]:
        """
        Send CLS on every connection, wait (at most C{stop_timeout}) for CLOSE_WAIT and for the
        messages in flight to be answered, then close everything. Fires when all is closed.
        """
        if not self._running:
            return succeed(None)
        self._running = False
        closing: list[Deferred[Any]] = []
        for link in self._links:
            connection = link.connection
            if link.subscribed and connection is not None and connection.ready:
                closing.append(connection.start_close())
        # After CLOSE_WAIT nsqd sends nothing more; what is in flight can still be answered.
        waiting: Deferred[Any] = DeferredList(closing, consumeErrors=True)
        waiting.addCallback(lambda _: self._wait_drained())
        done: Deferred[None] = Deferred()

        def finish(_: object) -> None:
            if not done.called:
                done.callback(None)

        waiting.addBoth(finish)
        clock: IReactorTime = self._reactor
        timeout = clock.callLater(self._stop_timeout, finish, None)

        def stop_services(_: object) -> Deferred[Any]:
            if timeout.active():
                timeout.cancel()
            services, self._services = self._services, []
            return DeferredList([service.stopService() for service in services])

        return done.addCallback(stop_services).addCallback(lambda _: None)

    # RDY

    def _update_rdy(self) -> None:
        if not self._running:
            return
        links = [link for link in self._links if link.subscribed]
        counts = rdy_counts(self.max_in_flight, len(links), [link.max_rdy_count() for link in links])
        # Lower first, so that the total never overshoots while a new connection is raised.
        for link, count in zip(links, counts, strict=True):
            if count < link.rdy:
                link.set_rdy(count)
        for link, count in zip(links, counts, strict=True):
            if count > link.rdy:
                link.set_rdy(count)

    # Messages

    def _received(self, link: _Link, connection: NSQConnection, decoded: DecodedMessage) -> None:
        message = Message.from_decoded(
            decoded,
            connection,
            default_requeue_delay=self._default_requeue_delay,
            max_requeue_delay=self._max_requeue_delay,
            on_response=link.on_response,
        )
        if self.max_attempts and message.attempts > self.max_attempts:
            self._log.warn(
                "giving up on message {id} after {attempts} attempts",
                id=message.id,
                attempts=message.attempts,
            )
            if self._giving_up is not None:
                try:
                    self._giving_up(message)
                except Exception:
                    self._log.failure("giving_up hook failed")
            message.finish()
            return
        try:
            result = self.handler(message)
        except Exception:
            self._log.failure("handler failed for message {id}", id=message.id)
            if not message.responded:
                message.requeue(None, backoff=True)
            return
        if inspect.iscoroutine(result):
            coroutine: Coroutine[Any, Any, object] = result
            result = Deferred.fromCoroutine(coroutine)
        if isinstance(result, Deferred):
            result.addCallbacks(
                self._handler_done, self._handler_failed, callbackArgs=(message,), errbackArgs=(message,)
            )
        elif not message.responded:
            message.finish()

    def _handler_done(self, result: object, message: Message) -> None:
        if not message.responded:
            message.finish()

    def _handler_failed(self, failure: Failure, message: Message) -> None:
        self._log.failure("handler failed for message {id}", failure, id=message.id)
        if not message.responded:
            message.requeue(None, backoff=True)

    def _responded(self, link: _Link, connection: NSQConnection) -> None:
        if link.connection is connection and link.in_flight:
            link.in_flight -= 1
        if self._drained and not self.in_flight:
            drained, self._drained = self._drained, []
            for waiter in drained:
                waiter.callback(None)
