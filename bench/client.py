"""
Load clients for the benchmark: one process each, plain blocking sockets, precomputed bytes.

Run as C{python -m bench.client ROLE CONFIG_JSON}. A client connects (and subscribes, for the
consumers), prints C{ready}, waits for C{go} on stdin so every client of a workload starts
together, runs, and prints one JSON object with what it counted and the C{time.monotonic_ns}
values it started and stopped at (the monotonic clock is shared by every process on the
machine, so the parent can put the clients of a workload on one time line).

The clients are deliberately cheaper than nsqd per message: a publisher sends bytes built once,
and a consumer only slices out message IDs and answers a whole read with a single C{FIN} send.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.proto import (
    FRAME_ERROR,
    FRAME_RESPONSE,
    HEARTBEAT,
    MAGIC_V2,
    NOP,
    OK_FRAME,
    ProtocolError,
    fin_lines,
    latency_body,
    latency_summary,
    mpub_command,
    pub_command,
    read_latency_stamp,
    take_frames,
    take_messages,
)

_RECV_SIZE = 256 * 1024


class Connection:
    """A blocking V2 connection that answers heartbeats and turns error frames into exceptions."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(MAGIC_V2)
        self.buffer = bytearray()

    def handle_other(self, frame_type: int, payload: bytes) -> bool:
        """Deal with a non-message frame; return whether it was C{OK}."""
        if frame_type == FRAME_RESPONSE:
            if payload == b"OK":
                return True
            if payload == HEARTBEAT:
                self.sock.sendall(NOP)
                return False
        kind = "error" if frame_type == FRAME_ERROR else f"type {frame_type}"
        raise ProtocolError(f"unexpected {kind} frame: {payload[:200]!r}")

    def expect_ok(self, data: bytes = b"") -> None:
        """Read until one C{OK} arrives, starting with C{data} already received."""
        buffer = self.buffer
        buffer += data
        ids: list[bytearray] = []
        others: list[tuple[int, bytes]] = []
        while True:
            offset = take_frames(buffer, 0, ids, others)
            del buffer[:offset]
            if ids:
                raise ProtocolError("a message frame arrived on a connection that expected OK")
            got_ok = False
            for frame_type, payload in others:
                if self.handle_other(frame_type, payload):
                    if got_ok:
                        raise ProtocolError("two OK frames for one command")
                    got_ok = True
            others.clear()
            if got_ok:
                return
            chunk = self.sock.recv(_RECV_SIZE)
            if not chunk:
                raise ProtocolError("nsqd closed the connection")
            buffer += chunk

    def subscribe(self, topic: str, channel: str) -> None:
        self.sock.sendall(b"SUB " + topic.encode("ascii") + b" " + channel.encode("ascii") + b"\n")
        self.expect_ok()

    def close(self) -> None:
        self.sock.close()


def _publish(conn: Connection, command: bytes, per_command: int, count: int, deadline_ns: int) -> int:
    """
    Send C{command} and wait for its C{OK}, over and over, until C{count} messages (if non-zero)
    or C{deadline_ns} (if non-zero). Returns how many messages were published.
    """
    send = conn.sock.sendall
    recv = conn.sock.recv
    now = time.monotonic_ns
    published = 0
    while True:
        send(command)
        data = recv(_RECV_SIZE)
        if data != OK_FRAME or conn.buffer:
            conn.expect_ok(data)
        published += per_command
        if count and published >= count:
            return published
        if deadline_ns and now() >= deadline_ns:
            return published


def run_publisher(config: dict[str, Any], wait_for_go: Callable[[], None]) -> dict[str, Any]:
    """
    PUB one at a time (C{batch} 1) or MPUB batches, each waiting for its C{OK}; with C{keys},
    an MPUB batch's bodies start with C{key-<i % keys>|}.
    """
    body = b"a" * int(config["body_size"])
    batch = int(config["batch"])
    topic = str(config["topic"])
    keys = int(config.get("keys", 0))
    if keys and batch > 1:
        # Bodies C{key-<i % keys>|aaa...} of the same size, for a channel ordered by key.
        size = len(body)
        bodies = [(b"key-%d|" % (i % keys)).ljust(size, b"a") for i in range(batch)]
        command = mpub_command(topic, bodies)
    else:
        command = pub_command(topic, body) if batch == 1 else mpub_command(topic, [body] * batch)
    count = int(config.get("count", 0))
    if count % batch:
        raise ValueError(f"count {count} is not a multiple of the batch size {batch}")
    conn = Connection(config["host"], int(config["port"]), timeout=60.0)
    wait_for_go()
    cpu_start = time.process_time()
    start = time.monotonic_ns()
    deadline = start + int(float(config.get("duration_s", 0)) * 1e9) if config.get("duration_s") else 0
    published = _publish(conn, command, batch, count, deadline)
    end = time.monotonic_ns()
    conn.close()
    return {
        "messages": published,
        "start_ns": start,
        "end_ns": end,
        "client_cpu_s": time.process_time() - cpu_start,
    }


