"""Tests for L{twisted_nsq.nsqadmin.options}: flags, config file, defaults and start-up checks."""

from __future__ import annotations

import contextlib
import io
import platform

from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq._cli import FlagError, parse_or_exit
from twisted_nsq.nsqadmin.options import (
    NSQADMIN_FLAGS,
    NSQAdminOptions,
    normalize_base_path,
    parse_nsqadmin_args,
)


class DefaultsTests(SynchronousTestCase):
    def test_go_defaults(self) -> None:
        """Every flag of spec 8.4 with Go nsqadmin's default."""
        options = parse_nsqadmin_args([])
        self.assertEqual(
            (
                options.log_level,
                options.log_prefix,
                options.http_address,
                options.base_path,
                options.dev_static_dir,
                options.graphite_url,
                options.proxy_graphite,
                options.statsd_prefix,
                options.statsd_counter_format,
                options.statsd_gauge_format,
                options.statsd_interval,
                options.lookupd_http_addresses,
                options.nsqd_http_addresses,
                options.http_client_connect_timeout,
                options.http_client_request_timeout,
                options.http_client_tls_insecure_skip_verify,
                options.http_client_tls_root_ca_file,
                options.http_client_tls_cert,
                options.http_client_tls_key,
                options.allow_config_from_cidr,
                options.notification_http_endpoint,
                options.acl_http_header,
                options.admin_users,
            ),
            (
                "info",
                "[nsqadmin] ",
                "0.0.0.0:4171",
                "/",
                "",
                "",
                False,
                "nsq.%s",
                "stats.counters.%s.count",
                "stats.gauges.%s",
                60.0,
                [],
                [],
                2.0,
                5.0,
                False,
                "",
                "",
                "",
                "127.0.0.1/8",
                "",
                "X-Forwarded-User",
                [],
            ),
        )
        self.assertEqual(
            {spec.name for spec in NSQADMIN_FLAGS},
            {
                "config", "version", "verbose", "log-level", "log-prefix", "http-address", "base-path",
                "dev-static-dir", "graphite-url", "proxy-graphite", "statsd-prefix", "statsd-counter-format",
                "statsd-gauge-format", "statsd-interval", "lookupd-http-address", "nsqd-http-address",
                "http-client-connect-timeout", "http-client-request-timeout",
                "http-client-tls-insecure-skip-verify", "http-client-tls-root-ca-file",
                "http-client-tls-cert", "http-client-tls-key", "allow-config-from-cidr",
                "notification-http-endpoint", "acl-http-header", "admin-user",
            },
        )  # fmt: skip


