//! End to end, on loopback: the simulator (in process) plays a DynamoDB
//! account whose `orders` destination fails for 35 s and recovers; the real
//! exporter binary polls it; the real Prometheus scrapes the exporter and
//! evaluates the repository's `deploy/prometheus/alerts.yml` (a copy in
//! which only the two expectation alerts' 15-minute `for` is cut to
//! [`SHORT_FOR`]); the real Alertmanager routes with the repository's
//! `deploy/alertmanager/alertmanager.yml` (its receivers pointed at a
//! webhook in this test, its grouping waits cut to a second). Two silent
//! stops are staged too (a stream deleted behind an ACTIVE destination,
//! records failing to replicate in CloudWatch), and both must page. CDC is
//! switched off on two tables, as an operator would
//! (`DisableKinesisStreamingDestination`): the one that must stream pages
//! its team's receiver (the `tag_team` route), the one that need not pages
//! no one; a table streaming to a wrong stream warns. The test checks the
//! firing and the resolved notification and who received each, that every
//! rule evaluates cleanly, and that every dashboard query returns the
//! expected series.
//!
//! Needs `prometheus` and `prometheus-alertmanager` on PATH (Debian's package
//! names). Without them the test is skipped with a loud message, unless `CI`
//! is set, where their absence fails it. Every wait polls for its condition
//! under a deadline; the whole test is bounded by [`OVERALL`].

use crate::support::{expand_grafana_variables, required_tool, try_request};

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dke_simulator::{Fault, Scenario, Simulator};
use serde_json::Value as Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_dynamodb-kinesis-exporter");
const PROMETHEUS: &str = "prometheus";
const ALERTMANAGER: &str = "prometheus-alertmanager";
/// Bound on the whole test.
const OVERALL: Duration = Duration::from_secs(300);
/// Bound on one webhook exchange.
const HTTP_LIMIT: Duration = Duration::from_secs(10);

const ALERT: &str = "DynamoDBKinesisTableNoWorkingDestination";
/// The silent stops the scenario stages, each of which must page.
const SILENT_STOPS: [(&str, &str); 2] = [
    ("DynamoDBKinesisStreamMissing", "shipments"),
    ("DynamoDBKinesisRecordsFailingToReplicate", "clickstream"),
];
const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/orders-cdc";
/// The `for` the expectation alerts get in the test's copy of the rules.
const SHORT_FOR: &str = "5s";
/// The alerts whose `for` the copy cuts to [`SHORT_FOR`]: 15 minutes is
/// longer than the whole test.
const SHORTENED: [&str; 2] = [EXPECTED_ALERT, WRONG_STREAM_ALERT];
const EXPECTED_ALERT: &str = "DynamoDBKinesisExpectedTableNotStreaming";
const WRONG_STREAM_ALERT: &str = "DynamoDBKinesisExpectedTableWrongStream";
/// Must stream (tag `cdc-required`), owned by the payments team; switched off.
const EXPECTED_TABLE: &str = "customers";
/// Owned by the payments team too, need not stream; switched off as well.
const NOT_EXPECTED_TABLE: &str = "scratch";
/// Must stream to a `*-cdc` stream, streams to an archive stream.
const WRONG_STREAM_TABLE: &str = "reports";
/// The receivers of deploy/alertmanager/alertmanager.yml the test expects
/// to be used: the payments team's route, and the severity routes.
const TEAM_RECEIVER: &str = "payments";
const PAGER: &str = "pager";
const CHAT: &str = "chat";
const FAILURE: &str = "The KMS key of the Kinesis stream is disabled";
const RUNBOOK: &str = "https://github.com/dynamodb-kinesis-exporter/dynamodb-kinesis-exporter/blob/main/docs/runbook.md#dynamodbkinesistablenoworkingdestination";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    read(&repo().join("tests/fixtures/e2e").join(name))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The shipped alerting rules with the `for` of each of [`SHORTENED`] cut
/// to [`SHORT_FOR`]; every other line as shipped.
fn rules_with_short_for(rules: &str) -> String {
    let mut lines: Vec<String> = rules.lines().map(str::to_string).collect();
    for alert in SHORTENED {
        let start = (lines.iter())
            .position(|l| l.trim() == format!("- alert: {alert}"))
            .unwrap_or_else(|| panic!("{alert} is not in the rules"));
        let end = (lines.iter().skip(start + 1))
            .position(|l| l.trim_start().starts_with("- alert:"))
            .map_or(lines.len(), |n| start + 1 + n);
        let at = (start..end)
            .find(|i| lines[*i].trim_start().starts_with("for:"))
            .unwrap_or_else(|| panic!("{alert} has no `for`"));
        let indent = lines[at].len() - lines[at].trim_start().len();
        lines[at] = format!("{}for: {SHORT_FOR}", " ".repeat(indent));
    }
    lines.join("\n") + "\n"
}

