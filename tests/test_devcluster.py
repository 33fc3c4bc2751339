"""
Tests for L{twisted_nsq.devcluster}, with small Python programs standing in for the daemons.
"""

from __future__ import annotations

import io
import os
import sys
from typing import TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twisted_nsq.devcluster import DevCluster, Program, default_programs

_T = TypeVar("_T")
TIMEOUT = 20.0

# Prints a line on each stream, then waits for SIGTERM and exits 0.
WAITER = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
    "print('out line', flush=True)\n"
    "sys.stderr.write('err line\\n'); sys.stderr.flush()\n"
    "time.sleep(60)\n"
)


class _Stream(io.BytesIO):
    """A byte stream that can tell when some text has been written to it."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: list[tuple[bytes, Deferred[None]]] = []

    def write(self, data: bytes) -> int:  # type: ignore[override]
        written = super().write(data)
        waiting, self._waiting = self._waiting, []
        for text, d in waiting:
            if text in self.getvalue():
                d.callback(None)
            else:
                self._waiting.append((text, d))
        return written

    def when_contains(self, text: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if text in self.getvalue():
            d.callback(None)
        else:
            self._waiting.append((text, d))
        return d


def _reactor() -> IReactorTime:
    """The reactor trial runs, handed explicitly to everything these tests build."""
    from twisted.internet import reactor

    return cast(IReactorTime, reactor)


class DefaultProgramsTests(SynchronousTestCase):
    def test_nsqlookupd_then_nsqd_then_nsqadmin(self) -> None:
        """
        The cluster runs this virtualenv's nsqlookupd, waits until it listens, then runs nsqd with
        its data under the data directory, registering with that nsqlookupd, and once nsqd serves
        HTTP, nsqadmin reading the cluster through nsqlookupd's HTTP API.
        """
        [lookupd, nsqd, nsqadmin] = default_programs("/venv/bin", "/data")
        self.assertEqual(lookupd.name, "nsqlookupd")
        self.assertEqual(lookupd.executable, "/venv/bin/nsqlookupd")
        self.assertEqual(lookupd.arguments, ())
        self.assertEqual(lookupd.ready_text, b"TCP: listening on ")
        self.assertEqual(nsqd.name, "nsqd")
        self.assertEqual(nsqd.executable, "/venv/bin/nsqd")
        self.assertEqual(nsqd.arguments, ("--data-path=/data/nsqd", "--lookupd-tcp-address=127.0.0.1:4160"))
        self.assertEqual(nsqd.data_dir, "/data/nsqd")
        self.assertEqual(nsqd.ready_text, b"HTTP: listening on ")
        self.assertEqual(nsqadmin.name, "nsqadmin")
        self.assertEqual(nsqadmin.executable, "/venv/bin/nsqadmin")
        self.assertEqual(nsqadmin.arguments, ("--lookupd-http-address=127.0.0.1:4161",))
        self.assertEqual((nsqadmin.data_dir, nsqadmin.ready_text), ("", b""))


class DevClusterTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.reactor = _reactor()
        self.stdout = _Stream()
        self.stderr = _Stream()

    def cluster(self, *programs: Program) -> DevCluster:
        cluster = DevCluster(cast(IReactorProcess, self.reactor), programs, self.stdout, self.stderr)
        self.addCleanup(cluster.stop)
        return cluster

    def python(self, name: str, code: str, data_dir: str = "") -> Program:
        return Program(name, sys.executable, ("-c", code), data_dir=data_dir)

    def bounded(self, d: Deferred[_T]) -> Deferred[_T]:
        return d.addTimeout(TIMEOUT, self.reactor)

    async def wait_for(self, stream: _Stream, text: bytes) -> None:
        await self.bounded(stream.when_contains(text))

    async def test_forward_and_stop(self) -> None:
        """Output is forwarded stream by stream; C{stop} ends every child and the status is 0."""
        data_dir = os.path.join(self.mktemp(), "one")
        cluster = self.cluster(self.python("one", WAITER, data_dir), self.python("two", WAITER))
        finished = cluster.start()
        self.assertTrue(os.path.isdir(data_dir))
        await self.wait_for(self.stdout, b"out line\nout line\n")
        await self.wait_for(self.stderr, b"err line\n")
        await self.bounded(cluster.stop())
        self.assertEqual(await self.bounded(finished), 0)
        self.assertIn(b"[devcluster] starting one: ", self.stderr.getvalue())

    async def test_child_exits(self) -> None:
        """When one child exits on its own the others are stopped and the status is 1."""
        cluster = self.cluster(
            self.python("waiter", WAITER),
            self.python("quitter", "import sys; sys.stdout.write('no newline'); sys.exit(3)"),
        )
        status = await self.bounded(cluster.start())
        self.assertEqual(status, 1)
        self.assertIn(b"quitter exited on its own (status 3)", self.stderr.getvalue())
        self.assertIn(b"no newline\n", self.stdout.getvalue())

    async def test_waits_until_ready(self) -> None:
        """A program with C{ready_text} is started alone; the next one starts once it printed it."""
        first = Program(
            "first",
            sys.executable,
            ("-c", "import time; time.sleep(0.3); print('almost', flush=True); time.sleep(0.3)\n" + WAITER),
            ready_text=b"out line",
        )
        cluster = self.cluster(first, self.python("second", WAITER))
        finished = cluster.start()
        await self.wait_for(self.stdout, b"almost\n")
        self.assertNotIn(b"starting second", self.stderr.getvalue())
        await self.wait_for(self.stderr, b"[devcluster] starting second: ")
        self.assertEqual(self.stdout.getvalue()[:16], b"almost\nout line\n")
        # Stopped once the second one handles SIGTERM (a signal before that kills it: status 1).
        await self.wait_for(self.stdout, b"out line\nout line\n")
        await self.bounded(cluster.stop())
        self.assertEqual(await self.bounded(finished), 0)

    async def test_not_ready_exits(self) -> None:
        """A program that exits before it is ready stops the cluster; the rest never start."""
        cluster = self.cluster(
            Program("early", sys.executable, ("-c", "import sys; sys.exit(5)"), ready_text=b"ready"),
            self.python("never", WAITER),
        )
        status = await self.bounded(cluster.start())
        self.assertEqual(status, 1)
        self.assertIn(b"early exited on its own (status 5)", self.stderr.getvalue())
        self.assertNotIn(b"starting never", self.stderr.getvalue())

    async def test_failed_drain(self) -> None:
        """A child that exits non-zero when stopped makes the status 1."""
        cluster = self.cluster(
            self.python(
                "grumpy",
                "import signal, sys, time\n"
                "signal.signal(signal.SIGTERM, lambda *a: sys.exit(4))\n"
                "print('ready', flush=True)\n"
                "time.sleep(60)\n",
            )
        )
        finished = cluster.start()
        await self.wait_for(self.stdout, b"ready\n")
        await self.bounded(cluster.stop())
        self.assertEqual(await self.bounded(finished), 1)
