"""
nsqd's TLS: the server context for the IDENTIFY upgrade and the HTTPS listener, and the
per-connection TLS facts that C{/stats} reports.

nsqd upgrades a plaintext TCP connection in place: it writes the IDENTIFY reply, then calls
C{transport.startTLS(server_tls_options(options))} and runs the server side of the handshake.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Protocol

import attrs
from twisted.internet.interfaces import IOpenSSLContextFactory, IOpenSSLServerConnectionCreator
from zope.interface import implementer

if TYPE_CHECKING:
    from OpenSSL import SSL

# pyOpenSSL and cryptography are imported by the functions that need them: an nsqd without
# --tls-cert never loads them (about 12 MiB of its idle memory; docs/performance.md).

__all__ = [
    "CLIENT_AUTH_POLICIES",
    "EMPTY_TLS_INFO",
    "ServerTLSOptions",
    "TLSConfigError",
    "TLSInfo",
    "TLSSettings",
    "cipher_suite_name",
    "client_tls_info",
    "openssl_min_version",
    "server_tls_options",
]


class TLSConfigError(ValueError):
    """
    The TLS options are invalid, or the certificate, key or CA files cannot be used.
    """


class TLSSettings(Protocol):
    """
    The TLS attributes of L{twisted_nsq.nsqd.options.NSQDOptions} that this module reads.
    """

    @property
    def tls_cert(self) -> str:
        """Path of the PEM certificate (a chain is allowed), or "" for no TLS."""

    @property
    def tls_key(self) -> str:
        """Path of the PEM private key, or "" for no TLS."""

    @property
    def tls_root_ca_file(self) -> str:
        """Path of the PEM CA bundle client certificates are verified against, or ""."""

    @property
    def tls_client_auth_policy(self) -> str:
        """One of L{CLIENT_AUTH_POLICIES}."""

    @property
    def tls_min_version(self) -> str | int:
        """C{"tls1.0"}..C{"tls1.3"}, or Go's number for the version (769..772)."""


#: Accepted values of C{--tls-client-auth-policy}: none, Go's RequireAnyClientCert, and Go's
#: RequireAndVerifyClientCert.
CLIENT_AUTH_POLICIES = ("", "require", "require-verify")

_MIN_VERSION_NAMES = {"tls1.0": 0x0301, "tls1.1": 0x0302, "tls1.2": 0x0303, "tls1.3": 0x0304}
# Go's tls.VersionTLS10..13 (769 for tls1.0) are the protocol's own version numbers, which is
# also what OpenSSL's TLS1_VERSION..TLS1_3_VERSION are.
_MIN_VERSION_NUMBERS = frozenset(_MIN_VERSION_NAMES.values())
_TLS1_VERSION = _MIN_VERSION_NAMES["tls1.0"]
_TLS1_2_VERSION = _MIN_VERSION_NAMES["tls1.2"]

# Go's server cipher suites for TLS 1.0-1.2 in OpenSSL's notation: ECDHE or RSA key exchange with
# AES-GCM, ChaCha20-Poly1305 or AES-CBC.  TLS 1.3 suites are configured separately by OpenSSL.
_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:ECDHE+AES:RSA+AESGCM:RSA+AES:!aNULL:!eNULL:!MD5:!DSS:!PSK:!SRP"
# OpenSSL 3 and later refuse TLS 1.0 and 1.1 above security level 0; an operator who asks for
# them (nsqd's default minimum is tls1.0) gets them, as with Go.
_LEGACY_CIPHERS = _CIPHERS + ":@SECLEVEL=0"

_SESSION_ID_CONTEXT = b"twisted-nsq"


def openssl_min_version(value: str | int) -> int:
    """
    The OpenSSL protocol version constant for a C{--tls-min-version} value.

    @param value: C{"tls1.0"}..C{"tls1.3"} (any case), Go's version number (769..772), or
        C{""}/C{0} for nsqd's default, TLS 1.0.
    @raise TLSConfigError: for anything else.
    """
    if isinstance(value, str):
        if value == "":
            return _TLS1_VERSION
        version = _MIN_VERSION_NAMES.get(value.lower())
    else:
        if value == 0:
            return _TLS1_VERSION
        version = value if value in _MIN_VERSION_NUMBERS else None
    if version is None:
        raise TLSConfigError(
            f"invalid --tls-min-version {value!r}: expected tls1.0, tls1.1, tls1.2 or tls1.3"
        )
    return version


