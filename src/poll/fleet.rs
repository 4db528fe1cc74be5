//! The fleet: which tables are polled, by which client, in which (account,
//! region) scope. A *unit* is one config target in one of its regions; it
//! has its clients and account (from the [`ClientFactory`]), the target's
//! explicit tables for that region, and, with `discovery`, the tables its
//! last refresh found. The fleet merges every unit's work into one
//! [`ScopeWork`] per scope (table polls, discovery refreshes, CDC reads),
//! keeps one [`ScopeRunner`] per scope, and recomputes the work whenever
//! something changes: a reload (SIGHUP), a discovery refresh, an account
//! lookup that finished late.
//!
//! - Clients and accounts come from the factory, one call per unit; the
//!   fleet never reaches into the SDK. A unit whose account the factory
//!   knows without asking AWS (a role's, or one looked up before) is
//!   resolved at once; the others wait for a background lookup, retried
//!   every [`ACCOUNT_RETRY`] while it fails, one per identity. A table
//!   given as an ARN is labelled with the ARN's account.
//! - Scopes live across reloads: a reload that keeps a table keeps its
//!   schedule and its budget, and so do kept discovery refreshes and CDC
//!   reads; a scope that no longer has work stops and its series go.
//! - Discovery refreshes and CDC reads are work of their scope's runner,
//!   under its budget; a refresh's outcome comes back as a
//!   [`ScopeEvent`]. A failed refresh (`ListTables` failed) keeps the last
//!   known list and is counted; one that finds a table gone drops its
//!   series. A table whose tags could not be read keeps its last decision
//!   (see [`discovery`](crate::poll::discovery)), and the error is counted
//!   with the scope's discovery errors.
//! - Readiness waits for every account lookup and for the first
//!   *successful* refresh of every unit with discovery, and names them.
//! - A reload whose file parses to the running config changes nothing.
//! - Sharding: a unit only keeps the tables this replica owns.
//! - Every task (scope runners, account lookups) belongs to the fleet's
//!   `JoinSet` and runs under [`supervise`], so a panic is logged, counted
//!   and followed by a restart. On shutdown every scope drains at once,
//!   side by side, and the fleet waits for all of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::aws::budget::{Budget, Meter};
use crate::aws::factory::{ClientFactory, Identity, ScopeClients};
use crate::aws::CallPolicy;
use crate::config::{self, Config, Target};
use crate::exposition::metrics::Telemetry;
use crate::poll::cdc::CdcJob;
use crate::poll::discovery::{DiscoveryJob, Refresh};
use crate::poll::scheduler::{Budgets, PollJob, ScopeEvent, ScopeMeter, ScopeRunner, ScopeWork};
use crate::poll::supervise::supervise;
use crate::poll::tags::TableRules;
use crate::state::store::Store;
use crate::state::{unix_now, Name, ScopeKey, Service, Shard, TableKey};

/// How long to wait before asking STS again after a failed lookup.
pub const ACCOUNT_RETRY: Duration = Duration::from_secs(30);

/// The pace of a lookup's STS calls (its retries, in effect).
const STS_RATE: f64 = 1.0;

/// How much longer than the grace period shutdown waits for the scopes
/// (each bounds its own drain by the grace) before it aborts them.
const DRAIN_MARGIN: Duration = Duration::from_secs(1);

/// Everything the fleet needs that does not change with the config file.
pub struct FleetSettings {
    pub shard: Shard,
    pub store: Arc<Store>,
    pub telemetry: Arc<Telemetry>,
    /// How long work in flight may take to finish on shutdown.
    pub grace: Duration,
    /// The file the config came from; `None` turns reloads into a logged no-op.
    pub config_path: Option<PathBuf>,
}

struct Unit<C> {
    /// Shared by the target's units (one per region): its table list can
    /// be thousands of entries.
    target: Arc<Target>,
    /// Shared by the target's units and by its tables' poll jobs.
    rules: Arc<TableRules>,
    region: Name,
    identity: Identity,
    policy: CallPolicy,
    /// `None` until the account is known.
    clients: Option<ScopeClients<C>>,
    /// With discovery: what names its refreshes across reloads.
    discovery_key: Option<Name>,
    /// `None` until the first discovery refresh succeeded (or without
    /// discovery); readiness waits for it. Sorted.
    discovered: Option<Vec<Name>>,
    /// The tables the last successful refresh could not decide on, with
    /// their codes: they are warned about again only when this changes.
    undecided: Vec<(Name, String)>,
}

impl<C> Unit<C> {
    fn account(&self) -> Option<&Name> {
        self.clients.as_ref().map(|c| &c.account)
    }
}

struct ScopeHandle<C> {
    work: watch::Sender<ScopeWork<C>>,
    budgets: Budgets,
    /// A child of the fleet's root token: shutdown stops every scope at once.
    shutdown: CancellationToken,
}

/// What the fleet's account lookups report.
struct Resolved {
    generation: u64,
    identity: Identity,
    account: Name,
    /// Where STS was asked, and how many requests that took (failed
    /// lookups included): counted once the account is known.
    region: Name,
    sts_requests: u64,
}

/// Counts a lookup's STS requests until it knows the account to count
/// them under.
#[derive(Default)]
struct StsRequests(std::sync::atomic::AtomicU64);

