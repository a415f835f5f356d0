//! The trust gate, for real: the daemon with a sandbox policy, one token per role, guardian's
//! own clone of the app, an agent working in its own clone and proposing with `guardian
//! propose`, people deciding with `guardian approve`/`reject`, the redeploy hook, the app's
//! traffic, and the ledger.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use guardian::gate::proposals::{NewProposal, ProposalState};
use guardian::store::{ChangeKind, ChangeState, NewChange, Store};
use serde_json::{json, Value};

use super::rollback::{drive, git, now, serve_app, write_healthy_history};

pub(super) const ADMIN: &str = "admin-token-0123456789abcdef";
pub(super) const AGENT: &str = "agent-token-0123456789abcdef";
pub(super) const ALICE: &str = "alice-token-0123456789abcdef";
/// A viewer's (`[daemon] viewers`): may read, nothing else.
pub(super) const BOB: &str = "bob-viewer-token-0123456789abcdef";

/// The app's behaviour is `src/settings.txt`: a timeout of 1000 ms or more ties up its workers
/// and breaks it. The hook deploys by turning what the clone says into what the app serves,
/// after the seconds in `$LIVE.delay` when a test wants a deploy to be seen taking time.
const HOOK: &str = "if [ -f \"$LIVE.delay\" ]; then sleep \"$(cat \"$LIVE.delay\")\"; fi; \
                    if grep -Eq '^timeout_ms = [0-9]{4,}$' \"$GUARDIAN_REPO/src/settings.txt\"; \
                    then echo broken > \"$LIVE\"; else echo ok > \"$LIVE\"; fi";

const POLICY: &str = r#"
[paths]
allow = ["src/**"]
deny = ["migrations/**", "**/auth/**"]
[limits]
max_files = 5
max_lines = 40
[content]
new_dependencies = "deny"
schema_changes = "deny"
[risk]
auto_below = 50
[trust]
promote_after = 10
"#;

pub(super) struct Gate {
    dir: tempfile::TempDir,
    /// guardian's own clone: what is deployed.
    pub(super) repo: PathBuf,
    /// The agent's clone, where it writes fixes.
    pub(super) agent_repo: PathBuf,
    config: PathBuf,
    pub(super) api: String,
    daemon: Child,
    stop: Arc<AtomicBool>,
    writer: Option<thread::JoinHandle<()>>,
}

impl Gate {
    /// `healthy_record`: how many approved, healthy timeout bumps the ledger starts with.
    pub(super) fn start(healthy_record: usize, with_traffic: bool) -> Gate {
        Gate::start_with(healthy_record, with_traffic, "", "")
    }

    /// `extra` is appended to the config, right after the `[daemon.gate]` keys; `risk` to the
    /// policy's `[risk]` section.
    pub(super) fn start_with(
        healthy_record: usize,
        with_traffic: bool,
        extra: &str,
        risk: &str,
    ) -> Gate {
        Gate::start_watching(healthy_record, with_traffic, extra, risk, 300)
    }

