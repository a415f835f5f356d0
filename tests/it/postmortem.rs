//! `guardian postmortem ID`: the real binary on a state database built through the store's
//! API with a whole rollback story (deployed, regressed, reverted, redeployed, recovered) and
//! the traffic series around it. The Markdown is compared with
//! `tests/it/expected/postmortem_cli.md` (`UPDATE_EXPECT=1` rewrites it).

use std::path::{Path, PathBuf};

use expect_test::expect_file;

use serde_json::{json, Value};

use guardian::series::SeriesPoint;
use guardian::store::{ChangeKind, ChangeState, EventKind, NewChange, Store};

use super::common::{code, guardian, stderr, stdout, CHANGE_AT};

const COMMIT: &str = "8f5cdf6d89649a949abaae7438f8913a7eebb0e5";
const REVERT: &str = "2016a11284b6a1801cc359b5ec1cdee1f24d3d35";

fn report() -> Value {
    json!({
        "verdict": "regressed", "decided_at": CHANGE_AT + 3.1, "design": "before_after",
        "change_at": CHANGE_AT, "watch_ends_at": CHANGE_AT + 600.0,
        "requests_before": 3100, "requests_after": 156, "unlabelled_requests": 0,
        "signals": [{
            "signal": "errors", "regressed": true, "e_value": 444.0,
            "e_value_threshold": 166.7, "alpha": 0.006, "null_ratio": 1.1,
            "baseline": {"requests": 3100, "events": 31, "rate": 0.01},
            "after": {"requests": 156, "events": 69, "rate": 0.4423},
            "effect_ratio": 44.2, "ratio_upper_bound": 65.0, "within_limits": null,
            "threshold_ms": null, "routes_compared": 1, "dispersion": 1.0
        }]
    })
}

/// The recovery check's report, as the daemon records it: errors back to 0.80%.
fn recovery_report() -> Value {
    let mut r = report();
    r["verdict"] = json!("healthy");
    r["decided_at"] = json!(CHANGE_AT + 22.5);
    r["change_at"] = json!(CHANGE_AT + 3.6);
    r["signals"][0]["regressed"] = json!(false);
    r["signals"][0]["after"] = json!({"requests": 500, "events": 4, "rate": 0.008});
    r
}

/// What `daemon::actions::revert::run` records for a revert and a redeploy that worked.
fn rollback() -> Value {
    json!({
        "revert_commit": REVERT,
        "escalation": null,
        "steps": [
            {"step": "git revert", "result": "reverted", "commit": REVERT, "commands": [
                {"args": ["revert", "--no-commit", "--no-edit", COMMIT], "status": 0,
                 "stdout": "", "stderr": ""},
                {"args": ["commit", "--no-verify", "-F", "-"], "status": 0,
                 "stdout": "", "stderr": ""}
            ]},
            {"step": "redeploy hook", "command": ["sh", "/srv/shop/redeploy.sh"],
             "summary": "exit 0 after 0.4 s",
             "outcome": {"status": {"kind": "succeeded"},
                         "duration": {"secs": 0, "nanos": 400_000_000}, "pid": 4242,
                         "stdout": "deployed 2016a11\n", "stderr": "", "dropped_bytes": 0,
                         "notes": []}}
        ]
    })
}

/// A state database holding the story; returns the change id.
fn story(db: &Path) -> String {
    let t = CHANGE_AT;
    let mut store = Store::open(db).unwrap();
    let id = store
        .insert_change(
            &NewChange {
                commit: COMMIT.into(),
                kind: ChangeKind::Ai,
                pattern: Some("input-validation".into()),
                summary: Some("validate cart items strictly".into()),
                landed_at: t,
                fixes_issue: None,
                flag: None,
            },
            t + 0.1,
        )
        .unwrap()
        .id;
    let report = report().to_string();
    store
        .set_state(
            &id,
            ChangeState::Regressed,
            Some(&report),
            Some(t + 3.1),
            None,
            t + 3.2,
        )
        .unwrap();
    store
        .set_state(
            &id,
            ChangeState::RollingBack,
            None,
            None,
            Some("rolling back: errors 1.00% -> 44.23% (44.2x), e-value 444 >= 167"),
            t + 3.2,
        )
        .unwrap();
    store
        .record_event(&id, EventKind::Rollback, &rollback(), t + 3.6)
        .unwrap();
    store
        .set_state(
            &id,
            ChangeState::Verifying,
            None,
            None,
            Some(&format!(
                "reverted in {REVERT} and redeployed; checking recovery for 15 s"
            )),
            t + 3.6,
        )
        .unwrap();
    store
        .record_event(
            &id,
            EventKind::RecoveryCheck,
            &json!({"verdict": "healthy", "report": recovery_report()}),
            t + 22.5,
        )
        .unwrap();
    store
        .set_state(
            &id,
            ChangeState::RolledBack,
            None,
            None,
            Some("reverted and redeployed; the service is back to its baseline"),
            t + 22.5,
        )
        .unwrap();
    // A minute of baseline, the bad bin, then recovery; one bin missing before the deploy.
    let base = t as i64;
    let points: Vec<SeriesPoint> = (-6..6)
        .filter(|i| *i != -3)
        .map(|i| SeriesPoint {
            at: base + i * 10,
            requests: 500,
            errors: if i == 0 { 221 } else { 5 },
            p50_ms: Some(11.1),
            p99_ms: Some(if i == 0 { 14.0 } else { 12.3 }),
        })
        .collect();
    store.append_series(&points).unwrap();
    id
}

