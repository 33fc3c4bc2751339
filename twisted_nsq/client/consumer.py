"""
Consuming a topic's channel from nsqd, as go-nsq's C{Consumer} does (spec 7.1).

nsqd are given directly (C{nsqd_tcp_addresses}) or discovered by polling nsqlookupd
(C{lookupd_http_addresses}), or both. Each nsqd gets one connection, kept up by a
C{ClientService} with a jittered exponential backoff. A connection is prepared by IDENTIFY (and
upgrades, and AUTH), then C{SUB}, then C{RDY}.

RDY follows go-nsq: C{max_in_flight} is spread evenly over the subscribed connections, at least 1
each, lowering the others before a new connection is raised, never more than C{max_in_flight} in
total, and sent only when a connection's value changes. With fewer C{max_in_flight} than
connections, a timer (every C{rdy_redistribute_interval}) takes RDY from idle connections and
hands RDY 1 to connections picked at random. A handler failure puts the consumer in exponential
backoff: RDY 0 everywhere, then RDY 1 on one connection to test the waters; successes step back.

Every message goes to the handler. Returning (a value, or a Deferred or coroutine that succeeds)
finishes it; raising requeues it with go-nsq's default delay (90 s times the attempts, at most
15 min). A message delivered more than C{max_attempts} times is finished without the handler and
passed to C{giving_up}.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_nsq.client.connection import ConnectionOptions, NSQConnection, NSQResponseError
from twisted_nsq.client.message import DEFAULT_REQUEUE_DELAY, MAX_REQUEUE_DELAY, Message
from twisted_nsq.client.producer import default_endpoint, parse_address
from twisted_nsq.wire.frames import DecodedMessage
from twisted_nsq.wire.names import is_valid_channel_name, is_valid_topic_name

__all__ = ["Consumer", "ConsumerOptions", "Handler", "lookup_url"]

#: What a handler may be: called with each message, returning anything, a Deferred or a coroutine.
Handler = Callable[[Message], object]

#: go-nsq retries a failed lookupd query on the next lookupd this many times in all.
_LOOKUPD_ATTEMPTS = 3
#: When a backoff timer fires with no connection to probe, go-nsq tries again after this long.
_NO_CONNECTION_RETRY = 1.0
_HOUR = 3600.0


def _between(low: float, high: float) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """An attrs validator: a number within [low, high], with an error naming the option."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{attribute.name} must be a number, not {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{attribute.name} must be between {low:g} and {high:g}, not {value!r}")

    return check


@attrs.frozen(kw_only=True)
class ConsumerOptions:
    """
    A consumer's own settings, with go-nsq's names and defaults (its C{Config}); durations in
    seconds. What goes into IDENTIFY (C{heartbeat_interval}, C{msg_timeout}, TLS, compression,
    C{auth_secret}, ...) is in L{ConnectionOptions}.
    """

    #: Messages in flight at once, over all connections.
    max_in_flight: int = attrs.field(default=1, validator=_between(1, 1 << 31))
    #: Deliveries after which a message is given up (0: never).
    max_attempts: int = attrs.field(default=5, validator=_between(0, 65535))
    lookupd_poll_interval: float = attrs.field(default=60.0, validator=_between(0.01, 300.0))
    #: The first periodic poll is delayed by C{random() * jitter * interval}.
    lookupd_poll_jitter: float = attrs.field(default=0.3, validator=_between(0.0, 1.0))
    #: A requeue without a delay waits this long times the attempts ...
    default_requeue_delay: float = attrs.field(default=DEFAULT_REQUEUE_DELAY, validator=_between(0.0, _HOUR))
    #: ... but at most this long.
    max_requeue_delay: float = attrs.field(default=MAX_REQUEUE_DELAY, validator=_between(0.0, _HOUR))
    #: Backoff step N lasts C{backoff_multiplier * 2**N} seconds ...
    backoff_multiplier: float = attrs.field(default=1.0, validator=_between(0.0, _HOUR))
    #: ... at most this long (go-nsq's 2 minutes).
    max_backoff_duration: float = attrs.field(default=120.0, validator=_between(0.0, _HOUR))
    #: How often RDY is moved between connections when they outnumber C{max_in_flight}.
    rdy_redistribute_interval: float = attrs.field(default=5.0, validator=_between(0.001, 5.0))
    #: A connection holding RDY that got no message for this long loses it at redistribution.
    low_rdy_idle_timeout: float = attrs.field(default=10.0, validator=_between(1.0, 300.0))
    #: A connection whose RDY is older than this loses it at redistribution.
    low_rdy_timeout: float = attrs.field(default=30.0, validator=_between(1.0, 300.0))
    #: How long L{Consumer.stop} waits for CLOSE_WAIT and running handlers.
    stop_timeout: float = attrs.field(default=30.0, validator=_between(0.0, _HOUR))


