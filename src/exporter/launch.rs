//! The binary's start-up, kept in the library so it is tested: where the
//! config comes from (a file, or `--demo`'s simulator), the settings built
//! once from it, serving until the shutdown signal, and `--once`. `main.rs`
//! turns flags into [`Settings`], installs logging and the signals, and
//! calls [`serve`] or [`once`].

use std::future::Future;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use super::runtime::{self, RuntimeError};
use super::{run_once, Exporter, RunError, Settings};
use crate::config::{self, Config};

/// Where the exporter's config comes from.
#[derive(Debug)]
pub enum Source {
    /// A loaded and validated config file; SIGHUP reads the file again.
    File { config: Config, path: PathBuf },
    /// `--demo`: the built-in simulator, started on a loopback port, and a
    /// config that polls it. SIGHUP reloads nothing.
    Demo,
}

impl Source {
    /// The config file at `path`, loaded and validated (every problem at
    /// once, see [`config::load`]).
    pub fn file(path: PathBuf) -> Result<Source, config::ConfigError> {
        let config = config::load(&path)?;
        Ok(Source::File { config, path })
    }

    /// `--demo`; an error at once in a build without the simulator.
    pub fn demo() -> Result<Source, LaunchError> {
        if cfg!(feature = "demo") {
            Ok(Source::Demo)
        } else {
            Err(LaunchError::DemoUnavailable)
        }
    }
}

/// Why the exporter could not start, or `--once` did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("--demo is not available: this binary was built without the `demo` feature")]
    DemoUnavailable,
    #[cfg(feature = "demo")]
    #[error(transparent)]
    Demo(#[from] super::demo::DemoError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("cannot write the page to stdout")]
    Write(#[source] std::io::Error),
    /// `--once` found a failed poll (already logged, and in the page).
    #[error("at least one poll failed")]
    PollsFailed,
}

/// Serve the exporter from `source` until `shutdown` resolves, then drain
/// (see [`Exporter::serve_with_reloads`]); each message on `reloads` reads
/// the config file again. `settings` turns the config into the settings the
/// flags ask for; the source then sets what it owns (the config file's path,
/// the demo's credentials). With `inherited` sockets (systemd socket
/// activation) the exporter serves on those rather than binding
/// `settings.listen`. The demo's simulator is stopped before this returns.
pub async fn serve(
    source: Source,
    settings: impl FnOnce(Config) -> Settings,
    inherited: Vec<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reloads: mpsc::Receiver<()>,
) -> Result<(), LaunchError> {
    let (settings, simulator) = settings_for(source, settings).await?;
    let served = match Exporter::bind_to(settings, inherited).await {
        Ok(exporter) => {
            exporter.serve_with_reloads(shutdown, reloads).await;
            Ok(())
        }
        Err(err) => Err(err.into()),
    };
    if let Some(simulator) = simulator {
        stop(simulator).await;
    }
    served
}

/// The demo's running simulator; nothing in a build without it.
#[cfg(feature = "demo")]
type Simulator = super::demo::Running;
#[cfg(not(feature = "demo"))]
type Simulator = std::convert::Infallible;

#[cfg(feature = "demo")]
async fn stop(simulator: Simulator) {
    simulator.stop().await;
}

#[cfg(not(feature = "demo"))]
async fn stop(simulator: Simulator) {
    match simulator {}
}

/// The settings for `source`, built once, and the demo's simulator if the
/// source is the demo.
async fn settings_for(
    source: Source,
    settings: impl FnOnce(Config) -> Settings,
) -> Result<(Settings, Option<Simulator>), LaunchError> {
    match source {
        Source::File { config, path } => Ok((
            Settings {
                config_path: Some(path),
                ..settings(config)
            },
            None,
        )),
        #[cfg(feature = "demo")]
        Source::Demo => {
            let demo = super::demo::start().await?;
            tracing::info!(endpoint = %demo.running.endpoint_url(),
                "demo mode: polling the built-in DynamoDB simulator");
            let settings = Settings {
                client: demo.client,
                config_path: None,
                ..settings(demo.config)
            };
            Ok((settings, Some(demo.running)))
        }
        #[cfg(not(feature = "demo"))]
        Source::Demo => Err(LaunchError::DemoUnavailable),
    }
}

/// `--once`: poll every table once ([`run_once`]) on a runtime of its own,
/// then write the page to `out`. An error if a poll failed (the page is
/// written all the same) or the page cannot be written. Binds no port.
pub fn once(settings: Settings, out: &mut impl Write) -> Result<(), LaunchError> {
    let runtime = runtime::build()?;
    let (page, all_ok) = runtime.block_on(run_once(settings));
    out.write_all(page.as_bytes())
        .and_then(|()| out.flush())
        .map_err(LaunchError::Write)?;
    if all_ok {
        Ok(())
    } else {
        Err(LaunchError::PollsFailed)
    }
}

/// What `--version` prints: the version, the git revision and the rustc
/// that built the binary.
pub fn version() -> String {
    format!(
        "dynamodb-kinesis-exporter {} (revision {}, rustc {})",
        crate::VERSION,
        crate::REVISION,
        crate::RUSTC_VERSION
    )
}

/// A duration flag: `500ms`, `10s`, `1m`; more than zero.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match config::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than 0".to_string()),
        Err(_) => Err(format!("{text:?} is not a duration (e.g. 500ms, 10s, 1m)")),
    }
}

