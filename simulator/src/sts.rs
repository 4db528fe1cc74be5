//! STS over the AWS query protocol, as `aws-sdk-sts` and aws-config's
//! assume-role provider speak it: a form-encoded `POST /` naming an
//! `Action`, answered in XML. `AssumeRole` issues credentials that the
//! simulator remembers, so later requests signed with them act in the role's
//! account; `GetCallerIdentity` says whose key signed the request.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use super::{partition, unique_id, IssuedCredential, Service, Shared};
use crate::scenario::role_account;
use crate::serve::Body;
use crate::wire::{authenticate, read_body, AuthError, BodyError, Caller, Reset};

const XML_NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const VERSION: &str = "2011-06-15";
/// `DurationSeconds` when the request names none.
const DEFAULT_DURATION: Duration = Duration::from_secs(3600);
const MIN_DURATION_SECS: u64 = 900;
const MAX_DURATION_SECS: u64 = 43_200;

/// An STS error: `<ErrorResponse>` with `Type`, `Code` and `Message`.
struct StsError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl StsError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        StsError {
            status,
            code,
            message: message.into(),
        }
    }

    fn validation(message: impl Into<String>) -> Self {
        StsError::new(StatusCode::BAD_REQUEST, "ValidationError", message)
    }

    fn access_denied(caller: &Caller, role_arn: &str) -> Self {
        StsError::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            format!(
                "User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                caller.arn()
            ),
        )
    }

    fn into_response(self, request_id: &str) -> Response<Body> {
        // Client errors are the sender's fault; 5xx would be the receiver's.
        let kind = if self.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        };
        let body = format!(
            "<ErrorResponse xmlns=\"{XML_NAMESPACE}\">\n  <Error>\n    <Type>{kind}</Type>\n    \
             <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  \
             <RequestId>{}</RequestId>\n</ErrorResponse>\n",
            self.code,
            escape(&self.message),
            escape(request_id)
        );
        xml_response(self.status, body)
    }
}

fn xml_response(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    response
}

/// Serve one STS request; never closes the connection unanswered.
pub(crate) async fn handle(
    shared: &Shared,
    request: Request<Incoming>,
    request_id: &str,
) -> Result<Response<Body>, Reset> {
    match route(shared, request, request_id).await {
        Ok(body) => Ok(xml_response(StatusCode::OK, body)),
        Err(Some(error)) => Ok(error.into_response(request_id)),
        Err(None) => Err(Reset),
    }
}

/// `Err(None)`: the client went away mid-body.
async fn route(
    shared: &Shared,
    request: Request<Incoming>,
    request_id: &str,
) -> Result<String, Option<StsError>> {
    let caller = authenticate(shared, request.headers(), "sts").map_err(|error| {
        Some(match error {
            AuthError::Missing => StsError::new(
                StatusCode::FORBIDDEN,
                "MissingAuthenticationToken",
                "Request is missing Authentication Token",
            ),
            AuthError::Incomplete(problems) => {
                StsError::new(StatusCode::BAD_REQUEST, "IncompleteSignature", problems)
            }
            AuthError::InvalidToken => StsError::new(
                StatusCode::FORBIDDEN,
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
            ),
        })
    })?;
    let body = match read_body(request.into_body()).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return Err(Some(StsError::validation("Request body is too large")))
        }
        Err(BodyError::Gone) => return Err(None),
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let Some(action) = form.get("Action") else {
        return Err(Some(StsError::new(
            StatusCode::BAD_REQUEST,
            "MissingAction",
            "Missing Action",
        )));
    };
    caller.record(shared, Service::Sts, action, None);
    let version = form.get("Version").map(String::as_str).unwrap_or_default();
    let result = match (action.as_str(), version) {
        ("AssumeRole", VERSION) => assume_role(shared, &caller, &form),
        ("GetCallerIdentity", VERSION) => Ok(get_caller_identity(shared, &caller)),
        (other, version) => Err(StsError::new(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            format!("Could not find operation {other} for version {version}"),
        )),
    };
    let result = result.map_err(Some)?;
    Ok(format!(
        "<{action}Response xmlns=\"{XML_NAMESPACE}\">\n  <{action}Result>\n{result}  </{action}Result>\n  \
         <ResponseMetadata>\n    <RequestId>{}</RequestId>\n  </ResponseMetadata>\n</{action}Response>\n",
        escape(request_id)
    ))
}

