//! The status page's sign-ins: a token presented once buys a session, held in a cookie
//! (HttpOnly, SameSite=Strict) and in memory here, with its own secret for the page's forms
//! (the CSRF token). Time is passed in; nothing here reads a clock.
//!
//! Sessions live in memory only: a restart signs everyone out, which is the safe way round. A
//! session is kept by the SHA-256 of its cookie, so what is held here cannot be replayed as a
//! cookie, and it lasts at most [`MAX_AGE_SECS`], or [`IDLE_SECS`] without a request.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

/// A session unused this long is over: a night's on-call shift with the page open refreshes
/// it, a laptop left at the office does not keep it.
pub const IDLE_SECS: f64 = 8.0 * 3600.0;
/// A session is over this long after sign-in, used or not.
pub const MAX_AGE_SECS: f64 = 24.0 * 3600.0;
/// Sessions one token holds at once (browsers, tabs' sign-ins); a sign-in past it ends that
/// token's session unused longest. Per token, so that no token (the agent's, signing in in a
/// loop) can end another's sessions, and memory stays bounded: tokens are few.
pub const MAX_PER_TOKEN: usize = 16;

/// One signed-in browser.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    /// Which of the API's tokens signed in: the session acts with its role and its limits.
    pub token: usize,
    /// The secret every form of the page carries back (`csrf`), compared in constant time.
    pub csrf: String,
    signed_in: f64,
    seen: f64,
}

impl Session {
    fn live(&self, now: f64) -> bool {
        now - self.signed_in < MAX_AGE_SECS && now - self.seen < IDLE_SECS
    }
}

#[derive(Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    /// Opens a session for `token`: the cookie's value, and the session.
    pub fn open(&self, token: usize, now: f64) -> (String, Session) {
        let cookie = secret();
        let session = Session {
            token,
            csrf: secret(),
            signed_in: now,
            seen: now,
        };
        let mut held = self.held();
        held.retain(|_, s| s.live(now));
        let mine = held.values().filter(|s| s.token == token).count();
        if mine >= MAX_PER_TOKEN {
            let oldest = held
                .iter()
                .filter(|(_, s)| s.token == token)
                .min_by(|a, b| a.1.seen.total_cmp(&b.1.seen))
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                held.remove(&k);
            }
        }
        held.insert(digest(&cookie), session.clone());
        (cookie, session)
    }

    /// The live session this cookie's value belongs to, marked as used at `now`.
    pub fn find(&self, cookie: &str, now: f64) -> Option<Session> {
        let key = digest(cookie);
        let mut held = self.held();
        match held.get_mut(&key) {
            Some(s) if s.live(now) => {
                s.seen = now;
                Some(s.clone())
            }
            Some(_) => {
                held.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session of this cookie's value, if there is one.
    pub fn close(&self, cookie: &str) {
        self.held().remove(&digest(cookie));
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.by_hash.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// 32 random bytes from the operating system, URL-safe.
fn secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

/// Whether `a` and `b` are equal, compared without an early exit (a form's CSRF token).
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_764_000_000.0;

    #[test]
    fn a_session_is_found_by_its_cookie_and_by_nothing_else() {
        let sessions = Sessions::default();
        let (cookie, session) = sessions.open(2, T0);
        assert_eq!(sessions.find(&cookie, T0 + 1.0).unwrap().token, 2);
        assert_eq!(session.csrf.len(), 43, "32 bytes, base64url");
        assert_ne!(cookie, session.csrf);
        assert!(sessions.find(&session.csrf, T0 + 1.0).is_none());
        assert!(sessions.find("", T0 + 1.0).is_none());
        let (other, _) = sessions.open(2, T0);
        assert_ne!(cookie, other, "each sign-in gets a cookie of its own");
    }

    #[test]
    fn a_session_ends_when_idle_too_long_or_too_old_or_signed_out() {
        let sessions = Sessions::default();
        let (idle, _) = sessions.open(0, T0);
        assert!(sessions.find(&idle, T0 + IDLE_SECS + 1.0).is_none());
        assert!(
            sessions.find(&idle, T0 + 2.0).is_none(),
            "an expired session is gone"
        );

        let (used, _) = sessions.open(0, T0);
        let mut t = T0;
        while t + 3600.0 < T0 + MAX_AGE_SECS {
            t += 3600.0;
            assert!(
                sessions.find(&used, t).is_some(),
                "used hourly, alive at {t}"
            );
        }
        assert!(sessions.find(&used, T0 + MAX_AGE_SECS).is_none());

        let (out, _) = sessions.open(0, T0);
        sessions.close(&out);
        assert!(sessions.find(&out, T0).is_none());
    }

    #[test]
    fn past_its_limit_a_token_s_sign_in_ends_its_own_session_unused_longest_and_no_other() {
        let sessions = Sessions::default();
        let (approver, _) = sessions.open(1, T0);
        let (first, _) = sessions.open(0, T0);
        let (second, _) = sessions.open(0, T0 + 1.0);
        sessions.find(&first, T0 + 2.0);
        // The agent's token signs in again and again.
        for i in 0..1000 {
            sessions.open(0, T0 + 3.0 + f64::from(i));
        }
        assert_eq!(sessions.held().len(), MAX_PER_TOKEN + 1);
        assert!(sessions.find(&second, T0 + 2000.0).is_none());
        assert!(
            sessions.find(&approver, T0 + 2000.0).is_some(),
            "another token's session is never ended by this one's sign-ins"
        );
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", "a"));
    }
}
