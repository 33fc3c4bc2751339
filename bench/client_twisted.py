"""
Load clients built on twisted-nsq's own client (L{twisted_nsq.client}), for the C{client-*}
workloads: they measure what an application using L{Producer} and L{Consumer} gets, next to the
raw-socket figures of L{bench.client}.

Run as C{python -m bench.client_twisted ROLE CONFIG_JSON}, with the same conversation as
L{bench.client}: print C{ready}, wait for C{go} on stdin, run, print one JSON object. Unlike the
raw clients these connect after C{go} (L{Producer} connects on its first publish), so the
connection handshake (well under a millisecond on loopback) is inside the measured time.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from twisted_nsq.client import Consumer, Message, Producer


def _address(config: dict[str, Any]) -> str:
    return f"{config['host']}:{config['port']}"


def run_publisher(reactor: Any, config: dict[str, Any]) -> Deferred[dict[str, Any]]:
    """
    L{Producer.multi_publish} of C{batch} bodies of C{body_size} bytes, keeping C{pipeline}
    batches awaiting their C{OK} at once, until C{count} messages (if non-zero) have been
    published or C{duration_s} (if non-zero) has passed.
    """
    batch = int(config["batch"])
    bodies = [b"a" * int(config["body_size"])] * batch
    topic = str(config["topic"])
    pipeline = int(config.get("pipeline", 4))
    count = int(config.get("count", 0))
    duration_ns = int(float(config.get("duration_s", 0)) * 1e9)
    if not count and not duration_ns:
        raise ValueError("the publisher needs a count or a duration_s")
    producer = Producer([_address(config)], reactor=reactor)
    done: Deferred[dict[str, Any]] = Deferred()
    cpu_start = time.process_time()
    start = time.monotonic_ns()
    deadline = start + duration_ns if duration_ns else 0
    state = {"sent": 0, "published": 0, "outstanding": 0}

    def more() -> bool:
        if count and state["sent"] >= count:
            return False
        return not (deadline and time.monotonic_ns() >= deadline)

    def send() -> None:
        state["sent"] += batch
        state["outstanding"] += 1
        producer.multi_publish(topic, bodies).addCallbacks(published, failed)

    def published(_: None) -> None:
        state["outstanding"] -= 1
        state["published"] += batch
        if more():
            send()
        elif not state["outstanding"]:
            finish()

    def failed(failure: Any) -> None:
        if not done.called:
            producer.stop()
            done.errback(failure)

    def finish() -> None:
        end = time.monotonic_ns()
        result = {
            "messages": state["published"],
            "start_ns": start,
            "end_ns": end,
            "client_cpu_s": time.process_time() - cpu_start,
        }
        producer.stop().addCallback(lambda _: done.callback(result))

    for _ in range(pipeline):
        send()
    return done


def run_consumer(reactor: Any, config: dict[str, Any]) -> Deferred[dict[str, Any]]:
    """
    A L{Consumer} with C{max_in_flight} whose handler returns at once (so every message is
    FINed) until C{count} messages arrived, or C{timeout_s} passed.
    """
    count = int(config["count"])
    received = 0
    end = 0
    done: Deferred[dict[str, Any]] = Deferred()
    cpu_start = time.process_time()
    start = time.monotonic_ns()

    def finish() -> None:
        if timer.active():
            timer.cancel()
        result = {
            "messages": received,
            "start_ns": start,
            "end_ns": end or time.monotonic_ns(),
            "client_cpu_s": time.process_time() - cpu_start,
        }
        consumer.stop().addCallback(lambda _: done.callback(result))

    def handler(message: Message) -> None:
        nonlocal received, end
        received += 1
        if received == count:
            end = time.monotonic_ns()
            # After this handler returns, so that the last message is FINed before stopping.
            reactor.callLater(0, finish)

    consumer = Consumer(
        str(config["topic"]),
        str(config["channel"]),
        handler,
        [_address(config)],
        max_in_flight=int(config["max_in_flight"]),
        reactor=reactor,
    )
    timer = reactor.callLater(float(config.get("timeout_s", 120.0)), finish)
    consumer.start()
    return done


ROLES: dict[str, Callable[[Any, dict[str, Any]], Deferred[dict[str, Any]]]] = {
    "publish": run_publisher,
    "consume": run_consumer,
}


def main(argv: list[str]) -> int:
    """Run the role named by C{argv[0]} with the JSON config in C{argv[1]}; print its result."""
    if len(argv) != 2 or argv[0] not in ROLES:
        print(f"usage: python -m bench.client_twisted {{{','.join(ROLES)}}} CONFIG_JSON", file=sys.stderr)
        return 2
    role = ROLES[argv[0]]
    config = json.loads(argv[1])
    print("ready", flush=True)
    line = sys.stdin.readline()
    if line.strip() != "go":
        print(f"expected 'go' on stdin, got {line!r}", file=sys.stderr)
        return 2

    async def run(reactor: Any) -> None:
        result = await role(reactor, config)
        print(json.dumps(result), flush=True)

    react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
