//! Runs the operator's redeploy hook after a revert, and always comes back.
//!
//! The preferred deployment does not use this module: the guardian starts
//! `app-redeploy.service` (`Type=oneshot`, explicit `TimeoutStartSec`,
//! `KillMode=control-group`) and systemd kills the whole cgroup on a timeout
//! (research/reliability.md §1.4, §4.5). This module is the in-process fallback, and it keeps
//! the same promises as far as a process group allows:
//!
//! - The hook runs in **its own process group** (`process_group(0)`), so the timeout kills
//!   the group, grandchildren included. Killing only the direct child would orphan whatever
//!   the hook backgrounded (`sleep 1000 &`), and those orphans would keep running and keep
//!   our output pipes open.
//! - On timeout: `SIGTERM` to the group, then [`HookSpec::grace`] to clean up, then `SIGKILL`
//!   to the group. The leader is not reaped until the `SIGKILL` has been sent: an unreaped
//!   leader (even a zombie) keeps its pid, so the group id cannot have been reused by an
//!   unrelated process when we signal it.
//! - stdout and stderr are read by two threads at once, so a chatty hook cannot block on a
//!   full pipe; each stream keeps its first and last `max_output_bytes / 2` bytes and counts
//!   what it drops. Output is decoded lossily (non-UTF-8 cannot fail anything).
//! - Every wait is bounded: [`run`] returns within `timeout + grace + ~1 s` whatever the hook
//!   does, and within `timeout + 2 s` when it exits on its own.
//!
//! # Why the `kill` command
//!
//! The crate has no `libc`/`nix` binding and forbids `unsafe` code, so it cannot call
//! `killpg(2)`; `std::process::Child::kill` signals only the direct child. Signals to the
//! group are therefore sent by running `kill -TERM -- -<pgid>` (procps or util-linux `kill`),
//! falling back to the POSIX shell builtin (`/bin/sh -c 'kill -s TERM -- -<pgid>'`) when no
//! `kill` program is on `PATH`. Each costs one short-lived process, only on the timeout path.
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

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Default time allowed to the hook (matches the recommended `TimeoutStartSec=300`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time between `SIGTERM` and `SIGKILL` on a timeout.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// Default cap on captured bytes, per stream.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// How long output is still read after the hook exited on its own.
pub const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// After `SIGKILL`, how long we wait for the leader and the output pipes before giving up.
const AFTER_KILL: Duration = Duration::from_secs(1);

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
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for var in SYSTEMD_PROCESS_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }

    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return could_not_start(spawn_error(&e, program)),
    };
    let pid = child.id();
    let mut notes = Vec::new();

    // One capture per stream, shared with its reader thread so that what was read so far
    // survives even if the thread has to be abandoned.
    let half = spec.max_output_bytes / 2;
    let out_cap = Arc::new(Mutex::new(Capture::new(half)));
    let err_cap = Arc::new(Mutex::new(Capture::new(half)));
    let (done_tx, done_rx) = mpsc::channel();
    let mut readers = Readers {
        rx: done_rx,
        pending: 0,
    };
    let pipes = [
        (
            "stdout",
            child.stdout.take().map(|p| Box::new(p) as Pipe),
            &out_cap,
        ),
        (
            "stderr",
            child.stderr.take().map(|p| Box::new(p) as Pipe),
            &err_cap,
        ),
    ];
    for (name, pipe, cap) in pipes {
        let Some(pipe) = pipe else { continue };
        match spawn_reader(name, pipe, Arc::clone(cap), done_tx.clone()) {
            Ok(()) => readers.pending += 1,
            Err(e) => {
                // Nobody would drain this pipe; the hook could block on it forever.
                notes.push(format!("could not start the {name} reader thread: {e}"));
                notes.extend(signal_group(pid, "KILL").err());
                reap_in_background(child);
                let mut outcome = could_not_start(format!("{e} (reader thread for the hook)"));
                outcome.pid = Some(pid);
                outcome.notes = notes;
                return outcome;
            }
        }
    }
    drop(done_tx);

    let status = match wait_until(&mut child, start + spec.timeout) {
        Ok(Some(exit)) => {
            if !readers.wait_until(Instant::now() + OUTPUT_DRAIN) {
                notes.push(format!(
                    "stdout/stderr still open {} after the hook exited: a process it started \
                     holds them; capture stopped, that process was left running",
                    whole_secs(OUTPUT_DRAIN)
                ));
            }
            exit_status(exit)
        }
        Ok(None) => terminate(spec, pid, child, &mut readers, &mut notes),
        Err(e) => {
            // Only if someone else reaped it (e.g. SIGCHLD ignored): the pid may already be
            // reused, so the group is not signalled.
            notes.push(format!("could not wait for the hook: {e}"));
            readers.wait_until(Instant::now() + OUTPUT_DRAIN);
            HookStatus::Failed {
                code: None,
                signal: None,
            }
        }
    };

    let (stdout, out_dropped) = snapshot(&out_cap);
    let (stderr, err_dropped) = snapshot(&err_cap);
    HookOutcome {
        status,
        duration: start.elapsed(),
        pid: Some(pid),
        stdout,
        stderr,
        dropped_bytes: out_dropped + err_dropped,
        notes,
    }
}

