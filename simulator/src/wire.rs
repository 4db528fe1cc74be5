//! The simulator's HTTP face: the DynamoDB JSON 1.0 protocol as AWS speaks
//! it. Checks the request envelope (method, path, SigV4 `Authorization` form,
//! `X-Amz-Target`, JSON body), dispatches to one function per operation, and
//! shapes every answer and error the way the real service does, with a fresh
//! `x-amzn-RequestId` on each.
//!
//! Adding an operation: one `async fn` taking the shared state and the
//! decoded input, plus one arm in [`dispatch`]. Operations about one table
//! go through [`admit_table_request`], which resolves names and ARNs, counts
//! the request and applies the table's latency and fault.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::{Fault, Shared, TableSnapshot};
use crate::serve::{AbortConnection, Body};

const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.0";
const TARGET_PREFIX: &str = "DynamoDB_20120810.";
const ERROR_NAMESPACE: &str = "com.amazonaws.dynamodb.v20120810";
/// Far above any control-plane request; only guards memory.
const MAX_BODY_BYTES: usize = 1 << 20;

/// Serve one request. `Err` makes the accept loop drop the connection
/// without answering, which is how resets and hangs-at-shutdown end.
pub(super) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, AbortConnection> {
    let _in_flight = shared.stats.enter();
    let request_id = shared.next_request_id();
    let mut response = match route(&shared, request).await {
        Ok(response) => response,
        Err(Failure::Api(error)) => error.into_response(),
        Err(Failure::Reset) => return Err("simulated connection reset".into()),
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
        .headers_mut()
        .insert("server", HeaderValue::from_static("Server"));
    Ok(response)
}

/// How a request can fail short of a normal answer.
enum Failure {
    /// An AWS-shaped error response.
    Api(ApiError),
    /// No response at all: the connection is closed.
    Reset,
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Failure::Api(error)
    }
}

/// A successful operation result.
struct Answer {
    body: Value,
    /// Send a truncated body instead (the `malformed` fault).
    garble: bool,
}

impl Answer {
    fn into_response(self) -> Response<Body> {
        // Serializing a `Value` cannot fail; an empty object is a safe fallback.
        let mut bytes = serde_json::to_vec(&self.body).unwrap_or_else(|_| b"{}".to_vec());
        if self.garble {
            // Any proper prefix of a JSON object is invalid JSON.
            bytes.truncate(bytes.len() / 2);
        }
        json_response(StatusCode::OK, bytes)
    }
}

/// An error in the shape AWS sends: status, `__type` and `message`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn validation(message: impl Into<String>) -> Self {
        ApiError::bad_request("ValidationException", message)
    }

    fn serialization(message: impl Into<String>) -> Self {
        ApiError::bad_request("SerializationException", message)
    }

    fn unknown_operation(message: impl Into<String>) -> Self {
        ApiError::bad_request("UnknownOperationException", message)
    }

    fn table_not_found(table: &str) -> Self {
        ApiError::bad_request(
            "ResourceNotFoundException",
            format!("Requested resource not found: Table: {table} not found"),
        )
    }

    fn throttling() -> Self {
        ApiError::bad_request(
            "ThrottlingException",
            "Rate of requests exceeds the allowed throughput.",
        )
    }

    fn internal_server_error() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Internal server error",
        )
    }

    fn access_denied(user_arn: &str, action: &str, resource_arn: &str) -> Self {
        ApiError::bad_request(
            "AccessDeniedException",
            format!(
                "User: {user_arn} is not authorized to perform: \
                 dynamodb:{action} on resource: {resource_arn}"
            ),
        )
    }

    fn into_response(self) -> Response<Body> {
        let body = json!({
            "__type": format!("{ERROR_NAMESPACE}#{}", self.code),
            "message": self.message,
        });
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        json_response(self.status, bytes)
    }
}

fn json_response(status: StatusCode, bytes: Vec<u8>) -> Response<Body> {
    let crc = crc32(&bytes);
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    // AWS sends it and some SDKs verify it; computed over what is actually
    // sent, so a garbled body fails as unparsable rather than as corrupt.
    headers.insert("x-amz-crc32", HeaderValue::from(crc));
    response
}

/// CRC-32 (IEEE), as in DynamoDB's `x-amz-crc32` header.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

async fn route(shared: &Shared, request: Request<Incoming>) -> Result<Response<Body>, Failure> {
    if request.uri().path() != "/" {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            format!("No operation at path {}", request.uri().path()),
        )
        .into());
    }
    match *request.method() {
        Method::POST => {}
        // AWS answers a plain GET of the endpoint root like this; load
        // balancers and curious humans use it.
        Method::GET => return Ok(health_response(&shared.region)),
        _ => {
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "UnknownOperationException",
                format!("Method {} is not supported; use POST", request.method()),
            )
            .into_response();
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, POST"));
            return Ok(response);
        }
    }
    check_authorization(request.headers())?;
    let operation = operation_name(request.headers())?;
    let input = read_input(request.into_body()).await?;
    let answer = dispatch(shared, &operation, &input).await?;
    Ok(answer.into_response())
}

fn health_response(region: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "healthy: dynamodb.{region}.amazonaws.com "
    ))));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// The one place operations are wired in.
