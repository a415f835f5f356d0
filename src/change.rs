//! The change model: who made a change ([`ChangeKind`]) and where it stands ([`ChangeState`]),
//! with the one rule of how it may move ([`ChangeState::may_become`]) and which states are
//! decisions ([`ChangeState::is_final`]); and what guardian puts on the record about changes,
//! proposals and itself ([`EventKind`]), read back as a [`StoredKind`]. Pure: the store keeps
//! changes in these states and refuses a move the rule refuses (it re-exports these types, so
//! callers import them there).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Who made a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Ai,
    Human,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Ai => "ai",
            ChangeKind::Human => "human",
        }
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChangeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ai" => Ok(ChangeKind::Ai),
            "human" => Ok(ChangeKind::Human),
            _ => Err(format!(
                "unknown change kind {s:?}: expected \"ai\" or \"human\""
            )),
        }
    }
}

/// Declares `ChangeState` from one line per state, so that adding a state (e.g. the rollback
/// states) is one line here: its variant, the text stored and serialized, and whether it is
/// final. The text must be the snake_case of the variant (serde uses that; a test checks).
macro_rules! change_states {
    ($($(#[$meta:meta])* $variant:ident = $text:literal, final = $final:literal;)*) => {
        /// Where a change stands. Stored as text; serialized as the same text.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ChangeState {
            $($(#[$meta])* $variant,)*
        }

        impl ChangeState {
            /// Every state, in declaration order.
            pub const ALL: &'static [ChangeState] = &[$(ChangeState::$variant,)*];

            /// The text stored in the database and used in JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ChangeState::$variant => $text,)*
                }
            }

            /// A final state is a decision: the change never leaves it.
            pub fn is_final(self) -> bool {
                match self {
                    $(ChangeState::$variant => $final,)*
                }
            }
        }
    };
}

change_states! {
    /// Guardian is collecting evidence.
    Watching = "watching", final = false;
    /// The watch ended and the evidence bounds any harm below the limits.
    Healthy = "healthy", final = true;
    /// The change made things worse (and, when rollback is configured, is about to be reverted).
    Regressed = "regressed", final = false;
    /// The watch found nothing worse, but the issue the change claims to fix went on firing:
    /// the fix did not fix it.
    Ineffective = "ineffective", final = true;
    /// The watch ended without enough evidence either way.
    Inconclusive = "inconclusive", final = true;
    /// A later change landed before this one was decided.
    Superseded = "superseded", final = true;
    /// The watch could not finish (e.g. the daemon was down through the window).
    Interrupted = "interrupted", final = true;
    /// Turning the change's feature flag off (`[daemon.flag_off]`), then checking that the
    /// service is back to its baseline; reverted next if that did not help.
    FlaggingOff = "flagging_off", final = false;
    /// Mitigated by turning its feature flag off: the service is back to its baseline, and the
    /// change's code is still deployed, behind the flag.
    FlaggedOff = "flagged_off", final = true;
    /// Reverting the change and running the redeploy hook.
    RollingBack = "rolling_back", final = false;
    /// Reverted and redeployed; checking that the service is back to its baseline.
    Verifying = "verifying", final = false;
    /// Reverted, redeployed, and the service is back to its baseline.
    RolledBack = "rolled_back", final = true;
    /// Guardian could not finish on its own (a revert conflict, a failed hook, a rollback that
    /// did not help, a restart mid-rollback): a person must look.
    Escalated = "escalated", final = true;
}

impl ChangeState {
    /// Whether a change in this state may move to `next`. The one place transitions are ruled:
    /// a verdict is reached only from watching, a rollback only after a regression, and a final
    /// state is never left. A state may "move" to itself to record a note or new evidence.
    pub fn may_become(self, next: ChangeState) -> bool {
        use ChangeState::*;
        match self {
            Watching => !matches!(
                next,
                FlaggingOff | FlaggedOff | RollingBack | Verifying | RolledBack | Escalated
            ),
            Regressed => matches!(next, Regressed | FlaggingOff | RollingBack | Escalated),
            FlaggingOff => matches!(next, FlaggingOff | FlaggedOff | RollingBack | Escalated),
            RollingBack => matches!(next, RollingBack | Verifying | Escalated),
            Verifying => matches!(next, Verifying | RolledBack | Escalated),
            _ => false,
        }
    }
}

impl fmt::Display for ChangeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChangeState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ChangeState::ALL
            .iter()
            .copied()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown change state {s:?}"))
    }
}

