//! No accepted config can panic: configs at the edges of every number's range (the lowest and
//! highest values, just outside, zero, negative, huge, NaN and infinity spellings, tiny
//! durations, long table lists). Each one `config::parse` (what `--config.check` runs) rejects
//! names the one field that was out of range; each one it accepts runs in process against the
//! simulator for a while, polls its scopes, never panics on any thread, and shuts down cleanly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

use dynamodb_kinesis_exporter::config::{self, ConfigError};
use proptest::prelude::*;
use proptest::sample::Index;

use dynamodb_kinesis_exporter::{Exporter, Settings};

use crate::support::{family, scrape, simulator, test_credentials};

/// What each field may be set to: the values its range accepts (with "absent" among them) and
/// values just or far outside it.
struct Field {
    key: &'static str,
    valid: &'static [&'static str],
    invalid: &'static [&'static str],
}

const ABSENT: &str = "";

const POLL_OR_TIMEOUT: Field = Field {
    key: "",
    valid: &[
        ABSENT,
        "100ms",
        "101ms",
        "24h",
        "1d",
        "23h59m59s999ms",
        "1s",
        "1.5s",
    ],
    invalid: &[
        "99ms",
        "0s",
        "1ms",
        "24h1ms",
        "18446744073709551615d",
        "99.9ms",
        "1 sec",
        "-1s",
        "5",
        "~",
        "[]",
    ],
};
const SLOW_INTERVAL: Field = Field {
    key: "",
    valid: &[ABSENT, "1s", "1001ms", "24h"],
    invalid: &["999ms", "0s", "25h", "1e3", "\"\""],
};
const CONCURRENCY: Field = Field {
    key: "concurrency",
    valid: &[ABSENT, "1", "1000", "2", "0x10"],
    invalid: &[
        "0",
        "-1",
        "1001",
        "2.5",
        "1e300",
        "99999999999999999999",
        ".nan",
        "true",
    ],
};
const ATTEMPTS: Field = Field {
    key: "max_attempts",
    valid: &[ABSENT, "1", "10", "+3"],
    invalid: &["0", "11", "-5", "1.0", "\"3\""],
};
const RATE: Field = Field {
    key: "max_requests_per_second",
    valid: &[ABSENT, "0.01", "1e-2", "10000", "1.0e+4", "0.5", "7", "250"],
    invalid: &[
        "1e-20",
        "0",
        "-0.0",
        ".nan",
        ".NaN",
        ".inf",
        "-.inf",
        "10000.0001",
        "1e400",
        "0.00999",
        "\"5\"",
    ],
};

const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-south-1"];
/// Tables in every scope of the simulator; targets list the first 1, 3 or all of them.
const TABLES: usize = 60;

/// One generated config: the settings of the document and of up to three targets, each an
/// index into its field's valid values, and which one setting (if any) is out of range.
#[derive(Debug, Clone)]
struct Edges {
    globals: [Index; 5],
    targets: Vec<TargetEdges>,
    bad: Option<Index>,
    bad_value: Index,
}

#[derive(Debug, Clone)]
struct TargetEdges {
    settings: [Index; 3],
    tables: usize,
    discovery: Option<Index>,
    cdc: Option<Index>,
}

fn edges() -> impl Strategy<Value = Edges> {
    let target = (
        any::<[Index; 3]>(),
        prop::sample::select(vec![1, 3, TABLES]),
        prop::option::of(any::<Index>()),
        prop::option::of(any::<Index>()),
    )
        .prop_map(|(settings, tables, discovery, cdc)| TargetEdges {
            settings,
            tables,
            discovery,
            cdc,
        });
    (
        any::<[Index; 5]>(),
        prop::collection::vec(target, 1..=3),
        // One case in three has a setting out of range.
        prop::option::weighted(0.33, any::<Index>()),
        any::<Index>(),
    )
        .prop_map(|(globals, targets, bad, bad_value)| Edges {
            globals,
            targets,
            bad,
            bad_value,
        })
}

/// A setting of the generated text: its path, where it goes, its field and chosen value.
struct Setting {
    path: String,
    field: &'static Field,
    value: &'static str,
}

