//! The seam around AWS. Pollers and discovery only know [`DynamoDbApi`]
//! (describe a table's destinations, list tables, list a table's tags);
//! production uses [`SdkClient`] (aws-sdk-dynamodb), unit tests may use a
//! map. Every call goes through [`call`], which takes a token from the
//! scope's [`Budget`] for each attempt, retries what is worth retrying, and
//! tells the budget about throttling. The SDK's own retries are off, so the
//! budget sees, and its [`Meter`](budget::Meter) counts, every request that
//! leaves the process: each attempt of each [`Request`] (an operation, and
//! for GetMetricData the metrics it requests, which AWS bills). STS
//! `GetCallerIdentity` goes through [`call`] too; the `AssumeRole` calls
//! aws-config's provider makes to refresh a role's credentials do not
//! (the provider makes them inside the SDK's signing, where no budget
//! sees them: about one an hour per role).
//!
//! Every SDK failure is classified into a [`PollError`] by its AWS error
//! *code*; [`PollError::code`] becomes the `code` label of the error
//! counters, from a known set only ([`KNOWN_CODES`]), so a new code from AWS
//! cannot grow the number of series; the real code is logged by
//! [`warn_unknown_code`], once per scope and code, then at most hourly.
//! Every paginated listing walks its pages through [`paginate::all_pages`],
//! which guarantees that it ends.
//!
//! Accounts: a target's role is assumed with aws-config's assume-role
//! provider ([`role_credentials`]), which refreshes the credentials before
//! they expire; without a role, [`caller_account`] asks STS
//! `GetCallerIdentity` which account the default credentials belong to.
//! The fleet gets both, clients and account, from the [`factory`] in one
//! call per target and region.

use std::future::Future;
use std::time::Duration;

use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::describe_kinesis_streaming_destination::DescribeKinesisStreamingDestinationOutput;

use crate::aws::budget::Budget;
use crate::config::{Config, Role, TableRef, Target};

pub mod budget;
pub mod cloudwatch;
pub mod factory;
pub mod kinesis;
pub mod paginate;
pub mod unknown_codes;

pub use cloudwatch::CloudWatchApi;
pub use kinesis::{KinesisApi, StreamSummary};
pub use unknown_codes::warn_unknown_code;

/// One Kinesis streaming destination as AWS reported it. Optional fields
/// are `None` when AWS did not send them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub stream_arn: String,
    pub status: String,
    pub status_description: Option<String>,
    pub precision: Option<String>,
}

/// Why a call failed.
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
    /// No credentials could be loaded (the default chain found none, a role
    /// could not be assumed): nothing was sent to the service.
    #[error("no credentials: {0}")]
    Credentials(String),
    /// An answer arrived but could not be understood.
    #[error("unparseable response: {0}")]
    Response(String),
    /// A listing did not end: AWS handed back a pagination token it had
    /// sent before, or more pages than any real account has (see
    /// [`paginate`]).
    #[error("listing stopped: {0}")]
    Pagination(String),
    /// The scope shut down while the call waited for its budget: nothing
    /// was sent (or, between retries, nothing more). Never recorded: it is
    /// neither a failure of AWS nor aborted work.
    #[error("not made: the scope is shutting down")]
    Cancelled,
}

/// The AWS error code for tables that do not exist.
pub const NOT_FOUND_CODE: &str = "ResourceNotFoundException";

/// AWS error codes exported as they are in `code` labels; any other code is
/// exported as `other` (and logged with the real code).
pub const KNOWN_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "InternalFailure",
    "InternalServerError",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "LimitExceededException",
    "MissingAuthenticationToken",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "ResourceInUseException",
    "ResourceNotFoundException",
    "ServiceUnavailable",
    "SignatureDoesNotMatch",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "UnrecognizedClientException",
    "ValidationException",
];

/// Codes by which AWS services say "slow down".
const THROTTLING_CODES: &[&str] = &[
    "LimitExceededException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
];

/// Server-side failures worth another attempt.
const TRANSIENT_CODES: &[&str] = &[
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
];

