# Shared by bench/live_page.sh and bench/abandoned_scrapes.sh (sourced, not
# run): the simulator and exporter processes, on loopback, cleaned up on
# exit (bench/lib.sh). Every wait is bounded.

source bench/lib.sh

# The release exporter (the default binary) and the simulator.
build_release() {
  cargo build --release --locked --quiet --bin dynamodb-kinesis-exporter --example simulate
}

# start_simulator TABLES: serve TABLES tables (one ACTIVE destination each)
# and write the exporter config to $work/exporter.yaml, polling every table
# and checking its stream once a minute. The request budget is set 5 %
# above what that takes (a call per table and one per stream a minute):
# new tables are spread at half the budget, so the first cycle already
# fills the minute, and the polls are continuous from the start rather
# than a burst every minute.
start_simulator() {
  target/release/examples/simulate "$1" "$work/sim.yaml" 7200 >"$work/sim.out" &
  pids+=($!)
  for _ in $(seq 1 600); do [ -s "$work/sim.yaml" ] && break; sleep 0.1; done
  if [ ! -s "$work/sim.yaml" ]; then echo "the simulator wrote no config within 60 s" >&2; exit 1; fi
  local rate=$(( $1 * 2 * 21 / 20 / 60 + 1 ))
  sed "s/^max_requests_per_second: .*/max_requests_per_second: $rate/" "$work/sim.yaml" >"$work/exporter.yaml"
}

# start_exporter BINARY NAME: run BINARY on a free port; sets
# exporter_pid and exporter_url, logs to $work/NAME.log.
start_exporter() {
  local port
  port=$(free_port)
  "$1" --config.file "$work/exporter.yaml" --web.listen-address "127.0.0.1:$port" \
    --log.level warn 2>"$work/$2.log" &
  exporter_pid=$!
  pids+=($exporter_pid)
  exporter_url="http://127.0.0.1:$port"
}

# wait_ready URL: until /readyz answers 200 (every table polled once).
wait_ready() {
  local started
  started=$(date +%s)
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/readyz")" = 200 ]; do
    if [ $(( $(date +%s) - started )) -gt 900 ]; then echo "$1 not ready within 900 s" >&2; exit 1; fi
    sleep 0.5
  done
}

# start_exporters SUFFIX BINARY...: start each BINARY as exporterN and wait
# until all are ready; sets targets to "exporterN|URL SUFFIX|PID|BINARY"
# lines and ready_after to the seconds that took.
start_exporters() {
  local suffix=$1 i=0 binary target url started
  shift
  targets=()
  for binary in "$@"; do
    i=$((i + 1))
    start_exporter "$binary" "exporter$i"
    targets+=("exporter$i|$exporter_url$suffix|$exporter_pid|$binary")
  done
  started=$(date +%s)
  for target in "${targets[@]}"; do
    IFS='|' read -r _ url _ _ <<<"$target"
    wait_ready "${url%"$suffix"}"
  done
  ready_after=$(( $(date +%s) - started ))
}
