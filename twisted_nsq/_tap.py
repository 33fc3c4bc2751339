"""The C{usage.Options} every twistd plugin shares: Go-style flags parsed by L{twisted_nsq._cli}."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from twisted.python import usage

from twisted_nsq._cli import (
    ConfigError,
    FlagError,
    FlagSpec,
    HelpRequested,
    VersionRequested,
    resolve,
    usage_text,
    version_line,
)


class GoFlagOptions(usage.Options):
    """
    A daemon's command line for C{twist}/C{twistd}: parsing is delegated to the Go flag parser,
    so C{--tcp-address=:4150}, C{-snappy=false} and C{--config file.toml} work as with the
    console script. After parsing, C{daemon_options} holds the result and the mapping holds every
    flag's value. Subclasses name the C{program} and its C{flags}, and pass the function that
    turns flag values into the daemon's options.
    """

    program: ClassVar[str]
    flags: ClassVar[tuple[FlagSpec, ...]]

    def __init__(self, convert: Callable[[dict[str, object]], Any]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._convert = convert
        self.daemon_options: Any = convert({})

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        arguments = sys.argv[1:] if options is None else list(options)
        try:
            values = resolve(self.flags, arguments)
        except HelpRequested:
            print(self)
            raise SystemExit(0) from None
        except VersionRequested:
            print(version_line(self.program))
            raise SystemExit(0) from None
        except (FlagError, ConfigError) as e:
            raise usage.UsageError(str(e)) from None
        self.update(values)
        self.daemon_options = self._convert(values)

    def getUsage(self, width: int | None = None) -> str:
        return usage_text(self.program, self.flags)
