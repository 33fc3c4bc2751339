"""
C{python -m bench.latency}: publish-to-delivery latency. One publisher sends C{PUB} at a fixed
C{--rate}, stamping C{time.monotonic_ns} in each body; one consumer at C{RDY --rdy} takes the
time each message's read returned. Prints p50/p90/p99/p99.9/max after C{--warmup} messages.

    python -m bench.latency --rate 1000 --count 5000 --rdy 1 --nsqd-tcp-address 127.0.0.1:4150
"""

from __future__ import annotations

import argparse

from bench.report import _duration_us
from bench.tools import add_common, emit
from bench.workloads import Client, run_clients


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    add_common(parser, topic="latency")
    parser.set_defaults(size=100)
    parser.add_argument("--channel", default="ch")
    parser.add_argument("--rate", type=int, default=1000, help="messages per second")
    parser.add_argument("--count", type=int, default=5000, help="messages measured")
    parser.add_argument("--warmup", type=int, default=500, help="messages sent first and not measured")
    parser.add_argument("--rdy", type=int, default=1)
    args = parser.parse_args(argv)
    host, port = args.nsqd_tcp_address
    base = {"host": host, "port": port, "topic": args.topic}
    consumer = Client(
        "latency-consume",
        {
            **base,
            "channel": args.channel,
            "rdy": args.rdy,
            "warmup": args.warmup,
            "count": args.count,
            "timeout_s": 30.0,
        },
    )
    total = args.warmup + args.count
    publisher = Client("latency-publish", {**base, "body_size": args.size, "count": total, "rate": args.rate})
    summary, published = run_clients([consumer, publisher], timeout_s=total / args.rate + 120)
    summary["publisher_max_lag_us"] = published["max_lag_us"]
    line = (
        f"latency at {args.rate}/s, RDY {args.rdy}, {summary['count']} msgs: "
        + ", ".join(f"{k} {_duration_us(summary[k + '_us'])}" for k in ("p50", "p90", "p99", "p999", "max"))
        + f" (publisher fell behind by at most {_duration_us(published['max_lag_us'])})"
    )
    emit(args.json, [line], summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
