//! What the repository is, read under the same hardening as everything else: HEAD, a
//! revision as a full commit id, the commit that carries an intent, the tracked files that
//! differ from HEAD.

use super::command::{clip, Session};
use super::{GitError, Repo, TRAILER_INTENT};

impl Repo {
    pub(super) fn tracked_changes(&self, s: &mut Session) -> Result<Vec<String>, GitError> {
        let out = s.ok(
            [
                "status",
                "--porcelain=v1",
                "-z",
                "--untracked-files=no",
                "--ignore-submodules=none",
            ],
            None,
        )?;
        Ok(parse_porcelain_z(&out)
            .into_iter()
            .map(|(_, path)| path)
            .collect())
    }
}

impl Session<'_> {
    pub(super) fn head(&mut self) -> Result<String, GitError> {
        let args = ["rev-parse", "--verify", "HEAD^{commit}"];
        let out = self.ok(args, None)?;
        let sha = out.trim();
        if is_full_sha(sha) {
            Ok(sha.to_string())
        } else {
            Err(self.unexpected(args, format!("not a commit id: {:?}", clip(sha, 100))))
        }
    }

    /// Resolves one revision to a full commit SHA.
    pub(super) fn resolve(&mut self, rev: &str) -> Result<String, GitError> {
        let spec = format!("{rev}^{{commit}}");
        let args = ["rev-parse", "--verify", "--end-of-options", spec.as_str()];
        let out = self.ok(args, None)?;
        let sha = out.trim();
        if is_full_sha(sha) {
            Ok(sha.to_string())
        } else {
            Err(self.unexpected(args, format!("not a commit id: {:?}", clip(sha, 100))))
        }
    }

    pub(super) fn find_revert(&mut self, intent: &str) -> Result<Option<String>, GitError> {
        let grep = format!("--grep={TRAILER_INTENT}: {intent}");
        let format =
            format!("--format=%H%x1f%(trailers:key={TRAILER_INTENT},valueonly,separator=%x1f)");
        let args = [
            "log",
            "-z",
            "--fixed-strings",
            grep.as_str(),
            format.as_str(),
            "HEAD",
            "--",
        ];
        let out = self.ok(args, None)?;
        for record in out.split('\0') {
            let mut fields = record.split('\u{1f}');
            let sha = fields.next().unwrap_or_default().trim();
            // --grep matches substrings anywhere in the message; only an
            // exact value in the trailer block counts.
            if is_full_sha(sha) && fields.any(|value| value.trim() == intent) {
                return Ok(Some(sha.to_string()));
            }
        }
        Ok(None)
    }
}

/// `porcelain=v1 -z` entries as (XY, path); a rename's source is skipped.
pub(super) fn parse_porcelain_z(out: &str) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    let mut fields = out.split('\0');
    while let Some(field) = fields.next() {
        let (Some(xy), Some(path)) = (field.get(..2), field.get(3..)) else {
            continue;
        };
        if xy.starts_with(['R', 'C']) {
            let _ = fields.next();
        }
        entries.push((xy.to_string(), path.to_string()));
    }
    entries
}

pub(super) fn is_unmerged(xy: &str) -> bool {
    matches!(xy, "DD" | "AU" | "UD" | "UA" | "DU" | "AA" | "UU")
}

pub(super) fn is_full_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(super) fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_parser_survives_odd_output() {
        assert_eq!(parse_porcelain_z(""), vec![]);
        assert_eq!(parse_porcelain_z("x\0\0UU"), vec![]);
        assert_eq!(
            parse_porcelain_z("R  new\0old\0UU é\0"),
            vec![
                ("R ".to_string(), "new".to_string()),
                ("UU".to_string(), "é".to_string())
            ]
        );
    }
}
