//! What a proposal really changes, as git applied it in a scratch index of guardian's own clone:
//! the base tree, the resulting tree, and for every path that differs its mode and whole
//! contents before and after. The gate judges this, never the patch text alone; the patch is
//! only what the approver reads, so [`check_agreement`] replays it here, line by line, the way
//! it reads, and refuses it when git's result is not exactly that.
//!
//! Pure: `git::Repo::scratch_apply` fills a [`TreeChange`]; the tests build one by hand with
//! [`replay`].

use std::collections::BTreeMap;

use super::diff::{Diff, FileDiff, FileStatus, LineKind, SYMLINK_MODE};

/// A file as a tree holds it: its mode, object id and contents (a symlink's contents are its
/// target).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub mode: u32,
    pub id: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn is_symlink(&self) -> bool {
        self.mode == SYMLINK_MODE
    }

    /// The contents as text, when they are text: UTF-8 without NUL (what the content rules
    /// and a person can read; git calls a file with a NUL in it binary, too).
    pub fn text(&self) -> Option<&str> {
        if self.bytes.contains(&0) {
            return None;
        }
        std::str::from_utf8(&self.bytes).ok()
    }
}

/// One path whose entry differs between the base tree and the result (a rename is the old path
/// gone and the new one added).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    pub old: Option<Blob>,
    pub new: Option<Blob>,
}

/// The change as git made it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeChange {
    /// The base commit's tree and the tree the proposal makes of it: what is judged, and what
    /// is deployed.
    pub base_tree: String,
    pub tree: String,
    /// Every path that differs, sorted.
    pub files: Vec<FileChange>,
    /// The base's entry of every path the patch names (changed or not: a copy's source, a
    /// file changed and changed back), to replay the patch on.
    pub base_files: BTreeMap<String, Blob>,
    /// Every symlink of the base tree and of the result, with its target.
    pub links_before: BTreeMap<String, String>,
    pub links_after: BTreeMap<String, String>,
    /// git's own diff of the base tree against the result, parsed: one section per file with
    /// its whole change, however the patch split it into hunks or commits.
    pub canonical: Diff,
}

impl TreeChange {
    /// Every path that differs, old and new side alike.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|f| f.path.as_str())
    }
}

/// A file as the replay of a patch leaves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayed {
    pub mode: u32,
    /// `None` for a binary patch: its contents are not readable here, and only git's count.
    pub bytes: Option<Vec<u8>>,
}

/// Applies `diff` the way it reads to files as `base` gives them (mode and bytes by path):
/// every hunk exactly where its header says, every removed and context line exactly as the
/// file has it, sections in order (a series is applied commit after commit). Returns every
/// path the patch names and what it becomes (`None`: deleted). Refuses what `git apply` would
/// also refuse (a path through a symlink, adding a file that exists) and what it would do
/// differently than the diff shows.
pub fn replay(
    diff: &Diff,
    base: impl Fn(&str) -> Option<(u32, Vec<u8>)>,
) -> Result<BTreeMap<String, Option<Replayed>>, String> {
    let mut state: BTreeMap<String, Option<Replayed>> = BTreeMap::new();
    let current = |state: &BTreeMap<String, Option<Replayed>>, path: &str| -> Option<Replayed> {
        match state.get(path) {
            Some(s) => s.clone(),
            None => base(path).map(|(mode, bytes)| Replayed {
                mode,
                bytes: Some(bytes),
            }),
        }
    };
    for f in &diff.files {
        let at = format!("patch line {}", f.patch_line);
        let old_path = f.old_path.as_deref();
        let new_path = f.new_path.as_deref();
        let old = match old_path {
            Some(p) => Some(current(&state, p).ok_or_else(|| {
                format!("{at}: {p} does not exist at the base, but the patch changes it")
            })?),
            None => None,
        };
        if let Some(p) = new_path {
            let exists = current(&state, p).is_some();
            let creates = old_path != Some(p);
            if creates && exists {
                return Err(format!(
                    "{at}: {p} already exists at the base, but the patch creates it"
                ));
            }
        }
        for p in f.paths() {
            if let Some(link) = through_link(p, |q| current(&state, q)) {
                return Err(format!(
                    "{at}: {p} goes through the symlink {link}; git writes no path through a \
                     symlink"
                ));
            }
        }
        let bytes = if f.binary {
            None
        } else {
            let before: &[u8] = match &old {
                Some(Replayed { bytes: Some(b), .. }) => b,
                Some(Replayed { bytes: None, .. }) => {
                    return Err(format!(
                        "{at}: {} was changed by a binary patch earlier in the series and \
                         cannot be read as text",
                        f.path()
                    ))
                }
                None => &[],
            };
            Some(apply_hunks(f, before).map_err(|e| format!("{at}: {e}"))?)
        };
        let mode = match (f.new_mode, &old) {
            (Some(m), _) => m,
            (None, Some(o)) => o.mode,
            (None, None) => return Err(format!("{at}: {} has no mode", f.path())),
        };
        if f.status == FileStatus::Renamed {
            if let Some(p) = old_path {
                state.insert(p.to_owned(), None);
            }
        }
        match new_path {
            Some(p) => {
                state.insert(p.to_owned(), Some(Replayed { mode, bytes }));
            }
            None => {
                if bytes.as_ref().is_some_and(|b| !b.is_empty()) {
                    return Err(format!(
                        "{at}: the patch deletes {} but leaves lines of it",
                        f.path()
                    ));
                }
                if let Some(p) = old_path {
                    state.insert(p.to_owned(), None);
                }
            }
        }
    }
    Ok(state)
}

