//! A bad deploy reverted as one commit, exactly once per intent: the commits resolved and
//! checked (on the branch, not merges, not guardian's own reverts), `git revert --no-commit`
//! and one commit with trailers; a conflict aborted and the tree verified, never resolved.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::command::{clip, CommandRecord, Session};
use super::commit::{validate_intent, Prepared};
use super::read::{is_full_sha, is_unmerged, parse_porcelain_z, short};
use super::{
    GitError, Repo, MAX_REVERT_COMMITS, TRAILER_CHANGE, TRAILER_EVIDENCE, TRAILER_INTENT,
    TRAILER_REVERT_OF,
};

/// Longest reason excerpt put in a revert subject.
const SUBJECT_REASON_CHARS: usize = 60;

/// What to revert and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertRequest {
    /// The deploy as recorded: one commit (SHA or other revision) or a range
    /// `A..B` (the commits reachable from B and not from A).
    pub commits: String,
    /// The guardian's id for the change.
    pub change_id: String,
    /// Write-ahead intent id from the caller (uuid-like: letters, digits,
    /// `-`, `_`, `.`, `:`; at most 128 characters).
    pub intent: String,
    /// One paragraph: why, in numbers. Its first line also goes into the
    /// subject of a multi-commit revert.
    pub reason: String,
    pub evidence_url: Option<String>,
}

/// The result of [`Repo::revert`]. Every variant carries the commands run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RevertOutcome {
    /// A new commit undoing `reverted` (full SHAs, newest first) is HEAD.
    Reverted {
        commit: String,
        reverted: Vec<String>,
        commands: Vec<CommandRecord>,
    },
    /// A commit carrying this intent is already on the branch: nothing done.
    AlreadyDone {
        commit: String,
        commands: Vec<CommandRecord>,
    },
    /// The revert conflicted and was aborted. `files` are the conflicting
    /// paths; `tree_restored` is true only if HEAD is the original HEAD, no
    /// tracked file differs from it and no revert is left in progress.
    Conflict {
        files: Vec<String>,
        tree_restored: bool,
        commands: Vec<CommandRecord>,
    },
}

impl RevertOutcome {
    pub fn commands(&self) -> &[CommandRecord] {
        match self {
            RevertOutcome::Reverted { commands, .. }
            | RevertOutcome::AlreadyDone { commands, .. }
            | RevertOutcome::Conflict { commands, .. } => commands,
        }
    }
}

/// Metadata of one commit to revert.
struct CommitInfo {
    sha: String,
    parents: usize,
    revert_of: String,
    subject: String,
}

enum Applied {
    Committed,
    Conflict(Vec<String>),
    Nothing,
}

