//! The whole path, for real: a git repository the deploys come from, a redeploy hook script,
//! the daemon following the access log of an "app" whose behaviour is whatever is deployed, a
//! bad commit notified, and then the revert, the redeploy and the recovery check.
//!
//! The app is a real HTTP server with a real client driving it: each request reads the deployed
//! `mode` file, fails when it says `broken`, and is written to the access log guardian follows.
//! The hook deploys by copying `mode` from the repository, so the service recovers only if the
//! revert really happened and the hook really ran; an SMTP server on loopback receives the alert.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub(super) const TOKEN: &str = "rollback-token-0123456789";

pub(super) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

pub(super) fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=dev", "-c", "user.email=dev@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub(super) fn commit_mode(repo: &Path, mode: &str, message: &str) -> String {
    std::fs::write(repo.join("mode"), format!("{mode}\n")).unwrap();
    git(repo, &["add", "mode"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

/// The app, for real over HTTP: each request reads the deployed `mode`, fails (nearly always)
/// when it says `broken`, and is logged as a JSON line, the way a proxy logs it.
/// Ten minutes of healthy traffic (1% errors, 20 requests a second) before now: the baseline.
pub(super) fn write_healthy_history(log: &Path) {
    let t0 = now();
    let mut history = String::new();
    for i in 0..12_000 {
        let ts = t0 - 600.0 + f64::from(i) / 20.0;
        let status = if i % 100 == 0 { 500 } else { 200 };
        history.push_str(&format!(
            "{{\"ts\": {ts:.3}, \"status\": {status}, \"latency_ms\": 30}}\n"
        ));
    }
    std::fs::write(log, history).unwrap();
}

/// A client sending the app 20 requests a second until `stop`.
pub(super) fn drive(app: std::net::SocketAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
        while !stop.load(Ordering::Relaxed) {
            let _ = agent.get(&format!("http://{app}/cart")).call();
            thread::sleep(Duration::from_millis(50));
        }
    })
}

pub(super) fn serve_app(log: PathBuf, live: PathBuf) -> std::net::SocketAddr {
    use std::io::{BufRead as _, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let mut file = OpenOptions::new().append(true).open(&log).unwrap();
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            // The broken code path is behind the `new-total` feature flag when the app has a
            // flags file beside the deployed mode (`flags.json`, read on every request).
            let flags = live.with_file_name("flags.json");
            let flag_off = std::fs::read_to_string(&flags)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|f| f["new-total"] == Value::Bool(false));
            let broken =
                std::fs::read_to_string(&live).unwrap_or_default().trim() == "broken" && !flag_off;
            let fail = if broken { i % 20 != 0 } else { i % 100 == 0 };
            let status = if fail { 500 } else { 200 };
            let _ = writeln!(
                file,
                "{{\"ts\": {:.3}, \"status\": {status}, \"latency_ms\": 30}}",
                now()
            );
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    addr
}

pub(super) struct World {
    dir: tempfile::TempDir,
    pub(super) repo: PathBuf,
    pub(super) live: PathBuf,
    log: PathBuf,
    pub(super) config: PathBuf,
    daemon: Child,
    pub(super) api: String,
    /// The app's address.
    app: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    writer: Option<thread::JoinHandle<()>>,
}

/// A real SMTP server on loopback that keeps what it receives.
#[derive(Clone, Default)]
struct Inbox {
    mails: Arc<std::sync::Mutex<Vec<String>>>,
    current: Vec<u8>,
}

impl mailin_embedded::Handler for Inbox {
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> mailin_embedded::Response {
        let mail = String::from_utf8_lossy(&std::mem::take(&mut self.current)).into_owned();
        self.mails.lock().unwrap().push(mail);
        mailin_embedded::response::OK
    }
}

pub(super) fn smtp_server() -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let inbox = Inbox::default();
    let mails = inbox.mails.clone();
    thread::spawn(move || {
        let mut server = mailin_embedded::Server::new(inbox);
        server.with_name("mx.test").with_tcp_listener(listener);
        let _ = server.serve();
    });
    (addr, mails)
}

impl World {
    fn new(hook: &str, hook_timeout_secs: u32) -> World {
        World::with_mail(hook, hook_timeout_secs, None)
    }

