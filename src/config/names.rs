//! The names AWS gives things, checked as AWS would: table and role ARNs, table, region, role,
//! session and external-ID rules, endpoint URLs, and regex errors on one line. Kept here so a
//! running exporter never meets a name AWS would refuse.

use std::fmt;

/// The parts of a DynamoDB table ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableArn {
    pub partition: String,
    pub region: String,
    pub account_id: String,
    pub table: String,
}

impl fmt::Display for TableArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:dynamodb:{}:{}:table/{}",
            self.partition, self.region, self.account_id, self.table
        )
    }
}

/// Why a string is not a usable DynamoDB table ARN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArnError {
    #[error("{0:?} is not a DynamoDB table ARN (expected arn:PARTITION:dynamodb:REGION:ACCOUNT_ID:table/TABLE_NAME)")]
    Malformed(String),
    /// The ARN is well formed but names a table DynamoDB would not accept.
    #[error("{0:?} {TABLE_NAME_RULE}")]
    TableName(String),
    #[error("{0:?} is not an IAM role ARN (expected arn:PARTITION:iam::ACCOUNT_ID:role/NAME or role/PATH/NAME)")]
    MalformedRole(String),
    /// The role ARN is well formed but names a role IAM would not accept.
    #[error("{0:?} {ROLE_NAME_RULE}")]
    RoleName(String),
}

/// The parts of an IAM role ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn {
    pub partition: String,
    pub account_id: String,
    /// `/` unless the role has a path, which then starts and ends with `/`: `/service/`.
    pub path: String,
    pub name: String,
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:iam::{}:role{}{}",
            self.partition, self.account_id, self.path, self.name
        )
    }
}

pub(super) const TABLE_NAME_RULE: &str =
    "is not a valid table name (3 to 255 characters: letters, digits, '_', '-', '.')";
const ROLE_NAME_RULE: &str =
    "is not a valid role name (1 to 64 characters: letters, digits, '+', '=', ',', '.', '@', '_', '-')";
pub(super) const EXTERNAL_ID_RULE: &str =
    "is not a valid external ID (2 to 1224 characters: letters, digits, '+', '=', ',', '.', '@', ':', '/', '_', '-')";
pub(super) const SESSION_NAME_RULE: &str =
    "is not a valid session name (2 to 64 characters: letters, digits, '+', '=', ',', '.', '@', '_', '-')";

pub(super) const TAG_KEY_RULE: &str =
    "is not a valid tag key (1 to 128 characters: letters, digits, spaces, '_', '.', ':', '/', '=', '+', '-', '@')";

/// Parses a DynamoDB table ARN: `arn:PARTITION:dynamodb:REGION:ACCOUNT_ID:table/TABLE_NAME`,
/// nothing after the name (a stream or index ARN is not a table ARN).
pub fn parse_table_arn(s: &str) -> Result<TableArn, ArnError> {
    let malformed = || ArnError::Malformed(s.to_owned());
    let mut parts = s.splitn(6, ':');
    let (
        Some("arn"),
        Some(partition),
        Some("dynamodb"),
        Some(region),
        Some(account_id),
        Some(resource),
    ) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    )
    else {
        return Err(malformed());
    };
    let table = resource
        .strip_prefix("table/")
        .filter(|t| !t.is_empty() && !t.contains('/'))
        .ok_or_else(malformed)?;
    let account_ok = account_id.len() == 12 && account_id.bytes().all(|b| b.is_ascii_digit());
    if !is_aws_name(partition) || !is_aws_name(region) || !account_ok {
        return Err(malformed());
    }
    if !is_table_name(table) {
        return Err(ArnError::TableName(table.to_owned()));
    }
    Ok(TableArn {
        partition: partition.to_owned(),
        region: region.to_owned(),
        account_id: account_id.to_owned(),
        table: table.to_owned(),
    })
}

