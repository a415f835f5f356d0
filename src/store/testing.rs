//! What the store's tests share: a time, a change to record, and ways to look at the chain.

use super::{ChangeKind, NewChange, Store};

pub(super) const T0: f64 = 1_764_000_000.0;

pub(super) fn change(commit: &str, landed_at: f64) -> NewChange {
    NewChange {
        commit: commit.to_string(),
        kind: ChangeKind::Ai,
        pattern: Some("retry-wrapper".to_string()),
        summary: Some("wrap calls in retries".to_string()),
        landed_at,
        fixes_issue: None,
        flag: None,
    }
}

pub(super) fn event_count(store: &Store) -> i64 {
    store
        .conn
        .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
        .unwrap()
}

pub(super) fn to(addresses: &[&str]) -> Vec<String> {
    addresses.iter().map(|a| a.to_string()).collect()
}

pub(super) fn audit_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[3; 32])
}

pub(super) fn verify(store: &Store) -> crate::audit::Verification {
    crate::audit::verify_connection(&store.conn, &crate::audit::VerifyOptions::default()).unwrap()
}
