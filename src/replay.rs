//! `guardian replay`: runs the decision core over recorded traffic around a change, with no side
//! effects, and says what it would have decided and when.
//!
//! The recording is streamed one line at a time (memory stays flat however big it is) and
//! reading stops as soon as the verdict is final. A recording that ends before the watch window
//! does is `inconclusive`: missing data never makes a change healthy.

use std::fmt::Write as _;
use std::io::BufRead;
use std::ops::ControlFlow;

use serde::Serialize;

use crate::config::Config;
use crate::core::{
    BaselineWindow, DeployWindow, Design, Landing, Monitor, Report, RouteBaseline, SignalKind,
    SignalReport, Verdict,
};
use crate::input::{self, Format, LineError};
pub use crate::report::evidence::verdict_name;
pub use crate::report::units::utc;
use crate::report::units::{count, duration, evalue, ms_number, percent, quantile, ratio};

/// How far back in time an event may be, relative to the latest one seen, before the recording
/// counts as unsorted. Logs written when requests end are a little out of order.
pub const SORT_SLACK_SECS: f64 = 1.0;

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the change time must be finite unix seconds, got {0}")]
    ChangeAt(f64),
    #[error("no change to judge: give --change-at")]
    NoChange,
    #[error("two changes at the same time, {0}: give each --change-at once")]
    SameTime(f64),
    /// A deploy start that is not before its change.
    #[error(
        "--deploy-started-at {started} for the change at {change_at} must be unix seconds no \
         later than the change"
    )]
    DeployStart { change_at: f64, started: f64 },
    /// A line that could not be read, or that is out of order.
    #[error(transparent)]
    Line(#[from] LineError),
    /// The change time is not inside the recording, so there is nothing to compare: most
    /// likely a wrong `--change-at`.
    #[error(
        "--change-at {change_at} ({}) is {where_} ({}): {why}",
        utc(*change_at), utc(*at)
    )]
    ChangeOutside {
        change_at: f64,
        /// The first or last request's time.
        at: f64,
        where_: &'static str,
        why: &'static str,
    },
}

/// What a replay decided about one change, and what it rests on.
#[derive(Clone, Debug)]
pub struct Replay {
    /// Regressed, healthy or inconclusive; never watching.
    pub verdict: Verdict,
    /// Another change landed before this one was decided: its verdict could no longer be told
    /// apart from the next change's (`verdict` is then `inconclusive`).
    pub superseded: bool,
    /// Traffic time of the decision: when the evidence crossed the line, or when the watch
    /// window ended for healthy. `None` when inconclusive.
    pub decided_at: Option<f64>,
    pub change_at: f64,
    /// The core's evidence at the end. Its `verdict` is the core's own: `watching` when the
    /// recording ended first.
    pub report: Report,
    /// Lines read, blank ones included, when this change's verdict was reached (or at the end).
    pub lines_read: u64,
    pub first_ts: Option<f64>,
    pub last_ts: Option<f64>,
    /// The recording ended before the watch window did, with the core still watching.
    pub recording_ended_early: bool,
    /// What a reader should know about how the verdict came about, in words.
    pub notes: Vec<String>,
}

/// A change to replay: when it landed and, if known, when its deploy began.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChangeSpec {
    pub at: f64,
    pub deploy_started_at: Option<f64>,
}

/// Replays the traffic read from `reader` (in `format`) around a change that landed at
/// `change_at` (unix seconds), with the detector and input settings of `config`.
pub fn replay<R: BufRead>(
    reader: R,
    format: Format,
    change_at: f64,
    config: &Config,
) -> Result<Replay, ReplayError> {
    let change = ChangeSpec {
        at: change_at,
        deploy_started_at: None,
    };
    let mut all = replay_changes(reader, format, &[change], config)?;
    Ok(all.remove(0))
}

