//! DynamoDB: the JSON 1.0 protocol as AWS speaks it. Checks the request
//! envelope (method, path, `X-Amz-Target`, JSON body), dispatches to one
//! function per operation, and shapes every answer and error the way the
//! real service does. Requests act in the caller's scope (see
//! [`crate::wire`]); table ARNs act in their own.
//!
//! Adding an operation: one `async fn` taking a [`Ctx`] and the decoded
//! input, plus one arm in [`dispatch`] (and in [`table_of`] if it names a
//! table). Operations about one table go through [`admit_table_request`],
//! which resolves names and ARNs and applies the table's latency and fault.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::{
    partition, repeated_token, FaultOutcome, Listing, Scope, Service, Shared, TableSnapshot,
    UNKNOWN_ERROR_CODE,
};
use crate::serve::Body;
use crate::wire::{authenticate, read_body, AuthError, BodyError, Caller, Reset, MAX_BODY_BYTES};

const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.0";
const TARGET_PREFIX: &str = "DynamoDB_20120810.";
const ERROR_NAMESPACE: &str = "com.amazonaws.dynamodb.v20120810";
/// `ListTables` pages hold at most this many names, as on AWS.
const LIST_TABLES_MAX: usize = 100;

/// How a request can fail short of a normal answer.
enum Failure {
    /// An AWS-shaped error response.
    Api(ApiError),
    /// No response at all: the connection is closed.
    Reset,
}

impl From<Reset> for Failure {
    fn from(_: Reset) -> Self {
        Failure::Reset
    }
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

