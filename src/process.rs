//! Runs a program in its own process group and always comes back: output captured and
//! bounded, a timeout enforced on the whole group, and how it ended reported as values. The
//! one process runner of the crate: git and the redeploy hook both run through it.
//!
//! - The program leads **its own process group** (`process_group(0)`), so a timeout reaches
//!   its grandchildren too. Killing only the direct child would orphan whatever it
//!   backgrounded (`sleep 1000 &`, an ssh ControlMaster), and those orphans would keep
//!   running and keep our output pipes open.
//! - On timeout: `SIGTERM` to the group (`killpg(2)`), then [`Limits::grace`] to clean up (git
//!   removes its lock files on `SIGTERM`; a `SIGKILL`ed git leaves `index.lock` behind), then
//!   `SIGKILL` to the group. The grace ends early once the leader has exited and nothing
//!   holds the output pipes. The leader is not reaped until the `SIGKILL` has been sent: an
//!   unreaped leader (even a zombie) keeps its pid, so the group id cannot have been reused
//!   by an unrelated process when we signal it.
//! - stdout and stderr are read by a thread each, so a chatty program cannot block on a full
//!   pipe; each keeps its first [`Limits::head`] and last [`Limits::tail`] bytes and counts
//!   what it drops. stdin is `/dev/null`, or bytes written by a thread of their own (a large
//!   input cannot deadlock against the output).
//! - Every wait is bounded: [`run`] returns within `timeout + grace + ~1 s` whatever the
//!   program does, and within `timeout + drain` when it exits on its own.
//!
//! `forbid(unsafe_code)` holds: `nix` wraps `killpg` and `waitid` safely.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// After `SIGKILL`, how long we wait for the leader and the output pipes before giving up.
pub const AFTER_KILL: Duration = Duration::from_secs(1);

const POLL_MIN: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(50);

/// How long a run may take and how much of its output is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time from start until the group is sent `SIGTERM`.
    pub timeout: Duration,
    /// Time from `SIGTERM` until the group is sent `SIGKILL`.
    pub grace: Duration,
    /// How long output is still read after the program exited on its own (a process it
    /// started may hold the pipes).
    pub drain: Duration,
    /// Bytes kept from the start of each stream.
    pub head: usize,
    /// Bytes kept from the end of each stream (after the head).
    pub tail: usize,
}

/// How a process that was waited for ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// It died of this signal.
    Signal(i32),
}

impl Exit {
    fn of(status: ExitStatus) -> Exit {
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            // wait(2) reports only exits and deaths by signal for a process it reaps; should
            // that ever not hold, the raw status is the most honest code there is.
            (None, None) => Exit::Code(status.into_raw()),
        }
    }

    /// Whether it exited with status 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    /// The exit status, if it exited.
    pub fn code(self) -> Option<i32> {
        match self {
            Exit::Code(code) => Some(code),
            Exit::Signal(_) => None,
        }
    }

    /// The signal it died of, if it did.
    pub fn signal(self) -> Option<i32> {
        match self {
            Exit::Code(_) => None,
            Exit::Signal(signal) => Some(signal),
        }
    }
}

/// How the run ended.
#[derive(Debug)]
pub enum End {
    /// It ended before the timeout (exited, or died of a signal it did not get from us).
    Exited(Exit),
    /// Still running at the timeout, so its group was terminated. How the leader finally
    /// ended (`Exit::Signal(9)` means it needed `SIGKILL`); `None` if it could not be reaped.
    TimedOut(Option<Exit>),
    /// It could not be waited for (only if something else reaped it, e.g. with `SIGCHLD`
    /// ignored): how it ended is unknown. Its group is not signalled, since its id may
    /// already belong to another process.
    Unknown(io::Error),
}

/// What the runner did or noticed besides how the program ended, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// At the timeout: `SIGTERM` sent to the group.
    Terminated,
    /// After the grace: `SIGKILL` sent to the group (always, on the timeout path: members
    /// that closed their output may still be alive).
    Killed,
    /// A signal to the group failed for another reason than the group being gone.
    SignalFailed { signal: Signal, error: Errno },
    /// The leader was still alive [`AFTER_KILL`] after `SIGKILL` (not ours to kill, or stuck
    /// in the kernel): left behind, reaped in the background.
    Survived,
    /// Waiting for the leader after `SIGKILL` failed, with this error.
    WaitFailed(String),
    /// stdout/stderr were still open [`Limits::drain`] after the program exited: a process
    /// it started holds them. Capture stopped; that process was left running.
    HeldAfterExit,
    /// stdout/stderr were still open after `SIGKILL`: a process outside the group (e.g. one
    /// that called `setsid`) holds them. Capture stopped.
    HeldAfterKill,
}

