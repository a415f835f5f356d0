//! Changes in the store: recorded in state `watching` with a new id, moved only as the change
//! model allows (`ChangeState::may_become`) and never out of a final state, each transition
//! logged in its own transaction; and the queries the daemon and the views read them by.

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::events::append_event;
use super::{finite, ChangeKind, ChangeState, Doing, EventKind, Result, Store, StoreError};

/// How many times `insert_change` draws a new id when the one drawn is taken (48-bit ids: a
/// clash is already very unlikely; two in a row would mean the randomness is broken).
const ID_ATTEMPTS: u32 = 4;

/// What a `state_changed` record says: the move, and what it rests on. Written by
/// [`Store::set_state`] and read back by the post-mortem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    pub from: ChangeState,
    pub to: ChangeState,
    /// When the evidence crossed the line, for a decision.
    pub decided_at: Option<f64>,
    pub note: Option<String>,
    /// The evidence saved with the move (a decision's), as stored: the views read it as the
    /// core's `Report` on its own (`report::evidence::read`), so evidence that does not read
    /// leaves the move readable. Absent when the move rests on none, and in records written
    /// before it was saved here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Value>,
}

/// A deploy guardian is told about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewChange {
    pub commit: String,
    pub kind: ChangeKind,
    pub pattern: Option<String>,
    pub summary: Option<String>,
    /// Unix seconds.
    pub landed_at: f64,
    /// The Sentry issue it claims to fix (its id), if it names one.
    #[serde(default)]
    pub fixes_issue: Option<String>,
    /// The feature flag it is behind, if it declares one.
    #[serde(default)]
    pub flag: Option<String>,
}

/// A change as stored, and as the API sends it (`api`: the CLI reads it back).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub id: String,
    pub commit: String,
    pub kind: ChangeKind,
    pub pattern: Option<String>,
    pub summary: Option<String>,
    pub landed_at: f64,
    pub state: ChangeState,
    pub updated_at: f64,
    pub decided_at: Option<f64>,
    /// The latest report (the core's `Report`), as JSON.
    pub report: Option<Value>,
    pub note: Option<String>,
    /// The Sentry issue it claims to fix (its id), if it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixes_issue: Option<String>,
    /// The feature flag it is behind, if it declares one (`[daemon.flag_off]` turns it off
    /// first when the change regresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
}

const CHANGE_COLUMNS: &str = "id, commit_sha, kind, pattern, summary, landed_at, state, \
                              updated_at, decided_at, report, note, fixes_issue, flag";

