"""
nsqd's TCP protocol "V2": a thin adapter between the command parser and the nsqd core.

One ``NSQDProtocol`` per connection. It checks the magic, feeds bytes to the pure
``CommandParser``, runs each command against the core with NSQ 1.3.0's exact errors and state
rules, and writes frames. It is the channel's consumer (``IChannelConsumer``) for the client it
serves and the transport's ``IPushProducer``, so a client that stops reading stops receiving.
"""

from __future__ import annotations

import functools
import json
import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, ITCPTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_nsq._gofmt import go_bytes, go_quote
from twisted_nsq._version import NSQ_VERSION
from twisted_nsq.nsqd.channel import Channel, ChannelError, IChannelConsumer
from twisted_nsq.nsqd.message import Message
from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.tls import EMPTY_TLS_INFO, client_tls_info
from twisted_nsq.nsqd.topic import PublishError
from twisted_nsq.wire.commands import parse_base10_unsigned, parse_mpub_body
from twisted_nsq.wire.compression import CompressionError, DeflateCodec, SnappyCodec
from twisted_nsq.wire.errors import (
    E_AUTH_DISABLED,
    E_AUTH_FAILED,
    E_AUTH_FIRST,
    E_BAD_BODY,
    E_BAD_CHANNEL,
    E_BAD_MESSAGE,
    E_BAD_PROTOCOL,
    E_BAD_TOPIC,
    E_DPUB_FAILED,
    E_FIN_FAILED,
    E_IDENTIFY_FAILED,
    E_INVALID,
    E_MPUB_FAILED,
    E_PUB_FAILED,
    E_REQ_FAILED,
    E_SUB_FAILED,
    E_TOUCH_FAILED,
    E_UNAUTHORIZED,
    NSQError,
)
from twisted_nsq.wire.frames import (
    CLOSE_WAIT_FRAME,
    HEARTBEAT_FRAME,
    MAGIC_V2,
    OK_FRAME,
    error_frame,
    response_frame,
)
from twisted_nsq.wire.names import is_valid_channel_name, is_valid_topic_name
from twisted_nsq.wire.parser import BodySpec, CommandParser

if TYPE_CHECKING:
    from twisted_nsq.nsqd.auth import AuthClient, AuthState

log = Logger()

STATE_INIT = 0
STATE_SUBSCRIBED = 3
STATE_CLOSING = 4

_MESSAGE_HEADER = struct.Struct(">iiqH")
#: Seconds a client has to finish the TLS handshake after IDENTIFY granted it (Go's deadline).
TLS_HANDSHAKE_TIMEOUT = 5.0
_MESSAGE_FRAME_OVERHEAD = 4 + 26
#: Largest decompressed output one read may produce (bounds a compression bomb).
_MAX_INFLATE = 16 * 1024 * 1024

_INT_FIELDS = (
    "heartbeat_interval",
    "output_buffer_size",
    "output_buffer_timeout",
    "deflate_level",
    "sample_rate",
    "msg_timeout",
)
_BOOL_FIELDS = ("feature_negotiation", "tls_v1", "deflate", "snappy")
_STR_FIELDS = ("client_id", "hostname", "user_agent")


def _bad_identify() -> NSQError:
    return NSQError(E_BAD_BODY, "IDENTIFY failed to decode JSON body")


def _decode_identify(body: bytes) -> dict[str, Any]:
    """Decode the IDENTIFY JSON as Go's ``json.Unmarshal`` into nsqd's struct would."""
    try:
        data = json.loads(body)
    except ValueError:
        raise _bad_identify() from None
    if not isinstance(data, dict):
        raise _bad_identify()
    for key in _INT_FIELDS:
        value = data.get(key)
        if value is not None and (type(value) is not int or not -(2**63) <= value < 2**63):
            raise _bad_identify()
    for key in _BOOL_FIELDS:
        value = data.get(key)
        if value is not None and type(value) is not bool:
            raise _bad_identify()
    for key in _STR_FIELDS:
        value = data.get(key)
        if value is not None and type(value) is not str:
            raise _bad_identify()
    return data


def _body_spec(limit: int, code: str, too_big: str, invalid: str) -> BodySpec:
    return BodySpec(
        limit=limit,
        too_big=lambda n: NSQError(code, too_big % (n, limit)),
        invalid=lambda n: NSQError(code, invalid % n),
    )


@functools.cache
def _message_body_spec(command: str, limit: int) -> BodySpec:
    """PUB/MPUB/DPUB's body limit and errors, built once per command and limit."""
    return _body_spec(
        limit, E_BAD_MESSAGE, command + " message too big %d > %d", command + " invalid message body size %d"
    )


