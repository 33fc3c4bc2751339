"""
Tests for L{twisted_nsq.nsqlookupd.service}: an L{NSQLookupdService} starting and draining with
real listeners on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile

from twisted.internet.defer import ensureDeferred
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import TestCase

from tests._daemons import capture_messages, connect_tcp, listening_port, trial_reactor
from twisted_nsq.nsqd.service import StartupError
from twisted_nsq.nsqlookupd.options import NSQLookupdOptions
from twisted_nsq.nsqlookupd.service import NSQLookupdService

TIMEOUT = 10.0


def _frame(data: bytes) -> bytes:
    """A lookupd reply: size, then data (no frame type)."""
    return struct.pack(">i", len(data)) + data


class NSQLookupdServiceTests(TestCase):
    """Real listeners on 127.0.0.1 with the real reactor."""

    timeout = 30

    def setUp(self) -> None:
        self.reactor = trial_reactor()
        self.messages = capture_messages(self)

    def make_service(self, **settings: object) -> NSQLookupdService:
        values: dict[str, object] = {
            "tcp_address": "127.0.0.1:0",
            "http_address": "127.0.0.1:0",
            "broadcast_address": "lookuphost",
        }
        values.update(settings)
        service = NSQLookupdService(NSQLookupdOptions(**values), self.reactor)  # type: ignore[arg-type]
        self.addCleanup(service.stopService)
        return service

    async def http_get(self, port: int, path: str) -> tuple[int, bytes]:
        """One HTTP/1.0 GET; the status and body once the server closes the connection."""
        client = await connect_tcp(self.reactor, port)
        assert client.transport is not None
        client.transport.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await client.lost.addTimeout(TIMEOUT, self.reactor)
        head, _, body = bytes(client.received).partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), body

    async def test_start_and_stop(self) -> None:
        """
        Start binds TCP then HTTP, logs both as harnesses expect and gives the core the bound
        ports; both listeners serve; stop drains nsqd connections and closes everything.
        """
        service = self.make_service()
        service.startService()
        self.assertTrue(service.running)
        assert service.lookupd is not None
        tcp, http = listening_port(service, "tcp"), listening_port(service, "http")
        self.assertEqual((service.lookupd.tcp_port, service.lookupd.http_port), (tcp, http))
        listening = [m for m in self.messages if "listening on" in m]
        self.assertEqual(
            listening, [f"TCP: listening on 127.0.0.1:{tcp}", f"HTTP: listening on 127.0.0.1:{http}"]
        )
        self.assertTrue(self.messages[0].startswith("nsqlookupd v1.3.0-twisted (built w/python3."))

        self.assertEqual(await self.http_get(http, "/ping"), (200, b"OK"))

        client = await connect_tcp(self.reactor, tcp)
        assert client.transport is not None
        identify = json.dumps(
            {"broadcast_address": "nsqdhost", "tcp_port": 4150, "http_port": 4151, "version": "1.3.0"}
        ).encode()
        client.transport.write(b"  V1PING\nIDENTIFY\n" + struct.pack(">i", len(identify)) + identify)
        ok = _frame(b"OK")
        first = await client.when_received(len(ok) + 4).addTimeout(TIMEOUT, self.reactor)
        self.assertEqual(first[: len(ok)], ok)
        size = struct.unpack(">i", first[len(ok) : len(ok) + 4])[0]
        replies = await client.when_received(len(ok) + 4 + size).addTimeout(TIMEOUT, self.reactor)
        answer = json.loads(replies[len(ok) + 4 :])
        self.assertEqual(
            (answer["tcp_port"], answer["http_port"], answer["broadcast_address"]), (tcp, http, "lookuphost")
        )
        client.transport.write(b"REGISTER topic_a\n")
        await client.when_received(len(replies) + len(ok)).addTimeout(TIMEOUT, self.reactor)
        self.assertEqual(await self.http_get(http, "/topics"), (200, b'{"topics":["topic_a"]}'))

        await service.stopService()
        assert service.factory is not None
        self.assertEqual(service.factory.connections, set(), "the drain closes nsqd links before it ends")
        await client.lost
        self.assertFalse(service.running)
        self.assertIsNone(service.tcp_listening_port)
        self.assertIsNone(service.http_listening_port)
        closing = [m for m in self.messages if "closing" in m]
        self.assertEqual(closing, [f"TCP: closing 127.0.0.1:{tcp}", f"HTTP: closing 127.0.0.1:{http}"])
        for port in (tcp, http):
            await self.assertFailure(ensureDeferred(connect_tcp(self.reactor, port)), ConnectionRefusedError)

    async def test_drain_order(self) -> None:
        """The TCP listener closes first, then the nsqd connections, then the HTTP listener."""
        service = self.make_service()
        service.startService()
        tcp, http = listening_port(service, "tcp"), listening_port(service, "http")
        client = await connect_tcp(self.reactor, tcp)
        assert client.transport is not None
        client.transport.write(b"  V1PING\n")
        await client.when_received(6).addTimeout(TIMEOUT, self.reactor)
        assert service.factory is not None
        [link] = service.factory.connections
        order: list[str] = []

        def lost(_: None) -> None:
            tcp_open = service.tcp_listening_port is not None
            http_open = service.http_listening_port is not None
            order.append(f"link lost: tcp open={tcp_open}, http open={http_open}")

        link.when_lost().addCallback(lost)
        self.messages.clear()
        await service.stopService()
        self.assertEqual(order, ["link lost: tcp open=False, http open=True"])
        self.assertEqual(self.messages[0], f"TCP: closing 127.0.0.1:{tcp}")
        self.assertEqual(self.messages[-1], f"HTTP: closing 127.0.0.1:{http}")
        await client.lost

    async def test_unix_socket(self) -> None:
        """A path listens on a unix socket, as Go nsqlookupd's listen address rules allow."""
        directory = tempfile.mkdtemp(prefix="lookupd")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "lookupd.sock")
        service = self.make_service(tcp_address=path)
        service.startService()
        assert service.lookupd is not None
        self.assertEqual(service.lookupd.tcp_port, -1)
        self.assertIn(f"TCP: listening on {path}", self.messages)
        await service.stopService()
        self.assertFalse(os.path.exists(path))

    async def test_busy_tcp_port(self) -> None:
        """A busy TCP port fails start-up loudly, before HTTP is bound."""
        first = self.make_service()
        first.startService()
        tcp = listening_port(first, "tcp")
        second = self.make_service(tcp_address=f"127.0.0.1:{tcp}")
        self.messages.clear()
        with self.assertRaises(StartupError) as caught:
            second.startService()
        self.assertTrue(str(caught.exception).startswith(f"listen (127.0.0.1:{tcp}) failed - "))
        self.assertIn("Address already in use", str(caught.exception))
        self.assertFalse(second.running)
        self.assertFalse([m for m in self.messages if "listening on" in m])
        await first.stopService()

    async def test_busy_http_port_unbinds_tcp(self) -> None:
        """When HTTP cannot bind, the TCP listener already bound is closed again."""
        first = self.make_service()
        first.startService()
        http = listening_port(first, "http")
        second = self.make_service(http_address=f"127.0.0.1:{http}")
        self.messages.clear()
        with self.assertRaises(StartupError) as caught:
            second.startService()
        self.assertTrue(str(caught.exception).startswith(f"listen (127.0.0.1:{http}) failed - "))
        self.assertIsNone(second.tcp_listening_port)
        [line] = [m for m in self.messages if m.startswith("TCP: listening on")]
        tcp = int(line.rpartition(":")[2])
        await self.assertFailure(ensureDeferred(connect_tcp(self.reactor, tcp)), ConnectionRefusedError)
        await first.stopService()

    def test_invalid_options(self) -> None:
        """Invalid options and addresses fail start-up with the check's message, binding nothing."""
        cases: list[tuple[dict[str, object], str]] = [
            ({"tombstone_lifetime": -1.0}, "--tombstone-lifetime must not be negative"),
            ({"tcp_address": "127.0.0.1:http"}, "invalid port 'http'"),
            ({"http_address": "127.0.0.1:70000"}, "invalid port 70000"),
        ]
        for settings, message in cases:
            service = self.make_service(**settings)
            with self.assertRaises(StartupError) as caught:
                service.startService()
            self.assertIn(message, str(caught.exception))
            self.assertFalse(service.running)
            self.assertIsNone(service.tcp_listening_port)
        self.assertFalse([m for m in self.messages if "listening on" in m])

    def test_stop_when_not_started(self) -> None:
        """Stopping a service that never started is a no-op."""
        service = self.make_service()
        self.successResultOf(service.stopService())

    async def test_start_twice(self) -> None:
        """A second C{startService} while running binds nothing more."""
        service = self.make_service()
        service.startService()
        service.startService()
        self.assertEqual(len([m for m in self.messages if m.startswith("TCP: listening")]), 1)
        await service.stopService()
