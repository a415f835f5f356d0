//! The notifications' outbox (`[[daemon.notify]]`): a change's outcome for each target, queued
//! once by its id (change, state, target), retried until the target accepts it, never deleted.
//! A notification accepted is noted in the change's decision log.

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::events::append_event;
use super::{finite, Doing, EventKind, Result, Store, StoreError};

/// A notification in the outbox.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notification {
    /// `<change id>.<state>.<target>`: the key.
    pub id: String,
    pub target: String,
    pub change_id: Option<String>,
    pub state: String,
    /// The request's JSON body, as it is sent.
    pub body: String,
    pub created_at: f64,
    pub attempts: u32,
    pub next_attempt_at: f64,
    pub last_attempt_at: Option<f64>,
    pub last_error: Option<String>,
    pub sent_at: Option<f64>,
}

const COLUMNS: &str = "id, target, change_id, state, body, created_at, attempts, \
                       next_attempt_at, last_attempt_at, last_error, sent_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Notification> {
    Ok(Notification {
        id: r.get(0)?,
        target: r.get(1)?,
        change_id: r.get(2)?,
        state: r.get(3)?,
        body: r.get(4)?,
        created_at: r.get(5)?,
        attempts: r.get::<_, i64>(6)?.clamp(0, i64::from(u32::MAX)) as u32,
        next_attempt_at: r.get(7)?,
        last_attempt_at: r.get(8)?,
        last_error: r.get(9)?,
        sent_at: r.get(10)?,
    })
}

impl Store {
    /// Queues a notification, due now. Idempotent on its id: queuing it again (a crash
    /// between queuing and what followed) keeps the first row, sent or not. Returns whether a
    /// row was added.
    pub fn enqueue_notification(
        &mut self,
        target: &str,
        change_id: &str,
        state: &str,
        body: &str,
        now: f64,
    ) -> Result<bool> {
        finite("now", now)?;
        let id = format!("{change_id}.{state}.{target}");
        let added = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO notifications \
                 (id, target, change_id, state, body, created_at, next_attempt_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![id, target, change_id, state, body, now],
            )
            .doing(|| format!("queuing notification {id}"))?;
        Ok(added == 1)
    }

    /// Notifications not yet accepted, due or not, in the order they were queued: each
    /// target takes its own in that order (Alertmanager must hear an alert fire before it
    /// hears it resolve).
    pub fn queued_notifications(&self, limit: usize) -> Result<Vec<Notification>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let doing = || "reading queued notifications".to_owned();
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM notifications WHERE sent_at IS NULL \
                 ORDER BY created_at, rowid LIMIT ?1"
            ))
            .doing(doing)?;
        let rows = stmt
            .query_map(params![limit], row)
            .doing(doing)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .doing(doing)?;
        Ok(rows)
    }

    /// The notification with this id, accepted or not.
    pub fn get_notification(&self, id: &str) -> Result<Option<Notification>> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM notifications WHERE id = ?1"),
                [id],
                row,
            )
            .optional()
            .doing(|| format!("reading notification {id}"))
    }

    /// How many notifications wait, and why the latest failed attempt failed.
    pub fn pending_notifications(&self) -> Result<(usize, Option<String>)> {
        let doing = || "counting queued notifications".to_owned();
        let n: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM notifications WHERE sent_at IS NULL",
                [],
                |r| r.get(0),
            )
            .doing(doing)?;
        let why: Option<String> = self
            .conn
            .query_row(
                "SELECT target || ': ' || last_error FROM notifications \
                 WHERE sent_at IS NULL AND last_error IS NOT NULL \
                 ORDER BY last_attempt_at DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .doing(doing)?;
        Ok((usize::try_from(n).unwrap_or(0), why))
    }

    /// The target accepted it: counts the attempt, and notes it in the change's log. One
    /// already accepted keeps its first `sent_at`.
    pub fn notification_sent(&mut self, id: &str, answer: &str, now: f64) -> Result<()> {
        finite("now", now)?;
        let doing = || format!("marking notification {id} sent");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        let changed = tx
            .execute(
                "UPDATE notifications SET sent_at = ?2, last_attempt_at = ?2, \
                 attempts = attempts + 1 WHERE id = ?1 AND sent_at IS NULL",
                params![id, now],
            )
            .doing(doing)?;
        if changed == 1 {
            let (target, change_id, state, attempts): (String, Option<String>, String, i64) = tx
                .query_row(
                    "SELECT target, change_id, state, attempts FROM notifications WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .doing(doing)?;
            if let Some(change_id) = change_id {
                let detail = serde_json::json!({
                    "target": target,
                    "state": state,
                    "attempts": attempts,
                    "answer": answer,
                });
                append_event(
                    &tx,
                    now,
                    Some(&change_id),
                    EventKind::NotificationSent,
                    &detail,
                )
                .doing(doing)?;
            }
        } else if tx
            .query_row(
                "SELECT 1 FROM notifications WHERE id = ?1",
                [id],
                |_| Ok(()),
            )
            .optional()
            .doing(doing)?
            .is_none()
        {
            return Err(StoreError::Invalid(format!("no notification {id}")));
        }
        tx.commit().doing(doing)
    }

    /// An attempt failed: counts it, keeps the error, and sets when to try again.
    pub fn notification_failed(
        &mut self,
        id: &str,
        error: &str,
        next_attempt_at: f64,
        now: f64,
    ) -> Result<()> {
        finite("now", now)?;
        finite("next_attempt_at", next_attempt_at)?;
        self.conn
            .execute(
                "UPDATE notifications SET attempts = attempts + 1, last_error = ?2, \
                 next_attempt_at = ?3, last_attempt_at = ?4 WHERE id = ?1 AND sent_at IS NULL",
                params![id, error, next_attempt_at, now],
            )
            .doing(|| format!("recording a failed attempt of notification {id}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_764_000_000.0;

    #[test]
    fn a_notification_is_queued_once_retried_and_accepted_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("g.db")).unwrap();
        let c = store
            .insert_change(&super::super::testing::change("9c1e2f0", NOW), NOW)
            .unwrap();
        assert!(store
            .enqueue_notification("slack", &c.id, "rolled_back", "{}", NOW)
            .unwrap());
        assert!(
            !store
                .enqueue_notification("slack", &c.id, "rolled_back", "{\"x\":1}", NOW + 1.0)
                .unwrap(),
            "queued again after a crash: the first row stands"
        );
        let due = store.queued_notifications(10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].body, "{}");
        store
            .notification_failed(&due[0].id, "connection refused", NOW + 5.0, NOW)
            .unwrap();
        assert_eq!(
            store.queued_notifications(10).unwrap()[0].next_attempt_at,
            NOW + 5.0
        );
        assert_eq!(
            store.pending_notifications().unwrap(),
            (1, Some("slack: connection refused".to_owned()))
        );
        let id = format!("{}.rolled_back.slack", c.id);
        let id = id.as_str();
        store.notification_sent(id, "200", NOW + 6.0).unwrap();
        store.notification_sent(id, "200", NOW + 7.0).unwrap();
        let n = store.get_notification(id).unwrap().unwrap();
        assert_eq!((n.attempts, n.sent_at), (2, Some(NOW + 6.0)));
        assert_eq!(store.pending_notifications().unwrap().0, 0);
        assert!(store.queued_notifications(10).unwrap().is_empty());
    }
}
