//! The audit trail under attack: a real log built through the store, then tampered with the
//! way someone with write access to the file would (triggers dropped, rows edited with plain
//! SQL, hashes recomputed), and `verify` must name what was done and where.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use guardian::audit::{
    self, Checkpoint, FindingKind, KeySource, RecordFields, Verification, VerifyOptions,
};
use guardian::store::{ChangeKind, ChangeState, EventKind, NewChange, Store};
use rusqlite::Connection;
use serde_json::json;

use crate::common::{code, guardian, stdout};

const T0: f64 = 1_764_000_000.0;

/// Where each record of the log `build` makes sits.
const CREATED: u64 = 1; // change_created, chg A
const REGRESSED: u64 = 2; // state_changed, chg A
const COMMAND: u64 = 3; // rollback, chg A
const PROPOSAL: u64 = 4; // proposal_submitted, by the agent
const APPROVAL: u64 = 5; // proposal_approved, by approver:alice
const CHECKPOINT: u64 = 6; // audit_checkpoint covering 1..=5 (the one "emailed")
const SECOND: u64 = 7; // change_created, chg B
const HEALTHY: u64 = 8; // state_changed, chg B
const EMAIL: u64 = 9; // email_queued, chg A
const LAST: u64 = EMAIL;

struct Log {
    _dir: tempfile::TempDir,
    db: PathBuf,
    key: SigningKey,
    /// The checkpoint that went out in an email: the copy kept off the host.
    kept: Checkpoint,
}

fn change(commit: &str) -> NewChange {
    NewChange {
        commit: commit.into(),
        kind: ChangeKind::Ai,
        pattern: Some("retry-wrapper".into()),
        summary: Some("wrap calls in retries".into()),
        landed_at: T0,
        fixes_issue: None,
        flag: None,
    }
}

/// A log of every kind of record, with a signed checkpoint in the middle.
fn build() -> Log {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("guardian.db");
    let key = SigningKey::from_bytes(&[42; 32]);
    let origin = audit::origin_for("shop");
    let mut store = Store::open(&db).unwrap();
    let a = store.insert_change(&change("aaa"), T0).unwrap().id;
    let report = json!({"verdict": "regressed", "e_value": 250.5}).to_string();
    store
        .set_state(
            &a,
            ChangeState::Regressed,
            Some(&report),
            Some(T0 + 60.0),
            None,
            T0 + 60.0,
        )
        .unwrap();
    store
        .record_event(
            &a,
            EventKind::Rollback,
            &json!({"revert_commit": "bbb", "escalation": null, "steps": [
                {"step": "git revert", "result": "reverted", "commit": "bbb", "commands": [
                    {"args": ["revert", "aaa"], "status": 0, "stdout": "1 file changed",
                     "stderr": ""}
                ]}
            ]}),
            T0 + 61.0,
        )
        .unwrap();
    store
        .audit(
            "agent",
            EventKind::ProposalSubmitted,
            Some("prop_1"),
            None,
            &json!({"summary": "retry twice", "diff_hash": "ab12"}),
            T0 + 120.0,
        )
        .unwrap();
    store
        .audit(
            "approver:alice",
            EventKind::ProposalApproved,
            Some("prop_1"),
            None,
            &json!({"diff_hash": "ab12"}),
            T0 + 130.0,
        )
        .unwrap();
    let kept = store.checkpoint(&key, &origin, T0 + 131.0).unwrap();
    assert_eq!(kept.recorded.map(|r| r.0), Some(CHECKPOINT));
    let b = store.insert_change(&change("bbb"), T0 + 200.0).unwrap().id;
    store
        .set_state(
            &b,
            ChangeState::Healthy,
            None,
            Some(T0 + 800.0),
            None,
            T0 + 800.0,
        )
        .unwrap();
    store
        .enqueue_email(
            Some(&a),
            "<a@guardian>",
            "rolled back",
            "body",
            &["oncall@example.com".to_string()],
            T0 + 900.0,
        )
        .unwrap();
    Log {
        _dir: dir,
        db,
        key,
        kept,
    }
}

impl Log {
    /// Verified with the public key kept off the host and, if `with_kept`, the emailed
    /// checkpoint.
    fn verify(&self, with_kept: bool) -> Verification {
        let options = VerifyOptions {
            key: Some((self.key.verifying_key(), KeySource::Given)),
            kept: if with_kept {
                vec![self.kept.clone()]
            } else {
                vec![]
            },
        };
        audit::verify(&self.db, &options).unwrap()
    }

    /// A raw connection with the append-only triggers dropped, as an attacker has it.
    fn attacker(&self) -> Connection {
        let conn = Connection::open(&self.db).unwrap();
        conn.execute_batch("DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;")
            .unwrap();
        conn
    }
}