/// The shipped Alertmanager config with every receiver replaced by a
/// webhook to `hook` (named the same, so the notification's `receiver`
/// says which route matched) and the grouping waits cut to a second;
/// routes, matchers and inhibitions as shipped.
fn alertmanager_config(hook: SocketAddr) -> String {
    use serde_yaml::Value as Yaml;
    let path = repo().join("deploy/alertmanager/alertmanager.yml");
    let mut config: Yaml = serde_yaml::from_str(&read(&path)).expect("alertmanager.yml parses");
    config["route"]["group_wait"] = Yaml::from("1s");
    config["route"]["group_interval"] = Yaml::from("1s");
    let receivers = config["receivers"]
        .as_sequence_mut()
        .expect("a list of receivers");
    for receiver in receivers.iter_mut() {
        let name = receiver["name"]
            .as_str()
            .expect("a named receiver")
            .to_string();
        let webhook = format!(
            "name: {name}\nwebhook_configs:\n  - url: http://{hook}/{name}\n    send_resolved: true\n"
        );
        *receiver = serde_yaml::from_str(&webhook).expect("a webhook receiver");
    }
    serde_yaml::to_string(&config).expect("YAML")
}

// ------------------------------------------------------------ scratch space

/// A scratch directory, removed on success and kept (and named) on failure
/// so the logs in it can be read.
struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    fn new() -> Scratch {
        Scratch(Some(crate::support::scratch(&[])))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().expect("present until drop").path()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    fn subdir(&self, name: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::create_dir_all(&path).expect("scratch subdirectory");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let (true, Some(dir)) = (std::thread::panicking(), self.0.take()) {
            eprintln!("e2e: logs and configs kept in {}", dir.keep().display());
        }
    }
}

// ---------------------------------------------------------- child processes

/// A child process whose output goes to a log file; killed on drop.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, scratch: &Scratch) -> Proc {
        let log = scratch.path().join(format!("{name}.log"));
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name, child, log }
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!(
            "--- last lines of {} ---\n{}",
            self.name,
            lines[from..].join("\n")
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes under test; a wait fails early, with their logs, when one
/// of them has exited.
struct Procs(Vec<Proc>);

impl Procs {
    fn check_alive(&mut self) -> Result<(), String> {
        for p in &mut self.0 {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(format!("{} exited early ({status})\n{}", p.name, p.tail()));
            }
        }
        Ok(())
    }

    fn logs(&self) -> String {
        self.0.iter().map(Proc::tail).collect::<Vec<_>>().join("\n")
    }

    /// Poll `probe` every 250 ms until it yields a value, `limit` passes
    /// (panic naming `what`), or a process dies (panic with its log).
    async fn wait_for<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut probe: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Err(died) = self.check_alive() {
                panic!("while waiting for {what}: {died}");
            }
            if let Some(value) = probe().await {
                return value;
            }
            if Instant::now() >= deadline {
                panic!("{what}: not within {limit:?}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

// --------------------------------------------------------------------- HTTP

/// GET with the shared client: status and body, `Err` while a server starts.
async fn get(addr: SocketAddr, target: &str) -> Result<(u16, String), String> {
    try_request(addr, "GET", target)
        .await
        .map(|reply| (reply.status, reply.body))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What the webhook received: a decoded body, or why a request was unusable.
type Inbox = Arc<Mutex<Vec<Result<Json, String>>>>;

/// Alertmanager's webhook receiver: one POST per connection, answered 200.
async fn webhook(listener: TcpListener, inbox: Inbox) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let inbox = inbox.clone();
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(HTTP_LIMIT, receive(stream)).await;
            let entry = match outcome {
                Ok(Ok(Some(body))) => serde_json::from_slice(&body)
                    .map_err(|e| format!("webhook body is not JSON: {e}")),
                Ok(Ok(None)) => return,
                Ok(Err(e)) => Err(e),
                Err(_) => Err("webhook request did not finish in time".to_string()),
            };
            inbox.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
        });
    }
}

