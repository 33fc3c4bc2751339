"""
What the utilities share: the C{--nsqd-tcp-address}, C{--lookupd-http-address},
C{--consumer-opt}/C{--producer-opt}, C{--max-in-flight}, C{--mode} and C{--version} flags, the
checks and the consumer built from them, and turning C{k,v} options into keyword arguments for
L{Consumer} and L{Producer}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from twisted_nsq._cli import (
    CONFIG_FLAG,
    VERSION_FLAG,
    FlagError,
    FlagSpec,
    Kind,
    parse_go_bool,
    parse_go_duration,
    parse_go_float,
    parse_go_int,
)
from twisted_nsq._version import VERSION_STRING
from twisted_nsq.apps._hostpool import MODES
from twisted_nsq.client import USER_AGENT, ConnectionOptions, Consumer, ConsumerOptions, Message

NSQD_TCP_ADDRESS = FlagSpec(
    "nsqd-tcp-address",
    Kind.STRING_LIST,
    [],
    "nsqd TCP address (may be given multiple times)",
    attr="nsqd_tcp_addresses",
)
LOOKUPD_HTTP_ADDRESS = FlagSpec(
    "lookupd-http-address",
    Kind.STRING_LIST,
    [],
    "lookupd HTTP address (may be given multiple times)",
    attr="lookupd_http_addresses",
)
CONSUMER_OPT = FlagSpec(
    "consumer-opt",
    Kind.STRING_LIST,
    [],
    "option to passthrough to the consumer (may be given multiple times, e.g. max_attempts,5)",
)
PRODUCER_OPT = FlagSpec(
    "producer-opt",
    Kind.STRING_LIST,
    [],
    "option to passthrough to the producer (may be given multiple times, e.g. snappy,true)",
)
VERSION = FlagSpec(VERSION_FLAG, Kind.BOOL, False, "print version string")
#: C{--config FILE}: the same flags from a TOML file (keys are flag names with underscores);
#: the command line wins over the file. Go's tools lack it; every twisted-nsq program takes it.
CONFIG = FlagSpec(CONFIG_FLAG, Kind.STRING, "", "path to a TOML config file", in_config=False)
MAX_IN_FLIGHT = FlagSpec("max-in-flight", Kind.INT, 200, "max number of messages to allow in flight")
MODE = FlagSpec(
    "mode",
    Kind.STRING,
    "hostpool",
    "the upstream request mode options: round-robin, hostpool (default), epsilon-greedy",
    choices=MODES,
)


def consumer_flags(*own: FlagSpec, producer: bool = False) -> tuple[FlagSpec, ...]:
    """
    A consuming utility's flag table: its C{own} flags, then where to consume from, the
    C{--consumer-opt} (and C{--producer-opt} when it also publishes), C{--version} and C{--config}.
    """
    return (
        *own,
        NSQD_TCP_ADDRESS,
        LOOKUPD_HTTP_ADDRESS,
        CONSUMER_OPT,
        *((PRODUCER_OPT,) if producer else ()),
        VERSION,
        CONFIG,
    )


def check_sources(nsqd: Sequence[str], lookupd: Sequence[str], nsqd_flag: str = "nsqd-tcp-address") -> None:
    """
    Go's check that exactly one of the nsqd addresses and the lookupd HTTP addresses is given.

    @raise FlagError: with Go's message, naming C{--nsqd_flag} and C{--lookupd-http-address}.
    """
    if not nsqd and not lookupd:
        raise FlagError(f"--{nsqd_flag} or --lookupd-http-address required")
    if nsqd and lookupd:
        raise FlagError(f"use --{nsqd_flag} or --lookupd-http-address not both")


def user_agent(program: str) -> str:
    """The user agent a utility identifies with to nsqd: C{nsq_to_nsq/1.3.0-twisted twisted-nsq/...}."""
    return f"{program}/{VERSION_STRING} {USER_AGENT}"


def run_until_shutdown(reactor: Any, stop: Callable[[], Deferred[Any]]) -> Deferred[None]:
    """
    What a forwarding utility's C{run} returns: a Deferred that fires once the reactor shuts down,
    after C{stop} (called before shutdown) has stopped the utility's consumers and producers.
    """
    finished: Deferred[None] = Deferred()

    def on_shutdown() -> Deferred[Any]:
        return stop().addBoth(lambda _: None if finished.called else finished.callback(None))

    reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    return finished


def make_consumer(
    reactor: Any, values: dict[str, Any], topic: str, handler: Callable[[Message], Any]
) -> Consumer:
    """
    An unstarted consumer of C{topic} on the checked flags' channel, with their addresses,
    C{--max-in-flight} and C{--consumer-opt} options.
    """
    return Consumer(
        topic,
        values["channel"],
        handler,
        values["nsqd_tcp_addresses"],
        values["max_in_flight"],
        lookupd_http_addresses=values["lookupd_http_addresses"],
        reactor=reactor,
        **values["consumer_options"],
    )


# The options a k,v pair may set, with the type of the value it takes.
_CONNECTION_FIELDS = {f.name: f for f in attrs.fields(ConnectionOptions)}
_CONSUMER_FIELDS = {f.name: f for f in attrs.fields(ConsumerOptions)}
# Fields whose values are objects, not text: no command line can give them.
_NOT_TEXT = frozenset({"tls_options"})


def _convert(name: str, default: object, text: str) -> object:
    """Turn C{text} into a value of the type of the option's C{default}."""
    if isinstance(default, bool):
        return parse_go_bool(text)
    if isinstance(default, int):
        return parse_go_int(text)
    if isinstance(default, float):
        # go-nsq's durations are Go durations; a bare number is taken as seconds.
        try:
            return parse_go_float(text)
        except ValueError:
            return parse_go_duration(text)
    return text


def parse_options(pairs: Iterable[str], flag: str, *, consumer: bool) -> dict[str, object]:
    """
    Turn C{--consumer-opt}/C{--producer-opt} values (C{"k,v"}, C{"k"} meaning C{true}) into
    keyword arguments: L{ConnectionOptions} fields, and L{ConsumerOptions} fields when
    C{consumer}. Dashes in names are read as underscores.

    @raise FlagError: an unknown option or a value that does not parse.
    """
    fields = dict(_CONNECTION_FIELDS)
    if consumer:
        fields.update(_CONSUMER_FIELDS)
    result: dict[str, object] = {}
    for pair in pairs:
        name, has_value, text = pair.partition(",")
        name = name.strip().replace("-", "_")
        field = fields.get(name)
        if field is None or name in _NOT_TEXT:
            raise FlagError(f"invalid value {pair!r} for flag -{flag}: unknown option {name!r}")
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = ""
        try:
            result[name] = _convert(name, default, text if has_value else "true")
        except ValueError as e:
            raise FlagError(f"invalid value {pair!r} for flag -{flag}: {e}") from None
    return result


__all__ = [
    "CONFIG",
    "CONSUMER_OPT",
    "LOOKUPD_HTTP_ADDRESS",
    "MAX_IN_FLIGHT",
    "MODE",
    "NSQD_TCP_ADDRESS",
    "PRODUCER_OPT",
    "VERSION",
    "check_sources",
    "consumer_flags",
    "make_consumer",
    "parse_options",
    "run_until_shutdown",
    "user_agent",
]
