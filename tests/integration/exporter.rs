//! The exporter's `run` path end to end, in process: the real
//! aws-sdk-dynamodb client against the project's DynamoDB simulator, both on
//! loopback port 0, checked through `/metrics` as Prometheus would see it.

use std::time::Duration;

use crate::support::*;
use dke_simulator::{DestinationSpec, Fault, TableSpec};

const STATUS: &str = "dynamodb_kinesis_destination_status";
const INFO: &str = "dynamodb_kinesis_destination_info";
const SINCE: &str = "dynamodb_kinesis_destination_status_change_timestamp_seconds";
const COUNT: &str = "dynamodb_kinesis_table_destinations";
const SUCCESS: &str = "dynamodb_kinesis_table_poll_success";
const LAST_SUCCESS: &str = "dynamodb_kinesis_table_last_success_timestamp_seconds";
const ERRORS: &str = "dynamodb_kinesis_api_errors_total";

const ACCOUNT: &str = "123456789012";

fn stream(name: &str) -> String {
    format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{name}")
}

/// Config polling `tables` quickly, without retries, with a short timeout.
fn fast_config(tables: &[&str], concurrency: usize) -> String {
    let list: String = tables.iter().map(|t| format!("      - {t}\n")).collect();
    format!(
        "poll_interval: 200ms\nrequest_timeout: 1s\nconcurrency: {concurrency}\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    endpoint_url: {{endpoint}}\n    tables:\n{list}"
    )
}

fn status_of(page: &str, table: &str, stream_arn: &str, status: &str) -> Option<f64> {
    value(
        page,
        STATUS,
        &[
            ("table", table),
            ("region", "us-east-1"),
            ("account_id", ACCOUNT),
            ("stream_arn", stream_arn),
            ("status", status),
        ],
    )
}

fn table_value(page: &str, name: &str, table: &str) -> Option<f64> {
    value(
        page,
        name,
        &[
            ("table", table),
            ("region", "us-east-1"),
            ("account_id", ACCOUNT),
        ],
    )
}

fn errors(page: &str, table: &str, code: &str) -> f64 {
    value(
        page,
        ERRORS,
        &[
            ("table", table),
            ("region", "us-east-1"),
            ("account_id", ACCOUNT),
            ("code", code),
        ],
    )
    .unwrap_or(0.0)
}

const ALL_STATUSES: [&str; 6] = [
    "ENABLING",
    "ACTIVE",
    "DISABLING",
    "DISABLED",
    "ENABLE_FAILED",
    "UPDATING",
];

