"""
Shared pieces of the NSQ HTTP APIs (nsqd, nsqlookupd): NSQ 1.x "V1" replies on Klein, Go-style
query parsing, a C{Site} that refuses oversized request bodies before buffering them, and the
test for cross-site browser requests (L{is_cross_site}) that mutating endpoints refuse.

V1 replies (what go-nsq, gnsq and nsqjs expect):
  - data: raw JSON, C{Content-Type: application/json; charset=utf-8};
  - a string: the text itself, C{Content-Type: text/plain; charset=utf-8} (what Go's content
    sniffing gives it), so clients never mistake C{OK} for JSON;
  - nothing: an empty body and no C{Content-Type};
  - an error: C{{"message":"<TEXT>"}} with the status;
  - every one of them with C{X-NSQ-Content-Type: nsq; version=1.0}.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, cast
from urllib.parse import unquote_to_bytes

import attrs
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

log = Logger()

X_NSQ_CONTENT_TYPE = b"X-NSQ-Content-Type"
V1_VERSION = b"nsq; version=1.0"
JSON_CONTENT_TYPE = b"application/json; charset=utf-8"
TEXT_CONTENT_TYPE = b"text/plain; charset=utf-8"

#: Go's C{strconv.ParseBool}-free boolean parameters: these words, anything else means true.
BOOL_PARAMS: dict[str, bool] = {"true": True, "1": True, "false": False, "0": False}


class APIError(Exception):
    """An NSQ HTTP error: the status and the C{message} text of the JSON body."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


# -- encoding ---------------------------------------------------------------------------------

# Go's encoding/json escapes these inside strings (HTML safety and JavaScript line separators);
# they can only occur inside strings, so replacing them in the whole document is safe.
_GO_JSON_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def go_json(value: Any) -> bytes:
    """C{value} as Go's C{json.Marshal} writes it: compact, UTF-8, HTML characters escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.translate(_GO_JSON_ESCAPES).encode("utf-8")


def seconds_to_ns(seconds: float) -> int:
    """Float seconds (how our options hold durations) as Go's integer nanoseconds."""
    return round(seconds * 1_000_000_000)


# -- replies ----------------------------------------------------------------------------------


def _reply(request: Request, code: int, body: bytes, content_type: bytes | None, v1: bool) -> bytes:
    request.setResponseCode(code)
    # twisted.web labels every body text/html unless told otherwise; Go labels nothing it did
    # not sniff, and an empty body gets no Content-Type at all.
    request.defaultContentType = None
    headers = request.responseHeaders
    if content_type is not None:
        headers.setRawHeaders(b"Content-Type", [content_type])
    if v1:
        headers.setRawHeaders(X_NSQ_CONTENT_TYPE, [V1_VERSION])
    headers.setRawHeaders(b"Content-Length", [b"%d" % len(body)])
    return body


def respond_v1(request: Request, code: int, data: object) -> bytes:
    """
    The body of a V1 reply, with status and headers set, as Go's C{http_api.RespondV1} makes it.

    On 200, C{str}/C{bytes} are written as text, C{None} as an empty body and anything else as
    JSON; any other status sends C{{"message": str(data)}}.
    """
    if code == 200:
        if data is None:
            return _reply(request, 200, b"", None, True)
        if isinstance(data, str):
            data = data.encode("utf-8")
        if isinstance(data, bytes):
            return _reply(request, 200, data, TEXT_CONTENT_TYPE if data else None, True)
        return _reply(request, 200, go_json(data), JSON_CONTENT_TYPE, True)
    return _reply(request, code, go_json({"message": str(data)}), JSON_CONTENT_TYPE, True)


def respond_error(request: Request, code: int, message: str) -> bytes:
    """A V1 error reply: C{{"message":"..."}} with C{code}."""
    return respond_v1(request, code, message)


def respond_plain(request: Request, code: int, text: str) -> bytes:
    """A plain-text reply without the V1 header (Go's C{PlainText} decorator, used by C{/ping})."""
    body = text.encode("utf-8")
    return _reply(request, code, body, TEXT_CONTENT_TYPE if body else None, False)


P = ParamSpec("P")
Handler = Callable[Concatenate[Request, P], object]


def v1_endpoint(
    handler: Callable[Concatenate[Request, P], object],
) -> Callable[Concatenate[Request, P], bytes | Deferred[bytes]]:
    """
    Turn a handler that returns data (or a Deferred of it) or raises L{APIError} into a Klein
    route answering V1.

    Any other exception is logged and answered C{500 {"message":"INTERNAL_ERROR"}}, as Go's
    router does for a panic.
    """

    def failed(request: Request, failure: Failure) -> bytes:
        if isinstance(failure.value, APIError):
            return respond_v1(request, failure.value.code, failure.value.message)
        log.failure("panic in HTTP handler {uri}", failure, uri=request.uri)
        return respond_v1(request, 500, "INTERNAL_ERROR")

    @functools.wraps(handler)
    def endpoint(request: Request, /, *args: P.args, **kwargs: P.kwargs) -> bytes | Deferred[bytes]:
        try:
            data = handler(request, *args, **kwargs)
        except Exception as e:
            return failed(request, Failure(e))  # type: ignore[no-untyped-call]
        if isinstance(data, Deferred):
            # The reply waits (e.g. for a durable publish's fsync).
            return data.addCallbacks(
                lambda result: respond_v1(request, 200, result), lambda f: failed(request, f)
            )
        return respond_v1(request, 200, data)

    return endpoint


