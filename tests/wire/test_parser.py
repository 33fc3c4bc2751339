# (twisted.trial assertions are unannotated in Twisted 26.10.)
"""Tests for L{twisted_nsq.wire.parser}."""

from __future__ import annotations

import struct
from collections.abc import Callable

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.wire._chunks import byte_by_byte, cut_points, split_at
from twisted_nsq.wire.errors import NSQError
from twisted_nsq.wire.parser import BodySpec, CommandParser, CommandReceiver

LIMIT = 100


def too_big(length: int) -> NSQError:
    return NSQError("E_BAD_MESSAGE", f"PUB message too big {length} > {LIMIT}")


def invalid(length: int) -> NSQError:
    return NSQError("E_BAD_MESSAGE", f"PUB invalid message body size {length}")


SPEC = BodySpec(limit=LIMIT, too_big=too_big, invalid=invalid)
BIG_SPEC = BodySpec(limit=1024 * 1024, too_big=too_big, invalid=invalid)

# Commands that carry a body in these tests.
BODY_COMMANDS = {
    b"PUB": SPEC,
    b"DPUB": SPEC,
    b"MPUB": SPEC,
    b"IDENTIFY": SPEC,
    b"AUTH": SPEC,
    b"BIG": BIG_SPEC,
}

Event = tuple[object, ...]


