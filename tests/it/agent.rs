//! The agent trigger, for real: the daemon with the gate and Sentry's webhooks, a signed
//! `issue` delivery, and an agent that is a shell script working in its own git clone: it
//! reads its input, writes a real fix, and proposes it with `guardian propose` holding only
//! `GUARDIAN_API` and `GUARDIAN_TOKEN`. The filter, the one run per issue, and a run that hangs
//! and is stopped at its timeout, each checked on the daemon's record.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use guardian::daemon::agent::input::AgentInput;
use serde_json::{json, Value};

use super::gate::Gate;
use super::rollback::{git, now};

const SECRET: &str = "0c9e7a1d4b3c8e6f5b2f0a9d2c4b7e1f";

/// The agent: notes its run, keeps its input, then fixes the upstream timeout in its own clone
/// and proposes the fix, without naming the issue (guardian ties it to the run). On issue 300
/// it hangs instead (`sleep` in the background and in the foreground, so the whole group must
/// be stopped).
const AGENT: &str = r#"#!/bin/sh
set -e
echo "$GUARDIAN_ISSUE $GUARDIAN_RUN $$" >> WORK/runs
cat > WORK/input-$GUARDIAN_ISSUE.json
if [ "$GUARDIAN_ISSUE" = 300 ]; then
    sleep 600 &
    sleep 600
fi
cd CHECKOUT
git fetch -q origin
git reset -q --hard origin/main
sed -i 's/^timeout_ms = .*/timeout_ms = 800/' src/settings.txt
git -c user.name=agent -c user.email=agent@example.com commit -qam "Raise the upstream timeout (Sentry $GUARDIAN_ISSUE)"
exec GUARDIAN_BIN propose --repo CHECKOUT --commit HEAD --pattern timeout-bump \
    --summary "raise the upstream timeout" --tests-run --json
"#;

struct Agent {
    gate: Gate,
    /// The scripts' directory, its notes and inputs.
    work: tempfile::TempDir,
}

impl Agent {
    fn start(timeout_secs: u32) -> Agent {
        Agent::start_with(timeout_secs, "")
    }

    /// As [`Agent::start`], with `more` lines in `[daemon.sentry]`.
    fn start_with(timeout_secs: u32, more: &str) -> Agent {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path();
        let secret = dir.join("sentry-secret");
        std::fs::write(&secret, SECRET).unwrap();
        // The script is written once the agent's clone exists (it is run only on a delivery).
        let script = dir.join("agent.sh");
        let extra = format!(
            "\n[daemon.sentry]\nclient_secret_file = {secret:?}\n{more}\n\
             [daemon.agent]\nas_guardian = true\ncommand = [\"sh\", {script:?}]\ntimeout_secs = {timeout_secs}\n\
             min_level = \"error\"\nmin_events = 1\ndenied_paths = [\"**/auth/**\"]\n\
             max_runs_per_hour = 10\nmax_running = 2\n"
        );
        let gate = Gate::start_with(0, false, &extra, "");
        let quoted = |p: &Path| format!("'{}'", p.display());
        std::fs::write(
            &script,
            AGENT
                .replace("WORK", &quoted(dir))
                .replace("CHECKOUT", &quoted(&gate.agent_repo))
                .replace(
                    "GUARDIAN_BIN",
                    &quoted(Path::new(env!("CARGO_BIN_EXE_guardian"))),
                ),
        )
        .unwrap();
        Agent { gate, work }
    }

    /// Posts a signed `issue` delivery, as Sentry's integration platform sends it.
    fn deliver_issue(&self, id: &str, level: &str, action: &str, file: &str) -> u16 {
        let at = now();
        let rfc3339 = |t: f64| {
            chrono::DateTime::from_timestamp(t as i64, 0)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        let body = json!({
            "action": action,
            "actor": { "id": "sentry", "name": "Sentry", "type": "application" },
            "data": { "issue": {
                "id": id,
                "shortId": format!("SHOP-{id}"),
                "title": "TimeoutError: upstream took longer than 500 ms",
                "culprit": format!("{file} in fetch"),
                "level": level,
                "status": "unresolved",
                "substatus": "new",
                "count": "4",
                "firstSeen": rfc3339(at - 30.0),
                "lastSeen": rfc3339(at - 1.0),
                "metadata": { "filename": file },
                "project": { "slug": "shop" },
                "web_url": format!("https://sentry.io/organizations/acme/issues/{id}/"),
            }},
        })
        .to_string();
        self.post("issue", &body, at)
    }

    /// Posts a signed `error` delivery: one more event of issue `id`.
    fn deliver_event(&self, id: &str, n: u32) -> u16 {
        let at = now();
        let body = json!({
            "action": "created",
            "data": { "error": {
                "event_id": format!("{n:032x}"),
                "issue_id": id,
                "title": "TimeoutError: upstream took longer than 500 ms",
                "level": "error",
                "timestamp": at,
                "exception": { "values": [{ "stacktrace": { "frames": [
                    { "filename": "src/upstream.py", "in_app": true }
                ]}}]},
            }},
        })
        .to_string();
        self.post("error", &body, at)
    }

    fn post(&self, resource: &str, body: &str, at: f64) -> u16 {
        let signature = guardian::sentry::webhook::sign(SECRET.as_bytes(), body.as_bytes());
        match ureq::post(&format!("{}/v1/webhooks/sentry", self.gate.api))
            .set("Content-Type", "application/json")
            .set("Sentry-Hook-Resource", resource)
            .set("Sentry-Hook-Timestamp", &format!("{}", at as u64))
            .set("Sentry-Hook-Signature", &signature)
            .send_string(body)
        {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(e) => panic!("{e}"),
        }
    }

    /// The runs the agent noted: issue, run, process group.
    fn runs(&self) -> Vec<(String, String, String)> {
        std::fs::read_to_string(self.work.path().join("runs"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w[0].to_owned(), w[1].to_owned(), w[2].to_owned())
            })
            .collect()
    }

