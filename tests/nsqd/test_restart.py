"""
A clean restart of the core on real disk queues: ``nsqd.close()`` flushes everything, a new
``NSQD`` on the same data path recreates topics, channels and paused flags from nsqd.dat, and
every unfinished message (queued, in flight, deferred) is delivered again with its attempts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.nsqd._restore import restored_nsqd
from tests.test_http_helpers import call
from twisted_nsq.nsqd.http import NSQDHTTP
from twisted_nsq.nsqd.metadata import MetadataPersister, load_metadata
from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.nsqd.options import NSQDOptions
from twisted_nsq.nsqd.persistence import (
    persist_and_close,
)
from twisted_nsq.nsqd.service import DataPathLock, NSQDService, StartupError
from twisted_nsq.testing import LoopbackClient
from twisted_nsq.wire.frames import DecodedMessage


class RestartTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.data_path = self.mktemp()
        os.makedirs(self.data_path)
        self.clients: list[LoopbackClient] = []

    def start(self, **overrides: Any) -> tuple[NSQD, MetadataPersister]:
        """A core on the data path, restored as the service does it."""
        return restored_nsqd(self.clock, self.data_path, **overrides)

    def client(self, nsqd: NSQD) -> LoopbackClient:
        client = LoopbackClient(nsqd)
        self.clients.append(client)
        return client

    def stop(self, nsqd: NSQD, persister: MetadataPersister) -> None:
        """Clients go first, then nsqd.dat and the queues, as the service stops."""
        for client in self.clients:
            if not client.closed:
                client.disconnect()
        self.clients.clear()
        self.clock.advance(0)
        self.successResultOf(persist_and_close(nsqd, persister))
        self.assertEqual(self.clock.getDelayedCalls(), [], "a closed core leaves no timer behind")

    def consume(
        self, nsqd: NSQD, topic: str, channel: str, rdy: int
    ) -> tuple[LoopbackClient, list[DecodedMessage]]:
        client = self.client(nsqd)
        client.subscribe(topic, channel, rdy)
        nsqd.run_dispatch()
        self.clock.advance(0)
        return client, client.messages()

    def drain(self, nsqd: NSQD, topic: str, channel: str) -> dict[bytes, int]:
        """Everything the channel delivers (FINed at once), body -> attempts; fails on duplicates."""
        client = self.client(nsqd)
        client.subscribe(topic, channel, 50)
        seen: dict[bytes, int] = {}
        for _ in range(1000):
            nsqd.run_dispatch()
            self.clock.advance(0)
            messages = client.messages()
            if not messages:
                break
            for message in messages:
                self.assertNotIn(message.body, seen, "delivered twice")
                seen[message.body] = message.attempts
                client.command(f"FIN {message.id.decode()}")
        client.disconnect()
        self.clients.remove(client)
        return seen

    def publish(self, nsqd: NSQD, topic: str, bodies: Iterable[bytes], defer: float = 0.0) -> None:
        nsqd.get_topic(topic).publish(list(bodies), defer)
        nsqd.run_dispatch()

    # -- the tests ---------------------------------------------------------------------------------

    def test_topology_and_paused_flags(self) -> None:
        nsqd, persister = self.start()
        t = nsqd.get_topic("t")
        t.get_channel("live")
        t.get_channel("idle").pause()
        t.get_channel("gone#ephemeral")
        held = nsqd.get_topic("held")
        held.get_channel("c")
        held.pause()
        nsqd.persist_metadata()
        nsqd.get_topic("e#ephemeral").get_channel("c")
        nsqd.get_topic("deleted").get_channel("c")
        self.publish(nsqd, "deleted", [b"x"])
        nsqd.delete_topic("deleted")
        self.stop(nsqd, persister)

        nsqd, persister = self.start()
        self.assertEqual(sorted(nsqd.topics), ["held", "t"])
        self.assertEqual(
            {name: c.paused for name, c in nsqd.topics["t"].channels.items()}, {"live": False, "idle": True}
        )
        self.assertTrue(nsqd.topics["held"].paused)
        self.assertFalse(nsqd.topics["t"].paused)
        self.assertEqual(list(nsqd.topics["held"].channels), ["c"])
        self.assertFalse(any(name.startswith("deleted") for name in os.listdir(self.data_path)))
        # Ephemeral topics and channels never touch the disk (a plain channel of an ephemeral
        # topic does get a queue, as in Go, but the topic is not recreated).
        names = os.listdir(self.data_path)
        self.assertFalse([n for n in names if n.startswith("e#ephemeral.") or "gone#ephemeral" in n], names)
        self.stop(nsqd, persister)

    def test_nsqd_dat_written_at_startup(self) -> None:
        nsqd, persister = self.start()
        self.assertEqual(Path(self.data_path, "nsqd.dat").read_bytes(), b'{"topics":null,"version":"1.3.0"}')
        nsqd.get_topic("t")
        self.clock.advance(0)
        self.assertEqual([t.name for t in load_metadata(self.data_path).topics], ["t"])  # type: ignore[union-attr]
        self.stop(nsqd, persister)

    def check_messages_survive(self, **overrides: Any) -> None:
        nsqd, persister = self.start(**overrides)
        nsqd.get_topic("t").get_channel("other")
        consumer, _ = self.consume(nsqd, "t", "c", 0)
        bodies = [b"m%02d" % i for i in range(30)]
        self.publish(nsqd, "t", bodies)
        self.publish(nsqd, "t", [b"later"], defer=3600)
        consumer.command("RDY 9")
        nsqd.run_dispatch()
        self.clock.advance(0)
        taken = consumer.messages()
        self.assertEqual(len(taken), 9)
        consumer.command("RDY 0")
        finished, deferred, held = taken[:3], taken[3:6], taken[6:]
        for message in finished:
            consumer.command(f"FIN {message.id.decode()}")
        for message in deferred:
            consumer.command(f"REQ {message.id.decode()} 60000")
        channel = nsqd.topics["t"].channels["c"]
        self.assertEqual((len(channel.in_flight), len(channel.deferred)), (3, 4))
        self.stop(nsqd, persister)

        nsqd, persister = self.start(**overrides)
        self.assertEqual(nsqd.topics["t"].channels["c"].depth(), 30 - 3 + 1)
        self.assertEqual(nsqd.topics["t"].channels["other"].depth(), 31)
        seen = self.drain(nsqd, "t", "c")
        expected = {b for b in bodies if b not in {m.body for m in finished}} | {b"later"}
        self.assertEqual(set(seen), expected)
        for message in deferred + held:
            self.assertEqual(seen[message.body], 2, message.body)
        for body in expected - {m.body for m in deferred + held}:
            self.assertEqual(seen[body], 1, body)
        self.stop(nsqd, persister)

        # Finished messages stay finished across another restart; the other channel still has all.
        nsqd, persister = self.start(**overrides)
        self.assertEqual(nsqd.topics["t"].channels["c"].depth(), 0)
        self.assertEqual(set(self.drain(nsqd, "t", "other")), {*bodies, b"later"})
        self.stop(nsqd, persister)
        nsqd, persister = self.start(**overrides)
        self.assertEqual(nsqd.topics["t"].channels["other"].depth(), 0)
        self.stop(nsqd, persister)

    def test_messages_survive(self) -> None:
        self.check_messages_survive()

    def test_messages_survive_without_memory_queue(self) -> None:
        self.check_messages_survive(mem_queue_size=0)

    def test_messages_survive_across_files(self) -> None:
        self.check_messages_survive(mem_queue_size=4, max_bytes_per_file=120)

    def test_topic_backlog_survives(self) -> None:
        """A topic without channels keeps its messages across a restart, for its first channel."""
        for mem in (10000, 0):
            topic = f"backlog{mem}"
            nsqd, persister = self.start(mem_queue_size=mem)
            self.publish(nsqd, topic, [b"a", b"b", b"c"])
            self.stop(nsqd, persister)
            nsqd, persister = self.start(mem_queue_size=mem)
            self.assertEqual(nsqd.topics[topic].depth(), 3)
            nsqd.topics[topic].get_channel("c")
            self.assertEqual(self.drain(nsqd, topic, "c"), {b"a": 1, b"b": 1, b"c": 1})
            self.stop(nsqd, persister)

    def test_paused_topic_backlog_waits(self) -> None:
        nsqd, persister = self.start()
        topic = nsqd.get_topic("t")
        topic.get_channel("c")
        topic.pause()
        self.publish(nsqd, "t", [b"a", b"b"])
        self.stop(nsqd, persister)
        nsqd, persister = self.start()
        topic = nsqd.topics["t"]
        self.assertTrue(topic.paused)
        self.assertEqual((topic.depth(), topic.channels["c"].depth()), (2, 0))
        topic.unpause()
        self.assertEqual(self.drain(nsqd, "t", "c"), {b"a": 1, b"b": 1})
        self.stop(nsqd, persister)

    def test_disk_error_fails_publish_and_ping(self) -> None:
        """A failed disk write refuses the publish (E_PUB_FAILED) and turns /ping into 500 NOK."""
        nsqd, persister = self.start(mem_queue_size=0)
        nsqd.get_topic("t")
        self.clock.advance(0)
        shutil.rmtree(self.data_path)
        client = self.client(nsqd)
        client.command("PUB t", b"lost")
        [frame] = client.frames()
        self.assertTrue(frame.is_error)
        self.assertTrue(frame.data.startswith(b"E_PUB_FAILED PUB failed "), frame.data)
        self.assertIn(b"No such file or directory", frame.data)
        self.assertFalse(nsqd.is_healthy())
        ping = call(StubTreq(NSQDHTTP(nsqd).resource()), "GET", "/ping")
        self.assertEqual(ping.code, 500)
        self.assertEqual(ping.body, b"NOK - " + frame.data[len(b"E_PUB_FAILED PUB failed ") :])

        # Once the disk works again, so do publishes, and the health clears.
        os.makedirs(self.data_path)
        nsqd.get_topic("t").publish([b"kept"])
        self.clock.advance(0)
        self.assertTrue(nsqd.is_healthy(), nsqd.health())
        self.stop(nsqd, persister)
        nsqd, persister = self.start(mem_queue_size=0)
        nsqd.topics["t"].get_channel("c")
        self.assertEqual(self.drain(nsqd, "t", "c"), {b"kept": 1})
        self.stop(nsqd, persister)

    def test_every_loaded_channel_gets_the_backlog(self) -> None:
        """Loading creates all of a topic's channels before it hands on its waiting messages."""
        nsqd, persister = self.start()
        self.publish(nsqd, "t", [b"x", b"y", b"z"])
        self.stop(nsqd, persister)
        with open(os.path.join(self.data_path, "nsqd.dat"), "wb") as f:
            f.write(
                b'{"topics":[{"name":"t","paused":false,"channels":[{"name":"a","paused":false},'
                b'{"name":"b","paused":false}]}],"version":"1.3.0"}'
            )
        nsqd, persister = self.start()
        self.assertEqual({n: c.depth() for n, c in nsqd.topics["t"].channels.items()}, {"a": 3, "b": 3})
        self.stop(nsqd, persister)


