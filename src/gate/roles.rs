//! Who may do what through the API and the CLI. One table, deny by default: the agent's token
//! can propose and read (and ask for a feature flag to be turned off, within
//! `[daemon.flag_off]`), never approve, never touch what decides whether it is trusted.

use serde::Serialize;

/// Who a credential belongs to. The role comes from which token was presented, never from
/// anything in the request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "role", content = "name", rename_all = "snake_case")]
pub enum Role {
    /// The coding agent: semi-trusted.
    Agent,
    /// A person who may approve or reject proposals, by name (the name goes into the audit
    /// trail).
    Approver(String),
    /// The operator: everything an approver may do, plus deploy notifications, pushed
    /// observations and the pause switch.
    Admin,
    /// A person who may look and nothing else (`[daemon] viewers`), by name: the on-call
    /// engineer's colleague reading the status page during an incident.
    Viewer(String),
}

/// Everything the API and the CLI can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read changes, proposals, the trust ledger and status.
    Read,
    /// Submit a proposal.
    Propose,
    /// Approve or reject a proposal.
    Decide,
    /// Tell guardian a change was deployed (it will be watched and may be reverted).
    Notify,
    /// Push traffic observations.
    Observe,
    /// Stop or resume unattended deploys.
    Pause,
    /// Ask for a feature flag to be turned off (`[daemon.flag_off]`: its allow-list, limits
    /// and `roles` decide further).
    FlagOff,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::Read,
        Action::Propose,
        Action::Decide,
        Action::Notify,
        Action::Observe,
        Action::Pause,
        Action::FlagOff,
    ];
}

impl Role {
    /// Whether this role may do `action`. There is no action that edits the policy or the
    /// trust ledger: the policy is a file the daemon only reads, and the ledger is computed
    /// from the record, so neither has a door to guard.
    pub fn may(&self, action: Action) -> bool {
        match self {
            Role::Admin => true,
            Role::Approver(_) => {
                matches!(action, Action::Read | Action::Decide | Action::FlagOff)
            }
            Role::Agent => matches!(action, Action::Read | Action::Propose | Action::FlagOff),
            Role::Viewer(_) => action == Action::Read,
        }
    }

    /// The actor as the audit trail names it.
    pub fn actor(&self) -> String {
        match self {
            Role::Agent => "agent".to_owned(),
            Role::Approver(name) => format!("approver:{name}"),
            Role::Admin => "admin".to_owned(),
            Role::Viewer(name) => format!("viewer:{name}"),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.actor())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_may_propose_read_and_ask_for_a_flag_off_and_nothing_else() {
        let allowed: Vec<Action> = Action::ALL
            .into_iter()
            .filter(|a| Role::Agent.may(*a))
            .collect();
        // A flag_off is bounded further by [daemon.flag_off]: its allow-list, limits and roles.
        assert_eq!(allowed, [Action::Read, Action::Propose, Action::FlagOff]);
    }

    #[test]
    fn an_approver_decides_but_does_not_deploy_or_pause() {
        let alice = Role::Approver("alice".into());
        assert!(alice.may(Action::Decide) && alice.may(Action::Read));
        assert!(alice.may(Action::FlagOff), "bounded by [daemon.flag_off]");
        for a in [
            Action::Propose,
            Action::Notify,
            Action::Observe,
            Action::Pause,
        ] {
            assert!(!alice.may(a), "{a:?}");
        }
        assert_eq!(alice.actor(), "approver:alice");
    }

    #[test]
    fn a_viewer_reads_and_does_nothing_else() {
        let bob = Role::Viewer("bob".into());
        let allowed: Vec<Action> = Action::ALL.into_iter().filter(|a| bob.may(*a)).collect();
        assert_eq!(allowed, [Action::Read]);
        assert_eq!(bob.actor(), "viewer:bob");
    }

    #[test]
    fn the_admin_may_do_everything() {
        assert!(Action::ALL.into_iter().all(|a| Role::Admin.may(a)));
    }
}