_CONSUMER_FIELDS = frozenset(field.name for field in attrs.fields(ConsumerOptions))


def rdy_counts(max_in_flight: int, connections: int, max_rdy_counts: Sequence[int]) -> list[int]:
    """
    The RDY each of C{connections} subscribed connections asks for: C{max_in_flight} split
    evenly, truncated, at least 1, and at most each connection's C{max_rdy_count}.
    """
    if connections == 0:
        return []
    per_connection = max(1, max_in_flight // connections)
    return [min(per_connection, limit) for limit in max_rdy_counts]


def lookup_url(address: str, topic: str) -> str:
    """
    The URL that asks lookupd C{address} for C{topic}'s producers: C{http://} is assumed without
    a scheme, C{/lookup} without a path, and other query parameters are kept.
    """
    if "://" not in address:
        address = "http://" + address
    parts = urlsplit(address)
    path = parts.path if parts.path not in ("", "/") else "/lookup"
    query = [
        (name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True) if name != "topic"
    ]
    query.append(("topic", topic))
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), ""))


def producer_addresses(reply: object) -> list[str]:
    """
    The C{broadcast_address:tcp_port} of each producer in a lookupd C{/lookup} JSON reply (the
    1.x format, or the older one wrapped in C{data}).
    """
    if isinstance(reply, dict) and "producers" not in reply and isinstance(reply.get("data"), dict):
        reply = reply["data"]
    if not isinstance(reply, dict) or not isinstance(reply.get("producers"), list):
        raise ValueError(f"not a lookup reply: {reply!r}")
    addresses = []
    for producer in reply["producers"]:
        try:
            host = str(producer["broadcast_address"])
            port = int(producer["tcp_port"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"bad producer in lookup reply: {producer!r}") from e
        if ":" in host:
            host = f"[{host}]"
        addresses.append(f"{host}:{port}")
    return addresses


def _default_http_client(reactor: Any) -> Any:
    """
    A treq client on C{reactor} whose connections are not kept: one query a minute gains nothing
    from a persistent connection, and one left open would outlive L{Consumer.stop}.
    """
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=False)  # type: ignore[no-untyped-call]
    return HTTPClient(Agent(reactor, pool=pool))  # type: ignore[no-untyped-call]


