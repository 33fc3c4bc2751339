"""
A core on real disk queues, restored from its data path as the service restores it: what the
restart tests (test_restart, test_ordered, the ordered state machines) start again and again.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock

from twisted_nsq.nsqd.metadata import MetadataPersister
from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.options import NSQDOptions
from twisted_nsq.nsqd.persistence import immediate_sync_runner, make_backend_factory, restore


def restored_nsqd(clock: Clock, data_path: str, **overrides: Any) -> tuple[NSQD, MetadataPersister]:
    """
    Start node 1 (C{testhost}) on C{data_path} with C{overrides} as further options: disk syncs
    run at once, a storage error sets the core's health, and IDs come from C{Random(0)}.
    """
    values: dict[str, Any] = {"node_id": 1, "broadcast_address": "testhost", "data_path": data_path}
    values.update(overrides)
    options = NSQDOptions(**values)
    cores: list[NSQD] = []
    factory = make_backend_factory(
        options, clock, immediate_sync_runner, lambda error: cores[0].set_health(error)
    )
    nsqd = NSQD(options, clock, random_source=random.Random(0), backend_factory=factory)
    cores.append(nsqd)
    persister = restore(nsqd)
    nsqd.start()
    return nsqd, persister
