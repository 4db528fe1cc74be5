//! Kinesis Data Streams over JSON 1.1, as `aws-sdk-kinesis` speaks it:
//! `X-Amz-Target: Kinesis_20131202.<Operation>` and a JSON body. Serves
//! `DescribeStreamSummary` for the streams of [`crate::Scenario::streams`],
//! for those only a destination names (taken to be healthy), and for those
//! created through the control API, with status timelines and faults.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::{partition, FaultOutcome, Service, Shared, StreamSnapshot, UNKNOWN_ERROR_CODE};
use crate::scenario::parse_stream_arn;
use crate::serve::Body;
use crate::wire::{authenticate, read_body, AuthError, BodyError, Caller, Reset};

pub(crate) const TARGET_PREFIX: &str = "Kinesis_20131202.";
const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// A Kinesis error: status, `__type` and `message`.
struct KinesisError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl KinesisError {
    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        KinesisError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    fn validation(message: impl Into<String>) -> Self {
        KinesisError::bad_request("ValidationException", message)
    }

    fn not_found(name: &str, account_id: &str) -> Self {
        KinesisError::bad_request(
            "ResourceNotFoundException",
            format!("Stream {name} under account {account_id} not found."),
        )
    }

    fn into_response(self) -> Response<Body> {
        let body = json!({ "__type": self.code, "message": self.message });
        json_response(self.status, serde_json::to_vec(&body).unwrap_or_default())
    }
}

fn json_response(status: StatusCode, bytes: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    response
}

/// How a Kinesis request can end short of a normal answer.
enum Failure {
    Api(KinesisError),
    Reset,
}

impl From<KinesisError> for Failure {
    fn from(error: KinesisError) -> Self {
        Failure::Api(error)
    }
}

/// Serve one Kinesis request; `Err` closes the connection unanswered.
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
    if request.method() != Method::POST {
        return Err(KinesisError::bad_request(
            "UnknownOperationException",
            format!("Method {} is not supported; use POST", request.method()),
        )
        .into());
    }
    let caller =
        authenticate(shared, request.headers(), "kinesis").map_err(|error| match error {
            AuthError::Missing => KinesisError::bad_request(
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            ),
            AuthError::Incomplete(problems) => {
                KinesisError::bad_request("IncompleteSignatureException", problems)
            }
            AuthError::InvalidToken => KinesisError::bad_request(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ),
        })?;
    let operation = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
        .unwrap_or_default()
        .to_string();
    let input = read_input(request.into_body()).await?;
    caller.record(shared, Service::Kinesis, &operation, None);
    let scope_fault = shared.scope_fault(&caller.scope);
    let mut garble = false;
    if let Some(fault) = scope_fault {
        match shared.enact(fault).await {
            FaultOutcome::Garble => garble = true,
            outcome => return Err(fault_error(&caller, outcome, None, &operation)),
        }
    }
    let (body, stream_garble) = match operation.as_str() {
        "DescribeStreamSummary" => {
            describe_stream_summary(shared, &caller, &input, scope_fault.is_some()).await?
        }
        other => {
            return Err(KinesisError::bad_request(
                "UnknownOperationException",
                format!("Operation {other} is not supported by this simulator"),
            )
            .into())
        }
    };
    let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
    if garble || stream_garble {
        bytes.truncate(bytes.len() / 2);
    }
    Ok(json_response(StatusCode::OK, bytes))
}

async fn read_input(body: Incoming) -> Result<Map<String, Value>, Failure> {
    let bytes = match read_body(body).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            return Err(
                KinesisError::bad_request("SerializationException", "Body too large").into(),
            )
        }
        Err(BodyError::Gone) => return Err(Failure::Reset),
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(input)) => Ok(input),
        _ => Err(KinesisError::bad_request(
            "SerializationException",
            "Request body must be a JSON object",
        )
        .into()),
    }
}

