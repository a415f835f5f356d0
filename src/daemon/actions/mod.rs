//! Remediation actions: what guardian does about a change that made things worse, once the
//! supervisor decided to act: [`revert::Revert`] (git revert, push, redeploy hook) and
//! [`flag_off::FlagOff`] (the change's feature flag turned off, tried first when the change
//! declares one). Adding one (restart a process) is a file here implementing [`Action`], a
//! config section, and a line in [`from_settings`]; the supervisor's decisions (remediate,
//! check recovery, escalate) stay the same whatever the action.

pub mod flag_off;
pub mod revert;

use std::sync::Arc;

use crate::config::DaemonSettings;
use crate::daemon::supervisor::{Remediation, Remedied};
use crate::store::EventKind;

pub trait Action: Send + Sync {
    /// The event kind its account is stored under on the change's record (and its name in
    /// the logs).
    fn kind(&self) -> EventKind;

    /// Runs it to the end. Blocking (seconds to minutes, or until a timeout): the daemon runs
    /// it on a thread of its own and hands the outcome back to the supervisor.
    fn run(&self, job: &Remediation) -> Outcome;
}

/// How an action ended.
pub struct Outcome {
    /// What the supervisor needs to decide what comes next.
    pub remedied: Remedied,
    /// The action's own account (each step, what ran and how it ended), for the change's
    /// record and the post-mortem.
    pub record: serde_json::Value,
}

/// The remediation the configuration names, if any (`None`: watch and record only).
pub fn from_settings(settings: &DaemonSettings) -> Option<Arc<dyn Action>> {
    let rollback = settings.rollback.clone()?;
    Some(Arc::new(revert::Revert(rollback)))
}

/// What turns a flag off, when `[daemon.flag_off]` is set.
pub fn flag_off_from_settings(settings: &DaemonSettings) -> Option<Arc<flag_off::FlagOff>> {
    let flag_off = settings.flag_off.clone()?;
    Some(Arc::new(flag_off::FlagOff::new(flag_off)))
}