    fn with_mail(hook: &str, hook_timeout_secs: u32, smtp: Option<std::net::SocketAddr>) -> World {
        World::with_extra(hook, hook_timeout_secs, smtp, |_| String::new())
    }

    /// `extra(dir)` is appended to the config.
    pub(super) fn with_extra(
        hook: &str,
        hook_timeout_secs: u32,
        smtp: Option<std::net::SocketAddr>,
        extra: impl FnOnce(&Path) -> String,
    ) -> World {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("app");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README"), "the app\n").unwrap();
        git(&repo, &["add", "README"]);
        commit_mode(&repo, "ok", "first release");
        let live = dir.path().join("live-mode");
        std::fs::copy(repo.join("mode"), &live).unwrap();
        let hook_script = dir.path().join("redeploy.sh");
        std::fs::write(&hook_script, format!("#!/bin/sh\nset -e\n{hook}\n")).unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, TOKEN).unwrap();

        let log = dir.path().join("access.jsonl");
        write_healthy_history(&log);

        let mail = match smtp {
            Some(addr) => format!(
                "\n[daemon.mail]\nfrom = \"guardian@example.com\"\nto = [\"oncall@example.com\"]\n\
                 smtp_host = \"{}\"\nsmtp_port = {}\nsecurity = \"none\"\n",
                addr.ip(),
                addr.port()
            ),
            None => String::new(),
        };
        let config = dir.path().join("guardian.toml");
        std::fs::write(
            &config,
            mail + &format!(
                "[detector]\nbaseline_secs = 600\nwatch_secs = 300\n\n\
                 [daemon]\nstate_dir = {state:?}\nlisten = \"127.0.0.1:0\"\ntoken_file = {token:?}\n\n\
                 [[daemon.logs]]\npath = {log:?}\n\n\
                 [daemon.rollback]\nrepo = {repo:?}\nhook = [\"sh\", {hook:?}]\n\
                 hook_timeout_secs = {hook_timeout_secs}\nverify_secs = 8\n{extra}",
                extra = extra(dir.path()),
                state = dir.path().join("state"),
                token = token_file,
                log = log,
                repo = repo,
                hook = hook_script,
            ),
        )
        .unwrap();

        let (daemon, api) = super::common::spawn_daemon(&config, &[("LIVE", &live)]);

        // The app: an HTTP server that serves whatever is deployed (failing nearly always
        // while `broken` is), writing one access-log line per request; and a client sending it
        // 20 requests a second.
        let app = serve_app(log.clone(), live.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = drive(app, stop.clone());
        World {
            dir,
            repo,
            live,
            log,
            config,
            daemon,
            api,
            app,
            stop,
            writer: Some(writer),
        }
    }

    /// Commits `mode`, deploys it (the app now serves it) and tells guardian.
    pub(super) fn deploy(&self, mode: &str) -> (String, String) {
        let sha = commit_mode(&self.repo, mode, &format!("set mode to {mode}"));
        std::fs::copy(self.repo.join("mode"), &self.live).unwrap();
        let id = super::common::notify(&self.config, &self.api, &sha, "ai");
        (sha, id)
    }

    pub(super) fn change(&self, id: &str) -> Value {
        super::common::change(&self.api, TOKEN, id)
    }

    /// Waits until the change reaches a final state, for at most `secs`.
    pub(super) fn settle(&self, id: &str, secs: u64) -> Value {
        super::common::settle(&self.api, TOKEN, id, secs)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = (&self.dir, &self.log);
    }
}

