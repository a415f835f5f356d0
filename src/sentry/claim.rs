//! A change's claim to fix a Sentry issue, judged, pure: the issue's events per request after
//! the change against the baseline's, tested both ways with the core's conditional e-process
//! (`SentryWatch`). Evidence that it goes on at more than half its old rate makes the fix
//! `ineffective`; evidence that it fell below half shows the fix worked; neither, and the
//! claim is not shown either way. Half, not "the same rate": a fix that halves an issue has
//! done something, and one that does not is no fix; and against the same rate, a fix that
//! removed nothing would be "not shown" for as long as one liked.
//!
//! A fix is not credited with an issue that had stopped on its own: when the requests between
//! the issue's last event and the change are so many that its old rate would have shown in
//! them but for odds below alpha, the claim is `StoppedBefore`, however quiet it is after.
//!
//! Its alpha is the detector's: a wrong `ineffective` costs the pattern its streak in the trust
//! ledger, never a rollback, so it is not part of the union bound on false rollbacks.

use serde::{Deserialize, Serialize};

use super::SentryWatch;
use crate::core::evidence::Counts;
use crate::core::{ClaimVerdict, FixClaim};

/// Both tests are against this ratio of the issue's rate after the change to before.
pub const NULL_RATIO: f64 = 0.5;

/// One change's claim to fix one issue.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClaimWatch {
    issue: String,
    still_firing: SentryWatch,
    fixed: SentryWatch,
    #[serde(default)]
    quiet_before: QuietBefore,
}

/// The issue's quiet stretch just before the change: the requests served after its last
/// event and before the change, and when that event was. Not frozen as the baseline's counts
/// are: a late delivery can only shorten it, and the verdict that uses it waits for Sentry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QuietBefore {
    pub requests: u64,
    pub last_event_at: Option<f64>,
}

impl ClaimWatch {
    pub fn new(
        issue: &str,
        alpha: f64,
        base_cap: f64,
        watch_secs: u32,
        change_at: f64,
    ) -> ClaimWatch {
        let test = || SentryWatch::new(alpha, NULL_RATIO - 1.0, base_cap, watch_secs, change_at);
        ClaimWatch {
            issue: issue.to_owned(),
            still_firing: test(),
            fixed: test().lower(),
            quiet_before: QuietBefore::default(),
        }
    }

    /// The issue whose events are counted.
    pub fn issue(&self) -> &str {
        &self.issue
    }

    /// The issue's events and the requests they are counted against, as they stand (see
    /// `SentryWatch::update`), and its quiet stretch before the change.
    pub fn update(&mut self, baseline: Counts, after: Counts, quiet: QuietBefore, until: f64) {
        self.still_firing.update(baseline, after, until);
        self.fixed.update(baseline, after, until);
        self.quiet_before = quiet;
    }

    /// The events the issue's old rate would have given in its quiet stretch before the
    /// change.
    fn expected_quiet_before(&self) -> f64 {
        let (baseline, _) = self.still_firing.counts();
        baseline.rate().unwrap_or(0.0) * self.quiet_before.requests as f64
    }

    /// Whether the issue had stopped before the change: no event in a stretch where its old
    /// rate gives none with odds exp(-expected) at most alpha.
    fn stopped_before(&self) -> bool {
        self.expected_quiet_before() >= self.still_firing.threshold().ln()
    }

    pub fn verdict(&self) -> ClaimVerdict {
        let (baseline, after) = self.still_firing.counts();
        if baseline.events == 0 || baseline.requests == 0 || after.requests == 0 {
            ClaimVerdict::NotCompared
        } else if self.still_firing.regressed() {
            ClaimVerdict::StillFiring
        } else if self.stopped_before() {
            ClaimVerdict::StoppedBefore
        } else if self.fixed.regressed() {
            ClaimVerdict::Fixed
        } else {
            ClaimVerdict::NotShown
        }
    }

