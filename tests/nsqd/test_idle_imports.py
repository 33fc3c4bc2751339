"""
An nsqd started with default options (as the C{nsqd} console script starts it) does not import
what only TLS, auth, nsqlookupd, statsd or a C{/metrics} scrape need (docs/performance.md,
"Idle memory"). Checked in a subprocess, whose C{sys.modules} is its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

#: Modules an idle default nsqd must not have loaded.
LAZY = (
    "OpenSSL",
    "cryptography",
    "ssl",
    "_ssl",
    "_hashlib",
    "treq",
    "prometheus_client",
    "twisted.web.client",
    "twisted.internet.ssl",
    "twisted.protocols.tls",
    "twisted_nsq.nsqd.auth",
    "twisted_nsq.nsqd.lookup",
    "twisted_nsq.nsqd.statsd",
    "cramjam",
    "google_crc32c",
)

# Runs nsqd's console-script entry point; at exit (after SIGTERM) prints which of LAZY it
# imported, and whether the core modules were there (so the check cannot pass vacuously).
_SCRIPT = """
import atexit, json, sys
lazy = json.loads(sys.argv[1])
def report():
    reactor = sys.modules.get("twisted.internet.reactor")
    print(json.dumps({
        "reactor": [type(reactor).__name__],
        "loaded": [name for name in lazy if name in sys.modules],
        "core": [name for name in ("twisted_nsq.nsqd.service", "twisted_nsq.nsqd.protocol",
                                   "twisted_nsq.nsqd.http") if name in sys.modules],
    }), flush=True)
atexit.register(report)
sys.argv = ["nsqd"] + sys.argv[2:]
from twisted_nsq.nsqd.cli import main
main()
"""


def _run_nsqd(test: SynchronousTestCase, *flags: str) -> dict[str, list[str]]:
    """Start nsqd with C{flags}, wait until it listens on HTTP, stop it, return its report."""
    data = tempfile.mkdtemp(prefix="nsqd-imports-")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _SCRIPT,
            json.dumps(LAZY),
            "--tcp-address=127.0.0.1:0",
            "--http-address=127.0.0.1:0",
            f"--data-path={data}",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    test.addCleanup(lambda: proc.kill() if proc.poll() is None else None)
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    for line in proc.stderr:
        if b"HTTP: listening on" in line:
            break
        test.assertLess(time.monotonic(), deadline, "nsqd did not start")
    else:
        test.fail(f"nsqd exited with {proc.wait()} before listening")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    test.assertEqual(proc.returncode, 0, err)
    report: dict[str, list[str]] = json.loads(out.decode().strip().splitlines()[-1])
    return report


class IdleImportsTests(SynchronousTestCase):
    def test_default_nsqd(self) -> None:
        """A default nsqd loads its core and none of L{LAZY}."""
        report = _run_nsqd(self)
        self.assertEqual(
            report["core"], ["twisted_nsq.nsqd.service", "twisted_nsq.nsqd.protocol", "twisted_nsq.nsqd.http"]
        )
        self.assertEqual(report["loaded"], [])
        # The console script runs on the reactor without the per-event log context.
        self.assertEqual(report["reactor"], ["DaemonEPollReactor"])

    def test_statsd_loads_statsd(self) -> None:
        """The same check loads a module when its option asks for it: the list is meaningful."""
        report = _run_nsqd(self, "--statsd-address=127.0.0.1:9", "--statsd-interval=1h")
        self.assertIn("twisted_nsq.nsqd.statsd", report["loaded"])
        self.assertNotIn("OpenSSL", report["loaded"])
