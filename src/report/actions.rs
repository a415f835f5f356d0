//! What guardian did about a change, in words: the state it reached, why a rollback was handed
//! to a person, each step of the rollback with its commands and output, and how to undo the
//! undo. Shared by the alert email and the post-mortem; the rollback report is the
//! `RollbackReport` JSON from the decision log.

use std::fmt::Write as _;

use serde_json::Value;

use super::evidence::regression_summary;
use super::text::{printable, shell_line, short_commit, tail, OUTPUT_TAIL_LINES};
use crate::core::Report;
use crate::git::CommandRecord;
use crate::hook::{HookOutcome, HookStatus};
use crate::store::{ChangeRecord, ChangeState};

/// The few words after the service in the subject: "rolled back", "escalated: revert
/// conflicts", "regressed".
pub fn state_label(change: &ChangeRecord, rollback: Option<&Value>) -> String {
    match change.state {
        ChangeState::RolledBack => "rolled back".to_owned(),
        ChangeState::Escalated => format!("escalated: {}", escalation_cause(change, rollback)),
        ChangeState::Regressed => "regressed".to_owned(),
        ChangeState::RollingBack => "regressed, rolling back".to_owned(),
        ChangeState::Verifying => "reverted, verifying recovery".to_owned(),
        other => other.as_str().replace('_', " "),
    }
}