impl Repo {
    /// Reverts `req.commits` as one commit, exactly once per `req.intent`.
    ///
    /// Refuses (without touching anything) when tracked files have
    /// uncommitted changes, an operation is in progress, a commit is a merge,
    /// not on the current branch, or itself a guardian revert. A conflict is
    /// aborted and the tree verified; nothing is ever auto-resolved.
    pub fn revert(&self, req: &RevertRequest) -> Result<RevertOutcome, GitError> {
        validate_request(req).map_err(GitError::InvalidRequest)?;
        let mut s = Session::new(self);
        let (state, original_head) = match self.prepare(&mut s, &req.intent)? {
            Prepared::Done(commit) => {
                return Ok(RevertOutcome::AlreadyDone {
                    commit,
                    commands: s.log,
                })
            }
            Prepared::Ready { state, head } => (state, head),
        };

        let (commits, range_label) = s.resolve_commits(&req.commits)?;
        let infos = s.commit_infos(&commits)?;
        for info in &infos {
            if !info.revert_of.is_empty() {
                return Err(GitError::RevertOfRevert {
                    commit: info.sha.clone(),
                    of: info.revert_of.clone(),
                });
            }
            if info.parents > 1 {
                return Err(GitError::MergeCommit {
                    commit: info.sha.clone(),
                });
            }
        }
        let message = revert_message(req, &infos, range_label.as_deref());
        let identity = s.identity_args()?;

        match s.apply(&commits, &identity, &message) {
            Ok(Applied::Committed) => {}
            Ok(Applied::Conflict(files)) => {
                let tree_restored = s.restore(&original_head, &state);
                return Ok(RevertOutcome::Conflict {
                    files,
                    tree_restored,
                    commands: s.log,
                });
            }
            Ok(Applied::Nothing) => {
                let tree_restored = s.restore(&original_head, &state);
                return Err(GitError::RevertFailed {
                    path: self.path.clone(),
                    commits,
                    reason: "reverting them changes nothing (already undone on this branch?)"
                        .to_string(),
                    tree_restored,
                    commands: s.log,
                });
            }
            Err(e) => {
                let tree_restored = s.restore(&original_head, &state);
                return Err(GitError::RevertFailed {
                    path: self.path.clone(),
                    commits,
                    reason: e.to_string(),
                    tree_restored,
                    commands: s.log,
                });
            }
        }

        // The commit exists and carries the intent: from here on a failure
        // is reported as is and a retry finds the commit (AlreadyDone).
        let commit = s.head()?;
        let args = ["log", "-1", "--format=%P", commit.as_str(), "--"];
        let parents = s.ok(args, None)?;
        if parents.trim() != original_head {
            return Err(s.unexpected(
                args,
                format!(
                    "the revert commit {commit} has parents {:?}, expected {original_head}",
                    parents.trim()
                ),
            ));
        }
        Ok(RevertOutcome::Reverted {
            commit,
            reverted: commits,
            commands: s.log,
        })
    }
}

/// The commit a `git revert` message names ("This reverts commit SHA."), if it is one.
fn reverted_by_git(body: &str) -> Option<String> {
    body.lines().find_map(|line| {
        let sha = line
            .trim()
            .strip_prefix("This reverts commit ")?
            .trim_end_matches(['.', ',']);
        let sha = sha.split_whitespace().next()?;
        is_full_sha(sha).then(|| sha.to_owned())
    })
}

