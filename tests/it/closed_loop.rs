//! The whole loop, end to end on the real binary: Sentry tells guardian of a new issue (signed
//! as Sentry signs), guardian runs the agent (a shell script that writes a fix in its own clone
//! and proposes it, naming no issue), the gate judges the fix, guardian deploys it through the
//! hook, watches it on the app's log and Sentry's events, and the trust ledger and the emails
//! say what became of it. Three fixes: one that does not stop its issue (`ineffective`), one
//! that does (healthy, shown fixed), one that breaks the app (rolled back).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::gate::{mail_config, wait_for_mail, Gate, ALICE};
use super::rollback::{now, smtp_server};

const SECRET: &str = "5e0c9a7b3d1f2e4a6c8b0d9f1e3a5c7b";

/// The agent: waits for the test's go, then sets the timeout the test chose (`WORK/fix`) in its
/// clone, commits, and proposes, naming no issue: guardian ties the fix to the run's issue.
const AGENT: &str = r#"#!/bin/sh
set -e
cat > WORK/input-$GUARDIAN_ISSUE.json
while [ ! -e WORK/go ]; do sleep 0.2; done
cd CHECKOUT
git fetch -q origin
git reset -q --hard origin/main
fix=$(cat WORK/fix)
sed -i "s/^timeout_ms = .*/timeout_ms = $fix/" src/settings.txt
git -c user.name=agent -c user.email=agent@example.com commit -qam "Set the upstream timeout to $fix ms (Sentry $GUARDIAN_ISSUE)"
exec GUARDIAN_BIN propose --repo CHECKOUT --commit HEAD --pattern timeout-bump \
    --summary "set the upstream timeout to $fix ms" --tests-run --json
"#;

