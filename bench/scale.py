"""
Load clients for the scale workloads: many idle connections, many topics.

Run as C{python -m bench.scale ROLE CONFIG_JSON}, with L{bench.client}'s conversation: set up,
print C{ready}, wait for C{go}, run, print one JSON object.

- C{connections}: open C{count} connections (C{connect_window} handshakes under way at once),
  each sending the magic and C{IDENTIFY} with C{heartbeat_interval} (ms), and waiting for its
  answer; then, after C{go}, hold them all for C{hold_s}, answering every heartbeat with C{NOP}.
  Reports how many were opened, how many nsqd closed, and the fewest and most heartbeats any
  connection received.
- C{topics}: create C{count} topics with one channel each (C{POST /topic/create} and
  C{/channel/create}, pipelined on one keep-alive HTTP connection), then publish one
  C{body_size} message to each (pipelined C{PUB}s on one TCP connection). C{go} only ends it:
  nsqd's idle cost is measured by the parent.
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.client import Role, _read_http_ok, run_role
from bench.proto import HEARTBEAT, MAGIC_V2, NOP, OK_FRAME, ProtocolError, pub_command

_FRAME_HEADER = struct.Struct(">ii")
_RECV_SIZE = 64 * 1024
#: Topics whose create requests go out together (two requests each).
_CREATE_BATCH = 250


class FileLimitError(Exception):
    """The process may not open as many files as the workload needs."""


def raise_file_limit(needed: int) -> int:
    """
    Raise this process's soft C{RLIMIT_NOFILE} to its hard limit (children inherit it), and
    return the new soft limit.

    @raise FileLimitError: the hard limit is below C{needed}.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise FileLimitError(
            f"RLIMIT_NOFILE hard limit is {hard}, below the {needed} descriptors needed; "
            f"raise it (ulimit -Hn, or /etc/security/limits.conf) and run again"
        )
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def identify_command(heartbeat_ms: int, client_id: str) -> bytes:
    """C{IDENTIFY} asking for C{heartbeat_ms}, with feature negotiation (nsqd answers JSON)."""
    body = json.dumps(
        {
            "client_id": client_id,
            "hostname": "bench",
            "heartbeat_interval": heartbeat_ms,
            "feature_negotiation": True,
        }
    ).encode()
    return b"IDENTIFY\n" + struct.pack(">i", len(body)) + body


