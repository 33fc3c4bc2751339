"""Tests for L{twisted_nsq.apps.nsq_to_file} and L{twisted_nsq.apps._file_logger}."""

from __future__ import annotations

import datetime
import gzip
import os
import zlib
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq._cli import FlagError, resolve
from twisted_nsq.apps._common import user_agent
from twisted_nsq.apps._file_logger import (
    FileLogger,
    FileOptions,
    OutputFile,
    compute_filename_format,
    exclusive_rename,
    host_identifier,
    rev_required,
    run_here,
    strftime,
)
from twisted_nsq.apps.nsq_to_file import (
    TO_FILE_FLAGS,
    NSQToFile,
    check_values,
    lookupd_topics_url,
    topics_from_reply,
)

UTC = datetime.UTC


def _values(*argv: str) -> dict[str, Any]:
    return check_values(resolve(TO_FILE_FLAGS, list(argv)), hostname="box.example.com", pid=4242)


class FakeMessage:
    """Records what was answered, and when (the number of files' bytes on disk at that moment)."""

    def __init__(self, body: bytes, on_answer: Callable[[FakeMessage], object] | None = None) -> None:
        self.body = body
        self.finished = False
        self.requeued: list[tuple[float | None, bool]] = []
        self._on_answer = on_answer

    def finish(self) -> None:
        self.finished = True
        if self._on_answer is not None:
            self._on_answer(self)

    def requeue(self, delay: float | None = None, backoff: bool = True) -> None:
        self.requeued.append((delay, backoff))
        if self._on_answer is not None:
            self._on_answer(self)


class ManualRunner:
    """A runner that holds each blocking call until L{step} runs it."""

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, call: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((call, d))
        return d

    def step(self) -> None:
        call, d = self.pending.pop(0)
        try:
            result = call()
        except Exception:
            d.errback(Failure())
        else:
            d.callback(result)

    def run_all(self) -> None:
        while self.pending:
            self.step()


def _members(data: bytes) -> list[bytes]:
    """The decompressed gzip members of C{data}, in order."""
    members = []
    while data:
        decompressor = zlib.decompressobj(31)
        members.append(decompressor.decompress(data))
        if not decompressor.eof:
            raise AssertionError("truncated gzip member")
        data = decompressor.unused_data
    return members


class StrftimeTests(SynchronousTestCase):
    def test_directives(self) -> None:
        """Each directive Go's nsq_to_file knows, zero-padded as Go pads them."""
        when = datetime.datetime(2024, 3, 7, 15, 4, 5, tzinfo=UTC)
        self.assertEqual(strftime("%Y-%m-%d_%H", when), "2024-03-07_15")
        self.assertEqual(strftime("%y%M%S", when), "240405")
        self.assertEqual(strftime("%I %p", when), "03 PM")
        self.assertEqual(strftime("%I %p", when.replace(hour=0)), "12 AM")
        self.assertEqual(strftime("%B %b %A %a", when), "March Mar Thursday Thu")
        self.assertEqual(strftime("%Z %z 100%%", when), "UTC +0000 100%")

    def test_unknown_kept(self) -> None:
        """An unknown directive, and a trailing %, are copied as written."""
        when = datetime.datetime(2024, 3, 7, 15, tzinfo=UTC)
        self.assertEqual(strftime("%j-%H-%", when), "%j-15-%")


