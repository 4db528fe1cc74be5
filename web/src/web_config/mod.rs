//! The web configuration file (`--web.config.file`), in the format of
//! Prometheus' exporter-toolkit (`web-config.yml`), so existing files work
//! unchanged: TLS (`tls_server_config`), extra response headers
//! (`http_server_config.headers`), basic auth (`basic_auth_users`, bcrypt
//! hashes) and a request rate limit (`rate_limit`).
//!
//! [`load`] reads and checks the file and every file it names, reporting
//! every problem at once (each a [`Problem`]: the line, a field path and a
//! message); an exporter calls it before binding any port. The file is read
//! once by `dke_yaml` into a tree whose nodes know their lines and taken
//! apart into its sections (`file`); each section is then checked here.
//! [`WebState`] holds the running config: it checks credentials (`auth`),
//! applies the rate limit (`rate_limit`) and follows the file as it changes
//! (`state`).

mod auth;
mod file;
mod rate_limit;
mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dke_yaml::{Checker, Field};
use hyper::header::{HeaderName, HeaderValue};

use crate::tls;
pub use state::{Auth, WebState, RELOAD_CHECK_INTERVAL};

/// One problem in a web config file: the line it is on (`None` for the
/// file as a whole), the field it concerns, as a dotted path
/// (`basic_auth_users.alice`; empty for the file as a whole), and what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

