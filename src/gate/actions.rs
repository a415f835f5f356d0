//! The bounded actions' track records, beside the fix patterns' ledger (`guardian trust`,
//! `GET /v1/trust/actions`): what each action did, read from the audit trail records it writes
//! (the restart's) or from the flag actions' table written with theirs (flag_off's), so nothing
//! can edit it.
//!
//! A record, not a trust level: an action's bounds are the operator's configuration
//! (`[daemon.health.restart]`, `[daemon.flag_off]`), and this is what they judge it by. Neither
//! action can make things worse than what triggered it (a restart runs on an app already
//! down; a flag turned off that does not help is followed by the revert that would have come
//! anyway), so a setback is told to a person, and does not switch the action off.

use serde::{Deserialize, Serialize};

use crate::change::EventKind;
use crate::daemon::health::decide::Note;
use crate::store::{LatestRecord, Store, StoreError};

/// One bounded action's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionTrack {
    /// The action: `restart` (`[daemon.health.restart]`) or `flag_off` (`[daemon.flag_off]`).
    pub action: String,
    /// Times it was run.
    pub attempts: u64,
    /// Runs after which the app was seen healthy in time.
    pub verified: u64,
    /// Times a person was told it failed, did not help, was cut short by a stop, or (a
    /// restart) that the hour's runs were spent.
    pub escalated: u64,
    /// Times shadow mode decided on it and ran nothing.
    pub shadow: u64,
    /// Requests refused (flag_off: outside the allow-list, the limits, or the role's rights).
    #[serde(default)]
    pub refused: u64,
    /// The latest of those escalations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_setback: Option<Setback>,
}

/// An escalation of the action, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Setback {
    pub at: f64,
    /// The restart's `command_failed`, `not_verified` or `rate_limited`; flag_off's `failed`,
    /// `did_not_help` or `cut_short` (text: a later version may add one).
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

/// Every bounded action's record, in a fixed order, whether or not it is configured: a
/// record of nothing says so too.
pub fn ledger(store: &Store) -> Result<Vec<ActionTrack>, StoreError> {
    let (escalated, latest) = store.restart_setbacks()?;
    let restart = ActionTrack {
        action: "restart".to_owned(),
        attempts: store.count_events(EventKind::RestartStarted)?,
        verified: store.count_events(EventKind::RestartVerified)?,
        escalated,
        shadow: store.count_events(EventKind::RestartShadow)?,
        refused: 0,
        last_setback: latest.map(Setback::read),
    };
    let t = store.flag_tally()?;
    let flag_off = ActionTrack {
        action: "flag_off".to_owned(),
        attempts: t.verified + t.did_not_help + t.failed + t.done + t.cut_short + t.running,
        verified: t.verified,
        escalated: t.did_not_help + t.failed + t.cut_short,
        shadow: t.shadow,
        refused: t.refused,
        last_setback: store.latest_flag_setback()?.map(|a| Setback {
            at: a.ended_at.unwrap_or(a.started_at),
            reason: a.outcome.as_str().to_owned(),
            why: match a.note {
                Some(note) => format!("flag {}: {note}", a.flag),
                None => format!("flag {}", a.flag),
            },
        }),
    };
    Ok(vec![restart, flag_off])
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
                refused: 0,
                last_setback: Some(Setback {
                    at: T0 + 340.0,
                    reason: "not_verified".into(),
                    why: why.into(),
                }),
            }
        );
    }

    #[test]
    fn the_flag_offs_record_counts_how_each_attempt_ended() {
        use crate::daemon::supervisor::FlagOutcome;
        use crate::store::NewFlagAction;

        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("g.db")).unwrap();
        let mut attempt = |outcome: FlagOutcome, note: &str, at: f64| {
            let new = NewFlagAction {
                flag: "new-checkout",
                change_id: None,
                requested_by: "guardian",
                reason: "errors rose",
                outcome: if matches!(outcome, FlagOutcome::Shadow | FlagOutcome::Refused) {
                    outcome
                } else {
                    FlagOutcome::Running
                },
                note,
            };
            let id = store.flag_action_started(&new, at).unwrap();
            if !matches!(outcome, FlagOutcome::Shadow | FlagOutcome::Refused) {
                store
                    .flag_action_ended(&id, outcome, note, &serde_json::Value::Null, at + 30.0)
                    .unwrap();
            }
        };
        attempt(FlagOutcome::Verified, "the service recovered", T0);
        let why = "errors stayed at 8% after the flag was off";
        attempt(FlagOutcome::DidNotHelp, why, T0 + 600.0);
        attempt(FlagOutcome::Verified, "the service recovered", T0 + 1200.0);
        attempt(FlagOutcome::Shadow, "shadow mode", T0 + 1800.0);
        attempt(FlagOutcome::Refused, "not on the allow-list", T0 + 2400.0);
        let flag_off = ledger(&store).unwrap().remove(1);
        assert_eq!(
            flag_off,
            ActionTrack {
                action: "flag_off".into(),
                attempts: 3,
                verified: 2,
                escalated: 1,
                shadow: 1,
                refused: 1,
                last_setback: Some(Setback {
                    at: T0 + 630.0,
                    reason: "did_not_help".into(),
                    why: format!("flag new-checkout: {why}"),
                }),
            }
        );
    }
}
