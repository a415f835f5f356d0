//! The peers guardian is benchmarked against: Flagger-, Argo Rollouts- and Kayenta-style rollback rules, as shipped and with one calibration knob each.
//!
//! The exact rules and their sources are in `shared/research/stats.md` §2, §3 and §7.3.
//!
//! Conventions shared by all three peers:
//! - **Topology.** Once any cell carries an arm, the canary is [`Arm::Treatment`] and the baseline
//!   is the concurrent [`Arm::Control`]. Until then the stream is before/after: the canary is all
//!   traffic from `t = 0`, and the baseline is all traffic in the 30 minutes before it, frozen at
//!   `t = 0`. Routes are summed, as a service-level PromQL query sums them.
//! - **Time.** Second `t` covers `[t, t+1)`, so a window that ends at time `T` is complete once
//!   second `T - 1` has been seen. Its judgment is returned from that call: Flagger's check "at
//!   t = 60" comes back from `second(59, ..)`. No peer waits an extra second for its data.
//! - **Decisions latch.** After a peer returns [`Call::Rollback`] it keeps returning it. A peer
//!   whose analysis has ended (Argo after `count` measurements, Kayenta after its last judgment)
//!   returns [`Call::Continue`] from then on.
//! - **Knobs.** Each peer has `as_shipped()` and `calibrated(knob)`. `calibrated(AS_SHIPPED_KNOB)`
//!   equals `as_shipped()`. A larger knob always means a more lenient peer (fewer rollbacks, on
//!   any fixed stream), so a harness can bisect on the knob for a target false-rollback rate.
//! - **Memory** is set by the windows, not by traffic. Flagger keeps one minute. Argo keeps
//!   5 per-minute histograms a side, plus, before the change only, 30 for the baseline. Kayenta
//!   keeps three numbers per 30-s step, at most 60 steps per series.

use std::collections::VecDeque;

use crate::bench::mannwhitney::mann_whitney_ci;
use crate::bench::{Call, Cell, Detector};
use crate::core::{Arm, Histogram};

/// Requests, errors and latencies summed over some seconds.
#[derive(Clone, Debug, Default)]
struct Agg {
    requests: u64,
    errors: u64,
    latency: Histogram,
}

impl Agg {
    /// Adds the cells of one arm (`None`: every cell), without allocating a histogram per second.
    fn add_cells(&mut self, cells: &[Cell], arm: Option<Arm>) {
        for c in cells.iter().filter(|c| arm.is_none() || c.arm == arm) {
            self.requests += u64::from(c.requests);
            self.errors += u64::from(c.errors);
            self.latency.merge(&c.latency);
        }
    }

    fn add(&mut self, other: &Agg) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
    }

    fn clear(&mut self) {
        self.requests = 0;
        self.errors = 0;
        self.latency.clear();
    }

    /// errors / requests; NaN with no requests, as PromQL's `0/0` is.
    fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            f64::NAN
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    fn p99_ms(&self) -> f64 {
        self.latency.quantile_ms(0.99).unwrap_or(f64::NAN)
    }
}

/// Which cells feed the canary and which the baseline, decided by whether arms are present.
#[derive(Clone, Copy, Debug, Default)]
struct Topology {
    concurrent: bool,
}

impl Topology {
    fn observe(&mut self, cells: &[Cell]) {
        self.concurrent |= cells.iter().any(|c| c.arm.is_some());
    }

    fn canary(&self) -> Option<Arm> {
        self.concurrent.then_some(Arm::Treatment)
    }
}

/// Per-slot aggregates keyed by slot index (`t.div_euclid(slot_len)`), keeping the last `cap`.
/// It collects the pre-change baseline, whose start we do not know in advance.
#[derive(Clone, Debug)]
struct SlotRing<T> {
    cap: usize,
    slots: VecDeque<(i64, T)>,
}

impl<T> SlotRing<T> {
    fn new(cap: usize) -> Self {
        SlotRing {
            cap,
            slots: VecDeque::with_capacity(cap),
        }
    }

    fn push(&mut self, index: i64, value: T) {
        if self.slots.len() == self.cap {
            self.slots.pop_front();
        }
        self.slots.push_back((index, value));
    }
}

/// The pre-change traffic, one aggregate per slot, plus the slot in progress.
#[derive(Clone, Debug)]
struct PreChange {
    slot_len: i64,
    ring: SlotRing<Agg>,
    current: Option<(i64, Agg)>,
}

impl PreChange {
    fn new(slot_len: i64, slots: usize) -> Self {
        PreChange {
            slot_len,
            ring: SlotRing::new(slots),
            current: None,
        }
    }

    fn add(&mut self, t: i64, cells: &[Cell]) {
        let index = t.div_euclid(self.slot_len);
        if self.current.as_ref().is_some_and(|(i, _)| *i != index) {
            let (i, agg) = self.current.take().expect("checked above");
            self.ring.push(i, agg);
        }
        self.current
            .get_or_insert_with(|| (index, Agg::default()))
            .1
            .add_cells(cells, None);
    }

