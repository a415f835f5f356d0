//! The traffic of the service in 10-second bins (requests, errors, p50 and p99 latency), kept
//! for the post-mortem's chart of a change.
//!
//! [`SeriesBins`] aggregates requests (or per-interval counts from a scrape) into bins. Pure: no
//! clock (time is the `ts` of the traffic and the `now` of [`SeriesBins::take_closed`]), no IO,
//! and memory bounded by [`MAX_OPEN_BINS`] and [`MAX_CLOSED_BINS`] whatever the traffic. The
//! store keeps the closed bins in its `series` table (`src/store/series.rs`):
//! [`Store::append_series`], [`Store::series_between`], [`Store::prune_series`].
//!
//! [`Store::append_series`]: crate::store::Store::append_series
//! [`Store::series_between`]: crate::store::Store::series_between
//! [`Store::prune_series`]: crate::store::Store::prune_series
//!
//! A bin is only handed out once it can no longer change: when `now` is past its end by the
//! lateness allowance. Traffic for a bin already handed out is counted in
//! [`SeriesBins::dropped`], never added to a later bin (that would move it in time). A bin with
//! no traffic is not handed out at all: the chart shows a gap, which is what it was.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::core::Histogram;

/// Width of a bin in seconds. Bins start at multiples of it (unix time).
pub const BIN_SECS: i64 = 10;
/// How long after its end a bin still accepts traffic, by default: logs are read every poll and
/// scrapes arrive every few seconds, so a few seconds of delay are normal.
pub const DEFAULT_LATENESS_SECS: f64 = 15.0;
/// Bins open at once, at most (about five minutes of bins). Traffic spread wider than that
/// (a clock far off, `take_closed` not called) closes the oldest bins early.
pub const MAX_OPEN_BINS: usize = 32;
/// Closed bins waiting to be taken, at most (an hour); beyond it the oldest are dropped.
pub const MAX_CLOSED_BINS: usize = 360;
/// A bin starting more than this far ahead of `now` is a clock error: dropped when seen.
pub const MAX_AHEAD_SECS: f64 = 3600.0;

/// One 10-second bin of traffic, as stored and charted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Start of the bin, unix seconds, a multiple of [`BIN_SECS`].
    pub at: i64,
    pub requests: u64,
    pub errors: u64,
    /// Median latency of the bin's requests that had one; `None` when none had.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl SeriesPoint {
    /// Share of failed requests, `None` for a bin without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

/// A bin still accepting traffic.
#[derive(Default)]
struct OpenBin {
    requests: u64,
    errors: u64,
    /// Only allocated (2.5 KiB) once a request with a latency arrives.
    latency: Option<Histogram>,
}

impl OpenBin {
    fn close(self, at: i64) -> SeriesPoint {
        self.point(at)
    }

    fn point(&self, at: i64) -> SeriesPoint {
        let quantile = |p| self.latency.as_ref().and_then(|h| h.quantile_ms(p));
        SeriesPoint {
            at,
            requests: self.requests,
            errors: self.errors,
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
        }
    }
}

/// Aggregates traffic into 10-second bins. See the module documentation.
pub struct SeriesBins {
    lateness: f64,
    open: BTreeMap<i64, OpenBin>,
    closed: VecDeque<SeriesPoint>,
    /// Every bin starting before this has been handed out (or dropped): it can no longer change.
    closed_before: Option<i64>,
    dropped: u64,
}

impl Default for SeriesBins {
    fn default() -> Self {
        SeriesBins::new(DEFAULT_LATENESS_SECS)
    }
}

impl std::fmt::Debug for SeriesBins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesBins")
            .field("open", &self.open.keys().collect::<Vec<_>>())
            .field("closed", &self.closed.len())
            .field("closed_before", &self.closed_before)
            .field("dropped", &self.dropped)
            .finish()
    }
}

/// Start of the bin holding instant `ts`.
pub fn bin_start(ts: f64) -> i64 {
    ((ts / BIN_SECS as f64).floor() as i64).saturating_mul(BIN_SECS)
}

impl SeriesBins {
    /// Bins that accept traffic until `lateness_secs` after their end (negative counts as 0).
    pub fn new(lateness_secs: f64) -> SeriesBins {
        SeriesBins {
            lateness: if lateness_secs.is_finite() {
                lateness_secs.max(0.0)
            } else {
                DEFAULT_LATENESS_SECS
            },
            open: BTreeMap::new(),
            closed: VecDeque::new(),
            closed_before: None,
            dropped: 0,
        }
    }

