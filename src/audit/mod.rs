//! The audit trail: checking that the decision log in the state database is the one guardian
//! wrote, signing checkpoints of it, and exporting it.
//!
//! The log is the store's `events` table (see `src/store/events.rs`): every proposal, decision,
//! approval, deploy, verdict, rollback command and email is a row, written in the same
//! transaction as the state change it records. Each row is chained to the one before:
//!
//! ```text
//! hash = SHA-256("guardian-audit-v1\0" || be64(seq) || field(prev_hash)
//!                || field(be64 bits of at) || field(kind) || field(change_id)
//!                || field(subject) || field(actor) || field(detail))
//! field(bytes) = be64(len) || bytes;  field(NULL) = be64(u64::MAX)
//! ```
//!
//! over the bytes exactly as stored (never a re-serialization). The first record's `prev_hash`
//! is 32 zero bytes; `seq` starts at 1 and has no gaps.
//!
//! A hash chain alone only shows that the log is consistent with itself: whoever can write the
//! file can rewrite a record and recompute every hash after it, or cut records off the end.
//! That is what checkpoints are for. A checkpoint is a C2SP signed note
//! (<https://c2sp.org/signed-note>, <https://c2sp.org/tlog-checkpoint>):
//!
//! ```text
//! guardian/<service>/audit
//! <size: how many records it covers>
//! <base64 of the hash of record <size>>
//!
//! — guardian <base64(key id || ed25519 signature of the three lines above)>
//! ```
//!
//! The key id is the first 4 bytes of SHA-256("guardian" || "\n" || 0x01 || public key), as
//! C2SP specifies for Ed25519, so the note also verifies with Go's `sumdb/note` given the key
//! `guardian audit pubkey` prints. Each checkpoint is itself a record in the chain (kind
//! `audit_checkpoint`). A checkpoint kept off the host (in an alert email) pins the log: a
//! later rewrite or truncation of anything it covers no longer matches it.
//!
//! # Wiring it into the daemon
//!
//! ```text
//! // Once, at start-up (creates the key, 0600, the first time):
//! let key_file = guardian::audit::default_key_file(&settings.state_dir);
//! let key = guardian::audit::load_or_create_signing_key(&key_file)?;
//! let origin = guardian::audit::origin_for(&settings.service);
//! // Each pass of the loop (cheap when nothing is due):
//! store.checkpoint_if_due(&key, &origin, now, 15.0 * 60.0)?;
//! // Before an alert, so the email carries a checkpoint covering what it reports:
//! let note = store.checkpoint(&key, &origin, now)?.note_text();
//! // or, without writing a record: store.latest_checkpoint()?.map(|c| c.note_text())
//! ```
//!
//! Verification (`guardian audit verify`) opens the database read-only, so it runs beside the
//! daemon. It walks the chain once and names each record that was edited, removed, reordered
//! or unlinked, each checkpoint whose signature or contents do not hold, and truncation of the
//! tail (against the database's own counter or a checkpoint kept off the host).
//!
//! One file per concern: `record` (the record hash), `keys` (the signing key and the verifier
//! key's text), `checkpoint` (signed notes, found in whatever a person kept them in), `verify`
//! (walking the chain) with `verification` (its findings and report), `export` (JSON lines).

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;

use rusqlite::types::ValueRef;

pub use checkpoint::{origin_for, Checkpoint};
pub use export::{export, parse_since};
pub use keys::{
    default_key_file, key_id, load_or_create_signing_key, load_signing_key, parse_verifier_key,
    verifier_key_text, KEY_FILE_NAME, KEY_NAME,
};
pub use record::{record_hash, RecordFields, GENESIS};
pub use verification::{Finding, FindingKind, KeySource, Verification, VerifyOptions};
pub use verify::{open_read_only, verify, verify_connection};

mod checkpoint;
mod export;
mod keys;
mod record;
mod verification;
mod verify;

/// The kind of the record a checkpoint is stored as, as text: `verify` reads the rows' bytes.
pub const CHECKPOINT_KIND: &str = crate::change::EventKind::AuditCheckpoint.as_str();

/// The actor of the daemon's own records.
pub const ACTOR_GUARDIAN: &str = "guardian";

/// Why an audit operation could not be done. (A tampered log is not an error: it is a finding
/// in [`Verification`].)
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// SQLite failed while doing `doing`.
    #[error("{doing}: {error}")]
    Sqlite {
        doing: String,
        error: rusqlite::Error,
    },
    /// A file could not be read or written.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    /// The signing key file is unusable (bad contents, or readable by others).
    #[error("signing key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    /// A checkpoint note or a public key that does not parse.
    #[error("{0}")]
    Parse(String),
    /// The database cannot be checked as it is (missing, or not yet upgraded).
    #[error("{0}")]
    Database(String),
}

fn sqlite(doing: impl FnOnce() -> String) -> impl FnOnce(rusqlite::Error) -> AuditError {
    move |error| AuditError::Sqlite {
        doing: doing(),
        error,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn blob(v: ValueRef<'_>) -> Option<Vec<u8>> {
    match v {
        ValueRef::Blob(b) => Some(b.to_vec()),
        _ => None,
    }
}

/// `2026-11-26 03:12:09 UTC`.
pub fn format_time(at: f64) -> String {
    if !at.is_finite() {
        return format!("time {at}");
    }
    match chrono::DateTime::from_timestamp(at.floor() as i64, 0) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("time {at}"),
    }
}
