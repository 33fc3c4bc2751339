"""
Tests for L{twisted_nsq._cli}: Go flag syntax, Go values, C{--config} TOML, usage and exits.
"""

from __future__ import annotations

import io
import os
import platform
import signal
from collections.abc import Callable
from types import FrameType

from twisted.internet.error import ReactorNotRunning
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq._cli import (
    CONFIG_FLAG,
    VERSION_FLAG,
    ConfigError,
    FlagError,
    FlagSpec,
    HelpRequested,
    Kind,
    VersionRequested,
    format_go_duration,
    load_config,
    parse_command_line,
    parse_go_bool,
    parse_go_duration,
    parse_go_duration_ns,
    parse_go_float,
    parse_go_int,
    parse_or_exit,
    resolve,
    stop_on_signals,
    usage_text,
    version_line,
)

SPECS = (
    FlagSpec(VERSION_FLAG, Kind.BOOL, False, "print the version", in_config=False),
    FlagSpec(CONFIG_FLAG, Kind.STRING, "", "config file", in_config=False),
    FlagSpec("address", Kind.STRING, "0.0.0.0:1", "where to listen"),
    FlagSpec("count", Kind.INT, 7, "how many"),
    FlagSpec("ratio", Kind.FLOAT, 0.5, "a ratio"),
    FlagSpec("timeout", Kind.DURATION, 60.0, "how long"),
    FlagSpec("snappy", Kind.BOOL, True, "compress"),
    FlagSpec("verbose", Kind.BOOL, False, "talk more"),
    FlagSpec("peer", Kind.STRING_LIST, [], "a peer (repeatable)", attr="peers", config_key="all_peers"),
    FlagSpec("percentile", Kind.FLOAT_LIST, [], "percentiles", attr="percentiles"),
    FlagSpec("level", Kind.STRING, "info", "log level", choices=("debug", "info", "warn")),
    FlagSpec("tls-required", Kind.BOOL_OR_CHOICE, "false", "require TLS", choices=("tcp-https",)),
    FlagSpec("node-id", Kind.INT, 3, "node", config_key="id"),
)


def parsed(*argv: str) -> dict[str, object]:
    return parse_command_line(SPECS, argv).values