/// Read one request; `None` for a connection closed before sending one.
async fn receive(mut stream: TcpStream) -> Result<Option<Vec<u8>>, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .ok_or_else(|| format!("webhook request without Content-Length:\n{head}"))?;
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("webhook request body cut short".to_string());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.shutdown().await;
    Ok(Some(buf[head_end..head_end + length].to_vec()))
}

/// Every alert of every notification so far, each with its status
/// (`firing` / `resolved`) and, added by the test, the `receiver` the
/// notification went to.
fn notified(inbox: &Inbox) -> Vec<Json> {
    let inbox = inbox.lock().unwrap_or_else(|p| p.into_inner());
    let mut alerts = Vec::new();
    for entry in inbox.iter() {
        let body = entry.as_ref().unwrap_or_else(|e| panic!("{e}"));
        let list = body["alerts"]
            .as_array()
            .unwrap_or_else(|| panic!("notification without alerts: {body}"));
        alerts.extend(list.iter().map(|alert| {
            let mut alert = alert.clone();
            alert["receiver"] = body["receiver"].clone();
            alert
        }));
    }
    alerts
}

/// The first notified alert `alertname` for `table` in `status`.
fn find(inbox: &Inbox, alertname: &str, table: &str, status: &str) -> Option<Json> {
    notified(inbox).into_iter().find(|a| {
        a["status"] == status
            && a["labels"]["alertname"] == alertname
            && a["labels"]["table"] == table
    })
}

fn is_ours(alert: &Json, status: &str) -> bool {
    alert["status"] == status
        && alert["labels"]["alertname"] == ALERT
        && alert["labels"]["table"] == "orders"
}

// --------------------------------------------------------------- Prometheus

/// Instant query; the vector's samples as (labels, value).
async fn query(
    prom: SocketAddr,
    expr: &str,
) -> Result<Vec<(BTreeMap<String, String>, f64)>, String> {
    let target = format!("/api/v1/query?query={}", percent_encode(expr));
    let (status, body) = get(prom, &target).await?;
    let reply: Json = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if status != 200 || reply["status"] != "success" {
        return Err(format!("HTTP {status}: {body}"));
    }
    let result = reply["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("not a vector: {body}"))?;
    result
        .iter()
        .map(|sample| {
            let labels = sample["metric"]
                .as_object()
                .ok_or("sample without metric")?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let value = sample["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .ok_or("sample without value")?;
            Ok((labels, value))
        })
        .collect()
}

/// `label=value` pairs of one sample, for compact assertions.
fn key(labels: &BTreeMap<String, String>, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| labels.get(*n).map(String::as_str).unwrap_or("-"))
        .collect::<Vec<_>>()
        .join(" ")
}

// --------------------------------------------------------------------- test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_failed_pages_and_resolves_and_dashboard_queries_have_data() {
    let checks = "the end-to-end alerting test is";
    let (Some(prometheus), Some(alertmanager)) = (
        required_tool(PROMETHEUS, checks),
        required_tool(ALERTMANAGER, checks),
    ) else {
        return;
    };
    tokio::time::timeout(OVERALL, scenario(prometheus, alertmanager))
        .await
        .unwrap_or_else(|_| panic!("the end-to-end test did not finish within {OVERALL:?}"));
}

