"""
Tests for L{twisted_nsq._log}: Go nsqd's log line format and C{--log-level} filtering.
"""

from __future__ import annotations

import datetime
import io
import re

from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq._log import LOG_LEVELS, GoLogObserver, format_line, level_named

LINE = re.compile(r"^\[nsqd\] \d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6} (?P<level>[A-Z]+): (?P<message>.*)$")


class FormatTests(SynchronousTestCase):
    def test_format_line(self) -> None:
        """Prefix, Go's date and time with microseconds, the level and the message."""
        when = datetime.datetime(2026, 11, 25, 3, 2, 31, 351408)
        self.assertEqual(
            format_line("[nsqd] ", "INFO", "TCP: listening on 127.0.0.1:4150", when),
            "[nsqd] 2026/11/25 03:02:31.351408 INFO: TCP: listening on 127.0.0.1:4150\n",
        )
        when = datetime.datetime(2026, 1, 2, 3, 4, 5, 6)
        self.assertEqual(format_line("", "FATAL", "x", when), "2026/01/02 03:04:05.000006 FATAL: x\n")

    def test_level_named(self) -> None:
        """The C{--log-level} words, in any case; anything else is refused."""
        self.assertEqual(level_named("debug"), LogLevel.debug)
        self.assertEqual(level_named("WARN"), LogLevel.warn)
        self.assertEqual(level_named("fatal"), LogLevel.critical)
        self.assertEqual(list(LOG_LEVELS), ["debug", "info", "warn", "error", "fatal"])
        self.assertRaises(ValueError, level_named, "warning")


class ObserverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.stream = io.StringIO()
        self.publisher = LogPublisher()

    def observe(self, level: str = "info", prefix: str = "[nsqd] ") -> None:
        self.publisher.addObserver(GoLogObserver(self.stream, prefix=prefix, level=level))

    def logger(self, namespace: str = "twisted_nsq.nsqd.service") -> Logger:
        return Logger(namespace=namespace, observer=self.publisher)

    def lines(self) -> list[tuple[str, str]]:
        result = []
        for line in self.stream.getvalue().splitlines():
            match = LINE.match(line)
            if match is not None:
                result.append((match["level"], match["message"]))
        return result

    def test_levels(self) -> None:
        """Each Twisted level prints under Go's name for it."""
        self.observe("debug")
        log = self.logger()
        log.debug("d")
        log.info("TCP: listening on {address}", address="127.0.0.1:4150")
        log.warn("w")
        log.error("e")
        log.critical("c")
        self.assertEqual(
            self.lines(),
            [
                ("DEBUG", "d"),
                ("INFO", "TCP: listening on 127.0.0.1:4150"),
                ("WARNING", "w"),
                ("ERROR", "e"),
                ("FATAL", "c"),
            ],
        )

    def test_filter(self) -> None:
        """Events below C{--log-level} are dropped."""
        self.observe("warn")
        log = self.logger()
        log.debug("d")
        log.info("i")
        log.warn("w")
        log.error("e")
        self.assertEqual(self.lines(), [("WARNING", "w"), ("ERROR", "e")])

    def test_fatal_only(self) -> None:
        self.observe("fatal")
        log = self.logger()
        log.error("e")
        log.critical("c")
        self.assertEqual(self.lines(), [("FATAL", "c")])

    def test_prefix(self) -> None:
        """C{--log-prefix} starts every line."""
        self.observe(prefix="[custom] ")
        self.logger().info("hello")
        self.assertTrue(self.stream.getvalue().startswith("[custom] "))
        self.assertTrue(self.stream.getvalue().endswith(" INFO: hello\n"))

    def test_foreign_events(self) -> None:
        """Other libraries' info is debug detail and their critical is an error, not nsqd's FATAL."""
        self.observe("info")
        foreign = self.logger("twisted.internet.tcp")
        foreign.info("Starting factory")
        foreign.critical("Unhandled error")
        self.assertEqual(self.lines(), [("ERROR", "Unhandled error")])

    def test_foreign_debug(self) -> None:
        self.observe("debug")
        self.logger("twisted.web").info("GET /ping")
        self.assertEqual(self.lines(), [("DEBUG", "GET /ping")])

    def test_traceback(self) -> None:
        """A logged failure's traceback follows its line."""
        self.observe()
        log = self.logger()
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            log.failure("shutdown did not complete")
        text = self.stream.getvalue()
        self.assertEqual(self.lines()[0], ("FATAL", "shutdown did not complete"))
        self.assertIn("ZeroDivisionError", text)
        self.assertTrue(text.endswith("\n"))
        self.assertFalse(text.endswith("\n\n"))
