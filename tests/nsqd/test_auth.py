"""
Tests for L{twisted_nsq.nsqd.auth}, against a fake auth server behind C{StubTreq}.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any, cast

import attrs
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from twisted_nsq.nsqd.auth import (
    AuthClient,
    AuthError,
    Authorization,
    AuthState,
    HTTPClient,
    auth_url,
    parse_auth_response,
)

GOOD: dict[str, Any] = {
    "ttl": 60,
    "identity": "alice",
    "identity_url": "https://auth.example/alice",
    "authorizations": [{"topic": "^events$", "channels": [".*"], "permissions": ["subscribe", "publish"]}],
}


@attrs.frozen
class Seen:
    """
    One request as the fake auth server received it.
    """

    method: bytes
    uri: bytes
    host: str
    body: bytes
    content_type: str | None


class FakeAuthServer(Resource):
    """
    Answers every path of every host: by default 200 with L{GOOD}; per host, another
    (code, body), or C{None} to never answer.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Seen] = []
        self.answers: dict[str, tuple[int, bytes] | None] = {}
        self.default: tuple[int, bytes] = (200, json.dumps(GOOD).encode())

    def _answer(self, request: Request) -> bytes | int:
        host = (request.getHeader("host") or "").split(":")[0]
        assert request.content is not None
        self.seen.append(
            Seen(
                method=request.method,
                uri=request.uri,
                host=host,
                body=request.content.read(),
                content_type=request.getHeader("content-type"),
            )
        )
        answer = self.answers.get(host, self.default)
        if answer is None:
            return NOT_DONE_YET
        code, body = answer
        request.setResponseCode(code)
        return body

    def render_GET(self, request: Request) -> bytes | int:
        return self._answer(request)

    def render_POST(self, request: Request) -> bytes | int:
        return self._answer(request)

    def hosts(self) -> list[str]:
        return [s.host for s in self.seen]


class RefusingHosts:
    """
    An HTTP client that cannot connect to some hosts and passes the rest to C{StubTreq}.
    """

    def __init__(self, stub: HTTPClient, refused: set[str]) -> None:
        self.stub = stub
        self.refused = refused
        self.attempted: list[str] = []

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        host = url.split("://", 1)[1].split("/", 1)[0].split(":")[0]
        self.attempted.append(host)
        if host in self.refused:
            return fail(ConnectionRefusedError(host))
        return self.stub.request(method, url, **kwargs)


class _Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = FakeAuthServer()
        self.stub = cast(HTTPClient, StubTreq(self.server))
        self.clock = Clock()
        self.clock.advance(1000)

    def client(self, *addresses: str, **kwargs: Any) -> AuthClient:
        return AuthClient(addresses or ("auth1:4181",), self.stub, self.clock, **kwargs)

    def failure(self, d: Deferred[AuthState]) -> AuthError:
        error = self.failureResultOf(d, AuthError).value
        assert isinstance(error, AuthError)
        return error


class RequestTests(_Base):
    """
    The request nsqd sends to its auth server.
    """

    def test_get(self) -> None:
        """
        GET http://<address>/auth with common_name, remote_ip, secret and tls, sorted by key.
        """
        state = self.successResultOf(self.client("auth1:4181").authorize("10.0.0.1", False, b"s3cret"))
        self.assertEqual(state.identity, "alice")
        [seen] = self.server.seen
        self.assertEqual(seen.method, b"GET")
        self.assertEqual(seen.host, "auth1")
        self.assertEqual(seen.uri, b"/auth?common_name=&remote_ip=10.0.0.1&secret=s3cret&tls=false")

    def test_tls_and_common_name(self) -> None:
        """
        tls=true after a TLS upgrade, and the client certificate's CN.
        """
        self.successResultOf(self.client().authorize("10.0.0.1", True, b"x", common_name="worker-7"))
        self.assertEqual(
            self.server.seen[0].uri, b"/auth?common_name=worker-7&remote_ip=10.0.0.1&secret=x&tls=true"
        )

    def test_escaping(self) -> None:
        """
        Values are escaped as Go's QueryEscape does: space as "+", reserved characters and
        non-UTF-8 secret bytes percent-encoded.
        """
        self.successResultOf(self.client().authorize("::1", False, b"a b&c=d/\xff~_.-", common_name="CN é"))
        self.assertEqual(
            self.server.seen[0].uri,
            b"/auth?common_name=CN+%C3%A9&remote_ip=%3A%3A1&secret=a+b%26c%3Dd%2F%FF~_.-&tls=false",
        )

    def test_url_address(self) -> None:
        """
        An address containing "://" is the URL itself, with the query appended.
        """
        self.successResultOf(self.client("http://auth2:8080/v1/check").authorize("10.0.0.1", False, b"s"))
        [seen] = self.server.seen
        self.assertEqual(seen.host, "auth2")
        self.assertEqual(seen.uri, b"/v1/check?common_name=&remote_ip=10.0.0.1&secret=s&tls=false")

    def test_auth_url(self) -> None:
        """
        L{auth_url} builds the URL with or without a query.
        """
        self.assertEqual(auth_url("h:1", "a=b"), "http://h:1/auth?a=b")
        self.assertEqual(auth_url("h:1", None), "http://h:1/auth")
        self.assertEqual(auth_url("https://h/x", "a=b"), "https://h/x?a=b")

    def test_post(self) -> None:
        """
        The "post" method sends Go's url.Values as JSON (lists of one value, Go's escaping) to
        the bare URL.
        """
        client = self.client("auth1:4181", method="post")
        self.successResultOf(client.authorize("10.0.0.1", True, b"<x>&\xff", common_name="cn"))
        [seen] = self.server.seen
        self.assertEqual(seen.method, b"POST")
        self.assertEqual(seen.uri, b"/auth")
        self.assertEqual(seen.content_type, "application/json")
        self.assertEqual(
            seen.body,
            b'{"common_name":["cn"],"remote_ip":["10.0.0.1"],'
            b'"secret":["\\u003cx\\u003e\\u0026\xef\xbf\xbd"],"tls":["true"]}',
        )

    def test_invalid_method(self) -> None:
        """
        Only "get" and "post" are methods.
        """
        with self.assertRaises(ValueError):
            self.client(method="put")


