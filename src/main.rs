//! The `dynamodb-kinesis-exporter` binary: flags to [`Settings`], logging
//! and signals; then [`launch::serve`] until SIGINT or SIGTERM, or
//! [`launch::once`] for `--once`. Everything else is in the library.
#![forbid(unsafe_code)]
// The layout of `main`'s async block nests every future of the exporter (the
// status page's and the scope runners' together pass rustc's default of 128).
#![recursion_limit = "256"]

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use dke_web::serve::Limits;
use dke_web::web_config;
use dynamodb_kinesis_exporter::exporter::launch::{
    self, parse_listen_address, parse_timeout, Source,
};
use dynamodb_kinesis_exporter::exporter::shard::{self, ShardFlags};
use dynamodb_kinesis_exporter::exporter::{runtime, shutdown, systemd};
use dynamodb_kinesis_exporter::{config, Settings};

/// mimalloc rather than glibc's malloc: after a burst of connections (a
/// slow-reader attack, many concurrent scrapers) it returns the freed
/// memory to the system, where glibc kept the process at its peak (see
/// `bench/serving.sh`, and [`runtime`] for the settings that make it so).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Address to listen on for metrics and health endpoints; repeat for
    /// several (":PORT" means every interface, IPv6 and IPv4).
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR",
        default_value = ":9863"
    )]
    listen_address: Vec<String>,
    /// Serve on the listening sockets systemd passes (socket activation,
    /// Linux) instead of binding --web.listen-address, which is then
    /// ignored.
    #[arg(long = "web.systemd-socket")]
    systemd_socket: bool,
    /// Connections served at once.
    #[arg(long = "web.max-connections", value_name = "N", default_value_t = 512,
        value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Connections beyond --web.max-connections that still get /healthz and
    /// /readyz answered (anything else: 503); beyond these, new connections
    /// are closed at once.
    #[arg(
        long = "web.max-overflow-connections",
        value_name = "N",
        default_value_t = 64
    )]
    max_overflow_connections: u32,
    /// Time a client has to send its request headers, from connecting or
    /// from the end of its previous response (so also the keep-alive idle
    /// timeout).
    #[arg(long = "web.read-header-timeout", value_name = "DURATION", default_value = "10s",
        value_parser = parse_timeout)]
    read_header_timeout: Duration,
    /// A response write that makes no progress for this long drops the
    /// connection.
    #[arg(long = "web.write-timeout", value_name = "DURATION", default_value = "10s",
        value_parser = parse_timeout)]
    write_timeout: Duration,
    /// A response not completely written this long after its request
    /// arrived drops the connection (a client reading a trickle); the
    /// default lets a 36 MB page through a 1 Mbit/s link.
    #[arg(long = "web.response-timeout", value_name = "DURATION", default_value = "5m",
        value_parser = parse_timeout)]
    response_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; larger
    /// ones get 431.
    #[arg(long = "web.max-header-bytes", value_name = "BYTES", default_value_t = 16384,
        value_parser = clap::value_parser!(u32).range(8192..=1_048_576))]
    max_header_bytes: u32,
    /// Web config file in exporter-toolkit's format (TLS, basic auth,
    /// headers); re-read when it changes.
    #[arg(long = "web.config.file", value_name = "PATH")]
    web_config_file: Option<PathBuf>,
    /// Answer /healthz and /readyz without basic auth credentials (for
    /// probes that cannot send them, such as Kubernetes' httpGet); the
    /// metrics still require them.
    #[arg(long = "web.unauthenticated-probes")]
    unauthenticated_probes: bool,
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
    /// Poll every table once, print the metrics page to stdout and exit: 0 if
    /// every poll succeeded, else 1 (for cron, CI and debugging; binds no
    /// port).
    #[arg(long, conflicts_with = "demo")]
    once: bool,
    /// Validate the configuration file, print a summary and exit.
    #[arg(long = "config.check")]
    config_check: bool,
    /// Run against a built-in DynamoDB simulator with a demo scenario (no AWS account needed).
    #[arg(long)]
    demo: bool,
    #[command(flatten)]
    sharding: ShardFlags,
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
    runtime::purge_freed_memory_at_once();
    let flags = Flags::parse();
    if flags.version {
        return match launch::print_out(&launch::version()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                report(&err);
                ExitCode::FAILURE
            }
        };
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
        let valid = format!("{}: configuration is valid", flags.config_file.display());
        return launch::print_out(&format!("{valid}\n{}", config.summary()));
    }
    if flags.once {
        let config = config::load(&flags.config_file)?;
        let settings = Settings {
            shard: flags.sharding.resolve(shard::host_name)?,
            ..Settings::defaults(config)
        };
        return Ok(launch::once(settings, &mut std::io::stdout().lock())?);
    }
    // Config is loaded and validated before anything binds a port.
    let source = if flags.demo {
        Source::demo()?
    } else {
        Source::file(flags.config_file.clone())?
    };
    let web_config = match &flags.web_config_file {
        Some(path) => Some((web_config::load(path)?, path.clone())),
        None => None,
    };
    let listen = flags
        .listen_address
        .iter()
        .map(|text| parse_listen_address(text))
        .collect::<Result<Vec<_>, _>>()?;
    let limits = Limits {
        max_connections: flags.max_connections as usize,
        max_overflow_connections: flags.max_overflow_connections as usize,
        read_header_timeout: flags.read_header_timeout,
        write_timeout: flags.write_timeout,
        response_timeout: flags.response_timeout,
        max_header_bytes: flags.max_header_bytes as usize,
        ..Limits::default()
    };
    let shard = flags.sharding.resolve(shard::host_name)?;
    // Before the runtime starts threads: taking them clears the variables
    // that pass them.
    let inherited = systemd::listeners_if(flags.systemd_socket)?;
    let settings = move |config| Settings {
        shard,
        listen,
        limits,
        web_config,
        unauthenticated_probes: flags.unauthenticated_probes,
        telemetry_path: flags.telemetry_path,
        ..Settings::defaults(config)
    };
    Ok(runtime::build()?.block_on(async move {
        // Before binding: once the port answers, SIGHUP must already mean
        // "reload" rather than the default "terminate".
        let reloads = shutdown::reload_requests();
        launch::serve(source, settings, inherited, shutdown::signal(), reloads).await
    })?)
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
    } else if let Some(web) = err.downcast_ref::<web_config::WebConfigError>() {
        for line in web.lines() {
            eprintln!("{line}");
        }
        eprintln!("error: the web config file is invalid; nothing was started");
    } else {
        eprintln!("error: {err:#}");
    }
}