/// The findings as (kind, seq), in the order reported.
fn found(v: &Verification) -> Vec<(FindingKind, Option<u64>)> {
    v.findings.iter().map(|f| (f.kind, f.seq)).collect()
}

/// A record's columns, as an attacker reads them.
struct Stored {
    seq: i64,
    at: f64,
    kind: String,
    change_id: Option<String>,
    subject: Option<String>,
    actor: Option<String>,
    detail: String,
}

/// Recomputes the hashes of records `from` to `to`, each linked to the stored hash of the one
/// before, as an attacker who knows the format would.
fn rehash(conn: &Connection, from: u64, to: u64) {
    let rows: Vec<Stored> = conn
        .prepare(
            "SELECT seq, at, kind, change_id, subject, actor, detail FROM events \
             WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
        )
        .unwrap()
        .query_map([from as i64, to as i64], |r| {
            Ok(Stored {
                seq: r.get(0)?,
                at: r.get(1)?,
                kind: r.get(2)?,
                change_id: r.get(3)?,
                subject: r.get(4)?,
                actor: r.get(5)?,
                detail: r.get(6)?,
            })
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let mut prev: Vec<u8> = conn
        .query_row(
            "SELECT hash FROM events WHERE seq < ?1 ORDER BY seq DESC LIMIT 1",
            [from as i64],
            |r| r.get(0),
        )
        .unwrap_or_else(|_| audit::GENESIS.to_vec());
    for row in rows {
        let hash = audit::record_hash(
            row.seq,
            &prev,
            &RecordFields {
                at: row.at,
                kind: row.kind.as_bytes(),
                change_id: row.change_id.as_deref().map(str::as_bytes),
                subject: row.subject.as_deref().map(str::as_bytes),
                actor: row.actor.as_deref().map(str::as_bytes),
                detail: row.detail.as_bytes(),
            },
        );
        conn.execute(
            "UPDATE events SET prev_hash = ?2, hash = ?3 WHERE seq = ?1",
            rusqlite::params![row.seq, prev, &hash[..]],
        )
        .unwrap();
        prev = hash.to_vec();
    }
}

/// Recomputes every hash from record `from` on.
fn rechain(conn: &Connection, from: u64) {
    rehash(conn, from, u64::from(u32::MAX));
}

#[test]
fn an_untouched_log_is_intact_against_the_kept_key_and_checkpoint() {
    let log = build();
    let v = log.verify(true);
    assert!(v.intact(), "{}", v.render());
    assert_eq!(v.exit_code(), 0);
    assert_eq!(v.records, LAST);
    assert_eq!(v.good_checkpoints, 1);
    assert_eq!(v.signed_up_to, CHECKPOINT - 1);
    assert!(
        v.render().contains("audit trail intact: 9 records"),
        "{}",
        v.render()
    );
}

#[test]
fn an_edited_detail_is_named_by_its_record() {
    let log = build();
    log.attacker()
        .execute(
            "UPDATE events SET detail = replace(detail, 'git', 'gut') WHERE seq = ?1",
            [COMMAND],
        )
        .unwrap();
    let v = log.verify(true);
    assert_eq!(found(&v), [(FindingKind::Edited, Some(COMMAND))]);
    assert_eq!(v.exit_code(), 2);
    let message = &v.findings[0].message;
    assert!(
        message.starts_with("record 3 (rollback for chg_"),
        "{message}"
    );
    assert!(message.contains("2025-11-24 16:01:01 UTC"), "{message}");
    assert!(
        message.contains("was edited after it was written: its hash no longer matches"),
        "{message}"
    );
}

#[test]
fn an_edited_kind_or_actor_is_named_by_its_record() {
    let log = build();
    log.attacker()
        .execute(
            "UPDATE events SET kind = 'proposal_rejected' WHERE seq = ?1",
            [APPROVAL],
        )
        .unwrap();
    assert_eq!(
        found(&log.verify(true)),
        [(FindingKind::Edited, Some(APPROVAL))]
    );

    let log = build();
    // The agent's proposal passed off as guardian's own.
    log.attacker()
        .execute(
            "UPDATE events SET actor = 'guardian' WHERE seq = ?1",
            [PROPOSAL],
        )
        .unwrap();
    assert_eq!(
        found(&log.verify(true)),
        [(FindingKind::Edited, Some(PROPOSAL))]
    );

    let log = build();
    // The verdict backdated by an hour.
    log.attacker()
        .execute(
            "UPDATE events SET at = at - 3600 WHERE seq = ?1",
            [REGRESSED],
        )
        .unwrap();
    assert_eq!(
        found(&log.verify(true)),
        [(FindingKind::Edited, Some(REGRESSED))]
    );
}

#[test]
fn a_removed_record_is_a_gap_named_by_its_seq() {
    let log = build();
    log.attacker()
        .execute("DELETE FROM events WHERE seq = ?1", [REGRESSED])
        .unwrap();
    let v = log.verify(true);
    assert_eq!(found(&v), [(FindingKind::Removed, Some(REGRESSED))]);
    assert_eq!(v.exit_code(), 2);
    assert!(
        v.findings[0].message.starts_with("record 2 was removed"),
        "{}",
        v.findings[0].message
    );
}

#[test]
fn a_removed_record_with_the_rest_renumbered_is_still_caught() {
    let log = build();
    let conn = log.attacker();
    conn.execute("DELETE FROM events WHERE seq = ?1", [HEALTHY])
        .unwrap();
    conn.execute("UPDATE events SET seq = seq - 1 WHERE seq > ?1", [HEALTHY])
        .unwrap();
    let v = log.verify(true);
    assert_eq!(
        found(&v),
        // The record now at 8 was written as 9; the counter still says 9 were written.
        [
            (FindingKind::Reordered, Some(HEALTHY)),
            (FindingKind::Truncated, Some(LAST)),
        ]
    );
    assert!(
        v.findings[0].message.contains("was written as record 9"),
        "{}",
        v.findings[0].message
    );
}

#[test]
fn a_record_slipped_into_the_middle_is_caught() {
    let log = build();
    let conn = log.attacker();
    // Make room after the rollback command and forge a record there, correctly chained to
    // the one before it: everything after has moved one position on.
    conn.execute_batch(&format!(
        "UPDATE events SET seq = -seq WHERE seq > {COMMAND};
         UPDATE events SET seq = 1 - seq WHERE seq < 0;
         INSERT INTO events (seq, at, kind, change_id, detail, actor, prev_hash, hash)
             SELECT {PROPOSAL}, at, 'rollback', change_id, '{{\"command\":\"ls\"}}',
                    'guardian', hash, x'00' FROM events WHERE seq = {COMMAND};"
    ))
    .unwrap();
    rehash(&conn, PROPOSAL, PROPOSAL);
    let v = log.verify(false);
    assert_eq!(
        found(&v),
        [
            (FindingKind::Reordered, Some(PROPOSAL + 1)),
            (FindingKind::CheckpointMismatch, Some(CHECKPOINT + 1)),
        ]
    );
    assert!(
        v.findings[0].message.starts_with(
            "records 5 to 10 were each written 1 position earlier (as 4 to 9): records before \
             them were inserted"
        ),
        "{}",
        v.findings[0].message
    );
}

#[test]
fn a_truncated_tail_is_caught_by_the_kept_checkpoint() {
    let log = build();
    let conn = log.attacker();
    // Everything from the emailed checkpoint's last record on, and the counter reset too, so
    // that nothing in the file itself gives it away.
    conn.execute("DELETE FROM events WHERE seq >= ?1", [APPROVAL])
        .unwrap();
    conn.execute(
        "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'events'",
        [APPROVAL - 1],
    )
    .unwrap();
    // Without the kept checkpoint the shorter log is consistent: truncation is invisible
    // from inside, which is why checkpoints leave the host.
    assert!(log.verify(false).intact());
    let v = log.verify(true);
    assert_eq!(found(&v), [(FindingKind::Truncated, Some(APPROVAL))]);
    assert_eq!(v.exit_code(), 3);
    assert!(
        v.findings[0]
            .message
            .starts_with("record 5 was cut off the end: the checkpoint you kept (size 5"),
        "{}",
        v.findings[0].message
    );
}

#[test]
fn a_truncated_tail_is_caught_by_the_record_counter_when_it_was_left_alone() {
    let log = build();
    log.attacker()
        .execute("DELETE FROM events WHERE seq >= ?1", [HEALTHY])
        .unwrap();
    let v = log.verify(false);
    assert_eq!(found(&v), [(FindingKind::Truncated, Some(HEALTHY))]);
    assert!(
        v.findings[0]
            .message
            .starts_with("records 8 to 9 were cut off the end: the database's own counter"),
        "{}",
        v.findings[0].message
    );
}

#[test]
fn two_swapped_records_are_reported_as_reordered() {
    let log = build();
    let conn = log.attacker();
    // The verdict moved before the rollback command's position and back: whole rows swap.
    conn.execute_batch(&format!(
        "UPDATE events SET seq = -1 WHERE seq = {REGRESSED};
         UPDATE events SET seq = {REGRESSED} WHERE seq = {COMMAND};
         UPDATE events SET seq = {COMMAND} WHERE seq = -1;"
    ))
    .unwrap();
    let v = log.verify(true);
    assert_eq!(
        found(&v),
        [
            (FindingKind::Reordered, Some(REGRESSED)),
            (FindingKind::Reordered, Some(COMMAND)),
        ]
    );
    assert!(
        v.findings[0].message.contains("was written as record 3"),
        "{}",
        v.findings[0].message
    );

    // Swapping only the contents, hashes left in place, is the same finding.
    let log = build();
    let conn = log.attacker();
    let columns = "at, kind, change_id, subject, actor, detail";
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE keep AS SELECT seq, {columns} FROM events WHERE seq IN (7, 8);
         UPDATE events SET (at, kind, change_id, subject, actor, detail) =
             (SELECT {columns} FROM keep WHERE keep.seq = 15 - events.seq)
             WHERE seq IN (7, 8);"
    ))
    .unwrap();
    assert_eq!(
        found(&log.verify(true)),
        [
            (FindingKind::Reordered, Some(SECOND)),
            (FindingKind::Reordered, Some(HEALTHY)),
        ]
    );
}

