//! A proposal applied where nothing is deployed: `git apply --cached` into a temporary index
//! of guardian's own clone, `git write-tree`, and what changed read back from git itself (the
//! trust gate judges that, `trust::TreeChange`). The work tree, the real index and the branch
//! are never touched, so this runs beside the daemon's other git work, outside its lock.
//!
//! Also here: the attributes guard. In-tree `.gitattributes` can make git merge with `union`,
//! convert line endings or run filters, so that a revert which must conflict commits instead,
//! or a checkout writes other bytes than the tree holds. Every operation that changes the
//! clone first makes sure `$GIT_DIR/info/attributes`, the file git ranks above every in-tree
//! one, ends with a line setting all of them back to unspecified (git's behaviour without
//! attributes).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::command::{clip, first_nonempty, Session, ERROR_OUTPUT_LIMIT};
use super::read::is_full_sha;
use super::{GitError, Repo};
use crate::trust::diff::{self, SYMLINK_MODE};
use crate::trust::{Blob, FileChange, TreeChange};

/// The most bytes of file contents one proposal is judged on (old and new versions of every
/// changed file, the symlinks' targets); a bigger change is refused, never half read.
pub const MAX_JUDGED_BYTES: u64 = 32 * 1024 * 1024;

/// The line guardian keeps at the end of `info/attributes`, and the comment that marks it.
const ATTRIBUTES_MARK: &str =
    "# guardian: in-tree attributes do not change how guardian's git merges, diffs or converts";
const ATTRIBUTES_LINE: &str = "* !merge !conflict-marker-size !diff !whitespace !text !eol !crlf !ident !filter !working-tree-encoding";

/// What applying a proposal in the scratch index gave.
#[derive(Debug)]
pub enum Scratch {
    /// git applied it; this is what changed.
    Applied(Box<TreeChange>),
    /// git refused it, or what it made cannot be judged; why.
    Refused(String),
}

/// A tree entry: mode and object id.
pub(super) type Entry = (u32, String);

/// One line of `git diff-tree --raw`: the path and its entry before and after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RawChange {
    pub path: String,
    pub old: Option<(u32, String)>,
    pub new: Option<(u32, String)>,
}

