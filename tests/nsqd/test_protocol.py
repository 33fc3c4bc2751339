"""The V2 TCP protocol: every command, its exact replies and errors, and the state rules."""

from __future__ import annotations

import json
import struct
import zlib

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq.nsqd.auth import AuthError, Authorization, AuthState
from twisted_nsq.testing import LoopbackClient, body, make_nsqd, mpub_body
from twisted_nsq.wire.frames import OK_FRAME

GO_DEFAULT_IDENTIFY_REPLY = (
    b'{"max_rdy_count":2500,"version":"1.3.0","max_msg_timeout":900000,"msg_timeout":60000,'
    b'"tls_v1":false,"deflate":false,"deflate_level":6,"max_deflate_level":6,"snappy":false,'
    b'"sample_rate":0,"auth_required":false,"output_buffer_size":16384,"output_buffer_timeout":250}'
)


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.nsqd = make_nsqd(self.clock)

    def client(self, **kw: object) -> LoopbackClient:
        return LoopbackClient(self.nsqd, **kw)  # type: ignore[arg-type]

    def assertFatal(self, client: LoopbackClient, payload: bytes) -> None:
        frames = client.frames()
        self.assertEqual([(f.type, f.data) for f in frames], [(1, payload)])
        self.assertTrue(client.closed)

    def assertResponses(self, client: LoopbackClient, *payloads: bytes) -> None:
        self.assertEqual([(f.type, f.data) for f in client.frames()], [(0, p) for p in payloads])


class MagicTests(Base):
    def test_bad_magic(self) -> None:
        c = self.client(magic=False)
        c.send(b"  V1")
        self.assertFatal(c, b"E_BAD_PROTOCOL")

    def test_magic_split(self) -> None:
        c = self.client(magic=False)
        for byte in b"  V2NOP\n":
            c.send(bytes([byte]))
        self.assertEqual(c.frames(), [])
        self.assertFalse(c.closed)

    def test_handshake_timeout(self) -> None:
        self.nsqd = make_nsqd(self.clock, handshake_timeout=5.0)
        c = self.client(magic=False)
        c.send(b"  ")
        self.clock.advance(5)
        self.assertTrue(c.transport.disconnecting or c.protocol._closed)

    def test_handshake_timeout_not_after_magic(self) -> None:
        self.nsqd = make_nsqd(self.clock, handshake_timeout=5.0)
        c = self.client()
        self.clock.advance(6)
        self.assertFalse(c.closed)


