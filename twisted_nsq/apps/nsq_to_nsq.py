"""
C{nsq_to_nsq}: consume topics and republish each message over TCP to one of the
C{--destination-nsqd-tcp-address} (chosen by C{--mode}), as Go's C{nsq_to_nsq} does. A message is
finished only once the destination acknowledged it, and requeued (with backoff) when the publish
fails. Optional JSON filtering and field whitelisting (see L{twisted_nsq.apps._jsonfilter}).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from twisted_nsq._cli import FlagError, FlagSpec, Kind
from twisted_nsq.apps._common import (
    MAX_IN_FLIGHT,
    MODE,
    check_sources,
    consumer_flags,
    make_consumer,
    parse_options,
    run_until_shutdown,
    user_agent,
)
from twisted_nsq.apps._console import run_console
from twisted_nsq.apps._hostpool import Pick, RoundRobin, make_selector
from twisted_nsq.apps._jsonfilter import filter_message
from twisted_nsq.apps._status import GoLog, HostTimers
from twisted_nsq.client import Message, Producer
from twisted_nsq.client.producer import parse_address
from twisted_nsq.wire.names import is_valid_channel_name, is_valid_topic_name

PROGRAM = "nsq_to_nsq"

NSQ_FLAGS: tuple[FlagSpec, ...] = consumer_flags(
    FlagSpec("topic", Kind.STRING_LIST, [], "nsq topic (may be given multiple times)", attr="topics"),
    FlagSpec("channel", Kind.STRING, "nsq_to_nsq", "nsq channel"),
    FlagSpec(
        "destination-topic",
        Kind.STRING,
        "",
        "use this destination topic for all consumed topics (default is consumed topic name)",
    ),
    MAX_IN_FLIGHT,
    FlagSpec(
        "status-every",
        Kind.INT,
        250,
        "the # of requests between logging status (per destination), 0 disables",
    ),
    MODE,
    FlagSpec(
        "destination-nsqd-tcp-address",
        Kind.STRING_LIST,
        [],
        "destination nsqd TCP address (may be given multiple times)",
        attr="destination_nsqd_tcp_addresses",
    ),
    FlagSpec(
        "require-json-field",
        Kind.STRING,
        "",
        "for JSON messages: only pass messages that contain this field",
    ),
    FlagSpec(
        "require-json-value",
        Kind.STRING,
        "",
        "for JSON messages: only pass messages in which the required field has this value",
    ),
    FlagSpec(
        "whitelist-json-field",
        Kind.STRING_LIST,
        [],
        "for JSON messages: pass this field (may be given multiple times)",
        attr="whitelist_json_fields",
    ),
    producer=True,
)


def check_values(values: dict[str, Any]) -> dict[str, Any]:
    """
    Validate the flags the way Go's C{nsq_to_nsq} does, in its order, and add the parsed
    C{consumer_options} and C{producer_options}.

    @raise FlagError: a missing, bad or contradictory flag.
    """
    if not values["topics"] or not values["channel"]:
        raise FlagError("--topic and --channel are required")
    for topic in values["topics"]:
        if not is_valid_topic_name(topic):
            raise FlagError("--topic is invalid")
    destination = values["destination_topic"]
    if destination and not is_valid_topic_name(destination):
        raise FlagError("--destination-topic is invalid")
    if not is_valid_channel_name(values["channel"]):
        raise FlagError("--channel is invalid")
    check_sources(values["nsqd_tcp_addresses"], values["lookupd_http_addresses"])
    if not values["destination_nsqd_tcp_addresses"]:
        raise FlagError("--destination-nsqd-tcp-address required")
    for address in values["destination_nsqd_tcp_addresses"]:
        try:
            parse_address(address)
        except ValueError as e:
            raise FlagError(f"--destination-nsqd-tcp-address: {e}") from None
    if values["max_in_flight"] < 1:
        raise FlagError("--max-in-flight must be at least 1")
    agent = user_agent(PROGRAM)
    consumer_options = parse_options(values["consumer_opt"], "consumer-opt", consumer=True)
    consumer_options.setdefault("user_agent", agent)
    producer_options = parse_options(values["producer_opt"], "producer-opt", consumer=False)
    producer_options.setdefault("user_agent", agent)
    values["consumer_options"] = consumer_options
    values["producer_options"] = producer_options
    return values


class Republisher:
    """
    The consumers' handlers: filter each message, publish it through the producer of the address
    the selector picks, and answer with a Deferred that fires once the destination acknowledged it
    (finish) or fails when the publish failed (requeue).

    @param producers: one producer per destination address, by address.
    """

    def __init__(
        self,
        producers: Mapping[str, Any],
        selector: RoundRobin,
        clock: IReactorTime,
        *,
        require_field: str,
        require_value: str,
        whitelist: Sequence[str],
        log: Callable[[str], None],
        status_every: int,
    ) -> None:
        self._producers = producers
        self._selector = selector
        self._clock = clock
        self._require_field = require_field
        self._require_value = require_value
        self._whitelist = list(whitelist)
        self._log = log
        self._timers = HostTimers(list(producers), status_every, log)

    def handler(self, destination_topic: str) -> Callable[[Message], Deferred[None] | None]:
        """The handler for a consumer whose messages go to C{destination_topic}."""

        def handle(message: Message) -> Deferred[None] | None:
            return self.republish(message.body, destination_topic)

        return handle

    def republish(self, body: bytes, topic: str) -> Deferred[None] | None:
        """C{None} to finish at once (filtered out), else the publish; raises to requeue."""
        verdict = filter_message(body, self._require_field, self._require_value, self._whitelist)
        if verdict.error is not None:
            self._log(verdict.error)
        if verdict.body is None:
            if verdict.requeue:
                raise RuntimeError(verdict.error or "requeue")
            return None
        pick = self._selector.get()
        d: Deferred[None] = self._producers[pick.host].publish(topic, verdict.body)
        return d.addBoth(self._answered, pick)

    def _answered(self, result: object, pick: Pick) -> object:
        ok = not isinstance(result, Failure)
        pick.mark(ok)
        self._timers.status(pick.host, self._clock.seconds() - pick.started)
        return result


def run(reactor: Any, values: dict[str, Any], stderr: TextIO) -> Deferred[None]:
    """Republish until the reactor stops; then stop the consumers, then the producers."""
    addresses = values["destination_nsqd_tcp_addresses"]
    producers = {
        address: Producer([address], reactor=reactor, **values["producer_options"]) for address in addresses
    }
    rng = random.Random()
    republisher = Republisher(
        producers,
        make_selector(values["mode"], addresses, reactor, rng),
        reactor,
        require_field=values["require_json_field"],
        require_value=values["require_json_value"],
        whitelist=values["whitelist_json_fields"],
        log=GoLog(reactor, stderr),
        status_every=values["status_every"],
    )
    consumers = [
        make_consumer(reactor, values, topic, republisher.handler(values["destination_topic"] or topic))
        for topic in values["topics"]
    ]
    for consumer in consumers:
        consumer.start()

    def stop_producers(_: object) -> Deferred[Any]:
        # After the consumers: their stop waits for the acks of the publishes in flight.
        return DeferredList([producer.stop() for producer in producers.values()], consumeErrors=True)

    def stop() -> Deferred[Any]:
        stopped: Deferred[Any] = DeferredList([consumer.stop() for consumer in consumers], consumeErrors=True)
        return stopped.addCallback(stop_producers)

    return run_until_shutdown(reactor, stop)


def main(argv: Sequence[str] | None = None) -> None:
    """The C{nsq_to_nsq} console script."""
    run_console(PROGRAM, NSQ_FLAGS, argv, check_values, run, sys.stderr)


if __name__ == "__main__":
    main()