impl Store {
    /// Records a change guardian was told about, in state `watching`, with a new id, and logs
    /// it. Returns the record as stored.
    pub fn insert_change(&mut self, new: &NewChange, now: f64) -> Result<ChangeRecord> {
        finite("landed_at", new.landed_at)?;
        finite("now", now)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(|| format!("recording change of commit {}", new.commit))?;
        let mut id = None;
        for _ in 0..ID_ATTEMPTS {
            self.id_counter += 1;
            let candidate = change_id(&self.id_seed, self.id_counter, new);
            let taken = tx
                .query_row("SELECT 1 FROM changes WHERE id = ?1", [&candidate], |_| {
                    Ok(())
                })
                .optional()
                .doing(|| format!("checking change id {candidate}"))?
                .is_some();
            if !taken {
                id = Some(candidate);
                break;
            }
        }
        let id = id.ok_or_else(|| {
            StoreError::Invalid(format!(
                "no free change id after {ID_ATTEMPTS} attempts: the id randomness is broken"
            ))
        })?;
        let state = ChangeState::Watching;
        let doing = || format!("saving new change {id}");
        tx.execute(
            "INSERT INTO changes (id, commit_sha, kind, pattern, summary, landed_at, state, \
             updated_at, fixes_issue, flag) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                id,
                new.commit,
                new.kind.as_str(),
                new.pattern,
                new.summary,
                new.landed_at,
                state.as_str(),
                now,
                new.fixes_issue,
                new.flag
            ],
        )
        .doing(doing)?;
        let mut detail = serde_json::json!({
            "commit": new.commit,
            "kind": new.kind,
            "pattern": new.pattern,
            "summary": new.summary,
            "landed_at": new.landed_at,
            "state": state,
        });
        if let Some(issue) = &new.fixes_issue {
            detail["fixes_issue"] = issue.clone().into();
        }
        if let Some(flag) = &new.flag {
            detail["flag"] = flag.clone().into();
        }
        append_event(&tx, now, Some(&id), EventKind::ChangeCreated, &detail).doing(doing)?;
        tx.commit().doing(doing)?;
        Ok(ChangeRecord {
            id,
            commit: new.commit.clone(),
            kind: new.kind,
            pattern: new.pattern.clone(),
            summary: new.summary.clone(),
            landed_at: new.landed_at,
            state,
            updated_at: now,
            decided_at: None,
            report: None,
            note: None,
            fixes_issue: new.fixes_issue.clone(),
            flag: new.flag.clone(),
        })
    }

    /// Moves a change to `state` and logs the transition, in one transaction. `report_json`,
    /// `decided_at` and `note` replace the stored values when given and leave them as they are
    /// when `None`. A change in a final state is never moved again (`FinalState`).
    pub fn set_state(
        &mut self,
        id: &str,
        state: ChangeState,
        report_json: Option<&str>,
        decided_at: Option<f64>,
        note: Option<&str>,
        now: f64,
    ) -> Result<()> {
        finite("now", now)?;
        if let Some(t) = decided_at {
            finite("decided_at", t)?;
        }
        let report = report_json
            .map(|json| parse_report(json, || format!("saving change {id} state {state}")))
            .transpose()?;
        let doing = || format!("saving change {id} state {state}");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        let from = current_state(&tx, id).doing(doing)??;
        if from.is_final() {
            return Err(StoreError::FinalState {
                id: id.to_string(),
                state: from,
            });
        }
        if !from.may_become(state) {
            return Err(StoreError::Transition {
                id: id.to_string(),
                from,
                to: state,
            });
        }
        tx.execute(
            "UPDATE changes SET state = ?2, report = COALESCE(?3, report), \
             decided_at = COALESCE(?4, decided_at), note = COALESCE(?5, note), updated_at = ?6 \
             WHERE id = ?1",
            params![id, state.as_str(), report_json, decided_at, note, now],
        )
        .doing(doing)?;
        let detail = serde_json::to_value(StateChange {
            from,
            to: state,
            decided_at,
            note: note.map(str::to_owned),
            report,
        })
        .map_err(|error| StoreError::Json {
            doing: doing(),
            error,
        })?;
        append_event(&tx, now, Some(id), EventKind::StateChanged, &detail).doing(doing)?;
        // The proposal this change carries out counts differently in the ledger now.
        crate::gate::proposals::retally_change(&tx, id).doing(doing)?;
        tx.commit().doing(doing)?;
        // Logged here, where every transition is written, so the journal misses none.
        let note = note.map(|n| format!(": {n}")).unwrap_or_default();
        match state {
            ChangeState::Regressed | ChangeState::Escalated | ChangeState::RolledBack => {
                tracing::warn!(change_id = id, state = %state, "change {id}: {from} -> {state}{note}")
            }
            _ => {
                tracing::info!(change_id = id, state = %state, "change {id}: {from} -> {state}{note}")
            }
        }
        Ok(())
    }

    /// Replaces the latest report of a change still being watched (evidence so far). Not a
    /// transition, so not logged. A decided change keeps the report it was decided on.
    pub fn update_report(&mut self, id: &str, report_json: &str, now: f64) -> Result<()> {
        finite("now", now)?;
        let doing = || format!("saving change {id} report");
        parse_report(report_json, doing)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        let state = current_state(&tx, id).doing(doing)??;
        if state.is_final() {
            return Err(StoreError::FinalState {
                id: id.to_string(),
                state,
            });
        }
        tx.execute(
            "UPDATE changes SET report = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, report_json, now],
        )
        .doing(doing)?;
        tx.commit().doing(doing)?;
        Ok(())
    }

    /// The change with this id, if there is one.
    pub fn get_change(&self, id: &str) -> Result<Option<ChangeRecord>> {
        let doing = || format!("reading change {id}");
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {CHANGE_COLUMNS} FROM changes WHERE id = ?1"
            ))
            .doing(doing)?;
        let raw = stmt
            .query_row([id], RawChange::from_row)
            .optional()
            .doing(doing)?;
        raw.map(RawChange::into_record).transpose()
    }

    /// The `limit` changes that landed last, newest first (ties: last recorded first).
    pub fn recent_changes(&self, limit: usize) -> Result<Vec<ChangeRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query_changes(
            &format!(
                "SELECT {CHANGE_COLUMNS} FROM changes \
                 ORDER BY landed_at DESC, rowid DESC LIMIT ?1"
            ),
            [limit],
            "reading recent changes",
        )
    }

    /// Changes still being watched, oldest landing first.
    pub fn watching(&self) -> Result<Vec<ChangeRecord>> {
        self.query_changes(
            &format!(
                "SELECT {CHANGE_COLUMNS} FROM changes WHERE state = ?1 \
                 ORDER BY landed_at, rowid"
            ),
            [ChangeState::Watching.as_str()],
            "reading changes being watched",
        )
    }

    /// Changes not yet in a final state (watching, or somewhere in a rollback), oldest first:
    /// what a restart must pick up or hand to a person.
    pub fn unfinished(&self) -> Result<Vec<ChangeRecord>> {
        let open: Vec<&str> = ChangeState::ALL
            .iter()
            .filter(|s| !s.is_final())
            .map(|s| s.as_str())
            .collect();
        let placeholders = (1..=open.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.query_changes(
            &format!(
                "SELECT {CHANGE_COLUMNS} FROM changes WHERE state IN ({placeholders}) \
                 ORDER BY landed_at, rowid"
            ),
            rusqlite::params_from_iter(open),
            "reading unfinished changes",
        )
    }

    fn query_changes(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        doing: &str,
    ) -> Result<Vec<ChangeRecord>> {
        let doing = || doing.to_string();
        let mut stmt = self.conn.prepare_cached(sql).doing(doing)?;
        let raws = stmt
            .query_map(params, RawChange::from_row)
            .doing(doing)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .doing(doing)?;
        raws.into_iter().map(RawChange::into_record).collect()
    }
}

