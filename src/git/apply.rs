//! A judged proposal deployed in guardian's own clone: one commit of exactly the tree the gate
//! judged (`commit-tree`, `read-tree -m -u`), exactly once per intent; on a HEAD that moved on,
//! only if the change is the judged one.

use serde::Serialize;

use super::command::{CommandRecord, Session};
use super::commit::{validate_intent, Prepared};
use super::read::{is_full_sha, short};
use super::{GitError, Repo, TRAILER_INTENT};

/// A proposal to apply: the diff as data, the tree it was judged to make, and the commit
/// message guardian writes for it.
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    /// A `git diff` of the whole change (what `guardian propose` sends).
    pub patch: String,
    /// Marks the commit so that applying twice finds the first commit (like a revert's).
    pub intent: String,
    /// The commit message; its last paragraph is its trailers, to which the intent is added.
    pub message: String,
    /// The commit the diff was judged (and approved) against, and the tree the gate judged it
    /// to make there (`Repo::scratch_apply`). What is committed is exactly that tree; on a
    /// HEAD that moved on since, the change (paths, modes, contents) must be exactly the judged
    /// change, or nothing is applied.
    pub base: String,
    pub tree: String,
}

/// What applying a proposal did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ApplyOutcome {
    /// A new commit carrying the change is HEAD.
    Applied {
        commit: String,
        commands: Vec<CommandRecord>,
    },
    /// A commit carrying this intent is already on the branch: nothing done.
    AlreadyDone {
        commit: String,
        commands: Vec<CommandRecord>,
    },
    /// The diff does not apply to HEAD; the tree was put back (`tree_restored` says whether
    /// that was verified).
    DoesNotApply {
        reason: String,
        tree_restored: bool,
        commands: Vec<CommandRecord>,
    },
}

impl Repo {
    /// The change from `base` to `commit` as one diff that `apply_patch` takes, and both
    /// commits' full ids. Read under the same hardening as every command here: no external
    /// diff drivers or text conversions from the repository's config run.
    pub fn diff_between(
        &self,
        base: &str,
        commit: &str,
    ) -> Result<(String, String, String), GitError> {
        let mut s = Session::new(self);
        self.check_config(&mut s)?;
        let base = s.resolve(base)?;
        let commit = s.resolve(commit)?;
        let args = [
            "diff",
            "--no-ext-diff",
            "--no-textconv",
            "--no-color",
            "--full-index",
            "--binary",
            "--find-renames",
            base.as_str(),
            commit.as_str(),
            "--",
        ];
        let patch = s.ok(args, None)?;
        Ok((base, commit, patch))
    }

