//! The state directory is guardian's alone, whatever the umask it was started under: it holds
//! the record, the keys that sign the audit trail and derive approval links, and the outbox.
//! It is created 0700; one that others can enter or read is refused at start, with the command
//! that fixes it; files in it that others could read are made 0600 (guardian creates its own
//! so: the database, its WAL and shared memory, the keys, the snapshot). One daemon at a time
//! holds it, by an exclusive lock on `guardian.lock` in it ([`Lock`]).

use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The lock file in the state directory; it holds the pid of the daemon that has it.
pub const LOCK_FILE: &str = "guardian.lock";

/// The state directory held by one daemon: an exclusive `flock` on [`LOCK_FILE`] for as long as
/// this lives. Two daemons on one directory would each follow the logs, judge the same changes
/// twice, revert twice and run two redeploy hooks at once. The kernel lets the lock go when the
/// process ends, however it ends, so a killed daemon leaves nothing stale behind.
pub struct Lock {
    dir: PathBuf,
    _file: Flock<std::fs::File>,
}

impl Lock {
    /// Takes the lock on `dir` (made by [`prepare`]), or says who holds it.
    pub fn take(dir: &Path) -> Result<Lock, String> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                format!(
                    "cannot open the state directory's lock {}: {e}",
                    path.display()
                )
            })?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let holder = match file.read_to_string(&mut text) {
                    Ok(_) => text.trim().parse::<u32>().ok(),
                    Err(_) => None,
                };
                return Err(format!(
                    "another guardian{} is running on the state directory {} (it holds {}): \
                     two would judge and revert the same changes. Stop it first, or give this \
                     one a state_dir of its own in [daemon]",
                    holder
                        .map(|pid| format!(" (pid {pid})"))
                        .unwrap_or_default(),
                    dir.display(),
                    path.display()
                ));
            }
            Err((_, errno)) => {
                return Err(format!(
                    "cannot lock the state directory's lock {}: {errno}",
                    path.display()
                ))
            }
        };
        // Who holds it, for the next one to name: read only while the lock is held, never
        // trusted for anything else.
        let noted = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        if let Err(e) = noted {
            tracing::warn!("cannot note this daemon's pid in {}: {e}", path.display());
        }
        Ok(Lock {
            dir: dir.to_owned(),
            _file: file,
        })
    }

    /// The directory locked.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Creates the state directory (0700) if it does not exist, refuses one that other users can
/// enter or read, and makes private any file in it that is not. Returns what it changed, one
/// line each, for the log.
pub fn prepare(dir: &Path) -> Result<Vec<String>, String> {
    let shown = dir.display();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the state directory {shown}: {e}"))?;
    let meta = std::fs::metadata(dir)
        .map_err(|e| format!("cannot read the state directory {shown}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("the state directory {shown} is not a directory"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "the state directory {shown} is open to other users (mode {mode:o}): it holds \
             approvals, the audit trail and the keys that sign it. Make it private with: \
             chmod 700 {shown}"
        ));
    }
    let mut changed = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list the state directory {shown}: {e}"))?;
    for entry in entries.flatten() {
        let path = entry.path();
        // Not followed: a link's target is not guardian's to change.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_file() && mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o700))
                .map_err(|e| {
                    format!(
                        "{} can be read by other users (mode {mode:o}) and cannot be made \
                         private: {e}; run chmod 600 {}",
                        path.display(),
                        path.display()
                    )
                })?;
            changed.push(format!(
                "made {} private (mode {mode:o} -> {:o})",
                path.display(),
                mode & 0o700
            ));
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_at_a_time_and_the_second_names_the_directory_and_the_holder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        prepare(&dir).unwrap();
        let first = Lock::take(&dir).unwrap();
        assert_eq!(first.dir(), dir);
        assert_eq!(mode(&dir.join(LOCK_FILE)), 0o600);
        // flock is per open file: a second take conflicts even in the same process.
        let refused = Lock::take(&dir).err().expect("a second lock is refused");
        assert_eq!(
            refused,
            format!(
                "another guardian (pid {}) is running on the state directory {} (it holds {}): \
                 two would judge and revert the same changes. Stop it first, or give this one a \
                 state_dir of its own in [daemon]",
                std::process::id(),
                dir.display(),
                dir.join(LOCK_FILE).display()
            )
        );
        drop(first);
        let again = Lock::take(&dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(again);
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_state_directory_is_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/state");
        assert_eq!(prepare(&dir).unwrap(), Vec::<String>::new());
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn a_directory_others_can_read_is_refused_with_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = prepare(&dir).unwrap_err();
        assert!(err.contains("mode 755"), "{err}");
        assert!(
            err.ends_with(&format!("chmod 700 {}", dir.display())),
            "{err}"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o710)).unwrap();
        assert!(
            prepare(&dir).is_err(),
            "entering is enough to read a known file name"
        );
    }

    #[test]
    fn files_others_could_read_are_made_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        prepare(&dir).unwrap();
        let db = dir.join("guardian.db");
        std::fs::write(&db, "").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let changed = prepare(&dir).unwrap();
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert_eq!(mode(&db), 0o600);
    }
}
