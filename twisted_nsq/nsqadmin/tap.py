"""
C{twistd nsqadmin} / C{twist nsqadmin}: the same Go-style flags as the C{nsqadmin} script, as a
Twisted plugin.

Logging is C{twist}'s (C{--log-format}, C{--log-level} before the plugin name); the flags after
C{nsqadmin} are nsqadmin's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted_nsq._tap import GoFlagOptions
from twisted_nsq.nsqadmin.options import NSQADMIN_FLAGS, NSQAdminOptions, options_from_values

if TYPE_CHECKING:
    from twisted_nsq.nsqadmin.service import NSQAdminService


class Options(GoFlagOptions):
    """nsqadmin's command line for C{twist}/C{twistd} (see L{GoFlagOptions})."""

    synopsis = "[nsqadmin flags]"
    longdesc = "Run an NSQ 1.3.0-compatible nsqadmin. Flags use Go's syntax; see `nsqadmin --help`."
    program = "nsqadmin"
    flags = NSQADMIN_FLAGS

    def __init__(self) -> None:
        super().__init__(options_from_values)

    @property
    def nsqadmin_options(self) -> NSQAdminOptions:
        """The parsed options."""
        options: NSQAdminOptions = self.daemon_options
        return options


def makeService(options: Options) -> NSQAdminService:
    """An L{NSQAdminService} on the global reactor (the one C{twist} installed)."""
    from twisted.internet import reactor

    from twisted_nsq._runtime import tune_gc
    from twisted_nsq.nsqadmin.service import NSQAdminService

    tune_gc()
    return NSQAdminService(options.nsqadmin_options, reactor)
