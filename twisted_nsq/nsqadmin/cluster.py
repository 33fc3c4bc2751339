"""
L{ClusterView}: nsqadmin's live view of an NSQ cluster, built by fanning HTTP calls out to
nsqlookupd and nsqd (spec section 5.4) through an injected treq-like client.

Where the data comes from:

  - producers: C{GET /nodes} on every lookupd, merged by C{broadcast_address:http_port}; or,
    with C{--nsqd-http-address}, C{GET /info} and C{/stats?format=json&include_clients=false}
    on each nsqd;
  - a topic's producers: C{GET /lookup?topic=} on every lookupd, or C{/stats?topic=} on each nsqd;
  - stats: C{GET /stats?format=json[&topic=][&channel=][&include_clients=false]} on every
    producer, all at once.

Every step that queries several upstreams tolerates some of them failing: their errors become
the C{"WARNING: ..."} message of the answer (Go's text: one step's errors joined by newlines,
steps joined by C{"; "}). When every upstream of a step fails, the answer fails with
L{UpstreamError} (C{"failed to query any nsqd: ..."}).

JSON objects keep Go nsqadmin's shapes and key order (C{clusterinfo.TopicStats},
C{ChannelStats}, C{ClientStats}, C{Producer}); lists are C{[]} where Go would write C{null}.
"""

from __future__ import annotations

import http
import json
import re
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import quote_plus

import attrs
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_nsq._httputil import go_number
from twisted_nsq.nsqadmin.interfaces import IClusterView, JSONObject, NodeNotFound, UpstreamError

__all__ = ["ACTIONS", "ClusterView", "HTTPClient", "compare_versions", "join_host_port"]

_log = Logger()

_T = TypeVar("_T")

#: What C{POST /api/topics/:topic[/:channel]} may ask for.
ACTIONS = ("pause", "unpause", "empty")


class HTTPClient(Protocol):
    """
    The slice of treq's API the view uses: C{treq} itself (with a pool and timeouts), or
    C{treq.testing.StubTreq} in tests.
    """

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]: ...

    def post(self, url: str, data: Any = None, **kwargs: Any) -> Deferred[Any]: ...

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]: ...

    def content(self, response: Any) -> Deferred[bytes]: ...

    def json_content(self, response: Any, **kwargs: Any) -> Deferred[Any]: ...


class _CallFailed(Exception):
    """One upstream call failed; C{str()} is Go's error text for it."""


class _AllFailed(Exception):
    """Every upstream of one step failed; C{str()} is Go's C{"failed to query any ...: ..."}."""


# -- small helpers ------------------------------------------------------------------------------


def join_host_port(host: str, port: int) -> str:
    """Go's C{net.JoinHostPort}: C{host:port}, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?"
)

_Version = tuple[int, int, int, tuple[tuple[int, int | str], ...] | None]


def _parse_version(text: str) -> _Version:
    """A semantic version (build metadata ignored); C{0.0.0} when it does not parse, as Go does."""
    match = _SEMVER.fullmatch(text)
    if match is None:
        return (0, 0, 0, None)
    major, minor, patch, pre = match.groups()
    identifiers: tuple[tuple[int, int | str], ...] | None = None
    if pre is not None:
        # Numeric identifiers sort before alphanumeric ones, and numerically among themselves.
        identifiers = tuple((0, int(part)) if part.isdigit() else (1, part) for part in pre.split("."))
    return (int(major), int(minor), int(patch), identifiers)


def compare_versions(a: str, b: str) -> int:
    """Compare two versions by semantic versioning precedence: negative, zero or positive."""
    va, vb = _parse_version(a), _parse_version(b)
    if va[:3] != vb[:3]:
        return -1 if va[:3] < vb[:3] else 1
    pa, pb = va[3], vb[3]
    if pa == pb:
        return 0
    # A pre-release is lower than the release itself.
    if pa is None:
        return 1
    if pb is None:
        return -1
    return -1 if pa < pb else 1


def _go_quote(body: bytes) -> str:
    return json.dumps(body.decode("utf-8", "replace"), ensure_ascii=False)


def _status_text(code: int) -> str:
    try:
        return f"{code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _number(raw: dict[str, Any], key: str) -> int:
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    return value if isinstance(value, str) else ""


def _list(raw: dict[str, Any], key: str) -> list[Any]:
    value = raw.get(key)
    return value if isinstance(value, list) else []


def _warning(messages: Sequence[str]) -> str:
    """Go's C{maybeWarnMsg}."""
    return "WARNING: " + "; ".join(messages) if messages else ""


# -- producers ----------------------------------------------------------------------------------


