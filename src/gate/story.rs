//! The whole story of a change for its post-mortem: what the store knows about the change
//! (`report::postmortem::load`), plus, when it came through the gate, what was claimed, what the diff
//! really did and what the policy decided.

use crate::report::postmortem::{
    self, Claim, DiffFacts, DiffFile, PolicyDecision, RiskFactor, RuleFired,
};
use crate::store::{Store, StoreError};

use super::proposals::ProposalRecord;

/// The post-mortem of `change_id`, or `None` when there is no such change. `recent` is
/// traffic not stored yet (the daemon's open bins): an alert sent seconds after the incident
/// needs it to show the incident at all.
pub fn postmortem(
    store: &Store,
    service: &str,
    change_id: &str,
    recent: Vec<crate::series::SeriesPoint>,
) -> Result<Option<postmortem::Postmortem>, StoreError> {
    let Some(mut input) = postmortem::load(store, service, change_id)? else {
        return Ok(None);
    };
    input.series.extend(recent);
    let proposal = store
        .proposal_for_change(change_id)
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    if let Some(p) = proposal {
        input.claim = Some(Claim {
            kind: Some(p.kind.clone()),
            pattern: Some(p.pattern.clone()),
            summary: Some(p.summary.clone()),
            issue_url: p.issue_url.clone(),
            tests_run: Some(p.tests_run),
        });
        input.diff = diff_facts(&p);
        input.policy = Some(policy_decision(&p));
    }
    Ok(Some(postmortem::Postmortem::new(input)))
}

/// What the stored patch really changes, read again with the policy's own parser.
fn diff_facts(p: &ProposalRecord) -> Option<DiffFacts> {
    let diff = crate::trust::diff::parse(&p.patch).ok()?;
    let files = diff
        .files
        .iter()
        .map(|f| DiffFile {
            path: f.path().to_owned(),
            old_path: f
                .old_path
                .clone()
                .filter(|old| f.new_path.as_ref().is_some_and(|new| new != old)),
            status: f.status.to_string(),
            added: f.added_lines().count() as u64,
            removed: f.removed_lines().count() as u64,
            binary: f.binary,
        })
        .collect();
    Some(DiffFacts {
        files,
        commits: diff.commits,
    })
}

fn policy_decision(p: &ProposalRecord) -> PolicyDecision {
    // An assessment that does not read (written by hand, or by a version that stored another
    // shape) is told as no reasons rather than as made-up ones.
    let a = crate::api::assessment(p).ok();
    PolicyDecision {
        decision: p.decision.clone(),
        risk_score: a.as_ref().map(|a| i64::from(a.risk.score)),
        auto_below: None,
        factors: a
            .iter()
            .flat_map(|a| &a.risk.factors)
            .map(|f| RiskFactor {
                name: f.name.clone(),
                points: i64::from(f.points),
                why: f.why.clone(),
            })
            .collect(),
        rules: a
            .iter()
            .flat_map(|a| &a.rules)
            .map(|r| RuleFired {
                rule: r.rule.clone(),
                effect: r.effect.as_str().to_owned(),
                message: r.message.clone(),
            })
            .collect(),
        pattern_mismatch: a.as_ref().and_then(|a| match &a.pattern_check {
            crate::trust::PatternCheck::Mismatch { reason, .. } => Some(reason.clone()),
            _ => None,
        }),
        approved_by: p.approved_hash.as_ref().and(p.decided_by.clone()),
    }
}