#[tokio::test]
async fn every_status_value_is_exported_as_a_stateset() {
    let mut dests = String::new();
    for status in ALL_STATUSES.iter().chain(["PAUSED"].iter()) {
        dests.push_str(&format!(
            "      - stream_arn: {}\n        status: {status}\n",
            stream(&format!("s-{}", status.to_lowercase()))
        ));
    }
    let sim = simulator(&format!(
        "tables:\n  - name: orders\n    destinations:\n{dests}"
    ))
    .await;
    let exp = exporter(&fast_config(&["orders"], 2), &sim).await;
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        table_value(p, COUNT, "orders") == Some(7.0)
    })
    .await;

    for current in ALL_STATUSES {
        let arn = stream(&format!("s-{}", current.to_lowercase()));
        for status in ALL_STATUSES {
            let expected = if status == current { 1.0 } else { 0.0 };
            assert_eq!(
                status_of(&page, "orders", &arn, status),
                Some(expected),
                "{arn} {status}"
            );
        }
        assert_eq!(status_of(&page, "orders", &arn, "PAUSED"), None);
    }
    // A status AWS adds later: its own series with 1, the known ones at 0.
    let paused = stream("s-paused");
    assert_eq!(status_of(&page, "orders", &paused, "PAUSED"), Some(1.0));
    for status in ALL_STATUSES {
        assert_eq!(status_of(&page, "orders", &paused, status), Some(0.0));
    }
    assert_eq!(family(&page, STATUS).len(), 7 * 6 + 1);
    assert_eq!(table_value(&page, SUCCESS, "orders"), Some(1.0));
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn info_labels_carry_arn_parts_description_and_precision() {
    let sim = simulator(&format!(
        "tables:\n  - name: orders\n    destinations:\n      - stream_arn: {}\n        status: ENABLE_FAILED\n        description: \"KMS key is disabled\"\n        precision: MICROSECOND\n      - stream_arn: {}\n        status: ACTIVE\n",
        stream("orders-cdc"),
        stream("orders-audit")
    ))
    .await;
    let exp = exporter(&fast_config(&["orders"], 2), &sim).await;
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        table_value(p, COUNT, "orders") == Some(2.0)
    })
    .await;
    let info = family(&page, INFO);
    assert_eq!(
        info.get(&series(
            INFO,
            &[
                ("table", "orders"),
                ("region", "us-east-1"),
                ("account_id", ACCOUNT),
                ("stream_arn", &stream("orders-cdc")),
                ("stream_name", "orders-cdc"),
                ("stream_account_id", ACCOUNT),
                ("status_description", "KMS key is disabled"),
                ("creation_date_time_precision", "MICROSECOND"),
            ]
        )),
        Some(&1.0),
        "{info:#?}"
    );
    // Fields AWS did not send are empty strings, not missing labels.
    assert_eq!(
        info.get(&series(
            INFO,
            &[
                ("table", "orders"),
                ("region", "us-east-1"),
                ("account_id", ACCOUNT),
                ("stream_arn", &stream("orders-audit")),
                ("stream_name", "orders-audit"),
                ("stream_account_id", ACCOUNT),
                ("status_description", ""),
                ("creation_date_time_precision", ""),
            ]
        )),
        Some(&1.0),
        "{info:#?}"
    );
    assert_eq!(info.len(), 2);
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn zero_destinations_and_table_given_as_arn() {
    let sim = simulator(&format!(
        "account_id: \"{ACCOUNT}\"\ntables:\n  - name: empty\n  - name: payments\n    destinations:\n      - stream_arn: {}\n        status: ACTIVE\n",
        stream("payments-cdc")
    ))
    .await;
    let arn = format!("arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/payments");
    let exp = exporter(&fast_config(&["empty", &arn], 2), &sim).await;
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        table_value(p, COUNT, "empty").is_some() && table_value(p, COUNT, "payments").is_some()
    })
    .await;
    assert_eq!(table_value(&page, COUNT, "empty"), Some(0.0));
    assert_eq!(table_value(&page, SUCCESS, "empty"), Some(1.0));
    assert!(family(&page, STATUS)
        .keys()
        .all(|k| !k.contains("table=\"empty\"")));
    // The ARN was sent on the wire, the label is the table name.
    assert_eq!(table_value(&page, COUNT, "payments"), Some(1.0));
    assert_eq!(
        status_of(&page, "payments", &stream("payments-cdc"), "ACTIVE"),
        Some(1.0)
    );
    assert!(!page.contains("table=\"arn:"), "{page}");
    assert!(sim.requests_for("payments") >= 1);
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn vanished_destination_and_vanished_table_lose_their_series() {
    let sim = simulator(&format!(
        "tables:\n  - name: orders\n    destinations:\n      - stream_arn: {}\n        status: ACTIVE\n      - stream_arn: {}\n        status: DISABLING\n",
        stream("keep"),
        stream("drop")
    ))
    .await;
    let exp = exporter(&fast_config(&["orders"], 2), &sim).await;
    scrape_until(exp.addr, Duration::from_secs(10), |p| {
        table_value(p, COUNT, "orders") == Some(2.0)
    })
    .await;

    sim.set_destinations(
        "orders",
        vec![DestinationSpec::fixed(&stream("keep"), "ACTIVE")],
    );
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        table_value(p, COUNT, "orders") == Some(1.0)
    })
    .await;
    assert!(!page.contains(&stream("drop")), "{page}");
    assert_eq!(family(&page, STATUS).len(), 6);

    sim.remove_table("orders");
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        errors(p, "orders", "ResourceNotFoundException") >= 1.0
    })
    .await;
    assert!(family(&page, STATUS).is_empty(), "{page}");
    assert!(family(&page, INFO).is_empty(), "{page}");
    assert!(family(&page, SINCE).is_empty(), "{page}");
    assert_eq!(table_value(&page, COUNT, "orders"), Some(0.0));
    assert_eq!(table_value(&page, SUCCESS, "orders"), Some(0.0));
    exp.stop().await;
    sim.shutdown().await;
}

