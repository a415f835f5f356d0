//! Telling the on-call engineer what guardian decided and did, by email.
//!
//! Three parts, each usable on its own:
//! - [`render_alert`] turns a change (and the report of its rollback, if any) into an email for a
//!   person woken at 2 a.m.: what happened, what changed, the evidence in numbers, every command
//!   guardian ran, and how to undo the undo. Pure: no clock, no I/O.
//! - [`Mailer`] sends one email over SMTP (lettre, blocking, with timeouts).
//! - The durable outbox in the store, and [`deliver_due`], which tries every email that is due
//!   and schedules the next attempt of those that failed with exponential backoff. Nothing is
//!   ever given up on or deleted: an alert that cannot be sent stays queued, and visible.
//!
//! Every email about a change has a deterministic Message-ID, `<change-id.state@guardian>`, so
//! that queuing it twice (e.g. after a crash) keeps one, and a resend is recognisably the same
//! email.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use serde::Serialize;
use serde_json::Value;

use crate::config::{MailSecurity, MailSettings};
use crate::git::CommandRecord;
use crate::hook::{HookOutcome, HookStatus};
use crate::store::{ChangeRecord, ChangeState, Store, StoreError};

/// How long connecting, and each command and reply, may take before a send fails.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Wait before the first retry; each further failure doubles it ...
pub const FIRST_RETRY_SECS: f64 = 30.0;
/// ... up to this.
pub const MAX_RETRY_SECS: f64 = 30.0 * 60.0;

/// Lines of the redeploy hook's output shown, per stream.
pub(crate) const OUTPUT_TAIL_LINES: usize = 20;
/// Characters of one output line shown.
const OUTPUT_LINE_CHARS: usize = 300;

/// An email ready to send or queue. The sender and recipients come from the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Email {
    pub subject: String,
    pub text_body: String,
    /// The Message-ID header, angle brackets included.
    pub message_id: String,
    /// An HTML alternative (the post-mortem with its chart), sent with the text as
    /// multipart/alternative; the text alone must still say everything that matters.
    pub html: Option<String>,
}

/// The daily digest of changes that stayed healthy during the UTC day starting at `day_start`
/// (unix seconds), instead of one email each. `None` when there were none.
pub fn render_digest(service: &str, day_start: f64, healthy: &[ChangeRecord]) -> Option<Email> {
    if healthy.is_empty() {
        return None;
    }
    let day = chrono::DateTime::from_timestamp(day_start as i64, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("{day_start}"));
    let mut body = format!(
        "{} change{} to {service} stayed healthy on {day} (UTC). Nothing needs doing.\n\n",
        healthy.len(),
        if healthy.len() == 1 { "" } else { "s" }
    );
    for c in healthy {
        let errors = c
            .report
            .as_ref()
            .and_then(|r| r["signals"].as_array())
            .and_then(|s| s.iter().find(|s| s["signal"] == "errors"))
            .map(|s| {
                let pct = |v: &Value| {
                    v.as_f64()
                        .map_or("-".to_owned(), |r| format!("{:.2}%", r * 100.0))
                };
                format!(
                    "errors {} -> {}, bounded below {}x",
                    pct(&s["baseline"]["rate"]),
                    pct(&s["after"]["rate"]),
                    s["ratio_upper_bound"]
                        .as_f64()
                        .map_or("-".to_owned(), |u| format!("{u:.2}"))
                )
            })
            .unwrap_or_default();
        body.push_str(&format!(
            "  {}  commit {}  {}{}  {}\n      {}\n",
            c.id,
            &c.commit[..c.commit.len().min(10)],
            c.kind.as_str(),
            c.pattern
                .as_deref()
                .map(|p| format!(" ({})", printable(p)))
                .unwrap_or_default(),
            printable(c.summary.as_deref().unwrap_or("")),
            errors
        ));
    }
    body.push_str("\n-- \nSent by guardian: a digest of healthy changes, once a day.\n");
    Some(Email {
        subject: format!(
            "[guardian] {service}: {} healthy change(s) on {day}",
            healthy.len()
        ),
        text_body: body,
        message_id: format!("<digest.{day}@guardian>"),
        html: None,
    })
}

/// The Message-ID of the email about `change_id` reaching `state`: the same every time, so a
/// resend after a crash is recognisably the same email (and the outbox keeps one).
pub fn message_id(change_id: &str, state: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("<{}.{}@guardian>", clean(change_id), clean(state))
}

/// Renders the alert about `change` (its current state), with the rollback report (the
/// `RollbackReport` JSON from the events log) when there was a rollback.
pub fn render_alert(service: &str, change: &ChangeRecord, rollback: Option<&Value>) -> Email {
    let report = change.report.as_ref();
    let short = short_commit(&change.commit);
    let commits = if change.commit.contains("..") {
        "commits"
    } else {
        "commit"
    };
    let label = state_label(change, rollback);
    let subject = one_line(&format!(
        "[guardian] {service}: {label} \u{2014} {commits} {short}"
    ));
    let revert = rollback
        .and_then(|r| r.get("revert_commit"))
        .and_then(Value::as_str)
        .map(str::to_owned);

    let mut body = String::new();
    let w = &mut body;
    // What happened and what guardian did, first, in one paragraph.
    let _ = writeln!(
        w,
        "{}",
        headline(service, change, rollback, &short, revert.as_deref())
    );
    w.push('\n');

    section(w, "What changed");
    field(w, "Commit", &change.commit);
    let kind = match &change.pattern {
        Some(p) => format!("{} (pattern: {p})", change.kind),
        None => change.kind.to_string(),
    };
    field(w, "Written by", &kind);
    if let Some(summary) = &change.summary {
        field(w, "Summary", summary);
    }
    field(w, "Landed", &when(change.landed_at));
    field(w, "Service", service);
    let state = match &change.note {
        Some(note) => format!("{} ({note})", change.state),
        None => change.state.to_string(),
    };
    field(w, "State now", &state);
    w.push('\n');

    section(w, "Evidence");
    match report {
        Some(report) => evidence(w, report),
        None => w.push_str("  No evidence was recorded for this change.\n"),
    }
    w.push('\n');

    section(w, "What guardian did");
    what_guardian_did(w, change, rollback);
    w.push('\n');

    match revert.as_deref() {
        Some(revert) => {
            section(w, "How to undo the undo");
            undo_the_undo(w, change, rollback, revert);
        }
        None if matches!(
            change.state,
            ChangeState::Escalated | ChangeState::Regressed
        ) =>
        {
            section(w, "What you can do");
            by_hand(w, change);
        }
        None => {}
    }
    w.push('\n');
    let _ = writeln!(w, "Change id: {}", change.id);
    let _ = writeln!(
        w,
        "Status:    guardian status --config <your guardian.toml>   (or GET /v1/changes/{})",
        change.id
    );
    let _ = writeln!(w, "-- \nSent by guardian, watching {service}.");

    Email {
        subject,
        text_body: body,
        message_id: message_id(&change.id, change.state.as_str()),
        html: None,
    }
}

/// [`render_alert`] with the rendered post-mortem (`crate::postmortem::Postmortem::html`) as
/// the HTML alternative. The text part stays the whole alert, plus one line saying where the
/// post-mortem is, for mail clients that show only text.
pub fn render_alert_with_postmortem(
    service: &str,
    change: &ChangeRecord,
    rollback: Option<&Value>,
    postmortem_html: Option<String>,
) -> Email {
    let mut email = render_alert(service, change, rollback);
    if postmortem_html.is_some() {
        let line = format!(
            "Post-mortem: in this email's HTML part, or guardian postmortem {} --config <your \
             guardian.toml>\n",
            change.id
        );
        match email.text_body.find("Change id: ") {
            Some(at) => email.text_body.insert_str(at, &line),
            None => email.text_body.push_str(&line),
        }
    }
    email.html = postmortem_html;
    email
}

