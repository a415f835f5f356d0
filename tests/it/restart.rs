//! The health check's restart, for real (`[daemon.health]`): the daemon probes a real HTTP app
//! whose health endpoint answers 503 while it is "crashed", and runs a real restart script that
//! "restarts" it (writes the state file the app reads, and counts itself in a file). A crash
//! that a restart fixes is restarted once and verified, with an email that says what ran; a
//! crash loop is restarted exactly `max_per_hour` times, then escalated, and nothing more.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::rollback::{now, smtp_server};

const TOKEN: &str = "restart-token-0123456789";

/// The app's health endpoint: 200 while its state file says `up`, or `until T` with T still
/// ahead; 503 otherwise (`down`, or a time passed: it crashed again).
fn serve_health(state: PathBuf) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let said = std::fs::read_to_string(&state).unwrap_or_default();
            let up = match said.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["up"] => true,
                ["until", t] => t.parse::<f64>().is_ok_and(|t| now() < t),
                _ => false,
            };
            let status = if up { "200 OK" } else { "503 Unavailable" };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    addr
}

struct World {
    dir: tempfile::TempDir,
    daemon: Child,
    api: String,
}

impl World {
    /// The app starts crashed; `restart` is the script's body (`$1` the state file, `$2` the
    /// file each restart appends a line to); `extra` goes into `[daemon.health.restart]`.
    fn new(restart: &str, extra: &str, smtp: Option<std::net::SocketAddr>) -> World {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("app-state");
        std::fs::write(&state, "down\n").unwrap();
        let app = serve_health(state.clone());
        let script = dir.path().join("restart.sh");
        std::fs::write(&script, format!("#!/bin/sh\nset -e\n{restart}\n")).unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, TOKEN).unwrap();
        let log = dir.path().join("access.jsonl");
        std::fs::write(&log, "").unwrap();
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
            format!(
                "[daemon]\nservice = \"shop\"\nstate_dir = {state_dir:?}\nlisten = \"127.0.0.1:0\"\n\
                 token_file = {token_file:?}\n\n[[daemon.logs]]\npath = {log:?}\n{mail}\n\
                 [daemon.health]\nurl = \"http://{app}/healthz\"\ninterval_secs = 1\n\
                 timeout_secs = 1\nfailures = 2\n\n\
                 [daemon.health.restart]\ncommand = [\"sh\", {script:?}, {state:?}, {count:?}]\n\
                 timeout_secs = 5\n{extra}\n",
                state_dir = dir.path().join("state"),
                count = dir.path().join("restarts"),
            ),
        )
        .unwrap();
        let (daemon, api) = super::common::spawn_daemon(&config, &[]);
        World { dir, daemon, api }
    }

    fn restarts_run(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("restarts"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn health(&self) -> Value {
        let v: Value = ureq::get(&format!("{}/v1/status", self.api))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        v["health"].clone()
    }

    /// Polls the status until `done` holds of its health, for at most `secs`.
    fn wait_for(&self, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let h = self.health();
            if done(&h) || Instant::now() > deadline {
                return h;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        let token_file = self.dir.path().join("token");
        Command::new(env!("CARGO_BIN_EXE_guardian"))
            .args(args)
            .args(["--api", &self.api, "--token-file"])
            .arg(&token_file)
            .output()
            .unwrap()
    }

    fn state_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[test]
fn a_crashed_app_is_restarted_once_verified_and_the_person_told_what_ran() {
    let (smtp, inbox) = smtp_server();
    let w = World::new(
        "echo up > \"$1\"\necho restarted >> \"$2\"\necho \"app restarted by $GUARDIAN_RESTART\"",
        "max_per_hour = 3\ncooldown_secs = 60\nverify_secs = 5",
        Some(smtp),
    );
    let h = w.wait_for(20, |h| h["track"]["verified"] == 1);
    assert_eq!(h["track"]["restarts"], 1, "{h}");
    assert_eq!(h["track"]["verified"], 1, "{h}");
    assert_eq!(h["phase"], "watching", "{h}");
    // Healthy from then on: no second restart.
    thread::sleep(Duration::from_secs(3));
    let h = w.health();
    assert_eq!(
        (
            h["track"]["restarts"].clone(),
            h["track"]["escalated"].clone()
        ),
        (1.into(), 0.into()),
        "{h}"
    );
    assert_eq!(w.restarts_run(), 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mail = loop {
        let found = inbox
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.contains("restarted, healthy again"))
            .cloned();
        match found {
            Some(mail) => break mail,
            None if Instant::now() < deadline => thread::sleep(Duration::from_millis(200)),
            None => panic!("no email: {:?}", inbox.lock().unwrap()),
        }
    };
    // What failed, what ran and what it said, and the verification.
    let mail = mail.replace("=\r\n", "").replace("\r\n", "\n");
    for said in [
        "answered 503",
        "restart.sh",
        "It exited 0",
        "app restarted by rst_",
        "healthy again",
    ] {
        assert!(mail.contains(said), "{said:?} not in {mail}");
    }
    let status = w.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("track record: 1 restart, 1 verified, 0 escalated"),
        "{text}"
    );
    assert!(w.state_dir().exists());
}

#[test]
fn a_crash_loop_is_restarted_max_per_hour_times_then_escalated_and_no_more() {
    // Each restart brings the app up for two seconds; then it crashes again.
    let w = World::new(
        "echo \"until $(( $(date +%s) + 2 ))\" > \"$1\"\necho restarted >> \"$2\"",
        "max_per_hour = 3\ncooldown_secs = 3\nverify_secs = 4",
        None,
    );
    let h = w.wait_for(40, |h| h["track"]["escalated"] == 1);
    assert_eq!(h["track"]["escalated"], 1, "{h}");
    assert_eq!(h["phase"], "held", "{h}");
    assert_eq!(h["track"]["restarts"], 3, "{h}");
    assert_eq!(h["restarts_last_hour"], 3, "{h}");
    // Long past the cool-down, still crashed: nothing more is run, nothing more escalated.
    thread::sleep(Duration::from_secs(6));
    let h = w.health();
    assert_eq!(w.restarts_run(), 3);
    assert_eq!(
        (
            h["track"]["restarts"].clone(),
            h["track"]["escalated"].clone()
        ),
        (3.into(), 1.into()),
        "{h}"
    );
    assert!(h["consecutive_failures"].as_u64().unwrap() >= 5, "{h}");
    // The trust ledger shows the restart's record beside the fix patterns.
    let trust = w.cli(&["trust"]);
    let text = String::from_utf8_lossy(&trust.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("restart "))
        .unwrap_or_else(|| panic!("no restart line in {text}"));
    // attempts, verified (each brought it up for a moment, if a probe saw it), escalated,
    // shadow.
    let numbers: Vec<&str> = line.split_whitespace().skip(1).take(4).collect();
    assert_eq!(
        (numbers[0], numbers[2], numbers[3]),
        ("3", "1", "0"),
        "{line}"
    );
    assert!(line.contains("the hour's restarts were spent"), "{line}");
}
