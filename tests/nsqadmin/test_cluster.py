"""
Tests for L{twisted_nsq.nsqadmin.cluster}: a L{ClusterView} over C{StubTreq}, against fake nsqd
and nsqlookupd HTTP servers (two nsqd, one lookupd) told apart by the C{Host} header.
"""

from __future__ import annotations

import copy
import json
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface.verify import verifyObject

from twisted_nsq.nsqadmin.cluster import (
    ClusterView,
    HTTPClient,
    aggregate_channel,
    compare_versions,
    join_host_port,
)
from twisted_nsq.nsqadmin.interfaces import IClusterView, NodeNotFound, UpstreamError

NOW = 1_000_000

E2E_1 = {"count": 4, "percentiles": [{"quantile": 0.99, "value": 3000}, {"quantile": 0.5, "value": 1000}]}
E2E_2 = {"count": 12, "percentiles": [{"quantile": 0.99, "value": 1000}]}


def _client(client_id: str, hostname: str, connect_ts: int) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "hostname": hostname,
        "version": "V2",
        "remote_address": f"10.0.0.9:{connect_ts % 1000}",
        "state": 3,
        "ready_count": 2,
        "in_flight_count": 1,
        "message_count": 7,
        "finish_count": 6,
        "requeue_count": 0,
        "connect_ts": connect_ts,
        "sample_rate": 0,
        "deflate": False,
        "snappy": True,
        "user_agent": "test/1.0",
        "tls": False,
        "tls_cipher_suite": "",
        "tls_version": "",
        "tls_negotiated_protocol": "",
        "tls_negotiated_protocol_is_mutual": False,
    }