/// Absolute: expect-test resolves a relative path from the topmost directory holding a
/// Cargo.toml, which need not be this crate's.
fn expected_path() -> PathBuf {
    super::common::root().join("tests/it/expected/postmortem_cli.md")
}

#[test]
fn the_post_mortem_of_a_rollback_is_written_from_the_state_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("guardian.db");
    let id = story(&db);
    let db_arg = db.to_str().unwrap();

    let out = guardian(&["postmortem", &id, "--db", db_arg]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The id is random: the expectation names it chg_ID.
    let markdown = stdout(&out).replace(&id, "chg_ID");
    expect_file![expected_path()].assert_eq(&markdown);
    assert!(markdown
        .starts_with("# Post-mortem: the service: rolled back \u{2014} commit 8f5cdf6d89\n"));
    assert!(markdown.contains("| 16:00:22 | +22.5 s | Recovered."));

    // With the config: the database is found in its state_dir, the service named from it.
    let config = dir.path().join("guardian.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nservice = \"shop\"\nstate_dir = {:?}\nlisten = \"127.0.0.1:0\"\n\
             token_file = {:?}\n\n[[daemon.logs]]\nname = \"access\"\npath = {:?}\n\
             format = \"jsonl\"\n",
            dir.path(),
            dir.path().join("token"),
            dir.path().join("access.jsonl"),
        ),
    )
    .unwrap();
    let out = guardian(&["postmortem", &id, "--config", config.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let named = stdout(&out);
    assert!(
        named.starts_with("# Post-mortem: shop: rolled back"),
        "{named}"
    );
    assert!(
        named.contains("Commit 8f5cdf6d89 made shop worse"),
        "{named}"
    );
    assert_eq!(named.lines().count(), markdown.lines().count());

    let out = guardian(&["postmortem", &id, "--db", db_arg, "--svg"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let svg = stdout(&out);
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    for label in [
        "deploy",
        "decision: regressed",
        "revert",
        "redeploy",
        "recovered",
    ] {
        assert!(
            svg.contains(&format!("data-label=\"{label}\"")),
            "{label}: {svg}"
        );
    }
    // The series was read: one line of errors broken by the missing bin.
    assert_eq!(
        svg.matches("<polyline class=\"errors\"").count(),
        2,
        "{svg}"
    );

    let out = guardian(&["postmortem", &id, "--db", db_arg, "--html"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let html = stdout(&out);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains(svg.trim_end()));
}

#[test]
fn an_unknown_change_or_a_missing_database_is_bad_input_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("guardian.db");
    story(&db);
    let out = guardian(&["postmortem", "chg_nope", "--db", db.to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("no change with id \"chg_nope\""),
        "{}",
        stderr(&out)
    );

    let missing = dir.path().join("elsewhere.db");
    let out = guardian(&["postmortem", "chg_x", "--db", missing.to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("no state database at"),
        "{}",
        stderr(&out)
    );
    assert!(
        !missing.exists(),
        "a mistyped path must not become a database"
    );

    let out = guardian(&["postmortem", "chg_x"]);
    assert_eq!(code(&out), 2, "--config or --db is required");
    let out = guardian(&["postmortem", "chg_x", "--db", "x", "--svg", "--html"]);
    assert_eq!(code(&out), 2, "one format at a time");
}
