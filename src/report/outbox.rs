//! The durable outbox in the store, and [`deliver_due`], which tries every email that is due
//! and schedules the next attempt of those that failed with exponential backoff. Nothing is
//! ever given up on or deleted: an alert that cannot be sent stays queued, and visible.

use serde::Serialize;

use super::mailer::{MailError, Mailer};
use super::units::duration;
use super::Email;
use crate::config::MailSettings;
use crate::store::{Store, StoreError};

/// Wait before the first retry; each further failure doubles it ...
pub const FIRST_RETRY_SECS: f64 = 30.0;
/// ... up to this.
pub const MAX_RETRY_SECS: f64 = 30.0 * 60.0;

/// Queues `email` for the configured recipients. Idempotent: an email with the same Message-ID
/// already queued (or sent) is left as it is. Returns whether it was added.
pub fn enqueue(
    store: &mut Store,
    settings: &MailSettings,
    change_id: Option<&str>,
    email: &Email,
    now: f64,
) -> Result<bool, StoreError> {
    enqueue_with_links(store, settings, change_id, email, &[], now)
}

/// [`enqueue`] for an email holding approval links: `links` are the ids whose placeholders
/// (`gate::links::placeholder`) the body holds; their secrets are filled in when it is sent.
pub fn enqueue_with_links(
    store: &mut Store,
    settings: &MailSettings,
    change_id: Option<&str>,
    email: &Email,
    links: &[String],
    now: f64,
) -> Result<bool, StoreError> {
    // Every email passes here: whatever outside text a renderer let through reaches no mail
    // client as a control or invisible character.
    store.enqueue_email_html(
        change_id,
        &email.message_id,
        &crate::display::line(&email.subject),
        &crate::display::block(&email.text_body),
        email.html.as_deref(),
        links,
        &settings.to,
        now,
    )
}

/// Wait after the `attempts`-th failed attempt: 30 s, 1 min, 2 min, ... at most 30 min.
pub fn retry_delay(attempts: u32) -> f64 {
    let doublings = attempts.saturating_sub(1).min(16);
    (FIRST_RETRY_SECS * f64::from(1u32 << doublings)).min(MAX_RETRY_SECS)
}

/// What one [`deliver_due`] pass did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DeliveryStats {
    /// Emails the server accepted.
    pub sent: usize,
    /// Emails that failed and were scheduled again.
    pub failed: usize,
    /// Emails still waiting after the pass (due later, or failed now).
    pub pending: usize,
    /// What went wrong, one line each (sending, or recording the outcome), for the log.
    pub errors: Vec<String>,
}

