"""
The C{nsqd} console script: Go nsqd's command line, log format and exit statuses.

Exit statuses: 0 after a clean stop (SIGINT/SIGTERM), C{--help} or C{--version}; 2 for a bad
flag; 1 when the config file, the options or a listener stop nsqd from starting.

Everything is imported inside L{main}, so that a fresh process can keep the TLS bindings out
(L{twisted_nsq._runtime.modules_hidden}): the standard library's C{ssl} and C{_hashlib}, which
nsqd never uses, always; pyOpenSSL unless the options ask for TLS. An idle nsqd without them
uses about 16 MiB less memory (docs/performance.md, "Idle memory").
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted_nsq._runtime import STDLIB_TLS_MODULES, TLS_MODULES, modules_hidden

if TYPE_CHECKING:
    from twisted_nsq.nsqd.options import NSQDOptions


def needs_tls_modules(options: NSQDOptions) -> bool:
    """
    Whether this nsqd may use TLS: a certificate, key or CA file for the TCP upgrade and HTTPS,
    or an https:// auth server.
    """
    return bool(
        options.tls_cert
        or options.tls_key
        or options.tls_root_ca_file
        or any(address.lower().startswith("https:") for address in options.auth_http_addresses)
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run nsqd until SIGINT or SIGTERM; exits the process with nsqd's exit status."""
    # Only a process that has not imported Twisted yet (the console script) is changed; a test
    # calling main keeps the modules it has.
    fresh = "twisted" not in sys.modules
    with modules_hidden(STDLIB_TLS_MODULES if fresh else ()):
        from twisted_nsq._daemon import daemon_flag_values
        from twisted_nsq._runner import serve
        from twisted_nsq.nsqd.options import NSQD_FLAGS, options_from_values

        values = daemon_flag_values("nsqd", NSQD_FLAGS, argv)
        options = options_from_values(values)
        # Imported only now: --help and --version need none of the server.
        with modules_hidden(TLS_MODULES if fresh and not needs_tls_modules(options) else ()):
            from twisted_nsq._reactor import global_reactor

            # Installed before the server's modules are imported, in case one imports the reactor.
            reactor = global_reactor()
            from twisted_nsq.nsqd.service import NSQDService, StartupError

    serve(
        "nsqd",
        reactor,
        NSQDService(options, reactor),
        (StartupError,),
        options.log_prefix,
        options.log_level,
    )
