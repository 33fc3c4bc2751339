"""
Tests for L{twisted_nsq.nsqd.tls}, with certificates made on the fly and handshakes run over
memory BIOs (real sockets are in tests/integration/test_tls_handshake.py).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from types import SimpleNamespace

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLContextFactory, IOpenSSLServerConnectionCreator
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twisted_nsq.nsqd.tls import (
    EMPTY_TLS_INFO,
    ServerTLSOptions,
    TLSConfigError,
    TLSInfo,
    cipher_suite_name,
    client_tls_info,
    openssl_min_version,
    server_tls_options,
)

_PEM = serialization.Encoding.PEM


@attrs.frozen
class KeyPair:
    """
    Paths of a PEM certificate and its unencrypted PEM key.
    """

    cert: str
    key: str


@attrs.frozen
class PKI:
    """
    A CA with a server certificate and a client certificate it signed, plus a self-signed
    client certificate it did not.
    """

    ca_cert: str
    server: KeyPair
    server_chain: str
    client: KeyPair
    self_signed_client: KeyPair
    encrypted_key: str
    ca_subject: x509.Name


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None = None,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
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
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())


def make_pki(directory: str) -> PKI:
    """
    Write a small PKI into C{directory} (created if missing): a CA, a server certificate for
    localhost, a client certificate with CN "nsq-client", a self-signed client certificate
    with CN "rogue client", and the server key encrypted with the passphrase "secret".
    """
    os.makedirs(directory, exist_ok=True)

    def path(name: str) -> str:
        return os.path.join(directory, name)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("twisted-nsq test CA", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("localhost", server_key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("nsq-client", client_key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _certificate("rogue client", rogue_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    encrypted = server_key.private_bytes(
        _PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"secret")
    )
    return PKI(
        ca_cert=_write(path("ca.pem"), ca.public_bytes(_PEM)),
        server=KeyPair(
            cert=_write(path("server.pem"), server.public_bytes(_PEM)),
            key=_write(path("server.key"), _key_pem(server_key)),
        ),
        server_chain=_write(path("server-chain.pem"), server.public_bytes(_PEM) + ca.public_bytes(_PEM)),
        client=KeyPair(
            cert=_write(path("client.pem"), client.public_bytes(_PEM)),
            key=_write(path("client.key"), _key_pem(client_key)),
        ),
        self_signed_client=KeyPair(
            cert=_write(path("rogue.pem"), rogue.public_bytes(_PEM)),
            key=_write(path("rogue.key"), _key_pem(rogue_key)),
        ),
        encrypted_key=_write(path("server-encrypted.key"), encrypted),
        ca_subject=ca.subject,
    )


def tls_settings(
    pki: PKI | None,
    *,
    policy: str = "",
    min_version: str | int = "tls1.2",
    root_ca: bool = True,
    cert: str | None = None,
    key: str | None = None,
) -> SimpleNamespace:
    """
    A stand-in for the TLS attributes of NSQDOptions.
    """
    return SimpleNamespace(
        tls_cert=cert if cert is not None else (pki.server.cert if pki else ""),
        tls_key=key if key is not None else (pki.server.key if pki else ""),
        tls_root_ca_file=pki.ca_cert if (pki and root_ca) else "",
        tls_client_auth_policy=policy,
        tls_min_version=min_version,
    )


def client_context(
    pki: PKI, client: KeyPair | None = None, max_version: int = SSL.TLS1_3_VERSION
) -> SSL.Context:
    """
    A client context that verifies the server against the test CA and optionally presents
    C{client}.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_max_proto_version(max_version)
    if max_version < SSL.TLS1_2_VERSION:
        context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    context.load_verify_locations(pki.ca_cert)
    context.set_verify(SSL.VERIFY_PEER)
    if client is not None:
        context.use_certificate_file(client.cert)
        context.use_privatekey_file(client.key)
    return context