impl Edges {
    /// Every setting with its value: the chosen valid one, or for the bad one an invalid one.
    fn settings(&self) -> Vec<Setting> {
        let globals = [
            ("poll_interval", &POLL_OR_TIMEOUT),
            ("request_timeout", &POLL_OR_TIMEOUT),
            (CONCURRENCY.key, &CONCURRENCY),
            (ATTEMPTS.key, &ATTEMPTS),
            (RATE.key, &RATE),
        ];
        let mut all: Vec<(String, &'static Field, &Index)> = (globals.iter().zip(&self.globals))
            .map(|((key, field), at)| (key.to_string(), *field, at))
            .collect();
        for (t, target) in self.targets.iter().enumerate() {
            let keys = [
                ("poll_interval", &POLL_OR_TIMEOUT),
                ("request_timeout", &POLL_OR_TIMEOUT),
                (RATE.key, &RATE),
            ];
            for ((key, field), at) in keys.iter().zip(&target.settings) {
                all.push((format!("targets[{t}].{key}"), *field, at));
            }
            if let Some(at) = &target.discovery {
                all.push((
                    format!("targets[{t}].discovery.refresh_interval"),
                    &SLOW_INTERVAL,
                    at,
                ));
            }
            if let Some(at) = &target.cdc {
                all.push((
                    format!("targets[{t}].cdc_metrics.interval"),
                    &SLOW_INTERVAL,
                    at,
                ));
            }
        }
        let bad = self.bad.as_ref().map(|i| i.index(all.len()));
        (all.into_iter().enumerate())
            .map(|(i, (path, field, at))| Setting {
                value: match Some(i) == bad {
                    true => field.invalid[self.bad_value.index(field.invalid.len())],
                    false => field.valid[at.index(field.valid.len())],
                },
                path,
                field,
            })
            .collect()
    }

    fn text(&self) -> String {
        let settings = self.settings();
        let value = |path: &str| settings.iter().find(|s| s.path == path).map(|s| s.value);
        let line = |out: &mut String, indent: &str, key: &str, path: &str| {
            if let Some(v) = value(path).filter(|v| *v != ABSENT) {
                out.push_str(&format!("{indent}{key}: {v}\n"));
            }
        };
        let mut out = String::new();
        for key in [
            "poll_interval",
            "request_timeout",
            CONCURRENCY.key,
            ATTEMPTS.key,
            RATE.key,
        ] {
            line(&mut out, "", key, key);
        }
        out.push_str("targets:\n");
        for (t, target) in self.targets.iter().enumerate() {
            out.push_str(&format!(
                "  - region: {}\n    endpoint_url: {{endpoint}}\n",
                REGIONS[t]
            ));
            for key in ["poll_interval", "request_timeout", RATE.key] {
                line(&mut out, "    ", key, &format!("targets[{t}].{key}"));
            }
            let names: Vec<String> = (0..target.tables).map(|i| format!("t{i:02}")).collect();
            out.push_str(&format!("    tables: [{}]\n", names.join(", ")));
            if target.discovery.is_some() {
                out.push_str("    discovery:\n      include: [\"^t0\"]\n");
                line(
                    &mut out,
                    "      ",
                    "refresh_interval",
                    &format!("targets[{t}].discovery.refresh_interval"),
                );
            }
            if target.cdc.is_some() {
                out.push_str("    cdc_metrics:\n      enabled: true\n");
                line(
                    &mut out,
                    "      ",
                    "interval",
                    &format!("targets[{t}].cdc_metrics.interval"),
                );
            }
        }
        out
    }

    /// The rate target `t` runs at (its own, else the document's, else the default).
    fn rate(&self, t: usize) -> f64 {
        let settings = self.settings();
        let value = |path: &str| (settings.iter().find(|s| s.path == path)).map(|s| s.value);
        [format!("targets[{t}].{}", RATE.key), RATE.key.to_owned()]
            .iter()
            .filter_map(|p| value(p).filter(|v| *v != ABSENT))
            .find_map(|v| v.parse::<f64>().ok())
            .unwrap_or(config::DEFAULT_MAX_REQUESTS_PER_SECOND)
    }
}

/// Panics on threads whose name starts with [`THREADS`]: the runtime each case runs in.
static PANICS: AtomicUsize = AtomicUsize::new(0);
const THREADS: &str = "config-edges";

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if thread.name().is_some_and(|n| n.starts_with(THREADS)) {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// The simulator's world: the same tables in each region's scope.
fn scenario() -> String {
    let tables: String = (0..TABLES)
        .map(|i| format!("      - name: t{i:02}\n"))
        .collect();
    let mut out = format!("tables:\n{}scopes:\n", tables.replace("      -", "  -"));
    for region in &REGIONS[1..] {
        out.push_str(&format!(
            "  - account_id: \"123456789012\"\n    region: {region}\n    tables:\n{tables}"
        ));
    }
    out
}

/// How long each accepted config runs: long enough for polls every 100 ms to come round many
/// times, and for the budget to space calls at the lowest rate.
const RUN: Duration = Duration::from_millis(1500);

/// The drain on shutdown, per scope.
const GRACE: Duration = Duration::from_secs(2);
/// How long `serve` may take to return once asked to stop: the grace of each of up to three
/// scopes, and a margin. At a low rate a call waiting for a budget token keeps its scope
/// draining for the whole grace, and the scopes drain one after another (measured with a grace
/// of 5 s: one scope 5 s, three scopes 15 s).
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// A rate at which a scope's first poll comes within [`RUN`], whatever else (the account
/// lookup, a listing) takes tokens first.
const PROMPT_RATE: f64 = 5.0;

fn run_accepted(edges: &Edges, text: &str) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(THREADS)
        .enable_all()
        .build()
        .expect("a runtime");
    let before = PANICS.load(Ordering::SeqCst);
    let text = text.to_owned();
    let shown = text.clone();
    let (polled, stopped) = runtime.block_on(async move {
        let sim = simulator(&scenario()).await;
        let text = text.replace("{endpoint}", &sim.endpoint_url());
        let config = config::parse(&text, "edges.yaml").expect("checked above");
        let mut settings = Settings::new(config, "127.0.0.1:0".parse().unwrap());
        settings.client = test_credentials();
        settings.grace = GRACE;
        let exporter = Exporter::bind(settings).await.expect("exporter must bind");
        let addr = exporter.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve = tokio::spawn(exporter.serve(async move {
            let _ = stopped.await;
        }));
        tokio::time::sleep(RUN).await;
        let page = scrape(addr).await;
        let _ = stop.send(());
        let began = std::time::Instant::now();
        let ended = tokio::time::timeout(STOP_LIMIT, serve).await;
        let polled = family(&page, "dynamodb_kinesis_table_poll_success");
        (
            polled,
            ended.map(|joined| (joined.is_ok(), began.elapsed())),
        )
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    prop_assert_eq!(
        PANICS.load(Ordering::SeqCst),
        before,
        "a thread panicked:\n{}",
        shown
    );
    match stopped {
        Ok((true, _)) => {}
        Ok((false, _)) => prop_assert!(false, "serve panicked:\n{}", shown),
        Err(_) => prop_assert!(
            false,
            "still running {:?} after shutdown:\n{}",
            STOP_LIMIT,
            shown
        ),
    }
    for (t, region) in REGIONS.iter().enumerate().take(edges.targets.len()) {
        let polls = polled
            .keys()
            .filter(|series| series.contains(&format!("region=\"{region}\"")))
            .count();
        if edges.rate(t) >= PROMPT_RATE {
            prop_assert!(polls >= 1, "no poll in {region}: {:?}\n{}", polled, shown);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        failure_persistence: None,
        // Each case runs an exporter for seconds: report the case found, not a shrunk one.
        max_shrink_iters: 0,
        ..ProptestConfig::default()
    })]

    #[test]
    fn accepted_edge_configs_run_without_a_panic(edges in edges()) {
        count_panics();
        let text = edges.text();
        let bad = edges.settings().into_iter().find(|s| !s.field.valid.contains(&s.value));
        // What `--config.check` says, with the simulator's address still to come.
        let checked = config::parse(&text.replace("{endpoint}", "http://127.0.0.1:9"), "edges.yaml");
        match (checked, bad) {
            (Ok(_), None) => run_accepted(&edges, &text)?,
            (Err(ConfigError::Invalid(problems)), Some(bad)) => {
                prop_assert_eq!(problems.len(), 1, "{:?}\n{}", problems, text);
                prop_assert_eq!(&problems[0].path, &bad.path, "{}", text);
                prop_assert!(problems[0].line.is_some(), "{}", problems[0]);
            }
            (Ok(_), Some(bad)) => prop_assert!(false, "{} = {} accepted:\n{}", bad.path, bad.value, text),
            (Err(err), _) => prop_assert!(false, "rejected: {}\n{}", err, text),
        }
    }
}

#[test]
fn the_edges_include_every_field_at_both_ends() {
    // Every valid value of every field parses alone, and every invalid one is rejected alone.
    let fields: [(&Field, &str); 5] = [
        (&POLL_OR_TIMEOUT, "poll_interval"),
        (&POLL_OR_TIMEOUT, "request_timeout"),
        (&CONCURRENCY, "concurrency"),
        (&ATTEMPTS, "max_attempts"),
        (&RATE, "max_requests_per_second"),
    ];
    let target = "targets:\n  - region: us-east-1\n    tables: [t00]\n";
    for (field, key) in fields {
        for value in field.valid.iter().filter(|v| **v != ABSENT) {
            let text = format!("{key}: {value}\n{target}");
            assert!(config::parse(&text, "e.yaml").is_ok(), "{text}");
        }
        for value in field.invalid {
            let text = format!("{key}: {value}\n{target}");
            assert!(config::parse(&text, "e.yaml").is_err(), "{text}");
        }
    }
    for value in SLOW_INTERVAL.valid.iter().filter(|v| **v != ABSENT) {
        let text = format!("{target}    cdc_metrics: {{interval: {value}}}\n");
        assert!(config::parse(&text, "e.yaml").is_ok(), "{text}");
    }
}
