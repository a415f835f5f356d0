//! Proposals in the store: a change submitted instead of deployed, the policy's decision on it,
//! and what people and guardian did with it since. Every transition is written together with
//! its audit record, in one transaction.
//!
//! An approval binds to the diff it was given for: the approver names the diff's hash, and a
//! proposal whose diff is not that exact one cannot be approved by it. A proposal is decided
//! once: approving it again (a replayed approval) is refused, and so is approving one's own.

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;
use serde_json::{json, Value};

use super::ledger::{Entry, Outcome};
use crate::store::{Store, StoreError};

/// Where a proposal is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    /// The policy denied it; final.
    Denied,
    /// Waiting for a person.
    Pending,
    /// A person approved it; guardian deploys it next.
    Approved,
    /// A person rejected it; final.
    Rejected,
    /// Being applied and redeployed.
    Deploying,
    /// Deployed: `change_id` is the change being (or that was) watched; final.
    Deployed,
    /// Applying or redeploying failed; nothing was left deployed; final.
    DeployFailed,
    /// Shadow mode: decided and recorded, never acted on; final.
    Shadow,
}

impl ProposalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalState::Denied => "denied",
            ProposalState::Pending => "pending",
            ProposalState::Approved => "approved",
            ProposalState::Rejected => "rejected",
            ProposalState::Deploying => "deploying",
            ProposalState::Deployed => "deployed",
            ProposalState::DeployFailed => "deploy_failed",
            ProposalState::Shadow => "shadow",
        }
    }

    fn parse(text: &str) -> Option<ProposalState> {
        [
            ProposalState::Denied,
            ProposalState::Pending,
            ProposalState::Approved,
            ProposalState::Rejected,
            ProposalState::Deploying,
            ProposalState::Deployed,
            ProposalState::DeployFailed,
            ProposalState::Shadow,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// The transitions guardian makes; everything else is refused.
    fn may_become(self, next: ProposalState) -> bool {
        use ProposalState::*;
        matches!(
            (self, next),
            (Pending, Approved | Rejected)
                | (Approved, Deploying | Shadow)
                | (Deploying, Deployed | DeployFailed)
        )
    }
}

impl std::fmt::Display for ProposalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A proposal as submitted and decided, before it is stored.
#[derive(Clone, Debug)]
pub struct NewProposal {
    /// The actor who submitted it (`agent`, `admin`).
    pub proposer: String,
    pub kind: crate::store::ChangeKind,
    pub pattern: String,
    pub summary: String,
    pub issue_url: Option<String>,
    pub tests_run: bool,
    pub base_sha: String,
    pub claimed_sha: Option<String>,
    pub patch: String,
    pub diff_hash: String,
    /// The tree git made of the patch in a scratch index, which the gate judged and guardian
    /// deploys (`None` when the patch was refused before git made one).
    pub tree_sha: Option<String>,
    /// `deny`, `needs_approval` or `auto`.
    pub decision: String,
    /// The policy's assessment, as JSON: rules fired, risk factors, diff facts.
    pub assessment: Value,
    pub shadow: bool,
    pub state: ProposalState,
}

/// A stored proposal.
#[derive(Clone, Debug, Serialize)]
pub struct ProposalRecord {
    pub id: String,
    pub created_at: f64,
    pub updated_at: f64,
    pub proposer: String,
    pub kind: String,
    pub pattern: String,
    pub summary: String,
    pub issue_url: Option<String>,
    pub tests_run: bool,
    pub base_sha: String,
    pub claimed_sha: Option<String>,
    pub diff_hash: String,
    /// The tree judged: what is deployed, or nothing is.
    pub tree_sha: Option<String>,
    pub decision: String,
    pub assessment: Value,
    pub shadow: bool,
    pub state: ProposalState,
    pub decided_by: Option<String>,
    pub decided_note: Option<String>,
    pub approved_hash: Option<String>,
    /// The tree an approval bound to, with the diff.
    pub approved_tree: Option<String>,
    pub change_id: Option<String>,
    /// Where the change it became stands now (`healthy`, `rolled_back`, ...).
    pub change_state: Option<String>,
    pub note: Option<String>,
    /// The patch itself is not shown in listings; `patch` fetches it.
    #[serde(skip)]
    pub patch: String,
}

/// Why a proposal operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProposalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no proposal with id {0}")]
    NotFound(String),
    /// The request does not fit where the proposal is (already decided, diff changed, ...).
    #[error("{0}")]
    Conflict(String),
    /// The actor may not do this to this proposal (e.g. approve their own).
    #[error("{0}")]
    Forbidden(String),
}