fn assume_role(
    shared: &Shared,
    caller: &Caller,
    form: &HashMap<String, String>,
) -> Result<String, StsError> {
    let required = |member: &str, camel: &str| match form.get(member) {
        Some(value) if !value.is_empty() => Ok(value.as_str()),
        _ => Err(StsError::validation(format!(
            "1 validation error detected: Value null at '{camel}' failed to satisfy \
             constraint: Member must not be null"
        ))),
    };
    let role_arn = required("RoleArn", "roleArn")?;
    let session_name = required("RoleSessionName", "roleSessionName")?;
    let session_ok = (2..=64).contains(&session_name.len())
        && session_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=,.@-_".contains(&b));
    if !session_ok {
        return Err(StsError::validation(format!(
            "1 validation error detected: Value '{session_name}' at 'roleSessionName' failed \
             to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"
        )));
    }
    let Some(account_id) = role_account(role_arn) else {
        return Err(StsError::validation(format!("{role_arn} is invalid")));
    };
    let duration = match form.get("DurationSeconds") {
        None => DEFAULT_DURATION,
        Some(text) => match text.parse::<u64>() {
            Ok(secs) if (MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&secs) => {
                Duration::from_secs(secs)
            }
            _ => {
                return Err(StsError::validation(format!(
                    "1 validation error detected: Value '{text}' at 'durationSeconds' failed to \
                     satisfy constraint: Member must have value between {MIN_DURATION_SECS} and \
                     {MAX_DURATION_SECS}"
                )))
            }
        },
    };
    if let Some(roles) = &shared.roles {
        let Some(role) = roles.iter().find(|r| r.arn == role_arn) else {
            return Err(StsError::access_denied(caller, role_arn));
        };
        if role.external_id.is_some() && role.external_id.as_ref() != form.get("ExternalId") {
            return Err(StsError::access_denied(caller, role_arn));
        }
    }
    let lifetime = shared.credential_lifetime.unwrap_or(duration);
    let expiration = SystemTime::now() + lifetime;

    let seq = shared.request_seq.fetch_add(1, Ordering::Relaxed);
    let access_key_id = format!("ASIA{}", unique_id(seq, 16));
    let secret = random_text(40);
    let session_token = format!("IQoJb3JpZ2luX2Vj{}", random_text(180));
    let role_name = role_arn.rsplit('/').next().unwrap_or_default();
    let assumed_role_id = format!("AROA{}:{session_name}", stable_id(role_arn, 17));
    let assumed_role_arn = format!(
        "arn:{}:sts::{account_id}:assumed-role/{role_name}/{session_name}",
        role_arn.split(':').nth(1).unwrap_or("aws")
    );
    shared.world().credentials.insert(
        access_key_id.clone(),
        IssuedCredential {
            account_id: account_id.to_string(),
            role_arn: role_arn.to_string(),
            assumed_role_arn: assumed_role_arn.clone(),
            assumed_role_id: assumed_role_id.clone(),
            session_token: session_token.clone(),
        },
    );
    Ok(format!(
        "    <AssumedRoleUser>\n      <AssumedRoleId>{}</AssumedRoleId>\n      <Arn>{}</Arn>\n    \
         </AssumedRoleUser>\n    <Credentials>\n      <AccessKeyId>{access_key_id}</AccessKeyId>\n      \
         <SecretAccessKey>{}</SecretAccessKey>\n      <SessionToken>{}</SessionToken>\n      \
         <Expiration>{}</Expiration>\n    </Credentials>\n",
        escape(&assumed_role_id),
        escape(&assumed_role_arn),
        escape(&secret),
        escape(&session_token),
        iso8601(expiration)
    ))
}

