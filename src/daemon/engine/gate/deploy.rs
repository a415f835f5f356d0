//! Deploying an approved proposal: the next one due, and what its job's end means.

use serde::Serialize;
use serde_json::json;

use super::{first_line, proposal_text};
use crate::daemon::engine::{Engine, EngineError, Phase};
use crate::gate::proposals::ProposalState;
use crate::store::{ChangeKind, NewChange};

/// A deploy the engine asks for: apply, push, redeploy.
#[derive(Clone, Debug)]
pub struct DeployJob {
    pub proposal_id: String,
    /// The commit the diff was judged against, and the tree the gate judged (and a person
    /// approved): exactly that is deployed, or nothing is.
    pub base: String,
    pub tree: String,
    pub patch: String,
    pub intent: String,
    pub message: String,
}

/// What a deploy did.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct DeployReport {
    /// The commit that carries the proposal, once applied.
    pub commit: Option<String>,
    /// `None` when applied and redeployed; otherwise why not.
    pub failure: Option<String>,
    /// Whether the service may now be running the change (the hook ran, or was started).
    pub maybe_deployed: bool,
    /// When the redeploy hook started, unix seconds: the deploy window begins there.
    #[serde(default)]
    pub hook_started_at: Option<f64>,
    pub steps: Vec<crate::daemon::step::Step>,
}

impl Engine {
    /// The next approved proposal to deploy, when nothing else is going on: one change at a
    /// time, so each verdict is about one change. Nothing while deploys are paused.
    pub fn next_deploy(&mut self, now: f64) -> Result<Option<DeployJob>, EngineError> {
        if *self.supervisor.phase() != Phase::Idle || self.settings.rollback.is_none() {
            return Ok(None);
        }
        if self.settings.gate.is_some() && self.store.gate_paused()?.is_some() {
            return Ok(None);
        }
        let Some(p) = self.store.approved_proposals()?.into_iter().next() else {
            return Ok(None);
        };
        // Still deploying while nothing deploys: guardian stopped during the deploy, and
        // whether the hook ran to its end is unknown. Deploy it again (the commit is found by
        // its intent if it was made; hooks are idempotent), once: a deploy that guardian stops
        // during twice is a person's to look at.
        let resumed = p.state == ProposalState::Deploying;
        if resumed && self.store.deploy_attempts(&p.id)? >= 2 {
            let why = "guardian stopped during this deploy twice; the commit may be made and \
                       the hook may have run: check the clone and the service";
            let record = self.store.advance_proposal(
                &p.id,
                ProposalState::DeployFailed,
                None,
                Some(why),
                json!({}),
                now,
            )?;
            tracing::error!(proposal_id = %p.id, "{}: deploy failed: {why}", p.id);
            let subject = format!(
                "[guardian] {}: deploy of {} INTERRUPTED — {}",
                self.settings.service,
                p.id,
                first_line(&p.summary)
            );
            let body = format!(
                "ACTION NEEDED: {why}. guardian is not watching it. If the commit carrying \
                 {} is in the clone and live, notify it to have it watched, or revert it.\n\n{}",
                p.id,
                proposal_text(&record)
            );
            self.mail_proposal(&p.id, "deploy_failed", subject, body, &[], now)?;
            return Ok(None);
        }
        // The tree judged, and for a person's approval the tree they approved: one and the
        // same, or the record was tampered with and nothing is deployed.
        let tree = match (&p.tree_sha, &p.decided_by, &p.approved_tree) {
            (Some(t), None, _) => Some(t.clone()),
            (Some(t), Some(_), Some(a)) if t == a => Some(t.clone()),
            _ => None,
        };
        let Some(tree) = tree else {
            self.store.advance_proposal(
                &p.id,
                ProposalState::Deploying,
                None,
                None,
                json!({ "base": p.base_sha, "diff_sha256": p.diff_hash }),
                now,
            )?;
            self.store.advance_proposal(
                &p.id,
                ProposalState::DeployFailed,
                None,
                Some("no judged tree, or the approval is for another tree than the one judged: nothing deployed"),
                json!({ "tree": p.tree_sha, "approved_tree": p.approved_tree }),
                now,
            )?;
            return Ok(None);
        };
        self.store.advance_proposal(
            &p.id,
            ProposalState::Deploying,
            None,
            resumed.then_some(
                "guardian stopped during the deploy; deploying again (the commit, if made, is \
                 reused)",
            ),
            json!({ "base": p.base_sha, "diff_sha256": p.diff_hash, "tree": tree, "resumed": resumed }),
            now,
        )?;
        if resumed {
            tracing::warn!(proposal_id = %p.id, "{}: guardian stopped during its deploy; deploying it again", p.id);
        }
        self.supervisor.deploy_started(&p.id);
        let approval = match &p.decided_by {
            Some(by) => format!(
                "Approved by {by} for diff sha256 {} (tree {tree}).",
                p.diff_hash
            ),
            None => format!(
                "Deployed without a person: the policy scored it {} and the pattern is trusted.",
                crate::api::assessment(&p)
                    .map_or_else(|_| "?".to_owned(), |a| a.risk.score.to_string())
            ),
        };
        Ok(Some(DeployJob {
            base: p.base_sha.clone(),
            tree,
            intent: format!("{}-deploy", p.id),
            message: format!(
                "{}\n\nProposed by {} as {} ({}). {approval}\n\nGuardian-Proposal: {}\n",
                first_line(&p.summary),
                p.proposer,
                p.pattern,
                p.id,
                p.id
            ),
            proposal_id: p.id,
            patch: p.patch,
        }))
    }

