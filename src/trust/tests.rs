//! The policy suite: proposals that must be denied, one per rule, and ones that must pass.
//! Patches are written here as git writes them; `tests/it/policy.rs` makes the same cases with
//! real git.

use super::*;

/// The example policy shipped in `config/policy.toml`.
fn example() -> Policy {
    Policy::parse(include_str!("../../config/policy.toml")).expect("config/policy.toml parses")
}

/// Thursday 2026-11-26, 09:00 UTC: outside the lunch window.
const MORNING: i64 = 1_795_651_200 + 9 * 3600;
/// The same day at 11:00 UTC, 12:00 at +01:00: inside it.
const LUNCH: i64 = 1_795_651_200 + 11 * 3600;

fn trusted() -> Context {
    Context {
        now: MORNING,
        pattern_trusted: true,
        track_record: TrackRecord {
            approved: 12,
            healthy: 12,
            rollbacks: 0,
        },
        recent_rollbacks: 0,
        error_budget_remaining: Some(0.9),
        traffic_ratio: Some(0.8),
    }
}

fn proposal(pattern: Pattern) -> ProposalFacts {
    ProposalFacts {
        service: "shop".to_owned(),
        pattern,
        tests_run: true,
    }
}

/// An edit of `path` replacing `old` by `new` at line 3.
fn edit(path: &str, old: &[&str], new: &[&str]) -> String {
    let mut p = format!(
        "diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n--- a/{path}\n+++ b/{path}\n@@ -2,{} +2,{} @@\n ctx\n",
        old.len() + 1,
        new.len() + 1
    );
    for l in old {
        p.push_str(&format!("-{l}\n"));
    }
    for l in new {
        p.push_str(&format!("+{l}\n"));
    }
    p
}

fn timeout_bump(path: &str) -> String {
    edit(path, &["    timeout: 5s,"], &["    timeout: 10s,"])
}

/// A blob as git would store it (the id only has to tell contents apart here).
fn blob(mode: u32, bytes: &[u8]) -> Blob {
    use sha2::{Digest, Sha256};
    let id = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Blob {
        mode,
        id,
        bytes: bytes.to_vec(),
    }
}

/// The base a hand-written patch was made against: each file it changes holds the old lines
/// its hunks show, where they show them (other lines are filler).
fn base_of(diff: &Diff) -> BTreeMap<String, Blob> {
    let mut files = BTreeMap::new();
    for f in &diff.files {
        let Some(old) = f.old_path.as_deref() else {
            continue;
        };
        let mut lines: Vec<String> = Vec::new();
        for h in &f.hunks {
            let start = h.old_start.max(1) as usize - 1;
            while lines.len() < start {
                lines.push(format!("filler {}", lines.len() + 1));
            }
            lines.extend(
                h.lines
                    .iter()
                    .filter(|l| l.kind != diff::LineKind::Added)
                    .map(|l| l.text.clone()),
            );
        }
        let mut text = lines.join("\n");
        if !text.is_empty() && !f.hunks.iter().flat_map(|h| &h.lines).any(|l| l.no_newline) {
            text.push('\n');
        }
        if f.hunks.is_empty() {
            text = "x\n".to_owned();
        }
        let mode = f.old_mode.unwrap_or(0o100644);
        files.insert(old.to_owned(), blob(mode, text.as_bytes()));
    }
    files
}

/// What git would make of `diff` on `base` plus the symlinks `links`, built by replaying it
/// (`tree::check_agreement` then holds by construction). `canonical` stands for git's own
/// diff of the whole change; for a single commit it is the patch itself.
fn tree_of(
    diff: &Diff,
    mut base: BTreeMap<String, Blob>,
    links: &[(&str, &str)],
    canonical: Option<&str>,
) -> Result<TreeChange, String> {
    for (p, t) in links {
        base.insert(p.to_string(), blob(diff::SYMLINK_MODE, t.as_bytes()));
    }
    let replayed = tree::replay(diff, |p| base.get(p).map(|b| (b.mode, b.bytes.clone())))?;
    let mut files = Vec::new();
    for (path, after) in &replayed {
        let old = base.get(path).cloned();
        let new = after
            .as_ref()
            .map(|r| blob(r.mode, r.bytes.as_deref().unwrap_or(b"\0binary\0")));
        if old != new {
            files.push(FileChange {
                path: path.clone(),
                old,
                new,
            });
        }
    }
    let links_before: BTreeMap<String, String> = base
        .iter()
        .filter(|(_, b)| b.is_symlink())
        .map(|(p, b)| (p.clone(), String::from_utf8_lossy(&b.bytes).into_owned()))
        .collect();
    let mut links_after = links_before.clone();
    for f in &files {
        match &f.new {
            Some(b) if b.is_symlink() => {
                links_after.insert(
                    f.path.clone(),
                    String::from_utf8_lossy(&b.bytes).into_owned(),
                );
            }
            _ => {
                links_after.remove(&f.path);
            }
        }
    }
    let canonical = match canonical {
        Some(text) => diff::parse(text).map_err(|e| e.to_string())?,
        None => diff.clone(),
    };
    let base_files = diff
        .files
        .iter()
        .flat_map(|f| f.paths())
        .filter_map(|p| base.get(p).map(|b| (p.to_owned(), b.clone())))
        .collect();
    Ok(TreeChange {
        base_tree: "b".repeat(40),
        tree: "t".repeat(40),
        files,
        base_files,
        links_before,
        links_after,
        canonical,
    })
}

