"""
L{NSQDService}: one nsqd's start-up and shutdown, in Go nsqd's order.

Start: lock the data path, validate the options, bind TCP, HTTP and HTTPS, recreate the topics
and channels C{nsqd.dat} lists, rewrite it, then start the core and the child services (lookupd
links and the like). Stop: close the TCP listener and every client, the HTTP listeners, write
C{nsqd.dat}, flush the core to its disk queues, stop the children and the disk thread, then
unlock the data path.
"""

from __future__ import annotations

import fcntl
import os
import platform
from typing import Any, cast

import attrs
from treq.client import HTTPClient
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorFromThreads,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

from twisted_nsq._version import VERSION_STRING
from twisted_nsq.nsqd.auth import AuthClient
from twisted_nsq.nsqd.http import NSQDHTTP
from twisted_nsq.nsqd.lookup import LookupService, make_lookup_service
from twisted_nsq.nsqd.metadata import MetadataError, MetadataPersister
from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.options import NSQDOptions
from twisted_nsq.nsqd.persistence import (
    make_backend_factory,
    persist_and_close,
    restore,
    thread_sync_runner,
)
from twisted_nsq.nsqd.protocol import NSQDFactory
from twisted_nsq.nsqd.statsd import attach_statsd
from twisted_nsq.nsqd.tls import server_tls_options

_log = Logger()

#: Threads that run the disk queues' fsyncs (each queue has at most one sync under way).
DISK_THREADS = 4


class StartupError(Exception):
    """nsqd cannot start: the data path is locked, an option is wrong, or a listener cannot bind."""


@attrs.frozen
class ListenAddress:
    """
    A Go listen address: C{host:port}, C{[v6]:port}, C{:port}, or (anything else) a unix socket path.
    """

    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    @classmethod
    def parse(cls, address: str) -> ListenAddress:
        """
        Read C{address} the way nsqd does: whatever Go's C{net.SplitHostPort} accepts is TCP, and
        everything else is a unix socket path.

        @raise ValueError: a TCP address whose port is not a number in [0, 65535].
        """
        host_port = _split_host_port(address)
        if host_port is None:
            return cls(path=address)
        host, port_text = host_port
        if port_text and not port_text.isdigit():
            raise ValueError(f"invalid port {port_text!r} in address {address!r}")
        port = int(port_text or "0")
        if port > 65535:
            raise ValueError(f"invalid port {port} in address {address!r}")
        return cls(host=host, port=port)

    def endpoint_description(self) -> str:
        """This address as a Twisted server endpoint string for C{serverFromString}."""
        if self.is_unix:
            return f"unix:address={_quote(self.path)}"
        # Go's empty host means every interface; we bind every IPv4 interface.
        host = self.host or "0.0.0.0"
        kind = "tcp6" if ":" in host else "tcp"
        return f"{kind}:port={self.port}:interface={_quote(host)}"


def _split_host_port(address: str) -> tuple[str, str] | None:
    """Go's C{net.SplitHostPort}, returning C{None} where Go returns an error."""
    if address.startswith("["):
        end = address.find("]")
        if end < 0 or address[end + 1 : end + 2] != ":":
            return None
        host, port = address[1:end], address[end + 2 :]
        if "[" in host or "]" in port or "[" in port:
            return None
        return host, port
    host, colon, port = address.rpartition(":")
    if not colon or ":" in host or "[" in address or "]" in address:
        return None
    return host, port


def _quote(value: str) -> str:
    # Endpoint strings split on ':' and '='; a backslash escapes them.
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def describe_port(port: IListeningPort) -> tuple[str, int]:
    """The printable address and the port number (-1 for a unix socket) of a listening port."""
    address: Any = port.getHost()
    name = getattr(address, "name", None)
    if name is not None:
        return (name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)), -1
    host: str = address.host
    number: int = address.port
    if ":" in host:
        return f"[{host}]:{number}", number
    return f"{host}:{number}", number


