//! Replication metrics from CloudWatch, for targets with `cdc_metrics`: the
//! four Kinesis-streaming metrics DynamoDB publishes in `AWS/DynamoDB`
//! (see [`metrics::CDC_METRICS`]), read for the tables this replica polls.
//!
//! - Which dimension sets exist is asked of `ListMetrics` (each metric
//!   name, every page), never guessed: the `DelegatedOperation` value is
//!   whatever CloudWatch lists. The lists are refreshed with discovery.
//! - The values come from `GetMetricData`, batched: up to
//!   [`MAX_QUERIES`] queries a call, so a cycle costs about
//!   ⌈series ÷ 500⌉ calls per scope, not one per table.
//! - The window reaches [`WINDOW`] back, wide enough for CloudWatch's delay;
//!   the newest datapoint is exported with its own timestamp. A series with
//!   no datapoint in the window is exported as no series, not as zero.
//!
//! A read is scheduled work of its scope ([`CdcJob`], run by the scope's
//! runner every `cdc_metrics.interval`, and at once when its table list
//! changes). Every call takes a token from the scope's budget; both
//! listings walk their pages through [`paginate::all_pages`], so a token
//! AWS repeats fails the round (counted in `cdc_errors_total{code=
//! "pagination"}`) instead of looping.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::aws::budget::Budget;
use crate::aws::cloudwatch::{CdcSeries, Query, MAX_QUERIES};
use crate::aws::paginate::{self, GET_METRIC_DATA, LIST_METRICS};
use crate::aws::{self, CallPolicy, CloudWatchApi, PollError, Request};
use crate::exposition::metrics::CDC_METRICS;
use crate::state::store::Store;
use crate::state::{unix_now, CdcPoint, Name, ScopeKey, TableKey};

/// How far back each GetMetricData call looks: CloudWatch publishes these
/// metrics with a delay of a few minutes.
pub const WINDOW: Duration = Duration::from_secs(20 * 60);
/// The period of each datapoint asked for: the metrics' one-minute
/// resolution.
pub const PERIOD_SECONDS: i32 = 60;
/// GetMetricData's price at the time of writing, US dollars per 1,000
/// metrics requested.
pub const PRICE_PER_THOUSAND: f64 = 0.01;

/// The CDC reads of one target in one region, as its scope runs them.
#[derive(Debug)]
pub struct CdcJob<C> {
    /// Names the reads across reloads (the target's identity and region).
    pub key: Name,
    pub client: Arc<C>,
    pub policy: CallPolicy,
    /// How often the values are read (`cdc_metrics.interval`).
    pub interval: Duration,
    /// How often ListMetrics is asked again (discovery's refresh interval).
    pub refresh: Duration,
    /// The tables read: the target's polled tables of its own account.
    pub tables: Vec<Name>,
}

/// What ListMetrics named, and when: kept between rounds.
#[derive(Debug, Clone)]
pub struct Listed {
    pub at: Instant,
    pub series: Arc<Vec<CdcSeries>>,
}

/// One round of a [`CdcJob`] in its scope.
pub struct CdcReader<C> {
    pub scope: ScopeKey,
    pub client: Arc<C>,
    pub budget: Arc<Budget>,
    pub policy: CallPolicy,
    pub store: Arc<Store>,
    /// How often the values are read (`cdc_metrics.interval`).
    pub interval: Duration,
    /// How often ListMetrics is asked again (discovery's refresh interval).
    pub refresh: Duration,
}

impl<C: CloudWatchApi> CdcReader<C> {
    /// Read the values of `tables`, listing the series again first when
    /// `listed` is older than `refresh` (or missing); returns what is
    /// listed now. A failed listing keeps the last one. Failures are
    /// recorded in the scope's `cdc_errors`; `estimate` logs what the
    /// reads will cost (the first round of a job).
    pub async fn round(
        &self,
        tables: &[Name],
        mut listed: Option<Listed>,
        estimate: bool,
    ) -> Option<Listed> {
        let wanted: BTreeSet<Name> = tables.iter().cloned().collect();
        if wanted.is_empty() {
            return listed;
        }
        let stale = listed
            .as_ref()
            .is_none_or(|l| l.at.elapsed() >= self.refresh);
        if stale {
            match self.list_series().await {
                Ok(found) => {
                    listed = Some(Listed {
                        at: Instant::now(),
                        series: Arc::new(found),
                    });
                }
                Err(err) => self.failed(&err),
            }
        }
        if let Some(known) = &listed {
            let mine: Vec<&CdcSeries> = known
                .series
                .iter()
                .filter(|s| wanted.contains(s.table.as_str()))
                .collect();
            if estimate {
                self.log_cost(mine.len());
            }
            if let Err(err) = self.read(&mine, &wanted).await {
                self.failed(&err);
            }
        }
        listed
    }