fn get_caller_identity(shared: &Shared, caller: &Caller) -> String {
    let (user_id, arn) = match &caller.issued {
        Some(issued) => (
            issued.assumed_role_id.clone(),
            issued.assumed_role_arn.clone(),
        ),
        None => (
            format!("AIDA{}", stable_id(&caller.access_key_id, 17)),
            format!(
                "arn:{}:iam::{}:user/simulator",
                partition(&caller.scope.region),
                shared.default_scope.account_id
            ),
        ),
    };
    format!(
        "    <UserId>{}</UserId>\n    <Account>{}</Account>\n    <Arn>{}</Arn>\n",
        escape(&user_id),
        escape(&caller.scope.account_id),
        escape(&arn)
    )
}

/// Random letters, digits, `+` and `/`, like AWS secrets and tokens.
fn random_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..len)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

/// `len` upper-case letters and digits derived from `seed` (FNV-1a), so a
/// role keeps its id across calls as on AWS.
fn stable_id(seed: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::with_capacity(len);
    for round in 0..len {
        for byte in seed.bytes().chain([round as u8]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        out.push(char::from(ALPHABET[(hash % 32) as usize]));
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ`, as STS writes `Expiration`.
fn iso8601(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_expiration_like_sts() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(iso8601(t), "2024-02-29T12:34:56Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(iso8601(t), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn ids_and_escaping() {
        assert_eq!(stable_id("a", 17), stable_id("a", 17));
        assert_ne!(stable_id("a", 17), stable_id("b", 17));
        assert_eq!(stable_id("a", 17).len(), 17);
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
        assert_eq!(random_text(40).len(), 40);
    }

    mod with_sdk {
        use std::time::{Duration, SystemTime};

        use aws_sdk_sts::error::ProvideErrorMetadata;

        use crate::testing::{dynamodb_client, send_raw, sts_client, BASE_KEYS};
        use crate::{RoleSpec, Scenario, ScopeSpec, Service, Simulator, TableSpec};

        const ROLE: &str = "arn:aws:iam::222222222222:role/exporter";

        fn scenario() -> Scenario {
            Scenario::default()
                .with_table(TableSpec::new("home"))
                .with_scope(
                    ScopeSpec::new("222222222222", "eu-west-1")
                        .with_table(TableSpec::new("theirs")),
                )
        }

        #[tokio::test]
        async fn assumed_credentials_act_in_the_roles_account() {
            let sim = Simulator::start(scenario()).await.unwrap();
            let sts = sts_client(&sim, "eu-west-1", BASE_KEYS);
            let out = sts
                .assume_role()
                .role_arn(ROLE)
                .role_session_name("dke")
                .send()
                .await
                .unwrap();
            let creds = out.credentials().unwrap();
            assert!(creds.access_key_id().starts_with("ASIA"));
            assert_eq!(creds.access_key_id().len(), 20);
            assert_eq!(creds.secret_access_key().len(), 40);
            let user = out.assumed_role_user().unwrap();
            assert_eq!(
                user.arn(),
                "arn:aws:sts::222222222222:assumed-role/exporter/dke"
            );
            assert!(user.assumed_role_id().starts_with("AROA"));
            assert!(user.assumed_role_id().ends_with(":dke"));
            let lifetime = SystemTime::try_from(*creds.expiration())
                .unwrap()
                .duration_since(SystemTime::now())
                .unwrap();
            assert!(
                lifetime > Duration::from_secs(3590) && lifetime <= Duration::from_secs(3600),
                "{lifetime:?}"
            );

            let keys = (
                creds.access_key_id(),
                creds.secret_access_key(),
                Some(creds.session_token()),
            );
            let ddb = dynamodb_client(&sim, "eu-west-1", keys);
            let tables = ddb.list_tables().send().await.unwrap();
            assert_eq!(tables.table_names(), ["theirs"]);
            let base = dynamodb_client(&sim, "eu-west-1", BASE_KEYS);
            assert!(base
                .list_tables()
                .send()
                .await
                .unwrap()
                .table_names()
                .is_empty());

            let who = sts_client(&sim, "eu-west-1", keys)
                .get_caller_identity()
                .send()
                .await
                .unwrap();
            assert_eq!(who.account(), Some("222222222222"));
            assert_eq!(who.arn(), Some(user.arn()));
            assert_eq!(who.user_id(), Some(user.assumed_role_id()));
            let me = sts.get_caller_identity().send().await.unwrap();
            assert_eq!(me.account(), Some("123456789012"));
            assert_eq!(me.arn(), Some("arn:aws:iam::123456789012:user/simulator"));

            // Each call issues a fresh key; the issued key is remembered.
            let again = sts
                .assume_role()
                .role_arn(ROLE)
                .role_session_name("dke")
                .send()
                .await
                .unwrap();
            assert_ne!(
                again.credentials().unwrap().access_key_id(),
                creds.access_key_id()
            );
            let issued = sim.issued_keys();
            assert_eq!(issued.len(), 2);
            assert!(issued
                .iter()
                .all(|k| k.account_id == "222222222222" && k.role_arn == ROLE));

            // An issued key without its token is not recognised.
            let tokenless = dynamodb_client(
                &sim,
                "eu-west-1",
                (creds.access_key_id(), creds.secret_access_key(), None),
            );
            let err = tokenless
                .list_tables()
                .send()
                .await
                .unwrap_err()
                .into_service_error();
            assert_eq!(err.code(), Some("UnrecognizedClientException"));
            let err = sts_client(
                &sim,
                "eu-west-1",
                (
                    creds.access_key_id(),
                    creds.secret_access_key(),
                    Some("forged"),
                ),
            )
            .get_caller_identity()
            .send()
            .await
            .unwrap_err()
            .into_service_error();
            assert_eq!(err.code(), Some("InvalidClientTokenId"));

            assert_eq!(sim.operation_requests(Service::Sts, "AssumeRole"), 2);
            assert_eq!(sim.requests_in("222222222222", "eu-west-1"), 2);
            sim.shutdown().await;
        }

        #[tokio::test]
        async fn listed_roles_and_external_ids_are_enforced() {
            let scenario = scenario()
                .with_role(RoleSpec::new(ROLE).with_external_id("s3cret"))
                .with_role(RoleSpec::new("arn:aws:iam::333333333333:role/open"));
            let sim = Simulator::start(scenario).await.unwrap();
            let sts = sts_client(&sim, "us-east-1", BASE_KEYS);
            let assume = |role: &str, external: Option<&str>| {
                sts.assume_role()
                    .role_arn(role)
                    .role_session_name("dke")
                    .set_external_id(external.map(str::to_string))
                    .send()
            };
            let denied = format!(
                "User: arn:aws:iam::123456789012:user/simulator is not authorized to perform: \
                 sts:AssumeRole on resource: {ROLE}"
            );
            for external in [None, Some("wrong")] {
                let err = assume(ROLE, external).await.unwrap_err();
                assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
                let err = err.into_service_error();
                assert_eq!(err.code(), Some("AccessDenied"));
                assert_eq!(err.message(), Some(denied.as_str()));
            }
            assert!(assume(ROLE, Some("s3cret")).await.is_ok());
            assert!(assume("arn:aws:iam::333333333333:role/open", None)
                .await
                .is_ok());
            let err = assume("arn:aws:iam::444444444444:role/unlisted", None)
                .await
                .unwrap_err()
                .into_service_error();
            assert_eq!(err.code(), Some("AccessDenied"));
            let err = assume("not-an-arn", None)
                .await
                .unwrap_err()
                .into_service_error();
            assert_eq!(err.code(), Some("ValidationError"));
            sim.shutdown().await;
        }

        #[tokio::test]
        async fn credential_lifetime_can_be_overridden() {
            let scenario = Scenario::from_yaml("credential_lifetime: 20s\n").unwrap();
            let sim = Simulator::start(scenario).await.unwrap();
            let sts = sts_client(&sim, "us-east-1", BASE_KEYS);
            let out = sts
                .assume_role()
                .role_arn(ROLE)
                .role_session_name("short")
                .duration_seconds(7200)
                .send()
                .await
                .unwrap();
            let left = SystemTime::try_from(*out.credentials().unwrap().expiration())
                .unwrap()
                .duration_since(SystemTime::now())
                .unwrap();
            assert!(
                left > Duration::from_secs(15) && left <= Duration::from_secs(20),
                "{left:?}"
            );
            sim.shutdown().await;

            // Without the override DurationSeconds counts, within AWS's range.
            let sim = Simulator::start(Scenario::default()).await.unwrap();
            let sts = sts_client(&sim, "us-east-1", BASE_KEYS);
            let out = sts
                .assume_role()
                .role_arn(ROLE)
                .role_session_name("short")
                .duration_seconds(900)
                .send()
                .await
                .unwrap();
            let left = SystemTime::try_from(*out.credentials().unwrap().expiration())
                .unwrap()
                .duration_since(SystemTime::now())
                .unwrap();
            assert!(
                left > Duration::from_secs(890) && left <= Duration::from_secs(900),
                "{left:?}"
            );
            let err = sts
                .assume_role()
                .role_arn(ROLE)
                .role_session_name("short")
                .duration_seconds(60)
                .send()
                .await
                .unwrap_err()
                .into_service_error();
            assert_eq!(err.code(), Some("ValidationError"));
            sim.shutdown().await;
        }

        #[tokio::test]
        async fn errors_have_the_query_protocol_shape() {
            let sim = Simulator::start(Scenario::default()).await.unwrap();
            let body = "Action=GetCallerIdentity&Version=2011-06-15";
            let request = format!(
                "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let response = send_raw(&sim, request).await;
            assert_eq!(response.status, 403);
            assert_eq!(response.header("content-type"), Some("text/xml"));
            let id = response.header("x-amzn-requestid").unwrap().to_string();
            assert_eq!(
                response.body,
                format!(
                    "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  \
                     <Error>\n    <Type>Sender</Type>\n    \
                     <Code>MissingAuthenticationToken</Code>\n    \
                     <Message>Request is missing Authentication Token</Message>\n  </Error>\n  \
                     <RequestId>{id}</RequestId>\n</ErrorResponse>\n"
                )
            );
            sim.shutdown().await;
        }

        /// The path the exporter takes: aws-config's assume-role provider
        /// fetches (and would refresh) credentials, and a DynamoDB client
        /// signs with them.
        #[tokio::test]
        async fn aws_configs_assume_role_provider_works_against_it() {
            use aws_config::sts::AssumeRoleProvider;
            use aws_config::BehaviorVersion;
            use aws_credential_types::provider::ProvideCredentials;
            use aws_sdk_sts::config::{Credentials, Region};

            let scenario = Scenario {
                credential_lifetime: Some(Duration::from_secs(20)),
                ..scenario().with_role(RoleSpec::new(ROLE).with_external_id("xid"))
            };
            let sim = Simulator::start(scenario).await.unwrap();
            let base = aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new("eu-west-1"))
                .endpoint_url(sim.endpoint_url())
                .credentials_provider(Credentials::new("AKIDBASE", "secret", None, None, "test"))
                .load()
                .await;
            let provider = AssumeRoleProvider::builder(ROLE)
                .session_name("exporter")
                .external_id("xid")
                .configure(&base)
                .build()
                .await;
            let creds = provider.provide_credentials().await.unwrap();
            assert!(creds.access_key_id().starts_with("ASIA"));
            let left = creds
                .expiry()
                .unwrap()
                .duration_since(SystemTime::now())
                .unwrap();
            assert!(
                left > Duration::from_secs(15) && left <= Duration::from_secs(20),
                "{left:?}"
            );

            let config = aws_sdk_dynamodb::config::Builder::from(&base)
                .credentials_provider(provider)
                .build();
            let ddb = aws_sdk_dynamodb::Client::from_conf(config);
            let tables = ddb.list_tables().send().await.unwrap();
            assert_eq!(tables.table_names(), ["theirs"]);
            let last = sim.requests().pop().unwrap();
            assert_eq!(
                (
                    last.account_id.as_str(),
                    last.region.as_str(),
                    last.operation.as_str()
                ),
                ("222222222222", "eu-west-1", "ListTables")
            );
            assert_eq!(
                sim.requests()
                    .iter()
                    .filter(|r| r.service == Service::Sts)
                    .map(|r| r.access_key_id.as_str())
                    .collect::<Vec<_>>(),
                ["AKIDBASE", "AKIDBASE"]
            );
            sim.shutdown().await;
        }
    }
}
