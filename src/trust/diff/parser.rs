//! The walk through a patch: its file sections in order, the commits of a series counted, and
//! what may stand between sections (a commit message, blank lines, format-patch's trailer and
//! signature): `git apply` skips those lines, so nothing there may read as part of the change.

use super::header::Header;
use super::names::{check_chars, check_path, header_names};
use super::{err, quote, Diff, DiffError, FileDiff, FileStatus, HunkLine, SYMLINK_MODE};

pub(super) struct Parser<'a> {
    pub(super) lines: &'a [&'a str],
    /// Index of the next line to read.
    pub(super) at: usize,
    /// The current commit of a format-patch series, once a `From <sha>` line was seen.
    pub(super) commit: Option<usize>,
    pub(super) diff: Diff,
    /// What git would inflate for the binary sections read so far (see
    /// [`MAX_BINARY_BYTES`](super::MAX_BINARY_BYTES)).
    pub(super) binary_bytes: u64,
}

/// Where a line that belongs to no file section is. `git apply` skips every such line, so
/// only what a reader cannot take for part of the change may stand there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Before the first section of a commit: its message, where anything may stand (bullet
    /// lists start with `-` or `+`, the diffstat follows `---`).
    Message,
    /// Right after a file section, its hunks' counts used up: only the next section, a blank
    /// line, format-patch's `--base` trailer, its signature or the next commit may follow.
    AfterSection,
    /// After format-patch's signature separator `-- `, up to the next commit or section.
    Signature,
}

impl Place {
    /// Where the line `line` (not a `diff --git`, `From <sha>` or hunk header) leaves the
    /// reader, or why it may not stand here (completing "outside any hunk").
    fn next(self, line: &str) -> Result<Place, &'static str> {
        match self {
            Place::Message => Ok(Place::Message),
            Place::AfterSection => {
                if line == "-- " {
                    Ok(Place::Signature)
                } else if line.is_empty() || is_base_trailer(line) {
                    Ok(Place::AfterSection)
                } else {
                    Err("")
                }
            }
            Place::Signature => {
                // A signature is a name or git's version; one that reads as patch lines could
                // be taken for more of the change.
                if line.starts_with(['+', '-', '\\']) || line.starts_with("@@") {
                    Err(" (in the signature)")
                } else {
                    Ok(Place::Signature)
                }
            }
        }
    }
}

