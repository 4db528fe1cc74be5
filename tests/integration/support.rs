//! The helpers every integration test shares: start the simulator and the
//! exporter on loopback port 0 (one builder), speak minimal HTTP to them (one
//! client), read exposition text, wait for conditions with a deadline, find
//! the external tools some tests need (one rule for skipping them), and
//! scratch directories (the `tempfile` crate).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dke_simulator::{Scenario, Simulator};
use dynamodb_kinesis_exporter::aws::ClientOptions;
use dynamodb_kinesis_exporter::config::{self, Config};
use dynamodb_kinesis_exporter::state::store::Store;
use dynamodb_kinesis_exporter::{Exporter, Settings};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Static credentials for the simulator; it checks the header's form only.
pub fn test_credentials() -> ClientOptions {
    ClientOptions {
        static_credentials: Some(aws_sdk_dynamodb::config::Credentials::new(
            "AKIDTESTTESTTEST",
            "test-secret",
            None,
            None,
            "tests",
        )),
    }
}

/// A DynamoDB client of the simulator's account in `region`, for what an
/// operator does beside the exporter (turning streaming on and off), with
/// the real SDK over the wire.
pub fn operator_dynamodb(sim: &Simulator, region: &str) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{retry::RetryConfig, timeout::TimeoutConfig, Region};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version_latest()
        .region(Region::new(region.to_string()))
        .endpoint_url(sim.endpoint_url())
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "AKIDOPERATOR",
            "operator-secret",
            None,
            None,
            "operator",
        ))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(5))
                .build(),
        )
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// Start the simulator with a scenario given as YAML.
pub async fn simulator(scenario_yaml: &str) -> Simulator {
    let scenario = Scenario::from_yaml(scenario_yaml).expect("test scenario must parse");
    Simulator::start(scenario)
        .await
        .expect("simulator must start")
}