/// Each fault: series kept, success 0, the error counted under its code,
/// and recovery once the fault clears.
#[tokio::test]
async fn faults_keep_last_known_series_and_recover() {
    let faults = [
        (Fault::Throttle, "ThrottlingException"),
        (Fault::InternalError, "InternalServerError"),
        (Fault::AccessDenied, "AccessDeniedException"),
        (Fault::Hang, "timeout"),
        (Fault::Reset, "dispatch"),
        (Fault::Malformed, "response"),
    ];
    let mut scenario = String::from("tables:\n");
    let mut names = Vec::new();
    for (i, _) in faults.iter().enumerate() {
        let name = format!("table-{i}");
        scenario.push_str(&format!(
            "  - name: {name}\n    destinations:\n      - stream_arn: {}\n        status: ACTIVE\n",
            stream(&name)
        ));
        names.push(name);
    }
    let sim = simulator(&scenario).await;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let exp = exporter(&fast_config(&refs, 8), &sim).await;
    scrape_until(exp.addr, Duration::from_secs(10), |p| {
        names
            .iter()
            .all(|n| table_value(p, SUCCESS, n) == Some(1.0))
    })
    .await;
    let first_success: Vec<f64> = {
        let page = scrape(exp.addr).await;
        names
            .iter()
            .map(|n| table_value(&page, LAST_SUCCESS, n).expect("last success"))
            .collect()
    };

    for ((fault, _), name) in faults.iter().zip(&names) {
        sim.set_fault(name, Some(*fault));
    }
    let page = scrape_until(exp.addr, Duration::from_secs(15), |p| {
        faults.iter().zip(&names).all(|((_, code), n)| {
            errors(p, n, code) >= 1.0 && table_value(p, SUCCESS, n) == Some(0.0)
        })
    })
    .await;
    for ((_, code), name) in faults.iter().zip(&names) {
        assert_eq!(
            status_of(&page, name, &stream(name), "ACTIVE"),
            Some(1.0),
            "{name} ({code}) must keep its last known status"
        );
        assert_eq!(table_value(&page, COUNT, name), Some(1.0), "{name}");
        let codes: Vec<String> = family(&page, ERRORS)
            .keys()
            .filter(|k| k.contains(&format!("table=\"{name}\"")))
            .cloned()
            .collect();
        assert_eq!(
            codes.len(),
            1,
            "{name}: only {code} expected, got {codes:?}"
        );
    }
    // The last-success timestamp stops moving while the table fails.
    let frozen: Vec<f64> = names
        .iter()
        .map(|n| table_value(&page, LAST_SUCCESS, n).unwrap())
        .collect();
    for (f, s) in frozen.iter().zip(&first_success) {
        assert!(f >= s);
    }

    for name in &names {
        sim.set_fault(name, None);
    }
    let page = scrape_until(exp.addr, Duration::from_secs(15), |p| {
        names
            .iter()
            .all(|n| table_value(p, SUCCESS, n) == Some(1.0))
    })
    .await;
    for (i, name) in names.iter().enumerate() {
        assert!(
            table_value(&page, LAST_SUCCESS, name).unwrap() > frozen[i],
            "{name}"
        );
        // Counters never go back.
        assert!(errors(&page, name, faults[i].1) >= 1.0);
    }
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn status_transitions_over_time_move_the_change_timestamp() {
    let arn = stream("orders-cdc");
    let sim = simulator(&format!(
        "tables:\n  - name: orders\n    destinations:\n      - stream_arn: {arn}\n        timeline:\n          - {{ status: ENABLING, for: 3s }}\n          - {{ status: ACTIVE }}\n"
    ))
    .await;
    let exp = exporter(&fast_config(&["orders"], 2), &sim).await;
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        status_of(p, "orders", &arn, "ENABLING") == Some(1.0)
    })
    .await;
    let labels = [
        ("table", "orders"),
        ("region", "us-east-1"),
        ("account_id", ACCOUNT),
        ("stream_arn", arn.as_str()),
    ];
    let enabling_since = value(&page, SINCE, &labels).unwrap();
    // Stays put while the status does not change.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let page = scrape(exp.addr).await;
    if status_of(&page, "orders", &arn, "ENABLING") == Some(1.0) {
        assert_eq!(value(&page, SINCE, &labels), Some(enabling_since));
    }
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        status_of(p, "orders", &arn, "ACTIVE") == Some(1.0)
    })
    .await;
    assert_eq!(status_of(&page, "orders", &arn, "ENABLING"), Some(0.0));
    let active_since = value(&page, SINCE, &labels).unwrap();
    assert!(
        active_since >= enabling_since + 0.5,
        "{enabling_since} -> {active_since}"
    );
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn concurrency_bound_holds_across_tables() {
    let mut scenario = String::from("tables:\n");
    let names: Vec<String> = (0..12).map(|i| format!("slow-{i:02}")).collect();
    for name in &names {
        scenario.push_str(&format!("  - name: {name}\n    latency: 300ms\n"));
    }
    let sim = simulator(&scenario).await;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let exp = exporter(&fast_config(&refs, 3), &sim).await;
    scrape_until(exp.addr, Duration::from_secs(20), |p| {
        names
            .iter()
            .all(|n| table_value(p, SUCCESS, n) == Some(1.0))
    })
    .await;
    // 12 tables of 300 ms each at 3 in flight: the bound is reached and held.
    assert_eq!(sim.max_in_flight(), 3);
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn readiness_waits_for_every_table_and_a_hung_table_delays_no_other() {
    let sim = simulator(&format!(
        "tables:\n  - name: stuck\n    fault: hang\n  - name: fine\n    destinations:\n      - stream_arn: {}\n        status: ACTIVE\n",
        stream("fine")
    ))
    .await;
    let exp = exporter(&fast_config(&["stuck", "fine"], 2), &sim).await;
    // "fine" answers right away while "stuck" hangs for its 1 s timeout.
    scrape_until(exp.addr, Duration::from_secs(5), |p| {
        table_value(p, SUCCESS, "fine") == Some(1.0)
    })
    .await;
    let ready = request(exp.addr, "GET", "/readyz").await;
    if exp.store.readiness().0 < 2 {
        assert_eq!(ready.status, 503, "{}", ready.body);
        assert_eq!(ready.body, "not ready: 1 of 2 tables polled\n");
    }
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        errors(p, "stuck", "timeout") >= 1.0
    })
    .await;
    assert_eq!(table_value(&page, SUCCESS, "stuck"), Some(0.0));
    let ready = request(exp.addr, "GET", "/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body, "ready: 2 of 2 tables polled\n");
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn http_routes_over_a_real_socket() {
    let sim = simulator("tables:\n  - name: orders\n").await;
    let exp = exporter(&fast_config(&["orders"], 1), &sim).await;
    let metrics = request(exp.addr, "GET", "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let head = request(exp.addr, "HEAD", "/metrics").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "");
    let landing = request(exp.addr, "GET", "/").await;
    assert_eq!(landing.status, 200);
    assert!(
        landing.body.contains("href=\"/metrics\""),
        "{}",
        landing.body
    );
    // The status page lists the table, and its query reaches it through
    // the server.
    assert!(
        landing.body.contains("<span class=\"name\">orders</span>"),
        "{}",
        landing.body
    );
    assert_eq!(
        landing.header("content-security-policy"),
        Some("default-src 'none'; style-src 'unsafe-inline'")
    );
    assert_eq!(request(exp.addr, "GET", "/?page=1").await.status, 200);
    assert_eq!(request(exp.addr, "GET", "/?page=2").await.status, 404);
    assert_eq!(request(exp.addr, "GET", "/?page=abc").await.status, 400);
    assert_eq!(request(exp.addr, "GET", "/metrics?x=1").await.status, 200);
    assert_eq!(request(exp.addr, "GET", "/healthz").await.status, 200);
    assert_eq!(request(exp.addr, "GET", "/missing").await.status, 404);
    assert_eq!(request(exp.addr, "GET", "/metrics/extra").await.status, 404);
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let reply = request(exp.addr, method, "/metrics").await;
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    }
    assert_eq!(request(exp.addr, "POST", "/healthz").await.status, 405);
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_polling_and_the_listener() {
    let sim = simulator("tables:\n  - name: orders\n").await;
    let exp = exporter(&fast_config(&["orders"], 1), &sim).await;
    scrape_until(exp.addr, Duration::from_secs(10), |p| {
        table_value(p, SUCCESS, "orders") == Some(1.0)
    })
    .await;
    let addr = exp.addr;
    exp.stop().await;
    let after_stop = sim.requests_for("orders");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(sim.requests_for("orders"), after_stop, "polling must stop");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener must be closed"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn simulator_added_table_spec_is_polled_by_name() {
    // put_table replaces a table and restarts its timeline; the exporter
    // follows on the next poll.
    let sim = simulator("tables:\n  - name: orders\n").await;
    let exp = exporter(&fast_config(&["orders"], 1), &sim).await;
    sim.put_table(TableSpec::new("orders").with_destination(
        DestinationSpec::fixed(&stream("late"), "UPDATING").with_description("resharding"),
    ));
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        status_of(p, "orders", &stream("late"), "UPDATING") == Some(1.0)
    })
    .await;
    assert!(page.contains("status_description=\"resharding\""));
    exp.stop().await;
    sim.shutdown().await;
}

