"""
The seam between a topic's or channel's memory queue and what holds the overflow.

A backend receives the messages that do not fit in memory. The disk queue (go-diskqueue
compatible) plugs in here; until a backend with room exists, overflow is refused so memory stays
bounded.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from zope.interface import Attribute, Interface, implementer

from twisted_nsq.nsqd.message import Message


class BackendError(Exception):
    """A message could not be stored; the text becomes part of E_PUB_FAILED."""


class IBackendQueue(Interface):
    """Where overflow beyond the memory queue goes."""

    unbounded = Attribute("True when put() accepts any number of messages (a disk queue).")

    def put(message: Message) -> None:
        """Store a message at the tail; raise BackendError when it cannot."""

    def read() -> Message | None:
        """Take the message at the head, or None when empty."""

    def depth() -> int:
        """How many messages are held."""

    def empty() -> None:
        """Drop every message."""

    def delete() -> None:
        """Drop every message and release any storage for good."""

    def close() -> None:
        """Flush and release (clean shutdown)."""

    def sync() -> Deferred[None]:
        """Fires once everything put so far is on stable storage."""

    def done(message: Message) -> None:
        """
        A message this backend handed out with ``read()`` has left the queue for good (FINed,
        or written again elsewhere). Durable backends keep a read message until then.
        """


@implementer(IBackendQueue)
class DiscardingBackend:
    """The backend of ephemeral topics and channels: overflow is silently dropped (as NSQ does)."""

    unbounded = True

    def put(self, message: Message) -> None:
        """Drop the message."""

    def read(self) -> Message | None:
        return None

    def depth(self) -> int:
        return 0

    def empty(self) -> None:
        """Nothing is held."""

    def delete(self) -> None:
        """Nothing is held."""

    def close(self) -> None:
        """Nothing is held."""

    def sync(self) -> Deferred[None]:
        return succeed(None)

    def done(self, message: Message) -> None:
        """Nothing is held."""


@implementer(IBackendQueue)
class RefusingBackend:
    """A memory-only queue: once memory is full, publishing fails rather than growing memory."""

    unbounded = False

    def put(self, message: Message) -> None:
        raise BackendError("queue full")

    def read(self) -> Message | None:
        return None

    def depth(self) -> int:
        return 0

    def empty(self) -> None:
        """Nothing is held."""

    def delete(self) -> None:
        """Nothing is held."""

    def close(self) -> None:
        """Nothing is held."""

    def sync(self) -> Deferred[None]:
        return succeed(None)

    def done(self, message: Message) -> None:
        """Nothing is held."""
