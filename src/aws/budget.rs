//! The request budget of one (account, region) scope: a token bucket whose
//! rate adapts to throttling (AIMD), and a semaphore bounding the calls in
//! flight. Every AWS call the exporter makes in a scope first takes a token
//! with [`Budget::acquire`], so the scope's rate is data held here, not a
//! consequence of sleeps scattered through the pollers.
//!
//! - The bucket holds at most one token: calls are spaced at least
//!   `1 / rate` apart (at the rate in force when each call goes), so no
//!   window of any length sees more than the rate allows (plus the one call
//!   at its edge). Waiting callers look again every [`RECHECK`], so a rate
//!   that recovers lets them go sooner than it promised when they arrived.
//! - [`Budget::throttled`] halves the current rate (never below
//!   [`MIN_RATE_FRACTION`] of the configured one); it then climbs back
//!   linearly, by [`RECOVERY_PER_SECOND`] of the configured rate each
//!   second, up to the configured rate.
//!
//! - [`Budget::close`] (the scope shuts down) ends every wait at once: a
//!   call still waiting for its token was never made, so the scope has
//!   nothing to drain for it.
//! - A budget is one service's in one scope, so it is also where every
//!   request that leaves is counted: [`crate::aws::call`] reports each
//!   attempt it lets go to the budget's [`Meter`].
//! - Calls are spaced by `(1 + GUARD) / rate`. A call let go late (timers
//!   fire up to a millisecond after their deadline) lets the next one go
//!   that much sooner, so the rate is kept on average. No window of a
//!   second sees more calls than the rate (whole calls): from
//!   [`FULL_CREDIT_FROM`] calls a second the guard leaves room for the
//!   one call such credit can add to a second; below, a late call moves the
//!   next one by at most half the guard, so two calls are never closer than
//!   `(1 + GUARD / 2) / rate`.
//!
//! Time comes from `tokio::time`, so tests run it on paused time.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The lowest the adaptive rate goes, as a share of the configured rate.
pub const MIN_RATE_FRACTION: f64 = 1.0 / 64.0;
/// How fast the rate recovers after throttling: this share of the
/// configured rate per second (from the floor to full in about 10 s).
pub const RECOVERY_PER_SECOND: f64 = 0.1;
/// How often a waiting caller re-reads the rate.
pub const RECHECK: Duration = Duration::from_millis(100);
/// Calls are spaced this much wider than the rate asks: the delay between
/// a call leaving and reaching AWS varies by a few milliseconds, which can
/// squeeze one more call into a second as AWS counts it. Measured at the
/// simulator, 10,000 tables at 100 req/s per scope saw up to 103 calls in
/// one second without this margin.
pub const GUARD: f64 = 0.04;
/// From this rate up a late call's lateness is made up in full (see the
/// module): at most ⌈rate ÷ (1 + GUARD)⌉ + 1 calls fit in a second, no
/// more than the rate.
pub const FULL_CREDIT_FROM: f64 = 26.0;

/// Where a budget reports each request it lets go: the request counters of
/// its scope and service.
pub trait Meter: Send + Sync {
    /// One attempt of `operation` leaves now; it requests `metrics` metrics
    /// from CloudWatch (GetMetricData's queries; 0 for anything else).
    fn attempt(&self, operation: &'static str, metrics: u64);
}

/// One service's budget in one scope. Cheap to share: clone the `Arc`.
pub struct Budget {
    bucket: Mutex<Bucket>,
    in_flight: Arc<Semaphore>,
    /// Cancelled by [`Budget::close`].
    closed: CancellationToken,
    meter: Option<Arc<dyn Meter>>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("bucket", &self.bucket)
            .field("closed", &self.closed.is_cancelled())
            .field("metered", &self.meter.is_some())
            .finish()
    }
}

/// The budget was closed while a call waited for it: the call was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

#[derive(Debug)]
struct Bucket {
    /// The configured rate, requests per second.
    max_rate: f64,
    /// The current adaptive rate.
    rate: f64,
    /// When the rate was last brought up to date.
    rate_at: Instant,
    /// When the last call was let go (`None` before the first).
    last_call: Option<Instant>,
    throttled: u64,
}

