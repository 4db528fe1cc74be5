//! Production serving, in process against the simulator: TLS and client
//! certificates from an exporter-toolkit web config (made with rcgen), basic
//! auth, reloads of the web config, and hostile clients (readers that never
//! read, oversized headers). Every wait is bounded.

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

fn tls_files(dir: &Path, pki: &Pki) {
    std::fs::write(dir.join("server.crt"), &pki.server_cert).unwrap();
    std::fs::write(dir.join("server.key"), &pki.server_key).unwrap();
    std::fs::write(dir.join("ca.crt"), &pki.ca).unwrap();
}

#[tokio::test]
async fn tls_serves_https_and_plain_http_to_it_fails() {
    let pki = Pki::new("a");
    let dir = scratch(&[(
        "web.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    )]);
    tls_files(dir.path(), &pki);
    let sim = simulator(ONE_TABLE).await;
    let exp = with_web_config(&sim, &dir.path().join("web.yml"), false).await;

    let reply = tls_request(exp.addr, &pki.ca, None, "/healthz", &[])
        .await
        .expect("HTTPS works");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "ok\n");

    let plain = try_request(exp.addr, "GET", "/healthz").await;
    assert!(
        plain.as_ref().map_or(true, |r| r.status != 200),
        "plain HTTP must not be served on a TLS port: {plain:?}"
    );
    // A client trusting another CA refuses the server.
    let other = Pki::new("b");
    let err = tls_request(exp.addr, &other.ca, None, "/healthz", &[])
        .await
        .unwrap_err();
    assert!(err.contains("handshake"), "{err}");
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn client_certificates_follow_client_auth_type() {
    let pki = Pki::new("a");
    let stranger = Pki::new("stranger");
    let sim = simulator(ONE_TABLE).await;
    // (client_auth_type, no cert ok, CA-signed cert ok, foreign cert ok)
    let cases = [
        ("NoClientCert", true, true, true),
        ("RequestClientCert", true, true, true),
        ("RequireAnyClientCert", false, true, true),
        ("VerifyClientCertIfGiven", true, true, false),
        ("RequireAndVerifyClientCert", false, true, false),
    ];
    for (kind, none_ok, signed_ok, foreign_ok) in cases {
        let ca = if kind.contains("Verify") {
            "  client_ca_file: ca.crt\n"
        } else {
            ""
        };
        let dir = scratch(&[(
            "web.yml",
            &format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: {kind}\n{ca}"),
        )]);
        tls_files(dir.path(), &pki);
        let exp = with_web_config(&sim, &dir.path().join("web.yml"), false).await;
        let ok = |r: &Result<Reply, String>| r.as_ref().is_ok_and(|r| r.status == 200);
        let none = tls_request(exp.addr, &pki.ca, None, "/healthz", &[]).await;
        assert_eq!(ok(&none), none_ok, "{kind}, no certificate: {none:?}");
        let signed = tls_request(
            exp.addr,
            &pki.ca,
            Some((&pki.client_cert, &pki.client_key)),
            "/healthz",
            &[],
        )
        .await;
        assert_eq!(ok(&signed), signed_ok, "{kind}, CA-signed: {signed:?}");
        let foreign = tls_request(
            exp.addr,
            &pki.ca,
            Some((&stranger.client_cert, &stranger.client_key)),
            "/healthz",
            &[],
        )
        .await;
        assert_eq!(ok(&foreign), foreign_ok, "{kind}, foreign: {foreign:?}");
        exp.stop().await;
    }
    sim.shutdown().await;
}

/// A client certificate and its key, PEM.
type ClientPem<'a> = (&'a str, &'a str);

#[tokio::test]
async fn client_allowed_sans_admit_only_certificates_naming_one() {
    use rcgen::SanType;
    let pki = Pki::new("a");
    let stranger = Pki::new("stranger");
    let sim = simulator(ONE_TABLE).await;
    let allowed = "  client_allowed_sans: [scraper.example, prometheus@example.com, 10.0.0.7, \"spiffe://example.org/prometheus\"]\n";
    let dns = pki.client_with_sans(vec![SanType::DnsName(
        "scraper.example".try_into().unwrap(),
    )]);
    let email = pki.client_with_sans(vec![SanType::Rfc822Name(
        "prometheus@example.com".try_into().unwrap(),
    )]);
    let ip = pki.client_with_sans(vec![SanType::IpAddress("10.0.0.7".parse().unwrap())]);
    let uri = pki.client_with_sans(vec![SanType::URI(
        "spiffe://example.org/prometheus".try_into().unwrap(),
    )]);
    let other = pki.client_with_sans(vec![
        SanType::DnsName("intruder.example".try_into().unwrap()),
        SanType::IpAddress("10.0.0.8".parse().unwrap()),
    ]);
    let foreign_allowed = stranger.client_with_sans(vec![SanType::DnsName(
        "scraper.example".try_into().unwrap(),
    )]);
    let ok = |r: &Result<Reply, String>| r.as_ref().is_ok_and(|r| r.status == 200);
    // (client_auth_type, CA file line, foreign-CA certificate with an allowed name ok)
    for (kind, ca, foreign_ok) in [
        (
            "RequireAndVerifyClientCert",
            "  client_ca_file: ca.crt\n",
            false,
        ),
        (
            "VerifyClientCertIfGiven",
            "  client_ca_file: ca.crt\n",
            false,
        ),
        ("RequireAnyClientCert", "", true),
        ("RequestClientCert", "", true),
    ] {
        let dir = scratch(&[(
            "web.yml",
            &format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: {kind}\n{ca}{allowed}"),
        )]);
        tls_files(dir.path(), &pki);
        let exp = with_web_config(&sim, &dir.path().join("web.yml"), false).await;
        let cases: [(&str, Option<ClientPem>, bool); 8] = [
            ("allowed DNS name", Some((&dns.0, &dns.1)), true),
            ("allowed email name", Some((&email.0, &email.1)), true),
            ("allowed IP name", Some((&ip.0, &ip.1)), true),
            ("allowed URI name", Some((&uri.0, &uri.1)), true),
            ("other names", Some((&other.0, &other.1)), false),
            (
                "no names at all",
                Some((&pki.client_cert, &pki.client_key)),
                false,
            ),
            ("no certificate", None, false),
            (
                "foreign CA, allowed name",
                Some((&foreign_allowed.0, &foreign_allowed.1)),
                foreign_ok,
            ),
        ];
        for (what, client, expected) in cases {
            let reply = tls_request(exp.addr, &pki.ca, client, "/healthz", &[]).await;
            assert_eq!(ok(&reply), expected, "{kind}, {what}: {reply:?}");
        }
        exp.stop().await;
    }
    sim.shutdown().await;
}

const ALICE_PW: &str = "Basic YWxpY2U6czNjcmV0"; // alice:s3cret
const ALICE_WRONG: &str = "Basic YWxpY2U6bm9wZQ=="; // alice:nope
const BOB_PW: &str = "Basic Ym9iOnMzY3JldA=="; // bob:s3cret

#[tokio::test]
async fn basic_auth_right_wrong_unknown_and_missing() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let dir = scratch(&[("web.yml", &format!("basic_auth_users:\n  alice: {hash}\n"))]);
    let sim = simulator(ONE_TABLE).await;
    let exp = with_web_config(&sim, &dir.path().join("web.yml"), true).await;
    let cases = [
        (Some(ALICE_PW), 200),
        (Some(ALICE_WRONG), 401),
        (Some(BOB_PW), 401),
        (None, 401),
    ];
    for (auth, status) in cases {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let reply = request_with(exp.addr, "GET", "/metrics", &headers).await;
        assert_eq!(reply.status, status, "{auth:?}");
        if status == 401 {
            let challenge = reply.header("www-authenticate").unwrap_or_default();
            assert!(challenge.starts_with("Basic realm="), "{challenge}");
            assert!(!reply.body.contains("dynamodb_kinesis"), "{}", reply.body);
        }
    }
    // --web.unauthenticated-probes: probes answer without credentials.
    assert_eq!(request(exp.addr, "GET", "/healthz").await.status, 200);
    assert_ne!(request(exp.addr, "GET", "/readyz").await.status, 401);
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn certificates_and_users_rotate_and_an_invalid_file_keeps_the_old_one() {
    let first = Pki::new("first");
    let second = Pki::new("second");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  alice: {hash}\n"
    );
    let dir = scratch(&[("web.yml", &web)]);
    tls_files(dir.path(), &first);
    let path = dir.path().join("web.yml");
    let sim = simulator(ONE_TABLE).await;
    let exp = with_web_config(&sim, &path, false).await;
    let auth = [("Authorization", ALICE_PW)];
    let reply = tls_request(exp.addr, &first.ca, None, "/metrics", &auth).await;
    assert_eq!(reply.map(|r| r.status), Ok(200));

    // An invalid file: logged, and the running one stays.
    std::fs::write(
        &path,
        "tls_server_config:\n  cert_file: server.crt\n  typo: 1\n",
    )
    .unwrap();
    tokio::time::sleep(web_config::RELOAD_CHECK_INTERVAL * 3).await;
    let reply = tls_request(exp.addr, &first.ca, None, "/metrics", &auth).await;
    assert_eq!(reply.map(|r| r.status), Ok(200), "old config kept");

    // New certificate files and a new user, without a restart.
    tls_files(dir.path(), &second);
    let hash_bob = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(&path, format!("{web}  bob: {hash_bob}\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = tls_request(
            exp.addr,
            &second.ca,
            None,
            "/metrics",
            &[("Authorization", BOB_PW)],
        )
        .await;
        if reply.as_ref().is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rotation within 10 s: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let old = tls_request(exp.addr, &first.ca, None, "/healthz", &auth).await;
    assert!(old.is_err(), "the old certificate is gone: {old:?}");
    exp.stop().await;
    sim.shutdown().await;
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