async fn scenario(prometheus: PathBuf, alertmanager: PathBuf) {
    let scratch = Scratch::new();
    let mut procs = Procs(Vec::new());
    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));

    // The webhook Alertmanager notifies.
    let inbox: Inbox = Arc::default();
    let hook_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("webhook bind");
    let hook_addr = hook_listener.local_addr().expect("webhook address");
    let hook_task = tokio::spawn(webhook(hook_listener, inbox.clone()));

    let am_addr = loopback(crate::support::free_port());
    let prom_addr = loopback(crate::support::free_port());
    let exporter_addr = loopback(crate::support::free_port());

    // Alertmanager, without clustering, routing as shipped.
    let am_config = scratch.write("alertmanager.yml", &alertmanager_config(hook_addr));
    procs.0.push(Proc::spawn(
        "alertmanager",
        Command::new(&alertmanager)
            .arg(format!("--config.file={}", am_config.display()))
            .arg(format!(
                "--storage.path={}",
                scratch.subdir("am-data").display()
            ))
            .arg(format!("--web.listen-address={am_addr}"))
            .arg("--cluster.listen-address="),
        &scratch,
    ));

    // Prometheus, with the repository's rules (only the expectation alerts'
    // `for` cut).
    let shipped_rules = read(&repo().join("deploy/prometheus/alerts.yml"));
    let alerts = scratch.write("alerts.yml", &rules_with_short_for(&shipped_rules));
    let prom_config = scratch.write(
        "prometheus.yml",
        &fixture("prometheus.yml")
            .replace("@ALERTS@", &alerts.display().to_string())
            .replace("@ALERTMANAGER@", &am_addr.to_string())
            .replace("@EXPORTER@", &exporter_addr.to_string()),
    );
    procs.0.push(Proc::spawn(
        "prometheus",
        Command::new(&prometheus)
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                scratch.subdir("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}")),
        &scratch,
    ));

    for (name, addr) in [("alertmanager", am_addr), ("prometheus", prom_addr)] {
        procs
            .wait_for(
                &format!("{name} ready"),
                Duration::from_secs(60),
                async || matches!(get(addr, "/-/ready").await, Ok((200, _))).then_some(()),
            )
            .await;
    }

    // The simulated account starts its clock now, with everything else up.
    let scenario = Scenario::from_yaml(&fixture("scenario.yaml")).expect("scenario parses");
    let sim = Simulator::start(scenario).await.expect("simulator starts");
    // The stream behind shipments' ACTIVE destination is gone; the checks of
    // payments' stream are denied (an error, never "gone").
    sim.delete_stream("arn:aws:kinesis:us-east-1:123456789012:stream/shipments-cdc");
    sim.set_stream_fault(
        "arn:aws:kinesis:us-east-1:123456789012:stream/payments-events",
        Some(Fault::AccessDenied),
    );
    let exporter_config = scratch.write(
        "exporter.yaml",
        &fixture("exporter.yaml").replace("@ENDPOINT@", &sim.endpoint_url()),
    );
    let no_file = scratch.path().join("no-such-file");
    procs.0.push(Proc::spawn(
        "exporter",
        Command::new(BIN)
            .arg(format!("--config.file={}", exporter_config.display()))
            .arg(format!("--web.listen-address={exporter_addr}"))
            .env("AWS_ACCESS_KEY_ID", "AKIDE2ETEST")
            .env("AWS_SECRET_ACCESS_KEY", "e2e-test-secret")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", &no_file)
            .env("AWS_SHARED_CREDENTIALS_FILE", &no_file)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN"),
        &scratch,
    ));
    procs
        .wait_for("exporter ready", Duration::from_secs(30), async || {
            matches!(get(exporter_addr, "/readyz").await, Ok((200, _))).then_some(())
        })
        .await;
    // From now on listings in eu-west-1 fail, so discovery errors have
    // series. (Not from the start: readiness waits for every scope's first
    // successful refresh.)
    sim.set_scope_fault("123456789012", "eu-west-1", Some(Fault::AccessDenied));

    // CDC switched off mid-run, as an operator would: once Prometheus has
    // seen both tables streaming and knows which one must (their tags read).
    let expectation =
        |table: &str| format!("dynamodb_kinesis_table_destination_expected{{table=\"{table}\"}}");
    procs
        .wait_for(
            "both tables scraped ACTIVE, with their expectations",
            Duration::from_secs(60),
            async || {
                let active = query(
                    prom_addr,
                    &format!("dynamodb_kinesis_destination_status{{status=\"ACTIVE\",table=~\"{EXPECTED_TABLE}|{NOT_EXPECTED_TABLE}\"}} == 1"),
                )
                .await
                .ok()?;
                let expected = query(prom_addr, &expectation(EXPECTED_TABLE)).await.ok()?;
                let not_expected = query(prom_addr, &expectation(NOT_EXPECTED_TABLE)).await.ok()?;
                let one = |samples: &[(BTreeMap<String, String>, f64)], want: f64| {
                    samples.len() == 1 && samples[0].1 == want
                };
                (active.len() == 2 && one(&expected, 1.0) && one(&not_expected, 0.0)).then_some(())
            },
        )
        .await;
    let operator = crate::support::operator_dynamodb(&sim, "us-east-1");
    for table in [EXPECTED_TABLE, NOT_EXPECTED_TABLE] {
        let stream = format!("arn:aws:kinesis:us-east-1:123456789012:stream/{table}-cdc");
        let out = operator
            .disable_kinesis_streaming_destination()
            .table_name(table)
            .stream_arn(&stream)
            .send()
            .await
            .unwrap_or_else(|e| panic!("disable {table}: {e:?}"));
        assert_eq!(
            out.destination_status().map(|s| s.as_str()),
            Some("DISABLING")
        );
    }

    // 1. The page: firing, with the destination's identity and AWS's reason.
    let firing = procs
        .wait_for(
            "a firing ENABLE_FAILED notification",
            Duration::from_secs(60),
            async || notified(&inbox).into_iter().find(|a| is_ours(a, "firing")),
        )
        .await;
    assert_eq!(firing["receiver"], PAGER, "no team tag: the severity route");
    let labels = &firing["labels"];
    for (name, want) in [
        ("severity", "critical"),
        ("table", "orders"),
        ("region", "us-east-1"),
        ("stream_arn", STREAM_ARN),
        ("stream_name", "orders-cdc"),
        ("account_id", "123456789012"),
        ("stream_account_id", "123456789012"),
        ("status", "ENABLE_FAILED"),
        ("status_description", FAILURE),
        ("job", "dynamodb-kinesis-exporter"),
    ] {
        assert_eq!(labels[name], want, "label {name} of {firing}");
    }
    assert_eq!(labels["instance"], exporter_addr.to_string());
    let annotations = &firing["annotations"];
    assert_eq!(
        annotations["summary"],
        format!(
            "DynamoDB table orders (account 123456789012, us-east-1) has no working Kinesis streaming destination: orders-cdc is ENABLE_FAILED: {FAILURE}"
        )
    );
    let description = annotations["description"].as_str().expect("description");
    for part in [
        "orders",
        "123456789012",
        "us-east-1",
        STREAM_ARN,
        "orders-cdc",
        FAILURE,
    ] {
        assert!(
            description.contains(part),
            "description lacks {part:?}: {description}"
        );
    }
    assert_eq!(annotations["runbook_url"], RUNBOOK);

    // 2. Recovery: the same alert, resolved.
    let resolved = procs
        .wait_for(
            "a resolved ENABLE_FAILED notification",
            Duration::from_secs(90),
            async || {
                notified(&inbox)
                    .into_iter()
                    .find(|a| is_ours(a, "resolved"))
            },
        )
        .await;
    assert_eq!(resolved["labels"], firing["labels"]);
    assert_eq!(resolved["startsAt"], firing["startsAt"]);

    // 3. The silent stops page too: a stream deleted behind an ACTIVE
    // destination (after its 2 minute `for`), records failing to replicate.
    for (alert, table) in SILENT_STOPS {
        let page = procs
            .wait_for(
                &format!("a firing {alert} notification for {table}"),
                Duration::from_secs(150),
                async || {
                    notified(&inbox).into_iter().find(|a| {
                        a["status"] == "firing"
                            && a["labels"]["alertname"] == alert
                            && a["labels"]["table"] == table
                    })
                },
            )
            .await;
        assert_eq!(page["labels"]["severity"], "critical", "{page}");
        assert_eq!(page["labels"]["account_id"], "123456789012", "{page}");
        assert_eq!(page["receiver"], PAGER, "{page}");
    }

    // 3b. CDC switched off on a table that must stream: its team is paged,
    // through the team route, with the table's tags on the alert.
    let page = procs
        .wait_for(
            &format!("a firing {EXPECTED_ALERT} notification for {EXPECTED_TABLE}"),
            Duration::from_secs(60),
            async || find(&inbox, EXPECTED_ALERT, EXPECTED_TABLE, "firing"),
        )
        .await;
    assert_eq!(page["receiver"], TEAM_RECEIVER, "{page}");
    for (name, want) in [
        ("severity", "critical"),
        ("account_id", "123456789012"),
        ("region", "us-east-1"),
        ("tag_team", "payments"),
        ("tag_owner", "maria"),
    ] {
        assert_eq!(page["labels"][name], want, "label {name} of {page}");
    }
    assert_eq!(
        page["annotations"]["runbook_url"],
        "https://github.com/dynamodb-kinesis-exporter/dynamodb-kinesis-exporter/blob/main/docs/runbook.md#dynamodbkinesisexpectedtablenotstreaming"
    );
    // The table switched off on purpose is as DISABLED, scraped, and not
    // expected: the reason nothing pages for it (checked below).
    let disabled = query(
        prom_addr,
        &format!("dynamodb_kinesis_destination_status{{status=\"DISABLED\",table=\"{NOT_EXPECTED_TABLE}\"}} == 1"),
    )
    .await
    .expect("query");
    assert_eq!(
        disabled.len(),
        1,
        "{NOT_EXPECTED_TABLE} is DISABLED: {disabled:?}"
    );
    let expected = query(prom_addr, &expectation(NOT_EXPECTED_TABLE))
        .await
        .expect("query");
    assert_eq!(expected.iter().map(|s| s.1).collect::<Vec<_>>(), [0.0]);

    // 3c. A wrong stream warns: no team route for its team, so chat.
    let warning = procs
        .wait_for(
            &format!("a firing {WRONG_STREAM_ALERT} notification for {WRONG_STREAM_TABLE}"),
            Duration::from_secs(60),
            async || find(&inbox, WRONG_STREAM_ALERT, WRONG_STREAM_TABLE, "firing"),
        )
        .await;
    assert_eq!(warning["receiver"], CHAT, "{warning}");
    assert_eq!(warning["labels"]["severity"], "warning", "{warning}");
    assert_eq!(warning["labels"]["tag_team"], "analytics", "{warning}");

    // Nothing else paged: ACTIVE, ENABLING, UPDATING and DISABLED destinations
    // (scratch's among them: switched off, not expected), a denied stream
    // check and a table failing for less than the `for` of its alert stay
    // quiet.
    let staged: Vec<(&str, &str)> = (SILENT_STOPS.iter().copied())
        .chain([
            (EXPECTED_ALERT, EXPECTED_TABLE),
            (WRONG_STREAM_ALERT, WRONG_STREAM_TABLE),
        ])
        .collect();
    let others: Vec<Json> = notified(&inbox)
        .into_iter()
        .filter(|a| !is_ours(a, "firing") && !is_ours(a, "resolved"))
        .filter(|a| {
            !staged.iter().any(|(alert, table)| {
                a["labels"]["alertname"] == *alert && a["labels"]["table"] == *table
            })
        })
        .collect();
    assert!(others.is_empty(), "unexpected notifications: {others:#?}");

    // 4. Every rule evaluates without error (a join that matched many-to-many
    // would show here, not in the notifications).
    let (status, body) = get(prom_addr, "/api/v1/rules").await.expect("rules API");
    assert_eq!(status, 200, "{body}");
    let rules: Json = serde_json::from_str(&body).expect("rules JSON");
    let mut evaluated = BTreeSet::new();
    for group in rules["data"]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["name"].as_str().unwrap_or_default().to_string();
            assert_eq!(rule["health"], "ok", "rule {name}: {rule}");
            evaluated.insert(name);
        }
    }
    let rule_file = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml"))
        .expect("the rule file");
    let alerts = rule_file
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(evaluated.len(), alerts, "rules loaded: {evaluated:?}");

    // 5. Every dashboard query, as Grafana would send it with "All" selected.
    dashboard_queries_have_the_expected_series(prom_addr).await;

    hook_task.abort();
    sim.shutdown().await;
}

