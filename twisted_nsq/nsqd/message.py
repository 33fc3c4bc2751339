"""A message as nsqd holds it: one object per channel, the body shared between channels."""

from __future__ import annotations


class Message:
    """
    One message in one channel (or in a topic's queue before fan-out).

    ``timestamp`` is nanoseconds since the epoch (set at publish); ``attempts`` counts
    deliveries. ``deadline`` is the in-flight deadline while in flight, or the due time while
    deferred (clock seconds). ``deferred`` is the delay (seconds) a DPUB asked for; it applies
    when the message enters a channel.
    """

    __slots__ = (
        "attempts",
        "body",
        "client_id",
        "deadline",
        "deferred",
        "delivery_ts",
        "id",
        "ref",
        "timestamp",
    )

    def __init__(
        self, id: bytes, body: bytes, timestamp: int, attempts: int = 0, deferred: float = 0.0
    ) -> None:
        self.id = id
        self.body = body
        self.timestamp = timestamp
        self.attempts = attempts
        self.deferred = deferred
        self.client_id = 0
        self.delivery_ts = 0.0
        self.deadline = 0.0
        #: Where a durable backend holds this message (set by its ``read()``), else None.
        self.ref: object = None

    def copy(self) -> Message:
        """A copy for another channel: same ID, body, timestamp and attempts; fresh delivery state."""
        return Message(self.id, self.body, self.timestamp, self.attempts, self.deferred)

    def __repr__(self) -> str:
        return f"<Message {self.id!r} attempts={self.attempts} body={len(self.body)}B>"
