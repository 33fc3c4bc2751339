"""The nsqlookupd workload: ``/lookup`` requests per second with 1,000 topics and 50 producers."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
from typing import Any

_LISTENING = re.compile(r"(TCP|HTTP): listening on [^\s]*:(\d+)")
_SIZE = struct.Struct(">i")

TOPICS = 1000
PRODUCERS = 50


class Lookupd:
    """An nsqlookupd subprocess on kernel-chosen ports; a context manager."""

    def __init__(self, executable: str, start_timeout_s: float = 30.0) -> None:
        self.executable = executable
        self.start_timeout_s = start_timeout_s
        self.tcp_port = 0
        self.http_port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Lookupd:
        proc = self._proc = subprocess.Popen(
            [self.executable, "--tcp-address=127.0.0.1:0", "--http-address=127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert proc.stderr is not None
        deadline = time.monotonic() + self.start_timeout_s
        while not (self.tcp_port and self.http_port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("nsqlookupd did not start")
            line = proc.stderr.readline().decode(errors="replace")
            match = _LISTENING.search(line)
            if match:
                setattr(self, f"{match.group(1).lower()}_port", int(match.group(2)))
        # Keep draining stderr so the daemon never blocks on a full pipe.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid


def _read_reply(sock: socket.socket, pending: bytearray) -> bytes:
    while True:
        if len(pending) >= 4:
            (size,) = _SIZE.unpack_from(pending)
            if len(pending) >= 4 + size:
                reply = bytes(pending[4 : 4 + size])
                del pending[: 4 + size]
                return reply
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("nsqlookupd closed a producer connection")
        pending += data


def register_producers(port: int, producers: int = PRODUCERS, topics: int = TOPICS) -> list[socket.socket]:
    """``producers`` fake nsqd links, each registering every topic with one channel."""
    links = []
    for n in range(producers):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        body = json.dumps(
            {
                "version": "1.3.0",
                "tcp_port": 10000 + n,
                "http_port": 20000 + n,
                "hostname": f"node{n}",
                "broadcast_address": f"10.1.{n // 250}.{n % 250}",
            }
        ).encode()
        commands = [b"  V1IDENTIFY\n" + _SIZE.pack(len(body)) + body]
        commands += [b"REGISTER t%d c\n" % t for t in range(topics)]
        sock.sendall(b"".join(commands))
        pending = bytearray()
        for _ in range(len(commands)):
            reply = _read_reply(sock, pending)
            if reply.startswith(b"E_"):
                raise RuntimeError(f"nsqlookupd refused a registration: {reply!r}")
        links.append(sock)
    return links


def lookup_rows(
    lookupd_path: str, seconds: float, run_clients: Any, client: Any, throughput: Any
) -> list[dict[str, Any]]:
    """Register the producers, then 2 keep-alive HTTP clients GET /lookup for ``seconds``."""
    with Lookupd(lookupd_path) as lookupd:
        links = register_producers(lookupd.tcp_port)
        try:
            config = {"host": "127.0.0.1", "port": lookupd.http_port, "topics": TOPICS, "duration_s": seconds}
            clients = [client("http-lookup", config) for _ in range(2)]
            cpu_before = _cpu_seconds(lookupd.pid)
            results = run_clients(clients, timeout_s=seconds + 60)
            cpu = _cpu_seconds(lookupd.pid) - cpu_before
            rss_kib = _rss_kib(lookupd.pid)
        finally:
            for sock in links:
                sock.close()
    requests = sum(r["messages"] for r in results)
    span = (max(r["end_ns"] for r in results) - min(r["start_ns"] for r in results)) / 1e9
    row: dict[str, Any] = throughput(
        "lookupd-lookup",
        f"GET /lookup?topic= (random of {TOPICS} topics, {PRODUCERS} producers each), 2 keep-alive conns",
        requests,
        span,
        0,
    )
    row["nsqd_cpu_us_per_msg"] = cpu / requests * 1e6 if requests else None
    row["rss_kib"] = rss_kib
    row["peak_rss_kib"] = rss_kib
    return [row]


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
