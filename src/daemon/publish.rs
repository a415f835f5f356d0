//! What a revert and a deploy do once their commit exists: push it when `[daemon.rollback]`
//! says where, then run the redeploy hook. One home, so the two actions cannot drift apart in
//! how they push, which hook settings they honour or how a failure is told.

use std::time::Duration;

use super::step::{Ended, Hook, Push, Pushed, Step};
use crate::config::RollbackSettings;
use crate::git::Repo;
use crate::hook::{self, HookSpec, HookStatus};

/// Pushes what was committed when a remote is configured, recording the step. `Err` says why,
/// for the person taking over: `commit` (the commit as the message names it, "the revert abc")
/// exists, but not on the remote.
pub fn push(
    repo: &Repo,
    settings: &RollbackSettings,
    commit: &str,
    steps: &mut Vec<Step>,
) -> Result<(), String> {
    let Some((remote, branch)) = &settings.push else {
        return Ok(());
    };
    let (ended, result) = match repo.push(remote, branch) {
        Ok(command) => (Ended::Done(Pushed::Pushed { command }), Ok(())),
        Err(e) => (
            Ended::Failed {
                error: e.to_string(),
            },
            Err(format!(
                "{commit} is committed but could not be pushed to {remote} {branch}: {e}"
            )),
        ),
    };
    steps.push(Step::Push(Push {
        remote: remote.clone(),
        branch: branch.clone(),
        ended,
    }));
    result
}

/// Runs the redeploy hook in the repository with `env` (and `GUARDIAN_REPO`), recording the
/// step. `Err` says why: `commit` (named as for `push`) exists, but the service may not run it.
pub fn redeploy(
    settings: &RollbackSettings,
    commit: &str,
    env: &[(String, String)],
    steps: &mut Vec<Step>,
) -> Result<(), String> {
    let mut spec = HookSpec::new(settings.hook.clone());
    spec.timeout = Duration::from_secs(u64::from(settings.hook_timeout_secs));
    spec.working_dir = Some(settings.repo.clone());
    spec.note.clone_from(&settings.hook_note);
    let mut env = env.to_vec();
    env.push((
        "GUARDIAN_REPO".to_owned(),
        settings.repo.display().to_string(),
    ));
    let outcome = hook::run(&spec, &env);
    let summary = outcome.summary();
    let succeeded = matches!(outcome.status, HookStatus::Succeeded);
    steps.push(Step::Hook(Hook {
        command: settings.hook.clone(),
        summary: summary.clone(),
        outcome,
    }));
    if succeeded {
        Ok(())
    } else {
        Err(format!(
            "{commit} is committed but the redeploy hook failed: {summary}"
        ))
    }
}
