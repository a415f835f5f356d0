//! Sentry's verified deliveries, stored on the engine's owner (the store is its own), and what
//! `guardian status` shows of them.

use serde::{Deserialize, Serialize};

use super::{Engine, EngineError};
use crate::core::evidence::Counts;
use crate::sentry::Issue as SentryIssue;
use crate::sentry::{Notice, Verified};
use crate::store::{Delivered, Store};

/// How far back `guardian status` looks for new issues when no change is watched.
const LOOK_BACK_SECS: f64 = 86_400.0;
/// How often Sentry's events are counted while they are judged.
const COUNT_EVERY_SECS: f64 = 5.0;
/// New issues `guardian status` lists at most.
const SHOWN: u32 = 20;

/// What `guardian status` shows of Sentry, when `[daemon.sentry]` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SentryStatus {
    /// When the last delivery arrived (within a day).
    pub last_delivery_at: Option<f64>,
    /// Issues first seen at or after `since`: the watched change's landing, else a day ago.
    pub since: f64,
    /// The newest of them (at most 20), newest first ...
    pub new_issues: Vec<SentryIssue>,
    /// ... of this many.
    #[serde(default)]
    pub new_issues_total: u64,
}

impl SentryStatus {
    /// Read from `store`; `since`: when the watched change landed, if one is watched.
    pub fn read(store: &Store, now: f64, since: Option<f64>) -> Result<SentryStatus, EngineError> {
        let since = since.unwrap_or(now - LOOK_BACK_SECS);
        Ok(SentryStatus {
            last_delivery_at: store.sentry_last_delivery()?,
            since,
            new_issues: store.sentry_issues_since(since, SHOWN)?,
            new_issues_total: store.sentry_issues_count_since(since)?,
        })
    }
}

impl Engine {
    /// Hands the supervisor Sentry's events and the requests they are counted against, when
    /// it judges them: in the spans the baseline covers, and since the change, each in the
    /// same whole 10-second bins of the stored traffic series, so events and requests cover
    /// the same time (the bin the change landed in may hold its deploy's restart: it is left
    /// out). New counts come a bin at a time, and deliveries a few seconds late: counted every
    /// few seconds, not every tick.
    pub(super) fn count_sentry_events(&mut self, now: f64) -> Result<(), EngineError> {
        let Some((covered, change_at)) = self.supervisor.sentry_window() else {
            self.sentry_counted_at = f64::NEG_INFINITY;
            return Ok(());
        };
        if now - self.sentry_counted_at < COUNT_EVERY_SECS {
            return Ok(());
        }
        self.sentry_counted_at = now;
        let bin = |t: f64| (t / 10.0).floor() * 10.0;
        let mut baseline = Counts::default();
        for span in covered {
            let (from, to) = (bin(span.from), bin(span.to));
            baseline.requests += self.store.series_requests(from, to)?.0;
            baseline.events += self.store.sentry_events_all(from, to)?;
        }
        let start = (change_at / 10.0).ceil() * 10.0;
        let (requests_after, until) = self.store.series_requests(start, now)?;
        let Some(until) = until else {
            return Ok(());
        };
        let after = Counts {
            requests: requests_after,
            events: self.store.sentry_events_all(start, until)?,
        };
        self.supervisor.sentry_counts(baseline, after, until);
        Ok(())
    }

    /// Records a delivery verified as Sentry's (`sentry::verify`), once.
    pub fn sentry_delivery(
        &mut self,
        delivery: &Verified,
        notice: &Notice,
        now: f64,
    ) -> Result<Delivered, EngineError> {
        let delivered = self.store.sentry_delivery(delivery, notice, now)?;
        match (&delivered, notice) {
            (Delivered::Duplicate { received_at }, _) => tracing::debug!(
                "sentry: {} delivery {} was processed at {received_at:.0}; not again",
                delivery.resource,
                delivery
                    .request_id
                    .as_deref()
                    .unwrap_or(&delivery.body_sha256)
            ),
            (Delivered::New, Notice::Issue { action, issue }) => tracing::info!(
                sentry_issue = %issue.id,
                "sentry: issue {} {}: {}",
                issue.short_id.as_deref().unwrap_or(&issue.id),
                action.as_str(),
                crate::display::line(&issue.title)
            ),
            (Delivered::New, _) => {
                tracing::debug!("sentry: {} delivery recorded", delivery.resource)
            }
        }
        if delivered == Delivered::New {
            self.agent_heard(notice, now);
        }
        Ok(delivered)
    }
}
