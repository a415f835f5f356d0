//! What guardian did about a change, in words: the state it reached, why a rollback was handed
//! to a person, each step of the rollback (its outcome first, its commands and output where
//! they are wanted), and how to undo the undo. Shared by the alert email and the post-mortem; the rollback report is the
//! `RollbackReport` from the decision log, read back in its type ([`read_rollback`]) and told
//! step by step from its variants.

use std::fmt::Write as _;

use serde::Deserialize as _;
use serde_json::Value;

use super::evidence::{self, regression_summary};
use super::text::{printable, shell_line, short_commit, tail, OUTPUT_TAIL_LINES};
use crate::core::Report;
use crate::daemon::actions::revert::RollbackReport;
use crate::daemon::step::{Ended, Hook, Push, Reverted, Step};
use crate::git::CommandRecord;
use crate::hook::HookStatus;
use crate::store::{ChangeRecord, ChangeState, EventKind, EventRecord};

/// A stored rollback report that does not read back as a `RollbackReport` (a damaged row, or
/// one written by a later version).
#[derive(Debug, thiserror::Error)]
#[error("the stored rollback report cannot be read: {0}")]
pub struct UnreadableRollback(#[from] serde_json::Error);

/// What the record holds of a change's rollback: `Ok(None)` when none was recorded.
pub type StoredRollback = Result<Option<RollbackReport>, UnreadableRollback>;

/// A rollback report as stored (a `rollback` event's detail), read back into its type.
pub fn read_rollback(stored: &Value) -> Result<RollbackReport, UnreadableRollback> {
    Ok(RollbackReport::deserialize(stored)?)
}

/// The latest rollback report in a change's decision log.
pub fn stored_rollback(events: &[EventRecord]) -> StoredRollback {
    events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::Rollback)
        .map(|e| read_rollback(&e.detail))
        .transpose()
}

/// The few words after the service in the subject: "rolled back", "escalated: revert
/// conflicts", "regressed".
pub fn state_label(change: &ChangeRecord, rollback: Option<&RollbackReport>) -> String {
    match change.state {
        ChangeState::RolledBack => "rolled back".to_owned(),
        ChangeState::Escalated => format!("escalated: {}", escalation_cause(change, rollback)),
        ChangeState::Regressed => "regressed".to_owned(),
        ChangeState::RollingBack => "regressed, rolling back".to_owned(),
        ChangeState::Verifying => "reverted, verifying recovery".to_owned(),
        ChangeState::FlaggedOff => format!(
            "mitigated by turning flag {} off",
            change.flag.as_deref().unwrap_or("?")
        ),
        ChangeState::FlaggingOff => "regressed, turning its flag off".to_owned(),
        other => other.as_str().replace('_', " "),
    }
}

/// Why a rollback was handed to a person, in a few words.
pub fn escalation_cause(change: &ChangeRecord, rollback: Option<&RollbackReport>) -> &'static str {
    if let Some(rollback) = rollback.filter(|r| r.escalation.is_some()) {
        for step in &rollback.steps {
            match step {
                Step::OpenRepository { .. } => return "cannot open the repository",
                Step::Revert(Ended::Done(Reverted::Conflict { .. })) => return "revert conflicts",
                Step::Revert(Ended::Failed { .. }) => return "revert failed",
                Step::Push(Push {
                    ended: Ended::Failed { .. },
                    ..
                }) => return "push failed",
                Step::Hook(hook) => {
                    return match hook.outcome.status {
                        HookStatus::TimedOut { .. } => "redeploy hook timed out",
                        HookStatus::Succeeded => "needs a person",
                        HookStatus::Failed { .. } | HookStatus::CouldNotStart { .. } => {
                            "redeploy hook failed"
                        }
                    }
                }
                Step::Revert(Ended::Done(_))
                | Step::Push(_)
                | Step::Apply(_)
                | Step::StoodDown(_) => {}
            }
        }
        return "needs a person";
    }
    let note = change.note.as_deref().unwrap_or_default();
    if note.contains("did not help") {
        "revert did not help"
    } else if note.contains("could not be confirmed") {
        "recovery not confirmed"
    } else if note.contains("guardian stopped") {
        "guardian restarted mid-rollback"
    } else {
        "needs a person"
    }
}

