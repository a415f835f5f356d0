//! The `Report`: the verdict and the evidence it rests on, as the daemon stores it and reads it
//! back (rows written by earlier versions must still read).

use serde::{Deserialize, Serialize};

use super::signal::SignalKind;
use super::{Design, Verdict};
use crate::core::baseline::BaselineWindow;
use crate::core::evidence::Counts;
use crate::core::monitor::{DeployWindow, RouteBaseline};

/// The verdict and everything it rests on.
///
/// The daemon stores it as JSON (`changes.report`, and in the decision log) and reads it back
/// into this type, so rows written by earlier versions must still read: a field added later is
/// `#[serde(default)]` (or an `Option`, missing reads as `None`), and the fixtures in
/// `tests/it/fixtures/reports/` are stored reports that a test reads back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    /// Traffic time of the decision: when the evidence crossed the line, or when the window
    /// ended for `healthy`. `None` while watching or when inconclusive.
    pub decided_at: Option<f64>,
    pub design: Design,
    pub change_at: f64,
    pub watch_ends_at: f64,
    /// The change's deploy window, left out of both sides (`None` in reports stored before
    /// deploy windows existed).
    pub deploy_window: Option<DeployWindow>,
    /// Where the baseline comes from (before/after design). Reports stored before the
    /// continuous baseline have none, and read back as an empty window.
    #[serde(default)]
    pub baseline_window: BaselineWindow,
    /// The baseline per route (before/after design).
    #[serde(default)]
    pub baseline_routes: Vec<RouteBaseline>,
    /// What makes the baseline thin, in words, for the person reading: empty when it is not.
    #[serde(default)]
    pub baseline_notes: Vec<String>,
    pub requests_before: u64,
    pub requests_after: u64,
    pub unlabelled_requests: u64,
    pub signals: Vec<SignalReport>,
    /// What the verdict does not rest on, in words (see [`Report::scope_note`]).
    pub not_judged: Option<String>,
    /// The issue the change claims to fix and what became of it (`sentry::ClaimWatch`): set
    /// beside the core's evidence by the daemon, never by the core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<FixClaim>,
}

/// A change's claim to fix an issue (a Sentry issue, by its id), judged on the issue's
/// events per request after the change against the baseline's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FixClaim {
    pub issue: String,
    pub verdict: ClaimVerdict,
    /// The issue's events, and the requests they are counted against.
    pub baseline: Side,
    pub after: Side,
    /// The events expected after the change had the issue gone on at its baseline rate.
    pub expected_after: f64,
    /// The ratio of rates both tests are against: above it the issue is still firing,
    /// below it the fix is shown to work.
    pub null_ratio: f64,
    /// Evidence that the issue goes on at more than `null_ratio` of its old rate ...
    #[serde(deserialize_with = "unbounded")]
    pub still_firing_e_value: f64,
    /// ... and that it fell below it.
    #[serde(deserialize_with = "unbounded")]
    pub fixed_e_value: f64,
    /// Either crosses at this (1 / alpha).
    pub e_value_threshold: f64,
    /// The issue's quiet stretch just before the change: the requests served between its
    /// last event and the change ...
    #[serde(default)]
    pub requests_quiet_before: u64,
    /// ... and when that event was (to its 10-second bin), if it had one.
    #[serde(default)]
    pub last_event_before: Option<f64>,
    /// The events its old rate would have given in that stretch: from about ln(1 / alpha)
    /// on, the issue had already stopped before the change.
    #[serde(default)]
    pub expected_quiet_before: f64,
}

/// What became of the issue a change claims to fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimVerdict {
    /// Shown to fire at less than the null ratio of its old rate.
    Fixed,
    /// Shown to go on at more than the null ratio of its old rate: the fix is ineffective.
    StillFiring,
    /// Neither shown yet (too few of its events to tell).
    NotShown,
    /// Nothing to compare: the issue had no events in the baseline, or there were no requests.
    NotCompared,
    /// Quiet after the change, but it had already stopped before it: its old rate would have
    /// shown in the requests between its last event and the change. Its quiet is not the
    /// fix's doing, and earns it nothing.
    StoppedBefore,
}

impl ClaimVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimVerdict::Fixed => "fixed",
            ClaimVerdict::StillFiring => "still_firing",
            ClaimVerdict::NotShown => "not_shown",
            ClaimVerdict::NotCompared => "not_compared",
            ClaimVerdict::StoppedBefore => "stopped_before",
        }
    }
}

