"""
nsqd over real TCP with pynsq 0.9.1 (tornado) as the client, plus a slow-consumer check.

Each pynsq scenario runs in its own interpreter (L{run_pynsq}) and reports what it saw; the
assertions are made here.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import DEFAULT_IDENTIFY, HEX_ID, run_pynsq, start_nsqd
from tests.integration._rawclient import RawClient
from twisted_nsq.wire.frames import FRAME_TYPE_RESPONSE

_log = Logger()


PUB_MPUB = r"""
async def scenario():
    topic = P["topic"]
    w = Writer()
    await connected(w)
    before = time.time_ns()
    answers = []
    for i in range(10):
        answers.append(await call(w, "pub", topic, b"pub-%02d" % i))
    answers.append(await call(w, "mpub", topic, [b"mpub-%02d" % i for i in range(20)]))
    after = time.time_ns()
    got = []

    def handler(m):
        got.append([text(m.body), m.attempts, text(m.id), m.timestamp])
        return True

    r = Reader(topic, "ch", handler, max_in_flight=10)
    await subscribed(r)
    await until(lambda: len(got) >= 30, 10)
    await asyncio.sleep(0.3)  # a duplicate delivery would show up now
    return {
        "answers": answers,
        "got": got,
        "before": before,
        "after": after,
        "writer_identify": w.identify_responses,
        "reader_identify": r.identify_responses,
        "errors": w.errors + r.errors,
    }
"""

DPUB = r"""
async def scenario():
    topic = P["topic"]
    got = []
    r = Reader(topic, "ch", lambda m: got.append([text(m.body), time.monotonic(), m.attempts]) or True)
    await subscribed(r)
    w = Writer()
    await connected(w)
    start = time.monotonic()
    answers = [await call(w, "dpub", topic, 1500, b"deferred")]
    answers.append(await call(w, "pub", topic, b"immediate"))
    await until(lambda: len(got) >= 2, 8)
    await asyncio.sleep(0.2)
    return {
        "answers": answers,
        "got": [[body, at - start, attempts] for body, at, attempts in got],
        "errors": w.errors + r.errors,
    }
"""

MAX_IN_FLIGHT = r"""
async def scenario():
    topic = P["topic"]
    w = Writer()
    await connected(w)
    bodies = [b"m-%03d" % i for i in range(100)]
    answer = await call(w, "mpub", topic, bodies)
    loop = asyncio.get_running_loop()
    got = []
    state = {"outstanding": 0, "max": 0}

    def finish(m):
        state["outstanding"] -= 1
        m.finish()

    def handler(m):
        m.enable_async()
        got.append([text(m.body), m.attempts])
        state["outstanding"] += 1
        state["max"] = max(state["max"], state["outstanding"])
        loop.call_later(0.1, finish, m)

    r = Reader(topic, "ch", handler, max_in_flight=25)
    await subscribed(r)
    await until(lambda: len(got) >= 100, 15)
    await until(lambda: state["outstanding"] == 0, 2)
    await asyncio.sleep(0.3)
    return {"answer": answer, "got": got, "max_outstanding": state["max"], "errors": w.errors + r.errors}
"""

TWO_READERS = r"""
async def scenario():
    topic = P["topic"]
    loop = asyncio.get_running_loop()
    got = [[], []]

    def make(index):
        def handler(m):
            m.enable_async()
            got[index].append([text(m.body), m.attempts])
            loop.call_later(0.005, m.finish)
        return handler

    readers = [Reader(topic, "shared", make(i), max_in_flight=5) for i in range(2)]
    for r in readers:
        await subscribed(r)
    w = Writer()
    await connected(w)
    answer = await call(w, "mpub", topic, [b"lb-%03d" % i for i in range(200)])
    await until(lambda: len(got[0]) + len(got[1]) >= 200, 15)
    await asyncio.sleep(0.5)
    return {"answer": answer, "got": got, "errors": w.errors + readers[0].errors + readers[1].errors}
