//! Opening the state database: creating the file private, SQLite's pragmas (WAL,
//! `synchronous=FULL`, foreign keys), a read-only connection beside the daemon's, and bringing
//! the schema up to date (`migrations`).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::migrations::MIGRATIONS;
use super::{Doing, Result, Store, StoreError};

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// Opens the state database at `path`, creating the file and its schema if needed and
    /// bringing an older schema up to date. The directory must exist. A new file is made
    /// readable by its owner only (whatever the umask), and SQLite gives its WAL and shared
    /// memory files the database's mode: it holds approvals and the record.
    pub fn open(path: &Path) -> Result<Store> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            // Closed before SQLite opens the file, never after: closing any descriptor of a
            // file drops every POSIX lock this process holds on it, SQLite's included, and the
            // next process to open the database would then think it the last user and delete
            // the WAL under us.
            Ok(file) => drop(file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(StoreError::Invalid(format!(
                    "cannot create the state database {}: {e}",
                    path.display()
                )))
            }
        }
        let conn = Connection::open(path)
            .doing(|| format!("opening state database {}", path.display()))?;
        Store::setup(conn, path.to_path_buf(), true)
    }

    /// Opens the state database for reading only, beside the daemon's own connection (the
    /// database is in WAL mode, so reading never waits for a writer nor holds one up). No
    /// migration is run: the file must already be at this guardian's schema.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        use rusqlite::OpenFlags;
        let shown = path.display().to_string();
        let opening = || format!("opening state database {shown} to read");
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .doing(opening)?;
        conn.busy_timeout(BUSY_TIMEOUT).doing(opening)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .doing(opening)?;
        if version != MIGRATIONS.len() as i64 {
            return Err(StoreError::Invalid(format!(
                "{shown} is at schema version {version}, this guardian reads version {}",
                MIGRATIONS.len()
            )));
        }
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            id_seed: random_seed(),
            id_counter: 0,
        })
    }

    /// A store that lives in memory only, for tests.
    pub fn open_in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory().doing(|| "opening in-memory store".to_string())?;
        Store::setup(conn, PathBuf::from(":memory:"), false)
    }

    fn setup(conn: Connection, path: PathBuf, wal: bool) -> Result<Store> {
        let shown = path.display().to_string();
        let opening = || format!("opening state database {shown}");
        conn.busy_timeout(BUSY_TIMEOUT).doing(opening)?;
        // The first statement that reads the file: a file that is not SQLite fails here.
        if wal {
            conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
                row.get::<_, String>(0)
            })
            .doing(opening)?;
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .doing(opening)?;
        conn.pragma_update(None, "foreign_keys", true)
            .doing(opening)?;
        let mut store = Store {
            conn,
            path,
            id_seed: random_seed(),
            id_counter: 0,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Where the store lives (`:memory:` for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// 16 random bytes: from the OS when it has them, else from std's per-process random hash keys.
fn random_seed() -> [u8; 16] {
    use std::io::Read;
    let mut seed = [0u8; 16];
    let from_os = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .is_ok();
    if !from_os {
        let a = RandomState::new().hash_one(0u8);
        let b = RandomState::new().hash_one(1u8);
        seed[..8].copy_from_slice(&a.to_le_bytes());
        seed[8..].copy_from_slice(&b.to_le_bytes());
    }
    seed
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;
    use crate::store::testing::*;
    use crate::store::{ChangeKind, ChangeState, StoreError};

    #[test]
    fn creates_the_schema_and_reopens_with_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guardian.db");
        let id = {
            let mut store = Store::open(&path).unwrap();
            let mode: String = store
                .conn
                .query_row("PRAGMA journal_mode", [], |row| row.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            let fk: i64 = store
                .conn
                .query_row("PRAGMA foreign_keys", [], |row| row.get(0))
                .unwrap();
            assert_eq!(fk, 1);
            let sync: i64 = store
                .conn
                .query_row("PRAGMA synchronous", [], |row| row.get(0))
                .unwrap();
            assert_eq!(sync, 2, "FULL");
            let record = store
                .insert_change(&change("abc123", T0), T0 + 1.0)
                .unwrap();
            store
                .set_state(
                    &record.id,
                    ChangeState::Healthy,
                    Some(r#"{"verdict":"healthy"}"#),
                    Some(T0 + 600.0),
                    None,
                    T0 + 601.0,
                )
                .unwrap();
            store.save_position("nginx", 42, 1234, T0 + 2.0).unwrap();
            record.id
        };
        assert!(path.exists());
        let store = Store::open(&path).unwrap();
        let version: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let record = store.get_change(&id).unwrap().unwrap();
        assert_eq!(record.commit, "abc123");
        assert_eq!(record.kind, ChangeKind::Ai);
        assert_eq!(record.state, ChangeState::Healthy);
        assert_eq!(record.decided_at, Some(T0 + 600.0));
        assert_eq!(record.updated_at, T0 + 601.0);
        assert_eq!(
            record.report,
            Some(serde_json::json!({"verdict": "healthy"}))
        );
        assert_eq!(store.load_position("nginx").unwrap(), Some((42, 1234)));
        assert_eq!(store.events_for(&id).unwrap().len(), 2);
    }

    #[test]
    fn refuses_a_schema_from_a_newer_guardian() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guardian.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { found: 99, .. }));
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("newer"), "{message}");
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(
            &path,
            "this is not a database, just some text\n".repeat(100),
        )
        .unwrap();
        let err = Store::open(&path).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("not a database"), "{message}");
        // And the file is left alone.
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("this is not a database"));
    }

    #[test]
    fn a_missing_directory_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("guardian.db");
        let message = Store::open(&path).unwrap_err().to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
}
