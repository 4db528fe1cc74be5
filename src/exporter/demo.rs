//! `--demo`: the simulator on a loopback port, playing the shipped scenario
//! (`config/demo-scenario.yaml`, compiled in), and an exporter config that
//! points at it with static dummy credentials. Real output, no AWS account.
//! Built only with the default-on `demo` feature, which brings in the
//! `dke-simulator` crate.

use std::time::Duration;

use dke_simulator::{Scenario, ScenarioError, Simulator};

use crate::aws::ClientOptions;
use crate::config::{self, Config};

/// The shipped demo scenario.
pub const SCENARIO: &str = include_str!("../../config/demo-scenario.yaml");

/// How often the demo polls: often enough to watch statuses move.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// How often the demo reads CloudWatch (the simulator's): often enough to
/// watch the replication lag climb.
pub const CDC_INTERVAL: Duration = Duration::from_secs(10);

/// The stream the demo deletes behind its ACTIVE destination, when, and
/// how long it reports DELETING before it is gone.
pub const DELETED_STREAM: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/shipments-cdc";
pub const DELETE_AFTER: Duration = Duration::from_secs(40);
pub const DELETING_FOR: Duration = Duration::from_secs(20);

// Both silent-stop cases show within three minutes of start, checked when
// compiling: the stream is deleted, reports DELETING, and two polls later
// reads NOT_FOUND; the lag needs two CloudWatch datapoint minutes and then
// two reads.
const _: () = assert!(
    DELETE_AFTER.as_secs() + DELETING_FOR.as_secs() + 2 * POLL_INTERVAL.as_secs() < 180
        && 120 + 2 * CDC_INTERVAL.as_secs() < 180
);

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The cause is the `source`, so a cause chain (`{:#}`) shows it once.
    #[error("the shipped demo scenario is invalid")]
    Scenario(#[from] ScenarioError),
    #[error("cannot start the simulator")]
    Start(#[from] std::io::Error),
}

/// A running simulator and the config that polls it.
pub struct Demo {
    pub config: Config,
    /// Static dummy credentials: the simulator checks their form only.
    pub client: ClientOptions,
    pub running: Running,
}

/// The simulator and the task that deletes a stream behind it later; its
/// owner stops both ([`Running::stop`]).
pub struct Running {
    simulator: Simulator,
    deleter: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Where the simulator answers.
    pub fn endpoint_url(&self) -> String {
        self.simulator.endpoint_url()
    }

    /// Stop the pending deletion and the simulator.
    pub async fn stop(self) {
        self.deleter.abort();
        // Cancelled, or done long ago: either way it has ended.
        let _ = self.deleter.await;
        self.simulator.shutdown().await;
    }
}

/// Start the simulator and build the matching exporter config.
pub async fn start() -> Result<Demo, DemoError> {
    let scenario = Scenario::from_yaml(SCENARIO)?;
    let simulator = Simulator::start(scenario.clone()).await?;
    // The scenario file cannot say "delete this stream later": do it here.
    let behind = simulator.clone();
    let deleter = tokio::spawn(async move {
        tokio::time::sleep(DELETE_AFTER).await;
        behind.delete_stream_after(DELETED_STREAM, DELETING_FOR);
    });
    let config = config_for(&scenario, &simulator.endpoint_url());
    let client = ClientOptions {
        static_credentials: Some(aws_sdk_dynamodb::config::Credentials::new(
            "AKIDDEMODEMODEMO",
            "demo-secret-not-a-real-key",
            None,
            None,
            "demo",
        )),
    };
    Ok(Demo {
        config,
        client,
        running: Running { simulator, deleter },
    })
}

/// An exporter config polling every table of `scenario` at `endpoint_url`.
pub fn config_for(scenario: &Scenario, endpoint_url: &str) -> Config {
    // Written as a config file and parsed like one, so the demo goes
    // through the same validation and defaults as any user's file.
    let tables: Vec<String> = scenario
        .table_names()
        .iter()
        .map(|name| format!("      - {name}\n"))
        .collect();
    let text = format!(
        "poll_interval: {poll}ms\nrequest_timeout: 5s\nconcurrency: 4\nmax_attempts: 2\n\
         targets:\n  - region: {region}\n    endpoint_url: {endpoint_url}\n    cdc_metrics: {{interval: {cdc}ms}}\n    tables:\n{tables}",
        poll = POLL_INTERVAL.as_millis(),
        cdc = CDC_INTERVAL.as_millis(),
        region = scenario.region,
        tables = tables.concat(),
    );
    config::parse(&text, "(demo)").expect("the demo scenario makes a valid config")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_covers_every_scenario_table() {
        let scenario = Scenario::from_yaml(SCENARIO).unwrap();
        let config = config_for(&scenario, "http://127.0.0.1:1");
        let names: Vec<String> = config.targets[0]
            .tables
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        assert_eq!(names, scenario.table_names());
        assert!(names.len() >= 3, "{names:?}");
        assert_eq!(
            config.targets[0].endpoint_url.as_deref(),
            Some("http://127.0.0.1:1")
        );
    }

    /// The two CDC cases light up the alerts' inputs within three minutes
    /// of start (the timing is checked when compiling, beside the
    /// constants): the stream deleted is one a table streams to, and the
    /// lag passes the warning (5 min) and critical (30 min) thresholds.
    #[test]
    fn the_silent_stop_cases_show_within_three_minutes() {
        let scenario = Scenario::from_yaml(SCENARIO).unwrap();
        let table = scenario
            .tables
            .iter()
            .find(|t| t.name == "clickstream")
            .expect("the lag table");
        let cdc = table.cdc_metrics.as_ref().expect("its CloudWatch metrics");
        // CloudWatch has a datapoint a minute: the value at a minute
        // boundary shows from then on.
        let lag_ms = |since_start: i64| {
            let at = cdc.started_ago.as_secs() as i64 + since_start;
            cdc.value_at(
                "AgeOfOldestUnreplicatedRecord",
                Duration::from_secs(at as u64),
            )
            .unwrap()
        };
        assert!(lag_ms(-10) < 1_000.0, "healthy before the demo starts");
        assert!(lag_ms(30) > 300_000.0, "past the warning threshold 30 s in");
        assert!(
            lag_ms(60) > 1_800_000.0,
            "past the critical threshold 60 s in"
        );
        let streamed_to: Vec<&str> = scenario
            .tables
            .iter()
            .flat_map(|t| &t.destinations)
            .map(|d| d.stream_arn.as_str())
            .collect();
        assert!(streamed_to.contains(&DELETED_STREAM), "{streamed_to:?}");
    }

    #[test]
    fn errors_name_their_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "port taken");
        let text = format!("{:#}", anyhow::Error::from(DemoError::from(io)));
        assert_eq!(text, "cannot start the simulator: port taken");
        let bad = Scenario::from_yaml("tables: 3").unwrap_err();
        let cause = bad.to_string();
        let text = format!("{:#}", anyhow::Error::from(DemoError::from(bad)));
        assert_eq!(
            text,
            format!("the shipped demo scenario is invalid: {cause}")
        );
    }
}
