"""
The files of C{nsq_to_file}: one per topic, newline-delimited bodies, rotated by size, by
interval and when the datetime in the name changes, and messages answered only once their bytes
are on disk.

L{OutputFile} owns the file itself and blocks (open, write and fsync, close and move).
L{FileLogger} runs on the reactor: it holds the messages of the batch being collected, decides when
to sync and rotate from an injected clock, and queues the file operations one after another, the
heavy ones (write, fsync) through an injected runner such as a thread pool. A message is finished
(FIN) only after the batch holding it was written and fsynced, so that whatever nsqd forgot is on
disk (at-least-once).
"""

from __future__ import annotations

import datetime
import errno
import os
import shutil
import zlib
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, Protocol, TypeVar

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_nsq._cli import format_go_duration

__all__ = [
    "DATETIME",
    "REV",
    "FileLogger",
    "FileOptions",
    "HeldMessage",
    "OutputFile",
    "Runner",
    "compute_filename_format",
    "exclusive_rename",
    "host_identifier",
    "rev_required",
    "run_here",
    "strftime",
]

_T = TypeVar("_T")

#: The tokens of C{--filename-format}.
TOPIC = "<TOPIC>"
HOST = "<HOST>"
REV = "<REV>"
DATETIME = "<DATETIME>"
PID = "<PID>"

_NEWLINE = b"\n"
# Go creates directories with 0770 and files with 0666 (both less the umask).
_DIR_MODE = 0o770
_FILE_MODE = 0o666

# The strftime directives Go's nsq_to_file knows (its strftime.go); any other is kept as written.
_DIRECTIVES: dict[str, Callable[[datetime.datetime], str]] = {
    "B": lambda t: t.strftime("%B"),
    "b": lambda t: t.strftime("%b"),
    "m": lambda t: f"{t.month:02d}",
    "A": lambda t: t.strftime("%A"),
    "a": lambda t: t.strftime("%a"),
    "d": lambda t: f"{t.day:02d}",
    "H": lambda t: f"{t.hour:02d}",
    "I": lambda t: f"{(t.hour % 12) or 12:02d}",
    "M": lambda t: f"{t.minute:02d}",
    "S": lambda t: f"{t.second:02d}",
    "Y": lambda t: f"{t.year:04d}",
    "y": lambda t: f"{t.year % 100:02d}",
    "p": lambda t: "PM" if t.hour >= 12 else "AM",
    "Z": lambda t: t.strftime("%Z") or "UTC",
    "z": lambda t: t.strftime("%z") or "+0000",
    "%": lambda t: "%",
}


def strftime(fmt: str, when: datetime.datetime) -> str:
    """
    Format C{when} with the strftime subset of Go's C{nsq_to_file} (C{%B %b %m %A %a %d %H %I %M
    %S %Y %y %p %Z %z %%}); any other C{%x} is copied as written.
    """
    out: list[str] = []
    index = 0
    length = len(fmt)
    while index < length:
        char = fmt[index]
        if char == "%" and index + 1 < length:
            directive = _DIRECTIVES.get(fmt[index + 1])
            if directive is not None:
                out.append(directive(when))
                index += 2
                continue
        out.append(char)
        index += 1
    return "".join(out)


def host_identifier(hostname: str, template: str) -> str:
    """
    What C{<HOST>} becomes: the short host name (up to the first dot) by default, or
    C{--host-identifier} with C{<SHORT_HOST>} and C{<HOSTNAME>} replaced.
    """
    short = hostname.split(".")[0]
    if not template:
        return short
    return template.replace("<SHORT_HOST>", short).replace("<HOSTNAME>", hostname)


def rev_required(
    *, gzip: bool, rotate_size: int, rotate_interval: float, work_dir: str, output_dir: str
) -> bool:
    """Whether C{--filename-format} must hold C{<REV>}: with gzip, rotation or a separate work dir."""
    return gzip or rotate_size > 0 or rotate_interval > 0 or work_dir != output_dir