class SyntaxTests(SynchronousTestCase):
    """Every spelling Go's flag package accepts."""

    def test_value_forms(self) -> None:
        """C{-f v}, C{-f=v}, C{--f v} and C{--f=v} all set a flag."""
        for argv in (
            ["-address", "h:1"],
            ["-address=h:1"],
            ["--address", "h:1"],
            ["--address=h:1"],
        ):
            self.assertEqual(parsed(*argv), {"address": "h:1"}, argv)

    def test_value_with_equals(self) -> None:
        """Only the first C{=} separates the name; the value may hold more."""
        self.assertEqual(parsed("--address=a=b"), {"address": "a=b"})

    def test_empty_value(self) -> None:
        """C{--f=} sets the empty string."""
        self.assertEqual(parsed("--address="), {"address": ""})

    def test_value_that_looks_like_a_flag(self) -> None:
        """A non-boolean flag takes the next argument whatever it looks like."""
        self.assertEqual(parsed("--address", "--verbose"), {"address": "--verbose"})

    def test_bare_boolean(self) -> None:
        """A bare boolean flag is true, and does not take the next argument."""
        result = parse_command_line(SPECS, ["--verbose", "false", "--count=1"])
        self.assertEqual(result.values, {"verbose": True})
        self.assertEqual(result.arguments, ["false", "--count=1"])

    def test_boolean_values(self) -> None:
        """C{--f=false} and Go's other boolean words set a boolean flag."""
        self.assertEqual(parsed("--snappy=false"), {"snappy": False})
        self.assertEqual(parsed("-snappy=0"), {"snappy": False})
        self.assertEqual(parsed("-snappy=F"), {"snappy": False})
        self.assertEqual(parsed("--verbose=TRUE"), {"verbose": True})
        self.assertEqual(parsed("--verbose=t"), {"verbose": True})
        self.assertEqual(parsed("--verbose=1"), {"verbose": True})

    def test_last_one_wins(self) -> None:
        """A scalar flag given twice keeps the last value."""
        self.assertEqual(parsed("--count=1", "--count", "2"), {"count": 2})

    def test_repeatable(self) -> None:
        """A list flag accumulates every occurrence, in order."""
        self.assertEqual(
            parsed("--peer=a:1", "-peer", "b:2", "--peer", "c:3"),
            {"peers": ["a:1", "b:2", "c:3"]},
        )

    def test_float_list_commas_and_order(self) -> None:
        """
        A float list also takes comma-separated values and, like Go's, stays sorted from the
        largest down.
        """
        self.assertEqual(
            parsed("--percentile=0.5,1.0", "--percentile", "0.99"),
            {"percentiles": [1.0, 0.99, 0.5]},
        )

    def test_stops_at_first_argument(self) -> None:
        """Parsing stops at the first argument that is not a flag, or a lone C{-}."""
        result = parse_command_line(SPECS, ["--count=1", "extra", "--count=2"])
        self.assertEqual(result.values, {"count": 1})
        self.assertEqual(result.arguments, ["extra", "--count=2"])
        self.assertEqual(parse_command_line(SPECS, ["-", "--count=2"]).arguments, ["-", "--count=2"])

    def test_double_dash_ends_flags(self) -> None:
        """C{--} ends the flags and is dropped."""
        result = parse_command_line(SPECS, ["--verbose", "--", "--count=2"])
        self.assertEqual(result.values, {"verbose": True})
        self.assertEqual(result.arguments, ["--count=2"])

    def test_choices(self) -> None:
        """A string flag with choices takes them in any case and stores them lower-cased."""
        self.assertEqual(parsed("--level=WARN"), {"level": "warn"})
        with self.assertRaises(FlagError) as caught:
            parsed("--level=loud")
        self.assertTrue(str(caught.exception).startswith('invalid value "loud" for flag -level: '))

    def test_bool_or_choice(self) -> None:
        """A boolean-style flag with words: bare is C{"true"}; booleans and its words are accepted."""
        self.assertEqual(parsed("--tls-required"), {"tls_required": "true"})
        self.assertEqual(parsed("--tls-required=false"), {"tls_required": "false"})
        self.assertEqual(parsed("--tls-required=1"), {"tls_required": "true"})
        self.assertEqual(parsed("--tls-required=tcp-https"), {"tls_required": "tcp-https"})
        self.assertEqual(parsed("--tls-required=TCP-HTTPS"), {"tls_required": "tcp-https"})
        result = parse_command_line(SPECS, ["--tls-required", "tcp-https"])
        self.assertEqual(result.values, {"tls_required": "true"})
        self.assertEqual(result.arguments, ["tcp-https"])
        with self.assertRaises(FlagError) as caught:
            parsed("--tls-required=maybe")
        self.assertEqual(
            str(caught.exception), 'invalid boolean value "maybe" for -tls-required: parse error'
        )


class ErrorTests(SynchronousTestCase):
    """Go's messages for a wrong command line."""

    def assertFlagError(self, message: str, *argv: str) -> None:
        with self.assertRaises(FlagError) as caught:
            parsed(*argv)
        self.assertEqual(str(caught.exception), message)

    def test_unknown(self) -> None:
        self.assertFlagError("flag provided but not defined: -foo", "--foo")
        self.assertFlagError("flag provided but not defined: -foo", "-foo=1")

    def test_missing_argument(self) -> None:
        self.assertFlagError("flag needs an argument: -address", "--address")

    def test_bad_values(self) -> None:
        self.assertFlagError('invalid value "x" for flag -count: parse error', "--count", "x")
        self.assertFlagError('invalid value "1.5" for flag -count: parse error', "--count=1.5")
        self.assertFlagError(
            'invalid value "99999999999999999999" for flag -count: value out of range',
            "--count=99999999999999999999",
        )
        self.assertFlagError('invalid value "abc" for flag -ratio: parse error', "--ratio=abc")
        self.assertFlagError('invalid value "60" for flag -timeout: parse error', "--timeout=60")
        self.assertFlagError('invalid boolean value "yes" for -verbose: parse error', "--verbose=yes")
        self.assertFlagError('invalid value "0.5,x" for flag -percentile: parse error', "--percentile=0.5,x")

    def test_bad_syntax(self) -> None:
        self.assertFlagError("bad flag syntax: ---count", "---count")
        self.assertFlagError("bad flag syntax: -=1", "-=1")
        self.assertFlagError("bad flag syntax: --=1", "--=1")

    def test_help(self) -> None:
        """C{-h}, C{-help} and C{--help} ask for the usage."""
        for flag in ("-h", "--h", "-help", "--help"):
            self.assertRaises(HelpRequested, parsed, flag)