class _Idle:
    """One held connection: its unparsed input and the heartbeats it has seen."""

    __slots__ = ("buffer", "heartbeats", "identified", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.heartbeats = 0
        self.identified = False

    def read(self) -> bool:
        """Take what arrived; answer heartbeats. False when nsqd closed the connection."""
        try:
            data = self.sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return True
        except ConnectionError:
            return False
        if not data:
            return False
        buffer = self.buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= 8:
            size, frame_type = _FRAME_HEADER.unpack_from(buffer, offset)
            end = offset + 4 + size
            if end > len(buffer):
                break
            payload = bytes(buffer[offset + 8 : end])
            if frame_type != 0:
                raise ProtocolError(f"unexpected frame type {frame_type}: {payload[:200]!r}")
            if payload == HEARTBEAT:
                self.heartbeats += 1
                self.sock.send(NOP)
            elif not self.identified:
                # The IDENTIFY answer (JSON with feature negotiation, else OK).
                self.identified = True
            else:
                raise ProtocolError(f"unexpected response {payload[:200]!r}")
            offset = end
        del buffer[:offset]
        return True


def run_connections(config: dict[str, Any], wait_for_go: Callable[[], None]) -> dict[str, Any]:
    count = int(config["count"])
    raise_file_limit(count + 64)
    heartbeat_ms = int(config["heartbeat_ms"])
    window = int(config.get("connect_window", 256))
    address = (str(config["host"]), int(config["port"]))
    selector = selectors.DefaultSelector()
    conns: list[_Idle] = []
    pending = 0
    closed = 0
    started = time.monotonic_ns()
    deadline = time.monotonic() + float(config.get("connect_timeout_s", 120.0))

    def pump(timeout: float) -> None:
        nonlocal pending, closed
        for key, _ in selector.select(timeout):
            conn: _Idle = key.data
            was_identified = conn.identified
            if not conn.read():
                closed += 1
                selector.unregister(conn.sock)
                conn.sock.close()
                if not was_identified:
                    pending -= 1
                continue
            if conn.identified and not was_identified:
                pending -= 1

    for number in range(count):
        while pending >= window:
            pump(1.0)
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(conns) - pending} of {count} connections identified in time")
        sock = socket.create_connection(address, timeout=30.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(MAGIC_V2 + identify_command(heartbeat_ms, f"idle-{number}"))
        sock.setblocking(False)
        conn = _Idle(sock)
        conns.append(conn)
        selector.register(sock, selectors.EVENT_READ, conn)
        pending += 1
    while pending > 0:
        pump(1.0)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pending} of {count} connections got no IDENTIFY answer in time")
    connect_s = (time.monotonic_ns() - started) / 1e9
    closed_before_hold = closed
    for conn in conns:
        conn.heartbeats = 0
    wait_for_go()
    hold_start = time.monotonic_ns()
    hold_end = hold_start + int(float(config["hold_s"]) * 1e9)
    while (now := time.monotonic_ns()) < hold_end:
        pump((hold_end - now) / 1e9)
    live = [c for c in conns if c.sock.fileno() >= 0]
    counts = [c.heartbeats for c in live] or [0]
    for conn in conns:
        if conn.sock.fileno() >= 0:
            conn.sock.close()
    return {
        "opened": len(conns),
        "connect_s": connect_s,
        "closed_before_hold": closed_before_hold,
        "closed_during_hold": closed - closed_before_hold,
        "min_heartbeats": min(counts),
        "max_heartbeats": max(counts),
        "total_heartbeats": sum(counts),
        "start_ns": hold_start,
        "end_ns": time.monotonic_ns(),
    }


def run_topics(config: dict[str, Any], wait_for_go: Callable[[], None]) -> dict[str, Any]:
    count = int(config["count"])
    host = str(config["host"])
    started = time.monotonic_ns()
    web = socket.create_connection((host, int(config["http_port"])), timeout=60.0)
    web.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending = bytearray()
    http_host = f"{host}:{config['http_port']}"
    # Pipelined in batches: nsqd rewrites nsqd.dat at most once per reactor turn, so requests that
    # arrive together cost one write (one at a time, 10,000 topics would take minutes of fsyncs).
    for first in range(0, count, _CREATE_BATCH):
        numbers = range(first, min(first + _CREATE_BATCH, count))
        requests = [
            f"POST {path} HTTP/1.1\r\nHost: {http_host}\r\nContent-Length: 0\r\n\r\n".encode()
            for number in numbers
            for path in (f"/topic/create?topic=t{number}", f"/channel/create?topic=t{number}&channel=c")
        ]
        web.sendall(b"".join(requests))
        for _ in requests:
            _read_http_ok(web, pending)
    web.close()
    created = time.monotonic_ns()
    tcp = socket.create_connection((host, int(config["port"])), timeout=60.0)
    tcp.sendall(MAGIC_V2)
    body = b"s" * int(config["body_size"])
    commands = b"".join(pub_command(f"t{number}", body) for number in range(count))
    tcp.sendall(commands)
    expected = OK_FRAME * count
    received = bytearray()
    while len(received) < len(expected):
        chunk = tcp.recv(_RECV_SIZE)
        if not chunk:
            raise ProtocolError("nsqd closed the connection")
        received += chunk
    if bytes(received) != expected:
        raise ProtocolError("a PUB was not answered OK")
    tcp.close()
    published = time.monotonic_ns()
    wait_for_go()
    return {
        "topics": count,
        "create_s": (created - started) / 1e9,
        "publish_s": (published - created) / 1e9,
        "start_ns": started,
        "end_ns": published,
    }


ROLES: dict[str, Role] = {
    "connections": run_connections,
    "topics": run_topics,
}


def main(argv: list[str]) -> int:
    return run_role("bench.scale", ROLES, argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