#[test]
fn a_bad_deploy_is_reverted_redeployed_and_verified() {
    let (smtp, inbox) = smtp_server();
    let w = World::with_mail("cp \"$GUARDIAN_REPO/mode\" \"$LIVE\"", 30, Some(smtp));
    thread::sleep(Duration::from_secs(1));
    let (bad, id) = w.deploy("broken");
    let change = w.settle(&id, 60);
    assert_eq!(change["state"], "rolled_back", "{change}");
    // The revert commit exists, with its trailers, and undid the bad commit.
    let head = git(&w.repo, &["log", "-1", "--format=%B"]);
    assert!(
        head.contains(&format!("Guardian-Revert-Of: {bad}")),
        "{head}"
    );
    assert!(head.contains(&format!("Guardian-Change: {id}")), "{head}");
    assert_eq!(
        std::fs::read_to_string(w.repo.join("mode")).unwrap().trim(),
        "ok"
    );
    // The hook really deployed it: the app serves good responses again.
    assert_eq!(std::fs::read_to_string(&w.live).unwrap().trim(), "ok");
    let good = (0..20)
        .filter(|_| {
            ureq::get(&format!("http://{}/cart", w.app))
                .call()
                .is_ok_and(|r| r.status() == 200)
        })
        .count();
    assert!(
        good >= 18,
        "only {good} of 20 requests succeeded after the rollback"
    );
    assert!(
        change["note"]
            .as_str()
            .unwrap()
            .contains("back to its baseline"),
        "{change}"
    );
    // The alert reached the on-call engineer, with the evidence and what guardian did.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mail = loop {
        if let Some(m) = inbox.lock().unwrap().first().cloned() {
            break m;
        }
        assert!(Instant::now() < deadline, "no alert email arrived");
        thread::sleep(Duration::from_millis(200));
    };
    let unfolded = mail.replace("=\r\n", "").replace("\r\n", "\n");
    assert!(unfolded.contains("Subject:"), "{unfolded}");
    assert!(
        unfolded.contains(&bad[..10]),
        "the commit is named: {unfolded}"
    );
    assert!(
        unfolded.contains("git revert"),
        "the undo of the undo is explained: {unfolded}"
    );
    assert!(unfolded.contains('%'), "the rates are there: {unfolded}");
    assert!(
        unfolded.contains(&format!(
            "On the status page (sign in with a token): {}/changes/{id}",
            w.api
        )),
        "the email links to the change on the status page: {unfolded}"
    );

    // The email took a signed checkpoint of the audit trail off the host, and the trail on the
    // host still matches it.
    let parsed = mail_parser::MessageParser::default()
        .parse(mail.as_bytes())
        .expect("the alert parses as an email");
    let text = parsed.body_text(0).expect("a text body").into_owned();
    // It carries the post-mortem, with the chart of the traffic around the change.
    let html = parsed.body_html(0).expect("an HTML part").into_owned();
    assert!(html.contains("<svg"), "{html}");
    assert!(html.contains(&id), "{html}");
    assert!(text.contains("Audit checkpoint"), "{text}");
    let kept = w.dir.path().join("kept-checkpoint.txt");
    std::fs::write(&kept, &text).unwrap();
    let verify = Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(["audit", "verify", "--config"])
        .arg(&w.config)
        .arg("--checkpoint")
        .arg(&kept)
        .output()
        .unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn an_email_queued_just_before_a_stop_is_sent_before_guardian_exits() {
    let (smtp, inbox) = smtp_server();
    let mut w = World::with_mail("cp \"$GUARDIAN_REPO/mode\" \"$LIVE\"", 30, Some(smtp));
    thread::sleep(Duration::from_secs(1));
    let (bad, id) = w.deploy("broken");
    // Stopped (as systemd stops it) within moments of the rollback's end, when its email is
    // queued: mail goes out every 5 s, so this is nearly always before the next pass.
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.change(&id)["state"] != "rolled_back" {
        assert!(Instant::now() < deadline, "{}", w.change(&id));
        thread::sleep(Duration::from_millis(20));
    }
    let pid = nix::unistd::Pid::from_raw(w.daemon.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = w.daemon.wait().unwrap();
    assert!(status.success(), "{status}");
    let mails = inbox.lock().unwrap().clone();
    assert!(
        mails
            .iter()
            .any(|m| m.replace("=\r\n", "").contains(&bad[..10])),
        "the rollback's email was not sent before the stop: {mails:?}"
    );
}

#[test]
fn a_conflicting_revert_leaves_the_tree_as_it_was_and_escalates() {
    let w = World::new("cp \"$GUARDIAN_REPO/mode\" \"$LIVE\"", 30);
    let (_bad, id) = w.deploy("broken");
    // Someone commits on top of the bad change, on the same line, before guardian acts.
    let later = commit_mode(&w.repo, "broken-differently", "tweak");
    let change = w.settle(&id, 60);
    assert_eq!(change["state"], "escalated", "{change}");
    assert!(
        change["note"].as_str().unwrap().contains("conflicts"),
        "{change}"
    );
    assert_eq!(git(&w.repo, &["rev-parse", "HEAD"]), later);
    assert_eq!(
        git(&w.repo, &["status", "--porcelain", "--untracked-files=no"]),
        ""
    );
    assert!(!w.repo.join(".git/sequencer").exists());
}

#[test]
fn in_tree_attributes_do_not_turn_a_conflicting_revert_into_a_merge() {
    let w = World::new("cp \"$GUARDIAN_REPO/mode\" \"$LIVE\"", 30);
    // A union merge driver, committed in the tree: git would merge both versions of `mode`
    // instead of stopping at the conflict.
    std::fs::write(w.repo.join(".gitattributes"), "* merge=union\n").unwrap();
    git(&w.repo, &["add", ".gitattributes"]);
    git(&w.repo, &["commit", "-q", "-m", "merge everything"]);
    let (_bad, id) = w.deploy("broken");
    let later = commit_mode(&w.repo, "broken-differently", "tweak");
    let change = w.settle(&id, 60);
    assert_eq!(change["state"], "escalated", "{change}");
    assert!(
        change["note"].as_str().unwrap().contains("conflicts"),
        "{change}"
    );
    assert_eq!(git(&w.repo, &["rev-parse", "HEAD"]), later);
    assert_eq!(
        std::fs::read_to_string(w.repo.join("mode")).unwrap(),
        "broken-differently\n"
    );
}

#[test]
fn a_hanging_hook_is_killed_and_escalated() {
    let w = World::new("sleep 1000 & sleep 1000", 2);
    let (_bad, id) = w.deploy("broken");
    let started = Instant::now();
    let change = w.settle(&id, 60);
    assert_eq!(change["state"], "escalated", "{change}");
    assert!(
        change["note"].as_str().unwrap().contains("hook"),
        "{change}"
    );
    // Killed at its 2 s timeout (plus the grace period), not left to run for 1000 s; that no
    // process of its group survives is checked by the hook runner's own tests.
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_commit_guardian_could_not_revert_is_refused_unless_a_fetch_brings_it() {
    let w = World::with_extra("true", 30, None, |dir| {
        // The team's remote, which guardian pushes its reverts to.
        let remote = dir.join("upstream.git");
        git(dir, &["init", "-q", "--bare", "-b", "main", "upstream.git"]);
        let repo = dir.join("app");
        git(
            &repo,
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );
        git(&repo, &["push", "-q", "origin", "main"]);
        "push_remote = \"origin\"\npush_branch = \"main\"\n".to_owned()
    });
    let notify = |commit: &str| {
        Command::new(env!("CARGO_BIN_EXE_guardian"))
            .args(["notify", "--config"])
            .arg(&w.config)
            .args(["--api", &w.api, "--commit", commit])
            .output()
            .unwrap()
    };

    // A commit nobody made: refused, naming the commit and the repository.
    let out = notify("deadbeef");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains(&format!(
            "the daemon refused the request (422): commit deadbeef is not in the repository \
             guardian reverts in, {}, even after fetching from origin",
            w.repo.display()
        )),
        "{said}"
    );
    assert!(out.stdout.is_empty());

    // A commit built and deployed from the remote before guardian's clone pulled it: taken,
    // once fetched.
    let dir = w.repo.parent().unwrap();
    let elsewhere = dir.join("elsewhere");
    git(
        dir,
        &[
            "clone",
            "-q",
            dir.join("upstream.git").to_str().unwrap(),
            elsewhere.to_str().unwrap(),
        ],
    );
    let later = commit_mode(&elsewhere, "steady", "a later release");
    git(&elsewhere, &["push", "-q", "origin", "main"]);
    let out = notify(&later);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(w.change(&id)["commit"], later.as_str());
    // Fetched, not checked out: guardian's work tree is where it was.
    assert_ne!(git(&w.repo, &["rev-parse", "HEAD"]), later);
}