class IdentifyTests(Base):
    def test_no_feature_negotiation(self) -> None:
        c = self.client()
        self.assertEqual([f.data for f in c.identify(client_id="x", tls_v1=True)], [b"OK"])

    def test_go_defaults_reply(self) -> None:
        c = self.client()
        frames = c.identify(
            client_id="c",
            hostname="h",
            feature_negotiation=True,
            heartbeat_interval=30000,
            output_buffer_size=16384,
            output_buffer_timeout=250,
            user_agent="go-nsq/1.1.0",
            short_id="c",
            long_id="h",
        )
        self.assertEqual([(f.type, f.data) for f in frames], [(0, GO_DEFAULT_IDENTIFY_REPLY)])

    def test_negotiated_values(self) -> None:
        c = self.client()
        frames = c.identify(feature_negotiation=True, msg_timeout=2000, sample_rate=50, output_buffer_size=-1)
        reply = json.loads(frames[0].data)
        self.assertEqual(reply["msg_timeout"], 2000)
        self.assertEqual(reply["sample_rate"], 50)
        self.assertEqual(reply["output_buffer_size"], 1)
        self.assertEqual(reply["output_buffer_timeout"], 0)
        self.assertEqual(c.protocol.msg_timeout, 2.0)

    def test_deflate_level_capped(self) -> None:
        self.nsqd = make_nsqd(self.clock, max_deflate_level=3)
        c = self.client()
        fields = {"feature_negotiation": True, "deflate": True, "deflate_level": 9}
        c.command("IDENTIFY", json.dumps(fields).encode())
        data = c.transport.value()
        (size,) = struct.unpack(">i", data[:4])
        reply = json.loads(data[8 : 4 + size])
        self.assertEqual((reply["deflate"], reply["deflate_level"]), (True, 3))
        self.assertEqual(zlib.decompressobj(-15).decompress(data[4 + size :]), OK_FRAME)
        self.assertTrue(c.protocol.deflate)

    def test_both_compressions(self) -> None:
        c = self.client()
        fields = {"feature_negotiation": True, "snappy": True, "deflate": True}
        c.command("IDENTIFY", json.dumps(fields).encode())
        self.assertFatal(c, b"E_IDENTIFY_FAILED cannot enable both deflate and snappy compression")

    def test_invalid_fields(self) -> None:
        cases = [
            ({"heartbeat_interval": 999}, b"E_BAD_BODY IDENTIFY heartbeat interval (999) is invalid"),
            ({"heartbeat_interval": 60001}, b"E_BAD_BODY IDENTIFY heartbeat interval (60001) is invalid"),
            ({"output_buffer_size": 63}, b"E_BAD_BODY IDENTIFY output buffer size (63) is invalid"),
            ({"output_buffer_timeout": 24}, b"E_BAD_BODY IDENTIFY output buffer timeout (24) is invalid"),
            ({"sample_rate": 100}, b"E_BAD_BODY IDENTIFY sample rate (100) is invalid"),
            ({"msg_timeout": 999}, b"E_BAD_BODY IDENTIFY msg timeout (999) is invalid"),
            ({"msg_timeout": 900001}, b"E_BAD_BODY IDENTIFY msg timeout (900001) is invalid"),
            ({"heartbeat_interval": "x"}, b"E_BAD_BODY IDENTIFY failed to decode JSON body"),
            ({"feature_negotiation": 1}, b"E_BAD_BODY IDENTIFY failed to decode JSON body"),
        ]
        for fields, error in cases:
            c = self.client()
            c.command("IDENTIFY", json.dumps(fields).encode())
            self.assertFatal(c, error)

    def test_bad_json_and_sizes(self) -> None:
        c = self.client()
        c.command("IDENTIFY", b"{nope")
        self.assertFatal(c, b"E_BAD_BODY IDENTIFY failed to decode JSON body")
        c = self.client()
        c.send(b"IDENTIFY\n" + struct.pack(">i", 0))
        self.assertFatal(c, b"E_BAD_BODY IDENTIFY invalid body size 0")
        c = self.client()
        c.send(b"IDENTIFY\n" + struct.pack(">i", 0x7FFFFFFF))
        self.assertFatal(c, b"E_BAD_BODY IDENTIFY body too big 2147483647 > 5242880")

    def test_identify_after_sub(self) -> None:
        c = self.client()
        c.subscribe("t", "c")
        c.identify()
        self.assertTrue(c.closed)