class FilenameFormatTests(SynchronousTestCase):
    def test_host_identifier(self) -> None:
        """<HOST> is the short host name by default; --host-identifier may use both forms."""
        self.assertEqual(host_identifier("box.example.com", ""), "box")
        self.assertEqual(host_identifier("box.example.com", "<SHORT_HOST>-x"), "box-x")
        self.assertEqual(host_identifier("box.example.com", "<HOSTNAME>"), "box.example.com")
        self.assertEqual(host_identifier("box", "fixed"), "fixed")

    def test_tokens(self) -> None:
        """<TOPIC>, <HOST> and <PID> are replaced; <DATETIME> stays for each file."""
        name = compute_filename_format(
            "<TOPIC>/<HOST>-<PID><REV>.<DATETIME>.log",
            "t",
            identifier="h",
            pid=12,
            keep_rev=False,
            gzip=False,
        )
        self.assertEqual(name, "t/h-12.<DATETIME>.log")

    def test_rev_kept_when_required(self) -> None:
        """<REV> stays when required, and is required then (Go's message)."""
        name = compute_filename_format(
            "<TOPIC>.<HOST><REV>.<DATETIME>.log", "t", identifier="h", pid=1, keep_rev=True, gzip=False
        )
        self.assertEqual(name, "t.h<REV>.<DATETIME>.log")
        e = self.assertRaises(
            ValueError,
            compute_filename_format,
            "<TOPIC>.log",
            "t",
            identifier="h",
            pid=1,
            keep_rev=True,
            gzip=False,
        )
        self.assertEqual(
            str(e), "missing <REV> in --filename-format when gzip, rotation, or work dir enabled"
        )

    def test_gzip_suffix(self) -> None:
        """gzip appends .gz unless the name ends with it already."""
        for fmt, expected in (("<TOPIC><REV>.log", "t<REV>.log.gz"), ("<TOPIC><REV>.gz", "t<REV>.gz")):
            name = compute_filename_format(fmt, "t", identifier="h", pid=1, keep_rev=True, gzip=True)
            self.assertEqual(name, expected)

    def test_rev_required(self) -> None:
        """<REV> is required with gzip, either rotation, or a separate work dir."""
        base = {"gzip": False, "rotate_size": 0, "rotate_interval": 0.0, "work_dir": "/a", "output_dir": "/a"}
        self.assertFalse(rev_required(**base))  # type: ignore[arg-type]
        for change in ({"gzip": True}, {"rotate_size": 1}, {"rotate_interval": 1.0}, {"work_dir": "/b"}):
            self.assertTrue(rev_required(**{**base, **change}))  # type: ignore[arg-type]


