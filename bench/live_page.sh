#!/usr/bin/env bash
# Live-page benchmark: the CPU and latency of a gzip scrape of a page that
# changes all the time, side by side with nginx compressing the same bytes
# on the fly.
#
#   bench/live_page.sh [EXPORTER_BINARY...]
#     default: this checkout's release build; give two binaries (say, an
#     old build and target/release/dynamodb-kinesis-exporter) to compare.
#   Environment: TABLES (10000), ROUNDS (10), PHASE (30 s), INTERVAL (3 s).
#
# Every exporter polls the same simulated TABLES tables, one ACTIVE
# destination each, continuously (a poll per table and a check per stream
# every minute, spread over the minute: about 340 calls a second each). nginx serves a copy of the
# plain page with `gzip on; gzip_comp_level 1` (it deflates every response
# afresh, as an exporter without a cache would). Then, ROUNDS times, each
# target in turn gets a gzip scrape every INTERVAL seconds for PHASE
# seconds while the others get none.
#
# CPU per scrape of a target = (its CPU in the phases where it was scraped
# - its CPU rate in the phases where it was not x the scraped time) /
# scrapes: what the scrapes add to the polling it does anyway. Measured the
# same way for nginx (whose idle rate is about zero). The +- is the
# standard error over the rounds. Latency is from sending the request to
# the last byte of the body. An exporter that counts its own page rebuilds
# (dynamodb_kinesis_exporter_page_build_cpu_seconds_total{form="gzip"}) is
# also given that count: the CPU of a rebuild, exact where the figure above
# carries the polls' noise, but without sending the bytes. What sending
# costs is measured last: 100 gzip scrapes back to back, of which all but
# the one or two a second that rebuild only send the page; their CPU less
# the polling rate and those rebuilds (at the rebuild figure above), per
# scrape. The two together are the exporter's CPU per gzip scrape with the
# polls' noise taken out. Figures, not assertions. Loopback only;
# bounded in time (about ROUNDS x PHASE x (binaries + 1), plus the first
# poll round).
set -euo pipefail
cd "$(dirname "$0")/.."

tables=${TABLES:-10000}
rounds=${ROUNDS:-10}
phase=${PHASE:-30}
interval=${INTERVAL:-3}
binaries=("$@")
[ "${#binaries[@]}" -gt 0 ] || binaries=(target/release/dynamodb-kinesis-exporter)

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

source bench/page_lib.sh
build_release
start_simulator "$tables"

start_exporters /metrics "${binaries[@]}"
echo "every exporter ready after $ready_after s; settling for 20 s" >&2
sleep 20

# nginx on a copy of the first exporter's plain page.
mkdir -p "$work/www" "$work/nginx"
chmod 755 "$work" "$work/www"
IFS='|' read -r _ first_url _ _ <<<"${targets[0]}"
curl -s -o "$work/www/metrics" "$first_url"
chmod 644 "$work/www/metrics"
nport=$(free_port)
cat >"$work/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  sendfile on;
  server {
    listen 127.0.0.1:$nport;
    root $work/www;
    location / { default_type text/plain; gzip on; gzip_comp_level 1; gzip_types text/plain; }
  }
}
CONF
"$nginx_bin" -p "$work/nginx" -c "$work/nginx.conf" &
nginx_pid=$!
pids+=($nginx_pid)
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$nport/metrics" && break; sleep 0.1; done
targets+=("nginx|http://127.0.0.1:$nport/metrics|$nginx_pid|nginx -c gzip_comp_level 1")

# One gzip scrape each first, as a scraper already at work would have
# made: the first compression of the whole page is not what is measured.
for target in "${targets[@]}"; do
  IFS='|' read -r _ url _ _ <<<"$target"
  curl -s -o /dev/null -H 'Accept-Encoding: gzip' "$url"
done
echo "page: $(stat -c %s "$work/www/metrics") bytes plain; $rounds rounds of ${phase} s per target" >&2
python3 - "$rounds" "$phase" "$interval" "$tables" "${targets[@]}" <<'PY'
import gzip, http.client, os, statistics, sys, time

rounds, phase, interval, tables = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
targets = []
for spec in sys.argv[5:]:
    name, url, pid, what = spec.split("|")
    host_port = url.split("/")[2]
    targets.append(dict(name=name, host=host_port.split(":")[0], port=int(host_port.split(":")[1]),
                        pid=int(pid), what=what, scraped_cpu=[], scraped_time=[], scrapes=[],
                        idle_cpu=[], idle_time=[], latencies=[], sizes=[], failures=0))
tick = os.sysconf("SC_CLK_TCK")

def tree(pid):
    """pid and its children (nginx's workers)."""
    out = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except OSError:
                pass
    return out

def cpu_ms(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) * 1000 / tick
        except OSError:
            pass
    return total

def scrape(t):
    start = time.monotonic()
    conn = http.client.HTTPConnection(t["host"], t["port"], timeout=60)
    try:
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        body = resp.read()
        ok = resp.status == 200 and resp.getheader("Content-Encoding") == "gzip"
    except OSError:
        ok, body = False, b""
    finally:
        conn.close()
    return ok, time.monotonic() - start, len(body)

