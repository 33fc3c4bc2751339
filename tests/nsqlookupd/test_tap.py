"""
Tests for L{twisted_nsq.nsqlookupd.tap} and the C{nsqlookupd} plugin: Go-style flags under C{twist}.
"""

from __future__ import annotations

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from tests._daemons import assert_help, assert_make_service, assert_plugin, assert_version
from twisted_nsq.nsqlookupd.options import NSQLookupdOptions
from twisted_nsq.nsqlookupd.service import NSQLookupdService
from twisted_nsq.nsqlookupd.tap import Options, makeService


class OptionsTests(SynchronousTestCase):
    def test_go_flags(self) -> None:
        """The Go flag syntax works under C{twist nsqlookupd}: one or two dashes, C{=} or a space."""
        options = Options()
        options.parseOptions(
            [
                "-tcp-address",
                "127.0.0.1:0",
                "--http-address=127.0.0.1:0",
                "-broadcast-address=lookup.example",
                "--inactive-producer-timeout",
                "1m30s",
                "-tombstone-lifetime=10s",
                "--verbose",
                "--log-level=debug",
                "--log-prefix=[lk] ",
            ]
        )
        self.assertEqual(
            options.nsqlookupd_options,
            NSQLookupdOptions(
                log_level="debug",
                log_prefix="[lk] ",
                verbose=True,
                tcp_address="127.0.0.1:0",
                http_address="127.0.0.1:0",
                broadcast_address="lookup.example",
                inactive_producer_timeout=90.0,
                tombstone_lifetime=10.0,
            ),
        )
        self.assertEqual(options["tcp_address"], "127.0.0.1:0")
        self.assertEqual(options["tombstone_lifetime"], 10.0)

    def test_defaults(self) -> None:
        """No flags gives nsqlookupd's defaults."""
        options = Options()
        options.parseOptions([])
        self.assertEqual(options.nsqlookupd_options, NSQLookupdOptions())
        self.assertEqual(options.nsqlookupd_options.tcp_address, "0.0.0.0:4160")
        self.assertEqual(options.nsqlookupd_options.http_address, "0.0.0.0:4161")
        self.assertEqual(options.nsqlookupd_options.log_prefix, "[nsqlookupd] ")

    def test_config(self) -> None:
        """A C{--config} file sets options; the command line wins over it."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                'tcp_address = "127.0.0.1:9160"\nhttp_address = "127.0.0.1:9161"\ntombstone_lifetime = "5s"\n'
            )
        options = Options()
        options.parseOptions(["--config", path, "--http-address=127.0.0.1:0"])
        self.assertEqual(options.nsqlookupd_options.tcp_address, "127.0.0.1:9160")
        self.assertEqual(options.nsqlookupd_options.http_address, "127.0.0.1:0")
        self.assertEqual(options.nsqlookupd_options.tombstone_lifetime, 5.0)

    def test_errors(self) -> None:
        """Flag and config errors are usage errors, with Go's message."""
        with self.assertRaises(UsageError) as caught:
            Options().parseOptions(["--bogus"])
        self.assertEqual(str(caught.exception), "flag provided but not defined: -bogus")
        with self.assertRaises(UsageError) as caught:
            Options().parseOptions(["--tombstone-lifetime=45"])
        self.assertEqual(
            str(caught.exception), 'invalid value "45" for flag -tombstone-lifetime: parse error'
        )
        self.assertRaises(UsageError, Options().parseOptions, ["--config=/nonexistent/nsqlookupd.toml"])

    def test_help(self) -> None:
        """C{--help} prints nsqlookupd's flags and exits 0."""
        flags = (
            "  -tcp-address string",
            "  -http-address string",
            "  -broadcast-address string",
            "  -inactive-producer-timeout duration",
            "  -tombstone-lifetime duration",
        )
        assert_help(self, Options(), "nsqlookupd", flags)

    def test_version(self) -> None:
        assert_version(self, Options(), "nsqlookupd")

    def test_make_service(self) -> None:
        """C{makeService} builds an unstarted L{NSQLookupdService} from the parsed options."""
        argv = ["--tcp-address=127.0.0.1:0"]
        assert_make_service(
            self, Options(), argv, makeService, NSQLookupdService, lambda o: o.nsqlookupd_options
        )


class PluginTests(SynchronousTestCase):
    def test_discovered(self) -> None:
        """C{twist} finds the C{nsqlookupd} plugin, which names the tap module."""
        assert_plugin(self, "nsqlookupd", "twisted_nsq.nsqlookupd.tap", Options)
