//! The running web config: what the server (TLS) and the routes
//! (authentication, rate limit, headers) ask, and its reloads.
//!
//! A reload fails closed. [`WebState::watch`] reads the file and the files
//! it names every [`RELOAD_CHECK_INTERVAL`] and compares the bytes with the
//! version it last parsed: nothing is parsed (and nothing logged) while
//! they are the same. A change is parsed only once two consecutive reads
//! agree, so a file caught half-written is never applied; a version that
//! is invalid, or that would turn off TLS, verified client certificates,
//! `client_allowed_sans` or basic auth, is refused (logged, and reported to
//! the caller's `on_reload`), and the running one stays. Turning those off
//! needs a restart.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::auth::{self, Gate, Verdicts, GATE};
use super::rate_limit::Bucket;
use super::{from_snapshot, Snapshot, WebConfig};

/// How often [`WebState::watch`] reads the files.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No users are configured, or the credentials are right.
    Allowed,
    /// Credentials missing or wrong: answer 401 with `WWW-Authenticate`.
    Denied,
    /// Too many requests wait for a password check: answer 429 without
    /// checking.
    Busy,
}

/// The running web config, shared by the server (TLS) and the routes
/// (authentication, rate limit, headers).
pub struct WebState {
    path: Option<PathBuf>,
    current: RwLock<Arc<WebConfig>>,
    tls: watch::Sender<Option<Arc<rustls::ServerConfig>>>,
    /// Recent verdicts by a keyed hash of (user, password, stored hash).
    verdicts: Arc<Mutex<Verdicts>>,
    hasher: RandomState,
    gate: &'static Gate,
    bucket: Mutex<Option<Bucket>>,
    last_reload_ok: AtomicBool,
}

impl WebState {
    /// A state serving `config`, read from `path` (`None`: nothing to
    /// reload).
    pub fn new(config: WebConfig, path: Option<PathBuf>) -> Self {
        let (tls, _) = watch::channel(config.tls.clone());
        WebState {
            path,
            tls,
            verdicts: Arc::new(Mutex::new(Verdicts::default())),
            hasher: RandomState::new(),
            gate: &GATE,
            bucket: Mutex::new(config.rate_limit.map(Bucket::new)),
            current: RwLock::new(Arc::new(config)),
            last_reload_ok: AtomicBool::new(true),
        }
    }

    /// No TLS, no users, no headers, no rate limit.
    pub fn plain() -> Self {
        WebState::new(WebConfig::plain(), None)
    }

    /// The same, with its own bcrypt gate rather than the process's (tests
    /// that count waiting requests).
    #[cfg(test)]
    pub(crate) fn with_gate(config: WebConfig, gate: &'static Gate) -> Self {
        WebState {
            gate,
            ..WebState::new(config, None)
        }
    }

    /// The running config.
    pub fn current(&self) -> Arc<WebConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// TLS settings for the server, following reloads.
    pub fn tls_source(&self) -> watch::Receiver<Option<Arc<rustls::ServerConfig>>> {
        self.tls.subscribe()
    }

    /// Requests waiting for their password check (in the whole process).
    pub fn auth_queue_len(&self) -> usize {
        self.gate.waiting()
    }

    /// Whether the last reload was applied (`true` until one is refused).
    pub fn last_reload_successful(&self) -> bool {
        self.last_reload_ok.load(Ordering::Acquire)
    }

    /// Take a token from the `rate_limit` bucket: `Err` with how long until
    /// the next one when there is none (answer 429). Always `Ok` without a
    /// limit.
    pub fn admit(&self) -> Result<(), Duration> {
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        match bucket.as_mut() {
            Some(bucket) => bucket.take(),
            None => Ok(()),
        }
    }

