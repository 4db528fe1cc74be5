//! The simulator on its own, playing a scenario file, for
//! `bench/discovery_faults.sh`: an exporter binary of any version runs as
//! its own process against it. Prints the endpoint URL on stdout, then
//! serves until killed, or for at most LIMIT seconds.
//!
//!   cargo run --release --example discovery_faults_simulator -- SCENARIO.yaml [LIMIT]
//!
//! Default LIMIT: 600 s.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use dke_simulator::{Scenario, Simulator};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(
        args.next()
            .expect("usage: discovery_faults_simulator SCENARIO.yaml [LIMIT]"),
    );
    let limit: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(600);
    let scenario = match Scenario::load(&path) {
        Ok(scenario) => scenario,
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(2);
        }
    };
    let sim = Simulator::start(scenario).await.expect("simulator");
    println!("{}", sim.endpoint_url());
    let _ = std::io::stdout().flush();
    tokio::time::sleep(Duration::from_secs(limit)).await;
    sim.shutdown().await;
}
