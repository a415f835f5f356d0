//! One-time approval links for the approval email. A link has a random id; its secret, the
//! part of the URL that grants the decision, is HMAC-SHA256(link key, id), the link key being a
//! file in the state directory readable by guardian alone. The store keeps the id and the
//! SHA-256 of the secret, with the proposal, the action (approve or reject), the diff it was
//! made for and when it expires; the outbox keeps the email with a placeholder naming the id,
//! and the secret is computed into it only as it is sent. So no secret is stored in clear
//! anywhere: a copy of the database (or of the outbox) opens nothing without the key.
//!
//! A link works once, before it expires, and only for that diff: it is the approver's
//! credential for exactly one decision, and the agent, which never sees the email, cannot mint
//! one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};

use super::proposals::{sql, ProposalError};
use crate::store::Store;

/// The link key's file name in the state directory.
pub const KEY_FILE_NAME: &str = "approval-links.key";

/// Domain separation for link secrets.
const SECRET_DOMAIN: &[u8] = b"guardian approval link v1\0";

/// What a valid link lets its holder do.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkGrant {
    pub proposal_id: String,
    /// `approve` or `reject`.
    pub action: String,
    pub diff_hash: String,
    pub expires_at: f64,
}

/// The key link secrets are derived from (32 random bytes, in a 0600 file).
#[derive(Clone)]
pub struct LinkKey([u8; 32]);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(..)")
    }
}

/// Why the link key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("approval link key {}: {reason}", path.display())]
pub struct LinkKeyError {
    pub path: PathBuf,
    pub reason: String,
}

impl LinkKey {
    /// Where the key lives for a state directory.
    pub fn file(state_dir: &Path) -> PathBuf {
        state_dir.join(KEY_FILE_NAME)
    }

    /// Reads the key, creating it (mode 0600, from the OS's randomness) the first time. A key
    /// others may read is refused, as ssh refuses such a private key.
    pub fn load_or_create(path: &Path) -> Result<LinkKey, LinkKeyError> {
        use base64::Engine as _;
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let fail = |reason: String| LinkKeyError {
            path: path.to_path_buf(),
            reason,
        };
        let fresh: [u8; 32] = rand::random();
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                let text = base64::engine::general_purpose::STANDARD.encode(fresh);
                file.write_all(format!("{text}\n").as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| fail(format!("cannot write it: {e}")))?;
                return Ok(LinkKey(fresh));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(format!("cannot create it: {e}"))),
        }
        let mode = std::fs::metadata(path)
            .map_err(|e| fail(e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "mode {:o} lets others read it, and with it mint approval links: run chmod 600 \
                 {}",
                mode & 0o777,
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| fail("is not one line of base64".into()))?;
        let key: [u8; 32] = raw[..]
            .try_into()
            .map_err(|_| fail(format!("holds {} bytes, expected 32", raw.len())))?;
        Ok(LinkKey(key))
    }

    /// A key from given bytes (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> LinkKey {
        LinkKey(bytes)
    }

    /// The secret of the link with this id: what its URL carries.
    pub fn secret(&self, link_id: &str) -> String {
        // `new_from_slice` takes a key of any length: 32 bytes cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(SECRET_DOMAIN);
        mac.update(link_id.as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

/// The text an email holds where the link with this id goes, until it is sent.
pub fn placeholder(link_id: &str) -> String {
    format!("{{guardian-link:{link_id}}}")
}

/// The email body as sent: the placeholder of each of its links (`links`, as stored with the
/// email, never taken from the body) replaced by the link's secret.
pub fn fill(body: &str, links: &[String], key: &LinkKey) -> String {
    links.iter().fold(body.to_owned(), |text, id| {
        text.replace(&placeholder(id), &key.secret(id))
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

impl Store {
    /// Makes an approve and a reject link for a proposal's diff; returns their ids, for the
    /// email's placeholders ([`placeholder`]). Only the hash of each secret is stored.
    pub fn create_approval_links(
        &mut self,
        key: &LinkKey,
        proposal_id: &str,
        diff_hash: &str,
        expires_at: f64,
    ) -> Result<(String, String), ProposalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("making approval links"))?;
        let mut ids = Vec::new();
        for action in ["approve", "reject"] {
            let id = format!("lnk_{}", hex(&rand::random::<[u8; 16]>()));
            tx.execute(
                "INSERT INTO approval_links (token_hash, link_id, proposal_id, action, diff_hash, \
                 expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    hash(&key.secret(&id)),
                    id,
                    proposal_id,
                    action,
                    diff_hash,
                    expires_at
                ],
            )
            .map_err(sql("making approval links"))?;
            ids.push(id);
        }
        tx.commit().map_err(sql("making approval links"))?;
        let reject = ids.pop().unwrap_or_default();
        let approve = ids.pop().unwrap_or_default();
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
                    sentry_issue: None,
                    flag: None,
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
        let key = LinkKey::from_bytes([7; 32]);
        let (approve, reject) = store
            .create_approval_links(&key, &id, &"d".repeat(64), T0 + 3600.0)
            .unwrap();
        assert_ne!(approve, reject);
        let (approve, reject) = (key.secret(&approve), key.secret(&reject));
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
    fn no_secret_is_stored_only_its_hash_and_the_id_it_is_derived_from() {
        let (mut store, id) = store_with_proposal();
        let key = LinkKey::from_bytes([9; 32]);
        let (approve, _) = store
            .create_approval_links(&key, &id, &"d".repeat(64), T0 + 60.0)
            .unwrap();
        let secret = key.secret(&approve);
        let stored: Vec<(String, String)> = store
            .conn
            .prepare("SELECT token_hash, link_id FROM approval_links")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(stored.iter().all(|(h, i)| h != &secret && i != &secret));
        assert!(stored.contains(&(hash(&secret), approve.clone())));
        // Another key derives other secrets: the database alone opens nothing.
        let other = LinkKey::from_bytes([8; 32]);
        assert!(store
            .peek_approval_link(&other.secret(&approve), T0)
            .is_err());
        assert!(store.peek_approval_link(&secret, T0).is_ok());
    }

    #[test]
    fn only_the_links_stored_with_an_email_are_filled_in() {
        let key = LinkKey::from_bytes([1; 32]);
        let body = format!(
            "approve: https://g/v1/links/{}\nfrom the summary: {}\n",
            placeholder("lnk_a"),
            placeholder("lnk_b")
        );
        let sent = fill(&body, &["lnk_a".to_owned()], &key);
        assert!(sent.contains(&format!("/v1/links/{}\n", key.secret("lnk_a"))));
        assert!(sent.contains(&placeholder("lnk_b")), "{sent}");
    }

    #[test]
    fn the_key_file_is_private_and_refused_when_it_is_not() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = LinkKey::file(dir.path());
        let made = LinkKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            LinkKey::load_or_create(&path).unwrap().secret("x"),
            made.secret("x")
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = LinkKey::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
