//! Production serving, in process against the simulator: the exporter's
//! wiring of the web crate (TLS, basic auth, probes without credentials,
//! the web config reload gauge) and hostile clients against the real page
//! (readers that never read, oversized headers). Every wait is bounded.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;
use dke_web::web_config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ONE_TABLE: &str = "tables:\n  - name: orders\n    destinations:\n      - stream_arn: arn:aws:kinesis:us-east-1:123456789012:stream/orders-cdc\n        status: ACTIVE\n";

fn config(tables: &[String]) -> String {
    let list: String = tables.iter().map(|t| format!("      - {t}\n")).collect();
    format!(
        "poll_interval: 1s\nrequest_timeout: 2s\nconcurrency: 16\nmax_attempts: 1\nmax_requests_per_second: 2000\ntargets:\n  - region: us-east-1\n    endpoint_url: {{endpoint}}\n    tables:\n{list}"
    )
}

/// Start the exporter with the web config file at `path`.
async fn with_web_config(
    sim: &dke_simulator::Simulator,
    path: &Path,
    unauthenticated_probes: bool,
) -> Running {
    let loaded = web_config::load(path).unwrap_or_else(|e| panic!("web config: {e}"));
    let path = path.to_path_buf();
    exporter_with(&config(&["orders".to_string()]), sim, move |s| {
        s.web_config = Some((loaded, path));
        s.unauthenticated_probes = unauthenticated_probes;
    })
    .await
}

const ALICE_PW: &str = "Basic YWxpY2U6czNjcmV0"; // alice:s3cret

/// The web crate's own tests (web/tests/serving.rs) cover TLS, client
/// certificates, basic auth and reloads; this checks the exporter's wiring
/// of them: the page over HTTPS behind basic auth, the probes without
/// credentials, and the reload gauge when a changed web config is refused.
#[tokio::test]
async fn the_web_config_guards_the_page_and_a_refused_reload_shows_in_a_gauge() {
    let pki = Pki::new("a");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let whole = format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  alice: {hash}\n"
    );
    let dir = scratch(&[("web.yml", &whole)]);
    pki.write_files(dir.path());
    let path = dir.path().join("web.yml");
    let sim = simulator(ONE_TABLE).await;
    let exp = with_web_config(&sim, &path, true).await;
    let auth = [("Authorization", ALICE_PW)];
    let gauge = "dynamodb_kinesis_exporter_web_config_last_reload_successful";
    let page = tls_request(exp.addr, &pki.ca, None, "/metrics", &auth)
        .await
        .unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(value(&page.body, gauge, &[]), Some(1.0));
    let anonymous = tls_request(exp.addr, &pki.ca, None, "/metrics", &[])
        .await
        .unwrap();
    assert_eq!(anonymous.status, 401);
    assert!(!anonymous.body.contains("dynamodb_kinesis"));
    let probe = tls_request(exp.addr, &pki.ca, None, "/healthz", &[])
        .await
        .unwrap();
    assert_eq!(probe.status, 200);
    assert!(try_request(exp.addr, "GET", "/metrics")
        .await
        .map_or(true, |r| r.status != 200));

    // Emptied for good: refused, and the gauge says so.
    std::fs::write(&path, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = tls_request(exp.addr, &pki.ca, None, "/metrics", &auth)
            .await
            .unwrap();
        assert_eq!(page.status, 200);
        if value(&page.body, gauge, &[]) == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the gauge never dropped");
        tokio::time::sleep(web_config::RELOAD_CHECK_INTERVAL / 2).await;
    }
    let anonymous = tls_request(exp.addr, &pki.ca, None, "/metrics", &[])
        .await
        .unwrap();
    assert_eq!(anonymous.status, 401, "still guarded");
    std::fs::write(&path, &whole).unwrap();
    scrape_tls_until(exp.addr, &pki.ca, &auth, |page| {
        value(page, gauge, &[]) == Some(1.0)
    })
    .await;
    exp.stop().await;
    sim.shutdown().await;
}

/// A flood of wrong passwords over real connections (each its own, so no
/// cached answer): one bcrypt check runs at a time, 64 requests wait for
/// it and the rest get 429 with `Retry-After` at once; the probes answer
/// meanwhile, and once the flood has gone the right password gets the
/// page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_flood_beyond_the_queue_gets_429_and_the_probes_answer() {
    use base64::Engine as _;
    let basic = |pair: &str| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        format!("Basic {encoded}")
    };
    // Cost 10: a check takes long enough for the 100 requests to queue.
    let hash = bcrypt::hash("s3cret", 10).unwrap();
    let dir = scratch(&[("web.yml", &format!("basic_auth_users:\n  alice: {hash}\n"))]);
    let sim = simulator(ONE_TABLE).await;
    let exp = with_web_config(&sim, &dir.path().join("web.yml"), true).await;
    let addr = exp.addr;
    let flood: Vec<_> = (0..100)
        .map(|i| {
            let credentials = basic(&format!("alice:wrong{i}"));
            tokio::spawn(async move {
                let auth = [("Authorization", credentials.as_str())];
                try_request_with(addr, "GET", "/metrics", &auth).await
            })
        })
        .collect();
    // The turned-away ones answer at once; the queue takes a check's time
    // per request. Give them 5 s, then hang up on the rest.
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut busy = 0;
    let mut waiting = Vec::new();
    for mut request in flood {
        match tokio::time::timeout_at(until, &mut request).await {
            Ok(Ok(Ok(reply))) if reply.status == 429 => {
                assert_eq!(reply.header("retry-after"), Some("1"));
                busy += 1;
            }
            Ok(Ok(Ok(reply))) => assert_eq!(reply.status, 401, "a wrong password"),
            Ok(other) => panic!("{other:?}"),
            Err(_) => waiting.push(request),
        }
    }
    assert!(busy >= 100 - 64 - 1, "{busy} of 100 turned away");
    let probe = request(addr, "GET", "/healthz").await;
    assert_eq!(probe.status, 200, "probes skip the queue");
    // The flood's clients hang up, and leave the queue: the right password
    // waits for the check in progress, then its own.
    waiting.iter().for_each(|request| request.abort());
    let auth = basic("alice:s3cret");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = try_request_with(addr, "GET", "/metrics", &[("Authorization", &auth)]).await;
        if reply.as_ref().is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no page after the flood: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    exp.stop().await;
    sim.shutdown().await;
}

