//! The web configuration file (`--web.config.file`), in the format of
//! Prometheus' exporter-toolkit (`web-config.yml`), so existing files work
//! unchanged: TLS (`tls_server_config`), extra response headers
//! (`http_server_config.headers`) and basic auth (`basic_auth_users`, bcrypt
//! hashes).
//!
//! [`load`] reads and checks the file and every file it names, reporting
//! every problem at once; the binary calls it before binding any port.
//! [`WebState`] holds the running file, checks credentials (caching
//! successful bcrypt checks, as exporter-toolkit does) and, from
//! [`WebState::watch`], re-reads the file and the files it names whenever
//! their contents change, so certificates and users rotate without a
//! restart; an invalid new version is logged and the old one kept.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use tokio::sync::watch;

use crate::tls::{self, TlsFile};

/// How often [`WebState::watch`] looks for changes.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Why a web config file cannot be used: every problem, each naming the
/// file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct WebConfigError(pub Vec<String>);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// A checked web config, with the files it names already read.
#[derive(Clone)]
pub struct WebConfig {
    /// TLS settings for new connections; `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Headers added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// User name to bcrypt hash; empty means no authentication.
    pub users: BTreeMap<String, String>,
    /// The contents of the file and every file it names, to notice changes.
    fingerprint: u64,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("headers", &self.headers)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The headers exporter-toolkit allows, with the values it allows (`None`:
/// any value).
const ALLOWED_HEADERS: [(&str, Option<&[&str]>); 5] = [
    ("Strict-Transport-Security", None),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-XSS-Protection", None),
    ("Content-Security-Policy", None),
];

/// Read and check the web config file at `path`.
pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        WebConfigError(vec![format!(
            "{name}: cannot read the web config file: {e}"
        )])
    })?;
    parse(&text, path)
}

/// Check web config `text`; relative file names in it are relative to the
/// directory of `path`, as in exporter-toolkit.
pub fn parse(text: &str, path: &Path) -> Result<WebConfig, WebConfigError> {
    let name = path.display().to_string();
    let file: File = if text.trim().is_empty() {
        File::default()
    } else {
        serde_yaml::from_str(text).map_err(|e| WebConfigError(vec![format!("{name}: {e}")]))?
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut problems = Vec::new();
    let mut fingerprint = FingerprintBuilder::new();
    fingerprint.add(text.as_bytes());

    let tls = match &file.tls_server_config {
        None => None,
        Some(tls_file) => {
            let resolve = |file: &str| -> PathBuf { dir.join(file) };
            match tls::server_config(tls_file, &resolve, &mut |bytes| fingerprint.add(bytes)) {
                Ok(config) => Some(Arc::new(config)),
                Err(errors) => {
                    problems.extend(
                        errors
                            .into_iter()
                            .map(|e| format!("{name}: tls_server_config.{e}")),
                    );
                    None
                }
            }
        }
    };

    let mut headers = Vec::new();
    if let Some(http) = &file.http_server_config {
        if http.http2 == Some(true) {
            tracing::debug!("http_server_config.http2: this exporter serves HTTP/1.1");
        }
        for (header, value) in &http.headers {
            let Some((canonical, allowed)) = ALLOWED_HEADERS
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(header))
            else {
                let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(h, _)| *h).collect();
                problems.push(format!(
                    "{name}: http_server_config.headers: {header:?} is not an allowed header (allowed: {})",
                    names.join(", ")
                ));
                continue;
            };
            if let Some(values) = allowed {
                if !values.iter().any(|v| v.eq_ignore_ascii_case(value)) {
                    problems.push(format!(
                        "{name}: http_server_config.headers.{canonical}: {value:?} is not allowed (one of: {})",
                        values.join(", ")
                    ));
                    continue;
                }
            }
            match HeaderValue::from_str(value) {
                Ok(v) => headers.push((HeaderName::from_static_lower(canonical), v)),
                Err(_) => problems.push(format!(
                    "{name}: http_server_config.headers.{canonical}: {value:?} is not a valid header value"
                )),
            }
        }
    }

    for (user, hash) in &file.basic_auth_users {
        if user.contains(':') {
            problems.push(format!(
                "{name}: basic_auth_users.{user}: a user name cannot contain ':'"
            ));
        }
        if hash.parse::<bcrypt::HashParts>().is_err() {
            problems.push(format!(
                "{name}: basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
            ));
        }
    }

    if !problems.is_empty() {
        return Err(WebConfigError(problems));
    }
    Ok(WebConfig {
        tls,
        headers,
        users: file.basic_auth_users,
        fingerprint: fingerprint.finish(),
    })
}

