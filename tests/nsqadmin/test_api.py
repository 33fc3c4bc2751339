"""
Tests for L{twisted_nsq.nsqadmin.api} and L{twisted_nsq.nsqadmin.http}: the whole site through
C{StubTreq}, over a real L{ClusterView} against the fake cluster of L{tests.nsqadmin.test_cluster},
with a stand-in for the pages.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from tests.nsqadmin.test_cluster import ClusterFixture
from twisted_nsq._http import BodyLimit
from twisted_nsq.nsqadmin.http import NSQAdminHTTP
from twisted_nsq.nsqadmin.interfaces import IClusterView
from twisted_nsq.nsqadmin.notify import Notifier, basic_auth_user
from twisted_nsq.nsqadmin.options import NSQAdminOptions

V1 = [b"nsq; version=1.0"]
JSON = [b"application/json; charset=utf-8"]


class _StandInPages(Resource):
    """What the pages would serve: the path they were given."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        return b"page " + b"/".join(request.postpath or [])


def stand_in_pages(view: IClusterView, options: NSQAdminOptions) -> IResource:
    return _StandInPages()


class _Sink:
    """The notification endpoint and graphite: answers 200 (graphite: a canned render)."""

    def __init__(self) -> None:
        self.render: object = [{"target": "x", "datapoints": [[120.0, 1], [None, 2]]}]

    def handle(self, method: str, path: str, query: dict[str, str]) -> tuple[int, object]:
        if path == "/render":
            return 200, self.render
        return 200, None


class APITestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.fixture = ClusterFixture()
        self.sink = _Sink()
        self.fixture.cluster.hosts["notify.example"] = self.sink
        self.fixture.cluster.hosts["graphite.example"] = self.sink
        self.options = NSQAdminOptions(
            lookupd_http_addresses=["lookupd1:4161"],
            notification_http_endpoint="http://notify.example/hook",
        )
        self.build()

    def build(self, **settings: Any) -> None:
        for key, value in settings.items():
            setattr(self.options, key, value)
        self.options.validate()
        notifier = Notifier(
            self.options.notification_http_endpoint,
            self.fixture.http,
            self.fixture.clock,
            hostname=lambda: "adminhost",
        )
        self.site = NSQAdminHTTP(
            self.fixture.view, self.options, http=self.fixture.http, notifier=notifier, pages=stand_in_pages
        )
        self.client: Any = StubTreq(self.site.resource())

    def call(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, list[str]] | None = None
    ) -> tuple[int, Any, Any]:
        response = self.successResultOf(
            self.client.request(method, "http://admin.example" + path, data=body, headers=headers)
        )
        content = self.successResultOf(self.client.content(response))
        if response.headers.getRawHeaders(b"Content-Type") == JSON:
            return response.code, json.loads(content), response.headers
        return response.code, content, response.headers

    def notifications(self) -> list[dict[str, Any]]:
        return [
            json.loads(body) for line, _, body in self.fixture.cluster.requests if "notify.example" in line
        ]


