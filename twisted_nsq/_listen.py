"""
Listening the way the Go daemons do: Go listen addresses (C{host:port}, C{[v6]:port}, C{:port}
or a unix socket path), bound synchronously so a busy port fails start-up. Shared by nsqd and
nsqlookupd.

The ports are made with the reactor's C{listenTCP}/C{listenUNIX} directly, with what
C{serverFromString} would pass for L{ListenAddress.endpoint_description} except the backlog: not
importing C{twisted.internet.endpoints} keeps pyOpenSSL (which it loads) out of an nsqd without
TLS (docs/performance.md, "Idle memory").
"""

from __future__ import annotations

import socket
from typing import Any

import attrs
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorTime

#: The listen queue: the kernel's limit, as Go's C{net.Listen} uses (Twisted's default is 50,
#: which drops connections when thousands of clients connect at once).
LISTEN_BACKLOG = socket.SOMAXCONN
#: What C{serverFromString}'s unix endpoint uses: a socket anyone may connect to, no lock file.
UNIX_SOCKET_MODE = 0o666


class StartupError(Exception):
    """A daemon cannot start: the data path is locked, an option is wrong, or a listener cannot bind."""


@attrs.frozen
class ListenAddress:
    """
    A Go listen address: C{host:port}, C{[v6]:port}, C{:port}, or (anything else) a unix socket path.
    """

    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    @classmethod
    def parse(cls, address: str) -> ListenAddress:
        """
        Read C{address} the way nsqd does: whatever Go's C{net.SplitHostPort} accepts is TCP, and
        everything else is a unix socket path.

        @raise ValueError: a TCP address whose port is not a number in [0, 65535].
        """
        host_port = _split_host_port(address)
        if host_port is None:
            return cls(path=address)
        host, port_text = host_port
        if port_text and not port_text.isdigit():
            raise ValueError(f"invalid port {port_text!r} in address {address!r}")
        port = int(port_text or "0")
        if port > 65535:
            raise ValueError(f"invalid port {port} in address {address!r}")
        return cls(host=host, port=port)

    def endpoint_description(self) -> str:
        """This address as a Twisted server endpoint string for C{serverFromString}."""
        if self.is_unix:
            return f"unix:address={_quote(self.path)}"
        # Go's empty host means every interface; we bind every IPv4 interface.
        host = self.host or "0.0.0.0"
        kind = "tcp6" if ":" in host else "tcp"
        return f"{kind}:port={self.port}:interface={_quote(host)}"


def _split_host_port(address: str) -> tuple[str, str] | None:
    """Go's C{net.SplitHostPort}, returning C{None} where Go returns an error."""
    if address.startswith("["):
        end = address.find("]")
        if end < 0 or address[end + 1 : end + 2] != ":":
            return None
        host, port = address[1:end], address[end + 2 :]
        if "[" in host or "]" in port or "[" in port:
            return None
        return host, port
    host, colon, port = address.rpartition(":")
    if not colon or ":" in host or "[" in address or "]" in address:
        return None
    return host, port


def _quote(value: str) -> str:
    # Endpoint strings split on ':' and '='; a backslash escapes them.
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def describe_port(port: IListeningPort) -> tuple[str, int]:
    """The printable address and the port number (-1 for a unix socket) of a listening port."""
    address: Any = port.getHost()
    name = getattr(address, "name", None)
    if name is not None:
        return (name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)), -1
    host: str = address.host
    number: int = address.port
    if ":" in host:
        return f"[{host}]:{number}", number
    return f"{host}:{number}", number


def listen_now(reactor: IReactorTime, address: ListenAddress, factory: IProtocolFactory) -> IListeningPort:
    """
    Listen on C{address}, returning the port or raising L{StartupError}.

    Binding here, synchronously, is what makes a busy port fail C{twistd}/C{twist} and the
    console script at once.

    @param reactor: a reactor that also provides C{IReactorTCP} and C{IReactorUNIX}.
    """
    listener: Any = reactor
    try:
        if address.is_unix:
            port: IListeningPort = listener.listenUNIX(
                address.path, factory, backlog=LISTEN_BACKLOG, mode=UNIX_SOCKET_MODE, wantPID=False
            )
        else:
            # Go's empty host means every interface; we bind every IPv4 interface.
            port = listener.listenTCP(
                address.port, factory, backlog=LISTEN_BACKLOG, interface=address.host or "0.0.0.0"
            )
    except CannotListenError as e:
        raise StartupError(str(e)) from None
    return port


def display_address(address: ListenAddress) -> str:
    if address.is_unix:
        return address.path
    if ":" in address.host:
        return f"[{address.host}]:{address.port}"
    return f"{address.host}:{address.port}"