impl PollError {
    /// The value of the `code` label on the error counters: a known AWS
    /// code, `other`, or one of `timeout`, `dispatch`, `credentials`,
    /// `response`, `pagination`.
    pub fn code(&self) -> &str {
        match self {
            PollError::NotFound(_) => NOT_FOUND_CODE,
            PollError::Service { code, .. } if KNOWN_CODES.contains(&code.as_str()) => code,
            PollError::Service { .. } => "other",
            PollError::Timeout(_) => "timeout",
            PollError::Dispatch(_) => "dispatch",
            PollError::Credentials(_) => "credentials",
            PollError::Response(_) => "response",
            PollError::Pagination(_) => "pagination",
            PollError::Cancelled => "cancelled",
        }
    }

    /// The AWS error code when it is one this exporter does not know (and
    /// so exports as `other`).
    pub fn unknown_code(&self) -> Option<&str> {
        match self {
            PollError::Service { code, .. } if !KNOWN_CODES.contains(&code.as_str()) => Some(code),
            _ => None,
        }
    }

    /// Whether AWS asked us to slow down.
    pub fn is_throttling(&self) -> bool {
        matches!(self, PollError::Service { code, .. } if THROTTLING_CODES.contains(&code.as_str()))
    }

    /// Whether another attempt may succeed: throttling, server errors, no
    /// answer. Client errors (access denied, not found...) are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            PollError::Service { code, .. } => {
                THROTTLING_CODES.contains(&code.as_str())
                    || TRANSIENT_CODES.contains(&code.as_str())
            }
            PollError::Timeout(_) | PollError::Dispatch(_) => true,
            PollError::NotFound(_)
            | PollError::Credentials(_)
            | PollError::Response(_)
            | PollError::Pagination(_)
            | PollError::Cancelled => false,
        }
    }
}

/// One page of a listing: the items and where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// The DynamoDB calls the exporter makes, each a single attempt (retries
/// and budgets are [`call`]'s job).
pub trait DynamoDbApi: Send + Sync + 'static {
    /// `DescribeKinesisStreamingDestination`.
    fn describe(
        &self,
        table: &TableRef,
    ) -> impl Future<Output = Result<Vec<Destination>, PollError>> + Send;

    /// One page of `ListTables`, starting after `start`.
    fn list_tables(
        &self,
        start: Option<String>,
    ) -> impl Future<Output = Result<Page<String>, PollError>> + Send;

    /// One page of `ListTagsOfResource` for a table ARN.
    fn list_tags(
        &self,
        table_arn: &str,
        token: Option<String>,
    ) -> impl Future<Output = Result<Page<(String, String)>, PollError>> + Send;
}

/// What one logical call is, for the request counters: the AWS operation
/// and, for GetMetricData, the metrics each attempt requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub operation: &'static str,
    pub metrics: u64,
}

impl Request {
    pub const fn new(operation: &'static str) -> Self {
        Request {
            operation,
            metrics: 0,
        }
    }
}

/// `DescribeKinesisStreamingDestination`: a table poll.
pub const DESCRIBE_DESTINATIONS: Request = Request::new("DescribeKinesisStreamingDestination");
/// Kinesis `DescribeStreamSummary`: a stream check.
pub const DESCRIBE_STREAM: Request = Request::new("DescribeStreamSummary");
/// STS `GetCallerIdentity`: whose credentials a target signs with.
pub const GET_CALLER_IDENTITY: Request = Request::new("GetCallerIdentity");

/// How [`call`] runs one logical call.
#[derive(Debug, Clone, Copy)]
pub struct CallPolicy {
    /// Attempts at most (1 = no retries).
    pub max_attempts: u32,
    /// Bound on the attempts of one call together, retries and backoff
    /// included, waits for the budget not.
    pub timeout: Duration,
}

impl CallPolicy {
    /// The policy of every call made for `target`: the config's attempts
    /// and the target's timeout. The one place a policy is built.
    pub fn of(config: &Config, target: &Target) -> Self {
        CallPolicy {
            max_attempts: config.max_attempts,
            timeout: target.request_timeout,
        }
    }

    /// Bound on one attempt: the whole timeout split across the attempts,
    /// so a hung first attempt still leaves room for a retry, but never
    /// below 1 s.
    pub fn attempt_timeout(&self) -> Duration {
        attempt_timeout(self.timeout, self.max_attempts)
    }
}

