"""
C{nsq_to_file}: consume topics into newline-delimited files, as Go's C{nsq_to_file} does.

One consumer and one L{FileLogger} per topic. Topics are the C{--topic}s, or every topic that
the lookupd list (re-read every C{--topic-refresh}) matching C{--topic-pattern}. Messages are
finished only once they are fsynced (see L{twisted_nsq.apps._file_logger}). SIGHUP closes the
files (the next ones get the next revision); SIGINT and SIGTERM stop the consumers, sync and
finish what was received, close the files and exit 0.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Protocol

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import ILogFilterPredicate, LogEvent, Logger, PredicateResult
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_nsq._cli import FlagError, FlagSpec, Kind, parse_command_line
from twisted_nsq._log import level_named
from twisted_nsq.apps._common import (
    MAX_IN_FLIGHT,
    check_sources,
    consumer_flags,
    make_consumer,
    parse_options,
    user_agent,
)
from twisted_nsq.apps._console import parse_checked
from twisted_nsq.apps._file_logger import (
    FileLogger,
    FileOptions,
    Runner,
    compute_filename_format,
    host_identifier,
    rev_required,
)

PROGRAM = "nsq_to_file"

_log = Logger()

TO_FILE_FLAGS: tuple[FlagSpec, ...] = consumer_flags(
    FlagSpec("log-level", Kind.STRING, "info", "set log verbosity: debug, info, warn, error, or fatal"),
    FlagSpec("log-prefix", Kind.STRING, "[nsq_to_file] ", "log message prefix"),
    FlagSpec("channel", Kind.STRING, "nsq_to_file", "nsq channel"),
    MAX_IN_FLIGHT,
    FlagSpec("output-dir", Kind.STRING, "/tmp", "directory to write output files to"),
    FlagSpec("work-dir", Kind.STRING, "", "directory for in-progress files before moving to output-dir"),
    FlagSpec(
        "datetime-format",
        Kind.STRING,
        "%Y-%m-%d_%H",
        "strftime compatible format for <DATETIME> in filename format",
    ),
    FlagSpec(
        "filename-format",
        Kind.STRING,
        "<TOPIC>.<HOST><REV>.<DATETIME>.log",
        "output filename format (<TOPIC>, <HOST>, <PID>, <DATETIME>, <REV> are replaced. "
        "<REV> is increased when file already exists)",
    ),
    FlagSpec(
        "host-identifier",
        Kind.STRING,
        "",
        "value to output in log filename in place of hostname. "
        "<SHORT_HOST> and <HOSTNAME> are valid replacement tokens",
    ),
    FlagSpec("gzip-level", Kind.INT, 6, "gzip compression level (1-9, 1=BestSpeed, 9=BestCompression)"),
    FlagSpec("gzip", Kind.BOOL, False, "gzip output files."),
    FlagSpec("skip-empty-files", Kind.BOOL, False, "skip writing empty files"),
    FlagSpec("topic-refresh", Kind.DURATION, 60.0, "how frequently the topic list should be refreshed"),
    FlagSpec("topic-pattern", Kind.STRING, "", "only log topics matching the following pattern"),
    FlagSpec("rotate-size", Kind.INT, 0, "rotate the file when it grows bigger than rotate-size bytes"),
    FlagSpec("rotate-interval", Kind.DURATION, 0.0, "rotate the file every duration"),
    FlagSpec("sync-interval", Kind.DURATION, 30.0, "sync file to disk every duration"),
    FlagSpec("http-client-connect-timeout", Kind.DURATION, 2.0, "timeout for HTTP connect"),
    FlagSpec("http-client-request-timeout", Kind.DURATION, 5.0, "timeout for HTTP request"),
    FlagSpec("topic", Kind.STRING_LIST, [], "nsq topic (may be given multiple times)", attr="topics"),
)


def check_values(values: dict[str, Any], *, hostname: str, pid: int) -> dict[str, Any]:
    """
    Validate the flags the way Go's C{nsq_to_file} does (with its messages) and fill in what
    depends on others: C{work_dir} (the output dir by default), C{pattern} (the compiled
    C{--topic-pattern}, or C{None}), C{identifier} (what C{<HOST>} becomes), C{pid},
    C{file_options} and C{consumer_options}.

    @raise FlagError: a missing, invalid or contradictory flag.
    """
    try:
        level_named(values["log_level"])
    except ValueError:
        raise FlagError("--log-level is invalid") from None
    if not values["channel"]:
        raise FlagError("--channel is required")
    if values["http_client_connect_timeout"] <= 0:
        raise FlagError("--http-client-connect-timeout should be positive")
    if values["http_client_request_timeout"] <= 0:
        raise FlagError("--http-client-request-timeout should be positive")
    nsqd, lookupd = values["nsqd_tcp_addresses"], values["lookupd_http_addresses"]
    if not nsqd and not lookupd:
        # Go's nsq_to_file alone ends this message with a full stop.
        raise FlagError("--nsqd-tcp-address or --lookupd-http-address required.")
    check_sources(nsqd, lookupd)
    if not 1 <= values["gzip_level"] <= 9:
        raise FlagError(f"invalid --gzip-level value ({values['gzip_level']}), should be 1-9")
    if not values["topics"] and not values["topic_pattern"]:
        raise FlagError("--topic or --topic-pattern required")
    if not values["topics"] and not lookupd:
        raise FlagError("--lookupd-http-address must be specified when no --topic specified")
    if values["max_in_flight"] < 1:
        raise FlagError("--max-in-flight must be at least 1")
    if values["sync_interval"] <= 0:
        raise FlagError("--sync-interval should be positive")
    try:
        values["pattern"] = re.compile(values["topic_pattern"]) if values["topic_pattern"] else None
    except re.error as e:
        raise FlagError(f"invalid --topic-pattern {values['topic_pattern']!r}: {e}") from None
    if not values["work_dir"]:
        values["work_dir"] = values["output_dir"]
    keep_rev = rev_required(
        gzip=values["gzip"],
        rotate_size=values["rotate_size"],
        rotate_interval=values["rotate_interval"],
        work_dir=values["work_dir"],
        output_dir=values["output_dir"],
    )
    values["keep_rev"] = keep_rev
    values["identifier"] = host_identifier(hostname, values["host_identifier"])
    values["pid"] = pid
    try:
        compute_filename_format(
            values["filename_format"],
            "topic",
            identifier=values["identifier"],
            pid=pid,
            keep_rev=keep_rev,
            gzip=values["gzip"],
        )
    except ValueError as e:
        raise FlagError(str(e)) from None
    values["file_options"] = FileOptions(
        output_dir=values["output_dir"],
        work_dir=values["work_dir"],
        datetime_format=values["datetime_format"],
        gzip=values["gzip"],
        gzip_level=values["gzip_level"],
        rotate_size=values["rotate_size"],
        rotate_interval=values["rotate_interval"],
        skip_empty_files=values["skip_empty_files"],
        max_in_flight=values["max_in_flight"],
    )
    options = parse_options(values["consumer_opt"], "consumer-opt", consumer=True)
    # The flag wins over a max_in_flight in --consumer-opt, as in Go.
    options.pop("max_in_flight", None)
    options.setdefault("user_agent", user_agent(PROGRAM))
    values["consumer_options"] = options
    return values


class TopicConsumer(Protocol):
    """What L{NSQToFile} needs of a topic's consumer (L{twisted_nsq.client.Consumer} provides it)."""

    def start(self) -> None: ...

    def stop(self) -> Deferred[None]: ...

    def is_starved(self) -> bool: ...


