"""
Test helpers shared by the daemons' test suites: the checks every C{twist} plugin's Options must
pass (C{--help}, C{--version}, C{makeService}, plugin discovery), and what service tests with
real listeners need (trial's reactor, the daemon's log lines, a listener's port number, a TCP
client that records what it receives).
"""

from __future__ import annotations

import contextlib
import io
import platform
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.application.service import IServiceMaker
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python.failure import Failure
from twisted.python.usage import Options
from twisted.trial.unittest import SynchronousTestCase

__all__ = [
    "RecordingClient",
    "assert_help",
    "assert_make_service",
    "assert_plugin",
    "assert_version",
    "capture_messages",
    "connect_tcp",
    "listening_port",
    "port_number",
    "trial_reactor",
]


def assert_help(test: SynchronousTestCase, options: Options, program: str, flags: Sequence[str]) -> None:
    """C{--help} prints C{program}'s usage with every line of C{flags} and exits 0."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), test.assertRaises(SystemExit) as caught:
        options.parseOptions(["--help"])
    test.assertEqual(caught.exception.code, 0)
    test.assertIn(f"Usage of {program}:", out.getvalue())
    for flag in flags:
        test.assertIn(flag, out.getvalue())


def assert_version(test: SynchronousTestCase, options: Options, program: str) -> None:
    """C{--version} prints Go's version line for C{program} and exits 0."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), test.assertRaises(SystemExit) as caught:
        options.parseOptions(["--version"])
    test.assertEqual(caught.exception.code, 0)
    test.assertEqual(
        out.getvalue(), f"{program} v1.3.0-twisted (built w/python{platform.python_version()})\n"
    )


def assert_make_service(
    test: SynchronousTestCase,
    options: Any,
    argv: Sequence[str],
    make_service: Callable[[Any], Any],
    service_class: type,
    parsed: Callable[[Any], object],
) -> None:
    """
    C{make_service} builds an unstarted C{service_class} from the options C{argv} parses to.

    @param parsed: the daemon options out of the plugin's Options (e.g. its C{nsqd_options}).
    """
    options.parseOptions(list(argv))
    service = make_service(options)
    test.assertIsInstance(service, service_class)
    test.assertIs(service.options, parsed(options))
    test.assertFalse(service.running)


def assert_plugin(test: SynchronousTestCase, tapname: str, module: str, options_class: type) -> None:
    """C{twist} finds the C{tapname} plugin, which names the tap C{module} and its Options."""
    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    test.assertIn(tapname, makers)
    maker = makers[tapname]
    test.assertEqual(maker.module, module)  # type: ignore[attr-defined]
    test.assertIsInstance(maker.options(), options_class)


def trial_reactor() -> IReactorTime:
    """The reactor trial runs, handed explicitly to everything the tests build."""
    from twisted.internet import reactor

    return cast(IReactorTime, reactor)


def capture_messages(test: SynchronousTestCase) -> list[str]:
    """
    The formatted lines twisted-nsq logs from now until the end of C{test} (library chatter left
    out), in order; the list fills as they are logged.
    """
    messages: list[str] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_namespace", "").startswith("twisted_nsq"):
            messages.append(formatEvent(event))

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    test.addCleanup(globalLogPublisher.removeObserver, observer)
    return messages


def port_number(port: IListeningPort | None) -> int:
    """The TCP port a listener is bound to (it must be bound)."""
    assert port is not None
    number: int = port.getHost().port  # type: ignore[attr-defined]
    return number


def listening_port(service: object, name: str) -> int:
    """The port of a daemon service's C{<name>_listening_port} (C{tcp}, C{http}, ...)."""
    return port_number(getattr(service, f"{name}_listening_port"))


class RecordingClient(Protocol):
    """Collects what the server sends; L{when_received} waits until enough of it has arrived."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Deferred[None] = Deferred()
        self._waiting: list[tuple[int, Deferred[bytes]]] = []

    def when_received(self, size: int) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self._waiting.append((size, d))
        self.dataReceived(b"")
        return d

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        waiting, self._waiting = self._waiting, []
        for size, d in waiting:
            if len(self.received) >= size:
                d.callback(bytes(self.received))
            else:
                self._waiting.append((size, d))

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.lost.callback(None)


async def connect_tcp(reactor: IReactorTime, port: int) -> RecordingClient:
    """A L{RecordingClient} connected to C{127.0.0.1:port} (5 s connect timeout)."""
    endpoint = TCP4ClientEndpoint(cast(IReactorTCP, reactor), "127.0.0.1", port, timeout=5)
    client = await endpoint.connect(Factory.forProtocol(RecordingClient))
    assert isinstance(client, RecordingClient)
    return client