/// Replays a recording with several changes in it (a day and its deploys), judging each in
/// turn as the daemon would without rollback configured: each against the known-good traffic
/// before its deploy (earlier healthy changes included, deploy windows and regressed changes
/// not), a change still watched when the next lands is superseded, an inconclusive window is
/// extended when `[daemon.on_inconclusive]` says so for human changes. Recorded traffic cannot
/// show what a rollback would have changed, so none is simulated. One result per change, in
/// time order.
pub fn replay_changes<R: BufRead>(
    reader: R,
    format: Format,
    changes: &[ChangeSpec],
    config: &Config,
) -> Result<Vec<Replay>, ReplayError> {
    let changes = check_changes(changes)?;
    let extend = config
        .daemon
        .as_ref()
        .is_some_and(|d| d.on_inconclusive.human == crate::config::InconclusivePolicy::Extend);
    let error_status_min = config.input.error_status_min;
    let mut run = Run {
        monitor: Monitor::new(config.detector.clone()),
        changes: &changes,
        landed: 0,
        extended: false,
        results: Vec::with_capacity(changes.len()),
        extend,
    };
    let mut first_ts = None;
    let mut latest = f64::NEG_INFINITY;
    let mut latest_line = 0;
    let mut unsorted = None;

    let read = input::for_each_event(reader, format, |line, event| {
        let ts = event.ts;
        if ts < latest - SORT_SLACK_SECS {
            unsorted = Some((ts, latest, latest_line));
            return ControlFlow::Break(());
        }
        first_ts.get_or_insert(ts);
        if ts >= latest {
            latest = ts;
            latest_line = line;
        }
        if run.advance(ts, line) {
            return ControlFlow::Break(());
        }
        run.monitor
            .observe_request(&event.request(error_status_min));
        ControlFlow::Continue(())
    });
    let lines_read = read?;
    if let Some((ts, seen, seen_line)) = unsorted {
        return Err(LineError {
            line: lines_read,
            message: format!(
                "events must be sorted by time: ts {ts} is earlier than {seen} on line {seen_line}"
            ),
        }
        .into());
    }

    let last_ts = first_ts.map(|_| latest);
    if let (Some(first), Some(last)) = (first_ts, last_ts) {
        let outside = if first >= changes[0].at {
            Some((
                changes[0].at,
                first,
                "before the recording's first request",
                "there is no traffic before the change to compare with",
            ))
        } else if run.landed < changes.len() {
            // Every change up to the last request has landed: the next one is after it.
            Some((
                changes[run.landed].at,
                last,
                "after the recording's last request",
                "there is no traffic after the change to judge",
            ))
        } else {
            None
        };
        if let Some((change_at, at, where_, why)) = outside {
            return Err(ReplayError::ChangeOutside {
                change_at,
                at,
                where_,
                why,
            });
        }
    }
    match last_ts {
        Some(last) => run.judge(last, lines_read),
        // No requests at all: nothing to judge any change on.
        None => {
            while run.landed < changes.len() {
                run.land(lines_read);
                run.finish(Verdict::Watching, lines_read);
            }
        }
    }
    if run.results.len() < changes.len() {
        let verdict = run.monitor.verdict().unwrap_or(Verdict::Watching);
        run.finish(verdict, lines_read);
    }
    Ok(run
        .results
        .into_iter()
        .map(|(mut r, ended_early)| {
            r.first_ts = first_ts;
            r.last_ts = last_ts;
            r.recording_ended_early = ended_early;
            r.notes = notes(&r, config);
            r
        })
        .collect())
}

/// The changes in time order, each with a finite time and a deploy that began before it.
fn check_changes(changes: &[ChangeSpec]) -> Result<Vec<ChangeSpec>, ReplayError> {
    if changes.is_empty() {
        return Err(ReplayError::NoChange);
    }
    for c in changes {
        if !c.at.is_finite() {
            return Err(ReplayError::ChangeAt(c.at));
        }
        if let Some(d) = c.deploy_started_at {
            if !d.is_finite() || d > c.at {
                return Err(ReplayError::DeployStart {
                    change_at: c.at,
                    started: d,
                });
            }
        }
    }
    let mut sorted = changes.to_vec();
    sorted.sort_by(|a, b| a.at.total_cmp(&b.at));
    if let Some(w) = sorted.windows(2).find(|w| w[0].at == w[1].at) {
        return Err(ReplayError::SameTime(w[0].at));
    }
    Ok(sorted)
}

