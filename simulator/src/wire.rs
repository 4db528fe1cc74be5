//! The simulator's front door. Every service shares one endpoint, so this
//! module tells them apart (CloudWatch: path
//! `/service/GraniteServiceVersion20100801/operation/<Op>`; Kinesis:
//! `X-Amz-Target: Kinesis_20131202.*`; STS: a form-encoded `POST /` without
//! `X-Amz-Target`; DynamoDB: everything else), checks the SigV4
//! `Authorization` form common to all of them, works out the caller's scope
//! from the key that signed the request, records request stats, and stamps a
//! fresh `x-amzn-RequestId` on every answer. Each service module shapes its
//! own answers and errors.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use tokio::time::Instant;

use super::{partition, IssuedCredential, RequestRecord, Scope, Service, Shared};
use crate::serve::{AbortConnection, Body};
use crate::{cloudwatch, dynamodb, kinesis, sts};

/// Far above any control-plane request; only guards memory.
pub(crate) const MAX_BODY_BYTES: usize = 1 << 20;

/// Close the connection without answering (a reset, or the end of a hang).
#[derive(Debug)]
pub(crate) struct Reset;

/// Serve one request. `Err` makes the accept loop drop the connection
/// without answering, which is how resets and hangs-at-shutdown end.
pub(super) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, AbortConnection> {
    let _in_flight = shared.stats.enter();
    let request_id = shared.next_request_id();
    let outcome = match service_of(&request) {
        Service::CloudWatch => cloudwatch::handle(&shared, request).await,
        Service::Kinesis => kinesis::handle(&shared, request).await,
        Service::Sts => sts::handle(&shared, request, &request_id).await,
        Service::DynamoDb => dynamodb::handle(&shared, request).await,
    };
    let Ok(mut response) = outcome else {
        return Err("simulated connection reset".into());
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
        .headers_mut()
        .insert("server", HeaderValue::from_static("Server"));
    Ok(response)
}

/// Which service a request is for. DynamoDB is the fallback, so malformed
/// requests get its (long-standing) errors.
fn service_of(request: &Request<Incoming>) -> Service {
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if request.uri().path().starts_with(cloudwatch::PATH_PREFIX) {
        Service::CloudWatch
    } else if target.starts_with(kinesis::TARGET_PREFIX) {
        Service::Kinesis
    } else if is_sts(request) {
        Service::Sts
    } else {
        Service::DynamoDb
    }
}

/// The query protocol: a form-encoded `POST /` that names no `X-Amz-Target`.
fn is_sts(request: &Request<Incoming>) -> bool {
    let form = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    request.method() == Method::POST
        && request.uri().path() == "/"
        && form
        && !request.headers().contains_key("x-amz-target")
}

/// Who sent a request and which scope it acts in.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub access_key_id: String,
    /// The signing key's account (its role's, for STS-issued keys) and the
    /// region of the SigV4 credential scope.
    pub scope: Scope,
    /// Set when STS issued the signing key.
    pub issued: Option<IssuedCredential>,
}

impl Caller {
    /// The caller's identity ARN, as AWS names it in `AccessDenied` messages.
    pub fn arn(&self) -> String {
        match &self.issued {
            Some(issued) => issued.assumed_role_arn.clone(),
            None => format!(
                "arn:{}:iam::{}:user/simulator",
                partition(&self.scope.region),
                self.scope.account_id
            ),
        }
    }

    /// Count the request in the stats.
    pub fn record(&self, shared: &Shared, service: Service, operation: &str, table: Option<&str>) {
        shared.stats.record(RequestRecord {
            at: Instant::now(),
            account_id: self.scope.account_id.clone(),
            region: self.scope.region.clone(),
            service,
            operation: operation.to_string(),
            table: table.map(str::to_string),
            access_key_id: self.access_key_id.clone(),
        });
    }
}

/// Why a request's credentials were refused; each service words it its way.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AuthError {
    /// No `Authorization` header.
    Missing,
    /// The header is not a well-formed SigV4 one; every problem, joined.
    Incomplete(String),
    /// An STS-issued key without its session token (or with another one).
    InvalidToken,
}

