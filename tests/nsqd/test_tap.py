"""
Tests for L{twisted_nsq.nsqd.tap} and the C{nsqd} plugin: Go-style flags under C{twist}.
"""

from __future__ import annotations

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from tests._daemons import assert_help, assert_make_service, assert_plugin, assert_version
from twisted_nsq.nsqd.options import NSQDOptions
from twisted_nsq.nsqd.service import NSQDService
from twisted_nsq.nsqd.tap import Options, makeService


class OptionsTests(SynchronousTestCase):
    def test_go_flags(self) -> None:
        """The Go flag syntax works under C{twist nsqd}."""
        options = Options()
        options.parseOptions(
            ["-tcp-address", "127.0.0.1:0", "--http-address=", "--snappy=false", "--tls-required=tcp-https"]
        )
        self.assertEqual(options.nsqd_options.tcp_address, "127.0.0.1:0")
        self.assertEqual(options.nsqd_options.http_address, "")
        self.assertFalse(options.nsqd_options.snappy)
        self.assertEqual(options.nsqd_options.tls_required, "tcp-https")
        self.assertEqual(options["tcp_address"], "127.0.0.1:0")
        self.assertEqual(options["msg_timeout"], 60.0)

    def test_defaults(self) -> None:
        """No flags gives nsqd's defaults."""
        options = Options()
        options.parseOptions([])
        self.assertEqual(options.nsqd_options, NSQDOptions())

    def test_config(self) -> None:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write('tcp_address = "127.0.0.1:9150"\n')
        options = Options()
        options.parseOptions(["--config", path])
        self.assertEqual(options.nsqd_options.tcp_address, "127.0.0.1:9150")

    def test_errors(self) -> None:
        """Flag and config errors are usage errors, with Go's message."""
        with self.assertRaises(UsageError) as caught:
            Options().parseOptions(["--bogus"])
        self.assertEqual(str(caught.exception), "flag provided but not defined: -bogus")
        self.assertRaises(UsageError, Options().parseOptions, ["--config=/nonexistent/nsqd.toml"])

    def test_help(self) -> None:
        """C{--help} prints nsqd's flags and exits 0."""
        assert_help(self, Options(), "nsqd", ["  -tcp-address string"])

    def test_version(self) -> None:
        assert_version(self, Options(), "nsqd")

    def test_make_service(self) -> None:
        """C{makeService} builds an unstarted L{NSQDService} from the parsed options."""
        argv = ["--tcp-address=127.0.0.1:0"]
        assert_make_service(self, Options(), argv, makeService, NSQDService, lambda o: o.nsqd_options)


class PluginTests(SynchronousTestCase):
    def test_discovered(self) -> None:
        """C{twist} finds the C{nsqd} plugin, which names the tap module."""
        assert_plugin(self, "nsqd", "twisted_nsq.nsqd.tap", Options)
