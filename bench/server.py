"""
One nsqd under test: started as a subprocess with a fresh data directory, found by the ports it
logs on stderr, measured through /proc, and stopped with SIGTERM.
"""

from __future__ import annotations

import collections
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from bench.profile import Profiler

_TCP_LINE = re.compile(r"TCP: listening on (?P<host>[^\s:]+):(?P<port>\d+)")
_HTTP_LINE = re.compile(r"HTTP: listening on (?P<host>[^\s:]+):(?P<port>\d+)")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: The repository root: the working directory of the servers, so C{python -m bench.sink} works.
_ROOT = Path(__file__).resolve().parent.parent


class ServerError(Exception):
    """nsqd did not start, died, or did not stop."""


def default_nsqd() -> str:
    """The C{nsqd} console script next to the running interpreter (C{.venv/bin/nsqd})."""
    return str(Path(sys.executable).parent / "nsqd")


def read_status_kib(pid: int, field: str) -> int:
    """A C{kB} field (C{VmRSS}, C{VmHWM}) from C{/proc/PID/status}, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ServerError(f"/proc/{pid}/status has no {field}")


def read_io_bytes(pid: int, field: str) -> int:
    """A byte count (C{write_bytes}: bytes the process dirtied for storage) from C{/proc/PID/io}."""
    with open(f"/proc/{pid}/io") as io:
        for line in io:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ServerError(f"/proc/{pid}/io has no {field}")


def tree_bytes(path: str) -> int:
    """Bytes of every regular file under C{path} (0 when it does not exist)."""
    total = 0
    for directory, _subdirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except FileNotFoundError:
                # nsqd deletes disk queue files as readers leave them.
                continue
    return total


def read_cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used, from C{/proc/PID/stat}."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After the ")" closing the command name, utime and stime are the 12th and 13th fields.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class Nsqd:
    """
    A running nsqd subprocess. Use as a context manager: entering starts it and waits for its TCP
    port (and its HTTP port, if it logs one within C{http_grace_s}); leaving stops it.
    """

    def __init__(
        self,
        executable: str,
        mem_queue_size: int,
        start_timeout_s: float = 30.0,
        http_grace_s: float = 3.0,
        stop_timeout_s: float = 60.0,
        extra_args: tuple[str, ...] = (),
        profile_path: Path | None = None,
    ) -> None:
        self.executable = executable
        self.mem_queue_size = mem_queue_size
        self.start_timeout_s = start_timeout_s
        self.http_grace_s = http_grace_s
        self.stop_timeout_s = stop_timeout_s
        self.extra_args = extra_args
        self.profile_path = profile_path
        #: Where the profile summary went, once nsqd has stopped (with C{profile_path}).
        self.profile_summary: Path | None = None
        self._profiler: Profiler | None = None
        self.tcp_port = 0
        self.http_port: int | None = None
        self.host = "127.0.0.1"
        self.started_ns = 0
        #: Seconds from the exec to the "TCP: listening" line.
        self.tcp_ready_s = 0.0
        #: Seconds from the exec to the first C{/ping} answered C{OK}, if there was one.
        self.ping_ready_s: float | None = None
        self.shutdown_s: float | None = None
        self.exit_code: int | None = None
        self.killed = False
        #: Whether stop() removed the data directory (None until it ran).
        self.data_dir_removed: bool | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._data_dir = ""
        self._lines: collections.deque[str] = collections.deque(maxlen=200)
        self._ports_seen = threading.Condition()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ServerError("nsqd is not running")
        return self._proc.pid

    def stderr_tail(self, lines: int = 30) -> str:
        """The last lines nsqd wrote to stderr, for error reports."""
        with self._ports_seen:
            return "\n".join(list(self._lines)[-lines:])

    def rss_kib(self) -> int:
        return read_status_kib(self.pid, "VmRSS")

    def peak_rss_kib(self) -> int:
        return read_status_kib(self.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        return read_cpu_seconds(self.pid)

    def disk_write_bytes(self) -> int:
        """Bytes nsqd has dirtied for storage so far (page-cache writes that reach the disk)."""
        return read_io_bytes(self.pid, "write_bytes")

    def data_dir_bytes(self) -> int:
        """The size of everything in nsqd's data directory now."""
        return tree_bytes(self._data_dir) if self._data_dir else 0

    def __enter__(self) -> Nsqd:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def argv(self) -> list[str]:
        """The command line that starts the server (with a fresh data directory)."""
        return [
            self.executable,
            f"--tcp-address={self.host}:0",
            f"--http-address={self.host}:0",
            f"--data-path={self._data_dir}",
            f"--mem-queue-size={self.mem_queue_size}",
            *self.extra_args,
        ]

    def start(self) -> None:
        self._data_dir = tempfile.mkdtemp(prefix="nsqd-bench-")
        argv = self.argv()
        self.started_ns = time.monotonic_ns()
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=_ROOT
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        try:
            self._wait_for_ports()
            self._wait_for_ping()
            if self.profile_path is not None:
                self._profiler = Profiler(self._proc.pid, self.profile_path)
        except BaseException:
            self.stop()
            raise

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            now = time.monotonic_ns()
            with self._ports_seen:
                self._lines.append(line)
                tcp = _TCP_LINE.search(line)
                if tcp and not self.tcp_port:
                    self.tcp_port = int(tcp.group("port"))
                    self.tcp_ready_s = (now - self.started_ns) / 1e9
                web = _HTTP_LINE.search(line)
                if web and self.http_port is None:
                    self.http_port = int(web.group("port"))
                self._ports_seen.notify_all()
        with self._ports_seen:
            self._ports_seen.notify_all()

    def _wait_for_ports(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        with self._ports_seen:
            while not self.tcp_port:
                if self._proc.poll() is not None:
                    raise ServerError(f"nsqd exited with {self._proc.returncode}:\n{self.stderr_tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ServerError(f"nsqd logged no TCP port in {self.start_timeout_s}s")
                self._ports_seen.wait(min(remaining, 0.1))
            # The HTTP line normally comes right after the TCP one; an nsqd without HTTP is tolerated.
            grace = time.monotonic() + self.http_grace_s
            while self.http_port is None and time.monotonic() < grace and self._proc.poll() is None:
                self._ports_seen.wait(0.05)

    def _wait_for_ping(self) -> None:
        if self.http_port is None:
            return
        deadline = time.monotonic() + self.http_grace_s
        while time.monotonic() < deadline:
            connection = http.client.HTTPConnection(self.host, self.http_port, timeout=1.0)
            try:
                connection.request("GET", "/ping")
                response = connection.getresponse()
                body = response.read()
                if response.status == 200 and body.strip() == b"OK":
                    self.ping_ready_s = (time.monotonic_ns() - self.started_ns) / 1e9
                    return
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.005)

    def stop(self) -> None:
        """SIGTERM, wait up to C{stop_timeout_s} for the flush to disk, then SIGKILL."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            began = time.monotonic_ns()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout_s)
                self.shutdown_s = (time.monotonic_ns() - began) / 1e9
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self.killed = True
        if proc is not None:
            self.exit_code = proc.returncode
        if self._reader is not None:
            self._reader.join(5.0)
        if self._profiler is not None:
            profiler, self._profiler = self._profiler, None
            self.profile_summary = profiler.finish()
        if self._data_dir:
            # A disk workload leaves hundreds of MB here; the workload's rows record whether it went.
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self.data_dir_removed = not os.path.exists(self._data_dir)
            self._data_dir = ""

    def check_alive(self) -> None:
        """@raise ServerError: nsqd has exited."""
        if self._proc is None or self._proc.poll() is not None:
            code = None if self._proc is None else self._proc.returncode
            raise ServerError(f"nsqd exited with {code}:\n{self.stderr_tail()}")


class Sink(Nsqd):
    """
    L{bench.sink} as a subprocess, in nsqd's place: it logs its TCP port the same way and has no
    HTTP API. C{body_size} is the size of the messages it sends consumers.
    """

    def __init__(self, body_size: int = 100) -> None:
        super().__init__(sys.executable, 0, http_grace_s=0.0)
        self.body_size = body_size

    def argv(self) -> list[str]:
        return [
            self.executable,
            "-m",
            "bench.sink",
            f"--tcp-address={self.host}:0",
            f"--size={self.body_size}",
        ]