/// The replay's state between events: the core, which changes have landed, what was decided.
struct Run<'a> {
    monitor: Monitor,
    changes: &'a [ChangeSpec],
    /// How many changes have landed.
    landed: usize,
    /// The current change's window was extended once already.
    extended: bool,
    /// Per change decided so far: the result, and whether the recording ended first.
    results: Vec<(Replay, bool)>,
    extend: bool,
}

impl Run<'_> {
    /// Lets time pass to `ts` (an event about to be observed): changes due by then land, the
    /// current watch is judged. True when every change is decided and reading can stop.
    fn advance(&mut self, ts: f64, line: u64) -> bool {
        while self.landed < self.changes.len() && self.changes[self.landed].at <= ts {
            let at = self.changes[self.landed].at;
            self.judge(at, line);
            self.land(line);
        }
        if self.landed > 0 {
            self.judge(ts, line);
        }
        self.results.len() == self.changes.len()
    }

    /// Lands the next change; a watch still under way is superseded by it.
    fn land(&mut self, line: u64) {
        if self.results.len() < self.landed {
            self.finish(Verdict::Inconclusive, line);
            if let Some((r, _)) = self.results.last_mut() {
                r.superseded = true;
            }
        }
        let c = self.changes[self.landed];
        let settings = self.monitor.settings().clone();
        self.monitor.change_landed_with(
            Landing {
                at: c.at,
                deploy_started_at: c.deploy_started_at,
            },
            &settings,
        );
        self.landed += 1;
        self.extended = false;
    }

    /// Judges the current change up to `now`; records its verdict when it is final.
    fn judge(&mut self, now: f64, line: u64) {
        if self.results.len() >= self.landed {
            return;
        }
        let verdict = self.monitor.tick(now);
        if verdict == Verdict::Inconclusive && self.extend && !self.extended {
            let end = self
                .monitor
                .report()
                .map_or(now, |r| r.watch_ends_at.min(now));
            self.monitor.extend_watch(end);
            self.extended = true;
            self.monitor.tick(now);
            return;
        }
        if is_final(verdict) {
            self.finish(verdict, line);
        }
    }

    /// Records the current change's result and ends its watch.
    fn finish(&mut self, core_verdict: Verdict, line: u64) {
        let Some(report) = self.monitor.report() else {
            return;
        };
        let ended_early = core_verdict == Verdict::Watching;
        let verdict = if ended_early {
            Verdict::Inconclusive
        } else {
            core_verdict
        };
        self.results.push((
            Replay {
                verdict,
                superseded: false,
                decided_at: report.decided_at,
                change_at: report.change_at,
                report,
                lines_read: line,
                first_ts: None,
                last_ts: None,
                recording_ended_early: false,
                notes: Vec::new(),
            },
            ended_early,
        ));
        if !ended_early {
            self.monitor.end_watch();
        }
    }
}

fn is_final(v: Verdict) -> bool {
    matches!(
        v,
        Verdict::Regressed | Verdict::Healthy | Verdict::Inconclusive
    )
}

