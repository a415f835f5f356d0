//! The traffic simulator: seeded, per-second streams of requests, errors and latencies with a
//! known truth, so every detector can be scored against what really happened.
//!
//! A service has three routes with different traffic shares, error propensities and latencies.
//! Each second, each route serves a Poisson number of requests; each fails with the route's
//! error probability and takes a latency drawn from a two-mode log-normal mixture (a fast body
//! and a slow 2% mode). Nuisances perturb that without any regression; regressions change it
//! after the change at `t = 0`.

use rand::Rng;
use rand_distr::{Binomial, Distribution, Poisson, StandardNormal};
use rand_pcg::Pcg64Mcg;
use statrs::distribution::{ContinuousCDF, Normal};

use super::Cell;
use crate::core::histogram::{self, BUCKETS, LOWEST_MS, PER_OCTAVE};
use crate::core::Arm;

/// Seconds of traffic before the change (the baseline) and after it (the watch window).
pub const BEFORE: i64 = 1800;
pub const AFTER: i64 = 1800;

/// Route shares of traffic, error propensity relative to the overall rate, and median latency.
pub const ROUTES: [(f64, f64, f64); 3] = [(0.6, 0.5, 40.0), (0.3, 1.5, 80.0), (0.1, 3.0, 200.0)];
/// Overall error probability per request before any change.
pub const BASE_ERROR_RATE: f64 = 0.01;
const BODY_SIGMA: f64 = 0.5;
const SLOW_SHARE: f64 = 0.02;
const SLOW_FACTOR: f64 = 8.0;
const SLOW_SIGMA: f64 = 0.7;
/// A stalling host (`Nuisance::HostStalls`): a stall every this many seconds on average, in which
/// requests are this many times slower.
const STALL_EVERY_SECS: i64 = 120;
const STALL_FACTOR: f64 = 4.0;

/// What perturbs the traffic without being a regression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nuisance {
    Clean,
    /// A daily cycle in traffic (±50%), error propensity (±30%) and load-driven latency, at a
    /// random phase.
    Diurnal,
    /// From the change on, the expensive, error-prone route gets four times its share.
    RouteMix,
    /// One misbehaving client: bursts of failing requests (about 10 over 1-4 s) on one route,
    /// every 10 minutes on average, before and after the change alike.
    ClumpedErrors,
    /// A twentieth of the nominal traffic.
    LowTraffic,
    /// All of the above but low traffic, at once.
    Combined,
    /// A shared host that stalls now and then (a noisy neighbour, a hypervisor pausing the
    /// VM): every two minutes on average, for 2 to 8 s, every request on every route is four
    /// times slower, before and after the change alike. Not part of `Combined`, whose figures
    /// predate it.
    HostStalls,
    /// An incident outside the change (a dependency failing): for two minutes, at a random time
    /// in the watch, every request on both versions fails five times as often. A before/after
    /// comparison cannot tell it from a regression; a concurrent one can.
    Incident,
}

impl Nuisance {
    pub const ALL: [Nuisance; 7] = [
        Nuisance::Clean,
        Nuisance::Diurnal,
        Nuisance::RouteMix,
        Nuisance::ClumpedErrors,
        Nuisance::LowTraffic,
        Nuisance::Combined,
        Nuisance::HostStalls,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Nuisance::Clean => "clean",
            Nuisance::Diurnal => "diurnal drift",
            Nuisance::RouteMix => "route mix shift",
            Nuisance::ClumpedErrors => "clumped errors",
            Nuisance::LowTraffic => "low traffic (x1/20)",
            Nuisance::Combined => "combined",
            Nuisance::HostStalls => "host stalls",
            Nuisance::Incident => "incident on both versions",
        }
    }

    fn diurnal(self) -> bool {
        matches!(self, Nuisance::Diurnal | Nuisance::Combined)
    }
    fn route_mix(self) -> bool {
        matches!(self, Nuisance::RouteMix | Nuisance::Combined)
    }
    fn clumps(self) -> bool {
        matches!(self, Nuisance::ClumpedErrors | Nuisance::Combined)
    }
}

