//! Runs the operator's redeploy hook after a revert, and always comes back.
//!
//! The preferred deployment does not use this module: the guardian starts
//! `app-redeploy.service` (`Type=oneshot`, explicit `TimeoutStartSec`,
//! `KillMode=control-group`) and systemd kills the whole cgroup on a timeout
//! (research/reliability.md §1.4, §4.5). This module is the in-process fallback, and it keeps
//! the same promises as far as a process group allows:
//!
//! - The hook runs in **its own process group**, through the crate's one process runner
//!   ([`crate::process`]): on timeout the whole group, grandchildren included, gets `SIGTERM`,
//!   then [`HookSpec::grace`] to clean up, then `SIGKILL`. Killing only the direct child
//!   would orphan whatever the hook backgrounded (`sleep 1000 &`).
//! - stdout and stderr are read concurrently, so a chatty hook cannot block on a full pipe;
//!   each stream keeps its first and last `max_output_bytes / 2` bytes and counts what it
//!   drops. Output is decoded lossily (non-UTF-8 cannot fail anything).
//! - Every wait is bounded: [`run`] returns within `timeout + grace + ~1 s` whatever the hook
//!   does, and within `timeout + 2 s` when it exits on its own.
//!
//! # Environment
//!
//! The hook inherits the guardian's environment, minus the systemd per-process protocol
//! variables (`NOTIFY_SOCKET`, `WATCHDOG_*`, `LISTEN_*`), which belong to the guardian's main
//! process: a hook must not be able to send the guardian's readiness or watchdog pings. The
//! caller adds its own variables; the convention is
//!
//! | variable | meaning |
//! |---|---|
//! | `GUARDIAN_CHANGE_ID` | the guardian's id of the change that was reverted |
//! | `GUARDIAN_COMMIT` | the SHA of the reverted (bad) commit |
//! | `GUARDIAN_REVERT_COMMIT` | the SHA of the revert commit that is to be deployed |
//! | `GUARDIAN_REASON` | one line: why the change was reverted |
//! | `GUARDIAN_ATTEMPT` | `1`, or `2` for the single retry |
//!
//! A redeploy is at-least-once (a restart mid-hook runs it again), so hooks must be
//! idempotent. The hook's stdin is `/dev/null`.
//!
//! # What the outcome means
//!
//! The exit status says only whether the hook *says* it worked: recovery is judged by the
//! service's metrics afterwards, not by [`HookStatus::Succeeded`] (§4.5). At most one retry,
//! then escalate; both are the caller's job. Captured output goes into post-mortems and
//! e-mails, so hooks should not print secrets.
//!
//! A hook that exits while a process it started still holds stdout/stderr (e.g.
//! `nohup server &` without redirection) is reported by its own exit status; that process is
//! left running (it may be the service itself) and capture stops [`OUTPUT_DRAIN`] after the
//! hook exited. Long-running processes should be started through systemd, or at least with
//! their output redirected.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::process::{self, Captured, End, Event, Exit, Limits, AFTER_KILL};

/// Default time allowed to the hook (matches the recommended `TimeoutStartSec=300`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time between `SIGTERM` and `SIGKILL` on a timeout.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// Default cap on captured bytes, per stream.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// How long output is still read after the hook exited on its own.
pub const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// systemd variables addressed to the guardian's own main process.
const SYSTEMD_PROCESS_VARS: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// What to run, and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookSpec {
    /// Program and arguments, run without a shell; write `["sh", "-c", "..."]` for one.
    pub command: Vec<String>,
    /// Time from start until the group is sent `SIGTERM`.
    pub timeout: Duration,
    /// Time from `SIGTERM` until the group is sent `SIGKILL`.
    pub grace: Duration,
    /// Directory to run in; the guardian's own when `None`.
    pub working_dir: Option<PathBuf>,
    /// Cap on captured bytes per stream (head and tail halves are kept).
    pub max_output_bytes: usize,
    /// Where the running hook's group is noted while guardian waits on it, so that a restart
    /// can stop what a killed guardian left running ([`crate::running`]).
    pub note: Option<PathBuf>,
}

impl HookSpec {
    /// A spec with the default timeout, grace and cap, run in the current directory.
    pub fn new(command: Vec<String>) -> Self {
        HookSpec {
            command,
            timeout: DEFAULT_TIMEOUT,
            grace: DEFAULT_GRACE,
            working_dir: None,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            note: None,
        }
    }
}

