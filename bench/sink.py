"""
A sink: a trivial NSQ TCP server that does as little as possible, to show the load clients' own
ceiling (the C{sink-*} workloads run the same clients against it as against nsqd).

It answers every C{PUB}, C{MPUB}, C{DPUB}, C{SUB} and C{IDENTIFY} with C{OK} and forgets the
body. After C{RDY n} it keeps C{n} prebuilt message frames in flight: each C{FIN} received lets
one more go (the FINs are counted, not parsed). Every message frame carries the same ID, so the
consumer's work per message is exactly what it is against nsqd.

Run as C{python -m bench.sink [--tcp-address 127.0.0.1:4150] [--size 100]}; it prints
C{TCP: listening on HOST:PORT} on stderr as nsqd does, serves each client in a process of its
own, and stops accepting on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import sys
from types import FrameType

from bench.proto import FRAME_MESSAGE, MAGIC_V2, OK_FRAME

_INT32 = struct.Struct(">i")
_RECV_SIZE = 256 * 1024
#: Messages sent per send call at most (the consumer's RDY caps what is in flight).
_CHUNK = 500


def message_frame(body_size: int) -> bytes:
    """One message frame with a fixed timestamp, 1 attempt and a fixed 16-byte ID."""
    payload = struct.pack(">qH", 1_700_000_000_000_000_000, 1) + b"0123456789abcdef" + b"m" * body_size
    return _INT32.pack(len(payload) + 4) + _INT32.pack(FRAME_MESSAGE) + payload


class SinkConnection:
    """The state of one client: unparsed input, and the consumer's RDY and in-flight count."""

    def __init__(self, sock: socket.socket, frame: bytes) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.magic = False
        self.rdy = 0
        self.in_flight = 0
        self.frame = frame
        self.chunks: dict[int, bytes] = {}
        self.out = bytearray()

    def feed(self, data: bytes) -> bool:
        """Handle C{data}; return False when the client said CLS or broke the protocol."""
        buffer = self.buffer
        buffer += data
        if not self.magic:
            if len(buffer) < 4:
                return True
            if bytes(buffer[:4]) != MAGIC_V2:
                return False
            del buffer[:4]
            self.magic = True
        # FINs dominate a consumer's input: count them in one pass over the complete lines.
        offset = 0
        end = len(buffer)
        while offset < end:
            newline = buffer.find(b"\n", offset)
            if newline < 0:
                break
            if buffer.startswith(b"FIN ", offset):
                last = buffer.rfind(b"\n", offset)
                block = bytes(buffer[offset : last + 1])
                fins = block.count(b"FIN ")
                if block.count(b"\n") == fins:
                    self.in_flight -= fins
                    offset = last + 1
                    continue
            line = bytes(buffer[offset:newline])
            name, _, rest = line.partition(b" ")
            if name in (b"PUB", b"MPUB", b"DPUB", b"IDENTIFY", b"AUTH"):
                if end - newline - 1 < 4:
                    break
                (size,) = _INT32.unpack_from(buffer, newline + 1)
                body_end = newline + 1 + 4 + size
                if body_end > end:
                    break
                self.out += OK_FRAME
                offset = body_end
                continue
            offset = newline + 1
            if name == b"FIN":
                self.in_flight -= 1
            elif name == b"SUB":
                self.out += OK_FRAME
            elif name == b"RDY":
                self.rdy = int(rest or b"0")
            elif name == b"CLS":
                return False
            elif name in (b"NOP", b"REQ", b"TOUCH"):
                pass
            else:
                return False
        if offset:
            del buffer[:offset]
        self.refill()
        return True

    def refill(self) -> None:
        """Queue message frames up to the consumer's RDY."""
        room = self.rdy - self.in_flight
        while room > 0:
            count = min(room, _CHUNK)
            chunk = self.chunks.get(count)
            if chunk is None:
                chunk = self.chunks[count] = self.frame * count
            self.out += chunk
            self.in_flight += count
            room -= count


def _serve_connection(sock: socket.socket, frame: bytes) -> None:
    """Answer one client with blocking calls until it closes (run in a process of its own)."""
    conn = SinkConnection(sock, frame)
    recv = sock.recv
    while True:
        try:
            data = recv(_RECV_SIZE)
        except ConnectionError:
            return
        if not data or not conn.feed(data):
            return
        if conn.out:
            try:
                sock.sendall(conn.out)
            except ConnectionError:
                return
            conn.out.clear()


def serve(host: str, port: int, body_size: int) -> None:
    """
    Accept clients until SIGTERM or SIGINT. Each client gets a forked process of its own with
    blocking calls (one recv and one send per command), so the sink, like nsqd, uses every core
    and never waits in a poll between a request and its answer.
    """
    frame = message_frame(body_size)
    listener = socket.create_server((host, port), backlog=socket.SOMAXCONN)
    bound_host, bound_port = listener.getsockname()[:2]
    print(f"TCP: listening on {bound_host}:{bound_port}", file=sys.stderr, flush=True)
    # Children are reaped by the kernel; a stopped sink leaves each to end with its client.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)

    def stop(signum: int, frame_: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while True:
            sock, _ = listener.accept()
            if os.fork() == 0:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                listener.close()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _serve_connection(sock, frame)
                os._exit(0)
            sock.close()
    finally:
        listener.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sink", description=__doc__)
    parser.add_argument("--tcp-address", default="127.0.0.1:4150", help="HOST:PORT (port 0: any)")
    parser.add_argument("--size", type=int, default=100, help="body size of the messages it sends")
    args = parser.parse_args(argv)
    host, _, port = args.tcp_address.rpartition(":")
    serve(host or "127.0.0.1", int(port), args.size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