/// A `--web.listen-address` that names no socket address.
#[derive(Debug, thiserror::Error)]
pub enum ListenAddressError {
    /// The resolver's error is the `source`, so a cause chain shows it once.
    #[error("--web.listen-address {0:?} is not a HOST:PORT address")]
    Invalid(String, #[source] std::io::Error),
    #[error("--web.listen-address {0:?} resolves to no address")]
    NoAddress(String),
}

/// `--web.listen-address`: `:PORT` (every interface: `[::]`, which with
/// IPV6_V6ONLY off also accepts IPv4), `HOST:PORT` and `[V6]:PORT`.
pub fn parse_listen_address(text: &str) -> Result<SocketAddr, ListenAddressError> {
    let full = match text.strip_prefix(':') {
        Some(port) => format!("[::]:{port}"),
        None => text.to_string(),
    };
    full.to_socket_addrs()
        .map_err(|err| ListenAddressError::Invalid(text.to_string(), err))?
        .next()
        .ok_or_else(|| ListenAddressError::NoAddress(text.to_string()))
}

/// Print `text` and a newline on stdout. A reader that went away (`| head`)
/// is not an error: Rust ignores SIGPIPE, so the write would fail instead.
pub fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(err).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::aws::ClientOptions;
    use crate::state::Shard;
    use aws_sdk_dynamodb::config::Credentials;
    use dke_simulator::{Fault, Scenario, Simulator};

    fn config_for(endpoint_url: &str, tables: &str) -> Config {
        let text = format!(
            "max_attempts: 1\nrequest_timeout: 2s\ntargets:\n  - region: us-east-1\n    endpoint_url: {endpoint_url}\n    tables: {tables}\n"
        );
        config::parse(&text, "test.yaml").unwrap()
    }

    /// What `main` does with the flags: a shard, an address, a path.
    fn from_flags(config: Config) -> Settings {
        Settings {
            shard: Shard { index: 1, total: 2 },
            telemetry_path: "/m".to_string(),
            config_path: Some(PathBuf::from("ignored by the demo")),
            ..Settings::defaults(config)
        }
    }

    #[tokio::test]
    async fn a_file_source_names_its_file_and_keeps_the_flags() {
        let config = config_for("http://127.0.0.1:1", "[orders]");
        let source = Source::File {
            config: config.clone(),
            path: PathBuf::from("/etc/exporter.yaml"),
        };
        let (settings, simulator) = settings_for(source, from_flags).await.unwrap();
        assert!(simulator.is_none());
        assert_eq!(settings.config, config);
        assert_eq!(
            settings.config_path,
            Some(PathBuf::from("/etc/exporter.yaml"))
        );
        assert_eq!(settings.shard, Shard { index: 1, total: 2 });
        assert_eq!(settings.telemetry_path, "/m");
        assert!(settings.client.static_credentials.is_none());
    }