    /// Waits (at most `secs`) until the daemon's status says the run `run` ended; its status.
    fn ended(&self, run: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let agent = self.gate.get("/v1/status")["agent"].clone();
            let last = &agent["last"];
            if last["id"] == run && !last["ended_at"].is_null() {
                return agent;
            }
            assert!(Instant::now() < deadline, "run {run} did not end: {agent}");
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits (at most `secs`) for the agent to note `n` runs.
    fn wait_runs(&self, n: usize, secs: u64) -> Vec<(String, String, String)> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let runs = self.runs();
            if runs.len() >= n {
                return runs;
            }
            assert!(Instant::now() < deadline, "{} runs, not {n}", runs.len());
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `agent_finished` record of `run` on the audit trail.
    fn finished(&self, run: &str) -> Value {
        self.gate
            .trail()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|r| r["kind"] == "agent_finished" && r["detail"]["run"] == run)
            .unwrap_or_else(|| panic!("no agent_finished for {run}"))["detail"]
            .clone()
    }
}

/// The processes of group `pgid` that are not zombies, from `/proc`.
fn running_in_group(pgid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command's name in parentheses: state, parent, process group.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(2) == Some(&pgid.to_string().as_str()) && fields.first() != Some(&"Z") {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn a_new_issue_is_handed_to_the_agent_whose_fix_comes_back_through_the_gate() {
    let a = Agent::start(60);
    let deployed = git(&a.gate.repo, &["rev-parse", "HEAD"]);

    // A warning is not handed over; neither is an issue in auth code. Then a real one.
    assert_eq!(
        a.deliver_issue("200", "warning", "created", "src/upstream.py"),
        202
    );
    assert_eq!(
        a.deliver_issue("250", "error", "created", "src/auth/session.py"),
        202
    );
    assert_eq!(
        a.deliver_issue("100", "error", "created", "src/upstream.py"),
        202
    );
    // More of it while the agent runs, and after: still one run for the issue.
    assert_eq!(a.deliver_event("100", 1), 202);
    let runs = a.wait_runs(1, 30);
    let run = runs[0].1.clone();
    assert_eq!(runs[0].0, "100");
    let status = a.ended(&run, 60);
    assert_eq!(status["last"]["outcome"], "exited", "{status}");
    assert_eq!(a.deliver_event("100", 2), 202);
    thread::sleep(Duration::from_secs(2));
    let issues: Vec<String> = a.runs().into_iter().map(|r| r.0).collect();
    assert_eq!(
        issues,
        ["100"],
        "one run, on the one issue that passes the filter"
    );

    // What it was handed: the issue, its stack, the policy, the ledger, what is deployed.
    let input: AgentInput = serde_json::from_str(
        &std::fs::read_to_string(a.work.path().join("input-100.json")).unwrap(),
    )
    .unwrap();
    assert_eq!((input.schema, input.run.as_str()), (1, run.as_str()));
    assert_eq!(
        (input.service.as_str(), input.reason.as_str()),
        ("shop", "new")
    );
    assert_eq!(input.issue.short_id.as_deref(), Some("SHOP-100"));
    assert_eq!(input.issue.level.as_deref(), Some("error"));
    assert_eq!(
        input.issue.web_url.as_deref(),
        Some("https://sentry.io/organizations/acme/issues/100/")
    );
    assert_eq!(input.stack.in_app_files, ["src/upstream.py"]);
    let policy = input.policy.expect("the gate's policy");
    assert_eq!(policy.allow, ["src/**"]);
    assert_eq!(policy.deny, ["migrations/**", "**/auth/**"]);
    assert_eq!((policy.max_files, policy.max_lines), (5, 40));
    assert!(input.trust.iter().any(|t| t.pattern == "timeout-bump"));
    assert_eq!(input.deployed.map(|d| d.commit), Some(deployed));

    // Its fix came back through the gate like any other: judged, and waiting for a person.
    let proposals = a.gate.get("/v1/proposals");
    let list = proposals.as_array().unwrap();
    assert_eq!(list.len(), 1, "{proposals}");
    let p = &list[0];
    assert_eq!(
        (p["proposer"].as_str(), p["pattern"].as_str()),
        (Some("agent"), Some("timeout-bump"))
    );
    assert_eq!(p["decision"], "needs_approval", "{p}");
    assert!(p["assessment"]["risk"]["score"].is_number(), "{p}");
    // It is tied to the issue it was run on, named or not: once deployed, it is judged on
    // that issue too, and an agent cannot dodge an `ineffective` record by leaving it out.
    assert_eq!(p["sentry_issue"], input.issue.id, "{p}");
    let view = a
        .gate
        .get(&format!("/v1/proposals/{}", p["id"].as_str().unwrap()));
    assert!(
        view["patch"]
            .as_str()
            .unwrap()
            .contains("+timeout_ms = 800"),
        "{view}"
    );

    // On the record: the start, and the end with its exit, its output and its proposal.
    let trail = a.gate.trail();
    assert!(
        trail.contains("\"kind\":\"agent_started\""),
        "no agent_started on the trail"
    );
    let finished = a.finished(&run);
    assert_eq!(
        (finished["outcome"].as_str(), finished["exit_code"].as_i64()),
        (Some("exited"), Some(0))
    );
    assert_eq!(finished["issue"], "100");
    assert_eq!(finished["proposals"], json!([p["id"]]));
    assert!(
        finished["stdout_tail"]
            .as_str()
            .unwrap()
            .contains("timeout-bump"),
        "{finished}"
    );
}