/// The symlink at or above `path` (not `path` itself) in the current state, if any.
fn through_link(path: &str, current: impl Fn(&str) -> Option<Replayed>) -> Option<String> {
    let mut prefix = String::new();
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        if current(&prefix).is_some_and(|r| r.mode == SYMLINK_MODE) {
            return Some(prefix);
        }
    }
    None
}

/// A file's lines, each with whether a newline ends it.
fn split_lines(bytes: &[u8]) -> Vec<(&[u8], bool)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        match rest.iter().position(|b| *b == b'\n') {
            Some(i) => {
                out.push((&rest[..i], true));
                rest = &rest[i + 1..];
            }
            None => {
                out.push((rest, false));
                rest = &[];
            }
        }
    }
    out
}

fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().take(60).collect();
    if text.chars().count() > 60 {
        out.push_str("...");
    }
    format!("{out:?}")
}

/// One file section's hunks applied to `before`, strictly.
fn apply_hunks(f: &FileDiff, before: &[u8]) -> Result<Vec<u8>, String> {
    let path = f.path();
    let old = split_lines(before);
    let mut out: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut cursor = 0usize;
    for h in &f.hunks {
        let start = if h.old_count == 0 {
            h.old_start as usize
        } else {
            (h.old_start as usize).saturating_sub(1)
        };
        if start < cursor || start > old.len() {
            return Err(format!(
                "the hunk at patch line {} starts at line {} of {path}, which is out of order, \
                 overlaps the hunk before it or is past the end of the file ({} lines)",
                h.lines
                    .first()
                    .map_or(0, |l| l.patch_line.saturating_sub(1)),
                h.old_start,
                old.len()
            ));
        }
        out.extend(old[cursor..start].iter().map(|(t, n)| (t.to_vec(), *n)));
        let mut i = start;
        for l in &h.lines {
            if l.kind != LineKind::Added {
                let Some((text, newline)) = old.get(i) else {
                    return Err(format!(
                        "patch line {} expects line {} of {path}, which has only {} lines",
                        l.patch_line,
                        i + 1,
                        old.len()
                    ));
                };
                if *text != l.text.as_bytes() || *newline == l.no_newline {
                    return Err(format!(
                        "patch line {} expects line {} of {path} to read {}{}, but it reads {}{}",
                        l.patch_line,
                        i + 1,
                        show(l.text.as_bytes()),
                        if l.no_newline { " (no newline)" } else { "" },
                        show(text),
                        if *newline { "" } else { " (no newline)" }
                    ));
                }
                i += 1;
            }
            if l.kind != LineKind::Removed {
                out.push((l.text.as_bytes().to_vec(), !l.no_newline));
            }
        }
        cursor = i;
    }
    out.extend(old[cursor..].iter().map(|(t, n)| (t.to_vec(), *n)));
    if let Some(pos) = out[..out.len().saturating_sub(1)]
        .iter()
        .position(|(_, newline)| !newline)
    {
        return Err(format!(
            "line {} of the new {path} has no newline but is not its last line: git apply \
             joins it with the line after it, which the diff does not show",
            pos + 1
        ));
    }
    let mut bytes = Vec::with_capacity(before.len());
    for (text, newline) in out {
        bytes.extend_from_slice(&text);
        if newline {
            bytes.push(b'\n');
        }
    }
    Ok(bytes)
}

