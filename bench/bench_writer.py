"""
C{python -m bench.bench_writer}: publish as fast as possible for C{--runfor}, like NSQ's
bench_writer: C{--connections} processes, each sending C{PUB} (C{--batch-size 1}) or C{MPUB}
batches of C{--size}-byte bodies and waiting for each C{OK}.

    python -m bench.bench_writer --runfor 10s --size 100 --batch-size 200 --topic T \\
        --nsqd-tcp-address 127.0.0.1:4150 --connections 2
"""

from __future__ import annotations

import argparse

from bench.tools import add_common, client_config, emit_rate, go_duration
from bench.workloads import Client, run_clients


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_writer", description=__doc__)
    add_common(parser)
    parser.add_argument("--runfor", type=go_duration, default=10.0, help="how long to publish (Go duration)")
    parser.add_argument("--batch-size", type=int, default=200, help="messages per MPUB (1: PUB)")
    parser.add_argument("--connections", type=int, default=2, help="publishing connections (processes)")
    parser.add_argument("--count", type=int, default=0, help="stop each connection after this many messages")
    args = parser.parse_args(argv)
    config = client_config(args, body_size=args.size, batch=args.batch_size)
    config["duration_s" if not args.count else "count"] = args.count or args.runfor
    results = run_clients(
        [Client("publish", config) for _ in range(args.connections)], timeout_s=args.runfor + 600
    )
    emit_rate(args.json, "PUB" if args.batch_size == 1 else f"MPUB x{args.batch_size}", results, args.size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