    /// The deploy job ended. Deployed: watch it like any change. Otherwise a person must know.
    pub fn deploy_finished(
        &mut self,
        job: &DeployJob,
        report: &DeployReport,
        now: f64,
    ) -> Result<(), EngineError> {
        let detail = serde_json::to_value(report).unwrap_or_default();
        let p = self.store.get_proposal(&job.proposal_id)?;
        match (&report.commit, &report.failure) {
            (Some(commit), None) => {
                let record = self.store.insert_change(
                    &NewChange {
                        commit: commit.clone(),
                        kind: p.kind.parse().unwrap_or(ChangeKind::Ai),
                        pattern: Some(p.pattern.clone()),
                        summary: Some(p.summary.clone()),
                        landed_at: now,
                        fixes_issue: p.sentry_issue.clone(),
                        flag: p.flag.clone(),
                    },
                    now,
                )?;
                self.store.advance_proposal(
                    &p.id,
                    ProposalState::Deployed,
                    Some(&record.id),
                    Some(&format!("deployed as {commit}; watching as {}", record.id)),
                    detail,
                    now,
                )?;
                tracing::info!(
                    proposal_id = %p.id,
                    change_id = %record.id,
                    "{}: deployed as {commit}; watching it as {}",
                    p.id,
                    record.id
                );
                // The hook's restart is the deploy window: neither baseline nor watch.
                let landing = crate::core::Landing {
                    at: now,
                    deploy_started_at: report.hook_started_at.filter(|&t| t <= now),
                };
                let effects = self.supervisor.deployed(
                    crate::daemon::engine::watched(&record),
                    landing,
                    &self.settings,
                );
                self.apply(effects, now)?;
            }
            (_, failure) => {
                self.supervisor.deploy_failed();
                let why = failure
                    .clone()
                    .unwrap_or_else(|| "no commit was made".into());
                let record = self.store.advance_proposal(
                    &p.id,
                    ProposalState::DeployFailed,
                    None,
                    Some(&why),
                    detail,
                    now,
                )?;
                tracing::error!(proposal_id = %p.id, "{}: deploy failed: {why}", p.id);
                let subject = format!(
                    "[guardian] {}: deploy of {} FAILED — {}",
                    self.settings.service,
                    p.id,
                    first_line(&p.summary)
                );
                let state_now = if report.maybe_deployed {
                    format!(
                        "ACTION NEEDED: {} is committed in guardian's clone and the redeploy hook \
                         ran but failed, so what the service runs now is unknown. guardian is \
                         not watching it. Check the service, then revert {} or notify it.",
                        report.commit.as_deref().unwrap_or("the commit"),
                        report.commit.as_deref().unwrap_or("it")
                    )
                } else {
                    "Nothing was deployed: the clone and the service are as they were.".to_owned()
                };
                let body = format!(
                    "{state_now}\n\nProposal {}: {}\nWhy it failed: {}\n\n{}",
                    p.id,
                    crate::display::line(&p.summary),
                    crate::display::block(&why),
                    proposal_text(&record)
                );
                self.mail_proposal(&p.id, "deploy_failed", subject, body, &[], now)?;
            }
        }
        Ok(())
    }
}