#: Makes the consumer of a topic, given the topic and its message handler.
ConsumerFactory = Callable[[str, Callable[[Any], object]], TopicConsumer]


def lookupd_topics_url(address: str) -> str:
    """The C{/topics} URL of a lookupd given as C{host:port} or as an C{http(s)://} URL."""
    if address.startswith(("http://", "https://")):
        return address.rstrip("/") + "/topics"
    return f"http://{address}/topics"


def topics_from_reply(reply: object) -> list[str]:
    """The topic names in a lookupd C{/topics} reply (raw, or in the pre-1.0 C{data} wrapper)."""
    if isinstance(reply, dict) and isinstance(reply.get("data"), dict):
        reply = reply["data"]
    topics = reply.get("topics") if isinstance(reply, dict) else None
    return [topic for topic in topics or [] if isinstance(topic, str)]


def _loop_failed(failure: Failure, name: str) -> None:
    _log.failure("{name} timer stopped", failure, name=name)


class NSQToFile:
    """
    The whole program without its process: a consumer and a L{FileLogger} per topic, the sync
    timer, the topic discovery, SIGHUP (L{hup}) and the drain (L{stop}).

    @param http_client: treq's C{get(url, timeout=)} for the lookupd C{/topics} queries.
    @param on_fatal: called once when a file operation fails; the program should stop, exit 1.
    """

    def __init__(
        self,
        values: dict[str, Any],
        clock: IReactorTime,
        run_io: Runner,
        consumer_factory: ConsumerFactory,
        http_client: Any = None,
        *,
        on_fatal: Callable[[Failure], object] | None = None,
        tz: Any = None,
    ) -> None:
        self.values = values
        self.loggers: dict[str, FileLogger] = {}
        self.consumers: dict[str, TopicConsumer] = {}
        self._clock = clock
        self._run_io = run_io
        self._consumer_factory = consumer_factory
        self._http = http_client
        self._on_fatal = on_fatal
        self._tz = tz
        self._sync_loop: LoopingCall | None = None
        self._refresh_loop: LoopingCall | None = None
        self._stopping: Deferred[None] | None = None

    def start(self) -> None:
        """Start the given topics, the sync timer and (without C{--topic}) the topic discovery."""
        for topic in self.values["topics"]:
            self.add_topic(topic)
        self._sync_loop = LoopingCall(self.tick)
        self._sync_loop.clock = self._clock
        self._sync_loop.start(self.values["sync_interval"], now=False).addErrback(_loop_failed, "sync")
        if not self.values["topics"] and self.values["topic_refresh"] > 0:
            self._refresh_loop = LoopingCall(self.refresh)
            self._refresh_loop.clock = self._clock
            # Go waits one interval before the first query; asking at once loses nothing.
            refreshing = self._refresh_loop.start(self.values["topic_refresh"], now=True)
            refreshing.addErrback(_loop_failed, "topic refresh")

    def add_topic(self, topic: str) -> None:
        """Consume C{topic} into its files, unless it is known already or fails the pattern."""
        if topic in self.loggers or self._stopping is not None:
            return
        pattern = self.values["pattern"]
        if pattern is not None and pattern.search(topic) is None:
            _log.debug(
                "skipping topic {topic} (doesn't match pattern {pattern})",
                topic=topic,
                pattern=self.values["topic_pattern"],
            )
            return
        values = self.values
        try:
            filename_format = compute_filename_format(
                values["filename_format"],
                topic,
                identifier=values["identifier"],
                pid=values["pid"],
                keep_rev=values["keep_rev"],
                gzip=values["gzip"],
            )
            logger = FileLogger(
                topic,
                values["channel"],
                filename_format,
                values["file_options"],
                self._clock,
                self._run_io,
                on_fatal=self._fatal,
                tz=self._tz,
            )
            consumer = self._consumer_factory(topic, logger.handle)
        except ValueError as e:
            _log.error("couldn't create logger for new topic {topic}: {error}", topic=topic, error=e)
            return
        logger.starved = consumer.is_starved
        self.loggers[topic] = logger
        self.consumers[topic] = consumer
        consumer.start()

    def tick(self) -> None:
        """The C{--sync-interval} timer of every topic."""
        for logger in list(self.loggers.values()):
            logger.tick()

    def refresh(self) -> Deferred[None]:
        """Ask every lookupd for its topics and start the new ones."""
        if self._http is None:
            return succeed(None)
        timeout = self.values["http_client_request_timeout"]
        queries = []
        for address in self.values["lookupd_http_addresses"]:
            query: Deferred[Any] = maybeDeferred(self._http.get, lookupd_topics_url(address), timeout=timeout)
            query.addCallback(lambda response: response.json())
            queries.append(query)

        def merge(results: list[tuple[bool, Any]]) -> None:
            found: list[str] = []
            errors: list[str] = []
            for ok, result in results:
                if ok:
                    for topic in topics_from_reply(result):
                        if topic not in found:
                            found.append(topic)
                else:
                    errors.append(result.getErrorMessage())
            if errors and len(errors) == len(results):
                _log.error("could not retrieve topic list: {errors}", errors="; ".join(errors))
                return
            for topic in found:
                self.add_topic(topic)

        return DeferredList(queries, consumeErrors=True).addCallback(merge)

    def hup(self) -> None:
        """SIGHUP: sync and close every file; the next ones open with the next revision."""
        for logger in list(self.loggers.values()):
            logger.hup()

    def stop(self) -> Deferred[None]:
        """
        Stop taking messages, sync and finish what was received, close the files. The same
        Deferred for every call.
        """
        if self._stopping is not None:
            return self._stopping
        for loop in (self._sync_loop, self._refresh_loop):
            if loop is not None and loop.running:
                loop.stop()
        for logger in self.loggers.values():
            logger.stop_taking()
        stopped = DeferredList([consumer.stop() for consumer in self.consumers.values()], consumeErrors=True)

        def close(_: object) -> Deferred[Any]:
            return DeferredList([logger.close() for logger in self.loggers.values()], consumeErrors=True)

        self._stopping = stopped.addCallback(close).addCallback(lambda _: None)
        return self._stopping

    def _fatal(self, failure: Failure) -> None:
        if self._on_fatal is not None:
            self._on_fatal(failure)


