"""
The server-side command parser for the V2 protocol: bytes from a client in, commands out.

After the 4-byte magic (which the protocol checks and strips), a client sends text lines ending
in ``\\n`` (a ``\\r`` before it is dropped), split on single spaces. Some commands are followed by a
big-endian signed int32 length and that many body bytes; whether one is expected, and how large it
may be, is decided by the receiver when it sees the command line.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Protocol

import attrs

from twisted_nsq.wire.errors import E_INVALID, NSQError

DEFAULT_MAX_LINE_LENGTH = 16384

_INT32 = struct.Struct(">i")

# Bodies at least this large are copied out through a memoryview (one copy instead of two).
_LARGE_BODY = 65536

_LINE = 0
_LENGTH = 1
_BODY = 2


@attrs.frozen
class BodySpec:
    """What a command's body may be: the largest accepted length and the errors for bad lengths."""

    limit: int
    """The largest accepted body length."""
    too_big: Callable[[int], NSQError]
    """Builds the error for a claimed length above C{limit}; called with that length."""
    invalid: Callable[[int], NSQError]
    """Builds the error for a claimed length of zero or less; called with that length."""


class CommandReceiver(Protocol):
    """What a L{CommandParser} hands commands to."""

    def command_received(self, params: list[bytes]) -> BodySpec | None:
        """
        A command line arrived; C{params[0]} is the command name.

        @return: C{None} if the command is complete, or a L{BodySpec} if a sized body follows.
        """

    def body_received(self, params: list[bytes], body: bytes) -> None:
        """The body announced by the L{BodySpec} returned for C{params} arrived in full."""

    def parse_error(self, error: NSQError) -> None:
        """The stream is unusable (bad body length, line too long); the parser has stopped."""


def _take(buffer: bytearray, start: int, end: int) -> bytes:
    if end - start < _LARGE_BODY:
        return bytes(buffer[start:end])
    with memoryview(buffer) as view:
        return view[start:end].tobytes()


class CommandParser:
    """
    Splits a client's byte stream into commands and bodies and hands them to a L{CommandReceiver}.

    Everything is kept in one buffer with a read offset; consumed bytes are dropped once per
    L{feed}, and the search for ``\\n`` never rescans bytes it already searched. A body length is
    checked against the receiver's L{BodySpec} as soon as its 4 bytes arrive, before any body byte
    is waited for, so a hostile length costs nothing.
    """

    def __init__(self, receiver: CommandReceiver, max_line_length: int = DEFAULT_MAX_LINE_LENGTH) -> None:
        self._receiver = receiver
        self._max_line_length = max_line_length
        self._buffer = bytearray()
        self._offset = 0
        # Where the search for the next "\n" resumes; meaningful while a line is being read.
        self._scanned = 0
        self._state = _LINE
        self._params: list[bytes] = []
        self._spec: BodySpec | None = None
        self._body_length = 0
        self._paused = False
        self._stopped = False
        # paused or stopped: the one flag the loop checks between deliveries.
        self._halted = False
        self._running = False

    @property
    def buffered(self) -> int:
        """How many received bytes are held and not yet handed out."""
        return len(self._buffer) - self._offset

    @property
    def paused(self) -> bool:
        """Whether L{pause} was called without a matching L{resume}."""
        return self._paused

    @property
    def stopped(self) -> bool:
        """Whether the parser was stopped (by L{stop} or by a parse error)."""
        return self._stopped

    def feed(self, data: bytes) -> None:
        """Add received bytes and hand out every command they complete (unless paused or stopped)."""
        if self._stopped:
            return
        self._buffer += data
        if not self._halted and not self._running:
            self._run()

    def pause(self) -> None:
        """Stop handing out commands; bytes fed meanwhile are kept."""
        self._paused = True
        self._halted = True

    def resume(self) -> None:
        """Hand out what was buffered while paused, then carry on normally."""
        if not self._paused:
            return
        self._paused = False
        self._halted = self._stopped
        if not self._halted and not self._running:
            self._run()

    def stop(self) -> None:
        """Discard everything buffered and ignore every later L{feed}."""
        self._stopped = True
        self._halted = True
        self._buffer = bytearray()
        self._offset = 0
        self._scanned = 0
        self._params = []
        self._spec = None

    def _fail(self, error: NSQError) -> None:
        self.stop()
        self._receiver.parse_error(error)

    def _run(self) -> None:
        self._running = True
        buffer = self._buffer
        receiver = self._receiver
        max_line_length = self._max_line_length
        offset = self._offset
        try:
            while not self._halted:
                state = self._state
                if state == _LINE:
                    newline = buffer.find(b"\n", self._scanned)
                    if newline < 0:
                        if len(buffer) - offset >= max_line_length:
                            self._fail(NSQError(E_INVALID, "command line too long"))
                            return
                        self._scanned = len(buffer)
                        break
                    if newline - offset >= max_line_length:
                        self._fail(NSQError(E_INVALID, "command line too long"))
                        return
                    end = newline
                    if end > offset and buffer[end - 1] == 13:  # "\r"
                        end -= 1
                    params = bytes(buffer[offset:end]).split(b" ")
                    offset = newline + 1
                    self._offset = self._scanned = offset
                    spec = receiver.command_received(params)
                    if spec is not None:
                        self._params = params
                        self._spec = spec
                        self._state = _LENGTH
                elif state == _LENGTH:
                    if len(buffer) - offset < 4:
                        break
                    (length,) = _INT32.unpack_from(buffer, offset)
                    offset += 4
                    self._offset = offset
                    spec = self._spec
                    assert spec is not None
                    if length <= 0:
                        self._fail(spec.invalid(length))
                        return
                    if length > spec.limit:
                        self._fail(spec.too_big(length))
                        return
                    self._body_length = length
                    self._state = _BODY
                else:
                    end = offset + self._body_length
                    if end > len(buffer):
                        break
                    body = _take(buffer, offset, end)
                    offset = end
                    self._offset = self._scanned = offset
                    params = self._params
                    self._params = []
                    self._spec = None
                    self._state = _LINE
                    receiver.body_received(params, body)
        finally:
            self._running = False
        if offset and not self._stopped:
            del buffer[:offset]
            self._offset = 0
            # Outside the line state the search position is stale; it is reset on the way back.
            self._scanned = max(self._scanned - offset, 0)
