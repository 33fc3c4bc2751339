"""
A cluster as NSQ runs one: an C{nsqlookupd} process and two C{nsqd} processes that register with
it, and a pynsq C{Reader} that knows only nsqlookupd's HTTP address.

The Reader must discover both nodes and consume every message published to either. Tombstoning
a topic's producer at nsqlookupd (as nsqadmin does before deleting the topic on that node) must
stop its discovery. The whole cluster runs twice: with C{--flag=value} and with the single-dash
Go syntax (C{-lookupd-tcp-address=...}) that client libraries' test harnesses use.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import NSQDProcess, run_pynsq, start_nsqd, start_nsqlookupd
from tests.integration._wait import wait_until

#: How long nsqd may take to register something with nsqlookupd.
REGISTER_TIMEOUT = 10.0
#: How long one HTTP call may take.
HTTP_TIMEOUT = 10.0


#: Consume a topic through nsqlookupd only, while more messages are published to each node.
CONSUME = r"""
class NodeWriter(_Recording, nsq.Writer):
    def __init__(self, address):
        self._record_init()
        super().__init__([address], reconnect_interval=600.0)
        OPEN.append(self)

    def close(self):
        for conn in list(self.conns.values()):
            conn.close()


async def scenario():
    topic = P["topic"]
    expected = set(P["expected"])
    got = []

    def handler(message):
        got.append(text(message.body))
        return True

    class Discovering(Reader):
        def _on_message(self, conn, message, **kwargs):
            vias.append([text(message.body), conn.id])
            return super()._on_message(conn, message, **kwargs)

    vias = []
    r = Discovering(
        topic,
        "ch",
        handler,
        nsqd_tcp_addresses=[],
        lookupd_http_addresses=["http://" + P["lookupd_http"]],
        lookupd_request_timeout=5,
        max_in_flight=10,
    )
    nodes = len(P["nsqd_tcp"])
    await until(lambda: len(r.sub_answers) >= nodes, 10)
    if r.sub_answers != ["OK"] * nodes:
        raise AssertionError("SUB answers %r, errors %r" % (r.sub_answers, r.errors))
    await until(lambda: len(got) >= len(P["before"]), 10)

    answers = []
    for address, bodies in zip(P["nsqd_tcp"], P["during"]):
        w = NodeWriter(address)
        await connected(w)
        for body in bodies:
            answers.append(await call(w, "pub", topic, body.encode()))
    await until(lambda: expected <= set(got), 10)
    await asyncio.sleep(0.3)  # a duplicate delivery would show up now
    return {
        "connections": sorted(r.conns),
        "got": got,
        "vias": vias,
        "answers": answers,
        "errors": list(r.errors),
    }
"""

#: A fresh Reader through nsqlookupd: which nodes does it connect to, and what does it get?
DISCOVER = r"""
async def scenario():
    got = []
    r = Reader(
        P["topic"],
        "ch2",
        lambda m: got.append(text(m.body)) or True,
        nsqd_tcp_addresses=[],
        lookupd_http_addresses=[P["lookupd_http"]],
        lookupd_request_timeout=5,
        max_in_flight=10,
    )
    await until(lambda: r.sub_answers, 10)
    await until(lambda: len(got) >= P["count"], 10)
    await asyncio.sleep(0.5)  # a second node's connection would show up now
    return {"connections": sorted(r.conns), "sub_answers": r.sub_answers, "got": got}
"""


def _request(method: str, hostport: str, path: str, body: bytes | None, query: dict[str, str]) -> bytes:
    """One call to a daemon's HTTP API; the response body, or an AssertionError for a non-200 status."""
    url = f"http://{hostport}{path}?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            answer: bytes = response.read()
    except urllib.error.HTTPError as e:
        with e:
            raise AssertionError(f"{method} {path} answered {e.code}: {e.read()!r}") from None
    return answer


def http_json(hostport: str, path: str, **query: str) -> Any:
    """GET C{path} from a daemon's HTTP API and decode its JSON body."""
    return json.loads(_request("GET", hostport, path, None, query))


def http_post(hostport: str, path: str, body: bytes = b"", **query: str) -> bytes:
    """POST to a daemon's HTTP API; the response body."""
    return _request("POST", hostport, path, body, query)