fn judge(patch: &str, pattern: Pattern, links: &[(&str, &str)], ctx: &Context) -> Assessment {
    let diff = diff::parse(patch).unwrap_or_else(|e| panic!("{e}\n{patch}"));
    let tree = tree_of(&diff, base_of(&diff), links, None).unwrap_or_else(|e| panic!("{e}"));
    assess(
        &example(),
        &NeverList::default(),
        &proposal(pattern),
        &diff,
        &tree,
        ctx,
    )
}

/// `judge` on a base whose files are given whole.
fn judge_on(files: &[(&str, &str)], patch: &str, pattern: Pattern) -> Assessment {
    let diff = diff::parse(patch).unwrap_or_else(|e| panic!("{e}\n{patch}"));
    let base = files
        .iter()
        .map(|(p, t)| (p.to_string(), blob(0o100644, t.as_bytes())))
        .collect();
    let tree = tree_of(&diff, base, &[], None).unwrap_or_else(|e| panic!("{e}"));
    assess(
        &example(),
        &NeverList::default(),
        &proposal(pattern),
        &diff,
        &tree,
        &trusted(),
    )
}

/// The rules that fired with `effect`, as "rule: message".
fn fired(a: &Assessment, effect: Effect) -> Vec<String> {
    a.rules
        .iter()
        .filter(|h| h.effect == effect)
        .map(|h| format!("{}: {}", h.rule, h.message))
        .collect()
}

#[track_caller]
fn assert_denied(a: &Assessment, rule: &str, mentions: &str) {
    assert_eq!(a.decision, Decision::Deny, "{:#?}", a.rules);
    let hits = fired(a, Effect::Deny);
    assert!(
        hits.iter()
            .any(|h| h.starts_with(&format!("{rule}: ")) && h.contains(mentions)),
        "no {rule} naming {mentions:?} in {hits:#?}"
    );
}

#[test]
fn the_shipped_example_policy_parses() {
    let p = example();
    assert_eq!(p.limits.max_files, 5);
    assert_eq!(p.windows[0].name, "lunch peak");
    assert_eq!(p.services, ["shop"]);
}

#[test]
fn a_real_timeout_bump_in_an_allowed_path_deploys_alone() {
    let a = judge(
        &timeout_bump("src/api/client.rs"),
        Pattern::TimeoutBump,
        &[],
        &trusted(),
    );
    assert_eq!(a.decision, Decision::Auto, "{:#?}", a.rules);
    assert!(a.rules.is_empty());
    assert_eq!(
        a.pattern_check,
        PatternCheck::Consistent {
            pattern: Pattern::TimeoutBump
        }
    );
    assert!(a.risk.score < 30, "{:#?}", a.risk);
    assert_eq!(a.facts.files, 1);
}

#[test]
fn each_forbidden_area_is_denied_naming_the_glob() {
    for (path, glob) in [
        ("migrations/0042_orders.rs", "migrations/**"),
        ("src/auth/session.rs", "**/auth/**"),
        ("src/payments/stripe.rs", "**/payments/**"),
        ("infra/main.tf", "infra/**"),
        (".github/workflows/ci.yml", ".github/**"),
        ("deploy/prod.yaml", "deploy/**"),
        ("config/guardian.toml", "**/guardian.toml"),
        ("src/policy.toml", "**/policy.toml"),
    ] {
        let a = judge(&timeout_bump(path), Pattern::TimeoutBump, &[], &trusted());
        assert_denied(
            &a,
            "paths.deny",
            &format!("{path} matches the denied glob \"{glob}\""),
        );
    }
}

