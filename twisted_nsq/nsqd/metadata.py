"""
``nsqd.dat``: the topics and channels (and their paused flags) that survive a restart.

The file is Go nsqd 1.3.0's, byte for byte: compact JSON with Go's key order
(``{"topics":[{"name":..,"paused":..,"channels":[..] or null}],"version":"1.3.0"}``), written
atomically (a ``nsqd.dat.<random>.tmp`` file, fsync, rename, fsync of the directory) with mode
0600. Ephemeral topics and channels are never recorded. Beyond Go: an ordered channel's object
carries C{"ordered":true} (after C{paused}; absent when off), and one ordered by key also
C{"order_key":"SPEC"} after it, which Go nsqd ignores as unknown keys
(docs/extensions/ordered.md). Reading it follows Go's ``encoding/json`` where a hand-edited
file could tell the difference: unknown keys are ignored, keys match case-insensitively,
``null`` leaves a field at its zero value, a value of the wrong type is an error.

L{MetadataPersister} rewrites the file whenever nsqd's topology changes, at most once per
reactor turn.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from zope.interface import implementer

from twisted_nsq._version import NSQ_VERSION
from twisted_nsq.nsqd.files import fsync_directory, replace_file
from twisted_nsq.nsqd.nsqd import INSQDObserver
from twisted_nsq.nsqd.ordered import parse_order_key
from twisted_nsq.wire.names import is_valid_channel_name, is_valid_topic_name

if TYPE_CHECKING:
    from twisted_nsq.nsqd.channel import Channel
    from twisted_nsq.nsqd.nsqd import NSQD
    from twisted_nsq.nsqd.topic import Topic

log = Logger()

METADATA_FILE = "nsqd.dat"


class MetadataError(Exception):
    """``nsqd.dat`` exists but cannot be read or parsed: nsqd must not start."""


@attrs.frozen
class ChannelMetadata:
    """One channel as ``nsqd.dat`` records it."""

    name: str
    paused: bool = False
    #: twisted-nsq only: an ordered channel.
    ordered: bool = False
    #: twisted-nsq only: the order key spec of a channel ordered by key ("" for none).
    order_key: str = ""


@attrs.frozen
class TopicMetadata:
    """One topic as ``nsqd.dat`` records it."""

    name: str
    paused: bool = False
    channels: tuple[ChannelMetadata, ...] = ()


@attrs.frozen
class Metadata:
    """The whole of ``nsqd.dat``."""

    topics: tuple[TopicMetadata, ...] = ()
    version: str = NSQ_VERSION


def metadata_path(data_path: str) -> str:
    return os.path.join(data_path, METADATA_FILE)


# -- writing ------------------------------------------------------------------------------------


def snapshot(nsqd: NSQD) -> Metadata:
    """What ``nsqd.dat`` should say about ``nsqd`` now (ephemeral topics and channels left out)."""
    return Metadata(
        topics=tuple(
            TopicMetadata(
                name=topic.name,
                paused=topic.paused,
                channels=tuple(
                    ChannelMetadata(
                        name=channel.name,
                        paused=channel.paused,
                        ordered=channel.ordered,
                        order_key=channel.order_key,
                    )
                    for channel in topic.channels.values()
                    if not channel.ephemeral
                ),
            )
            for topic in nsqd.topics.values()
            if not topic.ephemeral
        )
    )


def encode_metadata(metadata: Metadata) -> bytes:
    """
    The file's bytes, as Go's ``json.Marshal`` writes them: compact, no trailing newline, and
    ``null`` for an empty list (Go appends to a nil slice).
    """
    document = {
        "topics": [
            {
                "name": topic.name,
                "paused": topic.paused,
                "channels": [_channel_document(c) for c in topic.channels] or None,
            }
            for topic in metadata.topics
        ]
        or None,
        "version": metadata.version,
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def _channel_document(channel: ChannelMetadata) -> dict[str, Any]:
    document: dict[str, Any] = {"name": channel.name, "paused": channel.paused}
    if channel.ordered:
        document["ordered"] = True
        if channel.order_key:
            document["order_key"] = channel.order_key
    return document


def write_file_atomically(path: str, data: bytes) -> None:
    """
    Replace ``path`` with ``data`` so that a crash leaves either the old or the new file
    (L{replace_file}), then fsync the directory. Raises OSError.
    """
    replace_file(path, data)
    fsync_directory(os.path.dirname(path))


def save_metadata(data_path: str, nsqd: NSQD) -> None:
    """Write ``<data_path>/nsqd.dat`` for ``nsqd`` atomically; raises OSError."""
    write_file_atomically(metadata_path(data_path), encode_metadata(snapshot(nsqd)))


# -- reading ------------------------------------------------------------------------------------


class _TypeMismatch(Exception):
    """A JSON value of the wrong type for its field (Go: ``cannot unmarshal ... into ...``)."""


def _field(document: dict[str, Any], key: str) -> Any:
    """``document[key]`` the way Go matches struct fields: exact key first, then any case."""
    if key in document:
        return document[key]
    found = None
    for name, value in document.items():
        if name.lower() == key:
            # Go keeps the last of several case-insensitive matches.
            found = value
    return found


def _mismatch(value: Any, where: str, go_type: str) -> _TypeMismatch:
    return _TypeMismatch(f"json: cannot unmarshal {_json_type(value)} into {where} of type {go_type}")


def _string(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _mismatch(value, where, "string")
    return value


def _bool(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _mismatch(value, where, "bool")
    return value


def _list(value: Any, where: str, go_type: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _mismatch(value, where, go_type)
    return value


def _object(value: Any, where: str, go_type: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _mismatch(value, where, go_type)
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _ordered(channel: dict[str, Any]) -> bool:
    """Our C{ordered} key; Go never reads it, so a value of another type is ignored, not fatal."""
    value = _field(channel, "ordered")
    return value if isinstance(value, bool) else False


def _order_key(channel: dict[str, Any]) -> str:
    """Our C{order_key} key; like C{ordered}, a value that is not a valid spec is ignored."""
    value = _field(channel, "order_key")
    if not isinstance(value, str) or not value:
        return ""
    try:
        parse_order_key(value)
    except ValueError:
        log.warn("ignoring invalid order_key {value!r}", value=value)
        return ""
    return value


def decode_metadata(data: bytes) -> Metadata:
    """
    Parse ``nsqd.dat``; topics and channels with invalid names are skipped with a warning.

    @raise ValueError: the data is not JSON of the file's shape.
    """
    document = _object(json.loads(data), "Go value", "nsqd.Metadata")
    # Decode everything first (a type error anywhere is fatal, as Go's Unmarshal is), then skip
    # invalid names in Go's order: a topic's own name before its channels'.
    decoded: list[TopicMetadata] = []
    raw_topics = _field(document, "topics")
    for raw_topic in _list(raw_topics, "Go struct field Metadata.topics", "[]nsqd.TopicMetadata"):
        entry = _object(raw_topic, "Go struct field Metadata.topics", "nsqd.TopicMetadata")
        name = _string(_field(entry, "name"), "Go struct field TopicMetadata.topics.name")
        paused = _bool(_field(entry, "paused"), "Go struct field TopicMetadata.topics.paused")
        where = "Go struct field TopicMetadata.topics.channels"
        channels = tuple(
            ChannelMetadata(
                _string(_field(channel, "name"), "Go struct field ChannelMetadata.topics.channels.name"),
                _bool(_field(channel, "paused"), "Go struct field ChannelMetadata.topics.channels.paused"),
                _ordered(channel),
                _order_key(channel),
            )
            for channel in (
                _object(raw, where, "nsqd.ChannelMetadata")
                for raw in _list(_field(entry, "channels"), where, "[]nsqd.ChannelMetadata")
            )
        )
        decoded.append(TopicMetadata(name, paused, channels))
    version = _string(_field(document, "version"), "Go struct field Metadata.version")
    topics: list[TopicMetadata] = []
    for topic in decoded:
        if not is_valid_topic_name(topic.name):
            log.warn("skipping creation of invalid topic {topic}", topic=topic.name)
            continue
        valid: list[ChannelMetadata] = []
        for channel in topic.channels:
            if is_valid_channel_name(channel.name):
                valid.append(channel)
            else:
                log.warn("skipping creation of invalid channel {channel}", channel=channel.name)
        topics.append(attrs.evolve(topic, channels=tuple(valid)))
    return Metadata(tuple(topics), version)


def load_metadata(data_path: str) -> Metadata | None:
    """
    Read ``<data_path>/nsqd.dat``: None when there is none (a fresh start).

    @raise MetadataError: the file cannot be read or parsed (Go nsqd refuses to start).
    """
    path = metadata_path(data_path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise MetadataError(f"failed to load metadata - failed to read metadata from {path} - {e}") from e
    try:
        return decode_metadata(data)
    except (ValueError, _TypeMismatch) as e:
        raise MetadataError(f"failed to load metadata - failed to parse metadata in {path} - {e}") from e


# -- keeping it current -------------------------------------------------------------------------


@implementer(INSQDObserver)
class MetadataPersister:
    """
    Rewrites ``nsqd.dat`` whenever what it records changes: a non-ephemeral topic or channel
    is created or deleted, or a pause or unpause (``NSQD.persist_metadata()``).

    Changes are coalesced: everything that happens in one reactor turn costs one write, made
    by a single zero-delay call. The service also calls L{write_now} at startup and at exit.
    A failed write is logged and reported as nsqd's health (``/ping`` answers ``NOK - ...``)
    until a later write succeeds.
    """

    def __init__(self, nsqd: NSQD, data_path: str | None = None) -> None:
        self._nsqd = nsqd
        self._data_path = data_path if data_path is not None else nsqd.data_path()
        self._call: IDelayedCall | None = None
        self._error: str | None = None
        self.writes = 0

    @property
    def path(self) -> str:
        return metadata_path(self._data_path)

    @property
    def pending(self) -> bool:
        """Whether a write is scheduled."""
        return self._call is not None

    def install(self) -> None:
        """Start listening to ``nsqd``'s topology changes."""
        if self not in self._nsqd.observers:
            self._nsqd.observers.append(self)

    def uninstall(self) -> None:
        """Stop listening, dropping any scheduled write."""
        if self in self._nsqd.observers:
            self._nsqd.observers.remove(self)
        self._cancel()

    def save(self) -> None:
        """Write the file now; raises OSError (startup treats that as fatal)."""
        self._cancel()
        log.info("NSQ: persisting topic/channel metadata to {path}", path=self.path)
        save_metadata(self._data_path, self._nsqd)
        self.writes += 1
        if self._error is not None:
            # Healthy again, unless something else has reported an error since.
            if self._nsqd.health() == f"NOK - {self._error}":
                self._nsqd.set_health(None)
            self._error = None

    def write_now(self) -> bool:
        """Write the file now; a failure is logged and set as nsqd's health. Whether it worked."""
        try:
            self.save()
        except OSError as e:
            self._error = f"failed to persist metadata - {e}"
            log.error("{error}", error=self._error)
            self._nsqd.set_health(self._error)
            return False
        return True

    def _schedule(self) -> None:
        if self._call is None:
            self._call = self._nsqd.clock.callLater(0, self._scheduled_write)

    def _scheduled_write(self) -> None:
        self._call = None
        self.write_now()

    def _cancel(self) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    # -- INSQDObserver ------------------------------------------------------------------------------

    def topic_created(self, topic: Topic) -> None:
        if not topic.ephemeral:
            self._schedule()

    def topic_deleted(self, topic: Topic) -> None:
        if not topic.ephemeral:
            self._schedule()

    def channel_created(self, topic: Topic, channel: Channel) -> None:
        if not (topic.ephemeral or channel.ephemeral):
            self._schedule()

    def channel_deleted(self, topic: Topic, channel: Channel) -> None:
        if not (topic.ephemeral or channel.ephemeral):
            self._schedule()

    def metadata_changed(self) -> None:
        self._schedule()
