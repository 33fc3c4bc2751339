"""
The C{nsqd} console script as a harness runs it: a child process started with Go-style flags,
found through its stderr log lines, stopped with SIGTERM.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from typing import TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IProcessTransport, IReactorProcess, IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

NSQD = os.path.join(os.path.dirname(sys.executable), "nsqd")
# What gnsq's harness matches in nsqd's stderr.
LISTENING = re.compile(rb"(?P<protocol>[A-Z]+): listening on (?P<host>[0-9.]+):(?P<port>[0-9]+)")
TIMEOUT = 20.0
_T = TypeVar("_T")


def _reactor() -> IReactorTime:
    """The reactor trial runs, handed explicitly to everything these tests build."""
    from twisted.internet import reactor

    return cast(IReactorTime, reactor)


class _NSQDProcess(ProcessProtocol):
    """Collects a child nsqd's stderr and reports its ports and its exit status."""

    def __init__(self, expect: frozenset[str]) -> None:
        self.expect = expect
        self.stderr = bytearray()
        self.ports: dict[str, int] = {}
        self.running = True
        self._listening: list[Deferred[dict[str, int]]] = []
        self._ended: list[Deferred[int]] = []
        self._code: int | None = None

    def when_listening(self) -> Deferred[dict[str, int]]:
        """Fires with the ports once every expected protocol listens; fails if nsqd exits first."""
        d: Deferred[dict[str, int]] = Deferred()
        if self.expect <= set(self.ports):
            d.callback(dict(self.ports))
        elif not self.running:
            d.errback(RuntimeError(f"nsqd exited before listening: {self.stderr.decode()}"))
        else:
            self._listening.append(d)
        return d

    def when_ended(self) -> Deferred[int]:
        """Fires with the exit status."""
        d: Deferred[int] = Deferred()
        if self._code is not None:
            d.callback(self._code)
        else:
            self._ended.append(d)
        return d

    def errReceived(self, data: bytes) -> None:
        self.stderr += data
        for match in LISTENING.finditer(self.stderr):
            self.ports[match["protocol"].decode()] = int(match["port"])
        if self._listening and self.expect <= set(self.ports):
            waiting, self._listening = self._listening, []
            for d in waiting:
                d.callback(dict(self.ports))

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        code = 0 if isinstance(reason.value, ProcessDone) else getattr(reason.value, "exitCode", None)
        self._code = code if isinstance(code, int) else -1
        waiting, self._listening = self._listening, []
        for listening in waiting:
            listening.errback(RuntimeError(f"nsqd exited before listening: {self.stderr.decode()}"))
        ended, self._ended = self._ended, []
        for d in ended:
            d.callback(self._code)


