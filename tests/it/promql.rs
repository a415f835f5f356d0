//! One guardian for a service of three instances, reading their counters through a real
//! Prometheus (`[[daemon.promql]]`): two instances run the old version, one the canary, told
//! apart by the `instance` label, named in the config or by the notification. A canary that
//! fails is caught by comparing it with the rest and rolled back by the hook; a canary as good
//! as the rest ends healthy; a rollout that widens to a second instance is followed; and a
//! Prometheus that stops answering mid-watch never lets the watch end healthy.

use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::prometheus::{metrics_app, Prometheus};
use super::rollback::{commit_mode, git};

const TOKEN: &str = "promql-token-0123456789";

/// One instance of the service at 100 requests a second, 1% failing; 90% while the file
/// `mode` (when given) says `broken`, and down (restarting) while it says `down`.
fn instance(mode: Option<PathBuf>, stop: Arc<AtomicBool>) -> String {
    let mode = move || {
        mode.as_ref()
            .and_then(|m| std::fs::read_to_string(m).ok())
            .map(|m| m.trim().to_owned())
            .unwrap_or_default()
    };
    metrics_app(
        100,
        move || match mode().as_str() {
            "down" => None,
            "broken" => Some(900),
            _ => Some(10),
        },
        stop,
    )
}

/// The service (three instances, the third the canary reading `live` as its deployed mode),
/// the Prometheus scraping them, and a guardian reading Prometheus with a rollback whose hook
/// deploys the repository's `mode` to the canary.
struct Fleet {
    /// Holds the repository, the hook and guardian's state for as long as the fleet runs.
    _dir: tempfile::TempDir,
    repo: PathBuf,
    /// The mode the canary serves, and the second instance's (which a rollout may widen to).
    live: PathBuf,
    live_b: PathBuf,
    /// `instance` of each: the first two the old version, the third the canary.
    instances: [String; 3],
    prometheus: Prometheus,
    stop: Arc<AtomicBool>,
    daemon: Child,
    api: String,
}

/// Where guardian learns which instances are the canary.
#[derive(PartialEq)]
enum Canary {
    /// `canary = [...]` in the config: the third instance.
    Configured,
    /// From each notification (`canary_label` alone in the config).
    Notified,
}

impl Fleet {
    fn start(watch_secs: u32, canary_from: Canary) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("app");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        commit_mode(&repo, "ok", "first release");
        let live = dir.path().join("live-mode");
        let live_b = dir.path().join("live-mode-b");
        std::fs::copy(repo.join("mode"), &live).unwrap();
        std::fs::copy(repo.join("mode"), &live_b).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let old_a = instance(None, stop.clone());
        let old_b = instance(Some(live_b.clone()), stop.clone());
        let canary = instance(Some(live.clone()), stop.clone());
        let prometheus = Prometheus::scraping_job("shop", &[&old_a, &old_b, &canary]);
        prometheus.wait_until("every instance scraped", 30, |p| {
            p.query("http_requests_total{job=\"shop\"}").len() == 6
        });
        let hook = dir.path().join("redeploy.sh");
        std::fs::write(
            &hook,
            "#!/bin/sh\nset -e\ncp \"$GUARDIAN_REPO/mode\" \"$LIVE\"\ncp \"$GUARDIAN_REPO/mode\" \"$LIVE_B\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("token"), TOKEN).unwrap();
        let config = dir.path().join("guardian.toml");
        std::fs::write(
            &config,
            format!(
                "[detector]\nbaseline_secs = 60\nwatch_secs = {watch_secs}\n\n\
                 [daemon]\nservice = \"shop\"\nstate_dir = {state:?}\nlisten = \"127.0.0.1:0\"\n\
                 token_file = {token:?}\n\n\
                 [[daemon.promql]]\nname = \"prometheus\"\nurl = \"{url}\"\nselector = 'job=\"shop\"'\n\
                 requests = \"http_requests_total\"\nerrors = \"http_requests_total{{code=5..}}\"\n\
                 route_label = \"route\"\ncanary_label = \"instance\"\n{configured}\
                 step_secs = 1\nlag_secs = 3\n\n\
                 [daemon.rollback]\nrepo = {repo:?}\nhook = [\"sh\", {hook:?}]\n\
                 hook_timeout_secs = 30\nverify_secs = 15\n",
                state = dir.path().join("state"),
                token = dir.path().join("token"),
                url = prometheus.url,
                configured = match canary_from {
                    Canary::Configured => format!("canary = [\"{canary}\"]\n"),
                    Canary::Notified => String::new(),
                },
            ),
        )
        .unwrap();
        let (daemon, api) =
            super::common::spawn_daemon(&config, &[("LIVE", &live), ("LIVE_B", &live_b)]);
        let fleet = Fleet {
            _dir: dir,
            repo,
            live,
            live_b,
            instances: [old_a, old_b, canary],
            prometheus,
            stop,
            daemon,
            api,
        };
        fleet.wait_for("guardian reading Prometheus", 30, |f| {
            f.get("/v1/status")["scrapes"][0]["data_until"].is_number()
        });
        fleet
    }

