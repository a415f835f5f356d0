//! Sentry's API polled, end to end on the real binary: a local HTTP server answers the
//! documented endpoints (Discover's events table, paged through the `Link` header, and an
//! issue's details) for an issue that was already open before the change and only grows
//! after it. No webhook tells guardian of its events: it must find the change worse on the
//! polled events alone, and revert it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use super::rollback::{now, World};

pub(super) const SENTRY_TOKEN: &str = "sntrys_test_0123456789abcdef";
pub(super) const ISSUE: &str = "4504981999";
/// Rows per page the fake Sentry answers: small, so a poll pages.
const PAGE: usize = 25;

/// One event Sentry holds, as a Discover row.
#[derive(Clone)]
struct Row {
    at: f64,
    value: Value,
}

/// What the fake Sentry holds and how it behaves.
#[derive(Default)]
pub(super) struct Sentry {
    rows: Mutex<Vec<Row>>,
    refuse: AtomicBool,
    issue_asked: AtomicU64,
    pages_served: AtomicU64,
}

impl Sentry {
    pub(super) fn add(&self, n: u64, at: f64, release: &str) {
        let iso = chrono::DateTime::from_timestamp_millis((at * 1000.0) as i64)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.3f+00:00")
            .to_string();
        self.rows.lock().unwrap().push(Row {
            at,
            value: json!({
                "id": format!("{n:032x}"),
                "issue.id": ISSUE.parse::<u64>().unwrap(),
                "timestamp": iso,
                "release": release,
                "title": "TypeError: 'NoneType' object is not subscriptable",
                "culprit": "app.cart in total",
            }),
        });
    }
}

fn iso_to_unix(text: &str) -> f64 {
    let t = chrono::DateTime::parse_from_rfc3339(text).unwrap();
    t.timestamp_millis() as f64 / 1000.0
}

/// Sentry's API on loopback: `GET /api/0/organizations/acme/events/` and
/// `GET /api/0/organizations/acme/issues/{id}/`, bearer token checked.
pub(super) fn serve(sentry: Arc<Sentry>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut authorized = false;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if line.trim() == format!("Authorization: Bearer {SENTRY_TOKEN}")
                    || line.trim() == format!("authorization: Bearer {SENTRY_TOKEN}")
                {
                    authorized = true;
                }
                line.clear();
            }
            let target = request_line.split_whitespace().nth(1).unwrap_or("/");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            let param = |k: &str| {
                params
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
            };
            let (status, body, link) = if !authorized || sentry.refuse.load(Ordering::Relaxed) {
                (
                    "401 Unauthorized",
                    json!({"detail": "Invalid token"}).to_string(),
                    None,
                )
            } else if path == format!("/api/0/organizations/acme/issues/{ISSUE}/") {
                sentry.issue_asked.fetch_add(1, Ordering::Relaxed);
                // First seen at its earliest event, as Sentry says.
                let first_seen = sentry
                    .rows
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|r| r.at)
                    .fold(f64::INFINITY, f64::min);
                let first_seen =
                    chrono::DateTime::from_timestamp_millis((first_seen * 1000.0) as i64)
                        .unwrap_or_default()
                        .to_rfc3339();
                let issue = json!({
                    "id": ISSUE,
                    "shortId": "SHOP-3F",
                    "title": "TypeError: 'NoneType' object is not subscriptable",
                    "culprit": "app.cart in total",
                    "permalink": format!("https://acme.sentry.io/issues/{ISSUE}/"),
                    "firstSeen": first_seen,
                    "lastSeen": chrono::Utc::now().to_rfc3339(),
                    "status": "unresolved",
                    "count": "1542",
                    "level": "error",
                    "project": {"id": "7", "slug": "shop-api"},
                    "metadata": {"filename": "app/cart.py"},
                });
                ("200 OK", issue.to_string(), None)
            } else if path == "/api/0/organizations/acme/events/" {
                assert_eq!(
                    param("query").as_deref(),
                    Some("event.type:error project:shop-api")
                );
                assert_eq!(param("sort").as_deref(), Some("timestamp"));
                let fields: Vec<&str> = params
                    .iter()
                    .filter(|(k, _)| k == "field")
                    .map(|(_, v)| v.as_str())
                    .collect();
                assert_eq!(
                    fields,
                    ["id", "issue.id", "timestamp", "release", "title", "culprit"]
                );
                let (start, end) = (
                    iso_to_unix(&param("start").unwrap()),
                    iso_to_unix(&param("end").unwrap()),
                );
                let offset: usize = param("cursor")
                    .and_then(|c| c.split(':').nth(1).map(str::to_owned))
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(0);
                let mut rows: Vec<Row> = sentry
                    .rows
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|r| r.at >= start && r.at < end)
                    .cloned()
                    .collect();
                rows.sort_by(|a, b| a.at.total_cmp(&b.at));
                let page: Vec<Value> = rows
                    .iter()
                    .skip(offset)
                    .take(PAGE)
                    .map(|r| r.value.clone())
                    .collect();
                let more = offset + PAGE < rows.len();
                let base = format!("http://{addr}{path}");
                let link = format!(
                    "<{base}?cursor=0:{prev}:1>; rel=\"previous\"; results=\"{}\"; cursor=\"0:{prev}:1\", \
                     <{base}?cursor=0:{next}:0>; rel=\"next\"; results=\"{more}\"; cursor=\"0:{next}:0\"",
                    offset > 0,
                    prev = offset.saturating_sub(PAGE),
                    next = offset + PAGE,
                );
                sentry.pages_served.fetch_add(1, Ordering::Relaxed);
                let body = json!({"data": page, "meta": {"fields": {}, "units": {}}});
                ("200 OK", body.to_string(), Some(link))
            } else {
                (
                    "404 Not Found",
                    json!({"detail": "Not found"}).to_string(),
                    None,
                )
            };
            let link = link.map(|l| format!("Link: {l}\r\n")).unwrap_or_default();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{link}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.read(&mut [0u8; 1]);
        }
    });
    format!("http://{addr}")
}