    /// One request at `ts` (unix seconds).
    pub fn observe_request(&mut self, ts: f64, error: bool, latency_ms: Option<f64>) {
        if !ts.is_finite() {
            self.dropped += 1;
            return;
        }
        let Some(bin) = self.bin_mut(bin_start(ts), 1) else {
            return;
        };
        bin.requests += 1;
        bin.errors += u64::from(error);
        if let Some(ms) = latency_ms.filter(|ms| ms.is_finite()) {
            bin.latency.get_or_insert_with(Histogram::new).record(ms);
        }
    }

    /// Counts for an interval ending at `ts`, as a scrape gives them (errors beyond the
    /// requests are not counted). The interval holds traffic before `ts`, so an interval ending
    /// exactly on a bin edge belongs to the bin that ends there. `latency` is in the shared
    /// bucket layout.
    pub fn observe_counts(
        &mut self,
        ts: f64,
        requests: u64,
        errors: u64,
        latency: Option<&Histogram>,
    ) {
        if !ts.is_finite() {
            self.dropped = self.dropped.saturating_add(requests);
            return;
        }
        let at = ((ts / BIN_SECS as f64).ceil() as i64)
            .saturating_sub(1)
            .saturating_mul(BIN_SECS);
        let Some(bin) = self.bin_mut(at, requests) else {
            return;
        };
        bin.requests = bin.requests.saturating_add(requests);
        bin.errors = bin.errors.saturating_add(errors.min(requests));
        if let Some(h) = latency.filter(|h| h.total() > 0) {
            bin.latency.get_or_insert_with(Histogram::new).merge(h);
        }
    }

    /// The bin starting at `at`, opened if needed; `None` (and the requests counted as dropped)
    /// when it was already handed out.
    fn bin_mut(&mut self, at: i64, requests: u64) -> Option<&mut OpenBin> {
        if self.closed_before.is_some_and(|c| at < c) {
            self.dropped = self.dropped.saturating_add(requests);
            return None;
        }
        if !self.open.contains_key(&at) && self.open.len() >= MAX_OPEN_BINS {
            // Too wide a spread of open bins: the oldest one closes early, so memory stays
            // bounded. If the new bin would be that oldest one, it is refused instead.
            let oldest = self.open.keys().next().copied().unwrap_or(at);
            if at < oldest {
                self.dropped = self.dropped.saturating_add(requests);
                return None;
            }
            if let Some(bin) = self.open.remove(&oldest) {
                self.push_closed(bin.close(oldest));
            }
            self.closed_before = Some(
                self.closed_before
                    .map_or(oldest + BIN_SECS, |c| c.max(oldest + BIN_SECS)),
            );
        }
        Some(self.open.entry(at).or_default())
    }

    fn push_closed(&mut self, point: SeriesPoint) {
        if point.requests == 0 {
            return;
        }
        if self.closed.len() >= MAX_CLOSED_BINS {
            if let Some(old) = self.closed.pop_front() {
                self.dropped = self.dropped.saturating_add(old.requests);
            }
        }
        self.closed.push_back(point);
    }

    /// The bins that can no longer change at `now` (ended at least the lateness allowance ago),
    /// oldest first, each handed out once. Bins without traffic are not returned.
    pub fn take_closed(&mut self, now: f64) -> Vec<SeriesPoint> {
        if now.is_finite() {
            let watermark = bin_start(now - self.lateness);
            let ahead = now + MAX_AHEAD_SECS;
            let future: Vec<i64> = self
                .open
                .keys()
                .copied()
                .filter(|&at| at as f64 > ahead)
                .collect();
            for at in future {
                if let Some(bin) = self.open.remove(&at) {
                    self.dropped = self.dropped.saturating_add(bin.requests);
                }
            }
            while let Some(entry) = self.open.first_entry() {
                if *entry.key() >= watermark {
                    break;
                }
                let at = *entry.key();
                let bin = entry.remove();
                self.push_closed(bin.close(at));
            }
            if self.closed_before.is_none_or(|c| c < watermark) {
                self.closed_before = Some(watermark);
            }
        }
        self.closed.drain(..).collect()
    }

