//! Wiring: a validated [`Config`] becomes the shared AWS configuration, a
//! state store, the shared page and the HTTP listeners
//! ([`Exporter::bind`]); [`Exporter::serve`] runs the fleet (accounts,
//! discovery, one poller per scope) and the server until shutdown and drains
//! both. A reload ([`Exporter::serve_with_reloads`]) validates the file
//! first and only then hands the new config to the fleet; the server, the
//! page and the store live on. [`run_once`] is `--once`.
//!
//! The binary's start-up is here too, where it is tested: [`launch`] (the
//! config file or the demo, settings built once, serving, `--once`),
//! [`runtime`] (the tokio runtime and the allocator's options), [`shard`]
//! (`--shard`, `--shard-from-hostname`) and [`systemd`] (socket activation).
//!
//! Cancellation is one `tokio_util` token tree: the root is cancelled on
//! shutdown and stops the server and the fleet; each config generation's
//! background work runs under a child token, cancelled on reload.

#[cfg(feature = "demo")]
pub mod demo;
pub mod http;
pub mod launch;
pub mod runtime;
pub mod shard;
pub mod shutdown;
pub mod systemd;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::aws::factory::SdkConnect;
use crate::aws::{self, ClientOptions};
use crate::config::Config;
use crate::exporter::http::App;
use crate::exposition::metrics::Telemetry;
use crate::exposition::page::Page;
use crate::poll::fleet::{Fleet, FleetSettings};
use crate::poll::supervise::supervise;
use crate::state::store::Store;
use crate::state::Shard;
use dke_web::serve::Limits;
use dke_web::web_config::{WebConfig, WebState};

/// Everything the exporter needs besides the shutdown signal.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    /// Where to listen, one or more addresses; port 0 picks a free port (see
    /// [`Exporter::local_addrs`]). An unspecified IPv6 address (`[::]`,
    /// what `:PORT` means) listens on IPv6 and IPv4 alike.
    pub listen: Vec<SocketAddr>,
    /// Connection limits and timeouts of the HTTP server.
    pub limits: Limits,
    /// Path that serves the metrics, `/metrics` by default.
    pub telemetry_path: String,
    pub client: ClientOptions,
    /// How long in-flight requests and polls may take to finish on shutdown.
    pub grace: Duration,
    /// Export the standard `process_*` metrics.
    pub process_metrics: bool,
    /// The checked web config (TLS, basic auth, headers) and the file it
    /// came from, which is watched for changes; `None` serves plain HTTP
    /// without authentication.
    pub web_config: Option<(WebConfig, PathBuf)>,
    /// Answer `/healthz` and `/readyz` without credentials.
    pub unauthenticated_probes: bool,
    /// The file `config` came from; a reload (SIGHUP) reads it again.
    /// `None` (as in `--demo`) turns reloads into a logged no-op.
    pub config_path: Option<PathBuf>,
    /// This replica's share of the tables (`--shard`, `--total-shards`).
    pub shard: Shard,
}

impl Settings {
    /// Defaults for everything but the config and the address.
    pub fn new(config: Config, listen: SocketAddr) -> Self {
        Settings {
            listen: vec![listen],
            ..Settings::defaults(config)
        }
    }

    /// Defaults for everything but the config, with no address to listen
    /// on yet: set `listen`, or hand [`Exporter::bind_to`] sockets.
    pub fn defaults(config: Config) -> Self {
        Settings {
            config,
            listen: Vec::new(),
            limits: Limits::default(),
            telemetry_path: "/metrics".to_string(),
            client: ClientOptions::default(),
            grace: Duration::from_secs(10),
            process_metrics: true,
            web_config: None,
            unauthenticated_probes: false,
            config_path: None,
            shard: Shard::ALL,
        }
    }
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The I/O error is the `source`, so a cause chain (`{:#}`) shows it once.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no listen address given")]
    NoListenAddress,
    #[error("cannot serve on the sockets passed by the service manager")]
    Inherited(#[source] std::io::Error),
    #[error("invalid telemetry path {0:?}: it must start with '/' and must not be /, /healthz or /readyz")]
    TelemetryPath(String),
}

/// A bound, not yet serving exporter.
pub struct Exporter {
    settings: Settings,
    listeners: Vec<TcpListener>,
    /// The credential chain and its cache, shared by every client, across
    /// reloads too.
    shared: SdkConfig,
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
}

impl Exporter {
    /// Load the shared SDK configuration (no network traffic yet), check the
    /// telemetry path and bind the listener.
    pub async fn bind(settings: Settings) -> Result<Self, RunError> {
        Self::bind_to(settings, Vec::new()).await
    }

