//! What Sentry told guardian: each delivery remembered a day so it is processed once, the
//! issues as last described, and their events counted in 10-second bins.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{append_record, finite, Doing, EventKind, Result, Store, StoreError};
use crate::sentry::{Event, Issue, Notice, Verified, ISSUE_REPLAY_WINDOW_SECS, REPLAY_WINDOW_SECS};

/// Whether a delivery was new.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivered {
    New,
    /// The same body (or the same `Request-ID`) came before: nothing was done again.
    Duplicate {
        received_at: f64,
    },
}

/// Bins of events per issue are this wide (seconds).
const BIN_SECS: f64 = 10.0;

impl Store {
    /// Records a verified delivery and what it said, once: a body (or request id) seen in the
    /// last day is a [`Delivered::Duplicate`] and changes nothing. An issue's lifecycle goes on
    /// the audit trail (actor `sentry`); single events only into the counts.
    pub fn sentry_delivery(
        &mut self,
        delivery: &Verified,
        notice: &Notice,
        now: f64,
    ) -> Result<Delivered> {
        finite("now", now)?;
        let doing = || {
            format!(
                "recording the Sentry {} delivery {}",
                delivery.resource,
                delivery
                    .request_id
                    .as_deref()
                    .unwrap_or(&delivery.body_sha256)
            )
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        forget(&tx, now).doing(doing)?;
        let seen: Option<f64> = tx
            .query_row(
                "SELECT received_at FROM sentry_deliveries \
                 WHERE body_sha256 = ?1 OR request_id = ?2",
                params![delivery.body_sha256, delivery.request_id],
                |row| row.get(0),
            )
            .optional()
            .doing(doing)?;
        if let Some(received_at) = seen {
            return Ok(Delivered::Duplicate { received_at });
        }
        tx.execute(
            "INSERT INTO sentry_deliveries (body_sha256, request_id, resource, received_at) \
             VALUES (?1, ?2, ?3, ?4)",
            params![
                delivery.body_sha256,
                delivery.request_id,
                delivery.resource,
                now
            ],
        )
        .doing(doing)?;
        match notice {
            Notice::Issue { action, issue } => {
                put_issue(&tx, issue, Told::Webhook, now).doing(doing)?;
                let told = serde_json::json!({
                    "request_id": delivery.request_id,
                    "body_sha256": delivery.body_sha256,
                });
                record_issue(&tx, issue, action.as_str(), told, now).doing(doing)?;
            }
            Notice::Error(event) | Notice::Alert { event, .. } => {
                put_issue(&tx, &event.issue(), Told::Event, now).doing(doing)?;
                // Sentry may tell one event twice (an `error` and an `event_alert`), and the
                // API again.
                put_event(&tx, event, Told::Webhook, now).doing(doing)?;
            }
            Notice::Unused { .. } => {}
        }
        tx.commit().doing(doing)?;
        Ok(Delivered::New)
    }

    /// How many issues were first seen at or after `since`.
    pub fn sentry_issues_count_since(&self, since: f64) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM sentry_issues WHERE first_seen >= ?1",
                [since],
                |row| row.get::<_, i64>(0),
            )
            .doing(|| "counting Sentry issues".to_owned())
            .map(|n| n.max(0) as u64)
    }

    /// Issues first seen at or after `since`, newest first, at most `limit`.
    pub fn sentry_issues_since(&self, since: f64, limit: u32) -> Result<Vec<Issue>> {
        self.read_issues(
            "WHERE first_seen >= ?1 ORDER BY first_seen DESC, id DESC LIMIT ?2",
            params![since, limit],
        )
    }

    /// The issue with this id, or this short id (`SHOP-1A`, in any case), if guardian has
    /// heard of it.
    pub fn sentry_issue(&self, id_or_short_id: &str) -> Result<Option<Issue>> {
        let mut found = self.read_issues(
            "WHERE id = ?1 OR short_id = ?1 COLLATE NOCASE ORDER BY id = ?1 DESC LIMIT 1",
            params![id_or_short_id],
        )?;
        Ok(found.pop())
    }

    /// The issues `reference` may name: the one with that id, else those with that short id
    /// (in any case; more than one is for the caller to refuse as ambiguous).
    pub fn sentry_issues_named(&self, reference: &str) -> Result<Vec<Issue>> {
        let by_id = self.read_issues("WHERE id = ?1", params![reference])?;
        if !by_id.is_empty() {
            return Ok(by_id);
        }
        self.read_issues(
            "WHERE short_id = ?1 COLLATE NOCASE ORDER BY id LIMIT 2",
            params![reference],
        )
    }

    /// Whether an issue guardian keeps links to `origin` (`https://sentry.example.com`): the
    /// Sentry its links come from.
    pub fn sentry_links_to(&self, origin: &str) -> Result<bool> {
        let prefix = format!("{origin}/");
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sentry_issues \
                 WHERE substr(web_url, 1, length(?1)) = ?1)",
                [&prefix],
                |row| row.get(0),
            )
            .doing(|| "reading where Sentry's links go".to_owned())
    }

    fn read_issues(&self, filter: &str, params: impl rusqlite::Params) -> Result<Vec<Issue>> {
        let doing = || "reading Sentry issues".to_owned();
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT id, short_id, title, culprit, level, status, substatus, project, \
                 web_url, first_seen, last_seen, count, files FROM sentry_issues {filter}"
            ))
            .doing(doing)?;
        let rows = stmt
            .query_map(params, |row| {
                Ok((
                    Issue {
                        id: row.get(0)?,
                        short_id: row.get(1)?,
                        title: row.get(2)?,
                        culprit: row.get(3)?,
                        level: row.get(4)?,
                        status: row.get(5)?,
                        substatus: row.get(6)?,
                        project: row.get(7)?,
                        web_url: row.get(8)?,
                        first_seen: row.get(9)?,
                        last_seen: row.get(10)?,
                        count: row.get::<_, Option<i64>>(11)?.map(|n| n.max(0) as u64),
                        files: Vec::new(),
                    },
                    row.get::<_, String>(12)?,
                ))
            })
            .doing(doing)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .doing(doing)?;
        rows.into_iter()
            .map(|(mut issue, files)| {
                issue.files = serde_json::from_str(&files).map_err(|error| StoreError::Json {
                    doing: format!("reading the files of Sentry issue {}", issue.id),
                    error,
                })?;
                Ok(issue)
            })
            .collect()
    }

    /// When `issue_id` last had an event before the 10-second bin `before` falls in: the
    /// start of that event's bin.
    pub fn sentry_last_event_before(&self, issue_id: &str, before: f64) -> Result<Option<f64>> {
        let doing = || format!("finding the last event of Sentry issue {issue_id}");
        self.conn
            .query_row(
                "SELECT MAX(bin) FROM sentry_events \
                 WHERE issue_id = ?1 AND bin < ?2 AND events > 0",
                params![issue_id, (before / BIN_SECS).floor() as i64],
                |row| row.get::<_, Option<i64>>(0),
            )
            .doing(doing)
            .map(|bin| bin.map(|b| b as f64 * BIN_SECS))
    }

    /// Events of `issue_id` in `[from, to)`, to the 10-second bin.
    pub fn sentry_events(&self, issue_id: &str, from: f64, to: f64) -> Result<u64> {
        let doing = || format!("counting events of Sentry issue {issue_id}");
        self.conn
            .query_row(
                "SELECT COALESCE(SUM(events), 0) FROM sentry_events \
                 WHERE issue_id = ?1 AND bin >= ?2 AND bin < ?3",
                params![
                    issue_id,
                    (from / BIN_SECS).floor() as i64,
                    (to / BIN_SECS).floor() as i64
                ],
                |row| row.get::<_, i64>(0),
            )
            .doing(doing)
            .map(|n| n.max(0) as u64)
    }

    /// The issues with events in `[from, to)` (to the 10-second bin) and how many, most first,
    /// at most `limit`.
    pub fn sentry_events_by_issue(
        &self,
        from: f64,
        to: f64,
        limit: u32,
    ) -> Result<Vec<(String, u64)>> {
        let doing = || "counting Sentry events by issue".to_owned();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT issue_id, SUM(events) AS n FROM sentry_events \
                 WHERE bin >= ?1 AND bin < ?2 GROUP BY issue_id \
                 ORDER BY n DESC, issue_id LIMIT ?3",
            )
            .doing(doing)?;
        let rows = stmt
            .query_map(
                params![
                    (from / BIN_SECS).floor() as i64,
                    (to / BIN_SECS).floor() as i64,
                    limit
                ],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?.max(0) as u64,
                    ))
                },
            )
            .doing(doing)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .doing(doing)?;
        Ok(rows)
    }

    /// Events of every issue in `[from, to)`, to the 10-second bin: what a watch compares.
    pub fn sentry_events_all(&self, from: f64, to: f64) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT COALESCE(SUM(events), 0) FROM sentry_events WHERE bin >= ?1 AND bin < ?2",
                params![
                    (from / BIN_SECS).floor() as i64,
                    (to / BIN_SECS).floor() as i64
                ],
                |row| row.get::<_, i64>(0),
            )
            .doing(|| "counting Sentry events".to_owned())
            .map(|n| n.max(0) as u64)
    }

    /// When the last delivery from Sentry arrived, if one did in the last day.
    pub fn sentry_last_delivery(&self) -> Result<Option<f64>> {
        self.conn
            .query_row(
                "SELECT MAX(received_at) FROM sentry_deliveries",
                [],
                |row| row.get(0),
            )
            .doing(|| "reading the last Sentry delivery".to_owned())
    }
}

