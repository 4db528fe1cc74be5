//! Basic auth that cannot be used to burn CPU.
//!
//! - Hashes are checked at load as Go's bcrypt reads them: version
//!   (`$2a$`, `$2b$`, `$2x$`, `$2y$`), cost 4 to 31, then 22 characters of
//!   salt and 31 of hash in bcrypt's base64 alphabet.
//! - At most one bcrypt verification runs at a time in the process
//!   ([`Gate`]). A request waits for its turn on an async semaphore, not on
//!   a blocking thread, so a request whose client went away stops waiting
//!   and leaves nothing queued; a verification that has started runs to the
//!   end on its blocking thread and its verdict is cached. Beyond
//!   [`MAX_WAITING`] waiting requests, more are turned away at once.
//! - [`Verdicts`] keeps the last [`CACHE_SIZE`] verdicts, right and wrong,
//!   by a keyed hash of user, password and stored hash (as exporter-toolkit
//!   keeps 100), so repeats cost no bcrypt. A flood of wrong passwords
//!   evicts wrong verdicts first, so it cannot push out the right one.

use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use tokio::sync::Semaphore;

/// Verdicts kept, as exporter-toolkit keeps.
pub(crate) const CACHE_SIZE: usize = 100;

/// Requests that may wait for a bcrypt verification at once; more are
/// answered at once (429) rather than held, each keeping a connection.
pub(crate) const MAX_WAITING: usize = 64;

const HOW_TO_HASH: &str = "make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`";

/// Check a bcrypt hash as Go's `bcrypt.Cost` and `CompareHashAndPassword`
/// read it; its cost, or what is wrong.
pub(crate) fn check_hash(hash: &str) -> Result<u32, String> {
    let bytes = hash.as_bytes();
    let version_ok = bytes.len() >= 4
        && bytes[0] == b'$'
        && bytes[1] == b'2'
        && matches!(bytes[2], b'a' | b'b' | b'x' | b'y')
        && bytes[3] == b'$';
    if !version_ok {
        return Err(format!(
            "not a bcrypt hash: it must start with $2a$, $2b$, $2x$ or $2y$ ({HOW_TO_HASH})"
        ));
    }
    let rest = &hash[4..];
    let cost = rest
        .get(..3)
        .filter(|c| c.as_bytes()[..2].iter().all(u8::is_ascii_digit) && c.ends_with('$'))
        .and_then(|c| c[..2].parse::<u32>().ok())
        .ok_or_else(|| {
            format!(
                "not a bcrypt hash: the cost must be two digits between $ signs ({HOW_TO_HASH})"
            )
        })?;
    if !(4..=31).contains(&cost) {
        return Err(format!("cost {cost} is outside 4 to 31"));
    }
    let encoded = &rest[3..];
    if !encoded.is_ascii() {
        return Err("salt and hash must be in bcrypt's base64 alphabet".into());
    }
    if encoded.len() != 53 {
        return Err(format!(
            "salt and hash must be 53 characters after the cost, found {}",
            encoded.len()
        ));
    }
    let (salt, digest) = encoded.split_at(22);
    match bcrypt::BASE_64.decode(salt) {
        Ok(decoded) if decoded.len() == 16 => {}
        _ => {
            return Err("the salt (22 characters after the cost) is not in bcrypt's base64".into())
        }
    }
    match bcrypt::BASE_64.decode(digest) {
        Ok(decoded) if decoded.len() == 23 => {}
        _ => return Err("the hash (last 31 characters) is not in bcrypt's base64".into()),
    }
    Ok(cost)
}

/// A hash of a password nobody sends, at `cost`: what an unknown user's
/// password is checked against.
pub(crate) fn dummy_hash(cost: u32) -> String {
    // The cost was checked, so this does not fail; if it did, the
    // toolkit's cost-10 dummy still rejects every password.
    bcrypt::hash("dke-web: the password of no user", cost).unwrap_or_else(|_| {
        "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi".to_string()
    })
}

/// User and password of a `Basic` authorization header value.
pub(crate) fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Recent verdicts by key, at most [`CACHE_SIZE`].
#[derive(Debug, Default)]
pub(crate) struct Verdicts {
    entries: Vec<Verdict>,
    clock: u64,
}

#[derive(Debug)]
struct Verdict {
    key: u64,
    ok: bool,
    used: u64,
}

impl Verdicts {
    /// The verdict for `key`, if cached (and mark it recently used).
    pub(crate) fn get(&mut self, key: u64) -> Option<bool> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.iter_mut().find(|v| v.key == key).map(|v| {
            v.used = clock;
            v.ok
        })
    }

    /// Remember a verdict. When full, the least recently used wrong verdict
    /// goes, or the least recently used one if all are right.
    pub(crate) fn insert(&mut self, key: u64, ok: bool) {
        self.clock += 1;
        let used = self.clock;
        if let Some(v) = self.entries.iter_mut().find(|v| v.key == key) {
            *v = Verdict { key, ok, used };
            return;
        }
        if self.entries.len() >= CACHE_SIZE {
            let victim = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, v)| (v.ok, v.used))
                .map(|(i, _)| i);
            if let Some(i) = victim {
                self.entries.swap_remove(i);
            }
        }
        self.entries.push(Verdict { key, ok, used });
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Where bcrypt verifications take turns: one at a time, at most
/// [`MAX_WAITING`] waiting.
#[derive(Debug)]
pub(crate) struct Gate {
    turn: Semaphore,
    waiting: AtomicUsize,
}

