//! The daemon's durable state: one SQLite file under the state directory.
//!
//! - `changes`: every deploy guardian was told about, its state and the latest report.
//! - `events`: the decision log. Every state transition appends a row in the same transaction
//!   as the transition itself; rows are never updated or deleted (triggers refuse it).
//! - `source_positions`: how far each traffic source has been read (file identity and offset).
//!
//! The store reads no clock: every write takes `now` (unix seconds) from the caller. Decisions
//! are never rewritten: a change in a final state cannot move again.
//!
//! The schema is versioned with `PRAGMA user_version`: `MIGRATIONS[i]` takes the file from
//! version `i` to `i + 1`, each in its own transaction. Append to the list, never edit an entry
//! that has shipped.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The change model, re-exported: the store keeps changes in these states and every caller
/// that reads a change finds them here too.
pub use crate::change::{ChangeKind, ChangeState};

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times `insert_change` draws a new id when the one drawn is taken (48-bit ids: a
/// clash is already very unlikely; two in a row would mean the randomness is broken).
const ID_ATTEMPTS: u32 = 4;

/// Schema migrations, applied in order; the file's `user_version` is how many have been applied.
const MIGRATIONS: &[&str] = &[
    // 1: changes, the decision log, source positions.
    r#"
    CREATE TABLE changes (
        id          TEXT PRIMARY KEY,
        commit_sha  TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('ai', 'human')),
        pattern     TEXT,
        summary     TEXT,
        landed_at   REAL NOT NULL,  -- unix seconds
        state       TEXT NOT NULL,
        updated_at  REAL NOT NULL,
        decided_at  REAL,
        report      TEXT,           -- JSON of the core's Report, latest
        note        TEXT
    );
    CREATE INDEX changes_by_landed_at ON changes (landed_at);
    CREATE INDEX changes_by_state ON changes (state);

    CREATE TABLE events (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        at         REAL NOT NULL,
        change_id  TEXT REFERENCES changes (id),
        kind       TEXT NOT NULL,
        detail     TEXT NOT NULL    -- JSON
    );
    CREATE INDEX events_by_change ON events (change_id, seq);
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN
        SELECT RAISE(ABORT, 'events are append-only');
    END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN
        SELECT RAISE(ABORT, 'events are append-only');
    END;

    CREATE TABLE source_positions (
        name        TEXT PRIMARY KEY,
        file_id     INTEGER NOT NULL,  -- u64 bit-cast to i64
        offset      INTEGER NOT NULL,  -- u64 bit-cast to i64
        updated_at  REAL NOT NULL
    );
    "#,
    // 2: the outbox, alerts waiting for (or done with) delivery. Rows are never deleted: a sent
    // email keeps its sent_at, one that cannot be sent stays queued and visible.
    r#"
    CREATE TABLE outbox (
        message_id       TEXT PRIMARY KEY,   -- the Message-ID header, angle brackets included
        change_id        TEXT REFERENCES changes (id),
        subject          TEXT NOT NULL,
        body             TEXT NOT NULL,
        recipients       TEXT NOT NULL,      -- JSON array of addresses
        created_at       REAL NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  REAL NOT NULL,
        last_attempt_at  REAL,
        last_error       TEXT,
        sent_at          REAL
    );
    CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE sent_at IS NULL;
    CREATE TRIGGER outbox_no_delete BEFORE DELETE ON outbox
    BEGIN
        SELECT RAISE(ABORT, 'emails are never deleted from the outbox');
    END;
    "#,
    // 3: the trust gate. Proposals (changes submitted instead of deployed, with the policy's
    // decision), one-time approval links, and the traffic series behind post-mortem charts.
    r#"
    CREATE TABLE proposals (
        id            TEXT PRIMARY KEY,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        proposer      TEXT NOT NULL,          -- the role that submitted it
        kind          TEXT NOT NULL CHECK (kind IN ('ai', 'human')),
        pattern       TEXT NOT NULL,
        summary       TEXT NOT NULL,
        issue_url     TEXT,
        tests_run     INTEGER NOT NULL,       -- 0/1, as the proposer claims
        base_sha      TEXT NOT NULL,          -- the commit the patch applies to
        claimed_sha   TEXT,                   -- the commit in the proposer's repository
        patch         TEXT NOT NULL,          -- git format-patch output, as received
        diff_hash     TEXT NOT NULL,          -- sha256 of the patch
        decision      TEXT NOT NULL CHECK (decision IN ('deny', 'needs_approval', 'auto')),
        assessment    TEXT NOT NULL,          -- JSON: rules fired, risk factors, diff facts
        shadow        INTEGER NOT NULL,       -- 0/1: decided but never acted on
        state         TEXT NOT NULL,
        decided_by    TEXT,                   -- who approved or rejected
        decided_note  TEXT,
        approved_hash TEXT,                   -- the diff_hash an approval bound to
        change_id     TEXT REFERENCES changes (id),
        note          TEXT
    );
    CREATE INDEX proposals_by_created_at ON proposals (created_at);
    CREATE INDEX proposals_by_pattern ON proposals (pattern, created_at);

    CREATE TABLE approval_links (
        token_hash  TEXT PRIMARY KEY,          -- sha256 of the secret in the link
        proposal_id TEXT NOT NULL REFERENCES proposals (id),
        action      TEXT NOT NULL CHECK (action IN ('approve', 'reject')),
        diff_hash   TEXT NOT NULL,
        expires_at  REAL NOT NULL,
        used_at     REAL
    );

    CREATE TABLE series (
        at          INTEGER PRIMARY KEY,       -- start of a 10-second bin, unix seconds
        requests    INTEGER NOT NULL,
        errors      INTEGER NOT NULL,
        p50_ms      REAL,
        p99_ms      REAL
    );

    -- An alert can carry an HTML alternative (the post-mortem with its chart).
    ALTER TABLE outbox ADD COLUMN html TEXT;
    "#,
    // 4: the decision log becomes the audit chain: who caused each record, what it is about
    // when that is not a change, and the hash chain (see `src/audit.rs`). The rows already
    // there are chained by `chain_existing_events` in the same transaction, with the update
    // trigger dropped for that step only and then created again.
    r#"
    ALTER TABLE events ADD COLUMN actor TEXT;
    ALTER TABLE events ADD COLUMN subject TEXT;
    ALTER TABLE events ADD COLUMN prev_hash BLOB;
    ALTER TABLE events ADD COLUMN hash BLOB;
    CREATE INDEX events_by_kind ON events (kind, seq);
    DROP TRIGGER events_no_update;
    -- A row written around the store (no hash) would break the chain for every row after it.
    CREATE TRIGGER events_chained BEFORE INSERT ON events WHEN NEW.hash IS NULL
    BEGIN
        SELECT RAISE(ABORT, 'events are appended through the store, which chains them');
    END;
    "#,
    // 5: reads that cost the same however long the record grows. Each proposal's outcome as the
    // trust ledger reads it, and a tally of proposals by pattern, state, outcome and approval,
    // both kept in the same transaction as every write that changes them (`gate::proposals`);
    // indexes for the deploy queue, the ledger and a change's proposal. And approval links
    // whose secret is stored nowhere: each link has an id, its secret is derived from the id
    // with a key kept in a file, and the outbox holds the email with the id, filled in when
    // it is sent (`gate::links`). The existing proposals are tallied by
    // `gate::proposals::tally_existing` in the same transaction.
    r#"
    ALTER TABLE proposals ADD COLUMN outcome TEXT;
    CREATE TABLE proposal_tally (
        pattern   TEXT NOT NULL,
        state     TEXT NOT NULL,
        outcome   TEXT NOT NULL,
        approved  INTEGER NOT NULL,   -- 0/1: a person approved it
        n         INTEGER NOT NULL,
        PRIMARY KEY (pattern, state, outcome, approved)
    ) WITHOUT ROWID;
    CREATE INDEX proposals_by_state ON proposals (state, created_at);
    CREATE INDEX proposals_by_change ON proposals (change_id) WHERE change_id IS NOT NULL;
    CREATE INDEX proposals_by_outcome ON proposals (pattern, outcome, created_at, id);
    CREATE INDEX proposals_earning ON proposals (pattern, created_at, id, outcome, approved_hash)
        WHERE outcome = 'healthy' AND approved_hash IS NOT NULL;
    ALTER TABLE approval_links ADD COLUMN link_id TEXT;
    CREATE UNIQUE INDEX approval_links_by_id ON approval_links (link_id);
    ALTER TABLE outbox ADD COLUMN links TEXT;  -- JSON array of the approval link ids in the body
    "#,
    // 6: the gate judges the tree git makes of a proposal, and deploys exactly that tree: its
    // id is stored with the decision, and an approval binds to it as well as to the diff.
    r#"
    ALTER TABLE proposals ADD COLUMN tree_sha TEXT;       -- the tree judged (NULL: refused unread)
    ALTER TABLE proposals ADD COLUMN approved_tree TEXT;  -- the tree_sha an approval bound to
    "#,
];

/// The schema version that brought the proposal tally.
const TALLY_SCHEMA_VERSION: i64 = 5;

