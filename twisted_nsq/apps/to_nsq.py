"""
C{to_nsq}: read stdin, split it on a one-byte delimiter and publish each record to every
C{--nsqd-tcp-address}, as Go's C{to_nsq} does; exits once stdin ended and every publish was
acknowledged.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Sequence
from typing import Any, TextIO

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from twisted_nsq._cli import FlagError, FlagSpec, Kind
from twisted_nsq.apps._common import CONFIG, NSQD_TCP_ADDRESS, PRODUCER_OPT, VERSION, parse_options
from twisted_nsq.apps._console import run_console
from twisted_nsq.client import Producer

PROGRAM = "to_nsq"

TO_NSQ_FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec("topic", Kind.STRING, "", "NSQ topic to publish to"),
    FlagSpec("delimiter", Kind.STRING, "\n", "character to split input from stdin"),
    FlagSpec("rate", Kind.INT, 0, "Throttle messages to n/second. 0 to disable"),
    NSQD_TCP_ADDRESS,
    PRODUCER_OPT,
    VERSION,
    CONFIG,
)

# Records read but not yet published beyond which stdin is paused.
_HIGH_WATER = 10_000


def check_values(values: dict[str, Any]) -> dict[str, Any]:
    """
    Validate the flags the way Go's C{to_nsq} does.

    @raise FlagError: a missing or bad flag.
    """
    if not values["topic"]:
        raise FlagError("--topic required")
    if not values["nsqd_tcp_addresses"]:
        raise FlagError("--nsqd-tcp-address required")
    delimiter = values["delimiter"].encode()
    if len(delimiter) != 1:
        raise FlagError("--delimiter must be a single byte")
    values["delimiter_byte"] = delimiter
    if values["rate"] < 0:
        raise FlagError("--rate must not be negative")
    values["producer_options"] = parse_options(values["producer_opt"], "producer-opt", consumer=False)
    return values


class Publisher(Protocol):
    """
    Reads records from its transport (stdin) and publishes each to every producer, at most
    C{rate} records a second (0: as fast as they come). L{done} fires once the input ended and
    every publish was answered; it fails with the first publish error.
    """

    def __init__(
        self, clock: IReactorTime, producers: Sequence[Producer], topic: str, delimiter: bytes, rate: int
    ) -> None:
        self._clock = clock
        self._producers = list(producers)
        self._topic = topic
        self._delimiter = delimiter
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._buffer = bytearray()
        self._queue: deque[bytes] = deque()
        self._pending: set[Deferred[None]] = set()
        self._next_at = 0.0
        self._timer: IDelayedCall | None = None
        self._ended = False
        self._paused = False
        self._error: Failure | None = None
        #: Records read from the input so far.
        self.read = 0
        #: Records handed to the producers so far.
        self.published = 0
        # Publishes acknowledged so far, per producer (each answers in order).
        self._acks = [0] * len(self._producers)
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        start = 0
        while True:
            end = self._buffer.find(self._delimiter, start)
            if end < 0:
                break
            if end > start:
                self._queue.append(bytes(self._buffer[start:end]))
                self.read += 1
            start = end + 1
        del self._buffer[:start]
        if len(self._queue) > _HIGH_WATER and self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]
        self._pump()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._buffer:
            # The last record needs no delimiter after it.
            self._queue.append(bytes(self._buffer))
            self.read += 1
            del self._buffer[:]
        self._ended = True
        self._pump()

    def _pump(self) -> None:
        """Publish what the rate allows now, and schedule the rest."""
        if self._timer is not None or self._error is not None:
            return
        while self._queue:
            if self._interval:
                now = self._clock.seconds()
                if now < self._next_at:
                    self._timer = self._clock.callLater(self._next_at - now, self._tick)
                    return
                self._next_at = max(self._next_at, now - self._interval) + self._interval
            self._publish(self._queue.popleft())
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resumeProducing()  # type: ignore[attr-defined]
        self._check_done()

    def _tick(self) -> None:
        self._timer = None
        self._pump()

    def _publish(self, body: bytes) -> None:
        for index, producer in enumerate(self._producers):
            d = producer.publish(self._topic, body)
            self._pending.add(d)
            d.addBoth(self._answered, d, index)
        self.published += 1

    def _answered(self, result: object, d: Deferred[None], index: int) -> None:
        self._pending.discard(d)
        if not isinstance(result, Failure):
            self._acks[index] += 1
        elif self._error is None:
            self._error = result
            self._queue.clear()
        self._check_done()

    @property
    def confirmed(self) -> int:
        """Records acknowledged by every nsqd so far."""
        return min(self._acks, default=0)

    def _check_done(self) -> None:
        if self.done.called or self._pending:
            return
        if self._error is not None:
            self.done.errback(self._error)
        elif self._ended and not self._queue:
            self.done.callback(None)


#: How often the progress line is rewritten, in seconds.
PROGRESS_INTERVAL = 0.25


class Progress:
    """
    One status line on a terminal, rewritten in place (C{\\r}) every L{PROGRESS_INTERVAL}:
    records read, records published (acknowledged by every nsqd) and the publish rate since the
    start. L{finish} writes it a last time and ends the line.
    """

    def __init__(self, clock: IReactorTime, stream: TextIO, publisher: Publisher) -> None:
        self._clock = clock
        self._stream = stream
        self._publisher = publisher
        self._started = clock.seconds()
        self._width = 0
        self._loop = LoopingCall(self.update)
        self._loop.clock = clock

    def start(self) -> None:
        """Show the line now and keep it current."""
        self._loop.start(PROGRESS_INTERVAL, now=True)

    def line(self) -> str:
        """The text of the line now."""
        publisher = self._publisher
        published = publisher.confirmed
        elapsed = self._clock.seconds() - self._started
        rate = published / elapsed if elapsed > 0 else 0.0
        return f"read: {publisher.read}  published: {published}  rate: {rate:.1f}/s"

    def update(self) -> None:
        """Rewrite the line, blanking what a longer previous one left behind."""
        text = self.line()
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)

    def finish(self) -> None:
        """Stop updating; write the final line and a newline."""
        if self._loop.running:
            self._loop.stop()
        self.update()
        self._stream.write("\n")
        self._stream.flush()


def start_progress(clock: IReactorTime, stream: TextIO, publisher: Publisher) -> Progress | None:
    """A started L{Progress} on C{stream} if it is a terminal, else C{None} (nothing is written)."""
    isatty = getattr(stream, "isatty", None)
    if isatty is None or not isatty():
        return None
    progress = Progress(clock, stream, publisher)
    progress.start()
    return progress


def run(reactor: Any, values: dict[str, Any], stderr: TextIO) -> Deferred[None]:
    """Publish stdin until it ends (showing progress on C{stderr} if a terminal), then stop the producers."""
    from twisted.internet.stdio import StandardIO

    producers = [
        Producer([address], reactor=reactor, **values["producer_options"])
        for address in values["nsqd_tcp_addresses"]
    ]
    publisher = Publisher(reactor, producers, values["topic"], values["delimiter_byte"], values["rate"])
    progress = start_progress(reactor, stderr, publisher)
    StandardIO(publisher, reactor=reactor)  # type: ignore[no-untyped-call]

    def stop(result: object) -> Deferred[Any]:
        if progress is not None:
            progress.finish()
        stopped = gatherResults([producer.stop() for producer in producers], consumeErrors=True)
        return stopped.addBoth(lambda _: result)

    return publisher.done.addBoth(stop)


def main(argv: Sequence[str] | None = None) -> None:
    """The C{to_nsq} console script."""
    run_console(PROGRAM, TO_NSQ_FLAGS, argv, check_values, run, sys.stderr)


if __name__ == "__main__":
    main()