class ReadingTests(APITestCase):
    def test_ping(self) -> None:
        code, body, headers = self.call("GET", "/ping")
        self.assertEqual((code, body), (200, b"OK"))
        self.assertIsNone(headers.getRawHeaders(b"X-NSQ-Content-Type"))

    def test_topics(self) -> None:
        code, body, headers = self.call("GET", "/api/topics")
        self.assertEqual((code, body), (200, {"topics": ["solo", "t"], "message": ""}))
        self.assertEqual(headers.getRawHeaders(b"X-NSQ-Content-Type"), V1)

    def test_inactive(self) -> None:
        self.fixture.lookupd.extra_topics["idle"] = ["x"]
        self.assertEqual(
            self.call("GET", "/api/topics?inactive=true")[:2],
            (200, {"topics": {"idle": ["x"]}, "message": ""}),
        )

    def test_topic_and_channel(self) -> None:
        code, body, _ = self.call("GET", "/api/topics/t")
        self.assertEqual((code, body["node"], body["depth"], body["message"]), (200, "*", 6, ""))
        code, body, _ = self.call("GET", "/api/topics/t/c")
        self.assertEqual((code, body["channel_name"], len(body["clients"])), (200, "c", 2))

    def test_nodes(self) -> None:
        code, body, _ = self.call("GET", "/api/nodes")
        self.assertEqual((code, [n["hostname"] for n in body["nodes"]]), (200, ["alpha-host", "zeta-host"]))
        code, body, _ = self.call("GET", "/api/nodes/nsqd2:4151")
        self.assertEqual((code, body["node"], body["total_messages"]), (200, "nsqd2:4151", 20))

    def test_node_not_found(self) -> None:
        self.assertEqual(self.call("GET", "/api/nodes/nope:1")[:2], (404, {"message": "NODE_NOT_FOUND"}))

    def test_counter(self) -> None:
        code, body, _ = self.call("GET", "/api/counter")
        self.assertEqual(
            (code, sorted(body["stats"])), (200, ["t:c:nsqd1:4151", "t:c:nsqd2:4151", "t:d:nsqd2:4151"])
        )

    def test_upstream_error(self) -> None:
        """Every upstream down: 502 with Go's text."""
        self.fixture.http.down.add("lookupd1:4161")
        code, body, _ = self.call("GET", "/api/topics")
        self.assertEqual(code, 502)
        self.assertEqual(
            body["message"],
            'UPSTREAM_ERROR: failed to query any nsqlookupd: Get "http://lookupd1:4161/topics": '
            "Connection was refused by other side: Connection refused.",
        )

    def test_warning(self) -> None:
        """Some upstreams down: 200 and a warning."""
        self.fixture.http.down.add("nsqd1:4151")
        code, body, _ = self.call("GET", "/api/topics/t")
        self.assertEqual(code, 200)
        self.assertTrue(body["message"].startswith('WARNING: Get "http://nsqd1:4151/stats'))

    def test_router_fallbacks(self) -> None:
        self.assertEqual(self.call("GET", "/api/nothing")[:2], (404, {"message": "NOT_FOUND"}))
        code, body, headers = self.call("PUT", "/api/topics")
        self.assertEqual((code, body), (405, {"message": "METHOD_NOT_ALLOWED"}))
        self.assertEqual(headers.getRawHeaders(b"Allow"), [b"GET, HEAD, POST"])

    def test_pages_get_the_rest(self) -> None:
        self.assertEqual(self.call("GET", "/")[:2], (200, b"page "))
        self.assertEqual(self.call("GET", "/topics/t/c")[:2], (200, b"page topics/t/c"))
        self.assertEqual(self.call("GET", "/static/app.css")[:2], (200, b"page static/app.css"))


class BasePathTests(APITestCase):
    def setUp(self) -> None:
        super().setUp()
        self.build(base_path="admin/ui/")

    def test_normalised(self) -> None:
        self.assertEqual((self.options.base_path, self.options.base_prefix), ("/admin/ui", "/admin/ui/"))

    def test_under_base_path(self) -> None:
        self.assertEqual(self.call("GET", "/admin/ui/ping")[:2], (200, b"OK"))
        self.assertEqual(self.call("GET", "/admin/ui/api/topics")[1]["topics"], ["solo", "t"])
        self.assertEqual(self.call("GET", "/admin/ui/nodes")[:2], (200, b"page nodes"))
        self.assertEqual(self.call("GET", "/admin/ui/")[:2], (200, b"page "))
        self.assertEqual(self.call("GET", "/admin/ui")[:2], (200, b"page "))

    def test_outside_base_path(self) -> None:
        for path in ("/", "/ping", "/api/topics", "/admin", "/admin/other/ping"):
            self.assertEqual(self.call("GET", path)[:2], (404, {"message": "NOT_FOUND"}), path)