/// Run `attempt` under `budget`: a token per attempt, throttling reported
/// to the budget, retryable failures retried with exponential backoff and
/// full jitter. The attempts together are bounded by `policy.timeout`,
/// counted from the first one; waiting for the budget is not part of it
/// (a scope slowed by throttling is not a timing-out AWS). A budget closed
/// while the call waits for it ends the call with [`PollError::Cancelled`].
/// Each attempt is counted, as `request`, by the budget's meter.
pub async fn call<T, F, Fut>(
    budget: &Budget,
    policy: CallPolicy,
    request: Request,
    mut attempt: F,
) -> Result<T, PollError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PollError>>,
{
    let per_attempt = policy.attempt_timeout();
    let mut deadline = None;
    let mut tries = 0;
    loop {
        tries += 1;
        let ticket = budget.acquire().await.map_err(|_| PollError::Cancelled)?;
        budget.attempt(request.operation, request.metrics);
        let now = tokio::time::Instant::now();
        let deadline = *deadline.get_or_insert(now + policy.timeout);
        let limit = per_attempt.min(deadline.saturating_duration_since(now));
        let outcome = match tokio::time::timeout(limit, attempt()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(PollError::Timeout(format!("no answer within {limit:?}"))),
        };
        drop(ticket);
        let err = match outcome {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        if err.is_throttling() {
            budget.throttled();
        }
        let pause = backoff(tries, fastrand::f64());
        let out_of_time = tokio::time::Instant::now() + pause >= deadline;
        if !err.is_retryable() || tries >= policy.max_attempts.max(1) || out_of_time {
            return Err(err);
        }
        tokio::time::sleep(pause).await;
    }
}

/// Backoff before attempt `tries + 1`: full jitter over an exponential
/// ceiling (100 ms, 200 ms, 400 ms... at most 5 s); `unit` is uniform in [0, 1).
fn backoff(tries: u32, unit: f64) -> Duration {
    let ceiling = Duration::from_millis(100)
        .saturating_mul(1 << tries.saturating_sub(1).min(6))
        .min(Duration::from_secs(5));
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// Settings shared by every client.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Static credentials instead of the default provider chain (the demo
    /// mode and tests use these; production leaves it `None`).
    pub static_credentials: Option<aws_sdk_dynamodb::config::Credentials>,
}

/// The production clients of one target in one region: aws-sdk-dynamodb,
/// aws-sdk-kinesis and aws-sdk-cloudwatch, signing with the same
/// credentials.
#[derive(Debug, Clone)]
pub struct SdkClient {
    client: aws_sdk_dynamodb::Client,
    kinesis: aws_sdk_kinesis::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
}

/// Where a target's calls to a service other than DynamoDB go: the SDK's
/// endpoint (which honours `AWS_ENDPOINT_URL_<SERVICE>` and
/// `AWS_ENDPOINT_URL`), except that a target whose `endpoint_url` is on
/// this machine sends them there too unless one of those variables is set,
/// so a local setup (a simulator, the demo) never reaches out to AWS.
/// `service_env` is the variable's suffix: `STS`, `KINESIS`, `CLOUDWATCH`.
pub fn local_service_endpoint(target: &Target, service_env: &str) -> Option<String> {
    let url = target
        .endpoint_url
        .as_deref()
        .filter(|url| is_loopback_endpoint(url))?;
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if set(&format!("AWS_ENDPOINT_URL_{service_env}")) || set("AWS_ENDPOINT_URL") {
        return None;
    }
    Some(url.to_string())
}

/// Load the shared SDK configuration once: the default credential chain
/// and its cache are shared by all clients; region, endpoint, credentials
/// of an assumed role and timeouts are set per client.
pub async fn load_shared_config(config: &Config, options: &ClientOptions) -> SdkConfig {
    // A region is always set so the SDK never probes the instance metadata
    // service just to find one; each client overrides it anyway.
    let first_region = config
        .targets
        .first()
        .and_then(|t| t.regions.first().cloned())
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
pub fn local_endpoint_credentials() -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(local_endpoint_chain())
}

fn local_endpoint_chain() -> CredentialsProviderChain {
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

/// The credentials a target's clients sign with: its role, assumed from the
/// shared configuration's credentials (refreshed before they expire), or
/// `None` for the shared configuration's own.
pub async fn role_credentials(
    shared: &SdkConfig,
    role: &Role,
    region: &str,
) -> SharedCredentialsProvider {
    let mut builder = AssumeRoleProvider::builder(role.arn.clone())
        .region(Region::new(region.to_string()))
        .session_name(
            role.session_name
                .clone()
                .unwrap_or_else(|| "dynamodb-kinesis-exporter".to_string()),
        )
        .configure(shared);
    if let Some(id) = &role.external_id {
        builder = builder.external_id(id.clone());
    }
    SharedCredentialsProvider::new(builder.build().await)
}

/// The account the shared configuration's credentials belong to, by STS
/// `GetCallerIdentity` in `region`, through [`call`] under `budget` (whose
/// meter counts each attempt). The STS endpoint is the SDK's (and so
/// honours `AWS_ENDPOINT_URL_STS` and `AWS_ENDPOINT_URL`).
pub async fn caller_account(
    shared: &SdkConfig,
    region: &str,
    credentials: Option<SharedCredentialsProvider>,
    policy: CallPolicy,
    budget: &Budget,
) -> Result<String, PollError> {
    let mut builder = aws_sdk_sts::config::Builder::from(shared)
        .region(Region::new(region.to_string()))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(policy.attempt_timeout())
                .build(),
        );
    if let Some(credentials) = credentials {
        builder = builder.credentials_provider(credentials);
    }
    let client = aws_sdk_sts::Client::from_conf(builder.build());
    let out = call(budget, policy, GET_CALLER_IDENTITY, || async {
        client.get_caller_identity().send().await.map_err(classify)
    })
    .await?;
    out.account
        .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| PollError::Response("GetCallerIdentity named no 12-digit account".into()))
}

