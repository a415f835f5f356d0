//! Captures `testdata/rollbacks/` and `testdata/deploys/`: what `actions::revert::run` and
//! `deploy::run` record, serialized as the store keeps it (`serde_json::to_value(report)`,
//! stored as its `to_string()`), for real repositories and hooks in temporary directories.
//! Run once, by hand (`cargo test --lib fixture_capture -- --ignored`), on the code whose rows
//! the fixtures stand for; the tests that read them are elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::actions::revert;
use super::engine::DeployJob;
use super::supervisor::Remediation;
use crate::config::RollbackSettings;
use crate::git::{Repo, Scratch};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=Dev", "-c", "user.email=dev@example.com"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn commit(dir: &Path, file: &str, content: &str, message: &str) -> String {
    std::fs::write(dir.join(file), content).unwrap();
    git(dir, &["add", file]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

/// A work tree `app` with a bare `origin`, and a hook script that prints and ends as `hook` says.
fn setup(tmp: &TempDir, hook: &str) -> (PathBuf, RollbackSettings) {
    let dir = tmp.path().join("app");
    std::fs::create_dir(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    let origin = tmp.path().join("origin.git");
    git(
        tmp.path(),
        &["init", "-q", "--bare", "-b", "main", "origin.git"],
    );
    git(&dir, &["remote", "add", "origin", origin.to_str().unwrap()]);
    let script = tmp.path().join("redeploy.sh");
    std::fs::write(&script, hook).unwrap();
    let settings = RollbackSettings {
        repo: dir.clone(),
        push: Some(("origin".into(), "main".into())),
        hook: vec!["sh".into(), script.display().to_string()],
        hook_timeout_secs: 2,
        verify_secs: 60,
    };
    (dir, settings)
}

const HOOK_OK: &str = "echo \"deploying $GUARDIAN_COMMIT\"\necho 'deployed to 3 hosts'\n";
const HOOK_FAILS: &str = "echo 'building shop'\necho 'error: host web-2 unreachable' >&2\nexit 3\n";
const HOOK_HANGS: &str = "echo 'restarting'\nexec sleep 30\n";

fn write(dir: &str, name: &str, value: serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(dir)
        .join(format!("{name}.json"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // As `Store::record_event` stores it: the value's compact text.
    std::fs::write(&path, format!("{value}\n")).unwrap();
}

fn rollback(name: &str, hook: &str, scenario: impl FnOnce(&Path, &mut RollbackSettings) -> String) {
    let tmp = TempDir::new().unwrap();
    let (dir, mut settings) = setup(&tmp, hook);
    commit(&dir, "config.toml", "timeout_ms = 500\n", "base");
    let bad = scenario(&dir, &mut settings);
    let job = Remediation {
        change_id: "chg_0123456789ab".into(),
        commit: bad,
        reason: "errors 0.50% -> 9.03% (18.1x), e-value 412 >= 167".into(),
    };
    let mut report = revert::run(&settings, &job);
    if name == "already_reverted" {
        report = revert::run(&settings, &job);
    }
    write("rollbacks", name, serde_json::to_value(&report).unwrap());
}

#[test]
#[ignore = "captures fixtures by hand"]
fn capture_rollback_reports() {
    let bad = |dir: &Path, _: &mut RollbackSettings| {
        commit(dir, "config.toml", "timeout_ms = 5\n", "Cut the timeout")
    };
    rollback("rolled_back", HOOK_OK, bad);
    rollback("already_reverted", HOOK_OK, bad);
    rollback("hook_failed", HOOK_FAILS, bad);
    rollback("hook_timed_out", HOOK_HANGS, bad);
    rollback("hook_could_not_start", HOOK_OK, |dir, s| {
        s.hook = vec![
            "/nonexistent/redeploy".into(),
            "--env".into(),
            "prod west".into(),
        ];
        bad(dir, s)
    });
    rollback("push_failed", HOOK_OK, |dir, s| {
        s.push = Some(("upstream".into(), "main".into()));
        bad(dir, s)
    });
    rollback("conflict", HOOK_OK, |dir, s| {
        let bad = bad(dir, s);
        commit(
            dir,
            "config.toml",
            "timeout_ms = 50\n",
            "Later fix on the same line",
        );
        bad
    });
    rollback("revert_failed", HOOK_OK, |_, _| "no-such-rev".into());
    rollback("cannot_open_repository", HOOK_OK, |dir, s| {
        let bad = bad(dir, s);
        s.repo = dir.join("gone");
        bad
    });
}

fn deploy(
    name: &str,
    hook: &str,
    scenario: impl FnOnce(&Path, &mut RollbackSettings, &mut DeployJob),
) {
    let tmp = TempDir::new().unwrap();
    let (dir, mut settings) = setup(&tmp, hook);
    let base = commit(&dir, "config.toml", "timeout_ms = 500\n", "base");
    std::fs::write(dir.join("config.toml"), "timeout_ms = 1500\n").unwrap();
    let patch = format!("{}\n", git(&dir, &["diff", "--full-index"]));
    git(&dir, &["checkout", "--", "config.toml"]);
    let tree = match Repo::open(&dir)
        .unwrap()
        .scratch_apply(&base, &patch, &[])
        .unwrap()
    {
        Scratch::Applied(t) => t.tree,
        Scratch::Refused(why) => panic!("{why}"),
    };
    let mut job = DeployJob {
        proposal_id: "prp_0123456789ab".into(),
        base,
        tree,
        patch,
        intent: "prp_0123456789ab-deploy".into(),
        message: "Raise the timeout\n\nGuardian-Proposal: prp_0123456789ab\n".into(),
    };
    scenario(&dir, &mut settings, &mut job);
    let mut report = super::deploy::run(&settings, &job);
    if name == "already_applied" {
        report = super::deploy::run(&settings, &job);
    }
    write("deploys", name, serde_json::to_value(&report).unwrap());
}

#[test]
#[ignore = "captures fixtures by hand"]
fn capture_deploy_reports() {
    deploy("deployed", HOOK_OK, |_, _, _| {});
    deploy("already_applied", HOOK_OK, |_, _, _| {});
    deploy("hook_failed", HOOK_FAILS, |_, _, _| {});
    deploy("push_failed", HOOK_OK, |_, s, _| {
        s.push = Some(("upstream".into(), "main".into()));
    });
    deploy("does_not_apply", HOOK_OK, |dir, _, _| {
        commit(
            dir,
            "config.toml",
            "timeout_ms = 800\n",
            "Someone else's change",
        );
    });
    deploy("apply_failed", HOOK_OK, |_, _, job| {
        job.base = "no-such-rev".into();
    });
    deploy("cannot_open_repository", HOOK_OK, |dir, s, _| {
        s.repo = dir.join("gone");
    });
}
