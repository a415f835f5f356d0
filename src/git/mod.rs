//! The guardian's git adapter: revert a bad deploy in a repository as one
//! commit, exactly once, and push it.
//!
//! Everything shells out to the `git` binary ([`std::process::Command`]) and
//! is synchronous: the daemon calls it from `spawn_blocking`. A [`Repo`]
//! assumes it is the only writer of its repository while a call runs (the
//! daemon serializes actions per service).
//!
//! # Hardening: nothing in the repository may run code as the guardian
//!
//! Every invocation gets:
//!
//! * `--no-pager` and `-c` overrides that win over the repository's own
//!   config: `core.hooksPath=/dev/null` (no hooks, including
//!   `prepare-commit-msg`, `post-commit` and `reference-transaction`, which
//!   `--no-verify` alone does not stop), `core.fsmonitor=false`,
//!   `core.pager=cat`, `core.editor=true`, `sequence.editor=true`,
//!   `commit.gpgSign=false`, `log.showSignature=false`,
//!   `protocol.ext.allow=never`, `submodule.recurse=false`,
//!   `maintenance.auto=false`/`gc.auto=0` (no detached background gc holding
//!   our pipes), `color.ui=false` and a pinned `trailer.separators`;
//! * `--no-verify` on commit and push;
//! * environment `GIT_CONFIG_NOSYSTEM=1`, `GIT_CONFIG_GLOBAL=/dev/null`,
//!   `GIT_TERMINAL_PROMPT=0`, `GIT_OPTIONAL_LOCKS=0`, `GIT_EDITOR=true`,
//!   `GIT_SEQUENCE_EDITOR=true`, `GIT_PAGER=cat`, `LC_ALL=C`, and every other
//!   inherited `GIT_*` variable removed (a stray `GIT_DIR`, `GIT_INDEX_FILE`
//!   or `GIT_CONFIG_PARAMETERS` would redirect or reconfigure git) except
//!   `GIT_SSH`, `GIT_SSH_COMMAND`, `GIT_SSH_VARIANT`, `GIT_ASKPASS`,
//!   `GIT_SSL_CAINFO` and `GIT_SSL_CAPATH`, which the operator may set on the
//!   daemon to make push work;
//! * stdin from `/dev/null` (or our own message), its own process group, and a
//!   timeout after which the whole group is terminated (`SIGTERM`, then `SIGKILL`),
//!   by the crate's one process runner ([`crate::process`]).
//!
//! **System and global config are ignored on purpose** (reliability.md §3.4
//! (c)): the guardian's behaviour then depends only on this module and on the
//! repository, not on whatever `/etc/gitconfig` or `~/.gitconfig` hold. The
//! operator's own settings (identity, `credential.helper`, `safe.directory`,
//! `core.sshCommand`, LFS filters, ...) go through [`RepoOptions::config`],
//! which is passed as `-c` (git's *protected* command-line scope, the only
//! place besides system/global config where `safe.directory` is honoured).
//! Never set `safe.directory=*`. Push over ssh keeps working: ssh reads
//! `~/.ssh/config` itself, and `GIT_SSH_COMMAND` is passed through.
//!
//! **Per-key overrides cannot close every hole.** Git runs commands that the
//! repository's own config declares under names of its choosing: a
//! `[merge "x"] driver = ...` selected by `.gitattributes` runs during a
//! conflicting revert despite all the overrides above (measured with git
//! 2.47.3, reliability.md §3.4), and so do `filter.*.smudge/clean/process`,
//! `diff.*.textconv`, `credential.helper`, `core.sshCommand`,
//! `remote.*.receivepack` and others. As a second line of defence this module
//! lists the repository-scoped config before every operation and **refuses**
//! ([`GitError::UnsafeConfig`]) when it declares any of them; but that check
//! races with a writer and cannot know every future knob. The structural fix
//! is the operator's job: **the agent must not be able to write the
//! repository (its `.git/` directory and config) that the guardian operates
//! on** — preferably the guardian works in its own clone and receives changes
//! as data (§3.4 (a)), or `.git/` belongs to a user the agent cannot write as
//! (§3.4 (b)). Likewise, pushing to a remote that is a *local path* runs that
//! repository's server-side hooks (`pre-receive`, `post-receive`) as the
//! guardian: such a remote must be equally out of the agent's reach.
//!
//! # Layout
//!
//! `command.rs` runs one hardened git command (through [`crate::process`]) and refuses
//! repositories whose config runs commands; `read.rs` reads what the repository is (HEAD,
//! revisions, intents, status); `commit.rs` holds what every commit-making operation shares
//! (the checks before, the identity, putting the tree back); `revert.rs` reverts a deploy;
//! `apply.rs` commits a judged proposal; `scratch.rs` applies a proposal where nothing is
//! deployed and keeps the attributes guard.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod apply;
mod command;
mod commit;
mod lease;
mod read;
mod revert;
mod scratch;
#[cfg(test)]
mod testing;