def _accept_any_certificate(
    connection: SSL.Connection, certificate: object, error_number: int, depth: int, ok: int
) -> bool:
    """
    Accept whatever certificate the client sends: Go's RequireAnyClientCert checks only that
    there is one.
    """
    return True


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLContextFactory)
class ServerTLSOptions:
    """
    Makes the server side of each TLS connection from one shared, fully configured context.

    Give it to C{transport.startTLS} for the IDENTIFY upgrade, or to an SSL server endpoint
    (C{SSL4ServerEndpoint}, C{listenSSL}) for HTTPS.
    """

    def __init__(self, context: SSL.Context) -> None:
        """
        @param context: the server context; it must not be changed once connections use it.
        """
        self.context = context

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        """
        A new server connection for C{tlsProtocol}; Twisted puts it in accept state.
        """
        from OpenSSL import SSL

        return SSL.Connection(self.context, None)

    def getContext(self) -> SSL.Context:
        """
        The shared context, for APIs that still take a context factory.
        """
        return self.context


def server_tls_options(options: TLSSettings) -> ServerTLSOptions | None:
    """
    The server TLS configuration nsqd's options ask for, or C{None} when no certificate and key
    are configured (TLS off).

    Certificate and key are PEM files; the certificate file may hold the chain after the leaf.
    C{tls_client_auth_policy} "" requests no client certificate, "require" requires one but does
    not verify it, and "require-verify" requires one that verifies against C{tls_root_ca_file}
    (or the system's CAs when that is empty).  When C{tls_root_ca_file} is set and a client
    certificate is requested, the server also names those CAs to the client, as Go does.

    @raise TLSConfigError: invalid option values or unusable files; all are checked here, at
        start-up, rather than at the first handshake.
    """
    if not options.tls_cert or not options.tls_key:
        return None
    policy = options.tls_client_auth_policy
    if policy not in CLIENT_AUTH_POLICIES:
        raise TLSConfigError(
            f"invalid --tls-client-auth-policy {policy!r}: expected '', 'require' or 'require-verify'"
        )
    min_version = openssl_min_version(options.tls_min_version)
    from cryptography.hazmat.primitives import serialization
    from OpenSSL import SSL

    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
    context.set_min_proto_version(min_version)
    legacy = min_version < _TLS1_2_VERSION
    context.set_cipher_list((_LEGACY_CIPHERS if legacy else _CIPHERS).encode("ascii"))
    # Without a session id context OpenSSL refuses to resume sessions once client certificates
    # are requested.
    context.set_session_id(_SESSION_ID_CONTEXT)
    try:
        context.use_certificate_chain_file(options.tls_cert)
    except SSL.Error as e:
        raise TLSConfigError(f"cannot load --tls-cert {options.tls_cert!r}: {e}") from e
    try:
        with open(options.tls_key, "rb") as key_file:
            # An encrypted key fails here (no password) instead of prompting at start-up.
            private_key = serialization.load_pem_private_key(key_file.read(), password=None)
        context.use_privatekey(private_key)  # type: ignore[arg-type]
        context.check_privatekey()
    except (OSError, ValueError, TypeError, SSL.Error) as e:
        raise TLSConfigError(f"cannot load --tls-key {options.tls_key!r}: {e}") from e

    root_ca_file = options.tls_root_ca_file
    if root_ca_file:
        try:
            context.load_verify_locations(root_ca_file)
            if policy:
                context.load_client_ca(root_ca_file.encode())
        except SSL.Error as e:
            raise TLSConfigError(f"cannot load --tls-root-ca-file {root_ca_file!r}: {e}") from e
    if policy == "require":
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_any_certificate)
    elif policy == "require-verify":
        if not root_ca_file:
            context.set_default_verify_paths()
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    return ServerTLSOptions(context)


@attrs.frozen
class TLSInfo:
    """
    The TLS facts of one client connection, as the C{tls_*} fields of C{/stats} show them.

    @ivar version: C{"TLS1.0"}..C{"TLS1.3"}, or "" without TLS.
    @ivar cipher_suite: the IANA (Go) name, e.g. C{"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"};
        C{"Unknown"} for a suite not in the table; "" without TLS.
    @ivar negotiated_protocol: the ALPN protocol, "" when none.
    @ivar negotiated_protocol_is_mutual: true for every TLS connection (Go has reported true
        unconditionally since it dropped NPN).
    @ivar common_name: the Common Name of the client certificate, "" when there is none; nsqd
        passes it to the auth server.
    """

    version: str
    cipher_suite: str
    negotiated_protocol: str
    negotiated_protocol_is_mutual: bool
    common_name: str


