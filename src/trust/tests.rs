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

fn judge(patch: &str, pattern: Pattern, links: &[(&str, &str)], ctx: &Context) -> Assessment {
    let diff = diff::parse(patch).unwrap_or_else(|e| panic!("{e}\n{patch}"));
    let links: Vec<(String, String)> = links
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    assess(&example(), &proposal(pattern), &diff, &links, ctx)
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
fn a_symlink_in_the_repository_into_a_forbidden_area_is_denied() {
    let patch = "diff --git a/src/util/x.sql b/src/util/x.sql\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n+++ b/src/util/x.sql\n@@ -0,0 +1 @@\n+SELECT 1;\n";
    let a = judge(
        patch,
        Pattern::Other,
        &[("src/util", "../migrations")],
        &trusted(),
    );
    assert_denied(
        &a,
        "paths.symlink",
        "src/util/x.sql is really migrations/x.sql (via src/util -> ../migrations), which matches the denied glob \"migrations/**\"",
    );
    // Without the symlink the same patch is fine as far as paths go.
    let a = judge(patch, Pattern::Other, &[], &trusted());
    assert!(fired(&a, Effect::Deny).is_empty(), "{:#?}", a.rules);
}

#[test]
fn a_symlink_the_patch_adds_is_followed_too() {
    let patch = "diff --git a/src/db b/src/db\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/src/db\n@@ -0,0 +1 @@\n+../infra\n\\ No newline at end of file\ndiff --git a/src/db/main.tf b/src/db/main.tf\nnew file mode 100644\nindex 0000000..2222222\n--- /dev/null\n+++ b/src/db/main.tf\n@@ -0,0 +1 @@\n+x\n";
    let a = judge(patch, Pattern::Other, &[], &trusted());
    assert_denied(
        &a,
        "paths.symlink",
        "the new symlink src/db -> ../infra points to infra",
    );
    assert_denied(
        &a,
        "paths.symlink",
        "src/db/main.tf is really infra/main.tf",
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
    // A regular file at the same place is followed.
    let a = judge(
        &timeout_bump("src/old"),
        Pattern::TimeoutBump,
        &[("src/old", "../migrations")],
        &trusted(),
    );
    assert_denied(&a, "paths.symlink", "src/old is really migrations");
}

#[test]
fn a_renamed_symlink_is_judged_where_its_target_now_leads() {
    let patch = "diff --git a/src/x/link b/src/link\nsimilarity index 100%\nrename from src/x/link\nrename to src/link\n";
    let links = [("src/x/link", "../../lib/ok")];
    let a = judge(patch, Pattern::Other, &links, &trusted());
    assert_denied(
        &a,
        "paths.symlink",
        "the new symlink src/link -> ../../lib/ok points outside the repository",
    );
    // Where it was, it pointed at allowed ground.
    let stay = "diff --git a/src/x/link b/src/x/link2\nsimilarity index 100%\nrename from src/x/link\nrename to src/x/link2\n";
    let a = judge(stay, Pattern::Other, &links, &trusted());
    assert!(fired(&a, Effect::Deny).is_empty(), "{:#?}", a.rules);
}

#[test]
fn symlinks_out_of_the_repository_or_in_loops_are_denied() {
    let patch = timeout_bump("src/ext/client.rs");
    let a = judge(
        &patch,
        Pattern::TimeoutBump,
        &[("src/ext", "../../outside")],
        &trusted(),
    );
    assert_denied(
        &a,
        "paths.symlink",
        "leads outside the repository (via src/ext -> ../../outside)",
    );
    let a = judge(
        &patch,
        Pattern::TimeoutBump,
        &[("src/ext", "/etc")],
        &trusted(),
    );
    assert_denied(&a, "paths.symlink", "leads outside the repository");
    let a = judge(
        &patch,
        Pattern::TimeoutBump,
        &[("src/ext", "../src/ext")],
        &trusted(),
    );
    assert_denied(&a, "paths.symlink", "more than 40 symlinks");
    // A symlink that stays in allowed ground is fine.
    let a = judge(
        &patch,
        Pattern::TimeoutBump,
        &[("src/ext", "../lib/ext")],
        &trusted(),
    );
    assert_eq!(a.decision, Decision::Auto, "{:#?}", a.rules);
}

#[test]
fn a_new_dependency_is_denied_but_a_version_bump_is_not_one() {
    let patch = edit("src/Cargo.toml", &[], &["globset = \"0.4\""]);
    let a = judge(&patch, Pattern::Other, &[], &trusted());
    assert_denied(
        &a,
        "content.new_dependencies",
        "src/Cargo.toml:3 adds \"globset = \\\"0.4\\\"\"",
    );

    let patch = edit(
        "lib/web/package.json",
        &["    \"lodash\": \"^4.17.20\","],
        &["    \"lodash\": \"^4.17.21\","],
    );
    let a = judge(&patch, Pattern::Other, &[], &trusted());
    assert!(
        !fired(&a, Effect::Deny)
            .iter()
            .any(|h| h.starts_with("content")),
        "{:#?}",
        a.rules
    );

    let patch = edit("lib/requirements-dev.txt", &[], &["requests==2.31.0"]);
    let a = judge(&patch, Pattern::Other, &[], &trusted());
    assert_denied(&a, "content.new_dependencies", "lib/requirements-dev.txt:3");
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
    let mut p = proposal(Pattern::TimeoutBump);
    p.service = "billing".to_owned();
    let a = assess(&example(), &p, &diff, &[], &trusted());
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

#[test]
fn resolve_follows_links_in_order() {
    let links: BTreeMap<String, String> = [("a", "b/c"), ("b", "d"), ("d/c", "../e")]
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    assert_eq!(
        resolve("a/x", &links, true),
        Resolved::Inside("e/x".into(), "a -> b/c, b -> d, d/c -> ../e".into())
    );
    assert_eq!(
        resolve("z/x", &links, true),
        Resolved::Inside("z/x".into(), String::new())
    );
    assert_eq!(join("src", "../../x"), None);
    assert_eq!(join(".", "x/./y/../z"), Some("x/z".into()));
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
            let policy = example();
            let a = assess(
                &policy,
                &proposal(Pattern::TimeoutBump),
                &diff,
                &links,
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
    let a = judge(
        &patch,
        Pattern::TimeoutBump,
        &[("src/m7", "../migrations")],
        &trusted(),
    );
    assert_denied(&a, "limits.max_files", "touches 1000 files");
    assert_denied(&a, "paths.symlink", "src/m7/f.rs is really migrations/f.rs");
    assert!(a.rules.len() < 60, "capped per rule: {}", a.rules.len());
    // Generous: it takes milliseconds; this only catches a quadratic slip.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