    /// Like [`Exporter::bind`], but serve `inherited`, listening sockets a
    /// service manager handed over (systemd socket activation), instead of
    /// binding `settings.listen`; without any, bind as `bind` does.
    pub async fn bind_to(
        mut settings: Settings,
        inherited: Vec<std::net::TcpListener>,
    ) -> Result<Self, RunError> {
        let path = settings.telemetry_path.as_str();
        if !path.starts_with('/') || matches!(path, "/" | "/healthz" | "/readyz") {
            return Err(RunError::TelemetryPath(settings.telemetry_path));
        }
        if settings.listen.is_empty() && inherited.is_empty() {
            return Err(RunError::NoListenAddress);
        }
        let shared = aws::load_shared_config(&settings.config, &settings.client).await;
        let listeners = if inherited.is_empty() {
            settings
                .listen
                .iter()
                .map(|&addr| bind(addr).map_err(|source| RunError::Bind { addr, source }))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            let listeners = inherited
                .into_iter()
                .map(adopt)
                .collect::<Result<Vec<_>, _>>()
                .map_err(RunError::Inherited)?;
            settings.listen = listeners
                .iter()
                .map(|l| l.local_addr())
                .collect::<Result<_, _>>()
                .map_err(RunError::Inherited)?;
            listeners
        };
        let store = new_store(&settings.config);
        let telemetry = Arc::new(Telemetry::new(settings.process_metrics));
        Ok(Exporter {
            settings,
            listeners,
            shared,
            store,
            telemetry,
        })
    }

    /// The first address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs()[0]
    }

    /// Every address actually bound, in the order given.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .zip(&self.settings.listen)
            .map(|(listener, &given)| listener.local_addr().unwrap_or(given))
            .collect()
    }

    /// The state store (tests inspect it).
    pub fn store(&self) -> Arc<Store> {
        Arc::clone(&self.store)
    }

    /// Poll and serve until `shutdown` resolves, then stop accepting and let
    /// in-flight requests and polls finish within the grace period.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let (_never, reloads) = mpsc::channel(1);
        self.serve_with_reloads(shutdown, reloads).await;
    }

    /// Like [`serve`](Self::serve), and every message on `reloads` (SIGHUP in
    /// the binary) reads the config file again: a valid one replaces the
    /// running config, an invalid one is logged and changes nothing.
    pub async fn serve_with_reloads(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        reloads: mpsc::Receiver<()>,
    ) {
        let root = CancellationToken::new();
        // Awaited below beside the server and the fleet, not spawned: it
        // ends first, and nothing is left behind.
        let forward = {
            let root = root.clone();
            async move {
                shutdown.await;
                root.cancel();
            }
        };
        let grace = self.settings.grace;
        let web = Arc::new(match self.settings.web_config.take() {
            Some((config, path)) => WebState::new(config, Some(path)),
            None => WebState::plain(),
        });
        // Supervised: a panic is logged, counted and followed by a restart.
        let watcher = tokio::spawn(supervise(
            "web_config_watcher",
            String::new(),
            Arc::clone(&self.telemetry),
            root.clone(),
            {
                let (web, root) = (Arc::clone(&web), root.clone());
                let telemetry = Arc::clone(&self.telemetry);
                move || {
                    let telemetry = Arc::clone(&telemetry);
                    Arc::clone(&web).watch(root.clone().cancelled_owned(), move |ok| {
                        telemetry.record_web_reload(ok)
                    })
                }
            },
        ));
        let tls = web.tls_source();
        let app = Arc::new(App {
            store: Arc::clone(&self.store),
            page: Arc::new(Page::new(
                Arc::clone(&self.store),
                Arc::clone(&self.telemetry),
            )),
            telemetry_path: self.settings.telemetry_path.clone(),
            web,
            unauthenticated_probes: self.settings.unauthenticated_probes,
        });
        let janitor = tokio::spawn(supervise(
            "page_janitor",
            String::new(),
            Arc::clone(&self.telemetry),
            root.clone(),
            {
                let (page, root) = (Arc::clone(&app.page), root.clone());
                move || Arc::clone(&page).keep_fresh(root.clone().cancelled_owned())
            },
        ));
        let handler = move |req: hyper::Request<hyper::body::Incoming>, _peer| {
            let app = Arc::clone(&app);
            async move {
                // The path and query (`/?page=2`), also of an absolute-form URI.
                let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
                Ok(app.respond(req.method(), target, req.headers()).await)
            }
        };
        let addresses: Vec<String> = self.local_addrs().iter().map(ToString::to_string).collect();
        tracing::info!(addresses = %addresses.join(","),
            tables = self.settings.config.table_count(),
            shard = self.settings.shard.index, total_shards = self.settings.shard.total,
            "serving metrics");
        let server = dke_web::serve::serve(
            self.listeners,
            handler,
            root.clone().cancelled_owned(),
            grace,
            self.settings.limits.clone(),
            Some(tls),
        );
        let fleet = FleetSettings {
            shard: self.settings.shard,
            store: self.store,
            telemetry: self.telemetry,
            grace,
            config_path: self.settings.config_path,
        };
        let factory = Arc::new(SdkConnect::factory(self.shared, self.settings.client));
        let polls = Fleet::run(fleet, factory, self.settings.config, root, reloads);
        let ((), open_connections, aborted_polls) = tokio::join!(forward, server, polls);
        // Both end with the root token, which is cancelled by now.
        let _ = tokio::join!(watcher, janitor);
        if open_connections > 0 {
            tracing::warn!(
                connections = open_connections,
                "closed connections still open after the grace period"
            );
        }
        tracing::info!(aborted_polls, "stopped");
    }
}