def compute_filename_format(
    filename_format: str, topic: str, *, identifier: str, pid: int, keep_rev: bool, gzip: bool
) -> str:
    """
    A topic's file name template: C{<TOPIC>}, C{<HOST>} and C{<PID>} replaced, C{<DATETIME>} and
    (when C{keep_rev}) C{<REV>} left for each file, C{<REV>} removed otherwise, and C{.gz}
    appended for gzip unless the name already ends so.

    @raise ValueError: C{keep_rev} and no C{<REV>} in the format (Go's message).
    """
    name = filename_format
    if keep_rev:
        if REV not in name:
            raise ValueError("missing <REV> in --filename-format when gzip, rotation, or work dir enabled")
    else:
        name = name.replace(REV, "")
    name = name.replace(TOPIC, topic).replace(HOST, identifier).replace(PID, str(pid))
    if gzip and not name.endswith(".gz"):
        name += ".gz"
    return name


def _format_rev(template: str, rev: int) -> str:
    return template.replace(REV, f"-{rev:06d}")


def exclusive_rename(src: str, dst: str) -> None:
    """
    Move C{src} to C{dst} unless C{dst} exists (never overwriting it): a hard link then an unlink,
    or, where links cannot be made (another file system), an exclusive create, copy and fsync.

    @raise FileExistsError: C{dst} exists.
    """
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        with open(src, "rb") as source, open(dst, "xb") as target:
            shutil.copyfileobj(source, target)
            target.flush()
            os.fsync(target.fileno())
    os.unlink(src)


def _make_parent(path: str) -> None:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, mode=_DIR_MODE, exist_ok=True)


@attrs.frozen
class FileOptions:
    """
    The settings a topic's files follow (Go's flags of the same names; durations in seconds).

    @ivar append: whether an existing file is appended to; Go does so unless gzip or an interval
        rotation is on, when every file is new (C{O_EXCL}).
    """

    output_dir: str = "/tmp"
    work_dir: str = "/tmp"
    datetime_format: str = "%Y-%m-%d_%H"
    gzip: bool = False
    gzip_level: int = 6
    rotate_size: int = 0
    rotate_interval: float = 0.0
    skip_empty_files: bool = False
    max_in_flight: int = 200

    @property
    def append(self) -> bool:
        return not (self.gzip or self.rotate_interval > 0)