/// How the hook ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HookStatus {
    /// Exited with status 0 before the timeout.
    Succeeded,
    /// Exited with a non-zero status, or was killed by a signal it did not get from us.
    Failed {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// Still running at the timeout, so the group was terminated. `code`/`signal` say how
    /// the leader finally ended (`signal: Some(9)` means it needed `SIGKILL`); both `None`
    /// if it could not be reaped.
    TimedOut {
        timeout: Duration,
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// The process could not be created; `error` names the program or directory at fault.
    CouldNotStart { error: String },
}

/// Everything known about one run of the hook, for the post-mortem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookOutcome {
    pub status: HookStatus,
    /// From just before the spawn until `run` returned.
    pub duration: Duration,
    /// The hook's process id, which is also its process group id.
    pub pid: Option<u32>,
    /// Captured stdout: head, a `[guardian: N bytes dropped]` line if capped, tail.
    pub stdout: String,
    /// Captured stderr, capped like stdout.
    pub stderr: String,
    /// Bytes dropped from both streams by the cap.
    pub dropped_bytes: u64,
    /// What the guardian did or noticed besides the exit status (signals sent, processes
    /// or pipes left behind, failures to signal), in order.
    pub notes: Vec<String>,
}

impl HookOutcome {
    /// One line for an e-mail, e.g. `exit 0 after 3.2 s`, `killed after the 60 s timeout`.
    pub fn summary(&self) -> String {
        let after = format!("after {:.1} s", self.duration.as_secs_f64());
        match &self.status {
            HookStatus::Succeeded => format!("exit 0 {after}"),
            HookStatus::Failed {
                code: Some(code), ..
            } => format!("exit {code} {after}"),
            HookStatus::Failed {
                signal: Some(sig), ..
            } => format!("killed by signal {} {after}", signal_name(*sig)),
            HookStatus::Failed { .. } => format!("failed {after}"),
            HookStatus::TimedOut {
                timeout, signal, ..
            } => {
                let how = if *signal == Some(9) {
                    " (ignored SIGTERM; SIGKILLed)"
                } else {
                    ""
                };
                format!("killed after the {} timeout{how}", whole_secs(*timeout))
            }
            HookStatus::CouldNotStart { error } => format!("could not start: {error}"),
        }
    }
}

fn whole_secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return sig.to_string(),
    };
    format!("{sig} ({name})")
}

/// Runs the hook to completion or to its timeout. Blocking (call it from `spawn_blocking`);
/// never panics on anything the hook does.
pub fn run(spec: &HookSpec, env: &[(String, String)]) -> HookOutcome {
    let start = Instant::now();
    let could_not_start = |error: String| HookOutcome {
        status: HookStatus::CouldNotStart { error },
        duration: start.elapsed(),
        pid: None,
        stdout: String::new(),
        stderr: String::new(),
        dropped_bytes: 0,
        notes: Vec::new(),
    };

    let Some((program, args)) = spec.command.split_first() else {
        return could_not_start("the hook command is empty".to_string());
    };
    if let Some(dir) = &spec.working_dir {
        if let Err(e) = std::fs::metadata(dir).and_then(|m| {
            if m.is_dir() {
                Ok(())
            } else {
                Err(io::Error::other("not a directory"))
            }
        }) {
            return could_not_start(format!(
                "{} (working directory {:?})",
                io_message(&e),
                dir.display().to_string()
            ));
        }
    }

    let mut cmd = Command::new(program);
    cmd.args(args);
    for var in SYSTEMD_PROCESS_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    let half = spec.max_output_bytes / 2;
    let limits = Limits {
        timeout: spec.timeout,
        grace: spec.grace,
        drain: OUTPUT_DRAIN,
        head: half,
        tail: half,
    };

    let done = match process::run_noted(cmd, None, &limits, spec.note.as_deref()) {
        Ok(done) => done,
        Err(process::Error::Spawn(e)) => return could_not_start(spawn_error(&e, program)),
        Err(process::Error::Thread {
            pid,
            stream,
            error,
            kill,
        }) => {
            let mut outcome = could_not_start(format!("{error} (reader thread for the hook)"));
            outcome.pid = Some(pid);
            outcome.notes = vec![format!(
                "could not start the {stream} reader thread: {error}"
            )];
            outcome
                .notes
                .extend(kill.map(|e| signal_failed(Signal::SIGKILL, pid, e)));
            return outcome;
        }
    };

    let pid = done.pid;
    let mut notes: Vec<String> = done
        .events
        .iter()
        .map(|event| note(spec, pid, event))
        .collect();
    let status = match done.end {
        End::Exited(Exit::Code(0)) => HookStatus::Succeeded,
        End::Exited(exit) => HookStatus::Failed {
            code: exit.code(),
            signal: exit.signal(),
        },
        End::TimedOut(leader) => HookStatus::TimedOut {
            timeout: spec.timeout,
            code: leader.and_then(Exit::code),
            signal: leader.and_then(Exit::signal),
        },
        End::Unknown(e) => {
            notes.push(format!("could not wait for the hook: {e}"));
            HookStatus::Failed {
                code: None,
                signal: None,
            }
        }
    };
    HookOutcome {
        status,
        duration: start.elapsed(),
        pid: Some(pid),
        stdout: render(&done.stdout),
        stderr: render(&done.stderr),
        dropped_bytes: done.stdout.dropped() + done.stderr.dropped(),
        notes,
    }
}

