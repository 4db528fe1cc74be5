#!/usr/bin/env bash
# Discovery with bad tables: how many tables an exporter binary polls when
# single tables of a tag-filtered discovery fail their tag read. Each case
# is a scenario file the standalone simulator plays
# (bench/discovery_faults_simulator.rs), so any exporter version can run
# against it as its own process:
#   A. 22 tables under a tag filter in us-east-1: one is deleted between
#      ListTables and ListTagsOfResource (ResourceNotFoundException), one
#      answers AccessDeniedException to its tag read: 20 should be polled.
#   B. 51 tables in each of us-east-1 and eu-west-1; in each region one
#      table's tag read answers an error code no client knows: 50 + 50
#      should be polled.
# For each binary, prints the tables polled (poll_success 1) per region
# after SECONDS seconds, and what /readyz answers then.
#
#   bench/discovery_faults.sh [-s SECONDS] [BINARY...]
#
# Without a BINARY, the release build of this checkout (built first).
# Default SECONDS: 20. Loopback only; every process is bounded in time and
# stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=20
if [ "${1:-}" = "-s" ]; then
  seconds=$2
  shift 2
fi
binaries=("$@")
if [ "${#binaries[@]}" -eq 0 ]; then
  cargo build --release --locked --quiet --bin dynamodb-kinesis-exporter
  binaries=(target/release/dynamodb-kinesis-exporter)
fi
cargo build --release --locked --quiet --example discovery_faults_simulator
simulator=target/release/examples/discovery_faults_simulator

source bench/lib.sh

# `tables:` items at indent $1 named $2-NN, NN from 0 to $3-1, tagged cdc=true.
tagged() {
  local pad
  pad=$(printf '%*s' "$1" '')
  for i in $(seq 0 $(($3 - 1))); do
    printf '%s- name: %s-%02d\n%s  tags: {cdc: "true"}\n' "$pad" "$2" "$i" "$pad"
  done
}

{
  echo "tables:"
  tagged 2 orders 20
  printf '  - name: gone\n    tags: {cdc: "true"}\n    tag_fault: not_found\n'
  printf '  - name: denied\n    tags: {cdc: "true"}\n    tag_fault: access_denied\n'
} >"$work/a.yaml"
{
  echo "tables:"
  tagged 2 us 50
  printf '  - name: us-odd\n    tags: {cdc: "true"}\n    tag_fault: unknown_code\n'
  printf 'scopes:\n  - account_id: "123456789012"\n    region: eu-west-1\n    tables:\n'
  tagged 6 eu 50
  printf '      - name: eu-odd\n        tags: {cdc: "true"}\n        tag_fault: unknown_code\n'
} >"$work/b.yaml"

# run CASE REGIONS BINARY: one exporter against a fresh simulator.
run() {
  local case=$1 regions=$2 bin=$3
  "$simulator" "$work/$case.yaml" $((seconds + 60)) >"$work/sim.out" 2>"$work/sim.err" &
  local sim=$!
  pids+=("$sim")
  for _ in $(seq 1 600); do [ -s "$work/sim.out" ] && break; sleep 0.1; done
  local endpoint
  endpoint=$(head -n1 "$work/sim.out")
  [ -n "$endpoint" ] || { echo "the simulator did not start within 60 s:" >&2; cat "$work/sim.err" >&2; exit 1; }
  cat >"$work/exporter.yaml" <<EOF
poll_interval: 5s
max_requests_per_second: 100
targets:
  - regions: [$regions]
    endpoint_url: $endpoint
    discovery:
      tags: {cdc: "true"}
      refresh_interval: 5s
EOF
  local port
  port=$(free_port)
  "$bin" --config.file "$work/exporter.yaml" --web.listen-address "127.0.0.1:$port" \
    --log.level warn 2>"$work/exporter.log" &
  local exporter=$!
  pids+=("$exporter")
  sleep "$seconds"
  local url="http://127.0.0.1:$port" page ready code
  page=$(curl -s --max-time 10 "$url/metrics" || true)
  code=$(curl -s --max-time 10 -o "$work/ready" -w '%{http_code}' "$url/readyz" || true)
  ready=$(head -n1 "$work/ready" 2>/dev/null || true)
  local counts=""
  for region in ${regions//,/ }; do
    local n
    n=$(printf '%s\n' "$page" | awk -v r="region=\"$region\"" \
      '/^dynamodb_kinesis_table_poll_success\{/ && index($0, r) && $NF == 1 {n++} END {print n + 0}')
    counts+="$region $n polled; "
  done
  echo "  $bin: ${counts}/readyz $code ($ready)"
  kill "$exporter" "$sim" 2>/dev/null || true
  wait "$exporter" "$sim" 2>/dev/null || true
}

echo "A: 22 tables under a tag filter, 1 deleted at tag time, 1 AccessDenied on its tags (20 should be polled), after ${seconds} s"
for bin in "${binaries[@]}"; do run a "us-east-1" "$bin"; done
echo "B: 51 tables in each of two regions, 1 per region with an unknown error code on its tags (50 + 50 should be polled), after ${seconds} s"
for bin in "${binaries[@]}"; do run b "us-east-1, eu-west-1" "$bin"; done