class ValueTests(SynchronousTestCase):
    """Go's number, boolean and duration syntax."""

    def test_ints(self) -> None:
        cases = {
            "0": 0,
            "42": 42,
            "-42": -42,
            "+7": 7,
            "0x1F": 31,
            "0o17": 15,
            "017": 15,
            "0b101": 5,
            "1_000": 1000,
            "9223372036854775807": 2**63 - 1,
            "-9223372036854775808": -(2**63),
        }
        for text, value in cases.items():
            self.assertEqual(parse_go_int(text), value, text)
        for text in ("", "-", "1.0", " 1", "1 ", "--1", "+-1", "08", "0x", "9223372036854775808", "_1"):
            self.assertRaises(ValueError, parse_go_int, text)

    def test_floats(self) -> None:
        self.assertEqual(parse_go_float("0.99"), 0.99)
        self.assertEqual(parse_go_float("1"), 1.0)
        self.assertEqual(parse_go_float("1e-3"), 0.001)
        self.assertEqual(parse_go_float("0x1p-2"), 0.25)
        self.assertEqual(parse_go_float("-Inf"), float("-inf"))
        for text in ("", "x", "1,5", " 1", "1_0"):
            self.assertRaises(ValueError, parse_go_float, text)

    def test_bools(self) -> None:
        for text in ("1", "t", "T", "TRUE", "true", "True"):
            self.assertIs(parse_go_bool(text), True)
        for text in ("0", "f", "F", "FALSE", "false", "False"):
            self.assertIs(parse_go_bool(text), False)
        for text in ("", "yes", "tRUE", "2"):
            self.assertRaises(ValueError, parse_go_bool, text)

    def test_durations(self) -> None:
        cases = {
            "0": 0.0,
            "0s": 0.0,
            "60s": 60.0,
            "250ms": 0.25,
            "25ms": 0.025,
            "1h": 3600.0,
            "1m30s": 90.0,
            "15m": 900.0,
            "2s": 2.0,
            "1.5h": 5400.0,
            ".5s": 0.5,
            "1.s": 1.0,
            "-2s": -2.0,
            "+3s": 3.0,
            "1h2m3s4ms5us6ns": 3723.004005006,
            "3\u00b5s": 3e-6,
            "3\u03bcs": 3e-6,
        }
        for text, seconds in cases.items():
            self.assertAlmostEqual(parse_go_duration(text), seconds, places=12, msg=text)
        self.assertEqual(parse_go_duration_ns("1.0000000019s"), 1_000_000_001)

    def test_bad_durations(self) -> None:
        """No unit (except C{0}), an unknown unit, no digits, or an overflow are refused."""
        for text in ("", "60", "1", "-", "s", ".s", "1x", "1.2.3s", "1sm", "1 s", "3000000h"):
            self.assertRaises(ValueError, parse_go_duration, text)

    def test_format_durations(self) -> None:
        """Durations print as Go's C{Duration.String} prints them."""
        cases = {
            0.0: "0s",
            60.0: "1m0s",
            900.0: "15m0s",
            3600.0: "1h0m0s",
            600.0: "10m0s",
            90.0: "1m30s",
            2.0: "2s",
            1.5: "1.5s",
            0.25: "250ms",
            0.025: "25ms",
            1.5e-6: "1.5\u00b5s",
            7e-9: "7ns",
            -2.0: "-2s",
            5400.5: "1h30m0.5s",
        }
        for seconds, text in cases.items():
            self.assertEqual(format_go_duration(seconds), text)
            self.assertAlmostEqual(parse_go_duration(text), seconds, places=12)