/// What the reader should know: gaps in the recording, and why a verdict is inconclusive.
fn notes(r: &Replay, config: &Config) -> Vec<String> {
    let d = &config.detector;
    let mut notes = Vec::new();
    let change_at = r.change_at;
    match r.first_ts {
        None => notes.push("the recording holds no requests".to_owned()),
        Some(first) if change_at - first < f64::from(d.baseline_secs) => notes.push(format!(
            "the recording starts only {} before the change, so the baseline covers that \
             instead of baseline_secs = {}",
            duration(change_at - first),
            d.baseline_secs
        )),
        Some(_) => {}
    }
    if r.recording_ended_early {
        match r.last_ts {
            Some(last) if last >= change_at => notes.push(format!(
                "the recording ended {} after the change ({}), before the {} s watch window \
                 did; missing data never makes a change healthy",
                duration(last - change_at),
                utc(last),
                d.watch_secs
            )),
            _ => {}
        }
    } else if r.verdict == Verdict::Inconclusive {
        let report = &r.report;
        let errors = report
            .signals
            .iter()
            .find(|s| s.signal == SignalKind::Errors);
        if report.requests_after < d.min_requests_after {
            notes.push(format!(
                "only {} requests after the change; calling it healthy needs at least \
                 min_requests_after = {}",
                count(report.requests_after),
                d.min_requests_after
            ));
        }
        if let Some(why) = errors.and_then(|s| s.not_compared.as_ref()) {
            notes.push(format!("errors were not compared: {why}"));
        }
        for s in report.signals.iter().filter(|s| s.leans_worse) {
            notes.push(format!(
                "{}: too few to bound the harm, and what there is leans towards harm ({} of {} \
                 requests before, {} of {} after): not shown healthy",
                signal_name(s.signal),
                count(s.baseline.events),
                count(s.baseline.requests),
                count(s.after.events),
                count(s.after.requests)
            ));
        }
        for s in report
            .signals
            .iter()
            .filter(|s| s.within_limits == Some(false) && s.after.requests > 0 && !s.left_out)
        {
            let bound = match s.ratio_upper_bound {
                Some(b) => format!("could be up to {} the baseline's rate", ratio(b)),
                None => "could not be bounded".to_owned(),
            };
            notes.push(format!(
                "{} {bound} (at {}% confidence), more than healthy_max_ratio = {}: not enough \
                 evidence to call the change healthy",
                signal_name(s.signal),
                d.healthy_confidence * 100.0,
                d.healthy_max_ratio
            ));
        }
    }
    if !r.superseded {
        notes.extend(r.report.baseline_notes.iter().cloned());
    }
    if r.report.unlabelled_requests > 0 {
        notes.push(format!(
            "{} requests after the change had no arm label while others did, and were not used",
            r.report.unlabelled_requests
        ));
    }
    notes
}

impl Replay {
    /// The verdict as the JSON output spells it.
    pub fn verdict_name(&self) -> &'static str {
        if self.superseded {
            "superseded"
        } else {
            verdict_name(self.verdict)
        }
    }

    /// The JSON object `guardian replay --json` prints, on one line, keys in reading order.
    pub fn to_json(&self) -> String {
        let r = &self.report;
        let out = JsonOut {
            verdict: self.verdict_name(),
            decided_at: self.decided_at,
            decided_after_secs: self.decided_at.map(|t| t - self.change_at),
            change_at: self.change_at,
            deploy_window: r.deploy_window,
            watch_ends_at: r.watch_ends_at,
            design: r.design,
            baseline: &r.baseline_window,
            baseline_routes: &r.baseline_routes,
            requests_before: r.requests_before,
            requests_after: r.requests_after,
            lines_read: self.lines_read,
            note: (!self.notes.is_empty()).then(|| self.note()),
            not_judged: r.scope_note(),
            signals: &r.signals,
        };
        serde_json::to_string(&out).expect("the report serializes")
    }

    /// The notes as one sentence-per-note paragraph.
    pub fn note(&self) -> String {
        let mut s = String::new();
        for n in &self.notes {
            if !s.is_empty() {
                s.push(' ');
            }
            let mut chars = n.chars();
            if let Some(c) = chars.next() {
                s.extend(c.to_uppercase());
                s.push_str(chars.as_str());
            }
            s.push('.');
        }
        s
    }

    /// A summary for a person: the verdict first, then when, then one line per signal.
    pub fn render_text(&self) -> String {
        let r = &self.report;
        let mut out = String::new();
        let change = utc(self.change_at);
        let headline = match self.verdict {
            _ if self.superseded => format!(
                "SUPERSEDED: another change landed before the change at {change} was decided"
            ),
            Verdict::Regressed => {
                format!("REGRESSED: the change at {change} made the service worse")
            }
            Verdict::Healthy => {
                format!("HEALTHY: the change at {change} did not make the service measurably worse")
            }
            _ => format!(
                "INCONCLUSIVE: cannot tell whether the change at {change} made the service worse"
            ),
        };
        let _ = writeln!(out, "{headline}");
        match (self.verdict, self.decided_at) {
            (Verdict::Regressed, Some(t)) => {
                let _ = writeln!(
                    out,
                    "Decided {} after the change, at {}.",
                    duration(t - self.change_at),
                    utc(t)
                );
            }
            (Verdict::Healthy, Some(t)) => {
                let _ = writeln!(
                    out,
                    "Decided when the watch window ended, {} after the change, at {}.",
                    duration(t - self.change_at),
                    utc(t)
                );
            }
            _ => {
                let _ = writeln!(out, "No decision: not enough evidence either way.");
            }
        }
        let compared = match r.design {
            Design::BeforeAfter => format!(
                "Compared {} requests before the change with {} after it.",
                count(r.requests_before),
                count(r.requests_after)
            ),
            Design::Concurrent => format!(
                "Compared {} requests on the old version with {} on the new one, side by side.",
                count(r.requests_before),
                count(r.requests_after)
            ),
        };
        let _ = writeln!(out, "{compared}");
        if r.design == Design::BeforeAfter {
            let _ = writeln!(out, "{}", baseline_line(r));
        }
        for s in &r.signals {
            let _ = writeln!(out, "  {}", signal_line(s, r));
        }
        if let Some(scope) = r.scope_note() {
            let _ = writeln!(out, "Not part of the verdict: {scope}.");
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "Note: {}", self.note());
        }
        let _ = writeln!(
            out,
            "Read {} lines{}.",
            count(self.lines_read),
            match self.verdict {
                _ if self.recording_ended_early => "",
                Verdict::Regressed => ", stopping once decided",
                _ => ", up to the end of the watch window",
            }
        );
        out
    }
}