async fn dispatch(
    shared: &Shared,
    operation: &str,
    input: &Map<String, Value>,
) -> Result<Answer, Failure> {
    match operation {
        "DescribeKinesisStreamingDestination" => {
            describe_kinesis_streaming_destination(shared, input).await
        }
        other => Err(ApiError::unknown_operation(format!(
            "Operation {other} is not supported by this simulator"
        ))
        .into()),
    }
}

async fn describe_kinesis_streaming_destination(
    shared: &Shared,
    input: &Map<String, Value>,
) -> Result<Answer, Failure> {
    let requested = required_string(input, "TableName", "tableName")?;
    let table =
        admit_table_request(shared, requested, "DescribeKinesisStreamingDestination").await?;
    let destinations: Vec<Value> = table
        .snapshot
        .spec
        .destinations
        .iter()
        .filter_map(|destination| {
            let step = destination.step_at(table.snapshot.elapsed)?;
            let mut entry = Map::new();
            entry.insert("StreamArn".into(), destination.stream_arn.clone().into());
            entry.insert("DestinationStatus".into(), step.status.clone().into());
            if let Some(description) = &step.description {
                entry.insert(
                    "DestinationStatusDescription".into(),
                    description.clone().into(),
                );
            }
            if let Some(precision) = &destination.precision {
                entry.insert(
                    "ApproximateCreationDateTimePrecision".into(),
                    precision.clone().into(),
                );
            }
            Some(Value::Object(entry))
        })
        .collect();
    Ok(table.answer(json!({
        "TableName": table.snapshot.spec.name,
        "KinesisDataStreamDestinations": destinations,
    })))
}

/// A table request that passed its table's latency and fault.
struct AdmittedTable {
    snapshot: TableSnapshot,
    garble: bool,
}

impl AdmittedTable {
    fn answer(&self, body: Value) -> Answer {
        Answer {
            body,
            garble: self.garble,
        }
    }
}

/// Resolve `requested` (a name or a table ARN), count the request against
/// the table, then apply the table's latency and fault. Errors are the ones
/// AWS gives for a missing or inaccessible table.
async fn admit_table_request(
    shared: &Shared,
    requested: &str,
    action: &str,
) -> Result<AdmittedTable, Failure> {
    let local_name = resolve_table(shared, requested)?;
    let name = local_name.unwrap_or(requested);
    shared.stats.count_table(name);
    let snapshot = local_name
        .and_then(|name| shared.snapshot(name))
        .ok_or_else(|| ApiError::table_not_found(name))?;
    if let Some(latency) = snapshot.spec.latency {
        tokio::select! {
            () = tokio::time::sleep(latency) => {}
            () = shared.stopped() => return Err(Failure::Reset),
        }
    }
    let garble = match snapshot.spec.fault {
        None => false,
        Some(Fault::Malformed) => true,
        Some(Fault::Throttle) => return Err(ApiError::throttling().into()),
        Some(Fault::InternalError) => return Err(ApiError::internal_server_error().into()),
        Some(Fault::NotFound) => return Err(ApiError::table_not_found(name).into()),
        Some(Fault::AccessDenied) => {
            let user = format!(
                "arn:{}:iam::{}:user/simulator",
                super::partition(&shared.region),
                shared.account_id
            );
            return Err(ApiError::access_denied(&user, action, &shared.table_arn(name)).into());
        }
        Some(Fault::Reset) => return Err(Failure::Reset),
        Some(Fault::Hang) => {
            // Held until the client gives up (hyper then drops this future)
            // or the simulator stops.
            shared.stopped().await;
            return Err(Failure::Reset);
        }
    };
    Ok(AdmittedTable { snapshot, garble })
}

/// The local table name `requested` refers to: itself if it is a name, the
/// name part of a table ARN in this simulator's region and account, or
/// `None` for a well-formed ARN elsewhere (which AWS reports as not found).
fn resolve_table<'a>(shared: &Shared, requested: &'a str) -> Result<Option<&'a str>, ApiError> {
    if !requested.starts_with("arn:") {
        return Ok(Some(requested));
    }
    let invalid = || ApiError::validation(format!("Invalid TableArn: {requested}"));
    let mut parts = requested.splitn(6, ':');
    let (_arn, partition, service, region, account, resource) = (
        parts.next(),
        parts.next().ok_or_else(invalid)?,
        parts.next().ok_or_else(invalid)?,
        parts.next().ok_or_else(invalid)?,
        parts.next().ok_or_else(invalid)?,
        parts.next().ok_or_else(invalid)?,
    );
    let name = resource
        .strip_prefix("table/")
        .filter(|name| !name.is_empty() && !name.contains('/'))
        .ok_or_else(invalid)?;
    if service != "dynamodb" || partition.is_empty() || region.is_empty() || account.is_empty() {
        return Err(invalid());
    }
    let here = partition == super::partition(&shared.region)
        && region == shared.region
        && account == shared.account_id;
    Ok(here.then_some(name))
}

