"""
Tests for L{twisted_nsq.nsqlookupd.registration} (the database, on a L{Clock}), for the
L{NSQLookupd} core that holds it, and for L{twisted_nsq.nsqlookupd.options}.
"""

from __future__ import annotations

import socket

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq._cli import CONFIG_FLAG, VERSION_FLAG
from twisted_nsq.nsqlookupd.core import NSQLookupd
from twisted_nsq.nsqlookupd.options import (
    NSQLOOKUPD_FLAGS,
    NSQLookupdOptions,
    options_from_values,
    parse_nsqlookupd_args,
)
from twisted_nsq.nsqlookupd.registration import (
    CLIENT_REGISTRATION,
    PeerInfo,
    Registration,
    RegistrationDB,
)


def peer(port: int = 40000, address: str = "10.0.0.1", http_port: int = 4151) -> PeerInfo:
    """A producer connected from 127.0.0.1:C{port}, broadcasting C{address}."""
    remote = f"127.0.0.1:{port}"
    return PeerInfo(
        id=remote,
        remote_address=remote,
        hostname="host",
        broadcast_address=address,
        tcp_port=4150,
        http_port=http_port,
        version="1.3.0",
    )


def T(topic: str) -> Registration:
    return Registration("topic", topic, "")


def C(topic: str, channel: str) -> Registration:
    return Registration("channel", topic, channel)


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.db = RegistrationDB(self.clock, inactive_producer_timeout=300.0, tombstone_lifetime=45.0)

    def identified(self, port: int = 40000, **kwargs: object) -> PeerInfo:
        p = peer(port, **kwargs)  # type: ignore[arg-type]
        self.assertTrue(self.db.identify(p))
        return p

    def lookup_ids(self, topic: str) -> list[str]:
        found = self.db.lookup(topic)
        assert found is not None
        return [p.id for p in found[1]]


class PrimitiveTests(Base):
    """Go's RegistrationDB operations, wildcards included."""

    def test_add_producer_once(self) -> None:
        p = peer()
        self.assertTrue(self.db.add_producer(T("t"), p))
        self.assertFalse(self.db.add_producer(T("t"), p))
        self.assertEqual([x.peer for x in self.db.producers(T("t"))], [p])

    def test_add_producer_keeps_the_existing_record(self) -> None:
        p = peer()
        self.db.add_producer(T("t"), p)
        self.db.tombstone("t", p.node)
        self.db.add_producer(T("t"), p)
        self.assertTrue(self.db.producers(T("t"))[0].tombstoned)

    def test_remove_producer_leaves_the_key(self) -> None:
        p, q = peer(1), peer(2)
        self.db.add_producer(T("t"), p)
        self.db.add_producer(T("t"), q)
        self.assertEqual(self.db.remove_producer(T("t"), p.id), (True, 1))
        self.assertEqual(self.db.remove_producer(T("t"), p.id), (False, 1))
        self.assertEqual(self.db.remove_producer(T("t"), q.id), (True, 0))
        self.assertEqual(self.db.find_registrations("topic", "t", ""), [T("t")])
        self.assertEqual(self.db.remove_producer(T("missing"), p.id), (False, 0))
        self.assertEqual(self.db.lookup_registrations(p.id), [])

    def test_remove_registration(self) -> None:
        p = peer()
        self.db.add_producer(C("t", "c"), p)
        self.db.add_producer(T("t"), p)
        self.db.remove_registration(C("t", "c"))
        self.db.remove_registration(C("t", "c"))
        self.assertEqual(self.db.registrations(), [T("t")])
        self.assertEqual(self.db.lookup_registrations(p.id), [T("t")])
        self.assertEqual(self.db.channels("t"), [])

    def test_find_registrations(self) -> None:
        for key in (T("a"), T("b"), C("a", "x"), C("a", "y"), C("b", "x")):
            self.db.add_registration(key)
        self.assertEqual(self.db.find_registrations("topic", "a", ""), [T("a")])
        self.assertEqual(self.db.find_registrations("topic", "z", ""), [])
        self.assertEqual(self.db.find_registrations("topic", "*", ""), [T("a"), T("b")])
        self.assertEqual(self.db.find_registrations("channel", "a", "*"), [C("a", "x"), C("a", "y")])
        self.assertEqual(self.db.find_registrations("channel", "a", "y"), [C("a", "y")])
        self.assertEqual(self.db.find_registrations("channel", "*", "x"), [C("a", "x"), C("b", "x")])
        self.assertEqual(len(self.db.find_registrations("channel", "*", "*")), 3)
        self.assertEqual(self.db.find_registrations("channel", "z", "*"), [])
        self.assertEqual(self.db.find_registrations("client", "*", "*"), [])

    def test_find_producers_wildcard_lists_each_producer_once(self) -> None:
        p, q = peer(1), peer(2)
        for key in (T("a"), T("b")):
            self.db.add_producer(key, p)
        self.db.add_producer(T("b"), q)
        found = self.db.find_producers("topic", "*", "")
        self.assertEqual([x.peer for x in found], [p, q])
        # The record is the first key's, as Go's FindProducers keeps the first it meets.
        self.assertIs(found[0], self.db.producers(T("a"))[0])
        self.assertEqual(self.db.find_producers("topic", "missing", ""), [])

    def test_lookup_registrations(self) -> None:
        p = self.identified()
        self.db.register(p, "t", "c")
        self.assertEqual(self.db.lookup_registrations(p.id), [CLIENT_REGISTRATION, C("t", "c"), T("t")])
        self.assertEqual(self.db.lookup_registrations("nobody"), [])