@attrs.define
class _Producer:
    """An nsqd as nsqadmin knows it (Go's C{clusterinfo.Producer})."""

    remote_address: str
    hostname: str
    broadcast_address: str
    tcp_port: int
    http_port: int
    version: str
    topology_zone: str = ""
    topology_region: str = ""
    topics: list[tuple[str, bool]] = attrs.field(factory=list)
    remote_addresses: list[str] = attrs.field(factory=list)
    out_of_date: bool = False

    @property
    def http_address(self) -> str:
        return join_host_port(self.broadcast_address, self.http_port)

    @classmethod
    def from_lookupd(cls, raw: dict[str, Any]) -> _Producer:
        topics = [name for name in _list(raw, "topics") if isinstance(name, str)]
        tombstones = _list(raw, "tombstones")
        return cls(
            remote_address=_text(raw, "remote_address"),
            hostname=_text(raw, "hostname"),
            broadcast_address=_text(raw, "broadcast_address"),
            tcp_port=_number(raw, "tcp_port"),
            http_port=_number(raw, "http_port"),
            version=_text(raw, "version"),
            topology_zone=_text(raw, "topology_zone"),
            topology_region=_text(raw, "topology_region"),
            topics=[
                (name, bool(tombstones[i]) if i < len(tombstones) else False) for i, name in enumerate(topics)
            ],
        )

    def to_json(self) -> JSONObject:
        entry: JSONObject = {
            "remote_addresses": list(self.remote_addresses),
            "remote_address": self.remote_address,
            "hostname": self.hostname,
            "broadcast_address": self.broadcast_address,
            "tcp_port": self.tcp_port,
            "http_port": self.http_port,
            "version": self.version,
        }
        if self.topology_zone:
            entry["topology_zone"] = self.topology_zone
        if self.topology_region:
            entry["topology_region"] = self.topology_region
        entry["topics"] = [{"topic": name, "tombstoned": tombstoned} for name, tombstoned in self.topics]
        entry["out_of_date"] = self.out_of_date
        return entry


def _mark_out_of_date(producers: Iterable[_Producer]) -> None:
    producers = list(producers)
    if not producers:
        return
    newest = producers[0].version
    for producer in producers[1:]:
        if compare_versions(producer.version, newest) > 0:
            newest = producer.version
    for producer in producers:
        producer.out_of_date = compare_versions(producer.version, newest) < 0


def _topic_names_of(producers: Iterable[_Producer]) -> list[str]:
    """Every topic the producers have, sorted."""
    return sorted({name for producer in producers for name, _ in producer.topics})


# -- stats rows ---------------------------------------------------------------------------------

_MSG_COUNTS = ("zone_local_msg_count", "region_local_msg_count", "global_msg_count")


def _e2e_node(raw: object) -> JSONObject:
    """One nsqd's latency object as Go reads it: each percentile gains min/max/average/count."""
    raw = raw if isinstance(raw, dict) else {}
    count = _number(raw, "count")
    percentiles = []
    for item in _list(raw, "percentiles"):
        if not isinstance(item, dict):
            continue
        value = item.get("value", 0)
        percentiles.append(
            {
                "average": go_number(value),
                "count": count,
                "max": go_number(value),
                "min": go_number(value),
                "quantile": go_number(item.get("quantile", 0)),
                "value": go_number(value),
            }
        )
    return {"count": count, "percentiles": percentiles, "topic": "", "channel": "", "host": ""}


class _E2EAggregate:
    """Go's C{E2eProcessingLatencyAggregate.Add}: per quantile, max, min, summed count, running mean."""

    def __init__(self, topic: str, channel: str, host: str) -> None:
        self.topic, self.channel, self.host = topic, channel, host
        self.count = 0
        self._by_quantile: dict[float, dict[str, float]] = {}

    def add(self, node: JSONObject) -> None:
        self.host = "*"
        self.count += node["count"]
        for value in node["percentiles"]:
            entry = self._by_quantile.get(value["quantile"])
            if entry is None:
                entry = self._by_quantile[value["quantile"]] = {
                    "average": 0.0,
                    "count": 0.0,
                    "max": value["max"],
                    "min": value["min"],
                }
            entry["max"] = max(value["max"], entry["max"])
            entry["min"] = min(value["min"], entry["min"])
            entry["count"] += value["count"]
            if entry["count"] == 0:
                entry["average"] = 0.0
                continue
            delta = value["average"] - entry["average"]
            entry["average"] += delta * value["count"] / entry["count"]

    def to_json(self) -> JSONObject:
        percentiles = [
            {
                "average": go_number(entry["average"]),
                "count": go_number(entry["count"]),
                "max": go_number(entry["max"]),
                "min": go_number(entry["min"]),
                "quantile": go_number(quantile),
            }
            for quantile, entry in self._by_quantile.items()
        ]
        return {
            "count": self.count,
            "percentiles": percentiles,
            "topic": self.topic,
            "channel": self.channel,
            "host": self.host,
        }