#[test]
fn a_path_outside_allow_is_denied() {
    let a = judge(
        &timeout_bump("README.md"),
        Pattern::TimeoutBump,
        &[],
        &trusted(),
    );
    assert_denied(&a, "paths.allow", "README.md is not under any allowed glob");
}

#[test]
fn a_rename_out_of_a_forbidden_directory_is_denied() {
    let patch = "diff --git a/src/auth/tokens.rs b/src/util/tokens.rs\nsimilarity index 100%\nrename from src/auth/tokens.rs\nrename to src/util/tokens.rs\n";
    let a = judge(patch, Pattern::Other, &[], &trusted());
    assert_denied(
        &a,
        "paths.deny",
        "src/auth/tokens.rs (renamed from) matches",
    );
}

#[test]
fn an_oversize_diff_is_denied_naming_the_limit() {
    let old: Vec<String> = (0..50).map(|i| format!("let t{i} = timeout(5);")).collect();
    let new: Vec<String> = (0..50).map(|i| format!("let t{i} = timeout(9);")).collect();
    let old: Vec<&str> = old.iter().map(String::as_str).collect();
    let new: Vec<&str> = new.iter().map(String::as_str).collect();
    let a = judge(
        &edit("src/a.rs", &old, &new),
        Pattern::TimeoutBump,
        &[],
        &trusted(),
    );
    assert_denied(
        &a,
        "limits.max_lines",
        "adds 50 and removes 50 lines (100); the limit is 80",
    );

    let many: String = (0..6)
        .map(|i| timeout_bump(&format!("src/m{i}.rs")))
        .collect();
    let a = judge(&many, Pattern::TimeoutBump, &[], &trusted());
    assert_denied(&a, "limits.max_files", "touches 6 files; the limit is 5");
}

#[test]
fn a_mislabelled_pattern_is_denied_with_the_reason() {
    let patch = edit(
        "src/api/client.rs",
        &["    timeout: 5s,"],
        &["    timeout: 10s, retries: 10,"],
    );
    let a = judge(&patch, Pattern::TimeoutBump, &[], &trusted());
    assert_denied(
        &a,
        "pattern_mismatch",
        "src/api/client.rs:3 changes more than a number",
    );
}

#[test]
fn a_patch_writing_through_a_symlink_in_the_repository_is_refused() {
    // git writes no path through a symlink; the replay refuses it the same way.
    let patch = "diff --git a/src/util/x.sql b/src/util/x.sql\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n+++ b/src/util/x.sql\n@@ -0,0 +1 @@\n+SELECT 1;\n";
    let diff = diff::parse(patch).unwrap();
    let e = tree_of(
        &diff,
        BTreeMap::new(),
        &[("src/util", "../migrations")],
        None,
    )
    .unwrap_err();
    assert!(
        e.contains("src/util/x.sql goes through the symlink src/util"),
        "{e}"
    );
    // Without the symlink the same patch is fine as far as paths go.
    let a = judge(patch, Pattern::Other, &[], &trusted());
    assert!(fired(&a, Effect::Deny).is_empty(), "{:#?}", a.rules);
}

#[test]
fn a_symlink_the_patch_adds_is_judged_where_it_leads() {
    let link = |path: &str, target: &str| {
        format!("diff --git a/{path} b/{path}\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+{target}\n\\ No newline at end of file\n")
    };
    let a = judge(&link("src/db", "../infra"), Pattern::Other, &[], &trusted());
    assert_denied(
        &a,
        "paths.symlink",
        "the new symlink src/db -> ../infra points to infra (via src/db -> ../infra), which is not under any allowed glob",
    );
    for (target, why) in [
        ("../../outside", "points outside the repository"),
        ("/etc", "points outside the repository"),
        ("../src/ext", "is part of a loop"),
        ("../.git/config", "points into .git"),
        ("..", "is the repository's top level"),
    ] {
        let a = judge(&link("src/ext", target), Pattern::Other, &[], &trusted());
        assert_denied(&a, "paths.symlink", why);
    }
    // A symlink that stays in allowed ground is fine.
    let a = judge(
        &link("src/ext", "../lib/ext"),
        Pattern::Other,
        &[],
        &trusted(),
    );
    assert!(fired(&a, Effect::Deny).is_empty(), "{:#?}", a.rules);
}

