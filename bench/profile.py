"""
Optional profiling of nsqd during a workload with py-spy (C{python -m bench --profile DIR}).

py-spy is a profiling tool only, not a dependency: install it by hand into the virtualenv
(C{.venv/bin/pip install py-spy}). It attaches to the running nsqd, samples it until it exits,
and leaves C{NAME.raw} (collapsed stacks, for flame-graph tools) and C{NAME.top.txt} (the
functions with the most samples, by self and by inclusive time).
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path


class ProfilerError(Exception):
    """py-spy is not installed or did not write a profile."""


def find_py_spy() -> str:
    """The py-spy executable next to the interpreter, else on C{PATH}."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if found is None:
        raise ProfilerError("py-spy is not installed (.venv/bin/pip install py-spy)")
    return found


class Profiler:
    """py-spy attached to one process, writing collapsed stacks to C{raw_path} when it exits."""

    def __init__(self, pid: int, raw_path: Path, rate: int = 200) -> None:
        self.raw_path = raw_path
        raw_path.parent.mkdir(parents=True, exist_ok=True)
        # --function groups samples by function, not line; --nonblocking keeps nsqd running
        # while it is sampled, so the profile disturbs the figures less.
        self.proc = subprocess.Popen(
            [
                find_py_spy(),
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--function",
                "--nonblocking",
                "--output",
                str(raw_path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def finish(self, timeout_s: float = 60.0) -> Path:
        """Wait for py-spy to write its file once the profiled process is gone; write the summary."""
        try:
            _, err = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise ProfilerError("py-spy did not finish") from None
        if not self.raw_path.exists():
            raise ProfilerError(f"py-spy wrote no profile: {err.decode(errors='replace')}")
        summary_path = self.raw_path.with_suffix(".top.txt")
        summary_path.write_text(summarize(self.raw_path.read_text().splitlines()))
        return summary_path


def summarize(lines: list[str], top: int = 30) -> str:
    """The C{top} functions by self samples and by inclusive samples, from py-spy raw output."""
    self_counts: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # Each frame reads "function (package/file.py:line)".
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples\n"
    out = [f"{total} samples\n", "self %  function"]
    out += [f"{100 * n / total:6.1f}  {name}" for name, n in self_counts.most_common(top)]
    out += ["", "incl %  function"]
    out += [f"{100 * n / total:6.1f}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(out) + "\n"