pub use apply::{ApplyOutcome, ApplyRequest};
pub use command::CommandRecord;
pub use lease::{Lease, RemoteRevert};
pub use revert::{RevertOutcome, RevertRequest};
pub use scratch::{inside, Scratch, MAX_JUDGED_BYTES};

use command::{clip, first_nonempty, Session, ERROR_OUTPUT_LIMIT, RECORD_OUTPUT_LIMIT};
use commit::validate_intent;

/// Timeout for every local git command (status, revert, commit, ...).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
/// Timeout for `git push`.
pub const DEFAULT_PUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// A deploy that spans more commits than this is not reverted automatically.
pub const MAX_REVERT_COMMITS: usize = 1000;
/// Trailer naming each commit a guardian revert undoes.
pub const TRAILER_REVERT_OF: &str = "Guardian-Revert-Of";
/// Trailer naming the change (the guardian's id) that was reverted.
pub const TRAILER_CHANGE: &str = "Guardian-Change";
/// Trailer carrying the write-ahead intent id, for exactly-once reverts.
pub const TRAILER_INTENT: &str = "Guardian-Intent";
/// Trailer linking to the evidence behind the decision.
pub const TRAILER_EVIDENCE: &str = "Guardian-Evidence";

/// How a refusal to revert a revert reads, in the error and for the views that must not advise
/// reverting it by hand either.
pub const REVERT_OF_REVERT: &str = "it is itself a revert";

/// Errors of the git adapter. Messages name the repository and, for a failed
/// command, the command line and git's (trimmed) stderr.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{} is not a usable git work tree: {detail}", .path.display())]
    NotARepo { path: PathBuf, detail: String },

    #[error("could not run `{cmd}` in {}: {source}", .path.display())]
    Spawn {
        cmd: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("`{cmd}` failed in {} ({}): {stderr}", .path.display(), exit_text(.status))]
    Command {
        cmd: String,
        path: PathBuf,
        /// Exit code; `None` when git was killed by a signal.
        status: Option<i32>,
        stderr: String,
    },

    #[error("`{cmd}` timed out after {}s in {} and was killed", .after.as_secs(), .path.display())]
    Timeout {
        cmd: String,
        path: PathBuf,
        after: Duration,
    },

    #[error("unexpected output from `{cmd}` in {}: {detail}", .path.display())]
    UnexpectedOutput {
        cmd: String,
        path: PathBuf,
        detail: String,
    },

    #[error(
        "refusing to run git in {}: the repository's own config sets {}, which git would run \
         as the guardian; move such settings to the guardian's configuration (RepoOptions::config) \
         and make the repository unwritable by the agent",
        .path.display(),
        .keys.join(", ")
    )]
    UnsafeConfig { path: PathBuf, keys: Vec<String> },

    #[error("invalid revert request: {0}")]
    InvalidRequest(String),

    #[error(
        "refusing to revert in {}: tracked files have uncommitted changes ({}); \
         guardian never reverts on top of uncommitted work",
        .path.display(),
        summarize(.files)
    )]
    DirtyTree { path: PathBuf, files: Vec<String> },

    #[error("refusing to revert in {}: a {operation} is in progress", .path.display())]
    OperationInProgress { path: PathBuf, operation: String },

    #[error(
        "refusing to revert {commit}: {REVERT_OF_REVERT} (of {of}), and reverting it would \
         put back the change it undid; a person decides that"
    )]
    RevertOfRevert { commit: String, of: String },

    #[error("refusing to revert merge commit {commit}: reverting a merge needs a human to pick the mainline")]
    MergeCommit { commit: String },

    #[error("refusing to revert {commit}: it is not on the current branch of {} (not an ancestor of HEAD)", .path.display())]
    NotOnBranch { path: PathBuf, commit: String },

    /// The revert was attempted and abandoned. `tree_restored` says whether
    /// HEAD, index and work tree were verified to be as before.
    #[error(
        "revert of {} in {} abandoned: {reason} (tree restored: {tree_restored})",
        .commits.join(" "),
        .path.display()
    )]
    RevertFailed {
        path: PathBuf,
        commits: Vec<String>,
        reason: String,
        tree_restored: bool,
        commands: Vec<CommandRecord>,
    },
}

