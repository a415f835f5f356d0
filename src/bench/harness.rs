//! Runs guardian's core, the oracle and the peers over the same simulated deploys and scores
//! them against the truth.

use rayon::prelude::*;

use super::sim::{
    Oracle, Run, Scenario, AFTER, BEFORE, RECOVERY_SECS, RECOVERY_SETTLE_SECS, ROLLBACK_AFTER_SECS,
    ROUTES,
};
use super::{Call, Cell, Detector};
use crate::core::{Aggregate, Arm, DetectorSettings, Landing, Monitor, SignalKind, Verdict};

/// Unix time the simulated change lands at; any value works, this one is readable.
pub const CHANGE_AT: f64 = 1_764_000_000.0;
const ROUTE_NAMES: [&str; 3] = ["/", "/search", "/checkout"];

/// What guardian's core concluded on one deploy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GuardianCall {
    /// Rolled back, this many seconds after the change, on the evidence of this signal.
    Regressed(f64, SignalKind),
    /// Healthy; `left_out`: with a signal too thin to bound left out of the verdict.
    Healthy {
        left_out: bool,
    },
    Inconclusive,
}

/// One deploy, scored.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub guardian: GuardianCall,
    /// Seconds after the change when each detector rolled back (`None`: never).
    pub oracle: Option<f64>,
    pub peers: Vec<Option<f64>>,
    pub onset: f64,
    /// Bad requests served after the onset, by seconds since the change: excess errors over
    /// the baseline truth for error regressions, requests served for latency ones.
    pub bad_by_second: Vec<f64>,
}

impl Outcome {
    pub fn bad_before(&self, decided: Option<f64>) -> f64 {
        let last = self.bad_by_second.len().saturating_sub(1);
        let i = decided.map_or(last, |d| (d.ceil() as usize).min(last));
        self.bad_by_second.get(i).copied().unwrap_or(0.0)
    }
}

/// Feeds one second of cells to guardian's core as pre-aggregated observations.
pub fn feed(monitor: &mut Monitor, t: i64, cells: &[Cell]) {
    let ts = CHANGE_AT + t as f64 + 0.5;
    for cell in cells {
        if cell.requests == 0 {
            continue;
        }
        monitor.observe_aggregate(&Aggregate {
            ts,
            requests: u64::from(cell.requests),
            errors: u64::from(cell.errors),
            latency: Some(&cell.latency),
            route: Some(ROUTE_NAMES[usize::from(cell.route) % ROUTE_NAMES.len()]),
            arm: cell.arm,
        });
    }
}

/// What guardian is doing about the change before the measured one, driven as the daemon
/// drives its core: watch, and on a regression revert and check the recovery.
enum Before {
    Nothing,
    Watching,
    /// Regressed; waiting for the revert to land at this second.
    RollingBack(i64),
    Verifying,
}

/// Simulates one deploy and runs every detector over it.
pub fn run_one(
    scenario: Scenario,
    seed: u64,
    settings: &DetectorSettings,
    mut peers: Vec<Box<dyn Detector>>,
) -> Outcome {
    let mut run = Run::new(scenario, seed);
    let mut oracle = Oracle::new(&run, settings.alpha);
    let mut monitor = Monitor::new(settings.clone());
    let mut cells = Vec::with_capacity(ROUTES.len());
    let mut peer_calls: Vec<Option<f64>> = vec![None; peers.len()];
    let mut oracle_call = None;
    let mut guardian = None;
    let mut bad = 0.0;
    let mut bad_by_second = Vec::with_capacity(AFTER as usize + 1);
    let onset = run.onset().max(0);
    let previous = run.previous_at(i64::from(settings.watch_secs));
    let start = previous.map_or(0, |p| p.min(0)) - BEFORE;
    let mut before = Before::Nothing;
    for t in start..AFTER {
        let at = |t: i64| CHANGE_AT + t as f64;
        if Some(t) == previous {
            monitor.change_landed(at(t));
            before = Before::Watching;
        }
        if t == 0 {
            monitor.end_watch();
            let landing = Landing {
                at: at(0),
                deploy_started_at: run.deploy_started().map(at),
            };
            monitor.change_landed_with(landing, settings);
        }
        run.second(t, &mut cells);
        if guardian.is_none() {
            feed(&mut monitor, t, &cells);
        }
        for (peer, call) in peers.iter_mut().zip(peer_calls.iter_mut()) {
            if call.is_none() && peer.second(t, &cells) == Call::Rollback && t >= 0 {
                *call = Some((t + 1) as f64);
            }
        }
        if t < 0 {
            before = previous_change(&mut monitor, before, previous, at(t + 1));
            continue;
        }
        if oracle_call.is_none() && oracle.second(&run, t, &cells) {
            oracle_call = Some((t + 1) as f64);
        }
        if guardian.is_none() {
            match monitor.tick(at(t + 1)) {
                Verdict::Watching => {}
                Verdict::Regressed => {
                    let report = monitor.report();
                    let at = report
                        .as_ref()
                        .and_then(|r| r.decided_at)
                        .unwrap_or(CHANGE_AT + (t + 1) as f64);
                    let by = report
                        .and_then(|r| r.signals.iter().find(|s| s.regressed).map(|s| s.signal))
                        .unwrap_or(SignalKind::Errors);
                    guardian = Some(GuardianCall::Regressed(at - CHANGE_AT, by));
                }
                Verdict::Healthy => guardian = Some(healthy(&monitor)),
                Verdict::Inconclusive => guardian = Some(GuardianCall::Inconclusive),
            }
        }
        if t >= onset {
            bad += excess_bad(&run, t, &cells, scenario);
        }
        bad_by_second.push(bad);
        let all_done =
            guardian.is_some() && oracle_call.is_some() && peer_calls.iter().all(Option::is_some);
        if all_done {
            break;
        }
    }
    if guardian.is_none() {
        monitor.tick(CHANGE_AT + AFTER as f64 + 1.0);
        guardian = Some(match monitor.verdict() {
            Some(Verdict::Healthy) => healthy(&monitor),
            _ => GuardianCall::Inconclusive,
        });
    }
    Outcome {
        guardian: guardian.unwrap_or(GuardianCall::Inconclusive),
        oracle: oracle_call,
        peers: peer_calls,
        onset: onset as f64,
        bad_by_second,
    }
}

