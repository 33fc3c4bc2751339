"""
L{Producer} and L{Consumer} as Twisted services, for applications run by C{twistd} or C{twist}
(see C{nsq_app.tac}): a L{MultiService} starts them in order and, on shutdown, waits for the
consumer to drain (CLS, messages in flight answered) and the producer to close.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from twisted_nsq.client import Consumer, Producer


class ConsumerService(Service):
    """Starts a L{Consumer} with the service; stopping the service stops the consumer."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.consumer.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return self.consumer.stop()


class ProducerService(Service):
    """Owns a L{Producer} (it connects on the first publish); stopping the service closes it."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return self.producer.stop()


class PeriodicPublisher(TimerService):
    """Publishes C{body()} to C{topic} every C{interval} seconds through C{producer}."""

    log = Logger()

    def __init__(self, interval: float, producer: Producer, topic: str, body: Callable[[], bytes]) -> None:
        super().__init__(interval, self._publish)  # type: ignore[no-untyped-call]
        self.producer = producer
        self.topic = topic
        self.body = body

    def _publish(self) -> Deferred[None]:
        # A failed publish is logged and the timer goes on: the next publish reconnects.
        published = self.producer.publish(self.topic, self.body())
        published.addErrback(lambda failure: self.log.failure("publish failed", failure))
        return published
