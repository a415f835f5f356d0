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
//!   timeout after which the whole group is killed.
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

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

mod scratch;
pub use scratch::{inside, Scratch, MAX_JUDGED_BYTES};

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

const FALLBACK_NAME: &str = "guardian";
const FALLBACK_EMAIL: &str = "guardian@localhost";

/// Longest reason excerpt put in a revert subject.
const SUBJECT_REASON_CHARS: usize = 60;
/// Each stream kept in a [`CommandRecord`] is cut at this many bytes.
const RECORD_OUTPUT_LIMIT: usize = 64 * 1024;
/// git's output quoted in an error message is cut at this many characters.
const ERROR_OUTPUT_LIMIT: usize = 2000;
/// Output beyond this is read and discarded (protects the daemon's memory).
const CAPTURE_LIMIT: usize = 64 * 1024 * 1024;
/// After git exits, how long to wait for its pipes to close. A grandchild
/// (an ssh ControlMaster, say) may hold them open indefinitely.
const PIPE_DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Global options put before every subcommand. They come after the
/// operator's `-c` options so they win over them too.
const HARDENING: &[&str] = &[
    "--no-pager",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.pager=cat",
    "-c",
    "core.editor=true",
    "-c",
    "sequence.editor=true",
    "-c",
    "commit.gpgSign=false",
    "-c",
    "tag.gpgSign=false",
    "-c",
    "push.gpgSign=false",
    "-c",
    "log.showSignature=false",
    "-c",
    "protocol.ext.allow=never",
    "-c",
    "submodule.recurse=false",
    "-c",
    "push.recurseSubmodules=no",
    "-c",
    "push.followTags=false",
    "-c",
    "maintenance.auto=false",
    "-c",
    "gc.auto=0",
    "-c",
    "color.ui=false",
    "-c",
    "core.autocrlf=false",
    "-c",
    "i18n.logOutputEncoding=UTF-8",
    "-c",
    "trailer.separators=:",
];

/// Inherited `GIT_*` variables that survive (all others are removed).
const ENV_KEEP: &[&str] = &[
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_SSH_VARIANT",
    "GIT_ASKPASS",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
];

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
        "refusing to revert {commit}: it is itself a guardian revert ({TRAILER_REVERT_OF}: {of}); \
         guardian never reverts its own revert"
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

/// One git command and its outcome, for the post-mortem ("each command and
/// its outcome"). `args` are the arguments after the constant hardening
/// options and the operator's `-c` options; the command is `git <args>`.
/// `status` is `None` when git was killed (timeout or signal). Each stream is
/// cut at 64 KiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub args: Vec<String>,
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CommandRecord {
    /// `git <args>`, quoted for reading.
    pub fn command_line(&self) -> String {
        command_line(&self.args)
    }
}

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

/// Output of one finished git process.
struct Raw {
    status: Option<i32>,
    stdout: String,
    stderr: String,
    /// stdout as git wrote it (file contents are bytes), and whether it was cut at
    /// `CAPTURE_LIMIT`.
    stdout_bytes: Vec<u8>,
    truncated: bool,
}

impl Raw {
    fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Runs commands for one public call and keeps their records.
struct Session<'r> {
    repo: &'r Repo,
    log: Vec<CommandRecord>,
    /// A scratch index for the commands run while it is set (`GIT_INDEX_FILE`).
    index: Option<PathBuf>,
}