impl Repo {
    /// Applies `patch` to `base` in a scratch index and returns what git made of it: the
    /// resulting tree, every changed path with its whole old and new contents, the base's
    /// entries of the paths the patch `named`, every symlink of both trees, and git's own diff
    /// of the change. Nothing of the clone's work tree, index or refs changes.
    pub fn scratch_apply(
        &self,
        base: &str,
        patch: &str,
        named: &[String],
    ) -> Result<Scratch, GitError> {
        let mut s = Session::new(self);
        self.check_config(&mut s)?;
        s.neutral_attributes()?;
        if base.is_empty() || base.starts_with('-') || base.chars().any(char::is_control) {
            return Err(GitError::InvalidRequest(format!(
                "{base:?} is not a commit"
            )));
        }
        let commit = s.resolve(base)?;
        let base_tree = s.tree_of(&commit)?;
        let tree = match s.scratch_tree(&base_tree, patch)? {
            Ok(tree) => tree,
            Err(reason) => return Ok(Scratch::Refused(format!("git apply refuses it: {reason}"))),
        };
        let changes = s.changes(&base_tree, &tree)?;
        if let Some(c) = changes.iter().find(|c| {
            [&c.old, &c.new]
                .into_iter()
                .flatten()
                .any(|(m, _)| !matches!(*m, 0o100644 | 0o100755 | SYMLINK_MODE))
        }) {
            return Ok(Scratch::Refused(format!(
                "{} would become a submodule or another kind of entry than a file or symlink",
                c.path
            )));
        }
        let base_entries = s.entries(&base_tree, named)?;
        let links_before = s.symlink_ids(&base_tree)?;
        let links_after = s.symlink_ids(&tree)?;

        let mut wanted: BTreeSet<String> = BTreeSet::new();
        for c in &changes {
            wanted.extend(
                [&c.old, &c.new]
                    .into_iter()
                    .flatten()
                    .map(|(_, id)| id.clone()),
            );
        }
        wanted.extend(base_entries.values().map(|(_, id)| id.clone()));
        wanted.extend(links_before.values().cloned());
        wanted.extend(links_after.values().cloned());
        let blobs = match s.blobs(&wanted)? {
            Ok(b) => b,
            Err(reason) => return Ok(Scratch::Refused(reason)),
        };
        let blob = |(mode, id): &(u32, String)| Blob {
            mode: *mode,
            id: id.clone(),
            bytes: blobs.get(id).cloned().unwrap_or_default(),
        };
        let target = |id: &String| {
            String::from_utf8_lossy(blobs.get(id).map_or(&[][..], |b| b.as_slice())).into_owned()
        };
        let canonical_text = s.canonical_diff(&base_tree, &tree)?;
        let canonical = if changes.is_empty() {
            diff::Diff::default()
        } else {
            match diff::parse_bytes(&canonical_text) {
                Ok(d) => d,
                Err(e) => {
                    return Ok(Scratch::Refused(format!(
                        "git's own diff of the change cannot be judged: {e}"
                    )))
                }
            }
        };
        Ok(Scratch::Applied(Box::new(TreeChange {
            files: changes
                .iter()
                .map(|c| FileChange {
                    path: c.path.clone(),
                    old: c.old.as_ref().map(blob),
                    new: c.new.as_ref().map(blob),
                })
                .collect(),
            base_files: base_entries
                .iter()
                .map(|(p, e)| (p.clone(), blob(e)))
                .collect(),
            links_before: links_before
                .iter()
                .map(|(p, id)| (p.clone(), target(id)))
                .collect(),
            links_after: links_after
                .iter()
                .map(|(p, id)| (p.clone(), target(id)))
                .collect(),
            canonical,
            base_tree,
            tree,
        })))
    }
}