/// A `changes` row as stored, before its text columns are parsed.
struct RawChange {
    id: String,
    commit: String,
    kind: String,
    pattern: Option<String>,
    summary: Option<String>,
    landed_at: f64,
    state: String,
    updated_at: f64,
    decided_at: Option<f64>,
    report: Option<String>,
    note: Option<String>,
    fixes_issue: Option<String>,
    flag: Option<String>,
}

impl RawChange {
    /// Reads the columns in `CHANGE_COLUMNS` order.
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RawChange> {
        Ok(RawChange {
            id: row.get(0)?,
            commit: row.get(1)?,
            kind: row.get(2)?,
            pattern: row.get(3)?,
            summary: row.get(4)?,
            landed_at: row.get(5)?,
            state: row.get(6)?,
            updated_at: row.get(7)?,
            decided_at: row.get(8)?,
            report: row.get(9)?,
            note: row.get(10)?,
            fixes_issue: row.get(11)?,
            flag: row.get(12)?,
        })
    }

    fn into_record(self) -> Result<ChangeRecord> {
        let id = self.id;
        let kind = self
            .kind
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("change {id}: {e}")))?;
        let state = self
            .state
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("change {id}: {e}")))?;
        let report = self
            .report
            .map(|json| parse_report(&json, || format!("reading change {id} report")))
            .transpose()?;
        Ok(ChangeRecord {
            id,
            commit: self.commit,
            kind,
            pattern: self.pattern,
            summary: self.summary,
            landed_at: self.landed_at,
            state,
            updated_at: self.updated_at,
            decided_at: self.decided_at,
            report,
            note: self.note,
            fixes_issue: self.fixes_issue,
            flag: self.flag,
        })
    }
}