/// What a call holds while it runs: its concurrency permit.
#[derive(Debug)]
pub struct Ticket {
    _permit: OwnedSemaphorePermit,
}

impl Budget {
    /// A budget of `max_rate` requests per second and `concurrency` calls in
    /// flight. Both are clamped to at least a minimal positive value.
    pub fn new(max_rate: f64, concurrency: usize) -> Arc<Self> {
        Self::build(max_rate, concurrency, None)
    }

    /// [`Budget::new`], reporting every attempt to `meter`.
    pub fn metered(max_rate: f64, concurrency: usize, meter: Arc<dyn Meter>) -> Arc<Self> {
        Self::build(max_rate, concurrency, Some(meter))
    }

    fn build(max_rate: f64, concurrency: usize, meter: Option<Arc<dyn Meter>>) -> Arc<Self> {
        let max_rate = if max_rate.is_finite() && max_rate > 0.0 {
            max_rate
        } else {
            1.0
        };
        let now = Instant::now();
        Arc::new(Budget {
            bucket: Mutex::new(Bucket {
                max_rate,
                rate: max_rate,
                rate_at: now,
                last_call: None,
                throttled: 0,
            }),
            in_flight: Arc::new(Semaphore::new(concurrency.max(1))),
            closed: CancellationToken::new(),
            meter,
        })
    }

    /// Count one attempt of `operation` (requesting `metrics` CloudWatch
    /// metrics) that is leaving now.
    pub fn attempt(&self, operation: &'static str, metrics: u64) {
        if let Some(meter) = &self.meter {
            meter.attempt(operation, metrics);
        }
    }

    /// Wait for a concurrency permit, then for the next token. The permit is
    /// taken first so that a call waiting for a slot does not also hold a
    /// token it cannot use. Fails, at once, when the budget is (or gets)
    /// closed.
    pub async fn acquire(&self) -> Result<Ticket, Closed> {
        let permit = tokio::select! {
            biased;
            () = self.closed.cancelled() => return Err(Closed),
            permit = Arc::clone(&self.in_flight).acquire_owned() => permit.map_err(|_| Closed)?,
        };
        loop {
            let wait = self.lock().try_take(Instant::now());
            match wait {
                None => return Ok(Ticket { _permit: permit }),
                Some(wait) => tokio::select! {
                    biased;
                    () = self.closed.cancelled() => return Err(Closed),
                    () = tokio::time::sleep(wait.min(RECHECK)) => {}
                },
            }
        }
    }

    /// End every wait for this budget, now and later: the scope is shutting
    /// down and makes no more calls.
    pub fn close(&self) {
        self.closed.cancel();
        self.in_flight.close();
    }

    /// AWS answered with a throttling error: halve the rate.
    pub fn throttled(&self) {
        let mut bucket = self.lock();
        let now = Instant::now();
        bucket.recover(now);
        let floor = bucket.max_rate * MIN_RATE_FRACTION;
        bucket.rate = (bucket.rate / 2.0).max(floor);
        bucket.throttled += 1;
        // The next call waits a whole spacing at the new rate.
        bucket.last_call = Some(bucket.last_call.map_or(now, |last| last.max(now)));
    }

    /// The current adaptive rate, requests per second.
    pub fn rate(&self) -> f64 {
        let mut bucket = self.lock();
        bucket.recover(Instant::now());
        bucket.rate
    }

    /// The configured rate.
    pub fn max_rate(&self) -> f64 {
        self.lock().max_rate
    }

    /// Throttling answers seen so far (a counter).
    pub fn throttled_total(&self) -> u64 {
        self.lock().throttled
    }