class ActionTests(APITestCase):
    def test_topic_action(self) -> None:
        code, body, _ = self.call("POST", "/api/topics/t", b'{"action":"pause"}', {"User-Agent": ["ua/1"]})
        self.assertEqual((code, body), (200, {"message": ""}))
        self.assertTrue(self.fixture.nsqd1.topics[0]["paused"])
        [note] = self.notifications()
        self.assertEqual(
            note,
            {
                "action": "pause_topic",
                "topic": "t",
                "timestamp": 1_000_000,
                "remote_ip": "127.0.0.1:31337",
                "user_agent": "ua/1",
                "url": "http://admin.example/api/topics/t",
                "via": "adminhost",
            },
        )
        self.assertEqual(
            list(note), ["action", "topic", "timestamp", "remote_ip", "user_agent", "url", "via"]
        )

    def test_channel_action(self) -> None:
        auth = "Basic " + base64.b64encode(b"bob:secret").decode()
        code, body, _ = self.call(
            "POST",
            "/api/topics/t/c?x=1",
            b'{"action":"empty"}',
            {"Authorization": [auth], "X-Scheme": ["https"]},
        )
        self.assertEqual((code, body), (200, {"message": ""}))
        self.assertEqual(self.fixture.nsqd1.topics[0]["channels"][0]["depth"], 0)
        [note] = self.notifications()
        self.assertEqual(
            list(note.items())[:4],
            [("action", "empty_channel"), ("topic", "t"), ("channel", "c"), ("timestamp", 1_000_000)],
        )
        self.assertEqual((note["user"], note["url"]), ("bob", "https://admin.example/api/topics/t/c?x=1"))

    def test_bad_bodies(self) -> None:
        for body, message in (
            (b"", "INVALID_BODY"),
            (b"[1]", "INVALID_BODY"),
            (b'{"action": 5}', "INVALID_BODY"),
            (b"{", "INVALID_BODY"),
            (b'{"action":"explode"}', "INVALID_ACTION"),
            (b"null", "INVALID_ACTION"),
        ):
            self.assertEqual(self.call("POST", "/api/topics/t", body)[:2], (400, {"message": message}), body)
        self.assertEqual(
            self.call("POST", "/api/topics/bad!name", b'{"action":"pause"}')[:2],
            (400, {"message": "INVALID_TOPIC"}),
        )
        self.assertEqual(
            self.call("POST", "/api/topics/t/bad!c", b'{"action":"pause"}')[:2],
            (400, {"message": "INVALID_CHANNEL"}),
        )
        self.assertEqual(self.notifications(), [])

    def test_create(self) -> None:
        code, body, _ = self.call("POST", "/api/topics", b'{"topic":"new","channel":"ch"}')
        self.assertEqual((code, body), (200, {"message": ""}))
        self.assertEqual(self.fixture.lookupd.extra_topics["new"], ["ch"])
        self.assertEqual([n["action"] for n in self.notifications()], ["create_topic", "create_channel"])
        self.assertEqual(
            self.call("POST", "/api/topics", b'{"topic":""}')[:2], (400, {"message": "INVALID_TOPIC"})
        )
        self.assertEqual(
            self.call("POST", "/api/topics", b'{"topic":"ok","channel":"no pe"}')[:2],
            (400, {"message": "INVALID_CHANNEL"}),
        )

    def test_deletes(self) -> None:
        # nsqd1 has no channel "d": its 404 is a warning.
        self.assertEqual(
            self.call("DELETE", "/api/topics/t/d")[:2],
            (
                200,
                {"message": 'WARNING: got response 404 Not Found "{\\"message\\": \\"CHANNEL_NOT_FOUND\\"}"'},
            ),
        )
        self.assertEqual([c["channel_name"] for c in self.fixture.nsqd2.topics[0]["channels"]], ["c"])
        self.assertEqual(self.call("DELETE", "/api/topics/t")[:2], (200, {"message": ""}))
        self.assertEqual(self.fixture.nsqd2.topics, [])
        self.assertEqual([n["action"] for n in self.notifications()], ["delete_channel", "delete_topic"])

    def test_tombstone(self) -> None:
        code, body, _ = self.call("DELETE", "/api/nodes/nsqd1:4151", b'{"topic":"t"}')
        self.assertEqual((code, body), (200, {"message": ""}))
        [note] = self.notifications()
        self.assertEqual(
            (note["action"], note["node"], note["topic"]), ("tombstone_topic_producer", "nsqd1:4151", "t")
        )
        self.assertEqual(list(note)[:4], ["action", "topic", "node", "timestamp"])
        self.assertEqual(
            self.call("DELETE", "/api/nodes/nsqd1:4151", b"x")[:2], (400, {"message": "INVALID_BODY"})
        )
        self.assertEqual(
            self.call("DELETE", "/api/nodes/nsqd1:4151", b'{"topic":"a b"}')[:2],
            (400, {"message": "INVALID_TOPIC"}),
        )

    def test_action_upstream_error(self) -> None:
        """No producers can be found: 502, and (as in Go) the action is still notified."""
        self.fixture.http.down.add("lookupd1:4161")
        code, body, _ = self.call("POST", "/api/topics/t", b'{"action":"unpause"}')
        self.assertEqual(code, 502)
        self.assertTrue(body["message"].startswith("UPSTREAM_ERROR: failed to query any nsqlookupd"))
        self.assertEqual([n["action"] for n in self.notifications()], ["unpause_topic"])

    def test_notification_failure_is_logged(self) -> None:
        """An unreachable notification endpoint does not affect the answer."""
        self.fixture.http.down.add("notify.example")
        self.assertEqual(
            self.call("POST", "/api/topics/t", b'{"action":"pause"}')[:2], (200, {"message": ""})
        )
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_no_endpoint(self) -> None:
        self.build(notification_http_endpoint="")
        self.call("POST", "/api/topics/t", b'{"action":"pause"}')
        self.assertEqual(self.notifications(), [])


