"""
L{twisted_nsq.client.connection}: the bytes a client connection sends, its handshake and upgrades,
heartbeats and FIFO reply matching, over an in-memory transport.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from OpenSSL import SSL
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from twisted_nsq.client.connection import (
    USER_AGENT,
    ConnectionClosedError,
    ConnectionOptions,
    NSQConnection,
    NSQResponseError,
    encode_command,
    encode_mpub_body,
)
from twisted_nsq.wire.compression import DeflateCodec, SnappyCodec
from twisted_nsq.wire.frames import (
    FRAME_TYPE_MESSAGE,
    HEARTBEAT_FRAME,
    OK_FRAME,
    DecodedMessage,
    encode_frame,
    encode_message,
    error_frame,
    response_frame,
)

MESSAGE_ID = b"0123456789abcdef"


def identify_reply(**fields: Any) -> bytes:
    reply: dict[str, Any] = {
        "max_rdy_count": 2500,
        "version": "1.3.0",
        "tls_v1": False,
        "snappy": False,
        "deflate": False,
        "deflate_level": 6,
        "auth_required": False,
    }
    reply.update(fields)
    return response_frame(json.dumps(reply).encode())


@implementer(IOpenSSLClientConnectionCreator)
class FakeTLSOptions:
    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        raise AssertionError("not used by an in-memory transport")


class TLSStringTransport(StringTransport):
    """A StringTransport that records C{startTLS} and what was written before it."""

    def __init__(self) -> None:
        super().__init__()
        self.tls_started: list[tuple[object, bytes]] = []

    def startTLS(self, contextFactory: object) -> None:
        self.tls_started.append((contextFactory, self.value()))


class Recorder:
    def __init__(self) -> None:
        self.messages: list[DecodedMessage] = []
        self.errors: list[NSQResponseError] = []

    def on_message(self, connection: NSQConnection, message: DecodedMessage) -> None:
        self.messages.append(message)

    def on_error(self, connection: NSQConnection, error: NSQResponseError) -> None:
        self.errors.append(error)


def options(**overrides: Any) -> ConnectionOptions:
    fields: dict[str, Any] = {"client_id": "c1", "hostname": "h1.example"}
    fields.update(overrides)
    return ConnectionOptions(**fields)


class HandshakeTests(SynchronousTestCase):
    def connect(self, **overrides: Any) -> tuple[NSQConnection, TLSStringTransport, Recorder]:
        recorder = Recorder()
        connection = NSQConnection(options(**overrides), recorder.on_message, recorder.on_error)
        transport = TLSStringTransport()
        connection.makeConnection(transport)
        return connection, transport, recorder

    def test_magic_and_identify(self) -> None:
        """
        The client sends the V2 magic and an IDENTIFY carrying go-nsq's fields with
        C{feature_negotiation} on.
        """
        connection, transport, _ = self.connect(msg_timeout=2000, sample_rate=10)
        sent = transport.value()
        self.assertTrue(sent.startswith(b"  V2IDENTIFY\n"))
        (size,) = struct.unpack(">i", sent[13:17])
        self.assertEqual(len(sent), 17 + size)
        self.assertEqual(
            json.loads(sent[17:]),
            {
                "client_id": "c1",
                "hostname": "h1.example",
                "user_agent": USER_AGENT,
                "feature_negotiation": True,
                "heartbeat_interval": 30000,
                "output_buffer_size": 16384,
                "output_buffer_timeout": 250,
                "msg_timeout": 2000,
                "sample_rate": 10,
                "tls_v1": False,
                "snappy": False,
                "deflate": False,
                "deflate_level": 6,
            },
        )
        self.assertTrue(USER_AGENT.startswith("twisted-nsq/"))
        self.assertFalse(connection.ready)

    def test_ready_after_json_reply(self) -> None:
        connection, _transport, _ = self.connect()
        ready = connection.when_ready()
        self.assertNoResult(ready)
        connection.dataReceived(identify_reply())
        self.successResultOf(ready)
        self.successResultOf(connection.when_ready())
        self.assertTrue(connection.ready)
        self.assertEqual(connection.identify_response["max_rdy_count"], 2500)

    def test_ready_after_plain_ok(self) -> None:
        """A server that ignores feature negotiation answers C{OK}; nothing is upgraded."""
        connection, transport, _ = self.connect(snappy=True)
        connection.dataReceived(OK_FRAME)
        self.successResultOf(connection.when_ready())
        transport.clear()
        connection.publish("t", b"x")
        self.assertEqual(transport.value(), b"PUB t\n\x00\x00\x00\x01x")

    def test_byte_by_byte(self) -> None:
        """The handshake and later frames may arrive split anywhere."""
        connection, _transport, recorder = self.connect()
        stream = identify_reply() + encode_frame(
            FRAME_TYPE_MESSAGE, encode_message(7, 1, MESSAGE_ID, b"body")
        )
        for i in range(len(stream)):
            connection.dataReceived(stream[i : i + 1])
        self.assertTrue(connection.ready)
        self.assertEqual(recorder.messages, [DecodedMessage(7, 1, MESSAGE_ID, b"body")])

    def test_identify_error(self) -> None:
        """An error frame instead of the IDENTIFY reply fails the handshake with its code."""
        connection, transport, _ = self.connect()
        ready = connection.when_ready()
        connection.dataReceived(error_frame(b"E_BAD_BODY IDENTIFY heartbeat interval (5) is invalid"))
        error = self.failureResultOf(ready, NSQResponseError).value
        assert isinstance(error, NSQResponseError)
        self.assertEqual(
            (error.code, error.message), ("E_BAD_BODY", "IDENTIFY heartbeat interval (5) is invalid")
        )
        self.assertTrue(transport.disconnecting)
        self.failureResultOf(connection.when_ready(), NSQResponseError)

    def test_auth_required(self) -> None:
        connection, transport, _ = self.connect()
        ready = connection.when_ready()
        connection.dataReceived(identify_reply(auth_required=True))
        self.failureResultOf(ready, ConnectionClosedError)
        self.assertTrue(transport.disconnecting)

    def test_auth(self) -> None:
        """With auth_secret, AUTH follows IDENTIFY when nsqd requires it; its JSON reply is kept."""
        connection = NSQConnection(ConnectionOptions(client_id="c", hostname="h", auth_secret="s3cret"))
        transport = StringTransport()
        connection.makeConnection(transport)
        transport.clear()
        ready = connection.when_ready()
        connection.dataReceived(identify_reply(auth_required=True))
        self.assertEqual(transport.value(), b"AUTH\n\x00\x00\x00\x06s3cret")
        self.assertNoResult(ready)
        connection.dataReceived(response_frame(b'{"identity":"u","identity_url":"","permission_count":1}'))
        self.successResultOf(ready)
        self.assertEqual(connection.auth_response["identity"], "u")

    def test_auth_not_required(self) -> None:
        """A secret is not sent to an nsqd that does not ask for it."""
        connection = NSQConnection(ConnectionOptions(client_id="c", hostname="h", auth_secret="s3cret"))
        transport = StringTransport()
        connection.makeConnection(transport)
        transport.clear()
        connection.dataReceived(identify_reply())
        self.successResultOf(connection.when_ready())
        self.assertEqual(transport.value(), b"")
        self.assertNotIn("auth_secret", connection.options.identify_body())

    def test_auth_refused(self) -> None:
        connection = NSQConnection(ConnectionOptions(client_id="c", hostname="h", auth_secret="bad"))
        transport = StringTransport()
        connection.makeConnection(transport)
        ready = connection.when_ready()
        connection.dataReceived(identify_reply(auth_required=True))
        connection.dataReceived(error_frame(b"E_AUTH_FAILED AUTH failed"))
        self.assertEqual(self.failureResultOf(ready, NSQResponseError).value.code, "E_AUTH_FAILED")
        self.assertTrue(transport.disconnecting)

    def test_bad_reply(self) -> None:
        connection, _transport, _ = self.connect()
        ready = connection.when_ready()
        connection.dataReceived(response_frame(b"[1, 2]"))
        self.failureResultOf(ready, ConnectionClosedError)

    def test_lost_during_handshake(self) -> None:
        connection, _transport, _ = self.connect()
        ready = connection.when_ready()
        closed = connection.when_closed()
        connection.connectionLost(Failure(ConnectionClosedError("gone")))
        self.failureResultOf(ready, ConnectionClosedError)
        self.successResultOf(closed)
        self.successResultOf(connection.when_closed())

    def test_snappy(self) -> None:
        """
        Snappy is switched on right after the JSON reply: the compressed C{OK} may arrive in the same
        chunk, and every later command is compressed.
        """
        connection, transport, _ = self.connect(snappy=True)
        server = SnappyCodec()
        connection.dataReceived(identify_reply(snappy=True) + server.compress(OK_FRAME))
        self.successResultOf(connection.when_ready())
        transport.clear()
        published = connection.publish("t", b"hello")
        self.assertEqual(server.decompress(transport.value()), b"PUB t\n\x00\x00\x00\x05hello")
        self.assertNoResult(published)
        connection.dataReceived(server.compress(OK_FRAME))
        self.assertEqual(self.successResultOf(published), b"OK")

    def test_snappy_byte_by_byte(self) -> None:
        """The switch to snappy works wherever the chunks split, even inside the JSON reply."""
        connection, _transport, recorder = self.connect(snappy=True)
        server = SnappyCodec()
        stream = (
            identify_reply(snappy=True)
            + server.compress(OK_FRAME)
            + server.compress(encode_frame(FRAME_TYPE_MESSAGE, encode_message(7, 1, MESSAGE_ID, b"body")))
        )
        for i in range(len(stream)):
            connection.dataReceived(stream[i : i + 1])
        self.assertTrue(connection.ready)
        self.assertEqual(recorder.messages, [DecodedMessage(7, 1, MESSAGE_ID, b"body")])

    def test_snappy_not_granted(self) -> None:
        """An upgrade nsqd does not grant is not performed."""
        connection, transport, _ = self.connect(snappy=True)
        connection.dataReceived(identify_reply(snappy=False))
        self.successResultOf(connection.when_ready())
        transport.clear()
        connection.rdy(3)
        self.assertEqual(transport.value(), b"RDY 3\n")

    def test_deflate(self) -> None:
        connection, transport, _ = self.connect(deflate=True, deflate_level=3)
        server = DeflateCodec(3)
        reply = identify_reply(deflate=True, deflate_level=3)
        connection.dataReceived(reply)
        self.assertFalse(connection.ready)
        connection.dataReceived(server.compress(OK_FRAME))
        self.successResultOf(connection.when_ready())
        transport.clear()
        connection.finish(MESSAGE_ID)
        self.assertEqual(server.decompress(transport.value()), b"FIN " + MESSAGE_ID + b"\n")

    def test_tls_then_snappy(self) -> None:
        """
        TLS starts right after the JSON reply (nothing is written in between); its C{OK} is
        followed by snappy and a compressed C{OK}.
        """
        tls = FakeTLSOptions()
        connection, transport, _ = self.connect(tls_v1=True, tls_options=tls, snappy=True)
        identify_sent = transport.value()
        connection.dataReceived(identify_reply(tls_v1=True, snappy=True))
        self.assertEqual(transport.tls_started, [(tls, identify_sent)])
        self.assertFalse(connection.ready)
        server = SnappyCodec()
        connection.dataReceived(OK_FRAME + server.compress(OK_FRAME))
        self.successResultOf(connection.when_ready())
        self.assertEqual(transport.value(), identify_sent)

    def test_unexpected_upgrade_reply(self) -> None:
        connection, _transport, _ = self.connect(tls_v1=True, tls_options=FakeTLSOptions())
        ready = connection.when_ready()
        connection.dataReceived(identify_reply(tls_v1=True) + response_frame(b"NOPE"))
        self.failureResultOf(ready, ConnectionClosedError)


class ReadyConnectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.recorder = Recorder()
        self.connection = NSQConnection(options(), self.recorder.on_message, self.recorder.on_error)
        self.transport = StringTransport()
        self.connection.makeConnection(self.transport)
        self.connection.dataReceived(identify_reply())
        self.successResultOf(self.connection.when_ready())
        self.transport.clear()

    def test_heartbeat(self) -> None:
        """C{_heartbeat_} is answered with C{NOP} and matched to no command."""
        published = self.connection.publish("t", b"a")
        self.transport.clear()
        self.connection.dataReceived(HEARTBEAT_FRAME)
        self.assertEqual(self.transport.value(), b"NOP\n")
        self.assertNoResult(published)

    def test_command_bytes(self) -> None:
        connection = self.connection
        connection.subscribe("t", "ch")
        connection.rdy(10)
        connection.finish(MESSAGE_ID)
        connection.requeue(MESSAGE_ID, 90000)
        connection.touch(MESSAGE_ID)
        connection.send(b"NOP")
        connection.multi_publish("t", [b"a", b"bc"])
        connection.deferred_publish("t", b"later", 100)
        connection.start_close()
        self.assertEqual(
            self.transport.value(),
            b"SUB t ch\nRDY 10\nFIN 0123456789abcdef\nREQ 0123456789abcdef 90000\n"
            b"TOUCH 0123456789abcdef\nNOP\n"
            b"MPUB t\n\x00\x00\x00\x0f\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x02bc"
            b"DPUB t 100\n\x00\x00\x00\x05later"
            b"CLS\n",
        )
        self.assertEqual(connection.pending_count, 4)

    def test_fifo(self) -> None:
        """
        Replies are matched to commands in the order the commands were sent; an error frame fails
        its command with the code, and the connection is closed after a fatal one.
        """
        first = self.connection.publish("t", b"1")
        second = self.connection.deferred_publish("t", b"2", 5)
        third = self.connection.multi_publish("t", [b"3"])
        self.connection.dataReceived(OK_FRAME + HEARTBEAT_FRAME)
        self.assertEqual(self.successResultOf(first), b"OK")
        self.assertNoResult(second)
        self.connection.dataReceived(OK_FRAME + error_frame(b"E_MPUB_FAILED MPUB failed exiting"))
        self.assertEqual(self.successResultOf(second), b"OK")
        error = self.failureResultOf(third, NSQResponseError).value
        assert isinstance(error, NSQResponseError)
        self.assertEqual(error.code, "E_MPUB_FAILED")
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.connection.ready)
        self.failureResultOf(self.connection.publish("t", b"4"), ConnectionClosedError)

    def test_non_fatal_errors(self) -> None:
        """E_FIN_FAILED and friends go to the error callback, not to a waiting command."""
        published = self.connection.publish("t", b"1")
        self.connection.dataReceived(
            error_frame(b"E_FIN_FAILED FIN 0123456789abcdef failed ID not in flight")
            + error_frame(b"E_REQ_FAILED REQ x failed")
            + error_frame(b"E_TOUCH_FAILED TOUCH x failed")
        )
        self.assertEqual(
            [e.code for e in self.recorder.errors], ["E_FIN_FAILED", "E_REQ_FAILED", "E_TOUCH_FAILED"]
        )
        self.assertNoResult(published)
        self.assertFalse(self.transport.disconnecting)
        self.connection.dataReceived(OK_FRAME)
        self.successResultOf(published)

    def test_unsolicited_fatal_error(self) -> None:
        self.connection.dataReceived(error_frame(b"E_INVALID cannot RDY"))
        self.assertEqual([e.code for e in self.recorder.errors], ["E_INVALID"])
        self.assertTrue(self.transport.disconnecting)

    def test_unexpected_response_ignored(self) -> None:
        self.connection.dataReceived(OK_FRAME)
        published = self.connection.publish("t", b"1")
        self.connection.dataReceived(OK_FRAME)
        self.successResultOf(published)

    def test_cancel(self) -> None:
        """Cancelling a command gives up the connection: later replies could not be matched."""
        first = self.connection.publish("t", b"1")
        second = self.connection.publish("t", b"2")
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.failureResultOf(second, ConnectionClosedError)
        self.assertTrue(self.transport.disconnecting)

    def test_messages(self) -> None:
        frames = b"".join(
            encode_frame(FRAME_TYPE_MESSAGE, encode_message(n, n, MESSAGE_ID, b"m%d" % n)) for n in (1, 2)
        )
        self.connection.dataReceived(frames)
        self.assertEqual(
            self.recorder.messages,
            [DecodedMessage(1, 1, MESSAGE_ID, b"m1"), DecodedMessage(2, 2, MESSAGE_ID, b"m2")],
        )

    def test_bad_frame_size(self) -> None:
        published = self.connection.publish("t", b"1")
        self.connection.dataReceived(b"\x00\x00\x00\x01")
        self.failureResultOf(published, ConnectionClosedError)
        self.assertTrue(self.transport.disconnecting)

    def test_connection_lost(self) -> None:
        """Commands still waiting fail; later commands fail at once."""
        published = self.connection.publish("t", b"1")
        closed = self.connection.when_closed()
        self.connection.connectionLost(Failure(ConnectionClosedError("gone")))
        self.failureResultOf(published, ConnectionClosedError)
        self.successResultOf(closed)
        self.assertFalse(self.connection.ready)
        self.failureResultOf(self.connection.publish("t", b"2"), ConnectionClosedError)
        self.assertRaises(ConnectionClosedError, self.connection.rdy, 1)
        self.transport.clear()
        self.connection.finish(MESSAGE_ID)
        self.connection.requeue(MESSAGE_ID, 0)
        self.connection.touch(MESSAGE_ID)
        self.assertEqual(self.transport.value(), b"")


class NotReadyTests(SynchronousTestCase):
    def test_commands_before_ready(self) -> None:
        connection = NSQConnection(options())
        connection.makeConnection(StringTransport())
        self.failureResultOf(connection.publish("t", b"1"), ConnectionClosedError)
        self.assertRaises(ConnectionClosedError, connection.rdy, 1)


class EncodingTests(SynchronousTestCase):
    def test_encode_command(self) -> None:
        self.assertEqual(encode_command(b"NOP"), b"NOP\n")
        self.assertEqual(encode_command(b"PUB", (b"t",), b""), b"PUB t\n\x00\x00\x00\x00")

    def test_mpub_body(self) -> None:
        self.assertEqual(encode_mpub_body([b"ab"]), b"\x00\x00\x00\x01\x00\x00\x00\x02ab")


class OptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        default = ConnectionOptions()
        self.assertEqual(default.client_id, default.hostname.split(".")[0])
        self.assertEqual((default.heartbeat_interval, default.msg_timeout), (30000, 0))

    def test_invalid(self) -> None:
        self.assertRaises(ValueError, ConnectionOptions, snappy=True, deflate=True)
        self.assertRaises(ValueError, ConnectionOptions, tls_v1=True)
        self.assertRaises(ValueError, ConnectionOptions, sample_rate=100)
        self.assertRaises(ValueError, ConnectionOptions, deflate_level=0)