/// A required string member; AWS's validation names members in camelCase.
fn required_string<'a>(
    input: &'a Map<String, Value>,
    member: &str,
    camel: &str,
) -> Result<&'a str, ApiError> {
    match input.get(member) {
        None | Some(Value::Null) => Err(ApiError::validation(format!(
            "1 validation error detected: Value null at '{camel}' failed to satisfy \
             constraint: Member must not be null"
        ))),
        Some(Value::String(s)) if s.is_empty() => Err(ApiError::validation(format!(
            "1 validation error detected: Value '' at '{camel}' failed to satisfy \
             constraint: Member must have length greater than or equal to 1"
        ))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::serialization(format!(
            "{member} must be a string"
        ))),
    }
}

/// Check that a SigV4 `Authorization` header is present and well formed.
/// The signature itself is not verified: callers use throwaway credentials.
fn check_authorization(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(ApiError::bad_request(
            "MissingAuthenticationTokenException",
            "Request is missing Authentication Token",
        ));
    };
    let value = value.to_str().map_err(|_| {
        ApiError::bad_request(
            "IncompleteSignatureException",
            "Authorization header is not printable ASCII",
        )
    })?;
    sigv4_problems(value)
        .map_err(|problems| ApiError::bad_request("IncompleteSignatureException", problems))
}

