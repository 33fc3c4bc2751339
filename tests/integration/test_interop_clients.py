"""
Third-party NSQ clients against our nsqd and nsqlookupd over real loopback sockets: gnsq 1.0.2
(gevent) and ansq 0.3.0 (asyncio).

Each scenario runs in its own interpreter (a script in C{interop_scripts/}), so that gevent's
monkey-patching and asyncio's loop never meet Twisted; the script prints what the client saw as
JSON and the assertions are made here, against NSQ 1.3.0's behaviour. (nsqjs needs the npm
registry, so it is an explicit exploratory check instead: C{scripts/interop/nsqjs/run.sh}.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration._daemon import (
    DEFAULT_IDENTIFY,
    HEX_ID,
    NSQDProcess,
    run_report,
    start_nsqd,
    start_nsqlookupd,
)
from tests.integration.test_tls_auth import GOOD_SECRET, AuthServer, Certificates

_SCRIPTS = Path(__file__).parent / "interop_scripts"


def run_client(
    test: SynchronousTestCase,
    script: str,
    scenario: str,
    daemons: tuple[NSQDProcess, ...],
    *,
    timeout: float = 18.0,
    **params: Any,
) -> Any:
    """
    Run one scenario of C{interop_scripts/<script>.py} in a fresh interpreter and return its
    result.

    @param daemons: the nsqd and nsqlookupd processes the scenario talks to; their logs join the
        failure message.
    @param timeout: the hard limit for the subprocess; the scenario itself is cancelled 3 s
        earlier, so that it can still report.
    @param params: the scenario's parameters, passed as JSON.
    """
    arguments = dict(params, scenario=scenario, timeout=max(timeout - 3.0, 1.0))
    argv = [sys.executable, str(_SCRIPTS / f"{script}.py"), json.dumps(arguments)]
    return run_report(f"{script} {scenario}", argv, timeout, daemons)


def start_cluster(
    test: SynchronousTestCase, nodes: int, *nsqd_flags: str
) -> tuple[NSQDProcess, list[NSQDProcess]]:
    """
    One nsqlookupd and C{nodes} nsqd (with C{nsqd_flags}) registered with it, all broadcasting
    127.0.0.1.
    """
    lookupd = start_nsqlookupd(test)
    nsqds = [
        start_nsqd(
            test,
            f"--lookupd-tcp-address={lookupd.tcp_hostport}",
            "--broadcast-address=127.0.0.1",
            *nsqd_flags,
        )
        for _ in range(nodes)
    ]
    return lookupd, nsqds


class _Assertions(SynchronousTestCase):
    def assertValidIDs(self, ids: list[str]) -> None:
        for message_id in ids:
            self.assertTrue(HEX_ID.fullmatch(message_id), f"message ID {message_id!r} is not 16 hex digits")
        self.assertEqual(len(set(ids)), len(ids), f"duplicate message IDs in {ids}")

    def assertRedelivered(self, seen: list[list[Any]], body: str, minimum: float) -> None:
        """
        C{seen} (rows of body, attempts, id, seconds since the first delivery) holds exactly two
        deliveries of C{body}: attempts 1 then 2, same ID, the second C{minimum} s or more (and
        less than C{minimum} + 2.5 s) after the first.
        """
        rows = [row for row in seen if row[0] == body]
        self.assertEqual(len(rows), 2, f"deliveries of {body}: {seen}")
        (_, first_attempts, first_id, _), (_, second_attempts, second_id, delay) = rows
        self.assertEqual((first_attempts, second_attempts), (1, 2))
        self.assertEqual(first_id, second_id)
        self.assertValidIDs([first_id])
        self.assertGreaterEqual(delay, minimum)
        self.assertLess(delay, minimum + 2.5)


class GnsqTests(_Assertions):
    """gnsq 1.0.2's Producer, Consumer, low-level connection and HTTP clients."""

    def test_producer_and_consumer_window(self) -> None:
        """
        Producer.publish, multipublish and publish(defer=1000) are answered C{OK}; a Consumer
        with max_in_flight 10 gets all 31 messages once (first attempt, hex IDs, publish-time
        timestamps), never has more than 10 outstanding and does get 10 at once; the deferred
        message comes no sooner than 1 s after it was published.
        """
        nsqd = start_nsqd(self)
        result = run_client(
            self, "gnsq_scenarios", "produce_consume", (nsqd,), nsqd=nsqd.tcp_hostport, topic="g_pc"
        )
        self.assertEqual(result["answers"], ["OK"] * 12)
        got = result["got"]
        expected = sorted(
            [f"pub-{i:02d}" for i in range(10)] + [f"mpub-{i:02d}" for i in range(20)] + ["deferred"]
        )
        self.assertEqual(sorted(row[0] for row in got), expected)
        self.assertEqual({row[1] for row in got}, {1})
        self.assertValidIDs([row[2] for row in got])
        slack = 100_000_000
        for body, _, _, timestamp, _ in got:
            self.assertTrue(
                result["before"] - slack <= timestamp <= result["after"] + slack,
                f"{body}: timestamp {timestamp} outside [{result['before']}, {result['after']}]",
            )
        (deferred_after,) = [row[4] for row in got if row[0] == "deferred"]
        self.assertGreaterEqual(deferred_after, 0.99)
        self.assertLess(deferred_after, 4.0)
        self.assertEqual(result["max_outstanding"], 10)

    def test_lookupd_discovery(self) -> None:
        """
        With two nsqd registered, gnsq's LookupdClient.lookup lists both (broadcast address and
        TCP port), and a Consumer given only the lookupd address connects to both and receives
        all 30 messages once.
        """
        lookupd, nsqds = start_cluster(self, 2)
        result = run_client(
            self,
            "gnsq_scenarios",
            "lookupd_discovery",
            (lookupd, *nsqds),
            nsqds=[n.tcp_hostport for n in nsqds],
            lookupd_url=f"http://{lookupd.http_hostport}",
            topic="g_discovery",
        )
        addresses = sorted(n.tcp_hostport for n in nsqds)
        producers = result["lookup"]["producers"]
        self.assertEqual(sorted(f"{p['broadcast_address']}:{p['tcp_port']}" for p in producers), addresses)
        self.assertEqual(sorted(p["http_port"] for p in producers), sorted(n.http_address[1] for n in nsqds))
        self.assertEqual({p["version"] for p in producers}, {"1.3.0"})
        self.assertEqual(result["connections"], addresses)
        expected = sorted(f"n{node}-{i:02d}" for node in range(2) for i in range(15))
        self.assertEqual(sorted(body for body, _ in result["got"]), expected)
        self.assertEqual({attempts for _, attempts in result["got"]}, {1})

    def test_requeue(self) -> None:
        """
        A message requeued by the handler with 800 ms, and one requeued by gnsq (300 ms, then
        gnsq's backoff RDY 0 / RDY 1) after its handler raised, each come back once with the
        same ID and attempts 2, no sooner than their delay.
        """
        nsqd = start_nsqd(self)
        result = run_client(self, "gnsq_scenarios", "requeue", (nsqd,), nsqd=nsqd.tcp_hostport, topic="g_req")
        self.assertEqual(result["answers"], ["OK", "OK"])
        self.assertEqual(len(result["seen"]), 4, result["seen"])
        self.assertRedelivered(result["seen"], "explicit", 0.79)
        self.assertRedelivered(result["seen"], "raises", 0.29)

    def test_disconnect_and_ephemeral_channel(self) -> None:
        """
        A Consumer that disconnects (no CLS) holding a message leaves it in flight (nsqd shows
        in_flight_count 1, client_count 0) until C{--msg-timeout} (1 s) after its delivery; then
        another Consumer gets it once, same ID, attempts 2. An ephemeral channel is listed by
        nsqd and nsqlookupd while its Consumer is connected and by neither once it leaves.
        """
        lookupd, (nsqd,) = start_cluster(self, 1, "--msg-timeout=1s")
        out = run_client(
            self,
            "gnsq_scenarios",
            "disconnects",
            (lookupd, nsqd),
            nsqd=nsqd.tcp_hostport,
            nsqd_http=nsqd.http_hostport,
            lookupd_url=f"http://{lookupd.http_hostport}",
            topic="g_disconnect",
        )
        self.assertEqual(out["publish"], "OK")
        self.assertEqual(out["after_disconnect"], {"in_flight_count": 1, "client_count": 0, "depth": 0})
        self.assertRedelivered(out["seen"], "held", 0.99)
        self.assertLess(out["seen"][1][3], 2.0)
        self.assertEqual(out["publish_ephemeral"], "OK")
        self.assertEqual(
            out["ephemeral_while_subscribed"],
            {"got": ["fleeting"], "lookupd": ["ch#ephemeral"], "nsqd": ["ch#ephemeral"]},
        )
        self.assertEqual(out["ephemeral_after_close"], {"lookupd": [], "nsqd": []})

    def assertCompressed(self, mode: str) -> None:
        nsqd = start_nsqd(self)
        result = run_client(
            self,
            "gnsq_scenarios",
            "compression",
            (nsqd,),
            nsqd=nsqd.tcp_hostport,
            mode=mode,
            topic=f"g_{mode}",
        )
        self.assertEqual(result["identify"], dict(DEFAULT_IDENTIFY, **{mode: True}))
        self.assertEqual(result["answers"], [[0, "OK"]] * 8)
        self.assertEqual(sorted(result["got"]), sorted(result["expected"]))
        self.assertEqual(result["consumer_streams"], [{mode: True}])

    def test_snappy(self) -> None:
        """
        Over snappy, a gnsq connection publishes (PUB of bodies up to 300 KiB, which span several
        snappy chunks, and MPUB) with every answer C{OK}, and a snappy Consumer receives every
        body intact.
        """
        self.assertCompressed("snappy")

    def test_deflate(self) -> None:
        """The same over deflate (level 6)."""
        self.assertCompressed("deflate")

    def assertTLSAuth(self, mode: str) -> None:
        certs = Certificates(Path(self.mktemp()))
        auth = AuthServer()
        self.addCleanup(auth.stop)
        nsqd = start_nsqd(self, *certs.server_flags(), f"--auth-http-address={auth.address}")
        topic = f"allowed.gnsq_{mode}"
        result = run_client(
            self,
            "gnsq_scenarios",
            "tls_auth",
            (nsqd,),
            nsqd=nsqd.tcp_hostport,
            ca=certs.ca,
            secret=GOOD_SECRET,
            mode=mode,
            topic=topic,
        )
        compression = {} if mode == "plain" else {mode: True}
        self.assertEqual(
            result["identify"], dict(DEFAULT_IDENTIFY, tls_v1=True, auth_required=True, **compression)
        )
        self.assertEqual(result["answers"], [[0, "OK"]] * 5)
        self.assertEqual(sorted(result["got"]), [f"secure-{i}" for i in range(5)])
        self.assertEqual(result["auths"], [{"identity": "u", "identity_url": "", "permission_count": 1}] * 2)
        self.assertEqual(result["peer_cn"], ["127.0.0.1", "127.0.0.1"])
        socket_class = {"plain": "SSLSocket", "snappy": "SnappySocket", "deflate": "DefalteSocket"}[mode]
        self.assertEqual(result["stream_classes"], [socket_class] * 2)
        self.assertEqual([r["tls"] for r in auth.requests], ["true", "true"])

    def test_tls_and_auth(self) -> None:
        """
        gnsq upgrades to TLS (verifying nsqd's certificate), then sends AUTH: a low-level
        connection publishes and a Consumer receives, and nsqd asked the auth server with
        C{tls=true} for both.
        """
        self.assertTLSAuth("plain")

    def test_tls_snappy_and_auth(self) -> None:
        """The same with snappy inside TLS."""
        self.assertTLSAuth("snappy")

    def test_tls_deflate_and_auth(self) -> None:
        """The same with deflate inside TLS."""
        self.assertTLSAuth("deflate")

    def test_http_clients(self) -> None:
        """
        gnsq's NsqdHTTPClient and LookupdClient: plain C{OK} and empty answers come back as
        bytes, JSON answers (/info, /stats, /lookup, /topics, /channels, /nodes) as decoded
        objects, errors as gnsq's C{http error <status>}; what was published over HTTP (text and
        binary /mpub, a deferred /pub) reaches a Consumer found through nsqlookupd.
        """
        lookupd, (nsqd,) = start_cluster(self, 1)
        topic = "g_http"
        out = run_client(
            self,
            "gnsq_scenarios",
            "http_clients",
            (lookupd, nsqd),
            nsqd_http=nsqd.http_hostport,
            lookupd_url=f"http://{lookupd.http_hostport}",
            topic=topic,
        )
        self.assertEqual(out["ping"], "OK")
        self.assertEqual(out["info"]["version"], "1.3.0")
        self.assertEqual(
            (out["info"]["broadcast_address"], out["info"]["tcp_port"], out["info"]["http_port"]),
            ("127.0.0.1", nsqd.tcp_address[1], nsqd.http_address[1]),
        )
        self.assertEqual(
            [out[key] for key in ("create_topic", "create_channel", "pause_channel", "unpause_channel")],
            ["", "", "", ""],
        )
        self.assertEqual(
            [out[key] for key in ("publish", "publish_defer", "multipublish", "multipublish_binary")],
            ["OK"] * 4,
        )
        stats = out["stats_paused"]
        self.assertEqual(stats["version"], "1.3.0")
        self.assertEqual([t["topic_name"] for t in stats["topics"]], [topic])
        (stats_topic,) = stats["topics"]
        self.assertEqual(stats_topic["message_count"], 6)
        self.assertEqual([(c["channel_name"], c["paused"]) for c in stats_topic["channels"]], [("ch", True)])
        self.assertEqual(out["bad_channel"], "ERROR http error <400>")
        self.assertEqual(out["bad_topic_pub"], "ERROR http error <400>")
        self.assertEqual(out["missing_topic"], "ERROR http error <404>")
        self.assertEqual(out["lookupd_ping"], "OK")
        self.assertEqual(out["lookupd_info"], {"version": "1.3.0"})
        self.assertEqual(out["lookup"]["channels"], ["ch"])
        self.assertEqual(
            [(p["broadcast_address"], p["tcp_port"], p["http_port"]) for p in out["lookup"]["producers"]],
            [("127.0.0.1", nsqd.tcp_address[1], nsqd.http_address[1])],
        )
        self.assertIn(topic, out["topics"]["topics"])
        self.assertEqual(out["channels"], {"channels": ["ch"]})
        (node,) = out["nodes"]["producers"]
        self.assertEqual(node["tcp_port"], nsqd.tcp_address[1])
        self.assertIn(topic, node["topics"])
        self.assertEqual(
            sorted(out["got"]),
            sorted(
                [
                    [body, 1]
                    for body in (
                        "http-pub",
                        "http-deferred",
                        "http-mpub-0",
                        "http-mpub-1",
                        "bin\n0",
                        "bin\n1",
                    )
                ]
            ),
        )


