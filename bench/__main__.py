"""
C{python -m bench}: run the workloads against our nsqd, print the tables, write the JSON.

By default (C{make bench}) every repeated workload runs C{--runs} times (3) back to back, each
run with its own nsqd, and the tables show the medians; the scale workloads run once. C{--quick}
is a ~1 minute smoke run (smaller workloads, one run, 1,000 connections and topics),
C{--extras} adds the workloads that are not in the default run (HTTP, nsqlookupd, --durable,
twisted-nsq's client, the 5M backlog), C{--only NAME} (repeatable) picks workloads, and
C{--nsqd PATH} benchmarks another nsqd executable that takes the same flags.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.profile import ProfilerError, find_py_spy
from bench.report import GO_REFERENCE, aggregate, render
from bench.server import default_nsqd
from bench.workloads import EXTRAS, ONCE, REPEATED, ROOT, WORKLOADS, Settings


def _git_revision() -> str | None:
    try:
        revision = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return revision + ("-dirty" if dirty else "")


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def _run(name: str, settings: Settings, run: int, runs: int) -> tuple[list[dict[str, Any]], str | None]:
    """One run of one workload: its rows, or the error that stopped it (printed, not raised)."""
    label = f"{name} ({run}/{runs})" if runs > 1 else name
    print(f"running {label} ...", end=" ", file=sys.stderr, flush=True)
    began = time.monotonic()
    try:
        rows = [{"workload": name, "run": run, **row} for row in WORKLOADS[name](settings)]
    except Exception as error:
        print(file=sys.stderr)
        traceback.print_exc()
        return [], f"{type(error).__name__}: {error}"
    print(f"{time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
    return rows, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small workloads, one run each: a smoke run")
    parser.add_argument("--extras", action="store_true", help="also run the extra workloads, once each")
    parser.add_argument(
        "--only", action="append", choices=list(WORKLOADS), metavar="NAME", help="run only NAME"
    )
    parser.add_argument("--runs", type=int, help="runs of each repeated workload (default 3, --quick 1)")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    parser.add_argument("--nsqd", default=default_nsqd(), help="nsqd executable (default: %(default)s)")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench-results" / "latest.json", help="JSON results file"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample each nsqd with py-spy into DIR/WORKLOAD.raw and .top.txt",
    )
    args = parser.parse_args(argv)
    if args.list:
        for group, workloads in (("repeated", REPEATED), ("once", ONCE), ("extra", EXTRAS)):
            for name in workloads:
                print(f"{name} ({group})")
        return 0
    if not os.access(args.nsqd, os.X_OK):
        print(f"no nsqd executable at {args.nsqd}", file=sys.stderr)
        return 2

    if args.profile is not None:
        try:
            find_py_spy()
        except ProfilerError as error:
            print(error, file=sys.stderr)
            return 2
    make_settings = Settings.quick if args.quick else Settings.full
    settings = make_settings(args.nsqd, args.profile)
    runs = args.runs if args.runs is not None else settings.runs
    names: list[str] = args.only or [*REPEATED, *ONCE, *(EXTRAS if args.extras else ())]
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    machine = _machine()
    began = time.monotonic()
    rows: list[dict[str, Any]] = []
    every_run: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for name in names:
        repeat = runs if name in REPEATED else 1
        per_run = []
        for run in range(1, repeat + 1):
            run_rows, failure = _run(name, settings, run, repeat)
            if failure is not None:
                errors.append({"name": name, "run": str(run), "error": failure})
                continue
            per_run.append(run_rows)
            every_run.extend(run_rows)
        rows.extend(aggregate(per_run))
    elapsed = time.monotonic() - began

    print()
    print(render(rows, errors))
    for profile in dict.fromkeys(row["profile"] for row in every_run if "profile" in row):
        print(f"profile: {profile}")
    load_end = os.getloadavg()
    print(
        f"\n{len(names)} workloads in {elapsed:.0f} s; load average (1, 5, 15 min) "
        f"{' '.join(f'{v:.2f}' for v in machine['loadavg_at_start'])} at the start, "
        f"{' '.join(f'{v:.2f}' for v in load_end)} at the end; results in {args.output}"
    )

    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "started_at": started_at,
        "quick": args.quick,
        "runs": runs,
        "nsqd": args.nsqd,
        "revision": _git_revision(),
        "machine": machine,
        "settings": {k: v for k, v in vars(settings).items() if k not in ("nsqd_path", "profile_dir")},
        "elapsed_s": elapsed,
        "go_reference_quoted": GO_REFERENCE,
        "results": rows,
        "every_run": every_run,
        "errors": errors,
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