/// What `--json` prints. A struct rather than a map so the keys keep this order.
#[derive(Serialize)]
struct JsonOut<'a> {
    verdict: &'static str,
    decided_at: Option<f64>,
    decided_after_secs: Option<f64>,
    change_at: f64,
    /// Left out of both sides: the deploy's restart.
    deploy_window: Option<DeployWindow>,
    watch_ends_at: f64,
    design: Design,
    baseline: &'a BaselineWindow,
    baseline_routes: &'a [RouteBaseline],
    requests_before: u64,
    requests_after: u64,
    lines_read: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    /// Signals the verdict does not rest on, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    not_judged: Option<String>,
    signals: &'a [SignalReport],
}

fn signal_name(kind: SignalKind) -> &'static str {
    crate::core::watch::signal_words(kind)
}

/// One signal on one line: before vs after, the ratio, the evidence against its threshold, and
/// the counts it rests on.
fn signal_line(s: &SignalReport, r: &Report) -> String {
    let mut line = format!("{:<15}", format!("{}:", signal_name(s.signal)));
    let counts = match s.signal {
        SignalKind::Latency => {
            let levels: Vec<String> = s
                .levels
                .iter()
                .map(|l| {
                    let show = |v: Option<f64>| v.map_or("-".to_owned(), ms_number);
                    format!(
                        "{} {} -> {} ms",
                        quantile(l.quantile),
                        show(l.baseline_ms),
                        show(l.after_ms)
                    )
                })
                .collect();
            if s.baseline.requests == 0 && s.after.requests == 0 && s.not_compared.is_none() {
                line.push_str("no latencies in the recording");
            } else if let Some(why) = &s.not_compared {
                let _ = write!(line, "not compared ({why})");
            } else if levels.is_empty() {
                line.push_str("not compared (no route had enough latencies before the change)");
            } else {
                line.push_str(&levels.join(", "));
            }
            let (before, after) = sides(r.design);
            format!(
                "{} requests with a latency {before}, {} {after}",
                count(s.baseline.requests),
                count(s.after.requests)
            )
        }
        _ if s.not_compared.is_some() || s.baseline.requests == 0 => {
            let why = s
                .not_compared
                .as_deref()
                .unwrap_or("no traffic before the change");
            let _ = write!(line, "not compared ({why})");
            format!("{} requests after", count(s.after.requests))
        }
        _ => {
            if let Some(t) = s.threshold_ms {
                if s.routes_compared > 1 {
                    let _ = write!(
                        line,
                        "slower than each route's own threshold ({} ms pooled): ",
                        ms_number(t)
                    );
                } else {
                    let _ = write!(line, "slower than {} ms: ", ms_number(t));
                }
            }
            let (before, after) = sides(r.design);
            let _ = write!(
                line,
                "{} {before} -> {} {after}",
                percent(s.baseline.rate),
                percent(s.after.rate)
            );
            if let Some(e) = s.effect_ratio {
                let _ = write!(line, " ({})", ratio(e));
            }
            let (before, after) = sides(r.design);
            format!(
                "{} of {} requests {before}, {} of {} {after}",
                count(s.baseline.events),
                count(s.baseline.requests),
                count(s.after.events),
                count(s.after.requests)
            )
        }
    };
    let _ = write!(
        line,
        "; e-value {}, threshold {}",
        evalue(s.e_value),
        evalue(s.e_value_threshold)
    );
    if s.regressed {
        line.push_str(": WORSE");
        if let Some(route) = &s.worst_route {
            let _ = write!(line, ", most on {route}");
        }
    } else if s.left_out {
        line.push_str("; left out of the healthy verdict (too few in the baseline)");
    }
    let _ = write!(line, "; {counts}");
    if let Some(bursts) = crate::report::evidence::bursts(s) {
        let _ = write!(line, "; {bursts}, evidence discounted by that");
    }
    line
}