class PublishTests(Base):
    def test_pub(self) -> None:
        c = self.client()
        c.command("PUB t1", b"hello")
        self.assertResponses(c, b"OK")
        topic = self.nsqd.topics["t1"]
        self.assertEqual((topic.message_count, topic.message_bytes, topic.depth()), (1, 5, 1))
        self.assertEqual(c.protocol.pub_counts, {"t1": 1})

    def test_pub_errors(self) -> None:
        cases = [
            (b"PUB\n", b"E_INVALID PUB insufficient number of parameters"),
            (b"PUB bad*topic\n", b'E_BAD_TOPIC PUB topic name "bad*topic" is not valid'),
            (b"PUB t\n" + struct.pack(">i", 0), b"E_BAD_MESSAGE PUB invalid message body size 0"),
            (b"PUB t\n" + struct.pack(">i", -5), b"E_BAD_MESSAGE PUB invalid message body size -5"),
            (b"PUB t\n" + struct.pack(">i", 1048577), b"E_BAD_MESSAGE PUB message too big 1048577 > 1048576"),
        ]
        for data, error in cases:
            c = self.client()
            c.send(data)
            self.assertFatal(c, error)

    def test_mpub(self) -> None:
        c = self.client()
        c.send(b"MPUB t\n" + mpub_body([b"a", b"bb", b"ccc"]))
        self.assertResponses(c, b"OK")
        self.assertEqual(self.nsqd.topics["t"].depth(), 3)

    def test_mpub_errors(self) -> None:
        c = self.client()
        c.send(b"MPUB bad*t\n")
        self.assertFatal(c, b'E_BAD_TOPIC E_BAD_TOPIC MPUB topic name "bad*t" is not valid')
        c = self.client()
        c.send(b"MPUB t2\n" + body(struct.pack(">i", 0)))
        self.assertFatal(c, b"E_BAD_BODY MPUB invalid message count 0")
        self.assertIn("t2", self.nsqd.topics, "MPUB creates its topic before validating the body")
        c = self.client()
        c.send(b"MPUB t\n" + struct.pack(">i", 5242881))
        self.assertFatal(c, b"E_BAD_BODY MPUB body too big 5242881 > 5242880")
        c = self.client()
        c.send(b"MPUB t3\n" + body(struct.pack(">ii", 2, 1) + b"a" + struct.pack(">i", 0)))
        self.assertFatal(c, b"E_BAD_MESSAGE MPUB invalid message(1) body size 0")
        self.assertEqual(self.nsqd.topics["t3"].depth(), 0, "an MPUB batch is atomic")

    def test_dpub(self) -> None:
        c = self.client()
        c.command("DPUB t 100", b"later")
        self.assertResponses(c, b"OK")
        sub = self.client()
        sub.subscribe("t", "c", rdy=1)
        self.assertEqual(sub.frames(), [])
        self.assertEqual(self.nsqd.topics["t"].channels["c"].deferred.keys().__len__(), 1)
        self.clock.advance(0.1)
        [message] = sub.messages()
        self.assertEqual((message.body, message.attempts), (b"later", 1))

    def test_dpub_errors(self) -> None:
        cases = [
            (b"DPUB t\n", b"E_INVALID DPUB insufficient number of parameters"),
            (b"DPUB t x\n", b"E_INVALID DPUB could not parse timeout x"),
            (b"DPUB t -1\n", b"E_INVALID DPUB could not parse timeout -1"),
            (b"DPUB t 3600001\n", b"E_INVALID DPUB timeout 3600001 out of range 0-3600000"),
            (b"DPUB t 1\n" + struct.pack(">i", 0), b"E_BAD_MESSAGE DPUB invalid message body size 0"),
        ]
        for data, error in cases:
            c = self.client()
            c.send(data)
            self.assertFatal(c, error)

    def test_full_memory_queue_refuses(self) -> None:
        self.nsqd = make_nsqd(self.clock, mem_queue_size=2)
        c = self.client()
        c.send(b"MPUB t\n" + mpub_body([b"a", b"b"]))
        self.assertResponses(c, b"OK")
        c.command("PUB t", b"c")
        self.assertFatal(c, b"E_PUB_FAILED PUB failed queue full")
        c = self.client()
        c.send(b"MPUB t\n" + mpub_body([b"a"]))
        self.assertFatal(c, b"E_MPUB_FAILED MPUB failed queue full")

    def test_publish_while_subscribed_and_closing(self) -> None:
        c = self.client()
        c.subscribe("t", "c")
        c.command("PUB t", b"x")
        self.assertResponses(c, b"OK")
        c.command("CLS")
        c.command("PUB t", b"y")
        self.assertResponses(c, b"CLOSE_WAIT", b"OK")


