"""
The integration-test harness for nsqadmin: L{start_nsqadmin} runs the C{nsqadmin} console script
(or the command in C{$TWISTED_NSQ_TEST_NSQADMIN}) on a loopback port chosen by the kernel, reads
the port from its C{HTTP: listening on ...} line, and registers a cleanup with the test that
stops it (failing the test if it died on its own, logged a traceback or did not stop cleanly).
L{start_admin_cluster} starts the cluster the nsqadmin tests look at.
"""

from __future__ import annotations

import attrs
from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import (
    START_TIMEOUT,
    NSQDProcess,
    daemon_command,
    start_nsqd,
    start_nsqlookupd,
    start_process,
)

__all__ = [
    "NSQADMIN_COMMAND_VARIABLE",
    "AdminCluster",
    "nsqadmin_command",
    "start_admin_cluster",
    "start_nsqadmin",
]

#: An environment variable holding another nsqadmin command line (e.g. a Go nsqadmin binary).
NSQADMIN_COMMAND_VARIABLE = "TWISTED_NSQ_TEST_NSQADMIN"


def nsqadmin_command() -> list[str]:
    """C{$TWISTED_NSQ_TEST_NSQADMIN} if set, otherwise this virtualenv's C{nsqadmin} script."""
    return daemon_command(NSQADMIN_COMMAND_VARIABLE, "nsqadmin")


def start_nsqadmin(
    test: SynchronousTestCase, *extra_flags: str, timeout: float = START_TIMEOUT, dash: str = "--"
) -> NSQDProcess:
    """
    Start nsqadmin on 127.0.0.1 with a kernel-chosen port and wait until it listens.

    @param extra_flags: its other flags; one of C{--lookupd-http-address} or
        C{--nsqd-http-address} is required.
    """
    flags = [f"{dash}http-address=127.0.0.1:0", *extra_flags]
    return start_process(test, "nsqadmin", nsqadmin_command(), flags, timeout, listeners=("HTTP",))


@attrs.frozen
class AdminCluster:
    """The processes of L{start_admin_cluster}; C{base} is nsqadmin's C{http://host:port}."""

    lookupd: NSQDProcess
    nodes: list[NSQDProcess]
    admin: NSQDProcess
    base: str


def start_admin_cluster(test: SynchronousTestCase, nodes: int = 2) -> AdminCluster:
    """
    One nsqlookupd, C{nodes} nsqd registered with it (broadcasting 127.0.0.1), and an nsqadmin
    reading the cluster through the lookupd; each stopped when C{test} ends.
    """
    lookupd = start_nsqlookupd(test)
    _, lookupd_tcp = lookupd.tcp_address
    started = [
        start_nsqd(test, f"--lookupd-tcp-address=127.0.0.1:{lookupd_tcp}", "--broadcast-address=127.0.0.1")
        for _ in range(nodes)
    ]
    admin = start_nsqadmin(test, f"--lookupd-http-address={lookupd.http_hostport}")
    return AdminCluster(lookupd, started, admin, f"http://{admin.http_hostport}")
