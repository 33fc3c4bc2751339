"""
An NSQ client on Twisted, matching go-nsq: connections to nsqd, a producer, a consumer and the
messages it delivers.
"""

from twisted_nsq.client.connection import (
    USER_AGENT,
    ConnectionClosedError,
    ConnectionOptions,
    NSQConnection,
    NSQResponseError,
)
from twisted_nsq.client.consumer import Consumer, ConsumerOptions
from twisted_nsq.client.message import Message
from twisted_nsq.client.producer import Producer, ProducerStoppedError

__all__ = [
    "USER_AGENT",
    "ConnectionClosedError",
    "ConnectionOptions",
    "Consumer",
    "ConsumerOptions",
    "Message",
    "NSQConnection",
    "NSQResponseError",
    "Producer",
    "ProducerStoppedError",
]