type Result<T, E = ProposalError> = std::result::Result<T, E>;

/// Attaches what was being done to a SQLite error.
pub(super) fn sql(doing: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> ProposalError {
    let doing = doing.into();
    move |error| ProposalError::Store(StoreError::Sqlite { doing, error })
}

const COLUMNS: &str = "id, created_at, updated_at, proposer, kind, pattern, summary, issue_url, \
     tests_run, base_sha, claimed_sha, patch, diff_hash, decision, assessment, shadow, state, \
     decided_by, decided_note, approved_hash, change_id, note, \
     (SELECT state FROM changes WHERE changes.id = proposals.change_id), tree_sha, approved_tree";

fn from_row(row: &Row<'_>) -> rusqlite::Result<ProposalRecord> {
    let state: String = row.get(16)?;
    let assessment: String = row.get(14)?;
    Ok(ProposalRecord {
        id: row.get(0)?,
        created_at: row.get(1)?,
        updated_at: row.get(2)?,
        proposer: row.get(3)?,
        kind: row.get(4)?,
        pattern: row.get(5)?,
        summary: row.get(6)?,
        issue_url: row.get(7)?,
        tests_run: row.get::<_, i64>(8)? != 0,
        base_sha: row.get(9)?,
        claimed_sha: row.get(10)?,
        patch: row.get(11)?,
        diff_hash: row.get(12)?,
        decision: row.get(13)?,
        assessment: serde_json::from_str(&assessment).unwrap_or(Value::Null),
        shadow: row.get::<_, i64>(15)? != 0,
        state: ProposalState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                16,
                rusqlite::types::Type::Text,
                format!("unknown proposal state {state:?}").into(),
            )
        })?,
        decided_by: row.get(17)?,
        decided_note: row.get(18)?,
        approved_hash: row.get(19)?,
        change_id: row.get(20)?,
        note: row.get(21)?,
        change_state: row.get(22)?,
        tree_sha: row.get(23)?,
        approved_tree: row.get(24)?,
    })
}

fn get(conn: &Connection, id: &str) -> Result<ProposalRecord> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM proposals WHERE id = ?1"),
        [id],
        from_row,
    )
    .optional()
    .map_err(sql(format!("reading proposal {id}")))?
    .ok_or_else(|| ProposalError::NotFound(id.to_owned()))
}

/// `prp_` and 12 random hex digits.
fn new_id() -> String {
    let n: u64 = rand::random();
    format!("prp_{:012x}", n & 0xffff_ffff_ffff)
}

/// Appends an audit record about a proposal inside the caller's transaction.
fn audit(
    conn: &Connection,
    now: f64,
    actor: &str,
    kind: &str,
    proposal: &str,
    change_id: Option<&str>,
    detail: Value,
) -> rusqlite::Result<()> {
    crate::store::append_record(
        conn,
        now,
        actor,
        kind,
        Some(proposal),
        change_id,
        &detail.to_string(),
    )
    .map(|_| ())
}

