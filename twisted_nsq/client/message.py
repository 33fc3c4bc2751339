"""
A message delivered to a consumer, bound to the connection that delivered it.

FIN, REQ and TOUCH must go back on that same connection: nsqd only accepts them from the client
that owns the message (spec 0.6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted_nsq.wire.frames import DecodedMessage

__all__ = [
    "DEFAULT_REQUEUE_DELAY",
    "MAX_REQUEUE_DELAY",
    "Message",
    "MessageResponder",
]

#: go-nsq's C{default_requeue_delay}, in seconds; multiplied by the attempts so far.
DEFAULT_REQUEUE_DELAY = 90.0
#: go-nsq's C{max_requeue_delay}, in seconds: the cap on the computed default delay.
MAX_REQUEUE_DELAY = 900.0


class MessageResponder(Protocol):
    """What a message needs from its connection (L{NSQConnection} provides it)."""

    def finish(self, message_id: bytes) -> None: ...

    def requeue(self, message_id: bytes, delay_ms: int) -> None: ...

    def touch(self, message_id: bytes) -> None: ...


class Message:
    """
    One delivery of an NSQ message.

    Exactly one of L{finish} and L{requeue} takes effect; later calls are ignored, as in go-nsq.

    @ivar id: the 16-byte ASCII message ID.
    @ivar timestamp: when the message was published, in nanoseconds since the epoch.
    @ivar attempts: how many times it has been delivered, this delivery included.
    """

    __slots__ = (
        "_connection",
        "_default_requeue_delay",
        "_max_requeue_delay",
        "_on_response",
        "attempts",
        "body",
        "id",
        "responded",
        "timestamp",
    )

    def __init__(
        self,
        id: bytes,
        body: bytes,
        attempts: int,
        timestamp: int,
        connection: MessageResponder,
        *,
        default_requeue_delay: float = DEFAULT_REQUEUE_DELAY,
        max_requeue_delay: float = MAX_REQUEUE_DELAY,
        on_response: Callable[[Message, bool, bool], object] | None = None,
    ) -> None:
        """
        @param on_response: called once, after FIN or REQ was sent, with the message, whether it
            was finished, and whether the response asks for backoff.
        """
        self.id = id
        self.body = body
        self.attempts = attempts
        self.timestamp = timestamp
        self.responded = False
        self._connection = connection
        self._default_requeue_delay = default_requeue_delay
        self._max_requeue_delay = max_requeue_delay
        self._on_response = on_response

    @classmethod
    def from_decoded(
        cls,
        decoded: DecodedMessage,
        connection: MessageResponder,
        *,
        default_requeue_delay: float = DEFAULT_REQUEUE_DELAY,
        max_requeue_delay: float = MAX_REQUEUE_DELAY,
        on_response: Callable[[Message, bool, bool], object] | None = None,
    ) -> Message:
        """A message from a decoded message frame."""
        return cls(
            decoded.id,
            decoded.body,
            decoded.attempts,
            decoded.timestamp,
            connection,
            default_requeue_delay=default_requeue_delay,
            max_requeue_delay=max_requeue_delay,
            on_response=on_response,
        )

    def __repr__(self) -> str:
        return f"<Message id={self.id!r} attempts={self.attempts} size={len(self.body)}>"

    def finish(self) -> None:
        """Send FIN: the message was handled."""
        if self.responded:
            return
        self.responded = True
        self._connection.finish(self.id)
        if self._on_response is not None:
            self._on_response(self, True, False)

    def default_requeue_delay(self) -> float:
        """go-nsq's delay for a requeue without one: the base delay times the attempts, capped."""
        return min(self._default_requeue_delay * self.attempts, self._max_requeue_delay)

    def requeue(self, delay: float | None = None, backoff: bool = True) -> None:
        """
        Send REQ: nsqd delivers the message again after C{delay} seconds.

        @param delay: seconds; C{None} means L{default_requeue_delay}.
        @param backoff: whether the consumer should treat this as a failure that slows it down
            (go-nsq's C{Requeue}) or not (C{RequeueWithoutBackoff}); passed to C{on_response}.
        """
        if self.responded:
            return
        if delay is None:
            delay = self.default_requeue_delay()
        if delay < 0:
            raise ValueError(f"requeue delay must be >= 0, not {delay}")
        self.responded = True
        self._connection.requeue(self.id, round(delay * 1000))
        if self._on_response is not None:
            self._on_response(self, False, backoff)

    def touch(self) -> None:
        """Send TOUCH: reset the message's in-flight timeout. Ignored once responded."""
        if not self.responded:
            self._connection.touch(self.id)