class ProtocolOperationTests(Base):
    """IDENTIFY, PING, REGISTER, UNREGISTER and closed connections."""

    def test_identify_adds_client_and_stamps(self) -> None:
        p = self.identified()
        self.assertEqual(p.last_update, 1000)
        self.assertEqual([x.peer for x in self.db.producers(CLIENT_REGISTRATION)], [p])
        self.assertFalse(self.db.identify(p))

    def test_ping_stamps(self) -> None:
        p = self.identified()
        self.clock.advance(15)
        self.assertEqual(self.db.ping(p), 15)
        self.assertEqual(p.last_update, 1015)

    def test_register_channel_and_topic(self) -> None:
        p = self.identified()
        self.assertEqual(self.db.register(p, "t", "c"), [C("t", "c"), T("t")])
        self.assertEqual(self.db.register(p, "t", "c"), [])
        self.assertEqual(self.db.register(p, "t"), [])
        self.assertEqual(self.db.register(p, "u"), [T("u")])
        self.assertEqual(self.db.topics(), ["t", "u"])
        self.assertEqual(self.db.channels("t"), ["c"])

    def test_unregister_channel_leaves_key(self) -> None:
        p = self.identified()
        self.db.register(p, "t", "c")
        self.assertEqual(self.db.unregister(p, "t", "c"), [C("t", "c")])
        self.assertEqual(self.db.channels("t"), ["c"])
        self.assertEqual(self.db.producers(C("t", "c")), [])
        self.assertEqual(self.lookup_ids("t"), [p.id])

    def test_unregister_topic_removes_from_its_channels(self) -> None:
        p, q = self.identified(1), self.identified(2)
        self.db.register(p, "t", "a")
        self.db.register(p, "t", "b")
        self.db.register(q, "t", "a")
        self.assertEqual(self.db.unregister(p, "t"), [C("t", "a"), C("t", "b"), T("t")])
        self.assertEqual([x.peer for x in self.db.producers(C("t", "a"))], [q])
        self.assertEqual(self.db.producers(C("t", "b")), [])
        self.assertEqual(self.db.channels("t"), ["a", "b"])
        self.assertEqual(self.lookup_ids("t"), [q.id])

    def test_unregister_unknown_is_harmless(self) -> None:
        p = self.identified()
        self.assertEqual(self.db.unregister(p, "t", "c"), [])
        self.assertEqual(self.db.unregister(p, "t"), [])
        self.assertEqual(self.db.registrations(), [CLIENT_REGISTRATION])

    def test_ephemeral_channel_deleted_with_last_producer(self) -> None:
        p, q = self.identified(1), self.identified(2)
        self.db.register(p, "t", "c#ephemeral")
        self.db.register(q, "t", "c#ephemeral")
        self.db.unregister(p, "t", "c#ephemeral")
        self.assertEqual(self.db.channels("t"), ["c#ephemeral"])
        self.db.unregister(q, "t", "c#ephemeral")
        self.assertEqual(self.db.channels("t"), [])
        self.assertEqual(self.db.topics(), ["t"])

    def test_ephemeral_channel_without_producers_deleted_by_any_unregister(self) -> None:
        p = self.identified()
        self.db.create_channel("t", "c#ephemeral")
        self.assertEqual(self.db.unregister(p, "t", "c#ephemeral"), [])
        self.assertEqual(self.db.channels("t"), [])

    def test_ephemeral_topic_deleted_with_last_producer(self) -> None:
        p, q = self.identified(1), self.identified(2)
        self.db.register(p, "t#ephemeral", "c")
        self.db.register(q, "t#ephemeral")
        self.db.unregister(p, "t#ephemeral")
        self.assertEqual(self.db.topics(), ["t#ephemeral"])
        self.db.unregister(q, "t#ephemeral")
        self.assertEqual(self.db.topics(), [])
        # Its non-ephemeral channel key stays, as in Go.
        self.assertEqual(self.db.channels("t#ephemeral"), ["c"])
        self.assertIsNone(self.db.lookup("t#ephemeral"))

    def test_disconnect_removes_every_registration(self) -> None:
        p, q = self.identified(1), self.identified(2)
        self.db.register(p, "t", "c")
        self.db.register(p, "u")
        self.db.register(q, "t")
        self.assertEqual(self.db.remove_peer(p.id), [CLIENT_REGISTRATION, C("t", "c"), T("t"), T("u")])
        self.assertEqual(self.db.lookup_registrations(p.id), [])
        # Keys stay listed, even without producers.
        self.assertEqual(self.db.topics(), ["t", "u"])
        self.assertEqual(self.db.channels("t"), ["c"])
        self.assertEqual(self.lookup_ids("t"), [q.id])
        self.assertEqual(self.lookup_ids("u"), [])
        self.assertEqual([n.peer for n in self.db.nodes()], [q])
        self.assertEqual(self.db.remove_peer(p.id), [])

    def test_disconnect_deletes_ephemeral_keys_left_empty(self) -> None:
        p, q = self.identified(1), self.identified(2)
        self.db.register(p, "t", "e#ephemeral")
        self.db.register(p, "x#ephemeral", "c")
        self.db.register(p, "y#ephemeral")
        self.db.register(q, "y#ephemeral")
        self.db.remove_peer(p.id)
        self.assertEqual(self.db.topics(), ["t", "y#ephemeral"])
        self.assertEqual(self.db.channels("t"), [])
        self.assertEqual(self.db.channels("x#ephemeral"), ["c"])

    def test_disconnect_keeps_ephemeral_key_it_was_not_in(self) -> None:
        p = self.identified()
        self.db.create_channel("t", "e#ephemeral")
        self.db.remove_peer(p.id)
        self.assertEqual(self.db.channels("t"), ["e#ephemeral"])