#[test]
fn a_record_rewritten_with_its_own_hash_recomputed_breaks_the_next_link() {
    let log = build();
    let conn = log.attacker();
    conn.execute(
        "UPDATE events SET detail = '{\"diff_hash\":\"ffff\"}' WHERE seq = ?1",
        [SECOND],
    )
    .unwrap();
    // That record's hash recomputed, and nothing after it.
    rehash(&conn, SECOND, SECOND);
    let v = log.verify(true);
    assert_eq!(found(&v), [(FindingKind::Unlinked, Some(HEALTHY))]);
    assert_eq!(v.exit_code(), 2);
    assert!(
        v.findings[0]
            .message
            .contains("does not link to record 7: that record was rewritten"),
        "{}",
        v.findings[0].message
    );
}

#[test]
fn a_whole_chain_recomputed_after_an_edit_is_caught_by_checkpoints_signed_before() {
    let log = build();
    let conn = log.attacker();
    conn.execute(
        "UPDATE events SET actor = 'guardian', detail = '{\"summary\":\"nothing to see\"}' \
         WHERE seq = ?1",
        [PROPOSAL],
    )
    .unwrap();
    rechain(&conn, PROPOSAL);
    // The checkpoint record in the log no longer matches what it signed.
    let v = log.verify(false);
    assert_eq!(
        found(&v),
        [(FindingKind::CheckpointMismatch, Some(CHECKPOINT))]
    );
    assert_eq!(v.exit_code(), 3);
    assert!(
        v.findings[0]
            .message
            .contains("vouches for records 1 to 5, but record 5's hash differs"),
        "{}",
        v.findings[0].message
    );

    // The attacker deletes that checkpoint record too and recomputes again: the copy kept
    // off the host still catches it.
    conn.execute("DELETE FROM events WHERE seq >= ?1", [CHECKPOINT])
        .unwrap();
    conn.execute(
        "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'events'",
        [CHECKPOINT - 1],
    )
    .unwrap();
    assert!(log.verify(false).intact(), "undetectable from inside");
    let v = log.verify(true);
    assert_eq!(found(&v), [(FindingKind::CheckpointMismatch, None)]);
    assert!(
        v.findings[0]
            .message
            .starts_with("the checkpoint you kept (size 5"),
        "{}",
        v.findings[0].message
    );
}