async fn dashboard_queries_have_the_expected_series(prom: SocketAddr) {
    let path = repo().join("deploy/grafana/dynamodb-kinesis.json");
    let dashboard: Json =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let mut results = BTreeMap::new();
    let mut errors = Vec::new();
    let mut empty = Vec::new();
    // Rows only group the panels below them; they have no query.
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().expect("title").to_string();
        for target in panel["targets"].as_array().expect("targets") {
            let name = format!("{title} [{}]", target["refId"].as_str().unwrap_or("?"));
            let expr = expand_grafana_variables(target["expr"].as_str().expect("expr"));
            match query(prom, &expr).await {
                Err(e) => errors.push(format!("{name}: {e}\n  query: {expr}")),
                Ok(samples) if samples.is_empty() => empty.push(name.clone()),
                Ok(samples) => {
                    results.insert(name, samples);
                }
            }
        }
    }
    assert!(
        errors.is_empty(),
        "dashboard queries failed:\n{}",
        errors.join("\n")
    );
    // Every panel has data in this scenario.
    assert!(
        empty.is_empty(),
        "dashboard queries without series: {empty:?}"
    );

    let values = |name: &str, labels: &[&str]| -> BTreeMap<String, f64> {
        results[name]
            .iter()
            .map(|(l, v)| (key(l, labels), *v))
            .collect()
    };
    let map = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };

    // search-index was never polled successfully, so it has no destinations.
    assert_eq!(
        values("Destinations by status [A]", &["status"]),
        map(&[
            ("ACTIVE", 5.0),
            ("DISABLED", 3.0),
            ("DISABLING", 0.0),
            ("ENABLE_FAILED", 0.0),
            ("ENABLING", 1.0),
            ("UPDATING", 1.0),
        ])
    );

    let not_active: BTreeSet<String> = results["Destinations not ACTIVE [A]"]
        .iter()
        .map(|(l, _)| key(l, &["table", "stream_name", "status", "status_description"]))
        .collect();
    assert_eq!(
        not_active,
        BTreeSet::from([
            "audit-log audit-trail UPDATING Changing the approximate creation date time precision"
                .to_string(),
            // Prometheus drops empty labels: no description is "-" here.
            "customers customers-cdc DISABLED -".to_string(),
            "inventory inventory-changes ENABLING -".to_string(),
            "ledger ledger-archive DISABLED -".to_string(),
            "scratch scratch-cdc DISABLED -".to_string(),
        ])
    );

    // The timeline encodes each status as a number for its value mappings.
    assert_eq!(
        values("Status per destination [A]", &["table"]),
        map(&[
            ("audit-log", 6.0),
            ("clickstream", 2.0),
            ("customers", 4.0),
            ("inventory", 1.0),
            ("ledger", 4.0),
            ("orders", 2.0),
            ("payments", 2.0),
            ("reports", 2.0),
            ("scratch", 4.0),
            ("shipments", 2.0),
        ])
    );

    assert_eq!(
        values("Poll success [A]", &["table"]),
        map(&[
            ("audit-log", 1.0),
            ("clickstream", 1.0),
            ("customers", 1.0),
            ("inventory", 1.0),
            ("ledger", 1.0),
            ("orders", 1.0),
            ("payments", 1.0),
            ("reports", 1.0),
            ("scratch", 1.0),
            ("search-index", 0.0),
            ("shipments", 1.0),
        ])
    );

    let errors = values("API errors by code [A]", &["table", "code"]);
    assert_eq!(
        errors.keys().collect::<Vec<_>>(),
        ["search-index ThrottlingException"]
    );
    assert!(errors.values().all(|rate| *rate > 0.0), "{errors:?}");

    for quantile in ["A", "B", "C"] {
        let name = format!("Poll duration [{quantile}]");
        let durations = values(&name, &["region"]);
        assert_eq!(
            durations.keys().collect::<Vec<_>>(),
            ["us-east-1"],
            "{name}"
        );
        assert!(
            durations.values().all(|d| d.is_finite() && *d > 0.0),
            "{name}: {durations:?}"
        );
    }

    // Polls run every second, so no table's data is anywhere near stale.
    let ages = values("Data age per table [A]", &["table"]);
    assert_eq!(
        ages.keys().collect::<Vec<_>>(),
        [
            "audit-log",
            "clickstream",
            "customers",
            "inventory",
            "ledger",
            "orders",
            "payments",
            "reports",
            "scratch",
            "shipments"
        ]
    );
    assert!(ages.values().all(|age| *age < 60.0), "{ages:?}");

    // Expectations: the switched-off table that must stream, with its tags;
    // the one on a wrong stream; how many tables must and need not stream
    // (search-index's tags cannot be read: its expectation is unknown).
    assert_eq!(
        values(
            "Expected tables not streaming [A]",
            &["table", "tag_team", "tag_owner"]
        ),
        map(&[("customers payments maria", 1.0)])
    );
    assert_eq!(
        values(
            "Expected tables on a wrong stream [A]",
            &["table", "tag_team"]
        ),
        map(&[("reports analytics", 0.0)])
    );
    assert_eq!(
        values("Tables by expectation [A]", &["account_id", "region"]),
        map(&[("123456789012 us-east-1", 2.0)])
    );
    assert_eq!(
        values("Tables by expectation [B]", &["account_id", "region"]),
        map(&[("123456789012 us-east-1", 8.0)])
    );

    // Cost: every kind of call the exporter makes is counted by operation,
    // and only its own calls (the operator's Disable is not among them).
    let requests = values("AWS requests per second [A]", &["service", "operation"]);
    for call in [
        "dynamodb DescribeKinesisStreamingDestination",
        "dynamodb ListTables",
        "dynamodb ListTagsOfResource",
        "kinesis DescribeStreamSummary",
        "cloudwatch GetMetricData",
        "cloudwatch ListMetrics",
    ] {
        assert!(
            requests.contains_key(call),
            "{call} not counted: {requests:?}"
        );
    }
    assert!(
        requests
            .keys()
            .all(|k| !k.contains("KinesisStreamingDestination") || k.contains("Describe")),
        "{requests:?}"
    );
    assert!(
        requests["dynamodb DescribeKinesisStreamingDestination"] > 0.0,
        "{requests:?}"
    );
    let per_day = values("AWS requests per day [A]", &["service", "operation"]);
    assert_eq!(
        per_day.keys().collect::<Vec<_>>(),
        requests.keys().collect::<Vec<_>>()
    );
}

