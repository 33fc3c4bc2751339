"""
Test helpers for code that embeds or talks to twisted-nsq's nsqd without sockets.

``make_nsqd`` builds a core on a ``Clock``; ``LoopbackClient`` drives one ``NSQDProtocol`` over
a ``StringTransport`` and decodes what the server wrote into frames.
"""

from __future__ import annotations

import json
import random
import struct
from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.options import NSQDOptions
from twisted_nsq.nsqd.protocol import NSQDProtocol
from twisted_nsq.wire.frames import (
    FRAME_TYPE_ERROR,
    FRAME_TYPE_MESSAGE,
    FRAME_TYPE_RESPONSE,
    DecodedMessage,
    FrameParser,
    decode_message,
)

_LENGTH = struct.Struct(">i")


def make_nsqd(clock: Clock | None = None, seed: int = 0, **overrides: Any) -> NSQD:
    """An nsqd core on a ``Clock`` (default options with ``overrides``), seeded randomness."""
    defaults: dict[str, Any] = {"node_id": 1, "broadcast_address": "testhost"}
    defaults.update(overrides)
    options = NSQDOptions(**defaults)
    return NSQD(options, clock if clock is not None else Clock(), random_source=random.Random(seed))


def body(data: bytes) -> bytes:
    """A sized body: the 4-byte big-endian length, then ``data``."""
    return _LENGTH.pack(len(data)) + data


def mpub_body(messages: list[bytes]) -> bytes:
    """An MPUB body (count, then each message sized), itself sized."""
    inner = _LENGTH.pack(len(messages)) + b"".join(body(m) for m in messages)
    return body(inner)


@attrs.define
class Frame:
    """One frame the server wrote."""

    type: int
    data: bytes

    @property
    def message(self) -> DecodedMessage:
        assert self.type == FRAME_TYPE_MESSAGE, self
        return decode_message(self.data)

    @property
    def is_error(self) -> bool:
        return self.type == FRAME_TYPE_ERROR

    @property
    def is_response(self) -> bool:
        return self.type == FRAME_TYPE_RESPONSE


class LoopbackTransport(StringTransport):
    """A StringTransport whose close is followed by ``connectionLost`` on the next clock turn."""

    def __init__(self, clock: Clock, peer: IPv4Address) -> None:
        super().__init__(peerAddress=peer)
        self._clock = clock
        self._lost = False
        self.protocol: NSQDProtocol | None = None

    def _close_soon(self) -> None:
        if not self._lost:
            self._lost = True
            self._clock.callLater(0, self._notify)

    def _notify(self) -> None:
        if self.protocol is not None:
            self.protocol.connectionLost(None)

    def loseConnection(self) -> None:
        super().loseConnection()
        self._close_soon()

    def abortConnection(self) -> None:
        super().abortConnection()
        self._close_soon()


class LoopbackClient:
    """One NSQDProtocol on a StringTransport, with helpers to send commands and read frames."""

    def __init__(self, nsqd: NSQD, magic: bool = True, port: int = 40000, **protocol_args: Any) -> None:
        self.nsqd = nsqd
        clock: Clock = nsqd.clock  # type: ignore[assignment]
        self.transport = LoopbackTransport(clock, IPv4Address("TCP", "127.0.0.1", port))
        self.protocol = NSQDProtocol(nsqd, clock, **protocol_args)
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)
        self._parser = FrameParser()
        if magic:
            self.send(b"  V2")

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def command(self, line: str, payload: bytes | None = None) -> None:
        self.send(line.encode() + b"\n" + (body(payload) if payload is not None else b""))

    def identify(self, **fields: Any) -> list[Frame]:
        self.command("IDENTIFY", json.dumps(fields).encode())
        return self.frames()

    def frames(self) -> list[Frame]:
        """Frames written since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return [Frame(t, d) for t, d in self._parser.feed(data)]

    def messages(self) -> list[DecodedMessage]:
        """Messages written since the last call (other frames must not be there)."""
        return [f.message for f in self.frames()]

    def subscribe(self, topic: str, channel: str, rdy: int | None = None) -> None:
        self.command(f"SUB {topic} {channel}")
        assert [f.data for f in self.frames()] == [b"OK"]
        if rdy is not None:
            self.command(f"RDY {rdy}")

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting) or self.protocol._closed

    def disconnect(self) -> None:
        """The client goes away (connectionLost at once)."""
        self.transport._lost = True
        self.protocol.connectionLost(None)
