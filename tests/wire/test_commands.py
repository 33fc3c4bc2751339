# (twisted.trial assertions are unannotated in Twisted 26.10.)
"""Tests for L{twisted_nsq.wire.commands}."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq.wire.commands import (
    max_mpub_count,
    parse_base10_unsigned,
    parse_int,
    parse_mpub_body,
    split_text_mpub,
)
from twisted_nsq.wire.errors import NSQError

MAX_MSG = 1048576
MAX_BODY = 5242880


def int32(value: int) -> bytes:
    return struct.pack(">i", value)


def mpub(messages: list[bytes]) -> bytes:
    return int32(len(messages)) + b"".join(int32(len(message)) + message for message in messages)


class ParseMPUBBodyTests(SynchronousTestCase):
    def assertMPUBError(
        self, body: bytes, code: str, message: str, max_msg: int = MAX_MSG, max_body: int = MAX_BODY
    ) -> None:
        with self.assertRaises(NSQError) as caught:
            parse_mpub_body(body, max_msg, max_body)
        self.assertEqual((caught.exception.code, caught.exception.message), (code, message))
        self.assertTrue(caught.exception.fatal)

    def test_exact_bytes(self) -> None:
        body = b"\x00\x00\x00\x02\x00\x00\x00\x05hello\x00\x00\x00\x01!"
        self.assertEqual(parse_mpub_body(body, MAX_MSG, MAX_BODY), [b"hello", b"!"])

    def test_items_are_bytes(self) -> None:
        for source in (mpub([b"a", b"bc"]), bytearray(mpub([b"a", b"bc"]))):
            for item in parse_mpub_body(bytes(source), MAX_MSG, MAX_BODY):
                self.assertIs(type(item), bytes)

    def test_trailing_bytes_ignored(self) -> None:
        self.assertEqual(parse_mpub_body(mpub([b"a"]) + b"\x00\x00\x00\x09junk", MAX_MSG, MAX_BODY), [b"a"])

    def test_message_at_max_size(self) -> None:
        self.assertEqual(parse_mpub_body(mpub([b"x" * 10]), 10, MAX_BODY), [b"x" * 10])

    def test_count_unreadable(self) -> None:
        for body in (b"", b"\x00", b"\x00\x00\x00"):
            self.assertMPUBError(body, "E_BAD_BODY", "MPUB failed to read message count")

    def test_count_not_positive(self) -> None:
        self.assertMPUBError(int32(0), "E_BAD_BODY", "MPUB invalid message count 0")
        self.assertMPUBError(int32(-1) + mpub([b"x"])[4:], "E_BAD_BODY", "MPUB invalid message count -1")
        self.assertMPUBError(b"\x80\x00\x00\x00", "E_BAD_BODY", "MPUB invalid message count -2147483648")

    def test_count_limit(self) -> None:
        """At most (max_body_size - 4) // 5 messages: each one takes at least 5 bytes."""
        self.assertEqual(max_mpub_count(MAX_BODY), 1048575)
        self.assertEqual(max_mpub_count(14), 2)
        self.assertEqual(max_mpub_count(13), 1)
        self.assertEqual(parse_mpub_body(mpub([b"a", b"b"]), MAX_MSG, 14), [b"a", b"b"])
        self.assertMPUBError(mpub([b"a", b"b"]), "E_BAD_BODY", "MPUB invalid message count 2", max_body=13)
        self.assertMPUBError(int32(1048576), "E_BAD_BODY", "MPUB invalid message count 1048576")
        self.assertMPUBError(int32(2147483647), "E_BAD_BODY", "MPUB invalid message count 2147483647")
        # The largest allowed count passes the count check and fails on the missing messages.
        self.assertMPUBError(int32(1048575), "E_BAD_MESSAGE", "MPUB failed to read message(0) body size")

    def test_size_unreadable(self) -> None:
        """The index in the message counts from 0 (nsqd prints the loop index)."""
        self.assertMPUBError(int32(1), "E_BAD_MESSAGE", "MPUB failed to read message(0) body size")
        self.assertMPUBError(
            int32(2) + int32(1) + b"a" + b"\x00\x00",
            "E_BAD_MESSAGE",
            "MPUB failed to read message(1) body size",
        )

    def test_size_not_positive(self) -> None:
        self.assertMPUBError(int32(1) + int32(0), "E_BAD_MESSAGE", "MPUB invalid message(0) body size 0")
        self.assertMPUBError(
            int32(3) + int32(1) + b"a" + int32(1) + b"b" + int32(-5) + b"c",
            "E_BAD_MESSAGE",
            "MPUB invalid message(2) body size -5",
        )
        self.assertMPUBError(
            int32(1) + b"\xff\xff\xff\xff", "E_BAD_MESSAGE", "MPUB invalid message(0) body size -1"
        )

    def test_message_too_big(self) -> None:
        self.assertMPUBError(mpub([b"x" * 11]), "E_BAD_MESSAGE", "MPUB message too big 11 > 10", max_msg=10)
        self.assertMPUBError(
            int32(1) + int32(2147483647), "E_BAD_MESSAGE", f"MPUB message too big 2147483647 > {MAX_MSG}"
        )

    def test_short_message(self) -> None:
        self.assertMPUBError(
            int32(1) + int32(5) + b"abcd", "E_BAD_MESSAGE", "MPUB failed to read message body"
        )

    def test_atomic(self) -> None:
        """A bad last message fails the whole batch."""
        body = mpub([b"good", b"fine", b"x" * 11])
        self.assertMPUBError(body, "E_BAD_MESSAGE", "MPUB message too big 11 > 10", max_msg=10)

    def test_prefix(self) -> None:
        with self.assertRaises(NSQError) as caught:
            parse_mpub_body(int32(0), MAX_MSG, MAX_BODY, prefix="HTTP MPUB")
        self.assertEqual(caught.exception.message, "HTTP MPUB invalid message count 0")
        with self.assertRaises(NSQError) as caught:
            parse_mpub_body(b"", MAX_MSG, MAX_BODY, prefix="X")
        self.assertEqual(caught.exception.message, "X failed to read message count")

    @settings(max_examples=150, deadline=None)
    @given(messages=st.lists(st.binary(min_size=1, max_size=50), min_size=1, max_size=20))
    def test_round_trip(self, messages: list[bytes]) -> None:
        self.assertEqual(parse_mpub_body(mpub(messages), MAX_MSG, MAX_BODY), messages)

    @settings(max_examples=150, deadline=None)
    @given(body=st.binary(max_size=64))
    def test_garbage_raises_only_nsq_errors(self, body: bytes) -> None:
        try:
            messages = parse_mpub_body(body, 16, 64)
        except NSQError as error:
            self.assertIn(error.code, ("E_BAD_BODY", "E_BAD_MESSAGE"))
        else:
            self.assertTrue(all(0 < len(message) <= 16 for message in messages))