"""

TWO_CHANNELS = r"""
async def scenario():
    topic = P["topic"]
    got = {"a": [], "b": []}
    readers = [
        Reader(topic, name, lambda m, name=name: got[name].append(text(m.body)) or True, max_in_flight=10)
        for name in ("a", "b")
    ]
    for r in readers:
        await subscribed(r)
    w = Writer()
    await connected(w)
    answer = await call(w, "mpub", topic, [b"c-%02d" % i for i in range(30)])
    await until(lambda: len(got["a"]) >= 30 and len(got["b"]) >= 30, 10)
    await asyncio.sleep(0.3)
    return {"answer": answer, "got": got, "errors": w.errors + readers[0].errors + readers[1].errors}
"""

REQUEUE = r"""
async def scenario():
    topic = P["topic"]
    seen = []

    def handler(m):
        seen.append([text(m.id), m.attempts, time.monotonic(), text(m.body)])
        if len(seen) == 1:
            m.enable_async()
            m.requeue(time_ms=1000, backoff=False)
            return None
        return True

    r = Reader(topic, "ch", handler)
    await subscribed(r)
    w = Writer()
    await connected(w)
    answer = await call(w, "pub", topic, b"requeue-me")
    await until(lambda: len(seen) >= 2, 8)
    await asyncio.sleep(0.5)  # a third delivery would show up now
    first = seen[0][2] if seen else 0
    return {
        "answer": answer,
        "seen": [[i, attempts, at - first, body] for i, attempts, at, body in seen],
        "errors": w.errors + r.errors,
    }
"""

TIMEOUT_REDELIVERY = r"""
async def scenario():
    topic = P["topic"]
    seen = []

    def handler(m):
        # Age since nsqd accepted the message: nsqd's timestamp against the same machine's clock.
        seen.append([text(m.id), m.attempts, (time.time_ns() - m.timestamp) / 1e9, text(m.body)])
        if len(seen) == 1:
            m.enable_async()  # never answered: nsqd must time it out
            return None
        return True

    kwargs = {}
    if P["msg_timeout"] is not None:
        kwargs["msg_timeout"] = P["msg_timeout"]
    r = Reader(topic, "ch", handler, **kwargs)
    await subscribed(r)
    w = Writer()
    await connected(w)
    answer = await call(w, "pub", topic, b"ignore-me")
    await until(lambda: len(seen) >= 2, 8)
    await asyncio.sleep(0.5)
    return {
        "answer": answer,
        "seen": seen,
        "reader_identify": r.identify_responses,
        "errors": w.errors + r.errors,
    }
