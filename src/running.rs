//! The note of the redeploy hook guardian is waiting on, kept in the state directory while the
//! hook runs, so that the next run can stop what a killed guardian left running.
//!
//! Under systemd the unit's `KillMode=control-group` ends the hook with guardian. Run by hand,
//! or killed with `-9`, guardian leaves the hook's process group running, and the next run
//! would start a deploy or a rollback while the last one's hook still restarts the service.
//! So the runner notes the group (its id and its leader's start time) before it waits, removes
//! the note when it stops waiting, and a starting guardian that finds a note stops that group
//! the way a timeout would: `SIGTERM`, a grace, `SIGKILL`.
//!
//! A group id is only reused once the group is gone, and a new group with the same id has a
//! new leader with that pid, which has another start time. So the group is signalled only when
//! its leader is the one noted, or when the leader has exited and members of the group remain
//! (no new group can have formed under that id while they live).
//!
//! The start time is read from `/proc/PID/stat` by hand: one field of one line, which does not
//! warrant a dependency.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::process::signal_group;

/// The note's file in `state_dir`.
pub fn note_file(state_dir: &Path) -> PathBuf {
    state_dir.join("hook.running")
}

/// A written note; dropped, it is removed.
pub struct Noted(PathBuf);

impl Drop for Noted {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {e}", self.0.display());
            }
        }
    }
}

/// Notes that guardian waits on the group led by `pid`. A note that cannot be written is
/// logged, not fatal: the hook runs all the same (its timeout still holds).
pub fn note(path: &Path, pid: u32) -> Option<Noted> {
    let text = match start_time(pid) {
        Some(t) => format!("{pid} {t}\n"),
        None => format!("{pid}\n"),
    };
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    match written {
        Ok(()) => Some(Noted(path.to_owned())),
        Err(e) => {
            tracing::warn!(
                "cannot note the running hook in {}: {e}; a restart could not stop it",
                path.display()
            );
            None
        }
    }
}

/// Stops the group a note left by an earlier run names, if it still runs, and removes the
/// note. Returns what was done, for the log, or `None` when there was nothing to stop.
pub fn stop_leftover(path: &Path, grace: Duration) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let _remove = Noted(path.to_owned());
    let mut fields = text.split_whitespace();
    let pid: u32 = fields.next()?.parse().ok()?;
    let noted_start: Option<u64> = fields.next().and_then(|t| t.parse().ok());
    let ours = match (start_time(pid), noted_start) {
        // The leader lives: the group is ours only if it is the leader noted.
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => false,
        // The leader is gone: whoever is left in the group was in it then.
        (None, _) => true,
    };
    if !ours || !group_alive(pid) {
        return None;
    }
    let _ = signal_group(pid, Signal::SIGTERM);
    let until = Instant::now() + grace;
    while group_alive(pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = group_alive(pid);
    if killed {
        let _ = signal_group(pid, Signal::SIGKILL);
    }
    Some(format!(
        "the redeploy hook the last run of guardian left running (process group {pid}) was \
         stopped with SIGTERM{}, so that no two deploys run at once; what it was doing is done \
         again or escalated",
        if killed { " and SIGKILL" } else { "" }
    ))
}

/// Whether any process is in group `pgid`.
fn group_alive(pgid: u32) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(raw), None).is_ok()
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`);
/// `None` when it does not exist (or this is not Linux).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses of its
    // own: the fields after it start after the last `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    // Field 3 is the first after the name, so field 22 is the 20th.
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt as _;
    use std::process::Command;

    fn group_leader(script: &str) -> std::process::Child {
        Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_noted_group_left_running_is_stopped_and_the_note_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = note_file(dir.path());
        // A hook that backgrounded a child, as a restart script does.
        let mut hook = group_leader("sleep 60 & sleep 60");
        let pid = hook.id();
        std::mem::forget(note(&path, pid).unwrap());
        assert!(path.exists());
        let told = stop_leftover(&path, Duration::from_secs(2)).unwrap();
        assert!(told.contains(&format!("process group {pid}")), "{told}");
        hook.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while group_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!group_alive(pid), "the backgrounded child survived");
        assert!(!path.exists());
    }

    #[test]
    fn a_note_whose_group_is_gone_or_is_another_process_stops_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = note_file(dir.path());
        let mut ended = group_leader("exit 0");
        let pid = ended.id();
        ended.wait().unwrap();
        std::fs::write(&path, format!("{pid} 1\n")).unwrap();
        assert_eq!(stop_leftover(&path, Duration::from_secs(1)), None);
        assert!(!path.exists());
        // A live group led by a process that started at another time than the one noted:
        // the id was reused, and the group is not ours to stop.
        let mut other = group_leader("sleep 60");
        let start = start_time(other.id()).unwrap();
        std::fs::write(&path, format!("{} {}\n", other.id(), start + 1)).unwrap();
        assert_eq!(stop_leftover(&path, Duration::from_secs(1)), None);
        assert!(group_alive(other.id()));
        other.kill().unwrap();
        other.wait().unwrap();
        // No note, nothing to do.
        assert_eq!(stop_leftover(&path, Duration::from_secs(1)), None);
    }

    #[test]
    fn a_note_is_removed_when_its_guard_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = note_file(dir.path());
        let noted = note(&path, std::process::id()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(&format!("{} ", std::process::id())),
            "{text}"
        );
        drop(noted);
        assert!(!path.exists());
    }
}