def _client_row(raw: dict[str, Any], node: str, producer: _Producer, now: int) -> JSONObject:
    connect_ts = _number(raw, "connect_ts")
    row: JSONObject = {
        "node": node,
        "remote_address": _text(raw, "remote_address"),
        "version": _text(raw, "version"),
        "client_id": _text(raw, "client_id"),
        "hostname": _text(raw, "hostname"),
        "user_agent": _text(raw, "user_agent"),
        "connect_ts": connect_ts,
        # Go: time.Now().Truncate(time.Second).Sub(time.Unix(connect_ts, 0)), in nanoseconds.
        "connected": (now - connect_ts) * 1_000_000_000,
        "in_flight_count": _number(raw, "in_flight_count"),
        "ready_count": _number(raw, "ready_count"),
        "finish_count": _number(raw, "finish_count"),
        "requeue_count": _number(raw, "requeue_count"),
        "message_count": _number(raw, "message_count"),
        "sample_rate": _number(raw, "sample_rate"),
        "deflate": bool(raw.get("deflate")),
        "snappy": bool(raw.get("snappy")),
        "authed": bool(raw.get("authed")),
        "auth_identity": _text(raw, "auth_identity"),
        "auth_identity_url": _text(raw, "auth_identity_url"),
    }
    for key, value in (
        ("node_topology_region", producer.topology_region),
        ("node_topology_zone", producer.topology_zone),
        ("topology_region", _text(raw, "topology_region")),
        ("topology_zone", _text(raw, "topology_zone")),
    ):
        if value:
            row[key] = value
    row["tls"] = bool(raw.get("tls"))
    row["tls_cipher_suite"] = _text(raw, "tls_cipher_suite")
    row["tls_version"] = _text(raw, "tls_version")
    row["tls_negotiated_protocol"] = _text(raw, "tls_negotiated_protocol")
    row["tls_negotiated_protocol_is_mutual"] = bool(raw.get("tls_negotiated_protocol_is_mutual"))
    return row


def _channel_row(raw: dict[str, Any], topic: str, producer: _Producer, now: int) -> JSONObject:
    node = producer.http_address
    depth, backend_depth = _number(raw, "depth"), _number(raw, "backend_depth")
    row: JSONObject = {
        "node": node,
        "hostname": producer.hostname,
        "topic_name": topic,
        "channel_name": _text(raw, "channel_name"),
        "depth": depth,
        "memory_depth": depth - backend_depth,
        "backend_depth": backend_depth,
        "in_flight_count": _number(raw, "in_flight_count"),
        "deferred_count": _number(raw, "deferred_count"),
        "requeue_count": _number(raw, "requeue_count"),
        "timeout_count": _number(raw, "timeout_count"),
        "message_count": _number(raw, "message_count"),
    }
    for key in ("delivery_msg_count", *_MSG_COUNTS):
        if _number(raw, key):
            row[key] = _number(raw, key)
    row["client_count"] = _number(raw, "client_count")
    row["nodes"] = []
    row["clients"] = [
        _client_row(client, node, producer, now)
        for client in _list(raw, "clients")
        if isinstance(client, dict)
    ]
    row["paused"] = bool(raw.get("paused"))
    if "ordered" in raw:
        # A twisted-nsq extension of /stats: the channel delivers in publish order.
        row["ordered"] = bool(raw["ordered"])
    if isinstance(raw.get("order_key"), str):
        # Its order key, when the channel is ordered by key.
        row["order_key"] = raw["order_key"]
    row["e2e_processing_latency"] = _e2e_node(raw.get("e2e_processing_latency"))
    return row


def _topic_row(raw: dict[str, Any], producer: _Producer, now: int) -> JSONObject:
    name = _text(raw, "topic_name")
    depth, backend_depth = _number(raw, "depth"), _number(raw, "backend_depth")
    row: JSONObject = {
        "node": producer.http_address,
        "hostname": producer.hostname,
        "topic_name": name,
        "depth": depth,
        "memory_depth": depth - backend_depth,
        "backend_depth": backend_depth,
        "message_count": _number(raw, "message_count"),
        "delivery_msg_count": _number(raw, "delivery_msg_count"),
    }
    for key in _MSG_COUNTS:
        if _number(raw, key):
            row[key] = _number(raw, key)
    row["nodes"] = []
    row["channels"] = [
        _channel_row(channel, name, producer, now)
        for channel in _list(raw, "channels")
        if isinstance(channel, dict)
    ]
    row["paused"] = bool(raw.get("paused"))
    row["e2e_processing_latency"] = _e2e_node(raw.get("e2e_processing_latency"))
    return row


