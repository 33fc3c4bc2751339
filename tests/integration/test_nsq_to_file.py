"""
C{nsq_to_file} run as a console script against a real nsqd (and nsqlookupd): rotation, gzip,
topic discovery and a SIGTERM mid-stream. Every wait is bounded.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Callable
from urllib.parse import urlencode

from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import NSQDProcess, start_nsqd, start_nsqlookupd

_SCRIPT = os.path.join(os.path.dirname(sys.executable), "nsq_to_file")
#: The longest any one wait may take.
TIMEOUT = 15.0


def _http(url: str, data: bytes | None = None) -> bytes:
    with urllib.request.urlopen(url, data=data, timeout=TIMEOUT) as response:
        body: bytes = response.read()
        return body


def _publish(nsqd: NSQDProcess, topic: str, bodies: list[bytes]) -> None:
    """MPUB C{bodies} (no newlines in them) over nsqd's HTTP API, in chunks."""
    for start in range(0, len(bodies), 1000):
        chunk = bodies[start : start + 1000]
        url = f"http://{nsqd.http_hostport}/mpub?{urlencode({'topic': topic})}"
        _http(url, b"\n".join(chunk))


def _channel_stats(nsqd: NSQDProcess, topic: str, channel: str = "nsq_to_file") -> dict[str, int]:
    """The channel's counters from /stats (empty before the channel exists)."""
    query = urlencode({"format": "json", "topic": topic, "channel": channel})
    stats = json.loads(_http(f"http://{nsqd.http_hostport}/stats?{query}"))
    for t in stats.get("topics") or []:
        if t["topic_name"] == topic:
            for c in t.get("channels") or []:
                if c["channel_name"] == channel:
                    return dict(c)
    return {}


def _finished(nsqd: NSQDProcess, topic: str) -> int:
    """
    How many messages the channel has seen finished: every message put into it is queued, in
    flight, deferred or finished (a client's own C{finish_count} goes when it disconnects).
    """
    c = _channel_stats(nsqd, topic)
    if not c:
        return 0
    return c["message_count"] - c["depth"] - c["in_flight_count"] - c["deferred_count"]