/// The timeout path: TERM the group, give it `grace`, KILL the group, reap with a bound.
fn terminate(
    spec: &HookSpec,
    pid: u32,
    mut child: Child,
    readers: &mut Readers,
    notes: &mut Vec<String>,
) -> HookStatus {
    notes.push(format!(
        "timed out after {}: sent SIGTERM to process group {pid}",
        whole_secs(spec.timeout)
    ));
    notes.extend(signal_group(pid, "TERM").err());

    // Wait out the grace, but stop early once the leader has exited and nothing holds our
    // pipes any more. The leader is not reaped here (see the module doc).
    let grace_end = Instant::now() + spec.grace;
    loop {
        let pipes_closed = readers.wait_until(grace_end.min(Instant::now() + POLL_MAX));
        let now = Instant::now();
        if now >= grace_end || (pipes_closed && !leader_running(pid)) {
            break;
        }
        if pipes_closed {
            // The leader runs with its output closed: poll it instead of the pipes.
            thread::sleep(POLL_MAX.min(grace_end - now));
        }
    }

    // Always sent: members that closed their output may still be alive, and the unreaped
    // leader guarantees the group id is still ours.
    notes.push(format!(
        "sent SIGKILL to process group {pid} after the {} grace",
        whole_secs(spec.grace)
    ));
    notes.extend(signal_group(pid, "KILL").err());

    let give_up = Instant::now() + AFTER_KILL;
    let status = match wait_until(&mut child, give_up) {
        Ok(Some(exit)) => HookStatus::TimedOut {
            timeout: spec.timeout,
            code: exit.code(),
            signal: exit.signal(),
        },
        Ok(None) => {
            notes.push(format!(
                "hook process {pid} still alive {} after SIGKILL (not ours to kill, or stuck \
                 in the kernel); left behind",
                whole_secs(AFTER_KILL)
            ));
            reap_in_background(child);
            HookStatus::TimedOut {
                timeout: spec.timeout,
                code: None,
                signal: None,
            }
        }
        Err(e) => {
            notes.push(format!("could not wait for the hook: {e}"));
            HookStatus::TimedOut {
                timeout: spec.timeout,
                code: None,
                signal: None,
            }
        }
    };
    if !readers.wait_until(give_up) {
        notes.push(
            "stdout/stderr still open after SIGKILL: a process outside the group (e.g. one \
             that called setsid) holds them; capture stopped"
                .to_string(),
        );
    }
    status
}

fn exit_status(exit: ExitStatus) -> HookStatus {
    if exit.success() {
        HookStatus::Succeeded
    } else {
        HookStatus::Failed {
            code: exit.code(),
            signal: exit.signal(),
        }
    }
}

const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(50);

/// Polls `try_wait` until the child exits (`Some`) or `deadline` passes (`None`).
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    let mut pause = POLL_MIN;
    loop {
        if let Some(exit) = child.try_wait()? {
            return Ok(Some(exit));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// Whether the (unreaped) leader is still running rather than a zombie. Reads
/// `/proc/<pid>/stat`; where that is unavailable, answers `false`, which only means the
/// grace may end once the output pipes close.
fn leader_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": comm may contain anything, so the state follows the last ')'.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X") | Some("x"))
}

