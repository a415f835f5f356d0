//! What the report module's tests share: a real regressed report and a rollback report, a
//! change record, a real SMTP server that collects what it receives, and a strict XML check.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde_json::Value;

use super::{render_alert, Email};
use crate::config::{MailSecurity, MailSettings};
use crate::core::{DetectorSettings, Monitor, Request, Verdict};
use crate::daemon::actions::revert::RollbackReport;
use crate::daemon::step::{Ended, Hook, Push, Pushed, Reverted, Step};
use crate::git::CommandRecord;
use crate::hook::{HookOutcome, HookStatus};
use crate::store::{ChangeKind, ChangeRecord, ChangeState};

/// The checked-in expectation `tests/it/expected/{name}`; `UPDATE_EXPECT=1` rewrites it. The
/// path is absolute: expect-test resolves relative ones from the topmost directory holding a
/// Cargo.toml, which need not be this crate's.
pub fn expected(name: &str) -> expect_test::ExpectFile {
    expect_test::expect_file![Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/expected")
        .join(name)]
}

pub const T0: f64 = 1_764_000_000.0;
pub const COMMIT: &str = "3f9a2c1b7d4e5f60718293a4b5c6d7e8f9012345";
pub const REVERT: &str = "9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d";

/// A report from the real core: 10 minutes of baseline at 0.5% errors, then a change that
/// makes 8% of requests fail, watched until the errors test fires.
pub fn regressed_report() -> Value {
    let settings = DetectorSettings {
        baseline_secs: 600,
        watch_secs: 600,
        ..DetectorSettings::default()
    };
    let mut monitor = Monitor::new(settings);
    let mut rng = Pcg64Mcg::seed_from_u64(7);
    let routes = ["/checkout", "/cart", "/search"];
    let mut feed = |m: &mut Monitor, from: f64, secs: u32, error: f64| {
        for s in 0..secs {
            for i in 0..20 {
                let ts = from + f64::from(s) + f64::from(i) / 20.0;
                m.observe_request(&Request {
                    ts,
                    error: rng.gen::<f64>() < error,
                    latency_ms: Some(80.0 * rng.gen_range(0.7..1.4)),
                    route: Some(routes[rng.gen_range(0..routes.len())]),
                    arm: None,
                });
            }
            m.tick(from + f64::from(s) + 1.0);
        }
    };
    feed(&mut monitor, T0 - 600.0, 600, 0.005);
    monitor.change_landed(T0);
    for minute in 0..10 {
        feed(&mut monitor, T0 + f64::from(minute) * 60.0, 60, 0.08);
        if monitor.verdict() == Some(Verdict::Regressed) {
            break;
        }
    }
    assert_eq!(monitor.verdict(), Some(Verdict::Regressed));
    serde_json::to_value(monitor.report().unwrap()).unwrap()
}

pub fn command(args: &[&str], status: Option<i32>, stderr: &str) -> CommandRecord {
    CommandRecord {
        args: args.iter().map(|a| a.to_string()).collect(),
        status,
        stdout: String::new(),
        stderr: stderr.to_owned(),
    }
}

/// What `daemon::actions::revert::run` records for a revert, a push and a redeploy that worked,
/// as stored.
pub fn rollback_report() -> Value {
    serde_json::to_value(rollback()).unwrap()
}

/// [`rollback_report`] in its type.
pub fn rollback() -> RollbackReport {
    let hook = HookOutcome {
        status: HookStatus::Succeeded,
        duration: Duration::from_millis(3200),
        pid: Some(4242),
        stdout: "building shop\n\u{1b}[32mdeployed\u{1b}[0m 9c8d7e6f5a to 3 hosts\n".into(),
        stderr: String::new(),
        dropped_bytes: 0,
        notes: vec![],
    };
    RollbackReport {
        stood_down: false,
        revert_commit: Some(REVERT.into()),
        escalation: None,
        steps: vec![
            Step::Revert(Ended::Done(Reverted::Reverted {
                commit: REVERT.into(),
                commands: vec![
                    command(&["status", "--porcelain"], Some(0), ""),
                    command(&["revert", "--no-edit", "--no-commit", COMMIT], Some(0), ""),
                    command(&["commit", "-F", "-"], Some(0), ""),
                ],
            })),
            Step::Push(Push {
                remote: "origin".into(),
                branch: "main".into(),
                ended: Ended::Done(Pushed::Pushed {
                    command: command(
                        &[
                            "push",
                            "--no-verify",
                            "--",
                            "origin",
                            "HEAD:refs/heads/main",
                        ],
                        Some(0),
                        "",
                    ),
                }),
            }),
            Step::Hook(Hook {
                command: vec![
                    "/usr/local/bin/redeploy".into(),
                    "--env".into(),
                    "prod west".into(),
                ],
                summary: hook.summary(),
                outcome: hook,
            }),
        ],
    }
}

pub fn change(state: ChangeState, note: &str, report: Option<Value>) -> ChangeRecord {
    ChangeRecord {
        id: "chg_0123456789ab".into(),
        commit: COMMIT.into(),
        kind: ChangeKind::Ai,
        pattern: Some("retry-wrapper".into()),
        summary: Some("wrap payment calls in retries".into()),
        landed_at: T0,
        state,
        updated_at: T0 + 200.0,
        decided_at: None,
        report,
        note: Some(note.into()),
        fixes_issue: None,
        flag: None,
    }
}

/// One email as the SMTP server received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
}

/// Collects what a real SMTP server (mailin) receives; can refuse recipients.
#[derive(Clone, Default)]
pub struct Collector {
    pub inbox: Arc<Mutex<Vec<Received>>>,
    pub refuse_rcpt: bool,
    pub current: Option<Received>,
}

