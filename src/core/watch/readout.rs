//! A watch's state read out as its `Report`: per signal, the sides compared, the effect and
//! its bound, whether a healthy verdict's limits hold, the route to blame, and the notes on a
//! baseline too thin to carry the judgement.

use super::report::{signal_words, LevelReport, Report, Side, SignalReport};
use super::signal::{Signal, SignalKind};
use super::thin::{has_floor, leans_worse, thin_signal};
use super::{Design, Watch};
use crate::core::evidence::{self, Counts};
use crate::core::histogram::Histogram;
use crate::core::monitor::{route_baselines, RouteBaseline};
use crate::core::observation::Arm;
use crate::core::strata::Strata;
use crate::core::tally::Tally;

impl Watch {
    /// The evidence so far; `strata` names the routes.
    pub fn report(&self, strata: Option<&Strata>) -> Report {
        let design = self.design.unwrap_or(Design::BeforeAfter);
        // Everything seen on each side, whichever routes the signals could compare.
        let requests_before = match design {
            Design::BeforeAfter => self.baseline.iter().map(|t| t.requests).sum(),
            Design::Concurrent => self.seen.iter().map(|s| s.control.requests).sum(),
        };
        let signals: Vec<SignalReport> = self
            .signals
            .iter()
            .map(|sig| sig.report(self, design, strata))
            .collect();
        let baseline_routes = strata.map_or_else(Vec::new, |s| route_baselines(&self.baseline, s));
        let baseline_notes = match design {
            Design::BeforeAfter if !self.recovery => {
                self.baseline_notes(&baseline_routes, &signals)
            }
            _ => Vec::new(),
        };
        let mut report = Report {
            verdict: self.verdict,
            decided_at: self.decided_at,
            design,
            change_at: self.change_at,
            watch_ends_at: self.end_sec as f64,
            deploy_window: self.deploy,
            baseline_window: self.baseline_window.clone(),
            baseline_routes,
            baseline_notes,
            requests_before,
            requests_after: self.seen.iter().map(|s| s.treatment.requests).sum(),
            unlabelled_requests: self.unlabelled,
            signals,
            not_judged: None,
            claim: None,
        };
        report.not_judged = report.scope_note();
        report
    }

    /// Why the baseline may not carry the judgement, in words: too short, routes too small to
    /// compare, signals too thin to ever bound the harm.
    fn baseline_notes(&self, routes: &[RouteBaseline], signals: &[SignalReport]) -> Vec<String> {
        let settings = &self.settings;
        let mut notes = Vec::new();
        let wanted = f64::from(settings.baseline_secs);
        let covered = self.baseline_window.covered_secs;
        if covered + 60.0 < wanted {
            notes.push(format!(
                "the baseline covers {} of known-good traffic, not the {} of baseline_secs: \
                 guardian has heard no more traffic since it started, or the rest was left \
                 out (deploys, a regressed change)",
                minutes(covered),
                minutes(wanted)
            ));
        }
        let min = settings.min_baseline_requests;
        let small: Vec<&RouteBaseline> = routes.iter().filter(|r| r.requests < min).collect();
        let errors_compared = signals
            .iter()
            .any(|s| s.signal == SignalKind::Errors && s.routes_compared > 0);
        if !errors_compared {
            notes.push(format!(
                "no route has the min_baseline_requests = {min} requests in its baseline that \
                 comparing it needs: this change cannot be judged on errors"
            ));
        } else if !small.is_empty() {
            let total: u64 = routes.iter().map(|r| r.requests).sum();
            let left: u64 = small.iter().map(|r| r.requests).sum();
            let named: Vec<String> = small
                .iter()
                .take(5)
                .map(|r| format!("{} ({})", r.route, r.requests))
                .collect();
            notes.push(format!(
                "{} route{} with fewer than {min} baseline requests {} not compared: {}{}                  ({:.0}% of the baseline's traffic)",
                small.len(),
                if small.len() == 1 { "" } else { "s" },
                if small.len() == 1 { "is" } else { "are" },
                named.join(", "),
                if small.len() > 5 { ", ..." } else { "" },
                100.0 * left as f64 / total.max(1) as f64
            ));
        }
        // Errors are never left out: when even a clean watch could not bound them, the change
        // can only end inconclusive, and the person notifying should know it now.
        let errors = signals.iter().find(|s| s.signal == SignalKind::Errors);
        if let Some(e) = errors.filter(|e| e.routes_compared > 0) {
            let control = Counts {
                requests: e.baseline.requests,
                events: e.baseline.events,
            };
            if let Some(thin) =
                thin_signal(settings, &self.baseline_window, control, SignalKind::Errors)
            {
                let best = if thin.best_bound.is_finite() {
                    format!("at best {:.2}x", thin.best_bound)
                } else {
                    "none can be bounded".to_owned()
                };
                notes.push(format!(
                    "errors: the baseline holds {} of them in {} requests, too few for even a \
                     clean change to be bounded under {}x within watch_secs ({best}) or shown \
                     under the {}% floor: expect inconclusive, unless the watch sees more \
                     traffic than the baseline did",
                    thin.baseline_events,
                    e.baseline.requests,
                    settings.healthy_max_ratio,
                    settings.healthy_error_floor * 100.0
                ));
            }
        }
        for s in signals {
            let Some(thin) = s.thin else { continue };
            let then = if thin.baseline_events >= settings.min_baseline_tail {
                "the signal still calls a regression, but counts towards a healthy verdict \
                 only while its data lean towards harm"
            } else {
                "the signal still calls a regression, and with fewer than min_baseline_tail of \
                 them the change cannot be called healthy"
            };
            notes.push(format!(
                "{}: the baseline holds only {} of them, too few to ever bound the harm under \
                 {}x (at best {:.2}x): {then}",
                signal_words(s.signal),
                thin.baseline_events,
                settings.healthy_max_ratio,
                thin.best_bound
            ));
        }
        notes
    }

