//! The state directory is guardian's alone, whatever the umask it was started under: it holds
//! the record, the keys that sign the audit trail and derive approval links, and the outbox.
//! It is created 0700; one that others can enter or read is refused at start, with the command
//! that fixes it; files in it that others could read are made 0600 (guardian creates its own
//! so: the database, its WAL and shared memory, the keys, the snapshot).

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

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
