"""
nsqlookupd's registration database (spec 4.2): which nsqd nodes produce which topics and channels.

A plain object on an injected clock. Keys are L{Registration}s C{(category, key, subkey)}:
C{("client", "", "")} for every identified producer, C{("topic", T, "")} and C{("channel", T, C)}.
Each key maps producer ids (the remote address of the nsqd's TCP connection to lookupd) to a
L{Producer}: one record per key and producer, sharing the producer's L{PeerInfo}, so a tombstone
marks one producer for one topic only.

Rules, as in Go nsqlookupd 1.3.0:
  - removing a producer leaves its keys in place, even with no producers left (a stopped nsqd's
    topics stay listed until deleted over HTTP);
  - C{"*"} as a key or subkey in the C{find_*} queries matches every key or subkey;
  - lookups skip producers whose last IDENTIFY or PING is more than
    C{inactive_producer_timeout} seconds old, and C{/lookup} also skips producers tombstoned for
    the topic less than C{tombstone_lifetime} seconds ago.

One rule is ours: an C{#ephemeral} key is deleted as soon as a removal leaves it without
producers, whether the removal is an UNREGISTER or a closed connection. Go deletes it only on a
channel UNREGISTER and on a topic UNREGISTER of an ephemeral topic, so the ephemeral channels of an
nsqd that dies stay listed in Go for ever; an nsqd that reconnects registers them again anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import attrs
from twisted.internet.interfaces import IReactorTime

from twisted_nsq.wire.names import is_ephemeral

CLIENT = "client"
TOPIC = "topic"
CHANNEL = "channel"
#: Matches every key or subkey in L{RegistrationDB.find_registrations}/L{RegistrationDB.find_producers}.
WILDCARD = "*"


class Registration(NamedTuple):
    """One key of the database: C{category} is C{client}, C{topic} or C{channel}."""

    category: str
    key: str
    subkey: str

    def matches(self, category: str, key: str, subkey: str) -> bool:
        """Whether this key answers a query, C{"*"} matching any key or subkey."""
        return (
            self.category == category
            and (key == WILDCARD or self.key == key)
            and (subkey == WILDCARD or self.subkey == subkey)
        )


CLIENT_REGISTRATION = Registration(CLIENT, "", "")


@attrs.define(eq=False)
class PeerInfo:
    """
    What an nsqd told lookupd about itself in IDENTIFY, plus where it connected from.

    @ivar id: the producer's identity in the database: the remote address of its connection.
    @ivar last_update: clock time (seconds) of its last IDENTIFY or PING.
    """

    id: str
    remote_address: str
    hostname: str
    broadcast_address: str
    tcp_port: int
    http_port: int
    version: str
    last_update: float = 0.0

    @property
    def node(self) -> str:
        """How nsqadmin and C{/topic/tombstone} name this producer: C{broadcast_address:http_port}."""
        return f"{self.broadcast_address}:{self.http_port}"


@attrs.define(eq=False)
class Producer:
    """A producer's record under one key: its peer and whether it was tombstoned there (and when)."""

    peer: PeerInfo
    tombstoned: bool = False
    tombstoned_at: float | None = None


@attrs.frozen
class Node:
    """One line of C{/nodes}: an active producer, its topics and whether each is tombstoned."""

    peer: PeerInfo
    topics: list[str]
    tombstones: list[bool]