    /// The slots in `[-cap, -1]`, oldest first; consumes the collector, which is done at `t = 0`.
    fn finish(mut self) -> Vec<Agg> {
        if let Some((i, agg)) = self.current.take() {
            self.ring.push(i, agg);
        }
        let first = -(self.ring.cap as i64);
        self.ring
            .slots
            .into_iter()
            .filter(|(i, _)| (first..0).contains(i))
            .map(|(_, a)| a)
            .collect()
    }
}

/// Length of the pre-change baseline window for Argo and Kayenta (before/after topology).
pub const BASELINE_S: i64 = 30 * 60;

// ---------------------------------------------------------------------------------------------
// P1: Flagger
// ---------------------------------------------------------------------------------------------

/// Flagger's built-in checks on the canary alone (`pkg/controller/scheduler_metrics.go`).
///
/// Every `interval_s` it looks at the last interval. It counts one failed check if
/// `request-success-rate` is below `min_success_pct`, if `request-duration` (P99) is above
/// `max_p99_ms`, or if there were no requests ("no values found" halts advancement and counts as
/// a failed check). Failed checks accumulate, and it rolls back when they reach `threshold`.
#[derive(Clone, Debug)]
pub struct Flagger {
    pub interval_s: i64,
    pub min_success_pct: f64,
    pub max_p99_ms: f64,
    pub threshold: u32,
    topology: Topology,
    window: Agg,
    failed_checks: u32,
    rolled_back: bool,
}

impl Flagger {
    /// The knob value that reproduces [`Flagger::as_shipped`].
    pub const AS_SHIPPED_KNOB: f64 = 1.0;

    /// Flagger docs' example: interval 1m, success rate >= 99 %, P99 <= 500 ms, threshold 5.
    pub fn as_shipped() -> Self {
        Self::calibrated(Self::AS_SHIPPED_KNOB)
    }

    /// Knob `k >= 0` scales both tolerances together. The allowed error percentage is `1 % * k`
    /// (`min_success_pct = 100 - k`) and the P99 limit is `500 ms * k`. Scaling both by one factor
    /// keeps one scalar to bisect and keeps the rule monotone: a larger `k` is more lenient on
    /// both metrics. `k = 1` is as shipped. Negative `k` is treated as 0.
    pub fn calibrated(k: f64) -> Self {
        let k = k.max(0.0);
        Flagger {
            interval_s: 60,
            min_success_pct: 100.0 - k,
            max_p99_ms: 500.0 * k,
            threshold: 5,
            topology: Topology::default(),
            window: Agg::default(),
            failed_checks: 0,
            rolled_back: false,
        }
    }

    /// Failed checks so far.
    pub fn failed_checks(&self) -> u32 {
        self.failed_checks
    }

    fn check_fails(&self) -> bool {
        let w = &self.window;
        if w.requests == 0 {
            return true;
        }
        let success_pct = 100.0 * (w.requests - w.errors) as f64 / w.requests as f64;
        // Flagger fails a metric when `val < min` or `val > max`.
        success_pct < self.min_success_pct || w.p99_ms() > self.max_p99_ms
    }
}

impl Detector for Flagger {
    fn second(&mut self, t: i64, cells: &[Cell]) -> Call {
        if self.rolled_back {
            return Call::Rollback;
        }
        if t < 0 {
            return Call::Continue;
        }
        self.topology.observe(cells);
        self.window.add_cells(cells, self.topology.canary());
        if (t + 1) % self.interval_s == 0 {
            if self.check_fails() {
                self.failed_checks += 1;
            }
            self.window.clear();
            if self.failed_checks >= self.threshold {
                self.rolled_back = true;
                return Call::Rollback;
            }
        }
        Call::Continue
    }
}

// ---------------------------------------------------------------------------------------------
// P2: Argo Rollouts
// ---------------------------------------------------------------------------------------------

/// An Argo Rollouts AnalysisTemplate comparing the canary with a baseline by PromQL arithmetic
/// (the pattern of argo-rollouts#1107), with `failureLimit` debouncing.
///
/// Every `interval_s` one measurement covers the last `window_s` of canary traffic. It fails if
/// `canary_err > ratio * baseline_err && canary_err > err_floor` or if
/// `canary_p99 > ratio * baseline_p99`. A NaN on either side (no requests) makes that condition
/// false, as the docs' `isNaN(result)` guard does. The analysis fails, and the peer rolls back,
/// when failed measurements exceed `failure_limit`. It ends after `count` measurements.
///
/// The baseline is the control arm over the same window (concurrent), or else the whole 30-minute
/// pre-change window, frozen at `t = 0`. Both conditions count toward one failure tally, as if
/// written as one metric's `failureCondition: errors || latency`. Two separate Argo metrics would
/// each have their own limit, which is a little more lenient.
#[derive(Clone, Debug)]
pub struct Argo {
    pub interval_s: i64,
    /// A multiple of `interval_s`.
    pub window_s: i64,
    pub ratio: f64,
    pub err_floor: f64,
    pub failure_limit: u32,
    /// Measurements before the analysis ends (`None`: never ends).
    pub count: Option<u32>,
    topology: Topology,
    pre: Option<PreChange>,
    /// Pre-change (error rate, p99 ms), frozen at `t = 0`; NaN when it had no requests.
    baseline: (f64, f64),
    canary_now: Agg,
    control_now: Agg,
    canary_window: VecDeque<Agg>,
    control_window: VecDeque<Agg>,
    measurements: u32,
    failed: u32,
    rolled_back: bool,
}