#[test]
fn a_chain_through_an_up_link_is_followed_as_the_kernel_does() {
    // `src/l/up -> ..` is src; read lexically, `l/up/../../etc/passwd` from src would be
    // src/etc/passwd, but `..` after `up` climbs from src to the top and then out of it.
    let patch = "diff --git a/src/x b/src/x\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/src/x\n@@ -0,0 +1 @@\n+l/up/../../../etc/passwd\n\\ No newline at end of file\n";
    let a = judge(patch, Pattern::Other, &[("src/l/up", "..")], &trusted());
    assert_denied(
        &a,
        "paths.symlink",
        "the new symlink src/x -> l/up/../../../etc/passwd points outside the repository (via src/x -> l/up/../../../etc/passwd, src/l/up -> ..)",
    );
    // Lexically src/l/migrations, allowed; really migrations.
    let into = "diff --git a/src/m b/src/m\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/src/m\n@@ -0,0 +1 @@\n+l/up/../migrations\n\\ No newline at end of file\n";
    let a = judge(into, Pattern::Other, &[("src/l/up", "..")], &trusted());
    assert_denied(&a, "paths.symlink", "points to migrations");
}

#[test]
fn an_old_symlink_the_change_redirects_is_judged_again() {
    // src/a -> b/c was fine while src/b was a directory; the change makes src/b a link to lib,
    // where lib/c leads into migrations.
    let patch = "diff --git a/src/b b/src/b\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/src/b\n@@ -0,0 +1 @@\n+../lib\n\\ No newline at end of file\n";
    let a = judge(
        patch,
        Pattern::Other,
        &[("src/a", "b/c"), ("lib/c", "../migrations")],
        &trusted(),
    );
    assert_denied(
        &a,
        "paths.symlink",
        "the symlink src/a -> b/c, which the change redirects, points to migrations",
    );
}

#[test]
fn deleting_a_symlink_into_a_forbidden_area_touches_the_link_not_its_target() {
    let patch = "diff --git a/src/old b/src/old\ndeleted file mode 120000\nindex 1111111..0000000\n--- a/src/old\n+++ /dev/null\n@@ -1 +0,0 @@\n-../migrations\n\\ No newline at end of file\n";
    let a = judge(
        patch,
        Pattern::Other,
        &[("src/old", "../migrations")],
        &trusted(),
    );
    assert!(fired(&a, Effect::Deny).is_empty(), "{:#?}", a.rules);
}

#[test]
fn a_renamed_symlink_is_judged_where_its_target_now_leads() {
    let patch = "diff --git a/src/x/link b/src/link\nsimilarity index 100%\nrename from src/x/link\nrename to src/link\n";
    let links = [("src/x/link", "../../lib/ok")];
    let diff = diff::parse(patch).unwrap();
    let tree = tree_of(&diff, BTreeMap::new(), &links, None).unwrap();
    let a = assess(
        &example(),
        &NeverList::default(),
        &proposal(Pattern::Other),
        &diff,
        &tree,
        &trusted(),
    );
    assert_denied(
        &a,
        "paths.symlink",
        "the new symlink src/link -> ../../lib/ok points outside the repository",
    );
    // Where it was, it pointed at allowed ground.
    let stay = "diff --git a/src/x/link b/src/x/link2\nsimilarity index 100%\nrename from src/x/link\nrename to src/x/link2\n";
    let diff = diff::parse(stay).unwrap();
    let tree = tree_of(&diff, BTreeMap::new(), &links, None).unwrap();
    let a = assess(
        &example(),
        &NeverList::default(),
        &proposal(Pattern::Other),
        &diff,
        &tree,
        &trusted(),
    );
    assert!(fired(&a, Effect::Deny).is_empty(), "{:#?}", a.rules);
}

#[test]
fn git_control_files_and_the_hosts_files_are_never_changed() {
    let patch = "diff --git a/src/.gitattributes b/src/.gitattributes\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n+++ b/src/.gitattributes\n@@ -0,0 +1 @@\n+* merge=union\n";
    let a = judge(patch, Pattern::Other, &[], &trusted());
    assert_denied(
        &a,
        "paths.never",
        "src/.gitattributes is git's own .gitattributes",
    );
    let diff = diff::parse(&timeout_bump("src/ops/policy.toml")).unwrap();
    let tree = tree_of(&diff, base_of(&diff), &[], None).unwrap();
    let never = NeverList {
        host: vec![(
            "src/ops/policy.toml".into(),
            "guardian's policy file".into(),
        )],
    };
    let a = assess(
        &example(),
        &never,
        &proposal(Pattern::TimeoutBump),
        &diff,
        &tree,
        &trusted(),
    );
    assert_denied(&a, "paths.never", "guardian's policy file");
}

