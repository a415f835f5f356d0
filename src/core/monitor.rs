//! The core's front door: feed it every observation, tell it when a change lands, and ask for
//! the verdict. The baseline rolls continuously, so one is ready whenever a change lands.

use super::baseline::RollingBaseline;
use super::observation::{Aggregate, Arm, Request};
use super::settings::DetectorSettings;
use super::strata::Strata;
use super::tally::Tally;
use super::watch::{Report, Verdict, Watch};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Monitor {
    settings: DetectorSettings,
    strata: Strata,
    baseline: RollingBaseline,
    watch: Option<Watch>,
}

impl Monitor {
    pub fn new(settings: DetectorSettings) -> Monitor {
        Monitor {
            strata: Strata::new(settings.max_routes),
            baseline: RollingBaseline::new(settings.baseline_secs),
            watch: None,
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

    /// Starts watching a change that landed at `change_at`: the baseline is frozen from the
    /// traffic of the window before it. Observations from `change_at` on are judged against it.
    pub fn change_landed(&mut self, change_at: f64) {
        let settings = self.settings.clone();
        self.change_landed_with(change_at, &settings);
    }

    /// Like [`Monitor::change_landed`], judged by `settings` instead of the monitor's own (an
    /// AI change may get stricter tolerances than a person's).
    pub fn change_landed_with(&mut self, change_at: f64, settings: &DetectorSettings) {
        let baseline = self.baseline.snapshot(change_at, self.strata.len());
        let dispersion = self.baseline.dispersion(change_at);
        self.watch = Some(Watch::new(settings, change_at, baseline, dispersion));
    }

    /// After a rollback landed at `at`: watch for `watch_secs` whether the service is back to
    /// the baseline the regressed change was judged against. `healthy` at the end means it
    /// recovered, `regressed` that the rollback did not help. Does nothing without a watch.
    pub fn verify_recovery(&mut self, at: f64, watch_secs: u32) {
        if let Some(w) = &self.watch {
            self.watch = Some(w.recovery(at, watch_secs));
        }
    }

    /// The change's watch is over and nothing more will be asked of it: traffic goes to the
    /// rolling baseline again, so the next change is judged against the traffic just before it.
    pub fn end_watch(&mut self) {
        self.watch = None;
    }

    /// Watches the current change for another `watch_secs` from `at`, against the same
    /// baseline: when a window ended without enough evidence either way.
    pub fn extend_watch(&mut self, at: f64) {
        if let Some(w) = &self.watch {
            self.watch = Some(w.extension(at));
        }
    }

    pub fn observe_request(&mut self, r: &Request<'_>) {
        self.record(r.ts, r.route, r.arm, 1, u64::from(r.error), |t| {
            t.add_request(r.error, r.latency_ms)
        });
    }

    pub fn observe_aggregate(&mut self, a: &Aggregate<'_>) {
        self.record(a.ts, a.route, a.arm, a.requests, a.errors, |t| {
            t.add_counts(a.requests, a.errors, a.latency)
        });
    }

    /// Files an observation under the baseline or the watch, by its time.
    fn record(
        &mut self,
        ts: f64,
        route: Option<&str>,
        arm: Option<Arm>,
        requests: u64,
        errors: u64,
        add: impl FnOnce(&mut Tally),
    ) {
        if !ts.is_finite() {
            return;
        }
        let stratum = self.strata.id(route);
        match &mut self.watch {
            Some(w) if ts >= w.change_at() => {
                if let Some(tally) = w.tally_for(ts, stratum, arm) {
                    add(tally);
                }
            }
            _ => {
                let sec = ts.floor() as i64;
                if let Some(tally) = self.baseline.tally_mut(sec, stratum) {
                    add(tally);
                    self.baseline.count(sec, requests, errors);
                }
            }
        }
    }

    /// Lets traffic time pass to `now`: every second before it is judged. Returns the verdict.
    pub fn tick(&mut self, now: f64) -> Verdict {
        match &mut self.watch {
            Some(w) => w.advance(now.floor() as i64),
            None => Verdict::Watching,
        }
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.watch.as_ref().map(Watch::verdict)
    }

    /// The evidence of the current watch.
    pub fn report(&self) -> Option<Report> {
        self.watch.as_ref().map(|w| w.report(Some(&self.strata)))
    }
}
