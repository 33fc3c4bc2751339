"""
nsqd's HTTP API (spec section 3): a Klein app around the nsqd core.

Every endpoint of nsqd 1.3.0 except C{/debug/pprof}, with NSQ's statuses, bodies, headers and
the order in which it checks things (which is observable: C{/pub} reads the body before looking
at the topic, C{/mpub} creates the topic before reading the body), plus the pre-1.0 aliases
(C{/put}, C{/create_topic}, ...) answering GET or POST in the V1 format.

Beyond NSQ (docs/extensions/prometheus.md, docs/extensions/http-hardening.md):
  - C{GET /metrics}: Prometheus metrics (L{PrometheusMetrics});
  - C{/debug/...} (thread stacks, GC statistics, C{/debug/freememory}) only with
    C{--http-debug}; without it they are unknown paths (404);
  - a request that changes something (any method but GET/HEAD/OPTIONS, and the GET-able pre-1.0
    aliases) is refused with C{403 CROSS_SITE_REQUEST} when a browser sends it from another
    site's page (L{is_cross_site}); programs never send the headers that reveal it.

L{NSQDHTTP.site} wraps it in a L{LimitedSite}: request bodies are refused from their
C{Content-Length} (or while a chunked body streams) before they are held in memory.
"""

from __future__ import annotations

import functools
import gc
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from twisted_nsq._cli import Kind
from twisted_nsq._http import (
    BOOL_PARAMS,
    JSON_CONTENT_TYPE,
    SAFE_METHODS,
    V1_VERSION,
    X_NSQ_CONTENT_TYPE,
    APIError,
    BodyLimit,
    LimitedSite,
    Query,
    install_fallbacks,
    is_cross_site,
    respond_plain,
    respond_v1,
    seconds_to_ns,
    v1_endpoint,
)
from twisted_nsq._httputil import LOG_LEVEL_NUMBERS, Endpoint, read_body, string_list
from twisted_nsq._httputil import logged as log_endpoint
from twisted_nsq._log import LOG_LEVELS
from twisted_nsq._version import NSQ_VERSION
from twisted_nsq.nsqd.channel import Channel
from twisted_nsq.nsqd.metrics import PrometheusMetrics
from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.options import NSQD_FLAGS
from twisted_nsq.nsqd.ordered import parse_order_key
from twisted_nsq.nsqd.stats import E2ELatencyTracker, stats_json, stats_text
from twisted_nsq.nsqd.topic import PublishError, Topic
from twisted_nsq.wire.commands import parse_int, parse_mpub_body
from twisted_nsq.wire.errors import NSQError
from twisted_nsq.wire.names import is_valid_channel_name, is_valid_topic_name

log = Logger()

#: Body limit of the endpoints that take no body (Go has none; it reads whatever comes).
SMALL_BODY_LIMIT = 64 * 1024

#: Go's C{TLSRequired} constants, which C{/config/tls_required} reports.
TLS_REQUIRED_NUMBERS = {"false": 0, "tcp-https": 1, "true": 2}

_INT64 = 1 << 64
_INT64_HALF = 1 << 63

# Config name (Go's cfg tag or flag name with "_") -> (our attribute, flag kind), for /config/:opt.
_CONFIG_OPTIONS: dict[str, tuple[str, Kind]] = {
    spec.toml_key: (spec.key, spec.kind) for spec in NSQD_FLAGS if spec.in_config
}


def _go_int64(value: int) -> int:
    """Wrap like Go's int64 arithmetic (for C{time.Duration(ms) * time.Millisecond})."""
    return (value + _INT64_HALF) % _INT64 - _INT64_HALF


#: The pre-1.0 aliases that change something although they answer GET too.
_MUTATING_ALIASES = frozenset(
    [b"/put", b"/mput"]
    + [
        b"/%s_%s" % (action, kind)
        for action in (b"create", b"delete", b"empty", b"pause", b"unpause")
        for kind in (b"topic", b"channel")
    ]
)


def _uri_path(uri: bytes) -> bytes:
    """The path of a request URI, also for the absolute form (C{http://host:4151/pub?topic=t})."""
    path = uri.partition(b"?")[0]
    if not path.startswith(b"/"):
        path = urlsplit(path).path or b"/"
    return path