/// The few words after the service in the subject: "rolled back", "escalated: revert
/// conflicts", "regressed".
pub(crate) fn state_label(change: &ChangeRecord, rollback: Option<&Value>) -> String {
    match change.state {
        ChangeState::RolledBack => "rolled back".to_owned(),
        ChangeState::Escalated => format!("escalated: {}", escalation_cause(change, rollback)),
        ChangeState::Regressed => "regressed".to_owned(),
        ChangeState::RollingBack => "regressed, rolling back".to_owned(),
        ChangeState::Verifying => "reverted, verifying recovery".to_owned(),
        other => other.as_str().replace('_', " "),
    }
}

/// Why a rollback was handed to a person, in a few words.
pub(crate) fn escalation_cause(change: &ChangeRecord, rollback: Option<&Value>) -> &'static str {
    if let Some(rollback) = rollback.filter(|r| !r["escalation"].is_null()) {
        for step in steps(rollback) {
            let failed = step.get("error").is_some();
            match step["step"].as_str().unwrap_or_default() {
                "open repository" if failed => return "cannot open the repository",
                "git revert" if step["result"] == "conflict" => return "revert conflicts",
                "git revert" if failed => return "revert failed",
                "git push" if failed => return "push failed",
                "redeploy hook" => {
                    return match step["outcome"]["status"]["kind"].as_str() {
                        Some("timed_out") => "redeploy hook timed out",
                        Some("succeeded") => "needs a person",
                        _ => "redeploy hook failed",
                    }
                }
                _ => {}
            }
        }
        return "needs a person";
    }
    let note = change.note.as_deref().unwrap_or_default();
    if note.contains("did not help") {
        "revert did not help"
    } else if note.contains("could not be confirmed") {
        "recovery not confirmed"
    } else if note.contains("guardian stopped") {
        "guardian restarted mid-rollback"
    } else {
        "needs a person"
    }
}

/// The first paragraph: what happened and what guardian did about it.
pub(crate) fn headline(
    service: &str,
    change: &ChangeRecord,
    rollback: Option<&Value>,
    short: &str,
    revert: Option<&str>,
) -> String {
    let worse = change
        .report
        .as_ref()
        .map(regression_summary)
        .filter(|s| !s.is_empty())
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    let revert = revert.map(short_commit);
    match change.state {
        ChangeState::RolledBack => format!(
            "Commit {short} made {service} worse{worse}. Guardian reverted it{}, redeployed, \
             and the service is back to its baseline. Nothing needs doing now; read on to check \
             the evidence, or to undo the undo.",
            revert
                .map(|r| format!(" (revert commit {r})"))
                .unwrap_or_default()
        ),
        ChangeState::Escalated => {
            let why = rollback
                .and_then(|r| r["escalation"].as_str())
                .or(change.note.as_deref())
                .unwrap_or("it could not finish on its own")
                .trim_end_matches('.');
            format!(
                "ACTION NEEDED: commit {short} made {service} worse{worse}, and guardian could \
                 not finish rolling it back: {why}. A person must take over now."
            )
        }
        ChangeState::Regressed => format!(
            "Commit {short} made {service} worse{worse}. Rollback is not configured, so guardian \
             changed nothing: decide whether to revert it."
        ),
        ChangeState::RollingBack | ChangeState::Verifying => format!(
            "Commit {short} made {service} worse{worse}. Guardian is rolling it back; another \
             email follows when that is done."
        ),
        ChangeState::Healthy => format!(
            "Commit {short} on {service} is healthy: the watch ended and the evidence bounds any \
             harm below the configured limits.{}",
            not_judged(change)
        ),
        ChangeState::Inconclusive => format!(
            "Commit {short} on {service}: the watch ended without enough evidence either way; \
             guardian did nothing.{}",
            not_judged(change)
        ),
        ChangeState::Superseded => format!(
            "Commit {short} on {service} was superseded: another change landed before it was \
             decided; guardian did nothing."
        ),
        ChangeState::Interrupted => format!(
            "Commit {short} on {service}: guardian stopped during the watch, so no verdict was \
             reached; guardian did nothing."
        ),
        ChangeState::Watching => {
            format!("Commit {short} on {service} is being watched; nothing decided yet.")
        }
    }
}

/// " Not judged: ..." for a headline, when the verdict does not rest on every signal.
fn not_judged(change: &ChangeRecord) -> String {
    change
        .report
        .as_ref()
        .and_then(|r| r["not_judged"].as_str())
        .map(|n| format!(" Not judged: {n}."))
        .unwrap_or_default()
}

/// Where a signal stands, in a word or two: never "not worse" for a signal that was not
/// compared, or that does not count towards the verdict.
pub(crate) fn signal_standing(s: &Value) -> &'static str {
    if s["regressed"].as_bool() == Some(true) {
        "WORSE"
    } else if s["routes_compared"].as_u64() == Some(0) {
        if s["leans_worse"].as_bool() == Some(true) {
            "not compared; what there is leans towards harm"
        } else {
            "not compared"
        }
    } else if s["left_out"].as_bool() == Some(true) {
        "left out: too few in the baseline"
    } else {
        match s["within_limits"].as_bool() {
            Some(true) => "within limits",
            Some(false) => "not worse yet, not shown within limits",
            None => "not shown worse",
        }
    }
}

/// Why a signal was not compared, as the report says (older reports did not say).
pub(crate) fn not_compared_reason(s: &Value) -> String {
    s["not_compared"]
        .as_str()
        .unwrap_or("no route had enough baseline traffic for this signal")
        .to_owned()
}

