//! The fleet: which tables are polled, by which client, in which (account,
//! region) scope. A *unit* is one config target in one of its regions; it
//! has a client, an account, the target's explicit tables for that region,
//! and, with `discovery`, the tables its last refresh found. The fleet
//! merges every unit's tables into one job list per scope, keeps one
//! [`ScopeRunner`] per scope, and recomputes the lists whenever something
//! changes: a reload (SIGHUP), a discovery refresh, an account lookup that
//! finished late.
//!
//! - Accounts: from the role ARN when the target assumes a role (the role's
//!   credentials come from aws-config's assume-role provider and are
//!   refreshed before they expire), else from STS `GetCallerIdentity`,
//!   asked once per target and remembered across reloads. A table given as
//!   an ARN is labelled with the ARN's account.
//! - Scopes live across reloads: a reload that keeps a table keeps its
//!   schedule and its budget; a scope that no longer has tables stops and
//!   its series go.
//! - A failed discovery refresh (`ListTables` failed) keeps the last known
//!   list and is counted; one that finds a table gone drops its series. A
//!   table whose tags could not be read keeps its last decision (see
//!   [`discovery`]), and the error is counted with the scope's discovery
//!   errors.
//! - Readiness waits for every account lookup and for the first
//!   *successful* refresh of every unit with discovery, and names them.
//! - A reload whose file parses to the running config changes nothing.
//! - Sharding: a unit only keeps the tables this replica owns.
//! - Every long-lived task (scope runners, discovery refreshes, CDC
//!   readers, account lookups) runs under [`supervise`], so a panic is
//!   logged, counted and followed by a restart; the fleet owns and waits
//!   for all of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::aws::budget::Budget;
use crate::aws::{self, CallPolicy, ClientOptions, PollError, SdkClient};
use crate::config::{self, Config, Role, Target};
use crate::exposition::metrics::Telemetry;
use crate::poll::cdc::CdcReader;
use crate::poll::discovery::{self, Refresh};
use crate::poll::scheduler::{Jobs, PollJob, ScopeRunner};
use crate::poll::supervise::supervise;
use crate::state::store::Store;
use crate::state::{unix_now, Name, ScopeKey, Shard, TableKey};

/// The account used for a loopback endpoint (DynamoDB Local, a simulator)
/// when it cannot tell one: such endpoints have no real account.
pub const LOCAL_ACCOUNT_ID: &str = "000000000000";

/// How long to wait before asking STS again after a failed lookup.
const ACCOUNT_RETRY: Duration = Duration::from_secs(30);

/// Everything the fleet needs that does not change with the config file.
pub struct FleetSettings {
    pub shared: SdkConfig,
    pub options: ClientOptions,
    pub shard: Shard,
    pub store: Arc<Store>,
    pub telemetry: Arc<Telemetry>,
    /// How long polls in flight may take to finish on shutdown.
    pub grace: Duration,
    /// The file the config came from; `None` turns reloads into a logged no-op.
    pub config_path: Option<PathBuf>,
}

/// Which credentials a target signs with: they decide its account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Identity {
    role: Option<String>,
    endpoint_url: Option<String>,
}

struct Unit {
    /// Shared by the target's units (one per region): its table list can
    /// be thousands of entries.
    target: Arc<Target>,
    region: Name,
    client: Arc<SdkClient>,
    /// `None` until the account is known.
    account: Option<Name>,
    /// `None` until the first discovery refresh succeeded (or without
    /// discovery); readiness waits for it. Sorted.
    discovered: Option<Vec<Name>>,
    /// The tables the last successful refresh could not decide on, with
    /// their codes: they are warned about again only when this changes.
    undecided: Vec<(Name, String)>,
    /// When the last refresh finished; a reload that keeps the unit waits
    /// out its refresh interval from there instead of listing again at once.
    refreshed_at: Option<tokio::time::Instant>,
    /// With `cdc_metrics`: the tables its CloudWatch reader covers.
    cdc_tables: Option<watch::Sender<Vec<Name>>>,
}

