"""
nsqd's client for external auth servers (C{--auth-http-address}) and the authorization state
that an AUTH command leaves on a connection.

The protocol sends the client's secret with L{AuthClient.authorize}, keeps the L{AuthState},
checks each SUB/PUB with L{AuthState.is_allowed}, and authorizes again once
L{AuthState.is_expired}.
"""

from __future__ import annotations

import json
import random as _random
import re
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import quote_plus

import attrs
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

__all__ = [
    "PERMISSIONS",
    "AuthClient",
    "AuthError",
    "AuthState",
    "Authorization",
    "HTTPClient",
    "auth_query",
    "auth_url",
    "parse_auth_response",
]

#: The permissions an auth server may grant.
PERMISSIONS = ("subscribe", "publish")


class AuthError(Exception):
    """
    Authorization could not be obtained: no auth server answered successfully, or an answer
    was not a valid authorization.
    """


@attrs.frozen
class Authorization:
    """
    One grant from the auth server: C{permissions} on topics matching the C{topic} regex and
    channels matching any of the C{channels} regexes.

    Regexes match anywhere in the name (unanchored, as Go's C{MatchString}); add C{^...$} in
    the auth server's answer to match whole names.

    @raise re.error: if a regex does not compile.
    """

    topic: str
    channels: tuple[str, ...]
    permissions: tuple[str, ...]
    _topic_regex: re.Pattern[str] = attrs.field(init=False, repr=False, eq=False)
    _channel_regexes: tuple[re.Pattern[str], ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        # Compiled once here so checks on the publish/subscribe path only match.
        object.__setattr__(self, "_topic_regex", re.compile(self.topic))
        object.__setattr__(self, "_channel_regexes", tuple(re.compile(c) for c in self.channels))

    def is_allowed(self, topic: str, channel: str) -> bool:
        """
        Whether this grant covers subscribing to C{topic}/C{channel}, or, when C{channel} is
        empty, publishing to C{topic}.

        Publishing is also checked against the channel regexes with the empty channel name, so
        a publish grant needs a channel pattern that matches "" (such as C{.*}), as in nsqd.
        """
        needed = "subscribe" if channel else "publish"
        if needed not in self.permissions:
            return False
        if self._topic_regex.search(topic) is None:
            return False
        return any(regex.search(channel) is not None for regex in self._channel_regexes)


@attrs.frozen
class AuthState:
    """
    The auth server's answer for one connection's secret.

    @ivar identity: shown in C{/stats} as C{auth_identity}.
    @ivar identity_url: shown in C{/stats} as C{auth_identity_url}.
    @ivar expires_at: when, on the clock given to L{AuthClient}, this answer must be renewed.
    """

    identity: str
    identity_url: str
    authorizations: tuple[Authorization, ...]
    expires_at: float

    @property
    def permission_count(self) -> int:
        """
        How many grants the answer holds (the AUTH reply's C{permission_count}).
        """
        return len(self.authorizations)

    def is_expired(self, now: float) -> bool:
        """
        Whether the answer's TTL has run out at C{now} (strictly after C{expires_at}, as nsqd).
        """
        return self.expires_at < now

    def is_allowed(self, topic: str, channel: str) -> bool:
        """
        Whether any grant covers C{topic}/C{channel}; see L{Authorization.is_allowed}.
        """
        return any(a.is_allowed(topic, channel) for a in self.authorizations)


class HTTPClient(Protocol):
    """
    The part of C{treq.client.HTTPClient} (or C{treq.testing.StubTreq}) that L{AuthClient} uses.
    """

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[bytes | str, list[bytes | str]] | None = None,
        data: bytes | None = None,
        timeout: float | None = None,
        # treq uses only the clock part of the reactor (to time the request out).
        reactor: Any = None,
    ) -> Deferred[Any]:
        """
        Make a request; the result has C{code} and can be read with C{treq.content}.
        """


def auth_query(remote_ip: str, tls: bool, secret: bytes, common_name: str) -> dict[str, str]:
    """
    The auth request's parameters, sorted by name as Go's C{url.Values} encodes them.
    """
    return {
        "common_name": common_name,
        "remote_ip": remote_ip,
        # The secret is opaque bytes on the wire; Go holds it in a string and its JSON encoder
        # replaces invalid UTF-8 the same way.
        "secret": secret.decode("utf-8", "replace"),
        "tls": "true" if tls else "false",
    }


