//! One-time approval links for the approval email. A link carries a random 256-bit secret;
//! the store keeps only its SHA-256, with the proposal, the action (approve or reject), the
//! diff it was made for and when it expires. A link works once, before it expires, and only
//! for that diff: it is the approver's credential for exactly one decision, and the agent,
//! which never sees the email, cannot mint one.

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};

use super::proposals::{sql, ProposalError};
use crate::store::Store;

/// What a valid link lets its holder do.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkGrant {
    pub proposal_id: String,
    /// `approve` or `reject`.
    pub action: String,
    pub diff_hash: String,
    pub expires_at: f64,
}

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A secret no one can guess: 32 bytes from the OS's generator, as hex.
fn secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Makes an approve and a reject link for a proposal's diff; returns their secrets (which
    /// are not stored anywhere: they go into the email and nowhere else).
    pub fn create_approval_links(
        &mut self,
        proposal_id: &str,
        diff_hash: &str,
        expires_at: f64,
    ) -> Result<(String, String), ProposalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("making approval links"))?;
        let mut secrets = Vec::new();
        for action in ["approve", "reject"] {
            let s = secret();
            tx.execute(
                "INSERT INTO approval_links (token_hash, proposal_id, action, diff_hash, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash(&s), proposal_id, action, diff_hash, expires_at],
            )
            .map_err(sql("making approval links"))?;
            secrets.push(s);
        }
        tx.commit().map_err(sql("making approval links"))?;
        let reject = secrets.pop().unwrap_or_default();
        let approve = secrets.pop().unwrap_or_default();
        Ok((approve, reject))
    }

    /// What the link with this secret grants, if it is valid now; it stays unused.
    pub fn peek_approval_link(&self, secret: &str, now: f64) -> Result<LinkGrant, ProposalError> {
        lookup(&self.conn, secret, now)
    }

    /// Uses the link: valid now, then never again.
    pub fn use_approval_link(
        &mut self,
        secret: &str,
        now: f64,
    ) -> Result<LinkGrant, ProposalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("using an approval link"))?;
        let grant = lookup(&tx, secret, now)?;
        tx.execute(
            "UPDATE approval_links SET used_at = ?2 WHERE token_hash = ?1 AND used_at IS NULL",
            params![hash(secret), now],
        )
        .map_err(sql("using an approval link"))?;
        tx.commit().map_err(sql("using an approval link"))?;
        Ok(grant)
    }
}

fn lookup(conn: &rusqlite::Connection, secret: &str, now: f64) -> Result<LinkGrant, ProposalError> {
    let row: Option<(String, String, String, f64, Option<f64>)> = conn
        .query_row(
            "SELECT proposal_id, action, diff_hash, expires_at, used_at FROM approval_links \
             WHERE token_hash = ?1",
            [hash(secret)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()
        .map_err(sql("reading an approval link"))?;
    let Some((proposal_id, action, diff_hash, expires_at, used_at)) = row else {
        return Err(ProposalError::Forbidden(
            "this link is not valid (it may have been mistyped)".to_owned(),
        ));
    };
    if used_at.is_some() {
        return Err(ProposalError::Conflict(format!(
            "this link was already used; see guardian proposals {proposal_id}"
        )));
    }
    if now >= expires_at {
        return Err(ProposalError::Forbidden(format!(
            "this link expired; decide with guardian approve {proposal_id} or reject {proposal_id}"
        )));
    }
    Ok(LinkGrant {
        proposal_id,
        action,
        diff_hash,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_764_000_000.0;

    fn store_with_proposal() -> (Store, String) {
        let mut store = Store::open_in_memory().unwrap();
        let p = store
            .insert_proposal(
                &super::super::proposals::NewProposal {
                    proposer: "agent".into(),
                    kind: crate::store::ChangeKind::Ai,
                    pattern: "nil-check".into(),
                    summary: "guard against a missing cart".into(),
                    issue_url: None,
                    tests_run: true,
                    base_sha: "a".repeat(40),
                    claimed_sha: None,
                    patch: "diff".into(),
                    diff_hash: "d".repeat(64),
                    tree_sha: None,
                    decision: "needs_approval".into(),
                    assessment: serde_json::json!({}),
                    shadow: false,
                    state: super::super::proposals::ProposalState::Pending,
                },
                T0,
            )
            .unwrap();
        (store, p.id)
    }

    #[test]
    fn a_link_works_once_and_only_before_it_expires() {
        let (mut store, id) = store_with_proposal();
        let (approve, reject) = store
            .create_approval_links(&id, &"d".repeat(64), T0 + 3600.0)
            .unwrap();
        assert_ne!(approve, reject);
        let grant = store.peek_approval_link(&approve, T0 + 10.0).unwrap();
        assert_eq!(
            (grant.action.as_str(), grant.proposal_id.as_str()),
            ("approve", id.as_str())
        );
        // Looking does not use it; using it does, once.
        store.use_approval_link(&approve, T0 + 20.0).unwrap();
        let again = store.use_approval_link(&approve, T0 + 30.0).unwrap_err();
        assert!(again.to_string().contains("already used"), "{again}");
        let late = store.use_approval_link(&reject, T0 + 3600.0).unwrap_err();
        assert!(late.to_string().contains("expired"), "{late}");
        let guessed = store.peek_approval_link(&"0".repeat(64), T0).unwrap_err();
        assert!(guessed.to_string().contains("not valid"), "{guessed}");
    }

    #[test]
    fn only_the_hash_of_a_link_is_stored() {
        let (mut store, id) = store_with_proposal();
        let (approve, _) = store
            .create_approval_links(&id, &"d".repeat(64), T0 + 60.0)
            .unwrap();
        let stored: Vec<String> = store
            .conn
            .prepare("SELECT token_hash FROM approval_links")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(stored.iter().all(|h| h != &approve));
        assert!(stored.contains(&hash(&approve)));
    }
}
