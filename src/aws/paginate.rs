//! The one pagination helper every listing uses (`ListTables`,
//! `ListTagsOfResource`, `ListMetrics`, `GetMetricData`): it follows the
//! tokens AWS hands back and guarantees that a listing ends.
//!
//! - A token seen before in the same listing (any earlier one, not only
//!   the last) would make the walk go round for ever: the listing stops
//!   with [`PollError::Pagination`].
//! - So does a listing that needs more pages than its [`Listing::max_pages`],
//!   a bound no real account reaches (each listing documents why).
//!
//! Either error is counted like any other failure of the listing (its
//! `code` label is `pagination`). An empty token ends the listing as a
//! missing one does: the SDKs send an empty string for "no more" in places.

use std::collections::HashSet;
use std::future::Future;

use super::{Page, PollError, Request};

/// One kind of listing and the most pages one walk of it may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing {
    /// The AWS operation, as the error names it.
    pub operation: &'static str,
    pub max_pages: usize,
}

impl Listing {
    /// A page's call, for the request counters.
    pub const fn request(self) -> Request {
        Request::new(self.operation)
    }
}

/// `ListTables`: 100 names a page as the exporter asks for them, so 1,000
/// pages are 100,000 tables in one region, 40 times DynamoDB's default
/// quota of 2,500 tables per account and region.
pub const LIST_TABLES: Listing = Listing {
    operation: "ListTables",
    max_pages: 1_000,
};

/// `ListTagsOfResource`: a DynamoDB table has at most 50 tags, so even one
/// tag a page is 50 pages.
pub const LIST_TAGS: Listing = Listing {
    operation: "ListTagsOfResource",
    max_pages: 100,
};

/// `ListMetrics`: 500 dimension sets a page, so 1,000 pages are 500,000
/// (table, delegated operation) pairs of one metric in one region.
pub const LIST_METRICS: Listing = Listing {
    operation: "ListMetrics",
    max_pages: 1_000,
};

/// `GetMetricData`: one batch of at most 500 queries over a 20-minute
/// window at one-minute periods is 10,000 datapoints, well within the
/// 100,800 one page may hold: one page in practice, 100 at most.
pub const GET_METRIC_DATA: Listing = Listing {
    operation: "GetMetricData",
    max_pages: 100,
};

/// Every item of `listing`: `page(token)` fetches one page (the first with
/// `None`), budget and retries included. Stops at the first failed page,
/// at a token seen before and after [`Listing::max_pages`] pages.
pub async fn all_pages<T, F, Fut>(listing: Listing, mut page: F) -> Result<Vec<T>, PollError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, PollError>>,
{
    let mut items = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut token: Option<String> = None;
    for _ in 0..listing.max_pages {
        let answer = page(token.take()).await?;
        items.extend(answer.items);
        match answer.next.filter(|next| !next.is_empty()) {
            None => return Ok(items),
            Some(next) if seen.contains(&next) => {
                return Err(PollError::Pagination(format!(
                    "{} handed back a pagination token it had already sent ({next:?}) after {} pages; stopping instead of going round for ever",
                    listing.operation,
                    seen.len() + 1
                )));
            }
            Some(next) => {
                seen.insert(next.clone());
                token = Some(next);
            }
        }
    }
    Err(PollError::Pagination(format!(
        "{} did not end within {} pages, more than any real account has; stopping",
        listing.operation, listing.max_pages
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A listing whose page for token `t` is `pages[t]` (`None` is "0"),
    /// recording the tokens asked for.
    struct Script {
        pages: Vec<(Vec<u32>, Option<&'static str>)>,
        asked: RefCell<Vec<Option<String>>>,
    }

    impl Script {
        fn new(pages: Vec<(Vec<u32>, Option<&'static str>)>) -> Self {
            Script {
                pages,
                asked: RefCell::new(Vec::new()),
            }
        }

        fn page(&self, token: Option<String>) -> std::future::Ready<Result<Page<u32>, PollError>> {
            self.asked.borrow_mut().push(token.clone());
            let index: usize = token.as_deref().unwrap_or("0").parse().unwrap();
            let (items, next) = self.pages[index].clone();
            std::future::ready(Ok(Page {
                items,
                next: next.map(str::to_string),
            }))
        }
    }

    const SMALL: Listing = Listing {
        operation: "ListThings",
        max_pages: 5,
    };

    #[tokio::test]
    async fn every_page_is_followed_to_the_end() {
        let script = Script::new(vec![
            (vec![1, 2], Some("1")),
            (vec![3], Some("2")),
            (vec![4], None),
        ]);
        let items = all_pages(SMALL, |t| script.page(t)).await.unwrap();
        assert_eq!(items, [1, 2, 3, 4]);
        assert_eq!(
            script.asked.into_inner(),
            [None, Some("1".to_string()), Some("2".to_string())]
        );
    }

    #[tokio::test]
    async fn an_empty_token_ends_the_listing() {
        let script = Script::new(vec![(vec![1], Some(""))]);
        let items = all_pages(SMALL, |t| script.page(t)).await.unwrap();
        assert_eq!(items, [1]);
        assert_eq!(script.asked.into_inner().len(), 1);
    }

    #[tokio::test]
    async fn a_token_that_names_itself_stops_the_listing() {
        let script = Script::new(vec![(vec![1], Some("1")), (vec![2], Some("1"))]);
        let err = all_pages(SMALL, |t| script.page(t)).await.unwrap_err();
        assert_eq!(err.code(), "pagination");
        assert!(err.to_string().contains("ListThings"), "{err}");
        assert_eq!(script.asked.into_inner().len(), 2);
    }

    #[tokio::test]
    async fn a_token_from_further_back_stops_the_listing_too() {
        // 1 -> 2 -> 1: the last token differs from the one before, but the
        // walk is a cycle.
        let script = Script::new(vec![
            (vec![0], Some("1")),
            (vec![1], Some("2")),
            (vec![2], Some("1")),
        ]);
        let err = all_pages(SMALL, |t| script.page(t)).await.unwrap_err();
        assert!(matches!(err, PollError::Pagination(_)), "{err:?}");
        assert_eq!(
            script.asked.into_inner(),
            [None, Some("1".to_string()), Some("2".to_string())]
        );
    }

    #[tokio::test]
    async fn the_page_limit_stops_a_listing_that_never_ends() {
        let asked = RefCell::new(0usize);
        let err = all_pages(SMALL, |_| {
            let n = {
                let mut asked = asked.borrow_mut();
                *asked += 1;
                *asked
            };
            // Always a fresh token: only the limit can stop it.
            std::future::ready(Ok(Page {
                items: vec![n],
                next: Some(format!("t{n}")),
            }))
        })
        .await
        .unwrap_err();
        assert_eq!(*asked.borrow(), SMALL.max_pages);
        assert!(err.to_string().contains("within 5 pages"), "{err}");
        assert_eq!(err.code(), "pagination");
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn a_failed_page_fails_the_listing() {
        let mut calls = 0;
        let err = all_pages(SMALL, |token| {
            calls += 1;
            std::future::ready(match token {
                None => Ok(Page {
                    items: vec![1],
                    next: Some("1".to_string()),
                }),
                Some(_) => Err(PollError::Timeout("slow".into())),
            })
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), "timeout");
        assert_eq!(calls, 2);
    }
}
