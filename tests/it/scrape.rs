//! The app reports itself through Prometheus `/metrics`: guardian scrapes it, turns counters
//! into per-interval counts, and judges a change on them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::prometheus::metrics_app;

const TOKEN: &str = "scrape-token-0123456789";

#[test]
fn a_regression_seen_only_through_prometheus_counters_is_caught() {
    let errors = Arc::new(AtomicU64::new(10));
    let stop = Arc::new(AtomicBool::new(false));
    let per_mille = errors.clone();
    let url = format!(
        "http://{}/metrics",
        metrics_app(
            20,
            move || Some(per_mille.load(Ordering::Relaxed)),
            stop.clone()
        )
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let config = dir.path().join("guardian.toml");
    std::fs::write(
        &config,
        format!(
            "[detector]\nbaseline_secs = 60\nwatch_secs = 300\n\n[daemon]\nstate_dir = {:?}\n\
             listen = \"127.0.0.1:0\"\ntoken_file = {:?}\n\n[[daemon.scrapes]]\nname = \"app\"\n\
             url = \"{url}\"\nrequests = \"http_requests_total\"\nerrors = \"http_requests_total{{code=5..}}\"\n\
             route_label = \"route\"\ninterval_secs = 1\n",
            dir.path().join("state"),
            dir.path().join("token"),
        ),
    )
    .unwrap();
    let (mut daemon, api) = super::common::spawn_daemon(&config, &[]);
    let get = |path: &str| -> Value {
        ureq::get(&format!("{api}{path}"))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .unwrap()
            .into_json()
            .unwrap()
    };
    // A baseline from the scrapes alone: 25 s at 20 requests a second, of which the last
    // 6 s (a tenth of baseline_secs) are the guard before a deploy of unknown start.
    thread::sleep(Duration::from_secs(25));
    let status = get("/v1/status");
    assert!(
        status["scrapes"][0]["last_ok_at"].as_f64().is_some(),
        "{status}"
    );
    let change: Value = ureq::post(&format!("{api}/v1/changes"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .send_json(serde_json::json!({"commit": "abc1234"}))
        .unwrap()
        .into_json()
        .unwrap();
    let id = change["id"].as_str().unwrap().to_owned();
    errors.store(950, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    let change = loop {
        let c = get(&format!("/v1/changes/{id}"));
        if c["state"] != "watching" || Instant::now() > deadline {
            break c;
        }
        thread::sleep(Duration::from_millis(250));
    };
    stop.store(true, Ordering::Relaxed);
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert_eq!(change["state"], "regressed", "{change}");
    assert_eq!(
        change["report"]["signals"][0]["regressed"], true,
        "{change}"
    );
}
