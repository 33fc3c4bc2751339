"""
C{nsq_tail}: consume topics and write each message body plus a newline to stdout, as Go's
C{nsq_tail} does.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, DeferredList

from twisted_nsq._cli import FlagError, FlagSpec, Kind
from twisted_nsq.apps._common import (
    MAX_IN_FLIGHT,
    check_sources,
    consumer_flags,
    make_consumer,
    parse_options,
)
from twisted_nsq.apps._console import run_console
from twisted_nsq.client import Message

PROGRAM = "nsq_tail"

TAIL_FLAGS: tuple[FlagSpec, ...] = consumer_flags(
    FlagSpec("topic", Kind.STRING_LIST, [], "NSQ topic (may be given multiple times)", attr="topics"),
    FlagSpec("channel", Kind.STRING, "", "NSQ channel"),
    MAX_IN_FLIGHT,
    FlagSpec("n", Kind.INT, 0, "total messages to show (will wait if starved)", attr="total_messages"),
    FlagSpec(
        "total-messages", Kind.INT, 0, "total messages to show (same as -n)", attr="total_messages_long"
    ),
    FlagSpec("print-topic", Kind.BOOL, False, "print topic name where message was received"),
)


def ephemeral_channel(rng: random.Random) -> str:
    """Go's default channel: C{tail} and six random digits, ephemeral."""
    return f"tail{rng.randrange(1_000_000):06d}#ephemeral"


def check_values(values: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """
    Validate the flags the way Go's C{nsq_tail} does and fill in the defaults that depend on
    others (the channel; C{max-in-flight} no larger than C{-n}).

    @raise FlagError: a missing or contradictory flag.
    """
    if not values["topics"]:
        raise FlagError("--topic is required")
    if not values["channel"]:
        values["channel"] = ephemeral_channel(rng)
    check_sources(values["nsqd_tcp_addresses"], values["lookupd_http_addresses"])
    if values["max_in_flight"] < 1:
        raise FlagError("--max-in-flight must be at least 1")
    total = values["total_messages"] or values["total_messages_long"]
    if total < 0:
        raise FlagError("-n must not be negative")
    values["total_messages"] = total
    if 0 < total < values["max_in_flight"]:
        # Go's nsq_tail never asks for more messages than it will show.
        values["max_in_flight"] = total
    values["consumer_options"] = parse_options(values["consumer_opt"], "consumer-opt", consumer=True)
    return values


class Tail:
    """
    Writes the messages of every topic's consumer to C{out} and fires L{done} after C{total}
    messages (never when C{total} is 0).
    """

    def __init__(self, out: BinaryIO, total: int, print_topic: bool) -> None:
        self.out = out
        self.total = total
        self.print_topic = print_topic
        self.shown = 0
        self.done: Deferred[None] = Deferred()

    def handler(self, topic: str) -> Any:
        """The message handler for C{topic}'s consumer."""
        prefix = (topic + " | ").encode()

        def handle(message: Message) -> None:
            if self.total and self.shown >= self.total:
                # Delivered while stopping: another tail (or this one restarted) may show it.
                message.requeue(0, backoff=False)
                return
            if self.print_topic:
                self.out.write(prefix)
            self.out.write(message.body)
            self.out.write(b"\n")
            self.out.flush()
            self.shown += 1
            if self.total and self.shown == self.total:
                self.done.callback(None)

        return handle


def run(reactor: Any, values: dict[str, Any], out: BinaryIO) -> Deferred[None]:
    """Consume until C{-n} messages were shown or the reactor stops; stops every consumer."""
    tail = Tail(out, values["total_messages"], values["print_topic"])
    consumers = [make_consumer(reactor, values, topic, tail.handler(topic)) for topic in values["topics"]]
    for consumer in consumers:
        consumer.start()

    stopping: list[Deferred[Any]] = []

    def stop_all(_: object) -> Deferred[Any]:
        # Once only: after -n messages, and again when the reactor shuts down.
        if not stopping:
            stopping.append(DeferredList([consumer.stop() for consumer in consumers], consumeErrors=True))
        stopped: Deferred[None] = Deferred()

        def release(result: object) -> object:
            stopped.callback(None)
            return result

        stopping[0].addBoth(release)
        return stopped

    def on_shutdown() -> Deferred[Any]:
        return stop_all(None)

    reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    finished: Deferred[Any] = tail.done.addCallback(stop_all)
    return finished.addCallback(lambda _: None)


def main(argv: Sequence[str] | None = None) -> None:
    """The C{nsq_tail} console script."""
    rng = random.Random()
    run_console(PROGRAM, TAIL_FLAGS, argv, lambda values: check_values(values, rng), run, sys.stdout.buffer)


if __name__ == "__main__":
    main()