// ------------------------------------------------- TLS and basic auth scrape

/// The real Prometheus scrapes the exporter binary over TLS with basic auth,
/// configured by its own `tls_config` (`ca_file`) and `basic_auth`, and gets
/// every family, the `info` ones included (it negotiates OpenMetrics).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_through_tls_with_basic_auth() {
    let Some(prometheus) = required_tool(PROMETHEUS, "the TLS scrape test is") else {
        return;
    };
    tokio::time::timeout(OVERALL, tls_scenario(prometheus))
        .await
        .unwrap_or_else(|_| panic!("the TLS scrape test did not finish within {OVERALL:?}"));
}

async fn tls_scenario(prometheus: PathBuf) {
    let scratch = Scratch::new();
    let mut procs = Procs(Vec::new());
    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let prom_addr = loopback(crate::support::free_port());
    let exporter_addr = loopback(crate::support::free_port());

    let pki = crate::support::Pki::new("e2e");
    scratch.write("server.crt", &pki.server_cert);
    scratch.write("server.key", &pki.server_key);
    let ca = scratch.write("ca.crt", &pki.ca);
    let hash = bcrypt::hash("scrape-secret", 4).expect("bcrypt");
    let web = scratch.write(
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {hash}\n"
        ),
    );
    let prom_config = scratch.write(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: dynamodb-kinesis-exporter\n    scheme: https\n    tls_config:\n      ca_file: {}\n      server_name: localhost\n    basic_auth:\n      username: prometheus\n      password: scrape-secret\n    static_configs:\n      - targets: [\"{exporter_addr}\"]\n",
            ca.display()
        ),
    );
    procs.0.push(Proc::spawn(
        "prometheus",
        Command::new(&prometheus)
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                scratch.subdir("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}")),
        &scratch,
    ));
    procs
        .wait_for("prometheus ready", Duration::from_secs(60), async || {
            matches!(get(prom_addr, "/-/ready").await, Ok((200, _))).then_some(())
        })
        .await;

    let scenario = Scenario::from_yaml(&fixture("scenario.yaml")).expect("scenario parses");
    let sim = Simulator::start(scenario).await.expect("simulator starts");
    let exporter_config = scratch.write(
        "exporter.yaml",
        &fixture("exporter.yaml").replace("@ENDPOINT@", &sim.endpoint_url()),
    );
    let no_file = scratch.path().join("no-such-file");
    procs.0.push(Proc::spawn(
        "exporter",
        Command::new(BIN)
            .arg(format!("--config.file={}", exporter_config.display()))
            .arg(format!("--web.listen-address={exporter_addr}"))
            .arg(format!("--web.config.file={}", web.display()))
            .env("AWS_ACCESS_KEY_ID", "AKIDE2ETEST")
            .env("AWS_SECRET_ACCESS_KEY", "e2e-test-secret")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", &no_file)
            .env("AWS_SHARED_CREDENTIALS_FILE", &no_file)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN"),
        &scratch,
    ));

    // Scraped: `up` is 1 and the exporter's families arrived, through TLS
    // and basic auth.
    procs
        .wait_for(
            "a successful TLS scrape",
            Duration::from_secs(60),
            async || {
                let up = query(prom_addr, "up{job=\"dynamodb-kinesis-exporter\"} == 1")
                    .await
                    .ok()?;
                let info = query(prom_addr, "dynamodb_kinesis_destination_info")
                    .await
                    .ok()?;
                let build = query(prom_addr, "dynamodb_kinesis_exporter_build_info")
                    .await
                    .ok()?;
                let errors = query(prom_addr, "dynamodb_kinesis_api_errors_total")
                    .await
                    .ok()?;
                (!up.is_empty() && !info.is_empty() && !build.is_empty() && !errors.is_empty())
                    .then_some(())
            },
        )
        .await;
    let stream_names: BTreeSet<String> = query(prom_addr, "dynamodb_kinesis_destination_info")
        .await
        .expect("query")
        .iter()
        .map(|(labels, _)| key(labels, &["stream_name"]))
        .collect();
    assert!(stream_names.contains("orders-cdc"), "{stream_names:?}");
    // Without credentials the exporter refuses, so Prometheus' success
    // above used them.
    let (status, _) = get(exporter_addr, "/metrics")
        .await
        .unwrap_or((0, String::new()));
    assert_ne!(
        status, 200,
        "plain HTTP without credentials must not get the page"
    );
    sim.shutdown().await;
}
