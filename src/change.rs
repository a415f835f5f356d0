//! The change model: who made a change ([`ChangeKind`]) and where it stands ([`ChangeState`]),
//! with the one rule of how it may move ([`ChangeState::may_become`]) and which states are
//! decisions ([`ChangeState::is_final`]). Pure: the store keeps changes in these states and
//! refuses a move the rule refuses (it re-exports both types, so callers import them there).

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
    /// The watch ended without enough evidence either way.
    Inconclusive = "inconclusive", final = true;
    /// A later change landed before this one was decided.
    Superseded = "superseded", final = true;
    /// The watch could not finish (e.g. the daemon was down through the window).
    Interrupted = "interrupted", final = true;
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
            Watching => !matches!(next, RollingBack | Verifying | RolledBack | Escalated),
            Regressed => matches!(next, Regressed | RollingBack | Escalated),
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
}