/// A line `git format-patch --base` writes after the last section of a series.
fn is_base_trailer(line: &str) -> bool {
    ["base-commit: ", "prerequisite-patch-id: "]
        .iter()
        .filter_map(|p| line.strip_prefix(p))
        .any(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl<'a> Parser<'a> {
    pub(super) fn peek(&self) -> Option<&'a str> {
        self.lines.get(self.at).copied()
    }

    /// 1-based number of the line at index `i`.
    pub(super) fn no(i: usize) -> usize {
        i + 1
    }

    pub(super) fn run(&mut self) -> Result<(), DiffError> {
        let mut place = Place::Message;
        while let Some(line) = self.peek() {
            if line.starts_with("diff --git ") {
                let file = self.file_section()?;
                self.diff.files.push(file);
                place = Place::AfterSection;
                continue;
            }
            let no = Self::no(self.at);
            if is_mbox_from(line) {
                self.commit = Some(self.commit.map_or(0, |c| c + 1));
                place = Place::Message;
            } else if line.starts_with("diff --cc ") || line.starts_with("diff --combined ") {
                return Err(err(no, "a combined diff (a merge) is not accepted"));
            } else if line.starts_with("--- ")
                && self
                    .lines
                    .get(self.at + 1)
                    .is_some_and(|l| l.starts_with("+++ "))
            {
                return Err(err(
                    no,
                    format!(
                        "{} starts a file diff without a `diff --git` header; send the patch \
                         as `git format-patch` or `git diff` writes it",
                        quote(line)
                    ),
                ));
            } else if line == "GIT binary patch"
                || (place == Place::Message && line.starts_with("@@"))
            {
                // `@@` and anything after it, not only git's exact `@@ -`: a header spelt with
                // another space (U+00A0) is skipped by git but read as a hunk by a person.
                return Err(err(
                    no,
                    format!("{} is outside any `diff --git` section", quote(line)),
                ));
            } else {
                place = place.next(line).map_err(|why| {
                    err(
                        no,
                        format!(
                            "{} is outside any hunk{why}: git would skip it, a reader would not",
                            quote(line)
                        ),
                    )
                })?;
            }
            self.at += 1;
        }
        Ok(())
    }

    fn file_section(&mut self) -> Result<FileDiff, DiffError> {
        let start = self.at;
        let header_no = Self::no(start);
        let rest = &self.lines[start]["diff --git ".len()..];
        check_chars(header_no, rest)?;
        let names = header_names(rest).map_err(|p| err(header_no, p))?;
        if let Some((a, b)) = &names {
            for path in [a, b] {
                check_path(path)
                    .map_err(|problem| err(header_no, format!("path {path:?} {problem}")))?;
            }
        }
        self.at += 1;

        let mut h = Header::default();
        while let Some(line) = self.peek() {
            let no = Self::no(self.at);
            if line.starts_with("diff --git ") || line.starts_with("@@ ") {
                break;
            }
            if line == "GIT binary patch" {
                self.at += 1;
                let name = names.as_ref().map_or(rest, |(_, b)| b.as_str());
                self.binary_patch(name)?;
                h.binary = true;
                break;
            }
            if line.starts_with("Binary files ") && line.ends_with(" differ") {
                self.at += 1;
                h.binary = true;
                break;
            }
            if !self.header_line(&mut h, line, no)? {
                // Not a header line: the section is over (a signature, the next commit).
                break;
            }
            self.at += 1;
        }

        let file = self.resolve(&h, names, header_no)?;
        let mut file = file;
        if !h.binary {
            while let Some(line) = self.peek() {
                if !line.starts_with("@@ ") {
                    break;
                }
                if h.minus.is_none() || h.plus.is_none() {
                    return Err(err(
                        Self::no(self.at),
                        "a hunk without `---` and `+++` lines before it",
                    ));
                }
                let hunk = self.hunk()?;
                file.hunks.push(hunk);
            }
        }
        self.check_file(&file, header_no)?;
        Ok(file)
    }

    fn check_file(&self, f: &FileDiff, no: usize) -> Result<(), DiffError> {
        if f.status == FileStatus::Added && !f.binary {
            if let Some(line) = f.removed_lines().next() {
                return Err(err(line.patch_line, "a new file cannot lose lines"));
            }
        }
        if f.status == FileStatus::Deleted && !f.binary {
            if let Some(line) = f.added_lines().next() {
                return Err(err(line.patch_line, "a deleted file cannot gain lines"));
            }
        }
        if f.new_mode == Some(SYMLINK_MODE) && f.status != FileStatus::Deleted {
            if f.binary {
                return Err(err(no, "a symlink cannot be a binary patch"));
            }
            let added: Vec<&HunkLine> = f.added_lines().collect();
            if added.len() > 1 {
                return Err(err(
                    added[1].patch_line,
                    "a symlink's content is one line, its target",
                ));
            }
            if let Some(target) = added.first() {
                if target.text.is_empty() || target.text.contains('\0') {
                    return Err(err(target.patch_line, "an empty symlink target"));
                }
            }
        }
        Ok(())
    }
}

/// `From <40 or 64 hex> Mon Sep 17 00:00:00 2001`, the first line of each format-patch commit.
pub(super) fn is_mbox_from(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("From ") else {
        return false;
    };
    let id = rest.split(' ').next().unwrap_or_default();
    (id.len() == 40 || id.len() == 64)
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && rest.ends_with(" Mon Sep 17 00:00:00 2001")
}

#[cfg(test)]
mod tests {
    use crate::trust::diff::parse;
    use crate::trust::diff::testing::{error, one};

    #[test]
    fn refuses_file_diffs_git_apply_would_find_outside_a_git_header() {
        let e = error(
            "Subject: x\n\n--- a/migrations/1.sql\n+++ b/migrations/1.sql\n@@ -1 +1 @@\n-a\n+b\n",
        );
        assert_eq!(e.line, 3);
        assert!(
            e.to_string().contains("without a `diff --git` header"),
            "{e}"
        );
        let e = error(&format!(
            "{}@@ -5 +5 @@\n-x\n+y\n",
            one("src/a", "@@ -1 +1 @@\n-a\n+b\n-- \n2.47.3\n")
        ));
        assert!(e.to_string().contains("is outside any hunk"), "{e}");
    }

    /// What `git format-patch --base` wrote for two commits whose messages hold bullet lists
    /// (`-`, `+`, `*`), a line like a `---` header and a diffstat-like line (git 2.47.3).
    const SERIES_WITH_LISTS: &str =
        "From 133c0249a0668aa1b419ebc267703d4744f36c78 Mon Sep 17 00:00:00 2001
From: t <t@t>
Date: Fri, 4 Dec 2026 05:42:33 +0000
Subject: [PATCH 1/2] change b

- bullet one
+ plus line
--- a/fake
* star

 2 files changed
---
 f | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/f b/f
index de98044..7be73ce 100644
--- a/f
+++ b/f
@@ -1,3 +1,3 @@
 a
-b
+B
 c

base-commit: 387874294c72d9ee71ec7a8481b9aa633e92b1b4
-- 
2.47.3


From 900059c4ac562f1e6c77afd8962bab2ae0dca233 Mon Sep 17 00:00:00 2001
From: t <t@t>
Date: Fri, 4 Dec 2026 05:42:33 +0000
Subject: [PATCH 2/2] change c

- item
- item two
---
 f | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/f b/f
index 7be73ce..e642ff0 100644
--- a/f
+++ b/f
@@ -1,3 +1,3 @@
 a
 B
-c
+C
-- 
2.47.3

";

    #[test]
    fn commit_messages_with_lists_and_diffstats_are_messages_not_changes() {
        let d = parse(SERIES_WITH_LISTS).unwrap();
        assert_eq!(d.commits, 2);
        let changed: Vec<(usize, Vec<&str>, Vec<&str>)> = d
            .files
            .iter()
            .map(|f| {
                (
                    f.commit,
                    f.removed_lines().map(|l| l.text.as_str()).collect(),
                    f.added_lines().map(|l| l.text.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            changed,
            [(0, vec!["b"], vec!["B"]), (1, vec!["c"], vec!["C"])]
        );
        // The same series without signatures (`--no-signature`): commits are parted by a blank.
        let bare = SERIES_WITH_LISTS.replace("-- \n2.47.3\n", "");
        assert_eq!(parse(&bare).unwrap().files.len(), 2);
    }

    #[test]
    fn lines_after_a_hunks_counts_are_refused_naming_the_line() {
        // The attack: a real hunk deletes a check; a "hunk" whose header has a no-break space
        // for its space puts it back, for the reader only (git skips it).
        let patch = one(
            "src/auth.js",
            "@@ -4,4 +4,3 @@\n ctx\n-if (!isAdmin(user)) return deny();\n ctx\n ctx\n\
             @@\u{a0}-10,3 +9,4 @@\n ctx\n+if (!isAdmin(user)) return deny();\n ctx\n ctx\n",
        );
        let e = error(&patch);
        assert_eq!(e.line, 10, "{e}");
        assert!(
            e.to_string()
                .contains("is outside any hunk: git would skip it, a reader would not"),
            "{e}"
        );
        // Without a header at all: lines beyond the counts, of every kind.
        for (extra, line) in [
            ("+added()\n", 8),
            ("-removed()\n", 8),
            (" context\n", 8),
            ("\n+after a blank\n", 9),
            (
                "\\ No newline at end of file\n\\ No newline at end of file\n",
                9,
            ),
            ("garbage\n", 8),
            ("-- \n2.47.3\n+signed\n", 10),
            ("-- \n2.47.3\n@@\u{a0}-1 +1 @@\n", 10),
            ("-- \nGIT binary patch\n", 9),
        ] {
            let e = error(&one("src/a", &format!("@@ -1 +1 @@\n-a\n+b\n{extra}")));
            assert_eq!(e.line, line, "{extra:?}: {e}");
            assert!(e.to_string().contains("outside any"), "{extra:?}: {e}");
        }
        // After a section that has no hunks (a mode change), the same holds.
        let e = error("diff --git a/x b/x\nold mode 100644\nnew mode 100755\n\n+x\n");
        assert_eq!(e.line, 5, "{e}");
        // A header spelt another way in a commit message is refused too.
        let e = error(&format!(
            "Subject: x\n\n@@\u{a0}-1 +1 @@\n{}",
            one("src/a", "@@ -1 +1 @@\n-a\n+b\n")
        ));
        assert_eq!(e.line, 3, "{e}");
        // What may follow: blank lines, the `--base` trailer, a signature, the next commit.
        let ok = one(
            "src/a",
            "@@ -1 +1 @@\n-a\n+b\n\nbase-commit: 0123abc\n-- \n2.47.3\n\n",
        );
        assert!(parse(&ok).is_ok());
    }
}