def own_count(t):
    """(gzip page builds, their CPU seconds) as the exporter counts them, or None."""
    if t["name"] == "nginx":
        return None
    time.sleep(1.1)  # past the process-wide families' one-second cache
    conn = http.client.HTTPConnection(t["host"], t["port"], timeout=60)
    try:
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        text = gzip.decompress(conn.getresponse().read()).decode()
    finally:
        conn.close()
    found = {}
    for line in text.splitlines():
        for name in ("dynamodb_kinesis_exporter_page_builds_total", "dynamodb_kinesis_exporter_page_build_cpu_seconds_total"):
            if line.startswith(name + '{form="gzip"} '):
                found[name] = float(line.split()[-1])
    if len(found) < 2:
        return None
    return found["dynamodb_kinesis_exporter_page_builds_total"], found["dynamodb_kinesis_exporter_page_build_cpu_seconds_total"]

for t in targets:
    t["own_before"] = own_count(t)

for r in range(rounds):
    for t in targets:
        before = {o["name"]: cpu_ms(o["pid"]) for o in targets}
        began = time.monotonic()
        n = 0
        next_at = began
        while next_at < began + phase:
            time.sleep(max(0.0, next_at - time.monotonic()))
            ok, took, size = scrape(t)
            if ok:
                n += 1
                t["latencies"].append(took)
                t["sizes"].append(size)
            else:
                t["failures"] += 1
            next_at += interval
        time.sleep(max(0.0, began + phase - time.monotonic()))
        elapsed = time.monotonic() - began
        for o in targets:
            used = cpu_ms(o["pid"]) - before[o["name"]]
            if o is t:
                o["scraped_cpu"].append(used); o["scraped_time"].append(elapsed); o["scrapes"].append(n)
            else:
                # Indexed by round, for the per-round estimate.
                while len(o["idle_cpu"]) <= r:
                    o["idle_cpu"].append(0.0); o["idle_time"].append(0.0)
                o["idle_cpu"][r] += used; o["idle_time"][r] += elapsed
    print(f"round {r + 1} of {rounds} done", file=sys.stderr)

def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else float("nan")

for t in targets:
    after = own_count(t) if t["own_before"] else None
    t["own"] = None
    if after and after[0] > t["own_before"][0]:
        t["own"] = (after[1] - t["own_before"][1]) * 1000 / (after[0] - t["own_before"][0])

def sending(t, n=100):
    """CPU per scrape of n back-to-back gzip scrapes, less the polls and the rebuilds."""
    if t["own"] is None:
        return None
    first = own_count(t)
    base = sum(t["idle_cpu"]) / sum(t["idle_time"])
    cpu, began = cpu_ms(t["pid"]), time.monotonic()
    for _ in range(n):
        scrape(t)
    used, elapsed = cpu_ms(t["pid"]) - cpu, time.monotonic() - began
    last = own_count(t)
    rebuilds = last[0] - first[0] - 1  # less the one own_count made
    return (used - base * elapsed - rebuilds * t["own"]) / n

for t in targets:
    t["send"] = sending(t)

rows = []
for t in targets:
    base = sum(t["idle_cpu"]) / sum(t["idle_time"])  # ms of CPU per second
    total = (sum(t["scraped_cpu"]) - base * sum(t["scraped_time"])) / max(1, sum(t["scrapes"]))
    per_round = [(c - (ic / it) * st) / max(1, n) for c, st, n, ic, it in
                 zip(t["scraped_cpu"], t["scraped_time"], t["scrapes"], t["idle_cpu"], t["idle_time"])]
    err = statistics.stdev(per_round) / len(per_round) ** 0.5 if len(per_round) > 1 else float("nan")
    rows.append((t, base, total, err))
nginx = rows[-1][2]
print()
print(f"=== live page: {tables} tables polled continuously, a gzip scrape every {interval:g} s "
      f"({os.cpu_count()} cores, shared; load average at the end {os.getloadavg()[1]:.1f} over 5 min)")
print(f"{'target':<11}{'CPU/scrape ms':>16}{'vs nginx':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
      f"{'scrapes':>9}{'failed':>8}{'gzip bytes':>12}{'idle cores':>12}{'own ms':>8}{'send ms':>9}  binary")
for t, base, total, err in rows:
    lat = [x * 1000 for x in t["latencies"]]
    print(f"{t['name']:<11}{total:>9.1f} ±{err:>5.1f}{total / nginx if nginx > 0 else float('nan'):>9.2f}x"
          f"{pct(lat, 50):>9.1f}{pct(lat, 90):>9.1f}{pct(lat, 99):>9.1f}{max(lat, default=float('nan')):>9.1f}"
          f"{sum(t['scrapes']):>9}{t['failures']:>8}{int(statistics.mean(t['sizes'] or [0])):>12}"
          f"{base / 1000:>12.3f}{t['own'] if t['own'] is not None else float('nan'):>8.1f}"
          f"{t['send'] if t['send'] is not None else float('nan'):>9.2f}  {t['what']}")
print("own ms: CPU per gzip page rebuild as the exporter counts it (one rebuild per scrape here; nan: not counted)")
print("send ms: CPU per gzip scrape that only sends the page (100 back to back, less the polls and rebuilds)")
for t, _, _, _ in rows:
    if t["own"] is not None and t["send"] is not None:
        print(f"{t['name']}: rebuild + send = {t['own'] + t['send']:.1f} ms per gzip scrape, "
              f"{(t['own'] + t['send']) / nginx:.2f}x nginx's {nginx:.1f} ms")
PY