    /// Applies a proposal's diff to HEAD as one new commit, exactly once per `req.intent`,
    /// and only as the tree the gate judged. The diff is data: `git apply --cached` into a
    /// scratch index (which refuses paths outside the tree and through a symlink) under the
    /// same hardening as every command here, never `git am` with the proposer's hooks or
    /// config; the tree it makes is compared with the judged one, committed with `commit-tree`
    /// and checked out with `read-tree -m -u`. Refuses a dirty tree or an operation in
    /// progress, like `revert`; anything refused leaves the clone exactly as it was.
    pub fn apply_patch(&self, req: &ApplyRequest) -> Result<ApplyOutcome, GitError> {
        validate_intent(&req.intent).map_err(GitError::InvalidRequest)?;
        let mut s = Session::new(self);
        let (state, original_head) = match self.prepare(&mut s, &req.intent)? {
            Prepared::Done(commit) => {
                return Ok(ApplyOutcome::AlreadyDone {
                    commit,
                    commands: s.log,
                })
            }
            Prepared::Ready { state, head } => (state, head),
        };
        let refuse = |s: Session, reason: String| ApplyOutcome::DoesNotApply {
            reason,
            tree_restored: true,
            commands: s.log,
        };
        if !is_full_sha(&req.tree) {
            return Err(GitError::InvalidRequest(format!(
                "{:?} is not the id of a judged tree",
                req.tree
            )));
        }
        let base = s.resolve(&req.base)?;
        let head_tree = s.tree_of(&original_head)?;
        let tree = match s.scratch_tree(&head_tree, &req.patch)? {
            Ok(tree) => tree,
            Err(reason) => return Ok(refuse(s, format!("git apply refuses it on HEAD: {reason}"))),
        };
        if base == original_head {
            if tree != req.tree {
                return Ok(refuse(
                    s,
                    format!(
                        "on its base it makes tree {tree}, not the tree {} the gate judged",
                        req.tree
                    ),
                ));
            }
        } else {
            let base_tree = s.tree_of(&base)?;
            let judged = s.change_set(&base_tree, &req.tree)?;
            let now = s.change_set(&head_tree, &tree)?;
            if judged != now {
                return Ok(refuse(
                    s,
                    format!(
                        "HEAD moved on from its base {} to {}, and there it changes other files \
                         or makes other contents than the gate judged: propose it again on the \
                         current deploy branch",
                        short(&base),
                        short(&original_head)
                    ),
                ));
            }
        }
        let identity = s.identity_args()?;
        let message = format!(
            "{}\n{TRAILER_INTENT}: {}\n",
            req.message.trim_end(),
            req.intent
        );
        let mut args = identity.clone();
        args.extend(
            [
                "commit-tree",
                tree.as_str(),
                "-p",
                original_head.as_str(),
                "-F",
                "-",
            ]
            .map(String::from),
        );
        let commit = match s.ok(&args, Some(message.into_bytes())) {
            Ok(out) if is_full_sha(out.trim()) => out.trim().to_owned(),
            Ok(out) => return Err(s.unexpected(&args, format!("not a commit id: {out:?}"))),
            Err(e) => return Ok(refuse(s, e.to_string())),
        };
        let checkout = [
            "read-tree",
            "-m",
            "-u",
            original_head.as_str(),
            commit.as_str(),
        ];
        let moved = s.ok(checkout, None).and_then(|_| {
            s.ok(
                [
                    "update-ref",
                    "-m",
                    "guardian: deploy a judged proposal",
                    "HEAD",
                    commit.as_str(),
                    original_head.as_str(),
                ],
                None,
            )
        });
        if let Err(e) = moved {
            let tree_restored = s.restore(&original_head, &state);
            return Ok(ApplyOutcome::DoesNotApply {
                reason: e.to_string(),
                tree_restored,
                commands: s.log,
            });
        }
        let head = s.head()?;
        if head != commit {
            return Err(s.unexpected(
                ["rev-parse", "HEAD"],
                format!("HEAD is {head} after committing {commit}"),
            ));
        }
        Ok(ApplyOutcome::Applied {
            commit,
            commands: s.log,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::git::{Scratch, TRAILER_INTENT};

    fn apply_request(patch: String, base: &str, tree: &str) -> ApplyRequest {
        ApplyRequest {
            patch,
            base: base.to_owned(),
            tree: tree.to_owned(),
            intent: "prp_0123456789ab-deploy".into(),
            message: "Fix: bump the timeout\n\nGuardian-Proposal: prp_0123456789ab\n".into(),
        }
    }

    #[test]
    fn a_proposal_is_applied_as_one_commit_of_the_judged_tree_once() {
        let (_tmp, dir) = init();
        commit(&dir, "a.txt", "timeout = 5\n", "base");
        let head = git(&dir, &["rev-parse", "HEAD"]);
        std::fs::write(dir.join("a.txt"), "timeout = 10\n").unwrap();
        let patch = format!("{}\n", git(&dir, &["diff", "--full-index"]));
        git(&dir, &["checkout", "--", "a.txt"]);
        let repo = Repo::open(&dir).unwrap();
        let tree = judged(&repo, &head, &patch);
        // The scratch apply touched nothing.
        assert_eq!(read(&dir, "a.txt"), "timeout = 5\n");
        assert_eq!(git(&dir, &["status", "--porcelain"]), "");
        // A request for another tree than the one the patch makes is refused.
        let wrong = apply_request(patch.clone(), &head, &tree.base_tree);
        match repo.apply_patch(&wrong).unwrap() {
            ApplyOutcome::DoesNotApply { reason, .. } => {
                assert!(reason.contains("not the tree"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let req = apply_request(patch, &head, &tree.tree);
        let commit = match repo.apply_patch(&req).unwrap() {
            ApplyOutcome::Applied { commit, .. } => commit,
            other => panic!("{other:?}"),
        };
        assert_eq!(read(&dir, "a.txt"), "timeout = 10\n");
        assert_eq!(git(&dir, &["rev-parse", "HEAD^"]), head);
        assert_eq!(git(&dir, &["rev-parse", "HEAD^{tree}"]), tree.tree);
        assert_eq!(git(&dir, &["status", "--porcelain"]), "");
        assert_eq!(
            trailers(&dir, TRAILER_INTENT),
            ["prp_0123456789ab-deploy".to_string()]
        );
        assert!(matches!(
            repo.apply_patch(&req).unwrap(),
            ApplyOutcome::AlreadyDone { commit: c, .. } if c == commit
        ));
        assert_eq!(count(&dir), 2);
    }

    #[test]
    fn a_diff_is_applied_on_a_moved_head_only_as_the_change_judged() {
        let (_tmp, dir) = init();
        let base = commit(&dir, "a.txt", "timeout = 5\n", "base");
        std::fs::write(dir.join("a.txt"), "timeout = 10\n").unwrap();
        let patch = format!("{}\n", git(&dir, &["diff", "--full-index"]));
        git(&dir, &["checkout", "--", "a.txt"]);
        let repo = Repo::open(&dir).unwrap();
        let tree = judged(&repo, &base, &patch);
        // Someone else's change to another file: the diff still lands as judged.
        commit(&dir, "b.txt", "other\n", "unrelated");
        let req = apply_request(patch, &base, &tree.tree);
        assert!(matches!(
            repo.apply_patch(&req).unwrap(),
            ApplyOutcome::Applied { .. }
        ));
        assert_eq!(read(&dir, "b.txt"), "other\n");
        // A change to the file itself since the base: refused, tree untouched.
        let (_tmp2, dir2) = init();
        let lines: String = (1..=10).map(|i| format!("line {i}\n")).collect();
        let base = commit(&dir2, "a.txt", &format!("timeout = 5\n{lines}"), "base");
        std::fs::write(dir2.join("a.txt"), format!("timeout = 10\n{lines}")).unwrap();
        let patch = format!("{}\n", git(&dir2, &["diff", "--full-index"]));
        git(&dir2, &["checkout", "--", "a.txt"]);
        let repo2 = Repo::open(&dir2).unwrap();
        let tree = judged(&repo2, &base, &patch);
        // Far enough from the hunk that it still applies, but the file is not the one judged.
        let later = format!("timeout = 5\n{}", lines.replace("line 10", "retries = 3"));
        let moved = commit(&dir2, "a.txt", &later, "later");
        match repo2
            .apply_patch(&apply_request(patch, &base, &tree.tree))
            .unwrap()
        {
            ApplyOutcome::DoesNotApply { reason, .. } => {
                assert!(reason.contains("HEAD moved on from its base"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(git(&dir2, &["rev-parse", "HEAD"]), moved);
        assert_eq!(read(&dir2, "a.txt"), later);
    }

    #[test]
    fn a_diff_that_does_not_apply_or_escapes_the_tree_leaves_it_as_it_was() {
        let (_tmp, dir) = init();
        commit(&dir, "a.txt", "one\n", "base");
        let head = git(&dir, &["rev-parse", "HEAD"]);
        let head_tree = git(&dir, &["rev-parse", "HEAD^{tree}"]);
        let repo = Repo::open(&dir).unwrap();
        let stale =
            "diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-two\n+three\n";
        let escape = "diff --git a/../evil b/../evil\nnew file mode 100644\n--- /dev/null\n+++ b/../evil\n@@ -0,0 +1 @@\n+x\n";
        for patch in [stale, escape] {
            assert!(matches!(
                repo.scratch_apply(&head, patch, &[]).unwrap(),
                Scratch::Refused(_)
            ));
            match repo
                .apply_patch(&apply_request(patch.into(), &head, &head_tree))
                .unwrap()
            {
                ApplyOutcome::DoesNotApply { tree_restored, .. } => assert!(tree_restored),
                other => panic!("{other:?}"),
            }
            assert_eq!(git(&dir, &["rev-parse", "HEAD"]), head);
            assert_eq!(read(&dir, "a.txt"), "one\n");
        }
        assert!(!dir.parent().unwrap().join("evil").exists());
    }
}