    fn unrecognized_client() -> Self {
        ApiError::bad_request(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
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

/// Serve one DynamoDB request; `Err` closes the connection unanswered.
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

/// What an operation gets to work with.
struct Ctx<'a> {
    shared: &'a Shared,
    caller: Caller,
    /// A scope fault is in force: table faults and latency are skipped.
    scope_fault: bool,
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
        Method::GET => return Ok(health_response(&shared.default_scope.region)),
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
    let caller = authenticate(shared, request.headers(), "dynamodb").map_err(auth_error)?;
    let operation = operation_name(request.headers())?;
    let input = read_input(request.into_body()).await?;
    let table = table_of(&caller, &operation, &input);
    caller.record(shared, Service::DynamoDb, &operation, table.as_deref());
    let scope_fault = shared.scope_fault(&caller.scope);
    let garble = match scope_fault {
        None => false,
        Some(fault) => match shared.enact(fault).await {
            FaultOutcome::Garble => true,
            outcome => return Err(fault_error(&caller, outcome, None, &operation)),
        },
    };
    let ctx = Ctx {
        shared,
        caller,
        scope_fault: scope_fault.is_some(),
    };
    let mut answer = dispatch(&ctx, &operation, &input).await?;
    answer.garble |= garble;
    Ok(answer.into_response())
}

fn auth_error(error: AuthError) -> ApiError {
    match error {
        AuthError::Missing => ApiError::bad_request(
            "MissingAuthenticationTokenException",
            "Request is missing Authentication Token",
        ),
        AuthError::Incomplete(problems) => {
            ApiError::bad_request("IncompleteSignatureException", problems)
        }
        AuthError::InvalidToken => ApiError::unrecognized_client(),
    }
}

/// The error a fault outcome turns into. `table` is `(arn, name as
/// requested)` when the request named one.
fn fault_error(
    caller: &Caller,
    outcome: FaultOutcome,
    table: Option<(&str, &str)>,
    action: &str,
) -> Failure {
    let error = match outcome {
        FaultOutcome::Reset => return Failure::Reset,
        // The caller handles `Garble` by answering with a cut body; a
        // garble that reaches here has nothing to garble.
        FaultOutcome::Garble | FaultOutcome::InternalError => ApiError::internal_server_error(),
        FaultOutcome::Throttle => ApiError::throttling(),
        FaultOutcome::UnknownCode => ApiError::bad_request(
            UNKNOWN_ERROR_CODE,
            "An error this simulator made up: no client knows its code.",
        ),
        FaultOutcome::NotFound => match table {
            Some((_, name)) => ApiError::table_not_found(name),
            None => {
                ApiError::bad_request("ResourceNotFoundException", "Requested resource not found")
            }
        },
        FaultOutcome::AccessDenied => {
            let resource = match table {
                Some((arn, _)) => arn.to_string(),
                None => format!(
                    "arn:{}:dynamodb:{}:{}:table/*",
                    partition(&caller.scope.region),
                    caller.scope.region,
                    caller.scope.account_id
                ),
            };
            ApiError::access_denied(&caller.arn(), action, &resource)
        }
    };
    Failure::Api(error)
}

/// The table a request names, for the stats: its name, also when the
/// request gives an ARN; `None` for operations about no table.
fn table_of(caller: &Caller, operation: &str, input: &Map<String, Value>) -> Option<String> {
    let member = match operation {
        "DescribeKinesisStreamingDestination"
        | "EnableKinesisStreamingDestination"
        | "DisableKinesisStreamingDestination" => "TableName",
        "ListTagsOfResource" => "ResourceArn",
        _ => return None,
    };
    let requested = input.get(member)?.as_str()?;
    match resolve_table(&caller.scope, requested) {
        Ok(resolved) => Some(resolved.name.to_string()),
        Err(_) => Some(requested.to_string()),
    }
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
    ctx: &Ctx<'_>,
    operation: &str,
    input: &Map<String, Value>,
) -> Result<Answer, Failure> {
    match operation {
        "DescribeKinesisStreamingDestination" => {
            describe_kinesis_streaming_destination(ctx, input).await
        }
        "EnableKinesisStreamingDestination" => {
            enable_kinesis_streaming_destination(ctx, input).await
        }
        "DisableKinesisStreamingDestination" => {
            disable_kinesis_streaming_destination(ctx, input).await
        }
        "ListTables" => list_tables(ctx, input),
        "ListTagsOfResource" => list_tags_of_resource(ctx, input).await,
        other => Err(ApiError::unknown_operation(format!(
            "Operation {other} is not supported by this simulator"
        ))
        .into()),
    }
}

async fn describe_kinesis_streaming_destination(
    ctx: &Ctx<'_>,
    input: &Map<String, Value>,
) -> Result<Answer, Failure> {
    let requested = required_string(input, "TableName", "tableName")?;
    let table =
        admit_table_request(ctx, requested, "DescribeKinesisStreamingDestination", true).await?;
    let snapshot = &table.snapshot;
    let destinations: Vec<Value> = (snapshot.spec.destinations.iter())
        .zip(&snapshot.destinations_elapsed)
        .filter_map(|(destination, elapsed)| {
            let step = destination.step_at(*elapsed)?;
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

/// `EnableKinesisStreamingDestination`: admitted under AWS's rules (see
/// [`crate::streaming`]), answered with ENABLING and the configuration
/// echoed (`{}` when none was sent, as AWS does).
async fn enable_kinesis_streaming_destination(
    ctx: &Ctx<'_>,
    input: &Map<String, Value>,
) -> Result<Answer, Failure> {
    const OPERATION: &str = "EnableKinesisStreamingDestination";
    let requested = required_string(input, "TableName", "tableName")?;
    let stream_arn = stream_arn_member(input)?;
    let (configuration, precision) = match input.get(CONFIGURATION) {
        None | Some(Value::Null) => (json!({}), None),
        Some(Value::Object(configuration)) => {
            let precision = precision_member(configuration)?;
            (Value::Object(configuration.clone()), precision)
        }
        Some(_) => {
            return Err(
                ApiError::serialization(format!("{CONFIGURATION} must be an object")).into(),
            )
        }
    };
    let table = admit_table_request(ctx, requested, OPERATION, false).await?;
    let (scope, name, shown) = table_scope(ctx, requested)?;
    let status = ctx
        .shared
        .enable_streaming(&scope, name, shown, stream_arn, precision)
        .map_err(destination_error)?;
    Ok(table.answer(json!({
        "TableName": name,
        "StreamArn": stream_arn,
        "DestinationStatus": status,
        CONFIGURATION: configuration,
    })))
}

/// `DisableKinesisStreamingDestination`: the stream's entry must be ACTIVE;
/// answered with DISABLING.
async fn disable_kinesis_streaming_destination(
    ctx: &Ctx<'_>,
    input: &Map<String, Value>,
) -> Result<Answer, Failure> {
    const OPERATION: &str = "DisableKinesisStreamingDestination";
    let requested = required_string(input, "TableName", "tableName")?;
    let stream_arn = stream_arn_member(input)?;
    let table = admit_table_request(ctx, requested, OPERATION, false).await?;
    if !matches!(input.get(CONFIGURATION), None | Some(Value::Null)) {
        return Err(destination_error(crate::DestinationError::ConfigurationOnDisable).into());
    }
    let (scope, name, shown) = table_scope(ctx, requested)?;
    let status = ctx
        .shared
        .disable_streaming(&scope, name, shown, stream_arn)
        .map_err(destination_error)?;
    Ok(table.answer(json!({
        "TableName": name,
        "StreamArn": stream_arn,
        "DestinationStatus": status,
    })))
}

/// The request member that carries Enable's options.
const CONFIGURATION: &str = "EnableKinesisStreamingConfiguration";

/// The precisions AWS accepts, in the order its validation message lists them.
const PRECISIONS: [&str; 2] = ["MILLISECOND", "MICROSECOND"];

/// The `StreamArn` member: required, 37 to 1024 characters (AWS's model);
/// what it names is only looked at later, as on AWS.
fn stream_arn_member(input: &Map<String, Value>) -> Result<&str, ApiError> {
    let arn = match input.get("StreamArn") {
        None | Some(Value::Null) => {
            return Err(ApiError::validation(
                "1 validation error detected: Value null at 'streamArn' failed to satisfy \
                 constraint: Member must not be null",
            ))
        }
        Some(Value::String(arn)) => arn.as_str(),
        Some(_) => return Err(ApiError::serialization("StreamArn must be a string")),
    };
    let bound = match arn.chars().count() {
        n if n < 37 => Some("greater than or equal to 37"),
        n if n > 1024 => Some("less than or equal to 1024"),
        _ => None,
    };
    match bound {
        Some(bound) => Err(ApiError::validation(format!(
            "1 validation error detected: Value '{arn}' at 'streamArn' failed to satisfy \
             constraint: Member must have length {bound}"
        ))),
        None => Ok(arn),
    }
}

/// `ApproximateCreationDateTimePrecision` of an Enable's configuration.
fn precision_member(configuration: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match configuration.get("ApproximateCreationDateTimePrecision") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(p)) if PRECISIONS.contains(&p.as_str()) => Ok(Some(p.clone())),
        Some(Value::String(p)) => Err(ApiError::validation(format!(
            "1 validation error detected: Value '{p}' at \
             'enableKinesisStreamingConfiguration.approximateCreationDateTimePrecision' \
             failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            PRECISIONS.join(", ")
        ))),
        Some(_) => Err(ApiError::serialization(
            "ApproximateCreationDateTimePrecision must be a string",
        )),
    }
}

/// The scope and name of the table `requested` names, and how errors show
/// it. Only called once [`admit_table_request`] found the table.
fn table_scope<'a>(
    ctx: &Ctx<'_>,
    requested: &'a str,
) -> Result<(Scope, &'a str, &'a str), Failure> {
    let resolved = resolve_table(&ctx.caller.scope, requested)?;
    let shown = if resolved.foreign {
        requested
    } else {
        resolved.name
    };
    let scope = resolved
        .scope
        .ok_or_else(|| ApiError::table_not_found(shown))?;
    Ok((scope, resolved.name, shown))
}

fn destination_error(error: crate::DestinationError) -> ApiError {
    ApiError::bad_request(error.code(), error.to_string())
}

/// `ListTables` in the caller's scope: sorted names, `Limit` (1..=100) per
/// page, `LastEvaluatedTableName` only while more remain.
fn list_tables(ctx: &Ctx<'_>, input: &Map<String, Value>) -> Result<Answer, Failure> {
    let limit = match input.get("Limit") {
        None | Some(Value::Null) => LIST_TABLES_MAX,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(n) if n < 1 => {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{n}' at 'limit' failed to satisfy \
                     constraint: Member must have value greater than or equal to 1"
                ))
                .into())
            }
            Some(n) if n > LIST_TABLES_MAX as i64 => {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{n}' at 'limit' failed to satisfy \
                     constraint: Member must have value less than or equal to {LIST_TABLES_MAX}"
                ))
                .into())
            }
            Some(n) => n as usize,
            None => return Err(ApiError::serialization("Limit must be an integer").into()),
        },
        Some(_) => return Err(ApiError::serialization("Limit must be an integer").into()),
    };
    let start = match input.get("ExclusiveStartTableName") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => {
            return Err(ApiError::serialization("ExclusiveStartTableName must be a string").into())
        }
    };
    let names = ctx.shared.table_names(&ctx.caller.scope);
    let mut rest = names
        .iter()
        .filter(|name| start.is_none_or(|start| name.as_str() > start))
        .peekable();
    let page: Vec<&String> = rest.by_ref().take(limit).collect();
    let mut body = json!({ "TableNames": page });
    if rest.peek().is_some() {
        if let Some(last) = page.last() {
            body["LastEvaluatedTableName"] = json!(last);
        }
    } else if let (true, Some(first)) = (ctx.shared.repeats(Listing::ListTables), names.first()) {
        let second = names.get(1).unwrap_or(first);
        body["LastEvaluatedTableName"] = json!(repeated_token(start, first, second));
    }
    Ok(Answer {
        body,
        garble: false,
    })
}

