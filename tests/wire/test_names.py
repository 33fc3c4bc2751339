# (twisted.trial assertions are unannotated in Twisted 26.10.)
"""Tests for L{twisted_nsq.wire.names}."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq.wire.names import is_ephemeral, is_valid_channel_name, is_valid_topic_name

VALID = [
    "t",
    "topic",
    "Topic_1",
    "a.b-c_d",
    "...",
    "-",
    "0",
    "t#ephemeral",
    "a" * 64,
    "a" * 54 + "#ephemeral",
    "a.b#ephemeral",
]

INVALID = [
    "",
    "#ephemeral",
    "a" * 65,
    "a" * 55 + "#ephemeral",
    "has space",
    "tab\there",
    "slash/name",
    "colon:name",
    "t#ephemeral#ephemeral",
    "t#Ephemeral",
    "t#ephemera",
    "t#",
    "#t",
    "t\n",
    "t\r",
    "\u00e9",
    "t\ufffd",
    "t*",
    "t%",
]


class NameTests(SynchronousTestCase):
    def test_valid(self) -> None:
        for name in VALID:
            self.assertTrue(is_valid_topic_name(name), name)
            self.assertTrue(is_valid_channel_name(name), name)

    def test_invalid(self) -> None:
        for name in INVALID:
            self.assertFalse(is_valid_topic_name(name), name)
            self.assertFalse(is_valid_channel_name(name), name)

    def test_length_boundaries(self) -> None:
        """The #ephemeral suffix counts toward the 64 characters."""
        self.assertEqual(len("a" * 54 + "#ephemeral"), 64)
        self.assertTrue(is_valid_topic_name("a" * 64))
        self.assertFalse(is_valid_topic_name("a" * 65))
        self.assertTrue(is_valid_topic_name("a" * 54 + "#ephemeral"))
        self.assertFalse(is_valid_topic_name("a" * 55 + "#ephemeral"))

    def test_decoded_with_replacement(self) -> None:
        """Names decoded from bytes with errors="replace" are invalid if they were not ASCII."""
        self.assertFalse(is_valid_topic_name(b"caf\xc3\xa9".decode("utf-8", "replace")))
        self.assertFalse(is_valid_topic_name(b"t\xff".decode("utf-8", "replace")))
        self.assertTrue(is_valid_topic_name(b"cafe".decode("utf-8", "replace")))

    def test_is_ephemeral(self) -> None:
        self.assertTrue(is_ephemeral("t#ephemeral"))
        self.assertTrue(is_ephemeral("#ephemeral"))
        self.assertFalse(is_ephemeral("t"))
        self.assertFalse(is_ephemeral("t#ephemeral.x"))
        self.assertFalse(is_ephemeral("ephemeral"))