/// The regressed signals in a phrase: "errors 0.50% -> 6.20% (12.4x)".
pub(crate) fn regression_summary(report: &Value) -> String {
    signals(report)
        .filter(|s| s["regressed"].as_bool() == Some(true))
        .map(|s| {
            let name = signal_name(s);
            if s["signal"] == "latency" {
                match s["effect_ratio"].as_f64() {
                    Some(r) => format!("{name}: median {r:.2}x"),
                    None => name.to_owned(),
                }
            } else {
                let mut text = format!(
                    "{name} {} -> {}",
                    percent(s["baseline"]["rate"].as_f64()),
                    percent(s["after"]["rate"].as_f64())
                );
                if let Some(r) = s["effect_ratio"].as_f64() {
                    let _ = write!(text, ", {} the baseline", ratio(r));
                }
                text
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Per signal: rates before and after, the effect, the e-value against its threshold, the
/// counts it rests on, when it was decided.
fn evidence(w: &mut String, report: &Value) {
    let change_at = report["change_at"].as_f64();
    let decided = match (report["decided_at"].as_f64(), change_at) {
        (Some(d), Some(c)) => format!(
            "decided {} after the change ({})",
            secs(d - c),
            report["verdict"].as_str().unwrap_or("?")
        ),
        _ => format!(
            "not decided (verdict: {})",
            report["verdict"].as_str().unwrap_or("?")
        ),
    };
    let design = match report["design"].as_str() {
        Some("concurrent") => "new version against the old one serving at the same time",
        _ => "after the change against the baseline before it",
    };
    let _ = writeln!(
        w,
        "  Compared {design}: {} requests before, {} after; {decided}.",
        count(report["requests_before"].as_u64()),
        count(report["requests_after"].as_u64()),
    );
    let mut any = false;
    for s in signals(report) {
        any = true;
        w.push('\n');
        let verdict = signal_standing(s);
        let mut title = format!("  {}: {verdict}", signal_title(s));
        if let Some(route) = s["worst_route"].as_str() {
            let _ = write!(title, " (worst route: {route})");
        }
        let _ = writeln!(w, "{title}");
        if s["routes_compared"].as_u64() == Some(0) {
            let _ = writeln!(w, "    not compared: {}", not_compared_reason(s));
            continue;
        }
        if s["left_out"].as_bool() == Some(true) {
            let _ = writeln!(
                w,
                "    left out of the healthy verdict: only {} in the baseline, too few to ever \
                 bound the harm (its test still runs and can call a regression)",
                count(s["thin"]["baseline_events"].as_u64())
            );
        }
        if s["signal"] == "latency" {
            if let Some(r) = s["effect_ratio"].as_f64() {
                let _ = writeln!(w, "    median:   after / before {r:.2}x");
            }
            for level in s["levels"].as_array().into_iter().flatten() {
                let q = level["quantile"].as_f64().unwrap_or(0.0);
                let _ = writeln!(
                    w,
                    "    p{}: {} -> {}; share slower than it (plus tolerance): {} -> {}; \
                     e-value {}",
                    trim_number(q * 100.0),
                    ms(level["baseline_ms"].as_f64()),
                    ms(level["after_ms"].as_f64()),
                    percent(level["baseline_share_slower"].as_f64()),
                    percent(level["after_share_slower"].as_f64()),
                    number(level["e_value"].as_f64()),
                );
            }
            let _ = writeln!(
                w,
                "    requests: {} before, {} after",
                count(s["baseline"]["requests"].as_u64()),
                count(s["after"]["requests"].as_u64())
            );
        } else {
            let side = |name: &str, side: &Value| {
                format!(
                    "    {name:<9} {:>6}  ({} of {} requests)",
                    percent(side["rate"].as_f64()),
                    count(side["events"].as_u64()),
                    count(side["requests"].as_u64()),
                )
            };
            let _ = writeln!(w, "{}", side("before:", &s["baseline"]));
            let _ = writeln!(w, "{}", side("after:", &s["after"]));
            let mut effect = match s["effect_ratio"].as_f64() {
                Some(r) => format!("{} the baseline rate", ratio(r)),
                None => "no ratio (no bad events before, or no traffic after)".to_owned(),
            };
            if let Some(u) = s["ratio_upper_bound"].as_f64() {
                let _ = write!(effect, "; upper bound {}", ratio(u));
            }
            if let Some(n) = s["null_ratio"].as_f64() {
                let _ = write!(
                    effect,
                    "; a rise to {} is tolerated (not counted as worse)",
                    ratio(n)
                );
            }
            let _ = writeln!(w, "    effect:   {effect}");
        }
        let e = s["e_value"].as_f64();
        let threshold = s["e_value_threshold"].as_f64();
        let crossed = match (e, threshold) {
            (Some(e), Some(t)) if e >= t => "crossed",
            (Some(_), Some(_)) => "not crossed",
            _ => "?",
        };
        let _ = writeln!(
            w,
            "    e-value:  {} against a threshold of {} ({crossed}; alpha {})",
            number(e),
            number(threshold),
            s["alpha"]
                .as_f64()
                .map_or("?".to_owned(), |a| format!("{a}"))
        );
        if s["regressed"].as_bool() == Some(true) {
            if let (Some(d), Some(c)) = (report["decided_at"].as_f64(), change_at) {
                let _ = writeln!(w, "    decided:  {} after the change", secs(d - c));
            }
        }
        if let Some(d) = s["dispersion"].as_f64().filter(|d| *d > 1.05) {
            let _ = writeln!(
                w,
                "    errors come in bursts ({d:.1}x independent); evidence discounted by that"
            );
        }
    }
    if !any {
        w.push_str("  The report names no signal.\n");
    }
}

pub(crate) fn what_guardian_did(w: &mut String, change: &ChangeRecord, rollback: Option<&Value>) {
    let Some(rollback) = rollback else {
        let text = match change.state {
            ChangeState::Regressed => {
                "  Nothing: rollback is not configured ([daemon.rollback] in guardian.toml)."
            }
            ChangeState::Escalated => {
                "  No rollback report was recorded for this change. If guardian stopped during a \
                 rollback, check whether a revert commit exists (git log --grep \
                 'Guardian-Change: <change id>') and whether the service recovered."
            }
            ChangeState::RollingBack => "  Reverting and redeploying now.",
            _ => "  Nothing: guardian only acts on a change that made things worse.",
        };
        let _ = writeln!(w, "{text}");
        return;
    };
    let mut n = 0;
    for step in steps(rollback) {
        n += 1;
        let name = step["step"].as_str().unwrap_or("step");
        match name {
            "git revert" => {
                let outcome = match (step["result"].as_str(), step["error"].as_str()) {
                    (_, Some(e)) => format!("FAILED: {e}"),
                    (Some("conflict"), _) => {
                        let files = string_list(&step["files"]);
                        let tree = if step["tree_restored"].as_bool() == Some(true) {
                            "aborted; the working tree is exactly as it was"
                        } else {
                            "aborted, BUT THE WORKING TREE COULD NOT BE VERIFIED CLEAN"
                        };
                        format!("CONFLICT in {}; {tree}", files.join(", "))
                    }
                    (Some(result), _) => match step["commit"].as_str() {
                        Some(c) => format!("{result}; revert commit {c}"),
                        None => result.to_owned(),
                    },
                    _ => "?".to_owned(),
                };
                let _ = writeln!(w, "  {n}. git revert: {outcome}");
                commands(w, &step["commands"]);
            }
            "git push" => {
                let target = format!(
                    "{} {}",
                    step["remote"].as_str().unwrap_or("?"),
                    step["branch"].as_str().unwrap_or("?")
                );
                let outcome = match step["error"].as_str() {
                    Some(e) => format!("FAILED: {e}"),
                    None => step["result"].as_str().unwrap_or("?").to_owned(),
                };
                let _ = writeln!(w, "  {n}. git push to {target}: {outcome}");
                if !step["command"].is_null() {
                    commands(w, &Value::Array(vec![step["command"].clone()]));
                }
            }
            "redeploy hook" => hook_step(w, n, step),
            _ => {
                let outcome = match step["error"].as_str() {
                    Some(e) => format!("FAILED: {e}"),
                    None => step["result"].as_str().unwrap_or("done").to_owned(),
                };
                let _ = writeln!(w, "  {n}. {name}: {outcome}");
            }
        }
    }
    if n == 0 {
        w.push_str("  The rollback report lists no step.\n");
    }
    match rollback["revert_commit"].as_str() {
        Some(c) => {
            let _ = writeln!(w, "  Revert commit: {c}");
        }
        None => w.push_str("  No revert commit was made.\n"),
    }
    if let Some(why) = rollback["escalation"].as_str() {
        let _ = writeln!(w, "  Handed to a person because: {why}");
    } else if change.state == ChangeState::Escalated {
        if let Some(note) = &change.note {
            let _ = writeln!(w, "  Handed to a person because: {note}");
        }
    } else if change.state == ChangeState::RolledBack {
        w.push_str(
            "  Then guardian watched the traffic again: the service is back to its baseline.\n",
        );
    }
}

fn hook_step(w: &mut String, n: usize, step: &Value) {
    let outcome: Option<HookOutcome> = serde_json::from_value(step["outcome"].clone()).ok();
    let summary = step["summary"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| outcome.as_ref().map(HookOutcome::summary))
        .unwrap_or_else(|| "?".to_owned());
    let failed = outcome
        .as_ref()
        .is_some_and(|o| !matches!(o.status, HookStatus::Succeeded));
    let _ = writeln!(
        w,
        "  {n}. redeploy hook: {}{summary}",
        if failed { "FAILED: " } else { "" }
    );
    let command = string_list(&step["command"]);
    if !command.is_empty() {
        let _ = writeln!(w, "       $ {}", shell_line(&command));
    }
    let Some(outcome) = outcome else { return };
    for (name, text) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
        let lines = tail(text, OUTPUT_TAIL_LINES);
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(w, "       last lines of {name}:");
        for line in lines {
            let _ = writeln!(w, "         | {line}");
        }
    }
    if outcome.dropped_bytes > 0 {
        let _ = writeln!(
            w,
            "       ({} bytes of output were not kept)",
            outcome.dropped_bytes
        );
    }
    for note in &outcome.notes {
        let _ = writeln!(w, "       note: {}", printable(note));
    }
}

/// Each git command with its exit status; the end of stderr of one that failed.
fn commands(w: &mut String, list: &Value) {
    for value in list.as_array().into_iter().flatten() {
        let Ok(record) = serde_json::from_value::<CommandRecord>(value.clone()) else {
            continue;
        };
        let status = match record.status {
            Some(code) => format!("exit {code}"),
            None => "killed".to_owned(),
        };
        let _ = writeln!(
            w,
            "       $ {}   [{status}]",
            printable(&record.command_line())
        );
        if record.status != Some(0) {
            for line in tail(&record.stderr, 5) {
                let _ = writeln!(w, "         | {line}");
            }
        }
    }
}

pub(crate) fn undo_the_undo(
    w: &mut String,
    change: &ChangeRecord,
    rollback: Option<&Value>,
    revert: &str,
) {
    let push = rollback.and_then(|r| {
        steps(r)
            .find(|s| s["step"] == "git push" && s.get("error").is_none())
            .map(|s| {
                format!(
                    "{} HEAD:{}",
                    s["remote"].as_str().unwrap_or("origin"),
                    s["branch"].as_str().unwrap_or("main")
                )
            })
    });
    let hook = rollback
        .and_then(|r| steps(r).find(|s| s["step"] == "redeploy hook"))
        .map(|s| string_list(&s["command"]))
        .filter(|c| !c.is_empty())
        .map(|c| shell_line(&c));
    w.push_str(
        "  If the change was fine after all and you want it back, in the repository guardian\n  \
         reverted in ([daemon.rollback] repo):\n",
    );
    let _ = writeln!(
        w,
        "    1. git revert {revert}      (re-applies the change as a new commit)"
    );
    let mut step = 2;
    if let Some(push) = push {
        let _ = writeln!(w, "    {step}. git push {push}");
        step += 1;
    }
    match hook {
        Some(hook) => {
            let _ = writeln!(
                w,
                "    {step}. run the redeploy hook again: {hook}\n       \
                 (or re-deploy the original commit {} your usual way)",
                change.commit
            );
        }
        None => {
            let _ = writeln!(
                w,
                "    {step}. redeploy (or re-deploy the original commit {} your usual way)",
                change.commit
            );
        }
    }
    step += 1;
    let _ = writeln!(
        w,
        "    {step}. guardian notify --commit <the new commit> so guardian watches it again,\n       \
         and guardian status to see where things stand."
    );
}

pub(crate) fn by_hand(w: &mut String, change: &ChangeRecord) {
    let _ = writeln!(
        w,
        "  To revert by hand, in the deploy repository:\n    \
         git revert {}   (resolve any conflicts, then commit)\n  \
         then redeploy, and guardian notify --commit <the revert commit> so guardian watches \
         it.\n  guardian status shows where things stand.",
        change.commit
    );
}

fn section(w: &mut String, title: &str) {
    let _ = writeln!(w, "{title}\n{}", "-".repeat(title.chars().count()));
}

fn field(w: &mut String, name: &str, value: &str) {
    let _ = writeln!(w, "  {:<11} {}", format!("{name}:"), printable(value));
}

pub(crate) fn steps(rollback: &Value) -> impl Iterator<Item = &Value> {
    rollback["steps"].as_array().into_iter().flatten()
}

pub(crate) fn signals(report: &Value) -> impl Iterator<Item = &Value> {
    report["signals"].as_array().into_iter().flatten()
}

pub(crate) fn signal_name(s: &Value) -> &str {
    match s["signal"].as_str() {
        Some("errors") => "errors",
        Some("slow_requests") => "slow requests",
        Some("latency") => "latency",
        Some(other) => other,
        None => "?",
    }
}

pub(crate) fn signal_title(s: &Value) -> String {
    match s["signal"].as_str() {
        Some("errors") => "Errors (share of failed requests)".to_owned(),
        Some("slow_requests") => match s["threshold_ms"].as_f64() {
            Some(t) => format!("Slow requests (share slower than {})", ms(Some(t))),
            None => "Slow requests".to_owned(),
        },
        Some("latency") => "Latency (the whole distribution)".to_owned(),
        _ => signal_name(s).to_owned(),
    }
}

pub(crate) fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}

/// The first 10 characters of each commit (of both ends of a range).
pub(crate) fn short_commit(commit: &str) -> String {
    let short = |c: &str| c.trim().chars().take(10).collect::<String>();
    match commit.split_once("..") {
        Some((a, b)) => format!("{}..{}", short(a), short(b)),
        None => short(commit),
    }
}

/// Unix seconds as a UTC date, with the seconds themselves for grepping logs.
pub(crate) fn when(t: f64) -> String {
    let whole = t.floor();
    match chrono::DateTime::from_timestamp(whole as i64, 0) {
        Some(d) if t.is_finite() => {
            format!("{} UTC (unix {whole:.0})", d.format("%Y-%m-%d %H:%M:%S"))
        }
        _ => format!("unix {t}"),
    }
}

pub(crate) fn secs(d: f64) -> String {
    if !d.is_finite() {
        "?".to_owned()
    } else if d < 120.0 {
        format!("{} s", trim_number((d * 10.0).round() / 10.0))
    } else {
        format!("{:.0} s ({:.1} min)", d, d / 60.0)
    }
}

pub(crate) fn percent(rate: Option<f64>) -> String {
    match rate {
        None => "-".to_owned(),
        Some(r) if r > 0.0 && r < 0.0001 => format!("{:.4}%", r * 100.0),
        Some(r) => format!("{:.2}%", r * 100.0),
    }
}

pub(crate) fn ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}x")
    } else if r >= 10.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.2}x")
    }
}