/// The schema version that brought the audit chain (`guardian audit verify` needs it).
pub const AUDIT_SCHEMA_VERSION: i64 = 4;

/// The update trigger on `events`, as migration 1 made it (migration 4 drops it while it
/// chains the existing rows, then makes it again).
const EVENTS_NO_UPDATE: &str = "
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN
        SELECT RAISE(ABORT, 'events are append-only');
    END;";

/// Event kinds written to the decision log.
const EVENT_CHANGE_CREATED: &str = "change_created";
const EVENT_STATE_CHANGED: &str = "state_changed";
const EVENT_EMAIL_QUEUED: &str = "email_queued";
const EVENT_EMAIL_SENT: &str = "email_sent";

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // As elsewhere in the crate, causes are part of the message and deliberately not
    // `#[source]`, so that error reporters do not print them twice.
    /// SQLite failed while doing `doing` (e.g. "saving change chg_… state").
    #[error("{doing}: {error}")]
    Sqlite {
        doing: String,
        error: rusqlite::Error,
    },
    /// A report that is not JSON, or a stored value that cannot be read back.
    #[error("{doing}: {error}")]
    Json {
        doing: String,
        error: serde_json::Error,
    },
    #[error("no change with id {0}")]
    NotFound(String),
    /// The change has been decided; decisions are never rewritten.
    #[error("change {id} is already {state}, a final state: decisions are never rewritten")]
    FinalState { id: String, state: ChangeState },
    /// The change is not final, but cannot go there from where it is.
    #[error("change {id} is {from} and cannot become {to}")]
    Transition {
        id: String,
        from: ChangeState,
        to: ChangeState,
    },
    /// The file was written by a newer guardian.
    #[error(
        "{}: schema version {found} is newer than this guardian knows ({known}); \
         upgrade guardian or use another state directory",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    /// A stored value this version does not understand (e.g. an unknown state).
    #[error("{0}")]
    Corrupt(String),
    /// An argument the store refuses (e.g. a time that is not finite).
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches what was being done to a SQLite error.
trait Doing<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Doing<T> for rusqlite::Result<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|error| StoreError::Sqlite {
            doing: what(),
            error,
        })
    }
}

/// A deploy guardian is told about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewChange {
    pub commit: String,
    pub kind: ChangeKind,
    pub pattern: Option<String>,
    pub summary: Option<String>,
    /// Unix seconds.
    pub landed_at: f64,
}

/// A change as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChangeRecord {
    pub id: String,
    pub commit: String,
    pub kind: ChangeKind,
    pub pattern: Option<String>,
    pub summary: Option<String>,
    pub landed_at: f64,
    pub state: ChangeState,
    pub updated_at: f64,
    pub decided_at: Option<f64>,
    /// The latest report (the core's `Report`), as JSON.
    pub report: Option<Value>,
    pub note: Option<String>,
}

/// One row of the decision log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventRecord {
    /// Position in the log, increasing, never reused.
    pub seq: i64,
    pub at: f64,
    pub change_id: Option<String>,
    /// `change_created` or `state_changed` so far.
    pub kind: String,
    pub detail: Value,
}

/// An email in the outbox.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutboxEmail {
    /// The Message-ID header, e.g. `<chg_0123456789ab.rolled_back@guardian>`; the key.
    pub message_id: String,
    /// The change the email is about, if one.
    pub change_id: Option<String>,
    pub subject: String,
    pub body: String,
    pub to: Vec<String>,
    pub created_at: f64,
    /// Delivery attempts made so far, failed or not.
    pub attempts: u32,
    /// Not to be tried before this (unix seconds).
    pub next_attempt_at: f64,
    pub last_attempt_at: Option<f64>,
    /// Why the last failed attempt failed (kept after a later success, for the record).
    pub last_error: Option<String>,
    /// When the server accepted it; `None` while queued.
    pub sent_at: Option<f64>,
    /// The HTML alternative sent with the text (the post-mortem), if any.
    pub html: Option<String>,
    /// The approval links in the body, by id: their secrets are filled in when it is sent.
    pub links: Vec<String>,
}

/// The state database. Not `Sync`: share it behind a mutex.
pub struct Store {
    pub(crate) conn: Connection,
    /// For messages: the file, or `:memory:`.
    path: PathBuf,
    /// Random bytes drawn when the store was opened, and a counter: with the commit and the
    /// landing time, what change ids are hashed from.
    id_seed: [u8; 16],
    id_counter: u64,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

const OUTBOX_COLUMNS: &str = "message_id, change_id, subject, body, recipients, created_at, \
                              attempts, next_attempt_at, last_attempt_at, last_error, sent_at, html, \
                              links";

const CHANGE_COLUMNS: &str = "id, commit_sha, kind, pattern, summary, landed_at, state, \
                              updated_at, decided_at, report, note";

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

    /// Applies the migrations the file has not seen, each in its own transaction. Taking the
    /// write lock before reading the version keeps two processes from applying one twice.
    fn migrate(&mut self) -> Result<()> {
        let shown = self.path.display().to_string();
        loop {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .doing(|| format!("migrating state database {shown}"))?;
            let version: i64 = tx
                .pragma_query_value(None, "user_version", |row| row.get(0))
                .doing(|| format!("reading schema version of {shown}"))?;
            let applied = usize::try_from(version).map_err(|_| {
                StoreError::Corrupt(format!("{shown}: negative schema version {version}"))
            })?;
            if applied > MIGRATIONS.len() {
                return Err(StoreError::SchemaTooNew {
                    path: self.path.clone(),
                    found: version,
                    known: MIGRATIONS.len(),
                });
            }
            let Some(sql) = MIGRATIONS.get(applied) else {
                return Ok(());
            };
            let next = applied + 1;
            let doing = || format!("migrating {shown} to schema version {next}");
            tx.execute_batch(sql).doing(doing)?;
            if next as i64 == AUDIT_SCHEMA_VERSION {
                chain_existing_events(&tx).doing(doing)?;
            }
            if next as i64 == TALLY_SCHEMA_VERSION {
                crate::gate::proposals::tally_existing(&tx).doing(doing)?;
            }
            tx.pragma_update(None, "user_version", next as i64)
                .doing(doing)?;
            tx.commit().doing(doing)?;
        }
    }

