"""
A disk queue that reads and writes go-diskqueue 1.1.0's files, so Go nsqd 1.3.0's data directory
can be used in place (nsq-spec 2.7).

Files, all mode 0600, in ``data_path``:

- ``<name>.diskqueue.%06d.dat``: records ``[int32 BE size][payload]``, the payload being the message
  record (int64 timestamp, uint16 attempts, 16-byte ID, body); valid sizes run from 26 to
  ``max_msg_size + 26``. A file rolls to the next number before a record that would take it past
  ``max_bytes_per_file``, unless the file is still empty.
- ``<name>.diskqueue.meta.dat``: ``"%d\\n%d,%d\\n%d,%d\\n"`` = depth, readFileNum,readPos,
  writeFileNum,writePos, replaced atomically.

Everything runs on the reactor thread except what ``sync_runner`` runs: the fsyncs and the
metadata write. Records are appended to one ``bytearray`` and handed to the OS in large writes
(at the end of the reactor turn, past 64 KiB, before a sync, on roll); the reader reads large
chunks with ``pread`` and parses them in memory, and while it is caught up with the writer it
takes new records straight from ``put()`` (still written to the file as usual). No system call
is made per message.

Go's behaviour is kept, with these deliberate differences, none visible in the file format:

- a reader that has consumed a complete file moves to the next one instead of hitting EOF and
  renaming a good file ``.bad`` (nsqio/go-diskqueue#42, still open for 1.1.0);
- existing data is never written over: at startup, a write file whose size is not the
  metadata's writePos (torn tail, or stale metadata), and any file after it that already holds
  data (a crash after a roll), are left to the reader, which salvages their intact records, and
  writing starts at the next free file number; rolling into a file that holds data skips it too;
- the tail checks also run at startup, so stale metadata is repaired before the first read; an
  unparsable metadata file is renamed ``.bad`` and the queue starts fresh (and salvages);
- a sync is two jobs: fsync the data (and the directory once a new data file exists), then
  write the metadata. ``sync()`` (nsqd ``--durable``'s group commit) waits for the first only,
  and the metadata keeps Go's schedule; the salvage above is what makes records past the
  metadata's write position count. ``close()`` skips what is already durable, and
  L{batched_close} runs the closing of many queues together;
- with ``keep_until_done``, a file that cannot be read to its end is renamed ``.bad`` only once
  the messages read from it are done (the metadata may point into it until then);
- ``depth()`` never reports a negative count (the metadata keeps Go's value until the tail).
"""

from __future__ import annotations

import os
import re
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_nsq.nsqd.backend import BackendError, IBackendQueue
from twisted_nsq.nsqd.files import fsync_directory, replace_file
from twisted_nsq.nsqd.message import Message
from twisted_nsq.wire.frames import MESSAGE_HEADER_SIZE, MSG_ID_LENGTH

log = Logger()

#: Buffered record bytes beyond which the next put() hands them to the OS first.
FLUSH_THRESHOLD = 65536
#: How much a reader asks the OS for at a time.
READ_CHUNK = 256 * 1024
#: File-number ranges wider than this are cleaned up by listing the directory, not by counting.
_COUNTED_RANGE = 256

# The 14 bytes in front of the message ID: record size, timestamp, attempts.
_RECORD_HEAD = struct.Struct(">iqH")
# The same with the ID: what put() writes in front of the body.
_RECORD_HEAD_ID = struct.Struct(">iqH16s")
_SIZE = struct.Struct(">i")
_ID_START = 4 + 10
_BODY_START = _ID_START + MSG_ID_LENGTH
_META_RE = re.compile(rb"(-?\d+)\n(\d+),(\d+)\n(\d+),(\d+)(?:\n|$)")


class _Ref:
    """Where a message handed out by a ``keep_until_done`` queue starts, and whether it is done."""

    __slots__ = ("done", "file_num", "pos", "token")

    def __init__(self, token: object, file_num: int, pos: int) -> None:
        self.token = token
        self.file_num = file_num
        self.pos = pos
        self.done = False


def _log_unexpected(failure: Failure) -> None:
    """The end of a sync's chain: _sync_done reported sync errors, so this is a bug."""
    log.failure("DISKQUEUE: unexpected error after a sync", failure)


