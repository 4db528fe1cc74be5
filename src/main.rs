//! The `dynamodb-kinesis-exporter` binary: flags, config, logging, then
//! [`dynamodb_kinesis_exporter::run`] until SIGINT or SIGTERM.

use std::io::IsTerminal as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use clap::{Parser, ValueEnum};
use dke_web::serve::Limits;
use dke_web::web_config;
use dynamodb_kinesis_exporter::exporter::shutdown;
use dynamodb_kinesis_exporter::state::Shard;
use dynamodb_kinesis_exporter::{config, Exporter, Settings};

/// mimalloc rather than glibc's malloc: after a burst of connections (a
/// slow-reader attack, many concurrent scrapers) it returns the freed
/// memory to the system, where glibc kept the process at its peak (see
/// `bench/serving.sh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long an idle blocking-pool thread lives (tokio's default is 10 s).
/// The metrics page (tens of megabytes at 10,000 tables) is rendered on
/// that pool and freed by other threads; mimalloc gives such memory back
/// to the system only when the thread that allocated it collects or exits,
/// so a short life returns it about as soon as the page is let go.
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(2);

/// The multi-threaded runtime, with short-lived blocking threads.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
        .context("cannot start the async runtime")
}

/// mimalloc's `mi_option_purge_delay`: its position in `mi_option_e`
/// (mimalloc.h), for which the binding names no constant.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Return freed memory to the system at once rather than after mimalloc's
/// default 1 s delay: the delayed purge runs only when the freeing thread
/// allocates again, and the threads that free a page often go quiet, so
/// the memory stayed resident. The exporter allocates little, so the extra
/// `madvise` calls cost nothing measurable. `MIMALLOC_PURGE_DELAY` in the
/// environment still wins.
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; mimalloc reads options
        // atomically, so this is sound at any time on any thread.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

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
    purge_freed_memory_at_once();
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
    if flags.once {
        let config = config::load(&flags.config_file)?;
        let runtime = runtime()?;
        let placeholder = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut settings = Settings::new(config, placeholder);
        settings.shard = shard_from_flags(&flags, host_name)?;
        let (page, all_ok) =
            runtime.block_on(dynamodb_kinesis_exporter::exporter::run_once(settings));
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(page.as_bytes())
            .and_then(|()| stdout.flush())
            .context("cannot write the page to stdout")?;
        if !all_ok {
            return Err(PollsFailed.into());
        }
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
    let web_config = match &flags.web_config_file {
        Some(path) => Some((web_config::load(path)?, path.clone())),
        None => None,
    };
    let listen = flags
        .listen_address
        .iter()
        .map(|text| parse_listen_address(text))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let limits = Limits {
        max_connections: flags.max_connections as usize,
        max_overflow_connections: flags.max_overflow_connections as usize,
        read_header_timeout: flags.read_header_timeout,
        write_timeout: flags.write_timeout,
        response_timeout: flags.response_timeout,
        max_header_bytes: flags.max_header_bytes as usize,
        ..Limits::default()
    };
    let shard = shard_from_flags(&flags, host_name)?;
    // Before the runtime starts threads: taking them clears the variables
    // that pass them.
    let inherited = if flags.systemd_socket {
        systemd_listeners()?
    } else {
        Vec::new()
    };
    let runtime = runtime()?;
    // Replaced by `listen` below.
    let placeholder = SocketAddr::from(([127, 0, 0, 1], 0));
    runtime.block_on(async move {
        #[cfg(feature = "demo")]
        let (settings, simulator) = match config {
            Some(config) => (Settings::new(config, placeholder), None),
            None => {
                let demo = dynamodb_kinesis_exporter::exporter::demo::start().await?;
                tracing::info!(endpoint = %demo.simulator.endpoint_url(), "demo mode: polling the built-in DynamoDB simulator");
                let mut settings = Settings::new(demo.config, placeholder);
                settings.client = demo.client;
                (settings, Some(demo.simulator))
            }
        };
        #[cfg(not(feature = "demo"))]
        let settings =
            Settings::new(config.expect("checked above: --demo is refused"), placeholder);
        let settings = Settings {
            shard,
            listen,
            limits,
            web_config,
            unauthenticated_probes: flags.unauthenticated_probes,
            telemetry_path: flags.telemetry_path,
            config_path: (!flags.demo).then_some(flags.config_file),
            ..settings
        };
        // Before binding: once the port answers, SIGHUP must already mean
        // "reload" rather than the default "terminate".
        let reloads = shutdown::reload_requests();
        let exporter = Exporter::bind_to(settings, inherited).await?;
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

/// The listening sockets systemd passed (`LISTEN_FDS`, for this process's
/// `LISTEN_PID`), in order; an error if there are none or one is not a TCP
/// socket. Clears the variables, so child processes do not see them.
fn systemd_listeners() -> anyhow::Result<Vec<std::net::TcpListener>> {
    let mut passed = listenfd::ListenFd::from_env();
    let count = passed.len();
    if count == 0 {
        anyhow::bail!(
            "--web.systemd-socket: systemd passed no sockets (LISTEN_FDS is unset or 0, or \
             LISTEN_PID names another process); start the exporter through a .socket unit, \
             or drop the flag to bind --web.listen-address"
        );
    }
    // The exporter logs their addresses when it starts serving.
    (0..count)
        .map(|index| {
            let nth = index + 1;
            passed
                .take_tcp_listener(index)
                .with_context(|| {
                    format!(
                        "--web.systemd-socket: passed socket {nth} of {count} is not a TCP socket"
                    )
                })?
                .with_context(|| {
                    format!(
                        "--web.systemd-socket: passed socket {nth} of {count} was already taken"
                    )
                })
        })
        .collect()
}

/// `--once` found a failed poll (already logged, and in the page).
#[derive(Debug, thiserror::Error)]
#[error("at least one poll failed")]
struct PollsFailed;

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

/// A duration flag: `500ms`, `10s`, `1m`; more than zero.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    match config::parse_duration(text) {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err("must be more than 0".to_string()),
        None => Err(format!("{text:?} is not a duration (e.g. 500ms, 10s, 1m)")),
    }
}

/// Accepts `:PORT` (every interface: `[::]`, which with IPV6_V6ONLY off
/// also accepts IPv4), `HOST:PORT` and `[V6]:PORT`.
fn parse_listen_address(text: &str) -> anyhow::Result<SocketAddr> {
    let full = match text.strip_prefix(':') {
        Some(port) => format!("[::]:{port}"),
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

    #[test]
    fn the_purge_delay_option_is_the_one_set_to_zero() {
        // mimalloc's default purge delay is 1,000 ms; no other option at
        // this position would read so, so the index is the right one.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(before, 1000);
        }
        purge_freed_memory_at_once();
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(
                unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
                0
            );
        }
    }

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
    }
}
