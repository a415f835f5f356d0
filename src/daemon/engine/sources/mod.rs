//! Where traffic comes into the engine. A [`Source`] is polled on every tick, on the engine's
//! owner thread, and hands over what it gathered since: a followed log reads its new lines
//! (`log.rs`), a Prometheus target hands over the counts its own thread scraped
//! (`prometheus.rs`), the service's counters read back from Prometheus's query API arrive a
//! lag behind the present (`promql.rs`). Observations the app pushes to the API arrive as a message instead
//! ([`Engine::observe`]). All of them feed the same two places through [`Intake`]: the core,
//! and the post-mortem's traffic series.
//!
//! Adding a source is a file here implementing [`Source`], a config section, and a line in
//! [`from_settings`].

mod log;
mod prometheus;
mod promql;

use super::{Engine, EngineError, ScrapeStatus, SourceStatus};
use crate::config::DaemonSettings;
use crate::core::{Aggregate, Monitor, Request};
use crate::input::Event;
use crate::scrape::Rollout;
use crate::series::SeriesBins;
use crate::store::Store;
use crate::tail::Position;

pub use self::log::LogFile;
pub use self::prometheus::PrometheusTarget;
pub use self::promql::PromqlFeed;

/// Where the traffic a source hands over goes.
pub struct Intake<'a> {
    monitor: &'a mut Monitor,
    series: &'a mut SeriesBins,
    /// The status from which a response counts as an error (`[input] error_status_min`).
    pub error_status_min: u16,
}

impl Intake<'_> {
    /// One request, as a log line or a push tells it.
    pub fn request(&mut self, r: &Request) {
        self.series.observe_request(r.ts, r.error, r.latency_ms);
        self.monitor.observe_request(r);
    }

    /// An interval's counts, as a scrape tells them.
    pub fn interval(&mut self, a: &Aggregate<'_>) {
        self.series
            .observe_counts(a.ts, a.requests, a.errors, a.latency);
        self.monitor.observe_aggregate(a);
    }
}

/// What `guardian status` shows of a source: logs and scrapes have their own lists.
pub enum SourceView {
    Log(SourceStatus),
    Scrape(ScrapeStatus),
}

/// How far a source that trails the present has handed its traffic over.
#[derive(Clone, Debug, PartialEq)]
pub struct Trailing {
    /// Every observation up to this time has been handed over.
    pub until: f64,
    /// How far behind the present the core waits for it; further, it judges on without it.
    pub patience: f64,
    /// Why it is short of where it should be (failing, or behind), when it is.
    pub why: Option<String>,
    /// Traffic it could not hand over at its time (steps Prometheus had no data for), up to
    /// the latest such step: those counts come later in a lump, or never, so a watch they fall
    /// in cannot end healthy.
    pub lost: Option<(f64, String)>,
}