class ConsumeTests(Base):
    def publish(self, topic: str, *bodies: bytes) -> None:
        self.nsqd.get_topic(topic).publish(list(bodies))
        self.nsqd.run_dispatch()

    def test_rdy_window(self) -> None:
        self.publish("t", b"1", b"2", b"3", b"4")
        c = self.client()
        c.subscribe("t", "c", rdy=2)
        messages = c.messages()
        self.assertEqual([m.body for m in messages], [b"1", b"2"])
        self.assertEqual(messages[0].attempts, 1)
        self.assertEqual(len(messages[0].id), 16)
        c.command("NOP")
        self.assertEqual(c.messages(), [], "RDY is a window: nothing more until a FIN")
        c.command(f"FIN {messages[0].id.decode()}")
        self.assertEqual([m.body for m in c.messages()], [b"3"])
        self.assertEqual(c.protocol.ready_count, 2, "RDY is never decremented")

    def test_fin_errors(self) -> None:
        c = self.client()
        c.subscribe("t", "c", rdy=1)
        c.command("FIN 0000000000000000")
        self.assertEqual(
            [(f.type, f.data) for f in c.frames()],
            [(1, b"E_FIN_FAILED FIN 0000000000000000 failed ID not in flight")],
        )
        self.assertFalse(c.closed, "E_FIN_FAILED is not fatal")
        c.command("FIN abc")
        self.assertFatal(c, b"E_INVALID Invalid Message ID")

    def test_not_owner(self) -> None:
        self.publish("t", b"x")
        a = self.client()
        a.subscribe("t", "c", rdy=1)
        [message] = a.messages()
        b = self.client(port=40001)
        b.subscribe("t", "c")
        b.command(f"REQ {message.id.decode()} 0")
        self.assertEqual(
            [f.data for f in b.frames()],
            [b"E_REQ_FAILED REQ " + message.id + b" failed client does not own message"],
        )
        b.command(f"TOUCH {message.id.decode()}")
        self.assertEqual(
            [f.data for f in b.frames()],
            [b"E_TOUCH_FAILED TOUCH " + message.id + b" failed client does not own message"],
        )

    def test_state_errors(self) -> None:
        for line, error in [
            ("RDY 1", b"E_INVALID cannot RDY in current state"),
            ("FIN 0000000000000000", b"E_INVALID cannot FIN in current state"),
            ("REQ 0000000000000000 0", b"E_INVALID cannot REQ in current state"),
            ("TOUCH 0000000000000000", b"E_INVALID cannot TOUCH in current state"),
            ("CLS", b"E_INVALID cannot CLS in current state"),
            ("BOGUS", b"E_INVALID invalid command BOGUS"),
            ("SUB t", b"E_INVALID SUB insufficient number of parameters"),
            ("SUB t! c", b'E_BAD_TOPIC SUB topic name "t!" is not valid'),
            ("SUB t c!", b'E_BAD_CHANNEL SUB channel name "c!" is not valid'),
        ]:
            c = self.client()
            c.command(line)
            self.assertFatal(c, error)

    def test_rdy_errors(self) -> None:
        for line, error in [
            ("RDY 2501", b"E_INVALID RDY count 2501 out of range 0-2500"),
            ("RDY x", b"E_INVALID RDY could not parse count x"),
            ("RDY -1", b"E_INVALID RDY could not parse count -1"),
        ]:
            c = self.client()
            c.subscribe("t", "c")
            c.command(line)
            self.assertFatal(c, error)

    def test_rdy_alone_means_one(self) -> None:
        self.publish("t", b"1", b"2")
        c = self.client()
        c.subscribe("t", "c")
        c.command("RDY")
        self.assertEqual(len(c.messages()), 1)

    def test_sub_twice_and_heartbeats_disabled(self) -> None:
        c = self.client()
        c.subscribe("t", "c")
        c.command("SUB t c")
        self.assertFatal(c, b"E_INVALID cannot SUB in current state")
        c = self.client()
        c.identify(heartbeat_interval=-1)
        c.command("SUB t c")
        self.assertFatal(c, b"E_INVALID cannot SUB with heartbeats disabled")

    def test_req_with_delay_and_attempts(self) -> None:
        self.publish("t", b"x")
        c = self.client()
        c.subscribe("t", "c", rdy=1)
        [first] = c.messages()
        c.command(f"REQ {first.id.decode()} 1000")
        self.assertEqual(c.messages(), [])
        channel = self.nsqd.topics["t"].channels["c"]
        self.assertEqual((channel.requeue_count, len(channel.deferred)), (1, 1))
        self.clock.advance(1)
        [again] = c.messages()
        self.assertEqual((again.id, again.attempts), (first.id, 2))
        self.assertEqual(c.protocol.requeue_count, 1)

    def test_req_clamped(self) -> None:
        self.nsqd = make_nsqd(self.clock, max_req_timeout=3600.0)
        self.publish("t", b"x")
        c = self.client()
        c.identify(heartbeat_interval=60000)
        c.subscribe("t", "c", rdy=1)
        [m] = c.messages()
        c.command(f"REQ {m.id.decode()} 99999999")
        self.assertFalse(c.closed)
        for _ in range(59):
            self.clock.advance(61)
            c.command("NOP")
        c.frames()
        self.clock.advance(3599 - 59 * 61)
        self.assertEqual(c.messages(), [])
        self.clock.advance(1)
        self.assertEqual(len(c.messages()), 1)

    def test_timeout_redelivery(self) -> None:
        self.publish("t", b"x")
        c = self.client()
        c.identify(msg_timeout=2000)
        c.subscribe("t", "c", rdy=1)
        [m] = c.messages()
        self.clock.advance(1.9)
        self.assertEqual(c.messages(), [])
        self.clock.advance(0.1)
        [again] = c.messages()
        self.assertEqual((again.id, again.attempts), (m.id, 2))
        channel = self.nsqd.topics["t"].channels["c"]
        self.assertEqual((channel.timeout_count, channel.requeue_count), (1, 0))

    def test_touch_extends_and_is_capped(self) -> None:
        self.nsqd = make_nsqd(self.clock, max_msg_timeout=3.0)
        self.publish("t", b"x")
        c = self.client()
        c.identify(msg_timeout=2000)
        c.subscribe("t", "c", rdy=1)
        [m] = c.messages()
        self.clock.advance(1.5)
        c.command(f"TOUCH {m.id.decode()}")
        self.clock.advance(1.0)
        self.assertEqual(c.messages(), [], "TOUCH moved the deadline to 3.5s")
        self.clock.advance(0.5)
        [again] = c.messages()
        self.assertEqual(again.attempts, 2, "capped at delivery + max-msg-timeout = 3s")

    def test_cls(self) -> None:
        self.publish("t", b"1", b"2")
        c = self.client()
        c.subscribe("t", "c", rdy=1)
        [m] = c.messages()
        c.command("CLS")
        self.assertResponses(c, b"CLOSE_WAIT")
        c.command(f"FIN {m.id.decode()}")
        c.command("RDY 5")
        self.assertEqual(c.frames(), [], "FIN still accepted, RDY ignored while closing")
        self.assertEqual(c.protocol.finish_count, 1)
        c.command("CLS")
        self.assertFatal(c, b"E_INVALID cannot CLS in current state")

    def test_two_channels_each_get_every_message(self) -> None:
        a = self.client()
        a.subscribe("t", "a", rdy=10)
        b = self.client(port=40001)
        b.subscribe("t", "b", rdy=10)
        self.publish("t", b"1", b"2")
        self.assertEqual([m.body for m in a.messages()], [b"1", b"2"])
        self.assertEqual([m.body for m in b.messages()], [b"1", b"2"])

    def test_two_consumers_share_a_channel(self) -> None:
        a = self.client()
        a.subscribe("t", "c", rdy=10)
        b = self.client(port=40001)
        b.subscribe("t", "c", rdy=10)
        self.publish("t", *[b"%d" % i for i in range(10)])
        got_a = [m.body for m in a.messages()]
        got_b = [m.body for m in b.messages()]
        self.assertEqual(sorted(got_a + got_b), sorted(b"%d" % i for i in range(10)))
        self.assertTrue(got_a and got_b)

    def test_sample_rate_drops(self) -> None:
        c = self.client()
        c.identify(sample_rate=50)
        c.subscribe("t", "c", rdy=250)
        self.publish("t", *[b"x"] * 200)
        got = len(c.messages())
        channel = self.nsqd.topics["t"].channels["c"]
        self.assertTrue(50 < got < 150, got)
        self.assertEqual(channel.depth(), 0, "sampled-out messages are gone, not requeued")

    def test_disconnect_keeps_in_flight_until_timeout(self) -> None:
        self.publish("t", b"x")
        c = self.client()
        c.subscribe("t", "c", rdy=1)
        c.messages()
        c.disconnect()
        channel = self.nsqd.topics["t"].channels["c"]
        self.assertEqual(len(channel.in_flight), 1)
        self.clock.advance(60)
        self.assertEqual((len(channel.in_flight), channel.depth()), (0, 1))

    def test_ephemeral_channel_deleted_with_last_client(self) -> None:
        c = self.client()
        c.subscribe("t#ephemeral", "c#ephemeral")
        c.disconnect()
        self.assertNotIn("t#ephemeral", self.nsqd.topics)

    def test_max_channel_consumers(self) -> None:
        self.nsqd = make_nsqd(self.clock, max_channel_consumers=1)
        self.client().subscribe("t", "c")
        c = self.client(port=40001)
        c.command("SUB t c")
        self.assertFatal(c, b"E_SUB_FAILED SUB failed consumers for t:c exceeds limit of 1")

    def test_paused_channel_delivers_nothing(self) -> None:
        c = self.client()
        c.subscribe("t", "c", rdy=5)
        channel = self.nsqd.topics["t"].channels["c"]
        channel.pause()
        self.publish("t", b"x")
        self.assertEqual(c.messages(), [])
        channel.unpause()
        self.nsqd.run_dispatch()
        self.assertEqual(len(c.messages()), 1)

    def test_channel_delete_closes_clients(self) -> None:
        c = self.client()
        c.subscribe("t", "c")
        self.nsqd.topics["t"].delete_channel("c")
        self.assertTrue(c.closed)