def _by_hostname(rows: Iterable[JSONObject]) -> list[JSONObject]:
    # Go sorts by hostname; the node breaks ties so answers do not depend on arrival order.
    return sorted(rows, key=lambda row: (row["hostname"], row["node"]))


def aggregate_channel(topic: str, channel: str, rows: Sequence[JSONObject]) -> JSONObject:
    """The cluster-wide ChannelStats (C{"node":"*"}) of one channel's per-node rows."""
    nodes = _by_hostname(rows)
    aggregate: JSONObject = {
        "node": "*" if nodes else "",
        "hostname": "",
        "topic_name": topic,
        "channel_name": channel,
    }
    for key in (
        "depth",
        "memory_depth",
        "backend_depth",
        "in_flight_count",
        "deferred_count",
        "requeue_count",
        "timeout_count",
        "message_count",
    ):
        aggregate[key] = sum(row[key] for row in nodes)
    for key in ("delivery_msg_count", *_MSG_COUNTS):
        total = sum(row.get(key, 0) for row in nodes)
        if total:
            aggregate[key] = total
    aggregate["client_count"] = sum(row["client_count"] for row in nodes)
    aggregate["nodes"] = nodes
    clients = [client for row in nodes for client in row["clients"]]
    aggregate["clients"] = sorted(clients, key=lambda client: client["hostname"])
    aggregate["paused"] = any(row["paused"] for row in nodes)
    if any(row.get("ordered") for row in nodes):
        aggregate["ordered"] = True
    order_keys = sorted({row["order_key"] for row in nodes if row.get("order_key")})
    if order_keys:
        # Nodes normally agree; if not, every key shows.
        aggregate["order_key"] = ", ".join(order_keys)
    latency = _E2EAggregate(topic, channel, aggregate["node"])
    for row in nodes:
        latency.add(row["e2e_processing_latency"])
    aggregate["e2e_processing_latency"] = latency.to_json()
    return aggregate


def aggregate_topic(topic: str, rows: Sequence[JSONObject]) -> JSONObject:
    """The cluster-wide TopicStats (C{"node":"*"}) of one topic's per-node rows, channels aggregated."""
    nodes = _by_hostname(rows)
    aggregate: JSONObject = {"node": "*" if nodes else "", "hostname": "", "topic_name": topic}
    for key in ("depth", "memory_depth", "backend_depth", "message_count", "delivery_msg_count"):
        aggregate[key] = sum(row[key] for row in nodes)
    for key in _MSG_COUNTS:
        total = sum(row.get(key, 0) for row in nodes)
        if total:
            aggregate[key] = total
    aggregate["nodes"] = nodes
    # Channels in Go's order: the first node's, then those only later nodes have.
    channel_rows: dict[str, list[JSONObject]] = {}
    for row in nodes:
        for channel in row["channels"]:
            channel_rows.setdefault(channel["channel_name"], []).append(channel)
    aggregate["channels"] = [aggregate_channel(topic, name, found) for name, found in channel_rows.items()]
    aggregate["paused"] = any(row["paused"] for row in nodes)
    latency = _E2EAggregate(topic, "", aggregate["node"])
    for row in nodes:
        latency.add(row["e2e_processing_latency"])
    aggregate["e2e_processing_latency"] = latency.to_json()
    return aggregate


@attrs.define
class _Stats:
    """What one stats fan-out found: per-node topic rows and per-node channel rows by channel key."""

    topics: list[JSONObject] = attrs.field(factory=list)
    channels: dict[tuple[str, str], list[JSONObject]] = attrs.field(factory=dict)


# -- the view -----------------------------------------------------------------------------------


