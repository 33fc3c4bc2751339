"""
C{python -m bench.bench_reader}: consume as fast as possible, like NSQ's bench_reader:
C{--connections} processes, each subscribing to C{--channel} with C{RDY --rdy} and FINning every
message, for C{--runfor} or until nothing arrives for C{--idle} (the channel is empty).

    python -m bench.bench_reader --runfor 10s --topic T --channel C --rdy 2500 \\
        --nsqd-tcp-address 127.0.0.1:4150 --connections 2
"""

from __future__ import annotations

import argparse

from bench.tools import add_common, client_config, emit_rate, go_duration
from bench.workloads import Client, run_clients


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_reader", description=__doc__)
    add_common(parser)
    parser.add_argument("--channel", default="ch")
    parser.add_argument("--runfor", type=go_duration, default=10.0, help="longest time to consume")
    parser.add_argument("--rdy", type=int, default=2500, help="RDY count of each connection")
    parser.add_argument("--connections", type=int, default=2, help="consuming connections (processes)")
    parser.add_argument("--idle", type=go_duration, default=2.0, help="stop after this long with nothing new")
    args = parser.parse_args(argv)
    config = client_config(
        args,
        channel=args.channel,
        rdy=args.rdy,
        first_s=args.runfor,
        idle_s=args.idle,
        duration_s=args.runfor,
    )
    results = run_clients(
        [Client("consume", config) for _ in range(args.connections)], timeout_s=args.runfor + 600
    )
    emit_rate(args.json, "SUB", results, args.size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
