//! The health check's restarts as the audit trail holds them (`[daemon.health]`): when the
//! latest started, so the hour's limit and the cool-down hold across a restart of guardian,
//! and how many of each kind there have been, for the action's track record. All read the
//! trail's (kind, seq) index; no table of their own.

use rusqlite::OptionalExtension;
use serde_json::Value;

use super::{Doing, Result, Store, StoreError};
use crate::change::EventKind;

/// One record of a kind, as read back for the health check.
#[derive(Clone, Debug, PartialEq)]
pub struct LatestRecord {
    pub at: f64,
    pub subject: Option<String>,
    pub detail: Value,
}

impl Store {
    /// The latest `limit` records of `kind`, newest first.
    pub fn latest_events_of(&self, kind: EventKind, limit: u32) -> Result<Vec<LatestRecord>> {
        let doing = || format!("reading the latest {kind} records");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, at, subject, detail FROM events WHERE kind = ?1 \
                 ORDER BY seq DESC LIMIT ?2",
            )
            .doing(doing)?;
        let rows = stmt
            .query_map(rusqlite::params![kind.as_str(), limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, f64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .doing(doing)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .doing(doing)?;
        rows.into_iter()
            .map(|(seq, at, subject, detail)| {
                let detail = serde_json::from_str(&detail).map_err(|error| StoreError::Json {
                    doing: format!("reading event {seq}"),
                    error,
                })?;
                Ok(LatestRecord {
                    at,
                    subject,
                    detail,
                })
            })
            .collect()
    }

    /// How many records of `kind` the trail holds.
    pub fn count_events(&self, kind: EventKind) -> Result<u64> {
        let doing = || format!("counting {kind} records");
        let n: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM events WHERE kind = ?1",
                [kind.as_str()],
                |r| r.get(0),
            )
            .doing(doing)?;
        Ok(n.max(0) as u64)
    }

    /// The restart's own setbacks: every `restart_escalated` but those with reason `no_action`
    /// (no restart was configured, so nothing of the restart's failed); how many, and the
    /// latest. Escalations are few (one a restart at most, and one when the hour's are spent),
    /// so reading their reason costs little however long the trail grows.
    pub fn restart_setbacks(&self) -> Result<(u64, Option<LatestRecord>)> {
        const OF_THE_RESTART: &str = "kind = ?1 \
             AND COALESCE(json_extract(detail, '$.reason'), '') != 'no_action'";
        let kind = EventKind::RestartEscalated;
        let doing = || format!("reading the restart's {kind} records");
        let n: i64 = self
            .conn
            .query_row(
                &format!("SELECT COUNT(*) FROM events WHERE {OF_THE_RESTART}"),
                [kind.as_str()],
                |r| r.get(0),
            )
            .doing(doing)?;
        let latest = self
            .conn
            .query_row(
                &format!(
                    "SELECT seq, at, subject, detail FROM events WHERE {OF_THE_RESTART} \
                     ORDER BY seq DESC LIMIT 1"
                ),
                [kind.as_str()],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, f64>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()
            .doing(doing)?;
        let latest = match latest {
            None => None,
            Some((seq, at, subject, detail)) => Some(LatestRecord {
                at,
                subject,
                detail: serde_json::from_str(&detail).map_err(|error| StoreError::Json {
                    doing: format!("reading event {seq}"),
                    error,
                })?,
            }),
        };
        Ok((n.max(0) as u64, latest))
    }
}
