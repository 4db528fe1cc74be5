//! `--demo`: the simulator on a loopback port, playing the shipped scenario
//! (`config/demo-scenario.yaml`, compiled in), and an exporter config that
//! points at it with static dummy credentials. Real output, no AWS account.
//! While it runs, the demo does what the scenario file cannot say: it
//! switches two tables' streaming off (one that must stream, one that need
//! not) and deletes a stream behind an ACTIVE destination.
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

/// When the demo switches streaming off, with `DisableKinesisStreamingDestination`'s
/// rules, for each (table, stream) of [`SWITCHED_OFF`].
pub const DISABLE_AFTER: Duration = Duration::from_secs(30);
/// The destinations switched off: [`EXPECTED_TABLE`]'s, which must stream (its
/// `cdc-required` tag), and [`NOT_EXPECTED_TABLE`]'s, which need not.
pub const SWITCHED_OFF: [(&str, &str); 2] = [
    (
        EXPECTED_TABLE,
        "arn:aws:kinesis:us-east-1:123456789012:stream/customers-cdc",
    ),
    (
        NOT_EXPECTED_TABLE,
        "arn:aws:kinesis:us-east-1:123456789012:stream/scratch-cdc",
    ),
];
/// Switched off while it must stream: `DynamoDBKinesisExpectedTableNotStreaming`.
pub const EXPECTED_TABLE: &str = "customers";
/// Switched off on purpose: the demo config says it need not stream
/// (`expect_streaming: false`), so nothing alerts.
pub const NOT_EXPECTED_TABLE: &str = "scratch";
/// The demo config's `expect`: tables tagged `cdc-required: "true"` must
/// stream, to a stream whose name ends in `-cdc`.
pub const EXPECT: &str = r#"{tag: cdc-required, stream: "-cdc$"}"#;
/// The tag keys the demo exports as labels.
pub const EXPORT_TAGS: &str = "[team, owner]";

// Every silent-stop case shows within three minutes of start, checked when
// compiling: the stream is deleted, reports DELETING, and two polls later
// reads NOT_FOUND; the lag needs two CloudWatch datapoint minutes and then
// two reads; the switched-off destination is DISABLED within the scenario's
// `transitions.disabling` (checked by a test) and seen at the next poll.
const _: () = assert!(
    DELETE_AFTER.as_secs() + DELETING_FOR.as_secs() + 2 * POLL_INTERVAL.as_secs() < 180
        && 120 + 2 * CDC_INTERVAL.as_secs() < 180
        && DISABLE_AFTER.as_secs() + 2 * POLL_INTERVAL.as_secs() < 150
        && DISABLE_AFTER.as_secs() < DELETE_AFTER.as_secs()
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

/// The simulator and the task that changes it later ([`script`]); its
/// owner stops both ([`Running::stop`]).
pub struct Running {
    simulator: Simulator,
    script: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Where the simulator answers.
    pub fn endpoint_url(&self) -> String {
        self.simulator.endpoint_url()
    }

    /// Stop the pending changes and the simulator.
    pub async fn stop(self) {
        self.script.abort();
        // Cancelled, or done long ago: either way it has ended.
        let _ = self.script.await;
        self.simulator.shutdown().await;
    }
}

/// What the demo does to the simulated account while it runs: switch
/// streaming off (through the same rules as the API an operator would call)
/// and delete a stream behind an ACTIVE destination.
async fn script(simulator: Simulator) {
    tokio::time::sleep(DISABLE_AFTER).await;
    for (table, stream) in SWITCHED_OFF {
        match simulator.disable_destination(table, stream) {
            Ok(_) => tracing::info!(table, stream, "demo: streaming switched off"),
            Err(error) => {
                tracing::warn!(table, stream, %error, "demo: cannot switch streaming off")
            }
        }
    }
    tokio::time::sleep(DELETE_AFTER - DISABLE_AFTER).await;
    simulator.delete_stream_after(DELETED_STREAM, DELETING_FOR);
    tracing::info!(stream = DELETED_STREAM, "demo: stream deleted");
}

/// Start the simulator and build the matching exporter config.
pub async fn start() -> Result<Demo, DemoError> {
    let scenario = Scenario::from_yaml(SCENARIO)?;
    let simulator = Simulator::start(scenario.clone()).await?;
    // The scenario file cannot say "later": the script does it.
    let script = tokio::spawn(script(simulator.clone()));
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
        running: Running { simulator, script },
    })
}