/// `stream` is `(arn, name)` when the request named one.
fn fault_error(
    caller: &Caller,
    outcome: FaultOutcome,
    stream: Option<(&str, &str)>,
    action: &str,
) -> Failure {
    let (arn, name) = stream.unwrap_or(("*", "*"));
    let account = &caller.scope.account_id;
    let error = match outcome {
        FaultOutcome::Reset => return Failure::Reset,
        FaultOutcome::Garble | FaultOutcome::InternalError => KinesisError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalFailure",
            message: "Internal service failure.".into(),
        },
        FaultOutcome::Throttle => KinesisError::bad_request(
            "LimitExceededException",
            format!("Rate exceeded for stream {name} under account {account}."),
        ),
        FaultOutcome::NotFound => KinesisError::not_found(name, account),
        FaultOutcome::UnknownCode => KinesisError::bad_request(
            UNKNOWN_ERROR_CODE,
            "An error this simulator made up: no client knows its code.",
        ),
        FaultOutcome::AccessDenied => KinesisError::bad_request(
            "AccessDeniedException",
            format!(
                "User: {} is not authorized to perform: kinesis:{action} on resource: {arn}",
                caller.arn()
            ),
        ),
    };
    Failure::Api(error)
}

/// `(summary, garble)`.
async fn describe_stream_summary(
    shared: &Shared,
    caller: &Caller,
    input: &Map<String, Value>,
    scope_fault: bool,
) -> Result<(Value, bool), Failure> {
    let member = |key: &str| match input.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(KinesisError::validation(format!(
            "1 validation error detected: Value at '{key}' failed to satisfy constraint: \
             Member must have length greater than or equal to 1"
        ))),
    };
    let arn = match (member("StreamARN")?, member("StreamName")?) {
        (Some(arn), _) => {
            if parse_stream_arn(&arn).is_none() {
                return Err(KinesisError::validation(format!(
                    "1 validation error detected: Value '{arn}' at 'streamARN' failed to \
                     satisfy constraint: Member must satisfy regular expression pattern: \
                     arn:aws.*:kinesis:.*:\\d{{12}}:stream/\\S+"
                ))
                .into());
            }
            arn
        }
        (None, Some(name)) => format!(
            "arn:{}:kinesis:{}:{}:stream/{name}",
            partition(&caller.scope.region),
            caller.scope.region,
            caller.scope.account_id
        ),
        (None, None) => {
            return Err(KinesisError::validation(
                "Either StreamName or StreamARN should be provided.",
            )
            .into())
        }
    };
    let (account, _, name) = parse_stream_arn(&arn).unwrap_or(("", "", ""));
    let Some(stream) = shared.stream(&arn) else {
        return Err(KinesisError::not_found(name, account).into());
    };
    let mut garble = false;
    if let (Some(fault), false) = (stream.spec.fault, scope_fault) {
        match shared.enact(fault).await {
            FaultOutcome::Garble => garble = true,
            outcome => {
                return Err(fault_error(
                    caller,
                    outcome,
                    Some((&arn, name)),
                    "DescribeStreamSummary",
                ))
            }
        }
    }
    Ok((
        json!({ "StreamDescriptionSummary": summary(&stream) }),
        garble,
    ))
}

