//! Signed checkpoints of the audit chain (`crate::audit::Checkpoint`): made and recorded as the
//! chain's next record in one transaction, when due, and the latest read back for an email.

use rusqlite::{OptionalExtension, TransactionBehavior};
use serde_json::Value;

use super::events::append_record;
use super::{finite, Doing, Result, Store, StoreError};

impl Store {
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
        let (size, head) = head(&tx)?.unwrap_or((0, crate::audit::GENESIS));
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
            super::EventKind::AuditCheckpoint,
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

    /// The audit trail's head: how many records it has and the hash of the last (`None`
    /// while it is empty), for the status page beside the last checkpoint.
    pub fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>> {
        head(&self.conn)
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
}

/// How many records the trail has and the hash of the last, `None` while it is empty.
fn head(conn: &rusqlite::Connection) -> Result<Option<(u64, [u8; 32])>> {
    let last: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .doing(|| "reading the audit trail's head".to_string())?;
    last.map(|(seq, hash)| {
        let hash: [u8; 32] = hash.try_into().map_err(|_| {
            StoreError::Corrupt(format!(
                "record {seq} has no 32-byte hash: run guardian audit verify"
            ))
        })?;
        Ok((seq as u64, hash))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::*;

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
}
