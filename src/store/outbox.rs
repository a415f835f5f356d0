//! The outbox: alerts waiting for (or done with) delivery. Queued idempotently by Message-ID,
//! retried with the time of the next attempt, never deleted; an email about a change is noted in
//! that change's decision log when queued and when sent.

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::changes::current_state;
use super::events::append_event;
use super::{finite, Doing, EventKind, Result, Store, StoreError};

/// What an `email_queued` record on a change says. Written by the outbox as it queues an email
/// about a change, read back by the post-mortem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmailQueued {
    pub message_id: String,
    pub subject: String,
    /// The recipients.
    pub to: Vec<String>,
}

/// An email in the outbox.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutboxEmail {
    /// The Message-ID header, e.g. `<chg_0123456789ab.rolled_back@guardian>`; the key.
    pub message_id: String,
    /// The change the email is about, if one.
    pub change_id: Option<String>,
    pub subject: String,
    pub body: String,
    pub to: Vec<String>,
    pub created_at: f64,
    /// Delivery attempts made so far, failed or not.
    pub attempts: u32,
    /// Not to be tried before this (unix seconds).
    pub next_attempt_at: f64,
    pub last_attempt_at: Option<f64>,
    /// Why the last failed attempt failed (kept after a later success, for the record).
    pub last_error: Option<String>,
    /// When the server accepted it; `None` while queued.
    pub sent_at: Option<f64>,
    /// The HTML alternative sent with the text (the post-mortem), if any.
    pub html: Option<String>,
    /// The approval links in the body, by id: their secrets are filled in when it is sent.
    pub links: Vec<String>,
}

const OUTBOX_COLUMNS: &str = "message_id, change_id, subject, body, recipients, created_at, \
                              attempts, next_attempt_at, last_attempt_at, last_error, sent_at, html, \
                              links";

impl Store {
    /// Queues an email for delivery, due now. Idempotent on `message_id`: queuing the same
    /// message again (e.g. after a crash between queuing and recording that it was queued)
    /// keeps the first row as it is, sent or not. Returns whether a row was added. An email
    /// about a change is also noted in the change's decision log.
    pub fn enqueue_email(
        &mut self,
        change_id: Option<&str>,
        message_id: &str,
        subject: &str,
        body: &str,
        to: &[String],
        now: f64,
    ) -> Result<bool> {
        self.enqueue_email_html(change_id, message_id, subject, body, None, &[], to, now)
    }

    /// [`Store::enqueue_email`] with an HTML alternative to send with the text body, and the
    /// ids of the approval links whose secrets are filled into the body when it is sent
    /// (`gate::links`): the secrets themselves are never stored.
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue_email_html(
        &mut self,
        change_id: Option<&str>,
        message_id: &str,
        subject: &str,
        body: &str,
        html: Option<&str>,
        links: &[String],
        to: &[String],
        now: f64,
    ) -> Result<bool> {
        finite("now", now)?;
        if message_id.trim().is_empty() {
            return Err(StoreError::Invalid("an email needs a Message-ID".into()));
        }
        if to.is_empty() {
            return Err(StoreError::Invalid(format!(
                "email {message_id} has no recipient"
            )));
        }
        let doing = || format!("queuing email {message_id}");
        let recipients = serde_json::to_string(to).map_err(|error| StoreError::Json {
            doing: doing(),
            error,
        })?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        if let Some(id) = change_id {
            current_state(&tx, id).doing(doing)??;
        }
        let links = (!links.is_empty())
            .then(|| serde_json::to_string(links))
            .transpose()
            .map_err(|error| StoreError::Json {
                doing: doing(),
                error,
            })?;
        let added = tx
            .execute(
                "INSERT INTO outbox (message_id, change_id, subject, body, recipients, \
                 created_at, next_attempt_at, html, links) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8) \
                 ON CONFLICT (message_id) DO NOTHING",
                params![message_id, change_id, subject, body, recipients, now, html, links],
            )
            .doing(doing)?
            > 0;
        if added {
            if let Some(id) = change_id {
                let detail = serde_json::to_value(EmailQueued {
                    message_id: message_id.to_owned(),
                    subject: subject.to_owned(),
                    to: to.to_vec(),
                })
                .map_err(|error| StoreError::Json {
                    doing: doing(),
                    error,
                })?;
                append_event(&tx, now, Some(id), EventKind::EmailQueued, &detail).doing(doing)?;
            }
        }
        tx.commit().doing(doing)?;
        Ok(added)
    }