/// Parses an IAM role ARN: `arn:PARTITION:iam::ACCOUNT_ID:role/NAME`, or with a path,
/// `role/PATH/NAME`. IAM is global, so the region field is empty.
///
/// Path segments follow the role-name rule; IAM would accept any printable ASCII there, but a
/// path with `:` or spaces in an exporter's config is far likelier a paste error.
pub fn parse_role_arn(s: &str) -> Result<RoleArn, ArnError> {
    let malformed = || ArnError::MalformedRole(s.to_owned());
    let mut parts = s.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account_id), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(malformed());
    };
    let rest = resource.strip_prefix("role/").ok_or_else(malformed)?;
    let (dirs, name) = match rest.rsplit_once('/') {
        Some((dirs, name)) => (Some(dirs), name),
        None => (None, rest),
    };
    let path_ok = dirs.is_none_or(|dirs| {
        dirs.len() <= 510
            && (dirs.split('/')).all(|dir| !dir.is_empty() && dir.bytes().all(is_iam_name_byte))
    });
    let account_ok = account_id.len() == 12 && account_id.bytes().all(|b| b.is_ascii_digit());
    if !is_aws_name(partition) || !account_ok || !path_ok || name.is_empty() {
        return Err(malformed());
    }
    if name.len() > 64 || !name.bytes().all(is_iam_name_byte) {
        return Err(ArnError::RoleName(name.to_owned()));
    }
    Ok(RoleArn {
        partition: partition.to_owned(),
        account_id: account_id.to_owned(),
        path: dirs.map_or_else(|| "/".to_owned(), |dirs| format!("/{dirs}/")),
        name: name.to_owned(),
    })
}

/// IAM's `[\w+=,.@-]`, ASCII only: role names, path segments and session names.
pub(super) fn is_iam_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'=' | b',' | b'.' | b'@' | b'_' | b'-')
}

/// STS's rule for `ExternalId`.
pub(super) fn is_external_id(s: &str) -> bool {
    (2..=1224).contains(&s.len())
        && (s.bytes()).all(|b| is_iam_name_byte(b) || matches!(b, b':' | b'/'))
}

/// STS's rule for `RoleSessionName`.
pub(super) fn is_session_name(s: &str) -> bool {
    (2..=64).contains(&s.len()) && s.bytes().all(is_iam_name_byte)
}

/// AWS's rule for tag keys (Unicode letters, digits and spaces count).
pub(super) fn is_tag_key(s: &str) -> bool {
    (1..=128).contains(&s.chars().count())
        && s.chars().all(|c| {
            c.is_alphanumeric() || (c.is_whitespace() && !c.is_control()) || "_.:/=+-@".contains(c)
        })
}

/// Region and partition names: lowercase letters, digits and hyphens, 1 to 32 characters.
/// Deliberately no list of known regions, so new ones work without a release.
pub(super) fn is_aws_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// DynamoDB's rule for table names.
pub(super) fn is_table_name(s: &str) -> bool {
    (3..=255).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Accepts what the SDK can use as an endpoint: http or https, a host, an optional numeric port.
pub(super) fn is_http_url(s: &str) -> bool {
    let Ok(uri) = s.parse::<hyper::Uri>() else {
        return false;
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return false;
    };
    let host = authority.host();
    if !matches!(scheme, "http" | "https") || host.is_empty() || authority.as_str().contains('@') {
        return false;
    }
    // `Uri` takes any text as a port ("x:abc", "x:99999"); the SDK would not.
    match authority.as_str().strip_prefix(host) {
        Some("") => true,
        Some(port) => port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
        }),
        None => false,
    }
}

