//! Notifications where the team lives, end to end on the real binary: a bad deploy is rolled
//! back, and its outcome reaches a signed generic webhook, a Slack-shaped receiver that is down
//! at first, and an Alertmanager-shaped one that answers 503 twice before it takes them; each
//! exactly once per state, in the receiver's own shape.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::rollback::{now, World};

const SECRET: &str = "notify-secret-0123456789abcdef";

/// One request a receiver took: its path, headers (lower-cased names) and body.
#[derive(Clone, Debug)]
struct Taken {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Taken {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A receiver on `listener` that answers 503 to its first `refuse` requests, then 200; what it
/// took with 200 is kept.
fn receive(listener: TcpListener, refuse: usize) -> Arc<Mutex<Vec<Taken>>> {
    let taken = Arc::new(Mutex::new(Vec::new()));
    let kept = taken.clone();
    thread::spawn(move || {
        let mut seen = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) <= 2 {
                    break;
                }
                if let Some((name, value)) = h.trim_end().split_once(':') {
                    headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
                }
            }
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            seen += 1;
            let status = if seen <= refuse {
                "503 Service Unavailable"
            } else {
                kept.lock().unwrap().push(Taken {
                    path,
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    taken
}

fn states(taken: &[Taken], read: impl Fn(&Value) -> String) -> Vec<String> {
    taken
        .iter()
        .map(|t| read(&serde_json::from_str::<Value>(&t.body).unwrap()))
        .collect()
}

/// Waits (at most `secs`) until `taken` holds `n` requests.
fn wait_for(taken: &Arc<Mutex<Vec<Taken>>>, n: usize, secs: u64, what: &str) -> Vec<Taken> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let now_taken = taken.lock().unwrap().clone();
        if now_taken.len() >= n {
            return now_taken;
        }
        assert!(
            Instant::now() < deadline,
            "{what} took {} of {n}: {now_taken:?}",
            now_taken.len()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_rollback_reaches_a_webhook_slack_and_alertmanager_exactly_once_each_though_two_were_down() {
    let webhook = TcpListener::bind("127.0.0.1:0").unwrap();
    let webhook_addr = webhook.local_addr().unwrap();
    let webhook_took = receive(webhook, 0);
    // Slack is down at first: nothing listens on its port until later. The port is taken below
    // the kernel's ephemeral range (32768 and up): a port it hands out for `:0` or for an
    // outgoing connection could be taken meanwhile by any other test (a CI run failed so).
    let slack_addr: SocketAddr = (20_000 + (std::process::id() % 10_000) as u16..32_000)
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .find(|addr| TcpListener::bind(addr).is_ok())
        .expect("a free port below the ephemeral range");
    let alertmanager = TcpListener::bind("127.0.0.1:0").unwrap();
    let alertmanager_addr = alertmanager.local_addr().unwrap();
    let alertmanager_took = receive(alertmanager, 2);

    let w = World::with_extra("cp \"$GUARDIAN_REPO/mode\" \"$LIVE\"", 30, None, |dir| {
        let secret = dir.join("webhook-secret");
        std::fs::write(&secret, SECRET).unwrap();
        format!(
            "\n[[daemon.notify]]\nkind = \"webhook\"\nurl = \"http://{webhook_addr}/hooks/guardian\"\n\
             secret_file = {secret:?}\n\
             [[daemon.notify]]\nkind = \"slack\"\nurl = \"http://{slack_addr}/services/T0/B0/x\"\n\
             [[daemon.notify]]\nkind = \"alertmanager\"\nurl = \"http://{alertmanager_addr}/\"\n"
        )
    });
    thread::sleep(Duration::from_secs(1));
    let (bad, id) = w.deploy("broken");
    let change = w.settle(&id, 60);
    assert_eq!(change["state"], "rolled_back", "{change}");

    // The webhook: the regression, then the rollback, each signed over its timestamp and body.
    let took = wait_for(&webhook_took, 2, 30, "the webhook");
    assert_eq!(
        states(&took, |b| b["state"].as_str().unwrap().to_owned()),
        ["regressed", "rolled_back"]
    );
    for t in &took {
        assert_eq!(t.path, "/hooks/guardian");
        let timestamp: u64 = t.header("x-guardian-timestamp").unwrap().parse().unwrap();
        assert!((now() - timestamp as f64).abs() < 120.0);
        assert_eq!(
            t.header("x-guardian-signature"),
            Some(
                guardian::daemon::notify::signature(SECRET.as_bytes(), timestamp, &t.body).as_str()
            ),
            "a receiver holding the secret can check it"
        );
        let body: Value = serde_json::from_str(&t.body).unwrap();
        assert_eq!(
            (body["change_id"].as_str(), body["commit"].as_str()),
            (Some(id.as_str()), Some(bad.as_str()))
        );
    }

    // Slack comes up: what waited is delivered, in Block Kit.
    let slack_took = receive(TcpListener::bind(slack_addr).unwrap(), 0);
    let took = wait_for(&slack_took, 2, 60, "Slack");
    let outcomes = states(&took, |b| {
        b["blocks"][1]["fields"][0]["text"]
            .as_str()
            .unwrap()
            .to_owned()
    });
    assert_eq!(
        outcomes,
        ["*Outcome*\nmade things worse", "*Outcome*\nrolled back"]
    );
    assert!(took[1].body.contains(&bad[..10]), "{}", took[1].body);

    // Alertmanager: after two 503s, the alert fires, then resolves, by the same labels.
    let took = wait_for(&alertmanager_took, 2, 60, "Alertmanager");
    assert!(took.iter().all(|t| t.path == "/api/v2/alerts"));
    let alerts: Vec<Value> = took
        .iter()
        .map(|t| serde_json::from_str::<Value>(&t.body).unwrap()[0].clone())
        .collect();
    assert_eq!(alerts[0]["labels"], alerts[1]["labels"]);
    assert_eq!(alerts[0]["labels"]["change_id"], id.as_str());
    assert_eq!(alerts[1]["annotations"]["state"], "rolled_back");
    let ends = |a: &Value| {
        chrono::DateTime::parse_from_rfc3339(a["endsAt"].as_str().unwrap())
            .unwrap()
            .timestamp() as f64
    };
    assert!(ends(&alerts[0]) > now() + 3600.0, "firing: {}", alerts[0]);
    assert!(ends(&alerts[1]) <= now(), "resolved: {}", alerts[1]);

    // Exactly once each: nothing more comes, and each is on the change's record.
    thread::sleep(Duration::from_secs(6));
    assert_eq!(webhook_took.lock().unwrap().len(), 2);
    assert_eq!(slack_took.lock().unwrap().len(), 2);
    assert_eq!(alertmanager_took.lock().unwrap().len(), 2);
    let trail = std::process::Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(["audit", "export", "--config"])
        .arg(&w.config)
        .output()
        .unwrap();
    let trail = String::from_utf8_lossy(&trail.stdout);
    let sent = trail
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "notification_sent" && r["change_id"] == id.as_str())
        .count();
    assert_eq!(sent, 6, "{trail}");
}
