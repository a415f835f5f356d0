//! A pure parser of a patch as `git diff` or `git format-patch` writes it. The agent hands its
//! change over as data; the guardian reads it here, and never runs anything from the agent's
//! checkout.
//!
//! The parser is strict on purpose: what it accepts must be exactly what `git apply -p1` would
//! change, so the policy judges the same paths that would be written. It refuses, naming the
//! line, anything malformed or suspicious:
//!
//! * paths that are absolute, contain `.`, `..` or empty components, a `.git` component (in
//!   any case), a backslash, or a NUL or other control character;
//! * headers that disagree: the `diff --git a/X b/Y` names against the `---`/`+++` lines and
//!   the `rename`/`copy` lines, `new file`/`deleted file` against `/dev/null`;
//! * prefixes other than `a/` and `b/` (with `--no-prefix`, `git apply -p1` would strip the
//!   first directory and write somewhere else than the header says);
//! * a file diff without a `diff --git` header (`git apply` applies a bare `---`/`+++`/`@@`
//!   patch, which would otherwise slip past as commit-message text);
//! * combined diffs of merges, submodules (mode 160000) and unknown modes, hunks whose line
//!   counts do not add up, unknown extended header lines;
//! * any line after a hunk's counts are used up that is not the next hunk header (exactly
//!   `@@ -`), the next `diff --git`, a blank line, format-patch's `--base` trailer, its
//!   signature (`-- ` and what follows, up to the next commit) or the next `From <sha>`:
//!   `git apply` skips such lines, a reader does not (a header spelt `@@` U+00A0 `-` would add
//!   back, for the reader only, what git deletes). A commit message is free text, but no line
//!   of it may start with `@@`;
//! * a `GIT binary patch` block that would inflate past [`MAX_BINARY_BYTES`] (its declared
//!   `literal`/`delta` size, and the size of the file a delta makes, read from the delta's
//!   own header), or blocks past [`MAX_BINARY_PATCH_BYTES`] together: `git apply` inflates
//!   them all into memory before it applies anything.
//!
//! A `format-patch` series of several commits is read as one diff: every file section of every
//! commit, in order (a file touched by two commits appears twice; the summary counts it once
//! and adds up its lines).
//!
//! One file per concern: `parser` walks the patch (file sections in order, and what may stand
//! between them), `header` reads a file section's extended header and checks that its names
//! and modes agree, `names` reads names as git writes them and says which paths are
//! acceptable, `hunk` reads hunks, `binary` reads binary patches and bounds what they inflate
//! to.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

mod binary;
mod header;
mod hunk;
mod names;
mod parser;

pub use binary::{MAX_BINARY_BYTES, MAX_BINARY_PATCH_BYTES};
pub use names::check_path;

use parser::Parser;

/// A symlink's mode in git.
pub const SYMLINK_MODE: u32 = 0o120000;
/// How many characters of a line an error message quotes.
const QUOTE_CHARS: usize = 80;

/// A patch that is not accepted, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("patch line {line}: {problem}")]
pub struct DiffError {
    /// 1-based line number in the patch (0: the patch as a whole).
    pub line: usize,
    pub problem: String,
}

/// What happened to one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Added,
    Modified,
    Deleted,
    Renamed,
    Copied,
    /// Only the mode changed, or the mode changed along with the content.
    ModeChange,
}

/// The kind of one line in a hunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    Context,
    Added,
    Removed,
}

/// One line of a hunk. `old_line`/`new_line` are the line numbers in the old and new file
/// (context lines have both, added lines only the new one, removed lines only the old one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HunkLine {
    pub kind: LineKind,
    /// The text without its `+`/`-`/` ` marker and without the newline.
    pub text: String,
    pub old_line: Option<u32>,
    pub new_line: Option<u32>,
    /// Where the line is in the patch (1-based).
    pub patch_line: usize,
    /// A `\ No newline at end of file` marker follows: the line has no newline, so it must be
    /// the last of its file (git would join it with the next line otherwise).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_newline: bool,
}

/// One `@@ -a,b +c,d @@` hunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hunk {
    pub old_start: u32,
    pub old_count: u32,
    pub new_start: u32,
    pub new_count: u32,
    pub lines: Vec<HunkLine>,
}

