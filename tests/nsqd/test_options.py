"""
Tests for L{twisted_nsq.nsqd.options}: Go nsqd's defaults, flags, config keys and start-up checks.
"""

from __future__ import annotations

import os
import socket

import attrs
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq._cli import ConfigError, FlagError, HelpRequested, Kind, VersionRequested
from twisted_nsq.nsqd.options import NSQD_FLAGS, TLS_VERSIONS, NSQDOptions, parse_nsqd_args
from twisted_nsq.wire.ids import default_node_id

GO_DEFAULTS: dict[str, object] = {
    "log_level": "info",
    "log_prefix": "[nsqd] ",
    "verbose": False,
    "tcp_address": "0.0.0.0:4150",
    "http_address": "0.0.0.0:4151",
    "https_address": "0.0.0.0:4152",
    "broadcast_tcp_port": 0,
    "broadcast_http_port": 0,
    "lookupd_tcp_addresses": [],
    "auth_http_addresses": [],
    "auth_http_request_method": "get",
    "http_client_connect_timeout": 2.0,
    "http_client_request_timeout": 5.0,
    "topology_region": "",
    "topology_zone": "",
    "enable_experiment": [],
    "data_path": "",
    "mem_queue_size": 10000,
    "max_bytes_per_file": 104857600,
    "sync_every": 2500,
    "sync_timeout": 2.0,
    "queue_scan_worker_pool_max": 4,
    "queue_scan_selection_count": 20,
    "msg_timeout": 60.0,
    "max_msg_timeout": 900.0,
    "max_msg_size": 1048576,
    "max_req_timeout": 3600.0,
    "max_body_size": 5242880,
    "max_heartbeat_interval": 60.0,
    "max_rdy_count": 2500,
    "max_output_buffer_size": 65536,
    "max_output_buffer_timeout": 30.0,
    "min_output_buffer_timeout": 0.025,
    "output_buffer_timeout": 0.25,
    "max_channel_consumers": 0,
    "statsd_address": "",
    "statsd_prefix": "nsq.%s",
    "statsd_interval": 60.0,
    "statsd_mem_stats": True,
    "statsd_udp_packet_size": 508,
    "statsd_exclude_ephemeral": False,
    "e2e_processing_latency_percentiles": [],
    "e2e_processing_latency_window_time": 600.0,
    "tls_cert": "",
    "tls_key": "",
    "tls_client_auth_policy": "",
    "tls_root_ca_file": "",
    "tls_required": "false",
    "tls_min_version": "tls1.0",
    "deflate": True,
    "max_deflate_level": 6,
    "snappy": True,
    "client_timeout": 60.0,
    "handshake_timeout": 10.0,
    "durable": False,
    "keep_deferred": False,
    "deferred_memory_limit": 0,
    "http_debug": False,
    "ordered_channel": [],
    "ordered_channel_key": "",
    "ordered_max_pending": 10000,
}


class DefaultTests(SynchronousTestCase):
    def test_go_defaults(self) -> None:
        """Every setting defaults to Go nsqd 1.3.0's value."""
        options = NSQDOptions()
        for name, value in GO_DEFAULTS.items():
            self.assertEqual(getattr(options, name), value, name)

    def test_host_defaults(self) -> None:
        """The node ID hashes the hostname and the broadcast address is the hostname."""
        options = NSQDOptions()
        self.assertEqual(options.node_id, default_node_id(socket.gethostname()))
        self.assertEqual(options.broadcast_address, socket.gethostname())

    def test_every_field_covered(self) -> None:
        """The expected defaults name every field, so a new field needs a decision here."""
        self.assertEqual(
            set(attrs.fields_dict(NSQDOptions)) - {"node_id", "broadcast_address"}, set(GO_DEFAULTS)
        )

    def test_lists_not_shared(self) -> None:
        self.assertIsNot(NSQDOptions().lookupd_tcp_addresses, NSQDOptions().lookupd_tcp_addresses)

    def test_derived(self) -> None:
        """The default heartbeat is half the client timeout; the data path defaults to the cwd."""
        options = NSQDOptions()
        self.assertEqual(options.heartbeat_interval, 30.0)
        self.assertEqual(options.resolved_data_path(), os.getcwd())
        self.assertEqual(NSQDOptions(data_path="/var/nsq").resolved_data_path(), "/var/nsq")
        self.assertEqual(options.tls_min_version_number, 769)
        self.assertEqual(TLS_VERSIONS["tls1.3"], 772)

    def test_defaults_validate(self) -> None:
        NSQDOptions().validate()