class _Client(Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Deferred[None] = Deferred()
        self.got_ok: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.got_ok.called and bytes(self.received).endswith(b"\x00\x00\x00\x06\x00\x00\x00\x00OK"):
            self.got_ok.callback(None)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.lost.callback(None)


class NSQDProcessTests(TestCase):
    """A real C{nsqd} child process."""

    timeout = 60

    def setUp(self) -> None:
        self.reactor = _reactor()
        self.data_path: str = self.mktemp()
        os.makedirs(self.data_path)

    def spawn(self, *flags: str, expect: frozenset[str] = frozenset({"TCP", "HTTP"})) -> _NSQDProcess:
        process = _NSQDProcess(expect)
        argv = [NSQD, *flags]
        transport = cast(IReactorProcess, self.reactor).spawnProcess(
            process, NSQD, argv, env=dict(os.environ), childFDs={0: "w", 1: "r", 2: "r"}
        )
        self.addCleanup(self.kill, process, transport)
        return process

    async def kill(self, process: _NSQDProcess, transport: IProcessTransport) -> None:
        if process.running:
            try:
                transport.signalProcess("KILL")
            except ProcessExitedAlready:
                pass
        await process.when_ended()

    def bounded(self, d: Deferred[_T]) -> Deferred[_T]:
        """C{d}, failing with a timeout rather than hanging the test."""
        return d.addTimeout(TIMEOUT, self.reactor)

    async def test_serve_and_sigterm(self) -> None:
        """
        nsqd starts on C{:0} ports, prints them as gnsq expects, answers a V2 client, and exits 0
        on SIGTERM after closing the client.
        """
        process = self.spawn(
            "--tcp-address=127.0.0.1:0",
            "--http-address=127.0.0.1:0",
            f"--data-path={self.data_path}",
        )
        ports = await self.bounded(process.when_listening())
        assert isinstance(ports, dict)
        self.assertRegex(
            process.stderr.decode(),
            r"\[nsqd\] \d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6} INFO: TCP: listening on ",
        )

        endpoint = TCP4ClientEndpoint(cast(IReactorTCP, self.reactor), "127.0.0.1", ports["TCP"], timeout=5)
        client = await self.bounded(endpoint.connect(Factory.forProtocol(_Client)))
        assert isinstance(client, _Client)
        assert client.transport is not None
        client.transport.write(b"  V2NOP\nPUB test_topic\n\x00\x00\x00\x05hello")
        await self.bounded(client.got_ok)

        transport = self.transport_of(process)
        transport.signalProcess("TERM")
        code = await self.bounded(process.when_ended())
        self.assertEqual(code, 0, process.stderr.decode())
        await self.bounded(client.lost)

    def transport_of(self, process: _NSQDProcess) -> IProcessTransport:
        transport = process.transport
        assert transport is not None
        return transport

    async def test_busy_port(self) -> None:
        """A busy port stops start-up with a FATAL line and exit status 1."""
        first = self.spawn(
            "--tcp-address=127.0.0.1:0",
            "--http-address=127.0.0.1:0",
            f"--data-path={self.data_path}",
        )
        ports = await self.bounded(first.when_listening())
        assert isinstance(ports, dict)
        other: str = self.mktemp()
        os.makedirs(other)
        second = self.spawn(
            f"--tcp-address=127.0.0.1:{ports['TCP']}",
            "--http-address=127.0.0.1:0",
            f"--data-path={other}",
        )
        code = await self.bounded(second.when_ended())
        self.assertEqual(code, 1)
        self.assertIn(
            f"FATAL: failed to instantiate nsqd - listen (127.0.0.1:{ports['TCP']}) failed",
            second.stderr.decode(),
        )
        self.transport_of(first).signalProcess("TERM")
        self.assertEqual(await self.bounded(first.when_ended()), 0)

    async def test_data_path_in_use(self) -> None:
        """A second nsqd on the same data path exits 1 and says why."""
        tcp_only = frozenset({"TCP"})
        first = self.spawn(
            "--tcp-address=127.0.0.1:0", "--http-address=", f"--data-path={self.data_path}", expect=tcp_only
        )
        await self.bounded(first.when_listening())
        second = self.spawn(
            "--tcp-address=127.0.0.1:0", "--http-address=", f"--data-path={self.data_path}", expect=tcp_only
        )
        self.assertEqual(await self.bounded(second.when_ended()), 1)
        self.assertIn(
            f"--data-path={self.data_path} in use (possibly by another instance of nsqd)",
            second.stderr.decode(),
        )
        self.transport_of(first).signalProcess("TERM")
        self.assertEqual(await self.bounded(first.when_ended()), 0)


class CommandLineTests(SynchronousTestCase):
    """What C{nsqd} prints and returns before it starts anything."""

    def run_nsqd(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([NSQD, *argv], capture_output=True, text=True, timeout=TIMEOUT, check=False)

    def test_version(self) -> None:
        """C{--version} prints the line gnsq parses, and exits 0."""
        result = self.run_nsqd("--version")
        self.assertEqual(result.returncode, 0)
        self.assertEqual(result.stdout, f"nsqd v1.3.0-twisted (built w/python{platform.python_version()})\n")
        self.assertRegex(result.stdout, r"^nsqd v\d+\.\d+\.\d+(-\w+)? \(built w/")

    def test_bad_flag(self) -> None:
        """An unknown flag prints Go's message and the usage to stderr, and exits 2."""
        result = self.run_nsqd("--no-such-flag")
        self.assertEqual(result.returncode, 2)
        self.assertTrue(
            result.stderr.startswith("flag provided but not defined: -no-such-flag\nUsage of nsqd:\n")
        )

    def test_help(self) -> None:
        result = self.run_nsqd("-h")
        self.assertEqual(result.returncode, 0)
        self.assertIn("  -tcp-address string", result.stderr)

    def test_bad_config(self) -> None:
        """An unreadable config file is FATAL, exit 1."""
        result = self.run_nsqd("--config=/nonexistent/nsqd.toml")
        self.assertEqual(result.returncode, 1)
        self.assertIn("FATAL: failed to load config file /nonexistent/nsqd.toml - ", result.stderr)

    def test_invalid_option(self) -> None:
        """A value the start-up checks refuse is FATAL, exit 1."""
        data_path: str = self.mktemp()
        os.makedirs(data_path)
        result = self.run_nsqd(
            "--max-deflate-level=10", f"--data-path={data_path}", "--tcp-address=127.0.0.1:0"
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn("FATAL: failed to instantiate nsqd - --max-deflate-level must be [1,9]", result.stderr)


class EarlySignalTests(SynchronousTestCase):
    """A harness may signal as soon as it has read the listening lines: nsqd still exits 0."""

    def test_sigterm_right_after_listening(self) -> None:
        from tests.integration._daemon import start_nsqd

        for _ in range(5):
            nsqd = start_nsqd(self)
            self.assertEqual(nsqd.stop(), 0, nsqd.output())
