//! One git command, hardened (see the module doc of `git`): the `-c` overrides and the
//! environment every invocation gets, run through the crate's process runner with its
//! timeout, and recorded for the post-mortem. Also the second line of defence: a repository
//! whose own config declares a command git would run is refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{GitError, Repo};
use crate::process::{self, Captured, End, Limits};

/// Each stream kept in a [`CommandRecord`] is cut at this many bytes.
pub(super) const RECORD_OUTPUT_LIMIT: usize = 64 * 1024;
/// git's output quoted in an error message is cut at this many characters.
pub(super) const ERROR_OUTPUT_LIMIT: usize = 2000;
/// Output beyond this is read and discarded (protects the daemon's memory).
const CAPTURE_LIMIT: usize = 64 * 1024 * 1024;
/// After git exits, how long to wait for its pipes to close. A grandchild
/// (an ssh ControlMaster, say) may hold them open indefinitely.
const PIPE_DRAIN_GRACE: Duration = Duration::from_secs(5);
/// After a timeout, time from `SIGTERM` to `SIGKILL` of git's process group. git removes
/// its lock files on `SIGTERM` (a `SIGKILL`ed one leaves `index.lock` and blocks the next
/// command); only what ignores it waits this long.
const GRACE: Duration = Duration::from_secs(5);

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

/// Output of one finished git process.
pub(super) struct Raw {
    pub(super) status: Option<i32>,
    pub(super) stdout: String,
    pub(super) stderr: String,
    /// stdout as git wrote it (file contents are bytes), and whether it was cut at
    /// `CAPTURE_LIMIT`.
    pub(super) stdout_bytes: Vec<u8>,
    pub(super) truncated: bool,
}

impl Raw {
    pub(super) fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Runs commands for one public call and keeps their records.
pub(super) struct Session<'r> {
    pub(super) repo: &'r Repo,
    pub(super) log: Vec<CommandRecord>,
    /// A scratch index for the commands run while it is set (`GIT_INDEX_FILE`).
    pub(super) index: Option<PathBuf>,
}

impl Repo {
    /// Refuses a repository whose own config (local or worktree scope,
    /// includes followed) declares a command git could run for us.
    pub(super) fn check_config(&self, s: &mut Session) -> Result<(), GitError> {
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
        // Its own process group, stdio and the timeout are the runner's (`exec`).
        cmd
    }

    /// Runs git to completion or until `timeout`, capturing both streams.
    /// The flag is true when it timed out (and its process group was terminated).
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
        let limits = Limits {
            timeout,
            grace: GRACE,
            drain: PIPE_DRAIN_GRACE,
            head: CAPTURE_LIMIT,
            tail: 0,
        };
        let done = process::run(cmd, stdin, &limits).map_err(|e| match e {
            process::Error::Spawn(e) => e,
            thread @ process::Error::Thread { .. } => std::io::Error::other(thread.to_string()),
        })?;
        let (status, timed_out) = match done.end {
            End::Exited(exit) => (exit.code(), false),
            End::TimedOut(_) => (None, true),
            End::Unknown(e) => return Err(e),
        };
        let (stdout_bytes, truncated) = kept(done.stdout);
        let (stderr, _) = kept(done.stderr);
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

/// The bytes kept of a stream (at most `CAPTURE_LIMIT`) and whether any are missing: cut at
/// the limit, or never read to the end because something held the pipe open.
fn kept(stream: Captured) -> (Vec<u8>, bool) {
    if stream.complete {
        let cut = stream.dropped() > 0;
        (stream.head, cut)
    } else {
        (
            b"[output not collected: the pipe was still held open]".to_vec(),
            true,
        )
    }
}

impl<'r> Session<'r> {
    pub(super) fn new(repo: &'r Repo) -> Self {
        Session {
            repo,
            log: Vec::new(),
            index: None,
        }
    }

    /// Runs a command and records it. Errors only when git cannot be run or
    /// times out; a non-zero exit is returned in [`Raw`].
    pub(super) fn run<I, S>(
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
    pub(super) fn ok<I, S>(&mut self, args: I, stdin: Option<Vec<u8>>) -> Result<String, GitError>
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

    pub(super) fn failed<I, S>(&self, args: I, raw: &Raw) -> GitError
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

    pub(super) fn unexpected<I, S>(&self, args: I, detail: String) -> GitError
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

pub(super) fn first_nonempty<'a>(a: &'a str, b: &'a str) -> &'a str {
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
pub(super) fn clip(s: &str, max: usize) -> String {
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
    use super::super::testing::*;
    use super::*;
    use crate::git::{GitError, RevertOutcome};
    use std::fs;

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

    #[test]
    fn clip_config_keys_and_command_lines() {
        assert_eq!(clip("ééé", 3), "é[... 4 bytes cut]");
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