    /// As [`Gate::start_with`], each change watched for `watch_secs`.
    pub(super) fn start_watching(
        healthy_record: usize,
        with_traffic: bool,
        extra: &str,
        risk: &str,
        watch_secs: u32,
    ) -> Gate {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("app");
        std::fs::create_dir_all(repo.join("src")).unwrap();
        std::fs::create_dir_all(repo.join("migrations")).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("src/settings.txt"), "timeout_ms = 500\n").unwrap();
        std::fs::write(
            repo.join("migrations/001.sql"),
            "CREATE TABLE t (id int);\n",
        )
        .unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "first release"]);
        let agent_repo = dir.path().join("agent");
        git(
            dir.path(),
            &[
                "clone",
                "-q",
                repo.to_str().unwrap(),
                agent_repo.to_str().unwrap(),
            ],
        );
        let live = dir.path().join("live-mode");
        std::fs::write(&live, "ok\n").unwrap();
        let hook = dir.path().join("redeploy.sh");
        std::fs::write(&hook, format!("#!/bin/sh\nset -e\n{HOOK}\n")).unwrap();
        for (name, token) in [
            ("token", ADMIN),
            ("agent.token", AGENT),
            ("alice.token", ALICE),
            ("bob.token", BOB),
        ] {
            std::fs::write(dir.path().join(name), token).unwrap();
        }
        let policy = POLICY.replace("auto_below = 50\n", &format!("auto_below = 50\n{risk}\n"));
        std::fs::write(dir.path().join("policy.toml"), policy).unwrap();

        let log = dir.path().join("access.jsonl");
        write_healthy_history(&log);
        let t0 = now();

        let state = dir.path().join("state");
        {
            use std::os::unix::fs::DirBuilderExt as _;
            // Private, as guardian requires of its state directory.
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&state)
                .unwrap();
        }
        seed_ledger(&state.join("guardian.db"), healthy_record, t0 - 86_400.0);

        let config = dir.path().join("guardian.toml");
        std::fs::write(
            &config,
            format!(
                "[detector]\nbaseline_secs = 600\nwatch_secs = {watch_secs}\n\n\
                 [daemon]\nservice = \"shop\"\nstate_dir = {state:?}\nlisten = \"127.0.0.1:0\"\n\
                 token_file = {admin:?}\nviewers = {{ bob = {bob:?} }}\n\n\
                 [[daemon.logs]]\npath = {log:?}\n\n\
                 [daemon.rollback]\nrepo = {repo:?}\nhook = [\"sh\", {hook:?}]\n\
                 hook_timeout_secs = 30\nverify_secs = 8\n\n\
                 [daemon.gate]\npolicy_file = {policy:?}\nagent_token_file = {agent:?}\n\
                 approvers = {{ alice = {alice:?} }}\n{extra}",
                admin = dir.path().join("token"),
                agent = dir.path().join("agent.token"),
                alice = dir.path().join("alice.token"),
                bob = dir.path().join("bob.token"),
                policy = dir.path().join("policy.toml"),
            ),
        )
        .unwrap();
        let (daemon, api) = super::common::spawn_daemon(&config, &[("LIVE", &live)]);

        let stop = Arc::new(AtomicBool::new(false));
        let writer =
            with_traffic.then(|| drive(serve_app(log.clone(), live.clone()), stop.clone()));
        Gate {
            dir,
            repo,
            agent_repo,
            config,
            api,
            daemon,
            stop,
            writer,
        }
    }

    /// A file in the test's directory.
    pub(super) fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(super) fn token_file(&self, token: &str) -> PathBuf {
        let name = match token {
            ADMIN => "token",
            AGENT => "agent.token",
            BOB => "bob.token",
            _ => "alice.token",
        };
        self.dir.path().join(name)
    }

    /// The agent commits a fix in its own clone: `file` gets `content`.
    pub(super) fn agent_commits(&self, file: &str, content: &str, message: &str) -> String {
        let path = self.agent_repo.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        git(&self.agent_repo, &["add", "-A"]);
        git(&self.agent_repo, &["commit", "-q", "-m", message]);
        git(&self.agent_repo, &["rev-parse", "HEAD"])
    }

    /// The agent starts its next fix from what is deployed (guardian's clone is its origin).
    pub(super) fn agent_syncs(&self) {
        git(&self.agent_repo, &["fetch", "-q", "origin"]);
        git(&self.agent_repo, &["reset", "-q", "--hard", "origin/main"]);
    }

    /// `guardian <args> --api .. --token-file ..` as the holder of `token`.
    pub(super) fn cli(&self, token: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_guardian"))
            .args(args)
            .args(["--api", &self.api, "--token-file"])
            .arg(self.token_file(token))
            .output()
            .unwrap()
    }

    /// `guardian <args> --config ..`: the commands that read the state database directly.
    pub(super) fn on_host(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_guardian"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    /// Waits (up to 90 s) for a change to leave the watch and the rollback behind.
    pub(super) fn settle(&self, change_id: &str) -> Value {
        // A watch's minute, Sentry's counts catching up with its end (up to half a minute),
        // and room for a slow machine.
        self.wait_for(&format!("/v1/changes/{change_id}"), 150, |c| {
            !["watching", "regressed", "rolling_back", "verifying"]
                .contains(&c["state"].as_str().unwrap_or(""))
        })
    }

    pub(super) fn propose(&self, commit: &str, pattern: &str, summary: &str) -> Output {
        self.cli(
            AGENT,
            &[
                "propose",
                "--repo",
                self.agent_repo.to_str().unwrap(),
                "--commit",
                commit,
                "--pattern",
                pattern,
                "--summary",
                summary,
                "--tests-run",
                "--json",
            ],
        )
    }

    pub(super) fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = ureq::request(method, &format!("{}{path}", self.api));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    pub(super) fn get(&self, path: &str) -> Value {
        let (code, v) = self.call(Some(ADMIN), "GET", path, None);
        assert_eq!(code, 200, "{path}: {v}");
        v
    }

    /// Polls `path` until `done` holds, for at most `secs`.
    pub(super) fn wait_for(&self, path: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.get(path);
            if done(&v) || Instant::now() > deadline {
                return v;
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    pub(super) fn pattern(&self, name: &str) -> Value {
        self.get("/v1/trust")
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["pattern"] == name)
            .cloned()
            .unwrap()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// The team's record before the test: `n` timeout bumps an approver approved, deployed and
/// found healthy, a day ago.
fn seed_ledger(db: &Path, n: usize, at: f64) {
    let mut store = Store::open(db).unwrap();
    for i in 0..n {
        let t = at + i as f64 * 60.0;
        let p = store
            .insert_proposal(
                &NewProposal {
                    proposer: "agent".into(),
                    kind: ChangeKind::Ai,
                    pattern: "timeout-bump".into(),
                    summary: format!("bump timeout {i}"),
                    issue_url: None,
                    tests_run: true,
                    base_sha: "0".repeat(40),
                    claimed_sha: None,
                    patch: format!("patch {i}"),
                    diff_hash: format!("{i:064}"),
                    tree_sha: None,
                    decision: "needs_approval".into(),
                    assessment: json!({}),
                    shadow: false,
                    state: ProposalState::Pending,
                    sentry_issue: None,
                    flag: None,
                },
                t,
            )
            .unwrap();
        store
            .decide_proposal(&p.id, true, "approver:alice", &p.diff_hash, None, t + 1.0)
            .unwrap();
        store
            .advance_proposal(
                &p.id,
                ProposalState::Deploying,
                None,
                None,
                json!({}),
                t + 2.0,
            )
            .unwrap();
        let change = store
            .insert_change(
                &NewChange {
                    commit: format!("{i:040x}"),
                    kind: ChangeKind::Ai,
                    pattern: Some("timeout-bump".into()),
                    summary: None,
                    landed_at: t + 3.0,
                    fixes_issue: None,
                    flag: None,
                },
                t + 3.0,
            )
            .unwrap();
        store
            .advance_proposal(
                &p.id,
                ProposalState::Deployed,
                Some(&change.id),
                None,
                json!({}),
                t + 3.0,
            )
            .unwrap();
        store
            .set_state(
                &change.id,
                ChangeState::Healthy,
                None,
                Some(t + 50.0),
                None,
                t + 50.0,
            )
            .unwrap();
    }
}

/// A `[daemon.mail]` section sending to the SMTP server at `smtp`.
pub(super) fn mail_config(smtp: std::net::SocketAddr) -> String {
    format!(
        "\n[daemon.mail]\nfrom = \"guardian@example.com\"\nto = [\"oncall@example.com\"]\n\
         smtp_host = \"{}\"\nsmtp_port = {}\nsecurity = \"none\"\n",
        smtp.ip(),
        smtp.port()
    )
}

/// The first email containing `needle` (waiting up to 30 s), quoted-printable soft breaks
/// undone.
pub(super) fn wait_for_mail(inbox: &Arc<std::sync::Mutex<Vec<String>>>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = inbox
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.contains(needle))
            .cloned();
        if let Some(m) = found {
            return m.replace("=\r\n", "").replace("\r\n", "\n");
        }
        assert!(
            Instant::now() < deadline,
            "no email with {needle:?} arrived"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

pub(super) fn stdout_json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

impl Gate {
    /// Replaces the redeploy hook: it hangs (a slow restart) on the runs `hangs_on` says, and
    /// counts the runs that got past the hang in `runs`.
    fn hook_that_hangs(&self, hangs_on: &str) -> PathBuf {
        let (starts, runs) = (self.dir.path().join("starts"), self.dir.path().join("runs"));
        std::fs::write(
            self.dir.path().join("redeploy.sh"),
            format!(
                "#!/bin/sh\nset -e\necho start >> {starts:?}\n\
                 case $(wc -l < {starts:?}) in {hangs_on}) sleep 120;; esac\n\
                 echo run >> {runs:?}\n{HOOK}\n"
            ),
        )
        .unwrap();
        runs
    }

    /// Kills guardian (`-9`) once the hook has started `n` times, and starts it again. The
    /// hook's group, which outlived guardian.
    fn killed_during_hook_run(&mut self, n: usize) -> u32 {
        let starts = self.dir.path().join("starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&starts).map_or(0, |s| s.lines().count()) < n {
            assert!(Instant::now() < deadline, "the hook never started");
            thread::sleep(Duration::from_millis(100));
        }
        let note = self.dir.path().join("state/hook.running");
        let pgid: u32 = std::fs::read_to_string(note)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        self.daemon.kill().unwrap();
        self.daemon.wait().unwrap();
        assert!(group_alive(pgid), "the hook died with guardian");
        let live = self.dir.path().join("live-mode");
        (self.daemon, self.api) = super::common::spawn_daemon(&self.config, &[("LIVE", &live)]);
        pgid
    }

    /// The audit trail as `guardian audit export` prints it.
    pub(super) fn trail(&self) -> String {
        String::from_utf8_lossy(&self.on_host(&["audit", "export"]).stdout).into_owned()
    }

    /// The agent proposes a trusted timeout bump; its id.
    fn auto_bump(&self) -> String {
        let fix = self.agent_commits(
            "src/settings.txt",
            "timeout_ms = 800\n",
            "Raise the timeout",
        );
        let proposal =
            stdout_json(&self.propose(&fix, "timeout-bump", "raise the checkout timeout"));
        assert_eq!(proposal["decision"], "auto", "{proposal}");
        proposal["id"].as_str().unwrap().to_owned()
    }
}

/// Whether any process is in group `pgid` (`kill -0 -- -PGID`).
fn group_alive(pgid: u32) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn a_deploy_guardian_is_killed_during_is_deployed_again_once_the_old_hook_is_stopped() {
    let mut g = Gate::start(10, true);
    let runs = g.hook_that_hangs("1");
    thread::sleep(Duration::from_secs(1));
    let id = g.auto_bump();

    // Killed while the hook hangs; the next run stops the old hook before it deploys
    // anything, then deploys the proposal again: the same commit, the hook run to its end,
    // the change watched.
    let pgid = g.killed_during_hook_run(1);
    assert!(
        !group_alive(pgid),
        "the old hook still runs after the restart"
    );
    let p = g.wait_for(&format!("/v1/proposals/{id}"), 30, |p| {
        p["state"] != "deploying"
    });
    assert_eq!(p["state"], "deployed", "{p}");
    assert!(p["change_id"].is_string(), "{p}");
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n");
    let carrying = git(
        &g.repo,
        &[
            "log",
            "--format=%H",
            &format!("--grep=Guardian-Proposal: {id}"),
        ],
    );
    assert_eq!(carrying.lines().count(), 1, "{carrying}");
    let trail = g.trail();
    assert!(
        trail.contains("guardian stopped during the deploy; deploying again"),
        "the second deploy is not on the trail"
    );
    assert!(
        !g.dir.path().join("state/hook.running").exists(),
        "the note outlived the hook"
    );
}

#[test]
fn a_rollback_guardian_is_killed_during_is_escalated_with_what_git_and_the_hook_say() {
    let (smtp, inbox) = super::rollback::smtp_server();
    let mut g = Gate::start_with(10, true, &mail_config(smtp), "");
    // The deploy's hook runs; the rollback's (the second run) hangs.
    g.hook_that_hangs("2");
    thread::sleep(Duration::from_secs(1));
    let bad = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 5000\n",
        "Raise the timeout a lot",
    );
    let p = stdout_json(&g.propose(&bad, "timeout-bump", "raise the checkout timeout a lot"));
    assert_eq!(p["decision"], "auto", "{p}");
    let pgid = g.killed_during_hook_run(2);
    assert!(
        !group_alive(pgid),
        "the rollback's hook still runs after the restart"
    );

    let id = p["id"].as_str().unwrap();
    let change = g.get(&format!("/v1/proposals/{id}"))["change_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let c = g.get(&format!("/v1/changes/{change}"));
    assert_eq!(c["state"], "escalated", "{c}");
    let revert = git(
        &g.repo,
        &[
            "log",
            "--format=%H",
            &format!("--grep=Guardian-Change: {change}"),
        ],
    );
    assert_eq!(revert.lines().count(), 1, "{revert}");
    let email = wait_for_mail(&inbox, "escalated");
    for said in [
        format!("its revert {} is committed", revert.trim()),
        "the redeploy hook was still running and was stopped".to_owned(),
        "Deploys of proposals are paused, by guardian".to_owned(),
    ] {
        assert!(email.contains(&said), "{said:?} is not in:\n{email}");
    }
    let trail = g.trail();
    assert!(
        trail.contains("\"hook_stopped\""),
        "the stop is not on the trail"
    );
}

#[test]
fn a_deploy_guardian_is_killed_during_twice_is_left_to_a_person() {
    let (smtp, inbox) = super::rollback::smtp_server();
    let mut g = Gate::start_with(10, true, &mail_config(smtp), "");
    g.hook_that_hangs("1|2");
    thread::sleep(Duration::from_secs(1));
    let id = g.auto_bump();
    g.killed_during_hook_run(1);
    g.killed_during_hook_run(2);
    let p = g.wait_for(&format!("/v1/proposals/{id}"), 30, |p| {
        p["state"] != "deploying"
    });
    assert_eq!(p["state"], "deploy_failed", "{p}");
    let email = wait_for_mail(&inbox, "INTERRUPTED");
    assert!(
        email.contains("ACTION NEEDED: guardian stopped during this deploy twice"),
        "{email}"
    );
    // Never a third run of the hook.
    thread::sleep(Duration::from_secs(2));
    let starts = std::fs::read_to_string(g.dir.path().join("starts")).unwrap();
    assert_eq!(starts.lines().count(), 2, "{starts}");
}

#[test]
fn a_trusted_fix_deploys_alone_regresses_is_rolled_back_and_its_pattern_demoted() {
    let g = Gate::start(10, true);
    assert_eq!(
        g.pattern("timeout-bump")["level"],
        "auto",
        "10 approved healthy bumps"
    );
    thread::sleep(Duration::from_secs(1));

    // The agent's "timeout bump" that in fact breaks the app.
    let bad = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 5000\n",
        "Raise the timeout a lot",
    );
    let out = g.propose(&bad, "timeout-bump", "raise the checkout timeout a lot");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let proposal = stdout_json(&out);
    assert_eq!(proposal["decision"], "auto", "{proposal}");
    let id = proposal["id"].as_str().unwrap().to_owned();

    // guardian applies it in its own clone, redeploys and watches it.
    let p = g.wait_for(&format!("/v1/proposals/{id}"), 30, |p| {
        p["state"] != "approved" && p["state"] != "deploying"
    });
    assert_eq!(p["state"], "deployed", "{p}");
    let change_id = p["change_id"].as_str().unwrap().to_owned();
    let deployed = git(&g.repo, &["log", "-1", "--format=%B", "HEAD"]);
    assert!(
        deployed.contains(&format!("Guardian-Proposal: {id}")),
        "{deployed}"
    );

    // The app breaks; guardian reverts its own deploy and checks recovery.
    let change = g.settle(&change_id);
    assert_eq!(change["state"], "rolled_back", "{change}");
    assert_eq!(
        std::fs::read_to_string(g.repo.join("src/settings.txt")).unwrap(),
        "timeout_ms = 500\n"
    );

    // The ledger demoted the pattern at once.
    let t = g.pattern("timeout-bump");
    assert_eq!(t["level"], "needs_approval", "{t}");
    assert_eq!(t["rollbacks"], 1, "{t}");
    assert!(
        t["why"]
            .as_str()
            .unwrap()
            .starts_with("demoted by a rollback"),
        "{t}"
    );

    // The next bump, a good one, now waits for a person.
    g.agent_syncs();
    let good = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 700\n",
        "Raise the timeout",
    );
    let next = stdout_json(&g.propose(&good, "timeout-bump", "raise the checkout timeout"));
    assert_eq!(next["decision"], "needs_approval", "{next}");
    assert!(
        next["assessment"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"] == "trust.not_promoted"),
        "{next}"
    );

    // The post-mortem tells the story: what the agent claimed, what the diff did, the policy.
    let pm = g.on_host(&["postmortem", &change_id]);
    let pm = String::from_utf8_lossy(&pm.stdout);
    for needle in [
        "raise the checkout timeout a lot",
        "timeout-bump",
        "src/settings.txt",
        "auto",
    ] {
        assert!(
            pm.contains(needle),
            "{needle:?} missing from the post-mortem:\n{pm}"
        );
    }

    // Every step is on the audit trail, intact.
    let verify = g.on_host(&["audit", "verify"]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn a_proposal_needing_approval_is_deployed_only_for_the_diff_a_person_approved() {
    let g = Gate::start(0, false);
    let fix = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 800\n",
        "Raise the timeout",
    );
    let out = g.propose(&fix, "timeout-bump", "raise the timeout");
    let p = stdout_json(&out);
    assert_eq!(p["decision"], "needs_approval", "{p}");
    let id = p["id"].as_str().unwrap().to_owned();
    let hash = p["diff_hash"].as_str().unwrap().to_owned();
    let approve = format!("/v1/proposals/{id}/approve");

    // The agent cannot approve its own change, with the right hash or not.
    let (code, body) = g.call(
        Some(AGENT),
        "POST",
        &approve,
        Some(json!({ "diff_sha256": hash })),
    );
    assert_eq!(code, 403, "{body}");
    // An approval of another diff is refused and changes nothing.
    let other = "0".repeat(64);
    let (code, body) = g.call(
        Some(ALICE),
        "POST",
        &approve,
        Some(json!({ "diff_sha256": other })),
    );
    assert_eq!(code, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains(&hash), "{body}");
    assert_eq!(g.get(&format!("/v1/proposals/{id}"))["state"], "pending");

    // Alice approves what she saw, with the CLI.
    let out = g.cli(ALICE, &["approve", &id, "--diff", &hash]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = g.wait_for(&format!("/v1/proposals/{id}"), 30, |p| {
        p["state"] == "deployed"
    });
    assert_eq!(p["state"], "deployed", "{p}");
    assert_eq!(p["decided_by"], "approver:alice");
    assert_eq!(
        std::fs::read_to_string(g.repo.join("src/settings.txt")).unwrap(),
        "timeout_ms = 800\n"
    );

    // Replaying the approval does nothing.
    let (code, body) = g.call(
        Some(ALICE),
        "POST",
        &approve,
        Some(json!({ "diff_sha256": hash })),
    );
    assert_eq!(code, 409, "{body}");
}

#[test]
fn a_proposal_touching_a_forbidden_area_is_denied_with_the_rule_that_fired() {
    let g = Gate::start(0, false);
    let sneaky = g.agent_commits(
        "migrations/002.sql",
        "ALTER TABLE t ADD COLUMN x int;\n",
        "Fix: add the missing column",
    );
    let out = g.propose(&sneaky, "nil-check", "add the missing column");
    assert_eq!(out.status.code(), Some(1), "denied exits 1");
    let p = stdout_json(&out);
    assert_eq!(p["decision"], "deny");
    assert_eq!(p["state"], "denied");
    let rules: Vec<&str> = p["assessment"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"paths.deny"), "{rules:?}");
    // Nothing was applied.
    assert!(!g.repo.join("migrations/002.sql").exists());

    // A patch that climbs out of the tree is denied on the record, not just refused.
    let head = git(&g.repo, &["rev-parse", "HEAD"]);
    let climb =
        "diff --git a/src/../../etc/cron.d/x b/src/../../etc/cron.d/x\nnew file mode 100644\n\
                 --- /dev/null\n+++ b/src/../../etc/cron.d/x\n@@ -0,0 +1 @@\n+* * * * * root sh\n";
    let (code, p) = g.call(
        Some(AGENT),
        "POST",
        "/v1/proposals",
        Some(json!({ "pattern": "nil-check", "summary": "fix", "base": head, "patch": climb })),
    );
    assert_eq!(code, 201, "{p}");
    assert_eq!(p["state"], "denied", "{p}");
    assert_eq!(p["assessment"]["rules"][0]["rule"], "diff.refused", "{p}");
    assert!(
        p["assessment"]["rules"][0]["message"]
            .as_str()
            .unwrap()
            .contains(".."),
        "{p}"
    );
}

#[test]
fn each_role_may_do_only_what_it_is_for() {
    let g = Gate::start(0, false);
    let fix = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 900\n",
        "Raise the timeout",
    );
    let p = stdout_json(&g.propose(&fix, "timeout-bump", "raise the timeout"));
    let id = p["id"].as_str().unwrap().to_owned();
    let head = git(&g.repo, &["rev-parse", "HEAD"]);
    // Missing its patch: a bad request for whoever may propose.
    let proposal = json!({ "pattern": "timeout-bump", "summary": "x", "base": head });
    let decision = json!({ "diff_sha256": "0".repeat(64), "why": "no" });
    let calls: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/v1/status".into(), None),
        ("GET", "/v1/changes".into(), None),
        ("GET", "/v1/proposals".into(), None),
        ("GET", format!("/v1/proposals/{id}"), None),
        ("GET", "/v1/trust".into(), None),
        ("GET", "/v1/trust/actions".into(), None),
        ("POST", "/v1/proposals".into(), Some(proposal)),
        (
            "POST",
            format!("/v1/proposals/{id}/reject"),
            Some(decision.clone()),
        ),
        (
            "POST",
            format!("/v1/proposals/{id}/approve"),
            Some(decision),
        ),
        (
            "POST",
            "/v1/changes".into(),
            Some(json!({ "commit": "zz" })),
        ),
        (
            "POST",
            "/v1/observations".into(),
            Some(json!("not an array")),
        ),
        ("POST", "/v1/pause".into(), Some(json!({ "why": "" }))),
    ];
    // What each role gets: 403 means refused for the role, before the request is looked at;
    // 400 and 409 mean the role may, and the (deliberately bad) request itself was refused.
    let expected: [(Option<&str>, [u16; 12]); 4] = [
        (None, [401; 12]),
        (
            Some(AGENT),
            [200, 200, 200, 200, 200, 200, 400, 403, 403, 403, 403, 403],
        ),
        (
            Some(ALICE),
            [200, 200, 200, 200, 200, 200, 403, 409, 409, 403, 403, 403],
        ),
        (
            Some(ADMIN),
            [200, 200, 200, 200, 200, 200, 400, 409, 409, 400, 400, 400],
        ),
    ];
    for (token, codes) in expected {
        for ((method, path, body), want) in calls.iter().zip(codes) {
            let (got, answer) = g.call(token, method, path, body.clone());
            assert_eq!(got, want, "{token:?} {method} {path}: {answer}");
        }
    }
    // A wrong token is no token.
    let (code, _) = g.call(Some("not-a-token-at-all-0000"), "GET", "/v1/status", None);
    assert_eq!(code, 401);
    // Nothing the refused calls tried happened.
    assert_eq!(g.get(&format!("/v1/proposals/{id}"))["state"], "pending");
    // And the refusals are on the audit trail, with who tried what: each token's first at
    // once, the rest counted into one record when its window ends (so a flood of them cannot
    // fill the disk).
    let export = g.on_host(&["audit", "export"]);
    let trail = String::from_utf8_lossy(&export.stdout);
    let refusals: Vec<&str> = trail
        .lines()
        .filter(|l| l.contains("access_refused"))
        .collect();
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("\"agent\"") && l.contains("Decide")),
        "{trail}"
    );
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("\"approver:alice\"") && l.contains("Propose")),
        "{trail}"
    );
    assert_eq!(refusals.len(), 2, "{trail}");
}