pub(crate) fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v >= 100.0 => format!("{v:.0} ms"),
        Some(v) => format!("{v:.1} ms"),
    }
}

/// An e-value or threshold: plain when it reads well, scientific when huge.
pub(crate) fn number(v: Option<f64>) -> String {
    match v {
        None => "?".to_owned(),
        Some(v) if !v.is_finite() => v.to_string(),
        Some(v) if v >= 1e6 => format!("{v:.2e}"),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
    }
}

pub(crate) fn count(v: Option<u64>) -> String {
    let Some(v) = v else { return "?".to_owned() };
    let digits = v.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn trim_number(v: f64) -> String {
    let text = format!("{v:.1}");
    text.strip_suffix(".0").map(str::to_owned).unwrap_or(text)
}

/// The last `n` non-empty lines, control characters (e.g. colour codes) made visible as `?`,
/// each cut to a readable length.
pub(crate) fn tail(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| {
            let line = printable(l);
            if line.chars().count() > OUTPUT_LINE_CHARS {
                let cut: String = line.chars().take(OUTPUT_LINE_CHARS).collect();
                format!("{cut} [...]")
            } else {
                line
            }
        })
        .collect()
}

/// Outside text (a summary, a note, a line of output) as one visible line.
pub(crate) fn printable(s: &str) -> String {
    crate::display::line(s).into_owned()
}

pub(crate) fn one_line(s: &str) -> String {
    crate::display::line(s).into_owned()
}

/// A command as one might type it: words with spaces or quotes are single-quoted.
pub(crate) fn shell_line(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why an email could not be sent, or the mailer not built.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The settings cannot be used (an address, the password file).
    #[error("{0}")]
    Setup(String),
    /// The email cannot be built (e.g. a recipient stored in the outbox is not an address).
    #[error("building email {message_id}: {error}")]
    Message { message_id: String, error: String },
    /// The server could not be reached, or refused the email. `permanent` when it said so
    /// with a 5xx reply (it is retried all the same: a person must see it fail).
    #[error("sending email {message_id} via {server}: {error}")]
    Send {
        message_id: String,
        server: String,
        error: String,
        permanent: bool,
    },
}