def install_fallbacks(app: Klein) -> None:
    """
    Answer what no route handles the way NSQ's router does: 404 C{NOT_FOUND}, 405
    C{METHOD_NOT_ALLOWED} (with C{Allow}), 500 C{INTERNAL_ERROR}; all V1 JSON.

    Werkzeug's redirects (e.g. for C{//path}) keep their default rendering.
    """

    @app.handle_errors(NotFound)
    def not_found(request: IRequest, failure: Failure) -> bytes:
        return respond_v1(cast(Request, request), 404, "NOT_FOUND")

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(request: IRequest, failure: Failure) -> bytes:
        allowed = getattr(failure.value, "valid_methods", None) or []
        if allowed:
            cast(Request, request).responseHeaders.setRawHeaders(
                b"Allow", [", ".join(sorted(allowed)).encode("ascii")]
            )
        return respond_v1(cast(Request, request), 405, "METHOD_NOT_ALLOWED")

    @app.handle_errors(Exception)
    def internal_error(request: IRequest, failure: Failure) -> bytes:
        if isinstance(failure.value, HTTPException):
            failure.raiseException()
        log.failure("panic in HTTP handler {uri}", failure=failure, uri=request.uri)
        return respond_v1(cast(Request, request), 500, "INTERNAL_ERROR")


# -- query strings ----------------------------------------------------------------------------

_BAD_ESCAPE = re.compile(rb"%(?![0-9a-fA-F]{2})")


class Query:
    """
    A URL query string parsed as Go's C{url.ParseQuery} does it.

    NSQ reads parameters from the query only (POST bodies are never form-parsed), takes the first
    value of a repeated key, and refuses a query Go cannot parse (a bad C{%} escape or a C{;}) with
    C{400 INVALID_REQUEST} - which L{Query.parse} raises.
    """

    def __init__(self, values: dict[str, list[str]]) -> None:
        self.values = values

    @classmethod
    def parse(cls, raw: bytes) -> Query:
        """Parse C{raw} (the bytes after C{?}); raise C{APIError(400, "INVALID_REQUEST")} like nsqd."""
        values: dict[str, list[str]] = {}
        for pair in raw.split(b"&"):
            if b";" in pair or _BAD_ESCAPE.search(pair):
                raise APIError(400, "INVALID_REQUEST")
            if not pair:
                continue
            key, _, value = pair.partition(b"=")
            values.setdefault(_unescape(key), []).append(_unescape(value))
        return cls(values)

    @classmethod
    def of(cls, request: Request) -> Query:
        """The query of C{request}'s URI."""
        uri: bytes = request.uri
        _, _, raw = uri.partition(b"?")
        return cls.parse(raw)

    def get(self, key: str) -> str | None:
        """The first value of C{key}, or C{None} when the key is absent."""
        found = self.values.get(key)
        return found[0] if found else None

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def flag(self, key: str, default: bool = True) -> bool:
        """A boolean parameter: C{true}/C{1}/C{false}/C{0}; absent or anything else is C{default}."""
        value = self.get(key)
        if value is None:
            return default
        return BOOL_PARAMS.get(value, default)


def _unescape(value: bytes) -> str:
    return unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8", "replace")


# -- cross-site requests ----------------------------------------------------------------------

#: Methods that change nothing; every other method is refused when it comes cross-site.
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_and_port(authority: str, default_port: int) -> tuple[str, int] | None:
    """C{host[:port]} or C{[v6][:port]} as a lower-case host and a port, or C{None} if malformed."""
    if authority.startswith("["):
        host, bracket, rest = authority[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:]
    else:
        host, _, port_text = authority.partition(":")
    if not host:
        return None
    if not port_text:
        return host.lower(), default_port
    if not port_text.isdigit():
        return None
    return host.lower(), int(port_text)


def origin_matches_host(origin: str, host: str | None, secure: bool) -> bool:
    """
    Whether an C{Origin} header names the server the request was sent to (its C{Host}).

    Scheme default ports are filled in on both sides; C{Origin: null}, an origin that is not
    http(s), and a request without C{Host} never match.
    """
    if host is None:
        return False
    scheme, separator, authority = origin.strip().partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in _DEFAULT_PORTS or "/" in authority:
        return False
    origin_address = _host_and_port(authority, _DEFAULT_PORTS[scheme])
    host_address = _host_and_port(host.strip(), 443 if secure else 80)
    return origin_address is not None and origin_address == host_address