class ParseTests(SynchronousTestCase):
    def test_go_flags(self) -> None:
        """Go syntax; repeatable flags accumulate."""
        options = parse_nsqadmin_args(
            [
                "-lookupd-http-address",
                "a:4161",
                "--lookupd-http-address=b:4161",
                "--admin-user=alice",
                "-admin-user=bob",
                "--proxy-graphite",
                "--statsd-interval=10s",
                "--http-client-request-timeout",
                "1.5s",
                "--base-path=admin",
            ]
        )
        self.assertEqual(options.lookupd_http_addresses, ["a:4161", "b:4161"])
        self.assertEqual(options.admin_users, ["alice", "bob"])
        self.assertEqual((options.proxy_graphite, options.statsd_interval), (True, 10.0))
        self.assertEqual(options.http_client_request_timeout, 1.5)
        self.assertRaises(FlagError, parse_nsqadmin_args, ["--statsd-interval=10"])

    def test_config_file(self) -> None:
        """The config keys for the list flags are Go's (nsqlookupd_http_addresses, ...)."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                'nsqlookupd_http_addresses = ["x:4161", "y:4161"]\n'
                'admin_users = ["root"]\n'
                'http_address = "127.0.0.1:9999"\n'
                'statsd_interval = "30s"\n'
            )
        options = parse_nsqadmin_args(["--config", path, "--http-address=127.0.0.1:0"])
        self.assertEqual(options.lookupd_http_addresses, ["x:4161", "y:4161"])
        self.assertEqual(options.admin_users, ["root"])
        self.assertEqual((options.http_address, options.statsd_interval), ("127.0.0.1:0", 30.0))

    def test_version(self) -> None:
        out = io.StringIO()
        with self.assertRaises(SystemExit) as caught:
            parse_or_exit("nsqadmin", NSQADMIN_FLAGS, ["--version"], stdout=out, stderr=io.StringIO())
        self.assertEqual(caught.exception.code, 0)
        self.assertEqual(
            out.getvalue(), f"nsqadmin v1.3.0-twisted (built w/python{platform.python_version()})\n"
        )

    def test_help(self) -> None:
        err = io.StringIO()
        with contextlib.suppress(SystemExit):
            parse_or_exit("nsqadmin", NSQADMIN_FLAGS, ["--help"], stdout=io.StringIO(), stderr=err)
        self.assertIn(
            "  -lookupd-http-address value\n    \tlookupd HTTP address (may be given multiple times)",
            err.getvalue(),
        )
        self.assertIn('(default "127.0.0.1/8")', err.getvalue())


class ValidateTests(SynchronousTestCase):
    def check(self, message: str, **settings: object) -> None:
        options = NSQAdminOptions(**settings)  # type: ignore[arg-type]
        with self.assertRaises(ValueError) as caught:
            options.validate()
        self.assertEqual(str(caught.exception), message)

    def test_exactly_one_kind(self) -> None:
        self.check("--nsqd-http-address or --lookupd-http-address required")
        self.check(
            "use --nsqd-http-address or --lookupd-http-address not both",
            lookupd_http_addresses=["a:1"],
            nsqd_http_addresses=["b:2"],
        )
        NSQAdminOptions(nsqd_http_addresses=["b:2"]).validate()

    def test_cert_and_key(self) -> None:
        self.check(
            "--http-client-tls-key must be specified with --http-client-tls-cert",
            lookupd_http_addresses=["a:1"],
            http_client_tls_cert="c.pem",
        )
        self.check(
            "--http-client-tls-cert must be specified with --http-client-tls-key",
            lookupd_http_addresses=["a:1"],
            http_client_tls_key="k.pem",
        )

    def test_addresses(self) -> None:
        self.check(
            "failed to resolve --lookupd-http-address (nohost) - address nohost: missing port in address",
            lookupd_http_addresses=["nohost"],
        )
        self.check(
            "failed to resolve --nsqd-http-address (h:x) - address h:x: invalid port",
            nsqd_http_addresses=["h:x"],
        )
        NSQAdminOptions(nsqd_http_addresses=["[::1]:4151"]).validate()

    def test_cidr(self) -> None:
        self.check(
            "failed to parse --allow-config-from-cidr (10.0.0.1) - invalid CIDR address: 10.0.0.1",
            lookupd_http_addresses=["a:1"],
            allow_config_from_cidr="10.0.0.1",
        )
        self.check(
            "failed to parse --allow-config-from-cidr (300.0.0.0/8) - invalid CIDR address: 300.0.0.0/8",
            lookupd_http_addresses=["a:1"],
            allow_config_from_cidr="300.0.0.0/8",
        )
        NSQAdminOptions(lookupd_http_addresses=["a:1"], allow_config_from_cidr="").validate()

    def test_log_level(self) -> None:
        options = NSQAdminOptions(lookupd_http_addresses=["a:1"], log_level="loud")
        self.assertRaises(ValueError, options.validate)

    def test_base_path(self) -> None:
        """Go's normalizeBasePath: a leading slash, then path.Clean."""
        for given, normal in (
            ("", "/"),
            ("/", "/"),
            ("admin", "/admin"),
            ("/a/b/", "/a/b"),
            ("//a/../b", "/b"),
        ):
            self.assertEqual(normalize_base_path(given), normal, given)
        options = NSQAdminOptions(lookupd_http_addresses=["a:1"], base_path="x/")
        options.validate()
        self.assertEqual((options.base_path, options.base_prefix), ("/x", "/x/"))
        self.assertEqual(NSQAdminOptions().base_prefix, "/")