/// Declares `EventKind` from one line per kind: its variant and the text stored in the
/// `events.kind` column. The text is part of each record's hash (`audit::record_hash`), so it
/// never changes once shipped: `guardian audit verify` checks the bytes as stored.
macro_rules! event_kinds {
    ($($(#[$meta:meta])* $variant:ident = $text:literal;)*) => {
        /// What an event on the record is: every kind guardian writes, and only those
        /// (`Store::record_event` and `Store::audit` take nothing else).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $($(#[$meta])* $variant,)*
        }

        impl EventKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            /// The text stored in the record (and hashed into it).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $text,)*
                }
            }
        }
    };
}

event_kinds! {
    /// A change guardian was told of; it is being watched.
    ChangeCreated = "change_created";
    /// A change moved from one state to another (the decision, a rollback's progress).
    StateChanged = "state_changed";
    /// What the rollback did: a `RollbackReport`, step by step.
    Rollback = "rollback";
    /// The recovery check's verdict and evidence after a rollback.
    RecoveryCheck = "recovery_check";
    /// What shadow mode would have done about a regression, and did not.
    ShadowRollback = "shadow_rollback";
    /// An email about a change went into the outbox.
    EmailQueued = "email_queued";
    /// The mail server accepted an email about a change.
    EmailSent = "email_sent";
    /// A change's outcome was accepted by a notification target (`[[daemon.notify]]`).
    NotificationSent = "notification_sent";
    /// A policy file was loaded (at start, or changed on reload): its hash.
    PolicyLoaded = "policy_loaded";
    /// Unattended deploys were paused, and by whom.
    GatePaused = "gate_paused";
    /// Unattended deploys were resumed.
    GateResumed = "gate_resumed";
    /// Requests refused for a token in a window, counted (`daemon::refusals`).
    AccessRefused = "access_refused";
    /// A signed checkpoint of the audit chain as it stood.
    AuditCheckpoint = "audit_checkpoint";
    /// A proposal as submitted.
    ProposalSubmitted = "proposal_submitted";
    /// The policy's decision on a proposal.
    PolicyDecision = "policy_decision";
    /// A person approved a proposal.
    ProposalApproved = "proposal_approved";
    /// A person rejected a proposal.
    ProposalRejected = "proposal_rejected";
    /// Guardian began deploying a proposal.
    ProposalDeploying = "proposal_deploying";
    /// A proposal was deployed: its `DeployReport`.
    ProposalDeployed = "proposal_deployed";
    /// Deploying a proposal failed: its `DeployReport`.
    ProposalDeployFailed = "proposal_deploy_failed";
    /// Shadow mode: a proposal decided and recorded, never deployed.
    ProposalShadow = "proposal_shadow";
    /// A proposal was linked to the change that carries it out.
    ProposalLinked = "proposal_linked";
    /// A redeploy hook the last run of guardian left running was stopped at start.
    HookStopped = "hook_stopped";
    /// Sentry said an issue was created or changed state (a verified webhook delivery).
    SentryIssue = "sentry_issue";
    /// guardian started the agent on a Sentry issue (`[daemon.agent]`): the run, the issue, why.
    AgentStarted = "agent_started";
    /// An agent run ended: how (exit status, timed out, cut short by a restart), how long it
    /// took, the tail of its output, the proposals it made.
    AgentFinished = "agent_finished";
    /// guardian started afresh: the saved traffic history and any watch in progress were not
    /// used (the detector's settings changed, or another version saved them), and why.
    HistoryDiscarded = "history_discarded";
    /// The app's health check failed `failures` times in a row (`[daemon.health]`): once per
    /// run of failures, with the last probe's error.
    HealthFailed = "health_failed";
    /// guardian ran the restart command (`[daemon.health.restart]`): the attempt, why, how many
    /// restarts the hour had seen.
    RestartStarted = "restart_started";
    /// The restart command ended: its exit status or timeout, duration, the tail of its output.
    RestartFinished = "restart_finished";
    /// The health check passed after a restart, within `verify_secs`.
    RestartVerified = "restart_verified";
    /// A person was told to act (the restart failed or did not help, the hour's restarts were
    /// spent, or none is configured); guardian restarts nothing until the app is healthy again.
    RestartEscalated = "restart_escalated";
    /// Shadow mode: the restart guardian would have run, and did not.
    RestartShadow = "restart_shadow";
    /// The health check passed again after failing, without a verified restart (on its own, or
    /// by a person's hand).
    HealthRecovered = "health_recovered";
    /// A feature flag turned off (`[daemon.flag_off]`), for a regressed change or at a role's
    /// request: the flag, who asked, what was done and how it ended.
    FlagOff = "flag_off";
    /// What shadow mode would have done with a feature flag, and did not.
    ShadowFlagOff = "shadow_flag_off";
    /// A flag not turned off: outside the allow-list, past the rate limit or the cool-down, a
    /// role without the right, or flag_off not configured; and why.
    FlagOffRefused = "flag_off_refused";
    /// A notification named the canary running the change (`guardian notify --canary`): its
    /// values, and from when (a `Rollout`); named again, the rollout widened.
    CanaryRollout = "canary_rollout";
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event's kind as read back from the record: one guardian writes, or one this version does
/// not know (written by a later version, or by hand), kept as its text rather than refused, so
/// that the rest of the record still reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StoredKind {
    Known(EventKind),
    Unknown(String),
}

