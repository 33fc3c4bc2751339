"""
C{python -m bench.fill_drain}: fill a channel, then drain it. C{--count} messages of C{--size}
bytes go in by C{MPUB} batches on C{--connections} connections (the channel is created first
with a C{SUB}), then C{--connections} consumers at C{RDY --rdy} FIN every one until the channel
is empty. Prints both rates and any message that did not come back.

    python -m bench.fill_drain --count 1000000 --size 100 --topic T --channel C --rdy 2500 \\
        --nsqd-tcp-address 127.0.0.1:4150
"""

from __future__ import annotations

import argparse

from bench.client import Connection
from bench.tools import add_common, emit, go_duration, rate_line, span_s
from bench.workloads import Client, run_clients


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fill_drain", description=__doc__)
    add_common(parser)
    parser.add_argument("--channel", default="ch")
    parser.add_argument("--count", type=int, default=1_000_000, help="messages to put in")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--rdy", type=int, default=2500)
    parser.add_argument("--connections", type=int, default=2, help="publishers, then consumers")
    parser.add_argument("--idle", type=go_duration, default=2.0, help="the channel is empty after this long")
    args = parser.parse_args(argv)
    per_connection = args.count // args.connections
    if per_connection % args.batch_size:
        parser.error("--count must be a multiple of --connections times --batch-size")
    host, port = args.nsqd_tcp_address
    conn = Connection(host, port, timeout=10.0)
    try:
        conn.subscribe(args.topic, args.channel)
    finally:
        conn.close()
    config = {
        "host": host,
        "port": port,
        "topic": args.topic,
        "body_size": args.size,
        "batch": args.batch_size,
    }
    filled = run_clients(
        [Client("publish", {**config, "count": per_connection}) for _ in range(args.connections)],
        timeout_s=3600,
    )
    consume = {**config, "channel": args.channel, "rdy": args.rdy, "first_s": 30.0, "idle_s": args.idle}
    drained = run_clients([Client("consume", consume) for _ in range(args.connections)], timeout_s=3600)
    put = sum(r["messages"] for r in filled)
    got = sum(r["messages"] for r in drained)
    fill_s, drain_s = span_s(filled), span_s(drained)
    emit(
        args.json,
        [
            rate_line("fill", put, fill_s, args.size),
            rate_line("drain", got, drain_s, args.size),
            f"missing: {put - got}",
        ],
        {"filled": put, "fill_s": fill_s, "drained": got, "drain_s": drain_s, "missing": put - got},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
