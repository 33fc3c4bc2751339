"""
The benchmark's client-side code on fixed bytes: the commands it sends, the frames it reads and
the percentile arithmetic it reports. Nothing here measures speed.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import struct

from twisted.trial.unittest import SynchronousTestCase

from bench.proto import (
    FRAME_ERROR,
    FRAME_RESPONSE,
    OK_FRAME,
    ProtocolError,
    fin_lines,
    latency_body,
    latency_summary,
    mpub_command,
    percentile,
    pub_command,
    read_latency_stamp,
    take_frames,
    take_messages,
)
from bench.report import GO_BYTES_PER_MSG, aggregate, render, summary_table
from bench.scale import FileLimitError, identify_command, raise_file_limit
from bench.sink import SinkConnection, message_frame
from bench.tools import go_duration, host_port


def _frame(frame_type: int, payload: bytes) -> bytes:
    return struct.pack(">ii", len(payload) + 4, frame_type) + payload


def _message(message_id: bytes, body: bytes, timestamp: int = 1_700_000_000_000_000_000) -> bytes:
    return _frame(2, struct.pack(">qH", timestamp, 1) + message_id + body)


ID_A = b"0123456789abcdef"
ID_B = b"fedcba9876543210"
STREAM = (
    OK_FRAME
    + _message(ID_A, b"hello")
    + _frame(FRAME_RESPONSE, b"_heartbeat_")
    + _message(ID_B, b"")
    + _frame(FRAME_ERROR, b"E_FIN_FAILED FIN x failed")
)


class CommandTests(SynchronousTestCase):
    def test_pub(self) -> None:
        self.assertEqual(pub_command("t", b"abc"), b"PUB t\n\x00\x00\x00\x03abc")

    def test_mpub(self) -> None:
        self.assertEqual(
            mpub_command("t", [b"ab", b"c"]),
            b"MPUB t\n\x00\x00\x00\x0f" + b"\x00\x00\x00\x02" + b"\x00\x00\x00\x02ab" + b"\x00\x00\x00\x01c",
        )

    def test_fin_lines(self) -> None:
        self.assertEqual(fin_lines([ID_A, bytearray(ID_B)]), b"FIN " + ID_A + b"\nFIN " + ID_B + b"\n")

    def test_ok_frame(self) -> None:
        self.assertEqual(OK_FRAME, _frame(FRAME_RESPONSE, b"OK"))


class TakeFramesTests(SynchronousTestCase):
    def test_whole_stream(self) -> None:
        ids: list[bytearray] = []
        others: list[tuple[int, bytes]] = []
        offset = take_frames(bytearray(STREAM), 0, ids, others)
        self.assertEqual(offset, len(STREAM))
        self.assertEqual([bytes(i) for i in ids], [ID_A, ID_B])
        self.assertEqual(
            others,
            [
                (FRAME_RESPONSE, b"OK"),
                (FRAME_RESPONSE, b"_heartbeat_"),
                (FRAME_ERROR, b"E_FIN_FAILED FIN x failed"),
            ],
        )

    def test_byte_by_byte(self) -> None:
        """Fed one byte at a time, as the consumer loop feeds reads, the same frames come out."""
        buffer = bytearray()
        ids: list[bytearray] = []
        others: list[tuple[int, bytes]] = []
        for i in range(len(STREAM)):
            buffer += STREAM[i : i + 1]
            offset = take_frames(buffer, 0, ids, others)
            del buffer[:offset]
        self.assertEqual(bytes(buffer), b"")
        self.assertEqual([bytes(i) for i in ids], [ID_A, ID_B])
        self.assertEqual(len(others), 3)

    def test_partial_frame_left(self) -> None:
        ids: list[bytearray] = []
        others: list[tuple[int, bytes]] = []
        partial = _message(ID_B, b"body")[:-1]
        offset = take_frames(bytearray(OK_FRAME + partial), 0, ids, others)
        self.assertEqual(offset, len(OK_FRAME))
        self.assertEqual(ids, [])

    def test_bad_size(self) -> None:
        with self.assertRaises(ProtocolError):
            take_frames(bytearray(struct.pack(">ii", 3, 0)), 0, [], [])

    def test_messages_with_bodies(self) -> None:
        messages: list[tuple[bytes, bytes]] = []
        others: list[tuple[int, bytes]] = []
        offset = take_messages(bytearray(STREAM), 0, messages, others)
        self.assertEqual(offset, len(STREAM))
        self.assertEqual(messages, [(ID_A, b"hello"), (ID_B, b"")])
        self.assertEqual(len(others), 3)

    def test_short_message(self) -> None:
        with self.assertRaises(ProtocolError):
            take_messages(bytearray(_frame(2, b"too short")), 0, [], [])


class LatencyTests(SynchronousTestCase):
    def test_stamp_round_trip(self) -> None:
        body = latency_body(42, 123_456_789, 100)
        self.assertEqual(len(body), 100)
        self.assertEqual(read_latency_stamp(body), (42, 123_456_789))

    def test_body_too_small(self) -> None:
        with self.assertRaises(ValueError):
            latency_body(0, 0, 15)

    def test_percentile_nearest_rank(self) -> None:
        values = list(range(1, 101))
        self.assertEqual(percentile(values, 50), 50)
        self.assertEqual(percentile(values, 99), 99)
        self.assertEqual(percentile(values, 99.9), 100)
        self.assertEqual(percentile(values, 100), 100)
        self.assertEqual(percentile(values, 0.5), 1)
        self.assertEqual(percentile([7], 50), 7)
        self.assertEqual(percentile([1, 2, 3, 4], 50), 2)

    def test_percentile_rejects(self) -> None:
        with self.assertRaises(ValueError):
            percentile([], 50)
        with self.assertRaises(ValueError):
            percentile([1], 0)
        with self.assertRaises(ValueError):
            percentile([1], 101)

    def test_summary_in_microseconds(self) -> None:
        # 1,000 latencies of 1..1000 us, unsorted.
        latencies = [((i * 7919) % 1000 + 1) * 1000 for i in range(1000)]
        summary = latency_summary(latencies)
        self.assertEqual(summary["count"], 1000)
        self.assertEqual(summary["p50_us"], 500)
        self.assertEqual(summary["p99_us"], 990)
        self.assertEqual(summary["p999_us"], 999)
        self.assertEqual(summary["max_us"], 1000)
        self.assertEqual(summary["mean_us"], 500.5)


class RenderTests(SynchronousTestCase):
    def test_tables(self) -> None:
        rows = [
            {
                "workload": "pub-100",
                "name": "pub-100",
                "kind": "throughput",
                "messages": 30000,
                "seconds": 1.5,
                "msgs_per_s": 20000.0,
                "mb_per_s": 2.0,
                "nsqd_cpu_us_per_msg": 40.0,
                "rss_kib": 51200,
                "idle_rss_kib": 40960,
                "peak_rss_kib": 51200,
                "tcp_ready_s": 0.25,
                "ping_ready_s": None,
                "shutdown_s": 0.1,
            },
            {
                "workload": "latency-rdy1",
                "name": "latency-rdy1",
                "kind": "latency",
                "rate": 1000,
                "rdy": 1,
                "count": 5000,
                "p50_us": 92.0,
                "p90_us": 150.0,
                "p99_us": 2650.0,
                "p999_us": 1_500_000.0,
                "max_us": 2_000_000.0,
                "publisher_max_lag_us": 10.0,
                "idle_rss_kib": 40960,
                "rss_kib": 41984,
                "peak_rss_kib": 41984,
                "tcp_ready_s": 0.35,
                "ping_ready_s": 0.4,
                "killed": True,
            },
        ]
        text = render(rows, [{"name": "consume", "error": "ServerError: boom"}])
        self.assertEqual(
            _cells(text, "pub-100 "),
            # RSS at the end and peak RSS (VmHWM), both 50.0 MiB here.
            ["pub-100", "30,000", "1.50", "20,000", "2.0", "40.0", "50.0", "50.0", "-"],
        )
        self.assertEqual(
            _cells(text, "latency-rdy1 "),
            [
                "latency-rdy1",
                "1,000/s",
                "1",
                "5,000",
                "92",
                "us",
                "150",
                "us",
                "2.6",
                "ms",
                "1.50",
                "s",
                "2.00",
                "s",
                "10",
                "us",
            ],
        )
        self.assertEqual(_cells(text, "idle RSS at start")[-2:], ["40.0", "MiB"])
        self.assertEqual(_cells(text, "start to first /ping OK (median)")[-2:], ["0.40", "s"])
        self.assertEqual(
            _cells(text, "SIGTERM to exit after latency-rdy1")[-3:], ["killed", "after", "timeout"]
        )
        self.assertIn("FAILED consume: ServerError: boom", text)


def _cells(text: str, start: str) -> list[str]:
    """The whitespace-separated cells of the one line of C{text} that starts with C{start}."""
    (line,) = [line for line in text.splitlines() if line.startswith(start)]
    return line.split()


class SinkTests(SynchronousTestCase):
    """The sink answers on fixed bytes as nsqd would, and keeps RDY messages in flight."""

    def setUp(self) -> None:
        here, there = socket.socketpair()
        self.addCleanup(here.close)
        self.addCleanup(there.close)
        self.frame = message_frame(10)
        self.conn = SinkConnection(here, self.frame)

    def test_message_frame(self) -> None:
        ids: list[bytearray] = []
        messages: list[tuple[bytes, bytes]] = []
        self.assertEqual(take_frames(bytearray(self.frame), 0, ids, []), len(self.frame))
        take_messages(bytearray(self.frame), 0, messages, [])
        self.assertEqual(messages, [(b"0123456789abcdef", b"m" * 10)])

    def test_publish_answers_ok(self) -> None:
        stream = b"  V2" + pub_command("t", b"x\ny") + mpub_command("t", [b"a", b"b"]) + b"SUB t c\n"
        # Fed in pieces: a command split across reads is answered once it is complete.
        self.assertTrue(self.conn.feed(stream[:9]))
        self.assertEqual(bytes(self.conn.out), b"")
        self.assertTrue(self.conn.feed(stream[9:]))
        self.assertEqual(bytes(self.conn.out), OK_FRAME * 3)

    def test_rdy_and_fin(self) -> None:
        self.assertTrue(self.conn.feed(b"  V2RDY 3\n"))
        self.assertEqual(bytes(self.conn.out), self.frame * 3)
        self.conn.out.clear()
        self.assertTrue(self.conn.feed(fin_lines([ID_A, ID_B])))
        self.assertEqual(bytes(self.conn.out), self.frame * 2)
        self.assertEqual(self.conn.in_flight, 3)

    def test_close_and_garbage(self) -> None:
        self.assertFalse(self.conn.feed(b"  V2CLS\n"))
        here, there = socket.socketpair()
        self.addCleanup(here.close)
        self.addCleanup(there.close)
        self.assertFalse(SinkConnection(here, self.frame).feed(b"  V1PUB"))


class ToolsTests(SynchronousTestCase):
    def test_go_duration(self) -> None:
        self.assertEqual(go_duration("10s"), 10.0)
        self.assertEqual(go_duration("1m30s"), 90.0)
        self.assertEqual(go_duration("250ms"), 0.25)
        self.assertEqual(go_duration("2.5"), 2.5)
        with self.assertRaises(argparse.ArgumentTypeError):
            go_duration("10 seconds")

    def test_host_port(self) -> None:
        self.assertEqual(host_port("127.0.0.1:4150"), ("127.0.0.1", 4150))
        self.assertEqual(host_port(":4150"), ("127.0.0.1", 4150))
        with self.assertRaises(argparse.ArgumentTypeError):
            host_port("localhost")


class ScaleTests(SynchronousTestCase):
    def test_identify(self) -> None:
        command = identify_command(1000, "idle-1")
        self.assertTrue(command.startswith(b"IDENTIFY\n"))
        (size,) = struct.unpack(">i", command[9:13])
        body = json.loads(command[13:])
        self.assertEqual(size, len(command) - 13)
        self.assertEqual(body["heartbeat_interval"], 1000)
        self.assertTrue(body["feature_negotiation"])

    def test_file_limit(self) -> None:
        """Within the hard limit the soft one is raised to it; past it the error says so."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        if hard == resource.RLIM_INFINITY:
            self.assertGreaterEqual(raise_file_limit(soft + 1), soft + 1)
            return
        self.assertEqual(raise_file_limit(min(soft, hard)), hard)
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
        with self.assertRaises(FileLimitError) as caught:
            raise_file_limit(hard + 1)
        self.assertIn(str(hard), str(caught.exception))