/// The first paragraph: what happened and what guardian did about it. `report` is the
/// change's, when there is one that reads.
pub fn headline(
    service: &str,
    change: &ChangeRecord,
    report: Option<&Report>,
    rollback: Option<&RollbackReport>,
    short: &str,
    revert: Option<&str>,
) -> String {
    let worse = report
        .map(regression_summary)
        .filter(|s| !s.is_empty())
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    let revert = revert.map(short_commit);
    match change.state {
        ChangeState::RolledBack => format!(
            "Commit {short} made {service} worse{worse}. Guardian reverted it{}, redeployed, \
             and the service is back to its baseline. Nothing needs doing now; read on to check \
             the evidence, or to undo the undo.",
            revert
                .map(|r| format!(" (revert commit {r})"))
                .unwrap_or_default()
        ),
        ChangeState::Escalated => {
            let why = rollback
                .and_then(|r| r.escalation.as_deref())
                .or(change.note.as_deref())
                .unwrap_or("it could not finish on its own")
                .trim_end_matches('.');
            format!(
                "ACTION NEEDED: commit {short} made {service} worse{worse}, and guardian could \
                 not finish rolling it back: {why}. A person must take over now."
            )
        }
        ChangeState::Regressed => format!(
            "Commit {short} made {service} worse{worse}. Rollback is not configured, so guardian \
             changed nothing: decide whether to revert it."
        ),
        ChangeState::FlaggedOff => format!(
            "Commit {short} made {service} worse{worse}. Guardian turned its feature flag {} \
             off, and the service is back to its baseline. Nothing was reverted: the change's \
             code is still deployed, behind the flag (now off). Fix it, or revert it, before \
             turning the flag on again.",
            change.flag.as_deref().unwrap_or("?")
        ),
        ChangeState::FlaggingOff => format!(
            "Commit {short} made {service} worse{worse}. Guardian is turning its feature flag \
             {} off; another email follows when the recovery is checked.",
            change.flag.as_deref().unwrap_or("?")
        ),
        ChangeState::RollingBack | ChangeState::Verifying => format!(
            "Commit {short} made {service} worse{worse}. Guardian is rolling it back; another \
             email follows when that is done."
        ),
        ChangeState::Healthy => format!(
            "Commit {short} on {service} is healthy: the watch ended and the evidence bounds any \
             harm below the configured limits.{}",
            not_judged(report)
        ),
        ChangeState::Ineffective => format!(
            "Commit {short} on {service} is INEFFECTIVE: {}. It made nothing worse, so guardian \
             did not roll it back; the issue still needs a fix, and the fix's pattern loses \
             its standing in the trust ledger.",
            report
                .and_then(|r| r.claim.as_ref())
                .map(evidence::claim_outcome)
                .unwrap_or_else(|| "the issue it claims to fix goes on firing".to_owned())
        ),
        ChangeState::Inconclusive => format!(
            "Commit {short} on {service}: the watch ended without enough evidence either way; \
             guardian did nothing.{}",
            not_judged(report)
        ),
        ChangeState::Superseded => format!(
            "Commit {short} on {service} was superseded: another deploy began or another \
             change landed before it was decided; guardian did nothing."
        ),
        ChangeState::Interrupted => format!(
            "Commit {short} on {service}: guardian stopped during the watch, so no verdict was \
             reached; guardian did nothing."
        ),
        ChangeState::Watching => {
            format!("Commit {short} on {service} is being watched; nothing decided yet.")
        }
    }
}

/// " Not judged: ..." for a headline, when the verdict does not rest on every signal.
fn not_judged(report: Option<&Report>) -> String {
    report
        .and_then(|r| r.not_judged.as_deref())
        .map(|n| format!(" Not judged: {n}."))
        .unwrap_or_default()
}

/// How much of each step [`what_guardian_did`] tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Each step's outcome, and the redeploy hook's command (its output only when it failed):
    /// what a person woken at 2 a.m. reads first. The git commands follow later
    /// ([`commands_run`]).
    Outcomes,
    /// Each step with every command guardian ran and its output: the post-mortem's record.
    Commands,
}