class InactivityTests(Base):
    """--inactive-producer-timeout: /lookup and /nodes hide producers that stopped pinging."""

    def test_lookup_and_nodes_hide_inactive_producers(self) -> None:
        p, q = self.identified(1), self.identified(2)
        self.db.register(p, "t")
        self.db.register(q, "t")
        self.clock.advance(200)
        self.db.ping(q)
        self.clock.advance(100)
        # Exactly the timeout is still active (Go hides only "older than").
        self.assertEqual(self.lookup_ids("t"), [p.id, q.id])
        self.clock.advance(0.001)
        self.assertEqual(self.lookup_ids("t"), [q.id])
        self.assertEqual([n.peer for n in self.db.nodes()], [q])
        # Still registered: a later PING brings it back.
        self.db.ping(p)
        self.assertEqual(self.lookup_ids("t"), [p.id, q.id])

    def test_inactive_producer_keys_remain(self) -> None:
        p = self.identified()
        self.db.register(p, "t", "c")
        self.clock.advance(301)
        self.assertEqual(self.db.lookup("t"), (["c"], []))
        self.assertEqual(self.db.topics(), ["t"])


class TombstoneTests(Base):
    """--tombstone-lifetime and /topic/tombstone."""

    def test_tombstone_hides_from_lookup_only(self) -> None:
        p = self.identified(1, address="a", http_port=4151)
        q = self.identified(2, address="b", http_port=4151)
        for x in (p, q):
            self.db.register(x, "t")
            self.db.register(x, "u")
        self.assertEqual(self.db.tombstone("t", "a:4151"), 1)
        self.assertEqual(self.lookup_ids("t"), [q.id])
        self.assertEqual(self.lookup_ids("u"), [p.id, q.id])
        nodes = self.db.nodes()
        self.assertEqual(
            [(n.peer, n.topics, n.tombstones) for n in nodes],
            [(p, ["t", "u"], [True, False]), (q, ["t", "u"], [False, False])],
        )

    def test_tombstone_expires(self) -> None:
        p = self.identified(address="a")
        self.db.register(p, "t")
        self.db.tombstone("t", "a:4151")
        self.clock.advance(44.999)
        self.assertEqual(self.lookup_ids("t"), [])
        self.clock.advance(0.001)
        self.assertEqual(self.lookup_ids("t"), [p.id])
        self.assertEqual(self.db.nodes()[0].tombstones, [False])
        record = self.db.producers(T("t"))[0]
        self.assertTrue(record.tombstoned)
        self.assertEqual(record.tombstoned_at, 1000)

    def test_tombstone_matches_address_and_http_port(self) -> None:
        p = self.identified(address="a", http_port=4151)
        self.db.register(p, "t")
        self.assertEqual(self.db.tombstone("t", "a:4152"), 0)
        self.assertEqual(self.db.tombstone("t", "b:4151"), 0)
        self.assertEqual(self.db.tombstone("missing", "a:4151"), 0)
        self.assertEqual(self.lookup_ids("t"), [p.id])

    def test_unregister_clears_tombstone(self) -> None:
        p = self.identified(address="a")
        self.db.register(p, "t")
        self.db.tombstone("t", "a:4151")
        self.db.unregister(p, "t")
        self.db.register(p, "t")
        self.assertEqual(self.lookup_ids("t"), [p.id])

    def test_reregister_keeps_tombstone(self) -> None:
        p = self.identified(address="a")
        self.db.register(p, "t")
        self.db.tombstone("t", "a:4151")
        self.db.register(p, "t")
        self.assertEqual(self.lookup_ids("t"), [])