def _rate_row(name: str, rate: float, **extra: object) -> dict[str, object]:
    return {"name": name, "kind": "throughput", "msgs_per_s": rate, "mb_per_s": rate / 1e4, **extra}


class SummaryTests(SynchronousTestCase):
    def test_aggregate_medians(self) -> None:
        runs = [[_rate_row("pub-100", rate, flag="x")] for rate in (30_000.0, 10_000.0, 20_000.0)]
        (row,) = aggregate(runs)
        self.assertEqual(row["msgs_per_s"], 20_000.0)
        self.assertEqual(row["flag"], "x")
        self.assertEqual(row["runs"], 3)
        self.assertEqual(row["runs_msgs_per_s"], [30_000.0, 10_000.0, 20_000.0])

    def test_targets(self) -> None:
        rows = [
            _rate_row("pub-100", 26_000.0),
            _rate_row("mpub-100", 200_000.0),
            _rate_row(
                "consume-100",
                300_000.0,
                rss_after_fill_kib=300 * 1024,
                bytes_per_queued_msg=1.6 * GO_BYTES_PER_MSG,
            ),
            _rate_row("sink-pub-100", 52_000.0),
            {"name": "latency-rdy1", "kind": "latency", "p50_us": 100.0, "p99_us": 600.0},
            {
                "name": "startup",
                "kind": "server",
                "idle_rss_kib": 39 * 1024,
                "ping_ready_s": 0.3,
                "tcp_ready_s": 0.29,
            },
        ]
        text = summary_table(rows, [{"name": "pubsub", "error": "ServerError: boom"}])
        self.assertEqual(_cells(text, "PUB 100 B")[-4:], ["84%", ">=", "80%", "yes"])
        self.assertEqual(_cells(text, "MPUB x200 100 B (mem-queue 1M")[-1], "NO")
        self.assertEqual(_cells(text, "consume 100 B")[-1], "yes")
        self.assertEqual(_cells(text, "latency at 1,000/s, RDY 1 ")[-1], "NO")
        self.assertEqual(_cells(text, "RSS holding")[-1], "NO")
        self.assertEqual(_cells(text, "idle RSS")[-1], "yes")
        self.assertEqual(_cells(text, "start to first")[-1], "yes")
        self.assertIn("2.0x", _cells(text, "client ceiling: PUB"))
        self.assertIn("error:", _cells(text, "publish while consuming: publish"))
        self.assertEqual(_cells(text, "publish while consuming: publish")[-1], "NO")
        self.assertEqual(_cells(text, "consume 200 B")[-1], "-")