impl Store {
    /// Stores a submitted proposal with the policy's decision, and audits both.
    pub fn insert_proposal(&mut self, new: &NewProposal, now: f64) -> Result<ProposalRecord> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("storing a proposal"))?;
        let mut id = new_id();
        for _ in 0..4 {
            let taken: bool = tx
                .query_row("SELECT 1 FROM proposals WHERE id = ?1", [&id], |_| Ok(true))
                .optional()
                .map_err(sql("choosing a proposal id"))?
                .unwrap_or(false);
            if !taken {
                break;
            }
            id = new_id();
        }
        tx.execute(
            "INSERT INTO proposals (id, created_at, updated_at, proposer, kind, pattern, summary, \
             issue_url, tests_run, base_sha, claimed_sha, patch, diff_hash, decision, \
             assessment, shadow, state, tree_sha) \
             VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            params![
                id,
                now,
                new.proposer,
                new.kind.as_str(),
                new.pattern,
                new.summary,
                new.issue_url,
                i64::from(new.tests_run),
                new.base_sha,
                new.claimed_sha,
                new.patch,
                new.diff_hash,
                new.decision,
                new.assessment.to_string(),
                i64::from(new.shadow),
                new.state.as_str(),
                new.tree_sha,
            ],
        )
        .map_err(sql(format!("storing proposal {id}")))?;
        let submitted = json!({
            "kind": new.kind.as_str(),
            "pattern": new.pattern,
            "summary": new.summary,
            "issue_url": new.issue_url,
            "tests_run": new.tests_run,
            "base_sha": new.base_sha,
            "claimed_sha": new.claimed_sha,
            "diff_sha256": new.diff_hash,
            "tree": new.tree_sha,
            "patch_bytes": new.patch.len(),
        });
        audit(
            &tx,
            now,
            &new.proposer,
            "proposal_submitted",
            &id,
            None,
            submitted,
        )
        .map_err(sql(format!("auditing proposal {id}")))?;
        let decision = json!({
            "decision": new.decision,
            "shadow": new.shadow,
            "state": new.state,
            "assessment": new.assessment,
        });
        audit(&tx, now, "guardian", "policy_decision", &id, None, decision)
            .map_err(sql(format!("auditing the decision on proposal {id}")))?;
        let record = get(&tx, &id)?;
        tx.commit().map_err(sql(format!("storing proposal {id}")))?;
        Ok(record)
    }

    pub fn get_proposal(&self, id: &str) -> Result<ProposalRecord> {
        get(&self.conn, id)
    }

    /// The proposal a change carries out, if it came through the gate.
    pub fn proposal_for_change(&self, change_id: &str) -> Result<Option<ProposalRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM proposals WHERE change_id = ?1"),
                [change_id],
                from_row,
            )
            .optional()
            .map_err(sql(format!("reading the proposal of change {change_id}")))
    }

    /// The newest proposals first.
    pub fn recent_proposals(&self, limit: usize) -> Result<Vec<ProposalRecord>> {
        self.select_proposals(
            "ORDER BY created_at DESC, id LIMIT ?1",
            [limit as i64],
            "listing proposals",
        )
    }

    /// Proposals waiting for a person.
    pub fn pending_proposals(&self) -> Result<usize> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM proposals WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
            .map_err(sql("counting pending proposals"))
    }

    /// `SELECT` of whole proposals, `tail` being the `WHERE`/`ORDER BY` part.
    fn select_proposals(
        &self,
        tail: &str,
        params: impl rusqlite::Params,
        doing: &str,
    ) -> Result<Vec<ProposalRecord>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM proposals {tail}"))
            .map_err(sql(doing))?;
        let rows = stmt.query_map(params, from_row).map_err(sql(doing))?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql(doing))
    }

    /// A person approves or rejects a proposal. `diff_hash` is the diff they looked at: an
    /// approval of any other diff is refused. Only a pending proposal can be decided, once,
    /// and never by whoever proposed it.
    pub fn decide_proposal(
        &mut self,
        id: &str,
        approve: bool,
        actor: &str,
        diff_hash: &str,
        why: Option<&str>,
        now: f64,
    ) -> Result<ProposalRecord> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(format!("deciding proposal {id}")))?;
        let p = get(&tx, id)?;
        if p.proposer == actor {
            return Err(ProposalError::Forbidden(format!(
                "{actor} proposed {id} and cannot also decide it: another person must"
            )));
        }
        if p.state != ProposalState::Pending {
            let by = p
                .decided_by
                .as_deref()
                .map_or(String::new(), |b| format!(" by {b}"));
            return Err(ProposalError::Conflict(format!(
                "proposal {id} is {}{by}, not waiting for a decision: an approval counts once",
                p.state
            )));
        }
        if !diff_hash.eq_ignore_ascii_case(&p.diff_hash) {
            return Err(ProposalError::Conflict(format!(
                "proposal {id}'s diff is sha256 {}, not the {diff_hash} this decision was made \
                 on: look at the diff again (guardian proposals {id})",
                p.diff_hash
            )));
        }
        let state = if approve {
            ProposalState::Approved
        } else {
            ProposalState::Rejected
        };
        tx.execute(
            "UPDATE proposals SET state = ?2, decided_by = ?3, decided_note = ?4, \
             approved_hash = ?5, approved_tree = ?6, updated_at = ?7 WHERE id = ?1",
            params![
                id,
                state.as_str(),
                actor,
                why,
                approve.then_some(&p.diff_hash),
                p.tree_sha.as_ref().filter(|_| approve),
                now
            ],
        )
        .map_err(sql(format!("deciding proposal {id}")))?;
        let kind = if approve {
            "proposal_approved"
        } else {
            "proposal_rejected"
        };
        audit(
            &tx,
            now,
            actor,
            kind,
            id,
            None,
            json!({ "diff_sha256": p.diff_hash, "tree": p.tree_sha, "why": why }),
        )
        .map_err(sql(format!("auditing the decision on {id}")))?;
        let record = get(&tx, id)?;
        tx.commit()
            .map_err(sql(format!("deciding proposal {id}")))?;
        Ok(record)
    }

    /// Moves a proposal along as guardian acts on it (deploying, deployed, failed), with the
    /// audit record of what was done.
    pub fn advance_proposal(
        &mut self,
        id: &str,
        to: ProposalState,
        change_id: Option<&str>,
        note: Option<&str>,
        detail: Value,
        now: f64,
    ) -> Result<ProposalRecord> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(format!("updating proposal {id}")))?;
        let p = get(&tx, id)?;
        if !p.state.may_become(to) {
            return Err(ProposalError::Conflict(format!(
                "proposal {id} is {} and cannot become {to}",
                p.state
            )));
        }
        tx.execute(
            "UPDATE proposals SET state = ?2, change_id = COALESCE(?3, change_id), \
             note = COALESCE(?4, note), updated_at = ?5 WHERE id = ?1",
            params![id, to.as_str(), change_id, note, now],
        )
        .map_err(sql(format!("updating proposal {id}")))?;
        audit(
            &tx,
            now,
            "guardian",
            &format!("proposal_{to}"),
            id,
            change_id,
            json!({ "from": p.state, "note": note, "detail": detail }),
        )
        .map_err(sql(format!("auditing proposal {id}")))?;
        let record = get(&tx, id)?;
        tx.commit()
            .map_err(sql(format!("updating proposal {id}")))?;
        Ok(record)
    }

    /// Whether unattended deploys are paused: the latest pause or resume on the audit trail
    /// decides, so the switch survives restarts and its history is the trail itself. Returns
    /// who paused, why and when.
    pub fn gate_paused(&self) -> Result<Option<(String, String, f64)>> {
        let last: Option<(String, String, String, f64)> = self
            .conn
            .query_row(
                "SELECT kind, actor, detail, at FROM events \
                 WHERE kind IN ('gate_paused', 'gate_resumed') ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(sql("reading whether deploys are paused"))?;
        Ok(match last {
            Some((kind, actor, detail, at)) if kind == "gate_paused" => {
                let why = serde_json::from_str::<Value>(&detail)
                    .ok()
                    .and_then(|d| d["why"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                Some((actor, why, at))
            }
            _ => None,
        })
    }

    /// Proposals approved or `auto` and not yet deployed, oldest first.
    pub fn approved_proposals(&self) -> Result<Vec<ProposalRecord>> {
        self.select_proposals(
            "WHERE state IN ('approved', 'deploying') ORDER BY created_at, id",
            [],
            "listing approved proposals",
        )
    }

    /// Every proposal as the trust ledger reads it: its pattern, whether a person approved it,
    /// and how the change it became ended. Changes notified for a proposal (shadow mode: the
    /// team deploys, guardian only watches) count the same as changes guardian deployed.
    pub fn ledger_entries(&self) -> Result<Vec<Entry>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT p.pattern, p.created_at, p.state, p.approved_hash IS NOT NULL, c.state, \
                 EXISTS (SELECT 1 FROM events e WHERE e.change_id = p.change_id \
                   AND e.kind = 'state_changed' AND json_extract(e.detail, '$.to') = 'regressed') \
                 FROM proposals p LEFT JOIN changes c ON c.id = p.change_id \
                 ORDER BY p.created_at, p.id",
            )
            .map_err(sql("reading the trust ledger"))?;
        let rows = stmt
            .query_map([], |row| {
                let state: String = row.get(2)?;
                let change: Option<String> = row.get(4)?;
                let regressed: bool = row.get(5)?;
                Ok(Entry {
                    pattern: row.get(0)?,
                    at: row.get(1)?,
                    approved: row.get(3)?,
                    outcome: outcome(&state, change.as_deref(), regressed),
                })
            })
            .map_err(sql("reading the trust ledger"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sql("reading the trust ledger"))
    }

    /// Links a change (deployed by the team, in shadow mode) to the proposal it carries out.
    pub fn link_proposal(
        &mut self,
        id: &str,
        change_id: &str,
        actor: &str,
        now: f64,
    ) -> Result<ProposalRecord> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(format!("linking proposal {id}")))?;
        let p = get(&tx, id)?;
        if let Some(existing) = &p.change_id {
            return Err(ProposalError::Conflict(format!(
                "proposal {id} was already deployed as change {existing}"
            )));
        }
        tx.execute(
            "UPDATE proposals SET change_id = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, change_id, now],
        )
        .map_err(sql(format!("linking proposal {id}")))?;
        audit(
            &tx,
            now,
            actor,
            "proposal_linked",
            id,
            Some(change_id),
            json!({ "change_id": change_id }),
        )
        .map_err(sql(format!("auditing proposal {id}")))?;
        let record = get(&tx, id)?;
        tx.commit().map_err(sql(format!("linking proposal {id}")))?;
        Ok(record)
    }

    /// Changes found `regressed` since `since` (unix seconds): the recent record the risk
    /// score reads.
    pub fn regressions_since(&self, since: f64) -> Result<u32> {
        self.conn
            .query_row(
                "SELECT COUNT(DISTINCT change_id) FROM events WHERE at >= ?1 \
                 AND kind = 'state_changed' AND json_extract(detail, '$.to') = 'regressed'",
                [since],
                |row| row.get(0),
            )
            .map_err(sql("counting recent rollbacks"))
    }
}

