//! The post-mortem of one change, written by guardian from its record: what happened, what
//! guardian did, the evidence, and a chart of the traffic around it.
//!
//! Pure: [`Postmortem::new`] takes values (the change, its decision log, the agent's claim and
//! the diff's facts when known, the policy's decision, the traffic series) and
//! [`Postmortem::markdown`], [`Postmortem::html`] and [`Postmortem::svg`] return text. No clock,
//! no IO; `guardian postmortem ID` and the daemon's alert read the store and call this.
//!
//! Both documents come from one document model (`super::document`), which escapes outside text
//! in one place per format; the chart is `super::chart`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::actions;
use super::chart::{chart, Marker};
use super::document::{self, code, strong, t, Block, Inline};
use super::evidence;
use super::text::short_commit;
use super::units;
use crate::core::watch::{LevelReport, Side};
use crate::core::{Report, SignalKind};
use crate::daemon::step::{Ending, Step};
use crate::daemon::supervisor::RecoveryCheck;
use crate::hook::HookStatus;
use crate::series::{SeriesPoint, BIN_SECS};
use crate::store::{ChangeRecord, ChangeState, EmailQueued, EventKind, EventRecord, StateChange};

/// What the agent (or person) said about the change when it was proposed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// `ai` or `human`.
    pub kind: Option<String>,
    /// The fix pattern claimed, e.g. `nil-check`, `timeout-bump`.
    pub pattern: Option<String>,
    pub summary: Option<String>,
    pub issue_url: Option<String>,
    /// Whether the proposer said it ran the tests; `None`: it did not say.
    pub tests_run: Option<bool>,
}

/// One file the diff touched.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiffFile {
    /// The path after the change (before it, for a deletion).
    pub path: String,
    /// The path before a rename or copy.
    pub old_path: Option<String>,
    /// `added`, `modified`, `deleted`, `renamed`, `copied`, `mode_change`.
    pub status: String,
    pub added: u64,
    pub removed: u64,
    pub binary: bool,
}

/// What the diff really did, as the policy module read it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiffFacts {
    pub files: Vec<DiffFile>,
    /// Commits in the patch series.
    pub commits: usize,
}

/// One risk factor of the policy's score.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RiskFactor {
    pub name: String,
    pub points: i64,
    pub why: String,
}

/// One policy rule that fired.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleFired {
    pub rule: String,
    /// e.g. `deny`, `needs_approval`.
    pub effect: String,
    pub message: String,
}

/// The trust policy's decision on the change before it deployed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyDecision {
    /// `deny`, `needs_approval` or `auto`.
    pub decision: String,
    pub risk_score: Option<i64>,
    /// A score below this may deploy alone.
    pub auto_below: Option<i64>,
    pub factors: Vec<RiskFactor>,
    pub rules: Vec<RuleFired>,
    /// When the diff does not do what the claimed pattern does: the policy's reason.
    pub pattern_mismatch: Option<String>,
    /// Who approved it, when a person did.
    pub approved_by: Option<String>,
}

/// Everything a post-mortem is written from. Built by the caller from the store.
#[derive(Clone, Debug)]
pub struct PostmortemInput {
    pub service: String,
    pub change: ChangeRecord,
    /// The change's decision log, in order ([`crate::store::Store::events_for`]).
    pub events: Vec<EventRecord>,
    pub claim: Option<Claim>,
    pub diff: Option<DiffFacts>,
    pub policy: Option<PolicyDecision>,
    /// The traffic series over [`chart_window`] ([`crate::store::Store::series_between`]).
    pub series: Vec<SeriesPoint>,
    /// Sentry issues first seen from the change's landing to the chart's end (`[daemon.sentry]`).
    pub sentry_issues: Vec<crate::sentry::Issue>,
    /// The Sentry issue the change claims to fix, as guardian last heard of it.
    pub fixes: Option<crate::sentry::Issue>,
    /// Issues seen before the change that fired at more than twice their rate after it.
    pub sentry_risen: Vec<RisenIssue>,
    /// Sentry's events per release after the change and over as long before it, when its
    /// events said their release.
    pub sentry_releases: Option<crate::api::ReleaseEvents>,
}

/// An issue seen before the change that fired more often after it: its events before (in the
/// baseline's spans) and after (in the watch), and the requests each are counted against.
#[derive(Clone, Debug)]
pub struct RisenIssue {
    pub issue: crate::sentry::Issue,
    pub before: crate::core::evidence::Counts,
    pub after: crate::core::evidence::Counts,
}

/// How far before the deploy the chart starts.
pub const CHART_BEFORE_SECS: i64 = 600;
/// How far after the last event the chart goes.
pub const CHART_AFTER_SECS: i64 = 120;
/// The chart goes at least this far after the deploy.
pub const CHART_MIN_AFTER_SECS: i64 = 300;
/// The chart never spans more than this after the deploy (a change watched for hours).
pub const CHART_MAX_AFTER_SECS: i64 = 6 * 3600;

/// The span of the chart, `[from, to)` in unix seconds on bin edges: ten minutes before the
/// deploy to two minutes after the last thing guardian did (at least five minutes after the
/// deploy, at most six hours). Fetch the series for it with `Store::series_between(from, to)`.
pub fn chart_window(change: &ChangeRecord, events: &[EventRecord]) -> (i64, i64) {
    let deploy = finite_or(change.landed_at, 0.0);
    let last = markers(change, events)
        .iter()
        .map(|m| m.at)
        .chain(events.iter().map(|e| e.at).filter(|t| t.is_finite()))
        .fold(deploy, f64::max)
        .min(deploy + CHART_MAX_AFTER_SECS as f64);
    let from = crate::series::bin_start(deploy) - CHART_BEFORE_SECS;
    let to = crate::series::bin_start(last) + BIN_SECS + CHART_AFTER_SECS;
    (
        from,
        to.max(from + CHART_BEFORE_SECS + CHART_MIN_AFTER_SECS),
    )
}

fn finite_or(v: f64, or: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        or
    }
}

/// Reads what a post-mortem needs from the store: the change, its decision log, and the
/// traffic series over [`chart_window`]. The one function here that reads anything; what the
/// proposal said (claim, diff, policy) is not in these tables, so it is left for the caller.
/// `Ok(None)` when there is no such change.
pub fn load(
    store: &crate::store::Store,
    service: &str,
    change_id: &str,
) -> Result<Option<PostmortemInput>, crate::store::StoreError> {
    let Some(change) = store.get_change(change_id)? else {
        return Ok(None);
    };
    let events = store.events_for(&change.id)?;
    let (from, to) = chart_window(&change, &events);
    let series = store.series_between(from, to)?;
    let mut sentry_issues = store.sentry_issues_since(change.landed_at, SENTRY_ISSUES_SHOWN)?;
    sentry_issues.retain(|i| i.first_seen < to as f64);
    sentry_issues.reverse();
    let fixes = match &change.fixes_issue {
        Some(id) => store.sentry_issue(id)?,
        None => None,
    };
    let sentry_risen = match evidence::stored(&change) {
        Ok(Some(report)) => risen_issues(store, &report, &sentry_issues)?,
        _ => Vec::new(),
    };
    let sentry_releases = {
        let at = change.landed_at;
        let span = (to as f64 - at).clamp(0.0, 86_400.0);
        let after = store.sentry_events_by_release(at, at + span, 3)?;
        let before = store.sentry_events_by_release(at - span, at, 3)?;
        (!after.is_empty() || !before.is_empty()).then_some(crate::api::ReleaseEvents {
            span_secs: span,
            after,
            before,
        })
    };
    Ok(Some(PostmortemInput {
        sentry_releases,
        sentry_issues,
        fixes,
        sentry_risen,
        service: service.to_owned(),
        change,
        events,
        claim: None,
        diff: None,
        policy: None,
        series,
    }))
}

/// The issue the change claims to fix: which it is, and what became of it after the change.
fn fixed_issue_section(doc: &mut Vec<Block>, input: &PostmortemInput, report: Option<&Report>) {
    let Some(id) = &input.change.fixes_issue else {
        return;
    };
    let mut which = vec![strong("Sentry issue "), code(id.clone())];
    if let Some(issue) = &input.fixes {
        if let Some(short) = &issue.short_id {
            which.push(t(" ("));
            which.push(code(short.clone()));
            which.push(t(")"));
        }
        which.push(t(format!(": {}", issue.title)));
        if let Some(file) = issue.files.first() {
            which.push(t(", in "));
            which.push(code(file.clone()));
        }
        if let Some(url) = &issue.web_url {
            which.push(t(" "));
            which.push(Inline::Link {
                text: url.clone(),
                url: url.clone(),
            });
        }
    }
    doc.push(Block::Paragraph(which));
    let outcome = match report.and_then(|r| r.claim.as_ref()) {
        Some(claim) => format!("{}.", evidence::claim_outcome(claim)),
        None => "Not judged: the watch ended before Sentry's events were counted.".to_owned(),
    };
    doc.push(Block::Paragraph(vec![t(outcome)]));
}