    /// Where the store lives (`:memory:` for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a change guardian was told about, in state `watching`, with a new id, and logs
    /// it. Returns the record as stored.
    pub fn insert_change(&mut self, new: &NewChange, now: f64) -> Result<ChangeRecord> {
        finite("landed_at", new.landed_at)?;
        finite("now", now)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(|| format!("recording change of commit {}", new.commit))?;
        let mut id = None;
        for _ in 0..ID_ATTEMPTS {
            self.id_counter += 1;
            let candidate = change_id(&self.id_seed, self.id_counter, new);
            let taken = tx
                .query_row("SELECT 1 FROM changes WHERE id = ?1", [&candidate], |_| {
                    Ok(())
                })
                .optional()
                .doing(|| format!("checking change id {candidate}"))?
                .is_some();
            if !taken {
                id = Some(candidate);
                break;
            }
        }
        let id = id.ok_or_else(|| {
            StoreError::Invalid(format!(
                "no free change id after {ID_ATTEMPTS} attempts: the id randomness is broken"
            ))
        })?;
        let state = ChangeState::Watching;
        let doing = || format!("saving new change {id}");
        tx.execute(
            "INSERT INTO changes (id, commit_sha, kind, pattern, summary, landed_at, state, \
             updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                id,
                new.commit,
                new.kind.as_str(),
                new.pattern,
                new.summary,
                new.landed_at,
                state.as_str(),
                now
            ],
        )
        .doing(doing)?;
        let detail = serde_json::json!({
            "commit": new.commit,
            "kind": new.kind,
            "pattern": new.pattern,
            "summary": new.summary,
            "landed_at": new.landed_at,
            "state": state,
        });
        append_event(&tx, now, Some(&id), EVENT_CHANGE_CREATED, &detail).doing(doing)?;
        tx.commit().doing(doing)?;
        Ok(ChangeRecord {
            id,
            commit: new.commit.clone(),
            kind: new.kind,
            pattern: new.pattern.clone(),
            summary: new.summary.clone(),
            landed_at: new.landed_at,
            state,
            updated_at: now,
            decided_at: None,
            report: None,
            note: None,
        })
    }

    /// Moves a change to `state` and logs the transition, in one transaction. `report_json`,
    /// `decided_at` and `note` replace the stored values when given and leave them as they are
    /// when `None`. A change in a final state is never moved again (`FinalState`).
    pub fn set_state(
        &mut self,
        id: &str,
        state: ChangeState,
        report_json: Option<&str>,
        decided_at: Option<f64>,
        note: Option<&str>,
        now: f64,
    ) -> Result<()> {
        finite("now", now)?;
        if let Some(t) = decided_at {
            finite("decided_at", t)?;
        }
        let report = report_json
            .map(|json| parse_report(json, || format!("saving change {id} state {state}")))
            .transpose()?;
        let doing = || format!("saving change {id} state {state}");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        let from = current_state(&tx, id).doing(doing)??;
        if from.is_final() {
            return Err(StoreError::FinalState {
                id: id.to_string(),
                state: from,
            });
        }
        if !from.may_become(state) {
            return Err(StoreError::Transition {
                id: id.to_string(),
                from,
                to: state,
            });
        }
        tx.execute(
            "UPDATE changes SET state = ?2, report = COALESCE(?3, report), \
             decided_at = COALESCE(?4, decided_at), note = COALESCE(?5, note), updated_at = ?6 \
             WHERE id = ?1",
            params![id, state.as_str(), report_json, decided_at, note, now],
        )
        .doing(doing)?;
        let mut detail = serde_json::json!({
            "from": from,
            "to": state,
            "decided_at": decided_at,
            "note": note,
        });
        if let Some(report) = report {
            detail["report"] = report;
        }
        append_event(&tx, now, Some(id), EVENT_STATE_CHANGED, &detail).doing(doing)?;
        // The proposal this change carries out counts differently in the ledger now.
        crate::gate::proposals::retally_change(&tx, id).doing(doing)?;
        tx.commit().doing(doing)?;
        // Logged here, where every transition is written, so the journal misses none.
        let note = note.map(|n| format!(": {n}")).unwrap_or_default();
        match state {
            ChangeState::Regressed | ChangeState::Escalated | ChangeState::RolledBack => {
                tracing::warn!(change_id = id, state = %state, "change {id}: {from} -> {state}{note}")
            }
            _ => {
                tracing::info!(change_id = id, state = %state, "change {id}: {from} -> {state}{note}")
            }
        }
        Ok(())
    }

    /// Replaces the latest report of a change still being watched (evidence so far). Not a
    /// transition, so not logged. A decided change keeps the report it was decided on.
    pub fn update_report(&mut self, id: &str, report_json: &str, now: f64) -> Result<()> {
        finite("now", now)?;
        let doing = || format!("saving change {id} report");
        parse_report(report_json, doing)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        let state = current_state(&tx, id).doing(doing)??;
        if state.is_final() {
            return Err(StoreError::FinalState {
                id: id.to_string(),
                state,
            });
        }
        tx.execute(
            "UPDATE changes SET report = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, report_json, now],
        )
        .doing(doing)?;
        tx.commit().doing(doing)?;
        Ok(())
    }

    /// The change with this id, if there is one.
    pub fn get_change(&self, id: &str) -> Result<Option<ChangeRecord>> {
        let doing = || format!("reading change {id}");
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {CHANGE_COLUMNS} FROM changes WHERE id = ?1"
            ))
            .doing(doing)?;
        let raw = stmt
            .query_row([id], RawChange::from_row)
            .optional()
            .doing(doing)?;
        raw.map(RawChange::into_record).transpose()
    }

    /// The `limit` changes that landed last, newest first (ties: last recorded first).
    pub fn recent_changes(&self, limit: usize) -> Result<Vec<ChangeRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query_changes(
            &format!(
                "SELECT {CHANGE_COLUMNS} FROM changes \
                 ORDER BY landed_at DESC, rowid DESC LIMIT ?1"
            ),
            [limit],
            "reading recent changes",
        )
    }

    /// Changes still being watched, oldest landing first.
    pub fn watching(&self) -> Result<Vec<ChangeRecord>> {
        self.query_changes(
            &format!(
                "SELECT {CHANGE_COLUMNS} FROM changes WHERE state = ?1 \
                 ORDER BY landed_at, rowid"
            ),
            [ChangeState::Watching.as_str()],
            "reading changes being watched",
        )
    }

    /// Appends an event about a change to the decision log (e.g. the commands a rollback ran and
    /// what they printed). The log is append-only: there is no way to edit it.
    pub fn record_event(
        &mut self,
        change_id: &str,
        kind: &str,
        detail: &Value,
        now: f64,
    ) -> Result<()> {
        finite("now", now)?;
        let doing = || format!("recording {kind} for change {change_id}");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        current_state(&tx, change_id).doing(doing)??;
        append_event(&tx, now, Some(change_id), kind, detail).doing(doing)?;
        tx.commit().doing(doing)?;
        Ok(())
    }

    /// Appends a record to the audit chain that is not a change's state transition: a
    /// proposal and the policy's decision, an approval, a policy load, an email. `actor` is
    /// who caused it (`guardian` for the daemon's own decisions, `agent`, `approver:<name>`,
    /// `admin`), never taken from the payload; `subject` names what it is about when that is
    /// not a change (e.g. a proposal id); `change_id`, when given, must be a known change.
    /// Returns the record's seq. To record a state change with it, write both in one
    /// transaction: the store's own methods do.
    pub fn audit(
        &mut self,
        actor: &str,
        kind: &str,
        subject: Option<&str>,
        change_id: Option<&str>,
        detail: &Value,
        now: f64,
    ) -> Result<u64> {
        finite("now", now)?;
        if actor.trim().is_empty() || kind.trim().is_empty() {
            return Err(StoreError::Invalid(format!(
                "an audit record needs an actor and a kind, got actor {actor:?} and kind {kind:?}"
            )));
        }
        let doing = || {
            let about = change_id.or(subject).unwrap_or("nothing in particular");
            format!("recording {kind} by {actor} about {about}")
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        if let Some(id) = change_id {
            current_state(&tx, id).doing(doing)??;
        }
        let seq = append_record(
            &tx,
            now,
            actor,
            kind,
            subject,
            change_id,
            &detail.to_string(),
        )
        .doing(doing)?;
        tx.commit().doing(doing)?;
        Ok(seq as u64)
    }

    /// Signs a checkpoint of the whole audit chain as it stands (its size and the hash of its
    /// last record) and records it as the next record (kind `audit_checkpoint`), in one
    /// transaction. `origin` is `audit::origin_for(service)`.
    pub fn checkpoint(
        &mut self,
        key: &ed25519_dalek::SigningKey,
        origin: &str,
        now: f64,
    ) -> Result<crate::audit::Checkpoint> {
        finite("now", now)?;
        if origin.is_empty() || origin.contains(['\n', '\r']) {
            return Err(StoreError::Invalid(format!(
                "a checkpoint origin is one non-empty line, got {origin:?}"
            )));
        }
        let doing = || "signing an audit checkpoint".to_string();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        let last: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .doing(doing)?;
        let (size, head) = match last {
            None => (0, crate::audit::GENESIS),
            Some((seq, hash)) => (
                seq as u64,
                hash.try_into().map_err(|_| {
                    StoreError::Corrupt(format!(
                        "record {seq} has no 32-byte hash: run guardian audit verify"
                    ))
                })?,
            ),
        };
        let mut checkpoint = crate::audit::Checkpoint::sign(key, origin, size, head);
        let note = checkpoint.note_text();
        let detail = serde_json::json!({
            "origin": origin,
            "size": size,
            "head": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, head),
            "public_key": crate::audit::verifier_key_text(&key.verifying_key()),
            "note": note,
        });
        let seq = append_record(
            &tx,
            now,
            crate::audit::ACTOR_GUARDIAN,
            crate::audit::CHECKPOINT_KIND,
            None,
            None,
            &detail.to_string(),
        )
        .doing(doing)?;
        tx.commit().doing(doing)?;
        checkpoint.recorded = Some((seq as u64, now));
        Ok(checkpoint)
    }

    /// Makes a checkpoint when one is due: records were added since the last checkpoint
    /// (or there is none yet) and at least `every_secs` have passed since it. Cheap when
    /// nothing is due: two indexed reads.
    pub fn checkpoint_if_due(
        &mut self,
        key: &ed25519_dalek::SigningKey,
        origin: &str,
        now: f64,
        every_secs: f64,
    ) -> Result<Option<crate::audit::Checkpoint>> {
        finite("now", now)?;
        let last_seq: Option<i64> = self
            .conn
            .query_row("SELECT MAX(seq) FROM events", [], |row| row.get(0))
            .doing(|| "reading the audit chain's length".to_string())?;
        let Some(last_seq) = last_seq else {
            return Ok(None);
        };
        if let Some((seq, at)) = self.latest_checkpoint()?.and_then(|c| c.recorded) {
            if seq as i64 >= last_seq || now - at < every_secs {
                return Ok(None);
            }
        }
        self.checkpoint(key, origin, now).map(Some)
    }

    /// The last checkpoint recorded in the audit chain, to put in an alert email.
    pub fn latest_checkpoint(&self) -> Result<Option<crate::audit::Checkpoint>> {
        let doing = || "reading the latest audit checkpoint".to_string();
        let row: Option<(i64, f64, String)> = self
            .conn
            .query_row(
                "SELECT seq, at, detail FROM events WHERE kind = ?1 ORDER BY seq DESC LIMIT 1",
                [crate::audit::CHECKPOINT_KIND],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .doing(doing)?;
        let Some((seq, at, detail)) = row else {
            return Ok(None);
        };
        let detail: Value = serde_json::from_str(&detail).map_err(|error| StoreError::Json {
            doing: format!("reading checkpoint record {seq}"),
            error,
        })?;
        let mut checkpoint = detail["note"]
            .as_str()
            .ok_or_else(|| StoreError::Corrupt(format!("checkpoint record {seq} has no note")))
            .and_then(|note| {
                crate::audit::Checkpoint::parse(note)
                    .map_err(|e| StoreError::Corrupt(format!("checkpoint record {seq}: {e}")))
            })?;
        checkpoint.recorded = Some((seq as u64, at));
        Ok(Some(checkpoint))
    }

    /// Changes not yet in a final state (watching, or somewhere in a rollback), oldest first:
    /// what a restart must pick up or hand to a person.
    pub fn unfinished(&self) -> Result<Vec<ChangeRecord>> {
        let open: Vec<&str> = ChangeState::ALL
            .iter()
            .filter(|s| !s.is_final())
            .map(|s| s.as_str())
            .collect();
        let placeholders = (1..=open.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.query_changes(
            &format!(
                "SELECT {CHANGE_COLUMNS} FROM changes WHERE state IN ({placeholders}) \
                 ORDER BY landed_at, rowid"
            ),
            rusqlite::params_from_iter(open),
            "reading unfinished changes",
        )
    }

    fn query_changes(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        doing: &str,
    ) -> Result<Vec<ChangeRecord>> {
        let doing = || doing.to_string();
        let mut stmt = self.conn.prepare_cached(sql).doing(doing)?;
        let raws = stmt
            .query_map(params, RawChange::from_row)
            .doing(doing)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .doing(doing)?;
        raws.into_iter().map(RawChange::into_record).collect()
    }

    /// The decision log of one change, in order.
    pub fn events_for(&self, change_id: &str) -> Result<Vec<EventRecord>> {
        let doing = || format!("reading events of change {change_id}");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, at, change_id, kind, detail FROM events WHERE change_id = ?1 \
                 ORDER BY seq",
            )
            .doing(doing)?;
        let rows = stmt
            .query_map([change_id], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, f64>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })
            .doing(doing)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .doing(doing)?;
        rows.into_iter()
            .map(|(seq, at, change_id, kind, detail)| {
                let detail = serde_json::from_str(&detail).map_err(|error| StoreError::Json {
                    doing: format!("reading event {seq}"),
                    error,
                })?;
                Ok(EventRecord {
                    seq,
                    at,
                    change_id,
                    kind,
                    detail,
                })
            })
            .collect()
    }

    /// Queues an email for delivery, due now. Idempotent on `message_id`: queuing the same
    /// message again (e.g. after a crash between queuing and recording that it was queued)
    /// keeps the first row as it is, sent or not. Returns whether a row was added. An email
    /// about a change is also noted in the change's decision log.
    pub fn enqueue_email(
        &mut self,
        change_id: Option<&str>,
        message_id: &str,
        subject: &str,
        body: &str,
        to: &[String],
        now: f64,
    ) -> Result<bool> {
        self.enqueue_email_html(change_id, message_id, subject, body, None, &[], to, now)
    }

    /// [`Store::enqueue_email`] with an HTML alternative to send with the text body, and the
    /// ids of the approval links whose secrets are filled into the body when it is sent
    /// (`gate::links`): the secrets themselves are never stored.
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue_email_html(
        &mut self,
        change_id: Option<&str>,
        message_id: &str,
        subject: &str,
        body: &str,
        html: Option<&str>,
        links: &[String],
        to: &[String],
        now: f64,
    ) -> Result<bool> {
        finite("now", now)?;
        if message_id.trim().is_empty() {
            return Err(StoreError::Invalid("an email needs a Message-ID".into()));
        }
        if to.is_empty() {
            return Err(StoreError::Invalid(format!(
                "email {message_id} has no recipient"
            )));
        }
        let doing = || format!("queuing email {message_id}");
        let recipients = serde_json::to_string(to).map_err(|error| StoreError::Json {
            doing: doing(),
            error,
        })?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        if let Some(id) = change_id {
            current_state(&tx, id).doing(doing)??;
        }
        let links = (!links.is_empty())
            .then(|| serde_json::to_string(links))
            .transpose()
            .map_err(|error| StoreError::Json {
                doing: doing(),
                error,
            })?;
        let added = tx
            .execute(
                "INSERT INTO outbox (message_id, change_id, subject, body, recipients, \
                 created_at, next_attempt_at, html, links) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8) \
                 ON CONFLICT (message_id) DO NOTHING",
                params![message_id, change_id, subject, body, recipients, now, html, links],
            )
            .doing(doing)?
            > 0;
        if added {
            if let Some(id) = change_id {
                let detail = serde_json::json!({
                    "message_id": message_id,
                    "subject": subject,
                    "to": to,
                });
                append_event(&tx, now, Some(id), EVENT_EMAIL_QUEUED, &detail).doing(doing)?;
            }
        }
        tx.commit().doing(doing)?;
        Ok(added)
    }

    /// Emails not yet sent whose next attempt is due at `now`, the longest waiting first.
    pub fn due_emails(&self, now: f64, limit: usize) -> Result<Vec<OutboxEmail>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query_emails(
            &format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox \
                 WHERE sent_at IS NULL AND next_attempt_at <= ?1 \
                 ORDER BY next_attempt_at, created_at, rowid LIMIT ?2"
            ),
            params![now, limit],
            "reading emails due",
        )
    }

    /// Emails not yet sent, oldest first: what `guardian status` shows as waiting.
    pub fn queued_emails(&self, limit: usize) -> Result<Vec<OutboxEmail>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query_emails(
            &format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE sent_at IS NULL \
                 ORDER BY created_at, rowid LIMIT ?1"
            ),
            params![limit],
            "reading queued emails",
        )
    }

    /// How many emails wait to be sent.
    pub fn pending_emails(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL",
                [],
                |row| row.get(0),
            )
            .doing(|| "counting queued emails".to_string())?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Why the latest try to send a queued email failed, and how many tries it has had:
    /// what `guardian status` shows beside the count, so a stuck outbox says why.
    pub fn pending_email_trouble(&self) -> Result<Option<(String, i64)>> {
        self.conn
            .query_row(
                "SELECT last_error, attempts FROM outbox \
                 WHERE sent_at IS NULL AND last_error IS NOT NULL \
                 ORDER BY last_attempt_at DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .doing(|| "reading why queued emails are not sent".to_string())
    }

    /// The email with this Message-ID, sent or not.
    pub fn get_email(&self, message_id: &str) -> Result<Option<OutboxEmail>> {
        Ok(self
            .query_emails(
                &format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE message_id = ?1"),
                params![message_id],
                &format!("reading email {message_id}"),
            )?
            .pop())
    }

    /// The server accepted the email. Counts the attempt and notes it in the change's log. An
    /// email already marked sent keeps its first `sent_at`.
    pub fn mark_sent(&mut self, message_id: &str, now: f64) -> Result<()> {
        finite("now", now)?;
        let doing = || format!("marking email {message_id} sent");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .doing(doing)?;
        let row: Option<(Option<String>, Option<f64>, i64)> = tx
            .query_row(
                "SELECT change_id, sent_at, attempts FROM outbox WHERE message_id = ?1",
                [message_id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .doing(doing)?;
        let Some((change_id, sent_at, attempts)) = row else {
            return Err(no_email(message_id));
        };
        if sent_at.is_some() {
            return Ok(());
        }
        tx.execute(
            "UPDATE outbox SET sent_at = ?2, last_attempt_at = ?2, attempts = attempts + 1 \
             WHERE message_id = ?1",
            params![message_id, now],
        )
        .doing(doing)?;
        if let Some(id) = change_id {
            let detail = serde_json::json!({
                "message_id": message_id,
                "attempts": attempts + 1,
            });
            append_event(&tx, now, Some(&id), EVENT_EMAIL_SENT, &detail).doing(doing)?;
        }
        tx.commit().doing(doing)?;
        Ok(())
    }

    /// An attempt to send the email failed: counts it, keeps the error, and sets when to try
    /// again. An email already sent is left as it is.
    pub fn mark_failed(
        &mut self,
        message_id: &str,
        error: &str,
        next_attempt_at: f64,
        now: f64,
    ) -> Result<()> {
        finite("now", now)?;
        finite("next_attempt_at", next_attempt_at)?;
        let changed = self
            .conn
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, \
                 next_attempt_at = ?3, last_attempt_at = ?4 \
                 WHERE message_id = ?1 AND sent_at IS NULL",
                params![message_id, error, next_attempt_at, now],
            )
            .doing(|| format!("recording a failed attempt to send email {message_id}"))?;
        if changed == 0 && self.get_email(message_id)?.is_none() {
            return Err(no_email(message_id));
        }
        Ok(())
    }

    fn query_emails(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        doing: &str,
    ) -> Result<Vec<OutboxEmail>> {
        let doing = || doing.to_string();
        let mut stmt = self.conn.prepare_cached(sql).doing(doing)?;
        let rows = stmt
            .query_map(params, |row| {
                Ok((
                    OutboxEmail {
                        message_id: row.get(0)?,
                        change_id: row.get(1)?,
                        subject: row.get(2)?,
                        body: row.get(3)?,
                        to: Vec::new(),
                        created_at: row.get(5)?,
                        attempts: u32::try_from(row.get::<_, i64>(6)?).unwrap_or(u32::MAX),
                        next_attempt_at: row.get(7)?,
                        last_attempt_at: row.get(8)?,
                        last_error: row.get(9)?,
                        sent_at: row.get(10)?,
                        html: row.get(11)?,
                        links: Vec::new(),
                    },
                    row.get::<_, String>(4)?,
                    row.get::<_, Option<String>>(12)?,
                ))
            })
            .doing(doing)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .doing(doing)?;
        rows.into_iter()
            .map(|(mut email, recipients, links)| {
                email.to = serde_json::from_str(&recipients).map_err(|error| StoreError::Json {
                    doing: format!("reading recipients of email {}", email.message_id),
                    error,
                })?;
                if let Some(links) = links {
                    email.links =
                        serde_json::from_str(&links).map_err(|error| StoreError::Json {
                            doing: format!("reading the links of email {}", email.message_id),
                            error,
                        })?;
                }
                Ok(email)
            })
            .collect()
    }

    /// Remembers how far source `name` has been read: which file (`file_id`, e.g. device and
    /// inode) and the byte offset in it.
    pub fn save_position(&mut self, name: &str, file_id: u64, offset: u64, now: f64) -> Result<()> {
        finite("now", now)?;
        self.conn
            .execute(
                "INSERT INTO source_positions (name, file_id, offset, updated_at) \
                 VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (name) DO UPDATE SET file_id = excluded.file_id, \
                 offset = excluded.offset, updated_at = excluded.updated_at",
                params![name, to_sql_u64(file_id), to_sql_u64(offset), now],
            )
            .doing(|| format!("saving position of source {name}"))?;
        Ok(())
    }

    /// Where source `name` was last read up to: `(file_id, offset)`.
    pub fn load_position(&self, name: &str) -> Result<Option<(u64, u64)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT file_id, offset FROM source_positions WHERE name = ?1")
            .doing(|| format!("reading position of source {name}"))?;
        let position = stmt
            .query_row([name], |row| {
                Ok((
                    from_sql_u64(row.get::<_, i64>(0)?),
                    from_sql_u64(row.get::<_, i64>(1)?),
                ))
            })
            .optional()
            .doing(|| format!("reading position of source {name}"))?;
        Ok(position)
    }
}