/// Scrape over HTTPS until `check` accepts the page (10 s at most).
async fn scrape_tls_until(
    addr: SocketAddr,
    ca: &str,
    headers: &[(&str, &str)],
    check: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = tls_request(addr, ca, None, "/metrics", headers)
            .await
            .unwrap();
        if page.status == 200 && check(&page.body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met: {}",
            page.body
        );
        tokio::time::sleep(web_config::RELOAD_CHECK_INTERVAL / 2).await;
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .map_or(0, |kib| kib * 1024)
}

/// Open `count` connections that each ask for the metrics page and never
/// read the answer.
async fn slow_readers(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
        else {
            continue;
        };
        let sock = socket2::SockRef::from(&stream);
        let _ = sock.set_recv_buffer_size(4096);
        if stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .is_ok()
        {
            conns.push(stream);
        }
    }
    conns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_do_not_starve_health_checks_and_the_exporter_recovers() {
    // 300 tables with 4 destinations each: a page of about 1.5 MB, large
    // enough that no answer fits in the socket buffers of a reader that
    // never reads. (bench/serving.sh runs this at 10,000 tables.)
    let mut scenario = String::from("tables:\n");
    let tables: Vec<String> = (0..300).map(|i| format!("t{i:04}")).collect();
    for t in &tables {
        scenario.push_str(&format!("  - name: {t}\n    destinations:\n"));
        for d in 0..4 {
            scenario.push_str(&format!("      - stream_arn: arn:aws:kinesis:us-east-1:123456789012:stream/{t}-{d}\n        status: ACTIVE\n        description: a description long enough to make the page large\n"));
        }
    }
    let sim = simulator(&scenario).await;
    let exp = exporter_with(&config(&tables), &sim, |s| {
        s.limits.write_timeout = Duration::from_secs(3);
    })
    .await;
    scrape_until(exp.addr, Duration::from_secs(30), |p| {
        p.matches("dynamodb_kinesis_table_poll_success{").count() == tables.len()
    })
    .await;
    let before = rss_bytes();

    let attack = slow_readers(exp.addr, 600).await;
    assert!(
        attack.len() >= 512,
        "only {} connections opened",
        attack.len()
    );
    // Probes keep answering, each within 1 s, for 5 s of attack.
    let mut slowest = Duration::ZERO;
    for _ in 0..25 {
        let started = Instant::now();
        let reply = tokio::time::timeout(
            Duration::from_secs(1),
            try_request(exp.addr, "GET", "/healthz"),
        )
        .await
        .expect("/healthz answered within 1 s")
        .expect("/healthz answered");
        assert_eq!(reply.status, 200);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let during = rss_bytes();
    // Every stalled reader shares the one page: far below one copy each
    // (600 x 1.5 MB = 900 MB).
    assert!(
        during.saturating_sub(before) < 150 << 20,
        "RSS grew from {before} to {during} bytes"
    );
    drop(attack);
    // Recovers: the page is served normally again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(reply) = try_request(exp.addr, "GET", "/metrics").await {
            if reply.status == 200 && reply.body.contains("dynamodb_kinesis_table_poll_success") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the exporter did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loud!(
        "slow readers: slowest /healthz {slowest:?}; RSS {} -> {} MiB",
        before >> 20,
        during >> 20
    );
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn oversized_headers_get_431_and_memory_stays_bounded() {
    let sim = simulator(ONE_TABLE).await;
    let exp = exporter(&config(&["orders".to_string()]), &sim).await;
    let before = rss_bytes();
    let big = "a".repeat(1 << 20);
    for _ in 0..20 {
        let mut stream = TcpStream::connect(exp.addr).await.unwrap();
        let req = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
        let _ = stream.write_all(req.as_bytes()).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    }
    let after = rss_bytes();
    assert!(
        after.saturating_sub(before) < 32 << 20,
        "RSS {before} -> {after}"
    );
    assert_eq!(request(exp.addr, "GET", "/healthz").await.status, 200);
    exp.stop().await;
    sim.shutdown().await;
}
