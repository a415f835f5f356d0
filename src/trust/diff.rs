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

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

/// A symlink's mode in git.
pub const SYMLINK_MODE: u32 = 0o120000;
/// Modes a file in a patch may have: regular, executable, symlink.
const MODES: [u32; 3] = [0o100644, 0o100755, SYMLINK_MODE];
/// How many characters of a line an error message quotes.
const QUOTE_CHARS: usize = 80;
/// The most bytes one block of a `GIT binary patch` may inflate to (its `literal`/`delta`
/// size, and a delta's result). `git apply` inflates every block of a patch into memory
/// before it applies any, and deflate shrinks a run of zeros a thousandfold: a 519 KB patch
/// can declare 395 MiB. A file guardian judges is far smaller (see `MAX_BINARY_PATCH_BYTES`).
pub const MAX_BINARY_BYTES: u64 = 16 * 1024 * 1024;
/// The most bytes all the binary blocks of one patch may inflate to, together: the bound
/// on the contents one proposal is judged on (`git::scratch::MAX_JUDGED_BYTES`), so that a
/// patch git would refuse after inflating is refused before git runs.
pub const MAX_BINARY_PATCH_BYTES: u64 = 32 * 1024 * 1024;

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

/// The numbers the policy and the person reading the assessment care about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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

struct Parser<'a> {
    lines: &'a [&'a str],
    /// Index of the next line to read.
    at: usize,
    /// The current commit of a format-patch series, once a `From <sha>` line was seen.
    commit: Option<usize>,
    diff: Diff,
    /// What git would inflate for the binary sections read so far (see [`MAX_BINARY_BYTES`]).
    binary_bytes: u64,
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

