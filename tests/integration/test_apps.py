"""
The utilities (C{nsq_tail}, C{to_nsq}, C{nsq_stat}) run as console scripts against a real nsqd
(and nsqlookupd); every run is bounded by a timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import start_nsqd, start_nsqlookupd

#: The longest any one tool run may take.
TIMEOUT = 30.0

_BIN = os.path.dirname(sys.executable)


def _tool(name: str, *argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run one utility to its end, stdin fed and closed, stdout and stderr captured."""
    return subprocess.run(
        [os.path.join(_BIN, name), *argv], input=stdin, capture_output=True, timeout=TIMEOUT, check=False
    )


class AppsTests(SynchronousTestCase):
    def test_version(self) -> None:
        """Each tool's --version is Go's line with our version."""
        for name in ("nsq_tail", "to_nsq", "nsq_stat"):
            result = _tool(name, "--version")
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertRegex(
                result.stdout.decode(), rf"^{name} v1\.3\.0-twisted \(built w/python3\.\d+\.\d+\)\n$"
            )

    def test_to_nsq_then_tail(self) -> None:
        """to_nsq publishes every line; nsq_tail -n 10 prints ten bodies and exits by itself."""
        nsqd = start_nsqd(self)
        lines = b"".join(b"message %d\n" % i for i in range(15))
        published = _tool("to_nsq", "--topic=apps", f"--nsqd-tcp-address={nsqd.tcp_hostport}", stdin=lines)
        self.assertEqual(published.returncode, 0, published.stderr)
        tail = _tool(
            "nsq_tail", "--topic=apps", "--channel=c", f"--nsqd-tcp-address={nsqd.tcp_hostport}", "-n", "10"
        )
        self.assertEqual(tail.returncode, 0, tail.stderr)
        self.assertEqual(tail.stdout, b"".join(b"message %d\n" % i for i in range(10)))
        # The rest stayed in the channel for the next reader.
        rest = _tool(
            "nsq_tail",
            "--topic=apps",
            "--channel=c",
            f"--nsqd-tcp-address={nsqd.tcp_hostport}",
            "-n=5",
            "--print-topic",
        )
        self.assertEqual(rest.returncode, 0, rest.stderr)
        self.assertEqual(rest.stdout, b"".join(b"apps | message %d\n" % i for i in range(10, 15)))

    def test_to_nsq_rate_and_every_nsqd(self) -> None:
        """--rate spaces the publishes; every record reaches every nsqd; the last needs no delimiter."""
        first, second = start_nsqd(self), start_nsqd(self)
        started = time.monotonic()
        published = _tool(
            "to_nsq",
            "--topic=rated",
            f"--nsqd-tcp-address={first.tcp_hostport}",
            f"--nsqd-tcp-address={second.tcp_hostport}",
            "--rate=20",
            "--delimiter=,",
            stdin=b",".join(b"%d" % i for i in range(11)),
        )
        elapsed = time.monotonic() - started
        self.assertEqual(published.returncode, 0, published.stderr)
        # 11 records at 20 a second: 10 intervals of 50 ms at least.
        self.assertGreaterEqual(elapsed, 0.5)
        for nsqd in (first, second):
            tail = _tool("nsq_tail", "--topic=rated", f"--nsqd-tcp-address={nsqd.tcp_hostport}", "-n=11")
            self.assertEqual(tail.returncode, 0, tail.stderr)
            self.assertEqual(sorted(tail.stdout.split()), sorted(b"%d" % i for i in range(11)))

    def test_tail_through_lookupd(self) -> None:
        """nsq_tail finds the nsqd of its topic through lookupd."""
        lookupd = start_nsqlookupd(self)
        nsqd = start_nsqd(self, f"--lookupd-tcp-address={lookupd.tcp_hostport}")
        published = _tool(
            "to_nsq", "--topic=found", f"--nsqd-tcp-address={nsqd.tcp_hostport}", stdin=b"x\ny\n"
        )
        self.assertEqual(published.returncode, 0, published.stderr)
        tail = _tool(
            "nsq_tail",
            "--topic=found",
            f"--lookupd-http-address={lookupd.http_hostport}",
            "--consumer-opt=lookupd_poll_interval,0.5",
            "-n=2",
        )
        self.assertEqual(tail.returncode, 0, tail.stderr)
        self.assertEqual(tail.stdout, b"x\ny\n")

    def test_nsq_stat(self) -> None:
        """nsq_stat prints Go's header, then one row per later poll, and exits after --count rows."""
        nsqd = start_nsqd(self)
        published = _tool(
            "to_nsq", "--topic=st", f"--nsqd-tcp-address={nsqd.tcp_hostport}", stdin=b"a\nb\nc\n"
        )
        self.assertEqual(published.returncode, 0, published.stderr)
        # A channel exists once someone subscribed: tail one message on it first.
        tail = _tool(
            "nsq_tail", "--topic=st", "--channel=c", f"--nsqd-tcp-address={nsqd.tcp_hostport}", "-n=1"
        )
        self.assertEqual(tail.returncode, 0, tail.stderr)
        stat = _tool(
            "nsq_stat",
            "--topic=st",
            "--channel=c",
            f"--nsqd-http-address={nsqd.http_hostport}",
            "--interval=100ms",
            "--count=2",
        )
        self.assertEqual(stat.returncode, 0, stat.stderr)
        lines = stat.stdout.decode().splitlines()
        self.assertEqual(len(lines), 4)
        self.assertEqual(
            lines[1].split(), "ingress egress | total mem disk inflt def | req t-o msgs clients".split()
        )
        # No traffic between polls; depth 2 (all in memory), none in flight, 3 messages, no clients.
        self.assertEqual(lines[2].split(), ["0", "0", "|", "2", "2", "0", "0", "0", "|", "0", "0", "3", "0"])
