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

use super::units::{count, duration, evalue};
use crate::core::{
    BaselinePreview, BaselineWindow, DeployWindow, Report, RouteBaseline, SignalKind,
};
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

/// A signal's name as the status lists it.
fn signal_key(kind: SignalKind) -> &'static str {
    match kind {
        SignalKind::Errors => "errors",
        SignalKind::SlowRequests => "slow_requests",
        SignalKind::Latency => "latency",
    }
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
                        signal_key(sig.signal),
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
