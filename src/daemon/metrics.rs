//! `/metrics` and `/healthz`: what Prometheus scrapes, and whether the decision loop is alive.
//! Neither needs a token (Prometheus and a liveness probe come without one), so neither says
//! anything secret: no diff, no token, no commit message; labels are names from the
//! configuration or fixed words (kinds, states, outcomes, signals), so their number is bounded.
//!
//! Most of what `/metrics` shows is not counted here but read at scrape time from what guardian
//! already holds, so it stays true across a restart and costs nothing between scrapes:
//! - from the record (a read-only connection of the API's `Reads`): changes by kind and state,
//!   the time each took to decide, the actions that ended with their outcome and duration,
//!   emails and proposals waiting. These are counters that survive a restart of guardian.
//! - from the engine's memory (`Engine::live_status`, the copy `guardian status` takes): the
//!   watch's e-values against their thresholds, each source's lag, bad lines and failures,
//!   and whether it is failing now.
//! - counted here, at the API's edge, since guardian started ([`Metrics`]): refusals by role
//!   and proposals by decision. Both would need a scan of records that grow without bound to
//!   be read back; a restart resets them, which `rate()` and `increase()` read as a reset.
//! - the decision loop's lag: the time since its last tick, which the owner's clock notes.
//!
//! The families are encoded by `prometheus-client` in the OpenMetrics text format, following
//! Prometheus' naming: the `guardian_` prefix, base units (seconds), `_total` for counters.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;

use super::engine::{EngineError, LiveStatus};
use super::http::Api;
use crate::store::{ActionEnd, ChangeCount, ChangeKind, ChangeState, Store};

/// How long the decision loop may go without a tick before `/healthz` says it is stuck: it
/// ticks every 250 ms, and a tick waits for at most one message (milliseconds), so ten seconds
/// is forty ticks missed; systemd's watchdog (`WatchdogSec=30`) would act a little later.
pub const STUCK_AFTER_SECS: f64 = 10.0;

/// How long a scrape waits for the engine's owner to copy what lives in memory. Past that the
/// scrape answers without those families (the loop's lag says why) rather than hang.
const OWNER_WAIT: Duration = Duration::from_secs(2);

