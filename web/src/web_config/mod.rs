//! The web configuration file (`--web.config.file`), in the format of
//! Prometheus' exporter-toolkit (`web-config.yml`), so existing files work
//! unchanged: TLS (`tls_server_config`), extra response headers
//! (`http_server_config.headers`), basic auth (`basic_auth_users`, bcrypt
//! hashes) and a request rate limit (`rate_limit`).
//!
//! [`load`] reads and checks the file and every file it names, reporting
//! every problem at once (each a [`Problem`]: a field path and a message);
//! an exporter calls it before binding any port. [`WebState`] holds the
//! running config: it checks credentials (`auth`), applies the rate limit
//! (`rate_limit`) and follows the file as it changes (`state`).

mod auth;
mod rate_limit;
mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::tls::{self, TlsFile};
pub use state::{Auth, WebState, RELOAD_CHECK_INTERVAL};

/// One problem in a web config file: the field it concerns, as a dotted
/// path (`basic_auth_users.alice`; empty for the file as a whole), and
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same problem one level down, under `parent` (`tls_server_config`).
    fn under(self, parent: &str) -> Self {
        let field = if self.field.is_empty() {
            parent.to_string()
        } else {
            format!("{parent}.{}", self.field)
        };
        Problem { field, ..self }
    }
}

/// Why a web config file cannot be used: every problem found in it.
#[derive(Debug)]
pub struct WebConfigError {
    /// The web config file, as given.
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl WebConfigError {
    fn new(file: &Path, problems: Vec<Problem>) -> Self {
        WebConfigError {
            file: file.to_path_buf(),
            problems,
        }
    }

    /// One line per problem, as [`format_problem`] writes it.
    pub fn lines(&self) -> Vec<String> {
        self.problems
            .iter()
            .map(|p| format_problem(&self.file, p))
            .collect()
    }
}

impl std::fmt::Display for WebConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for WebConfigError {}

/// The one place a problem becomes text: `file: field.path: message`
/// (`file: message` for the file as a whole). When the web config is read
/// by a YAML reader that knows positions, the line goes in here, after the
/// file name.
pub fn format_problem(file: &Path, problem: &Problem) -> String {
    let file = file.display();
    if problem.field.is_empty() {
        format!("{file}: {}", problem.message)
    } else {
        format!("{file}: {}: {}", problem.field, problem.message)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    rate_limit: Option<rate_limit::RateLimitFile>,
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
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Headers added to every response.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// User name to bcrypt hash; empty means no authentication.
    users: BTreeMap<String, String>,
    /// Checked for unknown users, at the highest cost among the users'
    /// hashes, so an unknown user's answer takes as long as a known one's.
    dummy_hash: String,
    rate_limit: Option<rate_limit::RateLimit>,
    guards: Guards,
    /// What this config was made from, to notice changes.
    snapshot: Snapshot,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("headers", &self.headers)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

impl WebConfig {
    /// No TLS, no users, no headers, no rate limit.
    pub fn plain() -> Self {
        WebConfig {
            tls: None,
            headers: Vec::new(),
            users: BTreeMap::new(),
            dummy_hash: String::new(),
            rate_limit: None,
            guards: Guards::default(),
            snapshot: Snapshot::default(),
        }
    }

    /// TLS settings, if the file has `tls_server_config`.
    pub fn tls(&self) -> Option<&Arc<rustls::ServerConfig>> {
        self.tls.as_ref()
    }

    /// Headers to add to every response.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The basic auth users' names.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

/// What protects the endpoint under one config. A reload may not turn any
/// of them off (that needs a restart), so a truncated or half-written file
/// cannot open the endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Guards {
    pub(crate) tls: bool,
    /// Every client must present a certificate the CA verifies.
    pub(crate) verified_client_certs: bool,
    pub(crate) allowed_sans: bool,
    pub(crate) basic_auth: bool,
}

impl Guards {
    /// The guards `self` has that `next` would drop.
    pub(crate) fn dropped_by(&self, next: &Guards) -> Vec<&'static str> {
        [
            (self.tls && !next.tls, "TLS"),
            (
                self.verified_client_certs && !next.verified_client_certs,
                "verified client certificates",
            ),
            (
                self.allowed_sans && !next.allowed_sans,
                "client_allowed_sans",
            ),
            (
                self.basic_auth && !next.basic_auth,
                "basic auth (every user removed)",
            ),
        ]
        .into_iter()
        .filter_map(|(dropped, what)| dropped.then_some(what))
        .collect()
    }
}

/// What a web config is made of, as read at one moment: the file's bytes
/// and the bytes of every file it names (or why one could not be read).
/// Equal snapshots give equal configs, so the watcher compares snapshots
/// and parses only a changed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    main: Contents,
    named: BTreeMap<PathBuf, Contents>,
}

/// A file's bytes, or why it could not be read.
type Contents = Result<Vec<u8>, String>;

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            main: Ok(Vec::new()),
            named: BTreeMap::new(),
        }
    }
}