#[test]
fn a_run_that_hangs_is_stopped_with_its_whole_group_at_the_timeout_and_recorded() {
    let a = Agent::start(5);
    let started = Instant::now();
    assert_eq!(
        a.deliver_issue("300", "fatal", "created", "src/upstream.py"),
        202
    );
    let runs = a.wait_runs(1, 30);
    let (run, pgid) = (runs[0].1.clone(), runs[0].2.clone());
    let status = a.ended(&run, 40);
    assert_eq!(status["last"]["outcome"], "timed_out", "{status}");
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "stopped before its timeout"
    );
    let finished = a.finished(&run);
    assert_eq!(finished["outcome"], "timed_out");
    let took = finished["duration_secs"].as_f64().unwrap();
    assert!((5.0..20.0).contains(&took), "took {took} s");
    // Nothing of it is left: neither the script nor the sleep it put in the background (a
    // killed process may linger as a zombie until init reaps it: that is not running).
    let pgid: u32 = pgid.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !running_in_group(pgid).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        running_in_group(pgid),
        Vec::<u32>::new(),
        "the agent's process group {pgid} outlived its timeout"
    );
    assert!(
        a.gate.get("/v1/proposals").as_array().unwrap().is_empty(),
        "a stopped run proposed nothing"
    );
    // Its issue is not handed over again by the next event: a person decides.
    assert_eq!(a.deliver_event("300", 1), 202);
    thread::sleep(Duration::from_secs(2));
    assert_eq!(a.runs().len(), 1);
}

#[test]
fn an_issue_no_webhook_announced_is_found_by_polling_sentry_and_handed_to_the_agent() {
    use super::sentry_poll::{serve, Sentry, ISSUE, SENTRY_TOKEN};

    let sentry = std::sync::Arc::new(Sentry::default());
    let t0 = now();
    for n in 0..5u64 {
        sentry.add(n, t0 - 60.0 + n as f64 * 10.0, "shop@1");
    }
    let api_url = serve(sentry);
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), SENTRY_TOKEN).unwrap();
    let a = Agent::start_with(
        60,
        &format!(
            "api_url = \"{api_url}\"\norg = \"acme\"\nproject = \"shop-api\"\n\
             auth_token_file = {:?}\npoll_secs = 5\n",
            token.path()
        ),
    );
    // No delivery at all: the poll finds the events, asks for the issue's details (its level),
    // and the trigger hands the issue over.
    let runs = a.wait_runs(1, 40);
    assert_eq!(runs[0].0, ISSUE, "{runs:?}");
    let input: AgentInput = serde_json::from_str(
        &std::fs::read_to_string(a.work.path().join(format!("input-{ISSUE}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(input.issue.short_id.as_deref(), Some("SHOP-3F"));
    let trail = a.gate.trail();
    assert!(
        trail.lines().any(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            r["kind"] == "sentry_issue" && r["detail"]["source"] == "api" && r["subject"] == ISSUE
        }),
        "the issue the API described is on the audit trail: {trail}"
    );
}