/// Sends emails through the configured SMTP server. Blocking: call it from a blocking thread.
/// Each send opens its own connection.
pub struct Mailer {
    transport: SmtpTransport,
    from: Mailbox,
    to: Vec<String>,
    /// `host:port (security)`, for messages.
    server: String,
    /// Fills approval links into emails as they are sent (`gate::links`).
    link_key: Option<crate::gate::links::LinkKey>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .field("to", &self.to)
            .finish()
    }
}

impl Mailer {
    /// Builds the mailer; reads the SMTP password from its file. Connects to nothing yet.
    pub fn new(settings: &MailSettings) -> Result<Mailer, MailError> {
        let from: Mailbox = settings.from.parse().map_err(|e| {
            MailError::Setup(format!(
                "[daemon.mail] from {:?} is not an email address: {e}",
                settings.from
            ))
        })?;
        for to in &settings.to {
            to.parse::<Mailbox>().map_err(|e| {
                MailError::Setup(format!(
                    "[daemon.mail] to {to:?} is not an email address: {e}"
                ))
            })?;
        }
        let host = settings.smtp_host.trim();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        let tls = |host: &str| {
            TlsParameters::new(host.to_owned())
                .map_err(|e| MailError::Setup(format!("setting up TLS for {host}: {e}")))
        };
        let tls = match settings.security {
            MailSecurity::StartTls => Tls::Required(tls(&host)?),
            MailSecurity::Tls => Tls::Wrapper(tls(&host)?),
            MailSecurity::None => Tls::None,
        };
        let mut builder = SmtpTransport::builder_dangerous(host.clone())
            .port(settings.smtp_port)
            .tls(tls)
            .timeout(Some(SEND_TIMEOUT));
        if let Some(auth) = &settings.auth {
            let password = read_password(&auth.password_file)?;
            builder = builder.credentials(Credentials::new(auth.username.clone(), password));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            to: settings.to.clone(),
            server: format!("{host}:{} ({})", settings.smtp_port, settings.security),
            link_key: None,
        })
    }

    /// The key approval links are derived from: emails that hold links are sent with them.
    pub fn with_link_key(mut self, key: crate::gate::links::LinkKey) -> Mailer {
        self.link_key = Some(key);
        self
    }

    /// The configured recipients: what to queue an email for.
    pub fn recipients(&self) -> &[String] {
        &self.to
    }

    /// Sends `email` to the configured recipients.
    pub fn send(&self, email: &Email) -> Result<(), MailError> {
        self.send_to(email, &self.to)
    }

    /// Sends `email` to `to` (e.g. the recipients stored with it in the outbox).
    pub fn send_to(&self, email: &Email, to: &[String]) -> Result<(), MailError> {
        let message = self.message(email, to)?;
        self.transport
            .send(&message)
            .map(|_| ())
            .map_err(|e| MailError::Send {
                message_id: email.message_id.clone(),
                server: self.server.clone(),
                error: e.to_string(),
                permanent: e.is_permanent(),
            })
    }

    fn message(&self, email: &Email, to: &[String]) -> Result<Message, MailError> {
        let bad = |error: String| MailError::Message {
            message_id: email.message_id.clone(),
            error,
        };
        if to.is_empty() {
            return Err(bad("no recipient".to_owned()));
        }
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(one_line(&email.subject))
            .message_id(Some(email.message_id.clone()))
            .header(AutoSubmitted);
        for address in to {
            let mailbox: Mailbox = address
                .parse()
                .map_err(|e| bad(format!("recipient {address:?}: {e}")))?;
            builder = builder.to(mailbox);
        }
        match &email.html {
            // Text first, HTML last: a client shows the last alternative it can display.
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                email.text_body.clone(),
                html.clone(),
            )),
            None => builder
                .header(ContentType::TEXT_PLAIN)
                .body(email.text_body.clone()),
        }
        .map_err(|e| bad(e.to_string()))
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834): tells vacation responders not to answer.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// The SMTP password: the file's first line, without its line ending.
fn read_password(path: &Path) -> Result<String, MailError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        MailError::Setup(format!(
            "cannot read the SMTP password file {}: {e}",
            path.display()
        ))
    })?;
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        return Err(MailError::Setup(format!(
            "the SMTP password file {} is empty: its first line must be the password",
            path.display()
        )));
    }
    Ok(password.to_owned())
}

/// Queues `email` for the configured recipients. Idempotent: an email with the same Message-ID
/// already queued (or sent) is left as it is. Returns whether it was added.
pub fn enqueue(
    store: &mut Store,
    settings: &MailSettings,
    change_id: Option<&str>,
    email: &Email,
    now: f64,
) -> Result<bool, StoreError> {
    enqueue_with_links(store, settings, change_id, email, &[], now)
}

/// [`enqueue`] for an email holding approval links: `links` are the ids whose placeholders
/// (`gate::links::placeholder`) the body holds; their secrets are filled in when it is sent.
pub fn enqueue_with_links(
    store: &mut Store,
    settings: &MailSettings,
    change_id: Option<&str>,
    email: &Email,
    links: &[String],
    now: f64,
) -> Result<bool, StoreError> {
    // Every email passes here: whatever outside text a renderer let through reaches no mail
    // client as a control or invisible character.
    store.enqueue_email_html(
        change_id,
        &email.message_id,
        &crate::display::line(&email.subject),
        &crate::display::block(&email.text_body),
        email.html.as_deref(),
        links,
        &settings.to,
        now,
    )
}

/// Wait after the `attempts`-th failed attempt: 30 s, 1 min, 2 min, ... at most 30 min.
pub fn retry_delay(attempts: u32) -> f64 {
    let doublings = attempts.saturating_sub(1).min(16);
    (FIRST_RETRY_SECS * f64::from(1u32 << doublings)).min(MAX_RETRY_SECS)
}

/// What one [`deliver_due`] pass did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DeliveryStats {
    /// Emails the server accepted.
    pub sent: usize,
    /// Emails that failed and were scheduled again.
    pub failed: usize,
    /// Emails still waiting after the pass (due later, or failed now).
    pub pending: usize,
    /// What went wrong, one line each (sending, or recording the outcome), for the log.
    pub errors: Vec<String>,
}