/// Each step of the rollback, its outcome and, in `detail`, its commands and their output; or
/// why there was none, or that its report cannot be read.
pub fn what_guardian_did(
    w: &mut String,
    change: &ChangeRecord,
    rollback: &StoredRollback,
    detail: Detail,
) {
    let rollback = match rollback {
        Ok(Some(rollback)) => rollback,
        Ok(None) => {
            nothing_done(w, change);
            return;
        }
        Err(e) => {
            let _ = writeln!(
                w,
                "  The rollback report recorded for this change cannot be shown: {e}.\n  Check \
                 whether a revert commit exists (git log --grep 'Guardian-Change: {}') and \
                 whether the service recovered.",
                change.id
            );
            return;
        }
    };
    for (i, step) in rollback.steps.iter().enumerate() {
        let n = i + 1;
        match step {
            Step::Revert(ended) => {
                let outcome = match ended {
                    Ended::Failed { error } => format!("FAILED: {error}"),
                    Ended::Done(Reverted::Conflict {
                        files,
                        tree_restored,
                        ..
                    }) => {
                        let tree = if *tree_restored {
                            "aborted; the working tree is exactly as it was"
                        } else {
                            "aborted, BUT THE WORKING TREE COULD NOT BE VERIFIED CLEAN"
                        };
                        format!("CONFLICT in {}; {tree}", files.join(", "))
                    }
                    Ended::Done(
                        done @ (Reverted::Reverted { commit, .. }
                        | Reverted::AlreadyReverted { commit, .. }),
                    ) => format!("{}; revert commit {commit}", done.as_str()),
                };
                let _ = writeln!(w, "  {n}. git revert: {outcome}");
                if detail == Detail::Commands {
                    commands(w, step.commands());
                }
            }
            Step::Push(Push {
                remote,
                branch,
                ended,
            }) => {
                let outcome = match ended {
                    Ended::Failed { error } => format!("FAILED: {error}"),
                    Ended::Done(pushed) => pushed.as_str().to_owned(),
                };
                let _ = writeln!(w, "  {n}. git push to {remote} {branch}: {outcome}");
                if detail == Detail::Commands {
                    commands(w, step.commands());
                }
            }
            Step::StoodDown(down) => {
                let _ = writeln!(
                    w,
                    "  {n}. stood down: another guardian's revert of this change, {} (its change \
                     {}), was on {} {} first; this guardian dropped its own revert and moved its \
                     clone to that one",
                    down.revert,
                    down.by_change.as_deref().unwrap_or("?"),
                    down.remote,
                    down.branch
                );
                if detail == Detail::Commands {
                    commands(w, step.commands());
                }
            }
            Step::Hook(hook) => hook_step(w, n, hook, detail),
            // Opening the repository is recorded only when it failed; `git apply` is a
            // deploy's step, told plainly should a rollback report hold one.
            Step::OpenRepository { error } | Step::Apply(Ended::Failed { error }) => {
                let _ = writeln!(w, "  {n}. {}: FAILED: {error}", step.name());
            }
            Step::Apply(Ended::Done(applied)) => {
                let _ = writeln!(w, "  {n}. {}: {}", step.name(), applied.as_str());
            }
        }
    }
    if rollback.steps.is_empty() {
        w.push_str("  The rollback report lists no step.\n");
    }
    match &rollback.revert_commit {
        Some(c) => {
            let _ = writeln!(w, "  Revert commit: {c}");
        }
        None => w.push_str("  No revert commit was made.\n"),
    }
    if let Some(why) = &rollback.escalation {
        let _ = writeln!(w, "  Handed to a person because: {why}");
    } else if change.state == ChangeState::Escalated {
        if let Some(note) = &change.note {
            let _ = writeln!(w, "  Handed to a person because: {note}");
        }
    } else if change.state == ChangeState::RolledBack {
        w.push_str(
            "  Then guardian watched the traffic again: the service is back to its baseline.\n",
        );
    }
}

/// Why there is no rollback report, by where the change stands.
fn nothing_done(w: &mut String, change: &ChangeRecord) {
    let text = match change.state {
        ChangeState::Regressed => {
            "  Nothing: rollback is not configured ([daemon.rollback] in guardian.toml).".to_owned()
        }
        ChangeState::Escalated => format!(
            "  No rollback report was recorded for this change. If guardian stopped during a \
             rollback, check whether a revert commit exists (git log --grep \
             'Guardian-Change: {}') and whether the service recovered.",
            change.id
        ),
        ChangeState::RollingBack => "  Reverting and redeploying now.".to_owned(),
        ChangeState::FlaggedOff | ChangeState::FlaggingOff => format!(
            "  Turned the change's feature flag {} off (under Feature flag, below); reverted \
             nothing and redeployed nothing.",
            change.flag.as_deref().unwrap_or("?")
        ),
        _ => "  Nothing: guardian only acts on a change that made things worse.".to_owned(),
    };
    let _ = writeln!(w, "{text}");
}

fn hook_step(w: &mut String, n: usize, hook: &Hook, detail: Detail) {
    let outcome = &hook.outcome;
    let failed = !matches!(outcome.status, HookStatus::Succeeded);
    let _ = writeln!(
        w,
        "  {n}. redeploy hook: {}{}",
        if failed { "FAILED: " } else { "" },
        hook.summary
    );
    if !hook.command.is_empty() {
        let _ = writeln!(w, "       $ {}", shell_line(&hook.command));
    }
    if detail == Detail::Outcomes && !failed {
        return;
    }
    hook_output(w, hook);
}

