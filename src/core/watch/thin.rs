//! Signals that cannot bound the harm: when one is too thin to ever get under
//! `healthy_max_ratio`, and whether its data lean towards harm all the same.

use super::report::Thin;
use super::signal::{Signal, SignalKind};
use crate::core::baseline::BaselineWindow;
use crate::core::evidence::{self, Counts};
use crate::core::settings::DetectorSettings;

/// Whether the counts favour harm over no harm, for a signal that cannot bound the harm: the
/// likelihood ratio of the ratio being halfway (geometrically) between the signal's null ratio
/// and `healthy_max_ratio` against its being the null's. Halfway rather than the limit itself:
/// with about 11 baseline events, 71% of clean changes pass, 10% of changes exactly at the
/// limit (which a healthy verdict allows) and 3 in 1,000 threefold regressions, most of which
/// the sequential test calls anyway (the limit would pass 81%, 20% and 1.5%).
pub(super) fn leans_worse(
    settings: &DetectorSettings,
    signal: &Signal,
    control: Counts,
    treatment: Counts,
) -> bool {
    let null_ratio = signal.tests.first().map_or(1.0, |t| t.null_ratio);
    let halfway = (null_ratio * settings.healthy_max_ratio).sqrt();
    evidence::log_likelihood_ratio(control, treatment, null_ratio, halfway) > 0.0
}

/// Whether a signal's bad-event rate passes on its own merit below `healthy_error_floor`:
/// errors, and requests missing an SLO (a threshold set by people, not a quantile of the
/// baseline, whose share is 1% by construction).
pub(super) fn has_floor(kind: SignalKind, settings: &DetectorSettings) -> bool {
    match kind {
        SignalKind::Errors => true,
        SignalKind::SlowRequests => settings.slow_threshold_ms.is_some(),
        SignalKind::Latency | SignalKind::SentryEvents => false,
    }
}

