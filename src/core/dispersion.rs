//! How bursty bad events are: the dispersion index of their counts per 10-second bin, from the
//! baseline and the watch so far, for each kind of bad event a test counts (errors, requests
//! slower than a threshold).
//!
//! Bad events that come in bursts (one client retrying a failing call, a flapping dependency, a
//! host that stalls for a few seconds and slows every request) make a count less informative
//! than the same count of independent events. The tests divide their evidence by this index
//! (the quasi-likelihood correction), and the cap on one second's evidence by it too, so the cap
//! bounds the same share of a second's evidence as on a steady service. So a bursty service
//! needs proportionally more evidence and a burst cannot carry a watch in a few seconds, while
//! a steady one pays nothing.
//!
//! The index compares consecutive bins, `x_i - k·x_{i-1}` with `k` the ratio of their traffic:
//! for independent events its variance is `(x_i + k²·x_{i-1})·(1 - p)` whatever the rate, so a
//! burst inflates the index but a change of rate (a regression starting) moves only one term.
//! The factor `1 - p` (the pooled share of bad events) is the binomial's: slower-than-p50 is
//! half of all requests, and its counts scatter half as much as a Poisson's would. It is
//! updated only when a bin completes, so the evidence of a second is always discounted by what
//! was known before that second: that keeps the discounted test valid.

use serde::{Deserialize, Serialize};

use super::tally::Tally;

/// Seconds per bin.
pub const BIN_SECS: i64 = 10;
/// Largest index the tests divide their evidence by: a wild history slows them, never silences.
/// For slowness, far above what a host that stalls for seconds every few minutes reaches at 200
/// requests a second (several hundred for slower-than-p95: a stalled bin holds ten times its
/// share). Such stalls recur, and a lower bound let them roll back most harmless changes.
pub const MAX_DISPERSION: f64 = 1000.0;
/// For errors, lower: one burst of failures in the baseline (a restart the deploy window did
/// not cover) would otherwise slow every error test for the baseline's length, an outage's
/// detection at 200 requests a second from 2 s to 100 s; bursts of errors from one client are
/// small beside the traffic, and 10 covers them.
pub const MAX_ERROR_DISPERSION: f64 = 10.0;

/// What a test's index counts as a bad event. Latency thresholds are per route in the tests;
/// the index pools routes at the pooled threshold: what makes slowness bursty (a host stalling,
/// a noisy neighbour, a garbage collection) slows every route at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Events {
    Errors,
    /// Requests in this latency bucket or slower.
    SlowerThan(usize),
}