fn exit_text(status: &Option<i32>) -> String {
    match status {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_string(),
    }
}

fn summarize(items: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut out = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        let _ = write!(out, " and {} more", items.len() - SHOWN);
    }
    out
}

/// How to run git for a [`Repo`].
#[derive(Debug, Clone)]
pub struct RepoOptions {
    /// The git binary; looked up on `PATH` unless it contains a `/`.
    pub git: PathBuf,
    /// Operator settings passed as `-c key=value` on every command (the
    /// protected command-line scope): identity, `safe.directory`,
    /// `credential.helper`, `core.sshCommand`, ... They cannot override the
    /// hardening options.
    pub config: Vec<(String, String)>,
    pub command_timeout: Duration,
    pub push_timeout: Duration,
}

impl Default for RepoOptions {
    fn default() -> Self {
        RepoOptions {
            git: PathBuf::from("git"),
            config: Vec::new(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            push_timeout: DEFAULT_PUSH_TIMEOUT,
        }
    }
}

/// A git work tree the guardian may revert in.
#[derive(Debug, Clone)]
pub struct Repo {
    path: PathBuf,
    git: PathBuf,
    config: Vec<(String, String)>,
    command_timeout: Duration,
    push_timeout: Duration,
}

impl Repo {
    /// Opens the work tree at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Repo, GitError> {
        Repo::open_with(path, RepoOptions::default())
    }

    /// Opens the work tree at `path`, which must be its top level, and checks
    /// that the repository's config declares nothing git would execute.
    pub fn open_with(path: impl AsRef<Path>, options: RepoOptions) -> Result<Repo, GitError> {
        let given = path.as_ref();
        let canonical = given.canonicalize().map_err(|e| GitError::NotARepo {
            path: given.to_path_buf(),
            detail: e.to_string(),
        })?;
        if !canonical.is_dir() {
            return Err(GitError::NotARepo {
                path: given.to_path_buf(),
                detail: "not a directory".to_string(),
            });
        }
        for (key, _) in &options.config {
            if key.is_empty() || key.contains('=') || key.chars().any(char::is_control) {
                return Err(GitError::InvalidRequest(format!(
                    "bad git config key {key:?} in the guardian's options"
                )));
            }
        }
        let repo = Repo {
            path: canonical,
            git: options.git,
            config: options.config,
            command_timeout: options.command_timeout,
            push_timeout: options.push_timeout,
        };
        let mut s = Session::new(&repo);
        let raw = s.run(["rev-parse", "--show-toplevel"], None, repo.command_timeout)?;
        if !raw.success() {
            return Err(GitError::NotARepo {
                path: given.to_path_buf(),
                detail: clip(first_nonempty(&raw.stderr, &raw.stdout), ERROR_OUTPUT_LIMIT),
            });
        }
        let top = raw.stdout.trim_end_matches(['\n', '\r']);
        let top_canonical = Path::new(top)
            .canonicalize()
            .map_err(|e| GitError::NotARepo {
                path: given.to_path_buf(),
                detail: format!("git reports work tree {top:?}, which cannot be resolved: {e}"),
            })?;
        if top_canonical != repo.path {
            return Err(GitError::NotARepo {
                path: given.to_path_buf(),
                detail: format!(
                    "it is inside the work tree {} but is not its top level",
                    top_canonical.display()
                ),
            });
        }
        repo.check_config(&mut s)?;
        Ok(repo)
    }

    /// The work tree's top level (canonical).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The full SHA of HEAD.
    pub fn head(&self) -> Result<String, GitError> {
        Session::new(self).head()
    }

    /// Whether no tracked file differs from HEAD (index or work tree).
    /// Untracked files do not count.
    pub fn is_clean(&self) -> Result<bool, GitError> {
        let mut s = Session::new(self);
        self.check_config(&mut s)?;
        Ok(self.tracked_changes(&mut s)?.is_empty())
    }

