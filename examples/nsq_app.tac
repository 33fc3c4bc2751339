"""
A twistd application with a producer and a consumer of the same topic as services:

    twistd -ny examples/nsq_app.tac

It publishes a timestamped message to C{tac_demo} every second and logs each one it consumes
from the C{log} channel. Stop it with Ctrl-C: the consumer sends CLS and waits for its messages
in flight, then the producer closes. Set NSQD_TCP_ADDRESS to use another nsqd than
127.0.0.1:4150.
"""

import os
import sys
import time

from twisted.application.service import Application, MultiService
from twisted.logger import Logger

# twistd runs this file with exec(); make services.py next to it importable.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from services import ConsumerService, PeriodicPublisher, ProducerService  # noqa: E402

from twisted_nsq.client import Consumer, Message, Producer  # noqa: E402

log = Logger(namespace="nsq_app")
address = os.environ.get("NSQD_TCP_ADDRESS", "127.0.0.1:4150")


def handle(message: Message) -> None:
    log.info("consumed {body!r} (attempt {attempts})", body=message.body, attempts=message.attempts)


# No reactor= here: the client imports the reactor twistd installed when it first needs it.
producer = Producer([address])
consumer = Consumer("tac_demo", "log", handle, [address], max_in_flight=10)

application = Application("nsq-demo")
top = MultiService()
top.setServiceParent(application)
ProducerService(producer).setServiceParent(top)
PeriodicPublisher(1.0, producer, "tac_demo", lambda: f"tick {time.time():.3f}".encode()).setServiceParent(top)
ConsumerService(consumer).setServiceParent(top)