/// One file section of the patch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileDiff {
    /// The path before the change; `None` for an added file.
    pub old_path: Option<String>,
    /// The path after the change; `None` for a deleted file.
    pub new_path: Option<String>,
    pub status: FileStatus,
    /// Git modes as numbers (0o100644, 0o100755, 0o120000); `None` when the patch does not say
    /// (a pure rename has no `index` line).
    pub old_mode: Option<u32>,
    pub new_mode: Option<u32>,
    pub binary: bool,
    pub hunks: Vec<Hunk>,
    /// Which commit of a format-patch series this section belongs to (0-based).
    pub commit: usize,
    /// Where the `diff --git` line is in the patch (1-based).
    pub patch_line: usize,
}

/// A parsed patch: every file section of every commit, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub files: Vec<FileDiff>,
    /// Commits in a format-patch series; 1 for a plain `git diff`.
    pub commits: usize,
}

/// The numbers the policy and the person reading the assessment care about. Read back, a
/// field missing is its default: a refused patch's assessment stores none of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiffFacts {
    /// Every path touched, old and new, sorted and distinct.
    pub paths: Vec<String>,
    /// Distinct files changed (a rename counts once).
    pub files: usize,
    pub lines_added: usize,
    pub lines_removed: usize,
    /// Distinct parent directories of the touched paths (`.` for the top level).
    pub directories: Vec<String>,
    pub binary_files: usize,
    pub commits: usize,
}

impl FileDiff {
    /// The path to name in messages: the new one, or the old one for a deletion.
    pub fn path(&self) -> &str {
        self.new_path
            .as_deref()
            .or(self.old_path.as_deref())
            .unwrap_or_default()
    }

    /// The paths this section touches: old and new (both for a rename or copy).
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        let old = self.old_path.as_deref();
        let new = self.new_path.as_deref().filter(|n| Some(*n) != old);
        old.into_iter().chain(new)
    }

    pub fn added_lines(&self) -> impl Iterator<Item = &HunkLine> {
        self.lines_of(LineKind::Added)
    }

    pub fn removed_lines(&self) -> impl Iterator<Item = &HunkLine> {
        self.lines_of(LineKind::Removed)
    }

    fn lines_of(&self, kind: LineKind) -> impl Iterator<Item = &HunkLine> {
        self.hunks
            .iter()
            .flat_map(|h| h.lines.iter())
            .filter(move |l| l.kind == kind)
    }

    /// Whether the file is a symlink after the change.
    pub fn is_symlink(&self) -> bool {
        self.new_mode == Some(SYMLINK_MODE) || self.old_mode == Some(SYMLINK_MODE)
    }

    /// The target of a symlink this section creates or changes: its one added line.
    pub fn symlink_target(&self) -> Option<&str> {
        if self.new_mode != Some(SYMLINK_MODE) || self.new_path.is_none() {
            return None;
        }
        self.added_lines().next().map(|l| l.text.as_str())
    }
}

impl Diff {
    /// Sums the series: distinct paths and files, all added and removed lines.
    pub fn facts(&self) -> DiffFacts {
        let mut paths = BTreeSet::new();
        let mut files = BTreeSet::new();
        let mut binary = BTreeSet::new();
        let (mut added, mut removed) = (0, 0);
        for f in &self.files {
            paths.extend(f.paths().map(str::to_owned));
            files.insert(f.path().to_owned());
            if f.binary {
                binary.insert(f.path().to_owned());
            }
            added += f.added_lines().count();
            removed += f.removed_lines().count();
        }
        let directories: BTreeSet<String> = paths.iter().map(|p| parent(p).to_owned()).collect();
        DiffFacts {
            paths: paths.into_iter().collect(),
            files: files.len(),
            lines_added: added,
            lines_removed: removed,
            directories: directories.into_iter().collect(),
            binary_files: binary.len(),
            commits: self.commits,
        }
    }
}

/// The directory of a repository path, `.` for the top level.
pub fn parent(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some((dir, _)) => dir,
        None => ".",
    }
}

