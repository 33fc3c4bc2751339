"""
Tests for L{twisted_nsq.nsqd.service}: listen addresses, the data-path lock, and an
L{NSQDService} starting and draining with real listeners on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.application.service import Service
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests._daemons import capture_messages, connect_tcp, listening_port, trial_reactor
from twisted_nsq.nsqd.options import NSQDOptions
from twisted_nsq.nsqd.service import DataPathLock, ListenAddress, NSQDService, StartupError


class ListenAddressTests(SynchronousTestCase):
    """Go listen addresses become endpoint strings."""

    def test_tcp(self) -> None:
        address = ListenAddress.parse("0.0.0.0:4150")
        self.assertEqual(address, ListenAddress(host="0.0.0.0", port=4150))
        self.assertFalse(address.is_unix)
        self.assertEqual(address.endpoint_description(), "tcp:port=4150:interface=0.0.0.0")
        self.assertEqual(
            ListenAddress.parse("127.0.0.1:0").endpoint_description(), "tcp:port=0:interface=127.0.0.1"
        )

    def test_empty_host(self) -> None:
        """C{:port} listens on every IPv4 interface; an empty port is port 0."""
        self.assertEqual(
            ListenAddress.parse(":4151").endpoint_description(), "tcp:port=4151:interface=0.0.0.0"
        )
        self.assertEqual(ListenAddress.parse("127.0.0.1:"), ListenAddress(host="127.0.0.1", port=0))

    def test_ipv6(self) -> None:
        address = ListenAddress.parse("[::1]:4150")
        self.assertEqual(address, ListenAddress(host="::1", port=4150))
        description = address.endpoint_description()
        self.assertEqual(description, "tcp6:port=4150:interface=\\:\\:1")
        endpoint = serverFromString(MemoryReactor(), description)
        self.assertEqual(endpoint._interface, "::1")

    def test_unix(self) -> None:
        """Whatever Go's C{SplitHostPort} refuses is a unix socket path, colons and all."""
        for text in ("/tmp/nsqd.sock", "nsqd.sock", "localhost", "::1:4150", "/tmp/a=b.sock"):
            address = ListenAddress.parse(text)
            self.assertTrue(address.is_unix, text)
            self.assertEqual(address.path, text)
            endpoint = serverFromString(MemoryReactor(), address.endpoint_description())
            self.assertEqual(endpoint._address, text)

    def test_bad_port(self) -> None:
        self.assertRaises(ValueError, ListenAddress.parse, "127.0.0.1:http")
        self.assertRaises(ValueError, ListenAddress.parse, "127.0.0.1:65536")


class DataPathLockTests(SynchronousTestCase):
    """The exclusive lock on the data directory."""

    def setUp(self) -> None:
        self.path: str = self.mktemp()
        os.makedirs(self.path)

    def test_exclusive(self) -> None:
        first, second = DataPathLock(self.path), DataPathLock(self.path)
        first.acquire()
        self.addCleanup(first.release)
        self.assertTrue(first.locked)
        with self.assertRaises(StartupError) as caught:
            second.acquire()
        self.assertEqual(
            str(caught.exception), f"--data-path={self.path} in use (possibly by another instance of nsqd)"
        )
        self.assertFalse(second.locked)
        first.release()
        second.acquire()
        second.release()
        second.release()

    def test_missing_directory(self) -> None:
        with self.assertRaises(StartupError) as caught:
            DataPathLock(os.path.join(self.path, "missing")).acquire()
        self.assertTrue(str(caught.exception).startswith("failed to lock data-path: "))


class _Recorder(Service):
    """A child service that notes what its parent had done when it started and stopped."""

    def __init__(self, parent: NSQDService) -> None:
        self.nsqd_parent = parent
        self.seen: list[str] = []

    def startService(self) -> None:
        super().startService()
        listening = self.nsqd_parent.tcp_listening_port is not None
        self.seen.append(f"start listening={listening}")

    def stopService(self) -> None:
        super().stopService()
        nsqd = self.nsqd_parent.nsqd
        self.seen.append(f"stop exiting={nsqd is not None and nsqd.exiting}")