def changes_state(method: bytes, uri: bytes) -> bool:
    """Whether a request may change nsqd (and so must not come from another site's page)."""
    return method not in SAFE_METHODS or _uri_path(uri) in _MUTATING_ALIASES


class _Gate(Resource):
    """
    Checks made before routing: with C{--tls-required=true}, plain HTTP gets
    C{403 TLS_REQUIRED} (HTTPS goes through); then a cross-site browser request that would change
    something gets C{403 CROSS_SITE_REQUEST}.
    """

    isLeaf = True

    def __init__(self, nsqd: NSQD, inner: IResource) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._nsqd = nsqd
        self._inner = inner

    def render(self, request: Request) -> Any:
        if self._nsqd.options.http_tls_required and not request.isSecure():  # type: ignore[no-untyped-call]
            # Go writes this one by hand, spaces included.
            body = b'{"message": "TLS_REQUIRED", "https_port": %d}' % self._nsqd.https_port
            request.setResponseCode(403)
            headers = request.responseHeaders
            headers.setRawHeaders(X_NSQ_CONTENT_TYPE, [V1_VERSION])
            headers.setRawHeaders(b"Content-Type", [JSON_CONTENT_TYPE])
            headers.setRawHeaders(b"Content-Length", [b"%d" % len(body)])
            return body
        if changes_state(request.method, request.uri) and is_cross_site(request):
            log.warn(
                "refused cross-site {method} {path}",
                method=request.method.decode("latin-1"),
                path=request.path.decode("latin-1"),
            )
            return respond_v1(request, 403, "CROSS_SITE_REQUEST")
        return self._inner.render(request)  # type: ignore[no-untyped-call]


