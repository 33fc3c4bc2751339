"""NSQ protocol error codes and the exception that carries one.

Every error nsqd sends is an error frame whose payload is ``b"<CODE> <description>"``. Clients match
on the code prefix, so the code strings are part of the wire contract. Only ``E_FIN_FAILED``,
``E_REQ_FAILED`` and ``E_TOUCH_FAILED`` leave the connection open; every other code is fatal (the
frame is written, then the connection is closed).
"""

from __future__ import annotations

from twisted_nsq.wire.frames import FRAME_TYPE_ERROR, encode_frame

E_INVALID = "E_INVALID"
E_BAD_PROTOCOL = "E_BAD_PROTOCOL"
E_BAD_BODY = "E_BAD_BODY"
E_BAD_TOPIC = "E_BAD_TOPIC"
E_BAD_CHANNEL = "E_BAD_CHANNEL"
E_BAD_MESSAGE = "E_BAD_MESSAGE"
E_IDENTIFY_FAILED = "E_IDENTIFY_FAILED"
E_AUTH_DISABLED = "E_AUTH_DISABLED"
E_AUTH_FAILED = "E_AUTH_FAILED"
E_AUTH_FIRST = "E_AUTH_FIRST"
E_AUTH_ERROR = "E_AUTH_ERROR"
E_UNAUTHORIZED = "E_UNAUTHORIZED"
E_SUB_FAILED = "E_SUB_FAILED"
E_PUB_FAILED = "E_PUB_FAILED"
E_MPUB_FAILED = "E_MPUB_FAILED"
E_DPUB_FAILED = "E_DPUB_FAILED"
E_FIN_FAILED = "E_FIN_FAILED"
E_REQ_FAILED = "E_REQ_FAILED"
E_TOUCH_FAILED = "E_TOUCH_FAILED"

ALL_CODES: frozenset[str] = frozenset(
    {
        E_INVALID,
        E_BAD_PROTOCOL,
        E_BAD_BODY,
        E_BAD_TOPIC,
        E_BAD_CHANNEL,
        E_BAD_MESSAGE,
        E_IDENTIFY_FAILED,
        E_AUTH_DISABLED,
        E_AUTH_FAILED,
        E_AUTH_FIRST,
        E_AUTH_ERROR,
        E_UNAUTHORIZED,
        E_SUB_FAILED,
        E_PUB_FAILED,
        E_MPUB_FAILED,
        E_DPUB_FAILED,
        E_FIN_FAILED,
        E_REQ_FAILED,
        E_TOUCH_FAILED,
    }
)

NON_FATAL_CODES: frozenset[str] = frozenset({E_FIN_FAILED, E_REQ_FAILED, E_TOUCH_FAILED})


class NSQError(Exception):
    """
    An NSQ protocol error: a code such as ``E_INVALID`` and a human-readable description.

    Raised by the codec and by the nsqd cores, and turned into an error frame by the protocol.
    """

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    @property
    def fatal(self) -> bool:
        """Whether the connection must be closed after this error is sent."""
        return self.code not in NON_FATAL_CODES

    def payload(self) -> bytes:
        """The error frame payload: ``b"CODE message"``, or ``b"CODE"`` without a message."""
        return str(self).encode("utf-8")

    def frame(self) -> bytes:
        """The complete error frame (type 1) carrying L{payload}."""
        return encode_frame(FRAME_TYPE_ERROR, self.payload())

    def __str__(self) -> str:
        if self.message:
            return self.code + " " + self.message
        return self.code