fn read_contents(path: &Path) -> Contents {
    std::fs::read(path).map_err(|e| e.to_string())
}

impl Snapshot {
    /// Read the file at `path` and the files at `names`.
    pub(crate) fn read(path: &Path, names: &[PathBuf]) -> Snapshot {
        Snapshot {
            main: read_contents(path),
            named: names
                .iter()
                .map(|p| (p.clone(), read_contents(p)))
                .collect(),
        }
    }

    /// The files this version names.
    pub(crate) fn names(&self) -> Vec<PathBuf> {
        self.named.keys().cloned().collect()
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

/// Read and check the web config file at `path` and every file it names.
pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
    let given = Snapshot {
        main: read_contents(path),
        named: BTreeMap::new(),
    };
    from_snapshot(path, &given).0
}

/// Check web config `text`; relative file names in it are relative to the
/// directory of `path`, as in exporter-toolkit.
pub fn parse(text: &str, path: &Path) -> Result<WebConfig, WebConfigError> {
    let given = Snapshot {
        main: Ok(text.as_bytes().to_vec()),
        named: BTreeMap::new(),
    };
    from_snapshot(path, &given).0
}

/// Check the config in `given`, taking the files it names from `given`
/// where it has them and from disk otherwise. Also returns what was used:
/// the main file and exactly the files this version names.
pub(crate) fn from_snapshot(
    path: &Path,
    given: &Snapshot,
) -> (Result<WebConfig, WebConfigError>, Snapshot) {
    let mut used = Snapshot {
        main: given.main.clone(),
        named: BTreeMap::new(),
    };
    let result = check(path, given, &mut used);
    (result, used)
}

fn check(path: &Path, given: &Snapshot, used: &mut Snapshot) -> Result<WebConfig, WebConfigError> {
    let fail = |problems| WebConfigError::new(path, problems);
    let bytes = given.main.as_ref().map_err(|e| {
        fail(vec![Problem::new(
            "",
            format!("cannot read the web config file: {e}"),
        )])
    })?;
    let text = std::str::from_utf8(bytes)
        .map_err(|e| fail(vec![Problem::new("", format!("not UTF-8 text: {e}"))]))?;
    let file: File = if text.trim().is_empty() {
        File::default()
    } else {
        serde_yaml::from_str(text).map_err(|e| fail(vec![Problem::new("", e.to_string())]))?
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut problems = Vec::new();
    let mut guards = Guards::default();

    let tls = file.tls_server_config.as_ref().and_then(|tls_file| {
        let mut read = |name: &str| -> Result<Vec<u8>, String> {
            let named = dir.join(name);
            let contents = given
                .named
                .get(&named)
                .cloned()
                .unwrap_or_else(|| read_contents(&named));
            used.named.insert(named.clone(), contents.clone());
            contents.map_err(|e| format!("cannot read {:?}: {e}", named.display().to_string()))
        };
        match tls::server_config(tls_file, &mut read) {
            Ok(built) => {
                guards.tls = true;
                guards.verified_client_certs = built.verified_client_certs;
                guards.allowed_sans = built.allowed_sans;
                Some(Arc::new(built.config))
            }
            Err(errors) => {
                problems.extend(errors.into_iter().map(|e| e.under("tls_server_config")));
                None
            }
        }
    });

    let headers = file
        .http_server_config
        .as_ref()
        .map(|http| check_headers(http, &mut problems))
        .unwrap_or_default();

    let mut highest_cost = None;
    for (user, hash) in &file.basic_auth_users {
        let field = format!("basic_auth_users.{user}");
        if user.contains(':') {
            problems.push(Problem::new(&field, "a user name cannot contain ':'"));
        }
        match auth::check_hash(hash) {
            Ok(cost) => highest_cost = highest_cost.max(Some(cost)),
            Err(why) => problems.push(Problem::new(&field, why)),
        }
    }
    guards.basic_auth = !file.basic_auth_users.is_empty();

    let rate_limit = match &file.rate_limit {
        None => None,
        Some(limit) => match rate_limit::RateLimit::from_file(limit) {
            Ok(limit) => limit,
            Err(errors) => {
                problems.extend(errors.into_iter().map(|e| e.under("rate_limit")));
                None
            }
        },
    };

    if !problems.is_empty() {
        return Err(fail(problems));
    }
    Ok(WebConfig {
        tls,
        headers,
        dummy_hash: highest_cost.map(auth::dummy_hash).unwrap_or_default(),
        users: file.basic_auth_users,
        rate_limit,
        guards,
        snapshot: used.clone(),
    })
}

fn check_headers(http: &HttpFile, problems: &mut Vec<Problem>) -> Vec<(HeaderName, HeaderValue)> {
    if http.http2 == Some(true) {
        tracing::debug!("http_server_config.http2: this server speaks HTTP/1.1");
    }
    let mut headers = Vec::new();
    for (header, value) in &http.headers {
        let Some((canonical, allowed)) = ALLOWED_HEADERS
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(header))
        else {
            let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(h, _)| *h).collect();
            problems.push(Problem::new(
                "http_server_config.headers",
                format!(
                    "{header:?} is not an allowed header (allowed: {})",
                    names.join(", ")
                ),
            ));
            continue;
        };
        let field = format!("http_server_config.headers.{canonical}");
        if let Some(values) = allowed {
            if !values.iter().any(|v| v.eq_ignore_ascii_case(value)) {
                problems.push(Problem::new(
                    &field,
                    format!("{value:?} is not allowed (one of: {})", values.join(", ")),
                ));
                continue;
            }
        }
        match HeaderValue::from_str(value) {
            // The allowed names are valid header names in any case.
            Ok(v) => match HeaderName::from_bytes(canonical.as_bytes()) {
                Ok(name) => headers.push((name, v)),
                Err(e) => problems.push(Problem::new(&field, e.to_string())),
            },
            Err(_) => problems.push(Problem::new(
                &field,
                format!("{value:?} is not a valid header value"),
            )),
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, Path::new("/etc/web.yml")) {
            Ok(_) => Vec::new(),
            Err(err) => err.lines(),
        }
    }

