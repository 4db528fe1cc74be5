//! Table discovery for one target in one region: `ListTables` (every page),
//! the name filters, this replica's shard, then `ListTagsOfResource` (every
//! page) for the tables still in the running, and the tag filters. Every
//! call goes through the scope's budget like the polls do, and every
//! listing through [`paginate::all_pages`], so it ends.
//!
//! Tags are read only for tables that pass the name filters and belong to
//! this replica's shard, so replicas share the cost of the tag reads.
//!
//! One table never fails the refresh: only a failed `ListTables` does.
//! - A table whose tag read answers `ResourceNotFoundException` was deleted
//!   since it was listed: it is skipped.
//! - Any other failure of one table's tag read (access denied, throttling
//!   after the retries, a code this exporter does not know) leaves that
//!   table *undecided*: [`Refresh::tables`] keeps its last decision (polled
//!   if it matched last time, not polled otherwise), and the caller counts
//!   the error.
//!
//! A refresh is scheduled work of its scope ([`DiscoveryJob`], run by the
//! scope's runner every `refresh_interval`); its outcome goes back to the
//! fleet, which decides what is polled.

use std::sync::Arc;

use crate::aws::budget::Budget;
use crate::aws::paginate::{self, LIST_TABLES, LIST_TAGS};
use crate::aws::{self, CallPolicy, DynamoDbApi, PollError};
use crate::config::Discovery;
use crate::state::{Name, ScopeKey, Shard, TableKey};

/// The discovery of one target in one region, as its scope runs it.
#[derive(Debug)]
pub struct DiscoveryJob<C> {
    /// Names the refresh across reloads (the target's identity, the region
    /// and the filters): a reload that keeps it keeps its schedule, and
    /// its outcome finds the units it belongs to.
    pub key: Name,
    pub client: Arc<C>,
    pub filters: Discovery,
    pub shard: Shard,
    pub policy: CallPolicy,
}

/// What one successful refresh found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Refresh {
    /// Tables that match the filters, sorted.
    pub matched: Vec<Name>,
    /// Tables whose tags could not be read, sorted, with the error.
    pub undecided: Vec<(Name, PollError)>,
    /// Tables listed but gone by the time their tags were read.
    pub gone: Vec<Name>,
}

impl Refresh {
    /// The tables to poll: those that matched, and the undecided ones that
    /// were polled before (`previous`: the last list, sorted), sorted.
    pub fn tables(&self, previous: Option<&[Name]>) -> Vec<Name> {
        let previous = previous.unwrap_or_default();
        let kept = self
            .undecided
            .iter()
            .map(|(name, _)| name)
            .filter(|name| previous.binary_search(name).is_ok());
        let mut tables: Vec<Name> = self.matched.iter().chain(kept).cloned().collect();
        tables.sort();
        tables
    }
}

/// The tables of `scope` that match `filters` and belong to `shard`. Fails
/// only when `ListTables` does.
pub async fn discover<C: DynamoDbApi>(
    client: &C,
    budget: &Budget,
    policy: CallPolicy,
    filters: &Discovery,
    scope: &ScopeKey,
    shard: &Shard,
) -> Result<Refresh, PollError> {
    let listed = paginate::all_pages(LIST_TABLES, |start| {
        aws::call(budget, policy, LIST_TABLES.request(), move || {
            client.list_tables(start.clone())
        })
    })
    .await;
    let mut names = listed.inspect_err(|err| {
        aws::warn_unknown_code(
            &scope.account_id,
            &scope.region,
            "discovery ListTables",
            err,
        );
    })?;
    names.sort();
    names.dedup();
    let mut refresh = Refresh::default();
    for name in names {
        let key = TableKey {
            account_id: scope.account_id.clone(),
            region: scope.region.clone(),
            table: Name::from(name),
        };
        if !filters.matches_name(&key.table) || !shard.owns(&key) {
            continue;
        }
        if !filters.tags.is_empty() {
            match tags_of(client, budget, policy, &table_arn(&key)).await {
                Ok(tags) if filters.matches_tags(&tags) => {}
                Ok(_) => continue,
                // Shutting down: this refresh decides nothing.
                Err(PollError::Cancelled) => return Err(PollError::Cancelled),
                Err(PollError::NotFound(_)) => {
                    tracing::debug!(account_id = %scope.account_id, region = %scope.region, table = %key.table,
                        "table deleted between ListTables and ListTagsOfResource; skipped");
                    refresh.gone.push(key.table);
                    continue;
                }
                Err(err) => {
                    let during = "discovery tag read";
                    aws::warn_unknown_code(&scope.account_id, &scope.region, during, &err);
                    refresh.undecided.push((key.table, err));
                    continue;
                }
            }
        }
        refresh.matched.push(key.table);
    }
    Ok(refresh)
}

/// Every tag of one table.
pub async fn tags_of<C: DynamoDbApi>(
    client: &C,
    budget: &Budget,
    policy: CallPolicy,
    arn: &str,
) -> Result<Vec<(String, String)>, PollError> {
    paginate::all_pages(LIST_TAGS, |token| {
        aws::call(budget, policy, LIST_TAGS.request(), move || {
            client.list_tags(arn, token.clone())
        })
    })
    .await
}

