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

use super::ledger::{Entry, Outcome, Tally};
use crate::store::{EventKind, Store, StoreError, StoredKind};

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
    /// What the record says of a proposal moving to this state (`proposal_` and the state),
    /// for the states a proposal moves to once stored; `None` for the two it is stored in.
    fn moved_kind(self) -> Option<EventKind> {
        match self {
            ProposalState::Approved => Some(EventKind::ProposalApproved),
            ProposalState::Rejected => Some(EventKind::ProposalRejected),
            ProposalState::Deploying => Some(EventKind::ProposalDeploying),
            ProposalState::Deployed => Some(EventKind::ProposalDeployed),
            ProposalState::DeployFailed => Some(EventKind::ProposalDeployFailed),
            ProposalState::Shadow => Some(EventKind::ProposalShadow),
            ProposalState::Denied | ProposalState::Pending => None,
        }
    }

    fn may_become(self, next: ProposalState) -> bool {
        use ProposalState::*;
        matches!(
            (self, next),
            (Pending, Approved | Rejected)
                | (Approved, Deploying | Shadow)
                // Deploying again: the last run of guardian stopped during the deploy.
                | (Deploying, Deploying | Deployed | DeployFailed)
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
    /// The Sentry issue it claims to fix (its id, resolved by the gate), if it names one.
    pub sentry_issue: Option<String>,
    /// The feature flag the change is behind, if it declares one.
    pub flag: Option<String>,
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

/// A stored proposal, and as the API sends it (`api`: the CLI reads it back).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ProposalRecord {
    pub id: String,
    pub created_at: f64,
    pub updated_at: f64,
    pub proposer: String,
    pub kind: String,
    pub pattern: String,
    pub summary: String,
    pub issue_url: Option<String>,
    /// The Sentry issue it claims to fix (its id), if it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentry_issue: Option<String>,
    /// The feature flag the change is behind, if it declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    pub tests_run: bool,
    pub base_sha: String,
    pub claimed_sha: Option<String>,
    pub diff_hash: String,
    /// The tree judged: what is deployed, or nothing is.
    pub tree_sha: Option<String>,
    pub decision: String,
    /// The policy's assessment as stored: `trust::Assessment` and the policy's hash, or the
    /// refusal of a patch git never read. Sent as stored; `api::assessment` reads it.
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
    /// The patch itself is not shown in listings; `patch` fetches it (and an answer read back
    /// has none: `ProposalView::patch` carries it).
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

/// The columns `from_row` reads, the patch included.
/// A healthy change's claim to fix an issue was not shown (SQL over `changes c`).
const UNPROVEN: &str =
    "c.fixes_issue IS NOT NULL AND COALESCE(json_extract(c.report, '$.claim.verdict'), '') != 'fixed'";

const COLUMNS: &str = "id, created_at, updated_at, proposer, kind, pattern, summary, issue_url, \
     tests_run, base_sha, claimed_sha, patch, diff_hash, decision, assessment, shadow, state, \
     decided_by, decided_note, approved_hash, change_id, note, \
     (SELECT state FROM changes WHERE changes.id = proposals.change_id), tree_sha, approved_tree, \
     sentry_issue, flag";

/// The same columns with the patch left out (empty): listings do not show it, and a patch may
/// be half a megabyte.
const LIST_COLUMNS: &str = "id, created_at, updated_at, proposer, kind, pattern, summary, \
     issue_url, tests_run, base_sha, claimed_sha, '' AS patch, diff_hash, decision, assessment, \
     shadow, state, decided_by, decided_note, approved_hash, change_id, note, \
     (SELECT state FROM changes WHERE changes.id = proposals.change_id), tree_sha, approved_tree, \
     sentry_issue, flag";

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
        sentry_issue: row.get(25)?,
        flag: row.get(26)?,
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
    kind: EventKind,
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

/// Where a proposal is counted in `proposal_tally`: its pattern, state, outcome (`None` before
/// it is first counted) and whether a person approved it.
#[derive(Clone, Debug, PartialEq)]
struct TallyKey {
    pattern: String,
    state: String,
    outcome: Option<String>,
    approved: bool,
}

fn tally_key(conn: &Connection, id: &str) -> rusqlite::Result<TallyKey> {
    conn.query_row(
        "SELECT pattern, state, outcome, approved_hash IS NOT NULL FROM proposals WHERE id = ?1",
        [id],
        |r| {
            Ok(TallyKey {
                pattern: r.get(0)?,
                state: r.get(1)?,
                outcome: r.get(2)?,
                approved: r.get(3)?,
            })
        },
    )
}

/// Recomputes proposal `id`'s outcome from its state and its change's, stores it, and moves
/// the proposal in the tally from where it was counted (`before`: its key as [`tally_key`]
/// read it before the caller changed the row). Runs inside the caller's transaction, so the
/// tally never disagrees with the rows it counts. Looks at one proposal and the events of one
/// change (by index): its cost does not grow with the record.
fn retally(conn: &Connection, id: &str, before: &TallyKey) -> rusqlite::Result<()> {
    let (pattern, state, approved, change_state, regressed, unproven): (
        String,
        String,
        bool,
        Option<String>,
        bool,
        bool,
    ) = conn.query_row(
        &format!(
            "SELECT p.pattern, p.state, p.approved_hash IS NOT NULL, c.state, \
             EXISTS (SELECT 1 FROM events e INDEXED BY events_by_change \
               WHERE e.change_id = p.change_id AND e.kind = 'state_changed' \
               AND json_extract(e.detail, '$.to') = 'regressed'), \
             COALESCE({UNPROVEN}, 0) \
             FROM proposals p LEFT JOIN changes c ON c.id = p.change_id WHERE p.id = ?1"
        ),
        [id],
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        },
    )?;
    let outcome = outcome(&state, change_state.as_deref(), regressed, unproven).as_str();
    let after = TallyKey {
        pattern,
        state,
        outcome: Some(outcome.to_owned()),
        approved,
    };
    if *before == after {
        return Ok(());
    }
    if let Some(counted) = &before.outcome {
        let key = params![before.pattern, before.state, counted, before.approved];
        conn.execute(
            "UPDATE proposal_tally SET n = n - 1 \
             WHERE pattern = ?1 AND state = ?2 AND outcome = ?3 AND approved = ?4",
            key,
        )?;
        conn.execute(
            "DELETE FROM proposal_tally \
             WHERE pattern = ?1 AND state = ?2 AND outcome = ?3 AND approved = ?4 AND n <= 0",
            key,
        )?;
    }
    conn.execute(
        "INSERT INTO proposal_tally (pattern, state, outcome, approved, n) \
         VALUES (?1, ?2, ?3, ?4, 1) \
         ON CONFLICT (pattern, state, outcome, approved) DO UPDATE SET n = n + 1",
        params![after.pattern, after.state, outcome, after.approved],
    )?;
    if before.outcome.as_deref() != Some(outcome) {
        conn.execute(
            "UPDATE proposals SET outcome = ?2 WHERE id = ?1",
            params![id, outcome],
        )?;
    }
    Ok(())
}

/// A change moved: the proposal it carries out (if any) is counted again.
pub(crate) fn retally_change(conn: &Connection, change_id: &str) -> rusqlite::Result<()> {
    let ids: Vec<String> = conn
        .prepare_cached("SELECT id FROM proposals WHERE change_id = ?1")?
        .query_map([change_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in ids {
        let before = tally_key(conn, &id)?;
        retally(conn, &id, &before)?;
    }
    Ok(())
}

/// Migration 5's Rust step: counts every proposal already stored, once.
pub(crate) fn tally_existing(conn: &Connection) -> rusqlite::Result<()> {
    let ids: Vec<String> = conn
        .prepare("SELECT id FROM proposals WHERE outcome IS NULL ORDER BY rowid")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in ids {
        let before = tally_key(conn, &id)?;
        retally(conn, &id, &before)?;
    }
    Ok(())
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
             assessment, shadow, state, tree_sha, sentry_issue, flag) \
             VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
             ?18, ?19)",
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
                new.sentry_issue,
                new.flag,
            ],
        )
        .map_err(sql(format!("storing proposal {id}")))?;
        tally_key(&tx, &id)
            .and_then(|before| retally(&tx, &id, &before))
            .map_err(sql(format!("counting proposal {id}")))?;
        let mut submitted = json!({
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
        if let Some(issue) = &new.sentry_issue {
            submitted["sentry_issue"] = issue.clone().into();
        }
        if let Some(flag) = &new.flag {
            submitted["flag"] = flag.clone().into();
        }
        audit(
            &tx,
            now,
            &new.proposer,
            EventKind::ProposalSubmitted,
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
        audit(
            &tx,
            now,
            "guardian",
            EventKind::PolicyDecision,
            &id,
            None,
            decision,
        )
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

    /// The newest proposals first, without their patches. Walks the index on `created_at`
    /// from its end: the cost is the `limit`, not the number of proposals.
    pub fn recent_proposals(&self, limit: usize) -> Result<Vec<ProposalRecord>> {
        self.select_proposals(
            LIST_COLUMNS,
            "ORDER BY created_at DESC, rowid DESC LIMIT ?1",
            [i64::try_from(limit).unwrap_or(i64::MAX)],
            "listing proposals",
        )
    }

    /// The oldest `limit` proposals waiting for a person, with their patches: what the status
    /// page shows an approver to decide.
    pub fn waiting_proposals(&self, limit: usize) -> Result<Vec<ProposalRecord>> {
        self.select_proposals(
            COLUMNS,
            "WHERE state = 'pending' ORDER BY created_at, rowid LIMIT ?1",
            [i64::try_from(limit).unwrap_or(i64::MAX)],
            "listing the proposals waiting for a person",
        )
    }

    /// Proposals waiting for a person, from the tally.
    pub fn pending_proposals(&self) -> Result<usize> {
        self.proposals_in("pending")
    }

    /// How many proposals are approved and not yet deployed (one change at a time: they wait
    /// for the change being watched).
    pub fn approved_waiting(&self) -> Result<usize> {
        self.proposals_in("approved")
    }

    fn proposals_in(&self, state: &str) -> Result<usize> {
        self.conn
            .query_row(
                "SELECT COALESCE(SUM(n), 0) FROM proposal_tally WHERE state = ?1",
                [state],
                |r| r.get(0),
            )
            .map_err(sql("counting proposals by state"))
    }

    /// Each pattern's tally for the trust ledger: counts from `proposal_tally`, then, for a
    /// pattern that was ever rolled back, its last rollback (an index seek) and the approved
    /// healthy changes since (counted in a partial index of those alone: each took a watch
    /// window to earn). Never anything that grows with the proposals denied or waiting.
    pub fn ledger_tally(&self) -> Result<Vec<(String, Tally)>> {
        let doing = "reading the trust ledger";
        let rows: Vec<(String, String, bool, i64)> = self
            .conn
            .prepare_cached(
                "SELECT pattern, outcome, approved, SUM(n) FROM proposal_tally \
                 GROUP BY pattern, outcome, approved ORDER BY pattern",
            )
            .map_err(sql(doing))?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(sql(doing))?
            .collect::<rusqlite::Result<_>>()
            .map_err(sql(doing))?;
        let mut tallies: Vec<(String, Tally)> = Vec::new();
        // Per pattern (in `tallies` order): approved changes that stayed healthy, in all.
        let mut earning: Vec<u32> = Vec::new();
        for (pattern, outcome, approved, n) in rows {
            let outcome = Outcome::parse(&outcome).ok_or_else(|| {
                ProposalError::Store(StoreError::Corrupt(format!(
                    "the proposal tally holds an unknown outcome {outcome:?}"
                )))
            })?;
            if tallies.last().map(|(p, _)| p) != Some(&pattern) {
                tallies.push((pattern, Tally::default()));
                earning.push(0);
            }
            let n = u32::try_from(n).unwrap_or(0);
            if let (Some((_, t)), Some(e)) = (tallies.last_mut(), earning.last_mut()) {
                t.count(outcome, approved, n);
                if approved && outcome == Outcome::Healthy {
                    *e += n;
                }
            }
        }
        for ((pattern, t), earning) in tallies.iter_mut().zip(earning) {
            // The latest setback of each kind, by when its change was decided: a proposal made
            // early and rolled back late still sets its pattern back from the rollback on, so
            // healthy changes decided before it never count after it (found by the attack
            // trial: ordered by when proposals were made, an old proposal's rollback reset
            // nothing).
            let latest = |outcome: Outcome, any: bool| -> Result<Option<(f64, String)>> {
                if !any {
                    return Ok(None);
                }
                self.conn
                    .prepare_cached(
                        "SELECT COALESCE(c.decided_at, c.updated_at, p.created_at) AS at, p.id \
                         FROM proposals p LEFT JOIN changes c ON c.id = p.change_id \
                         WHERE p.pattern = ?1 AND p.outcome = ?2 \
                         ORDER BY at DESC, p.id DESC LIMIT 1",
                    )
                    .and_then(|mut st| {
                        st.query_row(params![pattern.as_str(), outcome.as_str()], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .optional()
                    })
                    .map_err(sql(doing))
            };
            let rollback = latest(Outcome::Regressed, t.rollbacks > 0)?;
            let ineffective = latest(Outcome::Ineffective, t.ineffective > 0)?;
            t.last_rollback_at = rollback.as_ref().map(|(at, _)| *at);
            t.last_ineffective_at = ineffective.as_ref().map(|(at, _)| *at);
            let last = match (rollback, ineffective) {
                (Some(r), Some(i)) => Some(if (i.0, &i.1) > (r.0, &r.1) { i } else { r }),
                (r, i) => r.or(i),
            };
            t.earned = match last {
                // Never set back: every approved healthy change counts, and the tally has them.
                None => earning,
                // Those decided healthy after the last setback was decided.
                Some((at, id)) if earning > 0 => {
                    let earned: i64 = self
                        .conn
                        .prepare_cached(
                            "SELECT COUNT(*) FROM proposals p INDEXED BY proposals_earning \
                             LEFT JOIN changes c ON c.id = p.change_id \
                             WHERE p.outcome = 'healthy' AND p.approved_hash IS NOT NULL \
                             AND p.pattern = ?1 \
                             AND (COALESCE(c.decided_at, c.updated_at, p.created_at) > ?2 \
                                  OR (COALESCE(c.decided_at, c.updated_at, p.created_at) = ?2 \
                                      AND p.id > ?3))",
                        )
                        .and_then(|mut st| {
                            st.query_row(params![pattern.as_str(), at, id], |r| r.get(0))
                        })
                        .map_err(sql(doing))?;
                    u32::try_from(earned).unwrap_or(0)
                }
                Some(_) => 0,
            };
        }
        Ok(tallies)
    }

    /// `SELECT` of proposals, `tail` being the `WHERE`/`ORDER BY` part.
    fn select_proposals(
        &self,
        columns: &str,
        tail: &str,
        params: impl rusqlite::Params,
        doing: &str,
    ) -> Result<Vec<ProposalRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {columns} FROM proposals {tail}"))
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
        let before = tally_key(&tx, id).map_err(sql(format!("deciding proposal {id}")))?;
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
        retally(&tx, id, &before).map_err(sql(format!("counting proposal {id}")))?;
        let kind = if approve {
            EventKind::ProposalApproved
        } else {
            EventKind::ProposalRejected
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
        let Some(kind) = to.moved_kind().filter(|_| p.state.may_become(to)) else {
            return Err(ProposalError::Conflict(format!(
                "proposal {id} is {} and cannot become {to}",
                p.state
            )));
        };
        let before = tally_key(&tx, id).map_err(sql(format!("updating proposal {id}")))?;
        tx.execute(
            "UPDATE proposals SET state = ?2, change_id = COALESCE(?3, change_id), \
             note = COALESCE(?4, note), updated_at = ?5 WHERE id = ?1",
            params![id, to.as_str(), change_id, note, now],
        )
        .map_err(sql(format!("updating proposal {id}")))?;
        retally(&tx, id, &before).map_err(sql(format!("counting proposal {id}")))?;
        audit(
            &tx,
            now,
            "guardian",
            kind,
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
                 WHERE kind IN (?1, ?2) ORDER BY seq DESC LIMIT 1",
                [
                    EventKind::GatePaused.as_str(),
                    EventKind::GateResumed.as_str(),
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(sql("reading whether deploys are paused"))?;
        Ok(match last {
            Some((kind, actor, detail, at)) if StoredKind::read(&kind) == EventKind::GatePaused => {
                let why = serde_json::from_str::<Value>(&detail)
                    .ok()
                    .and_then(|d| d["why"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                Some((actor, why, at))
            }
            _ => None,
        })
    }

    /// How many times a deploy of proposal `id` was started (more than once: guardian stopped
    /// during one and deployed it again).
    pub fn deploy_attempts(&self, id: &str) -> Result<u32> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM events WHERE subject = ?1 AND kind = ?2",
                params![id, EventKind::ProposalDeploying.as_str()],
                |r| r.get(0),
            )
            .map_err(sql(format!("counting the deploys of proposal {id}")))
    }

    /// Proposals approved or `auto` and not yet deployed, oldest first.
    pub fn approved_proposals(&self) -> Result<Vec<ProposalRecord>> {
        self.select_proposals(
            COLUMNS,
            "WHERE state IN ('approved', 'deploying') ORDER BY created_at, id",
            [],
            "listing approved proposals",
        )
    }

    /// Every proposal as the trust ledger reads it: its pattern, whether a person approved it,
    /// and how the change it became ended. Changes notified for a proposal (shadow mode: the
    /// team deploys, guardian only watches) count the same as changes guardian deployed.
    /// Reads every proposal: the definition [`Store::ledger_tally`] is checked against, not
    /// what a request should run.
    pub fn ledger_entries(&self) -> Result<Vec<Entry>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT p.pattern, COALESCE(c.decided_at, c.updated_at, p.created_at) AS at, \
                 p.state, p.approved_hash IS NOT NULL, c.state, \
                 EXISTS (SELECT 1 FROM events e INDEXED BY events_by_change \
                   WHERE e.change_id = p.change_id \
                   AND e.kind = 'state_changed' AND json_extract(e.detail, '$.to') = 'regressed'), \
                 COALESCE({UNPROVEN}, 0) \
                 FROM proposals p LEFT JOIN changes c ON c.id = p.change_id \
                 ORDER BY at, p.id"
            ))
            .map_err(sql("reading the trust ledger"))?;
        let rows = stmt
            .query_map([], |row| {
                let state: String = row.get(2)?;
                let change: Option<String> = row.get(4)?;
                let regressed: bool = row.get(5)?;
                let unproven: bool = row.get(6)?;
                Ok(Entry {
                    pattern: row.get(0)?,
                    at: row.get(1)?,
                    approved: row.get(3)?,
                    outcome: outcome(&state, change.as_deref(), regressed, unproven),
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
        let before = tally_key(&tx, id).map_err(sql(format!("linking proposal {id}")))?;
        tx.execute(
            "UPDATE proposals SET change_id = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, change_id, now],
        )
        .map_err(sql(format!("linking proposal {id}")))?;
        retally(&tx, id, &before).map_err(sql(format!("counting proposal {id}")))?;
        audit(
            &tx,
            now,
            actor,
            EventKind::ProposalLinked,
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
/// (rolled back, escalated, or only recorded in shadow mode). A healthy change that named the
/// issue it fixes earns credit only if the issue was shown fixed (`unproven`: it was not):
/// otherwise nothing shows the fix did what it claimed.
fn outcome(
    proposal_state: &str,
    change_state: Option<&str>,
    regressed: bool,
    unproven: bool,
) -> Outcome {
    match (proposal_state, change_state) {
        ("denied", _) => Outcome::Denied,
        ("rejected", _) => Outcome::Rejected,
        (_, Some(_)) if regressed => Outcome::Regressed,
        (_, Some("healthy")) if unproven => Outcome::Deployed,
        (_, Some("healthy")) => Outcome::Healthy,
        (_, Some("ineffective")) => Outcome::Ineffective,
        (_, Some(_)) => Outcome::Deployed,
        _ => Outcome::NotDeployed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_764_000_000.0;

    impl ProposalRecord {
        /// The proposal as it would be submitted again.
        fn into_new(self) -> NewProposal {
            NewProposal {
                proposer: self.proposer,
                kind: crate::store::ChangeKind::Ai,
                pattern: self.pattern,
                summary: self.summary,
                issue_url: self.issue_url,
                sentry_issue: self.sentry_issue,
                flag: self.flag,
                tests_run: self.tests_run,
                base_sha: self.base_sha,
                claimed_sha: self.claimed_sha,
                patch: self.patch,
                diff_hash: self.diff_hash,
                decision: self.decision,
                assessment: self.assessment,
                shadow: self.shadow,
                state: self.state,
                tree_sha: self.tree_sha,
            }
        }
    }

    #[test]
    fn a_proposal_moving_is_recorded_as_proposal_and_its_state_as_always() {
        let all = [
            ProposalState::Denied,
            ProposalState::Pending,
            ProposalState::Approved,
            ProposalState::Rejected,
            ProposalState::Deploying,
            ProposalState::Deployed,
            ProposalState::DeployFailed,
            ProposalState::Shadow,
        ];
        for to in all {
            let reachable = all.iter().any(|from| from.may_become(to));
            match to.moved_kind() {
                Some(kind) => assert_eq!(kind.as_str(), format!("proposal_{to}")),
                None => assert!(!reachable, "{to} is reached but has no record kind"),
            }
        }
    }

    fn pending(store: &mut Store, proposer: &str) -> ProposalRecord {
        store
            .insert_proposal(
                &NewProposal {
                    proposer: proposer.into(),
                    kind: crate::store::ChangeKind::Ai,
                    pattern: "nil-check".into(),
                    summary: "guard a missing cart".into(),
                    issue_url: None,
                    sentry_issue: None,
                    flag: None,
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

    /// Drives a store through `steps` random operations of every kind the gate makes, at
    /// times that often tie, and checks after each that the tally's ledger is the fold's.
    fn tally_agrees_with_the_fold(seed: u64, steps: usize) {
        use crate::gate::ledger;
        use crate::store::{ChangeState, NewChange};
        use rand::{Rng, SeedableRng};
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
        let mut store = Store::open_in_memory().unwrap();
        let patterns = [
            "nil-check",
            "timeout-bump",
            "retry-wrap",
            "other",
            "made-up",
        ];
        let mut ids: Vec<String> = Vec::new();
        for step in 0..steps {
            let t = T0 + (step / 3) as f64;
            let pick = |rng: &mut rand_pcg::Pcg64Mcg, ids: &[String]| {
                (!ids.is_empty()).then(|| ids[rng.gen_range(0..ids.len())].clone())
            };
            match rng.gen_range(0..6) {
                0 | 1 => {
                    let state = [
                        ProposalState::Denied,
                        ProposalState::Pending,
                        ProposalState::Approved,
                        ProposalState::Shadow,
                    ][rng.gen_range(0..4)];
                    let p = store
                        .insert_proposal(
                            &NewProposal {
                                pattern: patterns[rng.gen_range(0..patterns.len())].into(),
                                state,
                                ..pending(&mut Store::open_in_memory().unwrap(), "agent").into_new()
                            },
                            t,
                        )
                        .unwrap();
                    ids.push(p.id);
                }
                2 => {
                    if let Some(id) = pick(&mut rng, &ids) {
                        let hash = "d".repeat(64);
                        let _ = store.decide_proposal(&id, rng.gen(), "approver:a", &hash, None, t);
                    }
                }
                3 => {
                    if let Some(id) = pick(&mut rng, &ids) {
                        let p = store.get_proposal(&id).unwrap();
                        let change = |store: &mut Store| {
                            store
                                .insert_change(
                                    &NewChange {
                                        commit: "abc".into(),
                                        kind: crate::store::ChangeKind::Ai,
                                        pattern: None,
                                        summary: None,
                                        landed_at: t,
                                        fixes_issue: None,
                                        flag: None,
                                    },
                                    t,
                                )
                                .unwrap()
                                .id
                        };
                        match p.state {
                            ProposalState::Approved => {
                                store
                                    .advance_proposal(
                                        &id,
                                        ProposalState::Deploying,
                                        None,
                                        None,
                                        json!({}),
                                        t,
                                    )
                                    .unwrap();
                            }
                            ProposalState::Deploying if rng.gen_bool(0.8) => {
                                let c = change(&mut store);
                                store
                                    .advance_proposal(
                                        &id,
                                        ProposalState::Deployed,
                                        Some(&c),
                                        None,
                                        json!({}),
                                        t,
                                    )
                                    .unwrap();
                            }
                            ProposalState::Deploying => {
                                store
                                    .advance_proposal(
                                        &id,
                                        ProposalState::DeployFailed,
                                        None,
                                        None,
                                        json!({}),
                                        t,
                                    )
                                    .unwrap();
                            }
                            ProposalState::Shadow if p.change_id.is_none() => {
                                let c = change(&mut store);
                                store.link_proposal(&id, &c, "admin", t).unwrap();
                            }
                            _ => {}
                        }
                    }
                }
                _ => {
                    // A change moves: healthy, ineffective, inconclusive, or regressed and on
                    // through a rollback.
                    let Some(id) = pick(&mut rng, &ids) else {
                        continue;
                    };
                    let Some(c) = store.get_proposal(&id).unwrap().change_id else {
                        continue;
                    };
                    let now = store.get_change(&c).unwrap().unwrap().state;
                    let next = match now {
                        ChangeState::Watching => [
                            ChangeState::Healthy,
                            ChangeState::Regressed,
                            ChangeState::Inconclusive,
                            ChangeState::Ineffective,
                        ][rng.gen_range(0..4)],
                        ChangeState::Regressed => ChangeState::RollingBack,
                        ChangeState::RollingBack => ChangeState::Verifying,
                        ChangeState::Verifying => ChangeState::RolledBack,
                        _ => continue,
                    };
                    store.set_state(&c, next, None, None, None, t).unwrap();
                }
            }
            let from_tally = ledger::standing(&store.ledger_tally().unwrap(), 3);
            let from_fold = ledger::ledger(&store.ledger_entries().unwrap(), 3);
            assert_eq!(from_tally, from_fold, "seed {seed}, step {step}");
            assert_eq!(
                store.pending_proposals().unwrap(),
                store
                    .recent_proposals(usize::MAX)
                    .unwrap()
                    .iter()
                    .filter(|p| p.state == ProposalState::Pending)
                    .count()
            );
        }
    }

    #[test]
    fn a_healthy_fix_earns_credit_only_when_the_issue_it_named_was_shown_fixed() {
        assert_eq!(
            outcome("deployed", Some("healthy"), false, false),
            Outcome::Healthy
        );
        assert_eq!(
            outcome("deployed", Some("healthy"), false, true),
            Outcome::Deployed
        );
        assert_eq!(
            outcome("deployed", Some("ineffective"), false, true),
            Outcome::Ineffective
        );
        assert_eq!(
            outcome("deployed", Some("rolled_back"), true, true),
            Outcome::Regressed
        );
    }

    #[test]
    fn a_fix_proposed_early_and_rolled_back_late_sets_its_pattern_back_from_the_rollback() {
        use crate::gate::ledger;
        use crate::store::ChangeState;
        let mut store = Store::open_in_memory().unwrap();
        // Approved and deployed as change `c` at `at`, the change decided `state` at `decided`.
        let mut deploy = |at: f64, state: ChangeState, decided: f64| {
            let p = pending(&mut store, "agent");
            store
                .decide_proposal(&p.id, true, "approver:alice", &p.diff_hash, None, at)
                .unwrap();
            store
                .advance_proposal(&p.id, ProposalState::Deploying, None, None, json!({}), at)
                .unwrap();
            let c = store
                .insert_change(
                    &crate::store::NewChange {
                        commit: "c".repeat(40),
                        kind: crate::store::ChangeKind::Ai,
                        pattern: None,
                        summary: None,
                        landed_at: at,
                        fixes_issue: None,
                        flag: None,
                    },
                    at,
                )
                .unwrap()
                .id;
            store
                .advance_proposal(
                    &p.id,
                    ProposalState::Deployed,
                    Some(&c),
                    None,
                    json!({}),
                    at,
                )
                .unwrap();
            store
                .set_state(&c, state, None, Some(decided), None, decided)
                .unwrap();
        };
        // X is made first; two later fixes are decided healthy; then X is rolled back.
        deploy(T0 + 1.0, ChangeState::Regressed, T0 + 500.0);
        deploy(T0 + 100.0, ChangeState::Healthy, T0 + 200.0);
        deploy(T0 + 300.0, ChangeState::Healthy, T0 + 400.0);
        let t = ledger::standing(&store.ledger_tally().unwrap(), 2)
            .into_iter()
            .find(|t| t.pattern == "nil-check")
            .unwrap();
        assert_eq!(
            (t.level, t.earned, t.last_rollback_at),
            (ledger::Level::NeedsApproval, 0, Some(T0 + 500.0)),
            "{t:?}"
        );
        assert_eq!(
            ledger::ledger(&store.ledger_entries().unwrap(), 2)
                .into_iter()
                .find(|t| t.pattern == "nil-check")
                .map(|t| t.earned),
            Some(0)
        );
    }

    #[test]
    fn the_tally_always_gives_the_ledger_the_whole_record_gives() {
        for seed in 0..12 {
            tally_agrees_with_the_fold(seed, 250);
        }
    }

    #[test]
    fn an_upgraded_database_tallies_the_proposals_it_already_had() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guardian.db");
        {
            let mut store = Store::open(&path).unwrap();
            let p = pending(&mut store, "agent");
            store
                .decide_proposal(&p.id, true, "approver:alice", &p.diff_hash, None, T0)
                .unwrap();
            pending(&mut store, "agent");
            // As schema version 4 left it: no outcome, no tally.
            store
                .conn
                .execute_batch(
                    "UPDATE proposals SET outcome = NULL; DELETE FROM proposal_tally; \
                     PRAGMA user_version = 4;",
                )
                .unwrap();
            store
                .conn
                .execute_batch(
                    "DROP TABLE proposal_tally; DROP INDEX proposals_by_state; \
                     DROP INDEX proposals_by_change; DROP INDEX proposals_by_outcome; \
                     DROP INDEX approval_links_by_id; DROP INDEX proposals_earning; \
                     ALTER TABLE proposals DROP COLUMN outcome; \
                     ALTER TABLE approval_links DROP COLUMN link_id; \
                     ALTER TABLE outbox DROP COLUMN links; \
                     ALTER TABLE proposals DROP COLUMN tree_sha; \
                     ALTER TABLE proposals DROP COLUMN approved_tree; \
                     DROP TABLE sentry_deliveries; DROP TABLE sentry_issues; \
                     DROP TABLE sentry_event_ids; DROP TABLE sentry_events; \
                     ALTER TABLE changes DROP COLUMN fixes_issue; \
                     ALTER TABLE proposals DROP COLUMN sentry_issue; DROP TABLE agent_runs; \
                     DROP TABLE flag_actions; ALTER TABLE changes DROP COLUMN flag; \
                     ALTER TABLE proposals DROP COLUMN flag; DROP TABLE notifications;",
                )
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.pending_proposals().unwrap(), 1);
        let tally = store.ledger_tally().unwrap();
        assert_eq!(tally.len(), 1);
        assert_eq!((tally[0].1.proposals, tally[0].1.approved), (2, 1));
    }
}