/// Tries every email that is due at `now` once. One that fails is tried again after
/// [`retry_delay`]; none is ever given up on. An email sent but not recorded as sent (the store
/// failed just then) will be sent again later, with the same Message-ID.
pub fn deliver_due(store: &mut Store, mailer: &Mailer, now: f64) -> DeliveryStats {
    let mut stats = DeliveryStats::default();
    let due = match store.due_emails(now, usize::MAX) {
        Ok(due) => due,
        Err(e) => {
            stats.errors.push(format!("reading the outbox: {e}"));
            return stats;
        }
    };
    for queued in due {
        let text_body = match (&mailer.link_key, queued.links.is_empty()) {
            (_, true) => Ok(queued.body),
            (Some(key), false) => Ok(crate::gate::links::fill(&queued.body, &queued.links, key)),
            (None, false) => Err(MailError::Setup(format!(
                "email {} holds approval links and this mailer has no link key to fill them in",
                queued.message_id
            ))),
        };
        let email = Email {
            subject: queued.subject,
            text_body: text_body.as_ref().cloned().unwrap_or_default(),
            message_id: queued.message_id,
            html: queued.html,
        };
        let sent = match text_body {
            Ok(_) => mailer.send_to(&email, &queued.to),
            Err(e) => Err(e),
        };
        match sent {
            Ok(()) => {
                stats.sent += 1;
                if let Err(e) = store.mark_sent(&email.message_id, now) {
                    stats.errors.push(format!(
                        "email {} was sent but could not be recorded as sent: {e}",
                        email.message_id
                    ));
                }
            }
            Err(error) => {
                stats.failed += 1;
                let attempts = queued.attempts.saturating_add(1);
                let next = now + retry_delay(attempts);
                let message = error.to_string();
                stats.errors.push(format!(
                    "{message} (attempt {attempts}; next in {})",
                    duration(next - now)
                ));
                if let Err(e) = store.mark_failed(&email.message_id, &message, next, now) {
                    stats.errors.push(format!(
                        "recording the failure of email {}: {e}",
                        email.message_id
                    ));
                }
            }
        }
    }
    match store.pending_emails() {
        Ok(n) => stats.pending = n,
        Err(e) => stats.errors.push(format!("counting queued emails: {e}")),
    }
    stats
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;
    use crate::report::testing::{
        change, regressed_report, rollback_report, sample_email, serve, settings, wait_for,
        Collector, COMMIT, T0,
    };
    use crate::report::{message_id, render_alert, render_alert_with_postmortem};
    use crate::store::{ChangeKind, ChangeState, EventKind, NewChange, StoredKind};

    #[test]
    fn retries_back_off_to_half_an_hour() {
        let delays: Vec<f64> = (1..=8).map(retry_delay).collect();
        assert_eq!(
            delays,
            [30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1800.0, 1800.0]
        );
        assert_eq!(retry_delay(0), 30.0);
        assert_eq!(retry_delay(u32::MAX), 1800.0);
    }

    #[test]
    fn an_alert_with_a_post_mortem_goes_through_the_outbox_as_text_and_html() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Collector::default();
        let inbox = collector.inbox.clone();
        serve(listener, collector);
        let settings = settings(addr);
        let mailer = Mailer::new(&settings).unwrap();
        let mut store = Store::open_in_memory().unwrap();

        let record = change(
            ChangeState::RolledBack,
            "reverted and redeployed; the service is back to its baseline",
            Some(regressed_report()),
        );
        let plain = render_alert("shop", &record, Some(&rollback_report()));
        // A chart's polyline is one line far longer than SMTP allows (998 characters).
        let html = format!(
            "<!DOCTYPE html><html><body><h1>Post-mortem \u{2014} caf\u{e9}</h1><svg><polyline \
             points=\"{}\"/></svg></body></html>",
            "100.5,200.5 ".repeat(500).trim_end()
        );
        let html = html.as_str();
        let email = render_alert_with_postmortem(
            "shop",
            &record,
            Some(&rollback_report()),
            Some(html.to_owned()),
        );
        // The text is the whole alert, plus one line saying where the post-mortem is.
        let pointer = format!(
            "Post-mortem: in this email's HTML part, or guardian postmortem {} --config <your \
             guardian.toml>\n",
            record.id
        );
        assert!(email.text_body.contains(&pointer), "{}", email.text_body);
        assert_eq!(email.text_body.replacen(&pointer, "", 1), plain.text_body);
        assert_eq!(email.html.as_deref(), Some(html));
        assert_eq!(
            render_alert_with_postmortem("shop", &record, Some(&rollback_report()), None),
            plain
        );

        assert!(enqueue(&mut store, &settings, None, &email, T0).unwrap());
        let queued = store.get_email(&email.message_id).unwrap().unwrap();
        assert_eq!(queued.html.as_deref(), Some(html));
        let stats = deliver_due(&mut store, &mailer, T0);
        assert_eq!((stats.sent, stats.failed), (1, 0), "{stats:?}");

        let got = wait_for(&inbox, 1, Duration::from_secs(10));
        assert_eq!(got.len(), 1);
        let parsed = mail_parser::MessageParser::default()
            .parse(&got[0].data)
            .unwrap();
        let content_type = mail_parser::MimeHeaders::content_type(&parsed).unwrap();
        assert_eq!(
            (content_type.ctype(), content_type.subtype()),
            ("multipart", Some("alternative"))
        );
        let text = parsed.body_text(0).unwrap().replace("\r\n", "\n");
        assert_eq!(text.trim_end(), email.text_body.trim_end());
        let received_html = parsed.body_html(0).unwrap().replace("\r\n", "\n");
        assert_eq!(received_html.trim_end(), html);
    }

    #[test]
    fn an_alert_waits_out_a_server_that_is_down_and_is_sent_once_it_is_up() {
        // A port nothing listens on (bound, then closed).
        let addr = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let mut store = Store::open_in_memory().unwrap();
        let id = store
            .insert_change(
                &NewChange {
                    commit: COMMIT.into(),
                    kind: ChangeKind::Ai,
                    pattern: None,
                    summary: None,
                    landed_at: T0,
                    fixes_issue: None,
                    flag: None,
                },
                T0,
            )
            .unwrap()
            .id;
        let settings = settings(addr);
        let mailer = Mailer::new(&settings).unwrap();
        let email = Email {
            message_id: message_id(&id, "rolled_back"),
            ..sample_email()
        };
        assert!(enqueue(&mut store, &settings, Some(&id), &email, T0 + 100.0).unwrap());
        // Queued again after a crash: still one.
        assert!(!enqueue(&mut store, &settings, Some(&id), &email, T0 + 101.0).unwrap());
        assert_eq!(store.pending_emails().unwrap(), 1);

        let stats = deliver_due(&mut store, &mailer, T0 + 100.0);
        assert_eq!(
            (stats.sent, stats.failed, stats.pending),
            (0, 1, 1),
            "{stats:?}"
        );
        let queued = store.get_email(&email.message_id).unwrap().unwrap();
        assert_eq!(queued.attempts, 1);
        assert_eq!(queued.sent_at, None);
        assert_eq!(queued.next_attempt_at, T0 + 130.0);
        let error = queued.last_error.unwrap();
        assert!(error.contains(&addr.port().to_string()), "{error}");
        assert!(error.to_lowercase().contains("connection"), "{error}");
        assert!(
            stats.errors[0].contains("attempt 1; next in 30 s"),
            "{stats:?}"
        );

        // Not due yet: nothing is tried.
        let stats = deliver_due(&mut store, &mailer, T0 + 120.0);
        assert_eq!((stats.sent, stats.failed, stats.pending), (0, 0, 1));

        // Still down at the next attempt: the wait doubles.
        let stats = deliver_due(&mut store, &mailer, T0 + 130.0);
        assert_eq!(stats.failed, 1);
        let queued = store.get_email(&email.message_id).unwrap().unwrap();
        assert_eq!((queued.attempts, queued.next_attempt_at), (2, T0 + 190.0));

        // The server comes up on that port.
        let listener = TcpListener::bind(addr).unwrap();
        let collector = Collector::default();
        let inbox = collector.inbox.clone();
        serve(listener, collector);
        let stats = deliver_due(&mut store, &mailer, T0 + 200.0);
        assert_eq!(
            (stats.sent, stats.failed, stats.pending),
            (1, 0, 0),
            "{stats:?}"
        );
        let sent = store.get_email(&email.message_id).unwrap().unwrap();
        assert_eq!((sent.attempts, sent.sent_at), (3, Some(T0 + 200.0)));
        let got = wait_for(&inbox, 1, Duration::from_secs(10));
        assert_eq!(got.len(), 1);
        let parsed = mail_parser::MessageParser::default()
            .parse(&got[0].data)
            .unwrap();
        assert_eq!(
            parsed.message_id(),
            Some(&email.message_id[1..email.message_id.len() - 1])
        );

        // Nothing more to send, ever, for that one.
        let stats = deliver_due(&mut store, &mailer, T0 + 10_000.0);
        assert_eq!((stats.sent, stats.failed, stats.pending), (0, 0, 0));
        assert_eq!(wait_for(&inbox, 2, Duration::from_millis(300)).len(), 1);
        let kinds: Vec<StoredKind> = store
            .events_for(&id)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                EventKind::ChangeCreated,
                EventKind::EmailQueued,
                EventKind::EmailSent
            ]
        );
    }

    #[test]
    fn a_refusing_server_keeps_the_alert_queued_with_its_reply() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Collector {
            refuse_rcpt: true,
            ..Collector::default()
        };
        let inbox = collector.inbox.clone();
        serve(listener, collector);
        let mut store = Store::open_in_memory().unwrap();
        let settings = settings(addr);
        let mailer = Mailer::new(&settings).unwrap();
        let email = sample_email();
        match mailer.send(&email) {
            Err(MailError::Send {
                permanent, error, ..
            }) => {
                assert!(permanent, "{error}");
                assert!(error.contains("550"), "{error}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        enqueue(&mut store, &settings, None, &email, T0).unwrap();
        for (i, now) in [T0, T0 + 30.0, T0 + 90.0].into_iter().enumerate() {
            let stats = deliver_due(&mut store, &mailer, now);
            assert_eq!((stats.failed, stats.pending), (1, 1), "{stats:?}");
            let queued = store.get_email(&email.message_id).unwrap().unwrap();
            assert_eq!(queued.attempts, i as u32 + 1);
            assert!(queued.last_error.unwrap().contains("550"));
        }
        assert!(inbox.lock().unwrap().is_empty());
    }
}