impl Session<'_> {
    /// The commits of `spec`, newest first, and for a range its label
    /// `<short A>..<short B>`.
    fn resolve_commits(&mut self, spec: &str) -> Result<(Vec<String>, Option<String>), GitError> {
        let (commits, label, tip) = match spec.split_once("..") {
            None => {
                let sha = self.resolve(spec)?;
                (vec![sha.clone()], None, sha)
            }
            Some((from, to)) => {
                let from = self.resolve(from)?;
                let to = self.resolve(to)?;
                let exclude = format!("^{from}");
                let args = [
                    "rev-list",
                    "--topo-order",
                    "--end-of-options",
                    to.as_str(),
                    exclude.as_str(),
                ];
                let out = self.ok(args, None)?;
                let commits: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
                if let Some(bad) = commits.iter().find(|c| !is_full_sha(c)) {
                    let detail = format!("not a commit id: {:?}", clip(bad, 100));
                    return Err(self.unexpected(args, detail));
                }
                let label = format!("{}..{}", short(&from), short(&to));
                (commits, Some(label), to)
            }
        };
        if commits.is_empty() {
            return Err(GitError::InvalidRequest(format!(
                "{spec:?} contains no commits"
            )));
        }
        if commits.len() > MAX_REVERT_COMMITS {
            return Err(GitError::InvalidRequest(format!(
                "{spec:?} spans {} commits; more than {MAX_REVERT_COMMITS} are not reverted automatically",
                commits.len()
            )));
        }
        let raw = self.run(
            ["merge-base", "--is-ancestor", tip.as_str(), "HEAD"],
            None,
            self.repo.command_timeout,
        )?;
        match raw.status {
            Some(0) => Ok((commits, label)),
            Some(1) => Err(GitError::NotOnBranch {
                path: self.repo.path.clone(),
                commit: tip,
            }),
            _ => Err(self.failed(["merge-base", "--is-ancestor", tip.as_str(), "HEAD"], &raw)),
        }
    }

    fn commit_infos(&mut self, commits: &[String]) -> Result<Vec<CommitInfo>, GitError> {
        let format = format!(
            "--format=%H%x1f%P%x1f%(trailers:key={TRAILER_REVERT_OF},valueonly,separator=%x20)%x1f%s%x1f%b"
        );
        let mut args = vec![
            "log".to_string(),
            "-z".to_string(),
            "--no-walk=unsorted".to_string(),
            format,
        ];
        args.extend(commits.iter().cloned());
        args.push("--".to_string());
        let out = self.ok(&args, None)?;
        let mut infos = Vec::new();
        for record in out.split('\0').filter(|r| !r.is_empty()) {
            let mut fields = record.splitn(5, '\u{1f}');
            let sha = fields.next().unwrap_or_default().trim().to_string();
            let parents = fields.next().unwrap_or_default().split_whitespace().count();
            let trailer = fields.next().unwrap_or_default().trim().to_string();
            let subject = fields.next().unwrap_or_default().trim().to_string();
            let body = fields.next().unwrap_or_default();
            // guardian's own reverts carry a trailer; a person's `git revert` says so in the
            // body, in git's words.
            let revert_of = if trailer.is_empty() {
                reverted_by_git(body).unwrap_or_default()
            } else {
                trailer
            };
            infos.push(CommitInfo {
                sha,
                parents,
                revert_of,
                subject,
            });
        }
        let listed: Vec<&str> = infos.iter().map(|i| i.sha.as_str()).collect();
        if listed != commits.iter().map(String::as_str).collect::<Vec<_>>() {
            let detail = format!("expected {} commits in the given order", commits.len());
            return Err(self.unexpected(&args, detail));
        }
        Ok(infos)
    }

    /// The mutating part: revert into the index, then commit.
    fn apply(
        &mut self,
        commits: &[String],
        identity: &[String],
        message: &str,
    ) -> Result<Applied, GitError> {
        let mut args = identity.to_vec();
        args.extend(["revert", "--no-commit", "--no-edit"].map(String::from));
        args.extend(commits.iter().cloned());
        let raw = self.run(&args, None, self.repo.command_timeout)?;
        if !raw.success() {
            let status = self.ok(
                ["status", "--porcelain=v1", "-z", "--untracked-files=no"],
                None,
            )?;
            let files: Vec<String> = parse_porcelain_z(&status)
                .into_iter()
                .filter(|(xy, _)| is_unmerged(xy))
                .map(|(_, path)| path)
                .collect();
            if files.is_empty() {
                return Err(self.failed(&args, &raw));
            }
            return Ok(Applied::Conflict(files));
        }

        let diff = [
            "diff",
            "--cached",
            "--quiet",
            "--no-ext-diff",
            "--no-textconv",
        ];
        let raw = self.run(diff, None, self.repo.command_timeout)?;
        match raw.status {
            Some(0) => return Ok(Applied::Nothing),
            Some(1) => {}
            _ => return Err(self.failed(diff, &raw)),
        }

        self.commit(identity, message)?;
        Ok(Applied::Committed)
    }

    /// Commits the index with `message`, skipping the repository's hooks and signing.
    fn commit(&mut self, identity: &[String], message: &str) -> Result<String, GitError> {
        let mut args = identity.to_vec();
        args.extend(
            [
                "commit",
                "--no-verify",
                "--no-gpg-sign",
                "--cleanup=whitespace",
                "-F",
                "-",
            ]
            .map(String::from),
        );
        self.ok(&args, Some(message.as_bytes().to_vec()))
    }
}