impl SdkClient {
    /// The clients of one target in one region, on top of the shared
    /// configuration. `credentials` (an assumed role) override the shared
    /// ones; targets on a loopback endpoint get `local_endpoint_credentials`
    /// unless credentials were given some other way. `endpoint_url` is
    /// DynamoDB's; see [`local_service_endpoint`] for the others.
    pub fn new(
        shared: &SdkConfig,
        target: &Target,
        region: &str,
        credentials: Option<SharedCredentialsProvider>,
        options: &ClientOptions,
        attempt: Duration,
    ) -> Self {
        let timeouts = TimeoutConfig::builder()
            .operation_timeout(attempt)
            .connect_timeout(attempt.min(Duration::from_millis(3100)))
            .build();
        let local = target
            .endpoint_url
            .as_deref()
            .is_some_and(is_loopback_endpoint);
        let credentials = credentials.or_else(|| {
            (local && options.static_credentials.is_none()).then(|| {
                tracing::info!(endpoint = ?target.endpoint_url, "loopback endpoint: credentials from the environment or profile, else a placeholder");
                local_endpoint_credentials()
            })
        });
        let region = Region::new(region.to_string());
        // One attempt per call everywhere: retries go through the budget
        // (see `call`).
        let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(shared)
            .region(region.clone())
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts.clone());
        if let Some(url) = &target.endpoint_url {
            dynamodb = dynamodb.endpoint_url(url);
        }
        let mut kinesis = aws_sdk_kinesis::config::Builder::from(shared)
            .region(region.clone())
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts.clone());
        if let Some(url) = local_service_endpoint(target, "KINESIS") {
            kinesis = kinesis.endpoint_url(url);
        }
        let mut cloudwatch = aws_sdk_cloudwatch::config::Builder::from(shared)
            .region(region)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(url) = local_service_endpoint(target, "CLOUDWATCH") {
            cloudwatch = cloudwatch.endpoint_url(url);
        }
        if let Some(credentials) = credentials {
            dynamodb = dynamodb.credentials_provider(credentials.clone());
            kinesis = kinesis.credentials_provider(credentials.clone());
            cloudwatch = cloudwatch.credentials_provider(credentials);
        }
        SdkClient {
            client: aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
            kinesis: aws_sdk_kinesis::Client::from_conf(kinesis.build()),
            cloudwatch: aws_sdk_cloudwatch::Client::from_conf(cloudwatch.build()),
        }
    }
}

