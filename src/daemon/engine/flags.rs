//! The engine's side of flag_off (`[daemon.flag_off]`): the supervisor's `FlagOff` effects
//! kept as `flag_actions` records, a role's request through the API (`POST
//! /v1/actions/flag_off`) checked, recorded and left as a job for the owner, its end recorded
//! and emailed, and what a stop cut short handed over, never redone.

use serde::{Deserialize, Serialize};

use super::{Engine, EngineError};
use crate::config::FlagRequester;
use crate::daemon::actions::flag_off::FlagOffReport;
use crate::daemon::flag_limits::Refusal;
use crate::daemon::supervisor::{FlagOutcome, Phase};
use crate::gate::roles::Role;
use crate::store::{NewFlagAction, Store};

/// The longest reason a request may give.
const MAX_REASON_CHARS: usize = 500;

/// A flag to turn off at a role's request, for the owner to run as a job.
#[derive(Clone, Debug)]
pub struct FlagJob {
    /// The `flag_actions` record.
    pub id: String,
    pub flag: String,
    pub requested_by: String,
    pub reason: String,
}

/// `POST /v1/actions/flag_off`'s body.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagOffRequest {
    pub flag: String,
    /// Why, in a line: it goes on the audit trail and into the email.
    pub reason: String,
}

/// What became of a request that was not refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlagOffAnswer {
    /// The `flag_actions` record (`guardian status` shows how it ended).
    pub id: String,
    pub flag: String,
    /// `running` (turned off in a job now; the email says how it went) or `shadow`.
    pub outcome: FlagOutcome,
    pub message: String,
}

/// A request refused, with why.
#[derive(Debug)]
pub struct FlagRefused(pub Refusal);