impl Argo {
    /// The knob value that reproduces [`Argo::as_shipped`].
    pub const AS_SHIPPED_KNOB: f64 = 1.2;

    /// interval 1m, `rate[5m]`, ratio 1.2, error floor 1e-4, failureLimit 2, count 30.
    pub fn as_shipped() -> Self {
        Self::calibrated(Self::AS_SHIPPED_KNOB)
    }

    /// Knob: the ratio `c` in both failure conditions (`canary > c * baseline`). As shipped 1.2;
    /// a larger `c` is more lenient. The 1e-4 error-rate floor stays fixed.
    pub fn calibrated(c: f64) -> Self {
        Argo {
            interval_s: 60,
            window_s: 5 * 60,
            ratio: c,
            err_floor: 1e-4,
            failure_limit: 2,
            count: Some(30),
            topology: Topology::default(),
            pre: Some(PreChange::new(60, (BASELINE_S / 60) as usize)),
            baseline: (f64::NAN, f64::NAN),
            canary_now: Agg::default(),
            control_now: Agg::default(),
            canary_window: VecDeque::new(),
            control_window: VecDeque::new(),
            measurements: 0,
            failed: 0,
            rolled_back: false,
        }
    }

    /// Variant P2′: Argo's default `failureLimit = 0`, which fails on the first failed measurement.
    pub fn with_failure_limit(mut self, limit: u32) -> Self {
        self.failure_limit = limit;
        self
    }

    /// Failed measurements so far.
    pub fn failed_measurements(&self) -> u32 {
        self.failed
    }

    fn push_interval(window: &mut VecDeque<Agg>, now: &mut Agg, keep: usize) {
        if window.len() == keep {
            // Reuse the oldest interval's histogram: no allocation in steady state.
            let mut oldest = window.pop_front().expect("keep >= 1");
            std::mem::swap(&mut oldest, now);
            window.push_back(oldest);
        } else {
            window.push_back(std::mem::take(now));
        }
        now.clear();
    }

    fn sum(window: &VecDeque<Agg>) -> Agg {
        let mut total = Agg::default();
        window.iter().for_each(|a| total.add(a));
        total
    }

    fn measurement_fails(&self) -> bool {
        let canary = Self::sum(&self.canary_window);
        let (b_err, b_p99) = if self.topology.concurrent {
            let control = Self::sum(&self.control_window);
            (control.error_rate(), control.p99_ms())
        } else {
            self.baseline
        };
        let c_err = canary.error_rate();
        // NaN on either side makes every comparison false: no data is a success.
        let errors = c_err > self.ratio * b_err && c_err > self.err_floor;
        let latency = canary.p99_ms() > self.ratio * b_p99;
        errors || latency
    }
}

impl Detector for Argo {
    fn second(&mut self, t: i64, cells: &[Cell]) -> Call {
        if self.rolled_back {
            return Call::Rollback;
        }
        if t < 0 {
            if let Some(pre) = self.pre.as_mut() {
                pre.add(t, cells);
            }
            return Call::Continue;
        }
        if let Some(pre) = self.pre.take() {
            let mut b = Agg::default();
            pre.finish().iter().for_each(|a| b.add(a));
            self.baseline = (b.error_rate(), b.p99_ms());
        }
        if self.count.is_some_and(|n| self.measurements >= n) {
            return Call::Continue;
        }
        self.topology.observe(cells);
        self.canary_now.add_cells(cells, self.topology.canary());
        if self.topology.concurrent {
            self.control_now.add_cells(cells, Some(Arm::Control));
        }
        if (t + 1) % self.interval_s == 0 {
            let keep = (self.window_s / self.interval_s).max(1) as usize;
            Self::push_interval(&mut self.canary_window, &mut self.canary_now, keep);
            Self::push_interval(&mut self.control_window, &mut self.control_now, keep);
            self.measurements += 1;
            if self.measurement_fails() {
                self.failed += 1;
            }
            if self.failed > self.failure_limit {
                self.rolled_back = true;
                return Call::Rollback;
            }
        }
        Call::Continue
    }
}

// ---------------------------------------------------------------------------------------------
// P3: Kayenta
// ---------------------------------------------------------------------------------------------

/// What Kayenta's classifier says about one metric. It never says `Low`, because every metric
/// here has `direction = increase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Pass,
    High,
    Nodata,
}

/// Kayenta's per-metric `nanStrategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NanStrategy {
    /// NaN becomes 0; an empty series is a Pass.
    Replace,
    /// NaN is dropped; an empty series is Nodata.
    Remove,
}

/// One 30-s step of one arm: the three metrics' values, NaN when the step had no requests.
#[derive(Clone, Copy, Debug)]
struct Step {
    error_rate: f64,
    p99_ms: f64,
    mean_ms: f64,
}

impl Step {
    fn of(a: &Agg) -> Step {
        Step {
            error_rate: a.error_rate(),
            p99_ms: a.p99_ms(),
            mean_ms: a.latency.mean_ms().unwrap_or(f64::NAN),
        }
    }
}