#[test]
fn binary_changes_need_a_glob_and_text_may_not_hide_in_a_binary_patch() {
    let patch = "diff --git a/src/logo.png b/src/logo.png\nnew file mode 100644\nindex 0000000..1111111\nGIT binary patch\nliteral 2\nJcmZQz1ONa700IC2\n\nliteral 0\nHcmV?d00001\n\n";
    let a = judge(patch, Pattern::Other, &[], &trusted());
    assert_denied(&a, "content.binary", "src/logo.png is binary");
    let policy =
        Policy::parse("[paths]\nallow = [\"src/**\"]\n[content]\nbinary = [\"src/*.png\"]\n")
            .unwrap();
    let diff = diff::parse(patch).unwrap();
    let tree = tree_of(&diff, BTreeMap::new(), &[], None).unwrap();
    let a = assess(
        &policy,
        &NeverList::default(),
        &proposal(Pattern::Other),
        &diff,
        &tree,
        &trusted(),
    );
    assert!(
        !fired(&a, Effect::Deny)
            .iter()
            .any(|h| h.starts_with("content.binary")),
        "{:#?}",
        a.rules
    );

    // A manifest sent as a binary patch: git makes text of it, which is judged as text.
    let mut tree = tree_of(&diff, BTreeMap::new(), &[], None).unwrap();
    let manifest = "diff --git a/src/Cargo.toml b/src/Cargo.toml\nindex 1111111..2222222 100644\nGIT binary patch\nliteral 2\nJcmZQz1ONa700IC2\n\nliteral 0\nHcmV?d00001\n\n";
    let diff = diff::parse(manifest).unwrap();
    let before = "[dependencies]\nserde = \"1\"\n";
    let after = "[dependencies]\nserde = \"1\"\nevil = \"6\"\n";
    tree.files = vec![FileChange {
        path: "src/Cargo.toml".into(),
        old: Some(blob(0o100644, before.as_bytes())),
        new: Some(blob(0o100644, after.as_bytes())),
    }];
    tree.base_files = [(
        "src/Cargo.toml".to_owned(),
        blob(0o100644, before.as_bytes()),
    )]
    .into();
    let a = assess(
        &example(),
        &NeverList::default(),
        &proposal(Pattern::Other),
        &diff,
        &tree,
        &trusted(),
    );
    assert_denied(
        &a,
        "content.binary",
        "src/Cargo.toml is sent as a binary patch but is text",
    );
    assert_denied(
        &a,
        "content.new_dependencies",
        "src/Cargo.toml gains the dependency dependencies: evil (evil, registry)",
    );
}

#[test]
fn a_new_dependency_is_denied_but_a_version_bump_is_not_one() {
    let cargo = "[package]\nname = \"shop\"\n[dependencies]\nserde = \"1\"\n";
    let patch = "diff --git a/src/Cargo.toml b/src/Cargo.toml\nindex 1111111..2222222 100644\n--- a/src/Cargo.toml\n+++ b/src/Cargo.toml\n@@ -3,2 +3,3 @@\n [dependencies]\n serde = \"1\"\n+globset = \"0.4\"\n";
    let a = judge_on(&[("src/Cargo.toml", cargo)], patch, Pattern::Other);
    assert_denied(
        &a,
        "content.new_dependencies",
        "src/Cargo.toml gains the dependency dependencies: globset (globset, registry)",
    );

    let package =
        "{\n  \"dependencies\": {\n    \"lodash\": \"^4.17.20\",\n    \"x\": \"1\"\n  }\n}\n";
    let patch = edit(
        "lib/web/package.json",
        &["    \"lodash\": \"^4.17.20\","],
        &["    \"lodash\": \"^4.17.21\","],
    )
    .replace(
        "@@ -2,2 +2,2 @@\n ctx\n",
        "@@ -2,2 +2,2 @@\n   \"dependencies\": {\n",
    );
    let a = judge_on(&[("lib/web/package.json", package)], &patch, Pattern::Other);
    assert!(
        !fired(&a, Effect::Deny)
            .iter()
            .any(|h| h.starts_with("content")),
        "{:#?}",
        a.rules
    );

    let patch = "diff --git a/lib/requirements-dev.txt b/lib/requirements-dev.txt\nindex 1111111..2222222 100644\n--- a/lib/requirements-dev.txt\n+++ b/lib/requirements-dev.txt\n@@ -1 +1,2 @@\n flask==3.0\n+requests==2.31.0\n";
    let a = judge_on(
        &[("lib/requirements-dev.txt", "flask==3.0\n")],
        patch,
        Pattern::Other,
    );
    assert_denied(
        &a,
        "content.new_dependencies",
        "lib/requirements-dev.txt gains the dependency requirement: requests (index)",
    );
}