@implementer(IClusterView)
class ClusterView:
    """
    L{IClusterView} over live HTTP calls.

    @param http: the treq-like client every upstream call goes through.
    @param clock: gives "now" for the clients' C{connected} durations.
    @param lookupd_http_addresses: C{--lookupd-http-address}; when non-empty the view reads the
        cluster through nsqlookupd, otherwise straight from C{nsqd_http_addresses}. Both lists may
        be replaced while running (C{PUT /config/nsqlookupd_http_addresses}).

    Actions follow Go: a failure to find the topic's producers fails the action with
    L{UpstreamError}; failures of the POSTs themselves only become warnings.
    """

    def __init__(
        self,
        http: HTTPClient,
        clock: IReactorTime,
        lookupd_http_addresses: Sequence[str] = (),
        nsqd_http_addresses: Sequence[str] = (),
    ) -> None:
        self._http = http
        self._clock = clock
        self.lookupd_http_addresses: list[str] = list(lookupd_http_addresses)
        self.nsqd_http_addresses: list[str] = list(nsqd_http_addresses)

    # -- one call -------------------------------------------------------------------------------

    async def _get_json(self, url: str) -> Any:
        _log.debug("CI: querying {url}", url=url)
        try:
            response = await self._http.get(url)
            body = await self._http.content(response)
        except Exception as e:
            raise _CallFailed(f'Get "{url}": {e}') from None
        return self._decode(response.code, body)

    async def _post(self, url: str) -> None:
        _log.debug("CI: querying {url}", url=url)
        try:
            response = await self._http.post(url)
            body = await self._http.content(response)
        except Exception as e:
            raise _CallFailed(f'Post "{url}": {e}') from None
        if response.code != 200:
            raise _CallFailed(f"got response {_status_text(response.code)} {_go_quote(body)}")

    @staticmethod
    def _decode(code: int, body: bytes) -> Any:
        if code != 200:
            raise _CallFailed(f"got response {_status_text(code)} {_go_quote(body)}")
        try:
            return json.loads(body)
        except ValueError as e:
            raise _CallFailed(str(e)) from None

    async def _fan_out(
        self, calls: Sequence[Coroutine[Any, Any, _T]], kind: str, *, all_may_fail: bool = False
    ) -> tuple[list[_T], list[str]]:
        """
        Run C{calls} at once: the results of those that worked and the errors of the others.

        @raise _AllFailed: there were calls and every one failed (unless C{all_may_fail}).
        """
        outcomes = await DeferredList([ensureDeferred(call) for call in calls], consumeErrors=True)
        results: list[_T] = []
        errors: list[str] = []
        for ok, value in outcomes:
            if ok:
                results.append(value)
                continue
            failure = cast(Failure, value)
            if not isinstance(failure.value, _CallFailed):
                _log.failure("unexpected error querying {kind}", failure, kind=kind)
            errors.append(str(failure.value))
        if calls and len(errors) == len(calls) and not all_may_fail:
            raise _AllFailed(f"failed to query any {kind}: " + "\n".join(errors))
        return results, errors

    async def _post_all(self, urls: Sequence[str], kind: str) -> list[str]:
        """POST to every URL; the errors (never a total failure, as in Go)."""
        _, errors = await self._fan_out([self._post(url) for url in urls], kind, all_may_fail=True)
        return errors

    # -- producers ------------------------------------------------------------------------------

    async def _lookupd_producers(self) -> tuple[list[_Producer], list[str]]:
        async def nodes(address: str) -> tuple[str, Any]:
            return address, await self._get_json(f"http://{address}/nodes")

        answers, errors = await self._fan_out(
            [nodes(address) for address in self.lookupd_http_addresses], "nsqlookupd"
        )
        merged: dict[str, _Producer] = {}
        for lookupd, answer in answers:
            for raw in _list(answer if isinstance(answer, dict) else {}, "producers"):
                if not isinstance(raw, dict):
                    continue
                producer = _Producer.from_lookupd(raw)
                known = merged.setdefault(producer.http_address, producer)
                if known is producer:
                    producer.topics.sort()
                known.remote_addresses.append(f"{lookupd}/{producer.remote_address or 'N/A'}")
        producers = sorted(merged.values(), key=lambda p: (p.hostname, p.http_address))
        _mark_out_of_date(producers)
        return producers, errors

    async def _nsqd_producer(self, address: str, topic: str | None) -> _Producer | None:
        """
        One nsqd as a producer from its C{/info} and C{/stats}; with C{topic}, C{None} when it
        does not have that topic.
        """
        query = "format=json&include_clients=false"
        if topic is not None:
            query = f"format=json&topic={quote_plus(topic)}&include_clients=false"
        if topic is None:
            info = await self._get_json(f"http://{address}/info")
            stats = await self._get_json(f"http://{address}/stats?{query}")
        else:
            stats = await self._get_json(f"http://{address}/stats?{query}")
            info = None
        names = [
            _text(raw, "topic_name")
            for raw in _list(stats if isinstance(stats, dict) else {}, "topics")
            if isinstance(raw, dict)
        ]
        if topic is not None:
            if topic not in names:
                return None
            info = await self._get_json(f"http://{address}/info")
        info = info if isinstance(info, dict) else {}
        broadcast, http_port = _text(info, "broadcast_address"), _number(info, "http_port")
        host, _, port = address.rpartition(":")
        if not broadcast:
            # Old nsqd without these fields: use the address we were given.
            broadcast, http_port = host.strip("[]"), int(port) if port.isdigit() else 0
        return _Producer(
            remote_address="",
            hostname=_text(info, "hostname") or host.strip("[]"),
            broadcast_address=broadcast,
            tcp_port=_number(info, "tcp_port"),
            http_port=http_port,
            version=_text(info, "version"),
            topology_zone=_text(info, "topology_zone"),
            topology_region=_text(info, "topology_region"),
            topics=[(name, False) for name in names],
        )

    async def _nsqd_producers(self, addresses: Sequence[str]) -> tuple[list[_Producer], list[str]]:
        found, errors = await self._fan_out([self._nsqd_producer(a, None) for a in addresses], "nsqd")
        producers = sorted((p for p in found if p is not None), key=lambda p: (p.hostname, p.http_address))
        _mark_out_of_date(producers)
        return producers, errors

    async def _producers(self) -> tuple[list[_Producer], list[str]]:
        if self.lookupd_http_addresses:
            return await self._lookupd_producers()
        return await self._nsqd_producers(self.nsqd_http_addresses)

    async def _lookupd_topic_producers(self, topic: str) -> tuple[list[_Producer], list[str]]:
        async def lookup(address: str) -> Any:
            return await self._get_json(f"http://{address}/lookup?topic={quote_plus(topic)}")

        answers, errors = await self._fan_out(
            [lookup(address) for address in self.lookupd_http_addresses], "nsqlookupd"
        )
        producers: dict[str, _Producer] = {}
        for answer in answers:
            for raw in _list(answer if isinstance(answer, dict) else {}, "producers"):
                if isinstance(raw, dict):
                    producer = _Producer.from_lookupd(raw)
                    producers.setdefault(producer.http_address, producer)
        return list(producers.values()), errors

    async def _topic_producers(self, topic: str) -> tuple[list[_Producer], list[str]]:
        if self.lookupd_http_addresses:
            return await self._lookupd_topic_producers(topic)
        found, errors = await self._fan_out(
            [self._nsqd_producer(address, topic) for address in self.nsqd_http_addresses], "nsqd"
        )
        return [p for p in found if p is not None], errors

    # -- stats ----------------------------------------------------------------------------------

    async def _stats(
        self, producers: Sequence[_Producer], topic: str = "", channel: str = "", include_clients: bool = True
    ) -> tuple[_Stats, list[str]]:
        query = "format=json"
        if topic:
            query += "&topic=" + quote_plus(topic)
            if channel:
                query += "&channel=" + quote_plus(channel)
        if not include_clients:
            query += "&include_clients=false"

        async def one(producer: _Producer) -> tuple[_Producer, Any]:
            return producer, await self._get_json(f"http://{producer.http_address}/stats?{query}")

        answers, errors = await self._fan_out([one(producer) for producer in producers], "nsqd")
        now = int(self._clock.seconds())
        stats = _Stats()
        for producer, answer in answers:
            for raw in _list(answer if isinstance(answer, dict) else {}, "topics"):
                if not isinstance(raw, dict) or (topic and raw.get("topic_name") != topic):
                    continue
                row = _topic_row(raw, producer, now)
                stats.topics.append(row)
                for channel_row in row["channels"]:
                    key = (row["topic_name"], channel_row["channel_name"])
                    stats.channels.setdefault(key, []).append(channel_row)
        stats.topics.sort(key=lambda row: (row["hostname"], row["node"], row["topic_name"]))
        return stats, errors

    # -- IClusterView: reading ------------------------------------------------------------------

    def topics(self) -> Deferred[JSONObject]:
        return self._run(self._topics)

    async def _topic_names(self) -> tuple[list[str], list[str]]:
        if self.lookupd_http_addresses:

            async def names(address: str) -> Any:
                return await self._get_json(f"http://{address}/topics")

            answers, errors = await self._fan_out(
                [names(address) for address in self.lookupd_http_addresses], "nsqlookupd"
            )
            found = {
                name
                for answer in answers
                for name in _list(answer if isinstance(answer, dict) else {}, "topics")
                if isinstance(name, str)
            }
            return sorted(found), errors
        producers, errors = await self._nsqd_producers(self.nsqd_http_addresses)
        return _topic_names_of(producers), errors

    async def _topics(self) -> JSONObject:
        names, errors = await self._topic_names()
        return {"topics": names, "message": _warning(["\n".join(errors)] if errors else [])}

    def inactive_topics(self) -> Deferred[JSONObject]:
        return self._run(self._inactive_topics)

    async def _inactive_topics(self) -> JSONObject:
        names, errors = await self._topic_names()
        inactive: dict[str, list[str]] = {}
        if self.lookupd_http_addresses:

            async def check(topic: str) -> tuple[str, list[str]] | None:
                # As in Go, a topic whose producers cannot be looked up counts as inactive.
                try:
                    producers, _ = await self._lookupd_topic_producers(topic)
                except _AllFailed:
                    producers = []
                if producers:
                    return None
                return topic, await self._lookupd_channels(topic)

            checked, _ = await self._fan_out([check(name) for name in names], "nsqlookupd")
            inactive = dict(sorted(item for item in checked if item is not None))
        return {"topics": inactive, "message": _warning(["\n".join(errors)] if errors else [])}

    async def _lookupd_channels(self, topic: str) -> list[str]:
        async def channels(address: str) -> Any:
            return await self._get_json(f"http://{address}/channels?topic={quote_plus(topic)}")

        try:
            answers, _ = await self._fan_out(
                [channels(address) for address in self.lookupd_http_addresses], "nsqlookupd"
            )
        except _AllFailed:
            return []
        found = {
            name
            for answer in answers
            for name in _list(answer if isinstance(answer, dict) else {}, "channels")
            if isinstance(name, str)
        }
        return sorted(found)

    def topic_summaries(self) -> Deferred[JSONObject]:
        return self._run(self._topic_summaries)

    async def _topic_summaries(self) -> JSONObject:
        messages: list[str] = []
        if self.lookupd_http_addresses:
            names = self._note(await self._topic_names(), messages)
            producers = self._note(await self._producers(), messages)
        else:
            # The names come from the producers themselves: one read of each nsqd serves both
            # steps, and each step still reports its errors.
            found = await self._nsqd_producers(self.nsqd_http_addresses)
            names = self._note((_topic_names_of(found[0]), found[1]), messages)
            producers = self._note(found, messages)
        stats = self._note(await self._stats(producers, include_clients=False), messages)
        rows: dict[str, list[JSONObject]] = {}
        for row in stats.topics:
            rows.setdefault(row["topic_name"], []).append(row)
        return {
            "topics": [aggregate_topic(name, rows.get(name, [])) for name in sorted(set(names) | set(rows))],
            "message": _warning(messages),
        }

    def topic(self, topic: str) -> Deferred[JSONObject]:
        return self._run(self._topic, topic)

    async def _topic(self, topic: str) -> JSONObject:
        messages: list[str] = []
        producers = self._note(await self._topic_producers(topic), messages)
        stats = self._note(await self._stats(producers, topic, include_clients=False), messages)
        answer = aggregate_topic(topic, stats.topics)
        answer["message"] = _warning(messages)
        return answer

    def channel(self, topic: str, channel: str) -> Deferred[JSONObject]:
        return self._run(self._channel, topic, channel)

    async def _channel(self, topic: str, channel: str) -> JSONObject:
        messages: list[str] = []
        producers = self._note(await self._topic_producers(topic), messages)
        stats = self._note(await self._stats(producers, topic, channel, include_clients=True), messages)
        answer = aggregate_channel(topic, channel, stats.channels.get((topic, channel), []))
        answer["message"] = _warning(messages)
        return answer

    def nodes(self) -> Deferred[JSONObject]:
        return self._run(self._nodes)

    async def _nodes(self) -> JSONObject:
        messages: list[str] = []
        producers = self._note(await self._producers(), messages)
        return {"nodes": [producer.to_json() for producer in producers], "message": _warning(messages)}

    def node(self, node: str) -> Deferred[JSONObject]:
        return self._run(self._node, node)

    async def _node(self, node: str) -> JSONObject:
        messages: list[str] = []
        producers = self._note(await self._producers(), messages)
        producer = next((p for p in producers if p.http_address == node), None)
        if producer is None:
            raise NodeNotFound(node)
        stats, _ = await self._stats([producer], include_clients=True)
        topics = stats.topics
        return {
            "node": node,
            "topics": topics,
            "total_messages": sum(row["message_count"] for row in topics),
            "total_clients": sum(len(channel["clients"]) for row in topics for channel in row["channels"]),
            "message": _warning(messages),
        }

    def counter(self) -> Deferred[JSONObject]:
        return self._run(self._counter)

    async def _counter(self) -> JSONObject:
        messages: list[str] = []
        producers = self._note(await self._producers(), messages)
        stats = self._note(await self._stats(producers, include_clients=False), messages)
        counts: dict[str, JSONObject] = {}
        for (topic, channel), rows in stats.channels.items():
            for row in rows:
                key = f"{topic}:{channel}:{row['node']}"
                entry = counts.setdefault(
                    key,
                    {"node": row["node"], "topic_name": topic, "channel_name": channel, "message_count": 0},
                )
                entry["message_count"] += row["message_count"]
        return {"stats": dict(sorted(counts.items())), "message": _warning(messages)}

    # -- IClusterView: actions ------------------------------------------------------------------

    def create_topic_channel(self, topic: str, channel: str | None) -> Deferred[str]:
        return self._run(self._create_topic_channel, topic, channel)

    async def _create_topic_channel(self, topic: str, channel: str | None) -> str:
        errors: list[str] = []
        lookupds = self.lookupd_http_addresses
        topic_query = "topic=" + quote_plus(topic)
        errors += await self._post_all(
            [f"http://{a}/topic/create?{topic_query}" for a in lookupds], "nsqlookupd"
        )
        if channel:
            query = f"{topic_query}&channel={quote_plus(channel)}"
            errors += await self._post_all(
                [f"http://{a}/channel/create?{query}" for a in lookupds], "nsqlookupd"
            )
            producers, found_errors = await self._lookupd_topic_producers(topic)
            errors += found_errors
            errors += await self._post_all(
                [f"http://{p.http_address}/channel/create?{query}" for p in producers], "nsqd"
            )
        return _warning(["\n".join(errors)] if errors else [])

    def topic_action(self, topic: str, action: str) -> Deferred[str]:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        return self._run(self._producer_action, topic, f"topic/{action}", "topic=" + quote_plus(topic))

    def channel_action(self, topic: str, channel: str, action: str) -> Deferred[str]:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        query = f"topic={quote_plus(topic)}&channel={quote_plus(channel)}"
        return self._run(self._producer_action, topic, f"channel/{action}", query)

    async def _producer_action(self, topic: str, path: str, query: str) -> str:
        producers, errors = await self._topic_producers(topic)
        errors = errors + await self._post_all(
            [f"http://{p.http_address}/{path}?{query}" for p in producers], "nsqd"
        )
        return _warning(["\n".join(errors)] if errors else [])

    def delete_topic(self, topic: str) -> Deferred[str]:
        return self._run(self._delete, topic, "topic/delete", "topic=" + quote_plus(topic))

    def delete_channel(self, topic: str, channel: str) -> Deferred[str]:
        query = f"topic={quote_plus(topic)}&channel={quote_plus(channel)}"
        return self._run(self._delete, topic, "channel/delete", query)

    async def _delete(self, topic: str, path: str, query: str) -> str:
        # The producers must be found before lookupd forgets the topic.
        producers, errors = await self._topic_producers(topic)
        errors = errors + await self._post_all(
            [f"http://{a}/{path}?{query}" for a in self.lookupd_http_addresses], "nsqlookupd"
        )
        errors += await self._post_all([f"http://{p.http_address}/{path}?{query}" for p in producers], "nsqd")
        return _warning(["\n".join(errors)] if errors else [])

    def tombstone_topic_producer(self, node: str, topic: str) -> Deferred[str]:
        return self._run(self._tombstone, node, topic)

    async def _tombstone(self, node: str, topic: str) -> str:
        query = f"topic={quote_plus(topic)}&node={quote_plus(node)}"
        errors = await self._post_all(
            [f"http://{a}/topic/tombstone?{query}" for a in self.lookupd_http_addresses], "nsqlookupd"
        )
        producers, found_errors = await self._nsqd_producers([node])
        errors += found_errors
        delete = "topic=" + quote_plus(topic)
        errors += await self._post_all(
            [f"http://{p.http_address}/topic/delete?{delete}" for p in producers], "nsqd"
        )
        return _warning(["\n".join(errors)] if errors else [])

    # -- plumbing -------------------------------------------------------------------------------

    @staticmethod
    def _note(outcome: tuple[_T, list[str]], messages: list[str]) -> _T:
        """Keep a step's result; its errors (if any) become one warning message."""
        result, errors = outcome
        if errors:
            _log.warn("{errors}", errors="\n".join(errors))
            messages.append("\n".join(errors))
        return result

    def _run(self, method: Callable[..., Coroutine[Any, Any, _T]], *args: Any) -> Deferred[_T]:
        async def run() -> _T:
            try:
                return await method(*args)
            except _AllFailed as e:
                _log.error("{error}", error=str(e))
                raise UpstreamError(str(e)) from None

        return ensureDeferred(run())