class OutputFileTests(SynchronousTestCase):
    def _options(self, **changes: Any) -> FileOptions:
        out = self.mktemp()
        os.makedirs(out)
        return FileOptions(output_dir=out, work_dir=out, **changes)

    def _output(self, options: FileOptions) -> OutputFile:
        output = OutputFile("t", "c", options)
        self.addCleanup(output.finish_close)
        return output

    def test_rev_counts_up_for_the_same_name(self) -> None:
        """A new name starts at -000000; the same name again takes the next revision."""
        options = self._options(gzip=True)
        output = self._output(options)
        output.open("t<REV>.log")
        output.write([b"a", b"\n"])
        output.prepare_close()
        first = output.finish_close()
        output.open("t<REV>.log")
        output.prepare_close()
        second = output.finish_close()
        output.open("u<REV>.log")
        self.assertEqual(first, os.path.join(options.output_dir, "t-000000.log"))
        self.assertEqual(second, os.path.join(options.output_dir, "t-000001.log"))
        self.assertEqual(output.path, os.path.join(options.output_dir, "u-000000.log"))

    def test_existing_working_file_skipped(self) -> None:
        """Without appending (gzip), an existing file's revision is skipped."""
        options = self._options(gzip=True)
        for rev in (0, 1):
            with open(os.path.join(options.work_dir, f"t-00000{rev}.log"), "wb") as f:
                f.write(b"old")
        output = self._output(options)
        output.open("t<REV>.log")
        self.assertEqual(output.rev, 2)
        self.assertEqual(output.path, os.path.join(options.work_dir, "t-000002.log"))

    def test_append_until_rotate_size(self) -> None:
        """Appending, an existing file is reused unless it is over --rotate-size."""
        options = self._options(rotate_size=5)
        path0 = os.path.join(options.work_dir, "t-000000.log")
        with open(path0, "wb") as f:
            f.write(b"123\n")
        output = self._output(options)
        self.assertEqual(output.open("t<REV>.log"), 4)
        self.assertEqual(output.path, path0)
        output.write([b"45", b"\n"])
        output.prepare_close()
        output.finish_close()
        # Now 7 bytes > 5: the next open of a new name skips it.
        output = self._output(options)
        self.assertEqual(output.open("t<REV>.log"), 0)
        self.assertEqual(output.rev, 1)
        with open(path0, "rb") as f:
            self.assertEqual(f.read(), b"123\n45\n")

    def test_output_file_exists_skipped(self) -> None:
        """With a work dir, a revision that exists in the output dir is not used."""
        options = self._options()
        work = self.mktemp()
        options = FileOptions(output_dir=options.output_dir, work_dir=work)
        with open(os.path.join(options.output_dir, "t-000000.log"), "wb") as f:
            f.write(b"kept")
        output = self._output(options)
        output.open("t<REV>.log")
        self.assertEqual(output.path, os.path.join(work, "t-000001.log"))
        output.write([b"new\n"])
        output.prepare_close()
        final = output.finish_close()
        self.assertEqual(final, os.path.join(options.output_dir, "t-000001.log"))
        self.assertFalse(os.path.exists(os.path.join(work, "t-000001.log")))
        with open(os.path.join(options.output_dir, "t-000000.log"), "rb") as f:
            self.assertEqual(f.read(), b"kept")

    def test_move_bumps_rev_on_conflict(self) -> None:
        """A destination created while the file was written is never overwritten: REV is bumped."""
        out = self.mktemp()
        work = self.mktemp()
        os.makedirs(out)
        output = self._output(FileOptions(output_dir=out, work_dir=work))
        output.open("sub/t<REV>.log")
        output.write([b"mine\n"])
        for rev in (0, 1):
            with open(os.path.join(out, "sub", f"t-00000{rev}.log"), "wb") as f:
                f.write(b"theirs %d" % rev)
        output.prepare_close()
        final = output.finish_close()
        self.assertEqual(final, os.path.join(out, "sub", "t-000002.log"))
        with open(os.path.join(out, "sub", "t-000000.log"), "rb") as f:
            self.assertEqual(f.read(), b"theirs 0")
        with open(os.path.join(out, "sub", "t-000002.log"), "rb") as f:
            self.assertEqual(f.read(), b"mine\n")
        self.assertEqual(os.listdir(os.path.join(work, "sub")), [])

    def test_exclusive_rename(self) -> None:
        """exclusive_rename moves, and refuses an existing destination."""
        base = self.mktemp()
        os.makedirs(base)
        src, dst = os.path.join(base, "a"), os.path.join(base, "b")
        for path in (src, dst):
            with open(path, "wb") as f:
                f.write(path.encode())
        self.assertRaises(FileExistsError, exclusive_rename, src, dst)
        os.unlink(dst)
        exclusive_rename(src, dst)
        self.assertFalse(os.path.exists(src))
        with open(dst, "rb") as f:
            self.assertEqual(f.read(), src.encode())

    def test_empty_gzip_file_is_valid(self) -> None:
        """A gzip file closed with no data holds one empty member."""
        options = self._options(gzip=True)
        output = self._output(options)
        output.open("t<REV>.log.gz")
        output.prepare_close()
        final = output.finish_close()
        assert final is not None
        with gzip.open(final) as f:
            self.assertEqual(f.read(), b"")

    def test_skip_empty_removes(self) -> None:
        """With --skip-empty-files an empty file is removed on close, gzip or not."""
        for use_gzip in (False, True):
            options = self._options(gzip=use_gzip, skip_empty_files=True)
            output = self._output(options)
            output.open("t<REV>.log")
            output.prepare_close()
            self.assertIsNone(output.finish_close())
            self.assertEqual(os.listdir(options.output_dir), [])


class FileLoggerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.out = self.mktemp()
        os.makedirs(self.out)
        self.fatal: list[Failure] = []

    def _logger(
        self,
        fmt: str = "t<REV>.<DATETIME>.log",
        run_io: Any = run_here,
        **changes: Any,
    ) -> FileLogger:
        changes.setdefault("output_dir", self.out)
        changes.setdefault("work_dir", changes["output_dir"])
        changes.setdefault("datetime_format", "%Y-%m-%d_%H")
        options = FileOptions(**changes)
        logger = FileLogger("t", "c", fmt, options, self.clock, run_io, on_fatal=self.fatal.append, tz=UTC)

        def close() -> None:
            logger.close()
            if isinstance(run_io, ManualRunner):
                run_io.run_all()

        self.addCleanup(close)
        return logger

    def _files(self, directory: str | None = None) -> dict[str, bytes]:
        found = {}
        base = directory or self.out
        for root, _, names in os.walk(base):
            for name in names:
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    found[os.path.relpath(path, base)] = f.read()
        return found

    def test_fin_only_after_sync(self) -> None:
        """Messages are finished only once their batch was written and fsynced."""
        runner = ManualRunner()
        logger = self._logger(run_io=runner, max_in_flight=3)
        messages = [FakeMessage(b"m%d" % i) for i in range(3)]
        results = [logger.handle(m) for m in messages[:2]]
        self.assertEqual(runner.pending, [])
        self.assertFalse(any(m.finished for m in messages))
        # The third fills max-in-flight: the batch goes to be written, still unanswered.
        results.append(logger.handle(messages[2]))
        self.assertEqual(len(runner.pending), 1)
        self.assertFalse(any(m.finished for m in messages))
        self.assertEqual(logger.held, 0)
        batch = results[0]
        assert batch is not None
        self.assertIs(results[1], batch)
        self.assertNoResult(batch)
        runner.step()
        self.assertTrue(all(m.finished for m in messages))
        self.assertEqual([m.requeued for m in messages], [[], [], []])
        self.assertIsNone(self.successResultOf(batch))
        self.assertEqual(self._files(), {"t-000000.1970-01-01_00.log": b"m0\nm1\nm2\n"})

    def test_fin_sees_data_on_disk(self) -> None:
        """When a message is finished, its body is already in the file."""
        seen: list[bytes] = []

        def answered(message: FakeMessage) -> None:
            seen.append(b"".join(self._files().values()))

        logger = self._logger(max_in_flight=2)
        logger.handle(FakeMessage(b"a", answered))
        logger.handle(FakeMessage(b"b", answered))
        self.assertEqual(seen, [b"a\nb\n", b"a\nb\n"])

    def test_starved_syncs(self) -> None:
        """A starved consumer gets its batch synced before max-in-flight."""
        logger = self._logger(max_in_flight=100)
        starved = [False]
        logger.starved = lambda: starved[0]
        first = FakeMessage(b"1")
        logger.handle(first)
        self.assertFalse(first.finished)
        starved[0] = True
        second = FakeMessage(b"2")
        logger.handle(second)
        self.assertTrue(first.finished and second.finished)

    def test_tick_syncs(self) -> None:
        """The sync timer writes and finishes whatever is held."""
        logger = self._logger()
        message = FakeMessage(b"x")
        logger.handle(message)
        self.assertFalse(message.finished)
        logger.tick()
        self.assertTrue(message.finished)
        self.assertEqual(list(self._files().values()), [b"x\n"])

    def test_rotate_by_size(self) -> None:
        """A file that grew past --rotate-size is closed before the next message."""
        logger = self._logger(fmt="t<REV>.log", rotate_size=5, max_in_flight=1)
        for body in (b"aaa", b"bbb", b"c", b"ddddddd", b"e"):
            logger.handle(FakeMessage(body))
        self.successResultOf(logger.close())
        # 4 bytes, then 8 (> 5): rotate; 2+8 (> 5): rotate; 2.
        self.assertEqual(
            self._files(),
            {"t-000000.log": b"aaa\nbbb\n", "t-000001.log": b"c\nddddddd\n", "t-000002.log": b"e\n"},
        )

    def test_rotate_by_interval(self) -> None:
        """A file older than --rotate-interval is closed before the next message (or tick)."""
        logger = self._logger(fmt="t<REV>.log", rotate_interval=10.0, max_in_flight=1)
        logger.handle(FakeMessage(b"1"))
        self.clock.advance(10)
        logger.handle(FakeMessage(b"2"))
        self.clock.advance(0.5)
        logger.handle(FakeMessage(b"3"))
        self.clock.advance(10)
        # Exactly the interval is not over it.
        logger.tick()
        self.clock.advance(0.5)
        logger.tick()
        self.successResultOf(logger.close())
        self.assertEqual(
            self._files(),
            {"t-000000.log": b"1\n2\n", "t-000001.log": b"3\n", "t-000002.log": b""},
        )

    def test_rotate_on_datetime_change(self) -> None:
        """A new <DATETIME> opens a new file, at revision 0 again."""
        logger = self._logger(fmt="t<REV>.<DATETIME>.log", max_in_flight=1)
        self.clock.advance(3599)
        logger.handle(FakeMessage(b"a"))
        logger.hup()
        logger.handle(FakeMessage(b"b"))
        self.clock.advance(1)
        logger.handle(FakeMessage(b"c"))
        self.successResultOf(logger.close())
        self.assertEqual(
            self._files(),
            {
                "t-000000.1970-01-01_00.log": b"a\n",
                "t-000001.1970-01-01_00.log": b"b\n",
                "t-000000.1970-01-01_01.log": b"c\n",
            },
        )

    def test_datetime_without_rev(self) -> None:
        """Without <REV> (no gzip, rotation or work dir) one file per datetime, appended to."""
        logger = self._logger(fmt="t.<DATETIME>.log", datetime_format="%Y%m%d%H%M", max_in_flight=1)
        logger.handle(FakeMessage(b"a"))
        logger.hup()
        logger.handle(FakeMessage(b"b"))
        self.clock.advance(60)
        logger.handle(FakeMessage(b"c"))
        self.successResultOf(logger.close())
        self.assertEqual(self._files(), {"t.197001010000.log": b"a\nb\n", "t.197001010001.log": b"c\n"})

    def test_gzip_member_per_sync(self) -> None:
        """With gzip every sync writes one member; the file reads as one stream."""
        logger = self._logger(fmt="t<REV>.log.gz", gzip=True, max_in_flight=2)
        for body in (b"a", b"b", b"c", b"d", b"e"):
            logger.handle(FakeMessage(body))
        self.successResultOf(logger.close())
        data = self._files()["t-000000.log.gz"]
        self.assertEqual(_members(data), [b"a\nb\n", b"c\nd\n", b"e\n"])
        self.assertEqual(gzip.decompress(data), b"a\nb\nc\nd\ne\n")

    def test_skip_empty_files(self) -> None:
        """--skip-empty-files: a tick opens no file; files open with the first message."""
        logger = self._logger(fmt="t<REV>.log", rotate_interval=5.0, skip_empty_files=True)
        logger.tick()
        self.assertEqual(self._files(), {})
        logger.handle(FakeMessage(b"a"))
        self.clock.advance(6)
        # Rotation due: sync and close; nothing opens until a message comes.
        logger.tick()
        self.clock.advance(6)
        logger.tick()
        self.successResultOf(logger.close())
        self.assertEqual(self._files(), {"t-000000.log": b"a\n"})

    def test_empty_files_without_skip(self) -> None:
        """Without --skip-empty-files, a tick due for rotation opens the next (empty) file."""
        logger = self._logger(fmt="t<REV>.log", rotate_interval=5.0)
        logger.tick()
        self.clock.advance(6)
        logger.tick()
        self.successResultOf(logger.close())
        self.assertEqual(self._files(), {"t-000000.log": b"", "t-000001.log": b""})

    def test_work_dir_moved_on_close(self) -> None:
        """Files are written in the work dir and moved to the output dir when closed."""
        work = self.mktemp()
        logger = self._logger(fmt="t<REV>.log", work_dir=work, max_in_flight=1)
        logger.handle(FakeMessage(b"a"))
        self.assertEqual(self._files(work), {"t-000000.log": b"a\n"})
        self.assertEqual(self._files(), {})
        self.successResultOf(logger.close())
        self.assertEqual(self._files(work), {})
        self.assertEqual(self._files(), {"t-000000.log": b"a\n"})
        self.assertEqual(logger.closed_files, [os.path.join(self.out, "t-000000.log")])

    def test_hup_reopens_with_next_rev(self) -> None:
        """SIGHUP syncs, finishes and closes; the next message opens the next revision."""
        logger = self._logger(fmt="t<REV>.log", gzip=True)
        first = FakeMessage(b"a")
        logger.handle(first)
        logger.hup()
        self.assertTrue(first.finished)
        logger.handle(FakeMessage(b"b"))
        self.successResultOf(logger.close())
        self.assertEqual(
            {name: gzip.decompress(data) for name, data in self._files().items()},
            {"t-000000.log": b"a\n", "t-000001.log": b"b\n"},
        )

    def test_stop_taking_syncs_each_message(self) -> None:
        """While the consumer stops, what is held and what still comes is synced at once."""
        logger = self._logger()
        held = FakeMessage(b"a")
        logger.handle(held)
        logger.stop_taking()
        self.assertTrue(held.finished)
        late = FakeMessage(b"b")
        logger.handle(late)
        self.assertTrue(late.finished)
        self.successResultOf(logger.close())
        after = FakeMessage(b"c")
        self.assertIsNone(logger.handle(after))
        self.assertEqual(after.requeued, [(0, False)])
        self.assertEqual(list(self._files().values()), [b"a\nb\n"])

    def test_close_waits_for_writes(self) -> None:
        """close() fires only after the queued writes and the close ran."""
        runner = ManualRunner()
        logger = self._logger(run_io=runner)
        message = FakeMessage(b"a")
        logger.handle(message)
        closed = logger.close()
        self.assertNoResult(closed)
        runner.step()
        self.assertTrue(message.finished)
        self.assertNoResult(closed)
        runner.step()
        self.successResultOf(closed)

    def test_write_failure_requeues(self) -> None:
        """A failed write requeues its messages (no backoff), and later ones; on_fatal is told."""
        runner = ManualRunner()
        logger = self._logger(run_io=runner, max_in_flight=2)
        messages = [FakeMessage(b"a"), FakeMessage(b"b")]
        batch = logger.handle(messages[0])
        logger.handle(messages[1])
        _call, d = runner.pending.pop(0)
        d.errback(Failure(OSError(28, "No space left on device")))
        self.assertEqual([m.requeued for m in messages], [[(0, False)], [(0, False)]])
        self.assertFalse(any(m.finished for m in messages))
        assert batch is not None
        self.assertIsNone(self.successResultOf(batch))
        self.assertEqual(len(self.fatal), 1)
        later = FakeMessage(b"c")
        logger.handle(later)
        self.assertEqual(later.requeued, [(0, False)])
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class _FakeConsumer:
    def __init__(self, topic: str, handler: Callable[[Any], object], log: list[str]) -> None:
        self.topic = topic
        self.handler = handler
        self.log = log
        self.stopped: Deferred[None] = Deferred()
        self.starved = False

    def start(self) -> None:
        self.log.append(f"start {self.topic}")

    def stop(self) -> Deferred[None]:
        self.log.append(f"stop {self.topic}")
        return self.stopped

    def is_starved(self) -> bool:
        return self.starved