/// Where git keeps the state of an operation in progress.
struct StatePaths {
    revert_head: PathBuf,
    sequencer: PathBuf,
    others: Vec<(&'static str, PathBuf)>,
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

    fn tracked_changes(&self, s: &mut Session) -> Result<Vec<String>, GitError> {
        let out = s.ok(
            [
                "status",
                "--porcelain=v1",
                "-z",
                "--untracked-files=no",
                "--ignore-submodules=none",
            ],
            None,
        )?;
        Ok(parse_porcelain_z(&out)
            .into_iter()
            .map(|(_, path)| path)
            .collect())
    }

    /// Refuses a repository whose own config (local or worktree scope,
    /// includes followed) declares a command git could run for us.
    fn check_config(&self, s: &mut Session) -> Result<(), GitError> {
        let out = s.ok(["config", "--list", "--show-scope", "-z"], None)?;
        let mut keys: Vec<String> = Vec::new();
        let mut fields = out.split('\0');
        while let Some(scope) = fields.next() {
            let Some(entry) = fields.next() else { break };
            if scope == "command" {
                continue;
            }
            let key = entry.split('\n').next().unwrap_or_default();
            if runs_command(key) && !keys.iter().any(|k| k == key) {
                keys.push(key.to_string());
            }
        }
        if keys.is_empty() {
            Ok(())
        } else {
            Err(GitError::UnsafeConfig {
                path: self.path.clone(),
                keys,
            })
        }
    }

    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(&self.git);
        cmd.current_dir(&self.path);
        for (key, value) in &self.config {
            cmd.arg("-c").arg(format!("{key}={value}"));
        }
        cmd.args(HARDENING);
        cmd.args(args);
        for (key, _) in std::env::vars_os() {
            if let Some(name) = key.to_str() {
                if name.starts_with("GIT_") && !ENV_KEEP.contains(&name) {
                    cmd.env_remove(&key);
                }
            }
        }
        cmd.env_remove("LANGUAGE")
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("GIT_EDITOR", "true")
            .env("GIT_SEQUENCE_EDITOR", "true")
            .env("GIT_PAGER", "cat");
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        cmd
    }

    /// Runs git to completion or until `timeout`, capturing both streams.
    /// The flag is true when it timed out (and its process group was killed).
    fn exec(
        &self,
        args: &[String],
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        index: Option<&Path>,
    ) -> std::io::Result<(Raw, bool)> {
        let mut cmd = self.command(args);
        if let Some(index) = index {
            cmd.env("GIT_INDEX_FILE", index);
        }
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let stdout_rx = child.stdout.take().map(capture);
        let stderr_rx = child.stderr.take().map(capture);
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A thread, so a large message cannot deadlock against git's
            // output; dropping the pipe closes git's stdin.
            thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }

        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        let (status, timed_out) = loop {
            match child.try_wait() {
                Ok(Some(status)) => break (status.code(), false),
                Ok(None) => {}
                Err(e) => {
                    kill_process_group(&mut child);
                    let _ = child.wait();
                    return Err(e);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                kill_process_group(&mut child);
                let _ = child.wait();
                break (None, true);
            }
            thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(50));
        };
        let (stdout_bytes, truncated) = collect(stdout_rx);
        let (stderr, _) = collect(stderr_rx);
        Ok((
            Raw {
                status,
                stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
                stdout_bytes,
                truncated,
            },
            timed_out,
        ))
    }
}

/// Kills git and everything it started (it leads its own process group).
fn kill_process_group(child: &mut Child) {
    #[cfg(unix)]
    {
        // The child is not reaped yet, so its pid (= the group id) cannot
        // have been reused. No libc here, so ask kill(1).
        let group = format!("-{}", child.id());
        for kill in ["/bin/kill", "/usr/bin/kill", "kill"] {
            let status = Command::new(kill)
                .args(["-KILL", "--", group.as_str()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if status.is_ok() {
                break;
            }
        }
    }
    let _ = child.kill();
}

/// Reads a pipe to its end on a thread; the bytes kept (at most `CAPTURE_LIMIT`) and whether
/// more were discarded.
fn capture<R: Read + Send + 'static>(mut pipe: R) -> mpsc::Receiver<(Vec<u8>, bool)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut cut = false;
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = CAPTURE_LIMIT.saturating_sub(kept.len());
                    cut |= n > room;
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send((kept, cut));
    });
    rx
}

fn collect(rx: Option<mpsc::Receiver<(Vec<u8>, bool)>>) -> (Vec<u8>, bool) {
    match rx.map(|rx| rx.recv_timeout(PIPE_DRAIN_GRACE)) {
        Some(Ok(captured)) => captured,
        Some(Err(_)) => (
            b"[output not collected: the pipe was still held open]".to_vec(),
            true,
        ),
        None => (Vec::new(), false),
    }
}