/// Kayenta's standalone canary analysis with the NetflixACAJudge, repeated over a growing window.
///
/// Metrics come as series of `step_s`-second points: error rate (increase, NaN replaced by 0,
/// critical), p99 latency and mean latency (increase, NaN removed). They form two equally
/// weighted groups, {errors} and {latency}. At every `interval_s` up to `lifetime_s` each metric is
/// classified by the Mann-Whitney classifier (see [`classify`]) and the judge scores them (see
/// [`score`]). Kayenta fails the canary at the first interim judgment scoring at or below
/// `marginal`, or when the last judgment scores below `pass`.
///
/// The control series is the concurrent control arm over the same growing window. Without one,
/// it is the 60 steps of the 30 minutes before `t = 0`.
#[derive(Clone, Debug)]
pub struct Kayenta {
    /// Fixed: the pre-change ring is sized for 30-s steps.
    step_s: i64,
    pub interval_s: i64,
    pub lifetime_s: i64,
    pub conf_level: f64,
    pub tolerance: f64,
    pub allowed_increase: f64,
    pub pass: f64,
    pub marginal: f64,
    topology: Topology,
    pre: Option<SlotRing<Step>>,
    pre_now: Option<(i64, Agg)>,
    baseline: Vec<Step>,
    canary_now: Agg,
    control_now: Agg,
    canary: Vec<Step>,
    control: Vec<Step>,
    scores: Vec<f64>,
    rolled_back: bool,
}

impl Kayenta {
    /// The knob value that reproduces [`Kayenta::as_shipped`].
    pub const AS_SHIPPED_KNOB: f64 = 0.98;

    /// NetflixACAJudge-v1.0 defaults (confLevel 0.98, tolerance 0.25, allowedIncrease 1.0), pass
    /// 95 and marginal 75, 30-s steps, and judgments at 10, 20 and 30 minutes.
    pub fn as_shipped() -> Self {
        Self::calibrated(Self::AS_SHIPPED_KNOB)
    }

    /// Knob: the classifier's `confLevel` in (0, 1). As shipped 0.98. A larger level widens every
    /// Mann-Whitney interval, so fewer metrics are High and fewer canaries fail.
    pub fn calibrated(conf_level: f64) -> Self {
        let step_s = 30;
        Kayenta {
            step_s,
            interval_s: 10 * 60,
            lifetime_s: 30 * 60,
            conf_level,
            tolerance: 0.25,
            allowed_increase: 1.0,
            pass: 95.0,
            marginal: 75.0,
            topology: Topology::default(),
            pre: Some(SlotRing::new((BASELINE_S / step_s) as usize)),
            pre_now: None,
            baseline: Vec::new(),
            canary_now: Agg::default(),
            control_now: Agg::default(),
            canary: Vec::new(),
            control: Vec::new(),
            scores: Vec::new(),
            rolled_back: false,
        }
    }

    /// Scores of the judgments made so far.
    pub fn scores(&self) -> &[f64] {
        &self.scores
    }

    fn freeze_baseline(&mut self) {
        if let Some(mut pre) = self.pre.take() {
            if let Some((i, agg)) = self.pre_now.take() {
                pre.push(i, Step::of(&agg));
            }
            let first = -(pre.cap as i64);
            self.baseline = pre
                .slots
                .into_iter()
                .filter(|(i, _)| (first..0).contains(i))
                .map(|(_, s)| s)
                .collect();
        }
    }

    fn judge(&self) -> f64 {
        let control = if self.topology.concurrent {
            &self.control
        } else {
            &self.baseline
        };
        let series = |f: fn(&Step) -> f64, s: &[Step]| s.iter().map(f).collect::<Vec<f64>>();
        let metric = |f: fn(&Step) -> f64, nan: NanStrategy| {
            classify(
                &series(f, control),
                &series(f, &self.canary),
                nan,
                self.conf_level,
                self.tolerance,
                self.allowed_increase,
            )
        };
        let errors = metric(|s| s.error_rate, NanStrategy::Replace);
        let p99 = metric(|s| s.p99_ms, NanStrategy::Remove);
        let mean = metric(|s| s.mean_ms, NanStrategy::Remove);
        score(errors, &[p99, mean])
    }
}

impl Detector for Kayenta {
    fn second(&mut self, t: i64, cells: &[Cell]) -> Call {
        if self.rolled_back {
            return Call::Rollback;
        }
        if t < 0 {
            if let Some(pre) = self.pre.as_mut() {
                let index = t.div_euclid(self.step_s);
                if self.pre_now.as_ref().is_some_and(|(i, _)| *i != index) {
                    let (i, agg) = self.pre_now.take().expect("checked above");
                    pre.push(i, Step::of(&agg));
                }
                self.pre_now
                    .get_or_insert_with(|| (index, Agg::default()))
                    .1
                    .add_cells(cells, None);
            }
            return Call::Continue;
        }
        self.freeze_baseline();
        if t >= self.lifetime_s {
            return Call::Continue;
        }
        self.topology.observe(cells);
        self.canary_now.add_cells(cells, self.topology.canary());
        if self.topology.concurrent {
            self.control_now.add_cells(cells, Some(Arm::Control));
        }
        let now = t + 1;
        if now % self.step_s == 0 {
            self.canary.push(Step::of(&self.canary_now));
            self.control.push(Step::of(&self.control_now));
            self.canary_now.clear();
            self.control_now.clear();
        }
        if now % self.interval_s == 0 {
            let score = self.judge();
            self.scores.push(score);
            let last = now + self.interval_s > self.lifetime_s;
            let fails = if last {
                score < self.pass
            } else {
                score <= self.marginal
            };
            if fails {
                self.rolled_back = true;
                return Call::Rollback;
            }
        }
        Call::Continue
    }
}

