//! The web crate over real sockets, with a trivial handler standing in for
//! an exporter: TLS and client certificates from a web config (made with
//! rcgen), basic auth (also under a flood of clients that go away), and
//! reloads that fail closed. Every wait is bounded.

#[path = "support/client.rs"]
mod client;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{exchange_raw, tls_connect, Pki};
use dke_web::serve::{serve, Body, Limits};
use dke_web::web_config::{self, Auth, WebConfig, WebState, RELOAD_CHECK_INTERVAL};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A server answering `ok` to every request its web config lets through.
struct Server {
    addr: SocketAddr,
    web: Arc<WebState>,
    /// What the web config watcher reported, in order.
    reloads: Arc<Mutex<Vec<bool>>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Serve with the web config at `path` (`None`: plain).
    async fn start(path: Option<&Path>) -> Server {
        let config = match path {
            Some(path) => web_config::load(path).unwrap_or_else(|e| panic!("{e}")),
            None => WebConfig::plain(),
        };
        let web = Arc::new(WebState::new(config, path.map(Path::to_path_buf)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let reloads = Arc::new(Mutex::new(Vec::new()));
        let heard = Arc::clone(&reloads);
        let watcher = tokio::spawn(
            Arc::clone(&web).watch(stop.clone().cancelled_owned(), move |ok| {
                heard.lock().unwrap().push(ok)
            }),
        );
        let handler = {
            let web = Arc::clone(&web);
            move |req: Request<Incoming>, _peer: SocketAddr| {
                let web = Arc::clone(&web);
                async move { Ok(respond(&web, &req).await) }
            }
        };
        let server = tokio::spawn({
            let tls = web.tls_source();
            let stop = stop.clone();
            async move {
                serve(
                    vec![listener],
                    handler,
                    stop.cancelled_owned(),
                    Duration::from_millis(200),
                    Limits::default(),
                    Some(tls),
                )
                .await;
            }
        });
        Server {
            addr,
            web,
            reloads,
            stop,
            tasks: vec![watcher, server],
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("stops within 10 s")
                .expect("no panic");
        }
    }
}

/// What an exporter does with the web state: rate limit, credentials,
/// headers.
async fn respond(web: &WebState, req: &Request<Incoming>) -> Response<Body> {
    let status = |code| {
        let mut resp = Response::new(Body::new(Bytes::new()));
        *resp.status_mut() = code;
        resp
    };
    if web.admit().is_err() {
        return status(StatusCode::TOO_MANY_REQUESTS);
    }
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match web.authorize(authorization).await {
        Auth::Allowed => {}
        Auth::Denied => return status(StatusCode::UNAUTHORIZED),
        Auth::Busy => return status(StatusCode::TOO_MANY_REQUESTS),
    }
    let mut resp = Response::new(Body::new(Bytes::from_static(b"ok\n")));
    for (name, value) in web.current().headers() {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// One HTTP/1.0 `GET /metrics` on `stream`, parsed.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let raw = exchange_raw(stream, "GET", "/metrics", "localhost", headers).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no answer: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status: {head:?}"))?;
    Ok(Reply {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    })
}

/// A plain HTTP request, bounded by 10 s.
async fn plain(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<Reply, String> {
    let go = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        exchange(stream, headers).await
    };
    tokio::time::timeout(Duration::from_secs(10), go)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".into()))
}

/// An HTTPS request, bounded by 10 s.
async fn https(
    addr: SocketAddr,
    ca: &str,
    client: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let go = async {
        let stream = tls_connect(addr, ca, client).await?;
        exchange(stream, headers).await
    };
    tokio::time::timeout(Duration::from_secs(10), go)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".into()))
}

fn ok(reply: &Result<Reply, String>) -> bool {
    reply.as_ref().is_ok_and(|r| r.status == 200)
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A scratch directory with `web.yml` and the PKI's files.
fn web_dir(pki: &Pki, web_yml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    pki.write_files(dir.path());
    std::fs::write(dir.path().join("web.yml"), web_yml).unwrap();
    dir
}

const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

#[tokio::test]
async fn tls_serves_https_and_plain_http_to_it_fails() {
    let pki = Pki::new("a");
    let dir = web_dir(
        &pki,
        &format!("{TLS}http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"),
    );
    let server = Server::start(Some(&dir.path().join("web.yml"))).await;
    let reply = https(server.addr, &pki.ca, None, &[]).await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
    assert!(reply.head.contains("x-content-type-options: nosniff"));
    let reply = plain(server.addr, &[]).await;
    assert!(!ok(&reply), "plain HTTP on a TLS port: {reply:?}");
    // A client trusting another CA refuses the server.
    let err = https(server.addr, &Pki::new("b").ca, None, &[])
        .await
        .unwrap_err();
    assert!(err.contains("handshake"), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn client_certificates_follow_client_auth_type() {
    let pki = Pki::new("a");
    let stranger = Pki::new("stranger");
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
        let dir = web_dir(&pki, &format!("{TLS}  client_auth_type: {kind}\n{ca}"));
        let server = Server::start(Some(&dir.path().join("web.yml"))).await;
        let none = https(server.addr, &pki.ca, None, &[]).await;
        assert_eq!(ok(&none), none_ok, "{kind}, no certificate: {none:?}");
        let signed = https(
            server.addr,
            &pki.ca,
            Some((&pki.client_cert, &pki.client_key)),
            &[],
        )
        .await;
        assert_eq!(ok(&signed), signed_ok, "{kind}, CA-signed: {signed:?}");
        let foreign = https(
            server.addr,
            &pki.ca,
            Some((&stranger.client_cert, &stranger.client_key)),
            &[],
        )
        .await;
        assert_eq!(ok(&foreign), foreign_ok, "{kind}, foreign: {foreign:?}");
        server.stop().await;
    }
}

/// A client certificate and its key, PEM.
type ClientPem<'a> = (&'a str, &'a str);

#[tokio::test]
async fn client_allowed_sans_admit_only_verified_certificates_naming_one() {
    use rcgen::SanType;
    let pki = Pki::new("a");
    let stranger = Pki::new("stranger");
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
    for kind in ["RequireAndVerifyClientCert", "VerifyClientCertIfGiven"] {
        let dir = web_dir(
            &pki,
            &format!("{TLS}  client_auth_type: {kind}\n  client_ca_file: ca.crt\n{allowed}"),
        );
        let server = Server::start(Some(&dir.path().join("web.yml"))).await;
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
                false,
            ),
        ];
        for (what, client, expected) in cases {
            let reply = https(server.addr, &pki.ca, client, &[]).await;
            assert_eq!(ok(&reply), expected, "{kind}, {what}: {reply:?}");
        }
        server.stop().await;
    }
    // A certificate nobody verified proves no name: refused at load.
    for kind in ["RequireAnyClientCert", "RequestClientCert", "NoClientCert"] {
        let dir = web_dir(&pki, &format!("{TLS}  client_auth_type: {kind}\n{allowed}"));
        let path = dir.path().join("web.yml");
        let err = web_config::load(&path).unwrap_err();
        assert_eq!(
            err.lines(),
            // On the line of client_allowed_sans.
            [format!("{}:5: tls_server_config.client_allowed_sans: needs client_auth_type RequireAndVerifyClientCert or VerifyClientCertIfGiven, not {kind}: a certificate nobody verified proves no name", path.display())]
        );
    }
}

#[tokio::test]
async fn basic_auth_right_wrong_unknown_and_missing() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yml");
    std::fs::write(&path, format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
    let server = Server::start(Some(&path)).await;
    let cases = [
        (Some(basic("alice", "s3cret")), 200),
        (Some(basic("alice", "nope")), 401),
        (Some(basic("bob", "s3cret")), 401),
        (Some("Basic !!!".to_string()), 401),
        (None, 401),
    ];
    for (auth, status) in cases {
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        let reply = plain(server.addr, &headers).await.unwrap();
        assert_eq!(reply.status, status, "{auth:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_go_away_leave_no_password_check_queued() {
    let hash = bcrypt::hash("s3cret", 10).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yml");
    std::fs::write(&path, format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
    let server = Server::start(Some(&path)).await;
    // How long one check takes here.
    let started = Instant::now();
    let wrong = basic("alice", "wrong");
    let reply = plain(server.addr, &[("Authorization", &wrong)])
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    let one_check = started.elapsed();
    let mut clients = Vec::new();
    for i in 0..40 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let auth = basic("alice", &format!("guess{i}"));
        let req = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        clients.push(stream);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.web.auth_queue_len() < 30 {
        assert!(Instant::now() < deadline, "the checks never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let queued = server.web.auth_queue_len();
    // Every client goes away: the queue empties once the check running
    // now ends, not after the thirty or more queued behind it.
    drop(clients);
    let left = Instant::now();
    while server.web.auth_queue_len() > 0 {
        assert!(
            left.elapsed() < one_check * 4,
            "{} checks still queued {:?} after their clients left (one check takes {one_check:?})",
            server.web.auth_queue_len(),
            left.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let emptied = left.elapsed();
    let right = basic("alice", "s3cret");
    let reply = plain(server.addr, &[("Authorization", &right)])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    eprintln!("{queued} queued checks gone in {emptied:?}; one check takes {one_check:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_torn_or_emptied_web_config_never_opens_the_endpoint() {
    let pki = Pki::new("a");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let whole = format!("{TLS}basic_auth_users:\n  alice: {hash}\n");
    let dir = web_dir(&pki, &whole);
    let path = dir.path().join("web.yml");
    let server = Server::start(Some(&path)).await;
    let auth = basic("alice", "s3cret");
    // Probe continuously while the file is emptied (as a truncating write
    // leaves it) for a moment, then for good, then restored.
    let probing = {
        let (addr, ca) = (server.addr, pki.ca.clone());
        tokio::spawn(async move {
            let mut seen = 0;
            let until = Instant::now() + RELOAD_CHECK_INTERVAL * 10;
            while Instant::now() < until {
                let open = plain(addr, &[]).await;
                assert!(!ok(&open), "served over plain HTTP: {open:?}");
                let anonymous = https(addr, &ca, None, &[]).await.unwrap();
                assert_eq!(anonymous.status, 401);
                seen += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };
    std::fs::write(&path, "").unwrap();
    tokio::time::sleep(RELOAD_CHECK_INTERVAL / 2).await;
    std::fs::write(&path, &whole).unwrap();
    tokio::time::sleep(RELOAD_CHECK_INTERVAL * 3).await;
    assert!(
        server.reloads.lock().unwrap().is_empty(),
        "a torn file is never parsed"
    );
    std::fs::write(&path, "").unwrap();
    tokio::time::sleep(RELOAD_CHECK_INTERVAL * 3).await;
    assert_eq!(*server.reloads.lock().unwrap(), [false]);
    assert!(!server.web.last_reload_successful());
    std::fs::write(&path, &whole).unwrap();
    assert!(probing.await.unwrap() > 10);
    let reply = https(server.addr, &pki.ca, None, &[("Authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(*server.reloads.lock().unwrap(), [false, true]);
    assert!(server.web.last_reload_successful());
    server.stop().await;
}

#[tokio::test]
async fn certificates_and_users_rotate_and_an_invalid_file_keeps_the_old_one() {
    let first = Pki::new("first");
    let second = Pki::new("second");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = format!("{TLS}basic_auth_users:\n  alice: {hash}\n");
    let dir = web_dir(&first, &web);
    let path = dir.path().join("web.yml");
    let server = Server::start(Some(&path)).await;
    let alice = basic("alice", "s3cret");
    let bob = basic("bob", "s3cret");
    let reply = https(server.addr, &first.ca, None, &[("Authorization", &alice)]).await;
    assert!(ok(&reply), "{reply:?}");

    // An invalid file: logged, and the running one stays.
    std::fs::write(&path, format!("{TLS}  typo: 1\n")).unwrap();
    tokio::time::sleep(RELOAD_CHECK_INTERVAL * 3).await;
    let reply = https(server.addr, &first.ca, None, &[("Authorization", &alice)]).await;
    assert!(ok(&reply), "old config kept: {reply:?}");
    assert_eq!(*server.reloads.lock().unwrap(), [false]);

    // New certificate files and a new user, without a restart.
    second.write_files(dir.path());
    std::fs::write(&path, format!("{web}  bob: {hash}\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = https(server.addr, &second.ca, None, &[("Authorization", &bob)]).await;
        if ok(&reply) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rotation within 10 s: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let old = https(server.addr, &first.ca, None, &[("Authorization", &alice)]).await;
    assert!(old.is_err(), "the old certificate is gone: {old:?}");
    assert_eq!(*server.reloads.lock().unwrap(), [false, true]);
    server.stop().await;
}
