//! The Kinesis side of the seam: `DescribeStreamSummary` for the streams
//! behind working destinations. A missing stream comes back as
//! [`PollError::NotFound`]; an `AccessDeniedException` stays a service
//! error, so a missing permission is never read as a missing stream.

use std::future::Future;

use aws_sdk_kinesis::types::StreamDescriptionSummary;

use super::{classify, PollError, SdkClient};

/// What `DescribeStreamSummary` says about one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    pub name: String,
    /// `CREATING`, `DELETING`, `ACTIVE`, `UPDATING`, or whatever AWS adds.
    pub status: String,
    pub open_shards: i64,
    /// `PROVISIONED` or `ON_DEMAND`; empty when AWS did not say.
    pub mode: String,
    /// `NONE` or `KMS`; empty when AWS did not say.
    pub encryption: String,
    pub retention_hours: i64,
}

/// The Kinesis call the exporter makes, a single attempt.
pub trait KinesisApi: Send + Sync + 'static {
    /// `DescribeStreamSummary` by stream ARN.
    fn describe_stream(
        &self,
        stream_arn: &str,
    ) -> impl Future<Output = Result<StreamSummary, PollError>> + Send;
}

impl KinesisApi for SdkClient {
    async fn describe_stream(&self, stream_arn: &str) -> Result<StreamSummary, PollError> {
        let out = self
            .kinesis
            .describe_stream_summary()
            .stream_arn(stream_arn)
            .send()
            .await
            .map_err(classify)?;
        out.stream_description_summary
            .map(summary_from)
            .ok_or_else(|| PollError::Response("DescribeStreamSummary sent no summary".into()))
    }
}

fn summary_from(s: StreamDescriptionSummary) -> StreamSummary {
    StreamSummary {
        name: s.stream_name,
        status: s.stream_status.as_str().to_string(),
        open_shards: i64::from(s.open_shard_count),
        mode: s
            .stream_mode_details
            .map(|m| m.stream_mode.as_str().to_string())
            .unwrap_or_default(),
        encryption: s
            .encryption_type
            .map(|e| e.as_str().to_string())
            .unwrap_or_default(),
        retention_hours: i64::from(s.retention_period_hours),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::types::{EncryptionType, StreamMode, StreamModeDetails, StreamStatus};

    #[test]
    fn sdk_fields_map_to_the_summary() {
        let sdk = StreamDescriptionSummary::builder()
            .stream_name("orders-cdc")
            .stream_arn("arn:aws:kinesis:us-east-1:123456789012:stream/orders-cdc")
            .stream_status(StreamStatus::Deleting)
            .stream_mode_details(
                StreamModeDetails::builder()
                    .stream_mode(StreamMode::OnDemand)
                    .build()
                    .unwrap(),
            )
            .retention_period_hours(48)
            .stream_creation_timestamp(aws_sdk_kinesis::primitives::DateTime::from_secs(0))
            .set_enhanced_monitoring(Some(Vec::new()))
            .encryption_type(EncryptionType::Kms)
            .open_shard_count(4)
            .build()
            .unwrap();
        assert_eq!(
            summary_from(sdk),
            StreamSummary {
                name: "orders-cdc".into(),
                status: "DELETING".into(),
                open_shards: 4,
                mode: "ON_DEMAND".into(),
                encryption: "KMS".into(),
                retention_hours: 48,
            }
        );
    }
}