class ConfigTests(SynchronousTestCase):
    """C{--config} TOML files and precedence."""

    def config(self, text: str) -> str:
        path: str = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_defaults(self) -> None:
        """Without a command line every flag has its default, lists fresh each time."""
        values = resolve(SPECS, [])
        self.assertEqual(values["address"], "0.0.0.0:1")
        self.assertEqual(values["timeout"], 60.0)
        self.assertEqual(values["peers"], [])
        self.assertIsNot(values["peers"], resolve(SPECS, [])["peers"])
        self.assertIsNot(values["peers"], SPECS[8].default)

    def test_keys(self) -> None:
        """Keys are flag names with C{_} for C{-}, or the table's own config key."""
        path = self.config(
            'address = "h:2"\ncount = 9\nratio = 2\ntimeout = "1m30s"\nsnappy = false\n'
            'all_peers = ["a:1", "b:2"]\npercentiles = [0.5, 1]\nlevel = "WARN"\n'
            'tls_required = "tcp-https"\nid = 12\nnode_id = 99\npeer = ["ignored"]\n'
        )
        values = resolve(SPECS, ["--config", path])
        self.assertEqual(values["address"], "h:2")
        self.assertEqual(values["count"], 9)
        self.assertEqual(values["ratio"], 2.0)
        self.assertEqual(values["timeout"], 90.0)
        self.assertEqual(values["snappy"], False)
        self.assertEqual(values["peers"], ["a:1", "b:2"])
        self.assertEqual(values["percentiles"], [0.5, 1.0])
        self.assertEqual(values["level"], "warn")
        self.assertEqual(values["tls_required"], "tcp-https")
        self.assertEqual(values["node_id"], 12)

    def test_precedence(self) -> None:
        """The command line beats the file, which beats the defaults; lists are replaced, not merged."""
        path = self.config('address = "file:1"\ncount = 9\nall_peers = ["f:1"]\n')
        values = resolve(SPECS, ["--count=3", f"--config={path}", "--peer", "c:1"])
        self.assertEqual(values["address"], "file:1")
        self.assertEqual(values["count"], 3)
        self.assertEqual(values["peers"], ["c:1"])
        self.assertEqual(values["ratio"], 0.5)

    def test_coercions(self) -> None:
        """Integers are milliseconds for durations; strings are split for lists; booleans for words."""
        path = self.config('timeout = 1500\nall_peers = "a:1, b:2"\ntls_required = true\ncount = "0x10"\n')
        values = load_config(SPECS, path)
        self.assertEqual(values["timeout"], 1.5)
        self.assertEqual(values["peers"], ["a:1", "b:2"])
        self.assertEqual(values["tls_required"], "true")
        self.assertEqual(values["count"], 16)
        self.assertEqual(load_config(SPECS, self.config('timeout = "2500"\n'))["timeout"], 2.5)

    def test_not_in_config(self) -> None:
        """Flags marked out of the config file (C{version}, C{config}) are ignored there."""
        self.assertEqual(load_config(SPECS, self.config('version = true\nconfig = "x"\n')), {})

    def test_wrong_types(self) -> None:
        """A value of the wrong type names the key."""
        for text in (
            "count = true",
            "count = 1.5",
            "address = 5\n",
            'timeout = "sixty"',
            "timeout = 1.5",
            "snappy = 1",
            "all_peers = [1]",
            'percentiles = ["x"]',
            'level = "loud"',
            'tls_required = "maybe"',
        ):
            self.assertRaises(ConfigError, load_config, SPECS, self.config(text))
        with self.assertRaises(ConfigError) as caught:
            load_config(SPECS, self.config("count = true"))
        self.assertIn("count", str(caught.exception))

    def test_unreadable(self) -> None:
        """A missing file or bad TOML is a L{ConfigError} naming the file."""
        missing = os.path.join(self.mktemp(), "nope.toml")
        with self.assertRaises(ConfigError) as caught:
            resolve(SPECS, ["--config", missing])
        self.assertTrue(str(caught.exception).startswith(f"failed to load config file {missing} - "))
        self.assertRaises(ConfigError, resolve, SPECS, ["--config", self.config("count = = 1")])

    def test_version_before_config(self) -> None:
        """C{--version} wins over an unreadable config file, as in Go; C{--version=false} does not."""
        self.assertRaises(VersionRequested, resolve, SPECS, ["--config=/nonexistent", "--version"])
        self.assertRaises(ConfigError, resolve, SPECS, ["--config=/nonexistent", "--version=false"])

    def test_flag_errors_before_version(self) -> None:
        """A bad flag anywhere is reported even with C{--version}."""
        self.assertRaises(FlagError, resolve, SPECS, ["--version", "--bogus"])


