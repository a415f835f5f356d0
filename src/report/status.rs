//! `guardian status` and `guardian notify` for a person: what is watched and how it is going,
//! the baseline a change is (or would be) judged against, what was decided lately, how the
//! logs, scrapes and emails are doing. Pure: the daemon's JSON answer in, text out.
//!
//! The evidence in the answer (`watching.live`, the `live` of a notified change) is the core's
//! `Report`, and `baseline_now` its `BaselinePreview`: both are read into their types. The
//! rest of the answer is read by key, each string shown through `display`.

use std::fmt::Write as _;

use serde::de::DeserializeOwned;
use serde::Deserialize as _;
use serde_json::Value;

use super::evidence;
use super::units::{count, duration, evalue};
use crate::core::{BaselinePreview, BaselineWindow, DeployWindow, Report, RouteBaseline};
use crate::display;

/// A part of the daemon's answer that does not read as the type this guardian expects (a
/// daemon of another version).
#[derive(Debug, thiserror::Error)]
#[error("the daemon's {part} cannot be read: {error}")]
pub struct UnreadableAnswer {
    part: &'static str,
    error: serde_json::Error,
}

/// `value` read as `T`; `None` when it is absent or null.
fn part<T: DeserializeOwned>(
    value: &Value,
    part: &'static str,
) -> Result<Option<T>, UnreadableAnswer> {
    Option::<T>::deserialize(value).map_err(|error| UnreadableAnswer { part, error })
}

/// The evidence of a change just notified (the `live` of the daemon's answer): the baseline it
/// is judged against. Empty when the answer has none.
pub fn notified(answer: &Value) -> Result<String, UnreadableAnswer> {
    Ok(part::<Report>(&answer["live"], "report")?
        .map(|r| report_baseline(&r))
        .unwrap_or_default())
}

/// The baseline of a report: how much known-good time, how many requests per route, what was
/// left out (the change's deploy window too), and a warning when it is thin.
pub fn report_baseline(r: &Report) -> String {
    baseline(
        &r.baseline_window,
        &r.baseline_routes,
        &r.baseline_notes,
        r.deploy_window.as_ref(),
    )
}

/// The baseline a change notified now would be judged against.
pub fn preview_baseline(p: &BaselinePreview) -> String {
    baseline(&p.window, &p.routes, &p.notes, None)
}

fn baseline(
    window: &BaselineWindow,
    routes: &[RouteBaseline],
    notes: &[String],
    deploy: Option<&DeployWindow>,
) -> String {
    let mut out = String::new();
    let total: u64 = routes.iter().map(|r| r.requests).sum();
    let per_route: Vec<String> = routes
        .iter()
        .map(|r| format!("{} {}", display::line(&r.route), count(r.requests)))
        .collect();
    let _ = writeln!(
        out,
        "baseline: {} of known-good traffic, {} requests{}",
        duration(window.covered_secs),
        count(total),
        if per_route.is_empty() {
            String::new()
        } else {
            format!(" ({})", per_route.join(", "))
        }
    );
    if window.excluded_secs > 0.0 {
        let _ = writeln!(
            out,
            "  {} in between left out (earlier deploys or incidents)",
            duration(window.excluded_secs)
        );
    }
    // A recovery check or an extended watch has no deploy window of its own.
    if let Some(w) = deploy.filter(|w| w.to - w.from >= 0.5) {
        let _ = writeln!(
            out,
            "  deploy window: the {} before the change are in neither side{}",
            duration(w.to - w.from),
            if w.given {
                ""
            } else {
                " (no --deploy-started-at: deploy_guard_secs)"
            }
        );
    }
    for note in notes {
        let _ = writeln!(out, "  WARNING: {}", display::line(note));
    }
    out
}

