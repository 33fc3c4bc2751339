"""
nsqadmin's HTML pages (spec section 5.2): server-rendered Jinja2 templates over an L{IClusterView},
live charts and auto-refresh added by a small script, and the static assets they use.

Every page is complete HTML without JavaScript. With it, C{static/nsqadmin.js} re-fetches the
page with C{?fragment=1} every C{data-refresh-interval} milliseconds (the server then renders only
the C{<main id="content">} element) and swaps it in; runs the admin actions against the JSON API
(C{api.py}) after a C{window.confirm}; and draws the live charts from the JSON API into inline SVG.
A C{?refresh=SECONDS} query overrides the refresh period of one page (C{0} turns it off). What
each page shows: docs/nsqadmin-ui.md.

DOM hooks (stable, for browser tests and user scripts)::

    <body data-base-path="/base/">
    <main id="content" data-page="topics|topic|channel|nodes|node|counter|lookup|error"
          data-refresh-interval="5000">          milliseconds; 0 = no auto-refresh
    <div id="flash">                             action results and errors (outside #content)
    .warning-banner                              the view's "WARNING: ..." message
    table#topics-table          rows tr[data-topic]
    table#topic-nodes-table     rows tr[data-topic][data-node]
    table#channels-table        rows tr[data-topic][data-channel]
    table#channel-nodes-table   rows tr[data-topic][data-channel][data-node]
    table#clients-table         rows tr[data-node] (the client's nsqd)
    table#nodes-table           rows tr[data-node]
    table#node-topics-table     rows tr[data-node][data-topic] and tr[data-node][data-topic][data-channel]
    table#node-clients-table    rows tr[data-node][data-topic][data-channel]
    table#inactive-table        rows tr[data-topic] and tr[data-topic][data-channel]
    .label-paused, .label-ordered, .label-out-of-date, .label-tombstoned
    #counter-value[data-total], #counter-rate    the counter page's total and its rate
    #node-total-topics, -channels, -messages, -clients   a node's totals
    section#charts[data-api][data-kind="topic|channel"]
        svg.chart[data-metric="rate|depth|in_flight"][data-points]   (points drawn so far)
        [data-value-for="rate|depth|in_flight"]  the latest value of a chart
    button[data-action="pause|unpause|empty|delete|tombstone|create"]
        with data-topic, data-channel, data-node, data-confirm (the question asked), data-after
        (where to go once done; absent = refresh in place); only rendered for admins
    form#create-form                             the lookup page's create form (admins only)
    img.sparkline                                graphite sparklines (only with a graphite URL)
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast
from urllib.parse import quote, unquote, urlencode, urlsplit

import attrs
import jinja2
from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException, NotFound

from twisted_nsq._gofmt import go_duration
from twisted_nsq._version import VERSION_STRING
from twisted_nsq.nsqadmin.acl import is_admin
from twisted_nsq.nsqadmin.interfaces import IClusterView, NodeNotFound, UpstreamError

log = Logger()

#: How often pages refresh themselves (seconds) unless C{?refresh=} says otherwise.
REFRESH_SECONDS = 5.0
#: The longest C{?refresh=} accepted.
MAX_REFRESH_SECONDS = 3600.0

_PACKAGE = "twisted_nsq.nsqadmin"
_ASSET_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_CONTENT_TYPES = {
    "js": b"text/javascript; charset=utf-8",
    "css": b"text/css; charset=utf-8",
    "svg": b"image/svg+xml",
    "png": b"image/png",
    "ico": b"image/x-icon",
    "txt": b"text/plain; charset=utf-8",
}
_HTML = b"text/html; charset=utf-8"


def _normalise_base_path(value: str) -> str:
    """C{--base-path} with exactly one C{/} at each end (C{""} and C{"/"} both mean the root)."""
    inner = value.strip("/")
    return "/" + inner + "/" if inner else "/"


def _as_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class PageSettings:
    """What the pages need from nsqadmin's options (spec 8.4 defaults)."""

    base_path: str = attrs.field(default="/", converter=_normalise_base_path)
    version: str = VERSION_STRING
    admin_users: tuple[str, ...] = attrs.field(default=(), converter=_as_tuple)
    acl_http_header: str = "X-Forwarded-User"
    graphite_url: str = ""
    proxy_graphite: bool = False
    statsd_prefix: str = "nsq.%s"
    statsd_counter_format: str = "stats.counters.%s.count"
    statsd_gauge_format: str = "stats.gauges.%s"
    statsd_interval: float = 60.0


