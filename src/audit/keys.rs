//! The checkpoint signing key (Ed25519, one line of base64 in a private file in the state
//! directory, created on first use) and the public key as a signed-note verifier key, the one
//! line to keep off the host.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::{hex, AuditError};

/// The name that signs checkpoints (the `— guardian …` line).
pub const KEY_NAME: &str = "guardian";

/// The signing key's file name in the state directory.
pub const KEY_FILE_NAME: &str = "audit-signing.key";

/// Where the signing key lives for a state directory.
pub fn default_key_file(state_dir: &Path) -> PathBuf {
    state_dir.join(KEY_FILE_NAME)
}

/// C2SP's signature type byte for Ed25519.
const ED25519_TYPE: u8 = 0x01;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_bytes(&[byte; 32])
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
