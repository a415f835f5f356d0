//! What guardian did to the world, one step at a time (a revert's or a deploy's git commands,
//! the push, the redeploy hook), as the record keeps it and the views read it back.
//!
//! The JSON is the one the first version wrote by hand with `json!`, field for field: a step is
//! an object tagged by `step`; how a git step ended, by `result` (`reverted`, `conflict`, ...)
//! or by an `error`. Rows stored then read as these types (`testdata/rollbacks/` and
//! `testdata/deploys/`, captured from that code), and rows written now are those same bytes.

use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::{Deserialize, Serialize};

use crate::git::CommandRecord;
use crate::hook::HookOutcome;

/// One step, in the order it ran; each runs only if the one before it succeeded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step")]
pub enum Step {
    /// The repository could not be opened: nothing ran in it.
    #[serde(rename = "open repository")]
    OpenRepository { error: String },
    /// `git revert` of the regressed change.
    #[serde(rename = "git revert")]
    Revert(Ended<Reverted>),
    /// The approved proposal committed as the tree judged (a deploy).
    #[serde(rename = "git apply")]
    Apply(Ended<Applied>),
    /// `git push` of what was committed, when configured.
    #[serde(rename = "git push")]
    Push(Push),
    /// The push was refused because another guardian's revert of the same change was there
    /// first (the push is the lease): this guardian dropped its own revert and moved its clone
    /// to the remote's. Its hook then runs on that revert.
    #[serde(rename = "stood down")]
    StoodDown(StoodDown),
    /// The redeploy hook.
    #[serde(rename = "redeploy hook")]
    Hook(Hook),
}

/// Another guardian's revert, found on the remote after this one's push was refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoodDown {
    pub remote: String,
    pub branch: String,
    /// The revert commit on the remote, now this clone's HEAD.
    pub revert: String,
    /// The other guardian's id for the change (its revert's `Guardian-Change`).
    pub by_change: Option<String>,
    pub commands: Vec<CommandRecord>,
}

/// How a git step ended: with one of its results, or with git (or guardian's checks around
/// it) failing. Stored as the result's fields, or as an `error`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Ended<R> {
    Done(R),
    Failed { error: String },
}

/// An `error` makes it a failure; anything else must read as a result, and when it does not,
/// the result's own complaint is the error (a missing `commit`, an unknown `result`), not
/// serde's "did not match any variant".
impl<'de, R: DeserializeOwned> Deserialize<'de> for Ended<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut fields = serde_json::Map::deserialize(d)?;
        match fields.remove("error") {
            Some(error) => Ok(Ended::Failed {
                error: String::deserialize(error).map_err(D::Error::custom)?,
            }),
            None => R::deserialize(serde_json::Value::Object(fields))
                .map(Ended::Done)
                .map_err(D::Error::custom),
        }
    }
}

/// What `git revert` came to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result")]
pub enum Reverted {
    #[serde(rename = "reverted")]
    Reverted {
        commit: String,
        commands: Vec<CommandRecord>,
    },
    /// A revert with the change's intent was already there (a second run).
    #[serde(rename = "already reverted")]
    AlreadyReverted {
        commit: String,
        commands: Vec<CommandRecord>,
    },
    /// Later commits touch the same lines: aborted, and the tree checked to be as it was.
    #[serde(rename = "conflict")]
    Conflict {
        files: Vec<String>,
        tree_restored: bool,
        commands: Vec<CommandRecord>,
    },
}

/// What committing an approved proposal came to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result")]
pub enum Applied {
    #[serde(rename = "applied")]
    Applied {
        commit: String,
        commands: Vec<CommandRecord>,
    },
    /// A commit with the proposal's intent was already there (a second run).
    #[serde(rename = "already applied")]
    AlreadyApplied {
        commit: String,
        commands: Vec<CommandRecord>,
    },
    /// The diff does not make the judged tree on the branch as it is now.
    #[serde(rename = "does not apply")]
    DoesNotApply {
        reason: String,
        tree_restored: bool,
        commands: Vec<CommandRecord>,
    },
}

/// `git push` to the configured remote and branch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Push {
    pub remote: String,
    pub branch: String,
    #[serde(flatten)]
    pub ended: Ended<Pushed>,
}

/// A push that went through; its one result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result")]
pub enum Pushed {
    #[serde(rename = "pushed")]
    Pushed { command: CommandRecord },
}

/// The redeploy hook: the command run, how it ended in a line, and everything known about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hook {
    pub command: Vec<String>,
    pub summary: String,
    pub outcome: HookOutcome,
}

