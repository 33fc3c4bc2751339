"""
Small pieces the daemons' HTTP APIs share besides L{twisted_nsq._http}: Go's request log line (and
an endpoint wrapper that writes it), reading a buffered request body, a C{PUT /config/...} JSON
string list, the numbers Go reports for log levels, and Go's printing of integral floats in JSON.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http import Request

from twisted_nsq._gofmt import go_duration
from twisted_nsq._http import APIError, seconds_to_ns
from twisted_nsq._log import LOG_LEVELS

__all__ = ["LOG_LEVEL_NUMBERS", "Endpoint", "go_number", "log_request", "logged", "read_body", "string_list"]

#: A Klein endpoint: the request (and any route arguments) in, the response body out.
Endpoint = Callable[..., "bytes | Deferred[bytes]"]

#: Go's numeric C{lg.LogLevel}s, which C{/config/log_level} reports.
LOG_LEVEL_NUMBERS: dict[str, int] = {name: number for number, name in enumerate(LOG_LEVELS, start=1)}


def log_request(log: Logger, request: Request, elapsed: float) -> None:
    """
    Log one answered request to C{log} (the daemon's own logger) as Go's daemons do:
    C{200 GET /ping (127.0.0.1:5678) 1.5µs}, C{elapsed} in seconds.
    """
    peer = request.getClientAddress()  # type: ignore[no-untyped-call]
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    log.info(
        "{status} {method} {uri} ({address}) {elapsed}",
        status=request.code,
        method=request.method.decode("latin-1"),
        uri=request.uri.decode("latin-1"),
        address=f"{host}:{port}" if host is not None else str(peer),
        elapsed=go_duration(seconds_to_ns(elapsed)),
    )


def logged(log: Logger, clock: IReactorTime, endpoint: Endpoint) -> Endpoint:
    """C{endpoint}, logging each request it answers with L{log_request}, timed by C{clock}."""

    @functools.wraps(endpoint)
    def logged(request: Request, /, *args: Any, **kwargs: Any) -> bytes | Deferred[bytes]:
        start = clock.seconds()
        body = endpoint(request, *args, **kwargs)
        log_request(log, request, clock.seconds() - start)
        return body

    return logged


def read_body(request: Request, limit: int = -1) -> bytes:
    """The request body from its start, at most C{limit} bytes (all of it when negative)."""
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    data: bytes = content.read(limit)
    return data


def string_list(body: bytes) -> list[str]:
    """
    A JSON array of strings, as Go's C{json.Unmarshal} into C{[]string} accepts it (C{null} is
    empty).

    @raise APIError: 400 C{INVALID_VALUE} for anything else.
    """
    try:
        value = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        raise APIError(400, "INVALID_VALUE") from None
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise APIError(400, "INVALID_VALUE")
    return value


def go_number(value: float) -> float | int:
    """Go prints an integral float64 without a fraction: C{11506430048}, not C{11506430048.0}."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value
