"""
ansq 0.3.0 (asyncio) scenarios against a real nsqd and nsqlookupd, run by
C{tests/integration/test_interop_clients.py} in a separate interpreter.

Usage: C{python ansq_scenarios.py '{"scenario": NAME, ...}'}. The script prints one JSON line,
C{{"ok": true, "result": ...}} or C{{"ok": false, "error": TRACEBACK}}; the test makes the
assertions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import ansq
from ansq.http import NSQDHTTPWriter, NsqLookupd
from ansq.tcp.connection import NSQConnection
from ansq.tcp.types import ConnectionFeatures, ConnectionOptions, NSQMessage

logging.basicConfig(
    level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)

#: The scenario parameters, from the JSON in argv[1] (read by main()).
P: dict[str, Any] = {}
CLOSERS: list[Callable[[], Awaitable[Any]]] = []

#: No client here reconnects on its own: a connection nsqd closes must stay closed.
NO_RECONNECT = ConnectionOptions(auto_reconnect=False)


def answer(response: Any) -> str:
    """An ansq command result as text: C{OK}, or C{ERROR <code> <body>}."""
    if getattr(response, "is_error", False):
        return f"ERROR {response.code} {response.body.decode('latin-1')}"
    return str(response.body.decode("latin-1"))


async def writer(address: str) -> Any:
    w = await ansq.create_writer(nsqd_tcp_addresses=[address], connection_options=NO_RECONNECT)
    CLOSERS.append(w.close)
    return w


async def next_message(source: Any, timeout: float) -> NSQMessage | None:
    """The next message a reader or connection queued, or C{None} after C{timeout} seconds."""
    try:
        message: NSQMessage | None = await asyncio.wait_for(source.wait_for_message(), timeout)
    except TimeoutError:
        return None
    return message


async def wait_lookup(lookupd: NsqLookupd, topic: str) -> Any:
    """Poll nsqlookupd's /lookup (through ansq) until C{topic} has a producer."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            found = await lookupd.lookup(topic)
        except Exception:
            found = None
        if isinstance(found, dict) and found.get("producers"):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"nsqlookupd never listed a producer for {topic}")


async def pub_sub() -> Any:
    """
    Writer.pub (text and bytes), mpub and dpub; a Reader (RDY 1) FINs everything except one
    message it REQs once with 300 ms.
    """
    topic = P["topic"]
    w = await writer(P["nsqd"])
    answers = [
        answer(await w.pub(topic, "pub-text")),
        answer(await w.pub(topic, b"pub-bytes\x00\xff")),
        answer(await w.mpub(topic, *[f"mpub-{i}" for i in range(5)])),
    ]
    deferred_at = time.monotonic()
    answers.append(answer(await w.dpub(topic, "deferred", 700)))
    r = await ansq.create_reader(
        topic=topic, channel="ch", nsqd_tcp_addresses=[P["nsqd"]], connection_options=NO_RECONNECT
    )
    CLOSERS.append(r.close)
    seen: list[list[Any]] = []
    first_at: dict[str, float] = {}
    while len(seen) < 9:
        message = await next_message(r, 5)
        if message is None:
            break
        body = message.body.decode("latin-1")
        now = time.monotonic()
        first_at.setdefault(body, now)
        since = now - (deferred_at if body == "deferred" else first_at[body])
        seen.append([body, message.attempts, message.id, message.timestamp, since])
        if body == "mpub-2" and message.attempts == 1:
            await message.req(300)
        else:
            await message.fin()
    extra = await next_message(r, 0.3)
    return {"answers": answers, "seen": seen, "extra": None if extra is None else repr(extra)}