class OutputFile:
    """
    A topic's current file, with blocking operations: the caller runs L{write} and L{prepare_close}
    (the heavy ones) where blocking is allowed, and runs them one at a time.

    @ivar filename: the template of the last file opened, datetime filled in and C{<REV>} still in
        it; a file of the same template gets the next revision.
    @ivar rev: the revision of the last file opened.
    @ivar path: where the open file is being written (in the work dir); C{None} when none is open.
    """

    _log = Logger()

    def __init__(self, topic: str, channel: str, options: FileOptions) -> None:
        self.topic = topic
        self.channel = channel
        self.options = options
        self.filename = ""
        self.rev = 0
        self.path: str | None = None
        self._file: BinaryIO | None = None
        self._written = 0

    def _relative_output(self, path: str) -> str:
        options = self.options
        return os.path.join(options.output_dir, os.path.relpath(path, options.work_dir))

    def open(self, filename: str) -> int:
        """
        Open the next file for C{filename} (a template with C{<DATETIME>} filled in): revision 0
        for a new template, the next revision for the same one, skipping revisions that exist in
        the output dir, exist in the work dir (when not appending) or are over C{rotate_size}.

        @return: the file's size when opened (non-zero only when appending).
        """
        options = self.options
        if filename != self.filename:
            self.rev = 0
        else:
            self.rev += 1
        self.filename = filename
        full = os.path.join(options.work_dir, filename)
        _make_parent(full)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if options.append else os.O_EXCL)
        while True:
            path = _format_rev(full, self.rev)
            if options.work_dir != options.output_dir:
                output = self._relative_output(path)
                _make_parent(output)
                if os.path.lexists(output):
                    self._warn("output file already exists: {path}", path=output)
                    self._next_rev(full)
                    continue
            try:
                fd = os.open(path, flags, _FILE_MODE)
            except FileExistsError:
                self._warn("working file already exists: {path}", path=path)
                self._next_rev(full)
                continue
            self._info("opening {path}", path=path)
            size = os.fstat(fd).st_size
            if options.rotate_size > 0 and size > options.rotate_size:
                os.close(fd)
                self._info(
                    "{path} currently {size} bytes (> {limit}), rotating...",
                    path=path,
                    size=size,
                    limit=options.rotate_size,
                )
                self._next_rev(full)
                continue
            self._file = os.fdopen(fd, "wb")
            self.path = path
            self._written = size
            return size

    def _next_rev(self, full: str) -> None:
        if REV not in full:
            # Only reachable with a format Go would not accept either; never loop forever.
            raise FileExistsError(errno.EEXIST, "file exists and the filename format has no <REV>", full)
        self.rev += 1

    def write(self, chunks: Sequence[bytes]) -> None:
        """
        Append C{chunks} (one gzip member of them, with gzip) and fsync. Blocks.

        @raise OSError: no file is open, or the write or fsync failed.
        """
        out = self._file
        if out is None:
            raise OSError(errno.EBADF, "no file is open")
        if self.options.gzip:
            compressor = zlib.compressobj(self.options.gzip_level, zlib.DEFLATED, 31)
            member = [compressor.compress(b"".join(chunks)), compressor.flush()]
            out.writelines(member)
            self._written += len(member[0]) + len(member[1])
        else:
            out.writelines(chunks)
            self._written += sum(map(len, chunks))
        out.flush()
        os.fsync(out.fileno())

    def prepare_close(self) -> None:
        """
        Make the open file complete on disk before L{finish_close}: a gzip file that got no data
        gets one empty member (so that it is valid gzip) unless empty files are skipped. Blocks.
        """
        out = self._file
        if out is None:
            return
        if self.options.gzip and self._written == 0 and not self.options.skip_empty_files:
            self.write(())
        out.flush()
        os.fsync(out.fileno())

    def finish_close(self) -> str | None:
        """
        Close the file and move it from the work dir to the output dir (never overwriting: the
        revision is bumped until a free name is found), or remove it when it is empty and empty
        files are skipped.

        @return: where the file ended up; C{None} when no file was open or it was removed.
        """
        out, path = self._file, self.path
        if out is None or path is None:
            return None
        self._file = None
        self.path = None
        out.close()
        options = self.options
        if options.skip_empty_files and self._written == 0:
            self._info("removing empty file {path}", path=path)
            os.unlink(path)
            return None
        if options.work_dir == options.output_dir:
            return path
        dst = self._relative_output(path)
        self._info("moving finished file {src} to {dst}", src=path, dst=dst)
        _make_parent(dst)
        try:
            exclusive_rename(path, dst)
            return dst
        except FileExistsError:
            pass
        template = os.path.join(os.path.dirname(dst), os.path.basename(self.filename))
        if REV not in template:
            raise FileExistsError(
                errno.EEXIST, "destination exists and the filename format has no <REV>", dst
            )
        rev = self.rev + 1
        while True:
            self._warn("destination file already exists: {path}", path=dst)
            dst = _format_rev(template, rev)
            try:
                exclusive_rename(path, dst)
            except FileExistsError:
                rev += 1
                continue
            self._info("renamed finished file {src} to {dst} to avoid overwrite", src=path, dst=dst)
            return dst

    def _info(self, fmt: str, **fields: Any) -> None:
        self._log.info("[{topic}/{channel}] " + fmt, topic=self.topic, channel=self.channel, **fields)

    def _warn(self, fmt: str, **fields: Any) -> None:
        self._log.warn("[{topic}/{channel}] " + fmt, topic=self.topic, channel=self.channel, **fields)


class HeldMessage(Protocol):
    """What L{FileLogger} needs of a message (L{twisted_nsq.client.Message} provides it)."""

    @property
    def body(self) -> bytes: ...

    def finish(self) -> None: ...

    def requeue(self, delay: float | None = None, backoff: bool = True) -> None: ...


#: Runs a blocking call somewhere blocking is allowed and fires with its result (e.g.
#: C{functools.partial(deferToThreadPool, reactor, pool)}).
Runner = Callable[[Callable[[], Any]], "Deferred[Any]"]


def run_here(call: Callable[[], _T]) -> Deferred[_T]:
    """A L{Runner} that blocks the caller: for tests and tools with nothing else to do."""
    try:
        return succeed(call())
    except Exception:
        return fail()