    /// Emails not yet sent whose next attempt is due at `now`, the longest waiting first.
    pub fn due_emails(&self, now: f64, limit: usize) -> Result<Vec<OutboxEmail>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query_emails(
            &format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox \
                 WHERE sent_at IS NULL AND next_attempt_at <= ?1 \
                 ORDER BY next_attempt_at, created_at, rowid LIMIT ?2"
            ),
            params![now, limit],
            "reading emails due",
        )
    }

    /// Emails not yet sent, oldest first: what `guardian status` shows as waiting.
    pub fn queued_emails(&self, limit: usize) -> Result<Vec<OutboxEmail>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query_emails(
            &format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE sent_at IS NULL \
                 ORDER BY created_at, rowid LIMIT ?1"
            ),
            params![limit],
            "reading queued emails",
        )
    }

    /// How many emails wait to be sent.
    pub fn pending_emails(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL",
                [],
                |row| row.get(0),
            )
            .doing(|| "counting queued emails".to_string())?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Why the latest try to send a queued email failed, and how many tries it has had:
    /// what `guardian status` shows beside the count, so a stuck outbox says why.
    pub fn pending_email_trouble(&self) -> Result<Option<(String, i64)>> {
        self.conn
            .query_row(
                "SELECT last_error, attempts FROM outbox \
                 WHERE sent_at IS NULL AND last_error IS NOT NULL \
                 ORDER BY last_attempt_at DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .doing(|| "reading why queued emails are not sent".to_string())
    }

    /// The email with this Message-ID, sent or not.
    pub fn get_email(&self, message_id: &str) -> Result<Option<OutboxEmail>> {
        Ok(self
            .query_emails(
                &format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE message_id = ?1"),
                params![message_id],
                &format!("reading email {message_id}"),
            )?
            .pop())
    }

    /// The server accepted the email. Counts the attempt and notes it in the change's log. An
    /// email already marked sent keeps its first `sent_at`.
    pub fn mark_sent(&mut self, message_id: &str, now: f64) -> Result<()> {
        finite("now", now)?;
        let doing = || format!("marking email {message_id} sent");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        let row: Option<(Option<String>, Option<f64>, i64)> = tx
            .query_row(
                "SELECT change_id, sent_at, attempts FROM outbox WHERE message_id = ?1",
                [message_id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .doing(doing)?;
        let Some((change_id, sent_at, attempts)) = row else {
            return Err(no_email(message_id));
        };
        if sent_at.is_some() {
            return Ok(());
        }
        tx.execute(
            "UPDATE outbox SET sent_at = ?2, last_attempt_at = ?2, attempts = attempts + 1 \
             WHERE message_id = ?1",
            params![message_id, now],
        )
        .doing(doing)?;
        if let Some(id) = change_id {
            let detail = serde_json::json!({
                "message_id": message_id,
                "attempts": attempts + 1,
            });
            append_event(&tx, now, Some(&id), EventKind::EmailSent, &detail).doing(doing)?;
        }
        tx.commit().doing(doing)?;
        Ok(())
    }

    /// An attempt to send the email failed: counts it, keeps the error, and sets when to try
    /// again. An email already sent is left as it is.
    pub fn mark_failed(
        &mut self,
        message_id: &str,
        error: &str,
        next_attempt_at: f64,
        now: f64,
    ) -> Result<()> {
        finite("now", now)?;
        finite("next_attempt_at", next_attempt_at)?;
        let changed = self
            .conn
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, \
                 next_attempt_at = ?3, last_attempt_at = ?4 \
                 WHERE message_id = ?1 AND sent_at IS NULL",
                params![message_id, error, next_attempt_at, now],
            )
            .doing(|| format!("recording a failed attempt to send email {message_id}"))?;
        if changed == 0 && self.get_email(message_id)?.is_none() {
            return Err(no_email(message_id));
        }
        Ok(())
    }

    fn query_emails(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        doing: &str,
    ) -> Result<Vec<OutboxEmail>> {
        let doing = || doing.to_string();
        let mut stmt = self.conn.prepare_cached(sql).doing(doing)?;
        let rows = stmt
            .query_map(params, |row| {
                Ok((
                    OutboxEmail {
                        message_id: row.get(0)?,
                        change_id: row.get(1)?,
                        subject: row.get(2)?,
                        body: row.get(3)?,
                        to: Vec::new(),
                        created_at: row.get(5)?,
                        attempts: u32::try_from(row.get::<_, i64>(6)?).unwrap_or(u32::MAX),
                        next_attempt_at: row.get(7)?,
                        last_attempt_at: row.get(8)?,
                        last_error: row.get(9)?,
                        sent_at: row.get(10)?,
                        html: row.get(11)?,
                        links: Vec::new(),
                    },
                    row.get::<_, String>(4)?,
                    row.get::<_, Option<String>>(12)?,
                ))
            })
            .doing(doing)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .doing(doing)?;
        rows.into_iter()
            .map(|(mut email, recipients, links)| {
                email.to = serde_json::from_str(&recipients).map_err(|error| StoreError::Json {
                    doing: format!("reading recipients of email {}", email.message_id),
                    error,
                })?;
                if let Some(links) = links {
                    email.links =
                        serde_json::from_str(&links).map_err(|error| StoreError::Json {
                            doing: format!("reading the links of email {}", email.message_id),
                            error,
                        })?;
                }
                Ok(email)
            })
            .collect()
    }
}

fn no_email(message_id: &str) -> StoreError {
    StoreError::Invalid(format!(
        "no email with Message-ID {message_id} in the outbox"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::*;

    #[test]
    fn queuing_an_email_twice_keeps_one() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        let mid = format!("<{id}.rolled_back@guardian>");
        let oncall = to(&["oncall@example.com", "lead@example.com"]);
        assert!(store
            .enqueue_email(Some(&id), &mid, "subject", "body", &oncall, T0 + 1.0)
            .unwrap());
        // Again, e.g. after a crash: nothing changes, not even the text or the time.
        assert!(!store
            .enqueue_email(Some(&id), &mid, "other", "other", &oncall, T0 + 9.0)
            .unwrap());
        assert_eq!(store.pending_emails().unwrap(), 1);
        let email = store.get_email(&mid).unwrap().unwrap();
        assert_eq!(
            email,
            OutboxEmail {
                message_id: mid.clone(),
                change_id: Some(id.clone()),
                subject: "subject".into(),
                body: "body".into(),
                to: oncall.clone(),
                created_at: T0 + 1.0,
                attempts: 0,
                next_attempt_at: T0 + 1.0,
                last_attempt_at: None,
                last_error: None,
                sent_at: None,
                html: None,
                links: vec![],
            }
        );
        let queued: Vec<_> = store
            .events_for(&id)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EventKind::EmailQueued)
            .collect();
        assert_eq!(queued.len(), 1);
        assert_eq!(
            queued[0].detail_as::<EmailQueued>().unwrap(),
            EmailQueued {
                message_id: mid.clone(),
                subject: "subject".into(),
                to: oncall.clone(),
            }
        );
        // The JSON it has always been.
        let keys: Vec<&String> = queued[0].detail.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["message_id", "subject", "to"]);
        // Sent, then queued again: still sent, still one.
        store.mark_sent(&mid, T0 + 2.0).unwrap();
        assert!(!store
            .enqueue_email(Some(&id), &mid, "subject", "body", &oncall, T0 + 3.0)
            .unwrap());
        assert_eq!(
            store.get_email(&mid).unwrap().unwrap().sent_at,
            Some(T0 + 2.0)
        );
        assert_eq!(store.pending_emails().unwrap(), 0);
        // An email about no change (e.g. a digest) is fine; about an unknown change is not.
        assert!(store
            .enqueue_email(None, "<digest.1@guardian>", "s", "b", &oncall, T0)
            .unwrap());
        let err = store
            .enqueue_email(Some("chg_nope"), "<x@guardian>", "s", "b", &oncall, T0)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound(i) if i == "chg_nope"),
            "{err:?}"
        );
        assert!(matches!(
            store.enqueue_email(None, "<y@guardian>", "s", "b", &[], T0),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.enqueue_email(None, " ", "s", "b", &oncall, T0),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(store.pending_emails().unwrap(), 1);
    }

    #[test]
    fn emails_fail_wait_and_are_sent_once() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        let oncall = to(&["oncall@example.com"]);
        for (i, mid) in ["<a@guardian>", "<b@guardian>", "<c@guardian>"]
            .iter()
            .enumerate()
        {
            store
                .enqueue_email(Some(&id), mid, "s", "b", &oncall, T0 + i as f64)
                .unwrap();
        }
        let ids = |v: Vec<OutboxEmail>| v.into_iter().map(|e| e.message_id).collect::<Vec<_>>();
        assert!(store.due_emails(T0 - 1.0, 10).unwrap().is_empty());
        assert_eq!(
            ids(store.due_emails(T0 + 1.0, 10).unwrap()),
            ["<a@guardian>", "<b@guardian>"]
        );
        assert_eq!(
            ids(store.due_emails(T0 + 5.0, 1).unwrap()),
            ["<a@guardian>"]
        );

        store
            .mark_failed("<a@guardian>", "connection refused", T0 + 40.0, T0 + 10.0)
            .unwrap();
        let a = store.get_email("<a@guardian>").unwrap().unwrap();
        assert_eq!(
            (a.attempts, a.next_attempt_at, a.last_attempt_at, a.sent_at),
            (1, T0 + 40.0, Some(T0 + 10.0), None)
        );
        assert_eq!(a.last_error.as_deref(), Some("connection refused"));
        // Not due before its next attempt; the others are.
        assert_eq!(
            ids(store.due_emails(T0 + 39.0, 10).unwrap()),
            ["<b@guardian>", "<c@guardian>"]
        );
        store
            .mark_failed("<a@guardian>", "timed out", T0 + 100.0, T0 + 40.0)
            .unwrap();
        let a = store.get_email("<a@guardian>").unwrap().unwrap();
        assert_eq!(
            (a.attempts, a.last_error.as_deref()),
            (2, Some("timed out"))
        );
        assert_eq!(store.pending_emails().unwrap(), 3);

        store.mark_sent("<a@guardian>", T0 + 100.0).unwrap();
        let a = store.get_email("<a@guardian>").unwrap().unwrap();
        assert_eq!((a.attempts, a.sent_at), (3, Some(T0 + 100.0)));
        // The error of the failed attempts stays on record.
        assert_eq!(a.last_error.as_deref(), Some("timed out"));
        // Sent is final: a late failure report or a second success changes nothing.
        store
            .mark_failed("<a@guardian>", "late", T0 + 999.0, T0 + 101.0)
            .unwrap();
        store.mark_sent("<a@guardian>", T0 + 102.0).unwrap();
        assert_eq!(store.get_email("<a@guardian>").unwrap().unwrap(), a);
        assert_eq!(store.pending_emails().unwrap(), 2);
        assert_eq!(
            ids(store.due_emails(T0 + 1e6, 10).unwrap()),
            ["<b@guardian>", "<c@guardian>"]
        );
        assert_eq!(
            ids(store.queued_emails(10).unwrap()),
            ["<b@guardian>", "<c@guardian>"]
        );
        let sent: Vec<_> = store
            .events_for(&id)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EventKind::EmailSent)
            .collect();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].detail["attempts"], 3);

        // Emails are never deleted.
        assert!(store.conn.execute("DELETE FROM outbox", []).is_err());
        assert_eq!(store.pending_emails().unwrap(), 2);

        // Unknown ids and bad times are refused.
        assert!(matches!(
            store.mark_sent("<nope@guardian>", T0),
            Err(StoreError::Invalid(_))
        ));
        let err = store
            .mark_failed("<nope@guardian>", "x", T0, T0)
            .unwrap_err();
        assert!(err.to_string().contains("<nope@guardian>"), "{err}");
        assert!(matches!(
            store.mark_failed("<b@guardian>", "x", f64::NAN, T0),
            Err(StoreError::Invalid(_))
        ));
    }
}