def _channel(
    name: str, depth: int, backend: int, messages: int, clients: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    channel = {
        "channel_name": name,
        "depth": depth,
        "backend_depth": backend,
        "in_flight_count": 1,
        "deferred_count": 2,
        "message_count": messages,
        "requeue_count": 3,
        "timeout_count": 4,
        "client_count": len(clients),
        "clients": clients,
        "paused": False,
        "e2e_processing_latency": {"count": 0, "percentiles": None},
    }
    channel.update(extra)
    return channel


def nsqd1_topics() -> list[dict[str, Any]]:
    return [
        {
            "topic_name": "t",
            "channels": [
                _channel(
                    "c",
                    3,
                    1,
                    10,
                    [_client("cons1", "zeta.host", NOW - 5)],
                    e2e_processing_latency=E2E_1,
                    ordered=True,
                    order_key="json:<user>",
                )
            ],
            "depth": 5,
            "backend_depth": 2,
            "message_count": 10,
            "message_bytes": 100,
            "paused": False,
            "e2e_processing_latency": E2E_1,
        },
        {
            "topic_name": "solo",
            "channels": [],
            "depth": 0,
            "backend_depth": 0,
            "message_count": 1,
            "message_bytes": 1,
            "paused": False,
            "e2e_processing_latency": {"count": 0, "percentiles": None},
        },
    ]


def nsqd2_topics() -> list[dict[str, Any]]:
    return [
        {
            "topic_name": "t",
            "channels": [
                _channel(
                    "c", 1, 0, 20, [_client("cons2", "alpha.host", NOW - 60)], e2e_processing_latency=E2E_2
                ),
                _channel("d", 0, 0, 20, [], paused=True),
            ],
            "depth": 1,
            "backend_depth": 0,
            "message_count": 20,
            "message_bytes": 200,
            "paused": True,
            "e2e_processing_latency": E2E_2,
        }
    ]


class FakeNSQD:
    """An nsqd's HTTP API as nsqadmin uses it: /info, /stats and the POST actions."""

    def __init__(
        self, broadcast: str, hostname: str, topics: list[dict[str, Any]], version: str = "1.3.0"
    ) -> None:
        self.broadcast = broadcast
        self.hostname = hostname
        self.topics = topics
        self.version = version

    def info(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "broadcast_address": self.broadcast,
            "hostname": self.hostname,
            "http_port": 4151,
            "tcp_port": 4150,
            "start_time": 1,
        }

    def handle(self, method: str, path: str, query: dict[str, str]) -> tuple[int, object]:
        if method == "GET" and path == "/info":
            return 200, self.info()
        if method == "GET" and path == "/stats":
            topics = copy.deepcopy(self.topics)
            if "topic" in query:
                topics = [t for t in topics if t["topic_name"] == query["topic"]]
                if "channel" in query:
                    for t in topics:
                        t["channels"] = [c for c in t["channels"] if c["channel_name"] == query["channel"]]
            if query.get("include_clients") == "false":
                for t in topics:
                    for c in t["channels"]:
                        c["clients"] = None
            return 200, {
                "version": self.version,
                "health": "OK",
                "start_time": 1,
                "topics": topics,
                "producers": None,
            }
        if method == "POST":
            kind, _, action = path.strip("/").partition("/")
            topic = next((t for t in self.topics if t["topic_name"] == query.get("topic")), None)
            if action == "create" and kind == "channel" and topic is not None:
                topic["channels"].append(_channel(query["channel"], 0, 0, 0, []))
                return 200, None
            if topic is None:
                return 404, {"message": "TOPIC_NOT_FOUND"}
            target = topic
            if kind == "channel":
                found = next(
                    (c for c in topic["channels"] if c["channel_name"] == query.get("channel")), None
                )
                if found is None:
                    return 404, {"message": "CHANNEL_NOT_FOUND"}
                target = found
            if action in ("pause", "unpause"):
                target["paused"] = action == "pause"
            elif action == "empty":
                target["depth"] = target["backend_depth"] = 0
            elif action == "delete":
                if kind == "topic":
                    self.topics.remove(topic)
                else:
                    topic["channels"].remove(target)
            return 200, None
        return 404, {"message": "NOT_FOUND"}


class FakeLookupd:
    """An nsqlookupd's HTTP API: /nodes, /lookup, /topics, /channels and the POST actions."""

    def __init__(self, nsqds: list[FakeNSQD]) -> None:
        self.nsqds = nsqds
        self.extra_topics: dict[str, list[str]] = {}
        self.tombstoned: set[tuple[str, str]] = set()

    def _producer(self, nsqd: FakeNSQD) -> dict[str, Any]:
        return {
            "remote_address": f"{nsqd.broadcast}:33333",
            "hostname": nsqd.hostname,
            "broadcast_address": nsqd.broadcast,
            "tcp_port": 4150,
            "http_port": 4151,
            "version": nsqd.version,
        }

    def _topics(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {name: list(chs) for name, chs in self.extra_topics.items()}
        for nsqd in self.nsqds:
            for topic in nsqd.topics:
                channels = found.setdefault(topic["topic_name"], [])
                channels.extend(
                    c["channel_name"] for c in topic["channels"] if c["channel_name"] not in channels
                )
        return found

    def handle(self, method: str, path: str, query: dict[str, str]) -> tuple[int, object]:
        if method == "GET" and path == "/nodes":
            producers = []
            for nsqd in self.nsqds:
                entry = self._producer(nsqd)
                names = [t["topic_name"] for t in nsqd.topics]
                entry["tombstones"] = [(nsqd.broadcast + ":4151", n) in self.tombstoned for n in names]
                entry["topics"] = names
                producers.append(entry)
            return 200, {"producers": producers}
        if method == "GET" and path == "/topics":
            return 200, {"topics": list(self._topics())}
        if method == "GET" and path == "/channels":
            return 200, {"channels": self._topics().get(query["topic"], [])}
        if method == "GET" and path == "/lookup":
            topics = self._topics()
            if query["topic"] not in topics:
                return 404, {"message": "TOPIC_NOT_FOUND"}
            producers = [
                self._producer(nsqd)
                for nsqd in self.nsqds
                if any(t["topic_name"] == query["topic"] for t in nsqd.topics)
                and (nsqd.broadcast + ":4151", query["topic"]) not in self.tombstoned
            ]
            return 200, {"channels": topics[query["topic"]], "producers": producers}
        if method == "POST" and path == "/topic/create":
            self.extra_topics.setdefault(query["topic"], [])
            return 200, None
        if method == "POST" and path == "/channel/create":
            self.extra_topics.setdefault(query["topic"], []).append(query["channel"])
            return 200, None
        if method == "POST" and path in ("/topic/delete", "/channel/delete"):
            return 200, None
        if method == "POST" and path == "/topic/tombstone":
            self.tombstoned.add((query["node"], query["topic"]))
            return 200, None
        return 404, {"message": "NOT_FOUND"}


class FakeCluster(Resource):
    """Dispatches each request to the fake daemon named by its C{Host} header; records every call."""

    isLeaf = True

    def __init__(self, hosts: dict[str, Any]) -> None:
        super().__init__()
        self.hosts = hosts
        self.calls: list[str] = []
        #: (request line, headers, body) of every request, for tests that look closer.
        self.requests: list[tuple[str, dict[str, str], bytes]] = []

    def render(self, request: Request) -> bytes:
        host = request.getHeader("host") or ""
        uri = request.uri.decode()
        method = request.method.decode()
        self.calls.append(f"{method} {host}{uri}")
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        body = request.content.read() if request.content is not None else b""
        self.requests.append((f"{method} {host}{uri}", headers, body))
        parts = urlsplit(uri)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        code, body = self.hosts[host].handle(method, parts.path, query)
        request.setResponseCode(code)
        return b"" if body is None else json.dumps(body).encode()


class FlakyHTTP:
    """StubTreq with some hosts unreachable (their calls fail with a refused connection)."""

    def __init__(self, resource: Resource) -> None:
        self.stub: Any = StubTreq(resource)
        self.down: set[str] = set()

    def _check(self, url: str) -> Deferred[Any] | None:
        if urlsplit(url).netloc in self.down:
            return fail(ConnectionRefusedError("Connection refused"))
        return None

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        return self._check(url) or cast("Deferred[Any]", self.stub.get(url, **kwargs))

    def post(self, url: str, data: Any = None, **kwargs: Any) -> Deferred[Any]:
        return self._check(url) or cast("Deferred[Any]", self.stub.post(url, data=data, **kwargs))

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        return self._check(url) or cast("Deferred[Any]", self.stub.request(method, url, **kwargs))

    def content(self, response: Any) -> Deferred[bytes]:
        return cast("Deferred[bytes]", self.stub.content(response))

    def json_content(self, response: Any, **kwargs: Any) -> Deferred[Any]:
        return cast("Deferred[Any]", self.stub.json_content(response, **kwargs))


class ClusterFixture:
    """Two nsqd (nsqd1 "zeta-host", nsqd2 "alpha-host") and one lookupd, with a view over them."""

    def __init__(self, lookupd: bool = True) -> None:
        self.nsqd1 = FakeNSQD("nsqd1", "zeta-host", nsqd1_topics())
        self.nsqd2 = FakeNSQD("nsqd2", "alpha-host", nsqd2_topics(), version="1.2.1")
        self.lookupd = FakeLookupd([self.nsqd1, self.nsqd2])
        self.cluster = FakeCluster(
            {"nsqd1:4151": self.nsqd1, "nsqd2:4151": self.nsqd2, "lookupd1:4161": self.lookupd}
        )
        self.http = FlakyHTTP(self.cluster)
        self.clock = Clock()
        self.clock.advance(NOW + 0.7)
        http: HTTPClient = self.http
        if lookupd:
            self.view = ClusterView(http, self.clock, lookupd_http_addresses=["lookupd1:4161"])
        else:
            self.view = ClusterView(http, self.clock, nsqd_http_addresses=["nsqd1:4151", "nsqd2:4151"])


def _e2e_node(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "count": raw["count"],
        "percentiles": [
            {
                "average": p["value"],
                "count": raw["count"],
                "max": p["value"],
                "min": p["value"],
                "quantile": p["quantile"],
                "value": p["value"],
            }
            for p in raw["percentiles"] or []
        ],
        "topic": "",
        "channel": "",
        "host": "",
    }


def _client_row(
    node: str, client_id: str, hostname: str, connected_s: int, connect_ts: int
) -> dict[str, Any]:
    return {
        "node": node,
        "remote_address": f"10.0.0.9:{connect_ts % 1000}",
        "version": "V2",
        "client_id": client_id,
        "hostname": hostname,
        "user_agent": "test/1.0",
        "connect_ts": connect_ts,
        "connected": connected_s * 1_000_000_000,
        "in_flight_count": 1,
        "ready_count": 2,
        "finish_count": 6,
        "requeue_count": 0,
        "message_count": 7,
        "sample_rate": 0,
        "deflate": False,
        "snappy": True,
        "authed": False,
        "auth_identity": "",
        "auth_identity_url": "",
        "tls": False,
        "tls_cipher_suite": "",
        "tls_version": "",
        "tls_negotiated_protocol": "",
        "tls_negotiated_protocol_is_mutual": False,
    }


#: Both fake nsqd's E2E percentiles merged node by node (nsqd2 first): 0.99 has 12 samples at
#: 1000 and 4 at 3000.
_MERGED_PERCENTILES = [
    {"average": 1500, "count": 16, "max": 3000, "min": 1000, "quantile": 0.99},
    {"average": 1000, "count": 4, "max": 1000, "min": 1000, "quantile": 0.5},
]

#: Channel C{c} of topic C{t} summed over both fake nsqd: the head of its aggregate stats.
_CHANNEL_C_TOTALS: dict[str, object] = {
    "node": "*",
    "hostname": "",
    "topic_name": "t",
    "channel_name": "c",
    "depth": 4,
    "memory_depth": 3,
    "backend_depth": 1,
    "in_flight_count": 2,
    "deferred_count": 4,
    "requeue_count": 6,
    "timeout_count": 8,
    "message_count": 30,
    "client_count": 2,
}


def _channel_row(
    node: str,
    hostname: str,
    name: str,
    depth: int,
    backend: int,
    messages: int,
    clients: list[dict[str, Any]],
    **kw: Any,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "node": node,
        "hostname": hostname,
        "topic_name": "t",
        "channel_name": name,
        "depth": depth,
        "memory_depth": depth - backend,
        "backend_depth": backend,
        "in_flight_count": 1,
        "deferred_count": 2,
        "requeue_count": 3,
        "timeout_count": 4,
        "message_count": messages,
        "client_count": kw.get("client_count", len(clients)),
        "nodes": [],
        "clients": clients,
        "paused": kw.get("paused", False),
    }
    if "ordered" in kw:
        row["ordered"] = kw["ordered"]
    if "order_key" in kw:
        row["order_key"] = kw["order_key"]
    row["e2e_processing_latency"] = _e2e_node(kw.get("e2e", {"count": 0, "percentiles": None}))
    return row


class ClusterViewTopicTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.fixture = ClusterFixture()
        self.view = self.fixture.view

    def test_provides(self) -> None:
        verifyObject(IClusterView, self.view)

    def test_topics(self) -> None:
        """lookupd's topics, sorted."""
        self.fixture.lookupd.extra_topics["a"] = []
        self.assertEqual(
            self.successResultOf(self.view.topics()), {"topics": ["a", "solo", "t"], "message": ""}
        )

    def test_topic_aggregate(self) -> None:
        """
        The topic's per-node rows (sorted by hostname) with memory depth, the sums, the channels
        aggregated across nodes, paused if any node is, and the e2e percentiles merged.
        """
        answer = self.successResultOf(self.view.topic("t"))
        # The topic view asks for no clients.
        self.assertIn(
            "GET nsqd1:4151/stats?format=json&topic=t&include_clients=false", self.fixture.cluster.calls
        )
        node2 = {
            "node": "nsqd2:4151",
            "hostname": "alpha-host",
            "topic_name": "t",
            "depth": 1,
            "memory_depth": 1,
            "backend_depth": 0,
            "message_count": 20,
            "delivery_msg_count": 0,
            "nodes": [],
            "channels": [
                _channel_row("nsqd2:4151", "alpha-host", "c", 1, 0, 20, [], client_count=1, e2e=E2E_2),
                _channel_row("nsqd2:4151", "alpha-host", "d", 0, 0, 20, [], paused=True),
            ],
            "paused": True,
            "e2e_processing_latency": _e2e_node(E2E_2),
        }
        node1 = {
            "node": "nsqd1:4151",
            "hostname": "zeta-host",
            "topic_name": "t",
            "depth": 5,
            "memory_depth": 3,
            "backend_depth": 2,
            "message_count": 10,
            "delivery_msg_count": 0,
            "nodes": [],
            "channels": [
                _channel_row(
                    "nsqd1:4151",
                    "zeta-host",
                    "c",
                    3,
                    1,
                    10,
                    [],
                    client_count=1,
                    ordered=True,
                    order_key="json:<user>",
                    e2e=E2E_1,
                )
            ],
            "paused": False,
            "e2e_processing_latency": _e2e_node(E2E_1),
        }
        channel_c = {
            **_CHANNEL_C_TOTALS,
            "nodes": [node2["channels"][0], node1["channels"][0]],  # type: ignore[index]
            "clients": [],
            "paused": False,
            "ordered": True,
            "order_key": "json:<user>",
            "e2e_processing_latency": {
                "count": 16,
                "percentiles": _MERGED_PERCENTILES,
                "topic": "t",
                "channel": "c",
                "host": "*",
            },
        }
        channel_d = {
            "node": "*",
            "hostname": "",
            "topic_name": "t",
            "channel_name": "d",
            "depth": 0,
            "memory_depth": 0,
            "backend_depth": 0,
            "in_flight_count": 1,
            "deferred_count": 2,
            "requeue_count": 3,
            "timeout_count": 4,
            "message_count": 20,
            "client_count": 0,
            "nodes": [node2["channels"][1]],  # type: ignore[index]
            "clients": [],
            "paused": True,
            "e2e_processing_latency": {
                "count": 0,
                "percentiles": [],
                "topic": "t",
                "channel": "d",
                "host": "*",
            },
        }
        expected = {
            "node": "*",
            "hostname": "",
            "topic_name": "t",
            "depth": 6,
            "memory_depth": 4,
            "backend_depth": 2,
            "message_count": 30,
            "delivery_msg_count": 0,
            "nodes": [node2, node1],
            "channels": [channel_c, channel_d],
            "paused": True,
            "e2e_processing_latency": {
                "count": 16,
                "percentiles": _MERGED_PERCENTILES,
                "topic": "t",
                "channel": "",
                "host": "*",
            },
            "message": "",
        }
        self.assertEqual(answer, expected)
        self.assertEqual(list(answer), list(expected), "Go's key order")

    def test_channel_aggregate(self) -> None:
        """The channel across nodes, with its clients (node, connected) sorted by hostname."""
        answer = self.successResultOf(self.view.channel("t", "c"))
        self.assertIn(
            "GET nsqd2:4151/stats?format=json&topic=t&channel=c",
            self.fixture.cluster.calls,
            "clients included",
        )
        client2 = _client_row("nsqd2:4151", "cons2", "alpha.host", 60, NOW - 60)
        client1 = _client_row("nsqd1:4151", "cons1", "zeta.host", 5, NOW - 5)
        self.assertEqual(answer["clients"], [client2, client1])
        self.assertEqual(list(answer["clients"][0]), list(client2), "Go's key order")
        self.assertEqual(
            answer["nodes"],
            [
                _channel_row("nsqd2:4151", "alpha-host", "c", 1, 0, 20, [client2], e2e=E2E_2),
                _channel_row(
                    "nsqd1:4151",
                    "zeta-host",
                    "c",
                    3,
                    1,
                    10,
                    [client1],
                    ordered=True,
                    order_key="json:<user>",
                    e2e=E2E_1,
                ),
            ],
        )
        expected_head = _CHANNEL_C_TOTALS
        self.assertEqual({k: answer[k] for k in expected_head}, expected_head)
        self.assertEqual(
            list(answer),
            [
                *expected_head,
                "nodes",
                "clients",
                "paused",
                "ordered",
                "order_key",
                "e2e_processing_latency",
                "message",
            ],
        )
        self.assertIs(answer["ordered"], True)
        self.assertEqual(answer["order_key"], "json:<user>", "the order key passes through")
        self.assertEqual(answer["message"], "")

    def test_channel_not_ordered(self) -> None:
        """C{ordered} appears on the aggregate only when some node reports it true."""
        answer = self.successResultOf(self.view.channel("t", "d"))
        self.assertNotIn("ordered", answer)
        self.assertNotIn("order_key", answer)
        self.assertIs(answer["paused"], True)

    def test_order_keys_of_nodes_that_disagree(self) -> None:
        """Nodes ordering one channel by different keys: the aggregate names every key."""
        rows = [
            {**_channel_row("a:4151", "a", "c", 1, 0, 1, [], ordered=True, order_key="prefix:|")},
            {**_channel_row("b:4151", "b", "c", 1, 0, 1, [], ordered=True, order_key="json:k")},
            {**_channel_row("c:4151", "c", "c", 1, 0, 1, [], ordered=True)},
        ]
        self.assertEqual(aggregate_channel("t", "c", rows)["order_key"], "json:k, prefix:|")

    def test_unknown_channel(self) -> None:
        """A channel no node has: an empty aggregate."""
        answer = self.successResultOf(self.view.channel("t", "nope"))
        self.assertEqual(
            (answer["node"], answer["nodes"], answer["clients"], answer["depth"]), ("", [], [], 0)
        )

    def test_unknown_topic(self) -> None:
        """lookupd answers 404 for an unknown topic: every lookupd failed, so the view fails."""
        failure = self.failureResultOf(self.view.topic("nope"), UpstreamError)
        self.assertEqual(
            str(failure.value),
            "failed to query any nsqlookupd: got response 404 Not Found "
            '"{\\"message\\": \\"TOPIC_NOT_FOUND\\"}"',
        )

    def test_topic_summaries(self) -> None:
        """
        Every topic lookupd lists, each aggregated exactly as C{topic()} does, from one C{/stats}
        call per producer; a topic with no producer gets an empty aggregate.
        """
        self.fixture.lookupd.extra_topics["a"] = []
        before = len(self.fixture.cluster.calls)
        answer = self.successResultOf(self.view.topic_summaries())
        calls = self.fixture.cluster.calls[before:]
        self.assertEqual(answer["message"], "")
        self.assertEqual([row["topic_name"] for row in answer["topics"]], ["a", "solo", "t"])
        self.assertEqual(
            sorted(call for call in calls if "/stats" in call),
            [
                "GET nsqd1:4151/stats?format=json&include_clients=false",
                "GET nsqd2:4151/stats?format=json&include_clients=false",
            ],
        )
        empty = answer["topics"][0]
        self.assertEqual((empty["node"], empty["depth"], empty["nodes"], empty["channels"]), ("", 0, [], []))
        # The same aggregate the topic page reads (which asks nsqd for that topic only).
        single = self.successResultOf(self.view.topic("t"))
        self.assertEqual(answer["topics"][2], {k: v for k, v in single.items() if k != "message"})

    def test_topic_summaries_partial_failure(self) -> None:
        """One nsqd down: the other node's topics, and Go's warning."""
        self.fixture.http.down.add("nsqd1:4151")
        answer = self.successResultOf(self.view.topic_summaries())
        self.assertTrue(answer["message"].startswith('WARNING: Get "http://nsqd1:4151/stats?format=json'))
        t = next(row for row in answer["topics"] if row["topic_name"] == "t")
        self.assertEqual([row["node"] for row in t["nodes"]], ["nsqd2:4151"])

    def test_partial_failure(self) -> None:
        """One nsqd down: the answer has the other node's stats and Go's warning."""
        self.fixture.http.down.add("nsqd1:4151")
        answer = self.successResultOf(self.view.topic("t"))
        self.assertEqual([row["node"] for row in answer["nodes"]], ["nsqd2:4151"])
        self.assertEqual(
            answer["message"],
            'WARNING: Get "http://nsqd1:4151/stats?format=json&topic=t&include_clients=false": '
            "Connection was refused by other side: Connection refused.",
        )

    def test_total_failure(self) -> None:
        """Every nsqd down: UpstreamError with every error."""
        self.fixture.http.down.update({"nsqd1:4151", "nsqd2:4151"})
        failure = self.failureResultOf(self.view.topic("t"), UpstreamError)
        self.assertTrue(str(failure.value).startswith('failed to query any nsqd: Get "http://nsqd'))
        self.assertEqual(str(failure.value).count("\n"), 1)

    def test_lookupd_down(self) -> None:
        """The only lookupd down: every reading fails."""
        self.fixture.http.down.add("lookupd1:4161")
        for d in (self.view.topics(), self.view.nodes(), self.view.counter(), self.view.topic("t")):
            failure = self.failureResultOf(d, UpstreamError)
            self.assertTrue(
                str(failure.value).startswith('failed to query any nsqlookupd: Get "http://lookupd1')
            )

    def test_warnings_of_two_steps(self) -> None:
        """A second lookupd down and one nsqd down: two messages joined by "; "."""
        self.view.lookupd_http_addresses.append("lookupd2:4161")
        self.fixture.http.down.update({"lookupd2:4161", "nsqd2:4151"})
        answer = self.successResultOf(self.view.counter())
        self.assertEqual(
            answer["message"],
            'WARNING: Get "http://lookupd2:4161/nodes": '
            "Connection was refused by other side: Connection refused.; "
            'Get "http://nsqd2:4151/stats?format=json&include_clients=false": '
            "Connection was refused by other side: Connection refused.",
        )


class ClusterViewNodeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.fixture = ClusterFixture()
        self.view = self.fixture.view

    def test_nodes(self) -> None:
        """Producers from lookupd, sorted by hostname, the older version out of date."""
        self.view.lookupd_http_addresses.append("lookupd2:4161")
        self.fixture.cluster.hosts["lookupd2:4161"] = self.fixture.lookupd
        self.fixture.lookupd.tombstoned.add(("nsqd1:4151", "t"))
        answer = self.successResultOf(self.view.nodes())
        self.assertEqual(
            answer,
            {
                "nodes": [
                    {
                        "remote_addresses": ["lookupd1:4161/nsqd2:33333", "lookupd2:4161/nsqd2:33333"],
                        "remote_address": "nsqd2:33333",
                        "hostname": "alpha-host",
                        "broadcast_address": "nsqd2",
                        "tcp_port": 4150,
                        "http_port": 4151,
                        "version": "1.2.1",
                        "topics": [{"topic": "t", "tombstoned": False}],
                        "out_of_date": True,
                    },
                    {
                        "remote_addresses": ["lookupd1:4161/nsqd1:33333", "lookupd2:4161/nsqd1:33333"],
                        "remote_address": "nsqd1:33333",
                        "hostname": "zeta-host",
                        "broadcast_address": "nsqd1",
                        "tcp_port": 4150,
                        "http_port": 4151,
                        "version": "1.3.0",
                        "topics": [
                            {"topic": "solo", "tombstoned": False},
                            {"topic": "t", "tombstoned": True},
                        ],
                        "out_of_date": False,
                    },
                ],
                "message": "",
            },
        )

    def test_nodes_direct(self) -> None:
        """With --nsqd-http-address: /info and /stats of each nsqd."""
        view = ClusterFixture(lookupd=False).view
        answer = self.successResultOf(view.nodes())
        self.assertEqual(
            answer["nodes"][1],
            {
                "remote_addresses": [],
                "remote_address": "",
                "hostname": "zeta-host",
                "broadcast_address": "nsqd1",
                "tcp_port": 4150,
                "http_port": 4151,
                "version": "1.3.0",
                "topics": [{"topic": "t", "tombstoned": False}, {"topic": "solo", "tombstoned": False}],
                "out_of_date": False,
            },
        )
        self.assertTrue(answer["nodes"][0]["out_of_date"])

    def test_node(self) -> None:
        """One node: its topics (with channels and clients) and the totals."""
        answer = self.successResultOf(self.view.node("nsqd1:4151"))
        self.assertEqual(
            (answer["node"], answer["total_messages"], answer["total_clients"], answer["message"]),
            ("nsqd1:4151", 11, 1, ""),
        )
        self.assertEqual([t["topic_name"] for t in answer["topics"]], ["solo", "t"])
        self.assertEqual(answer["topics"][1]["channels"][0]["clients"][0]["client_id"], "cons1")
        self.assertEqual(list(answer), ["node", "topics", "total_messages", "total_clients", "message"])

    def test_node_not_found(self) -> None:
        self.failureResultOf(self.view.node("nsqd9:4151"), NodeNotFound)

    def test_counter(self) -> None:
        """Message counts keyed topic:channel:node, sorted."""
        answer = self.successResultOf(self.view.counter())
        self.assertEqual(
            answer,
            {
                "stats": {
                    "t:c:nsqd1:4151": {
                        "node": "nsqd1:4151",
                        "topic_name": "t",
                        "channel_name": "c",
                        "message_count": 10,
                    },
                    "t:c:nsqd2:4151": {
                        "node": "nsqd2:4151",
                        "topic_name": "t",
                        "channel_name": "c",
                        "message_count": 20,
                    },
                    "t:d:nsqd2:4151": {
                        "node": "nsqd2:4151",
                        "topic_name": "t",
                        "channel_name": "d",
                        "message_count": 20,
                    },
                },
                "message": "",
            },
        )

    def test_inactive_topics(self) -> None:
        """Topics lookupd knows without producers, with their channels."""
        self.fixture.lookupd.extra_topics["idle"] = ["ch2", "ch1"]
        answer = self.successResultOf(self.view.inactive_topics())
        self.assertEqual(answer, {"topics": {"idle": ["ch1", "ch2"]}, "message": ""})

    def test_inactive_topics_direct(self) -> None:
        """Without lookupd there is nothing to list."""
        view = ClusterFixture(lookupd=False).view
        self.assertEqual(self.successResultOf(view.inactive_topics()), {"topics": {}, "message": ""})

    def test_direct_topic(self) -> None:
        """With --nsqd-http-address, a topic's producers are the nsqd that have it."""
        fixture = ClusterFixture(lookupd=False)
        answer = self.successResultOf(fixture.view.topic("solo"))
        self.assertEqual([row["node"] for row in answer["nodes"]], ["nsqd1:4151"])
        self.assertEqual(self.successResultOf(fixture.view.topics())["topics"], ["solo", "t"])


class ClusterViewActionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.fixture = ClusterFixture()
        self.view = self.fixture.view
        self.calls = self.fixture.cluster.calls

    def posts(self) -> list[str]:
        return [call for call in self.calls if call.startswith("POST")]

    def test_topic_actions(self) -> None:
        """pause/unpause/empty go to every nsqd producing the topic."""
        self.assertEqual(self.successResultOf(self.view.topic_action("t", "pause")), "")
        self.assertEqual(
            sorted(self.posts()),
            ["POST nsqd1:4151/topic/pause?topic=t", "POST nsqd2:4151/topic/pause?topic=t"],
        )
        self.assertTrue(self.fixture.nsqd1.topics[0]["paused"])
        self.successResultOf(self.view.topic_action("t", "empty"))
        self.assertEqual(self.fixture.nsqd1.topics[0]["depth"], 0)
        self.assertRaises(ValueError, self.view.topic_action, "t", "explode")

    def test_channel_actions(self) -> None:
        """A node without the channel answers 404: a warning, the other node is done."""
        message = self.successResultOf(self.view.channel_action("t", "d", "unpause"))
        self.assertEqual(
            message, 'WARNING: got response 404 Not Found "{\\"message\\": \\"CHANNEL_NOT_FOUND\\"}"'
        )
        self.assertFalse(self.fixture.nsqd2.topics[0]["channels"][1]["paused"])
        self.assertIn("POST nsqd2:4151/channel/unpause?topic=t&channel=d", self.posts())

    def test_create(self) -> None:
        """A topic in every lookupd; a channel in every lookupd and every producer of the topic."""
        self.assertEqual(self.successResultOf(self.view.create_topic_channel("new", None)), "")
        self.assertEqual(self.posts(), ["POST lookupd1:4161/topic/create?topic=new"])
        del self.calls[:]
        self.assertEqual(self.successResultOf(self.view.create_topic_channel("t", "e#ephemeral")), "")
        self.assertEqual(
            sorted(self.posts()),
            [
                "POST lookupd1:4161/channel/create?topic=t&channel=e%23ephemeral",
                "POST lookupd1:4161/topic/create?topic=t",
                "POST nsqd1:4151/channel/create?topic=t&channel=e%23ephemeral",
                "POST nsqd2:4151/channel/create?topic=t&channel=e%23ephemeral",
            ],
        )

    def test_delete(self) -> None:
        """Producers are found first, then lookupd and the producers delete."""
        self.assertEqual(self.successResultOf(self.view.delete_channel("t", "c")), "")
        self.assertEqual(
            sorted(self.posts()),
            [
                "POST lookupd1:4161/channel/delete?topic=t&channel=c",
                "POST nsqd1:4151/channel/delete?topic=t&channel=c",
                "POST nsqd2:4151/channel/delete?topic=t&channel=c",
            ],
        )
        self.assertEqual(self.successResultOf(self.view.delete_topic("t")), "")
        self.assertEqual([t["topic_name"] for t in self.fixture.nsqd2.topics], [])
        lookup = self.calls.index("GET lookupd1:4161/lookup?topic=t", 3)
        self.assertLess(lookup, self.calls.index("POST lookupd1:4161/topic/delete?topic=t"))

    def test_post_failures_are_warnings(self) -> None:
        """Even when every POST fails the action answers, with the errors as a warning (as Go does)."""
        self.fixture.http.down.update({"nsqd1:4151", "nsqd2:4151"})
        message = self.successResultOf(self.view.topic_action("t", "pause"))
        self.assertTrue(message.startswith('WARNING: Post "http://nsqd'))
        self.assertEqual(message.count("\n"), 1)

    def test_action_without_producers(self) -> None:
        """Finding no producers at all (every lookupd down) fails the action."""
        self.fixture.http.down.add("lookupd1:4161")
        self.failureResultOf(self.view.topic_action("t", "pause"), UpstreamError)

    def test_tombstone_flow(self) -> None:
        """
        Tombstoning a producer of a topic: lookupd hides it from /lookup, the topic is deleted on
        that node, and the node shows the topic tombstoned.
        """
        self.assertEqual(self.successResultOf(self.view.tombstone_topic_producer("nsqd1:4151", "t")), "")
        self.assertEqual(
            self.posts(),
            [
                "POST lookupd1:4161/topic/tombstone?topic=t&node=nsqd1%3A4151",
                "POST nsqd1:4151/topic/delete?topic=t",
            ],
        )
        self.assertIn("GET nsqd1:4151/info", self.calls)
        self.assertEqual([t["topic_name"] for t in self.fixture.nsqd1.topics], ["solo"])
        topic = self.successResultOf(self.view.topic("t"))
        self.assertEqual([row["node"] for row in topic["nodes"]], ["nsqd2:4151"])

    def test_tombstone_node_down(self) -> None:
        """The node itself cannot be reached: UpstreamError (lookupd has tombstoned it already)."""
        self.fixture.http.down.add("nsqd1:4151")
        self.failureResultOf(self.view.tombstone_topic_producer("nsqd1:4151", "t"), UpstreamError)
        self.assertIn(("nsqd1:4151", "t"), self.fixture.lookupd.tombstoned)


class HelperTests(SynchronousTestCase):
    def test_versions(self) -> None:
        """Semantic version precedence, with unparseable versions as 0.0.0."""
        self.assertEqual(compare_versions("1.3.0", "1.2.1"), 1)
        self.assertEqual(compare_versions("1.2.1", "1.10.0"), -1)
        self.assertEqual(compare_versions("1.3.0-alpha", "1.3.0"), -1)
        self.assertEqual(compare_versions("1.3.0-alpha.2", "1.3.0-alpha.10"), -1)
        self.assertEqual(compare_versions("1.3.0-alpha", "1.3.0-1"), 1)
        self.assertEqual(compare_versions("1.3.0+build", "1.3.0"), 0)
        self.assertEqual(compare_versions("garbage", "0.0.0"), 0)

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(
            st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 20)), min_size=3, max_size=3
        )
    )
    def test_version_order(self, triples: list[tuple[int, int, int]]) -> None:
        """Release versions order like their number triples."""
        a, b, _ = (".".join(map(str, t)) for t in triples)
        expected = (triples[0] > triples[1]) - (triples[0] < triples[1])
        self.assertEqual(compare_versions(a, b), expected)

    def test_join_host_port(self) -> None:
        self.assertEqual(join_host_port("::1", 4151), "[::1]:4151")
        self.assertEqual(join_host_port("host", 4151), "host:4151")

    def test_empty_aggregate(self) -> None:
        self.assertEqual(aggregate_channel("t", "c", [])["e2e_processing_latency"]["host"], "")