class ConsoleTests(SynchronousTestCase):
    """L{parse_or_exit}, the usage text and the version line."""

    def run_parse(self, *argv: str) -> tuple[int | str | None, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        with self.assertRaises(SystemExit) as caught:
            parse_or_exit("prog", SPECS, argv, stdout=stdout, stderr=stderr)
        return caught.exception.code, stdout.getvalue(), stderr.getvalue()

    def test_help(self) -> None:
        """Help goes to stderr, as Go's does, with status 0."""
        code, out, err = self.run_parse("--help")
        self.assertEqual((code, out), (0, ""))
        self.assertEqual(err, usage_text("prog", SPECS))

    def test_version(self) -> None:
        """The version line goes to stdout with status 0."""
        code, out, err = self.run_parse("--version")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out, f"prog v1.3.0-twisted (built w/python{platform.python_version()})\n")
        self.assertEqual(
            version_line("nsqd"), f"nsqd v1.3.0-twisted (built w/python{platform.python_version()})"
        )

    def test_flag_error(self) -> None:
        """A flag error and then the usage go to stderr, with status 2."""
        code, out, err = self.run_parse("--bogus")
        self.assertEqual((code, out), (2, ""))
        self.assertEqual(err, "flag provided but not defined: -bogus\n" + usage_text("prog", SPECS))

    def test_success(self) -> None:
        """A good command line returns the values."""
        values = parse_or_exit("prog", SPECS, ["--count=5"], stdout=io.StringIO(), stderr=io.StringIO())
        self.assertEqual(values["count"], 5)

    def test_usage_layout(self) -> None:
        """Go's layout: sorted names, type placeholders, defaults unless zero."""
        text = usage_text("prog", SPECS)
        lines = text.splitlines()
        self.assertEqual(lines[0], "Usage of prog:")
        names = [line.split()[0] for line in lines[1:] if line.startswith("  -")]
        self.assertEqual(names, sorted(names))
        self.assertIn('  -address string\n    \twhere to listen (default "0.0.0.0:1")\n', text)
        self.assertIn("  -count int\n    \thow many (default 7)\n", text)
        self.assertIn("  -timeout duration\n    \thow long (default 1m0s)\n", text)
        self.assertIn("  -ratio float\n    \ta ratio (default 0.5)\n", text)
        self.assertIn("  -snappy\n    \tcompress (default true)\n", text)
        self.assertIn("  -verbose\n    \ttalk more\n", text)
        self.assertIn("  -peer value\n    \ta peer (repeatable)\n", text)


class FakeReactor:
    """Records C{stop} and system event triggers, like the parts of a reactor L{stop_on_signals} uses."""

    def __init__(self) -> None:
        self.stops = 0
        self.triggers: list[Callable[[], object]] = []

    def stop(self) -> None:
        self.stops += 1
        if self.stops > 1:
            raise ReactorNotRunning()

    def addSystemEventTrigger(self, phase: str, event: str, f: Callable[[], object]) -> None:
        self.triggers.append(f)


class SignalTests(SynchronousTestCase):
    """L{stop_on_signals} stops the reactor once, from the reactor thread."""

    def setUp(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.addCleanup(signal.signal, signum, signal.getsignal(signum))
        self.reactor = FakeReactor()
        self.queued: list[tuple[Callable[..., object], tuple[object, ...]]] = []

        def call_from_thread(f: Callable[..., object], *args: object) -> None:
            self.queued.append((f, args))

        stop_on_signals(self.reactor, call_from_thread)  # type: ignore[arg-type]

    def deliver(self, signum: int) -> None:
        handler = signal.getsignal(signum)
        assert callable(handler)
        frame: FrameType | None = None
        handler(signum, frame)

    def run_queued(self) -> None:
        queued, self.queued = self.queued, []
        for f, args in queued:
            f(*args)

    def test_once(self) -> None:
        """The first signal stops the reactor; later ones do nothing."""
        self.deliver(signal.SIGTERM)
        self.assertEqual(self.reactor.stops, 0)
        self.run_queued()
        self.assertEqual(self.reactor.stops, 1)
        self.deliver(signal.SIGINT)
        self.run_queued()
        self.assertEqual(self.reactor.stops, 1)

    def test_after_shutdown_began(self) -> None:
        """Once shutdown began for another reason, a signal does not call C{stop} again."""
        for trigger in self.reactor.triggers:
            trigger()
        self.deliver(signal.SIGINT)
        self.run_queued()
        self.assertEqual(self.reactor.stops, 0)