class SplitTextMPUBTests(SynchronousTestCase):
    def test_split(self) -> None:
        self.assertEqual(split_text_mpub(b"a\nb\n\nc"), [b"a", b"b", b"c"])

    def test_trailing_newline(self) -> None:
        self.assertEqual(split_text_mpub(b"one\ntwo\n"), [b"one", b"two"])

    def test_carriage_return_kept(self) -> None:
        self.assertEqual(split_text_mpub(b"a\r\nb\r\n\r\n"), [b"a\r", b"b\r", b"\r"])

    def test_empty(self) -> None:
        self.assertEqual(split_text_mpub(b""), [])
        self.assertEqual(split_text_mpub(b"\n\n\n"), [])

    def test_spaces_kept(self) -> None:
        self.assertEqual(split_text_mpub(b" a b \n"), [b" a b "])


class ParseIntTests(SynchronousTestCase):
    def test_valid(self) -> None:
        for value, expected in [
            (b"0", 0),
            (b"100", 100),
            (b"-5", -5),
            (b"+7", 7),
            (b"007", 7),
            (b"-0", 0),
            (b"3600000", 3600000),
            (b"9223372036854775807", 2**63 - 1),
            (b"-9223372036854775808", -(2**63)),
            (b"0000000000000000000000001", 1),
        ]:
            self.assertEqual(parse_int(value), expected, value)

    def test_invalid(self) -> None:
        for value in [
            b"",
            b"-",
            b"+",
            b" 1",
            b"1 ",
            b"1_000",
            b"0x10",
            b"1.5",
            b"--1",
            b"+-1",
            b"abc",
            "\u0661".encode(),
            b"9223372036854775808",
            b"-9223372036854775809",
            b"9" * 5000,
        ]:
            self.assertIsNone(parse_int(value), value)

    @settings(max_examples=150, deadline=None)
    @given(number=st.integers(min_value=-(2**63), max_value=2**63 - 1))
    def test_round_trip(self, number: int) -> None:
        self.assertEqual(parse_int(str(number).encode()), number)


class ParseBase10UnsignedTests(SynchronousTestCase):
    def test_valid(self) -> None:
        for value, expected in [(b"0", 0), (b"1", 1), (b"2500", 2500), (b"0010", 10)]:
            self.assertEqual(parse_base10_unsigned(value), expected, value)

    def test_empty_is_zero(self) -> None:
        """nsqd's ByteToBase10 returns 0 without an error for an empty slice ("RDY \\n" is RDY 0)."""
        self.assertEqual(parse_base10_unsigned(b""), 0)

    def test_invalid(self) -> None:
        for value in [b"-1", b"+1", b" 1", b"1 ", b"1.0", b"x", b"1_0", "\u0661".encode()]:
            self.assertIsNone(parse_base10_unsigned(value), value)

    def test_wraps_like_uint64(self) -> None:
        self.assertEqual(parse_base10_unsigned(b"18446744073709551615"), 2**64 - 1)
        self.assertEqual(parse_base10_unsigned(b"18446744073709551616"), 0)
        self.assertEqual(parse_base10_unsigned(b"18446744073709551621"), 5)

    def test_very_long(self) -> None:
        """A 16 KiB digit string (the most a command line holds) is reduced, not refused."""
        value = b"1" + b"0" * 16000
        self.assertEqual(parse_base10_unsigned(value), 10**16000 % 2**64)

    @settings(max_examples=150, deadline=None)
    @given(number=st.integers(min_value=0, max_value=2**70))
    def test_round_trip(self, number: int) -> None:
        self.assertEqual(parse_base10_unsigned(str(number).encode()), number % 2**64)