class Recorder:
    """A L{CommandReceiver} that records what it is handed, with optional reactions."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.on_command: Callable[[list[bytes]], None] | None = None
        self.on_body: Callable[[list[bytes], bytes], None] | None = None

    def command_received(self, params: list[bytes]) -> BodySpec | None:
        self.events.append(("command", params))
        if self.on_command is not None:
            self.on_command(params)
        return BODY_COMMANDS.get(params[0])

    def body_received(self, params: list[bytes], body: bytes) -> None:
        self.events.append(("body", params, body))
        if self.on_body is not None:
            self.on_body(params, body)

    def parse_error(self, error: NSQError) -> None:
        self.events.append(("error", error.code, error.message))


def sized(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


def make(max_line_length: int = 16384) -> tuple[Recorder, CommandParser]:
    receiver = Recorder()
    receiver_as_protocol: CommandReceiver = receiver
    return receiver, CommandParser(receiver_as_protocol, max_line_length)


def run(chunks: list[bytes], max_line_length: int = 16384) -> tuple[list[Event], CommandParser]:
    receiver, parser = make(max_line_length)
    for chunk in chunks:
        parser.feed(chunk)
    return receiver.events, parser


IDENTIFY_JSON = b'{"client_id":"c1","feature_negotiation":true}'
MPUB_BODY = struct.pack(">i", 2) + sized(b"a\nb") + sized(b"\r\n")

STREAM = b"".join(
    [
        b"IDENTIFY\n",
        sized(IDENTIFY_JSON),
        b"SUB t1 ch1\r\n",
        b"RDY 10\n",
        b"PUB t1\n",
        sized(b"hello"),
        b"FIN 0123456789abcdef\n",
        b"\n",
        b"PUB  t1\n",
        sized(b"\n"),
        b"NOP\n",
        b"MPUB t1\n",
        sized(MPUB_BODY),
        b"REQ 0123456789abcdef 0 \n",
        b"CLS\n",
    ]
)

STREAM_EVENTS: list[Event] = [
    ("command", [b"IDENTIFY"]),
    ("body", [b"IDENTIFY"], IDENTIFY_JSON),
    ("command", [b"SUB", b"t1", b"ch1"]),
    ("command", [b"RDY", b"10"]),
    ("command", [b"PUB", b"t1"]),
    ("body", [b"PUB", b"t1"], b"hello"),
    ("command", [b"FIN", b"0123456789abcdef"]),
    ("command", [b""]),
    ("command", [b"PUB", b"", b"t1"]),
    ("body", [b"PUB", b"", b"t1"], b"\n"),
    ("command", [b"NOP"]),
    ("command", [b"MPUB", b"t1"]),
    ("body", [b"MPUB", b"t1"], MPUB_BODY),
    ("command", [b"REQ", b"0123456789abcdef", b"0", b""]),
    ("command", [b"CLS"]),
]


class StreamTests(SynchronousTestCase):
    """The same events whatever pieces the stream arrives in."""

    def test_whole(self) -> None:
        events, parser = run([STREAM])
        self.assertEqual(events, STREAM_EVENTS)
        self.assertEqual(parser.buffered, 0)

    def test_byte_by_byte(self) -> None:
        events, parser = run(byte_by_byte(STREAM))
        self.assertEqual(events, STREAM_EVENTS)
        self.assertEqual(parser.buffered, 0)

    def test_trailing_data(self) -> None:
        """An incomplete command at the end is held, then completed by the next feed."""
        receiver, parser = make()
        parser.feed(STREAM + b"PUB t2\n\x00\x00")
        self.assertEqual(receiver.events, [*STREAM_EVENTS, ("command", [b"PUB", b"t2"])])
        self.assertEqual(parser.buffered, 2)
        parser.feed(b"\x00\x02o")
        self.assertEqual(parser.buffered, 1)
        parser.feed(b"kNO")
        self.assertEqual(receiver.events[-1], ("body", [b"PUB", b"t2"], b"ok"))
        self.assertEqual(parser.buffered, 2)
        parser.feed(b"P\n")
        self.assertEqual(receiver.events[-1], ("command", [b"NOP"]))
        self.assertEqual(parser.buffered, 0)

    @settings(max_examples=200, deadline=None)
    @given(cuts=cut_points(len(STREAM)))
    def test_split_points(self, cuts: list[int]) -> None:
        events, parser = run(split_at(STREAM, cuts))
        self.assertEqual(events, STREAM_EVENTS)
        self.assertEqual(parser.buffered, 0)

    @settings(max_examples=100, deadline=None)
    @given(
        commands=st.lists(
            st.tuples(
                st.sampled_from([b"NOP", b"RDY", b"FIN", b"PUB", b"DPUB", b"X"]),
                st.lists(
                    st.binary(max_size=8).filter(lambda param: b"\n" not in param and b" " not in param)
                ),
                st.booleans(),
                st.binary(min_size=1, max_size=LIMIT),
            ),
            max_size=8,
        ),
        data=st.data(),
    )
    def test_any_commands_any_split(
        self, commands: list[tuple[bytes, list[bytes], bool, bytes]], data: st.DataObject
    ) -> None:
        """Generated command streams parse to the expected events at any split points."""
        pieces: list[bytes] = []
        expected: list[Event] = []
        for name, params, crlf, body in commands:
            line = b" ".join([name, *params])
            if line.endswith(b"\r"):
                # A line ending in "\r" would lose it; keep the generated data unambiguous.
                line += b"x"
            pieces.append(line + (b"\r\n" if crlf else b"\n"))
            split = line.split(b" ")
            expected.append(("command", split))
            if name in BODY_COMMANDS:
                pieces.append(sized(body))
                expected.append(("body", split, body))
        stream = b"".join(pieces)
        events, _ = run(split_at(stream, data.draw(cut_points(len(stream)))))
        self.assertEqual(events, expected)

    def test_params_are_bytes(self) -> None:
        events, _ = run([b"PUB t\n" + sized(b"x")])
        for event in events:
            for params in event[1:2]:
                assert isinstance(params, list)
                for param in params:
                    self.assertIs(type(param), bytes)
        self.assertIs(type(events[1][2]), bytes)

    def test_large_body(self) -> None:
        """A body of a few hundred KiB arrives intact, as bytes."""
        body = bytes(range(256)) * 1024
        stream = b"BIG t\n" + sized(body) + b"NOP\n"
        events, parser = run([stream[index : index + 4096] for index in range(0, len(stream), 4096)])
        self.assertEqual(
            events, [("command", [b"BIG", b"t"]), ("body", [b"BIG", b"t"], body), ("command", [b"NOP"])]
        )
        self.assertIs(type(events[1][2]), bytes)
        self.assertEqual(parser.buffered, 0)

    def test_body_is_not_parsed_as_lines(self) -> None:
        events, _ = run([b"PUB t\n" + sized(b"FIN x\nNOP\n") + b"NOP\n"])
        self.assertEqual(
            events,
            [("command", [b"PUB", b"t"]), ("body", [b"PUB", b"t"], b"FIN x\nNOP\n"), ("command", [b"NOP"])],
        )


class LineTests(SynchronousTestCase):
    def test_crlf(self) -> None:
        """One "\\r" right before the "\\n" is dropped; others are kept."""
        events, _ = run([b"NOP\r\n", b"A\r\r\n", b"B\rC\n", b"\r\n", b"\r\r\n"])
        self.assertEqual(
            [event[1] for event in events],
            [[b"NOP"], [b"A\r"], [b"B\rC"], [b""], [b"\r"]],
        )

    def test_single_space_split(self) -> None:
        events, _ = run([b"SUB  t\n", b"\n", b" \n", b"SUB t c \n", b"RDY\t5\n"])
        self.assertEqual(
            [event[1] for event in events],
            [[b"SUB", b"", b"t"], [b""], [b"", b""], [b"SUB", b"t", b"c", b""], [b"RDY\t5"]],
        )

    def test_line_at_cap(self) -> None:
        """A line whose "\\n" lies within the first max_line_length bytes is accepted."""
        events, _ = run([b"123456789\n"], max_line_length=10)
        self.assertEqual(events, [("command", [b"123456789"])])
        events, _ = run([b"12345678\r\n"], max_line_length=10)
        self.assertEqual(events, [("command", [b"12345678"])])

    def test_line_over_cap(self) -> None:
        events, parser = run([b"1234567890\n"], max_line_length=10)
        self.assertEqual(events, [("error", "E_INVALID", "command line too long")])
        self.assertTrue(parser.stopped)
        self.assertEqual(parser.buffered, 0)

    def test_unterminated_line_over_cap(self) -> None:
        """max_line_length bytes without a "\\n" fail at once, without waiting for more."""
        receiver, parser = make(max_line_length=10)
        parser.feed(b"123456789")
        self.assertEqual(receiver.events, [])
        self.assertEqual(parser.buffered, 9)
        parser.feed(b"0")
        self.assertEqual(receiver.events, [("error", "E_INVALID", "command line too long")])
        self.assertEqual(parser.buffered, 0)
        parser.feed(b"\nNOP\n")
        self.assertEqual(len(receiver.events), 1)

    def test_over_cap_byte_by_byte(self) -> None:
        events, parser = run(byte_by_byte(b"NOP\n" + b"x" * 40 + b"\nNOP\n"), max_line_length=10)
        self.assertEqual(events, [("command", [b"NOP"]), ("error", "E_INVALID", "command line too long")])
        self.assertEqual(parser.buffered, 0)

    def test_default_cap(self) -> None:
        """The default cap matches nsqd's 16 KiB read buffer."""
        events, _ = run([b"x" * 16383 + b"\n"])
        self.assertEqual(events, [("command", [b"x" * 16383])])
        events, _ = run([b"x" * 16384 + b"\n"])
        self.assertEqual(events, [("error", "E_INVALID", "command line too long")])

    def test_cap_does_not_apply_to_bodies(self) -> None:
        body = b"y" * 50
        events, _ = run([b"PUB t\n" + sized(body)], max_line_length=10)
        self.assertEqual(events, [("command", [b"PUB", b"t"]), ("body", [b"PUB", b"t"], body)])

    def test_cap_is_per_line(self) -> None:
        """Many short lines in one feed are fine however long the feed is."""
        events, _ = run([b"NOP\n" * 100], max_line_length=10)
        self.assertEqual(len(events), 100)