def run_consumer(config: dict[str, Any], wait_for_go: Callable[[], None]) -> dict[str, Any]:
    """
    SUB, then on C{go} send C{RDY n} and FIN every message, one FIN send per read, until nothing
    has arrived for C{idle_s} (or for C{first_s} before the first message), C{limit} messages,
    or C{duration_s} seconds.
    """
    conn = Connection(config["host"], int(config["port"]), timeout=60.0)
    conn.subscribe(str(config["topic"]), str(config["channel"]))
    sock = conn.sock
    limit = int(config.get("limit", 0))
    duration_ns = int(float(config.get("duration_s", 0)) * 1e9)
    wait_for_go()
    cpu_start = time.process_time()
    start = time.monotonic_ns()
    deadline = start + duration_ns if duration_ns else 0
    sock.sendall(b"RDY %d\n" % int(config["rdy"]))
    sock.settimeout(float(config["first_s"]))
    chunk = bytearray(_RECV_SIZE)
    view = memoryview(chunk)
    buffer = conn.buffer
    ids: list[bytearray] = []
    others: list[tuple[int, bytes]] = []
    recv_into = sock.recv_into
    send = sock.sendall
    now = time.monotonic_ns
    received = 0
    first = 0
    last = 0
    while True:
        try:
            size = recv_into(chunk)
        except TimeoutError:
            break
        if not size:
            raise ProtocolError("nsqd closed the connection")
        buffer += view[:size]
        offset = take_frames(buffer, 0, ids, others)
        if offset:
            del buffer[:offset]
        if ids:
            last = now()
            if not received:
                first = last
                sock.settimeout(float(config["idle_s"]))
            received += len(ids)
            send(fin_lines(ids))
            ids.clear()
        if others:
            for frame_type, payload in others:
                conn.handle_other(frame_type, payload)
            others.clear()
        if limit and received >= limit:
            break
        if deadline and last >= deadline:
            break
    conn.close()
    return {
        "messages": received,
        "start_ns": start,
        "first_ns": first,
        "end_ns": last,
        "client_cpu_s": time.process_time() - cpu_start,
    }


def run_latency_publisher(config: dict[str, Any], wait_for_go: Callable[[], None]) -> dict[str, Any]:
    """
    PUB C{count} stamped messages on a fixed schedule of C{rate} per second, waiting for each OK.

    A message that falls behind its slot is sent at once (no catching up in a burst), and the
    largest lag behind schedule is reported so an overloaded run is visible.
    """
    topic = str(config["topic"])
    size = int(config["body_size"])
    count = int(config["count"])
    interval_ns = round(1e9 / float(config["rate"]))
    prefix = b"PUB " + topic.encode("ascii") + b"\n" + len(latency_body(0, 0, size)).to_bytes(4, "big")
    conn = Connection(config["host"], int(config["port"]), timeout=60.0)
    wait_for_go()
    send = conn.sock.sendall
    recv = conn.sock.recv
    now = time.monotonic_ns
    sleep = time.sleep
    cpu_start = time.process_time()
    start = now() + interval_ns
    max_lag = 0
    for sequence in range(count):
        delay = start + sequence * interval_ns - now()
        if delay > 0:
            sleep(delay / 1e9)
        elif -delay > max_lag:
            max_lag = -delay
        send(prefix + latency_body(sequence, now(), size))
        data = recv(_RECV_SIZE)
        if data != OK_FRAME or conn.buffer:
            conn.expect_ok(data)
    end = now()
    conn.close()
    return {
        "messages": count,
        "start_ns": start,
        "end_ns": end,
        "max_lag_us": max_lag / 1000,
        "client_cpu_s": time.process_time() - cpu_start,
    }


def run_latency_consumer(config: dict[str, Any], wait_for_go: Callable[[], None]) -> dict[str, Any]:
    """
    SUB with C{RDY n} set before the publisher starts; take each delivery's time as the moment
    its read returned and subtract the publisher's stamp. The first C{warmup} sequence numbers
    are not counted.
    """
    conn = Connection(config["host"], int(config["port"]), timeout=60.0)
    conn.subscribe(str(config["topic"]), str(config["channel"]))
    sock = conn.sock
    sock.sendall(b"RDY %d\n" % int(config["rdy"]))
    warmup = int(config["warmup"])
    total = warmup + int(config["count"])
    wait_for_go()
    sock.settimeout(float(config["timeout_s"]))
    buffer = conn.buffer
    messages: list[tuple[bytes, bytes]] = []
    others: list[tuple[int, bytes]] = []
    latencies: list[int] = []
    seen = 0
    duplicates = 0
    received: set[int] = set()
    while seen < total:
        data = sock.recv(_RECV_SIZE)
        arrived = time.monotonic_ns()
        if not data:
            raise ProtocolError("nsqd closed the connection")
        buffer += data
        offset = take_messages(buffer, 0, messages, others)
        del buffer[:offset]
        for frame_type, payload in others:
            conn.handle_other(frame_type, payload)
        others.clear()
        if messages:
            for _message_id, body in messages:
                sequence, sent_ns = read_latency_stamp(body)
                if sequence in received:
                    duplicates += 1
                    continue
                received.add(sequence)
                seen += 1
                if sequence >= warmup:
                    latencies.append(arrived - sent_ns)
            sock.sendall(fin_lines([message_id for message_id, _body in messages]))
            messages.clear()
    conn.close()
    result: dict[str, Any] = latency_summary(latencies)
    result["duplicates"] = duplicates
    return result


