"""
The integration-test harness: a real C{nsqd} process, and pynsq scenarios run in subprocesses.

L{start_nsqd} runs the C{nsqd} console script installed next to the running interpreter (or the
command in C{$TWISTED_NSQ_TEST_NSQD}) with loopback ports chosen by the kernel, reads the ports
from its C{TCP: listening on ...} and C{HTTP: listening on ...} log lines, and registers a cleanup
with the test that stops it (and fails the test if nsqd died on its own, logged a traceback, or
did not stop cleanly on SIGTERM).

L{start_nsqlookupd} does the same for the C{nsqlookupd} console script (or
C{$TWISTED_NSQ_TEST_NSQLOOKUPD}), so that cluster tests can run one nsqlookupd and several nsqd.

L{run_pynsq} runs one pynsq scenario (Python source defining C{async def scenario()}) in a
separate interpreter, so that tornado's IOLoop and Twisted never share a process; the scenario's
return value comes back as JSON.

Every wait here is bounded, so a broken nsqd fails a test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

#: A 16-hex-digit message ID as clients show it.
HEX_ID = re.compile(r"[0-9a-f]{16}")

#: The IDENTIFY answer nsqd gives a client that asks for its defaults (spec 1.5).
DEFAULT_IDENTIFY = {
    "max_rdy_count": 2500,
    "version": "1.3.0",
    "max_msg_timeout": 900000,
    "msg_timeout": 60000,
    "tls_v1": False,
    "deflate": False,
    "deflate_level": 6,
    "max_deflate_level": 6,
    "snappy": False,
    "sample_rate": 0,
    "auth_required": False,
    "output_buffer_size": 16384,
    "output_buffer_timeout": 250,
}

__all__ = [
    "NSQD_COMMAND_VARIABLE",
    "NSQLOOKUPD_COMMAND_VARIABLE",
    "NSQDProcess",
    "daemon_command",
    "nsqd_command",
    "nsqlookupd_command",
    "run_pynsq",
    "start_nsqd",
    "start_nsqlookupd",
    "start_process",
]

#: How long nsqd may take to print its listening lines.
START_TIMEOUT = 20.0
#: How long nsqd may take to exit after SIGTERM.
STOP_TIMEOUT = 10.0

#: Log text that means an exception escaped nsqd's own handling.
_CRASH_SIGNS = ("Traceback (most recent call last)", "Unhandled Error", "Unhandled error in Deferred")

_LISTENING = re.compile(r"\b(TCP|HTTP|HTTPS): listening on (\S+)")


#: An environment variable holding another nsqd command line (split like a shell would), e.g. a Go
#: nsqd binary, to run these tests against instead of the virtualenv's console script.
NSQD_COMMAND_VARIABLE = "TWISTED_NSQ_TEST_NSQD"


#: The same for nsqlookupd.
NSQLOOKUPD_COMMAND_VARIABLE = "TWISTED_NSQ_TEST_NSQLOOKUPD"


def daemon_command(variable: str, script: str) -> list[str]:
    override = os.environ.get(variable)
    if override:
        return shlex.split(override)
    # Not resolved: the venv's bin/python is a symlink out of the venv.
    executable = Path(sys.executable).parent / script
    if not executable.exists():
        raise AssertionError(f"{executable} does not exist: is twisted-nsq installed in this venv?")
    return [str(executable)]


def nsqd_command() -> list[str]:
    """
    The command that starts nsqd: C{$TWISTED_NSQ_TEST_NSQD} if set, otherwise the C{nsqd}
    console script of the virtualenv running the tests.
    """
    return daemon_command(NSQD_COMMAND_VARIABLE, "nsqd")


def nsqlookupd_command() -> list[str]:
    """
    The command that starts nsqlookupd: C{$TWISTED_NSQ_TEST_NSQLOOKUPD} if set, otherwise the
    C{nsqlookupd} console script of the virtualenv running the tests.
    """
    return daemon_command(NSQLOOKUPD_COMMAND_VARIABLE, "nsqlookupd")


def _split_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class NSQDProcess:
    """
    A running nsqd (or nsqlookupd: C{name} says which) and everything it has logged so far.

    Its combined stdout/stderr is drained by a thread all the time, so a chatty nsqd never blocks
    on a full pipe.
    """

    def __init__(self, popen: subprocess.Popen[bytes], flags: list[str], name: str = "nsqd") -> None:
        self.popen = popen
        self.flags = flags
        self.name = name
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._addresses: dict[str, tuple[str, int]] = {}
        self._stopped_by_test = False
        self._exit_code: int | None = None
        self._reader = threading.Thread(target=self._drain, name=f"{name}-{popen.pid}-log", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        stream = self.popen.stdout
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._changed:
                self._lines.append(line)
                found = _LISTENING.search(line)
                if found is not None and found.group(1) not in self._addresses:
                    self._addresses[found.group(1)] = _split_address(found.group(2))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        """Everything nsqd has written to stdout and stderr so far."""
        with self._changed:
            return "\n".join(self._lines)

    def wait_listening(self, kinds: tuple[str, ...], timeout: float) -> None:
        """
        Block until nsqd has logged a listening line for each of C{kinds}.

        @raise RuntimeError: nsqd exited first, or C{timeout} seconds passed; the message holds
            its log.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not all(kind in self._addresses for kind in kinds):
                remaining = deadline - time.monotonic()
                if self.popen.poll() is not None and not self._reader.is_alive():
                    raise RuntimeError(
                        f"{self.name} exited with code {self.popen.returncode} before listening on {kinds}; "
                        f"flags {self.flags}; output:\n" + "\n".join(self._lines)
                    )
                if remaining <= 0:
                    raise RuntimeError(
                        f"{self.name} did not log listening lines for {kinds} within {timeout}s; "
                        f"flags {self.flags}; output:\n" + "\n".join(self._lines)
                    )
                self._changed.wait(min(remaining, 0.2))

    def address(self, kind: str) -> tuple[str, int]:
        """The (host, port) nsqd logged for C{kind} (C{TCP}, C{HTTP} or C{HTTPS})."""
        with self._changed:
            try:
                return self._addresses[kind]
            except KeyError:
                raise AssertionError(
                    f"{self.name} logged no {kind} listening line:\n" + self.output()
                ) from None

    @property
    def tcp_address(self) -> tuple[str, int]:
        return self.address("TCP")

    @property
    def http_address(self) -> tuple[str, int]:
        return self.address("HTTP")

    @property
    def tcp_hostport(self) -> str:
        """The TCP address as C{host:port}, as pynsq takes it."""
        host, port = self.tcp_address
        return f"{host}:{port}"

    @property
    def http_hostport(self) -> str:
        """The HTTP address as C{host:port}."""
        host, port = self.http_address
        return f"{host}:{port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def _status_kib(self, field: str) -> int:
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.pid}/status")

    def rss_kib(self) -> int:
        """nsqd's resident set size now (C{VmRSS}), in KiB."""
        return self._status_kib("VmRSS")

    def peak_rss_kib(self) -> int:
        """nsqd's largest resident set size so far (C{VmHWM}), in KiB."""
        return self._status_kib("VmHWM")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """
        SIGTERM nsqd and wait up to C{timeout} seconds; SIGKILL it if it is still running.

        @return: the exit code (negative for a signal, as C{subprocess} reports it).
        """
        if self._exit_code is not None:
            return self._exit_code
        self._stopped_by_test = True
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(STOP_TIMEOUT)
        self._reader.join(STOP_TIMEOUT)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._exit_code = self.popen.returncode
        return self._exit_code

    def kill(self) -> int:
        """SIGKILL nsqd (a crash, as the kill tests want it) and reap it; returns the exit code."""
        if self._exit_code is not None:
            return self._exit_code
        self._stopped_by_test = True
        self.popen.kill()
        self.popen.wait(STOP_TIMEOUT)
        self._reader.join(STOP_TIMEOUT)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._exit_code = self.popen.returncode
        return self._exit_code

    def cleanup(self) -> None:
        """
        Stop nsqd at the end of a test; fail if it crashed during the test, logged a traceback,
        or did not exit with status 0 on SIGTERM.
        """
        if self._exit_code is not None:
            return
        died_early = self.popen.poll() is not None
        code = self.stop()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        if died_early:
            raise AssertionError(
                f"{self.name} exited on its own with code {code} during the test:\n" + self.output()
            )
        if code != 0:
            raise AssertionError(
                f"{self.name} exited with code {code} after SIGTERM (expected 0):\n" + self.output()
            )
        output = self.output()
        for sign in _CRASH_SIGNS:
            if sign in output:
                raise AssertionError(f"{self.name} logged {sign!r} during the test:\n" + output)


