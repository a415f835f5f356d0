//! The decision log, which is the audit chain: rows appended, never edited (triggers refuse
//! it), each with its actor and the SHA-256 of its stored bytes chained to the row before
//! (`crate::audit::record_hash`). Every writer in the store appends through `append_record`,
//! in the transaction of the change it records.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::changes::current_state;
use super::{finite, Doing, EventKind, Result, Store, StoreError, StoredKind};

/// One row of the decision log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventRecord {
    /// Position in the log, increasing, never reused.
    pub seq: i64,
    pub at: f64,
    pub change_id: Option<String>,
    /// What it records; a kind this version does not know reads as its text.
    pub kind: StoredKind,
    pub detail: Value,
}

impl EventRecord {
    /// The detail read into the type its kind is written from ([`super::StateChange`] for
    /// `state_changed`, `RollbackReport` for `rollback`, ...): an error when it does not read.
    pub fn detail_as<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        T::deserialize(&self.detail)
    }
}

impl Store {
    /// Appends an event about a change to the decision log (e.g. the commands a rollback ran and
    /// what they printed). The log is append-only: there is no way to edit it.
    pub fn record_event(
        &mut self,
        change_id: &str,
        kind: EventKind,
        detail: &Value,
        now: f64,
    ) -> Result<()> {
        finite("now", now)?;
        let doing = || format!("recording {kind} for change {change_id}");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        current_state(&tx, change_id).doing(doing)??;
        append_event(&tx, now, Some(change_id), kind, detail).doing(doing)?;
        tx.commit().doing(doing)?;
        Ok(())
    }

    /// Appends a record to the audit chain that is not a change's state transition: a
    /// proposal and the policy's decision, an approval, a policy load, an email. `actor` is
    /// who caused it (`guardian` for the daemon's own decisions, `agent`, `approver:<name>`,
    /// `admin`), never taken from the payload; `subject` names what it is about when that is
    /// not a change (e.g. a proposal id); `change_id`, when given, must be a known change.
    /// Returns the record's seq. To record a state change with it, write both in one
    /// transaction: the store's own methods do.
    pub fn audit(
        &mut self,
        actor: &str,
        kind: EventKind,
        subject: Option<&str>,
        change_id: Option<&str>,
        detail: &Value,
        now: f64,
    ) -> Result<u64> {
        finite("now", now)?;
        if actor.trim().is_empty() {
            return Err(StoreError::Invalid(format!(
                "an audit record needs an actor, got {actor:?} for {kind}"
            )));
        }
        let doing = || {
            let about = change_id.or(subject).unwrap_or("nothing in particular");
            format!("recording {kind} by {actor} about {about}")
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        if let Some(id) = change_id {
            current_state(&tx, id).doing(doing)??;
        }
        let seq = append_record(
            &tx,
            now,
            actor,
            kind,
            subject,
            change_id,
            &detail.to_string(),
        )
        .doing(doing)?;
        tx.commit().doing(doing)?;
        Ok(seq as u64)
    }

    /// The decision log of one change, in order.
    pub fn events_for(&self, change_id: &str) -> Result<Vec<EventRecord>> {
        let doing = || format!("reading events of change {change_id}");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, at, change_id, kind, detail FROM events WHERE change_id = ?1 \
                 ORDER BY seq",
            )
            .doing(doing)?;
        let rows = stmt
            .query_map([change_id], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, f64>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })
            .doing(doing)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .doing(doing)?;
        rows.into_iter()
            .map(|(seq, at, change_id, kind, detail)| {
                let detail = serde_json::from_str(&detail).map_err(|error| StoreError::Json {
                    doing: format!("reading event {seq}"),
                    error,
                })?;
                Ok(EventRecord {
                    seq,
                    at,
                    change_id,
                    kind: StoredKind::read(&kind),
                    detail,
                })
            })
            .collect()
    }
}

/// Appends one of the daemon's own records (actor `guardian`) about a change.
pub(super) fn append_event(
    conn: &Connection,
    at: f64,
    change_id: Option<&str>,
    kind: EventKind,
    detail: &Value,
) -> rusqlite::Result<()> {
    append_record(
        conn,
        at,
        crate::audit::ACTOR_GUARDIAN,
        kind,
        None,
        change_id,
        &detail.to_string(),
    )?;
    Ok(())
}

