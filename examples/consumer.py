"""
Print the messages of a topic's channel with twisted-nsq's L{Consumer} until interrupted (or
until C{--count} messages).

    python examples/consumer.py --nsqd 127.0.0.1:4150 --topic events --channel printer
    python examples/consumer.py --lookupd 127.0.0.1:4161 --topic events --channel printer

A message whose body is C{fail} is requeued (so you can watch backoff and, after
C{--max-attempts} deliveries, the C{giving_up} hook); every other one is finished when the handler
returns. On Ctrl-C the consumer stops cleanly: CLS, then waiting for messages in flight.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from twisted_nsq.client import Consumer, Message


async def main(reactor: Any, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nsqd", action="append", default=[], help="nsqd TCP address (repeatable)")
    parser.add_argument("--lookupd", action="append", default=[], help="nsqlookupd HTTP address (repeatable)")
    parser.add_argument("--topic", default="events")
    parser.add_argument("--channel", default="printer")
    parser.add_argument("--max-in-flight", type=int, default=10)
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--count", type=int, default=0, help="exit after this many messages (0: never)")
    args = parser.parse_args(argv)
    if not args.nsqd and not args.lookupd:
        args.nsqd = ["127.0.0.1:4150"]

    enough: Deferred[None] = Deferred()
    received = 0

    def handle(message: Message) -> None:
        nonlocal received
        if message.body == b"fail":
            # Explicit requeue: a handler that raises also requeues, and logs a traceback.
            print(f"requeueing {message.id.decode()} (attempt {message.attempts})")
            message.requeue(delay=1.0)
            return
        received += 1
        print(f"{message.id.decode()} attempt {message.attempts}: {message.body!r}")
        if received == args.count:
            enough.callback(None)

    def giving_up(message: Message) -> None:
        print(f"giving up on {message.id.decode()} after {message.attempts} attempts")

    consumer = Consumer(
        args.topic,
        args.channel,
        handle,
        args.nsqd,
        max_in_flight=args.max_in_flight,
        lookupd_http_addresses=args.lookupd,
        max_attempts=args.max_attempts,
        giving_up=giving_up,
        reactor=reactor,
    )
    # Ctrl-C stops the reactor; shutdown waits for the Deferred that consumer.stop() returns.
    reactor.addSystemEventTrigger("before", "shutdown", consumer.stop)
    consumer.start()
    await enough
    await consumer.stop()


if __name__ == "__main__":
    react(lambda reactor: main(reactor, sys.argv[1:]))