/// A `changes` row as stored, before its text columns are parsed.
struct RawChange {
    id: String,
    commit: String,
    kind: String,
    pattern: Option<String>,
    summary: Option<String>,
    landed_at: f64,
    state: String,
    updated_at: f64,
    decided_at: Option<f64>,
    report: Option<String>,
    note: Option<String>,
}

impl RawChange {
    /// Reads the columns in `CHANGE_COLUMNS` order.
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RawChange> {
        Ok(RawChange {
            id: row.get(0)?,
            commit: row.get(1)?,
            kind: row.get(2)?,
            pattern: row.get(3)?,
            summary: row.get(4)?,
            landed_at: row.get(5)?,
            state: row.get(6)?,
            updated_at: row.get(7)?,
            decided_at: row.get(8)?,
            report: row.get(9)?,
            note: row.get(10)?,
        })
    }

    fn into_record(self) -> Result<ChangeRecord> {
        let id = self.id;
        let kind = self
            .kind
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("change {id}: {e}")))?;
        let state = self
            .state
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("change {id}: {e}")))?;
        let report = self
            .report
            .map(|json| parse_report(&json, || format!("reading change {id} report")))
            .transpose()?;
        Ok(ChangeRecord {
            id,
            commit: self.commit,
            kind,
            pattern: self.pattern,
            summary: self.summary,
            landed_at: self.landed_at,
            state,
            updated_at: self.updated_at,
            decided_at: self.decided_at,
            report,
            note: self.note,
        })
    }
}

