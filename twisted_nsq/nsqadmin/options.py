"""
nsqadmin's settings: L{NSQAdminOptions} with Go nsqadmin 1.3.0's defaults, the flag table that
fills it from a Go-style command line or C{--config} TOML file, and the start-up checks.

Durations are float seconds.
"""

from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Sequence
from urllib.parse import urlsplit

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


@attrs.define
class NSQAdminOptions:
    """Every nsqadmin setting, named after its flag (C{--base-path} is C{base_path})."""

    log_level: str = "info"
    log_prefix: str = "[nsqadmin] "
    verbose: bool = False

    http_address: str = "0.0.0.0:4171"
    #: The URL prefix every route lives under; L{validate} normalises it the way Go does
    #: (leading slash, C{path.Clean}: C{"admin/"} becomes C{"/admin"}).
    base_path: str = "/"
    dev_static_dir: str = ""

    graphite_url: str = ""
    proxy_graphite: bool = False
    statsd_prefix: str = "nsq.%s"
    statsd_counter_format: str = "stats.counters.%s.count"
    statsd_gauge_format: str = "stats.gauges.%s"
    statsd_interval: float = 60.0

    lookupd_http_addresses: list[str] = attrs.field(factory=list)
    nsqd_http_addresses: list[str] = attrs.field(factory=list)

    http_client_connect_timeout: float = 2.0
    http_client_request_timeout: float = 5.0
    http_client_tls_insecure_skip_verify: bool = False
    http_client_tls_root_ca_file: str = ""
    http_client_tls_cert: str = ""
    http_client_tls_key: str = ""

    allow_config_from_cidr: str = "127.0.0.1/8"
    notification_http_endpoint: str = ""
    acl_http_header: str = "X-Forwarded-User"
    admin_users: list[str] = attrs.field(factory=list)

    @property
    def base_prefix(self) -> str:
        """The normalised base path with a trailing slash (C{"/"} or C{"/admin/"}), for URL building."""
        normal = normalize_base_path(self.base_path)
        return normal if normal.endswith("/") else normal + "/"

    def validate(self) -> None:
        """
        Check the settings before nsqadmin starts (Go's C{nsqadmin.New} checks, with its messages),
        and normalise C{base_path}.

        @raise ValueError: with Go's message, for the first setting that is wrong.
        """
        check_log_level(self.log_level)
        if not self.nsqd_http_addresses and not self.lookupd_http_addresses:
            raise ValueError("--nsqd-http-address or --lookupd-http-address required")
        if self.nsqd_http_addresses and self.lookupd_http_addresses:
            raise ValueError("use --nsqd-http-address or --lookupd-http-address not both")
        if self.http_client_tls_cert and not self.http_client_tls_key:
            raise ValueError("--http-client-tls-key must be specified with --http-client-tls-cert")
        if self.http_client_tls_key and not self.http_client_tls_cert:
            raise ValueError("--http-client-tls-cert must be specified with --http-client-tls-key")
        for flag, addresses in (
            ("--lookupd-http-address", self.lookupd_http_addresses),
            ("--nsqd-http-address", self.nsqd_http_addresses),
        ):
            for address in addresses:
                problem = _host_port_problem(address)
                if problem:
                    raise ValueError(f"failed to resolve {flag} ({address}) - {problem}")
        if self.proxy_graphite:
            try:
                urlsplit(self.graphite_url)
            except ValueError as e:
                raise ValueError(f"failed to parse --graphite-url ({self.graphite_url}) - {e}") from None
        if self.allow_config_from_cidr:
            try:
                parse_cidr(self.allow_config_from_cidr)
            except ValueError:
                raise ValueError(
                    f"failed to parse --allow-config-from-cidr ({self.allow_config_from_cidr}) - "
                    f"invalid CIDR address: {self.allow_config_from_cidr}"
                ) from None
        if self.statsd_interval < 0:
            raise ValueError("--statsd-interval must not be negative")
        check_not_negative(self, ("http_client_connect_timeout", "http_client_request_timeout"))
        self.base_path = normalize_base_path(self.base_path)


def normalize_base_path(path: str) -> str:
    """Go nsqadmin's C{normalizeBasePath}: C{"/"} when empty, a leading slash, then C{path.Clean}."""
    if not path:
        return "/"
    if not path.startswith("/"):
        path = "/" + path
    cleaned = posixpath.normpath(path)
    # POSIX keeps a leading "//"; Go's path.Clean does not.
    return "/" + cleaned.lstrip("/")


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR as Go's C{net.ParseCIDR} reads it (host bits may be set: C{127.0.0.1/8}); ValueError if not."""
    if "/" not in text:
        raise ValueError(f"invalid CIDR address: {text}")
    return ipaddress.ip_network(text, strict=False)


