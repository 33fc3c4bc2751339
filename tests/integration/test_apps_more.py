"""
The forwarding utilities (C{nsq_to_http}, C{nsq_to_nsq}), C{to_nsq --rate} and C{nsq_stat}'s rate
columns, run as console scripts against real nsqd processes. The HTTP endpoints C{nsq_to_http}
calls are a small server on 127.0.0.1 in a thread of the test. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import NSQDProcess, start_nsqd

#: The longest any one tool run, or any wait for an outcome, may take.
TIMEOUT = 30.0

_BIN = os.path.dirname(sys.executable)


def _tool(name: str, *argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run one utility to its end, stdin fed and closed, stdout and stderr captured."""
    return subprocess.run(
        [os.path.join(_BIN, name), *argv], input=stdin, capture_output=True, timeout=TIMEOUT, check=False
    )


class _Running:
    """A utility running in the background, its stderr in a file; the cleanup kills it if needed."""

    def __init__(self, test: SynchronousTestCase, name: str, *argv: str) -> None:
        self._stderr_path = test.mktemp()
        self._stderr = open(self._stderr_path, "wb")
        self._buffer = b""
        self.popen = subprocess.Popen(
            [os.path.join(_BIN, name), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        test.addCleanup(self._cleanup)

    def stderr(self) -> str:
        with open(self._stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def readline(self, timeout: float = TIMEOUT) -> bytes:
        """One line of stdout, or an assertion error after C{timeout}."""
        assert self.popen.stdout is not None
        # Read the pipe directly: a buffered reader would hide buffered lines from select().
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                raise AssertionError(f"no line within {timeout} s; stderr:\n{self.stderr()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def terminate(self) -> int:
        """SIGTERM, then the exit status."""
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(TIMEOUT)

    def _cleanup(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(TIMEOUT)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._stderr.close()


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _channel_stats(nsqd: NSQDProcess, topic: str, channel: str) -> dict[str, Any]:
    with urllib.request.urlopen(
        f"http://{nsqd.http_hostport}/stats?format=json&topic={topic}&channel={channel}", timeout=5
    ) as response:
        stats = json.loads(response.read())
    for t in stats["topics"] or []:
        for c in t["channels"]:
            if t["topic_name"] == topic and c["channel_name"] == channel:
                result: dict[str, Any] = c
                return result
    return {}


def _drained(nsqd: NSQDProcess, topic: str, channel: str) -> Callable[[], bool]:
    def check() -> bool:
        stats = _channel_stats(nsqd, topic, channel)
        return bool(stats) and stats["depth"] == 0 and stats["in_flight_count"] == 0

    return check


def _publish(test: SynchronousTestCase, nsqd: NSQDProcess, topic: str, lines: list[bytes]) -> None:
    published = _tool(
        "to_nsq", f"--topic={topic}", f"--nsqd-tcp-address={nsqd.tcp_hostport}", stdin=b"\n".join(lines)
    )
    test.assertEqual(published.returncode, 0, published.stderr)


class _Endpoint:
    """
    An HTTP server on 127.0.0.1 in a thread: records each request's method, path, query, headers
    and body, and answers 500 to the first request carrying a body in C{fail_first}, 200 otherwise.
    """

    def __init__(self, test: SynchronousTestCase, fail_first: set[bytes] | None = None) -> None:
        self.lock = threading.Lock()
        self.fail_first = set(fail_first or ())
        self.requests: list[tuple[str, str, dict[str, str], bytes, int]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as real endpoints do: the pool reuses its connections.
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                payload = body if self.command == "POST" else query.get("m", [""])[0].encode()
                with endpoint.lock:
                    code = 500 if payload in endpoint.fail_first else 200
                    endpoint.fail_first.discard(payload)
                    endpoint.requests.append((self.command, parts.path, dict(self.headers), payload, code))
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = _handle
            do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            # Room for nsq_to_http's burst of concurrent connections.
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        test.addCleanup(self._stop)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def delivered(self) -> list[bytes]:
        """The payloads answered 200, in arrival order."""
        with self.lock:
            return [payload for _, _, _, payload, code in self.requests if code == 200]

    def _stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(TIMEOUT)


# Fast redelivery for the tests: no requeue delay, and short backoffs.
_FAST_RETRY = (
    "--consumer-opt=default_requeue_delay,0",
    "--consumer-opt=backoff_multiplier,0.01",
    "--consumer-opt=max_backoff_duration,0.1",
)


class VersionTests(SynchronousTestCase):
    def test_version(self) -> None:
        """Each forwarding tool's --version is Go's line with our version."""
        for name in ("nsq_to_http", "nsq_to_nsq"):
            result = _tool(name, "--version")
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertRegex(
                result.stdout.decode(), rf"^{name} v1\.3\.0-twisted \(built w/python3\.\d+\.\d+\)\n$"
            )

    def test_flag_error(self) -> None:
        """A missing flag exits 1 with Go's message."""
        result = _tool("nsq_to_http", "--topic=t", "--nsqd-tcp-address=127.0.0.1:1")
        self.assertEqual((result.returncode, result.stderr), (1, b"nsq_to_http: --get or --post required\n"))


class NSQToHTTPTests(SynchronousTestCase):
    def test_post_with_failures(self) -> None:
        """
        Failed POSTs are requeued (nsqd counts each REQ) and retried until every message was
        delivered; the body, content type and custom header reach the endpoint.
        """
        nsqd = start_nsqd(self)
        bodies = [b"message %d" % i for i in range(12)]
        failing = {body for i, body in enumerate(bodies) if i % 3 == 0}
        endpoint = _Endpoint(self, failing)
        _publish(self, nsqd, "to_http", bodies)
        running = _Running(
            self,
            "nsq_to_http",
            "--topic=to_http",
            f"--nsqd-tcp-address={nsqd.tcp_hostport}",
            f"--post={endpoint.url}/post",
            "--content-type=text/plain",
            "--header=X-Test: yes",
            "--mode=hostpool",
            *_FAST_RETRY,
        )
        _wait_for(lambda: sorted(endpoint.delivered()) == sorted(bodies), "every message delivered")
        _wait_for(_drained(nsqd, "to_http", "nsq_to_http"), "the channel to drain")
        stats = _channel_stats(nsqd, "to_http", "nsq_to_http")
        self.assertEqual(stats["requeue_count"], len(failing), running.stderr())
        self.assertEqual(stats["message_count"], len(bodies))
        method, path, headers, _, _ = endpoint.requests[0]
        self.assertEqual((method, path), ("POST", "/post"))
        self.assertEqual(headers["Content-Type"], "text/plain")
        self.assertEqual(headers["X-Test"], "yes")
        self.assertEqual(headers["User-Agent"], "nsq_to_http v1.3.0-twisted")
        self.assertEqual(running.terminate(), 0, running.stderr())
        self.assertIn("got status code 500", running.stderr())

    def test_get(self) -> None:
        """--get puts the URL-escaped body in the URL; every 200 finishes its message."""
        nsqd = start_nsqd(self)
        bodies = [b"a b", b"c&d=e", b"f/g?h", b"\xc3\xa9t\xc3\xa9"]
        endpoint = _Endpoint(self)
        _publish(self, nsqd, "to_get", bodies)
        running = _Running(
            self,
            "nsq_to_http",
            "--topic=to_get",
            "--channel=getter",
            f"--nsqd-tcp-address={nsqd.tcp_hostport}",
            f"--get={endpoint.url}/get?m=%s",
        )
        _wait_for(lambda: sorted(endpoint.delivered()) == sorted(bodies), "every message delivered")
        _wait_for(_drained(nsqd, "to_get", "getter"), "the channel to drain")
        self.assertEqual(_channel_stats(nsqd, "to_get", "getter")["requeue_count"], 0)
        self.assertEqual({request[0] for request in endpoint.requests}, {"GET"})
        self.assertEqual(running.terminate(), 0, running.stderr())


class NSQToNSQTests(SynchronousTestCase):
    def test_filter_and_whitelist(self) -> None:
        """
        Only JSON messages whose kind is "keep" reach the destination topic on the other nsqd,
        rewritten to the whitelisted fields; the others are finished on the source.
        """
        source, destination = start_nsqd(self), start_nsqd(self)
        _publish(
            self,
            source,
            "events",
            [
                b'{"kind": "keep", "id": 1, "secret": "x"}',
                b'{"kind": "drop", "id": 2}',
                b"not json",
                b'{"kind": "keep", "id": 3, "extra": {"b": 1, "a": [2, 3.0]}}',
                b'{"kind": "keep", "id": 4.50, "msg": "<&>"}',
                b'{"kind": 5, "id": 6}',
            ],
        )
        running = _Running(
            self,
            "nsq_to_nsq",
            "--topic=events",
            f"--nsqd-tcp-address={source.tcp_hostport}",
            f"--destination-nsqd-tcp-address={destination.tcp_hostport}",
            "--destination-topic=filtered",
            "--require-json-field=kind",
            "--require-json-value=keep",
            "--whitelist-json-field=id",
            "--whitelist-json-field=kind",
            "--whitelist-json-field=extra",
            "--whitelist-json-field=msg",
        )
        tail = _tool("nsq_tail", "--topic=filtered", f"--nsqd-tcp-address={destination.tcp_hostport}", "-n=3")
        self.assertEqual(tail.returncode, 0, tail.stderr)
        self.assertEqual(
            sorted(tail.stdout.splitlines()),
            sorted(
                [
                    b'{"id":1,"kind":"keep"}',
                    b'{"extra":{"a":[2,3.0],"b":1},"id":3,"kind":"keep"}',
                    b'{"id":4.50,"kind":"keep","msg":"\\u003c\\u0026\\u003e"}',
                ]
            ),
        )
        _wait_for(_drained(source, "events", "nsq_to_nsq"), "the source channel to drain")
        stats = _channel_stats(source, "events", "nsq_to_nsq")
        self.assertEqual((stats["message_count"], stats["requeue_count"]), (6, 0))
        self.assertEqual(running.terminate(), 0, running.stderr())
        self.assertIn("ERROR: Unable to decode json: not json", running.stderr())


class ToNSQRateTests(SynchronousTestCase):
    def test_rate(self) -> None:
        """--rate 10 takes at least half a second for 6 records (5 intervals of 100 ms)."""
        nsqd = start_nsqd(self)
        started = time.monotonic()
        published = _tool(
            "to_nsq",
            "--topic=rated",
            f"--nsqd-tcp-address={nsqd.tcp_hostport}",
            "--rate=10",
            stdin=b"1\n2\n3\n4\n5\n6\n",
        )
        elapsed = time.monotonic() - started
        self.assertEqual(published.returncode, 0, published.stderr)
        self.assertGreaterEqual(elapsed, 0.5)
        # Not a terminal: no progress line.
        self.assertEqual(published.stderr, b"")
        tail = _tool("nsq_tail", "--topic=rated", f"--nsqd-tcp-address={nsqd.tcp_hostport}", "-n=6")
        self.assertEqual(tail.stdout, b"1\n2\n3\n4\n5\n6\n")


class NSQStatTests(SynchronousTestCase):
    def test_rate_columns(self) -> None:
        """Messages published between two polls show as ingress; the depth columns follow nsqd."""
        nsqd = start_nsqd(self)
        for path in ("topic/create?topic=st", "channel/create?topic=st&channel=c"):
            request = urllib.request.Request(f"http://{nsqd.http_hostport}/{path}", method="POST")
            with urllib.request.urlopen(request, timeout=5) as response:
                self.assertEqual(response.status, 200)
        running = _Running(
            self,
            "nsq_stat",
            "--topic=st",
            "--channel=c",
            f"--nsqd-http-address={nsqd.http_hostport}",
            "--interval=1s",
            "--count=1",
        )
        header = [running.readline(), running.readline()]
        self.assertEqual(
            header[0].split(b"+"),
            [
                b"------rate------",
                b"-" * 16 + b"depth" + b"-" * 16,
                b"-" * 14 + b"metadata" + b"-" * 15 + b"\n",
            ],
        )
        publish = urllib.request.Request(
            f"http://{nsqd.http_hostport}/mpub?topic=st", data=b"\n".join(b"m%d" % i for i in range(10))
        )
        with urllib.request.urlopen(publish, timeout=5) as response:
            self.assertEqual(response.status, 200)
        row = running.readline()
        self.assertEqual(running.popen.wait(TIMEOUT), 0, running.stderr())
        # 10 messages in the 1 s interval, none consumed: ingress 10, egress 0, all in memory.
        self.assertEqual(
            row.decode(),
            f"{10:7d} {0:7d} | {10:7d} {10:7d} {0:7d} {0:5d} {0:5d} | {0:7d} {0:7d} {10:12d} {0:7d}\n",
        )

    def test_missing_channel(self) -> None:
        """A channel no nsqd has ends nsq_stat with Go's error, exit status 1."""
        nsqd = start_nsqd(self)
        stat = _tool("nsq_stat", "--topic=none", "--channel=c", f"--nsqd-http-address={nsqd.http_hostport}")
        self.assertEqual(stat.returncode, 1, stat.stderr)
        self.assertIn(b"ERROR: failed to find channel(c) in stats metadata for topic(none)", stat.stderr)