/// A healthy verdict, and whether it needed a thin signal left out.
fn healthy(monitor: &Monitor) -> GuardianCall {
    let left_out = monitor
        .report()
        .is_some_and(|r| r.signals.iter().any(|s| s.left_out));
    GuardianCall::Healthy { left_out }
}

/// One second (ending at `now`) of the change before the measured one: judged, reverted when it
/// regresses (the service is back [`ROLLBACK_AFTER_SECS`] after it landed), its recovery
/// checked, then done with.
fn previous_change(monitor: &mut Monitor, state: Before, landed: Option<i64>, now: f64) -> Before {
    let verdict = monitor.tick(now);
    let second = (now - CHANGE_AT).round() as i64;
    match state {
        Before::Watching => match verdict {
            Verdict::Watching => Before::Watching,
            Verdict::Regressed => {
                let reverted = landed.map_or(second, |l| l + ROLLBACK_AFTER_SECS);
                Before::RollingBack(reverted.max(second))
            }
            _ => {
                monitor.end_watch();
                Before::Nothing
            }
        },
        Before::RollingBack(reverted) if second >= reverted => {
            monitor.verify_recovery(now + RECOVERY_SETTLE_SECS as f64, RECOVERY_SECS as u32);
            Before::Verifying
        }
        Before::Verifying if verdict != Verdict::Watching => {
            monitor.end_watch();
            Before::Nothing
        }
        other => other,
    }
}

fn excess_bad(run: &Run, t: i64, cells: &[Cell], scenario: Scenario) -> f64 {
    if scenario.regression.is_errors()
        || matches!(
            scenario.regression,
            super::sim::Regression::DelayedErrorRate(_)
        )
    {
        cells
            .iter()
            .filter(|c| c.arm != Some(Arm::Control))
            .map(|c| {
                let before = run.truth(t, usize::from(c.route), false);
                let after = run.truth(t, usize::from(c.route), true);
                f64::from(c.requests) * (after.error - before.error).max(0.0)
            })
            .sum()
    } else if matches!(scenario.regression, super::sim::Regression::None) {
        0.0
    } else {
        cells
            .iter()
            .filter(|c| c.arm != Some(Arm::Control))
            .map(|c| f64::from(c.requests))
            .sum()
    }
}

/// Runs `runs` deploys of a scenario in parallel, seeds `first_seed..`.
pub fn run_many(
    scenario: Scenario,
    runs: u64,
    first_seed: u64,
    settings: &DetectorSettings,
    peers: &(dyn Fn() -> Vec<Box<dyn Detector>> + Sync),
) -> Vec<Outcome> {
    (first_seed..first_seed + runs)
        .into_par_iter()
        .map(|seed| run_one(scenario, seed, settings, peers()))
        .collect()
}

/// Median and 90th percentile of detection times, among the runs that detected.
pub fn ttd_quantiles(times: &[f64]) -> Option<(f64, f64)> {
    if times.is_empty() {
        return None;
    }
    let mut v = times.to_vec();
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    Some((q(0.5), q(0.9)))
}

/// Wilson 95% interval for a proportion.
pub fn wilson(successes: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_964;
    let (k, n) = (successes as f64, n as f64);
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}
