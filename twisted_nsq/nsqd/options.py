"""
nsqd's settings: L{NSQDOptions} with Go nsqd 1.3.0's defaults, the flag table that fills it from a
Go-style command line or C{--config} TOML file, and Go's start-up checks.

Durations are float seconds. C{data_path=""} means the current directory.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

import attrs

from twisted_nsq._cli import CONFIG_FLAG, VERSION_FLAG, FlagSpec, Kind
from twisted_nsq._log import LOG_LEVELS
from twisted_nsq._options import (
    check_log_level,
    check_not_negative,
    flag_maker,
    options_from,
    parse_options_from,
)
from twisted_nsq.nsqd.ordered import check_order_key, check_patterns
from twisted_nsq.wire.ids import MAX_NODE_ID, default_node_id

#: C{--tls-min-version} words and the TLS protocol numbers nsqd reports for them (C{/info}).
TLS_VERSIONS: dict[str, int] = {"tls1.0": 0x0301, "tls1.1": 0x0302, "tls1.2": 0x0303, "tls1.3": 0x0304}
TLS_REQUIRED_VALUES = ("false", "true", "tcp-https")
TLS_CLIENT_AUTH_POLICIES = ("", "require", "require-verify")
AUTH_HTTP_REQUEST_METHODS = ("get", "post")
#: Experiments C{--enable-experiment} knows (NSQ master).
EXPERIMENTS = ("topology-aware-consumption",)


def _hostname() -> str:
    return socket.gethostname()


def _default_node_id() -> int:
    return default_node_id(socket.gethostname())


@attrs.define
class NSQDOptions:
    """Every nsqd setting, named after its flag (C{--mem-queue-size} is C{mem_queue_size})."""

    node_id: int = attrs.field(factory=_default_node_id)
    log_level: str = "info"
    log_prefix: str = "[nsqd] "
    verbose: bool = False

    tcp_address: str = "0.0.0.0:4150"
    http_address: str = "0.0.0.0:4151"
    https_address: str = "0.0.0.0:4152"
    broadcast_address: str = attrs.field(factory=_hostname)
    broadcast_tcp_port: int = 0
    broadcast_http_port: int = 0
    lookupd_tcp_addresses: list[str] = attrs.field(factory=list)
    auth_http_addresses: list[str] = attrs.field(factory=list)
    auth_http_request_method: str = "get"
    http_client_connect_timeout: float = 2.0
    http_client_request_timeout: float = 5.0
    topology_region: str = ""
    topology_zone: str = ""
    enable_experiment: list[str] = attrs.field(factory=list)

    data_path: str = ""
    mem_queue_size: int = 10000
    max_bytes_per_file: int = 104857600
    sync_every: int = 2500
    sync_timeout: float = 2.0
    queue_scan_worker_pool_max: int = 4
    queue_scan_selection_count: int = 20

    msg_timeout: float = 60.0
    max_msg_timeout: float = 900.0
    max_msg_size: int = 1048576
    max_req_timeout: float = 3600.0
    max_body_size: int = 5242880

    max_heartbeat_interval: float = 60.0
    max_rdy_count: int = 2500
    max_output_buffer_size: int = 65536
    max_output_buffer_timeout: float = 30.0
    min_output_buffer_timeout: float = 0.025
    output_buffer_timeout: float = 0.25
    max_channel_consumers: int = 0

    statsd_address: str = ""
    statsd_prefix: str = "nsq.%s"
    statsd_interval: float = 60.0
    statsd_mem_stats: bool = True
    statsd_udp_packet_size: int = 508
    statsd_exclude_ephemeral: bool = False

    e2e_processing_latency_percentiles: list[float] = attrs.field(factory=list)
    e2e_processing_latency_window_time: float = 600.0

    tls_cert: str = ""
    tls_key: str = ""
    tls_client_auth_policy: str = ""
    tls_root_ca_file: str = ""
    tls_required: str = "false"
    tls_min_version: str = "tls1.0"

    deflate: bool = True
    max_deflate_level: int = 6
    snappy: bool = True

    #: No flag in nsqd 1.3.0: fixed at 60s, so the default heartbeat interval is 30s.
    client_timeout: float = 60.0
    #: twisted-nsq only: close a connection that has not sent its protocol magic within this
    #: many seconds (0 disables). Go nsqd waits forever.
    handshake_timeout: float = 10.0
    #: twisted-nsq only: acknowledge a publish only once it is fsynced, and keep each message on
    #: disk until it is FINed (see docs/extensions/durable.md).
    durable: bool = False
    #: twisted-nsq only: deferred messages keep their remaining deferral across a clean restart
    #: (a sidecar file next to the queue's files; see docs/extensions/deferred.md).
    keep_deferred: bool = False
    #: twisted-nsq only: deferred messages a channel keeps in memory; more spill to disk with
    #: their due time (0: no limit, as NSQ). See docs/extensions/deferred.md.
    deferred_memory_limit: int = 0
    #: twisted-nsq only: serve the C{/debug/...} HTTP endpoints (thread stacks, GC statistics,
    #: C{/debug/freememory}); off by default, where they answer 404 (see
    #: docs/extensions/http-hardening.md).
    http_debug: bool = False
    #: twisted-nsq only: regular expressions; a channel created (by SUB or HTTP without
    #: C{ordered=}) whose whole name matches one is ordered (see docs/extensions/ordered.md).
    ordered_channel: list[str] = attrs.field(factory=list)
    #: twisted-nsq only: the order key spec (C{json:FIELD} or C{prefix:DELIM}) given to new
    #: channels that C{ordered_channel} makes ordered ("": ordered as a whole).
    ordered_channel_key: str = ""
    #: twisted-nsq only: messages a channel ordered by key parks behind busy keys before it
    #: stops reading its queue.
    ordered_max_pending: int = 10000

    @property
    def heartbeat_interval(self) -> float:
        """The heartbeat interval a client gets unless IDENTIFY asks for another."""
        return self.client_timeout / 2

    @property
    def effective_tls_required(self) -> str:
        """C{tls_required} after Go's one implied setting: a client-auth policy requires TLS."""
        if self.tls_client_auth_policy and self.tls_required == "false":
            return "true"
        return self.tls_required

    @property
    def tcp_tls_required(self) -> bool:
        """Whether a TCP client must upgrade to TLS before anything but IDENTIFY."""
        return self.effective_tls_required != "false"

    @property
    def http_tls_required(self) -> bool:
        """Whether plain HTTP answers C{403 TLS_REQUIRED} (C{--tls-required=true})."""
        return self.effective_tls_required == "true"

    @property
    def tls_enabled(self) -> bool:
        """Whether a certificate is configured (TLS upgrades and the HTTPS listener)."""
        return bool(self.tls_cert and self.tls_key)

    @property
    def tls_min_version_number(self) -> int:
        """The TLS protocol number of C{tls_min_version} (769 for C{tls1.0}), as C{/info} shows it."""
        return TLS_VERSIONS[self.tls_min_version]

    def resolved_data_path(self) -> str:
        """The data directory: C{data_path}, or the current directory when it is empty."""
        return self.data_path or os.getcwd()

    def validate(self) -> None:
        """
        Apply nsqd's start-up checks.

        Like Go, a client-auth policy with C{tls_required="false"} turns C{tls_required} to C{"true"}.

        @raise ValueError: with a message naming the flag, for the first setting that is wrong.
        """
        if not 0 <= self.node_id <= MAX_NODE_ID:
            raise ValueError(f"--node-id must be [0,{MAX_NODE_ID + 1}) (got {self.node_id})")
        if not 1 <= self.max_deflate_level <= 9:
            raise ValueError(f"--max-deflate-level must be [1,9] (got {self.max_deflate_level})")
        for percentile in self.e2e_processing_latency_percentiles:
            if not 0 < percentile <= 1:
                raise ValueError(
                    f"invalid E2E processing latency percentile: {percentile} (must be in (0,1])"
                )
        check_log_level(self.log_level)
        if self.auth_http_request_method not in AUTH_HTTP_REQUEST_METHODS:
            raise ValueError(
                f"--auth-http-request-method must be get or post (got {self.auth_http_request_method!r})"
            )
        for experiment in self.enable_experiment:
            if experiment not in EXPERIMENTS:
                raise ValueError(
                    f"--enable-experiment: unknown experiment {experiment!r} "
                    f"(known: {', '.join(EXPERIMENTS)})"
                )
        self._validate_tls()
        check_patterns(self.ordered_channel)
        check_order_key(self.ordered_channel_key)
        if self.ordered_max_pending < 1:
            raise ValueError(f"--ordered-max-pending must be at least 1 (got {self.ordered_max_pending})")
        check_not_negative(self, (*_DURATION_FIELDS, *_COUNT_FIELDS))
        if self.client_timeout <= 0:
            raise ValueError("client_timeout must be positive")

    def _validate_tls(self) -> None:
        if self.tls_required not in TLS_REQUIRED_VALUES:
            raise ValueError(f"--tls-required must be true, false or tcp-https (got {self.tls_required!r})")
        if self.tls_client_auth_policy not in TLS_CLIENT_AUTH_POLICIES:
            raise ValueError(
                "--tls-client-auth-policy must be require or require-verify "
                f"(got {self.tls_client_auth_policy!r})"
            )
        if self.tls_min_version not in TLS_VERSIONS:
            raise ValueError(
                f"--tls-min-version must be one of {', '.join(TLS_VERSIONS)} (got {self.tls_min_version!r})"
            )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("--tls-cert and --tls-key must be given together")
        if self.tls_client_auth_policy and self.tls_required == "false":
            self.tls_required = "true"
        if self.tls_required != "false" and not self.tls_enabled:
            raise ValueError("cannot require TLS client connections without TLS key and cert")