/// Whether a secondary signal is too thin to ever bound the harm, and by how much.
///
/// A signal whose baseline holds few bad events can never bound the harm under
/// `healthy_max_ratio`, however clean the change: the baseline's own uncertainty keeps the
/// bound above it. Such a signal would turn every clean change into `inconclusive` (and, for an
/// AI change, a page at night). So when even the best case cannot get there (the watch window
/// seeing the baseline's traffic at exactly the baseline's rate), the signal is thin: it is
/// left out of the healthy verdict, with the reason, as long as its own data do not lean
/// towards harm (see [`leans_worse`]). It is never left out of anything else: its sequential test runs all through
/// the watch and still calls `regressed`; and when its data lean towards harm the verdict stays
/// `inconclusive`, so a regression too small for the sequential test is not waved through as
/// healthy. Nor is it left out with fewer than `min_baseline_tail` bad events
/// in its baseline (possible with an SLO threshold): there even the e-value cannot tell a clean
/// change from a threefold regression (1 in 5 of those would pass), so the change stays
/// `inconclusive`. Errors, the primary signal, are never left out.
pub(super) fn thin_signal(
    settings: &DetectorSettings,
    window: &BaselineWindow,
    control: Counts,
    kind: SignalKind,
) -> Option<Thin> {
    if window.covered_secs <= 0.0 || control.requests == 0 {
        return None;
    }
    let expected_requests =
        control.requests as f64 * f64::from(settings.watch_secs) / window.covered_secs;
    let expected = Counts {
        requests: expected_requests.round() as u64,
        events: (expected_requests * control.events as f64 / control.requests as f64).round()
            as u64,
    };
    let best = evidence::ratio_upper_bound(control, expected, settings.healthy_confidence)
        .unwrap_or(f64::INFINITY);
    let floor_reachable = has_floor(kind, settings)
        && evidence::share_upper_bound(
            expected.events,
            expected.requests,
            settings.healthy_confidence,
        ) <= settings.healthy_error_floor;
    (best > settings.healthy_max_ratio && !floor_reachable).then_some(Thin {
        baseline_events: control.events,
        best_bound: best,
    })
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_pcg::Pcg64Mcg;

    use crate::core::watch::tests::T0;
    use crate::core::{DetectorSettings, Monitor, Request, Verdict};

    /// Half an hour before and after a change, `rps` requests a second (on average), 5% of
    /// them failing; latencies log-normal around 50 ms, of which a share `slow_after` is five
    /// times slower after the change.
    fn thin_watch(seed: u64, settings: DetectorSettings, rps: f64, slow_after: f64) -> Monitor {
        let mut m = Monitor::new(settings);
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        for tenth in -18_000..18_010 {
            let ts = T0 + f64::from(tenth) / 10.0;
            if tenth == 0 {
                m.change_landed(T0);
            }
            if rng.gen::<f64>() < rps / 10.0 {
                let z: f64 = rng.sample(rand_distr::StandardNormal);
                let mut latency_ms = 50.0 * (0.5 * z).exp();
                if tenth >= 0 && rng.gen::<f64>() < slow_after {
                    latency_ms *= 5.0;
                }
                m.observe_request(&Request {
                    ts,
                    error: rng.gen::<f64>() < 0.05,
                    latency_ms: Some(latency_ms),
                    route: Some("/"),
                    arm: None,
                });
            }
            if tenth >= 0 && tenth % 10 == 9 && m.tick(ts + 0.1) != Verdict::Watching {
                break;
            }
        }
        m
    }

    #[test]
    fn a_signal_too_thin_to_ever_bound_the_harm_does_not_block_a_clean_change() {
        // 0.6 req/s: about 11 requests above the baseline's p99 (when fewer than 10, the signal
        // is not compared at all), so even a perfect watch could not bound the slow-request
        // ratio under 2x. The signal is left out of the healthy verdict (it still watches for
        // a regression), and says so.
        let (mut compared, mut healthy) = (0, 0);
        for seed in 0..40 {
            let m = thin_watch(seed, DetectorSettings::default(), 0.6, 0.0);
            let report = m.report().unwrap();
            let slow = &report.signals[1];
            if slow.routes_compared == 0 {
                assert!(report
                    .not_judged
                    .unwrap()
                    .contains("slow requests not compared"));
                continue;
            }
            compared += 1;
            let thin = slow.thin.expect("too thin to bound");
            assert!(thin.best_bound > 2.0);
            if m.verdict() == Some(Verdict::Healthy) {
                // Without the rule, none would be.
                assert!(slow.left_out);
                assert!(report.not_judged.unwrap().contains("left out"));
                healthy += 1;
            }
        }
        assert!(compared >= 20, "{compared}");
        assert!(
            healthy * 10 >= compared * 6,
            "{healthy} of {compared} clean changes healthy"
        );
    }

    #[test]
    fn a_thin_signal_whose_evidence_leans_to_harm_keeps_the_change_from_healthy() {
        // 3% of requests five times slower: about three times as many past the old p99. Too
        // few at times for the sequential test, never waved through as healthy when compared.
        for seed in 0..40 {
            let m = thin_watch(100 + seed, DetectorSettings::default(), 0.6, 0.03);
            let report = m.report().unwrap();
            if report.signals[1].routes_compared > 0 {
                assert_ne!(m.verdict(), Some(Verdict::Healthy), "seed {seed}");
            }
        }
    }

    #[test]
    fn an_slo_missed_by_almost_no_one_passes_on_its_own_merit() {
        // An SLO of 400 ms that about one request in 30,000 misses: a handful in the baseline,
        // no ratio bound possible, but the share missing it is bounded far below 0.1%.
        let settings = DetectorSettings {
            slow_threshold_ms: Some(400.0),
            ..DetectorSettings::default()
        };
        let m = thin_watch(7, settings, 20.0, 0.0);
        assert_eq!(m.verdict(), Some(Verdict::Healthy));
        let report = m.report().unwrap();
        let slow = &report.signals[1];
        assert!(slow.thin.is_none() && !slow.left_out);
        assert_eq!(slow.within_limits, Some(true));
    }
}