class AnsqTests(_Assertions):
    """ansq 0.3.0's TCP Writer, Reader and connection, and its HTTP clients."""

    def test_pub_mpub_dpub_fin_req(self) -> None:
        """
        ansq's Writer pub (text and binary), mpub and dpub(700 ms) are answered C{OK}; its Reader
        gets each message once, a REQ of 300 ms brings one back (same ID, attempts 2) no sooner
        than 300 ms, and the deferred one arrives no sooner than 700 ms after publishing.
        """
        nsqd = start_nsqd(self)
        result = run_client(
            self, "ansq_scenarios", "pub_sub", (nsqd,), nsqd=nsqd.tcp_hostport, topic="a_pubsub"
        )
        self.assertEqual(result["answers"], ["OK"] * 4)
        seen = result["seen"]
        firsts = [row for row in seen if row[1] == 1]
        expected = sorted(["pub-text", "pub-bytes\x00\xff", "deferred"] + [f"mpub-{i}" for i in range(5)])
        self.assertEqual(sorted(row[0] for row in firsts), expected)
        self.assertValidIDs([row[2] for row in firsts])
        self.assertEqual(len(seen), 9, seen)
        self.assertRedelivered([[body, a, i, since] for body, a, i, _, since in seen], "mpub-2", 0.29)
        (deferred,) = [row for row in seen if row[0] == "deferred"]
        self.assertGreaterEqual(deferred[4], 0.69)
        self.assertLess(deferred[4], 3.0)
        self.assertIsNone(result["extra"])

    def test_touch_fin_failed_and_fatal_error(self) -> None:
        """
        With C{msg_timeout} 1000 ms (echoed in IDENTIFY), TOUCH every 300 ms keeps a message for
        1.8 s without redelivery; a FIN of an unknown ID leaves the connection open, and a PUB on
        the subscribed connection is answered C{OK}; a PUB over C{--max-msg-size} gets the exact
        fatal C{E_BAD_MESSAGE} and nsqd closes that connection.
        """
        nsqd = start_nsqd(self, "--max-msg-size=1024")
        result = run_client(
            self, "ansq_scenarios", "touch_and_errors", (nsqd,), nsqd=nsqd.tcp_hostport, topic="a_touch"
        )
        self.assertEqual(result["identify"], dict(DEFAULT_IDENTIFY, msg_timeout=1000))
        self.assertEqual(result["pub"], "OK")
        body, attempts, touches, held = result["touched"]
        self.assertEqual((body, attempts), ("touch-me", 1))
        self.assertGreaterEqual(touches, 5)
        self.assertGreaterEqual(held, 1.8)
        self.assertIsNone(result["redelivered"])
        self.assertTrue(result["after_bad_fin_connected"])
        self.assertEqual(result["pub_while_subscribed"], "OK")
        self.assertEqual(result["too_big"], "ERROR E_BAD_MESSAGE PUB message too big 2000 > 1024")
        self.assertTrue(result["too_big_connection_closed"])

    def test_http_and_lookupd_reader(self) -> None:
        """
        ansq's NSQDHTTPWriter and NsqLookupd (which decode any JSON body and raise on a status
        outside 200..300) against our HTTP APIs, and a Reader that finds nsqd only through
        nsqlookupd's /lookup and receives what was published over HTTP.
        """
        lookupd, (nsqd,) = start_cluster(self, 1)
        topic = "a_http"
        out = run_client(
            self,
            "ansq_scenarios",
            "http_and_lookupd",
            (lookupd, nsqd),
            nsqd_http=nsqd.http_hostport,
            lookupd_http=lookupd.http_hostport,
            topic=topic,
        )
        self.assertEqual((out["ping"], out["pub"], out["mpub"]), ("OK", "OK", "OK"))
        self.assertEqual(out["info"]["version"], "1.3.0")
        self.assertEqual(out["info"]["tcp_port"], nsqd.tcp_address[1])
        self.assertEqual(out["stats_topics"], [topic])
        self.assertEqual(out["lookup"]["channels"], [])
        self.assertEqual(
            [(p["broadcast_address"], p["tcp_port"]) for p in out["lookup"]["producers"]],
            [("127.0.0.1", nsqd.tcp_address[1])],
        )
        self.assertEqual(out["lookupd_ping"], "OK")
        self.assertEqual(out["lookupd_info"], {"version": "1.3.0"})
        self.assertEqual(out["topics"], {"topics": [topic]})
        self.assertEqual(
            out["lookup_missing"], 'NotFoundError: TransportError(404, \'{"message":"TOPIC_NOT_FOUND"}\')'
        )
        self.assertEqual(
            out["got"], [["http-pub", 1], ["http-mpub-0", 1], ["http-mpub-1", 1], ["http-mpub-2", 1]]
        )
        self.assertEqual(out["channels"], {"channels": ["ch"]})
        (node,) = out["nodes"]["producers"]
        self.assertEqual((node["topics"], node["tombstones"]), ([topic], [False]))
