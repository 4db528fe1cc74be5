//! OpenMetrics 1.0 headers for families whose samples are already rendered
//! in the text format 0.0.4.
//!
//! The two formats share sample lines for every family this exporter serves
//! (same names, labels, escaping and values), so an OpenMetrics page is the
//! text page with other `# HELP`/`# TYPE` lines and a final `# EOF`:
//! - a counter's family name drops `_total` (its samples keep it);
//! - a gauge named `..._info` becomes an `info` family named without
//!   `_info` (its samples keep it), as the spec types info metrics;
//! - HELP text also escapes `"`.
//!
//! Everything else, the status family included, stays as it is: the status
//! family remains a gauge (as kube-state-metrics does), since a `stateset`
//! would have to rename its `status` label after the family.

/// The end of an OpenMetrics exposition.
pub const EOF: &str = "# EOF\n";

/// The OpenMetrics family name and type for a text-format family.
pub fn family(name: &str, kind: &str) -> (String, String) {
    match kind {
        "counter" => (
            name.strip_suffix("_total").unwrap_or(name).to_string(),
            kind.to_string(),
        ),
        "gauge" if name.ends_with("_info") => (
            name.strip_suffix("_info").unwrap_or(name).to_string(),
            "info".to_string(),
        ),
        _ => (name.to_string(), kind.to_string()),
    }
}

/// `# HELP` and `# TYPE` lines of one family in OpenMetrics. `help` is the
/// unescaped help text.
pub fn header(name: &str, help: &str, kind: &str) -> String {
    let (name, kind) = family(name, kind);
    let mut out = String::with_capacity(name.len() * 2 + help.len() + 32);
    out.push_str("# HELP ");
    out.push_str(&name);
    out.push(' ');
    escape_help(&mut out, help);
    out.push_str("\n# TYPE ");
    out.push_str(&name);
    out.push(' ');
    out.push_str(&kind);
    out.push('\n');
    out
}

fn escape_help(out: &mut String, help: &str) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Undo the text format's HELP escaping (`\\` and `\n`).
fn unescape_text_help(help: &str) -> String {
    let mut out = String::with_capacity(help.len());
    let mut chars = help.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Convert a text-format exposition (as the `prometheus` crate's encoder
/// writes it: `# HELP` then `# TYPE` per family, then samples) to
/// OpenMetrics, without the final `# EOF`. Sample lines are copied as they
/// are.
pub fn from_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 256);
    let mut pending_help: Option<(&str, &str)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name, help));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let kind = if kind == "untyped" { "unknown" } else { kind };
            let help = match pending_help.take() {
                Some((help_name, help)) if help_name == name => unescape_text_help(help),
                _ => String::new(),
            };
            out.push_str(&header(name, &help, kind));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_drop_total_and_info_gauges_become_info() {
        assert_eq!(
            family("dynamodb_kinesis_api_errors_total", "counter"),
            ("dynamodb_kinesis_api_errors".into(), "counter".into())
        );
        assert_eq!(
            family("dynamodb_kinesis_destination_info", "gauge"),
            ("dynamodb_kinesis_destination".into(), "info".into())
        );
        assert_eq!(
            family("dynamodb_kinesis_destination_status", "gauge"),
            ("dynamodb_kinesis_destination_status".into(), "gauge".into())
        );
        assert_eq!(
            family("x_seconds", "histogram"),
            ("x_seconds".into(), "histogram".into())
        );
    }

    #[test]
    fn help_escapes_quotes_too() {
        assert_eq!(
            header("a_total", "say \"hi\"\\\n", "counter"),
            "# HELP a say \\\"hi\\\"\\\\\\n\n# TYPE a counter\n"
        );
    }

    #[test]
    fn text_pages_convert_headers_and_keep_samples() {
        let text = "# HELP process_cpu_seconds_total Total CPU.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n# HELP b_info Build \\\\ info.\n# TYPE b_info gauge\nb_info{version=\"1\"} 1\n# HELP h Hist.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
        assert_eq!(
            from_text(text),
            "# HELP process_cpu_seconds Total CPU.\n# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total 1.5\n# HELP b Build \\\\ info.\n# TYPE b info\nb_info{version=\"1\"} 1\n# HELP h Hist.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n"
        );
    }
}