def _http_request(topic: str, body: bytes, batch: int, host: str) -> bytes:
    """One keep-alive POST: ``/pub`` for one message, text-mode ``/mpub`` for a batch."""
    path = f"/pub?topic={topic}" if batch == 1 else f"/mpub?topic={topic}"
    payload = body if batch == 1 else b"\n".join([body] * batch)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(payload)}\r\n\r\n"
    return head.encode() + payload


def _read_http_ok(sock: socket.socket, pending: bytearray) -> None:
    """Read one response (status 200 with a Content-Length body) off a keep-alive socket."""
    while True:
        end = pending.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(pending[:end]).split(b"\r\n")
            if not head[0].startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"HTTP publish failed: {head[0]!r}")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            total = end + 4 + length
            if len(pending) >= total:
                del pending[:total]
                return
        data = sock.recv(_RECV_SIZE)
        if not data:
            raise RuntimeError("nsqd closed the HTTP connection")
        pending += data


def _http_loop(
    config: dict[str, Any], requests: list[bytes], per_request: int, wait_for_go: Callable[[], None]
) -> dict[str, Any]:
    """
    Send ``requests`` in turn on one keep-alive connection, each waiting for its 200, for
    ``duration_s``; ``messages`` counts ``per_request`` for each answered request.
    """
    sock = socket.create_connection((config["host"], int(config["port"])), timeout=60.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending = bytearray()
    wait_for_go()
    cpu_start = time.process_time()
    start = time.monotonic_ns()
    deadline = start + int(float(config["duration_s"]) * 1e9)
    done = 0
    while time.monotonic_ns() < deadline:
        sock.sendall(requests[done % len(requests)])
        _read_http_ok(sock, pending)
        done += 1
    end = time.monotonic_ns()
    sock.close()
    return {
        "messages": done * per_request,
        "start_ns": start,
        "end_ns": end,
        "client_cpu_s": time.process_time() - cpu_start,
    }


def run_http_publisher(config: dict[str, Any], wait_for_go: Callable[[], None]) -> dict[str, Any]:
    """HTTP ``/pub`` (C{batch} 1) or ``/mpub`` on one keep-alive connection, each waiting for 200."""
    batch = int(config["batch"])
    host = f"{config['host']}:{config['port']}"
    request = _http_request(str(config["topic"]), b"a" * int(config["body_size"]), batch, host)
    return _http_loop(config, [request], batch, wait_for_go)


def run_http_lookup(config: dict[str, Any], wait_for_go: Callable[[], None]) -> dict[str, Any]:
    """GET ``/lookup?topic=t<n>`` round the topics on one keep-alive connection."""
    host = f"{config['host']}:{config['port']}"
    requests = [
        f"GET /lookup?topic=t{n} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        for n in range(int(config["topics"]))
    ]
    return _http_loop(config, requests, 1, wait_for_go)


#: A load-client role: its JSON config and the C{wait_for_go} to call once ready, to its result.
Role = Callable[[dict[str, Any], Callable[[], None]], dict[str, Any]]

ROLES: dict[str, Role] = {
    "http-lookup": run_http_lookup,
    "http-publish": run_http_publisher,
    "publish": run_publisher,
    "consume": run_consumer,
    "latency-publish": run_latency_publisher,
    "latency-consume": run_latency_consumer,
}


def _wait_for_go() -> None:
    print("ready", flush=True)
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise SystemExit(f"expected 'go' on stdin, got {line!r}")


def run_role(module: str, roles: dict[str, Role], argv: list[str]) -> int:
    """
    Run the role of C{roles} named by C{argv[0]} with the JSON config in C{argv[1]} (going on
    C{go}); print its result. C{module} names the C{python -m} module in the usage line.
    """
    if len(argv) != 2 or argv[0] not in roles:
        print(f"usage: python -m {module} {{{','.join(roles)}}} CONFIG_JSON", file=sys.stderr)
        return 2
    result = roles[argv[0]](json.loads(argv[1]), _wait_for_go)
    print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str]) -> int:
    """Run the role named by C{argv[0]} with the JSON config in C{argv[1]}; print its result."""
    return run_role("bench.client", ROLES, argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
