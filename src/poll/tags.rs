//! What a target asks of its tables beyond their polls: whether each must
//! stream (`expect`, `expect_streaming`) and which tags it exports as
//! labels (`export_tags`), and the tag reads both need.
//!
//! A table's tags are read (`ListTagsOfResource`, every page through the
//! pagination helper) when its target exports tags or expects tables by a
//! tag ([`Target::reads_tags`]): as scheduled work of its scope, in the
//! DynamoDB budget, first soon after the table appears (spread over the
//! first cycle with its first poll) and then every `tags_refresh_interval`.
//! Tables of a target that expects every table to stream, or none, are
//! decided without any read.

use std::sync::Arc;

use crate::aws::budget::Budget;
use crate::aws::{CallPolicy, DynamoDbApi, PollError};
use crate::config::{Name, Pattern, TableRef, Target};
use crate::poll::discovery::{table_arn, tags_of};
use crate::state::TableKey;

/// One target's rules for its tables, shared by their poll jobs (one
/// allocation per target, not per table).
#[derive(Debug)]
pub struct TableRules {
    pub target: Arc<Target>,
    /// `expect.stream`, in an `Arc` the store's table states share.
    pub stream: Option<Arc<Pattern>>,
    /// The exported tags: (tag key, label name), in the configured order.
    labels: Vec<(String, Name)>,
}

impl TableRules {
    pub fn new(target: Arc<Target>) -> Self {
        let stream = (target.expect.as_ref())
            .and_then(|e| e.stream.clone())
            .map(Arc::new);
        let labels = (target.export_tags.iter())
            .map(|t| (t.key.clone(), Name::from(t.label.as_str())))
            .collect();
        TableRules {
            target,
            stream,
            labels,
        }
    }

    /// Whether the target's tables' tags are read at all.
    pub fn reads_tags(&self) -> bool {
        self.target.reads_tags()
    }

    /// Whether the target exports tags (so a table's tags series waits for
    /// its first read).
    pub fn exports_tags(&self) -> bool {
        !self.labels.is_empty()
    }

    /// Of a table's tags, those these rules use: the exported keys and
    /// `expect.tag`'s (a table has up to 50; only these are kept).
    pub fn kept(&self, tags: Vec<(String, String)>) -> Vec<(String, String)> {
        let expect_tag = (self.target.expect.as_ref()).and_then(|e| e.tag.as_deref());
        tags.into_iter()
            .filter(|(key, _)| {
                expect_tag == Some(key.as_str()) || self.labels.iter().any(|(k, _)| k == key)
            })
            .collect()
    }

    /// The exported tags as (label name, value), in the configured order,
    /// an empty value for a tag the table lacks.
    pub fn export(&self, tags: &[(String, String)]) -> Vec<(Name, String)> {
        (self.labels.iter())
            .map(|(key, label)| {
                let value = tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
                (label.clone(), value.unwrap_or_default())
            })
            .collect()
    }

    /// Whether `table` must stream, given its kept tags (`None` before any
    /// read): `None` while that waits for them.
    pub fn expected(&self, table: &TableRef, tags: Option<&[(String, String)]>) -> Option<bool> {
        self.target.expected(table, tags)
    }
}

/// Read every tag of the table `key` (all pages) under `budget`.
pub async fn read<C: DynamoDbApi>(
    client: &C,
    budget: &Budget,
    policy: CallPolicy,
    key: &TableKey,
) -> Result<Vec<(String, String)>, PollError> {
    tags_of(client, budget, policy, &table_arn(key)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> TableRules {
        let text = format!("targets:\n  - region: us-east-1\n    tables: [orders, {{name: scratch, expect_streaming: false}}]\n{yaml}");
        let target = crate::config::parse(&text, "t.yaml")
            .unwrap()
            .targets
            .remove(0);
        TableRules::new(Arc::new(target))
    }

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        (pairs.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn exported_tags_keep_their_order_and_missing_ones_are_empty() {
        let rules = rules("    export_tags: [team, cost-center]\n");
        assert!(rules.reads_tags() && rules.exports_tags());
        let kept = rules.kept(tags(&[
            ("cost-center", "42"),
            ("unrelated", "x"),
            ("team", "payments"),
        ]));
        assert_eq!(kept, tags(&[("cost-center", "42"), ("team", "payments")]));
        let exported: Vec<(String, String)> = (rules.export(&kept).into_iter())
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(
            exported,
            tags(&[("tag_team", "payments"), ("tag_cost_center", "42")])
        );
        let none: Vec<String> = (rules.export(&[]).into_iter()).map(|(_, v)| v).collect();
        assert_eq!(none, ["", ""]);
        let target = &rules.target;
        assert_eq!(rules.expected(&target.tables[0], None), Some(false));
    }

    #[test]
    fn expectations_by_tag_wait_for_the_tags_and_overrides_do_not() {
        let rules = rules("    expect:\n      tag: cdc-required\n      stream: \"^cdc-\"\n");
        assert!(rules.reads_tags() && !rules.exports_tags());
        assert!(rules
            .stream
            .as_ref()
            .is_some_and(|p| p.is_match("cdc-orders")));
        let (orders, scratch) = (&rules.target.tables[0], &rules.target.tables[1]);
        assert_eq!(rules.expected(orders, None), None, "waits for the tags");
        assert_eq!(
            rules.expected(scratch, None),
            Some(false),
            "its own override"
        );
        let kept = rules.kept(tags(&[("cdc-required", " True "), ("team", "x")]));
        assert_eq!(kept, tags(&[("cdc-required", " True ")]));
        assert_eq!(rules.expected(orders, Some(&kept)), Some(true));
        assert_eq!(rules.expected(orders, Some(&[])), Some(false));
        let every = rules_streaming();
        assert!(!every.reads_tags(), "every table must stream: no read");
        assert_eq!(every.expected(&every.target.tables[0], None), Some(true));
    }

    fn rules_streaming() -> TableRules {
        rules("    expect:\n      streaming: true\n")
    }
}
