//! Fixtures for the git adapter's tests: real repositories in temporary directories, set up
//! with plain git isolated from the host's config.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::{Repo, RevertRequest, Scratch};
use crate::trust::TreeChange;

/// Plain git for setting up fixtures: isolated from the host's config,
/// identity on the command line (so the repository has none of its own).
pub(super) fn raw_git(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LC_ALL", "C");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs")
}

pub(super) fn git(dir: &Path, args: &[&str]) -> String {
    let out = raw_git(dir, args);
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub(super) fn init() -> (TempDir, PathBuf) {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("app");
    fs::create_dir(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    (tmp, dir)
}

pub(super) fn commit(dir: &Path, file: &str, content: &str, message: &str) -> String {
    fs::write(dir.join(file), content).unwrap();
    git(dir, &["add", file]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

pub(super) fn request(commits: &str, intent: &str) -> RevertRequest {
    RevertRequest {
        commits: commits.to_string(),
        change_id: "chg-42".to_string(),
        intent: intent.to_string(),
        reason: "5xx rate rose from 0.2% to 4.1% over 1,200 requests (e-value 412 > 20)"
            .to_string(),
        evidence_url: Some("https://guardian.example/changes/chg-42".to_string()),
    }
}

pub(super) fn trailers(dir: &Path, key: &str) -> Vec<String> {
    let format = format!("--format=%(trailers:key={key},valueonly)");
    git(dir, &["log", "-1", &format])
        .lines()
        .map(str::to_string)
        .collect()
}

pub(super) fn count(dir: &Path) -> usize {
    git(dir, &["rev-list", "--count", "HEAD"]).parse().unwrap()
}

pub(super) fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file)).unwrap()
}

/// What the gate judges: the tree git makes of `patch` on `base`.
pub(super) fn judged(repo: &Repo, base: &str, patch: &str) -> TreeChange {
    match repo.scratch_apply(base, patch, &[]).unwrap() {
        Scratch::Applied(t) => *t,
        Scratch::Refused(why) => panic!("{why}"),
    }
}
