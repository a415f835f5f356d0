//! The bounded actions' track records, beside the fix patterns' ledger (`guardian trust`,
//! `GET /v1/trust/actions`): what each action did, read from the audit trail records it writes
//! and stored nowhere else, so nothing can edit it. A record, not a trust level: an action's
//! bounds are the operator's configuration (`[daemon.health.restart]`), and this is what they
//! judge it by.

use serde::{Deserialize, Serialize};

use crate::change::EventKind;
use crate::daemon::health::decide::Note;
use crate::store::{LatestRecord, Store, StoreError};

/// One bounded action's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionTrack {
    /// The action: `restart` (`[daemon.health.restart]`).
    pub action: String,
    /// Times it was run.
    pub attempts: u64,
    /// Runs after which the app was seen healthy in time.
    pub verified: u64,
    /// Times a person was told it failed, did not help, or the hour's runs were spent.
    pub escalated: u64,
    /// Times shadow mode decided on it and ran nothing.
    pub shadow: u64,
    /// The latest of those escalations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_setback: Option<Setback>,
}

/// An escalation of the action, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Setback {
    pub at: f64,
    /// `command_failed`, `not_verified` or `rate_limited` (text: a later version may add one).
    pub reason: String,
    /// In the words the person was told.
    pub why: String,
}

impl Setback {
    fn read(record: LatestRecord) -> Setback {
        match serde_json::from_value::<Note>(record.detail) {
            Ok(Note::Escalated { reason, why, .. }) => Setback {
                at: record.at,
                reason: reason.as_str().to_owned(),
                why,
            },
            Ok(_) => Setback {
                at: record.at,
                reason: "unknown".to_owned(),
                why: "the record reads as another kind's".to_owned(),
            },
            Err(e) => Setback {
                at: record.at,
                reason: "unknown".to_owned(),
                why: format!("the record cannot be read: {e}"),
            },
        }
    }
}

/// Every bounded action's record, in a fixed order (one today), whether or not it is
/// configured: a record of nothing says so too.
pub fn ledger(store: &Store) -> Result<Vec<ActionTrack>, StoreError> {
    let (escalated, latest) = store.restart_setbacks()?;
    Ok(vec![ActionTrack {
        action: "restart".to_owned(),
        attempts: store.count_events(EventKind::RestartStarted)?,
        verified: store.count_events(EventKind::RestartVerified)?,
        escalated,
        shadow: store.count_events(EventKind::RestartShadow)?,
        last_setback: latest.map(Setback::read),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::health::decide::Escalation;

    const T0: f64 = 1_764_000_000.0;

    /// Records `note` as the engine does: its kind, its fields and the check's url.
    fn record(store: &mut Store, note: &Note, at: f64) {
        let mut detail = serde_json::to_value(note).unwrap();
        detail["url"] = "http://127.0.0.1:8080/healthz".into();
        store
            .audit("guardian", note.kind(), Some("health"), None, &detail, at)
            .unwrap();
    }

    fn restart(attempt: &str, shadow: bool) -> Note {
        Note::Restart {
            attempt: attempt.into(),
            shadow,
            failures: 3,
            why: "answered 503".into(),
            restarts_last_hour: 0,
        }
    }

    fn escalated(reason: Escalation, why: &str) -> Note {
        Note::Escalated {
            attempt: None,
            reason,
            shadow: false,
            why: why.into(),
            restarts_last_hour: 1,
            max_per_hour: Some(3),
        }
    }

    #[test]
    fn a_record_of_nothing_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("g.db")).unwrap();
        let restart = &ledger(&store).unwrap()[0];
        assert_eq!(
            (restart.action.as_str(), restart.attempts, restart.escalated),
            ("restart", 0, 0)
        );
        assert_eq!(restart.last_setback, None);
    }

    #[test]
    fn the_restarts_record_counts_its_runs_and_its_own_setbacks_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("g.db")).unwrap();
        // Before a restart was configured: the failure alone was told, no setback of it.
        let told = escalated(Escalation::NoAction, "3 health checks failed in a row");
        record(&mut store, &told, T0);
        record(&mut store, &restart("rst_1", false), T0 + 100.0);
        let verified = Note::Verified {
            attempt: "rst_1".into(),
            after_secs: 4.0,
        };
        record(&mut store, &verified, T0 + 110.0);
        record(&mut store, &restart("rst_2", false), T0 + 300.0);
        let why = "the health check did not pass within 30 s of the restart";
        record(
            &mut store,
            &escalated(Escalation::NotVerified, why),
            T0 + 340.0,
        );
        record(&mut store, &restart("rst_3", true), T0 + 900.0);
        record(&mut store, &told, T0 + 1000.0);
        let restart = ledger(&store).unwrap().remove(0);
        assert_eq!(
            restart,
            ActionTrack {
                action: "restart".into(),
                attempts: 2,
                verified: 1,
                escalated: 1,
                shadow: 1,
                last_setback: Some(Setback {
                    at: T0 + 340.0,
                    reason: "not_verified".into(),
                    why: why.into(),
                }),
            }
        );
    }
}
