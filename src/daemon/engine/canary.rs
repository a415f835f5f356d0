//! The canary a notification names (`guardian notify --canary`): from its deploy on, the
//! sources that tell a canary from the rest (`canary_label`) compare its series against the
//! rest's. Named again for the change being watched, the watch follows the rollout as it
//! widens instead of starting over. A notification that names none returns each source to the
//! canary its config names (none, usually: the service as a whole). Each canary named is on its
//! change's record, so a restart takes up the last change's again.

use super::{Engine, EngineError};
use crate::change::EventKind;
use crate::core::Landing;
use crate::daemon::supervisor::Phase;
use crate::scrape::Rollout;

/// The most canaries one watch follows (its first included): a rollout has a few steps.
const MAX_WIDENINGS: usize = 32;

impl Engine {
    /// Whether some source tells a canary from the rest, so that a notification may name one.
    fn tells_canary(&self) -> bool {
        self.settings
            .promql
            .iter()
            .any(|p| p.spec.series.arms.is_some())
    }

    /// The change being watched, when a notification of `commit` naming a canary widens its
    /// rollout: it named a canary too.
    pub(super) fn widening(
        &self,
        commit: &str,
        canary: Option<&Vec<String>>,
    ) -> Result<Option<String>, EngineError> {
        if canary.is_some() && !self.tells_canary() {
            return Err(EngineError::BadRequest(
                "\"canary\" names the values of a canary_label, and no [[daemon.promql]] has \
                 one: set canary_label there, or notify without a canary"
                    .into(),
            ));
        }
        let Phase::Watching(watched) = self.supervisor.phase() else {
            return Ok(None);
        };
        if canary.is_none() || watched.commit != commit.trim() {
            return Ok(None);
        }
        let named = self.canaries_of(&watched.id)?;
        let Some(now) = named.last().and_then(|r| r.canary.as_ref()) else {
            return Ok(None);
        };
        let canary = canary.unwrap_or(now);
        // A host taken off the canary would carry the change's failures into the rest it is
        // compared with: a rollout that pulls back ends the watch first (`notify --starting`).
        let dropped: Vec<&String> = now.iter().filter(|v| !canary.contains(v)).collect();
        if !dropped.is_empty() {
            return Err(EngineError::Conflict(format!(
                "{} is watched with the canary {}: a rollout only widens while it is watched, \
                 and this one drops {}; send `guardian notify --starting` first to end the watch",
                watched.id,
                crate::display::line(&now.join(", ")),
                crate::display::line(
                    &dropped
                        .iter()
                        .map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )));
        }
        if named.len() >= MAX_WIDENINGS {
            return Err(EngineError::Conflict(format!(
                "{} has been widened {} times, the most one watch follows; send `guardian \
                 notify --starting` first to end the watch",
                watched.id,
                named.len()
            )));
        }
        Ok(Some(watched.id.clone()))
    }

    /// From the deploy of `change_id` (its `landing`) on, the canary is `canary`: given to
    /// every source that tells one, and put on the change's record when one is named.
    pub(super) fn roll_out(
        &mut self,
        change_id: &str,
        landing: Landing,
        canary: Option<Vec<String>>,
        widening: bool,
        now: f64,
    ) -> Result<(), EngineError> {
        let window = self
            .supervisor
            .monitor()
            .deploy_window(landing, &self.config.detector);
        let rollout = Rollout {
            held_from: window.from,
            since: window.to,
            canary,
        };
        if rollout.canary.is_some() {
            let detail = serde_json::to_value(&rollout).expect("a rollout is plain data");
            self.store
                .record_event(change_id, EventKind::CanaryRollout, &detail, now)?;
            let values = rollout.canary.as_deref().unwrap_or_default();
            let shown = match values {
                [one] => crate::display::line(one).into_owned(),
                many => format!(
                    "{} values ({:?}, ...)",
                    many.len(),
                    crate::display::line(&many[0])
                ),
            };
            tracing::info!(
                change_id,
                "{change_id}: the canary is {shown} from {}",
                crate::report::units::when(rollout.since)
            );
        }
        for source in &mut self.sources {
            // A widening's hosts are on neither side while they restart: its canary never
            // goes missing, so it opens no window in which a side may (nor does naming the
            // same canary again).
            if !widening {
                source.deployed(rollout.held_from, rollout.since);
            }
            source.roll_out(&rollout);
        }
        Ok(())
    }

    /// The canaries named for `change_id`, in order.
    fn canaries_of(&self, change_id: &str) -> Result<Vec<Rollout>, EngineError> {
        Ok(self
            .store
            .events_for(change_id)?
            .iter()
            .filter(|e| e.kind == EventKind::CanaryRollout)
            .filter_map(|e| e.detail_as::<Rollout>().ok())
            .collect())
    }

    /// At start: the sources take up the canary the last change named, if it named one.
    pub(super) fn resume_canary(&mut self) -> Result<(), EngineError> {
        let Some(last) = self.store.recent_changes(1)?.into_iter().next() else {
            return Ok(());
        };
        for rollout in self.canaries_of(&last.id)? {
            for source in &mut self.sources {
                source.roll_out(&rollout);
            }
        }
        Ok(())
    }
}