def _wait(what: str, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _lines(directory: str, prefix: str = "") -> list[bytes]:
    """Every line of every file (gunzipped) under C{directory} whose name starts with C{prefix}."""
    found: list[bytes] = []
    for name in sorted(os.listdir(directory)):
        if not name.startswith(prefix):
            continue
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        found.extend(data.splitlines())
    return found


class ToFile:
    """One nsq_to_file process; its log goes to a file so that no pipe ever fills."""

    def __init__(self, test: SynchronousTestCase, *argv: str) -> None:
        self.log_path = test.mktemp() + ".log"
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            [_SCRIPT, *argv],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        test.addCleanup(self._cleanup)

    def output(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def stop(self) -> int:
        """SIGTERM it and wait for it to exit; the exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(TIMEOUT)
            raise AssertionError("nsq_to_file did not exit after SIGTERM:\n" + self.output()) from None

    def _cleanup(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(TIMEOUT)
        self._log.close()


class NSQToFileTests(SynchronousTestCase):
    def _dir(self) -> str:
        path: str = self.mktemp()
        os.makedirs(path)
        return path

    def _stopped(self, process: ToFile) -> str:
        """Stop C{process}, check it exited 0 without a traceback, and return its log."""
        code = process.stop()
        output = process.output()
        self.assertEqual(code, 0, output)
        self.assertNotIn("Traceback", output)
        return output

    def test_seed_command(self) -> None:
        """
        C{nsq_to_file --topic=test --output-dir=DIR --lookupd-http-address=...} writes a
        published message to C{test.<short host>.<%Y-%m-%d_%H>.log}; SIGTERM syncs and finishes it.
        """
        lookupd = start_nsqlookupd(self)
        nsqd = start_nsqd(self, f"--lookupd-tcp-address={lookupd.tcp_hostport}")
        _publish(nsqd, "test", [b"hello from nsq"])
        lookup = f"http://{lookupd.http_hostport}/lookup?topic=test"

        def registered() -> bool:
            try:
                return bool(json.loads(_http(lookup)).get("producers"))
            except OSError:
                return False

        _wait("the topic in lookupd", registered)
        out = self._dir()
        before = datetime.datetime.now()
        process = ToFile(
            self, "--topic=test", f"--output-dir={out}", f"--lookupd-http-address={lookupd.http_hostport}"
        )
        _wait("the message in flight", lambda: _channel_stats(nsqd, "test").get("in_flight_count") == 1)
        self._stopped(process)
        after = datetime.datetime.now()
        host = socket.gethostname().split(".")[0]
        names = {f"test.{host}.{when:%Y-%m-%d_%H}.log" for when in (before, after)}
        [name] = os.listdir(out)
        self.assertIn(name, names)
        with open(os.path.join(out, name), "rb") as f:
            self.assertEqual(f.read(), b"hello from nsq\n")
        stats = _channel_stats(nsqd, "test")
        self.assertEqual((stats["in_flight_count"], stats["depth"], stats["requeue_count"]), (0, 0, 0))
        self.assertEqual(_finished(nsqd, "test"), 1)

    def test_rotate_by_size(self) -> None:
        """Each file but the last is over --rotate-size only by its last line; nothing is lost."""
        nsqd = start_nsqd(self)
        bodies = [b"message number %04d" % i for i in range(60)]
        _publish(nsqd, "sized", bodies)
        out = self._dir()
        process = ToFile(
            self,
            "--topic=sized",
            f"--output-dir={out}",
            f"--nsqd-tcp-address={nsqd.tcp_hostport}",
            "--filename-format=<TOPIC><REV>.log",
            "--rotate-size=200",
            "--max-in-flight=10",
            # The last messages are fewer than a batch: synced by the timer.
            "--sync-interval=200ms",
        )
        _wait("every message finished", lambda: _finished(nsqd, "sized") == 60)
        self._stopped(process)
        names = sorted(os.listdir(out))
        self.assertEqual(names, [f"sized-{rev:06d}.log" for rev in range(len(names))])
        self.assertGreater(len(names), 5)
        contents = []
        for name in names:
            with open(os.path.join(out, name), "rb") as f:
                contents.append(f.read())
        for data in contents[:-1]:
            last = len(data.splitlines()[-1]) + 1
            self.assertGreater(len(data), 200)
            self.assertLessEqual(len(data) - last, 200)
        lines = [line for data in contents for line in data.splitlines()]
        self.assertEqual(sorted(lines), bodies)

    def test_rotate_by_interval(self) -> None:
        """--rotate-interval closes the file; with --skip-empty-files no empty file is left."""
        nsqd = start_nsqd(self)
        out = self._dir()
        process = ToFile(
            self,
            "--topic=timed",
            f"--output-dir={out}",
            f"--nsqd-tcp-address={nsqd.tcp_hostport}",
            "--filename-format=<TOPIC><REV>.log",
            "--rotate-interval=1s",
            "--sync-interval=100ms",
            "--skip-empty-files",
        )
        first = [b"first %d" % i for i in range(5)]
        second = [b"second %d" % i for i in range(5)]
        _publish(nsqd, "timed", first)
        _wait("the first batch", lambda: _finished(nsqd, "timed") == 5)
        time.sleep(1.5)
        _publish(nsqd, "timed", second)
        _wait("the second batch", lambda: _finished(nsqd, "timed") == 10)
        self._stopped(process)
        files = {}
        for name in sorted(os.listdir(out)):
            with open(os.path.join(out, name), "rb") as f:
                files[name] = f.read().splitlines()
        self.assertEqual(list(files), ["timed-000000.log", "timed-000001.log"])
        self.assertEqual(files["timed-000000.log"], first)
        self.assertEqual(files["timed-000001.log"], second)

    def test_gzip(self) -> None:
        """gzip output is concatenated members that the system gzip reads as the exact bodies."""
        nsqd = start_nsqd(self)
        bodies = [b"gz %d " % i + bytes(range(32, 127)) for i in range(23)]
        _publish(nsqd, "zipped", bodies)
        out = self._dir()
        work = self._dir()
        process = ToFile(
            self,
            "--topic=zipped",
            f"--output-dir={out}",
            f"--work-dir={work}",
            f"--nsqd-tcp-address={nsqd.tcp_hostport}",
            "--gzip",
            "--gzip-level=9",
            "--max-in-flight=5",
            "--sync-interval=200ms",
        )
        _wait("every message finished", lambda: _finished(nsqd, "zipped") == 23)
        # In progress in the work dir until closed.
        self.assertEqual(os.listdir(out), [])
        self._stopped(process)
        self.assertEqual(os.listdir(work), [])
        [name] = os.listdir(out)
        host = socket.gethostname().split(".")[0]
        self.assertRegex(name, rf"^zipped\.{re.escape(host)}-000000\.\d{{4}}-\d\d-\d\d_\d\d\.log\.gz$")
        path = os.path.join(out, name)
        decompressed = subprocess.run(["gzip", "-dc", path], capture_output=True, timeout=TIMEOUT, check=True)
        self.assertEqual(decompressed.stdout, b"".join(body + b"\n" for body in bodies))
        with open(path, "rb") as f:
            data = f.read()
        members = 0
        while data:
            decompressor = zlib.decompressobj(31)
            decompressor.decompress(data)
            self.assertTrue(decompressor.eof)
            data = decompressor.unused_data
            members += 1
        self.assertGreater(members, 1)

    def test_sigterm_mid_stream(self) -> None:
        """
        SIGTERM while consuming finishes only what was written, and leaves nothing in flight:
        a second run gets the rest, and the files hold every message exactly once.
        """
        nsqd = start_nsqd(self)
        total = 6000
        bodies = [b"seq %05d" % i for i in range(total)]
        _publish(nsqd, "stream", bodies)
        out = self._dir()
        argv = (
            "--topic=stream",
            f"--output-dir={out}",
            f"--nsqd-tcp-address={nsqd.tcp_hostport}",
            "--filename-format=<TOPIC>.<PID>.log",
            "--max-in-flight=20",
            "--sync-interval=200ms",
        )
        first = ToFile(self, *argv)
        _wait("some messages finished", lambda: _finished(nsqd, "stream") >= 300)
        self._stopped(first)
        stats = _channel_stats(nsqd, "stream")
        done_first = _finished(nsqd, "stream")
        self.assertEqual(stats["in_flight_count"], 0)
        written_first = _lines(out)
        self.assertEqual(len(written_first), done_first)
        self.assertLess(done_first, total, "the first run consumed everything before SIGTERM")
        second = ToFile(self, *argv)
        _wait("every message finished", lambda: _finished(nsqd, "stream") == total)
        self._stopped(second)
        lines = _lines(out)
        self.assertEqual(len(lines), total)
        self.assertEqual(sorted(lines), bodies)
        stats = _channel_stats(nsqd, "stream")
        self.assertEqual(_finished(nsqd, "stream"), total)
        self.assertEqual((stats["requeue_count"], stats["timeout_count"]), (0, 0))

    def test_topic_pattern(self) -> None:
        """--topic-pattern consumes lookupd's matching topics, and new ones after a refresh."""
        lookupd = start_nsqlookupd(self)
        nsqd = start_nsqd(self, f"--lookupd-tcp-address={lookupd.tcp_hostport}")
        for topic in ("logs_a", "logs_b", "other"):
            _publish(nsqd, topic, [topic.encode()])
        topics_url = f"http://{lookupd.http_hostport}/topics"

        def known(*names: str) -> Callable[[], bool]:
            return lambda: set(names) <= set(json.loads(_http(topics_url))["topics"])

        _wait("the topics in lookupd", known("logs_a", "logs_b", "other"))
        out = self._dir()
        process = ToFile(
            self,
            "--topic-pattern=^logs_",
            f"--output-dir={out}",
            f"--lookupd-http-address={lookupd.http_hostport}",
            "--topic-refresh=300ms",
            "--sync-interval=100ms",
            "--filename-format=<TOPIC>.log",
        )
        for topic in ("logs_a", "logs_b"):
            _wait(f"{topic} written", lambda t=topic: _lines(out, t + ".") == [t.encode()])  # type: ignore[misc]
        _publish(nsqd, "logs_c", [b"late topic"])
        _wait("logs_c written", lambda: _lines(out, "logs_c.") == [b"late topic"])
        self._stopped(process)
        self.assertEqual(sorted(os.listdir(out)), ["logs_a.log", "logs_b.log", "logs_c.log"])
        self.assertEqual(_channel_stats(nsqd, "other"), {})

    def test_sighup_reopens(self) -> None:
        """SIGHUP closes the file (moved out of the work dir); the next one takes the next revision."""
        nsqd = start_nsqd(self)
        out, work = self._dir(), self._dir()
        process = ToFile(
            self,
            "--topic=hup",
            f"--output-dir={out}",
            f"--work-dir={work}",
            f"--nsqd-tcp-address={nsqd.tcp_hostport}",
            "--filename-format=<TOPIC><REV>.log",
            "--sync-interval=100ms",
            "--skip-empty-files",
        )
        _publish(nsqd, "hup", [b"before"])
        _wait("the first message", lambda: _finished(nsqd, "hup") == 1)
        process.signal(signal.SIGHUP)
        _wait("the first file moved", lambda: os.listdir(out) == ["hup-000000.log"])
        _publish(nsqd, "hup", [b"after"])
        _wait("the second message", lambda: _finished(nsqd, "hup") == 2)
        self._stopped(process)
        self.assertEqual(sorted(os.listdir(out)), ["hup-000000.log", "hup-000001.log"])
        self.assertEqual(_lines(out, "hup-000000"), [b"before"])
        self.assertEqual(_lines(out, "hup-000001"), [b"after"])
        self.assertEqual(os.listdir(work), [])

    def test_command_line(self) -> None:
        """--version, Go's validation messages (exit 1) and a bad flag (exit 2, with the usage)."""
        version = subprocess.run([_SCRIPT, "--version"], capture_output=True, timeout=TIMEOUT, check=False)
        self.assertEqual(version.returncode, 0)
        self.assertRegex(
            version.stdout.decode(), r"^nsq_to_file v1\.3\.0-twisted \(built w/python3\.\d+\.\d+\)\n$"
        )
        missing = subprocess.run(
            [
                _SCRIPT,
                "--topic=t",
                "--nsqd-tcp-address=127.0.0.1:1",
                "--gzip",
                "--filename-format=<TOPIC>.log",
            ],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        self.assertEqual(missing.returncode, 1)
        self.assertIn(
            b"missing <REV> in --filename-format when gzip, rotation, or work dir enabled", missing.stderr
        )
        bad = subprocess.run([_SCRIPT, "--no-such-flag"], capture_output=True, timeout=TIMEOUT, check=False)
        self.assertEqual(bad.returncode, 2)
        self.assertIn(b"-topic-pattern string", bad.stderr)