impl DynamoDbApi for SdkClient {
    async fn describe(&self, table: &TableRef) -> Result<Vec<Destination>, PollError> {
        let out = self
            .client
            .describe_kinesis_streaming_destination()
            .table_name(&*table.identifier)
            .send()
            .await
            .map_err(classify)?;
        Ok(destinations_from(out))
    }

    async fn list_tables(&self, start: Option<String>) -> Result<Page<String>, PollError> {
        let out = self
            .client
            .list_tables()
            .set_exclusive_start_table_name(start)
            .limit(100)
            .send()
            .await
            .map_err(classify)?;
        Ok(Page {
            items: out.table_names.unwrap_or_default(),
            next: out.last_evaluated_table_name,
        })
    }

    async fn list_tags(
        &self,
        table_arn: &str,
        token: Option<String>,
    ) -> Result<Page<(String, String)>, PollError> {
        let out = self
            .client
            .list_tags_of_resource()
            .resource_arn(table_arn)
            .set_next_token(token)
            .send()
            .await
            .map_err(classify)?;
        Ok(Page {
            items: out
                .tags
                .unwrap_or_default()
                .into_iter()
                .map(|tag| (tag.key, tag.value))
                .collect(),
            next: out.next_token,
        })
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
                // An unknown code is warned about by the caller, which
                // knows the scope ([`warn_unknown_code`]).
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
            (PollError::Pagination("p".into()), "pagination"),
            (PollError::Cancelled, "cancelled"),
            (
                PollError::Service {
                    code: "SomethingNewException".into(),
                    message: String::new(),
                },
                "other",
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code);
        }
    }

    fn service(code: &str) -> PollError {
        PollError::Service {
            code: code.into(),
            message: String::new(),
        }
    }

    #[test]
    fn throttling_and_retryable_errors_are_told_apart() {
        for code in THROTTLING_CODES {
            assert!(service(code).is_throttling(), "{code}");
            assert!(service(code).is_retryable(), "{code}");
            assert!(
                KNOWN_CODES.contains(code),
                "{code} must be exported as itself"
            );
        }
        for code in TRANSIENT_CODES {
            assert!(!service(code).is_throttling() && service(code).is_retryable());
        }
        for final_error in [
            service("AccessDeniedException"),
            service("ValidationException"),
            PollError::NotFound("t".into()),
            PollError::Credentials("c".into()),
            PollError::Response("r".into()),
            PollError::Cancelled,
        ] {
            assert!(!final_error.is_retryable(), "{final_error}");
        }
        assert!(PollError::Timeout("t".into()).is_retryable());
        assert!(PollError::Dispatch("d".into()).is_retryable());
    }

    #[test]
    fn backoff_grows_exponentially_under_a_ceiling() {
        assert_eq!(
            backoff(1, 0.999_999_999),
            Duration::from_millis(100).mul_f64(0.999_999_999)
        );
        assert_eq!(backoff(2, 0.5), Duration::from_millis(100));
        assert_eq!(backoff(4, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(30, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(3, 0.0), Duration::ZERO);
    }

    /// An attempt function that fails with the given errors in turn, then
    /// succeeds; counts attempts.
    fn scripted(
        errors: Vec<PollError>,
    ) -> (
        std::sync::Arc<std::sync::atomic::AtomicU32>,
        impl FnMut() -> std::future::Ready<Result<u32, PollError>>,
    ) {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = std::sync::Arc::clone(&count);
        let f = move || {
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(match errors.get(n as usize) {
                Some(err) => Err(err.clone()),
                None => Ok(n + 1),
            })
        };
        (count, f)
    }

    const POLICY: CallPolicy = CallPolicy {
        max_attempts: 3,
        timeout: Duration::from_secs(30),
    };

    #[tokio::test(start_paused = true)]
    async fn call_retries_throttling_and_tells_the_budget() {
        let budget = Budget::new(10.0, 2);
        let (count, f) = scripted(vec![service("ThrottlingException")]);
        assert_eq!(call(&budget, POLICY, DESCRIBE_DESTINATIONS, f).await, Ok(2));
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(budget.throttled_total(), 1);
        assert!(budget.rate() < 10.0);
    }

    #[tokio::test(start_paused = true)]
    async fn call_gives_up_after_max_attempts_and_on_final_errors() {
        let budget = Budget::new(100.0, 2);
        let (count, f) = scripted(vec![service("InternalServerError"); 5]);
        assert_eq!(
            call(&budget, POLICY, DESCRIBE_DESTINATIONS, f).await,
            Err(service("InternalServerError"))
        );
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 3);
        let (count, f) = scripted(vec![service("AccessDeniedException")]);
        assert_eq!(
            call(&budget, POLICY, DESCRIBE_DESTINATIONS, f).await,
            Err(service("AccessDeniedException"))
        );
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(budget.throttled_total(), 0);
    }

    /// A meter that logs what it is told.
    #[derive(Default)]
    struct Log(std::sync::Mutex<Vec<(&'static str, u64)>>);

    impl budget::Meter for Log {
        fn attempt(&self, operation: &'static str, metrics: u64) {
            self.0.lock().unwrap().push((operation, metrics));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_attempt_is_counted_retries_included_and_a_call_never_made_is_not() {
        let log = std::sync::Arc::new(Log::default());
        let budget = Budget::metered(100.0, 2, log.clone());
        let (_, f) = scripted(vec![
            service("ThrottlingException"),
            service("InternalServerError"),
        ]);
        assert_eq!(call(&budget, POLICY, DESCRIBE_STREAM, f).await, Ok(3));
        let metrics = Request {
            operation: "GetMetricData",
            metrics: 500,
        };
        let (_, f) = scripted(vec![service("AccessDeniedException")]);
        assert!(call(&budget, POLICY, metrics, f).await.is_err());
        budget.close();
        let (_, f) = scripted(vec![]);
        assert_eq!(
            call(&budget, POLICY, metrics, f).await,
            Err(PollError::Cancelled)
        );
        assert_eq!(
            *log.0.lock().unwrap(),
            [
                ("DescribeStreamSummary", 0),
                ("DescribeStreamSummary", 0),
                ("DescribeStreamSummary", 0),
                ("GetMetricData", 500),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_budget_cancels_the_call_without_an_attempt() {
        let budget = Budget::new(0.01, 2);
        let (count, f) = scripted(vec![]);
        assert_eq!(call(&budget, POLICY, DESCRIBE_DESTINATIONS, f).await, Ok(1));
        // The next token is 100 s away: closing the budget ends the wait.
        let waiting = {
            let budget = std::sync::Arc::clone(&budget);
            let (_, f) = scripted(vec![]);
            tokio::spawn(async move { call(&budget, POLICY, DESCRIBE_DESTINATIONS, f).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        budget.close();
        assert_eq!(waiting.await.unwrap(), Err(PollError::Cancelled));
        let (later, f) = scripted(vec![]);
        assert_eq!(
            call(&budget, POLICY, DESCRIBE_DESTINATIONS, f).await,
            Err(PollError::Cancelled)
        );
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(later.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn call_bounds_a_hung_attempt_and_the_whole_call() {
        let budget = Budget::new(100.0, 2);
        let policy = CallPolicy {
            max_attempts: 2,
            timeout: Duration::from_secs(4),
        };
        let started = tokio::time::Instant::now();
        let outcome: Result<(), PollError> =
            call(&budget, policy, DESCRIBE_DESTINATIONS, std::future::pending).await;
        assert!(matches!(outcome, Err(PollError::Timeout(_))), "{outcome:?}");
        // Two attempts of 2 s each, plus at most one backoff.
        assert!(
            started.elapsed() <= Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
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
        let shared = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .build();
        let source = SdkClient {
            client: aws_sdk_dynamodb::Client::from_conf(conf),
            kinesis: aws_sdk_kinesis::Client::new(&shared),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&shared),
        };
        let table = TableRef {
            identifier: "orders".into(),
            name: "orders".into(),
            account_id: None,
            region: None,
            expect_streaming: None,
        };
        let err = source.describe(&table).await.unwrap_err();
        assert_eq!(err.code(), "credentials", "{err}");
    }
}