/// What was kept of one output stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first [`Limits::head`] bytes.
    pub head: Vec<u8>,
    /// The last [`Limits::tail`] bytes after the head.
    pub tail: Vec<u8>,
    /// Bytes read in all.
    pub total: u64,
    /// Whether the stream was read to its end (`false`: something still held it open when
    /// capture stopped, or it could not be read).
    pub complete: bool,
}

impl Captured {
    /// Bytes read but not kept.
    pub fn dropped(&self) -> u64 {
        self.total - (self.head.len() + self.tail.len()) as u64
    }
}

/// Everything known about one run.
#[derive(Debug)]
pub struct Finished {
    /// The leader's process id, which is also the group's id.
    pub pid: u32,
    pub end: End,
    pub stdout: Captured,
    pub stderr: Captured,
    pub events: Vec<Event>,
}

/// Why a run did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process could not be created.
    #[error("{0}")]
    Spawn(#[source] io::Error),
    /// A thread to read its `stream` (or write its stdin) could not be started. Nobody would
    /// serve that pipe and the program could block on it forever, so its group was sent
    /// `SIGKILL` (`kill` holds the error if that failed) and it is reaped in the background.
    #[error("could not start the {stream} thread: {error}")]
    Thread {
        pid: u32,
        stream: &'static str,
        #[source]
        error: io::Error,
        kill: Option<Errno>,
    },
}

/// Runs `cmd` in its own process group to its end or to `limits.timeout`, feeding it `stdin`
/// (`/dev/null` when `None`). Blocking (call it from `spawn_blocking` or a thread of its
/// own); never panics on anything the program does. `cmd`'s stdio and process group are set
/// here; its arguments, directory and environment are the caller's.
pub fn run(cmd: Command, stdin: Option<Vec<u8>>, limits: &Limits) -> Result<Finished, Error> {
    run_noted(cmd, stdin, limits, None)
}

/// [`run`], noting the group in `note` while it is waited for (see [`crate::running`]).
pub fn run_noted(
    mut cmd: Command,
    stdin: Option<Vec<u8>>,
    limits: &Limits,
    note: Option<&std::path::Path>,
) -> Result<Finished, Error> {
    let start = Instant::now();
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd.spawn().map_err(Error::Spawn)?;
    let pid = child.id();
    // Removed when this returns, on every path: guardian no longer waits on the group.
    let _noted = note.and_then(|path| crate::running::note(path, pid));

    // One capture per stream, shared with its reader thread so that what was read so far
    // survives even if the thread has to be abandoned.
    let out_cap = Arc::new(Mutex::new(Capture::new(limits.head, limits.tail)));
    let err_cap = Arc::new(Mutex::new(Capture::new(limits.head, limits.tail)));
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
    let mut started = Ok(());
    for (stream, pipe, cap) in pipes {
        let Some(pipe) = pipe else { continue };
        match spawn_reader(stream, pipe, Arc::clone(cap), done_tx.clone()) {
            Ok(()) => readers.pending += 1,
            Err(e) => {
                started = Err((stream, e));
                break;
            }
        }
    }
    drop(done_tx);
    if let (Ok(()), Some(input), Some(pipe)) = (&started, stdin, child.stdin.take()) {
        started = spawn_writer(pipe, input).map_err(|e| ("stdin", e));
    }
    if let Err((stream, error)) = started {
        let kill = signal_group(pid, Signal::SIGKILL).err();
        reap_in_background(child);
        return Err(Error::Thread {
            pid,
            stream,
            error,
            kill,
        });
    }

    let mut events = Vec::new();
    let end = match wait_until(&mut child, start + limits.timeout) {
        Ok(Some(exit)) => {
            if !readers.wait_until(Instant::now() + limits.drain) {
                events.push(Event::HeldAfterExit);
            }
            End::Exited(Exit::of(exit))
        }
        Ok(None) => End::TimedOut(terminate(limits, pid, child, &mut readers, &mut events)),
        Err(e) => {
            readers.wait_until(Instant::now() + limits.drain);
            End::Unknown(e)
        }
    };
    Ok(Finished {
        pid,
        end,
        stdout: snapshot(&out_cap),
        stderr: snapshot(&err_cap),
        events,
    })
}