def memory_handshake(server: SSL.Connection, client: SSL.Connection) -> None:
    """
    Run a handshake between two connections over their memory BIOs.

    @raise SSL.Error: when either side refuses.
    """
    server.set_accept_state()
    client.set_connect_state()
    for _ in range(10):
        for this, other in ((client, server), (server, client)):
            try:
                this.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                other.bio_write(this.bio_read(1 << 16))
            except SSL.WantReadError:
                pass
    # Under TLS 1.3 the server judges the client certificate after the client considers the
    # handshake done; reading application data surfaces that verdict on both sides.
    for this in (server, client):
        try:
            this.recv(1)
        except SSL.WantReadError:
            pass


class _Transport:
    """
    The part of a TLS transport that L{client_tls_info} uses.
    """

    def __init__(self, handle: object) -> None:
        self._handle = handle

    def getHandle(self) -> object:
        return self._handle


class OptionTests(SynchronousTestCase):
    """
    L{server_tls_options} validates nsqd's TLS options and builds a server context.
    """

    def setUp(self) -> None:
        self.pki = make_pki(self.mktemp())

    def test_off_without_cert_or_key(self) -> None:
        """
        No certificate or no key means TLS is off.
        """
        self.assertIsNone(server_tls_options(tls_settings(None)))
        self.assertIsNone(server_tls_options(tls_settings(self.pki, cert="")))
        self.assertIsNone(server_tls_options(tls_settings(self.pki, key="")))

    def test_connection_creator(self) -> None:
        """
        The result is a server connection creator for C{startTLS}, making a fresh connection each
        time.
        """
        options = server_tls_options(tls_settings(self.pki))
        assert options is not None
        self.assertTrue(verifyObject(IOpenSSLServerConnectionCreator, options))
        self.assertTrue(verifyObject(IOpenSSLContextFactory, options))
        self.assertIs(options.getContext(), options.context)
        first = options.serverConnectionForTLS(object())
        self.assertIsInstance(first, SSL.Connection)
        self.assertIsNot(first, options.serverConnectionForTLS(object()))

    def test_chain(self) -> None:
        """
        The certificate file may hold the chain after the leaf.
        """
        options = server_tls_options(tls_settings(self.pki, cert=self.pki.server_chain))
        assert options is not None
        memory_handshake(
            options.serverConnectionForTLS(object()), SSL.Connection(client_context(self.pki), None)
        )

    def test_min_versions(self) -> None:
        """
        tls1.0..tls1.3, in any case, Go's numbers, and the empty default map to OpenSSL's
        constants.
        """
        self.assertEqual(openssl_min_version("tls1.0"), SSL.TLS1_VERSION)
        self.assertEqual(openssl_min_version("TLS1.1"), SSL.TLS1_1_VERSION)
        self.assertEqual(openssl_min_version("tls1.2"), SSL.TLS1_2_VERSION)
        self.assertEqual(openssl_min_version("tls1.3"), SSL.TLS1_3_VERSION)
        self.assertEqual(openssl_min_version(769), SSL.TLS1_VERSION)
        self.assertEqual(openssl_min_version(772), SSL.TLS1_3_VERSION)
        self.assertEqual(openssl_min_version(""), SSL.TLS1_VERSION)
        self.assertEqual(openssl_min_version(0), SSL.TLS1_VERSION)
        for bad in ("ssl3.0", "tls1.4", "1.2", 768, 773):
            with self.assertRaises(TLSConfigError):
                openssl_min_version(bad)

    def test_every_min_version_builds(self) -> None:
        """
        Every valid minimum version gives a usable context, TLS 1.0 and 1.1 included.
        """
        for version in ("tls1.0", "tls1.1", "tls1.2", "tls1.3", 769):
            self.assertIsInstance(
                server_tls_options(tls_settings(self.pki, min_version=version)), ServerTLSOptions
            )

    def test_invalid_min_version(self) -> None:
        """
        An unknown minimum version is a configuration error.
        """
        with self.assertRaises(TLSConfigError):
            server_tls_options(tls_settings(self.pki, min_version="tls9"))

    def test_invalid_policy(self) -> None:
        """
        An unknown client auth policy is a configuration error, a L{ValueError}.
        """
        with self.assertRaises(TLSConfigError):
            server_tls_options(tls_settings(self.pki, policy="verify"))
        self.assertTrue(issubclass(TLSConfigError, ValueError))

    def test_policy_verify_modes(self) -> None:
        """
        "" asks for no client certificate; both other policies require one.
        """
        required = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        for policy, mode in (("", SSL.VERIFY_NONE), ("require", required), ("require-verify", required)):
            options = server_tls_options(tls_settings(self.pki, policy=policy))
            assert options is not None
            self.assertEqual(options.context.get_verify_mode(), mode)

    def test_require_verify_without_root_ca(self) -> None:
        """
        Without a root CA file "require-verify" falls back to the system CAs, as Go does.
        """
        options = server_tls_options(tls_settings(self.pki, policy="require-verify", root_ca=False))
        assert options is not None
        self.assertEqual(options.context.get_verify_mode(), SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)

    def test_client_ca_names(self) -> None:
        """
        When client certificates are requested, the root CA is named to the client.
        """
        for policy in ("require", "require-verify"):
            options = server_tls_options(tls_settings(self.pki, policy=policy))
            assert options is not None
            names = options.serverConnectionForTLS(object()).get_client_ca_list()
            self.assertEqual([n.CN for n in names], ["twisted-nsq test CA"])
        options = server_tls_options(tls_settings(self.pki))
        assert options is not None
        self.assertEqual(options.serverConnectionForTLS(object()).get_client_ca_list(), [])

    def test_missing_files(self) -> None:
        """
        Unreadable certificate, key or CA files fail at start-up.
        """
        missing = os.path.join(self.mktemp(), "nope.pem")
        for settings in (
            tls_settings(self.pki, cert=missing),
            tls_settings(self.pki, key=missing),
            SimpleNamespace(**{**vars(tls_settings(self.pki)), "tls_root_ca_file": missing}),
        ):
            with self.assertRaises(TLSConfigError):
                server_tls_options(settings)

    def test_garbage_files(self) -> None:
        """
        Files that are not PEM fail at start-up.
        """
        garbage = _write(self.mktemp(), b"not a certificate\n")
        with self.assertRaises(TLSConfigError):
            server_tls_options(tls_settings(self.pki, cert=garbage))
        with self.assertRaises(TLSConfigError):
            server_tls_options(tls_settings(self.pki, key=garbage))

    def test_key_does_not_match(self) -> None:
        """
        A key that is not the certificate's fails at start-up.
        """
        with self.assertRaises(TLSConfigError):
            server_tls_options(tls_settings(self.pki, key=self.pki.client.key))

    def test_encrypted_key(self) -> None:
        """
        An encrypted key fails at start-up instead of prompting for a passphrase.
        """
        with self.assertRaises(TLSConfigError):
            server_tls_options(tls_settings(self.pki, key=self.pki.encrypted_key))


