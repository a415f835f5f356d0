//! The core's front door: feed it every observation, tell it when a change lands, and ask for
//! the verdict. Traffic is kept continuously, so a baseline is ready whenever a change lands.
//!
//! What joins the baseline of later changes: everything but the deploy windows (the restart's
//! own failures), the traffic of a change that regressed (until it was rolled back), a
//! recovery that did not come, and a watch some of whose traffic never came to be judged. A
//! healthy change's watched traffic is the next change's baseline.

use serde::{Deserialize, Serialize};

use super::baseline::{BaselineWindow, RollingBaseline, Span};
use super::observation::{Aggregate, Arm, Request};
use super::settings::DetectorSettings;
use super::strata::Strata;
use super::tally::Tally;
use super::watch::{Report, Verdict, Watch};

/// A change as the core needs it: when it landed (the new version serving) and, if known, when
/// its deploy began. The time between is neither baseline nor watch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Landing {
    pub at: f64,
    pub deploy_started_at: Option<f64>,
}

impl Landing {
    /// A change that landed at `at`, its deploy's start unknown.
    pub fn at(at: f64) -> Landing {
        Landing {
            at,
            deploy_started_at: None,
        }
    }
}

/// The deploy window of a change: from when its deploy began (or, not knowing, the guard
/// interval before it) to when it landed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployWindow {
    pub from: f64,
    pub to: f64,
    /// The deploy's start was given; otherwise `from` is the guard interval before the change.
    pub given: bool,
}

/// The baseline a change landing now would be judged against.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BaselinePreview {
    pub window: BaselineWindow,
    pub routes: Vec<RouteBaseline>,
    /// What makes it thin, in words; empty when it is not.
    pub notes: Vec<String>,
}

/// One route's share of a baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteBaseline {
    pub route: String,
    pub requests: u64,
    pub errors: u64,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Monitor {
    settings: DetectorSettings,
    strata: Strata,
    baseline: RollingBaseline,
    watch: Option<Watch>,
    /// Since when the service has served a version known to be bad (a regressed change not
    /// rolled back, a recovery that did not come): not known-good until the next change.
    #[serde(default)]
    suspect_since: Option<f64>,
    /// Some of the watched change's traffic never came to be judged (a source's steps had no
    /// data, and came later in a lump or not at all): what it saw is not known-good.
    #[serde(default)]
    unjudged: bool,
}

impl Monitor {
    pub fn new(settings: DetectorSettings) -> Monitor {
        Monitor {
            strata: Strata::new(settings.max_routes),
            baseline: RollingBaseline::new(settings.baseline_secs),
            watch: None,
            suspect_since: None,
            unjudged: false,
            settings,
        }
    }

    /// New settings, for the next watch: a watch in progress keeps the rules it started with
    /// (its evidence was weighed by them), and the baseline keeps what it holds, counted over
    /// the new window from now on.
    pub fn reconfigure(&mut self, settings: DetectorSettings) {
        self.baseline.set_window(settings.baseline_secs);
        self.settings = settings;
    }

    pub fn settings(&self) -> &DetectorSettings {
        &self.settings
    }

    /// Starts watching a change that landed at `change_at`, its deploy's start unknown.
    pub fn change_landed(&mut self, change_at: f64) {
        let settings = self.settings.clone();
        self.change_landed_with(Landing::at(change_at), &settings);
    }

    /// Starts watching a change, judged by `settings` instead of the monitor's own (an AI
    /// change may get stricter tolerances than a person's). Its deploy window is excluded from
    /// every baseline; its own baseline is the known-good traffic before that window. A watch
    /// still under way ends here (superseded), by the same rules as [`Monitor::end_watch`].
    pub fn change_landed_with(&mut self, landing: Landing, settings: &DetectorSettings) {
        let window = self.deploy_window(landing, settings);
        self.end_watch();
        if let Some(since) = self.suspect_since.take() {
            self.baseline.exclude(since, window.from);
        }
        self.baseline.exclude(window.from, window.to);
        let baseline = self.baseline.baseline(window.from, self.strata.len());
        self.baseline.pin(Some(window.from));
        self.watch = Some(Watch::new(settings, window, baseline));
    }

    pub fn deploy_window(&self, landing: Landing, settings: &DetectorSettings) -> DeployWindow {
        let at = landing.at;
        match landing.deploy_started_at.filter(|d| d.is_finite()) {
            Some(started) => DeployWindow {
                from: started.min(at),
                to: at,
                given: true,
            },
            // Never more than a tenth of the baseline: a short baseline (a demo, a test) keeps
            // most of itself, and a restart is seconds anyway.
            None => DeployWindow {
                from: at - f64::from(settings.deploy_guard_secs.min(settings.baseline_secs / 10)),
                to: at,
                given: false,
            },
        }
    }

