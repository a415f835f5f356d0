//! The audit trail: checking that the decision log in the state database is the one guardian
//! wrote, signing checkpoints of it, and exporting it.
//!
//! The log is the store's `events` table (see `src/store.rs`): every proposal, decision,
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

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sha2::{Digest, Sha256};

/// The kind of the record a checkpoint is stored as.
pub const CHECKPOINT_KIND: &str = "audit_checkpoint";

/// The actor of the daemon's own records.
pub const ACTOR_GUARDIAN: &str = "guardian";

/// The name that signs checkpoints (the `— guardian …` line).
pub const KEY_NAME: &str = "guardian";

/// The signing key's file name in the state directory.
pub const KEY_FILE_NAME: &str = "audit-signing.key";

/// Where the signing key lives for a state directory.
pub fn default_key_file(state_dir: &Path) -> PathBuf {
    state_dir.join(KEY_FILE_NAME)
}

/// Domain separation for record hashes: a hash of anything else never collides with one.
const HASH_DOMAIN: &[u8] = b"guardian-audit-v1\0";

/// C2SP's signature type byte for Ed25519.
const ED25519_TYPE: u8 = 0x01;

/// The `prev_hash` of the first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// How far from its position a record's original position is searched for, to tell a record
/// that was moved from one that was edited.
const MOVE_WINDOW: i64 = 256;

/// How many broken records get that search (each costs up to 4 × `MOVE_WINDOW` hashes).
const MOVE_SEARCHES: usize = 64;

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

/// The stored bytes of one record, as hashed (public so that other tools can check a chain).
#[derive(Clone, Copy, Debug)]
pub struct RecordFields<'a> {
    pub at: f64,
    pub kind: &'a [u8],
    pub change_id: Option<&'a [u8]>,
    pub subject: Option<&'a [u8]>,
    pub actor: Option<&'a [u8]>,
    pub detail: &'a [u8],
}

/// The chain hash of record `seq` (see the module doc for the layout).
pub fn record_hash(seq: i64, prev: &[u8], fields: &RecordFields<'_>) -> [u8; 32] {
    fn field(h: &mut Sha256, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) => {
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
            None => h.update(u64::MAX.to_be_bytes()),
        }
    }
    let mut h = Sha256::new();
    h.update(HASH_DOMAIN);
    h.update(seq.to_be_bytes());
    field(&mut h, Some(prev));
    field(&mut h, Some(&fields.at.to_bits().to_be_bytes()));
    field(&mut h, Some(fields.kind));
    field(&mut h, fields.change_id);
    field(&mut h, fields.subject);
    field(&mut h, fields.actor);
    field(&mut h, Some(fields.detail));
    h.finalize().into()
}

/// The checkpoint origin for a service: `guardian/<service>/audit`, with whitespace and `+`
/// (which signed notes keep out of names) replaced by `-`.
pub fn origin_for(service: &str) -> String {
    let service: String = service
        .trim()
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() || c == '+' {
                '-'
            } else {
                c
            }
        })
        .collect();
    format!("guardian/{service}/audit")
}

/// The C2SP key id of an Ed25519 key named `name`.
pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519_TYPE]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The public key as a signed-note verifier key: `guardian+<key id hex>+<base64(0x01 || key)>`,
/// the one line to keep off the host.
pub fn verifier_key_text(key: &VerifyingKey) -> String {
    let id = key_id(KEY_NAME, key);
    let mut typed = Vec::with_capacity(33);
    typed.push(ED25519_TYPE);
    typed.extend_from_slice(key.as_bytes());
    format!("{KEY_NAME}+{}+{}", hex(&id), BASE64.encode(typed))
}

/// Reads a public key given as `guardian audit pubkey` prints it, or as the bare base64 of
/// the 32 key bytes.
pub fn parse_verifier_key(text: &str) -> Result<VerifyingKey, AuditError> {
    let text = text.trim();
    let bad = |why: &str| {
        AuditError::Parse(format!(
            "public key {text:?}: {why}; expected the line `guardian audit pubkey` prints, \
             like guardian+1a2b3c4d+AbC…"
        ))
    };
    // The base64 may hold `+` too: the layout is `name+8 hex digits+rest`.
    let parts: Vec<&str> = text.splitn(3, '+').collect();
    let named =
        parts.len() == 3 && parts[1].len() == 8 && parts[1].bytes().all(|b| b.is_ascii_hexdigit());
    let (name, bytes) = match parts[..] {
        [name, id, key] if named => {
            let raw = BASE64
                .decode(key)
                .map_err(|_| bad("the key is not base64"))?;
            let Some((&ED25519_TYPE, key)) = raw.split_first() else {
                return Err(bad("not an Ed25519 key"));
            };
            let key: [u8; 32] = key.try_into().map_err(|_| bad("not 32 key bytes"))?;
            let vk = VerifyingKey::from_bytes(&key).map_err(|_| bad("not a valid key"))?;
            if hex(&key_id(name, &vk)) != id {
                return Err(bad("its key id does not match the key"));
            }
            (name, vk)
        }
        _ if !text.contains(' ') => {
            let bare = text;
            let raw = BASE64.decode(bare).map_err(|_| bad("not base64"))?;
            let key: [u8; 32] = raw[..].try_into().map_err(|_| bad("not 32 key bytes"))?;
            let vk = VerifyingKey::from_bytes(&key).map_err(|_| bad("not a valid key"))?;
            (KEY_NAME, vk)
        }
        _ => return Err(bad("unrecognised layout")),
    };
    if name != KEY_NAME {
        return Err(bad(&format!("it names {name:?}, not {KEY_NAME:?}")));
    }
    Ok(bytes)
}