/// The state of change `id` inside a transaction: `Ok(Err(NotFound))` when there is none.
fn current_state(conn: &Connection, id: &str) -> rusqlite::Result<Result<ChangeState>> {
    let text: Option<String> = conn
        .query_row("SELECT state FROM changes WHERE id = ?1", [id], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(match text {
        None => Err(StoreError::NotFound(id.to_string())),
        Some(text) => text
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("change {id}: {e}"))),
    })
}

/// Appends one of the daemon's own records (actor `guardian`) about a change.
fn append_event(
    conn: &Connection,
    at: f64,
    change_id: Option<&str>,
    kind: &str,
    detail: &Value,
) -> rusqlite::Result<()> {
    append_record(
        conn,
        at,
        crate::audit::ACTOR_GUARDIAN,
        kind,
        None,
        change_id,
        &detail.to_string(),
    )?;
    Ok(())
}

/// Appends a record to the audit chain: the next seq, linked to the last record's hash. The
/// caller holds an IMMEDIATE transaction, so no other writer comes between the read of the
/// last record and the insert. Returns the new record's seq.
pub(crate) fn append_record(
    conn: &Connection,
    at: f64,
    actor: &str,
    kind: &str,
    subject: Option<&str>,
    change_id: Option<&str>,
    detail: &str,
) -> rusqlite::Result<i64> {
    let last: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let (seq, prev) = match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, crate::audit::GENESIS.to_vec()),
    };
    let hash = crate::audit::record_hash(
        seq,
        &prev,
        &crate::audit::RecordFields {
            at,
            kind: kind.as_bytes(),
            change_id: change_id.map(str::as_bytes),
            subject: subject.map(str::as_bytes),
            actor: Some(actor.as_bytes()),
            detail: detail.as_bytes(),
        },
    );
    conn.execute(
        "INSERT INTO events (seq, at, change_id, kind, detail, actor, subject, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            seq,
            at,
            change_id,
            kind,
            detail,
            actor,
            subject,
            prev,
            &hash[..]
        ],
    )?;
    Ok(seq)
}

/// Migration 4's Rust step: gives every record written before the chain existed the actor
/// `guardian` and its place in the chain, in seq order, hashing the bytes as stored. Runs
/// while the update trigger is dropped, and makes it again.
fn chain_existing_events(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::types::ValueRef;
    /// seq, at, change_id, kind, detail: the bytes as stored.
    type Stored = (i64, f64, Option<Vec<u8>>, Vec<u8>, Vec<u8>);
    let rows: Vec<Stored> = {
        let mut stmt =
            conn.prepare("SELECT seq, at, change_id, kind, detail FROM events ORDER BY seq")?;
        let bytes = |v: ValueRef<'_>| -> Option<Vec<u8>> {
            match v {
                ValueRef::Text(t) | ValueRef::Blob(t) => Some(t.to_vec()),
                _ => None,
            }
        };
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                bytes(row.get_ref(2)?),
                bytes(row.get_ref(3)?).unwrap_or_default(),
                bytes(row.get_ref(4)?).unwrap_or_default(),
            ))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut prev = crate::audit::GENESIS.to_vec();
    for (seq, at, change_id, kind, detail) in rows {
        let hash = crate::audit::record_hash(
            seq,
            &prev,
            &crate::audit::RecordFields {
                at,
                kind: &kind,
                change_id: change_id.as_deref(),
                subject: None,
                actor: Some(crate::audit::ACTOR_GUARDIAN.as_bytes()),
                detail: &detail,
            },
        );
        conn.execute(
            "UPDATE events SET actor = ?2, prev_hash = ?3, hash = ?4 WHERE seq = ?1",
            params![seq, crate::audit::ACTOR_GUARDIAN, prev, &hash[..]],
        )?;
        prev = hash.to_vec();
    }
    conn.execute_batch(EVENTS_NO_UPDATE)
}

fn parse_report(json: &str, doing: impl FnOnce() -> String) -> Result<Value> {
    serde_json::from_str(json).map_err(|error| StoreError::Json {
        doing: doing(),
        error,
    })
}

/// SQLite stores NaN as NULL and infinities are no time: refuse both.
fn finite(what: &str, t: f64) -> Result<()> {
    if t.is_finite() {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{what} must be finite unix seconds, got {t}"
        )))
    }
}

