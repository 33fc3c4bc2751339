"""
nsqd's side of cluster discovery: one link per C{--lookupd-tcp-address}, as Go nsqd 1.3.0 keeps
them (spec 2.10), and the channel pre-creation a new topic asks nsqlookupd for (spec 0 item 12).

Each link is a L{ClientService} (1 s connect timeout, jittered backoff) whose connection, every
time it is made, sends the magic, IDENTIFY (broadcast address and ports) and then a REGISTER for
every channel, or for the topic itself when it has none. From then on every topic and channel
created or deleted is sent as REGISTER or UNREGISTER, and a PING goes every 15 s. Commands are
pipelined and their replies read in order; each reply must come within 1 s (Go's read deadline):
a missing, oversized or C{E_...} reply closes the connection, and the reconnect registers
everything again. A command that finds a link down is dropped, since the reconnect registers the
current state anyway (Go reconnects on the next command instead, lazily).

Channel pre-creation: when a topic is created (not when nsqd.dat is loaded at start-up, which
happens before this service starts), every lookupd that has identified is asked
C{GET http://<broadcast_address>:<http_port>/channels?topic=<t>} and the non-ephemeral channels
listed are created. Go blocks the publish that created the topic until the answers arrive; here
the publisher gets its OK at once and the topic's fan-out is held instead (L{Topic.hold}), so
messages published meanwhile wait at the topic and reach the pre-created channels too. The hold
ends on the answers, an error, or the request timeout.

At exit Go stops its lookup loop without sending UNREGISTER; lookupd drops the registrations
when the connection closes. L{LookupService.stopService} does the same.
"""

from __future__ import annotations

import json
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode

import treq
from treq.client import HTTPClient
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred, DeferredList, TimeoutError
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from zope.interface import implementer

from twisted_nsq._version import NSQ_VERSION
from twisted_nsq.nsqd.nsqd import INSQDObserver
from twisted_nsq.wire.lookup import (
    MAGIC_V1,
    PING,
    LookupdInfo,
    LookupReplyError,
    ReplyParser,
    encode_identify,
    encode_register,
    encode_unregister,
    identify_body,
    is_error_reply,
    parse_identify_reply,
)
from twisted_nsq.wire.names import is_ephemeral, is_valid_channel_name

if TYPE_CHECKING:
    from twisted_nsq.nsqd.channel import Channel
    from twisted_nsq.nsqd.nsqd import NSQD
    from twisted_nsq.nsqd.topic import Topic

log = Logger()

#: Seconds between PINGs on each link (Go's ticker).
PING_INTERVAL = 15.0
#: Seconds allowed for each reply (Go's read deadline per command).
COMMAND_TIMEOUT = 1.0
#: Seconds allowed to connect (Go's dial timeout).
CONNECT_TIMEOUT = 1.0

#: Builds the endpoint that reaches C{host}, C{port}.
EndpointFactory = Callable[[str, int], IStreamClientEndpoint]
#: Seconds to wait before the given reconnection attempt (L{ClientService}'s C{retryPolicy}).
RetryPolicy = Callable[[int], float]
ReplyHandler = Callable[[bytes], None]

# What Go's HTTP client asks nsqlookupd for: the V1 reply format.
_ACCEPT_V1 = b"application/vnd.nsq; version=1.0"


class LookupdQueryError(Exception):
    """nsqlookupd's C{/channels} could not be read."""


def split_address(address: str) -> tuple[str, int]:
    """
    A C{--lookupd-tcp-address} as Go's C{net.SplitHostPort} reads it: C{host:port} or
    C{[v6]:port}; an empty host is this machine.

    @raise ValueError: no port, or a port that is not a number in [1, 65535].
    """
    if address.startswith("["):
        end = address.find("]")
        if end < 0 or address[end + 1 : end + 2] != ":":
            raise ValueError(f"invalid address {address!r}")
        host, port_text = address[1:end], address[end + 2 :]
    else:
        host, colon, port_text = address.rpartition(":")
        if not colon or ":" in host:
            raise ValueError(f"invalid address {address!r}: missing port")
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"invalid port {port_text!r} in address {address!r}")
    return host or "127.0.0.1", int(port_text)