class FlagTableTests(SynchronousTestCase):
    def test_flags_match_fields(self) -> None:
        """Every setting but C{client_timeout} has a flag, and every flag but four is a setting."""
        fields = set(attrs.fields_dict(NSQDOptions))
        keys = {spec.key for spec in NSQD_FLAGS}
        self.assertEqual(fields - keys, {"client_timeout"})
        self.assertEqual(keys - fields, {"config", "version", "worker_id"})

    def test_defaults_match_options(self) -> None:
        """The usage text shows the defaults the options really have."""
        options = NSQDOptions()
        for spec in NSQD_FLAGS:
            if spec.key in attrs.fields_dict(NSQDOptions):
                self.assertEqual(spec.default, getattr(options, spec.key), spec.name)

    def test_documented(self) -> None:
        """docs/operations.md has a row for every flag."""
        path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "operations.md")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        self.assertEqual([spec.name for spec in NSQD_FLAGS if f"| `--{spec.name}` |" not in text], [])

    def test_spec_flags(self) -> None:
        """The flags of the spec's table, with their kinds."""
        kinds = {spec.name: spec.kind for spec in NSQD_FLAGS}
        self.assertEqual(kinds["lookupd-tcp-address"], Kind.STRING_LIST)
        self.assertEqual(kinds["auth-http-address"], Kind.STRING_LIST)
        self.assertEqual(kinds["enable-experiment"], Kind.STRING_LIST)
        self.assertEqual(kinds["e2e-processing-latency-percentile"], Kind.FLOAT_LIST)
        self.assertEqual(kinds["tls-required"], Kind.BOOL_OR_CHOICE)
        self.assertEqual(kinds["msg-timeout"], Kind.DURATION)
        self.assertEqual(kinds["worker-id"], Kind.BOOL)
        self.assertEqual(kinds["snappy"], Kind.BOOL)
        self.assertEqual(kinds["node-id"], Kind.INT)


