"""
C{twistd nsqd} / C{twist nsqd}: the same Go-style flags as the C{nsqd} script, as a Twisted
plugin.

Logging is C{twist}'s (C{--log-format}, C{--log-level} before the plugin name); the flags after
C{nsqd} are nsqd's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted_nsq._tap import GoFlagOptions
from twisted_nsq.nsqd.options import NSQD_FLAGS, NSQDOptions, options_from_values

if TYPE_CHECKING:
    from twisted_nsq.nsqd.service import NSQDService


class Options(GoFlagOptions):
    """nsqd's command line for C{twist}/C{twistd} (see L{GoFlagOptions})."""

    synopsis = "[nsqd flags]"
    longdesc = "Run an NSQ 1.3.0-compatible nsqd. Flags use Go's syntax; see `nsqd --help`."
    program = "nsqd"
    flags = NSQD_FLAGS

    def __init__(self) -> None:
        super().__init__(options_from_values)

    @property
    def nsqd_options(self) -> NSQDOptions:
        """The parsed options."""
        options: NSQDOptions = self.daemon_options
        return options


def makeService(options: Options) -> NSQDService:
    """An L{NSQDService} on the global reactor (the one C{twist} installed)."""
    from twisted.internet import reactor

    from twisted_nsq._runtime import tune_gc
    from twisted_nsq.nsqd.service import NSQDService

    tune_gc()
    return NSQDService(options.nsqd_options, reactor)
