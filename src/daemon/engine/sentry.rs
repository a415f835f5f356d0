//! Sentry's verified deliveries, stored on the engine's owner (the store is its own), and what
//! `guardian status` shows of them.

use serde::{Deserialize, Serialize};

use super::{Engine, EngineError};
use crate::sentry::{Notice, Verified};
use crate::store::{Delivered, SentryIssue, Store};

/// How far back `guardian status` looks for new issues when no change is watched.
const LOOK_BACK_SECS: f64 = 86_400.0;
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
        Ok(delivered)
    }
}
