"""Run the whole suite (trial, mypy --strict, ruff) and end with `N passed, M failed`.

Each trial test counts once; mypy, ruff check and ruff format count as one check each.
Skipped tests are reported separately and never counted as passed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

BIN = os.path.dirname(sys.executable)
SUMMARY = re.compile(r"^(PASSED|FAILED) \((?P<body>[^)]*)\)\s*$", re.M)


def run(name: str, argv: list[str]) -> tuple[int, str]:
    print(f"==> {name}: {' '.join(argv)}", flush=True)
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(proc.stdout)
    sys.stdout.flush()
    return proc.returncode, proc.stdout


def trial_counts(output: str) -> tuple[int, int, int]:
    matches = list(SUMMARY.finditer(output))
    if not matches:
        return 0, 1, 0
    fields = dict(
        (k.strip(), int(v))
        for k, v in (part.split("=") for part in matches[-1].group("body").split(",") if "=" in part)
    )
    passed = fields.get("successes", 0) + fields.get("expectedFailures", 0)
    failed = fields.get("failures", 0) + fields.get("errors", 0) + fields.get("unexpectedSuccesses", 0)
    return passed, failed, fields.get("skips", 0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("tests", nargs="*", default=["tests"])
    args = parser.parse_args()
    passed = failed = 0
    trial = [os.path.join(BIN, "trial"), "--temp-directory=_trial_temp"]
    if args.jobs > 1:
        trial.append(f"--jobs={args.jobs}")
    # Warnings are errors in our tests (and in the daemons they start), as the house style asks.
    os.environ["PYTHONWARNINGS"] = "error"
    code, out = run("trial", [*trial, *args.tests])
    del os.environ["PYTHONWARNINGS"]
    p, f, skipped = trial_counts(out)
    if code != 0 and f == 0:
        f = 1
    passed += p
    failed += f
    for name, argv in (
        ("mypy", [os.path.join(BIN, "mypy")]),
        (
            "ruff check",
            [
                os.path.join(BIN, "ruff"),
                "check",
                "twisted_nsq",
                "twisted",
                "tests",
                "scripts",
                "bench",
                "examples",
            ],
        ),
        (
            "ruff format",
            [
                os.path.join(BIN, "ruff"),
                "format",
                "--check",
                "twisted_nsq",
                "twisted",
                "tests",
                "scripts",
                "bench",
                "examples",
            ],
        ),
    ):
        code, _ = run(name, argv)
        if code == 0:
            passed += 1
        else:
            failed += 1
            print(f"{name} failed", flush=True)
    if skipped:
        print(f"({skipped} skipped, not counted as passed)")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
