"""
L{NSQAdminService}: one nsqadmin's start-up and shutdown.

Start: validate the options, build the upstream HTTP client (a connection pool, the connect and
request timeouts, the C{--http-client-tls-*} settings), bind HTTP and log
C{HTTP: listening on ADDR}. Stop: close the listener, then the client's pooled connections.
"""

from __future__ import annotations

import platform
import re
from typing import Any

import treq
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IOpenSSLClientConnectionCreator, IReactorTime
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from twisted_nsq._listen import ListenAddress, StartupError
from twisted_nsq._service import DrainingService, bind_listener, close_listener
from twisted_nsq._version import VERSION_STRING
from twisted_nsq.nsqadmin.cluster import ClusterView
from twisted_nsq.nsqadmin.http import NSQAdminHTTP, PagesFactory
from twisted_nsq.nsqadmin.notify import Notifier
from twisted_nsq.nsqadmin.options import NSQAdminOptions

__all__ = ["NSQAdminService", "StartupError", "TreqClient", "client_tls_policy"]

_log = Logger()

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """TLS to one host without checking its certificate (C{--http-client-tls-insecure-skip-verify})."""

    def __init__(self, hostname: str, context: SSL.Context) -> None:
        self._hostname = hostname.encode("idna") if hostname else b""
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        if self._hostname:
            connection.set_tlsext_host_name(self._hostname)
        connection.set_app_data(tlsProtocol)
        return connection


@implementer(IPolicyForHTTPS)
class _ClientPolicy:
    """The C{--http-client-tls-*} settings as a treq/Agent TLS policy."""

    def __init__(
        self,
        insecure: bool,
        trust_root: Any,
        client_certificate: ssl.PrivateCertificate | None,
    ) -> None:
        self._trust_root = trust_root
        self._client_certificate = client_certificate
        self._insecure_context: SSL.Context | None = None
        if insecure:
            extra: dict[str, Any] = {}
            if client_certificate is not None:
                extra = {
                    "privateKey": client_certificate.privateKey.original,
                    "certificate": client_certificate.original,
                }
            self._insecure_context = ssl.CertificateOptions(verify=False, **extra).getContext()

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        host = hostname.decode("ascii", "replace")
        if self._insecure_context is not None:
            return _Unverified(host, self._insecure_context)
        creator: IOpenSSLClientConnectionCreator = ssl.optionsForClientTLS(
            host, trustRoot=self._trust_root, clientCertificate=self._client_certificate
        )
        return creator


def client_tls_policy(options: NSQAdminOptions) -> IPolicyForHTTPS:
    """
    The TLS policy of nsqadmin's HTTP client, from C{--http-client-tls-*}.

    @raise StartupError: a certificate, key or CA file cannot be read (Go's messages).
    """
    cert, key, ca = (
        options.http_client_tls_cert,
        options.http_client_tls_key,
        options.http_client_tls_root_ca_file,
    )
    if not (options.http_client_tls_insecure_skip_verify or cert or ca):
        policy: IPolicyForHTTPS = BrowserLikePolicyForHTTPS()  # type: ignore[no-untyped-call]
        return policy
    client_certificate = None
    if cert and key:
        try:
            with open(cert, "rb") as c, open(key, "rb") as k:
                client_certificate = ssl.PrivateCertificate.loadPEM(c.read() + b"\n" + k.read())  # type: ignore[no-untyped-call]
        except Exception as e:
            raise StartupError(f"failed to LoadX509KeyPair {cert}, {key} - {e}") from None
    trust_root = None
    if ca:
        try:
            with open(ca, "rb") as f:
                pem = f.read()
        except OSError as e:
            raise StartupError(f"failed to read TLS root CA file {ca} - {e}") from None
        try:
            blocks = _PEM_CERTIFICATE.findall(pem)
            if not blocks:
                raise ValueError("no certificate")
            certificates = [ssl.Certificate.loadPEM(block) for block in blocks]
            trust_root = ssl.trustRootFromCertificates(certificates)  # type: ignore[no-untyped-call]
        except Exception:
            raise StartupError(f"failed to AppendCertsFromPEM {ca}") from None
    return _ClientPolicy(options.http_client_tls_insecure_skip_verify, trust_root, client_certificate)