class HTTPOperationTests(Base):
    """What the HTTP API does to keys."""

    def test_create_topic(self) -> None:
        self.db.create_topic("t")
        self.db.create_topic("t")
        self.assertEqual(self.db.topics(), ["t"])
        self.assertEqual(self.db.lookup("t"), ([], []))

    def test_create_channel_adds_topic(self) -> None:
        self.db.create_channel("t", "c")
        self.assertEqual(self.db.registrations(), [C("t", "c"), T("t")])

    def test_delete_topic(self) -> None:
        p = self.identified()
        self.db.register(p, "t", "a")
        self.db.register(p, "t", "b")
        self.db.register(p, "u", "a")
        self.assertEqual(self.db.delete_topic("t"), [C("t", "a"), C("t", "b"), T("t")])
        self.assertEqual(self.db.topics(), ["u"])
        self.assertEqual(self.db.lookup_registrations(p.id), [CLIENT_REGISTRATION, C("u", "a"), T("u")])
        self.assertEqual(self.db.delete_topic("t"), [])

    def test_delete_channel(self) -> None:
        self.db.create_channel("t", "c")
        self.assertTrue(self.db.delete_channel("t", "c"))
        self.assertFalse(self.db.delete_channel("t", "c"))
        self.assertEqual(self.db.topics(), ["t"])

    def test_wildcard_topic(self) -> None:
        # Go's HTTP handlers do not validate /channels, /lookup or /topic/delete topics, so "*"
        # reaches the wildcard queries.
        self.db.create_channel("a", "x")
        self.db.create_channel("b", "y")
        self.assertEqual(self.db.channels("*"), ["x", "y"])
        self.assertEqual(self.db.lookup("*"), (["x", "y"], []))
        self.db.delete_topic("*")
        self.assertEqual(self.db.registrations(), [])


class ModelTests(SynchronousTestCase):
    """Whatever happens, the indexes agree with a plain model of the keys."""

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(
                    ["register", "unregister", "close", "create", "delete_topic", "delete_channel"]
                ),
                st.integers(1, 3),
                st.sampled_from(["t", "u#ephemeral"]),
                st.sampled_from(["", "c", "e#ephemeral"]),
            ),
            max_size=40,
        )
    )
    def test_indexes_agree(self, steps: list[tuple[str, int, str, str]]) -> None:
        clock = Clock()
        db = RegistrationDB(clock)
        peers = {n: peer(n) for n in (1, 2, 3)}
        identified: set[int] = set()
        for action, n, topic, channel in steps:
            p = peers[n]
            if action in ("register", "unregister") and n not in identified:
                db.identify(p)
                identified.add(n)
            if action == "register":
                db.register(p, topic, channel)
            elif action == "unregister":
                db.unregister(p, topic, channel)
            elif action == "close":
                db.remove_peer(p.id)
                identified.discard(n)
            elif action == "create" and channel:
                db.create_channel(topic, channel)
            elif action == "create":
                db.create_topic(topic)
            elif action == "delete_topic":
                db.delete_topic(topic)
            elif channel:
                db.delete_channel(topic, channel)
        keys = db.registrations()
        for key in keys:
            for producer in db.producers(key):
                self.assertIn(key, db.lookup_registrations(producer.peer.id))
        for p in peers.values():
            for key in db.lookup_registrations(p.id):
                self.assertIn(p, [x.peer for x in db.producers(key)])
        self.assertEqual(db.topics(), [k.key for k in keys if k.category == "topic"])
        for topic in ("t", "u#ephemeral"):
            self.assertEqual(
                db.channels(topic), [k.subkey for k in keys if k.category == "channel" and k.key == topic]
            )
        for n in set(peers) - identified:
            self.assertEqual(db.lookup_registrations(peers[n].id), [])


