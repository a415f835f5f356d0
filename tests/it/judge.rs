//! The gate deploys what it judged, or nothing: for generated patches (edits, files added,
//! deleted, renamed and copied, modes, binary contents, symlinks and chains of them, made by
//! real git and then tampered with: `\ No newline` markers anywhere, lines dropped, sections
//! repeated), either the proposal is refused, or the tree git made in the scratch index is the
//! tree deployed, byte for byte, and every text file in it reads as the patch shows it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use guardian::git::{ApplyOutcome, ApplyRequest, Repo, Scratch};
use guardian::trust::{self, diff, tree, Decision, NeverList, Pattern, Policy, ProposalFacts};
use proptest::prelude::*;

use super::rollback::git;

const FILES: [&str; 4] = ["src/a.txt", "src/b.txt", "src/dir/c.txt", "src/bin.dat"];
const NAMES: [&str; 4] = ["src/new.txt", "src/dir/d.txt", "src/e", "src/dir/up2"];
const TARGETS: [&str; 7] = [
    "a.txt",
    "dir/c.txt",
    "up/src/a.txt",
    "link",
    "dir/../a.txt",
    "../..",
    "/etc/passwd",
];

/// A permissive policy: only what the gate always refuses is refused.
fn policy() -> Policy {
    Policy::parse(
        "[paths]\nallow = [\"**\"]\n[limits]\nmax_files = 100\nmax_lines = 10000\n\
         [content]\nnew_dependencies = \"allow\"\nschema_changes = \"allow\"\nbinary = [\"**\"]\n",
    )
    .unwrap()
}

#[derive(Clone, Debug)]
enum Edit {
    Line(usize, usize, String),
    Append(usize, String, bool),
    Add(usize, String),
    Link(usize, usize),
    Delete(usize),
    Rename(usize, usize),
    Copy(usize, usize),
    Chmod(usize),
    Binary(usize),
}

#[derive(Clone, Debug)]
enum Tamper {
    None,
    /// A `\ No newline at end of file` line after the n-th hunk line.
    Marker(usize),
    /// The n-th hunk line removed.
    Drop(usize),
    /// The n-th added line's text changed.
    Retext(usize),
    /// The whole patch twice, as a series would repeat a file.
    Twice,
}

fn edit() -> impl Strategy<Value = Edit> {
    let text = "[a-z =0-9]{0,12}";
    prop_oneof![
        (0..3usize, 0..6usize, text).prop_map(|(f, l, t)| Edit::Line(f, l, t)),
        (0..3usize, text, any::<bool>()).prop_map(|(f, t, n)| Edit::Append(f, t, n)),
        (0..4usize, text).prop_map(|(n, t)| Edit::Add(n, t)),
        (0..4usize, 0..TARGETS.len()).prop_map(|(n, t)| Edit::Link(n, t)),
        (0..4usize).prop_map(Edit::Delete),
        (0..4usize, 0..4usize).prop_map(|(f, n)| Edit::Rename(f, n)),
        (0..4usize, 0..4usize).prop_map(|(f, n)| Edit::Copy(f, n)),
        (0..4usize).prop_map(Edit::Chmod),
        (0..4usize).prop_map(Edit::Binary),
    ]
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        3 => Just(Tamper::None),
        3 => (0..40usize).prop_map(Tamper::Marker),
        1 => (0..40usize).prop_map(Tamper::Drop),
        1 => (0..40usize).prop_map(Tamper::Retext),
        1 => Just(Tamper::Twice),
    ]
}