class TreqClient:
    """
    treq with nsqadmin's settings: one connection pool, the connect timeout on every connection,
    the request timeout on every request, and the TLS policy. Satisfies
    L{twisted_nsq.nsqadmin.cluster.HTTPClient}.
    """

    def __init__(
        self,
        reactor: Any,
        pool: HTTPConnectionPool,
        connect_timeout: float,
        request_timeout: float,
        tls_policy: IPolicyForHTTPS,
    ) -> None:
        agent = Agent(  # type: ignore[no-untyped-call]
            reactor, contextFactory=tls_policy, connectTimeout=connect_timeout or None, pool=pool
        )
        self._client = treq.client.HTTPClient(agent)
        self._reactor = reactor
        self._timeout = request_timeout or None

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        kwargs.setdefault("timeout", self._timeout)
        kwargs.setdefault("reactor", self._reactor)
        response: Deferred[Any] = self._client.request(method, url, **kwargs)
        return response

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, data: Any = None, **kwargs: Any) -> Deferred[Any]:
        return self.request("POST", url, data=data, **kwargs)

    def content(self, response: Any) -> Deferred[bytes]:
        body: Deferred[bytes] = treq.content(response)
        return body

    def json_content(self, response: Any, **kwargs: Any) -> Deferred[Any]:
        decoded: Deferred[Any] = treq.json_content(response, **kwargs)
        return decoded


class NSQAdminService(DrainingService):
    """
    Runs one nsqadmin: the cluster view, the upstream HTTP client and the HTTP listener.

    C{startService} raises L{StartupError} when nsqadmin cannot start. C{stopService} returns a
    Deferred that fires once the listener is closed and the pooled upstream connections are gone.
    After a start, C{view}, C{http} and C{http_listening_port} are set.

    @param pages: builds the pages' resource (tests give a stand-in); the real pages by default.
    """

    def __init__(
        self, options: NSQAdminOptions, reactor: IReactorTime, pages: PagesFactory | None = None
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.options = options
        self._reactor = reactor
        self._pages = pages
        self.pool: HTTPConnectionPool | None = None
        self.view: ClusterView | None = None
        self.http: NSQAdminHTTP | None = None
        self.http_listening_port: IListeningPort | None = None

    def _start(self) -> None:
        options = self.options
        try:
            options.validate()
            address = ListenAddress.parse(options.http_address)
        except ValueError as e:
            raise StartupError(str(e)) from None
        policy = client_tls_policy(options)
        _log.info(
            "nsqadmin v{version} (built w/python{python})",
            version=VERSION_STRING,
            python=platform.python_version(),
        )
        pool = self.pool = HTTPConnectionPool(self._reactor, persistent=True)  # type: ignore[no-untyped-call]
        pool.retryAutomatically = False
        client = TreqClient(
            self._reactor,
            pool,
            options.http_client_connect_timeout,
            options.http_client_request_timeout,
            policy,
        )
        view = self.view = ClusterView(
            client, self._reactor, options.lookupd_http_addresses, options.nsqd_http_addresses
        )
        notifier = Notifier(options.notification_http_endpoint, client, self._reactor)
        self.http = NSQAdminHTTP(view, options, http=client, notifier=notifier, pages=self._pages)
        site = self.http.site(self._reactor)
        site.noisy = False
        self.http_listening_port = bind_listener(self._reactor, _log, "HTTP", address, site)

    def _undo_start(self) -> None:
        if self.http_listening_port is not None:
            self.http_listening_port.stopListening()
        self.http_listening_port = None
        if self.pool is not None:
            self.pool.closeCachedConnections()  # type: ignore[no-untyped-call]
        self.pool = None

    async def _drain(self) -> None:
        await close_listener(_log, "HTTP", self.http_listening_port)
        self.http_listening_port = None
        if self.pool is not None:
            await self.pool.closeCachedConnections()  # type: ignore[no-untyped-call]
        self.pool = None