    /// Check an `Authorization` header value against the users.
    pub async fn authorize(&self, authorization: Option<&str>) -> Auth {
        let config = self.current();
        if config.users.is_empty() {
            return Auth::Allowed;
        }
        let Some((user, password)) = authorization.and_then(auth::parse_basic) else {
            return Auth::Denied;
        };
        // Unknown users are checked against a hash of the same cost, so
        // their answer takes as long; their verdict is always no.
        let (hash, known) = match config.users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (config.dummy_hash.clone(), false),
        };
        let key = self.hasher.hash_one((&user, &password, &hash));
        if let Some(ok) = self.cached(key) {
            return verdict(ok);
        }
        let Some(place) = self.gate.enter() else {
            return Auth::Busy;
        };
        // Dropping this future (the client went away) leaves the queue.
        let turn = self.gate.turn().await;
        drop(place);
        // The same credentials may have been checked while this waited.
        if let Some(ok) = self.cached(key) {
            return verdict(ok);
        }
        let verdicts = Arc::clone(&self.verdicts);
        // The turn goes with the check: if this request is dropped now, the
        // check still runs to the end, is cached, and only then lets the
        // next one start.
        let check = tokio::task::spawn_blocking(move || {
            let ok = bcrypt::verify(password, &hash).unwrap_or(false) && known;
            verdicts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key, ok);
            drop(turn);
            ok
        });
        match check.await {
            Ok(ok) => verdict(ok),
            Err(err) => {
                tracing::error!(error = %err, "password check failed");
                Auth::Denied
            }
        }
    }

    fn cached(&self, key: u64) -> Option<bool> {
        self.verdicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
    }

    /// Apply `config` as a reload: refused, with the reason, when it would
    /// turn off a guard the running config has.
    pub(crate) fn reload(&self, config: WebConfig) -> Result<(), String> {
        let dropped = self.current().guards.dropped_by(&config.guards);
        if !dropped.is_empty() {
            return Err(format!(
                "it would turn off {}; that needs a restart",
                dropped.join(", ")
            ));
        }
        self.swap(config);
        Ok(())
    }

    /// Replace the running config.
    fn swap(&self, config: WebConfig) {
        self.tls.send_replace(config.tls.clone());
        {
            let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
            if bucket.as_ref().map(Bucket::limit) != config.rate_limit {
                *bucket = config.rate_limit.map(Bucket::new);
            }
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        self.verdicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Follow the file until `stop` resolves (see the module doc).
    /// `on_reload` hears the outcome of every reload attempt: `true`
    /// applied, `false` refused or invalid.
    pub async fn watch(
        self: Arc<Self>,
        stop: impl std::future::Future<Output = ()>,
        on_reload: impl Fn(bool),
    ) {
        let Some(path) = self.path.clone() else {
            return;
        };
        tokio::pin!(stop);
        // The version last parsed, applied or not, and the files it names.
        let mut last = self.current().snapshot.clone();
        let mut names = last.names();
        // A changed version read once, waiting for a second equal read.
        let mut pending: Option<Snapshot> = None;
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(RELOAD_CHECK_INTERVAL) => {}
            }
            let read = {
                let (path, names) = (path.clone(), names.clone());
                tokio::task::spawn_blocking(move || Snapshot::read(&path, &names))
            };
            let fresh = match read.await {
                Ok(fresh) => fresh,
                Err(err) => {
                    tracing::error!(error = %err, "reading the web config failed");
                    continue;
                }
            };
            if fresh == last {
                pending = None;
                continue;
            }
            if pending.as_ref() != Some(&fresh) {
                pending = Some(fresh);
                continue;
            }
            pending = None;
            let parse = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || from_snapshot(&path, &fresh))
            };
            let (result, used) = match parse.await {
                Ok(parsed) => parsed,
                Err(err) => {
                    tracing::error!(error = %err, "checking the web config failed");
                    continue;
                }
            };
            // It names files these reads did not cover: read those twice
            // as well before using them (this read counts as the first).
            let unread = used.named.keys().any(|name| !names.contains(name));
            names = used.names();
            if unread {
                pending = Some(used);
                continue;
            }
            last = used;
            let outcome = match result {
                Ok(config) => self.reload(config).map_err(|why| {
                    format!("web config reload refused: {why}; keeping the running one")
                }),
                Err(err) => Err(format!(
                    "web config changed but is invalid; keeping the running one:\n{err}"
                )),
            };
            match &outcome {
                Ok(()) => tracing::info!(path = %path.display(), "web config reloaded"),
                Err(text) => tracing::error!(path = %path.display(), "{text}"),
            }
            self.last_reload_ok
                .store(outcome.is_ok(), Ordering::Release);
            on_reload(outcome.is_ok());
        }
    }
}