/// The end of what the hook wrote, and what was not kept of it.
fn hook_output(w: &mut String, hook: &Hook) {
    let outcome = &hook.outcome;
    for (name, text) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
        let lines = tail(text, OUTPUT_TAIL_LINES);
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(w, "       last lines of {name}:");
        for line in lines {
            let _ = writeln!(w, "         | {line}");
        }
    }
    if outcome.dropped_bytes > 0 {
        let _ = writeln!(
            w,
            "       ({} bytes of output were not kept)",
            outcome.dropped_bytes
        );
    }
    for note in &outcome.notes {
        let _ = writeln!(w, "       note: {}", printable(note));
    }
}

/// Every command guardian ran in the rollback, step by step, with its exit status (the end of
/// stderr of one that failed) and the redeploy hook's output: the detail [`Detail::Outcomes`]
/// leaves for later. Nothing when no step ran a command.
pub fn commands_run(w: &mut String, rollback: &StoredRollback) {
    let Ok(Some(rollback)) = rollback else {
        return;
    };
    for (i, step) in rollback.steps.iter().enumerate() {
        let n = i + 1;
        match step {
            Step::Hook(hook) => {
                let _ = writeln!(w, "  {n}. redeploy hook:");
                if !hook.command.is_empty() {
                    let _ = writeln!(w, "       $ {}", shell_line(&hook.command));
                }
                hook_output(w, hook);
            }
            _ if step.commands().is_empty() => {}
            _ => {
                let _ = writeln!(w, "  {n}. {}:", step.name());
                commands(w, step.commands());
            }
        }
    }
}

/// Each git command with its exit status; the end of stderr of one that failed.
fn commands(w: &mut String, list: &[CommandRecord]) {
    for record in list {
        let status = match record.status {
            Some(code) => format!("exit {code}"),
            None => "killed".to_owned(),
        };
        let _ = writeln!(
            w,
            "       $ {}   [{status}]",
            printable(&record.command_line())
        );
        if record.status != Some(0) {
            for line in tail(&record.stderr, 5) {
                let _ = writeln!(w, "         | {line}");
            }
        }
    }
}

/// How to bring the change back when it was fine after all: revert the revert, push, redeploy.
pub fn undo_the_undo(
    w: &mut String,
    change: &ChangeRecord,
    rollback: Option<&RollbackReport>,
    revert: &str,
) {
    let steps = rollback.map(|r| &r.steps[..]).unwrap_or_default();
    let push = steps.iter().find_map(|s| match s {
        Step::Push(Push {
            remote,
            branch,
            ended: Ended::Done(_),
        }) => Some(format!("{remote} HEAD:{branch}")),
        _ => None,
    });
    let hook = steps
        .iter()
        .find_map(|s| match s {
            Step::Hook(hook) => Some(&hook.command),
            _ => None,
        })
        .filter(|c| !c.is_empty())
        .map(|c| shell_line(c));
    w.push_str(
        "  If the change was fine after all and you want it back, in the repository guardian\n  \
         reverted in ([daemon.rollback] repo):\n",
    );
    let _ = writeln!(
        w,
        "    1. git revert {revert}      (re-applies the change as a new commit)"
    );
    let mut step = 2;
    if let Some(push) = push {
        let _ = writeln!(w, "    {step}. git push {push}");
        step += 1;
    }
    match hook {
        Some(hook) => {
            let _ = writeln!(
                w,
                "    {step}. run the redeploy hook again: {hook}\n       \
                 (or re-deploy the original commit {} your usual way)",
                change.commit
            );
        }
        None => {
            let _ = writeln!(
                w,
                "    {step}. redeploy (or re-deploy the original commit {} your usual way)",
                change.commit
            );
        }
    }
    step += 1;
    let _ = writeln!(
        w,
        "    {step}. guardian notify --commit <the new commit> so guardian watches it again,\n       \
         and guardian status to see where things stand."
    );
}

