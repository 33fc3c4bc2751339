"""
nsqadmin's JSON API against real processes: one nsqlookupd, two nsqd registered with it, and
nsqadmin reading the cluster through the lookupd.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import NSQDProcess
from tests.integration._nsqadmin import start_admin_cluster
from tests.integration._rawclient import RawClient
from tests.integration._wait import wait_until

TIMEOUT = 15.0


def request(method: str, url: str, body: bytes | None = None) -> tuple[int, Any]:
    """One HTTP call; the status and the decoded JSON (or raw) body."""
    call = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(call, timeout=10) as response:
            code, data = response.status, response.read()
    except urllib.error.HTTPError as e:
        with e:
            code, data = e.code, e.read()
    try:
        return code, json.loads(data)
    except ValueError:
        return code, data


class NSQAdminAPITests(SynchronousTestCase):
    def setUp(self) -> None:
        cluster = start_admin_cluster(self)
        self.nodes, self.base = cluster.nodes, cluster.base

    def api(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        return request(method, self.base + path, data)

    def stats(self, node: NSQDProcess) -> dict[str, Any]:
        code, answer = request("GET", f"http://{node.http_hostport}/stats?format=json")
        self.assertEqual(code, 200)
        return answer  # type: ignore[no-any-return]

    def names(self, node: NSQDProcess) -> str:
        host, port = node.http_address
        return f"{host}:{port}"

    def test_api(self) -> None:
        for index, node in enumerate(self.nodes):
            for body in (b"one", b"two")[: index + 1]:
                self.assertEqual(
                    request("POST", f"http://{node.http_hostport}/pub?topic=t", body), (200, b"OK")
                )
            request("POST", f"http://{node.http_hostport}/channel/create?topic=t&channel=c")
        consumer = RawClient(self.nodes[0].tcp_address)
        self.addCleanup(consumer.close)
        consumer.identify({"client_id": "admin-test", "hostname": "consumer.host", "user_agent": "itest/1"})
        consumer.sub("t", "c")

        # Both nsqd register the topic with lookupd.
        wait_until(
            "/api/nodes lists both nsqd with topic t",
            lambda: self.api("GET", "/api/nodes")[1],
            lambda answer: len(answer["nodes"]) == 2 and all(n["topics"] for n in answer["nodes"]),
            TIMEOUT,
        )
        code, answer = self.api("GET", "/api/topics")
        self.assertEqual((code, answer), (200, {"topics": ["t"], "message": ""}))

        code, nodes = self.api("GET", "/api/nodes")
        self.assertEqual(
            sorted(f"{n['broadcast_address']}:{n['http_port']}" for n in nodes["nodes"]),
            sorted(self.names(node) for node in self.nodes),
        )
        for node in nodes["nodes"]:
            self.assertEqual(node["topics"], [{"topic": "t", "tombstoned": False}])
            self.assertEqual((node["version"], node["out_of_date"]), ("1.3.0", False))
            self.assertEqual(len(node["remote_addresses"]), 1)

        code, topic = self.api("GET", "/api/topics/t")
        self.assertEqual(code, 200)
        self.assertEqual((topic["node"], topic["message_count"], topic["message"]), ("*", 3, ""))
        self.assertEqual(
            sorted(row["node"] for row in topic["nodes"]), sorted(self.names(n) for n in self.nodes)
        )
        [channel] = topic["channels"]
        self.assertEqual((channel["channel_name"], channel["depth"]), ("c", 3))

        code, channel = self.api("GET", "/api/topics/t/c")
        self.assertEqual(code, 200)
        self.assertEqual((channel["depth"], channel["client_count"], channel["message"]), (3, 1, ""))
        [client] = channel["clients"]
        self.assertEqual(
            (client["client_id"], client["hostname"], client["user_agent"], client["node"]),
            ("admin-test", "consumer.host", "itest/1", self.names(self.nodes[0])),
        )
        self.assertGreaterEqual(client["connected"], 0)

        code, node = self.api("GET", f"/api/nodes/{self.names(self.nodes[1])}")
        self.assertEqual((code, node["total_messages"], node["total_clients"]), (200, 2, 0))

        code, counter = self.api("GET", "/api/counter")
        self.assertEqual(code, 200)
        self.assertEqual(sorted(counter["stats"]), sorted(f"t:c:{self.names(n)}" for n in self.nodes))

        # Actions through the API reach every nsqd.
        self.assertEqual(self.api("POST", "/api/topics/t/c", {"action": "pause"}), (200, {"message": ""}))
        for node in self.nodes:
            self.assertTrue(self.stats(node)["topics"][0]["channels"][0]["paused"])
        self.assertEqual(self.api("POST", "/api/topics/t", {"action": "empty"}), (200, {"message": ""}))
        self.assertEqual(self.api("POST", "/api/topics/t/c", {"action": "empty"}), (200, {"message": ""}))
        for node in self.nodes:
            [topic_stats] = self.stats(node)["topics"]
            self.assertEqual((topic_stats["depth"], topic_stats["channels"][0]["depth"]), (0, 0))
        self.assertEqual(self.api("DELETE", "/api/topics/t/c"), (200, {"message": ""}))
        for node in self.nodes:
            self.assertEqual(self.stats(node)["topics"][0]["channels"], [])
        self.assertEqual(self.api("DELETE", "/api/topics/t"), (200, {"message": ""}))
        for node in self.nodes:
            self.assertIn(self.stats(node)["topics"], ([], None))

    def test_errors(self) -> None:
        self.assertEqual(self.api("GET", "/api/nodes/nope:1"), (404, {"message": "NODE_NOT_FOUND"}))
        self.assertEqual(
            self.api("POST", "/api/topics/t", {"action": "x"}), (400, {"message": "INVALID_ACTION"})
        )
        self.assertEqual(request("GET", self.base + "/ping"), (200, b"OK"))
        code, answer = self.api("GET", "/api/topics/unknown")
        self.assertEqual(code, 502)
        self.assertTrue(answer["message"].startswith("UPSTREAM_ERROR: failed to query any nsqlookupd: "))