/// The issues seen before the change that fired at more than twice their baseline rate in the
/// watch (at least 3 events after it), counted as the watch counted Sentry's events: in the
/// baseline's spans and from the change to the decision, in whole 10-second bins.
fn risen_issues(
    store: &crate::store::Store,
    report: &Report,
    new: &[crate::sentry::Issue],
) -> Result<Vec<RisenIssue>, crate::store::StoreError> {
    use crate::core::evidence::Counts;
    let Some(signal) = report
        .signals
        .iter()
        .find(|s| s.signal == crate::core::SignalKind::SentryEvents)
    else {
        return Ok(Vec::new());
    };
    let bin = |t: f64| (t / BIN_SECS as f64).floor() * BIN_SECS as f64;
    let from = (report.change_at / BIN_SECS as f64).ceil() * BIN_SECS as f64;
    let to = bin(report.decided_at.unwrap_or(report.watch_ends_at));
    let mut risen = Vec::new();
    for (id, events) in store.sentry_events_by_issue(from, to, SENTRY_ISSUES_SHOWN)? {
        if events < 3 || new.iter().any(|i| i.id == id) {
            continue;
        }
        let mut before = 0;
        for span in report.baseline_window.covered() {
            before += store.sentry_events(&id, bin(span.from), bin(span.to))?;
        }
        let (before, after) = (
            Counts {
                requests: signal.baseline.requests,
                events: before,
            },
            Counts {
                requests: signal.after.requests,
                events,
            },
        );
        let more = match (before.rate(), after.rate()) {
            (Some(b), Some(a)) => a > 2.0 * b,
            _ => false,
        };
        if let (true, Some(issue)) = (more, store.sentry_issue(&id)?) {
            risen.push(RisenIssue {
                issue,
                before,
                after,
            });
        }
    }
    Ok(risen)
}

/// Issues seen before the change that fired more after it, with their rates before and after.
fn risen_section(doc: &mut Vec<Block>, input: &PostmortemInput) {
    let items = input
        .sentry_risen
        .iter()
        .map(|r| {
            let mut line = vec![
                code(
                    r.issue
                        .short_id
                        .clone()
                        .unwrap_or_else(|| r.issue.id.clone()),
                ),
                t(format!(" {}", r.issue.title)),
            ];
            if let Some(file) = r.issue.files.first() {
                line.push(t(" ("));
                line.push(code(file.clone()));
                line.push(t(")"));
            }
            line.push(t(format!(
                ": {} events in {} requests after the change ({}), {} in {} before ({})",
                units::count(r.after.events),
                units::count(r.after.requests),
                units::percent(r.after.rate()),
                units::count(r.before.events),
                units::count(r.before.requests),
                units::percent(r.before.rate()),
            )));
            line
        })
        .collect();
    doc.push(Block::List(items));
}

/// Sentry's events per release, after the change and over as long before it: the release
/// watched against the one before, as far as Sentry's events said theirs.
fn releases_section(doc: &mut Vec<Block>, r: &crate::api::ReleaseEvents) {
    let side = |label: &str, counts: &[(String, u64)]| {
        let mut line = vec![t(format!("{label} ({}): ", units::duration(r.span_secs)))];
        if counts.is_empty() {
            line.push(t("no event said its release"));
        }
        for (i, (release, n)) in counts.iter().enumerate() {
            if i > 0 {
                line.push(t(", "));
            }
            line.push(code(release.clone()));
            line.push(t(format!(" {n}")));
        }
        line
    };
    doc.push(Block::List(vec![
        side("After the change", &r.after),
        side("Before it, as long", &r.before),
    ]));
}

/// Sentry issues a post-mortem lists at most.
const SENTRY_ISSUES_SHOWN: u32 = 20;

/// The Sentry issues first seen after the change, each with where it broke; one in a file the
/// change touched is called out: the fix may have moved the failure rather than removed it.
fn sentry_section(doc: &mut Vec<Block>, input: &PostmortemInput) {
    let touched: Vec<&str> = input
        .diff
        .iter()
        .flat_map(|d| d.files.iter().map(|f| f.path.as_str()))
        .collect();
    let in_touched = |file: &str| {
        touched
            .iter()
            .any(|t| file == *t || file.ends_with(&format!("/{t}")))
    };
    let items = input
        .sentry_issues
        .iter()
        .map(|issue| {
            let mut line = vec![
                code(issue.short_id.clone().unwrap_or_else(|| issue.id.clone())),
                t(format!(
                    " first seen {} after the change: ",
                    units::offset(issue.first_seen - input.change.landed_at)
                )),
                t(issue.title.clone()),
            ];
            if let Some(file) = issue.files.first() {
                line.push(t(" ("));
                line.push(code(file.clone()));
                line.push(t(")"));
            }
            if let Some(status) = issue.status.as_deref().filter(|s| *s != "unresolved") {
                line.push(t(format!(", {status}")));
            }
            if issue.files.iter().any(|f| in_touched(f)) {
                line.push(t(" "));
                line.push(strong(
                    "In a file this change touched: it may have moved the failure rather than \
                     removed it.",
                ));
            }
            line
        })
        .collect();
    doc.push(Block::List(items));
}

/// A labelled moment on the chart.
/// The moments marked on the chart: the deploy, the decision, the revert, the redeploy, and
/// the end (recovered or escalated), at the times the log recorded them.
pub fn markers(change: &ChangeRecord, events: &[EventRecord]) -> Vec<Marker> {
    use ChangeState::*;
    let mut out = vec![Marker {
        at: change.landed_at,
        label: "deploy".into(),
    }];
    let report = evidence::stored(change).ok().flatten();
    let given = report
        .as_ref()
        .and_then(|r| r.deploy_window)
        .is_some_and(|w| w.given);
    if let Some((from, _)) = deploy_window(change).filter(|_| given) {
        out.push(Marker {
            at: from,
            label: "deploy began".into(),
        });
    }
    let decided_at = report.as_ref().and_then(|r| r.decided_at);
    let mut decided = false;
    for e in events {
        match e.kind.known() {
            Some(EventKind::StateChanged) => {
                let Ok(StateChange { from, to, .. }) = e.detail_as() else {
                    continue;
                };
                match to {
                    Regressed | Healthy | Inconclusive if !decided && from == Watching => {
                        decided = true;
                        let at = match (to, decided_at) {
                            (Regressed | Healthy, Some(d)) => d,
                            _ => e.at,
                        };
                        out.push(Marker {
                            at,
                            label: format!("decision: {to}"),
                        });
                    }
                    RollingBack if from != RollingBack => out.push(Marker {
                        at: e.at,
                        label: "revert".into(),
                    }),
                    RolledBack => out.push(Marker {
                        at: e.at,
                        label: "recovered".into(),
                    }),
                    Escalated => out.push(Marker {
                        at: e.at,
                        label: "escalated".into(),
                    }),
                    _ => {}
                }
            }
            Some(EventKind::Rollback) => {
                let rollback = actions::read_rollback(&e.detail).ok();
                let hook = rollback
                    .iter()
                    .flat_map(|r| &r.steps)
                    .find_map(|s| match s {
                        Step::Hook(hook) => Some(hook),
                        _ => None,
                    });
                if let Some(hook) = hook {
                    let ok = matches!(hook.outcome.status, HookStatus::Succeeded);
                    out.push(Marker {
                        at: e.at,
                        label: if ok {
                            "redeploy".into()
                        } else {
                            "redeploy failed".into()
                        },
                    });
                }
            }
            _ => {}
        }
    }
    out.retain(|m| m.at.is_finite());
    out
}

/// The change's deploy window, `[from, to)`, as its report recorded it: left out of both the
/// baseline and the watch, shaded on the chart. `None` without a report that reads, or one
/// stored before deploy windows.
pub fn deploy_window(change: &ChangeRecord) -> Option<(f64, f64)> {
    let w = evidence::stored(change).ok()??.deploy_window?;
    let (from, to) = (w.from, w.to);
    (from.is_finite() && to.is_finite() && from < to).then_some((from, to))
}

/// A post-mortem, rendered three ways.
#[derive(Clone, Debug)]
pub struct Postmortem {
    input: PostmortemInput,
    doc: Vec<Block>,
}

