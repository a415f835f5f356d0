//! Sends the notifications that are due (`[[daemon.notify]]`), on a blocking thread with a
//! database connection of its own, as the mail is sent: a slow or dead receiver never holds
//! up the watch. Each is tried until its target answers 2xx, backing off from 5 s to 30 min;
//! none is given up on. A webhook with a secret is signed when it is sent (the timestamp is
//! the send's, so a receiver can refuse a stale one).

use std::time::Duration;

use crate::config::{NotifyKind, NotifyTarget};
use crate::store::{Notification, Store};

/// Wait before the first retry; each further failure doubles it, up to 30 minutes.
const FIRST_RETRY_SECS: f64 = 5.0;
const MAX_RETRY_SECS: f64 = 30.0 * 60.0;
/// The most of an answer's body kept with a failure.
const ANSWER_KEPT: usize = 200;

/// The webhook's signature headers: `X-Guardian-Signature: v1=<hex>` is HMAC-SHA256 with the
/// secret over `<timestamp>.<body>`, the timestamp (unix seconds) in `X-Guardian-Timestamp`.
pub const SIGNATURE_HEADER: &str = "X-Guardian-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Guardian-Timestamp";

/// The signature of `body` sent at `timestamp` with `secret`.
pub fn signature(secret: &[u8], timestamp: u64, body: &str) -> String {
    let signed = format!("{timestamp}.{body}");
    format!(
        "v1={}",
        crate::sentry::webhook::sign(secret, signed.as_bytes())
    )
}

fn retry_delay(attempts: u32) -> f64 {
    let doublings = attempts.saturating_sub(1).min(16);
    (FIRST_RETRY_SECS * f64::from(1u32 << doublings)).min(MAX_RETRY_SECS)
}

/// Tries the notifications that are due once, each target's in the order they were queued:
/// one that waits (not due yet, or failed now) holds back the later ones of its target, so a
/// receiver never hears of a rollback before the regression it undid. Returns how many were
/// accepted, and what went wrong, a line each, for the log.
pub fn deliver_due(store: &mut Store, targets: &[NotifyTarget], now: f64) -> (usize, Vec<String>) {
    let mut errors = Vec::new();
    let mut sent = 0;
    let queued = match store.queued_notifications(1000) {
        Ok(queued) => queued,
        Err(e) => return (0, vec![format!("reading the queued notifications: {e}")]),
    };
    let mut held: Vec<String> = Vec::new();
    for n in queued {
        if held.contains(&n.target) {
            continue;
        }
        if n.next_attempt_at > now {
            held.push(n.target.clone());
            continue;
        }
        let outcome = match targets.iter().find(|t| t.name == n.target) {
            Some(target) => send(target, &n, now),
            // Removed from the config since it was queued: kept, tried if it comes back.
            None => Err(format!(
                "no [[daemon.notify]] target is named {:?} any more",
                n.target
            )),
        };
        let recorded = match outcome {
            Ok(answer) => {
                sent += 1;
                store.notification_sent(&n.id, &answer, now)
            }
            Err(why) => {
                held.push(n.target.clone());
                let attempts = n.attempts.saturating_add(1);
                let next = now + retry_delay(attempts);
                errors.push(format!(
                    "{}: {why} (attempt {attempts}; next in {:.0} s)",
                    n.id,
                    next - now
                ));
                store.notification_failed(&n.id, &why, next, now)
            }
        };
        if let Err(e) = recorded {
            errors.push(format!("recording notification {}: {e}", n.id));
        }
    }
    (sent, errors)
}

/// One POST to `target`: `Ok` with the answer's status on a 2xx.
fn send(target: &NotifyTarget, n: &Notification, now: f64) -> Result<String, String> {
    let url = match target.kind {
        NotifyKind::Alertmanager => format!("{}/api/v2/alerts", target.url),
        _ => target.url.clone(),
    };
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(u64::from(target.timeout_secs)))
        .redirects(0)
        .build();
    let mut request = agent
        .post(&url)
        .set("Content-Type", "application/json")
        .set(
            "User-Agent",
            concat!("guardian/", env!("CARGO_PKG_VERSION")),
        );
    if let NotifyKind::Webhook {
        secret_file: Some(file),
    } = &target.kind
    {
        let secret = crate::daemon::engine::read_token(file)?;
        let timestamp = now.max(0.0) as u64;
        request = request.set(TIMESTAMP_HEADER, &timestamp.to_string()).set(
            SIGNATURE_HEADER,
            &signature(secret.as_bytes(), timestamp, &n.body),
        );
    }
    match request.send_string(&n.body) {
        Ok(answer) => Ok(answer.status().to_string()),
        Err(ureq::Error::Status(code, answer)) => {
            let text: String = answer
                .into_string()
                .unwrap_or_default()
                .chars()
                .take(ANSWER_KEPT)
                .collect();
            // Never the URL: a Slack webhook's URL is its credential, and this error is shown
            // in `guardian status` and on the status page (the target's name says which).
            Err(format!(
                "answered {code}: {}",
                crate::display::line(text.trim())
            ))
        }
        Err(ureq::Error::Transport(t)) => Err(format!(
            "{}{}",
            t.kind(),
            t.message()
                .map(|m| format!(": {}", crate::display::line(m)))
                .unwrap_or_default()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        let a = signature(b"s3cret", 1_764_000_000, "{}");
        assert!(a.starts_with("v1=") && a.len() == 3 + 64, "{a}");
        assert_ne!(a, signature(b"s3cret", 1_764_000_001, "{}"));
        assert_ne!(a, signature(b"s3cret", 1_764_000_000, "{ }"));
    }

    #[test]
    fn retries_back_off_from_seconds_to_half_an_hour() {
        assert_eq!(
            (1..=4).map(retry_delay).collect::<Vec<_>>(),
            [5.0, 10.0, 20.0, 40.0]
        );
        assert_eq!(retry_delay(40), MAX_RETRY_SECS);
    }
}
