//! The rolling baseline: the traffic of the last `baseline_secs`, kept as one tally per route per
//! minute, so it is ready the moment a change lands.

use std::collections::VecDeque;

use super::tally::Tally;

const SLOT_SECS: i64 = 60;

#[derive(Clone, Debug)]
struct Slot {
    start: i64,
    by_stratum: Vec<Tally>,
}

#[derive(Clone, Debug)]
pub struct RollingBaseline {
    window_secs: i64,
    slots: VecDeque<Slot>,
}

impl RollingBaseline {
    pub fn new(window_secs: u32) -> Self {
        RollingBaseline {
            window_secs: i64::from(window_secs),
            slots: VecDeque::new(),
        }
    }

    /// The tally of `stratum` for the minute holding second `sec`. Observations older than the
    /// window are dropped rather than stored.
    pub fn tally_mut(&mut self, sec: i64, stratum: usize) -> Option<&mut Tally> {
        let start = sec.div_euclid(SLOT_SECS) * SLOT_SECS;
        let newest = self.slots.back().map(|s| s.start);
        if newest.is_some_and(|n| start > n) || newest.is_none() {
            self.slots.push_back(Slot {
                start,
                by_stratum: Vec::new(),
            });
            // One slot beyond the window, so a window ending mid-minute is still covered.
            while self
                .slots
                .front()
                .is_some_and(|s| s.start + SLOT_SECS <= start - self.window_secs)
            {
                self.slots.pop_front();
            }
        }
        let slot = self.slots.iter_mut().rev().find(|s| s.start == start)?;
        if slot.by_stratum.len() <= stratum {
            slot.by_stratum.resize_with(stratum + 1, Tally::default);
        }
        Some(&mut slot.by_stratum[stratum])
    }

    /// Sums, per stratum, the minutes that overlap `[end - window, end)`.
    pub fn snapshot(&self, end: f64, strata: usize) -> Vec<Tally> {
        let mut out = vec![Tally::default(); strata];
        let from = end - self.window_secs as f64;
        for slot in &self.slots {
            let (s, e) = (slot.start as f64, (slot.start + SLOT_SECS) as f64);
            if e <= from || s >= end {
                continue;
            }
            for (acc, t) in out.iter_mut().zip(slot.by_stratum.iter()) {
                acc.merge(t);
            }
        }
        out
    }
}

impl RollingBaseline {
    /// How much more the error counts per minute vary than independent errors would (the
    /// Pearson dispersion index, at least 1), over the minutes of `[end - window, end)`.
    ///
    /// Errors that come in bursts (one client retrying a failing call, a flapping dependency)
    /// make every count less informative than a Poisson count; the tests divide their evidence
    /// by this index, the quasi-Poisson correction, so a service whose baseline already shows
    /// bursts needs proportionally more evidence. Capped at `MAX_DISPERSION` so a wild baseline
    /// slows the tests down but never silences them.
    pub fn error_dispersion(&self, end: f64, totals: &[Tally]) -> f64 {
        let from = end - self.window_secs as f64;
        let (mut pearson, mut terms) = (0.0, 0usize);
        for slot in &self.slots {
            let (s, e) = (slot.start as f64, (slot.start + SLOT_SECS) as f64);
            if e <= from || s >= end {
                continue;
            }
            for (t, total) in slot.by_stratum.iter().zip(totals) {
                if total.requests == 0 || total.errors == 0 || t.requests == 0 {
                    continue;
                }
                let expected = total.errors as f64 * t.requests as f64 / total.requests as f64;
                let diff = t.errors as f64 - expected;
                pearson += diff * diff / expected;
                terms += 1;
            }
        }
        let strata = totals.iter().filter(|t| t.errors > 0).count();
        if terms < strata + 5 {
            return 1.0;
        }
        // Only a dispersion clearly above 1 counts: the index of independent errors scatters
        // around 1 by about sqrt(2 / df), and discounting clean traffic would cost power.
        let df = (terms - strata) as f64;
        (pearson / df - 2.0 * (2.0 / df).sqrt()).clamp(1.0, MAX_DISPERSION)
    }
}

/// Largest dispersion index the tests divide their evidence by.
pub const MAX_DISPERSION: f64 = 10.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_forgets_what_is_older_than_it() {
        let mut b = RollingBaseline::new(600);
        for sec in 0..3600 {
            b.tally_mut(sec, 0)
                .unwrap()
                .add_request(sec % 100 == 0, Some(10.0));
        }
        let snap = b.snapshot(3600.0, 1);
        assert_eq!(snap[0].requests, 600);
        assert_eq!(snap[0].errors, 6);
        assert!(b.slots.len() <= 12, "{} slots kept", b.slots.len());
    }

    #[test]
    fn bursts_of_errors_raise_the_dispersion_and_steady_errors_do_not() {
        let mut steady = RollingBaseline::new(1800);
        let mut bursty = RollingBaseline::new(1800);
        for sec in 0..1800 {
            steady
                .tally_mut(sec, 0)
                .unwrap()
                .add_request(sec % 50 == 0, None);
            // The same number of errors, all in three bursts.
            let burst = (sec / 600) * 600 + 5;
            bursty
                .tally_mut(sec, 0)
                .unwrap()
                .add_request(sec >= burst && sec < burst + 12, None);
        }
        let d_steady = steady.error_dispersion(1800.0, &steady.snapshot(1800.0, 1));
        let d_bursty = bursty.error_dispersion(1800.0, &bursty.snapshot(1800.0, 1));
        assert!(d_steady < 1.5, "{d_steady}");
        assert!(d_bursty > 5.0, "{d_bursty}");
    }
}