/// Parses a patch given as bytes; text that is not UTF-8 is refused, naming the line.
pub fn parse_bytes(patch: &[u8]) -> Result<Diff, DiffError> {
    match std::str::from_utf8(patch) {
        Ok(text) => parse(text),
        Err(e) => {
            let line = 1 + patch[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            Err(DiffError {
                line,
                problem: "is not UTF-8 text".to_owned(),
            })
        }
    }
}

/// Parses a patch as `git diff` or `git format-patch` (one commit or a series) writes it.
pub fn parse(patch: &str) -> Result<Diff, DiffError> {
    let lines: Vec<&str> = patch.split('\n').collect();
    // A final newline leaves one empty string behind; it is not a line.
    let n = if patch.ends_with('\n') {
        lines.len() - 1
    } else {
        lines.len()
    };
    let mut p = Parser {
        lines: &lines[..n],
        at: 0,
        commit: None,
        diff: Diff::default(),
        binary_bytes: 0,
    };
    p.run()?;
    p.diff.commits = p.commit.map_or(1, |c| c + 1);
    if p.diff.files.is_empty() {
        return Err(DiffError {
            line: 0,
            problem: "contains no file changes (no `diff --git` line)".to_owned(),
        });
    }
    Ok(p.diff)
}

fn err(line: usize, problem: impl Into<String>) -> DiffError {
    DiffError {
        line,
        problem: problem.into(),
    }
}

fn quote(line: &str) -> String {
    let mut out: String = line.chars().take(QUOTE_CHARS).collect();
    if line.chars().count() > QUOTE_CHARS {
        out.push_str("...");
    }
    format!("{out:?}")
}

impl fmt::Display for FileStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileStatus::Added => "added",
            FileStatus::Modified => "modified",
            FileStatus::Deleted => "deleted",
            FileStatus::Renamed => "renamed",
            FileStatus::Copied => "copied",
            FileStatus::ModeChange => "mode change",
        })
    }
}

/// What the tests of every part of the parser share.
#[cfg(test)]
mod testing {
    use super::{parse, DiffError};

    pub(super) fn one(path: &str, body: &str) -> String {
        format!("diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n--- a/{path}\n+++ b/{path}\n{body}")
    }