/// What the extended header lines of one file section said.
#[derive(Default)]
struct Header {
    old_mode: Option<u32>,
    new_mode: Option<u32>,
    new_file: Option<u32>,
    deleted_file: Option<u32>,
    index_mode: Option<u32>,
    rename_from: Option<String>,
    rename_to: Option<String>,
    copy_from: Option<String>,
    copy_to: Option<String>,
    minus: Option<Option<String>>,
    plus: Option<Option<String>>,
    binary: bool,
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

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.lines.get(self.at).copied()
    }

    /// 1-based number of the line at index `i`.
    fn no(i: usize) -> usize {
        i + 1
    }

    fn run(&mut self) -> Result<(), DiffError> {
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

    /// Reads one extended header line into `h`; false when the line is not one.
    fn header_line(&mut self, h: &mut Header, line: &str, no: usize) -> Result<bool, DiffError> {
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
    fn resolve(
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

    /// Reads one hunk, exactly as many lines as its header counts.
    fn hunk(&mut self) -> Result<Hunk, DiffError> {
        let no = Self::no(self.at);
        let line = self.lines[self.at];
        let (old_start, old_count, new_start, new_count) = parse_hunk_header(line)
            .ok_or_else(|| err(no, format!("{} is not a hunk header", quote(line))))?;
        self.at += 1;
        let (mut old_left, mut new_left) = (old_count, new_count);
        let (mut old_no, mut new_no) = (old_start, new_start);
        let mut lines = Vec::new();
        while old_left > 0 || new_left > 0 {
            let Some(line) = self.peek() else {
                return Err(err(
                    no,
                    format!(
                        "the hunk ends early: {old_left} old and {new_left} new lines missing at \
                         the end of the patch"
                    ),
                ));
            };
            let here = Self::no(self.at);
            let (kind, text) = match line.as_bytes().first() {
                // An empty line is an empty context line whose space was stripped.
                None => (LineKind::Context, ""),
                Some(b' ') => (LineKind::Context, &line[1..]),
                Some(b'+') => (LineKind::Added, &line[1..]),
                Some(b'-') => (LineKind::Removed, &line[1..]),
                Some(_) => {
                    return Err(err(
                        here,
                        format!(
                            "{} is not a hunk line, but the hunk at line {no} still needs \
                             {old_left} old and {new_left} new lines",
                            quote(line)
                        ),
                    ))
                }
            };
            let fits = match kind {
                LineKind::Context => old_left > 0 && new_left > 0,
                LineKind::Added => new_left > 0,
                LineKind::Removed => old_left > 0,
            };
            if !fits {
                return Err(err(
                    here,
                    format!(
                        "{} is one line more than the hunk at line {no} counts",
                        quote(line)
                    ),
                ));
            }
            let (o, n) = match kind {
                LineKind::Context => {
                    old_left -= 1;
                    new_left -= 1;
                    (Some(old_no), Some(new_no))
                }
                LineKind::Added => {
                    new_left -= 1;
                    (None, Some(new_no))
                }
                LineKind::Removed => {
                    old_left -= 1;
                    (Some(old_no), None)
                }
            };
            if o.is_some() {
                old_no = old_no.saturating_add(1);
            }
            if n.is_some() {
                new_no = new_no.saturating_add(1);
            }
            self.at += 1;
            let no_newline = self.no_newline_marker(kind, old_left, new_left, here)?;
            lines.push(HunkLine {
                kind,
                text: text.to_owned(),
                old_line: o,
                new_line: n,
                patch_line: here,
                no_newline,
            });
        }
        Ok(Hunk {
            old_start,
            old_count,
            new_start,
            new_count,
            lines,
        })
    }

    /// Reads the `\ No newline at end of file` marker after a hunk line, if there is one.
    /// `git apply` takes it to strip the newline of the line before it, whatever that line is:
    /// before a line that is not the last of its side of the hunk it would join two lines into
    /// one that the hunk never shows. Such a marker is refused; one at the end of a side says
    /// the line ends its file (checked against the file when the patch is replayed).
    fn no_newline_marker(
        &mut self,
        kind: LineKind,
        old_left: u32,
        new_left: u32,
        line: usize,
    ) -> Result<bool, DiffError> {
        let Some(marker) = self.peek().filter(|l| l.starts_with('\\')) else {
            return Ok(false);
        };
        let no = Self::no(self.at);
        // git's own test: "\ " and at least 12 characters (the text is translated).
        if !marker.starts_with("\\ ") || marker.len() < 12 {
            return Err(err(
                no,
                format!(
                    "{} is not a `\\ No newline at end of file` line",
                    quote(marker)
                ),
            ));
        }
        let last = match kind {
            LineKind::Context => old_left == 0 && new_left == 0,
            LineKind::Removed => old_left == 0,
            LineKind::Added => new_left == 0,
        };
        if !last {
            return Err(err(
                no,
                format!(
                    "a `\\ No newline at end of file` marker after line {line}, which is not the \
                     last line of its side of the hunk: git apply would join it with the line \
                     after it, which the diff does not show"
                ),
            ));
        }
        self.at += 1;
        Ok(true)
    }

    /// Reads the base85 blocks of a `GIT binary patch` (forward, then usually reverse) of
    /// the file `name`, refusing a block that would inflate past [`MAX_BINARY_BYTES`] or the
    /// patch's binary blocks past [`MAX_BINARY_PATCH_BYTES`] before git inflates them.
    fn binary_patch(&mut self, name: &str) -> Result<(), DiffError> {
        let mut blocks = 0;
        while let Some(line) = self.peek() {
            let no = Self::no(self.at);
            let block = match line.split_once(' ') {
                Some(("literal", size)) => Some((false, size)),
                Some(("delta", size)) => Some((true, size)),
                _ => None,
            };
            let (delta, size) = match block {
                Some((delta, size))
                    if size.bytes().all(|b| b.is_ascii_digit()) && !size.is_empty() =>
                {
                    // Digits too many for a u64 are too many bytes, too.
                    (delta, size.parse::<u64>().unwrap_or(u64::MAX))
                }
                _ if blocks > 0 => break,
                _ => {
                    return Err(err(
                        no,
                        format!("{} is not `literal N` or `delta N`", quote(line)),
                    ))
                }
            };
            self.at += 1;
            blocks += 1;
            let mut data = Vec::new();
            while let Some(text) = self.peek() {
                if text.is_empty() {
                    self.at += 1;
                    break;
                }
                base85_line(text, &mut data).map_err(|why| {
                    err(
                        Self::no(self.at),
                        format!(
                            "{} is not base85 data of a binary patch: {why}",
                            quote(text)
                        ),
                    )
                })?;
                self.at += 1;
            }
            let mut inflated = size;
            if delta && size <= MAX_BINARY_BYTES {
                let result = delta_result_size(&data).ok_or_else(|| {
                    err(
                        no,
                        format!("the binary delta of {name} does not start with its sizes"),
                    )
                })?;
                if result > MAX_BINARY_BYTES {
                    return Err(err(
                        no,
                        format!(
                            "the binary delta of {name} makes a file of {result} bytes; at most \
                             {MAX_BINARY_BYTES} are accepted"
                        ),
                    ));
                }
                inflated = inflated.saturating_add(result);
            }
            if size > MAX_BINARY_BYTES {
                return Err(err(
                    no,
                    format!(
                        "the binary patch of {name} inflates to {size} bytes; at most \
                         {MAX_BINARY_BYTES} are accepted"
                    ),
                ));
            }
            self.binary_bytes = self.binary_bytes.saturating_add(inflated);
            if self.binary_bytes > MAX_BINARY_PATCH_BYTES {
                return Err(err(
                    no,
                    format!(
                        "the binary patches up to {name} inflate to {} bytes; at most \
                         {MAX_BINARY_PATCH_BYTES} are accepted in one patch",
                        self.binary_bytes
                    ),
                ));
            }
        }
        if blocks == 0 {
            return Err(err(Self::no(self.at), "a binary patch without data"));
        }
        Ok(())
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
fn is_mbox_from(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("From ") else {
        return false;
    };
    let id = rest.split(' ').next().unwrap_or_default();
    (id.len() == 40 || id.len() == 64)
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && rest.ends_with(" Mon Sep 17 00:00:00 2001")
}

/// git's base85 alphabet, in value order.
const BASE85: &[u8; 85] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";

/// Decodes one line of a `GIT binary patch` onto `out`: a length letter (`A`-`Z` for 1-26
/// bytes, `a`-`z` for 27-52), then five base85 characters for each four bytes. Written here
/// because the framing is git's own (no base85 crate reads the length letter), and it is a
/// dozen lines.
fn base85_line(line: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let bytes = line.as_bytes();
    let len = match bytes[0] {
        c @ b'A'..=b'Z' => usize::from(c - b'A') + 1,
        c @ b'a'..=b'z' => usize::from(c - b'a') + 27,
        _ => return Err("the first character is not a length letter".to_owned()),
    };
    let data = &bytes[1..];
    if data.len() != len.div_ceil(4) * 5 {
        return Err(format!(
            "{} characters for {len} bytes, which take {}",
            data.len(),
            len.div_ceil(4) * 5
        ));
    }
    let start = out.len();
    for group in data.chunks(5) {
        let mut value: u64 = 0;
        for &c in group {
            let digit = BASE85
                .iter()
                .position(|&b| b == c)
                .ok_or_else(|| format!("{:?} is not a base85 character", char::from(c)))?;
            value = value * 85 + digit as u64;
        }
        let value = u32::try_from(value).map_err(|_| "a group is out of range".to_owned())?;
        out.extend_from_slice(&value.to_be_bytes());
    }
    out.truncate(start + len);
    Ok(())
}

/// The size of the file a git delta makes: its second header field, read from the first
/// bytes of the zlib stream (each field little-endian base 128: the base's size, then the
/// result's). Only those bytes are inflated. `None` when the stream does not start so.
fn delta_result_size(deflated: &[u8]) -> Option<u64> {
    /// Two fields of at most 10 bytes each.
    const HEADER_BYTES: usize = 20;
    use miniz_oxide::inflate::{decompress_to_vec_zlib_with_limit, TINFLStatus};
    let head = match decompress_to_vec_zlib_with_limit(deflated, HEADER_BYTES) {
        Ok(all) => all,
        // Stopped at the limit: what came out is the stream's start. On any other error the
        // buffer holds filler, not data.
        Err(e) if e.status == TINFLStatus::HasMoreOutput => e.output,
        Err(_) => return None,
    };
    let mut fields = [0u64; 2];
    let mut at = 0;
    for field in &mut fields {
        let mut shift = 0;
        loop {
            let byte = *head.get(at)?;
            at += 1;
            *field |= u64::from(byte & 0x7f).checked_shl(shift)?;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
            if shift >= 64 {
                return None;
            }
        }
    }
    Some(fields[1])
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

/// A `rename from`/`copy to` argument: a path, possibly C-quoted, without prefix.
fn path_arg(no: usize, text: &str) -> Result<String, DiffError> {
    let path = if text.starts_with('"') {
        let (path, rest) = unquote(text).map_err(|p| err(no, p))?;
        if !rest.is_empty() {
            return Err(err(
                no,
                format!("text after the quoted path: {}", quote(rest)),
            ));
        }
        path
    } else {
        text.to_owned()
    };
    check_path(&path).map_err(|p| err(no, format!("path {path:?} {p}")))?;
    Ok(path)
}

/// The path of a `---`/`+++` line: `None` for /dev/null, else the path after `prefix`.
fn side_path(no: usize, text: &str, prefix: &str) -> Result<Option<String>, DiffError> {
    if text == "/dev/null" {
        return Ok(None);
    }
    let full = if text.starts_with('"') {
        let (path, rest) = unquote(text).map_err(|p| err(no, p))?;
        if !rest.is_empty() && rest != "\t" {
            return Err(err(
                no,
                format!("text after the quoted path: {}", quote(rest)),
            ));
        }
        path
    } else {
        // git ends the name with a tab when it contains a space.
        text.strip_suffix('\t').unwrap_or(text).to_owned()
    };
    let Some(path) = full.strip_prefix(prefix) else {
        return Err(err(
            no,
            format!(
                "{} does not start with {prefix:?} (send the patch with git's default prefixes)",
                quote(&full)
            ),
        ));
    };
    check_path(path).map_err(|p| err(no, format!("path {path:?} {p}")))?;
    Ok(Some(path.to_owned()))
}

/// The two names of `diff --git a/X b/Y`, when they can be told apart (with unquoted names that
/// contain " b/", only when both are the same); `Ok(None)` when ambiguous.
fn header_names(rest: &str) -> Result<Option<(String, String)>, String> {
    let strip = |side: String, prefix: &str| -> Result<String, String> {
        side.strip_prefix(prefix)
            .map(str::to_owned)
            .ok_or_else(|| {
                format!("{side:?} does not start with {prefix:?} (send the patch with git's default prefixes)")
            })
    };
    if rest.starts_with('"') {
        let (a, tail) = unquote(rest)?;
        let b = tail
            .strip_prefix(' ')
            .ok_or_else(|| "expected a space after the first name".to_owned())?;
        let b = if b.starts_with('"') {
            let (b, tail) = unquote(b)?;
            if !tail.is_empty() {
                return Err(format!("text after the second name: {}", quote(tail)));
            }
            b
        } else {
            b.to_owned()
        };
        return Ok(Some((strip(a, "a/")?, strip(b, "b/")?)));
    }
    if let Some(at) = rest.find(" \"") {
        let (b, tail) = unquote(&rest[at + 1..])?;
        if !tail.is_empty() {
            return Err(format!("text after the second name: {}", quote(tail)));
        }
        return Ok(Some((strip(rest[..at].to_owned(), "a/")?, strip(b, "b/")?)));
    }
    if !rest.starts_with("a/") {
        return Err(format!(
            "{} does not start with \"a/\" (send the patch with git's default prefixes)",
            quote(rest)
        ));
    }
    let splits: Vec<usize> = rest.match_indices(" b/").map(|(i, _)| i).collect();
    match splits.as_slice() {
        [] => Err(format!("no \" b/\" name in {}", quote(rest))),
        [one] => Ok(Some((rest[2..*one].to_owned(), rest[one + 3..].to_owned()))),
        many => {
            // Only the same name on both sides can be told apart.
            for &i in many {
                if rest[2..i] == rest[i + 3..] {
                    return Ok(Some((rest[2..i].to_owned(), rest[i + 3..].to_owned())));
                }
            }
            Ok(None)
        }
    }
}

/// Reads a C-quoted string as git writes it; returns it and the text after the closing quote.
fn unquote(text: &str) -> Result<(String, &str), String> {
    let body = text
        .strip_prefix('"')
        .ok_or_else(|| "expected a quoted name".to_owned())?;
    let bytes = body.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let s = String::from_utf8(out)
                    .map_err(|_| "a quoted name that is not UTF-8".to_owned())?;
                return Ok((s, &body[i + 1..]));
            }
            b'\\' => {
                let c = *bytes
                    .get(i + 1)
                    .ok_or("a quoted name ends in a backslash")?;
                i += 2;
                out.push(match c {
                    b'a' => 7,
                    b'b' => 8,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'v' => 11,
                    b'f' => 12,
                    b'r' => b'\r',
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'0'..=b'3' => {
                        let digits = bytes.get(i..i + 2).ok_or("a short octal escape")?;
                        if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                            return Err("a bad octal escape in a quoted name".to_owned());
                        }
                        i += 2;
                        (c - b'0') * 64 + (digits[0] - b'0') * 8 + (digits[1] - b'0')
                    }
                    other => {
                        return Err(format!(
                            "an unknown escape \\{} in a quoted name",
                            char::from(other)
                        ))
                    }
                });
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Err("a quoted name without its closing quote".to_owned())
}

/// How git writes a name in a header: as is, or C-quoted when it has special characters.
fn git_quote(name: &str) -> String {
    let special = name
        .bytes()
        .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b));
    if !special {
        return name.to_owned();
    }
    let mut out = String::from("\"");
    for b in name.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03o}")),
        }
    }
    out.push('"');
    out
}