/// The revert commit's message: subject, the reason paragraph, trailers.
fn revert_message(req: &RevertRequest, infos: &[CommitInfo], range: Option<&str>) -> String {
    let reason = req.reason.replace("\r\n", "\n");
    let reason = reason.trim();
    let subject = match (infos, range) {
        ([only], _) if !only.subject.is_empty() => format!("Revert \"{}\"", only.subject),
        _ => {
            let what = match range {
                Some(label) => label.to_string(),
                None => infos
                    .iter()
                    .map(|i| short(&i.sha))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            let first = reason.lines().next().unwrap_or_default().trim();
            format!(
                "Revert {what}: {}",
                truncate_chars(first, SUBJECT_REASON_CHARS)
            )
        }
    };
    let mut message = format!("{subject}\n\n{reason}\n\n");
    for info in infos {
        let _ = writeln!(message, "{TRAILER_REVERT_OF}: {}", info.sha);
    }
    let _ = writeln!(message, "{TRAILER_CHANGE}: {}", req.change_id);
    let _ = writeln!(message, "{TRAILER_INTENT}: {}", req.intent);
    if let Some(url) = &req.evidence_url {
        let _ = writeln!(message, "{TRAILER_EVIDENCE}: {url}");
    }
    message
}

fn validate_request(req: &RevertRequest) -> Result<(), String> {
    let spec = req.commits.trim();
    if spec.is_empty() || spec != req.commits {
        return Err(format!(
            "commits {:?} must be a revision or a range A..B without spaces",
            req.commits
        ));
    }
    if spec.contains("...") {
        return Err(format!(
            "commits {spec:?}: a symmetric range A...B is not a deploy; use A..B"
        ));
    }
    let parts: Vec<&str> = match spec.split_once("..") {
        Some((from, to)) => vec![from, to],
        None => vec![spec],
    };
    for part in parts {
        if part.is_empty()
            || part.starts_with('-')
            || part.contains("..")
            || part.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "commits {spec:?} must be a revision or a range A..B with both ends given"
            ));
        }
    }
    validate_line("change_id", &req.change_id)?;
    validate_intent(&req.intent)?;
    if req.reason.trim().is_empty() {
        return Err("reason is empty: say why, in numbers".to_string());
    }
    if let Some(url) = &req.evidence_url {
        validate_line("evidence_url", url)?;
    }
    Ok(())
}

/// A trailer value: one non-empty line (a newline would forge trailers).
fn validate_line(what: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() || value.len() > 1000 || value.chars().any(char::is_control) {
        return Err(format!(
            "{what} {value:?} must be one non-empty line of at most 1000 bytes"
        ));
    }
    Ok(())
}

fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use std::fs;
    use std::path::Path;

    #[test]
    fn a_subject_excerpt_is_cut_on_characters() {
        assert_eq!(truncate_chars("ééééé", 4), "é...");
    }

    #[test]
    fn reverts_one_commit_with_trailers() {
        let (_tmp, dir) = init();
        commit(&dir, "app.conf", "workers = 4\n", "base");
        let bad = commit(&dir, "app.conf", "workers = 1\n", "Tune workers");
        let before = git(&dir, &["rev-parse", "HEAD"]);

        let repo = Repo::open(&dir).unwrap();
        assert_eq!(repo.head().unwrap(), before);
        let outcome = repo.revert(&request(&bad, "intent-1")).unwrap();
        let RevertOutcome::Reverted {
            commit,
            reverted,
            commands,
        } = outcome
        else {
            panic!("expected Reverted, got {outcome:?}");
        };
        assert_eq!(reverted, vec![bad.clone()]);
        assert_eq!(commit, git(&dir, &["rev-parse", "HEAD"]));
        assert_eq!(git(&dir, &["rev-parse", "HEAD^"]), before);
        assert_eq!(read(&dir, "app.conf"), "workers = 4\n");
        assert_eq!(
            git(&dir, &["log", "-1", "--format=%s"]),
            "Revert \"Tune workers\""
        );
        let body = git(&dir, &["log", "-1", "--format=%b"]);
        assert!(
            body.starts_with("5xx rate rose from 0.2% to 4.1%"),
            "{body}"
        );
        assert_eq!(trailers(&dir, TRAILER_REVERT_OF), vec![bad]);
        assert_eq!(trailers(&dir, TRAILER_CHANGE), vec!["chg-42"]);
        assert_eq!(trailers(&dir, TRAILER_INTENT), vec!["intent-1"]);
        assert_eq!(
            trailers(&dir, TRAILER_EVIDENCE),
            vec!["https://guardian.example/changes/chg-42"]
        );
        // No identity in the repository: the fallback one.
        assert_eq!(
            git(&dir, &["log", "-1", "--format=%an <%ae>|%cn <%ce>"]),
            "guardian <guardian@localhost>|guardian <guardian@localhost>"
        );
        assert!(repo.is_clean().unwrap());
        assert_eq!(repo.find_revert("intent-1").unwrap(), Some(commit));
        let revert_cmd = commands
            .iter()
            .find(|c| c.args.iter().any(|a| a == "revert"))
            .expect("the revert command is recorded");
        assert_eq!(revert_cmd.status, Some(0));
        assert!(commands
            .iter()
            .any(|c| c.args.contains(&"commit".to_string())));
    }

    #[test]
    fn reverts_a_range_as_one_commit() {
        let (_tmp, dir) = init();
        commit(&dir, "a.txt", "a1\n", "base a");
        let base = commit(&dir, "b.txt", "b1\n", "base b");
        commit(&dir, "a.txt", "a2\n", "change a");
        let tip = commit(&dir, "c.txt", "new file\n", "add c");
        commit(&dir, "d.txt", "later\n", "unrelated later work");
        let before = git(&dir, &["rev-parse", "HEAD"]);
        let n = count(&dir);

        let repo = Repo::open(&dir).unwrap();
        let spec = format!("{base}..{tip}");
        let outcome = repo.revert(&request(&spec, "intent-range")).unwrap();
        let RevertOutcome::Reverted {
            commit, reverted, ..
        } = outcome
        else {
            panic!("expected Reverted, got {outcome:?}");
        };
        let middle = git(&dir, &["rev-parse", &format!("{tip}^")]);
        assert_eq!(reverted, vec![tip.clone(), middle.clone()]);
        assert_eq!(count(&dir), n + 1);
        assert_eq!(git(&dir, &["rev-parse", "HEAD^"]), before);
        assert_eq!(commit, git(&dir, &["rev-parse", "HEAD"]));
        assert_eq!(read(&dir, "a.txt"), "a1\n");
        assert!(!dir.join("c.txt").exists());
        assert_eq!(read(&dir, "d.txt"), "later\n");
        assert_eq!(trailers(&dir, TRAILER_REVERT_OF), vec![tip.clone(), middle]);
        let subject = git(&dir, &["log", "-1", "--format=%s"]);
        assert_eq!(
            subject,
            format!(
                "Revert {}..{}: 5xx rate rose from 0.2% to 4.1% over 1,200 requests (e-va...",
                &base[..12],
                &tip[..12]
            )
        );
        let excerpt = subject.split_once(": ").unwrap().1;
        assert_eq!(excerpt.chars().count(), SUBJECT_REASON_CHARS);
    }

    #[test]
    fn second_call_with_the_same_intent_does_nothing() {
        let (_tmp, dir) = init();
        commit(&dir, "a", "1\n", "base");
        let bad = commit(&dir, "a", "2\n", "bad");
        let repo = Repo::open(&dir).unwrap();
        let first = repo.revert(&request(&bad, "0b7e-uuid")).unwrap();
        let RevertOutcome::Reverted { commit, .. } = first else {
            panic!("expected Reverted, got {first:?}");
        };
        let n = count(&dir);

        let again = repo.revert(&request(&bad, "0b7e-uuid")).unwrap();
        assert!(
            matches!(&again, RevertOutcome::AlreadyDone { commit: c, .. } if *c == commit),
            "{again:?}"
        );
        assert_eq!(count(&dir), n);
        assert_eq!(git(&dir, &["rev-parse", "HEAD"]), commit);
        // Exact match only: a prefix of the intent is another intent.
        assert_eq!(repo.find_revert("0b7e").unwrap(), None);
        assert_eq!(repo.find_revert("0b7e-uuid").unwrap(), Some(commit));
    }

    #[test]
    fn intent_in_the_reason_text_is_not_a_trailer() {
        let (_tmp, dir) = init();
        commit(&dir, "a", "1\n", "base");
        fs::write(dir.join("a"), "2\n").unwrap();
        git(
            &dir,
            &[
                "commit",
                "-qam",
                "bad\n\nmentions Guardian-Intent: x-1 in prose\n\nmore",
            ],
        );
        let repo = Repo::open(&dir).unwrap();
        assert_eq!(repo.find_revert("x-1").unwrap(), None);
    }

    #[test]
    fn never_reverts_its_own_revert() {
        let (_tmp, dir) = init();
        commit(&dir, "a", "1\n", "base");
        let bad = commit(&dir, "a", "2\n", "bad");
        let repo = Repo::open(&dir).unwrap();
        let RevertOutcome::Reverted { commit, .. } =
            repo.revert(&request(&bad, "intent-a")).unwrap()
        else {
            panic!("expected Reverted");
        };
        let n = count(&dir);
        let err = repo.revert(&request(&commit, "intent-b")).unwrap_err();
        assert!(
            matches!(&err, GitError::RevertOfRevert { commit: c, of } if *c == commit && *of == bad),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("would put back the change it undid"));
        // Nor as part of a range.
        let base = git(&dir, &["rev-parse", "HEAD~2"]);
        let err = repo
            .revert(&request(&format!("{base}..HEAD"), "intent-c"))
            .unwrap_err();
        assert!(matches!(err, GitError::RevertOfRevert { .. }), "{err}");
        assert_eq!(count(&dir), n);
    }

    #[test]
    fn never_reverts_a_person_s_revert_either() {
        let (_tmp, dir) = init();
        commit(&dir, "a", "1\n", "base");
        let bad = commit(&dir, "a", "2\n", "bad");
        // What an on-call engineer does by hand: git's own revert message.
        git(&dir, &["revert", "--no-edit", &bad]);
        let by_hand = git(&dir, &["rev-parse", "HEAD"]);
        let n = count(&dir);
        let repo = Repo::open(&dir).unwrap();
        let err = repo.revert(&request(&by_hand, "intent-a")).unwrap_err();
        assert!(
            matches!(&err, GitError::RevertOfRevert { commit: c, of } if *c == by_hand && *of == bad),
            "{err}"
        );
        assert_eq!(count(&dir), n);
        // A message that only mentions the words is not a revert.
        assert_eq!(reverted_by_git("This reverts commit handling to v1."), None);
    }

    #[test]
    fn refuses_merges_foreign_commits_and_bad_requests() {
        let (_tmp, dir) = init();
        commit(&dir, "a", "1\n", "base");
        git(&dir, &["checkout", "-q", "-b", "side"]);
        let side = commit(&dir, "b", "side\n", "side work");
        git(&dir, &["checkout", "-q", "main"]);
        commit(&dir, "c", "main\n", "main work");
        let repo = Repo::open(&dir).unwrap();
        let err = repo.revert(&request(&side, "intent-side")).unwrap_err();
        assert!(matches!(err, GitError::NotOnBranch { .. }), "{err}");

        git(
            &dir,
            &["merge", "-q", "--no-ff", "-m", "merge side", "side"],
        );
        let err = repo.revert(&request("HEAD", "intent-merge")).unwrap_err();
        assert!(matches!(err, GitError::MergeCommit { .. }), "{err}");

        for commits in ["", "--all", "HEAD...HEAD~1", "HEAD..", "a b"] {
            let err = repo.revert(&request(commits, "intent-x")).unwrap_err();
            assert!(
                matches!(err, GitError::InvalidRequest(_)),
                "{commits:?}: {err}"
            );
        }
        let mut req = request("HEAD~1", "bad intent\nGuardian-Intent: forged");
        assert!(matches!(
            repo.revert(&req),
            Err(GitError::InvalidRequest(_))
        ));
        req.intent = "ok-intent".to_string();
        req.change_id = "chg\nGuardian-Revert-Of: x".to_string();
        assert!(matches!(
            repo.revert(&req),
            Err(GitError::InvalidRequest(_))
        ));
        let err = repo
            .revert(&request("no-such-rev", "intent-y"))
            .unwrap_err();
        assert!(err.to_string().contains("no-such-rev"), "{err}");
        let empty = repo.revert(&request("HEAD..HEAD", "intent-z")).unwrap_err();
        assert!(matches!(empty, GitError::InvalidRequest(_)), "{empty}");
    }

    fn assert_no_revert_state(dir: &Path) {
        assert!(!dir.join(".git/sequencer").exists());
        assert!(!dir.join(".git/REVERT_HEAD").exists());
    }

    #[test]
    fn conflicting_revert_is_aborted_and_the_tree_left_as_it_was() {
        let (_tmp, dir) = init();
        commit(&dir, "a.txt", "line\n", "base");
        let bad = commit(&dir, "a.txt", "bad\n", "bad");
        commit(&dir, "a.txt", "worse\n", "later fix on the same line");
        fs::write(dir.join("notes.txt"), "untracked\n").unwrap();
        let head = git(&dir, &["rev-parse", "HEAD"]);
        let status = git(&dir, &["status", "--porcelain"]);

        let repo = Repo::open(&dir).unwrap();
        let outcome = repo.revert(&request(&bad, "intent-conflict")).unwrap();
        let RevertOutcome::Conflict {
            files,
            tree_restored,
            commands,
        } = outcome
        else {
            panic!("expected Conflict, got {outcome:?}");
        };
        assert_eq!(files, vec!["a.txt"]);
        assert!(tree_restored);
        assert!(commands.iter().any(|c| c.args == ["revert", "--abort"]));
        assert_eq!(git(&dir, &["rev-parse", "HEAD"]), head);
        assert_eq!(git(&dir, &["status", "--porcelain"]), status);
        assert_eq!(read(&dir, "a.txt"), "worse\n");
        assert_eq!(read(&dir, "notes.txt"), "untracked\n");
        assert_no_revert_state(&dir);
    }

    #[test]
    fn conflict_in_an_older_commit_of_a_range_undoes_the_newer_ones_too() {
        let (_tmp, dir) = init();
        commit(&dir, "a.txt", "one\n", "base a");
        let base = commit(&dir, "b.txt", "x\n", "base b");
        commit(&dir, "a.txt", "two\n", "c1 touches a");
        let tip = commit(&dir, "b.txt", "y\n", "c2 touches b");
        commit(&dir, "a.txt", "three\n", "c3 touches a again");
        let head = git(&dir, &["rev-parse", "HEAD"]);

        let repo = Repo::open(&dir).unwrap();
        let outcome = repo
            .revert(&request(&format!("{base}..{tip}"), "intent-range-conflict"))
            .unwrap();
        assert!(
            matches!(&outcome, RevertOutcome::Conflict { files, tree_restored: true, .. } if files == &["a.txt"]),
            "{outcome:?}"
        );
        assert_eq!(git(&dir, &["rev-parse", "HEAD"]), head);
        assert_eq!(git(&dir, &["status", "--porcelain"]), "");
        assert_eq!(read(&dir, "a.txt"), "three\n");
        assert_eq!(read(&dir, "b.txt"), "y\n");
        assert_no_revert_state(&dir);
    }
}
