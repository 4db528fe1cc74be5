//! Wiring: a validated [`Config`] becomes AWS clients, poll jobs, a state
//! store and an HTTP listener ([`Exporter::bind`]); [`Exporter::serve`] runs
//! the scheduler and the server until shutdown and drains both. A reload
//! ([`Exporter::serve_with_reloads`]) validates the file first and only then
//! replaces the scheduler generation; the server and the store live on.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::aws::{self, ClientOptions, DestinationSource, SdkSource};
use crate::config::{self, Config};
use crate::http::App;
use crate::metrics::Telemetry;
use crate::scheduler::{Job, Scheduler};
use crate::shutdown::{self, Shutdown};
use crate::state::{Store, TableKey};

/// Everything `run` needs besides the shutdown signal.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    /// Where to listen; port 0 picks a free port (see [`Exporter::local_addr`]).
    pub listen: SocketAddr,
    /// Path that serves the metrics, `/metrics` by default.
    pub telemetry_path: String,
    pub client: ClientOptions,
    /// How long in-flight requests and polls may take to finish on shutdown.
    pub grace: Duration,
    /// Export the standard `process_*` metrics.
    pub process_metrics: bool,
    /// The file `config` came from; a reload (SIGHUP) reads it again.
    /// `None` (as in `--demo`) turns reloads into a logged no-op.
    pub config_path: Option<PathBuf>,
}

impl Settings {
    /// Defaults for everything but the config and the address.
    pub fn new(config: Config, listen: SocketAddr) -> Self {
        Settings {
            config,
            listen,
            telemetry_path: "/metrics".to_string(),
            client: ClientOptions::default(),
            grace: Duration::from_secs(10),
            process_metrics: true,
            config_path: None,
        }
    }
}

/// Why the exporter could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid telemetry path {0:?}: it must start with '/' and must not be /, /healthz or /readyz")]
    TelemetryPath(String),
    #[error("expected one AWS source per config target ({targets}), got {sources}")]
    Sources { targets: usize, sources: usize },
}

/// A bound, not yet serving exporter.
pub struct Exporter<S = SdkSource> {
    settings: Settings,
    listener: TcpListener,
    sources: Vec<Arc<S>>,
    /// Builds the sources for a reloaded config; `None` when the caller
    /// supplied the sources, which then cannot change.
    rebuild: Option<SourceBuilder<S>>,
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
}

/// Makes one source per target of a config.
type SourceBuilder<S> = Box<dyn Fn(&Config) -> Vec<S> + Send + Sync>;

impl Exporter<SdkSource> {
    /// Build the aws-sdk-dynamodb clients (one per target, no network
    /// traffic yet) and bind the listener.
    pub async fn bind(settings: Settings) -> Result<Self, RunError> {
        let shared = aws::load_shared_config(&settings.config, &settings.client).await;
        let client = settings.client.clone();
        let rebuild: SourceBuilder<SdkSource> = Box::new(move |config: &Config| {
            config
                .targets
                .iter()
                .map(|target| SdkSource::new(&shared, target, config.max_attempts, &client))
                .collect()
        });
        let sources = rebuild(&settings.config);
        let mut exporter = Exporter::bind_with_sources(settings, sources).await?;
        exporter.rebuild = Some(rebuild);
        Ok(exporter)
    }
}