impl Problem {
    /// A problem about `field` of a section, placed by the section's reader.
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            line: None,
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<dke_yaml::Problem> for Problem {
    fn from(p: dke_yaml::Problem) -> Self {
        let field = if p.path == dke_yaml::ROOT {
            ""
        } else {
            &p.path
        };
        Problem {
            line: p.line,
            field: field.to_owned(),
            message: p.message,
        }
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

/// The one place a problem becomes text: `file:line: field.path: message`
/// (without the line for the file as a whole, which has none, and without
/// the field when it concerns no field).
pub fn format_problem(file: &Path, problem: &Problem) -> String {
    let place = match problem.line {
        Some(line) => format!("{}:{line}", file.display()),
        None => file.display().to_string(),
    };
    if problem.field.is_empty() {
        format!("{place}: {}", problem.message)
    } else {
        format!("{place}: {}: {}", problem.field, problem.message)
    }
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
    let origin = path.display().to_string();
    let doc = dke_yaml::parse(text, &origin).map_err(|p| fail(vec![p.into()]))?;
    let mut c = Checker::new(&origin);
    let sections = file::read(&mut c, &Field::root(&doc));
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut guards = Guards::default();

    let tls = sections.tls.as_ref().and_then(|(tls_file, at)| {
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
            Err(problems) => {
                report_under(&mut c, at, problems);
                None
            }
        }
    });

    if sections.http2 {
        tracing::debug!("http_server_config.http2: this server speaks HTTP/1.1");
    }
    let headers = check_headers(&mut c, &sections.headers);

    let mut highest_cost = None;
    let mut users = BTreeMap::new();
    for (user, hash, at) in &sections.users {
        if user.contains(':') {
            c.report(at, "a user name cannot contain ':'");
        }
        match auth::check_hash(hash) {
            Ok(cost) => highest_cost = highest_cost.max(Some(cost)),
            Err(why) => c.report(at, why),
        }
        users.insert(user.clone(), hash.clone());
    }
    guards.basic_auth = !users.is_empty();

    let rate_limit = (sections.rate_limit.as_ref()).and_then(|(limit, at)| {
        rate_limit::RateLimit::from_file(limit)
            .map_err(|problems| report_under(&mut c, at, problems))
            .ok()
            .flatten()
    });

    c.finish(())
        .map_err(|problems| fail(problems.into_iter().map(Problem::from).collect()))?;
    Ok(WebConfig {
        tls,
        headers,
        dummy_hash: highest_cost.map(auth::dummy_hash).unwrap_or_default(),
        users,
        rate_limit,
        guards,
        snapshot: used.clone(),
    })
}

/// Reports the problems a section's check found (each naming one of its keys, or none) on the
/// line of that key, or of the section when the key is not written.
fn report_under(c: &mut Checker, section: &Field, problems: Vec<Problem>) {
    for problem in problems {
        let node = (section.node.get(&problem.field)).unwrap_or(section.node);
        let path = match problem.field.is_empty() {
            true => section.path.clone(),
            false => format!("{}.{}", section.path, problem.field),
        };
        c.report_at(&path, node, problem.message);
    }
}

fn check_headers(c: &mut Checker, written: &[file::Entry]) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::new();
    for (header, value, at) in written {
        let Some((canonical, allowed)) = ALLOWED_HEADERS
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(header))
        else {
            let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(h, _)| *h).collect();
            c.report_at(
                "http_server_config.headers",
                at.node,
                format!(
                    "{header:?} is not an allowed header (allowed: {})",
                    names.join(", ")
                ),
            );
            continue;
        };
        let field = format!("http_server_config.headers.{canonical}");
        if let Some(values) = allowed {
            if !values.iter().any(|v| v.eq_ignore_ascii_case(value)) {
                c.report_at(
                    &field,
                    at.node,
                    format!("{value:?} is not allowed (one of: {})", values.join(", ")),
                );
                continue;
            }
        }
        match HeaderValue::from_str(value) {
            // The allowed names are valid header names in any case.
            Ok(v) => match HeaderName::from_bytes(canonical.as_bytes()) {
                Ok(name) => headers.push((name, v)),
                Err(e) => c.report_at(&field, at.node, e.to_string()),
            },
            Err(_) => c.report_at(
                &field,
                at.node,
                format!("{value:?} is not a valid header value"),
            ),
        }
    }
    // In one order whatever the file's, as before.
    headers.sort_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
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
        let placed = Problem {
            line: Some(7),
            ..Problem::new("basic_auth_users.alice", "bad")
        };
        assert_eq!(
            format_problem(file, &placed),
            "/etc/web.yml:7: basic_auth_users.alice: bad"
        );
        let syntax = Problem {
            line: Some(2),
            ..Problem::new("", "did not find expected key")
        };
        assert_eq!(
            format_problem(file, &syntax),
            "/etc/web.yml:2: did not find expected key"
        );
    }

    #[test]
    fn bad_files_name_the_field() {
        let cases = [
            (
                "nonsense: 1\n",
                "/etc/web.yml:1: nonsense: unknown field `nonsense`, expected one of `tls_server_config`, `http_server_config`, `basic_auth_users`, `rate_limit`",
            ),
            (
                "basic_auth_users:\n  alice: plaintext\n",
                "/etc/web.yml:2: basic_auth_users.alice: not a bcrypt hash",
            ),
            (
                "http_server_config:\n  headers:\n    X-Powered-By: me\n",
                "/etc/web.yml:3: http_server_config.headers: \"X-Powered-By\" is not an allowed header",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "/etc/web.yml:3: http_server_config.headers.X-Frame-Options: \"allow\" is not allowed",
            ),
            (
                "tls_server_config:\n  cert_file: /nonexistent/c.pem\n  key_file: /nonexistent/k.pem\n",
                "/etc/web.yml:2: tls_server_config.cert_file: cannot read \"/nonexistent/c.pem\"",
            ),
            (
                "tls_server_config:\n  key_file: k.pem\n",
                "/etc/web.yml:1: tls_server_config.cert_file: required",
            ),
            (
                "tls_server_config:\n  unknown_key: 1\n",
                "/etc/web.yml:2: tls_server_config.unknown_key: unknown field `unknown_key`, expected one of `cert_file`, `key_file`, `cert`, `key`, `client_auth_type`",
            ),
            (
                "basic_auth_users: [a, b]\n",
                "/etc/web.yml:1: basic_auth_users: invalid type: a list, expected a mapping of names to strings",
            ),
            (
                "rate_limit:\n  interval: soon\n  burst: 1\n",
                "/etc/web.yml:2: rate_limit.interval: \"soon\" is not a duration",
            ),
            (
                "rate_limit:\n  interval: 1s\n  burst: 0\n",
                "/etc/web.yml:3: rate_limit.burst: 0 admits no request at all",
            ),
            (
                "- a list\n",
                "/etc/web.yml: invalid type: a list, expected a mapping",
            ),
            (
                "tls_server_config:\n  cert_file: [a]\n  prefer_server_cipher_suites: yes\n",
                "/etc/web.yml:2: tls_server_config.cert_file: invalid type: a list, expected a string\n/etc/web.yml:3: tls_server_config.prefer_server_cipher_suites: invalid type: \"yes\", expected a boolean",
            ),
            (
                "http_server_config:\n  http2: 1\n  headers: {X-Frame-Options: [deny]}\n",
                "/etc/web.yml:2: http_server_config.http2: invalid type: 1, expected a boolean\n/etc/web.yml:3: http_server_config.headers.X-Frame-Options: invalid type: a list, expected a string",
            ),
            (
                "basic_auth_users:\n  alice: x\n  alice: y\n",
                "/etc/web.yml:3: duplicate key \"alice\" (first at line 2)",
            ),
            (
                "tls_server_config:\n  cert_file: c\n key_file: k\n",
                "/etc/web.yml:3: ",
            ),
        ];
        for (text, want) in cases {
            let found = problems(text).join("\n");
            assert!(found.contains(want), "{text:?}: {found}");
        }
    }

    proptest::proptest! {
        /// Whatever the text, checking it never panics, and every problem is on one of its
        /// lines (or about the file as a whole).
        #[test]
        fn any_text_gives_a_config_or_placed_problems(
            text in "[-:#\\[\\]{}'\" \n a-z0-9_$.&*!|>]{0,200}|(tls_server_config|http_server_config|headers|basic_auth_users|rate_limit|interval|burst|cert_file|http2|X-Frame-Options|[ :\n\\-\\[\\]{}a-z0-9]){0,40}"
        ) {
            if let Err(err) = parse(&text, Path::new("w.yml")) {
                let last = text.split('\n').count();
                proptest::prop_assert!(!err.problems.is_empty());
                for problem in &err.problems {
                    proptest::prop_assert!(problem.line.is_none_or(|l| (1..=last).contains(&l)), "{:?}", problem);
                }
            }
        }
    }

    #[test]
    fn empty_values_are_absent_and_scalars_are_text_as_go_reads_them() {
        let config = parse(
            "tls_server_config:\nhttp_server_config:\n  headers:\n    X-XSS-Protection: 0\nbasic_auth_users:\nrate_limit:\n",
            Path::new("w.yml"),
        )
        .unwrap();
        assert!(config.tls.is_none() && config.users.is_empty() && config.rate_limit.is_none());
        assert_eq!(config.headers()[0].1, "0");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let found = problems(
            "basic_auth_users:\n  a:b: $2y$03$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi\n  bob: nope\nhttp_server_config:\n  headers:\n    Server: x\nrate_limit:\n  interval: -1s\n  burst: 1\n",
        );
        // In the order of the file.
        assert_eq!(
            found,
            [
                "/etc/web.yml:2: basic_auth_users.a:b: a user name cannot contain ':'",
                "/etc/web.yml:2: basic_auth_users.a:b: cost 3 is outside 4 to 31",
                "/etc/web.yml:3: basic_auth_users.bob: not a bcrypt hash: it must start with $2a$, $2b$, $2x$ or $2y$ (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)",
                "/etc/web.yml:6: http_server_config.headers: \"Server\" is not an allowed header (allowed: Strict-Transport-Security, X-Frame-Options, X-Content-Type-Options, X-XSS-Protection, Content-Security-Policy)",
                "/etc/web.yml:8: rate_limit.interval: \"-1s\" is negative",
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
