//! The post-mortem of one change, written by guardian from its record: what happened, what
//! guardian did, the evidence, and a chart of the traffic around it.
//!
//! Pure: [`Postmortem::new`] takes values (the change, its decision log, the agent's claim and
//! the diff's facts when known, the policy's decision, the traffic series) and
//! [`Postmortem::markdown`], [`Postmortem::html`] and [`Postmortem::svg`] return text. No clock,
//! no IO; `guardian postmortem ID` and the daemon's alert read the store and call this.
//!
//! Both documents come from one small document model ([`Block`], [`Inline`]), so they say the
//! same things, and every piece of text that came from outside (a summary written by an agent,
//! a file name, a hook's output) is escaped in exactly one place per format: Markdown
//! backslash-escapes what could start a construct (a heading, a list, HTML, a link) and fences
//! code with more backticks than it contains; HTML and SVG escape `& < > " '`.
//!
//! The chart is SVG written by hand (the `chart` functions below, a few hundred lines). A
//! plotting crate was considered: `plotters` with its default features pulls `font-kit`, which
//! links the system's fontconfig and freetype (its own issues #182 and #435 are about fonts that
//! fail to load on small systems); without a font feature it cannot measure text for its axis
//! labels. It would also not give what this chart needs most: lines broken at gaps in the data,
//! and labelled vertical markers that do not overlap. Two line charts with a shared time axis
//! are little code, and the output is stable text that tests can compare.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::mail;
use crate::series::{SeriesPoint, BIN_SECS};
use crate::store::{ChangeRecord, ChangeState, EventRecord};

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
    Ok(Some(PostmortemInput {
        service: service.to_owned(),
        change,
        events,
        claim: None,
        diff: None,
        policy: None,
        series,
    }))
}

/// A labelled moment on the chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    pub at: f64,
    pub label: String,
}

