//! `guardian audit export`: the records from a time on as JSON lines, each carrying the detail
//! exactly as stored and hashed, and `--since` read as unix seconds or RFC 3339.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::{blob, hex, sqlite, AuditError};

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
    use crate::audit::format_time;

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
}