/// Where a commit-making operation (revert, apply) stands before it touches anything.
enum Prepared {
    /// A commit carrying the intent is already on the branch.
    Done(String),
    /// Clean and idle: go ahead from `head`.
    Ready { state: StatePaths, head: String },
}

impl Repo {
    /// The checks every commit-making operation starts with: the repository's config may not
    /// run commands, the intent may already be done, and nothing may be in progress or
    /// uncommitted (refused without touching anything).
    fn prepare(&self, s: &mut Session, intent: &str) -> Result<Prepared, GitError> {
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

impl<'r> Session<'r> {
    fn new(repo: &'r Repo) -> Self {
        Session {
            repo,
            log: Vec::new(),
            index: None,
        }
    }

    /// Runs a command and records it. Errors only when git cannot be run or
    /// times out; a non-zero exit is returned in [`Raw`].
    fn run<I, S>(
        &mut self,
        args: I,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Raw, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_string()).collect();
        match self.repo.exec(&args, stdin, timeout, self.index.as_deref()) {
            Ok((raw, timed_out)) => {
                self.log.push(CommandRecord {
                    args: args.clone(),
                    status: raw.status,
                    stdout: clip(&raw.stdout, RECORD_OUTPUT_LIMIT),
                    stderr: clip(&raw.stderr, RECORD_OUTPUT_LIMIT),
                });
                if timed_out {
                    return Err(GitError::Timeout {
                        cmd: command_line(&args),
                        path: self.repo.path.clone(),
                        after: timeout,
                    });
                }
                Ok(raw)
            }
            Err(source) => {
                self.log.push(CommandRecord {
                    args: args.clone(),
                    status: None,
                    stdout: String::new(),
                    stderr: format!("could not run git: {source}"),
                });
                Err(GitError::Spawn {
                    cmd: command_line(&args),
                    path: self.repo.path.clone(),
                    source,
                })
            }
        }
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok<I, S>(&mut self, args: I, stdin: Option<Vec<u8>>) -> Result<String, GitError>
    where
        I: IntoIterator<Item = S> + Clone,
        S: AsRef<str>,
    {
        let raw = self.run(args.clone(), stdin, self.repo.command_timeout)?;
        if raw.success() {
            Ok(raw.stdout)
        } else {
            Err(self.failed(args, &raw))
        }
    }

    fn failed<I, S>(&self, args: I, raw: &Raw) -> GitError
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        GitError::Command {
            cmd: command_line(args),
            path: self.repo.path.clone(),
            status: raw.status,
            stderr: clip(first_nonempty(&raw.stderr, &raw.stdout), ERROR_OUTPUT_LIMIT),
        }
    }

    fn unexpected<I, S>(&self, args: I, detail: String) -> GitError
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        GitError::UnexpectedOutput {
            cmd: command_line(args),
            path: self.repo.path.clone(),
            detail,
        }
    }

    fn head(&mut self) -> Result<String, GitError> {
        let args = ["rev-parse", "--verify", "HEAD^{commit}"];
        let out = self.ok(args, None)?;
        let sha = out.trim();
        if is_full_sha(sha) {
            Ok(sha.to_string())
        } else {
            Err(self.unexpected(args, format!("not a commit id: {:?}", clip(sha, 100))))
        }
    }

    /// Resolves one revision to a full commit SHA.
    fn resolve(&mut self, rev: &str) -> Result<String, GitError> {
        let spec = format!("{rev}^{{commit}}");
        let args = ["rev-parse", "--verify", "--end-of-options", spec.as_str()];
        let out = self.ok(args, None)?;
        let sha = out.trim();
        if is_full_sha(sha) {
            Ok(sha.to_string())
        } else {
            Err(self.unexpected(args, format!("not a commit id: {:?}", clip(sha, 100))))
        }
    }

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
            "--format=%H%x1f%P%x1f%(trailers:key={TRAILER_REVERT_OF},valueonly,separator=%x20)%x1f%s"
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
            let mut fields = record.splitn(4, '\u{1f}');
            let sha = fields.next().unwrap_or_default().trim().to_string();
            let parents = fields.next().unwrap_or_default().split_whitespace().count();
            let revert_of = fields.next().unwrap_or_default().trim().to_string();
            let subject = fields.next().unwrap_or_default().trim().to_string();
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