#[test]
fn an_approval_link_in_the_email_decides_once_for_that_diff() {
    let (smtp, inbox) = super::rollback::smtp_server();
    let mail = format!(
        "approval_base_url = \"http://guardian.example\"\n{}",
        mail_config(smtp)
    );
    let g = Gate::start_with(0, false, &mail, "");
    let fix = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 600\n",
        "Raise the timeout",
    );
    let p = stdout_json(&g.propose(&fix, "timeout-bump", "raise the timeout"));
    let id = p["id"].as_str().unwrap().to_owned();

    let email = wait_for_mail(&inbox, &id);
    let link = |action: &str| -> String {
        let url = email
            .lines()
            .filter_map(|l| l.trim().strip_prefix(&format!("{action}:")))
            .map(str::trim)
            .find(|u| u.starts_with("http://guardian.example/v1/links/"))
            .unwrap_or_else(|| panic!("no {action} link in:\n{email}"));
        url.replace("http://guardian.example", &g.api)
    };
    let (approve, reject) = (link("approve"), link("reject"));

    // Opening the link (as a mail scanner would) shows the diff and decides nothing.
    let page = ureq::get(&approve).call().unwrap().into_string().unwrap();
    assert!(page.contains("timeout_ms = 600"), "{page}");
    assert_eq!(g.get(&format!("/v1/proposals/{id}"))["state"], "pending");

    // The button decides, once.
    let done = ureq::post(&approve).call().unwrap().into_string().unwrap();
    assert!(done.contains("approved"), "{done}");
    let p = g.wait_for(&format!("/v1/proposals/{id}"), 30, |p| {
        p["state"] == "deployed"
    });
    assert_eq!(p["decided_by"], "approver:email-link", "{p}");
    for used in [&approve, &reject] {
        match ureq::post(used).call() {
            Err(ureq::Error::Status(409, _)) => {}
            other => panic!("{used}: {other:?}"),
        }
    }
    match ureq::get(&format!("{}/v1/links/{}", g.api, "f".repeat(64))).call() {
        Err(ureq::Error::Status(403, _)) => {}
        other => panic!("a made-up link: {other:?}"),
    }
}

