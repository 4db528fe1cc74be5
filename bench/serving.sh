#!/usr/bin/env bash
# Serving benchmark: the release exporter polling TABLES simulated tables
# (one ACTIVE destination each), side by side with nginx serving the very
# same bytes as static files (the plain page, and the exporter's own gzip
# body for gzip_static). Prints, in one run:
#   - plain and gzip scrape throughput and p99 (wrk, 2 connections, 10 s)
#   - RSS idle after the first polls, and peak RSS with 32 concurrent scrapers
#   - a 600-slow-reader attack (60 s, readers that send GET /metrics and
#     never read, reopened in waves): /healthz p99 and failures, peak RSS,
#     and RSS a minute after the attack ends.
#
#   bench/serving.sh [TABLES]     # default 10000
#
# Needs nginx and wrk (Debian packages; installed if absent and running as
# root). Loopback only; every phase is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

tables=${1:-10000}
duration=10s

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --locked --quiet --bin dynamodb-kinesis-exporter --example simulate
bin=target/release/dynamodb-kinesis-exporter

source bench/lib.sh
rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
# Largest RSS of $1 (MiB) while the command in $2.. runs, sampled every 100 ms.
peak_rss_during() {
  local pid=$1; shift
  "$@" &
  local job=$!
  local peak=0
  while kill -0 "$job" 2>/dev/null; do
    local now
    now=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    [ "$now" -gt "$peak" ] && peak=$now
    sleep 0.1
  done
  wait "$job" || true
  awk -v k="$peak" 'BEGIN {printf "%.1f", k/1024}'
}
# "req/s p99" from wrk output.
wrk_figures() {
  awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} END {printf "%s %s\n", rps, p99}'
}

# 1. Simulator and exporter.
target/release/examples/simulate "$tables" "$work/exporter.yaml" 1800 >"$work/sim.out" &
pids+=($!)
for _ in $(seq 1 600); do [ -s "$work/exporter.yaml" ] && break; sleep 0.1; done
port=$(free_port)
"$bin" --config.file "$work/exporter.yaml" --web.listen-address "127.0.0.1:$port" \
  --log.level warn 2>"$work/exporter.log" &
exporter=$!
pids+=($exporter)
url="http://127.0.0.1:$port"
started=$(date +%s)
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/readyz")" = 200 ]; do
  if [ $(( $(date +%s) - started )) -gt 600 ]; then echo "not ready within 600 s" >&2; exit 1; fi
  sleep 0.5
done
first_round=$(( $(date +%s) - started ))

mkdir -p "$work/www"
# nginx's workers run as an unprivileged user.
chmod 755 "$work" "$work/www"
curl -s -o "$work/www/metrics" "$url/metrics"
curl -s -H 'Accept-Encoding: gzip' -o "$work/www/metrics.gz" "$url/metrics"
chmod 644 "$work/www/metrics" "$work/www/metrics.gz"
plain_size=$(stat -c %s "$work/www/metrics")
gzip_size=$(stat -c %s "$work/www/metrics.gz")
gunzip -c "$work/www/metrics.gz" | cmp -s - "$work/www/metrics" && gzip_same=yes || gzip_same="no (the page moved between the two scrapes)"
sleep 10
rss_idle=$(rss_mib "$exporter")

# 2. nginx on the same bytes.
nport=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<CONF
daemon off;
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  sendfile on;
  tcp_nopush on;
  server {
    listen 127.0.0.1:$nport;
    root $work/www;
    location / { default_type text/plain; gzip_static on; }
  }
}
CONF
"$nginx_bin" -p "$work/nginx" -c "$work/nginx.conf" &
pids+=($!)
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$nport/metrics" && break; sleep 0.1; done
nurl="http://127.0.0.1:$nport"

read -r ex_plain_rps ex_plain_p99 < <(wrk -t2 -c2 -d$duration --latency "$url/metrics" | wrk_figures)
read -r ng_plain_rps ng_plain_p99 < <(wrk -t2 -c2 -d$duration --latency "$nurl/metrics" | wrk_figures)
read -r ex_gzip_rps ex_gzip_p99 < <(wrk -t2 -c2 -d$duration --latency -H 'Accept-Encoding: gzip' "$url/metrics" | wrk_figures)
read -r ng_gzip_rps ng_gzip_p99 < <(wrk -t2 -c2 -d$duration --latency -H 'Accept-Encoding: gzip' "$nurl/metrics" | wrk_figures)
ng_status=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "$nurl/metrics")
ng_gzip_encoding=$(curl -s -o /dev/null -D - -H 'Accept-Encoding: gzip' "$nurl/metrics" | tr -d '\r' | awk -F': ' 'tolower($1)=="content-encoding" {print $2}')