/// Sends `signal` to every process in group `pgid`. A group that no longer exists is not an
/// error (it ended on its own in the meantime).
pub fn signal_group(pgid: u32, signal: Signal) -> Result<(), Errno> {
    let Ok(raw) = i32::try_from(pgid) else {
        // Not a pid the kernel hands out, so no group of ours.
        return Err(Errno::ESRCH);
    };
    match killpg(Pid::from_raw(raw), signal) {
        Err(Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// The timeout path: TERM the group, give it `grace`, KILL the group, reap with a bound.
fn terminate(
    limits: &Limits,
    pid: u32,
    mut child: Child,
    readers: &mut Readers,
    events: &mut Vec<Event>,
) -> Option<Exit> {
    let send = |signal: Signal, sent: Event, events: &mut Vec<Event>| {
        events.push(sent);
        if let Err(error) = signal_group(pid, signal) {
            events.push(Event::SignalFailed { signal, error });
        }
    };
    send(Signal::SIGTERM, Event::Terminated, events);

    // Wait out the grace, but stop early once the leader has exited and nothing holds our
    // pipes any more. The leader is not reaped here (see the module doc).
    let grace_end = Instant::now() + limits.grace;
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
    send(Signal::SIGKILL, Event::Killed, events);

    let give_up = Instant::now() + AFTER_KILL;
    let leader = match wait_until(&mut child, give_up) {
        Ok(Some(exit)) => Some(Exit::of(exit)),
        Ok(None) => {
            events.push(Event::Survived);
            reap_in_background(child);
            None
        }
        Err(e) => {
            events.push(Event::WaitFailed(e.to_string()));
            None
        }
    };
    if !readers.wait_until(give_up) {
        events.push(Event::HeldAfterKill);
    }
    leader
}

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

/// Whether the (unreaped) leader is still running rather than exited. Asks `waitid` with
/// `WNOWAIT`, which reports an exit without reaping, so the pid stays ours until `SIGKILL`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn leader_running(pid: u32) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    // Anything but "still alive" (exited, or an error such as ECHILD) means there is no
    // running leader to wait for.
    matches!(
        waitid(Id::Pid(Pid::from_raw(raw)), flags),
        Ok(WaitStatus::StillAlive)
    )
}

/// Where `waitid` is not available, answers `false`, which only means the grace may end once
/// the output pipes close.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn leader_running(_pid: u32) -> bool {
    false
}

/// Reaps a child we stopped waiting for, so that it does not stay a zombie.
fn reap_in_background(mut child: Child) {
    let _ = thread::Builder::new()
        .name("process-reaper".to_string())
        .spawn(move || {
            let _ = child.wait();
        });
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
    stream: &str,
    mut pipe: Pipe,
    cap: Arc<Mutex<Capture>>,
    done: Sender<()>,
) -> io::Result<()> {
    thread::Builder::new()
        .name(format!("process-{stream}"))
        .spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => {
                        lock(&cap).complete = true;
                        break;
                    }
                    Ok(n) => lock(&cap).push(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        })
        .map(|_| ())
}

fn spawn_writer(mut pipe: ChildStdin, input: Vec<u8>) -> io::Result<()> {
    thread::Builder::new()
        .name("process-stdin".to_string())
        .spawn(move || {
            // A program that stops reading early closes the pipe: not our error to report.
            // Dropping the pipe closes its stdin.
            let _ = pipe.write_all(&input);
        })
        .map(|_| ())
}

fn lock(cap: &Mutex<Capture>) -> MutexGuard<'_, Capture> {
    cap.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn snapshot(cap: &Mutex<Capture>) -> Captured {
    let mut cap = lock(cap);
    // Taken, not copied: a reader abandoned on a held pipe may go on pushing, to no one.
    let tail = std::mem::take(&mut cap.tail);
    Captured {
        head: std::mem::take(&mut cap.head),
        tail: tail.into(),
        total: cap.total,
        complete: cap.complete,
    }
}

/// The first `head` and last `tail` bytes of a stream, and how many bytes it had in all.
struct Capture {
    head_max: usize,
    tail_max: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
    complete: bool,
}

impl Capture {
    fn new(head_max: usize, tail_max: usize) -> Self {
        Capture {
            head_max,
            tail_max,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
            complete: false,
        }
    }

    fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.head_max - self.head.len();
        if room > 0 {
            let n = room.min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if data.len() >= self.tail_max {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.tail_max..]);
        } else {
            self.tail.extend(data);
            let excess = self.tail.len().saturating_sub(self.tail_max);
            self.tail.drain(..excess);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Whether `pid` is a live process (not a zombie). Zombies do not count: in a container
    /// whose pid 1 does not reap, killed orphans stay zombies forever.
    pub(crate) fn alive(pid: u32) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // "pid (comm) S ...": comm may contain anything, so the state follows the last ')'.
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next());
        !matches!(state, None | Some("Z") | Some("X") | Some("x"))
    }

    /// Waits up to a second for each of `pids` to be gone, then names those still alive.
    pub(crate) fn assert_gone(pids: &[u32]) {
        let until = Instant::now() + Duration::from_secs(1);
        while pids.iter().any(|p| alive(*p)) && Instant::now() < until {
            thread::sleep(Duration::from_millis(20));
        }
        let survivors: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        assert_eq!(survivors, Vec::<u32>::new(), "processes survived");
    }

    fn limits(timeout_ms: u64) -> Limits {
        Limits {
            timeout: Duration::from_millis(timeout_ms),
            grace: Duration::from_secs(1),
            drain: Duration::from_secs(2),
            head: 1024,
            tail: 0,
        }
    }

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn input_is_fed_and_output_kept_whole_under_its_limit() {
        let input = b"x".repeat(300_000);
        let big = Limits {
            head: 400_000,
            ..limits(20_000)
        };
        let done = run(sh("wc -c; echo err >&2; exit 4"), Some(input), &big).unwrap();
        assert_eq!(done.end_exit(), Some(Exit::Code(4)));
        assert_eq!(String::from_utf8_lossy(&done.stdout.head).trim(), "300000");
        assert!(done.stdout.complete && done.stdout.dropped() == 0);
        assert_eq!(done.stderr.head, b"err\n");
        assert!(done.events.is_empty(), "{:?}", done.events);
    }

    #[test]
    fn a_death_by_signal_is_reported_as_the_signal() {
        let done = run(sh("kill -TERM $$"), None, &limits(20_000)).unwrap();
        assert_eq!(done.end_exit(), Some(Exit::Signal(15)));
    }

    #[test]
    fn a_program_that_cannot_start_is_an_error_naming_why() {
        let err = run(Command::new("/nonexistent/prog"), None, &limits(1000)).unwrap_err();
        assert!(matches!(&err, Error::Spawn(e) if e.kind() == io::ErrorKind::NotFound));
    }

    #[test]
    fn a_timeout_terminates_the_group_and_the_grace_lets_it_clean_up() {
        // The leader cleans up on SIGTERM (as git removes its lock files) and its child
        // ignores SIGTERM, so only the SIGKILL after the grace ends that one.
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("index.lock");
        std::fs::write(&lock, "").unwrap();
        let script = format!(
            "(trap '' TERM; echo $BASHPID >&2; exec sleep 1000) & \
             trap 'rm {lock}; exit 1' TERM; echo $$; while :; do sleep 0.05; done",
            lock = lock.display()
        );
        let mut cmd = Command::new("bash");
        cmd.args(["-c", &script]);
        let started = Instant::now();
        let done = run(cmd, None, &limits(500)).unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(1500), "{took:?}");
        assert!(took < Duration::from_millis(3500), "{took:?}");
        assert!(
            matches!(done.end, End::TimedOut(Some(Exit::Code(1)))),
            "{done:?}"
        );
        assert_eq!(done.events, [Event::Terminated, Event::Killed]);
        assert!(!lock.exists(), "the leader did not get to clean up");
        // The first line of each stream is a pid (bash may add "Terminated" after it).
        let first_pid = |c: &Captured| -> u32 {
            let text = String::from_utf8_lossy(&c.head).into_owned();
            let line = text.lines().next().unwrap_or_default().to_owned();
            line.parse().unwrap_or_else(|e| panic!("{e}: {text:?}"))
        };
        let (leader, child) = (first_pid(&done.stdout), first_pid(&done.stderr));
        assert_eq!(leader, done.pid);
        assert_gone(&[leader, child]);
    }

    #[test]
    fn a_signal_to_a_group_that_is_gone_is_not_an_error() {
        let mut child = sh("exit 0").process_group(0).spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(signal_group(pid, Signal::SIGTERM), Ok(()));
    }

    #[test]
    fn capture_keeps_head_and_tail() {
        let mut cap = Capture::new(4, 4);
        cap.push(b"ab");
        cap.push(b"cdef");
        assert_eq!((cap.head.as_slice(), cap.total), (&b"abcd"[..], 6));
        cap.push(b"gh");
        cap.push(b"ijklmnop");
        cap.push(b"q");
        let kept = snapshot(&Mutex::new(cap));
        assert_eq!(
            (&kept.head[..], &kept.tail[..]),
            (&b"abcd"[..], &b"nopq"[..])
        );
        assert_eq!(kept.dropped(), 9);
        let mut head_only = Capture::new(3, 0);
        head_only.push(b"abcdef");
        assert_eq!(snapshot(&Mutex::new(head_only)).dropped(), 3);
    }

    impl Finished {
        fn end_exit(&self) -> Option<Exit> {
            match self.end {
                End::Exited(exit) => Some(exit),
                _ => None,
            }
        }
    }
}