/// How a step ended, as the views tell it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ending<'a> {
    /// Git (or opening the repository) failed: why.
    Failed(&'a str),
    /// A git step's result as the record spells it (`reverted`, `conflict`, `pushed`, ...).
    /// A conflict and a diff that does not apply are results, not failures.
    Result(&'static str),
    /// The hook ran (or could not start): its outcome tells.
    Hook(&'a Hook),
}

impl Step {
    /// The step's name as the record spells it (its `step` tag) and the views show it.
    pub fn name(&self) -> &'static str {
        match self {
            Step::OpenRepository { .. } => "open repository",
            Step::Revert(_) => "git revert",
            Step::Apply(_) => "git apply",
            Step::Push(_) => "git push",
            Step::StoodDown(_) => "stood down",
            Step::Hook(_) => "redeploy hook",
        }
    }

    /// How it ended, as the post-mortem's list of actions tells it.
    pub fn ending(&self) -> Ending<'_> {
        match self {
            Step::OpenRepository { error }
            | Step::Revert(Ended::Failed { error })
            | Step::Apply(Ended::Failed { error })
            | Step::Push(Push {
                ended: Ended::Failed { error },
                ..
            }) => Ending::Failed(error),
            Step::Revert(Ended::Done(r)) => Ending::Result(r.as_str()),
            Step::Apply(Ended::Done(a)) => Ending::Result(a.as_str()),
            Step::Push(Push {
                ended: Ended::Done(p),
                ..
            }) => Ending::Result(p.as_str()),
            Step::StoodDown(_) => Ending::Result("another guardian's revert was there first"),
            Step::Hook(hook) => Ending::Hook(hook),
        }
    }

    /// The commit the step made or found.
    pub fn commit(&self) -> Option<&str> {
        match self {
            Step::Revert(Ended::Done(
                Reverted::Reverted { commit, .. } | Reverted::AlreadyReverted { commit, .. },
            ))
            | Step::Apply(Ended::Done(
                Applied::Applied { commit, .. } | Applied::AlreadyApplied { commit, .. },
            )) => Some(commit),
            _ => None,
        }
    }

    /// The git commands the step ran, in order (none for the hook, or for a step that failed:
    /// its error says what went wrong).
    pub fn commands(&self) -> &[CommandRecord] {
        match self {
            Step::Revert(Ended::Done(
                Reverted::Reverted { commands, .. }
                | Reverted::AlreadyReverted { commands, .. }
                | Reverted::Conflict { commands, .. },
            ))
            | Step::Apply(Ended::Done(
                Applied::Applied { commands, .. }
                | Applied::AlreadyApplied { commands, .. }
                | Applied::DoesNotApply { commands, .. },
            )) => commands,
            Step::Push(Push {
                ended: Ended::Done(Pushed::Pushed { command }),
                ..
            }) => std::slice::from_ref(command),
            Step::StoodDown(s) => &s.commands,
            _ => &[],
        }
    }
}

impl Reverted {
    /// As the record spells it (its `result` tag).
    pub fn as_str(&self) -> &'static str {
        match self {
            Reverted::Reverted { .. } => "reverted",
            Reverted::AlreadyReverted { .. } => "already reverted",
            Reverted::Conflict { .. } => "conflict",
        }
    }
}

impl Applied {
    /// As the record spells it (its `result` tag).
    pub fn as_str(&self) -> &'static str {
        match self {
            Applied::Applied { .. } => "applied",
            Applied::AlreadyApplied { .. } => "already applied",
            Applied::DoesNotApply { .. } => "does not apply",
        }
    }
}

impl Pushed {
    /// As the record spells it (its `result` tag).
    pub fn as_str(&self) -> &'static str {
        match self {
            Pushed::Pushed { .. } => "pushed",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::Value;

    use super::*;
    use crate::daemon::actions::revert::RollbackReport;
    use crate::daemon::engine::DeployReport;
    use crate::hook::HookStatus;

    /// `testdata/{dir}/*.json`, by name, as stored.
    fn stored(dir: &str) -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(dir);
        let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        out.sort();
        out
    }