#[test]
fn in_shadow_mode_everything_is_decided_and_recorded_and_nothing_is_done() {
    let g = Gate::start_with(10, true, "shadow = true\n", "");
    thread::sleep(Duration::from_secs(1));
    let head = git(&g.repo, &["rev-parse", "HEAD"]);
    let bad = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 5000\n",
        "Raise the timeout a lot",
    );
    let p = stdout_json(&g.propose(&bad, "timeout-bump", "raise the timeout a lot"));
    assert_eq!(p["decision"], "auto", "{p}");
    assert_eq!(p["state"], "shadow", "{p}");
    assert_eq!(
        p["assessment"]["shadow"], "would deploy without a person",
        "{p}"
    );
    let id = p["id"].as_str().unwrap().to_owned();
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        git(&g.repo, &["rev-parse", "HEAD"]),
        head,
        "nothing deployed"
    );

    // The team deploys it their way and tells guardian which proposal it carries out.
    git(
        &g.repo,
        &["fetch", "-q", g.agent_repo.to_str().unwrap(), "main"],
    );
    git(&g.repo, &["merge", "-q", "--ff-only", "FETCH_HEAD"]);
    std::fs::write(g.dir.path().join("live-mode"), "broken\n").unwrap();
    let out = g.cli(
        ADMIN,
        &[
            "notify",
            "--commit",
            &bad,
            "--kind",
            "ai",
            "--pattern",
            "timeout-bump",
            "--proposal",
            &id,
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let change_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    // guardian finds the regression, records the rollback it would have done, does none.
    let change = g.wait_for(&format!("/v1/changes/{change_id}"), 60, |c| {
        c["state"] != "watching"
    });
    assert_eq!(change["state"], "regressed", "{change}");
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        git(&g.repo, &["rev-parse", "HEAD"]),
        bad,
        "nothing reverted"
    );
    let export = g.on_host(&["audit", "export"]);
    let trail = String::from_utf8_lossy(&export.stdout);
    let would = trail
        .lines()
        .find(|l| l.contains("shadow_rollback"))
        .unwrap_or_else(|| panic!("no shadow_rollback on the trail:\n{trail}"));
    assert!(would.contains(&bad), "{would}");

    // The track record counts it all the same: the pattern is demoted.
    let t = g.pattern("timeout-bump");
    assert_eq!(
        (t["level"].as_str(), t["rollbacks"].as_u64()),
        (Some("needs_approval"), Some(1)),
        "{t}"
    );
}

