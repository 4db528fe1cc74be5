//! Wiring: a validated [`Config`] becomes AWS clients, poll jobs, a state
//! store and an HTTP listener ([`Exporter::bind`]); [`Exporter::serve`] runs
//! the scheduler and the server until shutdown and drains both.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::aws::{self, ClientOptions, DestinationSource, SdkSource};
use crate::config::Config;
use crate::http::App;
use crate::metrics::Telemetry;
use crate::scheduler::{Job, Scheduler};
use crate::shutdown;
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
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
}

impl Exporter<SdkSource> {
    /// Build the aws-sdk-dynamodb clients (one per target, no network
    /// traffic yet) and bind the listener.
    pub async fn bind(settings: Settings) -> Result<Self, RunError> {
        let shared = aws::load_shared_config(&settings.config, &settings.client).await;
        let sources = settings
            .config
            .targets
            .iter()
            .map(|target| {
                SdkSource::new(
                    &shared,
                    target,
                    settings.config.max_attempts,
                    &settings.client,
                )
            })
            .collect();
        Exporter::bind_with_sources(settings, sources).await
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
        let (trigger, watch) = shutdown::channel();
        tokio::spawn(trigger.fire_on(shutdown));
        let grace = self.settings.grace;
        let scheduler = Scheduler {
            sources: self.sources,
            store: Arc::clone(&self.store),
            telemetry: Arc::clone(&self.telemetry),
            concurrency: self.settings.config.concurrency,
        };
        let app = Arc::new(App {
            store: self.store,
            telemetry: self.telemetry,
            telemetry_path: self.settings.telemetry_path,
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
        );
        let polls = scheduler.run(jobs(&self.settings.config), watch, grace);
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