class ClusterTests(SynchronousTestCase):
    """One nsqlookupd and two nsqd nodes, started with C{--flag=value}."""

    #: How the tests spell the daemons' flags.
    dash = "--"

    def setUp(self) -> None:
        self.lookupd = start_nsqlookupd(self, dash=self.dash)
        _, lookupd_tcp_port = self.lookupd.tcp_address
        self.nodes = [
            start_nsqd(
                self,
                f"{self.dash}lookupd-tcp-address=127.0.0.1:{lookupd_tcp_port}",
                f"{self.dash}broadcast-address=127.0.0.1",
                dash=self.dash,
            )
            for _ in range(2)
        ]
        # Each nsqd identifies itself as soon as its link connects.
        wait_until(
            "nsqlookupd lists both nsqd nodes",
            lambda: self.node_addresses(http_json(self.lookupd.http_hostport, "/nodes")["producers"]),
            lambda seen: seen == self.expected_nodes(),
            REGISTER_TIMEOUT,
        )

    def expected_nodes(self, nodes: list[NSQDProcess] | None = None) -> set[str]:
        """The nodes as nsqlookupd lists them: C{broadcast_address:tcp_port/http_port}."""
        return {
            f"127.0.0.1:{node.tcp_address[1]}/{node.http_address[1]}"
            for node in (self.nodes if nodes is None else nodes)
        }

    def node_addresses(self, producers: list[dict[str, Any]]) -> set[str]:
        return {f"{p['broadcast_address']}:{p['tcp_port']}/{p['http_port']}" for p in producers}

    def lookup(self, topic: str) -> dict[str, Any]:
        answer: dict[str, Any] = http_json(self.lookupd.http_hostport, "/lookup", topic=topic)
        return answer

    def wait_for_producers(self, topic: str, nodes: list[NSQDProcess]) -> dict[str, Any]:
        """Wait until C{/lookup} lists exactly C{nodes} for C{topic}; returns that answer."""
        return wait_until(
            f"/lookup?topic={topic} lists {len(nodes)} producer(s)",
            lambda: self.lookup(topic),
            lambda answer: self.node_addresses(answer["producers"]) == self.expected_nodes(nodes),
            REGISTER_TIMEOUT,
        )

    def publish(self, node: NSQDProcess, topic: str, bodies: list[str]) -> None:
        for body in bodies:
            self.assertEqual(http_post(node.http_hostport, "/pub", body.encode(), topic=topic), b"OK")

    def test_discover_and_consume(self) -> None:
        """
        A Reader configured only with nsqlookupd's HTTP address finds both nodes, subscribes on
        each, and consumes every message published to either, before and while it runs, once.
        """
        topic = "cluster"
        before = [[f"n{i}-before-{k}" for k in range(5)] for i in (1, 2)]
        during = [[f"n{i}-during-{k}" for k in range(5)] for i in (1, 2)]
        for node, bodies in zip(self.nodes, before, strict=True):
            self.publish(node, topic, bodies)
        answer = self.wait_for_producers(topic, self.nodes)
        self.assertEqual(answer["channels"], [])
        for producer in answer["producers"]:
            self.assertEqual(producer["version"], "1.3.0")
            self.assertTrue(producer["remote_address"].startswith("127.0.0.1:"), producer)

        expected = [body for bodies in before + during for body in bodies]
        result = run_pynsq(
            self,
            self.nodes[0],
            CONSUME,
            also=[self.nodes[1], self.lookupd],
            topic=topic,
            lookupd_http=self.lookupd.http_hostport,
            nsqd_tcp=[node.tcp_hostport for node in self.nodes],
            before=before[0] + before[1],
            during=during,
            expected=expected,
        )
        self.assertEqual(result["errors"], [])
        self.assertEqual(result["connections"], sorted(node.tcp_hostport for node in self.nodes))
        self.assertEqual(result["answers"], ["OK"] * 10)
        self.assertEqual(Counter(result["got"]), Counter(expected), "every message exactly once")
        # Each message came over the connection to the node it was published to.
        for body, via in result["vias"]:
            node = self.nodes[int(body[1]) - 1]
            self.assertEqual(via, node.tcp_hostport, body)
        # The Reader's SUB registered the channel on both nodes.
        answer = wait_until(
            f"/lookup?topic={topic} lists the channel",
            lambda: self.lookup(topic),
            lambda answer: answer["channels"] == ["ch"],
            REGISTER_TIMEOUT,
        )
        self.assertEqual(self.node_addresses(answer["producers"]), self.expected_nodes())

    def test_tombstone_stops_discovery(self) -> None:
        """
        Tombstoning a topic's producer at nsqlookupd hides that node from C{/lookup} (C{/nodes}
        still lists it, marked), and so does deleting the topic there: a new Reader connects only
        to the other node.
        """
        topic = "tombstoned"
        first, second = self.nodes
        self.publish(first, topic, ["first-0"])
        self.publish(second, topic, ["second-0", "second-1"])
        self.wait_for_producers(topic, self.nodes)

        node = first.http_hostport
        http_post(self.lookupd.http_hostport, "/topic/tombstone", topic=topic, node=node)
        self.assertEqual(self.node_addresses(self.lookup(topic)["producers"]), self.expected_nodes([second]))
        listed = {
            f"{p['broadcast_address']}:{p['http_port']}": dict(zip(p["topics"], p["tombstones"], strict=True))
            for p in http_json(self.lookupd.http_hostport, "/nodes")["producers"]
        }
        self.assertEqual(listed, {node: {topic: True}, second.http_hostport: {topic: False}})

        http_post(first.http_hostport, "/topic/delete", topic=topic)
        # nsqd unregisters the deleted topic; the tombstone goes with its registration.
        wait_until(
            "the deleted topic's registration is gone from /nodes",
            lambda: {
                f"{p['broadcast_address']}:{p['http_port']}": p["topics"]
                for p in http_json(self.lookupd.http_hostport, "/nodes")["producers"]
            },
            lambda topics: topics == {node: [], second.http_hostport: [topic]},
            REGISTER_TIMEOUT,
        )
        self.wait_for_producers(topic, [second])

        result = run_pynsq(
            self,
            second,
            DISCOVER,
            also=[first, self.lookupd],
            topic=topic,
            lookupd_http=self.lookupd.http_hostport,
            count=2,
        )
        self.assertEqual(result["sub_answers"], ["OK"])
        self.assertEqual(result["connections"], [second.tcp_hostport])
        self.assertEqual(sorted(result["got"]), ["second-0", "second-1"])


class SingleDashClusterTests(ClusterTests):
    """
    The same cluster with every daemon started with Go's single-dash flags
    (C{-lookupd-tcp-address=...}, C{-broadcast-address=...}), as client libraries' harnesses
    start them.
    """

    dash = "-"
