"""
nsqd's TLS upgrade, C{--tls-required}, client certificates and AUTH against an HTTP auth server,
over real sockets (spec 1.6, 2.11, 2.12), with pynsq and the raw client.

The certificates are made per test run with C{cryptography}; the auth server is a small
C{http.server} in a thread of the test process.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import NSQDProcess, run_pynsq, start_nsqd
from tests.integration._rawclient import RawClient, ServerClosed
from twisted_nsq.wire.frames import FRAME_TYPE_ERROR, FRAME_TYPE_RESPONSE

OK = (FRAME_TYPE_RESPONSE, b"OK")

#: What the auth server grants for the good secret.
GRANT = {
    "ttl": 3600,
    "identity": "u",
    "identity_url": "",
    "authorizations": [{"topic": "allowed.*", "channels": [".*"], "permissions": ["subscribe", "publish"]}],
}
GOOD_SECRET = "good-secret"
EMPTY_SECRET = "no-grants"
AUTH_REPLY = b'{"identity":"u","identity_url":"","permission_count":1}'


class Certificates:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate."""

    CLIENT_NAME: ClassVar[str] = "test-client"

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "twisted-nsq test CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )

        def leaf(
            common_name: str, usage: x509.ObjectIdentifier, names: list[x509.GeneralName]
        ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
            key = ec.generate_private_key(ec.SECP256R1())
            builder = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(ca_name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
                )
            )
            if names:
                builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
            return key, builder.sign(ca_key, hashes.SHA256())

        server_key, server_cert = leaf(
            "127.0.0.1",
            ExtendedKeyUsageOID.SERVER_AUTH,
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
        )
        client_key, client_cert = leaf(self.CLIENT_NAME, ExtendedKeyUsageOID.CLIENT_AUTH, [])

        def write_cert(name: str, cert: x509.Certificate) -> str:
            path = directory / name
            path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            return str(path)

        def write_key(name: str, key: ec.EllipticCurvePrivateKey) -> str:
            path = directory / name
            path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            return str(path)

        self.ca = write_cert("ca.pem", ca_cert)
        self.server_cert = write_cert("server.pem", server_cert)
        self.server_key = write_key("server.key", server_key)
        self.client_cert = write_cert("client.pem", client_cert)
        self.client_key = write_key("client.key", client_key)

    def server_flags(self) -> list[str]:
        return [f"--tls-cert={self.server_cert}", f"--tls-key={self.server_key}"]

    def client_context(self, *, with_client_cert: bool = False) -> ssl.SSLContext:
        """A client context that verifies nsqd's certificate against the test CA."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        if with_client_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


class AuthServer:
    """
    nsqd's external auth server: C{GET /auth?...} answers L{GRANT} for L{GOOD_SECRET}, a grant
    without authorizations for L{EMPTY_SECRET}, and 403 for anything else. Every request's
    query is recorded.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                owner.requests.append(dict(query, path=url.path))
                secret = query.get("secret")
                if url.path == "/auth" and secret == GOOD_SECRET:
                    self.reply(200, GRANT)
                elif url.path == "/auth" and secret == EMPTY_SECRET:
                    self.reply(200, dict(GRANT, authorizations=[]))
                else:
                    self.reply(403, {"message": "NOT_AUTHORIZED"})

            def reply(self, status: int, document: dict[str, Any]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                # Keep the test output clean; the requests are recorded above.
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="auth-server", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def secrets(self) -> Iterator[str]:
        return (r.get("secret", "") for r in self.requests)


PYNSQ_TLS = r"""
async def scenario():
    topic = P["topic"]
    tls = {"tls_v1": True, "tls_options": {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": P["ca"]}}
    w = Writer(**tls)
    await connected(w)
    answers = []
    for i in range(5):
        answers.append(await call(w, "pub", topic, b"tls-%d" % i))
    got = []
    r = Reader(topic, "ch", lambda m: got.append(text(m.body)) or True, max_in_flight=5, **tls)
    await subscribed(r)
    await until(lambda: len(got) >= 5, 10)
    await asyncio.sleep(0.2)
    conns = list(w.conns.values()) + list(r.conns.values())
    return {
        "answers": answers,
        "got": got,
        "tls": [isinstance(c.socket, ssl.SSLSocket) for c in conns],
        "peer_cn": [
            dict(x[0] for x in c.socket.getpeercert()["subject"])["commonName"] for c in conns
        ],
        "identify_tls": [d["tls_v1"] for d in w.identify_responses + r.identify_responses],
        "errors": w.errors + r.errors,
    }
"""

PYNSQ_AUTH = r"""
async def scenario():
    topic = P["topic"]
    w = Writer(auth_secret=P["secret"])
    await connected(w)
    answer = await call(w, "pub", topic, b"authorized")
    got = []
    r = Reader(topic, "ch", lambda m: got.append(text(m.body)) or True, auth_secret=P["secret"])
    await subscribed(r)
    await until(lambda: got, 10)
    await asyncio.sleep(0.2)
    return {
        "answer": answer,
        "got": got,
        "auth": w.auth_responses + r.auth_responses,
        "auth_required": [d["auth_required"] for d in w.identify_responses + r.identify_responses],
        "errors": w.errors + r.errors,
    }
"""


class TLSTests(SynchronousTestCase):
    """The IDENTIFY TLS upgrade and nsqd's TLS policies."""

    def setUp(self) -> None:
        self.certs = Certificates(Path(self.mktemp()))

    def connect(self, nsqd: NSQDProcess) -> RawClient:
        client = RawClient(nsqd.tcp_address, timeout=10.0)
        self.addCleanup(client.close)
        return client

    def test_pynsq_over_tls(self) -> None:
        """
        pynsq's Writer and Reader with C{tls_v1} (verifying nsqd's certificate against the test
        CA) publish and consume over TLS.
        """
        nsqd = start_nsqd(self, *self.certs.server_flags())
        result = run_pynsq(self, nsqd, PYNSQ_TLS, topic="tls", ca=self.certs.ca)
        self.assertEqual(result["answers"], ["OK"] * 5)
        self.assertEqual(result["errors"], [])
        self.assertEqual(sorted(result["got"]), [f"tls-{i}" for i in range(5)])
        self.assertEqual(result["identify_tls"], [True, True])
        self.assertEqual(result["tls"], [True, True])
        self.assertEqual(result["peer_cn"], ["127.0.0.1", "127.0.0.1"])

    def test_raw_tls_upgrade(self) -> None:
        """
        IDENTIFY with tls_v1: the JSON reply grants it in plaintext, the handshake follows, and
        C{OK} comes through TLS; the connection then publishes and consumes.
        """
        nsqd = start_nsqd(self, *self.certs.server_flags())
        client = self.connect(nsqd)
        reply = client.identify(
            {"feature_negotiation": True, "tls_v1": True}, tls_context=self.certs.client_context()
        )
        self.assertEqual(reply.type, FRAME_TYPE_RESPONSE, reply.describe())
        self.assertIs(json.loads(reply.data)["tls_v1"], True)
        assert isinstance(client.sock, ssl.SSLSocket)
        self.assertIn(client.sock.version(), ("TLSv1.2", "TLSv1.3"))
        self.assertEqual(client.pub("tls-raw", b"secret message"), OK)
        self.assertEqual(client.sub("tls-raw", "ch"), OK)
        client.rdy(1)
        message = client.read_message()
        self.assertEqual((message.body, message.attempts), (b"secret message", 1))
        client.fin(message.id)
        client.assert_silent(0.2)

    def test_unfinished_tls_handshake_is_closed(self) -> None:
        """A client granted TLS that never starts the handshake is dropped after 5 s (as Go does)."""
        nsqd = start_nsqd(self, *self.certs.server_flags())
        client = self.connect(nsqd)
        client.command(b"IDENTIFY", json.dumps({"feature_negotiation": True, "tls_v1": True}).encode())
        started = time.monotonic()
        frames = client.read_until_closed(timeout=15)
        self.assertEqual(len(frames), 1, "only the plaintext IDENTIFY reply, then the close")
        self.assertGreaterEqual(time.monotonic() - started, 4.5)
        client.close()

    def test_tls_then_compression(self) -> None:
        """TLS and then snappy (or deflate) in one IDENTIFY: compression runs inside TLS."""
        nsqd = start_nsqd(self, *self.certs.server_flags())
        for codec in ("snappy", "deflate"):
            client = self.connect(nsqd)
            reply = client.identify(
                {"feature_negotiation": True, "tls_v1": True, codec: True},
                tls_context=self.certs.client_context(),
            )
            granted = json.loads(reply.data)
            self.assertEqual((granted["tls_v1"], granted[codec]), (True, True))
            self.assertIsInstance(client.sock, ssl.SSLSocket)
            body = codec.encode() * 10000
            self.assertEqual(client.pub("tls-" + codec, body), OK)
            self.assertEqual(client.sub("tls-" + codec, "ch"), OK)
            client.rdy(1)
            self.assertEqual(client.read_message().body, body)

    def test_tls_required(self) -> None:
        """
        With C{--tls-required}, a plaintext connection may IDENTIFY, but PUB and SUB fail with
        the fatal E_INVALID ... (TLS required); after the TLS upgrade PUB works.
        """
        nsqd = start_nsqd(self, *self.certs.server_flags(), "--tls-required")
        plain = self.connect(nsqd)
        self.assertEqual(
            plain.pub("needs-tls", b"x"),
            (FRAME_TYPE_ERROR, b"E_INVALID cannot PUB in current state (TLS required)"),
        )
        self.assertEqual(plain.read_until_closed(5.0), [])

        identified = self.connect(nsqd)
        reply = identified.identify({"feature_negotiation": True})
        self.assertEqual(reply.type, FRAME_TYPE_RESPONSE, reply.describe())
        self.assertIs(json.loads(reply.data)["tls_v1"], False)
        self.assertEqual(
            identified.sub("needs-tls", "ch"),
            (FRAME_TYPE_ERROR, b"E_INVALID cannot SUB in current state (TLS required)"),
        )
        self.assertEqual(identified.read_until_closed(5.0), [])

        secure = self.connect(nsqd)
        secure.identify(
            {"feature_negotiation": True, "tls_v1": True}, tls_context=self.certs.client_context()
        )
        self.assertEqual(secure.pub("needs-tls", b"x"), OK)
        self.assertTrue(nsqd.alive())

    def test_client_certificate_required(self) -> None:
        """
        With C{--tls-client-auth-policy=require-verify} a client presenting a certificate from
        the root CA gets through; one without a certificate does not, and plaintext commands
        are refused because the policy implies C{--tls-required}.
        """
        nsqd = start_nsqd(
            self,
            *self.certs.server_flags(),
            "--tls-client-auth-policy=require-verify",
            f"--tls-root-ca-file={self.certs.ca}",
        )
        good = self.connect(nsqd)
        good.identify(
            {"feature_negotiation": True, "tls_v1": True},
            tls_context=self.certs.client_context(with_client_cert=True),
        )
        self.assertEqual(good.pub("mtls", b"x"), OK)

        anonymous = self.connect(nsqd)
        with self.assertRaises((ssl.SSLError, ServerClosed)):
            anonymous.identify(
                {"feature_negotiation": True, "tls_v1": True}, tls_context=self.certs.client_context()
            )
            anonymous.pub("mtls", b"x")

        plain = self.connect(nsqd)
        self.assertEqual(
            plain.pub("mtls", b"x"),
            (FRAME_TYPE_ERROR, b"E_INVALID cannot PUB in current state (TLS required)"),
        )
        self.assertTrue(nsqd.alive())


class AuthTests(SynchronousTestCase):
    """AUTH against an external auth server (C{--auth-http-address})."""

    def setUp(self) -> None:
        self.auth = AuthServer()
        self.addCleanup(self.auth.stop)

    def start(self, *flags: str) -> NSQDProcess:
        return start_nsqd(self, f"--auth-http-address={self.auth.address}", *flags)

    def connect(self, nsqd: NSQDProcess) -> RawClient:
        """A plaintext connection that has IDENTIFYed and seen C{auth_required}."""
        client = RawClient(nsqd.tcp_address, timeout=10.0)
        self.addCleanup(client.close)
        reply = client.identify({"feature_negotiation": True})
        self.assertEqual(reply.type, FRAME_TYPE_RESPONSE, reply.describe())
        self.assertIs(json.loads(reply.data)["auth_required"], True)
        return client

    def assertFatal(self, client: RawClient, frame: tuple[int, bytes], error: bytes) -> None:
        self.assertEqual(frame, (FRAME_TYPE_ERROR, error))
        self.assertEqual(client.read_until_closed(5.0), [])

    def test_pynsq_with_auth_secret(self) -> None:
        """
        pynsq's Writer and Reader with C{auth_secret} AUTH after IDENTIFY, then publish to and
        consume from an allowed topic; nsqd asked the auth server with the client's details.
        """
        nsqd = self.start()
        result = run_pynsq(self, nsqd, PYNSQ_AUTH, topic="allowed.pynsq", secret=GOOD_SECRET)
        self.assertEqual(result["answer"], "OK")
        self.assertEqual(result["errors"], [])
        self.assertEqual(result["got"], ["authorized"])
        self.assertEqual(result["auth_required"], [True, True])
        expected = {"identity": "u", "identity_url": "", "permission_count": 1}
        self.assertEqual(result["auth"], [expected, expected])
        self.assertEqual(len(self.auth.requests), 2)
        for request in self.auth.requests:
            self.assertEqual(
                request,
                {
                    "path": "/auth",
                    "secret": GOOD_SECRET,
                    "remote_ip": "127.0.0.1",
                    "tls": "false",
                    "common_name": "",
                },
            )

    def test_auth_required_first(self) -> None:
        """Without AUTH, PUB and SUB fail with the fatal E_AUTH_FIRST."""
        nsqd = self.start()
        client = self.connect(nsqd)
        self.assertFatal(client, client.pub("allowed.x", b"x"), b"E_AUTH_FIRST AUTH required before PUB")
        client = self.connect(nsqd)
        self.assertFatal(client, client.sub("allowed.x", "ch"), b"E_AUTH_FIRST AUTH required before SUB")
        self.assertEqual(self.auth.requests, [])

    def test_auth_reply_and_permissions(self) -> None:
        """
        AUTH with a good secret answers nsqd's JSON; publishing to a matching topic works, and
        to any other topic is the fatal E_UNAUTHORIZED.
        """
        nsqd = self.start()
        client = self.connect(nsqd)
        self.assertEqual(client.auth(GOOD_SECRET.encode()), (FRAME_TYPE_RESPONSE, AUTH_REPLY))
        self.assertEqual(client.pub("allowed.one", b"x"), OK)
        self.assertEqual(client.mpub("allowed.two", [b"a", b"b"]), OK)
        self.assertFatal(
            client, client.pub("other", b"x"), b'E_UNAUTHORIZED AUTH failed for PUB on "other" ""'
        )
        self.assertEqual(list(self.auth.secrets()), [GOOD_SECRET])

    def test_auth_subscribe_permissions(self) -> None:
        """SUB is allowed on a matching topic and is the fatal E_UNAUTHORIZED on another."""
        nsqd = self.start()
        client = self.connect(nsqd)
        self.assertEqual(client.auth(GOOD_SECRET.encode()), (FRAME_TYPE_RESPONSE, AUTH_REPLY))
        self.assertEqual(client.sub("allowed.sub", "ch"), OK)
        client = self.connect(nsqd)
        self.assertEqual(client.auth(GOOD_SECRET.encode()), (FRAME_TYPE_RESPONSE, AUTH_REPLY))
        self.assertFatal(
            client, client.sub("other", "ch"), b'E_UNAUTHORIZED AUTH failed for SUB on "other" "ch"'
        )

    def test_bad_secret(self) -> None:
        """A secret the auth server refuses (403) is the fatal E_AUTH_FAILED, with no detail."""
        nsqd = self.start()
        client = self.connect(nsqd)
        self.assertFatal(client, client.auth(b"wrong"), b"E_AUTH_FAILED AUTH failed")
        self.assertEqual(list(self.auth.secrets()), ["wrong"])

    def test_no_authorizations(self) -> None:
        """An auth server answer with no authorizations is the fatal E_UNAUTHORIZED."""
        nsqd = self.start()
        client = self.connect(nsqd)
        self.assertFatal(
            client, client.auth(EMPTY_SECRET.encode()), b"E_UNAUTHORIZED AUTH no authorizations found"
        )

    def test_auth_only_once(self) -> None:
        """A second AUTH on a connection is the fatal E_INVALID AUTH already set."""
        nsqd = self.start()
        client = self.connect(nsqd)
        self.assertEqual(client.auth(GOOD_SECRET.encode()), (FRAME_TYPE_RESPONSE, AUTH_REPLY))
        self.assertFatal(client, client.auth(GOOD_SECRET.encode()), b"E_INVALID AUTH already set")

    def test_auth_disabled(self) -> None:
        """AUTH on an nsqd without C{--auth-http-address} is the fatal E_AUTH_DISABLED."""
        nsqd = start_nsqd(self)
        client = RawClient(nsqd.tcp_address, timeout=10.0)
        self.addCleanup(client.close)
        self.assertFatal(client, client.auth(b"anything"), b"E_AUTH_DISABLED AUTH disabled")

    def test_auth_over_tls_with_client_certificate(self) -> None:
        """
        Over TLS with a verified client certificate, nsqd tells the auth server C{tls=true} and
        the certificate's common name.
        """
        certs = Certificates(Path(self.mktemp()))
        nsqd = self.start(
            *certs.server_flags(),
            "--tls-client-auth-policy=require-verify",
            f"--tls-root-ca-file={certs.ca}",
        )
        client = RawClient(nsqd.tcp_address, timeout=10.0)
        self.addCleanup(client.close)
        client.identify(
            {"feature_negotiation": True, "tls_v1": True},
            tls_context=certs.client_context(with_client_cert=True),
        )
        self.assertEqual(client.auth(GOOD_SECRET.encode()), (FRAME_TYPE_RESPONSE, AUTH_REPLY))
        self.assertEqual(client.pub("allowed.tls", b"x"), OK)
        self.assertEqual(
            self.auth.requests,
            [
                {
                    "path": "/auth",
                    "secret": GOOD_SECRET,
                    "remote_ip": "127.0.0.1",
                    "tls": "true",
                    "common_name": Certificates.CLIENT_NAME,
                }
            ],
        )
