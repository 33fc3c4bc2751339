"""Turn the workloads' result rows into the tables C{make bench} prints."""

from __future__ import annotations

import statistics
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Figures for Go nsqd 1.3.0 on this machine kind, quoted for scale; the benchmark does not run Go.
GO_REFERENCE = (
    "Go figures are quoted from the issue (Go nsqd 1.3.0, its own bench tools, this 2-core machine "
    "kind), not measured by this run; they swing up to 2x with machine load. A range is compared "
    "at its top. Medians of the runs; 'runs' gives the lowest and highest msgs/s."
)

#: Go's RSS holding 1,000,000 100 B messages, and idle: the memory target is per queued message.
GO_RSS_1M_MIB = 255.0
GO_IDLE_RSS_MIB = 10.0
GO_BYTES_PER_MSG = (GO_RSS_1M_MIB - GO_IDLE_RSS_MIB) * 1024 * 1024 / 1_000_000


@dataclass(frozen=True)
class Target:
    """One row of the summary: which result, which figure of it, Go's figure and the goal."""

    label: str
    workload: str
    #: "rate" (msgs/s, higher is better), "p99" (lower), "bytes_per_msg", "idle_rss", "ping",
    #: "ceiling" (a client's ceiling, compared with the nsqd row named by C{against}) or "scale".
    kind: str
    go: float | None = None
    go_text: str = ""
    #: For a rate: the least fraction of Go's figure; for p99 and memory: the most multiple of it;
    #: for idle RSS and start-up: the limit itself.
    goal: float | None = None
    goal_text: str = ""
    against: str = ""


TARGETS = (
    Target("PUB 100 B, one at a time", "pub-100", "rate", 31_000, "31k", 0.8, ">= 80%"),
    Target("PUB 200 B, one at a time", "pub-200", "rate", 31_000, "31k", 0.8, ">= 80%"),
    Target("MPUB x200 100 B (mem-queue 1M, spills)", "mpub-100", "rate", 565_000, "565k", 0.5, ">= 50%"),
    Target("MPUB x200 200 B (mem-queue 1M, spills)", "mpub-200", "rate", 536_000, "536k", 0.5, ">= 50%"),
    Target("MPUB x200 100 B, all in memory", "mpub-100-mem", "rate", 1_300_000, "0.7M-1.3M", 0.5, ">= 50%"),
    Target("consume 100 B (RDY 2500, FIN each)", "consume-100", "rate", 580_000, "580k", 0.5, ">= 50%"),
    Target("consume 200 B (RDY 2500, FIN each)", "consume-200", "rate", 560_000, "560k", 0.5, ">= 50%"),
    Target("consume an ordered channel (RDY 100)", "ordered-consume", "rate"),
    Target("consume a channel ordered by 100 keys (RDY 100)", "ordered-key-consume", "rate"),
    Target("publish while consuming: publish", "pubsub-pub", "rate", 590_000, "590k", 0.5, ">= 50%"),
    Target("publish while consuming: consume", "pubsub-sub", "rate", 510_000, "510k", 0.5, ">= 50%"),
    Target("consume a disk backlog (mem-queue 0)", "consume-disk", "rate", 300_000, "300k", 0.5, ">= 50%"),
    Target("latency at 1,000/s, RDY 1", "latency-rdy1", "p99", 265, "92 us / 265 us", 2.0, "p99 <= 2x"),
    Target(
        "latency at 1,000/s, RDY 100", "latency-rdy100", "p99", 98_000, "42 ms / 98 ms", 0.1, "p99 <= Go/10"
    ),
    Target(
        "RSS holding 1M 100 B msgs (per msg)",
        "consume-100",
        "bytes_per_msg",
        GO_BYTES_PER_MSG,
        "255 MiB (257 B)",
        1.5,
        "<= 1.5x per msg",
    ),
    Target("idle RSS", "startup", "idle_rss", GO_IDLE_RSS_MIB, "10 MiB", 40.0, "< 40 MiB"),
    Target("start to first /ping OK", "startup", "ping", 0.0065, "6.5 ms", 0.5, "< 0.5 s"),
    Target("client ceiling: PUB 100 B (sink)", "sink-pub-100", "ceiling", against="pub-100"),
    Target("client ceiling: MPUB x200 100 B (sink)", "sink-mpub-100", "ceiling", against="mpub-100-mem"),
    Target("client ceiling: consume 100 B (sink)", "sink-consume-100", "ceiling", against="consume-100"),
    Target("10,000 idle connections, heartbeats", "scale-connections", "scale"),
    Target("10,000 topics, one channel each", "scale-topics", "scale"),
)


