//! A Prometheus server of the test's own, for real: Debian's `prometheus` (installed when
//! missing, as `.ci/run` does), its own storage and loopback port, scraping every second; and
//! an instance of a service for it (or guardian) to scrape.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Prometheus' binary: `$PROMETHEUS` when set, else Debian's, installed when it is missing.
fn prometheus_binary() -> PathBuf {
    super::common::debian_binary("PROMETHEUS", "/usr/bin/prometheus", &["prometheus"])
}

/// A free port on loopback (the listener is dropped; nothing else here binds ports at random).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Prometheus server of the test's own: its own storage, its own loopback port, scraping
/// one target every second. Killed when dropped.
pub struct Prometheus {
    child: Child,
    pub url: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scraping guardian's `/metrics` at `target`.
    pub fn scraping(target: &str) -> Prometheus {
        Prometheus::scraping_job("guardian", &[target])
    }

    /// Scraping `targets` (host:port, `/metrics` on each) as the job `job`.
    pub fn scraping_job(job: &str, targets: &[&str]) -> Prometheus {
        let binary = prometheus_binary();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        prometheus.wait_until("Prometheus is ready", 30, |p| {
            ureq::get(&format!("{}/-/ready", p.url))
                .call()
                .is_ok_and(|r| r.status() == 200)
        });
        prometheus
    }

    /// The result of an instant query: each series' labels and value.
    pub fn query(&self, query: &str) -> Vec<(Value, f64)> {
        let answer: Value = ureq::get(&format!("{}/api/v1/query", self.url))
            .query("query", query)
            .call()
            .unwrap_or_else(|e| panic!("query {query}: {e}"))
            .into_json()
            .unwrap();
        assert_eq!(answer["status"], "success", "{query}: {answer}");
        answer["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{query}: {answer}"))
            .iter()
            .map(|r| {
                let v = r["value"][1].as_str().unwrap_or("NaN");
                (r["metric"].clone(), v.parse().unwrap_or(f64::NAN))
            })
            .collect()
    }

    /// The one value of a query that selects one series; `None` while it selects none.
    pub fn value(&self, query: &str) -> Option<f64> {
        let result = self.query(query);
        assert!(
            result.len() <= 1,
            "{query} selects several series: {result:?}"
        );
        result.first().map(|(_, v)| *v)
    }

    /// Waits until `done`, for at most `secs`; then fails with Prometheus' log.
    pub fn wait_until(&self, what: &str, secs: u64, done: impl Fn(&Prometheus) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(self) {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("prometheus.log"))
                    .unwrap_or_default();
                panic!("not within {secs} s: {what}\nprometheus' log:\n{log}");
            }
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Prometheus {
    /// Stops it, as a crash or an outage would: its API answers no more.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One instance of a service: counters `http_requests_total{code, route="/cart"}` on
/// `/metrics` that grow by `per_sec` requests a second (in tenths), failing `per_mille()` of
/// them, asked each tenth of a second; `None` while it is down (restarting): it serves
/// nothing, its scrapes fail, and its counters start again from zero. Stops when `stop` is
/// set. Returns its `host:port`.
pub fn metrics_app(
    per_sec: u64,
    per_mille: impl Fn() -> Option<u64> + Send + 'static,
    stop: Arc<AtomicBool>,
) -> String {
    let counts = Arc::new([0u64, 0u64].map(AtomicU64::new));
    let down = Arc::new(AtomicBool::new(false));
    let (c, stop2, down2) = (counts.clone(), stop.clone(), down.clone());
    thread::spawn(move || {
        let mut i = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let Some(per_mille) = per_mille() else {
                down2.store(true, Ordering::Relaxed);
                c.iter().for_each(|n| n.store(0, Ordering::Relaxed));
                thread::sleep(Duration::from_millis(100));
                continue;
            };
            down2.store(false, Ordering::Relaxed);
            for _ in 0..per_sec / 10 {
                let failed = (i * 37) % 1000 < per_mille;
                c[usize::from(failed)].fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            if down.load(Ordering::Relaxed) {
                let _ = write!(
                    stream,
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                continue;
            }
            let body = format!(
                "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n\
                 http_requests_total{{code=\"200\",route=\"/cart\"}} {}\n\
                 http_requests_total{{code=\"500\",route=\"/cart\"}} {}\n",
                counts[0].load(Ordering::Relaxed),
                counts[1].load(Ordering::Relaxed)
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.read(&mut [0u8; 1]);
        }
    });
    addr.to_string()
}