def start_nsqd(
    test: SynchronousTestCase,
    *extra_flags: str,
    data_path: str | None = None,
    timeout: float = START_TIMEOUT,
    dash: str = "--",
) -> NSQDProcess:
    """
    Start nsqd on loopback with kernel-chosen ports and wait until it listens.

    @param test: the test that owns the process; its cleanup stops nsqd.
    @param extra_flags: more Go-style flags, e.g. C{"--msg-timeout=1s"}.
    @param data_path: the C{--data-path}; by default a fresh directory under the test's temp dir.
    @param dash: how the standard flags are spelled: C{"--"} or Go's single C{"-"}.
    """
    if data_path is None:
        data_path = test.mktemp()
    os.makedirs(data_path, exist_ok=True)
    flags = [
        f"{dash}tcp-address=127.0.0.1:0",
        f"{dash}http-address=127.0.0.1:0",
        # Only used when a TLS certificate is configured; never the fixed default port.
        f"{dash}https-address=127.0.0.1:0",
        f"{dash}data-path={data_path}",
        *extra_flags,
    ]
    return start_process(test, "nsqd", nsqd_command(), flags, timeout)


def start_nsqlookupd(
    test: SynchronousTestCase,
    *extra_flags: str,
    timeout: float = START_TIMEOUT,
    dash: str = "--",
) -> NSQDProcess:
    """
    Start nsqlookupd on loopback with kernel-chosen ports and wait until it listens. Its
    C{--broadcast-address} is 127.0.0.1 (nsqd makes HTTP calls to it there) unless
    C{extra_flags} set another.

    @param test: the test that owns the process; its cleanup stops nsqlookupd.
    @param extra_flags: more Go-style flags, e.g. C{"--tombstone-lifetime=2s"}.
    @param dash: how the standard flags are spelled: C{"--"} or Go's single C{"-"}.
    """
    flags = [
        f"{dash}tcp-address=127.0.0.1:0",
        f"{dash}http-address=127.0.0.1:0",
        f"{dash}broadcast-address=127.0.0.1",
        *extra_flags,
    ]
    return start_process(test, "nsqlookupd", nsqlookupd_command(), flags, timeout)


