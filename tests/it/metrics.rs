//! `/metrics` as Prometheus reads it, for real: Debian's `prometheus`, started by the test with a
//! configuration of its own, scrapes guardian every second while a bad deploy is rolled back
//! (the same world as `rollback.rs`: a git repository, a redeploy hook, an app writing the log
//! guardian follows), and its query API then has the rollback counted and the time to decide
//! recorded. Without Prometheus the test fails: `.ci/run` installs it.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::prometheus::{free_port, Prometheus};
use super::rollback::World;

#[test]
fn prometheus_scraping_a_real_rollback_has_it_counted_and_its_decision_time_recorded() {
    let w = World::with_extra("cp \"$GUARDIAN_REPO/mode\" \"$LIVE\"", 30, None, |_| {
        String::new()
    });
    // Without a token: Prometheus scrapes with none.
    let target = w.api.trim_start_matches("http://");
    let prometheus = Prometheus::scraping(target);
    // Guardian is up and scraped before the change: no rollback counted yet, from zero.
    let rolled_back = "guardian_changes_decided_total{kind=\"ai\",outcome=\"rolled_back\"}";
    prometheus.wait_until("a scrape of guardian with its counters", 30, |p| {
        p.value("up{job=\"guardian\"}") == Some(1.0) && p.value(rolled_back).is_some()
    });
    assert_eq!(prometheus.value(rolled_back), Some(0.0));
    assert_eq!(
        prometheus.value("guardian_build_info{job=\"guardian\"}"),
        Some(1.0)
    );
    let health = ureq::get(&format!("{}/healthz", w.api)).call().unwrap();
    assert_eq!(health.status(), 200);

    let (_bad, id) = w.deploy("broken");
    let change = w.settle(&id, 60);
    assert_eq!(change["state"], "rolled_back", "{change}");

    // Within a few scrapes Prometheus has the rollback, the revert that did it, and how long
    // the decision took: the seconds from landing to the regression's verdict.
    let decided_in = "guardian_decision_seconds_sum / guardian_decision_seconds_count";
    prometheus.wait_until("the rollback in Prometheus", 30, |p| {
        p.value(rolled_back) == Some(1.0)
            && p.value("guardian_decision_seconds_count") == Some(1.0)
            && p.value("guardian_actions_total{action=\"revert\",outcome=\"done\"}") == Some(1.0)
    });
    let secs = prometheus.value(decided_in).unwrap();
    assert!(
        secs > 0.0 && secs < 60.0,
        "the regression was decided {secs} s after landing"
    );
    assert_eq!(
        prometheus
            .value("sum(increase(guardian_changes_decided_total{outcome=\"rolled_back\"}[5m]))")
            .map(f64::round),
        Some(1.0),
        "the rollback is an increase of the counter, seen from zero"
    );
    let reverted_in = prometheus
        .value("guardian_action_duration_seconds_sum{action=\"revert\"}")
        .unwrap();
    assert!(reverted_in < 30.0, "the revert took {reverted_in} s");
    // While the change was watched, remedied and checked (8 s of recovery check at least),
    // scrapes showed it watched, with its evidence against the line it fires at.
    assert_eq!(
        prometheus.value("max_over_time(guardian_watching[5m])"),
        Some(1.0)
    );
    let threshold = prometheus
        .value("max_over_time(guardian_watch_e_value_threshold{signal=\"errors\"}[5m])")
        .expect("the errors signal's threshold was scraped during the watch");
    assert!(threshold > 1.0, "fires at an e-value of {threshold}");
    assert!(prometheus
        .value("max_over_time(guardian_watch_e_value{signal=\"errors\"}[5m])")
        .is_some());
    // The decision loop ticks: its lag is a fraction of a second, nowhere near stuck.
    let lag = prometheus
        .value("guardian_decision_loop_lag_seconds")
        .unwrap();
    assert!(lag < 5.0, "the decision loop lags {lag} s");
}

#[test]
fn metrics_listen_serves_metrics_and_healthz_on_their_own_address_and_not_beside_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "metrics-token-0123456789\n").unwrap();
    let log = dir.path().join("access.jsonl");
    std::fs::write(&log, "").unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("guardian.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = {:?}\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"{metrics}\"\n\
             token_file = {token:?}\n\n[[daemon.logs]]\npath = {log:?}\n",
            dir.path().join("state"),
        ),
    )
    .unwrap();
    let (mut daemon, api) = super::common::spawn_daemon(&config, &[]);
    let get = |url: &str| match ureq::get(url).call() {
        Ok(r) => (
            r.status(),
            r.content_type().to_owned(),
            r.into_string().unwrap(),
        ),
        Err(ureq::Error::Status(code, r)) => (code, String::new(), r.into_string().unwrap()),
        Err(e) => panic!("{url}: {e}"),
    };
    // The loop ticks every 250 ms: alive at once, and said so without a token.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, _, health) = loop {
        let answer = get(&format!("http://{metrics}/healthz"));
        if answer.0 == 200 || Instant::now() > deadline {
            break answer;
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 200, "{health}");
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "ok", "{health}");

    let (status, content_type, text) = get(&format!("http://{metrics}/metrics"));
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, "application/openmetrics-text");
    assert!(text.contains("guardian_build_info{version="), "{text}");
    assert!(text.contains("guardian_watching 0"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Beside the API they are not served: there every path needs a token.
    let (status, _, _) = get(&format!("{api}/metrics"));
    assert_eq!(status, 401);
    let (status, _, _) = get(&format!("{api}/healthz"));
    assert_eq!(status, 401);
    let _ = daemon.kill();
    let _ = daemon.wait();
}
