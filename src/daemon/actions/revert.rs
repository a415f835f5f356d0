//! The remediation guardian has today: revert the change in the repository, push the revert if
//! configured, run the redeploy hook (`[daemon.rollback]`). Synchronous (the daemon runs it on
//! a thread of its own) and sequential: each step runs only if the one before it succeeded, and
//! whatever fails is handed to a person, never retried blindly. Whether the service recovered
//! is not judged here: the supervisor watches the traffic again.

use serde::{Deserialize, Serialize};

use super::{Action, Outcome};
use crate::config::RollbackSettings;
use crate::daemon::publish;
use crate::daemon::step::{Ended, Reverted, Step};
use crate::daemon::supervisor::{Remediation, Remedied};
use crate::git::{Repo, RevertOutcome, RevertRequest};
use crate::store::EventKind;

/// `git revert` of the change, then the push and the redeploy hook.
pub struct Revert(pub RollbackSettings);

impl Action for Revert {
    /// The event kind its report has always been stored under, which the views read.
    fn kind(&self) -> EventKind {
        EventKind::Rollback
    }

    fn run(&self, job: &Remediation) -> Outcome {
        let report = run(&self.0, job);
        let remedied = match &report.escalation {
            Some(why) => Remedied::Failed(why.clone()),
            None => Remedied::Done(format!(
                "reverted in {} and redeployed",
                report.revert_commit.as_deref().unwrap_or("?")
            )),
        };
        Outcome {
            remedied,
            record: serde_json::to_value(&report).unwrap_or_default(),
        }
    }
}

/// What happened, for the change's record and the post-mortem; read back by the views
/// (`report::actions`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollbackReport {
    /// The revert commit, when there is one.
    pub revert_commit: Option<String>,
    /// `None` when every step succeeded and the service was redeployed; otherwise why a
    /// person must take over.
    pub escalation: Option<String>,
    /// Each step, in order: what ran and how it ended.
    pub steps: Vec<Step>,
}

impl RollbackReport {
    fn escalate(mut self, why: impl Into<String>) -> RollbackReport {
        self.escalation = Some(why.into());
        self
    }
}

/// Reverts, pushes and redeploys. Idempotent for a change: the revert carries the change's
/// intent, so a second run finds the first revert instead of making another.
pub fn run(settings: &RollbackSettings, job: &Remediation) -> RollbackReport {
    let mut report = RollbackReport {
        revert_commit: None,
        escalation: None,
        steps: Vec::new(),
    };
    let repo = match Repo::open(&settings.repo) {
        Ok(r) => r,
        Err(e) => {
            report.steps.push(Step::OpenRepository {
                error: e.to_string(),
            });
            return report.escalate(format!("cannot open the repository: {e}"));
        }
    };
    let request = RevertRequest {
        commits: job.commit.clone(),
        change_id: job.change_id.clone(),
        intent: format!("{}-revert", job.change_id),
        reason: job.reason.clone(),
        evidence_url: None,
    };
    let revert_commit = match repo.revert(&request) {
        Ok(RevertOutcome::Reverted {
            commit, commands, ..
        }) => {
            report
                .steps
                .push(Step::Revert(Ended::Done(Reverted::Reverted {
                    commit: commit.clone(),
                    commands,
                })));
            commit
        }
        Ok(RevertOutcome::AlreadyDone { commit, commands }) => {
            report
                .steps
                .push(Step::Revert(Ended::Done(Reverted::AlreadyReverted {
                    commit: commit.clone(),
                    commands,
                })));
            commit
        }
        Ok(RevertOutcome::Conflict {
            files,
            tree_restored,
            commands,
        }) => {
            report
                .steps
                .push(Step::Revert(Ended::Done(Reverted::Conflict {
                    files: files.clone(),
                    tree_restored,
                    commands,
                })));
            let tree = if tree_restored {
                "the revert was aborted and the working tree is exactly as it was"
            } else {
                "the revert was aborted BUT THE WORKING TREE COULD NOT BE VERIFIED CLEAN"
            };
            return report.escalate(format!(
                "reverting {} conflicts with later commits in {}; {tree}",
                job.commit,
                files.join(", ")
            ));
        }
        Err(e) => {
            report.steps.push(Step::Revert(Ended::Failed {
                error: e.to_string(),
            }));
            return report.escalate(format!("the revert failed: {e}"));
        }
    };
    report.revert_commit = Some(revert_commit.clone());

    let named = format!("the revert {revert_commit}");
    if let Err(why) = publish::push(&repo, settings, &named, &mut report.steps) {
        return report.escalate(why);
    }
    let env = [
        ("GUARDIAN_CHANGE_ID".to_owned(), job.change_id.clone()),
        ("GUARDIAN_COMMIT".to_owned(), job.commit.clone()),
        ("GUARDIAN_REVERT_COMMIT".to_owned(), revert_commit.clone()),
        ("GUARDIAN_REASON".to_owned(), job.reason.clone()),
        ("GUARDIAN_ATTEMPT".to_owned(), "1".to_owned()),
        ("GUARDIAN_ACTION".to_owned(), "rollback".to_owned()),
    ];
    if let Err(why) = publish::redeploy(settings, &named, &env, &mut report.steps) {
        return report.escalate(why);
    }
    report
}
