//! The service's recent traffic, from which each change's baseline is drawn: one tally per route
//! per slot (a thirtieth of the baseline window, 10 s to a minute) and requests and errors per
//! 10-second bin, kept whatever is happening (before,
//! during and after watches), together with the spans that are not known-good.
//!
//! A baseline is "the service as it was just before the change": the most recent
//! `baseline_secs` of slots that are not excluded, ending before the change's deploy began.
//! What is excluded is decided by the monitor: a deploy window (the restart's own 502s are
//! neither baseline nor watch), the traffic of a change that regressed, a recovery that did not
//! come. Everything else, including the traffic watched after a healthy change, is baseline for
//! the next one, so back-to-back changes each get a full baseline.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::dispersion::BIN_SECS;
use super::tally::Tally;

/// Slots per baseline window, about: the slot is the baseline's thirtieth (10 s to a minute),
/// so memory stays the same whatever the window, and a span excluded in whole slots (a deploy
/// window takes up to two with it) costs a few percent of any baseline.
const SLOTS_PER_WINDOW: i64 = 30;
/// Slot widths: multiples of the dispersion bin, dividing a minute.
const SLOT_WIDTHS: [i64; 4] = [60, 30, 20, 10];
/// Known-good time kept beyond `baseline_secs`, so a deploy window announced late (its start is
/// only known when the change is notified) still finds a full baseline before it.
const SLACK_SECS: i64 = 600;
/// History is never kept longer than this many baseline windows, however much is excluded.
const MAX_WINDOWS: i64 = 4;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Slot {
    start: i64,
    by_stratum: Vec<Tally>,
}

/// A span of traffic time, `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub from: f64,
    pub to: f64,
}

impl Span {
    fn overlaps(&self, from: f64, to: f64) -> bool {
        self.from < to && from < self.to
    }
}

/// What a change is judged against: the tallies per stratum, its 10-second bins (all routes
/// together) for how bursty its bad events are, and where it comes from.
#[derive(Clone, Debug, Default)]
pub struct Baseline {
    pub tallies: Vec<Tally>,
    /// In time order; `None` between bins that are not consecutive (a stretch without
    /// traffic, or left out), so no comparison is made across it.
    pub bins: Vec<Option<Tally>>,
    pub window: BaselineWindow,
}

/// Where a baseline comes from: the slots it covers (quiet ones included, excluded ones not),
/// from the earliest to the latest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BaselineWindow {
    /// Start of the earliest slot used (`None`: there was no traffic to use).
    pub from: Option<f64>,
    /// End of the latest slot used.
    pub to: Option<f64>,
    /// Seconds of known-good time the baseline covers.
    pub covered_secs: f64,
    /// Seconds between `from` and `to` left out as not known-good.
    pub excluded_secs: f64,
    /// The spans between `from` and `to` left out, oldest first: whatever else is counted
    /// against this baseline (Sentry's events) leaves them out too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<Span>,
}

