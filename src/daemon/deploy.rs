//! Deploying an approved (or `auto`) proposal: apply its diff in guardian's own clone as one
//! commit of exactly the tree the gate judged, push it if configured, run the redeploy hook. Synchronous (the daemon runs it on a
//! blocking thread) and sequential, like the rollback: each step runs only if the one before
//! succeeded. Whether the change is good is not judged here: the engine watches it next.

use std::time::Duration;

use super::engine::{DeployJob, DeployReport};
use super::step::{Applied, Ended, Hook, Push, Pushed, Step};
use crate::config::RollbackSettings;
use crate::git::{ApplyOutcome, ApplyRequest, Repo};
use crate::hook::{self, HookSpec, HookStatus};

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
    if let Some((remote, branch)) = &settings.push {
        match repo.push(remote, branch) {
            Ok(command) => report.steps.push(Step::Push(Push {
                remote: remote.clone(),
                branch: branch.clone(),
                ended: Ended::Done(Pushed::Pushed { command }),
            })),
            Err(e) => {
                report.steps.push(Step::Push(Push {
                    remote: remote.clone(),
                    branch: branch.clone(),
                    ended: Ended::Failed {
                        error: e.to_string(),
                    },
                }));
                return fail(
                    report,
                    format!(
                        "{commit} is committed but could not be pushed to {remote} {branch}: {e}"
                    ),
                );
            }
        }
    }
    let mut spec = HookSpec::new(settings.hook.clone());
    spec.timeout = Duration::from_secs(u64::from(settings.hook_timeout_secs));
    spec.working_dir = Some(settings.repo.clone());
    spec.note.clone_from(&settings.hook_note);
    let env = vec![
        ("GUARDIAN_PROPOSAL_ID".to_owned(), job.proposal_id.clone()),
        ("GUARDIAN_COMMIT".to_owned(), commit.clone()),
        (
            "GUARDIAN_REPO".to_owned(),
            settings.repo.display().to_string(),
        ),
        ("GUARDIAN_ACTION".to_owned(), "deploy".to_owned()),
    ];
    report.hook_started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64());
    let outcome = hook::run(&spec, &env);
    let summary = outcome.summary();
    report.maybe_deployed = true;
    let succeeded = matches!(outcome.status, HookStatus::Succeeded);
    report.steps.push(Step::Hook(Hook {
        command: settings.hook.clone(),
        summary: summary.clone(),
        outcome,
    }));
    if !succeeded {
        return fail(
            report,
            format!("{commit} is committed but the redeploy hook failed: {summary}"),
        );
    }
    report
}