"""


class PynsqTests(SynchronousTestCase):
    """pynsq's Writer and Reader against a real nsqd process."""

    def assertValidIDs(self, ids: list[str]) -> None:
        for message_id in ids:
            self.assertTrue(HEX_ID.fullmatch(message_id), f"message ID {message_id!r} is not 16 hex digits")

    def test_pub_and_mpub_then_reader(self) -> None:
        """
        Writer.pub and Writer.mpub are answered C{OK}; a Reader that subscribes afterwards gets
        every message exactly once, first attempt, with a 16-hex-digit ID and the publish time.
        """
        nsqd = start_nsqd(self)
        result = run_pynsq(self, nsqd, PUB_MPUB, topic="pubmpub")
        self.assertEqual(result["answers"], ["OK"] * 11)
        self.assertEqual(result["errors"], [])
        self.assertEqual(result["writer_identify"], [DEFAULT_IDENTIFY])
        self.assertEqual(result["reader_identify"], [DEFAULT_IDENTIFY])
        got = result["got"]
        expected = sorted([f"pub-{i:02d}" for i in range(10)] + [f"mpub-{i:02d}" for i in range(20)])
        self.assertEqual(sorted(body for body, _, _, _ in got), expected)
        self.assertEqual({attempts for _, attempts, _, _ in got}, {1})
        ids = [message_id for _, _, message_id, _ in got]
        self.assertValidIDs(ids)
        self.assertEqual(len(set(ids)), 30)
        # The timestamp is nanoseconds since the epoch, taken when nsqd accepted the message.
        slack = 100_000_000
        for body, _, _, timestamp in got:
            self.assertTrue(
                result["before"] - slack <= timestamp <= result["after"] + slack,
                f"{body}: timestamp {timestamp} outside [{result['before']}, {result['after']}]",
            )

    def test_dpub_is_delivered_after_its_delay(self) -> None:
        """
        A message DPUBed with 1500 ms reaches a subscribed Reader no sooner than 1.5 s later,
        after a message PUBlished just after it.
        """
        nsqd = start_nsqd(self)
        result = run_pynsq(self, nsqd, DPUB, topic="dpub")
        self.assertEqual(result["answers"], ["OK", "OK"])
        self.assertEqual(result["errors"], [])
        got = result["got"]
        self.assertEqual([body for body, _, _ in got], ["immediate", "deferred"])
        self.assertEqual([attempts for _, _, attempts in got], [1, 1])
        immediate_at, deferred_at = got[0][1], got[1][1]
        self.assertLess(immediate_at, 1.0)
        # 1.5 s minus a few ms for Twisted's wall-clock timers against our monotonic clock.
        self.assertGreaterEqual(deferred_at, 1.49)
        self.assertLess(deferred_at, 4.0)

    def test_reader_max_in_flight_receives_everything(self) -> None:
        """
        A Reader with max_in_flight 25 gets all 100 waiting messages exactly once, and nsqd
        fills its RDY window: 25 messages are outstanding at once, never more.
        """
        nsqd = start_nsqd(self)
        result = run_pynsq(self, nsqd, MAX_IN_FLIGHT, topic="window")
        self.assertEqual(result["answer"], "OK")
        self.assertEqual(result["errors"], [])
        self.assertEqual(sorted(body for body, _ in result["got"]), [f"m-{i:03d}" for i in range(100)])
        self.assertEqual({attempts for _, attempts in result["got"]}, {1})
        self.assertEqual(result["max_outstanding"], 25)

    def test_two_readers_share_one_channel(self) -> None:
        """
        Two Readers on one channel split 200 messages: each message goes to exactly one of
        them, once, and both get some.
        """
        nsqd = start_nsqd(self)
        result = run_pynsq(self, nsqd, TWO_READERS, topic="shared")
        self.assertEqual(result["answer"], "OK")
        self.assertEqual(result["errors"], [])
        first = [body for body, _ in result["got"][0]]
        second = [body for body, _ in result["got"][1]]
        counts = Counter(first + second)
        self.assertEqual(sorted(counts), [f"lb-{i:03d}" for i in range(200)])
        self.assertEqual(set(counts.values()), {1})
        self.assertEqual(set(first) & set(second), set())
        self.assertEqual(len(first) + len(second), 200)
        self.assertGreater(len(first), 0)
        self.assertGreater(len(second), 0)
        self.assertEqual({attempts for got in result["got"] for _, attempts in got}, {1})

    def test_two_channels_each_get_every_message(self) -> None:
        """Each of two channels of a topic receives every one of 30 messages exactly once."""
        nsqd = start_nsqd(self)
        result = run_pynsq(self, nsqd, TWO_CHANNELS, topic="fanout")
        self.assertEqual(result["answer"], "OK")
        self.assertEqual(result["errors"], [])
        expected = [f"c-{i:02d}" for i in range(30)]
        self.assertEqual(sorted(result["got"]["a"]), expected)
        self.assertEqual(sorted(result["got"]["b"]), expected)

    def assertRedelivered(self, seen: list[list[Any]], body: str, minimum: float) -> None:
        """
        Exactly two deliveries of one message: attempts 1 then 2, the second C{minimum} s or
        more (and less than C{minimum} + 2.5 s) after the scenario's reference point.
        """
        self.assertEqual(len(seen), 2, f"deliveries: {seen}")
        (first_id, first_attempts, _, first_body), (second_id, second_attempts, delay, second_body) = seen
        self.assertEqual((first_body, second_body), (body, body))
        self.assertEqual(first_id, second_id)
        self.assertValidIDs([first_id])
        self.assertEqual((first_attempts, second_attempts), (1, 2))
        self.assertGreaterEqual(delay, minimum)
        self.assertLess(delay, minimum + 2.5)

    def test_requeue_with_delay(self) -> None:
        """
        A message REQed with 1000 ms comes back (same ID, attempts 2) no sooner than 1 s later,
        and only once.
        """
        nsqd = start_nsqd(self)
        result = run_pynsq(self, nsqd, REQUEUE, topic="requeue")
        self.assertEqual(result["answer"], "OK")
        self.assertEqual(result["errors"], [])
        self.assertRedelivered(result["seen"], "requeue-me", 0.99)

    def test_msg_timeout_from_identify(self) -> None:
        """
        With C{msg_timeout} 1000 ms negotiated in IDENTIFY, a message that is not FINed is
        redelivered (same ID, attempts 2) about 1 s later.
        """
        nsqd = start_nsqd(self)
        result = run_pynsq(self, nsqd, TIMEOUT_REDELIVERY, topic="timeout1", msg_timeout=1)
        self.assertEqual(result["answer"], "OK")
        self.assertEqual(result["errors"], [])
        self.assertEqual([r["msg_timeout"] for r in result["reader_identify"]], [1000])
        # Ages since publish: the redelivery cannot come before publish + 1 s.
        self.assertRedelivered(result["seen"], "ignore-me", 1.0)
        self.assertLess(result["seen"][0][2], 0.5)

    def test_msg_timeout_flag(self) -> None:
        """
        nsqd's C{--msg-timeout=1s} is the default for a client that does not negotiate one: it is
        reported in IDENTIFY and an unanswered message is redelivered about 1 s later.
        """
        nsqd = start_nsqd(self, "--msg-timeout=1s")
        result = run_pynsq(self, nsqd, TIMEOUT_REDELIVERY, topic="timeout2", msg_timeout=None)
        self.assertEqual(result["answer"], "OK")
        self.assertEqual(result["errors"], [])
        self.assertEqual([r["msg_timeout"] for r in result["reader_identify"]], [1000])
        # Ages since publish: the redelivery cannot come before publish + 1 s.
        self.assertRedelivered(result["seen"], "ignore-me", 1.0)
        self.assertLess(result["seen"][0][2], 0.5)