/// The whole exposition of the per-table families, as Prometheus receives
/// it, against a fixture. Timestamps are replaced by `<ts>`; the process,
/// histogram and `dynamodb_kinesis_exporter_*` families (which vary by
/// machine and run) are left out.
#[tokio::test]
async fn golden_exposition() {
    let sim = simulator(&format!(
        "tables:\n  - name: orders\n    destinations:\n      - stream_arn: {}\n        status: ENABLE_FAILED\n        description: \"KMS key arn:aws:kms:us-east-1:{ACCOUNT}:key/1 is disabled\"\n        precision: MILLISECOND\n      - stream_arn: {}\n        status: ACTIVE\n        precision: MICROSECOND\n  - name: empty\n  - name: throttled\n    fault: throttle\n",
        stream("orders-cdc"),
        stream("orders-audit"),
    ))
    .await;
    let exp = exporter(&fast_config(&["orders", "empty", "throttled"], 2), &sim).await;
    scrape_until(exp.addr, Duration::from_secs(10), |p| {
        table_value(p, SUCCESS, "orders") == Some(1.0)
            && table_value(p, SUCCESS, "empty") == Some(1.0)
            && table_value(p, SUCCESS, "throttled") == Some(0.0)
    })
    .await;
    let page = scrape(exp.addr).await;
    let om = request_with(
        exp.addr,
        "GET",
        "/metrics",
        &[("Accept", PROMETHEUS_ACCEPT)],
    )
    .await;
    let zipped = request_with(
        exp.addr,
        "GET",
        "/metrics",
        &[("Accept", PROMETHEUS_ACCEPT), ("Accept-Encoding", "gzip")],
    )
    .await;
    exp.stop().await;
    sim.shutdown().await;

    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(om.body.ends_with("\n# EOF\n"), "{}", om.body);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    let mut unzipped = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&zipped.bytes[..]),
        &mut unzipped,
    )
    .expect("a valid gzip body");
    assert!(unzipped.ends_with("\n# EOF\n"));
    // Identical apart from timing-dependent values (checked by the golden
    // fixtures below and the unit tests for byte equality).
    assert_eq!(normalise_golden(&unzipped), normalise_golden(&om.body));

    for (text, fixture) in [
        (&page, "tests/fixtures/golden/exposition.txt"),
        (&om.body, "tests/fixtures/golden/exposition.openmetrics.txt"),
    ] {
        let normalised = normalise_golden(text);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(fixture, &normalised).unwrap();
        }
        let expected =
            std::fs::read_to_string(fixture).expect("fixture exists (UPDATE_GOLDEN=1 writes it)");
        assert_eq!(
            normalised, expected,
            "{fixture}: exposition changed; run with UPDATE_GOLDEN=1 and review the diff"
        );
    }
    // Same series and values in both formats.
    let sample_lines = |text: &str| -> Vec<String> {
        normalise_golden(text)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(sample_lines(&page), sample_lines(&om.body));
}

