//! Sentry end to end, on the real binary: an app that answers every request and reports an
//! exception to Sentry on each of them once a bad version is live; Sentry's deliveries, signed
//! as Sentry signs them, posted to guardian's webhook while it happens. guardian must find the
//! change worse on Sentry's evidence alone, revert it, and see the service recover.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::rollback::World;

const SECRET: &str = "5b2f0c9e7a1d4b3c8e6f0a9d2c4b7e1f";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// An `error` delivery for one event of `issue`, as Sentry's integration platform sends it.
fn deliver(api: &str, issue: &str, n: u64) -> u16 {
    let at = now();
    let body = json!({
        "action": "created",
        "actor": { "id": "sentry", "name": "Sentry", "type": "application" },
        "data": { "error": {
            "event_id": format!("{:032x}", n + 1),
            "issue_id": issue,
            "title": "TypeError: 'NoneType' object is not subscriptable",
            "culprit": "app.cart in total",
            "level": "error",
            "timestamp": at,
            "exception": { "values": [{ "stacktrace": { "frames": [
                { "filename": "app/cart.py", "in_app": true }
            ]}}]},
        }},
        "installation": { "uuid": "a8e5d37a-696c-4c54-adb5-b3f28d64c7de" },
    })
    .to_string();
    let signature = guardian::sentry::webhook::sign(SECRET.as_bytes(), body.as_bytes());
    match ureq::post(&format!("{api}/v1/webhooks/sentry"))
        .set("Content-Type", "application/json")
        .set("Request-ID", &format!("req-{n}"))
        .set("Sentry-Hook-Resource", "error")
        .set("Sentry-Hook-Timestamp", &format!("{}", at as u64))
        .set("Sentry-Hook-Signature", &signature)
        .send_string(&body)
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_change_whose_exceptions_only_sentry_sees_is_reverted() {
    let w = World::with_extra("cp \"$GUARDIAN_REPO/mode\" \"$LIVE\"", 30, None, |dir| {
        let secret = dir.join("sentry-secret");
        std::fs::write(&secret, SECRET).unwrap();
        format!("\n[daemon.sentry]\nclient_secret_file = {secret:?}\n")
    });
    // A few seconds for the daemon to read the history into its baseline and series.
    thread::sleep(Duration::from_secs(5));
    // Sentry, as the app reports to it: 5 exceptions a second while "leaky" is live.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (api, live, stop) = (w.api.clone(), w.live.clone(), stop.clone());
        thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if std::fs::read_to_string(&live).unwrap_or_default().trim() == "leaky" {
                    assert_eq!(deliver(&api, "4504981999", sent), 202);
                    sent += 1;
                }
                thread::sleep(Duration::from_millis(200));
            }
            sent
        })
    };
    // The app answers 200 in mode "leaky" as in "ok": the access log sees nothing wrong.
    let (_bad, id) = w.deploy("leaky");
    let c = w.settle(&id, 150);
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    assert_eq!(c["state"], "rolled_back", "{c}");
    let signals = c["report"]["signals"].as_array().unwrap();
    let regressed: Vec<&Value> = signals.iter().filter(|s| s["regressed"] == true).collect();
    assert_eq!(regressed.len(), 1, "{c}");
    assert_eq!(regressed[0]["signal"], "sentry_events", "{c}");
    assert_eq!(
        std::fs::read_to_string(&w.live).unwrap().trim(),
        "ok",
        "the revert was deployed"
    );
    assert!(sent > 0);
}