/// Kayenta's `MannWhitneyClassifier.classify` for a metric whose direction is `increase`, with
/// outliers kept.
///
/// High iff the Mann-Whitney `conf_level` interval for `experiment - control` has its lower end
/// above `tolerance * |Hodges-Lehmann estimate|`, and the mean ratio `mean(exp) / mean(ctrl)` is
/// NaN (either mean is 0) or at least `allowed_increase`. Short cuts, in Kayenta's order:
/// - an empty side after NaN handling is Nodata (Remove) or Pass (Replace);
/// - identical sorted series are Pass;
/// - a single distinct value over both series is Pass.
///
/// When each side is constant but the two differ, Kayenta adds Gaussian noise (sd 1e-5 × value)
/// so the rank test can run. The resulting interval hugs `a - b`. We use exactly `a - b` for the
/// bounds and the estimate, without randomness, which is High iff the experiment's value is larger.
pub fn classify(
    control: &[f64],
    experiment: &[f64],
    nan: NanStrategy,
    conf_level: f64,
    tolerance: f64,
    allowed_increase: f64,
) -> Class {
    let clean = |v: &[f64]| -> Vec<f64> {
        match nan {
            NanStrategy::Replace => v
                .iter()
                .map(|&x| if x.is_nan() { 0.0 } else { x })
                .collect(),
            NanStrategy::Remove => v.iter().copied().filter(|x| !x.is_nan()).collect(),
        }
    };
    let (c, e) = (clean(control), clean(experiment));
    if c.is_empty() || e.is_empty() {
        return match nan {
            NanStrategy::Replace => Class::Pass,
            NanStrategy::Remove => Class::Nodata,
        };
    }
    let sorted = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s
    };
    if sorted(&c) == sorted(&e) {
        return Class::Pass;
    }
    let constant = |v: &[f64]| v.iter().all(|&x| x == v[0]);
    if constant(&c) && constant(&e) && c[0] == e[0] {
        return Class::Pass;
    }
    let (lower, estimate) = if constant(&c) && constant(&e) {
        (e[0] - c[0], e[0] - c[0])
    } else {
        match mann_whitney_ci(&e, &c, conf_level) {
            Some(r) => (r.lower, r.estimate),
            // Unreachable after the checks above; a metric we cannot test is not evidence.
            None => return Class::Pass,
        }
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (mc, me) = (mean(&c), mean(&e));
    // EffectSizes.meanRatio: NaN when either mean is 0, and a NaN ratio does not block High.
    let ratio = if mc == 0.0 || me == 0.0 {
        f64::NAN
    } else {
        me / mc
    };
    let upper_bound = tolerance * estimate.abs();
    if lower > upper_bound && (ratio.is_nan() || ratio >= allowed_increase) {
        Class::High
    } else {
        Class::Pass
    }
}