def start_process(
    test: SynchronousTestCase,
    name: str,
    command: list[str],
    flags: list[str],
    timeout: float,
    listeners: tuple[str, ...] = ("TCP", "HTTP"),
) -> NSQDProcess:
    """
    Start a daemon (C{command} + C{flags}) owned by C{test} and wait until it logs that each of
    C{listeners} listens.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    popen = subprocess.Popen(
        [*command, *flags],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    process = NSQDProcess(popen, flags, name)
    test.addCleanup(process.cleanup)
    try:
        process.wait_listening(listeners, timeout)
    except RuntimeError as e:
        raise AssertionError(str(e)) from None
    return process


#: Helpers every pynsq scenario script starts with. The scenario defines C{async def scenario()}
#: returning something JSON-serialisable; the script prints C{{"ok": ..., "result"|"error": ...}}.
PYNSQ_PRELUDE = r'''
import asyncio
import json
import logging
import os
import ssl
import sys
import time
import traceback

import nsq

logging.basicConfig(
    level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)
P = json.loads(sys.argv[1])
NSQD = P["nsqd"]
OPEN = []


def text(data):
    return data.decode("latin-1") if isinstance(data, bytes) else str(data)


async def until(predicate, timeout, interval=0.01):
    """Poll predicate until it is true or timeout seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(interval)


class _Recording:
    """Keeps nsqd's IDENTIFY and AUTH answers and the connection errors of a pynsq client."""

    def _record_init(self):
        self.identify_responses = []
        self.auth_responses = []
        self.errors = []

    def _on_connection_identify_response(self, conn, data, **kwargs):
        self.identify_responses.append(data)
        return super()._on_connection_identify_response(conn, data, **kwargs)

    def _on_connection_auth_response(self, conn, data, **kwargs):
        self.auth_responses.append(data)
        return super()._on_connection_auth_response(conn, data, **kwargs)

    def _on_connection_error(self, conn, error, **kwargs):
        self.errors.append(text(error))
        return super()._on_connection_error(conn, error, **kwargs)


class Writer(_Recording, nsq.Writer):
    def __init__(self, **kwargs):
        self._record_init()
        kwargs.setdefault("reconnect_interval", 600.0)
        super().__init__([NSQD], **kwargs)
        OPEN.append(self)

    def close(self):
        for conn in list(self.conns.values()):
            conn.close()


class Reader(_Recording, nsq.Reader):
    """A Reader that also records nsqd's answer to its SUB."""

    def __init__(self, topic, channel, handler, **kwargs):
        self._record_init()
        self.sub_answers = []
        self._sub_sent = set()
        kwargs.setdefault("nsqd_tcp_addresses", [NSQD])
        super().__init__(topic=topic, channel=channel, message_handler=handler, **kwargs)
        OPEN.append(self)

    def connect_to_nsqd(self, host, port):
        conn = super().connect_to_nsqd(host, port)
        if conn is not None:
            conn.on("response", self._maybe_sub_answer)
            conn.on("error", self._maybe_sub_error)
        return conn

    def _on_connection_ready(self, conn, **kwargs):
        # pynsq sends SUB from here; the next response or error on this connection answers it.
        self._sub_sent.add(id(conn))
        return super()._on_connection_ready(conn, **kwargs)

    def _maybe_sub_answer(self, conn, data, **kwargs):
        if id(conn) in self._sub_sent:
            self._sub_sent.discard(id(conn))
            self.sub_answers.append(text(data))

    def _maybe_sub_error(self, conn, error, **kwargs):
        if id(conn) in self._sub_sent:
            self._sub_sent.discard(id(conn))
            self.sub_answers.append("ERROR " + text(error))