class SlowConsumerTests(SynchronousTestCase):
    """A consumer that stops reading must not stall nsqd or make it buffer without bound."""

    def test_consumer_that_never_reads(self) -> None:
        """
        A consumer sends RDY 2500 and stops reading while 20 MB of 10 KB messages are published
        to its channel: other clients keep being served promptly, nsqd's RSS stays below 150 MB,
        and once the consumer reads again it gets every message exactly once.
        """
        nsqd = start_nsqd(self)
        consumer = RawClient(nsqd.tcp_address, timeout=10.0, receive_buffer=32768)
        self.addCleanup(consumer.close)
        consumer.identify({"feature_negotiation": True})
        self.assertEqual(consumer.sub("slow", "ch"), (FRAME_TYPE_RESPONSE, b"OK"))
        consumer.rdy(2500)
        rss_start = nsqd.rss_kib()

        producer = RawClient(nsqd.tcp_address, timeout=10.0)
        self.addCleanup(producer.close)
        filler = bytes(range(256)) * 40  # 10240 bytes
        bodies = [b"%06d" % i + filler[6:] for i in range(2000)]
        latencies: list[float] = []
        for batch in range(20):
            answer = producer.mpub("slow", bodies[batch * 100 : (batch + 1) * 100])
            self.assertEqual(answer, (FRAME_TYPE_RESPONSE, b"OK"), f"MPUB batch {batch}")
            if batch % 5 == 4:
                started = time.monotonic()
                fresh = RawClient(nsqd.tcp_address, timeout=5.0)
                try:
                    self.assertEqual(fresh.pub("elsewhere", b"ping"), (FRAME_TYPE_RESPONSE, b"OK"))
                finally:
                    fresh.close()
                latencies.append(time.monotonic() - started)
        rss_end = nsqd.rss_kib()
        rss_peak = nsqd.peak_rss_kib()
        _log.info(
            "slow consumer: RSS {start} KiB -> {end} KiB (peak {peak} KiB), fresh PUB latencies {lat}",
            start=rss_start,
            end=rss_end,
            peak=rss_peak,
            lat=latencies,
        )
        self.assertLess(max(latencies), 1.0, f"fresh-connection PUB latencies {latencies}")
        self.assertLess(rss_peak, 150 * 1024, f"nsqd peak RSS {rss_peak} KiB (start {rss_start} KiB)")

        received: Counter[bytes] = Counter()
        for _ in range(2000):
            message = consumer.read_message(timeout=10.0)
            self.assertEqual(message.attempts, 1)
            received[message.body] += 1
        self.assertEqual(set(received), set(bodies))
        self.assertEqual(set(received.values()), {1})
        self.assertTrue(nsqd.alive())


