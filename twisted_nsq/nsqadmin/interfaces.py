"""
The seam between nsqadmin's data collection and what presents it.

L{IClusterView} is what the JSON API (C{twisted_nsq.nsqadmin.api}) and the pages
(C{twisted_nsq.nsqadmin.pages}) read the cluster through. The real implementation
(C{twisted_nsq.nsqadmin.cluster.ClusterView}) fans HTTP calls out to nsqlookupd and nsqd with treq;
tests of the presenters give them a fake with canned answers.

Every reading method returns a L{Deferred} firing with exactly the JSON object nsqadmin's API
returns for it (spec section 5.3), C{"message"} included: C{""}, or C{"WARNING: ..."} when some
upstreams failed. Every action returns a L{Deferred} firing with that message. When every
upstream fails they fail with L{UpstreamError}; an unknown node fails with L{NodeNotFound}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

#: The JSON object of one answer.
JSONObject = dict[str, Any]


class UpstreamError(Exception):
    """Every upstream nsqd/nsqlookupd failed; the API answers C{502 UPSTREAM_ERROR: <str(self)>}."""


class NodeNotFound(Exception):
    """No producer has this C{broadcast_address:http_port}; the API answers C{404 NODE_NOT_FOUND}."""


class IClusterView(Interface):
    """A live view of one NSQ cluster, as nsqadmin shows it."""

    lookupd_http_addresses: list[str] = Attribute(
        "The nsqlookupd HTTP addresses in use (empty when nsqadmin reads nsqd directly)."
    )
    nsqd_http_addresses: list[str] = Attribute("The nsqd HTTP addresses given with --nsqd-http-address.")

    def topics() -> Deferred[JSONObject]:
        """C{{"topics": [sorted names], "message": ...}}."""

    def inactive_topics() -> Deferred[JSONObject]:
        """C{{"topics": {topic: [channels]}, "message": ...}}: topics (and their channels) lookupd knows
        with no producer (C{GET /api/topics?inactive=true}); C{{}} without lookupd."""

    def topic_summaries() -> Deferred[JSONObject]:
        """C{{"topics": [aggregated TopicStats, sorted by name], "message": ...}}: every topic of
        C{topics()} with its cluster-wide stats (no clients), read with one C{/stats} call per
        producer rather than one fan-out per topic (the topics page). A topic no producer has gets
        an empty aggregate (C{"node": ""}, zero counts)."""

    def topic(topic: str) -> Deferred[JSONObject]:
        """The aggregated TopicStats of C{GET /api/topics/:topic}."""

    def channel(topic: str, channel: str) -> Deferred[JSONObject]:
        """The aggregated ChannelStats of C{GET /api/topics/:topic/:channel} (with C{clients})."""

    def nodes() -> Deferred[JSONObject]:
        """C{{"nodes": [producer...], "message": ...}} of C{GET /api/nodes}."""

    def node(node: str) -> Deferred[JSONObject]:
        """C{GET /api/nodes/:node}; fails with L{NodeNotFound}."""

    def counter() -> Deferred[JSONObject]:
        """C{{"stats": {"topic:channel:node": {...}}, "message": ...}} of C{GET /api/counter}."""

    def create_topic_channel(topic: str, channel: str | None) -> Deferred[str]:
        """C{POST /api/topics}: register a topic (and a channel) in every lookupd (and every producer)."""

    def topic_action(topic: str, action: str) -> Deferred[str]:
        """C{pause}, C{unpause} or C{empty} on every nsqd producing C{topic}."""

    def channel_action(topic: str, channel: str, action: str) -> Deferred[str]:
        """C{pause}, C{unpause} or C{empty} the channel on every nsqd producing C{topic}."""

    def delete_topic(topic: str) -> Deferred[str]:
        """C{topic/delete} on every lookupd and every producing nsqd."""

    def delete_channel(topic: str, channel: str) -> Deferred[str]:
        """C{channel/delete} on every lookupd and every producing nsqd."""

    def tombstone_topic_producer(node: str, topic: str) -> Deferred[str]:
        """C{topic/tombstone} on every lookupd, then C{topic/delete} on that node."""