/// The ARN of a table, in the partition its region belongs to.
pub fn table_arn(key: &TableKey) -> String {
    let partition = if key.region.starts_with("cn-") {
        "aws-cn"
    } else if key.region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    };
    format!(
        "arn:{partition}:dynamodb:{}:{}:table/{}",
        key.region, key.account_id, key.table
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::{Destination, Page};
    use crate::config::TableRef;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A fake account: table names with tags, pages of `page` items, and a
    /// log of calls.
    struct FakeAccount {
        tables: Vec<(String, Vec<(String, String)>)>,
        page: usize,
        fail_listing: bool,
        /// The last ListTables page names the first page's token again.
        loop_listing: bool,
        /// Tag reads of these tables fail with the error.
        tag_faults: HashMap<String, PollError>,
        tag_reads: Mutex<Vec<String>>,
    }

    impl DynamoDbApi for FakeAccount {
        async fn describe(&self, _table: &TableRef) -> Result<Vec<Destination>, PollError> {
            unreachable!("discovery never describes")
        }

        async fn list_tables(&self, start: Option<String>) -> Result<Page<String>, PollError> {
            if self.fail_listing {
                return Err(PollError::Service {
                    code: "AccessDeniedException".into(),
                    message: "no".into(),
                });
            }
            let mut names: Vec<String> = self.tables.iter().map(|(n, _)| n.clone()).collect();
            names.sort();
            let from = start.map_or(0, |s| {
                names.iter().position(|n| *n > s).unwrap_or(names.len())
            });
            let items: Vec<String> = names[from..].iter().take(self.page).cloned().collect();
            let next = (from + items.len() < names.len())
                .then(|| items.last().cloned())
                .flatten();
            // Looping: the last page names the first page's token again.
            let next = next.or_else(|| {
                self.loop_listing
                    .then(|| names.get(self.page - 1).cloned())
                    .flatten()
            });
            Ok(Page { items, next })
        }

        async fn list_tags(
            &self,
            arn: &str,
            token: Option<String>,
        ) -> Result<Page<(String, String)>, PollError> {
            self.tag_reads.lock().unwrap().push(arn.to_string());
            let name = arn.rsplit('/').next().unwrap();
            if let Some(err) = self.tag_faults.get(name) {
                return Err(err.clone());
            }
            let tags = &self.tables.iter().find(|(n, _)| n == name).unwrap().1;
            let from: usize = token.map_or(0, |t| t.parse().unwrap());
            let items: Vec<_> = tags[from..].iter().take(1).cloned().collect();
            let next = (from + 1 < tags.len()).then(|| (from + 1).to_string());
            Ok(Page { items, next })
        }
    }

    fn account(names: &[(&str, &[(&str, &str)])]) -> FakeAccount {
        FakeAccount {
            tables: names
                .iter()
                .map(|(n, tags)| {
                    (
                        n.to_string(),
                        tags.iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    )
                })
                .collect(),
            page: 2,
            fail_listing: false,
            loop_listing: false,
            tag_faults: HashMap::new(),
            tag_reads: Mutex::new(Vec::new()),
        }
    }

    fn filters(yaml: &str) -> Discovery {
        let text = format!("targets:\n  - region: us-east-1\n    discovery:\n{yaml}");
        crate::config::parse(&text, "t.yaml")
            .unwrap()
            .targets
            .remove(0)
            .discovery
            .unwrap()
    }

    const POLICY: CallPolicy = CallPolicy {
        max_attempts: 1,
        timeout: Duration::from_secs(5),
    };

    fn scope() -> ScopeKey {
        ScopeKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pages_names_and_tags_are_all_followed() {
        let fake = account(&[
            ("orders-eu", &[("team", "a"), ("cdc", "true")]),
            ("orders-test", &[("cdc", "true")]),
            ("orders-us", &[("cdc", "false")]),
            ("payments", &[("cdc", "true")]),
            ("zebra", &[]),
        ]);
        let discovery = filters(
            "      include: [\"^orders-\", \"^payments$\"]\n      exclude: [\"-test$\"]\n      tags: {cdc: \"true\"}\n",
        );
        let budget = Budget::new(100.0, 4);
        let found = discover(&fake, &budget, POLICY, &discovery, &scope(), &Shard::ALL)
            .await
            .unwrap()
            .matched;
        assert_eq!(found, [Name::from("orders-eu"), Name::from("payments")]);
        // Tags were read only for tables that passed the name filters, and
        // the two-tag table needed two pages.
        let reads = fake.tag_reads.lock().unwrap().clone();
        assert!(reads
            .iter()
            .all(|arn| !arn.ends_with("orders-test") && !arn.ends_with("zebra")));
        assert_eq!(
            reads.iter().filter(|a| a.ends_with("/orders-eu")).count(),
            2
        );
        assert_eq!(
            reads[0],
            "arn:aws:dynamodb:us-east-1:123456789012:table/orders-eu"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_filters_find_every_table_and_no_tags_are_read() {
        let names: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
        let entries: Vec<(&str, &[(&str, &str)])> =
            names.iter().map(|n| (n.as_str(), &[][..])).collect();
        let fake = account(&entries);
        let discovery = filters("      refresh_interval: 1m\n");
        let budget = Budget::new(100.0, 4);
        let found = discover(&fake, &budget, POLICY, &discovery, &scope(), &Shard::ALL)
            .await
            .unwrap()
            .matched;
        assert!(found
            .iter()
            .map(|n| &**n)
            .eq(names.iter().map(String::as_str)));
        assert!(fake.tag_reads.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_listing_is_an_error() {
        let mut fake = account(&[("orders", &[])]);
        fake.fail_listing = true;
        let budget = Budget::new(100.0, 4);
        let err = discover(
            &fake,
            &budget,
            POLICY,
            &filters("      tags: {}\n"),
            &scope(),
            &Shard::ALL,
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), "AccessDeniedException");
    }

    #[tokio::test(start_paused = true)]
    async fn shards_split_the_tables() {
        let names: Vec<String> = (0..300).map(|i| format!("table-{i:03}")).collect();
        let entries: Vec<(&str, &[(&str, &str)])> =
            names.iter().map(|n| (n.as_str(), &[][..])).collect();
        let mut fake = account(&entries);
        fake.page = 100;
        let budget = Budget::new(1000.0, 4);
        let discovery = filters("      refresh_interval: 1m\n");
        let mut seen = HashMap::new();
        for index in 0..3 {
            let shard = Shard { index, total: 3 };
            for name in discover(&fake, &budget, POLICY, &discovery, &scope(), &shard)
                .await
                .unwrap()
                .matched
            {
                *seen.entry(name).or_insert(0) += 1;
            }
        }
        assert_eq!(seen.len(), 300);
        assert!(seen.values().all(|n| *n == 1));
    }

    fn service(code: &str) -> PollError {
        PollError::Service {
            code: code.into(),
            message: "no".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_table_s_tag_failure_never_fails_the_refresh() {
        let tagged: &[(&str, &str)] = &[("cdc", "true")];
        let mut fake = account(&[
            ("denied", tagged),
            ("gone", tagged),
            ("good-1", tagged),
            ("good-2", tagged),
            ("new-code", tagged),
            ("throttled", tagged),
            ("untagged", &[]),
        ]);
        fake.tag_faults = HashMap::from([
            ("denied".to_string(), service("AccessDeniedException")),
            ("gone".to_string(), PollError::NotFound("deleted".into())),
            ("new-code".to_string(), service("SomethingNewException")),
            ("throttled".to_string(), service("ThrottlingException")),
        ]);
        let budget = Budget::new(1000.0, 4);
        let refresh = discover(
            &fake,
            &budget,
            POLICY,
            &filters("      tags: {cdc: \"true\"}\n"),
            &scope(),
            &Shard::ALL,
        )
        .await
        .expect("a tag failure is not a failed refresh");
        assert_eq!(
            refresh.matched,
            [Name::from("good-1"), Name::from("good-2")]
        );
        assert_eq!(refresh.gone, [Name::from("gone")]);
        let undecided: Vec<(&str, &str)> = refresh
            .undecided
            .iter()
            .map(|(name, err)| (&**name, err.code()))
            .collect();
        assert_eq!(
            undecided,
            [
                ("denied", "AccessDeniedException"),
                ("new-code", "other"),
                ("throttled", "ThrottlingException"),
            ]
        );
        // Never polled before: the undecided tables stay out.
        assert_eq!(refresh.tables(None), refresh.matched);
        // Polled before (matched last time): "denied" and "throttled" keep
        // being polled; "untagged" did not match last time and "new-code"
        // was never decided, so they stay out; "gone" goes.
        let previous = [
            Name::from("denied"),
            Name::from("gone"),
            Name::from("good-1"),
            Name::from("throttled"),
        ];
        assert_eq!(
            refresh.tables(Some(&previous)),
            ["denied", "good-1", "good-2", "throttled"].map(Name::from)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_listing_that_loops_fails_the_refresh() {
        let names: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
        let entries: Vec<(&str, &[(&str, &str)])> =
            names.iter().map(|n| (n.as_str(), &[][..])).collect();
        let mut fake = account(&entries);
        fake.loop_listing = true;
        let budget = Budget::new(1000.0, 4);
        let err = discover(
            &fake,
            &budget,
            POLICY,
            &filters("      refresh_interval: 1m\n"),
            &scope(),
            &Shard::ALL,
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), "pagination");
        assert!(err.to_string().contains("ListTables"), "{err}");
    }

    #[test]
    fn arns_use_the_region_partition() {
        let key = |region: &str| TableKey {
            account_id: "123456789012".into(),
            region: region.into(),
            table: "t".into(),
        };
        assert_eq!(
            table_arn(&key("eu-west-1")),
            "arn:aws:dynamodb:eu-west-1:123456789012:table/t"
        );
        assert!(table_arn(&key("cn-north-1")).starts_with("arn:aws-cn:"));
        assert!(table_arn(&key("us-gov-west-1")).starts_with("arn:aws-us-gov:"));
    }
}
