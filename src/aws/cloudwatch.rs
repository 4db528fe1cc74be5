//! The CloudWatch side of the seam: `ListMetrics` to find which
//! (`TableName`, `DelegatedOperation`) dimension sets exist, and
//! `GetMetricData` to read their latest datapoints, up to
//! [`MAX_QUERIES`] queries per call.

use std::future::Future;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    Dimension, DimensionFilter, Metric, MetricDataQuery, MetricStat, ScanBy,
};

use super::{classify, Page, PollError, SdkClient};

/// The namespace DynamoDB publishes its metrics in.
pub const NAMESPACE: &str = "AWS/DynamoDB";
/// GetMetricData's limit on queries per call.
pub const MAX_QUERIES: usize = 500;

/// One dimension set of a CDC metric: the table and its
/// `DelegatedOperation` value, as ListMetrics names them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CdcSeries {
    pub metric: String,
    pub table: String,
    pub delegated_operation: String,
}

/// One GetMetricData query: a series, the statistic and the period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Unique within one call; starts with a lower-case letter, as AWS requires.
    pub id: String,
    pub series: CdcSeries,
    /// `Maximum`, `Sum`...
    pub stat: &'static str,
    pub period_seconds: i32,
}

/// The newest datapoint of one query, if the window had any.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    pub id: String,
    /// (value, Unix time of the datapoint)
    pub point: Option<(f64, f64)>,
}

/// The CloudWatch calls the exporter makes, each a single attempt.
pub trait CloudWatchApi: Send + Sync + 'static {
    /// One page of `ListMetrics` for `metric` in [`NAMESPACE`], only the
    /// dimension sets that have both `TableName` and `DelegatedOperation`.
    fn list_cdc_series(
        &self,
        metric: &str,
        token: Option<String>,
    ) -> impl Future<Output = Result<Page<CdcSeries>, PollError>> + Send;

    /// One page of `GetMetricData` over [start, end) (Unix seconds), newest
    /// datapoint first.
    fn latest_datapoints(
        &self,
        queries: &[Query],
        start: f64,
        end: f64,
        token: Option<String>,
    ) -> impl Future<Output = Result<Page<Latest>, PollError>> + Send;
}

impl CloudWatchApi for SdkClient {
    async fn list_cdc_series(
        &self,
        metric: &str,
        token: Option<String>,
    ) -> Result<Page<CdcSeries>, PollError> {
        let out = self
            .cloudwatch
            .list_metrics()
            .namespace(NAMESPACE)
            .metric_name(metric)
            .dimensions(DimensionFilter::builder().name("TableName").build())
            .dimensions(
                DimensionFilter::builder()
                    .name("DelegatedOperation")
                    .build(),
            )
            .set_next_token(token)
            .send()
            .await
            .map_err(classify)?;
        let items = out
            .metrics
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| series_of(metric, &m))
            .collect();
        Ok(Page {
            items,
            next: out.next_token,
        })
    }

    async fn latest_datapoints(
        &self,
        queries: &[Query],
        start: f64,
        end: f64,
        token: Option<String>,
    ) -> Result<Page<Latest>, PollError> {
        let out = self
            .cloudwatch
            .get_metric_data()
            .set_metric_data_queries(Some(queries.iter().map(sdk_query).collect()))
            .start_time(DateTime::from_secs_f64(start))
            .end_time(DateTime::from_secs_f64(end))
            .scan_by(ScanBy::TimestampDescending)
            .set_next_token(token)
            .send()
            .await
            .map_err(classify)?;
        let items = out
            .metric_data_results
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| {
                let id = r.id?;
                // Newest first, but do not rely on it: take the latest.
                let point = r
                    .timestamps
                    .unwrap_or_default()
                    .iter()
                    .zip(r.values.unwrap_or_default())
                    .map(|(at, value)| (value, at.as_secs_f64()))
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                Some(Latest { id, point })
            })
            .collect();
        Ok(Page {
            items,
            next: out.next_token,
        })
    }
}

fn series_of(metric: &str, m: &Metric) -> Option<CdcSeries> {
    let dims = m.dimensions.as_deref().unwrap_or_default();
    if dims.len() != 2 {
        return None;
    }
    let value = |name: &str| {
        dims.iter()
            .find(|d| d.name.as_deref() == Some(name))
            .and_then(|d| d.value.clone())
    };
    Some(CdcSeries {
        metric: metric.to_string(),
        table: value("TableName")?,
        delegated_operation: value("DelegatedOperation")?,
    })
}

fn sdk_query(q: &Query) -> MetricDataQuery {
    let metric = Metric::builder()
        .namespace(NAMESPACE)
        .metric_name(&q.series.metric)
        .dimensions(
            Dimension::builder()
                .name("TableName")
                .value(&q.series.table)
                .build(),
        )
        .dimensions(
            Dimension::builder()
                .name("DelegatedOperation")
                .value(&q.series.delegated_operation)
                .build(),
        )
        .build();
    MetricDataQuery::builder()
        .id(&q.id)
        .metric_stat(
            MetricStat::builder()
                .metric(metric)
                .period(q.period_seconds)
                .stat(q.stat)
                .build(),
        )
        .return_data(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(dims: &[(&str, &str)]) -> Metric {
        let mut m = Metric::builder().namespace(NAMESPACE).metric_name("X");
        for (name, value) in dims {
            m = m.dimensions(Dimension::builder().name(*name).value(*value).build());
        }
        m.build()
    }

    #[test]
    fn only_table_and_delegated_operation_dimension_sets_count() {
        assert_eq!(
            series_of(
                "AgeOfOldestUnreplicatedRecord",
                &metric(&[
                    ("TableName", "orders"),
                    ("DelegatedOperation", "PutRecords")
                ])
            ),
            Some(CdcSeries {
                metric: "AgeOfOldestUnreplicatedRecord".into(),
                table: "orders".into(),
                delegated_operation: "PutRecords".into(),
            })
        );
        assert_eq!(series_of("X", &metric(&[("TableName", "orders")])), None);
        assert_eq!(
            series_of(
                "X",
                &metric(&[("TableName", "orders"), ("Operation", "GetItem")])
            ),
            None
        );
    }

    #[test]
    fn queries_name_the_namespace_dimensions_and_stat() {
        let q = sdk_query(&Query {
            id: "q0".into(),
            series: CdcSeries {
                metric: "ThrottledPutRecordCount".into(),
                table: "orders".into(),
                delegated_operation: "PutRecords".into(),
            },
            stat: "Sum",
            period_seconds: 60,
        });
        let stat = q.metric_stat.unwrap();
        assert_eq!(stat.stat.as_deref(), Some("Sum"));
        assert_eq!(stat.period, Some(60));
        let metric = stat.metric.unwrap();
        assert_eq!(metric.namespace.as_deref(), Some(NAMESPACE));
        assert_eq!(metric.dimensions.unwrap().len(), 2);
    }
}