#[test]
fn while_deploys_are_paused_an_approved_proposal_waits() {
    let g = Gate::start(0, false);
    let out = g.cli(ADMIN, &["pause", "--why", "incident in progress"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("incident in progress"));
    let out = g.cli(AGENT, &["resume"]);
    assert_eq!(out.status.code(), Some(2), "the agent cannot resume");

    let fix = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 650\n",
        "Raise the timeout",
    );
    let p = stdout_json(&g.propose(&fix, "timeout-bump", "raise the timeout"));
    let id = p["id"].as_str().unwrap().to_owned();
    let hash = p["diff_hash"].as_str().unwrap().to_owned();
    let out = g.cli(ALICE, &["approve", &id, "--diff", &hash]);
    assert_eq!(out.status.code(), Some(0));
    thread::sleep(Duration::from_secs(3));
    assert_eq!(g.get(&format!("/v1/proposals/{id}"))["state"], "approved");
    assert_eq!(
        g.get("/v1/status")["deploys_paused"][1],
        "incident in progress"
    );

    let out = g.cli(ADMIN, &["resume"]);
    assert_eq!(out.status.code(), Some(0));
    let p = g.wait_for(&format!("/v1/proposals/{id}"), 30, |p| {
        p["state"] == "deployed"
    });
    assert_eq!(p["state"], "deployed", "{p}");
}