class ACLTests(APITestCase):
    def setUp(self) -> None:
        super().setUp()
        self.build(admin_users=["alice"], acl_http_header="X-Auth-User")

    def test_forbidden(self) -> None:
        """Writes need an admin in the ACL header; reads do not."""
        for method, path, body in (
            ("POST", "/api/topics", b'{"topic":"x"}'),
            ("POST", "/api/topics/t", b'{"action":"pause"}'),
            ("POST", "/api/topics/t/c", b'{"action":"pause"}'),
            ("DELETE", "/api/topics/t", None),
            ("DELETE", "/api/topics/t/c", None),
            ("DELETE", "/api/nodes/nsqd1:4151", b'{"topic":"t"}'),
        ):
            for headers in (None, {"X-Auth-User": ["mallory"]}):
                self.assertEqual(self.call(method, path, body, headers)[:2], (403, {"message": "FORBIDDEN"}))
        self.assertFalse(self.fixture.nsqd1.topics[0]["paused"])
        self.assertEqual(self.call("GET", "/api/topics")[0], 200)

    def test_admin(self) -> None:
        code, _, _ = self.call("POST", "/api/topics/t", b'{"action":"pause"}', {"X-Auth-User": ["alice"]})
        self.assertEqual(code, 200)
        self.assertTrue(self.fixture.nsqd1.topics[0]["paused"])


class ConfigTests(APITestCase):
    def test_get(self) -> None:
        self.assertEqual(self.call("GET", "/config/nsqlookupd_http_addresses")[:2], (200, ["lookupd1:4161"]))
        self.assertEqual(self.call("GET", "/config/log_level")[:2], (200, 2))
        self.assertEqual(self.call("GET", "/config/statsd_interval")[:2], (200, 60_000_000_000))
        self.assertEqual(self.call("GET", "/config/base_path")[:2], (200, b"/"))
        self.assertEqual(self.call("GET", "/config/proxy_graphite")[:2], (200, False))
        self.assertEqual(self.call("GET", "/config/nope")[:2], (400, {"message": "INVALID_OPTION"}))
        self.assertEqual(self.call("GET", "/config/config")[:2], (400, {"message": "INVALID_OPTION"}))

    def test_put_lookupd_addresses(self) -> None:
        """The new lookupd list is used at once."""
        self.fixture.cluster.hosts["lookupd2:4161"] = self.fixture.lookupd
        code, body, _ = self.call("PUT", "/config/nsqlookupd_http_addresses", b'["lookupd2:4161"]')
        self.assertEqual((code, body), (200, ["lookupd2:4161"]))
        self.assertEqual(self.fixture.view.lookupd_http_addresses, ["lookupd2:4161"])
        self.call("GET", "/api/topics")
        self.assertEqual(self.fixture.cluster.calls[-1], "GET lookupd2:4161/topics")
        for bad in (b'"x"', b"[1]", b"{"):
            self.assertEqual(
                self.call("PUT", "/config/nsqlookupd_http_addresses", bad)[:2],
                (400, {"message": "INVALID_VALUE"}),
            )

    def test_put_log_level(self) -> None:
        self.assertEqual(self.call("PUT", "/config/log_level", b"debug")[:2], (200, 1))
        self.assertEqual(self.options.log_level, "debug")
        self.assertEqual(
            self.call("PUT", "/config/log_level", b"loud")[:2], (400, {"message": "INVALID_VALUE"})
        )
        self.assertEqual(self.call("PUT", "/config/log_level", b"")[:2], (413, {"message": "INVALID_VALUE"}))
        self.assertEqual(
            self.call("PUT", "/config/base_path", b"/x")[:2], (400, {"message": "INVALID_OPTION"})
        )

    def test_cidr(self) -> None:
        self.build(allow_config_from_cidr="10.0.0.0/8")
        self.assertEqual(self.call("GET", "/config/log_level")[:2], (403, {"message": "FORBIDDEN"}))
        self.assertEqual(self.call("PUT", "/config/log_level", b"debug")[:2], (403, {"message": "FORBIDDEN"}))
        self.build(allow_config_from_cidr="")
        self.assertEqual(self.call("GET", "/config/log_level")[:2], (200, 2))

    def test_body_limits(self) -> None:
        self.assertEqual(
            self.site.body_limit(b"PUT", b"/config/log_level"), BodyLimit(1024 * 1024, "INVALID_VALUE")
        )
        self.assertEqual(self.site.body_limit(b"POST", b"/api/topics"), BodyLimit(64 * 1024, "BODY_TOO_BIG"))
        self.build(base_path="/b")
        self.assertEqual(
            self.site.body_limit(b"PUT", b"/b/config/x?y"), BodyLimit(1024 * 1024, "INVALID_VALUE")
        )