/// An exporter running in this process.
pub struct Running {
    pub addr: SocketAddr,
    pub store: std::sync::Arc<Store>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// Trigger shutdown and wait for `serve` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("exporter must stop within 10 s")
                .expect("exporter task must not panic");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Start the exporter with a config given as YAML; `{endpoint}` in the text
/// is replaced by the simulator's URL.
pub async fn exporter(config_yaml: &str, sim: &Simulator) -> Running {
    let text = config_yaml.replace("{endpoint}", &sim.endpoint_url());
    let config = config::parse(&text, "test.yaml").unwrap_or_else(|e| panic!("test config: {e}"));
    start_exporter(config, None, |_| {}).await.0
}

/// [`exporter`], with `adjust` applied to the settings first (a shard, a
/// web config, limits).
pub async fn exporter_with(
    config_yaml: &str,
    sim: &Simulator,
    adjust: impl FnOnce(&mut Settings),
) -> Running {
    let text = config_yaml.replace("{endpoint}", &sim.endpoint_url());
    let config = config::parse(&text, "test.yaml").unwrap_or_else(|e| panic!("test config: {e}"));
    start_exporter(config, None, adjust).await.0
}

/// Start the exporter from a config file, with reloads driven by the
/// returned sender (what SIGHUP does in the binary).
pub async fn exporter_from_file(path: &Path) -> (Running, tokio::sync::mpsc::Sender<()>) {
    let config = config::load(path).unwrap_or_else(|e| panic!("test config: {e}"));
    start_exporter(config, Some(path.to_path_buf()), |_| {}).await
}

/// The one exporter builder: test credentials, a short grace period, port 0.
async fn start_exporter(
    config: Config,
    config_path: Option<PathBuf>,
    adjust: impl FnOnce(&mut Settings),
) -> (Running, tokio::sync::mpsc::Sender<()>) {
    let mut settings = Settings::new(config, "127.0.0.1:0".parse().unwrap());
    settings.client = test_credentials();
    settings.grace = Duration::from_secs(5);
    settings.config_path = config_path;
    adjust(&mut settings);
    let exporter = Exporter::bind(settings).await.expect("exporter must bind");
    let addr = exporter.local_addr();
    let store = exporter.store();
    let (tx, rx) = oneshot::channel::<()>();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(exporter.serve_with_reloads(
        async move {
            let _ = rx.await;
        },
        reload_rx,
    ));
    let running = Running {
        addr,
        store,
        stop: Some(tx),
        task: Some(task),
    };
    (running, reload_tx)
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The body as received (for encoded bodies).
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.0 request, so the answer is never chunked and the server
/// closes the connection after it; the whole exchange is bounded by 10 s.
/// `Err` on any transport failure, for callers that retry while a server
/// starts.
pub async fn try_request(addr: SocketAddr, method: &str, target: &str) -> Result<Reply, String> {
    try_request_with(addr, method, target, &[]).await
}

/// One HTTP/1.0 exchange on an open connection, plain or TLS, parsed: the
/// one client both [`try_request_with`] and the TLS client use.
async fn exchange_on<S>(
    stream: S,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    parse_reply(&client::exchange_raw(stream, method, target, host, headers).await?)
}

/// [`try_request`] with extra request headers.
pub async fn try_request_with(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        exchange_on(stream, method, target, &addr.to_string(), headers).await
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err(format!("{method} {target}: no answer within 10 s")))
}

/// [`try_request_with`] for servers that must answer.
pub async fn request_with(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Reply {
    try_request_with(addr, method, target, headers)
        .await
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

/// [`try_request`] for servers that must answer.
pub async fn request(addr: SocketAddr, method: &str, target: &str) -> Reply {
    try_request(addr, method, target)
        .await
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

pub fn parse_reply(raw: &[u8]) -> Result<Reply, String> {
    let bytes = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| raw[at + 4..].to_vec())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {text:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_string(),
        bytes,
    })
}

/// GET the metrics page and return its body (asserting 200).
pub async fn scrape(addr: SocketAddr) -> String {
    let reply = request(addr, "GET", "/metrics").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

/// Samples of an exposition as `name{label="v",...}` (labels sorted) to value.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.insert(normalise(series), value);
    }
    out
}

/// Sort a series' labels so tests can name them in any order.
fn normalise(series: &str) -> String {
    let Some((name, rest)) = series.split_once('{') else {
        return series.to_string();
    };
    let inner = rest.strip_suffix('}').expect("closing brace");
    let mut labels = split_labels(inner);
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

/// Split `a="x",b="y"` on commas outside quotes.
fn split_labels(inner: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in inner.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

/// The series key for `name` with `labels`, in the form `samples` uses.
pub fn series(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    parts.sort();
    format!("{name}{{{}}}", parts.join(","))
}

/// The value of one series, if present.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text).get(&series(name, labels)).copied()
}

/// All series of a family (by exact metric name).
pub fn family(text: &str, name: &str) -> BTreeMap<String, f64> {
    samples(text)
        .into_iter()
        .filter(|(k, _)| k.split('{').next() == Some(name))
        .collect()
}

/// Scrape until `check` accepts the page or `limit` passes; returns the
/// accepted page or panics with the last one.
pub async fn scrape_until(
    addr: SocketAddr,
    limit: Duration,
    mut check: impl FnMut(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let page = scrape(addr).await;
        if check(&page) {
            return page;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("condition not met within {limit:?}; last page:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback port that was free a moment ago (for child processes that
/// cannot report the port they bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The value of label `name` in a series key.
pub fn label(series: &str, name: &str) -> Option<String> {
    let inner = series.split_once('{')?.1.strip_suffix('}')?;
    split_labels(inner).into_iter().find_map(|part| {
        let (k, v) = part.split_once('=')?;
        (k == name).then(|| v.trim_matches('"').to_string())
    })
}

/// Where `tool` is on PATH, if anywhere.
pub fn on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// Whether this run is CI's (`CI` set), where a missing tool is an error.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// A tool some checks need: where it is, or `None` after a loud message
/// that those checks are skipped. In CI a missing tool fails the test
/// instead: `.ci/run` installs every tool.
pub fn required_tool(tool: &str, checks: &str) -> Option<PathBuf> {
    let found = on_path(tool);
    if found.is_none() {
        let ci = in_ci();
        loud!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! `{tool}` is not on PATH: {checks} SKIPPED{}\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
            if ci {
                " -- and CI is set, so this FAILS"
            } else {
                ""
            }
        );
        assert!(!ci, "`{tool}` must be installed in CI");
    }
    found
}

/// A scratch directory with `files` (name, text) written into it; removed
/// when dropped.
pub fn scratch(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("dke-test-")
        .tempdir()
        .expect("scratch directory");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    dir
}

/// A Grafana panel query as Grafana sends it with every template variable at
/// "All" and typical interval values.
pub fn expand_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m")
        .replace("${account_id}", ".*")
        .replace("$account_id", ".*")
        .replace("${region}", ".*")
        .replace("${table}", ".*")
        .replace("$region", ".*")
        .replace("$table", ".*")
}

// The test PKI and client live once, with the web crate's tests.
#[path = "../../web/tests/support/client.rs"]
mod client;
pub use client::Pki;

/// One HTTPS request to `localhost` at `addr`, trusting `ca_pem`,
/// presenting `client` (certificate and key PEM) if given; bounded by 10 s.
pub async fn tls_request(
    addr: SocketAddr,
    ca_pem: &str,
    client: Option<(&str, &str)>,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let exchange = async {
        let stream = client::tls_connect(addr, ca_pem, client).await?;
        exchange_on(stream, "GET", target, "localhost", headers).await
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err(format!("GET {target}: no answer within 10 s")))
}

/// The most requests to `service` the simulator saw from the scope
/// (`account`, `region`) in any one second.
pub fn busiest_second(
    sim: &Simulator,
    account: &str,
    region: &str,
    service: dke_simulator::Service,
) -> usize {
    let mut times: Vec<tokio::time::Instant> = sim
        .requests()
        .into_iter()
        .filter(|r| r.account_id == account && r.region == region && r.service == service)
        .map(|r| r.at)
        .collect();
    times.sort();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t < times[i] + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}
