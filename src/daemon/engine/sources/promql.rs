//! The service's counters read from Prometheus's query API (`[[daemon.promql]]`): read every
//! step on a thread of its own (an HTTP request must never hold up a tick), handed over on the
//! next poll. Its traffic trails the present by the lag it reads at; the engine judges no
//! second it has not handed over, for as long as its patience lasts (see [`Trailing`]).

use std::sync::mpsc;

use super::{Intake, Source, SourceView, Trailing};
use crate::config::PromqlSource;
use crate::daemon::engine::{CanaryNow, EngineError, ScrapeStatus};
use crate::promql::{Missing, PromqlReader, Read};
use crate::scrape::{Arms, Rollout};
use crate::tail::Position;

/// Beyond its usual lag, how many steps the core waits for a source that is failing or behind
/// before it judges on without it (and a watch it leaves short cannot end healthy): two minutes
/// at the usual step of 10 s.
const PATIENCE_STEPS: f64 = 12.0;

type Done = (PromqlReader, Result<Read, String>);

/// What the engine told the feed for its reader.
enum Told {
    Canary(Rollout),
    Deployed(f64, f64),
}

pub struct PromqlFeed {
    every: f64,
    usual_lag: f64,
    next: f64,
    status: ScrapeStatus,
    /// Why the traffic is not complete to where it should be, when it is not.
    short: Option<String>,
    /// What the last read had no data for.
    lost: Option<Missing>,
    /// Whether the last read failed: said once when it answers again.
    failing: bool,
    /// The first poll: until a read brings data, the traffic is taken to be in up to then.
    started_at: Option<f64>,
    idle: Option<PromqlReader>,
    /// How its series tell a canary from the rest (`canary_label`), with the canaries named:
    /// what the reader has, kept here for status while the reader is out reading.
    arms: Option<Arms>,
    /// Deploys and canaries told while the reader was out reading: given to it before its
    /// next read.
    told: Vec<Told>,
    results: mpsc::Receiver<Done>,
    done: mpsc::Sender<Done>,
}

impl PromqlFeed {
    /// `backfill_secs`: how much of Prometheus's record to read at the first start (the
    /// baseline's); after a restart it reads on from the step it had reached, `resume`.
    pub fn new(
        source: &PromqlSource,
        backfill_secs: u32,
        resume: Option<Position>,
    ) -> Result<PromqlFeed, EngineError> {
        let mut spec = source.spec.clone();
        spec.backfill_secs = backfill_secs;
        let mut reader = PromqlReader::new(spec)
            .map_err(|e| EngineError::Config(format!("[daemon.promql] {}: {e}", source.name)))?;
        let mut resumed_at = None;
        if let Some(p) = resume {
            reader.resume_at(p.offset as f64);
            resumed_at = Some(p.offset as f64);
        }
        let (done, results) = mpsc::channel();
        let step = f64::from(source.spec.step_secs);
        Ok(PromqlFeed {
            every: step,
            usual_lag: f64::from(source.spec.lag_secs) + 2.0 * step,
            next: 0.0,
            status: ScrapeStatus {
                name: source.name.clone(),
                url: reader.shown_url().to_owned(),
                // After a restart the traffic is in up to where it was read before.
                data_until: resumed_at,
                ..ScrapeStatus::default()
            },
            started_at: None,
            short: None,
            lost: None,
            failing: false,
            idle: Some(reader),
            arms: source.spec.series.arms.clone(),
            told: Vec::new(),
            results,
            done,
        })
    }

