//! A fix judged on the Sentry issue it names, end to end on the real binary: the agent proposes
//! a fix with `--issue`, guardian deploys it through the gate and watches it, and Sentry's
//! deliveries (signed as Sentry signs them) say whether the issue stopped. A fix after which it
//! goes on firing is `ineffective` and takes its pattern's standing; one after which it stops
//! is healthy, shown fixed, and counts towards the pattern's promotion.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::json;

use super::gate::{stdout_json, Gate, AGENT, ALICE};
use super::rollback::now;

const SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const ISSUE: &str = "4504981999";

/// One `error` delivery of an event of [`ISSUE`] that happened at `at`.
fn deliver(api: &str, n: u64, at: f64) {
    let body = json!({
        "action": "created",
        "actor": { "id": "sentry", "name": "Sentry", "type": "application" },
        "data": { "error": {
            "event_id": format!("{n:032x}"),
            "issue_id": ISSUE,
            "title": "TimeoutError: checkout took longer than 500 ms",
            "culprit": "app.checkout in pay",
            "level": "error",
            "timestamp": at,
            "exception": { "values": [{ "stacktrace": { "frames": [
                { "filename": "src/checkout.py", "in_app": true }
            ]}}]},
        }},
        "installation": { "uuid": "a8e5d37a-696c-4c54-adb5-b3f28d64c7de" },
    })
    .to_string();
    let signature = guardian::sentry::webhook::sign(SECRET.as_bytes(), body.as_bytes());
    let status = match ureq::post(&format!("{api}/v1/webhooks/sentry"))
        .set("Content-Type", "application/json")
        .set("Sentry-Hook-Resource", "error")
        .set("Sentry-Hook-Timestamp", &format!("{}", now() as u64))
        .set("Sentry-Hook-Signature", &signature)
        .send_string(&body)
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, r)) => panic!("{code}: {}", r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status, 202);
}

/// Sentry telling guardian of the issue firing twice a second while `firing` holds.
fn sentry(api: String, firing: Arc<AtomicBool>, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut n = 1_000_000;
        while !stop.load(Ordering::Relaxed) {
            if firing.load(Ordering::Relaxed) {
                deliver(&api, n, now());
                n += 1;
            }
            thread::sleep(Duration::from_millis(500));
        }
    })
}

