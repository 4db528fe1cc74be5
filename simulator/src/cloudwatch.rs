//! CloudWatch over Smithy RPC v2 CBOR, the protocol `aws-sdk-cloudwatch`
//! speaks: `POST /service/GraniteServiceVersion20100801/operation/<Op>`
//! with `smithy-protocol: rpc-v2-cbor`, CBOR bodies, timestamps as CBOR tag
//! 1 epoch seconds, and errors with `__type` in the body plus the
//! `x-amzn-query-error` header of query-compatible services.
//!
//! Serves `ListMetrics` and `GetMetricData` for the Kinesis streaming
//! metrics of tables that have [`crate::CdcMetricsSpec`]s, in the caller's
//! scope: datapoints at `Period` boundaries, valued by the timeline step in
//! force at that wall-clock time.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ciborium::Value;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::{repeated_token, FaultOutcome, Listing, Service, Shared, UNKNOWN_ERROR_CODE};
use crate::serve::Body;
use crate::wire::{authenticate, read_body, AuthError, BodyError, Caller, Reset};

pub(crate) const PATH_PREFIX: &str = "/service/GraniteServiceVersion20100801/operation/";
const NAMESPACE: &str = "AWS/DynamoDB";
const ERROR_NAMESPACE: &str = "com.amazonaws.cloudwatch";
/// AWS's limit on `MetricDataQueries` per `GetMetricData` call.
const MAX_QUERIES: usize = 500;
/// AWS's limit on datapoints one call returns; bounds the work per query.
const MAX_DATAPOINTS: usize = 100_800;

/// A CloudWatch error: status, the query-protocol code and its fault side.
struct CwError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl CwError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        CwError {
            status,
            code,
            message: message.into(),
        }
    }

    fn validation(message: impl Into<String>) -> Self {
        CwError::new(StatusCode::BAD_REQUEST, "ValidationError", message)
    }

    fn into_response(self) -> Response<Body> {
        let body = map(vec![
            ("__type", text(&format!("{ERROR_NAMESPACE}#{}", self.code))),
            ("message", text(&self.message)),
        ]);
        let mut response = cbor_response(self.status, encode(&body));
        let side = if self.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        };
        if let Ok(value) = HeaderValue::from_str(&format!("{};{side}", self.code)) {
            response.headers_mut().insert("x-amzn-query-error", value);
        }
        response
    }
}

enum Failure {
    Api(CwError),
    Reset,
}

impl From<CwError> for Failure {
    fn from(error: CwError) -> Self {
        Failure::Api(error)
    }
}

fn cbor_response(status: StatusCode, bytes: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/cbor"));
    headers.insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
    response
}

/// Serve one CloudWatch request; `Err` closes the connection unanswered.
pub(crate) async fn handle(
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<Response<Body>, Reset> {
    match route(shared, request).await {
        Ok(response) => Ok(response),
        Err(Failure::Api(error)) => Ok(error.into_response()),
        Err(Failure::Reset) => Err(Reset),
    }
}

async fn route(shared: &Shared, request: Request<Incoming>) -> Result<Response<Body>, Failure> {
    let operation = request
        .uri()
        .path()
        .strip_prefix(PATH_PREFIX)
        .unwrap_or_default()
        .to_string();
    if request.method() != Method::POST {
        return Err(CwError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UnknownOperationException",
            format!("Method {} is not supported; use POST", request.method()),
        )
        .into());
    }
    let caller =
        authenticate(shared, request.headers(), "monitoring").map_err(|error| match error {
            AuthError::Missing => CwError::new(
                StatusCode::FORBIDDEN,
                "MissingAuthenticationToken",
                "Request is missing Authentication Token",
            ),
            AuthError::Incomplete(problems) => {
                CwError::new(StatusCode::BAD_REQUEST, "IncompleteSignature", problems)
            }
            AuthError::InvalidToken => CwError::new(
                StatusCode::FORBIDDEN,
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
            ),
        })?;
    let input = read_input(request.into_body()).await?;
    caller.record(shared, Service::CloudWatch, &operation, None);
    let mut garble = false;
    if let Some(fault) = shared.scope_fault(&caller.scope) {
        match shared.enact(fault).await {
            FaultOutcome::Garble => garble = true,
            outcome => return Err(fault_error(&caller, outcome, &operation)),
        }
    }
    let body = match operation.as_str() {
        "ListMetrics" => list_metrics(shared, &caller, &input)?,
        "GetMetricData" => get_metric_data(shared, &caller, &input)?,
        other => {
            return Err(CwError::new(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                format!("Operation {other} is not supported by this simulator"),
            )
            .into())
        }
    };
    let mut bytes = encode(&body);
    if garble {
        bytes.truncate(bytes.len() / 2);
    }
    Ok(cbor_response(StatusCode::OK, bytes))
}