class ServiceRestartTests(TestCase):
    """The service's startup and shutdown order on the real reactor (loopback listeners only)."""

    def service(self, data_path: str) -> NSQDService:
        from twisted.internet import reactor

        options = NSQDOptions(
            node_id=1,
            broadcast_address="testhost",
            tcp_address="127.0.0.1:0",
            http_address="127.0.0.1:0",
            https_address="",
            data_path=data_path,
        )
        return NSQDService(options, reactor)

    async def test_restart(self) -> None:
        data_path = self.mktemp()
        os.makedirs(data_path)
        first = self.service(data_path)
        first.startService()
        assert first.nsqd is not None
        self.assertTrue(os.path.exists(os.path.join(data_path, "nsqd.dat")))
        topic = first.nsqd.get_topic("t")
        topic.get_channel("c").pause()
        first.nsqd.persist_metadata()
        topic.publish([b"one", b"two"])
        await first.stopService()
        self.assertTrue(os.path.exists(os.path.join(data_path, "t:c.diskqueue.meta.dat")))

        second = self.service(data_path)
        second.startService()
        self.addCleanup(second.stopService)
        assert second.nsqd is not None
        channel = second.nsqd.topics["t"].channels["c"]
        self.assertTrue(channel.paused)
        self.assertEqual(channel.depth(), 2)

    async def test_corrupt_metadata_fails_startup(self) -> None:
        data_path = self.mktemp()
        os.makedirs(data_path)
        with open(os.path.join(data_path, "nsqd.dat"), "wb") as f:
            f.write(b"{not json")
        service = self.service(data_path)
        with self.assertRaises(StartupError) as caught:
            service.startService()
        self.assertIn("failed to load metadata - failed to parse metadata in", str(caught.exception))
        self.assertIsNone(service.tcp_listening_port)
        lock = DataPathLock(data_path)
        lock.acquire()
        lock.release()
