"""L{ManualRunner}: a disk queue's C{sync_runner} whose jobs run only when a test says so."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred


class ManualRunner:
    """A sync_runner whose jobs run when the test says, in any order (as a thread pool may)."""

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[[], None], Deferred[None]]] = []

    def __call__(self, work: Callable[[], None]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.pending.append((work, d))
        return d

    def kinds(self) -> list[str]:
        """The names of the pending jobs' functions, oldest first."""
        return [getattr(getattr(w, "func", w), "__name__", "?") for w, _ in self.pending]

    def run(self, index: int = 0) -> None:
        """Run the pending job at C{index} and fire its Deferred with its outcome."""
        work, d = self.pending.pop(index)
        try:
            work()
        except Exception as e:
            d.errback(e)
        else:
            d.callback(None)