#[test]
fn the_full_path_from_proposal_to_post_mortem_email() {
    // A trusted pattern, but the file it touches is critical: a person must approve.
    let (smtp, inbox) = super::rollback::smtp_server();
    let g = Gate::start_with(
        10,
        true,
        &format!("slo_error_rate = 0.001\n{}", mail_config(smtp)),
        "critical = [{ glob = \"src/settings.txt\", weight = 60 }]",
    );
    assert_eq!(g.pattern("timeout-bump")["level"], "auto");
    thread::sleep(Duration::from_secs(1));

    let bad = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 5000\n",
        "Raise the timeout a lot",
    );
    let p = stdout_json(&g.propose(&bad, "timeout-bump", "raise the checkout timeout a lot"));
    assert_eq!(p["decision"], "needs_approval", "{p}");
    let rules: Vec<&str> = p["assessment"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["risk.auto_below"], "{p}");
    // The baseline's 1% errors are ten times what a 99.9% SLO allows.
    let budget = p["assessment"]["risk"]["factors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "error_budget")
        .cloned()
        .unwrap();
    assert_eq!(budget["why"], "error budget exhausted", "{p}");
    let id = p["id"].as_str().unwrap().to_owned();
    let hash = p["diff_hash"].as_str().unwrap().to_owned();
    wait_for_mail(&inbox, &format!("approval needed for {id}"));

    // Alice approves; guardian deploys, the app breaks, guardian rolls back.
    let out = g.cli(ALICE, &["approve", &id, "--diff", &hash]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = g.wait_for(&format!("/v1/proposals/{id}"), 30, |p| {
        p["state"] == "deployed"
    });
    let change_id = p["change_id"].as_str().unwrap().to_owned();
    let change = g.settle(&change_id);
    assert_eq!(change["state"], "rolled_back", "{change}");

    // The ledger demoted the pattern at once.
    let t = g.pattern("timeout-bump");
    assert_eq!(
        (t["level"].as_str(), t["rollbacks"].as_u64()),
        (Some("needs_approval"), Some(1)),
        "{t}"
    );

    // The rollback email carries the post-mortem: the story, the claim against the diff, the
    // policy's decision, the chart, and a checkpoint of the audit trail.
    let raw = wait_for_mail(&inbox, &format!("{change_id}.rolled_back"));
    let parsed = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("the alert parses");
    let html = parsed.body_html(0).expect("an HTML part").into_owned();
    for needle in [
        "<svg",
        "raise the checkout timeout a lot",
        "timeout-bump",
        "src/settings.txt",
        "approver:alice",
    ] {
        assert!(
            html.contains(needle),
            "{needle:?} missing from the post-mortem:\n{html}"
        );
    }
    let text = parsed.body_text(0).expect("a text part").into_owned();
    assert!(text.contains("Audit checkpoint"), "{text}");
    assert!(
        text.contains(
            "Trust:     pattern timeout-bump now needs a person's approval: demoted by a rollback"
        ),
        "the reader learns the pattern's next fix waits for a person: {text}"
    );
}

/// Posts `patch` as the agent's proposal against guardian's HEAD.
fn post_patch(g: &Gate, pattern: &str, patch: &str) -> Value {
    let head = git(&g.repo, &["rev-parse", "HEAD"]);
    let (code, p) = g.call(
        Some(AGENT),
        "POST",
        "/v1/proposals",
        Some(json!({ "pattern": pattern, "summary": "fix", "base": head, "patch": patch })),
    );
    assert_eq!(code, 201, "{p}");
    p
}

/// The rules that fired, as "rule: message".
fn rules(p: &Value) -> Vec<String> {
    p["assessment"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}: {}",
                r["rule"].as_str().unwrap(),
                r["message"].as_str().unwrap()
            )
        })
        .collect()
}

/// The team commits `file` in guardian's clone (and the agent starts from there).
fn team_commits(g: &Gate, file: &str, content: &str) {
    let path = g.repo.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    git(&g.repo, &["add", "-A"]);
    git(&g.repo, &["commit", "-q", "-m", &format!("add {file}")]);
    g.agent_syncs();
}

#[test]
fn a_no_newline_marker_mid_hunk_cannot_smuggle_a_joined_line_past_a_trusted_pattern() {
    let g = Gate::start(10, false);
    team_commits(&g, "src/app.env", "TIMEOUT_MS=500\nREQUIRE_AUTH=1\n");
    // Read as a clean bump 500 -> 5000; git applies TIMEOUT_MS=5000REQUIRE_AUTH=1.
    let patch = "diff --git a/src/app.env b/src/app.env\nindex 1111111..2222222 100644\n--- a/src/app.env\n+++ b/src/app.env\n@@ -1,2 +1,2 @@\n-TIMEOUT_MS=500\n+TIMEOUT_MS=5000\n\\ No newline at end of file\n REQUIRE_AUTH=1\n";
    let p = post_patch(&g, "timeout-bump", patch);
    assert_eq!(p["decision"], "deny", "{p}");
    assert_eq!(p["state"], "denied", "{p}");
    let why = rules(&p).join("\n");
    assert!(
        why.contains("would join it with the line after it"),
        "{why}"
    );
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        std::fs::read_to_string(g.repo.join("src/app.env")).unwrap(),
        "TIMEOUT_MS=500\nREQUIRE_AUTH=1\n",
        "nothing deployed"
    );
}

#[test]
fn a_timeout_bump_split_over_two_commits_is_capped_as_one_change() {
    let g = Gate::start(10, false);
    let base = git(&g.agent_repo, &["rev-parse", "HEAD"]);
    // 500 -> 50,000 -> 5,000,000: each commit 100x, the change 10,000x.
    g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 50000\n",
        "Raise the timeout",
    );
    g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 5000000\n",
        "Raise it again",
    );
    let series = git(
        &g.agent_repo,
        &["format-patch", "--stdout", &format!("{base}..HEAD")],
    );
    let p = post_patch(&g, "timeout-bump", &format!("{series}\n"));
    assert_eq!(p["decision"], "deny", "{p}");
    let why = rules(&p).join("\n");
    assert!(
        why.contains("pattern_mismatch") && why.contains("at most 100"),
        "{why}"
    );
    assert!(why.contains("timeout_ms = 5000000"), "{why}");
}

#[cfg(unix)]
#[test]
fn symlinks_chained_through_an_up_link_are_followed_as_the_kernel_does() {
    let g = Gate::start(0, false);
    let dir = g.agent_repo.join("src/a/b");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("..", dir.join("up")).unwrap();
    // Read lexically from src/a these are src/etc/passwd and src/a/migrations, both allowed;
    // `up` is src/a, so they lead out of the tree and into migrations/.
    std::os::unix::fs::symlink(
        "b/up/../../../etc/passwd",
        g.agent_repo.join("src/a/passwd"),
    )
    .unwrap();
    std::os::unix::fs::symlink("b/up/../../migrations", g.agent_repo.join("src/a/m")).unwrap();
    git(&g.agent_repo, &["add", "-A"]);
    git(&g.agent_repo, &["commit", "-q", "-m", "handy links"]);
    let commit = git(&g.agent_repo, &["rev-parse", "HEAD"]);
    let p = stdout_json(&g.propose(&commit, "other", "add handy links"));
    assert_eq!(p["decision"], "deny", "{p}");
    let why = rules(&p).join("\n");
    assert!(
        why.contains("the new symlink src/a/passwd -> b/up/../../../etc/passwd points outside the repository"),
        "{why}"
    );
    assert!(
        why.contains("the new symlink src/a/m -> b/up/../../migrations points to migrations"),
        "{why}"
    );
}

