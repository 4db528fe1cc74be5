//! The seam around AWS. The scheduler only knows [`DestinationSource`];
//! production uses [`SdkSource`] (aws-sdk-dynamodb), unit tests may use a
//! map. Every SDK failure is classified into a [`PollError`] whose
//! [`code`](PollError::code) becomes the `code` label of the error counter.

use std::future::Future;
use std::time::Duration;

use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::describe_kinesis_streaming_destination::DescribeKinesisStreamingDestinationOutput;

use crate::config::{Config, TableRef, Target};

/// One Kinesis streaming destination as AWS reported it. Optional fields
/// are `None` when AWS did not send them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub stream_arn: String,
    pub status: String,
    pub status_description: Option<String>,
    pub precision: Option<String>,
}

/// Why a poll failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// The table does not exist (any more): its destination series go.
    #[error("table not found: {0}")]
    NotFound(String),
    /// AWS answered with an error code (throttling, access denied, 5xx...).
    #[error("{code}: {message}")]
    Service { code: String, message: String },
    /// The call, retries included, did not finish within `request_timeout`.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The request never got an answer: connection refused or reset, DNS,
    /// TLS. (Missing credentials are [`PollError::Credentials`].)
    #[error("request failed: {0}")]
    Dispatch(String),
    /// No credentials could be loaded (the default chain found none, or a
    /// provider failed): nothing was sent to AWS.
    #[error("no credentials: {0}")]
    Credentials(String),
    /// An answer arrived but could not be understood.
    #[error("unparseable response: {0}")]
    Response(String),
}

/// The AWS error code for tables that do not exist.
pub const NOT_FOUND_CODE: &str = "ResourceNotFoundException";

impl PollError {
    /// The value of the `code` label on `dynamodb_kinesis_api_errors_total`.
    pub fn code(&self) -> &str {
        match self {
            PollError::NotFound(_) => NOT_FOUND_CODE,
            PollError::Service { code, .. } => code,
            PollError::Timeout(_) => "timeout",
            PollError::Dispatch(_) => "dispatch",
            PollError::Credentials(_) => "credentials",
            PollError::Response(_) => "response",
        }
    }
}

/// Something that can list a table's Kinesis streaming destinations.
pub trait DestinationSource: Send + Sync + 'static {
    /// One `DescribeKinesisStreamingDestination` call (retries included).
    fn describe(
        &self,
        table: &TableRef,
    ) -> impl Future<Output = Result<Vec<Destination>, PollError>> + Send;
}

/// Settings shared by every target's client.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Static credentials instead of the default provider chain (the demo
    /// mode and tests use these; production leaves it `None`).
    pub static_credentials: Option<aws_sdk_dynamodb::config::Credentials>,
}

/// The production source: one aws-sdk-dynamodb client per config target.
#[derive(Debug, Clone)]
pub struct SdkSource {
    client: aws_sdk_dynamodb::Client,
}

/// Load the shared SDK configuration once: the credential chain and its
/// cache are shared by all targets; region, endpoint, retries and timeouts
/// are set per target in [`SdkSource::new`].
pub async fn load_shared_config(config: &Config, options: &ClientOptions) -> SdkConfig {
    // A region is always set so the SDK never probes the instance metadata
    // service just to find one; each target overrides it anyway.
    let first_region = config
        .targets
        .first()
        .map(|t| t.region.clone())
        .unwrap_or_else(|| "us-east-1".to_string());
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new(first_region));
    if let Some(creds) = options.static_credentials.clone() {
        loader = loader.credentials_provider(creds);
    }
    loader.load().await
}

/// Per-attempt timeout: the whole budget split across the attempts, so a
/// hung first attempt still leaves room for a retry, but never below 1 s.
fn attempt_timeout(request_timeout: Duration, max_attempts: u32) -> Duration {
    let per_attempt = request_timeout / max_attempts.max(1);
    per_attempt.max(Duration::from_secs(1)).min(request_timeout)
}