# -- graphite ---------------------------------------------------------------------------------


def statsd_key(name: str) -> str:
    """
    A name as statsdaemon stores it in a bucket: letters, digits, C{-}, C{.} and C{_} kept, a
    space becomes C{_}, a C{/} becomes C{-}, anything else is dropped.
    """
    out: list[str] = []
    for c in name:
        if c.isascii() and (c.isalnum() or c in "-._"):
            out.append(c)
        elif c == " ":
            out.append("_")
        elif c == "/":
            out.append("-")
    return "".join(out)


def graphite_target(settings: PageSettings, metric: str, kind: str, node: str = "*") -> str:
    """
    The graphite target of one nsqd statsd metric (spec 2.9 names, e.g. C{topic.t.depth}), summed
    over every node (C{node="*"}) or for one node (C{host:http_port}), as spec 5.4 builds it:
    C{--statsd-prefix} with C{%s} replaced by the node key, then C{--statsd-counter-format} or
    C{--statsd-gauge-format} (C{kind} is C{"counter"} or C{"gauge"}) around it.
    """
    host = "*" if node == "*" else statsd_key(node.replace(".", "_").replace(":", "_"))
    prefix = settings.statsd_prefix.replace("%s", host, 1)
    if prefix and not prefix.endswith("."):
        prefix += "."
    form = settings.statsd_counter_format if kind == "counter" else settings.statsd_gauge_format
    return "sumSeries(" + form.replace("%s", prefix + metric, 1) + ")"


def graphite_metrics(settings: PageSettings, topic: str, channel: str | None = None) -> dict[str, str]:
    """The three chart targets (rate per second, depth, in-flight) of a topic or a channel."""
    path = "topic." + statsd_key(topic)
    if channel is not None:
        path += ".channel." + statsd_key(channel)
        in_flight = path + ".in_flight_count"
    else:
        in_flight = path + ".channel.*.in_flight_count"
    return {
        # statsd counters hold a delta per data point; scaleToSeconds makes it per second
        # whatever the retention of the series.
        "rate": "scaleToSeconds(" + graphite_target(settings, path + ".message_count", "counter") + ",1)",
        "depth": graphite_target(settings, path + ".depth", "gauge"),
        "in_flight": graphite_target(settings, in_flight, "gauge"),
    }


def graphite_render_url(settings: PageSettings, target: str, width: int = 240, height: int = 48) -> str:
    """The URL of a sparkline image: graphite's C{/render}, or nsqadmin's proxy of it."""
    if settings.proxy_graphite:
        render = settings.base_path + "render"
    else:
        render = settings.graphite_url.rstrip("/") + "/render"
    query = urlencode(
        [
            ("target", target),
            ("from", "-1h"),
            ("width", str(width)),
            ("height", str(height)),
            ("graphOnly", "true"),
            ("hideLegend", "true"),
            ("bgcolor", "FFFFFF"),
            ("fgcolor", "2B6CB0"),
        ]
    )
    return render + "?" + query


def content_security_policy(settings: PageSettings) -> str:
    """The C{Content-Security-Policy} of every page: our own origin, plus graphite's for images."""
    img = "'self' data:"
    if settings.graphite_url:
        parts = urlsplit(settings.graphite_url)
        if parts.scheme and parts.netloc:
            img += " " + parts.scheme + "://" + parts.netloc
    return "default-src 'self'; img-src " + img


# -- presentation of the view's objects --------------------------------------------------------


def node_name(producer: Mapping[str, Any]) -> str:
    """A producer's node name, C{broadcast_address:http_port} (IPv6 addresses in brackets)."""
    address = str(producer.get("broadcast_address", ""))
    if ":" in address and not address.startswith("["):
        address = "[" + address + "]"
    return f"{address}:{producer.get('http_port', '')}"


