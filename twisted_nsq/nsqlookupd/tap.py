"""
C{twistd nsqlookupd} / C{twist nsqlookupd}: the same Go-style flags as the C{nsqlookupd} script, as a Twisted
plugin.

Logging is C{twist}'s (C{--log-format}, C{--log-level} before the plugin name); the flags after
C{nsqlookupd} are nsqlookupd's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted_nsq._tap import GoFlagOptions
from twisted_nsq.nsqlookupd.options import NSQLOOKUPD_FLAGS, NSQLookupdOptions, options_from_values

if TYPE_CHECKING:
    from twisted_nsq.nsqlookupd.service import NSQLookupdService


class Options(GoFlagOptions):
    """nsqlookupd's command line for C{twist}/C{twistd} (see L{GoFlagOptions})."""

    synopsis = "[nsqlookupd flags]"
    longdesc = "Run an NSQ 1.3.0-compatible nsqlookupd. Flags use Go's syntax; see `nsqlookupd --help`."
    program = "nsqlookupd"
    flags = NSQLOOKUPD_FLAGS

    def __init__(self) -> None:
        super().__init__(options_from_values)

    @property
    def nsqlookupd_options(self) -> NSQLookupdOptions:
        """The parsed options."""
        options: NSQLookupdOptions = self.daemon_options
        return options


def makeService(options: Options) -> NSQLookupdService:
    """An L{NSQLookupdService} on the global reactor (the one C{twist} installed)."""
    from twisted.internet import reactor

    from twisted_nsq._runtime import tune_gc
    from twisted_nsq.nsqlookupd.service import NSQLookupdService

    tune_gc()
    return NSQLookupdService(options.nsqlookupd_options, reactor)