    /// Every (metric, table, delegated operation) ListMetrics knows.
    async fn list_series(&self) -> Result<Vec<CdcSeries>, PollError> {
        let mut all = Vec::new();
        for (metric, _, _) in CDC_METRICS {
            let series = paginate::all_pages(LIST_METRICS, |token| {
                aws::call(
                    &self.budget,
                    self.policy,
                    LIST_METRICS.request(),
                    move || self.client.list_cdc_series(metric, token.clone()),
                )
            })
            .await?;
            all.extend(series);
        }
        all.sort();
        all.dedup();
        Ok(all)
    }

    /// One round of GetMetricData over `series`, recorded into the store
    /// for every table in `tables` (tables without series lose theirs).
    async fn read(&self, series: &[&CdcSeries], tables: &BTreeSet<Name>) -> Result<(), PollError> {
        let now = unix_now();
        let queries: Vec<Query> = series
            .iter()
            .enumerate()
            .map(|(i, s)| Query {
                id: format!("q{i}"),
                series: (*s).clone(),
                stat: stat_of(&s.metric),
                period_seconds: PERIOD_SECONDS,
            })
            .collect();
        let mut latest: BTreeMap<String, Option<(f64, f64)>> = BTreeMap::new();
        for batch in queries.chunks(MAX_QUERIES) {
            // Every page asks for (and AWS bills) the batch's metrics.
            let request = Request {
                metrics: batch.len() as u64,
                ..GET_METRIC_DATA.request()
            };
            let results = paginate::all_pages(GET_METRIC_DATA, |token| {
                aws::call(&self.budget, self.policy, request, move || {
                    self.client.latest_datapoints(
                        batch,
                        now - WINDOW.as_secs_f64(),
                        now,
                        token.clone(),
                    )
                })
            })
            .await?;
            for result in results {
                let slot = latest.entry(result.id).or_insert(None);
                // Pages of one query: keep the newest datapoint.
                if result.point.is_some_and(|p| slot.is_none_or(|s| p.1 > s.1)) {
                    *slot = result.point;
                }
            }
        }
        let mut by_table: BTreeMap<&str, Vec<CdcPoint>> =
            tables.iter().map(|t| (&**t, Vec::new())).collect();
        for query in &queries {
            if let Some(points) = by_table.get_mut(query.series.table.as_str()) {
                points.push((
                    query.series.delegated_operation.clone(),
                    query.series.metric.clone(),
                    latest.get(&query.id).copied().flatten(),
                ));
            }
        }
        for (table, points) in by_table {
            let key = TableKey {
                account_id: self.scope.account_id.clone(),
                region: self.scope.region.clone(),
                table: Name::from(table),
            };
            self.store.record_cdc(&key, &points);
        }
        Ok(())
    }

    fn failed(&self, err: &PollError) {
        if matches!(err, PollError::Cancelled) {
            return;
        }
        let during = "CloudWatch CDC read";
        aws::warn_unknown_code(&self.scope.account_id, &self.scope.region, during, err);
        // An unknown code is warned about there, at most hourly.
        if err.unknown_code().is_none() {
            tracing::warn!(account_id = %self.scope.account_id, region = %self.scope.region,
            code = err.code(), error = %err, "reading CDC metrics from CloudWatch failed; the last values stay");
        }
        let code = err.code().to_string();
        self.store.update_scope(&self.scope, |scope| {
            *scope.cdc_errors.entry(code).or_insert(0) += 1;
        });
    }

    /// GetMetricData is billed per metric requested: say what this reader
    /// will cost.
    fn log_cost(&self, series: usize) {
        let per_day = series as f64 * 86_400.0 / self.interval.as_secs_f64();
        tracing::info!(account_id = %self.scope.account_id, region = %self.scope.region, series,
            interval = ?self.interval, metrics_per_day = per_day.round(),
            usd_per_day = per_day / 1000.0 * PRICE_PER_THOUSAND,
            "CloudWatch GetMetricData cost estimate (billed per metric requested; ListMetrics not included)");
    }
}

