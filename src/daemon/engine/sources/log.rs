//! A followed access log: new lines read on every poll (across rotation, see `tail`), each
//! parsed and fed as a request. A bad line is counted and shown in the status; it never stops
//! the daemon.

use super::{Intake, Source, SourceView};
use crate::config::LogSource;
use crate::daemon::engine::{EngineError, SourceStatus};
use crate::input;
use crate::tail::{Position, Tailer};

pub struct LogFile {
    settings: LogSource,
    tailer: Tailer,
    lines: Vec<String>,
    bad_lines: u64,
    last_bad_line: Option<String>,
    last_read_at: Option<f64>,
    /// Rotations and truncations seen so far, to log each once.
    turns: (u64, u64),
}

impl LogFile {
    /// Follows the log `settings` names from `start` (from its beginning without one).
    pub fn new(settings: LogSource, start: Option<Position>) -> LogFile {
        LogFile {
            tailer: Tailer::new(settings.path.clone(), start),
            settings,
            lines: Vec::new(),
            bad_lines: 0,
            last_bad_line: None,
            last_read_at: None,
            turns: (0, 0),
        }
    }

    /// Says in the daemon's log when the file was rotated or truncated under it.
    fn log_turns(&mut self) {
        let status = self.tailer.status();
        let name = &self.settings.name;
        if status.rotations > self.turns.0 {
            tracing::info!(log = %name, "log {name} was rotated; following the new file");
        }
        if status.truncations > self.turns.1 {
            tracing::info!(log = %name, "log {name} was truncated; reading from its start");
        }
        self.turns = (status.rotations, status.truncations);
    }
}

impl Source for LogFile {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn poll(&mut self, now: f64, intake: &mut Intake<'_>) -> Result<(), EngineError> {
        self.lines.clear();
        self.tailer
            .poll(&mut self.lines)
            .map_err(|e| EngineError::Log {
                message: e.to_string(),
            })?;
        self.log_turns();
        if self.lines.is_empty() {
            return Ok(());
        }
        for line in &self.lines {
            match input::parse_line(line, self.settings.format) {
                Ok(event) => intake.request(&event.request(intake.error_status_min)),
                Err(message) => {
                    self.bad_lines += 1;
                    self.last_bad_line = Some(format!("{message}: {}", input::quote(line)));
                }
            }
        }
        self.last_read_at = Some(now);
        Ok(())
    }

    fn position(&self) -> Option<Position> {
        Some(self.tailer.position())
    }

    fn status(&self, now: f64) -> SourceView {
        SourceView::Log(SourceStatus {
            name: self.settings.name.clone(),
            tail: self.tailer.status(),
            bad_lines: self.bad_lines,
            last_bad_line: self.last_bad_line.clone(),
            last_read_at: self.last_read_at,
            idle_secs: self.last_read_at.map(|t| (now - t).max(0.0)),
        })
    }
}