#: The TLS facts of a connection without TLS, or whose handshake has not finished.
EMPTY_TLS_INFO = TLSInfo(
    version="", cipher_suite="", negotiated_protocol="", negotiated_protocol_is_mutual=False, common_name=""
)

_VERSION_NAMES = {0x0301: "TLS1.0", 0x0302: "TLS1.1", 0x0303: "TLS1.2", 0x0304: "TLS1.3"}

# OpenSSL cipher names -> IANA names (the names Go prints).  TLS 1.3 suites already carry
# their IANA names in OpenSSL.
_CIPHER_SUITE_NAMES = {
    "TLS_AES_128_GCM_SHA256": "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384": "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256": "TLS_CHACHA20_POLY1305_SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-RSA-AES128-SHA": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "ECDHE-RSA-AES256-SHA": "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "ECDHE-ECDSA-AES128-SHA": "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "ECDHE-ECDSA-AES256-SHA": "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "ECDHE-RSA-AES128-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "ECDHE-RSA-AES256-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    "ECDHE-ECDSA-AES128-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "ECDHE-ECDSA-AES256-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    "ECDHE-RSA-DES-CBC3-SHA": "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "ECDHE-RSA-RC4-SHA": "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "ECDHE-ECDSA-RC4-SHA": "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "AES128-GCM-SHA256": "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "AES256-GCM-SHA384": "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "AES128-SHA": "TLS_RSA_WITH_AES_128_CBC_SHA",
    "AES256-SHA": "TLS_RSA_WITH_AES_256_CBC_SHA",
    "AES128-SHA256": "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "AES256-SHA256": "TLS_RSA_WITH_AES_256_CBC_SHA256",
    "DES-CBC3-SHA": "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "RC4-SHA": "TLS_RSA_WITH_RC4_128_SHA",
    "DHE-RSA-AES128-GCM-SHA256": "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    "DHE-RSA-AES256-GCM-SHA384": "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    "DHE-RSA-CHACHA20-POLY1305": "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}


def cipher_suite_name(openssl_name: str) -> str:
    """
    The IANA name of a cipher suite given its OpenSSL name, or C{"Unknown"}.
    """
    return _CIPHER_SUITE_NAMES.get(openssl_name, "Unknown")


def _common_name(connection: SSL.Connection) -> str:
    from cryptography.x509.oid import NameOID

    certificate = connection.get_peer_certificate(as_cryptography=True)
    if certificate is None:
        return ""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return ""
    # Go's pkix.Name keeps the last CN of the subject.
    value = names[-1].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def client_tls_info(transport: object) -> TLSInfo:
    """
    The TLS facts of the connection behind C{transport}.

    @param transport: any transport; one that went through C{startTLS} (or a TLS listener)
        exposes its pyOpenSSL connection through C{getHandle()}.
    @return: L{EMPTY_TLS_INFO} when the transport has no TLS or its handshake has not finished.
    """
    get_handle = getattr(transport, "getHandle", None)
    # Without pyOpenSSL loaded no connection can have TLS (and this must not load it).
    ssl_module = sys.modules.get("OpenSSL.SSL")
    if get_handle is None or ssl_module is None:
        return EMPTY_TLS_INFO
    connection = get_handle()
    # The peer's Finished message is the last of the handshake on the server side, so its
    # presence means the handshake is complete (the cipher is known earlier under TLS 1.3).
    if not isinstance(connection, ssl_module.Connection) or connection.get_peer_finished() is None:
        return EMPTY_TLS_INFO
    version_number = connection.get_protocol_version()
    cipher = connection.get_cipher_name()
    alpn = connection.get_alpn_proto_negotiated()
    return TLSInfo(
        version=_VERSION_NAMES.get(version_number, f"Unknown {version_number}"),
        cipher_suite=cipher_suite_name(cipher) if cipher is not None else "Unknown",
        negotiated_protocol=alpn.decode("ascii", "replace"),
        negotiated_protocol_is_mutual=True,
        common_name=_common_name(connection),
    )
