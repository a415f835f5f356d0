//! The daemon's durable state: one SQLite file under the state directory.
//!
//! The store reads no clock: every write takes `now` (unix seconds) from the caller. Decisions
//! are never rewritten: a change in a final state cannot move again, and the decision log is
//! append-only.
//!
//! One file per concern, each an `impl Store` block with its rows' types and its tests:
//! - `open`: opening the file (private, WAL, `synchronous=FULL`), or reading beside the daemon.
//! - `migrations`: the schema, versioned with `PRAGMA user_version`, and its upgrades.
//! - `changes`: every deploy guardian was told about, its state and the latest report.
//! - `events`: the decision log, which is the audit chain. Every state transition appends a row
//!   in the same transaction as the transition itself; rows are never updated or deleted
//!   (triggers refuse it).
//! - `checkpoints`: signed checkpoints of that chain.
//! - `outbox`: alerts waiting for (or done with) delivery.
//! - `positions`: how far each traffic source has been read (file identity and offset).
//! - `series`: the traffic in 10-second bins behind the post-mortem's chart.
//! - `sentry`: Sentry's deliveries, issues and event counts.
//! - `agent`: the agent's runs on Sentry's issues (`[daemon.agent]`).
//! - `flags`: the flag_off actions, each attempt and how it ended (`[daemon.flag_off]`).
//!
//! The trust gate's tables (proposals, approval links, the proposal tally) are read and written
//! by `impl Store` blocks beside the gate's rules, in `src/gate/proposals.rs` and
//! `src/gate/links.rs`.

use std::fmt;
use std::path::PathBuf;

use rusqlite::Connection;

/// The change model, re-exported: the store keeps changes in these states and every caller
/// that reads a change finds them here too.
pub use crate::change::{ChangeKind, ChangeState, EventKind, StoredKind};
pub use agent::AgentRun;
pub use changes::{ChangeRecord, NewChange, StateChange};
pub(crate) use events::append_record;
pub use events::EventRecord;
pub use flags::{FlagAction, FlagTally, NewFlagAction};
pub use metrics::{ActionEnd, ChangeCount};
pub use migrations::AUDIT_SCHEMA_VERSION;
pub use notifications::Notification;
pub use outbox::{EmailQueued, OutboxEmail};
pub use restarts::LatestRecord;
pub use sentry::{Delivered, Polled};

mod agent;
mod changes;
mod checkpoints;
mod events;
mod flags;
mod metrics;
mod migrations;
mod notifications;
mod open;
mod outbox;
mod positions;
mod restarts;
mod sentry;
mod series;
#[cfg(test)]
mod testing;

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

/// SQLite stores NaN as NULL and infinities are no time: refuse both.
/// A fresh random id for a row of `table`: `prefix` and 12 hex digits, drawn again in the
/// unlikely case one is taken. `table` is one of the store's own names, never outside input.
fn fresh_id(tx: &rusqlite::Transaction<'_>, table: &str, prefix: &str) -> rusqlite::Result<String> {
    use rusqlite::OptionalExtension;
    loop {
        let candidate = format!("{prefix}{:012x}", rand::random::<u64>() >> 16);
        let taken = tx
            .query_row(
                &format!("SELECT 1 FROM {table} WHERE id = ?1"),
                [&candidate],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !taken {
            return Ok(candidate);
        }
    }
}

fn finite(what: &str, t: f64) -> Result<()> {
    if t.is_finite() {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{what} must be finite unix seconds, got {t}"
        )))
    }
}