impl mailin_embedded::Handler for Collector {
    fn rcpt(&mut self, _to: &str) -> mailin_embedded::Response {
        if self.refuse_rcpt {
            mailin_embedded::response::NO_MAILBOX
        } else {
            mailin_embedded::response::OK
        }
    }

    fn data_start(
        &mut self,
        _domain: &str,
        from: &str,
        _is8bit: bool,
        to: &[String],
    ) -> mailin_embedded::Response {
        self.current = Some(Received {
            from: from.to_owned(),
            to: to.to_vec(),
            data: Vec::new(),
        });
        mailin_embedded::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(current) = &mut self.current {
            current.data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> mailin_embedded::Response {
        if let Some(done) = self.current.take() {
            self.inbox.lock().unwrap().push(done);
        }
        mailin_embedded::response::OK
    }
}

/// Serves SMTP on `listener` on a thread of its own (for the rest of the test process).
pub fn serve(listener: TcpListener, collector: Collector) {
    std::thread::spawn(move || {
        let mut server = mailin_embedded::Server::new(collector);
        server
            .with_name("mx.test")
            .with_num_threads(2)
            .with_tcp_listener(listener);
        let _ = server.serve();
    });
}

pub fn settings(addr: SocketAddr) -> MailSettings {
    MailSettings {
        from: "Guardian <guardian@example.com>".into(),
        to: vec!["oncall@example.com".into(), "lead@example.com".into()],
        smtp_host: addr.ip().to_string(),
        smtp_port: addr.port(),
        security: MailSecurity::None,
        auth: None,
        digest_healthy: true,
    }
}

/// What the server has received once it holds `n` emails, or after `patience`.
pub fn wait_for(inbox: &Arc<Mutex<Vec<Received>>>, n: usize, patience: Duration) -> Vec<Received> {
    let deadline = Instant::now() + patience;
    loop {
        let got = inbox.lock().unwrap().clone();
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn sample_email() -> Email {
    let record = change(
        ChangeState::RolledBack,
        "reverted and redeployed; the service is back to its baseline",
        Some(regressed_report()),
    );
    let mut email = render_alert("shop", &record, Some(&rollback_report()));
    // A line that starts with a dot must survive the SMTP transparency rule.
    email
        .text_body
        .push_str(".dot at the start\n..two dots\n.\n");
    email
}

/// A strict check that `s` is well-formed XML as this module writes it: one root element,
/// every tag closed in order, attributes quoted and unique, `&` only in an entity, no `<`
/// in text.
pub fn check_xml(s: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut rest = s;
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_:".contains(c))
            && !n.starts_with(|c: char| c.is_ascii_digit() || c == '-')
    };
    let text_ok = |t: &str| -> Result<(), String> {
        let mut parts = t.split('&');
        parts.next();
        for p in parts {
            let entity = p.split(';').next().unwrap_or_default();
            let known = ["amp", "lt", "gt", "quot", "#39"].contains(&entity);
            if !known || !p.contains(';') {
                return Err(format!("bad entity in {t:?}"));
            }
        }
        if t.contains('>') && !t.contains("&gt;") && t.contains('<') {
            return Err(format!("markup in text {t:?}"));
        }
        Ok(())
    };
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        text_ok(text)?;
        if !text.trim().is_empty() && stack.is_empty() {
            return Err(format!("text outside the root: {text:?}"));
        }
        let close = rest[open..].find('>').ok_or("unclosed tag")? + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            match stack.pop() {
                Some(top) if top == name => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name = tag.split_whitespace().next().unwrap_or_default();
        if !name_ok(name) {
            return Err(format!("bad tag name {name:?}"));
        }
        // Attributes: name="value" pairs, values without < or raw quotes.
        let mut attrs = &tag[name.len()..];
        let mut seen = Vec::new();
        loop {
            attrs = attrs.trim_start();
            if attrs.is_empty() {
                break;
            }
            let eq = attrs
                .find("=\"")
                .ok_or(format!("unquoted attribute in <{tag}>"))?;
            let attr = &attrs[..eq];
            if !name_ok(attr) || seen.contains(&attr) {
                return Err(format!("bad or repeated attribute {attr:?} in <{tag}>"));
            }
            seen.push(attr);
            let value_end = attrs[eq + 2..].find('"').ok_or("unterminated value")? + eq + 2;
            let value = &attrs[eq + 2..value_end];
            if value.contains('<') {
                return Err(format!("< in attribute {attr}"));
            }
            text_ok(value)?;
            attrs = &attrs[value_end + 1..];
        }
        if stack.is_empty() {
            roots += 1;
        }
        if !self_closing {
            stack.push(name.to_owned());
        }
    }
    text_ok(rest)?;
    match (stack.is_empty(), roots, rest.trim().is_empty()) {
        (true, 1, true) => Ok(()),
        _ => Err(format!(
            "unclosed {stack:?} or {roots} roots or trailing text"
        )),
    }
}

#[test]
fn the_xml_check_rejects_what_is_not_well_formed() {
    for bad in [
        "<svg><g></svg>",
        "<svg a=1/>",
        "<svg a=\"1\" a=\"2\"/>",
        "<svg>a & b</svg>",
        "<svg/><svg/>",
        "<svg><text>x</tex></svg>",
        "<svg>",
    ] {
        assert!(check_xml(bad).is_err(), "{bad}");
    }
    check_xml("<svg a=\"&lt;\"><text>a &amp; b</text><line/></svg>\n").unwrap();
}
