//! Supervision of the long-lived background tasks: scope runners, account
//! lookups, the page janitor and the web-config watcher (a scope runner
//! supervises its own work items the same way). A task that dies unseen is the very failure this
//! exporter exists to catch in others, so [`supervise`] runs each one as a
//! task of its own and waits for it: a panic is logged at error with the
//! task's name, counted in `dynamodb_kinesis_exporter_task_restarts_total
//! {task}`, and a fresh task is started after a backoff.
//!
//! The backoff starts at [`FIRST_BACKOFF`] and doubles with each panic in
//! a row, up to [`MAX_BACKOFF`]; a task that ran at least `MAX_BACKOFF`
//! before it panicked starts the series over.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::exposition::metrics::Telemetry;

/// The wait before the first restart.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The wait before restart number `streak` (1 for the first in a row).
pub fn backoff(streak: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << streak.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// Aborts the task when dropped, so a supervisor that is itself dropped
/// leaves nothing running behind it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Run the task `make` builds until it ends by itself, restarting it after
/// a panic as the module says. `task` names it in the log and in the
/// counter's `task` label; `detail` (a scope, a path; may be empty) only in
/// the log. Returns the task's output, or `None` when `shutdown` came during
/// a backoff or the task was cancelled from outside.
pub async fn supervise<T, F, Fut>(
    task: &'static str,
    detail: String,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
    mut make: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    telemetry.supervise_task(task);
    let mut streak = 0u32;
    loop {
        let started = Instant::now();
        let mut running = AbortOnDrop(tokio::spawn(make()));
        let err = match (&mut running.0).await {
            Ok(output) => return Some(output),
            Err(err) if err.is_panic() => err,
            Err(_) => return None,
        };
        if started.elapsed() >= MAX_BACKOFF {
            streak = 0;
        }
        streak += 1;
        let wait = backoff(streak);
        telemetry.record_task_restart(task);
        tracing::error!(task, detail = %detail, panic = %panic_message(err.into_panic()),
            panics_in_a_row = streak, restart_in = ?wait,
            "background task panicked; restarting it after a backoff (dynamodb_kinesis_exporter_task_restarts_total)");
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The text a panic was raised with, when it was a string.
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_string(),
            Err(_) => "(a panic without a message)".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn telemetry() -> Arc<Telemetry> {
        Arc::new(Telemetry::new(false))
    }

    #[test]
    fn backoff_doubles_up_to_a_bound() {
        let s = Duration::from_secs;
        assert_eq!(backoff(1), s(1));
        assert_eq!(backoff(2), s(2));
        assert_eq!(backoff(4), s(8));
        assert_eq!(backoff(7), s(60));
        assert_eq!(backoff(u32::MAX), s(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_once_is_counted_and_restarted_after_the_backoff() {
        let telemetry = telemetry();
        let runs = Arc::new(AtomicUsize::new(0));
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let begun = Instant::now();
        let output = supervise(
            "discovery",
            "123456789012/us-east-1".into(),
            Arc::clone(&telemetry),
            CancellationToken::new(),
            || {
                let runs = Arc::clone(&runs);
                let starts = Arc::clone(&starts);
                async move {
                    starts.lock().unwrap().push(Instant::now());
                    if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                        panic!("first run fails");
                    }
                    7
                }
            },
        )
        .await;
        assert_eq!(output, Some(7));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(telemetry.task_restarts("discovery"), 1);
        let starts = starts.lock().unwrap().clone();
        assert_eq!(starts[1] - starts[0], FIRST_BACKOFF);
        assert_eq!(starts[0], begun);
        assert!(telemetry
            .encode()
            .contains("dynamodb_kinesis_exporter_task_restarts_total{task=\"discovery\"} 1\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn panics_in_a_row_back_off_exponentially_and_a_long_run_resets_it() {
        let telemetry = telemetry();
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let runs = Arc::new(AtomicUsize::new(0));
        supervise(
            "cdc",
            String::new(),
            Arc::clone(&telemetry),
            CancellationToken::new(),
            || {
                let runs = Arc::clone(&runs);
                let starts = Arc::clone(&starts);
                async move {
                    starts.lock().unwrap().push(Instant::now());
                    match runs.fetch_add(1, Ordering::SeqCst) {
                        0..=3 => panic!("again"),
                        // Runs a long while, then panics: the backoff starts over.
                        4 => {
                            tokio::time::sleep(MAX_BACKOFF * 2).await;
                            panic!("after a long run");
                        }
                        _ => {}
                    }
                }
            },
        )
        .await
        .expect("ends by itself");
        let starts = starts.lock().unwrap().clone();
        let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        let s = Duration::from_secs;
        assert_eq!(gaps, [s(1), s(2), s(4), s(8), MAX_BACKOFF * 2 + s(1)]);
        assert_eq!(telemetry.task_restarts("cdc"), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_during_the_backoff_ends_supervision() {
        let telemetry = telemetry();
        let shutdown = CancellationToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let supervisor = tokio::spawn(supervise(
            "scope",
            String::new(),
            Arc::clone(&telemetry),
            shutdown.clone(),
            {
                let runs = Arc::clone(&runs);
                move || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    async { panic!("always") }
                }
            },
        ));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // Runs at 0 s, 1 s, 3 s: two so far.
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        shutdown.cancel();
        assert_eq!(supervisor.await.unwrap(), None::<()>);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(telemetry.task_restarts("scope"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_counter_shows_zero_before_any_restart_and_a_dropped_supervisor_stops_its_task() {
        let telemetry = telemetry();
        let alive = Arc::new(AtomicUsize::new(0));
        let supervisor = tokio::spawn(supervise(
            "page_janitor",
            String::new(),
            Arc::clone(&telemetry),
            CancellationToken::new(),
            {
                let alive = Arc::clone(&alive);
                move || {
                    let alive = Arc::clone(&alive);
                    async move {
                        loop {
                            alive.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            },
        ));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(telemetry
            .encode()
            .contains("dynamodb_kinesis_exporter_task_restarts_total{task=\"page_janitor\"} 0\n"));
        supervisor.abort();
        let _ = supervisor.await;
        let seen = alive.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            alive.load(Ordering::SeqCst),
            seen,
            "the task was aborted too"
        );
    }

    #[test]
    fn panic_messages_are_read_from_both_string_kinds() {
        assert_eq!(panic_message(Box::new("static")), "static");
        assert_eq!(panic_message(Box::new(String::from("owned"))), "owned");
        assert_eq!(panic_message(Box::new(3)), "(a panic without a message)");
    }
}
