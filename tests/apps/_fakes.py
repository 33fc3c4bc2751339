"""Stand-ins the utilities' tests share."""

from __future__ import annotations

from twisted.internet.defer import Deferred

__all__ = ["FakeProducer"]


class FakeProducer:
    """A producer that records publishes; each returns a Deferred the test fires."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, Deferred[None]]] = []

    def publish(self, topic: str, body: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.published.append((topic, body, d))
        return d

    def ack_all(self) -> None:
        """Acknowledge every publish not answered yet."""
        for _, _, d in self.published:
            if not d.called:
                d.callback(None)

    def bodies(self) -> list[bytes]:
        """The published bodies, in order."""
        return [body for _, body, _ in self.published]