class HeartbeatTests(Base):
    def test_heartbeats_and_missed(self) -> None:
        c = self.client()
        c.identify(heartbeat_interval=1000)
        self.clock.advance(1)
        self.assertResponses(c, b"_heartbeat_")
        c.command("NOP")
        self.clock.advance(1)
        self.assertResponses(c, b"_heartbeat_")
        self.assertFalse(c.closed)
        self.clock.advance(1)
        self.assertTrue(c.closed, "two missed heartbeats close the connection")

    def test_default_interval(self) -> None:
        c = self.client()
        self.clock.advance(30)
        self.assertResponses(c, b"_heartbeat_")

    def test_disabled(self) -> None:
        c = self.client()
        c.identify(heartbeat_interval=-1)
        self.clock.advance(600)
        self.assertEqual(c.frames(), [])
        self.assertFalse(c.closed)


class TLSRequiredTests(Base):
    def test_commands_refused_without_tls(self) -> None:
        self.nsqd = make_nsqd(self.clock, tls_required="true", tls_cert="c", tls_key="k")
        c = self.client()
        c.command("PUB t", b"x")
        self.assertFatal(c, b"E_INVALID cannot PUB in current state (TLS required)")


class AuthTests(Base):
    def test_auth_disabled(self) -> None:
        c = self.client()
        c.command("AUTH", b"secret")
        self.assertFatal(c, b"E_AUTH_DISABLED AUTH disabled")

    def test_auth_params(self) -> None:
        c = self.client()
        c.send(b"AUTH x\n")
        self.assertFatal(c, b"E_INVALID AUTH invalid number of parameters")