impl Meter for StsRequests {
    fn attempt(&self, _operation: &'static str, _metrics: u64) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The rates of one scope's budgets: the lowest any target using the
/// scope allows, per service.
#[derive(Debug, Clone, Copy)]
struct Rates {
    dynamodb: f64,
    kinesis: f64,
    cloudwatch: f64,
}

impl Rates {
    const NONE: Rates = Rates {
        dynamodb: f64::INFINITY,
        kinesis: f64::INFINITY,
        cloudwatch: f64::INFINITY,
    };

    fn include(&mut self, target: &Target) {
        self.dynamodb = self.dynamodb.min(target.max_requests_per_second);
        self.kinesis = self.kinesis.min(target.kinesis_max_requests_per_second);
        self.cloudwatch = self
            .cloudwatch
            .min(target.cloudwatch_max_requests_per_second);
    }
}

/// The running fleet.
pub struct Fleet<F: ClientFactory> {
    settings: FleetSettings,
    factory: Arc<F>,
    config: Config,
    units: Vec<Unit<F::Client>>,
    scopes: HashMap<ScopeKey, ScopeHandle<F::Client>>,
    generation: u64,
    root: CancellationToken,
    resolved: mpsc::UnboundedSender<Resolved>,
    scope_events: mpsc::UnboundedSender<ScopeEvent>,
    /// Every task: the supervised scope runners (their output is the
    /// number of calls they aborted) and account lookups, until they end.
    tasks: JoinSet<usize>,
}

impl<F: ClientFactory> Fleet<F> {
    /// Run the fleet for `config` and every valid reload until `root` is
    /// cancelled, with the clients `factory` gives. Returns the number of
    /// calls aborted at the end.
    pub async fn run(
        settings: FleetSettings,
        factory: Arc<F>,
        config: Config,
        root: CancellationToken,
        mut reloads: mpsc::Receiver<()>,
    ) -> usize {
        let (resolved, mut lookups) = mpsc::unbounded_channel();
        let (scope_events, mut outcomes) = mpsc::unbounded_channel();
        let mut fleet = Fleet {
            settings,
            factory,
            config: config.clone(),
            units: Vec::new(),
            scopes: HashMap::new(),
            generation: 0,
            root: root.clone(),
            resolved,
            scope_events,
            tasks: JoinSet::new(),
        };
        let mut generation = root.child_token();
        fleet.start(config, &generation).await;
        loop {
            tokio::select! {
                () = root.cancelled() => break,
                Some(()) = reloads.recv() => {
                    if let Some(config) = fleet.reload() {
                        generation.cancel();
                        generation = root.child_token();
                        fleet.start(config, &generation).await;
                    }
                }
                Some(resolved) = lookups.recv() => fleet.resolved(resolved, &generation).await,
                Some(event) = outcomes.recv() => fleet.discovered(event),
                // Lookups of cancelled generations and stopped scopes end here.
                Some(_) = fleet.tasks.join_next(), if !fleet.tasks.is_empty() => {}
            }
        }
        generation.cancel();
        fleet.drain().await
    }

    /// Wait for every task: the scopes, cancelled together with the root
    /// token, drain side by side, each within the grace period.
    async fn drain(mut self) -> usize {
        for handle in self.scopes.values() {
            handle.shutdown.cancel();
        }
        let mut aborted = 0;
        let limit = self.settings.grace + DRAIN_MARGIN;
        let tasks = &mut self.tasks;
        let drained = tokio::time::timeout(limit, async {
            while let Some(joined) = tasks.join_next().await {
                aborted += joined.unwrap_or(0);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                tasks = self.tasks.len(),
                "background tasks still running after the grace period; aborting them"
            );
            self.tasks.shutdown().await;
        }
        aborted
    }

    /// Set up the units of `config` and start whatever they need.
    async fn start(&mut self, config: Config, generation: &CancellationToken) {
        self.generation += 1;
        self.config = config;
        // What discovery found survives a reload of the same unit, so its
        // tables keep their state and no listing burst follows a SIGHUP.
        let previous: HashMap<Name, Option<Vec<Name>>> = self
            .units
            .drain(..)
            .filter_map(|u| Some((u.discovery_key?, u.discovered)))
            .collect();
        let mut lookups: BTreeMap<Identity, (Arc<Target>, CallPolicy)> = BTreeMap::new();
        let targets = self.config.targets.clone();
        for target in targets.into_iter().map(Arc::new) {
            let rules = Arc::new(TableRules::new(Arc::clone(&target)));
            let identity = Identity::of(&target);
            let policy = CallPolicy::of(&self.config, &target);
            let known = self.factory.known_account(&target).is_some();
            for region in &target.regions {
                let clients = if known {
                    self.resolve(&target, region, policy).await
                } else {
                    None
                };
                if clients.is_none() {
                    lookups
                        .entry(identity.clone())
                        .or_insert_with(|| (Arc::clone(&target), policy));
                }
                let discovery_key = (target.discovery.as_ref())
                    .map(|d| Name::from(format!("{identity:?} {region} {d:?}")));
                let discovered = (discovery_key.as_ref())
                    .and_then(|k| previous.get(k).cloned())
                    .flatten();
                self.units.push(Unit {
                    target: Arc::clone(&target),
                    rules: Arc::clone(&rules),
                    region: Name::from(region.as_str()),
                    identity: identity.clone(),
                    policy,
                    clients,
                    discovery_key,
                    discovered,
                    undecided: Vec::new(),
                });
            }
        }
        for (identity, (target, policy)) in lookups {
            self.lookup_account(target, identity, policy, generation);
        }
        self.rebuild();
    }

    /// The clients of a unit whose account is known; `None` (logged) if
    /// the factory fails all the same.
    async fn resolve(
        &self,
        target: &Target,
        region: &str,
        policy: CallPolicy,
    ) -> Option<ScopeClients<F::Client>> {
        // The account is known: no STS call to budget or count.
        let sts = Budget::new(STS_RATE, 1);
        match boxed(self.factory.scope(target, region, policy, &sts)).await {
            Ok(clients) => Some(clients),
            Err(err) => {
                tracing::error!(region, code = err.code(), error = %err,
                    "cannot make the clients of a target; its tables wait until a lookup succeeds");
                None
            }
        }
    }

    /// Ask the factory for a target's account in the background, until it
    /// answers.
    fn lookup_account(
        &mut self,
        target: Arc<Target>,
        identity: Identity,
        policy: CallPolicy,
        generation: &CancellationToken,
    ) {
        let region = target.regions.first().cloned().unwrap_or_default();
        let factory = Arc::clone(&self.factory);
        let resolved = self.resolved.clone();
        let generation_id = self.generation;
        let cancel = generation.clone();
        let detail = region.clone();
        let make = move || {
            let (factory, target, region) =
                (Arc::clone(&factory), Arc::clone(&target), region.clone());
            let (resolved, cancel, identity) = (resolved.clone(), cancel.clone(), identity.clone());
            async move {
                let requests = Arc::new(StsRequests::default());
                let sts = Budget::metered(STS_RATE, 1, Arc::clone(&requests) as Arc<dyn Meter>);
                let mut failures = 0u32;
                let account = loop {
                    let outcome = tokio::select! {
                        () = cancel.cancelled() => return 0,
                        outcome = boxed(factory.scope(&target, &region, policy, &sts)) => outcome,
                    };
                    match outcome {
                        Ok(clients) => break clients.account,
                        Err(err) => {
                            failures += 1;
                            if failures == 1 {
                                tracing::error!(region = %region, code = err.code(), error = %err,
                                "cannot tell the account of a target (STS GetCallerIdentity); its tables wait until it answers");
                            } else {
                                tracing::debug!(error = %err, "STS GetCallerIdentity failed again");
                            }
                            tokio::select! {
                                () = cancel.cancelled() => return 0,
                                () = tokio::time::sleep(ACCOUNT_RETRY) => {}
                            }
                        }
                    }
                };
                let _ = resolved.send(Resolved {
                    generation: generation_id,
                    identity,
                    account,
                    region: Name::from(region.as_str()),
                    sts_requests: requests.0.load(std::sync::atomic::Ordering::Relaxed),
                });
                0
            }
        };
        let telemetry = Arc::clone(&self.settings.telemetry);
        let cancel = generation.clone();
        self.tasks.spawn(async move {
            supervise("account", detail, telemetry, cancel, make)
                .await
                .unwrap_or(0)
        });
    }

    /// An account lookup answered: resolve every unit of its identity.
    async fn resolved(&mut self, resolved: Resolved, generation: &CancellationToken) {
        let Resolved {
            generation: id,
            identity,
            account,
            region,
            sts_requests,
        } = resolved;
        tracing::info!(account_id = %account, endpoint = ?identity.endpoint_url, "target account resolved");
        let sts_scope = ScopeKey {
            account_id: account,
            region,
        };
        if id != self.generation {
            self.count_sts(&sts_scope, sts_requests);
            return;
        }
        let mut failed = None;
        for index in 0..self.units.len() {
            let unit = &self.units[index];
            if unit.clients.is_some() || unit.identity != identity {
                continue;
            }
            let (target, policy) = (Arc::clone(&unit.target), unit.policy);
            let region = unit.region.clone();
            match self.resolve(&target, &region, policy).await {
                Some(clients) => self.units[index].clients = Some(clients),
                None => failed = Some((target, policy)),
            }
        }
        if let Some((target, policy)) = failed {
            self.lookup_account(target, identity, policy, generation);
        }
        self.rebuild();
        self.count_sts(&sts_scope, sts_requests);
    }

    /// Count a lookup's STS requests in the scope of its account and
    /// region, if that scope is polled (else they have no series to go in).
    fn count_sts(&self, scope: &ScopeKey, requests: u64) {
        if !self.scopes.contains_key(scope) {
            return;
        }
        for _ in 0..requests {
            (self.settings.store).count_request(scope, Service::Sts, "GetCallerIdentity");
        }
    }

    /// A scope's discovery refresh ended: record it, and recompute the work.
    fn discovered(&mut self, event: ScopeEvent) {
        let ScopeEvent::Discovered {
            scope,
            key,
            outcome,
        } = event;
        let units: Vec<usize> = (0..self.units.len())
            .filter(|&i| {
                let unit = &self.units[i];
                unit.discovery_key.as_ref() == Some(&key)
                    && unit.account() == Some(&scope.account_id)
            })
            .collect();
        // A refresh of work a reload dropped.
        if units.is_empty() {
            return;
        }
        let now = unix_now();
        match outcome {
            Ok(refresh) => {
                let undecided: Vec<(Name, String)> = (refresh.undecided.iter())
                    .map(|(name, err)| (name.clone(), err.code().to_string()))
                    .collect();
                let mut count = 0;
                for index in units {
                    let unit = &mut self.units[index];
                    let tables = refresh.tables(unit.discovered.as_deref());
                    count = tables.len();
                    log_undecided(&scope, &refresh, undecided != unit.undecided);
                    unit.undecided = undecided.clone();
                    // An unchanged list is kept, and with it the names the
                    // store and the scheduler share.
                    if unit.discovered.as_ref() != Some(&tables) {
                        tracing::info!(account_id = %scope.account_id, region = %scope.region, tables = count, "discovery refreshed the table list");
                        unit.discovered = Some(tables);
                    }
                }
                self.settings.store.update_scope(&scope, |s| {
                    for (_, err) in &refresh.undecided {
                        s.record_discovery_table_error(err.code());
                    }
                    s.record_discovery(Ok(count), now);
                });
            }
            Err(err) => {
                // An unknown code was warned about (at most hourly) where
                // it arrived.
                if err.unknown_code().is_none() {
                    tracing::warn!(account_id = %scope.account_id, region = %scope.region, code = err.code(), error = %err,
                        "table discovery failed; keeping the last known table list");
                }
                self.settings
                    .store
                    .update_scope(&scope, |s| s.record_discovery(Err(err.code()), now));
            }
        }
        self.rebuild();
    }

    /// Start the runner of a scope (and its budgets), once.
    fn scope_handle(&mut self, scope: &ScopeKey, rates: Rates) -> &ScopeHandle<F::Client> {
        let concurrency = self.config.concurrency;
        let settings = &self.settings;
        let tasks = &mut self.tasks;
        let root = &self.root;
        let events = &self.scope_events;
        self.scopes.entry(scope.clone()).or_insert_with(|| {
            let shutdown = root.child_token();
            let budget = |service: Service, rate: f64| {
                let meter = ScopeMeter {
                    store: Arc::clone(&settings.store),
                    scope: scope.clone(),
                    service,
                    stopped: shutdown.clone(),
                };
                Budget::metered(rate, concurrency, Arc::new(meter))
            };
            let budgets = Budgets {
                dynamodb: budget(Service::DynamoDb, rates.dynamodb),
                kinesis: budget(Service::Kinesis, rates.kinesis),
                cloudwatch: budget(Service::CloudWatch, rates.cloudwatch),
            };
            let (work, receiver) = watch::channel(ScopeWork::default());
            let make = {
                let (key, budgets) = (scope.clone(), budgets.clone());
                let (store, telemetry) =
                    (Arc::clone(&settings.store), Arc::clone(&settings.telemetry));
                let (grace, shutdown, events) = (settings.grace, shutdown.clone(), events.clone());
                move || {
                    let runner = ScopeRunner {
                        key: key.clone(),
                        budgets: budgets.clone(),
                        store: Arc::clone(&store),
                        telemetry: Arc::clone(&telemetry),
                        concurrency,
                        grace,
                        events: events.clone(),
                    };
                    // A clone sees the current work: the runner reads it first.
                    runner.run(receiver.clone(), shutdown.clone())
                }
            };
            let supervised = supervise(
                "scope",
                format!("{}/{}", scope.account_id, scope.region),
                Arc::clone(&settings.telemetry),
                shutdown.clone(),
                make,
            );
            tasks.spawn(async move { supervised.await.unwrap_or(0) });
            ScopeHandle {
                work,
                budgets,
                shutdown,
            }
        })
    }

    /// Recompute every scope's work from the units, start and stop scope
    /// runners, and make the store hold exactly the polled tables.
    fn rebuild(&mut self) {
        let mut by_scope: BTreeMap<ScopeKey, ScopeWork<F::Client>> = BTreeMap::new();
        let mut rates: HashMap<ScopeKey, Rates> = HashMap::new();
        let mut seen: BTreeSet<TableKey> = BTreeSet::new();
        let shard = self.settings.shard;
        // What readiness waits for: accounts not known yet, and units with
        // discovery that never had a successful refresh.
        let mut waiting: BTreeSet<String> = BTreeSet::new();
        for unit in &self.units {
            let Some(clients) = &unit.clients else {
                waiting.insert(format!(
                    "the account of a target in {} (STS GetCallerIdentity)",
                    unit.region
                ));
                continue;
            };
            let account = &clients.account;
            if unit.target.discovery.is_some() && unit.discovered.is_none() {
                waiting.insert(format!("discovery in {account}/{}", unit.region));
            }
            let explicit = unit.target.tables_in(&unit.region).map(|table| {
                let account =
                    (table.account_id.as_deref()).map_or_else(|| account.clone(), Name::from);
                (account, table.clone())
            });
            let discovered = unit.discovered.iter().flatten().map(|name| {
                (
                    account.clone(),
                    config::TableRef {
                        identifier: name.clone(),
                        name: name.clone(),
                        account_id: None,
                        region: None,
                        expect_streaming: None,
                    },
                )
            });
            for (account, table) in explicit.chain(discovered) {
                let key = TableKey {
                    account_id: account,
                    region: unit.region.clone(),
                    table: table.name.clone(),
                };
                if !shard.owns(&key) || !seen.insert(key.clone()) {
                    continue;
                }
                let scope = key.scope();
                rates
                    .entry(scope.clone())
                    .or_insert(Rates::NONE)
                    .include(&unit.target);
                let work = by_scope.entry(scope).or_default();
                work.tables.push(Arc::new(PollJob {
                    key,
                    table,
                    client: Arc::clone(&clients.client),
                    interval: unit.target.poll_interval,
                    policy: unit.policy,
                    rules: Arc::clone(&unit.rules),
                }));
            }
        }
        // Discovery refreshes: their scopes exist even before any table.
        for unit in &self.units {
            let (Some(clients), Some(filters), Some(key)) =
                (&unit.clients, &unit.target.discovery, &unit.discovery_key)
            else {
                continue;
            };
            let scope = ScopeKey {
                account_id: clients.account.clone(),
                region: unit.region.clone(),
            };
            rates
                .entry(scope.clone())
                .or_insert(Rates::NONE)
                .include(&unit.target);
            let work = by_scope.entry(scope).or_default();
            if work.discoveries.iter().all(|d| d.key != *key) {
                work.discoveries.push(Arc::new(DiscoveryJob {
                    key: key.clone(),
                    client: Arc::clone(&clients.client),
                    filters: filters.clone(),
                    shard,
                    policy: unit.policy,
                }));
            }
        }
        // CDC reads cover their unit's polled tables of its own account
        // (another account's metrics need that account's role), in scopes
        // that have work anyway; units of one identity share one read.
        let mut reads: BTreeMap<(ScopeKey, Name), CdcJob<F::Client>> = BTreeMap::new();
        for unit in &self.units {
            let (Some(clients), Some(cdc)) = (&unit.clients, &unit.target.cdc_metrics) else {
                continue;
            };
            let account = &clients.account;
            let scope = ScopeKey {
                account_id: account.clone(),
                region: unit.region.clone(),
            };
            if !by_scope.contains_key(&scope) {
                continue;
            }
            let mine = unit
                .target
                .tables_in(&unit.region)
                .filter(|t| t.account_id.as_deref().is_none_or(|a| a == &**account))
                .map(|t| t.name.clone())
                .chain(unit.discovered.iter().flatten().cloned())
                .filter(|name| {
                    shard.owns(&TableKey {
                        account_id: account.clone(),
                        region: unit.region.clone(),
                        table: name.clone(),
                    })
                });
            let key = Name::from(format!("{:?} {}", unit.identity, unit.region));
            let read = reads.entry((scope, key.clone())).or_insert_with(|| CdcJob {
                key,
                client: Arc::clone(&clients.client),
                policy: unit.policy,
                interval: cdc.interval,
                refresh: (unit.target.discovery.as_ref())
                    .map_or(config::DEFAULT_REFRESH_INTERVAL, |d| d.refresh_interval),
                tables: Vec::new(),
            });
            read.tables.extend(mine);
        }
        for ((scope, _), mut read) in reads {
            read.tables.sort();
            read.tables.dedup();
            if let Some(work) = by_scope.get_mut(&scope) {
                work.cdc.push(Arc::new(read));
            }
        }
        let keys: Vec<TableKey> = seen.into_iter().collect();
        self.settings.store.reconcile(keys.iter().cloned());
        self.settings
            .store
            .set_waiting(waiting.into_iter().collect());
        self.settings.telemetry.set_shard_tables(
            self.settings.shard.index,
            self.settings.shard.total,
            keys.len(),
        );
        let wanted: BTreeSet<ScopeKey> = by_scope.keys().cloned().collect();
        let gone: Vec<ScopeKey> = self
            .scopes
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for scope in gone {
            if let Some(handle) = self.scopes.remove(&scope) {
                // Its work in flight drains; the task stays in `tasks`.
                handle.shutdown.cancel();
                tracing::info!(account_id = %scope.account_id, region = %scope.region, "scope no longer polled; its series go");
            }
            self.settings.telemetry.remove_scope(&scope);
        }
        self.settings.store.retain_scopes(&wanted);
        for (scope, work) in by_scope {
            let rates = rates.get(&scope).copied().unwrap_or(Rates {
                dynamodb: self.config.max_requests_per_second,
                kinesis: self.config.kinesis_max_requests_per_second,
                cloudwatch: self.config.cloudwatch_max_requests_per_second,
            });
            let handle = self.scope_handle(&scope, rates);
            handle.budgets.dynamodb.set_max_rate(rates.dynamodb);
            handle.budgets.kinesis.set_max_rate(rates.kinesis);
            handle.budgets.cloudwatch.set_max_rate(rates.cloudwatch);
            handle.work.send_replace(work);
        }
    }

    /// Read and validate the config file again; `None` keeps the running one.
    fn reload(&self) -> Option<Config> {
        let Some(path) = &self.settings.config_path else {
            tracing::warn!("reload requested, but this exporter has no config file to reload");
            return None;
        };
        match config::load(path) {
            Ok(config) if config == self.config => {
                tracing::info!(path = %path.display(), "configuration unchanged; nothing to reload");
                self.settings.telemetry.record_reload(true);
                None
            }
            Ok(config) => {
                tracing::info!(path = %path.display(), tables = config.table_count(), "configuration reloaded");
                self.settings.telemetry.record_reload(true);
                Some(config)
            }
            Err(err) => {
                tracing::error!(path = %path.display(), "reload failed; keeping the running configuration:\n{err}");
                self.settings.telemetry.record_reload(false);
                None
            }
        }
    }
}

/// A factory call as a boxed future: the SDK's futures behind it (STS,
/// credentials) are deep types, and nesting them in the fleet's own future
/// would make the exporter's future too deep for the compiler to lay out.
fn boxed<'a, T>(
    future: impl std::future::Future<Output = T> + Send + 'a,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>> {
    Box::pin(future)
}

/// Say which tables a refresh could not decide on: how many, by code, and
/// the first; at warn when that `changed` since the last refresh, else at
/// debug.
fn log_undecided(scope: &ScopeKey, refresh: &Refresh, changed: bool) {
    if refresh.undecided.is_empty() {
        return;
    }
    let mut codes: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, err) in &refresh.undecided {
        *codes.entry(err.code()).or_insert(0) += 1;
    }
    let codes: Vec<String> = codes.iter().map(|(c, n)| format!("{c} ×{n}")).collect();
    let first = &refresh.undecided[0];
    if changed {
        tracing::warn!(account_id = %scope.account_id, region = %scope.region,
            tables = refresh.undecided.len(), codes = %codes.join(", "),
            first_table = %first.0, first_error = %first.1,
            "discovery could not read the tags of some tables; each keeps its last decision (polled only if it matched before)");
    } else {
        tracing::debug!(account_id = %scope.account_id, region = %scope.region,
            tables = refresh.undecided.len(), codes = %codes.join(", "),
            "the same tables' tags still cannot be read");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::cloudwatch::{CdcSeries, Latest, Query};
    use crate::aws::factory::{Connect, Factory, LOCAL_ACCOUNT_ID};
    use crate::aws::{
        CloudWatchApi, Destination, DynamoDbApi, KinesisApi, Page, PollError, StreamSummary,
    };
    use crate::config::TableRef;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tokio::time::Instant;

    /// The account STS names for credentials without a role.
    const STS_ACCOUNT: &str = "111111111111";
    const MEMBER: &str = "222222222222";
    /// Whose tables a client without a role sees.
    const DEFAULT: &str = "default";

    /// (when, principal, region, operation, table) of one call.
    type Call = (Instant, String, String, &'static str, String);

    /// A fake AWS: tables by (principal, region), where the principal is a
    /// role's account or [`DEFAULT`]; STS; and a log of every call.
    #[derive(Default)]
    struct World {
        tables: Mutex<BTreeMap<(String, String), BTreeSet<String>>>,
        /// STS lookups that fail before one answers.
        sts_failures: AtomicUsize,
        /// The region of every STS lookup.
        sts_calls: Mutex<Vec<String>>,
        /// (role ARN, region) of every client made.
        connects: Mutex<Vec<(Option<String>, String)>>,
        /// Scopes whose ListTables is denied.
        denied: Mutex<BTreeSet<(String, String)>>,
        /// Every call.
        calls: Mutex<Vec<Call>>,
        /// How long each DynamoDB describe takes, by table.
        latency: Mutex<HashMap<String, Duration>>,
        in_flight: AtomicUsize,
    }

    impl World {
        fn put(&self, principal: &str, region: &str, tables: &[&str]) {
            let mut all = self.tables.lock().unwrap();
            let scope = all
                .entry((principal.to_string(), region.to_string()))
                .or_default();
            scope.extend(tables.iter().map(|t| t.to_string()));
        }

        fn remove(&self, principal: &str, region: &str, table: &str) {
            let mut all = self.tables.lock().unwrap();
            if let Some(scope) = all.get_mut(&(principal.to_string(), region.to_string())) {
                scope.remove(table);
            }
        }

        /// Calls of `operation` (of `table`, if given).
        fn count(&self, operation: &str, table: Option<&str>) -> usize {
            let calls = self.calls.lock().unwrap();
            calls
                .iter()
                .filter(|c| c.3 == operation && table.is_none_or(|t| c.4 == t))
                .count()
        }
    }

    struct FakeConnect(Arc<World>);

    struct FakeClient {
        world: Arc<World>,
        principal: String,
        region: String,
    }

    /// Counts a call in flight until dropped (an aborted call too).
    struct InFlight<'a>(&'a AtomicUsize);

    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl FakeClient {
        fn log(&self, operation: &'static str, table: &str) {
            self.world.calls.lock().unwrap().push((
                Instant::now(),
                self.principal.clone(),
                self.region.clone(),
                operation,
                table.to_string(),
            ));
        }

        fn tables(&self) -> BTreeSet<String> {
            let all = self.world.tables.lock().unwrap();
            all.get(&(self.principal.clone(), self.region.clone()))
                .cloned()
                .unwrap_or_default()
        }
    }

    impl Connect for FakeConnect {
        type Client = FakeClient;

        async fn connect(&self, target: &Target, region: &str, _: CallPolicy) -> FakeClient {
            let role = target.role.as_ref();
            (self.0.connects.lock().unwrap()).push((role.map(|r| r.arn.clone()), region.into()));
            FakeClient {
                world: Arc::clone(&self.0),
                principal: role.map_or(DEFAULT.into(), |r| r.account_id.clone()),
                region: region.into(),
            }
        }

        async fn caller_account(
            &self,
            target: &Target,
            region: &str,
            policy: CallPolicy,
            sts: &Budget,
        ) -> Result<String, PollError> {
            crate::aws::call(sts, policy, crate::aws::GET_CALLER_IDENTITY, || async {
                self.0.sts_calls.lock().unwrap().push(region.into());
                if target.endpoint_url.is_some() {
                    return Err(PollError::Dispatch("this endpoint has no STS".into()));
                }
                let failures = &self.0.sts_failures;
                if failures.load(Ordering::SeqCst) > 0 {
                    failures.fetch_sub(1, Ordering::SeqCst);
                    return Err(PollError::Service {
                        code: "ExpiredToken".into(),
                        message: "the token expired".into(),
                    });
                }
                Ok(STS_ACCOUNT.into())
            })
            .await
        }
    }

    impl DynamoDbApi for FakeClient {
        async fn describe(&self, table: &TableRef) -> Result<Vec<Destination>, PollError> {
            self.log("DescribeKinesisStreamingDestination", &table.name);
            self.world.in_flight.fetch_add(1, Ordering::SeqCst);
            let _in_flight = InFlight(&self.world.in_flight);
            let latency = self
                .world
                .latency
                .lock()
                .unwrap()
                .get(&*table.name)
                .copied();
            if let Some(latency) = latency {
                tokio::time::sleep(latency).await;
            }
            if !self.tables().contains(&*table.name) {
                return Err(PollError::NotFound(table.name.to_string()));
            }
            Ok(vec![Destination {
                stream_arn: format!(
                    "arn:aws:kinesis:{}:{}:stream/{}",
                    self.region, self.principal, table.name
                ),
                status: "ACTIVE".into(),
                status_description: None,
                precision: None,
            }])
        }

        async fn list_tables(&self, _start: Option<String>) -> Result<Page<String>, PollError> {
            self.log("ListTables", "");
            let scope = (self.principal.clone(), self.region.clone());
            if self.world.denied.lock().unwrap().contains(&scope) {
                return Err(PollError::Service {
                    code: "AccessDeniedException".into(),
                    message: "no".into(),
                });
            }
            Ok(Page {
                items: self.tables().into_iter().collect(),
                next: None,
            })
        }

        async fn list_tags(
            &self,
            _arn: &str,
            _token: Option<String>,
        ) -> Result<Page<(String, String)>, PollError> {
            self.log("ListTagsOfResource", "");
            Ok(Page {
                items: Vec::new(),
                next: None,
            })
        }
    }

    impl KinesisApi for FakeClient {
        async fn describe_stream(&self, stream_arn: &str) -> Result<StreamSummary, PollError> {
            self.log("DescribeStreamSummary", stream_arn);
            Ok(StreamSummary {
                name: stream_arn.rsplit('/').next().unwrap_or_default().into(),
                status: "ACTIVE".into(),
                open_shards: 1,
                mode: "ON_DEMAND".into(),
                encryption: "NONE".into(),
                retention_hours: 24,
            })
        }
    }

    impl CloudWatchApi for FakeClient {
        async fn list_cdc_series(
            &self,
            _metric: &str,
            _token: Option<String>,
        ) -> Result<Page<CdcSeries>, PollError> {
            self.log("ListMetrics", "");
            Ok(Page {
                items: Vec::new(),
                next: None,
            })
        }

        async fn latest_datapoints(
            &self,
            _queries: &[Query],
            _start: f64,
            _end: f64,
            _token: Option<String>,
        ) -> Result<Page<Latest>, PollError> {
            self.log("GetMetricData", "");
            Ok(Page {
                items: Vec::new(),
                next: None,
            })
        }
    }

    struct Harness {
        world: Arc<World>,
        factory: Arc<Factory<FakeConnect>>,
        store: Arc<Store>,
        telemetry: Arc<Telemetry>,
        root: CancellationToken,
        reloads: mpsc::Sender<()>,
        task: tokio::task::JoinHandle<usize>,
        path: PathBuf,
        _dir: tempfile::TempDir,
    }

    /// Run a fleet over `world` for the config `text` (a file, so that
    /// reloads can change it).
    fn start(world: &Arc<World>, text: &str, grace: Duration) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exporter.yaml");
        std::fs::write(&path, text).unwrap();
        let config = config::load(&path).unwrap();
        let store = Arc::new(Store::new([]));
        store.set_pending(config.targets.len().max(1));
        let telemetry = Arc::new(Telemetry::new(false));
        let factory = Arc::new(Factory::new(FakeConnect(Arc::clone(world))));
        let settings = FleetSettings {
            shard: Shard::ALL,
            store: Arc::clone(&store),
            telemetry: Arc::clone(&telemetry),
            grace,
            config_path: Some(path.clone()),
        };
        let root = CancellationToken::new();
        let (reloads, receiver) = mpsc::channel(1);
        let task = tokio::spawn(Fleet::run(
            settings,
            Arc::clone(&factory),
            config,
            root.clone(),
            receiver,
        ));
        Harness {
            world: Arc::clone(world),
            factory,
            store,
            telemetry,
            root,
            reloads,
            task,
            path,
            _dir: dir,
        }
    }

    impl Harness {
        /// The (account, region, table) of every table polled successfully.
        fn polled(&self) -> BTreeSet<(String, String, String)> {
            let mut polled = BTreeSet::new();
            self.store.visit(|s| {
                if s.last_poll_ok == Some(true) {
                    polled.insert((
                        s.account_id.to_string(),
                        s.region.to_string(),
                        s.table.to_string(),
                    ));
                }
            });
            polled
        }

        /// Every table the store holds.
        fn tables(&self) -> BTreeSet<String> {
            let mut tables = BTreeSet::new();
            self.store.visit(|s| {
                tables.insert(s.table.to_string());
            });
            tables
        }

        async fn reload(&self, text: &str) {
            std::fs::write(&self.path, text).unwrap();
            self.reloads.send(()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        /// Shut down; the number of calls aborted, and how long it took.
        async fn stop(self) -> (usize, Duration) {
            let began = Instant::now();
            self.root.cancel();
            let aborted = self.task.await.unwrap();
            (aborted, began.elapsed())
        }
    }

    fn set(rows: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
        (rows.iter())
            .map(|(a, r, t)| (a.to_string(), r.to_string(), t.to_string()))
            .collect()
    }

    const GRACE: Duration = Duration::from_secs(5);

    #[tokio::test(start_paused = true)]
    async fn accounts_come_from_role_arns_and_one_sts_lookup_per_identity() {
        let world = Arc::new(World::default());
        world.put(DEFAULT, "us-east-1", &["orders"]);
        world.put(DEFAULT, "eu-west-1", &["orders"]);
        world.put(DEFAULT, "ap-southeast-2", &["later"]);
        world.put(MEMBER, "us-east-1", &["orders", "shared"]);
        let h = start(
            &world,
            &format!(
                "poll_interval: 10s\nmax_attempts: 1\nmax_requests_per_second: 100\ntargets:\n\
                 \x20 - regions: [us-east-1, eu-west-1]\n    tables: [orders]\n\
                 \x20 - region: us-east-1\n    role_arn: arn:aws:iam::{MEMBER}:role/exporter\n    external_id: hub\n    tables: [orders, \"arn:aws:dynamodb:us-east-1:333333333333:table/shared\"]\n\
                 \x20 - region: ap-southeast-2\n    tables: [later]\n"
            ),
            GRACE,
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            h.polled(),
            set(&[
                (STS_ACCOUNT, "ap-southeast-2", "later"),
                (STS_ACCOUNT, "eu-west-1", "orders"),
                (STS_ACCOUNT, "us-east-1", "orders"),
                (MEMBER, "us-east-1", "orders"),
                // A table given as an ARN is labelled with the ARN's account.
                ("333333333333", "us-east-1", "shared"),
            ])
        );
        // One lookup for the two role-less targets (one identity), in the
        // first one's first region; none for the role.
        assert_eq!(*world.sts_calls.lock().unwrap(), ["us-east-1"]);
        let role = Some(format!("arn:aws:iam::{MEMBER}:role/exporter"));
        let connects = world.connects.lock().unwrap().clone();
        assert!(
            connects.contains(&(role, "us-east-1".into())),
            "{connects:?}"
        );
        assert_eq!(
            connects.len(),
            4,
            "one client per target and region: {connects:?}"
        );
        assert!(h.store.waiting().is_empty());
        assert!(h.store.is_ready());
        assert_eq!(h.stop().await.0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_lookup_is_retried_and_readiness_names_it_meanwhile() {
        let world = Arc::new(World::default());
        world.put(DEFAULT, "us-east-1", &["orders"]);
        world.sts_failures.store(2, Ordering::SeqCst);
        let h = start(
            &world,
            "poll_interval: 10s\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    tables: [orders]\n",
            GRACE,
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(h.polled().is_empty());
        assert_eq!(
            h.store.waiting(),
            ["the account of a target in us-east-1 (STS GetCallerIdentity)"]
        );
        assert!(!h.store.is_ready());
        assert_eq!(
            h.factory
                .known_account(&config::load(&h.path).unwrap().targets[0]),
            None
        );
        // Asked again every 30 s: the third lookup answers.
        tokio::time::sleep(ACCOUNT_RETRY).await;
        assert_eq!(world.sts_calls.lock().unwrap().len(), 2);
        assert!(h.polled().is_empty());
        tokio::time::sleep(ACCOUNT_RETRY).await;
        assert_eq!(world.sts_calls.lock().unwrap().len(), 3);
        assert_eq!(h.polled(), set(&[(STS_ACCOUNT, "us-east-1", "orders")]));
        assert!(h.store.waiting().is_empty());
        assert!(h.store.is_ready());
        // Each of the three requests is counted, once the account is known.
        let scope = ScopeKey {
            account_id: STS_ACCOUNT.into(),
            region: "us-east-1".into(),
        };
        let requests = h.store.scope_state(&scope).unwrap().requests;
        assert_eq!(requests[&Service::Sts]["GetCallerIdentity"], 3);
        // Remembered: a reload that keeps the identity asks no more.
        h.reload("poll_interval: 20s\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    tables: [orders]\n").await;
        assert_eq!(world.sts_calls.lock().unwrap().len(), 3);
        assert_eq!(h.polled(), set(&[(STS_ACCOUNT, "us-east-1", "orders")]));
        assert_eq!(h.stop().await.0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_loopback_endpoint_whose_sts_fails_gets_the_placeholder_account() {
        let world = Arc::new(World::default());
        world.put(DEFAULT, "us-east-1", &["orders"]);
        let h = start(
            &world,
            "max_attempts: 1\ntargets:\n  - region: us-east-1\n    endpoint_url: http://127.0.0.1:8000\n    tables: [orders]\n",
            GRACE,
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            h.polled(),
            set(&[(LOCAL_ACCOUNT_ID, "us-east-1", "orders")])
        );
        assert_eq!(world.sts_calls.lock().unwrap().len(), 1, "asked once");
        assert!(h.store.is_ready());
        assert_eq!(h.stop().await.0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn discovery_refreshes_follow_the_tables_and_a_failing_one_keeps_the_list() {
        let world = Arc::new(World::default());
        world.put(DEFAULT, "us-east-1", &["a", "b"]);
        let scope = (DEFAULT.to_string(), "us-east-1".to_string());
        // The first refresh is denied: readiness names it.
        world.denied.lock().unwrap().insert(scope.clone());
        let h = start(
            &world,
            "poll_interval: 10s\nmax_attempts: 1\nmax_requests_per_second: 100\ntargets:\n  - region: us-east-1\n    discovery:\n      refresh_interval: 1m\n",
            GRACE,
        );
        let key = ScopeKey {
            account_id: STS_ACCOUNT.into(),
            region: "us-east-1".into(),
        };
        let discovery = |h: &Harness| h.store.scope_state(&key).unwrap().discovery.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            h.store.waiting(),
            [format!("discovery in {STS_ACCOUNT}/us-east-1")]
        );
        assert_eq!(discovery(&h).errors["AccessDeniedException"], 1);
        world.denied.lock().unwrap().clear();
        // The next refresh, one interval (± 10 %) on, finds both.
        tokio::time::sleep(Duration::from_secs(66)).await;
        assert_eq!(world.count("ListTables", None), 2);
        assert_eq!(h.polled().len(), 2);
        assert!(h.store.waiting().is_empty());
        assert_eq!(discovery(&h).tables, Some(2));
        // Churn: b is deleted, c created; the next refresh follows.
        world.remove(DEFAULT, "us-east-1", "b");
        world.put(DEFAULT, "us-east-1", &["c"]);
        tokio::time::sleep(Duration::from_secs(66)).await;
        assert_eq!(world.count("ListTables", None), 3);
        assert_eq!(h.tables(), ["a", "c"].map(String::from).into());
        assert_eq!(
            h.polled(),
            set(&[
                (STS_ACCOUNT, "us-east-1", "a"),
                (STS_ACCOUNT, "us-east-1", "c")
            ])
        );
        // A failing refresh keeps the last list, and is counted.
        world.denied.lock().unwrap().insert(scope);
        tokio::time::sleep(Duration::from_secs(66)).await;
        assert_eq!(world.count("ListTables", None), 4);
        assert_eq!(discovery(&h).errors["AccessDeniedException"], 2);
        assert_eq!(h.tables(), ["a", "c"].map(String::from).into());
        assert_eq!(h.stop().await.0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn reloads_keep_add_and_remove_tables_and_kept_ones_keep_their_schedule() {
        let world = Arc::new(World::default());
        world.put(DEFAULT, "us-east-1", &["kept", "removed", "added"]);
        let config = |tables: &str| {
            format!("poll_interval: 60s\nmax_attempts: 1\nmax_requests_per_second: 100\ntargets:\n  - region: us-east-1\n    tables: [{tables}]\n    discovery:\n      include: [\"^none$\"]\n      refresh_interval: 10m\n")
        };
        let h = start(&world, &config("kept, removed"), GRACE);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(h.polled().len(), 2);
        let describe = "DescribeKinesisStreamingDestination";
        assert_eq!(world.count("ListTables", None), 1);
        h.reload(&config("kept, added")).await;
        assert_eq!(h.tables(), ["added", "kept"].map(String::from).into());
        assert_eq!(
            world.count(describe, Some("added")),
            1,
            "a new table at once"
        );
        assert_eq!(
            world.count(describe, Some("kept")),
            1,
            "a kept table not early"
        );
        assert_eq!(
            world.count("ListTables", None),
            1,
            "a kept refresh not early"
        );
        // One interval on, kept is polled again, and removed never is.
        tokio::time::sleep(Duration::from_secs(70)).await;
        assert_eq!(world.count(describe, Some("kept")), 2);
        assert_eq!(world.count(describe, Some("removed")), 1);
        assert_eq!(h.telemetry.task_restarts("scope"), 0);
        // An unchanged file and an invalid one change nothing.
        let before = world.calls.lock().unwrap().len();
        h.reload(&config("kept, added")).await;
        h.reload("targets: []\nbogus: 1\n").await;
        assert_eq!(world.calls.lock().unwrap().len(), before);
        assert_eq!(h.tables(), ["added", "kept"].map(String::from).into());
        // A reload that drops the last table and the discovery stops the
        // scope and its series.
        h.reload("max_attempts: 1\ntargets:\n  - region: eu-west-1\n    tables: [elsewhere]\n")
            .await;
        assert!(h.tables().contains("elsewhere"));
        let key = ScopeKey {
            account_id: STS_ACCOUNT.into(),
            region: "us-east-1".into(),
        };
        assert!(h.store.scope_state(&key).is_none());
        let in_old_scope = || {
            let calls = world.calls.lock().unwrap();
            calls.iter().filter(|c| c.2 == "us-east-1").count()
        };
        let before = in_old_scope();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(in_old_scope(), before, "nothing runs for the old scope");
        assert_eq!(h.stop().await.0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn each_service_s_budget_is_the_lowest_its_targets_allow_and_every_call_is_counted() {
        let world = Arc::new(World::default());
        world.put(DEFAULT, "us-east-1", &["orders", "payments", "audit"]);
        let h = start(
            &world,
            "poll_interval: 1h\nmax_attempts: 1\nkinesis_max_requests_per_second: 4\ntargets:\n\
             \x20 - region: us-east-1\n    tables: [orders, payments]\n    max_requests_per_second: 20\n    kinesis_max_requests_per_second: 3\n\
             \x20 - region: us-east-1\n    tables: [audit]\n    export_tags: [team]\n    cdc_metrics: {interval: 1h}\n",
            GRACE,
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        let scope = ScopeKey {
            account_id: STS_ACCOUNT.into(),
            region: "us-east-1".into(),
        };
        let state = h.store.scope_state(&scope).unwrap();
        let rates: Vec<(Service, f64)> = (state.budgets.iter())
            .map(|(service, budget)| (*service, budget.rate_limit))
            .collect();
        assert_eq!(
            rates,
            [
                (Service::DynamoDb, 20.0),
                (Service::Kinesis, 3.0),
                (Service::CloudWatch, 5.0)
            ]
        );
        // Every request the fake saw is counted under its service and
        // operation, and nothing else is.
        let mut counted: Vec<(Service, String, u64)> = Vec::new();
        for (service, operations) in &state.requests {
            for (operation, n) in operations {
                counted.push((*service, operation.clone(), *n));
            }
        }
        let made = |op: &str| world.count(op, None) as u64;
        assert_eq!(
            counted,
            [
                (
                    Service::DynamoDb,
                    "DescribeKinesisStreamingDestination".into(),
                    3
                ),
                (
                    Service::DynamoDb,
                    "ListTagsOfResource".into(),
                    made("ListTagsOfResource")
                ),
                (Service::Kinesis, "DescribeStreamSummary".into(), 3),
                (
                    Service::CloudWatch,
                    "ListMetrics".into(),
                    made("ListMetrics")
                ),
                (Service::Sts, "GetCallerIdentity".into(), 1),
            ]
        );
        assert_eq!(made("DescribeKinesisStreamingDestination"), 3);
        assert_eq!(made("DescribeStreamSummary"), 3);
        assert_eq!(
            made("ListTagsOfResource"),
            1,
            "only audit's target reads tags"
        );
        assert_eq!(made("ListMetrics"), 4, "one listing per CDC metric");
        assert_eq!(world.sts_calls.lock().unwrap().len(), 1);
        assert_eq!(h.stop().await.0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_scope_removed_with_a_call_in_flight_drains_and_stays_gone() {
        let world = Arc::new(World::default());
        world.put(DEFAULT, "us-east-1", &["slow"]);
        world.put(DEFAULT, "eu-west-1", &["other"]);
        (world.latency.lock().unwrap()).insert("slow".into(), Duration::from_secs(3));
        let config = |region: &str, table: &str| {
            format!("max_attempts: 1\ntargets:\n  - region: {region}\n    tables: [{table}]\n")
        };
        let h = start(&world, &config("us-east-1", "slow"), GRACE);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(world.in_flight.load(Ordering::SeqCst), 1);
        h.reload(&config("eu-west-1", "other")).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        // The call in flight finished (not aborted), and neither it nor
        // its scope's counters brought the removed scope back.
        assert_eq!(world.in_flight.load(Ordering::SeqCst), 0);
        let gone = ScopeKey {
            account_id: STS_ACCOUNT.into(),
            region: "us-east-1".into(),
        };
        assert!(h.store.scope_state(&gone).is_none());
        assert_eq!(h.tables(), ["other"].map(String::from).into());
        assert_eq!(h.polled(), set(&[(STS_ACCOUNT, "eu-west-1", "other")]));
        assert_eq!(h.stop().await.0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_drains_every_scope_at_once_and_leaves_nothing_running() {
        // Three scopes at one request every 100 s: each has a call that
        // hangs ("hung") and, by 31 s, one waiting for a token ("waiting").
        let world = Arc::new(World::default());
        let regions = ["us-east-1", "eu-west-1", "ap-southeast-2"];
        for region in regions {
            world.put(DEFAULT, region, &["hung", "waiting"]);
        }
        world
            .latency
            .lock()
            .unwrap()
            .insert("hung".into(), Duration::from_secs(3600));
        let h = start(
            &world,
            "poll_interval: 60s\nrequest_timeout: 10m\nmax_attempts: 1\nmax_requests_per_second: 0.01\ntargets:\n  - regions: [us-east-1, eu-west-1, ap-southeast-2]\n    tables: [hung, waiting]\n",
            GRACE,
        );
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(world.in_flight.load(Ordering::SeqCst), 3);
        let clients: Vec<_> = {
            let target = &config::load(&h.path).unwrap().targets[0];
            let policy = CallPolicy::of(&config::load(&h.path).unwrap(), target);
            let mut clients = Vec::new();
            for region in regions {
                clients.push(
                    h.factory
                        .scope(target, region, policy, &Budget::new(1.0, 1))
                        .await
                        .unwrap()
                        .client,
                );
            }
            clients
        };
        let (world, store) = (Arc::clone(&h.world), Arc::clone(&h.store));
        let (aborted, took) = h.stop().await;
        // The token waits ended at once; the hung calls were aborted after
        // one grace period, the three scopes side by side (not 15 s).
        assert_eq!(took, GRACE);
        assert_eq!(aborted, 3);
        assert_eq!(world.in_flight.load(Ordering::SeqCst), 0);
        assert_eq!(
            world.count("DescribeKinesisStreamingDestination", Some("waiting")),
            0
        );
        store.visit(|s| {
            assert!(
                s.errors.is_empty(),
                "nothing recorded for a call never made: {s:?}"
            );
        });
        // Nothing is left running: nothing but this test holds a client
        // (no task, job or runner; the factory went with the harness), and
        // no call comes later.
        for client in &clients {
            assert_eq!(Arc::strong_count(client), 1);
        }
        let calls = world.calls.lock().unwrap().len();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(world.calls.lock().unwrap().len(), calls);
    }
}
