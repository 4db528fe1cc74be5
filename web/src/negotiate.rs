//! Content negotiation for the metrics page: the exposition format from
//! `Accept`, the way Prometheus' client_golang (`expfmt.Negotiate` with
//! OpenMetrics enabled) does it, and the encoding from `Accept-Encoding`.
//!
//! The acceptable media ranges are ordered by q-value (highest first, more
//! specific before wildcards on a tie, then in the order given) and the
//! first one this exporter can produce wins: `text/plain` with version
//! 0.0.4 or none, or `application/openmetrics-text` with version 1.0.0,
//! 0.0.1 or none. Anything else (`*/*`, protobuf) falls through; with no
//! match the text format 0.0.4 is the answer, as in client_golang.

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4 (the default).
    Text,
    /// OpenMetrics 1.0.
    OpenMetrics,
}

impl Format {
    /// 0 for the text format, 1 for OpenMetrics: an index into per-format
    /// arrays.
    pub fn index(self) -> usize {
        match self {
            Format::Text => 0,
            Format::OpenMetrics => 1,
        }
    }
}

/// Content type of the Prometheus text exposition format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics 1.0.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of OpenMetrics 0.0.1 (the same text, for clients that only
/// accept that version).
pub(crate) const OPENMETRICS_0_0_1_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=0.0.1; charset=utf-8";

/// The negotiated format and its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub format: Format,
    pub content_type: &'static str,
}

const TEXT: Negotiated = Negotiated {
    format: Format::Text,
    content_type: TEXT_CONTENT_TYPE,
};

struct Range<'a> {
    kind: &'a str,
    subtype: &'a str,
    version: Option<&'a str>,
    q: f32,
}

/// Parse one media range of an `Accept` header; `None` if malformed.
fn parse_range(part: &str) -> Option<Range<'_>> {
    let mut params = part.split(';').map(str::trim);
    let media = params.next()?;
    let (kind, subtype) = media.split_once('/')?;
    let mut range = Range {
        kind: kind.trim(),
        subtype: subtype.trim(),
        version: None,
        q: 1.0,
    };
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match name.trim().to_ascii_lowercase().as_str() {
            "q" => range.q = value.parse().ok().filter(|q: &f32| q.is_finite())?,
            "version" => range.version = Some(value),
            _ => {}
        }
    }
    Some(range)
}

/// The format for an `Accept` header (absent: the text format).
pub fn format(accept: Option<&str>) -> Negotiated {
    let Some(accept) = accept else {
        return TEXT;
    };
    let mut ranges: Vec<Range<'_>> = accept
        .split(',')
        .filter_map(parse_range)
        .filter(|r| r.q > 0.0)
        .collect();
    // Stable: equal q and specificity keep the client's order.
    ranges.sort_by(|a, b| {
        b.q.total_cmp(&a.q)
            .then_with(|| (a.kind == "*").cmp(&(b.kind == "*")))
            .then_with(|| (a.subtype == "*").cmp(&(b.subtype == "*")))
    });
    for range in ranges {
        let kind = range.kind.to_ascii_lowercase();
        let subtype = range.subtype.to_ascii_lowercase();
        match (kind.as_str(), subtype.as_str(), range.version) {
            ("text", "plain", None | Some("0.0.4")) => return TEXT,
            ("application", "openmetrics-text", None | Some("1.0.0")) => {
                return Negotiated {
                    format: Format::OpenMetrics,
                    content_type: OPENMETRICS_CONTENT_TYPE,
                }
            }
            ("application", "openmetrics-text", Some("0.0.1")) => {
                return Negotiated {
                    format: Format::OpenMetrics,
                    content_type: OPENMETRICS_0_0_1_CONTENT_TYPE,
                }
            }
            _ => {}
        }
    }
    TEXT
}

/// Whether an `Accept-Encoding` header accepts gzip (`gzip`, `x-gzip` or
/// `*` with a q-value above 0).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let Some(header) = accept_encoding else {
        return false;
    };
    header.split(',').any(|part| {
        let mut params = part.split(';').map(str::trim);
        let coding = params.next().unwrap_or("").to_ascii_lowercase();
        if !matches!(coding.as_str(), "gzip" | "x-gzip" | "*") {
            return false;
        }
        params
            .filter_map(|p| p.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .is_none_or(|(_, q)| q.trim().parse::<f32>().is_ok_and(|q| q > 0.0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Prometheus 2.x/3.x sends by default.
    const PROMETHEUS: &str = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

    #[test]
    fn formats_follow_q_values() {
        let cases: [(Option<&str>, &str); 14] = [
            (None, TEXT_CONTENT_TYPE),
            (Some(""), TEXT_CONTENT_TYPE),
            (Some("*/*"), TEXT_CONTENT_TYPE),
            (Some(PROMETHEUS), OPENMETRICS_CONTENT_TYPE),
            (Some("application/openmetrics-text"), OPENMETRICS_CONTENT_TYPE),
            (
                Some("application/openmetrics-text; version=0.0.1"),
                OPENMETRICS_0_0_1_CONTENT_TYPE,
            ),
            // The highest q wins, whatever the order.
            (
                Some("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5"),
                TEXT_CONTENT_TYPE,
            ),
            (
                Some("text/plain;q=0.1, application/openmetrics-text;q=0.2"),
                OPENMETRICS_CONTENT_TYPE,
            ),
            // Unsupported versions and q=0 are skipped.
            (
                Some("application/openmetrics-text;version=2.0.0,text/plain;q=0.1"),
                TEXT_CONTENT_TYPE,
            ),
            (
                Some("application/openmetrics-text;q=0,text/plain;q=0.1"),
                TEXT_CONTENT_TYPE,
            ),
            (Some("text/plain;version=0.0.5;q=1,application/openmetrics-text;q=0.5"), OPENMETRICS_CONTENT_TYPE),
            // Protobuf is not served; the next choice is.
            (
                Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,application/openmetrics-text;version=1.0.0;q=0.5"),
                OPENMETRICS_CONTENT_TYPE,
            ),
            // Equal q: the order given.
            (
                Some("application/openmetrics-text, text/plain"),
                OPENMETRICS_CONTENT_TYPE,
            ),
            (Some("garbage;;;,q=="), TEXT_CONTENT_TYPE),
        ];
        for (accept, want) in cases {
            assert_eq!(format(accept).content_type, want, "{accept:?}");
        }
    }

    #[test]
    fn gzip_when_asked_for() {
        for (header, want) in [
            (None, false),
            (Some("gzip"), true),
            (Some("identity"), false),
            (Some("br, gzip;q=0.5"), true),
            (Some("gzip;q=0"), false),
            (Some("deflate, x-gzip"), true),
            (Some("*"), true),
            (Some("GZIP"), true),
        ] {
            assert_eq!(accepts_gzip(header), want, "{header:?}");
        }
    }
}