_DURATION_FIELDS = (
    "http_client_connect_timeout",
    "http_client_request_timeout",
    "sync_timeout",
    "msg_timeout",
    "max_msg_timeout",
    "max_req_timeout",
    "max_heartbeat_interval",
    "max_output_buffer_timeout",
    "min_output_buffer_timeout",
    "output_buffer_timeout",
    "statsd_interval",
    "e2e_processing_latency_window_time",
    "handshake_timeout",
)
_COUNT_FIELDS = (
    "broadcast_tcp_port",
    "broadcast_http_port",
    "mem_queue_size",
    "max_bytes_per_file",
    "sync_every",
    "queue_scan_worker_pool_max",
    "queue_scan_selection_count",
    "max_msg_size",
    "max_body_size",
    "max_rdy_count",
    "max_output_buffer_size",
    "max_channel_consumers",
    "statsd_udp_packet_size",
    "deferred_memory_limit",
)


def _flags() -> tuple[FlagSpec, ...]:
    flag = flag_maker(NSQDOptions())
    STR, INT, DUR, BOOL = Kind.STRING, Kind.INT, Kind.DURATION, Kind.BOOL
    return (
        FlagSpec(VERSION_FLAG, BOOL, False, "print the version and exit", in_config=False),
        FlagSpec(
            CONFIG_FLAG,
            STR,
            "",
            "path to a TOML config file",
            in_config=False,
        ),
        flag("log-level", STR, "log verbosity: debug, info, warn, error or fatal", choices=tuple(LOG_LEVELS)),
        flag("log-prefix", STR, "prefix of every log line"),
        flag("verbose", BOOL, "deprecated, has no effect (use --log-level)"),
        flag(
            "node-id",
            INT,
            "unique part of message IDs, in [0,1024); defaults to a hash of the hostname",
            config_key="id",
        ),
        FlagSpec("worker-id", BOOL, False, "deprecated, has no effect (use --node-id)", in_config=False),
        flag("tcp-address", STR, "<addr>:<port> (or a unix socket path) to listen on for TCP clients"),
        flag("http-address", STR, "<addr>:<port> (or a unix socket path) for HTTP clients; empty disables"),
        flag("https-address", STR, "<addr>:<port> for HTTPS clients (only with --tls-cert and --tls-key)"),
        flag("broadcast-address", STR, "address registered with nsqlookupd; defaults to the OS hostname"),
        flag("broadcast-tcp-port", INT, "TCP port registered with nsqlookupd (default: the bound port)"),
        flag("broadcast-http-port", INT, "HTTP port registered with nsqlookupd (default: the bound port)"),
        flag(
            "lookupd-tcp-address",
            Kind.STRING_LIST,
            "nsqlookupd TCP address (may be given multiple times)",
            attr="lookupd_tcp_addresses",
            config_key="nsqlookupd_tcp_addresses",
        ),
        flag(
            "auth-http-address",
            Kind.STRING_LIST,
            "<addr>:<port> or a full URL of an auth server (may be given multiple times)",
            attr="auth_http_addresses",
        ),
        flag(
            "auth-http-request-method",
            STR,
            "HTTP method of auth requests: get or post",
            choices=AUTH_HTTP_REQUEST_METHODS,
        ),
        flag("http-client-connect-timeout", DUR, "connect timeout of HTTP calls (auth, nsqlookupd)"),
        flag("http-client-request-timeout", DUR, "request timeout of HTTP calls (auth, nsqlookupd)"),
        flag("topology-region", STR, "region of this nsqd, for topology-aware consumption"),
        flag("topology-zone", STR, "zone of this nsqd, for topology-aware consumption"),
        flag(
            "enable-experiment",
            Kind.STRING_LIST,
            "experiment to enable: topology-aware-consumption (may be given multiple times)",
        ),
        flag("data-path", STR, "directory of the diskqueues and nsqd.dat (default: the current directory)"),
        flag("mem-queue-size", INT, "messages kept in memory per topic and per channel"),
        flag("max-bytes-per-file", INT, "bytes per diskqueue file before rolling to a new one"),
        flag("sync-every", INT, "messages per diskqueue fsync"),
        flag("sync-timeout", DUR, "longest time between diskqueue fsyncs"),
        flag("queue-scan-worker-pool-max", INT, "accepted for compatibility (one timer per channel)"),
        flag("queue-scan-selection-count", INT, "accepted for compatibility (one timer per channel)"),
        flag("msg-timeout", DUR, "default time before an unfinished message is requeued"),
        flag("max-msg-timeout", DUR, "longest message timeout a client may ask for"),
        flag("max-msg-size", INT, "largest message body in bytes"),
        flag("max-req-timeout", DUR, "longest REQ, DPUB or /pub?defer delay"),
        flag("max-body-size", INT, "largest command body in bytes (MPUB)"),
        flag("max-heartbeat-interval", DUR, "longest heartbeat interval a client may ask for"),
        flag("max-rdy-count", INT, "largest RDY count a client may set"),
        flag("max-output-buffer-size", INT, "largest output buffer a client may ask for, in bytes"),
        flag("max-output-buffer-timeout", DUR, "longest output buffer flush delay a client may ask for"),
        flag("min-output-buffer-timeout", DUR, "shortest output buffer flush delay a client may ask for"),
        flag("output-buffer-timeout", DUR, "default output buffer flush delay"),
        flag("max-channel-consumers", INT, "most consumers per channel (0 means no limit)"),
        flag("statsd-address", STR, "UDP <addr>:<port> of a statsd daemon to push stats to"),
        flag("statsd-prefix", STR, "prefix of statsd keys (%s becomes <broadcast address>_<HTTP port>)"),
        flag("statsd-interval", DUR, "time between statsd pushes"),
        flag("statsd-mem-stats", BOOL, "also push memory statistics to statsd"),
        flag("statsd-udp-packet-size", INT, "size in bytes of statsd UDP packets"),
        flag("statsd-exclude-ephemeral", BOOL, "leave ephemeral topics and channels out of statsd"),
        flag(
            "e2e-processing-latency-percentile",
            Kind.FLOAT_LIST,
            "end-to-end latency percentile to track, in (0,1] "
            "(may be given multiple times or comma separated: 1.0,0.99,0.95)",
            attr="e2e_processing_latency_percentiles",
        ),
        flag("e2e-processing-latency-window-time", DUR, "time window of the end-to-end latency percentiles"),
        flag("tls-cert", STR, "path to the TLS certificate file"),
        flag("tls-key", STR, "path to the TLS key file"),
        flag("tls-client-auth-policy", STR, "client certificate policy: require or require-verify"),
        flag("tls-root-ca-file", STR, "path to the certificate authority file"),
        flag(
            "tls-required",
            Kind.BOOL_OR_CHOICE,
            "require TLS for client connections: true, false or tcp-https",
            choices=("tcp-https",),
        ),
        flag(
            "tls-min-version",
            STR,
            "oldest TLS version accepted: tls1.0, tls1.1, tls1.2 or tls1.3",
            choices=tuple(TLS_VERSIONS),
        ),
        flag("deflate", BOOL, "let clients negotiate deflate compression"),
        flag("max-deflate-level", INT, "highest deflate level a client may ask for, in [1,9]"),
        flag("snappy", BOOL, "let clients negotiate snappy compression"),
        flag(
            "handshake-timeout",
            DUR,
            "(twisted-nsq) close a connection that sends no protocol magic within this time; 0 disables",
        ),
        flag(
            "deferred-memory-limit",
            INT,
            "(twisted-nsq) deferred messages a channel keeps in memory; more go to disk (0: no limit)",
        ),
        flag(
            "keep-deferred",
            BOOL,
            "(twisted-nsq) keep deferred messages' remaining deferral across a clean restart",
        ),
        flag(
            "http-debug",
            BOOL,
            "(twisted-nsq) serve the /debug/... HTTP endpoints (thread stacks, GC statistics)",
        ),
        flag(
            "durable",
            BOOL,
            "(twisted-nsq) OK a publish only after it is fsynced; keep messages on disk until FINed",
        ),
        flag(
            "ordered-channel",
            Kind.STRING_LIST,
            "(twisted-nsq) regex: new channels whose whole name matches deliver in publish order, "
            "one message in flight (may be given multiple times)",
        ),
        flag(
            "ordered-channel-key",
            Kind.STRING,
            "(twisted-nsq) json:FIELD or prefix:DELIM: channels --ordered-channel makes ordered are "
            "ordered by this key read from the body (one message in flight per key)",
        ),
        flag(
            "ordered-max-pending",
            INT,
            "(twisted-nsq) messages a channel ordered by key holds behind busy keys before it stops "
            "reading its queue",
        ),
    )


#: nsqd's flags, in the order of its usage text's sections; defaults come from L{NSQDOptions}.
NSQD_FLAGS: tuple[FlagSpec, ...] = _flags()


def options_from_values(values: dict[str, object]) -> NSQDOptions:
    """L{NSQDOptions} from L{twisted_nsq._cli.resolve}'s result (see L{options_from})."""
    return options_from(NSQDOptions, values)


def parse_nsqd_args(argv: Sequence[str]) -> NSQDOptions:
    """An nsqd command line as L{NSQDOptions}, not yet validated (see L{parse_options_from})."""
    return parse_options_from(NSQDOptions, NSQD_FLAGS, argv)
