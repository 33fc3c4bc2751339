"""
nsqd's HTTP API on the real C{nsqd} process: publishing over HTTP and consuming over TCP, topic
and channel actions as a pynsq consumer sees them, 100 MB bodies refused without being held in
memory, and the operator-facing additions (C{/metrics}, statsd, cross-site refusal, C{/debug}).
"""

from __future__ import annotations

import http.client
import json
import re
import select
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import NSQDProcess, run_pynsq, start_nsqd
from tests.integration._rawclient import RawClient

_INT32 = struct.Struct(">i")

#: 100 MB, sent 1 MiB at a time.
HUGE = 100 * 1024 * 1024
_BLOCK = b"x" * (1024 * 1024)
#: How much nsqd's resident set may grow while refusing a 100 MB body.
RSS_GROWTH_LIMIT_KIB = 20 * 1024


def http_call(
    nsqd: NSQDProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request to nsqd's HTTP port: (status, lower-case headers, body)."""
    host, port = nsqd.http_address
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        connection.close()


def stats(nsqd: NSQDProcess, query: str = "") -> dict[str, Any]:
    status, _, body = http_call(nsqd, "GET", "/stats?format=json&include_mem=false" + query)
    assert status == 200, body
    document: dict[str, Any] = json.loads(body)
    return document


def binary_mpub(messages: list[bytes]) -> bytes:
    return _INT32.pack(len(messages)) + b"".join(_INT32.pack(len(m)) + m for m in messages)


class PublishTests(SynchronousTestCase):
    def test_pub_and_mpub_then_consume_over_tcp(self) -> None:
        nsqd = start_nsqd(self)
        self.assertEqual(http_call(nsqd, "POST", "/pub?topic=web", b"hello")[::2], (200, b"OK"))
        self.assertEqual(http_call(nsqd, "POST", "/mpub?topic=web", b"a\nb\n\nc\n")[::2], (200, b"OK"))
        body = binary_mpub([b"bin1", b"bin\n2"])
        self.assertEqual(http_call(nsqd, "POST", "/mpub?topic=web&binary=true", body)[::2], (200, b"OK"))
        status, headers, _ = http_call(nsqd, "POST", "/pub?topic=web", b"")
        self.assertEqual(status, 400)
        self.assertEqual(headers["x-nsq-content-type"], "nsq; version=1.0")
        client = RawClient(nsqd.tcp_address, timeout=10.0)
        self.addCleanup(client.close)
        self.assertEqual(client.sub("web", "reader").data, b"OK")
        client.rdy(10)
        bodies = []
        for _ in range(6):
            message = client.read_message()
            bodies.append(message.body)
            client.fin(message.id)
        self.assertEqual(bodies, [b"hello", b"a", b"b", b"c", b"bin1", b"bin\n2"])
        topic = stats(nsqd, "&topic=web")["topics"][0]
        self.assertEqual((topic["message_count"], topic["message_bytes"]), (6, 17))
        channel = topic["channels"][0]
        self.assertEqual((channel["message_count"], channel["depth"]), (6, 0))


#: Topic and channel actions over HTTP while a pynsq Reader consumes; the scenario reports what
#: the Reader had received at each step.
ACTIONS = r"""
import urllib.request


def post(path, body=b""):
    request = urllib.request.Request("http://%s%s" % (P["http"], path), data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def depths():
    with urllib.request.urlopen(
        "http://%s/stats?format=json&include_mem=false&topic=%s" % (P["http"], P["topic"]), timeout=10
    ) as response:
        document = json.loads(response.read())
    topics = document["topics"] or []
    return {
        t["topic_name"]: [t["depth"], {c["channel_name"]: c["depth"] for c in t["channels"]}]
        for t in topics
    }


async def scenario():
    topic = P["topic"]
    on = "topic=%s" % topic
    ch = "topic=%s&channel=ch" % topic
    got = []
    seen = {}

    def handler(message):
        got.append(message.body.decode())
        return True

    post("/topic/create?" + on)
    post("/channel/create?" + ch)
    reader = Reader(topic, "ch", handler, max_in_flight=10)
    await subscribed(reader)
    post("/pub?" + on, b"m1")
    await until(lambda: "m1" in got, 5)

    post("/channel/pause?" + ch)
    post("/pub?" + on, b"m2")
    await asyncio.sleep(0.5)
    seen["channel_paused"] = [list(got), depths()]
    post("/channel/unpause?" + ch)
    await until(lambda: "m2" in got, 5)
    seen["channel_unpaused"] = list(got)

    post("/topic/pause?" + on)
    post("/pub?" + on, b"m3")
    await asyncio.sleep(0.5)
    seen["topic_paused"] = [list(got), depths()]
    post("/topic/unpause?" + on)
    await until(lambda: "m3" in got, 5)
    seen["topic_unpaused"] = list(got)

    post("/channel/pause?" + ch)
    post("/mpub?" + on, b"m4\nm5")
    seen["before_channel_empty"] = depths()
    post("/channel/empty?" + ch)
    seen["after_channel_empty"] = depths()
    post("/channel/unpause?" + ch)
    post("/pub?" + on, b"m6")
    await until(lambda: "m6" in got, 5)

    post("/topic/pause?" + on)
    post("/mpub?" + on, b"m7\nm8")
    seen["before_topic_empty"] = depths()
    post("/topic/empty?" + on)
    seen["after_topic_empty"] = depths()
    post("/topic/unpause?" + on)
    post("/pub?" + on, b"m9")
    await until(lambda: "m9" in got, 5)
    await asyncio.sleep(0.3)
    seen["emptied"] = list(got)

    second = Reader(topic, "other", handler, max_in_flight=10)
    await subscribed(second)
    post("/channel/delete?" + ch)
    seen["channel_delete_closed"] = await until(lambda: not reader.conns, 5)
    seen["second_still_open"] = bool(second.conns)
    seen["after_channel_delete"] = depths()
    post("/topic/delete?" + on)
    seen["topic_delete_closed"] = await until(lambda: not second.conns, 5)
    seen["after_topic_delete"] = depths()
    return seen
"""


class ActionsTests(SynchronousTestCase):
    def test_pause_unpause_empty_delete_seen_by_pynsq(self) -> None:
        nsqd = start_nsqd(self)
        host, port = nsqd.http_address
        seen = run_pynsq(self, nsqd, ACTIONS, topic="actions", http=f"{host}:{port}", timeout=60.0)
        # A paused channel keeps its message; the topic has passed it on.
        self.assertEqual(seen["channel_paused"], [["m1"], {"actions": [0, {"ch": 1}]}])
        self.assertEqual(seen["channel_unpaused"], ["m1", "m2"])
        # A paused topic keeps the message itself.
        self.assertEqual(seen["topic_paused"], [["m1", "m2"], {"actions": [1, {"ch": 0}]}])
        self.assertEqual(seen["topic_unpaused"], ["m1", "m2", "m3"])
        self.assertEqual(seen["before_channel_empty"], {"actions": [0, {"ch": 2}]})
        self.assertEqual(seen["after_channel_empty"], {"actions": [0, {"ch": 0}]})
        self.assertEqual(seen["before_topic_empty"], {"actions": [2, {"ch": 0}]})
        self.assertEqual(seen["after_topic_empty"], {"actions": [0, {"ch": 0}]})
        # What was emptied never reached the consumer.
        self.assertEqual(seen["emptied"], ["m1", "m2", "m3", "m6", "m9"])
        self.assertTrue(seen["channel_delete_closed"])
        self.assertTrue(seen["second_still_open"])
        self.assertEqual(seen["after_channel_delete"], {"actions": [0, {"other": 0}]})
        self.assertTrue(seen["topic_delete_closed"])
        self.assertEqual(seen["after_topic_delete"], {})


# -- 100 MB bodies ----------------------------------------------------------------------------


def _plain_body() -> Iterator[bytes]:
    for _ in range(HUGE // len(_BLOCK)):
        yield _BLOCK


def _chunked_body() -> Iterator[bytes]:
    for _ in range(HUGE // len(_BLOCK)):
        yield b"%x\r\n" % len(_BLOCK) + _BLOCK + b"\r\n"
    yield b"0\r\n\r\n"


def send_huge(address: tuple[str, int], head: bytes, body: Iterator[bytes]) -> tuple[bytes, int]:
    """
    Send C{head}, then C{body} while reading whatever nsqd answers, until nsqd closes the
    connection (or 60 s pass). Returns what was read and how many body bytes nsqd took.
    """
    received = bytearray()
    sent = 0
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        pending = memoryview(b"")
        sending = True
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if sending else [], [], 1.0)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                received += data
            if writable:
                if not pending:
                    chunk = next(body, None)
                    if chunk is None:
                        sending = False
                        continue
                    pending = memoryview(chunk)
                try:
                    count = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    sending = False
                    continue
                sent += count
                pending = pending[count:]
    return bytes(received), sent


class HugeBodyTests(SynchronousTestCase):
    def check_refused(
        self, path: str, chunked: bool, message: bytes, body_limit: int
    ) -> tuple[bytes, int, int]:
        nsqd = start_nsqd(self)
        # Warm up the HTTP path so its first-use allocations are not counted.
        self.assertEqual(http_call(nsqd, "POST", "/pub?topic=warm", b"x")[0], 200)
        before = nsqd.rss_kib()
        if chunked:
            head = b"POST %s HTTP/1.1\r\nHost: nsqd\r\nTransfer-Encoding: chunked\r\n\r\n" % path.encode()
            body = _chunked_body()
        else:
            head = b"POST %s HTTP/1.1\r\nHost: nsqd\r\nContent-Length: %d\r\n\r\n" % (path.encode(), HUGE)
            body = _plain_body()
        received, sent = send_huge(nsqd.http_address, head, body)
        after = nsqd.rss_kib()
        status, _, response_body = received.partition(b"\r\n")[0], None, received.partition(b"\r\n\r\n")[2]
        self.assertEqual(status, b"HTTP/1.1 413 Request Entity Too Large", received[:300])
        self.assertEqual(response_body, b'{"message":"%s"}' % message)
        self.assertLess(after - before, RSS_GROWTH_LIMIT_KIB, f"nsqd grew from {before} KiB to {after} KiB")
        # nsqd stopped taking the body soon after its limit (kernel buffers make up the rest).
        self.assertLess(sent, body_limit + 32 * 1024 * 1024)
        self.assertEqual(http_call(nsqd, "GET", "/ping")[::2], (200, b"OK"))
        self.assertEqual([t["topic_name"] for t in stats(nsqd)["topics"]], ["warm"])
        return received, before, after

    def test_pub_content_length(self) -> None:
        self.check_refused("/pub?topic=huge", False, b"MSG_TOO_BIG", 1024 * 1024)

    def test_pub_chunked(self) -> None:
        self.check_refused("/pub?topic=huge", True, b"MSG_TOO_BIG", 1024 * 1024)

    def test_mpub_content_length(self) -> None:
        self.check_refused("/mpub?topic=huge", False, b"BODY_TOO_BIG", 5 * 1024 * 1024)

    def test_mpub_chunked(self) -> None:
        self.check_refused("/mpub?topic=huge", True, b"BODY_TOO_BIG", 5 * 1024 * 1024)


# -- beyond NSQ -------------------------------------------------------------------------------

_STATSD_LINE = re.compile(rb"^[A-Za-z0-9_.#-]+:-?\d+\|[cg]$")


class OperatorTests(SynchronousTestCase):
    def test_metrics(self) -> None:
        nsqd = start_nsqd(self)
        http_call(nsqd, "POST", "/pub?topic=scraped", b"12345")
        status, headers, body = http_call(nsqd, "GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        self.assertEqual(int(headers["content-length"]), len(body))
        self.assertIn(b'nsq_topic_message_bytes_total{topic="scraped"} 5.0\n', body)
        self.assertIn(b"\nprocess_resident_memory_bytes ", body)

    def test_statsd_push(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
            receiver.bind(("127.0.0.1", 0))
            receiver.settimeout(1.0)
            statsd_port = receiver.getsockname()[1]
            nsqd = start_nsqd(
                self,
                f"--statsd-address=127.0.0.1:{statsd_port}",
                "--statsd-interval=1s",
                "--broadcast-address=test.host",
            )
            http_call(nsqd, "POST", "/mpub?topic=pushed", b"a\nb\nc")
            prefix = b"nsq.test_host_%d." % nsqd.http_address[1]
            wanted = prefix + b"topic.pushed.message_count:3|c"
            lines: list[bytes] = []
            deadline = time.monotonic() + 10
            while wanted not in lines and time.monotonic() < deadline:
                try:
                    packet = receiver.recv(65536)
                except TimeoutError:
                    continue
                self.assertLessEqual(len(packet), 508)
                self.assertTrue(packet.endswith(b"\n"))
                lines.extend(packet.splitlines())
        self.assertIn(wanted, lines)
        self.assertIn(prefix + b"topic.pushed.message_bytes:3|c", lines)
        self.assertTrue([line for line in lines if line.startswith(prefix + b"mem.heap_objects:")])
        for line in lines:
            self.assertRegex(line, _STATSD_LINE)

    def test_cross_site_and_debug(self) -> None:
        nsqd = start_nsqd(self, "--http-debug")
        status, _, body = http_call(
            nsqd, "POST", "/topic/create?topic=csrf", headers={"Origin": "http://attacker.example"}
        )
        self.assertEqual((status, body), (403, b'{"message":"CROSS_SITE_REQUEST"}'))
        status, _, body = http_call(
            nsqd, "POST", "/topic/create?topic=csrf", headers={"Sec-Fetch-Site": "cross-site"}
        )
        self.assertEqual(status, 403)
        self.assertEqual(stats(nsqd)["topics"], [])
        host, port = nsqd.http_address
        same = {"Origin": f"http://{host}:{port}", "Sec-Fetch-Site": "same-origin"}
        self.assertEqual(http_call(nsqd, "POST", "/topic/create?topic=csrf", headers=same)[0], 200)
        self.assertEqual(http_call(nsqd, "POST", "/topic/create?topic=plain")[0], 200)
        status, _, body = http_call(nsqd, "GET", "/debug/threads")
        self.assertEqual(status, 200)
        self.assertIn(b"thread MainThread", body)
        self.assertEqual(http_call(nsqd, "GET", "/debug/gc")[0], 200)

    def test_debug_off_by_default(self) -> None:
        nsqd = start_nsqd(self)
        for method, path in (("GET", "/debug/threads"), ("GET", "/debug/gc"), ("POST", "/debug/freememory")):
            status, _, body = http_call(nsqd, method, path)
            self.assertEqual((status, body), (404, b'{"message":"NOT_FOUND"}'))
