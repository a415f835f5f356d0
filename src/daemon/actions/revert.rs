//! The remediation guardian has today: revert the change in the repository, push the revert if
//! configured, run the redeploy hook (`[daemon.rollback]`). Synchronous (the daemon runs it on
//! a thread of its own) and sequential: each step runs only if the one before it succeeded, and
//! whatever fails is handed to a person, never retried blindly. Whether the service recovered
//! is not judged here: the supervisor watches the traffic again.

use serde::{Deserialize, Serialize};

use super::{Action, Outcome};
use crate::config::RollbackSettings;
use crate::daemon::publish;
use crate::daemon::step::{Ended, Reverted, Step, StoodDown};
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
        let revert = report.revert_commit.as_deref().unwrap_or("?");
        let remedied = match (&report.escalation, report.stood_down) {
            (Some(why), _) => Remedied::Failed(why.clone()),
            (None, false) => Remedied::Done(format!("reverted in {revert} and redeployed")),
            (None, true) => Remedied::Done(format!(
                "another guardian's revert {revert} was pushed first; stood down and redeployed it"
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
    /// Another guardian sharing the remote pushed its revert of the change first: this one
    /// dropped its own and redeployed that one (`revert_commit`), and sends no alert of its
    /// own when the service is back (the other guardian's is the one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stood_down: bool,
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
        stood_down: false,
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
    let mut revert_commit = revert_commit;
    if let Err(why) = publish::push(&repo, settings, &named, &mut report.steps) {
        match stand_down(&repo, settings, &revert_commit, &mut report.steps) {
            Some(theirs) => {
                report.stood_down = true;
                report.revert_commit = Some(theirs.clone());
                revert_commit = theirs;
            }
            None => return report.escalate(why),
        }
    }
    let named = format!("the revert {revert_commit}");
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

/// After this guardian's push of its revert `own` was refused: when another guardian's revert
/// of the same change is on the remote, this one stands down (its clone now at that revert) and
/// the step says so; `None` (nothing recorded beyond a failed look, the push's failure stands)
/// otherwise.
fn stand_down(
    repo: &Repo,
    settings: &RollbackSettings,
    own: &str,
    steps: &mut Vec<Step>,
) -> Option<String> {
    let (remote, branch) = settings.push.as_ref()?;
    match repo.yield_to_remote_revert(remote, branch, own, crate::git::DEFAULT_PUSH_TIMEOUT) {
        Ok(crate::git::Lease {
            taken_by: Some(theirs),
            commands,
        }) => {
            tracing::info!(
                "the revert of this change was pushed first by another guardian ({}, change {}): \
                 standing down",
                theirs.commit,
                theirs.change.as_deref().unwrap_or("?")
            );
            steps.push(Step::StoodDown(StoodDown {
                remote: remote.clone(),
                branch: branch.clone(),
                revert: theirs.commit.clone(),
                by_change: theirs.change,
                commands,
            }));
            Some(theirs.commit)
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!("looking for another guardian's revert on {remote} {branch}: {e}");
            None
        }
    }
}