    fn get(&self, path: &str) -> Value {
        ureq::get(&format!("{}{path}", self.api))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .unwrap()
            .into_json()
            .unwrap()
    }

    fn wait_for(&self, what: &str, secs: u64, done: impl Fn(&Fleet) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "not within {secs} s: {what}\nstatus: {}",
                self.get("/v1/status")
            );
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Deploys a commit setting `mode` to the canary, and tells guardian (naming the canary
    /// when `name_it`). Returns the commit and the change's id.
    fn deploy_to_canary(&self, mode: &str, name_it: bool) -> (String, String) {
        self.deploy_restarting(mode, name_it, Duration::ZERO)
    }

    /// As `deploy_to_canary`, the canary down for `restart` first, as a real restart is.
    fn deploy_restarting(&self, mode: &str, name_it: bool, restart: Duration) -> (String, String) {
        let commit = commit_mode(&self.repo, mode, &format!("canary: {mode}"));
        if !restart.is_zero() {
            std::fs::write(&self.live, "down\n").unwrap();
            thread::sleep(restart);
        }
        std::fs::copy(self.repo.join("mode"), &self.live).unwrap();
        let canary = name_it.then(|| vec![self.instances[2].clone()]);
        let (status, change) = self.notify(&commit, canary);
        assert_eq!(status, 201, "{change}");
        (commit, change["id"].as_str().unwrap().to_owned())
    }

    /// Widens `commit`'s rollout to the second instance, and tells guardian. Returns the
    /// answer's status and the change it is about.
    fn widen(&self, commit: &str) -> (u16, String) {
        std::fs::copy(self.repo.join("mode"), &self.live_b).unwrap();
        let canary = vec![self.instances[2].clone(), self.instances[1].clone()];
        let (status, change) = self.notify(commit, Some(canary));
        (status, change["id"].as_str().unwrap().to_owned())
    }

    fn notify(&self, commit: &str, canary: Option<Vec<String>>) -> (u16, Value) {
        let mut request = serde_json::json!({"commit": commit});
        if let Some(canary) = canary {
            request["canary"] = serde_json::json!(canary);
        }
        let answer = ureq::post(&format!("{}/v1/changes", self.api))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .send_json(request)
            .unwrap();
        (answer.status(), answer.into_json().unwrap())
    }

    /// The change once it is no longer `state` (or after `secs`).
    fn after(&self, id: &str, states: &[&str], secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let c = self.get(&format!("/v1/changes/{id}"));
            if !states.iter().any(|s| c["state"] == *s) || Instant::now() > deadline {
                return c;
            }
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[test]
fn a_bad_canary_is_caught_against_the_rest_through_prometheus_and_rolled_back() {
    let fleet = Fleet::start(120, Canary::Notified);
    let (_, id) = fleet.deploy_to_canary("broken", true);
    let change = fleet.after(
        &id,
        &["watching", "regressed", "rolling_back", "verifying"],
        120,
    );
    assert_eq!(change["state"], "rolled_back", "{change}");
    let report = &change["report"];
    assert_eq!(report["design"], "concurrent", "{change}");
    assert_eq!(report["signals"][0]["regressed"], true, "{change}");
    let decided_in = report["decided_at"].as_f64().unwrap() - report["change_at"].as_f64().unwrap();
    assert!(decided_in < 30.0, "{change}");
    assert_eq!(std::fs::read_to_string(&fleet.live).unwrap().trim(), "ok");
    let log = git(&fleet.repo, &["log", "-1", "--format=%B"]);
    assert!(log.contains("Guardian-Revert-Of"), "{log}");
}

#[test]
fn a_canary_as_good_as_the_rest_ends_healthy() {
    let fleet = Fleet::start(40, Canary::Configured);
    let (_, id) = fleet.deploy_to_canary("ok-too", false);
    let change = fleet.after(&id, &["watching"], 90);
    assert_eq!(change["state"], "healthy", "{change}");
    assert_eq!(change["report"]["design"], "concurrent", "{change}");
    let after = &change["report"]["signals"][0]["after"];
    assert!(after["requests"].as_u64().unwrap() >= 3000, "{change}");
}

#[test]
fn a_good_canary_really_restarted_in_its_deploy_ends_healthy() {
    // Down for 3 s, its counters from zero after: Prometheus has no series of it until its
    // first scrape after the notification. That is a restart, not missing data.
    let fleet = Fleet::start(40, Canary::Notified);
    let (_, id) = fleet.deploy_restarting("ok-too", true, Duration::from_secs(3));
    let change = fleet.after(&id, &["watching"], 90);
    assert_eq!(change["state"], "healthy", "{change}");
    assert_eq!(change["report"]["design"], "concurrent", "{change}");
}

#[test]
fn prometheus_stopped_mid_watch_gives_no_healthy_verdict() {
    let mut fleet = Fleet::start(40, Canary::Configured);
    let (_, id) = fleet.deploy_to_canary("ok-too", false);
    thread::sleep(Duration::from_secs(10));
    fleet.prometheus.stop();
    // The core waits for the traffic (a few steps), then judges on without it: the watch ends,
    // and not healthy.
    let change = fleet.after(&id, &["watching"], 120);
    assert_ne!(change["state"], "healthy", "{change}");
    assert_eq!(change["state"], "inconclusive", "{change}");
    let note = change["note"].as_str().unwrap_or_default();
    assert!(note.contains("never came to be judged"), "{change}");
    let status = fleet.get("/v1/status");
    let source = &status["scrapes"][0];
    assert!(source["last_error"].is_string(), "{status}");
    assert!(source["failures"].as_u64().unwrap() > 0, "{status}");
}

#[test]
fn a_rollout_that_widens_is_followed_as_the_notifications_name_it() {
    let fleet = Fleet::start(45, Canary::Notified);
    let status = fleet.get("/v1/status");
    assert_eq!(
        status["scrapes"][0]["canary"]["values"],
        serde_json::json!([]),
        "{status}"
    );
    let (commit, id) = fleet.deploy_to_canary("ok-too", true);
    thread::sleep(Duration::from_secs(12));
    let (status, widened) = fleet.widen(&commit);
    assert_eq!(
        (status, widened.as_str()),
        (200, id.as_str()),
        "the same watch"
    );
    let status = fleet.get("/v1/status");
    assert_eq!(
        status["scrapes"][0]["canary"]["values"],
        serde_json::json!([fleet.instances[2], fleet.instances[1]]),
        "{status}"
    );
    let change = fleet.after(&id, &["watching"], 120);
    assert_eq!(change["state"], "healthy", "{change}");
    assert_eq!(change["report"]["design"], "concurrent", "{change}");
    // 100 requests a second each, over 45 s: the canary served about 4,500 on its own, and
    // the second instance about 3,000 more once the rollout reached it.
    let after = &change["report"]["signals"][0]["after"];
    let canary = after["requests"].as_u64().unwrap();
    assert!(
        (6000..9500).contains(&canary),
        "{canary} canary requests: {change}"
    );
}
