"""
Real-socket TLS upgrades with L{twisted_nsq.nsqd.tls}: plaintext first, then C{startTLS} on
the server, as nsqd does after IDENTIFY.
"""

from __future__ import annotations

from typing import cast

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import (
    IHandshakeListener,
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IReactorTCP,
    IReactorTime,
    ITLSTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.nsqd.test_tls import PKI, KeyPair, client_context, make_pki, tls_settings
from twisted_nsq.nsqd.tls import (
    EMPTY_TLS_INFO,
    ServerTLSOptions,
    TLSInfo,
    client_tls_info,
    server_tls_options,
)

TIMEOUT = 10.0


def _reactor() -> tuple[IReactorTCP, IReactorTime]:
    """
    The reactor trial runs, which these tests hand explicitly to everything they build.
    """
    from twisted.internet import reactor

    return cast(IReactorTCP, reactor), cast(IReactorTime, reactor)


@implementer(IOpenSSLClientConnectionCreator)
class _ClientTLS:
    def __init__(self, context: SSL.Context) -> None:
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self._context, None)


def _tls_transport(protocol: Protocol) -> ITLSTransport:
    """
    The TCP transport of a connected protocol, which can start TLS.
    """
    assert protocol.transport is not None
    return cast(ITLSTransport, protocol.transport)


@implementer(IHandshakeListener)
class _UpgradingServer(Protocol):
    """
    Reads one plaintext line, answers "OK" in plaintext, then upgrades to TLS; once the handshake
    is done it records L{client_tls_info} and greets the client over TLS.
    """

    def __init__(self, options: ServerTLSOptions) -> None:
        self.options = options
        self.buffer = b""
        self.before_upgrade: TLSInfo | None = None
        self.before_handshake: TLSInfo | None = None
        self.handshake: Deferred[TLSInfo] = Deferred()
        self.reason: Failure | None = None
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if self.before_handshake is not None:
            return
        self.buffer += data
        if b"\n" in self.buffer:
            self.before_upgrade = client_tls_info(self.transport)
            transport = _tls_transport(self)
            transport.write(b"OK\n")
            transport.startTLS(self.options)
            self.before_handshake = client_tls_info(self.transport)

    def handshakeCompleted(self) -> None:
        self.handshake.callback(client_tls_info(self.transport))
        _tls_transport(self).write(b"secure\n")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        self.lost.callback(None)


class _UpgradingClient(Protocol):
    """
    Sends a plaintext line, upgrades after the plaintext "OK", waits for the greeting over TLS
    and then closes.
    """

    def __init__(self, creator: _ClientTLS) -> None:
        self.creator = creator
        self.buffer = b""
        self.upgraded = False
        self.greeted = False
        self.reason: Failure | None = None
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        _tls_transport(self).write(b"IDENTIFY\n")

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded and self.buffer == b"OK\n":
            self.upgraded = True
            self.buffer = b""
            _tls_transport(self).startTLS(self.creator)
        elif self.upgraded and self.buffer == b"secure\n":
            self.greeted = True
            _tls_transport(self).loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        self.lost.callback(None)


