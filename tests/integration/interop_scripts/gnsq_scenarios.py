"""
gnsq 1.0.2 (gevent) scenarios against a real nsqd and nsqlookupd, run by
C{tests/integration/test_interop_clients.py} in a separate interpreter.

Usage: C{python gnsq_scenarios.py '{"scenario": NAME, ...}'}. The script prints one JSON line,
C{{"ok": true, "result": ...}} or C{{"ok": false, "error": TRACEBACK}}; the test makes the
assertions. gevent patches the standard library first, so this must never be imported by trial.
"""

from __future__ import annotations

from gevent import monkey  # type: ignore[import-untyped]

monkey.patch_all()

import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import ssl  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import gnsq  # type: ignore[import-untyped]  # noqa: E402

logging.basicConfig(
    level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)

#: The scenario parameters, from the JSON in argv[1] (read by main()).
P: dict[str, Any] = {}
OPEN: list[Any] = []


def text(data: bytes) -> str:
    return data.decode("latin-1")


def until(predicate: Callable[[], Any], timeout: float, interval: float = 0.01) -> Any:
    """Poll C{predicate} until it is true or C{timeout} seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        gevent.sleep(interval)


def producer(address: str) -> Any:
    """A started gnsq Producer bound to one nsqd."""
    p = gnsq.Producer([address])
    OPEN.append(p)
    p.start()
    return p


def consumer(topic: str, handler: Callable[[Any, Any], None], **kwargs: Any) -> Any:
    """A started (non-blocking) gnsq Consumer with C{handler} connected to its messages."""
    c = gnsq.Consumer(topic, "ch", message_handler=handler, **kwargs)
    OPEN.append(c)
    c.start(block=False)
    return c


def wait_topic_in_lookupd(lookupd_url: str, topic: str, producers: int) -> Any:
    """Ask nsqlookupd (through gnsq's client) until C{topic} has C{producers} producers."""
    client = gnsq.LookupdClient.from_url(lookupd_url)

    def lookup() -> Any:
        try:
            answer = client.lookup(topic)
        except gnsq.errors.NSQHttpError:
            return None
        return answer if len(answer["producers"]) >= producers else None

    answer = until(lookup, 10, 0.05)
    if not answer:
        raise AssertionError(f"nsqlookupd never listed {producers} producers for {topic}")
    return answer


def produce_consume() -> Any:
    """
    Producer.publish / multipublish / publish(defer=...), then a Consumer with max_in_flight 10
    that holds messages until no more arrive, so the largest batch outstanding at once shows the
    RDY window nsqd honours.
    """
    topic = P["topic"]
    p = producer(P["nsqd"])
    before = time.time_ns()
    answers = [text(p.publish(topic, b"pub-%02d" % i)) for i in range(10)]
    answers.append(text(p.multipublish(topic, [b"mpub-%02d" % i for i in range(20)])))
    deferred_at = time.monotonic()
    answers.append(text(p.publish(topic, b"deferred", defer=1000)))
    after = time.time_ns()

    got: list[list[Any]] = []
    pending: list[Any] = []
    state = {"last": time.monotonic(), "max_outstanding": 0}

    def handler(_: Any, message: Any) -> None:
        message.enable_async()
        pending.append(message)
        state["last"] = time.monotonic()
        state["max_outstanding"] = max(state["max_outstanding"], len(pending))
        got.append(
            [text(message.body), message.attempts, text(message.id), message.timestamp, time.monotonic()]
        )

    def responder() -> None:
        # Answer only once the flow stops: nsqd must then have sent exactly the RDY window.
        while True:
            gevent.sleep(0.05)
            if pending and time.monotonic() - state["last"] > 0.3:
                while pending:
                    pending.pop().finish()

    worker = gevent.spawn(responder)
    try:
        consumer(topic, handler, nsqd_tcp_addresses=[P["nsqd"]], max_in_flight=10)
        until(lambda: len(got) >= 31, 10)
        gevent.sleep(0.5)
    finally:
        worker.kill()
    for message in got:
        if message[0] == "deferred":
            message[4] -= deferred_at
        else:
            message[4] = None
    return {
        "answers": answers,
        "got": got,
        "before": before,
        "after": after,
        "max_outstanding": state["max_outstanding"],
    }


def lookupd_discovery() -> Any:
    """
    Two nsqd registered with one nsqlookupd: a Consumer given only the lookupd HTTP address
    finds both through /lookup and receives what was published to each.
    """
    topic = P["topic"]
    for index, address in enumerate(P["nsqds"]):
        p = producer(address)
        p.multipublish(topic, [b"n%d-%02d" % (index, i) for i in range(15)])
    lookup = wait_topic_in_lookupd(P["lookupd_url"], topic, len(P["nsqds"]))
    got: list[list[Any]] = []

    def handler(_: Any, message: Any) -> None:
        got.append([text(message.body), message.attempts])

    c = consumer(topic, handler, lookupd_http_addresses=[P["lookupd_url"]], max_in_flight=4)
    until(lambda: len(got) >= 30, 10)
    gevent.sleep(0.3)
    return {
        "lookup": lookup,
        "got": got,
        "connections": sorted(str(conn) for conn in c._connections),
    }


def requeue() -> Any:
    """
    One message requeued explicitly with 800 ms (no backoff), one requeued by gnsq itself
    because its handler raised (requeue_delay 300 ms, with backoff: RDY 0, then RDY 1).
    """
    topic = P["topic"]
    p = producer(P["nsqd"])
    answers = [text(p.publish(topic, b"explicit")), text(p.publish(topic, b"raises"))]
    start = time.monotonic()
    seen: list[list[Any]] = []
    first_at: dict[str, float] = {}

    def handler(_: Any, message: Any) -> None:
        body = text(message.body)
        now = time.monotonic()
        first_at.setdefault(body, now)
        seen.append([body, message.attempts, text(message.id), now - first_at[body]])
        if message.attempts == 1 and body == "explicit":
            message.requeue(800, backoff=False)
        elif message.attempts == 1 and body == "raises":
            raise RuntimeError("handler failure on purpose (gnsq requeues it)")

    consumer(
        topic,
        handler,
        nsqd_tcp_addresses=[P["nsqd"]],
        max_in_flight=2,
        requeue_delay=300,
        max_backoff_duration=1,
    )
    until(lambda: len(seen) >= 4, 10)
    gevent.sleep(0.5)
    return {"answers": answers, "seen": seen, "elapsed": time.monotonic() - start}


def compression() -> Any:
    """
    A low-level NsqdTCPClient with snappy or deflate publishes (PUB, MPUB and a 300 KiB body
    that spans several snappy chunks); a Consumer with the same compression receives them.
    """
    mode = P["mode"]
    topic = P["topic"]
    host, port = P["nsqd"].rsplit(":", 1)
    big = bytes(range(256)) * 1200  # 300 KiB, partly compressible
    bodies = [b"small-%02d" % i for i in range(5)] + [big, b"x" * 70000]
    batch = [b"mpub-%02d" % i for i in range(10)]
    conn = gnsq.NsqdTCPClient(host, int(port), **{mode: True})
    OPEN.append(conn)
    conn.connect()
    identify = conn.identify()
    answers = []
    for body in bodies:
        conn.publish(topic, body)
        frame, data = conn.read_response()
        answers.append([frame, text(data) if isinstance(data, bytes) else repr(data)])
    conn.multipublish(topic, batch)
    frame, data = conn.read_response()
    answers.append([frame, text(data) if isinstance(data, bytes) else repr(data)])

    got: list[list[Any]] = []
    identifies: list[Any] = []

    def handler(_: Any, message: Any) -> None:
        got.append([hashlib.sha256(message.body).hexdigest(), len(message.body), message.attempts])

    c = consumer(topic, handler, nsqd_tcp_addresses=[P["nsqd"]], max_in_flight=5, **{mode: True})
    until(lambda: len(got) >= 17, 10)
    gevent.sleep(0.3)
    for reader_conn in c._connections:
        identifies.append(
            {"snappy": isinstance(reader_conn.stream.socket, gnsq.stream.stream.SnappySocket)}
            if mode == "snappy"
            else {"deflate": isinstance(reader_conn.stream.socket, gnsq.stream.stream.DefalteSocket)}
        )
    return {
        "identify": identify,
        "answers": answers,
        "got": got,
        "expected": [[hashlib.sha256(b).hexdigest(), len(b), 1] for b in [*bodies, *batch]],
        "consumer_streams": identifies,
    }


def tls_auth() -> Any:
    """
    TLS (verified against the test CA), then optionally snappy or deflate inside it, then AUTH:
    a low-level NsqdTCPClient publishes and a Consumer receives, both through the whole stack.
    """
    topic = P["topic"]
    host, port = P["nsqd"].rsplit(":", 1)
    options: dict[str, Any] = {
        "tls_v1": True,
        "tls_options": {"ca_certs": P["ca"], "cert_reqs": ssl.CERT_REQUIRED},
        # gnsq sends the secret as the AUTH body, which it insists be bytes.
        "auth_secret": P["secret"].encode(),
    }
    if P["mode"] != "plain":
        options[P["mode"]] = True
    auths: list[Any] = []
    conn = gnsq.NsqdTCPClient(host, int(port), **options)
    OPEN.append(conn)
    conn.on_auth.connect(lambda _, response: auths.append(response), weak=False)
    conn.connect()
    identify = conn.identify()
    answers = []
    for i in range(5):
        conn.publish(topic, b"secure-%d" % i)
        frame, data = conn.read_response()
        answers.append([frame, text(data) if isinstance(data, bytes) else repr(data)])

    got: list[str] = []

    def handler(_: Any, message: Any) -> None:
        got.append(text(message.body))

    c = gnsq.Consumer(
        topic, "ch", message_handler=handler, nsqd_tcp_addresses=[P["nsqd"]], max_in_flight=5, **options
    )
    OPEN.append(c)
    c.on_auth.connect(lambda _, conn, response: auths.append(response), weak=False)
    c.start(block=False)
    until(lambda: len(got) >= 5, 10)
    gevent.sleep(0.3)
    streams = [conn.stream] + [reader_conn.stream for reader_conn in c._connections]
    return {
        "identify": identify,
        "answers": answers,
        "got": got,
        "auths": auths,
        "peer_cn": [_peer_common_name(stream) for stream in streams],
        "stream_classes": [type(stream.socket).__name__ for stream in streams],
    }


def disconnects() -> Any:
    """
    A Consumer that vanishes (socket closed, no CLS) with a message in flight: the message stays
    in flight until nsqd's msg-timeout and then goes to the next consumer, attempts 2. A Consumer
    on an ephemeral channel that disconnects: the channel goes from nsqd and from nsqlookupd.
    """
    topic = P["topic"]
    nsqd = gnsq.NsqdHTTPClient.from_url("http://" + P["nsqd_http"])
    lookupd = gnsq.LookupdClient.from_url(P["lookupd_url"])
    out: dict[str, Any] = {"publish": text(nsqd.publish(topic, b"held"))}
    seen: list[list[Any]] = []

    def hold(_: Any, message: Any) -> None:
        message.enable_async()
        seen.append([text(message.body), message.attempts, text(message.id), time.monotonic()])

    def finish(_: Any, message: Any) -> None:
        seen.append([text(message.body), message.attempts, text(message.id), time.monotonic()])

    first = consumer(topic, hold, nsqd_tcp_addresses=[P["nsqd"]])
    until(lambda: seen, 5)
    first.close()
    gevent.sleep(0.2)
    (channel,) = nsqd.stats(topic=topic)["topics"][0]["channels"]
    out["after_disconnect"] = {k: channel[k] for k in ("in_flight_count", "client_count", "depth")}
    consumer(topic, finish, nsqd_tcp_addresses=[P["nsqd"]])
    until(lambda: len(seen) >= 2, 5)
    gevent.sleep(0.3)
    out["seen"] = [[body, attempts, message_id, at - seen[0][3]] for body, attempts, message_id, at in seen]

    ephemeral_topic = topic + "_eph"
    out["publish_ephemeral"] = text(nsqd.publish(ephemeral_topic, b"fleeting"))
    fleeting: list[str] = []
    c = gnsq.Consumer(
        ephemeral_topic,
        "ch#ephemeral",
        message_handler=lambda _, message: fleeting.append(text(message.body)),
        nsqd_tcp_addresses=[P["nsqd"]],
    )
    OPEN.append(c)
    c.start(block=False)
    until(lambda: fleeting, 5)
    until(lambda: lookupd.channels(ephemeral_topic)["channels"], 5, 0.05)
    out["ephemeral_while_subscribed"] = {
        "got": fleeting,
        "lookupd": lookupd.channels(ephemeral_topic)["channels"],
        "nsqd": _channel_names(nsqd, ephemeral_topic),
    }
    c.close()
    until(lambda: not lookupd.channels(ephemeral_topic)["channels"], 5, 0.05)
    out["ephemeral_after_close"] = {
        "lookupd": lookupd.channels(ephemeral_topic)["channels"],
        "nsqd": _channel_names(nsqd, ephemeral_topic),
    }
    return out


def _channel_names(nsqd: Any, topic: str) -> list[str]:
    return [channel["channel_name"] for channel in nsqd.stats(topic=topic)["topics"][0]["channels"]]


def _peer_common_name(stream: Any) -> str:
    """The common name of nsqd's certificate, seen through gnsq's (possibly compressed) stream."""
    sock = stream.socket
    while not hasattr(sock, "getpeercert"):
        sock = sock._socket
    return str(dict(x[0] for x in sock.getpeercert()["subject"])["commonName"])


def http_clients() -> Any:
    """
    gnsq's NsqdHTTPClient and LookupdClient against our HTTP APIs: what they return is what a
    gnsq user sees (JSON is only decoded when the reply says application/json).
    """
    topic = P["topic"]
    nsqd = gnsq.NsqdHTTPClient.from_url("http://" + P["nsqd_http"])
    lookupd = gnsq.LookupdClient.from_url(P["lookupd_url"])
    out: dict[str, Any] = {}
    out["ping"] = text(nsqd.ping())
    out["info"] = nsqd.info()
    out["create_topic"] = text(nsqd.create_topic(topic))
    out["create_channel"] = text(nsqd.create_channel(topic, "ch"))
    out["publish"] = text(nsqd.publish(topic, b"http-pub"))
    out["publish_defer"] = text(nsqd.publish(topic, b"http-deferred", defer=500))
    out["multipublish"] = text(nsqd.multipublish(topic, [b"http-mpub-0", b"http-mpub-1"]))
    out["multipublish_binary"] = text(nsqd.multipublish(topic, [b"bin\n0", b"bin\n1"], binary=True))
    out["pause_channel"] = text(nsqd.pause_channel(topic, "ch"))
    out["stats_paused"] = nsqd.stats(topic=topic)
    out["unpause_channel"] = text(nsqd.unpause_channel(topic, "ch"))
    # gnsq checks names itself, so its raw request method shows nsqd's own error replies.
    out["bad_channel"] = _raw(nsqd, "POST", "/channel/create", {"topic": topic, "channel": "bad channel"})
    out["bad_topic_pub"] = _raw(nsqd, "POST", "/pub", {"topic": "bad topic"}, b"x")
    out["missing_topic"] = _raw(nsqd, "POST", "/topic/pause", {"topic": "nosuchtopic"})
    lookup = until(lambda: _lookup_or_none(lookupd, topic), 10, 0.05)
    out["lookupd_ping"] = text(lookupd.ping())
    out["lookupd_info"] = lookupd.info()
    out["lookup"] = lookup
    out["topics"] = lookupd.topics()
    out["channels"] = lookupd.channels(topic)
    out["nodes"] = lookupd.nodes()

    got: list[list[Any]] = []

    def handler(_: Any, message: Any) -> None:
        got.append([text(message.body), message.attempts])

    consumer(topic, handler, lookupd_http_addresses=[P["lookupd_url"]], max_in_flight=10)
    until(lambda: len(got) >= 6, 10)
    gevent.sleep(0.3)
    out["got"] = got
    return out


def _raw(client: Any, method: str, path: str, fields: dict[str, str], body: bytes | None = None) -> Any:
    """A gnsq HTTP request as gnsq's own methods make it; errors come back as text."""
    try:
        answer = client._request(method, path, fields=fields, body=body)
    except gnsq.errors.NSQHttpError as e:
        return "ERROR " + str(e)
    return text(answer) if isinstance(answer, bytes) else answer


def _lookup_or_none(lookupd: Any, topic: str) -> Any:
    try:
        answer = lookupd.lookup(topic)
    except gnsq.errors.NSQHttpError:
        return None
    return answer if answer.get("producers") else None


SCENARIOS: dict[str, Callable[[], Any]] = {
    "produce_consume": produce_consume,
    "lookupd_discovery": lookupd_discovery,
    "requeue": requeue,
    "compression": compression,
    "http_clients": http_clients,
    "tls_auth": tls_auth,
    "disconnects": disconnects,
}


def close_all() -> None:
    while OPEN:
        client = OPEN.pop()
        try:
            if isinstance(client, gnsq.NsqdTCPClient):
                client.close_stream()
            else:
                client.close()
        except Exception:
            traceback.print_exc()


def main() -> None:
    P.update(json.loads(sys.argv[1]))
    try:
        with gevent.Timeout(P.get("timeout", 20)):
            try:
                out = {"ok": True, "result": SCENARIOS[P["scenario"]]()}
            finally:
                close_all()
                gevent.sleep(0.05)
    except BaseException:
        out = {"ok": False, "error": traceback.format_exc()}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