/// Who told guardian of an issue or an event.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Told {
    /// An `issue` delivery, or an event's delivery.
    Webhook,
    /// Sentry's API: an event polled, or an issue's details fetched.
    Api,
    /// An event (of either), which says little of its issue.
    Event,
}

impl Told {
    fn as_str(self) -> Option<&'static str> {
        match self {
            Told::Webhook => Some("webhook"),
            Told::Api => Some("api"),
            Told::Event => None,
        }
    }
}

/// What is forgotten: event deliveries and event ids after a day (an older event is refused by
/// its own time), issue deliveries after 90 days (an issue not seen for that long is refused
/// as stale), and issues and their counts not seen for 90 days.
fn forget(tx: &rusqlite::Connection, now: f64) -> rusqlite::Result<()> {
    let (day, long) = (now - REPLAY_WINDOW_SECS, now - ISSUE_REPLAY_WINDOW_SECS);
    tx.execute(
        "DELETE FROM sentry_deliveries WHERE received_at < ?2 \
         OR (resource <> 'issue' AND received_at < ?1)",
        params![day, long],
    )?;
    tx.execute("DELETE FROM sentry_event_ids WHERE received_at < ?1", [day])?;
    tx.execute(
        "DELETE FROM sentry_issues WHERE COALESCE(last_seen, first_seen) < ?1",
        [long],
    )?;
    tx.execute(
        "DELETE FROM sentry_events WHERE bin < ?1",
        [(long / BIN_SECS).floor() as i64],
    )?;
    Ok(())
}