    fn find_revert(&mut self, intent: &str) -> Result<Option<String>, GitError> {
        let grep = format!("--grep={TRAILER_INTENT}: {intent}");
        let format =
            format!("--format=%H%x1f%(trailers:key={TRAILER_INTENT},valueonly,separator=%x1f)");
        let args = [
            "log",
            "-z",
            "--fixed-strings",
            grep.as_str(),
            format.as_str(),
            "HEAD",
            "--",
        ];
        let out = self.ok(args, None)?;
        for record in out.split('\0') {
            let mut fields = record.split('\u{1f}');
            let sha = fields.next().unwrap_or_default().trim();
            // --grep matches substrings anywhere in the message; only an
            // exact value in the trailer block counts.
            if is_full_sha(sha) && fields.any(|value| value.trim() == intent) {
                return Ok(Some(sha.to_string()));
            }
        }
        Ok(None)
    }

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
    fn identity_args(&mut self) -> Result<Vec<String>, GitError> {
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

    /// Puts HEAD, index and work tree back to `original_head` after a failed
    /// attempt, and says whether that was verified. Untracked files are
    /// never touched (no `git clean`).
    fn restore(&mut self, original_head: &str, state: &StatePaths) -> bool {
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

/// Whether a repository config key names a command git may run.
fn runs_command(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    let (section, rest) = key.split_once('.').unwrap_or((key.as_str(), ""));
    let (subsection, name) = match rest.rsplit_once('.') {
        Some((sub, name)) => (Some(sub), name),
        None => (None, rest),
    };
    matches!(
        (section, subsection.is_some(), name),
        ("merge", true, "driver")
            | ("filter", true, "clean" | "smudge" | "process")
            | ("diff", true, "textconv" | "command")
            | ("diff", false, "external")
            | (
                "core",
                false,
                "sshcommand" | "gitproxy" | "askpass" | "alternaterefscommand"
            )
            | ("credential", _, "helper")
            | ("remote", true, "receivepack" | "uploadpack")
            | ("gpg", _, "program")
            | ("trailer", true, "cmd" | "command")
    )
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

fn validate_intent(intent: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if intent.is_empty() || intent.len() > 128 || !intent.chars().all(ok_char) {
        return Err(format!(
            "intent {intent:?} must be 1-128 characters of letters, digits, '-', '_', '.', ':'"
        ));
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

/// A remote or branch name passed as one argument.
fn validate_word(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty()
        || value.starts_with('-')
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("{what} {value:?} is not a usable name"));
    }
    Ok(())
}

/// `porcelain=v1 -z` entries as (XY, path); a rename's source is skipped.
fn parse_porcelain_z(out: &str) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    let mut fields = out.split('\0');
    while let Some(field) = fields.next() {
        let (Some(xy), Some(path)) = (field.get(..2), field.get(3..)) else {
            continue;
        };
        if xy.starts_with(['R', 'C']) {
            let _ = fields.next();
        }
        entries.push((xy.to_string(), path.to_string()));
    }
    entries
}

fn is_unmerged(xy: &str) -> bool {
    matches!(xy, "DD" | "AU" | "UD" | "UA" | "DU" | "AA" | "UU")
}

fn is_full_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

fn first_nonempty<'a>(a: &'a str, b: &'a str) -> &'a str {
    let a = a.trim();
    if a.is_empty() {
        let b = b.trim();
        if b.is_empty() {
            "(no output)"
        } else {
            b
        }
    } else {
        a
    }
}

/// At most `max` bytes of `s` (cut on a character boundary), marked if cut.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}[... {} bytes cut]", &s[..end], s.len() - end)
}

fn command_line<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut line = String::from("git");
    for arg in args {
        let arg = arg.as_ref();
        line.push(' ');
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=@^{}~+,%".contains(c));
        if plain {
            line.push_str(arg);
        } else {
            line.push('\'');
            line.push_str(&arg.replace('\'', r"'\''"));
            line.push('\'');
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::TreeChange;
    use std::fs;
    use tempfile::TempDir;

    /// Plain git for setting up fixtures: isolated from the host's config,
    /// identity on the command line (so the repository has none of its own).
    fn raw_git(dir: &Path, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("git");
        cmd.current_dir(dir)
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("LC_ALL", "C");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GIT_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("git runs")
    }

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = raw_git(dir, args);
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn init() -> (TempDir, PathBuf) {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("app");
        fs::create_dir(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        (tmp, dir)
    }

    fn commit(dir: &Path, file: &str, content: &str, message: &str) -> String {
        fs::write(dir.join(file), content).unwrap();
        git(dir, &["add", file]);
        git(dir, &["commit", "-q", "-m", message]);
        git(dir, &["rev-parse", "HEAD"])
    }

    fn request(commits: &str, intent: &str) -> RevertRequest {
        RevertRequest {
            commits: commits.to_string(),
            change_id: "chg-42".to_string(),
            intent: intent.to_string(),
            reason: "5xx rate rose from 0.2% to 4.1% over 1,200 requests (e-value 412 > 20)"
                .to_string(),
            evidence_url: Some("https://guardian.example/changes/chg-42".to_string()),
        }
    }

    fn trailers(dir: &Path, key: &str) -> Vec<String> {
        let format = format!("--format=%(trailers:key={key},valueonly)");
        git(dir, &["log", "-1", &format])
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn count(dir: &Path) -> usize {
        git(dir, &["rev-list", "--count", "HEAD"]).parse().unwrap()
    }

    fn read(dir: &Path, file: &str) -> String {
        fs::read_to_string(dir.join(file)).unwrap()
    }

    fn apply_request(patch: String, base: &str, tree: &str) -> ApplyRequest {
        ApplyRequest {
            patch,
            base: base.to_owned(),
            tree: tree.to_owned(),
            intent: "prp_0123456789ab-deploy".into(),
            message: "Fix: bump the timeout\n\nGuardian-Proposal: prp_0123456789ab\n".into(),
        }
    }

    /// What the gate judges: the tree git makes of `patch` on `base`.
    fn judged(repo: &Repo, base: &str, patch: &str) -> TreeChange {
        match repo.scratch_apply(base, patch, &[]).unwrap() {
            Scratch::Applied(t) => *t,
            Scratch::Refused(why) => panic!("{why}"),
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

    #[test]
    fn the_scratch_apply_reports_what_git_really_made() {
        let (_tmp, dir) = init();
        let base = commit(&dir, "s.env", "TIMEOUT_MS=500\nREQUIRE_AUTH=1\n", "base");
        std::os::unix::fs::symlink("s.env", dir.join("link")).unwrap();
        git(&dir, &["add", "link"]);
        git(&dir, &["commit", "-q", "-m", "link"]);
        let base2 = git(&dir, &["rev-parse", "HEAD"]);
        // A no-newline marker in the middle of a hunk: git joins the two lines.
        let joined = "diff --git a/s.env b/s.env\nindex 1111111..2222222 100644\n--- a/s.env\n+++ b/s.env\n@@ -1,2 +1,2 @@\n-TIMEOUT_MS=500\n+TIMEOUT_MS=5000\n\\ No newline at end of file\n REQUIRE_AUTH=1\n";
        let repo = Repo::open(&dir).unwrap();
        let t = judged(&repo, &base, joined);
        assert_eq!(t.files.len(), 1);
        assert_eq!(
            t.files[0].new.as_ref().unwrap().bytes,
            b"TIMEOUT_MS=5000REQUIRE_AUTH=1\n"
        );
        assert_eq!(
            t.files[0].old.as_ref().unwrap().bytes,
            b"TIMEOUT_MS=500\nREQUIRE_AUTH=1\n"
        );
        let removed: Vec<&str> = t.canonical.files[0]
            .removed_lines()
            .map(|l| l.text.as_str())
            .collect();
        assert_eq!(removed, ["TIMEOUT_MS=500", "REQUIRE_AUTH=1"]);
        // The symlinks of both trees, with their targets; the base entries of named paths.
        let t = judged(&repo, &base2, joined);
        assert_eq!(t.links_after.get("link").map(String::as_str), Some("s.env"));
        let t = repo
            .scratch_apply(&base2, joined, &["s.env".to_owned(), "nope".to_owned()])
            .unwrap();
        let Scratch::Applied(t) = t else { panic!() };
        assert_eq!(t.base_files.keys().collect::<Vec<_>>(), ["s.env"]);
        assert_eq!(git(&dir, &["status", "--porcelain"]), "");
    }

    #[test]
    fn in_tree_attributes_do_not_turn_a_conflicting_revert_into_a_merge() {
        let (_tmp, dir) = init();
        commit(&dir, ".gitattributes", "* merge=union\n", "attributes");
        commit(&dir, "mode", "ok\n", "first");
        let bad = commit(&dir, "mode", "broken\n", "bad");
        let later = commit(&dir, "mode", "broken-differently\n", "later");
        let repo = Repo::open(&dir).unwrap();
        match repo.revert(&request(&bad, "intent-attr")).unwrap() {
            RevertOutcome::Conflict {
                files,
                tree_restored,
                ..
            } => {
                assert_eq!(files, ["mode"]);
                assert!(tree_restored);
            }
            other => panic!("the union merge driver was used: {other:?}"),
        }
        assert_eq!(git(&dir, &["rev-parse", "HEAD"]), later);
        // The operator's own lines in info/attributes stay, guardian's come last.
        let info = fs::read_to_string(dir.join(".git/info/attributes")).unwrap();
        assert!(
            info.trim_end().ends_with("!working-tree-encoding"),
            "{info}"
        );
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
        assert!(err.to_string().contains("never reverts its own revert"));
        // Nor as part of a range.
        let base = git(&dir, &["rev-parse", "HEAD~2"]);
        let err = repo
            .revert(&request(&format!("{base}..HEAD"), "intent-c"))
            .unwrap_err();
        assert!(matches!(err, GitError::RevertOfRevert { .. }), "{err}");
        assert_eq!(count(&dir), n);
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

    fn marker_script(marker: &Path, exit: u8) -> String {
        format!(
            "#!/bin/sh\necho \"$0\" >> '{}'\nexit {exit}\n",
            marker.display()
        )
    }

    #[cfg(unix)]
    #[test]
    fn repository_hooks_and_fsmonitor_do_not_run() {
        use std::os::unix::fs::PermissionsExt;
        let (tmp, dir) = init();
        commit(&dir, "a", "1\n", "base");
        let bad = commit(&dir, "a", "2\n", "bad");
        let marker = tmp.path().join("marker");
        let hooks = dir.join(".git/hooks");
        for hook in [
            "pre-commit",
            "prepare-commit-msg",
            "commit-msg",
            "post-commit",
            "reference-transaction",
            "post-rewrite",
        ] {
            let path = hooks.join(hook);
            fs::write(&path, marker_script(&marker, 0)).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let fsmonitor = tmp.path().join("fsmonitor.sh");
        fs::write(&fsmonitor, marker_script(&marker, 1)).unwrap();
        fs::set_permissions(&fsmonitor, fs::Permissions::from_mode(0o755)).unwrap();
        git(
            &dir,
            &["config", "core.fsmonitor", &fsmonitor.display().to_string()],
        );

        // Control: plain git does run them, so the test can see a failure.
        git(&dir, &["status", "--porcelain"]);
        git(&dir, &["commit", "-q", "--allow-empty", "-m", "control"]);
        let seen = fs::read_to_string(&marker).unwrap();
        for expected in ["fsmonitor.sh", "prepare-commit-msg", "post-commit"] {
            assert!(
                seen.contains(expected),
                "control did not run {expected}: {seen}"
            );
        }
        fs::remove_file(&marker).unwrap();

        let repo = Repo::open(&dir).unwrap();
        assert!(repo.is_clean().unwrap());
        let outcome = repo.revert(&request(&bad, "intent-hooks")).unwrap();
        assert!(
            matches!(outcome, RevertOutcome::Reverted { .. }),
            "{outcome:?}"
        );
        assert_eq!(read(&dir, "a"), "1\n");
        assert!(
            !marker.exists(),
            "something ran: {}",
            fs::read_to_string(&marker).unwrap_or_default()
        );
    }

    #[test]
    fn refuses_a_repository_that_declares_a_merge_driver() {
        let (tmp, dir) = init();
        commit(&dir, "a.txt", "line\n", "base");
        let bad = commit(&dir, "a.txt", "bad\n", "bad");
        commit(&dir, "a.txt", "worse\n", "later");
        let marker = tmp.path().join("marker");
        fs::write(dir.join(".git/info/attributes"), "a.txt merge=evil\n").unwrap();
        let driver = format!("touch '{}'; false", marker.display());
        let repo = Repo::open(&dir).unwrap();
        git(&dir, &["config", "merge.evil.driver", &driver]);

        let err = repo.revert(&request(&bad, "intent-driver")).unwrap_err();
        assert!(
            matches!(&err, GitError::UnsafeConfig { keys, .. } if keys == &["merge.evil.driver"]),
            "{err}"
        );
        assert!(!marker.exists());
        assert!(matches!(
            Repo::open(&dir),
            Err(GitError::UnsafeConfig { .. })
        ));
        assert!(matches!(
            repo.is_clean(),
            Err(GitError::UnsafeConfig { .. })
        ));
        git(&dir, &["config", "--unset", "merge.evil.driver"]);
        git(
            &dir,
            &["config", "remote.origin.receivepack", "sh -c 'touch x'"],
        );
        assert!(matches!(
            repo.push("origin", "main"),
            Err(GitError::UnsafeConfig { .. })
        ));
    }

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
        // side hangs, in a grandchild that holds git's stderr.
        let options = RepoOptions {
            config: vec![(
                "remote.origin.receivepack".to_string(),
                "sleep 30; git-receive-pack".to_string(),
            )],
            push_timeout: Duration::from_secs(1),
            ..RepoOptions::default()
        };
        let repo = Repo::open_with(&dir, options).unwrap();
        let started = Instant::now();
        let err = repo.push("origin", "main").unwrap_err();
        assert!(matches!(err, GitError::Timeout { .. }), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
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
    fn failed_commands_name_the_command_and_the_directory() {
        let (_tmp, dir) = init();
        commit(&dir, "a", "1\n", "base");
        let repo = Repo::open(&dir).unwrap();
        let err = repo.revert(&request("deadbeef", "intent-q")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("git rev-parse"), "{text}");
        assert!(text.contains(&repo.path().display().to_string()), "{text}");
        assert!(!text.ends_with('\n'));
    }

    #[cfg(unix)]
    #[test]
    fn parsers_survive_odd_output() {
        assert_eq!(parse_porcelain_z(""), vec![]);
        assert_eq!(parse_porcelain_z("x\0\0UU"), vec![]);
        assert_eq!(
            parse_porcelain_z("R  new\0old\0UU é\0"),
            vec![
                ("R ".to_string(), "new".to_string()),
                ("UU".to_string(), "é".to_string())
            ]
        );
        assert_eq!(clip("ééé", 3), "é[... 4 bytes cut]");
        assert_eq!(truncate_chars("ééééé", 4), "é...");
        assert!(runs_command("merge.Evil.Driver"));
        assert!(runs_command("credential.https://x.example.helper"));
        assert!(runs_command("credential.helper"));
        assert!(!runs_command("core.hooksPath"));
        assert!(!runs_command("merge.driver"));
        assert_eq!(
            command_line(["commit", "-F", "-", "a b", "it's"]),
            r"git commit -F - 'a b' 'it'\''s'"
        );
    }
}