/// The post-mortem's line for what the runner did or noticed.
fn note(spec: &HookSpec, pid: u32, event: &Event) -> String {
    match event {
        Event::Terminated => format!(
            "timed out after {}: sent SIGTERM to process group {pid}",
            whole_secs(spec.timeout)
        ),
        Event::Killed => format!(
            "sent SIGKILL to process group {pid} after the {} grace",
            whole_secs(spec.grace)
        ),
        Event::SignalFailed { signal, error } => signal_failed(*signal, pid, *error),
        Event::Survived => format!(
            "hook process {pid} still alive {} after SIGKILL (not ours to kill, or stuck in the \
             kernel); left behind",
            whole_secs(AFTER_KILL)
        ),
        Event::WaitFailed(e) => format!("could not wait for the hook: {e}"),
        Event::HeldAfterExit => format!(
            "stdout/stderr still open {} after the hook exited: a process it started holds \
             them; capture stopped, that process was left running",
            whole_secs(OUTPUT_DRAIN)
        ),
        Event::HeldAfterKill => "stdout/stderr still open after SIGKILL: a process outside the \
                                 group (e.g. one that called setsid) holds them; capture stopped"
            .to_string(),
    }
}

fn signal_failed(signal: Signal, pgid: u32, error: Errno) -> String {
    format!("{signal} to process group {pgid} failed: {error}")
}

/// Head, a `[guardian: N bytes dropped]` line if capped, tail; lossily decoded.
fn render(captured: &Captured) -> String {
    let mut text = String::from_utf8_lossy(&captured.head).into_owned();
    let dropped = captured.dropped();
    if dropped > 0 {
        text.push_str(&format!("\n[guardian: {dropped} bytes dropped]\n"));
    }
    text.push_str(&String::from_utf8_lossy(&captured.tail));
    text
}

/// `io::Error` text without the " (os error N)" suffix.
fn io_message(e: &io::Error) -> String {
    let text = e.to_string();
    match e.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .unwrap_or(&text)
            .to_string(),
        None => text,
    }
}