class NSQDHTTP:
    """
    nsqd's HTTP API around an L{NSQD} core.

    @ivar app: the Klein app; L{resource} is what a C{Site} serves, L{site} builds that site with
        the body limits and timeouts.
    @ivar latency: the end-to-end latency tracker behind C{/stats} (one per nsqd: pass the same
        one to every app and to statsd).
    @ivar metrics: what C{/metrics} serves.
    """

    def __init__(
        self,
        nsqd: NSQD,
        latency: E2ELatencyTracker | None = None,
        hostname: Callable[[], str] = socket.gethostname,
    ) -> None:
        self.nsqd = nsqd
        if latency is None:
            latency = E2ELatencyTracker(nsqd)
            latency.install()
        self.latency = latency
        self.metrics = PrometheusMetrics(nsqd, latency)
        self._hostname = hostname
        self.app = Klein()
        install_fallbacks(self.app)
        self._add_routes()

    # -- wiring ---------------------------------------------------------------------------------

    def _route(self, path: str, methods: list[str], name: str, handler: Endpoint) -> None:
        self.app.route(path, methods=methods, endpoint=name)(handler)

    def _add_routes(self) -> None:
        v1 = v1_endpoint
        # Each request logged as nsqd does: 200 GET /ping (127.0.0.1:5678) 1.5µs
        logged: Callable[[Endpoint], Endpoint] = functools.partial(log_endpoint, log, self.nsqd.clock)
        route = self._route
        route("/ping", ["GET"], "ping", logged(self.ping))
        route("/info", ["GET"], "info", logged(v1(self.info)))
        route("/pub", ["POST"], "pub", v1(self.pub))
        route("/mpub", ["POST"], "mpub", v1(self.mpub))
        route("/stats", ["GET"], "stats", logged(v1(self.stats)))
        route("/config/<opt>", ["GET", "PUT"], "config", logged(v1(self.config)))
        topic_actions = {
            "create": self.topic_create,
            "delete": self.topic_delete,
            "empty": self.topic_empty,
            "pause": self.topic_pause,
            "unpause": self.topic_unpause,
        }
        channel_actions = {
            "create": self.channel_create,
            "delete": self.channel_delete,
            "empty": self.channel_empty,
            "pause": self.channel_pause,
            "unpause": self.channel_unpause,
        }
        for action, topic_handler in topic_actions.items():
            route(f"/topic/{action}", ["POST"], f"topic_{action}", logged(v1(topic_handler)))
            route(f"/{action}_topic", ["GET", "POST"], f"{action}_topic", logged(v1(topic_handler)))
        for action, channel_handler in channel_actions.items():
            route(f"/channel/{action}", ["POST"], f"channel_{action}", logged(v1(channel_handler)))
            route(f"/{action}_channel", ["GET", "POST"], f"{action}_channel", logged(v1(channel_handler)))
        # Pre-1.0 names; nsqadmin's docs still tell people to POST notifications to /put.
        route("/put", ["GET", "POST"], "put", v1(self.pub))
        route("/mput", ["GET", "POST"], "mput", v1(self.mpub))
        route("/metrics", ["GET"], "metrics", logged(self.prometheus))
        if self.nsqd.options.http_debug:
            route("/debug/threads", ["GET"], "debug_threads", logged(self.debug_threads))
            route("/debug/gc", ["GET"], "debug_gc", logged(v1(self.debug_gc)))
            route("/debug/freememory", ["POST"], "debug_freememory", logged(v1(self.debug_freememory)))

    def resource(self) -> IResource:
        """The resource to serve (HTTP and HTTPS alike)."""
        return _Gate(self.nsqd, self.app.resource())

    def body_limit(self, method: bytes, uri: bytes) -> BodyLimit:
        """The largest body each endpoint accepts and nsqd's 413 text for a larger one."""
        path = _uri_path(uri)
        options = self.nsqd.options
        if path in (b"/pub", b"/put"):
            return BodyLimit(options.max_msg_size, "MSG_TOO_BIG")
        if path in (b"/mpub", b"/mput"):
            return BodyLimit(options.max_body_size, "BODY_TOO_BIG")
        if path.startswith(b"/config/"):
            return BodyLimit(options.max_msg_size, "INVALID_VALUE")
        return BodyLimit(SMALL_BODY_LIMIT, "BODY_TOO_BIG")

    def site(
        self, reactor: IReactorTime, timeout: float = 60.0, request_timeout: float = 60.0
    ) -> LimitedSite:
        """
        A site serving this API with body limits: C{timeout} closes idle connections, and a
        whole request must arrive within C{request_timeout} seconds.
        """
        return LimitedSite(self.resource(), self.body_limit, reactor, timeout, request_timeout)

    # -- argument helpers -------------------------------------------------------------------------

    def _topic_from_query(self, request: Request) -> tuple[Query, Topic]:
        """Go's C{getTopicFromQuery}: a valid C{topic}, created if needed."""
        query = Query.of(request)
        name = query.get("topic")
        if name is None:
            raise APIError(400, "MISSING_ARG_TOPIC")
        if not is_valid_topic_name(name):
            raise APIError(400, "INVALID_TOPIC")
        return query, self.nsqd.get_topic(name)

    def _existing_topic(self, request: Request, validate: bool) -> Topic:
        name = Query.of(request).get("topic")
        if name is None:
            raise APIError(400, "MISSING_ARG_TOPIC")
        if validate and not is_valid_topic_name(name):
            raise APIError(400, "INVALID_TOPIC")
        topic = self.nsqd.find_topic(name)
        if topic is None:
            raise APIError(404, "TOPIC_NOT_FOUND")
        return topic

    def _topic_and_channel_name(self, request: Request) -> tuple[Topic, str]:
        """Go's C{getExistingTopicFromQuery}: both names valid, the topic existing."""
        query = Query.of(request)
        topic_name = query.get("topic")
        if topic_name is None:
            raise APIError(400, "MISSING_ARG_TOPIC")
        if not is_valid_topic_name(topic_name):
            raise APIError(400, "INVALID_ARG_TOPIC")
        channel_name = query.get("channel")
        if channel_name is None:
            raise APIError(400, "MISSING_ARG_CHANNEL")
        if not is_valid_channel_name(channel_name):
            raise APIError(400, "INVALID_ARG_CHANNEL")
        topic = self.nsqd.find_topic(topic_name)
        if topic is None:
            raise APIError(404, "TOPIC_NOT_FOUND")
        return topic, channel_name

    def _existing_channel(self, request: Request) -> Channel:
        topic, name = self._topic_and_channel_name(request)
        channel = topic.find_channel(name)
        if channel is None:
            raise APIError(404, "CHANNEL_NOT_FOUND")
        return channel

    def _persist(self) -> None:
        # Pause state belongs in nsqd.dat at once; the core writes it if it knows how.
        persist = getattr(self.nsqd, "persist_metadata", None)
        if persist is not None:
            persist()

    def _publish(self, topic: Topic, bodies: list[bytes], defer: float = 0.0) -> str | Deferred[str]:
        if not bodies:
            # An /mpub of blank lines publishes nothing and succeeds, unless nsqd is exiting.
            if self.nsqd.exiting:
                raise APIError(503, "EXITING")
            return "OK"
        try:
            topic.publish(bodies, defer)
        except PublishError:
            # Go answers every refused put with 503 EXITING (its only failures are exiting and a
            # failed disk write); a full memory-only queue is refused the same way here.
            raise APIError(503, "EXITING") from None
        self.nsqd.run_dispatch()
        if self.nsqd.durable:
            # --durable: answer once the group commit has the message on stable storage.
            def refused(failure: Failure) -> str:
                raise APIError(503, "EXITING")

            return self.nsqd.sync_barrier().addCallbacks(lambda _: "OK", refused)
        return "OK"

    # -- endpoints --------------------------------------------------------------------------------

    def ping(self, request: Request) -> bytes:
        """GET /ping: C{OK}, or 500 C{NOK - <error>}; plain text without the V1 header."""
        health = self.nsqd.health()
        return respond_plain(request, 200 if self.nsqd.is_healthy() else 500, health)

    def info(self, request: Request) -> dict[str, Any]:
        """GET /info: section 3.4, durations in nanoseconds."""
        try:
            hostname = self._hostname()
        except OSError as e:
            raise APIError(500, str(e)) from None
        options = self.nsqd.options
        return {
            "version": NSQ_VERSION,
            "broadcast_address": options.broadcast_address,
            "hostname": hostname,
            "http_port": self.nsqd.http_port,
            "tcp_port": self.nsqd.tcp_port,
            "start_time": self.nsqd.start_time,
            "max_heartbeat_interval": seconds_to_ns(options.max_heartbeat_interval),
            "max_output_buffer_size": options.max_output_buffer_size,
            "max_output_buffer_timeout": seconds_to_ns(options.max_output_buffer_timeout),
            "max_deflate_level": options.max_deflate_level,
        }

    def pub(self, request: Request) -> str | Deferred[str]:
        """POST /pub?topic=&defer=: one message; the body is checked before the topic."""
        options = self.nsqd.options
        limit = options.max_msg_size
        body = read_body(request, limit + 1)
        if len(body) > limit:
            raise APIError(413, "MSG_TOO_BIG")
        if not body:
            raise APIError(400, "MSG_EMPTY")
        query, topic = self._topic_from_query(request)
        defer = 0.0
        if "defer" in query:
            ms = parse_int((query.get("defer") or "").encode("utf-8"))
            if ms is None:
                raise APIError(400, "INVALID_DEFER")
            ns = _go_int64(ms * 1_000_000)
            if ns < 0 or ns > seconds_to_ns(options.max_req_timeout):
                raise APIError(400, "INVALID_DEFER")
            defer = ns / 1_000_000_000
        return self._publish(topic, [body], defer)

    def mpub(self, request: Request) -> str | Deferred[str]:
        """POST /mpub?topic=&binary=: several messages, newline-separated or binary-framed."""
        options = self.nsqd.options
        max_body = options.max_body_size
        lengths = request.requestHeaders.getRawHeaders(b"Content-Length") or [b""]
        if lengths[0].isdigit() and int(lengths[0]) > max_body:
            raise APIError(413, "BODY_TOO_BIG")
        query, topic = self._topic_from_query(request)
        binary = False
        if "binary" in query:
            value = query.get("binary") or ""
            binary = BOOL_PARAMS.get(value, True)
            if value not in BOOL_PARAMS:
                log.warn("deprecated value '{value}' used for /mpub binary param", value=value)
        if binary:
            try:
                bodies = parse_mpub_body(read_body(request), options.max_msg_size, max_body)
            except NSQError as e:
                raise APIError(413, e.code[2:]) from None
        else:
            bodies = self._text_messages(read_body(request, max_body + 1), max_body, options.max_msg_size)
        return self._publish(topic, bodies)

    @staticmethod
    def _text_messages(data: bytes, max_body: int, max_msg: int) -> list[bytes]:
        # Line by line as Go reads them, so the first limit crossed decides the error.
        read_max = max_body + 1
        total = 0
        position = 0
        messages: list[bytes] = []
        while True:
            newline = data.find(b"\n", position)
            end = len(data) if newline < 0 else newline + 1
            block = data[position:end]
            total += len(block)
            if total == read_max:
                raise APIError(413, "BODY_TOO_BIG")
            if newline >= 0:
                block = block[:-1]
            if block:
                if len(block) > max_msg:
                    raise APIError(413, "MSG_TOO_BIG")
                messages.append(block)
            if newline < 0:
                return messages
            position = end

    def topic_create(self, request: Request) -> None:
        self._topic_from_query(request)

    def topic_delete(self, request: Request) -> None:
        # Go does not validate the name here: an invalid one is simply not found.
        name = Query.of(request).get("topic")
        if name is None:
            raise APIError(400, "MISSING_ARG_TOPIC")
        try:
            self.nsqd.delete_topic(name)
        except KeyError:
            raise APIError(404, "TOPIC_NOT_FOUND") from None

    def topic_empty(self, request: Request) -> None:
        self._existing_topic(request, validate=True).empty()

    def topic_pause(self, request: Request) -> None:
        self._existing_topic(request, validate=False).pause()
        self._persist()

    def topic_unpause(self, request: Request) -> None:
        self._existing_topic(request, validate=False).unpause()
        self._persist()
        self.nsqd.run_dispatch()

    def channel_create(self, request: Request) -> None:
        """
        POST /channel/create?topic=&channel=: beyond NSQ, C{ordered=true|false} creates the
        channel in that mode or switches an existing one, and C{order_key=SPEC} orders it by
        that key (implying C{ordered=true}; empty: ordered as a whole) (docs/extensions/ordered.md).
        """
        topic, name = self._topic_and_channel_name(request)
        query = Query.of(request)
        ordered: bool | None = None
        value = query.get("ordered")
        if value is not None:
            if value not in BOOL_PARAMS:
                raise APIError(400, "INVALID_ARG_ORDERED")
            ordered = BOOL_PARAMS[value]
        order_key = query.get("order_key")
        if order_key:
            try:
                parse_order_key(order_key)
            except ValueError:
                raise APIError(400, "INVALID_ARG_ORDER_KEY") from None
            if ordered is False:
                raise APIError(400, "INVALID_ARG_ORDER_KEY")
            ordered = True
        topic.get_channel(name, ordered=ordered, order_key=order_key)
        self.nsqd.run_dispatch()

    def channel_delete(self, request: Request) -> None:
        topic, name = self._topic_and_channel_name(request)
        try:
            topic.delete_channel(name)
        except KeyError:
            raise APIError(404, "CHANNEL_NOT_FOUND") from None

    def channel_empty(self, request: Request) -> None:
        self._existing_channel(request).empty()
        self.nsqd.run_dispatch()

    def channel_pause(self, request: Request) -> None:
        self._existing_channel(request).pause()
        self._persist()

    def channel_unpause(self, request: Request) -> None:
        self._existing_channel(request).unpause()
        self._persist()
        self.nsqd.run_dispatch()

    def stats(self, request: Request) -> dict[str, Any] | bytes:
        """GET /stats: JSON with C{format=json}, else the text page."""
        query = Query.of(request)
        arguments = {
            "topic": query.get("topic") or None,
            "channel": query.get("channel") or None,
            "include_clients": query.flag("include_clients"),
            "include_mem": query.flag("include_mem"),
            "latency": self.latency,
        }
        if query.get("format") == "json":
            return stats_json(self.nsqd, **arguments)  # type: ignore[arg-type]
        return stats_text(self.nsqd, **arguments).encode("utf-8")  # type: ignore[arg-type]

    def config(self, request: Request, opt: str) -> object:
        """GET /config/:opt (any option), PUT (C{nsqlookupd_tcp_addresses} or C{log_level})."""
        options = self.nsqd.options
        if request.method == b"PUT":
            limit = options.max_msg_size
            body = read_body(request, limit + 1)
            if len(body) > limit or not body:
                raise APIError(413, "INVALID_VALUE")
            if opt == "nsqlookupd_tcp_addresses":
                addresses = string_list(body)
                options.lookupd_tcp_addresses = addresses
                changed = getattr(self.nsqd, "lookupd_addresses_changed", None)
                if changed is not None:
                    changed(list(addresses))
            elif opt == "log_level":
                level = body.decode("utf-8", "replace").lower()
                if level not in LOG_LEVELS:
                    raise APIError(400, "INVALID_VALUE")
                options.log_level = level
            else:
                raise APIError(400, "INVALID_OPTION")
        return self._option_value(opt)

    def _option_value(self, opt: str) -> object:
        known = _CONFIG_OPTIONS.get(opt)
        options = self.nsqd.options
        if known is None or not hasattr(options, known[0]):
            raise APIError(400, "INVALID_OPTION")
        attribute, kind = known
        value = getattr(options, attribute)
        if opt == "log_level":
            return LOG_LEVEL_NUMBERS.get(value, value)
        if opt == "tls_required":
            return TLS_REQUIRED_NUMBERS.get(value, value)
        if opt == "tls_min_version":
            return options.tls_min_version_number
        if kind is Kind.DURATION:
            return seconds_to_ns(value)
        if isinstance(value, tuple):
            return list(value)
        # Strings go back as raw text, like Go's RespondV1 sends a string.
        return value

    # -- beyond NSQ -------------------------------------------------------------------------------

    def prometheus(self, request: Request) -> bytes:
        """GET /metrics: Prometheus' text format (or OpenMetrics when the scraper asks for it)."""
        accept = request.getHeader(b"Accept")
        body, content_type = self.metrics.render(accept.decode("latin-1") if accept else None)
        request.setResponseCode(200)
        request.defaultContentType = None
        request.responseHeaders.setRawHeaders(b"Content-Type", [content_type.encode("ascii")])
        request.responseHeaders.setRawHeaders(b"Content-Length", [b"%d" % len(body)])
        return body

    def debug_threads(self, request: Request) -> bytes:
        """GET /debug/threads (C{--http-debug}): the stack of every thread, as text."""
        return respond_plain(request, 200, thread_stacks())

    def debug_gc(self, request: Request) -> dict[str, Any]:
        """GET /debug/gc (C{--http-debug}): the garbage collector's settings and statistics."""
        return gc_report()

    def debug_freememory(self, request: Request) -> None:
        """POST /debug/freememory (C{--http-debug}): a full collection, as Go's frees memory."""
        gc.collect()


def thread_stacks() -> str:
    """Every thread's name, ident and current stack, innermost call last."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    out: list[str] = []
    for ident, frame in sorted(sys._current_frames().items()):
        out.append(f"thread {names.get(ident, '?')} ({ident}):\n")
        out.extend(traceback.format_stack(frame))
        out.append("\n")
    return "".join(out)


def gc_report() -> dict[str, Any]:
    """What C{/debug/gc} shows: whether the collector runs, its thresholds and counters."""
    return {
        "enabled": gc.isenabled(),
        "thresholds": list(gc.get_threshold()),
        "counts": list(gc.get_count()),
        "generations": gc.get_stats(),
        "tracked_objects": len(gc.get_objects()),
        "uncollectable": len(gc.garbage),
        "frozen": gc.get_freeze_count(),
    }


def make_site(
    nsqd: NSQD,
    reactor: IReactorTime,
    latency: E2ELatencyTracker | None = None,
    timeout: float = 60.0,
    request_timeout: float = 60.0,
) -> LimitedSite:
    """The HTTP(S) site of an nsqd: L{NSQDHTTP} behind body limits and timeouts."""
    return NSQDHTTP(nsqd, latency).site(reactor, timeout, request_timeout)