class RawTimingTests(SynchronousTestCase):
    """nsqd's in-flight timeout and REQ delay measured with a client that reads immediately."""

    def test_msg_timeout_and_requeue_timing(self) -> None:
        """
        With C{msg_timeout} 1000 ms a message that is not answered comes back (same ID, attempts
        2) 1 s after it was delivered, not earlier and not much later; a REQ of 500 ms brings it
        back (attempts 3) 0.5 s after the REQ.
        """
        nsqd = start_nsqd(self)
        consumer = RawClient(nsqd.tcp_address, timeout=5.0)
        self.addCleanup(consumer.close)
        consumer.identify({"feature_negotiation": True, "msg_timeout": 1000})
        self.assertEqual(consumer.sub("timing", "ch"), (FRAME_TYPE_RESPONSE, b"OK"))
        consumer.rdy(1)
        producer = RawClient(nsqd.tcp_address, timeout=5.0)
        self.addCleanup(producer.close)
        self.assertEqual(producer.pub("timing", b"late"), (FRAME_TYPE_RESPONSE, b"OK"))
        first = consumer.read_message()
        delivered = time.monotonic()
        second = consumer.read_message()
        timed_out = time.monotonic() - delivered
        self.assertEqual(first.id, second.id)
        self.assertEqual((first.attempts, second.attempts, second.body), (1, 2, b"late"))
        self.assertGreaterEqual(timed_out, 0.99)
        self.assertLess(timed_out, 1.5)
        requeued = time.monotonic()
        consumer.req(second.id, 500)
        third = consumer.read_message()
        delay = time.monotonic() - requeued
        self.assertEqual((third.id, third.attempts), (first.id, 3))
        self.assertGreaterEqual(delay, 0.49)
        self.assertLess(delay, 1.0)
        consumer.fin(third.id)
        consumer.assert_silent(0.3)

    def test_delivery_after_pipelined_sub_and_rdy_is_prompt(self) -> None:
        """
        A consumer that writes SUB and RDY together before reading the SUB answer (as pynsq does)
        gets a message published a few milliseconds later within 15 ms (median of 5).

        Go sets TCP_NODELAY on every connection. Without it the message frame waits behind the
        still unacknowledged C{OK} (Nagle's algorithm against the client's delayed ACK, about
        40 ms on Linux).
        """
        nsqd = start_nsqd(self)
        producer = RawClient(nsqd.tcp_address, timeout=5.0)
        self.addCleanup(producer.close)
        latencies: list[float] = []
        for attempt in range(5):
            consumer = RawClient(nsqd.tcp_address, timeout=5.0)
            self.addCleanup(consumer.close)
            consumer.identify({"feature_negotiation": True})
            consumer.send(b"SUB prompt%d ch\nRDY 1\n" % attempt)
            consumer.expect_ok()
            time.sleep(0.005)
            started = time.monotonic()
            self.assertEqual(producer.pub(f"prompt{attempt}", b"now"), (FRAME_TYPE_RESPONSE, b"OK"))
            self.assertEqual(consumer.read_message().body, b"now")
            latencies.append(time.monotonic() - started)
        self.assertLess(sorted(latencies)[2], 0.015, f"publish-to-delivery latencies {latencies}")