class FakeAuthClient:
    """Stands in for the auth-server client: answers each authorize() from a script."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, bytes, str]] = []
        self.pending: list[Deferred[AuthState]] = []

    def authorize(
        self, remote_ip: str, tls: bool, secret: bytes, common_name: str = ""
    ) -> Deferred[AuthState]:
        self.calls.append((remote_ip, tls, secret, common_name))
        d: Deferred[AuthState] = Deferred()
        self.pending.append(d)
        return d


def _state(
    expires_at: float, topic: str = "allowed.*", permissions: tuple[str, ...] = ("publish", "subscribe")
) -> AuthState:
    return AuthState(
        identity="user",
        identity_url="https://id/user",
        authorizations=(Authorization(topic=topic, channels=(".*",), permissions=permissions),),
        expires_at=expires_at,
    )


class AuthFlowTests(Base):
    def setUp(self) -> None:
        super().setUp()
        self.nsqd = make_nsqd(self.clock, auth_http_addresses=["127.0.0.1:1"])
        self.auth = FakeAuthClient()

    def authed_client(self) -> LoopbackClient:
        c = self.client(auth_client=self.auth)
        c.command("AUTH", b"s3cret")
        self.assertEqual(c.frames(), [], "no reply until the auth server answers")
        self.auth.pending.pop().callback(_state(self.clock.seconds() + 10))
        self.assertResponses(c, b'{"identity":"user","identity_url":"https://id/user","permission_count":1}')
        return c

    def test_identify_reports_auth_required(self) -> None:
        c = self.client(auth_client=self.auth)
        self.assertTrue(json.loads(c.identify(feature_negotiation=True)[0].data)["auth_required"])

    def test_auth_then_publish(self) -> None:
        c = self.authed_client()
        self.assertEqual(self.auth.calls, [("127.0.0.1", False, b"s3cret", "")])
        c.command("PUB allowed_t", b"x")
        self.assertResponses(c, b"OK")
        c.command("AUTH", b"again")
        self.assertFatal(c, b"E_INVALID AUTH already set")

    def test_commands_wait_for_auth(self) -> None:
        c = self.client(auth_client=self.auth)
        c.send(b"AUTH\n" + body(b"s") + b"PUB allowed\n" + body(b"x"))
        self.assertEqual(c.frames(), [])
        self.auth.pending.pop().callback(_state(self.clock.seconds() + 60))
        self.assertEqual(len([f for f in c.frames() if f.is_response]), 2)

    def test_auth_first(self) -> None:
        c = self.client(auth_client=self.auth)
        c.command("PUB allowed", b"x")
        self.assertFatal(c, b"E_AUTH_FIRST AUTH required before PUB")
        c = self.client(auth_client=self.auth)
        c.command("SUB allowed ch")
        self.assertFatal(c, b"E_AUTH_FIRST AUTH required before SUB")

    def test_unauthorized(self) -> None:
        c = self.authed_client()
        c.command("PUB other", b"x")
        self.assertFatal(c, b'E_UNAUTHORIZED AUTH failed for PUB on "other" ""')
        c = self.authed_client()
        c.send(b"MPUB other\n")
        self.assertFatal(c, b'E_UNAUTHORIZED AUTH failed for MPUB on "other" ""')
        c = self.authed_client()
        c.command("SUB other ch")
        self.assertFatal(c, b'E_UNAUTHORIZED AUTH failed for SUB on "other" "ch"')

    def test_auth_server_failure(self) -> None:
        c = self.client(auth_client=self.auth)
        c.command("AUTH", b"bad")
        self.auth.pending.pop().errback(AuthError("403"))
        self.assertFatal(c, b"E_AUTH_FAILED AUTH failed")

    def test_no_authorizations(self) -> None:
        c = self.client(auth_client=self.auth)
        c.command("AUTH", b"s")
        self.auth.pending.pop().callback(
            AuthState(identity="", identity_url="", authorizations=(), expires_at=self.clock.seconds() + 9)
        )
        self.assertFatal(c, b"E_UNAUTHORIZED AUTH no authorizations found")

    def test_expired_authorization_is_refreshed(self) -> None:
        c = self.authed_client()
        self.clock.advance(11)
        c.command("NOP")
        c.frames()
        c.command("PUB allowed", b"x")
        self.assertEqual(c.frames(), [])
        self.assertEqual(len(self.auth.calls), 2)
        self.auth.pending.pop().callback(_state(self.clock.seconds() + 60))
        self.assertResponses(c, b"OK")
        self.assertTrue(c.protocol.client_stats()["authed"])