class CoreTests(SynchronousTestCase):
    def test_core(self) -> None:
        clock = Clock()
        clock.advance(5)
        options = NSQLookupdOptions(broadcast_address="b", inactive_producer_timeout=10, tombstone_lifetime=2)
        lookupd = NSQLookupd(options, clock, hostname=lambda: "h")
        self.assertIs(lookupd.options, options)
        self.assertIs(lookupd.clock, clock)
        self.assertEqual((lookupd.tcp_port, lookupd.http_port, lookupd.start_time), (0, 0, 5))
        self.assertEqual(lookupd.hostname(), "h")
        self.assertEqual((lookupd.db.inactive_producer_timeout, lookupd.db.tombstone_lifetime), (10, 2))
        self.assertIs(lookupd.db.clock, clock)

    def test_default_hostname(self) -> None:
        lookupd = NSQLookupd(NSQLookupdOptions(), Clock())
        self.assertEqual(lookupd.hostname(), socket.gethostname())


class OptionsTests(SynchronousTestCase):
    def test_go_defaults(self) -> None:
        options = NSQLookupdOptions()
        self.assertEqual(
            (
                options.log_level,
                options.log_prefix,
                options.verbose,
                options.tcp_address,
                options.http_address,
                options.broadcast_address,
                options.inactive_producer_timeout,
                options.tombstone_lifetime,
            ),
            (
                "info",
                "[nsqlookupd] ",
                False,
                "0.0.0.0:4160",
                "0.0.0.0:4161",
                socket.gethostname(),
                300.0,
                45.0,
            ),
        )
        options.validate()

    def test_flags(self) -> None:
        self.assertEqual(
            [spec.name for spec in NSQLOOKUPD_FLAGS],
            [
                VERSION_FLAG,
                CONFIG_FLAG,
                "log-level",
                "log-prefix",
                "verbose",
                "tcp-address",
                "http-address",
                "broadcast-address",
                "inactive-producer-timeout",
                "tombstone-lifetime",
            ],
        )

    def test_parse(self) -> None:
        options = parse_nsqlookupd_args(
            [
                "-tcp-address=127.0.0.1:0",
                "--http-address",
                ":0",
                "--broadcast-address=lookupd.local",
                "-inactive-producer-timeout",
                "1m30s",
                "--tombstone-lifetime=10s",
                "--log-level=WARN",
                "--verbose",
            ]
        )
        self.assertEqual(
            options,
            NSQLookupdOptions(
                log_level="warn",
                verbose=True,
                tcp_address="127.0.0.1:0",
                http_address=":0",
                broadcast_address="lookupd.local",
                inactive_producer_timeout=90.0,
                tombstone_lifetime=10.0,
            ),
        )

    def test_config_file(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('tombstone_lifetime = "5s"\nbroadcast_address = "from-file"\ntcp_address = "x:1"\n')
        options = parse_nsqlookupd_args(["--config", path, "--tcp-address=y:2"])
        self.assertEqual(
            (options.tombstone_lifetime, options.broadcast_address, options.tcp_address),
            (5.0, "from-file", "y:2"),
        )

    def test_options_from_values_ignores_non_settings(self) -> None:
        options = options_from_values({"version": False, "config": "", "tombstone_lifetime": 1.0})
        self.assertEqual(options.tombstone_lifetime, 1.0)

    def test_validate(self) -> None:
        with self.assertRaisesRegex(ValueError, "--log-level"):
            NSQLookupdOptions(log_level="loud").validate()
        with self.assertRaisesRegex(ValueError, "--tombstone-lifetime must not be negative"):
            NSQLookupdOptions(tombstone_lifetime=-1).validate()
        with self.assertRaisesRegex(ValueError, "--inactive-producer-timeout must not be negative"):
            NSQLookupdOptions(inactive_producer_timeout=-1).validate()