def _int(stats: Mapping[str, Any], key: str) -> int:
    value = stats.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def format_latency(ns: float) -> str:
    """A latency in nanoseconds, short: C{850ns}, C{12.5µs}, C{3.2ms}, C{11.5s}, C{4m12s}."""
    if ns < 1_000:
        return f"{ns:.0f}ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.1f}µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.1f}ms"
    if ns < 60_000_000_000:
        return f"{ns / 1_000_000_000:.1f}s"
    minutes, seconds = divmod(round(ns / 1_000_000_000), 60)
    return f"{minutes}m{seconds}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60}m{seconds}s"


def format_duration(ns: float) -> str:
    """A connection's age in nanoseconds, to the second: C{45s}, C{7m14s}, C{2h0m3s}."""
    return go_duration(max(0, round(ns / 1_000_000_000)) * 1_000_000_000)


def format_number(value: object) -> str:
    """An integer with thousands separators; anything else as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


def percentiles(stats: Mapping[str, Any]) -> list[dict[str, str]]:
    """The E2E percentiles of a stats object as C{{"quantile","value","min","max","average"}} texts."""
    e2e = stats.get("e2e_processing_latency")
    if not isinstance(e2e, Mapping):
        return []
    rows: list[dict[str, str]] = []
    for entry in e2e.get("percentiles") or []:
        if not isinstance(entry, Mapping):
            continue
        row = {"quantile": f"p{float(entry.get('quantile', 0)) * 100:g}"}
        for key in ("value", "min", "max", "average"):
            value = entry.get(key)
            row[key] = format_latency(value) if isinstance(value, int | float) else ""
        rows.append(row)
    return rows


def _is_ordered(stats: Mapping[str, Any]) -> bool:
    if stats.get("ordered") is True:
        return True
    return any(isinstance(n, Mapping) and n.get("ordered") is True for n in stats.get("nodes") or [])


def _order_key(stats: Mapping[str, Any]) -> str:
    """The order key of a channel ordered by key (twisted-nsq's /stats), or ""."""
    key = stats.get("order_key")
    if isinstance(key, str) and key:
        return key
    for node in stats.get("nodes") or []:
        if isinstance(node, Mapping) and isinstance(node.get("order_key"), str) and node["order_key"]:
            return str(node["order_key"])
    return ""


def _queue_columns(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The columns a topic and a channel share: names, depths, message count, paused, E2E."""
    depth = _int(stats, "depth")
    backend = _int(stats, "backend_depth")
    memory = stats.get("memory_depth")
    return {
        "topic": str(stats.get("topic_name", "")),
        "node": str(stats.get("node", "")),
        "hostname": str(stats.get("hostname", "")),
        "depth": depth,
        "memory_depth": memory if isinstance(memory, int) else depth - backend,
        "backend_depth": backend,
        "messages": _int(stats, "message_count"),
        "paused": stats.get("paused") is True,
        "e2e": percentiles(stats),
    }


def channel_row(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of one channel (aggregated or one node's)."""
    row = _queue_columns(stats)
    row.update(
        channel=str(stats.get("channel_name", "")),
        in_flight=_int(stats, "in_flight_count"),
        deferred=_int(stats, "deferred_count"),
        requeued=_int(stats, "requeue_count"),
        timed_out=_int(stats, "timeout_count"),
        clients=_int(stats, "client_count"),
        ordered=_is_ordered(stats),
        order_key=_order_key(stats),
    )
    return row


def topic_row(stats: Mapping[str, Any]) -> dict[str, Any]:
    """
    The columns of one topic (aggregated or one node's): its own depths and message count, and
    the in-flight, deferred, requeued, timed-out and connection counts summed over its channels.
    """
    channels = [channel_row(c) for c in stats.get("channels") or [] if isinstance(c, Mapping)]
    row = _queue_columns(stats)
    for key in ("in_flight", "deferred", "requeued", "timed_out", "clients"):
        row[key] = sum(c[key] for c in channels)
    row["channels"] = channels
    return row


def _safe_link(url: object) -> str | None:
    """C{url} when it is an http(s) URL a page may link to (never C{javascript:} and the like)."""
    if isinstance(url, str) and urlsplit(url).scheme.lower() in ("http", "https"):
        return url
    return None


def client_row(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of one consumer connection of a channel."""
    connected = stats.get("connected")
    tls_version = str(stats.get("tls_version") or "")
    zone = stats.get("topology_zone") or ""
    region = stats.get("topology_region") or ""
    node_zone = stats.get("node_topology_zone") or ""
    node_region = stats.get("node_topology_region") or ""
    sample_rate = _int(stats, "sample_rate")
    return {
        "node": str(stats.get("node", "")),
        "topic": str(stats.get("topic_name", "")),
        "channel": str(stats.get("channel_name", "")),
        "client_id": str(stats.get("client_id", "")),
        "hostname": str(stats.get("hostname", "")),
        "remote_address": str(stats.get("remote_address", "")),
        "user_agent": str(stats.get("user_agent", "")),
        "protocol": str(stats.get("version", "")),
        "tls": stats.get("tls") is True,
        "tls_version": tls_version,
        "tls_cipher_suite": str(stats.get("tls_cipher_suite") or ""),
        "tls_negotiated_protocol": str(stats.get("tls_negotiated_protocol") or ""),
        "tls_mutual": stats.get("tls_negotiated_protocol_is_mutual") is True,
        "snappy": stats.get("snappy") is True,
        "deflate": stats.get("deflate") is True,
        "sample_rate": sample_rate,
        "authed": stats.get("authed") is True,
        "auth_identity": str(stats.get("auth_identity") or ""),
        "auth_identity_url": _safe_link(stats.get("auth_identity_url")),
        "topology": " / ".join(str(p) for p in (region, zone) if p),
        "node_topology": " / ".join(str(p) for p in (node_region, node_zone) if p),
        "in_flight": _int(stats, "in_flight_count"),
        "ready": _int(stats, "ready_count"),
        "finished": _int(stats, "finish_count"),
        "requeued": _int(stats, "requeue_count"),
        "messages": _int(stats, "message_count"),
        "connected": format_duration(connected) if isinstance(connected, int | float) else "",
    }


def producer_row(producer: Mapping[str, Any], lookupd_count: int) -> dict[str, Any]:
    """The columns of one nsqd on the nodes page."""
    remotes = [str(r) for r in producer.get("remote_addresses") or []]
    topics = [t for t in producer.get("topics") or [] if isinstance(t, Mapping)]
    return {
        "node": node_name(producer),
        "hostname": str(producer.get("hostname", "")),
        "broadcast_address": str(producer.get("broadcast_address", "")),
        "tcp_port": producer.get("tcp_port", ""),
        "http_port": producer.get("http_port", ""),
        "version": str(producer.get("version", "")),
        "out_of_date": producer.get("out_of_date") is True,
        "topology": " / ".join(
            str(p) for p in (producer.get("topology_region"), producer.get("topology_zone")) if p
        ),
        "topics": len(topics),
        "tombstoned": sorted(str(t.get("topic", "")) for t in topics if t.get("tombstoned") is True),
        "lookupd_connections": len(remotes),
        "remote_addresses": remotes,
        # With lookupd, a node every lookupd does not list is half-registered: consumers using the
        # lookupds it misses will never find it.
        "unregistered": lookupd_count > 0 and len(remotes) < lookupd_count,
    }


# -- the site --------------------------------------------------------------------------------


@attrs.frozen
class _Asset:
    body: bytes
    content_type: bytes
    etag: bytes


def _load_assets() -> dict[str, _Asset]:
    """Every file of C{static/} by name, with its type and an ETag (read once, from the package)."""
    assets: dict[str, _Asset] = {}
    for entry in importlib.resources.files(_PACKAGE).joinpath("static").iterdir():
        name = entry.name
        if not entry.is_file() or not _ASSET_NAME.match(name):
            continue
        body = entry.read_bytes()
        extension = name.rsplit(".", 1)[-1].lower()
        content_type = _CONTENT_TYPES.get(extension, b"application/octet-stream")
        etag = b'"' + hashlib.sha256(body).hexdigest()[:16].encode("ascii") + b'"'
        assets[name] = _Asset(body, content_type, etag)
    return assets


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(_PACKAGE, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # One path segment: "#" of "#ephemeral" must not start a fragment, "/" nor "?" split it; ":"
    # (node names) is plain data inside a path and stays readable.
    env.filters["q"] = lambda value: quote(str(value), safe=":")
    env.filters["num"] = format_number
    env.filters["latency"] = format_latency
    return env


class _PageError(Exception):
    """A page that cannot be shown: the status and the explanation rendered instead."""

    def __init__(self, code: int, title: str, message: str) -> None:
        super().__init__(code, title, message)
        self.code = code
        self.title = title
        self.message = message


_Handler = Callable[..., Awaitable[bytes]]


class Pages:
    """
    nsqadmin's pages around an L{IClusterView}: C{app} routes paths relative to the base path
    (C{settings.base_path} prefixes every link the pages write).
    """

    def __init__(self, view: IClusterView, settings: PageSettings) -> None:
        self.view = view
        self.settings = settings
        self.app = Klein()
        self._env = _environment()
        self._assets = _load_assets()
        self._csp = content_security_policy(settings).encode("utf-8")
        self._add_routes()

    def resource(self) -> IResource:
        """The resource to mount at the base path."""
        resource: IResource = self.app.resource()
        return resource

    # -- wiring ------------------------------------------------------------------------------

    def _add_routes(self) -> None:
        pages: list[tuple[str, str, _Handler]] = [
            ("/", "index", self.topics_page),
            ("/topics", "topics", self.topics_page),
            ("/topics/<topic>", "topic", self.topic_page),
            ("/topics/<topic>/<channel>", "channel", self.channel_page),
            ("/nodes", "nodes", self.nodes_page),
            ("/nodes/<node>", "node", self.node_page),
            ("/counter", "counter", self.counter_page),
            ("/lookup", "lookup", self.lookup_page),
        ]
        for path, name, handler in pages:
            self.app.route(path, methods=["GET", "HEAD"], endpoint=name)(self._guarded(handler))
        self.app.route("/static/<asset>", methods=["GET", "HEAD"], endpoint="static")(self.static)

        @self.app.handle_errors(NotFound)
        def not_found(request: IRequest, failure: Failure) -> bytes:
            error = _PageError(404, "Not found", "There is no page at this address.")
            return self._error_page(cast(Request, request), error)

        @self.app.handle_errors(Exception)
        def internal_error(request: IRequest, failure: Failure) -> bytes:
            if isinstance(failure.value, HTTPException):
                failure.raiseException()
            log.failure("nsqadmin page {uri} failed", failure=failure, uri=request.uri)
            error = _PageError(500, "Internal error", "This page could not be rendered.")
            return self._error_page(cast(Request, request), error)

    def _guarded(self, handler: _Handler) -> Callable[..., Awaitable[bytes]]:
        """Render the view's failures as error pages: L{UpstreamError} 502, L{NodeNotFound} 404."""

        async def page(request: Request, **kwargs: str) -> bytes:
            # Klein hands over route variables still URL-escaped (werkzeug expects decoded paths).
            decoded = {key: unquote(value) for key, value in kwargs.items()}
            try:
                return await handler(request, **decoded)
            except UpstreamError as e:
                return self._error_page(request, _PageError(502, "Upstream error", f"UPSTREAM_ERROR: {e}"))
            except NodeNotFound as e:
                node = decoded.get("node", str(e))
                return self._error_page(request, _PageError(404, "Node not found", f"No nsqd is {node}."))
            except _PageError as e:
                return self._error_page(request, e)

        return page

    # -- rendering ---------------------------------------------------------------------------

    def _refresh_ms(self, request: Request) -> int:
        raw = (request.args or {}).get(b"refresh")
        seconds = REFRESH_SECONDS
        if raw:
            try:
                seconds = float(raw[0])
            except ValueError:
                seconds = REFRESH_SECONDS
            if not 0 <= seconds <= MAX_REFRESH_SECONDS:
                seconds = REFRESH_SECONDS
        return round(seconds * 1000)

    def _render(self, request: Request, template: str, page: str, title: str, **context: Any) -> bytes:
        """Render C{template} (or only its C{<main>} with C{?fragment=1}) with the common values."""
        settings = self.settings
        fragment = (request.args or {}).get(b"fragment") == [b"1"]
        message = context.pop("message", "")
        values: dict[str, Any] = {
            "base": settings.base_path,
            "version": settings.version,
            "is_admin": is_admin(request, settings.admin_users, settings.acl_http_header),
            "page": page,
            "title": title,
            "fragment": fragment,
            "refresh_ms": self._refresh_ms(request),
            "messages": [m for m in (message if isinstance(message, list) else [message]) if m],
            "graphite": bool(settings.graphite_url),
            "asset": self._asset_url,
            "lookupd": list(self.view.lookupd_http_addresses),
        }
        values.update(context)
        body = self._env.get_template(template).render(values).encode("utf-8")
        headers = request.responseHeaders
        headers.setRawHeaders(b"Content-Type", [_HTML])
        headers.setRawHeaders(b"Content-Security-Policy", [self._csp])
        headers.setRawHeaders(b"X-Content-Type-Options", [b"nosniff"])
        headers.setRawHeaders(b"X-Frame-Options", [b"DENY"])
        headers.setRawHeaders(b"Referrer-Policy", [b"same-origin"])
        headers.setRawHeaders(b"Cache-Control", [b"no-store"])
        return body

    def _error_page(self, request: Request, error: _PageError) -> bytes:
        request.setResponseCode(error.code)
        return self._render(
            request, "error.html", "error", error.title, code=error.code, error_message=error.message
        )

    def _asset_url(self, name: str) -> str:
        """The URL of a static file, versioned by its content so it can be cached for long."""
        asset = self._assets[name]
        return f"{self.settings.base_path}static/{name}?v={asset.etag.decode('ascii').strip(chr(34))}"

    def _sparklines(self, topic: str, channel: str | None = None) -> dict[str, str]:
        if not self.settings.graphite_url:
            return {}
        targets = graphite_metrics(self.settings, topic, channel)
        return {metric: graphite_render_url(self.settings, target) for metric, target in targets.items()}

    # -- pages -------------------------------------------------------------------------------

    async def topics_page(self, request: Request) -> bytes:
        """
        All topics, each with its depth, messages, channels and paused state, from one C{/stats}
        read per producer (L{IClusterView.topic_summaries}), however many topics there are.
        """
        summaries = await self.view.topic_summaries()
        rows: list[dict[str, Any]] = []
        for stats in summaries.get("topics") or []:
            if not isinstance(stats, Mapping):
                continue
            name = str(stats.get("topic_name", ""))
            row = topic_row(stats)
            row.update(topic=name, sparkline=self._sparklines(name).get("rate", ""))
            rows.append(row)
        return self._render(
            request, "topics.html", "topics", "Topics", topics=rows, message=summaries.get("message", "")
        )

    async def topic_page(self, request: Request, topic: str) -> bytes:
        """One topic: per-node rows, its channels, E2E percentiles, charts and actions."""
        stats = await self.view.topic(topic)
        summary = topic_row(stats)
        nodes = [topic_row(n) for n in stats.get("nodes") or [] if isinstance(n, Mapping)]
        return self._render(
            request,
            "topic.html",
            "topic",
            f"Topic {topic}",
            topic=topic,
            summary=summary,
            nodes=nodes,
            channels=summary["channels"],
            sparklines=self._sparklines(topic),
            message=stats.get("message", ""),
        )

    async def channel_page(self, request: Request, topic: str, channel: str) -> bytes:
        """One channel: per-node rows, its clients, E2E percentiles, charts and actions."""
        stats = await self.view.channel(topic, channel)
        summary = channel_row(stats)
        nodes = [channel_row(n) for n in stats.get("nodes") or [] if isinstance(n, Mapping)]
        clients = [client_row(c) for c in stats.get("clients") or [] if isinstance(c, Mapping)]
        return self._render(
            request,
            "channel.html",
            "channel",
            f"Channel {topic} / {channel}",
            topic=topic,
            channel=channel,
            summary=summary,
            nodes=nodes,
            clients=clients,
            sparklines=self._sparklines(topic, channel),
            message=stats.get("message", ""),
        )

    async def nodes_page(self, request: Request) -> bytes:
        """Every nsqd: addresses, version, topics and lookupd registrations."""
        listing = await self.view.nodes()
        lookupds = len(self.view.lookupd_http_addresses)
        rows = [producer_row(p, lookupds) for p in listing.get("nodes") or [] if isinstance(p, Mapping)]
        return self._render(
            request, "nodes.html", "nodes", "Nodes", nodes=rows, message=listing.get("message", "")
        )

    async def node_page(self, request: Request, node: str) -> bytes:
        """One nsqd: its topics and channels, their clients, totals, and the tombstone action."""
        stats = await self.view.node(node)
        topics = [topic_row(t) for t in stats.get("topics") or [] if isinstance(t, Mapping)]
        clients: list[dict[str, Any]] = []
        for t in stats.get("topics") or []:
            for c in t.get("channels") or [] if isinstance(t, Mapping) else []:
                for client in c.get("clients") or [] if isinstance(c, Mapping) else []:
                    row = client_row(client)
                    row.update(
                        node=node, topic=str(t.get("topic_name", "")), channel=str(c.get("channel_name", ""))
                    )
                    clients.append(row)
        return self._render(
            request,
            "node.html",
            "node",
            f"Node {node}",
            node=node,
            topics=topics,
            clients=clients,
            total_messages=_int(stats, "total_messages"),
            total_clients=_int(stats, "total_clients"),
            total_channels=sum(len(t["channels"]) for t in topics),
            message=stats.get("message", ""),
        )

    async def counter_page(self, request: Request) -> bytes:
        """The total of messages processed by every channel (the script keeps it live)."""
        counter = await self.view.counter()
        stats = counter.get("stats") or {}
        total = sum(_int(s, "message_count") for s in stats.values() if isinstance(s, Mapping))
        return self._render(
            request, "counter.html", "counter", "Counter", total=total, message=counter.get("message", "")
        )

    async def lookup_page(self, request: Request) -> bytes:
        """The lookupds, the topics and channels they list with no producer, and the create form."""
        inactive = await self.view.inactive_topics()
        topics = inactive.get("topics")
        if not isinstance(topics, Mapping):
            topics = {}
        rows = [(str(t), sorted(str(c) for c in topics[t] or [])) for t in sorted(topics)]
        return self._render(
            request, "lookup.html", "lookup", "Lookup", inactive=rows, message=inactive.get("message", "")
        )

    # -- static files ------------------------------------------------------------------------

    def static(self, request: Request, asset: str) -> bytes:
        """A file of C{static/}: only names listed there (no paths), with its type and cache headers."""
        found = self._assets.get(unquote(asset))
        if found is None:
            return self._error_page(request, _PageError(404, "Not found", "There is no such file."))
        headers = request.responseHeaders
        headers.setRawHeaders(b"ETag", [found.etag])
        # Pages link assets with a ?v= of their content, so a cached copy is never stale.
        headers.setRawHeaders(b"Cache-Control", [b"public, max-age=86400"])
        headers.setRawHeaders(b"X-Content-Type-Options", [b"nosniff"])
        if found.etag in _etags(request.getHeader(b"If-None-Match")):
            request.setResponseCode(304)
            return b""
        headers.setRawHeaders(b"Content-Type", [found.content_type])
        return found.body


def _etags(header: bytes | None) -> Iterable[bytes]:
    if not header:
        return ()
    return [tag.strip().removeprefix(b"W/") for tag in header.split(b",")]