impl Session<'_> {
    /// Makes sure `$GIT_DIR/info/attributes` ends with guardian's line (written whole to a
    /// temporary file and renamed, so a reader never sees half of it).
    pub(super) fn neutral_attributes(&mut self) -> Result<(), GitError> {
        let args = ["rev-parse", "--git-path", "info/attributes"];
        let out = self.ok(args, None)?;
        let path = self.repo.path.join(out.trim_end_matches(['\n', '\r']));
        let io = |e: std::io::Error| {
            GitError::InvalidRequest(format!(
                "cannot write {} (guardian keeps in-tree attributes from changing its git \
                 there): {e}",
                path.display()
            ))
        };
        let current = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let wanted_tail = format!("{ATTRIBUTES_MARK}\n{ATTRIBUTES_LINE}\n");
        if current.ends_with(&wanted_tail) {
            return Ok(());
        }
        // The operator's own lines stay; guardian's come last, where they win.
        let mut kept: String = current
            .lines()
            .filter(|l| *l != ATTRIBUTES_MARK && *l != ATTRIBUTES_LINE)
            .map(|l| format!("{l}\n"))
            .collect();
        kept.push_str(&wanted_tail);
        let dir = path.parent().unwrap_or(&self.repo.path);
        std::fs::create_dir_all(dir).map_err(io)?;
        // A file of its own per writer (a deploy and a proposal may get here at once).
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        std::io::Write::write_all(&mut temp, kept.as_bytes()).map_err(io)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let readable = std::fs::Permissions::from_mode(0o644);
            temp.as_file().set_permissions(readable).map_err(io)?;
        }
        temp.persist(&path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// The tree of a commit.
    pub(super) fn tree_of(&mut self, commit: &str) -> Result<String, GitError> {
        let spec = format!("{commit}^{{tree}}");
        let args = ["rev-parse", "--verify", "--end-of-options", spec.as_str()];
        let out = self.ok(args, None)?;
        let tree = out.trim();
        if is_full_sha(tree) {
            Ok(tree.to_owned())
        } else {
            Err(self.unexpected(args, format!("not a tree id: {:?}", clip(tree, 100))))
        }
    }

    /// `patch` applied to `tree` in a temporary index, and the tree written from it; `Err`
    /// with git's words when it does not apply.
    pub(super) fn scratch_tree(
        &mut self,
        tree: &str,
        patch: &str,
    ) -> Result<Result<String, String>, GitError> {
        let dir = tempfile::tempdir().map_err(|e| GitError::Spawn {
            cmd: "a scratch index".to_owned(),
            path: self.repo.path.clone(),
            source: e,
        })?;
        self.index = Some(dir.path().join("index"));
        let result = self.scratch_steps(tree, patch);
        self.index = None;
        result
    }

    fn scratch_steps(
        &mut self,
        tree: &str,
        patch: &str,
    ) -> Result<Result<String, String>, GitError> {
        self.ok(["read-tree", tree], None)?;
        let apply = ["apply", "--cached", "--whitespace=nowarn", "-"];
        let raw = self.run(
            apply,
            Some(patch.as_bytes().to_vec()),
            self.repo.command_timeout,
        )?;
        if !raw.success() {
            return Ok(Err(clip(
                first_nonempty(&raw.stderr, &raw.stdout),
                ERROR_OUTPUT_LIMIT,
            )));
        }
        let out = self.ok(["write-tree"], None)?;
        let written = out.trim();
        if !is_full_sha(written) {
            return Err(self.unexpected(["write-tree"], format!("not a tree id: {written:?}")));
        }
        Ok(Ok(written.to_owned()))
    }

    /// Every path whose entry differs between two trees (no rename detection: a rename is a
    /// deletion and an addition), sorted by path.
    pub(super) fn changes(&mut self, from: &str, to: &str) -> Result<Vec<RawChange>, GitError> {
        let args = [
            "diff-tree",
            "-r",
            "-z",
            "--no-renames",
            "--raw",
            "--full-index",
            from,
            to,
        ];
        let raw = self.run(args, None, self.repo.command_timeout)?;
        if !raw.success() || raw.truncated {
            return Err(self.failed(args, &raw));
        }
        let text = &raw.stdout;
        let mut fields = text.split('\0');
        let mut out = Vec::new();
        while let Some(meta) = fields.next() {
            if meta.is_empty() {
                continue;
            }
            let Some(path) = fields.next() else {
                return Err(self.unexpected(args, format!("no path after {meta:?}")));
            };
            let parts: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
            let [m1, m2, o1, o2, _status] = parts[..] else {
                return Err(self.unexpected(args, format!("not a raw diff line: {meta:?}")));
            };
            let entry = |mode: &str, id: &str| -> Option<(u32, String)> {
                let mode = u32::from_str_radix(mode, 8).ok()?;
                (mode != 0).then(|| (mode, id.to_owned()))
            };
            out.push(RawChange {
                path: path.to_owned(),
                old: entry(m1, o1),
                new: entry(m2, o2),
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The entries (mode, id) of `paths` in `tree`; paths it does not have are left out.
    fn entries(
        &mut self,
        tree: &str,
        paths: &[String],
    ) -> Result<BTreeMap<String, (u32, String)>, GitError> {
        let mut out = BTreeMap::new();
        for chunk in paths.chunks(500) {
            let mut args = vec![
                "--literal-pathspecs".to_owned(),
                "ls-tree".to_owned(),
                "-z".to_owned(),
                "--full-tree".to_owned(),
                tree.to_owned(),
                "--".to_owned(),
            ];
            args.extend(chunk.iter().cloned());
            let out_text = self.ok(&args, None)?;
            for (mode, id, path) in ls_tree_entries(&out_text) {
                if chunk.contains(&path) && mode != 0o040000 {
                    out.insert(path, (mode, id));
                }
            }
        }
        Ok(out)
    }

    /// Every symlink in `tree`: path -> object id of its target.
    fn symlink_ids(&mut self, tree: &str) -> Result<BTreeMap<String, String>, GitError> {
        let args = ["ls-tree", "-r", "-z", "--full-tree", tree];
        let raw = self.run(args, None, self.repo.command_timeout)?;
        if !raw.success() || raw.truncated {
            return Err(self.failed(args, &raw));
        }
        Ok(ls_tree_entries(&raw.stdout)
            .into_iter()
            .filter(|(mode, _, _)| *mode == SYMLINK_MODE)
            .map(|(_, id, path)| (path, id))
            .collect())
    }

    /// The contents of the blobs `ids`, or why they are not read (too large in all).
    fn blobs(
        &mut self,
        ids: &BTreeSet<String>,
    ) -> Result<Result<BTreeMap<String, Vec<u8>>, String>, GitError> {
        let mut out = BTreeMap::new();
        if ids.is_empty() {
            return Ok(Ok(out));
        }
        let input: String = ids.iter().map(|id| format!("{id}\n")).collect();
        let check = ["cat-file", "--batch-check=%(objectsize)"];
        let sizes = self.ok(check, Some(input.clone().into_bytes()))?;
        let total: u64 = sizes
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .sum();
        if total > MAX_JUDGED_BYTES {
            return Ok(Err(format!(
                "the files it changes hold {total} bytes in all; at most {MAX_JUDGED_BYTES} are \
                 judged"
            )));
        }
        let args = ["cat-file", "--batch"];
        let raw = self.run(args, Some(input.into_bytes()), self.repo.command_timeout)?;
        if !raw.success() || raw.truncated {
            return Err(self.failed(args, &raw));
        }
        let mut rest: &[u8] = &raw.stdout_bytes;
        for id in ids {
            let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
                return Err(self.unexpected(args, "the output ends early".to_owned()));
            };
            let header = String::from_utf8_lossy(&rest[..nl]).into_owned();
            let mut parts = header.split(' ');
            let (got, kind, size) = (parts.next(), parts.next(), parts.next());
            let size: Option<usize> = size.and_then(|s| s.parse().ok());
            let (Some(got), Some("blob"), Some(size)) = (got, kind, size) else {
                return Err(self.unexpected(args, format!("not a blob: {header:?}")));
            };
            if got != id || rest.len() < nl + 1 + size + 1 {
                return Err(self.unexpected(args, format!("unexpected {header:?} for {id}")));
            }
            out.insert(id.clone(), rest[nl + 1..nl + 1 + size].to_vec());
            rest = &rest[nl + 1 + size + 1..];
        }
        Ok(Ok(out))
    }

    /// git's own patch from one tree to the other, with every setting that shapes it fixed on
    /// the command line (prefixes, context, no renames, no external diff or text conversion).
    fn canonical_diff(&mut self, from: &str, to: &str) -> Result<Vec<u8>, GitError> {
        let args = [
            "-c",
            "diff.noprefix=false",
            "-c",
            "diff.mnemonicPrefix=false",
            "-c",
            "core.quotePath=true",
            "diff-tree",
            "-p",
            "-r",
            "--no-renames",
            "--no-ext-diff",
            "--no-textconv",
            "--no-color",
            "--full-index",
            "--unified=3",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            from,
            to,
        ];
        let raw = self.run(args, None, self.repo.command_timeout)?;
        if !raw.success() || raw.truncated {
            return Err(self.failed(args, &raw));
        }
        Ok(raw.stdout_bytes)
    }

    /// The change from `from` to `to` as (path, resulting mode and id), for comparing two
    /// change sets.
    pub(super) fn change_set(
        &mut self,
        from: &str,
        to: &str,
    ) -> Result<Vec<(String, Option<Entry>)>, GitError> {
        Ok(self
            .changes(from, to)?
            .into_iter()
            .map(|c| (c.path, c.new))
            .collect())
    }
}

/// `ls-tree -z` entries as (mode, id, path).
fn ls_tree_entries(out: &str) -> Vec<(u32, String, String)> {
    out.split('\0')
        .filter(|e| !e.is_empty())
        .filter_map(|entry| {
            let (meta, path) = entry.split_once('\t')?;
            let mut fields = meta.split(' ');
            let mode = u32::from_str_radix(fields.next()?, 8).ok()?;
            let id = fields.nth(1)?;
            Some((mode, id.to_owned(), path.to_owned()))
        })
        .collect()
}

/// Whether `path` is inside `dir` (both canonical), and as what repository path.
pub fn inside(dir: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(dir).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::git::RevertOutcome;
    use std::fs;

    #[test]
    fn the_scratch_apply_reports_what_git_really_made() {
        let (_tmp, dir) = init();
        let base = commit(&dir, "s.env", "TIMEOUT_MS=500\nREQUIRE_AUTH=1\n", "base");
        std::os::unix::fs::symlink("s.env", dir.join("link")).unwrap();
        git(&dir, &["add", "link"]);
        git(&dir, &["commit", "-q", "-m", "link"]);
        let base2 = git(&dir, &["rev-parse", "HEAD"]);
        // A no-newline marker in the middle of a hunk: git joins the two lines.
        let joined = "diff --git a/s.env b/s.env\nindex 1111111..2222222 100644\n--- a/s.env\n+++ b/s.env\n@@ -1,2 +1,2 @@\n-TIMEOUT_MS=500\n+TIMEOUT_MS=5000\n\\ No newline at end of file\n REQUIRE_AUTH=1\n";
        let repo = Repo::open(&dir).unwrap();
        let t = judged(&repo, &base, joined);
        assert_eq!(t.files.len(), 1);
        assert_eq!(
            t.files[0].new.as_ref().unwrap().bytes,
            b"TIMEOUT_MS=5000REQUIRE_AUTH=1\n"
        );
        assert_eq!(
            t.files[0].old.as_ref().unwrap().bytes,
            b"TIMEOUT_MS=500\nREQUIRE_AUTH=1\n"
        );
        let removed: Vec<&str> = t.canonical.files[0]
            .removed_lines()
            .map(|l| l.text.as_str())
            .collect();
        assert_eq!(removed, ["TIMEOUT_MS=500", "REQUIRE_AUTH=1"]);
        // The symlinks of both trees, with their targets; the base entries of named paths.
        let t = judged(&repo, &base2, joined);
        assert_eq!(t.links_after.get("link").map(String::as_str), Some("s.env"));
        let t = repo
            .scratch_apply(&base2, joined, &["s.env".to_owned(), "nope".to_owned()])
            .unwrap();
        let Scratch::Applied(t) = t else { panic!() };
        assert_eq!(t.base_files.keys().collect::<Vec<_>>(), ["s.env"]);
        assert_eq!(git(&dir, &["status", "--porcelain"]), "");
    }

    #[test]
    fn in_tree_attributes_do_not_turn_a_conflicting_revert_into_a_merge() {
        let (_tmp, dir) = init();
        commit(&dir, ".gitattributes", "* merge=union\n", "attributes");
        commit(&dir, "mode", "ok\n", "first");
        let bad = commit(&dir, "mode", "broken\n", "bad");
        let later = commit(&dir, "mode", "broken-differently\n", "later");
        let repo = Repo::open(&dir).unwrap();
        match repo.revert(&request(&bad, "intent-attr")).unwrap() {
            RevertOutcome::Conflict {
                files,
                tree_restored,
                ..
            } => {
                assert_eq!(files, ["mode"]);
                assert!(tree_restored);
            }
            other => panic!("the union merge driver was used: {other:?}"),
        }
        assert_eq!(git(&dir, &["rev-parse", "HEAD"]), later);
        // The operator's own lines in info/attributes stay, guardian's come last.
        let info = fs::read_to_string(dir.join(".git/info/attributes")).unwrap();
        assert!(
            info.trim_end().ends_with("!working-tree-encoding"),
            "{info}"
        );
    }
}