/// An exporter config polling every table of `scenario` at `endpoint_url`,
/// with the demo's expectations ([`EXPECT`], [`NOT_EXPECTED_TABLE`]) and
/// exported tags ([`EXPORT_TAGS`]).
pub fn config_for(scenario: &Scenario, endpoint_url: &str) -> Config {
    // Written as a config file and parsed like one, so the demo goes
    // through the same validation and defaults as any user's file.
    let tables: Vec<String> = scenario
        .table_names()
        .iter()
        .map(|name| match name.as_str() {
            NOT_EXPECTED_TABLE => format!("      - {{name: {name}, expect_streaming: false}}\n"),
            _ => format!("      - {name}\n"),
        })
        .collect();
    let text = format!(
        "poll_interval: {poll}ms\nrequest_timeout: 5s\nconcurrency: 4\nmax_attempts: 2\n\
         targets:\n  - region: {region}\n    endpoint_url: {endpoint_url}\n    cdc_metrics: {{interval: {cdc}ms}}\n\
         \x20   expect: {EXPECT}\n    export_tags: {EXPORT_TAGS}\n    tables:\n{tables}",
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
        let target = &config.targets[0];
        assert_eq!(target.endpoint_url.as_deref(), Some("http://127.0.0.1:1"));
        let labels: Vec<&str> = target
            .export_tags
            .iter()
            .map(|t| t.label.as_str())
            .collect();
        assert_eq!(labels, ["tag_team", "tag_owner"]);
        let overrides: Vec<(&str, bool)> = (target.tables.iter())
            .filter_map(|t| Some((t.name.as_ref(), t.expect_streaming?)))
            .collect();
        assert_eq!(overrides, [(NOT_EXPECTED_TABLE, false)]);
        assert!(target.reads_tags());
    }

    /// Every table of the scenario has tags, a few the exported `team` and
    /// `owner`; the expectation follows the `cdc-required` tag, but for the
    /// table the config overrides; and `expect.stream` tells the one
    /// expected table on a wrong stream.
    #[test]
    fn tags_and_expectations_as_the_readme_tells() {
        let scenario = Scenario::from_yaml(SCENARIO).unwrap();
        let config = config_for(&scenario, "http://127.0.0.1:1");
        let target = &config.targets[0];
        let mut expected = Vec::new();
        let mut with_team = Vec::new();
        for (table, entry) in scenario.tables.iter().zip(&target.tables) {
            assert!(!table.tags.is_empty(), "{} has no tags", table.name);
            if table.tags.iter().any(|(k, _)| k == "team") {
                assert!(
                    table.tags.iter().any(|(k, _)| k == "owner"),
                    "{}",
                    table.name
                );
                with_team.push(table.name.as_str());
            }
            let is = target.expected(entry, Some(&table.tags));
            if is.expect("tags read: known") {
                expected.push(table.name.as_str());
            }
            // Before the tags are read only the override is known.
            let before = target.expected(entry, None);
            assert_eq!(before.is_some(), table.name == NOT_EXPECTED_TABLE);
        }
        assert_eq!(
            expected,
            ["shipments", "clickstream", EXPECTED_TABLE, "ledger"]
        );
        assert!(with_team.len() >= 3 && with_team.len() < scenario.tables.len());
        assert!(with_team.contains(&EXPECTED_TABLE) && with_team.contains(&NOT_EXPECTED_TABLE));
        // The wrong stream: the one expected table whose stream's name does
        // not match.
        let pattern = (target.expect.as_ref())
            .and_then(|e| e.stream.as_ref())
            .expect("expect.stream");
        let wrong: Vec<&str> = (scenario.tables.iter())
            .filter(|t| expected.contains(&t.name.as_str()))
            .filter(|t| {
                (t.destinations.iter()).all(|d| {
                    let name = dke_simulator::parse_stream_arn(&d.stream_arn).unwrap().2;
                    !pattern.is_match(name)
                })
            })
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(wrong, ["ledger"]);
    }

    /// The two switched-off destinations are ACTIVE until the script
    /// disables them, which the simulator's rules admit; one table must
    /// stream, the other need not; both are DISABLED well within three
    /// minutes.
    #[tokio::test]
    async fn the_switched_off_destinations_go_disabled_early() {
        let scenario = Scenario::from_yaml(SCENARIO).unwrap();
        let disabled_by = DISABLE_AFTER + scenario.transitions.disabling + 2 * POLL_INTERVAL;
        assert!(disabled_by < Duration::from_secs(150), "{disabled_by:?}");
        let simulator = Simulator::start(scenario.clone()).await.unwrap();
        for (table, stream) in SWITCHED_OFF {
            let spec = (scenario.tables.iter())
                .find(|t| t.name == table)
                .expect("a scenario table");
            let statuses: Vec<&str> = (spec.destinations.iter())
                .filter(|d| d.stream_arn == stream)
                .flat_map(|d| d.timeline.iter().map(|s| s.status.as_str()))
                .collect();
            assert_eq!(statuses, ["ACTIVE"], "{table}");
            assert_eq!(
                simulator.disable_destination(table, stream),
                Ok("DISABLING")
            );
        }
        assert_eq!(
            [EXPECTED_TABLE, NOT_EXPECTED_TABLE],
            SWITCHED_OFF.map(|(table, _)| table)
        );
        simulator.shutdown().await;
    }

    /// The script switches both destinations off at [`DISABLE_AFTER`], not
    /// before (an Enable elsewhere is refused while they are ACTIVE, and
    /// changes nothing; a Disable is refused once they are not).
    #[tokio::test(start_paused = true)]
    async fn the_script_switches_off_on_time() {
        let scenario = Scenario::from_yaml(SCENARIO).unwrap();
        let simulator = Simulator::start(scenario).await.unwrap();
        let script = tokio::spawn(script(simulator.clone()));
        let elsewhere = "arn:aws:kinesis:us-east-1:123456789012:stream/elsewhere-cdc";
        tokio::time::sleep(DISABLE_AFTER - Duration::from_secs(1)).await;
        for (table, _) in SWITCHED_OFF {
            assert_eq!(
                simulator.enable_destination(table, elsewhere),
                Err(dke_simulator::DestinationError::NotDisabled),
                "{table} still streams"
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        for (table, stream) in SWITCHED_OFF {
            assert_eq!(
                simulator.disable_destination(table, stream),
                Err(dke_simulator::DestinationError::NotActive),
                "{table} was switched off"
            );
        }
        script.abort();
        let _ = script.await;
        simulator.shutdown().await;
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