/// `ListTagsOfResource` for a table ARN, a page of tags at a time; the
/// `NextToken` is the index of the next tag.
async fn list_tags_of_resource(
    ctx: &Ctx<'_>,
    input: &Map<String, Value>,
) -> Result<Answer, Failure> {
    let arn = required_string(input, "ResourceArn", "resourceArn")?;
    if !arn.starts_with("arn:") {
        return Err(
            ApiError::validation(format!("Invalid ResourceArn provided as input {arn}")).into(),
        );
    }
    let start = match input.get("NextToken") {
        None | Some(Value::Null) => 0,
        Some(Value::String(token)) => token.parse::<usize>().map_err(|_| {
            ApiError::validation(format!("Invalid NextToken provided as input {token}"))
        })?,
        Some(_) => return Err(ApiError::serialization("NextToken must be a string").into()),
    };
    let table = admit_table_request(ctx, arn, "ListTagsOfResource", false).await?;
    // The tag read's own fault, unless a scope fault is in force.
    let mut garble = table.garble;
    if let (Some(fault), false) = (table.snapshot.spec.tag_fault, ctx.scope_fault) {
        match ctx.shared.enact(fault).await {
            FaultOutcome::Garble => garble = true,
            outcome => {
                let (scope, name) = match resolve_table(&ctx.caller.scope, arn) {
                    Ok(resolved) => (
                        resolved.scope.unwrap_or_else(|| ctx.caller.scope.clone()),
                        resolved.name,
                    ),
                    Err(_) => (ctx.caller.scope.clone(), arn),
                };
                let table_arn = ctx.shared.table_arn(&scope, name);
                return Err(fault_error(
                    &ctx.caller,
                    outcome,
                    Some((&table_arn, name)),
                    "ListTagsOfResource",
                ));
            }
        }
    }
    let page_size = ctx.shared.world().tags_page_size;
    let tags = &table.snapshot.spec.tags;
    let page: Vec<Value> = tags
        .iter()
        .skip(start)
        .take(page_size)
        .map(|(key, value)| json!({ "Key": key, "Value": value }))
        .collect();
    let mut body = json!({ "Tags": page });
    if start + page_size < tags.len() {
        body["NextToken"] = json!((start + page_size).to_string());
    } else if ctx.shared.repeats(Listing::ListTagsOfResource) {
        let asked = input.get("NextToken").and_then(Value::as_str);
        body["NextToken"] = json!(repeated_token(asked, "1", "2"));
    }
    Ok(Answer { body, garble })
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
/// the table if `count` (the per-table stats are about describes), then
/// apply the table's latency and fault unless a scope fault is in force.
/// Errors are the ones AWS gives for a missing or inaccessible table.
async fn admit_table_request(
    ctx: &Ctx<'_>,
    requested: &str,
    action: &str,
    count: bool,
) -> Result<AdmittedTable, Failure> {
    let shared = ctx.shared;
    let resolved = resolve_table(&ctx.caller.scope, requested)?;
    // Tables of the default scope count under their name, others under
    // their ARN, so `requests_for(name)` keeps its single-scope meaning.
    let shown = resolved.shown(requested);
    if count {
        match &resolved.scope {
            Some(scope) if *scope == shared.default_scope => {
                shared.stats.count_table(resolved.name)
            }
            Some(scope) => shared
                .stats
                .count_table(&shared.table_arn(scope, resolved.name)),
            None => shared.stats.count_table(requested),
        }
    }
    let snapshot = resolved
        .scope
        .as_ref()
        .and_then(|scope| shared.snapshot(scope, resolved.name))
        .ok_or_else(|| ApiError::table_not_found(shown))?;
    if ctx.scope_fault {
        return Ok(AdmittedTable {
            snapshot,
            garble: false,
        });
    }
    if let Some(latency) = snapshot.spec.latency {
        if !shared.delay(latency).await {
            return Err(Failure::Reset);
        }
    }
    let garble = match snapshot.spec.fault {
        None => false,
        Some(fault) => match shared.enact(fault).await {
            FaultOutcome::Garble => true,
            outcome => {
                // `resolved.scope` is set: the snapshot was found there.
                let scope = resolved.scope.as_ref().unwrap_or(&ctx.caller.scope);
                let arn = shared.table_arn(scope, resolved.name);
                return Err(fault_error(
                    &ctx.caller,
                    outcome,
                    Some((&arn, shown)),
                    action,
                ));
            }
        },
    };
    Ok(AdmittedTable { snapshot, garble })
}

/// Where a requested table name or ARN points.
struct ResolvedTable<'a> {
    /// `None` for an ARN no scope can hold (a partition its region is not in).
    scope: Option<Scope>,
    name: &'a str,
    /// Whether an ARN named another scope than the caller's.
    foreign: bool,
}