impl Engine {
    /// A role asks for `request.flag` to be turned off. Every attempt, refused or not, is on
    /// the audit trail; a refused one changes nothing else.
    pub fn request_flag_off(
        &mut self,
        role: &Role,
        request: &FlagOffRequest,
        now: f64,
    ) -> Result<Result<FlagOffAnswer, FlagRefused>, EngineError> {
        crate::config::check_flag_name(&request.flag)
            .map_err(|e| EngineError::BadRequest(format!("\"flag\" {e}")))?;
        let reason = request.reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(EngineError::BadRequest(format!(
                "\"reason\" must say why in 1 to {MAX_REASON_CHARS} characters"
            )));
        }
        super::gate::one_line("reason", reason).map_err(EngineError::BadRequest)?;
        let actor = role.actor();
        // Only the operator may change what a watched change is judged on.
        let watched = match (self.supervisor.phase(), role) {
            (_, Role::Admin) => None,
            (Phase::Watching(c), _) => Some(c.id.clone()),
            _ => None,
        };
        let decided = match (self.role_may_ask(role), watched) {
            (Err(refusal), _) => Err(refusal),
            (Ok(()), Some(change)) => Err(Refusal::Watching(change)),
            (Ok(()), None) => self
                .supervisor
                .request_flag_off(&request.flag, now, &self.settings),
        };
        let shadow = match decided {
            Err(refusal) => {
                self.store.flag_action_started(
                    &NewFlagAction {
                        flag: &request.flag,
                        change_id: None,
                        requested_by: &actor,
                        reason,
                        outcome: FlagOutcome::Refused,
                        note: &refusal.to_string(),
                    },
                    now,
                )?;
                tracing::warn!(
                    "flag_off of {} asked by {actor} refused: {refusal}",
                    request.flag
                );
                return Ok(Err(FlagRefused(refusal)));
            }
            Ok(shadow) => shadow,
        };
        let (outcome, message) = if shadow {
            (
                FlagOutcome::Shadow,
                format!(
                    "shadow mode: flag {} would have been turned off; nothing was done",
                    request.flag
                ),
            )
        } else {
            (
                FlagOutcome::Running,
                format!(
                    "flag {} is being turned off; the outcome goes on the audit trail and to the \
                     on-call email",
                    request.flag
                ),
            )
        };
        let id = self.store.flag_action_started(
            &NewFlagAction {
                flag: &request.flag,
                change_id: None,
                requested_by: &actor,
                reason,
                outcome,
                note: &message,
            },
            now,
        )?;
        if shadow {
            self.flag_email(&id, now)?;
        } else {
            self.flag_jobs.push(FlagJob {
                id: id.clone(),
                flag: request.flag.clone(),
                requested_by: actor,
                reason: reason.to_owned(),
            });
        }
        Ok(Ok(FlagOffAnswer {
            id,
            flag: request.flag.clone(),
            outcome,
            message,
        }))
    }

    /// Whether `role` may ask for a flag to be turned off (`[daemon.flag_off] roles`; the
    /// operator always may).
    fn role_may_ask(&self, role: &Role) -> Result<(), Refusal> {
        let Some(settings) = &self.settings.flag_off else {
            return Err(Refusal::NotConfigured);
        };
        let (needed, name) = match role {
            Role::Admin => return Ok(()),
            Role::Agent => (FlagRequester::Agent, "agent"),
            Role::Approver(_) => (FlagRequester::Approver, "approver"),
            Role::Viewer(_) => {
                return Err(Refusal::Role(format!(
                    "the {role} token may only read: it may not turn flags off"
                )))
            }
        };
        if settings.requesters.contains(&needed) {
            Ok(())
        } else {
            Err(Refusal::Role(format!(
                "the {role} token may not turn flags off: [daemon.flag_off] roles does not \
                 include \"{name}\""
            )))
        }
    }

    /// The requested flag_offs to run, with the action that does it; taken once.
    pub fn flag_jobs_due(
        &mut self,
    ) -> Vec<(
        FlagJob,
        std::sync::Arc<crate::daemon::actions::flag_off::FlagOff>,
    )> {
        let Some(action) = self.flag_action.clone() else {
            // A reload removed the section in between: the records say it never ran.
            for job in std::mem::take(&mut self.flag_jobs) {
                tracing::error!("flag_off of {} not run: no longer configured", job.flag);
            }
            return Vec::new();
        };
        std::mem::take(&mut self.flag_jobs)
            .into_iter()
            .map(|job| (job, action.clone()))
            .collect()
    }

    /// A requested flag_off's job ended: recorded, and emailed.
    pub fn flag_job_finished(
        &mut self,
        job: &FlagJob,
        report: &FlagOffReport,
        now: f64,
    ) -> Result<(), EngineError> {
        let (outcome, note) = match (&report.done, &report.error) {
            (Some(done), None) => (FlagOutcome::Done, format!("turned off: {done}")),
            (_, Some(error)) => (FlagOutcome::Failed, error.clone()),
            (None, None) => (FlagOutcome::Failed, "nothing was done".to_owned()),
        };
        let account = serde_json::to_value(report).unwrap_or_default();
        self.store
            .flag_action_ended(&job.id, outcome, &note, &account, now)?;
        self.flag_email(&job.id, now)
    }

    /// The email about a requested flag_off as it stands (shadow, done or failed).
    fn flag_email(&mut self, id: &str, now: f64) -> Result<(), EngineError> {
        let Some(mail) = self.settings.mail.clone() else {
            return Ok(());
        };
        let Some(action) = self
            .store
            .recent_flag_actions(200)?
            .into_iter()
            .find(|a| a.id == id)
        else {
            return Ok(());
        };
        let mut email = crate::report::render_flag_request(&self.settings.service, &action);
        email.text_body = self.with_checkpoint(&email.text_body, now)?;
        crate::report::enqueue(&mut self.store, &mail, None, &email, now)?;
        Ok(())
    }

    /// The supervisor's record of a change's flag_off.
    pub(super) fn record_flag_off(
        &mut self,
        change_id: &str,
        flag: &str,
        outcome: FlagOutcome,
        note: &str,
        now: f64,
    ) -> Result<(), EngineError> {
        match outcome {
            FlagOutcome::Running | FlagOutcome::Shadow | FlagOutcome::Refused => {
                let reason = format!("{change_id} regressed");
                self.store.flag_action_started(
                    &NewFlagAction {
                        flag,
                        change_id: Some(change_id),
                        requested_by: "guardian",
                        reason: &reason,
                        outcome,
                        note,
                    },
                    now,
                )?;
            }
            _ => {
                if let Some(id) = self.store.flag_action_running_for(change_id)? {
                    self.store.flag_action_ended(
                        &id,
                        outcome,
                        note,
                        &serde_json::Value::Null,
                        now,
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// At start: flag_offs a stop cut short are recorded so, never redone (the flag may be off or
/// not: the change's escalation, or the record, tells a person to check). Returns the changes
/// whose flag was being turned off or checked.
pub(super) fn cut_short(store: &mut Store, now: f64) -> Result<Vec<(String, String)>, EngineError> {
    let mut changes = Vec::new();
    for action in store.flag_actions_running()? {
        store.flag_action_ended(
            &action.id,
            FlagOutcome::CutShort,
            "guardian stopped while it was under way; not done again: check whether the flag \
             is off",
            &serde_json::Value::Null,
            now,
        )?;
        if let Some(change) = action.change_id {
            changes.push((change, action.flag));
        }
    }
    Ok(changes)
}
