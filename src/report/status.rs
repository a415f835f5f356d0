//! `guardian status` and `guardian notify` for a person: what is watched and how it is going,
//! the baseline a change is (or would be) judged against, what was decided lately, how the
//! logs, scrapes and emails are doing. Pure: the daemon's answer, read into its `api` type
//! (`api::read`, which says which part of an answer does not read), in; text out. Every
//! string in it is shown through `display`.

use std::fmt::Write as _;

use super::evidence;
use super::units::{self, count, duration, evalue, offset};
use crate::api::{AgentStatus, ChangeState, ChangeView, SentryStatus, Status};
use crate::core::{BaselinePreview, BaselineWindow, DeployWindow, Report, RouteBaseline};
use crate::display;

/// The evidence of a change just notified (the `live` of the daemon's answer): the baseline it
/// is judged against. Empty when the answer has none.
pub fn notified(change: &ChangeView) -> String {
    change
        .live
        .as_ref()
        .map(report_baseline)
        .unwrap_or_default()
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

/// What Sentry said: when it last did, and the issues it first saw since the watched change
/// landed (or in the last day), each with where in the code.
fn sentry_text(s: &SentryStatus, now: f64, watching: bool) -> String {
    let t = |text: &str| display::line(text).into_owned();
    let mut out = String::new();
    let heard = match s.last_delivery_at {
        Some(at) => format!("last delivery {} ago", duration(now - at)),
        None => "no delivery in the last day (is the integration's webhook URL this \
                 guardian's /v1/webhooks/sentry?)"
            .to_owned(),
    };
    let since = if watching {
        "since the change landed"
    } else {
        "in the last day"
    };
    let n = s.new_issues_total.max(s.new_issues.len() as u64);
    let _ = writeln!(
        out,
        "sentry: {heard}; {} new issue{} {since}{}",
        if n == 0 {
            "no".to_owned()
        } else {
            n.to_string()
        },
        if n == 1 { "" } else { "s" },
        match n {
            0 => String::new(),
            n if n > s.new_issues.len() as u64 => {
                format!(" (the newest {} shown):", s.new_issues.len())
            }
            _ => ":".to_owned(),
        }
    );
    for issue in &s.new_issues {
        let _ = writeln!(
            out,
            "  {}{}  first seen {}  {}{}",
            t(issue.short_id.as_deref().unwrap_or(&issue.id)),
            match issue.status.as_deref() {
                Some(status) if status != "unresolved" => format!(" ({})", t(status)),
                _ => String::new(),
            },
            if watching {
                format!("{} after the change", offset(issue.first_seen - s.since))
            } else {
                format!("{} ago", duration(now - issue.first_seen))
            },
            t(&issue.title),
            match issue.files.first() {
                Some(file) => format!("  ({})", t(file)),
                None => String::new(),
            }
        );
    }
    if let Some(p) = &s.poll {
        out.push_str(&sentry_poll_text(p, now));
    }
    if let Some(r) = &s.releases {
        let list = |counts: &[(String, u64)]| match counts.len() {
            0 => "none that said their release".to_owned(),
            _ => counts
                .iter()
                .map(|(release, n)| format!("{} {n}", t(release)))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let _ = writeln!(
            out,
            "  events per release, {} since the change: {}; the {} before it: {}",
            duration(r.span_secs),
            list(&r.after),
            duration(r.span_secs),
            list(&r.before)
        );
    }
    out
}

/// Sentry's API poller: how far it reached, what it took, and what went wrong.
fn sentry_poll_text(p: &crate::api::SentryPollStatus, now: f64) -> String {
    let t = |text: &str| display::line(text).into_owned();
    let ago = |at: Option<f64>| match at {
        Some(at) => format!("{} ago", duration(now - at)),
        None => "never".to_owned(),
    };
    let taken = format!(
        "{} row{} read ({} skipped), {} new event{} in the last poll",
        p.rows_total,
        if p.rows_total == 1 { "" } else { "s" },
        p.rows_skipped_total,
        p.last_new_events,
        if p.last_new_events == 1 { "" } else { "s" },
    );
    match &p.last_error {
        None => format!(
            "  api: {} polled {}, events up to {}; {taken}\n",
            t(&p.target),
            ago(p.last_poll_at),
            ago(p.reached),
        ),
        Some(e) => format!(
            "  api: {} FAILING ({} poll{} in a row; last worked {}): {}\n  api: events up to {}; {taken}\n",
            t(&p.target),
            p.failures,
            if p.failures == 1 { "" } else { "s" },
            ago(p.last_ok_at),
            t(e),
            ago(p.reached),
        ),
    }
}

/// The flag_off action's track record and its latest attempts.
fn flag_off_text(f: &crate::api::FlagOffStatus) -> String {
    let t = |text: &str| display::line(text).into_owned();
    let n = &f.tally;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "flag_off{}: {} verified, {} did not help, {} failed, {} shadow, {} done on request, \
         {} refused{} (at most {} an hour)",
        if f.shadow { " (shadow)" } else { "" },
        n.verified,
        n.did_not_help,
        n.failed,
        n.shadow,
        n.done,
        n.refused,
        if n.cut_short > 0 {
            format!(", {} cut short", n.cut_short)
        } else {
            String::new()
        },
        f.max_per_hour
    );
    for a in &f.recent {
        let _ = writeln!(
            out,
            "  {}  flag {}  {}  by {}{}",
            crate::report::units::when(a.started_at),
            t(&a.flag),
            a.outcome.as_str(),
            t(&a.requested_by),
            a.change_id
                .as_deref()
                .map(|c| format!(" for {}", t(c)))
                .unwrap_or_default()
        );
    }
    out
}

/// The agent's runs: those under way, how many this hour, and the latest one's end.
fn agent_text(a: &AgentStatus, now: f64) -> String {
    let t = |text: &str| display::line(text).into_owned();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "agent: {} run{} in the last hour (at most {}){}",
        a.runs_last_hour,
        if a.runs_last_hour == 1 { "" } else { "s" },
        a.max_runs_per_hour,
        if a.running.is_empty() {
            "; none under way"
        } else {
            ""
        }
    );
    for r in &a.running {
        let _ = writeln!(
            out,
            "  running {} on issue {} for {}",
            t(&r.run),
            t(&r.issue),
            duration(now - r.started_at)
        );
    }
    if let Some(last) = a.last.as_ref().filter(|l| l.ended_at.is_some()) {
        let _ = writeln!(
            out,
            "  last run {} on issue {} ({}): {} {} ago",
            t(&last.id),
            t(&last.issue_id),
            t(&last.reason),
            t(&last.outcome.as_deref().unwrap_or("ended").replace('_', " ")),
            duration(now - last.ended_at.unwrap_or(now))
        );
    }
    out
}

