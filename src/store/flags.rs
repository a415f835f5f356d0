//! The flag_off actions (`[daemon.flag_off]`): each attempt, whether for a regressed change or
//! at a role's request, refused, in shadow or done, with how it ended; each written in the same
//! transaction as its record on the audit trail. What bounds the next (`flag_limits`) and the
//! action's track record are read from here.

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{append_record, finite, fresh_id, Doing, EventKind, Result, Store, StoreError};
use crate::daemon::supervisor::FlagOutcome;

/// One flag_off attempt, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlagAction {
    pub id: String,
    pub flag: String,
    /// The regressed change it was for; `None`: asked for through the API.
    pub change_id: Option<String>,
    /// Who asked: `guardian`, `agent`, `approver:NAME`, `admin`.
    pub requested_by: String,
    pub reason: String,
    pub started_at: f64,
    pub ended_at: Option<f64>,
    pub outcome: FlagOutcome,
    pub note: Option<String>,
}

/// How many flag_off attempts ended each way.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlagTally {
    pub verified: u64,
    pub did_not_help: u64,
    pub failed: u64,
    pub shadow: u64,
    pub refused: u64,
    pub done: u64,
    pub cut_short: u64,
    pub running: u64,
}

const COLUMNS: &str =
    "id, flag, change_id, requested_by, reason, started_at, ended_at, outcome, note";

fn row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(FlagAction, String)> {
    let outcome: String = row.get(7)?;
    Ok((
        FlagAction {
            id: row.get(0)?,
            flag: row.get(1)?,
            change_id: row.get(2)?,
            requested_by: row.get(3)?,
            reason: row.get(4)?,
            started_at: row.get(5)?,
            ended_at: row.get(6)?,
            outcome: FlagOutcome::Running,
            note: row.get(8)?,
        },
        outcome,
    ))
}

fn read(raw: (FlagAction, String)) -> Result<FlagAction> {
    let (mut action, outcome) = raw;
    action.outcome = FlagOutcome::parse(&outcome).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "flag action {}: unknown outcome {outcome:?}",
            action.id
        ))
    })?;
    Ok(action)
}

/// The audit record's kind for an attempt that went `outcome`.
fn kind_of(outcome: FlagOutcome) -> EventKind {
    match outcome {
        FlagOutcome::Shadow => EventKind::ShadowFlagOff,
        FlagOutcome::Refused => EventKind::FlagOffRefused,
        _ => EventKind::FlagOff,
    }
}

/// What begins a flag_off record.
pub struct NewFlagAction<'a> {
    pub flag: &'a str,
    pub change_id: Option<&'a str>,
    pub requested_by: &'a str,
    pub reason: &'a str,
    /// `Running` (to be ended later), or already final: `Shadow`, `Refused`.
    pub outcome: FlagOutcome,
    pub note: &'a str,
}