impl BaselineWindow {
    /// The spans the baseline covers, oldest first: `from` to `to` without what was left out.
    pub fn covered(&self) -> Vec<Span> {
        let (Some(from), Some(to)) = (self.from, self.to) else {
            return Vec::new();
        };
        let mut spans = Vec::with_capacity(self.left_out.len() + 1);
        let mut start = from;
        for gap in &self.left_out {
            if gap.from > start {
                spans.push(Span {
                    from: start,
                    to: gap.from,
                });
            }
            start = start.max(gap.to);
        }
        if to > start {
            spans.push(Span { from: start, to });
        }
        spans
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RollingBaseline {
    window_secs: i64,
    /// Seconds per slot, fixed when the history starts.
    #[serde(default = "minute")]
    slot_secs: i64,
    slots: VecDeque<Slot>,
    /// Requests, errors and latencies per 10-second bin, all routes together.
    bins: VecDeque<(i64, Tally)>,
    /// Spans that are not known-good, in time order, never overlapping.
    #[serde(default)]
    excluded: Vec<Span>,
    /// The earliest slot the history speaks for: before it, nothing is known (not even that
    /// it was quiet).
    #[serde(default)]
    horizon: Option<i64>,
    /// While a change is watched, the start of its deploy: a full baseline before it is kept,
    /// in case the change regresses and its traffic is excluded.
    #[serde(default)]
    pin: Option<f64>,
}

fn minute() -> i64 {
    60
}

impl RollingBaseline {
    pub fn new(window_secs: u32) -> Self {
        let target = i64::from(window_secs) / SLOTS_PER_WINDOW;
        let slot_secs = SLOT_WIDTHS
            .into_iter()
            .find(|&w| w <= target)
            .unwrap_or(BIN_SECS);
        RollingBaseline {
            slot_secs,
            window_secs: i64::from(window_secs),
            slots: VecDeque::new(),
            bins: VecDeque::new(),
            excluded: Vec::new(),
            horizon: None,
            pin: None,
        }
    }

    pub fn set_window(&mut self, window_secs: u32) {
        self.window_secs = i64::from(window_secs);
    }

    /// Counts one observation at second `sec`: `add` is applied to the tally of `stratum` for
    /// that slot, and to its 10-second bin. Observations older than the history are dropped.
    pub fn record(&mut self, sec: i64, stratum: usize, add: impl Fn(&mut Tally)) {
        let start = sec.div_euclid(self.slot_secs) * self.slot_secs;
        if self.horizon.is_some_and(|h| start < h) {
            return;
        }
        match self.slots.iter().rposition(|s| s.start <= start) {
            Some(i) if self.slots[i].start == start => {}
            found => {
                let at = found.map_or(0, |i| i + 1);
                let newest = at == self.slots.len();
                self.slots.insert(
                    at,
                    Slot {
                        start,
                        by_stratum: Vec::new(),
                    },
                );
                self.horizon.get_or_insert(start);
                if newest {
                    self.prune(start);
                }
            }
        }
        let Some(i) = self.slots.iter().rposition(|s| s.start == start) else {
            return;
        };
        let slot = &mut self.slots[i];
        if slot.by_stratum.len() <= stratum {
            slot.by_stratum.resize_with(stratum + 1, Tally::default);
        }
        add(&mut slot.by_stratum[stratum]);
        add(self.bin_mut(sec));
    }

    /// Keeps a full baseline before `at` (a watched change's deploy start), or stops keeping one.
    pub fn pin(&mut self, at: Option<f64>) {
        self.pin = at.filter(|t| t.is_finite());
    }

    /// Marks `[from, to)` as not known-good: no baseline will include it.
    pub fn exclude(&mut self, from: f64, to: f64) {
        if from.is_nan() || to.is_nan() || from >= to {
            return;
        }
        let mut span = Span { from, to };
        self.excluded.retain(|s| {
            if s.from <= span.to && span.from <= s.to {
                span.from = span.from.min(s.from);
                span.to = span.to.max(s.to);
                false
            } else {
                true
            }
        });
        let at = self.excluded.partition_point(|s| s.from < span.from);
        self.excluded.insert(at, span);
    }

    /// The spans excluded so far that the history still covers.
    pub fn excluded(&self) -> &[Span] {
        &self.excluded
    }

    fn is_excluded(&self, start: i64) -> bool {
        let (from, to) = (start as f64, (start + self.slot_secs) as f64);
        self.excluded.iter().any(|s| s.overlaps(from, to))
    }

    /// The baseline of a change whose deploy began at `end`: the most recent slots that end
    /// by then and are not excluded, until they cover `baseline_secs`.
    pub fn baseline(&self, end: f64, strata: usize) -> Baseline {
        self.baseline_excluding(end, strata, None)
    }

    /// Like [`RollingBaseline::baseline`], with `extra` left out too (a span not yet closed).
    pub fn baseline_excluding(&self, end: f64, strata: usize, extra: Option<Span>) -> Baseline {
        let used = self.slots_before(end, extra);
        let mut tallies = vec![Tally::default(); strata];
        let mut bins = Vec::new();
        let mut window = BaselineWindow::default();
        if let (Some(&first), Some(&last)) = (used.first(), used.last()) {
            window.from = Some(first as f64);
            window.to = Some((last + self.slot_secs) as f64);
            window.covered_secs = (used.len() as i64 * self.slot_secs) as f64;
            window.excluded_secs =
                ((last + self.slot_secs - first) as f64 - window.covered_secs).max(0.0);
            window.left_out = used
                .windows(2)
                .filter(|pair| pair[1] > pair[0] + self.slot_secs)
                .map(|pair| Span {
                    from: (pair[0] + self.slot_secs) as f64,
                    to: pair[1] as f64,
                })
                .collect();
        }
        let mut slots = self.slots.iter().peekable();
        for &m in &used {
            while slots.next_if(|s| s.start < m).is_some() {}
            if let Some(slot) = slots.next_if(|s| s.start == m) {
                for (acc, t) in tallies.iter_mut().zip(&slot.by_stratum) {
                    acc.merge(t);
                }
            }
        }
        let mut next = None;
        let mut in_use = used.iter().peekable();
        for (start, bin) in &self.bins {
            let start = *start;
            let slot = start.div_euclid(self.slot_secs) * self.slot_secs;
            while in_use.next_if(|&&m| m < slot).is_some() {}
            if in_use.peek() != Some(&&slot) {
                continue;
            }
            if next.is_some_and(|n| n != start) {
                // A stretch without traffic, or left out: do not compare across it.
                bins.push(None);
            }
            bins.push(Some(bin.clone()));
            next = Some(start + BIN_SECS);
        }
        Baseline {
            tallies,
            bins,
            window,
        }
    }

    /// The slots a baseline ending at `end` uses, oldest first.
    fn slots_before(&self, end: f64, extra: Option<Span>) -> Vec<i64> {
        let Some(horizon) = self.horizon else {
            return Vec::new();
        };
        if !end.is_finite() {
            return Vec::new();
        }
        let needed = (self.window_secs + self.slot_secs - 1)
            .div_euclid(self.slot_secs)
            .max(1) as usize;
        let mut m =
            (end.floor() as i64).div_euclid(self.slot_secs) * self.slot_secs - self.slot_secs;
        let mut out = Vec::with_capacity(needed);
        while m >= horizon && out.len() < needed {
            let extra_excludes =
                extra.is_some_and(|s| s.overlaps(m as f64, (m + self.slot_secs) as f64));
            if !self.is_excluded(m) && !extra_excludes {
                out.push(m);
            }
            m -= self.slot_secs;
        }
        out.reverse();
        out
    }

    /// Forgets what no baseline can need any more, now that the newest slot is `newest`: older
    /// than `baseline_secs` of known-good time plus slack before the newest slot, or before
    /// the pinned time if that is earlier (at most a few windows further back).
    fn prune(&mut self, newest: i64) {
        let keep_good = self.window_secs + SLACK_SECS;
        let anchor = match self.pin {
            Some(p) => newest.min((p.floor() as i64).div_euclid(self.slot_secs) * self.slot_secs),
            None => newest,
        };
        let oldest_allowed = anchor - MAX_WINDOWS * self.window_secs.max(self.slot_secs);
        let mut good = 0;
        let mut m = anchor;
        let mut keep_from = oldest_allowed;
        while m > oldest_allowed {
            if !self.is_excluded(m) {
                good += self.slot_secs;
                if good >= keep_good {
                    keep_from = m;
                    break;
                }
            }
            m -= self.slot_secs;
        }
        while self.slots.front().is_some_and(|s| s.start < keep_from) {
            self.slots.pop_front();
        }
        while self.bins.front().is_some_and(|&(s, _)| s < keep_from) {
            self.bins.pop_front();
        }
        self.excluded.retain(|s| s.to > keep_from as f64);
        if self.horizon.is_some_and(|h| h < keep_from) {
            self.horizon = Some(keep_from);
        }
    }

    /// The 10-second bin of second `sec`, all routes together, for the dispersion index.
    fn bin_mut(&mut self, sec: i64) -> &mut Tally {
        let start = sec.div_euclid(BIN_SECS) * BIN_SECS;
        let i = match self.bins.iter().rposition(|(s, _)| *s <= start) {
            Some(i) if self.bins[i].0 == start => i,
            found => {
                let at = found.map_or(0, |i| i + 1);
                self.bins.insert(at, (start, Tally::default()));
                at
            }
        };
        &mut self.bins[i].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::dispersion::{Dispersion, Events};

    fn request(b: &mut RollingBaseline, sec: i64, error: bool) {
        b.record(sec, 0, |t| t.add_request(error, Some(10.0)));
    }

    #[test]
    fn the_baseline_is_the_last_window_before_the_deploy() {
        let mut b = RollingBaseline::new(600);
        for sec in 0..3600 {
            request(&mut b, sec, sec % 100 == 0);
        }
        let base = b.baseline(3600.0, 1);
        assert_eq!(base.tallies[0].requests, 600);
        assert_eq!(base.tallies[0].errors, 6);
        assert_eq!(base.window.from, Some(3000.0));
        assert_eq!(base.window.to, Some(3600.0));
        assert_eq!(base.window.covered_secs, 600.0);
    }

    #[test]
    fn memory_is_bounded_by_the_window_and_its_slack() {
        let mut b = RollingBaseline::new(600);
        for sec in 0..36_000 {
            request(&mut b, sec, false);
        }
        let kept = (600 + SLACK_SECS) / b.slot_secs + 1;
        assert!(b.slots.len() as i64 <= kept, "{} slots kept", b.slots.len());
        assert!(
            b.bins.len() as i64 <= kept * 6,
            "{} bins kept",
            b.bins.len()
        );
    }

    #[test]
    fn excluded_slots_are_skipped_and_older_ones_take_their_place() {
        let mut b = RollingBaseline::new(600);
        for sec in 0..3600 {
            // A burst of errors in 3300..3330: the deploy's restart.
            request(&mut b, sec, (3300..3330).contains(&sec));
        }
        b.exclude(3300.0, 3330.0);
        let base = b.baseline(3300.0, 1);
        assert_eq!(base.tallies[0].errors, 0);
        assert_eq!(base.tallies[0].requests, 600);
        assert_eq!(base.window.to, Some(3300.0));
        // Later, a baseline that ends after the window skips its slot and reaches back.
        let base = b.baseline(3600.0, 1);
        assert_eq!(base.tallies[0].errors, 0);
        assert_eq!(base.window.covered_secs, 600.0);
        // 20-second slots for a 10-minute window: the two the burst touched are left out.
        assert_eq!(base.window.from, Some(2960.0));
        assert_eq!(base.window.excluded_secs, 40.0);
        // What else is counted against it leaves them out too.
        let span = |from, to| Span { from, to };
        assert_eq!(base.window.left_out, [span(3300.0, 3340.0)]);
        assert_eq!(
            base.window.covered(),
            [span(2960.0, 3300.0), span(3340.0, 3600.0)]
        );
    }

    #[test]
    fn history_reaches_further_back_to_keep_a_full_window_of_known_good_time() {
        let mut b = RollingBaseline::new(600);
        for sec in 0..1800 {
            request(&mut b, sec, false);
        }
        b.pin(Some(1800.0));
        for sec in 1800..3000 {
            request(&mut b, sec, false);
        }
        // The change regressed and was rolled back: 15 minutes that are not known-good, and
        // known to be only now.
        b.exclude(1800.0, 2700.0);
        b.pin(None);
        let base = b.baseline(3000.0, 1);
        assert_eq!(base.window.covered_secs, 600.0, "{:?}", base.window);
        assert_eq!(base.window.from, Some(1500.0));
        assert_eq!(base.window.excluded_secs, 900.0);
        for sec in 3000..4000 {
            request(&mut b, sec, false);
        }
        let base = b.baseline(4000.0, 1);
        assert_eq!(base.window.covered_secs, 600.0);
        assert_eq!(base.window.from, Some(3400.0));
    }

    #[test]
    fn slots_before_anything_was_seen_do_not_count_as_covered() {
        let mut b = RollingBaseline::new(1800);
        for sec in 1000..1300 {
            request(&mut b, sec, false);
        }
        let base = b.baseline(1300.0, 1);
        assert_eq!(base.window.from, Some(960.0));
        assert_eq!(base.window.covered_secs, 300.0);
        assert!(RollingBaseline::new(60)
            .baseline(10.0, 1)
            .window
            .from
            .is_none());
    }

    #[test]
    fn late_observations_land_in_their_own_slot() {
        let mut b = RollingBaseline::new(600);
        request(&mut b, 0, false);
        request(&mut b, 200, false);
        // Late, for a slot that had none yet.
        request(&mut b, 70, true);
        let base = b.baseline(300.0, 1);
        assert_eq!(base.tallies[0].requests, 3);
        assert_eq!(base.tallies[0].errors, 1);
    }

    fn error_index(base: &Baseline) -> f64 {
        Dispersion::over(Events::Errors, base.bins.iter().map(Option::as_ref)).index()
    }

    #[test]
    fn bursts_in_the_window_raise_the_dispersion_and_excluded_ones_do_not() {
        let mut b = RollingBaseline::new(1800);
        for sec in 0..3600 {
            // Steady errors, and bursts of 12 every 10 minutes during the first half hour only.
            let burst = if sec < 1800 && sec % 600 == 300 {
                12
            } else {
                0
            };
            let errors = u64::from(sec % 50 == 0) + burst;
            b.record(sec, 0, |t| t.add_counts(10, errors, None));
            if sec == 1799 {
                assert!(error_index(&b.baseline(1800.0, 1)) > 3.0);
            }
        }
        assert_eq!(error_index(&b.baseline(3600.0, 1)), 1.0);
        for at in [300.0, 900.0, 1500.0] {
            b.exclude(at - 5.0, at + 5.0);
        }
        assert_eq!(error_index(&b.baseline(1800.0, 1)), 1.0);
    }

    #[test]
    fn a_slot_is_about_a_thirtieth_of_the_window() {
        assert_eq!(RollingBaseline::new(1800).slot_secs, 60);
        assert_eq!(RollingBaseline::new(600).slot_secs, 20);
        assert_eq!(RollingBaseline::new(60).slot_secs, 10);
        assert_eq!(RollingBaseline::new(86_400).slot_secs, 60);
    }

    #[test]
    fn overlapping_exclusions_merge() {
        let mut b = RollingBaseline::new(600);
        b.exclude(10.0, 20.0);
        b.exclude(30.0, 40.0);
        b.exclude(15.0, 35.0);
        b.exclude(50.0, 50.0);
        assert_eq!(
            b.excluded(),
            &[Span {
                from: 10.0,
                to: 40.0
            }]
        );
    }
}