/// How long `--once` waits for every table's first poll.
pub const ONCE_LIMIT: Duration = Duration::from_secs(300);

/// `--once`: run the fleet until every table (explicit and discovered) has
/// been polled once, within [`ONCE_LIMIT`], and return the metrics page in
/// the text format and whether every poll succeeded. Binds no port.
pub async fn run_once(settings: Settings) -> (String, bool) {
    let shared = aws::load_shared_config(&settings.config, &settings.client).await;
    let store = new_store(&settings.config);
    let telemetry = Arc::new(Telemetry::new(settings.process_metrics));
    let root = CancellationToken::new();
    let factory = Arc::new(SdkConnect::factory(shared, settings.client));
    let fleet = FleetSettings {
        shard: settings.shard,
        store: Arc::clone(&store),
        telemetry: Arc::clone(&telemetry),
        grace: settings.grace,
        config_path: None,
    };
    let (_no_reloads, reloads) = mpsc::channel(1);
    let task = tokio::spawn(Fleet::run(
        fleet,
        factory,
        settings.config,
        root.clone(),
        reloads,
    ));
    let polled = tokio::time::timeout(ONCE_LIMIT, async {
        while !store.is_ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok();
    root.cancel();
    let _ = task.await;
    let mut all_ok = polled;
    store.visit(|state| {
        if state.last_poll_ok != Some(true) {
            tracing::warn!(table = %state.table, region = %state.region, account_id = %state.account_id,
                code = state.failing_with.as_deref().unwrap_or("not polled"), "poll failed");
            all_ok = false;
        }
    });
    let page = Page::new(store, telemetry);
    let chunks = page.plain(crate::exposition::page::Format::Text).await;
    let text = chunks
        .iter()
        .map(|c| String::from_utf8_lossy(c))
        .collect::<String>();
    (text, all_ok)
}

/// An empty store that waits for the fleet: it fills it once it knows the
/// accounts and what discovery finds, and until then readiness waits.
fn new_store(config: &Config) -> Arc<Store> {
    let store = Arc::new(Store::new([]));
    store.set_pending(config.targets.len().max(1));
    store
}

/// Bind a listening socket. An unspecified IPv6 address also accepts IPv4
/// (`IPV6_V6ONLY` off), and falls back to `0.0.0.0` on hosts without IPv6.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let dual_stack = addr.is_ipv6() && addr.ip().is_unspecified();
    match bind_socket(addr, dual_stack) {
        Err(err) if dual_stack && is_no_ipv6(&err) => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
            tracing::warn!(error = %err, "IPv6 is not available; listening on IPv4 only");
            bind_socket(v4, false)
        }
        other => other,
    }
}

/// Serve on a socket someone else bound and set listening.
fn adopt(listener: std::net::TcpListener) -> std::io::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

fn is_no_ipv6(err: &std::io::Error) -> bool {
    // EAFNOSUPPORT (97) and EADDRNOTAVAIL (99) on Linux.
    matches!(err.raw_os_error(), Some(97 | 99))
}

fn bind_socket(addr: SocketAddr, dual_stack: bool) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[tokio::test]
    async fn bind_errors_name_the_cause_once() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let config = config::parse(
            "targets:\n  - region: us-east-1\n    tables: [orders]\n",
            "t.yaml",
        )
        .unwrap();
        let err = match Exporter::bind(Settings::new(config.clone(), addr)).await {
            Err(err) => err,
            Ok(_) => panic!("binding a taken port must fail"),
        };
        let cause = std::error::Error::source(&err)
            .expect("the I/O error is the source")
            .to_string();
        let text = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(text, format!("cannot listen on {addr}: {cause}"));

        // The unspecified IPv6 address answers on IPv4 loopback too, and
        // several addresses are all bound.
        let mut settings = Settings::new(config, "[::]:0".parse().unwrap());
        settings.listen.push("127.0.0.1:0".parse().unwrap());
        let exporter = Exporter::bind(settings).await.expect("binds");
        let addrs = exporter.local_addrs();
        assert_eq!(addrs.len(), 2);
        let port = addrs[0].port();
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("IPv4 reaches the dual-stack listener");
        tokio::net::TcpStream::connect(addrs[1])
            .await
            .expect("the second listener");
    }
}