/// Whether `url` names this machine (127.0.0.0/8, `::1` or `localhost`):
/// DynamoDB Local, a simulator, never AWS itself.
pub fn is_loopback_endpoint(url: &str) -> bool {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Credentials for a loopback endpoint: the environment, then the shared
/// profile files, then a placeholder. Local DynamoDB implementations accept
/// any signature, and walking the full default chain there would only send
/// instance-metadata and STS requests off the machine for nothing.
fn local_endpoint_credentials() -> CredentialsProviderChain {
    CredentialsProviderChain::first_try(
        "Environment",
        aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
    )
    .or_else(
        "Profile",
        aws_config::profile::ProfileFileCredentialsProvider::builder().build(),
    )
    .or_else(
        "LocalEndpointPlaceholder",
        aws_sdk_dynamodb::config::Credentials::new(
            "LOCALENDPOINT",
            "local-endpoint-placeholder",
            None,
            None,
            "local-endpoint-placeholder",
        ),
    )
}

impl SdkSource {
    /// A client for one target, on top of the shared configuration.
    /// Targets on a loopback endpoint get `local_endpoint_credentials`
    /// unless static credentials were given.
    pub fn new(
        shared: &SdkConfig,
        target: &Target,
        max_attempts: u32,
        options: &ClientOptions,
    ) -> Self {
        let attempt = attempt_timeout(target.request_timeout, max_attempts);
        let timeouts = TimeoutConfig::builder()
            .operation_timeout(target.request_timeout)
            .operation_attempt_timeout(attempt)
            .connect_timeout(attempt.min(Duration::from_millis(3100)))
            .build();
        let mut builder = aws_sdk_dynamodb::config::Builder::from(shared)
            .region(Region::new(target.region.clone()))
            .retry_config(RetryConfig::standard().with_max_attempts(max_attempts))
            .timeout_config(timeouts);
        if let Some(url) = &target.endpoint_url {
            builder = builder.endpoint_url(url);
            if options.static_credentials.is_none() && is_loopback_endpoint(url) {
                tracing::info!(endpoint = %url, "loopback endpoint: credentials from the environment or profile, else a placeholder");
                builder = builder.credentials_provider(local_endpoint_credentials());
            }
        }
        SdkSource {
            client: aws_sdk_dynamodb::Client::from_conf(builder.build()),
        }
    }
}

impl DestinationSource for SdkSource {
    async fn describe(&self, table: &TableRef) -> Result<Vec<Destination>, PollError> {
        let out = self
            .client
            .describe_kinesis_streaming_destination()
            .table_name(&table.identifier)
            .send()
            .await
            .map_err(classify)?;
        Ok(destinations_from(out))
    }
}

fn destinations_from(out: DescribeKinesisStreamingDestinationOutput) -> Vec<Destination> {
    out.kinesis_data_stream_destinations
        .unwrap_or_default()
        .into_iter()
        .map(|d| Destination {
            stream_arn: d.stream_arn.unwrap_or_default(),
            status: d
                .destination_status
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            status_description: d.destination_status_description,
            precision: d
                .approximate_creation_date_time_precision
                .map(|p| p.as_str().to_string()),
        })
        .collect()
}

/// Map an SDK error to a [`PollError`], by error *code* rather than by enum
/// variant: throttling, for one, arrives as an `Unhandled` variant whose
/// code is `ThrottlingException`.
pub fn classify<E, R>(err: SdkError<E, R>) -> PollError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    if caused_by_credentials(&err) {
        return PollError::Credentials(detail);
    }
    match &err {
        SdkError::TimeoutError(_) => PollError::Timeout(detail),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => PollError::Timeout(detail),
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => {
            PollError::Dispatch(detail)
        }
        SdkError::ResponseError(_) => PollError::Response(detail),
        SdkError::ServiceError(service) => {
            let inner = service.err();
            let message = inner.message().unwrap_or("").to_string();
            match inner.code() {
                Some(NOT_FOUND_CODE) => PollError::NotFound(message),
                Some(code) if !code.is_empty() => PollError::Service {
                    code: code.to_string(),
                    message,
                },
                // No code at all: the body was not an AWS error document.
                _ => PollError::Response(detail),
            }
        }
        _ => PollError::Dispatch(detail),
    }
}

