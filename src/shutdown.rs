//! Shutdown: SIGINT and SIGTERM (what Kubernetes sends) folded into one
//! future, and a [`Shutdown`] handle that every long-running task watches.

use std::future::Future;

use tokio::sync::watch;

/// Resolves on the first SIGINT or SIGTERM. If a handler cannot be
/// installed, that signal is ignored (logged) rather than ending the process.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT, shutting down"),
        () = term => tracing::info!("received SIGTERM, shutting down"),
    }
}

/// SIGHUP as a stream of reload requests. The handler is installed before
/// this returns, so a SIGHUP sent once the exporter listens never takes the
/// default action (ending the process). Signals that arrive while a reload
/// is pending are folded into it. Without a handler (or off Unix) the
/// channel never yields. Must be called inside the tokio runtime.
pub fn reload_requests() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        tracing::info!("received SIGHUP, reloading the configuration");
                        if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) =
                            tx.try_send(())
                        {
                            return;
                        }
                    }
                });
            }
            Err(err) => tracing::error!(error = %err, "cannot listen for SIGHUP; reloads disabled"),
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// The sending side: trigger once, every [`Shutdown`] sees it.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// A cloneable view of the shutdown state.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A linked trigger and watcher.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Tell every watcher to stop. Idempotent.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    /// Fire when `fut` resolves.
    pub async fn fire_on(self, fut: impl Future<Output = ()>) {
        fut.await;
        self.fire();
    }
}

impl Shutdown {
    /// True once shutdown was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when shutdown is triggered (or the trigger is dropped, which
    /// only happens when the process is tearing down anyway).
    pub async fn wait(&mut self) {
        // An error means the sender is gone: treat it as shutdown.
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_watcher_sees_the_trigger() {
        let (trigger, shutdown) = channel();
        let mut a = shutdown.clone();
        let mut b = shutdown;
        assert!(!a.is_triggered());
        trigger.fire();
        a.wait().await;
        b.wait().await;
        assert!(a.is_triggered() && b.is_triggered());
    }

    #[tokio::test]
    async fn dropped_trigger_counts_as_shutdown() {
        let (trigger, mut shutdown) = channel();
        drop(trigger);
        tokio::time::timeout(std::time::Duration::from_secs(1), shutdown.wait())
            .await
            .expect("wait must return once the trigger is gone");
    }
}