class _Response:
    def __init__(self, reply: object) -> None:
        self._reply = reply

    def json(self) -> Deferred[object]:
        return succeed(self._reply)


class _FakeHTTP:
    def __init__(self) -> None:
        self.replies: dict[str, object] = {}
        self.urls: list[str] = []

    def get(self, url: str, timeout: float) -> Deferred[Any]:
        self.urls.append(url)
        reply = self.replies.get(url)
        if isinstance(reply, Exception):
            d: Deferred[Any] = Deferred()
            d.errback(reply)
            return d
        return succeed(_Response(reply))


class FlagTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """Go's defaults."""
        values = _values("--topic=t", "--nsqd-tcp-address=127.0.0.1:4150")
        self.assertEqual(values["channel"], "nsq_to_file")
        self.assertEqual(values["max_in_flight"], 200)
        self.assertEqual((values["output_dir"], values["work_dir"]), ("/tmp", "/tmp"))
        self.assertEqual(values["filename_format"], "<TOPIC>.<HOST><REV>.<DATETIME>.log")
        self.assertEqual(values["datetime_format"], "%Y-%m-%d_%H")
        self.assertEqual(values["gzip_level"], 6)
        self.assertEqual(values["sync_interval"], 30.0)
        self.assertEqual(values["topic_refresh"], 60.0)
        self.assertEqual(
            (values["http_client_connect_timeout"], values["http_client_request_timeout"]), (2.0, 5.0)
        )
        self.assertEqual((values["log_level"], values["log_prefix"]), ("info", "[nsq_to_file] "))
        self.assertEqual(values["identifier"], "box")
        self.assertFalse(values["keep_rev"])
        self.assertIsNone(values["pattern"])
        self.assertEqual(values["consumer_options"], {"user_agent": user_agent("nsq_to_file")})

    def test_go_syntax(self) -> None:
        """Go flag syntax: single dashes, separate values, bare booleans, durations."""
        values = _values(
            "-topic",
            "a",
            "--topic=b",
            "-lookupd-http-address=l:4161",
            "--gzip",
            "-rotate-interval",
            "1m30s",
            "--work-dir=/w",
            "--host-identifier=<HOSTNAME>",
            "--consumer-opt=max_in_flight,9",
            "--consumer-opt=max_attempts,3",
        )
        self.assertEqual(values["topics"], ["a", "b"])
        self.assertEqual(values["rotate_interval"], 90.0)
        self.assertTrue(values["gzip"] and values["keep_rev"])
        self.assertEqual(values["work_dir"], "/w")
        self.assertEqual(values["identifier"], "box.example.com")
        self.assertEqual(values["consumer_options"]["max_attempts"], 3)
        self.assertNotIn("max_in_flight", values["consumer_options"])
        self.assertEqual(values["file_options"].max_in_flight, 200)

    def test_errors(self) -> None:
        """Go's validation messages."""
        nsqd = "--nsqd-tcp-address=x:1"
        cases = [
            ((nsqd, "--topic=t", "--channel="), "--channel is required"),
            ((nsqd, "--topic=t", "--log-level=loud"), "--log-level is invalid"),
            (
                (nsqd, "--topic=t", "--http-client-connect-timeout=0"),
                "--http-client-connect-timeout should be positive",
            ),
            (
                (nsqd, "--topic=t", "--http-client-request-timeout=0"),
                "--http-client-request-timeout should be positive",
            ),
            (("--topic=t",), "--nsqd-tcp-address or --lookupd-http-address required."),
            (
                (nsqd, "--lookupd-http-address=y:2", "--topic=t"),
                "use --nsqd-tcp-address or --lookupd-http-address not both",
            ),
            ((nsqd, "--topic=t", "--gzip-level=10"), "invalid --gzip-level value (10), should be 1-9"),
            ((nsqd,), "--topic or --topic-pattern required"),
            (
                (nsqd, "--topic-pattern=x"),
                "--lookupd-http-address must be specified when no --topic specified",
            ),
            (
                (nsqd, "--topic=t", "--gzip", "--filename-format=<TOPIC>.log"),
                "missing <REV> in --filename-format when gzip, rotation, or work dir enabled",
            ),
            ((nsqd, "--topic=t", "--max-in-flight=0"), "--max-in-flight must be at least 1"),
        ]
        for argv, message in cases:
            e = self.assertRaises(FlagError, _values, *argv)
            self.assertEqual(str(e), message, argv)
        self.assertRaises(FlagError, _values, nsqd, "--topic=t", "--topic-pattern=(")

    def test_lookupd_helpers(self) -> None:
        """The /topics URL and reply, in both reply formats."""
        self.assertEqual(lookupd_topics_url("h:4161"), "http://h:4161/topics")
        self.assertEqual(lookupd_topics_url("https://h:4161/"), "https://h:4161/topics")
        self.assertEqual(topics_from_reply({"topics": ["a", "b"]}), ["a", "b"])
        self.assertEqual(topics_from_reply({"data": {"topics": ["a"]}}), ["a"])
        self.assertEqual(topics_from_reply({"topics": None}), [])
        self.assertEqual(topics_from_reply("nonsense"), [])


class NSQToFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.log: list[str] = []
        self.consumers: dict[str, _FakeConsumer] = {}
        self.http = _FakeHTTP()
        self.out = self.mktemp()
        os.makedirs(self.out)

    def _factory(self, topic: str, handler: Callable[[Any], object]) -> _FakeConsumer:
        consumer = self.consumers[topic] = _FakeConsumer(topic, handler, self.log)
        return consumer

    def _app(self, *argv: str) -> NSQToFile:
        values = _values(f"--output-dir={self.out}", *argv)
        app = NSQToFile(values, self.clock, run_here, self._factory, self.http, tz=UTC)
        self.addCleanup(self._stop, app)
        return app

    def _stop(self, app: NSQToFile) -> None:
        stopped = app.stop()
        for consumer in self.consumers.values():
            if not consumer.stopped.called:
                consumer.stopped.callback(None)
        self.successResultOf(stopped)

    def test_given_topics(self) -> None:
        """Each --topic gets a consumer and a logger; the pattern filters given topics too."""
        app = self._app(
            "--nsqd-tcp-address=x:1", "--topic=a", "--topic=b", "--topic=ab", "--topic-pattern=^a"
        )
        app.start()
        self.assertEqual(sorted(app.loggers), ["a", "ab"])
        self.assertEqual(self.log, ["start a", "start ab"])
        # No discovery with given topics.
        self.clock.advance(120)
        self.assertEqual(self.http.urls, [])

    def test_discovery(self) -> None:
        """Without --topic, lookupd's topics matching the pattern are consumed, re-read every refresh."""
        app = self._app("--lookupd-http-address=l:1", "--topic-pattern=^keep", "--topic-refresh=10s")
        self.http.replies["http://l:1/topics"] = {"topics": ["keep1", "drop"]}
        app.start()
        self.assertEqual(sorted(app.loggers), ["keep1"])
        self.http.replies["http://l:1/topics"] = {"topics": ["keep1", "drop", "keep2"]}
        self.clock.advance(10)
        self.assertEqual(sorted(app.loggers), ["keep1", "keep2"])
        self.assertEqual(self.log, ["start keep1", "start keep2"])
        self.assertEqual(len(self.http.urls), 2)

    def test_discovery_lookupd_failure(self) -> None:
        """One lookupd failing still lets the other's topics in; all failing changes nothing."""
        app = self._app("--lookupd-http-address=l:1", "--lookupd-http-address=l:2", "--topic-pattern=.")
        self.http.replies["http://l:1/topics"] = ConnectionRefusedError()
        self.http.replies["http://l:2/topics"] = {"topics": ["t"]}
        app.start()
        self.assertEqual(list(app.loggers), ["t"])
        self.http.replies["http://l:2/topics"] = ConnectionRefusedError()
        self.clock.advance(60)
        self.assertEqual(list(app.loggers), ["t"])

    def test_sync_interval(self) -> None:
        """Every --sync-interval each topic syncs and its messages are finished."""
        app = self._app("--nsqd-tcp-address=x:1", "--topic=t", "--sync-interval=5s")
        app.start()
        message = FakeMessage(b"hello")
        self.consumers["t"].handler(message)
        self.clock.advance(4.9)
        self.assertFalse(message.finished)
        self.clock.advance(0.1)
        self.assertTrue(message.finished)

    def test_starved_consumer(self) -> None:
        """The logger asks its consumer whether it is starved."""
        app = self._app("--nsqd-tcp-address=x:1", "--topic=t")
        app.start()
        self.consumers["t"].starved = True
        message = FakeMessage(b"x")
        self.consumers["t"].handler(message)
        self.assertTrue(message.finished)

    def test_hup(self) -> None:
        """hup() closes every topic's file; the next message goes to the next revision."""
        app = self._app("--nsqd-tcp-address=x:1", "--topic=t", "--gzip", "--datetime-format=X")
        app.start()
        self.consumers["t"].handler(FakeMessage(b"1"))
        app.hup()
        self.consumers["t"].handler(FakeMessage(b"2"))
        stopped = app.stop()
        self.consumers["t"].stopped.callback(None)
        self.successResultOf(stopped)
        names = sorted(os.listdir(self.out))
        self.assertEqual(names, ["t.box-000000.X.log.gz", "t.box-000001.X.log.gz"])

    def test_stop_order(self) -> None:
        """stop(): sync what is held, stop the consumers (still syncing), then close the files."""
        app = self._app("--nsqd-tcp-address=x:1", "--topic=t", "--work-dir=" + self.mktemp())
        app.start()
        held = FakeMessage(b"held")
        self.consumers["t"].handler(held)
        stopped = app.stop()
        self.assertIs(app.stop(), stopped)
        self.assertEqual(self.log, ["start t", "stop t"])
        self.assertTrue(held.finished)
        # Delivered between CLS and CLOSE_WAIT: written and finished at once.
        late = FakeMessage(b"late")
        self.consumers["t"].handler(late)
        self.assertTrue(late.finished)
        self.assertNoResult(stopped)
        self.assertEqual(os.listdir(self.out), [])
        self.consumers["t"].stopped.callback(None)
        self.successResultOf(stopped)
        [name] = os.listdir(self.out)
        with open(os.path.join(self.out, name), "rb") as f:
            self.assertEqual(f.read(), b"held\nlate\n")
        # The timers are gone.
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_fatal(self) -> None:
        """A failing file operation reaches on_fatal."""
        fatal: list[Failure] = []
        values = _values("--output-dir=/proc/no/such/dir", "--nsqd-tcp-address=x:1", "--topic=t")
        app = NSQToFile(values, self.clock, run_here, self._factory, None, on_fatal=fatal.append, tz=UTC)
        self.addCleanup(self._stop, app)
        app.start()
        message = FakeMessage(b"x")
        self.consumers["t"].handler(message)
        self.assertEqual(len(fatal), 1)
        self.assertEqual(message.requeued, [(0, False)])