/// What a change does to the service.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Regression {
    None,
    /// Every route's error probability multiplied.
    ErrorRate(f64),
    /// Every request fails.
    Outage,
    /// The least-used route fails half its requests.
    OneRouteBroken,
    /// Every latency multiplied (the median moves by this factor).
    Median(f64),
    /// The slow mode grows from 2% to this share of requests.
    TailOnly(f64),
    /// Error probability multiplied, from a random onset in 300-1500 s after the change.
    DelayedErrorRate(f64),
}

impl Regression {
    pub fn name(&self) -> String {
        match *self {
            Regression::None => "none".into(),
            Regression::ErrorRate(m) => format!("errors x{m}"),
            Regression::Outage => "total outage".into(),
            Regression::OneRouteBroken => "one route broken (10% of traffic, 50% errors)".into(),
            Regression::Median(m) => format!("latency median +{:.0}%", (m - 1.0) * 100.0),
            Regression::TailOnly(s) => format!("tail only: slow mode 2% -> {:.0}%", s * 100.0),
            Regression::DelayedErrorRate(m) => format!("errors x{m}, onset 5-25 min late"),
        }
    }

    pub fn is_errors(&self) -> bool {
        matches!(
            self,
            Regression::ErrorRate(_) | Regression::Outage | Regression::OneRouteBroken
        )
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Nominal requests per second over all routes.
    pub rps: f64,
    pub nuisance: Nuisance,
    pub regression: Regression,
    /// After the change, old and new versions serve side by side, and requests carry their
    /// arm; only the new arm regresses.
    pub concurrent: bool,
    /// In the concurrent design, the new version's share of the traffic: half, or a fleet's
    /// canary hosts (1 of 8 is 0.125).
    pub canary_share: f64,
    /// The deploy restarts the service just before the change is notified.
    pub restart: Restart,
    /// Another change came before this one.
    pub previous: Previous,
}

/// A restart's burst of failures just before the change: 1 to 5 s (drawn per deploy) in which
/// every request fails at once (502s from the proxy, connections refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    None,
    /// The burst, and guardian is not told when the deploy began (README's plain `notify`).
    Unannounced,
    /// The burst, and guardian is told when the deploy began (`--deploy-started-at`).
    Announced,
}

/// The change before the one measured, landing so that this one follows it by a gap drawn per
/// deploy (5 s to 10 min).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Previous {
    None,
    /// A clean change, judged healthy when its 30-minute window ended; this one lands the gap
    /// after that verdict.
    Healthy,
    /// An outage, caught, reverted (the service is back a minute after it landed), its
    /// recovery confirmed after two minutes; this one lands the gap after that.
    RolledBack,
}

/// How long the previous change's bad version served: it is reverted this long after landing.
pub const ROLLBACK_AFTER_SECS: i64 = 60;
/// The recovery check after a revert: it starts a little after the redeploy and lasts this.
pub const RECOVERY_SETTLE_SECS: i64 = 3;
pub const RECOVERY_SECS: i64 = 120;

impl Scenario {
    /// The whole service switches to the new version at the change.
    pub fn before_after(rps: f64, nuisance: Nuisance, regression: Regression) -> Scenario {
        Scenario {
            rps,
            nuisance,
            regression,
            concurrent: false,
            canary_share: 0.5,
            restart: Restart::None,
            previous: Previous::None,
        }
    }

    /// Old and new serve side by side after the change, half the traffic each.
    pub fn concurrent(rps: f64, nuisance: Nuisance, regression: Regression) -> Scenario {
        Scenario {
            concurrent: true,
            ..Scenario::before_after(rps, nuisance, regression)
        }
    }

    /// A fleet of `rps` in all after a canary deploy: `canary_share` of it on the new version
    /// (its canary hosts), the rest on the old, read from the fleet's metrics with each
    /// observation's side (PromQL's `canary_label`).
    pub fn canary(
        rps: f64,
        canary_share: f64,
        nuisance: Nuisance,
        regression: Regression,
    ) -> Scenario {
        Scenario {
            canary_share,
            ..Scenario::concurrent(rps, nuisance, regression)
        }
    }
}