/// Counts an event in its issue's bin, once whoever tells it: whether it was new.
fn put_event(
    tx: &rusqlite::Connection,
    event: &Event,
    told: Told,
    now: f64,
) -> rusqlite::Result<bool> {
    let new_event = tx.execute(
        "INSERT OR IGNORE INTO sentry_event_ids \
         (event_id, received_at, issue_id, at, release, source) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            event.event_id,
            now,
            event.issue_id,
            event.at,
            event.release,
            told.as_str()
        ],
    )? == 1;
    if new_event {
        tx.execute(
            "INSERT INTO sentry_events (issue_id, bin, events) VALUES (?1, ?2, 1) \
             ON CONFLICT (issue_id, bin) DO UPDATE SET events = events + 1",
            params![event.issue_id, (event.at / BIN_SECS).floor() as i64],
        )?;
    }
    Ok(new_event)
}

/// What a poll of Sentry's API added.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Polled {
    /// Events not told before (by a delivery or an earlier poll).
    pub new_events: u64,
    /// Issues of those events Sentry has not described to guardian yet (no short id): their
    /// details are worth asking for.
    pub undescribed: Vec<String>,
    /// Issues the poll described or brought new events of, each once: what the agent's
    /// trigger considers, as it does a delivery's.
    pub heard: Vec<String>,
}