def _self_signed(directory: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


class NSQDServiceTests(TestCase):
    """Real listeners on 127.0.0.1 with the real reactor."""

    def setUp(self) -> None:
        self.reactor = trial_reactor()
        self.data_path = self.new_data_path()
        self.messages = capture_messages(self)

    def new_data_path(self) -> str:
        path: str = self.mktemp()
        os.makedirs(path)
        return path

    def make_service(self, **settings: object) -> NSQDService:
        values: dict[str, object] = {
            "tcp_address": "127.0.0.1:0",
            "http_address": "127.0.0.1:0",
            "data_path": self.data_path,
            "node_id": 1,
            "broadcast_address": "testhost",
        }
        values.update(settings)
        service = NSQDService(NSQDOptions(**values), self.reactor)  # type: ignore[arg-type]
        self.addCleanup(service.stopService)
        return service

    async def test_start_and_stop(self) -> None:
        """Start binds TCP then HTTP and logs both as gnsq expects; stop drains and unlocks."""
        service = self.make_service()
        service.startService()
        self.assertTrue(service.running)
        assert service.nsqd is not None
        tcp, http = listening_port(service, "tcp"), listening_port(service, "http")
        self.assertEqual((service.nsqd.tcp_port, service.nsqd.http_port), (tcp, http))
        self.assertIsNone(service.https_listening_port)
        listening = [m for m in self.messages if "listening on" in m]
        self.assertEqual(
            listening, [f"TCP: listening on 127.0.0.1:{tcp}", f"HTTP: listening on 127.0.0.1:{http}"]
        )
        self.assertIn("ID: 1", self.messages)

        client = await connect_tcp(self.reactor, tcp)
        client.transport.write(b"  V2")  # type: ignore[union-attr]
        await service.stopService()
        assert service.factory is not None
        self.assertEqual(service.factory.connections, set(), "the drain closes clients before it ends")
        await client.lost
        self.assertFalse(service.running)
        self.assertTrue(service.nsqd.exiting)
        closing = [m for m in self.messages if "closing" in m]
        self.assertEqual(closing[:2], [f"TCP: closing 127.0.0.1:{tcp}", f"HTTP: closing 127.0.0.1:{http}"])
        await self.assertFailure(ensureDeferred(connect_tcp(self.reactor, tcp)), ConnectionRefusedError)
        lock = DataPathLock(self.data_path)
        lock.acquire()
        lock.release()

    async def test_no_http(self) -> None:
        """An empty HTTP address means no HTTP listener."""
        service = self.make_service(http_address="")
        service.startService()
        self.assertIsNone(service.http_listening_port)
        self.assertFalse([m for m in self.messages if m.startswith("HTTP")])
        await service.stopService()

    async def test_unix_socket(self) -> None:
        """A path listens on a unix socket; nsqd records port -1."""
        directory = tempfile.mkdtemp(prefix="nsqd")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "nsqd.sock")
        service = self.make_service(tcp_address=path)
        service.startService()
        assert service.nsqd is not None
        self.assertEqual(service.nsqd.tcp_port, -1)
        self.assertIn(f"TCP: listening on {path}", self.messages)
        await service.stopService()
        self.assertFalse(os.path.exists(path), "the socket file is removed, as Go removes it")

    async def test_https(self) -> None:
        """With a certificate, HTTPS listens after HTTP."""
        cert, key = _self_signed(self.data_path)
        service = self.make_service(https_address="127.0.0.1:0", tls_cert=cert, tls_key=key)
        service.startService()
        assert service.nsqd is not None
        https = listening_port(service, "https")
        self.assertEqual(service.nsqd.https_port, https)
        listening = [m.split(":")[0] for m in self.messages if "listening on" in m]
        self.assertEqual(listening, ["TCP", "HTTP", "HTTPS"])
        self.assertIn(f"HTTPS: listening on 127.0.0.1:{https}", self.messages)
        await service.stopService()

    async def test_data_path_in_use(self) -> None:
        """A second nsqd on the same data path refuses to start, without binding anything."""
        first = self.make_service()
        first.startService()
        second = self.make_service()
        with self.assertRaises(StartupError) as caught:
            second.startService()
        self.assertIn("in use (possibly by another instance of nsqd)", str(caught.exception))
        self.assertFalse(second.running)
        self.assertIsNone(second.tcp_listening_port)
        self.assertEqual(len([m for m in self.messages if m.startswith("TCP: listening")]), 1)
        await second.stopService()
        await first.stopService()

    async def test_busy_port(self) -> None:
        """A busy TCP port fails start-up loudly and leaves the data path unlocked."""
        first = self.make_service()
        first.startService()
        tcp = listening_port(first, "tcp")
        other = self.new_data_path()
        second = self.make_service(tcp_address=f"127.0.0.1:{tcp}", data_path=other)
        with self.assertRaises(StartupError) as caught:
            second.startService()
        self.assertTrue(str(caught.exception).startswith(f"listen (127.0.0.1:{tcp}) failed - "))
        self.assertFalse(second.running)
        lock = DataPathLock(other)
        lock.acquire()
        lock.release()
        await first.stopService()

    async def test_busy_http_port_unbinds_tcp(self) -> None:
        """When HTTP cannot bind, the TCP listener already bound is closed again."""
        first = self.make_service()
        first.startService()
        http = listening_port(first, "http")
        second = self.make_service(http_address=f"127.0.0.1:{http}", data_path=self.new_data_path())
        self.messages.clear()
        with self.assertRaises(StartupError):
            second.startService()
        self.assertIsNone(second.tcp_listening_port)
        [line] = [m for m in self.messages if m.startswith("TCP: listening on")]
        tcp = int(line.rpartition(":")[2])
        await self.assertFailure(ensureDeferred(connect_tcp(self.reactor, tcp)), ConnectionRefusedError)
        await first.stopService()

    async def test_invalid_options(self) -> None:
        """Invalid options fail start-up with the check's message, and unlock the data path."""
        service = self.make_service(node_id=5000)
        with self.assertRaises(StartupError) as caught:
            service.startService()
        self.assertIn("--node-id must be [0,1024)", str(caught.exception))
        self.assertFalse(service.running)
        lock = DataPathLock(self.data_path)
        lock.acquire()
        lock.release()

    async def test_children(self) -> None:
        """Child services start once nsqd serves, and stop after it flushed, before the unlock."""
        service = self.make_service()
        child = _Recorder(service)
        child.setServiceParent(service)
        service.startService()
        await service.stopService()
        self.assertEqual(child.seen, ["start listening=True", "stop exiting=True"])

    async def test_auth_client(self) -> None:
        """C{--auth-http-address} gives the TCP protocol an auth client; without it there is none."""
        cert, _ = _self_signed(self.data_path)
        service = self.make_service(
            auth_http_addresses=["127.0.0.1:4181", "https://auth.example/auth"], tls_root_ca_file=cert
        )
        service.startService()
        assert service.factory is not None
        assert service.factory.auth_client is not None
        self.assertEqual(
            service.factory.auth_client.addresses, ("127.0.0.1:4181", "https://auth.example/auth")
        )
        await service.stopService()
        plain = self.make_service(data_path=self.new_data_path())
        plain.startService()
        assert plain.factory is not None
        self.assertIsNone(plain.factory.auth_client)
        await plain.stopService()

    def test_auth_bad_root_ca(self) -> None:
        """An unusable root CA file for the auth client fails start-up."""
        empty = os.path.join(self.data_path, "empty.pem")
        with open(empty, "wb"):
            pass
        for path in (empty, os.path.join(self.data_path, "missing.pem")):
            service = self.make_service(auth_http_addresses=["127.0.0.1:4181"], tls_root_ca_file=path)
            with self.assertRaises(StartupError) as caught:
                service.startService()
            self.assertIn("failed to build the auth client", str(caught.exception))
            self.assertIsNone(service.tcp_listening_port)

    def test_stop_when_not_started(self) -> None:
        """Stopping a service that never started is a no-op."""
        service = self.make_service()
        self.successResultOf(service.stopService())
