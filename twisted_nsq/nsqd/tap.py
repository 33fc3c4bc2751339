"""
C{twistd nsqd} / C{twist nsqd}: the same Go-style flags as the C{nsqd} script, as a Twisted plugin.

Logging is C{twist}'s (C{--log-format}, C{--log-level} before the plugin name); the flags after
C{nsqd} are nsqd's own.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.python import usage

from twisted_nsq._cli import (
    ConfigError,
    FlagError,
    HelpRequested,
    VersionRequested,
    resolve,
    usage_text,
    version_line,
)
from twisted_nsq.nsqd.options import NSQD_FLAGS, NSQDOptions, options_from_values

if TYPE_CHECKING:
    from twisted_nsq.nsqd.service import NSQDService


class Options(usage.Options):
    """
    nsqd's command line for C{twist}/C{twistd}: parsing is delegated to the Go flag parser, so
    C{--tcp-address=:4150}, C{-snappy=false} and C{--config nsqd.toml} work as with C{nsqd}.
    After parsing, C{nsqd_options} holds the result and the mapping holds every flag's value.
    """

    synopsis = "[nsqd flags]"
    longdesc = "Run an NSQ 1.3.0-compatible nsqd. Flags use Go's syntax; see `nsqd --help`."

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.nsqd_options = NSQDOptions()

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        arguments = sys.argv[1:] if options is None else list(options)
        try:
            values = resolve(NSQD_FLAGS, arguments)
        except HelpRequested:
            print(self)
            raise SystemExit(0) from None
        except VersionRequested:
            print(version_line("nsqd"))
            raise SystemExit(0) from None
        except (FlagError, ConfigError) as e:
            raise usage.UsageError(str(e)) from None
        self.update(values)
        self.nsqd_options = options_from_values(values)

    def getUsage(self, width: int | None = None) -> str:
        return usage_text("nsqd", NSQD_FLAGS)


def makeService(options: Options) -> NSQDService:
    """An L{NSQDService} on the global reactor (the one C{twist} installed)."""
    from twisted.internet import reactor

    from twisted_nsq._runtime import tune_gc
    from twisted_nsq.nsqd.service import NSQDService

    tune_gc()
    return NSQDService(options.nsqd_options, reactor)
