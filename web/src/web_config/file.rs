//! The web config file's tree (one read by `dke_yaml`, every node with its line) taken apart
//! into its sections, exactly as exporter-toolkit names their keys.
//!
//! Values are read as Go's YAML decoder reads them into the toolkit's types: an empty value is
//! an absent one, and a number or boolean where a string belongs is its text (`X-XSS-Protection:
//! 0` is the header value `0`). A value of the wrong type, or an unknown key, is reported in the
//! words this file's readers have always used (`invalid type: ...`, ``unknown field `x` ``),
//! with its line. What each section means is checked by the caller.

use dke_yaml::{describe, Checker, Field, Map, Value};

use super::rate_limit::{GoDuration, RateLimitFile};
use crate::tls::TlsFile;

/// A free-form mapping's entry (a user, a header): its key, its value, and where it is.
pub(super) type Entry<'n> = (String, String, Field<'n>);

/// The sections of one web config file; a section of the wrong type is left out (reported).
#[derive(Default)]
pub(super) struct Sections<'n> {
    /// `tls_server_config`, where it is; `None` also when one of its values had the wrong type,
    /// so that no follow-on problem (a "required" file) is reported for it.
    pub(super) tls: Option<(TlsFile, Field<'n>)>,
    pub(super) http2: bool,
    /// `http_server_config.headers`, in the order written.
    pub(super) headers: Vec<Entry<'n>>,
    /// `basic_auth_users`: user name and bcrypt hash, in the order written.
    pub(super) users: Vec<Entry<'n>>,
    pub(super) rate_limit: Option<(RateLimitFile, Field<'n>)>,
}

/// Reads the document's sections, reporting every value of the wrong type and unknown key.
pub(super) fn read<'n>(c: &mut Checker, doc: &Field<'n>) -> Sections<'n> {
    let mut sections = Sections::default();
    let Some(mut m) = mapping(c, doc) else {
        return sections;
    };
    if let Some(f) = present(&mut m, "tls_server_config") {
        sections.tls = read_tls(c, &f).map(|tls| (tls, f));
    }
    if let Some(f) = present(&mut m, "http_server_config") {
        if let Some(mut http) = mapping(c, &f) {
            sections.http2 = present(&mut http, "http2").and_then(|f| boolean(c, &f)) == Some(true);
            if let Some(f) = present(&mut http, "headers") {
                sections.headers = entries(c, &f);
            }
            finish(http, c);
        }
    }
    if let Some(f) = present(&mut m, "basic_auth_users") {
        sections.users = entries(c, &f);
    }
    if let Some(f) = present(&mut m, "rate_limit") {
        sections.rate_limit = read_rate_limit(c, &f).map(|limit| (limit, f));
    }
    finish(m, c);
    sections
}

fn read_tls(c: &mut Checker, at: &Field) -> Option<TlsFile> {
    let mut m = mapping(c, at)?;
    let mut clean = true;
    let mut string = |c: &mut Checker, m: &mut Map, key| {
        let value = text(c, &present(m, key)?);
        clean &= value.is_some();
        value
    };
    let mut tls = TlsFile {
        cert_file: string(c, &mut m, "cert_file"),
        key_file: string(c, &mut m, "key_file"),
        cert: string(c, &mut m, "cert"),
        key: string(c, &mut m, "key"),
        client_auth_type: string(c, &mut m, "client_auth_type"),
        client_ca_file: string(c, &mut m, "client_ca_file"),
        min_version: string(c, &mut m, "min_version"),
        max_version: string(c, &mut m, "max_version"),
        ..TlsFile::default()
    };
    let mut strings = |c: &mut Checker, m: &mut Map, key| {
        let value = texts(c, &present(m, key)?);
        clean &= value.is_some();
        value
    };
    tls.client_allowed_sans = strings(c, &mut m, "client_allowed_sans");
    tls.cipher_suites = strings(c, &mut m, "cipher_suites");
    tls.curve_preferences = strings(c, &mut m, "curve_preferences");
    if let Some(f) = present(&mut m, "prefer_server_cipher_suites") {
        tls.prefer_server_cipher_suites = boolean(c, &f);
        clean &= tls.prefer_server_cipher_suites.is_some();
    }
    finish(m, c);
    clean.then_some(tls)
}

