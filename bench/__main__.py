"""
C{python -m bench}: run the workloads against our nsqd, print the tables, write the JSON.

C{--quick} is a ~45 s smoke run that leaves out the full-run-only workloads (C{backlog-5m}),
C{--only NAME} (repeatable) picks workloads, C{--nsqd PATH} benchmarks another nsqd executable
that takes the same flags.
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
from bench.report import GO_REFERENCE, render
from bench.server import default_nsqd
from bench.workloads import FULL_ONLY, ROOT, WORKLOADS, Settings


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small workloads, without backlog-5m: a ~45 s smoke run"
    )
    parser.add_argument(
        "--only", action="append", choices=list(WORKLOADS), metavar="NAME", help="run only NAME"
    )
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    parser.add_argument("--nsqd", default=default_nsqd(), help="nsqd executable (default: %(default)s)")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench-results" / "latest.json", help="JSON results file"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample each nsqd with py-spy (installed by hand) into DIR/WORKLOAD.raw and .top.txt",
    )
    args = parser.parse_args(argv)
    if args.list:
        for name in WORKLOADS:
            print(name + (" (full run only)" if name in FULL_ONLY else ""))
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
    skipped = [] if args.only or not args.quick else [name for name in WORKLOADS if name in FULL_ONLY]
    names = args.only or [name for name in WORKLOADS if name not in skipped]
    for name in skipped:
        print(f"skipping {name} (full run only)", file=sys.stderr)
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    machine = _machine()
    began = time.monotonic()
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for name in names:
        print(f"running {name} ...", end=" ", file=sys.stderr, flush=True)
        workload_began = time.monotonic()
        try:
            for row in WORKLOADS[name](settings):
                rows.append({"workload": name, **row})
        except Exception as error:
            print(file=sys.stderr)
            traceback.print_exc()
            errors.append({"name": name, "error": f"{type(error).__name__}: {error}"})
        else:
            print(f"{time.monotonic() - workload_began:.1f} s", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - began

    print()
    print(render(rows, errors))
    for profile in dict.fromkeys(row["profile"] for row in rows if "profile" in row):
        print(f"profile: {profile}")
    print(f"\n{len(names)} workloads in {elapsed:.0f} s; results in {args.output}")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "started_at": started_at,
        "quick": args.quick,
        "nsqd": args.nsqd,
        "revision": _git_revision(),
        "machine": machine,
        "settings": {k: v for k, v in vars(settings).items() if k not in ("nsqd_path", "profile_dir")},
        "elapsed_s": elapsed,
        "go_reference_quoted": GO_REFERENCE,
        "results": rows,
        "skipped": skipped,
        "errors": errors,
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