@implementer(IBackendQueue)
class DiskQueue:
    """
    A FIFO of messages in go-diskqueue's files.

    ``put()`` raises L{BackendError} when a record cannot be stored (and reports it through
    ``on_error(text)``; ``on_error(None)`` follows the next successful write). A write that fails
    after ``put()`` returned (at the end of the reactor turn) is reported the same way, the
    records stay buffered, and the next ``put()`` tries them again before it accepts anything.

    With ``keep_until_done`` (nsqd ``--durable``), ``read()`` sets ``message.ref`` and the
    metadata keeps pointing at the oldest message not yet passed to ``done()``: after a crash,
    everything from there on is read again. Files are deleted only once that point has left them.
    """

    unbounded = True

    def __init__(
        self,
        name: str,
        data_path: str,
        *,
        max_bytes_per_file: int,
        max_msg_size: int,
        sync_every: int,
        sync_timeout: float,
        clock: IReactorTime,
        sync_runner: Callable[[Callable[[], None]], Deferred[None]],
        on_error: Callable[[str | None], None] = lambda e: None,
        keep_until_done: bool = False,
    ) -> None:
        self.name = name
        self.bad_file_count = 0
        self._data_path = data_path
        self._max_bytes_per_file = max_bytes_per_file
        self._max_record = max_msg_size + MESSAGE_HEADER_SIZE
        self._sync_every = max(1, sync_every)
        self._sync_timeout = sync_timeout
        self._clock = clock
        self._sync_runner = sync_runner
        self._on_error = on_error
        self._keep = keep_until_done
        self._prefix = os.path.join(data_path, name + ".diskqueue.")
        self._meta_path = self._prefix + "meta.dat"
        self._file_re = re.compile(re.escape(name) + r"\.diskqueue\.(\d{6,})\.dat")

        # Positions, as go-diskqueue keeps them; _wpos counts buffered bytes too.
        self._depth = 0
        self._rfn = 0
        self._rpos = 0
        self._wfn = 0
        self._wpos = 0
        # Writing: the open file and the bytes not yet handed to the OS (they end at _wpos).
        self._wfd: int | None = None
        # put() appends without further checks while the new write position stays within this
        # (-1 whenever the write file is not open): the file size and the buffer threshold.
        self._put_limit = -1
        self._wbuf = bytearray()
        # Files the writer left, open until a sync has fsynced them.
        self._handoff: list[int] = []
        # Reading: bytes of the read file from _rpos on (from _coff in _chunk), the open file,
        # and where a completed read file ends (-1 while it is the write file or not yet known).
        self._chunk = b""
        self._coff = 0
        self._rfd: int | None = None
        self._read_end = -1
        # While the reader is caught up with the writer, put() also queues each record's fields
        # here, so read() rebuilds the message without parsing bytes; it holds only records
        # still in the write buffer (cleared when the buffer is written), so it stays small.
        self._direct = False
        self._pending: deque[tuple[bytes, bytes, int, int]] = deque()
        # keep_until_done: every message read and not yet done, oldest first, and read files
        # that must stay until the oldest of those has left them.
        self._unfinished: deque[_Ref] = deque()
        self._retained: deque[int] = deque()
        # Retained files that could not be read to the end: renamed .bad once released.
        self._bad_retained: set[int] = set()
        self._token = object()

        self._closed = False
        self._failing = False
        self._ops = 0
        self._timer: IDelayedCall | None = None
        self._flush_call: IDelayedCall | None = None
        self._sync_running = False
        self._sync_again = False
        self._again_metadata = False
        self._next_waiters: list[Deferred[None]] = []
        # What is not yet durable: bytes written to the write file since its last fsync, and
        # a data file created since the directory's last fsync (its name must be durable
        # before its records are acknowledged).
        self._data_dirty = False
        self._dir_dirty = False
        # The metadata text the file holds (None: unknown or absent), and the metadata write
        # running in sync_runner, if any.
        self._durable_meta: bytes | None = None
        self._meta_running = False
        self._meta_again = False
        # Set when writing moved to a file number that a restart from the metadata file would
        # not find (after empty() or a tail-corruption skip; the last metadata written before
        # then has this generation or older): until a newer metadata write is done, a sync
        # waits for the metadata as well. Waiters for the next metadata write.
        self._meta_break_gen = -1
        self._meta_waiters: list[Deferred[None]] = []
        # Metadata writes carry a generation; an older one never replaces a newer one, and
        # empty()/delete() retire the ones still in flight.
        self._meta_lock = threading.Lock()
        self._meta_gen = 0
        self._meta_done_gen = 0

        loaded = self._load_metadata()
        self._check_write_file()
        self._check_tail()
        if loaded is not None and self._metadata() == loaded:
            self._durable_meta = loaded

    # -- public API ---------------------------------------------------------------------------

    def put(self, message: Message) -> None:
        """Append a message; raise L{BackendError} when it cannot be stored."""
        body = message.body
        size = MESSAGE_HEADER_SIZE + len(body)
        buf = self._wbuf
        if self._wpos + size + 4 > self._put_limit or size > self._max_record or len(message.id) != 16:
            self._prepare_put(size, message.id)
        attempts = message.attempts & 0xFFFF
        buf += _RECORD_HEAD_ID.pack(size, message.timestamp, attempts, message.id)
        buf += body
        if self._direct:
            self._pending.append((message.id, body, message.timestamp, attempts))
        self._wpos += size + 4
        self._depth += 1
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush_soon)
        ops = self._ops + 1
        if ops >= self._sync_every:
            self._request_sync()
        else:
            self._ops = ops
            if self._timer is None:
                self._timer = self._clock.callLater(self._sync_timeout, self._timer_fired)

    def read(self) -> Message | None:
        """Take the next message (attempts as stored), or None when nothing is left."""
        if self._direct:
            if not self._pending:
                return None
            message_id, body, timestamp, attempts = self._pending.popleft()
            message = Message(message_id, body, timestamp, attempts)
            if self._keep:
                ref = _Ref(self._token, self._rfn, self._rpos)
                self._unfinished.append(ref)
                message.ref = ref
            self._rpos += _BODY_START + len(body)
            self._depth -= 1
            ops = self._ops + 1
            if ops >= self._sync_every:
                self._request_sync()
            else:
                self._ops = ops
                if self._timer is None:
                    self._timer = self._clock.callLater(self._sync_timeout, self._timer_fired)
            return message
        chunk = self._chunk
        off = self._coff
        if len(chunk) - off < _BODY_START and off == len(chunk) and self._rfn == self._wfn:
            # Caught up with the disk: the next records, if any, are still in the write buffer.
            wbuf = self._wbuf
            start = self._rpos - self._wpos + len(wbuf)
            if 0 <= start < len(wbuf):
                chunk = self._chunk = bytes(wbuf[start:])
                off = self._coff = 0
        if len(chunk) - off >= _BODY_START:
            size, timestamp, attempts = _RECORD_HEAD.unpack_from(chunk, off)
            end = off + 4 + size
            if end <= len(chunk) and MESSAGE_HEADER_SIZE <= size <= self._max_record:
                message = Message(
                    chunk[off + _ID_START : off + _BODY_START],
                    chunk[off + _BODY_START : end],
                    timestamp,
                    attempts,
                )
                self._coff = end
                if self._keep:
                    ref = _Ref(self._token, self._rfn, self._rpos)
                    self._unfinished.append(ref)
                    message.ref = ref
                pos = self._rpos = self._rpos + 4 + size
                self._depth -= 1
                ops = self._ops + 1
                if ops >= self._sync_every:
                    self._request_sync()
                else:
                    self._ops = ops
                    if self._timer is None:
                        self._timer = self._clock.callLater(self._sync_timeout, self._timer_fired)
                if 0 <= self._read_end <= pos:
                    self._next_read_file()
                elif pos == self._wpos and self._rfn == self._wfn:
                    self._caught_up()
                return message
        return self._read_slow()

    def done(self, message: Message) -> None:
        """
        A message from ``read()`` has left the queue for good. Only ``keep_until_done`` queues
        care: once every older message is done, the metadata may move past it.
        """
        ref = message.ref
        if type(ref) is not _Ref or ref.token is not self._token:
            return
        ref.done = True
        queue = self._unfinished
        if queue and queue[0].done:
            while queue and queue[0].done:
                queue.popleft()
            if self._retained:
                self._release_retained()
            self._ops += 1
            if self._timer is None and not self._closed:
                self._timer = self._clock.callLater(self._sync_timeout, self._timer_fired)

    def depth(self) -> int:
        """How many messages are queued (go-diskqueue's count; never below zero)."""
        return self._depth if self._depth > 0 else 0

    def empty(self) -> None:
        """Drop everything (Go's Empty): the files from read to write and the metadata go."""
        if self._closed:
            return
        log.info("DISKQUEUE({queue}): emptying", queue=self.name)
        self._skip_to_next_rw_file()
        self._forget_metadata()
        self._ops = 0

    def delete(self) -> None:
        """Close without syncing and remove this queue's data files and metadata (not ``.bad`` files)."""
        log.info("DISKQUEUE({queue}): deleting", queue=self.name)
        self._stop()
        self._close_write_files()
        self._wbuf.clear()
        self._depth = 0
        self._unfinished.clear()
        self._retained.clear()
        self._bad_retained.clear()
        self._token = object()
        self._forget_metadata()
        self._remove_files(None)
        self._fire_next_waiters(None)

    def close(self) -> None:
        """
        Flush, fsync and write the metadata (clean shutdown), all before returning, or, inside
        L{batched_close}, before that block ends. What is already durable is not redone: a
        queue whose data was fsynced and whose metadata file already says where it stands
        costs no fsync at all.
        """
        if self._closed:
            return
        log.info("DISKQUEUE({queue}): closing", queue=self.name)
        # A sync or metadata write still running may not have finished: do its work again.
        in_flight = self._sync_running
        meta_in_flight = self._meta_running
        self._stop()
        error: OSError | None = None
        try:
            self._flush_raw()
        except OSError as e:
            error = e
        fsync_data = self._data_dirty or in_flight or bool(self._handoff)
        fds = self._open_write_fds()
        self._wfd = None
        self._put_limit = -1
        self._handoff = []
        metadata: bytes | None = self._metadata()
        if metadata == self._durable_meta and not meta_in_flight:
            metadata = None
        else:
            self._meta_gen += 1
        job = _CloseJob(self, fds, fsync_data, self._dir_dirty or in_flight, metadata, self._meta_gen, error)
        if _batch is not None and job.needs_work():
            _batch.append(job)
        else:
            job.run(sync_dir=True)
            job.finish()

    def _closed_durably(self, error: OSError | None, metadata: bytes | None) -> None:
        """The end of close(): report how it went."""
        if error is not None:
            log.error("DISKQUEUE({queue}) failed to sync - {error}", queue=self.name, error=error)
            self._failing = True
            self._on_error(str(error))
            self._fire_next_waiters(BackendError(str(error)))
            return
        self._data_dirty = False
        self._dir_dirty = False
        if metadata is not None:
            self._durable_meta = metadata
        self._fire_next_waiters(None)

    def flush(self) -> None:
        """Hand buffered records to the OS now (no fsync); a failure goes to ``on_error``."""
        if self._wbuf and not self._closed:
            try:
                self._flush_raw()
            except OSError as e:
                self._write_failed(e)

    def sync(self) -> Deferred[None]:
        """
        Flush and fsync the data through ``sync_runner`` (and the directory, if a data file was
        created since it was last fsynced). Fires when that is done (fails with
        L{BackendError}); while one sync runs, requests share the next one.

        The metadata is not written for this: it follows Go's schedule (every ``sync_every``
        operations, every ``sync_timeout``, on roll, at close). Records past its write position
        are found again at startup (see ``_check_write_file``), so what this made durable
        survives a crash without it.
        """
        d: Deferred[None] = Deferred()
        if self._closed:
            d.callback(None)
        else:
            self._request_sync(d, metadata=False)
        return d

    # -- writing ------------------------------------------------------------------------------

    def _prepare_put(self, size: int, message_id: bytes) -> None:
        """The slow part of put(): refuse, retry failed writes, roll, open the write file."""
        if self._closed:
            raise BackendError("exiting")
        if size > self._max_record:
            raise BackendError(
                f"invalid message write size ({size}) minMsgSize={MESSAGE_HEADER_SIZE} "
                f"maxMsgSize={self._max_record}"
            )
        if len(message_id) != MSG_ID_LENGTH:
            raise BackendError(f"invalid message ID length ({len(message_id)})")
        try:
            if self._wbuf and (
                self._wfd is None or self._failing or len(self._wbuf) + size + 4 > FLUSH_THRESHOLD
            ):
                self._flush_raw()
            if self._wpos > 0 and self._wpos + size + 4 > self._max_bytes_per_file:
                self._roll()
            if self._wfd is None:
                self._open_write_file()
        except OSError as e:
            self._write_failed(e)
            raise BackendError(str(e)) from e
        # Until the write file changes, put() may append up to here without coming back.
        self._put_limit = min(self._max_bytes_per_file, self._wpos - len(self._wbuf) + FLUSH_THRESHOLD)

    def _roll(self) -> None:
        """Move writing to the next file number (the old one is fsynced by the sync this asks for)."""
        self._flush_raw()
        self._direct = False
        if self._rfn == self._wfn:
            self._read_end = self._wpos
        if self._wfd is not None:
            self._handoff.append(self._wfd)
            self._wfd = None
            self._put_limit = -1
        self._wfn += 1
        self._wpos = 0
        self._request_sync()

    def _open_write_file(self) -> None:
        """Open the write file at the flushed position; never start writing over existing data."""
        while True:
            path = self._file_name(self._wfn)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            flushed = self._wpos - len(self._wbuf)
            try:
                if flushed == 0 and not self._wbuf:
                    size = os.fstat(fd).st_size
                    if size > 0:
                        log.warn(
                            "DISKQUEUE({queue}) {file} already holds {size} bytes, skipping to a new file",
                            queue=self.name,
                            file=path,
                            size=size,
                        )
                        _close_quietly(fd)
                        self._wfn += 1
                        # The reader has that file to read before it meets the writer again.
                        self._direct = False
                        continue
                elif flushed > 0:
                    os.lseek(fd, flushed, os.SEEK_SET)
                if flushed == 0:
                    # Probably created just now: its name must reach the disk before its records count.
                    self._dir_dirty = True
            except BaseException:
                _close_quietly(fd)
                raise
            self._wfd = fd
            return

    def _flush_raw(self) -> None:
        """Write the whole buffer to the write file; on error keep what was not written."""
        buf = self._wbuf
        if not buf:
            return
        if self._wfd is None:
            self._open_write_file()
        fd = self._wfd
        assert fd is not None
        self._data_dirty = True
        try:
            while buf:
                written = os.write(fd, buf)
                # Dropping a bytearray's head is O(1) in CPython.
                del buf[:written]
                if self._pending:
                    # Written out: the reader takes these from the file instead.
                    self._pending.clear()
                    self._direct = False
        except OSError:
            # As Go does: forget the file; the next write reopens it at the flushed position.
            self._wfd = None
            self._put_limit = -1
            _close_quietly(fd)
            raise
        if self._failing:
            self._recovered()

    def _flush_soon(self) -> None:
        self._flush_call = None
        self.flush()

    def _write_failed(self, error: OSError) -> None:
        self._failing = True
        log.error("DISKQUEUE({queue}) failed to write - {error}", queue=self.name, error=error)
        self._on_error(str(error))

    def _recovered(self) -> None:
        self._failing = False
        log.info("DISKQUEUE({queue}) writing again", queue=self.name)
        self._on_error(None)

    # -- reading ------------------------------------------------------------------------------

    def _read_slow(self) -> Message | None:
        """read() when the next record is not whole in the chunk: open, refill, roll, recover."""
        while not self._closed:
            if self._rfn == self._wfn:
                if self._rpos >= self._wpos:
                    if self._rpos > self._wpos:
                        self._check_tail()
                    else:
                        self._caught_up()
                    return None
            elif self._rfn > self._wfn:
                self._check_tail()
                return None
            else:
                if self._read_end < 0 and not self._open_completed_file():
                    continue
                if self._rpos >= self._read_end:
                    if self._rpos > self._read_end:
                        self._read_error(f"read position beyond the end of the file ({self._read_end})")
                    else:
                        self._next_read_file()
                    continue
            if len(self._chunk) - self._coff < 4 and not self._fill(4):
                continue
            (size,) = _SIZE.unpack_from(self._chunk, self._coff)
            if size < MESSAGE_HEADER_SIZE or size > self._max_record:
                self._read_error(f"invalid message read size ({size})")
                continue
            if len(self._chunk) - self._coff < 4 + size and not self._fill(4 + size):
                continue
            return self.read()
        return None

    def _fill(self, need: int) -> bool:
        """
        Make at least ``need`` bytes from the read position available in the chunk, from the
        file and, for the write file, from the write buffer. False after a read error.
        """
        leftover = self._chunk[self._coff :]
        parts = [leftover]
        start = self._rpos + len(leftover)
        missing = need - len(leftover)
        try:
            if self._rfn == self._wfn:
                flushed = self._wpos - len(self._wbuf)
                if start < flushed:
                    data = self._pread(max(missing, READ_CHUNK), start, flushed)
                    parts.extend(data)
                    got = sum(len(d) for d in data)
                    start += got
                    missing -= got
                if missing > 0 and start >= flushed:
                    taken = bytes(self._wbuf[start - flushed :])
                    parts.append(taken)
                    missing -= len(taken)
            else:
                data = self._pread(max(missing, READ_CHUNK), start, self._read_end)
                parts.extend(data)
                missing -= sum(len(d) for d in data)
        except OSError as e:
            self._read_error(str(e))
            return False
        self._chunk = b"".join(parts)
        self._coff = 0
        if missing > 0:
            self._read_error(f"short read: wanted {need} bytes, {len(self._chunk)} left in the file")
            return False
        return True

    def _pread(self, want: int, start: int, limit: int) -> list[bytes]:
        """Read up to ``want`` bytes of the read file from ``start``, never past ``limit``."""
        fd = self._rfd
        if fd is None:
            fd = self._rfd = os.open(self._file_name(self._rfn), os.O_RDONLY)
        want = min(want, limit - start)
        parts = []
        while want > 0:
            data = os.pread(fd, want, start)
            if not data:
                break
            parts.append(data)
            start += len(data)
            want -= len(data)
        return parts

    def _open_completed_file(self) -> bool:
        """Open a file the writer has left and learn where it ends; False if it could not be."""
        path = self._file_name(self._rfn)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            following = self._next_existing_file(self._rfn)
            log.error(
                "DISKQUEUE({queue}) {file} is missing, skipping to file {following}",
                queue=self.name,
                file=path,
                following=following,
            )
            self._move_read_to(following)
            self._request_sync()
            self._check_tail()
            return False
        except OSError as e:
            self._read_error(str(e))
            return False
        self._close_read_file()
        self._rfd = fd
        try:
            self._read_end = os.fstat(fd).st_size
        except OSError as e:
            self._read_error(str(e))
            return False
        return True

    def _next_read_file(self) -> None:
        """The read file is consumed: delete it (or keep it for unfinished messages), go on."""
        old = self._rfn
        self._move_read_to(old + 1)
        if self._unfinished and self._unfinished[0].file_num <= old:
            self._retained.append(old)
        else:
            self._remove_file(old)
        self._request_sync()
        self._check_tail()

    def _caught_up(self) -> None:
        """The reader is at the write position: fix depth if it disagrees, read directly from now on."""
        if self._depth != 0:
            self._check_tail()
        self._chunk = b""
        self._coff = 0
        self._direct = True

    def _move_read_to(self, file_num: int) -> None:
        self._direct = False
        self._pending.clear()
        self._close_read_file()
        self._rfn = file_num
        self._rpos = 0
        self._read_end = -1
        self._chunk = b""
        self._coff = 0

    def _close_read_file(self) -> None:
        if self._rfd is not None:
            _close_quietly(self._rfd)
            self._rfd = None

    def _read_error(self, reason: str) -> None:
        """Go's handleReadError: save the read file as ``.bad`` and go on with the next one."""
        path = self._file_name(self._rfn)
        log.error(
            "DISKQUEUE({queue}) reading at {pos} of {file} - {reason}",
            queue=self.name,
            pos=self._rpos,
            file=path,
            reason=reason,
        )
        if self._rfn == self._wfn:
            # The write file is unreadable, so it is abandoned too; what is buffered for it
            # goes into it first, as Go would already have written it there.
            try:
                self._flush_raw()
            except OSError as e:
                log.error(
                    "DISKQUEUE({queue}) failed to write to bad file {file} - {error}",
                    queue=self.name,
                    file=path,
                    error=e,
                )
            self._wbuf.clear()
            if self._wfd is not None:
                self._handoff.append(self._wfd)
                self._wfd = None
                self._put_limit = -1
            self._wfn += 1
            self._wpos = 0
        bad = path + ".bad"
        if self._unfinished and self._unfinished[0].file_num <= self._rfn:
            # Messages read from this file are not finished, and the metadata may point into
            # it: after a crash they are read from here again (typically a torn tail after an
            # earlier crash). It becomes .bad when they are finished.
            self._retained.append(self._rfn)
            self._bad_retained.add(self._rfn)
            self.bad_file_count += 1
            log.warn(
                "DISKQUEUE({queue}) jump to next file, saving bad file as {bad} once its messages "
                "are finished",
                queue=self.name,
                bad=bad,
            )
        else:
            self._set_aside(self._rfn)
        self._move_read_to(self._rfn + 1)
        self._request_sync()
        self._check_tail()

    def _check_tail(self) -> None:
        """Go's checkTailCorruption: at the writer's position depth must be 0 and the positions equal."""
        if self._rfn < self._wfn or (self._rfn == self._wfn and self._rpos < self._wpos):
            return
        if self._depth != 0:
            if self._depth < 0:
                log.error(
                    "DISKQUEUE({queue}) negative depth at tail ({depth}), metadata corruption, "
                    "resetting 0...",
                    queue=self.name,
                    depth=self._depth,
                )
            else:
                log.error(
                    "DISKQUEUE({queue}) positive depth at tail ({depth}), data loss, resetting 0...",
                    queue=self.name,
                    depth=self._depth,
                )
            self._depth = 0
            self._request_sync()
        if self._rfn != self._wfn or self._rpos != self._wpos:
            log.error(
                "DISKQUEUE({queue}) read position {rfn},{rpos} is past write position {wfn},{wpos}, "
                "corruption, skipping to next writeFileNum and resetting 0...",
                queue=self.name,
                rfn=self._rfn,
                rpos=self._rpos,
                wfn=self._wfn,
                wpos=self._wpos,
            )
            self._skip_to_next_rw_file()
            self._request_sync()

    def _release_retained(self) -> None:
        """Delete retained files that the oldest unfinished message has left behind."""
        head = self._unfinished[0].file_num if self._unfinished else self._rfn
        retained = self._retained
        while retained and retained[0] < head:
            file_num = retained.popleft()
            if file_num in self._bad_retained:
                self._bad_retained.discard(file_num)
                self._set_aside(file_num, counted=True)
            else:
                self._remove_file(file_num)

    def _set_aside(self, file_num: int, counted: bool = False) -> None:
        """Rename a data file that could not be read ``.bad`` (Go's handleReadError)."""
        path = self._file_name(file_num)
        bad = path + ".bad"
        try:
            os.rename(path, bad)
        except OSError as e:
            log.error(
                "DISKQUEUE({queue}) failed to rename bad diskqueue file {file} to {bad} - {error}",
                queue=self.name,
                file=path,
                bad=bad,
                error=e,
            )
        else:
            if not counted:
                self.bad_file_count += 1
                log.warn(
                    "DISKQUEUE({queue}) jump to next file and saving bad file as {bad}",
                    queue=self.name,
                    bad=bad,
                )

    # -- syncing ------------------------------------------------------------------------------

    def _timer_fired(self) -> None:
        self._timer = None
        if self._ops > 0 and not self._closed:
            self._request_sync()

    def _request_sync(self, waiter: Deferred[None] | None = None, metadata: bool = True) -> None:
        """
        Fsync the data now, or right after the data sync that is running; with ``metadata``
        (Go's syncs: every ``sync_every`` operations, the timer, a roll, a read error), write
        the metadata after that fsync too. ``waiter`` fires once the data is fsynced; it never
        waits for the metadata.
        """
        if metadata:
            self._ops = 0
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if self._closed:
            if waiter is not None:
                waiter.callback(None)
            return
        if self._sync_running:
            self._sync_again = True
            self._again_metadata = self._again_metadata or metadata
            if waiter is not None:
                self._next_waiters.append(waiter)
            return
        self._start_sync([] if waiter is None else [waiter], metadata)

    def _start_sync(self, waiters: list[Deferred[None]], metadata: bool) -> None:
        fds: list[int] = []
        try:
            self._flush_raw()
            if self._wfd is not None and self._data_dirty:
                # A duplicate, so that the reactor may close or replace the write file meanwhile.
                fds.append(os.dup(self._wfd))
        except OSError as e:
            self._write_failed(e)
            for waiter in waiters:
                waiter.errback(BackendError(str(e)))
            return
        fds.extend(self._handoff)
        self._handoff = []
        sync_dir = self._dir_dirty
        self._data_dirty = False
        self._dir_dirty = False
        # Records written since writing moved out of the metadata's sight (see _sync_done).
        unfound = self._meta_break_gen >= 0
        if not fds and not sync_dir:
            # Everything written is fsynced already (or being fsynced by the sync that just
            # ended): no thread round trip.
            self._sync_done(None, waiters, fds, metadata, sync_dir, unfound)
            return
        self._sync_running = True
        d = maybeDeferred(self._sync_runner, partial(self._fsync_work, fds, sync_dir))
        d.addBoth(self._sync_done, waiters, fds, metadata, sync_dir, unfound)
        d.addErrback(_log_unexpected)

    def _fsync_work(self, fds: list[int], sync_dir: bool) -> None:
        """What runs in ``sync_runner`` (a thread in production): fsync and close, then the directory."""
        error: OSError | None = None
        while fds:
            fd = fds.pop()
            try:
                if error is None:
                    os.fsync(fd)
            except OSError as e:
                error = e
            finally:
                _close_quietly(fd)
        if error is not None:
            raise error
        if sync_dir:
            fsync_directory(self._data_path)

    def _sync_done(
        self,
        result: object,
        waiters: list[Deferred[None]],
        fds: list[int],
        metadata: bool,
        sync_dir: bool,
        unfound: bool,
    ) -> None:
        self._sync_running = False
        # Left over only if the runner failed before running the work.
        while fds:
            _close_quietly(fds.pop())
        if isinstance(result, Failure):
            # What this sync was to make durable may not be: the next one tries again.
            self._data_dirty = True
            self._dir_dirty = self._dir_dirty or sync_dir
            self._sync_failed(str(result.value))
            for waiter in waiters:
                waiter.errback(BackendError(str(result.value)))
        else:
            if self._failing and not self._wbuf:
                self._recovered()
            if unfound and self._meta_break_gen >= 0 and waiters:
                # A restart would not find the write file from the metadata on disk: what
                # this sync made durable counts only once the metadata names it.
                self._start_metadata(waiters)
            else:
                for waiter in waiters:
                    waiter.callback(None)
                if metadata:
                    self._start_metadata()
        if self._sync_again and not self._closed:
            self._sync_again = False
            again_metadata, self._again_metadata = self._again_metadata, False
            waiters, self._next_waiters = self._next_waiters, []
            self._start_sync(waiters, again_metadata)

    def _sync_failed(self, text: str) -> None:
        log.error("DISKQUEUE({queue}) failed to sync - {error}", queue=self.name, error=text)
        self._failing = True
        self._on_error(text)

    def _start_metadata(self, waiters: list[Deferred[None]] | None = None) -> None:
        """
        Write the metadata through ``sync_runner``, unless it is what the file already holds;
        one write at a time, and the requests made meanwhile share the next one. ``waiters``
        fire once it is written.
        """
        if self._closed:
            for waiter in waiters or ():
                waiter.callback(None)
            return
        if self._meta_running:
            self._meta_again = True
            self._meta_waiters.extend(waiters or ())
            return
        try:
            # The metadata may name records written after the data fsync; that is safe, as a
            # restart salvages whatever is in the files (see _check_write_file).
            self._flush_raw()
        except OSError as e:
            self._write_failed(e)
        metadata = self._metadata()
        if metadata == self._durable_meta:
            # The file already says where the queue stands.
            self._meta_break_gen = -1
            for waiter in waiters or ():
                waiter.callback(None)
            return
        self._meta_gen += 1
        generation = self._meta_gen
        self._meta_running = True
        d = maybeDeferred(self._sync_runner, partial(self._write_metadata, metadata, generation))
        d.addBoth(self._metadata_done, metadata, generation, waiters or [])
        d.addErrback(_log_unexpected)

    def _metadata_done(
        self, result: object, metadata: bytes, generation: int, waiters: list[Deferred[None]]
    ) -> None:
        self._meta_running = False
        if isinstance(result, Failure):
            self._sync_failed(str(result.value))
            for waiter in waiters:
                waiter.errback(BackendError(str(result.value)))
        else:
            if self._meta_done_gen == generation:
                self._durable_meta = metadata
                if generation > self._meta_break_gen:
                    self._meta_break_gen = -1
                if self._failing and not self._wbuf:
                    self._recovered()
            for waiter in waiters:
                waiter.callback(None)
        if self._meta_again and not self._closed:
            self._meta_again = False
            waiters, self._meta_waiters = self._meta_waiters, []
            self._start_metadata(waiters)

    def _fire_next_waiters(self, error: Exception | None) -> None:
        waiters, self._next_waiters = self._next_waiters + self._meta_waiters, []
        self._meta_waiters = []
        self._sync_again = False
        for waiter in waiters:
            if error is None:
                waiter.callback(None)
            else:
                waiter.errback(error)

    # -- metadata -----------------------------------------------------------------------------

    def _metadata(self) -> bytes:
        """The metadata text for the current state (what a restart should resume from)."""
        unfinished = self._unfinished
        if unfinished:
            head = unfinished[0]
            return b"%d\n%d,%d\n%d,%d\n" % (
                self._depth + len(unfinished),
                head.file_num,
                head.pos,
                self._wfn,
                self._wpos,
            )
        return b"%d\n%d,%d\n%d,%d\n" % (self._depth, self._rfn, self._rpos, self._wfn, self._wpos)

    def _write_metadata(self, metadata: bytes, generation: int, sync_dir: bool = True) -> None:
        """
        Replace the metadata file atomically (tmp, fsync, rename, and with ``sync_dir`` fsync
        the directory, which also makes new data files' names durable).
        """
        with self._meta_lock:
            if generation <= self._meta_done_gen:
                return
            replace_file(self._meta_path, metadata)
            self._meta_done_gen = generation
            if sync_dir:
                fsync_directory(self._data_path)

    def _forget_metadata(self) -> None:
        """Remove the metadata file and retire the metadata writes still in flight."""
        with self._meta_lock:
            # Above every generation handed out, so none of them counts as written.
            self._meta_gen += 1
            self._meta_done_gen = self._meta_gen
            self._durable_meta = None
            try:
                os.unlink(self._meta_path)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.error(
                    "DISKQUEUE({queue}) failed to remove metadata file - {error}", queue=self.name, error=e
                )

    def _load_metadata(self) -> bytes | None:
        """
        Resume from the metadata file; a missing one means a new queue, a broken one is set
        aside. Returns the text it resumed from.
        """
        try:
            with open(self._meta_path, "rb") as f:
                text = f.read(4096)
        except FileNotFoundError:
            return None
        except OSError as e:
            log.error("DISKQUEUE({queue}) failed to retrieveMetaData - {error}", queue=self.name, error=e)
            return None
        match = _META_RE.match(text)
        if match is None:
            bad = self._meta_path + ".bad"
            log.error(
                "DISKQUEUE({queue}) failed to retrieveMetaData - unparsable {text!r}, saved as {bad}",
                queue=self.name,
                text=text[:200],
                bad=bad,
            )
            try:
                os.rename(self._meta_path, bad)
            except OSError as e:
                log.error(
                    "DISKQUEUE({queue}) failed to rename {bad} - {error}", queue=self.name, bad=bad, error=e
                )
            return None
        self._depth, self._rfn, self._rpos, self._wfn, self._wpos = map(int, match.groups())
        return text

    def _check_write_file(self) -> None:
        """
        At startup: if the write file is not exactly ``writePos`` bytes long, or the next file
        already holds data (the metadata is older than the data: a crash after a roll), write
        from a fresh file number after them and let the reader salvage them in order.
        """
        while True:
            size = self._file_size(self._wfn)
            if size == self._wpos or (size < 0 and self._wpos == 0):
                following = self._file_size(self._wfn + 1)
                if following <= 0:
                    return
                log.warn(
                    "DISKQUEUE({queue}) {file} already holds {size} bytes beyond the metadata, "
                    "skipping to new file",
                    queue=self.name,
                    file=self._file_name(self._wfn + 1),
                    size=following,
                )
            else:
                log.warn(
                    "DISKQUEUE({queue}) {file} metadata writePos {pos} != file size of {size}, "
                    "skipping to new file",
                    queue=self.name,
                    file=self._file_name(self._wfn),
                    pos=self._wpos,
                    size=size,
                )
            self._wfn += 1
            self._wpos = 0
            # The metadata predates data that did reach the files (a crash between syncs):
            # its depth undercounts, so count what the reader will salvage.
            self._depth = self._count_unread()

    def _count_unread(self) -> int:
        """Records from the read position to the end of the files before the write file."""
        count = 0
        file_num, pos = self._rfn, self._rpos
        while file_num < self._wfn:
            try:
                with open(self._file_name(file_num), "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                file_num, pos = file_num + 1, 0
                continue
            except OSError:
                break
            while pos + 4 <= len(data):
                (size,) = _SIZE.unpack_from(data, pos)
                if not MESSAGE_HEADER_SIZE <= size <= self._max_record or pos + 4 + size > len(data):
                    break
                count += 1
                pos += 4 + size
            file_num, pos = file_num + 1, 0
        return count

    def _file_size(self, file_num: int) -> int:
        """The size of a data file, or -1 if it does not exist (or cannot be looked at)."""
        try:
            return os.stat(self._file_name(file_num)).st_size
        except OSError:
            return -1

    # -- files --------------------------------------------------------------------------------

    def _file_name(self, file_num: int) -> str:
        return f"{self._prefix}{file_num:06d}.dat"

    def _skip_to_next_rw_file(self) -> None:
        """Drop every file from read to write and start both at a fresh file number."""
        self._close_read_file()
        self._close_write_files()
        self._wbuf.clear()
        low = min(self._retained[0], self._rfn) if self._retained else self._rfn
        self._remove_files((low, self._wfn))
        fresh = max(self._rfn, self._wfn) + 1
        self._wfn = fresh
        # Beyond what the start-up salvage searches from the old metadata (or from none).
        self._meta_break_gen = self._meta_gen
        self._wpos = 0
        self._move_read_to(fresh)
        self._depth = 0
        self._unfinished.clear()
        self._retained.clear()
        self._bad_retained.clear()
        self._token = object()

    def _remove_file(self, file_num: int) -> None:
        path = self._file_name(file_num)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.error(
                "DISKQUEUE({queue}) failed to Remove({file}) - {error}", queue=self.name, file=path, error=e
            )

    def _remove_files(self, span: tuple[int, int] | None) -> None:
        """Remove the data files numbered within ``span`` (inclusive), or all of them for None."""
        if span is not None and span[1] - span[0] <= _COUNTED_RANGE:
            for file_num in range(span[0], span[1] + 1):
                self._remove_file(file_num)
            return
        for file_num in self._existing_files():
            if span is None or span[0] <= file_num <= span[1]:
                self._remove_file(file_num)

    def _existing_files(self) -> Iterable[int]:
        try:
            names = os.listdir(self._data_path or ".")
        except OSError:
            return []
        matches = (self._file_re.fullmatch(name) for name in names)
        return sorted(int(m.group(1)) for m in matches if m is not None)

    def _next_existing_file(self, after: int) -> int:
        """The first data file after ``after``, up to the write file (so gaps cost one step)."""
        for file_num in self._existing_files():
            if after < file_num <= self._wfn:
                return file_num
        return self._wfn

    def _open_write_fds(self) -> list[int]:
        fds = list(self._handoff)
        if self._wfd is not None:
            fds.append(self._wfd)
        return fds

    def _close_write_files(self) -> None:
        for fd in self._open_write_fds():
            _close_quietly(fd)
        self._wfd = None
        self._put_limit = -1
        self._handoff = []

    def _stop(self) -> None:
        """No more reads, writes or timers."""
        self._closed = True
        self._put_limit = -1
        self._direct = False
        self._pending.clear()
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        self._close_read_file()
        self._chunk = b""
        self._coff = 0


class _CloseJob:
    """What closing one queue leaves to do: fsync its write files, write its metadata."""

    __slots__ = ("error", "fds", "fsync_data", "generation", "metadata", "queue", "sync_dir")

    def __init__(
        self,
        queue: DiskQueue,
        fds: list[int],
        fsync_data: bool,
        sync_dir: bool,
        metadata: bytes | None,
        generation: int,
        error: OSError | None,
    ) -> None:
        self.queue = queue
        self.fds = fds
        self.fsync_data = fsync_data
        self.sync_dir = sync_dir
        self.metadata = metadata
        self.generation = generation
        self.error = error

    def needs_work(self) -> bool:
        return self.error is None and (self.fsync_data or self.sync_dir or self.metadata is not None)

    def run(self, sync_dir: bool) -> None:
        """
        The blocking part (any thread): fsync and close the files, replace the metadata, and
        with ``sync_dir`` fsync the directory if a file was created or renamed; else the
        caller does that.
        """
        fds, self.fds = self.fds, []
        for fd in fds:
            try:
                if self.error is None and self.fsync_data:
                    os.fsync(fd)
            except OSError as e:
                self.error = e
            finally:
                _close_quietly(fd)
        if self.error is not None:
            return
        try:
            if self.metadata is not None:
                self.queue._write_metadata(self.metadata, self.generation, sync_dir=sync_dir)
            elif sync_dir and self.sync_dir:
                fsync_directory(self.queue._data_path)
        except OSError as e:
            self.error = e

    def dir_to_sync(self) -> str | None:
        """The directory the caller of ``run(sync_dir=False)`` must still fsync, if any."""
        if self.error is None and (self.sync_dir or self.metadata is not None):
            return self.queue._data_path
        return None

    def finish(self) -> None:
        """Report the outcome (reactor thread)."""
        self.queue._closed_durably(self.error, self.metadata)


#: The batch the queues closed now add their work to (reactor thread only), or None.
_batch: list[_CloseJob] | None = None
#: Threads that fsync in parallel at a batched close, so the file system can commit many
#: fsyncs at once (ext4 and XFS group concurrent fsyncs into one journal commit).
CLOSE_THREADS = 32


@contextmanager
def batched_close(threads: int = CLOSE_THREADS) -> Iterator[None]:
    """
    Close many queues at once: the queues closed inside the block leave their fsyncs and
    metadata writes until it ends, when they run on ``threads`` threads with one fsync per
    data directory at the end, instead of one after the other. When the block ends, every
    such queue is as ``close()`` alone leaves it (nsqd's shutdown closes every queue this way).
    """
    global _batch
    if _batch is not None:
        # Nested: the outer block does the work.
        yield
        return
    jobs: list[_CloseJob] = []
    _batch = jobs
    try:
        yield
    finally:
        _batch = None
        _run_close_jobs(jobs, threads)


def _run_close_jobs(jobs: list[_CloseJob], threads: int) -> None:
    if not jobs:
        return
    if threads > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(jobs))) as pool:
            for _ in pool.map(lambda job: job.run(sync_dir=False), jobs):
                pass
    else:
        for job in jobs:
            job.run(sync_dir=False)
    # The renames and new files of every queue in a directory become durable together.
    dir_errors: dict[str, OSError | None] = {}
    for job in jobs:
        path = job.dir_to_sync()
        if path is None:
            continue
        if path not in dir_errors:
            try:
                fsync_directory(path)
                dir_errors[path] = None
            except OSError as e:
                dir_errors[path] = e
        job.error = dir_errors[path]
    for job in jobs:
        job.finish()


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
