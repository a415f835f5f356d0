//! A deploy notification as the API and `guardian notify` send it, checked before the engine
//! acts on it.

use serde::{Deserialize, Serialize};

use crate::core::Landing;
use crate::store::ChangeKind;

/// A deploy notification, as the API and `guardian notify` send it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    /// The commit (or range `A..B`) that was deployed.
    pub commit: String,
    #[serde(default = "default_kind")]
    pub kind: ChangeKind,
    pub pattern: Option<String>,
    pub summary: Option<String>,
    /// The proposal this deploy carries out (shadow mode: the team deploys, guardian watches).
    #[serde(default)]
    pub proposal: Option<String>,
    /// When the deploy began, unix seconds: the traffic from then to the notification (the
    /// restart) is neither baseline nor watch. Without it, `deploy_guard_secs` before.
    #[serde(default)]
    pub deploy_started_at: Option<f64>,
    /// The Sentry issue it fixes (its id, short id or link): the watch then judges whether
    /// it stopped, and a fix that did not stop it is `ineffective`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue: Option<String>,
    /// The feature flag the change is behind: when it regresses, guardian turns the flag off
    /// first (`[daemon.flag_off]`) and reverts only if that did not help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    /// The values of `canary_label` (`[[daemon.promql]]`) that run the change, e.g. the canary
    /// hosts' instances: they are compared against the rest. Notified again for the change
    /// being watched with more values, the watch follows the rollout as it widens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Vec<String>>,
}

/// The most values a notification's canary may name, and the longest each may be.
pub const MAX_CANARY_VALUES: usize = 1000;
const MAX_CANARY_VALUE_LEN: usize = 256;

/// How long before its notification a deploy may have begun: longer is far likelier a wrong
/// time than a deploy, and would leave no baseline before it.
pub const MAX_DEPLOY_SECS: f64 = 6.0 * 3600.0;
/// A deploy start this far after the notification is the two clocks disagreeing a little.
const DEPLOY_CLOCK_SLACK_SECS: f64 = 5.0;

fn default_kind() -> ChangeKind {
    ChangeKind::Human
}

impl ChangeRequest {
    /// Refuses requests a person should fix, saying which field and why.
    pub fn validate(&self) -> Result<(), String> {
        let commit = self.commit.trim();
        let is_rev =
            |r: &str| (4..=64).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_hexdigit());
        let ok = match commit.split_once("..") {
            Some((a, b)) => is_rev(a) && is_rev(b),
            None => is_rev(commit),
        };
        if !ok {
            return Err(format!(
                "\"commit\" must be a commit id (4 to 64 hex digits) or a range A..B of them, got {commit:?}"
            ));
        }
        for (field, value, max) in [
            ("pattern", &self.pattern, 64),
            ("summary", &self.summary, 2000),
        ] {
            if value.as_ref().is_some_and(|v| v.chars().count() > max) {
                return Err(format!("\"{field}\" must be at most {max} characters"));
            }
            if let Some(v) = value {
                super::gate::one_line(field, v.trim())?;
            }
        }
        if let Some(issue) = &self.issue {
            super::gate::issue_reference(issue)?;
        }
        if let Some(flag) = &self.flag {
            crate::config::check_flag_name(flag).map_err(|e| format!("\"flag\" {e}"))?;
        }
        if let Some(canary) = &self.canary {
            if canary.is_empty() || canary.len() > MAX_CANARY_VALUES {
                return Err(format!(
                    "\"canary\" names from 1 to {MAX_CANARY_VALUES} values of the canary label, \
                     got {}",
                    canary.len()
                ));
            }
            for value in canary {
                if value.is_empty() || value.len() > MAX_CANARY_VALUE_LEN {
                    return Err(format!(
                        "\"canary\" values are 1 to {MAX_CANARY_VALUE_LEN} bytes, got one of {}",
                        value.len()
                    ));
                }
                super::gate::one_line("canary", value)?;
                // A label value shown must be the value matched: nothing invisible, nothing
                // around it.
                if value.trim() != value || value.chars().any(crate::display::is_unsafe) {
                    return Err(format!(
                        "\"canary\" values are label values as Prometheus shows them, without \
                         spaces around them or invisible characters, got {}",
                        crate::display::line(value)
                    ));
                }
            }
        }
        Ok(())
    }

    /// The change's landing at `now`, with its deploy's start checked against `now`.
    pub fn landing(&self, now: f64) -> Result<Landing, String> {
        let Some(started) = self.deploy_started_at else {
            return Ok(Landing::at(now));
        };
        if !started.is_finite() {
            return Err(format!(
                "\"deploy_started_at\" must be unix seconds, got {started}"
            ));
        }
        if started > now + DEPLOY_CLOCK_SLACK_SECS {
            return Err(format!(
                "\"deploy_started_at\" {started} is {:.0} s after now ({now:.0}): a deploy \
                 starts before it is notified",
                started - now
            ));
        }
        if started < now - MAX_DEPLOY_SECS {
            return Err(format!(
                "\"deploy_started_at\" {started} is {:.0} s before now ({now:.0}), more than \
                 the {MAX_DEPLOY_SECS:.0} s a deploy may take; is it in seconds?",
                now - started
            ));
        }
        Ok(Landing {
            at: now,
            deploy_started_at: Some(started.min(now)),
        })
    }
}

/// How long the check waits for a fetch: `guardian notify` gives up on an answer after 10 s,
/// and a change the daemon took but the deploy hook saw fail would be notified twice.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6);