/// What Prometheus sends by default: it prefers OpenMetrics.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

/// The per-table families of a page, with timestamps and error counts
/// (which depend on timing) replaced by placeholders.
fn normalise_golden(page: &str) -> String {
    let mut normalised = String::new();
    let mut keep = false;
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            keep = name.starts_with("dynamodb_kinesis_")
                && !name.starts_with("dynamodb_kinesis_exporter_")
                && name != "dynamodb_kinesis_poll_duration_seconds";
        }
        if !keep {
            continue;
        }
        let line = if !line.starts_with('#') && line.contains("_timestamp_seconds{") {
            format!("{} <ts>", line.rsplit_once(' ').unwrap().0)
        } else if (line.starts_with("dynamodb_kinesis_scope_")
            && !line.starts_with("dynamodb_kinesis_scope_tables{"))
            || line.starts_with("dynamodb_kinesis_aws_requests_total{")
        {
            // The adaptive rate, the measured interval and the number of
            // calls so far depend on timing.
            format!("{} <value>", line.rsplit_once(' ').unwrap().0)
        } else if line.starts_with("dynamodb_kinesis_api_errors_total{") {
            // At least one throttled poll happened; how many depends on timing.
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().unwrap() >= 1.0, "{line}");
            format!("{series} <count>")
        } else {
            line.to_string()
        };
        normalised.push_str(&line);
        normalised.push('\n');
    }
    normalised
}