class BodyLengthTests(SynchronousTestCase):
    def test_limit_accepted(self) -> None:
        events, _ = run([b"PUB t\n" + sized(b"z" * LIMIT)])
        self.assertEqual(events[-1], ("body", [b"PUB", b"t"], b"z" * LIMIT))

    def test_over_limit(self) -> None:
        events, parser = run([b"PUB t\n" + sized(b"z" * (LIMIT + 1)) + b"NOP\n"])
        self.assertEqual(
            events, [("command", [b"PUB", b"t"]), ("error", "E_BAD_MESSAGE", "PUB message too big 101 > 100")]
        )
        self.assertTrue(parser.stopped)
        self.assertEqual(parser.buffered, 0)

    def test_hostile_length(self) -> None:
        """A 2 GiB claim fails as soon as its 4 bytes arrive; nothing is buffered for it."""
        receiver, parser = make()
        parser.feed(b"PUB t\n\x7f\xff\xff")
        self.assertEqual(receiver.events, [("command", [b"PUB", b"t"])])
        self.assertEqual(parser.buffered, 3)
        parser.feed(b"\xff" + b"a" * 1000)
        self.assertEqual(
            receiver.events[1:], [("error", "E_BAD_MESSAGE", "PUB message too big 2147483647 > 100")]
        )
        self.assertEqual(parser.buffered, 0)
        parser.feed(b"b" * 1000)
        self.assertEqual(parser.buffered, 0)
        self.assertEqual(len(receiver.events), 2)

    def test_negative_lengths(self) -> None:
        """The length is signed: 0xffffffff is -1 and is refused as invalid, not as too big."""
        for field, length in [
            (b"\xff\xff\xff\xff", -1),
            (b"\x80\x00\x00\x00", -2147483648),
            (b"\x00\x00\x00\x00", 0),
        ]:
            events, parser = run([b"PUB t\n" + field + b"xxxx"])
            self.assertEqual(
                events,
                [
                    ("command", [b"PUB", b"t"]),
                    ("error", "E_BAD_MESSAGE", f"PUB invalid message body size {length}"),
                ],
            )
            self.assertEqual(parser.buffered, 0)

    def test_error_uses_receivers_spec(self) -> None:
        """Each command's own BodySpec decides the limit."""
        events, _ = run([b"BIG t\n" + struct.pack(">i", 1024 * 1024 + 1)])
        self.assertEqual(events[-1], ("error", "E_BAD_MESSAGE", "PUB message too big 1048577 > 100"))
        events, _ = run([b"BIG t\n" + sized(b"q" * 1000)])
        self.assertEqual(events[-1], ("body", [b"BIG", b"t"], b"q" * 1000))

    def test_stopped_before_error_callback(self) -> None:
        """parse_error sees a parser that has already stopped."""
        receiver, parser = make()
        seen: list[bool] = []

        def parse_error(error: NSQError) -> None:
            seen.append(parser.stopped)

        receiver.parse_error = parse_error  # type: ignore[method-assign]
        parser.feed(b"PUB t\n\x00\x00\x00\x00")
        self.assertEqual(seen, [True])