    fn take(&mut self, now: f64, result: Result<Read, String>, intake: &mut Intake<'_>) {
        let name = &self.status.name;
        match result {
            Ok(read) => {
                for interval in &read.intervals {
                    intake.interval(&interval.aggregate());
                }
                for note in &read.notes {
                    tracing::info!(promql = %name, "{name}: {note}");
                }
                if let Some(until) = read.until {
                    self.status.data_until = Some(until);
                }
                if std::mem::take(&mut self.failing) {
                    tracing::info!(promql = %name, "{name}: Prometheus answers again");
                }
                let nothing = read.nothing_matched.clone();
                if let Some(why) = &nothing {
                    if self.status.last_error.as_ref() != Some(why) {
                        tracing::warn!(promql = %name, "{name}: {why}");
                    }
                }
                // Said when data starts missing and when it is back, not at every read.
                match (&read.missing, &self.lost) {
                    (Some(m), None) => {
                        let why = &m.why;
                        tracing::warn!(promql = %name, "{name}: {why} (missing data, never zero)")
                    }
                    (None, Some(_)) => {
                        tracing::info!(promql = %name, "{name}: data for every step again")
                    }
                    _ => {}
                }
                self.lost = read.missing;
                self.short = nothing.clone();
                self.status.last_ok_at = Some(now);
                self.status.last_error = nothing;
            }
            Err(e) => {
                if self.status.last_error.as_ref() != Some(&e) {
                    tracing::warn!(promql = %name, "{name}: {e} (no data until it answers again)");
                }
                self.status.failures += 1;
                self.failing = true;
                self.short = Some(e.clone());
                self.status.last_error = Some(e);
            }
        }
    }
}

impl PromqlFeed {
    fn hand_over(&mut self) {
        if let Some(reader) = &mut self.idle {
            for told in self.told.drain(..) {
                match told {
                    Told::Canary(r) => {
                        reader.roll_out(r);
                    }
                    Told::Deployed(from, to) => reader.deployed(from, to),
                }
            }
        }
    }
}

impl Source for PromqlFeed {
    fn name(&self) -> &str {
        &self.status.name
    }

    fn poll(&mut self, now: f64, intake: &mut Intake<'_>) -> Result<(), EngineError> {
        self.started_at.get_or_insert(now);
        while let Ok((reader, result)) = self.results.try_recv() {
            self.idle = Some(reader);
            self.take(now, result, intake);
        }
        self.hand_over();
        if now >= self.next {
            if let Some(mut reader) = self.idle.take() {
                self.next = now + self.every;
                let done = self.done.clone();
                std::thread::spawn(move || {
                    let result = reader.read(now).map_err(|e| e.to_string());
                    let _ = done.send((reader, result));
                });
            }
        }
        Ok(())
    }

    /// The last step with data, saved with the core's state: after a restart the history the
    /// snapshot holds is not read twice, and what happened meanwhile is read once.
    fn position(&self) -> Option<Position> {
        self.status.data_until.map(|t| Position {
            file_id: 0,
            offset: t.max(0.0) as u64,
        })
    }

    fn trailing(&self, now: f64) -> Option<Trailing> {
        let until = self.status.data_until.or(self.started_at).unwrap_or(now);
        let why = match &self.short {
            Some(why) => Some(why.clone()),
            None if now - until > self.usual_lag => Some(format!(
                "traffic from Prometheus only up to {}",
                match self.status.data_until {
                    Some(t) => crate::report::units::when(t),
                    None => "nothing yet".to_owned(),
                }
            )),
            None => None,
        };
        Some(Trailing {
            until,
            patience: self.usual_lag + PATIENCE_STEPS * self.every,
            why: why.map(|w| format!("{}: {w}", self.status.name)),
            lost: self
                .lost
                .as_ref()
                .map(|m| (m.until, format!("{}: {}", self.status.name, m.why))),
        })
    }

    /// Taken by the reader before its next read. A read out now asked only for steps before
    /// the notification (it began earlier, and reads a lag behind when it began).
    fn roll_out(&mut self, rollout: &Rollout) -> bool {
        let Some(arms) = &mut self.arms else {
            return false;
        };
        arms.roll_out(rollout.clone());
        self.told.push(Told::Canary(rollout.clone()));
        self.hand_over();
        true
    }

    fn deployed(&mut self, from: f64, to: f64) {
        self.told.push(Told::Deployed(from, to));
        self.hand_over();
    }

    fn status(&self, now: f64) -> SourceView {
        SourceView::Scrape(ScrapeStatus {
            age_secs: self.status.last_ok_at.map(|t| (now - t).max(0.0)),
            canary: self.arms.as_ref().map(|a| CanaryNow {
                label: a.label.clone(),
                values: a.canary_at(now).to_vec(),
                configured: a.canary.clone(),
            }),
            ..self.status.clone()
        })
    }
}
