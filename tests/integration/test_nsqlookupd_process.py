"""
The C{nsqlookupd} console script as a harness runs it: a child process started with Go-style
flags, found through its stderr log lines, stopped with SIGTERM or SIGINT.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import START_TIMEOUT, NSQDProcess

NSQLOOKUPD = os.path.join(os.path.dirname(sys.executable), "nsqlookupd")
TIMEOUT = 20.0
LOG_LINE = r"\[nsqlookupd\] \d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6} INFO: "


def http_get(hostport: str, path: str) -> tuple[int, bytes]:
    """One GET against a daemon's HTTP API: the status and the body."""
    with urllib.request.urlopen(f"http://{hostport}{path}", timeout=TIMEOUT) as response:
        status: int = response.status
        return status, response.read()


class NSQLookupdProcessTests(SynchronousTestCase):
    """A real C{nsqlookupd} child process."""

    def spawn(self, *flags: str) -> NSQDProcess:
        popen = subprocess.Popen(
            [NSQLOOKUPD, *flags],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        process = NSQDProcess(popen, list(flags), "nsqlookupd")
        self.addCleanup(process.cleanup)
        return process

    def start(self, *flags: str) -> NSQDProcess:
        process = self.spawn(*flags)
        try:
            process.wait_listening(("TCP", "HTTP"), START_TIMEOUT)
        except RuntimeError as e:
            raise AssertionError(str(e)) from None
        return process

    def test_serve_and_sigterm(self) -> None:
        """
        nsqlookupd starts on C{:0} ports, prints them in Go's log format, answers HTTP and a V1
        client, and exits 0 on SIGTERM after closing its listeners.
        """
        process = self.start("--tcp-address=127.0.0.1:0", "--http-address=127.0.0.1:0")
        (tcp_host, tcp_port), (http_host, http_port) = process.tcp_address, process.http_address
        self.assertEqual((tcp_host, http_host), ("127.0.0.1", "127.0.0.1"))
        self.assertRegex(process.output(), LOG_LINE + rf"TCP: listening on 127\.0\.0\.1:{tcp_port}\n")
        self.assertRegex(process.output(), LOG_LINE + rf"HTTP: listening on 127\.0\.0\.1:{http_port}")
        self.assertRegex(
            process.output().splitlines()[0],
            LOG_LINE + r"nsqlookupd v1\.3\.0-twisted \(built w/python3\.\d+\.\d+\)$",
        )

        self.assertEqual(http_get(process.http_hostport, "/ping"), (200, b"OK"))
        status, body = http_get(process.http_hostport, "/info")
        self.assertEqual((status, json.loads(body)), (200, {"version": "1.3.0"}))

        with socket.create_connection(("127.0.0.1", tcp_port), timeout=TIMEOUT) as link:
            link.sendall(b"  V1PING\n")
            reply = b""
            while len(reply) < 6:
                chunk = link.recv(64)
                self.assertTrue(chunk, "nsqlookupd closed the connection")
                reply += chunk
            self.assertEqual(reply, struct.pack(">i", 2) + b"OK")

        self.assertEqual(process.stop(), 0, process.output())
        output = process.output()
        self.assertIn("INFO: SIGTERM: shutting down", output)
        self.assertLess(output.index(f"TCP: closing 127.0.0.1:{tcp_port}"), output.index("HTTP: closing"))
        self.assertNotIn("Traceback", output)

    def test_sigint(self) -> None:
        """SIGINT (a terminal's Ctrl-C) stops nsqlookupd cleanly too."""
        process = self.start("-tcp-address", "127.0.0.1:0", "-http-address", "127.0.0.1:0")
        process.popen.send_signal(signal.SIGINT)
        self.assertEqual(process.popen.wait(TIMEOUT), 0, process.output())
        self.assertEqual(process.stop(), 0)
        self.assertIn("SIGINT: shutting down", process.output())

    def test_config_and_prefix(self) -> None:
        """A C{--config} file sets the addresses; C{--log-prefix} changes every line's prefix."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write('tcp_address = "127.0.0.1:0"\nhttp_address = "127.0.0.1:0"\nlog_prefix = "[lk] "\n')
        process = self.start(f"--config={path}")
        self.assertEqual(http_get(process.http_hostport, "/ping"), (200, b"OK"))
        self.assertTrue(process.output().startswith("[lk] "), process.output())

    def test_busy_port(self) -> None:
        """A busy port stops start-up with a FATAL line and exit status 1."""
        first = self.start("--tcp-address=127.0.0.1:0", "--http-address=127.0.0.1:0")
        _, tcp_port = first.tcp_address
        second = self.spawn(f"--tcp-address=127.0.0.1:{tcp_port}", "--http-address=127.0.0.1:0")
        self.assertEqual(second.popen.wait(TIMEOUT), 1)
        self.assertEqual(second.stop(), 1)
        self.assertIn(
            f"FATAL: failed to instantiate nsqlookupd - listen (127.0.0.1:{tcp_port}) failed - ",
            second.output(),
        )
        self.assertNotIn("HTTP: listening", second.output())
        self.assertEqual(http_get(first.http_hostport, "/ping"), (200, b"OK"))


class CommandLineTests(SynchronousTestCase):
    """What C{nsqlookupd} prints and returns before it starts anything."""

    def run_lookupd(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NSQLOOKUPD, *argv], capture_output=True, text=True, timeout=TIMEOUT, check=False
        )

    def test_version(self) -> None:
        """C{--version} prints the version line (the running Python's version), and exits 0."""
        result = self.run_lookupd("--version")
        self.assertEqual(result.returncode, 0)
        self.assertEqual(
            result.stdout, f"nsqlookupd v1.3.0-twisted (built w/python{platform.python_version()})\n"
        )
        self.assertEqual(result.stderr, "")

    def test_bad_flag(self) -> None:
        """An unknown flag prints Go's message and the usage to stderr, and exits 2."""
        result = self.run_lookupd("--data-path=/tmp")
        self.assertEqual(result.returncode, 2)
        self.assertTrue(
            result.stderr.startswith("flag provided but not defined: -data-path\nUsage of nsqlookupd:\n")
        )

    def test_help(self) -> None:
        result = self.run_lookupd("-h")
        self.assertEqual(result.returncode, 0)
        for flag in (
            "  -tcp-address string",
            "  -tombstone-lifetime duration",
            "  -broadcast-address string",
        ):
            self.assertIn(flag, result.stderr)

    def test_bad_config(self) -> None:
        """An unreadable config file is FATAL, exit 1, in nsqlookupd's log format."""
        result = self.run_lookupd("--config=/nonexistent/nsqlookupd.toml")
        self.assertEqual(result.returncode, 1)
        self.assertRegex(
            result.stderr,
            r"^\[nsqlookupd\] \d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6} FATAL: "
            r"failed to load config file /nonexistent/nsqlookupd\.toml - ",
        )

    def test_invalid_option(self) -> None:
        """A value the start-up checks refuse is FATAL, exit 1."""
        result = self.run_lookupd("--tombstone-lifetime=-1s", "--tcp-address=127.0.0.1:0")
        self.assertEqual(result.returncode, 1)
        self.assertIn(
            "FATAL: failed to instantiate nsqlookupd - --tombstone-lifetime must not be negative",
            result.stderr,
        )