/// The moments marked on the chart: the deploy, the decision, the revert, the redeploy, and
/// the end (recovered or escalated), at the times the log recorded them.
pub fn markers(change: &ChangeRecord, events: &[EventRecord]) -> Vec<Marker> {
    let mut out = vec![Marker {
        at: change.landed_at,
        label: "deploy".into(),
    }];
    let given = change
        .report
        .as_ref()
        .is_some_and(|r| r["deploy_window"]["given"].as_bool() == Some(true));
    if let Some((from, _)) = deploy_window(change).filter(|_| given) {
        out.push(Marker {
            at: from,
            label: "deploy began".into(),
        });
    }
    let decided_at = change
        .report
        .as_ref()
        .and_then(|r| r["decided_at"].as_f64());
    let mut decided = false;
    for e in events {
        match e.kind.as_str() {
            "state_changed" => {
                let to = e.detail["to"].as_str().unwrap_or_default();
                let from = e.detail["from"].as_str().unwrap_or_default();
                match to {
                    "regressed" | "healthy" | "inconclusive" if !decided && from == "watching" => {
                        decided = true;
                        let at = match (to, decided_at) {
                            ("regressed" | "healthy", Some(d)) => d,
                            _ => e.at,
                        };
                        out.push(Marker {
                            at,
                            label: format!("decision: {to}"),
                        });
                    }
                    "rolling_back" if from != "rolling_back" => out.push(Marker {
                        at: e.at,
                        label: "revert".into(),
                    }),
                    "rolled_back" => out.push(Marker {
                        at: e.at,
                        label: "recovered".into(),
                    }),
                    "escalated" => out.push(Marker {
                        at: e.at,
                        label: "escalated".into(),
                    }),
                    _ => {}
                }
            }
            "rollback" => {
                if let Some(hook) = mail::steps(&e.detail).find(|s| s["step"] == "redeploy hook") {
                    let ok = hook["outcome"]["status"]["kind"].as_str() == Some("succeeded")
                        || hook["summary"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("exit 0"));
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
/// baseline and the watch, shaded on the chart.
pub fn deploy_window(change: &ChangeRecord) -> Option<(f64, f64)> {
    let w = &change.report.as_ref()?["deploy_window"];
    let (from, to) = (w["from"].as_f64()?, w["to"].as_f64()?);
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
        let mut out = String::new();
        for block in &self.doc {
            md_block(&mut out, block, &self.input.change.id);
        }
        out
    }

    /// A self-contained HTML page: inline CSS, the chart as inline SVG, nothing fetched.
    pub fn html(&self) -> String {
        let title = self
            .doc
            .iter()
            .find_map(|b| match b {
                Block::Heading(1, inlines) => Some(plain_text(inlines)),
                _ => None,
            })
            .unwrap_or_default();
        let mut out = String::new();
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width\">\
             <title>{}</title></head>\n<body style=\"{BODY_STYLE}\">\
             <div style=\"max-width:760px\">\n",
            esc(&title)
        );
        for block in &self.doc {
            html_block(&mut out, block, &self.svg());
        }
        out.push_str("</div></body></html>\n");
        out
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
// The document model.

/// A piece of running text.
#[derive(Clone, Debug, PartialEq)]
pub enum Inline {
    /// Text from anywhere; escaped when rendered.
    Text(String),
    Strong(String),
    /// A command, commit or path, shown as code.
    Code(String),
    /// A link; only `http(s)` URLs become links, anything else is shown as code.
    Link {
        text: String,
        url: String,
    },
}

/// A block of the document.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    Heading(u8, Vec<Inline>),
    Paragraph(Vec<Inline>),
    List(Vec<Vec<Inline>>),
    /// Header cells, then rows of cells.
    Table(Vec<String>, Vec<Vec<Vec<Inline>>>),
    /// Preformatted text (commands and their output).
    Code(String),
    /// Where the chart goes.
    Chart,
}

fn t(s: impl Into<String>) -> Inline {
    Inline::Text(s.into())
}

fn code(s: impl Into<String>) -> Inline {
    Inline::Code(s.into())
}

fn strong(s: impl Into<String>) -> Inline {
    Inline::Strong(s.into())
}

fn plain_text(inlines: &[Inline]) -> String {
    inlines
        .iter()
        .map(|i| match i {
            Inline::Text(s) | Inline::Strong(s) | Inline::Code(s) => s.as_str(),
            Inline::Link { text, .. } => text.as_str(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// What the post-mortem says.

fn document(input: &PostmortemInput) -> Vec<Block> {
    let change = &input.change;
    let rollback = input
        .events
        .iter()
        .rev()
        .find(|e| e.kind == "rollback")
        .map(|e| &e.detail);
    let revert = rollback
        .and_then(|r| r["revert_commit"].as_str())
        .map(str::to_owned);
    let short = mail::short_commit(&change.commit);
    let mut doc = Vec::new();

    doc.push(Block::Heading(
        1,
        vec![t(format!(
            "Post-mortem: {}: {} \u{2014} commit {short}",
            input.service,
            mail::state_label(change, rollback)
        ))],
    ));
    let mut summary = vec![
        strong("Summary."),
        t(format!(
            " {}",
            mail::headline(&input.service, change, rollback, &short, revert.as_deref())
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
        mail::when(change.landed_at),
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
    match &change.report {
        Some(report) => evidence(&mut doc, report),
        None => doc.push(Block::Paragraph(vec![t(
            "No evidence was recorded for this change.",
        )])),
    }

    doc.push(Block::Heading(2, vec![t("Actions and outcomes")]));
    actions(&mut doc, change, rollback, &input.events);

    let mut text = String::new();
    match revert.as_deref() {
        Some(revert) => {
            doc.push(Block::Heading(2, vec![t("How to undo the undo")]));
            mail::undo_the_undo(&mut text, change, rollback, revert);
        }
        None if matches!(
            change.state,
            ChangeState::Escalated | ChangeState::Regressed
        ) =>
        {
            doc.push(Block::Heading(2, vec![t("What you can do")]));
            mail::by_hand(&mut text, change);
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

/// `+3.1 s`, `+2 min 05 s`, `-10 min`, `+1 h 02 min`.
fn offset(d: f64) -> String {
    if !d.is_finite() {
        return "?".into();
    }
    let sign = if d < 0.0 { "\u{2212}" } else { "+" };
    let a = d.abs();
    if a < 60.0 {
        format!("{sign}{} s", mail::trim_number((a * 10.0).round() / 10.0))
    } else if a < 3600.0 {
        let s = a.round() as u64;
        format!("{sign}{} min {:02} s", s / 60, s % 60)
    } else {
        let m = (a / 60.0).round() as u64;
        format!("{sign}{} h {:02} min", m / 60, m % 60)
    }
}

/// `03:15:45`, or the whole date when it is not the deploy's day.
fn clock(at: f64, deploy: f64) -> String {
    let day = |x: f64| (x / 86_400.0).floor();
    match chrono::DateTime::from_timestamp(at.floor() as i64, 0) {
        Some(d) if at.is_finite() && day(at) == day(deploy) => d.format("%H:%M:%S").to_string(),
        Some(d) if at.is_finite() => d.format("%Y-%m-%d %H:%M:%S").to_string(),
        _ => "?".into(),
    }
}

fn timeline(change: &ChangeRecord, events: &[EventRecord]) -> Block {
    let deploy = change.landed_at;
    let mut rows: Vec<(f64, Vec<Inline>)> = Vec::new();
    let mut deployed = false;
    for e in events {
        let what: Vec<Inline> = match e.kind.as_str() {
            "change_created" => {
                deployed = true;
                rows.push((
                    deploy,
                    vec![
                        t("Deployed commit "),
                        code(mail::short_commit(&change.commit)),
                    ],
                ));
                vec![t(format!(
                    "Guardian told of the change ({}); watching it",
                    change.kind
                ))]
            }
            "state_changed" => state_change(e, change),
            "rollback" => rollback_event(&e.detail),
            "recovery_check" => {
                let verdict = e.detail["verdict"].as_str().unwrap_or("?");
                let mut what = format!("Recovery check: {verdict}");
                if let Some(s) =
                    mail::signals(&e.detail["report"]).find(|s| s["signal"] == "errors")
                {
                    let _ = write!(
                        what,
                        " (errors after the redeploy {}, {} before the change)",
                        mail::percent(s["after"]["rate"].as_f64()),
                        mail::percent(s["baseline"]["rate"].as_f64())
                    );
                }
                vec![t(what)]
            }
            "email_queued" => vec![t(format!(
                "Alert email queued: {}",
                e.detail["subject"].as_str().unwrap_or("?")
            ))],
            "email_sent" => vec![t("Alert email accepted by the mail server")],
            other => vec![t(other.replace('_', " "))],
        };
        // A decision is shown when the evidence crossed the line, not when it was saved.
        let at = match (e.kind.as_str(), e.detail["to"].as_str()) {
            ("state_changed", Some("regressed" | "healthy")) => {
                e.detail["decided_at"].as_f64().unwrap_or(e.at)
            }
            _ => e.at,
        };
        rows.push((at, what));
    }
    if !deployed {
        rows.insert(
            0,
            (
                deploy,
                vec![
                    t("Deployed commit "),
                    code(mail::short_commit(&change.commit)),
                ],
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
                    vec![t(clock(at, deploy))],
                    vec![t(offset(at - deploy))],
                    what,
                ]
            })
            .collect(),
    )
}

fn state_change(e: &EventRecord, change: &ChangeRecord) -> Vec<Inline> {
    let to = e.detail["to"].as_str().unwrap_or("?");
    let note = e.detail["note"].as_str();
    let note = note.filter(|n| !n.is_empty());
    // These notes say it all: shown alone, first letter up.
    if let (Some(n), "rolling_back" | "verifying" | "rolled_back") = (note, to) {
        let mut chars = n.chars();
        let first = chars.next().map(|c| c.to_uppercase().collect::<String>());
        let mut what = format!("{}{}", first.unwrap_or_default(), chars.as_str());
        if to == "rolled_back" {
            what = format!("Recovered. {what}");
        }
        return vec![t(what)];
    }
    let mut what = match to {
        "regressed" => {
            let why = e.detail["report"]
                .is_object()
                .then(|| mail::regression_summary(&e.detail["report"]))
                .or_else(|| change.report.as_ref().map(mail::regression_summary))
                .filter(|s| !s.is_empty())
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            format!("Decision: regressed{why}")
        }
        "healthy" => "Decision: healthy".to_owned(),
        "inconclusive" => "Decision: inconclusive".to_owned(),
        "rolling_back" => "Rollback started".to_owned(),
        "verifying" => "Redeployed; checking that the service recovers".to_owned(),
        "rolled_back" => "Rolled back: the service is back to its baseline".to_owned(),
        "escalated" => "ESCALATED to a person".to_owned(),
        other => format!("Now {}", other.replace('_', " ")),
    };
    if let Some(note) = note {
        let _ = write!(what, ": {note}");
    }
    vec![t(what)]
}

fn rollback_event(detail: &Value) -> Vec<Inline> {
    let mut what = vec![];
    match detail["revert_commit"].as_str() {
        Some(c) => what.extend([t("Reverted in "), code(mail::short_commit(c))]),
        None => what.push(t("No revert commit was made")),
    }
    if let Some(hook) = mail::steps(detail).find(|s| s["step"] == "redeploy hook") {
        what.push(t(format!(
            "; redeploy hook: {}",
            hook["summary"].as_str().unwrap_or("?")
        )));
    }
    if let Some(why) = detail["escalation"].as_str() {
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

/// Per signal, as the alert email has it: before, after, effect, e-value against threshold.
fn evidence(doc: &mut Vec<Block>, report: &Value) {
    let change_at = report["change_at"].as_f64();
    let verdict = report["verdict"].as_str().unwrap_or("?");
    let decided = match (report["decided_at"].as_f64(), change_at) {
        (Some(d), Some(c)) => format!("decided {} after the change ({verdict})", mail::secs(d - c)),
        _ => format!("not decided (verdict: {verdict})"),
    };
    let design = match report["design"].as_str() {
        Some("concurrent") => "the new version against the old one serving at the same time",
        _ => "after the change against the baseline before it",
    };
    doc.push(Block::Paragraph(vec![t(format!(
        "Compared {design}: {} requests before, {} after; {decided}.",
        mail::count(report["requests_before"].as_u64()),
        mail::count(report["requests_after"].as_u64()),
    ))]));
    let mut rows = Vec::new();
    for s in mail::signals(report) {
        let worse = s["regressed"].as_bool() == Some(true);
        let verdict = if worse {
            strong("WORSE")
        } else {
            t(mail::signal_standing(s))
        };
        let mut name = mail::signal_title(s);
        if let Some(route) = s["worst_route"].as_str() {
            let _ = write!(name, " (worst route: {route})");
        }
        let (before, after, effect) = if s["routes_compared"].as_u64() == Some(0) {
            (
                "-".to_owned(),
                "-".to_owned(),
                format!("not compared: {}", mail::not_compared_reason(s)),
            )
        } else if s["signal"] == "latency" {
            let levels: Vec<&Value> = s["levels"].as_array().into_iter().flatten().collect();
            let side = |key: &str| {
                levels
                    .iter()
                    .map(|l| {
                        format!(
                            "p{} {}",
                            mail::trim_number(l["quantile"].as_f64().unwrap_or(0.0) * 100.0),
                            mail::ms(l[key].as_f64())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            (
                side("baseline_ms"),
                side("after_ms"),
                s["effect_ratio"]
                    .as_f64()
                    .map_or("-".to_owned(), |r| format!("median {r:.2}x")),
            )
        } else {
            let side = |v: &Value| {
                format!(
                    "{} ({} of {})",
                    mail::percent(v["rate"].as_f64()),
                    mail::count(v["events"].as_u64()),
                    mail::count(v["requests"].as_u64())
                )
            };
            let mut effect = match s["effect_ratio"].as_f64() {
                Some(r) => format!("{} the baseline", mail::ratio(r)),
                None => "no ratio".to_owned(),
            };
            if let Some(u) = s["ratio_upper_bound"].as_f64() {
                let _ = write!(effect, "; upper bound {}", mail::ratio(u));
            }
            if let Some(n) = s["null_ratio"].as_f64() {
                let _ = write!(
                    effect,
                    "; a rise to {} is tolerated (not counted as worse)",
                    mail::ratio(n)
                );
            }
            (side(&s["baseline"]), side(&s["after"]), effect)
        };
        let e = s["e_value"].as_f64();
        let threshold = s["e_value_threshold"].as_f64();
        let crossed = match (e, threshold) {
            (Some(e), Some(t)) if e >= t => "\u{2265}",
            (Some(_), Some(_)) => "<",
            _ => "?",
        };
        rows.push(vec![
            vec![t(name)],
            vec![verdict],
            vec![t(before)],
            vec![t(after)],
            vec![t(effect)],
            vec![t(format!(
                "{} {crossed} {}",
                mail::number(e),
                mail::number(threshold)
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
                "Before".into(),
                "After".into(),
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
    rollback: Option<&Value>,
    events: &[EventRecord],
) {
    let mut items: Vec<Vec<Inline>> = Vec::new();
    if let Some(rollback) = rollback {
        for step in mail::steps(rollback) {
            let name = step["step"].as_str().unwrap_or("step");
            let outcome = match (step["error"].as_str(), name) {
                (Some(e), _) => format!("FAILED: {e}"),
                (None, "redeploy hook") => step["summary"].as_str().unwrap_or("?").to_owned(),
                (None, _) => {
                    let mut o = step["result"].as_str().unwrap_or("done").to_owned();
                    if let Some(c) = step["commit"].as_str() {
                        let _ = write!(o, " ({})", mail::short_commit(c));
                    }
                    o
                }
            };
            items.push(vec![strong(format!("{name}:")), t(format!(" {outcome}"))]);
        }
    }
    if let Some(check) = events.iter().rev().find(|e| e.kind == "recovery_check") {
        items.push(vec![
            strong("recovery check:"),
            t(format!(
                " {}",
                check.detail["verdict"].as_str().unwrap_or("?")
            )),
        ]);
    }
    let mut text = String::new();
    mail::what_guardian_did(&mut text, change, rollback);
    if !items.is_empty() {
        doc.push(Block::List(items));
        doc.push(Block::Paragraph(vec![t(
            "Every command guardian ran, its exit status, and the last lines of output:",
        )]));
    }
    doc.push(Block::Code(dedent(&text)));
}

// ---------------------------------------------------------------------------------------------
// Markdown.

/// Characters that could start Markdown syntax anywhere in running text (`_` only at a word
/// edge, `|` only in a table; what matters only at the start of a line is `md_line_start`'s).
const MD_SPECIAL: &str = "\\`*[]<&~";

fn md_text(s: &str, in_table: bool) -> String {
    let chars: Vec<char> = crate::display::line(s).chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        let word = |j: Option<usize>| {
            j.and_then(|j| chars.get(j))
                .is_some_and(|c| c.is_alphanumeric())
        };
        let escape = MD_SPECIAL.contains(c)
            || (c == '|' && in_table)
            || (c == '_' && !(word(i.checked_sub(1)) && word(Some(i + 1))));
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A line of text must not start a block of its own (a list, a heading, a quote...).
fn md_line_start(s: String) -> String {
    let trimmed = s.trim_start();
    let first = trimmed.chars().next();
    let digits = trimmed.chars().take_while(char::is_ascii_digit).count();
    let after_digits = trimmed[digits..].chars().next();
    let leading = s.len() - trimmed.len();
    if matches!(first, Some('-' | '+' | '=' | '>' | '#'))
        || (digits > 0 && matches!(after_digits, Some('.' | ')')))
    {
        let at = leading + if digits > 0 { digits } else { 0 };
        let mut s = s;
        s.insert(at, '\\');
        s
    } else {
        s
    }
}

fn md_code_span(s: &str, in_table: bool) -> String {
    let s = crate::display::line(s).into_owned();
    let s = if in_table { s.replace('|', "\\|") } else { s };
    let fence = "`".repeat(longest_run(&s, '`') + 1);
    if s.starts_with('`') || s.ends_with('`') || s.trim().is_empty() {
        format!("{fence} {s} {fence}")
    } else {
        format!("{fence}{s}{fence}")
    }
}

fn longest_run(s: &str, c: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for x in s.chars() {
        run = if x == c { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

fn safe_url(url: &str) -> Option<&str> {
    let lower = url.trim().to_ascii_lowercase();
    let ok = (lower.starts_with("https://") || lower.starts_with("http://"))
        && !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>\"'`\\".contains(c));
    ok.then_some(url.trim())
}

fn md_inlines(inlines: &[Inline], in_table: bool) -> String {
    let mut out = String::new();
    for i in inlines {
        match i {
            Inline::Text(s) => out.push_str(&md_text(s, in_table)),
            Inline::Strong(s) => {
                let _ = write!(out, "**{}**", md_text(s, in_table));
            }
            Inline::Code(s) => out.push_str(&md_code_span(s, in_table)),
            Inline::Link { text, url } => match safe_url(url) {
                Some(url) => {
                    let url = url.replace('(', "%28").replace(')', "%29");
                    let _ = write!(out, "[{}]({url})", md_text(text, in_table));
                }
                None => out.push_str(&md_code_span(text, in_table)),
            },
        }
    }
    if in_table {
        out
    } else {
        md_line_start(out)
    }
}

fn md_block(out: &mut String, block: &Block, change_id: &str) {
    match block {
        Block::Heading(level, inlines) => {
            let _ = writeln!(
                out,
                "{} {}\n",
                "#".repeat(usize::from(*level).clamp(1, 6)),
                md_inlines(inlines, false)
            );
        }
        Block::Paragraph(inlines) => {
            let _ = writeln!(out, "{}\n", md_inlines(inlines, false));
        }
        Block::List(items) => {
            for item in items {
                let _ = writeln!(out, "- {}", md_inlines(item, false));
            }
            out.push('\n');
        }
        Block::Table(head, rows) => {
            let _ = writeln!(
                out,
                "| {} |",
                head.iter()
                    .map(|h| md_text(h, true))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            let _ = writeln!(out, "|{}", "---|".repeat(head.len()));
            for row in rows {
                let cells: Vec<String> = row.iter().map(|c| md_inlines(c, true)).collect();
                let _ = writeln!(out, "| {} |", cells.join(" | "));
            }
            out.push('\n');
        }
        Block::Code(text) => {
            let text = printable_block(text);
            let fence = "`".repeat(longest_run(&text, '`').max(2) + 1);
            let _ = writeln!(out, "{fence}text\n{}\n{fence}\n", text.trim_end());
        }
        Block::Chart => {
            let _ = writeln!(
                out,
                "The chart of error rate and latency around the change, with the deploy, the \
                 decision and the rollback marked, is in the HTML version (the alert email) and \
                 as SVG: `guardian postmortem {} --svg > chart.svg`.\n",
                md_code_safe_id(change_id)
            );
        }
    }
}

/// A change id is letters, digits and `_`; anything else is dropped from the command shown.
fn md_code_safe_id(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

/// Control and invisible characters (colour codes, `\r`) made visible, lines and tabs kept.
fn printable_block(text: &str) -> String {
    crate::display::block(text).into_owned()
}

// ---------------------------------------------------------------------------------------------
// HTML.

const BODY_STYLE: &str = "margin:0;padding:16px;background:#ffffff;color:#1f2328;\
    font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;font-size:14px;\
    line-height:1.45";
const TABLE_STYLE: &str = "border-collapse:collapse;margin:8px 0 14px 0;font-size:13px";
const CELL_STYLE: &str = "border:1px solid #d0d7de;padding:4px 8px;text-align:left;\
    vertical-align:top";
const PRE_STYLE: &str = "background:#f6f8fa;border:1px solid #d0d7de;padding:8px;\
    font-size:12px;line-height:1.35;overflow-x:auto;white-space:pre-wrap;\
    word-break:break-all";
const CODE_STYLE: &str = "background:#f6f8fa;padding:0 3px;font-size:12px";

/// Escapes text for HTML and SVG (element content and quoted attributes).
/// Control and invisible characters are shown as escapes first (`crate::display`).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in crate::display::block(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html_inlines(inlines: &[Inline]) -> String {
    let mut out = String::new();
    for i in inlines {
        match i {
            Inline::Text(s) => out.push_str(&esc(s)),
            Inline::Strong(s) => {
                let _ = write!(out, "<strong>{}</strong>", esc(s));
            }
            Inline::Code(s) => {
                let _ = write!(out, "<code style=\"{CODE_STYLE}\">{}</code>", esc(s));
            }
            Inline::Link { text, url } => match safe_url(url) {
                Some(url) => {
                    let _ = write!(out, "<a href=\"{}\">{}</a>", esc(url), esc(text));
                }
                None => {
                    let _ = write!(out, "<code style=\"{CODE_STYLE}\">{}</code>", esc(text));
                }
            },
        }
    }
    out
}

fn html_block(out: &mut String, block: &Block, svg: &str) {
    match block {
        Block::Heading(level, inlines) => {
            let level = level.clamp(&1, &6);
            let size = match level {
                1 => "20px",
                2 => "17px",
                _ => "15px",
            };
            let _ = writeln!(
                out,
                "<h{level} style=\"font-size:{size};margin:18px 0 8px 0\">{}</h{level}>",
                html_inlines(inlines)
            );
        }
        Block::Paragraph(inlines) => {
            let _ = writeln!(
                out,
                "<p style=\"margin:8px 0\">{}</p>",
                html_inlines(inlines)
            );
        }
        Block::List(items) => {
            out.push_str("<ul style=\"margin:8px 0;padding-left:22px\">\n");
            for item in items {
                let _ = writeln!(out, "<li>{}</li>", html_inlines(item));
            }
            out.push_str("</ul>\n");
        }
        Block::Table(head, rows) => {
            let _ = write!(out, "<table style=\"{TABLE_STYLE}\"><tr>");
            for h in head {
                let _ = write!(
                    out,
                    "<th style=\"{CELL_STYLE};background:#f6f8fa\">{}</th>",
                    esc(h)
                );
            }
            out.push_str("</tr>\n");
            for row in rows {
                out.push_str("<tr>");
                for cell in row {
                    let _ = write!(
                        out,
                        "<td style=\"{CELL_STYLE}\">{}</td>",
                        html_inlines(cell)
                    );
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</table>\n");
        }
        Block::Code(text) => {
            let _ = writeln!(
                out,
                "<pre style=\"{PRE_STYLE}\">{}</pre>",
                esc(text.trim_end())
            );
        }
        Block::Chart => {
            let _ = writeln!(out, "<div style=\"margin:8px 0\">{svg}</div>");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The chart.

/// Width and height of the SVG, in pixels.
pub const CHART_WIDTH: f64 = 720.0;
pub const CHART_HEIGHT: f64 = 432.0;
/// The plotting area, shared by both panels horizontally.
pub const PLOT_LEFT: f64 = 64.0;
pub const PLOT_RIGHT: f64 = 700.0;
/// Vertical extent of the two panels.
const ERRORS_TOP: f64 = 108.0;
const ERRORS_BOTTOM: f64 = 228.0;
const LATENCY_TOP: f64 = 256.0;
const LATENCY_BOTTOM: f64 = 376.0;
/// Marker labels sit in rows above the panels.
const LABEL_ROWS: usize = 5;
const LABEL_ROW_TOP: f64 = 34.0;
const LABEL_ROW_HEIGHT: f64 = 13.0;
/// Approximate width of one character of the 11 px labels.
const CHAR_WIDTH: f64 = 6.2;

const ERROR_COLOUR: &str = "#d1495b";
const P50_COLOUR: &str = "#3a7ca5";
const P99_COLOUR: &str = "#8f5db7";
const MARKER_COLOUR: &str = "#6e7781";
const GRID_COLOUR: &str = "#e6e8eb";

/// The x of time `at` on a chart spanning `[from, to)`.
pub fn chart_x(at: f64, from: i64, to: i64) -> f64 {
    let span = (to - from).max(1) as f64;
    PLOT_LEFT + (at - from as f64) / span * (PLOT_RIGHT - PLOT_LEFT)
}

/// Two panels sharing the time axis: error rate in %, and p50/p99 latency in ms; the markers
/// as labelled vertical lines across both. Bins missing from `points` are gaps in the lines.
pub fn chart(
    points: &[SeriesPoint],
    markers: &[Marker],
    window: Option<(f64, f64)>,
    from: i64,
    to: i64,
) -> String {
    let to = to.max(from + BIN_SECS);
    let merged = merge_bins(points, from, to);
    let points: Vec<&SeriesPoint> = merged.iter().collect();
    let x = |at: f64| chart_x(at, from, to);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_WIDTH}\" \
         height=\"{CHART_HEIGHT}\" viewBox=\"0 0 {CHART_WIDTH} {CHART_HEIGHT}\" \
         font-family=\"Helvetica, Arial, sans-serif\" font-size=\"11\" role=\"img\" \
         style=\"max-width:100%;height:auto\">\n\
         <title>Error rate and latency around the change</title>\n\
         <rect x=\"0\" y=\"0\" width=\"{CHART_WIDTH}\" height=\"{CHART_HEIGHT}\" fill=\"#ffffff\"/>\n"
    );
    legend(&mut s);
    if let Some((start, end)) = window.filter(|&(a, b)| a < b && b > from as f64) {
        // Drawn first, under the lines: the deploy's own restart, in neither side.
        let (left, right) = (x(start.max(from as f64)), x(end.min(to as f64)));
        let _ = writeln!(
            s,
            "<rect class=\"deploy-window\" x=\"{left:.1}\" y=\"{ERRORS_TOP:.1}\" \
             width=\"{:.1}\" height=\"{:.1}\" fill=\"#9e9e9e\" fill-opacity=\"0.25\">\
             <title>Deploy window: left out of both the baseline and the watch</title></rect>",
            (right - left).max(1.0),
            LATENCY_BOTTOM - ERRORS_TOP
        );
    }

    // Error rate, in percent.
    let rates: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| p.error_rate().map(|r| (mid(p), r * 100.0)))
        .collect();
    let max_rate = rates.iter().map(|r| r.1).fold(0.0, f64::max);
    let (rate_top, rate_step) = nice_scale(max_rate.max(1.0));
    panel(
        &mut s,
        "Error rate (%)",
        ERRORS_TOP,
        ERRORS_BOTTOM,
        rate_top,
        rate_step,
        |v| format!("{}%", tick_number(v)),
    );
    let y_rate = |v: f64| ERRORS_BOTTOM - v / rate_top * (ERRORS_BOTTOM - ERRORS_TOP);
    let keys: Vec<i64> = points.iter().map(|p| p.at).collect();
    line(
        &mut s,
        "errors",
        ERROR_COLOUR,
        &segments(&keys, &rates, &x, &y_rate),
    );
    if rates.is_empty() {
        no_data(
            &mut s,
            ERRORS_TOP,
            ERRORS_BOTTOM,
            "no traffic data for this period",
        );
    }

    // Latency, in milliseconds.
    let p50: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| p.p50_ms.filter(|v| v.is_finite()).map(|v| (mid(p), v)))
        .collect();
    let p99: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| p.p99_ms.filter(|v| v.is_finite()).map(|v| (mid(p), v)))
        .collect();
    let max_ms = p99.iter().chain(&p50).map(|v| v.1).fold(0.0, f64::max);
    let (ms_top, ms_step) = nice_scale(max_ms.max(1.0));
    panel(
        &mut s,
        "Latency (ms)",
        LATENCY_TOP,
        LATENCY_BOTTOM,
        ms_top,
        ms_step,
        |v| format!("{} ms", tick_number(v)),
    );
    let y_ms = |v: f64| LATENCY_BOTTOM - (v / ms_top).min(1.0) * (LATENCY_BOTTOM - LATENCY_TOP);
    let keys50: Vec<i64> = points
        .iter()
        .filter(|p| p.p50_ms.is_some_and(f64::is_finite))
        .map(|p| p.at)
        .collect();
    let keys99: Vec<i64> = points
        .iter()
        .filter(|p| p.p99_ms.is_some_and(f64::is_finite))
        .map(|p| p.at)
        .collect();
    line(
        &mut s,
        "p50",
        P50_COLOUR,
        &segments(&keys50, &p50, &x, &y_ms),
    );
    line(
        &mut s,
        "p99",
        P99_COLOUR,
        &segments(&keys99, &p99, &x, &y_ms),
    );
    if p50.is_empty() && p99.is_empty() {
        let note = if rates.is_empty() {
            "no traffic data for this period"
        } else {
            "no latency data for this period"
        };
        no_data(&mut s, LATENCY_TOP, LATENCY_BOTTOM, note);
    }

    time_axis(&mut s, from, to);
    marker_lines(&mut s, markers, from, to);
    s.push_str("</svg>\n");
    s
}

/// The points in `[from, to)` with traffic, in time order, one per bin: a bin given twice
/// (stored, and still open in the daemon) has its counts added and the larger part's
/// quantiles, as the store merges them.
fn merge_bins(points: &[SeriesPoint], from: i64, to: i64) -> Vec<SeriesPoint> {
    let mut sorted: Vec<&SeriesPoint> = points
        .iter()
        .filter(|p| p.at >= from && p.at < to && p.requests > 0)
        .collect();
    sorted.sort_by_key(|p| p.at);
    let mut out: Vec<SeriesPoint> = Vec::with_capacity(sorted.len());
    for p in sorted {
        match out.last_mut() {
            Some(last) if last.at == p.at => {
                if p.requests > last.requests {
                    last.p50_ms = p.p50_ms.or(last.p50_ms);
                    last.p99_ms = p.p99_ms.or(last.p99_ms);
                } else {
                    last.p50_ms = last.p50_ms.or(p.p50_ms);
                    last.p99_ms = last.p99_ms.or(p.p99_ms);
                }
                last.requests = last.requests.saturating_add(p.requests);
                last.errors = last.errors.saturating_add(p.errors).min(last.requests);
            }
            _ => out.push(p.clone()),
        }
    }
    out
}

/// The middle of a bin: where its point is drawn.
fn mid(p: &SeriesPoint) -> f64 {
    p.at as f64 + BIN_SECS as f64 / 2.0
}

/// Splits values into runs of consecutive bins: a missing bin breaks the line.
fn segments(
    keys: &[i64],
    values: &[(f64, f64)],
    x: &dyn Fn(f64) -> f64,
    y: &dyn Fn(f64) -> f64,
) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut last: Option<i64> = None;
    for (&at, &(t, v)) in keys.iter().zip(values) {
        if last != Some(at - BIN_SECS) || out.is_empty() {
            out.push(Vec::new());
        }
        if let Some(seg) = out.last_mut() {
            seg.push((x(t), y(v)));
        }
        last = Some(at);
    }
    out
}

fn line(s: &mut String, class: &str, colour: &str, segments: &[Vec<(f64, f64)>]) {
    for seg in segments {
        match seg.as_slice() {
            [] => {}
            [(x, y)] => {
                let _ = writeln!(
                    s,
                    "<circle class=\"{class}\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2\" fill=\"{colour}\"/>"
                );
            }
            _ => {
                let pts: Vec<String> = seg.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                let _ = writeln!(
                    s,
                    "<polyline class=\"{class}\" fill=\"none\" stroke=\"{colour}\" \
                     stroke-width=\"1.6\" stroke-linejoin=\"round\" points=\"{}\"/>",
                    pts.join(" ")
                );
            }
        }
    }
}

fn legend(s: &mut String) {
    let items = [
        (ERROR_COLOUR, "error rate", false),
        (P50_COLOUR, "p50 latency", false),
        (P99_COLOUR, "p99 latency", false),
        (MARKER_COLOUR, "what happened", true),
    ];
    let mut x = PLOT_LEFT;
    for (colour, label, dashed) in items {
        let dash = if dashed {
            " stroke-dasharray=\"4 3\""
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"14\" x2=\"{:.1}\" y2=\"14\" stroke=\"{colour}\" \
             stroke-width=\"2\"{dash}/><text x=\"{:.1}\" y=\"18\" fill=\"#1f2328\">{label}</text>",
            x + 18.0,
            x + 23.0
        );
        x += 23.0 + label.len() as f64 * CHAR_WIDTH + 18.0;
    }
    let _ = writeln!(
        s,
        "<text x=\"{PLOT_RIGHT}\" y=\"18\" text-anchor=\"end\" fill=\"#57606a\">10-second bins</text>"
    );
}

fn panel(
    s: &mut String,
    title: &str,
    top: f64,
    bottom: f64,
    max: f64,
    step: f64,
    label: impl Fn(f64) -> String,
) {
    let _ = writeln!(
        s,
        "<text x=\"{PLOT_LEFT}\" y=\"{:.1}\" font-weight=\"bold\" fill=\"#1f2328\">{}</text>",
        top - 6.0,
        esc(title)
    );
    let ticks = (max / step).round() as i64;
    for i in 0..=ticks {
        let v = step * i as f64;
        let y = bottom - v / max * (bottom - top);
        let _ = writeln!(
            s,
            "<line x1=\"{PLOT_LEFT}\" y1=\"{y:.1}\" x2=\"{PLOT_RIGHT}\" y2=\"{y:.1}\" \
             stroke=\"{GRID_COLOUR}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" \
             fill=\"#57606a\">{}</text>",
            PLOT_LEFT - 6.0,
            y + 4.0,
            esc(&label(v))
        );
    }
    let _ = writeln!(
        s,
        "<rect x=\"{PLOT_LEFT}\" y=\"{top}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" \
         stroke=\"#afb8c1\"/>",
        PLOT_RIGHT - PLOT_LEFT,
        bottom - top
    );
}

fn no_data(s: &mut String, top: f64, bottom: f64, note: &str) {
    let _ = writeln!(
        s,
        "<text class=\"no-data\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
         fill=\"#57606a\">{}</text>",
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        (top + bottom) / 2.0 + 4.0,
        esc(note)
    );
}

/// A round upper bound for the axis and the step between its 3 to 5 ticks.
fn nice_scale(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil().max(1.0) * step, step)
}

fn tick_number(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        mail::trim_number(v)
    } else {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn time_axis(s: &mut String, from: i64, to: i64) {
    let span = (to - from) as f64;
    let step = [
        30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400,
    ]
    .into_iter()
    .find(|&st| span / st as f64 <= 8.0)
    .unwrap_or(86_400);
    let first = from.div_euclid(step) * step + if from.rem_euclid(step) == 0 { 0 } else { step };
    let mut at = first;
    while at < to {
        let x = chart_x(at as f64, from, to);
        let label = chrono::DateTime::from_timestamp(at, 0)
            .map(|d| {
                if step < 60 {
                    d.format("%H:%M:%S").to_string()
                } else {
                    d.format("%H:%M").to_string()
                }
            })
            .unwrap_or_default();
        for (top, bottom) in [(ERRORS_TOP, ERRORS_BOTTOM), (LATENCY_TOP, LATENCY_BOTTOM)] {
            let _ = writeln!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom}\" \
                 stroke=\"{GRID_COLOUR}\"/>"
            );
        }
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{LATENCY_BOTTOM}\" x2=\"{x:.1}\" y2=\"{:.1}\" \
             stroke=\"#57606a\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
             fill=\"#57606a\">{label}</text>",
            LATENCY_BOTTOM + 4.0,
            LATENCY_BOTTOM + 16.0
        );
        at += step;
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#57606a\">time (UTC)</text>",
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        LATENCY_BOTTOM + 34.0
    );
}

/// Vertical dashed lines across both panels, each labelled above them; labels that would
/// overlap go to the next row down.
fn marker_lines(s: &mut String, markers: &[Marker], from: i64, to: i64) {
    let mut sorted: Vec<&Marker> = markers
        .iter()
        .filter(|m| m.at >= from as f64 && m.at <= to as f64)
        .collect();
    sorted.sort_by(|a, b| a.at.total_cmp(&b.at));
    // The right end of the last label in each row.
    let mut row_end = [f64::NEG_INFINITY; LABEL_ROWS];
    for m in sorted {
        let x = chart_x(m.at, from, to);
        let width = m.label.chars().count() as f64 * CHAR_WIDTH;
        // Labels start at the line, or end at it near the right edge.
        let (left, anchor) = if x + width > CHART_WIDTH - 4.0 {
            (x - width, "end")
        } else {
            (x, "start")
        };
        let (row, left, anchor) = match (0..LABEL_ROWS).find(|&r| row_end[r] + 4.0 <= left) {
            Some(row) => (row, left, anchor),
            None => {
                // Every row is taken here: the label goes after the shortest row's last one.
                let row = (0..LABEL_ROWS)
                    .min_by(|&a, &b| row_end[a].total_cmp(&row_end[b]))
                    .unwrap_or(0);
                (row, row_end[row] + 4.0, "start")
            }
        };
        row_end[row] = left + width;
        let label_y = LABEL_ROW_TOP + LABEL_ROW_HEIGHT * row as f64;
        let text_x = if anchor == "end" { x - 2.0 } else { left + 2.0 };
        let _ = writeln!(
            s,
            "<line class=\"marker\" data-label=\"{}\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" \
             y2=\"{LATENCY_BOTTOM}\" stroke=\"{MARKER_COLOUR}\" stroke-width=\"1\" \
             stroke-dasharray=\"4 3\"/><text x=\"{text_x:.1}\" y=\"{label_y:.1}\" \
             text-anchor=\"{anchor}\" fill=\"#1f2328\">{}</text>",
            esc(&m.label),
            label_y + 2.0,
            esc(&m.label)
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::daemon::rollback::RollbackReport;
    use crate::git::CommandRecord;
    use crate::hook::{HookOutcome, HookStatus};
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
            revert_commit: Some(REVERT.into()),
            escalation: (!hook_ok).then(|| {
                format!("the revert {REVERT} is committed but the redeploy hook failed: exit 3")
            }),
            steps: vec![
                json!({"step": "git revert", "result": "reverted", "commit": REVERT,
                       "commands": [command(&["revert", "--no-edit", COMMIT], Some(0), ""),
                                    command(&["commit", "-F", "-"], Some(0), "")]}),
                json!({"step": "git push", "remote": "origin", "branch": "main",
                       "result": "pushed",
                       "command": command(&["push", "origin", "HEAD:refs/heads/main"], Some(0), "")}),
                json!({"step": "redeploy hook", "command": ["/usr/local/bin/redeploy", "--env", "prod west"],
                       "summary": hook.summary(), "outcome": hook}),
            ],
        })
        .unwrap()
    }

    fn event(seq: i64, at: f64, kind: &str, detail: Value) -> EventRecord {
        EventRecord {
            seq,
            at,
            change_id: Some("chg_0123456789ab".into()),
            kind: kind.into(),
            detail,
        }
    }

    fn moved(seq: i64, at: f64, from: &str, to: &str, note: Option<&str>) -> EventRecord {
        let mut detail = json!({"from": from, "to": to, "decided_at": null, "note": note});
        if to == "regressed" {
            detail["decided_at"] = json!(T0 + 30.6);
            detail["report"] = report();
        }
        event(seq, at, "state_changed", detail)
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
        };
        let events = vec![
            event(1, T0 + 0.2, "change_created", json!({"commit": COMMIT, "kind": "ai"})),
            moved(2, T0 + 31.0, "watching", "regressed", None),
            moved(
                3,
                T0 + 31.0,
                "regressed",
                "rolling_back",
                Some("rolling back: errors 1.00% -> 9.03% (9.0x), e-value 412 >= 167"),
            ),
            event(4, T0 + 35.5, "rollback", rollback(true)),
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
                "recovery_check",
                json!({"verdict": "healthy", "report": {"signals": [
                    {"signal": "errors", "baseline": {"rate": 0.01}, "after": {"rate": 0.0095}}
                ]}}),
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
                "email_queued",
                json!({"subject": "[guardian] shop: rolled back \u{2014} commit 3f9a2c1b7d"}),
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
        }
    }

    /// Compares with the checked-in expectation, or rewrites it under `UPDATE_EXPECT=1`.
    fn expect_file(name: &str, got: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/it/expected")
            .join(name);
        if std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1") {
            std::fs::write(&path, got).unwrap();
            return;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "no expectation at {} ({e}); run with UPDATE_EXPECT=1 to write it",
                path.display()
            )
        });
        assert!(
            want == got,
            "{name} differs from the expectation (UPDATE_EXPECT=1 rewrites it):\n{got}"
        );
    }

    #[test]
    fn the_post_mortem_of_a_rollback_reads_as_expected() {
        let pm = Postmortem::new(story());
        let md = pm.markdown();
        expect_file("postmortem_rollback.md", &md);
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
                "## Actions and outcomes",
                "## How to undo the undo",
            ]
        );
        assert!(
            md.contains("| 16:00:30 | +30.6 s | Decision: regressed"),
            "{md}"
        );
        assert!(
            md.contains("| 16:02:38 | +2 min 39 s | Recovered. Reverted and redeployed"),
            "{md}"
        );
        assert!(md.contains("guardian postmortem chg_0123456789ab --svg > chart.svg"));
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

    #[test]
    fn marker_labels_never_overlap_however_close_the_events() {
        let at = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 900.0, 901.0];
        let markers: Vec<Marker> = at
            .iter()
            .enumerate()
            .map(|(i, &dt)| Marker {
                at: T0 + dt,
                label: format!("event number {i}"),
            })
            .collect();
        let svg = chart(&[], &markers, None, T - 600, T + 902);
        check_xml(&svg).unwrap();
        // (left, right, y) of each label, from its x, anchor and length.
        let boxes: Vec<(f64, f64, String)> = svg
            .lines()
            .filter(|l| l.contains("class=\"marker\""))
            .map(|l| {
                let text = &l[l.find("<text").unwrap()..];
                let attr = |name: &str| {
                    let start = text.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
                    text[start..start + text[start..].find('"').unwrap()].to_owned()
                };
                let x: f64 = attr("x").parse().unwrap();
                let width = "event number 0".len() as f64 * CHAR_WIDTH;
                let left = if attr("text-anchor") == "end" {
                    x - width
                } else {
                    x
                };
                (left, left + width, attr("y"))
            })
            .collect();
        assert_eq!(boxes.len(), at.len());
        for (i, a) in boxes.iter().enumerate() {
            assert!(a.0 >= 0.0 && a.1 <= CHART_WIDTH, "{a:?} is off the chart");
            for b in &boxes[i + 1..] {
                let apart = a.2 != b.2 || a.1 <= b.0 || b.1 <= a.0;
                assert!(apart, "{a:?} overlaps {b:?}");
            }
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
    fn points_out_of_order_or_given_twice_are_one_line() {
        let p = |at: i64, requests: u64, p50: f64| SeriesPoint {
            at,
            requests,
            errors: 1,
            p50_ms: Some(p50),
            p99_ms: None,
        };
        // Stored bins, and the daemon's live snapshot overlapping the last one.
        let points = [
            p(T + 20, 10, 5.0),
            p(T, 10, 5.0),
            p(T + 10, 10, 5.0),
            p(T + 20, 30, 9.0),
        ];
        assert_eq!(
            merge_bins(&points, T - 600, T + 600),
            [
                p(T, 10, 5.0),
                p(T + 10, 10, 5.0),
                SeriesPoint {
                    errors: 2,
                    ..p(T + 20, 40, 9.0)
                }
            ]
        );
        let svg = chart(&points, &[], None, T - 600, T + 600);
        assert_eq!(
            svg.matches("<polyline class=\"errors\"").count(),
            1,
            "{svg}"
        );
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
            "rollback",
            json!({"revert_commit": REVERT, "steps": [{"step": "redeploy hook",
                   "summary": "exit 0", "outcome": {"status": {"kind": "succeeded"},
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
    fn an_escalation_says_a_person_must_act_and_marks_it() {
        let mut input = story();
        input.change.state = ChangeState::Escalated;
        input.change.note =
            Some("the revert is committed but the redeploy hook failed: exit 3".into());
        input.events.truncate(3);
        input
            .events
            .push(event(4, T0 + 36.0, "rollback", rollback(false)));
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

    #[test]
    fn markdown_escaping_keeps_text_as_text() {
        assert_eq!(
            md_text("a*b_c _d [e](f) <g> #h |i", false),
            "a\\*b_c \\_d \\[e\\](f) \\<g> #h |i"
        );
        assert_eq!(md_text("a|b", true), "a\\|b");
        assert_eq!(md_inlines(&[t("# heading")], false), "\\# heading");
        assert_eq!(md_inlines(&[t("- item")], false), "\\- item");
        assert_eq!(md_inlines(&[t("12. item")], false), "12\\. item");
        assert_eq!(md_inlines(&[t("> quote")], false), "\\> quote");
        assert_eq!(md_code_span("a``b", false), "```a``b```");
        assert_eq!(md_code_span("a|b", true), "`a\\|b`");
        assert_eq!(safe_url("https://x.example/a"), Some("https://x.example/a"));
        assert_eq!(safe_url("javascript:alert(1)"), None);
        assert_eq!(safe_url("https://x.example/\"onmouseover"), None);
        assert_eq!(
            esc("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn offsets_read_naturally() {
        assert_eq!(offset(0.0), "+0 s");
        assert_eq!(offset(30.6), "+30.6 s");
        assert_eq!(offset(158.6), "+2 min 39 s");
        assert_eq!(offset(-600.0), "\u{2212}10 min 00 s");
        assert_eq!(offset(3_725.0), "+1 h 02 min");
        assert_eq!(nice_scale(9.0), (10.0, 2.5));
        assert_eq!(nice_scale(0.0), (1.0, 0.25));
    }

    /// A strict check that `s` is well-formed XML as this module writes it: one root element,
    /// every tag closed in order, attributes quoted and unique, `&` only in an entity, no `<`
    /// in text.
    fn check_xml(s: &str) -> Result<(), String> {
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
}