/// Posts a signed delivery, as Sentry's integration platform sends it.
fn post(api: &str, resource: &str, body: &Value) {
    let body = body.to_string();
    let signature = guardian::sentry::webhook::sign(SECRET.as_bytes(), body.as_bytes());
    match ureq::post(&format!("{api}/v1/webhooks/sentry"))
        .set("Content-Type", "application/json")
        .set("Sentry-Hook-Resource", resource)
        .set("Sentry-Hook-Timestamp", &format!("{}", now() as u64))
        .set("Sentry-Hook-Signature", &signature)
        .send_string(&body)
    {
        Ok(r) => assert!(r.status() < 300, "{}", r.status()),
        Err(ureq::Error::Status(code, r)) => panic!("{code}: {}", r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

fn rfc3339(t: f64) -> String {
    chrono::DateTime::from_timestamp(t as i64, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An `issue` delivery: Sentry saw issue `id` (`created`), or saw it come back (`unresolved`).
fn issue(api: &str, id: &str, action: &str, first_seen: f64) {
    post(
        api,
        "issue",
        &json!({
            "action": action,
            "actor": { "id": "sentry", "name": "Sentry", "type": "application" },
            "data": { "issue": {
                "id": id,
                "shortId": format!("SHOP-{id}"),
                "title": "TimeoutError: upstream took longer than the timeout",
                "culprit": "src/upstream.py in fetch",
                "level": "error",
                "status": "unresolved",
                "substatus": if action == "created" { "new" } else { "regressed" },
                "count": "5",
                "firstSeen": rfc3339(first_seen),
                "lastSeen": rfc3339(now()),
                "metadata": { "filename": "src/upstream.py" },
                "project": { "slug": "shop" },
                "web_url": format!("https://sentry.io/organizations/acme/issues/{id}/"),
            }},
        }),
    );
}

/// An `error` delivery: event `n` of issue `id`, at `at`.
fn event(api: &str, id: &str, n: u64, at: f64) {
    post(
        api,
        "error",
        &json!({
            "action": "created",
            "data": { "error": {
                "event_id": format!("{n:032x}"),
                "issue_id": id,
                "title": "TimeoutError: upstream took longer than the timeout",
                "level": "error",
                "timestamp": at,
                "exception": { "values": [{ "stacktrace": { "frames": [
                    { "filename": "src/upstream.py", "in_app": true }
                ]}}]},
            }},
        }),
    );
}

/// The app's Sentry SDK: while the timeout deployed (guardian's clone, which the hook serves)
/// is under 700 ms, issue 100 fires twice a second.
fn sdk(api: String, deployed: std::path::PathBuf, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut n = 1_000_000;
        while !stop.load(Ordering::Relaxed) {
            let timeout: u32 = std::fs::read_to_string(&deployed)
                .ok()
                .and_then(|s| s.trim().strip_prefix("timeout_ms = ")?.parse().ok())
                .unwrap_or(0);
            if timeout < 700 {
                event(&api, "100", n, now());
                n += 1;
            }
            thread::sleep(Duration::from_millis(500));
        }
    })
}

/// Waits (at most `secs`) for the agent's `n`th proposal since `since` (the ledger's seeded
/// record is older); the newest.
fn nth_proposal(g: &Gate, since: f64, n: usize, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let list = g.get("/v1/proposals");
        let mine: Vec<Value> = list
            .as_array()
            .or_else(|| list["proposals"].as_array())
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p["proposer"] == "agent" && p["created_at"].as_f64() >= Some(since))
            .collect();
        if mine.len() >= n {
            return mine
                .into_iter()
                .max_by(|a, b| {
                    a["created_at"]
                        .as_f64()
                        .partial_cmp(&b["created_at"].as_f64())
                        .unwrap()
                })
                .unwrap();
        }
        assert!(Instant::now() < deadline, "no proposal {n}: {list}");
        thread::sleep(Duration::from_millis(250));
    }
}

/// Approves proposal `p` as alice, bound to its diff.
fn approve(g: &Gate, p: &Value) {
    let out = g.cli(
        ALICE,
        &[
            "approve",
            p["id"].as_str().unwrap(),
            "--diff",
            p["diff_hash"].as_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The change that carries out proposal `p`, once deployed and decided.
fn decided(g: &Gate, p: &Value) -> Value {
    let id = p["id"].as_str().unwrap();
    let p = g.wait_for(&format!("/v1/proposals/{id}"), 60, |p| {
        p["state"] == "deployed"
    });
    assert_eq!(p["state"], "deployed", "{p}");
    g.settle(p["change_id"].as_str().unwrap())
}

#[test]
fn sentry_to_agent_to_gate_to_watch_and_back_for_fixes_ineffective_good_and_bad() {
    let (smtp, inbox) = smtp_server();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let secret = dir.join("sentry-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let script = dir.join("agent.sh");
    let extra = format!(
        "\n[daemon.sentry]\nclient_secret_file = {secret:?}\n\n\
         [daemon.agent]\nas_guardian = true\ncommand = [\"sh\", {script:?}]\ntimeout_secs = 300\n\
         min_level = \"error\"\nmin_events = 1\nmax_runs_per_hour = 10\n{}",
        mail_config(smtp)
    );
    // A trusted pattern: its first fix deploys alone.
    let g = Gate::start_watching(10, true, &extra, "", 60);
    let quoted = |p: &std::path::Path| format!("'{}'", p.display());
    std::fs::write(
        &script,
        AGENT
            .replace("WORK", &quoted(dir))
            .replace("CHECKOUT", &quoted(&g.agent_repo))
            .replace(
                "GUARDIAN_BIN",
                &quoted(std::path::Path::new(env!("CARGO_BIN_EXE_guardian"))),
            ),
    )
    .unwrap();

    // Issue 100 has fired twice a second for ten minutes; Sentry tells guardian of it, and the
    // agent is run (it waits for the go, so the issue's history is in first).
    let t0 = now();
    issue(&g.api, "100", "created", t0 - 600.0);
    for n in 0..1200u64 {
        event(&g.api, "100", n, t0 - 600.0 + n as f64 / 2.0);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sdk = sdk(g.api.clone(), g.repo.join("src/settings.txt"), stop.clone());

    // (c) A fix that does not fix it: deployed alone, nothing worse, the issue goes on.
    std::fs::write(dir.join("fix"), "600").unwrap();
    std::fs::write(dir.join("go"), "").unwrap();
    let p = nth_proposal(&g, t0, 1, 60);
    assert_eq!(
        (p["decision"].as_str(), p["sentry_issue"].as_str()),
        (Some("auto"), Some("100")),
        "tied to the run's issue though the agent named none: {p}"
    );
    let change = decided(&g, &p);
    assert_eq!(change["state"], "ineffective", "{change}");
    assert_eq!(change["report"]["claim"]["verdict"], "still_firing");
    let alert = wait_for_mail(
        &inbox,
        &format!("{}.ineffective", change["id"].as_str().unwrap()),
    );
    for needle in [
        "The issue it claims to fix",
        "went on firing",
        "Trust:     pattern timeout-bump now needs a person's approval",
    ] {
        assert!(
            alert.contains(needle),
            "{needle:?} not in the alert:\n{alert}"
        );
    }
    let t = g.pattern("timeout-bump");
    assert_eq!(
        (t["level"].as_str(), t["ineffective"].as_u64()),
        (Some("needs_approval"), Some(1)),
        "{t}"
    );

    // (a) Sentry says it came back; the agent is run again and its fix works. It needs a
    // person now; once live the issue stops: healthy, shown fixed, credited.
    std::fs::write(dir.join("fix"), "700").unwrap();
    issue(&g.api, "100", "unresolved", t0 - 600.0);
    let p = nth_proposal(&g, t0, 2, 60);
    assert_eq!(
        (p["decision"].as_str(), p["sentry_issue"].as_str()),
        (Some("needs_approval"), Some("100")),
        "{p}"
    );
    approve(&g, &p);
    let change = decided(&g, &p);
    assert_eq!(change["state"], "healthy", "{change}");
    assert_eq!(change["report"]["claim"]["verdict"], "fixed", "{change}");
    let t = g.pattern("timeout-bump");
    assert_eq!(
        (t["earned"].as_u64(), t["ineffective"].as_u64()),
        (Some(1), Some(1)),
        "{t}"
    );

    // (b) A new issue; the agent's fix for it breaks the app: rolled back, demoted, and the
    // post-mortem names the issue and the claim.
    std::fs::write(dir.join("fix"), "5000").unwrap();
    issue(&g.api, "101", "created", now() - 30.0);
    let p = nth_proposal(&g, t0, 3, 60);
    assert_eq!(p["sentry_issue"], "101", "{p}");
    approve(&g, &p);
    let change = decided(&g, &p);
    assert_eq!(change["state"], "rolled_back", "{change}");
    let t = g.pattern("timeout-bump");
    assert_eq!(
        (
            t["level"].as_str(),
            t["rollbacks"].as_u64(),
            t["earned"].as_u64()
        ),
        (Some("needs_approval"), Some(1), Some(0)),
        "{t}"
    );
    let raw = wait_for_mail(
        &inbox,
        &format!("{}.rolled_back", change["id"].as_str().unwrap()),
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("the alert parses");
    let html = parsed.body_html(0).expect("the post-mortem").into_owned();
    for needle in [
        "The issue it claims to fix",
        "SHOP-101",
        "set the upstream timeout to 5000 ms",
    ] {
        assert!(
            html.contains(needle),
            "{needle:?} not in the post-mortem:\n{html}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    sdk.join().unwrap();
}