/// The true state of one route at one second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouteTruth {
    pub rate: f64,
    pub error: f64,
    /// Log-median of the latency body.
    pub mu: f64,
    pub slow_share: f64,
    /// Requests fail at once, without doing the work: a restart, a refused connection.
    pub fails_fast: bool,
}

/// One simulated deploy: the scenario and its random draws.
pub struct Run {
    scenario: Scenario,
    rng: Pcg64Mcg,
    phase: f64,
    onset: i64,
    incident_at: i64,
    burst: Option<Burst>,
    /// The host's stalls, `[from, to)` in seconds from the change, in time order.
    stalls: Vec<(i64, i64)>,
    /// Seconds of the restart burst before the change (0: none).
    restart_secs: i64,
    /// Seconds between the previous change's end (its verdict, or its recovery) and this one.
    gap_secs: i64,
}

struct Burst {
    route: usize,
    left_secs: u32,
    per_sec: f64,
}

impl Run {
    pub fn new(scenario: Scenario, seed: u64) -> Run {
        let mut rng = Pcg64Mcg::new(
            0xcafe_f00d_d15e_a5e5 ^ u128::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let phase = rng.gen::<f64>() * 86_400.0;
        let onset = match scenario.regression {
            Regression::DelayedErrorRate(_) => rng.gen_range(300..=1500),
            _ => 0,
        };
        let incident_at = rng.gen_range(0..=1500);
        // Drawn only for the scenarios that have them, so the others keep their streams.
        let restart_secs = match scenario.restart {
            Restart::None => 0,
            Restart::Unannounced | Restart::Announced => rng.gen_range(1..=5),
        };
        let gap_secs = match scenario.previous {
            Previous::None => 0,
            Previous::Healthy | Previous::RolledBack => rng.gen_range(5..=600),
        };
        let mut stalls = Vec::new();
        if scenario.nuisance == Nuisance::HostStalls {
            let mut t = -2 * BEFORE;
            while t < AFTER {
                t += rng.gen_range(1..=2 * STALL_EVERY_SECS);
                let len = rng.gen_range(2..=8);
                stalls.push((t, t + len));
                t += len;
            }
        }
        Run {
            scenario,
            rng,
            phase,
            onset,
            incident_at,
            burst: None,
            stalls,
            restart_secs,
            gap_secs,
        }
    }

    /// When the regression starts (seconds after the change).
    pub fn onset(&self) -> i64 {
        self.onset
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// When the deploy began, if guardian is told: the start of the restart burst.
    pub fn deploy_started(&self) -> Option<i64> {
        (self.scenario.restart == Restart::Announced).then_some(-self.restart_secs)
    }

    /// When the previous change landed (seconds before this one), if there was one.
    pub fn previous_at(&self, watch_secs: i64) -> Option<i64> {
        match self.scenario.previous {
            Previous::None => None,
            Previous::Healthy => Some(-(watch_secs + self.gap_secs)),
            Previous::RolledBack => {
                Some(-(self.gap_secs + RECOVERY_SECS + RECOVERY_SETTLE_SECS + ROLLBACK_AFTER_SECS))
            }
        }
    }

    /// The previous change's bad version: from when it landed until it was reverted.
    fn previous_outage(&self) -> Option<(i64, i64)> {
        if self.scenario.previous != Previous::RolledBack {
            return None;
        }
        let from = self.previous_at(0)?;
        Some((from, from + ROLLBACK_AFTER_SECS))
    }

    /// The truth at second `t`: before the change (`regressed = false`) or as it really is.
    pub fn truth(&self, t: i64, route: usize, regressed: bool) -> RouteTruth {
        let s = &self.scenario;
        let (share, propensity, median) = ROUTES[route];
        let mut share = share;
        if s.nuisance.route_mix() && t >= 0 {
            // The expensive route takes four times its share from the cheap one.
            share = match route {
                0 => share - 0.3,
                2 => share + 0.3,
                _ => share,
            };
        }
        let mut load = 1.0;
        let mut drift = 1.0;
        if s.nuisance.diurnal() {
            let angle = std::f64::consts::TAU * (t as f64 + self.phase) / 86_400.0;
            load = 1.0 + 0.5 * angle.sin();
            drift = 1.0 + 0.3 * angle.sin();
        }
        let traffic = if matches!(s.nuisance, Nuisance::LowTraffic) {
            0.05
        } else {
            1.0
        };
        if s.nuisance == Nuisance::Incident
            && (self.incident_at..self.incident_at + 120).contains(&t)
        {
            drift *= 5.0;
        }
        let stalled = self
            .stalls
            .iter()
            .any(|&(from, to)| (from..to).contains(&t));
        let mut truth = RouteTruth {
            rate: s.rps * traffic * share * load,
            error: BASE_ERROR_RATE * propensity * drift,
            mu: median.ln() + 0.1 * (load - 1.0) + if stalled { STALL_FACTOR.ln() } else { 0.0 },
            slow_share: SLOW_SHARE,
            fails_fast: false,
        };
        let restarting = (-self.restart_secs..0).contains(&t);
        let previous_bad = self
            .previous_outage()
            .is_some_and(|(from, to)| (from..to).contains(&t));
        if restarting || previous_bad {
            truth.error = 1.0;
            truth.fails_fast = restarting;
        }
        if regressed && t >= self.onset && t >= 0 {
            match s.regression {
                Regression::None => {}
                Regression::ErrorRate(m) | Regression::DelayedErrorRate(m) => {
                    truth.error = (truth.error * m).min(1.0)
                }
                Regression::Outage => truth.error = 1.0,
                Regression::OneRouteBroken => {
                    if route == 2 {
                        truth.error = 0.5
                    }
                }
                Regression::Median(m) => truth.mu += m.ln(),
                Regression::TailOnly(share) => truth.slow_share = share,
            }
        }
        truth
    }

    /// Draws second `t` into `cells` (one per route and arm, reused between calls).
    pub fn second(&mut self, t: i64, cells: &mut Vec<Cell>) {
        let arms: &[Option<Arm>] = if self.scenario.concurrent && t >= 0 {
            &[Some(Arm::Control), Some(Arm::Treatment)]
        } else {
            &[None]
        };
        cells.resize_with(ROUTES.len() * arms.len(), Cell::default);
        let clumps = self.scenario.nuisance.clumps();
        if clumps && self.burst.is_none() && self.rng.gen::<f64>() < 1.0 / 600.0 {
            let size = 1.0
                + Poisson::new(9.0)
                    .map(|p| p.sample(&mut self.rng))
                    .unwrap_or(9.0);
            let secs = self.rng.gen_range(1..=4u32);
            self.burst = Some(Burst {
                route: self.rng.gen_range(0..ROUTES.len()),
                left_secs: secs,
                per_sec: size / f64::from(secs),
            });
        }
        for (i, cell) in cells.iter_mut().enumerate() {
            let (route, arm) = (i % ROUTES.len(), arms[i / ROUTES.len()]);
            let mut truth = self.truth(t, route, arm != Some(Arm::Control));
            truth.rate *= match arm {
                None => 1.0,
                Some(Arm::Treatment) => self.scenario.canary_share,
                Some(Arm::Control) => 1.0 - self.scenario.canary_share,
            };
            cell.route = route as u8;
            cell.arm = arm;
            cell.latency.clear();
            let n = poisson(&mut self.rng, truth.rate);
            let errors = binomial(&mut self.rng, n, truth.error);
            for _ in 0..n {
                let b = self.latency_bucket(&truth);
                cell.latency.add_to_bucket(b, 1);
            }
            cell.requests = n as u32;
            cell.errors = errors as u32;
        }
        if let Some(mut burst) = self.burst.take() {
            let extra = poisson(&mut self.rng, burst.per_sec);
            let truth = self.truth(t, burst.route, true);
            for _ in 0..extra {
                let b = self.latency_bucket(&truth);
                cells[burst.route].latency.add_to_bucket(b, 1);
            }
            let cell = &mut cells[burst.route];
            cell.requests += extra as u32;
            cell.errors += extra as u32;
            burst.left_secs -= 1;
            if burst.left_secs > 0 {
                self.burst = Some(burst);
            }
        }
    }

    fn latency_bucket(&mut self, truth: &RouteTruth) -> usize {
        if truth.fails_fast {
            return histogram::bucket_of(1.0);
        }
        let z: f64 = self.rng.sample(StandardNormal);
        let log_ms = if self.rng.gen::<f64>() < truth.slow_share {
            truth.mu + SLOW_FACTOR.ln() + SLOW_SIGMA * z
        } else {
            truth.mu + BODY_SIGMA * z
        };
        bucket_of_log(log_ms)
    }
}

/// The bucket of `exp(log_ms)` without computing the exponential.
fn bucket_of_log(log_ms: f64) -> usize {
    let x = (log_ms - LOWEST_MS.ln()) / std::f64::consts::LN_2 * PER_OCTAVE;
    if x <= 0.0 {
        0
    } else {
        (x.floor() as usize + 1).min(BUCKETS - 1)
    }
}

fn poisson(rng: &mut Pcg64Mcg, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    Poisson::new(mean)
        .map(|p| p.sample(rng) as u64)
        .unwrap_or(0)
}

fn binomial(rng: &mut Pcg64Mcg, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    Binomial::new(n, p).map(|b| b.sample(rng)).unwrap_or(0)
}

/// Probability of each latency bucket under a route's truth.
pub fn bucket_probabilities(truth: &RouteTruth) -> Vec<f64> {
    let normal = Normal::new(0.0, 1.0).expect("standard normal");
    let cdf = |log_ms: f64| {
        let body = normal.cdf((log_ms - truth.mu) / BODY_SIGMA);
        let slow = normal.cdf((log_ms - truth.mu - SLOW_FACTOR.ln()) / SLOW_SIGMA);
        (1.0 - truth.slow_share) * body + truth.slow_share * slow
    };
    (0..BUCKETS)
        .map(|b| {
            let lo = if b == 0 {
                0.0
            } else {
                cdf(histogram::lower_edge(b).ln())
            };
            let hi = if b + 1 == BUCKETS {
                1.0
            } else {
                cdf(histogram::upper_edge(b).ln())
            };
            (hi - lo).max(1e-300)
        })
        .collect()
}

fn kl_bernoulli(p: f64, q: f64) -> f64 {
    let term = |a: f64, b: f64| if a <= 0.0 { 0.0 } else { a * (a / b).ln() };
    term(p, q) + term(1.0 - p, 1.0 - q)
}

fn kl_buckets(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|(a, _)| **a > 1e-300)
        .map(|(a, b)| a * (a / b).ln())
        .sum()
}

/// KL information per second separating the regressed traffic (at full onset, on clean
/// traffic) from the baseline, and from the nearest traffic the null hypothesis allows
/// (baseline error rate times `1 + error_tolerance`, latencies times `1 + latency_tolerance`).
pub fn information_per_second(
    scenario: Scenario,
    error_tolerance: f64,
    latency_tolerance: f64,
) -> (f64, f64) {
    let run = Run::new(scenario, 0);
    let t = run.onset.max(0) + 1;
    let mut vs_baseline = 0.0;
    let mut vs_null = 0.0;
    for route in 0..ROUTES.len() {
        let before = run.truth(t, route, false);
        let after = run.truth(t, route, true);
        let (p0, p1) = (bucket_probabilities(&before), bucket_probabilities(&after));
        let mut tolerated = before;
        tolerated.mu += (1.0 + latency_tolerance).ln();
        let q_tol = (before.error * (1.0 + error_tolerance)).min(1.0);
        let error_null = if after.error > q_tol {
            kl_bernoulli(after.error, q_tol)
        } else {
            0.0
        };
        let latency_null = if after.mu > tolerated.mu || after.slow_share > before.slow_share {
            kl_buckets(&p1, &bucket_probabilities(&tolerated)).min(kl_buckets(&p1, &p0))
        } else {
            0.0
        };
        // In the concurrent design the new version serves its share of the traffic.
        let rate = if scenario.concurrent {
            after.rate * scenario.canary_share
        } else {
            after.rate
        };
        vs_baseline += rate * (kl_bernoulli(after.error, before.error) + kl_buckets(&p1, &p0));
        vs_null += rate * (error_null + latency_null);
    }
    (vs_baseline, vs_null)
}

/// The oracle: an SPRT that knows the true distributions before and after the change, and when
/// the regression starts. Its log-likelihood ratio for one second of cells.
pub struct Oracle {
    log_lr: f64,
    threshold: f64,
    probs: Vec<(Vec<f64>, Vec<f64>)>,
}

impl Oracle {
    pub fn new(run: &Run, alpha: f64) -> Oracle {
        let t = run.onset.max(0) + 1;
        let probs = (0..ROUTES.len())
            .map(|r| {
                (
                    bucket_probabilities(&run.truth(t, r, false)),
                    bucket_probabilities(&run.truth(t, r, true)),
                )
            })
            .collect();
        Oracle {
            log_lr: 0.0,
            threshold: (1.0 / alpha).ln(),
            probs,
        }
    }

