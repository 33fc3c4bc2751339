"""
A local development cluster in the foreground: what C{make run} starts.

Each program runs as a child process from this virtualenv's console scripts, with its output
forwarded line by line. They start in order, and a program that others depend on (nsqlookupd)
is waited for until it logs that it listens. Ctrl-C or SIGTERM stops them all (SIGTERM, then
waiting for each to drain); if one exits on its own, the others are stopped and the exit status
is 1.

    python -m twisted_nsq.devcluster [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import BinaryIO, cast

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList, TimeoutError, ensureDeferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import (
    IProcessTransport,
    IReactorCore,
    IReactorFromThreads,
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from twisted_nsq._cli import stop_on_signals


@attrs.frozen
class Program:
    """One child: a console script of this virtualenv (or any executable) and its arguments."""

    name: str
    executable: str
    arguments: tuple[str, ...] = ()
    #: A directory created before the program starts (its data path), or "".
    data_dir: str = ""
    #: Text (within one line of output) that means the program is ready; the programs after it
    #: start only once a line holding it is forwarded (or after L{READY_TIMEOUT}). Empty: start
    #: the next program at once.
    ready_text: bytes = b""


#: How long a program may take to print its C{ready_text} before the next ones start anyway.
READY_TIMEOUT = 30.0


#: Where the development cluster's nsqd finds its nsqlookupd (nsqlookupd's default TCP port).
LOOKUPD_TCP_ADDRESS = "127.0.0.1:4160"

#: Where the development cluster's nsqadmin reads the cluster (nsqlookupd's default HTTP port).
LOOKUPD_HTTP_ADDRESS = "127.0.0.1:4161"


def default_programs(bin_dir: str, data_dir: str) -> list[Program]:
    """
    The cluster C{make run} starts, all on their default ports: nsqlookupd first, then one nsqd
    that registers with it and keeps its data under C{data_dir}/nsqd, then nsqadmin reading the
    cluster through that nsqlookupd (http://127.0.0.1:4171/).
    """
    nsqd_data = os.path.join(data_dir, "nsqd")
    return [
        # nsqd's first registration attempt should find nsqlookupd listening.
        Program("nsqlookupd", os.path.join(bin_dir, "nsqlookupd"), ready_text=b"TCP: listening on "),
        Program(
            "nsqd",
            os.path.join(bin_dir, "nsqd"),
            (f"--data-path={nsqd_data}", f"--lookupd-tcp-address={LOOKUPD_TCP_ADDRESS}"),
            data_dir=nsqd_data,
            ready_text=b"HTTP: listening on ",
        ),
        Program(
            "nsqadmin",
            os.path.join(bin_dir, "nsqadmin"),
            (f"--lookupd-http-address={LOOKUPD_HTTP_ADDRESS}",),
        ),
    ]


class _Child(ProcessProtocol):
    """Forwards one child's stdout and stderr, whole lines at a time, and reports its exit."""

    def __init__(self, program: Program, stdout: BinaryIO, stderr: BinaryIO) -> None:
        self.program = program
        self._streams = {1: stdout, 2: stderr}
        self._partial: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
        self.exited: Deferred[int] = Deferred()
        self.running = False
        self._ready: list[Deferred[bool]] = []
        self._is_ready = False

    def connectionMade(self) -> None:
        self.running = True

    def when_ready(self) -> Deferred[bool]:
        """
        Fires with C{True} once the child has printed its program's C{ready_text} (at once if it
        has none), or with C{False} if it exits first.
        """
        d: Deferred[bool] = Deferred()
        if self._is_ready or not self.program.ready_text:
            d.callback(True)
        elif self.exited.called:
            d.callback(False)
        else:
            self._ready.append(d)
        return d

    def _check_ready(self, lines: bytes) -> None:
        """Look for the ready text in whole lines just forwarded (so it is printed before the next start)."""
        text = self.program.ready_text
        if self._is_ready or not text or text not in lines:
            return
        self._is_ready = True
        waiting, self._ready = self._ready, []
        for d in waiting:
            d.callback(True)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buffer = self._partial.setdefault(childFD, bytearray())
        buffer += data
        end = buffer.rfind(b"\n")
        if end >= 0:
            lines = bytes(buffer[: end + 1])
            del buffer[: end + 1]
            self._write(childFD, lines)
            self._check_ready(lines)

    def _write(self, childFD: int, data: bytes) -> None:
        stream = self._streams.get(childFD, self._streams[2])
        stream.write(data)
        stream.flush()

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        for childFD, rest in self._partial.items():
            if rest:
                self._write(childFD, bytes(rest) + b"\n")
                rest.clear()
        code = 0 if isinstance(reason.value, ProcessDone) else getattr(reason.value, "exitCode", None)
        self.exited.callback(code if isinstance(code, int) else 1)
        waiting, self._ready = self._ready, []
        for d in waiting:
            d.callback(False)


class DevCluster:
    """Starts the programs as children, and stops them all when asked or when one of them exits."""

    def __init__(
        self,
        reactor: IReactorProcess,
        programs: Sequence[Program],
        stdout: BinaryIO,
        stderr: BinaryIO,
    ) -> None:
        self._reactor = reactor
        self._programs = list(programs)
        self._stdout = stdout
        self._stderr = stderr
        self._children: list[tuple[_Child, IProcessTransport]] = []
        self._stopping = False
        self._failed = False

    def _say(self, message: str) -> None:
        self._stderr.write(f"[devcluster] {message}\n".encode())
        self._stderr.flush()

    def start(self) -> Deferred[int]:
        """
        Spawn the programs in order, each one after the previous one is ready; the result fires
        with the exit status once all of those spawned have exited. Programs not yet spawned when
        the cluster stops are never started.
        """
        return ensureDeferred(self._start_all())

    async def _start_all(self) -> int:
        for program in self._programs:
            if self._stopping:
                break
            child = self._spawn(program)
            ready = child.when_ready().addTimeout(READY_TIMEOUT, cast(IReactorTime, self._reactor))
            try:
                await ready
            except TimeoutError:
                self._say(f"{program.name} not ready after {READY_TIMEOUT:g}s; starting the rest anyway")
        await DeferredList([child.exited for child, _ in self._children], consumeErrors=True)
        return 1 if self._failed else 0

    def _spawn(self, program: Program) -> _Child:
        if program.data_dir:
            os.makedirs(program.data_dir, exist_ok=True)
        child = _Child(program, self._stdout, self._stderr)
        transport = self._reactor.spawnProcess(
            child,
            program.executable,
            [program.executable, *program.arguments],
            env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: "r"},
        )
        child.exited.addCallback(self._exited, program)
        self._children.append((child, transport))
        # Announced once the child is known to stop(): whatever reads this line may stop the cluster.
        self._say(f"starting {program.name}: {program.executable} {' '.join(program.arguments)}")
        return child

    def _exited(self, code: int, program: Program) -> int:
        if not self._stopping:
            self._say(f"{program.name} exited on its own (status {code}); stopping the others")
            self._failed = True
            self.stop()
        elif code != 0:
            self._failed = True
        return code

    def stop(self) -> Deferred[None]:
        """
        Send SIGTERM to every child still running; fires once they have all exited. (After a
        terminal's Ctrl-C the children got SIGINT too; a second signal does them no harm.)
        """
        self._stopping = True
        for child, transport in self._children:
            if child.running:
                try:
                    transport.signalProcess("TERM")
                except ProcessExitedAlready:
                    pass
        waits = DeferredList([child.exited for child, _ in self._children], consumeErrors=True)
        return waits.addCallback(lambda _: None)


async def _run(reactor: IReactorProcess, programs: Sequence[Program]) -> None:
    cluster = DevCluster(reactor, programs, sys.stdout.buffer, sys.stderr.buffer)
    core = cast(IReactorCore, reactor)
    core.addSystemEventTrigger("before", "shutdown", cluster.stop)
    core.callWhenRunning(stop_on_signals, core, cast(IReactorFromThreads, reactor).callFromThread)
    status = await cluster.start()
    if status:
        raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the development cluster until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m twisted_nsq.devcluster", description=__doc__)
    parser.add_argument(
        "--data-dir",
        default=".devcluster",
        help="directory for each program's data (default: .devcluster)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    bin_dir = os.path.dirname(sys.executable)
    programs = default_programs(bin_dir, os.path.abspath(args.data_dir))
    task.react(_run, (programs,))


if __name__ == "__main__":
    main()