/// Why a rollback was handed to a person, in a few words.
pub fn escalation_cause(change: &ChangeRecord, rollback: Option<&Value>) -> &'static str {
    if let Some(rollback) = rollback.filter(|r| !r["escalation"].is_null()) {
        for step in steps(rollback) {
            let failed = step.get("error").is_some();
            match step["step"].as_str().unwrap_or_default() {
                "open repository" if failed => return "cannot open the repository",
                "git revert" if step["result"] == "conflict" => return "revert conflicts",
                "git revert" if failed => return "revert failed",
                "git push" if failed => return "push failed",
                "redeploy hook" => {
                    return match step["outcome"]["status"]["kind"].as_str() {
                        Some("timed_out") => "redeploy hook timed out",
                        Some("succeeded") => "needs a person",
                        _ => "redeploy hook failed",
                    }
                }
                _ => {}
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
    rollback: Option<&Value>,
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
                .and_then(|r| r["escalation"].as_str())
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
        ChangeState::RollingBack | ChangeState::Verifying => format!(
            "Commit {short} made {service} worse{worse}. Guardian is rolling it back; another \
             email follows when that is done."
        ),
        ChangeState::Healthy => format!(
            "Commit {short} on {service} is healthy: the watch ended and the evidence bounds any \
             harm below the configured limits.{}",
            not_judged(report)
        ),
        ChangeState::Inconclusive => format!(
            "Commit {short} on {service}: the watch ended without enough evidence either way; \
             guardian did nothing.{}",
            not_judged(report)
        ),
        ChangeState::Superseded => format!(
            "Commit {short} on {service} was superseded: another change landed before it was \
             decided; guardian did nothing."
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

/// Each step of the rollback, its commands and their output; or why there was none.
pub fn what_guardian_did(w: &mut String, change: &ChangeRecord, rollback: Option<&Value>) {
    let Some(rollback) = rollback else {
        let text = match change.state {
            ChangeState::Regressed => {
                "  Nothing: rollback is not configured ([daemon.rollback] in guardian.toml)."
            }
            ChangeState::Escalated => {
                "  No rollback report was recorded for this change. If guardian stopped during a \
                 rollback, check whether a revert commit exists (git log --grep \
                 'Guardian-Change: <change id>') and whether the service recovered."
            }
            ChangeState::RollingBack => "  Reverting and redeploying now.",
            _ => "  Nothing: guardian only acts on a change that made things worse.",
        };
        let _ = writeln!(w, "{text}");
        return;
    };
    let mut n = 0;
    for step in steps(rollback) {
        n += 1;
        let name = step["step"].as_str().unwrap_or("step");
        match name {
            "git revert" => {
                let outcome = match (step["result"].as_str(), step["error"].as_str()) {
                    (_, Some(e)) => format!("FAILED: {e}"),
                    (Some("conflict"), _) => {
                        let files = string_list(&step["files"]);
                        let tree = if step["tree_restored"].as_bool() == Some(true) {
                            "aborted; the working tree is exactly as it was"
                        } else {
                            "aborted, BUT THE WORKING TREE COULD NOT BE VERIFIED CLEAN"
                        };
                        format!("CONFLICT in {}; {tree}", files.join(", "))
                    }
                    (Some(result), _) => match step["commit"].as_str() {
                        Some(c) => format!("{result}; revert commit {c}"),
                        None => result.to_owned(),
                    },
                    _ => "?".to_owned(),
                };
                let _ = writeln!(w, "  {n}. git revert: {outcome}");
                commands(w, &step["commands"]);
            }
            "git push" => {
                let target = format!(
                    "{} {}",
                    step["remote"].as_str().unwrap_or("?"),
                    step["branch"].as_str().unwrap_or("?")
                );
                let outcome = match step["error"].as_str() {
                    Some(e) => format!("FAILED: {e}"),
                    None => step["result"].as_str().unwrap_or("?").to_owned(),
                };
                let _ = writeln!(w, "  {n}. git push to {target}: {outcome}");
                if !step["command"].is_null() {
                    commands(w, &Value::Array(vec![step["command"].clone()]));
                }
            }
            "redeploy hook" => hook_step(w, n, step),
            _ => {
                let outcome = match step["error"].as_str() {
                    Some(e) => format!("FAILED: {e}"),
                    None => step["result"].as_str().unwrap_or("done").to_owned(),
                };
                let _ = writeln!(w, "  {n}. {name}: {outcome}");
            }
        }
    }
    if n == 0 {
        w.push_str("  The rollback report lists no step.\n");
    }
    match rollback["revert_commit"].as_str() {
        Some(c) => {
            let _ = writeln!(w, "  Revert commit: {c}");
        }
        None => w.push_str("  No revert commit was made.\n"),
    }
    if let Some(why) = rollback["escalation"].as_str() {
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

fn hook_step(w: &mut String, n: usize, step: &Value) {
    let outcome: Option<HookOutcome> = serde_json::from_value(step["outcome"].clone()).ok();
    let summary = step["summary"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| outcome.as_ref().map(HookOutcome::summary))
        .unwrap_or_else(|| "?".to_owned());
    let failed = outcome
        .as_ref()
        .is_some_and(|o| !matches!(o.status, HookStatus::Succeeded));
    let _ = writeln!(
        w,
        "  {n}. redeploy hook: {}{summary}",
        if failed { "FAILED: " } else { "" }
    );
    let command = string_list(&step["command"]);
    if !command.is_empty() {
        let _ = writeln!(w, "       $ {}", shell_line(&command));
    }
    let Some(outcome) = outcome else { return };
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

/// Each git command with its exit status; the end of stderr of one that failed.
fn commands(w: &mut String, list: &Value) {
    for value in list.as_array().into_iter().flatten() {
        let Ok(record) = serde_json::from_value::<CommandRecord>(value.clone()) else {
            continue;
        };
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
    rollback: Option<&Value>,
    revert: &str,
) {
    let push = rollback.and_then(|r| {
        steps(r)
            .find(|s| s["step"] == "git push" && s.get("error").is_none())
            .map(|s| {
                format!(
                    "{} HEAD:{}",
                    s["remote"].as_str().unwrap_or("origin"),
                    s["branch"].as_str().unwrap_or("main")
                )
            })
    });
    let hook = rollback
        .and_then(|r| steps(r).find(|s| s["step"] == "redeploy hook"))
        .map(|s| string_list(&s["command"]))
        .filter(|c| !c.is_empty())
        .map(|c| shell_line(&c));
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

/// How to revert by hand, when guardian made no revert.
pub fn by_hand(w: &mut String, change: &ChangeRecord) {
    let _ = writeln!(
        w,
        "  To revert by hand, in the deploy repository:\n    \
         git revert {}   (resolve any conflicts, then commit)\n  \
         then redeploy, and guardian notify --commit <the revert commit> so guardian watches \
         it.\n  guardian status shows where things stand.",
        change.commit
    );
}

/// The steps of a rollback report (none when it has another shape).
pub fn steps(rollback: &Value) -> impl Iterator<Item = &Value> {
    rollback["steps"].as_array().into_iter().flatten()
}

/// The strings of a JSON array (nothing when it is not one).
pub fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}
