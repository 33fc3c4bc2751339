"""
Tests for L{twisted_nsq.nsqadmin.tap} and the C{nsqadmin} plugin: Go-style flags under C{twist}.
"""

from __future__ import annotations

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from tests._daemons import assert_help, assert_make_service, assert_plugin, assert_version
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
        flags = ("  -lookupd-http-address value", "  -base-path string", "  -statsd-interval duration")
        assert_help(self, Options(), "nsqadmin", flags)

    def test_version(self) -> None:
        assert_version(self, Options(), "nsqadmin")

    def test_make_service(self) -> None:
        """C{makeService} builds an unstarted L{NSQAdminService} from the parsed options."""
        argv = ["--nsqd-http-address=127.0.0.1:4151"]
        assert_make_service(self, Options(), argv, makeService, NSQAdminService, lambda o: o.nsqadmin_options)


class PluginTests(SynchronousTestCase):
    def test_discovered(self) -> None:
        """C{twist} finds the C{nsqadmin} plugin, which names the tap module."""
        assert_plugin(self, "nsqadmin", "twisted_nsq.nsqadmin.tap", Options)