    /// After a rollback landed at `at`: watch for `watch_secs` whether the service is back to
    /// the baseline the regressed change was judged against. `healthy` at the end means it
    /// recovered, `regressed` that the rollback did not help. The regressed change's traffic,
    /// up to `at`, never joins a baseline. Does nothing without a watch.
    pub fn verify_recovery(&mut self, at: f64, watch_secs: u32) {
        if let Some(w) = &self.watch {
            self.baseline.exclude(w.deploy_window().from, at);
            self.watch = Some(w.recovery(at, watch_secs));
        }
    }

    /// The change's watch is over and nothing more will be asked of it: traffic goes
    /// only to the history again. What the watch saw joins later baselines unless the change
    /// regressed, or the service did not recover from its rollback.
    pub fn end_watch(&mut self) {
        let Some(w) = self.watch.take() else {
            return;
        };
        self.baseline.pin(None);
        let judged = !std::mem::take(&mut self.unjudged);
        let known_good = judged
            && if w.is_recovery() {
                w.verdict() == Verdict::Healthy
            } else {
                w.verdict() != Verdict::Regressed
            };
        if !known_good {
            // The version known to be bad serves on (no rollback, or one that did not help):
            // nothing is known-good again until the next change, and the baseline before it is
            // kept for that change.
            let from = w.deploy_window().from;
            self.suspect_since = Some(self.suspect_since.map_or(from, |s| s.min(from)));
            self.baseline.pin(self.suspect_since);
        }
    }

    /// Some of the watched change's traffic never came to be judged: whatever the verdict, what
    /// the watch saw (a gap's counts, come later in a lump, among it) joins no baseline, and
    /// the next change is judged against the baseline before this one.
    pub fn traffic_unjudged(&mut self) {
        if self.watch.is_some() {
            self.unjudged = true;
        }
    }

    /// Watches the current change for another `watch_secs` from `at`, against the same
    /// baseline: when a window ended without enough evidence either way.
    pub fn extend_watch(&mut self, at: f64) {
        if let Some(w) = &self.watch {
            self.watch = Some(w.extension(at));
        }
    }

    pub fn observe_request(&mut self, r: &Request<'_>) {
        let bucket = r.latency_ms.map(super::histogram::bucket_of);
        self.record(r.ts, r.route, r.arm, |t| t.add_request_in(r.error, bucket));
    }

    pub fn observe_aggregate(&mut self, a: &Aggregate<'_>) {
        self.record(a.ts, a.route, a.arm, |t| {
            t.add_counts(a.requests, a.errors, a.latency)
        });
    }

    /// Files an observation in the history and, from its change on, in the watch.
    fn record(&mut self, ts: f64, route: Option<&str>, arm: Option<Arm>, add: impl Fn(&mut Tally)) {
        if !ts.is_finite() {
            return;
        }
        let stratum = self.strata.id(route);
        if let Some(w) = &mut self.watch {
            if ts >= w.change_at() {
                if let Some(tally) = w.tally_for(ts, stratum, arm) {
                    add(tally);
                }
            }
        }
        // The old version's requests beside a canary are the service as it was; the canary's
        // are the change's, and join the history only as part of the whole.
        self.baseline.record(ts.floor() as i64, stratum, add);
    }

    /// Lets traffic time pass to `now`: every second before it is judged. Returns the verdict.
    pub fn tick(&mut self, now: f64) -> Verdict {
        match &mut self.watch {
            Some(w) => w.advance(now.floor() as i64),
            None => Verdict::Watching,
        }
    }

    /// Evidence judged beside the core (Sentry's events) showed the change being watched
    /// worse at `at`: its watch ends regressed, so its traffic never joins a baseline.
    pub fn regressed_beside(&mut self, at: f64) {
        if let Some(w) = &mut self.watch {
            w.regressed_beside(at);
        }
    }

    /// When the change (or the remediation) being watched took effect, if one is.
    pub fn watch_change_at(&self) -> Option<f64> {
        self.watch.as_ref().map(Watch::change_at)
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.watch.as_ref().map(Watch::verdict)
    }

    /// The evidence of the current watch.
    pub fn report(&self) -> Option<Report> {
        self.watch.as_ref().map(|w| w.report(Some(&self.strata)))
    }

    /// The baseline a change landing at `now` (its deploy's start unknown) would be judged
    /// against, with what makes it thin: what `guardian status` shows, so a thin baseline is
    /// seen before it matters.
    pub fn baseline_preview(&self, now: f64) -> BaselinePreview {
        let window = self.deploy_window(Landing::at(now), &self.settings);
        let suspect = self.suspect_since.map(|from| Span {
            from,
            to: window.from,
        });
        let baseline = self
            .baseline
            .baseline_excluding(window.from, self.strata.len(), suspect);
        let report = Watch::new(&self.settings, window, baseline).report(Some(&self.strata));
        BaselinePreview {
            window: report.baseline_window,
            routes: report.baseline_routes,
            notes: report.baseline_notes,
        }
    }
}

