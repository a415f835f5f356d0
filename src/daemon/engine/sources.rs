//! Where traffic comes into the engine: the followed logs (polled every tick), Prometheus
//! scrapes (run as jobs, their counts handed in) and observations the app pushes to the API.
//! Each feeds the same two places: the core, and the post-mortem's traffic series.

use super::{Engine, EngineError};
use crate::config::LogSource;
use crate::input::{self, Event};
use crate::tail::Tailer;

/// One followed log, and how reading it goes.
pub(super) struct Source {
    pub(super) settings: LogSource,
    pub(super) tailer: Tailer,
    pub(super) bad_lines: u64,
    pub(super) last_bad_line: Option<String>,
    pub(super) last_read_at: Option<f64>,
}

impl Engine {
    /// What a scrape of target `name` brought: counts per interval fed to the core, or a
    /// failure recorded (missing data: nothing is fed, so it can never read as zero errors).
    pub fn scraped(
        &mut self,
        name: &str,
        result: Result<crate::scrape::ScrapeResult, String>,
        now: f64,
    ) {
        let Some(status) = self.scrapes.iter_mut().find(|s| s.name == name) else {
            return;
        };
        match result {
            Ok(r) => {
                for interval in &r.intervals {
                    let a = interval.aggregate();
                    self.series
                        .observe_counts(a.ts, a.requests, a.errors, a.latency);
                    self.monitor.observe_aggregate(&a);
                }
                if status.last_error.is_some() {
                    tracing::info!(scrape = name, "scrape {name}: working again");
                }
                status.last_ok_at = Some(now);
                status.last_error = None;
            }
            Err(e) => {
                // Said once when it starts failing (or fails differently), not every interval.
                if status.last_error.as_ref() != Some(&e) {
                    tracing::warn!(
                        scrape = name,
                        "scrape {name}: {e} (no data until it works again)"
                    );
                }
                status.failures += 1;
                status.last_error = Some(e);
            }
        }
    }

    /// Feeds requests reported by the app itself.
    pub fn observe(&mut self, events: &[Event<'_>]) {
        let min = self.config.input.error_status_min;
        for e in events {
            let r = e.request(min);
            self.series.observe_request(r.ts, r.error, r.latency_ms);
            self.monitor.observe_request(&r);
        }
    }

    /// Reads what the followed logs gained, feeds it to the core and saves the positions.
    /// A bad line is counted and shown in the status; it never stops the daemon.
    pub fn poll_logs(&mut self, now: f64) -> Result<usize, EngineError> {
        let min = self.config.input.error_status_min;
        let mut total = 0;
        let mut lines = Vec::new();
        for source in &mut self.sources {
            lines.clear();
            let position = source
                .tailer
                .poll(&mut lines)
                .map_err(|e| EngineError::Log {
                    message: e.to_string(),
                })?;
            if lines.is_empty() {
                continue;
            }
            for line in &lines {
                match input::parse_line(line, source.settings.format) {
                    Ok(event) => {
                        let r = event.request(min);
                        self.series.observe_request(r.ts, r.error, r.latency_ms);
                        self.monitor.observe_request(&r);
                    }
                    Err(message) => {
                        source.bad_lines += 1;
                        source.last_bad_line = Some(format!("{message}: {}", input::quote(line)));
                    }
                }
            }
            total += lines.len();
            source.last_read_at = Some(now);
            self.store.save_position(
                &source.settings.name,
                position.file_id,
                position.offset,
                now,
            )?;
        }
        Ok(total)
    }
}
