"""
Wiring nsqd to its data directory: disk queues behind topics and channels, ``nsqd.dat`` at
startup, and where fsyncs run.

The service uses these; so do tests and embedders that build an ``NSQD`` by hand and want it to
survive a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from twisted_nsq.nsqd.backend import IBackendQueue
from twisted_nsq.nsqd.diskqueue import DiskQueue, batched_close
from twisted_nsq.nsqd.metadata import MetadataPersister, load_metadata

if TYPE_CHECKING:
    from twisted_nsq.nsqd.nsqd import NSQD
    from twisted_nsq.nsqd.options import NSQDOptions

#: Runs a blocking job (an fsync and a metadata write) away from the reactor thread.
SyncRunner = Callable[[Callable[[], None]], Deferred[None]]
#: Told about a storage error (its text), or None once storage works again.
ErrorReporter = Callable[[str | None], None]


def make_backend_factory(
    options: NSQDOptions, clock: IReactorTime, sync_runner: SyncRunner, on_error: ErrorReporter
) -> Callable[[str], IBackendQueue]:
    """
    A factory for ``NSQD(backend_factory=...)``: a go-diskqueue compatible queue named ``name``
    (``topic`` or ``topic:channel``) in the data path, sized and synced as the options say;
    ``on_error`` hears of storage errors (the service sets nsqd's health with it).

    ``NSQD.make_backend`` calls it for non-ephemeral queues only.
    """
    data_path = options.resolved_data_path()

    def factory(name: str) -> IBackendQueue:
        queue: IBackendQueue = DiskQueue(
            name,
            data_path,
            max_bytes_per_file=options.max_bytes_per_file,
            max_msg_size=options.max_msg_size,
            sync_every=options.sync_every,
            sync_timeout=options.sync_timeout,
            clock=clock,
            sync_runner=sync_runner,
            on_error=on_error,
            # --durable: a message stays on disk until it is finished (docs/extensions/durable.md).
            keep_until_done=options.durable,
        )
        return queue

    return factory


def thread_sync_runner(reactor: IReactorFromThreads, pool: ThreadPool) -> SyncRunner:
    """Run each job on ``pool``; its Deferred fires on the reactor thread."""

    def run(job: Callable[[], None]) -> Deferred[None]:
        return deferToThreadPool(reactor, pool, job)

    return run


def immediate_sync_runner(job: Callable[[], None]) -> Deferred[None]:
    """Run each job at once on the calling thread (tests on a ``Clock``, and tools)."""
    return maybeDeferred(job)


def restore(nsqd: NSQD) -> MetadataPersister:
    """
    Go nsqd's startup steps 4 and 5: recreate what ``nsqd.dat`` lists (if it exists), rewrite
    it, and from then on keep it current.

    @raise twisted_nsq.nsqd.metadata.MetadataError: the file is unreadable (fatal in Go).
    @raise OSError: the file could not be written (fatal in Go: "failed to persist metadata").
    """
    metadata = load_metadata(nsqd.data_path())
    if metadata is not None:
        nsqd.load_metadata(metadata)
    persister = MetadataPersister(nsqd)
    persister.save()
    persister.install()
    return persister


def persist_and_close(nsqd: NSQD, persister: MetadataPersister | None) -> Deferred[None]:
    """
    Go nsqd's exit steps 2 and 3, once clients and listeners are gone: write ``nsqd.dat`` one
    last time (a failure is logged, as in Go), then close every topic, which flushes each
    channel's memory, in-flight and deferred messages and then the topic's memory queue to the
    disk queues, and syncs and closes them (together: see
    L{twisted_nsq.nsqd.diskqueue.batched_close}). The queues are durable when it returns.
    """
    if persister is not None:
        persister.uninstall()
        persister.write_now()
    # Thousands of queues: their fsyncs run together, one directory fsync at the end, and a
    # queue that has nothing new to make durable costs none (docs/performance.md, "Scale").
    with batched_close():
        return nsqd.close()