/// Kayenta's `WeightedSumScorer` for two equally weighted groups: {errors} (critical) and
/// {latency}.
///
/// The score is 0 if the critical errors metric is High, or if at least half of all metrics are
/// Nodata (`NODATA_THRESHOLD = 50`). Otherwise a group scores `Pass / (High + Pass) * 100` over
/// its metrics that have data. A group with none scores 0 but keeps its weight, and the summary
/// is the weighted sum.
pub fn score(errors: Class, latency: &[Class]) -> f64 {
    if errors == Class::High {
        return 0.0;
    }
    let all = 1 + latency.len();
    let nodata = std::iter::once(&errors)
        .chain(latency)
        .filter(|&&c| c == Class::Nodata)
        .count();
    if 2 * nodata >= all {
        return 0.0;
    }
    let group = |members: &[Class]| {
        let pass = members.iter().filter(|&&c| c == Class::Pass).count();
        let judged = members.iter().filter(|&&c| c != Class::Nodata).count();
        if judged == 0 {
            0.0
        } else {
            100.0 * pass as f64 / judged as f64
        }
    };
    0.5 * group(&[errors]) + 0.5 * group(latency)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second of traffic on one arm: `requests` requests, `errors` of them failed, every latency
    /// `ms`.
    fn cell(arm: Option<Arm>, requests: u32, errors: u32, ms: f64) -> Cell {
        let mut latency = Histogram::new();
        for _ in 0..requests {
            latency.record(ms);
        }
        Cell {
            route: 0,
            arm,
            requests,
            errors,
            latency,
        }
    }

    /// Feeds seconds `from..to`, each built by `f(t)`, and returns the first `t` that rolled back.
    fn run(
        d: &mut impl Detector,
        from: i64,
        to: i64,
        mut f: impl FnMut(i64) -> Vec<Cell>,
    ) -> Option<i64> {
        let mut first = None;
        for t in from..to {
            if d.second(t, &f(t)) == Call::Rollback && first.is_none() {
                first = Some(t);
            }
        }
        first
    }

    // ---- Flagger ----

    /// Minute `m` (0-based after the change) is bad when `bad(m)`: 3 % errors in it.
    fn flagger_stream(bad: impl Fn(i64) -> bool) -> impl FnMut(i64) -> Vec<Cell> {
        move |t| {
            let errors = if t >= 0 && bad(t / 60) && t % 60 < 3 {
                2
            } else {
                0
            };
            vec![cell(None, 2, errors, 40.0)]
        }
    }

    #[test]
    fn flagger_rolls_back_at_the_fifth_bad_minute_and_not_the_fourth() {
        // Bad minutes 0, 2, 4, 6: four failed checks, never consecutive. The count is cumulative.
        let mut f = Flagger::as_shipped();
        let got = run(&mut f, -120, 1800, flagger_stream(|m| m < 8 && m % 2 == 0));
        assert_eq!(got, None);
        assert_eq!(f.failed_checks(), 4);

        // A fifth bad minute (8) tips it, at the end of that minute: second 8*60 + 59.
        let mut f = Flagger::as_shipped();
        let got = run(&mut f, -120, 1800, flagger_stream(|m| m <= 8 && m % 2 == 0));
        assert_eq!(got, Some(539));
    }

    #[test]
    fn flagger_counts_latency_and_empty_minutes_as_failed_checks() {
        // Minutes 0-2 are empty and minutes 3-4 have a P99 above 500 ms: five failed checks.
        let mut f = Flagger::as_shipped();
        let got = run(&mut f, 0, 600, |t| match t / 60 {
            0..=2 => vec![],
            3 | 4 => vec![cell(None, 2, 0, 800.0)],
            _ => vec![cell(None, 2, 0, 40.0)],
        });
        assert_eq!(got, Some(299));
        // Zero-count cells are no data too.
        let mut f = Flagger::as_shipped();
        assert_eq!(
            run(&mut f, 0, 600, |_| vec![cell(None, 0, 0, 0.0)]),
            Some(299)
        );
    }

    #[test]
    fn flagger_judges_only_the_canary_arm_and_its_knob_is_monotone() {
        // The control arm is full of errors; the canary is clean.
        let stream = |t: i64| {
            vec![
                cell(Some(Arm::Control), 10, 5, 40.0),
                cell(
                    Some(Arm::Treatment),
                    10,
                    if t % 60 == 0 { 1 } else { 0 },
                    40.0,
                ),
            ]
        };
        let mut f = Flagger::as_shipped();
        assert_eq!(run(&mut f, -60, 1800, stream), None);
        // 1 error in 600 requests is 0.17 %: fails at k = 0.1 (min 99.9 %), passes at k = 0.2.
        assert_eq!(
            run(&mut Flagger::calibrated(0.1), 0, 600, stream),
            Some(299)
        );
        assert_eq!(run(&mut Flagger::calibrated(0.2), 0, 600, stream), None);
    }

    // ---- Argo ----

    /// Concurrent: both arms serve 10 rps with 1 error every 10 s (1 %). In minute 0 the canary
    /// has `extra` more errors.
    fn argo_stream(extra: u32) -> impl Fn(i64) -> Vec<Cell> {
        move |t| {
            let base = u32::from(t.rem_euclid(10) == 0);
            let bump = u32::from((0..i64::from(extra)).contains(&t));
            vec![
                cell(Some(Arm::Control), 10, base, 40.0),
                cell(Some(Arm::Treatment), 10, base + bump, 40.0),
            ]
        }
    }

    #[test]
    fn argo_fails_on_the_third_failed_measurement_and_not_the_second() {
        // Measurement m (at the end of minute m-1) sees k = min(m, 5) minutes. The canary rate is
        // (6k + extra) / 600k against the control's 6k / 600k = 1 %. It fails iff
        // 6k + extra > 1.2 * 6k, that is iff extra > 1.2k.
        // extra = 4 fails k = 1, 2, 3 (4 > 3.6) and passes k = 4 (4 < 4.8): three failures, so
        // it rolls back at measurement 3, the call for second 179.
        let mut a = Argo::as_shipped();
        assert_eq!(run(&mut a, -60, 1800, argo_stream(4)), Some(179));
        assert_eq!(a.failed_measurements(), 3);
        // extra = 3 fails k = 1, 2 only (3 < 3.6): two failures, within failureLimit 2.
        let mut a = Argo::as_shipped();
        assert_eq!(run(&mut a, -60, 1800, argo_stream(3)), None);
        assert_eq!(a.failed_measurements(), 2);
        // Argo's default failureLimit 0 rolls back on the first failed measurement.
        let mut a = Argo::as_shipped().with_failure_limit(0);
        assert_eq!(run(&mut a, -60, 1800, argo_stream(3)), Some(59));
        // The analysis ends after count = 30 measurements: nothing after second 1799 counts.
        let mut a = Argo::as_shipped();
        let late = |t: i64| {
            let e = if t >= 1800 { 10 } else { 0 };
            vec![
                cell(Some(Arm::Control), 10, 0, 40.0),
                cell(Some(Arm::Treatment), 10, e, 40.0),
            ]
        };
        assert_eq!(run(&mut a, 0, 3600, late), None);
    }

    #[test]
    fn argo_treats_no_data_as_success() {
        // Before/after, and the service gets no traffic after the change: every measurement is
        // NaN, hence a success, and it never rolls back.
        let mut a = Argo::as_shipped();
        let got = run(&mut a, -1800, 1800, |t| {
            if t < 0 {
                vec![cell(None, 5, u32::from(t % 50 == 0), 40.0)]
            } else {
                vec![]
            }
        });
        assert_eq!(got, None);
        assert_eq!(a.failed_measurements(), 0);
        // And no baseline at all (the stream starts at the change) while the canary errs: the
        // baseline is NaN, so the comparison is false, so also a success.
        let mut a = Argo::as_shipped();
        assert_eq!(
            run(&mut a, 0, 1800, |_| vec![cell(None, 5, 5, 4000.0)]),
            None
        );
    }

    #[test]
    fn argo_compares_with_the_frozen_pre_change_baseline() {
        // Before: 1 % errors and 40 ms. After: 5 % errors from minute 0. Every measurement fails;
        // the third at second 179.
        let stream = |t: i64| {
            let e = if t < 0 {
                u32::from(t.rem_euclid(20) == 0)
            } else {
                u32::from(t.rem_euclid(4) == 0)
            };
            vec![cell(None, 5, e, 40.0)]
        };
        assert_eq!(run(&mut Argo::as_shipped(), -1800, 1800, stream), Some(179));
        // 5 % against 1 % is a ratio of 5: a knob of 5 or more tolerates it.
        assert_eq!(run(&mut Argo::calibrated(5.0), -1800, 1800, stream), None);
        assert_eq!(
            run(&mut Argo::calibrated(4.9), -1800, 1800, stream),
            Some(179)
        );
        // Latency alone: p99 of 60 ms against 40 ms, a ratio of about 1.5.
        let slow = |t: i64| vec![cell(None, 5, 0, if t < 0 { 40.0 } else { 60.0 })];
        assert_eq!(run(&mut Argo::as_shipped(), -1800, 1800, slow), Some(179));
        assert_eq!(run(&mut Argo::calibrated(1.6), -1800, 1800, slow), None);
    }

    // ---- Kayenta ----

    /// Traffic whose per-step values cycle over three shapes: (requests, errors, latency ms).
    /// Step k has 1, 2 or 3 (times `err_mult`) errors in 300 requests.
    fn shaped(t: i64, err_mult: u32, slow: f64) -> (u32, u32, f64) {
        let step = t.div_euclid(30).rem_euclid(3) as usize;
        let errors = u32::from(t.rem_euclid(30) < [1, 2, 3][step]) * err_mult;
        (10, errors.min(10), [40.0, 45.0, 50.0][step] * slow)
    }

    #[test]
    fn kayenta_passes_identical_traffic_in_both_topologies() {
        let mut k = Kayenta::as_shipped();
        let got = run(&mut k, -1800, 3600, |t| {
            let (n, e, ms) = shaped(t, 1, 1.0);
            vec![cell(None, n, e, ms)]
        });
        assert_eq!(got, None);
        assert_eq!(k.scores(), &[100.0, 100.0, 100.0]);

        let mut k = Kayenta::as_shipped();
        let got = run(&mut k, 0, 1800, |t| {
            let (n, e, ms) = shaped(t, 1, 1.0);
            vec![
                cell(Some(Arm::Control), n, e, ms),
                cell(Some(Arm::Treatment), n, e, ms),
            ]
        });
        assert_eq!(got, None);
        assert_eq!(k.scores(), &[100.0, 100.0, 100.0]);
    }

    #[test]
    fn kayenta_fails_a_large_error_regression_at_the_ten_minute_judgment() {
        // Errors x10 after the change: every canary step is above every baseline step, the
        // interval's lower end (7/300) is far above 0.25 x the estimate (about 18/300), so the
        // critical error-rate metric is High and the score is 0.
        let mut k = Kayenta::as_shipped();
        let got = run(&mut k, -1800, 1800, |t| {
            let (n, e, ms) = shaped(t, if t >= 0 { 10 } else { 1 }, 1.0);
            vec![cell(None, n, e, ms)]
        });
        assert_eq!(got, Some(599));
        assert_eq!(k.scores(), &[0.0]);
    }

    #[test]
    fn kayenta_latency_regression_scores_fifty_and_fails() {
        // Latency x1.5 and errors unchanged: both latency metrics High, the latency group scores 0,
        // and the summary is 50 <= 75.
        let mut k = Kayenta::as_shipped();
        let got = run(&mut k, 0, 1800, |t| {
            let (n, e, ms) = shaped(t, 1, 1.0);
            let (_, _, slow) = shaped(t, 1, 1.5);
            vec![
                cell(Some(Arm::Control), n, e, ms),
                cell(Some(Arm::Treatment), n, e, slow),
            ]
        });
        assert_eq!(got, Some(599));
        assert_eq!(k.scores(), &[50.0]);
    }

    #[test]
    fn kayenta_426_sparse_errors_pass_as_in_kayenta() {
        // The classifier test: experiment {0,1,2,1,0,0} against control all 0 -> Pass.
        let e = [0.0, 1.0, 2.0, 1.0, 0.0, 0.0];
        let c = [0.0; 6];
        for nan in [NanStrategy::Replace, NanStrategy::Remove] {
            assert_eq!(classify(&c, &e, nan, 0.98, 0.25, 1.0), Class::Pass);
        }
        // ClassifierSuite "Majority Tied Observations": (1,1,1,1,10) against ones -> Pass.
        assert_eq!(
            classify(
                &[1.0; 5],
                &[1.0, 1.0, 1.0, 1.0, 10.0],
                NanStrategy::Remove,
                0.98,
                0.25,
                1.0
            ),
            Class::Pass
        );
        // spinnaker#6278: seven 100s and three 1s against ten 1s -> Pass (lower bound ~0).
        let mut e = [100.0; 10];
        e[7..].fill(1.0);
        assert_eq!(
            classify(&[1.0; 10], &e, NanStrategy::Remove, 0.98, 0.25, 1.0),
            Class::Pass
        );

        // End to end: the canary errs in 6 of 20 steps, the baseline never does. It passes: the
        // interval's lower end and the estimate both sit on the jump at 0 (14 of 20 canary steps
        // tie with the 60 baseline zeros), so "lower > 0.25 |estimate|" is 0 > 0.
        let mut k = Kayenta::as_shipped();
        let got = run(&mut k, -1800, 1800, |t| {
            let step = t.div_euclid(30);
            let e = u32::from(t >= 0 && step % 10 < 3 && t % 30 == 0);
            vec![cell(None, 10, e, 40.0)]
        });
        assert_eq!(got, None);
        assert_eq!(k.scores(), &[100.0, 100.0, 100.0]);
    }

    #[test]
    fn kayenta_classifier_short_cuts_and_scoring() {
        let cls = |c: &[f64], e: &[f64], nan| classify(c, e, nan, 0.98, 0.25, 1.0);
        // Empty after NaN handling.
        assert_eq!(cls(&[f64::NAN], &[1.0], NanStrategy::Remove), Class::Nodata);
        assert_eq!(cls(&[], &[1.0], NanStrategy::Replace), Class::Pass);
        // NaN -> 0 under Replace: these become identical.
        assert_eq!(
            cls(&[0.0, 1.0], &[1.0, f64::NAN], NanStrategy::Replace),
            Class::Pass
        );
        // Two constant arms: Kayenta's noise makes a tight interval at a - b.
        assert_eq!(cls(&[0.0; 8], &[0.5; 8], NanStrategy::Remove), Class::High);
        assert_eq!(cls(&[0.5; 8], &[0.0; 8], NanStrategy::Remove), Class::Pass);
        // A clear shift up is High; the same shift down is not (direction increase).
        let c: Vec<f64> = (0..40).map(|i| 40.0 + f64::from(i % 7)).collect();
        let up: Vec<f64> = c.iter().map(|v| v + 20.0).collect();
        let down: Vec<f64> = c.iter().map(|v| v - 20.0).collect();
        assert_eq!(cls(&c, &up, NanStrategy::Remove), Class::High);
        assert_eq!(cls(&c, &down, NanStrategy::Remove), Class::Pass);

        use Class::*;
        assert_eq!(score(Pass, &[Pass, Pass]), 100.0);
        assert_eq!(score(Pass, &[High, Pass]), 75.0);
        assert_eq!(score(High, &[Pass, Pass]), 0.0);
        assert_eq!(score(Pass, &[Nodata, Nodata]), 0.0);
        assert_eq!(score(Pass, &[Nodata, Pass]), 100.0);
        assert_eq!(score(Pass, &[Nodata, High]), 50.0);
    }

    #[test]
    fn kayenta_knob_is_monotone_on_a_borderline_shift() {
        // Ten latency levels, 40..58 ms, cycling by step; after the change everything is 10 %
        // slower. The canary's 20 steps at 10 minutes overlap the baseline's 60 a lot, so the
        // verdict hangs on the confidence level: a lower level rolls back sooner, a higher one later
        // or never.
        let stream = |t: i64| {
            let level = 40.0 + 2.0 * t.div_euclid(30).rem_euclid(10) as f64;
            let ms = if t >= 0 { level * 1.1 } else { level };
            vec![cell(None, 10, 0, ms)]
        };
        let rolled: Vec<Option<i64>> = [0.8, 0.9, 0.98, 0.999, 0.999_999]
            .iter()
            .map(|&conf| run(&mut Kayenta::calibrated(conf), -1800, 1800, stream))
            .collect();
        assert_eq!(rolled, [Some(599), Some(599), Some(1199), None, None]);
        assert_eq!(
            run(&mut Kayenta::as_shipped(), -1800, 1800, stream),
            Some(1199)
        );
    }
}