def auth_url(address: str, query: str | None) -> str:
    """
    The URL for one C{--auth-http-address}: C{http://<address>/auth}, or the address itself
    when it is already a URL (contains "://"), with C{?query} appended when given.
    """
    base = address if "://" in address else f"http://{address}/auth"
    return base if query is None else f"{base}?{query}"


def _encode_query(remote_ip: str, tls: bool, secret: bytes, common_name: str) -> str:
    # Go's url.Values.Encode: keys sorted, QueryEscape (space as "+", all but [A-Za-z0-9-_.~]
    # percent-encoded); quote_plus with no safe characters does the same, bytes included.
    parts = {
        "common_name": quote_plus(common_name, safe=""),
        "remote_ip": quote_plus(remote_ip, safe=""),
        "secret": quote_plus(secret, safe=""),
        "tls": "true" if tls else "false",
    }
    return "&".join(f"{key}={value}" for key, value in sorted(parts.items()))


# Go's encoding/json escapes these even inside strings; nothing else we emit needs changing.
_GO_JSON_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def _encode_post_body(remote_ip: str, tls: bool, secret: bytes, common_name: str) -> bytes:
    # The JSON of Go's url.Values: every value is a one-element list, keys sorted.
    values = {key: [value] for key, value in auth_query(remote_ip, tls, secret, common_name).items()}
    text = json.dumps(values, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return text.translate(_GO_JSON_ESCAPES).encode("utf-8")


def _field(document: dict[str, Any], name: str, kind: type, where: str = "response") -> Any:
    if name not in document:
        raise AuthError(f"auth {where} has no {name!r}")
    value = document[name]
    # bool is an int in Python but not in JSON.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise AuthError(f"auth {where} field {name!r} is not a {kind.__name__}: {value!r}")
    return value


def _string_list(document: dict[str, Any], name: str, where: str) -> tuple[str, ...]:
    values = _field(document, name, list, where)
    if not all(isinstance(v, str) for v in values):
        raise AuthError(f"auth {where} field {name!r} must hold strings: {values!r}")
    return tuple(values)


def parse_auth_response(body: bytes, now: float) -> AuthState:
    """
    Validate an auth server's JSON answer and turn it into an L{AuthState} that expires C{ttl}
    seconds after C{now}.

    Required: C{ttl} (an integer > 0) and C{authorizations}, each with C{topic}, C{channels}
    and C{permissions}; C{identity} and C{identity_url} default to "".  Permissions must be
    "subscribe" or "publish" and every regex must compile.

    @raise AuthError: when any of that does not hold.
    """
    try:
        document = json.loads(body)
    except ValueError as e:
        raise AuthError(f"auth response is not JSON: {e}") from e
    if not isinstance(document, dict):
        raise AuthError("auth response is not a JSON object")
    ttl = _field(document, "ttl", int)
    if ttl <= 0:
        raise AuthError(f"invalid TTL {ttl} (must be >0)")
    identity = document.get("identity", "")
    identity_url = document.get("identity_url", "")
    if not isinstance(identity, str) or not isinstance(identity_url, str):
        raise AuthError("auth response identity and identity_url must be strings")
    authorizations = []
    for entry in _field(document, "authorizations", list):
        if not isinstance(entry, dict):
            raise AuthError(f"authorization is not a JSON object: {entry!r}")
        topic = _field(entry, "topic", str, "authorization")
        channels = _string_list(entry, "channels", "authorization")
        permissions = _string_list(entry, "permissions", "authorization")
        for permission in permissions:
            if permission not in PERMISSIONS:
                raise AuthError(f"unknown permission {permission}")
        try:
            authorizations.append(Authorization(topic=topic, channels=channels, permissions=permissions))
        except re.error as e:
            raise AuthError(f"unable to compile regex {e.pattern!r}: {e}") from e
    return AuthState(
        identity=identity,
        identity_url=identity_url,
        authorizations=tuple(authorizations),
        expires_at=now + ttl,
    )


class AuthClient:
    """
    Asks nsqd's auth servers what a client's secret allows.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        http_client: HTTPClient,
        clock: IReactorTime,
        request_timeout: float = 5.0,
        method: str = "get",
        random: _random.Random | None = None,
    ) -> None:
        """
        @param addresses: the C{--auth-http-address} values, C{host:port} or full URLs.
        @param http_client: makes the requests (a treq C{HTTPClient}).
        @param clock: times requests out and dates the answers' expiry.
        @param request_timeout: seconds allowed for each auth server to answer in full.
        @param method: C{"get"} (query string) or C{"post"} (JSON body), as
            C{--auth-http-request-method}.
        @param random: picks the auth server to try first.
        """
        if method not in ("get", "post"):
            raise ValueError(f"invalid auth HTTP request method {method!r}: expected 'get' or 'post'")
        self.addresses = tuple(addresses)
        self._http = http_client
        self._clock = clock
        self._timeout = request_timeout
        self._method = method
        self._random = random if random is not None else _random.Random()

    def authorize(
        self, remote_ip: str, tls: bool, secret: bytes, common_name: str = ""
    ) -> Deferred[AuthState]:
        """
        Query the auth servers, starting from a random one and going round the list (as nsqd
        does) until one gives a valid answer.

        @param remote_ip: the client's IP address, without port.
        @param tls: whether the connection has upgraded to TLS.
        @param secret: the AUTH command's body.
        @param common_name: the CN of the client's TLS certificate, "" without one.
        @return: fires with the answer, or fails with L{AuthError} naming every failed server.
            Cancelling it cancels the request in progress and tries no further server.
        """
        count = len(self.addresses)
        if not count:
            return fail(AuthError("no auth server configured"))
        start = self._random.randrange(count)
        order = [self.addresses[(start + i) % count] for i in range(count)]
        errors: list[str] = []
        current: list[Deferred[AuthState]] = []
        cancelled = False

        def cancel(result: Deferred[AuthState]) -> None:
            nonlocal cancelled
            cancelled = True
            for attempt in current:
                attempt.cancel()

        result: Deferred[AuthState] = Deferred(cancel)

        def try_address(index: int) -> None:
            address = order[index]
            attempt = Deferred.fromCoroutine(self._query(address, remote_ip, tls, secret, common_name))
            # Covers reading the body too; treq's own timeout stops at the response headers.
            attempt.addTimeout(self._timeout, self._clock)
            current[:] = [attempt]

            def succeeded(state: AuthState) -> None:
                if not cancelled:
                    result.callback(state)

            def failed(failure: Failure) -> None:
                if cancelled:
                    return
                errors.append(f"failed to auth against {address} - {_describe(failure.value)}")
                if index + 1 < count:
                    try_address(index + 1)
                else:
                    result.errback(AuthError("; ".join(errors)))

            attempt.addCallbacks(succeeded, failed)

        try_address(0)
        return result

    async def _query(
        self, address: str, remote_ip: str, tls: bool, secret: bytes, common_name: str
    ) -> AuthState:
        if self._method == "post":
            response = await self._http.request(
                "POST",
                auth_url(address, None),
                headers={"Content-Type": ["application/json"]},
                data=_encode_post_body(remote_ip, tls, secret, common_name),
                timeout=self._timeout,
                reactor=self._clock,
            )
        else:
            response = await self._http.request(
                "GET",
                auth_url(address, _encode_query(remote_ip, tls, secret, common_name)),
                timeout=self._timeout,
                reactor=self._clock,
            )
        # treq comes with the auth client (nsqd without --auth-http-address never loads it).
        import treq

        body = await treq.content(response)
        if response.code != 200:
            raise AuthError(f"got response {response.code} {body[:200]!r}")
        return parse_auth_response(body, self._clock.seconds())


def _describe(error: BaseException | None) -> str:
    if isinstance(error, AuthError):
        return str(error)
    if isinstance(error, (CancelledError, DeferredTimeoutError)):
        return "timed out"
    # treq's timeout cancels the request, which the agent reports wrapped (ResponseNeverReceived).
    reasons = getattr(error, "reasons", None)
    if isinstance(reasons, list) and any(
        isinstance(r, Failure) and isinstance(r.value, CancelledError) for r in reasons
    ):
        return "timed out"
    return f"{type(error).__name__}: {error}"