    /// What the bins not yet handed out hold so far (closed ones waiting, and open ones as they
    /// stand), oldest first, without handing anything out: for a chart drawn now, e.g. the
    /// alert's post-mortem, whose last minute is not in the store yet. None of these bins is
    /// in the store, so they can be added to what `Store::series_between` returns.
    pub fn snapshot(&self) -> Vec<SeriesPoint> {
        self.closed
            .iter()
            .cloned()
            .chain(self.open.iter().map(|(&at, bin)| bin.point(at)))
            .filter(|p| p.requests > 0)
            .collect()
    }

    /// Every bin, the open ones too, for a daemon that is stopping: what it saw of the bins
    /// still open would otherwise be lost. A bin handed out early may get more traffic after a
    /// restart; the store adds that to it ([`Store::append_series`]).
    ///
    /// [`Store::append_series`]: crate::store::Store::append_series
    pub fn take_all(&mut self) -> Vec<SeriesPoint> {
        let open = std::mem::take(&mut self.open);
        if let Some(&last) = open.keys().next_back() {
            let end = last.saturating_add(BIN_SECS);
            self.closed_before = Some(self.closed_before.map_or(end, |c| c.max(end)));
        }
        for (at, bin) in open {
            self.push_closed(bin.close(at));
        }
        self.closed.drain(..).collect()
    }