class ResponseTests(_Base):
    """
    What nsqd accepts from its auth server.
    """

    def test_state(self) -> None:
        """
        A valid answer becomes an L{AuthState} expiring C{ttl} seconds from the clock's now.
        """
        state = self.successResultOf(self.client().authorize("10.0.0.1", False, b"s"))
        self.assertEqual(
            state,
            AuthState(
                identity="alice",
                identity_url="https://auth.example/alice",
                authorizations=(
                    Authorization(topic="^events$", channels=(".*",), permissions=("subscribe", "publish")),
                ),
                expires_at=1060.0,
            ),
        )
        self.assertEqual(state.permission_count, 1)

    def test_optional_identity(self) -> None:
        """
        identity and identity_url may be left out; so may every authorization.
        """
        state = parse_auth_response(b'{"ttl": 5, "authorizations": []}', 0.0)
        self.assertEqual(state, AuthState(identity="", identity_url="", authorizations=(), expires_at=5.0))
        self.assertEqual(state.permission_count, 0)
        self.assertFalse(state.is_allowed("t", ""))

    def test_invalid_answers(self) -> None:
        """
        Every malformed or invalid answer is an L{AuthError}.
        """

        def without(key: str) -> dict[str, Any]:
            return {k: v for k, v in GOOD.items() if k != key}

        def grant(**changes: Any) -> dict[str, Any]:
            entry = {"topic": ".*", "channels": [".*"], "permissions": ["publish"], **changes}
            return {**GOOD, "authorizations": [{k: v for k, v in entry.items() if v is not None}]}

        bodies: list[tuple[str, bytes]] = [
            ("not JSON", b"<html>OK</html>"),
            ("empty", b""),
            ("not an object", b"[1, 2]"),
        ]
        documents: list[tuple[str, object]] = [
            ("no ttl", without("ttl")),
            ("zero ttl", {**GOOD, "ttl": 0}),
            ("negative ttl", {**GOOD, "ttl": -5}),
            ("string ttl", {**GOOD, "ttl": "60"}),
            ("bool ttl", {**GOOD, "ttl": True}),
            ("float ttl", {**GOOD, "ttl": 1.5}),
            ("no authorizations", without("authorizations")),
            ("authorizations not a list", {**GOOD, "authorizations": {"topic": ".*"}}),
            ("authorization not an object", {**GOOD, "authorizations": ["*"]}),
            ("no topic", grant(topic=None)),
            ("topic not a string", grant(topic=7)),
            ("no channels", grant(channels=None)),
            ("channels not a list", grant(channels=".*")),
            ("channel not a string", grant(channels=[1])),
            ("no permissions", grant(permissions=None)),
            ("unknown permission", grant(permissions=["publish", "admin"])),
            ("bad topic regex", grant(topic="(")),
            ("bad channel regex", grant(channels=[".*", "[a-"])),
            ("identity not a string", {**GOOD, "identity": 5}),
            ("identity_url not a string", {**GOOD, "identity_url": None}),
        ]
        cases = bodies + [(name, json.dumps(doc).encode()) for name, doc in documents]
        for name, body in cases:
            self.server.default = (200, body)
            error = self.failure(self.client().authorize("10.0.0.1", False, b"s"))
            self.assertIn("failed to auth against auth1:4181", str(error), name)
            with self.assertRaises(AuthError, msg=name):
                parse_auth_response(body, 0.0)

    def test_error_messages(self) -> None:
        """
        The errors say what was wrong, as nsqd's do.
        """
        self.server.default = (200, json.dumps({**GOOD, "ttl": 0}).encode())
        self.assertIn(
            "invalid TTL 0 (must be >0)", str(self.failure(self.client().authorize("ip", False, b"")))
        )
        bad = {**GOOD, "authorizations": [{"topic": ".*", "channels": [], "permissions": ["admin"]}]}
        self.server.default = (200, json.dumps(bad).encode())
        self.assertIn(
            "unknown permission admin", str(self.failure(self.client().authorize("ip", False, b"")))
        )

    def test_not_200(self) -> None:
        """
        Any status but 200 is a failure, whatever the body.
        """
        for code in (201, 403, 404, 500):
            self.server.default = (code, json.dumps(GOOD).encode())
            error = self.failure(self.client().authorize("10.0.0.1", False, b"s"))
            self.assertIn(f"got response {code}", str(error))


