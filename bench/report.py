"""Turn the workloads' result rows into the tables C{make bench} prints."""

from __future__ import annotations

import statistics
import textwrap
from collections.abc import Sequence
from typing import Any

#: Figures for Go nsqd 1.3.0 on this machine kind, quoted for scale; the benchmark does not run Go.
GO_REFERENCE = (
    "For scale (quoted, not measured by this run): Go nsqd 1.3.0 on this 2-core machine kind does "
    "~30k msgs/s PUB one at a time, ~540k msgs/s MPUB x200, ~300k msgs/s consuming (RDY 2500, FIN "
    "each); at 1,000 msgs/s, RDY 1: p50 92 us, p99 265 us; RDY 100: p50 42 ms, p99 98 ms."
)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        # The first column (the name) is left-aligned, the figures right-aligned.
        return "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _int(value: float) -> str:
    return f"{value:,.0f}"


def _mib(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:,.1f}"


def _rss(kib: float, peak_kib: float | None) -> str:
    """VmRSS, with VmHWM when known."""
    return f"{_mib(kib)} MiB" + ("" if peak_kib is None else f" (peak {_mib(peak_kib)} MiB)")


def _duration_us(us: float | None) -> str:
    """Microseconds shown in the unit that keeps them readable."""
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:.0f} us"
    if us < 1_000_000:
        return f"{us / 1000:.1f} ms"
    return f"{us / 1e6:.2f} s"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def throughput_table(rows: Sequence[dict[str, Any]], disk: bool = False) -> str:
    """One line per throughput row; C{disk} adds the bytes nsqd wrote to storage per message."""
    body = []
    for row in rows:
        cpu = row.get("nsqd_cpu_us_per_msg")
        missing = row.get("missing")
        cells = [
            row["name"],
            _int(row["messages"]),
            f"{row['seconds']:.2f}",
            _int(row["msgs_per_s"]),
            f"{row['mb_per_s']:.1f}",
            "-" if cpu is None else f"{cpu:.1f}",
            _mib(row.get("rss_kib")),
            _mib(row.get("peak_rss_kib")),
        ]
        if disk:
            written = row.get("nsqd_disk_write_bytes")
            cells.append(
                "-" if written is None or not row["messages"] else f"{written / row['messages']:.0f}"
            )
        cells.append("-" if not missing else _int(missing))
        body.append(cells)
    headers = ["workload", "msgs", "secs", "msgs/s", "MB/s", "nsqd CPU us/msg", "nsqd RSS MiB", "peak MiB"]
    if disk:
        headers.append("disk B/msg")
    headers.append("missing")
    return _table(headers, body)


def latency_table(rows: Sequence[dict[str, Any]]) -> str:
    body = [
        [
            row["name"],
            f"{row['rate']:,}/s",
            str(row["rdy"]),
            _int(row["count"]),
            _duration_us(row["p50_us"]),
            _duration_us(row["p90_us"]),
            _duration_us(row["p99_us"]),
            _duration_us(row["p999_us"]),
            _duration_us(row["max_us"]),
            _duration_us(row["publisher_max_lag_us"]),
        ]
        for row in rows
    ]
    headers = ["workload", "rate", "RDY", "msgs", "p50", "p90", "p99", "p99.9", "max", "pub lag max"]
    return _table(headers, body)


def server_table(rows: Sequence[dict[str, Any]]) -> str:
    """nsqd's own figures: memory, start-up and shutdown, over every nsqd the run started."""
    # One row per nsqd started: the last row of each workload carries the figures read at its end.
    started = list({r["workload"]: r for r in rows if "idle_rss_kib" in r}.values())
    if not started:
        return ""
    idle = [r["idle_rss_kib"] for r in started]
    tcp = [r["tcp_ready_s"] for r in started]
    ping = [r["ping_ready_s"] for r in started if r.get("ping_ready_s") is not None]
    body = [
        ["idle RSS at start (median)", f"{_mib(statistics.median(idle))} MiB"],
        ["start to 'TCP: listening' (median)", f"{statistics.median(tcp):.2f} s"],
        ["start to first /ping OK (median)", f"{statistics.median(ping):.2f} s" if ping else "no HTTP API"],
    ]
    for row in rows:
        if "rss_after_fill_kib" in row:
            on_disk = row.get("data_dir_after_fill_bytes")
            body.append(
                [
                    f"RSS after filling {row['expected']:,} msgs ({row['workload']})",
                    f"{_rss(row['rss_after_fill_kib'], row.get('peak_rss_after_fill_kib'))}"
                    + ("" if on_disk is None else f", {on_disk / 1e6:,.0f} MB on disk"),
                ]
            )
            body.append(
                [
                    f"RSS after draining them ({row['workload']})",
                    _rss(row["rss_kib"], row["peak_rss_kib"]),
                ]
            )
    peak = max(started, key=lambda r: r["peak_rss_kib"])
    body.append([f"peak RSS (VmHWM, {peak['workload']})", f"{_mib(peak['peak_rss_kib'])} MiB"])
    for row in started:
        shutdown = "killed after timeout" if row.get("killed") else f"{_seconds(row.get('shutdown_s'))} s"
        body.append([f"SIGTERM to exit after {row['workload']}", shutdown])
    return _table(["nsqd", "value"], body)


def render(rows: Sequence[dict[str, Any]], errors: Sequence[dict[str, str]]) -> str:
    """Every table, then the reference line and any workload that failed."""
    parts = []
    throughput = [r for r in rows if r.get("kind") == "throughput" and not r.get("nsqd_flags")]
    on_disk = [r for r in rows if r.get("kind") == "throughput" and r.get("nsqd_flags")]
    latency = [r for r in rows if r.get("kind") == "latency"]
    if throughput:
        parts.append("Throughput (MB = 10^6 bytes of message body)\n" + throughput_table(throughput))
    if on_disk:
        parts.append(
            "Throughput with disk queues (--mem-queue-size=0, or 10000 for backlog-5m) and --durable;\n"
            "disk B/msg = bytes nsqd dirtied for storage (/proc/PID/io write_bytes) per message\n"
            + throughput_table(on_disk, disk=True)
        )
    if latency:
        parts.append("Publish-to-delivery latency\n" + latency_table(latency))
    server = server_table(rows)
    if server:
        parts.append(server)
    parts.append(textwrap.fill(GO_REFERENCE, width=100))
    for error in errors:
        parts.append(f"FAILED {error['name']}: {error['error']}")
    return "\n\n".join(parts)
