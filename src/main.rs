//! The `dynamodb-kinesis-exporter` binary: flags, config, logging, then
//! [`dynamodb_kinesis_exporter::run`] until SIGINT or SIGTERM.

use std::io::IsTerminal as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use clap::{Parser, ValueEnum};
use dynamodb_kinesis_exporter::state::Shard;
use dynamodb_kinesis_exporter::{config, shutdown, Exporter, Settings};

/// Prometheus exporter for the status of DynamoDB Kinesis streaming destinations.
#[derive(Debug, Parser)]
#[command(name = "dynamodb-kinesis-exporter", disable_version_flag = true)]
struct Flags {
    /// Path to the YAML configuration file.
    #[arg(
        long = "config.file",
        value_name = "PATH",
        default_value = "config/exporter.yaml"
    )]
    config_file: PathBuf,
    /// Address to listen on for metrics and health endpoints (":PORT" means all interfaces).
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR",
        default_value = ":9863"
    )]
    listen_address: String,
    /// Path under which to expose metrics.
    #[arg(
        long = "web.telemetry-path",
        value_name = "PATH",
        default_value = "/metrics"
    )]
    telemetry_path: String,
    /// Only log messages of this level or more severe.
    #[arg(long = "log.level", value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,
    /// Log line format.
    #[arg(long = "log.format", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Validate the configuration file, print a summary and exit.
    #[arg(long = "config.check")]
    config_check: bool,
    /// Run against a built-in DynamoDB simulator with a demo scenario (no AWS account needed).
    #[arg(long)]
    demo: bool,
    /// This replica's shard, 0 to M-1: it polls only the tables whose stable hash falls in it.
    #[arg(long, value_name = "N", requires = "total_shards")]
    shard: Option<u32>,
    /// How many replicas share the tables (M); with --shard or --shard-from-hostname.
    #[arg(long = "total-shards", value_name = "M")]
    total_shards: Option<u32>,
    /// Take the shard from the ordinal at the end of the host name (a StatefulSet pod such as `exporter-2`).
    #[arg(
        long = "shard-from-hostname",
        conflicts_with = "shard",
        requires = "total_shards"
    )]
    shard_from_hostname: bool,
    /// Print version information and exit.
    #[arg(long)]
    version: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    if flags.version {
        println!(
            "dynamodb-kinesis-exporter {} (revision {}, rustc {})",
            dynamodb_kinesis_exporter::VERSION,
            dynamodb_kinesis_exporter::REVISION,
            dynamodb_kinesis_exporter::RUSTC_VERSION
        );
        return ExitCode::SUCCESS;
    }
    init_logging(flags.log_level, flags.log_format);
    match real_main(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err);
            ExitCode::FAILURE
        }
    }
}

fn real_main(flags: Flags) -> anyhow::Result<()> {
    if flags.config_check {
        let config = config::load(&flags.config_file)?;
        println!("{}: configuration is valid", flags.config_file.display());
        println!("{}", config.summary());
        return Ok(());
    }
    #[cfg(not(feature = "demo"))]
    if flags.demo {
        anyhow::bail!("--demo is not available: this binary was built without the `demo` feature");
    }
    // Config is loaded and validated before anything binds a port.
    let config = if flags.demo {
        None
    } else {
        Some(config::load(&flags.config_file)?)
    };
    let listen = parse_listen_address(&flags.listen_address)?;
    let shard = shard_from_flags(&flags, host_name)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        #[cfg(feature = "demo")]
        let (settings, simulator) = match config {
            Some(config) => (Settings::new(config, listen), None),
            None => {
                let demo = dynamodb_kinesis_exporter::demo::start().await?;
                tracing::info!(endpoint = %demo.simulator.endpoint_url(), "demo mode: polling the built-in DynamoDB simulator");
                let mut settings = Settings::new(demo.config, listen);
                settings.client = demo.client;
                (settings, Some(demo.simulator))
            }
        };
        #[cfg(not(feature = "demo"))]
        let settings = Settings::new(config.expect("checked above: --demo is refused"), listen);
        let settings = Settings {
            shard,
            telemetry_path: flags.telemetry_path,
            config_path: (!flags.demo).then_some(flags.config_file),
            ..settings
        };
        // Before binding: once the port answers, SIGHUP must already mean
        // "reload" rather than the default "terminate".
        let reloads = shutdown::reload_requests();
        let exporter = Exporter::bind(settings).await?;
        exporter
            .serve_with_reloads(shutdown::signal(), reloads)
            .await;
        #[cfg(feature = "demo")]
        if let Some(simulator) = simulator {
            simulator.shutdown().await;
        }
        Ok(())
    })
}

/// Print a fatal error. Config problems go one per line, each starting
/// with file:line so editors and grep can jump to them, then a summary.
fn report(err: &anyhow::Error) {
    if let Some(config::ConfigError::Invalid(problems)) = err.downcast_ref() {
        for problem in problems {
            eprintln!("{problem}");
        }
        let s = if problems.len() == 1 { "" } else { "s" };
        eprintln!(
            "error: the configuration has {} problem{s}; nothing was started",
            problems.len()
        );
    } else {
        eprintln!("error: {err:#}");
    }
}