fn fault_error(caller: &Caller, outcome: FaultOutcome, action: &str) -> Failure {
    let error = match outcome {
        FaultOutcome::Reset => return Failure::Reset,
        FaultOutcome::Garble | FaultOutcome::InternalError => CwError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServiceError",
            "Internal service error",
        ),
        FaultOutcome::Throttle => {
            CwError::new(StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded")
        }
        FaultOutcome::UnknownCode => CwError::new(
            StatusCode::BAD_REQUEST,
            UNKNOWN_ERROR_CODE,
            "An error this simulator made up: no client knows its code.",
        ),
        FaultOutcome::NotFound => CwError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "The named resource does not exist.",
        ),
        FaultOutcome::AccessDenied => CwError::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            format!(
                "User: {} is not authorized to perform: cloudwatch:{action} because no \
                 identity-based policy allows the cloudwatch:{action} action",
                caller.arn()
            ),
        ),
    };
    Failure::Api(error)
}

async fn read_input(body: Incoming) -> Result<Vec<(Value, Value)>, Failure> {
    let bytes = match read_body(body).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            return Err(CwError::validation("Request body is too large").into())
        }
        Err(BodyError::Gone) => return Err(Failure::Reset),
    };
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    match ciborium::from_reader::<Value, _>(&bytes[..]) {
        Ok(Value::Map(entries)) => Ok(entries),
        _ => Err(CwError::new(
            StatusCode::BAD_REQUEST,
            "SerializationException",
            "Request body must be a CBOR map",
        )
        .into()),
    }
}

fn list_metrics(
    shared: &Shared,
    caller: &Caller,
    input: &[(Value, Value)],
) -> Result<Value, Failure> {
    let namespace = get_text(input, "Namespace");
    let metric_name = get_text(input, "MetricName");
    let filters: Vec<(String, Option<String>)> = get_array(input, "Dimensions")
        .iter()
        .filter_map(|d| {
            let entries = d.as_map()?;
            Some((
                get_text(entries, "Name")?.to_string(),
                get_text(entries, "Value").map(str::to_string),
            ))
        })
        .collect();
    let start = match get_text(input, "NextToken") {
        None => 0,
        Some(token) => token.parse::<usize>().map_err(|_| {
            CwError::new(
                StatusCode::BAD_REQUEST,
                "InvalidNextToken",
                "The service couldn't process your request because the NextToken is invalid.",
            )
        })?,
    };
    let mut metrics = Vec::new();
    if namespace.is_none_or(|n| n == NAMESPACE) {
        for (table, _) in shared.metric_tables(&caller.scope) {
            let Some(cdc) = &table.cdc_metrics else {
                continue;
            };
            let dimensions = [
                ("TableName", table.name.as_str()),
                ("DelegatedOperation", cdc.delegated_operation.as_str()),
            ];
            let matches_filters = filters.iter().all(|(name, value)| {
                dimensions
                    .iter()
                    .any(|(n, v)| n == name && value.as_deref().is_none_or(|value| value == *v))
            });
            if !matches_filters {
                continue;
            }
            for name in cdc.metric_names() {
                if metric_name.is_some_and(|wanted| wanted != name) {
                    continue;
                }
                metrics.push(map(vec![
                    ("Namespace", text(NAMESPACE)),
                    ("MetricName", text(name)),
                    (
                        "Dimensions",
                        Value::Array(
                            dimensions
                                .iter()
                                .map(|(n, v)| map(vec![("Name", text(n)), ("Value", text(v))]))
                                .collect(),
                        ),
                    ),
                ]));
            }
        }
    }
    let page_size = shared.world().list_metrics_page_size;
    let total = metrics.len();
    let page: Vec<Value> = metrics.into_iter().skip(start).take(page_size).collect();
    let mut body = vec![("Metrics", Value::Array(page))];
    if start + page_size < total {
        body.push(("NextToken", text(&(start + page_size).to_string())));
    } else if shared.repeats(Listing::ListMetrics) {
        let asked = get_text(input, "NextToken");
        body.push(("NextToken", text(&repeated_token(asked, "1", "2"))));
    }
    Ok(map(body))
}

