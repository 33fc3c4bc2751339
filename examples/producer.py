"""
Publish messages to nsqd with twisted-nsq's L{Producer}, then exit.

    python examples/producer.py --nsqd 127.0.0.1:4150 --topic events --count 1000

Sends the first message with PUB, the rest with MPUB batches of up to C{--batch}, keeping a few
batches in flight on the producer's one pipelined connection, and one DPUB delivered in 5 s.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet.defer import gatherResults
from twisted.internet.task import react

from twisted_nsq.client import Producer


async def main(reactor: Any, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--nsqd", action="append", help="nsqd TCP address (repeatable; default 127.0.0.1:4150)"
    )
    parser.add_argument("--topic", default="events")
    parser.add_argument("--count", type=int, default=1000, help="how many messages (default %(default)s)")
    parser.add_argument("--batch", type=int, default=200, help="bodies per MPUB (default %(default)s)")
    args = parser.parse_args(argv)

    producer = Producer(args.nsqd or ["127.0.0.1:4150"], reactor=reactor)
    try:
        await producer.publish(args.topic, b"message 0")
        bodies = [f"message {n}".encode() for n in range(1, args.count)]
        batches = [bodies[i : i + args.batch] for i in range(0, len(bodies), args.batch)]
        # Publishes are pipelined: waiting for several at once costs no extra round trips.
        for start in range(0, len(batches), 4):
            await gatherResults(
                [producer.multi_publish(args.topic, batch) for batch in batches[start : start + 4]],
                consumeErrors=True,
            )
        await producer.deferred_publish(args.topic, b"five seconds later", 5000)
        print(f"published {args.count + 1} messages to {args.topic!r}")
    finally:
        await producer.stop()


if __name__ == "__main__":
    react(lambda reactor: main(reactor, sys.argv[1:]))