    /// The newest commit on the current branch whose trailer block has
    /// exactly `Guardian-Intent: <intent>`, if any.
    pub fn find_revert(&self, intent: &str) -> Result<Option<String>, GitError> {
        validate_intent(intent).map_err(GitError::InvalidRequest)?;
        Session::new(self).find_revert(intent)
    }

    /// `git push <remote> HEAD:refs/heads/<branch>` (never forced), killed
    /// after the push timeout. Returns the command's record.
    pub fn push(&self, remote: &str, branch: &str) -> Result<CommandRecord, GitError> {
        validate_word("remote", remote).map_err(GitError::InvalidRequest)?;
        validate_word("branch", branch).map_err(GitError::InvalidRequest)?;
        let mut s = Session::new(self);
        let refname = format!("refs/heads/{branch}");
        let check = s.run(
            ["check-ref-format", refname.as_str()],
            None,
            self.command_timeout,
        )?;
        if !check.success() {
            return Err(GitError::InvalidRequest(format!(
                "{branch:?} is not a valid branch name"
            )));
        }
        self.check_config(&mut s)?;
        let refspec = format!("HEAD:{refname}");
        let args = ["push", "--no-verify", "--", remote, refspec.as_str()];
        let raw = s.run(args, None, self.push_timeout)?;
        if !raw.success() {
            return Err(s.failed(args, &raw));
        }
        Ok(s.log.pop().unwrap_or_else(|| CommandRecord {
            args: args.iter().map(|a| a.to_string()).collect(),
            status: raw.status,
            stdout: clip(&raw.stdout, RECORD_OUTPUT_LIMIT),
            stderr: clip(&raw.stderr, RECORD_OUTPUT_LIMIT),
        }))
    }
}

impl Repo {
    /// The full id of the commit `rev` names, or `None` when the repository has none (or, for
    /// an abbreviated id, more than one) by that name. `rev` is one revision, never an option.
    pub fn find_commit(&self, rev: &str) -> Result<Option<String>, GitError> {
        let mut s = Session::new(self);
        let spec = format!("{rev}^{{commit}}");
        let args = [
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            spec.as_str(),
        ];
        let raw = s.run(args, None, self.command_timeout)?;
        let sha = raw.stdout.trim();
        Ok((raw.success() && read::is_full_sha(sha)).then(|| sha.to_owned()))
    }

    /// `git fetch --no-tags <remote>`: the remote's objects and its remote-tracking branches,
    /// never the work tree, the index or a local branch; killed after `timeout`.
    pub fn fetch(&self, remote: &str, timeout: Duration) -> Result<CommandRecord, GitError> {
        validate_word("remote", remote).map_err(GitError::InvalidRequest)?;
        let mut s = Session::new(self);
        self.check_config(&mut s)?;
        let args = [
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-recurse-submodules",
            "--",
            remote,
        ];
        let raw = s.run(args, None, timeout)?;
        if !raw.success() {
            return Err(s.failed(args, &raw));
        }
        Ok(s.log.pop().unwrap_or_else(|| CommandRecord {
            args: args.iter().map(|a| a.to_string()).collect(),
            status: raw.status,
            stdout: clip(&raw.stdout, RECORD_OUTPUT_LIMIT),
            stderr: clip(&raw.stderr, RECORD_OUTPUT_LIMIT),
        }))
    }
}