fn summary(stream: &StreamSnapshot) -> Value {
    let spec = &stream.spec;
    let status = spec
        .step_at(stream.elapsed)
        .map_or("ACTIVE", |step| step.status.as_str());
    let created = stream
        .created
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0);
    let mut summary = json!({
        "StreamName": spec.name(),
        "StreamARN": spec.arn,
        "StreamStatus": status,
        "StreamModeDetails": { "StreamMode": spec.mode },
        "RetentionPeriodHours": spec.retention_hours,
        "StreamCreationTimestamp": created,
        "EnhancedMonitoring": [{ "ShardLevelMetrics": [] }],
        "EncryptionType": spec.encryption,
        "OpenShardCount": spec.open_shards,
        "ConsumerCount": spec.consumer_count,
    });
    if spec.encryption == "KMS" {
        summary["KeyId"] = json!(spec.key_id.as_deref().unwrap_or("alias/aws/kinesis"));
    }
    summary
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use aws_sdk_kinesis::error::ProvideErrorMetadata;
    use aws_sdk_kinesis::types::{EncryptionType, StreamMode, StreamStatus};

    use crate::testing::{dynamodb_client, kinesis_client, BASE_KEYS};
    use crate::{
        DestinationSpec, Fault, Scenario, ScopeSpec, Simulator, Step, StreamSpec, TableSpec,
    };

    const ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/orders-cdc";

    async fn describe(
        client: &aws_sdk_kinesis::Client,
        arn: &str,
    ) -> Result<aws_sdk_kinesis::types::StreamDescriptionSummary, (String, String)> {
        client
            .describe_stream_summary()
            .stream_arn(arn)
            .send()
            .await
            .map(|out| out.stream_description_summary().cloned().unwrap())
            .map_err(|err| {
                let err = err.into_service_error();
                (
                    err.code().unwrap_or_default().to_string(),
                    err.message().unwrap_or_default().to_string(),
                )
            })
    }

    #[tokio::test]
    async fn describes_every_summary_field() {
        let yaml = r#"
streams:
  - name: orders-cdc
    timeline: [{status: CREATING, for: 1h}, {status: ACTIVE}]
    open_shards: 4
    mode: ON_DEMAND
    encryption: KMS
    key_id: arn:aws:kms:us-east-1:123456789012:key/abc
    retention_hours: 48
    consumers: 2
"#;
        let before = SystemTime::now();
        let sim = Simulator::start(Scenario::from_yaml(yaml).unwrap())
            .await
            .unwrap();
        let client = kinesis_client(&sim, "us-east-1", BASE_KEYS);
        let s = describe(&client, ARN).await.unwrap();
        assert_eq!(s.stream_name(), "orders-cdc");
        assert_eq!(s.stream_arn(), ARN);
        assert_eq!(s.stream_status(), &StreamStatus::Creating);
        assert_eq!(
            s.stream_mode_details().map(|m| m.stream_mode()),
            Some(&StreamMode::OnDemand)
        );
        assert_eq!(s.retention_period_hours(), 48);
        assert_eq!(s.encryption_type(), Some(&EncryptionType::Kms));
        assert_eq!(
            s.key_id(),
            Some("arn:aws:kms:us-east-1:123456789012:key/abc")
        );
        assert_eq!(s.open_shard_count(), 4);
        assert_eq!(s.consumer_count(), Some(2));
        assert_eq!(s.enhanced_monitoring().len(), 1);
        assert!(s.enhanced_monitoring()[0].shard_level_metrics().is_empty());
        let created = SystemTime::try_from(*s.stream_creation_timestamp()).unwrap();
        let skew = created
            .duration_since(before)
            .unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(2), "{skew:?}");

        // By name, in the caller's scope.
        let by_name = client
            .describe_stream_summary()
            .stream_name("orders-cdc")
            .send()
            .await
            .unwrap();
        assert_eq!(
            by_name.stream_description_summary().unwrap().stream_arn(),
            ARN
        );
        let eu = kinesis_client(&sim, "eu-west-1", BASE_KEYS);
        let err = eu
            .describe_stream_summary()
            .stream_name("orders-cdc")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_resource_not_found_exception());
        assert_eq!(
            err.message(),
            Some("Stream orders-cdc under account 123456789012 not found.")
        );
        assert_eq!(
            sim.operation_requests(crate::Service::Kinesis, "DescribeStreamSummary"),
            3
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn streams_named_by_destinations_exist_until_deleted() {
        let eu_arn = "arn:aws:kinesis:eu-west-1:222222222222:stream/eu-cdc";
        let scenario = Scenario::default()
            .with_table(
                TableSpec::new("orders").with_destination(DestinationSpec::fixed(ARN, "ACTIVE")),
            )
            .with_scope(ScopeSpec::new("222222222222", "eu-west-1").with_table(
                TableSpec::new("eu").with_destination(DestinationSpec::fixed(eu_arn, "ACTIVE")),
            ));
        let sim = Simulator::start(scenario).await.unwrap();
        let client = kinesis_client(&sim, "us-east-1", BASE_KEYS);
        for arn in [ARN, eu_arn] {
            let s = describe(&client, arn).await.unwrap();
            assert_eq!(
                (
                    s.stream_status(),
                    s.open_shard_count(),
                    s.retention_period_hours(),
                    s.encryption_type(),
                    s.key_id(),
                    s.stream_mode_details().map(|m| m.stream_mode()),
                ),
                (
                    &StreamStatus::Active,
                    1,
                    24,
                    Some(&EncryptionType::None),
                    None,
                    Some(&StreamMode::Provisioned)
                ),
                "{arn}"
            );
        }
        let unknown = "arn:aws:kinesis:us-east-1:123456789012:stream/nobody";
        assert_eq!(
            describe(&client, unknown).await.unwrap_err(),
            (
                "ResourceNotFoundException".to_string(),
                "Stream nobody under account 123456789012 not found.".to_string()
            )
        );

        // Deleted while the destination still names it.
        sim.delete_stream(ARN);
        assert_eq!(
            describe(&client, ARN).await.unwrap_err().0,
            "ResourceNotFoundException"
        );
        let ddb = dynamodb_client(&sim, "us-east-1", BASE_KEYS);
        let out = ddb
            .describe_kinesis_streaming_destination()
            .table_name("orders")
            .send()
            .await
            .unwrap();
        assert_eq!(
            out.kinesis_data_stream_destinations()[0].stream_arn(),
            Some(ARN)
        );
        // And it can come back.
        sim.create_stream(StreamSpec::new(ARN).with_open_shards(3));
        assert_eq!(describe(&client, ARN).await.unwrap().open_shard_count(), 3);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn deletion_passes_through_deleting() {
        let sim = Simulator::start(
            Scenario::default().with_stream(StreamSpec::new(ARN).with_kms("alias/aws/kinesis")),
        )
        .await
        .unwrap();
        let client = kinesis_client(&sim, "us-east-1", BASE_KEYS);
        sim.delete_stream_after(ARN, Duration::from_millis(300));
        let s = describe(&client, ARN).await.unwrap();
        assert_eq!(s.stream_status(), &StreamStatus::Deleting);
        assert_eq!(s.key_id(), Some("alias/aws/kinesis"));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            describe(&client, ARN).await.unwrap_err().0,
            "ResourceNotFoundException"
        );

        // A timeline moves on its own, and creation restarts it.
        sim.create_stream(StreamSpec::new(ARN).with_timeline(
            vec![
                Step::lasting("UPDATING", Duration::from_millis(200)),
                Step::hold("ACTIVE"),
            ],
            false,
        ));
        assert_eq!(
            describe(&client, ARN).await.unwrap().stream_status(),
            &StreamStatus::Updating
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            describe(&client, ARN).await.unwrap().stream_status(),
            &StreamStatus::Active
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn faults_reach_the_sdk_as_kinesis_errors() {
        let scenario = Scenario::default().with_table(
            TableSpec::new("orders").with_destination(DestinationSpec::fixed(ARN, "ACTIVE")),
        );
        let sim = Simulator::start(scenario).await.unwrap();
        let client = kinesis_client(&sim, "us-east-1", BASE_KEYS);
        sim.set_stream_fault(ARN, Some(Fault::Throttle));
        assert_eq!(
            describe(&client, ARN).await.unwrap_err(),
            (
                "LimitExceededException".to_string(),
                "Rate exceeded for stream orders-cdc under account 123456789012.".to_string()
            )
        );
        sim.set_stream_fault(ARN, Some(Fault::AccessDenied));
        assert_eq!(
            describe(&client, ARN).await.unwrap_err(),
            (
                "AccessDeniedException".to_string(),
                format!(
                    "User: arn:aws:iam::123456789012:user/simulator is not authorized to \
                     perform: kinesis:DescribeStreamSummary on resource: {ARN}"
                )
            )
        );
        sim.set_stream_fault(ARN, None);
        assert!(describe(&client, ARN).await.is_ok());

        sim.set_scope_fault("123456789012", "us-east-1", Some(Fault::Throttle));
        assert_eq!(
            describe(&client, ARN).await.unwrap_err().0,
            "LimitExceededException"
        );
        sim.set_scope_fault("123456789012", "us-east-1", None);

        let err = client
            .describe_stream_summary()
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(err.code(), Some("ValidationException"));
        assert_eq!(
            err.message(),
            Some("Either StreamName or StreamARN should be provided.")
        );
        sim.shutdown().await;
    }
}