class RegistrationDB:
    """
    The registration database. Nothing here knows of sockets: the TCP protocol registers the
    producers, the HTTP API reads and edits the keys.
    """

    def __init__(
        self, clock: IReactorTime, inactive_producer_timeout: float = 300.0, tombstone_lifetime: float = 45.0
    ) -> None:
        self.clock = clock
        self.inactive_producer_timeout = inactive_producer_timeout
        self.tombstone_lifetime = tombstone_lifetime
        self._map: dict[Registration, dict[str, Producer]] = {}
        # Indexes over _map, kept in step with it: keys per category, channel names per topic and
        # the keys each producer is in (what a closed connection must leave).
        self._categories: dict[str, dict[Registration, None]] = {}
        self._channels: dict[str, dict[str, None]] = {}
        self._by_peer: dict[str, dict[Registration, None]] = {}

    # -- Go's primitives ------------------------------------------------------------------------

    def add_registration(self, registration: Registration) -> None:
        """Add a key (with no producers) unless it exists."""
        if registration not in self._map:
            self._map[registration] = {}
            self._categories.setdefault(registration.category, {})[registration] = None
            if registration.category == CHANNEL:
                self._channels.setdefault(registration.key, {})[registration.subkey] = None

    def add_producer(self, registration: Registration, peer: PeerInfo) -> bool:
        """
        Add C{peer} under a key (creating it); whether it was not there yet. An existing record
        is kept as it is, tombstone included.
        """
        self.add_registration(registration)
        producers = self._map[registration]
        if peer.id in producers:
            return False
        producers[peer.id] = Producer(peer)
        self._by_peer.setdefault(peer.id, {})[registration] = None
        return True

    def remove_producer(self, registration: Registration, peer_id: str) -> tuple[bool, int]:
        """
        Take a producer off a key, leaving the key; whether it was there, and how many producers
        the key has left (0 for a key that does not exist).
        """
        producers = self._map.get(registration)
        if producers is None:
            return False, 0
        removed = producers.pop(peer_id, None) is not None
        if removed:
            keys = self._by_peer[peer_id]
            del keys[registration]
            if not keys:
                del self._by_peer[peer_id]
        return removed, len(producers)

    def remove_registration(self, registration: Registration) -> None:
        """Delete a key and every producer record under it."""
        producers = self._map.pop(registration, None)
        if producers is None:
            return
        for peer_id in producers:
            keys = self._by_peer[peer_id]
            del keys[registration]
            if not keys:
                del self._by_peer[peer_id]
        del self._categories[registration.category][registration]
        if registration.category == CHANNEL:
            channels = self._channels[registration.key]
            del channels[registration.subkey]
            if not channels:
                del self._channels[registration.key]

    def find_registrations(self, category: str, key: str, subkey: str) -> list[Registration]:
        """The keys matching a query; C{"*"} as C{key} or C{subkey} matches anything."""
        if key != WILDCARD and subkey != WILDCARD:
            registration = Registration(category, key, subkey)
            return [registration] if registration in self._map else []
        if category == CHANNEL and key != WILDCARD:
            channels = self._channels.get(key, {})
            if subkey == WILDCARD:
                return [Registration(CHANNEL, key, channel) for channel in channels]
            return [Registration(CHANNEL, key, subkey)] if subkey in channels else []
        return [r for r in self._categories.get(category, {}) if r.matches(category, key, subkey)]

    def find_producers(self, category: str, key: str, subkey: str) -> list[Producer]:
        """
        The producer records under the keys matching a query. Under a wildcard a producer
        appears once, with the record of the first key it was found under (as in Go).
        """
        if key != WILDCARD and subkey != WILDCARD:
            return list(self._map.get(Registration(category, key, subkey), {}).values())
        seen: dict[str, Producer] = {}
        for registration in self.find_registrations(category, key, subkey):
            for peer_id, producer in self._map[registration].items():
                seen.setdefault(peer_id, producer)
        return list(seen.values())

    def lookup_registrations(self, peer_id: str) -> list[Registration]:
        """Every key a producer is registered under."""
        return list(self._by_peer.get(peer_id, ()))

    def producers(self, registration: Registration) -> list[Producer]:
        """The producer records under one key (none for a key that does not exist)."""
        return list(self._map.get(registration, {}).values())

    def registrations(self) -> list[Registration]:
        """Every key, producers or not."""
        return list(self._map)

    # -- time -----------------------------------------------------------------------------------

    def is_active(self, peer: PeerInfo) -> bool:
        """Whether a producer pinged (or identified) within C{inactive_producer_timeout}."""
        return self.clock.seconds() - peer.last_update <= self.inactive_producer_timeout

    def is_tombstoned(self, producer: Producer) -> bool:
        """Whether a record was tombstoned less than C{tombstone_lifetime} seconds ago."""
        if not producer.tombstoned or producer.tombstoned_at is None:
            return False
        return self.clock.seconds() - producer.tombstoned_at < self.tombstone_lifetime

    def active(self, producers: Iterable[Producer], hide_tombstoned: bool = True) -> list[Producer]:
        """The active producers among C{producers}, without the tombstoned ones if asked."""
        return [
            p for p in producers if self.is_active(p.peer) and not (hide_tombstoned and self.is_tombstoned(p))
        ]

    # -- what the TCP protocol does -------------------------------------------------------------

    def identify(self, peer: PeerInfo) -> bool:
        """An nsqd identified: stamp it active and add it under C{client}; whether it was new there."""
        peer.last_update = self.clock.seconds()
        return self.add_producer(CLIENT_REGISTRATION, peer)

    def ping(self, peer: PeerInfo) -> float:
        """An identified nsqd pinged: stamp it active; returns the seconds since its last update."""
        now = self.clock.seconds()
        since, peer.last_update = now - peer.last_update, now
        return since

    def register(self, peer: PeerInfo, topic: str, channel: str = "") -> list[Registration]:
        """
        REGISTER: add the producer under the channel key (when a channel is given) and the topic
        key; the keys it was not under before.
        """
        keys = [Registration(CHANNEL, topic, channel)] if channel else []
        keys.append(Registration(TOPIC, topic, ""))
        return [key for key in keys if self.add_producer(key, peer)]

    def unregister(self, peer: PeerInfo, topic: str, channel: str = "") -> list[Registration]:
        """
        UNREGISTER: take the producer off the channel key, or, without a channel, off all the
        topic's channel keys and the topic key; the keys it was removed from.

        An C{#ephemeral} key left without producers is deleted, even one the producer was not in.
        """
        if channel:
            keys = [Registration(CHANNEL, topic, channel)]
        else:
            keys = self.find_registrations(CHANNEL, topic, WILDCARD)
            keys.append(Registration(TOPIC, topic, ""))
        return self._remove(peer.id, keys, always_prune=True)

    def remove_peer(self, peer_id: str) -> list[Registration]:
        """A producer's connection closed: take it off every key; the keys it was removed from."""
        return self._remove(peer_id, self.lookup_registrations(peer_id), always_prune=False)

    def _remove(self, peer_id: str, keys: list[Registration], always_prune: bool) -> list[Registration]:
        removed_from = []
        for key in keys:
            removed, left = self.remove_producer(key, peer_id)
            if removed:
                removed_from.append(key)
            if left == 0 and (removed or always_prune) and _is_ephemeral_key(key):
                self.remove_registration(key)
        return removed_from

    # -- what the HTTP API does -----------------------------------------------------------------

    def topics(self) -> list[str]:
        """Every topic key's name."""
        return [r.key for r in self._categories.get(TOPIC, ())]

    def channels(self, topic: str) -> list[str]:
        """The channel names of a topic (of every topic for C{"*"})."""
        return [r.subkey for r in self.find_registrations(CHANNEL, topic, WILDCARD)]

    def lookup(self, topic: str) -> tuple[list[str], list[PeerInfo]] | None:
        """
        C{/lookup}: the topic's channels and its active, not tombstoned producers; C{None} when
        there is no topic key.
        """
        if not self.find_registrations(TOPIC, topic, ""):
            return None
        producers = self.active(self.find_producers(TOPIC, topic, ""))
        return self.channels(topic), [p.peer for p in producers]

    def nodes(self) -> list[Node]:
        """C{/nodes}: every active producer (tombstoned or not), with its topics and tombstones."""
        nodes = []
        for client in self.active(self.producers(CLIENT_REGISTRATION), hide_tombstoned=False):
            peer = client.peer
            topics = [r.key for r in self._by_peer.get(peer.id, ()) if r.category == TOPIC and not r.subkey]
            tombstones = []
            for topic in topics:
                producer = self._map[Registration(TOPIC, topic, "")].get(peer.id)
                tombstones.append(producer is not None and self.is_tombstoned(producer))
            nodes.append(Node(peer, topics, tombstones))
        return nodes

    def create_topic(self, topic: str) -> None:
        """Add the topic key (with no producers)."""
        self.add_registration(Registration(TOPIC, topic, ""))

    def delete_topic(self, topic: str) -> list[Registration]:
        """Delete the topic's channel keys, then its key (unknown topics are fine); the keys deleted."""
        deleted = self.find_registrations(CHANNEL, topic, WILDCARD)
        deleted += self.find_registrations(TOPIC, topic, "")
        for key in deleted:
            self.remove_registration(key)
        return deleted

    def create_channel(self, topic: str, channel: str) -> None:
        """Add the channel key and the topic key (with no producers)."""
        self.add_registration(Registration(CHANNEL, topic, channel))
        self.add_registration(Registration(TOPIC, topic, ""))

    def delete_channel(self, topic: str, channel: str) -> bool:
        """Delete the channel key; whether there was one."""
        keys = self.find_registrations(CHANNEL, topic, channel)
        for key in keys:
            self.remove_registration(key)
        return bool(keys)

    def tombstone(self, topic: str, node: str) -> int:
        """
        Tombstone the topic's producers named C{node} (C{broadcast_address:http_port}) for
        C{tombstone_lifetime}; how many records were marked.
        """
        now = self.clock.seconds()
        marked = 0
        for producer in self.find_producers(TOPIC, topic, ""):
            if producer.peer.node == node:
                producer.tombstoned, producer.tombstoned_at = True, now
                marked += 1
        return marked


def _is_ephemeral_key(registration: Registration) -> bool:
    if registration.category == CHANNEL:
        return is_ephemeral(registration.subkey)
    return registration.category == TOPIC and is_ephemeral(registration.key)
