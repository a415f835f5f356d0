//! flag_off end to end, on the real binary: the app of `rollback.rs`, whose broken code path is
//! behind the `new-total` feature flag it reads from a JSON file on every request; a change
//! that declares its flag regresses; guardian turns the flag off in that file within seconds,
//! checks the recovery, and reverts nothing. And a change whose declared flag is not what broke
//! it: the flag is turned off, the service stays worse, and the change is reverted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::rollback::{commit_mode, git, smtp_server, World};

/// The flags file the app reads, beside the deployed mode.
fn flags_file(w: &World) -> PathBuf {
    w.live.with_file_name("flags.json")
}

fn with_flags(smtp: std::net::SocketAddr) -> World {
    World::with_extra(
        "cp \"$GUARDIAN_REPO/mode\" \"$LIVE\"",
        30,
        Some(smtp),
        |dir: &Path| {
            let flags = dir.join("flags.json");
            std::fs::write(&flags, "{\"new-total\": true, \"new-search\": true}\n").unwrap();
            format!("\n[daemon.flag_off]\nfile = {flags:?}\nflags = [\"new-*\"]\nverify_secs = 8\n")
        },
    )
}

/// Commits `mode`, deploys it, and tells guardian the change is behind `flag`.
fn deploy_behind(w: &World, mode: &str, flag: &str) -> (String, String) {
    let sha = commit_mode(&w.repo, mode, &format!("set mode to {mode}"));
    std::fs::copy(w.repo.join("mode"), &w.live).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(["notify", "--config"])
        .arg(&w.config)
        .args([
            "--api", &w.api, "--commit", &sha, "--kind", "ai", "--flag", flag,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    (sha, id)
}

/// Waits until the change is decided, for at most `secs`; with when each state was first seen.
fn settle(w: &World, id: &str, secs: u64) -> (Value, Vec<(String, Duration)>) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut seen: Vec<(String, Duration)> = Vec::new();
    loop {
        let c = w.change(id);
        let state = c["state"].as_str().unwrap_or("").to_owned();
        if seen.last().is_none_or(|(s, _)| *s != state) {
            seen.push((state.clone(), started.elapsed()));
        }
        let open = [
            "watching",
            "regressed",
            "flagging_off",
            "rolling_back",
            "verifying",
        ];
        if !open.contains(&state.as_str()) || Instant::now() > deadline {
            return (c, seen);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The first email whose text holds `needle`, within 20 s.
fn mail_saying(inbox: &std::sync::Mutex<Vec<String>>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = inbox.lock().unwrap().iter().find_map(|m| {
            let parsed = mail_parser::MessageParser::default().parse(m.as_bytes())?;
            let text = parsed.body_text(0)?.replace("\r\n", "\n");
            text.contains(needle).then_some(text)
        });
        if let Some(text) = found {
            return text;
        }
        assert!(Instant::now() < deadline, "no email says {needle:?}");
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_regressed_change_behind_its_flag_is_mitigated_by_turning_the_flag_off_and_not_reverted() {
    let (smtp, inbox) = smtp_server();
    let w = with_flags(smtp);
    thread::sleep(Duration::from_secs(1));
    let (bad, id) = deploy_behind(&w, "broken", "new-total");
    let (change, seen) = settle(&w, &id, 90);
    assert_eq!(change["state"], "flagged_off", "{change} {seen:?}");
    assert_eq!(change["flag"], "new-total", "{change}");
    // The flag went off within seconds of the regression, without a redeploy.
    let regressed = seen
        .iter()
        .find(|(s, _)| s == "regressed" || s == "flagging_off");
    let flagging = seen.iter().find(|(s, _)| s == "flagging_off");
    assert!(flagging.is_some(), "{seen:?}");
    if let (Some((_, r)), Some((_, f))) = (regressed, flagging) {
        assert!(*f - *r < Duration::from_secs(5), "{seen:?}");
    }
    let flags: Value =
        serde_json::from_str(&std::fs::read_to_string(flags_file(&w)).unwrap()).unwrap();
    assert_eq!(
        flags,
        serde_json::json!({"new-total": false, "new-search": true}),
        "the flag is off, the other flag untouched"
    );
    // No revert: the bad commit is still what is deployed.
    assert_eq!(git(&w.repo, &["rev-parse", "HEAD"]), bad);
    assert_eq!(std::fs::read_to_string(&w.live).unwrap().trim(), "broken");
    let note = change["note"].as_str().unwrap();
    assert!(
        note.contains("mitigated by turning flag new-total off"),
        "{note}"
    );
    // The on-call email says so, and that the code is still deployed.
    let text = mail_saying(&inbox, "turned its feature flag new-total off");
    assert!(text.contains("Nothing was reverted"), "{text}");
    assert!(text.contains("still deployed"), "{text}");
    assert!(text.contains("Feature flag\n------------"), "{text}");
    assert!(
        text.contains("reverted nothing and redeployed nothing"),
        "{text}"
    );
}

#[test]
fn a_flag_that_did_not_help_is_followed_by_the_revert() {
    let (smtp, inbox) = smtp_server();
    let w = with_flags(smtp);
    thread::sleep(Duration::from_secs(1));
    // The change declares `new-search`, but what broke is not behind it.
    let (bad, id) = deploy_behind(&w, "broken", "new-search");
    let (change, seen) = settle(&w, &id, 120);
    assert_eq!(change["state"], "rolled_back", "{change} {seen:?}");
    let states: Vec<&str> = seen.iter().map(|(s, _)| s.as_str()).collect();
    assert!(states.contains(&"flagging_off"), "{seen:?}");
    let flags: Value =
        serde_json::from_str(&std::fs::read_to_string(flags_file(&w)).unwrap()).unwrap();
    assert_eq!(flags["new-search"], false, "it was turned off first");
    let head = git(&w.repo, &["log", "-1", "--format=%B"]);
    assert!(
        head.contains(&format!("Guardian-Revert-Of: {bad}")),
        "then reverted: {head}"
    );
    assert_eq!(std::fs::read_to_string(&w.live).unwrap().trim(), "ok");
    let text = mail_saying(&inbox, "Guardian reverted it");
    assert!(
        text.contains("flag new-search: turned off, but the service did not recover"),
        "{text}"
    );
}
