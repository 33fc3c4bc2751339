"""
C{twistd nsqlookupd} / C{twist nsqlookupd}: the same Go-style flags as the C{nsqlookupd} script,
as a Twisted plugin.

Logging is C{twist}'s (C{--log-format}, C{--log-level} before the plugin name); the flags after
C{nsqlookupd} are nsqlookupd's own.
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
from twisted_nsq.nsqlookupd.options import NSQLOOKUPD_FLAGS, NSQLookupdOptions, options_from_values

if TYPE_CHECKING:
    from twisted_nsq.nsqlookupd.service import NSQLookupdService


class Options(usage.Options):
    """
    nsqlookupd's command line for C{twist}/C{twistd}: parsing is delegated to the Go flag parser,
    so C{--tcp-address=:4160}, C{-tombstone-lifetime 10s} and C{--config lookupd.toml} work as
    with C{nsqlookupd}. After parsing, C{nsqlookupd_options} holds the result and the mapping
    holds every flag's value.
    """

    synopsis = "[nsqlookupd flags]"
    longdesc = "Run an NSQ 1.3.0-compatible nsqlookupd. Flags use Go's syntax; see `nsqlookupd --help`."

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.nsqlookupd_options = NSQLookupdOptions()

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        arguments = sys.argv[1:] if options is None else list(options)
        try:
            values = resolve(NSQLOOKUPD_FLAGS, arguments)
        except HelpRequested:
            print(self)
            raise SystemExit(0) from None
        except VersionRequested:
            print(version_line("nsqlookupd"))
            raise SystemExit(0) from None
        except (FlagError, ConfigError) as e:
            raise usage.UsageError(str(e)) from None
        self.update(values)
        self.nsqlookupd_options = options_from_values(values)

    def getUsage(self, width: int | None = None) -> str:
        return usage_text("nsqlookupd", NSQLOOKUPD_FLAGS)


def makeService(options: Options) -> NSQLookupdService:
    """An L{NSQLookupdService} on the global reactor (the one C{twist} installed)."""
    from twisted.internet import reactor

    from twisted_nsq._runtime import tune_gc
    from twisted_nsq.nsqlookupd.service import NSQLookupdService

    tune_gc()
    return NSQLookupdService(options.nsqlookupd_options, reactor)
