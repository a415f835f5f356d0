//! Checkpoints: C2SP signed notes that the log's first `size` records end in `head`, signed
//! with the key in `keys`, and found again in whatever a person kept them in (the bare note,
//! text around it, a whole email as delivered).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::{key_id, AuditError, KEY_NAME};

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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_bytes(&[byte; 32])
    }

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
    fn origins_have_no_spaces() {
        assert_eq!(origin_for("demo shop"), "guardian/demo-shop/audit");
        assert_eq!(origin_for("a+b"), "guardian/a-b/audit");
    }
}
