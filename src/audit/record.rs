//! The record hash that chains the log (its layout is in the module doc of `audit`): over the
//! bytes as stored, each field length-prefixed, NULL told apart from empty.

use sha2::{Digest, Sha256};

/// Domain separation for record hashes: a hash of anything else never collides with one.
const HASH_DOMAIN: &[u8] = b"guardian-audit-v1\0";

/// The `prev_hash` of the first record.
pub const GENESIS: [u8; 32] = [0; 32];

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
