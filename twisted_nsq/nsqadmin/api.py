"""
nsqadmin's JSON API (spec section 5.3) on Klein, over an L{IClusterView}.

Every reply is V1 (C{X-NSQ-Content-Type: nsq; version=1.0}); errors are C{{"message": ...}}:

  - 403 C{FORBIDDEN}: a write (POST/DELETE) from someone who is not an admin (C{--admin-user},
    C{--acl-http-header}), or C{/config} from outside C{--allow-config-from-cidr};
  - 400 C{INVALID_BODY}, C{INVALID_ACTION}, C{INVALID_TOPIC}, C{INVALID_CHANNEL},
    C{INVALID_ARG_METRIC}, C{INVALID_ARG_TARGET}, C{INVALID_OPTION}, C{INVALID_VALUE};
  - 404 C{NODE_NOT_FOUND}; 502 C{UPSTREAM_ERROR: ...} when every upstream failed.

Routes are relative to C{--base-path} (L{twisted_nsq.nsqadmin.http} mounts them): C{/ping},
C{/api/...}, C{/config/:opt}, and C{/render} with C{--proxy-graphite}.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

from klein import Klein
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.web.resource import IResource
from twisted.web.server import Request

from twisted_nsq._cli import Kind
from twisted_nsq._http import (
    APIError,
    Query,
    install_fallbacks,
    respond_plain,
    seconds_to_ns,
    v1_endpoint,
)
from twisted_nsq._httputil import LOG_LEVEL_NUMBERS, read_body, string_list
from twisted_nsq._log import LOG_LEVELS
from twisted_nsq.nsqadmin.acl import is_admin
from twisted_nsq.nsqadmin.cluster import ACTIONS, HTTPClient
from twisted_nsq.nsqadmin.interfaces import IClusterView, JSONObject, NodeNotFound, UpstreamError
from twisted_nsq.nsqadmin.notify import Notifier
from twisted_nsq.nsqadmin.options import NSQADMIN_FLAGS, NSQAdminOptions, parse_cidr
from twisted_nsq.wire.names import is_valid_channel_name, is_valid_topic_name

__all__ = ["CONFIG_BODY_LIMIT", "NSQAdminAPI"]

_log = Logger()
_T = TypeVar("_T")

#: The largest C{PUT /config/:opt} body (Go reads at most 1 MiB).
CONFIG_BODY_LIMIT = 1024 * 1024

# Config name -> (option attribute, kind), for /config/:opt.
_CONFIG_OPTIONS: dict[str, tuple[str, Kind]] = {
    spec.toml_key: (spec.key, spec.kind) for spec in NSQADMIN_FLAGS if spec.in_config
}


def _json_body(request: Request, fields: tuple[str, ...]) -> dict[str, str]:
    """
    A request body decoded the way Go's C{json.Decoder} fills a struct of string fields: the first
    JSON value must be an object (or C{null}); missing fields are empty; anything else is
    C{400 INVALID_BODY}.
    """
    text = read_body(request).decode("utf-8", "replace").lstrip()
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except ValueError:
        raise APIError(400, "INVALID_BODY") from None
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise APIError(400, "INVALID_BODY")
    found: dict[str, str] = {}
    for field in fields:
        item = value.get(field)
        if item is None:
            found[field] = ""
        elif isinstance(item, str):
            found[field] = item
        else:
            raise APIError(400, "INVALID_BODY")
    return found


class NSQAdminAPI:
    """
    The JSON API around a cluster view.

    @param options: the running settings; C{PUT /config/...} changes C{lookupd_http_addresses}
        (on the view too) and C{log_level}.
    @param http: the client C{/api/graphite} and C{/render} reach graphite with.
    @param notifier: told about every write action.
    """

    def __init__(
        self, view: IClusterView, options: NSQAdminOptions, *, http: HTTPClient, notifier: Notifier
    ) -> None:
        self.view = view
        self.options = options
        self._http = http
        self.notifier = notifier
        self.app = Klein()
        install_fallbacks(self.app)
        self._add_routes()

    def resource(self) -> IResource:
        """The resource serving the API (paths relative to the base path)."""
        resource: IResource = self.app.resource()
        return resource

    # -- wiring ---------------------------------------------------------------------------------

    def _add_routes(self) -> None:
        def route(path: str, methods: list[str], name: str, handler: Callable[..., object]) -> None:
            self.app.route(path, methods=methods, endpoint=name)(v1_endpoint(handler))

        self.app.route("/ping", methods=["GET"], endpoint="ping")(self.ping)
        route("/api/topics", ["GET"], "topics", self.topics)
        route("/api/topics", ["POST"], "create_topic_channel", self.create_topic_channel)
        route("/api/topics/<topic>", ["GET"], "topic", self.topic)
        route("/api/topics/<topic>", ["POST"], "topic_action", self.topic_action)
        route("/api/topics/<topic>", ["DELETE"], "delete_topic", self.delete_topic)
        route("/api/topics/<topic>/<channel>", ["GET"], "channel", self.channel)
        route("/api/topics/<topic>/<channel>", ["POST"], "channel_action", self.channel_action)
        route("/api/topics/<topic>/<channel>", ["DELETE"], "delete_channel", self.delete_channel)
        route("/api/nodes", ["GET"], "nodes", self.nodes)
        route("/api/nodes/<node>", ["GET"], "node", self.node)
        route("/api/nodes/<node>", ["DELETE"], "tombstone_topic_producer", self.tombstone_topic_producer)
        route("/api/counter", ["GET"], "counter", self.counter)
        route("/api/graphite", ["GET"], "graphite", self.graphite)
        route("/config/<opt>", ["GET", "PUT"], "config", self.config)
        if self.options.proxy_graphite:
            self.app.route("/render", methods=["GET"], endpoint="render")(self.render_graphite)

    @staticmethod
    def _call(method: Callable[..., Coroutine[Any, Any, _T]], *args: Any) -> Deferred[_T]:
        """Run a handler coroutine, mapping the view's errors to the API's."""

        async def run() -> _T:
            try:
                return await method(*args)
            except UpstreamError as e:
                raise APIError(502, f"UPSTREAM_ERROR: {e}") from None
            except NodeNotFound:
                raise APIError(404, "NODE_NOT_FOUND") from None

        return ensureDeferred(run())

    def _require_admin(self, request: Request) -> None:
        if not is_admin(request, self.options.admin_users, self.options.acl_http_header):
            raise APIError(403, "FORBIDDEN")

    @staticmethod
    def _check_names(topic: str, channel: str | None = None) -> None:
        if not is_valid_topic_name(topic):
            raise APIError(400, "INVALID_TOPIC")
        if channel is not None and not is_valid_channel_name(channel):
            raise APIError(400, "INVALID_CHANNEL")

    # -- reading --------------------------------------------------------------------------------

    def ping(self, request: Request) -> bytes:
        """GET /ping: C{OK}, plain text without the V1 header."""
        return respond_plain(request, 200, "OK")

    def topics(self, request: Request) -> Deferred[JSONObject]:
        """GET /api/topics[?inactive=true]."""
        if Query.of(request).get("inactive") == "true":
            return self._call(self._await, self.view.inactive_topics())
        return self._call(self._await, self.view.topics())

    @staticmethod
    async def _await(d: Deferred[_T]) -> _T:
        return await d

    def topic(self, request: Request, topic: str) -> Deferred[JSONObject]:
        """GET /api/topics/:topic: the aggregated TopicStats."""
        return self._call(self._await, self.view.topic(topic))

    def channel(self, request: Request, topic: str, channel: str) -> Deferred[JSONObject]:
        """GET /api/topics/:topic/:channel: the aggregated ChannelStats with clients."""
        return self._call(self._await, self.view.channel(topic, channel))

    def nodes(self, request: Request) -> Deferred[JSONObject]:
        """GET /api/nodes: every producer."""
        return self._call(self._await, self.view.nodes())

    def node(self, request: Request, node: str) -> Deferred[JSONObject]:
        """GET /api/nodes/:node: one nsqd's topics, channels and clients."""
        return self._call(self._await, self.view.node(node))

    def counter(self, request: Request) -> Deferred[JSONObject]:
        """GET /api/counter: message counts per topic, channel and node."""
        return self._call(self._await, self.view.counter())

    # -- actions --------------------------------------------------------------------------------

    def create_topic_channel(self, request: Request) -> Deferred[JSONObject]:
        """POST /api/topics C{{"topic":..., "channel":...}}: register them in lookupd (and producers)."""
        self._require_admin(request)
        body = _json_body(request, ("topic", "channel"))
        topic, channel = body["topic"], body["channel"]
        if not is_valid_topic_name(topic):
            raise APIError(400, "INVALID_TOPIC")
        if channel and not is_valid_channel_name(channel):
            raise APIError(400, "INVALID_CHANNEL")

        async def act() -> JSONObject:
            message = await self.view.create_topic_channel(topic, channel or None)
            self.notifier.notify("create_topic", topic, "", "", request)
            if channel:
                self.notifier.notify("create_channel", topic, channel, "", request)
            return {"message": message}

        return self._call(act)

    def topic_action(self, request: Request, topic: str) -> Deferred[JSONObject]:
        """POST /api/topics/:topic C{{"action": "pause"|"unpause"|"empty"}}."""
        return self._action(request, topic, None)

    def channel_action(self, request: Request, topic: str, channel: str) -> Deferred[JSONObject]:
        """POST /api/topics/:topic/:channel C{{"action": "pause"|"unpause"|"empty"}}."""
        return self._action(request, topic, channel)

    def _action(self, request: Request, topic: str, channel: str | None) -> Deferred[JSONObject]:
        self._require_admin(request)
        action = _json_body(request, ("action",))["action"]
        if action not in ACTIONS:
            raise APIError(400, "INVALID_ACTION")
        self._check_names(topic, channel)

        async def act() -> JSONObject:
            if channel is None:
                done = self.view.topic_action(topic, action)
            else:
                done = self.view.channel_action(topic, channel, action)
            # Go notifies before it looks at the outcome, so even a failed action is reported.
            kind = "topic" if channel is None else "channel"
            self.notifier.notify(f"{action}_{kind}", topic, channel or "", "", request)
            return {"message": await done}

        return self._call(act)

    def delete_topic(self, request: Request, topic: str) -> Deferred[JSONObject]:
        """DELETE /api/topics/:topic: from every lookupd and every producer."""
        self._require_admin(request)
        self._check_names(topic)

        async def act() -> JSONObject:
            message = await self.view.delete_topic(topic)
            self.notifier.notify("delete_topic", topic, "", "", request)
            return {"message": message}

        return self._call(act)

    def delete_channel(self, request: Request, topic: str, channel: str) -> Deferred[JSONObject]:
        """DELETE /api/topics/:topic/:channel: from every lookupd and every producer."""
        self._require_admin(request)
        self._check_names(topic, channel)

        async def act() -> JSONObject:
            message = await self.view.delete_channel(topic, channel)
            self.notifier.notify("delete_channel", topic, channel, "", request)
            return {"message": message}

        return self._call(act)

    def tombstone_topic_producer(self, request: Request, node: str) -> Deferred[JSONObject]:
        """DELETE /api/nodes/:node C{{"topic": ...}}: tombstone in lookupd, delete on the node."""
        self._require_admin(request)
        topic = _json_body(request, ("topic",))["topic"]
        if not is_valid_topic_name(topic):
            raise APIError(400, "INVALID_TOPIC")

        async def act() -> JSONObject:
            message = await self.view.tombstone_topic_producer(node, topic)
            self.notifier.notify("tombstone_topic_producer", topic, "", node, request)
            return {"message": message}

        return self._call(act)

    # -- graphite -------------------------------------------------------------------------------

    def graphite(self, request: Request) -> object:
        """GET /api/graphite?metric=rate&target=...: C{{"rate": "12.34"}} or C{"N/A"}."""
        query = Query.of(request)
        if query.get("metric") != "rate":
            raise APIError(400, "INVALID_ARG_METRIC")
        target = query.get("target")
        if target is None:
            raise APIError(400, "INVALID_ARG_TARGET")
        if not self.options.graphite_url:
            return {"rate": "N/A"}
        interval = int(self.options.statsd_interval)
        params = urlencode(
            sorted(
                {
                    "from": f"-{interval * 2}sec",
                    "until": f"-{interval}sec",
                    "format": "json",
                    "target": target,
                }.items()
            )
        )
        url = f"{self.options.graphite_url}/render?{params}"
        _log.info("GRAPHITE: {url}", url=url)

        async def fetch() -> JSONObject:
            try:
                response = await self._http.get(url)
                body = await self._http.content(response)
                if response.code != 200:
                    raise ValueError(f"got response {response.code}")
                series = json.loads(body)
                rate = series[0]["datapoints"][0][0]
            except Exception as e:
                _log.error("graphite request failed - {error}", error=str(e))
                raise APIError(500, "INTERNAL_ERROR") from None
            if not isinstance(rate, int | float) or rate < 0 or interval <= 0:
                return {"rate": "N/A"}
            return {"rate": f"{rate / interval:.2f}"}

        return ensureDeferred(fetch())

    def render_graphite(self, request: Request) -> Deferred[bytes]:
        """GET /render (C{--proxy-graphite}): graphite's own answer, its URL's basic auth passed on."""
        parts = urlsplit(self.options.graphite_url)
        _, _, query = request.uri.partition(b"?")
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
        url = urlunsplit((parts.scheme or "http", netloc, "/render", query.decode("latin-1"), ""))
        auth = (parts.username or "", parts.password or "") if parts.username is not None else None

        async def proxy() -> bytes:
            try:
                response = await self._http.request("GET", url, auth=auth)
                body: bytes = await self._http.content(response)
            except Exception as e:
                _log.error("graphite proxy failed - {error}", error=str(e))
                request.setResponseCode(502)
                request.defaultContentType = None
                request.responseHeaders.setRawHeaders(b"Content-Length", [b"0"])
                return b""
            request.setResponseCode(response.code)
            request.defaultContentType = None
            content_type = response.headers.getRawHeaders(b"Content-Type")
            if content_type:
                request.responseHeaders.setRawHeaders(b"Content-Type", content_type)
            request.responseHeaders.setRawHeaders(b"Content-Length", [b"%d" % len(body)])
            return body

        return ensureDeferred(proxy())

    # -- config ---------------------------------------------------------------------------------

    def _check_config_peer(self, request: Request) -> None:
        cidr = self.options.allow_config_from_cidr
        if not cidr:
            return
        network = parse_cidr(cidr)
        host = getattr(request.getClientAddress(), "host", None)  # type: ignore[no-untyped-call]
        try:
            address = ipaddress.ip_address(str(host))
        except ValueError:
            _log.error("failed to parse RemoteAddr {address}", address=host)
            raise APIError(400, "INVALID_REMOTE_ADDR") from None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.version != network.version or address not in network:
            raise APIError(403, "FORBIDDEN")

    def config(self, request: Request, opt: str) -> object:
        """GET /config/:opt (any option, by config name); PUT C{nsqlookupd_http_addresses} or C{log_level}."""
        self._check_config_peer(request)
        options = self.options
        if request.method == b"PUT":
            body = read_body(request, CONFIG_BODY_LIMIT + 1)
            if not body or len(body) > CONFIG_BODY_LIMIT:
                raise APIError(413, "INVALID_VALUE")
            if opt == "nsqlookupd_http_addresses":
                addresses = string_list(body)
                options.lookupd_http_addresses = addresses
                self.view.lookupd_http_addresses = list(addresses)
            elif opt == "log_level":
                level = body.decode("utf-8", "replace").strip().lower()
                if level not in LOG_LEVELS:
                    raise APIError(400, "INVALID_VALUE")
                options.log_level = level
            else:
                raise APIError(400, "INVALID_OPTION")
        known = _CONFIG_OPTIONS.get(opt)
        if known is None:
            raise APIError(400, "INVALID_OPTION")
        attribute, kind = known
        value = getattr(options, attribute)
        if opt == "log_level":
            return LOG_LEVEL_NUMBERS.get(value, value)
        if kind is Kind.DURATION:
            return seconds_to_ns(value)
        if isinstance(value, list | tuple):
            return list(value)
        return value
