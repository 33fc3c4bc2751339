"""
The real C{nsqd} process registering with a fake nsqlookupd that runs in the test: a blocking
TCP server speaking the V1 protocol byte for byte, and a small HTTP server answering
C{/channels} (spec 2.10, 0 item 12).

Every wait is bounded and every socket and thread is closed by the test's cleanups.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import NSQDProcess, start_nsqd
from tests.integration._rawclient import RawClient

WAIT = 10.0
_INT32 = struct.Struct(">i")


class Event(NamedTuple):
    """One thing the fake lookupd saw on connection number C{connection}."""

    connection: int
    command: str
    body: bytes = b""


class FakeLookupd:
    """
    A fake nsqlookupd: the V1 TCP protocol on one port (a thread per connection, answering
    IDENTIFY with its own ports and everything else with C{OK}) and C{GET /channels} on another,
    answering from L{channels}.
    """

    def __init__(self) -> None:
        self.channels: dict[str, list[str]] = {}
        self.channel_queries: list[str] = []
        self.events: list[Event] = []
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.1)
        self.tcp_port: int = self._listener.getsockname()[1]

        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                if url.path != "/channels" or "topic" not in query:
                    self.reply(400, {"message": "MISSING_ARG_TOPIC"})
                    return
                topic = query["topic"][0]
                with owner._changed:
                    owner.channel_queries.append(topic)
                    owner._changed.notify_all()
                self.reply(200, {"channels": owner.channels.get(topic, [])})

            def reply(self, status: int, document: dict[str, Any]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("X-NSQ-Content-Type", "nsq; version=1.0")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                # The queries are recorded above; keep the test output clean.
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http_port: int = self._http.server_address[1]
        self._start(self._http.serve_forever, "fake-lookupd-http", 0.05)
        self._start(self._accept, "fake-lookupd-tcp")

    def _start(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    @property
    def tcp_address(self) -> str:
        return f"127.0.0.1:{self.tcp_port}"

    def identify_reply(self) -> bytes:
        return json.dumps(
            {
                "tcp_port": self.tcp_port,
                "http_port": self.http_port,
                "version": "1.3.0",
                "broadcast_address": "127.0.0.1",
                "hostname": "fake-lookupd",
            }
        ).encode()

    # -- TCP ------------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(0.1)
            with self._changed:
                number = len(self._connections)
                self._connections.append(connection)
            self._start(self._serve, f"fake-lookupd-conn-{number}", connection, number)

    def _record(self, event: Event) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def _serve(self, connection: socket.socket, number: int) -> None:
        buffer = bytearray()

        def fill() -> bool:
            """Read more into the buffer; False at end of stream or when the fake stops."""
            while not self._stopping.is_set():
                try:
                    chunk = connection.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return False
                buffer.extend(chunk)
                return bool(chunk)
            return False

        def read(count: int) -> bytes | None:
            while len(buffer) < count:
                if not fill():
                    return None
            data = bytes(buffer[:count])
            del buffer[:count]
            return data

        def read_line() -> bytes | None:
            while b"\n" not in buffer:
                if not fill():
                    return None
            end = buffer.index(b"\n")
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            return line

        def reply(data: bytes) -> None:
            try:
                connection.sendall(_INT32.pack(len(data)) + data)
            except OSError:
                pass

        magic = read(4)
        if magic is None:
            self._record(Event(number, "CLOSED"))
            return
        self._record(Event(number, "MAGIC", magic))
        while True:
            line = read_line()
            if line is None:
                break
            command = line.decode("utf-8", "replace").strip()
            if command == "IDENTIFY":
                size = read(4)
                body = read(_INT32.unpack(size)[0]) if size is not None else None
                if body is None:
                    break
                self._record(Event(number, command, body))
                reply(self.identify_reply())
            else:
                self._record(Event(number, command))
                reply(b"OK")
        self._record(Event(number, "CLOSED"))

    # -- for the tests ---------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[Event], bool], what: str, timeout: float = WAIT) -> Event:
        """The first event matching C{predicate}, waiting up to C{timeout} seconds for it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"the fake lookupd did not see {what} within {timeout}s: {self.events}"
                    )
                self._changed.wait(min(remaining, 0.2))

    def wait_command(self, command: str, connection: int | None = None) -> Event:
        return self.wait_for(
            lambda e: e.command == command and (connection is None or e.connection == connection),
            repr(command),
        )

    def commands(self, connection: int) -> list[str]:
        with self._changed:
            return [e.command for e in self.events if e.connection == connection]

    def drop_connections(self) -> None:
        """Close every connection from nsqd, as a lookupd restart would."""
        with self._changed:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._stopping.set()
        self._http.shutdown()
        self._http.server_close()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)
        for connection in self._connections:
            connection.close()