/// The status for a person: what is watched, what was decided, how the logs are read.
/// How far a watch has got: seconds elapsed since `started`, of its whole length. The length
/// is the configured one (`watch_secs`): the watch ends on the next whole second after it, and
/// that fraction of a second is not shown as one more ("241 s" for 240). `None` when the report
/// gives no end.
pub fn watch_progress(r: &Report, started: f64, now: f64) -> Option<(f64, f64)> {
    let total = (r.watch_ends_at - r.change_at).floor();
    (total > 0.0).then(|| ((now - started).clamp(0.0, total), total))
}

pub fn status(s: &Status) -> String {
    // Every string in the status may come from outside (a summary, a note with git's output,
    // a bad log line, a scrape error): shown as one visible line each.
    let t = |text: &str| display::line(text).into_owned();
    let mut out = String::new();
    let now = s.now;
    let _ = writeln!(out, "service {}", t(&s.service));
    let _ = match s.last_tick {
        Some(at) => writeln!(
            out,
            "decision loop: last tick {} ago",
            duration((now - at).max(0.0))
        ),
        None => writeln!(out, "decision loop: NOT TICKED YET"),
    };
    match &s.watching {
        Some(w) => {
            let c = &w.record;
            let verifying = matches!(c.state, ChangeState::Verifying | ChangeState::FlaggingOff);
            // A recovery check counts from its own start, not the change's.
            let started = match (verifying, &w.live) {
                (true, Some(r)) => r.change_at,
                _ => c.landed_at,
            };
            let doing = match c.state {
                ChangeState::Verifying => "checking the recovery after rolling back".to_owned(),
                ChangeState::FlaggingOff => format!(
                    "checking the recovery after turning flag {} off",
                    t(c.flag.as_deref().unwrap_or("?"))
                ),
                _ => "watching".to_owned(),
            };
            // How far the watch has got: elapsed of its whole length, when the report says.
            let progress = match w
                .live
                .as_ref()
                .and_then(|r| watch_progress(r, started, now))
            {
                Some((elapsed, total)) => {
                    format!(
                        "{:.0} s of {:.0} s ({:.0}%)",
                        elapsed,
                        total,
                        100.0 * elapsed / total
                    )
                }
                None => format!("{:.0} s", now - started),
            };
            let _ = writeln!(
                out,
                "{doing} {} (commit {}, {}) for {progress}",
                t(&c.id),
                t(&c.commit),
                c.kind,
            );
            if let Some(live) = &w.live {
                out.push_str(&report_baseline(live));
                // Before against after, or the canary against the rest serving beside it.
                let (now, then, theirs) = match live.design {
                    crate::core::Design::BeforeAfter => ("now", "before", "the baseline's"),
                    crate::core::Design::Concurrent => ("canary", "rest", "the rest's"),
                };
                for sig in &live.signals {
                    // The rate now against the baseline's, where the signal is a rate.
                    let rates = match (sig.baseline.rate, sig.after.rate, sig.effect_ratio) {
                        _ if sig.signal == crate::core::SignalKind::Latency => sig
                            .effect_ratio
                            .map(|r| format!("median {} {theirs}  ", units::ratio(r)))
                            .unwrap_or_default(),
                        (Some(before), Some(after), _) => format!(
                            "{} {now}, {} {then}  ",
                            units::percent(Some(after)),
                            units::percent(Some(before))
                        ),
                        (Some(before), None, _) => {
                            format!("no requests yet, {} {then}  ", units::percent(Some(before)))
                        }
                        _ => String::new(),
                    };
                    let _ = writeln!(
                        out,
                        "  {:<14} {rates}e-value {} of {}",
                        evidence::signal_key(sig.signal),
                        evalue(sig.e_value),
                        evalue(sig.e_value_threshold)
                    );
                }
                if let Some(claim) = &live.claim {
                    let _ = writeln!(
                        out,
                        "  claims to fix: {}",
                        t(&evidence::claim_outcome(claim))
                    );
                }
            }
        }
        None => {
            let _ = writeln!(
                out,
                "no change being watched; a change notified now gets this"
            );
            if let Some(preview) = &s.baseline_now {
                out.push_str(&preview_baseline(preview));
            }
        }
    }
    if let Some(at) = s.deploy_starting {
        let _ = writeln!(
            out,
            "a deploy said it is starting {} ago (notify --starting): the next notify takes its \
             deploy window from then",
            duration(now - at)
        );
    }
    if let Some(sentry) = &s.sentry {
        out.push_str(&sentry_text(sentry, now, s.watching.is_some()));
    }
    if let Some(agent) = &s.agent {
        out.push_str(&agent_text(agent, now));
    }
    if let Some(health) = &s.health {
        out.push_str(&super::health::health_text(health, now));
    }
    if let Some(flags) = &s.flag_off {
        out.push_str(&flag_off_text(flags));
    }
    if let Some((by, why, _since)) = &s.deploys_paused {
        let _ = writeln!(
            out,
            "DEPLOYS OF PROPOSALS ARE PAUSED by {}: {} (guardian resume lets them go)",
            t(by),
            t(why)
        );
    }
    if let Some(id) = &s.deploying {
        let _ = writeln!(out, "deploying proposal {}", t(id));
    }
    if s.proposals_approved > 0 {
        let n = s.proposals_approved;
        let _ = writeln!(
            out,
            "{n} approved proposal{} waiting to deploy{}",
            if n == 1 { "" } else { "s" },
            match (&s.watching, &s.deploys_paused, &s.deploying) {
                (_, Some(_), _) => " (paused)".to_owned(),
                (_, _, Some(_)) => " after the one deploying".to_owned(),
                (Some(w), _, _) => format!(
                    " once the watch of {} ends (guardian deploys one change at a time)",
                    t(&w.record.id)
                ),
                _ => String::new(),
            }
        );
    }
    match s.proposals_waiting {
        0 => {}
        n => {
            let _ = writeln!(
                out,
                "{n} proposal{} waiting for a person (guardian proposals)",
                if n == 1 { "" } else { "s" }
            );
        }
    }
    if !s.recent.is_empty() {
        let _ = writeln!(out, "recent changes:");
        for c in &s.recent {
            let _ = writeln!(
                out,
                "  {}  {:<12}  commit {}{}  {}",
                t(&c.id),
                c.state.as_str(),
                t(&c.commit),
                c.flag
                    .as_deref()
                    .map(|f| format!("  flag {}", t(f)))
                    .unwrap_or_default(),
                t(c.note.as_deref().unwrap_or(""))
            );
        }
    }
    for target in &s.scrapes {
        let _ = writeln!(
            out,
            "scrape {}: {}{}{}",
            t(&target.name),
            target
                .age_secs
                .map_or("no successful scrape yet".to_owned(), |a| format!(
                    "last success {a:.0} s ago"
                )),
            // Read from Prometheus's query API: judged only as far as its traffic is in.
            target
                .data_until
                .map(|d| format!(
                    "; traffic in up to {} s ago (judged no later)",
                    (s.now - d).max(0.0).round()
                ))
                .unwrap_or_default(),
            target
                .last_error
                .as_deref()
                .map(|e| format!("; last error: {}", t(e)))
                .unwrap_or_default()
        );
        if let Some(canary) = &target.canary {
            let label = t(&canary.label);
            // After a rollback the revert runs everywhere: the recovery check is every host's.
            let recovering = s.watching.as_ref().is_some_and(|w| {
                matches!(
                    w.record.state,
                    ChangeState::Verifying | ChangeState::FlaggingOff
                )
            });
            let _ = match (canary.values.as_slice(), s.watching.is_some()) {
                ([], _) => writeln!(
                    out,
                    "  no canary: the service as a whole, before against after (notify with \
                     --canary to compare {label} values against the rest)"
                ),
                (values, true) if recovering => writeln!(
                    out,
                    "  canary of the change: {label} {}; its recovery is judged on every host, \
                     before against after",
                    t(&values.join(", "))
                ),
                (values, true) => writeln!(
                    out,
                    "  canary: {label} {} against the rest",
                    t(&values.join(", "))
                ),
                // Nothing watched: what the last change named, not what the next one gets.
                (values, false) => writeln!(
                    out,
                    "  canary of the last change: {label} {}; a change notified without \
                     --canary gets {}",
                    t(&values.join(", ")),
                    match canary.configured.as_slice() {
                        [] => "none (the service as a whole)".to_owned(),
                        configured => format!("the config's, {}", t(&configured.join(", "))),
                    }
                ),
            };
        }
    }
    if s.pending_emails > 0 {
        let _ = writeln!(out, "alert emails waiting to be sent: {}", s.pending_emails);
        if let Some((error, tries)) = &s.pending_email_trouble {
            let _ = writeln!(
                out,
                "  last try failed ({tries} tries so far): {}",
                t(error)
            );
        }
    }
    if s.pending_notifications > 0 {
        let _ = writeln!(
            out,
            "notifications waiting to be sent: {}",
            s.pending_notifications
        );
        if let Some(error) = &s.pending_notification_trouble {
            let _ = writeln!(out, "  last try failed: {}", t(error));
        }
    }
    for src in &s.sources {
        let idle = src.idle_secs.map_or("nothing read yet".to_owned(), |i| {
            format!("last line {i:.0} s ago")
        });
        let _ = writeln!(
            out,
            "log {}: {}, {}, {} bad lines",
            t(&src.name),
            if src.tail.file_exists {
                "present"
            } else {
                "missing"
            },
            idle,
            src.bad_lines
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::api::{self, ScrapeStatus, SentryIssue, SourceStatus, TailStatus};
    use crate::report::testing::{change, expected, REVERT};

    const T0: f64 = 1_764_000_000.0;

    /// A report stored while watching: the healthy recording, 600 s into its watch.
    fn watching_report() -> Report {
        let text = include_str!("../../testdata/reports/watching.json");
        serde_json::from_str(text).unwrap()
    }

    /// The change watched, with its evidence so far.
    fn watched() -> ChangeView {
        let mut record = change(ChangeState::Watching, "", None);
        record.note = None;
        ChangeView {
            record,
            live: Some(watching_report()),
        }
    }

    fn answer(watching: Option<ChangeView>, baseline_now: Option<BaselinePreview>) -> Status {
        let mut recent = change(
            ChangeState::RolledBack,
            "reverted and redeployed;\u{1b}[2J the service is back",
            None,
        );
        recent.id = "chg_00aa11bb22cc".into();
        recent.commit = REVERT.into();
        Status {
            last_tick: Some(T0 + 600.2),
            service: "shop".into(),
            now: T0 + 600.4,
            watching,
            baseline_now,
            recent: vec![recent],
            sources: vec![SourceStatus {
                name: "access".into(),
                tail: TailStatus {
                    path: PathBuf::from("/var/log/shop/access.jsonl"),
                    position: Default::default(),
                    file_exists: true,
                    reading_rotated_file: false,
                    lines_read_total: 18_627,
                    skipped_long_lines: 0,
                    abandoned_partial_lines: 0,
                    truncations: 0,
                    rotations: 0,
                    buffered_bytes: 0,
                },
                bad_lines: 2,
                last_bad_line: Some("not json".into()),
                last_read_at: Some(T0 + 600.0),
                idle_secs: Some(0.4),
            }],
            scrapes: vec![ScrapeStatus {
                name: "app".into(),
                url: "http://127.0.0.1:9100/metrics".into(),
                last_error: Some("connection refused".into()),
                failures: 3,
                ..ScrapeStatus::default()
            }],
            pending_emails: 1,
            pending_email_trouble: Some((
                "sending email <x@guardian> via mx:25: timed out".into(),
                3,
            )),
            pending_notifications: 2,
            pending_notification_trouble: Some(
                "slack: http://127.0.0.1:9/: Connection Failed: Connect error: Connection refused"
                    .into(),
            ),
            deploying: None,
            proposals_waiting: 2,
            proposals_approved: 1,
            deploys_paused: None,
            deploy_starting: Some(T0 + 590.0),
            health: None,
            sentry: Some(SentryStatus {
                last_delivery_at: Some(T0 + 588.0),
                since: T0,
                new_issues: vec![SentryIssue {
                    id: "4504981122".into(),
                    short_id: Some("SHOP-API-1Z".into()),
                    title: "TypeError: unsupported operand\u{1b}[2J".into(),
                    culprit: Some("app.checkout.totals in apply_coupon".into()),
                    level: Some("error".into()),
                    status: Some("unresolved".into()),
                    substatus: Some("new".into()),
                    project: Some("shop-api".into()),
                    count: Some(3),
                    web_url: None,
                    first_seen: T0 + 12.5,
                    last_seen: Some(T0 + 40.0),
                    files: vec!["app/checkout/totals.py".into()],
                }],
                new_issues_total: 1,
                poll: Some(crate::api::SentryPollStatus {
                    target: "acme/shop-api".into(),
                    last_poll_at: Some(T0 + 598.0),
                    last_ok_at: Some(T0 + 400.0),
                    reached: Some(T0 + 390.0),
                    last_new_events: 0,
                    new_events_total: 42,
                    rows_total: 57,
                    rows_skipped_total: 1,
                    last_error: Some(
                        "Sentry's API refused the token (401: Invalid token)\u{1b}[2J".into(),
                    ),
                    failures: 3,
                    caught_up: true,
                }),
                releases: Some(crate::api::ReleaseEvents {
                    span_secs: 600.0,
                    after: vec![
                        ("shop-api@9c1e2f0".into(), 40),
                        ("shop-api@1f0e9d8".into(), 2),
                    ],
                    before: vec![("shop-api@1f0e9d8".into(), 6)],
                }),
            }),
            agent: Some(crate::api::AgentStatus {
                running: vec![crate::daemon::engine::RunningAgent {
                    run: "agr_0123456789ab".into(),
                    issue: "4504981122".into(),
                    started_at: T0 + 500.0,
                }],
                runs_last_hour: 2,
                max_runs_per_hour: 4,
                last: Some(crate::store::AgentRun {
                    id: "agr_00000000cafe".into(),
                    issue_id: "4504981000".into(),
                    reason: "new".into(),
                    started_at: T0 - 100.0,
                    ended_at: Some(T0 + 20.0),
                    outcome: Some("timed_out".into()),
                }),
            }),
            flag_off: Some(crate::api::FlagOffStatus {
                tally: crate::store::FlagTally {
                    verified: 2,
                    did_not_help: 1,
                    refused: 3,
                    ..Default::default()
                },
                max_per_hour: 6,
                shadow: false,
                recent: vec![crate::store::FlagAction {
                    id: "flg_0123456789ab".into(),
                    flag: "new-total".into(),
                    change_id: Some("chg_00aa11bb22cc".into()),
                    requested_by: "guardian".into(),
                    reason: "chg_00aa11bb22cc regressed".into(),
                    started_at: T0 + 100.0,
                    ended_at: Some(T0 + 130.0),
                    outcome: crate::daemon::supervisor::FlagOutcome::Verified,
                    note: None,
                }],
            }),
        }
    }

    /// `status` as the daemon sends it and the CLI reads it back.
    fn sent(status: &Status) -> serde_json::Value {
        serde_json::to_value(status).unwrap()
    }

    #[test]
    fn the_status_of_a_watch_shows_its_baseline_and_evidence() {
        let status = api::read(&sent(&answer(Some(watched()), None)), "status").unwrap();
        expected("status_watching.txt").assert_eq(&super::status(&status));
    }

    #[test]
    fn the_status_with_nothing_watched_shows_the_baseline_a_change_would_get() {
        let preview = BaselinePreview {
            window: BaselineWindow {
                from: Some(T0 - 150.0),
                to: Some(T0),
                covered_secs: 150.0,
                excluded_secs: 0.0,
                left_out: Vec::new(),
            },
            routes: vec![RouteBaseline {
                route: "/checkout".into(),
                requests: 12_500,
                errors: 3,
            }],
            notes: vec!["errors: the baseline holds 3 of them in 12500 requests".into()],
        };
        let status = api::read(&sent(&answer(None, Some(preview))), "status").unwrap();
        expected("status_idle.txt").assert_eq(&super::status(&status));
    }

    #[test]
    fn a_status_that_does_not_read_names_the_part_and_where_in_it() {
        let mut wire = sent(&answer(Some(watched()), None));
        *wire.pointer_mut("/watching/live/signals").unwrap() = "none".into();
        let e = api::read::<Status>(&wire, "status")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the daemon's status cannot be read: watching.live.signals: "),
            "{e}"
        );
        let mut wire = sent(&answer(None, None));
        *wire.pointer_mut("/sources/0/file_exists").unwrap() = serde_json::Value::Null;
        let e = api::read::<Status>(&wire, "status")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("the daemon's status cannot be read: "), "{e}");
        assert!(e.contains("sources[0]"), "{e}");
    }

    #[test]
    fn a_notified_change_shows_its_baseline() {
        let text = notified(&watched());
        assert!(
            text.starts_with("baseline: 1800 s (30 min 0 s) of known-good traffic, "),
            "{text}"
        );
        assert!(
            text.contains("deploy window: the 60 s before the change"),
            "{text}"
        );
        let mut record = watched();
        record.live = None;
        assert_eq!(notified(&record), "");
    }

    #[test]
    fn a_watch_s_length_is_the_configured_one_not_the_second_it_ends_on() {
        let mut r = watching_report();
        r.change_at = T0 + 0.4;
        r.watch_ends_at = (T0 + 0.4 + 240.0).ceil();
        assert_eq!(
            watch_progress(&r, r.change_at, T0 + 60.4),
            Some((60.0, 240.0))
        );
        assert_eq!(
            watch_progress(&r, r.change_at, T0 + 900.0),
            Some((240.0, 240.0))
        );
        r.watch_ends_at = r.change_at;
        assert_eq!(watch_progress(&r, r.change_at, T0), None);
    }

    #[test]
    fn a_canary_s_rates_are_the_canary_s_and_the_rest_s_not_now_and_before() {
        let mut w = watched();
        w.live.as_mut().unwrap().design = crate::core::Design::Concurrent;
        let text = super::status(&answer(Some(w), None));
        assert!(text.contains("1.10% canary, 0.93% rest"), "{text}");
        assert!(
            !text.contains("% now") && !text.contains("% before"),
            "{text}"
        );
    }

    #[test]
    fn a_canary_s_recovery_check_is_said_to_be_every_host_s() {
        let canary = |state: ChangeState| {
            let mut w = watched();
            w.record.state = state;
            let mut status = answer(Some(w), None);
            status.scrapes[0].canary = Some(crate::daemon::engine::CanaryNow {
                label: "instance".into(),
                values: vec!["10.0.0.3:8080".into()],
                configured: vec![],
            });
            super::status(&status)
        };
        let text = canary(ChangeState::Watching);
        assert!(
            text.contains("canary: instance 10.0.0.3:8080 against the rest"),
            "{text}"
        );
        let text = canary(ChangeState::Verifying);
        assert!(
            text.contains(
                "canary of the change: instance 10.0.0.3:8080; its recovery is judged on every \
                 host, before against after"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_recovery_check_after_a_flag_was_turned_off_is_not_called_a_watch() {
        let mut w = watched();
        w.record.state = ChangeState::FlaggingOff;
        w.record.flag = Some("new-total".into());
        let text = super::status(&answer(Some(w), None));
        assert!(
            text.lines()
                .nth(2)
                .unwrap()
                .starts_with("checking the recovery after turning flag new-total off chg_"),
            "{text}"
        );
    }
}