/// A regex compile error on one line: the regex crate's syntax errors span several, with the
/// pattern and a caret above the `error: ...` line that says what is wrong.
pub(super) fn regex_problem(source: &str, err: &regex::Error) -> String {
    let reason = match err {
        regex::Error::Syntax(text) => (text.lines().rev())
            .find_map(|line| line.trim().strip_prefix("error: "))
            .unwrap_or(text.trim())
            .to_owned(),
        other => other.to_string(),
    };
    format!("{source:?} is not a valid regular expression: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table_names_follow_dynamodb_rules() {
        assert!(is_table_name("abc"));
        assert!(is_table_name("Orders_v2.prod-1"));
        assert!(is_table_name(&"a".repeat(255)));
        assert!(!is_table_name(&"a".repeat(256)));
        assert!(!is_table_name("ab"));
        assert!(!is_table_name("tä ble"));
        assert!(!is_table_name("a:b:c"));
    }

    #[test]
    fn tag_keys_follow_aws_rules() {
        for key in [
            "team",
            "cost center",
            "aws:cloudformation:stack-name",
            "a_.:/=+-@",
            "équipe",
        ] {
            assert!(is_tag_key(key), "{key}");
        }
        assert!(is_tag_key(&"k".repeat(128)));
        for key in ["", "a\tb", "a\nb", "team!", "a,b", "a*"] {
            assert!(!is_tag_key(key), "{key:?}");
        }
        assert!(!is_tag_key(&"k".repeat(129)));
    }

    #[test]
    fn arns_parse() {
        for (partition, region) in [
            ("aws", "us-east-1"),
            ("aws-cn", "cn-north-1"),
            ("aws-us-gov", "us-gov-west-1"),
        ] {
            let text = format!("arn:{partition}:dynamodb:{region}:123456789012:table/My.Table-1");
            assert_eq!(
                parse_table_arn(&text),
                Ok(TableArn {
                    partition: partition.to_owned(),
                    region: region.to_owned(),
                    account_id: "123456789012".to_owned(),
                    table: "My.Table-1".to_owned(),
                })
            );
        }
    }

    #[test]
    fn malformed_arns_are_rejected() {
        for text in [
            "",
            "orders",
            "arn:aws:dynamodb:us-east-1:123:table",
            "arn:aws:dynamodb:us-east-1:123456789012:table",
            "arn:aws:dynamodb:us-east-1:123456789012:table/",
            "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024",
            "arn:aws:dynamodb:us-east-1:123456789012:table/orders/index/by-date",
            "arn:aws:dynamodb:us-east-1:123456789012:tables/orders",
            "arn:aws:kinesis:us-east-1:123456789012:table/orders",
            "arn:aws:dynamodb:us-east-1:12345678901a:table/orders",
            "arn:aws:dynamodb:us-east-1:1234567890123:table/orders",
            "arn:aws:dynamodb::123456789012:table/orders",
            "arn:aws:dynamodb:US-EAST-1:123456789012:table/orders",
            "arn::dynamodb:us-east-1:123456789012:table/orders",
            "ARN:aws:dynamodb:us-east-1:123456789012:table/orders",
        ] {
            assert_eq!(
                parse_table_arn(text),
                Err(ArnError::Malformed(text.to_owned())),
                "{text}"
            );
        }
        assert_eq!(
            parse_table_arn("arn:aws:dynamodb:us-east-1:123456789012:table/a:b"),
            Err(ArnError::TableName("a:b".to_owned()))
        );
        assert_eq!(
            ArnError::Malformed("arn:x".to_owned()).to_string(),
            "\"arn:x\" is not a DynamoDB table ARN (expected arn:PARTITION:dynamodb:REGION:ACCOUNT_ID:table/TABLE_NAME)"
        );
    }

    #[test]
    fn role_arns_parse() {
        assert_eq!(
            parse_role_arn("arn:aws:iam::123456789012:role/exporter"),
            Ok(RoleArn {
                partition: "aws".to_owned(),
                account_id: "123456789012".to_owned(),
                path: "/".to_owned(),
                name: "exporter".to_owned(),
            })
        );
        assert_eq!(
            parse_role_arn("arn:aws-cn:iam::123456789012:role/a/b.c/Role+=,.@_-1"),
            Ok(RoleArn {
                partition: "aws-cn".to_owned(),
                account_id: "123456789012".to_owned(),
                path: "/a/b.c/".to_owned(),
                name: "Role+=,.@_-1".to_owned(),
            })
        );
        for text in [
            "",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role",
            "arn:aws:iam::123456789012:user/exporter",
            "arn:aws:iam:us-east-1:123456789012:role/exporter",
            "arn:aws:sts::123456789012:role/exporter",
            "arn:aws:iam::12345678901:role/exporter",
            "arn:aws:iam::12345678901x:role/exporter",
            "arn:aws:iam::123456789012:role//exporter",
            "arn:aws:iam::123456789012:role/a//exporter",
            "arn:aws:iam::123456789012:role/a b/exporter",
            "arn:aws:iam::123456789012:role/exporter/",
            "arn:AWS:iam::123456789012:role/exporter",
            "arn:aws:dynamodb:us-east-1:123456789012:table/orders",
        ] {
            assert_eq!(
                parse_role_arn(text),
                Err(ArnError::MalformedRole(text.to_owned())),
                "{text}"
            );
        }
        for name in ["a:b", "é", &"r".repeat(65)] {
            let text = format!("arn:aws:iam::123456789012:role/{name}");
            assert_eq!(
                parse_role_arn(&text),
                Err(ArnError::RoleName(name.to_owned()))
            );
        }
    }

    #[test]
    fn regex_problems_are_one_line() {
        for source in ["(", "[z-a]", "a{2,1}", "\\p{Nope}", "(?z)", "\\"] {
            let err = super::super::Pattern::new(source).unwrap_err();
            let message = regex_problem(source, &err);
            assert!(!message.contains('\n'), "{message}");
            assert!(message.starts_with(&format!("{source:?} is not a valid regular expression: ")));
            assert!(!message.ends_with(": "), "{message}");
        }
    }

    proptest! {
        #[test]
        fn arns_round_trip(
            partition in "aws|aws-cn|aws-us-gov|[a-z0-9-]{1,32}",
            region in "[a-z]{2}(-[a-z]{1,9}){1,2}-[0-9]|[a-z0-9-]{1,32}",
            account in "[0-9]{12}",
            table in "[A-Za-z0-9_.-]{3,255}",
        ) {
            let text = format!("arn:{partition}:dynamodb:{region}:{account}:table/{table}");
            let arn = parse_table_arn(&text).unwrap();
            prop_assert_eq!(&arn.partition, &partition);
            prop_assert_eq!(&arn.region, &region);
            prop_assert_eq!(&arn.account_id, &account);
            prop_assert_eq!(&arn.table, &table);
            prop_assert_eq!(arn.to_string(), text);
        }

        #[test]
        fn role_arns_round_trip(
            partition in "aws|aws-cn|aws-us-gov|[a-z0-9-]{1,32}",
            account in "[0-9]{12}",
            dirs in prop::collection::vec("[A-Za-z0-9+=,.@_-]{1,12}", 0..4),
            name in "[A-Za-z0-9+=,.@_-]{1,64}",
        ) {
            let path = if dirs.is_empty() { "/".to_owned() } else { format!("/{}/", dirs.join("/")) };
            let text = format!("arn:{partition}:iam::{account}:role{path}{name}");
            let arn = parse_role_arn(&text).unwrap();
            prop_assert_eq!(&arn.partition, &partition);
            prop_assert_eq!(&arn.account_id, &account);
            prop_assert_eq!(&arn.path, &path);
            prop_assert_eq!(&arn.name, &name);
            prop_assert_eq!(arn.to_string(), text);
        }

        #[test]
        fn role_arn_parsing_never_panics(text in "arn:[a-z]{0,4}:iam:[a-z-]{0,3}:[0-9]{0,13}:role[/a-z@:]{0,12}") {
            if let Ok(arn) = parse_role_arn(&text) {
                prop_assert_eq!(arn.to_string(), text);
            }
        }
    }
}
