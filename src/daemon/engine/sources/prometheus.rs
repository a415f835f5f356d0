//! A Prometheus target: scraped every `interval_secs` on a thread of its own (an HTTP request
//! with a timeout must never hold up a tick), the counts it brought handed over on the next
//! poll. A failed scrape is missing data: nothing is fed, so it can never read as zero errors.

use std::sync::mpsc;

use super::{Intake, Source, SourceView};
use crate::config::ScrapeTarget;
use crate::daemon::engine::{EngineError, ScrapeStatus};
use crate::scrape::{ScrapeResult, Scraper};

pub struct PrometheusTarget {
    every: f64,
    next: f64,
    status: ScrapeStatus,
    /// The scraper while no scrape runs; a running scrape has it, and gives it back with its
    /// result. A slow target thus skips turns rather than piling requests up.
    idle: Option<Scraper>,
    results: mpsc::Receiver<(Scraper, Result<ScrapeResult, String>)>,
    done: mpsc::Sender<(Scraper, Result<ScrapeResult, String>)>,
}

impl PrometheusTarget {
    pub fn new(target: &ScrapeTarget) -> Result<PrometheusTarget, EngineError> {
        let scraper = Scraper::new(target.spec.clone())
            .map_err(|e| EngineError::Config(format!("[daemon.scrapes] {}: {e}", target.name)))?;
        let (done, results) = mpsc::channel();
        Ok(PrometheusTarget {
            every: f64::from(target.interval_secs),
            next: 0.0,
            status: ScrapeStatus {
                name: target.name.clone(),
                url: target.spec.url.clone(),
                ..ScrapeStatus::default()
            },
            idle: Some(scraper),
            results,
            done,
        })
    }

    /// A finished scrape, handed over on the poll at `now`.
    fn take(&mut self, now: f64, result: Result<ScrapeResult, String>, intake: &mut Intake<'_>) {
        let name = &self.status.name;
        match result {
            Ok(r) => {
                for interval in &r.intervals {
                    intake.interval(&interval.aggregate());
                }
                if self.status.last_error.is_some() {
                    tracing::info!(scrape = %name, "scrape {name}: working again");
                }
                self.status.last_ok_at = Some(now);
                self.status.last_error = None;
            }
            Err(e) => {
                // Said once when it starts failing (or fails differently), not every interval.
                if self.status.last_error.as_ref() != Some(&e) {
                    tracing::warn!(
                        scrape = %name,
                        "scrape {name}: {e} (no data until it works again)"
                    );
                }
                self.status.failures += 1;
                self.status.last_error = Some(e);
            }
        }
    }
}

impl Source for PrometheusTarget {
    fn name(&self) -> &str {
        &self.status.name
    }

    fn poll(&mut self, now: f64, intake: &mut Intake<'_>) -> Result<(), EngineError> {
        while let Ok((scraper, result)) = self.results.try_recv() {
            self.idle = Some(scraper);
            self.take(now, result, intake);
        }
        if now >= self.next {
            if let Some(mut scraper) = self.idle.take() {
                self.next = now + self.every;
                let done = self.done.clone();
                // Stamped with this tick's time: the engine reads no clock, and a scrape's
                // answer is at most its timeout later.
                std::thread::spawn(move || {
                    let result = scraper.scrape(now).map_err(|e| e.to_string());
                    let _ = done.send((scraper, result));
                });
            }
        }
        Ok(())
    }

    fn status(&self, now: f64) -> SourceView {
        SourceView::Scrape(ScrapeStatus {
            age_secs: self.status.last_ok_at.map(|t| (now - t).max(0.0)),
            ..self.status.clone()
        })
    }
}