impl ResolvedTable<'_> {
    /// How error messages name the table: as requested when it lies in
    /// another scope (AWS then echoes the ARN), else by name.
    fn shown<'r>(&'r self, requested: &'r str) -> &'r str {
        if self.foreign {
            requested
        } else {
            self.name
        }
    }
}

/// Resolve `requested`: a name lies in the caller's scope, a table ARN in
/// the scope it names.
fn resolve_table<'a>(
    caller_scope: &Scope,
    requested: &'a str,
) -> Result<ResolvedTable<'a>, ApiError> {
    if !requested.starts_with("arn:") {
        return Ok(ResolvedTable {
            scope: Some(caller_scope.clone()),
            name: requested,
            foreign: false,
        });
    }
    let invalid = || ApiError::validation(format!("Invalid TableArn: {requested}"));
    let mut parts = requested.splitn(6, ':');
    let (_arn, arn_partition, service, region, account, resource) = (
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
    if service != "dynamodb" || arn_partition.is_empty() || region.is_empty() || account.is_empty()
    {
        return Err(invalid());
    }
    let scope = Scope::new(account, region);
    let foreign = scope != *caller_scope;
    Ok(ResolvedTable {
        scope: (arn_partition == partition(region)).then_some(scope),
        name,
        foreign: foreign || arn_partition != partition(region),
    })
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
    let bytes = match read_body(body).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SerializationException",
                format!("Request body exceeds {MAX_BODY_BYTES} bytes"),
            )
            .into())
        }
        Err(BodyError::Gone) => return Err(Failure::Reset),
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
    use tokio::net::TcpStream;

    use super::crc32;
    use crate::testing::{bounded, eventually, send_raw, VALID_AUTH};
    use crate::{DestinationSpec, Fault, Scenario, Simulator, Step, TableSpec, UNKNOWN_ERROR_CODE};

    type Outcome = Result<
        DescribeKinesisStreamingDestinationOutput,
        SdkError<DescribeKinesisStreamingDestinationError>,
    >;

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
            ..Scenario::default()
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
            post(
                Some("Firehose_20150804.ListDeliveryStreams"),
                Some(VALID_AUTH),
                "{}",
            ),
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

    fn names_of(out: &aws_sdk_dynamodb::operation::list_tables::ListTablesOutput) -> Vec<String> {
        out.table_names().to_vec()
    }

    #[tokio::test]
    async fn list_tables_pages_sorted_names_of_the_callers_scope() {
        // Inserted out of order; answers come sorted.
        let tables = (0..250)
            .rev()
            .map(|i| TableSpec::new(&format!("t{i:03}")))
            .collect();
        let sim = start(tables).await;
        let client = client(&sim);
        let mut seen = Vec::new();
        let mut pages = Vec::new();
        let mut start_after: Option<String> = None;
        loop {
            let out = client
                .list_tables()
                .limit(100)
                .set_exclusive_start_table_name(start_after.clone())
                .send()
                .await
                .unwrap();
            pages.push(out.table_names().len());
            seen.extend(names_of(&out));
            match out.last_evaluated_table_name() {
                Some(last) => {
                    assert_eq!(Some(last), seen.last().map(String::as_str));
                    start_after = Some(last.to_string());
                }
                None => break,
            }
        }
        assert_eq!(pages, [100, 100, 50]);
        let expected: Vec<String> = (0..250).map(|i| format!("t{i:03}")).collect();
        assert_eq!(seen, expected);

        // Without a limit a page holds 100; an exact fit has no LastEvaluated.
        let out = client.list_tables().send().await.unwrap();
        assert_eq!(out.table_names().len(), 100);
        let out = client
            .list_tables()
            .exclusive_start_table_name("t149")
            .limit(100)
            .send()
            .await
            .unwrap();
        assert_eq!(out.table_names().len(), 100);
        assert_eq!(out.last_evaluated_table_name(), None);

        for (limit, message) in [
            (0, "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1"),
            (101, "1 validation error detected: Value '101' at 'limit' failed to satisfy constraint: Member must have value less than or equal to 100"),
        ] {
            let err = client.list_tables().limit(limit).send().await.unwrap_err();
            let err = err.into_service_error();
            assert_eq!(err.code(), Some("ValidationException"));
            assert_eq!(err.message(), Some(message));
        }
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn tags_come_in_small_pages_in_their_order() {
        let table = TableSpec::new("orders")
            .with_tag("team", "payments")
            .with_tag("cdc", "true")
            .with_tag("env", "prod")
            .with_tag("cost-centre", "42")
            .with_tag("owner", "ana");
        let sim = start(vec![table]).await;
        let client = client(&sim);
        let arn = sim.table_arn("orders");
        let mut tags = Vec::new();
        let mut pages = 0;
        let mut token: Option<String> = None;
        loop {
            let out = client
                .list_tags_of_resource()
                .resource_arn(&arn)
                .set_next_token(token.clone())
                .send()
                .await
                .unwrap();
            pages += 1;
            tags.extend(
                out.tags()
                    .iter()
                    .map(|t| format!("{}={}", t.key(), t.value())),
            );
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(
            tags,
            [
                "team=payments",
                "cdc=true",
                "env=prod",
                "cost-centre=42",
                "owner=ana"
            ]
        );

        sim.set_tags_page_size(10);
        let out = client
            .list_tags_of_resource()
            .resource_arn(&arn)
            .send()
            .await
            .unwrap();
        assert_eq!((out.tags().len(), out.next_token()), (5, None));

        let missing = sim.table_arn("ghost");
        let err = client
            .list_tags_of_resource()
            .resource_arn(&missing)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(err.code(), Some("ResourceNotFoundException"));
        assert_eq!(
            err.message(),
            Some("Requested resource not found: Table: ghost not found")
        );
        // Tags are not describes: the per-table count stays at zero.
        assert_eq!(sim.requests_for("orders"), 0);
        assert_eq!(
            sim.operation_requests(crate::Service::DynamoDb, "ListTagsOfResource"),
            5
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn tag_faults_hit_the_tag_read_only() {
        let sim = start(vec![
            TableSpec::new("denied").with_tag_fault(Fault::AccessDenied),
            TableSpec::new("gone").with_tag_fault(Fault::NotFound),
            TableSpec::new("new-code").with_tag_fault(Fault::UnknownCode),
            TableSpec::new("slow-down").with_tag_fault(Fault::Throttle),
            TableSpec::new("fine").with_tag("cdc", "true"),
        ])
        .await;
        let client = client(&sim);
        let listed = client.list_tables().send().await.unwrap();
        assert_eq!(
            listed.table_names(),
            ["denied", "fine", "gone", "new-code", "slow-down"],
            "tables with a tag fault are still listed"
        );
        let code = |table: &'static str| {
            let client = client.clone();
            let arn = sim.table_arn(table);
            async move {
                client
                    .list_tags_of_resource()
                    .resource_arn(arn)
                    .send()
                    .await
                    .map(|out| out.tags().len())
                    .map_err(|e| e.into_service_error().code().map(str::to_string))
            }
        };
        assert_eq!(
            code("denied").await,
            Err(Some("AccessDeniedException".into()))
        );
        assert_eq!(
            code("gone").await,
            Err(Some("ResourceNotFoundException".into()))
        );
        assert_eq!(code("new-code").await, Err(Some(UNKNOWN_ERROR_CODE.into())));
        assert_eq!(
            code("slow-down").await,
            Err(Some("ThrottlingException".into()))
        );
        assert_eq!(code("fine").await, Ok(1));
        // Describes are unaffected.
        for table in ["denied", "gone", "new-code", "slow-down"] {
            assert!(describe(&client, table).await.is_ok(), "{table}");
        }
        // And the fault can be cleared.
        sim.set_tag_fault("denied", None);
        assert_eq!(code("denied").await, Ok(0));
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn repeating_tokens_go_round_instead_of_ending() {
        let sim = start(vec![
            TableSpec::new("a").with_tag("k1", "v").with_tag("k2", "v"),
            TableSpec::new("b"),
            TableSpec::new("c"),
        ])
        .await;
        sim.set_repeating_token(crate::Listing::ListTables, true);
        sim.set_repeating_token(crate::Listing::ListTagsOfResource, true);
        let client = client(&sim);
        let mut tokens = Vec::new();
        let mut start: Option<String> = None;
        for _ in 0..4 {
            let out = client
                .list_tables()
                .set_exclusive_start_table_name(start.clone())
                .send()
                .await
                .unwrap();
            start = out.last_evaluated_table_name().map(str::to_string);
            tokens.push(start.clone().unwrap());
        }
        // Past the first table, past the second, past the first again...
        assert_eq!(tokens, ["a", "b", "a", "b"]);

        let arn = sim.table_arn("a");
        let mut tokens = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..3 {
            let out = client
                .list_tags_of_resource()
                .resource_arn(&arn)
                .set_next_token(token.clone())
                .send()
                .await
                .unwrap();
            token = out.next_token().map(str::to_string);
            tokens.push(token.clone().unwrap());
        }
        assert_eq!(tokens, ["1", "2", "1"]);

        sim.set_repeating_token(crate::Listing::ListTables, false);
        let out = client.list_tables().send().await.unwrap();
        assert_eq!(out.last_evaluated_table_name(), None);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn scopes_are_isolated_by_region_and_account() {
        use crate::testing::{dynamodb_client, BASE_KEYS};
        use crate::ScopeSpec;
        let scenario = Scenario::default()
            .with_table(TableSpec::new("orders"))
            .with_scope(
                ScopeSpec::new("123456789012", "eu-west-1")
                    .with_table(TableSpec::new("eu-orders").with_tag("cdc", "true")),
            )
            .with_scope(
                ScopeSpec::new("222222222222", "us-east-1")
                    .with_table(TableSpec::new("other-account")),
            );
        let sim = Simulator::start(scenario).await.unwrap();
        let us = dynamodb_client(&sim, "us-east-1", BASE_KEYS);
        let eu = dynamodb_client(&sim, "eu-west-1", BASE_KEYS);
        let ap = dynamodb_client(&sim, "ap-south-1", BASE_KEYS);

        let names = |out: aws_sdk_dynamodb::operation::list_tables::ListTablesOutput| {
            out.table_names().to_vec()
        };
        assert_eq!(names(us.list_tables().send().await.unwrap()), ["orders"]);
        assert_eq!(names(eu.list_tables().send().await.unwrap()), ["eu-orders"]);
        assert!(names(ap.list_tables().send().await.unwrap()).is_empty());

        assert!(describe(&eu, "eu-orders").await.is_ok());
        assert_eq!(
            service_error(describe(&us, "eu-orders").await).0,
            "ResourceNotFoundException"
        );
        // An ARN acts in its own scope, whichever region signed.
        let eu_arn = sim.table_arn_in("123456789012", "eu-west-1", "eu-orders");
        assert_eq!(
            describe(&us, &eu_arn).await.unwrap().table_name(),
            Some("eu-orders")
        );
        let tags = us
            .list_tags_of_resource()
            .resource_arn(&eu_arn)
            .send()
            .await
            .unwrap();
        assert_eq!(tags.tags()[0].key(), "cdc");
        let other = sim.table_arn_in("222222222222", "us-east-1", "other-account");
        assert!(describe(&us, &other).await.is_ok());
        assert_eq!(sim.requests_for(&other), 1);

        // Tables come and go per scope.
        sim.put_table_in("123456789012", "ap-south-1", TableSpec::new("late"));
        assert_eq!(names(ap.list_tables().send().await.unwrap()), ["late"]);
        sim.remove_table_in("123456789012", "eu-west-1", "eu-orders");
        assert!(names(eu.list_tables().send().await.unwrap()).is_empty());
        sim.set_fault_in("123456789012", "ap-south-1", "late", Some(Fault::Throttle));
        assert_eq!(
            service_error(describe(&ap, "late").await).0,
            "ThrottlingException"
        );
        assert_eq!(sim.requests_in("123456789012", "eu-west-1"), 3);
        assert_eq!(sim.requests_in("123456789012", "ap-south-1"), 3);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_scope_fault_hits_every_request_of_the_scope_only() {
        use crate::testing::{dynamodb_client, BASE_KEYS};
        let sim = start(vec![
            TableSpec::new("orders"),
            TableSpec::new("slow").with_latency(Duration::from_secs(30)),
        ])
        .await;
        let us = client(&sim);
        let eu = dynamodb_client(&sim, "eu-west-1", BASE_KEYS);
        sim.set_scope_fault("123456789012", "us-east-1", Some(Fault::Throttle));
        assert_eq!(
            service_error(describe(&us, "orders").await).0,
            "ThrottlingException"
        );
        // Overrides the table's own latency.
        assert_eq!(
            service_error(describe(&us, "slow").await).0,
            "ThrottlingException"
        );
        let err = us
            .list_tables()
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(err.code(), Some("ThrottlingException"));
        assert!(eu.list_tables().send().await.is_ok());

        sim.set_scope_fault("123456789012", "us-east-1", Some(Fault::Hang));
        let impatient = client_with_timeout(&sim, Duration::from_millis(200));
        let outcome = impatient.list_tables().send().await;
        assert!(
            matches!(outcome, Err(SdkError::TimeoutError(_))),
            "{outcome:?}"
        );

        sim.set_scope_fault("123456789012", "us-east-1", None);
        assert!(describe(&us, "orders").await.is_ok());
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn requests_are_recorded_per_scope_with_a_sliding_window() {
        use crate::testing::{dynamodb_client, BASE_KEYS};
        use crate::Service;
        let sim = start(vec![TableSpec::new("orders")]).await;
        let us = client(&sim);
        let eu = dynamodb_client(&sim, "eu-west-1", BASE_KEYS);
        for _ in 0..5 {
            describe(&us, "orders").await.unwrap();
        }
        us.list_tables().send().await.unwrap();
        eu.list_tables().send().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        describe(&us, &sim.table_arn("orders")).await.unwrap();

        assert_eq!(sim.requests_in("123456789012", "us-east-1"), 7);
        assert_eq!(sim.requests_in("123456789012", "eu-west-1"), 1);
        assert_eq!(
            sim.max_requests_in_window("123456789012", "us-east-1", Duration::from_millis(250)),
            6
        );
        assert_eq!(
            sim.max_requests_in_window("123456789012", "us-east-1", Duration::from_secs(60)),
            7
        );
        let records = sim.requests();
        assert_eq!(records.len(), 8);
        let last = records.last().unwrap();
        assert_eq!(
            (
                last.service,
                last.operation.as_str(),
                last.table.as_deref(),
                last.access_key_id.as_str(),
                last.region.as_str()
            ),
            (
                Service::DynamoDb,
                "DescribeKinesisStreamingDestination",
                Some("orders"),
                "AKIDTEST",
                "us-east-1"
            )
        );
        assert!(records.windows(2).all(|w| w[0].at <= w[1].at));
        let counts = sim.operation_counts();
        assert_eq!(counts[&(Service::DynamoDb, "ListTables".to_string())], 2);
        assert_eq!(
            counts[&(
                Service::DynamoDb,
                "DescribeKinesisStreamingDestination".to_string()
            )],
            6
        );
        sim.reset_stats();
        assert!(sim.requests().is_empty());
        assert_eq!(sim.requests_in("123456789012", "us-east-1"), 0);
        sim.shutdown().await;
    }
}

/// `EnableKinesisStreamingDestination` and `DisableKinesisStreamingDestination`
/// through the real SDK client (the rules themselves: [`crate::streaming`]).
#[cfg(test)]
mod enable_disable_tests {
    use std::time::Duration;

    use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
    use aws_sdk_dynamodb::types::{
        ApproximateCreationDateTimePrecision, DestinationStatus,
        EnableKinesisStreamingConfiguration,
    };
    use aws_sdk_dynamodb::Client;

    use crate::testing::{dynamodb_client, send_raw, BASE_KEYS, VALID_AUTH};
    use crate::{
        DestinationError, DestinationSpec, Scenario, ScopeSpec, Service, Simulator, TableSpec,
        TransitionTimes, ENABLE_FAILED_DESCRIPTION,
    };

    const ACCOUNT: &str = "123456789012";

    fn stream(name: &str) -> String {
        format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{name}")
    }

    /// Short transitions, so a test can watch them end.
    const TIMES: TransitionTimes = TransitionTimes {
        enabling: Duration::from_millis(300),
        disabling: Duration::from_millis(200),
    };

    async fn start(scenario: Scenario) -> (Simulator, Client) {
        let sim = Simulator::start(Scenario {
            transitions: TIMES,
            ..scenario
        })
        .await
        .unwrap();
        let client = dynamodb_client(&sim, "us-east-1", BASE_KEYS);
        (sim, client)
    }

    /// `(stream name, status, precision)` of every entry, in AWS's order.
    async fn entries(client: &Client, table: &str) -> Vec<(String, String, Option<String>)> {
        let out = client
            .describe_kinesis_streaming_destination()
            .table_name(table)
            .send()
            .await
            .unwrap();
        (out.kinesis_data_stream_destinations().iter())
            .map(|d| {
                let arn = d.stream_arn().unwrap_or_default();
                (
                    arn.rsplit('/').next().unwrap_or_default().to_string(),
                    d.destination_status()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    (d.approximate_creation_date_time_precision()).map(|p| p.as_str().to_string()),
                )
            })
            .collect()
    }

    /// The AWS code and message of a failed call, with its HTTP status.
    fn refusal<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
        outcome: Result<T, SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>,
    ) -> (String, String, u16) {
        match outcome {
            Err(SdkError::ServiceError(err)) => (
                err.err().code().unwrap_or("<none>").to_string(),
                err.err().message().unwrap_or("<none>").to_string(),
                err.raw().status().as_u16(),
            ),
            other => panic!("expected a service error, got {other:?}"),
        }
    }

    fn refused(error: DestinationError) -> (String, String, u16) {
        (error.code().to_string(), error.to_string(), 400)
    }

    #[tokio::test]
    async fn enable_disable_and_enable_elsewhere_as_an_operator_would() {
        let (sim, client) = start(Scenario::default().with_table(TableSpec::new("orders"))).await;
        let (a, b) = (stream("orders-cdc"), stream("orders-archive"));
        let enable = |arn: &str| {
            (client.enable_kinesis_streaming_destination())
                .table_name("orders")
                .stream_arn(arn)
                .send()
        };
        let disable = |arn: &str| {
            (client.disable_kinesis_streaming_destination())
                .table_name("orders")
                .stream_arn(arn)
                .send()
        };

        let out = enable(&a).await.unwrap();
        assert_eq!(
            (out.table_name(), out.stream_arn(), out.destination_status()),
            (
                Some("orders"),
                Some(a.as_str()),
                Some(&DestinationStatus::Enabling)
            )
        );
        // No configuration sent: AWS echoes an empty one.
        let echoed = out.enable_kinesis_streaming_configuration().unwrap();
        assert_eq!(echoed.approximate_creation_date_time_precision(), None);
        assert_eq!(
            entries(&client, "orders").await,
            [("orders-cdc".into(), "ENABLING".into(), None)]
        );

        // One stream at a time, and only an ACTIVE entry can be disabled.
        assert_eq!(
            refusal(enable(&b).await),
            refused(DestinationError::NotDisabled)
        );
        assert_eq!(
            refusal(enable(&a).await),
            refused(DestinationError::NotDisabled)
        );
        assert_eq!(
            refusal(disable(&a).await),
            refused(DestinationError::NotActive)
        );

        tokio::time::sleep(TIMES.enabling).await;
        assert_eq!(
            entries(&client, "orders").await,
            [("orders-cdc".into(), "ACTIVE".into(), None)]
        );
        assert_eq!(
            refusal(enable(&b).await),
            refused(DestinationError::NotDisabled)
        );
        let with_configuration = (client.disable_kinesis_streaming_destination())
            .table_name("orders")
            .stream_arn(&a)
            .enable_kinesis_streaming_configuration(
                EnableKinesisStreamingConfiguration::builder()
                    .approximate_creation_date_time_precision(
                        ApproximateCreationDateTimePrecision::Millisecond,
                    )
                    .build(),
            )
            .send()
            .await;
        assert_eq!(
            refusal(with_configuration),
            refused(DestinationError::ConfigurationOnDisable)
        );

        let out = disable(&a).await.unwrap();
        assert_eq!(
            out.destination_status(),
            Some(&DestinationStatus::Disabling)
        );
        assert_eq!(out.enable_kinesis_streaming_configuration(), None);
        assert_eq!(
            entries(&client, "orders").await,
            [("orders-cdc".into(), "DISABLING".into(), None)]
        );
        assert_eq!(
            refusal(enable(&b).await),
            refused(DestinationError::NotDisabled)
        );
        tokio::time::sleep(TIMES.disabling).await;
        assert_eq!(
            entries(&client, "orders").await,
            [("orders-cdc".into(), "DISABLED".into(), None)]
        );
        assert_eq!(
            refusal(disable(&a).await),
            refused(DestinationError::NotActive)
        );

        // Another stream now, with a precision, by table ARN: listed first,
        // the DISABLED entry stays.
        let out = (client.enable_kinesis_streaming_destination())
            .table_name(sim.table_arn("orders"))
            .stream_arn(&b)
            .enable_kinesis_streaming_configuration(
                EnableKinesisStreamingConfiguration::builder()
                    .approximate_creation_date_time_precision(
                        ApproximateCreationDateTimePrecision::Microsecond,
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(out.table_name(), Some("orders"));
        assert_eq!(
            (out.enable_kinesis_streaming_configuration())
                .and_then(|c| c.approximate_creation_date_time_precision()),
            Some(&ApproximateCreationDateTimePrecision::Microsecond)
        );
        tokio::time::sleep(TIMES.enabling).await;
        assert_eq!(
            entries(&client, "orders").await,
            [
                (
                    "orders-archive".into(),
                    "ACTIVE".into(),
                    Some("MICROSECOND".into())
                ),
                ("orders-cdc".into(), "DISABLED".into(), None),
            ]
        );

        // Every call was counted by operation; only describes count per table.
        let counts = sim.operation_counts();
        let count = |op: &str| counts[&(Service::DynamoDb, op.to_string())];
        assert_eq!(count("EnableKinesisStreamingDestination"), 6);
        assert_eq!(count("DisableKinesisStreamingDestination"), 4);
        assert_eq!(count("DescribeKinesisStreamingDestination"), 5);
        assert_eq!(sim.requests_for("orders"), 5);
        let last = sim.requests().pop().unwrap();
        assert_eq!(last.table.as_deref(), Some("orders"));
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_stream_that_is_not_there_ends_enable_failed_and_stays_listed() {
        let other_account = "arn:aws:kinesis:us-east-1:999999999999:stream/elsewhere";
        let scenario = Scenario::default()
            .with_table(TableSpec::new("orders"))
            .with_table(TableSpec::new("audit"))
            .with_scope(ScopeSpec::new(ACCOUNT, "eu-west-1").with_table(TableSpec::new("eu")));
        let (sim, client) = start(scenario).await;
        let gone = stream("gone");
        sim.delete_stream(&gone);
        let enable = |table: &'static str, arn: &str| {
            (client.enable_kinesis_streaming_destination())
                .table_name(table)
                .stream_arn(arn)
                .send()
        };
        // Accepted at once: AWS does not look at the stream yet.
        for arn in [gone.as_str(), other_account] {
            let out = enable("orders", arn).await.unwrap();
            assert_eq!(out.destination_status(), Some(&DestinationStatus::Enabling));
            tokio::time::sleep(TIMES.enabling).await;
        }
        let out = client
            .describe_kinesis_streaming_destination()
            .table_name("orders")
            .send()
            .await
            .unwrap();
        let failed: Vec<(&str, &str)> = (out.kinesis_data_stream_destinations().iter())
            .map(|d| {
                (
                    d.destination_status()
                        .map(|s| s.as_str())
                        .unwrap_or_default(),
                    d.destination_status_description().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            failed,
            [
                ("ENABLE_FAILED", ENABLE_FAILED_DESCRIPTION),
                ("ENABLE_FAILED", ENABLE_FAILED_DESCRIPTION)
            ]
        );
        // No API removes a failed entry: Disable is refused.
        let disable = (client.disable_kinesis_streaming_destination())
            .table_name("orders")
            .stream_arn(&gone)
            .send()
            .await;
        assert_eq!(refusal(disable), refused(DestinationError::NotActive));
        // A stream of another region is not usable either.
        let eu = dynamodb_client(&sim, "eu-west-1", BASE_KEYS);
        (eu.enable_kinesis_streaming_destination())
            .table_name("eu")
            .stream_arn(stream("us-only"))
            .send()
            .await
            .unwrap();
        tokio::time::sleep(TIMES.enabling).await;
        assert_eq!(
            entries(&eu, "eu").await,
            [("us-only".into(), "ENABLE_FAILED".into(), None)]
        );
        // A stream that exists: ACTIVE.
        enable("audit", &stream("audit-cdc")).await.unwrap();
        tokio::time::sleep(TIMES.enabling).await;
        assert_eq!(
            entries(&client, "audit").await,
            [("audit-cdc".into(), "ACTIVE".into(), None)]
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn missing_tables_and_bad_members_are_refused_as_aws_does() {
        let (sim, client) = start(
            Scenario::default().with_table(
                TableSpec::new("orders")
                    .with_destination(DestinationSpec::fixed(&stream("orders-cdc"), "ACTIVE")),
            ),
        )
        .await;
        let missing = (client.enable_kinesis_streaming_destination())
            .table_name("ghost")
            .stream_arn(stream("ghost-cdc"))
            .send()
            .await;
        assert_eq!(
            refusal(missing),
            refused(DestinationError::TableNotFound("ghost".into()))
        );
        let missing = (client.disable_kinesis_streaming_destination())
            .table_name("ghost")
            .stream_arn(stream("ghost-cdc"))
            .send()
            .await;
        assert_eq!(refusal(missing).0, "ResourceNotFoundException");

        let post = |target: &str, body: &str| {
            format!(
                "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                 Content-Type: application/x-amz-json-1.0\r\n\
                 X-Amz-Target: DynamoDB_20120810.{target}\r\nAuthorization: {VALID_AUTH}\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let cases = [
            (
                "EnableKinesisStreamingDestination",
                r#"{"TableName":"orders"}"#,
                "ValidationException",
                "1 validation error detected: Value null at 'streamArn' failed to satisfy constraint: Member must not be null",
            ),
            (
                "DisableKinesisStreamingDestination",
                r#"{"TableName":"orders","StreamArn":"arn:aws:kinesis:x"}"#,
                "ValidationException",
                "1 validation error detected: Value 'arn:aws:kinesis:x' at 'streamArn' failed to satisfy constraint: Member must have length greater than or equal to 37",
            ),
            (
                "EnableKinesisStreamingDestination",
                r#"{"TableName":"orders","StreamArn":"arn:aws:kinesis:us-east-1:123456789012:stream/x","EnableKinesisStreamingConfiguration":{"ApproximateCreationDateTimePrecision":"NANOSECOND"}}"#,
                "ValidationException",
                "1 validation error detected: Value 'NANOSECOND' at 'enableKinesisStreamingConfiguration.approximateCreationDateTimePrecision' failed to satisfy constraint: Member must satisfy enum value set: [MILLISECOND, MICROSECOND]",
            ),
            (
                "EnableKinesisStreamingDestination",
                r#"{"StreamArn":"arn:aws:kinesis:us-east-1:123456789012:stream/x"}"#,
                "ValidationException",
                "1 validation error detected: Value null at 'tableName' failed to satisfy constraint: Member must not be null",
            ),
            (
                "EnableKinesisStreamingDestination",
                r#"{"TableName":"orders","StreamArn":"arn:aws:kinesis:us-east-1:123456789012:stream/x","EnableKinesisStreamingConfiguration":7}"#,
                "SerializationException",
                "EnableKinesisStreamingConfiguration must be an object",
            ),
        ];
        for (target, body, code, message) in cases {
            let (status, kind, got) = send_raw(&sim, post(target, body)).await.error();
            assert_eq!(
                (status, kind.as_str(), got.as_str()),
                (
                    400,
                    format!("com.amazonaws.dynamodb.v20120810#{code}").as_str(),
                    message
                ),
                "{target} {body}"
            );
        }
        // None of them changed anything.
        assert_eq!(
            entries(&client, "orders").await,
            [("orders-cdc".into(), "ACTIVE".into(), None)]
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn control_methods_follow_the_same_rules() {
        let scenario = Scenario::default()
            .with_table(
                TableSpec::new("orders")
                    .with_destination(DestinationSpec::fixed(&stream("orders-cdc"), "ACTIVE")),
            )
            .with_scope(
                ScopeSpec::new("222222222222", "eu-west-1").with_table(TableSpec::new("eu")),
            );
        let (sim, client) = start(scenario).await;
        let cdc = stream("orders-cdc");
        assert_eq!(
            sim.enable_destination("orders", &stream("other")),
            Err(DestinationError::NotDisabled)
        );
        assert_eq!(sim.disable_destination("orders", &cdc), Ok("DISABLING"));
        assert_eq!(
            sim.disable_destination("orders", &cdc),
            Err(DestinationError::NotActive)
        );
        assert_eq!(
            sim.enable_destination("ghost", &cdc),
            Err(DestinationError::TableNotFound("ghost".into()))
        );
        tokio::time::sleep(TIMES.disabling).await;
        assert_eq!(
            entries(&client, "orders").await,
            [("orders-cdc".into(), "DISABLED".into(), None)]
        );
        // Longer transitions from now on.
        sim.set_transition_times(TransitionTimes {
            enabling: Duration::from_secs(3600),
            disabling: Duration::from_secs(3600),
        });
        assert_eq!(sim.enable_destination("orders", &cdc), Ok("ENABLING"));
        tokio::time::sleep(TIMES.enabling * 2).await;
        assert_eq!(
            entries(&client, "orders").await,
            [("orders-cdc".into(), "ENABLING".into(), None)]
        );
        let eu_stream = "arn:aws:kinesis:eu-west-1:222222222222:stream/eu-cdc";
        assert_eq!(
            sim.enable_destination_in("222222222222", "eu-west-1", "eu", eu_stream),
            Ok("ENABLING")
        );
        assert_eq!(
            sim.disable_destination_in("222222222222", "eu-west-1", "eu", eu_stream),
            Err(DestinationError::NotActive)
        );
        // Control methods are no requests.
        assert!(!(sim.operation_counts().keys()).any(|(_, op)| op.contains("Enable")));
        sim.shutdown().await;
    }
}