/// The base every case starts from, committed in `dir`.
fn base_repo(dir: &Path) -> String {
    fs::create_dir_all(dir.join("src/dir")).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    let lines: String = (1..=6).map(|i| format!("line {i}\n")).collect();
    fs::write(dir.join("src/a.txt"), &lines).unwrap();
    fs::write(dir.join("src/b.txt"), "one\ntwo\nno newline").unwrap();
    fs::write(dir.join("src/dir/c.txt"), "timeout = 5\n").unwrap();
    fs::write(dir.join("src/bin.dat"), b"\x00\x01\x02binary").unwrap();
    std::os::unix::fs::symlink("a.txt", dir.join("src/link")).unwrap();
    std::os::unix::fs::symlink("..", dir.join("src/up")).unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "base"]);
    git(dir, &["rev-parse", "HEAD"])
}

/// Makes the edits in the work tree and returns git's own patch of them.
fn make_patch(dir: &Path, edits: &[Edit]) -> String {
    for e in edits {
        let file = |i: usize| dir.join(FILES[i % FILES.len()]);
        let name = |i: usize| dir.join(NAMES[i % NAMES.len()]);
        match e {
            Edit::Line(f, l, t) => {
                if let Ok(text) = fs::read_to_string(file(*f)) {
                    let mut lines: Vec<&str> = text.split('\n').collect();
                    if let Some(slot) = lines.get_mut(*l) {
                        *slot = t;
                    }
                    let _ = fs::write(file(*f), lines.join("\n"));
                }
            }
            Edit::Append(f, t, no_newline) => {
                if let Ok(mut text) = fs::read_to_string(file(*f)) {
                    text.push_str(t);
                    if !no_newline {
                        text.push('\n');
                    }
                    let _ = fs::write(file(*f), text);
                }
            }
            Edit::Add(n, t) => {
                let _ = fs::remove_file(name(*n));
                let _ = fs::write(name(*n), format!("{t}\n"));
            }
            Edit::Link(n, t) => {
                let _ = fs::remove_file(name(*n));
                let _ = std::os::unix::fs::symlink(TARGETS[*t], name(*n));
            }
            Edit::Delete(f) => {
                let _ = fs::remove_file(file(*f));
            }
            Edit::Rename(f, n) => {
                let _ = fs::rename(file(*f), name(*n));
            }
            Edit::Copy(f, n) => {
                let _ = fs::copy(file(*f), name(*n));
            }
            Edit::Chmod(f) => {
                use std::os::unix::fs::PermissionsExt;
                let _ = fs::set_permissions(file(*f), fs::Permissions::from_mode(0o755));
            }
            Edit::Binary(f) => {
                let _ = fs::write(file(*f), b"\x00new\x00binary\n");
            }
        }
    }
    git(dir, &["add", "-A"]);
    // As git writes it, to the last byte (the helper trims its output).
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "diff",
            "--cached",
            "--binary",
            "--full-index",
            "-M",
            "-C",
            "--find-copies-harder",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    git(dir, &["reset", "-q", "--hard", "HEAD"]);
    git(dir, &["clean", "-q", "-fd"]);
    String::from_utf8(out.stdout).unwrap()
}

fn tampered(patch: &str, how: &Tamper) -> String {
    let lines: Vec<&str> = patch.split_inclusive('\n').collect();
    let hunk_lines: Vec<usize> = {
        let mut out = Vec::new();
        let mut in_hunk = false;
        for (i, l) in lines.iter().enumerate() {
            if l.starts_with("@@ ") {
                in_hunk = true;
            } else if l.starts_with("diff --git") {
                in_hunk = false;
            } else if in_hunk && (l.starts_with(' ') || l.starts_with('+') || l.starts_with('-')) {
                out.push(i);
            }
        }
        out
    };
    let pick = |n: usize| (!hunk_lines.is_empty()).then(|| hunk_lines[n % hunk_lines.len()]);
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    match how {
        Tamper::None => {}
        Tamper::Marker(n) => {
            if let Some(i) = pick(*n) {
                out.insert(i + 1, "\\ No newline at end of file\n".to_owned());
            }
        }
        Tamper::Drop(n) => {
            if let Some(i) = pick(*n) {
                out.remove(i);
            }
        }
        Tamper::Retext(n) => {
            if let Some(i) = pick(*n) {
                if out[i].starts_with('+') {
                    out[i] = "+tampered\n".to_owned();
                }
            }
        }
        Tamper::Twice => {
            let once = out.concat();
            return format!("{once}{once}");
        }
    }
    out.concat()
}

