"""L{twisted_nsq.client.message}: FIN, REQ and TOUCH go back to the delivering connection."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq.client.message import Message
from twisted_nsq.wire.frames import DecodedMessage

MESSAGE_ID = b"0123456789abcdef"


class FakeConnection:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int | None]] = []

    def finish(self, message_id: bytes) -> None:
        self.sent.append(("FIN", message_id, None))

    def requeue(self, message_id: bytes, delay_ms: int) -> None:
        self.sent.append(("REQ", message_id, delay_ms))

    def touch(self, message_id: bytes) -> None:
        self.sent.append(("TOUCH", message_id, None))


class MessageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.connection = FakeConnection()
        self.responses: list[tuple[Message, bool, bool]] = []

    def message(self, attempts: int = 1) -> Message:
        return Message.from_decoded(
            DecodedMessage(123, attempts, MESSAGE_ID, b"body"),
            self.connection,
            on_response=lambda m, finished, backoff: self.responses.append((m, finished, backoff)),
        )

    def test_fields(self) -> None:
        message = self.message(2)
        self.assertEqual(
            (message.id, message.body, message.attempts, message.timestamp), (MESSAGE_ID, b"body", 2, 123)
        )
        self.assertIn("attempts=2", repr(message))

    def test_finish_once(self) -> None:
        message = self.message()
        message.touch()
        message.finish()
        message.finish()
        message.requeue()
        message.touch()
        self.assertEqual(self.connection.sent, [("TOUCH", MESSAGE_ID, None), ("FIN", MESSAGE_ID, None)])
        self.assertEqual(self.responses, [(message, True, False)])
        self.assertTrue(message.responded)

    def test_default_requeue_delay(self) -> None:
        """go-nsq: 90 s times the attempts, capped at 15 minutes."""
        message = self.message(3)
        message.requeue()
        self.assertEqual(self.connection.sent, [("REQ", MESSAGE_ID, 270000)])
        self.assertEqual(self.message(20).default_requeue_delay(), 900.0)
        self.assertEqual(self.responses, [(message, False, True)])

    def test_explicit_delay_without_backoff(self) -> None:
        message = self.message()
        message.requeue(1.5, backoff=False)
        self.assertEqual(self.connection.sent, [("REQ", MESSAGE_ID, 1500)])
        self.assertEqual(self.responses, [(message, False, False)])

    def test_negative_delay(self) -> None:
        message = self.message()
        self.assertRaises(ValueError, message.requeue, -1)
        self.assertFalse(message.responded)

    def test_without_hook(self) -> None:
        message = Message(MESSAGE_ID, b"", 1, 0, self.connection)
        message.requeue(0)
        self.assertEqual(self.connection.sent, [("REQ", MESSAGE_ID, 0)])