fn verdict(ok: bool) -> Auth {
    if ok {
        Auth::Allowed
    } else {
        Auth::Denied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web_config::auth::MAX_WAITING;
    use crate::web_config::parse;
    use base64::Engine as _;
    use std::path::Path;

    fn header(user: &str, password: &str) -> String {
        let raw = format!("{user}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    fn users(cost: u32) -> WebConfig {
        let hash = bcrypt::hash("s3cret", cost).unwrap();
        parse(
            &format!("basic_auth_users:\n  alice: {hash}\n"),
            Path::new("w.yml"),
        )
        .unwrap()
    }

    /// A gate of the test's own, so other tests' checks do not count.
    fn own_gate() -> &'static Gate {
        Box::leak(Box::new(Gate::new()))
    }

    /// Wait (bounded) until `done` holds.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn basic_auth_checks_user_and_password_and_caches_both_verdicts() {
        let state = WebState::with_gate(users(4), own_gate());
        let cases = [
            (Some(header("alice", "s3cret")), Auth::Allowed),
            (Some(header("alice", "s3cret")), Auth::Allowed),
            (Some(header("alice", "wrong")), Auth::Denied),
            (Some(header("mallory", "s3cret")), Auth::Denied),
            (Some("Bearer x".to_string()), Auth::Denied),
            (None, Auth::Denied),
        ];
        for (authorization, want) in cases {
            assert_eq!(
                state.authorize(authorization.as_deref()).await,
                want,
                "{authorization:?}"
            );
        }
        // Right, wrong and unknown-user verdicts are all kept.
        assert_eq!(state.verdicts.lock().unwrap().len(), 3);
        assert_eq!(WebState::plain().authorize(None).await, Auth::Allowed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_check_at_a_time_and_abandoned_requests_leave_nothing_queued() {
        // Cost 9 takes tens of milliseconds even in a release build, long
        // enough to see the queue.
        let gate = own_gate();
        let state = Arc::new(WebState::with_gate(users(9), gate));
        let waiters: Vec<_> = (0..6)
            .map(|i| {
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    state
                        .authorize(Some(&header("alice", &format!("guess{i}"))))
                        .await
                })
            })
            .collect();
        until("one check runs and five wait", || {
            gate.busy() && gate.waiting() == 5
        })
        .await;
        // Every client goes away (hyper drops a request's future when its
        // connection closes).
        for waiter in &waiters {
            waiter.abort();
        }
        for waiter in waiters {
            assert!(waiter.await.unwrap_err().is_cancelled());
        }
        assert_eq!(gate.waiting(), 0, "nothing is left queued");
        // The check that had started finishes and is cached; no other runs.
        until("the running check ends", || !gate.busy()).await;
        assert_eq!(state.verdicts.lock().unwrap().len(), 1);
        assert_eq!(gate.waiting(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_turns_requests_away_at_once() {
        let gate = own_gate();
        let state = Arc::new(WebState::with_gate(users(4), gate));
        // Hold the turn, as a long check would.
        let turn = gate.turn().await;
        let waiters: Vec<_> = (0..MAX_WAITING)
            .map(|i| {
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    state
                        .authorize(Some(&header("alice", &format!("guess{i}"))))
                        .await
                })
            })
            .collect();
        until("the queue is full", || gate.waiting() == MAX_WAITING).await;
        assert_eq!(
            state.authorize(Some(&header("alice", "one more"))).await,
            Auth::Busy
        );
        drop(turn);
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap(), Auth::Denied);
        }
        // A cached verdict needs no place in the queue.
        let _turn = gate.turn().await;
        assert_eq!(
            state.authorize(Some(&header("alice", "guess0"))).await,
            Auth::Denied
        );
    }

    /// A self-signed certificate and key for `localhost`, PEM.
    fn cert_files(dir: &Path) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("c.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.join("k.pem"), made.signing_key.serialize_pem()).unwrap();
    }

    const TLS: &str = "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n";

    #[test]
    fn a_reload_may_not_turn_off_tls_or_every_user() {
        let dir = tempfile::tempdir().unwrap();
        cert_files(dir.path());
        let path = dir.path().join("w.yml");
        let hash = bcrypt::hash("x", 4).unwrap();
        let both = format!("{TLS}basic_auth_users:\n  alice: {hash}\n");
        let state = WebState::new(parse(&both, &path).unwrap(), None);
        let refused = [
            ("", "TLS, basic auth (every user removed)"),
            (TLS, "basic auth (every user removed)"),
            (&format!("basic_auth_users:\n  bob: {hash}\n"), "TLS"),
        ];
        for (text, dropped) in refused {
            let err = state.reload(parse(text, &path).unwrap()).unwrap_err();
            assert_eq!(
                err,
                format!("it would turn off {dropped}; that needs a restart"),
                "{text:?}"
            );
            assert!(state.current().tls().is_some());
            assert_eq!(state.current().users().collect::<Vec<_>>(), ["alice"]);
        }
        // Other users, or more guards, are fine.
        let bob = format!("{TLS}basic_auth_users:\n  bob: {hash}\n");
        state.reload(parse(&bob, &path).unwrap()).unwrap();
        assert_eq!(state.current().users().collect::<Vec<_>>(), ["bob"]);
        let plain = WebState::plain();
        plain.reload(parse(&both, &path).unwrap()).unwrap();
        assert!(plain.current().tls().is_some());
        assert!(plain.tls_source().borrow().is_some());
    }

    /// Run the watcher on `state`; returns the outcomes it reported.
    fn watch(
        state: &Arc<WebState>,
    ) -> (Arc<Mutex<Vec<bool>>>, tokio_util::sync::CancellationToken) {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let seen = Arc::clone(&outcomes);
        tokio::spawn(
            Arc::clone(state).watch(stop.clone().cancelled_owned(), move |ok| {
                seen.lock().unwrap().push(ok)
            }),
        );
        (outcomes, stop)
    }

    /// Let the watcher read `n` times (time is paused; it does not
    /// advance while the watcher's reads run on blocking threads).
    async fn ticks(n: u32) {
        for _ in 0..n {
            tokio::time::sleep(RELOAD_CHECK_INTERVAL).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_is_applied_after_two_equal_reads_and_a_torn_file_never() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yml");
        let hash = bcrypt::hash("x", 4).unwrap();
        let alice = format!("basic_auth_users:\n  alice: {hash}\n");
        std::fs::write(&path, &alice).unwrap();
        let state = Arc::new(WebState::new(
            crate::web_config::load(&path).unwrap(),
            Some(path.clone()),
        ));
        let (outcomes, stop) = watch(&state);
        // Truncated for about one read, then whole again: never applied,
        // never even parsed.
        ticks(1).await;
        std::fs::write(&path, "").unwrap();
        ticks(1).await;
        std::fs::write(&path, &alice).unwrap();
        ticks(4).await;
        assert!(outcomes.lock().unwrap().is_empty());
        assert!(state.last_reload_successful());
        // A real change: applied once two reads agree.
        std::fs::write(&path, format!("{alice}  bob: {hash}\n")).unwrap();
        ticks(3).await;
        assert_eq!(*outcomes.lock().unwrap(), [true]);
        assert_eq!(
            state.current().users().collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_or_invalid_version_is_reported_once_and_the_old_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        cert_files(dir.path());
        let path = dir.path().join("w.yml");
        let hash = bcrypt::hash("x", 4).unwrap();
        let whole = format!("{TLS}basic_auth_users:\n  alice: {hash}\n");
        std::fs::write(&path, &whole).unwrap();
        let state = Arc::new(WebState::new(
            crate::web_config::load(&path).unwrap(),
            Some(path.clone()),
        ));
        let (outcomes, stop) = watch(&state);
        // Emptied for good (not only caught half-written): refused, once.
        std::fs::write(&path, "").unwrap();
        ticks(6).await;
        assert_eq!(*outcomes.lock().unwrap(), [false]);
        assert!(!state.last_reload_successful());
        assert!(state.current().tls().is_some());
        assert!(state.tls_source().borrow().is_some());
        // Invalid: refused after two reads, once.
        std::fs::write(&path, "typo: 1\n").unwrap();
        ticks(2).await;
        assert_eq!(*outcomes.lock().unwrap(), [false, false]);
        ticks(4).await;
        assert_eq!(*outcomes.lock().unwrap(), [false, false]);
        // Whole again.
        std::fs::write(&path, &whole).unwrap();
        ticks(3).await;
        assert_eq!(*outcomes.lock().unwrap(), [false, false, true]);
        assert!(state.last_reload_successful());
        // A new certificate in the named files alone is a change too.
        let before = state.tls_source().borrow().clone().unwrap();
        cert_files(dir.path());
        ticks(3).await;
        assert_eq!(*outcomes.lock().unwrap(), [false, false, true, true]);
        let after = state.tls_source().borrow().clone().unwrap();
        assert!(!Arc::ptr_eq(&before, &after));
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_version_naming_other_files_waits_for_two_reads_of_them() {
        let dir = tempfile::tempdir().unwrap();
        cert_files(dir.path());
        let path = dir.path().join("w.yml");
        std::fs::write(&path, TLS).unwrap();
        let state = Arc::new(WebState::new(
            crate::web_config::load(&path).unwrap(),
            Some(path.clone()),
        ));
        let (outcomes, stop) = watch(&state);
        // New files, and a file naming them.
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.path().join("c2.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.path().join("k2.pem"), made.signing_key.serialize_pem()).unwrap();
        std::fs::write(
            &path,
            "tls_server_config:\n  cert_file: c2.pem\n  key_file: k2.pem\n",
        )
        .unwrap();
        ticks(2).await;
        assert!(
            outcomes.lock().unwrap().is_empty(),
            "the new files were read once"
        );
        ticks(2).await;
        assert_eq!(*outcomes.lock().unwrap(), [true]);
        assert_eq!(
            state.current().snapshot.names(),
            [dir.path().join("c2.pem"), dir.path().join("k2.pem")]
        );
        stop.cancel();
    }
}