/// Check the SigV4 `Authorization` header's form for `signing_name` (the
/// signature itself is not verified: callers use throwaway credentials) and
/// resolve the caller.
pub(crate) fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    signing_name: &str,
) -> Result<Caller, AuthError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(AuthError::Missing);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Incomplete("Authorization header is not printable ASCII".into()))?;
    let (access_key_id, region) =
        sigv4_credential(value, signing_name).map_err(AuthError::Incomplete)?;
    let issued = shared.issued(&access_key_id);
    let account_id = match &issued {
        Some(issued) => {
            let token = headers
                .get("x-amz-security-token")
                .and_then(|v| v.to_str().ok());
            if token != Some(issued.session_token.as_str()) {
                return Err(AuthError::InvalidToken);
            }
            issued.account_id.clone()
        }
        None => shared.default_scope.account_id.clone(),
    };
    Ok(Caller {
        access_key_id,
        scope: Scope { account_id, region },
        issued,
    })
}

/// `(access key id, region)` if `value` has the form
/// `AWS4-HMAC-SHA256 Credential=AKID/YYYYMMDD/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=HEX` with SERVICE = `signing_name`, else
/// every problem found, in AWS's words where it has some.
pub(crate) fn sigv4_credential(
    value: &str,
    signing_name: &str,
) -> Result<(String, String), String> {
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
    let mut found = None;
    match credential {
        None => problems.push("Authorization header requires 'Credential' parameter.".into()),
        Some(credential) => {
            let scope: Vec<&str> = credential.split('/').collect();
            match scope.as_slice() {
                [key, date, region, service, "aws4_request"]
                    if !key.is_empty()
                        && date.len() == 8
                        && date.bytes().all(|b| b.is_ascii_digit())
                        && !region.is_empty()
                        && *service == signing_name =>
                {
                    found = Some((key.to_string(), region.to_string()));
                }
                _ => problems.push(format!(
                    "Credential should be of the form \
                     KEY/YYYYMMDD/REGION/{signing_name}/aws4_request, not '{credential}'."
                )),
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
    match found {
        Some(found) if problems.is_empty() => Ok(found),
        _ => Err(problems.join(" ")),
    }
}

/// Why a body could not be read.
pub(crate) enum BodyError {
    /// Longer than [`MAX_BODY_BYTES`].
    TooLarge,
    /// The client went away mid-body; nobody is left to answer.
    Gone,
}

pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, BodyError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Gone),
    }
}

#[cfg(test)]
mod tests {
    use super::sigv4_credential;
    use crate::testing::VALID_AUTH;

    #[test]
    fn sigv4_form_checks() {
        assert_eq!(
            sigv4_credential(VALID_AUTH, "dynamodb"),
            Ok(("AKIDTEST".to_string(), "us-east-1".to_string()))
        );
        assert_eq!(
            sigv4_credential(
                &VALID_AUTH
                    .replace("/dynamodb/", "/sts/")
                    .replace("us-east-1", "eu-west-1"),
                "sts"
            ),
            Ok(("AKIDTEST".to_string(), "eu-west-1".to_string()))
        );
        assert_eq!(
            sigv4_credential("AWS4-HMAC-SHA256 Foo=bar", "dynamodb"),
            Err("Authorization header has an unexpected element 'Foo=bar'. \
                 Authorization header requires 'Credential' parameter. \
                 Authorization header requires 'SignedHeaders' parameter. \
                 Authorization header requires 'Signature' parameter."
                .to_string())
        );
        assert_eq!(
            sigv4_credential(
                "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/s3/aws4_request, \
                 SignedHeaders=Host;x-amz-date, Signature=xyz",
                "dynamodb"
            ),
            Err("Credential should be of the form KEY/YYYYMMDD/REGION/dynamodb/aws4_request, \
                 not 'AKID/20240101/us-east-1/s3/aws4_request'. \
                 SignedHeaders should be lower-case header names separated by ';', not 'Host;x-amz-date'. \
                 Signature should be 64 hexadecimal digits, not 'xyz'."
                .to_string())
        );
    }
}