/// The replica's shard from `--shard`/`--shard-from-hostname` and
/// `--total-shards`; `host_name` is asked only for the latter.
fn shard_from_flags(
    flags: &Flags,
    host_name: impl FnOnce() -> Option<String>,
) -> anyhow::Result<Shard> {
    let Some(total) = flags.total_shards else {
        return Ok(Shard::ALL);
    };
    if total == 0 {
        anyhow::bail!("--total-shards must be at least 1");
    }
    let index = if flags.shard_from_hostname {
        let name = host_name().ok_or_else(|| anyhow!("--shard-from-hostname: cannot read the host name (HOSTNAME or /proc/sys/kernel/hostname)"))?;
        ordinal(&name).ok_or_else(|| {
            anyhow!("--shard-from-hostname: host name {name:?} does not end in -N (a StatefulSet pod name such as exporter-2)")
        })?
    } else {
        flags
            .shard
            .ok_or_else(|| anyhow!("--total-shards needs --shard N or --shard-from-hostname"))?
    };
    if index >= total {
        anyhow::bail!(
            "shard {index} is out of range: --total-shards {total} allows 0 to {}",
            total - 1
        );
    }
    Ok(Shard { index, total })
}

/// The number after the last `-` of a StatefulSet pod name.
fn ordinal(name: &str) -> Option<u32> {
    let (_, digits) = name.trim().rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The host name: `HOSTNAME` (set in every Kubernetes pod), else the kernel's.
fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Accepts `:PORT` (all interfaces), `HOST:PORT` and `[V6]:PORT`.
fn parse_listen_address(text: &str) -> anyhow::Result<SocketAddr> {
    let full = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_string(),
    };
    full.to_socket_addrs()
        .with_context(|| format!("--web.listen-address {text:?} is not a HOST:PORT address"))?
        .next()
        .ok_or_else(|| anyhow!("--web.listen-address {text:?} resolves to no address"))
}

fn init_logging(level: LogLevel, format: LogFormat) {
    let level = match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    };
    // Our own crate at the chosen level; the AWS SDK and hyper are chatty
    // below warn, so they only join in at debug.
    let others = if level == "debug" { "info" } else { "warn" };
    let filter =
        tracing_subscriber::EnvFilter::new(format!("{others},dynamodb_kinesis_exporter={level}"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into journald
        // or a log shipper.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs in the `--no-default-features` build (CI's `.ci/run` does).
    #[cfg(not(feature = "demo"))]
    #[test]
    fn demo_is_refused_in_a_build_without_the_simulator() {
        let flags = Flags::try_parse_from(["dynamodb-kinesis-exporter", "--demo"]).unwrap();
        let err = real_main(flags).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "--demo is not available: this binary was built without the `demo` feature"
        );
    }

    #[test]
    fn listen_addresses() {
        let ok = [
            (":9863", "0.0.0.0:9863"),
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
            let err = parse_listen_address(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    fn shard_of(args: &[&str], host: &str) -> anyhow::Result<Shard> {
        let mut all = vec!["dynamodb-kinesis-exporter"];
        all.extend_from_slice(args);
        let flags = Flags::try_parse_from(all)?;
        shard_from_flags(&flags, || Some(host.to_string()))
    }

    #[test]
    fn shards_come_from_flags_or_the_host_name() {
        assert_eq!(shard_of(&[], "x").unwrap(), Shard::ALL);
        assert_eq!(
            shard_of(&["--shard", "2", "--total-shards", "3"], "x").unwrap(),
            Shard { index: 2, total: 3 }
        );
        assert_eq!(
            shard_of(
                &["--shard-from-hostname", "--total-shards", "3"],
                "exporter-1"
            )
            .unwrap(),
            Shard { index: 1, total: 3 }
        );
        let errors = [
            (
                &["--shard", "3", "--total-shards", "3"][..],
                "x",
                "shard 3 is out of range: --total-shards 3 allows 0 to 2",
            ),
            (
                &["--total-shards", "0", "--shard", "0"][..],
                "x",
                "--total-shards must be at least 1",
            ),
            (
                &["--total-shards", "2"][..],
                "x",
                "--total-shards needs --shard N or --shard-from-hostname",
            ),
            (
                &["--shard-from-hostname", "--total-shards", "2"][..],
                "exporter",
                "does not end in -N",
            ),
            (
                &["--shard-from-hostname", "--total-shards", "2"][..],
                "exporter-7",
                "shard 7 is out of range",
            ),
        ];
        for (args, host, message) in errors {
            let err = format!("{:#}", shard_of(args, host).unwrap_err());
            assert!(err.contains(message), "{args:?}: {err}");
        }
        // clap refuses these combinations itself.
        assert!(shard_of(&["--shard", "1"], "x").is_err());
        assert!(shard_of(
            &[
                "--shard",
                "1",
                "--shard-from-hostname",
                "--total-shards",
                "2"
            ],
            "x"
        )
        .is_err());
        assert_eq!(ordinal("dke-10"), Some(10));
        assert_eq!(ordinal("dke-"), None);
        assert_eq!(ordinal("dke-1a"), None);
    }

    #[test]
    fn flags_parse_with_prometheus_style_names() {
        let flags = Flags::try_parse_from([
            "dynamodb-kinesis-exporter",
            "--config.file=/etc/x.yaml",
            "--web.listen-address",
            ":1234",
            "--web.telemetry-path=/m",
            "--log.level=debug",
            "--log.format=json",
        ])
        .unwrap();
        assert_eq!(flags.config_file, PathBuf::from("/etc/x.yaml"));
        assert_eq!(flags.listen_address, ":1234");
        assert_eq!(flags.telemetry_path, "/m");
        assert!(matches!(flags.log_level, LogLevel::Debug));
        assert!(matches!(flags.log_format, LogFormat::Json));
        let defaults = Flags::try_parse_from(["dynamodb-kinesis-exporter"]).unwrap();
        assert_eq!(defaults.config_file, PathBuf::from("config/exporter.yaml"));
        assert_eq!(defaults.listen_address, ":9863");
        assert_eq!(defaults.telemetry_path, "/metrics");
    }
}