/// `Ok` if `value` has the form
/// `AWS4-HMAC-SHA256 Credential=AKID/YYYYMMDD/REGION/dynamodb/aws4_request,
/// SignedHeaders=a;b, Signature=HEX`, else every problem found, in AWS's words
/// where it has some.
fn sigv4_problems(value: &str) -> Result<(), String> {
    let Some(params) = value.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Err(format!(
            "Authorization header must use the AWS4-HMAC-SHA256 scheme: {value}"
        ));
    };
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    let mut problems = Vec::new();
    for param in params.split(',').map(str::trim) {
        match param.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => problems.push(format!(
                "Authorization header has an unexpected element '{param}'."
            )),
        }
    }
    match credential {
        None => problems.push("Authorization header requires 'Credential' parameter.".into()),
        Some(credential) => {
            let scope: Vec<&str> = credential.split('/').collect();
            let well_formed = matches!(
                scope.as_slice(),
                [key, date, region, "dynamodb", "aws4_request"]
                    if !key.is_empty()
                        && date.len() == 8
                        && date.bytes().all(|b| b.is_ascii_digit())
                        && !region.is_empty()
            );
            if !well_formed {
                problems.push(format!(
                    "Credential should be of the form \
                     KEY/YYYYMMDD/REGION/dynamodb/aws4_request, not '{credential}'."
                ));
            }
        }
    }
    match signed_headers {
        None => problems.push("Authorization header requires 'SignedHeaders' parameter.".into()),
        Some(list) => {
            let ok = list.split(';').all(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
            if !ok {
                problems.push(format!(
                    "SignedHeaders should be lower-case header names separated by ';', not '{list}'."
                ));
            }
        }
    }
    match signature {
        None => problems.push("Authorization header requires 'Signature' parameter.".into()),
        Some(sig) => {
            if sig.len() != 64 || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push(format!(
                    "Signature should be 64 hexadecimal digits, not '{sig}'."
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join(" "))
    }
}

/// The operation named by `X-Amz-Target: DynamoDB_20120810.<Operation>`.
fn operation_name(headers: &HeaderMap) -> Result<String, ApiError> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match target.strip_prefix(TARGET_PREFIX) {
        Some(operation) if !operation.is_empty() => Ok(operation.to_string()),
        _ if target.is_empty() => Err(ApiError::unknown_operation("Missing X-Amz-Target header")),
        _ => Err(ApiError::unknown_operation(format!(
            "Unknown target {target:?}; expected {TARGET_PREFIX}<Operation>"
        ))),
    }
}

/// Read the body as one JSON object.
async fn read_input(body: Incoming) -> Result<Map<String, Value>, Failure> {
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SerializationException",
                format!("Request body exceeds {MAX_BODY_BYTES} bytes"),
            )
            .into())
        }
        // The client went away mid-body; nobody is left to answer.
        Err(_) => return Err(Failure::Reset),
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(input)) => Ok(input),
        Ok(_) => Err(ApiError::serialization("Request body must be a JSON object").into()),
        Err(err) => {
            Err(ApiError::serialization(format!("Request body is not valid JSON: {err}")).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::Duration;

    use aws_sdk_dynamodb::config::retry::RetryConfig;
    use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
    use aws_sdk_dynamodb::config::{Credentials, Region};
    use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
    use aws_sdk_dynamodb::operation::describe_kinesis_streaming_destination::{
        DescribeKinesisStreamingDestinationError, DescribeKinesisStreamingDestinationOutput,
    };
    use aws_sdk_dynamodb::operation::RequestId;
    use aws_sdk_dynamodb::types::{ApproximateCreationDateTimePrecision, DestinationStatus};
    use aws_sdk_dynamodb::Client;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::{crc32, sigv4_problems};
    use crate::{DestinationSpec, Fault, Scenario, Simulator, Step, TableSpec};

    type Outcome = Result<
        DescribeKinesisStreamingDestinationOutput,
        SdkError<DescribeKinesisStreamingDestinationError>,
    >;

    const VALID_AUTH: &str = "AWS4-HMAC-SHA256 \
        Credential=AKIDTEST/20240101/us-east-1/dynamodb/aws4_request, \
        SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
        Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn stream(name: &str) -> String {
        format!("arn:aws:kinesis:us-east-1:123456789012:stream/{name}")
    }

    async fn start(tables: Vec<TableSpec>) -> Simulator {
        let scenario = Scenario {
            tables,
            ..Scenario::default()
        };
        Simulator::start(scenario).await.unwrap()
    }

    fn client_with_timeout(sim: &Simulator, timeout: Duration) -> Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version_latest()
            .region(Region::new("us-east-1"))
            .endpoint_url(sim.endpoint_url())
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .retry_config(RetryConfig::disabled())
            .timeout_config(TimeoutConfig::builder().operation_timeout(timeout).build())
            .build();
        Client::from_conf(config)
    }

    fn client(sim: &Simulator) -> Client {
        client_with_timeout(sim, Duration::from_secs(5))
    }

    async fn describe(client: &Client, table: &str) -> Outcome {
        client
            .describe_kinesis_streaming_destination()
            .table_name(table)
            .send()
            .await
    }

    /// The AWS error code and message of a failed call, with its HTTP status.
    fn service_error(outcome: Outcome) -> (String, String, u16) {
        match outcome {
            Err(SdkError::ServiceError(err)) => (
                err.err().code().unwrap_or("<none>").to_string(),
                err.err().message().unwrap_or("<none>").to_string(),
                err.raw().status().as_u16(),
            ),
            other => panic!("expected a service error, got {other:?}"),
        }
    }

    /// Poll `condition` until it holds; false if it still fails after ~2 s.
    async fn eventually(condition: impl Fn() -> bool) -> bool {
        for _ in 0..200 {
            if condition() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        condition()
    }

    /// Bound a step that must not hang the test suite.
    async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(3), future)
            .await
            .unwrap_or_else(|_| panic!("{what} did not finish"))
    }

    #[tokio::test]
    async fn returns_every_destination_field() {
        let sim = start(vec![TableSpec::new("orders")
            .with_destination(
                DestinationSpec::fixed(&stream("orders-cdc"), "ACTIVE")
                    .with_description("Streaming is on")
                    .with_precision("MILLISECOND"),
            )
            .with_destination(DestinationSpec::fixed(
                &stream("orders-audit"),
                "ENABLING",
            ))])
        .await;
        let out = describe(&client(&sim), "orders").await.unwrap();

        assert_eq!(out.table_name(), Some("orders"));
        let destinations = out.kinesis_data_stream_destinations();
        assert_eq!(destinations.len(), 2);
        let cdc = &destinations[0];
        assert_eq!(cdc.stream_arn(), Some(stream("orders-cdc").as_str()));
        assert_eq!(cdc.destination_status(), Some(&DestinationStatus::Active));
        assert_eq!(
            cdc.destination_status_description(),
            Some("Streaming is on")
        );
        assert_eq!(
            cdc.approximate_creation_date_time_precision(),
            Some(&ApproximateCreationDateTimePrecision::Millisecond)
        );
        let audit = &destinations[1];
        assert_eq!(audit.stream_arn(), Some(stream("orders-audit").as_str()));
        assert_eq!(
            audit.destination_status(),
            Some(&DestinationStatus::Enabling)
        );
        assert_eq!(audit.destination_status_description(), None);
        assert_eq!(audit.approximate_creation_date_time_precision(), None);

        let request_id = out.request_id().unwrap_or_default();
        assert_eq!(request_id.len(), 52, "{request_id}");
        assert_eq!(sim.requests_for("orders"), 1);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn table_without_destinations_and_unknown_values() {
        let sim = start(vec![
            TableSpec::new("inventory"),
            TableSpec::new("future").with_destination(
                DestinationSpec::fixed(&stream("future"), "PAUSED").with_precision("NANOSECOND"),
            ),
        ])
        .await;
        let client = client(&sim);
        let out = describe(&client, "inventory").await.unwrap();
        assert_eq!(out.table_name(), Some("inventory"));
        assert!(out.kinesis_data_stream_destinations().is_empty());

        let out = describe(&client, "future").await.unwrap();
        let d = &out.kinesis_data_stream_destinations()[0];
        assert_eq!(d.destination_status().map(|s| s.as_str()), Some("PAUSED"));
        // The SDK does not know it, so it is carried as an unknown value.
        assert!(!DestinationStatus::values().contains(&"PAUSED"));
        assert_eq!(
            d.approximate_creation_date_time_precision()
                .map(|p| p.as_str()),
            Some("NANOSECOND")
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn accepts_table_arns_of_its_own_region_and_account_only() {
        let sim = start(vec![TableSpec::new("orders").with_destination(
            DestinationSpec::fixed(&stream("orders-cdc"), "ACTIVE"),
        )])
        .await;
        let client = client(&sim);
        let arn = sim.table_arn("orders");
        assert_eq!(arn, "arn:aws:dynamodb:us-east-1:123456789012:table/orders");

        let out = describe(&client, &arn).await.unwrap();
        assert_eq!(out.table_name(), Some("orders"));
        assert_eq!(out.kinesis_data_stream_destinations().len(), 1);
        assert_eq!(sim.requests_for("orders"), 1);

        for foreign in [
            "arn:aws:dynamodb:us-east-1:999999999999:table/orders",
            "arn:aws:dynamodb:eu-west-1:123456789012:table/orders",
        ] {
            assert_eq!(
                service_error(describe(&client, foreign).await),
                (
                    "ResourceNotFoundException".to_string(),
                    format!("Requested resource not found: Table: {foreign} not found"),
                    400
                )
            );
            assert_eq!(sim.requests_for(foreign), 1);
        }
        assert_eq!(
            service_error(describe(&client, "arn:aws:s3:::orders").await),
            (
                "ValidationException".to_string(),
                "Invalid TableArn: arn:aws:s3:::orders".to_string(),
                400
            )
        );
        assert_eq!(sim.requests_for("orders"), 1);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn unknown_table_is_not_found() {
        let sim = start(vec![]).await;
        let outcome = describe(&client(&sim), "ghost").await;
        assert_eq!(
            service_error(outcome),
            (
                "ResourceNotFoundException".to_string(),
                "Requested resource not found: Table: ghost not found".to_string(),
                400
            )
        );
        let outcome = describe(&client(&sim), "ghost").await;
        assert!(outcome
            .unwrap_err()
            .into_service_error()
            .is_resource_not_found_exception());
        assert_eq!(sim.requests_for("ghost"), 2);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn error_faults_reach_the_sdk_as_aws_errors() {
        let faults = [
            (
                "throttled",
                Fault::Throttle,
                "ThrottlingException",
                "Rate of requests exceeds the allowed throughput.".to_string(),
                400,
            ),
            (
                "broken",
                Fault::InternalError,
                "InternalServerError",
                "Internal server error".to_string(),
                500,
            ),
            (
                "vanished",
                Fault::NotFound,
                "ResourceNotFoundException",
                "Requested resource not found: Table: vanished not found".to_string(),
                400,
            ),
            (
                "secret",
                Fault::AccessDenied,
                "AccessDeniedException",
                "User: arn:aws:iam::123456789012:user/simulator is not authorized to perform: \
                 dynamodb:DescribeKinesisStreamingDestination on resource: \
                 arn:aws:dynamodb:us-east-1:123456789012:table/secret"
                    .to_string(),
                400,
            ),
        ];
        let tables = faults
            .iter()
            .map(|(name, fault, ..)| {
                TableSpec::new(name)
                    .with_fault(*fault)
                    .with_destination(DestinationSpec::fixed(&stream(name), "ACTIVE"))
            })
            .collect();
        let sim = start(tables).await;
        let client = client(&sim);
        for (name, _, code, message, status) in faults {
            let got = service_error(describe(&client, name).await);
            assert_eq!(got, (code.to_string(), message, status), "table {name}");
            assert_eq!(sim.requests_for(name), 1, "table {name}");
        }
        // The ARN form is faulted too, and counted under the name.
        let got = service_error(describe(&client, &sim.table_arn("throttled")).await);
        assert_eq!(got.0, "ThrottlingException");
        assert_eq!(sim.requests_for("throttled"), 2);
        assert_eq!(sim.total_requests(), 5);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn reset_fault_is_a_dispatch_failure() {
        let sim = start(vec![TableSpec::new("flaky").with_fault(Fault::Reset)]).await;
        let outcome = describe(&client(&sim), "flaky").await;
        assert!(
            matches!(outcome, Err(SdkError::DispatchFailure(_))),
            "{outcome:?}"
        );
        assert_eq!(sim.requests_for("flaky"), 1);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn malformed_fault_fails_to_deserialize() {
        let sim = start(vec![TableSpec::new("garbled")
            .with_fault(Fault::Malformed)
            .with_destination(DestinationSpec::fixed(&stream("garbled"), "ACTIVE"))])
        .await;
        let outcome = describe(&client(&sim), "garbled").await;
        // The SDK turns a body it cannot parse into an unmodelled service
        // error with no code, carrying the raw 200 response.
        match outcome {
            Err(SdkError::ServiceError(err)) => {
                assert_eq!(err.raw().status().as_u16(), 200);
                assert_eq!(err.err().code(), None);
                assert!(err.err().meta().message().is_none());
                let body = err.raw().body().bytes().unwrap_or_default();
                assert!(body.starts_with(br#"{"KinesisDataStreamDestinations":["#));
                assert!(serde_json::from_slice::<serde_json::Value>(body).is_err());
            }
            other => panic!("expected an unparsable response, got {other:?}"),
        }
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn latency_delays_the_answer() {
        let latency = Duration::from_millis(300);
        let sim = start(vec![TableSpec::new("slow").with_latency(latency)]).await;
        let started = std::time::Instant::now();
        describe(&client(&sim), "slow").await.unwrap();
        assert!(started.elapsed() >= latency, "{:?}", started.elapsed());

        let impatient = client_with_timeout(&sim, Duration::from_millis(100));
        let outcome = describe(&impatient, "slow").await;
        assert!(
            matches!(outcome, Err(SdkError::TimeoutError(_))),
            "{outcome:?}"
        );

        sim.set_latency("slow", None);
        describe(&client(&sim), "slow").await.unwrap();
        assert_eq!(sim.requests_for("slow"), 3);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn hung_requests_time_out_and_count_while_in_flight() {
        const HUNG: usize = 4;
        let sim = start(vec![TableSpec::new("stuck").with_fault(Fault::Hang)]).await;
        let client = client_with_timeout(&sim, Duration::from_millis(800));
        let calls: Vec<_> = (0..HUNG)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { describe(&client, "stuck").await })
            })
            .collect();
        for call in calls {
            let outcome = bounded("hung call", call).await.unwrap();
            assert!(
                matches!(outcome, Err(SdkError::TimeoutError(_))),
                "{outcome:?}"
            );
        }
        assert_eq!(sim.max_in_flight(), HUNG);
        assert_eq!(sim.requests_for("stuck"), HUNG as u64);
        assert_eq!(sim.total_requests(), HUNG as u64);
        // The clients hung up, so the server side lets go of them too.
        assert!(
            eventually(|| sim.in_flight() == 0).await,
            "in flight: {}",
            sim.in_flight()
        );
        sim.reset_stats();
        assert_eq!(
            (
                sim.total_requests(),
                sim.requests_for("stuck"),
                sim.max_in_flight()
            ),
            (0, 0, 0)
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_hung_table_does_not_block_others_and_shutdown_releases_it() {
        let sim = start(vec![
            TableSpec::new("stuck").with_fault(Fault::Hang),
            TableSpec::new("orders")
                .with_destination(DestinationSpec::fixed(&stream("orders"), "ACTIVE")),
        ])
        .await;
        let patient = client_with_timeout(&sim, Duration::from_secs(30));
        let hung = tokio::spawn(async move { describe(&patient, "stuck").await });
        assert!(eventually(|| sim.in_flight() == 1).await);

        let out = describe(&client(&sim), "orders").await.unwrap();
        assert_eq!(out.kinesis_data_stream_destinations().len(), 1);
        assert_eq!(sim.in_flight(), 1);
        sim.reset_stats();
        assert_eq!(sim.max_in_flight(), 1, "still-hung request keeps counting");

        let addr = sim.addr();
        bounded("shutdown", sim.clone().shutdown()).await;
        let outcome = bounded("released call", hung).await.unwrap();
        assert!(
            matches!(
                outcome,
                Err(SdkError::DispatchFailure(_) | SdkError::ResponseError(_))
            ),
            "{outcome:?}"
        );
        assert_eq!(sim.in_flight(), 0);
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn dropping_the_last_handle_stops_the_server() {
        let sim = start(vec![]).await;
        let addr = sim.addr();
        let clone = sim.clone();
        drop(sim);
        assert!(
            TcpStream::connect(addr).await.is_ok(),
            "a clone keeps it running"
        );
        drop(clone);
        let mut refused = false;
        for _ in 0..200 {
            if TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(refused);
    }

    #[tokio::test]
    async fn clearing_a_fault_restores_success() {
        let sim = start(vec![TableSpec::new("orders")
            .with_fault(Fault::Throttle)
            .with_destination(DestinationSpec::fixed(&stream("orders"), "ACTIVE"))])
        .await;
        let client = client(&sim);
        assert_eq!(
            service_error(describe(&client, "orders").await).0,
            "ThrottlingException"
        );
        sim.set_fault("orders", None);
        let out = describe(&client, "orders").await.unwrap();
        assert_eq!(
            out.kinesis_data_stream_destinations()[0].destination_status(),
            Some(&DestinationStatus::Active)
        );
        sim.set_fault("orders", Some(Fault::AccessDenied));
        assert_eq!(
            service_error(describe(&client, "orders").await).0,
            "AccessDeniedException"
        );
        assert_eq!(sim.requests_for("orders"), 3);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn tables_can_be_added_changed_and_removed_while_running() {
        let sim = start(vec![]).await;
        let client = client(&sim);
        let status = |out: DescribeKinesisStreamingDestinationOutput| {
            out.kinesis_data_stream_destinations()
                .iter()
                .map(|d| {
                    d.destination_status()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            service_error(describe(&client, "late").await).0,
            "ResourceNotFoundException"
        );

        sim.put_table(
            TableSpec::new("late")
                .with_destination(DestinationSpec::fixed(&stream("late"), "ACTIVE")),
        );
        assert_eq!(status(describe(&client, "late").await.unwrap()), ["ACTIVE"]);

        sim.set_destinations(
            "late",
            vec![
                DestinationSpec::fixed(&stream("a"), "DISABLED"),
                DestinationSpec::timeline(
                    &stream("b"),
                    vec![
                        Step::lasting("ENABLING", Duration::from_secs(3600)),
                        Step::hold("ACTIVE"),
                    ],
                ),
            ],
        );
        assert_eq!(
            status(describe(&client, "late").await.unwrap()),
            ["DISABLED", "ENABLING"]
        );

        sim.remove_table("late");
        assert_eq!(
            service_error(describe(&client, "late").await).0,
            "ResourceNotFoundException"
        );
        // Changes to a table that is not there are ignored rather than creating it.
        sim.set_fault("late", Some(Fault::Throttle));
        assert_eq!(
            service_error(describe(&client, "late").await).0,
            "ResourceNotFoundException"
        );
        assert_eq!(sim.requests_for("late"), 5);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn reports_its_identity() {
        let scenario = Scenario {
            account_id: "210987654321".into(),
            region: "cn-north-1".into(),
            tables: vec![],
        };
        let sim = Simulator::start(scenario).await.unwrap();
        assert_eq!(
            sim.endpoint_url(),
            format!("http://127.0.0.1:{}", sim.addr().port())
        );
        assert_eq!(sim.region(), "cn-north-1");
        assert_eq!(sim.account_id(), "210987654321");
        assert_eq!(
            sim.table_arn("t1"),
            "arn:aws-cn:dynamodb:cn-north-1:210987654321:table/t1"
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn start_rejects_an_invalid_scenario() {
        let scenario = Scenario::default()
            .with_table(TableSpec::new("twice"))
            .with_table(TableSpec::new("twice"));
        let err = Simulator::start(scenario).await.err().unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(
            err.to_string(),
            r#"invalid scenario: tables[1].name: duplicate table "twice" (first at tables[0])"#
        );
    }

    struct RawResponse {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl RawResponse {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body).unwrap()
        }

        /// `(status, __type, message)` of an error answer.
        fn error(&self) -> (u16, String, String) {
            let json = self.json();
            (
                self.status,
                json["__type"].as_str().unwrap_or_default().to_string(),
                json["message"].as_str().unwrap_or_default().to_string(),
            )
        }
    }

    async fn send_raw(sim: &Simulator, request: String) -> RawResponse {
        let mut stream = TcpStream::connect(sim.addr()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut bytes = Vec::new();
        bounded("raw response", stream.read_to_end(&mut bytes))
            .await
            .unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim().to_string(), value.trim().to_string())
            })
            .collect();
        RawResponse {
            status,
            headers,
            body: body.to_string(),
        }
    }

    fn post(target: Option<&str>, auth: Option<&str>, body: &str) -> String {
        let mut request =
            String::from("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        request.push_str("Content-Type: application/x-amz-json-1.0\r\n");
        if let Some(target) = target {
            request.push_str(&format!("X-Amz-Target: {target}\r\n"));
        }
        if let Some(auth) = auth {
            request.push_str(&format!("Authorization: {auth}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        request
    }

    const DESCRIBE: &str = "DynamoDB_20120810.DescribeKinesisStreamingDestination";

    #[tokio::test]
    async fn missing_authorization_is_rejected_with_a_request_id() {
        let sim = start(vec![TableSpec::new("orders")]).await;
        let body = r#"{"TableName":"orders"}"#;
        let first = send_raw(&sim, post(Some(DESCRIBE), None, body)).await;
        assert_eq!(
            first.error(),
            (
                400,
                "com.amazonaws.dynamodb.v20120810#MissingAuthenticationTokenException".to_string(),
                "Request is missing Authentication Token".to_string()
            )
        );
        assert_eq!(
            first.header("content-type"),
            Some("application/x-amz-json-1.0")
        );
        let crc = crc32(first.body.as_bytes()).to_string();
        assert_eq!(first.header("x-amz-crc32"), Some(crc.as_str()));
        let first_id = first
            .header("x-amzn-requestid")
            .unwrap_or_default()
            .to_string();
        assert_eq!(first_id.len(), 52);
        assert!(first_id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));

        let second = send_raw(&sim, post(Some(DESCRIBE), None, body)).await;
        let second_id = second.header("x-amzn-requestid").unwrap_or_default();
        assert_eq!(second_id.len(), 52);
        assert_ne!(first_id, second_id);
        // Rejected before the table was looked at.
        assert_eq!(sim.requests_for("orders"), 0);
        assert_eq!(sim.total_requests(), 2);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn malformed_authorization_is_an_incomplete_signature() {
        let sim = start(vec![]).await;
        let cases = [
            (
                "AWS4-HMAC-SHA256 Credential=AKID/2024/us-east-1/dynamodb/aws4_request",
                "Credential should be of the form KEY/YYYYMMDD/REGION/dynamodb/aws4_request, \
                 not 'AKID/2024/us-east-1/dynamodb/aws4_request'. \
                 Authorization header requires 'SignedHeaders' parameter. \
                 Authorization header requires 'Signature' parameter.",
            ),
            (
                "Bearer abc",
                "Authorization header must use the AWS4-HMAC-SHA256 scheme: Bearer abc",
            ),
        ];
        for (auth, message) in cases {
            let response = send_raw(&sim, post(Some(DESCRIBE), Some(auth), "{}")).await;
            assert_eq!(
                response.error(),
                (
                    400,
                    "com.amazonaws.dynamodb.v20120810#IncompleteSignatureException".to_string(),
                    message.to_string()
                )
            );
            assert!(response.header("x-amzn-requestid").is_some());
        }
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn unknown_or_missing_operation_is_rejected() {
        let sim = start(vec![]).await;
        let unknown = send_raw(
            &sim,
            post(
                Some("DynamoDB_20120810.DeleteUniverse"),
                Some(VALID_AUTH),
                "{}",
            ),
        )
        .await;
        assert_eq!(
            unknown.error(),
            (
                400,
                "com.amazonaws.dynamodb.v20120810#UnknownOperationException".to_string(),
                "Operation DeleteUniverse is not supported by this simulator".to_string()
            )
        );
        assert_eq!(unknown.header("x-amzn-requestid").map(str::len), Some(52));

        let missing = send_raw(&sim, post(None, Some(VALID_AUTH), "{}")).await;
        assert_eq!(
            missing.error(),
            (
                400,
                "com.amazonaws.dynamodb.v20120810#UnknownOperationException".to_string(),
                "Missing X-Amz-Target header".to_string()
            )
        );
        let foreign = send_raw(
            &sim,
            post(Some("Kinesis_20131202.ListStreams"), Some(VALID_AUTH), "{}"),
        )
        .await;
        assert_eq!(
            foreign.error().1,
            "com.amazonaws.dynamodb.v20120810#UnknownOperationException"
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn bad_bodies_and_table_names_are_rejected() {
        let sim = start(vec![]).await;
        let cases = [
            ("{not json", 400, "SerializationException", None),
            ("[1, 2]", 400, "SerializationException", Some("Request body must be a JSON object")),
            (r#"{"TableName": 5}"#, 400, "SerializationException", Some("TableName must be a string")),
            (
                "{}",
                400,
                "ValidationException",
                Some("1 validation error detected: Value null at 'tableName' failed to satisfy constraint: Member must not be null"),
            ),
            (
                r#"{"TableName": ""}"#,
                400,
                "ValidationException",
                Some("1 validation error detected: Value '' at 'tableName' failed to satisfy constraint: Member must have length greater than or equal to 1"),
            ),
        ];
        for (body, status, code, message) in cases {
            let (got_status, got_type, got_message) =
                send_raw(&sim, post(Some(DESCRIBE), Some(VALID_AUTH), body))
                    .await
                    .error();
            assert_eq!(got_status, status, "{body}");
            assert_eq!(
                got_type,
                format!("com.amazonaws.dynamodb.v20120810#{code}"),
                "{body}"
            );
            match message {
                Some(message) => assert_eq!(got_message, message, "{body}"),
                None => assert!(
                    got_message.starts_with("Request body is not valid JSON: "),
                    "{got_message}"
                ),
            }
        }
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn raw_request_with_valid_envelope_succeeds() {
        let sim = start(vec![TableSpec::new("orders").with_destination(
            DestinationSpec::fixed(&stream("orders"), "ACTIVE").with_precision("MICROSECOND"),
        )])
        .await;
        let response = send_raw(
            &sim,
            post(
                Some(DESCRIBE),
                Some(VALID_AUTH),
                r#"{"TableName":"orders"}"#,
            ),
        )
        .await;
        assert_eq!(response.status, 200);
        assert_eq!(
            response.json(),
            serde_json::json!({
                "TableName": "orders",
                "KinesisDataStreamDestinations": [{
                    "StreamArn": stream("orders"),
                    "DestinationStatus": "ACTIVE",
                    "ApproximateCreationDateTimePrecision": "MICROSECOND",
                }],
            })
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn other_methods_and_paths() {
        let sim = start(vec![]).await;
        let health = send_raw(
            &sim,
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
        )
        .await;
        assert_eq!(
            (health.status, health.body.as_str()),
            (200, "healthy: dynamodb.us-east-1.amazonaws.com ")
        );
        let put = send_raw(
            &sim,
            "PUT / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".into(),
        )
        .await;
        assert_eq!(put.status, 405);
        assert_eq!(put.header("allow"), Some("GET, POST"));
        assert_eq!(
            put.error().1,
            "com.amazonaws.dynamodb.v20120810#UnknownOperationException"
        );
        let elsewhere = send_raw(
            &sim,
            "POST /tables HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                .into(),
        )
        .await;
        assert_eq!(elsewhere.status, 404);
        assert_eq!(elsewhere.error().2, "No operation at path /tables");
        assert!(elsewhere.header("x-amzn-requestid").is_some());
        sim.shutdown().await;
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn sigv4_form_checks() {
        assert_eq!(sigv4_problems(VALID_AUTH), Ok(()));
        assert_eq!(
            sigv4_problems("AWS4-HMAC-SHA256 Foo=bar"),
            Err("Authorization header has an unexpected element 'Foo=bar'. \
                 Authorization header requires 'Credential' parameter. \
                 Authorization header requires 'SignedHeaders' parameter. \
                 Authorization header requires 'Signature' parameter."
                .to_string())
        );
        assert_eq!(
            sigv4_problems(
                "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/s3/aws4_request, \
                 SignedHeaders=Host;x-amz-date, Signature=xyz"
            ),
            Err("Credential should be of the form KEY/YYYYMMDD/REGION/dynamodb/aws4_request, \
                 not 'AKID/20240101/us-east-1/s3/aws4_request'. \
                 SignedHeaders should be lower-case header names separated by ';', not 'Host;x-amz-date'. \
                 Signature should be 64 hexadecimal digits, not 'xyz'."
                .to_string())
        );
    }
}
