//! What `/metrics` reads from the record (`daemon::metrics`): counts that must stay true across
//! a restart of guardian, so they are read from what is stored rather than counted in memory.
//! Each query reads only what is small and bounded: changes (one a deploy), and the actions'
//! own records (each bounded by its `max_per_hour`, and a rollback at most once a change).

use super::{Doing, Result, Store};
use crate::change::{ChangeState, EventKind};

/// Changes per kind and state: `(kind, state, n)`.
pub type ChangeCount = (String, String, u64);

/// One action that ended: what it was, how it ended, and how long it took, when known.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionEnd {
    /// `revert`, `flag_off`, `restart`.
    pub action: &'static str,
    /// `done`, `failed`, or the flag_off's own outcomes (`verified`, `did_not_help`, ...).
    pub outcome: String,
    pub secs: Option<f64>,
}

impl Store {
    /// How many changes are in each state, per kind.
    pub fn change_counts(&self) -> Result<Vec<ChangeCount>> {
        let doing = || "counting changes by kind and state".to_string();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT kind, state, COUNT(*) FROM changes GROUP BY kind, state")
            .doing(doing)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?.max(0) as u64))
            })
            .doing(doing)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .doing(doing)?;
        Ok(rows)
    }

    /// For every decided change, the seconds from its landing to its decision (the verdict:
    /// the regression, or the end of the watch).
    pub fn decision_secs(&self) -> Result<Vec<f64>> {
        let doing = || "reading the changes' decision times".to_string();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT decided_at - landed_at FROM changes WHERE decided_at IS NOT NULL",
            )
            .doing(doing)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, f64>(0))
            .doing(doing)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .doing(doing)?;
        Ok(rows.into_iter().map(|s| s.max(0.0)).collect())
    }

    /// Every remediation or restart that ended, with how and how long it took: the revert's
    /// record (`rollback`, timed from the change's move to `rolling_back`), each flag_off
    /// attempt no longer running, and each restart command's end.
    pub fn action_ends(&self) -> Result<Vec<ActionEnd>> {
        let doing = || "reading the actions' records".to_string();
        let mut ends = Vec::new();
        let mut reverts = self
            .conn
            .prepare_cached(
                "SELECT json_extract(e.detail, '$.escalation') IS NULL, e.at - ( \
                     SELECT MAX(s.at) FROM events s WHERE s.change_id = e.change_id \
                     AND s.seq < e.seq AND s.kind = ?2 \
                     AND json_extract(s.detail, '$.to') = ?3) \
                 FROM events e WHERE e.kind = ?1",
            )
            .doing(doing)?;
        let rows = reverts
            .query_map(
                rusqlite::params![
                    EventKind::Rollback.as_str(),
                    EventKind::StateChanged.as_str(),
                    ChangeState::RollingBack.as_str()
                ],
                |r| Ok((r.get::<_, bool>(0)?, r.get::<_, Option<f64>>(1)?)),
            )
            .doing(doing)?;
        for row in rows {
            let (done, secs) = row.doing(doing)?;
            ends.push(ActionEnd {
                action: "revert",
                outcome: if done { "done" } else { "failed" }.to_owned(),
                secs: secs.map(|s| s.max(0.0)),
            });
        }
        let mut flags = self
            .conn
            .prepare_cached(
                "SELECT outcome, ended_at - started_at FROM flag_actions \
                 WHERE outcome != 'running'",
            )
            .doing(doing)?;
        let rows = flags
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<f64>>(1)?))
            })
            .doing(doing)?;
        for row in rows {
            let (outcome, secs) = row.doing(doing)?;
            ends.push(ActionEnd {
                action: "flag_off",
                outcome,
                secs: secs.map(|s| s.max(0.0)),
            });
        }
        let mut restarts = self
            .conn
            .prepare_cached(
                "SELECT CASE \
                     WHEN json_extract(detail, '$.outcome') = 'exited' \
                          AND json_extract(detail, '$.exit_code') = 0 THEN 'done' \
                     WHEN json_extract(detail, '$.outcome') = 'cut_short' THEN 'cut_short' \
                     ELSE 'failed' END, \
                     json_extract(detail, '$.duration_secs') \
                 FROM events WHERE kind = ?1",
            )
            .doing(doing)?;
        let rows = restarts
            .query_map([EventKind::RestartFinished.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<f64>>(1)?))
            })
            .doing(doing)?;
        for row in rows {
            let (outcome, secs) = row.doing(doing)?;
            ends.push(ActionEnd {
                action: "restart",
                outcome,
                secs: secs.map(|s| s.max(0.0)),
            });
        }
        Ok(ends)
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use serde_json::json;

    use super::*;
    use crate::daemon::supervisor::FlagOutcome;
    use crate::store::testing::{change, T0};
    use crate::store::NewFlagAction;

    #[test]
    fn the_record_gives_decision_times_and_each_ended_action_with_its_outcome_and_duration() {
        let mut store = Store::open_in_memory().unwrap();
        // Regressed 12 s after landing, reverted in 5 s, then back to its baseline.
        let id = store.insert_change(&change("abc", T0), T0).unwrap().id;
        let mut moves = |state, decided_at, at| {
            store
                .set_state(&id, state, None, decided_at, None, at)
                .unwrap()
        };
        moves(ChangeState::Regressed, Some(T0 + 12.0), T0 + 12.0);
        moves(ChangeState::RollingBack, None, T0 + 13.0);
        let done = json!({"revert_commit": "def", "escalation": null, "steps": []});
        store
            .record_event(&id, EventKind::Rollback, &done, T0 + 18.0)
            .unwrap();
        store
            .set_state(&id, ChangeState::Verifying, None, None, None, T0 + 18.0)
            .unwrap();
        store
            .set_state(&id, ChangeState::RolledBack, None, None, None, T0 + 30.0)
            .unwrap();
        // Still watched: no decision yet.
        store
            .insert_change(&change("ghi", T0 + 100.0), T0 + 100.0)
            .unwrap();
        // A flag turned off at a role's request in 2 s; one refused; one under way.
        let flag = |outcome| NewFlagAction {
            flag: "checkout-v2",
            change_id: None,
            requested_by: "agent",
            reason: "errors on checkout",
            outcome,
            note: "",
        };
        let turned = store
            .flag_action_started(&flag(FlagOutcome::Running), T0 + 40.0)
            .unwrap();
        store
            .flag_action_ended(&turned, FlagOutcome::Done, "", &json!({}), T0 + 42.0)
            .unwrap();
        store
            .flag_action_started(&flag(FlagOutcome::Refused), T0 + 50.0)
            .unwrap();
        store
            .flag_action_started(&flag(FlagOutcome::Running), T0 + 60.0)
            .unwrap();
        // A restart that exited 0 after 1.5 s, one that timed out after 30 s.
        for (attempt, end) in [
            (
                "rst_1",
                json!({"outcome": "exited", "exit_code": 0, "duration_secs": 1.5}),
            ),
            (
                "rst_2",
                json!({"outcome": "timed_out", "exit_code": null, "duration_secs": 30}),
            ),
        ] {
            store
                .audit(
                    "guardian",
                    EventKind::RestartFinished,
                    Some(attempt),
                    None,
                    &end,
                    T0 + 70.0,
                )
                .unwrap();
        }

        assert_eq!(store.decision_secs().unwrap(), vec![12.0]);
        let mut counts = store.change_counts().unwrap();
        counts.sort();
        expect![[r#"[("ai", "rolled_back", 1), ("ai", "watching", 1)]"#]]
            .assert_eq(&format!("{counts:?}"));
        let ends: Vec<String> = store
            .action_ends()
            .unwrap()
            .iter()
            .map(|a| format!("{} {} {:?}", a.action, a.outcome, a.secs))
            .collect();
        expect![[r#"
            revert done Some(5.0)
            flag_off done Some(2.0)
            flag_off refused Some(0.0)
            restart done Some(1.5)
            restart failed Some(30.0)"#]]
        .assert_eq(&ends.join("\n"));
    }
}
