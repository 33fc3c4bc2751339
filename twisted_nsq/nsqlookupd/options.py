"""
nsqlookupd's settings: L{NSQLookupdOptions} with Go nsqlookupd 1.3.0's defaults, the flag table
that fills it from a Go-style command line or C{--config} TOML file, and the start-up checks.

Durations are float seconds.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

import attrs

from twisted_nsq._cli import CONFIG_FLAG, VERSION_FLAG, FlagSpec, Kind
from twisted_nsq._log import LOG_LEVELS
from twisted_nsq._options import (
    check_log_level,
    check_not_negative,
    flag_maker,
    options_from,
    parse_options_from,
)


def _hostname() -> str:
    return socket.gethostname()


@attrs.define
class NSQLookupdOptions:
    """Every nsqlookupd setting, named after its flag (C{--tombstone-lifetime} is C{tombstone_lifetime})."""

    log_level: str = "info"
    log_prefix: str = "[nsqlookupd] "
    verbose: bool = False

    tcp_address: str = "0.0.0.0:4160"
    http_address: str = "0.0.0.0:4161"
    #: Returned to nsqd in the IDENTIFY reply; nsqd makes its HTTP calls to lookupd there.
    broadcast_address: str = attrs.field(factory=_hostname)

    #: Seconds after its last PING (or IDENTIFY) a producer stops being listed by /lookup and /nodes.
    inactive_producer_timeout: float = 300.0
    #: Seconds a producer tombstoned for a topic stays hidden from that topic's /lookup.
    tombstone_lifetime: float = 45.0

    def validate(self) -> None:
        """
        Check the settings before nsqlookupd starts.

        @raise ValueError: with a message naming the flag, for the first setting that is wrong.
        """
        check_log_level(self.log_level)
        check_not_negative(self, ("inactive_producer_timeout", "tombstone_lifetime"))


def _flags() -> tuple[FlagSpec, ...]:
    flag = flag_maker(NSQLookupdOptions())
    STR, DUR, BOOL = Kind.STRING, Kind.DURATION, Kind.BOOL
    return (
        FlagSpec(VERSION_FLAG, BOOL, False, "print the version and exit", in_config=False),
        FlagSpec(CONFIG_FLAG, STR, "", "path to a TOML config file", in_config=False),
        flag("log-level", STR, "log verbosity: debug, info, warn, error or fatal", choices=tuple(LOG_LEVELS)),
        flag("log-prefix", STR, "prefix of every log line"),
        flag("verbose", BOOL, "deprecated, has no effect (use --log-level)"),
        flag("tcp-address", STR, "<addr>:<port> to listen on for TCP clients (nsqd registrations)"),
        flag("http-address", STR, "<addr>:<port> to listen on for HTTP clients"),
        flag(
            "broadcast-address",
            STR,
            "address of this lookupd node, returned to nsqd in IDENTIFY (defaults to the OS hostname)",
        ),
        flag(
            "inactive-producer-timeout",
            DUR,
            "time a producer stays in the active list after its last ping",
        ),
        flag(
            "tombstone-lifetime",
            DUR,
            "time a producer stays tombstoned for a topic while its registration remains",
        ),
    )


#: nsqlookupd's flags, in the order of its usage text; defaults come from L{NSQLookupdOptions}.
NSQLOOKUPD_FLAGS: tuple[FlagSpec, ...] = _flags()


def options_from_values(values: dict[str, object]) -> NSQLookupdOptions:
    """L{NSQLookupdOptions} from L{twisted_nsq._cli.resolve}'s result (see L{options_from})."""
    return options_from(NSQLookupdOptions, values)


def parse_nsqlookupd_args(argv: Sequence[str]) -> NSQLookupdOptions:
    """An nsqlookupd command line as L{NSQLookupdOptions}, not yet validated (see L{parse_options_from})."""
    return parse_options_from(NSQLookupdOptions, NSQLOOKUPD_FLAGS, argv)