#[test]
fn a_forged_checkpoint_signature_is_a_bad_signature() {
    let log = build();
    let conn = log.attacker();
    // Re-sign the checkpoint with the attacker's own key, then recompute the chain so that
    // only the signature can give it away.
    let forger = SigningKey::from_bytes(&[7; 32]);
    let forged = Checkpoint::sign(&forger, &log.kept.origin, log.kept.size, log.kept.head);
    let detail: String = conn
        .query_row(
            "SELECT detail FROM events WHERE seq = ?1",
            [CHECKPOINT],
            |r| r.get(0),
        )
        .unwrap();
    let mut detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    detail["note"] = forged.note_text().into();
    conn.execute(
        "UPDATE events SET detail = ?2 WHERE seq = ?1",
        rusqlite::params![CHECKPOINT, detail.to_string()],
    )
    .unwrap();
    rechain(&conn, CHECKPOINT);
    let v = log.verify(true);
    assert_eq!(found(&v), [(FindingKind::BadSignature, Some(CHECKPOINT))]);
    assert_eq!(v.exit_code(), 4);
    assert!(
        v.findings[0]
            .message
            .contains("signature that does not verify with the public key given"),
        "{}",
        v.findings[0].message
    );

    // A kept note whose numbers were edited no longer verifies either.
    let log = build();
    let edited = Checkpoint::parse(&log.kept.note_text().replace("\n5\n", "\n9\n")).unwrap();
    let options = VerifyOptions {
        key: Some((log.key.verifying_key(), KeySource::Given)),
        kept: vec![edited],
    };
    let v = audit::verify(&log.db, &options).unwrap();
    assert_eq!(found(&v), [(FindingKind::BadSignature, None)]);
}