/// A change that was ever `regressed` counts as a rollback for trust, whatever happened next
/// (rolled back, escalated, or only recorded in shadow mode).
fn outcome(proposal_state: &str, change_state: Option<&str>, regressed: bool) -> Outcome {
    match (proposal_state, change_state) {
        ("denied", _) => Outcome::Denied,
        ("rejected", _) => Outcome::Rejected,
        (_, Some(_)) if regressed => Outcome::Regressed,
        (_, Some("healthy")) => Outcome::Healthy,
        (_, Some(_)) => Outcome::Deployed,
        _ => Outcome::NotDeployed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_764_000_000.0;

    fn pending(store: &mut Store, proposer: &str) -> ProposalRecord {
        store
            .insert_proposal(
                &NewProposal {
                    proposer: proposer.into(),
                    kind: crate::store::ChangeKind::Ai,
                    pattern: "nil-check".into(),
                    summary: "guard a missing cart".into(),
                    issue_url: None,
                    tests_run: true,
                    base_sha: "a".repeat(40),
                    claimed_sha: None,
                    patch: "diff --git a/x b/x".into(),
                    diff_hash: "d".repeat(64),
                    tree_sha: Some("e".repeat(40)),
                    decision: "needs_approval".into(),
                    assessment: json!({ "risk": { "score": 40 } }),
                    shadow: false,
                    state: ProposalState::Pending,
                },
                T0,
            )
            .unwrap()
    }

    #[test]
    fn an_approval_is_for_the_diff_it_names_and_counts_once() {
        let mut store = Store::open_in_memory().unwrap();
        let p = pending(&mut store, "agent");
        let other = "e".repeat(64);
        let err = store
            .decide_proposal(&p.id, true, "approver:alice", &other, None, T0 + 1.0)
            .unwrap_err();
        assert!(matches!(err, ProposalError::Conflict(_)), "{err}");
        assert_eq!(
            store.get_proposal(&p.id).unwrap().state,
            ProposalState::Pending
        );

        let approved = store
            .decide_proposal(&p.id, true, "approver:alice", &p.diff_hash, None, T0 + 2.0)
            .unwrap();
        assert_eq!(approved.state, ProposalState::Approved);
        assert_eq!(
            approved.approved_hash.as_deref(),
            Some(p.diff_hash.as_str())
        );
        assert_eq!(
            approved.approved_tree, p.tree_sha,
            "the approval binds to the judged tree too"
        );
        let replay = store
            .decide_proposal(&p.id, true, "approver:bob", &p.diff_hash, None, T0 + 3.0)
            .unwrap_err();
        assert!(replay.to_string().contains("by approver:alice"), "{replay}");
    }

    #[test]
    fn whoever_proposed_cannot_decide() {
        let mut store = Store::open_in_memory().unwrap();
        let p = pending(&mut store, "admin");
        let err = store
            .decide_proposal(&p.id, true, "admin", &p.diff_hash, None, T0 + 1.0)
            .unwrap_err();
        assert!(matches!(err, ProposalError::Forbidden(_)), "{err}");
    }

    #[test]
    fn guardian_moves_a_proposal_only_forward() {
        let mut store = Store::open_in_memory().unwrap();
        let p = pending(&mut store, "agent");
        let early = store
            .advance_proposal(&p.id, ProposalState::Deploying, None, None, json!({}), T0)
            .unwrap_err();
        assert!(
            early
                .to_string()
                .contains("pending and cannot become deploying"),
            "{early}"
        );
        store
            .decide_proposal(&p.id, false, "approver:alice", &p.diff_hash, Some("no"), T0)
            .unwrap();
        let late = store
            .advance_proposal(&p.id, ProposalState::Deploying, None, None, json!({}), T0)
            .unwrap_err();
        assert!(matches!(late, ProposalError::Conflict(_)), "{late}");
    }

    #[test]
    fn every_step_is_on_the_audit_trail_with_who_took_it() {
        let mut store = Store::open_in_memory().unwrap();
        let p = pending(&mut store, "agent");
        store
            .decide_proposal(&p.id, true, "approver:alice", &p.diff_hash, None, T0 + 1.0)
            .unwrap();
        let trail: Vec<(String, String)> = store
            .conn
            .prepare("SELECT kind, actor FROM events WHERE subject = ?1 ORDER BY seq")
            .unwrap()
            .query_map([&p.id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let expected = [
            ("proposal_submitted", "agent"),
            ("policy_decision", "guardian"),
            ("proposal_approved", "approver:alice"),
        ];
        assert_eq!(
            trail,
            expected.map(|(k, a)| (k.to_owned(), a.to_owned())).to_vec()
        );
    }
}
