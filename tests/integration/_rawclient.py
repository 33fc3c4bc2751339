"""
A small blocking NSQ V2 client over a real socket, for integration tests.

It speaks the protocol at the byte level (magic, command lines, sized bodies) so tests can send
exactly what they mean, including things no real client would send, and see every frame nsqd
answers with.  Frames are split by L{twisted_nsq.wire.frames.FrameParser}; the stream upgrades
(TLS, snappy framing, raw DEFLATE) are implemented here independently of nsqd's own codecs (the
standard C{ssl} and C{zlib} modules, C{cramjam}'s raw snappy block codec and C{google_crc32c}),
so a codec bug in nsqd cannot be hidden by the same bug on the client side.

Every socket operation has a timeout: a test never hangs on this client.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import time
import zlib
from collections import deque
from typing import Any, NamedTuple

import cramjam
import google_crc32c

from twisted_nsq.wire.frames import (
    FRAME_TYPE_ERROR,
    FRAME_TYPE_MESSAGE,
    FRAME_TYPE_RESPONSE,
    MAGIC_V2,
    DecodedMessage,
    FrameParser,
    decode_message,
)

__all__ = [
    "DeflateStream",
    "Frame",
    "RawClient",
    "ServerClosed",
    "SnappyStream",
    "UnexpectedFrame",
]

_INT32 = struct.Struct(">i")
_LE32 = struct.Struct("<I")

_SNAPPY_IDENTIFIER = b"\xff\x06\x00\x00sNaPpY"
_SNAPPY_CHUNK = 65536


class Frame(NamedTuple):
    """One frame from nsqd: its type (0 response, 1 error, 2 message) and its data."""

    type: int
    data: bytes

    def describe(self) -> str:
        """A readable form for assertion messages."""
        names = {FRAME_TYPE_RESPONSE: "response", FRAME_TYPE_ERROR: "error", FRAME_TYPE_MESSAGE: "message"}
        shown = self.data if len(self.data) <= 200 else self.data[:200] + b"..."
        return f"{names.get(self.type, str(self.type))} frame {shown!r}"


class ServerClosed(Exception):
    """nsqd closed (or reset) the connection while the client was waiting for data."""


class UnexpectedFrame(AssertionError):
    """A frame of another type (or with other data) than the test expected arrived."""


def _masked_crc32c(data: bytes) -> int:
    # The snappy framing format stores CRC-32C rotated right by 15 bits plus a constant.
    crc = int(google_crc32c.value(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class SnappyStream:
    """
    Both directions of a snappy framing-format stream, written from the format description.

    The encoder writes the stream identifier once, then compressed chunks of at most 64 KiB.
    The decoder accepts the identifier at any chunk boundary, checks every CRC and keeps a split
    chunk until it is complete.
    """

    def __init__(self) -> None:
        self._identifier_sent = False
        self._pending = bytearray()

    def encode(self, data: bytes) -> bytes:
        """Frame C{data} as compressed chunks (after the stream identifier on the first call)."""
        parts: list[bytes] = []
        if not self._identifier_sent:
            parts.append(_SNAPPY_IDENTIFIER)
            self._identifier_sent = True
        for start in range(0, len(data), _SNAPPY_CHUNK):
            chunk = data[start : start + _SNAPPY_CHUNK]
            compressed = bytes(cramjam.snappy.compress_raw(chunk))
            parts.append(_LE32.pack(0x00 | ((len(compressed) + 4) << 8)))
            parts.append(_LE32.pack(_masked_crc32c(chunk)))
            parts.append(compressed)
        return b"".join(parts)

    def decode(self, data: bytes) -> bytes:
        """Decode every chunk C{data} completes.

        @raise ValueError: a corrupt stream (bad CRC, unknown unskippable chunk type).
        """
        pending = self._pending
        pending += data
        out: list[bytes] = []
        pos = 0
        while len(pending) - pos >= 4:
            (header,) = _LE32.unpack_from(pending, pos)
            chunk_type, length = header & 0xFF, header >> 8
            if len(pending) - pos - 4 < length:
                break
            chunk = bytes(pending[pos + 4 : pos + 4 + length])
            pos += 4 + length
            if chunk_type == 0xFF:
                if chunk != b"sNaPpY":
                    raise ValueError(f"bad snappy stream identifier {chunk!r}")
            elif chunk_type in (0x00, 0x01):
                (crc,) = _LE32.unpack_from(chunk)
                try:
                    payload = (
                        bytes(cramjam.snappy.decompress_raw(chunk[4:])) if chunk_type == 0 else chunk[4:]
                    )
                except cramjam.DecompressionError as e:
                    raise ValueError(f"corrupt snappy chunk: {e}") from e
                if _masked_crc32c(payload) != crc:
                    raise ValueError("snappy chunk CRC mismatch")
                out.append(payload)
            elif chunk_type < 0x80:
                raise ValueError(f"unskippable snappy chunk type {chunk_type:#x}")
        del pending[:pos]
        return b"".join(out)


class DeflateStream:
    """Both directions of a raw DEFLATE stream (RFC 1951, no zlib header), sync-flushed per write."""

    def __init__(self, level: int = 6) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
        self._decompressor = zlib.decompressobj(-15)

    def encode(self, data: bytes) -> bytes:
        """Compress C{data} and sync-flush so nsqd can decode it at once."""
        return self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def decode(self, data: bytes) -> bytes:
        """Inflate the next piece of nsqd's stream.

        @raise ValueError: the stream is not valid DEFLATE.
        """
        try:
            return self._decompressor.decompress(data)
        except zlib.error as e:
            raise ValueError(f"corrupt deflate stream: {e}") from e


class RawClient:
    """
    One blocking connection to nsqd's TCP port.

    Methods that send a command and expect an answer return the answering L{Frame}; message
    frames are returned by L{read_message}. Heartbeats are answered with C{NOP} and skipped by
    L{read_frame} unless asked for.
    """

    def __init__(
        self,
        address: tuple[str, int],
        *,
        timeout: float = 5.0,
        send_magic: bool = True,
        receive_buffer: int | None = None,
    ) -> None:
        """
        Connect to C{address} and (by default) send the C{"  V2"} magic.

        @param timeout: the default limit, in seconds, for every blocking operation.
        @param receive_buffer: a C{SO_RCVBUF} size set before connecting, to make the kernel
            hold little for a client that does not read.
        """
        self.address = address
        self.timeout = timeout
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(timeout)
        sock.connect(address)
        self.sock: socket.socket = sock
        self._parser = FrameParser()
        self._frames: deque[Frame] = deque()
        self._decoder: SnappyStream | DeflateStream | None = None
        self._encoder: SnappyStream | DeflateStream | None = None
        #: The first wire bytes (up to 256) read after a compression upgrade, still compressed.
        self.compressed_prefix = bytearray()
        #: The IDENTIFY reply (JSON or C{OK}) once L{identify} has run.
        self.identify_reply: Frame | None = None
        self.closed = False
        if send_magic:
            self.send_wire(MAGIC_V2)

    # -- sending -----------------------------------------------------------------------------

    def send_wire(self, data: bytes) -> None:
        """Send C{data} as is, bypassing any negotiated compression."""
        self.sock.sendall(data)

    def send(self, data: bytes) -> None:
        """Send C{data} through the negotiated compression, if any."""
        self.send_wire(self._encoder.encode(data) if self._encoder is not None else data)

    def command(self, line: bytes, body: bytes | None = None) -> None:
        """Send C{line} plus C{\\n}, then C{body} with its 4-byte size if given."""
        if body is None:
            self.send(line + b"\n")
        else:
            self.send(b"".join((line, b"\n", _INT32.pack(len(body)), body)))

    # -- receiving ---------------------------------------------------------------------------

    def _recv(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no data from nsqd within {self.timeout}s")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except TimeoutError as e:
            raise TimeoutError(f"no data from nsqd within {self.timeout}s") from e
        except OSError as e:
            # A reset, or a TLS layer torn down under us: either way nsqd is gone.
            self.closed = True
            raise ServerClosed(f"connection lost: {e!r}") from e
        if not data:
            self.closed = True
            raise ServerClosed("nsqd closed the connection")
        return data

    def _recv_exact(self, size: int, deadline: float) -> bytes:
        # Used while negotiating: reading past the current frame would swallow bytes that belong
        # to the next layer (a TLS handshake or a compressed stream).
        parts: list[bytes] = []
        while size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("negotiation frame not received in time")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(size)
            except TimeoutError as e:
                raise TimeoutError("negotiation frame not received in time") from e
            except OSError as e:
                self.closed = True
                raise ServerClosed(f"connection lost during negotiation: {e!r}") from e
            if not data:
                self.closed = True
                raise ServerClosed("nsqd closed the connection during negotiation")
            parts.append(data)
            size -= len(data)
        return b"".join(parts)

    def _read_negotiation_frame(self, timeout: float | None) -> Frame:
        if self._parser.buffered or self._frames:
            raise AssertionError("bytes were buffered before a negotiation frame")
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        (size,) = _INT32.unpack(self._recv_exact(4, deadline))
        if size < 4 or size > 1024 * 1024:
            raise AssertionError(f"bad frame size {size} during negotiation")
        data = self._recv_exact(size, deadline)
        (frame_type,) = _INT32.unpack_from(data)
        return Frame(frame_type, data[4:])

    def read_frame(self, timeout: float | None = None, *, heartbeats: bool = False) -> Frame:
        """
        The next frame from nsqd.

        @param heartbeats: return C{_heartbeat_} frames instead of answering them with C{NOP}.
        @raise ServerClosed: the connection ended before a whole frame arrived.
        @raise TimeoutError: nothing complete arrived within the timeout.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            while self._frames:
                frame = self._frames.popleft()
                if not heartbeats and frame == (FRAME_TYPE_RESPONSE, b"_heartbeat_"):
                    self.send(b"NOP\n")
                    continue
                return frame
            data = self._recv(deadline)
            if self._decoder is not None:
                if len(self.compressed_prefix) < 256:
                    self.compressed_prefix += data[: 256 - len(self.compressed_prefix)]
                data = self._decoder.decode(data)
            for frame_type, payload in self._parser.feed(data):
                self._frames.append(Frame(frame_type, payload))

    def expect_response(self, data: bytes, timeout: float | None = None) -> None:
        """Read one frame and fail unless it is the response C{data}."""
        frame = self.read_frame(timeout)
        if frame != (FRAME_TYPE_RESPONSE, data):
            raise UnexpectedFrame(f"expected response {data!r}, got {frame.describe()}")

    def expect_ok(self, timeout: float | None = None) -> None:
        """Read one frame and fail unless it is the response C{OK}."""
        self.expect_response(b"OK", timeout)

    def read_message(self, timeout: float | None = None) -> DecodedMessage:
        """Read one frame and fail unless it is a message; return it decoded."""
        frame = self.read_frame(timeout)
        if frame.type != FRAME_TYPE_MESSAGE:
            raise UnexpectedFrame(f"expected a message, got {frame.describe()}")
        return decode_message(frame.data)

    def read_until_closed(self, timeout: float | None = None) -> list[Frame]:
        """
        Every frame nsqd sends until it closes the connection.

        @raise TimeoutError: the connection was still open when the timeout expired.
        """
        frames: list[Frame] = []
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                frames.append(self.read_frame(max(deadline - time.monotonic(), 0.001), heartbeats=True))
            except ServerClosed:
                return frames
            except ValueError:
                # An undecodable stream after garbage is as good as closed for the caller, but
                # the socket must still reach EOF: keep reading raw bytes.
                self._decoder = None
                self._parser = FrameParser()

    # -- commands ----------------------------------------------------------------------------

    def identify(self, fields: dict[str, Any], *, tls_context: ssl.SSLContext | None = None) -> Frame:
        """
        Send IDENTIFY with C{fields} as JSON and perform every upgrade nsqd grants.

        The first reply frame is returned (the JSON, C{OK}, or an error frame) and kept in
        L{identify_reply}. With C{feature_negotiation}, a granted C{tls_v1} is started with
        C{tls_context} (which must then be given), then snappy or deflate is switched on; the
        C{OK} that follows each upgrade is read and checked.
        """
        body = json.dumps(fields).encode()
        self.command(b"IDENTIFY", body)
        reply = self._read_negotiation_frame(None)
        self.identify_reply = reply
        if reply.type != FRAME_TYPE_RESPONSE or not fields.get("feature_negotiation"):
            return reply
        granted = json.loads(reply.data)
        if granted.get("tls_v1"):
            if tls_context is None:
                raise AssertionError("nsqd granted tls_v1 but the test gave no TLS context")
            self.start_tls(tls_context)
            tls_ok = self._read_negotiation_frame(None)
            if tls_ok != (FRAME_TYPE_RESPONSE, b"OK"):
                raise UnexpectedFrame(f"expected OK after the TLS handshake, got {tls_ok.describe()}")
        if granted.get("snappy"):
            self.start_compression(SnappyStream())
            self.expect_ok()
        if granted.get("deflate"):
            self.start_compression(DeflateStream(granted.get("deflate_level", 6)))
            self.expect_ok()
        return reply

    def start_tls(self, context: ssl.SSLContext) -> None:
        """Run the client side of the TLS handshake on the socket (nsqd's IDENTIFY upgrade)."""
        self.sock.settimeout(self.timeout)
        self.sock = context.wrap_socket(self.sock, server_hostname=self.address[0])

    def start_compression(self, stream: SnappyStream | DeflateStream) -> None:
        """Switch both directions to C{stream} from the next byte on."""
        self._encoder = stream
        self._decoder = stream

    def auth(self, secret: bytes) -> Frame:
        """Send AUTH with C{secret}; return nsqd's answer."""
        self.command(b"AUTH", secret)
        return self.read_frame()

    def pub(self, topic: str, body: bytes) -> Frame:
        """PUB C{body} to C{topic}; return nsqd's answer."""
        self.command(b"PUB " + topic.encode(), body)
        return self.read_frame()

    def mpub(self, topic: str, bodies: list[bytes]) -> Frame:
        """MPUB C{bodies} to C{topic}; return nsqd's answer."""
        inner = b"".join([_INT32.pack(len(bodies)), *(_INT32.pack(len(b)) + b for b in bodies)])
        self.command(b"MPUB " + topic.encode(), inner)
        return self.read_frame()

    def sub(self, topic: str, channel: str) -> Frame:
        """SUB to C{topic}/C{channel}; return nsqd's answer."""
        self.command(f"SUB {topic} {channel}".encode())
        return self.read_frame()

    def rdy(self, count: int) -> None:
        """Send RDY C{count} (nsqd answers nothing)."""
        self.command(b"RDY %d" % count)

    def fin(self, message_id: bytes) -> None:
        """Send FIN for C{message_id} (nsqd answers only on failure)."""
        self.command(b"FIN " + message_id)

    def req(self, message_id: bytes, delay_ms: int) -> None:
        """Send REQ for C{message_id} with C{delay_ms} (nsqd answers only on failure)."""
        self.command(b"REQ %s %d" % (message_id, delay_ms))

    def nop(self) -> None:
        """Send NOP."""
        self.command(b"NOP")

    def assert_silent(self, seconds: float) -> None:
        """Fail if any frame other than a heartbeat arrives within C{seconds}."""
        try:
            frame = self.read_frame(seconds)
        except TimeoutError:
            return
        raise UnexpectedFrame(f"expected no frame, got {frame.describe()}")

    def close(self) -> None:
        """Close the socket (idempotent)."""
        try:
            self.sock.close()
        finally:
            self.closed = True