class _Link(Factory):
    """One nsqd: its connection service, and the connection it currently has."""

    def __init__(self, consumer: Consumer, address: str) -> None:
        self.consumer = consumer
        self.address = address
        self.service: ClientService | None = None
        self.connection: NSQConnection | None = None
        self.subscribed = False
        self.rdy = 0
        self.in_flight = 0
        self.last_message_time = 0.0
        self.last_rdy_time = 0.0
        self.on_response: Callable[[Message, bool, bool], object] | None = None

    def buildProtocol(self, addr: IAddress | None) -> NSQConnection:
        consumer = self.consumer
        connection = NSQConnection(consumer.connection_options, self._message, self._error)
        self.connection = connection
        self.subscribed = False
        self.rdy = 0
        self.in_flight = 0
        # go-nsq counts a new connection as having just received a message.
        self.last_message_time = consumer._now()
        # One callback per connection rather than one closure per message.
        self.on_response = lambda message, finished, backoff: consumer._responded(
            self, connection, finished, backoff
        )
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
            held_rdy = self.rdy > 0
            self.subscribed = False
            self.rdy = 0
            self.consumer._connection_closed(was_subscribed, held_rdy)

    def set_rdy(self, count: int, now: float) -> None:
        connection = self.connection
        if connection is None or not connection.ready:
            return
        if count > 0:
            self.last_rdy_time = now
        if count != self.rdy:
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
    Receives messages of C{topic} on C{channel} from each of C{nsqd_tcp_addresses} and from every
    nsqd that the lookupd at C{lookupd_http_addresses} list as producers of C{topic}.

    nsqd that disappear from lookupd are not disconnected (as in go-nsq); a lost connection is
    retried by its service whether it was given or discovered.
    """

    _log = Logger()

    def __init__(
        self,
        topic: str,
        channel: str,
        handler: Handler,
        nsqd_tcp_addresses: Sequence[str] = (),
        max_in_flight: int | None = None,
        *,
        lookupd_http_addresses: Sequence[str] = (),
        config: ConsumerOptions | None = None,
        giving_up: Callable[[Message], object] | None = None,
        reactor: Any = None,
        endpoint_factory: Callable[[str], IStreamClientEndpoint] | None = None,
        http_client: Any = None,
        retry_policy: Callable[[int], float] | None = None,
        rng: random.Random | None = None,
        **options: Any,
    ) -> None:
        """
        @param max_in_flight: overrides C{config.max_in_flight}.
        @param config: the consumer's settings; any L{ConsumerOptions} field may also be given as
            a keyword argument, overriding it.
        @param giving_up: called with each message given up (go-nsq's C{LogFailedMessage}).
        @param reactor: C{None} means the global reactor, imported by L{start}.
        @param http_client: what C{GET}s the lookupd: anything with treq's C{get(url, headers=)}
            returning a response with C{code} and C{json()}; by default a treq C{HTTPClient} on
            C{reactor} without persistent connections.
        @param retry_policy: seconds to wait before reconnect attempt N; a jittered exponential
            backoff (1 s up to 60 s) by default.
        @param rng: the randomness for the lookupd jitter and the choice of connections.
        @param options: L{ConsumerOptions} fields, then L{ConnectionOptions} fields.
        """
        if not is_valid_topic_name(topic):
            raise ValueError(f"invalid topic name {topic!r}")
        if not is_valid_channel_name(channel):
            raise ValueError(f"invalid channel name {channel!r}")
        for name, addresses in (
            ("nsqd_tcp_addresses", nsqd_tcp_addresses),
            ("lookupd_http_addresses", lookupd_http_addresses),
        ):
            if isinstance(addresses, str | bytes):
                raise TypeError(f"{name} must be a sequence of addresses, not a string")
        if not nsqd_tcp_addresses and not lookupd_http_addresses:
            raise ValueError("Consumer needs nsqd_tcp_addresses or lookupd_http_addresses")
        for address in nsqd_tcp_addresses:
            parse_address(address)
        consumer_options = {name: options.pop(name) for name in list(options) if name in _CONSUMER_FIELDS}
        if max_in_flight is not None:
            consumer_options["max_in_flight"] = max_in_flight
        base = config if config is not None else ConsumerOptions()
        self.config = attrs.evolve(base, **consumer_options)
        self.connection_options = ConnectionOptions(**options)
        if self.connection_options.heartbeat_interval == -1:
            raise ValueError("nsqd refuses SUB with heartbeats disabled")
        self.topic = topic
        self.channel = channel
        self.handler = handler
        self._giving_up = giving_up
        self._reactor = reactor
        self._endpoint_factory = endpoint_factory
        self._http_client = http_client
        self._retry_policy = retry_policy if retry_policy is not None else backoffPolicy(maxDelay=60.0)
        self._random = rng if rng is not None else random.Random()
        self._links: dict[str, _Link] = {}
        for address in nsqd_tcp_addresses:
            self._links.setdefault(address, _Link(self, address))
        self._lookupd = list(lookupd_http_addresses)
        self._lookupd_index = 0
        self._lookupd_jitter: IDelayedCall | None = None
        self._lookupd_loop: LoopingCall | None = None
        self._rdy_loop: LoopingCall | None = None
        self._need_redistribute = False
        self._backoff_counter = 0
        self._backoff_timer: IDelayedCall | None = None
        self._running = False
        self._drained: list[Deferred[None]] = []

    # Observers

    @property
    def max_in_flight(self) -> int:
        return self.config.max_in_flight

    @property
    def options(self) -> ConnectionOptions:
        """What each connection sends in IDENTIFY."""
        return self.connection_options

    @property
    def connections(self) -> list[NSQConnection]:
        """The connections currently subscribed."""
        return [link.connection for link in self._subscribed_links() if link.connection is not None]

    @property
    def in_flight(self) -> int:
        """Messages received and not yet finished or requeued."""
        return sum(link.in_flight for link in self._links.values())

    @property
    def nsqd_addresses(self) -> list[str]:
        """Every nsqd this consumer connects to, given or discovered."""
        return list(self._links)

    @property
    def backoff_level(self) -> int:
        """go-nsq's backoff counter: 0 when not backing off."""
        return self._backoff_counter

    def rdy_state(self) -> dict[str, int]:
        """The RDY last sent to each nsqd address."""
        return {address: link.rdy for address, link in self._links.items()}

    def is_starved(self) -> bool:
        """
        Whether some connection has messages in flight amounting to 85% of its last RDY: a
        batching consumer should process its batch now, as no more may come (go-nsq's
        C{IsStarved}).
        """
        for link in self._subscribed_links():
            if link.in_flight > 0 and link.in_flight >= 0.85 * link.rdy:
                return True
        return False

    # Running

    def _clock(self) -> IReactorTime:
        clock: IReactorTime = self._reactor
        return clock

    def _now(self) -> float:
        return self._clock().seconds()

    def start(self) -> None:
        """
        Connect to every given nsqd, start polling the lookupd (at once, then every
        C{lookupd_poll_interval} after a random jitter), and keep reconnecting until L{stop}.
        """
        if self._running:
            return
        self._running = True
        if self._reactor is None:
            # Imported here, never at import time, so that importing the client picks no reactor.
            from twisted.internet import reactor as global_reactor

            self._reactor = global_reactor
        clock = self._clock()
        for link in self._links.values():
            self._start_link(link)
        self._rdy_loop = LoopingCall(self._redistribute_rdy)
        self._rdy_loop.clock = clock
        self._rdy_loop.start(self.config.rdy_redistribute_interval, now=False)
        if self._lookupd:
            self._query_lookupd()
            interval = self.config.lookupd_poll_interval
            jitter = self._random.random() * self.config.lookupd_poll_jitter * interval
            self._lookupd_jitter = clock.callLater(jitter, self._start_lookupd_loop)

    def _start_link(self, link: _Link) -> None:
        if self._endpoint_factory is not None:
            endpoint = self._endpoint_factory(link.address)
        else:
            endpoint = default_endpoint(self._reactor, link.address)
        service = ClientService(endpoint, link, retryPolicy=self._retry_policy, clock=self._clock())
        link.service = service
        service.startService()

    def stop(self) -> Deferred[None]:
        """
        Stop polling, send CLS on every connection, wait (at most C{stop_timeout}) for CLOSE_WAIT
        and for the messages in flight to be answered, then close everything. Fires when all is
        closed.
        """
        if not self._running:
            return succeed(None)
        self._running = False
        for loop in (self._rdy_loop, self._lookupd_loop):
            if loop is not None and loop.running:
                loop.stop()
        self._rdy_loop = self._lookupd_loop = None
        for call in (self._lookupd_jitter, self._backoff_timer):
            if call is not None and call.active():
                call.cancel()
        self._lookupd_jitter = self._backoff_timer = None
        closing: list[Deferred[Any]] = []
        for link in self._links.values():
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
        timeout = self._clock().callLater(self.config.stop_timeout, finish, None)

        def stop_services(_: object) -> Deferred[Any]:
            if timeout.active():
                timeout.cancel()
            stopping = []
            for link in self._links.values():
                if link.service is not None:
                    stopping.append(link.service.stopService())
                    link.service = None
            return DeferredList(stopping)

        return done.addCallback(stop_services).addCallback(lambda _: None)

    def _wait_drained(self) -> Deferred[None]:
        if not self.in_flight:
            return succeed(None)
        drained: Deferred[None] = Deferred()
        self._drained.append(drained)
        return drained

    # Lookupd

    def _start_lookupd_loop(self) -> None:
        self._lookupd_jitter = None
        loop = self._lookupd_loop = LoopingCall(self._query_lookupd)
        loop.clock = self._clock()
        loop.start(self.config.lookupd_poll_interval, now=False)

    def _query_lookupd(self, attempt: int = 1) -> None:
        """Ask the next lookupd (round-robin) for the producers; on error, the next one."""
        if not self._running:
            return
        address = self._lookupd[self._lookupd_index % len(self._lookupd)]
        self._lookupd_index = (self._lookupd_index + 1) % len(self._lookupd)
        url = lookup_url(address, self.topic)
        client = self._http_client
        if client is None:
            client = self._http_client = _default_http_client(self._reactor)
        try:
            requested: Deferred[Any] = client.get(
                url, headers={"Accept": ["application/vnd.nsq; version=1.0"]}
            )
        except Exception:
            requested = fail()
        requested.addCallback(self._lookup_reply, url)
        requested.addCallback(producer_addresses)
        requested.addCallbacks(self._discovered, self._lookup_failed, errbackArgs=(url, attempt))

    def _lookup_reply(self, response: Any, url: str) -> Deferred[Any]:
        if response.code != 200:
            raise ValueError(f"HTTP {response.code}")
        parsed: Deferred[Any] = response.json()
        return parsed

    def _discovered(self, addresses: list[str]) -> None:
        if not self._running:
            return
        for address in addresses:
            if address not in self._links:
                self._log.info("discovered nsqd {address}", address=address)
                link = self._links[address] = _Link(self, address)
                self._start_link(link)

    def _lookup_failed(self, failure: Failure, url: str, attempt: int) -> None:
        self._log.warn("lookupd query {url} failed: {error}", url=url, error=failure.getErrorMessage())
        if attempt < _LOOKUPD_ATTEMPTS and len(self._lookupd) > 0:
            self._query_lookupd(attempt + 1)

    def _connection_closed(self, was_subscribed: bool, held_rdy: bool) -> None:
        if held_rdy:
            self._need_redistribute = True
        if was_subscribed:
            self._update_rdy()
            if self._lookupd:
                # As go-nsq: a lost nsqd may have moved, so ask lookupd at once.
                self._query_lookupd()

    # RDY

    def _subscribed_links(self) -> list[_Link]:
        return [link for link in self._links.values() if link.subscribed]

    def _total_rdy(self) -> int:
        return sum(link.rdy for link in self._links.values())

    def _set_rdy(self, link: _Link, count: int) -> bool:
        """go-nsq's C{updateRDY}: truncated so the total never exceeds C{max_in_flight}."""
        count = min(count, link.max_rdy_count())
        possible = self.config.max_in_flight - self._total_rdy() + link.rdy
        if 0 < possible < count:
            count = possible
        if possible <= 0 and count > 0:
            return False
        link.set_rdy(count, self._now())
        return True

    def _update_rdy(self) -> None:
        """Give every subscribed connection its even share, unless backing off."""
        if not self._running or self._backoff_counter > 0 or self._backoff_timer is not None:
            return
        links = self._subscribed_links()
        counts = rdy_counts(self.config.max_in_flight, len(links), [link.max_rdy_count() for link in links])
        # Lower first, so that the total never overshoots while a new connection is raised.
        for link, count in zip(links, counts, strict=True):
            if count < link.rdy:
                self._set_rdy(link, count)
        for link, count in zip(links, counts, strict=True):
            if count > link.rdy:
                self._set_rdy(link, count)

    def _redistribute_rdy(self) -> None:
        """
        go-nsq's C{redistributeRDY}: when connections outnumber C{max_in_flight} (or during
        backoff), take RDY from idle connections and hand out what is left as RDY 1 at random.
        """
        if self._backoff_timer is not None:
            return
        links = self._subscribed_links()
        if len(links) > self.config.max_in_flight or (self._backoff_counter > 0 and len(links) > 1):
            self._need_redistribute = True
        if not self._need_redistribute:
            return
        self._need_redistribute = False
        now = self._now()
        for link in links:
            if link.rdy > 0 and (
                now - link.last_message_time > self.config.low_rdy_idle_timeout
                or now - link.last_rdy_time > self.config.low_rdy_timeout
            ):
                self._set_rdy(link, 0)
        limit = 1 if self._backoff_counter > 0 else self.config.max_in_flight
        available = limit - self._total_rdy()
        candidates = list(links)
        while candidates and available > 0:
            available -= 1
            link = candidates.pop(self._random.randrange(len(candidates)))
            self._set_rdy(link, 1)

    # Backoff

    def _backoff_duration(self, level: int) -> float:
        return float(self.config.backoff_multiplier * (2**level))

    def _signal(self, finished: bool, backoff: bool) -> None:
        """
        go-nsq's C{startStopContinueBackoff}: a finish steps the backoff down, a requeue with
        backoff steps it up, and either (or a requeue without backoff) restarts the backoff
        timer while the level is above 0. Ignored while a backoff timer runs.
        """
        if self._backoff_timer is not None or not self._running:
            return
        updated = False
        if finished:
            if self._backoff_counter > 0:
                self._backoff_counter -= 1
                updated = True
        elif backoff:
            if self._backoff_duration(self._backoff_counter + 1) <= self.config.max_backoff_duration:
                self._backoff_counter += 1
                updated = True
        if self._backoff_counter == 0:
            if updated:
                self._update_rdy()
            return
        duration = min(self._backoff_duration(self._backoff_counter), self.config.max_backoff_duration)
        self._enter_backoff(duration)

    def _enter_backoff(self, duration: float) -> None:
        self._log.info(
            "backing off for {duration} s (level {backoff_level})",
            duration=duration,
            backoff_level=self._backoff_counter,
        )
        self._backoff_timer = self._clock().callLater(duration, self._probe)
        for link in self._subscribed_links():
            self._set_rdy(link, 0)

    def _probe(self) -> None:
        """The backoff delay is over: let one message through on one connection picked at random."""
        self._backoff_timer = None
        links = self._subscribed_links()
        if not links:
            self._enter_backoff(_NO_CONNECTION_RETRY)
            return
        link = links[self._random.randrange(len(links))]
        if not self._set_rdy(link, 1):
            self._enter_backoff(_NO_CONNECTION_RETRY)

    # Messages

    def _received(self, link: _Link, connection: NSQConnection, decoded: DecodedMessage) -> None:
        link.last_message_time = self._now()
        config = self.config
        message = Message.from_decoded(
            decoded,
            connection,
            default_requeue_delay=config.default_requeue_delay,
            max_requeue_delay=config.max_requeue_delay,
            on_response=link.on_response,
        )
        if config.max_attempts and message.attempts > config.max_attempts:
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

    def _responded(self, link: _Link, connection: NSQConnection, finished: bool, backoff: bool) -> None:
        if link.connection is connection and link.in_flight:
            link.in_flight -= 1
        self._signal(finished, backoff)
        if self._drained and not self.in_flight:
            drained, self._drained = self._drained, []
            for waiter in drained:
                waiter.callback(None)