#[test]
fn a_binary_patch_is_judged_on_the_text_git_makes_of_it() {
    let g = Gate::start(0, false);
    team_commits(&g, "src/Cargo.toml", "[dependencies]\nserde = \"1\"\n");
    team_commits(&g, "src/q.sql", "SELECT 1;\n");
    // The agent's own clone says these files are binary, so its diff is base85.
    std::fs::write(
        g.agent_repo.join(".git/info/attributes"),
        "Cargo.toml -diff\n*.sql -diff\n",
    )
    .unwrap();
    let dep = g.agent_commits(
        "src/Cargo.toml",
        "[dependencies]\nserde = \"1\"\nevil = \"6\"\n",
        "Add a crate",
    );
    let p = stdout_json(&g.propose(&dep, "other", "a helper crate"));
    assert_eq!(p["decision"], "deny", "{p}");
    let why = rules(&p).join("\n");
    assert!(
        why.contains(
            "content.new_dependencies: src/Cargo.toml gains the dependency dependencies: evil"
        ),
        "{why}"
    );
    assert!(why.contains("sent as a binary patch but is text"), "{why}");

    g.agent_syncs();
    let ddl = g.agent_commits(
        "src/q.sql",
        "SELECT 1;\nALTER TABLE t ADD COLUMN x int;\n",
        "A column",
    );
    let p = stdout_json(&g.propose(&ddl, "other", "a column"));
    assert_eq!(p["decision"], "deny", "{p}");
    let why = rules(&p).join("\n");
    assert!(
        why.contains("content.schema_changes: src/q.sql:2 adds ALTER TABLE"),
        "{why}"
    );
}

#[test]
fn git_control_files_are_never_open_to_an_ai_change() {
    let g = Gate::start(10, false);
    let fix = g.agent_commits(
        "src/.gitattributes",
        "* merge=union\n",
        "Merge settings more easily",
    );
    let p = stdout_json(&g.propose(&fix, "other", "easier merges"));
    assert_eq!(p["decision"], "deny", "{p}");
    let why = rules(&p).join("\n");
    assert!(
        why.contains("paths.never: src/.gitattributes is git's own .gitattributes"),
        "{why}"
    );
}

#[test]
fn a_hunk_only_a_reader_sees_cannot_put_back_a_check_that_git_deletes() {
    let g = Gate::start(0, false);
    team_commits(
        &g,
        "src/admin.js",
        "function purge(req, user) {\n  const db = open();\n  audit(req);\n  if (!isAdmin(user)) return deny();\n  db.purge(req.query.table);\n}\n\nfunction show(req, user) {\n  const db = open();\n  return db.read(req.query.table);\n}\n",
    );
    // Read as the check moving from purge to show. git applies the first hunk and skips the
    // second (its header has a no-break space where git wants a space): the check is gone.
    let patch = "diff --git a/src/admin.js b/src/admin.js\nindex 1111111..2222222 100644\n--- a/src/admin.js\n+++ b/src/admin.js\n@@ -3,4 +3,3 @@ function purge(req, user) {\n   audit(req);\n-  if (!isAdmin(user)) return deny();\n   db.purge(req.query.table);\n }\n@@\u{a0}-9,2 +8,3 @@ function show(req, user) {\n   const db = open();\n+  if (!isAdmin(user)) return deny();\n   return db.read(req.query.table);\n";
    let file = g.dir.path().join("moved-check.patch");
    std::fs::write(&file, patch).unwrap();
    git(&g.repo, &["apply", "--check", file.to_str().unwrap()]);

    let p = post_patch(&g, "other", patch);
    assert_eq!(p["decision"], "deny", "{p}");
    let why = rules(&p).join("\n");
    assert!(
        why.contains("patch line 10") && why.contains("is outside any hunk: git would skip it"),
        "{why}"
    );
    thread::sleep(Duration::from_secs(1));
    let deployed = std::fs::read_to_string(g.repo.join("src/admin.js")).unwrap();
    assert!(
        deployed.contains("if (!isAdmin(user))"),
        "nothing deployed: {deployed}"
    );
}

#[test]
fn a_binary_patch_that_inflates_to_hundreds_of_megabytes_is_refused_before_git_runs() {
    let g = Gate::start(0, false);
    // 17 MiB of zeros: git's binary patch of it is about 20 KB of base85.
    let zeros = vec![0u8; 17 * 1024 * 1024];
    let path = g.agent_repo.join("src/fixture.bin");
    std::fs::write(&path, &zeros).unwrap();
    git(&g.agent_repo, &["add", "-A"]);
    git(&g.agent_repo, &["commit", "-q", "-m", "a fixture"]);
    let commit = git(&g.agent_repo, &["rev-parse", "HEAD"]);
    let p = stdout_json(&g.propose(&commit, "other", "a test fixture"));
    assert_eq!(p["decision"], "deny", "{p}");
    let why = rules(&p).join("\n");
    assert!(
        why.contains(&format!(
            "the binary patch of src/fixture.bin inflates to {} bytes; at most 16777216",
            zeros.len()
        )),
        "{why}"
    );
}

#[test]
fn characters_that_render_blank_reach_the_approver_escaped() {
    let g = Gate::start(0, false);
    team_commits(
        &g,
        "src/run.js",
        "const { timeout } = req.query;\nexecSync(`sleep ${timeout}`);\n",
    );
    // A Hangul filler (U+3164) is a valid JavaScript name and shows as nothing: the query's
    // hidden field goes straight into a shell.
    let fix = g.agent_commits(
        "src/run.js",
        "const { timeout,\u{3164}} = req.query;\nexecSync(`sleep ${timeout}`,\u{3164});\n",
        "Tidy",
    );
    let p = stdout_json(&g.propose(&fix, "other", "tidy\u{a0}up the\u{2800}call"));
    let id = p["id"].as_str().unwrap();
    let out = g.cli(ALICE, &["proposals", id]);
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        shown.contains("+const { timeout,\\u{3164}} = req.query;")
            && shown.contains("+execSync(`sleep ${timeout}`,\\u{3164});"),
        "{shown}"
    );
    assert!(shown.contains("tidy\\xa0up the\\u{2800}call"), "{shown}");
    assert!(
        !shown.contains(['\u{3164}', '\u{a0}', '\u{2800}']),
        "{shown}"
    );
}

#[test]
fn a_lock_file_entry_swapped_for_another_package_is_a_new_dependency() {
    let g = Gate::start(10, false);
    let npm = |resolved: &str| {
        format!(
            "{{\n  \"lockfileVersion\": 3,\n  \"packages\": {{\n    \"node_modules/lodash\": {{\n      \
             \"version\": \"4.17.21\",\n      \"resolved\": \"{resolved}\"\n    }}\n  }}\n}}\n"
        )
    };
    team_commits(
        &g,
        "src/web/package-lock.json",
        &npm("https://registry.npmjs.org/lodash/-/lodash-4.17.21.tgz"),
    );
    let evil = "https://registry.npmjs.org/evil/-/evil-1.0.0.tgz";
    let swap = g.agent_commits("src/web/package-lock.json", &npm(evil), "Relock");
    let p = stdout_json(&g.propose(&swap, "other", "relock"));
    assert_eq!(p["decision"], "deny", "{p}");
    let why = rules(&p).join("\n");
    assert!(
        why.contains(&format!(
            "content.new_dependencies: src/web/package-lock.json gains the dependency package: \
             node_modules/lodash (resolved {evil}: not a registry tarball of lodash)"
        )),
        "{why}"
    );

    // A locked crate whose checksum changes while its name, version and source stay.
    let cargo = |sum: &str| {
        format!(
            "version = 3\n\n[[package]]\nname = \"serde\"\nversion = \"1.0.200\"\n\
             source = \"registry+https://github.com/rust-lang/crates.io-index\"\n\
             checksum = \"{sum}\"\n"
        )
    };
    team_commits(&g, "src/Cargo.lock", &cargo("aaaa"));
    let resum = g.agent_commits("src/Cargo.lock", &cargo("bbbb"), "Relock");
    let p = stdout_json(&g.propose(&resum, "other", "relock"));
    assert_eq!(p["decision"], "deny", "{p}");
    let why = rules(&p).join("\n");
    assert!(
        why.contains("src/Cargo.lock locks serde 1.0.200 (registry+https://github.com/rust-lang/crates.io-index) with another checksum (aaaa -> bbbb)"),
        "{why}"
    );
}