    /// Change the configured rate (a reload); the current rate is capped to it.
    pub fn set_max_rate(&self, max_rate: f64) {
        if !(max_rate.is_finite() && max_rate > 0.0) {
            return;
        }
        let mut bucket = self.lock();
        bucket.recover(Instant::now());
        bucket.max_rate = max_rate;
        bucket.rate = bucket.rate.min(max_rate);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Bucket {
    /// Let a call go now (`None`) or say how long until it may.
    fn try_take(&mut self, now: Instant) -> Option<Duration> {
        self.recover(now);
        let spacing = Duration::from_secs_f64((1.0 + GUARD) / self.rate);
        let allowed = self.last_call.map_or(now, |last| last + spacing);
        if allowed > now {
            return Some(allowed - now);
        }
        // A call let go late does not delay the next one by its lateness
        // (within the credit the module explains); after an idle spell the
        // clock restarts at now, so no credit builds up for a burst.
        self.last_call = Some(if self.rate >= FULL_CREDIT_FROM {
            if allowed + spacing > now {
                allowed
            } else {
                now
            }
        } else {
            let credit = Duration::from_secs_f64(GUARD / 2.0 / self.rate);
            allowed.max(now.checked_sub(credit).unwrap_or(now))
        });
        None
    }

    /// Additive increase since the last update, capped at the configured rate.
    fn recover(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.rate_at).as_secs_f64();
        self.rate = (self.rate + elapsed * RECOVERY_PER_SECOND * self.max_rate).min(self.max_rate);
        self.rate_at = now;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Start instants of `calls` sequential acquisitions.
    async fn starts(budget: &Budget, calls: usize) -> Vec<Instant> {
        let mut out = Vec::with_capacity(calls);
        for _ in 0..calls {
            let _ticket = budget.acquire().await.unwrap();
            out.push(Instant::now());
        }
        out
    }

    /// The most calls in any half-open window of `window` length (the
    /// scheduler's tests measure with it too).
    pub(crate) fn max_in_window(starts: &[Instant], window: Duration) -> usize {
        starts
            .iter()
            .enumerate()
            .map(|(i, t)| starts[i..].iter().take_while(|s| **s < *t + window).count())
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_by_the_rate() {
        let budget = Budget::new(10.0, 4);
        let begin = Instant::now();
        let starts = starts(&budget, 31).await;
        assert_eq!(starts[0], begin, "the first call goes at once");
        assert_eq!(
            starts[30] - begin,
            Duration::from_secs_f64(30.0 * (1.0 + GUARD) / 10.0)
        );
        assert_eq!(max_in_window(&starts, Duration::from_secs(1)), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_the_rate() {
        let budget = Budget::new(5.0, 100);
        let begin = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let budget = Arc::clone(&budget);
            tasks.spawn(async move {
                let _ticket = budget.acquire().await.unwrap();
                Instant::now()
            });
        }
        let mut starts = tasks.join_all().await;
        starts.sort();
        assert_eq!(
            *starts.last().unwrap() - begin,
            Duration::from_secs_f64(19.0 * (1.0 + GUARD) / 5.0)
        );
        assert_eq!(max_in_window(&starts, Duration::from_secs(1)), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded_by_the_permits() {
        let budget = Budget::new(1000.0, 2);
        let first = budget.acquire().await.unwrap();
        let _second = budget.acquire().await.unwrap();
        let third = tokio::time::timeout(Duration::from_secs(60), budget.acquire()).await;
        assert!(third.is_err(), "a third call must wait for a permit");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), budget.acquire())
            .await
            .expect("a freed permit lets the next call go")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_that_wake_late_get_a_little_credit_and_no_second_sees_more_than_the_rate() {
        // Waiters that wake up to 1.5 ms late, as tokio's millisecond timer
        // does, and callers that come at any time up to a spacing late.
        let cases = [5.0, 10.0, 25.0, 26.0, 100.0, 1000.0]
            .into_iter()
            .flat_map(|rate| [(rate, false), (rate, true)]);
        for (rate, anytime) in cases {
            let late = |i: usize, spacing: Duration| match anytime {
                false => Duration::from_micros(((i * 7919) % 1500) as u64),
                true => spacing.mul_f64(((i * 7919) % 1000) as f64 / 1000.0),
            };
            let budget = Budget::new(rate, 4);
            let spacing = Duration::from_secs_f64((1.0 + GUARD) / rate);
            let begin = Instant::now();
            let mut now = begin;
            let mut grants = Vec::new();
            let mut lateness = Duration::ZERO;
            for i in 0..(rate as usize * 20) {
                while let Some(wait) = budget.lock().try_take(now) {
                    let late = late(i, spacing);
                    lateness += late;
                    now += wait + late;
                }
                grants.push(now);
            }
            let busiest = max_in_window(&grants, Duration::from_secs(1));
            assert!(
                busiest <= rate as usize,
                "{busiest} in a second at {rate} ({anytime})"
            );
            if rate < FULL_CREDIT_FROM {
                let closest = Duration::from_secs_f64((1.0 + GUARD / 2.0) / rate);
                for pair in grants.windows(2) {
                    assert!(pair[1] - pair[0] + Duration::from_nanos(1) >= closest);
                }
            }
            // Without the credit every bit of lateness would add up.
            let took = *grants.last().unwrap() - begin;
            let exact = spacing * (grants.len() as u32 - 1);
            assert!(
                took < exact + lateness,
                "{took:?} vs {exact:?} + {lateness:?} at {rate}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_attempt_is_reported_to_the_meter() {
        #[derive(Default)]
        struct Log(Mutex<Vec<(&'static str, u64)>>);
        impl Meter for Log {
            fn attempt(&self, operation: &'static str, metrics: u64) {
                self.0.lock().unwrap().push((operation, metrics));
            }
        }
        let log = Arc::new(Log::default());
        let budget = Budget::metered(10.0, 2, Arc::clone(&log) as Arc<dyn Meter>);
        budget.attempt("ListTables", 0);
        budget.attempt("GetMetricData", 500);
        assert_eq!(
            *log.0.lock().unwrap(),
            [("ListTables", 0), ("GetMetricData", 500)]
        );
        Budget::new(10.0, 2).attempt("ListTables", 0);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_ends_every_wait_at_once() {
        // One call every hundred seconds and two permits: after the first
        // call, a second caller waits for its token, a third for a permit.
        let budget = Budget::new(0.01, 2);
        let _first = budget.acquire().await.unwrap();
        let begin = Instant::now();
        let caller = || {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { (budget.acquire().await.err(), Instant::now()) })
        };
        let for_token = caller();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let for_permit = caller();
        tokio::time::sleep(Duration::from_secs(1)).await;
        budget.close();
        for waiting in [for_token, for_permit] {
            let (err, at) = waiting.await.unwrap();
            assert_eq!(err, Some(Closed));
            assert_eq!(
                at - begin,
                Duration::from_secs(2),
                "at once, not after 100 s"
            );
        }
        assert_eq!(budget.acquire().await.err(), Some(Closed), "and later");
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_rate_down_to_a_floor_and_it_recovers_linearly() {
        let budget = Budget::new(64.0, 4);
        budget.throttled();
        assert_eq!(budget.rate(), 32.0);
        for _ in 0..20 {
            budget.throttled();
        }
        assert_eq!(budget.rate(), 1.0, "floor: 1/64 of the configured rate");
        assert_eq!(budget.throttled_total(), 21);
        // Recovery: 10 % of 64 per second.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!((budget.rate() - 33.0).abs() < 1e-9, "{}", budget.rate());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(budget.rate(), 64.0, "capped at the configured rate");
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_scope_slows_its_calls() {
        let budget = Budget::new(10.0, 4);
        budget.throttled();
        budget.throttled();
        // 2.5 req/s right after; it recovers by 1 req/s each second.
        let begin = Instant::now();
        let starts = starts(&budget, 6).await;
        let first_second = starts
            .iter()
            .filter(|s| **s < begin + Duration::from_secs(1))
            .count();
        assert!(first_second <= 3, "{starts:?}");
        assert!(
            starts[0] - begin >= Duration::from_millis(300),
            "the first call waits"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_changes_the_configured_rate() {
        let budget = Budget::new(10.0, 1);
        budget.set_max_rate(2.0);
        assert_eq!(budget.rate(), 2.0);
        assert_eq!(budget.max_rate(), 2.0);
        budget.set_max_rate(f64::NAN);
        assert_eq!(budget.max_rate(), 2.0, "nonsense is ignored");
        let starts = starts(&budget, 5).await;
        assert_eq!(
            starts[4] - starts[0],
            Duration::from_secs_f64(4.0 * (1.0 + GUARD) / 2.0)
        );
    }
}
