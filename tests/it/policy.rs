//! The policy suite with real git: each change is committed in a temporary repository and handed
//! over as `git format-patch` output, the way an agent hands it to the guardian; git applies it
//! in a scratch index (`git::Repo::scratch_apply`), as the daemon does. Then `trust::assess`
//! with the shipped `config/policy.toml` must deny what it must deny and let through what it
//! must.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use guardian::git::{Repo, Scratch};
use guardian::trust::{
    self, diff, Assessment, Context, Decision, Effect, NeverList, Pattern, Policy, ProposalFacts,
    TrackRecord,
};

use crate::common::root;

/// Thursday 2026-11-26, 09:00 UTC: outside the example's lunch window.
const MORNING: i64 = 1_795_651_200 + 9 * 3600;
/// 11:00 UTC the same day: 12:00 at +01:00, inside it.
const LUNCH: i64 = 1_795_651_200 + 11 * 3600;

/// Plain git, isolated from the host's config, with an identity on the command line.
fn git(dir: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args([
            "-c",
            "user.name=Agent",
            "-c",
            "user.email=agent@example.com",
        ])
        .args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(&key);
        }
    }
    let out = cmd
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LC_ALL", "C")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository with an ordinary service layout, committed as the base.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    base: String,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::TempDir::new().unwrap();
        let dir = tmp.path().join("shop");
        fs::create_dir(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        let fx = Fixture {
            _tmp: tmp,
            dir,
            base: String::new(),
        };
        for (path, text) in [
            ("src/api/client.rs", "pub fn client() -> Client {\n    Client::builder()\n        .timeout(Duration::from_secs(5))\n        .build()\n}\n"),
            ("src/cart/view.go", "package cart\n\nfunc Name(c *Cart) string {\n\treturn c.User.Name\n}\n"),
            ("src/db/orders.rs", "pub fn migrate(conn: &Conn) -> Result<()> {\n    Ok(())\n}\n"),
            ("src/auth/tokens.rs", "pub const TTL_SECS: u64 = 3600;\n"),
            ("src/payments/stripe.rs", "pub const TIMEOUT_MS: u64 = 500;\n"),
            ("migrations/0001_init.sql", "CREATE TABLE orders (id INT);\n"),
            ("infra/main.tf", "timeout = 30\n"),
            (".github/workflows/ci.yml", "timeout-minutes: 10\n"),
            ("deploy/prod.yaml", "timeout: 5s\n"),
            ("config/guardian.toml", "[detector]\n"),
            ("lib/web/package.json", "{\n  \"dependencies\": {\n    \"lodash\": \"^4.17.21\"\n  }\n}\n"),
        ] {
            fx.write(path, text);
        }
        let mut fx = fx;
        fx.base = fx.commit("base");
        fx
    }

    fn write(&self, path: &str, text: &str) {
        let full = self.dir.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, text).unwrap();
    }

    fn commit(&self, message: &str) -> String {
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-q", "-m", message]);
        git(&self.dir, &["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// Commits the edits and returns `git format-patch` of everything since the base.
    fn propose(&self, edits: &[(&str, &str)], message: &str) -> String {
        for (path, text) in edits {
            self.write(path, text);
        }
        self.commit(message);
        self.patch()
    }

    fn patch(&self) -> String {
        let range = format!("{}..HEAD", self.base);
        git(&self.dir, &["format-patch", "-M", "--stdout", &range])
    }

    fn replace(&self, path: &str, from: &str, to: &str) -> (String, String) {
        let text = fs::read_to_string(self.dir.join(path)).unwrap();
        assert!(text.contains(from), "{path} lacks {from:?}");
        (path.to_owned(), text.replacen(from, to, 1))
    }
}

fn policy() -> Policy {
    Policy::parse(&fs::read_to_string(root().join("config/policy.toml")).unwrap()).unwrap()
}

fn context(now: i64) -> Context {
    Context {
        now,
        pattern_trusted: true,
        track_record: TrackRecord {
            approved: 12,
            healthy: 12,
            rollbacks: 0,
        },
        recent_rollbacks: 0,
        error_budget_remaining: Some(0.95),
        traffic_ratio: Some(0.7),
    }
}

/// What git makes of `patch` on `base` in a scratch index: the tree, or why it refuses.
fn scratch(
    repo_dir: &Path,
    base: &str,
    patch: &str,
) -> Result<(diff::Diff, trust::TreeChange), String> {
    let diff = diff::parse(patch).map_err(|e| e.to_string())?;
    let repo = Repo::open(repo_dir).unwrap();
    match repo
        .scratch_apply(base, patch, &diff.facts().paths)
        .unwrap()
    {
        Scratch::Applied(tree) => Ok((diff, *tree)),
        Scratch::Refused(why) => Err(why),
    }
}

/// Assesses `patch` as the gate does: parsed, applied by git in a scratch index, judged.
fn assess_in(repo_dir: &Path, base: &str, patch: &str, pattern: Pattern, now: i64) -> Assessment {
    let (diff, tree) = scratch(repo_dir, base, patch).unwrap_or_else(|e| panic!("{e}\n{patch}"));
    let proposal = ProposalFacts {
        service: "shop".to_owned(),
        pattern,
        tests_run: true,
    };
    trust::assess(
        &policy(),
        &NeverList::default(),
        &proposal,
        &diff,
        &tree,
        &context(now),
    )
}

fn assess(fx: &Fixture, patch: &str, pattern: Pattern) -> Assessment {
    assess_in(&fx.dir, &fx.base, patch, pattern, MORNING)
}

#[track_caller]
fn assert_denied(a: &Assessment, rule: &str, mentions: &str) {
    assert_eq!(a.decision, Decision::Deny, "{:#?}", a.rules);
    assert!(
        a.rules
            .iter()
            .any(|h| h.effect == Effect::Deny && h.rule == rule && h.message.contains(mentions)),
        "no {rule} naming {mentions:?} in {:#?}",
        a.rules
    );
}

#[test]
fn each_forbidden_area_is_denied() {
    for (path, from, to, glob) in [
        ("src/auth/tokens.rs", "3600", "7200", "**/auth/**"),
        ("src/payments/stripe.rs", "500", "2000", "**/payments/**"),
        ("migrations/0001_init.sql", "INT", "BIGINT", "migrations/**"),
        ("infra/main.tf", "30", "60", "infra/**"),
        (".github/workflows/ci.yml", "10", "20", ".github/**"),
        ("deploy/prod.yaml", "5s", "10s", "deploy/**"),
        (
            "config/guardian.toml",
            "[detector]",
            "[detector]\nalpha = 0.5",
            "**/guardian.toml",
        ),
    ] {
        let fx = Fixture::new();
        let edit = fx.replace(path, from, to);
        let patch = fx.propose(&[(&edit.0, &edit.1)], &format!("touch {path}"));
        let a = assess(&fx, &patch, Pattern::TimeoutBump);
        assert_denied(
            &a,
            "paths.deny",
            &format!("{path} matches the denied glob \"{glob}\""),
        );
    }
}

#[test]
fn a_real_timeout_bump_deploys_alone_and_inside_the_window_waits() {
    let fx = Fixture::new();
    let edit = fx.replace("src/api/client.rs", "from_secs(5)", "from_secs(15)");
    let patch = fx.propose(&[(&edit.0, &edit.1)], "Bump the client timeout to 15 s");
    let a = assess(&fx, &patch, Pattern::TimeoutBump);
    assert_eq!(a.decision, Decision::Auto, "{:#?}", a.rules);
    assert_eq!((a.facts.lines_added, a.facts.lines_removed), (1, 1));

    let a = assess_in(&fx.dir, &fx.base, &patch, Pattern::TimeoutBump, LUNCH);
    assert_eq!(a.decision, Decision::NeedsApproval);
    assert_eq!(a.rules.len(), 1, "{:#?}", a.rules);
    assert_eq!(a.rules[0].rule, "windows");
    assert!(
        a.rules[0].message.contains("lunch peak"),
        "{}",
        a.rules[0].message
    );
}

#[test]
fn a_real_nil_check_deploys_alone() {
    let fx = Fixture::new();
    let edit = fx.replace(
        "src/cart/view.go",
        "\treturn c.User.Name",
        "\tif c.User == nil {\n\t\treturn \"\"\n\t}\n\treturn c.User.Name",
    );
    let patch = fx.propose(&[(&edit.0, &edit.1)], "Guard against a cart without a user");
    let a = assess(&fx, &patch, Pattern::NilCheck);
    assert_eq!(a.decision, Decision::Auto, "{:#?}", a.rules);
}

#[test]
fn a_mislabelled_pattern_is_denied() {
    let fx = Fixture::new();
    let edit = fx.replace(
        "src/api/client.rs",
        "        .timeout(Duration::from_secs(5))",
        "        .timeout(Duration::from_secs(15))\n        .danger_accept_invalid_certs(true)",
    );
    let patch = fx.propose(&[(&edit.0, &edit.1)], "Bump the timeout");
    let a = assess(&fx, &patch, Pattern::TimeoutBump);
    assert_denied(
        &a,
        "pattern_mismatch",
        "claimed timeout-bump, but src/api/client.rs:3 removes 1 and adds 2 lines",
    );
}

#[test]
fn an_oversize_diff_is_denied() {
    let fx = Fixture::new();
    let body: String = (0..100)
        .map(|i| format!("pub const T{i}: u64 = {i};\n"))
        .collect();
    let patch = fx.propose(&[("src/api/consts.rs", &body)], "Lots of constants");
    let a = assess(&fx, &patch, Pattern::Other);
    assert_denied(
        &a,
        "limits.max_lines",
        "adds 100 and removes 0 lines (100); the limit is 80",
    );

    let fx = Fixture::new();
    let files: Vec<(String, String)> = (0..6)
        .map(|i| (format!("src/api/m{i}.rs"), "pub fn f() {}\n".to_owned()))
        .collect();
    let edits: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let patch = fx.propose(&edits, "Six files");
    let a = assess(&fx, &patch, Pattern::Other);
    assert_denied(&a, "limits.max_files", "touches 6 files; the limit is 5");
}

#[test]
fn a_dot_dot_path_trick_is_refused_when_the_patch_is_read() {
    let fx = Fixture::new();
    let edit = fx.replace("src/api/client.rs", "from_secs(5)", "from_secs(15)");
    let patch = fx.propose(&[(&edit.0, &edit.1)], "Bump");
    let tricked = patch.replace("/src/api/client.rs", "/src/../migrations/0001_init.sql");
    assert_ne!(tricked, patch);
    let e = diff::parse(&tricked).unwrap_err();
    let header = tricked
        .lines()
        .position(|l| l.starts_with("diff --git"))
        .unwrap()
        + 1;
    assert_eq!(e.line, header, "{e}");
    assert!(e.to_string().contains("has a `..` component"), "{e}");
}

#[cfg(unix)]
#[test]
fn a_patch_through_a_symlink_in_the_repository_is_refused_by_git() {
    // The guardian's clone has `src/util -> ../migrations` at the base.
    let fx = Fixture::new();
    std::os::unix::fs::symlink("../migrations", fx.dir.join("src/util")).unwrap();
    let base = fx.commit("a convenience link");

    // The agent's checkout has a real directory there, and writes into it.
    let agent = Fixture::new();
    let patch = agent.propose(
        &[("src/util/x.sql", "DELETE FROM orders;\n")],
        "Add a helper query",
    );
    let why = scratch(&fx.dir, &base, &patch).unwrap_err();
    assert!(why.contains("beyond a symbolic link"), "{why}");
    // The same patch against a base without the link is not denied for its path.
    let a = assess_in(&agent.dir, &agent.base, &patch, Pattern::Other, MORNING);
    assert!(
        !a.rules.iter().any(|h| h.rule.starts_with("paths")),
        "{:#?}",
        a.rules
    );
}

#[cfg(unix)]
#[test]
fn a_symlink_the_patch_adds_into_a_forbidden_area_is_denied() {
    let fx = Fixture::new();
    std::os::unix::fs::symlink("../../infra/main.tf", fx.dir.join("src/api/tf")).unwrap();
    fx.commit("link to the infrastructure");
    let patch = fx.patch();
    let a = assess(&fx, &patch, Pattern::Other);
    assert_denied(
        &a,
        "paths.symlink",
        "the new symlink src/api/tf -> ../../infra/main.tf points to infra/main.tf (via src/api/tf -> ../../infra/main.tf), which matches the denied glob \"infra/**\"",
    );
}

#[test]
fn a_rename_out_of_a_forbidden_directory_is_denied() {
    let fx = Fixture::new();
    fs::create_dir_all(fx.dir.join("src/util")).unwrap();
    git(&fx.dir, &["mv", "src/auth/tokens.rs", "src/util/tokens.rs"]);
    fx.commit("Move tokens somewhere handier");
    let patch = fx.patch();
    assert!(patch.contains("rename from src/auth/tokens.rs"), "{patch}");
    let a = assess(&fx, &patch, Pattern::Other);
    assert_denied(
        &a,
        "paths.deny",
        "src/auth/tokens.rs (renamed from) matches the denied glob \"**/auth/**\"",
    );
}

#[test]
fn a_new_dependency_is_denied() {
    let fx = Fixture::new();
    let edit = fx.replace(
        "lib/web/package.json",
        "    \"lodash\": \"^4.17.21\"",
        "    \"lodash\": \"^4.17.21\",\n    \"left-pad\": \"^1.3.0\"",
    );
    let patch = fx.propose(&[(&edit.0, &edit.1)], "Pad things");
    let a = assess(&fx, &patch, Pattern::Other);
    assert_denied(
        &a,
        "content.new_dependencies",
        "lib/web/package.json gains the dependency dependencies: left-pad (registry)",
    );
}

#[test]
fn a_schema_change_is_denied() {
    let fx = Fixture::new();
    let edit = fx.replace(
        "src/db/orders.rs",
        "    Ok(())",
        "    conn.execute(\"alter table orders add column note text\")?;\n    Ok(())",
    );
    let patch = fx.propose(&[(&edit.0, &edit.1)], "Remember notes");
    let a = assess(&fx, &patch, Pattern::Other);
    assert_denied(
        &a,
        "content.schema_changes",
        "src/db/orders.rs:2 adds ALTER TABLE (1 in the file now, 0 before)",
    );
}

#[test]
fn a_series_of_commits_is_judged_as_one_change() {
    let fx = Fixture::new();
    let first = fx.replace("src/api/client.rs", "from_secs(5)", "from_secs(10)");
    fx.propose(&[(&first.0, &first.1)], "Bump to 10 s");
    let second = fx.replace("src/payments/stripe.rs", "500", "2000");
    let patch = fx.propose(&[(&second.0, &second.1)], "And payments too");
    let d = diff::parse(&patch).unwrap();
    assert_eq!(d.commits, 2);
    let a = assess(&fx, &patch, Pattern::TimeoutBump);
    assert_denied(&a, "paths.deny", "src/payments/stripe.rs matches");
}

#[test]
fn odd_names_read_back_exactly_as_git_wrote_them() {
    let fx = Fixture::new();
    let names = [
        "src/a b/c d.rs",
        "src/café.rs",
        "src/x b/y b/z.rs",
        "src/quote\"d.rs",
        "src/tab\tname.rs",
    ];
    for name in names {
        fx.write(name, "timeout = 5\n");
    }
    fx.commit("odd names");
    git(&fx.dir, &["mv", "src/x b/y b/z.rs", "src/x b/y b/w.rs"]);
    for name in [names[0], names[1], names[3]] {
        let text = fs::read_to_string(fx.dir.join(name)).unwrap();
        fx.write(name, &text.replace('5', "6"));
    }
    fx.commit("edit them");
    let range = "HEAD~1..HEAD";
    let patch = git(&fx.dir, &["format-patch", "-M", "--stdout", range]);
    let d = diff::parse(&patch).unwrap_or_else(|e| panic!("{e}\n{patch}"));
    let mut paths = d.facts().paths;
    paths.sort();
    assert_eq!(
        paths,
        [
            "src/a b/c d.rs",
            "src/café.rs",
            "src/quote\"d.rs",
            "src/x b/y b/w.rs",
            "src/x b/y b/z.rs",
        ]
    );
    // A name with a control character is refused, naming the line.
    fx.write("src/tab\tname.rs", "timeout = 6\n");
    fx.commit("tab");
    let patch = git(&fx.dir, &["format-patch", "--stdout", "HEAD~1..HEAD"]);
    let e = diff::parse(&patch).unwrap_err();
    assert!(e.to_string().contains("control character"), "{e}");
    assert!(
        patch
            .lines()
            .nth(e.line - 1)
            .unwrap()
            .starts_with("diff --git"),
        "{e}"
    );
}