def _host_port_problem(address: str) -> str:
    """Why C{address} is not a C{host:port} Go could resolve (an empty string when it is)."""
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            return f"address {address}: missing ']' in address"
        rest = address[end + 1 :]
        if not rest.startswith(":"):
            return f"address {address}: missing port in address"
        port = rest[1:]
    else:
        host, colon, port = address.rpartition(":")
        if not colon:
            return f"address {address}: missing port in address"
        if ":" in host:
            return f"address {address}: too many colons in address"
    if not port.isdigit() or int(port) > 65535:
        return f"address {address}: invalid port"
    return ""


def _flags() -> tuple[FlagSpec, ...]:
    flag = flag_maker(NSQAdminOptions())
    STR, DUR, BOOL, LIST = Kind.STRING, Kind.DURATION, Kind.BOOL, Kind.STRING_LIST
    return (
        FlagSpec(VERSION_FLAG, BOOL, False, "print version string", in_config=False),
        FlagSpec(CONFIG_FLAG, STR, "", "path to config file", in_config=False),
        flag(
            "log-level",
            STR,
            "set log verbosity: debug, info, warn, error, or fatal",
            choices=tuple(LOG_LEVELS),
        ),
        flag("log-prefix", STR, "log message prefix"),
        flag("verbose", BOOL, "[deprecated] has no effect, use --log-level"),
        flag("http-address", STR, "<addr>:<port> to listen on for HTTP clients"),
        flag("base-path", STR, "URL base path"),
        flag("dev-static-dir", STR, "(development use only)"),
        flag("graphite-url", STR, "graphite HTTP address"),
        flag("proxy-graphite", BOOL, "proxy HTTP requests to graphite"),
        flag(
            "statsd-counter-format",
            STR,
            "The counter stats key formatting applied by the implementation of statsd. "
            "If no formatting is desired, set this to an empty string.",
        ),
        flag(
            "statsd-gauge-format",
            STR,
            "The gauge stats key formatting applied by the implementation of statsd. "
            "If no formatting is desired, set this to an empty string.",
        ),
        flag(
            "statsd-prefix",
            STR,
            "prefix used for keys sent to statsd (%s for host replacement, must match nsqd)",
        ),
        flag("statsd-interval", DUR, "time interval nsqd is configured to push to statsd (must match nsqd)"),
        flag(
            "notification-http-endpoint",
            STR,
            "HTTP endpoint (fully qualified) to which POST notifications of admin actions will be sent",
        ),
        flag("http-client-connect-timeout", DUR, "timeout for HTTP connect"),
        flag("http-client-request-timeout", DUR, "timeout for HTTP request"),
        flag(
            "http-client-tls-insecure-skip-verify",
            BOOL,
            "configure the HTTP client to skip verification of TLS certificates",
        ),
        flag("http-client-tls-root-ca-file", STR, "path to CA file for the HTTP client"),
        flag("http-client-tls-cert", STR, "path to certificate file for the HTTP client"),
        flag("http-client-tls-key", STR, "path to key file for the HTTP client"),
        flag(
            "allow-config-from-cidr", STR, "A CIDR from which to allow HTTP requests to the /config endpoint"
        ),
        flag("acl-http-header", STR, "HTTP header to check for authenticated admin users"),
        flag(
            "lookupd-http-address",
            LIST,
            "lookupd HTTP address (may be given multiple times)",
            attr="lookupd_http_addresses",
            config_key="nsqlookupd_http_addresses",
        ),
        flag(
            "nsqd-http-address",
            LIST,
            "nsqd HTTP address (may be given multiple times)",
            attr="nsqd_http_addresses",
        ),
        flag(
            "admin-user",
            LIST,
            "admin user (may be given multiple times; if specified, only these users will be able to "
            "perform privileged actions; acl-http-header is used to determine the authenticated user)",
            attr="admin_users",
        ),
    )


#: nsqadmin's flags (Go's flag set); defaults come from L{NSQAdminOptions}.
NSQADMIN_FLAGS: tuple[FlagSpec, ...] = _flags()


def options_from_values(values: dict[str, object]) -> NSQAdminOptions:
    """L{NSQAdminOptions} from L{twisted_nsq._cli.resolve}'s result (see L{options_from})."""
    return options_from(NSQAdminOptions, values)


def parse_nsqadmin_args(argv: Sequence[str]) -> NSQAdminOptions:
    """An nsqadmin command line as L{NSQAdminOptions}, not yet validated (see L{parse_options_from})."""
    return parse_options_from(NSQAdminOptions, NSQADMIN_FLAGS, argv)
