"""
Tests for L{twisted_nsq.nsqadmin.pages}: every page rendered through C{StubTreq} over a fake
L{IClusterView} holding canned answers in the shapes of spec 5.3.
"""

from __future__ import annotations

import re
from html import escape as html_escape
from html.parser import HTMLParser
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted_nsq.nsqadmin.interfaces import IClusterView, JSONObject, NodeNotFound, UpstreamError
from twisted_nsq.nsqadmin.pages import (
    Pages,
    PageSettings,
    client_row,
    content_security_policy,
    format_duration,
    format_latency,
    graphite_metrics,
    graphite_render_url,
    graphite_target,
    node_name,
    statsd_key,
)

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_ATTR = '"><img src=x onerror=alert(1)>'


def e2e(*quantiles: tuple[float, int]) -> JSONObject:
    return {
        "count": 10,
        "percentiles": [
            {"quantile": q, "value": v, "min": v // 2, "max": v * 2, "average": v, "count": 10}
            for q, v in quantiles
        ],
        "topic": "orders",
        "channel": "",
        "host": "*",
    }


def node_channel(node: str, name: str, **extra: Any) -> JSONObject:
    stats: JSONObject = {
        "node": node,
        "hostname": node.split(":")[0],
        "topic_name": "orders",
        "channel_name": name,
        "depth": 5,
        "memory_depth": 3,
        "backend_depth": 2,
        "in_flight_count": 7,
        "deferred_count": 1,
        "requeue_count": 4,
        "timeout_count": 2,
        "message_count": 1000,
        "client_count": 1,
        "paused": False,
        "e2e_processing_latency": {"count": 0, "percentiles": None},
    }
    stats.update(extra)
    return stats


def client(node: str, **extra: Any) -> JSONObject:
    stats: JSONObject = {
        "node": node,
        "remote_address": "10.1.1.1:50000",
        "version": "V2",
        "client_id": "consumer-1",
        "hostname": "worker.example",
        "user_agent": "pynsq/0.9.1",
        "connect_ts": 1_700_000_000,
        "connected": 434_000_000_000,
        "in_flight_count": 3,
        "ready_count": 25,
        "finish_count": 1234,
        "requeue_count": 5,
        "message_count": 1242,
        "sample_rate": 0,
        "deflate": False,
        "snappy": True,
        "tls": True,
        "tls_cipher_suite": "TLS_AES_128_GCM_SHA256",
        "tls_version": "TLS1.3",
        "tls_negotiated_protocol": "",
        "tls_negotiated_protocol_is_mutual": False,
        "authed": True,
        "auth_identity": "alice",
        "auth_identity_url": "https://auth.example/alice",
    }
    stats.update(extra)
    return stats


NODE_A = "10.0.0.1:4151"
NODE_B = "10.0.0.2:4151"

TOPIC: JSONObject = {
    "node": "*",
    "hostname": "",
    "topic_name": "orders",
    "depth": 1234567,
    "memory_depth": 1234000,
    "backend_depth": 567,
    "message_count": 9876543,
    "paused": True,
    "e2e_processing_latency": e2e((0.99, 11_506_430_048), (0.5, 3_200_000)),
    "nodes": [
        {
            "node": NODE_A,
            "hostname": "nsqd-a",
            "topic_name": "orders",
            "depth": 1000000,
            "memory_depth": 999990,
            "backend_depth": 10,
            "message_count": 5000000,
            "paused": True,
            "channels": [node_channel(NODE_A, "billing"), node_channel(NODE_A, "audit")],
            "e2e_processing_latency": e2e((0.99, 2_000_000)),
        },
        {
            "node": NODE_B,
            "hostname": "nsqd-b",
            "topic_name": "orders",
            "depth": 234567,
            "backend_depth": 557,
            "message_count": 4876543,
            "paused": True,
            "channels": [node_channel(NODE_B, "billing", ordered=True)],
        },
    ],
    "channels": [
        {
            **node_channel("*", "billing", depth=10, in_flight_count=14, client_count=2, paused=True),
            "nodes": [node_channel(NODE_A, "billing"), node_channel(NODE_B, "billing", ordered=True)],
        },
        {**node_channel("*", "audit"), "nodes": [node_channel(NODE_A, "audit")]},
    ],
    "message": "",
}

CHANNEL: JSONObject = {
    **node_channel("*", "billing", depth=10, in_flight_count=14, client_count=2, ordered=True),
    "e2e_processing_latency": e2e((0.99, 5_000_000)),
    "nodes": [node_channel(NODE_A, "billing"), node_channel(NODE_B, "billing", paused=True)],
    "clients": [
        client(NODE_A),
        client(
            NODE_B,
            client_id=XSS_SCRIPT,
            hostname=XSS_ATTR,
            user_agent=XSS_SCRIPT + XSS_ATTR,
            remote_address=XSS_ATTR,
            tls=False,
            tls_version="",
            snappy=False,
            authed=False,
            auth_identity=XSS_SCRIPT,
            auth_identity_url="javascript:alert(1)",
            topology_zone=XSS_ATTR,
            connected=3_723_000_000_000,
        ),
    ],
    "message": "",
}

NODES: JSONObject = {
    "nodes": [
        {
            "remote_addresses": ["127.0.0.1:4161/10.0.0.1:40000", "127.0.0.2:4161/10.0.0.1:40001"],
            "remote_address": "10.0.0.1:40000",
            "hostname": "nsqd-a",
            "broadcast_address": "10.0.0.1",
            "tcp_port": 4150,
            "http_port": 4151,
            "version": "1.3.0",
            "topics": [{"topic": "orders", "tombstoned": False}, {"topic": "old", "tombstoned": True}],
            "out_of_date": False,
        },
        {
            "remote_addresses": ["127.0.0.1:4161/10.0.0.2:40000"],
            "remote_address": "10.0.0.2:40000",
            "hostname": "nsqd-b",
            "broadcast_address": "10.0.0.2",
            "tcp_port": 4150,
            "http_port": 4151,
            "version": "1.2.1",
            "topics": [{"topic": "orders", "tombstoned": False}],
            "out_of_date": True,
        },
    ],
    "message": "",
}

NODE: JSONObject = {
    "node": NODE_A,
    "topics": [
        {
            **TOPIC["nodes"][0],
            "channels": [
                {**node_channel(NODE_A, "billing"), "clients": [client(NODE_A)]},
                node_channel(NODE_A, "audit"),
            ],
        },
        {
            "node": NODE_A,
            "hostname": "nsqd-a",
            "topic_name": "events#ephemeral",
            "depth": 0,
            "backend_depth": 0,
            "message_count": 3,
            "paused": False,
            "channels": [],
        },
    ],
    "total_messages": 5000003,
    "total_clients": 1,
    "message": "",
}

COUNTER: JSONObject = {
    "stats": {
        f"orders:billing:{NODE_A}": {
            "node": NODE_A,
            "topic_name": "orders",
            "channel_name": "billing",
            "message_count": 1500,
        },
        f"orders:audit:{NODE_B}": {
            "node": NODE_B,
            "topic_name": "orders",
            "channel_name": "audit",
            "message_count": 2500000,
        },
    },
    "message": "",
}


@implementer(IClusterView)
class FakeClusterView:
    """Canned answers; C{failures} makes a method fail with an exception instead."""

    def __init__(self, lookupds: list[str] | None = None) -> None:
        self.lookupd_http_addresses = ["127.0.0.1:4161", "127.0.0.2:4161"] if lookupds is None else lookupds
        self.nsqd_http_addresses: list[str] = []
        self.topic_names = ["orders", "events#ephemeral"]
        self.topic_stats: dict[str, JSONObject] = {
            "orders": TOPIC,
            "events#ephemeral": {
                "node": "*",
                "topic_name": "events#ephemeral",
                "depth": 0,
                "backend_depth": 0,
                "message_count": 3,
                "paused": False,
                "nodes": [],
                "channels": [],
                "message": "",
            },
        }
        self.channel_stats = CHANNEL
        self.nodes_stats = NODES
        self.node_stats = {NODE_A: NODE}
        self.counter_stats = COUNTER
        self.inactive: JSONObject = {"topics": {"stale": ["c1", "c0"], "lonely": []}, "message": ""}
        self.failures: dict[str, Exception] = {}
        self.message = ""
        self.calls: list[tuple[Any, ...]] = []

    def _answer(self, name: str, value: JSONObject) -> Deferred[JSONObject]:
        if name in self.failures:
            return fail(self.failures[name])
        if self.message:
            value = {**value, "message": self.message}
        return succeed(value)

    def topics(self) -> Deferred[JSONObject]:
        return self._answer("topics", {"topics": list(self.topic_names), "message": ""})

    def inactive_topics(self) -> Deferred[JSONObject]:
        return self._answer("inactive_topics", self.inactive)

    def topic_summaries(self) -> Deferred[JSONObject]:
        # Fails like topics(): the page reads both from the same upstreams.
        summaries = [
            self.topic_stats.get(name)
            or {"node": "", "topic_name": name, "depth": 0, "memory_depth": 0, "backend_depth": 0}
            | {"message_count": 0, "nodes": [], "channels": [], "paused": False}
            for name in sorted(self.topic_names)
        ]
        return self._answer("topics", {"topics": summaries, "message": ""})

    def topic(self, topic: str) -> Deferred[JSONObject]:
        self.calls.append(("topic", topic))
        if topic not in self.topic_stats:
            return fail(UpstreamError(f"topic {topic} is unreadable"))
        return self._answer("topic", self.topic_stats[topic])

    def channel(self, topic: str, channel: str) -> Deferred[JSONObject]:
        self.calls.append(("channel", topic, channel))
        return self._answer("channel", self.channel_stats)

    def nodes(self) -> Deferred[JSONObject]:
        return self._answer("nodes", self.nodes_stats)

    def node(self, node: str) -> Deferred[JSONObject]:
        self.calls.append(("node", node))
        if node not in self.node_stats:
            return fail(NodeNotFound(node))
        return self._answer("node", self.node_stats[node])

    def counter(self) -> Deferred[JSONObject]:
        return self._answer("counter", self.counter_stats)

    def create_topic_channel(self, topic: str, channel: str | None) -> Deferred[str]:
        return succeed("")

    def topic_action(self, topic: str, action: str) -> Deferred[str]:
        return succeed("")

    def channel_action(self, topic: str, channel: str, action: str) -> Deferred[str]:
        return succeed("")

    def delete_topic(self, topic: str) -> Deferred[str]:
        return succeed("")

    def delete_channel(self, topic: str, channel: str) -> Deferred[str]:
        return succeed("")

    def tombstone_topic_producer(self, node: str, topic: str) -> Deferred[str]:
        return succeed("")


class Reply:
    """One response as a test sees it."""

    def __init__(self, code: int, headers: dict[bytes, list[bytes]], body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body
        self.text = body.decode("utf-8")

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


class Elements(HTMLParser):
    """Every start tag of a document with its attributes, and the ids seen."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str | None = None, **attributes: str) -> list[dict[str, str | None]]:
        wanted = {k.replace("_", "-"): v for k, v in attributes.items()}
        return [
            attrs
            for name, attrs in self.tags
            if (tag is None or name == tag) and all(attrs.get(k) == v for k, v in wanted.items())
        ]


def elements(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    parser.close()
    return parser


class PagesTestCase(SynchronousTestCase):
    base_path = "/admin/"

    def setUp(self) -> None:
        self.view = FakeClusterView()
        self.settings = PageSettings(base_path=self.base_path, version="1.3.0-test")
        self.stub: Any = StubTreq(Pages(self.view, self.settings).resource())

    def use(self, settings: PageSettings, view: FakeClusterView | None = None) -> None:
        if view is not None:
            self.view = view
        self.settings = settings
        self.stub = StubTreq(Pages(self.view, settings).resource())

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        replies: list[Reply] = []

        def got(response: Any) -> Any:
            raw = {k.lower(): v for k, v in response.headers.getAllRawHeaders()}
            return self.stub.content(response).addCallback(
                lambda body: replies.append(Reply(response.code, raw, body))
            )

        d = self.stub.request("GET", "http://admin.test" + path, headers=headers or {})
        d.addCallback(got)
        self.stub.flush()
        self.assertEqual(len(replies), 1, "no response")
        return replies[0]

    def page(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        """GET a page that must render: 200, HTML, ids unique."""
        reply = self.get(path, headers)
        self.assertEqual(reply.code, 200, reply.text)
        self.assertEqual(reply.header(b"Content-Type"), b"text/html; charset=utf-8")
        ids = [a["id"] for _, a in elements(reply.text).tags if a.get("id")]
        self.assertEqual(len(ids), len(set(ids)), f"duplicate ids: {ids}")
        return reply

    def row(self, html: str, within: str | None = None, **attributes: str) -> str:
        """
        The text of the one C{<tr>} whose C{data-...} attributes are exactly C{attributes}, in the
        table whose id is C{within} when given.
        """
        if within is not None:
            tables = re.findall(r'<table[^>]* id="' + within + r'"[^>]*>.*?</table>', html, re.S)
            self.assertEqual(len(tables), 1, within)
            html = tables[0]
        wanted = {f"data-{k}": html_escape(v) for k, v in attributes.items()}
        matches = [
            text
            for opening, text in re.findall(r"((<tr[^>]*>).*?</tr>)", html, re.S)
            for text, opening in [(opening, text)]
            if dict(re.findall(r'(data-[a-z]+)="([^"]*)"', opening)) == wanted
        ]
        self.assertEqual(len(matches), 1, f"rows with {wanted}: {matches}")
        return str(matches[0])

    def cells(self, row: str) -> list[str]:
        return [
            re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
        ]


class SettingsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """The defaults are nsqadmin's (spec 8.4)."""
        s = PageSettings()
        self.assertEqual(
            (
                s.base_path,
                s.admin_users,
                s.acl_http_header,
                s.graphite_url,
                s.proxy_graphite,
                s.statsd_prefix,
                s.statsd_counter_format,
                s.statsd_gauge_format,
                s.statsd_interval,
            ),
            (
                "/",
                (),
                "X-Forwarded-User",
                "",
                False,
                "nsq.%s",
                "stats.counters.%s.count",
                "stats.gauges.%s",
                60.0,
            ),
        )

    def test_base_path_normalised(self) -> None:
        """The base path always starts and ends with one C{/}."""
        for given, expected in [
            ("", "/"),
            ("/", "/"),
            ("admin", "/admin/"),
            ("/admin", "/admin/"),
            ("/a/b/", "/a/b/"),
        ]:
            self.assertEqual(PageSettings(base_path=given).base_path, expected)

    def test_admin_users_tuple(self) -> None:
        self.assertEqual(PageSettings(admin_users=["a", "b"]).admin_users, ("a", "b"))

    def test_fake_view_provides_interface(self) -> None:
        self.assertTrue(verifyObject(IClusterView, FakeClusterView()))


class TopicsPageTests(PagesTestCase):
    def test_topics(self) -> None:
        """Every topic with its depth, memory + disk, messages and channel count, linked."""
        html = self.page("/topics").text
        self.assertIn('id="topics-table"', html)
        orders = self.row(html, topic="orders")
        self.assertEqual(
            self.cells(orders), ["orders paused", "1,234,567", "1,234,000 + 567", "9,876,543", "2"]
        )
        self.assertIn('href="/admin/topics/orders"', orders)
        ephemeral = self.row(html, topic="events#ephemeral")
        self.assertIn('href="/admin/topics/events%23ephemeral"', ephemeral)
        self.assertNotIn("label-paused", ephemeral)

    def test_root_is_topics(self) -> None:
        """C{/} shows the topics page."""
        html = self.page("/").text
        self.assertIn('id="topics-table"', html)
        self.assertIn('data-page="topics"', html)

    def test_chrome(self) -> None:
        """The full page: assets, nav and links under the base path, the version in the footer."""
        html = self.page("/topics").text
        found = elements(html)
        self.assertTrue(html.startswith("<!doctype html>"))
        self.assertEqual(found.find("body")[0]["data-base-path"], "/admin/")
        nav = [str(a.get("href")) for a in found.find("a")]
        for target in ("/admin/topics", "/admin/nodes", "/admin/counter", "/admin/lookup"):
            self.assertIn(target, nav)
        scripts = found.find("script")
        self.assertEqual(len(scripts), 1)
        self.assertTrue(str(scripts[0]["src"]).startswith("/admin/static/nsqadmin.js?v="))
        self.assertTrue(
            str(found.find("link", rel="stylesheet")[0]["href"]).startswith("/admin/static/nsqadmin.css?v=")
        )
        self.assertIn("v1.3.0-test", html)
        self.assertEqual(len(found.find("main", id="content")), 1)
        self.assertEqual(found.find("main")[0]["data-refresh-interval"], "5000")
        self.assertEqual(len(found.find("div", id="flash")), 1)
        # No inline script or handler, so a strict CSP holds.
        self.assertNotIn("<script>", html)
        self.assertIsNone(re.search(r"\son[a-z]+=", html))
        self.assertNotIn("style=", html)

    def test_headers(self) -> None:
        """Pages carry the CSP, are never cached and refuse framing."""
        reply = self.page("/topics")
        self.assertEqual(
            reply.header(b"Content-Security-Policy"), b"default-src 'self'; img-src 'self' data:"
        )
        self.assertEqual(reply.header(b"Cache-Control"), b"no-store")
        self.assertEqual(reply.header(b"X-Content-Type-Options"), b"nosniff")
        self.assertEqual(reply.header(b"X-Frame-Options"), b"DENY")

    def test_topic_without_producers(self) -> None:
        """A topic lookupd lists but no producer has shows with zero counts; no per-topic reads."""
        self.view.topic_names.append("dormant")
        html = self.page("/topics").text
        self.assertEqual(self.cells(self.row(html, topic="dormant")), ["dormant", "0", "0 + 0", "0", "0"])
        self.assertIn("9,876,543", self.row(html, topic="orders"))
        self.assertEqual([call for call in self.view.calls if call[0] == "topic"], [])

    def test_no_topics(self) -> None:
        self.view.topic_names = []
        html = self.page("/topics").text
        self.assertNotIn("topics-table", html)
        self.assertIn("No topics", html)

    def test_list_fails(self) -> None:
        """Every upstream failing gives a 502 page with the message."""
        self.view.failures["topics"] = UpstreamError("lookupd 127.0.0.1:4161: connection refused")
        reply = self.get("/topics")
        self.assertEqual(reply.code, 502)
        self.assertIn("UPSTREAM_ERROR: lookupd 127.0.0.1:4161: connection refused", reply.text)
        self.assertIn('data-page="error"', reply.text)
        self.assertEqual(reply.header(b"Content-Type"), b"text/html; charset=utf-8")

    def test_warning_banner(self) -> None:
        """The view's WARNING message is shown as a banner."""
        self.view.message = "WARNING: 1 of 2 lookupds failed"
        html = self.page("/topics").text
        self.assertEqual(html.count("WARNING: 1 of 2 lookupds failed"), 1)
        self.assertIn('<div class="warning-banner" role="alert">WARNING: 1 of 2 lookupds failed</div>', html)

    def test_warning_escaped(self) -> None:
        self.view.message = "WARNING: " + XSS_SCRIPT
        html = self.page("/topics").text
        self.assertNotIn(XSS_SCRIPT, html)
        self.assertIn("WARNING: &lt;script&gt;alert(1)&lt;/script&gt;", html)


class TopicPageTests(PagesTestCase):
    def test_nodes(self) -> None:
        """Per-node rows: depths, and in-flight etc. summed over the node's channels."""
        html = self.page("/topics/orders").text
        self.assertIn('id="topic-nodes-table"', html)
        a = self.row(html, topic="orders", node=NODE_A)
        self.assertEqual(
            self.cells(a)[:9],
            [f"{NODE_A} nsqd-a paused", "1,000,000", "999,990 + 10", "14", "2", "8", "4", "5,000,000", "2"],
        )
        self.assertIn("p99 2.0ms", self.cells(a)[9])
        self.assertIn(f'href="/admin/nodes/{NODE_A}"', a)
        b = self.row(html, topic="orders", node=NODE_B)
        # memory_depth is derived when a node does not give it.
        self.assertEqual(self.cells(b)[1:3], ["234,567", "234,010 + 557"])

    def test_channels(self) -> None:
        """The channel list with the same columns, links, paused and ordered labels."""
        html = self.page("/topics/orders").text
        billing = self.row(html, topic="orders", channel="billing")
        self.assertEqual(
            self.cells(billing)[:9],
            ["billing paused ordered", "10", "3 + 2", "14", "1", "4", "2", "1,000", "2"],
        )
        self.assertIn('href="/admin/topics/orders/billing"', billing)
        self.assertIn('class="label label-ordered"', billing)
        self.assertIn('class="label label-paused"', billing)
        audit = self.row(html, topic="orders", channel="audit")
        self.assertNotIn("label-ordered", audit)
        self.assertNotIn("label-paused", audit)

    def test_channel_ordered_by_key(self) -> None:
        """The channel list reads the order key from the nodes' rows, escaped."""
        topic = dict(self.view.topic_stats["orders"])
        billing, audit = topic["channels"]
        nodes = [dict(node) for node in billing["nodes"]]
        nodes[1]["order_key"] = "prefix:<|>"
        topic["channels"] = [{**billing, "nodes": nodes}, audit]
        self.view.topic_stats["orders"] = topic
        html = self.page("/topics/orders").text
        row = self.row(html, topic="orders", channel="billing")
        self.assertEqual(self.cells(row)[0], "billing paused ordered by prefix:&lt;|&gt;")
        self.assertIn('class="label label-ordered"', row)
        self.assertIn("ordered by prefix:&lt;|&gt;</span>", row)

    def test_paused_and_e2e(self) -> None:
        """The paused label on the topic and its E2E percentiles."""
        html = self.page("/topics/orders").text
        self.assertRegex(
            html, r"<h1>Topic <span class=\"name\">orders</span>\s*<span class=\"label label-paused\">"
        )
        self.assertIn('<th scope="row">p99</th><td class="num">11.5s</td>', html)
        self.assertIn('<th scope="row">p50</th><td class="num">3.2ms</td>', html)

    def test_charts(self) -> None:
        """Three live charts fed by the topic's JSON API, no graphite without a graphite URL."""
        html = self.page("/topics/events%23ephemeral").text
        found = elements(html)
        section = found.find("section", id="charts")[0]
        self.assertEqual(section["data-api"], "/admin/api/topics/events%23ephemeral")
        self.assertEqual(section["data-kind"], "topic")
        self.assertEqual([s["data-metric"] for s in found.find("svg")], ["rate", "depth", "in_flight"])
        self.assertTrue(all(s["class"] == "chart" for s in found.find("svg")))
        self.assertNotIn("sparkline", html)
        self.assertIn(("topic", "events#ephemeral"), self.view.calls)

    def test_no_producers(self) -> None:
        html = self.page("/topics/events%23ephemeral").text
        self.assertNotIn("topic-nodes-table", html)
        self.assertIn("No nsqd produces this topic.", html)
        self.assertIn("No channels", html)

    def test_actions_for_admin(self) -> None:
        """With no admin users everyone gets the topic actions, each asking for confirmation."""
        found = elements(self.page("/topics/orders").text)
        buttons = {b["data-action"]: b for b in found.find("button") if b.get("data-action")}
        self.assertEqual(set(buttons), {"unpause", "empty", "delete"})
        self.assertEqual(buttons["delete"]["data-topic"], "orders")
        self.assertEqual(buttons["delete"]["data-after"], "/admin/topics")
        self.assertNotIn("data-channel", buttons["delete"])
        for b in buttons.values():
            self.assertTrue(b["data-confirm"])

    def test_pause_when_not_paused(self) -> None:
        found = elements(self.page("/topics/events%23ephemeral").text)
        actions = [b["data-action"] for b in found.find("button") if b.get("data-action")]
        self.assertEqual(actions, ["pause", "empty", "delete"])

    def test_upstream_error(self) -> None:
        self.view.failures["topic"] = UpstreamError("nsqd 10.0.0.1:4151: timeout")
        reply = self.get("/topics/orders")
        self.assertEqual(reply.code, 502)
        self.assertIn("UPSTREAM_ERROR: nsqd 10.0.0.1:4151: timeout", reply.text)


class ChannelPageTests(PagesTestCase):
    def test_nodes(self) -> None:
        html = self.page("/topics/orders/billing").text
        self.assertIn(("channel", "orders", "billing"), self.view.calls)
        self.assertIn('id="channel-nodes-table"', html)
        a = self.row(html, topic="orders", channel="billing", node=NODE_A)
        self.assertEqual(
            self.cells(a)[:9], [f"{NODE_A} 10.0.0.1", "5", "3 + 2", "7", "1", "4", "2", "1,000", "1"]
        )
        self.assertIn("label-paused", self.row(html, topic="orders", channel="billing", node=NODE_B))
        self.assertRegex(
            html, r"<h1>Channel <span class=\"name\">billing</span>\s*<span class=\"label label-ordered\""
        )

    def test_ordered_by_key_label(self) -> None:
        """A channel ordered by key shows its key, escaped, in the same ordered label."""
        self.view.channel_stats = {**CHANNEL, "order_key": f"json:{XSS_SCRIPT}"}
        html = self.page("/topics/orders/billing").text
        self.assertNotIn(XSS_SCRIPT, html)
        self.assertRegex(
            html,
            r"<h1>Channel <span class=\"name\">billing</span>\s*<span class=\"label label-ordered\"[^>]*>"
            + re.escape(f"ordered by json:{html_escape(XSS_SCRIPT, quote=False)}")
            + "</span>",
        )

    def test_clients(self) -> None:
        """Client host, user agent and protocol, attributes, nsqd, counts and connected time."""
        html = self.page("/topics/orders/billing").text
        self.assertIn('id="clients-table"', html)
        row = self.row(html, node=NODE_A)
        cells = self.cells(row)
        self.assertIn("worker.example", cells[0])
        self.assertIn("consumer-1", cells[0])
        self.assertIn("10.1.1.1:50000", cells[0])
        self.assertEqual(re.sub(r"\s+", " ", cells[1]), "pynsq/0.9.1 V2")
        self.assertIn("TLS TLS1.3", cells[2])
        self.assertIn("snappy", cells[2])
        self.assertIn('href="https://auth.example/alice"', row)
        self.assertEqual(cells[3:], [NODE_A, "3", "25", "1,234", "5", "1,242", "7m14s"])

    def test_client_strings_escaped(self) -> None:
        """Client-chosen strings are text: escaped everywhere, never raw HTML."""
        html = self.page("/topics/orders/billing").text
        self.assertNotIn("<script>alert", html)
        self.assertNotIn("<img src=x", html)
        self.assertNotIn('"><img', html)
        self.assertNotIn("javascript:", html)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", html)
        self.assertIn("&#34;&gt;&lt;img src=x onerror=alert(1)&gt;", html)
        row = self.row(html, node=NODE_B)
        self.assertIn('<span class="client-host">&#34;&gt;&lt;img src=x onerror=alert(1)&gt;</span>', row)
        self.assertIn("1h2m3s", row)
        # The parsed document holds the strings as text, and no element came from them.
        found = elements(html)
        self.assertEqual(found.find("img"), [])
        self.assertEqual(len(found.find("script")), 1)

    def test_charts(self) -> None:
        found = elements(self.page("/topics/orders/billing").text)
        section = found.find("section", id="charts")[0]
        self.assertEqual(section["data-api"], "/admin/api/topics/orders/billing")
        self.assertEqual(section["data-kind"], "channel")
        self.assertEqual(
            [s["data-metric"] for s in found.find("svg", **{"class": "chart"})],
            ["rate", "depth", "in_flight"],
        )

    def test_actions(self) -> None:
        found = elements(self.page("/topics/orders/billing").text)
        buttons = {b["data-action"]: b for b in found.find("button") if b.get("data-action")}
        self.assertEqual(set(buttons), {"pause", "empty", "delete"})
        self.assertEqual(
            (buttons["pause"]["data-topic"], buttons["pause"]["data-channel"]), ("orders", "billing")
        )
        self.assertEqual(buttons["delete"]["data-after"], "/admin/topics/orders")

    def test_no_clients(self) -> None:
        self.view.channel_stats = {**CHANNEL, "clients": []}
        html = self.page("/topics/orders/billing").text
        self.assertNotIn("clients-table", html)
        self.assertIn("No client is connected", html)


class NodesPageTests(PagesTestCase):
    def test_nodes(self) -> None:
        """Hostname, address, ports, version, topics and lookupd registrations."""
        html = self.page("/nodes").text
        self.assertIn('id="nodes-table"', html)
        a = self.row(html, node=NODE_A)
        cells = self.cells(a)
        self.assertEqual(cells[:5], ["nsqd-a", "10.0.0.1", "4150", "4151", "1.3.0"])
        self.assertIn("2", cells[6])
        self.assertIn("label-tombstoned", a)
        self.assertIn("2 / 2", cells[7])
        self.assertNotIn("label-out-of-date", a)
        self.assertNotIn("not registered with every lookupd", a)
        self.assertIn('href="/admin/nodes/10.0.0.1:4151"', a)

    def test_out_of_date_and_unregistered(self) -> None:
        """An older nsqd is flagged, and one missing from a lookupd warns."""
        b = self.row(self.page("/nodes").text, node=NODE_B)
        self.assertIn('class="label label-out-of-date"', b)
        self.assertIn("1 / 2", b)
        self.assertIn("not registered with every lookupd", b)
        self.assertIn('class="row-warning"', b)

    def test_without_lookupd(self) -> None:
        self.use(self.settings, FakeClusterView(lookupds=[]))
        b = self.row(self.page("/nodes").text, node=NODE_B)
        self.assertIn("no lookupd", b)
        self.assertNotIn("not registered", b)

    def test_ipv6_node_name(self) -> None:
        self.assertEqual(node_name({"broadcast_address": "::1", "http_port": 4151}), "[::1]:4151")
        self.assertEqual(node_name({"broadcast_address": "h", "http_port": 1}), "h:1")


class NodePageTests(PagesTestCase):
    def test_node(self) -> None:
        """Its topics and channels with totals, clients, and a tombstone action per topic."""
        html = self.page("/nodes/10.0.0.1%3A4151").text
        self.assertIn(("node", NODE_A), self.view.calls)
        self.assertIn('id="node-topics-table"', html)
        orders = self.row(html, node=NODE_A, topic="orders")
        self.assertEqual(self.cells(orders)[1:3], ["1,000,000", "999,990 + 10"])
        tombstone = elements(orders).find("button", data_action="tombstone")[0]
        self.assertEqual((tombstone["data-topic"], tombstone["data-node"]), ("orders", NODE_A))
        billing = self.row(html, "node-topics-table", node=NODE_A, topic="orders", channel="billing")
        self.assertIn('href="/admin/topics/orders/billing"', billing)
        consumer = self.row(html, "node-clients-table", node=NODE_A, topic="orders", channel="billing")
        self.assertEqual(self.cells(consumer)[3:], ["3", "25", "1,234", "5", "1,242", "7m14s"])
        ephemeral = self.row(html, node=NODE_A, topic="events#ephemeral")
        self.assertIn('href="/admin/topics/events%23ephemeral"', ephemeral)
        self.assertIn('<dd id="node-total-messages">5,000,003</dd>', html)
        self.assertIn('<dd id="node-total-clients">1</dd>', html)
        self.assertIn('<dd id="node-total-topics">2</dd>', html)
        self.assertIn('<dd id="node-total-channels">2</dd>', html)
        self.assertIn('id="node-clients-table"', html)
        self.assertIn("worker.example", html)

    def test_not_found(self) -> None:
        """An unknown node is a 404 page."""
        reply = self.get("/nodes/10.9.9.9%3A4151")
        self.assertEqual(reply.code, 404)
        self.assertIn("No nsqd is 10.9.9.9:4151.", reply.text)
        self.assertIn('data-page="error"', reply.text)


class CounterAndLookupTests(PagesTestCase):
    def test_counter(self) -> None:
        """The total of every channel's message count, and the API the script polls."""
        found = elements(self.page("/counter").text)
        self.assertEqual(found.find(id="counter-value")[0]["data-total"], "2501500")
        self.assertIn('id="counter-value" data-total="2501500">2,501,500</p>', self.get("/counter").text)
        self.assertEqual(found.find("section", id="counter")[0]["data-api"], "/admin/api/counter")

    def test_lookup(self) -> None:
        """lookupd hosts, inactive topics and channels, and the create form."""
        html = self.page("/lookup").text
        self.assertIn("<li>127.0.0.1:4161</li>", html)
        self.assertIn("<li>127.0.0.2:4161</li>", html)
        self.assertIn('id="inactive-table"', html)
        self.assertIn('href="/admin/topics/stale"', self.row(html, topic="stale"))
        self.row(html, topic="stale", channel="c0")
        self.row(html, topic="stale", channel="c1")
        self.assertLess(html.index('data-channel="c0"'), html.index('data-channel="c1"'))
        self.row(html, topic="lonely")
        found = elements(html)
        self.assertEqual(len(found.find("form", id="create-form")), 1)
        self.assertEqual(len(found.find("button", data_action="create")), 1)
        self.assertEqual(len(found.find("input", name="topic")), 1)
        self.assertEqual(len(found.find("input", name="channel")), 1)

    def test_lookup_without_lookupd(self) -> None:
        self.use(self.settings, FakeClusterView(lookupds=[]))
        self.view.inactive = {"topics": {}, "message": ""}
        html = self.page("/lookup").text
        self.assertIn("no lookupd is configured", html)
        self.assertNotIn("inactive-table", html)


class FragmentTests(PagesTestCase):
    def test_fragment(self) -> None:
        """C{?fragment=1} renders only C{<main id="content">}."""
        for path in [
            "/topics",
            "/topics/orders",
            "/topics/orders/billing",
            "/nodes",
            "/nodes/10.0.0.1:4151",
            "/lookup",
            "/counter",
        ]:
            html = self.page(path + "?fragment=1").text.strip()
            self.assertTrue(html.startswith('<main id="content"'), path)
            self.assertTrue(html.endswith("</main>"), path)
            self.assertNotIn("<html", html)
            self.assertNotIn("site-header", html)
            self.assertNotIn('id="flash"', html)

    def test_fragment_error(self) -> None:
        self.view.failures["topic"] = UpstreamError("boom")
        reply = self.get("/topics/orders?fragment=1")
        self.assertEqual(reply.code, 502)
        self.assertTrue(reply.text.strip().startswith('<main id="content" data-page="error"'))

    def test_refresh_query(self) -> None:
        """C{?refresh=} sets the refresh period of the page; out of range keeps the default."""
        for query, expected in [
            ("?refresh=1.5", "1500"),
            ("?refresh=0", "0"),
            ("?refresh=-1", "5000"),
            ("?refresh=x", "5000"),
        ]:
            found = elements(self.page("/nodes" + query).text)
            self.assertEqual(found.find("main")[0]["data-refresh-interval"], expected)


class ErrorPageTests(PagesTestCase):
    def test_unknown_path(self) -> None:
        reply = self.get("/nope")
        self.assertEqual(reply.code, 404)
        self.assertIn("There is no page at this address.", reply.text)
        self.assertIn('data-page="error"', reply.text)

    def test_internal_error(self) -> None:
        """An unexpected failure is a logged 500 page."""
        self.view.failures["nodes"] = ZeroDivisionError("oops")
        reply = self.get("/nodes")
        self.assertEqual(reply.code, 500)
        self.assertIn("Internal error", reply.text)
        self.assertNotIn("oops", reply.text)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class ACLTests(PagesTestCase):
    PAGES = ["/topics/orders", "/topics/orders/billing", "/nodes/10.0.0.1:4151", "/lookup"]

    def actions(self, headers: dict[str, str] | None = None) -> list[str]:
        found: list[str] = []
        for path in self.PAGES:
            tags = elements(self.page(path, headers).text).tags
            found.extend(str(attrs["data-action"]) for _, attrs in tags if "data-action" in attrs)
        return found

    def test_everyone_is_admin_without_admin_users(self) -> None:
        self.assertEqual(
            sorted(set(self.actions())), ["create", "delete", "empty", "pause", "tombstone", "unpause"]
        )

    def test_hidden_without_header(self) -> None:
        """With admin users, actions are hidden from a request without the ACL header."""
        self.use(PageSettings(base_path="/admin/", admin_users=("alice",)))
        self.assertEqual(self.actions(), [])
        self.assertNotIn("create-form", self.page("/lookup").text)

    def test_hidden_for_other_user(self) -> None:
        self.use(PageSettings(base_path="/admin/", admin_users=("alice",)))
        self.assertEqual(self.actions({"X-Forwarded-User": "mallory"}), [])

    def test_shown_for_admin(self) -> None:
        """The ACL header naming an admin user shows them."""
        self.use(PageSettings(base_path="/admin/", admin_users=("alice",), acl_http_header="X-Remote-User"))
        self.assertEqual(self.actions({"X-Forwarded-User": "alice"}), [])
        self.assertEqual(
            sorted(set(self.actions({"X-Remote-User": "alice"}))),
            ["create", "delete", "empty", "pause", "tombstone", "unpause"],
        )


class StaticTests(PagesTestCase):
    def test_assets(self) -> None:
        """Each file with its type, an ETag and cache headers."""
        for name, content_type in [
            ("nsqadmin.js", b"text/javascript; charset=utf-8"),
            ("nsqadmin.css", b"text/css; charset=utf-8"),
            ("favicon.svg", b"image/svg+xml"),
        ]:
            reply = self.get("/static/" + name)
            self.assertEqual(reply.code, 200)
            self.assertEqual(reply.header(b"Content-Type"), content_type)
            self.assertEqual(reply.header(b"Cache-Control"), b"public, max-age=86400")
            self.assertEqual(reply.header(b"X-Content-Type-Options"), b"nosniff")
            self.assertRegex(reply.header(b"ETag") or b"", rb'^"[0-9a-f]{16}"$')
            self.assertTrue(reply.body)

    def test_asset_links_carry_etag(self) -> None:
        html = self.page("/topics").text
        etag = (self.get("/static/nsqadmin.js").header(b"ETag") or b"").decode().strip('"')
        self.assertIn(f"/admin/static/nsqadmin.js?v={etag}", html)

    def test_not_modified(self) -> None:
        etag = self.get("/static/nsqadmin.css").header(b"ETag") or b""
        reply = self.get("/static/nsqadmin.css", {"If-None-Match": etag.decode()})
        self.assertEqual((reply.code, reply.body), (304, b""))

    def test_traversal_refused(self) -> None:
        """Only files of static/ by name: no path, no escape, no hidden file."""
        for path in [
            "/static/..%2Fpages.py",
            "/static/%2E%2E%2Fpages.py",
            "/static/../pages.py",
            "/static/..%2F..%2Fnsqadmin%2Fpages.py",
            "/static/%2e%2e",
            "/static/.",
            "/static/templates%2Fbase.html",
            "/static/nope.js",
            "/static/",
            "/static/a/b.js",
        ]:
            reply = self.get(path)
            self.assertIn(reply.code, (404, 301, 308), path)
            self.assertNotIn(b"import", reply.body, path)
            self.assertNotIn(b"{%", reply.body, path)


class GraphiteTests(PagesTestCase):
    def graphite(self, **kwargs: Any) -> PageSettings:
        return PageSettings(base_path="/admin/", graphite_url="https://graphite.example:8443/g/", **kwargs)

    def test_statsd_key(self) -> None:
        """Keys are sanitised like statsdaemon: safe characters kept, space and slash mapped."""
        self.assertEqual(statsd_key("a b/c#ephemeral.d-e_f*"), "a_b-cephemeral.d-e_f")

    def test_targets(self) -> None:
        """Targets as spec 5.4: prefix with the host, the statsd format, summed over nodes."""
        s = PageSettings()
        self.assertEqual(
            graphite_target(s, "topic.t.depth", "gauge"), "sumSeries(stats.gauges.nsq.*.topic.t.depth)"
        )
        self.assertEqual(
            graphite_target(s, "topic.t.message_count", "counter", node="10.0.0.1:4151"),
            "sumSeries(stats.counters.nsq.10_0_0_1_4151.topic.t.message_count.count)",
        )
        self.assertEqual(
            graphite_metrics(s, "t#ephemeral", "c"),
            {
                "rate": "scaleToSeconds(sumSeries("
                "stats.counters.nsq.*.topic.tephemeral.channel.c.message_count.count),1)",
                "depth": "sumSeries(stats.gauges.nsq.*.topic.tephemeral.channel.c.depth)",
                "in_flight": "sumSeries(stats.gauges.nsq.*.topic.tephemeral.channel.c.in_flight_count)",
            },
        )
        self.assertEqual(
            graphite_metrics(s, "t")["in_flight"],
            "sumSeries(stats.gauges.nsq.*.topic.t.channel.*.in_flight_count)",
        )

    def test_render_url(self) -> None:
        url = graphite_render_url(self.graphite(), "sumSeries(x.*)")
        self.assertTrue(url.startswith("https://graphite.example:8443/g/render?target=sumSeries%28x.%2A%29&"))
        proxied = graphite_render_url(self.graphite(proxy_graphite=True), "x")
        self.assertTrue(proxied.startswith("/admin/render?target=x&"))

    def test_csp(self) -> None:
        self.assertEqual(
            content_security_policy(self.graphite()),
            "default-src 'self'; img-src 'self' data: https://graphite.example:8443",
        )

    def test_sparklines(self) -> None:
        """With a graphite URL, topic, channel and topics pages add graphite images."""
        self.use(self.graphite())
        reply = self.page("/topics/orders")
        self.assertEqual(
            reply.header(b"Content-Security-Policy"),
            b"default-src 'self'; img-src 'self' data: https://graphite.example:8443",
        )
        images = elements(reply.text).find("img", **{"class": "sparkline"})
        self.assertEqual([i["data-metric"] for i in images], ["rate", "depth", "in_flight"])
        self.assertTrue(
            all(str(i["src"]).startswith("https://graphite.example:8443/g/render?") for i in images)
        )
        self.assertIn(
            "stats.gauges.nsq.*.topic.orders.depth",
            str(images[1]["src"]).replace("%2A", "*").replace("%28", "(").replace("%29", ")"),
        )
        channel = elements(self.page("/topics/orders/billing").text).find("img", **{"class": "sparkline"})
        self.assertEqual(len(channel), 3)
        topics = elements(self.page("/topics").text).find("img", **{"class": "sparkline"})
        self.assertEqual(len(topics), 2)


class HelperTests(SynchronousTestCase):
    def test_latency(self) -> None:
        self.assertEqual(
            [
                format_latency(v)
                for v in (850, 12_500, 3_200_000, 11_506_430_048, 252_000_000_000, 7_384_000_000_000)
            ],
            ["850ns", "12.5µs", "3.2ms", "11.5s", "4m12s", "2h3m4s"],
        )

    def test_duration(self) -> None:
        self.assertEqual(
            [format_duration(v) for v in (0, 45_400_000_000, 434_000_000_000, 7_203_000_000_000)],
            ["0s", "45s", "7m14s", "2h0m3s"],
        )

    def test_auth_link_only_http(self) -> None:
        """The auth identity links only to an http(s) URL."""

        def make(url: str) -> Any:
            return client_row({"auth_identity_url": url})["auth_identity_url"]

        self.assertEqual(make("https://a/b"), "https://a/b")
        self.assertEqual(make("http://a/b"), "http://a/b")
        self.assertIsNone(make("javascript:alert(1)"))
        self.assertIsNone(make("JavaScript:alert(1)"))
        self.assertIsNone(make("data:text/html,x"))
