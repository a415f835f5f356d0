//! A change's claim to fix a Sentry issue, judged, pure: the issue's events per request after
//! the change against the baseline's, tested both ways with the core's conditional e-process
//! (`SentryWatch`). Evidence that it goes on at more than half its old rate makes the fix
//! `ineffective`; evidence that it fell below half shows the fix worked; neither, and the
//! claim is not shown either way. Half, not "the same rate": a fix that halves an issue has
//! done something, and one that does not is no fix; and against the same rate, a fix that
//! removed nothing would be "not shown" for as long as one liked.
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
        }
    }

    /// The issue whose events are counted.
    pub fn issue(&self) -> &str {
        &self.issue
    }

    /// The issue's events and the requests they are counted against, as they stand (see
    /// `SentryWatch::update`).
    pub fn update(&mut self, baseline: Counts, after: Counts, until: f64) {
        self.still_firing.update(baseline, after, until);
        self.fixed.update(baseline, after, until);
    }

    pub fn verdict(&self) -> ClaimVerdict {
        let (baseline, after) = self.still_firing.counts();
        if baseline.events == 0 || baseline.requests == 0 || after.requests == 0 {
            ClaimVerdict::NotCompared
        } else if self.still_firing.regressed() {
            ClaimVerdict::StillFiring
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
}
