#!/usr/bin/env bash
# Footprint figures for the release binary: build time (optional clean
# build), binary size, and resident memory once idle in --demo mode.
#
#   bench/footprint.sh            # uses the existing release build
#   bench/footprint.sh --clean    # clean release build into a temporary target dir, timed
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
if [ "${1:-}" = "--clean" ]; then
  target=$(mktemp -d)
  start=$(date +%s)
  CARGO_TARGET_DIR="$target" cargo build --release --locked --quiet
  echo "clean release build: $(( $(date +%s) - start )) s on $(nproc) cores"
else
  CARGO_TARGET_DIR="$target" cargo build --release --locked --quiet
fi
bin="$target/release/dynamodb-kinesis-exporter"
echo "binary size: $(stat -c %s "$bin") bytes ($(( $(stat -c %s "$bin") / 1024 / 1024 )) MiB)"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" --demo --web.listen-address "127.0.0.1:$port" --log.level warn &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
# Let it poll a few rounds (every 5 s in demo mode) and serve a few scrapes.
for _ in $(seq 1 10); do
  sleep 1
  curl -fsS "http://127.0.0.1:$port/metrics" >/dev/null 2>&1 || true
done
echo "idle RSS after 10 s of --demo (simulator included): $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
echo "peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$pid/status)"
kill -TERM $pid
wait $pid && echo "exit status on SIGTERM: 0"
trap - EXIT
