//! `guardian audit verify`: the chain walked once, read-only, in one read transaction; each
//! record edited, removed, reordered or unlinked named, each checkpoint in the log or kept off
//! the host checked against its signature and the chain, and a cut-off tail found against the
//! database's own counter.

use std::fmt::Write as _;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{
    blob, format_time, parse_verifier_key, record_hash, sqlite, AuditError, Checkpoint, Finding,
    FindingKind, KeySource, RecordFields, Verification, VerifyOptions, CHECKPOINT_KIND, GENESIS,
};

/// How far from its position a record's original position is searched for, to tell a record
/// that was moved from one that was edited.
const MOVE_WINDOW: i64 = 256;

/// How many broken records get that search (each costs up to 4 × `MOVE_WINDOW` hashes).
const MOVE_SEARCHES: usize = 64;

/// `record 5 was` or `records 5 to 9 were`.
fn records_were(first: i64, last: i64) -> String {
    if first == last {
        format!("record {first} was")
    } else {
        format!("records {first} to {last} were")
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