/// Tries every email that is due at `now` once. One that fails is tried again after
/// [`retry_delay`]; none is ever given up on. An email sent but not recorded as sent (the store
/// failed just then) will be sent again later, with the same Message-ID.
pub fn deliver_due(store: &mut Store, mailer: &Mailer, now: f64) -> DeliveryStats {
    let mut stats = DeliveryStats::default();
    let due = match store.due_emails(now, usize::MAX) {
        Ok(due) => due,
        Err(e) => {
            stats.errors.push(format!("reading the outbox: {e}"));
            return stats;
        }
    };
    for queued in due {
        let text_body = match (&mailer.link_key, queued.links.is_empty()) {
            (_, true) => Ok(queued.body),
            (Some(key), false) => Ok(crate::gate::links::fill(&queued.body, &queued.links, key)),
            (None, false) => Err(MailError::Setup(format!(
                "email {} holds approval links and this mailer has no link key to fill them in",
                queued.message_id
            ))),
        };
        let email = Email {
            subject: queued.subject,
            text_body: text_body.as_ref().cloned().unwrap_or_default(),
            message_id: queued.message_id,
            html: queued.html,
        };
        let sent = match text_body {
            Ok(_) => mailer.send_to(&email, &queued.to),
            Err(e) => Err(e),
        };
        match sent {
            Ok(()) => {
                stats.sent += 1;
                if let Err(e) = store.mark_sent(&email.message_id, now) {
                    stats.errors.push(format!(
                        "email {} was sent but could not be recorded as sent: {e}",
                        email.message_id
                    ));
                }
            }
            Err(error) => {
                stats.failed += 1;
                let attempts = queued.attempts.saturating_add(1);
                let next = now + retry_delay(attempts);
                let message = error.to_string();
                stats.errors.push(format!(
                    "{message} (attempt {attempts}; next in {})",
                    secs(next - now)
                ));
                if let Err(e) = store.mark_failed(&email.message_id, &message, next, now) {
                    stats.errors.push(format!(
                        "recording the failure of email {}: {e}",
                        email.message_id
                    ));
                }
            }
        }
    }
    match store.pending_emails() {
        Ok(n) => stats.pending = n,
        Err(e) => stats.errors.push(format!("counting queued emails: {e}")),
    }
    stats
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use rand::{Rng, SeedableRng};
    use rand_pcg::Pcg64Mcg;
    use serde_json::json;

    use super::*;
    use crate::config::MailAuth;
    use crate::core::{DetectorSettings, Monitor, Request, Verdict};
    use crate::daemon::rollback::RollbackReport;
    use crate::hook::HookOutcome;
    use crate::store::{ChangeKind, NewChange};

    const T0: f64 = 1_764_000_000.0;
    const COMMIT: &str = "3f9a2c1b7d4e5f60718293a4b5c6d7e8f9012345";
    const REVERT: &str = "9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d";

    /// A report from the real core: 10 minutes of baseline at 0.5% errors, then a change that
    /// makes 8% of requests fail, watched until the errors test fires.
    fn regressed_report() -> Value {
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

    fn command(args: &[&str], status: Option<i32>, stderr: &str) -> CommandRecord {
        CommandRecord {
            args: args.iter().map(|a| a.to_string()).collect(),
            status,
            stdout: String::new(),
            stderr: stderr.to_owned(),
        }
    }

    /// What `daemon::rollback::run` records for a revert, a push and a redeploy that worked.
    fn rollback_report() -> Value {
        let hook = HookOutcome {
            status: HookStatus::Succeeded,
            duration: Duration::from_millis(3200),
            pid: Some(4242),
            stdout: "building shop\n\u{1b}[32mdeployed\u{1b}[0m 9c8d7e6f5a to 3 hosts\n".into(),
            stderr: String::new(),
            dropped_bytes: 0,
            notes: vec![],
        };
        let report = RollbackReport {
            revert_commit: Some(REVERT.into()),
            escalation: None,
            steps: vec![
                json!({
                    "step": "git revert",
                    "result": "reverted",
                    "commit": REVERT,
                    "commands": [
                        command(&["status", "--porcelain"], Some(0), ""),
                        command(&["revert", "--no-edit", "--no-commit", COMMIT], Some(0), ""),
                        command(&["commit", "-F", "-"], Some(0), ""),
                    ],
                }),
                json!({
                    "step": "git push", "remote": "origin", "branch": "main", "result": "pushed",
                    "command": command(&["push", "--no-verify", "--", "origin", "HEAD:refs/heads/main"], Some(0), ""),
                }),
                json!({
                    "step": "redeploy hook",
                    "command": ["/usr/local/bin/redeploy", "--env", "prod west"],
                    "summary": hook.summary(),
                    "outcome": hook,
                }),
            ],
        };
        serde_json::to_value(report).unwrap()
    }

    fn change(state: ChangeState, note: &str, report: Option<Value>) -> ChangeRecord {
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
        }
    }

    #[test]
    fn a_rolled_back_change_is_explained() {
        let report = regressed_report();
        let errors = report["signals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["signal"] == "errors")
            .unwrap()
            .clone();
        assert_eq!(errors["regressed"], true);
        let rollback = rollback_report();
        let record = change(
            ChangeState::RolledBack,
            "reverted and redeployed; the service is back to its baseline",
            Some(report.clone()),
        );
        let email = render_alert("shop", &record, Some(&rollback));
        let body = &email.text_body;
        println!("{}\n\n{body}", email.subject);

        assert_eq!(
            email.subject,
            "[guardian] shop: rolled back \u{2014} commit 3f9a2c1b7d"
        );
        assert_eq!(email.message_id, "<chg_0123456789ab.rolled_back@guardian>");
        // The first line says what happened and what guardian did.
        let first = body.lines().next().unwrap();
        assert!(
            first.starts_with("Commit 3f9a2c1b7d made shop worse (errors "),
            "{first}"
        );
        assert!(
            first.contains("Guardian reverted it (revert commit 9c8d7e6f5a)"),
            "{first}"
        );
        assert!(first.contains("back to its baseline"), "{first}");
        // What changed.
        for text in [
            COMMIT,
            "ai (pattern: retry-wrapper)",
            "wrap payment calls in retries",
            "2025-11-24 16:00:00 UTC (unix 1764000000)",
        ] {
            assert!(body.contains(text), "missing {text:?}");
        }
        // The evidence, with the rates and counts from the report.
        let rate = |side: &str| percent(errors[side]["rate"].as_f64());
        let before = format!(
            "before:   {:>6}  ({} of {} requests)",
            rate("baseline"),
            count(errors["baseline"]["events"].as_u64()),
            count(errors["baseline"]["requests"].as_u64())
        );
        assert!(body.contains(&before), "missing {before:?}");
        let after = format!(
            "after:    {:>6}  ({} of {} requests)",
            rate("after"),
            count(errors["after"]["events"].as_u64()),
            count(errors["after"]["requests"].as_u64())
        );
        assert!(body.contains(&after), "missing {after:?}");
        assert!(body.contains("Errors (share of failed requests): WORSE"));
        let decided = report["decided_at"].as_f64().unwrap() - T0;
        assert!(decided > 0.0);
        assert!(
            body.contains(&format!("decided:  {} after the change", secs(decided))),
            "{body}"
        );
        let e = format!(
            "e-value:  {} against a threshold of {} (crossed",
            number(errors["e_value"].as_f64()),
            number(errors["e_value_threshold"].as_f64())
        );
        assert!(body.contains(&e), "missing {e:?}");
        assert!(body.contains("a rise to 1.10x is tolerated"));
        assert!(body.contains("Latency (the whole distribution): not shown worse"));
        assert!(body.contains("p50: "));
        // What guardian did: the commands with their status, the hook and its output.
        for text in [
            "1. git revert: reverted; revert commit 9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d",
            &format!("$ git revert --no-edit --no-commit {COMMIT}   [exit 0]"),
            "$ git commit -F -   [exit 0]",
            "2. git push to origin main: pushed",
            "3. redeploy hook: exit 0 after 3.2 s",
            "$ /usr/local/bin/redeploy --env 'prod west'",
            "| \\x1b[32mdeployed\\x1b[0m 9c8d7e6f5a to 3 hosts",
            &format!("Revert commit: {REVERT}"),
        ] {
            assert!(body.contains(text), "missing {text:?} in\n{body}");
        }
        // How to undo the undo.
        let undo = body
            .split("How to undo the undo")
            .nth(1)
            .expect("an undo section");
        for text in [
            &format!("git revert {REVERT}"),
            "git push origin HEAD:main",
            "run the redeploy hook again: /usr/local/bin/redeploy --env 'prod west'",
            &format!("re-deploy the original commit {COMMIT}"),
            "guardian status",
        ] {
            assert!(undo.contains(text), "missing {text:?} in\n{undo}");
        }
        assert!(body.contains("Change id: chg_0123456789ab"));
        // Rendering is deterministic: a resend after a crash is the same email.
        assert_eq!(render_alert("shop", &record, Some(&rollback)), email);
    }

    #[test]
    fn an_escalation_says_why_in_the_subject_and_first_line() {
        let report = regressed_report();
        let conflict = json!({
            "revert_commit": null,
            "escalation": "reverting 3f9a.. conflicts with later commits in src/pay.rs; the revert was aborted and the working tree is exactly as it was",
            "steps": [{
                "step": "git revert", "result": "conflict", "files": ["src/pay.rs"],
                "tree_restored": true,
                "commands": [command(&["revert", "--no-commit", COMMIT], Some(1), "error: could not revert 3f9a2c1\nhint: after resolving the conflicts")],
            }],
        });
        let record = change(ChangeState::Escalated, "x", Some(report.clone()));
        let email = render_alert("shop", &record, Some(&conflict));
        assert_eq!(
            email.subject,
            "[guardian] shop: escalated: revert conflicts \u{2014} commit 3f9a2c1b7d"
        );
        assert_eq!(email.message_id, "<chg_0123456789ab.escalated@guardian>");
        let body = &email.text_body;
        assert!(
            body.starts_with("ACTION NEEDED: commit 3f9a2c1b7d made shop worse"),
            "{body}"
        );
        assert!(
            body.contains("CONFLICT in src/pay.rs; aborted; the working tree is exactly as it was")
        );
        assert!(body.contains("[exit 1]"));
        assert!(body.contains("| hint: after resolving the conflicts"));
        assert!(body.contains("No revert commit was made."));
        assert!(!body.contains("How to undo the undo"));
        assert!(body.contains(&format!("git revert {COMMIT}   (resolve any conflicts")));

        // A hook that timed out.
        let mut timed_out = rollback_report();
        timed_out["escalation"] = json!("the revert is committed but the redeploy hook failed");
        timed_out["steps"][2]["outcome"]["status"] = json!({"kind": "timed_out", "timeout": {"secs": 60, "nanos": 0}, "code": null, "signal": 9});
        let email = render_alert("shop", &record, Some(&timed_out));
        assert!(
            email.subject.contains("escalated: redeploy hook timed out"),
            "{}",
            email.subject
        );
        assert!(
            email.text_body.contains("redeploy hook: FAILED: "),
            "{}",
            email.text_body
        );
        assert!(email.text_body.contains("How to undo the undo"));

        // Reverted and redeployed, but the service stayed worse.
        let record = change(
            ChangeState::Escalated,
            "the revert did not help: after the redeploy the service is still worse",
            Some(report),
        );
        let email = render_alert("shop", &record, Some(&rollback_report()));
        assert!(
            email.subject.contains("escalated: revert did not help"),
            "{}",
            email.subject
        );
        assert!(email
            .text_body
            .contains("Handed to a person because: the revert did not help"));
    }

    #[test]
    fn a_regression_without_rollback_and_odd_inputs() {
        let mut record = change(ChangeState::Regressed, "n", Some(regressed_report()));
        record.commit = "abcdef0123456789..0123456789abcdef".into();
        record.pattern = None;
        let email = render_alert("shop\r\nBcc: x@evil.example", &record, None);
        assert!(!email.subject.contains('\n') && !email.subject.contains('\r'));
        assert!(email
            .subject
            .ends_with("regressed \u{2014} commits abcdef0123..0123456789"));
        assert!(email.text_body.contains("Rollback is not configured"));
        assert!(email
            .text_body
            .contains("rollback is not configured ([daemon.rollback]"));
        // No report, a rollback report of an unexpected shape: still an email, not a panic.
        let record = change(ChangeState::Escalated, "guardian stopped between ...", None);
        let email = render_alert("shop", &record, Some(&json!({"steps": "?"})));
        assert!(email.text_body.contains("No evidence was recorded"));
        let email = render_alert("shop", &record, None);
        assert!(
            email.subject.contains("guardian restarted mid-rollback"),
            "{}",
            email.subject
        );
        assert_eq!(
            message_id("chg_1", "rolled_back"),
            "<chg_1.rolled_back@guardian>"
        );
        assert_eq!(message_id("a>b c", "x"), "<a_b_c.x@guardian>");
    }

    #[test]
    fn retries_back_off_to_half_an_hour() {
        let delays: Vec<f64> = (1..=8).map(retry_delay).collect();
        assert_eq!(
            delays,
            [30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1800.0, 1800.0]
        );
        assert_eq!(retry_delay(0), 30.0);
        assert_eq!(retry_delay(u32::MAX), 1800.0);
    }

    /// One email as the SMTP server received it.
    #[derive(Clone, Debug)]
    struct Received {
        from: String,
        to: Vec<String>,
        data: Vec<u8>,
    }

    /// Collects what a real SMTP server (mailin) receives; can refuse recipients.
    #[derive(Clone, Default)]
    struct Collector {
        inbox: Arc<Mutex<Vec<Received>>>,
        refuse_rcpt: bool,
        current: Option<Received>,
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
    fn serve(listener: TcpListener, collector: Collector) {
        std::thread::spawn(move || {
            let mut server = mailin_embedded::Server::new(collector);
            server
                .with_name("mx.test")
                .with_num_threads(2)
                .with_tcp_listener(listener);
            let _ = server.serve();
        });
    }

    fn settings(addr: SocketAddr) -> MailSettings {
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
    fn wait_for(inbox: &Arc<Mutex<Vec<Received>>>, n: usize, patience: Duration) -> Vec<Received> {
        let deadline = Instant::now() + patience;
        loop {
            let got = inbox.lock().unwrap().clone();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sample_email() -> Email {
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

    #[test]
    fn an_alert_with_a_post_mortem_goes_through_the_outbox_as_text_and_html() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Collector::default();
        let inbox = collector.inbox.clone();
        serve(listener, collector);
        let settings = settings(addr);
        let mailer = Mailer::new(&settings).unwrap();
        let mut store = Store::open_in_memory().unwrap();

        let record = change(
            ChangeState::RolledBack,
            "reverted and redeployed; the service is back to its baseline",
            Some(regressed_report()),
        );
        let plain = render_alert("shop", &record, Some(&rollback_report()));
        // A chart's polyline is one line far longer than SMTP allows (998 characters).
        let html = format!(
            "<!DOCTYPE html><html><body><h1>Post-mortem \u{2014} caf\u{e9}</h1><svg><polyline \
             points=\"{}\"/></svg></body></html>",
            "100.5,200.5 ".repeat(500).trim_end()
        );
        let html = html.as_str();
        let email = render_alert_with_postmortem(
            "shop",
            &record,
            Some(&rollback_report()),
            Some(html.to_owned()),
        );
        // The text is the whole alert, plus one line saying where the post-mortem is.
        let pointer = format!(
            "Post-mortem: in this email's HTML part, or guardian postmortem {} --config <your \
             guardian.toml>\n",
            record.id
        );
        assert!(email.text_body.contains(&pointer), "{}", email.text_body);
        assert_eq!(email.text_body.replacen(&pointer, "", 1), plain.text_body);
        assert_eq!(email.html.as_deref(), Some(html));
        assert_eq!(
            render_alert_with_postmortem("shop", &record, Some(&rollback_report()), None),
            plain
        );

        assert!(enqueue(&mut store, &settings, None, &email, T0).unwrap());
        let queued = store.get_email(&email.message_id).unwrap().unwrap();
        assert_eq!(queued.html.as_deref(), Some(html));
        let stats = deliver_due(&mut store, &mailer, T0);
        assert_eq!((stats.sent, stats.failed), (1, 0), "{stats:?}");

        let got = wait_for(&inbox, 1, Duration::from_secs(10));
        assert_eq!(got.len(), 1);
        let parsed = mail_parser::MessageParser::default()
            .parse(&got[0].data)
            .unwrap();
        let content_type = mail_parser::MimeHeaders::content_type(&parsed).unwrap();
        assert_eq!(
            (content_type.ctype(), content_type.subtype()),
            ("multipart", Some("alternative"))
        );
        let text = parsed.body_text(0).unwrap().replace("\r\n", "\n");
        assert_eq!(text.trim_end(), email.text_body.trim_end());
        let received_html = parsed.body_html(0).unwrap().replace("\r\n", "\n");
        assert_eq!(received_html.trim_end(), html);
    }

    #[test]
    fn the_mailer_delivers_to_a_real_smtp_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Collector::default();
        let inbox = collector.inbox.clone();
        serve(listener, collector);

        let mailer = Mailer::new(&settings(addr)).unwrap();
        assert_eq!(
            mailer.recipients(),
            ["oncall@example.com", "lead@example.com"]
        );
        let email = sample_email();
        mailer.send(&email).unwrap();

        let got = wait_for(&inbox, 1, Duration::from_secs(10));
        assert_eq!(got.len(), 1);
        let received = &got[0];
        assert_eq!(received.from, "guardian@example.com");
        assert_eq!(received.to, ["oncall@example.com", "lead@example.com"]);
        let parsed = mail_parser::MessageParser::default()
            .parse(&received.data)
            .expect("a parsable message");
        assert_eq!(
            parsed.subject(),
            Some("[guardian] shop: rolled back \u{2014} commit 3f9a2c1b7d")
        );
        assert_eq!(
            parsed.message_id(),
            Some("chg_0123456789ab.rolled_back@guardian")
        );
        let from = parsed.from().unwrap().first().unwrap();
        assert_eq!(from.address(), Some("guardian@example.com"));
        assert_eq!(from.name(), Some("Guardian"));
        let to: Vec<_> = parsed
            .to()
            .unwrap()
            .iter()
            .filter_map(|a| a.address())
            .collect();
        assert_eq!(to, ["oncall@example.com", "lead@example.com"]);
        assert_eq!(
            parsed.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-generated")
        );
        assert!(parsed.date().is_some());
        let body = parsed.body_text(0).unwrap().replace("\r\n", "\n");
        // The body arrives as it was written (line endings aside), dots included.
        assert_eq!(body.trim_end(), email.text_body.trim_end());
        assert!(body.contains(&format!("git revert {REVERT}")));
        assert!(body.contains("\n.dot at the start\n..two dots\n.\n"));
    }

    #[test]
    fn an_alert_waits_out_a_server_that_is_down_and_is_sent_once_it_is_up() {
        // A port nothing listens on (bound, then closed).
        let addr = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let mut store = Store::open_in_memory().unwrap();
        let id = store
            .insert_change(
                &NewChange {
                    commit: COMMIT.into(),
                    kind: ChangeKind::Ai,
                    pattern: None,
                    summary: None,
                    landed_at: T0,
                },
                T0,
            )
            .unwrap()
            .id;
        let settings = settings(addr);
        let mailer = Mailer::new(&settings).unwrap();
        let email = Email {
            message_id: message_id(&id, "rolled_back"),
            ..sample_email()
        };
        assert!(enqueue(&mut store, &settings, Some(&id), &email, T0 + 100.0).unwrap());
        // Queued again after a crash: still one.
        assert!(!enqueue(&mut store, &settings, Some(&id), &email, T0 + 101.0).unwrap());
        assert_eq!(store.pending_emails().unwrap(), 1);

        let stats = deliver_due(&mut store, &mailer, T0 + 100.0);
        assert_eq!(
            (stats.sent, stats.failed, stats.pending),
            (0, 1, 1),
            "{stats:?}"
        );
        let queued = store.get_email(&email.message_id).unwrap().unwrap();
        assert_eq!(queued.attempts, 1);
        assert_eq!(queued.sent_at, None);
        assert_eq!(queued.next_attempt_at, T0 + 130.0);
        let error = queued.last_error.unwrap();
        assert!(error.contains(&addr.port().to_string()), "{error}");
        assert!(error.to_lowercase().contains("connection"), "{error}");
        assert!(
            stats.errors[0].contains("attempt 1; next in 30 s"),
            "{stats:?}"
        );

        // Not due yet: nothing is tried.
        let stats = deliver_due(&mut store, &mailer, T0 + 120.0);
        assert_eq!((stats.sent, stats.failed, stats.pending), (0, 0, 1));

        // Still down at the next attempt: the wait doubles.
        let stats = deliver_due(&mut store, &mailer, T0 + 130.0);
        assert_eq!(stats.failed, 1);
        let queued = store.get_email(&email.message_id).unwrap().unwrap();
        assert_eq!((queued.attempts, queued.next_attempt_at), (2, T0 + 190.0));

        // The server comes up on that port.
        let listener = TcpListener::bind(addr).unwrap();
        let collector = Collector::default();
        let inbox = collector.inbox.clone();
        serve(listener, collector);
        let stats = deliver_due(&mut store, &mailer, T0 + 200.0);
        assert_eq!(
            (stats.sent, stats.failed, stats.pending),
            (1, 0, 0),
            "{stats:?}"
        );
        let sent = store.get_email(&email.message_id).unwrap().unwrap();
        assert_eq!((sent.attempts, sent.sent_at), (3, Some(T0 + 200.0)));
        let got = wait_for(&inbox, 1, Duration::from_secs(10));
        assert_eq!(got.len(), 1);
        let parsed = mail_parser::MessageParser::default()
            .parse(&got[0].data)
            .unwrap();
        assert_eq!(
            parsed.message_id(),
            Some(&email.message_id[1..email.message_id.len() - 1])
        );

        // Nothing more to send, ever, for that one.
        let stats = deliver_due(&mut store, &mailer, T0 + 10_000.0);
        assert_eq!((stats.sent, stats.failed, stats.pending), (0, 0, 0));
        assert_eq!(wait_for(&inbox, 2, Duration::from_millis(300)).len(), 1);
        let kinds: Vec<String> = store
            .events_for(&id)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["change_created", "email_queued", "email_sent"]);
    }

    #[test]
    fn a_refusing_server_keeps_the_alert_queued_with_its_reply() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Collector {
            refuse_rcpt: true,
            ..Collector::default()
        };
        let inbox = collector.inbox.clone();
        serve(listener, collector);
        let mut store = Store::open_in_memory().unwrap();
        let settings = settings(addr);
        let mailer = Mailer::new(&settings).unwrap();
        let email = sample_email();
        match mailer.send(&email) {
            Err(MailError::Send {
                permanent, error, ..
            }) => {
                assert!(permanent, "{error}");
                assert!(error.contains("550"), "{error}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        enqueue(&mut store, &settings, None, &email, T0).unwrap();
        for (i, now) in [T0, T0 + 30.0, T0 + 90.0].into_iter().enumerate() {
            let stats = deliver_due(&mut store, &mailer, now);
            assert_eq!((stats.failed, stats.pending), (1, 1), "{stats:?}");
            let queued = store.get_email(&email.message_id).unwrap().unwrap();
            assert_eq!(queued.attempts, i as u32 + 1);
            assert!(queued.last_error.unwrap().contains("550"));
        }
        assert!(inbox.lock().unwrap().is_empty());
    }

    #[test]
    fn the_password_is_read_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "127.0.0.1:2525".parse().unwrap();
        let mut s = settings(addr);
        s.auth = Some(MailAuth {
            username: "guardian".into(),
            password_file: dir.path().join("missing"),
        });
        let e = Mailer::new(&s).unwrap_err().to_string();
        assert!(e.contains("cannot read the SMTP password file"), "{e}");
        assert!(e.contains("missing"), "{e}");
        let file = dir.path().join("password");
        std::fs::write(&file, "\n").unwrap();
        s.auth.as_mut().unwrap().password_file = file.clone();
        let e = Mailer::new(&s).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        std::fs::write(&file, "s3cret with spaces\nignored\n").unwrap();
        assert_eq!(read_password(&file).unwrap(), "s3cret with spaces");
        let mailer = Mailer::new(&s).unwrap();
        assert!(!format!("{mailer:?}").contains("s3cret"));
        // TLS settings build without touching the network.
        for security in [MailSecurity::StartTls, MailSecurity::Tls] {
            s.security = security;
            s.smtp_host = "smtp.example.com".into();
            Mailer::new(&s).unwrap();
        }
    }
}