impl Report {
    /// What the verdict does not rest on, in words: signals not compared and signals left out
    /// of a healthy verdict, each with why. `None` when every signal was compared and counts.
    /// A headline that says "not worse" without it would claim more than was checked.
    pub fn scope_note(&self) -> Option<String> {
        let parts: Vec<String> = self
            .signals
            .iter()
            .filter_map(|s| {
                let name = signal_words(s.signal);
                if let Some(why) = &s.not_compared {
                    let leaning = if s.leans_worse {
                        ", and the requests past each route's threshold lean towards harm"
                    } else {
                        ""
                    };
                    Some(format!("{name} not compared ({why}){leaning}"))
                } else if s.left_out {
                    let thin = s.thin?;
                    Some(format!(
                        "{name} compared but left out of the healthy verdict (only {} in the \
                         baseline: no bound under the limit was possible)",
                        thin.baseline_events
                    ))
                } else {
                    None
                }
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// A signal's name in a sentence.
pub fn signal_words(kind: SignalKind) -> &'static str {
    match kind {
        SignalKind::Errors => "errors",
        SignalKind::SlowRequests => "slow requests",
        SignalKind::Latency => "latency",
        SignalKind::SentryEvents => "Sentry events",
    }
}

/// Requests and bad events on one side, and their rate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub requests: u64,
    pub events: u64,
    pub rate: Option<f64>,
}

impl From<Counts> for Side {
    fn from(c: Counts) -> Side {
        Side {
            requests: c.requests,
            events: c.events,
            rate: c.rate(),
        }
    }
}

/// The evidence for one signal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignalReport {
    pub signal: SignalKind,
    pub regressed: bool,
    /// Evidence against "no worse than the baseline plus tolerance"; the signal fires when it
    /// reaches `e_value_threshold` = 1 / alpha.
    #[serde(deserialize_with = "unbounded")]
    pub e_value: f64,
    pub e_value_threshold: f64,
    pub alpha: f64,
    /// The null hypothesis allows the after/before ratio of bad-event rates up to this.
    pub null_ratio: f64,
    /// Before the change (or on the old arm), pooled over the routes compared.
    pub baseline: Side,
    pub after: Side,
    /// After/before ratio of bad-event rates (for latency: of median latencies).
    pub effect_ratio: Option<f64>,
    /// Upper confidence bound on that ratio (at `healthy_confidence`).
    pub ratio_upper_bound: Option<f64>,
    /// Whether the bound is within the limits a healthy verdict needs (`None`: not judged).
    pub within_limits: Option<bool>,
    /// For slow requests: the latency above which a request is slow, pooled over routes (each
    /// route is tested against its own baseline quantile).
    pub threshold_ms: Option<f64>,
    /// Routes this signal compares, each against its own baseline.
    pub routes_compared: usize,
    /// When the signal regressed: the route whose own evidence is strongest, if it beats "every
    /// route got worse".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worst_route: Option<String>,
    /// How much burstier than independent events the signal's bad events have been (baseline
    /// and watch so far); its evidence is divided by it. For latency, the largest of its levels'.
    pub dispersion: f64,
    /// For latency: one entry per quantile compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<LevelReport>,
    /// Why the signal was not compared at all (no route qualified); `None` when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_compared: Option<String>,
    /// Set when the signal is compared but its baseline is too thin to ever bound the harm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thin: Option<Thin>,
    /// Thin, and its data favour "no worse": it does not count towards a healthy verdict
    /// (reports stored before thin signals were told apart: none was).
    #[serde(default)]
    pub left_out: bool,
    /// Cannot bound the harm (thin or not compared), and its data favour harm at the limit
    /// over no harm: a healthy verdict is withheld.
    #[serde(default)]
    pub leans_worse: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LevelReport {
    pub quantile: f64,
    pub baseline_ms: Option<f64>,
    pub after_ms: Option<f64>,
    /// Share of baseline requests slower than the baseline quantile.
    pub baseline_share_slower: Option<f64>,
    /// Share of requests after the change slower than the quantile plus tolerance.
    pub after_share_slower: Option<f64>,
    #[serde(deserialize_with = "unbounded")]
    pub e_value: f64,
    /// How bursty requests slower than this quantile have been; this level's evidence is
    /// divided by it.
    #[serde(default = "independent", skip_serializing_if = "is_independent")]
    pub dispersion: f64,
}

fn independent() -> f64 {
    1.0
}

fn is_independent(d: &f64) -> bool {
    *d == 1.0
}

/// A signal too thin to ever bound the harm under `healthy_max_ratio`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Thin {
    /// Bad events in the baseline the signal compares against.
    pub baseline_events: u64,
    /// The bound the signal would reach at best, seeing the baseline's rate all through the
    /// watch window: above `healthy_max_ratio`.
    #[serde(deserialize_with = "unbounded")]
    pub best_bound: f64,
}

/// Reads back a value that may be infinite: JSON has no infinity, and serde_json writes one
/// (an e-value that overflowed, a bound that does not exist) as `null`. These values are never
/// NaN, so `null` means infinity.
fn unbounded<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}