/// Per route, what a baseline holds; routes with no requests are left out.
pub(crate) fn route_baselines(tallies: &[Tally], strata: &Strata) -> Vec<RouteBaseline> {
    tallies
        .iter()
        .enumerate()
        .filter(|(_, t)| t.requests > 0)
        .map(|(s, t)| RouteBaseline {
            route: strata.name(s).to_owned(),
            requests: t.requests,
            errors: t.errors,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Request;

    const T0: f64 = 1_764_000_000.0;

    fn settings() -> DetectorSettings {
        DetectorSettings {
            baseline_secs: 600,
            watch_secs: 300,
            ..DetectorSettings::default()
        }
    }

    /// `rps` requests a second on one route from `from` for `secs`, failing when `fails(t)`.
    fn traffic(m: &mut Monitor, from: f64, secs: u32, rps: u32, fails: impl Fn(f64) -> bool) {
        for s in 0..secs {
            for i in 0..rps {
                let ts = from + f64::from(s) + f64::from(i) / f64::from(rps);
                m.observe_request(&Request {
                    ts,
                    error: fails(ts),
                    latency_ms: Some(20.0),
                    route: Some("/"),
                    arm: None,
                });
            }
            m.tick(from + f64::from(s) + 1.0);
        }
    }

    #[test]
    fn a_restart_burst_just_before_the_change_is_not_in_its_baseline() {
        let mut m = Monitor::new(settings());
        traffic(&mut m, T0 - 900.0, 897, 20, |_| false);
        // The restart: 3 s of 502s, then the notification.
        traffic(&mut m, T0 - 3.0, 3, 20, |_| true);
        m.change_landed(T0);
        let r = m.report().unwrap();
        assert_eq!(r.signals[0].baseline.events, 0);
        let window = r.deploy_window.unwrap();
        assert_eq!(
            (window.from, window.to, window.given),
            (T0 - 60.0, T0, false)
        );
    }

    #[test]
    fn a_given_deploy_start_excludes_the_whole_deploy() {
        let mut m = Monitor::new(settings());
        traffic(&mut m, T0 - 900.0, 780, 20, |_| false);
        // A slow rolling restart: two minutes of scattered failures.
        traffic(&mut m, T0 - 120.0, 120, 20, |ts| (ts as i64) % 3 == 0);
        m.change_landed_with(
            Landing {
                at: T0,
                deploy_started_at: Some(T0 - 120.0),
            },
            &settings(),
        );
        let r = m.report().unwrap();
        assert_eq!(r.signals[0].baseline.events, 0);
        assert!(r.deploy_window.unwrap().given);
        assert_eq!(r.baseline_window.covered_secs, 600.0);
    }

    #[test]
    fn a_healthy_change_is_the_next_ones_baseline() {
        let mut m = Monitor::new(settings());
        traffic(&mut m, T0 - 900.0, 900, 20, |_| false);
        m.change_landed(T0);
        traffic(&mut m, T0, 301, 20, |_| false);
        assert_eq!(m.verdict(), Some(Verdict::Healthy));
        m.end_watch();
        // Back to back: the next change lands seconds after the verdict.
        traffic(&mut m, T0 + 301.0, 5, 20, |_| false);
        m.change_landed(T0 + 306.0);
        let r = m.report().unwrap();
        assert_eq!(r.baseline_window.covered_secs, 600.0);
        assert!(
            r.requests_before >= 600 * 20 - 20 * 60,
            "{}",
            r.requests_before
        );
        assert!(r.baseline_window.from.unwrap() < T0 - 60.0);
    }

    #[test]
    fn a_regressed_change_never_joins_a_baseline_and_its_recovery_does_once_confirmed() {
        let mut m = Monitor::new(settings());
        traffic(&mut m, T0 - 900.0, 900, 20, |_| false);
        m.change_landed(T0);
        traffic(&mut m, T0, 30, 20, |ts| (ts * 20.0) as i64 % 2 == 0);
        assert_eq!(m.verdict(), Some(Verdict::Regressed));
        traffic(&mut m, T0 + 30.0, 10, 20, |ts| (ts * 20.0) as i64 % 2 == 0);
        m.verify_recovery(T0 + 40.0, 60);
        traffic(&mut m, T0 + 40.0, 61, 20, |_| false);
        assert_eq!(m.verdict(), Some(Verdict::Healthy));
        m.end_watch();
        m.change_landed(T0 + 200.0);
        let r = m.report().unwrap();
        assert_eq!(r.signals[0].baseline.events, 0, "the bad change's errors");
        assert_eq!(r.baseline_window.covered_secs, 600.0);
    }

    #[test]
    fn a_watch_some_of_whose_traffic_never_came_to_be_judged_is_not_a_baseline() {
        let mut m = Monitor::new(settings());
        traffic(&mut m, T0 - 900.0, 900, 20, |_| false);
        m.change_landed(T0);
        // A source's gap: its counts come later, in a lump, errors and all; the watch is cut
        // short by the daemon, whatever the core's verdict.
        traffic(&mut m, T0, 30, 20, |_| false);
        m.observe_aggregate(&Aggregate {
            ts: T0 + 30.0,
            route: None,
            arm: None,
            requests: 2000,
            errors: 1000,
            latency: None,
        });
        m.traffic_unjudged();
        m.end_watch();
        traffic(&mut m, T0 + 31.0, 100, 20, |_| false);
        m.change_landed(T0 + 200.0);
        let r = m.report().unwrap();
        assert_eq!(r.signals[0].baseline.events, 0, "the lump's errors");
        // The flag goes with the watch: the next one is a baseline again if judged.
        traffic(&mut m, T0 + 200.0, 301, 20, |_| false);
        m.end_watch();
        m.change_landed(T0 + 600.0);
        assert!(m.report().unwrap().baseline_window.covered_secs >= 299.0);
    }

    #[test]
    fn a_recovery_that_did_not_come_is_not_a_baseline() {
        let mut m = Monitor::new(settings());
        traffic(&mut m, T0 - 900.0, 900, 20, |_| false);
        m.change_landed(T0);
        let half = |ts: f64| (ts * 20.0) as i64 % 2 == 0;
        traffic(&mut m, T0, 30, 20, half);
        m.verify_recovery(T0 + 30.0, 60);
        traffic(&mut m, T0 + 30.0, 61, 20, half);
        assert_eq!(m.verdict(), Some(Verdict::Regressed));
        m.end_watch();
        traffic(&mut m, T0 + 91.0, 120, 20, |_| false);
        m.change_landed(T0 + 211.0);
        assert_eq!(m.report().unwrap().signals[0].baseline.events, 0);
    }

    #[test]
    fn a_regressed_change_left_serving_is_no_baseline_until_the_next_change() {
        // No rollback: the bad version serves on after the verdict. The next change (its fix,
        // say) is judged against the traffic from before the bad one, not against the bad.
        let mut m = Monitor::new(settings());
        traffic(&mut m, T0 - 900.0, 900, 20, |_| false);
        m.change_landed(T0);
        let half = |ts: f64| (ts * 20.0) as i64 % 2 == 0;
        traffic(&mut m, T0, 30, 20, half);
        assert_eq!(m.verdict(), Some(Verdict::Regressed));
        m.end_watch();
        traffic(&mut m, T0 + 30.0, 300, 20, half);
        let preview = m.baseline_preview(T0 + 330.0);
        assert_eq!(preview.routes[0].errors, 0, "{preview:?}");
        m.change_landed(T0 + 330.0);
        let r = m.report().unwrap();
        assert_eq!(r.signals[0].baseline.events, 0);
        assert_eq!(r.baseline_window.covered_secs, 600.0);
        assert!(r.baseline_window.to.unwrap() <= T0);
    }

    #[test]
    fn the_preview_shows_what_a_change_would_be_judged_against() {
        let mut m = Monitor::new(settings());
        traffic(&mut m, T0 - 300.0, 300, 2, |_| false);
        let p = m.baseline_preview(T0);
        // The last minute is the guard: the deploy may be under way.
        assert_eq!(p.window.covered_secs, 240.0);
        assert_eq!(p.routes.len(), 1);
        assert_eq!(p.routes[0].route, "/");
        assert_eq!(p.routes[0].requests, 480);
        assert_eq!(p.notes.len(), 2, "{:?}", p.notes);
        assert!(p.notes[0].contains("covers 4 min"), "{}", p.notes[0]);
        // Not one error in 480 requests: a clean change cannot be shown healthy on errors.
        assert!(
            p.notes[1].starts_with("errors: the baseline holds 0"),
            "{}",
            p.notes[1]
        );
        // Ten minutes at 20 req/s, 2% failing: nothing thin about it.
        traffic(&mut m, T0, 900, 20, |ts| {
            (ts * 20.0).round() as i64 % 50 == 0
        });
        let p = m.baseline_preview(T0 + 900.0);
        assert!(p.notes.is_empty(), "{:?}", p.notes);
    }
}
