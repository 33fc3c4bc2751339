"""
Tests for L{twisted_nsq.nsqd.tap} and the C{nsqd} plugin: Go-style flags under C{twist}.
"""

from __future__ import annotations

import contextlib
import io
import platform

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq.nsqd.options import NSQDOptions
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
        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit) as caught:
            Options().parseOptions(["--help"])
        self.assertEqual(caught.exception.code, 0)
        self.assertIn("Usage of nsqd:", out.getvalue())
        self.assertIn("  -tcp-address string", out.getvalue())

    def test_version(self) -> None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit) as caught:
            Options().parseOptions(["--version"])
        self.assertEqual(caught.exception.code, 0)
        self.assertEqual(out.getvalue(), f"nsqd v1.3.0-twisted (built w/python{platform.python_version()})\n")

    def test_make_service(self) -> None:
        """C{makeService} builds an unstarted L{NSQDService} from the parsed options."""
        options = Options()
        options.parseOptions(["--tcp-address=127.0.0.1:0"])
        service = makeService(options)
        self.assertIs(service.options, options.nsqd_options)
        self.assertFalse(service.running)


class PluginTests(SynchronousTestCase):
    def test_discovered(self) -> None:
        """C{twist} finds the C{nsqd} plugin, which names the tap module."""
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("nsqd", makers)
        maker = makers["nsqd"]
        self.assertEqual(maker.module, "twisted_nsq.nsqd.tap")  # type: ignore[attr-defined]
        self.assertIsInstance(maker.options(), Options)