/// Reaps a child we stopped waiting for, so that it does not stay a zombie.
fn reap_in_background(mut child: Child) {
    let _ = thread::Builder::new()
        .name("hook-reaper".to_string())
        .spawn(move || {
            let _ = child.wait();
        });
}

/// Sends `SIGsig` to every process in group `pgid` via the `kill` command (see the module
/// doc for why). A group that no longer exists is not an error; anything else comes back as
/// a note for the post-mortem.
fn signal_group(pgid: u32, sig: &str) -> Result<(), String> {
    let target = format!("-{pgid}");
    let mut kill = Command::new("kill");
    kill.args([format!("-{sig}").as_str(), "--", &target]);
    let output = match run_quietly(&mut kill) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut sh = Command::new("/bin/sh");
            sh.args(["-c", r#"kill -s "$0" -- "$1""#, sig, &target]);
            run_quietly(&mut sh)
        }
        other => other,
    };
    match output {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("No such process") {
                Ok(())
            } else {
                Err(format!(
                    "SIG{sig} to process group {pgid} failed ({}): {}",
                    out.status,
                    stderr.trim()
                ))
            }
        }
        Err(e) => Err(format!(
            "SIG{sig} to process group {pgid} failed: could not run kill: {e}"
        )),
    }
}

fn run_quietly(cmd: &mut Command) -> io::Result<std::process::Output> {
    // LC_ALL=C so that "No such process" is not translated.
    cmd.env("LC_ALL", "C").stdin(Stdio::null()).output()
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

type Pipe = Box<dyn Read + Send>;

/// Completion signals from the reader threads.
struct Readers {
    rx: Receiver<()>,
    pending: usize,
}

impl Readers {
    /// Waits until every reader has hit end of file (`true`) or `deadline` passes (`false`).
    fn wait_until(&mut self, deadline: Instant) -> bool {
        while self.pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(()) => self.pending -= 1,
                Err(RecvTimeoutError::Timeout) => return false,
                // Every sender is gone, so every reader has finished (or died).
                Err(RecvTimeoutError::Disconnected) => self.pending = 0,
            }
        }
        true
    }
}

fn spawn_reader(
    name: &str,
    mut pipe: Pipe,
    cap: Arc<Mutex<Capture>>,
    done: Sender<()>,
) -> io::Result<()> {
    thread::Builder::new()
        .name(format!("hook-{name}"))
        .spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => lock(&cap).push(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        })
        .map(|_| ())
}

fn lock(cap: &Mutex<Capture>) -> std::sync::MutexGuard<'_, Capture> {
    cap.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn snapshot(cap: &Mutex<Capture>) -> (String, u64) {
    let cap = lock(cap);
    (cap.render(), cap.dropped())
}

/// The first and last `half` bytes of a stream, and how many bytes it had in all.
struct Capture {
    half: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl Capture {
    fn new(half: usize) -> Self {
        Capture {
            half,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.half - self.head.len();
        if room > 0 {
            let n = room.min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if data.len() >= self.half {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.half..]);
        } else {
            self.tail.extend(data);
            let excess = self.tail.len().saturating_sub(self.half);
            self.tail.drain(..excess);
        }
    }

    fn dropped(&self) -> u64 {
        self.total - (self.head.len() + self.tail.len()) as u64
    }

    fn render(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        let dropped = self.dropped();
        if dropped > 0 {
            text.push_str(&format!("\n[guardian: {dropped} bytes dropped]\n"));
        }
        let (a, b) = self.tail.as_slices();
        text.push_str(&String::from_utf8_lossy(&[a, b].concat()));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ..sh("echo $$; sleep 1000 & sleep 1000")
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
        assert_group_gone(pgid);
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
        let _ = signal_group(first_line_pid(&out), "KILL");
    }

    #[test]
    fn capture_keeps_head_and_tail() {
        let mut cap = Capture::new(4);
        cap.push(b"ab");
        cap.push(b"cdef");
        assert_eq!((cap.render(), cap.dropped()), ("abcdef".to_string(), 0));
        cap.push(b"gh");
        cap.push(b"ijklmnop");
        cap.push(b"q");
        assert_eq!(cap.dropped(), 9);
        assert_eq!(cap.render(), "abcd\n[guardian: 9 bytes dropped]\nnopq");
    }
}