#[test]
fn a_lock_entry_that_keeps_its_name_but_resolves_to_another_package_is_denied() {
    let lock = |resolved: &str| {
        format!(
            "{{\n  \"lockfileVersion\": 3,\n  \"packages\": {{\n    \"node_modules/lodash\": {{\n      \
             \"version\": \"4.17.21\",\n      \"resolved\": \"{resolved}\"\n    }}\n  }}\n}}\n"
        )
    };
    let real = "https://registry.npmjs.org/lodash/-/lodash-4.17.21.tgz";
    let evil = "https://registry.npmjs.org/evil/-/evil-1.0.0.tgz";
    let before = lock(real);
    let patch = edit(
        "lib/web/package-lock.json",
        &[&format!("      \"resolved\": \"{real}\"")],
        &[&format!("      \"resolved\": \"{evil}\"")],
    )
    .replace(
        "@@ -2,2 +2,2 @@\n ctx\n",
        "@@ -5,2 +5,2 @@\n       \"version\": \"4.17.21\",\n",
    );
    let a = judge_on(
        &[("lib/web/package-lock.json", &before)],
        &patch,
        Pattern::Other,
    );
    assert_denied(
        &a,
        "content.new_dependencies",
        &format!(
            "lib/web/package-lock.json gains the dependency package: node_modules/lodash \
             (resolved {evil}: not a registry tarball of lodash)"
        ),
    );
}

#[test]
fn a_schema_change_is_denied() {
    let patch = edit(
        "src/db/orders.rs",
        &[],
        &[
            "    conn.execute(\"ALTER TABLE orders",
            "        ADD COLUMN note TEXT\")?;",
        ],
    );
    let a = judge(&patch, Pattern::Other, &[], &trusted());
    assert_denied(
        &a,
        "content.schema_changes",
        "src/db/orders.rs:3 adds ALTER TABLE",
    );
    assert_denied(
        &a,
        "content.schema_changes",
        "src/db/orders.rs:4 adds ADD COLUMN",
    );

    let patch = "diff --git a/src/app/migrations/0007_note.py b/src/app/migrations/0007_note.py\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n+++ b/src/app/migrations/0007_note.py\n@@ -0,0 +1 @@\n+operations = []\n";
    let a = judge(patch, Pattern::Other, &[], &trusted());
    assert_denied(
        &a,
        "content.schema_changes",
        "src/app/migrations/0007_note.py is a migration",
    );
    // Deleting one is a schema change too.
    let gone = "diff --git a/src/app/migrations/0006.py b/src/app/migrations/0006.py\ndeleted file mode 100644\nindex 1111111..0000000\n--- a/src/app/migrations/0006.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-operations = []\n";
    let a = judge(gone, Pattern::Other, &[], &trusted());
    assert_denied(
        &a,
        "content.schema_changes",
        "src/app/migrations/0006.py is a migration",
    );
}

#[test]
fn truncate_rename_and_comment_on_are_schema_changes_and_a_rename_attribute_is_not() {
    let patch = edit(
        "src/db/cleanup.rs",
        &[],
        &[
            "    conn.execute(\"truncate /* all of it */",
            "        TABLE orders\")?;",
            "    conn.execute(\"ALTER SEQUENCE s RENAME TO t\")?;",
            "    conn.execute(\"COMMENT ON TABLE orders IS 'gone'\")?;",
        ],
    );
    let a = judge(&patch, Pattern::Other, &[], &trusted());
    for hit in [
        "src/db/cleanup.rs:3 adds TRUNCATE TABLE",
        "src/db/cleanup.rs:5 adds RENAME",
        "src/db/cleanup.rs:6 adds COMMENT ON",
    ] {
        assert_denied(&a, "content.schema_changes", hit);
    }

    let patch = edit(
        "src/model.rs",
        &[],
        &[
            "    #[serde(rename = \"id\")]",
            "    // Truncate the name, then rename the file.",
            "    name.truncate(MAX);",
        ],
    );
    let a = judge(&patch, Pattern::Other, &[], &trusted());
    assert!(
        !a.rules.iter().any(|h| h.rule == "content.schema_changes"),
        "{:#?}",
        a.rules
    );
}

