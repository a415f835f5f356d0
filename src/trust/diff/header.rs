//! A file section's extended header (modes, renames and copies, `index`, `---`/`+++`) read
//! line by line, then put together: every name and mode it gives must agree with the others
//! and with the `diff --git` line.

use super::names::{git_quote, path_arg, side_path};
use super::parser::{is_mbox_from, Parser};
use super::{check_path, err, quote, DiffError, FileDiff, FileStatus, SYMLINK_MODE};

/// Modes a file in a patch may have: regular, executable, symlink.
const MODES: [u32; 3] = [0o100644, 0o100755, SYMLINK_MODE];

/// What the extended header lines of one file section said.
#[derive(Default)]
pub(super) struct Header {
    old_mode: Option<u32>,
    new_mode: Option<u32>,
    new_file: Option<u32>,
    deleted_file: Option<u32>,
    index_mode: Option<u32>,
    rename_from: Option<String>,
    rename_to: Option<String>,
    copy_from: Option<String>,
    copy_to: Option<String>,
    pub(super) minus: Option<Option<String>>,
    pub(super) plus: Option<Option<String>>,
    pub(super) binary: bool,
}

impl Parser<'_> {
    /// Reads one extended header line into `h`; false when the line is not one.
    pub(super) fn header_line(
        &mut self,
        h: &mut Header,
        line: &str,
        no: usize,
    ) -> Result<bool, DiffError> {
        let mode = |text: &str| parse_mode(no, text);
        if let Some(m) = line.strip_prefix("old mode ") {
            h.old_mode = Some(mode(m)?);
        } else if let Some(m) = line.strip_prefix("new mode ") {
            h.new_mode = Some(mode(m)?);
        } else if let Some(m) = line.strip_prefix("new file mode ") {
            h.new_file = Some(mode(m)?);
        } else if let Some(m) = line.strip_prefix("deleted file mode ") {
            h.deleted_file = Some(mode(m)?);
        } else if let Some(p) = line
            .strip_prefix("rename from ")
            .or_else(|| line.strip_prefix("rename old "))
        {
            h.rename_from = Some(path_arg(no, p)?);
        } else if let Some(p) = line
            .strip_prefix("rename to ")
            .or_else(|| line.strip_prefix("rename new "))
        {
            h.rename_to = Some(path_arg(no, p)?);
        } else if let Some(p) = line.strip_prefix("copy from ") {
            h.copy_from = Some(path_arg(no, p)?);
        } else if let Some(p) = line.strip_prefix("copy to ") {
            h.copy_to = Some(path_arg(no, p)?);
        } else if line.starts_with("similarity index ") || line.starts_with("dissimilarity index ")
        {
        } else if let Some(rest) = line.strip_prefix("index ") {
            let mut parts = rest.split(' ');
            let ids = parts.next().unwrap_or_default();
            let ok_ids = ids.split_once("..").is_some_and(|(a, b)| {
                [a, b]
                    .iter()
                    .all(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_hexdigit()))
            });
            if !ok_ids {
                return Err(err(no, format!("{} is not an `index` line", quote(line))));
            }
            if let Some(m) = parts.next() {
                h.index_mode = Some(mode(m)?);
            }
            if parts.next().is_some() {
                return Err(err(no, format!("{} is not an `index` line", quote(line))));
            }
        } else if let Some(p) = line.strip_prefix("--- ") {
            if h.minus.is_some() {
                return Err(err(no, "a second `---` line in one file section"));
            }
            h.minus = Some(side_path(no, p, "a/")?);
        } else if let Some(p) = line.strip_prefix("+++ ") {
            if h.minus.is_none() || h.plus.is_some() {
                return Err(err(no, "a `+++` line must follow exactly one `---` line"));
            }
            h.plus = Some(side_path(no, p, "b/")?);
        } else if line.starts_with("-- ") || line == "--" || line.is_empty() || is_mbox_from(line) {
            return Ok(false);
        } else {
            return Err(err(
                no,
                format!("{} is not a line git writes in a file header", quote(line)),
            ));
        }
        Ok(true)
    }

    /// Puts the header together and checks that all its names agree.
    pub(super) fn resolve(
        &self,
        h: &Header,
        names: Option<(String, String)>,
        no: usize,
    ) -> Result<FileDiff, DiffError> {
        if h.minus.is_some() != h.plus.is_some() {
            return Err(err(no, "a `---` line without its `+++` line"));
        }
        if h.rename_from.is_some() != h.rename_to.is_some() {
            return Err(err(no, "`rename from` and `rename to` must come together"));
        }
        if h.copy_from.is_some() != h.copy_to.is_some() {
            return Err(err(no, "`copy from` and `copy to` must come together"));
        }
        let moved = match (&h.rename_from, &h.rename_to, &h.copy_from, &h.copy_to) {
            (Some(f), Some(t), None, None) => Some((f.clone(), t.clone(), FileStatus::Renamed)),
            (None, None, Some(f), Some(t)) => Some((f.clone(), t.clone(), FileStatus::Copied)),
            (None, None, None, None) => None,
            _ => return Err(err(no, "a file section cannot be both a rename and a copy")),
        };
        if h.new_file.is_some() && h.deleted_file.is_some() {
            return Err(err(no, "a file cannot be both new and deleted"));
        }
        if (h.new_file.is_some() || h.deleted_file.is_some()) && moved.is_some() {
            return Err(err(no, "a new or deleted file cannot be a rename or copy"));
        }

        // The two names, from the most explicit source available.
        let (old, new) = if let Some((from, to, _)) = &moved {
            (from.clone(), to.clone())
        } else if let (Some(minus), Some(plus)) = (&h.minus, &h.plus) {
            match (minus, plus) {
                (Some(m), Some(p)) => (m.clone(), p.clone()),
                (None, Some(p)) => (p.clone(), p.clone()),
                (Some(m), None) => (m.clone(), m.clone()),
                (None, None) => return Err(err(no, "both `---` and `+++` are /dev/null")),
            }
        } else if let Some((a, b)) = &names {
            (a.clone(), b.clone())
        } else {
            return Err(err(
                no,
                "the `diff --git` names are ambiguous and no other line names the file",
            ));
        };
        for p in [&old, &new] {
            check_path(p).map_err(|problem| err(no, format!("path {p:?} {problem}")))?;
        }
        // The header must say exactly the same.
        let expected = format!(
            "{} {}",
            git_quote(&format!("a/{old}")),
            git_quote(&format!("b/{new}"))
        );
        let rest = &self.lines[no - 1]["diff --git ".len()..];
        let same = rest == expected || names.as_ref().is_some_and(|(a, b)| *a == old && *b == new);
        if !same {
            return Err(err(
                no,
                format!(
                    "the `diff --git` line names {} but the other lines say {old:?} -> {new:?}",
                    quote(rest)
                ),
            ));
        }
        if moved.is_none() && old != new {
            return Err(err(
                no,
                format!("{old:?} and {new:?} differ but the section is not a rename or copy"),
            ));
        }
        // `---`/`+++` must agree with everything else.
        if let (Some(minus), Some(plus)) = (&h.minus, &h.plus) {
            let want_minus = if h.new_file.is_some() {
                None
            } else {
                Some(&old)
            };
            let want_plus = if h.deleted_file.is_some() {
                None
            } else {
                Some(&new)
            };
            if minus.as_ref() != want_minus || plus.as_ref() != want_plus {
                let show = |s: &Option<String>| s.clone().unwrap_or_else(|| "/dev/null".into());
                return Err(err(
                    no,
                    format!(
                        "`---`/`+++` say {:?} -> {:?}, which does not match {old:?} -> {new:?}{}",
                        show(minus),
                        show(plus),
                        if h.new_file.is_some() {
                            " (a new file)"
                        } else if h.deleted_file.is_some() {
                            " (a deleted file)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }

        let (status, old_mode, new_mode) = if let Some(m) = h.new_file {
            (FileStatus::Added, None, Some(m))
        } else if let Some(m) = h.deleted_file {
            (FileStatus::Deleted, Some(m), None)
        } else {
            let old_mode = h.old_mode.or(h.index_mode);
            let new_mode = h.new_mode.or(h.index_mode);
            if h.old_mode.is_some() != h.new_mode.is_some() {
                return Err(err(no, "`old mode` and `new mode` must come together"));
            }
            let status = match &moved {
                Some((_, _, s)) => *s,
                None if h.old_mode.is_some() && h.old_mode != h.new_mode => FileStatus::ModeChange,
                None => FileStatus::Modified,
            };
            (status, old_mode, new_mode)
        };
        if let (Some(index), Some(m)) = (h.index_mode, h.new_file.or(h.deleted_file)) {
            if index != m {
                return Err(err(
                    no,
                    "the `index` line's mode differs from the file's mode",
                ));
            }
        }
        Ok(FileDiff {
            old_path: (status != FileStatus::Added).then_some(old),
            new_path: (status != FileStatus::Deleted).then_some(new),
            status,
            old_mode,
            new_mode,
            binary: h.binary,
            hunks: Vec::new(),
            commit: self.commit.unwrap_or(0),
            patch_line: no,
        })
    }
}

fn parse_mode(no: usize, text: &str) -> Result<u32, DiffError> {
    let mode = u32::from_str_radix(text, 8)
        .ok()
        .filter(|_| text.len() == 6)
        .ok_or_else(|| err(no, format!("{} is not a file mode", quote(text))))?;
    if mode == 0o160000 {
        return Err(err(no, "a submodule (mode 160000) is not accepted"));
    }
    if !MODES.contains(&mode) {
        return Err(err(
            no,
            format!("mode {text} is not a regular file or symlink"),
        ));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::diff::parse;
    use crate::trust::diff::testing::error;

    #[test]
    fn reads_quoted_names_and_mode_changes() {
        let d = parse(
            "diff --git \"a/src/caf\\303\\251.rs\" \"b/src/caf\\303\\251.rs\"\nold mode 100644\nnew mode 100755\n",
        )
        .unwrap();
        assert_eq!(d.files[0].path(), "src/café.rs");
        assert_eq!(d.files[0].status, FileStatus::ModeChange);
        assert_eq!(
            (d.files[0].old_mode, d.files[0].new_mode),
            (Some(0o100644), Some(0o100755))
        );
        let d =
            parse("diff --git a/x b/y\nsimilarity index 90%\ncopy from x\ncopy to y\n").unwrap();
        assert_eq!(d.files[0].status, FileStatus::Copied);
        let d = parse("diff --git a/x b/x\ndeleted file mode 100644\nindex 1111111..0000000\n--- a/x\n+++ /dev/null\n@@ -1 +0,0 @@\n-gone\n").unwrap();
        assert_eq!(d.files[0].status, FileStatus::Deleted);
        assert_eq!(d.files[0].new_path, None);
    }

    #[test]
    fn refuses_names_that_disagree() {
        let e = error("diff --git a/src/a.rs b/src/a.rs\nindex 1111111..2222222 100644\n--- a/src/a.rs\n+++ b/migrations/1.sql\n@@ -1 +1 @@\n-a\n+b\n");
        assert!(e.to_string().contains("the `diff --git` line names"), "{e}");
        let e = error("diff --git a/src/a.rs b/src/a.rs\nindex 1111111..2222222 100644\n--- /dev/null\n+++ b/src/a.rs\n@@ -0,0 +1 @@\n+b\n");
        assert!(e.to_string().contains("does not match"), "{e}");
        let e = error("diff --git a/src/a.rs b/src/a.rs\nsimilarity index 100%\nrename from migrations/1.sql\nrename to src/a.rs\n");
        assert!(e.to_string().contains("the `diff --git` line names"), "{e}");
        let e = error("diff --git a/src/a.rs b/src/b.rs\nindex 1111111..2222222 100644\n--- a/src/a.rs\n+++ b/src/b.rs\n@@ -1 +1 @@\n-a\n+b\n");
        assert!(e.to_string().contains("not a rename or copy"), "{e}");
        let e = error("diff --git a/x b/x\nnew file mode 100644\nindex 0000000..1111111\n--- a/x\n+++ b/x\n@@ -0,0 +1 @@\n+a\n");
        assert!(e.to_string().contains("(a new file)"), "{e}");
        let e = error("diff --git src/a.rs src/a.rs\nindex 1111111..2222222 100644\n--- src/a.rs\n+++ src/a.rs\n@@ -1 +1 @@\n-a\n+b\n");
        assert!(e.to_string().contains("default prefixes"), "{e}");
    }
}