#[test]
fn a_crate_added_under_any_table_cargo_reads_is_a_new_dependency() {
    let g = Gate::start(10, false);
    let manifest =
        "[package]\nname = \"shop\"\nversion = \"0.1.0\"\n\n[dependencies]\nserde = \"1\"\n";
    team_commits(&g, "src/Cargo.toml", manifest);
    let fix = g.agent_commits(
        "src/Cargo.toml",
        &format!(
            "{manifest}\n[target.'cfg(unix)'.dev_dependencies]\nevil = \"6\"\n\n\
             [build_dependencies]\nevil-build = \"1\"\n"
        ),
        "Test helpers",
    );
    let p = stdout_json(&g.propose(&fix, "other", "test helpers"));
    assert_eq!(p["decision"], "deny", "{p}");
    let why = rules(&p).join("\n");
    for dep in [
        "target.cfg(unix).dev-dependencies: evil (evil, registry)",
        "build-dependencies: evil-build (evil-build, registry)",
    ] {
        assert!(
            why.contains(&format!(
                "content.new_dependencies: src/Cargo.toml gains the dependency {dep}"
            )),
            "{dep}: {why}"
        );
    }
}

#[test]
fn dropping_a_schema_or_truncating_a_table_is_a_schema_change() {
    let g = Gate::start(10, false);
    team_commits(&g, "src/q.sql", "SELECT 1;\n");
    let ddl = g.agent_commits(
        "src/q.sql",
        "SELECT 1;\ndrop schema legacy cascade;\nTRUNCATE\n  orders;\nCOMMENT ON TABLE t IS 'x';\n",
        "Clean up",
    );
    let p = stdout_json(&g.propose(&ddl, "other", "clean up"));
    assert_eq!(p["decision"], "deny", "{p}");
    let why = rules(&p).join("\n");
    for hit in [
        "content.schema_changes: src/q.sql:2 adds DROP SCHEMA",
        "content.schema_changes: src/q.sql:3 adds TRUNCATE",
        "content.schema_changes: src/q.sql:5 adds COMMENT ON",
    ] {
        assert!(why.contains(hit), "{hit}: {why}");
    }
}

#[test]
fn an_install_script_added_to_package_json_is_a_dependency_change_naming_it() {
    let g = Gate::start(10, false);
    let manifest = |scripts: &str| {
        format!(
            "{{\n  \"name\": \"web\",\n  \"scripts\": {{\n    \"test\": \"jest\"{scripts}\n  }},\n  \
             \"dependencies\": {{\n    \"lodash\": \"^4.17.21\"\n  }}\n}}\n"
        )
    };
    team_commits(&g, "src/web/package.json", &manifest(""));
    let fix = g.agent_commits(
        "src/web/package.json",
        &manifest(",\n    \"postinstall\": \"node scripts/setup.js\""),
        "Set up on install",
    );
    let p = stdout_json(&g.propose(&fix, "other", "setup"));
    assert_eq!(p["decision"], "deny", "{p}");
    let why = rules(&p).join("\n");
    assert!(
        why.contains(
            "content.new_dependencies: src/web/package.json adds the install script postinstall: \
             `node scripts/setup.js`"
        ),
        "{why}"
    );
}

#[test]
fn a_timeout_bump_whose_number_a_reader_could_take_another_way_is_denied() {
    let g = Gate::start(10, false);
    // `parseInt("5e3")` is 5; so is `atoi`. The app would get a 5 ms timeout.
    let fix = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 5e3\n",
        "Raise the timeout",
    );
    let p = stdout_json(&g.propose(&fix, "timeout-bump", "raise the timeout"));
    assert_eq!(p["decision"], "deny", "{p}");
    let why = rules(&p).join("\n");
    assert!(
        why.contains(
            "pattern_mismatch: claimed timeout-bump, but src/settings.txt:1 is not a plain \
             timeout bump: cannot read `5e3`: an exponent"
        ),
        "{why}"
    );

    // 60000 / 2 -> 60000 / 100 reads as a 50x bump of one number and is a 50x cut.
    team_commits(&g, "src/app.env", "TIMEOUT_MS=60000/2\n");
    let fix = g.agent_commits("src/app.env", "TIMEOUT_MS=60000/100\n", "Raise the timeout");
    let p = stdout_json(&g.propose(&fix, "timeout-bump", "raise the timeout"));
    assert_eq!(p["decision"], "deny", "{p}");
    let why = rules(&p).join("\n");
    assert!(
        why.contains("src/app.env:1 is not a plain timeout bump: `100` is computed with `/`"),
        "{why}"
    );
}

#[test]
fn the_commands_in_the_approval_email_run_as_they_are_pasted() {
    let (smtp, inbox) = super::rollback::smtp_server();
    let g = Gate::start_with(0, false, &mail_config(smtp), "");
    let fix = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 800\n",
        "Raise the timeout",
    );
    let p = stdout_json(&g.propose(&fix, "timeout-bump", "raise the timeout"));
    assert_eq!(p["decision"], "needs_approval", "{p}");
    let id = p["id"].as_str().unwrap().to_owned();
    let raw = wait_for_mail(&inbox, &format!("approval needed for {id}"));
    let mail = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("the email parses")
        .body_text(0)
        .expect("a text part")
        .into_owned();
    let command = |label: &str| -> Vec<String> {
        let line = mail
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{mail}"));
        line.split_whitespace().map(str::to_owned).collect()
    };
    // Run exactly as written, from a directory that holds no config: nothing else is needed.
    let run = |words: &[String]| {
        assert_eq!(words[0], "guardian", "{words:?}");
        Command::new(env!("CARGO_BIN_EXE_guardian"))
            .args(&words[1..])
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap()
    };
    let shown = run(&command("To see the diff:"));
    assert_eq!(
        shown.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(String::from_utf8_lossy(&shown.stdout).contains("timeout_ms = 800"));
    let approve = command("To approve it:");
    assert!(
        approve.windows(2).any(|w| w == ["--api", g.api.as_str()]),
        "{approve:?}"
    );
    let approved = run(&approve);
    assert_eq!(
        approved.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    let p = g.wait_for(&format!("/v1/proposals/{id}"), 30, |p| {
        p["state"] != "pending"
    });
    assert_eq!(p["decided_by"], "approver:alice", "{p}");
}