/// Every blob of a tree: path -> (mode, contents).
fn tree_files(dir: &Path, tree: &str) -> BTreeMap<String, (String, Vec<u8>)> {
    let listing = git(dir, &["ls-tree", "-r", "-z", tree]);
    let mut out = BTreeMap::new();
    for entry in listing.split('\0').filter(|e| !e.is_empty()) {
        let (meta, path) = entry.split_once('\t').unwrap();
        let fields: Vec<&str> = meta.split(' ').collect();
        let bytes = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["cat-file", "blob", fields[2]])
            .output()
            .unwrap()
            .stdout;
        out.insert(path.to_owned(), (fields[0].to_owned(), bytes));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_tree_deployed_is_the_tree_judged_or_nothing_is(
        edits in proptest::collection::vec(edit(), 1..5),
        how in tamper(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("clone");
        let base = base_repo(&dir);
        let patch = tampered(&make_patch(&dir, &edits), &how);
        prop_assume!(!patch.is_empty());

        let Ok(parsed) = diff::parse(&patch) else {
            return Ok(()); // refused as unreadable
        };
        let repo = Repo::open(&dir).unwrap();
        let judged = match repo.scratch_apply(&base, &patch, &parsed.facts().paths).unwrap() {
            Scratch::Applied(t) => *t,
            Scratch::Refused(_) => return Ok(()),
        };
        let facts = ProposalFacts { service: "shop".into(), pattern: Pattern::Other, tests_run: true };
        let context = trust::Context {
            now: 0,
            pattern_trusted: false,
            track_record: trust::TrackRecord::default(),
            recent_rollbacks: 0,
            error_budget_remaining: None,
            traffic_ratio: None,
        };
        let a = trust::assess(&policy(), &NeverList::default(), &facts, &parsed, &judged, &context);
        if a.decision == Decision::Deny {
            return Ok(());
        }
        prop_assert_eq!(&a.tree, &judged.tree);

        let outcome = repo.apply_patch(&ApplyRequest {
            patch: patch.clone(),
            intent: "prp_000000000001-deploy".into(),
            message: "a proposal".into(),
            base: base.clone(),
            tree: a.tree.clone(),
        }).unwrap();
        let ApplyOutcome::Applied { .. } = outcome else {
            return Err(TestCaseError::fail(format!("judged but not deployed: {outcome:?}")));
        };
        let deployed = git(&dir, &["rev-parse", "HEAD^{tree}"]);
        prop_assert_eq!(&deployed, &judged.tree, "the deployed tree is the judged one");
        prop_assert_eq!(git(&dir, &["status", "--porcelain"]), "");

        // And what the approver read is what was deployed: the patch, replayed as it reads.
        let files = tree_files(&dir, &deployed);
        let base_files = tree_files(&dir, &base);
        let replayed = tree::replay(&parsed, |p| {
            base_files.get(p).map(|(m, b)| (u32::from_str_radix(m, 8).unwrap(), b.clone()))
        }).unwrap();
        for (path, after) in replayed {
            match (after, files.get(&path)) {
                (None, None) => {}
                (Some(r), Some((mode, bytes))) => {
                    prop_assert_eq!(format!("{:o}", r.mode), mode.clone(), "{}", path);
                    if let Some(b) = r.bytes {
                        prop_assert_eq!(&b, bytes, "{} as the patch shows it\n{}", path, patch);
                    }
                }
                (r, d) => {
                    return Err(TestCaseError::fail(format!("{path}: read {r:?}, deployed {d:?}\n{patch}")));
                }
            }
        }
    }
}