/// A way traffic comes in.
pub trait Source: Send {
    fn name(&self) -> &str;
    /// Hands what arrived since the last poll to `intake`. Runs on the engine's owner thread
    /// every tick, so it must not wait on the network: a source that must, waits on a thread
    /// of its own and hands its results over here. An error stops guardian (a log it can no
    /// longer read); a source that can be down for a while says so in its status instead.
    fn poll(&mut self, now: f64, intake: &mut Intake<'_>) -> Result<(), EngineError>;
    /// Where it stands in its input, when that must survive a restart (a log's offset), to be
    /// saved with the core's state so the same lines are never counted twice.
    fn position(&self) -> Option<Position> {
        None
    }
    fn status(&self, now: f64) -> SourceView;
    /// `None` for a source whose traffic is in as it happens (a log, a scrape stamped when it
    /// is taken); a source whose traffic trails says how far it is in.
    fn trailing(&self, _now: f64) -> Option<Trailing> {
        None
    }
    /// A notification named the canary: from `rollout.since` its series are the new version.
    /// False for a source that tells no canary from the rest.
    fn roll_out(&mut self, _rollout: &Rollout) -> bool {
        false
    }
    /// A deploy restarted the service's processes from `from` to `to` (a change's, or a
    /// rollback's redeploy): a source that reads them as they come back may see some absent
    /// for a while after.
    fn deployed(&mut self, _from: f64, _to: f64) {}
}

/// The time up to which the core may judge at `now`, with every source heard: the earliest any
/// trailing source is complete to, but never further back than its patience. Past that, the
/// core judges on without it. The second value says why some traffic is short, and the latest
/// time it is short at (`now` for a source judged on without).
pub fn traffic_clock(
    now: f64,
    trailing: impl IntoIterator<Item = Trailing>,
) -> (f64, Option<(f64, String)>) {
    let mut clock = now;
    let mut short = None;
    for t in trailing {
        let floor = now - t.patience;
        if t.until < floor {
            clock = clock.min(floor);
            short = short.or(t.why.map(|w| (now, w)));
        } else {
            clock = clock.min(t.until);
        }
        short = short.or(t.lost);
    }
    (clock, short)
}

/// The sources `settings` configure, each picking up where the last run stopped: at `saved`
/// (the snapshot's positions, which go with the snapshot's state), else at what `store` kept.
/// A source with a record of its own (Prometheus) reads `baseline_secs` of it at the start.
pub fn from_settings(
    settings: &DaemonSettings,
    baseline_secs: u32,
    saved: Option<&[(String, Position)]>,
    store: &Store,
) -> Result<Vec<Box<dyn Source>>, EngineError> {
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    let start = |name: &str| -> Result<Option<Position>, EngineError> {
        Ok(match saved {
            Some(positions) => positions.iter().find(|(n, _)| n == name).map(|(_, p)| *p),
            None => store
                .load_position(name)?
                .map(|(file_id, offset)| Position { file_id, offset }),
        })
    };
    for log in &settings.logs {
        sources.push(Box::new(LogFile::new(log.clone(), start(&log.name)?)));
    }
    for target in &settings.scrapes {
        sources.push(Box::new(PrometheusTarget::new(target)?));
    }
    for source in &settings.promql {
        let resume = start(&source.name)?;
        sources.push(Box::new(PromqlFeed::new(source, baseline_secs, resume)?));
    }
    Ok(sources)
}

impl Engine {
    /// Polls every source: what arrived goes to the core, and where each stands to the store.
    pub fn poll_sources(&mut self, now: f64) -> Result<(), EngineError> {
        let mut intake = Intake {
            monitor: self.supervisor.monitor_mut(),
            series: &mut self.series,
            error_status_min: self.config.input.error_status_min,
        };
        for source in &mut self.sources {
            let before = source.position();
            source.poll(now, &mut intake)?;
            if let Some(p) = source.position().filter(|p| Some(*p) != before) {
                self.store
                    .save_position(source.name(), p.file_id, p.offset, now)?;
            }
        }
        let (clock, short) =
            traffic_clock(now, self.sources.iter().filter_map(|s| s.trailing(now)));
        self.traffic_until = clock;
        self.supervisor.traffic_until(clock, short);
        Ok(())
    }

    /// Feeds requests reported by the app itself.
    pub fn observe(&mut self, events: &[Event<'_>]) {
        let min = self.config.input.error_status_min;
        for e in events {
            let r = e.request(min);
            self.series.observe_request(r.ts, r.error, r.latency_ms);
            self.supervisor.monitor_mut().observe_request(&r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailing(until: f64, why: Option<&str>) -> Trailing {
        Trailing {
            until,
            patience: 100.0,
            why: why.map(str::to_owned),
            lost: None,
        }
    }

    #[test]
    fn the_core_waits_for_the_slowest_source_within_its_patience_and_then_says_why() {
        assert_eq!(traffic_clock(1000.0, []), (1000.0, None));
        assert_eq!(
            traffic_clock(
                1000.0,
                [trailing(960.0, None), trailing(950.0, Some("slow"))]
            ),
            (950.0, None),
            "within patience, a source short of data holds the clock, and nothing is missing yet"
        );
        assert_eq!(
            traffic_clock(
                1000.0,
                [trailing(960.0, None), trailing(700.0, Some("down"))]
            ),
            (900.0, Some((1000.0, "down".to_owned()))),
            "past it, the core judges on without that source"
        );
        let lost = Trailing {
            lost: Some((980.0, "no data at 3 steps".into())),
            ..trailing(990.0, None)
        };
        assert_eq!(
            traffic_clock(1000.0, [lost]),
            (990.0, Some((980.0, "no data at 3 steps".to_owned()))),
            "steps that had no data are short whenever they were, even within patience"
        );
    }
}
