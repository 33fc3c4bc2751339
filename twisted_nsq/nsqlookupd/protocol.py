"""
nsqlookupd's TCP protocol "V1" (spec 4.1): how nsqd nodes identify and register with lookupd.

A connection opens with the magic C{"  V1"}; anything else gets C{E_BAD_PROTOCOL} and is closed.
Commands are text lines, trimmed of surrounding whitespace (Go's C{strings.TrimSpace}) and split
on single spaces; IDENTIFY is followed by C{[int32 size][JSON]}. Every reply, success or error, is
C{[int32 size][data]} with no frame type: C{OK}, lookupd's IDENTIFY JSON, or an error string
starting with C{E_}. Every error is fatal: it is written, then the connection is closed.

A producer is identified by the remote address of its connection; when the connection closes,
the producer leaves every key it was registered under.

Limits and deadlines: Go nsqlookupd sets no read deadline (liveness comes from PINGs, through
C{--inactive-producer-timeout}), and neither do we. Go bounds neither a command line nor an
IDENTIFY body; we refuse a line longer than L{MAX_LINE_LENGTH} (C{E_INVALID command line too
long}) and an IDENTIFY body larger than L{MAX_IDENTIFY_BODY} (C{E_BAD_BODY IDENTIFY body too big
N > LIMIT}), before buffering it; a negative body size (which makes Go panic) gets C{E_BAD_BODY
IDENTIFY failed to read body}.
"""

from __future__ import annotations

import json
import re
import struct
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, ITCPTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_nsq._http import go_json
from twisted_nsq._version import NSQ_VERSION
from twisted_nsq.nsqlookupd.core import NSQLookupd
from twisted_nsq.nsqlookupd.registration import CHANNEL, PeerInfo, Registration
from twisted_nsq.wire.errors import (
    E_BAD_BODY,
    E_BAD_CHANNEL,
    E_BAD_PROTOCOL,
    E_BAD_TOPIC,
    E_INVALID,
    NSQError,
)
from twisted_nsq.wire.frames import MAGIC_V1
from twisted_nsq.wire.names import is_valid_channel_name, is_valid_topic_name
from twisted_nsq.wire.parser import BodySpec, CommandParser

log = Logger()

#: The longest command line we read (Go has no limit).
MAX_LINE_LENGTH = 16384
#: The largest IDENTIFY body we accept (Go has no limit; nsqd sends about 150 bytes).
MAX_IDENTIFY_BODY = 1024 * 1024
#: Seconds L{LookupdFactory.close_connections} lets a connection flush before aborting it.
CLOSE_GRACE = 5.0

_INT32 = struct.Struct(">i")
OK_REPLY = _INT32.pack(2) + b"OK"