class FlowControlTests(SynchronousTestCase):
    def test_pause_from_command_received(self) -> None:
        """After pause(), nothing more is handed out from the same feed; resume() delivers the rest."""
        receiver, parser = make()

        def on_command(params: list[bytes]) -> None:
            if params[0] == b"SUB":
                parser.pause()

        receiver.on_command = on_command
        parser.feed(b"SUB t c\nRDY 1\nNOP\n")
        self.assertEqual(receiver.events, [("command", [b"SUB", b"t", b"c"])])
        self.assertTrue(parser.paused)
        self.assertEqual(parser.buffered, len(b"RDY 1\nNOP\n"))
        parser.feed(b"CLS\n")
        self.assertEqual(len(receiver.events), 1)
        self.assertEqual(parser.buffered, len(b"RDY 1\nNOP\nCLS\n"))
        parser.resume()
        self.assertFalse(parser.paused)
        self.assertEqual(
            receiver.events[1:], [("command", [b"RDY", b"1"]), ("command", [b"NOP"]), ("command", [b"CLS"])]
        )
        self.assertEqual(parser.buffered, 0)

    def test_pause_from_body_received(self) -> None:
        """AUTH waits for the auth server: the commands after its body wait too."""
        receiver, parser = make()
        receiver.on_body = lambda params, body: parser.pause()
        parser.feed(b"AUTH\n" + sized(b"secret") + b"SUB t c\n")
        self.assertEqual(receiver.events, [("command", [b"AUTH"]), ("body", [b"AUTH"], b"secret")])
        self.assertEqual(parser.buffered, len(b"SUB t c\n"))
        receiver.on_body = None
        parser.resume()
        self.assertEqual(receiver.events[2:], [("command", [b"SUB", b"t", b"c"])])

    def test_pause_before_body(self) -> None:
        """Pausing in command_received of a body command holds the body (and its checks) until resume."""
        receiver, parser = make()
        receiver.on_command = lambda params: parser.pause()
        parser.feed(b"PUB t\n" + sized(b"abc"))
        self.assertEqual(receiver.events, [("command", [b"PUB", b"t"])])
        receiver.on_command = None
        parser.resume()
        self.assertEqual(receiver.events[1:], [("body", [b"PUB", b"t"], b"abc")])

    def test_pause_before_bad_length(self) -> None:
        receiver, parser = make()
        receiver.on_command = lambda params: parser.pause()
        parser.feed(b"PUB t\n\x7f\xff\xff\xff")
        self.assertEqual(len(receiver.events), 1)
        parser.resume()
        self.assertEqual(
            receiver.events[1], ("error", "E_BAD_MESSAGE", "PUB message too big 2147483647 > 100")
        )
        self.assertTrue(parser.stopped)

    def test_pause_then_resume_inside_callback(self) -> None:
        """A callback that pauses and resumes at once does not interrupt the feed."""
        receiver, parser = make()

        def on_command(params: list[bytes]) -> None:
            parser.pause()
            parser.resume()

        receiver.on_command = on_command
        parser.feed(b"NOP\nNOP\nNOP\n")
        self.assertEqual(len(receiver.events), 3)
        self.assertEqual(parser.buffered, 0)

    def test_pause_before_feed(self) -> None:
        receiver, parser = make()
        parser.pause()
        parser.feed(STREAM)
        self.assertEqual(receiver.events, [])
        self.assertEqual(parser.buffered, len(STREAM))
        parser.resume()
        self.assertEqual(receiver.events, STREAM_EVENTS)

    def test_repeated_pause(self) -> None:
        """Pausing in every callback hands out one event per resume()."""
        receiver, parser = make()
        receiver.on_command = lambda params: parser.pause()
        receiver.on_body = lambda params, body: parser.pause()
        parser.feed(STREAM)
        resumes = 0
        while parser.buffered:
            parser.resume()
            resumes += 1
        self.assertEqual(receiver.events, STREAM_EVENTS)
        self.assertEqual(resumes, len(STREAM_EVENTS) - 1)

    def test_resume_when_not_paused(self) -> None:
        receiver, parser = make()
        parser.feed(b"NOP")
        parser.resume()
        self.assertEqual(receiver.events, [])
        self.assertEqual(parser.buffered, 3)

    def test_stop_from_command_received(self) -> None:
        receiver, parser = make()

        def on_command(params: list[bytes]) -> None:
            if params[0] == b"SUB":
                parser.stop()

        receiver.on_command = on_command
        parser.feed(b"NOP\nSUB t c\nRDY 1\nNOP\n")
        self.assertEqual(receiver.events, [("command", [b"NOP"]), ("command", [b"SUB", b"t", b"c"])])
        self.assertTrue(parser.stopped)
        self.assertEqual(parser.buffered, 0)
        parser.feed(b"NOP\n")
        parser.resume()
        self.assertEqual(len(receiver.events), 2)
        self.assertEqual(parser.buffered, 0)

    def test_stop_from_body_received(self) -> None:
        receiver, parser = make()
        receiver.on_body = lambda params, body: parser.stop()
        parser.feed(b"PUB t\n" + sized(b"x") + b"NOP\n")
        self.assertEqual(len(receiver.events), 2)
        self.assertEqual(parser.buffered, 0)

    def test_stop_discards(self) -> None:
        receiver, parser = make()
        parser.feed(b"PUB t\n\x00\x00\x00\x05ab")
        parser.stop()
        self.assertEqual(parser.buffered, 0)
        parser.feed(b"cde")
        parser.feed(b"NOP\n")
        self.assertEqual(receiver.events, [("command", [b"PUB", b"t"])])

    def test_stop_while_paused(self) -> None:
        receiver, parser = make()
        parser.pause()
        parser.feed(b"NOP\n")
        parser.stop()
        parser.resume()
        self.assertEqual(receiver.events, [])
        self.assertEqual(parser.buffered, 0)

    def test_feed_from_callback(self) -> None:
        """Bytes fed from inside a callback are handed out in order, after what was already buffered."""
        receiver, parser = make()
        fed: list[bool] = []

        def on_command(params: list[bytes]) -> None:
            if not fed:
                fed.append(True)
                parser.feed(b"CLS\n")

        receiver.on_command = on_command
        parser.feed(b"NOP\nRDY 1\n")
        self.assertEqual([event[1] for event in receiver.events], [[b"NOP"], [b"RDY", b"1"], [b"CLS"]])


class BodySpecTests(SynchronousTestCase):
    def test_frozen(self) -> None:
        with self.assertRaises(attrs.exceptions.FrozenInstanceError):
            SPEC.limit = 5  # type: ignore[misc]

    def test_fields(self) -> None:
        self.assertEqual(SPEC.limit, LIMIT)
        self.assertEqual(SPEC.too_big(7).message, "PUB message too big 7 > 100")
        self.assertEqual(SPEC.invalid(0).message, "PUB invalid message body size 0")