#[test]
fn a_database_from_before_the_chain_or_none_at_all_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let err = audit::verify(&dir.path().join("guardian.db"), &VerifyOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no state database at"), "{err}");

    let old = dir.path().join("old.db");
    let conn = Connection::open(&old).unwrap();
    conn.execute_batch("CREATE TABLE events (seq INTEGER PRIMARY KEY); PRAGMA user_version = 3;")
        .unwrap();
    drop(conn);
    let err = audit::verify(&old, &VerifyOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("schema version 3, before the audit chain"),
        "{err}"
    );
    assert!(err.contains("start this guardian once on it"), "{err}");
}

/// Runs `guardian audit ...` against `db`.
fn cli(args: &[&str]) -> std::process::Output {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    guardian(&all)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_cli_verifies_exports_and_prints_the_key() {
    let log = build();
    let dir = log.db.parent().unwrap();
    let key_file = dir.join("audit-signing.key");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file)
            .unwrap();
        use base64::Engine;
        let seed = base64::engine::general_purpose::STANDARD.encode(log.key.to_bytes());
        writeln!(f, "{seed}").unwrap();
    }
    let pubkey = cli(&["pubkey", "--key", path(&key_file)]);
    assert_eq!(code(&pubkey), 0);
    let pubkey = stdout(&pubkey).trim().to_string();
    assert_eq!(pubkey, audit::verifier_key_text(&log.key.verifying_key()));

    let kept = dir.join("kept-checkpoint.txt");
    std::fs::write(
        &kept,
        format!("From the alert email:\n\n{}\n", log.kept.note_text()),
    )
    .unwrap();
    let db = path(&log.db);
    let ok = cli(&[
        "verify",
        "--db",
        db,
        "--pubkey",
        &pubkey,
        "--checkpoint",
        path(&kept),
    ]);
    assert_eq!(
        code(&ok),
        0,
        "{}{}",
        stdout(&ok),
        crate::common::stderr(&ok)
    );
    assert!(
        stdout(&ok).contains("audit trail intact"),
        "{}",
        stdout(&ok)
    );

    // Export everything, then from the second change on (RFC 3339 and unix seconds alike).
    let all = cli(&["export", "--db", db]);
    assert_eq!(code(&all), 0);
    let lines: Vec<serde_json::Value> = stdout(&all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, LAST);
    assert!(
        stdout(&all).lines().all(|l| l.starts_with("{\"seq\":")),
        "one object per line, seq first:\n{}",
        stdout(&all)
    );
    assert_eq!(lines[0]["seq"], CREATED);
    assert_eq!(lines[0]["actor"], "guardian");
    assert_eq!(lines[0]["detail"]["commit"], "aaa");
    assert_eq!(lines[3]["actor"], "agent");
    assert_eq!(lines[3]["subject"], "prop_1");
    assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);
    assert_eq!(lines[0]["time"], "2025-11-24T16:00:00Z");
    for since in ["2025-11-24T16:03:20Z", "1764000200"] {
        let recent = cli(&["export", "--db", db, "--since", since]);
        assert_eq!(code(&recent), 0);
        let seqs: Vec<u64> = stdout(&recent)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, [SECOND, HEALTHY, EMAIL], "--since {since}");
    }
    let bad = cli(&["export", "--db", db, "--since", "last tuesday"]);
    assert_eq!(code(&bad), 2);

    // Tampered: exit 2 and the record named, on standard output.
    log.attacker()
        .execute("DELETE FROM events WHERE seq = ?1", [PROPOSAL])
        .unwrap();
    let broken = cli(&["verify", "--db", db, "--pubkey", &pubkey]);
    assert_eq!(code(&broken), 2, "{}", stdout(&broken));
    assert!(
        stdout(&broken).contains("TAMPERED: record 4 was removed"),
        "{}",
        stdout(&broken)
    );
    // No database: 1, could not check.
    let missing = cli(&["verify", "--db", path(&dir.join("nope.db"))]);
    assert_eq!(code(&missing), 1);
}
