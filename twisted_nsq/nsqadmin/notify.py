"""
Admin action notifications (C{--notification-http-endpoint}, spec section 5.4): after each write
action nsqadmin POSTs one JSON object describing it, fire-and-forget.

The object is Go's C{AdminAction}, keys in its order; C{channel}, C{node} and C{user} are left
out when empty::

    {"action":"unpause_channel","topic":"beer","channel":"mouth","timestamp":1357683731,
     "user":"bob","remote_ip":"1.2.3.4:5678","user_agent":"...","url":"http://host/path?query",
     "via":"nsqadmin-host"}
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from twisted_nsq.nsqadmin.cluster import HTTPClient, join_host_port

__all__ = ["NOTIFICATION_ACTIONS", "Notifier", "basic_auth_user"]

_log = Logger()

#: Every C{action} value a notification can carry.
NOTIFICATION_ACTIONS = (
    "create_topic",
    "create_channel",
    "delete_topic",
    "delete_channel",
    "empty_topic",
    "empty_channel",
    "pause_topic",
    "pause_channel",
    "unpause_topic",
    "unpause_channel",
    "tombstone_topic_producer",
)


def basic_auth_user(authorization: str | None) -> str:
    """The user name of an HTTP basic C{Authorization} header, or C{""}."""
    if not authorization:
        return ""
    scheme, _, encoded = authorization.partition(" ")
    if scheme != "Basic" or not encoded:
        return ""
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""
    user, colon, _ = decoded.partition(":")
    return user if colon else ""


def _header(request: Request, name: str) -> str | None:
    value = request.getHeader(name)
    return value if isinstance(value, str) or value is None else value.decode("latin-1")


class Notifier:
    """
    Sends admin action notifications to one endpoint through the injected HTTP client.

    @param endpoint: the fully qualified URL notifications are POSTed to; empty disables them.
    @param clock: gives the C{timestamp} (whole seconds).
    @param hostname: gives C{via}, nsqadmin's host name.
    """

    def __init__(
        self,
        endpoint: str,
        http: HTTPClient,
        clock: IReactorTime,
        hostname: Callable[[], str] = socket.gethostname,
    ) -> None:
        self.endpoint = endpoint
        self._http = http
        self._clock = clock
        self._hostname = hostname

    def action_json(
        self, action: str, topic: str, channel: str, node: str, request: Request
    ) -> dict[str, Any]:
        """The notification object for one action done by C{request}."""
        host = _header(request, "Host") or ""
        scheme = "http"
        if request.isSecure() or _header(request, "X-Scheme") == "https":  # type: ignore[no-untyped-call]
            scheme = "https"
        uri = request.uri.decode("utf-8", "replace")
        peer = request.getClientAddress()  # type: ignore[no-untyped-call]
        peer_host, peer_port = getattr(peer, "host", None), getattr(peer, "port", 0)
        remote = join_host_port(str(peer_host), peer_port) if peer_host is not None else str(peer)
        entry: dict[str, Any] = {"action": action, "topic": topic}
        if channel:
            entry["channel"] = channel
        if node:
            entry["node"] = node
        entry["timestamp"] = int(self._clock.seconds())
        user = basic_auth_user(_header(request, "Authorization"))
        if user:
            entry["user"] = user
        entry["remote_ip"] = remote
        entry["user_agent"] = _header(request, "User-Agent") or ""
        entry["url"] = f"{scheme}://{host}{uri}"
        entry["via"] = self._hostname()
        return entry

    def notify(self, action: str, topic: str, channel: str, node: str, request: Request) -> None:
        """POST the notification of one action, without waiting; a failure is logged, never raised."""
        if not self.endpoint:
            return
        body = json.dumps(self.action_json(action, topic, channel, node, request), separators=(",", ":"))
        _log.info("POSTing notification to {endpoint}", endpoint=self.endpoint)
        try:
            sent = self._http.post(
                self.endpoint, data=body.encode("utf-8"), headers={"Content-Type": ["application/json"]}
            )
        except Exception as e:
            _log.error("failed to POST notification - {error}", error=str(e))
            return

        def drain(response: Any) -> Any:
            # Read the reply so a pooled connection can be reused.
            return self._http.content(response)

        def failed(failure: Failure) -> None:
            _log.error("failed to POST notification - {error}", error=str(failure.value))

        sent.addCallback(drain).addErrback(failed)