def default_endpoint_factory(reactor: Any) -> EndpointFactory:
    """TCP endpoints with Go's 1 s connect timeout: IP literals directly, names through the resolver."""

    def connect(host: str, port: int) -> IStreamClientEndpoint:
        if isIPAddress(host):
            return TCP4ClientEndpoint(reactor, host, port, timeout=CONNECT_TIMEOUT)
        if isIPv6Address(host):
            return TCP6ClientEndpoint(reactor, host, port, timeout=CONNECT_TIMEOUT)  # type: ignore[no-untyped-call]
        return HostnameEndpoint(reactor, host, port, timeout=CONNECT_TIMEOUT)

    return connect


def default_retry_policy() -> RetryPolicy:
    """Exponential backoff with jitter, from 1 s up to 15 s (Go retries at the next 15 s PING)."""
    return backoffPolicy(initialDelay=1.0, maxDelay=PING_INTERVAL)


class LookupProtocol(Protocol):
    """
    One connection to nsqlookupd: writes commands, matches replies to them in order, enforces the
    reply deadline and sends the PINGs. What to send on connecting is the L{LookupPeer}'s call.
    """

    def __init__(self, peer: LookupPeer) -> None:
        self.peer = peer
        self.open = False
        self._parser = ReplyParser(peer.max_reply_size)
        self._waiting: deque[tuple[str, ReplyHandler | None]] = deque()
        self._deadline: IDelayedCall | None = None
        self._pinger: LoopingCall | None = None

    def connectionMade(self) -> None:
        self.open = True
        assert self.transport is not None
        self.transport.write(MAGIC_V1)
        pinger = self._pinger = LoopingCall(self.ping)
        pinger.clock = self.peer.clock
        pinger.start(PING_INTERVAL, now=False)
        self.peer.connection_made(self)

    def send(self, data: bytes, handler: ReplyHandler | None = None, label: str | None = None) -> None:
        """Write one command; its reply goes to C{handler} (C{label} names it in the log)."""
        if not self.open:
            return
        assert self.transport is not None
        self.transport.write(data)
        if label is None:
            label = data[:-1].decode("utf-8", "replace")
        self._waiting.append((label, handler))
        if self._deadline is None:
            self._deadline = self.peer.clock.callLater(COMMAND_TIMEOUT, self._timed_out)

    def ping(self) -> None:
        log.debug("LOOKUPD({peer}): sending heartbeat", peer=self.peer.address)
        self.send(PING)

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except LookupReplyError as e:
            label = self._waiting[0][0] if self._waiting else "reply"
            self.fail(f"{label} - {e}")
            return
        for reply in replies:
            if not self.open:
                return
            if not self._waiting:
                self.fail(f"unexpected reply {reply[:200]!r}")
                return
            label, handler = self._waiting.popleft()
            deadline = self._deadline
            if deadline is not None:
                if self._waiting:
                    deadline.reset(COMMAND_TIMEOUT)
                else:
                    deadline.cancel()
                    self._deadline = None
            if is_error_reply(reply):
                self.fail(f"{label} - {reply.decode('utf-8', 'replace')}")
                return
            if handler is not None:
                handler(reply)

    def _timed_out(self) -> None:
        self._deadline = None
        label = self._waiting[0][0] if self._waiting else "reply"
        self.fail(f"{label} - i/o timeout")

    def fail(self, reason: str) -> None:
        """Log why, and close the connection; the L{ClientService} reconnects."""
        log.error("LOOKUPD({peer}): {reason}", peer=self.peer.address, reason=reason)
        self.close()

    def close(self) -> None:
        """Drop the connection at once (what is unsent is of no use to a reconnect)."""
        if not self.open:
            return
        self._stop()
        cast(ITCPTransport, self.transport).abortConnection()

    def _stop(self) -> None:
        self.open = False
        self._waiting.clear()
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None
        if self._pinger is not None:
            if self._pinger.running:
                self._pinger.stop()
            self._pinger = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop()
        self.peer.connection_lost(self, reason)


class _LookupFactory(Factory):
    noisy = False

    def __init__(self, peer: LookupPeer) -> None:
        self.peer = peer

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        return LookupProtocol(self.peer)


@implementer(IStreamClientEndpoint)
class _LoggedEndpoint:
    """An endpoint that logs each connection attempt and its failure as nsqd does."""

    def __init__(self, address: str, endpoint: IStreamClientEndpoint) -> None:
        self._address = address
        self._endpoint = endpoint

    def __repr__(self) -> str:
        return f"<lookupd {self._address}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        log.info("LOOKUP connecting to {peer}", peer=self._address)
        attempt: Deferred[IProtocol] = self._endpoint.connect(protocolFactory)

        def failed(failure: Failure) -> Failure:
            if not isinstance(failure.value, CancelledError):
                log.error(
                    "LOOKUPD({peer}): connect failed - {error}",
                    peer=self._address,
                    error=failure.getErrorMessage(),
                )
            return failure

        return attempt.addErrback(failed)