class ServerChoiceTests(_Base):
    """
    Several auth servers: a random first one, then round the list until one answers.
    """

    hosts = ("a", "b", "c", "d")

    def test_rotation_from_random_start(self) -> None:
        """
        The first server is picked with the given Random; failures move on to the next in list
        order, wrapping round.
        """
        for name in self.hosts:
            self.server.answers[name] = (500, b"down")
        self.server.answers["b"] = (200, json.dumps(GOOD).encode())
        seed_start = random.Random(7).randrange(len(self.hosts))
        client = self.client(*(f"{h}:4181" for h in self.hosts), random=random.Random(7))
        self.successResultOf(client.authorize("10.0.0.1", False, b"s"))
        rotation = [self.hosts[(seed_start + i) % len(self.hosts)] for i in range(len(self.hosts))]
        self.assertEqual(self.server.hosts(), rotation[: rotation.index("b") + 1])

    def test_random_first_server(self) -> None:
        """
        Over many authorizations every server is tried first at some point.
        """
        client = self.client(*(f"{h}:4181" for h in self.hosts), random=random.Random(1))
        for _ in range(40):
            self.successResultOf(client.authorize("10.0.0.1", False, b"s"))
        self.assertEqual(set(self.server.hosts()), set(self.hosts))

    def test_all_fail(self) -> None:
        """
        When every server fails the error lists each failure in the order tried.
        """
        self.server.answers["a"] = (500, b"oops")
        self.server.answers["b"] = (200, b"{}")
        client = self.client("a:1", "b:2", random=random.Random(3))
        error = self.failure(client.authorize("10.0.0.1", False, b"s"))
        first = "a:1" if self.server.hosts()[0] == "a" else "b:2"
        messages = {
            "a:1": "failed to auth against a:1 - got response 500 b'oops'",
            "b:2": "failed to auth against b:2 - auth response has no 'ttl'",
        }
        second = "b:2" if first == "a:1" else "a:1"
        self.assertEqual(str(error), f"{messages[first]}; {messages[second]}")

    def test_unreachable(self) -> None:
        """
        A server that cannot be reached is skipped; if none can, authorization fails.
        """
        http = RefusingHosts(self.stub, {"a", "b"})
        client = AuthClient(["a:1", "b:1", "c:1"], http, self.clock, random=random.Random(0))
        state = self.successResultOf(client.authorize("10.0.0.1", False, b"s"))
        self.assertEqual(state.identity, "alice")
        self.assertEqual(http.attempted[-1], "c")
        self.assertEqual(self.server.hosts(), ["c"])
        http.refused.add("c")
        error = self.failure(client.authorize("10.0.0.1", False, b"s"))
        self.assertIn("ConnectionRefusedError", str(error))
        self.assertEqual(str(error).count("failed to auth against"), 3)

    def test_no_servers(self) -> None:
        """
        With no auth server, authorization fails at once.
        """
        client = AuthClient([], self.stub, self.clock)
        self.failure(client.authorize("10.0.0.1", False, b"s"))


class TimeoutTests(_Base):
    """
    A server that does not answer in time is given up on.
    """

    def test_timeout_moves_on(self) -> None:
        """
        After C{request_timeout} seconds without an answer the next server is asked.
        """
        self.server.answers["slow"] = None
        client = AuthClient(["fast:1", "slow:1"], self.stub, self.clock, 2.5, random=_FirstIndex(1))
        d = client.authorize("10.0.0.1", False, b"s")
        self.assertNoResult(d)
        self.clock.advance(2.4)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        state = self.successResultOf(d)
        self.assertEqual(self.server.hosts(), ["slow", "fast"])
        self.assertEqual(state.expires_at, 1002.5 + 60)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_all_time_out(self) -> None:
        """
        When the only server never answers, authorization fails with a timeout.
        """
        self.server.answers["slow"] = None
        d = self.client("slow:1").authorize("10.0.0.1", False, b"s")
        self.clock.advance(5)
        self.assertIn("failed to auth against slow:1 - timed out", str(self.failure(d)))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel(self) -> None:
        """
        Cancelling stops the request in progress and tries no other server.
        """
        self.server.answers["slow"] = None
        client = AuthClient(["slow:1", "fast:1"], self.stub, self.clock, random=_FirstIndex(0))
        d = client.authorize("10.0.0.1", False, b"s")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.server.hosts(), ["slow"])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class _FirstIndex(random.Random):
    """
    A Random whose C{randrange} always picks the same index.
    """

    def __init__(self, index: int) -> None:
        super().__init__(0)
        self.index = index

    def randrange(self, *args: Any, **kwargs: Any) -> int:
        return self.index


