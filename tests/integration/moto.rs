//! Discovery and assumed roles against moto's server, a third-party
//! implementation of ListTables, ListTagsOfResource and STS, so the
//! exporter is not only checked against our own simulator's reading of the
//! protocols. moto does not implement DescribeKinesisStreamingDestination,
//! so these tests look at what discovery found and which account each table
//! was labelled with, not at destination statuses.
//!
//! Needs `moto_server` on PATH (`pip install 'moto[server]'`, which
//! `.ci/run` does in a virtualenv); see `required_tool` for when it is
//! missing.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, Tag,
};

use crate::support::*;

const MOTO_ACCOUNT: &str = "123456789012";
const MEMBER: &str = "111111111111";

/// A moto server on a free loopback port, killed on drop.
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn moto() -> Option<Moto> {
    let tool = required_tool("moto_server", "the tests against moto are")?;
    let port = free_port();
    let child = Command::new(tool)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..200 {
        if try_request(addr, "GET", "/moto-api/").await.is_ok() {
            return Some(moto);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("moto_server did not answer within 10 s");
}

/// A DynamoDB client for moto signing with `credentials`.
fn dynamodb(moto: &Moto, credentials: Credentials) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .endpoint_url(&moto.url)
        .credentials_provider(credentials)
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

fn base_credentials() -> Credentials {
    Credentials::new("AKIDTESTTESTTEST", "test-secret", None, None, "tests")
}

async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str, tags: &[(&str, &str)]) {
    let mut request = client
        .create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("k")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("k")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest);
    for (key, value) in tags {
        request = request.tags(Tag::builder().key(*key).value(*value).build().unwrap());
    }
    request.send().await.expect("moto creates the table");
}

/// The (account, table) pairs with a poll-success series (moto answers the
/// polls themselves with an error, so the value is 0).
fn labelled(page: &str) -> BTreeSet<(String, String)> {
    family(page, "dynamodb_kinesis_table_poll_success")
        .keys()
        .map(|s| (label(s, "account_id").unwrap(), label(s, "table").unwrap()))
        .collect()
}

#[tokio::test]
async fn discovery_pages_and_filters_tags_against_moto() {
    let Some(moto) = moto().await else {
        return;
    };
    let client = dynamodb(&moto, base_credentials());
    // More than one ListTables page of 100.
    for i in 0..105 {
        create_table(&client, &format!("filler-{i:03}"), &[]).await;
    }
    create_table(&client, "orders-eu", &[("cdc", "true"), ("team", "a")]).await;
    create_table(&client, "orders-us", &[("cdc", "false")]).await;
    create_table(&client, "orders-test", &[("cdc", "true")]).await;
    create_table(&client, "payments", &[("cdc", "true")]).await;
    let config = config_text(
        &moto,
        "    discovery:\n      include: [\"^orders-\", \"^payments$\"]\n      exclude: [\"-test$\"]\n      tags: {cdc: \"true\"}\n      refresh_interval: 1s\n",
    );
    let exp = exporter_at(&config).await;
    let page = scrape_until(exp.addr, Duration::from_secs(20), |p| {
        labelled(p).len() == 2
    })
    .await;
    let expected: BTreeSet<(String, String)> = [
        (MOTO_ACCOUNT.to_string(), "orders-eu".to_string()),
        (MOTO_ACCOUNT.to_string(), "payments".to_string()),
    ]
    .into();
    assert_eq!(labelled(&page), expected, "{page}");
    assert_eq!(
        value(
            &page,
            "dynamodb_kinesis_discovery_tables",
            &[("account_id", MOTO_ACCOUNT), ("region", "us-east-1")]
        ),
        Some(2.0)
    );
    // Churn: a table deleted in moto leaves after the next refresh.
    client
        .delete_table()
        .table_name("payments")
        .send()
        .await
        .expect("moto deletes the table");
    scrape_until(exp.addr, Duration::from_secs(20), |p| {
        labelled(p).len() == 1
    })
    .await;
    exp.stop().await;
}

#[tokio::test]
async fn an_assumed_role_labels_and_discovers_its_own_account_against_moto() {
    let Some(moto) = moto().await else {
        return;
    };
    let role = format!("arn:aws:iam::{MEMBER}:role/dynamodb-kinesis-exporter");
    // Make a table in the member account, as that account.
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_sts::config::Region::new("us-east-1"))
            .endpoint_url(&moto.url)
            .credentials_provider(base_credentials())
            .build(),
    );
    let assumed = sts
        .assume_role()
        .role_arn(&role)
        .role_session_name("setup")
        .send()
        .await
        .expect("moto assumes the role");
    let creds = assumed.credentials.expect("credentials");
    let member = dynamodb(
        &moto,
        Credentials::new(
            creds.access_key_id,
            creds.secret_access_key,
            Some(creds.session_token),
            None,
            "moto-assumed",
        ),
    );
    create_table(&member, "member-orders", &[]).await;
    create_table(&dynamodb(&moto, base_credentials()), "hub-orders", &[]).await;

    let config = config_text(
        &moto,
        &format!("    role_arn: {role}\n    external_id: hub-secret\n    discovery:\n      refresh_interval: 1s\n"),
    );
    let exp = exporter_at(&config).await;
    let page = scrape_until(exp.addr, Duration::from_secs(20), |p| {
        !labelled(p).is_empty()
    })
    .await;
    assert_eq!(
        labelled(&page),
        [(MEMBER.to_string(), "member-orders".to_string())].into(),
        "the role's account, and only its tables: {page}"
    );
    exp.stop().await;
}

fn config_text(moto: &Moto, target_extra: &str) -> String {
    format!(
        "poll_interval: 500ms\nrequest_timeout: 3s\nmax_attempts: 1\nmax_requests_per_second: 100\ntargets:\n  - region: us-east-1\n    endpoint_url: {}\n{target_extra}",
        moto.url
    )
}

/// The exporter on `config`, whose endpoint is already filled in.
async fn exporter_at(config: &str) -> Running {
    let dir = scratch(&[("exporter.yaml", config)]);
    let (exp, _reloads) = exporter_from_file(&dir.path().join("exporter.yaml")).await;
    exp
}