impl Store {
    /// Records what a poll of Sentry's API brought: its events, each counted once whoever
    /// else told it (a delivery, an earlier poll's overlap), and the issues whose details it
    /// fetched, kept as Sentry described them and marked as learned from the API.
    pub fn sentry_polled(
        &mut self,
        events: &[Event],
        issues: &[Issue],
        now: f64,
    ) -> Result<Polled> {
        finite("now", now)?;
        let doing = || "recording what Sentry's API told".to_owned();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        forget(&tx, now).doing(doing)?;
        let mut polled = Polled::default();
        for issue in issues {
            put_issue(&tx, issue, Told::Api, now).doing(doing)?;
            // On the trail as a delivered issue is: what guardian learned, and from whom.
            let told = serde_json::json!({ "source": "api" });
            record_issue(&tx, issue, "described", told, now).doing(doing)?;
            if !polled.heard.contains(&issue.id) {
                polled.heard.push(issue.id.clone());
            }
        }
        for event in events {
            if put_event(&tx, event, Told::Api, now).doing(doing)? {
                polled.new_events += 1;
                if !polled.heard.contains(&event.issue_id) {
                    polled.heard.push(event.issue_id.clone());
                }
                put_issue(&tx, &event.issue(), Told::Event, now).doing(doing)?;
                let described: bool = tx
                    .query_row(
                        "SELECT short_id IS NOT NULL FROM sentry_issues WHERE id = ?1",
                        [&event.issue_id],
                        |row| row.get(0),
                    )
                    .doing(doing)?;
                if !described && !polled.undescribed.contains(&event.issue_id) {
                    polled.undescribed.push(event.issue_id.clone());
                }
            }
        }
        tx.commit().doing(doing)?;
        Ok(polled)
    }

    /// Events in `[from, to)` per release (those that said theirs), most first, at most
    /// `limit`: from the events remembered by id, so within the last day.
    pub fn sentry_events_by_release(
        &self,
        from: f64,
        to: f64,
        limit: u32,
    ) -> Result<Vec<(String, u64)>> {
        let doing = || "counting Sentry events by release".to_owned();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT release, COUNT(*) AS n FROM sentry_event_ids \
                 WHERE at >= ?1 AND at < ?2 AND release IS NOT NULL \
                 GROUP BY release ORDER BY n DESC, release LIMIT ?3",
            )
            .doing(doing)?;
        let rows = stmt
            .query_map(params![from, to, limit], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?.max(0) as u64,
                ))
            })
            .doing(doing)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .doing(doing)?;
        Ok(rows)
    }
}

/// In-app files kept per issue, at most.
const MAX_FILES: usize = 64;

/// Inserts or updates an issue. An `issue` delivery is Sentry's own account and replaces what
/// was kept (`authoritative`); an event only adds what is not known yet and moves the last
/// sighting on.
fn put_issue(
    conn: &rusqlite::Connection,
    issue: &Issue,
    told: Told,
    now: f64,
) -> rusqlite::Result<()> {
    let authoritative = told != Told::Event;
    // Every in-app file any delivery named is kept (the latest first): what a later delivery
    // leaves out (an `issue` delivery names one file at most) is still where the issue broke,
    // and the agent's denied paths are checked against all of them.
    let kept: Option<String> = conn
        .query_row(
            "SELECT files FROM sentry_issues WHERE id = ?1",
            [&issue.id],
            |row| row.get(0),
        )
        .optional()?;
    let mut merged = issue.files.clone();
    for file in kept
        .and_then(|k| serde_json::from_str::<Vec<String>>(&k).ok())
        .unwrap_or_default()
    {
        if !merged.contains(&file) {
            merged.push(file);
        }
    }
    merged.truncate(MAX_FILES);
    let files = serde_json::to_string(&merged).unwrap_or_else(|_| "[]".into());
    if authoritative {
        conn.execute(
            "INSERT INTO sentry_issues (id, short_id, title, culprit, level, status, substatus, \
             project, web_url, first_seen, last_seen, count, files, updated_at, source) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
             ON CONFLICT (id) DO UPDATE SET short_id = excluded.short_id, \
             title = excluded.title, culprit = excluded.culprit, level = excluded.level, \
             status = excluded.status, substatus = excluded.substatus, \
             project = excluded.project, web_url = excluded.web_url, \
             first_seen = excluded.first_seen, \
             last_seen = MAX(COALESCE(last_seen, 0), COALESCE(excluded.last_seen, 0)), \
             count = excluded.count, files = excluded.files, updated_at = excluded.updated_at, \
             source = excluded.source",
            params![
                issue.id,
                issue.short_id,
                issue.title,
                issue.culprit,
                issue.level,
                issue.status,
                issue.substatus,
                issue.project,
                issue.web_url,
                issue.first_seen,
                issue.last_seen,
                issue.count.map(|c| c.min(i64::MAX as u64) as i64),
                files,
                now,
                told.as_str()
            ],
        )?;
    } else {
        conn.execute(
            "INSERT INTO sentry_issues (id, title, culprit, level, first_seen, last_seen, files, \
             updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7) \
             ON CONFLICT (id) DO UPDATE SET \
             first_seen = MIN(first_seen, excluded.first_seen), \
             last_seen = MAX(COALESCE(last_seen, 0), excluded.last_seen), \
             files = excluded.files, \
             updated_at = excluded.updated_at",
            params![
                issue.id,
                issue.title,
                issue.culprit,
                issue.level,
                issue.first_seen,
                files,
                now
            ],
        )?;
    }
    Ok(())
}