class PermissionTests(SynchronousTestCase):
    """
    What an authorization allows.
    """

    def test_matrix(self) -> None:
        """
        Subscribing needs "subscribe", publishing (empty channel) needs "publish"; the topic
        regex and one of the channel regexes must match.
        """
        sub = Authorization(topic="^orders$", channels=("^billing$", "archive"), permissions=("subscribe",))
        pub = Authorization(topic="^orders$", channels=(".*",), permissions=("publish",))
        both = Authorization(topic="^logs", channels=(".*",), permissions=("publish", "subscribe"))
        cases = [
            (sub, "orders", "billing", True),
            (sub, "orders", "cold-archive-2", True),
            (sub, "orders", "shipping", False),
            (sub, "orders", "", False),
            (sub, "orders2", "billing", False),
            (pub, "orders", "", True),
            (pub, "orders", "billing", False),
            (pub, "events", "", False),
            (both, "logs-app", "", True),
            (both, "logs-app", "tail", True),
            (both, "app-logs", "tail", False),
        ]
        for grant, topic, channel, allowed in cases:
            self.assertEqual(grant.is_allowed(topic, channel), allowed, (grant.topic, topic, channel))

    def test_unanchored(self) -> None:
        """
        Patterns match anywhere in the name, like Go's MatchString.
        """
        grant = Authorization(topic="ord", channels=("bill",), permissions=("subscribe",))
        self.assertTrue(grant.is_allowed("new-orders", "rebilling"))

    def test_publish_needs_channel_matching_empty(self) -> None:
        """
        Publishing still goes through the channel patterns, with the empty channel name.
        """
        grant = Authorization(topic=".*", channels=("^billing$",), permissions=("publish",))
        self.assertFalse(grant.is_allowed("orders", ""))
        self.assertFalse(Authorization(topic=".*", channels=(), permissions=("publish",)).is_allowed("t", ""))

    def test_state_any_grant(self) -> None:
        """
        A state allows what any of its grants allows.
        """
        state = AuthState(
            identity="",
            identity_url="",
            authorizations=(
                Authorization(topic="^a$", channels=(".*",), permissions=("publish",)),
                Authorization(topic="^b$", channels=("^c$",), permissions=("subscribe",)),
            ),
            expires_at=0.0,
        )
        self.assertEqual(state.permission_count, 2)
        self.assertTrue(state.is_allowed("a", ""))
        self.assertTrue(state.is_allowed("b", "c"))
        self.assertFalse(state.is_allowed("a", "c"))
        self.assertFalse(state.is_allowed("b", ""))

    def test_invalid_regex(self) -> None:
        """
        An authorization with a regex that does not compile cannot be made.
        """
        with self.assertRaises(re.error):
            Authorization(topic="(", channels=(), permissions=())
        with self.assertRaises(re.error):
            Authorization(topic=".*", channels=("[",), permissions=())

    def test_value_semantics(self) -> None:
        """
        Authorizations compare by their fields and are immutable.
        """
        one = Authorization(topic="t", channels=("c",), permissions=("publish",))
        self.assertEqual(one, Authorization(topic="t", channels=("c",), permissions=("publish",)))
        self.assertNotEqual(one, Authorization(topic="t", channels=("c",), permissions=("subscribe",)))
        with self.assertRaises(attrs.exceptions.FrozenInstanceError):
            one.topic = "u"  # type: ignore[misc]


class ExpiryTests(_Base):
    """
    Authorization state expires C{ttl} seconds after it was obtained.
    """

    def test_expiry(self) -> None:
        """
        The state is valid up to and including C{expires_at} and expired after it.
        """
        state = self.successResultOf(self.client().authorize("10.0.0.1", False, b"s"))
        self.assertEqual(state.expires_at, self.clock.seconds() + 60)
        self.assertFalse(state.is_expired(self.clock.seconds()))
        self.clock.advance(60)
        self.assertFalse(state.is_expired(self.clock.seconds()))
        self.clock.advance(0.001)
        self.assertTrue(state.is_expired(self.clock.seconds()))