/// `HeaderName::from_static` needs lower case; the allowed names are ASCII.
trait FromStaticLower {
    fn from_static_lower(name: &str) -> HeaderName;
}

impl FromStaticLower for HeaderName {
    fn from_static_lower(name: &str) -> HeaderName {
        HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .expect("allowed header names are valid")
    }
}

/// A 64-bit hash of some contents, to tell whether they changed. Not
/// security relevant: a missed change only delays a reload until the next
/// edit.
struct FingerprintBuilder(std::collections::hash_map::DefaultHasher);

impl FingerprintBuilder {
    fn new() -> Self {
        FingerprintBuilder(std::collections::hash_map::DefaultHasher::new())
    }

    fn add(&mut self, bytes: &[u8]) {
        bytes.hash(&mut self.0);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// The running web config, shared by the server (TLS) and the routes
/// (authentication, headers).
pub struct WebState {
    path: Option<PathBuf>,
    current: RwLock<Arc<WebConfig>>,
    tls: watch::Sender<Option<Arc<rustls::ServerConfig>>>,
    /// Credentials that passed bcrypt, by a keyed hash of (user, password,
    /// stored hash), so a right password is checked with bcrypt once, not
    /// per scrape.
    verified: Mutex<HashSet<u64>>,
    hasher: std::collections::hash_map::RandomState,
}

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No users are configured, or the credentials are right.
    Allowed,
    /// Credentials missing or wrong: answer 401 with `WWW-Authenticate`.
    Denied,
}

/// A bcrypt hash that matches no password, checked for unknown users so
/// they take as long to reject as known ones.
const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

impl WebState {
    /// A state serving `config`, read from `path` (`None`: nothing to
    /// reload).
    pub fn new(config: WebConfig, path: Option<PathBuf>) -> Self {
        let (tls, _) = watch::channel(config.tls.clone());
        WebState {
            path,
            current: RwLock::new(Arc::new(config)),
            tls,
            verified: Mutex::new(HashSet::new()),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// No TLS, no users, no headers.
    pub fn plain() -> Self {
        WebState::new(
            WebConfig {
                tls: None,
                headers: Vec::new(),
                users: BTreeMap::new(),
                fingerprint: 0,
            },
            None,
        )
    }

    /// The running config.
    pub fn current(&self) -> Arc<WebConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// TLS settings for the server, following reloads.
    pub fn tls_source(&self) -> watch::Receiver<Option<Arc<rustls::ServerConfig>>> {
        self.tls.subscribe()
    }

    /// Check an `Authorization` header value against the users.
    pub async fn authorize(&self, authorization: Option<&str>) -> Auth {
        let config = self.current();
        if config.users.is_empty() {
            return Auth::Allowed;
        }
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return Auth::Denied;
        };
        let (hash, known) = match config.users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (DUMMY_HASH.to_string(), false),
        };
        let key = self.hasher.hash_one((&user, &password, &hash));
        if known
            && self
                .verified
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&key)
        {
            return Auth::Allowed;
        }
        // bcrypt takes tens of milliseconds by design: off the async threads.
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if ok && known {
            let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            // Bounded: a few entries per user and password in practice.
            if verified.len() > 1024 {
                verified.clear();
            }
            verified.insert(key);
            Auth::Allowed
        } else {
            Auth::Denied
        }
    }