#[test]
fn a_window_turns_auto_into_needs_approval() {
    let ctx = Context {
        now: LUNCH,
        ..trusted()
    };
    let a = judge(
        &timeout_bump("src/api/client.rs"),
        Pattern::TimeoutBump,
        &[],
        &ctx,
    );
    assert_eq!(a.decision, Decision::NeedsApproval);
    assert_eq!(
        fired(&a, Effect::NeedsApproval),
        ["windows: inside the no-unattended window \"lunch peak\" (mon,tue,wed,thu,fri 11:30-13:30 UTC+01:00)"]
    );
}

#[test]
fn another_service_is_denied() {
    let diff = diff::parse(&timeout_bump("src/a.rs")).unwrap();
    let tree = tree_of(&diff, base_of(&diff), &[], None).unwrap();
    let mut p = proposal(Pattern::TimeoutBump);
    p.service = "billing".to_owned();
    let a = assess(
        &example(),
        &NeverList::default(),
        &p,
        &diff,
        &tree,
        &trusted(),
    );
    assert_denied(
        &a,
        "services.allow",
        "service \"billing\" is not one AI changes may target",
    );
}

#[test]
fn an_untrusted_pattern_other_or_a_risky_change_needs_a_person() {
    let ctx = Context {
        pattern_trusted: false,
        track_record: TrackRecord {
            approved: 3,
            healthy: 3,
            rollbacks: 0,
        },
        ..trusted()
    };
    let a = judge(
        &timeout_bump("src/api/client.rs"),
        Pattern::TimeoutBump,
        &[],
        &ctx,
    );
    assert_eq!(a.decision, Decision::NeedsApproval);
    assert_eq!(
        fired(&a, Effect::NeedsApproval),
        ["trust.not_promoted: timeout-bump is not trusted to deploy alone yet: it needs 10 approved changes that stayed healthy with no rollback since (record: 3 approved, 3 healthy, 0 rolled back)"]
    );

    let a = judge(
        &edit("src/a.rs", &["x"], &["y"]),
        Pattern::Other,
        &[],
        &trusted(),
    );
    assert_eq!(a.decision, Decision::NeedsApproval);
    assert!(fired(&a, Effect::NeedsApproval)[0]
        .starts_with("trust.human_only: other changes always need a person"));

    let a = judge(
        &timeout_bump("src/checkout/pay.rs"),
        Pattern::TimeoutBump,
        &[],
        &trusted(),
    );
    assert_eq!(a.decision, Decision::NeedsApproval, "{:#?}", a.risk);
    let hits = fired(&a, Effect::NeedsApproval);
    assert!(hits[0].starts_with("risk.auto_below: risk "), "{hits:?}");
    let critical = &a.risk.factors[0];
    assert_eq!(
        (critical.name.as_str(), critical.points),
        ("path_criticality", 40)
    );
    assert!(
        critical
            .why
            .contains("src/checkout/pay.rs (src/checkout/**)"),
        "{}",
        critical.why
    );
}

#[test]
fn a_real_nil_check_passes() {
    let patch = edit(
        "src/cart/view.go",
        &[],
        &["\tif cart.User == nil {", "\t\treturn ErrNoUser", "\t}"],
    );
    let a = judge(&patch, Pattern::NilCheck, &[], &trusted());
    assert!(fired(&a, Effect::Deny).is_empty(), "{:#?}", a.rules);
    assert_eq!(
        a.pattern_check,
        PatternCheck::Consistent {
            pattern: Pattern::NilCheck
        }
    );
}

#[test]
fn the_assessment_serializes_for_the_store() {
    let a = judge(
        &timeout_bump("src/auth/x.rs"),
        Pattern::TimeoutBump,
        &[],
        &trusted(),
    );
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["decision"], "deny");
    assert_eq!(json["rules"][0]["rule"], "paths.deny");
    assert_eq!(json["rules"][0]["effect"], "deny");
    assert_eq!(json["pattern_check"]["result"], "consistent");
    assert_eq!(json["facts"]["files"], 1);
    assert!(json["risk"]["factors"].as_array().unwrap().len() >= 5);
    assert_eq!(Decision::NeedsApproval.as_str(), "needs_approval");
}

