//! Deploying an approved (or `auto`) proposal: apply its diff in guardian's own clone as one
//! commit of exactly the tree the gate judged, push it if configured, run the redeploy hook. Synchronous (the daemon runs it on a
//! blocking thread) and sequential, like the rollback: each step runs only if the one before
//! succeeded. Whether the change is good is not judged here: the engine watches it next.

use super::engine::{DeployJob, DeployReport};
use super::publish;
use super::step::{Applied, Ended, Step};
use crate::config::RollbackSettings;
use crate::git::{ApplyOutcome, ApplyRequest, Repo};

pub fn run(settings: &RollbackSettings, job: &DeployJob) -> DeployReport {
    let mut report = DeployReport {
        commit: None,
        failure: None,
        maybe_deployed: false,
        hook_started_at: None,
        steps: Vec::new(),
    };
    let fail = |mut r: DeployReport, why: String| {
        r.failure = Some(why);
        r
    };
    let repo = match Repo::open(&settings.repo) {
        Ok(r) => r,
        Err(e) => {
            report.steps.push(Step::OpenRepository {
                error: e.to_string(),
            });
            return fail(report, format!("cannot open guardian's clone: {e}"));
        }
    };
    let request = ApplyRequest {
        patch: job.patch.clone(),
        intent: job.intent.clone(),
        message: job.message.clone(),
        base: job.base.clone(),
        tree: job.tree.clone(),
    };
    let commit = match repo.apply_patch(&request) {
        Ok(ApplyOutcome::Applied { commit, commands }) => {
            report.steps.push(Step::Apply(Ended::Done(Applied::Applied {
                commit: commit.clone(),
                commands,
            })));
            commit
        }
        Ok(ApplyOutcome::AlreadyDone { commit, commands }) => {
            report
                .steps
                .push(Step::Apply(Ended::Done(Applied::AlreadyApplied {
                    commit: commit.clone(),
                    commands,
                })));
            commit
        }
        Ok(ApplyOutcome::DoesNotApply {
            reason,
            tree_restored,
            commands,
        }) => {
            report
                .steps
                .push(Step::Apply(Ended::Done(Applied::DoesNotApply {
                    reason: reason.clone(),
                    tree_restored,
                    commands,
                })));
            return fail(
                report,
                format!("the diff does not apply to the deploy branch: {reason}"),
            );
        }
        Err(e) => {
            report.steps.push(Step::Apply(Ended::Failed {
                error: e.to_string(),
            }));
            return fail(report, format!("applying the diff failed: {e}"));
        }
    };
    report.commit = Some(commit.clone());
    if let Err(why) = publish::push(&repo, settings, &commit, &mut report.steps) {
        return fail(report, why);
    }
    let env = [
        ("GUARDIAN_PROPOSAL_ID".to_owned(), job.proposal_id.clone()),
        ("GUARDIAN_COMMIT".to_owned(), commit.clone()),
        ("GUARDIAN_ACTION".to_owned(), "deploy".to_owned()),
    ];
    report.hook_started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64());
    report.maybe_deployed = true;
    if let Err(why) = publish::redeploy(settings, &commit, &env, &mut report.steps) {
        return fail(report, why);
    }
    report
}