class GraphiteTests(APITestCase):
    def test_without_graphite(self) -> None:
        self.assertEqual(self.call("GET", "/api/graphite?metric=rate&target=x")[:2], (200, {"rate": "N/A"}))

    def test_rate(self) -> None:
        self.build(graphite_url="http://graphite.example", statsd_interval=30.0)
        code, body, _ = self.call("GET", "/api/graphite?metric=rate&target=sumSeries(a.b)")
        self.assertEqual((code, body), (200, {"rate": "4.00"}))
        self.assertEqual(
            self.fixture.cluster.calls[-1],
            "GET graphite.example/render?format=json&from=-60sec&target=sumSeries%28a.b%29&until=-30sec",
        )
        self.sink.render = [{"target": "x", "datapoints": [[None, 1]]}]
        self.assertEqual(self.call("GET", "/api/graphite?metric=rate&target=x")[1], {"rate": "N/A"})
        self.sink.render = []
        self.assertEqual(
            self.call("GET", "/api/graphite?metric=rate&target=x")[:2], (500, {"message": "INTERNAL_ERROR"})
        )

    def test_arguments(self) -> None:
        self.assertEqual(
            self.call("GET", "/api/graphite?target=x")[:2], (400, {"message": "INVALID_ARG_METRIC"})
        )
        self.assertEqual(
            self.call("GET", "/api/graphite?metric=rate")[:2], (400, {"message": "INVALID_ARG_TARGET"})
        )

    def test_render_proxy(self) -> None:
        """Only with --proxy-graphite; the graphite URL's basic auth is passed on."""
        self.assertEqual(self.call("GET", "/render?target=x")[:2], (200, b"page render"))
        self.build(graphite_url="http://u:pw@graphite.example", proxy_graphite=True)
        code, body, _ = self.call("GET", "/render?target=x&format=png")
        self.assertEqual((code, body), (200, b'[{"target": "x", "datapoints": [[120.0, 1], [null, 2]]}]'))
        line, sent, _ = self.fixture.cluster.requests[-1]
        self.assertEqual(line, "GET graphite.example/render?target=x&format=png")
        self.assertEqual(sent["authorization"], "Basic " + base64.b64encode(b"u:pw").decode())


class BasicAuthTests(SynchronousTestCase):
    def test_user(self) -> None:
        encoded = base64.b64encode(b"bob:pw:x").decode()
        self.assertEqual(basic_auth_user("Basic " + encoded), "bob")
        self.assertEqual(basic_auth_user("Bearer " + encoded), "")
        self.assertEqual(basic_auth_user("Basic !!!"), "")
        self.assertEqual(basic_auth_user("Basic " + base64.b64encode(b"nocolon").decode()), "")
        self.assertEqual(basic_auth_user(None), "")