class DataPathLock:
    """
    An exclusive C{flock} on the data directory itself, the lock Go nsqd takes: two nsqds (Go or
    ours) cannot share a data path.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """
        Take the lock without waiting.

        @raise StartupError: the directory cannot be opened, or another process holds the lock.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise StartupError(f"failed to lock data-path: {e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StartupError(
                f"--data-path={self.path} in use (possibly by another instance of nsqd)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _listen_now(reactor: IReactorTime, address: ListenAddress, factory: IProtocolFactory) -> IListeningPort:
    """
    Listen on C{address}, returning the port or raising.

    TCP and UNIX server endpoints bind inside C{listen()}, so its Deferred has already fired; taking
    the result here keeps C{startService} synchronous, which is what makes a busy port fail
    C{twistd}/C{twist} and the console script at once.
    """
    outcome: list[object] = []
    endpoint: IStreamServerEndpoint = serverFromString(  # type: ignore[no-untyped-call]
        reactor, address.endpoint_description()
    )
    endpoint.listen(factory).addBoth(outcome.append)
    if not outcome:
        raise StartupError("the endpoint did not listen synchronously")
    result = outcome[0]
    if isinstance(result, Failure):
        raise StartupError(str(result.value))
    assert IListeningPort.providedBy(result)
    port: IListeningPort = result
    return port


class NSQDService(MultiService):
    """
    Runs one nsqd: the core, the TCP, HTTP and HTTPS listeners, and any child services.

    C{startService} raises L{StartupError} (after undoing what it did) when nsqd cannot start.
    C{stopService} returns a Deferred that fires once everything is flushed and the data path is
    unlocked. After a start, C{nsqd}, C{factory} and the C{*_listening_port} attributes are set.
    """

    def __init__(self, options: NSQDOptions, reactor: IReactorTime) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.options = options
        self._reactor = reactor
        self._lock = DataPathLock(options.resolved_data_path())
        self.nsqd: NSQD | None = None
        self.factory: NSQDFactory | None = None
        self.tcp_listening_port: IListeningPort | None = None
        self.http_listening_port: IListeningPort | None = None
        self.https_listening_port: IListeningPort | None = None
        self.persister: MetadataPersister | None = None
        self._disk_pool: ThreadPool | None = None
        #: The nsqlookupd links (started last, stopped before the core flushes).
        self.lookup: LookupService | None = None

    def startService(self) -> None:
        if self.running:
            return
        try:
            self._start()
        except BaseException:
            self._undo_start()
            raise
        super().startService()  # type: ignore[no-untyped-call]

    def _start(self) -> None:
        options = self.options
        self._lock.acquire()
        try:
            options.validate()
            tcp = ListenAddress.parse(options.tcp_address)
            http = ListenAddress.parse(options.http_address) if options.http_address else None
            https = ListenAddress.parse(options.https_address) if options.https_address else None
        except ValueError as e:
            raise StartupError(str(e)) from None
        _log.info(
            "nsqd v{version} (built w/python{python})",
            version=VERSION_STRING,
            python=platform.python_version(),
        )
        _log.info("ID: {node_id}", node_id=options.node_id)
        pool = self._disk_pool = ThreadPool(minthreads=0, maxthreads=DISK_THREADS, name="nsqd-disk")
        pool.start()
        backend_factory = make_backend_factory(
            options,
            self._reactor,
            thread_sync_runner(cast(IReactorFromThreads, self._reactor), pool),
            self._storage_error,
        )
        nsqd = self.nsqd = NSQD(options, self._reactor, backend_factory=backend_factory)
        try:
            tls_options = server_tls_options(options)
        except ValueError as e:
            raise StartupError(f"failed to build TLS config - {e}") from None
        try:
            auth_client = _auth_client(options, self._reactor)
        except (OSError, ValueError) as e:
            raise StartupError(f"failed to build the auth client - {e}") from None
        factory = self.factory = NSQDFactory(nsqd, self._reactor, tls_options, auth_client)
        # Twisted announces every factory start and stop at info level; nsqd's log has its own lines.
        factory.noisy = False

        self.tcp_listening_port = self._bind("TCP", tcp, factory)
        _, nsqd.tcp_port = describe_port(self.tcp_listening_port)
        # One app (and so one latency tracker) serves HTTP and HTTPS alike, and feeds statsd.
        http_app = NSQDHTTP(nsqd)
        site = http_app.site(self._reactor)
        try:
            attach_statsd(self, nsqd, http_app.latency, self._reactor)
        except ValueError as e:
            raise StartupError(str(e)) from None
        site.noisy = False
        if http is not None:
            self.http_listening_port = self._bind("HTTP", http, site)
            _, nsqd.http_port = describe_port(self.http_listening_port)
        if tls_options is not None and https is not None:
            secure = TLSMemoryBIOFactory(tls_options, False, site)
            self.https_listening_port = self._bind("HTTPS", https, secure)
            _, nsqd.https_port = describe_port(self.https_listening_port)
        try:
            self.persister = restore(nsqd)
        except MetadataError as e:
            raise StartupError(str(e)) from None
        except OSError as e:
            raise StartupError(f"failed to persist metadata - {e}") from None
        nsqd.start()
        # Go's start-up step 6: connect to nsqlookupd, which registers everything loaded.
        self.lookup = make_lookup_service(nsqd, self._reactor)
        self.lookup.startService()

    def _storage_error(self, error: str | None) -> None:
        """A disk queue failed (or works again): C{/ping} and C{/stats} report it."""
        if self.nsqd is not None:
            self.nsqd.set_health(error)

    def _bind(self, name: str, address: ListenAddress, factory: IProtocolFactory) -> IListeningPort:
        try:
            port = _listen_now(self._reactor, address, factory)
        except StartupError as e:
            raise StartupError(f"listen ({_display(address)}) failed - {e}") from None
        printable, _ = describe_port(port)
        _log.info("{protocol}: listening on {address}", protocol=name, address=printable)
        return port

    def _undo_start(self) -> None:
        lookup, self.lookup = self.lookup, None
        if lookup is not None:
            lookup.stopService()
        for port in (self.https_listening_port, self.http_listening_port, self.tcp_listening_port):
            if port is not None:
                port.stopListening()
        self.tcp_listening_port = self.http_listening_port = self.https_listening_port = None
        if self.persister is not None:
            self.persister.uninstall()
            self.persister = None
        if self.nsqd is not None and self.nsqd.topics:
            # Metadata was loaded but nsqd cannot run: release the queues' files.
            self.nsqd.close()
        self._stop_disk_pool()
        self._lock.release()

    def _stop_disk_pool(self) -> None:
        pool, self._disk_pool = self._disk_pool, None
        if pool is not None:
            pool.stop()

    def stopService(self) -> Deferred[None]:
        if not self.running:
            return succeed(None)
        return ensureDeferred(self._drain())

    async def _drain(self) -> None:
        try:
            await self._close_port("TCP", self.tcp_listening_port)
            self.tcp_listening_port = None
            if self.factory is not None:
                await self.factory.close_connections()
            await self._close_port("HTTP", self.http_listening_port)
            await self._close_port("HTTPS", self.https_listening_port)
            self.http_listening_port = self.https_listening_port = None
            # Go stops its lookup loop at exit without UNREGISTER; lookupd drops us on close.
            lookup, self.lookup = self.lookup, None
            if lookup is not None:
                await lookup.stopService()
            if self.nsqd is not None:
                persister, self.persister = self.persister, None
                await persist_and_close(self.nsqd, persister)
            await super().stopService()  # type: ignore[no-untyped-call]
        finally:
            self.running = False
            self._stop_disk_pool()
            self._lock.release()

    async def _close_port(self, name: str, port: IListeningPort | None) -> None:
        if port is None:
            return
        printable, _ = describe_port(port)
        _log.info("{protocol}: closing {address}", protocol=name, address=printable)
        stopped = port.stopListening()
        if stopped is not None:
            await stopped


_PEM_END = b"-----END CERTIFICATE-----"


def _auth_client(options: NSQDOptions, reactor: IReactorTime) -> AuthClient | None:
    """
    The client for C{--auth-http-address}, or C{None} without one. HTTPS auth servers are checked
    against C{--tls-root-ca-file} when it is set (as nsqd does), else the system's CAs.
    """
    if not options.auth_http_addresses:
        return None
    trust_root = None
    if options.tls_root_ca_file:
        with open(options.tls_root_ca_file, "rb") as f:
            blocks = [block + _PEM_END for block in f.read().split(_PEM_END) if b"-----BEGIN" in block]
        if not blocks:
            raise ValueError(f"no certificate in --tls-root-ca-file {options.tls_root_ca_file!r}")
        trust_root = trustRootFromCertificates(  # type: ignore[no-untyped-call]
            [Certificate.loadPEM(block) for block in blocks]
        )
    policy = BrowserLikePolicyForHTTPS(trustRoot=trust_root)  # type: ignore[no-untyped-call]
    agent = Agent(  # type: ignore[no-untyped-call]
        reactor, contextFactory=policy, connectTimeout=options.http_client_connect_timeout
    )
    return AuthClient(
        options.auth_http_addresses,
        HTTPClient(agent),
        reactor,
        request_timeout=options.http_client_request_timeout,
        method=options.auth_http_request_method,
    )


def _display(address: ListenAddress) -> str:
    if address.is_unix:
        return address.path
    if ":" in address.host:
        return f"[{address.host}]:{address.port}"
    return f"{address.host}:{address.port}"