/// What a unit's discovery found and when, keyed across a reload by
/// (identity, region, filters).
type Carried = (Option<Vec<Name>>, Option<tokio::time::Instant>);

struct ScopeHandle {
    jobs: watch::Sender<Jobs<SdkClient>>,
    budget: Arc<Budget>,
    shutdown: CancellationToken,
    /// The supervised runner; `None` if shutdown came during a restart.
    task: JoinHandle<Option<usize>>,
}

/// What the fleet's background tasks report.
enum Event {
    Account {
        generation: u64,
        identity: Identity,
        account: String,
    },
    Discovered {
        generation: u64,
        unit: usize,
        outcome: Result<Refresh, PollError>,
    },
}

/// The running fleet.
pub struct Fleet {
    settings: FleetSettings,
    config: Config,
    units: Vec<Unit>,
    scopes: HashMap<ScopeKey, ScopeHandle>,
    accounts: HashMap<Identity, Name>,
    credentials: HashMap<(String, String), SharedCredentialsProvider>,
    generation: u64,
    events: mpsc::UnboundedSender<Event>,
    /// The supervised account lookups, discovery refreshes and CDC readers
    /// of every generation, until they end.
    tasks: JoinSet<()>,
}

impl Fleet {
    /// Run the fleet for `config` and every valid reload until `root` is
    /// cancelled. Returns the number of polls aborted at the end.
    pub async fn run(
        settings: FleetSettings,
        config: Config,
        root: CancellationToken,
        mut reloads: mpsc::Receiver<()>,
    ) -> usize {
        let (events, mut inbox) = mpsc::unbounded_channel();
        let mut fleet = Fleet {
            settings,
            config: config.clone(),
            units: Vec::new(),
            scopes: HashMap::new(),
            accounts: HashMap::new(),
            credentials: HashMap::new(),
            generation: 0,
            events,
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
                Some(event) = inbox.recv() => fleet.handle(event, &generation),
                // Tasks of cancelled generations end here.
                Some(_) = fleet.tasks.join_next(), if !fleet.tasks.is_empty() => {}
            }
        }
        generation.cancel();
        let mut aborted = 0;
        for (_, scope) in fleet.scopes.drain() {
            scope.shutdown.cancel();
            aborted += scope.task.await.ok().flatten().unwrap_or(0);
        }
        let grace = fleet.settings.grace;
        let drained = tokio::time::timeout(grace, async {
            while fleet.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                tasks = fleet.tasks.len(),
                "background tasks still running after the grace period; aborting them"
            );
            fleet.tasks.shutdown().await;
        }
        aborted
    }

    /// Set up the units of `config` and start whatever they need.
    async fn start(&mut self, config: Config, generation: &CancellationToken) {
        self.generation += 1;
        self.config = config;
        // What discovery found survives a reload of the same unit, so its
        // tables keep their state and no listing burst follows a SIGHUP.
        let previous: HashMap<(Identity, Name, String), Carried> = self
            .units
            .drain(..)
            .filter_map(|u| {
                let filters = format!("{:?}", u.target.discovery.as_ref()?);
                Some((
                    (identity_of(&u.target), u.region, filters),
                    (u.discovered, u.refreshed_at),
                ))
            })
            .collect();
        let targets = self.config.targets.clone();
        for target in targets.into_iter().map(Arc::new) {
            let target = &target;
            let credentials = self.role_credentials(target).await;
            let identity = identity_of(target);
            let known = match &target.role {
                Some(role) => Some(Name::from(role.account_id.as_str())),
                None => self.accounts.get(&identity).cloned(),
            };
            if known.is_none() && !self.accounts.contains_key(&identity) {
                self.lookup_account(target, identity.clone(), generation);
            }
            for region in &target.regions {
                let policy = self.policy(target);
                let client = Arc::new(SdkClient::new(
                    &self.settings.shared,
                    target,
                    region,
                    credentials.clone(),
                    &self.settings.options,
                    policy.attempt_timeout(),
                ));
                let region = Name::from(region.as_str());
                let carried = target.discovery.as_ref().and_then(|d| {
                    previous.get(&(identity.clone(), region.clone(), format!("{d:?}")))
                });
                let (discovered, refreshed_at) = carried.cloned().unwrap_or((None, None));
                self.units.push(Unit {
                    target: Arc::clone(target),
                    region,
                    client,
                    account: known.clone(),
                    discovered,
                    undecided: Vec::new(),
                    refreshed_at,
                    cdc_tables: None,
                });
            }
        }
        // Units whose account was already known start discovering now;
        // the others when their lookup reports.
        for index in 0..self.units.len() {
            if self.units[index].account.is_some() {
                self.start_discovery(index, generation);
                self.start_cdc(index, generation);
            }
        }
        self.rebuild();
    }

    fn policy(&self, target: &Target) -> CallPolicy {
        CallPolicy {
            max_attempts: self.config.max_attempts,
            timeout: target.request_timeout,
        }
    }

    /// The assumed-role credentials of a target (one provider per role and
    /// region, kept across reloads so its cache survives), or `None`.
    async fn role_credentials(&mut self, target: &Target) -> Option<SharedCredentialsProvider> {
        let role = target.role.as_ref()?;
        let region = target.regions.first()?.clone();
        let key = (format!("{role:?}"), region.clone());
        if let Some(provider) = self.credentials.get(&key) {
            return Some(provider.clone());
        }
        let shared = sts_config(&self.settings.shared, target);
        let provider = aws::role_credentials(&shared, role, &region).await;
        self.credentials.insert(key, provider.clone());
        Some(provider)
    }

    /// Ask STS which account a role-less target's credentials belong to, in
    /// the background, until it answers.
    fn lookup_account(
        &mut self,
        target: &Target,
        identity: Identity,
        generation: &CancellationToken,
    ) {
        let shared = sts_config(&self.settings.shared, target);
        let region = target.regions.first().cloned().unwrap_or_default();
        let local = target
            .endpoint_url
            .as_deref()
            .is_some_and(aws::is_loopback_endpoint);
        let policy = self.policy(target);
        // Like the DynamoDB client of such a target: a loopback endpoint
        // gets local credentials unless the caller gave some.
        let credentials = (local && self.settings.options.static_credentials.is_none())
            .then(aws::local_endpoint_credentials);
        let events = self.events.clone();
        let generation_id = self.generation;
        let cancel = generation.clone();
        let make = move || {
            let (shared, region, credentials) =
                (shared.clone(), region.clone(), credentials.clone());
            let (events, cancel, identity) = (events.clone(), cancel.clone(), identity.clone());
            async move {
                let mut failures = 0u32;
                let account = loop {
                    let outcome = tokio::select! {
                        () = cancel.cancelled() => return,
                        outcome = aws::caller_account(&shared, &region, credentials.clone(), policy) => outcome,
                    };
                    match outcome {
                        Ok(account) => break account,
                        Err(err) if local => {
                            tracing::warn!(error = %err, account_id = LOCAL_ACCOUNT_ID,
                            "the loopback endpoint's account is unknown (STS GetCallerIdentity failed); using a placeholder");
                            break LOCAL_ACCOUNT_ID.to_string();
                        }
                        Err(err) => {
                            failures += 1;
                            if failures == 1 {
                                tracing::error!(region = %region, code = err.code(), error = %err,
                                "cannot tell the account of a target (STS GetCallerIdentity); its tables wait until it answers");
                            } else {
                                tracing::debug!(error = %err, "STS GetCallerIdentity failed again");
                            }
                            tokio::select! {
                                () = cancel.cancelled() => return,
                                () = tokio::time::sleep(ACCOUNT_RETRY) => {}
                            }
                        }
                    }
                };
                let _ = events.send(Event::Account {
                    generation: generation_id,
                    identity,
                    account,
                });
            }
        };
        let telemetry = Arc::clone(&self.settings.telemetry);
        let detail = target.regions.first().cloned().unwrap_or_default();
        let cancel = generation.clone();
        self.tasks.spawn(async move {
            supervise("account", detail, telemetry, cancel, make).await;
        });
    }

    /// Start the refresh loop of a unit with discovery, once its account is known.
    fn start_discovery(&mut self, index: usize, generation: &CancellationToken) {
        let unit = &self.units[index];
        let (Some(filters), Some(account)) = (unit.target.discovery.clone(), unit.account.clone())
        else {
            return;
        };
        let scope = ScopeKey {
            account_id: account,
            region: unit.region.clone(),
        };
        let rate = unit.target.max_requests_per_second;
        let client = Arc::clone(&unit.client);
        let policy = self.policy(&unit.target);
        let first_wait = unit
            .refreshed_at
            .map(|at| filters.refresh_interval.saturating_sub(at.elapsed()))
            .unwrap_or_default();
        let budget = self.budget(&scope, rate);
        let shard = self.settings.shard;
        let events = self.events.clone();
        let generation_id = self.generation;
        let cancel = generation.clone();
        let detail = format!("{}/{}", scope.account_id, scope.region);
        // After a restart the backoff was the wait: refresh at once.
        let mut first_wait = Some(first_wait);
        let make = move || {
            let wait = first_wait.take().unwrap_or_default();
            let (client, budget, filters) =
                (Arc::clone(&client), Arc::clone(&budget), filters.clone());
            let (scope, events, cancel) = (scope.clone(), events.clone(), cancel.clone());
            async move {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                loop {
                    let outcome = tokio::select! {
                        () = cancel.cancelled() => return,
                        outcome = discovery::discover(&*client, &budget, policy, &filters, &scope, &shard) => outcome,
                    };
                    let sent = events.send(Event::Discovered {
                        generation: generation_id,
                        unit: index,
                        outcome,
                    });
                    if sent.is_err() {
                        return;
                    }
                    let pause = filters
                        .refresh_interval
                        .mul_f64(0.9 + 0.2 * fastrand::f64());
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        };
        let telemetry = Arc::clone(&self.settings.telemetry);
        let cancel = generation.clone();
        self.tasks.spawn(async move {
            supervise("discovery", detail, telemetry, cancel, make).await;
        });
    }

    /// Start the CloudWatch reader of a unit with `cdc_metrics`, once its
    /// account is known. It reads the tables `rebuild` hands it.
    fn start_cdc(&mut self, index: usize, generation: &CancellationToken) {
        let unit = &self.units[index];
        let (Some(cdc), Some(account)) = (unit.target.cdc_metrics.clone(), unit.account.clone())
        else {
            return;
        };
        let scope = ScopeKey {
            account_id: account,
            region: unit.region.clone(),
        };
        let refresh = unit
            .target
            .discovery
            .as_ref()
            .map_or(config::DEFAULT_REFRESH_INTERVAL, |d| d.refresh_interval);
        let client = Arc::clone(&unit.client);
        let policy = self.policy(&unit.target);
        let rate = unit.target.max_requests_per_second;
        let budget = self.budget(&scope, rate);
        let (tables, receiver) = watch::channel(Vec::new());
        self.units[index].cdc_tables = Some(tables);
        let store = Arc::clone(&self.settings.store);
        let detail = format!("{}/{}", scope.account_id, scope.region);
        let cancel = generation.clone();
        let make = move || {
            let reader = CdcReader {
                scope: scope.clone(),
                client: Arc::clone(&client),
                budget: Arc::clone(&budget),
                policy,
                store: Arc::clone(&store),
                interval: cdc.interval,
                refresh,
            };
            reader.run(receiver.clone(), cancel.clone())
        };
        let telemetry = Arc::clone(&self.settings.telemetry);
        let cancel = generation.clone();
        self.tasks.spawn(async move {
            supervise("cdc", detail, telemetry, cancel, make).await;
        });
    }

    /// The budget of a scope, created on first use; its rate is the lowest
    /// any target using the scope allows.
    fn budget(&mut self, scope: &ScopeKey, rate: f64) -> Arc<Budget> {
        let concurrency = self.config.concurrency;
        let handle = self.scope_handle(scope, rate, concurrency);
        Arc::clone(&handle.budget)
    }

    fn scope_handle(&mut self, scope: &ScopeKey, rate: f64, concurrency: usize) -> &ScopeHandle {
        let settings = &self.settings;
        self.scopes.entry(scope.clone()).or_insert_with(|| {
            let budget = Budget::new(rate, concurrency);
            let (jobs, receiver) = watch::channel(Vec::new());
            let shutdown = CancellationToken::new();
            let make = {
                let (key, budget) = (scope.clone(), Arc::clone(&budget));
                let (store, telemetry) =
                    (Arc::clone(&settings.store), Arc::clone(&settings.telemetry));
                let (grace, shutdown) = (settings.grace, shutdown.clone());
                move || {
                    let runner = ScopeRunner {
                        key: key.clone(),
                        budget: Arc::clone(&budget),
                        store: Arc::clone(&store),
                        telemetry: Arc::clone(&telemetry),
                        concurrency,
                        grace,
                    };
                    // A clone sees the current job list: the runner reads it first.
                    runner.run(receiver.clone(), shutdown.clone())
                }
            };
            let task = tokio::spawn(supervise(
                "scope",
                format!("{}/{}", scope.account_id, scope.region),
                Arc::clone(&settings.telemetry),
                shutdown.clone(),
                make,
            ));
            ScopeHandle {
                jobs,
                budget,
                shutdown,
                task,
            }
        })
    }

    fn handle(&mut self, event: Event, generation: &CancellationToken) {
        match event {
            Event::Account {
                generation: id,
                identity,
                account,
            } => {
                tracing::info!(account_id = %account, endpoint = ?identity.endpoint_url, "target account resolved");
                let account = Name::from(account);
                self.accounts.insert(identity.clone(), account.clone());
                if id != self.generation {
                    return;
                }
                for index in 0..self.units.len() {
                    let unit = &mut self.units[index];
                    if unit.account.is_some() || identity_of(&unit.target) != identity {
                        continue;
                    }
                    unit.account = Some(account.clone());
                    self.start_discovery(index, generation);
                    self.start_cdc(index, generation);
                }
                self.rebuild();
            }
            Event::Discovered {
                generation: id,
                unit,
                outcome,
            } => {
                if id != self.generation {
                    return;
                }
                let Some(state) = self.units.get_mut(unit) else {
                    return;
                };
                state.refreshed_at = Some(tokio::time::Instant::now());
                let scope = ScopeKey {
                    account_id: state.account.clone().unwrap_or_default(),
                    region: state.region.clone(),
                };
                let now = unix_now();
                match outcome {
                    Ok(refresh) => {
                        let tables = refresh.tables(state.discovered.as_deref());
                        let count = tables.len();
                        let undecided: Vec<(Name, String)> = (refresh.undecided.iter())
                            .map(|(name, err)| (name.clone(), err.code().to_string()))
                            .collect();
                        log_undecided(&scope, &refresh, undecided != state.undecided);
                        state.undecided = undecided;
                        // An unchanged list is kept, and with it the names
                        // the store and the scheduler share.
                        if state.discovered.as_ref() != Some(&tables) {
                            tracing::info!(account_id = %scope.account_id, region = %scope.region, tables = count, "discovery refreshed the table list");
                            state.discovered = Some(tables);
                        }
                        self.settings.store.update_scope(&scope, |s| {
                            for (_, err) in &refresh.undecided {
                                s.record_discovery_table_error(err.code());
                            }
                            s.record_discovery(Ok(count), now);
                        });
                    }
                    Err(err) => {
                        // An unknown code was warned about (at most hourly)
                        // where it arrived.
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
        }
    }

    /// Recompute every scope's job list from the units, start and stop
    /// scope runners, and make the store hold exactly the polled tables.
    fn rebuild(&mut self) {
        let mut by_scope: BTreeMap<ScopeKey, Jobs<SdkClient>> = BTreeMap::new();
        let mut rates: HashMap<ScopeKey, f64> = HashMap::new();
        let mut seen: BTreeSet<TableKey> = BTreeSet::new();
        let shard = self.settings.shard;
        // What readiness waits for: accounts not known yet, and units with
        // discovery that never had a successful refresh.
        let mut waiting: BTreeSet<String> = BTreeSet::new();
        for unit in &self.units {
            let Some(account) = &unit.account else {
                waiting.insert(format!(
                    "the account of a target in {} (STS GetCallerIdentity)",
                    unit.region
                ));
                continue;
            };
            if unit.target.discovery.is_some() && unit.discovered.is_none() {
                waiting.insert(format!("discovery in {account}/{}", unit.region));
            }
            let policy = CallPolicy {
                max_attempts: self.config.max_attempts,
                timeout: unit.target.request_timeout,
            };
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
                let rate = rates.entry(scope.clone()).or_insert(f64::INFINITY);
                *rate = rate.min(unit.target.max_requests_per_second);
                by_scope.entry(scope).or_default().push(Arc::new(PollJob {
                    key,
                    table,
                    client: Arc::clone(&unit.client),
                    interval: unit.target.poll_interval,
                    policy,
                }));
            }
        }
        // Scopes that only discover (no table yet) keep their budget and series.
        for unit in &self.units {
            if let (Some(account), Some(_)) = (&unit.account, &unit.target.discovery) {
                let scope = ScopeKey {
                    account_id: account.clone(),
                    region: unit.region.clone(),
                };
                let rate = rates.entry(scope.clone()).or_insert(f64::INFINITY);
                *rate = rate.min(unit.target.max_requests_per_second);
                by_scope.entry(scope).or_default();
            }
        }
        // Each CloudWatch reader covers its unit's polled tables of its own
        // account (another account's metrics need that account's role).
        for unit in &self.units {
            let (Some(sender), Some(account)) = (&unit.cdc_tables, &unit.account) else {
                continue;
            };
            let mine: Vec<Name> = unit
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
                })
                .collect();
            // Only a real change wakes the reader.
            sender.send_if_modified(|current| {
                let changed = *current != mine;
                if changed {
                    *current = mine;
                }
                changed
            });
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
                handle.shutdown.cancel();
                // Its polls in flight drain; shutdown waits for them too.
                self.tasks.spawn(async move {
                    let _ = handle.task.await;
                });
                tracing::info!(account_id = %scope.account_id, region = %scope.region, "scope no longer polled; its series go");
            }
            self.settings.telemetry.remove_scope(&scope);
        }
        self.settings.store.retain_scopes(&wanted);
        let concurrency = self.config.concurrency;
        for (scope, jobs) in by_scope {
            let rate = rates
                .get(&scope)
                .copied()
                .unwrap_or(self.config.max_requests_per_second);
            let handle = self.scope_handle(&scope, rate, concurrency);
            handle.budget.set_max_rate(rate);
            handle.jobs.send_replace(jobs);
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

fn identity_of(target: &Target) -> Identity {
    Identity {
        role: target.role.as_ref().map(|r: &Role| r.arn.clone()),
        endpoint_url: target.endpoint_url.clone(),
    }
}

/// The SDK configuration STS calls of `target` use: the shared one, with
/// the loopback rule of [`aws::local_service_endpoint`].
fn sts_config(shared: &SdkConfig, target: &Target) -> SdkConfig {
    match aws::local_service_endpoint(target, "STS") {
        Some(url) => shared.to_builder().endpoint_url(url).build(),
        None => shared.clone(),
    }
}
