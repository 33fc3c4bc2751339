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
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from twisted.internet.interfaces import IListeningPort, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from twisted_nsq._listen import ListenAddress, StartupError, describe_port
from twisted_nsq._service import DrainingService, bind_listener, close_listener
from twisted_nsq._version import VERSION_STRING
from twisted_nsq.nsqd.http import NSQDHTTP
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
from twisted_nsq.nsqd.tls import server_tls_options

if TYPE_CHECKING:
    from twisted_nsq.nsqd.auth import AuthClient
    from twisted_nsq.nsqd.lookup import LookupService

# What an idle default nsqd does not need is imported where it is first used, so that it starts
# small (docs/performance.md, "Idle memory"): pyOpenSSL and cryptography only with --tls-*
# (twisted_nsq.nsqd.tls), treq and twisted.web.client only with --auth-http-address or an
# nsqlookupd address (the lookupd links start on the first one, which may come at run time), the
# statsd client only with --statsd-address, prometheus_client on the first scrape of /metrics
# (twisted_nsq.nsqd.metrics).

_log = Logger()

#: Threads that run the disk queues' fsyncs (each queue has at most one sync under way).
__all__ = ["DISK_THREADS", "DataPathLock", "ListenAddress", "NSQDService", "StartupError", "describe_port"]

DISK_THREADS = 4


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


class NSQDService(DrainingService):
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

        self.tcp_listening_port = bind_listener(self._reactor, _log, "TCP", tcp, factory)
        _, nsqd.tcp_port = describe_port(self.tcp_listening_port)
        # One app (and so one latency tracker) serves HTTP and HTTPS alike, and feeds statsd.
        http_app = NSQDHTTP(nsqd)
        site = http_app.site(self._reactor)
        if options.statsd_address or "statsd" in self.namedServices:
            from twisted_nsq.nsqd.statsd import attach_statsd

            try:
                attach_statsd(self, nsqd, http_app.latency, self._reactor)
            except ValueError as e:
                raise StartupError(str(e)) from None
        site.noisy = False
        if http is not None:
            self.http_listening_port = bind_listener(self._reactor, _log, "HTTP", http, site)
            _, nsqd.http_port = describe_port(self.http_listening_port)
        if tls_options is not None and https is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            secure = TLSMemoryBIOFactory(tls_options, False, site)
            self.https_listening_port = bind_listener(self._reactor, _log, "HTTPS", https, secure)
            _, nsqd.https_port = describe_port(self.https_listening_port)
        try:
            self.persister = restore(nsqd)
        except MetadataError as e:
            raise StartupError(str(e)) from None
        except OSError as e:
            raise StartupError(f"failed to persist metadata - {e}") from None
        nsqd.start()
        # Go's start-up step 6: connect to nsqlookupd, which registers everything loaded. Without
        # an address the links start on the first PUT /config/nsqlookupd_tcp_addresses.
        if options.lookupd_tcp_addresses:
            self._start_lookup()
        else:
            nsqd.on_lookupd_addresses = self._first_lookupd_addresses

    def _start_lookup(self) -> None:
        from twisted_nsq.nsqd.lookup import make_lookup_service

        assert self.nsqd is not None
        lookup = self.lookup = make_lookup_service(self.nsqd, self._reactor)
        # Takes over nsqd.on_lookupd_addresses and connects to the addresses in the options.
        lookup.startService()

    def _first_lookupd_addresses(self, addresses: Sequence[str]) -> None:
        """The first nsqlookupd addresses set at run time (the options already hold them)."""
        if self.lookup is None and addresses:
            self._start_lookup()

    def _storage_error(self, error: str | None) -> None:
        """A disk queue failed (or works again): C{/ping} and C{/stats} report it."""
        if self.nsqd is not None:
            self.nsqd.set_health(error)

    def _undo_start(self) -> None:
        self._forget_lookupd_hook()
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

    async def _drain(self) -> None:
        await close_listener(_log, "TCP", self.tcp_listening_port)
        self.tcp_listening_port = None
        if self.factory is not None:
            await self.factory.close_connections()
        await close_listener(_log, "HTTP", self.http_listening_port)
        await close_listener(_log, "HTTPS", self.https_listening_port)
        self.http_listening_port = self.https_listening_port = None
        # Go stops its lookup loop at exit without UNREGISTER; lookupd drops us on close.
        self._forget_lookupd_hook()
        lookup, self.lookup = self.lookup, None
        if lookup is not None:
            await lookup.stopService()
        if self.nsqd is not None:
            persister, self.persister = self.persister, None
            await persist_and_close(self.nsqd, persister)

    def _release(self) -> None:
        # After the children: the disk thread and the data path outlive everything else.
        self._stop_disk_pool()
        self._lock.release()

    def _forget_lookupd_hook(self) -> None:
        if self.nsqd is not None and self.nsqd.on_lookupd_addresses == self._first_lookupd_addresses:
            self.nsqd.on_lookupd_addresses = None


_PEM_END = b"-----END CERTIFICATE-----"


def _auth_client(options: NSQDOptions, reactor: IReactorTime) -> AuthClient | None:
    """
    The client for C{--auth-http-address}, or C{None} without one. HTTPS auth servers are checked
    against C{--tls-root-ca-file} when it is set (as nsqd does), else the system's CAs.
    """
    if not options.auth_http_addresses:
        return None
    from treq.client import HTTPClient
    from twisted.internet.ssl import Certificate, trustRootFromCertificates
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

    from twisted_nsq.nsqd.auth import AuthClient

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