    /// Re-read the file every [`RELOAD_CHECK_INTERVAL`] until `stop`
    /// resolves, swapping in a changed valid version.
    pub async fn watch(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let Some(path) = self.path.clone() else {
            return;
        };
        tokio::pin!(stop);
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(RELOAD_CHECK_INTERVAL) => {}
            }
            let check = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || load(&path))
            };
            match check.await {
                Ok(Ok(config)) => {
                    last_error = None;
                    if config.fingerprint != self.current().fingerprint {
                        self.swap(config);
                        tracing::info!(path = %path.display(), "web config reloaded");
                    }
                }
                Ok(Err(err)) => {
                    let text = err.to_string();
                    if last_error.as_deref() != Some(&text) {
                        tracing::error!(path = %path.display(),
                            "web config changed but is invalid; keeping the running one:\n{text}");
                        last_error = Some(text);
                    }
                }
                Err(err) => tracing::error!(error = %err, "web config check failed"),
            }
        }
    }

    /// Replace the running config (a reload).
    pub fn swap(&self, config: WebConfig) {
        self.tls.send_replace(config.tls.clone());
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// User and password of a `Basic` authorization header value.
fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Standard base64 with optional padding; `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, Path::new("/etc/web.yml")) {
            Ok(_) => Vec::new(),
            Err(err) => err.0,
        }
    }

    #[test]
    fn empty_file_means_plain_http_without_auth() {
        let config = parse("", Path::new("web.yml")).unwrap();
        assert!(config.tls.is_none() && config.users.is_empty() && config.headers.is_empty());
    }

    #[test]
    fn bad_files_name_the_field() {
        let cases = [
            ("nonsense: 1\n", "unknown field `nonsense`"),
            (
                "basic_auth_users:\n  alice: plaintext\n",
                "/etc/web.yml: basic_auth_users.alice: not a bcrypt hash",
            ),
            (
                "http_server_config:\n  headers:\n    X-Powered-By: me\n",
                "http_server_config.headers: \"X-Powered-By\" is not an allowed header",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "http_server_config.headers.X-Frame-Options: \"allow\" is not allowed",
            ),
            (
                "tls_server_config:\n  cert_file: /nonexistent/c.pem\n  key_file: /nonexistent/k.pem\n",
                "tls_server_config.cert_file: cannot read \"/nonexistent/c.pem\"",
            ),
            ("tls_server_config:\n  key_file: k.pem\n", "tls_server_config.cert_file: required"),
            (
                "tls_server_config:\n  unknown_key: 1\n",
                "unknown field `unknown_key`",
            ),
            ("basic_auth_users: [a, b]\n", "basic_auth_users: invalid type"),
        ];
        for (text, want) in cases {
            let found = problems(text).join("\n");
            assert!(found.contains(want), "{text:?}: {found}");
        }
    }

    #[test]
    fn headers_are_canonical_and_values_checked_case_insensitively() {
        let config = parse(
            "http_server_config:\n  headers:\n    x-frame-options: DENY\n    Strict-Transport-Security: max-age=31536000\n",
            Path::new("w.yml"),
        )
        .unwrap();
        let names: Vec<&str> = config.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["strict-transport-security", "x-frame-options"]);
    }

    #[test]
    fn basic_headers_decode() {
        assert_eq!(
            parse_basic("Basic YWxpY2U6czNjcmV0"),
            Some(("alice".into(), "s3cret".into()))
        );
        assert_eq!(
            parse_basic("basic YTpiOmM="),
            Some(("a".into(), "b:c".into()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_basic("Basic bm9jb2xvbg=="), None);
    }

    #[tokio::test]
    async fn basic_auth_checks_user_and_password() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let config = parse(
            &format!("basic_auth_users:\n  alice: {hash}\n"),
            Path::new("w.yml"),
        )
        .unwrap();
        let state = WebState::new(config, None);
        let header = |user: &str, pass: &str| {
            let raw = format!("{user}:{pass}");
            format!("Basic {}", base64_encode(raw.as_bytes()))
        };
        assert_eq!(
            state.authorize(Some(&header("alice", "s3cret"))).await,
            Auth::Allowed
        );
        // Cached: still right, and a wrong one is still wrong.
        assert_eq!(
            state.authorize(Some(&header("alice", "s3cret"))).await,
            Auth::Allowed
        );
        assert_eq!(
            state.authorize(Some(&header("alice", "wrong"))).await,
            Auth::Denied
        );
        assert_eq!(
            state.authorize(Some(&header("mallory", "s3cret"))).await,
            Auth::Denied
        );
        assert_eq!(state.authorize(None).await, Auth::Denied);
        assert_eq!(WebState::plain().authorize(None).await, Auth::Allowed);
    }

    /// The test's own encoder.
    fn base64_encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.len();
            let v = (u32::from(chunk[0]) << 16)
                | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
                | u32::from(*chunk.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= n {
                    out.push(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            proptest::prop_assert_eq!(base64_decode(&base64_encode(&bytes)), Some(bytes));
        }
    }
}
