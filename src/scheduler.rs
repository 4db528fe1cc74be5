//! The poll loop. Every table gets its own task: first poll right at start,
//! then one every `poll_interval` (±10 % jitter per cycle, so tables that
//! start together drift apart instead of firing in lockstep). A semaphore
//! shared by all tasks bounds the calls in flight to `concurrency`, and each
//! call is bounded by its target's `request_timeout`, so a slow or failing
//! table costs other tables at most one permit for one timeout.
//!
//! On shutdown, tasks stop between polls; a poll in flight finishes (it is
//! bounded by its timeout) unless the grace period runs out first.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::{Destination, DestinationSource, PollError};
use crate::config::TableRef;
use crate::metrics::Telemetry;
use crate::state::{unix_now, TableKey};
use crate::store::Store;

/// Share of the poll interval by which each cycle is randomly stretched or
/// shortened.
const JITTER: f64 = 0.1;

/// The SDK enforces `request_timeout` itself; this outer bound only catches
/// what the SDK might not (and fake sources in tests), so it trails a little
/// to let the SDK's more precise error win.
const OUTER_TIMEOUT_SLACK: Duration = Duration::from_secs(1);

/// One table to poll, with the client that polls it.
#[derive(Debug)]
pub struct Job<S> {
    pub key: TableKey,
    pub table: TableRef,
    pub source: Arc<S>,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Everything the poll tasks share.
pub struct Scheduler {
    pub store: Arc<Store>,
    pub telemetry: Arc<Telemetry>,
    pub concurrency: usize,
}

impl Scheduler {
    /// Poll every job until `shutdown` is cancelled, then wait up to `grace`
    /// for polls in flight. Returns the number of tasks that had to be
    /// aborted.
    pub async fn run<S: DestinationSource>(
        self,
        jobs: Vec<Job<S>>,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> usize {
        let semaphore = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        for job in jobs {
            tasks.spawn(poll_loop(
                job,
                Arc::clone(&self.store),
                Arc::clone(&self.telemetry),
                Arc::clone(&semaphore),
                shutdown.clone(),
            ));
        }
        shutdown.cancelled().await;
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_ok() {
            return 0;
        }
        let left = tasks.len();
        tracing::warn!(
            tasks = left,
            "polls still running after the grace period; aborting them"
        );
        tasks.shutdown().await;
        left
    }
}

async fn poll_loop<S: DestinationSource>(
    job: Job<S>,
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    semaphore: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let mut next = Instant::now();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            permit = Arc::clone(&semaphore).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return, // closed: the scheduler is gone
            },
        };
        let started = Instant::now();
        let outcome = poll_once(&job).await;
        drop(permit);
        telemetry.observe_poll(&job.key.region, started.elapsed().as_secs_f64());
        store.record(&job.key, &outcome, unix_now());
        next = started + jittered(job.interval, fastrand::f64());
    }
}

/// One poll of one table, bounded by its timeout (also used by `--once`).
pub async fn poll_once<S: DestinationSource>(job: &Job<S>) -> Result<Vec<Destination>, PollError> {
    // Boxed: the SDK's future is several kilobytes, and unboxed it would be
    // part of every table's idle poll task (about 50 MB at 10,000 tables).
    match tokio::time::timeout(
        job.timeout + OUTER_TIMEOUT_SLACK,
        Box::pin(job.source.describe(&job.table)),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(_) => Err(PollError::Timeout(format!(
            "no answer within {:?}",
            job.timeout + OUTER_TIMEOUT_SLACK
        ))),
    }
}

