//! What `verify` finds and how it is told: each finding with its kind (and the exit code of
//! `guardian audit verify` for it), what was checked against, and the report for a person.

use std::fmt::Write as _;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;

use super::Checkpoint;

/// What kind of tampering a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindingKind {
    /// A record's hash does not match its contents.
    Edited,
    /// Records are missing from the middle: a gap in the sequence numbers.
    Removed,
    /// A record sits at another position than the one it was written at.
    Reordered,
    /// A record's link to the one before does not match: the one before was rewritten with a
    /// fresh hash, or records between them were removed.
    Unlinked,
    /// Records were cut off the end.
    Truncated,
    /// A checkpoint's size and head do not match the log, or it cannot be read.
    CheckpointMismatch,
    /// A checkpoint's signature does not verify with the key.
    BadSignature,
}

impl FindingKind {
    /// The exit code of `guardian audit verify` for this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            FindingKind::Edited
            | FindingKind::Removed
            | FindingKind::Reordered
            | FindingKind::Unlinked => 2,
            FindingKind::Truncated | FindingKind::CheckpointMismatch => 3,
            FindingKind::BadSignature => 4,
        }
    }
}

/// One thing found wrong, for a person.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub kind: FindingKind,
    /// The record it is about: the edited, moved or unlinked one, the first removed one, the
    /// checkpoint record; `None` for a checkpoint kept off the host.
    pub seq: Option<u64>,
    pub message: String,
}

/// Where the key that checked the signatures came from.
#[derive(Clone, Debug, PartialEq)]
pub enum KeySource {
    /// Given by the person verifying (kept off the host): the strongest check.
    Given,
    /// The signing key file on this host.
    KeyFile(PathBuf),
    /// Each checkpoint's own record: catches edits, not a re-signed log.
    Recorded,
}

/// What `verify` is checked against.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// The public key to check signatures with, and where it came from; without one, each
    /// checkpoint is checked with the key its record names.
    pub key: Option<(VerifyingKey, KeySource)>,
    /// Checkpoints kept off the host (e.g. from alert emails).
    pub kept: Vec<Checkpoint>,
}

/// The outcome of walking the chain.
#[derive(Clone, Debug)]
pub struct Verification {
    /// Records read.
    pub records: u64,
    /// The last record's seq and stored hash.
    pub head: Option<(u64, Vec<u8>)>,
    /// Checkpoint records in the log whose signature and contents hold.
    pub good_checkpoints: u64,
    /// The largest size a good checkpoint (in the log or kept) vouches for.
    pub signed_up_to: u64,
    pub key_source: KeySource,
    pub findings: Vec<Finding>,
}

impl Verification {
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }

    /// 0 intact; else the highest of the findings' codes: 2 chain broken (edited, removed,
    /// reordered), 3 checkpoint mismatch or truncation, 4 bad signature.
    pub fn exit_code(&self) -> u8 {
        self.findings
            .iter()
            .map(|f| f.kind.exit_code())
            .max()
            .unwrap_or(0)
    }

    /// The report for a person: each finding, then what was checked.
    pub fn render(&self) -> String {
        const SHOWN: usize = 50;
        let mut out = String::new();
        for f in self.findings.iter().take(SHOWN) {
            let _ = writeln!(out, "TAMPERED: {}", f.message);
        }
        if self.findings.len() > SHOWN {
            let _ = writeln!(out, "... and {} more findings", self.findings.len() - SHOWN);
        }
        let head = match &self.head {
            Some((seq, hash)) => format!("through record {seq} (head {})", BASE64.encode(hash)),
            None => "no records".to_string(),
        };
        if self.intact() {
            let _ = writeln!(
                out,
                "audit trail intact: {} records, {head}; {} checkpoint{}, signatures vouch for \
                 records 1 to {}",
                self.records,
                self.good_checkpoints,
                if self.good_checkpoints == 1 { "" } else { "s" },
                self.signed_up_to
            );
        } else {
            let _ = writeln!(
                out,
                "audit trail NOT intact: {} findings in {} records read, {head}",
                self.findings.len(),
                self.records
            );
            let _ = writeln!(
                out,
                "The records named were changed outside guardian, by someone with write access \
                 to the state database. Keep the file as it is (copy it with sqlite3's .backup), \
                 distrust those records, and compare with an export or a backup from before."
            );
        }
        match &self.key_source {
            KeySource::Given => {}
            KeySource::KeyFile(path) => {
                let _ = writeln!(
                    out,
                    "signatures checked with the key in {} (on this host); pass --pubkey with \
                     the key you keep elsewhere to rule out a re-signed log",
                    path.display()
                );
            }
            KeySource::Recorded => {
                let _ = writeln!(
                    out,
                    "signatures checked with the key each checkpoint records (from this \
                     database); pass --pubkey with the key you keep elsewhere to rule out a \
                     re-signed log"
                );
            }
        }
        out
    }
}
