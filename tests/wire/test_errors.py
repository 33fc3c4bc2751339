# (twisted.trial assertions are unannotated in Twisted 26.10.)
"""Tests for L{twisted_nsq.wire.errors}."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq.wire import errors
from twisted_nsq.wire.errors import (
    ALL_CODES,
    E_FIN_FAILED,
    E_INVALID,
    E_REQ_FAILED,
    E_TOUCH_FAILED,
    NON_FATAL_CODES,
    NSQError,
)

# Every code nsqd 1.3.0 can send (spec section 1.3).
SPEC_CODES = [
    "E_INVALID",
    "E_BAD_PROTOCOL",
    "E_BAD_BODY",
    "E_BAD_TOPIC",
    "E_BAD_CHANNEL",
    "E_BAD_MESSAGE",
    "E_IDENTIFY_FAILED",
    "E_AUTH_DISABLED",
    "E_AUTH_FAILED",
    "E_AUTH_FIRST",
    "E_AUTH_ERROR",
    "E_UNAUTHORIZED",
    "E_SUB_FAILED",
    "E_PUB_FAILED",
    "E_MPUB_FAILED",
    "E_DPUB_FAILED",
    "E_FIN_FAILED",
    "E_REQ_FAILED",
    "E_TOUCH_FAILED",
]


class CodeTests(SynchronousTestCase):
    def test_constants(self) -> None:
        """Each code has a module constant whose value is its own name."""
        for code in SPEC_CODES:
            self.assertEqual(getattr(errors, code), code)

    def test_all_codes(self) -> None:
        """L{ALL_CODES} is exactly the spec's list."""
        self.assertEqual(ALL_CODES, frozenset(SPEC_CODES))
        self.assertEqual(len(ALL_CODES), 19)

    def test_non_fatal_codes(self) -> None:
        """Only FIN, REQ and TOUCH failures leave the connection open."""
        self.assertEqual(NON_FATAL_CODES, frozenset({"E_FIN_FAILED", "E_REQ_FAILED", "E_TOUCH_FAILED"}))
        self.assertTrue(NON_FATAL_CODES <= ALL_CODES)


class NSQErrorTests(SynchronousTestCase):
    def test_attributes(self) -> None:
        error = NSQError(E_INVALID, "invalid command FOO")
        self.assertEqual(error.code, "E_INVALID")
        self.assertEqual(error.message, "invalid command FOO")
        self.assertIsInstance(error, Exception)

    def test_message_defaults_to_empty(self) -> None:
        self.assertEqual(NSQError(E_INVALID).message, "")

    def test_fatal(self) -> None:
        """Every code is fatal except the three non-fatal ones."""
        for code in SPEC_CODES:
            self.assertEqual(
                NSQError(code, "x").fatal,
                code not in ("E_FIN_FAILED", "E_REQ_FAILED", "E_TOUCH_FAILED"),
                code,
            )
        self.assertFalse(NSQError(E_FIN_FAILED).fatal)
        self.assertFalse(NSQError(E_REQ_FAILED).fatal)
        self.assertFalse(NSQError(E_TOUCH_FAILED).fatal)
        self.assertTrue(NSQError("E_SOMETHING_NEW").fatal)

    def test_payload(self) -> None:
        self.assertEqual(
            NSQError(E_INVALID, "invalid command FOO").payload(), b"E_INVALID invalid command FOO"
        )

    def test_payload_without_message(self) -> None:
        self.assertEqual(NSQError(E_INVALID).payload(), b"E_INVALID")

    def test_payload_utf8(self) -> None:
        """Names decoded with replacement characters are echoed back as UTF-8."""
        self.assertEqual(NSQError("E_BAD_TOPIC", "bad \ufffd").payload(), b"E_BAD_TOPIC bad \xef\xbf\xbd")

    def test_frame(self) -> None:
        """The error frame is size (4 + payload), type 1, payload."""
        self.assertEqual(
            NSQError(E_FIN_FAILED, "FIN 0000000000000000 failed ID not in flight").frame(),
            b"\x00\x00\x00\x3d\x00\x00\x00\x01E_FIN_FAILED FIN 0000000000000000 failed ID not in flight",
        )
        self.assertEqual(NSQError(E_INVALID).frame(), b"\x00\x00\x00\x0d\x00\x00\x00\x01E_INVALID")

    def test_str(self) -> None:
        self.assertEqual(
            str(NSQError(E_INVALID, "cannot SUB in current state")), "E_INVALID cannot SUB in current state"
        )
        self.assertEqual(str(NSQError(E_INVALID)), "E_INVALID")

    def test_raise(self) -> None:
        with self.assertRaises(NSQError) as caught:
            raise NSQError("E_BAD_BODY", "MPUB failed to read message count")
        self.assertEqual(caught.exception.code, "E_BAD_BODY")