/// Whether a credentials provider failure is anywhere in the cause chain
/// (the SDK reports it as a dispatch failure).
fn caused_by_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<CredentialsError>().is_some() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_become_label_values() {
        let cases = [
            (PollError::NotFound("x".into()), "ResourceNotFoundException"),
            (
                PollError::Service {
                    code: "ThrottlingException".into(),
                    message: String::new(),
                },
                "ThrottlingException",
            ),
            (PollError::Timeout("t".into()), "timeout"),
            (PollError::Dispatch("d".into()), "dispatch"),
            (PollError::Response("r".into()), "response"),
            (PollError::Credentials("c".into()), "credentials"),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code);
        }
    }

    #[test]
    fn loopback_endpoints_are_recognised() {
        for url in [
            "http://127.0.0.1:8000",
            "http://127.3.2.1",
            "http://localhost:8000/",
            "https://LOCALHOST",
            "http://[::1]:8000",
        ] {
            assert!(is_loopback_endpoint(url), "{url}");
        }
        for url in [
            "https://dynamodb.us-east-1.amazonaws.com",
            "http://10.0.0.1:8000",
            "http://localhost.example.com",
            "http://[::2]:8000",
            "not a url",
            "",
        ] {
            assert!(!is_loopback_endpoint(url), "{url}");
        }
    }

    #[test]
    fn attempt_timeout_splits_the_budget_with_a_floor() {
        let s = Duration::from_secs;
        assert_eq!(attempt_timeout(s(9), 3), s(3));
        assert_eq!(attempt_timeout(s(2), 3), s(1));
        assert_eq!(
            attempt_timeout(Duration::from_millis(500), 3),
            Duration::from_millis(500)
        );
        assert_eq!(attempt_timeout(s(10), 1), s(10));
        assert_eq!(attempt_timeout(s(10), 0), s(10));
    }

    #[test]
    fn sdk_output_fields_map_to_destinations() {
        use aws_sdk_dynamodb::types::{
            ApproximateCreationDateTimePrecision, DestinationStatus, KinesisDataStreamDestination,
        };
        let out = DescribeKinesisStreamingDestinationOutput::builder()
            .kinesis_data_stream_destinations(
                KinesisDataStreamDestination::builder()
                    .stream_arn("arn:aws:kinesis:us-east-1:1:stream/a")
                    .destination_status(DestinationStatus::EnableFailed)
                    .destination_status_description("KMS key disabled")
                    .approximate_creation_date_time_precision(
                        ApproximateCreationDateTimePrecision::Microsecond,
                    )
                    .build(),
            )
            .kinesis_data_stream_destinations(
                KinesisDataStreamDestination::builder()
                    .stream_arn("arn:aws:kinesis:us-east-1:1:stream/b")
                    .destination_status(DestinationStatus::from("PAUSED"))
                    .build(),
            )
            .build();
        assert_eq!(
            destinations_from(out),
            vec![
                Destination {
                    stream_arn: "arn:aws:kinesis:us-east-1:1:stream/a".into(),
                    status: "ENABLE_FAILED".into(),
                    status_description: Some("KMS key disabled".into()),
                    precision: Some("MICROSECOND".into()),
                },
                Destination {
                    stream_arn: "arn:aws:kinesis:us-east-1:1:stream/b".into(),
                    status: "PAUSED".into(),
                    status_description: None,
                    precision: None,
                },
            ]
        );
    }

    #[test]
    fn missing_destination_list_is_empty() {
        let out = DescribeKinesisStreamingDestinationOutput::builder().build();
        assert!(destinations_from(out).is_empty());
    }

    /// A credentials provider that always fails, as the default chain does
    /// on a machine with no credentials anywhere.
    #[derive(Debug)]
    struct NoCredentials;

    impl aws_credential_types::provider::ProvideCredentials for NoCredentials {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                CredentialsError::not_loaded("no credentials in this test"),
            ))
        }
    }

    #[tokio::test]
    async fn missing_credentials_are_classified_as_credentials() {
        // Port 1 on loopback: nothing listens, and nothing is sent anyway
        // because signing fails first.
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:1")
            .credentials_provider(NoCredentials)
            .retry_config(RetryConfig::disabled())
            .build();
        let source = SdkSource {
            client: aws_sdk_dynamodb::Client::from_conf(conf),
        };
        let table = TableRef {
            identifier: "orders".into(),
            name: "orders".into(),
            account_id: None,
        };
        let err = source.describe(&table).await.unwrap_err();
        assert_eq!(err.code(), "credentials", "{err}");
    }
}