fn init_logging(level: LogLevel, format: LogFormat) {
    let level = level.to_possible_value().expect("no variant is skipped");
    let level = level.get_name();
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
        assert_eq!(flags.listen_address, [":1234"]);
        assert_eq!(flags.telemetry_path, "/m");
        assert!(matches!(flags.log_level, LogLevel::Debug));
        assert!(matches!(flags.log_format, LogFormat::Json));
        let defaults = Flags::try_parse_from(["dynamodb-kinesis-exporter"]).unwrap();
        assert_eq!(defaults.config_file, PathBuf::from("config/exporter.yaml"));
        assert_eq!(defaults.listen_address, [":9863"]);
        assert!(!defaults.systemd_socket);
        assert_eq!(defaults.max_connections, 512);
        assert_eq!(defaults.write_timeout, Duration::from_secs(10));
        assert_eq!(defaults.response_timeout, Duration::from_secs(300));
        let several = Flags::try_parse_from([
            "dynamodb-kinesis-exporter",
            "--web.listen-address=:1",
            "--web.listen-address=127.0.0.1:2",
            "--web.write-timeout=30s",
        ])
        .unwrap();
        assert_eq!(several.listen_address, [":1", "127.0.0.1:2"]);
        assert_eq!(several.write_timeout, Duration::from_secs(30));
        for bad in [
            "--web.write-timeout=0s",
            "--web.write-timeout=soon",
            "--web.max-header-bytes=100",
            "--web.max-connections=0",
        ] {
            assert!(
                Flags::try_parse_from(["dynamodb-kinesis-exporter", bad]).is_err(),
                "{bad}"
            );
        }
        assert_eq!(defaults.telemetry_path, "/metrics");
        assert_eq!(defaults.sharding, ShardFlags::default());
        let sharded = Flags::try_parse_from([
            "dynamodb-kinesis-exporter",
            "--shard-from-hostname",
            "--total-shards=3",
        ])
        .unwrap();
        assert_eq!(sharded.sharding.total_shards, Some(3));
        assert!(sharded.sharding.from_host_name);
    }
}