    pub fn report(&self) -> FixClaim {
        let (baseline, after) = self.still_firing.counts();
        FixClaim {
            issue: self.issue.clone(),
            verdict: self.verdict(),
            baseline: baseline.into(),
            after: after.into(),
            expected_after: baseline.rate().unwrap_or(0.0) * after.requests as f64,
            null_ratio: NULL_RATIO,
            still_firing_e_value: self.still_firing.e_value(),
            fixed_e_value: self.fixed.e_value(),
            e_value_threshold: self.still_firing.threshold(),
            requests_quiet_before: self.quiet_before.requests,
            last_event_before: self.quiet_before.last_event_at,
            expected_quiet_before: self.expected_quiet_before(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_764_000_000.0;

    /// A claim fed every second for `secs`: 20 requests a second after a baseline of 600 s at
    /// 20 a second in which the issue fired `before` times per 1,000 requests; `after` per
    /// 1,000 after the change.
    fn run(before: f64, after: f64, secs: u32) -> ClaimWatch {
        run_quiet_before(before, after, secs, 0)
    }

    /// As [`run`], the issue's last event before the change `quiet` requests before it.
    fn run_quiet_before(before: f64, after: f64, secs: u32, quiet: u64) -> ClaimWatch {
        let mut w = ClaimWatch::new("4711", 0.01, 3.0, 600, T0);
        let base = Counts {
            requests: 12_000,
            events: (12.0 * before).round() as u64,
        };
        for s in 1..=secs {
            let n = 20 * u64::from(s);
            let events = (n as f64 * after / 1000.0).floor() as u64;
            w.update(
                base,
                Counts {
                    requests: n,
                    events,
                },
                QuietBefore {
                    requests: quiet,
                    last_event_at: Some(T0 - quiet as f64 / 20.0),
                },
                T0 + f64::from(s),
            );
        }
        w
    }

    #[test]
    fn an_issue_that_stops_is_shown_fixed() {
        let w = run(10.0, 0.0, 300);
        assert_eq!(w.verdict(), ClaimVerdict::Fixed, "{:?}", w.report());
        let r = w.report();
        assert_eq!(r.after.events, 0);
        assert!(
            (r.expected_after - 60.0).abs() < 1e-9,
            "{}",
            r.expected_after
        );
    }

    #[test]
    fn an_issue_firing_at_its_old_rate_is_shown_still_firing() {
        let w = run(10.0, 10.0, 300);
        assert_eq!(w.verdict(), ClaimVerdict::StillFiring, "{:?}", w.report());
        assert!(w.report().fixed_e_value < 1.0);
    }

    #[test]
    fn an_issue_too_rare_to_tell_is_neither() {
        // One event in the baseline's 12,000 requests; 6,000 after without one.
        let w = run(1.0 / 12.0, 0.0, 300);
        assert_eq!(w.verdict(), ClaimVerdict::NotShown, "{:?}", w.report());
    }

    #[test]
    fn an_issue_the_baseline_never_saw_is_not_compared() {
        let w = run(0.0, 5.0, 60);
        assert_eq!(w.verdict(), ClaimVerdict::NotCompared);
    }

    #[test]
    fn a_fix_that_halves_nothing_is_not_called_fixed_and_one_that_removes_most_is_not_called_ineffective(
    ) {
        // Just above half its old rate: never shown fixed.
        let w = run(10.0, 6.0, 600);
        assert_ne!(w.verdict(), ClaimVerdict::Fixed, "{:?}", w.report());
        // A tenth of its old rate: never shown still firing.
        let w = run(10.0, 1.0, 600);
        assert_ne!(w.verdict(), ClaimVerdict::StillFiring, "{:?}", w.report());
    }

    #[test]
    fn an_issue_that_had_stopped_before_the_change_is_not_the_fixs_doing() {
        // 10 per 1,000 before: its last event 1,000 requests before the change, where 10
        // were expected.
        let w = run_quiet_before(10.0, 0.0, 300, 1_000);
        assert_eq!(w.verdict(), ClaimVerdict::StoppedBefore, "{:?}", w.report());
        let r = w.report();
        assert_eq!(r.requests_quiet_before, 1_000);
        assert!((r.expected_quiet_before - 10.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn a_quiet_stretch_its_old_rate_explains_is_no_objection() {
        // 300 requests without an event where 3 were expected: odds of 5%, above alpha.
        let w = run_quiet_before(10.0, 0.0, 300, 300);
        assert_eq!(w.verdict(), ClaimVerdict::Fixed, "{:?}", w.report());
        // An issue still firing after the change is still firing, quiet before or not.
        let w = run_quiet_before(10.0, 10.0, 300, 1_000);
        assert_eq!(w.verdict(), ClaimVerdict::StillFiring, "{:?}", w.report());
    }
}
