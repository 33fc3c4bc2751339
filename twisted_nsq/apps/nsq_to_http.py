"""
C{nsq_to_http}: consume a topic's channel and send each message to HTTP endpoints, as Go's
C{nsq_to_http} does. C{--post URL} sends the body in a POST; C{--get URL} fills the body,
URL-escaped, into the C{%s} of the URL. Each message goes to one of the URLs, chosen by C{--mode}.
A 2xx reply (exactly 200 for GET) finishes the message; any other reply, a timeout or a connection
error requeues it with the consumer's default delay (and backs the consumer off).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import quote_plus

from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime

from twisted_nsq._cli import FlagError, FlagSpec, Kind
from twisted_nsq._version import VERSION_STRING
from twisted_nsq.apps._common import (
    MAX_IN_FLIGHT,
    MODE,
    check_sources,
    consumer_flags,
    make_consumer,
    parse_options,
    run_until_shutdown,
    user_agent,
)
from twisted_nsq.apps._console import run_console
from twisted_nsq.apps._hostpool import RoundRobin, make_selector
from twisted_nsq.apps._status import GoLog, HostTimers
from twisted_nsq.client import Message

PROGRAM = "nsq_to_http"

DEFAULT_CONTENT_TYPE = "application/octet-stream"

HTTP_FLAGS: tuple[FlagSpec, ...] = consumer_flags(
    FlagSpec("topic", Kind.STRING, "", "nsq topic"),
    FlagSpec("channel", Kind.STRING, "nsq_to_http", "nsq channel"),
    MAX_IN_FLIGHT,
    FlagSpec("n", Kind.INT, 100, "number of concurrent publishers", attr="num_publishers"),
    MODE,
    FlagSpec("sample", Kind.FLOAT, 1.0, "% of messages to publish (float b/w 0 -> 1)"),
    FlagSpec("http-client-connect-timeout", Kind.DURATION, 2.0, "timeout for HTTP connect"),
    FlagSpec("http-client-request-timeout", Kind.DURATION, 20.0, "timeout for HTTP request"),
    FlagSpec(
        "status-every",
        Kind.INT,
        250,
        "the # of requests between logging status (per handler), 0 disables",
    ),
    FlagSpec("content-type", Kind.STRING, DEFAULT_CONTENT_TYPE, "the Content-Type used for POST requests"),
    FlagSpec(
        "post",
        Kind.STRING_LIST,
        [],
        "HTTP address to make a POST request to.  data will be in the body (may be given multiple times)",
        attr="post_addresses",
    ),
    FlagSpec(
        "get",
        Kind.STRING_LIST,
        [],
        "HTTP address to make a GET request to. '%s' will be printf replaced with data "
        "(may be given multiple times)",
        attr="get_addresses",
    ),
    FlagSpec(
        "header",
        Kind.STRING_LIST,
        [],
        "Custom header for HTTP requests (may be given multiple times)",
        attr="headers",
    ),
)


def parse_headers(pairs: Sequence[str]) -> dict[str, str]:
    """
    Turn C{--header} values into a header map. Go's form is C{name: value} (split at the first
    colon, both sides trimmed, neither empty); C{name=value} is also read, splitting at whichever
    of C{:} and C{=} comes first (neither can be part of a header name).

    @raise FlagError: a value without a separator, or with an empty name or value.
    """
    headers: dict[str, str] = {}
    for pair in pairs:
        cuts = [index for index in (pair.find(":"), pair.find("=")) if index >= 0]
        if not cuts:
            raise FlagError(f"invalid --header {pair!r}: must be 'name: value'")
        cut = min(cuts)
        name, value = pair[:cut].strip(), pair[cut + 1 :].strip()
        if not name or not value:
            raise FlagError(f"invalid --header {pair!r}: must be 'name: value'")
        headers[name] = value
    return headers


def check_values(values: dict[str, Any]) -> dict[str, Any]:
    """
    Validate the flags the way Go's C{nsq_to_http} does, in its order, and add the parsed
    C{headers_map}, C{consumer_options}, C{method} and C{addresses}.

    @raise FlagError: a missing, bad or contradictory flag.
    """
    if not values["topic"] or not values["channel"]:
        raise FlagError("--topic and --channel are required")
    posts, gets = values["post_addresses"], values["get_addresses"]
    if values["content_type"] != DEFAULT_CONTENT_TYPE:
        if not posts:
            raise FlagError("--content-type only used with --post")
        if not values["content_type"]:
            raise FlagError("--content-type requires a value when used")
    check_sources(values["nsqd_tcp_addresses"], values["lookupd_http_addresses"])
    if not gets and not posts:
        raise FlagError("--get or --post required")
    if gets and posts:
        raise FlagError("use --get or --post not both")
    for get in gets:
        if get.count("%s") != 1:
            raise FlagError("invalid GET address - must be a printf string")
    if not 0.0 <= values["sample"] <= 1.0:
        raise FlagError("ERROR: --sample must be between 0.0 and 1.0")
    if values["max_in_flight"] < 1:
        raise FlagError("--max-in-flight must be at least 1")
    if values["num_publishers"] < 1:
        raise FlagError("-n must be at least 1")
    for name in ("http_client_connect_timeout", "http_client_request_timeout"):
        if values[name] <= 0:
            raise FlagError(f"--{name.replace('_', '-')} should be positive")
    values["headers_map"] = parse_headers(values["headers"])
    options = parse_options(values["consumer_opt"], "consumer-opt", consumer=True)
    options.setdefault("user_agent", user_agent(PROGRAM))
    values["consumer_options"] = options
    values["method"] = "POST" if posts else "GET"
    values["addresses"] = list(posts or gets)
    return values


def get_url(template: str, body: bytes) -> str:
    """
    Go's C{fmt.Sprintf(template, url.QueryEscape(body))}: C{%s} becomes the escaped body, C{%%}
    a percent sign; anything else stays as written.
    """
    escaped = quote_plus(body, safe="")
    parts: list[str] = []
    index = 0
    while True:
        found = template.find("%", index)
        if found < 0 or found + 1 >= len(template):
            parts.append(template[index:])
            return "".join(parts)
        parts.append(template[index:found])
        verb = template[found + 1]
        parts.append(escaped if verb == "s" else "%" if verb == "%" else template[found : found + 2])
        index = found + 2


class HTTPForwarder:
    """
    The consumer's handler: sends each sampled message to one address, at most C{concurrency}
    requests at a time, and answers with a Deferred that fails when the message must be requeued.

    @param http: a treq C{HTTPClient} (or anything with its C{request(method, url, data=,
        headers=)} returning responses with C{code} and C{content()}).
    """

    def __init__(
        self,
        http: Any,
        clock: IReactorTime,
        selector: RoundRobin,
        *,
        method: str,
        content_type: str,
        headers: dict[str, str],
        request_timeout: float,
        concurrency: int,
        sample: float,
        rng: random.Random,
        log: GoLog,
        status_every: int,
    ) -> None:
        self._http = http
        self._clock = clock
        self._selector = selector
        self._method = method
        self._request_timeout = request_timeout
        self._limit = DeferredSemaphore(concurrency)
        self._sample = sample
        self._rng = rng
        self._log = log
        # Later entries win: custom headers may replace the defaults, as in Go.
        header_map = {"User-Agent": f"{PROGRAM} v{VERSION_STRING}"}
        if method == "POST":
            header_map["Content-Type"] = content_type
        header_map.update(headers)
        self._headers = {name.encode(): [value.encode()] for name, value in header_map.items()}
        self._timers = HostTimers(selector.hosts, status_every, log)

    def handle(self, message: Message) -> Deferred[None] | None:
        """Handle one message: C{None} (finish now) when it is not sampled, else the request."""
        if self._sample < 1.0 and self._rng.random() > self._sample:
            return None
        return self._limit.run(self._send, message.body)

    def _send(self, body: bytes) -> Deferred[None]:
        pick = self._selector.get()
        if self._method == "POST":
            d: Deferred[Any] = self._http.request("POST", pick.host, data=body, headers=self._headers)
        else:
            d = self._http.request("GET", get_url(pick.host, body), headers=self._headers)
        d.addCallback(self._read)
        # One timeout over the request and the body: Go's client deadline covers both.
        d.addTimeout(self._request_timeout, self._clock)
        answered: Deferred[None] = d.addBoth(self._answered, pick)
        return answered

    def _read(self, response: Any) -> Deferred[int]:
        # The body is read (and dropped) so that the connection can serve the next request.
        content: Deferred[bytes] = response.content()
        return content.addCallback(lambda _: int(response.code))

    def _answered(self, result: object, pick: Any) -> None:
        if isinstance(result, int):
            ok = 200 <= result < 300 if self._method == "POST" else result == 200
            error = None if ok else f"got status code {result}"
        else:
            error = getattr(result, "getErrorMessage", lambda: str(result))()
        pick.mark(error is None)
        if error is not None:
            self._log(f"WARNING: {self._method} to {pick.host} failed - {error}")
            raise RuntimeError(error)
        self._timers.status(pick.host, self._clock.seconds() - pick.started)


def run(reactor: Any, values: dict[str, Any], stderr: TextIO) -> Deferred[None]:
    """Forward messages until the reactor stops, then stop the consumer and close connections."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
    pool.maxPersistentPerHost = values["num_publishers"]
    agent = Agent(  # type: ignore[no-untyped-call]
        reactor, connectTimeout=values["http_client_connect_timeout"], pool=pool
    )
    rng = random.Random()
    log = GoLog(reactor, stderr)
    forwarder = HTTPForwarder(
        HTTPClient(agent),
        reactor,
        make_selector(values["mode"], values["addresses"], reactor, rng),
        method=values["method"],
        content_type=values["content_type"],
        headers=values["headers_map"],
        request_timeout=values["http_client_request_timeout"],
        concurrency=values["num_publishers"],
        sample=values["sample"],
        rng=rng,
        log=log,
        status_every=values["status_every"],
    )
    consumer = make_consumer(reactor, values, values["topic"], forwarder.handle)
    consumer.start()

    def close_pool() -> Deferred[None]:
        closed: Deferred[None] = pool.closeCachedConnections()  # type: ignore[no-untyped-call]
        return closed

    def stop() -> Deferred[Any]:
        stopped: Deferred[Any] = consumer.stop()
        return stopped.addBoth(lambda _: close_pool())

    return run_until_shutdown(reactor, stop)


def main(argv: Sequence[str] | None = None) -> None:
    """The C{nsq_to_http} console script."""
    run_console(PROGRAM, HTTP_FLAGS, argv, check_values, run, sys.stderr)


if __name__ == "__main__":
    main()
