//! Helpers the service modules' tests share: raw HTTP exchanges for
//! envelope checks, bounded waits, and a well-formed SigV4 header.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Simulator;

/// A well-formed `Authorization` header for DynamoDB in us-east-1.
pub const VALID_AUTH: &str = "AWS4-HMAC-SHA256 \
    Credential=AKIDTEST/20240101/us-east-1/dynamodb/aws4_request, \
    SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
    Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Poll `condition` until it holds; false if it still fails after ~2 s.
pub async fn eventually(condition: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// Bound a step that must not hang the test suite.
pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(3), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish"))
}

pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }

    /// `(status, __type, message)` of a JSON error answer.
    pub fn error(&self) -> (u16, String, String) {
        let json = self.json();
        (
            self.status,
            json["__type"].as_str().unwrap_or_default().to_string(),
            json["message"].as_str().unwrap_or_default().to_string(),
        )
    }
}

/// Send `request` as-is on a fresh connection and read the whole answer.
pub async fn send_raw(sim: &Simulator, request: String) -> RawResponse {
    let mut stream = TcpStream::connect(sim.addr()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    bounded("raw response", stream.read_to_end(&mut bytes))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
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

/// A DynamoDB client for `region` signing with the given static keys.
pub fn dynamodb_client(
    sim: &Simulator,
    region: &str,
    keys: (&str, &str, Option<&str>),
) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{retry::RetryConfig, timeout::TimeoutConfig};
    use aws_sdk_dynamodb::config::{Credentials, Region};
    let (key, secret, token) = keys;
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version_latest()
        .region(Region::new(region.to_string()))
        .endpoint_url(sim.endpoint_url())
        .credentials_provider(Credentials::new(
            key,
            secret,
            token.map(str::to_string),
            None,
            "test",
        ))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(5))
                .build(),
        )
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// An STS client for `region` signing with the given static keys.
pub fn sts_client(
    sim: &Simulator,
    region: &str,
    keys: (&str, &str, Option<&str>),
) -> aws_sdk_sts::Client {
    use aws_sdk_sts::config::{retry::RetryConfig, Credentials, Region};
    let (key, secret, token) = keys;
    let config = aws_sdk_sts::Config::builder()
        .behavior_version_latest()
        .region(Region::new(region.to_string()))
        .endpoint_url(sim.endpoint_url())
        .credentials_provider(Credentials::new(
            key,
            secret,
            token.map(str::to_string),
            None,
            "test",
        ))
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_sts::Client::from_conf(config)
}

/// The base (non-STS) test keys.
pub const BASE_KEYS: (&str, &str, Option<&str>) = ("AKIDTEST", "secret", None);

/// A Kinesis client for `region` signing with the given static keys.
pub fn kinesis_client(
    sim: &Simulator,
    region: &str,
    keys: (&str, &str, Option<&str>),
) -> aws_sdk_kinesis::Client {
    use aws_sdk_kinesis::config::{retry::RetryConfig, timeout::TimeoutConfig};
    use aws_sdk_kinesis::config::{Credentials, Region};
    let (key, secret, token) = keys;
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version_latest()
        .region(Region::new(region.to_string()))
        .endpoint_url(sim.endpoint_url())
        .credentials_provider(Credentials::new(
            key,
            secret,
            token.map(str::to_string),
            None,
            "test",
        ))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(5))
                .build(),
        )
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

/// A CloudWatch client for `region` signing with the given static keys.
pub fn cloudwatch_client(
    sim: &Simulator,
    region: &str,
    keys: (&str, &str, Option<&str>),
) -> aws_sdk_cloudwatch::Client {
    use aws_sdk_cloudwatch::config::{retry::RetryConfig, timeout::TimeoutConfig};
    use aws_sdk_cloudwatch::config::{Credentials, Region};
    let (key, secret, token) = keys;
    let config = aws_sdk_cloudwatch::Config::builder()
        .behavior_version_latest()
        .region(Region::new(region.to_string()))
        .endpoint_url(sim.endpoint_url())
        .credentials_provider(Credentials::new(
            key,
            secret,
            token.map(str::to_string),
            None,
            "test",
        ))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(5))
                .build(),
        )
        .build();
    aws_sdk_cloudwatch::Client::from_conf(config)
}