fn get_metric_data(
    shared: &Shared,
    caller: &Caller,
    input: &[(Value, Value)],
) -> Result<Value, Failure> {
    let queries = get_array(input, "MetricDataQueries");
    shared
        .stats
        .metric_queries
        .fetch_add(queries.len() as u64, Ordering::SeqCst);
    if queries.is_empty() {
        return Err(CwError::validation("The parameter MetricDataQueries is required.").into());
    }
    if queries.len() > MAX_QUERIES {
        return Err(CwError::validation(format!(
            "The collection MetricDataQueries must not have a size greater than {MAX_QUERIES}."
        ))
        .into());
    }
    let repeats = shared.repeats(Listing::GetMetricData);
    if get(input, "NextToken").is_some() && !repeats {
        return Err(CwError::new(
            StatusCode::BAD_REQUEST,
            "InvalidNextToken",
            "The service couldn't process your request because the NextToken is invalid.",
        )
        .into());
    }
    let (Some(start), Some(end)) = (get_time(input, "StartTime"), get_time(input, "EndTime"))
    else {
        return Err(
            CwError::validation("The parameters StartTime and EndTime are required.").into(),
        );
    };
    if start >= end {
        return Err(CwError::validation(
            "The parameter StartTime must be less than the parameter EndTime.",
        )
        .into());
    }
    let ascending = get_text(input, "ScanBy") == Some("TimestampAscending");
    let now = epoch_secs(shared.wall(tokio::time::Instant::now()));
    let tables = shared.metric_tables(&caller.scope);

    let mut results = Vec::new();
    for query in queries {
        let Some(query) = query.as_map() else {
            continue;
        };
        if matches!(get(query, "ReturnData"), Some(Value::Bool(false))) {
            continue;
        }
        let id = get_text(query, "Id").unwrap_or_default();
        let stat = get(query, "MetricStat").and_then(Value::as_map);
        let metric = stat.and_then(|s| get(s, "Metric")).and_then(Value::as_map);
        let metric_name = metric
            .and_then(|m| get_text(m, "MetricName"))
            .unwrap_or_default();
        let period = stat.and_then(|s| get_int(s, "Period")).unwrap_or(0);
        if stat.is_some() && period < 1 {
            return Err(CwError::validation(format!(
                "The parameter MetricDataQueries.member.Period for query {id} must be positive."
            ))
            .into());
        }
        let label = get_text(query, "Label").unwrap_or(metric_name);
        let series = metric.and_then(|metric| {
            if get_text(metric, "Namespace") != Some(NAMESPACE) {
                return None;
            }
            let dims: Vec<(&str, &str)> = get_array(metric, "Dimensions")
                .iter()
                .filter_map(|d| {
                    let d = d.as_map()?;
                    Some((get_text(d, "Name")?, get_text(d, "Value")?))
                })
                .collect();
            let dim = |name: &str| dims.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
            if dims.len() != 2 {
                return None;
            }
            tables.iter().find(|(table, _)| {
                Some(table.name.as_str()) == dim("TableName")
                    && table.cdc_metrics.as_ref().is_some_and(|cdc| {
                        Some(cdc.delegated_operation.as_str()) == dim("DelegatedOperation")
                            && cdc.metric_names().contains(&metric_name)
                    })
            })
        });
        let mut points: Vec<(i64, f64)> = Vec::new();
        if let (Some((table, since)), true) = (series, period > 0) {
            let cdc = table.cdc_metrics.as_ref().expect("filtered on cdc_metrics");
            let since = epoch_secs(*since);
            let first = start.div_euclid(period) * period
                + if start.rem_euclid(period) > 0 {
                    period
                } else {
                    0
                };
            let mut t = first;
            while t < end && points.len() < MAX_DATAPOINTS {
                if (t as f64) >= since && (t as f64) <= now {
                    let elapsed = std::time::Duration::from_secs_f64((t as f64 - since).max(0.0));
                    if let Some(value) = cdc.value_at(metric_name, elapsed) {
                        points.push((t, value));
                    }
                }
                t += period;
            }
        }
        if !ascending {
            points.reverse();
        }
        results.push(map(vec![
            ("Id", text(id)),
            ("Label", text(label)),
            (
                "Timestamps",
                Value::Array(
                    points
                        .iter()
                        .map(|(t, _)| Value::Tag(1, Box::new(Value::Integer((*t).into()))))
                        .collect(),
                ),
            ),
            (
                "Values",
                Value::Array(points.iter().map(|(_, v)| Value::Float(*v)).collect()),
            ),
            ("StatusCode", text("Complete")),
        ]));
    }
    let mut body = vec![
        ("MetricDataResults", Value::Array(results)),
        ("Messages", Value::Array(Vec::new())),
    ];
    if repeats {
        // Every page answers alike; only the token goes round.
        let asked = get_text(input, "NextToken");
        body.push(("NextToken", text(&repeated_token(asked, "1", "2"))));
    }
    Ok(map(body))
}