#[tokio::test]
async fn reload_swaps_tables_keeps_state_and_survives_a_bad_file() {
    let scenario = ["orders", "payments", "inventory"]
        .iter()
        .map(|t| format!("  - name: {t}\n    destinations:\n      - stream_arn: {}\n        status: ACTIVE\n", stream(t)))
        .collect::<String>();
    let sim = simulator(&format!("tables:\n{scenario}")).await;
    let dir = scratch(&[]);
    let path = dir.path().join("exporter.yaml");
    let write = |tables: &[&str]| {
        let text = fast_config(tables, 2).replace("{endpoint}", &sim.endpoint_url());
        std::fs::write(&path, text).unwrap();
    };
    write(&["orders", "payments"]);
    let (exp, reload) = exporter_from_file(&path).await;
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        table_value(p, SUCCESS, "orders") == Some(1.0)
            && table_value(p, SUCCESS, "payments") == Some(1.0)
    })
    .await;
    let labels = [
        ("table", "orders"),
        ("region", "us-east-1"),
        ("account_id", ACCOUNT),
        ("stream_arn", &*stream("orders")),
    ];
    let orders_since = value(&page, SINCE, &labels).unwrap();
    let reload_ok = "dynamodb_kinesis_exporter_config_last_reload_successful";
    assert_eq!(value(&page, reload_ok, &[]), Some(1.0));

    write(&["orders", "inventory"]);
    reload.send(()).await.unwrap();
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        table_value(p, SUCCESS, "inventory") == Some(1.0) && !p.contains("table=\"payments\"")
    })
    .await;
    assert_eq!(
        value(&page, SINCE, &labels),
        Some(orders_since),
        "kept tables keep their state"
    );
    assert_eq!(value(&page, reload_ok, &[]), Some(1.0));

    std::fs::write(&path, "targets: []\nbogus: 1\n").unwrap();
    reload.send(()).await.unwrap();
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        value(p, reload_ok, &[]) == Some(0.0)
    })
    .await;
    assert_eq!(table_value(&page, SUCCESS, "inventory"), Some(1.0));
    // The old configuration keeps polling.
    let before = sim.requests_for("orders");
    scrape_until(exp.addr, Duration::from_secs(10), |_| {
        sim.requests_for("orders") > before + 1
    })
    .await;
    assert_eq!(request(exp.addr, "GET", "/readyz").await.status, 200);
    exp.stop().await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

const EXPECTED: &str = "dynamodb_kinesis_table_destination_expected";
const STREAM_MATCH: &str = "dynamodb_kinesis_table_destination_stream_match";
const TAGS: &str = "dynamodb_kinesis_table_tags";