class ParseTests(SynchronousTestCase):
    def config(self, text: str) -> str:
        path: str = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_harness_command_line(self) -> None:
        """The command line gnsq's and pynsq's harnesses use."""
        options = parse_nsqd_args(
            [
                "--tcp-address",
                "127.0.0.1:0",
                "--http-address=127.0.0.1:0",
                "-data-path",
                "/tmp/x",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
                "--snappy",
                "--verbose",
                "--lookupd-tcp-address",
                "127.0.0.1:4160",
            ]
        )
        self.assertEqual(options.tcp_address, "127.0.0.1:0")
        self.assertEqual(options.http_address, "127.0.0.1:0")
        self.assertEqual(options.data_path, "/tmp/x")
        self.assertEqual((options.tls_cert, options.tls_key), ("c.pem", "k.pem"))
        self.assertTrue(options.snappy)
        self.assertTrue(options.verbose)
        self.assertEqual(options.lookupd_tcp_addresses, ["127.0.0.1:4160"])

    def test_values(self) -> None:
        options = parse_nsqd_args(
            [
                "--node-id=12",
                "--msg-timeout=1m30s",
                "--max-req-timeout",
                "2h",
                "--output-buffer-timeout=100ms",
                "--mem-queue-size=0",
                "--deflate=false",
                "--max-deflate-level=9",
                "--e2e-processing-latency-percentile=0.5,0.99",
                "--e2e-processing-latency-percentile=1.0",
                "--auth-http-address=a:1",
                "--auth-http-address=http://b/auth",
                "--auth-http-request-method=POST",
                "--tls-required=tcp-https",
                "--tls-min-version=TLS1.2",
                "--log-level=DEBUG",
                "--log-prefix=",
                "--http-address=",
                "--enable-experiment=topology-aware-consumption",
                "--handshake-timeout=0",
                "--worker-id",
            ]
        )
        self.assertEqual(options.node_id, 12)
        self.assertEqual(options.msg_timeout, 90.0)
        self.assertEqual(options.max_req_timeout, 7200.0)
        self.assertEqual(options.output_buffer_timeout, 0.1)
        self.assertEqual(options.mem_queue_size, 0)
        self.assertFalse(options.deflate)
        self.assertEqual(options.max_deflate_level, 9)
        self.assertEqual(options.e2e_processing_latency_percentiles, [1.0, 0.99, 0.5])
        self.assertEqual(options.auth_http_addresses, ["a:1", "http://b/auth"])
        self.assertEqual(options.auth_http_request_method, "post")
        self.assertEqual(options.tls_required, "tcp-https")
        self.assertEqual(options.tls_min_version, "tls1.2")
        self.assertEqual(options.log_level, "debug")
        self.assertEqual(options.log_prefix, "")
        self.assertEqual(options.http_address, "")
        self.assertEqual(options.enable_experiment, ["topology-aware-consumption"])
        self.assertEqual(options.handshake_timeout, 0.0)

    def test_bare_tls_required(self) -> None:
        self.assertEqual(parse_nsqd_args(["--tls-required"]).tls_required, "true")
        self.assertEqual(parse_nsqd_args(["--tls-required=false"]).tls_required, "false")

    def test_refused(self) -> None:
        """Words outside a flag's choices are flag errors."""
        for argv in (
            ["--log-level=warning"],
            ["--tls-min-version=ssl3.0"],
            ["--auth-http-request-method=put"],
            ["--tls-required=sometimes"],
            ["--node-id=one"],
            ["--msg-timeout=60"],
            ["--client-timeout=1s"],
        ):
            self.assertRaises(FlagError, parse_nsqd_args, argv)

    def test_help_and_version(self) -> None:
        self.assertRaises(HelpRequested, parse_nsqd_args, ["-h"])
        self.assertRaises(VersionRequested, parse_nsqd_args, ["--version"])

    def test_config_keys(self) -> None:
        """Config keys are flag names with C{_}, except Go's own names for five of them."""
        path = self.config(
            "id = 77\n"
            'nsqlookupd_tcp_addresses = ["l1:4160", "l2:4160"]\n'
            'auth_http_addresses = ["auth:1"]\n'
            "e2e_processing_latency_percentiles = [0.99, 0.5]\n"
            'enable_experiment = ["topology-aware-consumption"]\n'
            'tcp_address = "127.0.0.1:5150"\n'
            'msg_timeout = "30s"\n'
            "max_req_timeout = 5000\n"
            "snappy = false\n"
            "tls_required = true\n"
            'tls_min_version = "tls1.2"\n'
            'log_level = "warn"\n'
        )
        options = parse_nsqd_args([f"--config={path}"])
        self.assertEqual(options.node_id, 77)
        self.assertEqual(options.lookupd_tcp_addresses, ["l1:4160", "l2:4160"])
        self.assertEqual(options.auth_http_addresses, ["auth:1"])
        self.assertEqual(options.e2e_processing_latency_percentiles, [0.99, 0.5])
        self.assertEqual(options.enable_experiment, ["topology-aware-consumption"])
        self.assertEqual(options.tcp_address, "127.0.0.1:5150")
        self.assertEqual(options.msg_timeout, 30.0)
        self.assertEqual(options.max_req_timeout, 5.0)
        self.assertFalse(options.snappy)
        self.assertEqual(options.tls_required, "true")
        self.assertEqual(options.tls_min_version, "tls1.2")
        self.assertEqual(options.log_level, "warn")

    def test_flag_names_are_not_config_keys(self) -> None:
        """Where Go renamed a key, the flag-derived name does nothing (as in Go)."""
        path = self.config('node_id = 5\nlookupd_tcp_addresses = ["x:1"]\nversion = true\n')
        options = parse_nsqd_args(["--config", path])
        self.assertEqual(options.node_id, NSQDOptions().node_id)
        self.assertEqual(options.lookupd_tcp_addresses, [])

    def test_precedence(self) -> None:
        """Command line over file over defaults."""
        path = self.config(
            'tcp_address = "127.0.0.1:5150"\nhttp_address = "127.0.0.1:5151"\nsync_every = 1\n'
        )
        options = parse_nsqd_args(["--http-address=127.0.0.1:6151", "--config", path])
        self.assertEqual(options.tcp_address, "127.0.0.1:5150")
        self.assertEqual(options.http_address, "127.0.0.1:6151")
        self.assertEqual(options.sync_every, 1)
        self.assertEqual(options.max_rdy_count, 2500)

    def test_bad_config(self) -> None:
        self.assertRaises(ConfigError, parse_nsqd_args, ["--config", self.config("max_rdy_count = 'x'\n")])
        self.assertRaises(ConfigError, parse_nsqd_args, ["--config", self.config("tls_required = 'maybe'\n")])