/// The config's `[daemon.sentry]`: webhooks (no delivery will come) and the API polled.
fn sentry_section(dir: &std::path::Path, api_url: &str) -> String {
    let secret = dir.join("sentry-secret");
    std::fs::write(&secret, "5b2f0c9e7a1d4b3c8e6f0a9d2c4b7e1f").unwrap();
    let token = dir.join("sentry-token");
    std::fs::write(&token, SENTRY_TOKEN).unwrap();
    format!(
        "\n[daemon.sentry]\nclient_secret_file = {secret:?}\napi_url = \"{api_url}\"\n\
         org = \"acme\"\nproject = \"shop-api\"\nauth_token_file = {token:?}\npoll_secs = 5\n"
    )
}

fn status_text(w: &World) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(["status", "--config"])
        .arg(&w.config)
        .args(["--api", &w.api])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status_json(w: &World) -> Value {
    ureq::get(&format!("{}/v1/status", w.api))
        .set(
            "Authorization",
            &format!("Bearer {}", super::rollback::TOKEN),
        )
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

#[test]
fn an_open_issue_that_grows_only_through_the_api_gets_the_change_reverted() {
    let sentry = Arc::new(Sentry::default());
    // The issue is open already: an event every 10 s over the baseline's ten minutes, with a
    // malformed row among them (no issue), which is skipped.
    let t0 = now();
    let mut n = 0u64;
    for i in 0..60 {
        sentry.add(n, t0 - 600.0 + f64::from(i) * 10.0, "shop@ok");
        n += 1;
    }
    sentry.rows.lock().unwrap().push(Row {
        at: t0 - 300.5,
        value: json!({"id": "f".repeat(32), "issue.id": null, "timestamp": "x"}),
    });
    let api_url = serve(sentry.clone());
    let w = World::with_extra("cp \"$GUARDIAN_REPO/mode\" \"$LIVE\"", 30, None, |dir| {
        sentry_section(dir, &api_url)
    });
    // The app reports to Sentry: one event every 10 s while "ok" is live, 5 a second while
    // "leaky" is; the access log sees nothing wrong either way.
    let stop = Arc::new(AtomicBool::new(false));
    let reporter = {
        let (sentry, live, stop) = (sentry.clone(), w.live.clone(), stop.clone());
        thread::spawn(move || {
            let mut tick = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mode = std::fs::read_to_string(&live).unwrap_or_default();
                if mode.trim() == "leaky" {
                    sentry.add(n, now(), "shop@leaky");
                    n += 1;
                } else if tick.is_multiple_of(50) {
                    sentry.add(n, now(), "shop@ok");
                    n += 1;
                }
                tick += 1;
                thread::sleep(Duration::from_millis(200));
            }
        })
    };
    thread::sleep(Duration::from_secs(7));
    // The first poll read the open issue's history, page by page, and asked its details once.
    let s = status_json(&w);
    let poll = &s["sentry"]["poll"];
    assert!(poll["new_events_total"].as_u64().unwrap() >= 60, "{s}");
    assert_eq!(poll["rows_skipped_total"], 1, "{s}");
    assert!(sentry.pages_served.load(Ordering::Relaxed) >= 3);
    let (_bad, id) = w.deploy("leaky");
    let c = w.settle(&id, 150);
    let text = status_text(&w);
    stop.store(true, Ordering::Relaxed);
    reporter.join().unwrap();
    assert_eq!(c["state"], "rolled_back", "{c}");
    let signals = c["report"]["signals"].as_array().unwrap();
    let regressed: Vec<&Value> = signals.iter().filter(|s| s["regressed"] == true).collect();
    assert_eq!(regressed.len(), 1, "{c}");
    assert_eq!(regressed[0]["signal"], "sentry_events", "{c}");
    assert_eq!(std::fs::read_to_string(&w.live).unwrap().trim(), "ok");
    assert_eq!(
        sentry.issue_asked.load(Ordering::Relaxed),
        1,
        "an issue's details are asked for once"
    );
    assert!(text.contains("  api: acme/shop-api polled "), "{text}");
    let s = status_json(&w);
    assert_eq!(s["sentry"]["poll"]["last_error"], Value::Null, "{s}");
}

#[test]
fn a_token_sentry_refuses_is_said_plainly_in_the_status() {
    let sentry = Arc::new(Sentry::default());
    sentry.refuse.store(true, Ordering::Relaxed);
    let api_url = serve(sentry.clone());
    let w = World::with_extra("true", 30, None, |dir| sentry_section(dir, &api_url));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = status_text(&w);
        if text.contains("FAILING") || std::time::Instant::now() > deadline {
            break text;
        }
        thread::sleep(Duration::from_millis(250));
    };
    assert!(
        text.contains(
            "  api: acme/shop-api FAILING (1 poll in a row; last worked never): Sentry's API \
             refused the token (401: Invalid token): check that auth_token_file holds a valid \
             auth token with org:read and event:read for this organization"
        ),
        "{text}"
    );
}