    #[test]
    fn empty_file_means_plain_http_without_auth() {
        let config = parse("", Path::new("web.yml")).unwrap();
        assert!(config.tls.is_none() && config.users.is_empty() && config.headers.is_empty());
        assert_eq!(config.guards, Guards::default());
    }

    #[test]
    fn problems_are_formatted_in_one_place() {
        let file = Path::new("/etc/web.yml");
        assert_eq!(
            format_problem(file, &Problem::new("basic_auth_users.alice", "bad")),
            "/etc/web.yml: basic_auth_users.alice: bad"
        );
        assert_eq!(
            format_problem(file, &Problem::new("", "cannot read")),
            "/etc/web.yml: cannot read"
        );
        assert_eq!(
            Problem::new("cert_file", "x").under("tls_server_config"),
            Problem::new("tls_server_config.cert_file", "x")
        );
    }

    #[test]
    fn bad_files_name_the_field() {
        let cases = [
            ("nonsense: 1\n", "/etc/web.yml: unknown field `nonsense`"),
            (
                "basic_auth_users:\n  alice: plaintext\n",
                "/etc/web.yml: basic_auth_users.alice: not a bcrypt hash",
            ),
            (
                "http_server_config:\n  headers:\n    X-Powered-By: me\n",
                "/etc/web.yml: http_server_config.headers: \"X-Powered-By\" is not an allowed header",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "/etc/web.yml: http_server_config.headers.X-Frame-Options: \"allow\" is not allowed",
            ),
            (
                "tls_server_config:\n  cert_file: /nonexistent/c.pem\n  key_file: /nonexistent/k.pem\n",
                "/etc/web.yml: tls_server_config.cert_file: cannot read \"/nonexistent/c.pem\"",
            ),
            (
                "tls_server_config:\n  key_file: k.pem\n",
                "/etc/web.yml: tls_server_config.cert_file: required",
            ),
            (
                "tls_server_config:\n  unknown_key: 1\n",
                "unknown field `unknown_key`",
            ),
            ("basic_auth_users: [a, b]\n", "basic_auth_users: invalid type"),
            (
                "rate_limit:\n  interval: soon\n  burst: 1\n",
                "/etc/web.yml: rate_limit.interval: \"soon\" is not a duration",
            ),
            (
                "rate_limit:\n  interval: 1s\n  burst: 0\n",
                "/etc/web.yml: rate_limit.burst: 0 admits no request at all",
            ),
        ];
        for (text, want) in cases {
            let found = problems(text).join("\n");
            assert!(found.contains(want), "{text:?}: {found}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let found = problems(
            "basic_auth_users:\n  a:b: $2y$03$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi\n  bob: nope\nhttp_server_config:\n  headers:\n    Server: x\nrate_limit:\n  interval: -1s\n  burst: 1\n",
        );
        assert_eq!(
            found,
            [
                "/etc/web.yml: http_server_config.headers: \"Server\" is not an allowed header (allowed: Strict-Transport-Security, X-Frame-Options, X-Content-Type-Options, X-XSS-Protection, Content-Security-Policy)",
                "/etc/web.yml: basic_auth_users.a:b: a user name cannot contain ':'",
                "/etc/web.yml: basic_auth_users.a:b: cost 3 is outside 4 to 31",
                "/etc/web.yml: basic_auth_users.bob: not a bcrypt hash: it must start with $2a$, $2b$, $2x$ or $2y$ (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)",
                "/etc/web.yml: rate_limit.interval: \"-1s\" is negative",
            ]
        );
    }

    #[test]
    fn headers_are_canonical_and_values_checked_case_insensitively() {
        let config = parse(
            "http_server_config:\n  headers:\n    x-frame-options: DENY\n    Strict-Transport-Security: max-age=31536000\n",
            Path::new("w.yml"),
        )
        .unwrap();
        let names: Vec<&str> = config.headers().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["strict-transport-security", "x-frame-options"]);
    }