/// Upper bounds of the buckets of time to decide, in seconds: from a regression caught in
/// seconds to a watch window of an hour.
const DECISION_BUCKETS: [f64; 10] = [
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// Upper bounds of the buckets of an action's duration, in seconds: a flag turned off in a
/// second to a redeploy hook that runs until its timeout.
const ACTION_BUCKETS: [f64; 10] = [0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// How each action can end, each shown from zero so that the first of them is an increase.
const ACTION_OUTCOMES: [(&str, &[&str]); 3] = [
    ("revert", &["done", "failed"]),
    (
        "flag_off",
        &[
            "verified",
            "did_not_help",
            "failed",
            "shadow",
            "refused",
            "cut_short",
            "done",
        ],
    ),
    ("restart", &["done", "failed", "cut_short"]),
];

/// The policy's decisions on a proposal (`proposals.decision`).
const DECISIONS: [&str; 3] = ["deny", "needs_approval", "auto"];

/// What is counted at the API's edge and noted by the owner's clock; shared by the handlers
/// and the clock, each a few atomic or locked integers.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Unix seconds of the decision loop's last tick, as `f64` bits; 0: none yet.
    last_tick: AtomicU64,
    /// Refused requests since start, by role (the actor's name) and why.
    refusals: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Proposals judged since start, by the policy's decision.
    proposals: Mutex<BTreeMap<&'static str, u64>>,
    /// One scrape at a time, so scrapes can ask the owner for at most one copy at once.
    scraping: tokio::sync::Mutex<()>,
}

impl Metrics {
    /// The decision loop has just ticked, at `now`.
    pub fn ticked(&self, now: f64) {
        self.last_tick.store(now.to_bits(), Ordering::Relaxed);
    }

    /// When the decision loop last ticked.
    pub fn last_tick(&self) -> Option<f64> {
        let at = f64::from_bits(self.last_tick.load(Ordering::Relaxed));
        (at > 0.0).then_some(at)
    }

    /// A request of `role` (`agent`, `approver:NAME`, `anonymous`) was refused, for `reason`.
    pub fn refused(&self, role: &str, reason: &'static str) {
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        *refusals.entry((role.to_owned(), reason)).or_default() += 1;
    }

    /// A proposal was judged, and the policy decided `decision`.
    pub fn proposed(&self, decision: &str) {
        let decision = DECISIONS
            .iter()
            .find(|d| **d == decision)
            .copied()
            .unwrap_or("other");
        let mut proposals = self.proposals.lock().unwrap_or_else(|p| p.into_inner());
        *proposals.entry(decision).or_default() += 1;
    }

    /// The counts so far: refusals by role and reason, proposals by decision (each decision
    /// there from zero).
    fn counted(&self) -> (Vec<Refused>, Vec<(&'static str, u64)>) {
        let refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let proposals = self.proposals.lock().unwrap_or_else(|p| p.into_inner());
        let mut decided: BTreeMap<&'static str, u64> = DECISIONS.iter().map(|d| (*d, 0)).collect();
        decided.extend(proposals.iter().map(|(d, n)| (*d, *n)));
        (
            refusals
                .iter()
                .map(|((role, reason), n)| (role.clone(), *reason, *n))
                .collect(),
            decided.into_iter().collect(),
        )
    }
}

/// Refused requests: the role, why, how many.
pub type Refused = (String, &'static str, u64);

/// Everything one scrape shows, as values: encoded by [`render`].
#[derive(Debug, Default)]
pub struct Exposition {
    pub version: &'static str,
    /// Seconds since the decision loop's last tick; `None` before the first.
    pub loop_lag_secs: Option<f64>,
    /// What lives in the engine's memory; `None` when its owner did not answer in time.
    pub live: Option<Live>,
    /// What the record holds; `None` when it could not be read.
    pub stored: Option<Stored>,
    pub refusals: Vec<Refused>,
    pub proposals: Vec<(&'static str, u64)>,
}

/// What `/metrics` shows of the engine's memory.
#[derive(Debug, Default, PartialEq)]
pub struct Live {
    /// Whether a change is under watch (or being remedied, or checked).
    pub watching: bool,
    /// The watch's signals: name, e-value, and the e-value at which it fires.
    pub signals: Vec<(String, f64, f64)>,
    pub sources: Vec<SourceMetrics>,
}

/// One source of observations: a followed log, a scraped target, Sentry's API.
#[derive(Debug, Default, PartialEq)]
pub struct SourceMetrics {
    pub name: String,
    /// `log`, `scrape`, `sentry`.
    pub kind: &'static str,
    /// Seconds since it last brought something (lines read, a scrape or a poll that worked).
    pub lag_secs: Option<f64>,
    /// Lines (or rows) it could not read, since start.
    pub bad_lines: u64,
    /// Scrapes that failed, since start (`None`: not counted so, as a log's or Sentry's).
    pub failures: Option<u64>,
    /// Whether it is failing now: a log's file missing, the last scrape or poll failed.
    pub failing: bool,
    /// A source whose traffic trails the present (read from Prometheus's query API): how far
    /// behind now its traffic is complete to. The core judges no later.
    pub behind_secs: Option<f64>,
}

impl Live {
    /// Reads what `/metrics` shows out of the status' in-memory half.
    pub fn of(status: &LiveStatus) -> Live {
        let signals = match &status.watching {
            Some((_, Some(report))) => report
                .signals
                .iter()
                .map(|s| (signal_name(s.signal), s.e_value, s.e_value_threshold))
                .collect(),
            _ => Vec::new(),
        };
        let mut sources: Vec<SourceMetrics> = status
            .sources
            .iter()
            .map(|s| SourceMetrics {
                name: s.name.clone(),
                kind: "log",
                lag_secs: s.idle_secs,
                bad_lines: s.bad_lines,
                failures: None,
                failing: !s.tail.file_exists,
                behind_secs: None,
            })
            .collect();
        sources.extend(status.scrapes.iter().map(|s| SourceMetrics {
            name: s.name.clone(),
            kind: "scrape",
            lag_secs: s.age_secs,
            bad_lines: 0,
            failures: Some(s.failures),
            failing: s.last_error.is_some(),
            behind_secs: s.data_until.map(|t| (status.now - t).max(0.0)),
        }));
        if let Some(poll) = &status.sentry_poll {
            sources.push(SourceMetrics {
                name: "sentry".to_owned(),
                kind: "sentry",
                lag_secs: poll.last_ok_at.map(|at| (status.now - at).max(0.0)),
                bad_lines: poll.rows_skipped_total,
                failures: None,
                failing: poll.last_error.is_some(),
                behind_secs: None,
            });
        }
        Live {
            watching: status.watching.is_some(),
            signals,
            sources,
        }
    }
}

/// A signal's name as its report serializes it (`errors`, `slow_requests`, ...).
fn signal_name(kind: crate::core::SignalKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{kind:?}"),
    }
}

/// What `/metrics` shows of the record.
#[derive(Debug, Default, PartialEq)]
pub struct Stored {
    pub changes: Vec<ChangeCount>,
    /// Seconds from landing to decision, per decided change.
    pub decision_secs: Vec<f64>,
    pub actions: Vec<ActionEnd>,
    pub emails_pending: usize,
    /// Notifications (`[[daemon.notify]]`) queued and not yet accepted.
    pub notifications_pending: usize,
    pub proposals_waiting: usize,
}

impl Stored {
    pub fn read(store: &Store) -> Result<Stored, EngineError> {
        Ok(Stored {
            changes: store.change_counts()?,
            decision_secs: store.decision_secs()?,
            actions: store.action_ends()?,
            emails_pending: store.pending_emails()?,
            notifications_pending: store.pending_notifications()?.0,
            proposals_waiting: store.pending_proposals()?,
        })
    }
}

/// The exposition as Prometheus reads it (OpenMetrics text, ending `# EOF`).
pub fn render(exposition: Exposition) -> String {
    let mut registry = Registry::with_prefix("guardian");
    registry.register_collector(Box::new(exposition));
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        // Writing to a String does not fail; an encoder's refusal is a bug, said in the log.
        tracing::error!("metrics: cannot encode the exposition: {e}");
    }
    text
}

/// Counts `values` into buckets with these upper bounds (and `+Inf`), as `encode_histogram`
/// takes them: each bucket's own count, with the sum and the count.
fn histogram(values: impl Iterator<Item = f64>, bounds: &[f64]) -> (f64, u64, Vec<(f64, u64)>) {
    let mut buckets: Vec<(f64, u64)> = bounds
        .iter()
        .chain([f64::INFINITY].iter())
        .map(|b| (*b, 0))
        .collect();
    let (mut sum, mut count) = (0.0, 0);
    for v in values.filter(|v| v.is_finite()) {
        sum += v;
        count += 1;
        if let Some(bucket) = buckets.iter_mut().find(|(le, _)| v <= *le) {
            bucket.1 += 1;
        }
    }
    (sum, count, buckets)
}

fn counter(m: &mut MetricEncoder, labels: &impl EncodeLabelSet, v: u64) -> fmt::Result {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn gauge(
    m: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    v: impl EncodeGaugeValue,
) -> fmt::Result {
    m.encode_family(labels)?.encode_gauge(&v)
}

/// A float as the exposition can carry it: the encoder writes an infinity as `inf`, which
/// is not the format's `+Inf`, so an unbounded e-value is shown as the largest float; NaN is
/// left out.
fn shown(v: f64) -> Option<f64> {
    match v {
        v if v.is_nan() => None,
        v => Some(v.clamp(f64::MIN, f64::MAX)),
    }
}

impl Collector for Exposition {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        e.encode_descriptor(
            "build",
            "The version of guardian running.",
            None,
            MetricType::Info,
        )?
        .encode_info(&[("version", self.version)])?;

        let mut m = e.encode_descriptor(
            "decision_loop_lag",
            "Seconds since the decision loop last ticked (it ticks every 250 ms).",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        if let Some(lag) = self.loop_lag_secs.and_then(shown) {
            m.encode_gauge(&lag)?;
        }

        let mut m = e.encode_descriptor(
            "refusals",
            "Requests refused since guardian started, by role and reason (forbidden, \
             rate_limited, unauthorized).",
            None,
            MetricType::Counter,
        )?;
        for (role, reason, n) in &self.refusals {
            counter(&mut m, &[("role", role.as_str()), ("reason", reason)], *n)?;
        }

        let mut m = e.encode_descriptor(
            "proposals",
            "Proposals judged since guardian started, by the policy's decision.",
            None,
            MetricType::Counter,
        )?;
        for (decision, n) in &self.proposals {
            counter(&mut m, &[("decision", *decision)], *n)?;
        }

        if let Some(stored) = &self.stored {
            stored.encode(&mut e)?;
        }
        if let Some(live) = &self.live {
            live.encode(&mut e)?;
        }
        Ok(())
    }
}

impl Stored {
    fn encode(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        // Final states are counters (a change never leaves one); the others are gauges.
        let mut decided: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for kind in [ChangeKind::Ai, ChangeKind::Human] {
            for state in ChangeState::ALL.iter().filter(|s| s.is_final()) {
                decided.insert((kind.as_str(), state.as_str()), 0);
            }
        }
        let mut open: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (kind, state, n) in &self.changes {
            let final_state = state
                .parse::<ChangeState>()
                .is_ok_and(ChangeState::is_final);
            let into = if final_state { &mut decided } else { &mut open };
            *into.entry((kind.as_str(), state.as_str())).or_default() += n;
        }
        let mut m = e.encode_descriptor(
            "changes_decided",
            "Changes decided, by kind (ai, human) and outcome (the final state: healthy, \
             rolled_back, escalated, ...).",
            None,
            MetricType::Counter,
        )?;
        for ((kind, outcome), n) in &decided {
            counter(&mut m, &[("kind", *kind), ("outcome", *outcome)], *n)?;
        }
        let mut m = e.encode_descriptor(
            "changes_open",
            "Changes not decided yet, by kind and state (watching, regressed, rolling_back, \
             verifying, ...).",
            None,
            MetricType::Gauge,
        )?;
        for ((kind, state), n) in &open {
            gauge(&mut m, &[("kind", *kind), ("state", *state)], *n)?;
        }

        let (sum, count, buckets) =
            histogram(self.decision_secs.iter().copied(), &DECISION_BUCKETS);
        e.encode_descriptor(
            "decision",
            "Seconds from a change landing to its verdict (a regression, or the end of its \
             watch).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;

        let mut ended: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (action, outcomes) in ACTION_OUTCOMES {
            for outcome in outcomes {
                ended.insert((action, outcome), 0);
            }
        }
        for a in &self.actions {
            *ended.entry((a.action, a.outcome.as_str())).or_default() += 1;
        }
        let mut m = e.encode_descriptor(
            "actions",
            "Actions that ended, by action (revert, flag_off, restart) and outcome.",
            None,
            MetricType::Counter,
        )?;
        for ((action, outcome), n) in &ended {
            counter(&mut m, &[("action", *action), ("outcome", *outcome)], *n)?;
        }
        let mut m = e.encode_descriptor(
            "action_duration",
            "Seconds each action took, from its start to its end.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (action, _) in ACTION_OUTCOMES {
            let secs = self
                .actions
                .iter()
                .filter(|a| a.action == action)
                .filter_map(|a| a.secs);
            let (sum, count, buckets) = histogram(secs, &ACTION_BUCKETS);
            m.encode_family(&[("action", action)])?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        e.encode_descriptor(
            "emails_pending",
            "Emails queued and not yet accepted by the SMTP server.",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&(self.emails_pending as u64))?;
        e.encode_descriptor(
            "notifications_pending",
            "Notifications (webhook, Slack, Alertmanager) queued and not yet accepted.",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&(self.notifications_pending as u64))?;
        e.encode_descriptor(
            "proposals_waiting",
            "Proposals waiting for a person's approval.",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&(self.proposals_waiting as u64))?;
        Ok(())
    }
}

impl Live {
    fn encode(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        e.encode_descriptor(
            "watching",
            "1 while a change is under watch (or being remedied, or its recovery checked).",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&u64::from(self.watching))?;
        let mut m = e.encode_descriptor(
            "watch_e_value",
            "The watched change's evidence that it is worse than its baseline, per signal.",
            None,
            MetricType::Gauge,
        )?;
        for (signal, e_value, _) in &self.signals {
            if let Some(v) = shown(*e_value) {
                gauge(&mut m, &[("signal", signal.as_str())], v)?;
            }
        }
        let mut m = e.encode_descriptor(
            "watch_e_value_threshold",
            "The e-value at which each signal of the watched change fires (1 / its alpha).",
            None,
            MetricType::Gauge,
        )?;
        for (signal, _, threshold) in &self.signals {
            if let Some(v) = shown(*threshold) {
                gauge(&mut m, &[("signal", signal.as_str())], v)?;
            }
        }
        let mut m = e.encode_descriptor(
            "source_lag",
            "Seconds since each source last brought something (lines, a scrape, a poll).",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for s in &self.sources {
            if let Some(lag) = s.lag_secs.and_then(shown) {
                gauge(
                    &mut m,
                    &[("source", s.name.as_str()), ("type", s.kind)],
                    lag,
                )?;
            }
        }
        let mut m = e.encode_descriptor(
            "source_data_behind",
            "How far behind now each source read from Prometheus's query API has its traffic \
             complete to; the core judges no later.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for s in &self.sources {
            if let Some(behind) = s.behind_secs.and_then(shown) {
                gauge(
                    &mut m,
                    &[("source", s.name.as_str()), ("type", s.kind)],
                    behind,
                )?;
            }
        }
        let mut m = e.encode_descriptor(
            "source_bad_lines",
            "Lines (or rows) each source could not read, since guardian started.",
            None,
            MetricType::Counter,
        )?;
        for s in &self.sources {
            counter(
                &mut m,
                &[("source", s.name.as_str()), ("type", s.kind)],
                s.bad_lines,
            )?;
        }
        let mut m = e.encode_descriptor(
            "source_failures",
            "Scrapes of each target that failed, since guardian started.",
            None,
            MetricType::Counter,
        )?;
        for s in &self.sources {
            if let Some(failures) = s.failures {
                counter(
                    &mut m,
                    &[("source", s.name.as_str()), ("type", s.kind)],
                    failures,
                )?;
            }
        }
        let mut m = e.encode_descriptor(
            "source_failing",
            "1 while a source fails: its log file is missing, its last scrape or poll failed.",
            None,
            MetricType::Gauge,
        )?;
        for s in &self.sources {
            gauge(
                &mut m,
                &[("source", s.name.as_str()), ("type", s.kind)],
                u64::from(s.failing),
            )?;
        }
        Ok(())
    }
}

/// `/metrics` and `/healthz`, without a token.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(api)
}

/// The content type of the OpenMetrics text `render` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics(State(api): State<Api>) -> Response {
    let _one_at_a_time = api.metrics.scraping.lock().await;
    let now = (api.clock)();
    let live = match tokio::time::timeout(
        OWNER_WAIT,
        api.owner.call(move |e| Live::of(&e.live_status(now))),
    )
    .await
    {
        Ok(Ok(live)) => Some(live),
        Ok(Err(_)) => None,
        Err(_) => {
            tracing::warn!(
                "metrics: the engine did not answer within {} s; scraped without its state",
                OWNER_WAIT.as_secs()
            );
            None
        }
    };
    let stored = match api.reads.run(Stored::read).await {
        Ok(stored) => Some(stored),
        Err(e) => {
            tracing::warn!("metrics: cannot read the record: {}", e.1);
            None
        }
    };
    let (refusals, proposals) = api.metrics.counted();
    let exposition = Exposition {
        version: env!("CARGO_PKG_VERSION"),
        loop_lag_secs: api.metrics.last_tick().map(|at| (now - at).max(0.0)),
        live,
        stored,
        refusals,
        proposals,
    };
    ([(header::CONTENT_TYPE, OPENMETRICS)], render(exposition)).into_response()
}

/// What `/healthz` answers.
#[derive(Debug, PartialEq, Serialize)]
pub struct Health {
    /// `ok`, `starting` (no tick yet) or `stuck`.
    pub status: &'static str,
    /// Seconds since the decision loop's last tick.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_tick_secs_ago: Option<f64>,
}

/// 200 while the decision loop ticks; 503 before its first tick and once it has not ticked
/// for [`STUCK_AFTER_SECS`].
pub fn health(last_tick: Option<f64>, now: f64) -> (StatusCode, Health) {
    let Some(at) = last_tick else {
        let starting = Health {
            status: "starting",
            last_tick_secs_ago: None,
        };
        return (StatusCode::SERVICE_UNAVAILABLE, starting);
    };
    let ago = (now - at).max(0.0);
    let (code, status) = if ago <= STUCK_AFTER_SECS {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stuck")
    };
    (
        code,
        Health {
            status,
            last_tick_secs_ago: Some(ago),
        },
    )
}

async fn healthz(State(api): State<Api>) -> Response {
    let (code, health) = health(api.metrics.last_tick(), (api.clock)());
    (code, Json(health)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scrape in the middle of a day's work: a rollback and a healthy change decided, a
    /// watch under way, a log with bad lines, a failing scrape target, a refusal.
    fn busy_day() -> Exposition {
        let change = |kind: &str, state: &str, n| (kind.to_owned(), state.to_owned(), n);
        Exposition {
            version: "1.2.3",
            loop_lag_secs: Some(0.25),
            live: Some(Live {
                watching: true,
                signals: vec![
                    ("errors".into(), 3.5, 40.0),
                    ("latency".into(), f64::INFINITY, 40.0),
                ],
                sources: vec![
                    SourceMetrics {
                        name: "nginx \"main\"".into(),
                        kind: "log",
                        lag_secs: Some(1.5),
                        bad_lines: 2,
                        failures: None,
                        failing: false,
                        behind_secs: None,
                    },
                    SourceMetrics {
                        name: "app".into(),
                        kind: "scrape",
                        lag_secs: None,
                        bad_lines: 0,
                        failures: Some(4),
                        failing: true,
                        behind_secs: Some(42.0),
                    },
                ],
            }),
            stored: Some(Stored {
                changes: vec![
                    change("ai", "rolled_back", 1),
                    change("human", "healthy", 2),
                    change("human", "watching", 1),
                ],
                decision_secs: vec![7.0, 400.0, 400.0],
                actions: vec![ActionEnd {
                    action: "revert",
                    outcome: "done".into(),
                    secs: Some(3.0),
                }],
                emails_pending: 1,
                notifications_pending: 2,
                proposals_waiting: 0,
            }),
            refusals: vec![("agent".into(), "forbidden", 3)],
            proposals: vec![("auto", 1), ("deny", 0), ("needs_approval", 2)],
        }
    }

    /// The samples of the exposition: name (with labels) and value.
    fn samples(text: &str) -> Vec<(&str, &str)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit_once(' ').expect("a sample is a name and a value"))
            .collect()
    }

    fn value<'a>(text: &'a str, name: &str) -> &'a str {
        samples(text)
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
            .1
    }

    #[test]
    fn every_family_is_prefixed_typed_and_counters_end_in_total() {
        let text = render(busy_day());
        assert!(text.ends_with("# EOF\n"), "{text}");
        let mut types = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut words = line["# TYPE ".len()..].split(' ');
            let (name, kind) = (words.next().unwrap(), words.next().unwrap());
            assert!(name.starts_with("guardian_"), "{line}");
            types.insert(name.to_owned(), kind.to_owned());
        }
        for (sample, _) in samples(&text) {
            let name = sample.split('{').next().unwrap();
            assert!(name.starts_with("guardian_"), "{sample}");
            let family = types
                .keys()
                .filter(|f| name.starts_with(f.as_str()))
                .max_by_key(|f| f.len())
                .unwrap_or_else(|| panic!("{sample} belongs to no family"));
            let suffix = &name[family.len()..];
            let allowed: &[&str] = match types[family].as_str() {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            assert!(allowed.contains(&suffix), "{sample} in a {}", types[family]);
        }
        // Durations are in seconds, and say so in their names.
        for family in [
            "guardian_decision_seconds",
            "guardian_action_duration_seconds",
        ] {
            assert_eq!(types[family], "histogram", "{family}");
        }
        assert_eq!(types["guardian_source_lag_seconds"], "gauge");
        assert_eq!(value(&text, "guardian_build_info{version=\"1.2.3\"}"), "1");
    }

    #[test]
    fn a_rollback_is_counted_with_its_time_to_decide_and_its_action() {
        let text = render(busy_day());
        let v = |name: &str| value(&text, name).to_owned();
        assert_eq!(
            v("guardian_changes_decided_total{kind=\"ai\",outcome=\"rolled_back\"}"),
            "1"
        );
        assert_eq!(
            v("guardian_changes_decided_total{kind=\"human\",outcome=\"healthy\"}"),
            "2"
        );
        // Outcomes not seen yet are there at zero, so the first one is an increase.
        assert_eq!(
            v("guardian_changes_decided_total{kind=\"ai\",outcome=\"escalated\"}"),
            "0"
        );
        // A change still watched is not a decision.
        assert_eq!(
            v("guardian_changes_open{kind=\"human\",state=\"watching\"}"),
            "1"
        );
        assert!(!text.contains("outcome=\"watching\""), "{text}");
        // Time to decide: one change in 7 s, two in 400 s; buckets are cumulative.
        assert_eq!(v("guardian_decision_seconds_count"), "3");
        assert_eq!(v("guardian_decision_seconds_sum"), "807.0");
        assert_eq!(v("guardian_decision_seconds_bucket{le=\"5.0\"}"), "0");
        assert_eq!(v("guardian_decision_seconds_bucket{le=\"10.0\"}"), "1");
        assert_eq!(v("guardian_decision_seconds_bucket{le=\"600.0\"}"), "3");
        assert_eq!(v("guardian_decision_seconds_bucket{le=\"+Inf\"}"), "3");
        assert_eq!(
            v("guardian_actions_total{action=\"revert\",outcome=\"done\"}"),
            "1"
        );
        assert_eq!(
            v("guardian_actions_total{action=\"revert\",outcome=\"failed\"}"),
            "0"
        );
        assert_eq!(
            v("guardian_action_duration_seconds_count{action=\"revert\"}"),
            "1"
        );
        assert_eq!(
            v("guardian_action_duration_seconds_count{action=\"restart\"}"),
            "0"
        );
    }

    #[test]
    fn the_watch_sources_and_counts_at_the_edge_are_shown() {
        let text = render(busy_day());
        let v = |name: &str| value(&text, name).to_owned();
        assert_eq!(v("guardian_watching"), "1");
        assert_eq!(v("guardian_watch_e_value{signal=\"errors\"}"), "3.5");
        // An unbounded e-value is the largest float (the encoder has no `+Inf` for gauges).
        assert_eq!(
            v("guardian_watch_e_value{signal=\"latency\"}").parse::<f64>(),
            Ok(f64::MAX)
        );
        assert_eq!(
            v("guardian_watch_e_value_threshold{signal=\"errors\"}"),
            "40.0"
        );
        // A name from the configuration is escaped, never breaks the line.
        assert_eq!(
            v("guardian_source_lag_seconds{source=\"nginx \\\"main\\\"\",type=\"log\"}"),
            "1.5"
        );
        assert_eq!(
            v("guardian_source_bad_lines_total{source=\"nginx \\\"main\\\"\",type=\"log\"}"),
            "2"
        );
        assert_eq!(
            v("guardian_source_failures_total{source=\"app\",type=\"scrape\"}"),
            "4"
        );
        assert_eq!(
            v("guardian_source_failing{source=\"app\",type=\"scrape\"}"),
            "1"
        );
        // A log's failures are not counted as a scrape's are: none shown rather than a zero.
        assert!(
            !text.contains("guardian_source_failures_total{source=\"nginx"),
            "{text}"
        );
        // Traffic read back from Prometheus's query API says how far behind it is complete to.
        assert_eq!(
            v("guardian_source_data_behind_seconds{source=\"app\",type=\"scrape\"}"),
            "42.0"
        );
        assert!(
            !text.contains("guardian_source_data_behind_seconds{source=\"nginx"),
            "{text}"
        );
        // A target never scraped has no lag to show, rather than a made-up one.
        assert!(
            !text.contains("guardian_source_lag_seconds{source=\"app\""),
            "{text}"
        );
        assert_eq!(
            v("guardian_refusals_total{role=\"agent\",reason=\"forbidden\"}"),
            "3"
        );
        assert_eq!(
            v("guardian_proposals_total{decision=\"needs_approval\"}"),
            "2"
        );
        assert_eq!(v("guardian_emails_pending"), "1");
        assert_eq!(v("guardian_notifications_pending"), "2");
        assert_eq!(v("guardian_decision_loop_lag_seconds"), "0.25");
    }

    #[test]
    fn without_the_engine_or_the_record_a_scrape_still_answers_what_it_has() {
        let text = render(Exposition {
            version: "1.2.3",
            ..Exposition::default()
        });
        assert!(text.contains("guardian_build_info"), "{text}");
        assert!(!text.contains("guardian_watching"), "{text}");
        assert!(!text.contains("guardian_changes_decided"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn counts_at_the_edge_start_at_zero_and_keep_unknown_decisions_bounded() {
        let m = Metrics::default();
        m.proposed("auto");
        m.proposed("something new");
        m.refused("agent", "forbidden");
        m.refused("agent", "forbidden");
        let (refusals, proposals) = m.counted();
        assert_eq!(refusals, vec![("agent".to_owned(), "forbidden", 2)]);
        assert_eq!(
            proposals,
            vec![
                ("auto", 1),
                ("deny", 0),
                ("needs_approval", 0),
                ("other", 1)
            ]
        );
    }

    #[test]
    fn healthz_is_ok_while_the_loop_ticks_and_503_before_and_once_it_stops() {
        let now = 1_000.0;
        assert_eq!(health(None, now).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(health(None, now).1.status, "starting");
        assert_eq!(
            health(Some(now - 0.3), now),
            (
                StatusCode::OK,
                Health {
                    status: "ok",
                    last_tick_secs_ago: Some(now - (now - 0.3))
                }
            )
        );
        let stuck = health(Some(now - STUCK_AFTER_SECS - 1.0), now);
        assert_eq!(
            (stuck.0, stuck.1.status),
            (StatusCode::SERVICE_UNAVAILABLE, "stuck")
        );
    }
}
