"""
nsqadmin's whole HTTP site: the JSON API (C{/api/...}, C{/ping}, C{/config/:opt}, C{/render})
and the pages for everything else, all under C{--base-path}.

A request outside the base path is answered C{404 {"message":"NOT_FOUND"}}, as Go's router does.
Each request is logged once its response is written (C{Site.log}), so logging never delays an
answer: C{200 GET /api/topics (127.0.0.1:5678) 1.5ms}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from twisted_nsq._http import BodyLimit, LimitedRequest, LimitedSite, respond_v1
from twisted_nsq._httputil import log_request
from twisted_nsq._version import VERSION_STRING
from twisted_nsq.nsqadmin.api import CONFIG_BODY_LIMIT, NSQAdminAPI
from twisted_nsq.nsqadmin.cluster import HTTPClient
from twisted_nsq.nsqadmin.interfaces import IClusterView
from twisted_nsq.nsqadmin.notify import Notifier
from twisted_nsq.nsqadmin.options import NSQAdminOptions

__all__ = ["API_SEGMENTS", "BODY_LIMIT", "NSQAdminHTTP", "PagesFactory"]

_log = Logger()

#: The largest body of any request but C{PUT /config/:opt} (the API's JSON bodies are tiny).
BODY_LIMIT = 64 * 1024

#: First path segments (after the base path) the API serves; everything else is a page.
API_SEGMENTS = frozenset({"api", "ping", "config"})

#: Builds the pages' resource from the view and the options (the real one imports
#: C{twisted_nsq.nsqadmin.pages}).
PagesFactory = Callable[[IClusterView, NSQAdminOptions], IResource]


def real_pages(view: IClusterView, options: NSQAdminOptions) -> IResource:
    """The HTML pages of C{twisted_nsq.nsqadmin.pages}, configured from the options."""
    from twisted_nsq.nsqadmin.pages import Pages, PageSettings

    values: dict[str, Any] = {
        "base_path": options.base_prefix,
        "version": VERSION_STRING,
        "admin_users": tuple(options.admin_users),
        "acl_http_header": options.acl_http_header,
        "graphite_url": options.graphite_url,
        "proxy_graphite": options.proxy_graphite,
        "statsd_prefix": options.statsd_prefix,
        "statsd_counter_format": options.statsd_counter_format,
        "statsd_gauge_format": options.statsd_gauge_format,
        "statsd_interval": options.statsd_interval,
    }
    return Pages(view, PageSettings(**values)).resource()


class _NotFound(Resource):
    """Go's router 404 for anything outside the base path."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        return respond_v1(request, 404, "NOT_FOUND")


class _Mount(Resource):
    """
    Walks the base path's segments, then hands the rest of the path to the API or the pages,
    with the segment it looked at put back so they see paths relative to the base path.
    """

    def __init__(
        self, prefix: tuple[bytes, ...], api: IResource, pages: IResource, api_segments: frozenset[bytes]
    ):
        super().__init__()  # type: ignore[no-untyped-call]
        self._prefix = prefix
        self._api = api
        self._pages = pages
        self._api_segments = api_segments
        self._not_found = _NotFound()  # type: ignore[no-untyped-call]

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        prepath, postpath = request.prepath, request.postpath
        assert prepath is not None and postpath is not None
        depth = len(prepath) - 1
        if depth < len(self._prefix):
            if path != self._prefix[depth]:
                return self._not_found
            if depth + 1 < len(self._prefix):
                return self
            if not postpath:
                # Exactly the base path without its trailing slash: the index page.
                postpath.append(b"")
            return self
        # The first segment after the base path: give it back to whoever serves it.
        postpath.insert(0, prepath.pop())
        return self._api if path in self._api_segments else self._pages

    def render(self, request: Request) -> bytes:
        return respond_v1(request, 404, "NOT_FOUND")


class _LoggedRequest(LimitedRequest):
    """Remembers when the request arrived, for the log line written after the response."""

    received_at: float | None = None

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        site = getattr(self.channel, "site", None)
        reactor: Any = getattr(site, "reactor", None)
        if reactor is not None:
            self.received_at = reactor.seconds()
        super().requestReceived(command, path, version)


class NSQAdminSite(LimitedSite):
    """nsqadmin's C{Site}: body limits, request deadlines, and Go's request log line."""

    requestFactory = _LoggedRequest

    def log(self, request: http.Request) -> None:
        received: float | None = getattr(request, "received_at", None)
        elapsed = self.reactor.seconds() - received if received is not None else 0.0
        log_request(_log, request, max(elapsed, 0.0))


class NSQAdminHTTP:
    """
    The site around one cluster view.

    @param http: the client graphite is reached with.
    @param notifier: told about every write action.
    @param pages: builds the pages' resource; the real pages by default.
    """

    def __init__(
        self,
        view: IClusterView,
        options: NSQAdminOptions,
        *,
        http: HTTPClient,
        notifier: Notifier,
        pages: PagesFactory | None = None,
    ) -> None:
        self.view = view
        self.options = options
        self.api = NSQAdminAPI(view, options, http=http, notifier=notifier)
        self._pages = pages if pages is not None else real_pages
        self._prefix = tuple(
            segment.encode("utf-8") for segment in options.base_prefix.strip("/").split("/") if segment
        )

    def resource(self) -> IResource:
        """The root resource: the API and the pages under the base path."""
        segments = {segment.encode("ascii") for segment in API_SEGMENTS}
        if self.options.proxy_graphite:
            segments.add(b"render")
        return _Mount(
            self._prefix, self.api.resource(), self._pages(self.view, self.options), frozenset(segments)
        )

    def body_limit(self, method: bytes, uri: bytes) -> BodyLimit:
        """C{PUT /config/:opt} may send 1 MiB (413 C{INVALID_VALUE} above); everything else 64 KiB."""
        path = uri.partition(b"?")[0]
        relative = path[len(self.options.base_prefix) - 1 :] if len(self.options.base_prefix) > 1 else path
        if relative.startswith(b"/config/"):
            return BodyLimit(CONFIG_BODY_LIMIT, "INVALID_VALUE")
        return BodyLimit(BODY_LIMIT, "BODY_TOO_BIG")

    def site(
        self, reactor: IReactorTime, timeout: float = 60.0, request_timeout: float = 60.0
    ) -> NSQAdminSite:
        """
        The site to listen with: C{timeout} closes idle connections, and a whole request must
        arrive within C{request_timeout} seconds.
        """
        return NSQAdminSite(self.resource(), self.body_limit, reactor, timeout, request_timeout)