impl Postmortem {
    pub fn new(input: PostmortemInput) -> Postmortem {
        let doc = document(&input);
        Postmortem { input, doc }
    }

    /// The post-mortem in Markdown (CommonMark with GitHub tables); the chart is named, not
    /// embedded.
    pub fn markdown(&self) -> String {
        document::markdown(&self.doc, &self.input.change.id)
    }

    /// A self-contained HTML page: inline CSS, the chart as inline SVG, nothing fetched.
    pub fn html(&self) -> String {
        document::html(&self.doc, &self.svg())
    }

    /// [`Postmortem::html`] as the status page serves it: with the way back to the page.
    pub fn html_on_page(&self) -> String {
        document::html_after(
            &self.doc,
            &self.svg(),
            "<p style=\"margin:8px 0\"><a href=\"/\">&larr; guardian's status page</a></p>\n",
        )
    }

    /// The chart: error rate and latency around the change, with its events marked.
    pub fn svg(&self) -> String {
        let (from, to) = chart_window(&self.input.change, &self.input.events);
        chart(
            &self.input.series,
            &markers(&self.input.change, &self.input.events),
            deploy_window(&self.input.change),
            from,
            to,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// What the post-mortem says.

fn document(input: &PostmortemInput) -> Vec<Block> {
    let change = &input.change;
    let rollback = actions::stored_rollback(&input.events);
    let done = rollback.as_ref().ok().and_then(Option::as_ref);
    let revert = done.and_then(|r| r.revert_commit.clone());
    let short = short_commit(&change.commit);
    let report = evidence::stored(change);
    let mut doc = Vec::new();

    doc.push(Block::Heading(
        1,
        vec![t(format!(
            "Post-mortem: {}: {} \u{2014} commit {short}",
            input.service,
            actions::state_label(change, done)
        ))],
    ));
    let mut summary = vec![
        strong("Summary."),
        t(format!(
            " {}",
            actions::headline(
                &input.service,
                change,
                report.as_ref().ok().and_then(Option::as_ref),
                done,
                &short,
                revert.as_deref()
            )
        )),
    ];
    if let Some(reason) = input
        .policy
        .as_ref()
        .and_then(|p| p.pattern_mismatch.as_ref())
    {
        summary.push(t(format!(
            " The diff did not do what its claimed pattern does: {}.",
            reason.trim_end_matches('.')
        )));
    }
    doc.push(Block::Paragraph(summary));
    let mut facts = vec![
        t("Change "),
        code(&change.id),
        t(", commit "),
        code(&change.commit),
        t(format!(", written by {}", change.kind)),
    ];
    if let Some(p) = &change.pattern {
        facts.push(t(format!(" (pattern {p})")));
    }
    facts.push(t(format!(
        ", landed {}; state now: {}.",
        units::when(change.landed_at),
        change.state
    )));
    doc.push(Block::Paragraph(facts));
    if let Some(s) = &change.summary {
        doc.push(Block::Paragraph(vec![
            strong("Summary given with the change:"),
            t(format!(" {s}")),
        ]));
    }

    doc.push(Block::Heading(2, vec![t("Timeline")]));
    doc.push(timeline(change, &input.events));

    doc.push(Block::Heading(2, vec![t("Traffic around the change")]));
    doc.push(Block::Chart);

    if input.claim.is_some() || input.diff.is_some() {
        doc.push(Block::Heading(
            2,
            vec![t("What was claimed, and what the diff did")],
        ));
        claim_and_diff(&mut doc, input);
    }
    if let Some(policy) = &input.policy {
        doc.push(Block::Heading(2, vec![t("Policy decision")]));
        policy_section(&mut doc, policy);
    }

    doc.push(Block::Heading(2, vec![t("Evidence")]));
    match &report {
        Ok(Some(report)) => evidence_table(&mut doc, report),
        Ok(None) => doc.push(Block::Paragraph(vec![t(
            "No evidence was recorded for this change.",
        )])),
        Err(e) => doc.push(Block::Paragraph(vec![t(format!(
            "The evidence recorded for this change cannot be shown: {e}."
        ))])),
    }

    if input.change.fixes_issue.is_some() {
        doc.push(Block::Heading(2, vec![t("The issue it claims to fix")]));
        fixed_issue_section(
            &mut doc,
            input,
            report.as_ref().ok().and_then(Option::as_ref),
        );
    }

    if !input.sentry_issues.is_empty() {
        doc.push(Block::Heading(
            2,
            vec![t("Sentry issues first seen after the change")],
        ));
        sentry_section(&mut doc, input);
    }
    if !input.sentry_risen.is_empty() {
        doc.push(Block::Heading(
            2,
            vec![t("Sentry issues firing more after the change")],
        ));
        risen_section(&mut doc, input);
    }
    if let Some(releases) = &input.sentry_releases {
        doc.push(Block::Heading(2, vec![t("Sentry events per release")]));
        releases_section(&mut doc, releases);
    }

    doc.push(Block::Heading(2, vec![t("Actions and outcomes")]));
    actions(&mut doc, change, &rollback, &input.events);

    let mut text = String::new();
    match revert.as_deref() {
        Some(revert) => {
            doc.push(Block::Heading(2, vec![t("How to undo the undo")]));
            actions::undo_the_undo(&mut text, change, done, revert);
        }
        None if matches!(
            change.state,
            ChangeState::Escalated | ChangeState::Regressed
        ) =>
        {
            doc.push(Block::Heading(2, vec![t("What you can do")]));
            actions::by_hand(&mut text, change, done);
        }
        None => {}
    }
    if !text.is_empty() {
        doc.push(Block::Code(dedent(&text)));
    }
    doc.push(Block::Paragraph(vec![
        t("Written by guardian from its decision log for change "),
        code(&change.id),
        t(", watching "),
        t(&input.service),
        t("."),
    ]));
    doc
}

/// Removes the indentation common to every non-empty line.
fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or(l.trim_start()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How far a decision's traffic may trail its making without being said: a log's lines are
/// judged within a second or two of being written.
const TRAILS_SECS: f64 = 3.0;

fn timeline(change: &ChangeRecord, events: &[EventRecord]) -> Block {
    let deploy = change.landed_at;
    let mut rows: Vec<(f64, Vec<Inline>)> = Vec::new();
    let mut deployed = false;
    for e in events {
        // Every row at the time it happened; a decision also says up to when the traffic
        // it rests on went, when that trails (read from Prometheus a lag behind).
        let at = e.at;
        let what: Vec<Inline> = match e.kind.known() {
            Some(EventKind::ChangeCreated) => {
                deployed = true;
                rows.push((
                    deploy,
                    vec![t("Deployed commit "), code(short_commit(&change.commit))],
                ));
                vec![t(format!(
                    "Guardian told of the change ({}); watching it",
                    change.kind
                ))]
            }
            Some(EventKind::StateChanged) => match e.detail_as::<StateChange>() {
                Ok(moved) => {
                    let mut what = state_change(&moved, change);
                    if let Some(decided) = moved.decided_at.filter(|d| *d < e.at - TRAILS_SECS) {
                        what.push(t(format!(
                            ", on traffic up to {} ({} before)",
                            units::clock(decided, deploy),
                            units::offset(e.at - decided).trim_start_matches('+')
                        )));
                    }
                    what
                }
                Err(why) => unreadable(e, &why),
            },
            Some(EventKind::Rollback) => rollback_event(&e.detail),
            Some(EventKind::RecoveryCheck) => match e.detail_as::<RecoveryCheck>() {
                Ok(check) => {
                    let verdict = evidence::verdict_name(check.verdict);
                    let mut what = format!("Recovery check: {verdict}");
                    let errors = check
                        .report
                        .iter()
                        .flat_map(|r| &r.signals)
                        .find(|s| s.signal == SignalKind::Errors);
                    // A check that failed is told by what failed it, not by the errors, which
                    // may look fine when slow requests or latency did not recover.
                    let failed = check
                        .report
                        .as_ref()
                        .filter(|r| r.signals.iter().any(|s| s.regressed))
                        .map(evidence::regression_summary);
                    if let Some(summary) = failed {
                        let _ = write!(what, " ({summary} after the redeploy)");
                    } else if let Some(s) = errors {
                        let _ = write!(
                            what,
                            " (errors after the redeploy {}, {} before the change)",
                            units::percent(s.after.rate),
                            units::percent(s.baseline.rate)
                        );
                    }
                    vec![t(what)]
                }
                Err(why) => unreadable(e, &why),
            },
            Some(EventKind::EmailQueued) => match e.detail_as::<EmailQueued>() {
                Ok(queued) => vec![t(format!("Alert email queued: {}", queued.subject))],
                Err(why) => unreadable(e, &why),
            },
            Some(EventKind::EmailSent) => vec![t("Alert email accepted by the mail server")],
            // Any other kind, this version's or a later one's, in its own words.
            _ => vec![t(e.kind.as_str().replace('_', " "))],
        };
        rows.push((at, what));
    }
    if !deployed {
        rows.insert(
            0,
            (
                deploy,
                vec![t("Deployed commit "), code(short_commit(&change.commit))],
            ),
        );
    }
    Block::Table(
        vec![
            "Time (UTC)".into(),
            "From the deploy".into(),
            "What happened".into(),
        ],
        rows.into_iter()
            .map(|(at, what)| {
                vec![
                    vec![t(units::clock(at, deploy))],
                    vec![t(units::offset(at - deploy))],
                    what,
                ]
            })
            .collect(),
    )
}

/// A `state_changed` record in words: the move, with its note or why.
fn state_change(moved: &StateChange, change: &ChangeRecord) -> Vec<Inline> {
    use ChangeState::*;
    let to = moved.to;
    let note = moved.note.as_deref().filter(|n| !n.is_empty());
    // These notes say it all: shown alone, first letter up.
    if let (Some(n), FlaggingOff | FlaggedOff | RollingBack | Verifying | RolledBack) = (note, to) {
        let mut chars = n.chars();
        let first = chars.next().map(|c| c.to_uppercase().collect::<String>());
        let mut what = format!("{}{}", first.unwrap_or_default(), chars.as_str());
        if matches!(to, RolledBack | FlaggedOff) {
            what = format!("Recovered. {what}");
        }
        return vec![t(what)];
    }
    let mut what = match to {
        Regressed => {
            // The report saved with the decision, or (in logs written before it was saved
            // there, or when it does not read) the change's latest.
            let why = moved
                .report
                .as_ref()
                .and_then(|r| evidence::read(r).ok())
                .or_else(|| evidence::stored(change).ok().flatten())
                .map(|r| evidence::regression_summary(&r))
                .filter(|s| !s.is_empty())
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            format!("Decision: regressed{why}")
        }
        Healthy => "Decision: healthy".to_owned(),
        Ineffective => {
            "Decision: ineffective (the issue it claims to fix goes on firing)".to_owned()
        }
        Inconclusive => "Decision: inconclusive".to_owned(),
        RollingBack => "Rollback started".to_owned(),
        Verifying => "Redeployed; checking that the service recovers".to_owned(),
        RolledBack => "Rolled back: the service is back to its baseline".to_owned(),
        FlaggingOff => "Turning its feature flag off".to_owned(),
        FlaggedOff => {
            "Mitigated by its feature flag, turned off: the code is still deployed".to_owned()
        }
        Escalated => "ESCALATED to a person".to_owned(),
        Watching | Superseded | Interrupted => format!("Now {}", to.as_str().replace('_', " ")),
    };
    if let Some(note) = note {
        let _ = write!(what, ": {note}");
    }
    vec![t(what)]
}

/// A record whose detail does not read as its kind's type: said so, and why, never guessed at.
fn unreadable(e: &EventRecord, why: &serde_json::Error) -> Vec<Inline> {
    vec![t(format!(
        "The {} record cannot be read: {why}",
        e.kind.as_str().replace('_', " ")
    ))]
}

fn rollback_event(detail: &Value) -> Vec<Inline> {
    let rollback = match actions::read_rollback(detail) {
        Ok(rollback) => rollback,
        Err(e) => {
            return vec![t(format!(
                "Rollback ended; its report cannot be shown: {e}"
            ))]
        }
    };
    let mut what = vec![];
    match &rollback.revert_commit {
        Some(c) => what.extend([t("Reverted in "), code(short_commit(c))]),
        None => what.push(t("No revert commit was made")),
    }
    let hook = rollback.steps.iter().find_map(|s| match s {
        Step::Hook(hook) => Some(hook),
        _ => None,
    });
    if let Some(hook) = hook {
        what.push(t(format!("; redeploy hook: {}", hook.summary)));
    }
    if let Some(why) = &rollback.escalation {
        what.push(t(format!("; needs a person: {why}")));
    }
    what
}

fn claim_and_diff(doc: &mut Vec<Block>, input: &PostmortemInput) {
    if let Some(claim) = &input.claim {
        let mut items = Vec::new();
        if let Some(kind) = &claim.kind {
            items.push(vec![strong("Written by:"), t(format!(" {kind}"))]);
        }
        if let Some(p) = &claim.pattern {
            items.push(vec![strong("Pattern:"), t(" "), code(p)]);
        }
        if let Some(s) = &claim.summary {
            items.push(vec![strong("Summary:"), t(format!(" {s}"))]);
        }
        if let Some(url) = &claim.issue_url {
            items.push(vec![
                strong("Issue:"),
                t(" "),
                Inline::Link {
                    text: url.clone(),
                    url: url.clone(),
                },
            ]);
        }
        let tests = match claim.tests_run {
            Some(true) => "yes (as claimed; guardian did not run them)",
            Some(false) => "no",
            None => "not said",
        };
        items.push(vec![strong("Tests run:"), t(format!(" {tests}"))]);
        doc.push(Block::Paragraph(vec![t("What was claimed:")]));
        doc.push(Block::List(items));
    }
    if let Some(diff) = &input.diff {
        let added: u64 = diff.files.iter().map(|f| f.added).sum();
        let removed: u64 = diff.files.iter().map(|f| f.removed).sum();
        doc.push(Block::Paragraph(vec![t(format!(
            "What the diff did: {} file{}, +{added} \u{2212}{removed} lines{}.",
            diff.files.len(),
            if diff.files.len() == 1 { "" } else { "s" },
            if diff.commits > 1 {
                format!(", in {} commits", diff.commits)
            } else {
                String::new()
            }
        ))]));
        if !diff.files.is_empty() {
            let rows = diff
                .files
                .iter()
                .map(|f| {
                    let mut path = vec![code(&f.path)];
                    if let Some(old) = &f.old_path {
                        path.extend([t(" (from "), code(old), t(")")]);
                    }
                    let lines = |n: u64, sign: &str| {
                        if f.binary {
                            "binary".to_owned()
                        } else {
                            format!("{sign}{n}")
                        }
                    };
                    vec![
                        path,
                        vec![t(f.status.replace('_', " "))],
                        vec![t(lines(f.added, "+"))],
                        vec![t(lines(f.removed, "\u{2212}"))],
                    ]
                })
                .collect();
            doc.push(Block::Table(
                vec![
                    "File".into(),
                    "Status".into(),
                    "Added".into(),
                    "Removed".into(),
                ],
                rows,
            ));
        }
    }
    if let Some(reason) = input
        .policy
        .as_ref()
        .and_then(|p| p.pattern_mismatch.as_ref())
    {
        doc.push(Block::Paragraph(vec![
            strong("Mismatch:"),
            t(format!(
                " the policy found that the diff does not do what the claimed pattern does: \
                 {reason}"
            )),
        ]));
    }
}

fn policy_section(doc: &mut Vec<Block>, policy: &PolicyDecision) {
    let decision = match policy.decision.as_str() {
        "auto" => "deploy without a person (auto)".to_owned(),
        "needs_approval" => "a person must approve (needs_approval)".to_owned(),
        "deny" => "refused (deny)".to_owned(),
        other => other.to_owned(),
    };
    let mut line = vec![strong("Decision:"), t(format!(" {decision}"))];
    if let Some(score) = policy.risk_score {
        let mut risk = format!("; risk score {score}");
        if let Some(below) = policy.auto_below {
            let _ = write!(risk, " (auto below {below})");
        }
        line.push(t(risk));
    }
    if let Some(who) = &policy.approved_by {
        line.push(t(format!("; approved by {who}")));
    }
    line.push(t("."));
    doc.push(Block::Paragraph(line));
    if !policy.factors.is_empty() {
        doc.push(Block::Table(
            vec!["Risk factor".into(), "Points".into(), "Why".into()],
            policy
                .factors
                .iter()
                .map(|f| {
                    vec![
                        vec![t(&f.name)],
                        vec![t(f.points.to_string())],
                        vec![t(&f.why)],
                    ]
                })
                .collect(),
        ));
    }
    if !policy.rules.is_empty() {
        doc.push(Block::Paragraph(vec![t("Rules that fired:")]));
        doc.push(Block::List(
            policy
                .rules
                .iter()
                .map(|r| {
                    vec![
                        code(&r.rule),
                        t(format!(" ({}): {}", r.effect.replace('_', " "), r.message)),
                    ]
                })
                .collect(),
        ));
    }
}

/// `word` with its first letter upper-case, for a table heading.
fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Per signal, as the alert email has it: before, after, effect, e-value against threshold.
fn evidence_table(doc: &mut Vec<Block>, report: &Report) {
    let verdict = evidence::verdict_name(report.verdict);
    let decided = match report.decided_at {
        Some(d) => format!(
            "decided {} after the change ({verdict})",
            units::duration(d - report.change_at)
        ),
        None => format!("not decided (verdict: {verdict})"),
    };
    let names = evidence::side_names(report.design);
    doc.push(Block::Paragraph(vec![t(format!(
        "Compared {}: {} requests {}, {} {}; {decided}.",
        names.design,
        units::count(report.requests_before),
        names.control,
        units::count(report.requests_after),
        names.treatment,
    ))]));
    let mut rows = Vec::new();
    for s in &report.signals {
        let verdict = if s.regressed {
            strong("WORSE")
        } else {
            t(evidence::standing(s))
        };
        let mut name = evidence::title(s);
        if let Some(route) = &s.worst_route {
            let _ = write!(name, " (worst route: {route})");
        }
        let (before, after, effect) = if s.routes_compared == 0 {
            (
                "-".to_owned(),
                "-".to_owned(),
                format!("not compared: {}", evidence::not_compared_reason(s)),
            )
        } else if s.signal == SignalKind::Latency {
            let side = |ms: fn(&LevelReport) -> Option<f64>| {
                s.levels
                    .iter()
                    .map(|l| format!("{} {}", units::quantile(l.quantile), units::ms(ms(l))))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            (
                side(|l| l.baseline_ms),
                side(|l| l.after_ms),
                s.effect_ratio
                    .map_or("-".to_owned(), |r| format!("median {}", units::ratio(r))),
            )
        } else {
            let side = |v: &Side| {
                format!(
                    "{} ({} of {})",
                    units::percent(v.rate),
                    units::count(v.events),
                    units::count(v.requests)
                )
            };
            let mut effect = match s.effect_ratio {
                Some(r) => format!("{} {}", units::ratio(r), names.reference),
                None => "no ratio".to_owned(),
            };
            if let Some(u) = s.ratio_upper_bound {
                let _ = write!(effect, "; upper bound {}", units::ratio(u));
            }
            let _ = write!(
                effect,
                "; a rise to {} is tolerated (not counted as worse)",
                units::ratio(s.null_ratio)
            );
            (side(&s.baseline), side(&s.after), effect)
        };
        let effect = match evidence::bursts(s) {
            Some(bursts) => format!("{effect}; {bursts}, evidence discounted by that"),
            None => effect,
        };
        let crossed = if s.e_value >= s.e_value_threshold {
            "\u{2265}"
        } else {
            "<"
        };
        rows.push(vec![
            vec![t(name)],
            vec![verdict],
            vec![t(before)],
            vec![t(after)],
            vec![t(effect)],
            vec![t(format!(
                "{} {crossed} {}",
                units::evalue(s.e_value),
                units::evalue(s.e_value_threshold)
            ))],
        ]);
    }
    if rows.is_empty() {
        doc.push(Block::Paragraph(vec![t("The report names no signal.")]));
    } else {
        doc.push(Block::Table(
            vec![
                "Signal".into(),
                "Verdict".into(),
                capitalized(names.control),
                capitalized(names.treatment),
                "Effect".into(),
                "e-value vs threshold".into(),
            ],
            rows,
        ));
        doc.push(Block::Paragraph(vec![t(
            "A signal is worse when its e-value reaches the threshold (1/alpha): the chance of \
             that happening to a change that did no harm is at most alpha.",
        )]));
    }
}

fn actions(
    doc: &mut Vec<Block>,
    change: &ChangeRecord,
    rollback: &actions::StoredRollback,
    events: &[EventRecord],
) {
    let mut items: Vec<Vec<Inline>> = Vec::new();
    if let Ok(Some(rollback)) = rollback {
        for step in &rollback.steps {
            let outcome = match step.ending() {
                Ending::Failed(e) => format!("FAILED: {e}"),
                Ending::Hook(hook) => hook.summary.clone(),
                Ending::Result(result) => {
                    let mut o = result.to_owned();
                    if let Some(c) = step.commit() {
                        let _ = write!(o, " ({})", short_commit(c));
                    }
                    o
                }
            };
            items.push(vec![
                strong(format!("{}:", step.name())),
                t(format!(" {outcome}")),
            ]);
        }
    }
    if let Some(check) = events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::RecoveryCheck)
    {
        let verdict = match check.detail_as::<RecoveryCheck>() {
            Ok(check) => evidence::verdict_name(check.verdict).to_owned(),
            Err(why) => format!("its record cannot be read: {why}"),
        };
        items.push(vec![strong("recovery check:"), t(format!(" {verdict}"))]);
    }
    let mut text = String::new();
    actions::what_guardian_did(&mut text, change, rollback, actions::Detail::Commands);
    if !items.is_empty() {
        doc.push(Block::List(items));
        doc.push(Block::Paragraph(vec![t(
            "Every command guardian ran, its exit status, and the last lines of output:",
        )]));
    }
    doc.push(Block::Code(dedent(&text)));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::core::Verdict;
    use crate::daemon::actions::revert::RollbackReport;
    use crate::daemon::step::{Ended, Hook, Push, Pushed, Reverted};
    use crate::git::CommandRecord;
    use crate::hook::{HookOutcome, HookStatus};
    use crate::report::chart::{chart, chart_x, PLOT_LEFT, PLOT_RIGHT};
    use crate::report::testing::{check_xml, expected};
    use crate::store::ChangeKind;

    /// 2025-11-24 16:00:00 UTC, on a bin edge.
    const T0: f64 = 1_764_000_000.0;
    const T: i64 = 1_764_000_000;
    const COMMIT: &str = "3f9a2c1b7d4e5f60718293a4b5c6d7e8f9012345";
    const REVERT: &str = "9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d";

    fn report() -> Value {
        let side = |requests: u64, events: u64| json!({"requests": requests, "events": events, "rate": events as f64 / requests as f64});
        json!({
            "verdict": "regressed", "decided_at": T0 + 30.6, "design": "before_after",
            "change_at": T0, "watch_ends_at": T0 + 600.0,
            "requests_before": 12000, "requests_after": 620, "unlabelled_requests": 0,
            "signals": [
                {"signal": "errors", "regressed": true, "e_value": 412.5,
                 "e_value_threshold": 166.7, "alpha": 0.006, "null_ratio": 1.1,
                 "baseline": side(12000, 120), "after": side(620, 56), "effect_ratio": 9.03,
                 "ratio_upper_bound": 14.2, "within_limits": null, "threshold_ms": null,
                 "routes_compared": 3, "worst_route": "/checkout", "dispersion": 1.0},
                {"signal": "latency", "regressed": false, "e_value": 0.4,
                 "e_value_threshold": 500.0, "alpha": 0.002, "null_ratio": 1.05,
                 "baseline": side(12000, 0), "after": side(620, 0), "effect_ratio": 1.02,
                 "ratio_upper_bound": null, "within_limits": null, "threshold_ms": null,
                 "routes_compared": 3, "dispersion": 1.0,
                 "levels": [
                    {"quantile": 0.5, "baseline_ms": 80.1, "after_ms": 81.7,
                     "baseline_share_slower": 0.5, "after_share_slower": 0.52, "e_value": 0.3},
                    {"quantile": 0.99, "baseline_ms": 201.0, "after_ms": 388.0,
                     "baseline_share_slower": 0.01, "after_share_slower": 0.03, "e_value": 0.4}
                 ]}
            ]
        })
    }

    /// The recovery check's report: errors back to 0.95% after the redeploy.
    fn recovery_report() -> Report {
        let mut r = evidence::read(&report()).unwrap();
        r.verdict = Verdict::Healthy;
        r.decided_at = Some(T0 + 158.6);
        r.change_at = T0 + 35.5;
        r.signals[0].regressed = false;
        r.signals[0].after = Side {
            requests: 2000,
            events: 19,
            rate: Some(0.0095),
        };
        r
    }

    fn rollback(hook_ok: bool) -> Value {
        let command = |args: &[&str], status: Option<i32>, stderr: &str| CommandRecord {
            args: args.iter().map(|a| a.to_string()).collect(),
            status,
            stdout: String::new(),
            stderr: stderr.to_owned(),
        };
        let hook = HookOutcome {
            status: if hook_ok {
                HookStatus::Succeeded
            } else {
                HookStatus::Failed {
                    code: Some(3),
                    signal: None,
                }
            },
            duration: Duration::from_millis(4100),
            pid: Some(4242),
            stdout: "building shop\ndeployed 9c8d7e6f5a to 3 hosts\n".into(),
            stderr: String::new(),
            dropped_bytes: 0,
            notes: vec![],
        };
        serde_json::to_value(RollbackReport {
            stood_down: false,
            revert_commit: Some(REVERT.into()),
            escalation: (!hook_ok).then(|| {
                format!("the revert {REVERT} is committed but the redeploy hook failed: exit 3")
            }),
            steps: vec![
                Step::Revert(Ended::Done(Reverted::Reverted {
                    commit: REVERT.into(),
                    commands: vec![
                        command(&["revert", "--no-edit", COMMIT], Some(0), ""),
                        command(&["commit", "-F", "-"], Some(0), ""),
                    ],
                })),
                Step::Push(Push {
                    remote: "origin".into(),
                    branch: "main".into(),
                    ended: Ended::Done(Pushed::Pushed {
                        command: command(&["push", "origin", "HEAD:refs/heads/main"], Some(0), ""),
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
        })
        .unwrap()
    }

    fn event(seq: i64, at: f64, kind: EventKind, detail: Value) -> EventRecord {
        EventRecord {
            seq,
            at,
            change_id: Some("chg_0123456789ab".into()),
            kind: kind.into(),
            detail,
        }
    }

    fn moved(seq: i64, at: f64, from: &str, to: &str, note: Option<&str>) -> EventRecord {
        let to: ChangeState = to.parse().unwrap();
        let decision = to == ChangeState::Regressed;
        let moved = StateChange {
            from: from.parse().unwrap(),
            to,
            decided_at: decision.then_some(T0 + 30.6),
            note: note.map(str::to_owned),
            report: decision.then(report),
        };
        event(
            seq,
            at,
            EventKind::StateChanged,
            serde_json::to_value(moved).unwrap(),
        )
    }

    /// The whole story: deployed, regressed at +30.6 s, reverted, redeployed at +35.5 s,
    /// recovered at +158.6 s; ten minutes of traffic before it, with a gap.
    fn story() -> PostmortemInput {
        let change = ChangeRecord {
            id: "chg_0123456789ab".into(),
            commit: COMMIT.into(),
            kind: ChangeKind::Ai,
            pattern: Some("retry-wrapper".into()),
            summary: Some("wrap payment calls in retries".into()),
            landed_at: T0,
            state: ChangeState::RolledBack,
            updated_at: T0 + 158.6,
            decided_at: Some(T0 + 30.6),
            report: Some(report()),
            note: Some("reverted and redeployed; the service is back to its baseline".into()),
            fixes_issue: None,
            flag: None,
        };
        let events = vec![
            event(1, T0 + 0.2, EventKind::ChangeCreated, json!({"commit": COMMIT, "kind": "ai"})),
            moved(2, T0 + 31.0, "watching", "regressed", None),
            moved(
                3,
                T0 + 31.0,
                "regressed",
                "rolling_back",
                Some("rolling back: errors 1.00% -> 9.03% (9.0x), e-value 412 >= 167"),
            ),
            event(4, T0 + 35.5, EventKind::Rollback, rollback(true)),
            moved(
                5,
                T0 + 35.5,
                "rolling_back",
                "verifying",
                Some("reverted in 9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d and redeployed; checking recovery for 120 s"),
            ),
            event(
                6,
                T0 + 158.6,
                EventKind::RecoveryCheck,
                serde_json::to_value(RecoveryCheck {
                    verdict: Verdict::Healthy,
                    report: Some(recovery_report()),
                })
                .unwrap(),
            ),
            moved(
                7,
                T0 + 158.6,
                "verifying",
                "rolled_back",
                Some("reverted and redeployed; the service is back to its baseline"),
            ),
            event(
                8,
                T0 + 158.7,
                EventKind::EmailQueued,
                serde_json::to_value(EmailQueued {
                    message_id: "<chg_0123456789ab.rolled_back@guardian>".into(),
                    subject: "[guardian] shop: rolled back \u{2014} commit 3f9a2c1b7d".into(),
                    to: vec!["oncall@example.com".into()],
                })
                .unwrap(),
            ),
        ];
        let mut series = Vec::new();
        for i in -60..30 {
            let at = T + i * BIN_SECS;
            if (-30..-26).contains(&i) {
                continue; // guardian was restarting: no data
            }
            let bad = (0..4).contains(&i);
            series.push(SeriesPoint {
                at,
                requests: 200,
                errors: if bad { 18 } else { 2 },
                p50_ms: Some(80.0),
                p99_ms: Some(if bad { 390.0 } else { 200.0 }),
            });
        }
        PostmortemInput {
            fixes: None,
            sentry_risen: Vec::new(),
            sentry_releases: None,
            service: "shop".into(),
            change,
            events,
            claim: Some(Claim {
                kind: Some("ai".into()),
                pattern: Some("retry-wrapper".into()),
                summary: Some("wrap payment calls in retries".into()),
                issue_url: Some("https://tracker.example.com/SHOP-1432".into()),
                tests_run: Some(true),
            }),
            diff: Some(DiffFacts {
                files: vec![
                    DiffFile {
                        path: "payments/client.go".into(),
                        status: "modified".into(),
                        added: 14,
                        removed: 3,
                        ..DiffFile::default()
                    },
                    DiffFile {
                        path: "payments/retry.go".into(),
                        old_path: Some("payments/backoff.go".into()),
                        status: "renamed".into(),
                        added: 2,
                        removed: 2,
                        ..DiffFile::default()
                    },
                ],
                commits: 1,
            }),
            policy: Some(PolicyDecision {
                decision: "auto".into(),
                risk_score: Some(18),
                auto_below: Some(25),
                factors: vec![
                    RiskFactor {
                        name: "lines changed".into(),
                        points: 6,
                        why: "21 lines".into(),
                    },
                    RiskFactor {
                        name: "critical path".into(),
                        points: 12,
                        why: "payments/** (weight 12)".into(),
                    },
                ],
                rules: vec![],
                pattern_mismatch: None,
                approved_by: None,
            }),
            series,
            // The buried disease: a new issue in a file the fix touched, and one elsewhere.
            sentry_issues: vec![
                crate::sentry::Issue {
                    id: "4504981122".into(),
                    short_id: Some("SHOP-API-1Z".into()),
                    title: "panic: nil map in payments.retry\u{1b}[2J".into(),
                    culprit: None,
                    level: Some("error".into()),
                    status: Some("unresolved".into()),
                    substatus: Some("new".into()),
                    project: None,
                    web_url: None,
                    first_seen: T as f64 + 14.0,
                    last_seen: None,
                    count: Some(31),
                    files: vec!["/srv/shop/payments/retry.go".into()],
                },
                crate::sentry::Issue {
                    id: "4504981123".into(),
                    short_id: None,
                    title: "timeout in cart".into(),
                    culprit: None,
                    level: None,
                    status: Some("resolved".into()),
                    substatus: None,
                    project: None,
                    web_url: None,
                    first_seen: T as f64 + 70.0,
                    last_seen: None,
                    count: None,
                    files: vec!["cart/total.go".into()],
                },
            ],
        }
    }

    #[test]
    fn a_decision_on_traffic_read_a_lag_behind_is_shown_when_made_and_on_what() {
        let mut input = story();
        // Read from Prometheus 15 s behind: decided on traffic up to +30.6 s, made at +45.6 s.
        input.events[1].at = T0 + 45.6;
        let md = Postmortem::new(input).markdown();
        assert!(
            md.contains(
                "| 16:00:45 | +45.6 s | Decision: regressed (errors 1.00% -> 9.03%, 9.03x the \
                 baseline), on traffic up to 16:00:30 (15 s before) |"
            ),
            "{md}"
        );
    }

    #[test]
    fn the_post_mortem_of_a_rollback_reads_as_expected() {
        let pm = Postmortem::new(story());
        let md = pm.markdown();
        expected("postmortem_rollback.md").assert_eq(&md);
        // What a tired reader needs first comes first.
        let summary = md.lines().nth(2).unwrap();
        assert!(
            summary.starts_with("**Summary.** Commit 3f9a2c1b7d made shop worse"),
            "{summary}"
        );
        assert!(summary.contains("Nothing needs doing now"), "{summary}");
        let sections: Vec<&str> = md.lines().filter(|l| l.starts_with("## ")).collect();
        assert_eq!(
            sections,
            [
                "## Timeline",
                "## Traffic around the change",
                "## What was claimed, and what the diff did",
                "## Policy decision",
                "## Evidence",
                "## Sentry issues first seen after the change",
                "## Actions and outcomes",
                "## How to undo the undo",
            ]
        );
        assert!(
            md.contains("| 16:00:31 | +31 s | Decision: regressed"),
            "{md}"
        );
        assert!(
            md.contains("| 16:02:38 | +2 min 39 s | Recovered. Reverted and redeployed"),
            "{md}"
        );
        assert!(md.contains("guardian postmortem chg_0123456789ab --svg > chart.svg"));
    }

    #[test]
    fn a_recovery_check_that_failed_is_told_by_the_signal_that_failed_it() {
        let mut input = story();
        let mut failed = recovery_report();
        failed.verdict = Verdict::Regressed;
        // Errors are back; slow requests are not.
        let mut slow = failed.signals[0].clone();
        slow.signal = SignalKind::SlowRequests;
        slow.regressed = true;
        slow.baseline = Side {
            requests: 4000,
            events: 38,
            rate: Some(0.0095),
        };
        slow.after = Side {
            requests: 2000,
            events: 101,
            rate: Some(0.0505),
        };
        slow.effect_ratio = Some(5.3);
        failed.signals.push(slow);
        for e in &mut input.events {
            if e.kind == EventKind::RecoveryCheck {
                e.detail = serde_json::to_value(RecoveryCheck {
                    verdict: Verdict::Regressed,
                    report: Some(failed.clone()),
                })
                .unwrap();
            }
        }
        let md = Postmortem::new(input).markdown();
        let row = md
            .lines()
            .find(|l| l.contains("Recovery check: regressed"))
            .expect("the row");
        assert!(row.contains("slow requests"), "{row}");
        assert!(!row.contains("errors after the redeploy"), "{row}");
    }

    #[test]
    fn a_fix_after_which_its_issue_went_on_firing_says_so_first_and_names_the_issue() {
        let mut input = story();
        input.change.state = ChangeState::Ineffective;
        input.change.fixes_issue = Some("4711".into());
        let mut report = report();
        report["verdict"] = json!("healthy");
        report["claim"] = json!({
            "issue": "4711", "verdict": "still_firing",
            "baseline": {"requests": 12000, "events": 120, "rate": 0.01},
            "after": {"requests": 620, "events": 7, "rate": 0.0113},
            "expected_after": 6.2, "null_ratio": 0.5,
            "still_firing_e_value": 140.0, "fixed_e_value": 0.01, "e_value_threshold": 100.0
        });
        input.change.report = Some(report);
        input.fixes = Some(crate::sentry::Issue {
            id: "4711".into(),
            short_id: Some("SHOP-3F".into()),
            title: "KeyError: 'cart'".into(),
            culprit: Some("cart.totals".into()),
            level: Some("error".into()),
            status: Some("unresolved".into()),
            substatus: None,
            project: Some("shop".into()),
            web_url: Some("https://acme.sentry.io/issues/4711/".into()),
            first_seen: T0 - 3600.0,
            last_seen: None,
            count: Some(400),
            files: vec!["app/cart.py".into()],
        });
        let md = Postmortem::new(input).markdown();
        let summary = md.lines().nth(2).unwrap();
        assert!(
            summary.starts_with("**Summary.** Commit 3f9a2c1b7d on shop is INEFFECTIVE: Sentry issue 4711 went on firing: 7 events after the change where 6.2 were expected at its old rate"),
            "{summary}"
        );
        let section = md
            .split("## The issue it claims to fix")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .unwrap_or_else(|| panic!("no section: {md}"));
        for says in [
            "`SHOP-3F`",
            "KeyError: 'cart'",
            "`app/cart.py`",
            "https://acme.sentry.io/issues/4711/",
            "shown above half its old rate (evidence 140 against 100)",
        ] {
            assert!(section.contains(says), "{says:?} not in {section}");
        }
    }

    #[test]
    fn the_chart_marks_each_event_where_it_happened() {
        let input = story();
        let (from, to) = chart_window(&input.change, &input.events);
        assert_eq!(from, T - 600, "ten minutes before the deploy");
        assert_eq!(to, T + 300, "at least five minutes after the deploy");
        let mut later = story();
        later.events[7].at = T0 + 1000.0;
        assert_eq!(
            chart_window(&later.change, &later.events),
            (T - 600, T + 1010 + 120),
            "two minutes after the end of the bin of the last event"
        );
        let svg = Postmortem::new(input).svg();
        check_xml(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        let lines = marker_xs(&svg);
        let want = [
            ("deploy", T0),
            ("decision: regressed", T0 + 30.6),
            ("revert", T0 + 31.0),
            ("redeploy", T0 + 35.5),
            ("recovered", T0 + 158.6),
        ];
        assert_eq!(lines.len(), want.len(), "{lines:?}");
        for ((label, x), (want_label, at)) in lines.iter().zip(want) {
            assert_eq!(label, want_label);
            let expected =
                PLOT_LEFT + (at - from as f64) / (to - from) as f64 * (PLOT_RIGHT - PLOT_LEFT);
            assert!(
                (x - expected).abs() < 0.06,
                "{label}: x {x}, expected {expected}"
            );
        }
        // Every label is shown, as text.
        for (label, _) in want {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}");
        }
    }

    /// `(data-label, x1)` of each marker line, in document order.
    fn marker_xs(svg: &str) -> Vec<(String, f64)> {
        svg.lines()
            .filter(|l| l.contains("class=\"marker\""))
            .map(|l| {
                let attr = |name: &str| {
                    let start = l.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
                    let end = start + l[start..].find('"').unwrap();
                    l[start..end].to_owned()
                };
                (attr("data-label"), attr("x1").parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn a_gap_in_the_series_is_a_gap_in_the_lines() {
        let input = story();
        let svg = Postmortem::new(input.clone()).svg();
        // 90 bins with one gap of four: every line is two runs, none drawn across the gap.
        for class in ["errors", "p50", "p99"] {
            let runs: Vec<&str> = svg
                .lines()
                .filter(|l| l.starts_with(&format!("<polyline class=\"{class}\"")))
                .collect();
            assert_eq!(runs.len(), 2, "{class}: {runs:?}");
            let points = |l: &str| l.matches(',').count();
            assert_eq!(points(runs[0]), 30, "{class}");
            assert_eq!(points(runs[1]), 56, "{class}");
        }
        let (from, to) = chart_window(&input.change, &input.events);
        let gap_start = chart_x((T - 305) as f64, from, to); // middle of the last bin before
        let gap_end = chart_x((T - 255) as f64, from, to); // middle of the first bin after
        let first = svg
            .lines()
            .find(|l| l.starts_with("<polyline class=\"errors\""))
            .unwrap();
        let last_x: f64 = first
            .rsplit(' ')
            .next()
            .and_then(|p| p.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!((last_x - gap_start).abs() < 0.06, "{last_x} vs {gap_start}");
        let per_sec = (PLOT_RIGHT - PLOT_LEFT) / (to - from) as f64;
        assert!(
            (gap_end - last_x - 50.0 * per_sec).abs() < 0.1,
            "{gap_end} {last_x}"
        );
        // A lone bin is a dot, not a line to nowhere.
        let lone = chart(
            &[SeriesPoint {
                at: T,
                requests: 5,
                errors: 0,
                p50_ms: None,
                p99_ms: None,
            }],
            &[],
            None,
            T - 600,
            T + 600,
        );
        check_xml(&lone).unwrap();
        assert_eq!(lone.matches("<circle class=\"errors\"").count(), 1);
        assert!(!lone.contains("<polyline"));
        assert!(lone.contains(">no latency data for this period</text>"));
    }

    #[test]
    fn no_traffic_at_all_draws_a_note_not_a_crash() {
        let mut input = story();
        input.series.clear();
        let svg = Postmortem::new(input.clone()).svg();
        check_xml(&svg).unwrap();
        assert_eq!(
            svg.matches(">no traffic data for this period</text>")
                .count(),
            2
        );
        assert!(!svg.contains("<polyline") && !svg.contains("<circle"));
        // Nonsense values do not crash it either.
        let weird = chart(
            &[
                SeriesPoint {
                    at: T,
                    requests: 0,
                    errors: 0,
                    p50_ms: Some(f64::NAN),
                    p99_ms: None,
                },
                SeriesPoint {
                    at: T + 10,
                    requests: 3,
                    errors: 3,
                    p50_ms: Some(f64::INFINITY),
                    p99_ms: Some(1e300),
                },
            ],
            &[Marker {
                at: f64::NAN,
                label: "<b>".into(),
            }],
            Some((f64::NAN, f64::INFINITY)),
            T + 600,
            T,
        );
        check_xml(&weird).unwrap();
        // A change with no events and no report still gets a whole post-mortem.
        input.events.clear();
        input.change.report = None;
        input.change.state = ChangeState::Watching;
        let pm = Postmortem::new(input);
        assert!(pm
            .markdown()
            .contains("No evidence was recorded for this change."));
        check_xml(&pm.svg()).unwrap();
    }

    #[test]
    fn hostile_text_is_shown_as_text_in_every_format() {
        let mut input = story();
        let hostile = "fix</p><script>alert(1)</script>\n\n## Evidence\n- all good [ok](javascript:alert(1)) `x` | y & z";
        input.change.summary = Some(hostile.into());
        input.change.pattern = Some("nil-check\n# Fake".into());
        input.service = "shop<img src=x onerror=alert(1)>".into();
        input.change.commit = "abc`def".into();
        input.claim.as_mut().unwrap().summary = Some(hostile.into());
        input.claim.as_mut().unwrap().issue_url = Some("javascript:alert(1)".into());
        input.diff.as_mut().unwrap().files[0].path = "a|b`c```\n## x.go".into();
        input.policy.as_mut().unwrap().pattern_mismatch = Some("1. <b>sure</b>".into());
        input.events.push(event(
            9,
            T0 + 200.0,
            EventKind::Rollback,
            json!({"revert_commit": REVERT, "steps": [{"step": "redeploy hook",
                   "command": ["/usr/local/bin/redeploy"], "summary": "exit 0", "outcome": {"status": {"kind": "succeeded"},
                   "duration": {"secs": 1, "nanos": 0}, "pid": 1,
                   "stdout": "```\n## Injected\n<script>x</script>\n", "stderr": "",
                   "dropped_bytes": 0, "notes": []}}]}),
        ));
        let pm = Postmortem::new(input);

        let md = pm.markdown();
        // No section was faked: the only headings are guardian's own.
        let headings: Vec<&str> = md.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(
            headings[1..],
            [
                "## Timeline",
                "## Traffic around the change",
                "## What was claimed, and what the diff did",
                "## Policy decision",
                "## Evidence",
                "## Sentry issues first seen after the change",
                "## Actions and outcomes",
                "## How to undo the undo",
            ]
        );
        assert_eq!(
            headings[0],
            "# Post-mortem: shop\\<img src=x onerror=alert(1)>: rolled back \u{2014} commit \
             abc\\`def"
        );
        assert!(md.contains("\\<script>alert(1)\\</script>"), "{md}");
        // Neither the fake link nor the issue URL with a script in it is a link.
        assert!(md.contains("\\[ok\\](javascript:alert(1))"), "{md}");
        assert!(md.contains("**Issue:** `javascript:alert(1)`"), "{md}");
        // Outside code blocks, no line starts a list, quote or heading of the attacker's.
        let mut in_code = false;
        for line in md.lines() {
            if line.starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if !in_code {
                // HTML cannot start: every < outside code blocks is escaped.
                let unescaped = line
                    .char_indices()
                    .filter(|&(i, c)| c == '<' && !line[..i].ends_with('\\'))
                    .count();
                assert_eq!(unescaped, 0, "{line}");
                assert!(
                    !line.starts_with("## Injected") && !line.starts_with("- all good"),
                    "{line}"
                );
            }
        }
        // The hook's output stays inside its fence: the fence is longer than any run inside.
        assert!(md.contains("````text\n"), "{md}");

        let html = pm.html();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("href=\"javascript"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        let svg = pm.svg();
        check_xml(&svg).unwrap();
    }

    #[test]
    fn the_html_is_self_contained_and_embeds_the_chart() {
        let pm = Postmortem::new(story());
        let html = pm.html();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains(&pm.svg()));
        for external in ["src=", "http-equiv", "<link", "<script", "url(", "@import"] {
            assert!(!html.contains(external), "{external}");
        }
        // The only link is the issue's.
        assert_eq!(html.matches("href=").count(), 1);
        assert!(html.contains("<a href=\"https://tracker.example.com/SHOP-1432\">"));
        assert!(html.contains("<h2 style=\"font-size:17px;margin:18px 0 8px 0\">Evidence</h2>"));
    }

    #[test]
    fn a_rollback_report_that_does_not_read_is_said_to_be_unreadable_where_it_would_be_told() {
        let mut input = story();
        let rollback = input
            .events
            .iter_mut()
            .find(|e| e.kind == EventKind::Rollback)
            .unwrap();
        rollback.detail = json!({"revert_commit": REVERT, "steps": [
            {"step": "git revert", "result": "rebased", "commit": REVERT, "commands": []}
        ]});
        let pm = Postmortem::new(input);
        let md = pm.markdown();
        let told: Vec<&str> = md
            .lines()
            .filter(|l| l.contains("cannot be shown"))
            .collect();
        expect_test::expect![[r#"
            | 16:00:35 | +35.5 s | Rollback ended; its report cannot be shown: the stored rollback report cannot be read: unknown variant \`rebased\`, expected one of \`reverted\`, \`already reverted\`, \`conflict\` |
            The rollback report recorded for this change cannot be shown: the stored rollback report cannot be read: unknown variant `rebased`, expected one of `reverted`, `already reverted`, `conflict`."#]].assert_eq(&told.join("\n"));
        // Nothing of it is shown as if it read: no step, no revert commit, no redeploy marker.
        assert!(
            !md.contains("**git revert:**") && !md.contains("Revert commit:"),
            "{md}"
        );
        let labels: Vec<String> = marker_xs(&pm.svg()).into_iter().map(|m| m.0).collect();
        assert_eq!(
            labels,
            ["deploy", "decision: regressed", "revert", "recovered"]
        );
    }

    #[test]
    fn a_record_that_does_not_read_is_said_to_be_unreadable_in_the_timeline() {
        let mut input = story();
        // A move to a state this version does not know, an email record without its subject.
        input.events[6].detail = json!({"from": "verifying", "to": "canaried", "decided_at": null,
                                        "note": null});
        input.events[7].detail = json!({"message_id": "<m@guardian>", "to": []});
        input.events[5].detail = json!({"verdict": "fine", "report": null});
        let md = Postmortem::new(input).markdown();
        let told: Vec<&str> = md
            .lines()
            .filter(|l| l.contains("cannot be read"))
            .collect();
        expect_test::expect![[r#"
            | 16:02:38 | +2 min 39 s | The recovery check record cannot be read: unknown variant \`fine\`, expected one of \`watching\`, \`regressed\`, \`healthy\`, \`inconclusive\` |
            | 16:02:38 | +2 min 39 s | The state changed record cannot be read: unknown variant \`canaried\`, expected one of \`watching\`, \`healthy\`, \`regressed\`, \`ineffective\`, \`inconclusive\`, \`superseded\`, \`interrupted\`, \`flagging_off\`, \`flagged_off\`, \`rolling_back\`, \`verifying\`, \`rolled_back\`, \`escalated\` |
            | 16:02:38 | +2 min 39 s | The email queued record cannot be read: missing field \`subject\` |
            - **recovery check:** its record cannot be read: unknown variant \`fine\`, expected one of \`watching\`, \`regressed\`, \`healthy\`, \`inconclusive\`"#]].assert_eq(&told.join("\n"));
        assert!(!md.contains('?'), "{md}");
    }

    #[test]
    fn an_escalation_says_a_person_must_act_and_marks_it() {
        let mut input = story();
        input.change.state = ChangeState::Escalated;
        input.change.note =
            Some("the revert is committed but the redeploy hook failed: exit 3".into());
        input.events.truncate(3);
        input
            .events
            .push(event(4, T0 + 36.0, EventKind::Rollback, rollback(false)));
        input.events.push(moved(
            5,
            T0 + 36.0,
            "rolling_back",
            "escalated",
            Some("the redeploy hook failed"),
        ));
        input.policy.as_mut().unwrap().pattern_mismatch =
            Some("a retry-wrapper adds no retry loop".into());
        let pm = Postmortem::new(input);
        let md = pm.markdown();
        assert!(md.contains("ACTION NEEDED"), "{md}");
        assert!(md.contains("**Mismatch:** the policy found"), "{md}");
        assert!(
            md.contains("The diff did not do what its claimed pattern does"),
            "{md}"
        );
        assert!(
            md.contains("- **redeploy hook:** exit 3 after 4.1 s"),
            "{md}"
        );
        let labels: Vec<String> = marker_xs(&pm.svg()).into_iter().map(|m| m.0).collect();
        assert_eq!(
            labels,
            [
                "deploy",
                "decision: regressed",
                "revert",
                "redeploy failed",
                "escalated"
            ]
        );
    }
}