/// The statistic each metric is read with.
fn stat_of(metric: &str) -> &'static str {
    CDC_METRICS
        .iter()
        .find(|(name, _, _)| *name == metric)
        .map_or("Maximum", |(_, stat, _)| stat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::cloudwatch::Latest;
    use crate::aws::Page;
    use std::sync::Mutex;

    /// A CloudWatch with `tables` tables × the four metrics, all with the
    /// value 7 except `quiet`, which has no datapoints; records every call.
    struct FakeCloudWatch {
        tables: Vec<String>,
        quiet: String,
        list_page: usize,
        /// GetMetricData answers with tokens 0, 1, 0, 1...
        looping: bool,
        calls: Mutex<Vec<usize>>,
        /// ListMetrics calls so far.
        listings: std::sync::atomic::AtomicUsize,
        /// ListMetrics answers AccessDenied.
        deny_listing: std::sync::atomic::AtomicBool,
    }

    impl CloudWatchApi for FakeCloudWatch {
        async fn list_cdc_series(
            &self,
            metric: &str,
            token: Option<String>,
        ) -> Result<Page<CdcSeries>, PollError> {
            self.listings
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self.deny_listing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(PollError::Service {
                    code: "AccessDeniedException".into(),
                    message: "no".into(),
                });
            }
            let from: usize = token.map_or(0, |t| t.parse().unwrap());
            let items: Vec<CdcSeries> = self.tables[from..]
                .iter()
                .take(self.list_page)
                .map(|t| CdcSeries {
                    metric: metric.into(),
                    table: t.clone(),
                    delegated_operation: "PutRecords".into(),
                })
                .collect();
            let next =
                (from + items.len() < self.tables.len()).then(|| (from + items.len()).to_string());
            Ok(Page { items, next })
        }

        async fn latest_datapoints(
            &self,
            queries: &[Query],
            _start: f64,
            end: f64,
            token: Option<String>,
        ) -> Result<Page<Latest>, PollError> {
            assert!(queries.len() <= MAX_QUERIES);
            self.calls.lock().unwrap().push(queries.len());
            let items = queries
                .iter()
                .map(|q| Latest {
                    id: q.id.clone(),
                    point: (q.series.table != self.quiet).then_some((7.0, end - 120.0)),
                })
                .collect();
            let next = self.looping.then(|| {
                if token.as_deref() == Some("0") {
                    "1"
                } else {
                    "0"
                }
                .to_string()
            });
            Ok(Page { items, next })
        }
    }

    fn reader(fake: FakeCloudWatch, store: &Arc<Store>) -> CdcReader<FakeCloudWatch> {
        shared_reader(Arc::new(fake), store)
    }

    fn shared_reader(client: Arc<FakeCloudWatch>, store: &Arc<Store>) -> CdcReader<FakeCloudWatch> {
        CdcReader {
            scope: ScopeKey {
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
            },
            client,
            budget: Budget::new(1000.0, 4),
            policy: CallPolicy {
                max_attempts: 1,
                timeout: Duration::from_secs(5),
            },
            store: Arc::clone(store),
            interval: Duration::from_secs(300),
            refresh: Duration::from_secs(300),
        }
    }

    fn key(table: &str) -> TableKey {
        TableKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            table: table.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn twelve_hundred_tables_take_ten_calls() {
        let tables: Vec<String> = (0..1200).map(|i| format!("t{i:04}")).collect();
        let store = Arc::new(Store::new(tables.iter().map(|t| key(t))));
        let fake = FakeCloudWatch {
            tables: tables.clone(),
            quiet: String::new(),
            list_page: 500,
            looping: false,
            calls: Mutex::new(Vec::new()),
            listings: Default::default(),
            deny_listing: Default::default(),
        };
        let reader = reader(fake, &store);
        let wanted: BTreeSet<Name> = tables.iter().map(|t| Name::from(t.as_str())).collect();
        let series = reader.list_series().await.unwrap();
        assert_eq!(series.len(), 4800);
        let refs: Vec<&CdcSeries> = series.iter().collect();
        reader.read(&refs, &wanted).await.unwrap();
        let calls = reader.client.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 10, "⌈4800 ÷ 500⌉ GetMetricData calls");
        assert_eq!(calls.iter().sum::<usize>(), 4800);
        let state = store.state(&key("t0007")).unwrap();
        assert_eq!(state.cdc["PutRecords"].len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn no_datapoint_is_no_series_and_values_are_converted() {
        let tables = vec!["busy".to_string(), "quiet".to_string()];
        let store = Arc::new(Store::new(tables.iter().map(|t| key(t))));
        let fake = FakeCloudWatch {
            tables: tables.clone(),
            quiet: "quiet".into(),
            list_page: 1,
            looping: false,
            calls: Mutex::new(Vec::new()),
            listings: Default::default(),
            deny_listing: Default::default(),
        };
        let reader = reader(fake, &store);
        let series = reader.list_series().await.unwrap();
        let refs: Vec<&CdcSeries> = series.iter().collect();
        reader
            .read(
                &refs,
                &tables.iter().map(|t| Name::from(t.as_str())).collect(),
            )
            .await
            .unwrap();
        // Read through the page that serves them.
        let page = crate::exposition::page::Page::new(
            Arc::clone(&store),
            Arc::new(crate::exposition::metrics::Telemetry::new(false)),
        );
        let text: String = page
            .plain(crate::exposition::page::Format::Text)
            .await
            .iter()
            .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
            .collect();
        let of = |table: &str| -> String {
            let label = format!("{{table=\"{table}\",");
            text.lines()
                .filter(|l| l.contains(&label))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let busy = of("busy");
        assert!(busy.contains("dynamodb_kinesis_cdc_age_of_oldest_unreplicated_record_seconds{table=\"busy\",region=\"us-east-1\",account_id=\"123456789012\",delegated_operation=\"PutRecords\"} 0.007\n"), "{busy}");
        assert!(busy.contains("dynamodb_kinesis_cdc_failed_to_replicate_records{table=\"busy\",region=\"us-east-1\",account_id=\"123456789012\",delegated_operation=\"PutRecords\"} 7\n"));
        let quiet = of("quiet");
        assert!(
            !quiet.contains("dynamodb_kinesis_cdc_"),
            "no datapoint, no series: {quiet}"
        );
        assert_eq!(stat_of("AgeOfOldestUnreplicatedRecord"), "Maximum");
        assert_eq!(stat_of("ThrottledPutRecordCount"), "Sum");
    }

    #[tokio::test(start_paused = true)]
    async fn a_looping_token_fails_the_round_and_is_counted() {
        let tables = vec!["orders".to_string()];
        let store = Arc::new(Store::new(tables.iter().map(|t| key(t))));
        let fake = FakeCloudWatch {
            tables: tables.clone(),
            quiet: String::new(),
            list_page: 500,
            looping: true,
            calls: Mutex::new(Vec::new()),
            listings: Default::default(),
            deny_listing: Default::default(),
        };
        let reader = reader(fake, &store);
        let series = reader.list_series().await.unwrap();
        let refs: Vec<&CdcSeries> = series.iter().collect();
        let wanted = tables.iter().map(|t| Name::from(t.as_str())).collect();
        let err = reader.read(&refs, &wanted).await.unwrap_err();
        assert_eq!(err.code(), "pagination");
        // Tokens 0, 1, then 0 again: three pages, then the stop.
        assert_eq!(reader.client.calls.lock().unwrap().len(), 3);
        reader.failed(&err);
        let scope = store.scope_state(&reader.scope).unwrap();
        assert_eq!(scope.cdc_errors["pagination"], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_lists_once_per_refresh_and_a_failed_listing_keeps_the_last() {
        use std::sync::atomic::Ordering::SeqCst;
        let tables = vec!["orders".to_string(), "payments".to_string()];
        let store = Arc::new(Store::new(tables.iter().map(|t| key(t))));
        let fake = FakeCloudWatch {
            tables: tables.clone(),
            quiet: String::new(),
            list_page: 500,
            looping: false,
            calls: Mutex::new(Vec::new()),
            listings: Default::default(),
            deny_listing: Default::default(),
        };
        let reader = reader(fake, &store);
        let names: Vec<Name> = tables.iter().map(|t| Name::from(t.as_str())).collect();
        assert!(
            reader.round(&[], None, true).await.is_none(),
            "no tables, no call"
        );
        assert_eq!(reader.client.listings.load(SeqCst), 0);
        let listed = reader.round(&names[..1], None, true).await.unwrap();
        // One ListMetrics per CDC metric; one GetMetricData of orders' four.
        assert_eq!(reader.client.listings.load(SeqCst), 4);
        assert_eq!(*reader.client.calls.lock().unwrap(), [4]);
        assert_eq!(listed.series.len(), 8, "every table's series is listed");
        // Within the refresh interval the listing is reused, and a new
        // table's series are read from it.
        tokio::time::advance(Duration::from_secs(60)).await;
        let again = reader.round(&names, Some(listed), false).await.unwrap();
        assert_eq!(reader.client.listings.load(SeqCst), 4);
        assert_eq!(*reader.client.calls.lock().unwrap(), [4, 8]);
        assert_eq!(
            store.state(&key("payments")).unwrap().cdc["PutRecords"].len(),
            4
        );
        // Past it the series are listed again; a denied listing is counted
        // and the last listing stays in use.
        tokio::time::advance(reader.refresh).await;
        reader.client.deny_listing.store(true, SeqCst);
        let kept = reader
            .round(&names, Some(again.clone()), false)
            .await
            .unwrap();
        assert_eq!(kept.at, again.at);
        assert_eq!(reader.client.calls.lock().unwrap().len(), 3, "still read");
        let scope = store.scope_state(&reader.scope).unwrap();
        assert_eq!(scope.cdc_errors["AccessDeniedException"], 1);
        reader.failed(&PollError::Cancelled);
        let scope = store.scope_state(&reader.scope).unwrap();
        assert!(
            !scope.cdc_errors.contains_key("cancelled"),
            "never recorded"
        );
    }
}