@implementer(ILogFilterPredicate)
class _Quiet:
    """Drops Twisted's factory start/stop chatter, which every reconnection repeats."""

    def __call__(self, event: LogEvent) -> Any:
        text = event.get("log_format") or ""
        if isinstance(text, str) and text.startswith(("Starting factory", "Stopping factory")):
            return PredicateResult.no
        return PredicateResult.maybe


def _http_client(reactor: Any, connect_timeout: float) -> Any:
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    # Not persistent: an idle connection would outlive the stop.
    pool = HTTPConnectionPool(reactor, persistent=False)  # type: ignore[no-untyped-call]
    agent = Agent(reactor, connectTimeout=connect_timeout, pool=pool)  # type: ignore[no-untyped-call]
    return HTTPClient(agent)


def main(argv: Sequence[str] | None = None) -> None:
    """The C{nsq_to_file} console script."""
    from twisted.internet import reactor as global_reactor
    from twisted.internet.threads import deferToThreadPool
    from twisted.logger import FilteringLogObserver, globalLogBeginner
    from twisted.python.threadpool import ThreadPool

    from twisted_nsq._log import GoLogObserver

    arguments = sys.argv[1:] if argv is None else list(argv)

    def check(values: dict[str, Any]) -> dict[str, Any]:
        extra = parse_command_line(TO_FILE_FLAGS, arguments).arguments
        if extra:
            raise FlagError(f"unknown arguments: {extra}")
        return check_values(values, hostname=socket.gethostname(), pid=os.getpid())

    checked = parse_checked(PROGRAM, TO_FILE_FLAGS, arguments, check, stdout=sys.stdout, stderr=sys.stderr)

    reactor: Any = global_reactor
    observer = GoLogObserver(sys.stderr, prefix=checked["log_prefix"], level=checked["log_level"])
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [_Quiet()])], redirectStandardIO=False)

    # The writes and fsyncs of every topic; each topic's operations still run one at a time.
    pool = ThreadPool(minthreads=1, maxthreads=4, name=PROGRAM)
    pool.start()
    run_io: Runner = functools.partial(deferToThreadPool, reactor, pool)
    http = _http_client(reactor, checked["http_client_connect_timeout"])

    def consumer_of(topic: str, handler: Callable[[Any], object]) -> TopicConsumer:
        return make_consumer(reactor, checked, topic, handler)

    status = 0
    stopping = False

    def shut_down(name: str) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        _log.info("{signal}: shutting down", signal=name)
        app.stop().addBoth(lambda _: reactor.stop())

    def fatal(failure: Failure) -> None:
        nonlocal status
        status = 1
        shut_down("fatal error")

    app = NSQToFile(checked, reactor, run_io, consumer_of, http, on_fatal=fatal)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            reactor.callFromThread(app.hup)
        else:
            reactor.callFromThread(shut_down, signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    reactor.callWhenRunning(app.start)
    try:
        reactor.run(installSignalHandlers=False)
    finally:
        pool.stop()
    raise SystemExit(status)


if __name__ == "__main__":
    main()