/// Reads the signing key: one line, the base64 of the 32-byte Ed25519 seed. A key that
/// others may read is refused, as ssh does.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, AuditError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |error| AuditError::Io {
        path: path.to_path_buf(),
        error,
    };
    let key_error = |reason: String| AuditError::Key {
        path: path.to_path_buf(),
        reason,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(key_error(format!(
            "mode {:o} lets others read it; run chmod 600 on it (or make a new key, and \
             keep its new public key off the host)",
            mode & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let raw = BASE64
        .decode(text.trim())
        .map_err(|_| key_error("is not one line of base64".into()))?;
    let seed: [u8; 32] = raw[..]
        .try_into()
        .map_err(|_| key_error(format!("holds {} bytes, expected 32", raw.len())))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads the signing key, creating it (mode 0600, from the OS's randomness) if the file does
/// not exist. The directory must exist.
pub fn load_or_create_signing_key(path: &Path) -> Result<SigningKey, AuditError> {
    use rand::RngCore;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |error| AuditError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut file) => {
            file.write_all(format!("{}\n", BASE64.encode(seed)).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|error| AuditError::Io {
                        path: dir.to_path_buf(),
                        error,
                    })?;
            }
            Ok(SigningKey::from_bytes(&seed))
        }
        // Someone else made it first (or it was there): use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => load_signing_key(path),
        Err(e) => Err(io(e)),
    }
}

/// A signed statement that the log's first `size` records end in `head`.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// `guardian/<service>/audit`.
    pub origin: String,
    /// How many records it covers (records 1 to `size`).
    pub size: u64,
    /// The hash of record `size` (32 zero bytes when `size` is 0).
    pub head: [u8; 32],
    /// The key id of the key that signed it.
    pub key_id: [u8; 4],
    pub signature: [u8; 64],
    /// Where it is in the log (the seq of its `audit_checkpoint` record) and when it was made;
    /// `None` for a note read from elsewhere.
    pub recorded: Option<(u64, f64)>,
}

impl Checkpoint {
    /// Signs `size` and `head` for `origin`.
    pub fn sign(key: &SigningKey, origin: &str, size: u64, head: [u8; 32]) -> Checkpoint {
        let body = note_body(origin, size, &head);
        Checkpoint {
            origin: origin.to_string(),
            size,
            head,
            key_id: key_id(KEY_NAME, &key.verifying_key()),
            signature: key.sign(body.as_bytes()).to_bytes(),
            recorded: None,
        }
    }

    /// The signed text: the three body lines.
    pub fn body(&self) -> String {
        note_body(&self.origin, self.size, &self.head)
    }

    /// The signed note, ready to paste into an email or keep in a file.
    pub fn note_text(&self) -> String {
        let mut sig = Vec::with_capacity(68);
        sig.extend_from_slice(&self.key_id);
        sig.extend_from_slice(&self.signature);
        format!(
            "{}\n\u{2014} {KEY_NAME} {}\n",
            self.body(),
            BASE64.encode(sig)
        )
    }

    /// Whether `key` made this signature.
    pub fn signed_by(&self, key: &VerifyingKey) -> bool {
        self.key_id == key_id(KEY_NAME, key)
            && key
                .verify_strict(
                    self.body().as_bytes(),
                    &Signature::from_bytes(&self.signature),
                )
                .is_ok()
    }

    /// Finds the checkpoint note in `text` (which may be a whole email around it: the note
    /// is recognised by its shape, three body lines, a blank line and the signature line).
    pub fn parse(text: &str) -> Result<Checkpoint, AuditError> {
        let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
        for i in 0..lines.len().saturating_sub(4) {
            let (origin, size, head, blank, sig) = (
                lines[i],
                lines[i + 1],
                lines[i + 2],
                lines[i + 3],
                lines[i + 4],
            );
            let Ok(size) = size.parse::<u64>() else {
                continue;
            };
            let Some(head) = decode_hash(head) else {
                continue;
            };
            if origin.is_empty() || !blank.is_empty() {
                continue;
            }
            let Some(rest) = sig.strip_prefix("\u{2014} ") else {
                continue;
            };
            let Some((name, sig)) = rest.split_once(' ') else {
                continue;
            };
            if name != KEY_NAME {
                continue;
            }
            let raw = BASE64.decode(sig.trim()).map_err(|_| {
                AuditError::Parse(format!(
                    "checkpoint for {origin} at size {size}: its signature is not base64"
                ))
            })?;
            if raw.len() != 68 {
                return Err(AuditError::Parse(format!(
                    "checkpoint for {origin} at size {size}: its signature has {} bytes, \
                     expected 68 (key id and Ed25519 signature)",
                    raw.len()
                )));
            }
            let mut key_id = [0u8; 4];
            key_id.copy_from_slice(&raw[..4]);
            let mut signature = [0u8; 64];
            signature.copy_from_slice(&raw[4..]);
            return Ok(Checkpoint {
                origin: origin.to_string(),
                size,
                head,
                key_id,
                signature,
                recorded: None,
            });
        }
        Err(AuditError::Parse(NO_CHECKPOINT.into()))
    }

    /// Finds the checkpoint in a file as a person keeps it: the bare note, a note with text
    /// around it, or a whole email as it was delivered (headers, quoted-printable or base64,
    /// multipart, even forwarded as an attachment), read with `mail-parser`.
    pub fn find(bytes: &[u8]) -> Result<Checkpoint, AuditError> {
        let direct = Checkpoint::parse(&String::from_utf8_lossy(bytes));
        if direct.is_ok() {
            return direct;
        }
        match mail_parser::MessageParser::default().parse(bytes) {
            Some(message) => in_message(&message).unwrap_or(direct),
            None => direct,
        }
    }
}

/// What `Checkpoint::parse` says when the text holds no note at all.
const NO_CHECKPOINT: &str = "no checkpoint found: expected the lines `guardian/<service>/audit`, \
     the size, the head hash, a blank line and `— guardian <signature>`, as in the alert emails";

/// The checkpoint in the first text part of `message` (or of a message inside it) that holds
/// one; `None` when none does. A note that is there but malformed is an error, not skipped.
fn in_message(message: &mail_parser::Message<'_>) -> Option<Result<Checkpoint, AuditError>> {
    use mail_parser::PartType;
    for part in &message.parts {
        let found = match &part.body {
            PartType::Text(text) | PartType::Html(text) => Checkpoint::parse(text),
            PartType::Message(inner) => match in_message(inner) {
                Some(found) => found,
                None => continue,
            },
            _ => continue,
        };
        match found {
            Err(AuditError::Parse(m)) if m == NO_CHECKPOINT => continue,
            other => return Some(other),
        }
    }
    None
}

fn note_body(origin: &str, size: u64, head: &[u8; 32]) -> String {
    format!("{origin}\n{size}\n{}\n", BASE64.encode(head))
}

fn decode_hash(text: &str) -> Option<[u8; 32]> {
    BASE64.decode(text.trim()).ok()?.try_into().ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `record 5 was` or `records 5 to 9 were`.
fn records_were(first: i64, last: i64) -> String {
    if first == last {
        format!("record {first} was")
    } else {
        format!("records {first} to {last} were")
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

/// One row's link data (what other rows' checks need).
struct Link {
    seq: i64,
    prev: Option<Vec<u8>>,
    hash: Option<Vec<u8>>,
}

/// One row, as read for the content checks.
struct Row {
    seq: i64,
    at: ValueCopy,
    kind: ValueCopy,
    change_id: ValueCopy,
    subject: ValueCopy,
    actor: ValueCopy,
    detail: ValueCopy,
    prev: Option<Vec<u8>>,
    hash: Option<Vec<u8>>,
}

/// A column value kept as read, to hash the exact stored bytes.
enum ValueCopy {
    Null,
    Real(f64),
    Text(Vec<u8>),
    /// An integer or a blob where guardian writes text or a real.
    Other(&'static str),
}

impl ValueCopy {
    fn of(v: ValueRef<'_>) -> ValueCopy {
        match v {
            ValueRef::Null => ValueCopy::Null,
            ValueRef::Real(f) => ValueCopy::Real(f),
            // A REAL column may hand back an integer-valued real as stored: the same number.
            ValueRef::Integer(i) => ValueCopy::Real(i as f64),
            ValueRef::Text(t) => ValueCopy::Text(t.to_vec()),
            ValueRef::Blob(_) => ValueCopy::Other("a blob"),
        }
    }

    fn text(&self, column: &str) -> Result<&[u8], String> {
        match self {
            ValueCopy::Text(t) => Ok(t),
            ValueCopy::Null => Err(format!("its {column} is missing")),
            ValueCopy::Real(_) => Err(format!("its {column} is a number, not text")),
            ValueCopy::Other(what) => Err(format!("its {column} is {what}, not text")),
        }
    }

    fn optional_text(&self, column: &str) -> Result<Option<&[u8]>, String> {
        match self {
            ValueCopy::Null => Ok(None),
            other => other.text(column).map(Some),
        }
    }

    fn lossy(&self) -> Option<String> {
        match self {
            ValueCopy::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
            _ => None,
        }
    }
}

impl Row {
    fn fields(&self) -> Result<RecordFields<'_>, String> {
        let at = match self.at {
            ValueCopy::Real(f) => f,
            _ => return Err("its time is not a number".into()),
        };
        Ok(RecordFields {
            at,
            kind: self.kind.text("kind")?,
            change_id: self.change_id.optional_text("change id")?,
            subject: self.subject.optional_text("subject")?,
            actor: self.actor.optional_text("actor")?,
            detail: self.detail.text("detail")?,
        })
    }

    /// `record 17 (state_changed for chg_ab12, 2026-11-26 03:12:09 UTC)`.
    fn describe(&self) -> String {
        let mut parts = self
            .kind
            .lossy()
            .unwrap_or_else(|| "unreadable kind".into());
        if let Some(about) = self.change_id.lossy().or_else(|| self.subject.lossy()) {
            let _ = write!(parts, " for {about}");
        }
        if let ValueCopy::Real(at) = self.at {
            let _ = write!(parts, ", {}", format_time(at));
        }
        format!("record {} ({parts})", self.seq)
    }
}

/// Opens the state database read-only (so it can be checked while the daemon runs).
pub fn open_read_only(db: &Path) -> Result<Connection, AuditError> {
    if !db.exists() {
        return Err(AuditError::Database(format!(
            "no state database at {}: check --db, or the state_dir in --config",
            db.display()
        )));
    }
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite(|| format!("opening {} read-only", db.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sqlite(|| format!("opening {}", db.display())))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite(|| {
            format!("reading the schema version of {}", db.display())
        }))?;
    if version < crate::store::AUDIT_SCHEMA_VERSION {
        return Err(AuditError::Database(format!(
            "{} is at schema version {version}, before the audit chain (version {}): start \
             this guardian once on it to upgrade and chain the existing records",
            db.display(),
            crate::store::AUDIT_SCHEMA_VERSION
        )));
    }
    Ok(conn)
}

/// Checks the audit chain in the database at `db`. See [`verify_connection`].
pub fn verify(db: &Path, options: &VerifyOptions) -> Result<Verification, AuditError> {
    let conn = open_read_only(db)?;
    verify_connection(&conn, options)
}

/// Walks the whole chain in one read transaction and reports everything wrong with it.
pub fn verify_connection(
    conn: &Connection,
    options: &VerifyOptions,
) -> Result<Verification, AuditError> {
    // One snapshot for both passes, even while the daemon appends.
    conn.execute_batch("BEGIN")
        .map_err(sqlite(|| "starting a read transaction".to_string()))?;
    let result = walk(conn, options);
    let _ = conn.execute_batch("COMMIT");
    result
}

fn walk(conn: &Connection, options: &VerifyOptions) -> Result<Verification, AuditError> {
    let reading = || "reading the audit chain".to_string();
    let links: Vec<Link> = {
        let mut stmt = conn
            .prepare("SELECT seq, prev_hash, hash FROM events ORDER BY seq")
            .map_err(sqlite(reading))?;
        let rows = stmt
            .query_map([], |row| {
                Ok(Link {
                    seq: row.get(0)?,
                    prev: blob(row.get_ref(1)?),
                    hash: blob(row.get_ref(2)?),
                })
            })
            .map_err(sqlite(reading))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sqlite(reading))?
    };
    let counter: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(sqlite(|| "reading the record counter".to_string()))?;

    let mut findings = Vec::new();
    let mut moved_rows = std::collections::HashSet::new();
    // For each moved record, the position it was written at.
    let mut written_at = std::collections::HashMap::new();
    let mut searches = 0;
    let mut checkpoint_rows = Vec::new();
    let mut stmt = conn
        .prepare(
            "SELECT seq, at, kind, change_id, subject, actor, detail, prev_hash, hash \
             FROM events ORDER BY seq",
        )
        .map_err(sqlite(reading))?;
    let mut rows = stmt.query([]).map_err(sqlite(reading))?;
    let mut index = 0usize;
    let mut previous: Option<(i64, Option<Vec<u8>>)> = None;
    while let Some(r) = rows.next().map_err(sqlite(reading))? {
        let row = Row {
            seq: r.get(0).map_err(sqlite(reading))?,
            at: ValueCopy::of(r.get_ref(1).map_err(sqlite(reading))?),
            kind: ValueCopy::of(r.get_ref(2).map_err(sqlite(reading))?),
            change_id: ValueCopy::of(r.get_ref(3).map_err(sqlite(reading))?),
            subject: ValueCopy::of(r.get_ref(4).map_err(sqlite(reading))?),
            actor: ValueCopy::of(r.get_ref(5).map_err(sqlite(reading))?),
            detail: ValueCopy::of(r.get_ref(6).map_err(sqlite(reading))?),
            prev: blob(r.get_ref(7).map_err(sqlite(reading))?),
            hash: blob(r.get_ref(8).map_err(sqlite(reading))?),
        };
        let here = index;
        index += 1;
        let what = row.describe();
        let seq = row.seq;

        // Does the record match its own hash?
        let content = match (row.fields(), &row.prev, &row.hash) {
            (Err(why), _, _) => Err(why),
            (Ok(_), None, _) | (Ok(_), _, None) => Err("it has no place in the chain (no hash \
                                                        or no link): it was not written by \
                                                        guardian"
                .to_string()),
            (Ok(fields), Some(prev), Some(hash)) => {
                if record_hash(seq, prev, &fields)[..] == hash[..] {
                    Ok(())
                } else {
                    let written_as = if searches < MOVE_SEARCHES {
                        searches += 1;
                        written_position(&links, here, &fields, prev, hash)
                    } else {
                        None
                    };
                    match written_as {
                        Some(original) => {
                            moved_rows.insert(seq);
                            written_at.insert(seq, original);
                            findings.push(Finding {
                                kind: FindingKind::Reordered,
                                seq: Some(seq as u64),
                                message: format!(
                                    "{what} was written as record {original}: records were \
                                     reordered (or some removed and the rest renumbered)"
                                ),
                            });
                            Ok(())
                        }
                        None => Err("its hash no longer matches its contents".to_string()),
                    }
                }
            }
        };
        let content_ok = content.is_ok();
        if let Err(why) = content {
            findings.push(Finding {
                kind: FindingKind::Edited,
                seq: Some(seq as u64),
                message: format!("{what} was edited after it was written: {why}"),
            });
        }

        // Does it follow the record before it?
        let (expected_seq, expected_prev) = match &previous {
            None => (1, Some(GENESIS.to_vec())),
            Some((s, hash)) => (s + 1, hash.clone()),
        };
        if seq > expected_seq {
            let range = records_were(expected_seq, seq - 1);
            findings.push(Finding {
                kind: FindingKind::Removed,
                seq: Some(expected_seq as u64),
                message: format!(
                    "{range} removed: the log jumps from {} to {what}",
                    previous
                        .as_ref()
                        .map_or("its start".to_string(), |(s, _)| format!("record {s}"))
                ),
            });
        } else if content_ok
            && !moved_rows.contains(&seq)
            && !previous
                .as_ref()
                .is_some_and(|(s, _)| moved_rows.contains(s))
            && row.prev != expected_prev
        {
            findings.push(Finding {
                kind: FindingKind::Unlinked,
                seq: Some(seq as u64),
                message: format!(
                    "{what} does not link to record {}: that record was rewritten (its hash \
                     recomputed), or records between them were removed and the rest renumbered",
                    expected_seq - 1
                ),
            });
        }
        if row.kind.lossy().as_deref() == Some(CHECKPOINT_KIND) {
            checkpoint_rows.push((seq, what, row.detail.lossy(), row.at));
        }
        previous = Some((seq, row.hash));
    }
    drop(rows);
    drop(stmt);

    let last_seq = links.last().map_or(0, |l| l.seq);
    if let Some(counter) = counter.filter(|&c| c > last_seq) {
        findings.push(Finding {
            kind: FindingKind::Truncated,
            seq: Some(last_seq as u64 + 1),
            message: format!(
                "{} cut off the end: the database's own counter says {counter} records were \
                 written, the log ends at record {last_seq}",
                records_were(last_seq + 1, counter)
            ),
        });
    }

    // Checkpoints recorded in the log.
    let stored_hash = |size: u64| -> Option<&[u8]> {
        if size == 0 {
            return Some(&GENESIS);
        }
        let i = links.binary_search_by_key(&(size as i64), |l| l.seq).ok()?;
        links[i].hash.as_deref()
    };
    let mut good_checkpoints = 0;
    let mut signed_up_to = 0;
    let mut recorded_key: Option<VerifyingKey> = None;
    for (seq, what, detail, at) in checkpoint_rows {
        let parsed = detail
            .as_deref()
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .and_then(|d| {
                let note = Checkpoint::parse(d["note"].as_str()?).ok()?;
                let key = d["public_key"]
                    .as_str()
                    .and_then(|k| parse_verifier_key(k).ok());
                Some((note, key))
            });
        let Some((mut checkpoint, own_key)) = parsed else {
            findings.push(Finding {
                kind: FindingKind::CheckpointMismatch,
                seq: Some(seq as u64),
                message: format!("{what} is not a readable checkpoint"),
            });
            continue;
        };
        if let ValueCopy::Real(at) = at {
            checkpoint.recorded = Some((seq as u64, at));
        }
        let key = options.key.as_ref().map(|(k, _)| *k).or(own_key);
        if options.key.is_none() {
            recorded_key = own_key.or(recorded_key);
        }
        let signed = key.is_some_and(|k| checkpoint.signed_by(&k));
        if !signed {
            findings.push(Finding {
                kind: FindingKind::BadSignature,
                seq: Some(seq as u64),
                message: format!(
                    "{what} has a signature that does not verify{}: it was forged or edited",
                    if options.key.is_some() {
                        " with the public key given"
                    } else {
                        ""
                    }
                ),
            });
            continue;
        }
        if checkpoint.size >= seq as u64 {
            findings.push(Finding {
                kind: FindingKind::CheckpointMismatch,
                seq: Some(seq as u64),
                message: format!(
                    "{what} claims to cover {} records, but sits at position {seq}",
                    checkpoint.size
                ),
            });
            continue;
        }
        match check_against_chain(&checkpoint, &what, stored_hash(checkpoint.size)) {
            Some(finding) => findings.push(Finding {
                seq: Some(seq as u64),
                ..finding
            }),
            None => {
                good_checkpoints += 1;
                signed_up_to = signed_up_to.max(checkpoint.size);
            }
        }
    }

    // Checkpoints kept off the host.
    for kept in &options.kept {
        let what = format!(
            "the checkpoint you kept (size {}, head {})",
            kept.size,
            BASE64.encode(kept.head)
        );
        let key = options.key.as_ref().map(|(k, _)| *k).or(recorded_key);
        if !key.is_some_and(|k| kept.signed_by(&k)) {
            findings.push(Finding {
                kind: FindingKind::BadSignature,
                seq: None,
                message: format!(
                    "{what} does not verify with {}: it is not guardian's, or it was edited",
                    if options.key.is_some() {
                        "the public key given"
                    } else {
                        "the key recorded in this database (pass --pubkey with the key you \
                         kept, to know which side is wrong)"
                    }
                ),
            });
            continue;
        }
        if kept.size > last_seq as u64 {
            findings.push(Finding {
                kind: FindingKind::Truncated,
                seq: Some(last_seq as u64 + 1),
                message: format!(
                    "{} cut off the end: {what} covers {} records, the log now ends at record \
                     {last_seq}",
                    records_were(last_seq + 1, kept.size as i64),
                    kept.size
                ),
            });
            continue;
        }
        match check_against_chain(kept, &what, stored_hash(kept.size)) {
            Some(finding) => findings.push(finding),
            None => signed_up_to = signed_up_to.max(kept.size),
        }
    }

    let findings = merge_shifted_runs(findings, &written_at);
    let key_source = match &options.key {
        Some((_, source)) => source.clone(),
        None => KeySource::Recorded,
    };
    Ok(Verification {
        records: links.len() as u64,
        head: links
            .last()
            .map(|l| (l.seq as u64, l.hash.clone().unwrap_or_default())),
        good_checkpoints,
        signed_up_to,
        key_source,
        findings,
    })
}

/// Folds a run of consecutive records all moved by the same offset (what inserting or removing
/// a record and renumbering the rest does) into one finding, instead of one per record.
fn merge_shifted_runs(
    findings: Vec<Finding>,
    written_at: &std::collections::HashMap<i64, i64>,
) -> Vec<Finding> {
    let offset = |f: &Finding| -> Option<(i64, i64)> {
        let seq = f.seq? as i64;
        (f.kind == FindingKind::Reordered).then(|| (seq, written_at[&seq] - seq))
    };
    let mut out: Vec<Finding> = Vec::with_capacity(findings.len());
    // The current run: index in `out` of its first finding, its last seq, its offset.
    let mut run: Option<(usize, i64, i64)> = None;
    for f in findings {
        match (offset(&f), run) {
            (Some((seq, off)), Some((first, last, run_off)))
                if seq == last + 1 && off == run_off =>
            {
                run = Some((first, seq, off));
                let start = out[first].seq.unwrap_or(0) as i64;
                let (n, direction, cause) = if off > 0 {
                    (off, "later", "removed")
                } else {
                    (-off, "earlier", "inserted")
                };
                out[first].message = format!(
                    "records {start} to {seq} were each written {n} position{} {direction} \
                     (as {} to {}): records before them were {cause} and the rest renumbered",
                    if n == 1 { "" } else { "s" },
                    start + off,
                    seq + off
                );
            }
            (Some((seq, off)), _) => {
                run = Some((out.len(), seq, off));
                out.push(f);
            }
            (None, _) => {
                run = None;
                out.push(f);
            }
        }
    }
    out
}

/// Whether a (correctly signed) checkpoint matches the stored hash of the record it ends at.
fn check_against_chain(
    checkpoint: &Checkpoint,
    what: &str,
    stored: Option<&[u8]>,
) -> Option<Finding> {
    let size = checkpoint.size;
    match stored {
        Some(hash) if hash == checkpoint.head => None,
        Some(_) => Some(Finding {
            kind: FindingKind::CheckpointMismatch,
            seq: None,
            message: format!(
                "{what} vouches for records 1 to {size}, but record {size}'s hash differs from \
                 the one it signed: a record at or before {size} was rewritten and the chain \
                 recomputed after it"
            ),
        }),
        None => Some(Finding {
            kind: FindingKind::CheckpointMismatch,
            seq: None,
            message: format!(
                "{what} vouches for records 1 to {size}, but record {size} is missing or has \
                 no hash"
            ),
        }),
    }
}

/// For a record whose hash does not match at its position: the position it was written at,
/// if its contents hash correctly there (the whole row moved), or if they match another row's
/// link (its contents were swapped with that row's).
fn written_position(
    links: &[Link],
    here: usize,
    fields: &RecordFields<'_>,
    prev: &[u8],
    hash: &[u8],
) -> Option<i64> {
    let seq = links[here].seq;
    let lo = (seq - MOVE_WINDOW).max(1);
    let hi = seq + MOVE_WINDOW;
    if let Some(original) =
        (lo..=hi).find(|&s| s != seq && record_hash(s, prev, fields)[..] == hash[..])
    {
        return Some(original);
    }
    let from = here.saturating_sub(MOVE_WINDOW as usize);
    let to = (here + MOVE_WINDOW as usize + 1).min(links.len());
    links[from..to].iter().find_map(|other| {
        let (Some(p), Some(h)) = (&other.prev, &other.hash) else {
            return None;
        };
        (other.seq != seq && record_hash(other.seq, p, fields)[..] == h[..]).then_some(other.seq)
    })
}

fn blob(v: ValueRef<'_>) -> Option<Vec<u8>> {
    match v {
        ValueRef::Blob(b) => Some(b.to_vec()),
        _ => None,
    }
}

/// Writes the records from time `since` (unix seconds) on as JSON lines: `seq`, `at`, `time`
/// (UTC, RFC 3339), `actor`, `kind`, `change_id`, `subject`, `detail` (the stored JSON, byte
/// for byte), `prev_hash` and `hash` (hex). Returns how many were written.
pub fn export(conn: &Connection, since: f64, out: &mut dyn Write) -> Result<u64, AuditError> {
    let reading = || "reading the audit log".to_string();
    let mut stmt = conn
        .prepare(
            "SELECT seq, at, kind, change_id, subject, actor, detail, prev_hash, hash \
             FROM events WHERE at >= ?1 ORDER BY seq",
        )
        .map_err(sqlite(reading))?;
    let mut rows = stmt.query([since]).map_err(sqlite(reading))?;
    let mut written = 0;
    while let Some(r) = rows.next().map_err(sqlite(reading))? {
        let text = |i: usize| -> Option<String> {
            match r.get_ref(i).ok()? {
                ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                _ => None,
            }
        };
        let seq: i64 = r.get(0).map_err(sqlite(reading))?;
        let at: Option<f64> = r.get(1).ok();
        let hash_hex = |i: usize| r.get_ref(i).ok().and_then(blob).map(|b| hex(&b));
        let detail = text(6).unwrap_or_default();
        let raw_ok = !detail.contains(['\n', '\r'])
            && serde_json::from_str::<serde::de::IgnoredAny>(&detail).is_ok();
        // The detail goes in as stored when it is one line of JSON, so the line carries the
        // exact bytes that were hashed; anything else (tampered) goes in as a string.
        let detail = if raw_ok {
            detail
        } else {
            serde_json::Value::String(detail).to_string()
        };
        // Keys in reading order rather than serde_json's alphabetical one.
        let fields: [(&str, serde_json::Value); 7] = [
            ("seq", seq.into()),
            ("time", at.and_then(rfc3339).into()),
            ("at", at.into()),
            ("actor", text(5).into()),
            ("kind", text(2).into()),
            ("change_id", text(3).into()),
            ("subject", text(4).into()),
        ];
        let mut line = String::from("{");
        for (name, value) in fields {
            let _ = write!(line, "\"{name}\":{value},");
        }
        let _ = write!(
            line,
            "\"detail\":{detail},\"prev_hash\":{},\"hash\":{}}}",
            serde_json::Value::from(hash_hex(7)),
            serde_json::Value::from(hash_hex(8))
        );
        line.push('\n');
        out.write_all(line.as_bytes())
            .map_err(|error| AuditError::Io {
                path: PathBuf::from("standard output"),
                error,
            })?;
        written += 1;
    }
    Ok(written)
}

fn rfc3339(at: f64) -> Option<String> {
    if !at.is_finite() {
        return None;
    }
    let secs = at.floor();
    let nanos = ((at - secs) * 1e9).round().min(999_999_999.0) as u32;
    chrono::DateTime::from_timestamp(secs as i64, nanos)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// Reads `--since`: unix seconds (`1764000000`, fractions allowed) or RFC 3339
/// (`2026-11-26T03:00:00Z`).
pub fn parse_since(text: &str) -> Result<f64, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(secs);
        }
        return Err(format!("expected unix seconds after 1970, got {text:?}"));
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9)
        .map_err(|_| {
            format!(
                "expected unix seconds (1764000000) or an RFC 3339 time \
                 (2026-11-26T03:00:00Z), got {text:?}"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_found_in_an_email_however_it_travelled() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let note = Checkpoint::sign(&key, "guardian/shop/audit", 7, [9; 32]).note_text();
        let body = format!("Rolled back.\r\n\r\nAudit checkpoint\r\n{note}\r\n-- \r\nguardian\r\n");
        let encoded = BASE64.encode(body.as_bytes());
        let lines: Vec<&str> = encoded
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let email = format!(
            "From: g@example.com\r\nTo: o@example.com\r\nSubject: rolled back\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n\
             --b\r\nContent-Type: text/html\r\n\r\n<p>the post-mortem</p>\r\n--b--\r\n",
            lines.join("\r\n")
        );
        assert!(
            Checkpoint::parse(&email).is_err(),
            "base64 hides it from a plain search"
        );
        let found = Checkpoint::find(email.as_bytes()).unwrap();
        assert!(found.signed_by(&key.verifying_key()));
        assert_eq!(found.size, 7);
        // Forwarded as an attachment, inside another email.
        let forwarded = format!(
            "From: a@example.com\r\nTo: b@example.com\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"o\"\r\n\r\n--o\r\n\
             Content-Type: text/plain\r\n\r\nsee the attached alert\r\n--o\r\n\
             Content-Type: message/rfc822\r\n\r\n{email}\r\n--o--\r\n"
        );
        assert_eq!(Checkpoint::find(forwarded.as_bytes()).unwrap().size, 7);
        // The bare note still works, and an email without one says what was looked for.
        assert_eq!(Checkpoint::find(note.as_bytes()).unwrap().size, 7);
        let none = "From: a@example.com\r\nSubject: x\r\n\r\nnothing here\r\n";
        let err = Checkpoint::find(none.as_bytes()).unwrap_err().to_string();
        assert!(err.starts_with("no checkpoint found"), "{err}");
    }

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_bytes(&[byte; 32])
    }

    #[test]
    fn a_note_round_trips_and_verifies_only_with_its_key() {
        let cp = Checkpoint::sign(&key(7), "guardian/shop/audit", 42, [9; 32]);
        let text = cp.note_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "guardian/shop/audit");
        assert_eq!(lines[1], "42");
        assert_eq!(lines[2], BASE64.encode([9u8; 32]));
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with("\u{2014} guardian "), "{text}");
        assert!(text.ends_with('\n'));
        // Found inside an email, quoted text around it.
        let email = format!("Hello,\n\nsomething happened.\n\n{text}\n-- \nguardian\n");
        let back = Checkpoint::parse(&email).unwrap();
        assert_eq!(back, cp);
        assert!(back.signed_by(&key(7).verifying_key()));
        assert!(!back.signed_by(&key(8).verifying_key()));
        // Any change to the body breaks the signature.
        let edited = Checkpoint::parse(&text.replace("\n42\n", "\n41\n")).unwrap();
        assert_eq!(edited.size, 41);
        assert!(!edited.signed_by(&key(7).verifying_key()));
    }

    #[test]
    fn text_that_is_not_a_note_is_refused_with_what_was_expected() {
        let err = Checkpoint::parse("hello\nworld\n").unwrap_err().to_string();
        assert!(err.contains("no checkpoint found"), "{err}");
        let bad_sig = "guardian/x/audit\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u{2014} guardian AAAA\n";
        let err = Checkpoint::parse(bad_sig).unwrap_err().to_string();
        assert!(err.contains("68"), "{err}");
    }

    #[test]
    fn the_key_id_follows_c2sp() {
        let vk = key(1).verifying_key();
        let mut h = Sha256::new();
        h.update(b"guardian\n\x01");
        h.update(vk.as_bytes());
        assert_eq!(key_id("guardian", &vk)[..], h.finalize()[..4]);
        let text = verifier_key_text(&vk);
        assert!(text.starts_with(&format!("guardian+{}+", hex(&key_id("guardian", &vk)))));
        assert_eq!(parse_verifier_key(&text).unwrap(), vk);
        // Whatever characters the base64 holds (`+` and `/` included).
        for byte in 0..=255u8 {
            let vk = key(byte).verifying_key();
            assert_eq!(parse_verifier_key(&verifier_key_text(&vk)).unwrap(), vk);
            assert_eq!(
                parse_verifier_key(&BASE64.encode(vk.as_bytes())).unwrap(),
                vk
            );
        }
        assert_eq!(
            parse_verifier_key(&BASE64.encode(vk.as_bytes())).unwrap(),
            vk
        );
        let other = verifier_key_text(&key(2).verifying_key());
        let (_, tail) = other.rsplit_once('+').unwrap();
        let (head, _) = text.rsplit_once('+').unwrap();
        let err = parse_verifier_key(&format!("{head}+{tail}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("key id does not match"), "{err}");
        assert!(parse_verifier_key("nonsense").is_err());
    }

    #[test]
    fn the_hash_covers_every_field_and_tells_null_from_empty() {
        let base = RecordFields {
            at: 1.5,
            kind: b"k",
            change_id: Some(b"c"),
            subject: None,
            actor: Some(b"guardian"),
            detail: b"{}",
        };
        let h = record_hash(1, &GENESIS, &base);
        let variants = [
            RecordFields { at: 1.25, ..base },
            RecordFields { kind: b"j", ..base },
            RecordFields {
                change_id: None,
                ..base
            },
            RecordFields {
                subject: Some(b""),
                ..base
            },
            RecordFields {
                actor: Some(b"agent"),
                ..base
            },
            RecordFields {
                detail: b"{ }",
                ..base
            },
            // Bytes moved from one field to the next.
            RecordFields {
                kind: b"kc",
                change_id: Some(b""),
                ..base
            },
        ];
        for v in variants {
            assert_ne!(record_hash(1, &GENESIS, &v), h, "{v:?}");
        }
        assert_ne!(record_hash(2, &GENESIS, &base), h);
        assert_ne!(record_hash(1, &[1; 32], &base), h);
        assert_eq!(record_hash(1, &GENESIS, &base), h);
    }

    #[test]
    fn origins_have_no_spaces() {
        assert_eq!(origin_for("demo shop"), "guardian/demo-shop/audit");
        assert_eq!(origin_for("a+b"), "guardian/a-b/audit");
    }

    #[test]
    fn since_is_unix_seconds_or_rfc3339() {
        assert_eq!(parse_since("1764000000"), Ok(1_764_000_000.0));
        assert_eq!(parse_since("2025-11-24T16:00:00Z"), Ok(1_764_000_000.0));
        assert_eq!(
            parse_since("2025-11-24T17:00:00.5+01:00"),
            Ok(1_764_000_000.5)
        );
        assert!(parse_since("-1").unwrap_err().contains("after 1970"));
        assert!(parse_since("yesterday").unwrap_err().contains("RFC 3339"));
        assert_eq!(format_time(1_764_000_000.9), "2025-11-24 16:00:00 UTC");
    }

    #[test]
    fn the_signing_key_is_created_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-signing.key");
        let made = load_or_create_signing_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_signing_key(&path).unwrap(), made);
        assert_eq!(load_signing_key(&path).unwrap(), made);
        // Readable by others: refused, with the fix.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_signing_key(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not a key\n").unwrap();
        let err = load_signing_key(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("base64"), "{err}");
        // A missing directory is named.
        let err = load_or_create_signing_key(&dir.path().join("no/such.key"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no/such.key"), "{err}");
    }
}