class MemoryHandshakeTests(SynchronousTestCase):
    """
    Client authentication policies and L{client_tls_info}, over memory BIOs.
    """

    def setUp(self) -> None:
        self.pki = make_pki(self.mktemp())

    def _server(self, policy: str = "", min_version: str = "tls1.2") -> SSL.Connection:
        options = server_tls_options(tls_settings(self.pki, policy=policy, min_version=min_version))
        assert options is not None
        return options.serverConnectionForTLS(object())

    def _client(self, client: KeyPair | None = None, max_version: int = SSL.TLS1_3_VERSION) -> SSL.Connection:
        return SSL.Connection(client_context(self.pki, client, max_version), None)

    def _assert_refused(self, server: SSL.Connection, client: SSL.Connection, reason: str) -> None:
        with self.assertRaises(SSL.Error) as caught:
            memory_handshake(server, client)
        self.assertIn(reason, str(caught.exception))

    def test_tls13_info(self) -> None:
        """
        After a TLS 1.3 handshake without a client certificate the info names the version and
        suite the Go way, with no common name.
        """
        server = self._server()
        self.assertEqual(client_tls_info(_Transport(server)), EMPTY_TLS_INFO)
        memory_handshake(server, self._client())
        self.assertEqual(
            client_tls_info(_Transport(server)),
            TLSInfo(
                version="TLS1.3",
                cipher_suite="TLS_AES_256_GCM_SHA384",
                negotiated_protocol="",
                negotiated_protocol_is_mutual=True,
                common_name="",
            ),
        )

    def test_tls12_info(self) -> None:
        """
        A TLS 1.2 handshake reports an ECDHE suite by its IANA name and the client's CN.
        """
        server = self._server(policy="require-verify")
        memory_handshake(server, self._client(self.pki.client, SSL.TLS1_2_VERSION))
        info = client_tls_info(_Transport(server))
        self.assertEqual(info.version, "TLS1.2")
        self.assertEqual(info.cipher_suite, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")
        self.assertEqual(info.common_name, "nsq-client")

    def test_legacy_versions(self) -> None:
        """
        With tls1.0 as the minimum, TLS 1.0 and 1.1 clients are served.
        """
        for max_version, name in ((SSL.TLS1_VERSION, "TLS1.0"), (SSL.TLS1_1_VERSION, "TLS1.1")):
            server = self._server(min_version="tls1.0")
            memory_handshake(server, self._client(max_version=max_version))
            info = client_tls_info(_Transport(server))
            self.assertEqual(info.version, name)
            self.assertEqual(info.cipher_suite, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA")

    def test_min_version_refuses_older(self) -> None:
        """
        A client whose best version is below the minimum is refused.
        """
        self._assert_refused(
            self._server(min_version="tls1.3"),
            self._client(max_version=SSL.TLS1_2_VERSION),
            "unsupported protocol",
        )

    def test_no_policy_ignores_client_certificate(self) -> None:
        """
        Without a policy no certificate is requested, so none is seen even if the client has one.
        """
        server = self._server()
        memory_handshake(server, self._client(self.pki.client))
        self.assertEqual(client_tls_info(_Transport(server)).common_name, "")

    def test_require_accepts_any_certificate(self) -> None:
        """
        "require" accepts a certificate no trusted CA signed.
        """
        server = self._server(policy="require")
        memory_handshake(server, self._client(self.pki.self_signed_client))
        self.assertEqual(client_tls_info(_Transport(server)).common_name, "rogue client")

    def test_require_refuses_no_certificate(self) -> None:
        """
        "require" refuses a client without a certificate, under TLS 1.2 and 1.3.
        """
        for max_version in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            self._assert_refused(
                self._server(policy="require"),
                self._client(max_version=max_version),
                "peer did not return a certificate",
            )

    def test_require_verify(self) -> None:
        """
        "require-verify" accepts a certificate the root CA signed and refuses a self-signed one
        and none at all.
        """
        server = self._server(policy="require-verify")
        memory_handshake(server, self._client(self.pki.client))
        self.assertEqual(client_tls_info(_Transport(server)).common_name, "nsq-client")
        self._assert_refused(
            self._server(policy="require-verify"),
            self._client(self.pki.self_signed_client),
            "certificate verify failed",
        )
        self._assert_refused(
            self._server(policy="require-verify"), self._client(), "peer did not return a certificate"
        )


class ClientTLSInfoTests(SynchronousTestCase):
    """
    L{client_tls_info} on transports without TLS, and suite naming.
    """

    def test_no_get_handle(self) -> None:
        """
        An object without C{getHandle} has no TLS.
        """
        self.assertEqual(client_tls_info(object()), EMPTY_TLS_INFO)

    def test_plain_socket(self) -> None:
        """
        A plain TCP transport's handle is a socket, not a TLS connection.
        """
        sock = socket.socket()
        self.addCleanup(sock.close)
        self.assertEqual(client_tls_info(_Transport(sock)), EMPTY_TLS_INFO)

    def test_empty_info(self) -> None:
        """
        The empty info has empty strings and C{False}.
        """
        self.assertEqual(attrs.astuple(EMPTY_TLS_INFO), ("", "", "", False, ""))

    def test_cipher_suite_names(self) -> None:
        """
        OpenSSL names map to IANA names; unknown ones to "Unknown".
        """
        self.assertEqual(
            cipher_suite_name("ECDHE-RSA-AES128-GCM-SHA256"), "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        )
        self.assertEqual(cipher_suite_name("TLS_AES_128_GCM_SHA256"), "TLS_AES_128_GCM_SHA256")
        self.assertEqual(cipher_suite_name("AES128-SHA"), "TLS_RSA_WITH_AES_128_CBC_SHA")
        self.assertEqual(cipher_suite_name("CAMELLIA128-SHA"), "Unknown")