/// Where the baseline came from and what was left out of it.
fn baseline_line(r: &Report) -> String {
    let b = &r.baseline_window;
    let mut line = match (b.from, b.to) {
        (Some(from), Some(to)) => format!(
            "Baseline: {} of known-good traffic, {} to {}",
            duration(b.covered_secs),
            utc(from),
            utc(to)
        ),
        _ => "Baseline: no traffic before the change".to_owned(),
    };
    if b.excluded_secs > 0.0 {
        let _ = write!(
            line,
            " ({} in between left out: earlier deploys or incidents)",
            duration(b.excluded_secs)
        );
    }
    if let Some(w) = r.deploy_window.filter(|w| w.to > w.from) {
        let _ = write!(
            line,
            "; deploy window {} to {} left out of both sides{}",
            utc(w.from),
            utc(w.to),
            if w.given {
                ""
            } else {
                " (deploy_guard_secs before the change)"
            }
        );
    }
    line.push('.');
    line
}

/// What the two sides of the comparison are called.
fn sides(design: Design) -> (&'static str, &'static str) {
    match design {
        Design::BeforeAfter => ("before", "after"),
        Design::Concurrent => ("on the old version", "on the new"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const CHANGE: f64 = 1_764_000_000.0;

    /// `secs_before` and `secs_after` seconds of `per_sec` requests a second around the change,
    /// with an error every `every`-th request, more after the change when `after_every` says so.
    fn traffic(
        secs_before: i64,
        secs_after: i64,
        per_sec: u32,
        every: u32,
        after_every: u32,
    ) -> String {
        let mut out = String::new();
        let mut n = 0u32;
        for sec in -secs_before..secs_after {
            for i in 0..per_sec {
                n += 1;
                let ts = CHANGE + sec as f64 + f64::from(i) / f64::from(per_sec);
                let every = if sec >= 0 { after_every } else { every };
                let status = if n.is_multiple_of(every) { 500 } else { 200 };
                let latency = 20.0 + f64::from(n % 17) * 3.0;
                let _ = writeln!(
                    out,
                    r#"{{"ts": {ts}, "status": {status}, "latency_ms": {latency}, "route": "/r{}"}}"#,
                    n % 2
                );
            }
        }
        out
    }

    fn run(text: &str) -> Result<Replay, ReplayError> {
        replay(
            Cursor::new(text),
            Format::JsonLines,
            CHANGE,
            &Config::default(),
        )
    }

    #[test]
    fn a_bad_deploy_is_caught_and_reading_stops() {
        let text = traffic(1800, 600, 10, 100, 5);
        let r = run(&text).unwrap();
        assert_eq!(r.verdict, Verdict::Regressed);
        let after = r.decided_at.unwrap() - CHANGE;
        assert!(after > 0.0 && after < 120.0, "{after}");
        assert!(r.lines_read < text.lines().count() as u64);
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["verdict"], "regressed");
        assert_eq!(json["signals"][0]["signal"], "errors");
        assert!(json.get("note").is_none());
        let text = r.render_text();
        assert!(
            text.starts_with("REGRESSED: the change at 2025-11-24 16:00:00 UTC"),
            "{text}"
        );
        assert!(text.contains("WORSE"), "{text}");
    }

    #[test]
    fn steady_traffic_is_healthy_once_the_window_ends() {
        let r = run(&traffic(1800, 1801, 5, 100, 100)).unwrap();
        assert_eq!(r.verdict, Verdict::Healthy, "{}", r.render_text());
        assert_eq!(r.decided_at, Some(CHANGE + 1800.0));
        assert!(r.render_text().starts_with("HEALTHY"));
    }

    #[test]
    fn a_recording_that_ends_early_is_inconclusive() {
        let r = run(&traffic(1800, 300, 5, 100, 100)).unwrap();
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.recording_ended_early);
        assert_eq!(r.decided_at, None);
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let note = json["note"].as_str().unwrap().to_owned();
        assert!(
            note.contains("ended") && note.contains("before the 1800 s watch window"),
            "{note}"
        );
    }

    #[test]
    fn a_change_outside_the_recording_is_bad_input() {
        match run(&traffic(600, 0, 5, 100, 100)) {
            Err(e @ ReplayError::ChangeOutside { .. }) => {
                assert!(
                    e.to_string().contains("after the recording's last request"),
                    "{e}"
                )
            }
            other => panic!("expected ChangeOutside, got {other:?}"),
        }
        let r = run("").unwrap();
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert_eq!(r.lines_read, 0);
        assert!(r.note().contains("no requests"), "{}", r.note());
    }

    #[test]
    fn unsorted_events_name_the_line() {
        let text = "{\"ts\": 1764000200, \"status\": 200}\n\
                    {\"ts\": 1764000199.5, \"status\": 200}\n\
                    {\"ts\": 1764000100.5, \"status\": 200}\n";
        match run(text) {
            Err(ReplayError::Line(e)) => assert_eq!(
                e.to_string(),
                "line 3: events must be sorted by time: ts 1764000100.5 is earlier than \
                 1764000200 on line 1"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_lines_are_errors() {
        let text = "{\"ts\": 1764000200, \"status\": 200}\nnonsense\n";
        match run(text) {
            Err(ReplayError::Line(e)) => assert_eq!(e.line, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_change_time_must_be_finite() {
        let err = replay(
            Cursor::new(""),
            Format::JsonLines,
            f64::NAN,
            &Config::default(),
        );
        assert!(matches!(err, Err(ReplayError::ChangeAt(_))));
    }

    #[test]
    fn error_status_min_comes_from_the_config() {
        // 404s on every fifth request after the change: errors only if 4xx count.
        let mut text = traffic(1800, 0, 10, 100, 100);
        for i in 0..3000 {
            let status = if i % 5 == 0 { 404 } else { 200 };
            let _ = writeln!(
                text,
                r#"{{"ts": {}, "status": {status}, "latency_ms": 30, "route": "/r{}"}}"#,
                CHANGE + f64::from(i) / 10.0,
                i % 2
            );
        }
        let mut config = Config::default();
        assert_ne!(run(&text).unwrap().verdict, Verdict::Regressed);
        config.input.error_status_min = 400;
        let r = replay(Cursor::new(&text), Format::JsonLines, CHANGE, &config).unwrap();
        assert_eq!(r.verdict, Verdict::Regressed);
    }

    #[test]
    fn times_are_utc_to_the_millisecond() {
        assert_eq!(utc(CHANGE + 47.0), "2025-11-24 16:00:47 UTC");
        assert_eq!(utc(CHANGE + 0.95), "2025-11-24 16:00:00.950 UTC");
    }
}