def aggregate(runs: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """
    One row per result name over several runs: the median of every numeric figure (the other
    fields from the first run), with C{runs} (how many) and C{runs_msgs_per_s} (each run's rate).
    """
    by_name: dict[str, list[dict[str, Any]]] = {}
    for rows in runs:
        for row in rows:
            by_name.setdefault(row["name"], []).append(row)
    merged = []
    for rows in by_name.values():
        row = dict(rows[0])
        for key in row:
            values = [r.get(key) for r in rows]
            numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if len(numbers) == len(values):
                row[key] = statistics.median(numbers)
        row["runs"] = len(rows)
        if "msgs_per_s" in row:
            row["runs_msgs_per_s"] = [r["msgs_per_s"] for r in rows]
        merged.append(row)
    return merged


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


def _error_for(name: str, errors: Sequence[dict[str, str]]) -> dict[str, str] | None:
    """The error of the workload that would have produced the row C{name}."""
    matches = [e for e in errors if name == e["name"] or name.startswith(e["name"] + "-")]
    return max(matches, key=lambda e: len(e["name"]), default=None)


def _rate(value: float) -> str:
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k" if value >= 1e4 else _int(value)


def _spread(row: dict[str, Any]) -> str:
    runs = row.get("runs_msgs_per_s") or []
    if len(runs) < 2:
        return "-"
    return f"{_rate(min(runs))}-{_rate(max(runs))}"


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def summary_table(rows: Sequence[dict[str, Any]], errors: Sequence[dict[str, str]]) -> str:
    """The one table the issue asks for: each yardstick row, ours against Go's, and the target."""
    by_name = {row["name"]: row for row in rows}
    body = []
    for target in TARGETS:
        row = by_name.get(target.workload)
        if target.kind == "ceiling" and row is not None and target.against not in by_name:
            row = None
        if row is None:
            error = _error_for(target.workload, errors)
            reason = f"error: {error['error']}" if error else "not run"
            body.append(
                [
                    target.label,
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    textwrap.shorten(reason, 60),
                    target.go_text or "-",
                    "-",
                    target.goal_text or "-",
                    "NO" if error else "-",
                ]
            )
            continue
        cells = {
            "rate": "-",
            "mb": "-",
            "p50": "-",
            "p99": "-",
            "rss": "-",
            "other": "-",
            "ratio": "-",
            "met": "-",
        }
        if row.get("rss_kib") is not None:
            cells["rss"] = f"{_mib(row['rss_kib'])} MiB"
        if "msgs_per_s" in row and target.kind in ("rate", "ceiling"):
            cells["rate"] = _int(row["msgs_per_s"])
            cells["mb"] = f"{row['mb_per_s']:.1f}"
            cells["other"] = f"runs {_spread(row)}" if row.get("runs", 1) > 1 else "-"
        if target.kind == "rate" and target.go is not None and target.goal is not None:
            ratio = row["msgs_per_s"] / target.go
            cells["ratio"] = f"{100 * ratio:.0f}%"
            cells["met"] = _met(ratio >= target.goal)
        elif target.kind == "rate":
            consume = by_name.get("consume-100")
            if consume is not None and consume["msgs_per_s"]:
                cells["ratio"] = f"{100 * row['msgs_per_s'] / consume['msgs_per_s']:.0f}% of consume-100"
        elif target.kind == "p99" and target.go is not None and target.goal is not None:
            cells["p50"] = _duration_us(row["p50_us"])
            cells["p99"] = _duration_us(row["p99_us"])
            cells["ratio"] = f"{row['p99_us'] / target.go:.2f}x"
            cells["met"] = _met(row["p99_us"] <= target.go * target.goal)
        elif target.kind == "bytes_per_msg" and target.go is not None and target.goal is not None:
            per_message = row.get("bytes_per_queued_msg")
            if per_message is not None:
                cells["rss"] = f"{_mib(row['rss_after_fill_kib'])} MiB"
                cells["other"] = f"{per_message:.0f} B/msg"
                cells["ratio"] = f"{per_message / target.go:.2f}x"
                cells["met"] = _met(per_message <= target.go * target.goal)
        elif target.kind == "idle_rss" and target.go is not None and target.goal is not None:
            idle_mib = row["idle_rss_kib"] / 1024
            cells["rss"] = f"{idle_mib:.1f} MiB"
            cells["ratio"] = f"{idle_mib / target.go:.1f}x"
            cells["met"] = _met(idle_mib < target.goal)
        elif target.kind == "ping" and target.go is not None and target.goal is not None:
            ping = row.get("ping_ready_s")
            cells["rss"] = "-"
            if ping is not None:
                cells["other"] = f"{ping * 1000:.0f} ms (TCP {row['tcp_ready_s'] * 1000:.0f} ms)"
                cells["ratio"] = f"{ping / target.go:.0f}x"
                cells["met"] = _met(ping < target.goal)
        elif target.kind == "ceiling":
            server = by_name[target.against]
            cells["rss"] = "-"
            if server["msgs_per_s"]:
                factor = row["msgs_per_s"] / server["msgs_per_s"]
                cells["ratio"] = f"{factor:.1f}x {target.against}"
                cells["met"] = _met(factor > 1.0)
        elif target.kind == "scale":
            cpu = row.get("nsqd_cpu_percent")
            extra = (
                f"{row['closed_during_hold'] + row['closed_before_hold']} closed, "
                f"{row['min_heartbeats']}-{row['max_heartbeats']} heartbeats each"
                if "min_heartbeats" in row
                else f"created in {row['create_s']:.1f} s"
            )
            cells["other"] = (
                f"CPU {cpu:.0f}%, {row['rss_per_item_bytes'] / 1024:.1f} KiB each, {extra}"
                if cpu is not None
                else extra
            )
            cells["met"] = _met(bool(row.get("held")))
        body.append(
            [
                target.label,
                cells["rate"],
                cells["mb"],
                cells["p50"],
                cells["p99"],
                cells["rss"],
                cells["other"],
                target.go_text or "-",
                cells["ratio"],
                target.goal_text or "-",
                cells["met"],
            ]
        )
    headers = [
        "row",
        "msgs/s",
        "MB/s",
        "p50",
        "p99",
        "nsqd RSS",
        "other",
        "Go 1.3.0",
        "ours/Go",
        "target",
        "met",
    ]
    return _table(headers, body)


def scale_table(rows: Sequence[dict[str, Any]]) -> str:
    """The scale workloads in full: RSS before and after, per item, CPU while holding."""
    body = []
    for row in rows:
        body.append(
            [
                row["name"],
                _int(row["count"]),
                f"{_mib(row['idle_rss_kib'])} MiB",
                f"{_mib(row['rss_kib'])} MiB",
                f"{row['rss_per_item_bytes']:,.0f}",
                f"{row['nsqd_cpu_percent']:.1f}%" if row.get("nsqd_cpu_percent") is not None else "-",
                f"{row['held_s']:.1f} s",
                f"{row['connect_s']:.1f} s" if "connect_s" in row else f"{row['create_s']:.1f} s",
            ]
        )
    headers = ["workload", "items", "RSS before", "RSS with them", "B/item", "nsqd CPU", "measured", "set-up"]
    return _table(headers, body)


def render(rows: Sequence[dict[str, Any]], errors: Sequence[dict[str, str]]) -> str:
    """The detail tables, then the summary table, the reference line and any failed workload."""
    parts = []
    throughput = [r for r in rows if r.get("kind") == "throughput" and not r.get("nsqd_flags")]
    on_disk = [r for r in rows if r.get("kind") == "throughput" and r.get("nsqd_flags")]
    latency = [r for r in rows if r.get("kind") == "latency"]
    scale = [r for r in rows if r.get("kind") == "scale"]
    if throughput:
        parts.append("Throughput (MB = 10^6 bytes of message body)\n" + throughput_table(throughput))
    if on_disk:
        parts.append(
            "Throughput with --mem-queue-size other than 10M, or --durable;\n"
            "disk B/msg = bytes nsqd dirtied for storage (/proc/PID/io write_bytes) per message\n"
            + throughput_table(on_disk, disk=True)
        )
    if latency:
        parts.append("Publish-to-delivery latency\n" + latency_table(latency))
    if scale:
        parts.append("Scale\n" + scale_table(scale))
    server = server_table(rows)
    if server:
        parts.append(server)
    parts.append(
        "Summary: ours against Go nsqd 1.3.0 and the issue's targets\n" + summary_table(rows, errors)
    )
    parts.append(textwrap.fill(GO_REFERENCE, width=100))
    for error in errors:
        parts.append(f"FAILED {error['name']}: {error['error']}")
    return "\n\n".join(parts)