/// The state of change `id` inside a transaction: `Ok(Err(NotFound))` when there is none.
pub(super) fn current_state(conn: &Connection, id: &str) -> rusqlite::Result<Result<ChangeState>> {
    let text: Option<String> = conn
        .query_row("SELECT state FROM changes WHERE id = ?1", [id], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(match text {
        None => Err(StoreError::NotFound(id.to_string())),
        Some(text) => text
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("change {id}: {e}"))),
    })
}

fn parse_report(json: &str, doing: impl FnOnce() -> String) -> Result<Value> {
    serde_json::from_str(json).map_err(|error| StoreError::Json {
        doing: doing(),
        error,
    })
}

/// `chg_` and 12 lowercase hex digits of SHA-256(seed, counter, commit, landed_at).
fn change_id(seed: &[u8; 16], counter: u64, new: &NewChange) -> String {
    let mut hasher = Sha256::new();
    hasher.update(seed);
    hasher.update(counter.to_le_bytes());
    hasher.update((new.commit.len() as u64).to_le_bytes());
    hasher.update(new.commit.as_bytes());
    hasher.update(new.landed_at.to_bits().to_le_bytes());
    let digest = hasher.finalize();
    let mut id = String::with_capacity(16);
    id.push_str("chg_");
    for byte in &digest[..6] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::store::testing::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let mut store = Store::open_in_memory().unwrap();
        let mut other = Store::open_in_memory().unwrap();
        let mut ids = HashSet::new();
        for i in 0..2000 {
            // Same commit and time over and over: only the counter and seed tell them apart.
            let new = change("abc123", T0);
            for s in [&mut store, &mut other] {
                let id = s.insert_change(&new, T0 + f64::from(i)).unwrap().id;
                assert_eq!(id.len(), 16, "{id}");
                assert!(id.starts_with("chg_"), "{id}");
                assert!(
                    id[4..]
                        .chars()
                        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
                    "{id}"
                );
                assert!(ids.insert(id.clone()), "duplicate id {id}");
            }
        }
    }

    #[test]
    fn insert_returns_what_is_stored() {
        let mut store = Store::open_in_memory().unwrap();
        let new = NewChange {
            commit: "deadbeef".to_string(),
            kind: ChangeKind::Human,
            pattern: None,
            summary: None,
            landed_at: T0,
            fixes_issue: None,
            flag: Some("new-total".to_string()),
        };
        let record = store.insert_change(&new, T0 + 5.0).unwrap();
        assert_eq!(record.state, ChangeState::Watching);
        assert_eq!(record.updated_at, T0 + 5.0);
        assert_eq!(store.get_change(&record.id).unwrap(), Some(record.clone()));
        assert_eq!(store.get_change("chg_000000000000").unwrap(), None);
        assert_eq!(store.watching().unwrap(), vec![record]);
    }

    #[test]
    fn transitions_and_the_refusal_to_leave_a_final_state() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a1", T0), T0).unwrap().id;
        store
            .update_report(&id, r#"{"verdict":"watching","e":1.5}"#, T0 + 10.0)
            .unwrap();
        // Watching to watching is allowed (e.g. a note), and keeps the report.
        store
            .set_state(
                &id,
                ChangeState::Watching,
                None,
                None,
                Some("resumed"),
                T0 + 20.0,
            )
            .unwrap();
        let record = store.get_change(&id).unwrap().unwrap();
        assert_eq!(record.report.unwrap()["e"], 1.5);
        assert_eq!(record.note.as_deref(), Some("resumed"));

        store
            .set_state(
                &id,
                ChangeState::Healthy,
                Some(r#"{"verdict":"healthy"}"#),
                Some(T0 + 30.0),
                Some("errors"),
                T0 + 31.0,
            )
            .unwrap();
        let decided = store.get_change(&id).unwrap().unwrap();
        assert_eq!(decided.state, ChangeState::Healthy);
        assert!(store.watching().unwrap().is_empty());

        for next in ChangeState::ALL {
            let err = store
                .set_state(
                    &id,
                    *next,
                    Some("{}"),
                    Some(T0 + 99.0),
                    Some("x"),
                    T0 + 100.0,
                )
                .unwrap_err();
            match &err {
                StoreError::FinalState { id: got, state } => {
                    assert_eq!(got, &id);
                    assert_eq!(*state, ChangeState::Healthy);
                }
                other => panic!("expected FinalState, got {other:?}"),
            }
            assert!(err.to_string().contains("healthy"), "{err}");
        }
        let err = store.update_report(&id, "{}", T0 + 100.0).unwrap_err();
        assert!(matches!(err, StoreError::FinalState { .. }), "{err:?}");
        // Nothing moved.
        assert_eq!(store.get_change(&id).unwrap().unwrap(), decided);
        assert_eq!(store.events_for(&id).unwrap().len(), 3);

        // A regression moves on only to a rollback or an escalation.
        let id = store.insert_change(&change("r", T0), T0).unwrap().id;
        store
            .set_state(&id, ChangeState::Regressed, None, None, None, T0 + 1.0)
            .unwrap();
        let err = store
            .set_state(&id, ChangeState::Healthy, None, None, None, T0 + 2.0)
            .unwrap_err();
        assert!(matches!(err, StoreError::Transition { .. }), "{err:?}");
        for next in [
            ChangeState::RollingBack,
            ChangeState::Verifying,
            ChangeState::RolledBack,
        ] {
            store
                .set_state(&id, next, None, None, None, T0 + 3.0)
                .unwrap();
        }

        // Every final state is final, reached along the shortest legal path.
        for state in ChangeState::ALL.iter().filter(|s| s.is_final()) {
            let id = store.insert_change(&change("b", T0), T0).unwrap().id;
            let path: &[ChangeState] = match state {
                ChangeState::RolledBack => &[
                    ChangeState::Regressed,
                    ChangeState::RollingBack,
                    ChangeState::Verifying,
                ],
                ChangeState::Escalated => &[ChangeState::Regressed],
                ChangeState::FlaggedOff => &[ChangeState::Regressed, ChangeState::FlaggingOff],
                _ => &[],
            };
            for step in path.iter().chain([state]) {
                store
                    .set_state(&id, *step, None, None, None, T0 + 1.0)
                    .unwrap();
            }
            let err = store
                .set_state(&id, ChangeState::Watching, None, None, None, T0 + 2.0)
                .unwrap_err();
            assert!(matches!(err, StoreError::FinalState { .. }), "{err:?}");
        }
    }

    #[test]
    fn unknown_ids_are_not_found() {
        let mut store = Store::open_in_memory().unwrap();
        let err = store
            .set_state("chg_nope", ChangeState::Healthy, None, None, None, T0)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound(id) if id == "chg_nope"),
            "{err:?}"
        );
        let err = store.update_report("chg_nope", "{}", T0).unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound(id) if id == "chg_nope"),
            "{err:?}"
        );
        assert_eq!(event_count(&store), 0);
    }

    #[test]
    fn reports_that_are_not_json_are_refused() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        let err = store.update_report(&id, "{not json", T0).unwrap_err();
        assert!(matches!(err, StoreError::Json { .. }), "{err:?}");
        assert!(err.to_string().contains(&id), "{err}");
        let err = store
            .set_state(&id, ChangeState::Healthy, Some("nope"), None, None, T0)
            .unwrap_err();
        assert!(matches!(err, StoreError::Json { .. }), "{err:?}");
        assert_eq!(
            store.get_change(&id).unwrap().unwrap().state,
            ChangeState::Watching
        );
    }

    #[test]
    fn times_must_be_finite() {
        let mut store = Store::open_in_memory().unwrap();
        assert!(matches!(
            store.insert_change(&change("a", f64::NAN), T0),
            Err(StoreError::Invalid(_))
        ));
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        assert!(matches!(
            store.set_state(
                &id,
                ChangeState::Healthy,
                None,
                Some(f64::INFINITY),
                None,
                T0
            ),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.save_position("x", 1, 2, f64::NAN),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn every_transition_appends_an_event() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store
            .insert_change(&change("c0ffee", T0), T0 + 1.0)
            .unwrap()
            .id;
        let other = store
            .insert_change(&change("other", T0), T0 + 1.0)
            .unwrap()
            .id;
        store.update_report(&id, r#"{"n":1}"#, T0 + 2.0).unwrap();
        store
            .set_state(
                &id,
                ChangeState::Inconclusive,
                Some(r#"{"verdict":"inconclusive"}"#),
                None,
                Some("window ended"),
                T0 + 3.0,
            )
            .unwrap();
        let events = store.events_for(&id).unwrap();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].kind, EventKind::ChangeCreated);
        assert_eq!(events[0].at, T0 + 1.0);
        assert_eq!(events[0].detail["commit"], "c0ffee");
        assert_eq!(events[0].detail["state"], "watching");
        assert_eq!(events[1].kind, EventKind::StateChanged);
        assert_eq!(events[1].at, T0 + 3.0);
        assert_eq!(events[1].change_id.as_deref(), Some(id.as_str()));
        assert_eq!(events[1].detail["from"], "watching");
        assert_eq!(events[1].detail["to"], "inconclusive");
        assert_eq!(events[1].detail["note"], "window ended");
        assert_eq!(events[1].detail["report"]["verdict"], "inconclusive");
        assert!(events[0].seq < events[1].seq);
        assert_eq!(store.events_for(&other).unwrap().len(), 1);
    }

    /// The bytes stored are what the hash covers and what earlier versions read: the typed
    /// `StateChange` writes the JSON `json!` wrote, key for key, the report left out when the
    /// move rests on none.
    #[test]
    fn a_move_is_recorded_as_the_json_it_always_was_and_reads_back_in_its_type() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        let report = r#"{"verdict":"regressed","e_value":412.5}"#;
        store
            .set_state(
                &id,
                ChangeState::Regressed,
                Some(report),
                Some(T0 + 30.5),
                None,
                T0 + 31.0,
            )
            .unwrap();
        store
            .set_state(
                &id,
                ChangeState::RollingBack,
                None,
                None,
                Some("rolling back"),
                T0 + 31.0,
            )
            .unwrap();
        let stored: Vec<String> = store
            .conn
            .prepare("SELECT detail FROM events WHERE kind = 'state_changed' ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        expect_test::expect![[r#"
            {"decided_at":1764000030.5,"from":"watching","note":null,"report":{"e_value":412.5,"verdict":"regressed"},"to":"regressed"}
            {"decided_at":null,"from":"regressed","note":"rolling back","to":"rolling_back"}"#]].assert_eq(&stored.join("\n"));
        let moves: Vec<StateChange> = store.events_for(&id).unwrap()[1..]
            .iter()
            .map(|e| e.detail_as().unwrap())
            .collect();
        assert_eq!(moves[0].to, ChangeState::Regressed);
        assert_eq!(moves[0].decided_at, Some(T0 + 30.5));
        assert_eq!(moves[0].report, Some(serde_json::from_str(report).unwrap()));
        assert_eq!(
            (moves[1].from, moves[1].note.as_deref(), &moves[1].report),
            (ChangeState::Regressed, Some("rolling back"), &None)
        );
    }

    #[test]
    fn a_transition_whose_event_cannot_be_written_does_not_happen() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        store
            .conn
            .execute_batch(
                "CREATE TRIGGER fail_events BEFORE INSERT ON events \
                 BEGIN SELECT RAISE(ABORT, 'log unavailable'); END;",
            )
            .unwrap();
        let err = store
            .set_state(
                &id,
                ChangeState::Regressed,
                Some("{}"),
                Some(T0 + 1.0),
                None,
                T0 + 1.0,
            )
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&format!("saving change {id} state regressed")),
            "{message}"
        );
        assert!(message.contains("log unavailable"), "{message}");
        let record = store.get_change(&id).unwrap().unwrap();
        assert_eq!(record.state, ChangeState::Watching);
        assert_eq!(record.report, None);
        assert_eq!(record.decided_at, None);
        // Nor does a new change without its event.
        assert!(store.insert_change(&change("b", T0), T0).is_err());
        assert_eq!(store.recent_changes(10).unwrap().len(), 1);
    }

    #[test]
    fn recent_changes_are_newest_first() {
        let mut store = Store::open_in_memory().unwrap();
        // Recorded out of landing order; two land at the same time.
        let b = store.insert_change(&change("b", T0 + 20.0), T0).unwrap().id;
        let a = store.insert_change(&change("a", T0 + 10.0), T0).unwrap().id;
        let d1 = store
            .insert_change(&change("d1", T0 + 40.0), T0)
            .unwrap()
            .id;
        let d2 = store
            .insert_change(&change("d2", T0 + 40.0), T0)
            .unwrap()
            .id;
        let c = store.insert_change(&change("c", T0 + 30.0), T0).unwrap().id;
        let ids = |v: Vec<ChangeRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.recent_changes(10).unwrap()),
            vec![d2.clone(), d1.clone(), c.clone(), b.clone(), a.clone()]
        );
        assert_eq!(
            ids(store.recent_changes(2).unwrap()),
            vec![d2.clone(), d1.clone()]
        );
        assert!(store.recent_changes(0).unwrap().is_empty());
        assert_eq!(store.recent_changes(usize::MAX).unwrap().len(), 5);
        store
            .set_state(&c, ChangeState::Superseded, None, None, Some("by d1"), T0)
            .unwrap();
        assert_eq!(ids(store.watching().unwrap()), vec![a, b, d1, d2]);
    }

    #[test]
    fn the_report_is_a_json_value_in_the_serialized_record() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        let report = serde_json::json!({
            "verdict": "regressed",
            "decided_at": T0 + 12.5,
            "signals": [{"signal": "errors", "regressed": true, "e_value": 123.25}],
        });
        store
            .set_state(
                &id,
                ChangeState::Regressed,
                Some(&report.to_string()),
                Some(T0 + 12.5),
                None,
                T0 + 13.0,
            )
            .unwrap();
        let record = store.get_change(&id).unwrap().unwrap();
        let json: Value = serde_json::to_value(&record).unwrap();
        assert_eq!(json["report"], report);
        assert_eq!(json["state"], "regressed");
        assert_eq!(json["kind"], "ai");
        assert_eq!(json["commit"], "a");
        assert_eq!(json["decided_at"], T0 + 12.5);
        // A change without a report serializes it as null.
        let fresh = store.insert_change(&change("b", T0), T0).unwrap();
        assert_eq!(serde_json::to_value(&fresh).unwrap()["report"], Value::Null);
    }

    #[test]
    fn the_core_report_is_accepted() {
        use crate::core::{DetectorSettings, Monitor};
        let mut monitor = Monitor::new(DetectorSettings::default());
        monitor.change_landed(T0);
        let report = monitor.report().expect("a watch after change_landed");
        let json = serde_json::to_string(&report).unwrap();
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        store.update_report(&id, &json, T0 + 1.0).unwrap();
        let record = store.get_change(&id).unwrap().unwrap();
        assert_eq!(record.report.unwrap()["verdict"], "watching");
    }

    #[test]
    fn a_new_change_reads_from_json() {
        let new: NewChange = serde_json::from_str(
            r#"{"commit":"abc","kind":"human","pattern":null,"summary":"x","landed_at":1.5}"#,
        )
        .unwrap();
        assert_eq!(new.kind, ChangeKind::Human);
    }
}
