//! What every commit-making operation (a revert, a proposal's deploy) shares: the checks
//! before it touches anything, the identity it commits as, and HEAD, index and work tree put
//! back after a failure.

use std::path::PathBuf;

use super::command::Session;
use super::{GitError, Repo};

const FALLBACK_NAME: &str = "guardian";
const FALLBACK_EMAIL: &str = "guardian@localhost";

/// Where git keeps the state of an operation in progress.
pub(super) struct StatePaths {
    revert_head: PathBuf,
    sequencer: PathBuf,
    others: Vec<(&'static str, PathBuf)>,
}

impl StatePaths {
    fn in_progress(&self) -> Option<String> {
        if self.revert_head.exists() || self.sequencer.exists() {
            return Some("revert".to_string());
        }
        self.others
            .iter()
            .find(|(_, path)| path.exists())
            .map(|(operation, _)| operation.to_string())
    }
}

/// Where a commit-making operation (revert, apply) stands before it touches anything.
pub(super) enum Prepared {
    /// A commit carrying the intent is already on the branch.
    Done(String),
    /// Clean and idle: go ahead from `head`.
    Ready { state: StatePaths, head: String },
}

impl Repo {
    /// The checks every commit-making operation starts with: the repository's config may not
    /// run commands, the intent may already be done, and nothing may be in progress or
    /// uncommitted (refused without touching anything).
    pub(super) fn prepare(&self, s: &mut Session, intent: &str) -> Result<Prepared, GitError> {
        self.check_config(s)?;
        s.neutral_attributes()?;
        if let Some(commit) = s.find_revert(intent)? {
            return Ok(Prepared::Done(commit));
        }
        let state = s.state_paths()?;
        if let Some(operation) = state.in_progress() {
            return Err(GitError::OperationInProgress {
                path: self.path.clone(),
                operation,
            });
        }
        let dirty = self.tracked_changes(s)?;
        if !dirty.is_empty() {
            return Err(GitError::DirtyTree {
                path: self.path.clone(),
                files: dirty,
            });
        }
        let head = s.head()?;
        Ok(Prepared::Ready { state, head })
    }
}

impl Session<'_> {
    fn state_paths(&mut self) -> Result<StatePaths, GitError> {
        const NAMES: [&str; 6] = [
            "REVERT_HEAD",
            "sequencer",
            "CHERRY_PICK_HEAD",
            "MERGE_HEAD",
            "rebase-merge",
            "rebase-apply",
        ];
        let mut args = vec!["rev-parse"];
        for name in NAMES {
            args.extend(["--git-path", name]);
        }
        let out = self.ok(&args, None)?;
        let paths: Vec<PathBuf> = out
            .lines()
            .map(|line| self.repo.path.join(line.trim_end_matches('\r')))
            .collect();
        if paths.len() != NAMES.len() {
            let detail = format!("expected {} paths, got {}", NAMES.len(), paths.len());
            return Err(self.unexpected(&args, detail));
        }
        let operations = [
            "revert",
            "revert",
            "cherry-pick",
            "merge",
            "rebase",
            "rebase",
        ];
        let mut all = paths.into_iter();
        let revert_head = all.next().unwrap_or_default();
        let sequencer = all.next().unwrap_or_default();
        let others = operations[2..].iter().copied().zip(all).collect();
        Ok(StatePaths {
            revert_head,
            sequencer,
            others,
        })
    }

    /// `-c user.name/-c user.email` for what the repository (or the
    /// operator's options) does not configure.
    pub(super) fn identity_args(&mut self) -> Result<Vec<String>, GitError> {
        let mut out = Vec::new();
        for (key, fallback) in [("user.name", FALLBACK_NAME), ("user.email", FALLBACK_EMAIL)] {
            let args = ["config", "--get", key];
            let raw = self.run(args, None, self.repo.command_timeout)?;
            let configured = match raw.status {
                Some(0) => !raw.stdout.trim().is_empty(),
                Some(1) => false,
                _ => return Err(self.failed(args, &raw)),
            };
            if !configured {
                out.push("-c".to_string());
                out.push(format!("{key}={fallback}"));
            }
        }
        Ok(out)
    }

    /// Puts HEAD, index and work tree back to `original_head` after a failed
    /// attempt, and says whether that was verified. Untracked files are
    /// never touched (no `git clean`).
    pub(super) fn restore(&mut self, original_head: &str, state: &StatePaths) -> bool {
        let _ = self.run(["revert", "--abort"], None, self.repo.command_timeout);
        if self.restored(original_head, state) {
            return true;
        }
        let _ = self.run(
            ["reset", "--hard", "--quiet", original_head],
            None,
            self.repo.command_timeout,
        );
        if state.sequencer.exists() || state.revert_head.exists() {
            let _ = self.run(["revert", "--quit"], None, self.repo.command_timeout);
        }
        self.restored(original_head, state)
    }

    fn restored(&mut self, original_head: &str, state: &StatePaths) -> bool {
        let head_ok = matches!(self.head(), Ok(head) if head == original_head);
        let clean = matches!(
            self.ok(["status", "--porcelain=v1", "-z", "--untracked-files=no"], None),
            Ok(out) if out.is_empty()
        );
        head_ok && clean && !state.sequencer.exists() && !state.revert_head.exists()
    }
}

pub(super) fn validate_intent(intent: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if intent.is_empty() || intent.len() > 128 || !intent.chars().all(ok_char) {
        return Err(format!(
            "intent {intent:?} must be 1-128 characters of letters, digits, '-', '_', '.', ':'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use std::fs;

    #[test]
    fn refuses_a_dirty_tree_and_ignores_untracked_files() {
        let (_tmp, dir) = init();
        commit(&dir, "a", "1\n", "base");
        let bad = commit(&dir, "a", "2\n", "bad");
        fs::write(dir.join("scratch.txt"), "untracked\n").unwrap();
        let repo = Repo::open(&dir).unwrap();
        assert!(repo.is_clean().unwrap(), "untracked files do not count");

        fs::write(dir.join("a"), "someone's work\n").unwrap();
        assert!(!repo.is_clean().unwrap());
        let head = git(&dir, &["rev-parse", "HEAD"]);
        let err = repo.revert(&request(&bad, "intent-dirty")).unwrap_err();
        assert!(
            matches!(&err, GitError::DirtyTree { files, .. } if files == &["a"]),
            "{err}"
        );
        assert!(err.to_string().contains("uncommitted"), "{err}");
        assert_eq!(git(&dir, &["rev-parse", "HEAD"]), head);
        assert_eq!(read(&dir, "a"), "someone's work\n");

        // Staged work counts too.
        git(&dir, &["add", "a"]);
        assert!(matches!(
            repo.revert(&request(&bad, "intent-dirty")),
            Err(GitError::DirtyTree { .. })
        ));
        assert_eq!(read(&dir, "scratch.txt"), "untracked\n");
    }

    #[test]
    fn uses_the_repository_identity_when_configured() {
        let (_tmp, dir) = init();
        commit(&dir, "a", "1\n", "base");
        let bad = commit(&dir, "a", "2\n", "bad");
        git(&dir, &["config", "user.name", "Deploy Bot"]);
        git(&dir, &["config", "user.email", "deploy@example.com"]);
        let repo = Repo::open(&dir).unwrap();
        repo.revert(&request(&bad, "intent-id")).unwrap();
        assert_eq!(
            git(&dir, &["log", "-1", "--format=%an <%ae>"]),
            "Deploy Bot <deploy@example.com>"
        );
    }
}
