"""
What the command-line tools (L{bench.bench_writer}, L{bench.bench_reader}, L{bench.latency},
L{bench.fill_drain}) share: Go-style flags and the summary line Go's bench tools print.

Each tool runs the benchmark's load clients (L{bench.client}, one process per connection)
against any nsqd (or L{bench.sink}) given by C{--nsqd-tcp-address}.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from twisted_nsq._cli import parse_go_duration


def go_duration(text: str) -> float:
    """Seconds in a Go duration (C{10s}, C{1m30s}, C{250ms}); a bare number is seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_go_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}") from None


def host_port(text: str) -> tuple[str, int]:
    """C{host:port} (the host defaults to 127.0.0.1)."""
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        raise argparse.ArgumentTypeError(f"invalid address {text!r}: expected HOST:PORT")
    return host or "127.0.0.1", int(port)


def add_common(parser: argparse.ArgumentParser, topic: str = "sub_bench") -> None:
    """The flags every tool takes."""
    parser.add_argument("--nsqd-tcp-address", type=host_port, default=("127.0.0.1", 4150))
    parser.add_argument("--topic", default=topic)
    parser.add_argument("--size", type=int, default=200, help="message body size in bytes")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead")


def client_config(args: argparse.Namespace, **more: Any) -> dict[str, Any]:
    """A load client's config: nsqd's TCP address and the topic from L{add_common}'s flags, and C{more}."""
    host, port = args.nsqd_tcp_address
    return {"host": host, "port": port, "topic": args.topic, **more}


def rate_line(label: str, messages: int, seconds: float, size: int) -> str:
    """Go bench_writer's summary: duration, MB/s, ops/s and us/op."""
    if seconds <= 0 or not messages:
        return f"{label}: {messages} msgs in {seconds:.3f}s"
    return (
        f"{label}: duration: {seconds:.3f}s - {messages * size / seconds / 1e6:.3f}mb/s - "
        f"{messages / seconds:.3f}ops/s - {seconds / messages * 1e6:.3f}us/op ({messages:,} msgs)"
    )


def span_s(results: list[dict[str, Any]]) -> float:
    """Seconds from the first client's start to the last client's end."""
    active = [r for r in results if r["messages"]] or results
    end: int = max(r["end_ns"] for r in active)
    start: int = min(r["start_ns"] for r in active)
    return (end - start) / 1e9


def emit(as_json: bool, lines: list[str], document: dict[str, Any]) -> None:
    print(json.dumps(document) if as_json else "\n".join(lines))
    sys.stdout.flush()


def emit_rate(as_json: bool, label: str, results: list[dict[str, Any]], size: int) -> None:
    """Print the load clients' C{results} as one L{rate_line} (or, C{as_json}, their totals)."""
    messages = sum(r["messages"] for r in results)
    seconds = span_s(results)
    emit(
        as_json,
        [rate_line(label, messages, seconds, size)],
        {"messages": messages, "seconds": seconds, "msgs_per_s": messages / seconds if seconds else 0.0},
    )
