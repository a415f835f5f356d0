//! The app reports itself through Prometheus `/metrics`: guardian scrapes it, turns counters
//! into per-interval counts, and judges a change on them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const TOKEN: &str = "scrape-token-0123456789";

/// A /metrics endpoint over counters that a traffic thread keeps increasing: 20 requests a
/// second, failing `errors_per_mille` of them.
fn metrics_app(errors_per_mille: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> String {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (ok2, failed2, stop2) = (ok.clone(), failed.clone(), stop.clone());
    thread::spawn(move || {
        let mut i = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            if (i * 37) % 1000 < errors_per_mille.load(Ordering::Relaxed) {
                failed2.fetch_add(1, Ordering::Relaxed);
            } else {
                ok2.fetch_add(1, Ordering::Relaxed);
            }
            i += 1;
            thread::sleep(Duration::from_millis(50));
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = format!(
                "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n\
                 http_requests_total{{code=\"200\",handler=\"/cart\"}} {}\n\
                 http_requests_total{{code=\"500\",handler=\"/cart\"}} {}\n",
                ok.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed)
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.read(&mut [0u8; 1]);
        }
    });
    format!("http://{addr}/metrics")
}

#[test]
fn a_regression_seen_only_through_prometheus_counters_is_caught() {
    let errors = Arc::new(AtomicU64::new(10));
    let stop = Arc::new(AtomicBool::new(false));
    let url = metrics_app(errors.clone(), stop.clone());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let config = dir.path().join("guardian.toml");
    std::fs::write(
        &config,
        format!(
            "[detector]\nbaseline_secs = 60\nwatch_secs = 300\n\n[daemon]\nstate_dir = {:?}\n\
             listen = \"127.0.0.1:0\"\ntoken_file = {:?}\n\n[[daemon.scrapes]]\nname = \"app\"\n\
             url = \"{url}\"\nrequests = \"http_requests_total\"\nerrors = \"http_requests_total{{code=5..}}\"\n\
             route_label = \"handler\"\ninterval_secs = 1\n",
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
