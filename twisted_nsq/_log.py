"""
Log lines in Go nsqd's format, for the console scripts.

nsqd writes C{[nsqd] 2026/11/25 03:02:31.351408 INFO: TCP: listening on 127.0.0.1:4150} to stderr
(local time, microseconds), and test harnesses read their ports from those lines. L{GoLogObserver}
renders C{twisted.logger} events that way and filters them by C{--log-level}.
"""

from __future__ import annotations

import datetime
from typing import TextIO

from twisted.logger import ILogObserver, LogEvent, LogLevel, eventAsText
from zope.interface import implementer

#: C{--log-level} words, lowest first, and the Twisted level each one lets through.
LOG_LEVELS: dict[str, LogLevel] = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "fatal": LogLevel.critical,
}

# The word Go's logger prints for each level.
_LEVEL_NAMES: dict[LogLevel, str] = {
    LogLevel.debug: "DEBUG",
    LogLevel.info: "INFO",
    LogLevel.warn: "WARNING",
    LogLevel.error: "ERROR",
    LogLevel.critical: "FATAL",
}
_DEBUG: LogLevel = LogLevel.debug
_ERROR: LogLevel = LogLevel.error
_RANK: dict[LogLevel, int] = {level: rank for rank, level in enumerate(_LEVEL_NAMES)}

#: Events from these namespaces are nsqd's own; everything else is library chatter.
OWN_NAMESPACE = "twisted_nsq"


def format_line(prefix: str, level_name: str, message: str, when: datetime.datetime) -> str:
    """One log line, newline included: C{prefix}, Go's date and time to the microsecond, level, message."""
    return f"{prefix}{when:%Y/%m/%d %H:%M:%S}.{when.microsecond:06d} {level_name}: {message}\n"


def level_named(name: str) -> LogLevel:
    """The Twisted level for a C{--log-level} word (case-insensitive)."""
    try:
        return LOG_LEVELS[name.lower()]
    except KeyError:
        raise ValueError(f"invalid log level {name!r} (expected one of: {', '.join(LOG_LEVELS)})") from None


def _effective_level(event: LogEvent) -> LogLevel:
    raw = event.get("log_level")
    level: LogLevel = raw if raw in _RANK else LogLevel.info
    namespace = event.get("log_namespace") or ""
    if isinstance(namespace, str) and namespace.startswith(OWN_NAMESPACE):
        return level
    # Twisted announces every port and factory at info level, and reports unhandled errors as
    # critical; in nsqd's log those are debug detail and errors, and FATAL means nsqd's own exit.
    if level == LogLevel.info:
        return _DEBUG
    if level == LogLevel.critical:
        return _ERROR
    return level


@implementer(ILogObserver)
class GoLogObserver:
    """
    Writes events at or above a level to a text stream as Go nsqd log lines.

    Levels print as Go's logger names them (C{DEBUG}, C{INFO}, C{WARNING}, C{ERROR}, C{FATAL}).
    Events from outside twisted-nsq are shifted: info becomes debug and critical becomes error.
    Tracebacks of logged failures follow their line.
    """

    def __init__(self, stream: TextIO, prefix: str = "[nsqd] ", level: str = "info") -> None:
        self._stream = stream
        self._prefix = prefix
        self._minimum = _RANK[level_named(level)]

    def __call__(self, event: LogEvent) -> None:
        level = _effective_level(event)
        if _RANK.get(level, 0) < self._minimum:
            return
        message = eventAsText(event, includeTimestamp=False, includeSystem=False).rstrip("\n")
        when = datetime.datetime.fromtimestamp(event.get("log_time", 0.0))
        self._stream.write(format_line(self._prefix, _LEVEL_NAMES[level], message, when))
        self._stream.flush()