class ValidateTests(SynchronousTestCase):
    def assertInvalid(self, message: str, **settings: object) -> None:
        options = NSQDOptions(**settings)  # type: ignore[arg-type]
        with self.assertRaises(ValueError) as caught:
            options.validate()
        self.assertIn(message, str(caught.exception))

    def test_node_id(self) -> None:
        self.assertInvalid("--node-id must be [0,1024)", node_id=1024)
        self.assertInvalid("--node-id must be [0,1024)", node_id=-1)
        NSQDOptions(node_id=0).validate()
        NSQDOptions(node_id=1023).validate()

    def test_deflate_level(self) -> None:
        self.assertInvalid("--max-deflate-level must be [1,9]", max_deflate_level=0)
        self.assertInvalid("--max-deflate-level must be [1,9]", max_deflate_level=10)
        NSQDOptions(max_deflate_level=1).validate()

    def test_percentiles(self) -> None:
        self.assertInvalid(
            "invalid E2E processing latency percentile: 0", e2e_processing_latency_percentiles=[0.0]
        )
        self.assertInvalid("percentile: 1.5", e2e_processing_latency_percentiles=[0.5, 1.5])
        NSQDOptions(e2e_processing_latency_percentiles=[1.0, 0.01]).validate()

    def test_tls_needs_cert(self) -> None:
        """Requiring TLS without a certificate and key is refused."""
        message = "cannot require TLS client connections without TLS key and cert"
        self.assertInvalid(message, tls_required="true")
        self.assertInvalid(message, tls_required="tcp-https")
        self.assertInvalid(message, tls_client_auth_policy="require")
        NSQDOptions(tls_required="true", tls_cert="c", tls_key="k").validate()

    def test_cert_and_key_together(self) -> None:
        self.assertInvalid("--tls-cert and --tls-key", tls_cert="c")
        self.assertInvalid("--tls-cert and --tls-key", tls_key="k")

    def test_policy_forces_tls(self) -> None:
        """A client-auth policy turns C{tls_required} on, as in Go; C{tcp-https} stays."""
        options = NSQDOptions(tls_cert="c", tls_key="k", tls_client_auth_policy="require-verify")
        self.assertEqual(options.effective_tls_required, "true")
        self.assertTrue(options.http_tls_required)
        options.validate()
        self.assertEqual(options.tls_required, "true")
        options = NSQDOptions(
            tls_cert="c", tls_key="k", tls_client_auth_policy="require", tls_required="tcp-https"
        )
        options.validate()
        self.assertEqual(options.tls_required, "tcp-https")
        self.assertTrue(options.tcp_tls_required)
        self.assertFalse(options.http_tls_required)

    def test_tls_words(self) -> None:
        self.assertInvalid(
            "--tls-client-auth-policy", tls_cert="c", tls_key="k", tls_client_auth_policy="maybe"
        )
        self.assertInvalid("--tls-min-version", tls_min_version="ssl3.0")
        self.assertInvalid("--tls-required", tls_required="yes")
        for version in TLS_VERSIONS:
            NSQDOptions(tls_min_version=version).validate()

    def test_tls_properties(self) -> None:
        options = NSQDOptions()
        self.assertFalse(options.tls_enabled)
        self.assertFalse(options.tcp_tls_required)
        self.assertFalse(options.http_tls_required)
        options = NSQDOptions(tls_cert="c", tls_key="k", tls_required="tcp-https")
        self.assertTrue(options.tls_enabled)
        self.assertTrue(options.tcp_tls_required)
        self.assertFalse(options.http_tls_required)

    def test_words(self) -> None:
        self.assertInvalid("--log-level", log_level="loud")
        self.assertInvalid("--auth-http-request-method", auth_http_request_method="put")
        self.assertInvalid("unknown experiment 'warp'", enable_experiment=["warp"])

    def test_negative(self) -> None:
        self.assertInvalid("--msg-timeout must not be negative", msg_timeout=-1.0)
        self.assertInvalid("--handshake-timeout must not be negative", handshake_timeout=-1.0)
        self.assertInvalid("--mem-queue-size must not be negative", mem_queue_size=-1)
        self.assertInvalid("client_timeout must be positive", client_timeout=0.0)
