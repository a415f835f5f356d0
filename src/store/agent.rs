//! The agent's runs on Sentry's issues (`[daemon.agent]`): each run's start and end, written in
//! the same transaction as its record on the audit trail, so the trail and the table agree; and
//! the one Sentry issue a run is about, as guardian keeps it.

use rusqlite::{params, TransactionBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{append_record, finite, fresh_id, Doing, EventKind, Result, Store, StoreError};

/// One run of the agent, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRun {
    pub id: String,
    pub issue_id: String,
    /// Why it was run: `new`, or `reappeared`.
    pub reason: String,
    pub started_at: f64,
    /// When it ended; `None` while it runs.
    pub ended_at: Option<f64>,
    /// `exited`, `timed_out`, `failed` (it could not be started), `cut_short` (guardian stopped).
    pub outcome: Option<String>,
}

const COLUMNS: &str = "id, issue_id, reason, started_at, ended_at, outcome";

fn row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRun> {
    Ok(AgentRun {
        id: row.get(0)?,
        issue_id: row.get(1)?,
        reason: row.get(2)?,
        started_at: row.get(3)?,
        ended_at: row.get(4)?,
        outcome: row.get(5)?,
    })
}

impl Store {
    /// Records that a run of the agent on `issue_id` starts now, with `detail` on the audit
    /// trail (`agent_started`, actor `guardian`, the run's id as subject). Returns the run.
    pub fn agent_run_started(
        &mut self,
        issue_id: &str,
        reason: &str,
        detail: &Value,
        now: f64,
    ) -> Result<AgentRun> {
        finite("now", now)?;
        let doing = || format!("recording an agent run on Sentry issue {issue_id}");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        let id = fresh_id(&tx, "agent_runs", "agr_").doing(doing)?;
        tx.execute(
            "INSERT INTO agent_runs (id, issue_id, reason, started_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, issue_id, reason, now],
        )
        .doing(doing)?;
        let mut detail = detail.clone();
        if let Value::Object(map) = &mut detail {
            map.insert("run".into(), Value::String(id.clone()));
        }
        append_record(
            &tx,
            now,
            "guardian",
            EventKind::AgentStarted,
            Some(&id),
            None,
            &detail.to_string(),
        )
        .doing(doing)?;
        tx.commit().doing(doing)?;
        Ok(AgentRun {
            id,
            issue_id: issue_id.to_owned(),
            reason: reason.to_owned(),
            started_at: now,
            ended_at: None,
            outcome: None,
        })
    }

    /// Records that run `id` ended with `outcome`, with `detail` on the audit trail
    /// (`agent_finished`). A run already ended is refused: each ends once.
    pub fn agent_run_finished(
        &mut self,
        id: &str,
        outcome: &str,
        detail: &Value,
        now: f64,
    ) -> Result<()> {
        finite("now", now)?;
        let doing = || format!("recording the end of agent run {id}");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        let updated = tx
            .execute(
                "UPDATE agent_runs SET ended_at = ?2, outcome = ?3 \
                 WHERE id = ?1 AND ended_at IS NULL",
                params![id, now, outcome],
            )
            .doing(doing)?;
        if updated != 1 {
            return Err(StoreError::Invalid(format!(
                "agent run {id} is not under way: it ended already, or never started"
            )));
        }
        append_record(
            &tx,
            now,
            "guardian",
            EventKind::AgentFinished,
            Some(id),
            None,
            &detail.to_string(),
        )
        .doing(doing)?;
        tx.commit().doing(doing)
    }

    /// Runs not ended: under way, or cut short by a stop of guardian's.
    pub fn agent_runs_unfinished(&self) -> Result<Vec<AgentRun>> {
        self.agent_runs_where("WHERE ended_at IS NULL ORDER BY started_at", params![])
    }

    /// Runs started at or after `since`, oldest first.
    pub fn agent_runs_since(&self, since: f64) -> Result<Vec<AgentRun>> {
        self.agent_runs_where(
            "WHERE started_at >= ?1 ORDER BY started_at, id",
            params![since],
        )
    }

    /// The latest run, if any.
    pub fn agent_last_run(&self) -> Result<Option<AgentRun>> {
        Ok(self
            .agent_runs_where("ORDER BY started_at DESC, id DESC LIMIT 1", params![])?
            .pop())
    }

    fn agent_runs_where(
        &self,
        clause: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<AgentRun>> {
        let doing = || "reading agent runs".to_owned();
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM agent_runs {clause}"))
            .doing(doing)?;
        let rows = stmt
            .query_map(args, row)
            .doing(doing)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .doing(doing);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{verify, T0};

    #[test]
    fn a_run_starts_and_ends_once_each_on_the_trail() {
        let mut store = Store::open_in_memory().unwrap();
        let run = store
            .agent_run_started("42", "new", &serde_json::json!({"issue": "42"}), T0)
            .unwrap();
        assert!(
            run.id.starts_with("agr_") && run.id.len() == 16,
            "{}",
            run.id
        );
        assert_eq!(
            store.agent_runs_unfinished().unwrap(),
            std::slice::from_ref(&run)
        );
        store
            .agent_run_finished(&run.id, "exited", &serde_json::json!({"exit": 0}), T0 + 5.0)
            .unwrap();
        let again = store.agent_run_finished(&run.id, "exited", &serde_json::json!({}), T0 + 6.0);
        assert!(again.unwrap_err().to_string().contains("ended already"));
        assert!(store.agent_runs_unfinished().unwrap().is_empty());
        let last = store.agent_last_run().unwrap().unwrap();
        assert_eq!(
            (last.ended_at, last.outcome.as_deref()),
            (Some(T0 + 5.0), Some("exited"))
        );
        assert_eq!(store.agent_runs_since(T0 + 1.0).unwrap(), []);
        let kinds: Vec<String> = store
            .conn
            .prepare("SELECT kind || ' ' || subject || ' ' || detail FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            kinds,
            [
                format!(
                    "agent_started {} {{\"issue\":\"42\",\"run\":\"{}\"}}",
                    run.id, run.id
                ),
                format!("agent_finished {} {{\"exit\":0}}", run.id),
            ]
        );
        assert!(verify(&store).intact());
    }
}