/// How to revert by hand, when guardian made no revert. `done`: the rollback's report, when
/// it is on the record; without it (guardian stopped during the rollback) a revert may exist
/// that the record does not know of, and reverting again would re-apply the change.
pub fn by_hand(w: &mut String, change: &ChangeRecord, done: Option<&RollbackReport>) {
    let refused_a_revert = done
        .and_then(|r| r.escalation.as_deref())
        .is_some_and(|why| why.contains(crate::git::REVERT_OF_REVERT));
    if refused_a_revert {
        let _ = writeln!(
            w,
            "  {} is itself a revert: do not revert it (that would put back the change it \
             undid).\n  The trouble is elsewhere: another deploy, the host, a dependency. \
             guardian status shows\n  where things stand.",
            change.commit
        );
        return;
    }
    if done.is_none() && change.state == ChangeState::Escalated {
        let _ = writeln!(
            w,
            "  guardian stopped during the rollback, so first look for its revert, in the deploy \
             repository:\n    \
             git log --grep 'Guardian-Change: {}'\n  \
             If it is there, do not revert again (that would re-apply the change): redeploy \
             it if the service\n  does not run it yet, and guardian notify --commit <the \
             revert commit>.",
            change.id
        );
        w.push_str("  If it is not there:\n");
    }
    let _ = writeln!(
        w,
        "  To revert by hand, in the deploy repository:\n    \
         git revert {}   (resolve any conflicts, then commit)\n  \
         then redeploy, and guardian notify --commit <the revert commit> so guardian watches \
         it.\n  guardian status shows where things stand.",
        change.commit
    );
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::report::testing::change;

    /// The rollback reports in `testdata/rollbacks/`, as the untyped version stored them.
    fn stored_rollbacks() -> Vec<(String, Value)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/rollbacks");
        let mut out: Vec<(String, Value)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                (
                    name,
                    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn the_subject_says_why_a_stored_rollback_was_handed_to_a_person() {
        let labels: Vec<String> = stored_rollbacks()
            .iter()
            .map(|(name, stored)| {
                let rollback = read_rollback(stored).unwrap();
                let state = match rollback.escalation {
                    Some(_) => ChangeState::Escalated,
                    None => ChangeState::RolledBack,
                };
                let label = state_label(&change(state, "", None), Some(&rollback));
                format!("{name}: {label}")
            })
            .collect();
        expect_test::expect![[r#"
            already_reverted: rolled back
            cannot_open_repository: escalated: cannot open the repository
            conflict: escalated: revert conflicts
            hook_could_not_start: escalated: redeploy hook failed
            hook_failed: escalated: redeploy hook failed
            hook_timed_out: escalated: redeploy hook timed out
            push_failed: escalated: push failed
            revert_failed: escalated: revert failed
            rolled_back: rolled back"#]]
        .assert_eq(&labels.join("\n"));
    }

    #[test]
    fn each_stored_step_is_told_by_what_it_did_never_as_a_question_mark() {
        for (name, stored) in stored_rollbacks() {
            let rollback = read_rollback(&stored).unwrap();
            let mut w = String::new();
            let record = change(ChangeState::Escalated, "", None);
            what_guardian_did(
                &mut w,
                &record,
                &Ok(Some(rollback.clone())),
                Detail::Commands,
            );
            let numbered: Vec<&str> = w
                .lines()
                .filter(|l| l.starts_with("  ") && l[2..].starts_with(|c: char| c.is_ascii_digit()))
                .collect();
            assert_eq!(numbered.len(), rollback.steps.len(), "{name}:\n{w}");
            for (line, step) in numbered.iter().zip(&rollback.steps) {
                assert!(line.contains(step.name()), "{name}: {line}");
                assert!(!line.contains('?'), "{name}: {line}");
            }
        }
    }

    #[test]
    fn a_rollback_report_that_does_not_read_is_said_to_be_unreadable() {
        let record = change(ChangeState::Escalated, "guardian stopped between ...", None);
        // A renamed field: `sha` where the revert's `commit` should be.
        let renamed = json!({"revert_commit": null, "escalation": "x", "steps": [
            {"step": "git revert", "result": "reverted", "sha": "9c8d7e6", "commands": []}
        ]});
        let told: Vec<String> = [json!({"steps": "?"}), renamed]
            .iter()
            .map(|stored| {
                let mut w = String::new();
                what_guardian_did(
                    &mut w,
                    &record,
                    &read_rollback(stored).map(Some),
                    Detail::Commands,
                );
                w
            })
            .collect();
        expect_test::expect![[r#"
              The rollback report recorded for this change cannot be shown: the stored rollback report cannot be read: invalid type: string "?", expected a sequence.
              Check whether a revert commit exists (git log --grep 'Guardian-Change: chg_0123456789ab') and whether the service recovered.
            --
              The rollback report recorded for this change cannot be shown: the stored rollback report cannot be read: missing field `commit`.
              Check whether a revert commit exists (git log --grep 'Guardian-Change: chg_0123456789ab') and whether the service recovered.
        "#]].assert_eq(&told.join("--\n"));
    }
}