    /// Adds second `t`; true once the SPRT crosses its threshold.
    pub fn second(&mut self, run: &Run, t: i64, cells: &[Cell]) -> bool {
        if t < run.onset.max(0) {
            return false;
        }
        for cell in cells {
            let r = usize::from(cell.route);
            let before = run.truth(t, r, false);
            let after = run.truth(t, r, cell.arm != Some(Arm::Control));
            if after != before {
                let (x, n) = (f64::from(cell.errors), f64::from(cell.requests));
                if after.error != before.error {
                    let (q0, q1) = (before.error, after.error);
                    self.log_lr += x * (q1 / q0).ln();
                    if q1 < 1.0 {
                        self.log_lr += (n - x) * ((1.0 - q1) / (1.0 - q0)).ln();
                    } else if n > x {
                        self.log_lr = f64::NEG_INFINITY;
                    }
                }
                if after.mu != before.mu || after.slow_share != before.slow_share {
                    let (p0, p1) = &self.probs[r];
                    for (b, &c) in cell.latency.counts().iter().enumerate() {
                        if c > 0 {
                            self.log_lr += f64::from(c) * (p1[b] / p0[b]).ln();
                        }
                    }
                }
            }
        }
        self.log_lr >= self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulator_serves_what_the_scenario_says() {
        let scenario = Scenario::before_after(20.0, Nuisance::Clean, Regression::None);
        let mut run = Run::new(scenario, 7);
        let mut cells = Vec::new();
        let (mut n, mut e) = (0u64, 0u64);
        let mut latency = crate::core::Histogram::new();
        for t in -1800..0 {
            run.second(t, &mut cells);
            for c in &cells {
                n += u64::from(c.requests);
                e += u64::from(c.errors);
                latency.merge(&c.latency);
            }
        }
        let rate = e as f64 / n as f64;
        assert!((n as f64 - 36_000.0).abs() < 1_000.0, "{n} requests");
        // 0.6*0.5 + 0.3*1.5 + 0.1*3 = 1.05 times the base rate.
        assert!((rate - 0.0105).abs() < 0.002, "{rate}");
        let p50 = latency.quantile_ms(0.5).unwrap();
        assert!((40.0..70.0).contains(&p50), "{p50}");
    }

    #[test]
    fn bucket_probabilities_sum_to_one() {
        let run = Run::new(
            Scenario::before_after(1.0, Nuisance::Clean, Regression::None),
            1,
        );
        let total: f64 = bucket_probabilities(&run.truth(0, 1, false)).iter().sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
    }
}