/// Appends a record to the audit chain: the next seq, linked to the last record's hash. The
/// caller holds an IMMEDIATE transaction, so no other writer comes between the read of the
/// last record and the insert. Returns the new record's seq.
pub(crate) fn append_record(
    conn: &Connection,
    at: f64,
    actor: &str,
    kind: EventKind,
    subject: Option<&str>,
    change_id: Option<&str>,
    detail: &str,
) -> rusqlite::Result<i64> {
    let last: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let (seq, prev) = match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, crate::audit::GENESIS.to_vec()),
    };
    let hash = crate::audit::record_hash(
        seq,
        &prev,
        &crate::audit::RecordFields {
            at,
            kind: kind.as_str().as_bytes(),
            change_id: change_id.map(str::as_bytes),
            subject: subject.map(str::as_bytes),
            actor: Some(actor.as_bytes()),
            detail: detail.as_bytes(),
        },
    );
    conn.execute(
        "INSERT INTO events (seq, at, change_id, kind, detail, actor, subject, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            seq,
            at,
            change_id,
            kind.as_str(),
            detail,
            actor,
            subject,
            prev,
            &hash[..]
        ],
    )?;
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::*;
    use crate::store::ChangeState;

    #[test]
    fn events_are_append_only() {
        let mut store = Store::open_in_memory().unwrap();
        store.insert_change(&change("a", T0), T0).unwrap();
        assert!(store
            .conn
            .execute("UPDATE events SET kind = 'x'", [])
            .is_err());
        assert!(store.conn.execute("DELETE FROM events", []).is_err());
        assert_eq!(event_count(&store), 1);
    }

    #[test]
    fn every_record_is_chained_to_the_one_before() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        store
            .set_state(
                &id,
                ChangeState::Healthy,
                None,
                Some(T0 + 1.0),
                None,
                T0 + 1.0,
            )
            .unwrap();
        let seq = store
            .audit(
                "agent",
                EventKind::ProposalSubmitted,
                Some("prop_1"),
                None,
                &serde_json::json!({"summary": "retry"}),
                T0 + 2.0,
            )
            .unwrap();
        assert_eq!(seq, 3);
        type Chained = (i64, String, Option<String>, Vec<u8>, Vec<u8>);
        let rows: Vec<Chained> = store
            .conn
            .prepare("SELECT seq, actor, subject, prev_hash, hash FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].3, crate::audit::GENESIS.to_vec());
        for pair in rows.windows(2) {
            assert_eq!(
                pair[1].3, pair[0].4,
                "record {} links to {}",
                pair[1].0, pair[0].0
            );
        }
        assert_eq!(rows[0].1, "guardian");
        assert_eq!(rows[2].1, "agent");
        assert_eq!(rows[2].2.as_deref(), Some("prop_1"));
        let v = verify(&store);
        assert!(v.intact(), "{}", v.render());
        assert_eq!(v.records, 3);
        // The chain is not a second log: the change's events are the same rows.
        assert_eq!(store.events_for(&id).unwrap().len(), 2);
    }

    #[test]
    fn a_kind_is_stored_and_hashed_as_its_text() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        store
            .record_event(&id, EventKind::Rollback, &serde_json::json!({}), T0 + 1.0)
            .unwrap();
        let (kind, prev, hash): (String, Vec<u8>, Vec<u8>) = store
            .conn
            .query_row(
                "SELECT kind, prev_hash, hash FROM events WHERE seq = 2",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(kind, "rollback");
        // The hash of the same record written with the text, as the version before the enum
        // wrote it.
        let by_text = crate::audit::record_hash(
            2,
            &prev,
            &crate::audit::RecordFields {
                at: T0 + 1.0,
                kind: b"rollback",
                change_id: Some(id.as_bytes()),
                subject: None,
                actor: Some(b"guardian"),
                detail: b"{}",
            },
        );
        assert_eq!(hash, by_text.to_vec());
    }

    #[test]
    fn a_record_of_a_kind_a_later_version_writes_reads_as_its_text_and_verifies() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        // What a later version appends: the same chain, a kind this one has never heard of.
        let prev: Vec<u8> = store
            .conn
            .query_row("SELECT hash FROM events WHERE seq = 1", [], |r| r.get(0))
            .unwrap();
        let detail = r#"{"share":0.1}"#;
        let hash = crate::audit::record_hash(
            2,
            &prev,
            &crate::audit::RecordFields {
                at: T0 + 1.0,
                kind: b"canary_promoted",
                change_id: Some(id.as_bytes()),
                subject: None,
                actor: Some(b"guardian"),
                detail: detail.as_bytes(),
            },
        );
        store
            .conn
            .execute(
                "INSERT INTO events (seq, at, change_id, kind, detail, actor, prev_hash, hash) \
                 VALUES (2, ?1, ?2, 'canary_promoted', ?3, 'guardian', ?4, ?5)",
                params![T0 + 1.0, id, detail, prev, &hash[..]],
            )
            .unwrap();
        store
            .record_event(&id, EventKind::Rollback, &serde_json::json!({}), T0 + 2.0)
            .unwrap();
        let kinds: Vec<StoredKind> = store
            .events_for(&id)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                StoredKind::Known(EventKind::ChangeCreated),
                StoredKind::Unknown("canary_promoted".into()),
                StoredKind::Known(EventKind::Rollback),
            ]
        );
        let v = verify(&store);
        assert!(v.intact(), "{}", v.render());
        assert_eq!(v.records, 3);
    }

    #[test]
    fn audit_records_need_an_actor_and_a_known_change() {
        let mut store = Store::open_in_memory().unwrap();
        let detail = serde_json::json!({});
        let kind = EventKind::GatePaused;
        assert!(matches!(
            store.audit(" ", kind, None, None, &detail, T0),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.audit("admin", kind, None, None, &detail, f64::NAN),
            Err(StoreError::Invalid(_))
        ));
        let err = store
            .audit("admin", kind, None, Some("chg_nope"), &detail, T0)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound(i) if i == "chg_nope"),
            "{err:?}"
        );
        assert_eq!(event_count(&store), 0);
    }
}
