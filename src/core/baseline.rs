//! The rolling baseline: the traffic of the last `baseline_secs`, kept as one tally per route per
//! minute, so it is ready the moment a change lands.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::dispersion::{Bin, Dispersion, BIN_SECS};
use super::tally::Tally;

const SLOT_SECS: i64 = 60;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Slot {
    start: i64,
    by_stratum: Vec<Tally>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RollingBaseline {
    window_secs: i64,
    slots: VecDeque<Slot>,
    /// Requests and errors per 10-second bin, all routes together.
    bins: VecDeque<(i64, Bin)>,
}

impl RollingBaseline {
    pub fn new(window_secs: u32) -> Self {
        RollingBaseline {
            window_secs: i64::from(window_secs),
            slots: VecDeque::new(),
            bins: VecDeque::new(),
        }
    }

    pub fn set_window(&mut self, window_secs: u32) {
        self.window_secs = i64::from(window_secs);
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
    /// Counts requests and errors (all routes together) in the 10-second bin of second `sec`,
    /// for the dispersion index.
    pub fn count(&mut self, sec: i64, requests: u64, errors: u64) {
        let start = sec.div_euclid(BIN_SECS) * BIN_SECS;
        if self.bins.back().map_or(true, |&(s, _)| start > s) {
            self.bins.push_back((start, Bin::default()));
            while self
                .bins
                .front()
                .is_some_and(|&(s, _)| s + BIN_SECS <= start - self.window_secs)
            {
                self.bins.pop_front();
            }
        }
        if let Some((_, bin)) = self.bins.iter_mut().rev().find(|(s, _)| *s == start) {
            bin.requests += requests;
            bin.errors += errors.min(requests);
        }
    }

    /// The dispersion of error counts over the bins of `[end - window, end)`.
    pub fn dispersion(&self, end: f64) -> Dispersion {
        let from = end - self.window_secs as f64;
        let mut d = Dispersion::default();
        let mut next = None;
        for &(start, bin) in &self.bins {
            if ((start + BIN_SECS) as f64) <= from || start as f64 >= end {
                continue;
            }
            if next.is_some_and(|n| n != start) {
                // A stretch without traffic: do not compare across it.
                d.push(Bin::default());
            }
            d.push(bin);
            next = Some(start + BIN_SECS);
        }
        d
    }
}

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
    fn bursts_in_the_window_raise_the_dispersion_and_older_ones_are_forgotten() {
        let mut b = RollingBaseline::new(1800);
        for sec in 0..3600 {
            // Steady errors, and bursts of 12 every 10 minutes during the first half hour only.
            let burst = if sec < 1800 && sec % 600 == 300 {
                12
            } else {
                0
            };
            b.count(sec, 10, u64::from(sec % 50 == 0) + burst);
            if sec == 1799 {
                assert!(b.dispersion(1800.0).index() > 3.0);
            }
        }
        assert_eq!(b.dispersion(3600.0).index(), 1.0);
        assert!(b.bins.len() <= 182, "{} bins kept", b.bins.len());
    }
}
