"""
The benchmark's client-side code on fixed bytes: the commands it sends, the frames it reads and
the percentile arithmetic it reports. Nothing here measures speed.
"""

from __future__ import annotations

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
from bench.report import render


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
        self.assertEqual(_cells(text, "idle RSS")[-2:], ["40.0", "MiB"])
        self.assertEqual(_cells(text, "start to first /ping")[-2:], ["0.40", "s"])
        self.assertEqual(
            _cells(text, "SIGTERM to exit after latency-rdy1")[-3:], ["killed", "after", "timeout"]
        )
        self.assertIn("FAILED consume: ServerError: boom", text)


def _cells(text: str, start: str) -> list[str]:
    """The whitespace-separated cells of the one line of C{text} that starts with C{start}."""
    (line,) = [line for line in text.splitlines() if line.startswith(start)]
    return line.split()
