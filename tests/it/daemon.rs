//! `guardian run` for real: the binary, a real access log written while it runs, the HTTP API
//! over loopback, `guardian notify`, and signals.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const TOKEN: &str = "test-token-0123456789abcdef";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn line(ts: f64, status: u16) -> String {
    format!("{{\"ts\": {ts:.3}, \"status\": {status}, \"latency_ms\": 40.0, \"route\": \"/\"}}\n")
}

struct Daemon {
    child: Child,
    api: String,
    config: PathBuf,
    log: PathBuf,
    /// Kept so the directory outlives the daemon; handed on by `restart`.
    dir: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Starts `guardian run` on a log that already holds `history_secs` of healthy traffic.
    fn start(watch_secs: u32, history_secs: u32) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.jsonl");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let t0 = now();
        let mut history = String::new();
        for i in 0..history_secs * 20 {
            let ts = t0 - f64::from(history_secs) + f64::from(i) / 20.0;
            history.push_str(&line(ts, if i % 100 == 0 { 500 } else { 200 }));
        }
        std::fs::write(&log, history).unwrap();
        let config = dir.path().join("guardian.toml");
        std::fs::write(
            &config,
            format!(
                "[detector]\nbaseline_secs = 600\nwatch_secs = {watch_secs}\n\n\
                 [daemon]\nservice = \"shop\"\nstate_dir = {:?}\nlisten = \"127.0.0.1:0\"\n\
                 token_file = {:?}\n\n[[daemon.logs]]\nname = \"access\"\npath = {:?}\nformat = \"jsonl\"\n",
                dir.path().join("state"),
                token_file,
                log
            ),
        )
        .unwrap();
        Daemon::spawn(dir, config, log)
    }

    fn spawn(dir: tempfile::TempDir, config: PathBuf, log: PathBuf) -> Daemon {
        let (child, api) = super::common::spawn_daemon(&config, &[]);
        Daemon {
            child,
            api,
            config,
            log,
            dir: Some(dir),
        }
    }

    /// Kills the daemon as `kill -9` would, and starts it again on the same state.
    fn restart(mut self) -> Daemon {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self.dir.take().expect("the directory is still here");
        Daemon::spawn(dir, self.config.clone(), self.log.clone())
    }

    fn get(&self, path: &str) -> (u16, Value) {
        answer(
            ureq::get(&format!("{}{path}", self.api))
                .set("Authorization", &format!("Bearer {TOKEN}"))
                .call(),
        )
    }

    fn post(&self, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut r =
            ureq::post(&format!("{}{path}", self.api)).set("Content-Type", "application/json");
        if let Some(t) = token {
            r = r.set("Authorization", &format!("Bearer {t}"));
        }
        answer(r.send_string(body))
    }

    fn notify(&self, commit: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_guardian"))
            .args(["notify", "--config"])
            .arg(&self.config)
            .args([
                "--api",
                &self.api,
                "--commit",
                commit,
                "--kind",
                "ai",
                "--pattern",
                "nil-check",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Polls a change until it leaves `watching`, for at most `secs`.
    fn wait_for_verdict(&self, id: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (code, change) = self.get(&format!("/v1/changes/{id}"));
            assert_eq!(code, 200, "{change}");
            if change["state"] != "watching" || Instant::now() > deadline {
                return change;
            }
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answer(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    match r {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("cannot reach the daemon: {e}"),
    }
}

/// Appends live traffic to the log, 20 requests a second, failing with the share in `errors`
/// (per mille), until dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(log: &Path, errors_per_mille: Arc<AtomicU32>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let log = log.to_owned();
        let stop2 = stop.clone();
        let handle = thread::spawn(move || {
            let mut file = OpenOptions::new().append(true).open(&log).unwrap();
            let mut i = 0u32;
            while !stop2.load(Ordering::Relaxed) {
                let per_mille = errors_per_mille.load(Ordering::Relaxed);
                let status = if (i * 37) % 1000 < per_mille {
                    503
                } else {
                    200
                };
                file.write_all(line(now(), status).as_bytes()).unwrap();
                i += 1;
                thread::sleep(Duration::from_millis(50));
            }
        });
        Traffic {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[test]
fn a_bad_deploy_is_regressed_within_seconds_with_its_evidence() {
    let d = Daemon::start(300, 600);
    let errors = Arc::new(AtomicU32::new(10));
    let _traffic = Traffic::start(&d.log, errors.clone());
    thread::sleep(Duration::from_secs(2));
    let id = d.notify("abc1234");
    assert!(id.starts_with("chg_"), "{id}");
    let (code, watching) = d.get(&format!("/v1/changes/{id}"));
    assert_eq!(code, 200);
    assert_eq!(watching["state"], "watching", "{watching}");
    assert_eq!(watching["kind"], "ai");
    // The deploy breaks the service: nearly every request fails.
    errors.store(950, Ordering::Relaxed);
    let started = Instant::now();
    let change = d.wait_for_verdict(&id, 30);
    assert_eq!(change["state"], "regressed", "{change}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let errors_signal = &change["report"]["signals"][0];
    assert_eq!(errors_signal["signal"], "errors");
    assert_eq!(errors_signal["regressed"], true);
    assert!(
        errors_signal["effect_ratio"].as_f64().unwrap() > 10.0,
        "{errors_signal}"
    );
    assert!(change["decided_at"].as_f64().is_some());
}

#[test]
fn a_good_deploy_is_healthy_when_the_window_ends() {
    let d = Daemon::start(15, 600);
    let _traffic = Traffic::start(&d.log, Arc::new(AtomicU32::new(10)));
    thread::sleep(Duration::from_secs(1));
    let id = d.notify("def5678");
    let change = d.wait_for_verdict(&id, 40);
    assert_eq!(change["state"], "healthy", "{change}");
    let (code, status) = d.get("/v1/status");
    assert_eq!(code, 200);
    assert_eq!(status["service"], "shop");
    assert_eq!(status["recent"][0]["id"], id.as_str());
    assert!(
        status["sources"][0]["lines_read_total"].as_u64().unwrap() >= 12_000,
        "{status}"
    );
}

#[test]
fn requests_without_the_token_are_refused_and_change_nothing() {
    let d = Daemon::start(300, 60);
    let body = r#"{"commit": "abc1234"}"#;
    let (code, answer) = d.post("/v1/changes", body, None);
    assert_eq!(code, 401, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("Authorization"));
    let (code, _) = d.post("/v1/changes", body, Some("not-the-token-at-all"));
    assert_eq!(code, 401);
    let (code, list) = d.get("/v1/changes");
    assert_eq!(code, 200);
    assert_eq!(list.as_array().unwrap().len(), 0, "{list}");
}

#[test]
fn bad_api_requests_get_clear_errors() {
    let d = Daemon::start(300, 60);
    let cases = [
        ("/v1/changes", r#"{"commit": "not a sha"}"#, "\"commit\""),
        ("/v1/changes", r#"{"comit": "abc1234"}"#, "comit"),
        (
            "/v1/changes",
            r#"{"commit": "abc1234", "kind": "robot"}"#,
            "robot",
        ),
        ("/v1/changes", "{", "bad change notification"),
        (
            "/v1/observations",
            r#"[{"ts": 1764000000, "status": 200}, {"status": 200}]"#,
            "observation 1",
        ),
        ("/v1/observations", r#"{"ts": 1}"#, "JSON array"),
    ];
    for (path, body, expected) in cases {
        let (code, answer) = d.post(path, body, Some(TOKEN));
        assert_eq!(code, 400, "{path} {body}: {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let (code, answer) = d.get("/v1/changes/chg_000000000000");
    assert_eq!(code, 404, "{answer}");
    let (code, answer) = d.post(
        "/v1/observations",
        &format!(
            r#"[{{"ts": {}, "status": 200, "latency_ms": 12.5}}]"#,
            now()
        ),
        Some(TOKEN),
    );
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["accepted"], 1);
}

#[test]
fn a_watch_resumes_after_kill_9_and_still_catches_the_regression() {
    let d = Daemon::start(300, 600);
    let errors = Arc::new(AtomicU32::new(10));
    let traffic = Traffic::start(&d.log, errors.clone());
    thread::sleep(Duration::from_secs(1));
    let id = d.notify("abc1234");
    thread::sleep(Duration::from_secs(2));
    let d = d.restart();
    let (code, change) = d.get(&format!("/v1/changes/{id}"));
    assert_eq!(code, 200);
    assert_eq!(
        change["state"], "watching",
        "the watch is resumed, not lost: {change}"
    );
    // The baseline came back with it: a regression now is still judged against it.
    errors.store(950, Ordering::Relaxed);
    let change = d.wait_for_verdict(&id, 30);
    assert_eq!(change["state"], "regressed", "{change}");
    drop(traffic);
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let mut d = Daemon::start(300, 10);
    let pid = d.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn run_without_a_daemon_section_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("replay-only.toml");
    std::fs::write(&config, "[detector]\nalpha = 0.01\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[daemon]"), "{err}");
}

#[test]
fn sighup_reloads_and_a_bad_config_is_refused_without_stopping() {
    let mut d = Daemon::start(300, 10);
    let pid = d.child.id().to_string();
    let good = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, "[detector]\nalpha = 7\n").unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    thread::sleep(Duration::from_millis(500));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "SIGHUP with a bad config stopped the daemon"
    );
    let (code, _) = d.get("/v1/status");
    assert_eq!(code, 200);
    std::fs::write(
        &d.config,
        good.replace("watch_secs = 300", "watch_secs = 600"),
    )
    .unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    thread::sleep(Duration::from_millis(500));
    assert!(d.child.try_wait().unwrap().is_none());
    // The new watch window applies to the next change.
    let id = d.notify("abc1234");
    let (_, change) = d.get(&format!("/v1/changes/{id}"));
    let ends = change["live"]["watch_ends_at"].as_f64().unwrap();
    let landed = change["landed_at"].as_f64().unwrap();
    assert!((ends - landed - 600.0).abs() < 2.0, "{change}");
}

#[test]
fn reading_the_record_from_another_process_never_takes_the_daemons_journal() {
    // On a state database the daemon has just created, `guardian postmortem` (which opens it
    // read-write) once found no lock held and deleted the daemon's WAL under it: what was
    // recorded next was lost on `kill -9`.
    let d = Daemon::start(600, 60);
    let first = d.notify("aaaa1111");
    let out = Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(["postmortem", &first, "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fds = std::fs::read_dir(format!("/proc/{}/fd", d.child.id())).unwrap();
    for fd in fds.flatten() {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        assert!(
            !target.to_string_lossy().contains("(deleted)"),
            "the daemon holds a deleted file: {}",
            target.display()
        );
    }
    let second = d.notify("bbbb2222");
    let d = d.restart();
    for id in [&first, &second] {
        let (code, change) = d.get(&format!("/v1/changes/{id}"));
        assert_eq!(code, 200, "{id} was lost: {change}");
    }
}

#[test]
fn a_deploy_said_to_be_starting_keeps_its_restart_from_counting_against_the_change_before() {
    let d = Daemon::start(300, 600);
    let errors = Arc::new(AtomicU32::new(10));
    let traffic = Traffic::start(&d.log, errors.clone());
    thread::sleep(Duration::from_secs(1));
    let a = d.notify("abc1234");
    thread::sleep(Duration::from_secs(3));

    // The next deploy says it is starting, then its restart fails every request for 6 s.
    let out = Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(["notify", "--starting", "--config"])
        .arg(&d.config)
        .args(["--api", &d.api])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("{a} was still being watched")),
        "{said}"
    );
    errors.store(1000, Ordering::Relaxed);
    thread::sleep(Duration::from_secs(6));
    errors.store(10, Ordering::Relaxed);
    thread::sleep(Duration::from_secs(1));
    let b = d.notify("def5678");

    // The change before was superseded when the deploy began, never blamed for its restart...
    let (_, before) = d.get(&format!("/v1/changes/{a}"));
    assert_eq!(before["state"], "superseded", "{before}");
    assert_eq!(before["note"], "another deploy began during the watch");
    // ...and the new one is judged against the traffic before the deploy began, the restart
    // being neither baseline nor watch.
    thread::sleep(Duration::from_secs(8));
    let (_, after) = d.get(&format!("/v1/changes/{b}"));
    assert_eq!(after["state"], "watching", "{after}");
    drop(traffic);
}

#[test]
fn a_mistake_in_a_part_of_the_config_notify_does_not_use_is_a_warning_not_a_failed_deploy() {
    let d = Daemon::start(300, 10);
    // Someone edits the mail settings while the daemon runs on what it read at start.
    let mut file = OpenOptions::new().append(true).open(&d.config).unwrap();
    file.write_all(b"\n[daemon.mail]\nsmtp_hots = \"mail.example\"\n")
        .unwrap();
    drop(file);

    let id = d.notify("abc1234");
    assert!(id.starts_with("chg_"), "{id}");
    let out = Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(["status", "--config"])
        .arg(&d.config)
        .args(["--api", &d.api])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    // The warning names the file and the key, and says what it means for the daemon.
    assert!(
        said.starts_with(&format!("guardian: warning: {}: ", d.config.display())),
        "{said}"
    );
    assert!(said.contains("unknown field `smtp_hots`"), "{said}");
    assert!(
        said.contains("guardian run would refuse to start with this file"),
        "{said}"
    );
}

#[test]
fn a_mistake_in_what_notify_needs_is_bad_input_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guardian.toml");
    std::fs::write(
        &config,
        "[daemon]\nlisten = \"localhost\"\ntoken_file = \"/nonexistent\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(["notify", "--commit", "abc1234", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!(
            "{}: [daemon] listen must be an address and port such as 127.0.0.1:8707, got \"localhost\"",
            config.display()
        )),
        "{said}"
    );
}

#[test]
fn a_second_daemon_on_the_same_state_directory_is_refused_naming_the_first() {
    let mut d = Daemon::start(300, 10);
    let state = d.dir.as_ref().unwrap().path().join("state");
    let out = Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(["run", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains(&format!(
            "another guardian (pid {}) is running on the state directory {}",
            d.child.id(),
            state.display()
        )),
        "{said}"
    );
    // The first goes on as if nothing happened.
    assert!(d.child.try_wait().unwrap().is_none());
    let (code, _) = d.get("/v1/status");
    assert_eq!(code, 200);
    // Killed, it leaves no stale lock: the next daemon starts on the same state.
    let d = d.restart();
    let (code, _) = d.get("/v1/status");
    assert_eq!(code, 200);
}