impl<S: DestinationSource> Exporter<S> {
    /// Bind with caller-provided sources, one per config target, in order.
    pub async fn bind_with_sources(settings: Settings, sources: Vec<S>) -> Result<Self, RunError> {
        let path = settings.telemetry_path.as_str();
        if !path.starts_with('/') || matches!(path, "/" | "/healthz" | "/readyz") {
            return Err(RunError::TelemetryPath(settings.telemetry_path));
        }
        if sources.len() != settings.config.targets.len() {
            return Err(RunError::Sources {
                targets: settings.config.targets.len(),
                sources: sources.len(),
            });
        }
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| RunError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let store = Arc::new(Store::new(
            jobs(&settings.config).into_iter().map(|j| j.key),
        ));
        let telemetry = Arc::new(Telemetry::new(settings.process_metrics));
        Ok(Exporter {
            settings,
            listener,
            sources: sources.into_iter().map(Arc::new).collect(),
            rebuild: None,
            store,
            telemetry,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.settings.listen)
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
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        reloads: mpsc::Receiver<()>,
    ) {
        let (trigger, watch) = shutdown::channel();
        tokio::spawn(trigger.fire_on(shutdown));
        let grace = self.settings.grace;
        let app = Arc::new(App {
            store: Arc::clone(&self.store),
            telemetry: Arc::clone(&self.telemetry),
            telemetry_path: self.settings.telemetry_path.clone(),
        });
        let handler = move |req: hyper::Request<hyper::body::Incoming>, _peer| {
            let app = Arc::clone(&app);
            async move { Ok(app.respond(req.method(), req.uri().path())) }
        };
        tracing::info!(address = %self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            tables = self.settings.config.table_count(), "serving metrics");
        let mut server_watch = watch.clone();
        let server = crate::serve::serve(
            self.listener,
            handler,
            async move { server_watch.wait().await },
            grace,
            crate::serve::DEFAULT_MAX_CONNECTIONS,
        );
        let polls = Polls {
            config: self.settings.config,
            config_path: self.settings.config_path,
            sources: self.sources,
            rebuild: self.rebuild,
            store: self.store,
            telemetry: self.telemetry,
            grace,
        }
        .run(watch, reloads);
        let (open_connections, aborted_polls) = tokio::join!(server, polls);
        if open_connections > 0 {
            tracing::warn!(
                connections = open_connections,
                "closed connections still open after the grace period"
            );
        }
        tracing::info!(aborted_polls, "stopped");
    }
}

/// The polling side of a running exporter, across config reloads.
struct Polls<S> {
    config: Config,
    config_path: Option<PathBuf>,
    sources: Vec<Arc<S>>,
    rebuild: Option<SourceBuilder<S>>,
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    grace: Duration,
}

impl<S: DestinationSource> Polls<S> {
    /// Run one scheduler per config generation until `shutdown`. Returns the
    /// number of polls aborted at the end.
    async fn run(mut self, mut shutdown: Shutdown, mut reloads: mpsc::Receiver<()>) -> usize {
        loop {
            let (generation_trigger, generation) = shutdown::channel();
            let scheduler = Scheduler {
                sources: self.sources.clone(),
                store: Arc::clone(&self.store),
                telemetry: Arc::clone(&self.telemetry),
                concurrency: self.config.concurrency,
            };
            let task = tokio::spawn(scheduler.run(jobs(&self.config), generation, self.grace));
            let next = loop {
                tokio::select! {
                    () = shutdown.wait() => break None,
                    Some(()) = reloads.recv() => {
                        if let Some(next) = self.reload() {
                            break Some(next);
                        }
                    }
                }
            };
            generation_trigger.fire();
            let aborted = task.await.unwrap_or(0);
            let Some((config, sources)) = next else {
                return aborted;
            };
            self.store
                .reconcile(jobs(&config).into_iter().map(|job| job.key));
            self.sources = sources.into_iter().map(Arc::new).collect();
            self.config = config;
        }
    }

    /// Read and validate the config file again; `None` keeps the running one.
    fn reload(&self) -> Option<(Config, Vec<S>)> {
        let (Some(path), Some(rebuild)) = (&self.config_path, &self.rebuild) else {
            tracing::warn!("reload requested, but this exporter has no config file to reload");
            return None;
        };
        match config::load(path) {
            Ok(config) => {
                tracing::info!(path = %path.display(), tables = config.table_count(), "configuration reloaded");
                self.telemetry.record_reload(true);
                let sources = rebuild(&config);
                Some((config, sources))
            }
            Err(err) => {
                tracing::error!(path = %path.display(), "reload failed; keeping the running configuration:\n{err}");
                self.telemetry.record_reload(false);
                None
            }
        }
    }
}

/// One job per configured table.
fn jobs(config: &Config) -> Vec<Job> {
    config
        .targets
        .iter()
        .enumerate()
        .flat_map(|(index, target)| {
            target.tables.iter().map(move |table| Job {
                key: TableKey {
                    region: target.region.clone(),
                    table: table.name.clone(),
                },
                table: table.clone(),
                source: index,
                interval: target.poll_interval,
                timeout: target.request_timeout,
            })
        })
        .collect()
}

/// Bind with the production AWS clients and serve until `shutdown`.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    Exporter::bind(settings).await?.serve(shutdown).await;
    Ok(())
}
