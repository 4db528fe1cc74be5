//! Process signals: SIGINT and SIGTERM (what Kubernetes sends) folded into
//! one future, and SIGHUP as a stream of reload requests. Tasks watch a
//! `tokio_util` cancellation token that the wiring cancels when the future
//! resolves.

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
                // Ends as soon as the receiver goes (the exporter stopped),
                // not at the next SIGHUP.
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = tx.closed() => return,
                            got = hangups.recv() => {
                                if got.is_none() {
                                    return;
                                }
                                tracing::info!("received SIGHUP, reloading the configuration");
                                // Full: a reload is pending anyway.
                                let _ = tx.try_send(());
                            }
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A SIGHUP reaches the receiver as one reload request; more while one
    /// is pending are folded into it.
    #[tokio::test]
    async fn a_sighup_becomes_a_reload_request() {
        let mut reloads = reload_requests();
        let hup = || {
            let status = std::process::Command::new("kill")
                .args(["-HUP", &std::process::id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success());
        };
        hup();
        let got = tokio::time::timeout(Duration::from_secs(10), reloads.recv()).await;
        assert_eq!(got.expect("a request within 10 s"), Some(()));
        hup();
        hup();
        let got = tokio::time::timeout(Duration::from_secs(10), reloads.recv()).await;
        assert_eq!(got.expect("a request within 10 s"), Some(()));
    }
}