# Go's strings.TrimSpace: ASCII whitespace, and unicode.IsSpace for the rest.
_ASCII_SPACE = b" \t\n\v\f\r"
_UNICODE_SPACE = (
    " \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def reply(data: bytes) -> bytes:
    """A reply on the wire: C{[int32 size][data]}."""
    return _INT32.pack(len(data)) + data


def trim_space(line: bytes) -> bytes:
    """C{line} without leading and trailing whitespace, as Go's C{strings.TrimSpace} sees it."""
    if line.isascii():
        return line.strip(_ASCII_SPACE)
    text = line.decode("utf-8", "surrogateescape").strip(_UNICODE_SPACE)
    return text.encode("utf-8", "surrogateescape")


class _Error(Exception):
    """A lookupd error: C{payload} is the whole reply text (C{E_CODE message}), raw bytes kept."""

    def __init__(self, code: str, message: bytes) -> None:
        super().__init__(code, message)
        self.payload = code.encode("ascii") + b" " + message


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


# -- IDENTIFY body: Go's json.Unmarshal into nsqlookupd 1.3.0's PeerInfo ------------------------

_STRING_FIELDS = ("remote_address", "hostname", "broadcast_address", "version")
_INT_FIELDS = ("tcp_port", "http_port")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Object(list[tuple[str, Any]]):
    """A JSON object's members in order (duplicates kept, as Go sees each of them)."""


class _BigInt:
    """An integer literal too long for Python to convert cheaply: never an int64."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON literal {name}")


def _parse_int(text: str) -> Any:
    # Python refuses to convert integers of more than 4300 digits; Go skips them in unknown
    # fields and refuses them in known ones, which a marker does as well.
    return int(text) if len(text) <= 24 else _BigInt()


def _fold(name: str) -> str:
    # Go matches JSON keys to field names case-insensitively (with simple Unicode folding:
    # the Kelvin sign is a k, the long s an s).
    return name.lower().replace("\u017f", "s")


def decode_identify(body: bytes) -> dict[str, Any]:
    """
    The peer fields of an IDENTIFY body, decoded as Go decodes it into a struct: keys matched
    case-insensitively, the last of duplicate keys winning, C{null} leaving a field alone, unknown
    keys ignored; a string field must be a string and a port an integer literal in int64 range.

    @raise ValueError: the body does not decode.
    """
    try:
        document = json.loads(
            body.decode("utf-8", "replace"),
            object_pairs_hook=_Object,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
        )
    except (ValueError, RecursionError) as e:
        raise ValueError(f"invalid JSON: {e}") from None
    fields: dict[str, Any] = {name: "" for name in _STRING_FIELDS}
    fields.update({name: 0 for name in _INT_FIELDS})
    if document is None:
        return fields
    if not isinstance(document, _Object):
        raise ValueError("cannot unmarshal into an object")
    for key, value in document:
        name = _fold(key)
        if value is None or name not in fields:
            continue
        if name in _INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int) or not _INT64_MIN <= value <= _INT64_MAX:
                raise ValueError(f"cannot unmarshal {value!r} into {name}")
            fields[name] = value
        elif isinstance(value, str):
            fields[name] = _SURROGATE.sub("\ufffd", value)
        else:
            raise ValueError(f"cannot unmarshal {value!r} into {name}")
    return fields


def _address(peer: IAddress, fallback: str) -> str:
    """A peer address as Go's C{net.Addr.String()}: C{ip:port}, C{[ipv6]:port}."""
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if not isinstance(host, str) or not isinstance(port, int):
        return fallback
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


@implementer(IPushProducer)
class LookupdProtocol(Protocol):
    """
    One nsqd's connection to lookupd.

    @ivar remote_address: the peer's C{ip:port}; the producer's id in the registration database.
    @ivar peer: what the nsqd said in IDENTIFY (C{None} before).
    """

    def __init__(self, lookupd: NSQLookupd, fallback_address: str = "") -> None:
        self.lookupd = lookupd
        self.db = lookupd.db
        self.remote_address = fallback_address
        self.peer: PeerInfo | None = None
        self._magic = b""
        self._parser = CommandParser(self, MAX_LINE_LENGTH)
        self._closing = False
        self._gone = False
        self._lost: list[Deferred[None]] = []
        self._abort_timer: IDelayedCall | None = None
        self._identify_spec = BodySpec(MAX_IDENTIFY_BODY, self._identify_too_big, self._identify_bad_size)

    # -- connection lifecycle -------------------------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        self.remote_address = _address(transport.getPeer(), self.remote_address)
        if ITCPTransport.providedBy(transport):
            # Go sets TCP_NODELAY on every connection: replies go out without waiting for an ACK.
            transport.setTcpNoDelay(True)
        # Back-pressure: a peer that stops reading its replies stops being read.
        transport.registerProducer(self, True)  # type: ignore[attr-defined]
        log.info("TCP: new client({client})", client=self.remote_address)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._gone = self._closing = True
        self._parser.stop()
        if self._abort_timer is not None and self._abort_timer.active():
            self._abort_timer.cancel()
        self._abort_timer = None
        log.info("PROTOCOL(V1): [{client}] exiting ioloop", client=self.remote_address)
        if self.peer is not None:
            for key in self.db.remove_peer(self.peer.id):
                log.info(
                    "DB: client({client}) UNREGISTER category:{category} key:{key} subkey:{subkey}",
                    client=self.remote_address,
                    category=key.category,
                    key=key.key,
                    subkey=key.subkey,
                )
        lost, self._lost = self._lost, []
        for d in lost:
            d.callback(None)

    def when_lost(self) -> Deferred[None]:
        """A Deferred that fires once this connection is gone (each caller gets its own)."""
        d: Deferred[None] = Deferred()
        if self._gone:
            d.callback(None)
        else:
            self._lost.append(d)
        return d

    def close(self, grace: float | None = None) -> None:
        """
        Close after writing what is buffered; with C{grace}, abort the connection if it is still
        open that many seconds later (a peer that reads nothing cannot hold a shutdown).
        """
        if self._gone:
            return
        if not self._closing:
            self._closing = True
            self._parser.stop()
            transport = self.transport
            assert transport is not None
            transport.loseConnection()
        if grace is not None and self._abort_timer is None:
            self._abort_timer = self.lookupd.clock.callLater(grace, self._abort)

    def _abort(self) -> None:
        self._abort_timer = None
        if not self._gone:
            self.transport.abortConnection()  # type: ignore[union-attr]

    # IPushProducer: the transport calls these when its write buffer fills and drains.

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        if not self._closing:
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if len(self._magic) < 4:
            need = 4 - len(self._magic)
            self._magic += data[:need]
            data = data[need:]
            if len(self._magic) < 4:
                return
            log.info(
                "CLIENT({client}): desired protocol magic {magic!r}",
                client=self.remote_address,
                magic=self._magic.decode("latin-1"),
            )
            if self._magic != MAGIC_V1:
                log.error(
                    "client({client}) bad protocol magic {magic!r}",
                    client=self.remote_address,
                    magic=self._magic.decode("latin-1"),
                )
                self._fail(E_BAD_PROTOCOL.encode("ascii"))
                return
        if data:
            self._parser.feed(data)

    def command_received(self, params: list[bytes]) -> BodySpec | None:
        # The parser splits on spaces after dropping "\r\n"; Go trims all surrounding whitespace
        # from the line first, so an extra space or tab at either end changes nothing.
        params = trim_space(b" ".join(params)).split(b" ")
        command = params[0]
        try:
            if command == b"PING":
                self._ping()
            elif command == b"IDENTIFY":
                if self.peer is not None:
                    raise _Error(E_INVALID, b"cannot IDENTIFY again")
                return self._identify_spec
            elif command == b"REGISTER":
                self._register(params[1:])
            elif command == b"UNREGISTER":
                self._unregister(params[1:])
            else:
                raise _Error(E_INVALID, b"invalid command " + command)
        except _Error as e:
            self._fail(e.payload)
        return None

    def body_received(self, params: list[bytes], body: bytes) -> None:
        try:
            self._identify(body)
        except _Error as e:
            self._fail(e.payload)

    def parse_error(self, error: NSQError) -> None:
        self._fail(str(error).encode("utf-8"))

    def _fail(self, payload: bytes) -> None:
        error = payload.decode("utf-8", "replace")
        log.error("[{client}] - {error}", client=self.remote_address, error=error)
        self._parser.stop()
        self.transport.write(reply(payload))  # type: ignore[union-attr]
        self.close()

    # -- commands -------------------------------------------------------------------------------

    def _ping(self) -> None:
        peer = self.peer
        if peer is not None:
            # A PING may come before IDENTIFY; only an identified producer has a clock to reset.
            since = self.db.ping(peer)
            log.debug("CLIENT({client}): pinged (last ping {since:.6f}s)", client=peer.id, since=since)
        self.transport.write(OK_REPLY)  # type: ignore[union-attr]

    def _identify_too_big(self, length: int) -> NSQError:
        return NSQError(E_BAD_BODY, f"IDENTIFY body too big {length} > {MAX_IDENTIFY_BODY}")

    def _identify_bad_size(self, length: int) -> NSQError:
        if length == 0:
            # Go reads the empty body, then fails to decode it.
            return NSQError(E_BAD_BODY, "IDENTIFY failed to decode JSON body")
        return NSQError(E_BAD_BODY, "IDENTIFY failed to read body")

    def _identify(self, body: bytes) -> None:
        try:
            fields = decode_identify(body)
        except ValueError as e:
            log.error("[{client}] - IDENTIFY body: {e}", client=self.remote_address, e=e)
            raise _Error(E_BAD_BODY, b"IDENTIFY failed to decode JSON body") from None
        fields["remote_address"] = self.remote_address
        peer = PeerInfo(id=self.remote_address, **fields)
        if not (peer.broadcast_address and peer.tcp_port and peer.http_port and peer.version):
            raise _Error(E_BAD_BODY, b"IDENTIFY missing fields")
        log.info(
            "CLIENT({client}): IDENTIFY Address:{address} TCP:{tcp} HTTP:{http} Version:{version}",
            client=self.remote_address,
            address=peer.broadcast_address,
            tcp=peer.tcp_port,
            http=peer.http_port,
            version=peer.version,
        )
        self.peer = peer
        if self.db.identify(peer):
            self._log_db("REGISTER", Registration("client", "", ""))
        lookupd = self.lookupd
        # Go marshals a map, and encoding/json writes map keys sorted.
        info = {
            "broadcast_address": lookupd.options.broadcast_address,
            "hostname": lookupd.hostname(),
            "http_port": lookupd.http_port,
            "tcp_port": lookupd.tcp_port,
            "version": NSQ_VERSION,
        }
        self.transport.write(reply(go_json(info)))  # type: ignore[union-attr]

    def _topic_channel(self, command: bytes, params: list[bytes]) -> tuple[str, str]:
        if self.peer is None:
            raise _Error(E_INVALID, b"client must IDENTIFY")
        if not params:
            raise _Error(E_INVALID, command + b" insufficient number of params")
        topic = _text(params[0])
        channel = _text(params[1]) if len(params) > 1 else ""
        if not is_valid_topic_name(topic):
            raise _Error(E_BAD_TOPIC, b"%s topic name '%s' is not valid" % (command, params[0]))
        if channel and not is_valid_channel_name(channel):
            raise _Error(E_BAD_CHANNEL, b"%s channel name '%s' is not valid" % (command, params[1]))
        return topic, channel

    def _register(self, params: list[bytes]) -> None:
        topic, channel = self._topic_channel(b"REGISTER", params)
        assert self.peer is not None
        for key in self.db.register(self.peer, topic, channel):
            self._log_db("REGISTER", key)
        self.transport.write(OK_REPLY)  # type: ignore[union-attr]

    def _unregister(self, params: list[bytes]) -> None:
        topic, channel = self._topic_channel(b"UNREGISTER", params)
        assert self.peer is not None
        for key in self.db.unregister(self.peer, topic, channel):
            if not channel and key.category == CHANNEL:
                # nsqd unregisters a topic's channels before the topic; leftovers are unusual.
                log.warn(
                    "client({client}) unexpected UNREGISTER category:{category} key:{key} subkey:{subkey}",
                    client=self.remote_address,
                    category=key.category,
                    key=key.key,
                    subkey=key.subkey,
                )
            else:
                self._log_db("UNREGISTER", key)
        self.transport.write(OK_REPLY)  # type: ignore[union-attr]

    def _log_db(self, action: str, key: Registration) -> None:
        log.info(
            "DB: client({client}) {action} category:{category} key:{key} subkey:{subkey}",
            client=self.remote_address,
            action=action,
            category=key.category,
            key=key.key,
            subkey=key.subkey,
        )


class LookupdFactory(ServerFactory):
    """Builds a L{LookupdProtocol} per nsqd connection and can close them all (for a clean stop)."""

    def __init__(self, lookupd: NSQLookupd) -> None:
        self.lookupd = lookupd
        self.connections: set[LookupdProtocol] = set()
        self._count = 0

    def buildProtocol(self, addr: IAddress | None) -> LookupdProtocol:
        self._count += 1
        # Peers without an IP address (UNIX sockets) still need a distinct producer id.
        protocol = LookupdProtocol(self.lookupd, fallback_address=f"unix:{self._count}")
        protocol.factory = self
        self.connections.add(protocol)
        protocol.when_lost().addCallback(lambda _: self.connections.discard(protocol))
        return protocol

    def close_connections(self) -> Deferred[None]:
        """
        Close every nsqd connection (each producer's registrations go with it); fires once all
        of them are gone. A connection that has not flushed after L{CLOSE_GRACE} seconds is aborted.
        """
        protocols = list(self.connections)
        waits = [p.when_lost() for p in protocols]
        for protocol in protocols:
            protocol.close(grace=CLOSE_GRACE)
        return gatherResults(waits).addCallback(lambda _: None)