impl Events {
    /// `(requests, bad events)` in `bin`.
    fn count(self, bin: &Tally) -> (u64, u64) {
        let c = match self {
            Events::Errors => bin.error_counts(),
            Events::SlowerThan(b) => bin.slower_counts(b),
        };
        (c.requests, c.events)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dispersion {
    events: Events,
    squares: f64,
    variance: f64,
    terms: u64,
    /// `(requests, events)` of the bin before, if it had traffic.
    previous: Option<(u64, u64)>,
    /// All requests and bad events pushed, for the binomial factor.
    #[serde(default)]
    requests: u64,
    #[serde(default)]
    bad: u64,
}

impl Default for Dispersion {
    fn default() -> Self {
        Dispersion::of(Events::Errors)
    }
}

impl Dispersion {
    pub fn of(events: Events) -> Dispersion {
        Dispersion {
            events,
            squares: 0.0,
            variance: 0.0,
            terms: 0,
            previous: None,
            requests: 0,
            bad: 0,
        }
    }

    pub fn events(&self) -> Events {
        self.events
    }

    /// The index of `events` over `bins`, in time order; `None` breaks the chain of comparisons
    /// (a stretch without traffic, or left out).
    pub fn over<'a>(events: Events, bins: impl IntoIterator<Item = Option<&'a Tally>>) -> Self {
        let mut d = Dispersion::of(events);
        for bin in bins {
            match bin {
                Some(b) => d.push(b),
                None => d.push_counts(0, 0),
            }
        }
        d
    }

    /// Adds the next bin (requests, errors and latencies of 10 seconds, all routes together),
    /// in time order.
    pub fn push(&mut self, bin: &Tally) {
        let (requests, events) = self.events.count(bin);
        self.push_counts(requests, events);
    }

    /// Adds the next bin's counts. Bins with no traffic break the chain of comparisons.
    fn push_counts(&mut self, requests: u64, events: u64) {
        if requests == 0 {
            self.previous = None;
            return;
        }
        let events = events.min(requests);
        self.requests += requests;
        self.bad += events;
        if let Some((prev_requests, prev_events)) = self.previous {
            let k = requests as f64 / prev_requests as f64;
            let diff = events as f64 - k * prev_events as f64;
            self.squares += diff * diff;
            self.variance += events as f64 + k * k * prev_events as f64;
            self.terms += 1;
        }
        self.previous = Some((requests, events));
    }

    /// The index, at least 1. Only a dispersion clearly above 1 counts: with independent events
    /// the estimate scatters around 1 by about sqrt(2 / terms), and discounting steady traffic
    /// would only cost power.
    pub fn index(&self) -> f64 {
        let share = self.bad as f64 / self.requests.max(1) as f64;
        let variance = self.variance * (1.0 - share);
        if self.terms < 10 || variance <= 0.0 {
            return 1.0;
        }
        let raw = self.squares / variance;
        let max = match self.events {
            Events::Errors => MAX_ERROR_DISPERSION,
            Events::SlowerThan(_) => MAX_DISPERSION,
        };
        (raw - 2.0 * (2.0 / self.terms as f64).sqrt()).clamp(1.0, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Binomial, Distribution, Poisson};
    use rand_pcg::Pcg64Mcg;

    fn index_of(bins: impl IntoIterator<Item = (u64, u64)>) -> f64 {
        let bins: Vec<Tally> = bins
            .into_iter()
            .map(|(requests, errors)| Tally {
                requests,
                errors,
                ..Tally::default()
            })
            .collect();
        Dispersion::over(Events::Errors, bins.iter().map(Some)).index()
    }

    #[test]
    fn independent_errors_are_not_discounted() {
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        for &rate in &[0.0005, 0.01, 0.2] {
            let binomial = Binomial::new(200, rate).unwrap();
            let bins = (0..360).map(|_| (200, binomial.sample(&mut rng)));
            assert_eq!(index_of(bins), 1.0, "rate {rate}");
        }
    }

    #[test]
    fn bursts_raise_the_index() {
        let mut rng = Pcg64Mcg::seed_from_u64(2);
        let bins = (0..180).map(|i| {
            let burst = if i % 60 == 30 { 12 } else { 0 };
            (10, u64::from(rng.gen::<f64>() < 0.1) + burst)
        });
        assert!(index_of(bins) > 3.0);
    }

    #[test]
    fn a_change_of_rate_is_not_mistaken_for_bursts() {
        let mut rng = Pcg64Mcg::seed_from_u64(3);
        let low = Poisson::new(2.0).unwrap();
        let high = Poisson::new(6.0).unwrap();
        let bins = (0..360).map(|i| {
            let p = if i < 180 { &low } else { &high };
            (200, p.sample(&mut rng) as u64)
        });
        assert!(index_of(bins) < 1.3);
    }

    #[test]
    fn traffic_that_varies_is_not_mistaken_for_bursts() {
        let mut rng = Pcg64Mcg::seed_from_u64(4);
        let bins = (0..360).map(|i| {
            let requests = if (i / 30) % 2 == 0 { 100 } else { 400 };
            let errors = Poisson::new(requests as f64 * 0.01)
                .unwrap()
                .sample(&mut rng) as u64;
            (requests, errors)
        });
        assert!(index_of(bins) < 1.3);
    }

    /// 10-second bins of `rps` requests a second, each slower than the threshold with chance
    /// `slow(bin)`; the index of slower-than-threshold requests.
    fn slowness_index(seed: u64, rps: u64, slow: impl Fn(usize) -> f64) -> f64 {
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        let bins: Vec<Tally> = (0..24)
            .map(|i| {
                let mut t = Tally::default();
                for _ in 0..rps * BIN_SECS as u64 {
                    let ms = if rng.gen::<f64>() < slow(i) {
                        40.0
                    } else {
                        10.0
                    };
                    t.add_request(false, Some(ms));
                }
                t
            })
            .collect();
        let threshold = crate::core::histogram::bucket_of(20.0);
        Dispersion::over(Events::SlowerThan(threshold), bins.iter().map(Some)).index()
    }

    #[test]
    fn half_of_all_requests_slower_than_the_median_is_not_bursty() {
        // Four minutes are 23 comparisons: the estimate scatters, and is rarely much above 1.
        let indexes: Vec<f64> = (0..40)
            .map(|seed| slowness_index(seed, 20, |_| 0.5))
            .collect();
        let discounted = indexes.iter().filter(|&&i| i > 1.0).count();
        assert!(discounted <= 4, "{indexes:?}");
        assert!(indexes.iter().all(|&i| i < 1.5), "{indexes:?}");
    }

    #[test]
    fn a_host_that_stalls_now_and_then_makes_slowness_bursty() {
        // Four minutes at 20 requests a second; twice, for a few seconds of a bin, nearly every
        // request is slow: a 10-second bin where 80% are (what a shared host that stalls does).
        let index = slowness_index(5, 20, |bin| match bin {
            7 | 16 => 0.8,
            _ => 0.5,
        });
        assert!(index > 3.0, "{index}");
    }
}