class LookupPeer:
    """
    One configured nsqlookupd: its L{ClientService}, the connection in use (if any), and what
    lookupd last said about itself (kept across reconnects, as Go keeps it).
    """

    def __init__(
        self,
        owner: LookupService,
        address: str,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        retry_policy: RetryPolicy,
        max_reply_size: int,
    ) -> None:
        self.owner = owner
        self.address = address
        self.clock = clock
        self.max_reply_size = max_reply_size
        self.info: LookupdInfo | None = None
        self.protocol: LookupProtocol | None = None
        self.service = ClientService(
            _LoggedEndpoint(address, endpoint), _LookupFactory(self), retryPolicy=retry_policy, clock=clock
        )

    def __repr__(self) -> str:
        return f"<LookupPeer {self.address}>"

    @property
    def connected(self) -> bool:
        return self.protocol is not None and self.protocol.open

    def send(self, data: bytes) -> bool:
        """Send a command if connected; whether it was sent."""
        protocol = self.protocol
        if protocol is None or not protocol.open:
            return False
        protocol.send(data)
        return True

    def connection_made(self, protocol: LookupProtocol) -> None:
        """Identify, then register every topic and channel (Go's connect callback)."""
        self.protocol = protocol

        def identified(reply: bytes) -> None:
            try:
                info = parse_identify_reply(reply)
            except LookupReplyError as e:
                protocol.fail(f"IDENTIFY - {e}")
                return
            self.info = info
            log.info("LOOKUPD({peer}): peer info {info}", peer=self.address, info=info)
            if not info.broadcast_address:
                log.error("LOOKUPD({peer}): no broadcast address", peer=self.address)

        protocol.send(encode_identify(self.owner.identify_body()), identified, "IDENTIFY")
        for command in self.owner.registrations():
            if not protocol.open:
                return
            log.info("LOOKUPD({peer}): {command}", peer=self.address, command=command[:-1].decode("utf-8"))
            protocol.send(command)

    def connection_lost(self, protocol: LookupProtocol, reason: Failure) -> None:
        if self.protocol is protocol:
            self.protocol = None
            if self.service.running:
                log.info(
                    "LOOKUPD({peer}): connection closed - {reason}",
                    peer=self.address,
                    reason=reason.getErrorMessage(),
                )


