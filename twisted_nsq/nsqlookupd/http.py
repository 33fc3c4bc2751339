"""
nsqlookupd's HTTP API (spec 4.3): a Klein app around the L{NSQLookupd} core.

Every endpoint of nsqlookupd 1.3.0 except C{/debug/pprof}, all answering V1 (with the
C{X-NSQ-Content-Type} header; C{/ping} is plain text without it), plus the pre-1.0 aliases
(C{/create_topic}, C{/delete_topic}, C{/create_channel}, C{/delete_channel},
C{/tombstone_topic_producer}) answering GET or POST.

JSON keys come in Go's order: a Go struct's fields in declaration order, a Go map's keys sorted
(C{/lookup}, C{/debug}). Lists are C{[]} when empty, never C{null}; in C{/debug} a key without
producers is left out, and a producer never tombstoned shows Go's zero time,
C{"tombstoned_at":-6795364578871345152}.

Parameters come from the query string only. Go reads any request body and ignores it; ours may
hold at most L{BODY_LIMIT} bytes (C{413 {"message":"BODY_TOO_BIG"}} above), refused before it is
buffered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import IResource
from twisted.web.server import Request

from twisted_nsq._http import (
    APIError,
    BodyLimit,
    LimitedSite,
    Query,
    install_fallbacks,
    respond_plain,
    seconds_to_ns,
    v1_endpoint,
)
from twisted_nsq._httputil import Endpoint, logged
from twisted_nsq._version import NSQ_VERSION
from twisted_nsq.nsqlookupd.core import NSQLookupd
from twisted_nsq.nsqlookupd.registration import PeerInfo
from twisted_nsq.wire.names import is_valid_channel_name, is_valid_topic_name

log = Logger()

#: The largest request body any endpoint accepts (none reads one).
BODY_LIMIT = 64 * 1024

#: Go's C{time.Time{}.UnixNano()}: what C{/debug} reports for a producer never tombstoned.
GO_ZERO_TIME_UNIX_NANO = -6795364578871345152


def _peer_json(peer: PeerInfo) -> dict[str, Any]:
    """A producer as C{/lookup} lists it (Go's C{PeerInfo} struct, 1.3.0 fields)."""
    return {
        "remote_address": peer.remote_address,
        "hostname": peer.hostname,
        "broadcast_address": peer.broadcast_address,
        "tcp_port": peer.tcp_port,
        "http_port": peer.http_port,
        "version": peer.version,
    }


class LookupdHTTP:
    """
    nsqlookupd's HTTP API around an L{NSQLookupd} core.

    @ivar app: the Klein app; L{resource} is what a C{Site} serves, L{site} builds that site with
        the body limit and timeouts.
    """

    def __init__(self, lookupd: NSQLookupd) -> None:
        self.lookupd = lookupd
        self.db = lookupd.db
        self.app = Klein()
        install_fallbacks(self.app)
        self._add_routes()

    # -- wiring ---------------------------------------------------------------------------------

    def _add_routes(self) -> None:
        clock = self.lookupd.clock

        def route(path: str, methods: list[str], name: str, handler: Endpoint) -> None:
            # Each request logged as Go does: 200 GET /ping (127.0.0.1:5678) 1.5µs
            self.app.route(path, methods=methods, endpoint=name)(logged(log, clock, handler))

        v1 = v1_endpoint
        route("/ping", ["GET"], "ping", self.ping)
        route("/info", ["GET"], "info", v1(self.info))
        route("/debug", ["GET"], "debug", v1(self.debug))
        route("/lookup", ["GET"], "lookup", v1(self.lookup))
        route("/topics", ["GET"], "topics", v1(self.topics))
        route("/channels", ["GET"], "channels", v1(self.channels))
        route("/nodes", ["GET"], "nodes", v1(self.nodes))
        actions: list[tuple[str, str, Callable[[Request], None]]] = [
            ("/topic/create", "/create_topic", self.topic_create),
            ("/topic/delete", "/delete_topic", self.topic_delete),
            ("/channel/create", "/create_channel", self.channel_create),
            ("/channel/delete", "/delete_channel", self.channel_delete),
            ("/topic/tombstone", "/tombstone_topic_producer", self.topic_tombstone),
        ]
        for path, alias, handler in actions:
            route(path, ["POST"], path[1:].replace("/", "_"), v1(handler))
            # Pre-1.0 names, which took GET as well as POST.
            route(alias, ["GET", "POST"], alias[1:], v1(handler))

    def resource(self) -> IResource:
        """The resource to serve."""
        resource: IResource = self.app.resource()
        return resource

    def body_limit(self, method: bytes, uri: bytes) -> BodyLimit:
        """The largest body an endpoint accepts: L{BODY_LIMIT} for all of them."""
        return BodyLimit(BODY_LIMIT, "BODY_TOO_BIG")

    def site(
        self, reactor: IReactorTime, timeout: float = 60.0, request_timeout: float = 60.0
    ) -> LimitedSite:
        """
        A site serving this API with the body limit: C{timeout} closes idle connections, and a
        whole request must arrive within C{request_timeout} seconds.
        """
        return LimitedSite(self.resource(), self.body_limit, reactor, timeout, request_timeout)

    # -- arguments --------------------------------------------------------------------------------

    @staticmethod
    def _topic(query: Query) -> str:
        topic = query.get("topic")
        if topic is None:
            raise APIError(400, "MISSING_ARG_TOPIC")
        return topic

    @staticmethod
    def _topic_channel(query: Query) -> tuple[str, str]:
        """Go's C{http_api.GetTopicChannelArgs}: both present and valid, checked in this order."""
        topic = query.get("topic")
        if topic is None:
            raise APIError(400, "MISSING_ARG_TOPIC")
        if not is_valid_topic_name(topic):
            raise APIError(400, "INVALID_ARG_TOPIC")
        channel = query.get("channel")
        if channel is None:
            raise APIError(400, "MISSING_ARG_CHANNEL")
        if not is_valid_channel_name(channel):
            raise APIError(400, "INVALID_ARG_CHANNEL")
        return topic, channel

    # -- endpoints --------------------------------------------------------------------------------

    def ping(self, request: Request) -> bytes:
        """GET /ping: C{OK}, plain text without the V1 header."""
        return respond_plain(request, 200, "OK")

    def info(self, request: Request) -> dict[str, Any]:
        """GET /info: the version."""
        return {"version": NSQ_VERSION}

    def lookup(self, request: Request) -> dict[str, Any]:
        """GET /lookup?topic=: the topic's channels and active, not tombstoned producers."""
        topic = self._topic(Query.of(request))
        found = self.db.lookup(topic)
        if found is None:
            raise APIError(404, "TOPIC_NOT_FOUND")
        channels, producers = found
        return {"channels": channels, "producers": [_peer_json(peer) for peer in producers]}

    def topics(self, request: Request) -> dict[str, Any]:
        """GET /topics: every topic."""
        return {"topics": self.db.topics()}

    def channels(self, request: Request) -> dict[str, Any]:
        """GET /channels?topic=: the topic's channels, C{[]} for an unknown topic."""
        topic = self._topic(Query.of(request))
        return {"channels": self.db.channels(topic)}

    def nodes(self, request: Request) -> dict[str, Any]:
        """GET /nodes: every active producer, tombstoned or not, with its topics."""
        producers = []
        for node in self.db.nodes():
            entry = _peer_json(node.peer)
            entry["tombstones"] = node.tombstones
            entry["topics"] = node.topics
            producers.append(entry)
        return {"producers": producers}

    def debug(self, request: Request) -> dict[str, Any]:
        """GET /debug: every key that has producers, with each producer record (a Go map: keys sorted)."""
        data: dict[str, list[dict[str, Any]]] = {}
        for key in self.db.registrations():
            producers = self.db.producers(key)
            if not producers:
                continue
            entries = data[f"{key.category}:{key.key}:{key.subkey}"] = []
            for producer in producers:
                peer = producer.peer
                tombstoned_at = (
                    GO_ZERO_TIME_UNIX_NANO
                    if producer.tombstoned_at is None
                    else seconds_to_ns(producer.tombstoned_at)
                )
                entries.append(
                    {
                        "broadcast_address": peer.broadcast_address,
                        "hostname": peer.hostname,
                        "http_port": peer.http_port,
                        "id": peer.id,
                        "last_update": seconds_to_ns(peer.last_update),
                        "tcp_port": peer.tcp_port,
                        "tombstoned": producer.tombstoned,
                        "tombstoned_at": tombstoned_at,
                        "version": peer.version,
                    }
                )
        return dict(sorted(data.items()))

    def topic_create(self, request: Request) -> None:
        """POST /topic/create?topic=: add the topic key."""
        topic = self._topic(Query.of(request))
        if not is_valid_topic_name(topic):
            raise APIError(400, "INVALID_ARG_TOPIC")
        log.info("DB: adding topic({topic})", topic=topic)
        self.db.create_topic(topic)

    def topic_delete(self, request: Request) -> None:
        """POST /topic/delete?topic=: delete the topic's channel keys and its key (unknown is fine)."""
        topic = self._topic(Query.of(request))
        for key in self.db.delete_topic(topic):
            if key.subkey:
                log.info(
                    "DB: removing channel({channel}) from topic({topic})", channel=key.subkey, topic=topic
                )
            else:
                log.info("DB: removing topic({topic})", topic=topic)

    def channel_create(self, request: Request) -> None:
        """POST /channel/create?topic=&channel=: add the channel key and the topic key."""
        topic, channel = self._topic_channel(Query.of(request))
        log.info("DB: adding channel({channel}) in topic({topic})", channel=channel, topic=topic)
        self.db.create_channel(topic, channel)

    def channel_delete(self, request: Request) -> None:
        """POST /channel/delete?topic=&channel=: delete the channel key; 404 when there is none."""
        topic, channel = self._topic_channel(Query.of(request))
        if not self.db.delete_channel(topic, channel):
            raise APIError(404, "CHANNEL_NOT_FOUND")
        log.info("DB: removing channel({channel}) from topic({topic})", channel=channel, topic=topic)

    def topic_tombstone(self, request: Request) -> None:
        """POST /topic/tombstone?topic=&node=: hide that producer of the topic from /lookup for a while."""
        query = Query.of(request)
        topic = self._topic(query)
        node = query.get("node")
        if node is None:
            raise APIError(400, "MISSING_ARG_NODE")
        log.info("DB: setting tombstone for producer@{node} of topic({topic})", node=node, topic=topic)
        self.db.tombstone(topic, node)
