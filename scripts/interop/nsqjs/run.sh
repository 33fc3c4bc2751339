#!/usr/bin/env bash
# Exploratory interop check, not part of `make test` (it needs the npm registry):
# nsqjs 0.13.0 (pinned in package.json / package-lock.json) publishes to and consumes from
# twisted-nsq's nsqd, discovered through twisted-nsq's nsqlookupd, once per stream mode
# (plain, snappy, deflate). Each mode prints scenario.js's JSON report.
#
# Usage: scripts/interop/nsqjs/run.sh [MODE...]
#   NSQD / NSQLOOKUPD override the daemon commands (default: .venv/bin/nsqd, .venv/bin/nsqlookupd).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
nsqd_cmd="${NSQD:-$root/.venv/bin/nsqd}"
lookupd_cmd="${NSQLOOKUPD:-$root/.venv/bin/nsqlookupd}"
modes=("$@")
[ "${#modes[@]}" -gt 0 ] || modes=(plain snappy deflate)

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# nsqjs goes into a scratch copy so that node_modules never lands in the work tree.
cp "$here/package.json" "$here/package-lock.json" "$here/scenario.js" "$work/"
(cd "$work" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

# Start a daemon on kernel-chosen loopback ports; wait for its "NAME: listening on" log line.
listening() { # log-file kind
  for _ in $(seq 100); do
    line="$(grep -m1 "$2: listening on" "$1" || true)"
    if [ -n "$line" ]; then
      echo "${line##* }"
      return 0
    fi
    sleep 0.1
  done
  echo "no '$2: listening on' line in $1:" >&2
  cat "$1" >&2
  return 1
}

"$lookupd_cmd" --tcp-address=127.0.0.1:0 --http-address=127.0.0.1:0 --broadcast-address=127.0.0.1 \
  >"$work/nsqlookupd.log" 2>&1 &
pids+=("$!")
lookupd_tcp="$(listening "$work/nsqlookupd.log" TCP)"
lookupd_http="$(listening "$work/nsqlookupd.log" HTTP)"

mkdir -p "$work/data"
"$nsqd_cmd" --tcp-address=127.0.0.1:0 --http-address=127.0.0.1:0 --https-address=127.0.0.1:0 \
  --broadcast-address=127.0.0.1 --data-path="$work/data" --lookupd-tcp-address="$lookupd_tcp" \
  >"$work/nsqd.log" 2>&1 &
pids+=("$!")
nsqd_tcp="$(listening "$work/nsqd.log" TCP)"

passed=0
failed=0
for mode in "${modes[@]}"; do
  echo "== nsqjs $mode"
  if (cd "$work" && node scenario.js "$mode" "$nsqd_tcp" "$lookupd_http" "nsqjs_$mode"); then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done
if grep -E "Traceback|Unhandled" "$work/nsqd.log" "$work/nsqlookupd.log"; then
  echo "a daemon logged an exception:" >&2
  cat "$work/nsqd.log" >&2
  failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
