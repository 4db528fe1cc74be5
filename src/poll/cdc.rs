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
//! Every call takes a token from the scope's budget.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::budget::Budget;
use crate::aws::cloudwatch::{CdcSeries, Query, MAX_QUERIES};
use crate::aws::{self, CallPolicy, CloudWatchApi, PollError};
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

/// One target-region's CDC reader.
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
    /// Read every `interval` until `shutdown`, for the tables `tables` names,
    /// and at once when that list changes (a discovery refresh, a reload),
    /// so new tables do not wait a whole interval.
    pub async fn run(self, mut tables: watch::Receiver<Vec<Name>>, shutdown: CancellationToken) {
        let mut series: Option<(Instant, Vec<CdcSeries>)> = None;
        let mut estimated = false;
        loop {
            let wanted: BTreeSet<Name> = tables.borrow_and_update().iter().cloned().collect();
            if !wanted.is_empty() {
                let stale = series
                    .as_ref()
                    .is_none_or(|(at, _)| at.elapsed() >= self.refresh);
                if stale {
                    match self.list_series().await {
                        Ok(found) => series = Some((Instant::now(), found)),
                        Err(err) => self.failed(&err),
                    }
                }
                if let Some((_, known)) = &series {
                    let mine: Vec<&CdcSeries> = known
                        .iter()
                        .filter(|s| wanted.contains(s.table.as_str()))
                        .collect();
                    if !estimated {
                        estimated = true;
                        self.log_cost(mine.len());
                    }
                    if let Err(err) = self.read(&mine, &wanted).await {
                        self.failed(&err);
                    }
                }
            }
            let pause = self.interval.mul_f64(0.9 + 0.2 * fastrand::f64());
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
                changed = tables.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Every (metric, table, delegated operation) ListMetrics knows.
    async fn list_series(&self) -> Result<Vec<CdcSeries>, PollError> {
        let mut all = Vec::new();
        for (metric, _, _) in CDC_METRICS {
            let mut token = None;
            loop {
                let page = aws::call(&self.budget, self.policy, || {
                    self.client.list_cdc_series(metric, token.clone())
                })
                .await?;
                all.extend(page.items);
                match page.next {
                    Some(next) if Some(&next) != token.as_ref() => token = Some(next),
                    _ => break,
                }
            }
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
            let mut token = None;
            loop {
                let page = aws::call(&self.budget, self.policy, || {
                    self.client.latest_datapoints(
                        batch,
                        now - WINDOW.as_secs_f64(),
                        now,
                        token.clone(),
                    )
                })
                .await?;
                for result in page.items {
                    let slot = latest.entry(result.id).or_insert(None);
                    // Pages of one query: keep the newest datapoint.
                    if result.point.is_some_and(|p| slot.is_none_or(|s| p.1 > s.1)) {
                        *slot = result.point;
                    }
                }
                match page.next {
                    Some(next) if Some(&next) != token.as_ref() => token = Some(next),
                    _ => break,
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
        tracing::warn!(account_id = %self.scope.account_id, region = %self.scope.region,
            code = err.code(), error = %err, "reading CDC metrics from CloudWatch failed; the last values stay");
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
        calls: Mutex<Vec<usize>>,
    }

    impl CloudWatchApi for FakeCloudWatch {
        async fn list_cdc_series(
            &self,
            metric: &str,
            token: Option<String>,
        ) -> Result<Page<CdcSeries>, PollError> {
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
            _token: Option<String>,
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
            Ok(Page { items, next: None })
        }
    }

    fn reader(fake: FakeCloudWatch, store: &Arc<Store>) -> CdcReader<FakeCloudWatch> {
        CdcReader {
            scope: ScopeKey {
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
            },
            client: Arc::new(fake),
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
            calls: Mutex::new(Vec::new()),
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
            calls: Mutex::new(Vec::new()),
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
}