/// `interval` scaled by a factor in [1 - JITTER, 1 + JITTER), from a
/// uniform `unit` in [0, 1).
fn jittered(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A source backed by a map: per-table delay and result, and counters.
    #[derive(Default)]
    struct FakeSource {
        delays: HashMap<String, Duration>,
        calls: Mutex<HashMap<String, Vec<Instant>>>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    impl DestinationSource for FakeSource {
        async fn describe(&self, table: &TableRef) -> Result<Vec<Destination>, PollError> {
            self.calls
                .lock()
                .unwrap()
                .entry(table.name.clone())
                .or_default()
                .push(Instant::now());
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            if let Some(delay) = self.delays.get(&table.name) {
                tokio::time::sleep(*delay).await;
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(vec![Destination {
                stream_arn: format!("arn:aws:kinesis:us-east-1:1:stream/{}", table.name),
                status: "ACTIVE".into(),
                status_description: None,
                precision: None,
            }])
        }
    }

    fn job(source: &Arc<FakeSource>, name: &str, interval: u64, timeout: u64) -> Job<FakeSource> {
        Job {
            key: TableKey {
                region: "us-east-1".into(),
                table: name.into(),
            },
            table: TableRef {
                identifier: name.into(),
                name: name.into(),
                account_id: None,
            },
            source: Arc::clone(source),
            interval: Duration::from_secs(interval),
            timeout: Duration::from_secs(timeout),
        }
    }

    /// Run the scheduler on paused time for `run_for`, then shut it down.
    async fn run_jobs(
        jobs: Vec<Job<FakeSource>>,
        concurrency: usize,
        run_for: Duration,
    ) -> Arc<Store> {
        let store = Arc::new(Store::new(jobs.iter().map(|j| j.key.clone())));
        let scheduler = Scheduler {
            store: Arc::clone(&store),
            telemetry: Arc::new(Telemetry::new(false)),
            concurrency,
        };
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(scheduler.run(jobs, shutdown.clone(), Duration::from_secs(30)));
        tokio::time::sleep(run_for).await;
        shutdown.cancel();
        assert_eq!(handle.await.unwrap(), 0, "no task should need aborting");
        store
    }

    #[tokio::test(start_paused = true)]
    async fn polls_at_start_then_every_interval_within_jitter() {
        let source = Arc::new(FakeSource::default());
        let start = Instant::now();
        run_jobs(
            vec![job(&source, "orders", 60, 10)],
            8,
            Duration::from_secs(605),
        )
        .await;
        let calls = source.calls.lock().unwrap()["orders"].clone();
        assert_eq!(calls[0], start, "first poll must be immediate");
        // 605 s at 60 s ± 10 %: between 9 (gaps of 66 s) and 11 (54 s) more polls.
        assert!(
            (9..=11).contains(&(calls.len() - 1)),
            "{} polls",
            calls.len()
        );
        for pair in calls.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_secs(54) && gap <= Duration::from_secs(66),
                "gap {gap:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded_and_every_table_gets_polled() {
        let names: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
        let mut fake = FakeSource::default();
        for name in &names {
            fake.delays.insert(name.clone(), Duration::from_secs(2));
        }
        let source = Arc::new(fake);
        let jobs = names.iter().map(|n| job(&source, n, 60, 10)).collect();
        let store = run_jobs(jobs, 3, Duration::from_secs(30)).await;
        assert_eq!(source.max_in_flight.load(Ordering::SeqCst), 3);
        assert_eq!(store.readiness(), (20, 20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_table_times_out_and_delays_no_other_table() {
        let mut fake = FakeSource::default();
        fake.delays
            .insert("stuck".into(), Duration::from_secs(3600));
        let source = Arc::new(fake);
        let store = run_jobs(
            vec![job(&source, "stuck", 10, 5), job(&source, "fine", 10, 5)],
            2,
            Duration::from_secs(61),
        )
        .await;
        let calls = source.calls.lock().unwrap().clone();
        // "fine" keeps its cadence: ~6 polls in 61 s at 10 s ± 10 %.
        assert!(calls["fine"].len() >= 6, "{:?}", calls["fine"].len());
        let stuck = store
            .state(&TableKey {
                region: "us-east-1".into(),
                table: "stuck".into(),
            })
            .unwrap();
        assert_eq!(stuck.last_poll_ok, Some(false));
        assert!(stuck.errors["timeout"] >= 3, "{:?}", stuck.errors);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let i = Duration::from_secs(60);
        assert_eq!(jittered(i, 0.0), Duration::from_secs(54));
        assert_eq!(jittered(i, 0.5), Duration::from_secs(60));
        assert!(jittered(i, 0.999_999) < Duration::from_secs(66));
        assert_eq!(jittered(i, 7.0), Duration::from_secs(66));
    }

    /// Thousands of tables each hold an idle poll task: its state must not
    /// carry the SDK's future inline.
    #[tokio::test]
    async fn an_idle_poll_task_is_small() {
        let shared = aws_config::SdkConfig::builder().build();
        let config = crate::config::parse(
            "targets:\n  - region: us-east-1\n    endpoint_url: http://127.0.0.1:9\n    tables: [orders]\n",
            "t.yaml",
        )
        .unwrap();
        let target = &config.targets[0];
        let source = Arc::new(crate::aws::SdkSource::new(
            &shared,
            target,
            1,
            &Default::default(),
        ));
        let job = Job {
            key: TableKey {
                region: "us-east-1".into(),
                table: "orders".into(),
            },
            table: target.tables[0].clone(),
            source,
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        };
        let task = poll_loop(
            job,
            Arc::new(Store::new([])),
            Arc::new(Telemetry::new(false)),
            Arc::new(Semaphore::new(1)),
            CancellationToken::new(),
        );
        let size = std::mem::size_of_val(&task);
        assert!(size < 2048, "a poll task's future is {size} bytes");
    }
}