/// SQLite integers are i64: a u64 is stored with the same bits (values above `i64::MAX` read
/// as negative in SQL, and come back unchanged).
fn to_sql_u64(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

fn from_sql_u64(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
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

fn no_email(message_id: &str) -> StoreError {
    StoreError::Invalid(format!(
        "no email with Message-ID {message_id} in the outbox"
    ))
}

/// `chg_` and 12 lowercase hex digits of SHA-256(seed, counter, commit, landed_at).
fn change_id(seed: &[u8; 16], counter: u64, new: &NewChange) -> String {
    let mut hasher = Sha256::new();
    hasher.update(seed);
    hasher.update(counter.to_le_bytes());
    hasher.update((new.commit.len() as u64).to_le_bytes());
    hasher.update(new.commit.as_bytes());
    hasher.update(new.landed_at.to_bits().to_le_bytes());
    let digest = hasher.finalize();
    let mut id = String::with_capacity(16);
    id.push_str("chg_");
    for byte in &digest[..6] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const T0: f64 = 1_764_000_000.0;

    fn change(commit: &str, landed_at: f64) -> NewChange {
        NewChange {
            commit: commit.to_string(),
            kind: ChangeKind::Ai,
            pattern: Some("retry-wrapper".to_string()),
            summary: Some("wrap calls in retries".to_string()),
            landed_at,
        }
    }

    fn event_count(store: &Store) -> i64 {
        store
            .conn
            .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
            .unwrap()
    }

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

    #[test]
    fn ids_are_unique_and_well_formed() {
        let mut store = Store::open_in_memory().unwrap();
        let mut other = Store::open_in_memory().unwrap();
        let mut ids = HashSet::new();
        for i in 0..2000 {
            // Same commit and time over and over: only the counter and seed tell them apart.
            let new = change("abc123", T0);
            for s in [&mut store, &mut other] {
                let id = s.insert_change(&new, T0 + f64::from(i)).unwrap().id;
                assert_eq!(id.len(), 16, "{id}");
                assert!(id.starts_with("chg_"), "{id}");
                assert!(
                    id[4..]
                        .chars()
                        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
                    "{id}"
                );
                assert!(ids.insert(id.clone()), "duplicate id {id}");
            }
        }
    }

    #[test]
    fn insert_returns_what_is_stored() {
        let mut store = Store::open_in_memory().unwrap();
        let new = NewChange {
            commit: "deadbeef".to_string(),
            kind: ChangeKind::Human,
            pattern: None,
            summary: None,
            landed_at: T0,
        };
        let record = store.insert_change(&new, T0 + 5.0).unwrap();
        assert_eq!(record.state, ChangeState::Watching);
        assert_eq!(record.updated_at, T0 + 5.0);
        assert_eq!(store.get_change(&record.id).unwrap(), Some(record.clone()));
        assert_eq!(store.get_change("chg_000000000000").unwrap(), None);
        assert_eq!(store.watching().unwrap(), vec![record]);
    }

    #[test]
    fn transitions_and_the_refusal_to_leave_a_final_state() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a1", T0), T0).unwrap().id;
        store
            .update_report(&id, r#"{"verdict":"watching","e":1.5}"#, T0 + 10.0)
            .unwrap();
        // Watching to watching is allowed (e.g. a note), and keeps the report.
        store
            .set_state(
                &id,
                ChangeState::Watching,
                None,
                None,
                Some("resumed"),
                T0 + 20.0,
            )
            .unwrap();
        let record = store.get_change(&id).unwrap().unwrap();
        assert_eq!(record.report.unwrap()["e"], 1.5);
        assert_eq!(record.note.as_deref(), Some("resumed"));

        store
            .set_state(
                &id,
                ChangeState::Healthy,
                Some(r#"{"verdict":"healthy"}"#),
                Some(T0 + 30.0),
                Some("errors"),
                T0 + 31.0,
            )
            .unwrap();
        let decided = store.get_change(&id).unwrap().unwrap();
        assert_eq!(decided.state, ChangeState::Healthy);
        assert!(store.watching().unwrap().is_empty());

        for next in ChangeState::ALL {
            let err = store
                .set_state(
                    &id,
                    *next,
                    Some("{}"),
                    Some(T0 + 99.0),
                    Some("x"),
                    T0 + 100.0,
                )
                .unwrap_err();
            match &err {
                StoreError::FinalState { id: got, state } => {
                    assert_eq!(got, &id);
                    assert_eq!(*state, ChangeState::Healthy);
                }
                other => panic!("expected FinalState, got {other:?}"),
            }
            assert!(err.to_string().contains("healthy"), "{err}");
        }
        let err = store.update_report(&id, "{}", T0 + 100.0).unwrap_err();
        assert!(matches!(err, StoreError::FinalState { .. }), "{err:?}");
        // Nothing moved.
        assert_eq!(store.get_change(&id).unwrap().unwrap(), decided);
        assert_eq!(store.events_for(&id).unwrap().len(), 3);

        // A regression moves on only to a rollback or an escalation.
        let id = store.insert_change(&change("r", T0), T0).unwrap().id;
        store
            .set_state(&id, ChangeState::Regressed, None, None, None, T0 + 1.0)
            .unwrap();
        let err = store
            .set_state(&id, ChangeState::Healthy, None, None, None, T0 + 2.0)
            .unwrap_err();
        assert!(matches!(err, StoreError::Transition { .. }), "{err:?}");
        for next in [
            ChangeState::RollingBack,
            ChangeState::Verifying,
            ChangeState::RolledBack,
        ] {
            store
                .set_state(&id, next, None, None, None, T0 + 3.0)
                .unwrap();
        }

        // Every final state is final, reached along the shortest legal path.
        for state in ChangeState::ALL.iter().filter(|s| s.is_final()) {
            let id = store.insert_change(&change("b", T0), T0).unwrap().id;
            let path: &[ChangeState] = match state {
                ChangeState::RolledBack => &[
                    ChangeState::Regressed,
                    ChangeState::RollingBack,
                    ChangeState::Verifying,
                ],
                ChangeState::Escalated => &[ChangeState::Regressed],
                _ => &[],
            };
            for step in path.iter().chain([state]) {
                store
                    .set_state(&id, *step, None, None, None, T0 + 1.0)
                    .unwrap();
            }
            let err = store
                .set_state(&id, ChangeState::Watching, None, None, None, T0 + 2.0)
                .unwrap_err();
            assert!(matches!(err, StoreError::FinalState { .. }), "{err:?}");
        }
    }

    #[test]
    fn unknown_ids_are_not_found() {
        let mut store = Store::open_in_memory().unwrap();
        let err = store
            .set_state("chg_nope", ChangeState::Healthy, None, None, None, T0)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound(id) if id == "chg_nope"),
            "{err:?}"
        );
        let err = store.update_report("chg_nope", "{}", T0).unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound(id) if id == "chg_nope"),
            "{err:?}"
        );
        assert_eq!(event_count(&store), 0);
    }

    #[test]
    fn reports_that_are_not_json_are_refused() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        let err = store.update_report(&id, "{not json", T0).unwrap_err();
        assert!(matches!(err, StoreError::Json { .. }), "{err:?}");
        assert!(err.to_string().contains(&id), "{err}");
        let err = store
            .set_state(&id, ChangeState::Healthy, Some("nope"), None, None, T0)
            .unwrap_err();
        assert!(matches!(err, StoreError::Json { .. }), "{err:?}");
        assert_eq!(
            store.get_change(&id).unwrap().unwrap().state,
            ChangeState::Watching
        );
    }

    #[test]
    fn times_must_be_finite() {
        let mut store = Store::open_in_memory().unwrap();
        assert!(matches!(
            store.insert_change(&change("a", f64::NAN), T0),
            Err(StoreError::Invalid(_))
        ));
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        assert!(matches!(
            store.set_state(
                &id,
                ChangeState::Healthy,
                None,
                Some(f64::INFINITY),
                None,
                T0
            ),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.save_position("x", 1, 2, f64::NAN),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn every_transition_appends_an_event() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store
            .insert_change(&change("c0ffee", T0), T0 + 1.0)
            .unwrap()
            .id;
        let other = store
            .insert_change(&change("other", T0), T0 + 1.0)
            .unwrap()
            .id;
        store.update_report(&id, r#"{"n":1}"#, T0 + 2.0).unwrap();
        store
            .set_state(
                &id,
                ChangeState::Inconclusive,
                Some(r#"{"verdict":"inconclusive"}"#),
                None,
                Some("window ended"),
                T0 + 3.0,
            )
            .unwrap();
        let events = store.events_for(&id).unwrap();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].kind, EVENT_CHANGE_CREATED);
        assert_eq!(events[0].at, T0 + 1.0);
        assert_eq!(events[0].detail["commit"], "c0ffee");
        assert_eq!(events[0].detail["state"], "watching");
        assert_eq!(events[1].kind, EVENT_STATE_CHANGED);
        assert_eq!(events[1].at, T0 + 3.0);
        assert_eq!(events[1].change_id.as_deref(), Some(id.as_str()));
        assert_eq!(events[1].detail["from"], "watching");
        assert_eq!(events[1].detail["to"], "inconclusive");
        assert_eq!(events[1].detail["note"], "window ended");
        assert_eq!(events[1].detail["report"]["verdict"], "inconclusive");
        assert!(events[0].seq < events[1].seq);
        assert_eq!(store.events_for(&other).unwrap().len(), 1);
    }

    #[test]
    fn a_transition_whose_event_cannot_be_written_does_not_happen() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        store
            .conn
            .execute_batch(
                "CREATE TRIGGER fail_events BEFORE INSERT ON events \
                 BEGIN SELECT RAISE(ABORT, 'log unavailable'); END;",
            )
            .unwrap();
        let err = store
            .set_state(
                &id,
                ChangeState::Regressed,
                Some("{}"),
                Some(T0 + 1.0),
                None,
                T0 + 1.0,
            )
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&format!("saving change {id} state regressed")),
            "{message}"
        );
        assert!(message.contains("log unavailable"), "{message}");
        let record = store.get_change(&id).unwrap().unwrap();
        assert_eq!(record.state, ChangeState::Watching);
        assert_eq!(record.report, None);
        assert_eq!(record.decided_at, None);
        // Nor does a new change without its event.
        assert!(store.insert_change(&change("b", T0), T0).is_err());
        assert_eq!(store.recent_changes(10).unwrap().len(), 1);
    }

    #[test]
    fn events_are_append_only() {
        let mut store = Store::open_in_memory().unwrap();
        store.insert_change(&change("a", T0), T0).unwrap();
        assert!(store
            .conn
            .execute("UPDATE events SET kind = 'x'", [])
            .is_err());
        assert!(store.conn.execute("DELETE FROM events", []).is_err());
        assert_eq!(event_count(&store), 1);
    }

    fn audit_key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[3; 32])
    }

    fn verify(store: &Store) -> crate::audit::Verification {
        crate::audit::verify_connection(&store.conn, &crate::audit::VerifyOptions::default())
            .unwrap()
    }

    #[test]
    fn every_record_is_chained_to_the_one_before() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        store
            .set_state(
                &id,
                ChangeState::Healthy,
                None,
                Some(T0 + 1.0),
                None,
                T0 + 1.0,
            )
            .unwrap();
        let seq = store
            .audit(
                "agent",
                "proposal_received",
                Some("prop_1"),
                None,
                &serde_json::json!({"summary": "retry"}),
                T0 + 2.0,
            )
            .unwrap();
        assert_eq!(seq, 3);
        type Chained = (i64, String, Option<String>, Vec<u8>, Vec<u8>);
        let rows: Vec<Chained> = store
            .conn
            .prepare("SELECT seq, actor, subject, prev_hash, hash FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].3, crate::audit::GENESIS.to_vec());
        for pair in rows.windows(2) {
            assert_eq!(
                pair[1].3, pair[0].4,
                "record {} links to {}",
                pair[1].0, pair[0].0
            );
        }
        assert_eq!(rows[0].1, "guardian");
        assert_eq!(rows[2].1, "agent");
        assert_eq!(rows[2].2.as_deref(), Some("prop_1"));
        let v = verify(&store);
        assert!(v.intact(), "{}", v.render());
        assert_eq!(v.records, 3);
        // The chain is not a second log: the change's events are the same rows.
        assert_eq!(store.events_for(&id).unwrap().len(), 2);
    }

    #[test]
    fn audit_records_need_an_actor_a_kind_and_a_known_change() {
        let mut store = Store::open_in_memory().unwrap();
        let detail = serde_json::json!({});
        assert!(matches!(
            store.audit(" ", "x", None, None, &detail, T0),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.audit("admin", "", None, None, &detail, T0),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.audit("admin", "x", None, None, &detail, f64::NAN),
            Err(StoreError::Invalid(_))
        ));
        let err = store
            .audit("admin", "x", None, Some("chg_nope"), &detail, T0)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound(i) if i == "chg_nope"),
            "{err:?}"
        );
        assert_eq!(event_count(&store), 0);
    }

    #[test]
    fn an_upgraded_database_chains_the_records_it_already_had() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guardian.db");
        // A file at schema version 3 with a decision log, as the last guardian left it.
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 3).unwrap();
            conn.execute_batch(
                "INSERT INTO changes (id, commit_sha, kind, landed_at, state, updated_at) \
                 VALUES ('chg_000000000001', 'abc', 'ai', 1.5, 'watching', 1.5); \
                 INSERT INTO events (at, change_id, kind, detail) \
                 VALUES (1.5, 'chg_000000000001', 'change_created', '{\"commit\":\"abc\"}'); \
                 INSERT INTO events (at, change_id, kind, detail) \
                 VALUES (2.25, NULL, 'email_queued', '{ \"odd\" : 1 }');",
            )
            .unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        let v = verify(&store);
        assert!(v.intact(), "{}", v.render());
        assert_eq!(v.records, 2);
        // New records follow on; the log is still append-only.
        store
            .audit(
                "admin",
                "policy_loaded",
                None,
                None,
                &serde_json::json!({}),
                T0,
            )
            .unwrap();
        let v = verify(&store);
        assert!(v.intact(), "{}", v.render());
        assert_eq!(v.records, 3);
        assert!(store
            .conn
            .execute("UPDATE events SET actor = 'x'", [])
            .is_err());
        assert!(store.conn.execute("DELETE FROM events", []).is_err());
        // Nor can a row be slipped in without its place in the chain.
        let err = store
            .conn
            .execute(
                "INSERT INTO events (at, kind, detail) VALUES (1.0, 'forged', '{}')",
                [],
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("appended through the store"),
            "{err}"
        );
        assert_eq!(event_count(&store), 3);
    }

    #[test]
    fn checkpoints_are_signed_recorded_and_due_only_after_new_records() {
        let mut store = Store::open_in_memory().unwrap();
        let key = audit_key();
        let origin = crate::audit::origin_for("shop");
        // Nothing to vouch for yet.
        assert_eq!(
            store.checkpoint_if_due(&key, &origin, T0, 60.0).unwrap(),
            None
        );
        assert_eq!(store.latest_checkpoint().unwrap(), None);
        store.insert_change(&change("a", T0), T0).unwrap();
        store.insert_change(&change("b", T0), T0).unwrap();
        let first = store
            .checkpoint_if_due(&key, &origin, T0 + 1.0, 60.0)
            .unwrap()
            .expect("the first checkpoint is due at once");
        assert_eq!(first.size, 2);
        assert_eq!(first.recorded, Some((3, T0 + 1.0)));
        assert!(first.signed_by(&key.verifying_key()));
        assert_eq!(store.latest_checkpoint().unwrap(), Some(first.clone()));
        let note = first.note_text();
        assert!(note.starts_with("guardian/shop/audit\n2\n"), "{note}");
        // Not due again: nothing new, then something new but too soon.
        assert_eq!(
            store
                .checkpoint_if_due(&key, &origin, T0 + 999.0, 60.0)
                .unwrap(),
            None
        );
        store.insert_change(&change("c", T0), T0 + 2.0).unwrap();
        assert_eq!(
            store
                .checkpoint_if_due(&key, &origin, T0 + 30.0, 60.0)
                .unwrap(),
            None
        );
        let second = store
            .checkpoint_if_due(&key, &origin, T0 + 61.0, 60.0)
            .unwrap()
            .unwrap();
        // It covers the first checkpoint's record too.
        assert_eq!(second.size, 4);
        assert_eq!(second.recorded.map(|r| r.0), Some(5));
        let v = verify(&store);
        assert!(v.intact(), "{}", v.render());
        assert_eq!(v.good_checkpoints, 2);
        assert_eq!(v.signed_up_to, 4);
        assert!(matches!(
            store.checkpoint(&key, "two\nlines", T0),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn positions_round_trip_including_the_full_u64_range() {
        let mut store = Store::open_in_memory().unwrap();
        assert_eq!(store.load_position("nginx").unwrap(), None);
        let cases = [
            (0, 0),
            (1, 2),
            (i64::MAX as u64, i64::MAX as u64),
            (i64::MAX as u64 + 1, 7),
            (u64::MAX, u64::MAX),
            (0xdead_beef_0000_0001, u64::MAX - 1),
        ];
        for (i, (file_id, offset)) in cases.into_iter().enumerate() {
            store
                .save_position("nginx", file_id, offset, T0 + i as f64)
                .unwrap();
            assert_eq!(
                store.load_position("nginx").unwrap(),
                Some((file_id, offset))
            );
        }
        store.save_position("jsonl", 5, 6, T0).unwrap();
        assert_eq!(store.load_position("jsonl").unwrap(), Some((5, 6)));
        assert_eq!(
            store.load_position("nginx").unwrap(),
            Some((0xdead_beef_0000_0001, u64::MAX - 1))
        );
    }

    #[test]
    fn recent_changes_are_newest_first() {
        let mut store = Store::open_in_memory().unwrap();
        // Recorded out of landing order; two land at the same time.
        let b = store.insert_change(&change("b", T0 + 20.0), T0).unwrap().id;
        let a = store.insert_change(&change("a", T0 + 10.0), T0).unwrap().id;
        let d1 = store
            .insert_change(&change("d1", T0 + 40.0), T0)
            .unwrap()
            .id;
        let d2 = store
            .insert_change(&change("d2", T0 + 40.0), T0)
            .unwrap()
            .id;
        let c = store.insert_change(&change("c", T0 + 30.0), T0).unwrap().id;
        let ids = |v: Vec<ChangeRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.recent_changes(10).unwrap()),
            vec![d2.clone(), d1.clone(), c.clone(), b.clone(), a.clone()]
        );
        assert_eq!(
            ids(store.recent_changes(2).unwrap()),
            vec![d2.clone(), d1.clone()]
        );
        assert!(store.recent_changes(0).unwrap().is_empty());
        assert_eq!(store.recent_changes(usize::MAX).unwrap().len(), 5);
        store
            .set_state(&c, ChangeState::Superseded, None, None, Some("by d1"), T0)
            .unwrap();
        assert_eq!(ids(store.watching().unwrap()), vec![a, b, d1, d2]);
    }

    #[test]
    fn the_report_is_a_json_value_in_the_serialized_record() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        let report = serde_json::json!({
            "verdict": "regressed",
            "decided_at": T0 + 12.5,
            "signals": [{"signal": "errors", "regressed": true, "e_value": 123.25}],
        });
        store
            .set_state(
                &id,
                ChangeState::Regressed,
                Some(&report.to_string()),
                Some(T0 + 12.5),
                None,
                T0 + 13.0,
            )
            .unwrap();
        let record = store.get_change(&id).unwrap().unwrap();
        let json: Value = serde_json::to_value(&record).unwrap();
        assert_eq!(json["report"], report);
        assert_eq!(json["state"], "regressed");
        assert_eq!(json["kind"], "ai");
        assert_eq!(json["commit"], "a");
        assert_eq!(json["decided_at"], T0 + 12.5);
        // A change without a report serializes it as null.
        let fresh = store.insert_change(&change("b", T0), T0).unwrap();
        assert_eq!(serde_json::to_value(&fresh).unwrap()["report"], Value::Null);
    }

    #[test]
    fn the_core_report_is_accepted() {
        use crate::core::{DetectorSettings, Monitor};
        let mut monitor = Monitor::new(DetectorSettings::default());
        monitor.change_landed(T0);
        let report = monitor.report().expect("a watch after change_landed");
        let json = serde_json::to_string(&report).unwrap();
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        store.update_report(&id, &json, T0 + 1.0).unwrap();
        let record = store.get_change(&id).unwrap().unwrap();
        assert_eq!(record.report.unwrap()["verdict"], "watching");
    }

    #[test]
    fn a_new_change_reads_from_json() {
        let new: NewChange = serde_json::from_str(
            r#"{"commit":"abc","kind":"human","pattern":null,"summary":"x","landed_at":1.5}"#,
        )
        .unwrap();
        assert_eq!(new.kind, ChangeKind::Human);
    }

    fn to(addresses: &[&str]) -> Vec<String> {
        addresses.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn queuing_an_email_twice_keeps_one() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        let mid = format!("<{id}.rolled_back@guardian>");
        let oncall = to(&["oncall@example.com", "lead@example.com"]);
        assert!(store
            .enqueue_email(Some(&id), &mid, "subject", "body", &oncall, T0 + 1.0)
            .unwrap());
        // Again, e.g. after a crash: nothing changes, not even the text or the time.
        assert!(!store
            .enqueue_email(Some(&id), &mid, "other", "other", &oncall, T0 + 9.0)
            .unwrap());
        assert_eq!(store.pending_emails().unwrap(), 1);
        let email = store.get_email(&mid).unwrap().unwrap();
        assert_eq!(
            email,
            OutboxEmail {
                message_id: mid.clone(),
                change_id: Some(id.clone()),
                subject: "subject".into(),
                body: "body".into(),
                to: oncall.clone(),
                created_at: T0 + 1.0,
                attempts: 0,
                next_attempt_at: T0 + 1.0,
                last_attempt_at: None,
                last_error: None,
                sent_at: None,
                html: None,
                links: vec![],
            }
        );
        let queued: Vec<_> = store
            .events_for(&id)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EVENT_EMAIL_QUEUED)
            .collect();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].detail["message_id"], mid.as_str());
        // Sent, then queued again: still sent, still one.
        store.mark_sent(&mid, T0 + 2.0).unwrap();
        assert!(!store
            .enqueue_email(Some(&id), &mid, "subject", "body", &oncall, T0 + 3.0)
            .unwrap());
        assert_eq!(
            store.get_email(&mid).unwrap().unwrap().sent_at,
            Some(T0 + 2.0)
        );
        assert_eq!(store.pending_emails().unwrap(), 0);
        // An email about no change (e.g. a digest) is fine; about an unknown change is not.
        assert!(store
            .enqueue_email(None, "<digest.1@guardian>", "s", "b", &oncall, T0)
            .unwrap());
        let err = store
            .enqueue_email(Some("chg_nope"), "<x@guardian>", "s", "b", &oncall, T0)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound(i) if i == "chg_nope"),
            "{err:?}"
        );
        assert!(matches!(
            store.enqueue_email(None, "<y@guardian>", "s", "b", &[], T0),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.enqueue_email(None, " ", "s", "b", &oncall, T0),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(store.pending_emails().unwrap(), 1);
    }

    #[test]
    fn emails_fail_wait_and_are_sent_once() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store.insert_change(&change("a", T0), T0).unwrap().id;
        let oncall = to(&["oncall@example.com"]);
        for (i, mid) in ["<a@guardian>", "<b@guardian>", "<c@guardian>"]
            .iter()
            .enumerate()
        {
            store
                .enqueue_email(Some(&id), mid, "s", "b", &oncall, T0 + i as f64)
                .unwrap();
        }
        let ids = |v: Vec<OutboxEmail>| v.into_iter().map(|e| e.message_id).collect::<Vec<_>>();
        assert!(store.due_emails(T0 - 1.0, 10).unwrap().is_empty());
        assert_eq!(
            ids(store.due_emails(T0 + 1.0, 10).unwrap()),
            ["<a@guardian>", "<b@guardian>"]
        );
        assert_eq!(
            ids(store.due_emails(T0 + 5.0, 1).unwrap()),
            ["<a@guardian>"]
        );

        store
            .mark_failed("<a@guardian>", "connection refused", T0 + 40.0, T0 + 10.0)
            .unwrap();
        let a = store.get_email("<a@guardian>").unwrap().unwrap();
        assert_eq!(
            (a.attempts, a.next_attempt_at, a.last_attempt_at, a.sent_at),
            (1, T0 + 40.0, Some(T0 + 10.0), None)
        );
        assert_eq!(a.last_error.as_deref(), Some("connection refused"));
        // Not due before its next attempt; the others are.
        assert_eq!(
            ids(store.due_emails(T0 + 39.0, 10).unwrap()),
            ["<b@guardian>", "<c@guardian>"]
        );
        store
            .mark_failed("<a@guardian>", "timed out", T0 + 100.0, T0 + 40.0)
            .unwrap();
        let a = store.get_email("<a@guardian>").unwrap().unwrap();
        assert_eq!(
            (a.attempts, a.last_error.as_deref()),
            (2, Some("timed out"))
        );
        assert_eq!(store.pending_emails().unwrap(), 3);

        store.mark_sent("<a@guardian>", T0 + 100.0).unwrap();
        let a = store.get_email("<a@guardian>").unwrap().unwrap();
        assert_eq!((a.attempts, a.sent_at), (3, Some(T0 + 100.0)));
        // The error of the failed attempts stays on record.
        assert_eq!(a.last_error.as_deref(), Some("timed out"));
        // Sent is final: a late failure report or a second success changes nothing.
        store
            .mark_failed("<a@guardian>", "late", T0 + 999.0, T0 + 101.0)
            .unwrap();
        store.mark_sent("<a@guardian>", T0 + 102.0).unwrap();
        assert_eq!(store.get_email("<a@guardian>").unwrap().unwrap(), a);
        assert_eq!(store.pending_emails().unwrap(), 2);
        assert_eq!(
            ids(store.due_emails(T0 + 1e6, 10).unwrap()),
            ["<b@guardian>", "<c@guardian>"]
        );
        assert_eq!(
            ids(store.queued_emails(10).unwrap()),
            ["<b@guardian>", "<c@guardian>"]
        );
        let sent: Vec<_> = store
            .events_for(&id)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EVENT_EMAIL_SENT)
            .collect();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].detail["attempts"], 3);

        // Emails are never deleted.
        assert!(store.conn.execute("DELETE FROM outbox", []).is_err());
        assert_eq!(store.pending_emails().unwrap(), 2);

        // Unknown ids and bad times are refused.
        assert!(matches!(
            store.mark_sent("<nope@guardian>", T0),
            Err(StoreError::Invalid(_))
        ));
        let err = store
            .mark_failed("<nope@guardian>", "x", T0, T0)
            .unwrap_err();
        assert!(err.to_string().contains("<nope@guardian>"), "{err}");
        assert!(matches!(
            store.mark_failed("<b@guardian>", "x", f64::NAN, T0),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn the_outbox_survives_a_reopen_and_old_files_gain_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guardian.db");
        // A file at schema version 1, as the first guardian left it.
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        {
            let mut store = Store::open(&path).unwrap();
            let id = store.insert_change(&change("a", T0), T0).unwrap().id;
            store
                .enqueue_email(
                    Some(&id),
                    "<m@guardian>",
                    "s",
                    "b",
                    &to(&["x@example.com"]),
                    T0,
                )
                .unwrap();
            store
                .mark_failed("<m@guardian>", "refused", T0 + 30.0, T0)
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let email = store.get_email("<m@guardian>").unwrap().unwrap();
        assert_eq!((email.attempts, email.next_attempt_at), (1, T0 + 30.0));
        assert_eq!(email.to, ["x@example.com"]);
        assert_eq!(store.pending_emails().unwrap(), 1);
    }
}