fn epoch_secs(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

// CBOR helpers.

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect())
}

fn encode(value: &Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = ciborium::into_writer(value, &mut bytes);
    bytes
}

fn get<'a>(entries: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    entries
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn get_text<'a>(entries: &'a [(Value, Value)], key: &str) -> Option<&'a str> {
    get(entries, key)?.as_text()
}

fn get_array<'a>(entries: &'a [(Value, Value)], key: &str) -> &'a [Value] {
    get(entries, key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn get_int(entries: &[(Value, Value)], key: &str) -> Option<i64> {
    let value = get(entries, key)?.as_integer()?;
    i64::try_from(value).ok()
}

/// A timestamp member as whole epoch seconds (rounded down): tag 1 around
/// an integer or a float, or a bare number.
fn get_time(entries: &[(Value, Value)], key: &str) -> Option<i64> {
    let mut value = get(entries, key)?;
    if let Value::Tag(1, inner) = value {
        value = inner;
    }
    match value {
        Value::Integer(i) => i64::try_from(*i).ok(),
        Value::Float(f) => Some(f.floor() as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use aws_sdk_cloudwatch::error::ProvideErrorMetadata;
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{
        Dimension, DimensionFilter, Metric, MetricDataQuery, MetricStat, ScanBy, StatusCode,
    };

    use crate::testing::{cloudwatch_client, BASE_KEYS};
    use crate::{CdcMetricsSpec, Fault, MetricStep, Scenario, Service, Simulator, TableSpec};

    fn query(id: &str, table: &str, metric: &str, period: i32) -> MetricDataQuery {
        query_builder(id, table, metric, period).build()
    }

    fn query_builder(
        id: &str,
        table: &str,
        metric: &str,
        period: i32,
    ) -> aws_sdk_cloudwatch::types::builders::MetricDataQueryBuilder {
        let metric = Metric::builder()
            .namespace("AWS/DynamoDB")
            .metric_name(metric)
            .dimensions(Dimension::builder().name("TableName").value(table).build())
            .dimensions(
                Dimension::builder()
                    .name("DelegatedOperation")
                    .value("PutRecords")
                    .build(),
            )
            .build();
        MetricDataQuery::builder().id(id).metric_stat(
            MetricStat::builder()
                .metric(metric)
                .period(period)
                .stat("Maximum")
                .build(),
        )
    }

    #[tokio::test]
    async fn repeating_tokens_go_round_in_both_listings() {
        let scenario = Scenario::default()
            .with_table(TableSpec::new("orders").with_cdc_metrics(CdcMetricsSpec::new()))
            .with_repeating_token(crate::Listing::ListMetrics)
            .with_repeating_token(crate::Listing::GetMetricData);
        let sim = Simulator::start(scenario).await.unwrap();
        let client = cloudwatch_client(&sim, "us-east-1", BASE_KEYS);
        let mut tokens = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..3 {
            let out = client
                .list_metrics()
                .namespace("AWS/DynamoDB")
                .set_next_token(token.clone())
                .send()
                .await
                .unwrap();
            token = out.next_token().map(str::to_string);
            tokens.push(token.clone().unwrap());
        }
        assert_eq!(tokens, ["1", "2", "1"]);

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut tokens = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..3 {
            let out = client
                .get_metric_data()
                .metric_data_queries(query("q0", "orders", "AgeOfOldestUnreplicatedRecord", 60))
                .start_time(DateTime::from_secs(now - 600))
                .end_time(DateTime::from_secs(now))
                .set_next_token(token.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(out.metric_data_results().len(), 1);
            token = out.next_token().map(str::to_string);
            tokens.push(token.clone().unwrap());
        }
        assert_eq!(tokens, ["1", "2", "1"]);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn list_metrics_pages_and_filters() {
        let mut scenario = Scenario::default().with_table(TableSpec::new("no-metrics"));
        for i in 0..30 {
            scenario = scenario.with_table(
                TableSpec::new(&format!("t{i:02}")).with_cdc_metrics(CdcMetricsSpec::new()),
            );
        }
        let sim = Simulator::start(scenario).await.unwrap();
        let client = cloudwatch_client(&sim, "us-east-1", BASE_KEYS);
        let mut pages = Vec::new();
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = client
                .list_metrics()
                .namespace("AWS/DynamoDB")
                .set_next_token(token.clone())
                .send()
                .await
                .unwrap();
            pages.push(out.metrics().len());
            all.extend(out.metrics().iter().cloned());
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        assert_eq!(pages, [50, 50, 20]);
        let first = &all[0];
        assert_eq!(first.namespace(), Some("AWS/DynamoDB"));
        assert_eq!(first.metric_name(), Some("AgeOfOldestUnreplicatedRecord"));
        let dims: Vec<(&str, &str)> = first
            .dimensions()
            .iter()
            .map(|d| (d.name().unwrap(), d.value().unwrap()))
            .collect();
        assert_eq!(
            dims,
            [("TableName", "t00"), ("DelegatedOperation", "PutRecords")]
        );

        let out = client
            .list_metrics()
            .metric_name("ThrottledPutRecordCount")
            .dimensions(
                DimensionFilter::builder()
                    .name("TableName")
                    .value("t07")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(out.metrics().len(), 1);
        let out = client
            .list_metrics()
            .dimensions(
                DimensionFilter::builder()
                    .name("DelegatedOperation")
                    .build(),
            )
            .metric_name("FailedToReplicateRecordCount")
            .send()
            .await
            .unwrap();
        assert_eq!(out.metrics().len(), 30);
        let out = client
            .list_metrics()
            .namespace("AWS/Kinesis")
            .send()
            .await
            .unwrap();
        assert!(out.metrics().is_empty());
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn get_metric_data_follows_the_timeline_with_gaps() {
        let yaml = r#"
tables:
  - name: orders
    cdc_metrics:
      started_ago: 30s
      AgeOfOldestUnreplicatedRecord:
        - {value: 1500, for: 10s}
        - {value: none, for: 10s}
        - {value: 7}
      ThrottledPutRecordCount: [{value: 3}]
"#;
        let before = SystemTime::now();
        let sim = Simulator::start(Scenario::from_yaml(yaml).unwrap())
            .await
            .unwrap();
        let client = cloudwatch_client(&sim, "us-east-1", BASE_KEYS);
        let now = SystemTime::now();
        let out = client
            .get_metric_data()
            .metric_data_queries(query("age", "orders", "AgeOfOldestUnreplicatedRecord", 1))
            .metric_data_queries(query(
                "missing",
                "ghost",
                "AgeOfOldestUnreplicatedRecord",
                1,
            ))
            .metric_data_queries(
                query_builder("thr", "orders", "ThrottledPutRecordCount", 5)
                    .label("throttled")
                    .build(),
            )
            .start_time(DateTime::from(now - Duration::from_secs(60)))
            .end_time(DateTime::from(now + Duration::from_secs(1)))
            .send()
            .await
            .unwrap();
        let results = out.metric_data_results();
        assert_eq!(results.len(), 3);
        let age = &results[0];
        assert_eq!(age.id(), Some("age"));
        assert_eq!(age.label(), Some("AgeOfOldestUnreplicatedRecord"));
        assert_eq!(age.status_code(), Some(&StatusCode::Complete));
        let secs: Vec<i64> = age.timestamps().iter().map(|t| t.secs()).collect();
        assert!(
            secs.windows(2).all(|w| w[0] > w[1]),
            "newest first: {secs:?}"
        );
        let started = before.duration_since(UNIX_EPOCH).unwrap().as_secs_f64() - 30.0;
        let values = age.values();
        assert_eq!(values.len(), secs.len());
        let mut ones = 0;
        for (t, v) in secs.iter().zip(values) {
            let into = *t as f64 - started;
            assert!(into >= -1.0, "no data before the timeline: {into}");
            if *v == 1500.0 {
                ones += 1;
                assert!(into < 11.0, "{into}");
            } else {
                assert_eq!(*v, 7.0);
                assert!(into >= 19.0, "gap has no data: {into}");
            }
        }
        assert!((9..=11).contains(&ones), "{ones}");
        assert!(secs.len() >= 18 && secs.len() <= 22, "{}", secs.len());

        let missing = &results[1];
        assert!(missing.timestamps().is_empty() && missing.values().is_empty());
        assert_eq!(missing.status_code(), Some(&StatusCode::Complete));

        let thr = &results[2];
        assert_eq!(thr.label(), Some("throttled"));
        assert!(thr.timestamps().iter().all(|t| t.secs() % 5 == 0));
        assert!(thr.values().iter().all(|v| *v == 3.0));
        assert!(
            (5..=7).contains(&thr.values().len()),
            "{}",
            thr.values().len()
        );

        let asc = client
            .get_metric_data()
            .metric_data_queries(query("age", "orders", "AgeOfOldestUnreplicatedRecord", 1))
            .start_time(DateTime::from(now - Duration::from_secs(60)))
            .end_time(DateTime::from(now + Duration::from_secs(1)))
            .scan_by(ScanBy::TimestampAscending)
            .send()
            .await
            .unwrap();
        let asc_secs: Vec<i64> = asc.metric_data_results()[0]
            .timestamps()
            .iter()
            .map(|t| t.secs())
            .collect();
        assert!(asc_secs.windows(2).all(|w| w[0] < w[1]), "{asc_secs:?}");
        assert_eq!(asc.metric_data_results()[0].values()[0], 1500.0);

        assert_eq!(
            sim.operation_requests(Service::CloudWatch, "GetMetricData"),
            2
        );
        assert_eq!(sim.metric_data_queries(), 4);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn limits_and_faults_are_aws_shaped() {
        let sim = Simulator::start(
            Scenario::default()
                .with_table(TableSpec::new("orders").with_cdc_metrics(CdcMetricsSpec::new())),
        )
        .await
        .unwrap();
        let client = cloudwatch_client(&sim, "us-east-1", BASE_KEYS);
        let now = SystemTime::now();
        let queries: Vec<MetricDataQuery> = (0..501)
            .map(|i| query(&format!("q{i}"), "orders", "ThrottledPutRecordCount", 60))
            .collect();
        let err = client
            .get_metric_data()
            .set_metric_data_queries(Some(queries.clone()))
            .start_time(DateTime::from(now - Duration::from_secs(600)))
            .end_time(DateTime::from(now))
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
        let err = err.into_service_error();
        assert_eq!(err.code(), Some("ValidationError"));
        assert_eq!(
            err.message(),
            Some("The collection MetricDataQueries must not have a size greater than 500.")
        );
        let ok = client
            .get_metric_data()
            .set_metric_data_queries(Some(queries[..500].to_vec()))
            .start_time(DateTime::from(now - Duration::from_secs(600)))
            .end_time(DateTime::from(now))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.metric_data_results().len(), 500);
        assert_eq!(sim.metric_data_queries(), 1001);

        let err = client
            .get_metric_data()
            .metric_data_queries(query("a", "orders", "ThrottledPutRecordCount", 60))
            .start_time(DateTime::from(now))
            .end_time(DateTime::from(now - Duration::from_secs(60)))
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(err.code(), Some("ValidationError"));

        sim.set_scope_fault("123456789012", "us-east-1", Some(Fault::Throttle));
        let err = client
            .list_metrics()
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(
            (err.code(), err.message()),
            (Some("Throttling"), Some("Rate exceeded"))
        );
        sim.set_scope_fault("123456789012", "us-east-1", Some(Fault::AccessDenied));
        let err = client
            .list_metrics()
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(err.code(), Some("AccessDenied"));
        sim.set_scope_fault("123456789012", "us-east-1", None);

        // Metrics start now when set at run time, and follow their table's scope.
        sim.set_cdc_metrics(
            "orders",
            Some(CdcMetricsSpec::new().with_series(
                "FailedToReplicateRecordCount",
                vec![
                    MetricStep::gap(Duration::from_secs(5)),
                    MetricStep::hold(1.0),
                ],
            )),
        );
        let out = client.list_metrics().send().await.unwrap();
        assert_eq!(out.metrics().len(), 1);
        let other = cloudwatch_client(&sim, "eu-west-1", BASE_KEYS);
        assert!(other
            .list_metrics()
            .send()
            .await
            .unwrap()
            .metrics()
            .is_empty());
        sim.shutdown().await;
    }
}