/// Whether the commits a notification names are in the repository guardian would revert them
/// in ([`super::Engine::commit_check`]): a change whose commit is not there would be watched
/// for nothing, and its rollback fail at 2 a.m. instead of the deploy's notify now. Run off
/// the owner (git may take a while).
#[derive(Clone, Debug)]
pub struct CommitCheck {
    pub repo: std::path::PathBuf,
    /// `[daemon.rollback] push_remote`, the remote guardian already talks to.
    pub remote: Option<String>,
}

impl CommitCheck {
    /// Refuses, naming the commit and the repository, a commit (or either end of a range) the
    /// repository does not have. A commit may be deployed from a build of the remote before
    /// this clone has pulled it, so a missing one is looked for again after fetching from the
    /// push remote (objects and remote-tracking branches only: the work tree, the index and
    /// the branches stay as they are). Without a remote there is nowhere else it could come
    /// from. A repository that cannot be read at all is not the notification's fault: the
    /// change is taken, and the daemon's log says why it could not be checked.
    pub fn run(&self, commit: &str) -> Result<(), String> {
        let repo = match crate::git::Repo::open(&self.repo) {
            Ok(repo) => repo,
            Err(e) => {
                tracing::warn!("cannot check that the notified commit {commit} exists: {e}");
                return Ok(());
            }
        };
        let ends: Vec<&str> = match commit.trim().split_once("..") {
            Some((a, b)) => vec![a, b],
            None => vec![commit.trim()],
        };
        let missing = |repo: &crate::git::Repo| -> Result<Vec<&str>, crate::git::GitError> {
            let mut missing = Vec::new();
            for end in &ends {
                if repo.find_commit(end)?.is_none() {
                    missing.push(*end);
                }
            }
            Ok(missing)
        };
        let mut absent = match missing(&repo) {
            Ok(absent) => absent,
            Err(e) => {
                tracing::warn!("cannot check that the notified commit {commit} exists: {e}");
                return Ok(());
            }
        };
        if absent.is_empty() {
            return Ok(());
        }
        let mut fetched = String::new();
        if let Some(remote) = &self.remote {
            match repo.fetch(remote, FETCH_TIMEOUT) {
                Ok(_) => {
                    absent = missing(&repo).unwrap_or(absent);
                    fetched = format!(", even after fetching from {remote}");
                }
                Err(e) => {
                    fetched = format!(" (fetching from {remote} failed: {e})");
                }
            }
        }
        if absent.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{} {} not in the repository guardian reverts in, {}{fetched}: guardian could \
             not revert it. Check the commit id, or update that repository before notifying",
            absent
                .iter()
                .map(|c| format!("commit {c}"))
                .collect::<Vec<_>>()
                .join(" and "),
            if absent.len() == 1 { "is" } else { "are" },
            self.repo.display()
        ))
    }
}

impl super::Engine {
    /// What checking a notified commit needs, copied out of the engine: `None` when guardian
    /// reverts nothing (no `[daemon.rollback]`), and any commit may be watched.
    pub fn commit_check(&self) -> Option<CommitCheck> {
        self.settings.rollback.as_ref().map(|r| CommitCheck {
            repo: r.repo.clone(),
            remote: r.push.as_ref().map(|(remote, _)| remote.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &std::path::Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn a_canary_names_one_line_values_and_at_least_one() {
        let check = |canary: serde_json::Value| {
            serde_json::from_value::<ChangeRequest>(
                serde_json::json!({"commit": "abc1234", "canary": canary}),
            )
            .unwrap()
            .validate()
        };
        assert_eq!(check(serde_json::json!(["10.0.0.3:8080", "v2"])), Ok(()));
        for (canary, says) in [
            (serde_json::json!([]), "from 1 to 1000 values"),
            (serde_json::json!([""]), "1 to 256 bytes"),
            (serde_json::json!(["x".repeat(257)]), "1 to 256 bytes"),
            (serde_json::json!(["a\nb"]), "\"canary\" must be one line"),
            (serde_json::json!([" a"]), "without spaces around them"),
            (serde_json::json!(["a\u{200b}b"]), "invisible characters"),
        ] {
            let e = check(canary.clone()).unwrap_err();
            assert!(e.contains(says), "{canary}: {e}");
        }
    }

    #[test]
    fn a_commit_the_repository_lacks_is_refused_naming_it_and_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("app");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("a"), "1\n").unwrap();
        git(&repo, &["add", "a"]);
        git(&repo, &["commit", "-q", "-m", "first"]);
        let head = git(&repo, &["rev-parse", "HEAD"]);
        let check = CommitCheck {
            repo: repo.clone(),
            remote: None,
        };
        assert_eq!(check.run(&head), Ok(()));
        assert_eq!(check.run(&head[..7]), Ok(()));
        assert_eq!(
            check.run("deadbeef"),
            Err(format!(
                "commit deadbeef is not in the repository guardian reverts in, {}: guardian \
                 could not revert it. Check the commit id, or update that repository before \
                 notifying",
                repo.display()
            ))
        );
        // Either end of a range.
        let refused = check.run(&format!("{head}..cafef00d")).unwrap_err();
        assert!(refused.starts_with("commit cafef00d is not"), "{refused}");
        let refused = check.run("cafef00d..deadbeef").unwrap_err();
        assert!(
            refused.starts_with("commit cafef00d and commit deadbeef are not"),
            "{refused}"
        );
    }
}