fn spawn_error(e: &io::Error, program: &str) -> String {
    let mut text = format!("{} (program {program:?})", io_message(e));
    // ENOENT for a file that exists means its `#!` interpreter is missing (or has a CR).
    if e.kind() == io::ErrorKind::NotFound && program.contains('/') && Path::new(program).is_file()
    {
        text.push_str("; the file exists, so its #! interpreter is probably missing");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::tests::assert_gone;
    use std::thread;

    fn sh(script: &str) -> HookSpec {
        HookSpec {
            timeout: Duration::from_secs(20),
            ..HookSpec::new(vec!["sh".into(), "-c".into(), script.into()])
        }
    }

    fn first_line_pid(outcome: &HookOutcome) -> u32 {
        outcome
            .stdout
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in stdout: {outcome:?}"))
    }

    /// Live (non-zombie) processes in group `pgid`, from /proc. Zombies are ignored: in a
    /// container whose pid 1 does not reap, killed orphans stay zombies forever.
    fn live_members(pgid: u32) -> Vec<u32> {
        let mut live = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some(i) = stat.rfind(')') else { continue };
            let fields: Vec<&str> = stat[i + 1..].split_whitespace().collect();
            // state ppid pgrp ...
            if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
                live.push(pid);
            }
        }
        live
    }

    fn assert_group_gone(pgid: u32) {
        let until = Instant::now() + Duration::from_secs(1);
        while !live_members(pgid).is_empty() && Instant::now() < until {
            thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            live_members(pgid),
            Vec::<u32>::new(),
            "group {pgid} survived"
        );
    }

    #[test]
    fn hook_success_captures_output_env_and_working_dir() {
        let dir = tempfile::tempdir().unwrap();
        let spec = HookSpec {
            working_dir: Some(dir.path().to_path_buf()),
            ..sh(
                r#"echo "change=$GUARDIAN_CHANGE_ID commit=$GUARDIAN_COMMIT"; pwd; echo oops >&2; read x || echo stdin-empty"#,
            )
        };
        let env = [
            ("GUARDIAN_CHANGE_ID".to_string(), "42".to_string()),
            ("GUARDIAN_COMMIT".to_string(), "abc123".to_string()),
        ];
        let out = run(&spec, &env);
        assert_eq!(out.status, HookStatus::Succeeded, "{out:?}");
        assert!(out.stdout.contains("change=42 commit=abc123"), "{out:?}");
        let real = std::fs::canonicalize(dir.path()).unwrap();
        assert!(out.stdout.contains(&*real.to_string_lossy()), "{out:?}");
        assert!(out.stdout.contains("stdin-empty"), "{out:?}");
        assert_eq!(out.stderr, "oops\n");
        assert_eq!(out.dropped_bytes, 0);
        assert!(out.notes.is_empty(), "{out:?}");
        assert!(
            out.summary().starts_with("exit 0 after "),
            "{}",
            out.summary()
        );
        let json = serde_json::to_value(&out).unwrap();
        assert_eq!(json["status"]["kind"], "succeeded");
    }

    #[test]
    fn hook_nonzero_exit_reports_code() {
        let out = run(&sh("echo failing >&2; exit 3"), &[]);
        assert_eq!(
            out.status,
            HookStatus::Failed {
                code: Some(3),
                signal: None
            }
        );
        assert_eq!(out.stderr, "failing\n");
        assert!(
            out.summary().starts_with("exit 3 after "),
            "{}",
            out.summary()
        );
    }

    #[test]
    fn hook_killed_by_signal_reports_signal() {
        let out = run(&sh("kill -9 $$"), &[]);
        assert_eq!(
            out.status,
            HookStatus::Failed {
                code: None,
                signal: Some(9)
            }
        );
        assert!(out
            .summary()
            .starts_with("killed by signal 9 (SIGKILL) after"));
    }

    #[test]
    fn hook_missing_program_could_not_start() {
        let spec = HookSpec::new(vec!["/nonexistent/redeploy.sh".into(), "x".into()]);
        let out = run(&spec, &[]);
        let HookStatus::CouldNotStart { error } = &out.status else {
            panic!("{out:?}");
        };
        assert!(error.contains("/nonexistent/redeploy.sh"), "{error}");
        assert_eq!(
            out.summary(),
            "could not start: No such file or directory (program \"/nonexistent/redeploy.sh\")"
        );
    }

    #[test]
    fn hook_empty_command_or_bad_dir_could_not_start() {
        let out = run(&HookSpec::new(vec![]), &[]);
        assert!(matches!(out.status, HookStatus::CouldNotStart { .. }));
        let spec = HookSpec {
            working_dir: Some("/nonexistent/dir".into()),
            ..sh("true")
        };
        let out = run(&spec, &[]);
        let HookStatus::CouldNotStart { error } = &out.status else {
            panic!("{out:?}");
        };
        assert!(
            error.contains("working directory \"/nonexistent/dir\""),
            "{error}"
        );
    }

    #[test]
    fn hook_hanging_with_grandchild_is_killed_as_a_group() {
        let spec = HookSpec {
            timeout: Duration::from_secs(1),
            grace: Duration::from_secs(1),
            ..sh("echo $$; sleep 1000 & echo $!; sleep 1000")
        };
        let start = Instant::now();
        let out = run(&spec, &[]);
        let took = start.elapsed();
        assert!(
            took < spec.timeout + spec.grace + Duration::from_secs(2),
            "{took:?}"
        );
        assert!(took >= spec.timeout, "{took:?}");
        // Everything died of SIGTERM, so the grace ended early.
        assert!(took < spec.timeout + spec.grace, "{took:?}");
        let HookStatus::TimedOut { timeout, .. } = out.status else {
            panic!("{out:?}");
        };
        assert_eq!(timeout, Duration::from_secs(1));
        assert_eq!(out.summary(), "killed after the 1 s timeout");
        let pgid = first_line_pid(&out);
        assert_eq!(out.pid, Some(pgid));
        // The leader and the child it backgrounded, by pid, and anything else in the group.
        let grandchild = out.stdout.lines().nth(1).and_then(|l| l.parse().ok());
        let grandchild = grandchild.unwrap_or_else(|| panic!("no child pid: {out:?}"));
        assert_gone(&[pgid, grandchild]);
        assert_group_gone(pgid);
        assert_eq!(
            out.notes,
            [
                format!("timed out after 1 s: sent SIGTERM to process group {pgid}"),
                format!("sent SIGKILL to process group {pgid} after the 1 s grace"),
            ]
        );
    }

    #[test]
    fn hook_ignoring_sigterm_is_killed_after_grace() {
        let spec = HookSpec {
            timeout: Duration::from_secs(1),
            grace: Duration::from_secs(1),
            ..sh(r#"trap "" TERM; echo $$; sleep 1000 & sleep 1000; echo survived"#)
        };
        let start = Instant::now();
        let out = run(&spec, &[]);
        let took = start.elapsed();
        assert!(took >= spec.timeout + spec.grace, "{took:?}");
        assert!(
            took < spec.timeout + spec.grace + Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(
            out.status,
            HookStatus::TimedOut {
                timeout: spec.timeout,
                code: None,
                signal: Some(9)
            },
            "{out:?}"
        );
        assert!(out.summary().contains("SIGKILLed"), "{}", out.summary());
        assert!(!out.stdout.contains("survived"));
        assert_group_gone(first_line_pid(&out));
    }

    #[test]
    fn hook_with_closed_output_still_gets_its_grace() {
        // The pipes close at once, but the leader ignores SIGTERM and keeps running: the
        // grace must still be waited out (without spinning), then SIGKILL.
        let spec = HookSpec {
            timeout: Duration::from_secs(1),
            grace: Duration::from_secs(1),
            ..sh(r#"trap "" TERM; exec >/dev/null 2>&1; sleep 1000"#)
        };
        let start = Instant::now();
        let out = run(&spec, &[]);
        let took = start.elapsed();
        assert!(took >= spec.timeout + spec.grace, "{took:?}");
        assert!(
            took < spec.timeout + spec.grace + Duration::from_secs(2),
            "{took:?}"
        );
        assert!(
            matches!(
                out.status,
                HookStatus::TimedOut {
                    signal: Some(9),
                    ..
                }
            ),
            "{out:?}"
        );
        assert_group_gone(out.pid.unwrap());
    }

    #[test]
    fn hook_huge_output_is_capped_without_deadlock() {
        let spec = HookSpec {
            max_output_bytes: 1000,
            ..sh(
                "printf START; head -c 10000000 /dev/zero | tr '\\0' x; printf END; \
                  head -c 10000000 /dev/zero >&2",
            )
        };
        let out = run(&spec, &[]);
        assert_eq!(out.status, HookStatus::Succeeded, "{:?}", out.notes);
        assert!(out.stdout.starts_with("STARTxxx"), "{}", &out.stdout[..20]);
        assert!(out.stdout.ends_with("xxxEND"));
        assert!(out.stdout.contains("[guardian: 9999008 bytes dropped]"));
        assert!(out.stdout.len() < 1100);
        assert!(out.stderr.contains("[guardian: 9999000 bytes dropped]"));
        assert_eq!(out.dropped_bytes, 9_999_008 + 9_999_000);
    }

    #[test]
    fn hook_non_utf8_output_is_lossy() {
        let out = run(&sh(r"printf '\377\376ok'"), &[]);
        assert_eq!(out.status, HookStatus::Succeeded);
        assert_eq!(out.stdout, "\u{FFFD}\u{FFFD}ok");
    }

    #[test]
    fn hook_background_process_holding_stdout_does_not_block() {
        let start = Instant::now();
        let out = run(&sh("echo $$; sleep 1000 & echo started"), &[]);
        assert!(start.elapsed() < OUTPUT_DRAIN + Duration::from_secs(2));
        assert_eq!(out.status, HookStatus::Succeeded);
        assert!(out.stdout.contains("started"));
        assert_eq!(out.notes.len(), 1, "{:?}", out.notes);
        // Clean up the deliberately abandoned sleep (our own test process group).
        let _ = process::signal_group(first_line_pid(&out), Signal::SIGKILL);
    }
}
