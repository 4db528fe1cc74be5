#!/usr/bin/env bash
# Wrong-password flood (issue 14): basic auth on (a cost-10 bcrypt hash),
# the exporter polling the standalone simulator, and 16 clients sending
# random wrong passwords for 15 s. For each binary given, side by side in
# one run, prints:
#   - the exporter's CPU during the flood, in cores
#   - polls done in those 15 s (the exporter's own poll-duration count)
#   - p50/p95 of scrapes with the right password, made meanwhile
#   - p50/p95/max of /healthz (with --web.unauthenticated-probes)
#   - how the flood's requests were answered (by status)
# Figures, not a test: this machine is shared and noisy.
#
#   bench/auth_flood.sh [BINARY...]
#
# Default binaries: /work/before/dynamodb-kinesis-exporter (if present) and
# this tree's release build. TABLES (default 200, polled every 5 s: about
# 40 polls a second) and SECONDS_FLOOD (default 15) can be set.
# Needs wrk and htpasswd (Debian packages wrk and apache2-utils; installed
# if absent and running as root). Loopback only; every phase is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

tables=${TABLES:-200}
seconds=${SECONDS_FLOOD:-15}
clients=16

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo build --release --locked --quiet --bin dynamodb-kinesis-exporter --example simulate
binaries=("$@")
if [ "${#binaries[@]}" -eq 0 ]; then
  [ -x /work/before/dynamodb-kinesis-exporter ] && binaries+=(/work/before/dynamodb-kinesis-exporter)
  binaries+=(target/release/dynamodb-kinesis-exporter)
fi

source bench/lib.sh
# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# "p50 p95 max" in ms of the seconds in file $1 (one per line).
percentiles() {
  sort -n "$1" | awk '{v[NR]=$1} END {
    if (NR == 0) { print "n/a n/a n/a"; exit }
    i50=int(NR*0.50); if (i50<1) i50=1; i95=int(NR*0.95); if (i95<1) i95=1
    printf "%.0f %.0f %.0f\n", v[i50]*1000, v[i95]*1000, v[NR]*1000 }'
}
# Sum of the poll-duration histogram's counts on a page.
polls() {
  curl -s -m 10 -u "prometheus:$password" "$1/metrics" |
    awk '/^dynamodb_kinesis_poll_duration_seconds_count/ {n += $NF} END {printf "%d\n", n}'
}

# The simulator, and a config that polls its tables every 5 s.
target/release/examples/simulate "$tables" "$work/exporter.yaml" 3600 >"$work/sim.out" &
pids+=($!)
for _ in $(seq 1 600); do [ -s "$work/exporter.yaml" ] && break; sleep 0.1; done
sed -i 's/^poll_interval: .*/poll_interval: 5s/' "$work/exporter.yaml"

password=right-horse-battery
hash=$(htpasswd -nbBC 10 "" "$password" | tr -d ':\n')
printf 'basic_auth_users:\n  prometheus: %s\n' "$hash" >"$work/web.yml"

# Each request of the flood: random wrong credentials for a known user.
cat >"$work/flood.lua" <<'LUA'
local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(data)
  return ((data:gsub('.', function(x)
    local r, b = '', x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return chars:sub(c + 1, c + 1)
  end) .. ({ '', '==', '=' })[#data % 3 + 1])
end
math.randomseed(os.time())
request = function()
  local guess = tostring(math.random(1, 2 ^ 30)) .. tostring(math.random(1, 2 ^ 30))
  return wrk.format("GET", "/metrics", { ["Authorization"] = "Basic " .. b64("prometheus:" .. guess) })
end
LUA

results=()
for bin in "${binaries[@]}"; do
  port=$(free_port)
  url="http://127.0.0.1:$port"
  "$bin" --config.file "$work/exporter.yaml" --web.listen-address "127.0.0.1:$port" \
    --web.config.file "$work/web.yml" --web.unauthenticated-probes \
    --log.level error 2>"$work/exporter.log" &
  exporter=$!
  pids+=($exporter)
  started=$(date +%s)
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/readyz")" = 200 ]; do
    if [ $(( $(date +%s) - started )) -gt 300 ]; then echo "$bin: not ready within 300 s" >&2; exit 1; fi
    sleep 0.5
  done
  # Settle into the steady poll rate, and measure it without a flood.
  sleep 6
  quiet_before=$(polls "$url"); sleep "$seconds"; quiet_after=$(polls "$url")

  polls_before=$(polls "$url")
  ticks_before=$(cpu_ticks "$exporter")
  : >"$work/scrapes.txt"; : >"$work/healthz.txt"
  wrk -t2 -c"$clients" -d"${seconds}s" --timeout 30s -s "$work/flood.lua" "$url" >"$work/wrk.txt" 2>&1 &
  flood=$!
  while kill -0 "$flood" 2>/dev/null; do
    curl -s -o /dev/null -m 30 -u "prometheus:$password" -w '%{http_code} %{time_total}\n' "$url/metrics" >>"$work/scrapes.txt" || true
    curl -s -o /dev/null -m 30 -w '%{http_code} %{time_total}\n' "$url/healthz" >>"$work/healthz.txt" || true
    sleep 0.2
  done
  wait "$flood" || true
  ticks_after=$(cpu_ticks "$exporter")
  polls_after=$(polls "$url")
  kill "$exporter"; wait "$exporter" 2>/dev/null || true

  cores=$(awk -v a="$ticks_before" -v b="$ticks_after" -v hz="$(getconf CLK_TCK)" -v s="$seconds" 'BEGIN {printf "%.2f", (b-a)/hz/s}')
  awk '$1 == "200" {print $2}' "$work/scrapes.txt" >"$work/scrape_times.txt"
  awk '{print $2}' "$work/healthz.txt" >"$work/healthz_times.txt"
  read -r s50 s95 smax < <(percentiles "$work/scrape_times.txt")
  read -r h50 h95 hmax < <(percentiles "$work/healthz_times.txt")
  scrape_fail=$(awk '$1 != "200"' "$work/scrapes.txt" | wc -l)
  health_fail=$(awk '$1 != "200"' "$work/healthz.txt" | wc -l)
  flood_rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
  flood_non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt")
  results+=("$(printf '%s|%s|%s|%s|%s|%s' \
    "$bin" "$cores" "$((quiet_after - quiet_before)) -> $((polls_after - polls_before))" \
    "p50 $s50 ms, p95 $s95 ms, max $smax ms ($(wc -l <"$work/scrapes.txt") scrapes, $scrape_fail not 200)" \
    "p50 $h50 ms, p95 $h95 ms, max $hmax ms ($(wc -l <"$work/healthz.txt") probes, $health_fail not 200)" \
    "${flood_rps:-0} req/s, ${flood_non2xx:-0} answered non-2xx")")
done

echo
echo "=== wrong-password flood: $clients clients, ${seconds} s, cost-10 bcrypt; $tables tables polled every 5 s ($(nproc) cores, shared by everything here)"
for line in "${results[@]}"; do
  IFS='|' read -r bin cores polls_line scrapes probes flood <<<"$line"
  echo "--- $bin"
  printf '  %-40s %s\n' "exporter CPU during the flood" "$cores cores"
  printf '  %-40s %s\n' "polls in ${seconds} s (quiet -> flood)" "$polls_line"
  printf '  %-40s %s\n' "authorized scrapes meanwhile" "$scrapes"
  printf '  %-40s %s\n' "/healthz (unauthenticated probes)" "$probes"
  printf '  %-40s %s\n' "the flood" "$flood"
done