#[test]
fn a_fix_is_judged_on_the_issue_it_names_and_the_ledger_counts_what_became_of_it() {
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), SECRET).unwrap();
    let g = Gate::start_watching(
        10,
        true,
        &format!(
            "\n[daemon.sentry]\nclient_secret_file = {:?}\n",
            secret.path()
        ),
        "",
        60,
    );
    // The issue has fired twice a second for the last ten minutes: the baseline's rate.
    let t0 = now();
    for n in 0..1200 {
        deliver(&g.api, n, t0 - 600.0 + f64::from(n as u32) / 2.0);
    }
    let (firing, stop) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(false)),
    );
    let sender = sentry(g.api.clone(), firing.clone(), stop.clone());
    let propose = |commit: &str, summary: &str| {
        stdout_json(&g.cli(
            AGENT,
            &[
                "propose",
                "--repo",
                g.agent_repo.to_str().unwrap(),
                "--commit",
                commit,
                "--pattern",
                "timeout-bump",
                "--summary",
                summary,
                "--issue",
                ISSUE,
                "--tests-run",
                "--json",
            ],
        ))
    };

    // (c) A fix that does not fix it: deployed alone (the pattern is trusted), nothing worse,
    // and the issue goes on firing.
    let first = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 600\n",
        "Raise the timeout",
    );
    let p = propose(&first, "raise the checkout timeout");
    assert_eq!(
        (p["decision"].as_str(), p["sentry_issue"].as_str()),
        (Some("auto"), Some(ISSUE)),
        "{p}"
    );
    let id = p["id"].as_str().unwrap().to_owned();
    let p = g.wait_for(&format!("/v1/proposals/{id}"), 30, |p| {
        p["state"] == "deployed"
    });
    let change = g.settle(p["change_id"].as_str().unwrap());
    assert_eq!(change["state"], "ineffective", "{change}");
    assert_eq!(
        change["report"]["claim"]["verdict"], "still_firing",
        "{change}"
    );
    assert_eq!(change["fixes_issue"], ISSUE);
    let t = g.pattern("timeout-bump");
    assert_eq!(
        (t["level"].as_str(), t["ineffective"].as_u64()),
        (Some("needs_approval"), Some(1)),
        "{t}"
    );
    assert!(
        t["why"]
            .as_str()
            .unwrap()
            .starts_with("demoted by a fix after which its issue went on firing"),
        "{t}"
    );
    let pm = g.on_host(&["postmortem", change["id"].as_str().unwrap()]);
    let pm = String::from_utf8_lossy(&pm.stdout);
    for needle in [
        "INEFFECTIVE",
        "## The issue it claims to fix",
        ISSUE,
        "went on firing",
        "src/checkout.py",
    ] {
        assert!(
            pm.contains(needle),
            "{needle:?} missing from the post-mortem:\n{pm}"
        );
    }

    // (a) A fix that does: it now needs a person, who approves it; once it is live the issue
    // stops. Healthy, shown fixed, and the approval counts towards the pattern's promotion.
    g.agent_syncs();
    let second = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 800\n",
        "Raise the timeout more",
    );
    let p = propose(&second, "raise the checkout timeout further");
    assert_eq!(p["decision"], "needs_approval", "{p}");
    let id = p["id"].as_str().unwrap().to_owned();
    let hash = p["diff_hash"].as_str().unwrap().to_owned();
    let shown = g.cli(ALICE, &["proposals", &id]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!("fixes Sentry issue {ISSUE}")),
        "the approver sees the claim: {shown}"
    );
    let out = g.cli(ALICE, &["approve", &id, "--diff", &hash]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = g.wait_for(&format!("/v1/proposals/{id}"), 30, |p| {
        p["state"] == "deployed"
    });
    firing.store(false, Ordering::Relaxed);
    let change = g.settle(p["change_id"].as_str().unwrap());
    assert_eq!(change["state"], "healthy", "{change}");
    assert_eq!(change["report"]["claim"]["verdict"], "fixed", "{change}");
    let t = g.pattern("timeout-bump");
    assert_eq!(
        (t["earned"].as_u64(), t["ineffective"].as_u64()),
        (Some(1), Some(1)),
        "{t}"
    );

    // (d) A fix naming the issue after it has stopped on its own: quiet after the change,
    // but not the fix's doing. Healthy, and no credit.
    g.agent_syncs();
    let third = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 900\n",
        "Raise the timeout again",
    );
    let p = propose(&third, "raise the checkout timeout once more");
    let id = p["id"].as_str().unwrap().to_owned();
    let hash = p["diff_hash"].as_str().unwrap().to_owned();
    let out = g.cli(ALICE, &["approve", &id, "--diff", &hash]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = g.wait_for(&format!("/v1/proposals/{id}"), 30, |p| {
        p["state"] == "deployed"
    });
    let change = g.settle(p["change_id"].as_str().unwrap());
    assert_eq!(change["state"], "healthy", "{change}");
    assert_eq!(
        change["report"]["claim"]["verdict"], "stopped_before",
        "{change}"
    );
    let t = g.pattern("timeout-bump");
    assert_eq!(t["earned"].as_u64(), Some(1), "no credit: {t}");
    let pm = g.on_host(&["postmortem", change["id"].as_str().unwrap()]);
    let pm = String::from_utf8_lossy(&pm.stdout);
    assert!(
        pm.contains("had stopped before the change"),
        "the post-mortem says why: {pm}"
    );

    // A fix naming an issue guardian never heard of is refused, saying so.
    let out = g.cli(
        AGENT,
        &[
            "propose",
            "--repo",
            g.agent_repo.to_str().unwrap(),
            "--commit",
            &second,
            "--pattern",
            "timeout-bump",
            "--summary",
            "x",
            "--issue",
            "SHOP-NOPE",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has heard of no Sentry issue \"SHOP-NOPE\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
}