/// Rejects a header with NUL or control characters (git quotes names that have them).
fn check_chars(no: usize, text: &str) -> Result<(), DiffError> {
    if text.chars().any(char::is_control) {
        return Err(err(
            no,
            format!("{} contains a control character", quote(text)),
        ));
    }
    Ok(())
}

/// Why a repository path is not acceptable, if it is not.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("is empty".to_owned());
    }
    if path.starts_with('/') {
        return Err("is absolute".to_owned());
    }
    if path.chars().any(char::is_control) {
        return Err("contains a NUL or control character".to_owned());
    }
    if path.contains('\\') {
        return Err("contains a backslash".to_owned());
    }
    for part in path.split('/') {
        match part {
            "" => return Err("has an empty component (`//` or a trailing `/`)".to_owned()),
            "." => return Err("has a `.` component".to_owned()),
            ".." => return Err("has a `..` component".to_owned()),
            _ if part.eq_ignore_ascii_case(".git") => {
                return Err("has a `.git` component".to_owned())
            }
            _ => {}
        }
    }
    Ok(())
}

/// `@@ -a[,b] +c[,d] @@[ section]`.
fn parse_hunk_header(line: &str) -> Option<(u32, u32, u32, u32)> {
    let rest = line.strip_prefix("@@ -")?;
    let (ranges, _) = rest.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let range = |s: &str| -> Option<(u32, u32)> {
        let num = |t: &str| -> Option<u32> {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        };
        match s.split_once(',') {
            Some((start, count)) => Some((num(start)?, num(count)?)),
            None => Some((num(s)?, 1)),
        }
    };
    let (a, b) = range(old)?;
    let (c, d) = range(new)?;
    Some((a, b, c, d))
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

#[cfg(test)]
mod tests {
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

    fn one(path: &str, body: &str) -> String {
        format!("diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n--- a/{path}\n+++ b/{path}\n{body}")
    }

    fn error(patch: &str) -> DiffError {
        parse(patch).expect_err("the patch must be refused")
    }

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
    fn line_numbers_follow_the_hunk() {
        let d = parse(&one(
            "src/a.rs",
            "@@ -10,4 +10,4 @@ fn main() {\n ctx\n-old\n+new\n+more\n \n-gone\n",
        ))
        .unwrap();
        let lines: Vec<_> = d.files[0].hunks[0]
            .lines
            .iter()
            .map(|l| (l.kind, l.old_line, l.new_line, l.patch_line))
            .collect();
        assert_eq!(
            lines,
            [
                (LineKind::Context, Some(10), Some(10), 6),
                (LineKind::Removed, Some(11), None, 7),
                (LineKind::Added, None, Some(11), 8),
                (LineKind::Added, None, Some(12), 9),
                (LineKind::Context, Some(12), Some(13), 10),
                (LineKind::Removed, Some(13), None, 11),
            ]
        );
    }

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
    fn refuses_paths_that_escape_or_hide() {
        let cases = [
            ("../etc/passwd", "`..` component"),
            ("src/../migrations/1.sql", "`..` component"),
            ("/etc/passwd", "is absolute"),
            ("src/.git/config", "`.git` component"),
            (".GIT/hooks/post-commit", "`.git` component"),
            ("src//a.rs", "empty component"),
            ("src/./a.rs", "`.` component"),
            ("src\\..\\x", "backslash"),
        ];
        for (path, expected) in cases {
            let e = error(&one(path, "@@ -1 +1 @@\n-a\n+b\n"));
            assert!(e.to_string().contains(expected), "{path}: {e}");
            assert_eq!(e.line, 1, "{path}: {e}");
        }
        let e = error("diff --git /etc/passwd /etc/passwd\nold mode 100644\nnew mode 100755\n");
        assert!(e.to_string().contains("default prefixes"), "{e}");
        let e =
            error("diff --git \"a/src/x\\ty\" \"b/src/x\\ty\"\nold mode 100644\nnew mode 100755\n");
        assert!(e.to_string().contains("control character"), "{e}");
        let e = error("diff --git a/src/x\u{0}y b/src/x\u{0}y\nold mode 100644\nnew mode 100755\n");
        assert!(e.to_string().contains("control character"), "{e}");
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

    /// What `git diff --binary --full-index` wrote for a binary file changed in place (a
    /// delta each way), a new binary file and a text edit (git 2.47.3).
    const BINARY_DIFF: &str = "diff --git a/img.bin b/img.bin
index cd880f980997a372c2e74f3d5638b2787ce760d4..4fce37eb075b5a843b47b1cd71502a373005b1cd 100644
GIT binary patch
delta 21
ccmdlXzC(OM3YUSQk+F%XnYo4K#yl@>07!cV9smFU

delta 21
ccmdlXzC(OM3RhH&UXy@|7RPh;jd@<&08gO?%K!iX

diff --git a/new.bin b/new.bin
new file mode 100644
index 0000000000000000000000000000000000000000..4409b7475379908ba13fced50ac3a5e3073c673c
GIT binary patch
literal 32
PcmZQzWMXCj0UR^{0muLu

literal 0
HcmV?d00001

diff --git a/notes.txt b/notes.txt
index 4cb29ea38f70d7c61b2a3a25b02e3bdf44905402..ddc897f039f57aa91e16efa6dfde386c4255206f 100644
--- a/notes.txt
+++ b/notes.txt
@@ -1,3 +1,3 @@
 one
-two
+TWO
 three
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
    fn a_full_index_binary_diff_reads_as_git_wrote_it() {
        let d = parse(BINARY_DIFF).unwrap();
        let summary: Vec<(&str, FileStatus, bool)> = d
            .files
            .iter()
            .map(|f| (f.path(), f.status, f.binary))
            .collect();
        assert_eq!(
            summary,
            [
                ("img.bin", FileStatus::Modified, true),
                ("new.bin", FileStatus::Added, true),
                ("notes.txt", FileStatus::Modified, false),
            ]
        );
    }

    /// `data` as the lines of one block of a `GIT binary patch`, as git writes them.
    fn base85_lines(data: &[u8]) -> String {
        let mut out = String::new();
        for chunk in data.chunks(52) {
            let len = chunk.len() as u8;
            out.push(char::from(if len <= 26 {
                b'A' + len - 1
            } else {
                b'a' + len - 27
            }));
            for group in chunk.chunks(4) {
                let mut word = [0u8; 4];
                word[..group.len()].copy_from_slice(group);
                let mut value = u32::from_be_bytes(word);
                let mut digits = [0u8; 5];
                for d in digits.iter_mut().rev() {
                    *d = BASE85[(value % 85) as usize];
                    value /= 85;
                }
                out.push_str(std::str::from_utf8(&digits).unwrap());
            }
            out.push('\n');
        }
        out
    }

    /// A new file `path` sent as a binary literal of `contents`.
    fn binary_literal(path: &str, contents: &[u8]) -> String {
        let deflated = miniz_oxide::deflate::compress_to_vec_zlib(contents, 9);
        format!(
            "diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0000000000000000000000000000000000000000..1111111111111111111111111111111111111111\nGIT binary patch\nliteral {}\n{}\nliteral 0\nHcmV?d00001\n\n",
            contents.len(),
            base85_lines(&deflated)
        )
    }

    #[test]
    fn base85_and_delta_headers_read_as_git_wrote_them() {
        let mut out = Vec::new();
        base85_line("JcmZQz1ONa700IC2", &mut out).unwrap();
        assert_eq!(out.len(), 10);
        // The first delta of BINARY_DIFF: a 3000-byte file made from a 3000-byte one.
        let mut delta = Vec::new();
        base85_line("ccmdlXzC(OM3YUSQk+F%XnYo4K#yl@>07!cV9smFU", &mut delta).unwrap();
        assert_eq!(delta_result_size(&delta), Some(3000));
        let data = [7u8; 61];
        let mut round = Vec::new();
        for line in base85_lines(&data).lines() {
            base85_line(line, &mut round).unwrap();
        }
        assert_eq!(round, data);
        assert!(base85_line("Jcm", &mut Vec::new())
            .unwrap_err()
            .contains("take 15"));
        assert!(base85_line("A\"\"\"\"\"", &mut Vec::new())
            .unwrap_err()
            .contains("not a base85 character"));
        assert_eq!(delta_result_size(b"not zlib"), None);
    }

    #[test]
    fn a_binary_patch_that_inflates_past_the_limit_is_refused_before_git_runs() {
        // The zip bomb: 17 MiB of zeros deflate to a few kilobytes.
        let big = vec![0u8; MAX_BINARY_BYTES as usize + 1];
        let patch = binary_literal("assets/zeros.bin", &big);
        assert!(patch.len() < 64 * 1024, "{} bytes", patch.len());
        let e = error(&patch);
        assert_eq!(e.line, 5, "{e}");
        assert!(
            e.to_string().contains(&format!(
                "the binary patch of assets/zeros.bin inflates to {} bytes; at most {MAX_BINARY_BYTES}",
                MAX_BINARY_BYTES + 1
            )),
            "{e}"
        );
        // A block at the limit is read, and three of them are too many for one patch.
        let at_limit = vec![0u8; MAX_BINARY_BYTES as usize];
        assert!(parse(&binary_literal("a.bin", &at_limit)).is_ok());
        let three: String = ["a.bin", "b.bin", "c.bin"]
            .iter()
            .map(|p| binary_literal(p, &at_limit))
            .collect();
        let e = error(&three);
        assert!(
            e.to_string()
                .contains("the binary patches up to c.bin inflate"),
            "{e}"
        );
        // A size no u64 holds is too big, not a panic.
        let e = error(&patch.replace(
            &format!("literal {}", big.len()),
            "literal 99999999999999999999999",
        ));
        assert!(
            e.to_string()
                .contains("inflates to 18446744073709551615 bytes"),
            "{e}"
        );
    }

    #[test]
    fn a_delta_that_makes_a_file_past_the_limit_is_refused() {
        // A delta's own size is small; the file it makes is in its header: base size, then
        // result size, each little-endian base 128, then its copy and insert commands.
        let mut header = Vec::new();
        for mut n in [3000u64, MAX_BINARY_BYTES * 64] {
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    header.push(byte);
                    break;
                }
                header.push(byte | 0x80);
            }
        }
        let deflated = miniz_oxide::deflate::compress_to_vec_zlib(&header, 9);
        let patch = format!(
            "diff --git a/img.bin b/img.bin\nindex cd880f980997a372c2e74f3d5638b2787ce760d4..4fce37eb075b5a843b47b1cd71502a373005b1cd 100644\nGIT binary patch\ndelta {}\n{}\n",
            header.len(),
            base85_lines(&deflated)
        );
        let e = error(&patch);
        assert_eq!(e.line, 4, "{e}");
        assert!(
            e.to_string().contains(&format!(
                "the binary delta of img.bin makes a file of {} bytes",
                MAX_BINARY_BYTES * 64
            )),
            "{e}"
        );
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

    #[test]
    fn refuses_hunks_that_do_not_add_up() {
        let e = error(&one("src/a", "@@ -1,2 +1,2 @@\n-a\n+b\n"));
        assert!(e.to_string().contains("ends early"), "{e}");
        let e = error(&one("src/a", "@@ -1 +1 @@\n-a\n-b\n+c\n"));
        assert_eq!(e.line, 7);
        assert!(e.to_string().contains("one line more than the hunk"), "{e}");
        let e = error(&one("src/a", "@@ -1 +1 @@\n-a\n*b\n"));
        assert!(e.to_string().contains("is not a hunk line"), "{e}");
        let e = error(&one("src/a", "@@ -x +1 @@\n-a\n+b\n"));
        assert!(e.to_string().contains("is not a hunk header"), "{e}");
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
