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