#[test]
fn many_hits_of_one_rule_are_summed_up() {
    let many: String = (0..14)
        .map(|i| timeout_bump(&format!("infra/m{i}.tf")))
        .collect();
    let a = judge(&many, Pattern::TimeoutBump, &[], &trusted());
    let deny: Vec<_> = a.rules.iter().filter(|h| h.rule == "paths.deny").collect();
    assert_eq!(deny.len(), 11);
    assert_eq!(deny[10].message, "and 4 more like these");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => Just("src".to_owned()),
            2 => Just("auth".to_owned()),
            2 => Just("migrations".to_owned()),
            2 => Just("lib".to_owned()),
            3 => Just("a.rs".to_owned()),
            2 => Just("..".to_owned()),
            1 => Just(".".to_owned()),
        ]
    }

    fn rel_path(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(component(), 1..max).prop_map(|c| c.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Whatever the paths and symlinks: no panic, a literally denied path is always a deny,
        /// and `auto` only ever comes with no rule at all.
        #[test]
        fn assess_denies_what_the_globs_deny_and_never_panics(
            paths in proptest::collection::vec(rel_path(4), 1..4),
            links in proptest::collection::vec((rel_path(3), rel_path(4)), 0..4),
            now in 0i64..4_000_000_000,
        ) {
            let mut patch = String::new();
            for p in &paths {
                patch.push_str(&edit(p, &["timeout = 5"], &["timeout = 6"]));
            }
            let Ok(diff) = diff::parse(&patch) else {
                // Only paths with `.`/`..` components are refused.
                prop_assert!(paths.iter().any(|p| p.split('/').any(|c| c == "." || c == "..")));
                return Ok(());
            };
            let links: Vec<(&str, &str)> =
                links.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
            // A path through one of the links, or two sections of one file: git refuses it.
            let Ok(tree) = tree_of(&diff, base_of(&diff), &links, None) else {
                return Ok(());
            };
            let policy = example();
            let a = assess(
                &policy,
                &NeverList::default(),
                &proposal(Pattern::TimeoutBump),
                &diff,
                &tree,
                &Context { now, ..trusted() },
            );
            for p in &paths {
                if matches!(policy.paths.check(p), PathVerdict::Denied(_)) {
                    prop_assert_eq!(a.decision, Decision::Deny);
                }
            }
            if a.decision == Decision::Auto {
                prop_assert!(a.rules.is_empty());
            }
            prop_assert!(a.risk.score <= 100);
        }
    }
}

#[test]
fn a_megabyte_patch_is_judged_quickly_and_denied_for_its_size() {
    let body: Vec<String> = (0..20)
        .map(|i| format!("timeout_{i} = 5 // padding padding"))
        .collect();
    let body: Vec<&str> = body.iter().map(String::as_str).collect();
    let patch: String = (0..1000)
        .map(|i| edit(&format!("src/m{i}/f.rs"), &body, &body))
        .collect();
    assert!(patch.len() > 1_000_000, "{}", patch.len());
    let started = std::time::Instant::now();
    let a = judge(&patch, Pattern::TimeoutBump, &[], &trusted());
    assert_denied(&a, "limits.max_files", "touches 1000 files");
    assert!(a.rules.len() < 60, "capped per rule: {}", a.rules.len());
    // Generous: it takes milliseconds; this only catches a quadratic slip.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_cap_of_a_timeout_bump_holds_for_the_whole_file_however_the_patch_splits_it() {
    let one = |from: &str, to: &str| {
        format!("diff --git a/src/c.toml b/src/c.toml\nindex 1111111..2222222 100644\n--- a/src/c.toml\n+++ b/src/c.toml\n@@ -1 +1 @@\n-timeout = {from}\n+timeout = {to}\n")
    };
    let base: BTreeMap<String, Blob> =
        [("src/c.toml".to_owned(), blob(0o100644, b"timeout = 600\n"))].into();
    // Each section alone is a 100x bump.
    let first = diff::parse(&one("600", "60000")).unwrap();
    let tree = tree_of(&first, base.clone(), &[], None).unwrap();
    let a = assess(
        &example(),
        &NeverList::default(),
        &proposal(Pattern::TimeoutBump),
        &first,
        &tree,
        &trusted(),
    );
    assert_eq!(a.decision, Decision::Auto, "{:#?}", a.rules);
    // Two sections of one file (a series): git's diff of the whole change is 600 -> 6,000,000.
    let series = diff::parse(&format!(
        "{}{}",
        one("600", "60000"),
        one("60000", "6000000")
    ))
    .unwrap();
    let tree = tree_of(&series, base, &[], Some(&one("600", "6000000"))).unwrap();
    let a = assess(
        &example(),
        &NeverList::default(),
        &proposal(Pattern::TimeoutBump),
        &series,
        &tree,
        &trusted(),
    );
    assert_denied(
        &a,
        "pattern_mismatch",
        "src/c.toml:1 does not raise a time by a factor of more than 1 and at most 100",
    );
}
