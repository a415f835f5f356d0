//! Refused requests on the audit trail, in aggregate. A request refused for its role (403) or
//! over its token's rate (429) is worth knowing about, but one record each would let the agent
//! fill the disk (3,000 refusals a second is easy). So each token has a window: its first
//! refusal is recorded at once (an agent trying to approve is on the trail the moment it
//! tries), the rest are counted, and when the window ends one record says how many of what.
//! Under a flood that is two records per token per window, whatever the rate.
//!
//! Pure bookkeeping with `now` passed in; the daemon writes the records it hands out.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::json;

use crate::store::{EventKind, Store, StoreError};

/// How long a window counts refusals before its record is written.
pub const WINDOW_SECS: f64 = 60.0;

/// What a request was refused for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its role may not do this action (403); the action's name.
    Forbidden(String),
    /// Its token was over its rate (429).
    RateLimited,
}

/// Refusals of one token in one window: what one audit record says.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Window {
    /// The actor as the audit trail names it (`agent`, `approver:alice`).
    #[serde(skip)]
    pub actor: String,
    /// When the first refusal counted here came, and the last.
    pub from: f64,
    pub to: f64,
    /// Refusals for the role, by action.
    pub forbidden: BTreeMap<String, u64>,
    /// Requests over the token's rate.
    pub rate_limited: u64,
}

impl Window {
    fn new(actor: &str, now: f64) -> Window {
        Window {
            actor: actor.to_owned(),
            from: now,
            to: now,
            forbidden: BTreeMap::new(),
            rate_limited: 0,
        }
    }

    fn count(&mut self, what: &Refusal, now: f64) {
        match what {
            Refusal::Forbidden(action) => *self.forbidden.entry(action.clone()).or_default() += 1,
            Refusal::RateLimited => self.rate_limited += 1,
        }
        self.to = self.to.max(now);
    }

    /// How many refusals this record counts.
    pub fn total(&self) -> u64 {
        self.forbidden.values().sum::<u64>() + self.rate_limited
    }

    fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// Appends this window's record to the audit trail.
    pub fn record(&self, store: &mut Store, now: f64) -> Result<u64, StoreError> {
        let detail = json!({
            "refused": self.total(),
            "forbidden": self.forbidden,
            "rate_limited": self.rate_limited,
            "from": self.from,
            "to": self.to,
            "window_secs": WINDOW_SECS,
        });
        store.audit(
            &self.actor,
            EventKind::AccessRefused,
            None,
            None,
            &detail,
            now,
        )
    }
}

/// The open windows, one per token that was refused lately.
#[derive(Debug, Default)]
pub struct Refusals {
    /// Per actor: the window's start and what it counted since its first refusal.
    open: Mutex<BTreeMap<String, Window>>,
}

impl Refusals {
    /// Counts a refusal. Returns the record to write at once when it is the first of a new
    /// window for this actor; the ones after it are counted into the window's record.
    pub fn note(&self, actor: &str, what: Refusal, now: f64) -> Option<Window> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(window) = open.get_mut(actor) {
            window.count(&what, now);
            return None;
        }
        open.insert(actor.to_owned(), Window::new(actor, now));
        let mut first = Window::new(actor, now);
        first.count(&what, now);
        Some(first)
    }

    /// The windows that ended by `now`, closed; those that counted anything after their first
    /// refusal come back as records to write.
    pub fn due(&self, now: f64) -> Vec<Window> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let ended: Vec<String> = open
            .iter()
            .filter(|(_, w)| now - w.from >= WINDOW_SECS)
            .map(|(actor, _)| actor.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|actor| open.remove(&actor))
            .filter(|w| !w.is_empty())
            .collect()
    }

    /// Every window still open, closed (at shutdown).
    pub fn drain(&self) -> Vec<Window> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *open)
            .into_values()
            .filter(|w| !w.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_764_000_000.0;

    fn decide() -> Refusal {
        Refusal::Forbidden("Decide".into())
    }

    #[test]
    fn the_first_refusal_is_recorded_at_once_and_the_rest_of_its_window_in_one_record() {
        let r = Refusals::default();
        let first = r.note("agent", decide(), T0).expect("recorded at once");
        assert_eq!((first.total(), first.forbidden["Decide"]), (1, 1));
        for i in 0..2999 {
            let what = if i % 3 == 0 {
                Refusal::RateLimited
            } else {
                decide()
            };
            assert_eq!(r.note("agent", what, T0 + f64::from(i) / 100.0), None);
        }
        assert!(r.due(T0 + WINDOW_SECS - 1.0).is_empty(), "not over yet");
        let records = r.due(T0 + WINDOW_SECS);
        assert_eq!(records.len(), 1);
        let w = &records[0];
        assert_eq!((w.actor.as_str(), w.total()), ("agent", 2999));
        assert_eq!((w.rate_limited, w.forbidden["Decide"]), (1000, 1999));
        assert_eq!((w.from, w.to), (T0, T0 + 29.98));
        // The next refusal opens a new window, on the record at once again.
        assert!(r.note("agent", decide(), T0 + 61.0).is_some());
    }

    #[test]
    fn each_token_has_its_own_window_and_a_quiet_window_writes_nothing_more() {
        let r = Refusals::default();
        assert!(r.note("agent", decide(), T0).is_some());
        assert!(r.note("approver:alice", decide(), T0 + 1.0).is_some());
        assert!(r.note("agent", Refusal::RateLimited, T0 + 2.0).is_none());
        let due = r.due(T0 + 100.0);
        assert_eq!(
            due.len(),
            1,
            "alice's window counted only its first refusal"
        );
        assert_eq!(due[0].actor, "agent");
        assert!(r.drain().is_empty());
    }

    #[test]
    fn what_is_still_counted_is_written_at_shutdown() {
        let r = Refusals::default();
        r.note("agent", decide(), T0);
        r.note("agent", decide(), T0 + 1.0);
        let left = r.drain();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].total(), 1);
    }
}