/// The status for a person: what is watched, what was decided, how the logs are read.
pub fn status(s: &Value) -> Result<String, UnreadableAnswer> {
    // Every string in the status may come from outside (a summary, a note with git's output,
    // a bad log line, a scrape error): shown as one visible line each.
    let t = |v: &Value| display::line(v.as_str().unwrap_or("?")).into_owned();
    let mut out = String::new();
    let now = s["now"].as_f64().unwrap_or(0.0);
    let _ = writeln!(out, "service {}", t(&s["service"]));
    match s.get("watching").filter(|w| !w.is_null()) {
        Some(w) => {
            let live = part::<Report>(&w["live"], "report")?;
            // A recovery check counts from its own start, not the change's.
            let started = match w["state"].as_str() {
                Some("verifying") => live.as_ref().map(|r| r.change_at),
                _ => None,
            };
            let since = now - started.or(w["landed_at"].as_f64()).unwrap_or(now);
            let doing = match w["state"].as_str() {
                Some("verifying") => "checking the recovery after rolling back",
                _ => "watching",
            };
            let _ = writeln!(
                out,
                "{doing} {} (commit {}, {}) for {:.0} s",
                t(&w["id"]),
                t(&w["commit"]),
                t(&w["kind"]),
                since
            );
            if let Some(live) = &live {
                out.push_str(&report_baseline(live));
                for sig in &live.signals {
                    let _ = writeln!(
                        out,
                        "  {:<14} e-value {} of {}",
                        evidence::signal_key(sig.signal),
                        evalue(sig.e_value),
                        evalue(sig.e_value_threshold)
                    );
                }
            }
        }
        None => {
            let _ = writeln!(
                out,
                "no change being watched; a change notified now gets this"
            );
            if let Some(preview) = part::<BaselinePreview>(&s["baseline_now"], "baseline")? {
                out.push_str(&preview_baseline(&preview));
            }
        }
    }
    if let Some(p) = s["deploys_paused"].as_array() {
        let _ = writeln!(
            out,
            "DEPLOYS OF PROPOSALS ARE PAUSED by {}: {} (guardian resume lets them go)",
            display::line(p.first().and_then(|v| v.as_str()).unwrap_or("?")),
            display::line(p.get(1).and_then(|v| v.as_str()).unwrap_or(""))
        );
    }
    if let Some(id) = s["deploying"].as_str() {
        let _ = writeln!(out, "deploying proposal {}", display::line(id));
    }
    match s["proposals_waiting"].as_u64() {
        Some(0) | None => {}
        Some(n) => {
            let _ = writeln!(
                out,
                "{n} proposal{} waiting for a person (guardian proposals)",
                if n == 1 { "" } else { "s" }
            );
        }
    }
    let recent = s["recent"].as_array().cloned().unwrap_or_default();
    if !recent.is_empty() {
        let _ = writeln!(out, "recent changes:");
        for c in recent {
            let _ = writeln!(
                out,
                "  {}  {:<12}  commit {}  {}",
                t(&c["id"]),
                t(&c["state"]),
                t(&c["commit"]),
                display::line(c["note"].as_str().unwrap_or(""))
            );
        }
    }
    for target in s["scrapes"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(
            out,
            "scrape {}: {}{}",
            t(&target["name"]),
            target["age_secs"]
                .as_f64()
                .map_or("no successful scrape yet".to_owned(), |a| format!(
                    "last success {a:.0} s ago"
                )),
            target["last_error"]
                .as_str()
                .map(|e| format!("; last error: {}", display::line(e)))
                .unwrap_or_default()
        );
    }
    if let Some(n) = s["pending_emails"].as_u64().filter(|&n| n > 0) {
        let _ = writeln!(out, "alert emails waiting to be sent: {n}");
        if let Some(trouble) = s["pending_email_trouble"].as_array() {
            let _ = writeln!(
                out,
                "  last try failed ({} tries so far): {}",
                trouble.get(1).and_then(Value::as_i64).unwrap_or(0),
                t(trouble.first().unwrap_or(&Value::Null))
            );
        }
    }
    for src in s["sources"].as_array().cloned().unwrap_or_default() {
        let idle = src["idle_secs"]
            .as_f64()
            .map_or("nothing read yet".to_owned(), |i| {
                format!("last line {i:.0} s ago")
            });
        let _ = writeln!(
            out,
            "log {}: {}, {}, {} bad lines",
            t(&src["name"]),
            if src["file_exists"].as_bool().unwrap_or(false) {
                "present"
            } else {
                "missing"
            },
            idle,
            src["bad_lines"].as_u64().unwrap_or(0)
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::report::testing::expected;

    const T0: f64 = 1_764_000_000.0;

    /// A report stored while watching: the healthy recording, 600 s into its watch.
    fn watching_report() -> Value {
        let text = include_str!("../../testdata/reports/watching.json");
        serde_json::from_str(text).unwrap()
    }

    fn answer(watching: Value, baseline_now: Value) -> Value {
        json!({
            "service": "shop",
            "now": T0 + 600.4,
            "watching": watching,
            "baseline_now": baseline_now,
            "recent": [{"id": "chg_00aa11bb22cc", "state": "rolled_back",
                        "commit": "9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d",
                        "note": "reverted and redeployed;\u{1b}[2J the service is back"}],
            "sources": [{"name": "access", "file_exists": true, "idle_secs": 0.4,
                         "bad_lines": 2}],
            "scrapes": [{"name": "app", "age_secs": null, "last_error": "connection refused"}],
            "pending_emails": 1,
            "pending_email_trouble": ["sending email <x@guardian> via mx:25: timed out", 3],
            "deploying": null,
            "proposals_waiting": 2,
            "deploys_paused": null,
        })
    }

    #[test]
    fn the_status_of_a_watch_shows_its_baseline_and_evidence() {
        let watching = json!({
            "id": "chg_0123456789ab", "commit": "3f9a2c1b7d4e5f60718293a4b5c6d7e8f9012345",
            "kind": "ai", "state": "watching", "landed_at": T0, "live": watching_report(),
        });
        let text = status(&answer(watching, Value::Null)).unwrap();
        expected("status_watching.txt").assert_eq(&text);
    }

    #[test]
    fn the_status_with_nothing_watched_shows_the_baseline_a_change_would_get() {
        let preview = BaselinePreview {
            window: BaselineWindow {
                from: Some(T0 - 150.0),
                to: Some(T0),
                covered_secs: 150.0,
                excluded_secs: 0.0,
            },
            routes: vec![RouteBaseline {
                route: "/checkout".into(),
                requests: 12_500,
                errors: 3,
            }],
            notes: vec!["errors: the baseline holds 3 of them in 12500 requests".into()],
        };
        let preview = serde_json::to_value(preview).unwrap();
        let text = status(&answer(Value::Null, preview)).unwrap();
        expected("status_idle.txt").assert_eq(&text);
    }

    #[test]
    fn a_notified_change_shows_its_baseline_and_an_unreadable_one_says_so() {
        let mut answer = json!({"id": "chg_0123456789ab", "live": watching_report()});
        let text = notified(&answer).unwrap();
        assert!(
            text.starts_with("baseline: 1800 s (30 min 0 s) of known-good traffic, "),
            "{text}"
        );
        assert!(
            text.contains("deploy window: the 60 s before the change"),
            "{text}"
        );
        assert_eq!(notified(&json!({"id": "chg_1"})).unwrap(), "");
        answer["live"]["signals"] = json!("none");
        let e = notified(&answer).unwrap_err().to_string();
        assert!(e.starts_with("the daemon's report cannot be read: "), "{e}");
    }
}