async def connected(writer, timeout=10):
    """Wait until a Writer has a ready connection (IDENTIFY, upgrades and AUTH done)."""
    ok = await until(lambda: any(c.connected() for c in writer.conns.values()), timeout)
    if not ok:
        raise AssertionError("Writer did not become ready; errors: %r" % (writer.errors,))


async def subscribed(reader, timeout=10):
    """Wait for nsqd's answer to the Reader's SUB; fail unless it is OK."""
    await until(lambda: reader.sub_answers, timeout)
    if reader.sub_answers != ["OK"]:
        raise AssertionError(
            "SUB answered %r (errors %r)" % (reader.sub_answers, reader.errors)
        )


async def call(writer, method, *args):
    """Run writer.pub/mpub/dpub and return nsqd's answer as text (errors as 'ERROR ...')."""
    future = asyncio.get_running_loop().create_future()

    def done(conn, data):
        if not future.done():
            future.set_result(data)

    getattr(writer, method)(*args, callback=done)
    data = await asyncio.wait_for(future, 10)
    if isinstance(data, Exception):
        return "ERROR " + text(data)
    return text(data)


def close_all():
    while OPEN:
        client = OPEN.pop()
        try:
            client.close()
        except Exception:
            traceback.print_exc()


def run(scenario):
    async def main():
        try:
            return await asyncio.wait_for(scenario(), P.get("timeout", 20))
        finally:
            close_all()
            await asyncio.sleep(0.05)

    try:
        out = {"ok": True, "result": asyncio.run(main())}
    except BaseException:
        out = {"ok": False, "error": traceback.format_exc()}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)

'''


def run_pynsq(
    test: SynchronousTestCase,
    nsqd: NSQDProcess,
    scenario: str,
    *,
    timeout: float = 30.0,
    also: Sequence[NSQDProcess] = (),
    **params: Any,
) -> Any:
    """
    Run a pynsq scenario against C{nsqd} in a fresh interpreter and return its result.

    @param scenario: Python source defining C{async def scenario()}; it sees the prelude's
        helpers and C{P}, the JSON of C{params} plus C{nsqd} (the C{host:port}) and C{timeout}.
    @param timeout: the hard limit for the whole subprocess; the scenario itself is cancelled a
        few seconds earlier.
    @param also: the other daemons the scenario uses (a cluster's nsqlookupd and nsqd nodes);
        their logs join C{nsqd}'s in a failure's message.
    """
    path = Path(test.mktemp() + ".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PYNSQ_PRELUDE + scenario + "\n\nrun(scenario)\n", encoding="utf-8")
    arguments = dict(params, nsqd=nsqd.tcp_hostport, timeout=max(timeout - 5.0, 1.0))
    return run_report(
        "pynsq scenario", [sys.executable, str(path), json.dumps(arguments)], timeout, (nsqd, *also)
    )


def run_report(what: str, argv: Sequence[str], timeout: float, daemons: Sequence[NSQDProcess]) -> Any:
    """
    Run a client scenario's interpreter (C{argv}), which prints C{{"ok": ..., "result": ...}} (or
    C{"error"}) as JSON on its last line, and return the result.

    @param what: the scenario's name in a failure's message.
    @param timeout: the hard limit for the subprocess.
    @param daemons: the processes the scenario talks to; their logs join a failure's message.
    @raise AssertionError: the scenario failed, printed no result, or did not finish in time.
    """

    def logs() -> str:
        return "\n".join(f"{daemon.name} ({daemon.pid}):\n{daemon.output()}" for daemon in daemons)

    try:
        completed = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            # Warnings-as-errors is for our code; the clients (pynsq, gnsq, ansq) are third-party.
            env={k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"},
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        stderr = (e.stderr or b"").decode("utf-8", "replace")
        raise AssertionError(
            f"{what} did not finish within {timeout}s; stderr:\n{stderr}\n{logs()}"
        ) from None
    stdout = completed.stdout.decode("utf-8", "replace").strip().splitlines()
    stderr = completed.stderr.decode("utf-8", "replace")
    try:
        report = json.loads(stdout[-1])
    except (IndexError, ValueError):
        raise AssertionError(
            f"{what} printed no result (exit {completed.returncode}); stdout {stdout!r}; "
            f"stderr:\n{stderr}\n{logs()}"
        ) from None
    if not report["ok"]:
        raise AssertionError(f"{what} failed:\n{report['error']}\nstderr:\n{stderr}\n{logs()}")
    return report["result"]