def is_cross_site(request: Request) -> bool:
    """
    Whether a browser sent C{request} on behalf of another site's page.

    True when C{Sec-Fetch-Site} is C{cross-site}, or an C{Origin} header is present and names
    another host than the request's C{Host}. Programs (curl, NSQ clients, nsqadmin) send neither
    header, so their requests are never cross-site.
    """
    headers = request.requestHeaders
    fetch_site = headers.getRawHeaders(b"Sec-Fetch-Site") or []
    if any(value.strip().lower() == b"cross-site" for value in fetch_site):
        return True
    origins = headers.getRawHeaders(b"Origin")
    if not origins:
        return False
    hosts = headers.getRawHeaders(b"Host") or []
    host = hosts[0].decode("latin-1") if hosts else None
    secure: bool = request.isSecure()  # type: ignore[no-untyped-call]
    return not all(origin_matches_host(origin.decode("latin-1"), host, secure) for origin in origins)


# -- request limits ---------------------------------------------------------------------------


@attrs.frozen
class BodyLimit:
    """The largest request body an endpoint takes, and the error text when a body is larger."""

    size: int
    message: str


#: Picks the limit for a request from its method and raw URI (query included).
BodyLimitPolicy = Callable[[bytes, bytes], BodyLimit]


class LimitedRequest(server.Request):
    """
    A request that never holds more body than its endpoint allows.

    twisted.web buffers a whole body before rendering (twisted#4898): here the C{Content-Length}
    is checked as soon as the headers are in, and a chunked body while it streams. Too large
    means a V1 413 reply straight away and the connection closed, as Go's nsqd answers from the
    Content-Length alone. The whole request (headers and body) must also arrive within the
    site's C{request_timeout}.
    """

    def __init__(self, channel: http.HTTPChannel, *args: object, **kwargs: object) -> None:
        # Go never parses form bodies; do not let twisted.web do it either.
        super().__init__(channel, parsePOSTFormSubmission=False)  # type: ignore[no-untyped-call]
        self._limit: BodyLimit | None = None
        self._received = 0
        self._rejected = False
        self._deadline: IDelayedCall | None = None
        self._site = getattr(channel, "site", None)
        if isinstance(self._site, LimitedSite) and self._site.request_timeout > 0:
            self._deadline = self._site.reactor.callLater(self._site.request_timeout, self._too_slow)

    def gotLength(self, length: int | None) -> None:
        if isinstance(self._site, LimitedSite):
            # The request line is parsed but handed to the request only once the body is in;
            # until then the channel holds it.
            method: bytes = getattr(self.channel, "_command", b"")
            uri: bytes = getattr(self.channel, "_path", b"")
            self._limit = self._site.body_limit(method, uri)
            if length is not None and length > self._limit.size:
                self._reject(self._limit)
                return
        super().gotLength(length)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:
        if self._rejected:
            return
        self._received += len(data)
        if self._limit is not None and self._received > self._limit.size:
            self._reject(self._limit)
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # A refused request is already answered; a body the channel still delivered is dropped.
        if self._rejected:
            return
        self._cancel_deadline()
        super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure) -> None:
        self._cancel_deadline()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _reject(self, limit: BodyLimit) -> None:
        self._rejected = True
        self._cancel_deadline()
        if self.content is not None:
            self.content.close()
        self.content = None
        # Answer now, before the client sends the body; no "100 Continue" must follow.
        self.requestHeaders.removeHeader(b"Expect")
        self._raw_reply(413, b"Request Entity Too Large", go_json({"message": limit.message}))

    def _too_slow(self) -> None:
        self._deadline = None
        if not self._rejected and not self.finished:
            self._rejected = True
            self._raw_reply(408, b"Request Timeout", go_json({"message": "REQUEST_TIMEOUT"}))

    def _raw_reply(self, code: int, reason: bytes, body: bytes) -> None:
        # The request is not dispatched (and never will be): write a whole response on the wire
        # and close, the way twisted.web answers a malformed request.
        head = [
            b"HTTP/1.1 %d %s" % (code, reason),
            b"Content-Type: " + JSON_CONTENT_TYPE,
            X_NSQ_CONTENT_TYPE + b": " + V1_VERSION,
            b"Content-Length: %d" % len(body),
            b"Connection: close",
        ]
        channel = self.channel
        transport = channel.transport
        if transport is not None:
            transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        channel.loseConnection()  # type: ignore[no-untyped-call]


class LimitedSite(server.Site):
    """
    A C{Site} whose requests are L{LimitedRequest}s.

    @ivar body_limit: the per-endpoint body limit policy.
    @ivar request_timeout: seconds a client has to send a whole request (0 disables).
    """

    requestFactory = LimitedRequest

    def __init__(
        self,
        resource: IResource,
        body_limit: BodyLimitPolicy,
        reactor: IReactorTime,
        timeout: float = 60.0,
        request_timeout: float = 60.0,
    ) -> None:
        super().__init__(resource, reactor=reactor, timeout=timeout)  # type: ignore[no-untyped-call]
        self.body_limit = body_limit
        self.request_timeout = request_timeout
