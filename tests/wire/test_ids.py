# (twisted.trial assertions are unannotated in Twisted 26.10.)
"""Tests for L{twisted_nsq.wire.ids}."""

from __future__ import annotations

import hashlib
import re
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq.wire.ids import TWITTER_EPOCH_MS, IDGenerator, default_node_id

HEX16 = re.compile(rb"[0-9a-f]{16}")

# 2025-01-01T00:00:00Z in nanoseconds.
NOW_NS = 1735689600 * 10**9


def at_ms(ms: int) -> int:
    """A now_ns value whose pseudo-millisecond (now_ns >> 20) relative to the Twitter epoch is C{ms}."""
    return (TWITTER_EPOCH_MS + ms) << 20


def fields(message_id: bytes) -> tuple[int, int, int]:
    """Split an ID into (ts, node_id, sequence)."""
    value = int(message_id, 16)
    return value >> 22, (value >> 12) & 1023, value & 4095


class IDGeneratorTests(SynchronousTestCase):
    def test_format(self) -> None:
        message_id = IDGenerator(7).next_id(NOW_NS)
        self.assertIs(type(message_id), bytes)
        self.assertEqual(len(message_id), 16)
        self.assertIsNotNone(HEX16.fullmatch(message_id))

    def test_layout(self) -> None:
        """ts << 22 | node_id << 12 | seq, with ts = (now_ns >> 20) - epoch."""
        self.assertEqual(IDGenerator(5).next_id(at_ms(1000)), b"%016x" % (1000 << 22 | 5 << 12))
        self.assertEqual(fields(IDGenerator(1023).next_id(at_ms(123456))), (123456, 1023, 0))
        self.assertEqual(fields(IDGenerator(0).next_id(NOW_NS)), ((NOW_NS >> 20) - TWITTER_EPOCH_MS, 0, 0))

    def test_observed_id(self) -> None:
        """An ID seen from Go nsqd 1.3.0 decodes to fields this generator reproduces."""
        observed = b"18a7874809669000"
        ts, node_id, sequence = fields(observed)
        self.assertEqual(sequence, 0)
        self.assertEqual(IDGenerator(node_id).next_id(at_ms(ts)), observed)

    def test_sequence_within_one_ms(self) -> None:
        generator = IDGenerator(3)
        ids = [generator.next_id(at_ms(50)) for _ in range(3)]
        self.assertEqual([fields(message_id) for message_id in ids], [(50, 3, 0), (50, 3, 1), (50, 3, 2)])

    def test_sequence_resets_on_new_ms(self) -> None:
        generator = IDGenerator(3)
        generator.next_id(at_ms(50))
        generator.next_id(at_ms(50))
        self.assertEqual(fields(generator.next_id(at_ms(51))), (51, 3, 0))

    def test_clock_backwards(self) -> None:
        """A clock that goes backwards keeps using the last timestamp."""
        generator = IDGenerator(9)
        first = generator.next_id(at_ms(1000))
        second = generator.next_id(at_ms(900))
        self.assertGreater(second, first)
        self.assertEqual(fields(second), (1000, 9, 1))
        self.assertEqual(fields(generator.next_id(at_ms(1001))), (1001, 9, 0))

    def test_sequence_overflow(self) -> None:
        """More than 4096 IDs in one ms move the timestamp on by one, logically."""
        generator = IDGenerator(2)
        ids = [generator.next_id(at_ms(70)) for _ in range(5000)]
        self.assertEqual(fields(ids[4095]), (70, 2, 4095))
        self.assertEqual(fields(ids[4096]), (71, 2, 0))
        self.assertEqual(fields(ids[4999]), (71, 2, 903))
        self.assertEqual(len(set(ids)), 5000)
        self.assertEqual(ids, sorted(ids))
        # The real clock reaching the borrowed ms continues after it rather than repeating it.
        self.assertEqual(fields(generator.next_id(at_ms(71))), (71, 2, 904))
        self.assertEqual(fields(generator.next_id(at_ms(72))), (72, 2, 0))

    def test_clock_before_epoch(self) -> None:
        """A clock before the Twitter epoch still gives valid, increasing IDs."""
        generator = IDGenerator(1)
        ids = [generator.next_id(0), generator.next_id(0), generator.next_id(at_ms(1))]
        self.assertEqual([fields(message_id) for message_id in ids], [(0, 1, 0), (0, 1, 1), (1, 1, 0)])
        for message_id in ids:
            self.assertIsNotNone(HEX16.fullmatch(message_id))

    @settings(max_examples=200, deadline=None)
    @given(
        node_id=st.integers(min_value=0, max_value=1023),
        start=st.integers(min_value=0, max_value=2**40),
        steps=st.lists(
            st.one_of(
                st.just(0),
                st.integers(min_value=-(10**12), max_value=10**12),
                st.integers(min_value=-(2**21), max_value=2**21),
            ),
            min_size=1,
            max_size=200,
        ),
        bursts=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=200),
    )
    def test_strictly_increasing(self, node_id: int, start: int, steps: list[int], bursts: list[int]) -> None:
        """Whatever the clock does, IDs are well-formed, strictly increasing and carry the node ID."""
        generator = IDGenerator(node_id)
        now_ns = at_ms(0) + start * 2**20
        previous = -1
        for step, burst in zip(steps, bursts * (len(steps) // len(bursts) + 1), strict=False):
            now_ns = max(now_ns + step, 0)
            for _ in range(burst):
                message_id = generator.next_id(now_ns)
                self.assertIsNotNone(HEX16.fullmatch(message_id))
                value = int(message_id, 16)
                self.assertGreater(value, previous)
                self.assertEqual((value >> 12) & 1023, node_id)
                previous = value

    def test_many_in_one_ms_unique(self) -> None:
        generator = IDGenerator(1000)
        ids = [generator.next_id(NOW_NS) for _ in range(20000)]
        self.assertEqual(len(set(ids)), len(ids))
        self.assertEqual(ids, sorted(ids))

    def test_node_id_range(self) -> None:
        IDGenerator(0)
        IDGenerator(1023)
        self.assertRaises(ValueError, IDGenerator, -1)
        self.assertRaises(ValueError, IDGenerator, 1024)

    def test_node_id_attribute(self) -> None:
        self.assertEqual(IDGenerator(42).node_id, 42)


class DefaultNodeIDTests(SynchronousTestCase):
    def test_formula(self) -> None:
        """crc32 (IEEE) of the MD5 digest of the hostname, modulo 1024."""
        for hostname in ("localhost", "nsqd-1.example.com", ""):
            digest = hashlib.md5(hostname.encode()).digest()
            self.assertEqual(default_node_id(hostname), zlib.crc32(digest) % 1024)

    def test_stable(self) -> None:
        self.assertEqual(default_node_id("box"), default_node_id("box"))

    @settings(max_examples=100, deadline=None)
    @given(hostname=st.text(max_size=64))
    def test_in_range(self, hostname: str) -> None:
        node_id = default_node_id(hostname)
        self.assertTrue(0 <= node_id < 1024)
        IDGenerator(node_id)


class BatchIDTests(SynchronousTestCase):
    @given(
        steps=st.lists(st.tuples(st.integers(0, 5 * 2**20), st.integers(1, 5000)), min_size=1, max_size=20)
    )
    @settings(max_examples=100, deadline=None)
    def test_next_ids_matches_next_id(self, steps: list[tuple[int, int]]) -> None:
        one, many = IDGenerator(7), IDGenerator(7)
        now = 1_700_000_000 * 10**9
        for delta, count in steps:
            now += delta - 2**20
            singles = [one.next_id(now) for _ in range(count)]
            self.assertEqual(many.next_ids(now, count), singles)
