"""
One client connection to nsqd: handshake, upgrades, heartbeats and FIFO reply matching.

L{NSQConnection} is a thin Protocol over the pure codec in L{twisted_nsq.wire}: it sends the V2
magic and an IDENTIFY with C{feature_negotiation}, performs the upgrades nsqd grants (TLS, then
snappy, then deflate, each confirmed by an C{OK} frame), answers C{_heartbeat_} with C{NOP}, and
then hands response and error frames to the commands that wait for them, in the order the
commands were sent (nsqd answers in order, spec 7.2).
"""

from __future__ import annotations

import json
import socket
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

import attrs
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, ITLSTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_nsq._version import __version__
from twisted_nsq.wire.compression import Codec, CompressionError, DeflateCodec, SnappyCodec
from twisted_nsq.wire.errors import NON_FATAL_CODES, NSQError
from twisted_nsq.wire.frames import (
    FRAME_TYPE_ERROR,
    FRAME_TYPE_MESSAGE,
    FRAME_TYPE_RESPONSE,
    MAGIC_V2,
    DecodedMessage,
    FrameError,
    FrameParser,
    decode_message,
)

__all__ = [
    "USER_AGENT",
    "ConnectionClosedError",
    "ConnectionOptions",
    "NSQConnection",
    "NSQResponseError",
    "encode_command",
    "encode_mpub_body",
]

#: The C{user_agent} sent in IDENTIFY.
USER_AGENT = "twisted-nsq/" + __version__

_INT32 = struct.Struct(">i")
_FRAME_HEADER = struct.Struct(">ii")
_HEARTBEAT = b"_heartbeat_"
_OK = b"OK"
_NOP = b"NOP\n"


class NSQResponseError(NSQError):
    """
    nsqd answered a command (or the connection) with an error frame; C{code} is its C{E_*} code.
    """

    @classmethod
    def from_payload(cls, payload: bytes) -> NSQResponseError:
        """Split an error frame's C{b"E_CODE description"} payload."""
        text = payload.decode("utf-8", "replace")
        code, _, message = text.partition(" ")
        return cls(code, message)


class ConnectionClosedError(Exception):
    """
    The connection closed (or never became ready) before nsqd answered a command.
    """


def _default_client_id() -> str:
    # go-nsq's default: the short host name.
    return socket.gethostname().split(".", 1)[0]


@attrs.frozen(kw_only=True)
class ConnectionOptions:
    """
    What one connection asks for in IDENTIFY, with go-nsq's defaults (spec 1.4, 7.1).

    Durations are in milliseconds, as on the wire; 0 means "the server's default" and -1 (where
    nsqd accepts it) means "off".
    """

    client_id: str = attrs.field(factory=_default_client_id)
    hostname: str = attrs.field(factory=socket.gethostname)
    user_agent: str = USER_AGENT
    heartbeat_interval: int = 30000
    output_buffer_size: int = 16384
    output_buffer_timeout: int = 250
    msg_timeout: int = 0
    sample_rate: int = attrs.field(default=0)
    tls_v1: bool = False
    #: An C{IOpenSSLClientConnectionCreator} (e.g. from C{optionsForClientTLS}); required with
    #: C{tls_v1}.
    tls_options: IOpenSSLClientConnectionCreator | None = None
    snappy: bool = False
    deflate: bool = False
    deflate_level: int = 6
    #: The largest frame accepted from nsqd before the connection is dropped.
    max_frame_size: int = 8 * 1024 * 1024 + 64
    #: Sent with AUTH after IDENTIFY and the upgrades when nsqd says C{auth_required}; without
    #: it such a connection fails, as in go-nsq.
    auth_secret: str | None = None

    @sample_rate.validator
    def _check_sample_rate(self, attribute: object, value: int) -> None:
        if not 0 <= value <= 99:
            raise ValueError(f"sample_rate must be 0-99, not {value}")

    def __attrs_post_init__(self) -> None:
        if self.snappy and self.deflate:
            raise ValueError("snappy and deflate cannot both be enabled")
        if self.tls_v1 and self.tls_options is None:
            raise ValueError("tls_v1 needs tls_options (an IOpenSSLClientConnectionCreator)")
        if not 1 <= self.deflate_level <= 9:
            raise ValueError(f"deflate_level must be 1-9, not {self.deflate_level}")

    def identify_body(self) -> dict[str, Any]:
        """The IDENTIFY JSON object, with the fields go-nsq sends."""
        return {
            "client_id": self.client_id,
            "hostname": self.hostname,
            "user_agent": self.user_agent,
            "feature_negotiation": True,
            "heartbeat_interval": self.heartbeat_interval,
            "output_buffer_size": self.output_buffer_size,
            "output_buffer_timeout": self.output_buffer_timeout,
            "msg_timeout": self.msg_timeout,
            "sample_rate": self.sample_rate,
            "tls_v1": self.tls_v1,
            "snappy": self.snappy,
            "deflate": self.deflate,
            "deflate_level": self.deflate_level,
        }


