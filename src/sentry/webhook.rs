//! Is this delivery from Sentry, and new? Sentry's integration platform signs each webhook
//! with HMAC-SHA256 of the raw body under the integration's client secret, hex in
//! `Sentry-Hook-Signature`, and says when it sent it in `Sentry-Hook-Timestamp` (unix seconds)
//! and which delivery it is in `Request-ID`.
//!
//! Neither the timestamp nor the request id is signed, so they keep out only honest retries
//! and stale deliveries; what keeps out a replay is the body itself: its SHA-256 is remembered
//! for [`REPLAY_WINDOW_SECS`], and an event older than that is refused by its own (signed)
//! time (`payload`).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// How long an event's delivery (`error`, `event_alert`) is remembered, so that the same body
/// is processed once; an event whose own (signed) time is older than this is refused as stale.
pub const REPLAY_WINDOW_SECS: f64 = 86_400.0;

/// How long an `issue` delivery is remembered: issue deliveries are few (one per change of
/// state), and one whose issue was last seen longer ago than this is refused as stale, so a
/// captured delivery can never be replayed to put an issue back as it was.
pub const ISSUE_REPLAY_WINDOW_SECS: f64 = 90.0 * 86_400.0;

/// How far ahead of guardian's clock an event's own time may be (Sentry's clock, the app's).
pub const EVENT_FUTURE_SECS: f64 = 3600.0;

/// How far ahead of guardian's clock a delivery may say it was sent (clocks drift).
const FUTURE_SKEW_SECS: f64 = 60.0;

/// The headers a delivery comes with, as sent (`None`: absent or not text).
#[derive(Clone, Copy, Debug, Default)]
pub struct Headers<'a> {
    pub resource: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// A delivery found to come from Sentry, recently.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    /// `Sentry-Hook-Resource`: `issue`, `error`, `event_alert`, ...
    pub resource: String,
    pub request_id: Option<String>,
    /// The SHA-256 of the body, hex: what a replay is recognised by.
    pub body_sha256: String,
    /// When Sentry says it sent it.
    pub sent_at: f64,
}

/// Why a delivery was refused; the message names the header and what was wrong with it.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Refused {
    #[error(
        "missing the Sentry-Hook-Signature header: only deliveries signed with the \
             integration's client secret are accepted"
    )]
    NoSignature,
    #[error(
        "Sentry-Hook-Signature is not the HMAC-SHA256 of this body under the client secret \
         in [daemon.sentry] client_secret_file"
    )]
    BadSignature,
    #[error("missing the Sentry-Hook-Timestamp header")]
    NoTimestamp,
    #[error("Sentry-Hook-Timestamp {0:?} is not unix seconds")]
    BadTimestamp(String),
    #[error(
        "stale delivery: Sentry-Hook-Timestamp is {age:.0} s old, more than max_age_secs \
         ({max} s) in [daemon.sentry]"
    )]
    Stale { age: f64, max: u32 },
    #[error("Sentry-Hook-Timestamp is {ahead:.0} s ahead of guardian's clock")]
    Future { ahead: f64 },
    #[error("missing the Sentry-Hook-Resource header")]
    NoResource,
}