async def touch_and_errors() -> Any:
    """
    On one raw ansq connection (msg_timeout 1000 ms): a message kept alive past its timeout by
    TOUCH, a FIN of an unknown ID (non-fatal), a PUB while subscribed; then a too-big PUB on
    another connection, which nsqd answers with a fatal E_BAD_MESSAGE.
    """
    topic = P["topic"]
    host, port = P["nsqd"].rsplit(":", 1)
    options = ConnectionOptions(auto_reconnect=False, features=ConnectionFeatures(msg_timeout=1000))
    conn = NSQConnection(host, int(port), connection_options=options)
    await conn.connect()
    CLOSERS.append(conn.close)
    identified = await conn.identify()
    assert identified is not None
    identify = json.loads(identified.body)
    w = await writer(P["nsqd"])
    result: dict[str, Any] = {"identify": identify}
    result["pub"] = answer(await w.pub(topic, "touch-me"))
    await conn.subscribe(topic, "ch", 1)
    message = await next_message(conn, 5)
    assert message is not None
    delivered = time.monotonic()
    touches = 0
    while time.monotonic() - delivered < 1.8:
        await asyncio.sleep(0.3)
        await message.touch()
        touches += 1
    await message.fin()
    result["touched"] = [message.body.decode(), message.attempts, touches, time.monotonic() - delivered]
    again = await next_message(conn, 0.5)
    result["redelivered"] = None if again is None else [again.body.decode(), again.attempts]
    await conn.fin("0000000000000000")
    await asyncio.sleep(0.3)
    result["after_bad_fin_connected"] = conn.is_connected
    result["pub_while_subscribed"] = answer(await conn.pub(topic + "-other", "from-subscriber"))
    big = await writer(P["nsqd"])
    result["too_big"] = answer(await big.pub(topic, b"x" * 2000))
    await asyncio.sleep(0.3)
    result["too_big_connection_closed"] = all(c.is_closed for c in big.connections)
    return result


async def http_and_lookupd() -> Any:
    """
    ansq's HTTP clients (nsqd and nsqlookupd) against our APIs, then a Reader that finds nsqd
    only through nsqlookupd.
    """
    topic = P["topic"]
    nsqd = NSQDHTTPWriter.from_address(P["nsqd_http"])
    lookupd = NsqLookupd.from_address(P["lookupd_http"])
    CLOSERS.extend([nsqd.close, lookupd.close])
    out: dict[str, Any] = {}
    out["ping"] = await nsqd.ping()
    out["info"] = await nsqd.info()
    out["pub"] = await nsqd.pub(topic, "http-pub")
    out["mpub"] = await nsqd.mpub(topic, "http-mpub-0", "http-mpub-1", "http-mpub-2")
    stats: Any = await nsqd.stats()
    out["stats_topics"] = [t["topic_name"] for t in stats["topics"]]
    out["lookup"] = await wait_lookup(lookupd, topic)
    out["lookupd_ping"] = await lookupd.ping()
    out["lookupd_info"] = await lookupd.info()
    out["topics"] = await lookupd.topics()
    try:
        out["lookup_missing"] = await lookupd.lookup("no-such-topic")
    except Exception as e:
        out["lookup_missing"] = f"{type(e).__name__}: {e}"
    r = await ansq.create_reader(
        topic=topic, channel="ch", lookupd_http_addresses=[P["lookupd_http"]], connection_options=NO_RECONNECT
    )
    CLOSERS.append(r.close)
    got: list[list[Any]] = []
    while len(got) < 4:
        message = await next_message(r, 5)
        if message is None:
            break
        got.append([message.body.decode(), message.attempts])
        await message.fin()
    out["got"] = got
    out["channels"] = await lookupd.channels(topic)
    out["nodes"] = await lookupd.nodes()
    return out


SCENARIOS: dict[str, Callable[[], Awaitable[Any]]] = {
    "pub_sub": pub_sub,
    "touch_and_errors": touch_and_errors,
    "http_and_lookupd": http_and_lookupd,
}


def main() -> None:
    P.update(json.loads(sys.argv[1]))

    async def run() -> Any:
        try:
            return await asyncio.wait_for(SCENARIOS[P["scenario"]](), P.get("timeout", 20))
        finally:
            while CLOSERS:
                try:
                    await CLOSERS.pop()()
                except Exception:
                    traceback.print_exc()
            await asyncio.sleep(0.05)

    try:
        out = {"ok": True, "result": asyncio.run(run())}
    except BaseException:
        out = {"ok": False, "error": traceback.format_exc()}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
