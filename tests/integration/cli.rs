//! The built binary as an operator runs it: flags, config errors before any
//! port is bound, `--config.check`, `--demo`, SIGTERM, and `promtool check
//! metrics` on real output.

use std::io::Write as _;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_dynamodb-kinesis-exporter");

/// Kills the child if a test fails before it exits.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("AWS_PROFILE")
        .output()
        .expect("binary runs")
}

/// `exporter.yaml` holding `text`, in a scratch directory that lives as
/// long as the returned guard.
fn write_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = scratch(&[("exporter.yaml", text)]);
    let path = dir.path().join("exporter.yaml");
    (dir, path)
}

fn signal(child: &Child, which: &str) {
    let status = Command::new("kill")
        .args([which, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Wait for the child to exit, at most `limit`.
fn wait_exit(guard: &mut Guard, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    let child = guard.0.as_mut().unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            guard.0 = None;
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn version_flag_names_version_and_revision() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!(
            "dynamodb-kinesis-exporter {} (revision ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}

#[test]
fn bad_config_fails_before_binding_with_every_problem() {
    let (_dir, path) = write_config("poll_interval: 5 parsecs\nconcurrency: 0\ntargets:\n  - region: us-east-1\n    tables: []\n",
    );
    // Hold the port: if the binary tried to bind first, it would report
    // "address in use" instead of the config problems.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let out = run(&[
        "--config.file",
        path.to_str().unwrap(),
        "--web.listen-address",
        &addr,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    for line in [
        format!("{p}:1: poll_interval: \"5 parsecs\" is not a duration"),
        format!("{p}:2: concurrency: must be at least 1"),
        format!("{p}:5: targets[0].tables: must list at least one table"),
    ] {
        assert!(err.contains(&line), "missing {line:?} in:\n{err}");
    }
    assert!(
        err.ends_with("error: the configuration has 3 problems; nothing was started\n"),
        "{err}"
    );
    assert!(!err.contains("cannot listen"), "{err}");
}

#[test]
fn bad_web_config_fails_before_binding_with_a_clear_error() {
    let (dir, config) = write_config(
        "targets:\n  - region: us-east-1\n    endpoint_url: http://127.0.0.1:9\n    tables: [orders]\n",
    );
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let web = dir.path().join("web.yml");
    let cases: [(&str, &[&str]); 10] = [
        ("tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  colour: blue\n", &["unknown field `colour`"]),
        ("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n", &[
            "tls_server_config.cert_file: cannot read",
            "missing.crt",
            "tls_server_config.key_file: cannot read",
        ]),
        ("tls_server_config:\n  cert_file: web.yml\n  key_file: web.yml\n  client_auth_type: Sometimes\n", &[
            "tls_server_config.client_auth_type: \"Sometimes\" is not one of",
            "tls_server_config.cert_file: no certificate in it",
        ]),
        ("tls_server_config:\n  cert_file: web.yml\n  key_file: web.yml\n  min_version: TLS14\n", &[
            "tls_server_config.min_version: \"TLS14\" is not one of",
        ]),
        ("basic_auth_users:\n  alice: hunter2\n", &["basic_auth_users.alice: not a bcrypt hash"]),
        ("http_server_config:\n  headers:\n    Server: me\n", &["\"Server\" is not an allowed header"]),
        ("- just\n- a list\n", &["invalid type"]),
        ("tls_server_config:\n  cert_file: web.yml\n  key_file: web.yml\n  client_allowed_sans: [scraper.example]\n", &[
            "tls_server_config.client_allowed_sans: needs client_auth_type RequireAndVerifyClientCert or VerifyClientCertIfGiven, not NoClientCert",
        ]),
        ("basic_auth_users:\n  alice: $2y$03$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi\n  bob: $2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeS\n", &[
            "basic_auth_users.alice: cost 3 is outside 4 to 31",
            "basic_auth_users.bob: salt and hash must be 53 characters after the cost, found 52",
        ]),
        ("rate_limit:\n  interval: 1s\n  burst: 0\n", &["rate_limit.burst: 0 admits no request at all"]),
    ];
    for (text, wants) in cases {
        std::fs::write(&web, text).unwrap();
        let out = run(&[
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            &addr,
            "--web.config.file",
            web.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        for want in wants {
            assert!(err.contains(want), "{text}: missing {want:?} in:\n{err}");
        }
        assert!(err.contains(&web.display().to_string()), "{err}");
        assert!(
            err.ends_with("error: the web config file is invalid; nothing was started\n"),
            "{err}"
        );
        assert!(
            !err.contains("cannot listen") && !err.contains("panicked"),
            "{err}"
        );
    }
    let out = run(&[
        "--config.file",
        config.to_str().unwrap(),
        "--web.config.file",
        "/nonexistent/web.yml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/web.yml: cannot read the web config file"),
        "{err}"
    );
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let out = run(&["--config.file", "/nonexistent/exporter.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/exporter.yaml"), "{err}");
}

#[test]
fn config_check_validates_and_summarises() {
    let out = run(&["--config.check", "--config.file", "config/exporter.yaml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("config/exporter.yaml: configuration is valid\n"),
        "{text}"
    );
    assert!(text.contains("us-east-1"), "{text}");

    let (_bad_dir, bad) = write_config("targets: []\n");
    let out = run(&["--config.check", "--config.file", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("targets: must list at least one target"));
}

/// A reader that went away (`--config.check | head -1`) is not a failure:
/// the write gets EPIPE (Rust ignores SIGPIPE), which once panicked.
#[test]
fn a_closed_stdout_pipe_is_not_a_failure() {
    for args in [
        "--config.check --config.file config/exporter.yaml",
        "--version",
    ] {
        // `head -c0` exits at once; the exporter writes after it did.
        let script =
            format!("( sleep 0.3; exec \"$0\" {args} ) | head -c0; exit ${{PIPESTATUS[0]}}");
        let out = Command::new("bash")
            .args(["-c", &script, BIN])
            .output()
            .expect("bash runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args}: {stderr}");
    }
}

#[test]
fn bad_flags_are_rejected() {
    let out = run(&["--log.level", "chatty"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&[
        "--config.file",
        "config/exporter.yaml",
        "--web.listen-address",
        "nonsense",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--web.listen-address \"nonsense\""));
    let out = run(&[
        "--config.file",
        "config/exporter.yaml",
        "--web.listen-address",
        "127.0.0.1:0",
        "--web.telemetry-path",
        "metrics",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid telemetry path"));
}

/// `--demo` end to end: ready, real statuses, valid exposition, and a clean
/// exit on SIGTERM.
#[tokio::test]
async fn demo_mode_serves_metrics_and_exits_cleanly_on_sigterm() {
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(BIN)
        .args([
            "--demo",
            "--web.listen-address",
            &addr.to_string(),
            "--log.format",
            "json",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn demo");
    let mut guard = Guard(Some(child));

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && request(addr, "GET", "/readyz").await.status == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "demo never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = scrape(addr).await;
    let statuses = family(&page, "dynamodb_kinesis_destination_status");
    assert!(statuses.len() >= 12, "{page}");
    let mut per_stream: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for (series, value) in &statuses {
        let entry = per_stream
            .entry(label(series, "stream_arn").unwrap())
            .or_default();
        entry.0 += 1;
        entry.1 += usize::from(*value == 1.0);
    }
    assert!(per_stream.len() >= 3, "{per_stream:?}");
    for (arn, (series, current)) in &per_stream {
        assert!(*series >= 6, "{arn}: {series} series");
        assert_eq!(*current, 1, "{arn}: exactly one current status");
    }
    assert!(page.contains("dynamodb_kinesis_exporter_build_info{"));
    assert!(page.contains("process_resident_memory_bytes "));
    promtool_check(&page);

    signal(guard.0.as_ref().unwrap(), "-TERM");
    let status = wait_exit(&mut guard, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
}

/// Start the binary with `args` the way systemd's socket activation does:
/// `LISTEN_FDS=1` and `LISTEN_PID` of the process itself (the shell's `$$`,
/// kept across `exec`), with `passed` (a redirection target such as `&12`
/// or `/dev/null`) as file descriptor 3. bash, not sh: dash takes only
/// single-digit descriptors.
fn spawn_activated(passed: &str, args: &[&str]) -> Child {
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\" 3<{passed}"
        ))
        .arg(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn through bash")
}

#[tokio::test]
async fn systemd_socket_activation_serves_on_the_passed_socket() {
    use std::os::fd::AsRawFd as _;
    // Bound and listening before the exporter starts, as systemd does; kept
    // open across exec for the child (std opens it close-on-exec).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&listener)
        .set_cloexec(false)
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let ignored = format!("127.0.0.1:{}", free_port());
    let child = spawn_activated(
        &format!("&{}", listener.as_raw_fd()),
        &[
            "--demo",
            "--web.systemd-socket",
            "--web.listen-address",
            &ignored,
        ],
    );
    // Close-on-exec again, so children other tests spawn later do not
    // inherit it.
    socket2::SockRef::from(&listener).set_cloexec(true).unwrap();
    let mut guard = Guard(Some(child));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = guard.0.as_mut().unwrap().try_wait().unwrap() {
            let mut stderr = String::new();
            let pipe = guard.0.as_mut().unwrap().stderr.as_mut().unwrap();
            std::io::Read::read_to_string(pipe, &mut stderr).unwrap();
            panic!("exited early ({status}):\n{stderr}");
        }
        // Connecting always works (the socket listens from the start); an
        // answer needs the exporter.
        if try_request(addr, "GET", "/readyz")
            .await
            .is_ok_and(|r| r.status == 200)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready on the passed socket"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = scrape(addr).await;
    assert!(
        page.contains("dynamodb_kinesis_destination_status{"),
        "{page}"
    );
    // --web.listen-address is ignored under socket activation.
    assert!(std::net::TcpStream::connect(&ignored).is_err());
    signal(guard.0.as_ref().unwrap(), "-TERM");
    assert_eq!(
        wait_exit(&mut guard, Duration::from_secs(15)).code(),
        Some(0)
    );
}

#[test]
fn systemd_socket_without_a_usable_socket_is_a_clear_error() {
    // Nothing passed at all.
    let out = run(&["--demo", "--web.systemd-socket"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("systemd passed no sockets"), "{stderr}");
    // Descriptor 3 is a file, not a socket.
    let child = spawn_activated("/dev/null", &["--demo", "--web.systemd-socket"]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("passed socket 1 of 1 is not a TCP socket"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Lint real output with promtool (see [`required_tool`] for when it is
/// missing).
fn promtool_check(page: &str) {
    let Some(promtool) = required_tool("promtool", "`promtool check metrics` is") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A newcomer pointing the binary at a local endpoint without setting any
/// credentials still gets real data: loopback endpoints fall back to
/// placeholder credentials instead of walking the chain off the machine.
#[tokio::test]
async fn loopback_endpoint_works_without_any_credentials() {
    let sim = simulator(
        "tables:\n  - name: orders\n    destinations:\n      - stream_arn: arn:aws:kinesis:us-east-1:123456789012:stream/orders-cdc\n        status: ENABLE_FAILED\n",
    )
    .await;
    let (_dir, config) = write_config(&format!(
            "poll_interval: 1s\ntargets:\n  - region: us-east-1\n    endpoint_url: {}\n    tables: [orders]\n",
            sim.endpoint_url()
        ),
    );
    let home = config.parent().unwrap().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut command = Command::new(BIN);
    command
        .args([
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            &addr.to_string(),
        ])
        .env("HOME", &home)
        .env("AWS_CONFIG_FILE", home.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_")
            && key != "AWS_CONFIG_FILE"
            && key != "AWS_SHARED_CREDENTIALS_FILE"
        {
            command.env_remove(key);
        }
    }
    // Should the fallback break, the default chain must fail here rather
    // than ask the instance metadata service, which is off this machine.
    command.env("AWS_EC2_METADATA_DISABLED", "true");
    let mut guard = Guard(Some(command.spawn().expect("spawn")));
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let page = scrape(addr).await;
            if page.contains("dynamodb_kinesis_table_poll_success{") {
                break page;
            }
        }
        assert!(Instant::now() < deadline, "no poll finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        value(
            &page,
            "dynamodb_kinesis_table_poll_success",
            &[
                ("table", "orders"),
                ("region", "us-east-1"),
                ("account_id", "123456789012")
            ]
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        value(
            &page,
            "dynamodb_kinesis_destination_status",
            &[
                ("table", "orders"),
                ("region", "us-east-1"),
                ("account_id", "123456789012"),
                (
                    "stream_arn",
                    "arn:aws:kinesis:us-east-1:123456789012:stream/orders-cdc"
                ),
                ("status", "ENABLE_FAILED"),
            ]
        ),
        Some(1.0)
    );
    signal(guard.0.as_ref().unwrap(), "-TERM");
    assert_eq!(
        wait_exit(&mut guard, Duration::from_secs(15)).code(),
        Some(0)
    );
    sim.shutdown().await;
}

/// SIGHUP re-reads the config file: a valid file swaps the tables, an
/// invalid one is reported through the reload gauge while the old config
/// keeps running; the process never exits on either.
#[tokio::test]
async fn sighup_reloads_the_config_file() {
    let sim = simulator("tables:\n  - name: orders\n  - name: payments\n").await;
    let config_text = |tables: &str| {
        format!(
            "poll_interval: 300ms\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    endpoint_url: {}\n    tables: [{tables}]\n",
            sim.endpoint_url()
        )
    };
    let (_dir, path) = write_config(&config_text("orders"));
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(BIN)
        .args([
            "--config.file",
            path.to_str().unwrap(),
            "--web.listen-address",
            &addr.to_string(),
        ])
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut guard = Guard(Some(child));
    let success = |page: &str, table: &str| {
        value(
            page,
            "dynamodb_kinesis_table_poll_success",
            &[
                ("table", table),
                ("region", "us-east-1"),
                ("account_id", "123456789012"),
            ],
        )
    };
    let reload_ok = "dynamodb_kinesis_exporter_config_last_reload_successful";
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "exporter never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    scrape_until(addr, Duration::from_secs(10), |p| {
        success(p, "orders") == Some(1.0)
    })
    .await;

    std::fs::write(&path, config_text("orders, payments")).unwrap();
    signal(guard.0.as_ref().unwrap(), "-HUP");
    let page = scrape_until(addr, Duration::from_secs(10), |p| {
        success(p, "payments") == Some(1.0)
    })
    .await;
    assert_eq!(value(&page, reload_ok, &[]), Some(1.0));

    std::fs::write(&path, "targets: [\n").unwrap();
    signal(guard.0.as_ref().unwrap(), "-HUP");
    let page = scrape_until(addr, Duration::from_secs(10), |p| {
        value(p, reload_ok, &[]) == Some(0.0)
    })
    .await;
    assert_eq!(success(&page, "payments"), Some(1.0));

    signal(guard.0.as_ref().unwrap(), "-TERM");
    assert_eq!(
        wait_exit(&mut guard, Duration::from_secs(15)).code(),
        Some(0)
    );
    sim.shutdown().await;
}

/// The SDK's standard endpoint variables reach a local implementation of
/// every service the exporter calls: `AWS_ENDPOINT_URL_STS` for the
/// assumed role, `AWS_ENDPOINT_URL_DYNAMODB` for the polls,
/// `AWS_ENDPOINT_URL_KINESIS` for the stream check and
/// `AWS_ENDPOINT_URL_CLOUDWATCH` for the CDC metrics, with no
/// `endpoint_url` in the config at all, as an operator would set them.
#[tokio::test]
async fn standard_endpoint_variables_reach_every_service() {
    let member = "222222222222";
    let sim = simulator(&format!(
        "scopes:\n  - account_id: \"{member}\"\n    region: eu-west-1\n    tables:\n      - name: orders\n        destinations:\n          - stream_arn: arn:aws:kinesis:eu-west-1:{member}:stream/orders-cdc\n            status: ACTIVE\n        cdc_metrics:\n          started_ago: 30m\n          AgeOfOldestUnreplicatedRecord: [{{value: 250}}]\n"
    ))
    .await;
    let (_dir, config) = write_config(&format!(
        "poll_interval: 1s\ntargets:\n  - region: eu-west-1\n    role_arn: arn:aws:iam::{member}:role/dynamodb-kinesis-exporter\n    tables: [orders]\n    cdc_metrics: {{interval: 1s}}\n"
    ));
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    command
        .args([
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            &addr.to_string(),
        ])
        .env("AWS_ACCESS_KEY_ID", "AKIDHUBHUBHUB")
        .env("AWS_SECRET_ACCESS_KEY", "hub-secret")
        .env("AWS_ENDPOINT_URL_STS", sim.endpoint_url())
        .env("AWS_ENDPOINT_URL_DYNAMODB", sim.endpoint_url())
        .env("AWS_ENDPOINT_URL_KINESIS", sim.endpoint_url())
        .env("AWS_ENDPOINT_URL_CLOUDWATCH", sim.endpoint_url())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut guard = Guard(Some(command.spawn().expect("spawn")));
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "exporter never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = scrape_until(addr, Duration::from_secs(15), |p| {
        p.contains("dynamodb_kinesis_table_poll_success{")
            && p.contains("dynamodb_kinesis_stream_status{")
            && p.contains("dynamodb_kinesis_cdc_age_of_oldest_unreplicated_record_seconds{")
    })
    .await;
    let stream = format!("arn:aws:kinesis:eu-west-1:{member}:stream/orders-cdc");
    assert_eq!(
        value(
            &page,
            "dynamodb_kinesis_stream_status",
            &[
                ("account_id", member),
                ("region", "eu-west-1"),
                ("stream_arn", &stream),
                ("status", "ACTIVE")
            ]
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        value(
            &page,
            "dynamodb_kinesis_cdc_age_of_oldest_unreplicated_record_seconds",
            &[
                ("table", "orders"),
                ("region", "eu-west-1"),
                ("account_id", member),
                ("delegated_operation", "PutRecords")
            ]
        ),
        Some(0.25),
        "{page}"
    );
    assert_eq!(
        value(
            &page,
            "dynamodb_kinesis_table_poll_success",
            &[
                ("table", "orders"),
                ("region", "eu-west-1"),
                ("account_id", member)
            ]
        ),
        Some(1.0),
        "{page}"
    );
    // The polls were signed with the role's keys, which STS issued.
    let issued: Vec<String> = sim
        .issued_keys()
        .into_iter()
        .map(|k| k.access_key_id)
        .collect();
    let polls: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.service != dke_simulator::Service::Sts)
        .collect();
    for service in [
        dke_simulator::Service::DynamoDb,
        dke_simulator::Service::Kinesis,
        dke_simulator::Service::CloudWatch,
    ] {
        assert!(polls.iter().any(|r| r.service == service), "{service:?}");
    }
    assert!(polls
        .iter()
        .all(|r| r.account_id == member && issued.contains(&r.access_key_id)));
    signal(guard.0.as_ref().unwrap(), "-TERM");
    assert_eq!(
        wait_exit(&mut guard, Duration::from_secs(15)).code(),
        Some(0)
    );
}

/// `--once` against the simulator: the page on stdout, exit 0 when every
/// poll succeeded and 1 when one failed; no port is bound (the listen
/// address given is held by the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_prints_the_page_and_exits_by_poll_outcome() {
    let sim = simulator(
        "tables:\n  - name: orders\n    destinations:\n      - stream_arn: arn:aws:kinesis:us-east-1:123456789012:stream/orders-cdc\n        status: ACTIVE\n  - name: throttled\n    fault: throttle\n",
    )
    .await;
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    for (tables, code) in [("[orders]", 0), ("[orders, throttled]", 1)] {
        let (dir, config) = write_config(&format!(
            "max_attempts: 1\nrequest_timeout: 2s\ntargets:\n  - region: us-east-1\n    endpoint_url: {}\n    tables: {tables}\n",
            sim.endpoint_url()
        ));
        let home = dir.path().join("home");
        let args = [
            "--once".to_string(),
            "--config.file".to_string(),
            config.display().to_string(),
            "--web.listen-address".to_string(),
            addr.clone(),
        ];
        let out = tokio::task::spawn_blocking(move || {
            let mut command = Command::new(BIN);
            command
                .args(&args)
                .env("HOME", &home)
                .env("AWS_CONFIG_FILE", home.join("config"))
                .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env_remove("AWS_PROFILE");
            let mut child = command
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "--once did not exit within 30 s");
                std::thread::sleep(Duration::from_millis(20));
            }
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap();
        let page = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{tables}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            value(
                &page,
                "dynamodb_kinesis_table_poll_success",
                &[
                    ("table", "orders"),
                    ("region", "us-east-1"),
                    ("account_id", "123456789012")
                ]
            ),
            Some(1.0),
            "{page}"
        );
        if code == 1 {
            assert_eq!(
                value(
                    &page,
                    "dynamodb_kinesis_table_poll_success",
                    &[
                        ("table", "throttled"),
                        ("region", "us-east-1"),
                        ("account_id", "123456789012")
                    ]
                ),
                Some(0.0)
            );
            assert!(String::from_utf8_lossy(&out.stderr).contains("at least one poll failed"));
        }
        promtool_check(&page);
    }
    sim.shutdown().await;
}