class FileLogger:
    """
    Writes the messages of one topic to its files, as Go's C{FileLogger} router does.

    Bodies are held in memory with their messages and written as one batch (one gzip member) by
    L{sync}, which happens when C{max_in_flight} messages are held, when the consumer is starved
    (no more messages can come before some are answered), on L{tick}, on rotation, on L{hup} and
    on L{close}; the batch's messages are finished once it is written and fsynced.

    A file is rotated before a message when no file is open, when the datetime in its name
    changed, when it is older than C{rotate_interval}, or when it holds more than C{rotate_size}
    bytes (uncompressed, as Go counts them).

    @param filename_format: the topic's template (L{compute_filename_format}).
    @param run_io: where the blocking writes and fsyncs run.
    @param starved: whether the consumer can receive nothing more until messages are answered.
    @param on_fatal: called once with the failure when a file operation fails; the held messages
        are requeued and later ones are requeued at once.
    @param tz: the time zone of C{<DATETIME>}; C{None} for local time, as Go uses.
    """

    _log = Logger()

    def __init__(
        self,
        topic: str,
        channel: str,
        filename_format: str,
        options: FileOptions,
        clock: IReactorTime,
        run_io: Runner,
        *,
        starved: Callable[[], bool] | None = None,
        on_fatal: Callable[[Failure], object] | None = None,
        tz: datetime.tzinfo | None = None,
    ) -> None:
        self.topic = topic
        self.channel = channel
        self.filename_format = filename_format
        self.options = options
        self.output = OutputFile(topic, channel, options)
        self.starved = starved
        self._clock = clock
        self._run_io = run_io
        self._on_fatal = on_fatal
        self._tz = tz
        self._has_datetime = DATETIME in filename_format
        self._name_second = -1
        self._name = filename_format
        # The file as decided here; the queue catches up with it.
        self._current: str | None = None
        self._open_time = 0.0
        self._filesize = 0
        self._generation = 0
        # The batch being collected.
        self._chunks: list[bytes] = []
        self._messages: list[HeldMessage] = []
        self._batch_done: Deferred[None] | None = None
        self._writing = 0
        self._queue: Deferred[None] = succeed(None)
        self._draining = False
        self._closed = False
        self.failure: Failure | None = None
        #: Messages finished so far, and the files closed so far (where they ended up).
        self.finished = 0
        self.closed_files: list[str] = []

    # The per-message path

    def handle(self, message: HeldMessage) -> Deferred[None] | None:
        """
        The consumer's handler: hold C{message} for the current batch, rotating first if needed.

        @return: the batch's Deferred, fired (with C{None}) once its messages were finished or
            requeued, so that the consumer answers none of them itself.
        """
        if self._closed or self.failure is not None:
            message.requeue(0, backoff=False)
            return None
        now = self._clock.seconds()
        if self._current is None or self._needs_rotation(now):
            self._update_file(now)
            if self.failure is not None:
                message.requeue(0, backoff=False)
                return None
        body = message.body
        self._chunks.append(body)
        self._chunks.append(_NEWLINE)
        self._filesize += len(body) + 1
        self._messages.append(message)
        done = self._batch_done
        if done is None:
            done = self._batch_done = Deferred()
        if (
            self._draining
            or len(self._messages) >= self.options.max_in_flight
            or (not self._writing and self.starved is not None and self.starved())
        ):
            self.sync()
        return done

    @property
    def held(self) -> int:
        """Messages held in the batch being collected."""
        return len(self._messages)

    def _filename_at(self, now: float) -> str:
        if not self._has_datetime:
            return self.filename_format
        second = int(now)
        if second != self._name_second:
            # Formatted at most once a second: the datetime format has no finer field.
            when = datetime.datetime.fromtimestamp(second, self._tz)
            if when.tzinfo is None:
                # Local time, aware of its zone so that %Z and %z have something to print.
                when = when.astimezone()
            self._name = self.filename_format.replace(DATETIME, strftime(self.options.datetime_format, when))
            self._name_second = second
        return self._name

    def _needs_rotation(self, now: float) -> bool:
        if self._current is None:
            return True
        filename = self._filename_at(now)
        if filename != self._current:
            self._info("new filename {filename}, rotating...", filename=filename)
            return True
        options = self.options
        if options.rotate_interval > 0 and now - self._open_time > options.rotate_interval:
            self._info(
                "{elapsed} since last open, rotating...", elapsed=format_go_duration(now - self._open_time)
            )
            return True
        if options.rotate_size > 0 and self._filesize > options.rotate_size:
            self._info(
                "{filename} currently {size} bytes (> {limit}), rotating...",
                filename=self._current,
                size=self._filesize,
                limit=options.rotate_size,
            )
            return True
        return False

    # Decisions

    def sync(self) -> None:
        """Write and fsync the held batch, then finish its messages. Nothing held, nothing done."""
        if not self._messages:
            return
        chunks, messages, done = self._chunks, self._messages, self._batch_done
        self._chunks, self._messages, self._batch_done = [], [], None
        self._writing += 1
        # Run even after a failure: the batch's messages must be given back.
        self._enqueue(lambda: self._write_batch(chunks, messages, done), always=True)

    def tick(self) -> None:
        """The C{--sync-interval} timer: rotate if due (just close with C{--skip-empty-files}), sync."""
        now = self._clock.seconds()
        if self._closed:
            return
        if self._needs_rotation(now):
            if self.options.skip_empty_files:
                self.sync()
                self._close_file()
            else:
                self._update_file(now)
        else:
            self.sync()

    def hup(self) -> None:
        """SIGHUP: sync and close the file; the next message (or tick) opens the next one."""
        self.sync()
        self._close_file()

    def stop_taking(self) -> None:
        """The consumer is stopping: sync what is held now and every message that still comes."""
        self._draining = True
        self.sync()

    def close(self) -> Deferred[None]:
        """Sync, close the file, and fire once every queued file operation is done."""
        self.sync()
        self._close_file()
        self._closed = True
        return self.idle()

    def idle(self) -> Deferred[None]:
        """Fires once every file operation queued so far is done."""
        done: Deferred[None] = Deferred()

        def release(result: object) -> object:
            done.callback(None)
            return result

        self._queue.addBoth(release)
        return done

    def _update_file(self, now: float) -> None:
        self.sync()
        self._close_file()
        filename = self._filename_at(now)
        self._current = filename
        self._open_time = now
        self._filesize = 0
        self._generation += 1
        generation = self._generation

        def open_file() -> None:
            size = self.output.open(filename)
            if generation == self._generation:
                self._filesize += size

        self._enqueue(open_file)

    def _close_file(self) -> None:
        if self._current is None:
            return
        self._current = None
        # Run even after a failure: the file is closed all the same.
        self._enqueue(self._close_output, always=True)

    # The queue of file operations, run one after another

    def _enqueue(self, job: Callable[[], object], *, always: bool = False) -> None:
        def run(_: object) -> object:
            if self.failure is not None and not always:
                return None
            return job()

        self._queue.addCallback(run).addErrback(self._failed)

    def _write_batch(
        self, chunks: list[bytes], messages: list[HeldMessage], done: Deferred[None] | None
    ) -> Deferred[None]:
        if self.failure is not None:
            self._writing -= 1
            self._requeue(messages, done)
            return succeed(None)
        self._info("syncing {count} records to disk", count=len(messages))
        written = self._run_io(lambda: self.output.write(chunks))

        def finish(_: object) -> None:
            self._writing -= 1
            for message in messages:
                message.finish()
            self.finished += len(messages)
            if done is not None:
                done.callback(None)
            if self._messages and (self._draining or (self.starved is not None and self.starved())):
                self.sync()

        def give_back(failure: Failure) -> None:
            self._writing -= 1
            self._requeue(messages, done)
            self._fail(failure, "failed syncing messages")

        return written.addCallbacks(finish, give_back)

    def _close_output(self) -> Deferred[None]:
        def moved(path: str | None) -> None:
            if path is not None:
                self.closed_files.append(path)

        flushed = self._run_io(self.output.prepare_close)
        return flushed.addCallback(lambda _: self.output.finish_close()).addCallback(moved)

    def _requeue(self, messages: list[HeldMessage], done: Deferred[None] | None) -> None:
        for message in messages:
            message.requeue(0, backoff=False)
        if done is not None:
            done.callback(None)

    def _failed(self, failure: Failure) -> None:
        self._fail(failure, "file operation failed")

    def _fail(self, failure: Failure, what: str) -> None:
        if self.failure is not None:
            return
        self.failure = failure
        self._log.critical(
            "[{topic}/{channel}] {what}: {error}",
            topic=self.topic,
            channel=self.channel,
            what=what,
            error=failure.getErrorMessage(),
        )
        # Nothing more can be written: give back what is held, and later messages at once.
        messages, done = self._messages, self._batch_done
        self._chunks, self._messages, self._batch_done = [], [], None
        self._requeue(messages, done)
        if self._on_fatal is not None:
            self._on_fatal(failure)

    def _info(self, fmt: str, **fields: Any) -> None:
        self._log.info("[{topic}/{channel}] " + fmt, topic=self.topic, channel=self.channel, **fields)