impl StoredKind {
    /// The kind stored as `text`.
    pub fn read(text: &str) -> StoredKind {
        EventKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == text)
            .map_or_else(|| StoredKind::Unknown(text.to_owned()), StoredKind::Known)
    }

    /// The kind, when this version knows it.
    pub fn known(&self) -> Option<EventKind> {
        match self {
            StoredKind::Known(kind) => Some(*kind),
            StoredKind::Unknown(_) => None,
        }
    }

    /// The text as stored.
    pub fn as_str(&self) -> &str {
        match self {
            StoredKind::Known(kind) => kind.as_str(),
            StoredKind::Unknown(text) => text,
        }
    }
}

impl PartialEq<EventKind> for StoredKind {
    fn eq(&self, other: &EventKind) -> bool {
        self.known() == Some(*other)
    }
}

impl From<EventKind> for StoredKind {
    fn from(kind: EventKind) -> StoredKind {
        StoredKind::Known(kind)
    }
}

impl fmt::Display for StoredKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As the text stored, known or not.
impl Serialize for StoredKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn states_and_kinds_read_back_as_they_are_written() {
        for state in ChangeState::ALL {
            assert_eq!(state.as_str().parse::<ChangeState>().unwrap(), *state);
            assert_eq!(state.to_string(), state.as_str());
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                Value::String(state.as_str().to_string()),
                "the text given to change_states! must be serde's snake_case"
            );
            let back: ChangeState =
                serde_json::from_value(Value::String(state.as_str().into())).unwrap();
            assert_eq!(back, *state);
        }
        assert!(ChangeState::Watching.may_become(ChangeState::Healthy));
        assert!(!ChangeState::Watching.is_final());
        assert!("rolled_backwards".parse::<ChangeState>().is_err());
        assert!(ChangeState::Regressed.may_become(ChangeState::RollingBack));
        assert!(!ChangeState::Regressed.may_become(ChangeState::Healthy));
        assert!(!ChangeState::RolledBack.may_become(ChangeState::RollingBack));
        assert!(!ChangeState::Watching.may_become(ChangeState::RolledBack));
        for kind in [ChangeKind::Ai, ChangeKind::Human] {
            assert_eq!(kind.as_str().parse::<ChangeKind>().unwrap(), kind);
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                Value::String(kind.to_string())
            );
        }
    }

    /// The text of each kind is in every record's hash: these are the texts guardian has
    /// always written, and a kind renamed here fails this test before it breaks
    /// `guardian audit verify` on the records already written.
    #[test]
    fn each_event_kind_is_stored_as_the_text_it_has_always_been() {
        let texts: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        expect_test::expect![[r#"
            change_created
            state_changed
            rollback
            recovery_check
            shadow_rollback
            email_queued
            email_sent
            notification_sent
            policy_loaded
            gate_paused
            gate_resumed
            access_refused
            audit_checkpoint
            proposal_submitted
            policy_decision
            proposal_approved
            proposal_rejected
            proposal_deploying
            proposal_deployed
            proposal_deploy_failed
            proposal_shadow
            proposal_linked
            hook_stopped
            sentry_issue
            agent_started
            agent_finished
            history_discarded
            health_failed
            restart_started
            restart_finished
            restart_verified
            restart_escalated
            restart_shadow
            health_recovered
            flag_off
            shadow_flag_off
            flag_off_refused
            canary_rollout"#]]
        .assert_eq(&texts.join("\n"));
        for kind in EventKind::ALL {
            assert_eq!(
                StoredKind::read(kind.as_str()),
                *kind,
                "reads back as itself"
            );
            assert_eq!(kind.to_string(), kind.as_str());
        }
    }

    #[test]
    fn a_kind_this_version_does_not_know_reads_as_its_text() {
        let later = StoredKind::read("canary_promoted");
        assert_eq!(later, StoredKind::Unknown("canary_promoted".into()));
        assert_eq!(later.known(), None);
        assert_eq!(later.as_str(), "canary_promoted");
        assert_ne!(later, EventKind::Rollback);
        assert_eq!(
            serde_json::to_value(&later).unwrap(),
            Value::String("canary_promoted".into())
        );
        let known = StoredKind::read("rollback");
        assert_eq!(known, EventKind::Rollback);
        assert_eq!(
            serde_json::to_value(&known).unwrap(),
            Value::String("rollback".into())
        );
    }
}