    pub(super) fn error(patch: &str) -> DiffError {
        parse(patch).expect_err("the patch must be refused")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::error;
    use super::*;
    use proptest::prelude::*;

    /// What `git format-patch` wrote for a commit that adds a binary file, an empty file, edits
    /// a file, renames a file with a space in its name and adds a symlink (git 2.47.3).
    const SERIES_ONE: &str =
        "From e491bae1d610de043bc557812fa62ec9cdfddedd Mon Sep 17 00:00:00 2001
From: t <t@t>
Date: Thu, 26 Nov 2026 03:16:24 +0000
Subject: [PATCH] two

---
 bin                     | Bin 0 -> 2 bytes
 src/a                   |   2 +-
 src/{sp ace => sp ace2} |   0
 src/util                |   1 +
 4 files changed, 2 insertions(+), 1 deletion(-)

diff --git a/bin b/bin
new file mode 100644
index 0000000000000000000000000000000000000000..bdc955b7b2e610ad5a72302b139a2e6cb325519a
GIT binary patch
literal 2
JcmZQz1ONa700IC2

literal 0
HcmV?d00001

diff --git a/empty b/empty
new file mode 100644
index 0000000..e69de29
diff --git a/src/a b/src/a
index 7898192..6178079 100644
--- a/src/a
+++ b/src/a
@@ -1 +1 @@
-a
+b
diff --git a/src/sp ace b/src/sp ace2
similarity index 100%
rename from src/sp ace
rename to src/sp ace2
diff --git a/src/util b/src/util
new file mode 120000
index 0000000..f0dcf84
--- /dev/null
+++ b/src/util
@@ -0,0 +1 @@
+../migrations
\\ No newline at end of file
-- 
2.47.3

";

    #[test]
    fn reads_every_kind_of_section_git_writes() {
        let d = parse(SERIES_ONE).unwrap();
        assert_eq!(d.commits, 1);
        let summary: Vec<(&str, FileStatus, Option<u32>, bool)> = d
            .files
            .iter()
            .map(|f| (f.path(), f.status, f.new_mode, f.binary))
            .collect();
        assert_eq!(
            summary,
            [
                ("bin", FileStatus::Added, Some(0o100644), true),
                ("empty", FileStatus::Added, Some(0o100644), false),
                ("src/a", FileStatus::Modified, Some(0o100644), false),
                ("src/sp ace2", FileStatus::Renamed, None, false),
                ("src/util", FileStatus::Added, Some(SYMLINK_MODE), false),
            ]
        );
        assert_eq!(d.files[3].old_path.as_deref(), Some("src/sp ace"));
        assert_eq!(d.files[4].symlink_target(), Some("../migrations"));
        let edit = &d.files[2];
        let removed: Vec<_> = edit
            .removed_lines()
            .map(|l| (l.text.as_str(), l.old_line))
            .collect();
        let added: Vec<_> = edit
            .added_lines()
            .map(|l| (l.text.as_str(), l.new_line))
            .collect();
        assert_eq!(removed, [("a", Some(1))]);
        assert_eq!(added, [("b", Some(1))]);
        let facts = d.facts();
        assert_eq!(facts.files, 5);
        assert_eq!((facts.lines_added, facts.lines_removed), (2, 1));
        assert_eq!(
            facts.paths,
            [
                "bin",
                "empty",
                "src/a",
                "src/sp ace",
                "src/sp ace2",
                "src/util"
            ]
        );
        assert_eq!(facts.directories, [".", "src"]);
        assert_eq!(facts.binary_files, 1);
    }

    #[test]
    fn a_series_of_commits_is_one_diff() {
        let second = SERIES_ONE
            .replace(
                "e491bae1d610de043bc557812fa62ec9cdfddedd",
                "0123456789012345678901234567890123456789",
            )
            .replace("[PATCH] two", "[PATCH 2/2] three");
        let d = parse(&format!("{SERIES_ONE}{second}")).unwrap();
        assert_eq!(d.commits, 2);
        assert_eq!(d.files.len(), 10);
        assert_eq!(d.files[9].commit, 1);
        let facts = d.facts();
        assert_eq!(facts.files, 5, "the same files, counted once");
        assert_eq!(
            (facts.lines_added, facts.lines_removed),
            (4, 2),
            "lines add up"
        );
    }

    #[test]
    fn refuses_what_is_not_a_plain_file() {
        let e = error("diff --git a/lib b/lib\nnew file mode 160000\nindex 0000000..1111111\n");
        assert!(e.to_string().contains("submodule"), "{e}");
        let e = error("diff --cc src/a\nindex 1,2..3\n");
        assert!(e.to_string().contains("merge"), "{e}");
        let e = error("diff --git a/l b/l\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/l\n@@ -0,0 +1,2 @@\n+a\n+b\n");
        assert!(e.to_string().contains("one line, its target"), "{e}");
        let e = error("diff --git a/x b/x\nindex 1111111..2222222 100644\nfrobnicate yes\n");
        assert!(e.to_string().contains("not a line git writes"), "{e}");
        assert_eq!(error("just a message\n").line, 0);
        assert_eq!(
            parse_bytes(b"diff --git a/x b/x\n\xff\n").unwrap_err().line,
            2
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any text: an answer, never a panic.
        #[test]
        fn never_panics_on_any_text(text in "\\PC{0,400}") {
            let _ = parse(&text);
        }

        /// Patch-shaped fragments reach deeper: every accepted path is clean.
        #[test]
        fn accepted_paths_are_always_clean(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("diff --git a/src/a b/src/a".to_owned()),
                    Just("diff --git a/x b/y".to_owned()),
                    Just("--- a/src/a".to_owned()),
                    Just("+++ b/src/a".to_owned()),
                    Just("--- /dev/null".to_owned()),
                    Just("new file mode 100644".to_owned()),
                    Just("new file mode 120000".to_owned()),
                    Just("rename from x".to_owned()),
                    Just("rename to y".to_owned()),
                    Just("index 1111111..2222222 100644".to_owned()),
                    Just("GIT binary patch".to_owned()),
                    Just("literal 2".to_owned()),
                    Just("".to_owned()),
                    "@@ -[0-3](,[0-3])? \\+[0-3](,[0-3])? @@",
                    "[-+ \\\\][a-z./]{0,6}",
                    "(---|\\+\\+\\+) [ab]/[a-z./]{0,8}",
                    "rename (from|to) [a-z./]{1,8}",
                ],
                0..24,
            )
        ) {
            let text = lines.join("\n");
            if let Ok(d) = parse(&text) {
                for f in &d.files {
                    for p in f.paths() {
                        prop_assert!(check_path(p).is_ok(), "{p:?} accepted from {text:?}");
                    }
                }
            }
        }
    }
}