/// Refuses a patch whose reading is not what git applied: every path it names must end as the
/// replay says (present or not, mode, and bytes for text), and git must change no path it
/// does not name. The message names the path and the first line that differs.
pub fn check_agreement(diff: &Diff, tree: &TreeChange) -> Result<(), String> {
    let replayed = replay(diff, |p| {
        tree.base_files.get(p).map(|b| (b.mode, b.bytes.clone()))
    })?;
    let changed: BTreeMap<&str, &FileChange> =
        tree.files.iter().map(|f| (f.path.as_str(), f)).collect();
    for f in &tree.files {
        if !replayed.contains_key(&f.path) {
            return Err(format!(
                "git changes {}, which the patch does not name",
                f.path
            ));
        }
    }
    for (path, mine) in &replayed {
        let git: Option<&Blob> = match changed.get(path.as_str()) {
            Some(c) => c.new.as_ref(),
            None => tree.base_files.get(path),
        };
        match (mine, git) {
            (None, None) => {}
            (Some(_), None) => {
                return Err(format!(
                    "the patch leaves {path} in place, but git's result has no such file"
                ))
            }
            (None, Some(_)) => {
                return Err(format!(
                    "the patch deletes {path}, but git's result still has it"
                ))
            }
            (Some(m), Some(g)) => {
                if m.mode != g.mode {
                    return Err(format!(
                        "the patch gives {path} mode {:o}, but git gives it {:o}",
                        m.mode, g.mode
                    ));
                }
                if let Some(bytes) = &m.bytes {
                    if *bytes != g.bytes {
                        let line = first_difference(bytes, &g.bytes);
                        return Err(format!(
                            "git's {path} differs from what the patch shows from line {line} on"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The 1-based line where two contents first differ.
fn first_difference(a: &[u8], b: &[u8]) -> usize {
    let same = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    1 + a[..same].iter().filter(|c| **c == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::diff::parse;

    fn base<'a>(files: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<(u32, Vec<u8>)> + 'a {
        move |p| {
            files
                .iter()
                .find(|(q, _)| *q == p)
                .map(|(_, t)| (0o100644, t.as_bytes().to_vec()))
        }
    }

    fn text(r: &BTreeMap<String, Option<Replayed>>, p: &str) -> String {
        let bytes = r[p].as_ref().unwrap().bytes.clone().unwrap();
        String::from_utf8(bytes).unwrap()
    }

    const SETTINGS: &str = "TIMEOUT_MS=500\nREQUIRE_AUTH=1\n";

    #[test]
    fn a_patch_replays_to_what_it_shows() {
        let d = parse("diff --git a/s.env b/s.env\nindex 1111111..2222222 100644\n--- a/s.env\n+++ b/s.env\n@@ -1,2 +1,2 @@\n-TIMEOUT_MS=500\n+TIMEOUT_MS=5000\n REQUIRE_AUTH=1\n").unwrap();
        let r = replay(&d, base(&[("s.env", SETTINGS)])).unwrap();
        assert_eq!(text(&r, "s.env"), "TIMEOUT_MS=5000\nREQUIRE_AUTH=1\n");
    }

    #[test]
    fn a_missing_newline_at_the_end_is_kept_and_one_in_the_middle_refused() {
        let d = parse("diff --git a/s.env b/s.env\nindex 1111111..2222222 100644\n--- a/s.env\n+++ b/s.env\n@@ -2 +2 @@\n-REQUIRE_AUTH=1\n+REQUIRE_AUTH=2\n\\ No newline at end of file\n").unwrap();
        let r = replay(&d, base(&[("s.env", SETTINGS)])).unwrap();
        assert_eq!(text(&r, "s.env"), "TIMEOUT_MS=500\nREQUIRE_AUTH=2");
        // The marker on the last line of a hunk that is not the end of the file.
        let d = parse("diff --git a/s.env b/s.env\nindex 1111111..2222222 100644\n--- a/s.env\n+++ b/s.env\n@@ -1 +1 @@\n-TIMEOUT_MS=500\n+TIMEOUT_MS=5000\n\\ No newline at end of file\n").unwrap();
        let e = replay(&d, base(&[("s.env", SETTINGS)])).unwrap_err();
        assert!(e.contains("line 1 of the new s.env has no newline"), "{e}");
    }

    #[test]
    fn context_that_is_not_the_file_is_refused_naming_the_line() {
        let d = parse("diff --git a/s.env b/s.env\nindex 1111111..2222222 100644\n--- a/s.env\n+++ b/s.env\n@@ -1,2 +1,2 @@\n-TIMEOUT_MS=50\n+TIMEOUT_MS=5000\n REQUIRE_AUTH=1\n").unwrap();
        let e = replay(&d, base(&[("s.env", SETTINGS)])).unwrap_err();
        assert!(
            e.contains("expects line 1 of s.env to read \"TIMEOUT_MS=50\""),
            "{e}"
        );
    }

    #[test]
    fn a_series_applies_commit_after_commit() {
        let one = |from: &str, to: &str| {
            format!("diff --git a/c.toml b/c.toml\nindex 1111111..2222222 100644\n--- a/c.toml\n+++ b/c.toml\n@@ -1 +1 @@\n-timeout = {from}\n+timeout = {to}\n")
        };
        let d = parse(&format!(
            "{}{}",
            one("600", "60000"),
            one("60000", "6000000")
        ))
        .unwrap();
        let r = replay(&d, base(&[("c.toml", "timeout = 600\n")])).unwrap();
        assert_eq!(text(&r, "c.toml"), "timeout = 6000000\n");
    }

    #[test]
    fn renames_copies_and_paths_through_links() {
        let d = parse("diff --git a/a b/b\nsimilarity index 100%\nrename from a\nrename to b\ndiff --git a/b b/c\nsimilarity index 100%\ncopy from b\ncopy to c\n").unwrap();
        let r = replay(&d, base(&[("a", "x\n")])).unwrap();
        assert_eq!(r["a"], None);
        assert_eq!(text(&r, "b"), "x\n");
        assert_eq!(text(&r, "c"), "x\n");
        let d = parse("diff --git a/l/x b/l/x\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n+++ b/l/x\n@@ -0,0 +1 @@\n+y\n").unwrap();
        let link = |p: &str| (p == "l").then(|| (SYMLINK_MODE, b"../m".to_vec()));
        let e = replay(&d, link).unwrap_err();
        assert!(e.contains("goes through the symlink l"), "{e}");
    }
}