@implementer(IChannelConsumer, IPushProducer)
class NSQDProtocol(Protocol):
    """One client connection speaking V2. See the module docstring."""

    def __init__(
        self,
        nsqd: NSQD,
        clock: IReactorTime,
        tls_options: Any = None,
        auth_client: AuthClient | None = None,
    ) -> None:
        options = nsqd.options
        self.nsqd = nsqd
        self.clock = clock
        self._options = options
        self._tls_options = tls_options
        self._auth_client = auth_client
        self._tls_required = options.tls_required != "false"
        self.client_id = nsqd.next_client_id()
        self.state = STATE_INIT
        self.hostname = ""
        self.identifier = ""
        self.user_agent = ""
        self.remote_address = ""
        self.remote_ip = ""
        self.connect_ts = int(clock.seconds())
        self.ready_count = 0
        self.in_flight_count = 0
        self.message_count = 0
        self.finish_count = 0
        self.requeue_count = 0
        self.sample_rate = 0
        self.msg_timeout = options.msg_timeout
        self.heartbeat_interval = options.client_timeout / 2
        self.output_buffer_size = 16 * 1024
        self.output_buffer_timeout = options.output_buffer_timeout
        self.tls = False
        self.snappy = False
        self.deflate = False
        self.writable = True
        self.pub_counts: dict[str, int] = {}
        self.auth_secret: bytes | None = None
        self.auth_state: AuthState | None = None
        self.channel: Channel | None = None
        self._magic = b""
        self._socket: Any = None
        self._pending: deque[list[bytes | None]] = deque()
        self._answered: list[Deferred[None]] = []
        self._close_when_answered = False
        self._parser = CommandParser(self)
        self._decoder: Callable[..., bytes] | None = None
        self._encoder: Callable[[bytes], bytes] | None = None
        self._closed = False
        self._last_read = clock.seconds()
        self._next_heartbeat = self._last_read + self.heartbeat_interval
        self._timer: IDelayedCall | None = None
        self._stall_timer: IDelayedCall | None = None
        self._tls_check: IDelayedCall | None = None
        self._lost: list[Deferred[None]] = []
        self._commands: dict[bytes, Callable[[list[bytes]], BodySpec | None]] = {
            b"IDENTIFY": self._identify,
            b"AUTH": self._auth,
            b"SUB": self._sub,
            b"PUB": self._pub,
            b"MPUB": self._mpub,
            b"DPUB": self._dpub,
            b"RDY": self._rdy,
            b"FIN": self._fin,
            b"REQ": self._req,
            b"TOUCH": self._touch,
            b"CLS": self._cls,
            b"NOP": self._nop,
        }
        self._bodies: dict[bytes, Callable[[list[bytes], bytes], None]] = {
            b"IDENTIFY": self._identify_body,
            b"AUTH": self._auth_body,
            b"PUB": self._pub_body,
            b"MPUB": self._mpub_body,
            b"DPUB": self._dpub_body,
        }

    # -- connection lifecycle ----------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        host = getattr(peer, "host", "")
        port = getattr(peer, "port", 0)
        self.remote_ip = host
        self.remote_address = f"{host}:{port}" if host else str(peer)
        self.identifier = host
        self.hostname = host
        self.nsqd.clients[self.client_id] = self
        transport = self.transport
        if ITCPTransport.providedBy(transport):
            # Go sets TCP_NODELAY on every connection; without it a frame written right after
            # an OK waits for the peer's delayed ACK (about 40 ms).
            transport.setTcpNoDelay(True)
        if isinstance(transport, tcp.Server):
            self._socket = transport.socket
        transport.registerProducer(self, True)  # type: ignore[union-attr]
        handshake = getattr(self._options, "handshake_timeout", 0.0)
        if handshake > 0:
            self._timer = self.clock.callLater(handshake, self._handshake_expired)

    def _tls_handshake_expired(self) -> None:
        self._tls_check = None
        if not self._closed and client_tls_info(self.transport) == EMPTY_TLS_INFO:
            log.info("client({client}) did not finish the TLS handshake in time", client=self.remote_address)
            self._abort()

    def _handshake_expired(self) -> None:
        self._timer = None
        if len(self._magic) < 4 and not self._closed:
            log.info("client({client}) sent no protocol magic in time", client=self.remote_address)
            self._abort()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._closed = True
        self._parser.stop()
        self._cancel_timers()
        self.nsqd.clients.pop(self.client_id, None)
        if self.channel is not None:
            self.channel.remove_client(self.client_id)
            self.nsqd.run_dispatch()
        lost, self._lost = self._lost, []
        for d in lost:
            d.callback(None)

    def when_lost(self) -> Deferred[None]:
        """A Deferred that fires once this connection is gone (each caller gets its own)."""
        d: Deferred[None] = Deferred()
        if self._closed:
            d.callback(None)
        else:
            self._lost.append(d)
        return d

    def _cancel_timers(self) -> None:
        for timer in (self._timer, self._stall_timer, self._tls_check):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._stall_timer = self._tls_check = None

    def _abort(self) -> None:
        self._closed = True
        self._parser.stop()
        self.transport.abortConnection()  # type: ignore[union-attr]

    def close(self) -> None:
        """Close the connection after writing what is buffered."""
        if not self._closed:
            self._closed = True
            self._parser.stop()
            self.transport.loseConnection()  # type: ignore[union-attr]

    # -- reading ----------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        self._last_read = self.clock.seconds()
        if self._decoder is not None:
            try:
                data = self._decoder(data, max_output=_MAX_INFLATE)
            except CompressionError as e:
                log.info("client({client}) bad compressed data: {e}", client=self.remote_address, e=e)
                self._abort()
                return
        if len(self._magic) < 4:
            need = 4 - len(self._magic)
            self._magic += data[:need]
            data = data[need:]
            if len(self._magic) < 4:
                return
            if self._magic != MAGIC_V2:
                self._write(error_frame(E_BAD_PROTOCOL.encode()))
                self.close()
                return
            self._start_heartbeats()
        self._parser.feed(data)
        self.nsqd.run_dispatch()

    # -- CommandReceiver ---------------------------------------------------------------------

    def command_received(self, params: list[bytes]) -> BodySpec | None:
        name = params[0]
        try:
            if self._tls_required and not self.tls and name != b"IDENTIFY":
                raise NSQError(E_INVALID, f"cannot {go_bytes(name)} in current state (TLS required)")
            handler = self._commands.get(name)
            if handler is None:
                raise NSQError(E_INVALID, f"invalid command {go_bytes(name)}")
            return handler(params)
        except NSQError as e:
            self.parse_error(e)
            return None

    def body_received(self, params: list[bytes], body: bytes) -> None:
        try:
            self._bodies[params[0]](params, body)
        except NSQError as e:
            self.parse_error(e)

    def parse_error(self, error: NSQError) -> None:
        """Send an error frame; a fatal one then closes the connection (as nsqd does)."""
        if self._closed:
            return
        if error.fatal:
            log.info("PROTOCOL(V2): [{client}] {error}", client=self.remote_address, error=str(error))
            self._parser.stop()
            self._respond(error.frame())
            if self._pending:
                self._close_when_answered = True
            else:
                self.close()
        else:
            self._respond(error.frame())

    # -- writing ----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._encoder is not None:
            data = self._encoder(data)
        self._send(data)

    def _send(self, data: bytes) -> None:
        """
        Write now when the socket's buffer is empty, else through the transport.

        Twisted's TCP transport only buffers in ``write()`` and sends on the reactor's next
        turn, which costs two ``epoll_ctl`` calls and a loop iteration per reply. For a plain
        TCP connection with nothing queued, one ``send()`` here keeps byte order (nothing is
        ahead of it) and hands any remainder to the transport as usual.
        """
        transport: Any = self.transport
        sock = self._socket
        if (
            sock is not None
            and not transport._tempDataLen
            and transport.offset == len(transport.dataBuffer)
            and transport.connected
            and not transport.disconnecting
            and not transport.TLS
        ):
            try:
                sent = sock.send(data)
            except OSError:
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)

    def deliver(self, messages: list[Message]) -> None:
        """Write one dispatch pass's messages with a single writeSequence."""
        pack = _MESSAGE_HEADER.pack
        parts: list[bytes] = []
        append = parts.append
        for message in messages:
            body = message.body
            append(pack(_MESSAGE_FRAME_OVERHEAD + len(body), 2, message.timestamp, message.attempts & 0xFFFF))
            append(message.id)
            append(body)
        if self._encoder is not None:
            self._send(self._encoder(b"".join(parts)))
        elif self._socket is not None:
            self._send(b"".join(parts))
        else:
            self.transport.writeSequence(parts)  # type: ignore[union-attr]

    # IPushProducer: the transport tells us when its buffer is full and when it drained.

    def pauseProducing(self) -> None:
        self.writable = False
        if self._stall_timer is None and self.heartbeat_interval > 0 and not self._closed:
            # Go's write deadline: a client that reads nothing for a heartbeat interval is gone.
            self._stall_timer = self.clock.callLater(self.heartbeat_interval * 2, self._write_stalled)

    def resumeProducing(self) -> None:
        self.writable = True
        if self._stall_timer is not None:
            if self._stall_timer.active():
                self._stall_timer.cancel()
            self._stall_timer = None
        if self.channel is not None and not self._closed:
            self.nsqd.mark_dirty(self.channel)
            self.nsqd.run_dispatch()

    def stopProducing(self) -> None:
        self.writable = False

    def _write_stalled(self) -> None:
        self._stall_timer = None
        log.info("client({client}) stopped reading: closing", client=self.remote_address)
        self._abort()

    # -- heartbeats and the read deadline ------------------------------------------------------

    def _start_heartbeats(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.heartbeat_interval <= 0:
            return
        now = self.clock.seconds()
        self._next_heartbeat = now + self.heartbeat_interval
        self._arm(now)

    def _arm(self, now: float) -> None:
        when = min(self._next_heartbeat, self._last_read + 2 * self.heartbeat_interval)
        self._timer = self.clock.callLater(max(0.0, when - now), self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._closed or self.heartbeat_interval <= 0:
            return
        now = self.clock.seconds()
        if now - self._last_read >= 2 * self.heartbeat_interval:
            log.info("client({client}) missed heartbeats: closing", client=self.remote_address)
            self._abort()
            return
        if now >= self._next_heartbeat:
            self._respond(HEARTBEAT_FRAME)
            self._next_heartbeat = now + self.heartbeat_interval
        self._arm(now)

    # -- IChannelConsumer ------------------------------------------------------------------------

    def message_timed_out(self) -> None:
        self.in_flight_count -= 1

    def channel_emptied(self) -> None:
        self.in_flight_count = 0

    def close_for_delete(self) -> None:
        self.close()

    # -- IDENTIFY ---------------------------------------------------------------------------------

    def _identify(self, params: list[bytes]) -> BodySpec:
        if self.state != STATE_INIT:
            raise NSQError(E_INVALID, "cannot IDENTIFY in current state")
        return _body_spec(
            self._options.max_body_size,
            E_BAD_BODY,
            "IDENTIFY body too big %d > %d",
            "IDENTIFY invalid body size %d",
        )

    def _identify_body(self, params: list[bytes], body: bytes) -> None:
        data = _decode_identify(body)
        if self._pending:
            self._await(self._all_answered(), lambda _: self._identify_apply(data))
        else:
            self._identify_apply(data)

    def _identify_apply(self, data: dict[str, Any]) -> None:
        options = self._options
        self.identifier = data.get("client_id") or ""
        self.hostname = data.get("hostname") or ""
        self.user_agent = data.get("user_agent") or ""

        heartbeat = data.get("heartbeat_interval") or 0
        if heartbeat == -1:
            heartbeat_interval = 0.0
        elif heartbeat == 0:
            heartbeat_interval = self.heartbeat_interval
        elif 1000 <= heartbeat <= int(options.max_heartbeat_interval * 1000):
            heartbeat_interval = heartbeat / 1000
        else:
            raise NSQError(E_BAD_BODY, f"IDENTIFY heartbeat interval ({heartbeat}) is invalid")

        buffer_timeout_ms = data.get("output_buffer_timeout") or 0
        buffer_timeout = self.output_buffer_timeout
        if buffer_timeout_ms == -1:
            buffer_timeout = 0.0
        elif buffer_timeout_ms == 0:
            pass
        elif (
            round(options.min_output_buffer_timeout * 1000)
            <= buffer_timeout_ms
            <= round(options.max_output_buffer_timeout * 1000)
        ):
            buffer_timeout = buffer_timeout_ms / 1000
        else:
            raise NSQError(E_BAD_BODY, f"IDENTIFY output buffer timeout ({buffer_timeout_ms}) is invalid")
        buffer_size = data.get("output_buffer_size") or 0
        output_buffer_size = self.output_buffer_size
        if buffer_size == -1:
            output_buffer_size = 1
            buffer_timeout = 0.0
        elif buffer_size == 0:
            pass
        elif 64 <= buffer_size <= options.max_output_buffer_size:
            output_buffer_size = buffer_size
        else:
            raise NSQError(E_BAD_BODY, f"IDENTIFY output buffer size ({buffer_size}) is invalid")

        sample_rate = data.get("sample_rate") or 0
        if not 0 <= sample_rate <= 99:
            raise NSQError(E_BAD_BODY, f"IDENTIFY sample rate ({sample_rate}) is invalid")

        msg_timeout_ms = data.get("msg_timeout") or 0
        msg_timeout = self.msg_timeout
        if msg_timeout_ms == 0:
            pass
        elif 1000 <= msg_timeout_ms <= int(options.max_msg_timeout * 1000):
            msg_timeout = msg_timeout_ms / 1000
        else:
            raise NSQError(E_BAD_BODY, f"IDENTIFY msg timeout ({msg_timeout_ms}) is invalid")

        self.heartbeat_interval = heartbeat_interval
        self.output_buffer_timeout = buffer_timeout
        self.output_buffer_size = output_buffer_size
        self.sample_rate = sample_rate
        self.msg_timeout = msg_timeout
        self._start_heartbeats()

        if not data.get("feature_negotiation"):
            self._write(OK_FRAME)
            return

        tls_v1 = self._tls_options is not None and bool(data.get("tls_v1"))
        deflate = options.deflate and bool(data.get("deflate"))
        deflate_level = 6
        requested_level = data.get("deflate_level") or 0
        if deflate and requested_level > 0:
            deflate_level = requested_level
        deflate_level = min(deflate_level, options.max_deflate_level)
        snappy = options.snappy and bool(data.get("snappy"))
        if deflate and snappy:
            raise NSQError(E_IDENTIFY_FAILED, "cannot enable both deflate and snappy compression")

        reply = {
            "max_rdy_count": options.max_rdy_count,
            "version": NSQ_VERSION,
            "max_msg_timeout": round(options.max_msg_timeout * 1000),
            "msg_timeout": round(self.msg_timeout * 1000),
            "tls_v1": tls_v1,
            "deflate": deflate,
            "deflate_level": deflate_level,
            "max_deflate_level": options.max_deflate_level,
            "snappy": snappy,
            "sample_rate": self.sample_rate,
            "auth_required": bool(options.auth_http_addresses),
            "output_buffer_size": self.output_buffer_size,
            "output_buffer_timeout": round(self.output_buffer_timeout * 1000),
        }
        self._write(response_frame(json.dumps(reply, separators=(",", ":")).encode()))
        if tls_v1:
            self.transport.startTLS(self._tls_options)  # type: ignore[union-attr]
            self.tls = True
            self._write(OK_FRAME)
            # Go gives the TLS handshake 5 seconds.
            self._tls_check = self.clock.callLater(TLS_HANDSHAKE_TIMEOUT, self._tls_handshake_expired)
        if snappy:
            codec = SnappyCodec()
            self._encoder, self._decoder = codec.compress, codec.decompress
            self.snappy = True
            self._write(OK_FRAME)
        if deflate:
            deflate_codec = DeflateCodec(deflate_level)
            self._encoder, self._decoder = deflate_codec.compress, deflate_codec.decompress
            self.deflate = True
            self._write(OK_FRAME)

    # -- AUTH --------------------------------------------------------------------------------------

    def _auth(self, params: list[bytes]) -> BodySpec:
        if self.state != STATE_INIT:
            raise NSQError(E_INVALID, "cannot AUTH in current state")
        if len(params) != 1:
            raise NSQError(E_INVALID, "AUTH invalid number of parameters")
        return _body_spec(
            self._options.max_body_size, E_BAD_BODY, "AUTH body too big %d > %d", "AUTH invalid body size %d"
        )

    def _auth_body(self, params: list[bytes], body: bytes) -> None:
        if self.auth_state is not None:
            raise NSQError(E_INVALID, "AUTH already set")
        if self._auth_client is None:
            raise NSQError(E_AUTH_DISABLED, "AUTH disabled")
        self.auth_secret = body

        def authorized(state: AuthState) -> None:
            if state.permission_count == 0:
                raise NSQError(E_UNAUTHORIZED, "AUTH no authorizations found")
            self.auth_state = state
            reply = {
                "identity": state.identity,
                "identity_url": state.identity_url,
                "permission_count": state.permission_count,
            }
            self._respond(response_frame(json.dumps(reply, separators=(",", ":")).encode()))

        self._await(self._query_auth(), authorized)

    def _query_auth(self) -> Deferred[AuthState]:
        assert self._auth_client is not None and self.auth_secret is not None
        common_name = client_tls_info(self.transport).common_name if self.tls else ""
        return self._auth_client.authorize(self.remote_ip, self.tls, self.auth_secret, common_name)

    def _await(self, d: Deferred[Any], then: Callable[[Any], None]) -> None:
        """Hold further commands until ``d`` fires (Go blocks its read loop the same way)."""
        self._parser.pause()

        def done(result: Any) -> None:
            if self._closed:
                return
            try:
                then(result)
            except NSQError as e:
                self.parse_error(e)
            if not self._closed:
                self._parser.resume()
                self.nsqd.run_dispatch()

        def failed(failure: Failure) -> None:
            if self._closed:
                return
            log.info("PROTOCOL(V2): [{client}] auth failed: {f}", client=self.remote_address, f=failure.value)
            self.parse_error(NSQError(E_AUTH_FAILED, "AUTH failed"))

        d.addCallbacks(done, failed)

    def _authorize(self, command: str, topic: str, channel: str, then: Callable[[], None]) -> None:
        """Run ``then`` if this client may do ``command`` (refreshing an expired authorization)."""
        if self._auth_client is None:
            then()
            return
        state = self.auth_state
        if state is None:
            raise NSQError(E_AUTH_FIRST, f"AUTH required before {command}")

        def check(state: AuthState) -> None:
            self.auth_state = state
            if not state.is_allowed(topic, channel):
                raise NSQError(
                    E_UNAUTHORIZED, f"AUTH failed for {command} on {go_quote(topic)} {go_quote(channel)}"
                )
            then()

        if state.is_expired(self.clock.seconds()):
            self._await(self._query_auth(), check)
        else:
            check(state)

    # -- SUB -----------------------------------------------------------------------------------------

    def _sub(self, params: list[bytes]) -> None:
        if self.state != STATE_INIT:
            raise NSQError(E_INVALID, "cannot SUB in current state")
        if self.heartbeat_interval <= 0:
            raise NSQError(E_INVALID, "cannot SUB with heartbeats disabled")
        if len(params) < 3:
            raise NSQError(E_INVALID, "SUB insufficient number of parameters")
        topic_name = params[1].decode("utf-8", "replace")
        if not is_valid_topic_name(topic_name):
            raise NSQError(E_BAD_TOPIC, f"SUB topic name {go_quote(params[1])} is not valid")
        channel_name = params[2].decode("utf-8", "replace")
        if not is_valid_channel_name(channel_name):
            raise NSQError(E_BAD_CHANNEL, f"SUB channel name {go_quote(params[2])} is not valid")

        def subscribe() -> None:
            channel = self.nsqd.get_topic(topic_name).get_channel(channel_name)
            try:
                channel.add_client(self)
            except ChannelError as e:
                raise NSQError(E_SUB_FAILED, f"SUB failed {e}") from None
            self.state = STATE_SUBSCRIBED
            self.channel = channel
            self._respond(OK_FRAME)

        self._authorize("SUB", topic_name, channel_name, subscribe)
        return None

    # -- publishing ----------------------------------------------------------------------------------

    def _topic_param(self, command: str, params: list[bytes], minimum: int, prefix: str = "") -> str:
        if len(params) < minimum:
            raise NSQError(E_INVALID, f"{command} insufficient number of parameters")
        name = params[1].decode("utf-8", "replace")
        if not is_valid_topic_name(name):
            raise NSQError(E_BAD_TOPIC, f"{prefix}{command} topic name {go_quote(params[1])} is not valid")
        return name

    def _message_spec(self, command: str) -> BodySpec:
        return _message_body_spec(command, self._options.max_msg_size)

    def _publish(self, code: str, command: str, topic_name: str, bodies: list[bytes], defer: float) -> None:
        try:
            self.nsqd.get_topic(topic_name).publish(bodies, defer)
        except PublishError as e:
            raise NSQError(code, f"{command} failed {e}") from None
        self.pub_counts[topic_name] = self.pub_counts.get(topic_name, 0) + len(bodies)
        if not self.nsqd.durable:
            self._respond(OK_FRAME)
            return
        # --durable: the OK waits for the group commit; later replies queue behind it.
        slot: list[bytes | None] = [None]
        self._pending.append(slot)

        def synced(_: object) -> None:
            slot[0] = OK_FRAME

        def failed(failure: Failure) -> None:
            slot[0] = NSQError(code, f"{command} failed {failure.value}").frame()
            self._parser.stop()
            self._close_when_answered = True

        self.nsqd.sync_barrier().addCallbacks(synced, failed).addBoth(lambda _: self._answer())

    def _respond(self, frame: bytes) -> None:
        """Write a response or error frame, after any reply still waiting for its fsync."""
        if self._pending:
            self._pending.append([frame])
        else:
            self._write(frame)

    def _answer(self) -> None:
        """Write the replies that are ready, in command order."""
        pending = self._pending
        while pending:
            frame = pending[0][0]
            if frame is None:
                break
            pending.popleft()
            if not self._closed:
                self._write(frame)
        if not pending:
            waiters, self._answered = self._answered, []
            for waiter in waiters:
                waiter.callback(None)
            if self._close_when_answered:
                self.close()

    def _all_answered(self) -> Deferred[None]:
        """Fires once no reply is waiting (IDENTIFY's upgrades must not overtake one)."""
        d: Deferred[None] = Deferred()
        if self._pending:
            self._answered.append(d)
        else:
            d.callback(None)
        return d

    def _pub(self, params: list[bytes]) -> BodySpec:
        self._topic_param("PUB", params, 2)
        return self._message_spec("PUB")

    def _pub_body(self, params: list[bytes], body: bytes) -> None:
        topic_name = params[1].decode("utf-8", "replace")
        if self._auth_client is None:
            # The common case, without building the closure _authorize takes.
            self._publish(E_PUB_FAILED, "PUB", topic_name, [body], 0.0)
            return
        self._authorize(
            "PUB", topic_name, "", lambda: self._publish(E_PUB_FAILED, "PUB", topic_name, [body], 0.0)
        )

    def _mpub(self, params: list[bytes]) -> BodySpec:
        topic_name = self._topic_param("MPUB", params, 2, prefix="E_BAD_TOPIC ")
        state = self.auth_state
        if self._auth_client is not None and (state is None or not state.is_expired(self.clock.seconds())):
            # NSQ checks MPUB's authorization before reading the body; an expired one is
            # refreshed once the body is in (we cannot wait here without reading on).
            self._authorize("MPUB", topic_name, "", lambda: None)
        self.nsqd.get_topic(topic_name)
        return _body_spec(
            self._options.max_body_size, E_BAD_BODY, "MPUB body too big %d > %d", "MPUB invalid body size %d"
        )

    def _mpub_body(self, params: list[bytes], body: bytes) -> None:
        topic_name = params[1].decode("utf-8", "replace")
        options = self._options
        bodies = parse_mpub_body(body, options.max_msg_size, options.max_body_size)
        self._authorize(
            "MPUB", topic_name, "", lambda: self._publish(E_MPUB_FAILED, "MPUB", topic_name, bodies, 0.0)
        )

    def _dpub(self, params: list[bytes]) -> BodySpec:
        self._topic_param("DPUB", params, 3)
        timeout_ms = parse_base10_unsigned(params[2])
        if timeout_ms is None:
            raise NSQError(E_INVALID, f"DPUB could not parse timeout {go_bytes(params[2])}")
        max_ms = round(self._options.max_req_timeout * 1000)
        if timeout_ms > max_ms:
            raise NSQError(E_INVALID, f"DPUB timeout {timeout_ms} out of range 0-{max_ms}")
        return self._message_spec("DPUB")

    def _dpub_body(self, params: list[bytes], body: bytes) -> None:
        topic_name = params[1].decode("utf-8", "replace")
        defer = int(params[2]) / 1000
        self._authorize(
            "DPUB", topic_name, "", lambda: self._publish(E_DPUB_FAILED, "DPUB", topic_name, [body], defer)
        )

    # -- consuming -----------------------------------------------------------------------------------

    def _rdy(self, params: list[bytes]) -> None:
        if self.state == STATE_CLOSING:
            return None
        if self.state != STATE_SUBSCRIBED:
            raise NSQError(E_INVALID, "cannot RDY in current state")
        count = 1
        if len(params) > 1:
            parsed = parse_base10_unsigned(params[1])
            if parsed is None:
                raise NSQError(E_INVALID, f"RDY could not parse count {go_bytes(params[1])}")
            count = parsed
        limit = self._options.max_rdy_count
        if count > limit:
            raise NSQError(E_INVALID, f"RDY count {count} out of range 0-{limit}")
        self.ready_count = count
        if self.channel is not None:
            self.nsqd.mark_dirty(self.channel)
        return None

    def _in_flight_command(self, command: str, params: list[bytes], minimum: int) -> tuple[Channel, bytes]:
        if self.state not in (STATE_SUBSCRIBED, STATE_CLOSING) or self.channel is None:
            raise NSQError(E_INVALID, f"cannot {command} in current state")
        if len(params) < minimum:
            raise NSQError(E_INVALID, f"{command} insufficient number of params")
        if len(params[1]) != 16:
            raise NSQError(E_INVALID, "Invalid Message ID")
        return self.channel, params[1]

    def _fin(self, params: list[bytes]) -> None:
        channel, message_id = self._in_flight_command("FIN", params, 2)
        try:
            channel.finish(self.client_id, message_id)
        except ChannelError as e:
            raise NSQError(E_FIN_FAILED, f"FIN {go_bytes(message_id)} failed {e}") from None
        self.finish_count += 1
        self.in_flight_count -= 1
        self.nsqd.mark_dirty(channel)
        return None

    def _req(self, params: list[bytes]) -> None:
        channel, message_id = self._in_flight_command("REQ", params, 3)
        timeout_ms = parse_base10_unsigned(params[2])
        if timeout_ms is None:
            raise NSQError(E_INVALID, f"REQ could not parse timeout {go_bytes(params[2])}")
        delay = min(timeout_ms / 1000, self._options.max_req_timeout)
        try:
            channel.requeue(self.client_id, message_id, delay)
        except ChannelError as e:
            raise NSQError(E_REQ_FAILED, f"REQ {go_bytes(message_id)} failed {e}") from None
        self.requeue_count += 1
        self.in_flight_count -= 1
        self.nsqd.mark_dirty(channel)
        return None

    def _touch(self, params: list[bytes]) -> None:
        channel, message_id = self._in_flight_command("TOUCH", params, 2)
        try:
            channel.touch(self.client_id, message_id, self.msg_timeout)
        except ChannelError as e:
            raise NSQError(E_TOUCH_FAILED, f"TOUCH {go_bytes(message_id)} failed {e}") from None
        return None

    def _cls(self, params: list[bytes]) -> None:
        if self.state != STATE_SUBSCRIBED:
            raise NSQError(E_INVALID, "cannot CLS in current state")
        self.ready_count = 0
        self.state = STATE_CLOSING
        self._respond(CLOSE_WAIT_FRAME)
        return None

    def _nop(self, params: list[bytes]) -> None:
        return None

    # -- stats ---------------------------------------------------------------------------------------

    def client_stats(self) -> dict[str, Any]:
        """This client as /stats shows it, keys in nsqd's order."""
        info = client_tls_info(self.transport) if self.tls else None
        stats: dict[str, Any] = {
            "client_id": self.identifier,
            "hostname": self.hostname,
            "version": "V2",
            "remote_address": self.remote_address,
            "state": self.state,
            "ready_count": self.ready_count,
            "in_flight_count": self.in_flight_count,
            "message_count": self.message_count,
            "finish_count": self.finish_count,
            "requeue_count": self.requeue_count,
            "connect_ts": self.connect_ts,
            "sample_rate": self.sample_rate,
            "deflate": self.deflate,
            "snappy": self.snappy,
            "user_agent": self.user_agent,
        }
        if self.auth_state is not None:
            stats["authed"] = True
            if self.auth_state.identity:
                stats["auth_identity"] = self.auth_state.identity
            if self.auth_state.identity_url:
                stats["auth_identity_url"] = self.auth_state.identity_url
        if self.pub_counts:
            # nsqd 1.3.0 lists only the first topic (a stray ``break`` in its loop).
            topic, count = next(iter(self.pub_counts.items()))
            stats["pub_counts"] = [{"topic": topic, "count": count}]
        stats["tls"] = self.tls
        stats["tls_cipher_suite"] = info.cipher_suite if info else ""
        stats["tls_version"] = info.version if info else ""
        stats["tls_negotiated_protocol"] = info.negotiated_protocol if info else ""
        stats["tls_negotiated_protocol_is_mutual"] = info.negotiated_protocol_is_mutual if info else False
        return stats


class NSQDFactory(ServerFactory):
    """Builds an ``NSQDProtocol`` per connection and can close them all (for a clean stop)."""

    def __init__(
        self,
        nsqd: NSQD,
        reactor: IReactorTime,
        tls_options: Any = None,
        auth_client: AuthClient | None = None,
    ) -> None:
        self.nsqd = nsqd
        self.reactor = reactor
        self.tls_options = tls_options
        self.auth_client = auth_client
        self.connections: set[NSQDProtocol] = set()

    def buildProtocol(self, addr: Any) -> NSQDProtocol:
        protocol = NSQDProtocol(self.nsqd, self.reactor, self.tls_options, self.auth_client)
        protocol.factory = self
        self.connections.add(protocol)
        protocol.when_lost().addCallback(lambda _: self.connections.discard(protocol))
        return protocol

    def close_connections(self) -> Deferred[None]:
        """Close every client connection; fires once all of them are gone."""
        from twisted.internet.defer import gatherResults

        protocols = list(self.connections)
        waits = [p.when_lost() for p in protocols]
        for protocol in protocols:
            protocol.close()
        return gatherResults(waits).addCallback(lambda _: None)