    #[test]
    fn the_dummy_hash_has_the_highest_cost_of_the_users() {
        let cheap = bcrypt::hash("a", 4).unwrap();
        let dearer = bcrypt::hash("b", 5).unwrap();
        let config = parse(
            &format!("basic_auth_users:\n  a: {cheap}\n  b: {dearer}\n"),
            Path::new("w.yml"),
        )
        .unwrap();
        let parts: bcrypt::HashParts = config.dummy_hash.parse().unwrap();
        assert_eq!(parts.get_cost(), 5);
        assert_eq!(config.users().collect::<Vec<_>>(), ["a", "b"]);
        assert!(config.guards.basic_auth && !config.guards.tls);
        assert!(parse("", Path::new("w.yml")).unwrap().dummy_hash.is_empty());
    }

    #[test]
    fn guards_dropped_by_a_new_version() {
        let all = Guards {
            tls: true,
            verified_client_certs: true,
            allowed_sans: true,
            basic_auth: true,
        };
        assert!(all.dropped_by(&all).is_empty());
        assert!(Guards::default().dropped_by(&all).is_empty());
        assert_eq!(
            all.dropped_by(&Guards::default()),
            [
                "TLS",
                "verified client certificates",
                "client_allowed_sans",
                "basic auth (every user removed)"
            ]
        );
        let no_users = Guards {
            basic_auth: false,
            ..all
        };
        assert_eq!(
            all.dropped_by(&no_users),
            ["basic auth (every user removed)"]
        );
    }

    #[test]
    fn a_snapshot_records_the_files_a_version_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        let text = "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n";
        std::fs::write(&path, text).unwrap();
        std::fs::write(dir.path().join("c.pem"), "not pem").unwrap();
        let given = Snapshot::read(&path, &[]);
        assert!(given.named.is_empty());
        let (result, used) = from_snapshot(&path, &given);
        assert!(result.is_err());
        assert_eq!(used.main, Ok(text.as_bytes().to_vec()));
        let names: Vec<&PathBuf> = used.named.keys().collect();
        assert_eq!(
            names,
            [&dir.path().join("c.pem"), &dir.path().join("k.pem")]
        );
        assert_eq!(
            used.named[&dir.path().join("c.pem")],
            Ok(b"not pem".to_vec())
        );
        assert!(used.named[&dir.path().join("k.pem")].is_err());
        // Read again like `used`: the same files, so equal while nothing
        // changes.
        assert_eq!(Snapshot::read(&path, &used.names()), used);
        std::fs::write(dir.path().join("c.pem"), "changed").unwrap();
        assert_ne!(Snapshot::read(&path, &used.names()), used);
    }
}