impl Store {
    /// Records a flag_off attempt, and it on the audit trail (`flag_off`, `shadow_flag_off` or
    /// `flag_off_refused`, its actor the one who asked). Returns its id.
    pub fn flag_action_started(&mut self, new: &NewFlagAction<'_>, now: f64) -> Result<String> {
        finite("now", now)?;
        let doing = || format!("recording flag_off of {}", new.flag);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        let id = fresh_id(&tx, "flag_actions", "flg_").doing(doing)?;
        let ended = (new.outcome != FlagOutcome::Running).then_some(now);
        tx.execute(
            "INSERT INTO flag_actions (id, flag, change_id, requested_by, reason, started_at, \
             ended_at, outcome, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                id,
                new.flag,
                new.change_id,
                new.requested_by,
                new.reason,
                now,
                ended,
                new.outcome.as_str(),
                new.note
            ],
        )
        .doing(doing)?;
        let detail = serde_json::json!({
            "action": id,
            "flag": new.flag,
            "requested_by": new.requested_by,
            "reason": new.reason,
            "outcome": new.outcome,
            "note": new.note,
        });
        append_record(
            &tx,
            now,
            new.requested_by,
            kind_of(new.outcome),
            Some(&id),
            new.change_id,
            &detail.to_string(),
        )
        .doing(doing)?;
        tx.commit().doing(doing)?;
        Ok(id)
    }

    /// Records that attempt `id` ended `outcome`, with `detail` (the action's account) on the
    /// audit trail. An attempt already ended is refused: each ends once.
    pub fn flag_action_ended(
        &mut self,
        id: &str,
        outcome: FlagOutcome,
        note: &str,
        detail: &Value,
        now: f64,
    ) -> Result<()> {
        finite("now", now)?;
        let doing = || format!("recording the end of flag action {id}");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        let (flag, change_id): (String, Option<String>) = tx
            .query_row(
                "SELECT flag, change_id FROM flag_actions WHERE id = ?1 AND outcome = 'running'",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .doing(doing)?
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "flag action {id} is not under way: it ended already, or never started"
                ))
            })?;
        tx.execute(
            "UPDATE flag_actions SET ended_at = ?2, outcome = ?3, note = ?4 WHERE id = ?1",
            params![id, now, outcome.as_str(), note],
        )
        .doing(doing)?;
        let detail = serde_json::json!({
            "action": id,
            "flag": flag,
            "outcome": outcome,
            "note": note,
            "account": detail,
        });
        append_record(
            &tx,
            now,
            "guardian",
            EventKind::FlagOff,
            Some(id),
            change_id.as_deref(),
            &detail.to_string(),
        )
        .doing(doing)?;
        tx.commit().doing(doing)
    }

    /// The attempt under way for change `change_id`, if there is one.
    pub fn flag_action_running_for(&self, change_id: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT id FROM flag_actions WHERE change_id = ?1 AND outcome = 'running' \
                 ORDER BY started_at DESC LIMIT 1",
                [change_id],
                |r| r.get(0),
            )
            .optional()
            .doing(|| format!("reading the flag action of {change_id}"))
    }

    /// Attempts under way (at start: cut short by a stop of guardian's).
    pub fn flag_actions_running(&self) -> Result<Vec<FlagAction>> {
        self.flag_actions_where("WHERE outcome = 'running' ORDER BY started_at", params![])
    }

    /// The attempts for change `change_id`, oldest first.
    pub fn flag_actions_for(&self, change_id: &str) -> Result<Vec<FlagAction>> {
        self.flag_actions_where(
            "WHERE change_id = ?1 ORDER BY started_at, rowid",
            params![change_id],
        )
    }

    /// The latest `limit` attempts, newest first.
    pub fn recent_flag_actions(&self, limit: u32) -> Result<Vec<FlagAction>> {
        self.flag_actions_where(
            "ORDER BY started_at DESC, rowid DESC LIMIT ?1",
            params![limit],
        )
    }

    /// The latest attempt that failed, did not help, or was cut short: the action's last
    /// setback.
    pub fn latest_flag_setback(&self) -> Result<Option<FlagAction>> {
        Ok(self
            .flag_actions_where(
                "WHERE outcome IN ('did_not_help', 'failed', 'cut_short') \
                 ORDER BY COALESCE(ended_at, started_at) DESC, rowid DESC LIMIT 1",
                params![],
            )?
            .pop())
    }

    /// `(when, flag)` of every flag turned off (or that would have been, in shadow) since
    /// `since`: what bounds the next.
    pub fn flags_turned_off_since(&self, since: f64) -> Result<Vec<(f64, String)>> {
        Ok(self
            .flag_actions_where(
                "WHERE started_at >= ?1 AND outcome != 'refused' ORDER BY started_at",
                params![since],
            )?
            .into_iter()
            .map(|a| (a.started_at, a.flag))
            .collect())
    }

    /// How every attempt ended, counted.
    pub fn flag_tally(&self) -> Result<FlagTally> {
        let doing = || "counting flag actions".to_owned();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT outcome, COUNT(*) FROM flag_actions GROUP BY outcome")
            .doing(doing)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .doing(doing)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .doing(doing)?;
        let mut tally = FlagTally::default();
        for (outcome, n) in rows {
            let n = n.max(0) as u64;
            match FlagOutcome::parse(&outcome) {
                Some(FlagOutcome::Verified) => tally.verified += n,
                Some(FlagOutcome::DidNotHelp) => tally.did_not_help += n,
                Some(FlagOutcome::Failed) => tally.failed += n,
                Some(FlagOutcome::Shadow) => tally.shadow += n,
                Some(FlagOutcome::Refused) => tally.refused += n,
                Some(FlagOutcome::Done) => tally.done += n,
                Some(FlagOutcome::CutShort) => tally.cut_short += n,
                Some(FlagOutcome::Running) => tally.running += n,
                None => {}
            }
        }
        Ok(tally)
    }

    fn flag_actions_where(
        &self,
        clause: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<FlagAction>> {
        let doing = || "reading flag actions".to_owned();
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM flag_actions {clause}"))
            .doing(doing)?;
        let rows = stmt
            .query_map(args, row)
            .doing(doing)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .doing(doing)?;
        rows.into_iter().map(read).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{verify, T0};

    #[test]
    fn attempts_are_recorded_ended_once_and_counted_on_the_trail() {
        let mut store = Store::open_in_memory().unwrap();
        let new = |outcome| NewFlagAction {
            flag: "checkout-v2",
            change_id: None,
            requested_by: "agent",
            reason: "errors on checkout",
            outcome,
            note: "",
        };
        let id = store
            .flag_action_started(&new(FlagOutcome::Running), T0)
            .unwrap();
        store
            .flag_action_started(&new(FlagOutcome::Refused), T0 + 1.0)
            .unwrap();
        assert_eq!(store.flag_actions_running().unwrap().len(), 1);
        store
            .flag_action_ended(&id, FlagOutcome::Done, "turned off", &Value::Null, T0 + 2.0)
            .unwrap();
        assert!(store
            .flag_action_ended(&id, FlagOutcome::Done, "again", &Value::Null, T0 + 3.0)
            .is_err());
        assert_eq!(
            store.flags_turned_off_since(T0 - 1.0).unwrap(),
            [(T0, "checkout-v2".to_owned())],
            "a refusal turned nothing off"
        );
        let tally = store.flag_tally().unwrap();
        assert_eq!((tally.done, tally.refused, tally.running), (1, 1, 0));
        verify(&store);
    }
}