@implementer(INSQDObserver)
class LookupService(MultiService):
    """
    nsqd's links to every configured nsqlookupd (one L{LookupPeer} each, a child service), and
    the channel pre-creation for new topics. See the module docstring.

    While it runs it observes the core (REGISTER/UNREGISTER on every change) and receives
    C{nsqd.lookupd_addresses_changed}, so C{PUT /config/nsqlookupd_tcp_addresses} takes effect.
    """

    def __init__(
        self,
        nsqd: NSQD,
        clock: IReactorTime,
        endpoint_factory: EndpointFactory,
        http_client: HTTPClient,
        hostname: str,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        """
        @param endpoint_factory: the endpoint that reaches a lookupd's C{host, port}.
        @param http_client: asks lookupds for a new topic's channels (C{--http-client-*-timeout}
            apply: the connect timeout is the client's own, the request timeout is enforced here).
        @param hostname: the OS hostname, sent in IDENTIFY.
        @param retry_policy: reconnection delays; by default L{default_retry_policy}.
        """
        super().__init__()  # type: ignore[no-untyped-call]
        self.nsqd = nsqd
        self.clock = clock
        self.hostname = hostname
        self.peers: dict[str, LookupPeer] = {}
        self._endpoint_factory = endpoint_factory
        self._http = http_client
        self._retry_policy = retry_policy if retry_policy is not None else default_retry_policy()
        self._queries: set[Deferred[None]] = set()
        self._closing = False

    # -- lifecycle --------------------------------------------------------------------------

    def startService(self) -> None:
        self._closing = False
        if self not in self.nsqd.observers:
            self.nsqd.observers.append(self)
        self.nsqd.on_lookupd_addresses = self.set_addresses
        self.set_addresses(self.nsqd.options.lookupd_tcp_addresses)
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> Deferred[None]:
        """Stop observing, end pending channel queries, close every link (no UNREGISTER: Go sends none)."""
        if self in self.nsqd.observers:
            self.nsqd.observers.remove(self)
        if self.nsqd.on_lookupd_addresses == self.set_addresses:
            self.nsqd.on_lookupd_addresses = None
        self._closing = True
        for query in list(self._queries):
            query.cancel()
        log.info("LOOKUP: closing")
        stopped: Deferred[object] = super().stopService()  # type: ignore[no-untyped-call]
        return stopped.addCallback(lambda _: None)

    def set_addresses(self, addresses: Sequence[str]) -> None:
        """
        Make the links match C{addresses}: drop the peers not listed (closing their connections),
        add the new ones, keep the rest as they are.
        """
        wanted = list(dict.fromkeys(addresses))
        for address in list(self.peers):
            if address not in wanted:
                log.info("LOOKUP({peer}): removing peer", peer=address)
                peer = self.peers.pop(address)
                peer.service.disownServiceParent()  # type: ignore[no-untyped-call]
        for address in wanted:
            if address in self.peers:
                continue
            try:
                host, port = split_address(address)
            except ValueError as e:
                log.error("LOOKUP({peer}): {error}", peer=address, error=e)
                continue
            log.info("LOOKUP({peer}): adding peer", peer=address)
            peer = LookupPeer(
                self,
                address,
                self._endpoint_factory(host, port),
                self.clock,
                self._retry_policy,
                self.nsqd.options.max_body_size,
            )
            self.peers[address] = peer
            peer.service.setServiceParent(self)  # type: ignore[no-untyped-call]

    # -- what nsqd tells lookupd ---------------------------------------------------------------

    def identify_body(self) -> bytes:
        """IDENTIFY's JSON: the broadcast address and ports (the bound ports unless overridden)."""
        options = self.nsqd.options
        return identify_body(
            broadcast_address=options.broadcast_address,
            hostname=self.hostname,
            http_port=options.broadcast_http_port or max(self.nsqd.http_port, 0),
            tcp_port=options.broadcast_tcp_port or max(self.nsqd.tcp_port, 0),
            version=NSQ_VERSION,
        )

    def registrations(self) -> list[bytes]:
        """REGISTER for every channel, or for the topic itself when it has none (ephemeral ones too)."""
        commands: list[bytes] = []
        for topic in list(self.nsqd.topics.values()):
            if topic.channels:
                commands.extend(encode_register(topic.name, name) for name in topic.channels)
            else:
                commands.append(encode_register(topic.name))
        return commands

    def _broadcast(self, branch: str, command: bytes) -> None:
        text = command[:-1].decode("utf-8")
        for peer in self.peers.values():
            if peer.send(command):
                log.info(
                    "LOOKUPD({peer}): {branch} {command}", peer=peer.address, branch=branch, command=text
                )

    # -- INSQDObserver ----------------------------------------------------------------------

    def topic_created(self, topic: Topic) -> None:
        self._broadcast("topic", encode_register(topic.name))
        self._precreate_channels(topic)

    def topic_deleted(self, topic: Topic) -> None:
        self._broadcast("topic", encode_unregister(topic.name))

    def channel_created(self, topic: Topic, channel: Channel) -> None:
        self._broadcast("channel", encode_register(topic.name, channel.name))

    def channel_deleted(self, topic: Topic, channel: Channel) -> None:
        self._broadcast("channel", encode_unregister(topic.name, channel.name))

    def metadata_changed(self) -> None:
        """Pauses are not lookupd's business."""

    # -- channel pre-creation ---------------------------------------------------------------

    def lookupd_http_addresses(self) -> list[str]:
        """C{host:port} of every lookupd's HTTP API, from the IDENTIFY replies received so far."""
        addresses: list[str] = []
        for peer in self.peers.values():
            if peer.info is not None:
                address = peer.info.http_address()
                if address is not None:
                    addresses.append(address)
        return addresses

    def _precreate_channels(self, topic: Topic) -> None:
        addresses = self.lookupd_http_addresses()
        if not addresses:
            if self.peers:
                log.error(
                    "no available nsqlookupd to query for channels to pre-create for topic {topic}",
                    topic=topic.name,
                )
            return
        topic.hold()
        query = self.query_channels(topic.name, addresses)

        def create(names: list[str]) -> None:
            nsqd = self.nsqd
            if topic.deleted or nsqd.exiting or nsqd.topics.get(topic.name) is not topic:
                return
            for name in names:
                if is_ephemeral(name):
                    # No client is waiting on it, and it would be deleted with its last client.
                    continue
                if not is_valid_channel_name(name):
                    log.warn(
                        "TOPIC({topic}): nsqlookupd listed invalid channel {name!r}",
                        topic=topic.name,
                        name=name,
                    )
                    continue
                topic.get_channel(name)

        def failed(failure: Failure) -> None:
            if not self._closing:
                log.warn(
                    "failed to query nsqlookupd for channels to pre-create for topic {topic} - {error}",
                    topic=topic.name,
                    error=failure.getErrorMessage(),
                )

        def release(_: object) -> None:
            self._queries.discard(done)
            topic.release()
            self.nsqd.run_dispatch()

        done: Deferred[None] = query.addCallbacks(create, failed)
        done.addBoth(release)
        if not done.called:
            self._queries.add(done)

    def query_channels(self, topic: str, addresses: Sequence[str]) -> Deferred[list[str]]:
        """
        Ask each lookupd at C{addresses} (C{host:port}) for C{topic}'s channels, all at once.

        @return: fires with the sorted union of the answers (errors of some lookupds are logged),
            or fails with L{LookupdQueryError} when none answered.
        """
        attempts = [self._fetch_channels(address, topic) for address in addresses]
        gathered: Deferred[list[tuple[bool, Any]]] = DeferredList(attempts, consumeErrors=True)

        def combine(results: list[tuple[bool, Any]]) -> list[str]:
            names: set[str] = set()
            errors: list[str] = []
            for address, (succeeded, value) in zip(addresses, results, strict=True):
                if succeeded:
                    names.update(value)
                else:
                    errors.append(f"{address}: {_describe(value)}")
            if errors and len(errors) == len(addresses):
                raise LookupdQueryError("failed to query any nsqlookupd: " + "; ".join(errors))
            if errors:
                log.warn(
                    "failed to query some nsqlookupd for channels of topic {topic} - {errors}",
                    topic=topic,
                    errors="; ".join(errors),
                )
            return sorted(names)

        return gathered.addCallback(combine)

    def _fetch_channels(self, address: str, topic: str) -> Deferred[list[str]]:
        timeout = self.nsqd.options.http_client_request_timeout
        attempt = Deferred.fromCoroutine(self._get_channels(address, topic, timeout))
        # Covers reading the body too; treq's own timeout stops at the response headers.
        return attempt.addTimeout(timeout, self.clock)

    async def _get_channels(self, address: str, topic: str, timeout: float) -> list[str]:
        url = f"http://{address}/channels?{urlencode({'topic': topic})}"
        log.info("CI: querying nsqlookupd {url}", url=url)
        response = await self._http.request(
            "GET",
            url,
            headers=Headers({b"Accept": [_ACCEPT_V1]}),
            timeout=timeout,
            # treq's timeout needs a clock; ours is injected.
            reactor=cast(Any, self.clock),
        )
        body = await treq.content(response)
        if response.code != 200:
            raise LookupdQueryError(f"got response {response.code} {body[:200]!r}")
        try:
            document = json.loads(body)
        except ValueError as e:
            raise LookupdQueryError(f"invalid JSON {body[:200]!r}: {e}") from None
        channels = document.get("channels") if isinstance(document, dict) else None
        if channels is None:
            return []
        if not isinstance(channels, list) or not all(isinstance(name, str) for name in channels):
            raise LookupdQueryError(f"invalid channels {body[:200]!r}")
        return channels


def _describe(failure: object) -> str:
    if isinstance(failure, Failure):
        if isinstance(failure.value, (TimeoutError, CancelledError)):
            return "timed out"
        reasons = getattr(failure.value, "reasons", None)
        if isinstance(reasons, list) and any(
            isinstance(r, Failure) and isinstance(r.value, CancelledError) for r in reasons
        ):
            return "timed out"
        return failure.getErrorMessage()
    return str(failure)


def make_lookup_service(nsqd: NSQD, reactor: Any) -> LookupService:
    """
    The lookupd links the service runs: real TCP endpoints, a treq client with
    C{--http-client-connect-timeout}, the OS hostname.
    """
    agent = Agent(reactor, connectTimeout=nsqd.options.http_client_connect_timeout)  # type: ignore[no-untyped-call]
    return LookupService(
        nsqd,
        reactor,
        default_endpoint_factory(reactor),
        HTTPClient(agent),
        socket.gethostname(),
    )