fn read_rate_limit(c: &mut Checker, at: &Field) -> Option<RateLimitFile> {
    let mut m = mapping(c, at)?;
    let interval = present(&mut m, "interval").map(|f| match &f.node.value {
        Value::String(text) => Some(GoDuration::Text(text.clone())),
        // A number is nanoseconds, as Go decodes one into a time.Duration.
        Value::Number(_, text) if f.node.is_integer() => match text.parse() {
            Ok(nanos) => Some(GoDuration::Nanos(nanos)),
            Err(_) => {
                c.report(&f, format!("{text} nanoseconds is too long"));
                None
            }
        },
        _ => wrong(c, &f, "a duration such as 1s"),
    });
    let burst = present(&mut m, "burst").map(|f| match &f.node.value {
        Value::Number(_, text) if f.node.is_integer() => {
            let message = format!(
                "invalid value: {text}, expected a whole number from 0 to {}",
                u32::MAX
            );
            text.parse::<u32>().map_err(|_| c.report(&f, message)).ok()
        }
        _ => wrong(c, &f, "a whole number"),
    });
    finish(m, c);
    let valid = interval.as_ref().is_none_or(Option::is_some) && burst.is_none_or(|b| b.is_some());
    valid.then(|| RateLimitFile {
        interval: interval.flatten(),
        burst: burst.flatten().unwrap_or(0),
    })
}

/// The value of `key`, unless it is missing or empty.
fn present<'n>(m: &mut Map<'n>, key: &'static str) -> Option<Field<'n>> {
    m.get(key).filter(|f| !matches!(f.node.value, Value::Null))
}

/// Reports a value of the wrong type; always `None`.
fn wrong<T>(c: &mut Checker, at: &Field, expected: &str) -> Option<T> {
    let found = describe(&at.node.value);
    c.report(at, format!("invalid type: {found}, expected {expected}"));
    None
}

fn mapping<'n>(c: &mut Checker, at: &Field<'n>) -> Option<Map<'n>> {
    match &at.node.value {
        Value::Null => Some(Map::empty(at)),
        Value::Map(_) => c.map(at),
        _ => wrong(c, at, "a mapping"),
    }
}

/// Reports the keys of `m` that were not asked for.
fn finish(m: Map, c: &mut Checker) {
    m.finish_with(c, |key, known| {
        let known: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
        format!(
            "unknown field `{key}`, expected one of {}",
            known.join(", ")
        )
    });
}

/// A scalar as the text Go would decode into a string.
fn text(c: &mut Checker, at: &Field) -> Option<String> {
    match &at.node.value {
        Value::String(s) => Some(s.clone()),
        Value::Number(_, written) => Some(written.clone()),
        Value::Bool(b) => Some(b.to_string()),
        _ => wrong(c, at, "a string"),
    }
}

/// A list of strings; `None` (reported) if it or any item is of the wrong type.
fn texts(c: &mut Checker, at: &Field) -> Option<Vec<String>> {
    let Value::Seq(items) = &at.node.value else {
        return wrong(c, at, "a list of strings");
    };
    let items: Vec<Option<String>> = (items.iter().enumerate())
        .map(|(i, item)| text(c, &at.index(i, item)))
        .collect();
    items.into_iter().collect()
}

fn boolean(c: &mut Checker, at: &Field) -> Option<bool> {
    match at.node.value {
        Value::Bool(b) => Some(b),
        _ => wrong(c, at, "a boolean"),
    }
}

/// The entries of a mapping of names to strings; entries of the wrong type are left out
/// (reported).
fn entries<'n>(c: &mut Checker, at: &Field<'n>) -> Vec<Entry<'n>> {
    let Value::Map(pairs) = &at.node.value else {
        wrong::<()>(c, at, "a mapping of names to strings");
        return Vec::new();
    };
    let mut entries = Vec::new();
    for (key, value) in pairs {
        let label = match &key.value {
            Value::String(s) => s.clone(),
            other => describe(other),
        };
        let (key_at, value_at) = (at.key(&label, key), at.key(&label, value));
        let (Some(name), Some(value)) = (text(c, &key_at), text(c, &value_at)) else {
            continue;
        };
        entries.push((name, value, value_at));
    }
    entries
}