def http(nsqd: NSQDProcess, method: str, path: str, body: bytes | None = None) -> bytes:
    host, port = nsqd.http_address
    request = urllib.request.Request(f"http://{host}:{port}{path}", data=body, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        data: bytes = response.read()
        return data


def channel_depths(nsqd: NSQDProcess, topic: str) -> dict[str, int]:
    stats = json.loads(http(nsqd, "GET", f"/stats?format=json&topic={topic}"))
    return {c["channel_name"]: c["depth"] for t in stats["topics"] for c in t["channels"] or []}


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        time.sleep(0.05)


class LookupdRegistrationTests(SynchronousTestCase):
    """nsqd identifies itself, registers what it has and announces every change."""

    def assert_clean_exit(self, nsqd: NSQDProcess) -> None:
        self.assertEqual(nsqd.stop(), 0, nsqd.output())
        for sign in ("Traceback", "Unhandled"):
            self.assertNotIn(sign, nsqd.output())

    def test_identify_register_unregister(self) -> None:
        fake = FakeLookupd()
        self.addCleanup(fake.close)
        fake.channels["t1"] = ["eph#ephemeral", "pre"]
        nsqd = start_nsqd(self, f"--lookupd-tcp-address={fake.tcp_address}", "--broadcast-address=127.0.0.1")

        self.assertEqual(fake.wait_command("MAGIC").body, b"  V1")
        identify = fake.wait_command("IDENTIFY")
        self.assertTrue(identify.body.startswith(b'{"broadcast_address":"127.0.0.1","hostname":'), identify)
        info = json.loads(identify.body)
        self.assertEqual(
            info,
            {
                "broadcast_address": "127.0.0.1",
                "hostname": socket.gethostname(),
                "http_port": nsqd.http_address[1],
                "tcp_port": nsqd.tcp_address[1],
                "version": "1.3.0",
            },
        )

        # nsqd asks lookupd's HTTP port for a new topic's channels, which it learns from the IDENTIFY
        # reply; a topic created before that reply gets none (as in Go: "no available nsqlookupd").
        wait_until(lambda: "peer info" in nsqd.output(), "nsqd read lookupd's IDENTIFY reply")
        # A PUB creates the topic: REGISTER, then lookupd's channels are created and get the message.
        self.assertEqual(http(nsqd, "POST", "/pub?topic=t1", b"hello"), b"OK")
        fake.wait_command("REGISTER t1")
        fake.wait_command("REGISTER t1 pre")
        self.assertEqual(fake.channel_queries, ["t1"])
        wait_until(
            lambda: channel_depths(nsqd, "t1") == {"pre": 1}, "the pre-created channel got the message"
        )

        client = RawClient(nsqd.tcp_address)
        try:
            self.assertEqual(client.sub("t1", "c1").data, b"OK")
            fake.wait_command("REGISTER t1 c1")
        finally:
            client.close()
        http(nsqd, "POST", "/channel/delete?topic=t1&channel=c1")
        fake.wait_command("UNREGISTER t1 c1")

        # At exit nsqd closes the connection without unregistering anything (as Go does).
        self.assert_clean_exit(nsqd)
        fake.wait_command("CLOSED", connection=0)
        self.assertEqual([c for c in fake.commands(0) if c.startswith("UNREGISTER")], ["UNREGISTER t1 c1"])

    def test_put_config_and_reconnect(self) -> None:
        """A lookupd added at run time is registered with; when it drops nsqd, nsqd reconnects."""
        fake = FakeLookupd()
        self.addCleanup(fake.close)
        nsqd = start_nsqd(self, "--broadcast-address=127.0.0.1")
        http(nsqd, "POST", "/topic/create?topic=t2")
        http(nsqd, "POST", "/channel/create?topic=t2&channel=c")
        body = json.dumps([fake.tcp_address]).encode()
        answer = http(nsqd, "PUT", "/config/nsqlookupd_tcp_addresses", body)
        self.assertEqual(json.loads(answer), [fake.tcp_address])
        fake.wait_command("IDENTIFY", connection=0)
        fake.wait_command("REGISTER t2 c", connection=0)
        http(nsqd, "POST", "/topic/create?topic=t3")
        fake.wait_command("REGISTER t3", connection=0)

        fake.drop_connections()
        fake.wait_command("CLOSED", connection=0)
        fake.wait_command("IDENTIFY", connection=1)
        fake.wait_command("REGISTER t2 c", connection=1)
        fake.wait_command("REGISTER t3", connection=1)

        # Removing it closes the link.
        http(nsqd, "PUT", "/config/nsqlookupd_tcp_addresses", b"[]")
        fake.wait_command("CLOSED", connection=1)
        self.assert_clean_exit(nsqd)