/// A remote or branch name passed as one argument.
pub(super) fn validate_word(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty()
        || value.starts_with('-')
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("{what} {value:?} is not a usable name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::process::tests::assert_gone;
    use std::fs;
    use std::time::Instant;
    use tempfile::TempDir;

    #[test]
    fn pushes_to_a_local_bare_remote() {
        let (tmp, dir) = init();
        commit(&dir, "a", "1\n", "base");
        let bad = commit(&dir, "a", "2\n", "bad");
        let remote = tmp.path().join("remote.git");
        git(
            tmp.path(),
            &["init", "-q", "--bare", "-b", "main", "remote.git"],
        );
        git(
            &dir,
            &["remote", "add", "origin", &remote.display().to_string()],
        );
        git(&dir, &["push", "-q", "origin", "main"]);

        let repo = Repo::open(&dir).unwrap();
        repo.revert(&request(&bad, "intent-push")).unwrap();
        let record = repo.push("origin", "main").unwrap();
        assert_eq!(record.status, Some(0));
        assert_eq!(
            git(&remote, &["rev-parse", "refs/heads/main"]),
            git(&dir, &["rev-parse", "HEAD"])
        );
        assert!(matches!(
            repo.push("origin", "-f"),
            Err(GitError::InvalidRequest(_))
        ));
        assert!(matches!(
            repo.push("origin", "bad..name"),
            Err(GitError::InvalidRequest(_))
        ));
    }

    #[test]
    fn push_is_killed_after_its_timeout() {
        let (tmp, dir) = init();
        commit(&dir, "a", "1\n", "base");
        let remote = tmp.path().join("remote.git");
        git(
            tmp.path(),
            &["init", "-q", "--bare", "-b", "main", "remote.git"],
        );
        git(
            &dir,
            &["remote", "add", "origin", &remote.display().to_string()],
        );
        // The operator's own (command-line) config may set this; the remote
        // side hangs, in a grandchild that holds git's stderr and has a child
        // of its own. Both write their pids down.
        let pids = tmp.path().join("pids");
        let hang = format!(
            "echo $$ >> '{0}'; sleep 30 & echo $! >> '{0}'; wait; git-receive-pack",
            pids.display()
        );
        let options = RepoOptions {
            config: vec![("remote.origin.receivepack".to_string(), hang)],
            push_timeout: Duration::from_secs(1),
            ..RepoOptions::default()
        };
        let repo = Repo::open_with(&dir, options).unwrap();
        let started = Instant::now();
        let err = repo.push("origin", "main").unwrap_err();
        assert!(matches!(err, GitError::Timeout { .. }), "{err}");
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(1), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        // git's whole group went at its timeout, not just git: the remote side
        // and its child too.
        let pids: Vec<u32> = fs::read_to_string(&pids)
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        assert_eq!(pids.len(), 2, "{pids:?}");
        assert_gone(&pids);
        assert!(err.to_string().contains("git push"), "{err}");
    }

    #[test]
    fn open_names_the_path_when_it_is_not_a_work_tree() {
        let tmp = TempDir::new().unwrap();
        let err = Repo::open(tmp.path()).unwrap_err();
        assert!(matches!(err, GitError::NotARepo { .. }), "{err}");
        assert!(
            err.to_string().contains(&tmp.path().display().to_string()),
            "{err}"
        );

        let (_tmp, dir) = init();
        commit(&dir, "a", "1\n", "base");
        fs::create_dir(dir.join("sub")).unwrap();
        let err = Repo::open(dir.join("sub")).unwrap_err();
        assert!(err.to_string().contains("not its top level"), "{err}");

        let missing = tmp.path().join("missing");
        let err = Repo::open(&missing).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn a_commit_is_found_by_its_id_and_a_missing_one_is_none_until_fetched() {
        let (tmp, dir) = init();
        let base = commit(&dir, "a", "1\n", "base");
        let repo = Repo::open(&dir).unwrap();
        assert_eq!(repo.find_commit(&base).unwrap(), Some(base.clone()));
        assert_eq!(repo.find_commit(&base[..7]).unwrap(), Some(base.clone()));
        assert_eq!(repo.find_commit("deadbeef").unwrap(), None);
        assert_eq!(repo.find_commit("--all").unwrap(), None);

        // A commit made elsewhere is found once fetched from the remote that has it.
        let upstream = tmp.path().join("upstream");
        git(
            tmp.path(),
            &["clone", "-q", &dir.display().to_string(), "upstream"],
        );
        let later = commit(&upstream, "a", "2\n", "later");
        git(
            &dir,
            &["remote", "add", "origin", &upstream.display().to_string()],
        );
        assert_eq!(repo.find_commit(&later).unwrap(), None);
        repo.fetch("origin", Duration::from_secs(30)).unwrap();
        assert_eq!(repo.find_commit(&later).unwrap(), Some(later.clone()));
        // Fetched, not checked out: the work tree is as it was.
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "1\n");
        let err = repo.fetch("nowhere", Duration::from_secs(30)).unwrap_err();
        assert!(err.to_string().contains("git fetch"), "{err}");
    }
}