    /// Each step of a report, in a word: its name and how it ended.
    fn outline(steps: &[Step]) -> String {
        steps
            .iter()
            .map(|s| {
                let ended = match s.ending() {
                    Ending::Failed(_) => "error",
                    Ending::Result(result) => result,
                    Ending::Hook(h) => match h.outcome.status {
                        HookStatus::Succeeded => "succeeded",
                        HookStatus::Failed { .. } => "failed",
                        HookStatus::TimedOut { .. } => "timed out",
                        HookStatus::CouldNotStart { .. } => "could not start",
                    },
                };
                format!("{}: {ended}", s.name())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Read into the type and written again as the store writes it (`to_value`): every field
    /// and value as stored, so rows written now read in the version that wrote these. Compared
    /// as JSON values, whose text is the same (keys sorted); serde_json may read a float to
    /// within its last digit (it is built without `float_roundtrip`), the same on both sides.
    fn round_trip<T: serde::de::DeserializeOwned + Serialize>(name: &str, text: &str) -> T {
        let report: T = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let stored: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_value(&report).unwrap(), stored, "{name}");
        report
    }

    #[test]
    fn rollback_reports_stored_by_the_untyped_version_read_and_are_written_back_the_same() {
        let all: Vec<String> = stored("rollbacks")
            .iter()
            .map(|(name, text)| {
                let r: RollbackReport = round_trip(name, text);
                format!("{name}: {}", outline(&r.steps))
            })
            .collect();
        expect_test::expect![[r#"
            already_reverted: git revert: already reverted, git push: pushed, redeploy hook: succeeded
            cannot_open_repository: open repository: error
            conflict: git revert: conflict
            hook_could_not_start: git revert: reverted, git push: pushed, redeploy hook: could not start
            hook_failed: git revert: reverted, git push: pushed, redeploy hook: failed
            hook_timed_out: git revert: reverted, git push: pushed, redeploy hook: timed out
            push_failed: git revert: reverted, git push: error
            revert_failed: git revert: error
            rolled_back: git revert: reverted, git push: pushed, redeploy hook: succeeded"#]]
        .assert_eq(&all.join("\n"));
    }

    #[test]
    fn deploy_reports_stored_by_the_untyped_version_read_and_are_written_back_the_same() {
        let all: Vec<String> = stored("deploys")
            .iter()
            .map(|(name, text)| {
                let r: DeployReport = round_trip(name, text);
                format!("{name}: {}", outline(&r.steps))
            })
            .collect();
        expect_test::expect![[r#"
            already_applied: git apply: already applied, git push: pushed, redeploy hook: succeeded
            apply_failed: git apply: error
            cannot_open_repository: open repository: error
            deployed: git apply: applied, git push: pushed, redeploy hook: succeeded
            does_not_apply: git apply: does not apply
            hook_failed: git apply: applied, git push: pushed, redeploy hook: failed
            push_failed: git apply: applied, git push: error"#]]
        .assert_eq(&all.join("\n"));
    }

    #[test]
    fn the_names_and_results_the_views_show_are_the_tags_stored() {
        for (name, text) in stored("rollbacks").iter().chain(&stored("deploys")) {
            let report: Value = serde_json::from_str(text).unwrap();
            let steps: Vec<Step> = serde_json::from_value(report["steps"].clone()).unwrap();
            for (step, stored) in steps.iter().zip(report["steps"].as_array().unwrap()) {
                assert_eq!(stored["step"], step.name(), "{name}");
                match step.ending() {
                    Ending::Result(result) => assert_eq!(stored["result"], result, "{name}"),
                    Ending::Failed(error) => assert_eq!(stored["error"], error, "{name}"),
                    Ending::Hook(hook) => assert_eq!(stored["summary"], hook.summary, "{name}"),
                }
            }
        }
    }

    #[test]
    fn a_stored_step_reads_into_the_variant_its_fields_say() {
        let rolled_back = &stored("rollbacks")
            .into_iter()
            .find(|(name, _)| name == "rolled_back")
            .unwrap()
            .1;
        let report: RollbackReport = serde_json::from_str(rolled_back).unwrap();
        let [Step::Revert(Ended::Done(Reverted::Reverted { commit, commands })), Step::Push(push), Step::Hook(hook)] =
            &report.steps[..]
        else {
            panic!("{:?}", report.steps);
        };
        assert_eq!(Some(commit), report.revert_commit.as_ref());
        assert!(commands
            .iter()
            .any(|c| c.args.iter().any(|a| a == "revert")));
        assert_eq!(
            (push.remote.as_str(), push.branch.as_str()),
            ("origin", "main")
        );
        assert!(
            matches!(&push.ended, Ended::Done(Pushed::Pushed { command }) if command.status == Some(0))
        );
        assert_eq!(hook.command[0], "sh");
        assert_eq!(hook.outcome.status, HookStatus::Succeeded);
        assert_eq!(hook.summary, hook.outcome.summary());
    }

    #[test]
    fn a_step_whose_fields_do_not_fit_does_not_read() {
        let step = |v: Value| {
            serde_json::from_value::<Step>(v)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        // An unknown step, an unknown result, a renamed field, a missing one: errors, never
        // a step read as another.
        let errors: Vec<String> = [
            serde_json::json!({"step": "git rebase", "error": "x"}),
            serde_json::json!({"step": "git revert", "result": "rebased", "commit": "c", "commands": []}),
            serde_json::json!({"step": "git revert", "result": "reverted", "sha": "c", "commands": []}),
            serde_json::json!({"step": "git revert", "error": 128}),
            serde_json::json!({"step": "git push", "remote": "origin", "error": "x"}),
            serde_json::json!({"step": "redeploy hook", "command": ["x"], "summary": "exit 0"}),
            serde_json::json!({"result": "reverted", "commit": "c", "commands": []}),
        ]
        .into_iter()
        .map(|bad| step(bad).unwrap_err())
        .collect();
        expect_test::expect![[r#"
            unknown variant `git rebase`, expected one of `open repository`, `git revert`, `git apply`, `git push`, `stood down`, `redeploy hook`
            unknown variant `rebased`, expected one of `reverted`, `already reverted`, `conflict`
            missing field `commit`
            invalid type: integer `128`, expected a string
            missing field `branch`
            missing field `outcome`
            missing field `step`"#]].assert_eq(&errors.join("\n"));
        assert_eq!(
            step(serde_json::json!({"step": "git revert", "error": "fatal: bad revision"})),
            Ok(())
        );
    }
}