# 3. 32 concurrent scrapers.
peak32=$(peak_rss_during "$exporter" sh -c "wrk -t2 -c32 -d$duration --latency '$url/metrics' >'$work/wrk32.txt'")
read -r ex32_rps ex32_p99 < <(wrk_figures <"$work/wrk32.txt")

# 4. 600 slow readers for 60 s, reopened every 15 s; /healthz probed
# every 0.25 s with a 5 s limit.
cat >"$work/attack.py" <<'PY'
import socket, sys, time
host, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
end = time.time() + seconds
opened = 0
while time.time() < end:
    conns = []
    for _ in range(count):
        try:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(2)
            s.connect((host, port))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            conns.append(s)
            opened += 1
        except OSError:
            pass
    time.sleep(max(0.0, min(15.0, end - time.time())))
    for s in conns:
        s.close()
print(opened)
PY
python3 "$work/attack.py" 127.0.0.1 "$port" 600 60 >"$work/attack.out" &
attack=$!
: >"$work/probes.txt"
peak_attack=0
while kill -0 "$attack" 2>/dev/null; do
  # curl prints code 000 and the time spent when it gets no answer.
  curl -s -o /dev/null -m 5 -w '%{http_code} %{time_total}\n' "$url/healthz" >>"$work/probes.txt" || true
  now=$(awk '/^VmRSS/ {print $2}' "/proc/$exporter/status")
  [ "$now" -gt "$peak_attack" ] && peak_attack=$now
  sleep 0.25
done
wait "$attack" || true
probes=$(wc -l <"$work/probes.txt")
probe_fail=$(awk '$1 != "200"' "$work/probes.txt" | wc -l)
probe_p99=$(awk '{print $2}' "$work/probes.txt" | sort -n | awk '{v[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.0f ms", v[i]*1000}')
probe_max=$(awk '{print $2}' "$work/probes.txt" | sort -n | tail -1 | awk '{printf "%.0f ms", $1*1000}')
after_attack_ok=$(curl -s -o /dev/null -w '%{http_code}' "$url/metrics")
sleep 60
rss_after=$(rss_mib "$exporter")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a/b; else print "n/a" }'; }
echo
echo "=== serving benchmark: $tables tables, one ACTIVE destination each ($(nproc) cores, shared by everything here)"
echo "first poll round: ${first_round} s; page: $plain_size bytes plain, $gzip_size bytes gzip (gzip body decodes to the plain page: $gzip_same)"
printf '%-44s %-22s %-22s %s\n' "what" "exporter" "nginx (same bytes)" "exporter/nginx"
printf '%-44s %-22s %-22s %s\n' "plain scrape, 2 conns (req/s, p99)" "$ex_plain_rps, $ex_plain_p99" "$ng_plain_rps, $ng_plain_p99" "$(ratio "$ex_plain_rps" "$ng_plain_rps")"
printf '%-44s %-22s %-22s %s\n' "gzip scrape, 2 conns (req/s, p99)" "$ex_gzip_rps, $ex_gzip_p99" "$ng_gzip_rps, $ng_gzip_p99" "$(ratio "$ex_gzip_rps" "$ng_gzip_rps")"
echo "  (nginx: plain answer $ng_status bytes; gzip_static answered with Content-Encoding: ${ng_gzip_encoding:-none})"
printf '%-44s %s\n' "RSS idle after the first polls" "$rss_idle MiB"
printf '%-44s %s\n' "peak RSS, 32 concurrent scrapers" "$peak32 MiB ($ex32_rps req/s, p99 $ex32_p99)"
printf '%-44s %s\n' "600 slow readers, 60 s: /healthz" "p99 $probe_p99, max $probe_max, $probe_fail of $probes probes failed (5 s limit)"
printf '%-44s %s\n' "  /healthz answers by status" "$(awk '{print $1}' "$work/probes.txt" | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
printf '%-44s %s\n' "600 slow readers: peak RSS" "$(awk -v k="$peak_attack" 'BEGIN {printf "%.1f", k/1024}') MiB ($(cat "$work/attack.out") connections opened)"
printf '%-44s %s\n' "after the attack: /metrics, RSS 60 s later" "HTTP $after_attack_ok, $rss_after MiB"