    fn control_tally(&self, design: Design, s: usize) -> Option<&Tally> {
        match design {
            Design::BeforeAfter => self.baseline.get(s),
            Design::Concurrent => self.seen.get(s).map(|x| &x.control),
        }
    }
}

/// A duration for a person: whole minutes, or seconds when under two minutes.
fn minutes(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else {
        format!("{:.0} min", secs / 60.0)
    }
}

impl Signal {
    /// The first test's counts on both sides, pooled over every route that has a threshold,
    /// eligible or not.
    fn thresholded_counts(&self, watch: &Watch) -> (Counts, Counts) {
        let mut sides = (Counts::default(), Counts::default());
        let Some(test) = self.tests.first() else {
            return sides;
        };
        for s in 0..watch.seen.len().max(watch.baseline.len()) {
            if test.control_from.get(s).copied().flatten().is_none() {
                continue;
            }
            if let Some(t) = watch.baseline.get(s) {
                sides.0.add(test.counts(t, s, Arm::Control));
            }
            if let Some(t) = watch.seen.get(s) {
                sides.1.add(test.counts(&t.treatment, s, Arm::Treatment));
            }
        }
        sides
    }

    fn report(&self, watch: &Watch, design: Design, strata: Option<&Strata>) -> SignalReport {
        let settings = &watch.settings;
        let mut levels = Vec::new();
        let mut pooled = (Counts::default(), Counts::default());
        let mut any_eligible = false;
        let mut routes_compared = 0;
        let mut medians = (Histogram::new(), Histogram::new());
        for test in &self.tests {
            let mut control = Counts::default();
            let mut treatment = Counts::default();
            let mut control_hist = Histogram::new();
            let mut treatment_hist = Histogram::new();
            let mut routes = 0;
            for s in 0..watch.seen.len().max(watch.baseline.len()) {
                if !test.eligible_in(design, s) {
                    continue;
                }
                any_eligible = true;
                routes += 1;
                if let Some(t) = watch.control_tally(design, s) {
                    control.add(test.counts(t, s, Arm::Control));
                    control_hist.merge(&t.latency);
                }
                if let Some(t) = watch.seen.get(s) {
                    treatment.add(test.counts(&t.treatment, s, Arm::Treatment));
                    treatment_hist.merge(&t.treatment.latency);
                }
            }
            routes_compared = routes_compared.max(routes);
            if self.kind != SignalKind::Latency {
                pooled = (control, treatment);
            } else if levels.is_empty() {
                // The latency signal's own sides: every request with a latency, on the routes
                // its first level compares; its effect is the ratio of medians.
                pooled = (
                    Counts {
                        requests: control_hist.total(),
                        events: 0,
                    },
                    Counts {
                        requests: treatment_hist.total(),
                        events: 0,
                    },
                );
                medians = (control_hist.clone(), treatment_hist.clone());
            }
            if let Some(q) = test.quantile.filter(|_| self.kind == SignalKind::Latency) {
                levels.push(LevelReport {
                    quantile: q,
                    baseline_ms: control_hist.quantile_ms(q),
                    after_ms: treatment_hist.quantile_ms(q),
                    baseline_share_slower: control.rate(),
                    after_share_slower: treatment.rate(),
                    e_value: test.e_value(self.strata_weighed),
                    dispersion: test.dispersion,
                });
            }
        }
        let threshold_ms = match (self.kind, settings.slow_threshold_ms) {
            (SignalKind::SlowRequests, Some(slo)) => Some(slo),
            (SignalKind::SlowRequests, None) => {
                let mut h = Histogram::new();
                for t in &watch.baseline {
                    h.merge(&t.latency);
                }
                h.quantile_ms(settings.slow_quantile)
            }
            _ => None,
        };
        let (control, treatment) = pooled;
        let (effect_ratio, ratio_upper) = if self.kind == SignalKind::Latency {
            let ratio = match (medians.0.quantile_ms(0.5), medians.1.quantile_ms(0.5)) {
                (Some(b), Some(a)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            (ratio, None)
        } else {
            let ratio = match (control.rate(), treatment.rate()) {
                (Some(b), Some(a)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            (
                ratio,
                evidence::ratio_upper_bound(control, treatment, settings.healthy_confidence),
            )
        };
        let regressed = self.e_value >= 1.0 / self.alpha;
        let judging_slow = self.kind == SignalKind::SlowRequests
            && design == Design::BeforeAfter
            && !watch.recovery;
        let thin = if judging_slow && any_eligible {
            thin_signal(settings, &watch.baseline_window, control, self.kind)
        } else {
            None
        };
        // A slow-request signal that cannot bound the harm (too thin, or not compared at all
        // because no route has min_baseline_tail requests past its threshold) still has data:
        // the requests past each route's threshold, pooled. When they favour harm at the limit
        // over no harm, a healthy verdict is withheld.
        let leans_worse = match (judging_slow, any_eligible) {
            (false, _) => false,
            (true, true) => thin.is_some() && leans_worse(settings, self, control, treatment),
            (true, false) => {
                // Pooled, the thresholds need as many requests past them as one route's would.
                let (control, treatment) = self.thresholded_counts(watch);
                control.events >= settings.min_baseline_tail
                    && leans_worse(settings, self, control, treatment)
            }
        };
        let left_out =
            thin.is_some_and(|t| t.baseline_events >= settings.min_baseline_tail) && !leans_worse;
        let within_limits = if !any_eligible || self.kind == SignalKind::Latency {
            None
        } else if treatment.requests == 0 {
            Some(false)
        } else {
            let ratio_ok = ratio_upper.is_some_and(|u| u <= settings.healthy_max_ratio);
            let floor_ok = has_floor(self.kind, settings)
                && evidence::share_upper_bound(
                    treatment.events,
                    treatment.requests,
                    settings.healthy_confidence,
                ) <= settings.healthy_error_floor;
            Some(ratio_ok || floor_ok)
        };
        // Name a route only when its own evidence beats "every route got worse": in a
        // site-wide outage no single route is to blame, and naming one would mislead.
        let worst_route = if regressed && self.strata_weighed > 1 {
            self.tests
                .iter()
                .flat_map(|t| {
                    let common = t.common.e_value();
                    t.per_stratum
                        .iter()
                        .enumerate()
                        .map(move |(s, e)| (s, e.e_value()))
                        .filter(move |&(_, e)| e > 1.0 && e > common)
                })
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .and_then(|(s, _)| strata.map(|names| names.name(s).to_owned()))
        } else {
            None
        };
        let not_compared = (!any_eligible).then(|| match (self.kind, design) {
            (SignalKind::Errors, _) => format!(
                "no route had min_baseline_requests = {} requests before the change",
                settings.min_baseline_requests
            ),
            (SignalKind::SlowRequests, _) if settings.slow_threshold_ms.is_some() => format!(
                "no route had min_baseline_requests = {} requests before the change",
                settings.min_baseline_requests
            ),
            _ => format!(
                "no route had {} requests before the change with min_baseline_tail = {} of them \
                 above its threshold",
                settings.min_baseline_requests, settings.min_baseline_tail
            ),
        });
        SignalReport {
            signal: self.kind,
            regressed,
            e_value: self.e_value,
            e_value_threshold: 1.0 / self.alpha,
            alpha: self.alpha,
            null_ratio: self.tests.first().map(|t| t.null_ratio).unwrap_or(1.0),
            baseline: Side::from(control),
            after: Side::from(treatment),
            effect_ratio,
            ratio_upper_bound: ratio_upper,
            within_limits,
            threshold_ms,
            worst_route,
            routes_compared,
            dispersion: self.tests.iter().map(|t| t.dispersion).fold(1.0, f64::max),
            levels,
            not_compared,
            thin,
            left_out,
            leans_worse,
        }
    }
}