/// The tag labels (and values) of a table's tags series, if it has one.
fn tag_labels(page: &str, table: &str) -> Option<Vec<(String, String)>> {
    let series = family(page, TAGS)
        .into_keys()
        .find(|s| label(s, "table").as_deref() == Some(table))?;
    let labels = ["tag_team", "tag_cost_center", "tag_owner"]
        .iter()
        .filter_map(|name| Some((name.to_string(), label(&series, name)?)))
        .collect();
    Some(labels)
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    (items.iter())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn tags_on_the_metrics_follow_a_tag_change() {
    let sim = simulator(&format!(
        "tables:\n  - name: orders\n    tags: {{team: payments, cost-center: \"42\"}}\n    destinations:\n      - stream_arn: {}\n        status: ACTIVE\n  - name: scratch\n",
        stream("orders")
    ))
    .await;
    let exp = exporter(
        "poll_interval: 1s\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    endpoint_url: {endpoint}\n    tables: [orders, scratch]\n    export_tags: [team, cost-center, owner]\n    tags_refresh_interval: 1m\n",
        &sim,
    )
    .await;
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        tag_labels(p, "orders").is_some() && tag_labels(p, "scratch").is_some()
    })
    .await;
    assert_eq!(
        tag_labels(&page, "orders").unwrap(),
        pairs(&[
            ("tag_team", "payments"),
            ("tag_cost_center", "42"),
            ("tag_owner", "")
        ])
    );
    // A table without the tags has them empty, not missing.
    assert_eq!(
        tag_labels(&page, "scratch").unwrap(),
        pairs(&[("tag_team", ""), ("tag_cost_center", ""), ("tag_owner", "")])
    );
    // The tags change; the next read, a minute (± 10 %) on, shows it.
    sim.set_tags_in(
        ACCOUNT,
        "us-east-1",
        "orders",
        pairs(&[("team", "search"), ("owner", "ana")]),
    );
    let page = scrape_until(exp.addr, Duration::from_secs(90), |p| {
        tag_labels(p, "orders").is_some_and(|t| t[0].1 == "search")
    })
    .await;
    assert_eq!(
        tag_labels(&page, "orders").unwrap(),
        pairs(&[
            ("tag_team", "search"),
            ("tag_cost_center", ""),
            ("tag_owner", "ana")
        ])
    );
    assert_eq!(family(&page, TAGS).len(), 2, "one series a table");
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn an_expected_table_is_found_by_its_tag() {
    let sim = simulator(&format!(
        "tables:\n\
         \x20 - name: orders\n    tags: {{cdc-required: \" True \"}}\n    destinations:\n      - stream_arn: {}\n        status: ACTIVE\n\
         \x20 - name: payments\n    tags: {{cdc-required: \"true\"}}\n    destinations:\n      - stream_arn: {}\n        status: DISABLED\n\
         \x20 - name: scratch\n    tags: {{cdc-required: \"false\"}}\n\
         \x20 - name: untagged\n\
         \x20 - name: audit\n    destinations:\n      - stream_arn: {}\n        status: ACTIVE\n",
        stream("cdc-orders"),
        stream("cdc-payments"),
        stream("audit-log"),
    ))
    .await;
    // Discovered tables are expected by their tag; an explicit entry's
    // own expect_streaming overrides it either way.
    let exp = exporter(
        "poll_interval: 1s\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    endpoint_url: {endpoint}\n    tables:\n      - {name: untagged, expect_streaming: true}\n      - {name: audit, expect_streaming: true}\n    discovery:\n      refresh_interval: 1h\n    expect:\n      tag: cdc-required\n      stream: \"^cdc-\"\n",
        &sim,
    )
    .await;
    let page = scrape_until(exp.addr, Duration::from_secs(15), |p| {
        family(p, EXPECTED).len() == 5 && family(p, STREAM_MATCH).len() == 2
    })
    .await;
    let expected = |table: &str| table_value(&page, EXPECTED, table);
    assert_eq!(expected("orders"), Some(1.0), "tag \" True \" says so");
    assert_eq!(expected("payments"), Some(1.0));
    assert_eq!(expected("scratch"), Some(0.0));
    assert_eq!(expected("untagged"), Some(1.0), "its own override");
    assert_eq!(expected("audit"), Some(1.0));
    // The expected table that does not stream: its only destination is
    // DISABLED, so there is nothing to match a stream name against.
    assert_eq!(
        status_of(&page, "payments", &stream("cdc-payments"), "DISABLED"),
        Some(1.0)
    );
    assert_eq!(table_value(&page, STREAM_MATCH, "payments"), None);
    assert_eq!(table_value(&page, STREAM_MATCH, "orders"), Some(1.0));
    assert_eq!(
        table_value(&page, STREAM_MATCH, "audit"),
        Some(0.0),
        "the wrong stream"
    );
    exp.stop().await;
    sim.shutdown().await;
}