class TLSUpgradeTests(TestCase):
    """
    Handshakes over loopback TCP for each client authentication policy.
    """

    def setUp(self) -> None:
        self.pki: PKI = make_pki(self.mktemp())
        self.tcp, self.clock = _reactor()

    async def _upgrade(
        self,
        policy: str = "",
        client: KeyPair | None = None,
        max_version: int = SSL.TLS1_3_VERSION,
        min_version: str = "tls1.2",
    ) -> tuple[_UpgradingServer, _UpgradingClient]:
        """
        Listen on 127.0.0.1:0, connect one client, and wait until both ends have closed.
        """
        options = server_tls_options(tls_settings(self.pki, policy=policy, min_version=min_version))
        assert options is not None
        servers: list[_UpgradingServer] = []

        def build() -> _UpgradingServer:
            servers.append(_UpgradingServer(options))
            return servers[-1]

        port: IListeningPort = await TCP4ServerEndpoint(self.tcp, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(build)
        )
        self.addCleanup(port.stopListening)
        creator = _ClientTLS(client_context(self.pki, client, max_version))
        connected = TCP4ClientEndpoint(
            self.tcp, "127.0.0.1", cast(IPv4Address, port.getHost()).port, timeout=5
        ).connect(Factory.forProtocol(lambda: _UpgradingClient(creator)))
        connected.addTimeout(TIMEOUT, self.clock)
        client_protocol = cast(_UpgradingClient, await connected)
        closed = DeferredList([client_protocol.lost, *(s.lost for s in servers)], fireOnOneErrback=True)
        closed.addTimeout(TIMEOUT, self.clock)
        await closed
        self.assertEqual(len(servers), 1)
        return servers[0], client_protocol

    def _assert_accepted(self, server: _UpgradingServer, client: _UpgradingClient) -> TLSInfo:
        self.assertTrue(client.greeted)
        self.assertEqual(server.before_upgrade, EMPTY_TLS_INFO)
        self.assertEqual(server.before_handshake, EMPTY_TLS_INFO)
        return self.successResultOf(server.handshake)

    def _assert_refused(self, server: _UpgradingServer, client: _UpgradingClient) -> None:
        self.assertFalse(client.greeted)
        self.assertNoResult(server.handshake)
        assert server.reason is not None
        self.assertIsInstance(server.reason.value, SSL.Error)

    async def test_no_client_certificate(self) -> None:
        """
        Without a policy a client with no certificate upgrades; the server sees TLS 1.3.
        """
        server, client = await self._upgrade()
        info = self._assert_accepted(server, client)
        self.assertEqual(info.version, "TLS1.3")
        self.assertIn(
            info.cipher_suite,
            ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"),
        )
        self.assertEqual(info.common_name, "")
        self.assertTrue(info.negotiated_protocol_is_mutual)
        self.assertEqual(info.negotiated_protocol, "")

    async def test_tls12(self) -> None:
        """
        A TLS 1.2 client is reported as TLS1.2 with an ECDHE suite's IANA name.
        """
        server, client = await self._upgrade(max_version=SSL.TLS1_2_VERSION)
        info = self._assert_accepted(server, client)
        self.assertEqual(info.version, "TLS1.2")
        self.assertTrue(info.cipher_suite.startswith("TLS_ECDHE_ECDSA_WITH_"), info.cipher_suite)

    async def test_tls10_when_allowed(self) -> None:
        """
        With tls1.0 as the minimum a TLS 1.0 client upgrades.
        """
        server, client = await self._upgrade(max_version=SSL.TLS1_VERSION, min_version="tls1.0")
        self.assertEqual(self._assert_accepted(server, client).version, "TLS1.0")

    async def test_below_min_version_refused(self) -> None:
        """
        A TLS 1.2 client is refused when the minimum is tls1.3.
        """
        server, client = await self._upgrade(max_version=SSL.TLS1_2_VERSION, min_version="tls1.3")
        self._assert_refused(server, client)

    async def test_require_self_signed_accepted(self) -> None:
        """
        "require" accepts a self-signed client certificate and reports its CN.
        """
        server, client = await self._upgrade(policy="require", client=self.pki.self_signed_client)
        self.assertEqual(self._assert_accepted(server, client).common_name, "rogue client")

    async def test_require_without_certificate_refused(self) -> None:
        """
        "require" refuses a client without a certificate.
        """
        server, client = await self._upgrade(policy="require")
        self._assert_refused(server, client)

    async def test_require_verify_signed_accepted(self) -> None:
        """
        "require-verify" accepts a CA-signed certificate and reports its CN, over TLS 1.3 and 1.2.
        """
        for max_version, version in ((SSL.TLS1_3_VERSION, "TLS1.3"), (SSL.TLS1_2_VERSION, "TLS1.2")):
            server, client = await self._upgrade(
                policy="require-verify", client=self.pki.client, max_version=max_version
            )
            info = self._assert_accepted(server, client)
            self.assertEqual((info.version, info.common_name), (version, "nsq-client"))

    async def test_require_verify_self_signed_refused(self) -> None:
        """
        "require-verify" refuses a self-signed client certificate.
        """
        server, client = await self._upgrade(policy="require-verify", client=self.pki.self_signed_client)
        self._assert_refused(server, client)
