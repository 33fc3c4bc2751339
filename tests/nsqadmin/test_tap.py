"""
Tests for L{twisted_nsq.nsqadmin.tap} and the C{nsqadmin} plugin: Go-style flags under C{twist}.
"""

from __future__ import annotations

import contextlib
import io
import platform

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq.nsqadmin.options import NSQAdminOptions
from twisted_nsq.nsqadmin.service import NSQAdminService
from twisted_nsq.nsqadmin.tap import Options, makeService


class OptionsTests(SynchronousTestCase):
    def test_go_flags(self) -> None:
        """The Go flag syntax works under C{twist nsqadmin}: one or two dashes, C{=} or a space."""
        options = Options()
        options.parseOptions(
            [
                "-http-address",
                "127.0.0.1:0",
                "--lookupd-http-address=127.0.0.1:4161",
                "-lookupd-http-address",
                "127.0.0.2:4161",
                "--base-path=/admin",
                "--admin-user=alice",
                "--statsd-interval=30s",
                "--proxy-graphite",
                "--graphite-url=http://graphite",
                "--log-level=debug",
            ]
        )
        self.assertEqual(
            options.nsqadmin_options,
            NSQAdminOptions(
                log_level="debug",
                http_address="127.0.0.1:0",
                base_path="/admin",
                lookupd_http_addresses=["127.0.0.1:4161", "127.0.0.2:4161"],
                admin_users=["alice"],
                statsd_interval=30.0,
                proxy_graphite=True,
                graphite_url="http://graphite",
            ),
        )
        self.assertEqual(options["lookupd_http_addresses"], ["127.0.0.1:4161", "127.0.0.2:4161"])

    def test_defaults(self) -> None:
        """No flags gives nsqadmin's defaults (validation happens when the service starts)."""
        options = Options()
        options.parseOptions([])
        self.assertEqual(options.nsqadmin_options, NSQAdminOptions())
        self.assertEqual(options.nsqadmin_options.http_address, "0.0.0.0:4171")

    def test_config(self) -> None:
        """A C{--config} file sets options; the command line wins over it."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write('nsqd_http_addresses = ["127.0.0.1:4151"]\nhttp_address = "127.0.0.1:9171"\n')
        options = Options()
        options.parseOptions(["--config", path, "--http-address=127.0.0.1:0"])
        self.assertEqual(options.nsqadmin_options.nsqd_http_addresses, ["127.0.0.1:4151"])
        self.assertEqual(options.nsqadmin_options.http_address, "127.0.0.1:0")

    def test_errors(self) -> None:
        """Flag and config errors are usage errors, with Go's message."""
        with self.assertRaises(UsageError) as caught:
            Options().parseOptions(["--tcp-address=:1"])
        self.assertEqual(str(caught.exception), "flag provided but not defined: -tcp-address")
        self.assertRaises(UsageError, Options().parseOptions, ["--config=/nonexistent/nsqadmin.toml"])

    def test_help(self) -> None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit) as caught:
            Options().parseOptions(["--help"])
        self.assertEqual(caught.exception.code, 0)
        self.assertIn("Usage of nsqadmin:", out.getvalue())
        for flag in ("  -lookupd-http-address value", "  -base-path string", "  -statsd-interval duration"):
            self.assertIn(flag, out.getvalue())

    def test_version(self) -> None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit) as caught:
            Options().parseOptions(["--version"])
        self.assertEqual(caught.exception.code, 0)
        self.assertEqual(
            out.getvalue(), f"nsqadmin v1.3.0-twisted (built w/python{platform.python_version()})\n"
        )

    def test_make_service(self) -> None:
        """C{makeService} builds an unstarted L{NSQAdminService} from the parsed options."""
        options = Options()
        options.parseOptions(["--nsqd-http-address=127.0.0.1:4151"])
        service = makeService(options)
        self.assertIsInstance(service, NSQAdminService)
        self.assertIs(service.options, options.nsqadmin_options)
        self.assertFalse(service.running)


class PluginTests(SynchronousTestCase):
    def test_discovered(self) -> None:
        """C{twist} finds the C{nsqadmin} plugin, which names the tap module."""
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("nsqadmin", makers)
        maker = makers["nsqadmin"]
        self.assertEqual(maker.module, "twisted_nsq.nsqadmin.tap")  # type: ignore[attr-defined]
        self.assertIsInstance(maker.options(), Options)
