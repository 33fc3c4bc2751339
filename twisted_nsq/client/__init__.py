"""
An NSQ client on Twisted: connections to nsqd, a producer and messages, matching go-nsq.
"""

from twisted_nsq.client.connection import (
    USER_AGENT,
    ConnectionClosedError,
    ConnectionOptions,
    NSQConnection,
    NSQResponseError,
)

__all__ = [
    "USER_AGENT",
    "ConnectionClosedError",
    "ConnectionOptions",
    "NSQConnection",
    "NSQResponseError",
]