    /// Requests that could not be counted in their bin: arrived after it was handed out, at a
    /// time that is not a number or an hour ahead of `now`, or pushed out by the memory bound.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bins currently open (for tests and status).
    pub fn open_bins(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_764_000_000.0; // a multiple of 10
    const T: i64 = 1_764_000_000;

    fn bins() -> SeriesBins {
        SeriesBins::new(15.0)
    }

    #[test]
    fn requests_are_counted_in_the_bin_holding_their_time_edges_included() {
        let mut s = bins();
        s.observe_request(T0, false, Some(10.0)); // the first instant of bin T
        s.observe_request(T0 + 9.999, true, Some(20.0)); // the last instant of bin T
        s.observe_request(T0 + 10.0, true, None); // the first of bin T + 10
        s.observe_request(T0 - 0.001, false, None); // the last of bin T - 10
        let got = s.take_closed(T0 + 100.0);
        let counts: Vec<(i64, u64, u64)> =
            got.iter().map(|p| (p.at, p.requests, p.errors)).collect();
        assert_eq!(counts, [(T - 10, 1, 0), (T, 2, 1), (T + 10, 1, 1)]);
        assert_eq!(got[0].p50_ms, None, "no request there had a latency");
        assert_eq!(got[2].p99_ms, None);
        assert_eq!(s.dropped(), 0);
    }

    #[test]
    fn quantiles_come_from_the_shared_histogram() {
        let mut s = bins();
        for i in 1..=100 {
            s.observe_request(T0 + 1.0, false, Some(f64::from(i)));
        }
        let mut want = Histogram::new();
        for i in 1..=100 {
            want.record(f64::from(i));
        }
        let p = &s.take_closed(T0 + 100.0)[0];
        assert_eq!(p.p50_ms, want.quantile_ms(0.5));
        assert_eq!(p.p99_ms, want.quantile_ms(0.99));
        let p50 = p.p50_ms.unwrap();
        assert!((45.0..=56.0).contains(&p50), "{p50}");
        assert!(p.p99_ms.unwrap() >= 97.0, "{p:?}");
    }

    #[test]
    fn a_bin_is_handed_out_once_after_its_lateness_allowance_and_never_changes() {
        let mut s = bins();
        s.observe_request(T0 + 5.0, false, Some(10.0));
        // Bin T ends at T + 10; with 15 s of lateness it is closed from T + 25 on.
        assert!(s.take_closed(T0 + 24.9).is_empty());
        s.observe_request(T0 + 6.0, true, Some(10.0)); // late, but within the allowance
        let got = s.take_closed(T0 + 25.0);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].at, got[0].requests, got[0].errors), (T, 2, 1));
        // Later traffic for that bin is dropped, not added to another bin.
        s.observe_request(T0 + 7.0, true, None);
        s.observe_counts(T0 + 8.0, 5, 5, None);
        assert_eq!(s.dropped(), 6);
        assert!(s.take_closed(T0 + 1000.0).is_empty());
    }

    #[test]
    fn a_late_request_for_an_empty_bin_that_has_passed_is_dropped_too() {
        let mut s = bins();
        assert!(s.take_closed(T0 + 100.0).is_empty());
        s.observe_request(T0 + 50.0, false, None); // bin T + 50 closed at T + 75
        assert_eq!(s.dropped(), 1);
        s.observe_request(T0 + 80.0, false, None); // still open at T + 100
        assert_eq!(s.take_closed(T0 + 105.0).len(), 1);
    }

    #[test]
    fn counts_for_an_interval_go_to_the_bin_the_interval_ends_in() {
        let mut s = bins();
        let mut h = Histogram::new();
        h.record(40.0);
        h.record(60.0);
        s.observe_counts(T0 + 10.0, 7, 3, Some(&h)); // (T, T + 10]: bin T
        s.observe_counts(T0 + 10.5, 4, 9, None); // errors capped at requests
        let got = s.take_closed(T0 + 100.0);
        let counts: Vec<(i64, u64, u64)> =
            got.iter().map(|p| (p.at, p.requests, p.errors)).collect();
        assert_eq!(counts, [(T, 7, 3), (T + 10, 4, 4)]);
        assert!(got[0].p50_ms.is_some() && got[1].p50_ms.is_none());
    }

    #[test]
    fn a_stopping_daemon_takes_the_open_bins_too() {
        let mut s = bins();
        s.observe_request(T0 + 1.0, false, None);
        s.observe_request(T0 + 12.0, true, None);
        assert!(
            s.take_closed(T0 + 13.0).is_empty(),
            "both bins are still open"
        );
        let seen: Vec<(i64, u64)> = s.snapshot().iter().map(|p| (p.at, p.requests)).collect();
        assert_eq!(
            seen,
            [(T, 1), (T + 10, 1)],
            "a snapshot shows the open bins"
        );
        assert_eq!(s.open_bins(), 2, "and leaves them open");
        let all: Vec<(i64, u64)> = s.take_all().iter().map(|p| (p.at, p.requests)).collect();
        assert_eq!(all, [(T, 1), (T + 10, 1)]);
        assert_eq!(s.open_bins(), 0);
        s.observe_request(T0 + 13.0, false, None);
        assert_eq!(s.dropped(), 1, "a bin handed out does not change");
        assert!(s.take_all().is_empty());
    }

    #[test]
    fn bins_without_traffic_are_gaps_not_zeros() {
        let mut s = bins();
        s.observe_request(T0 + 1.0, false, None);
        s.observe_request(T0 + 61.0, false, None);
        let at: Vec<i64> = s.take_closed(T0 + 200.0).iter().map(|p| p.at).collect();
        assert_eq!(at, [T, T + 60]);
    }

    #[test]
    fn memory_is_bounded_however_wide_the_traffic_is_spread() {
        let mut s = bins();
        // Ten thousand bins' worth of timestamps without ever taking the closed ones.
        for i in 0..10_000 {
            s.observe_request(T0 + 10.0 * f64::from(i), i % 2 == 0, Some(5.0));
        }
        assert!(s.open_bins() <= MAX_OPEN_BINS);
        let got = s.take_closed(T0);
        assert!(got.len() <= MAX_CLOSED_BINS, "{}", got.len());
        // Every request is either in a bin handed out, still open, or counted as dropped.
        let handed: u64 = got.iter().map(|p| p.requests).sum();
        assert_eq!(handed + s.open_bins() as u64 + s.dropped(), 10_000);
        assert!(s.open_bins() <= MAX_OPEN_BINS);
        // Oldest first, and the newest handed out is the one just before the open ones.
        assert!(got.windows(2).all(|w| w[0].at < w[1].at));
    }

    #[test]
    fn a_time_far_ahead_of_now_or_not_a_number_is_dropped() {
        let mut s = bins();
        s.observe_request(f64::NAN, false, None);
        s.observe_request(T0 + 86_400.0, false, None);
        s.observe_request(T0, false, Some(f64::NAN));
        let got = s.take_closed(T0 + 30.0);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].p50_ms, None,
            "a latency that is not a number is none"
        );
        assert_eq!(s.dropped(), 2);
        assert_eq!(s.open_bins(), 0);
    }
}
