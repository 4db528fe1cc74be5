#!/usr/bin/env bash
# Abandoned-scrape benchmark: CLIENTS clients request /metrics with gzip
# and hang up after HANGUP_MS, over and over, for SECONDS_ATTACK, against an
# exporter polling TABLES simulated tables continuously. Prints, per
# exporter binary: peak RSS during the attack (sampled every 50 ms), the
# cores it used, the requests sent, and then (after a 10 s pause) its RSS
# and one whole gzip scrape.
#
#   bench/abandoned_scrapes.sh [EXPORTER_BINARY...]
#     default: this checkout's release build; give two binaries (say, an
#     old build and target/release/dynamodb-kinesis-exporter) to compare.
#   Environment: TABLES (3000), CLIENTS (24), HANGUP_MS (20), SECONDS_ATTACK (12).
#
# The exporters run side by side against one simulator and are attacked
# one after the other, each with the others idle. Figures, not
# assertions. Loopback only; bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

tables=${TABLES:-3000}
clients=${CLIENTS:-24}
hangup_ms=${HANGUP_MS:-20}
seconds=${SECONDS_ATTACK:-12}
binaries=("$@")
[ "${#binaries[@]}" -gt 0 ] || binaries=(target/release/dynamodb-kinesis-exporter)

source bench/page_lib.sh
build_release
start_simulator "$tables"

start_exporters "" "${binaries[@]}"
echo "every exporter ready; settling for 10 s" >&2
sleep 10

python3 - "$clients" "$hangup_ms" "$seconds" "$tables" "${targets[@]}" <<'PY'
import http.client, os, socket, sys, threading, time

clients, hangup, seconds, tables = int(sys.argv[1]), float(sys.argv[2]) / 1000, float(sys.argv[3]), sys.argv[4]
tick = os.sysconf("SC_CLK_TCK")

def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

def full_scrape(host, port):
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        body = resp.read()
        return f"HTTP {resp.status}, {len(body)} bytes in {(time.monotonic() - start) * 1000:.0f} ms"
    except OSError as err:
        return f"failed: {err}"
    finally:
        conn.close()

rows = []
for spec in sys.argv[5:]:
    name, url, pid, what = spec.split("|")
    pid = int(pid)
    host, port = url.split("/")[2].split(":")
    port = int(port)
    rss_before = rss_mib(pid)
    cpu_before = cpu_s(pid)
    deadline = time.monotonic() + seconds
    sent = [0] * clients

    def attack(i):
        request = b"GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: gzip\r\n\r\n"
        while time.monotonic() < deadline:
            try:
                s = socket.create_connection((host, port), timeout=2)
                s.sendall(request)
                sent[i] += 1
                time.sleep(hangup)
                s.close()
            except OSError:
                time.sleep(hangup)

    threads = [threading.Thread(target=attack, args=(i,)) for i in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    peak = rss_before
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mib(pid))
        time.sleep(0.05)
    elapsed = time.monotonic() - began
    cores = (cpu_s(pid) - cpu_before) / elapsed
    time.sleep(10)
    rows.append((name, rss_before, peak, cores, sum(sent), rss_mib(pid), full_scrape(host, port), what))
    print(f"{name} done", file=sys.stderr)

print()
print(f"=== abandoned gzip scrapes: {tables} tables polled continuously; {clients} clients hang up after "
      f"{hangup * 1000:g} ms, for {seconds:g} s ({os.cpu_count()} cores, shared; "
      f"load average at the end {os.getloadavg()[1]:.1f} over 5 min)")
print(f"{'target':<11}{'RSS before':>12}{'peak RSS':>10}{'cores':>7}{'requests':>10}{'RSS 10 s later':>16}  "
      f"then one gzip scrape; binary")
for name, before, peak, cores, sent, after, scrape, what in rows:
    print(f"{name:<11}{before:>8.1f} MiB{peak:>6.1f} MiB{cores:>7.2f}{sent:>10}{after:>12.1f} MiB  {scrape}; {what}")
PY