def encode_command(name: bytes, params: Sequence[bytes] = (), body: bytes | None = None) -> bytes:
    """
    One command as it goes on the wire: C{NAME[ param]*\\n}, then C{[int32 size][body]} if any.
    """
    if params:
        line = b" ".join((name, *params))
    else:
        line = name
    if body is None:
        return b"".join((line, b"\n"))
    return b"".join((line, b"\n", _INT32.pack(len(body)), body))


def encode_mpub_body(bodies: Sequence[bytes]) -> bytes:
    """An MPUB body: C{[int32 count]} then C{[int32 size][body]} per message."""
    pack = _INT32.pack
    parts = [pack(len(bodies))]
    for body in bodies:
        parts.append(pack(len(body)))
        parts.append(body)
    return b"".join(parts)


# Handshake steps, in the order nsqd performs them after the IDENTIFY reply.
_TLS = "tls"
_SNAPPY = "snappy"
_DEFLATE = "deflate"
_AUTH = "auth"


class NSQConnection(Protocol):
    """
    A V2 client connection: connect it with any endpoint, wait for L{when_ready}, then send
    commands.

    @ivar identify_response: the IDENTIFY JSON nsqd answered (empty until then, and empty for a
        server that answered C{OK} because it does not negotiate features).
    @ivar auth_response: the AUTH JSON nsqd answered (C{identity}, C{identity_url},
        C{permission_count}); empty when no AUTH was needed.
    """

    _log = Logger()

    def __init__(
        self,
        options: ConnectionOptions | None = None,
        on_message: Callable[[NSQConnection, DecodedMessage], object] | None = None,
        on_error: Callable[[NSQConnection, NSQResponseError], object] | None = None,
    ) -> None:
        """
        @param on_message: called with every message frame (decoded) nsqd delivers.
        @param on_error: called with error frames no command waits for: the non-fatal
            C{E_FIN_FAILED}, C{E_REQ_FAILED} and C{E_TOUCH_FAILED}, and fatal errors that arrive
            while no command is pending.
        """
        self.options = options if options is not None else ConnectionOptions()
        self._on_message = on_message
        self._on_error = on_error
        self.identify_response: dict[str, Any] = {}
        self.auth_response: dict[str, Any] = {}
        self._identified = False
        self._codec: Codec | None = None
        # During the handshake frames are cut out one at a time, because the stream may switch to
        # a compressed encoding right after any of them.
        self._handshake_buffer: bytearray | None = bytearray()
        self._steps: list[str] = []
        self._parser = FrameParser(self.options.max_frame_size)
        self._pending: deque[Deferred[bytes]] = deque()
        self._ready = False
        self._closed = False
        # Set once we decided to close: nothing more may be sent, though frames may still arrive.
        self._closing = False
        self._failure: Exception | None = None
        self._ready_waiters: list[Deferred[None]] = []
        self._closed_waiters: list[Deferred[None]] = []

    # Observers

    @property
    def ready(self) -> bool:
        """Whether the handshake is done and the connection is still open."""
        return self._ready and not self._closed and not self._closing

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending_count(self) -> int:
        """How many sent commands still wait for their reply."""
        return len(self._pending)

    def when_ready(self) -> Deferred[None]:
        """
        A new Deferred that fires once IDENTIFY and every upgrade are done, or fails (with
        L{NSQResponseError} or L{ConnectionClosedError}) if the connection closes first.
        """
        if self._ready:
            return succeed(None)
        if self._failure is not None:
            return fail(self._failure)
        waiter: Deferred[None] = Deferred(self._cancel)
        self._ready_waiters.append(waiter)
        return waiter

    def when_closed(self) -> Deferred[None]:
        """A new Deferred that fires once the connection is lost."""
        if self._closed:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._closed_waiters.append(waiter)
        return waiter

    # Sending

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        codec = self._codec
        if codec is not None:
            data = codec.compress(data)
        self.transport.write(data)

    def send(self, name: bytes, *params: bytes) -> None:
        """Send a command nsqd does not answer (RDY, FIN, REQ, TOUCH, NOP)."""
        if not self.ready:
            raise ConnectionClosedError("connection is not ready")
        self._write(encode_command(name, params))

    def send_command(self, name: bytes, *params: bytes, body: bytes | None = None) -> Deferred[bytes]:
        """
        Send a command that nsqd answers (SUB, PUB, MPUB, DPUB, CLS, ...) and return a Deferred
        for the reply's payload (e.g. C{b"OK"}), failing with L{NSQResponseError} on an error
        frame and with L{ConnectionClosedError} if the connection is lost first.
        """
        if not self.ready:
            return fail(ConnectionClosedError("connection is not ready"))
        waiter: Deferred[bytes] = Deferred(self._cancel)
        self._pending.append(waiter)
        self._write(encode_command(name, params, body))
        return waiter

    def subscribe(self, topic: str, channel: str) -> Deferred[bytes]:
        return self.send_command(b"SUB", topic.encode("ascii"), channel.encode("ascii"))

    def publish(self, topic: str, body: bytes) -> Deferred[bytes]:
        return self.send_command(b"PUB", topic.encode("ascii"), body=body)

    def multi_publish(self, topic: str, bodies: Sequence[bytes]) -> Deferred[bytes]:
        return self.send_command(b"MPUB", topic.encode("ascii"), body=encode_mpub_body(bodies))

    def deferred_publish(self, topic: str, body: bytes, delay_ms: int) -> Deferred[bytes]:
        return self.send_command(b"DPUB", topic.encode("ascii"), b"%d" % (delay_ms,), body=body)

    def start_close(self) -> Deferred[bytes]:
        """Send CLS; the Deferred fires with C{b"CLOSE_WAIT"}."""
        return self.send_command(b"CLS")

    def rdy(self, count: int) -> None:
        self.send(b"RDY", b"%d" % (count,))

    # FIN, REQ and TOUCH are dropped once the connection is gone: nsqd no longer lets this client
    # answer for the message (the next connection gets a new client ID), and it times out anyway.

    def finish(self, message_id: bytes) -> None:
        if self.ready:
            self._write(encode_command(b"FIN", (message_id,)))

    def requeue(self, message_id: bytes, delay_ms: int) -> None:
        if self.ready:
            self._write(encode_command(b"REQ", (message_id, b"%d" % (delay_ms,))))

    def touch(self, message_id: bytes) -> None:
        if self.ready:
            self._write(encode_command(b"TOUCH", (message_id,)))

    # Protocol

    def connectionMade(self) -> None:
        body = json.dumps(self.options.identify_body(), separators=(",", ":")).encode("utf-8")
        assert self.transport is not None
        self.transport.write(b"".join((MAGIC_V2, encode_command(b"IDENTIFY", (), body))))

    def dataReceived(self, data: bytes) -> None:
        try:
            if self._codec is not None:
                data = self._codec.decompress(data)
            if self._handshake_buffer is not None:
                self._handshake_data(data)
            else:
                self._frames(self._parser.feed(data))
        except (FrameError, CompressionError) as e:
            self._log.warn("dropping connection to nsqd: {error}", error=str(e))
            self._abort(ConnectionClosedError(str(e)))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        self._fail_all(ConnectionClosedError(f"connection to nsqd lost: {reason.getErrorMessage()}"))
        waiters, self._closed_waiters = self._closed_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    # Handshake

    def _handshake_data(self, data: bytes) -> None:
        buffer = self._handshake_buffer
        assert buffer is not None
        buffer += data
        while self._handshake_buffer is not None and self._failure is None and len(buffer) >= 8:
            size, frame_type = _FRAME_HEADER.unpack_from(buffer)
            if size < 4 or size > self.options.max_frame_size:
                raise FrameError(f"invalid frame size {size}")
            if len(buffer) < 4 + size:
                return
            payload = bytes(buffer[8 : 4 + size])
            del buffer[: 4 + size]
            self._handshake_frame(frame_type, payload)

    def _handshake_frame(self, frame_type: int, payload: bytes) -> None:
        if frame_type == FRAME_TYPE_ERROR:
            self._abort(NSQResponseError.from_payload(payload))
            return
        if frame_type != FRAME_TYPE_RESPONSE:
            self._abort(ConnectionClosedError(f"unexpected frame type {frame_type} during the handshake"))
            return
        if not self._identified:
            self._identify_reply(payload)
        elif self._steps[0] == _AUTH:
            self._auth_reply(payload)
            if self._failure is not None:
                return
            del self._steps[0]
            self._start_step()
        elif payload != _OK:
            self._abort(ConnectionClosedError(f"expected OK after the {self._steps[0]} upgrade: {payload!r}"))
            return
        else:
            del self._steps[0]
            self._start_step()
        self._next_step()

    def _identify_reply(self, payload: bytes) -> None:
        self._identified = True
        if payload == _OK:
            # A server without feature negotiation: nothing is upgraded.
            return
        try:
            reply = json.loads(payload)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            self._abort(ConnectionClosedError(f"bad IDENTIFY reply {payload!r}"))
            return
        self.identify_response = reply
        options = self.options
        if reply.get("auth_required") and options.auth_secret is None:
            self._abort(ConnectionClosedError("nsqd requires AUTH and no auth_secret is set"))
            return
        if options.tls_v1 and reply.get("tls_v1"):
            self._steps.append(_TLS)
        if options.snappy and reply.get("snappy"):
            self._steps.append(_SNAPPY)
        if options.deflate and reply.get("deflate"):
            self._steps.append(_DEFLATE)
        if reply.get("auth_required"):
            # After the upgrades, so that the secret travels over TLS when TLS was negotiated.
            self._steps.append(_AUTH)
        self._start_step()

    def _auth_reply(self, payload: bytes) -> None:
        try:
            reply = json.loads(payload)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            self._abort(ConnectionClosedError(f"bad AUTH reply {payload!r}"))
            return
        self.auth_response = reply

    def _start_step(self) -> None:
        if not self._steps or self._closed:
            return
        step = self._steps[0]
        if step == _AUTH:
            secret = self.options.auth_secret
            assert secret is not None  # checked in _identify_reply
            self._write(encode_command(b"AUTH", (), secret.encode("utf-8")))
            return
        if step == _TLS:
            tls_options = self.options.tls_options
            assert tls_options is not None  # checked by ConnectionOptions
            cast(ITLSTransport, self.transport).startTLS(tls_options)
            return
        if step == _SNAPPY:
            codec: Codec = SnappyCodec()
        else:
            level = int(self.identify_response.get("deflate_level", self.options.deflate_level))
            codec = DeflateCodec(max(1, min(level, 9)))
        self._codec = codec
        # Whatever followed the previous frame was already encoded with the new codec.
        buffer = self._handshake_buffer
        assert buffer is not None
        rest = codec.decompress(bytes(buffer))
        buffer.clear()
        buffer += rest

    def _next_step(self) -> None:
        if self._failure is not None or self._handshake_buffer is None:
            return
        if self._steps:
            # Still waiting for the OK that confirms the current upgrade.
            return
        rest = bytes(self._handshake_buffer)
        self._handshake_buffer = None
        self._ready = True
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        if rest and not self._closed:
            self._frames(self._parser.feed(rest))

    # Running

    def _frames(self, frames: list[tuple[int, bytes]]) -> None:
        for frame_type, payload in frames:
            if frame_type == FRAME_TYPE_MESSAGE:
                if self._on_message is not None:
                    self._on_message(self, decode_message(payload))
            elif frame_type == FRAME_TYPE_RESPONSE:
                if payload == _HEARTBEAT:
                    self._write(_NOP)
                elif self._pending:
                    self._pending.popleft().callback(payload)
                else:
                    self._log.warn("unexpected response from nsqd: {payload!r}", payload=payload)
            elif frame_type == FRAME_TYPE_ERROR:
                self._error_frame(NSQResponseError.from_payload(payload))
            else:
                self._log.warn("unknown frame type {frame_type} from nsqd", frame_type=frame_type)

    def _error_frame(self, error: NSQResponseError) -> None:
        fatal = error.code not in NON_FATAL_CODES
        if fatal:
            # nsqd closes the connection after a fatal error; so do we. Marked first, because the
            # callbacks below may send again and must find this connection unusable.
            self._closing = True
        if not fatal or not self._pending:
            if self._on_error is not None:
                self._on_error(self, error)
            else:
                self._log.warn("nsqd error: {error}", error=str(error))
        else:
            self._pending.popleft().errback(error)
        if fatal and self.transport is not None:
            self.transport.loseConnection()

    def _fail_all(self, failure: Exception) -> None:
        if self._failure is None:
            self._failure = failure
        waiters, self._ready_waiters = self._ready_waiters, []
        for ready_waiter in waiters:
            ready_waiter.errback(failure)
        pending, self._pending = self._pending, deque()
        for waiter in pending:
            waiter.errback(failure)

    def _cancel(self, waiter: Deferred[Any]) -> None:
        # A reply nobody waits for would shift every later reply onto the wrong command, and a
        # half-done handshake cannot be resumed: either way the connection is given up.
        if waiter in self._pending:
            self._pending.remove(waiter)
        if waiter in self._ready_waiters:
            self._ready_waiters.remove(waiter)
        waiter.errback(CancelledError())
        self._abort(ConnectionClosedError("a command or the handshake was cancelled"))

    def _abort(self, error: Exception) -> None:
        self._fail_all(error)
        self._closing = True
        if self.transport is not None and not self._closed:
            self.transport.loseConnection()
