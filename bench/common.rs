//! What the benchmark programs share: an exporter running in the process,
//! the process's resident memory and a minimal HTTP GET on loopback.
#![allow(dead_code)] // each benchmark uses a different subset

use std::sync::Arc;
use std::time::Duration;

use dynamodb_kinesis_exporter::aws::ClientOptions;
use dynamodb_kinesis_exporter::state::store::Store;
use dynamodb_kinesis_exporter::{config, Exporter, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An exporter serving in this process on an ephemeral loopback port.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub store: Arc<Store>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Start one for the config `text`, with static credentials (the
    /// simulator checks none) and, unless `process_metrics`, without the
    /// `process_*` families.
    pub async fn start(text: &str, process_metrics: bool) -> Running {
        let config = config::parse(text, "(bench)").expect("bench config");
        let mut settings = Settings::new(config, "127.0.0.1:0".parse().unwrap());
        settings.process_metrics = process_metrics;
        settings.client = ClientOptions {
            static_credentials: Some(aws_sdk_dynamodb::config::Credentials::new(
                "AKIDBENCH",
                "bench",
                None,
                None,
                "bench",
            )),
        };
        let exporter = Exporter::bind(settings).await.expect("bind");
        let addr = exporter.local_addr();
        let store = exporter.store();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(exporter.serve(async move {
            let _ = stopped.await;
        }));
        Running {
            addr,
            store,
            stop,
            task,
        }
    }

    /// Shut it down, waiting at most 15 s for it to drain.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

/// This process's resident set size, KiB (0 where /proc is absent).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// One GET with `Connection: close`: the status and the body.
pub async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let status = std::str::from_utf8(&raw[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body_at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(raw.len());
    (status, raw[body_at..].to_vec())
}