/// The process's gate.
pub(crate) static GATE: Gate = Gate::new();

/// A place in the gate's queue, given back when dropped (also when the
/// request waiting in it is dropped).
pub(crate) struct Waiting<'a>(&'a Gate);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    pub(crate) const fn new() -> Self {
        Gate {
            turn: Semaphore::const_new(1),
            waiting: AtomicUsize::new(0),
        }
    }

    /// A place in the queue, unless [`MAX_WAITING`] requests already wait.
    pub(crate) fn enter(&self) -> Option<Waiting<'_>> {
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let place = Waiting(self);
        (before < MAX_WAITING).then_some(place)
    }

    /// Wait for the turn: the one permit to run bcrypt.
    pub(crate) async fn turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.turn
            .acquire()
            .await
            .expect("the gate's semaphore is never closed")
    }

    /// Requests waiting now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Whether a verification is running now.
    #[cfg(test)]
    pub(crate) fn busy(&self) -> bool {
        self.turn.available_permits() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_checked_as_go_reads_them() {
        let good = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
        assert_eq!(check_hash(good), Ok(10));
        for version in ["2a", "2b", "2x"] {
            let other = good.replacen("2y", version, 1);
            assert_eq!(check_hash(&other), Ok(10), "{other}");
        }
        let cases = [
            ("plaintext", "must start with $2a$"),
            ("", "must start with $2a$"),
            (&good.replacen("$2y", "$3y", 1), "must start with $2a$"),
            (&good.replacen("$2y", "$2z", 1), "must start with $2a$"),
            (&good.replacen("$10$", "$1$", 1), "two digits"),
            (&good.replacen("$10$", "$1x$", 1), "two digits"),
            (
                &good.replacen("$10$", "$03$", 1),
                "cost 3 is outside 4 to 31",
            ),
            (
                &good.replacen("$10$", "$32$", 1),
                "cost 32 is outside 4 to 31",
            ),
            (&good[..59], "53 characters after the cost, found 52"),
            (&format!("{good}x"), "found 54"),
            (&good.replacen("QOau", "QO!u", 1), "the salt"),
            (&good.replacen("LDeSi", "LDe*i", 1), "the hash"),
            (&good.replacen("LDeSi", "LDeé", 1), "alphabet"),
        ];
        for (hash, want) in cases {
            let err = check_hash(hash).unwrap_err();
            assert!(err.contains(want), "{hash:?}: {err}");
        }
        // What the check accepts, the bcrypt crate can verify.
        let made = bcrypt::hash("pw", 4).unwrap();
        assert_eq!(check_hash(&made), Ok(4));
        assert!(bcrypt::verify("pw", &made).unwrap());
    }

    #[test]
    fn the_dummy_hash_has_the_cost_asked_for_and_matches_nothing_sent() {
        let hash = dummy_hash(5);
        assert_eq!(check_hash(&hash), Ok(5));
        assert!(!bcrypt::verify("", &hash).unwrap());
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
        assert_eq!(parse_basic("Basic"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_user_and_password_round_trip(user in "[^:]{0,20}", password in ".{0,40}") {
            let header = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            );
            proptest::prop_assert_eq!(parse_basic(&header), Some((user, password)));
        }

        #[test]
        fn no_header_value_panics(value in ".{0,80}") {
            let _ = parse_basic(&value);
        }
    }

    #[test]
    fn a_flood_of_wrong_verdicts_keeps_the_right_one() {
        let mut verdicts = Verdicts::default();
        verdicts.insert(1, true);
        for key in 100..10_000 {
            verdicts.insert(key, false);
            assert!(verdicts.len() <= CACHE_SIZE);
        }
        assert_eq!(verdicts.get(1), Some(true));
        assert_eq!(verdicts.get(9_999), Some(false));
        assert_eq!(verdicts.get(100), None, "the oldest wrong one went");
        // All right: the least recently used right one goes.
        let mut verdicts = Verdicts::default();
        for key in 0..CACHE_SIZE as u64 {
            verdicts.insert(key, true);
        }
        assert_eq!(verdicts.get(0), Some(true));
        verdicts.insert(1_000, true);
        assert_eq!(verdicts.get(1), None);
        assert_eq!(verdicts.get(0), Some(true));
        // A key's verdict is replaced, not repeated.
        verdicts.insert(0, false);
        assert_eq!(verdicts.get(0), Some(false));
        assert_eq!(verdicts.len(), CACHE_SIZE);
        verdicts.clear();
        assert_eq!(verdicts.get(0), None);
    }

    #[test]
    fn the_gate_holds_at_most_max_waiting() {
        let gate = Gate::new();
        let places: Vec<_> = (0..MAX_WAITING).map(|_| gate.enter()).collect();
        assert!(places.iter().all(Option::is_some));
        assert!(gate.enter().is_none());
        assert_eq!(gate.waiting(), MAX_WAITING);
        drop(places);
        assert_eq!(gate.waiting(), 0);
        assert!(gate.enter().is_some());
        assert_eq!(gate.waiting(), 0);
    }
}