/// Checks `body` came from Sentry (the signature, first: nothing else is looked at in an
/// unsigned delivery) and was sent within `max_age_secs` of `now`.
pub fn verify(
    secret: &[u8],
    headers: &Headers<'_>,
    body: &[u8],
    now: f64,
    max_age_secs: u32,
) -> Result<Verified, Refused> {
    let signature = headers.signature.ok_or(Refused::NoSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    if !same_hex(&mac.finalize().into_bytes(), signature.trim()) {
        return Err(Refused::BadSignature);
    }
    let raw = headers.timestamp.ok_or(Refused::NoTimestamp)?;
    let sent_at: f64 = raw
        .trim()
        .parse()
        .ok()
        .filter(|t: &f64| t.is_finite() && *t > 0.0)
        .ok_or_else(|| Refused::BadTimestamp(raw.chars().take(40).collect()))?;
    let age = now - sent_at;
    if age > f64::from(max_age_secs) {
        return Err(Refused::Stale {
            age,
            max: max_age_secs,
        });
    }
    if -age > FUTURE_SKEW_SECS {
        return Err(Refused::Future { ahead: -age });
    }
    let resource = headers
        .resource
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or(Refused::NoResource)?;
    Ok(Verified {
        resource: resource.chars().take(100).collect(),
        request_id: headers
            .request_id
            .map(|id| id.trim().chars().take(100).collect()),
        body_sha256: Sha256::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        sent_at,
    })
}

/// Whether `hex` spells `digest` (either case), looking at every byte whatever the first
/// difference: how long the check takes says nothing about how much of a forgery was right.
/// By hand because it is four lines, against a crate for hex alone.
fn same_hex(digest: &[u8], hex: &str) -> bool {
    let hex = hex.as_bytes();
    if hex.len() != digest.len() * 2 {
        return false;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut diff = 0u8;
    for (i, byte) in digest.iter().enumerate() {
        match (nibble(hex[2 * i]), nibble(hex[2 * i + 1])) {
            (Some(hi), Some(lo)) => diff |= byte ^ (hi << 4 | lo),
            _ => diff |= 1,
        }
    }
    diff == 0
}

/// A delivery signed as Sentry signs it, for tests here and in the daemon's.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"3f1c9a0d5b7e4c2a9f8e7d6c5b4a3928";
    const NOW: f64 = 1_764_000_000.0;
    const BODY: &[u8] = br#"{"action":"created","data":{}}"#;

    fn headers<'a>(signature: &'a str, timestamp: &'a str) -> Headers<'a> {
        Headers {
            resource: Some("issue"),
            request_id: Some("4b6b4c4e-2a3e-4d7a-9d1b-6c1c3f5f6a7b"),
            timestamp: Some(timestamp),
            signature: Some(signature),
        }
    }

    #[test]
    fn a_delivery_signed_with_the_client_secret_and_sent_just_now_is_accepted() {
        let signature = sign(SECRET, BODY);
        let v = verify(
            SECRET,
            &headers(&signature, "1764000000"),
            BODY,
            NOW + 2.0,
            300,
        )
        .unwrap();
        assert_eq!(v.resource, "issue");
        assert_eq!(v.sent_at, NOW);
        assert_eq!(v.body_sha256.len(), 64);
        // Upper-case hex is the same signature.
        let upper = signature.to_uppercase();
        assert!(verify(SECRET, &headers(&upper, "1764000000"), BODY, NOW, 300).is_ok());
    }

    #[test]
    fn a_signature_that_does_not_match_the_body_and_secret_is_refused() {
        let good = sign(SECRET, BODY);
        let other_body = br#"{"action":"resolved","data":{}}"#;
        let cases = [
            sign(b"another integration's secret", BODY),
            sign(SECRET, other_body),
            good[..63].to_owned(),
            format!("{}0", good),
            format!("{}zz", &good[..62]),
            String::new(),
        ];
        for signature in &cases {
            assert_eq!(
                verify(SECRET, &headers(signature, "1764000000"), BODY, NOW, 300),
                Err(Refused::BadSignature),
                "{signature}"
            );
        }
        let none = Headers {
            signature: None,
            ..headers("", "1764000000")
        };
        assert_eq!(
            verify(SECRET, &none, BODY, NOW, 300),
            Err(Refused::NoSignature)
        );
    }

    #[test]
    fn a_stale_or_future_or_unreadable_timestamp_is_refused() {
        let s = sign(SECRET, BODY);
        let check = |ts: &str| verify(SECRET, &headers(&s, ts), BODY, NOW, 300);
        assert!(matches!(
            check("1763999600"),
            Err(Refused::Stale { max: 300, .. })
        ));
        assert!(matches!(check("1764000300"), Err(Refused::Future { .. })));
        assert!(check("1763999701").is_ok());
        assert_eq!(
            check("yesterday"),
            Err(Refused::BadTimestamp("yesterday".into()))
        );
        assert_eq!(check("NaN"), Err(Refused::BadTimestamp("NaN".into())));
        let none = Headers {
            timestamp: None,
            ..headers(&s, "")
        };
        assert_eq!(
            verify(SECRET, &none, BODY, NOW, 300),
            Err(Refused::NoTimestamp)
        );
        assert_eq!(
            Refused::Stale { age: 400.2, max: 300 }.to_string(),
            "stale delivery: Sentry-Hook-Timestamp is 400 s old, more than max_age_secs (300 s) in [daemon.sentry]"
        );
    }
}
