//! The health check's restarts as the audit trail holds them (`[daemon.health]`): when the
//! latest started, so the hour's limit and the cool-down hold across a restart of guardian,
//! and how many of each kind there have been, for the action's track record. Both read the
//! trail's (kind, seq) index; no table of their own.

use super::{Doing, Result, Store};
use crate::change::EventKind;

impl Store {
    /// When the latest `limit` records of `kind` were made, and their subjects, newest first.
    pub fn latest_events_of(
        &self,
        kind: EventKind,
        limit: u32,
    ) -> Result<Vec<(f64, Option<String>)>> {
        let doing = || format!("reading the latest {kind} records");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT at, subject FROM events WHERE kind = ?1 ORDER BY seq DESC LIMIT ?2",
            )
            .doing(doing)?;
        let rows = stmt
            .query_map(rusqlite::params![kind.as_str(), limit], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .doing(doing)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing(doing)
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
}