/// An issue as Sentry told it, on the audit trail (`sentry_issue`): what it said, and how it
/// came (`told`: the delivery's ids, or the API as its source).
fn record_issue(
    tx: &rusqlite::Transaction<'_>,
    issue: &Issue,
    action: &str,
    told: serde_json::Value,
    now: f64,
) -> rusqlite::Result<i64> {
    let mut detail = serde_json::json!({
        "action": action,
        "issue": issue.id,
        "short_id": issue.short_id,
        "title": issue.title,
        "status": issue.status,
        "substatus": issue.substatus,
    });
    if let (Some(detail), serde_json::Value::Object(told)) = (detail.as_object_mut(), told) {
        detail.extend(told);
    }
    append_record(
        tx,
        now,
        "sentry",
        EventKind::SentryIssue,
        Some(&issue.id),
        None,
        &detail.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentry::{read, verify, webhook::sign, Headers};

    const NOW: f64 = 1_764_000_300.0;

    fn delivery(resource: &str, file: &str, request_id: &str) -> (Verified, Notice) {
        let body = crate::sentry::testing::payload(file);
        let signature = sign(b"secret", &body);
        let headers = Headers {
            resource: Some(resource),
            request_id: Some(request_id),
            timestamp: Some("1764000299"),
            signature: Some(&signature),
        };
        let verified = verify(b"secret", &headers, &body, NOW, 300).unwrap();
        (verified, read(resource, &body, NOW).unwrap())
    }

    #[test]
    fn each_delivery_is_processed_once_whatever_its_request_id_says() {
        let mut store = Store::open_in_memory().unwrap();
        let (v, n) = delivery("error", "error_created.json", "r1");
        assert_eq!(store.sentry_delivery(&v, &n, NOW).unwrap(), Delivered::New);
        // The same body again (a replay with a made-up request id), and the same request id.
        let replayed = Verified {
            request_id: Some("r2".into()),
            ..v.clone()
        };
        assert_eq!(
            store.sentry_delivery(&replayed, &n, NOW + 5.0).unwrap(),
            Delivered::Duplicate { received_at: NOW }
        );
        let (alert, alert_notice) = delivery("event_alert", "event_alert_triggered.json", "r1");
        assert_eq!(
            store
                .sentry_delivery(&alert, &alert_notice, NOW + 6.0)
                .unwrap(),
            Delivered::Duplicate { received_at: NOW }
        );
        assert_eq!(
            store
                .sentry_events("4504981122", NOW - 600.0, NOW + 600.0)
                .unwrap(),
            1,
            "the replays counted nothing"
        );
        // One event told by an `error` and again by an `event_alert` counts once.
        let (alert, alert_notice) = delivery("event_alert", "event_alert_triggered.json", "r3");
        let Notice::Alert { event, rule } = alert_notice else {
            panic!()
        };
        let (Notice::Error(first) | Notice::Alert { event: first, .. }) = &n else {
            panic!()
        };
        let same_event = Notice::Alert {
            rule,
            event: crate::sentry::Event {
                event_id: first.event_id.clone(),
                ..event
            },
        };
        assert_eq!(
            store
                .sentry_delivery(&alert, &same_event, NOW + 7.0)
                .unwrap(),
            Delivered::New
        );
        assert_eq!(
            store
                .sentry_events("4504981122", NOW - 600.0, NOW + 600.0)
                .unwrap(),
            1
        );
        // A day later the body is forgotten (its event is then refused as stale by `read`).
        assert_eq!(
            store
                .sentry_delivery(&replayed, &n, NOW + REPLAY_WINDOW_SECS + 1.0)
                .unwrap(),
            Delivered::New
        );
    }

    #[test]
    fn an_issue_is_kept_as_sentry_last_described_it_and_its_lifecycle_audited() {
        let mut store = Store::open_in_memory().unwrap();
        // The event comes before the issue's own delivery: the issue is known from it.
        let (v, n) = delivery("error", "error_created.json", "r1");
        store.sentry_delivery(&v, &n, NOW).unwrap();
        let issues = store.sentry_issues_since(NOW - 3600.0, 10).unwrap();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].first_seen, 1_764_000_040.25);
        assert_eq!(
            issues[0].files,
            ["app/checkout/totals.py", "app/checkout/views.py"]
        );
        let (v, n) = delivery("issue", "issue_created.json", "r2");
        store.sentry_delivery(&v, &n, NOW + 1.0).unwrap();
        let issue = &store.sentry_issues_since(NOW - 3600.0, 10).unwrap()[0];
        assert_eq!(
            issue.first_seen, 1_764_000_012.5,
            "Sentry's own first sighting"
        );
        assert_eq!(issue.short_id.as_deref(), Some("SHOP-API-1Z"));
        assert_eq!(issue.last_seen, Some(1_764_000_040.25));
        let (v, n) = delivery("issue", "issue_resolved.json", "r3");
        store.sentry_delivery(&v, &n, NOW + 2.0).unwrap();
        let issue = &store.sentry_issues_since(NOW - 3600.0, 10).unwrap()[0];
        assert_eq!(issue.status.as_deref(), Some("resolved"));
        let trail: Vec<String> = store
            .conn
            .prepare("SELECT actor || ' ' || kind || ' ' || subject FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            trail,
            [
                "sentry sentry_issue 4504981122",
                "sentry sentry_issue 4504981122"
            ]
        );
        assert_eq!(store.sentry_last_delivery().unwrap(), Some(NOW + 2.0));
    }

    #[test]
    fn an_event_both_delivered_and_polled_counts_once_and_keeps_its_release() {
        let mut store = Store::open_in_memory().unwrap();
        let (v, n) = delivery("error", "error_created.json", "r1");
        store.sentry_delivery(&v, &n, NOW).unwrap();
        let (Notice::Error(delivered)
        | Notice::Alert {
            event: delivered, ..
        }) = &n
        else {
            panic!()
        };
        let polled_again = delivered.clone();
        let other = Event {
            event_id: "aa".repeat(16),
            issue_id: "4504981999".into(),
            title: "TypeError".into(),
            culprit: None,
            level: None,
            at: NOW - 20.0,
            release: Some("shop-api@2".into()),
            web_url: None,
            files: Vec::new(),
        };
        let polled = store
            .sentry_polled(&[polled_again, other.clone()], &[], NOW + 30.0)
            .unwrap();
        assert_eq!(
            polled.new_events, 1,
            "the delivered event is not counted again"
        );
        assert_eq!(polled.undescribed, ["4504981999"]);
        assert_eq!(
            polled.heard,
            ["4504981999"],
            "the agent's trigger hears of it"
        );
        // The same page again (the next poll's overlap) adds nothing.
        let again = store.sentry_polled(&[other], &[], NOW + 60.0).unwrap();
        assert_eq!(again, Polled::default());
        assert_eq!(
            store.sentry_events_all(NOW - 600.0, NOW + 600.0).unwrap(),
            2
        );
        assert_eq!(
            store
                .sentry_events_by_release(NOW - 600.0, NOW + 600.0, 10)
                .unwrap(),
            [
                ("shop-api@2".to_owned(), 1),
                ("shop-api@9c1e2f0".to_owned(), 1)
            ]
        );
        // Its details, fetched from the API, describe the issue; it is no longer undescribed.
        let details = crate::sentry::read_issue_details(&crate::sentry::testing::payload(
            "issue_details.json",
        ))
        .unwrap();
        let described = store.sentry_polled(&[], &[details], NOW + 61.0).unwrap();
        assert_eq!(described.heard, ["4504981999"]);
        let (kind, detail): (String, String) = store
            .conn
            .query_row(
                "SELECT kind, detail FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            kind, "sentry_issue",
            "what the API described is on the trail"
        );
        assert!(
            detail.contains("\"source\":\"api\"") && detail.contains("SHOP-API-3F"),
            "{detail}"
        );
        let issue = store.sentry_issue("SHOP-API-3F").unwrap().unwrap();
        assert_eq!(issue.id, "4504981999");
        let source: String = store
            .conn
            .query_row(
                "SELECT source FROM sentry_issues WHERE id = '4504981999'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(source, "api");
    }
}