    #[test]
    fn a_file_source_is_the_validated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exporter.yaml");
        let text = "targets:\n  - region: us-east-1\n    tables: [orders]\n";
        std::fs::write(&path, text).unwrap();
        match Source::file(path.clone()).unwrap() {
            Source::File {
                config,
                path: named,
            } => {
                assert_eq!(config, config::parse(text, "exporter.yaml").unwrap());
                assert_eq!(named, path);
            }
            Source::Demo => panic!("a file is not the demo"),
        }
        std::fs::write(&path, "targets: []\n").unwrap();
        let err = Source::file(path.clone()).unwrap_err();
        assert!(matches!(err, config::ConfigError::Invalid(_)), "{err}");
        let missing = dir.path().join("missing.yaml");
        assert!(Source::file(missing).is_err());
    }

    #[cfg(feature = "demo")]
    #[tokio::test]
    async fn the_demo_polls_its_simulator_with_dummy_credentials_and_keeps_the_flags() {
        use crate::exporter::demo;
        let (settings, simulator) = settings_for(Source::Demo, from_flags).await.unwrap();
        let simulator = simulator.expect("the demo's simulator runs");
        let endpoint = simulator.endpoint_url();
        let scenario = Scenario::from_yaml(demo::SCENARIO).unwrap();
        assert_eq!(settings.config, demo::config_for(&scenario, &endpoint));
        let credentials = settings.client.static_credentials.as_ref().expect("static");
        assert_eq!(credentials.access_key_id(), "AKIDDEMODEMODEMO");
        // No file: a SIGHUP reloads nothing.
        assert_eq!(settings.config_path, None);
        assert_eq!(settings.shard, Shard { index: 1, total: 2 });
        assert_eq!(settings.telemetry_path, "/m");
        let addr = endpoint.trim_start_matches("http://").to_string();
        tokio::net::TcpStream::connect(&addr)
            .await
            .expect("the simulator answers");
        simulator.stop().await;
        assert!(
            tokio::net::TcpStream::connect(&addr).await.is_err(),
            "the simulator is stopped"
        );
    }

    #[cfg(not(feature = "demo"))]
    #[tokio::test]
    async fn the_demo_is_refused_in_a_build_without_the_simulator() {
        let message = "--demo is not available: this binary was built without the `demo` feature";
        assert_eq!(Source::demo().unwrap_err().to_string(), message);
        let err = settings_for(Source::Demo, from_flags).await.unwrap_err();
        assert_eq!(err.to_string(), message);
    }

    #[cfg(feature = "demo")]
    #[test]
    fn the_demo_is_a_source_in_a_build_with_the_simulator() {
        assert!(matches!(Source::demo(), Ok(Source::Demo)));
    }

    /// `serve` answers on the sockets it is handed, stops on the shutdown
    /// signal, and says why it could not start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serve_answers_until_shutdown() {
        let config = config_for("http://127.0.0.1:1", "[orders]");
        let passed = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = passed.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (_reload, reloads) = mpsc::channel(1);
        let source = Source::File {
            config: config.clone(),
            path: PathBuf::from("test.yaml"),
        };
        // No address: the passed socket is all there is to serve on.
        let settings = |config| Settings {
            grace: Duration::from_secs(1),
            ..Settings::defaults(config)
        };
        let serving = tokio::spawn(serve(
            source,
            settings,
            vec![passed],
            async move {
                let _ = stopped.await;
            },
            reloads,
        ));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), serving)
            .await
            .expect("serve returns after the shutdown signal")
            .unwrap()
            .unwrap();

        let source = Source::File {
            config,
            path: PathBuf::from("test.yaml"),
        };
        let bad_path = |config| Settings {
            telemetry_path: "/healthz".to_string(),
            ..Settings::defaults(config)
        };
        let (_reload, reloads) = mpsc::channel(1);
        let err = serve(
            source,
            bad_path,
            Vec::new(),
            std::future::pending(),
            reloads,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, LaunchError::Run(RunError::TelemetryPath(_))));
    }

    /// `--once` writes the page whether or not every poll worked, and says
    /// when one did not.
    #[test]
    fn once_writes_the_page_and_fails_when_a_poll_failed() {
        let background = tokio::runtime::Runtime::new().unwrap();
        let simulator = background.block_on(async {
            let scenario = Scenario::from_yaml(
                "tables:\n  - name: orders\n    destinations:\n      - stream_arn: arn:aws:kinesis:us-east-1:123456789012:stream/orders-cdc\n        status: ACTIVE\n  - name: throttled\n    fault: throttle\n",
            )
            .unwrap();
            Simulator::start(scenario).await.unwrap()
        });
        let endpoint = simulator.endpoint_url();
        let settings = |tables: &str| Settings {
            // The simulator checks the credentials' form only.
            client: ClientOptions {
                static_credentials: Some(Credentials::new("AKIDTEST", "secret", None, None, "t")),
            },
            process_metrics: false,
            ..Settings::defaults(config_for(&endpoint, tables))
        };
        let success = |page: &str, table: &str| {
            let prefix = format!("dynamodb_kinesis_table_poll_success{{table=\"{table}\",region=\"us-east-1\",account_id=\"123456789012\"}} ");
            page.lines()
                .find_map(|line| line.strip_prefix(prefix.as_str()))
                .map(str::to_string)
        };

        let mut out = Vec::new();
        once(settings("[orders]"), &mut out).expect("every poll worked");
        let page = String::from_utf8(out).unwrap();
        assert_eq!(success(&page, "orders").as_deref(), Some("1"), "{page}");

        let mut out = Vec::new();
        let err = once(settings("[orders, throttled]"), &mut out).unwrap_err();
        assert!(matches!(err, LaunchError::PollsFailed), "{err}");
        assert_eq!(err.to_string(), "at least one poll failed");
        let page = String::from_utf8(out).unwrap();
        assert_eq!(success(&page, "orders").as_deref(), Some("1"), "{page}");
        assert_eq!(success(&page, "throttled").as_deref(), Some("0"), "{page}");

        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "disk full",
                ))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let err = once(settings("[orders]"), &mut Full).unwrap_err();
        assert_eq!(
            format!("{:#}", anyhow::Error::from(err)),
            "cannot write the page to stdout: disk full"
        );
        background.block_on(simulator.shutdown());
    }

    /// A discovery whose ListTables keeps failing does not hold `--once`
    /// for its five minutes: one failed refresh is all it waits for, and
    /// it fails.
    #[test]
    fn once_ends_after_one_failed_discovery_refresh() {
        let background = tokio::runtime::Runtime::new().unwrap();
        let simulator = background.block_on(async {
            let scenario = Scenario::from_yaml("tables:\n  - name: orders\n").unwrap();
            Simulator::start(scenario).await.unwrap()
        });
        simulator.set_scope_fault("123456789012", "us-east-1", Some(Fault::AccessDenied));
        let text = format!(
            "max_attempts: 1\nrequest_timeout: 2s\ntargets:\n  - region: us-east-1\n    endpoint_url: {}\n    discovery: {{}}\n",
            simulator.endpoint_url()
        );
        let settings = Settings {
            client: ClientOptions {
                static_credentials: Some(Credentials::new("AKIDTEST", "secret", None, None, "t")),
            },
            process_metrics: false,
            ..Settings::defaults(config::parse(&text, "test.yaml").unwrap())
        };
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        let err = once(settings, &mut out).unwrap_err();
        assert!(matches!(err, LaunchError::PollsFailed), "{err}");
        // Far less than ONCE_LIMIT (300 s), even on a loaded machine.
        assert!(started.elapsed() < crate::exporter::ONCE_LIMIT / 5);
        let page = String::from_utf8(out).unwrap();
        assert!(
            page.contains("dynamodb_kinesis_discovery_errors_total{account_id=\"123456789012\",region=\"us-east-1\",code=\"AccessDeniedException\"} 1"),
            "{page}"
        );
        background.block_on(simulator.shutdown());
    }

    #[test]
    fn listen_addresses() {
        let ok = [
            (":9863", "[::]:9863"),
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("[::1]:9000", "[::1]:9000"),
        ];
        for (text, addr) in ok {
            assert_eq!(
                parse_listen_address(text).unwrap().to_string(),
                addr,
                "{text}"
            );
        }
        assert!(parse_listen_address("localhost:9000")
            .unwrap()
            .ip()
            .is_loopback());
        for bad in ["nonsense", ":", ":99999", "127.0.0.1"] {
            let err = parse_listen_address(bad).unwrap_err();
            let text = format!("{:#}", anyhow::Error::from(err));
            let expected = format!("--web.listen-address {bad:?} is not a HOST:PORT address: ");
            assert!(text.starts_with(&expected), "{bad}: {text}");
        }
    }

    #[test]
    fn timeouts_are_durations_of_more_than_zero() {
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_timeout("0s"), Err("must be more than 0".to_string()));
        assert_eq!(
            parse_timeout("soon"),
            Err("\"soon\" is not a duration (e.g. 500ms, 10s, 1m)".to_string())
        );
    }
}
