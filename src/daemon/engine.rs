//! The daemon's state and what it does with it: feed the core from the sources, carry out the
//! supervisor's decisions (`daemon::supervisor`) against the store, the outbox and the jobs.
//! Synchronous and clock-free (`now` comes in): one thread owns it (`daemon::owner`), and tests
//! drive it directly. Where traffic comes in is `sources`, what status shows `status`, the saved
//! core state `snapshot`, the gate's side `gate`.

use std::io::BufRead as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{Config, DaemonSettings};
use crate::core::{Monitor, Report};
use crate::store::{
    ChangeKind, ChangeRecord, ChangeState, EventKind, NewChange, Store, StoreError,
};

use super::actions::{Action, Outcome};
use super::supervisor::{Effect, Phase, Remediation, Supervisor, Watched};

mod agent;
mod canary;
mod flags;
mod gate;
mod health;
mod request;
mod sentry;
mod sentry_poll;
mod snapshot;
mod sources;
mod status;
pub use agent::{AgentStatus, RunningAgent};
pub use flags::{FlagJob, FlagOffAnswer, FlagOffRequest, FlagRefused};
pub use gate::{
    judge, link_page, load_policy, proposal_view, trust_ledger, DeployJob, DeployReport, Judged,
    PathCheck, ProposalRequest, ProposalView, TrustRules,
};
pub use health::{HealthDue, HealthStatus, HealthTrack};
pub use request::ChangeRequest;
pub use sentry::{NamedIssue, ReleaseEvents, SentryStatus};
pub use sentry_poll::SentryPollStatus;
use snapshot::{load_snapshot, SavedPhase, Snapshot};
use sources::Source;
pub use sources::SourceView;
pub use status::{
    CanaryNow, FlagOffStatus, LiveStatus, PageLive, ScrapeStatus, SourceStatus, Status,
};

/// The core's saved state, beside the database.
const SNAPSHOT_FILE: &str = "core-state.json";
const SNAPSHOT_VERSION: u32 = 1;
/// How late traffic may arrive for the post-mortem series before its bin is written.
const SERIES_LATENESS_SECS: f64 = 30.0;
/// How often the audit trail gets a signed checkpoint while records are being added.
const AUDIT_CHECKPOINT_EVERY_SECS: f64 = 15.0 * 60.0;
/// How long the post-mortem series is kept.
const SERIES_KEEP_SECS: i64 = 14 * 86_400;

/// Why the daemon cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A change cannot be taken now: a rollback is under way.
    #[error("a rollback of {0} is under way; notify again once it is done (see guardian status)")]
    Busy(String),
    /// The tailer's message names the file already.
    #[error("{message}")]
    Log { message: String },
    /// A request a person should fix; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// The request does not fit where things are (e.g. a proposal already decided).
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this (e.g. approve their own proposal).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The configuration (e.g. the policy file) cannot be used; the message names it.
    #[error("{0}")]
    Config(String),
}

/// A change as the API shows it: the stored record, with the live evidence while watching.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChangeView {
    #[serde(flatten)]
    pub record: ChangeRecord,
    /// The evidence so far, while the change is being watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<Report>,
}

pub struct Engine {
    /// The UTC day whose digest was last queued (days since the epoch).
    digest_day: Option<i64>,
    config: Config,
    settings: DaemonSettings,
    /// The decisions: the core's monitor and where the latest change stands.
    supervisor: Supervisor,
    /// What undoes a regressed change, when one is configured.
    action: Option<std::sync::Arc<dyn Action>>,
    /// A remediation the supervisor decided on, for the owner to start as a job.
    due: Option<Remediation>,
    /// What turns a flag off, when `[daemon.flag_off]` is set.
    flag_action: Option<std::sync::Arc<super::actions::flag_off::FlagOff>>,
    /// Flags to turn off at a role's request, for the owner to start as jobs.
    flag_jobs: Vec<flags::FlagJob>,
    /// When a deploy said it was starting (`POST /v1/deploys`) and no change has landed since:
    /// the next notification's deploy window begins there unless it says otherwise.
    deploy_begun: Option<f64>,
    store: Store,
    /// The ways traffic comes in (`sources`).
    sources: Vec<Box<dyn Source>>,
    /// The sandbox policy, when the trust gate is configured.
    policy: Option<gate::LoadedPolicy>,
    /// Paths no proposal may change whatever the policy says (git's files, guardian's own).
    never: crate::trust::NeverList,
    /// Traffic in 10-second bins, for post-mortem charts.
    series: crate::series::SeriesBins,
    /// Up to when the traffic is in, every source heard (`sources::traffic_clock`): the core
    /// judges and the series close no later.
    traffic_until: f64,
    /// Signs the audit trail's checkpoints; `audit_origin` names the log in them.
    audit_key: ed25519_dalek::SigningKey,
    audit_origin: String,
    /// Derives the secrets of approval links (`gate::links`).
    link_key: crate::gate::links::LinkKey,
    /// When Sentry's events were last counted for the supervisor (`engine/sentry.rs`).
    sentry_counted_at: f64,
    /// The agent trigger, when `[daemon.agent]` is set (`engine/agent.rs`).
    agent: Option<agent::AgentTrigger>,
    /// The health check and its restart, when `[daemon.health]` is set (`engine/health.rs`).
    health: Option<health::HealthCheck>,
    /// Sentry's API polled for events, when `[daemon.sentry]` names it (`engine/sentry_poll.rs`).
    sentry_poller: Option<sentry_poll::SentryPoller>,
    /// Where the API listens as bound (the configured `listen` may say port 0), for the
    /// commands the emails give; `None` until told ([`Engine::serving_at`]).
    serving_at: Option<std::net::SocketAddr>,
}

/// What is known of a rollback guardian stopped during, for the person it is handed to: whether
/// its revert is committed (asked of git, by the rollback's intent) and whether the redeploy
/// hook was still running (and was stopped, so the service may not run the revert yet).
fn cut_short(
    stopped: &str,
    settings: &DaemonSettings,
    change_id: &str,
    hook_stopped: bool,
) -> String {
    let revert = settings.rollback.as_ref().map(|r| {
        crate::git::Repo::open(&r.repo)
            .and_then(|repo| repo.find_revert(&format!("{change_id}-revert")))
    });
    let committed = match revert {
        None => String::new(),
        Some(Ok(Some(sha))) => format!("; its revert {sha} is committed in the repository"),
        Some(Ok(None)) => "; no revert of it is committed in the repository".to_owned(),
        Some(Err(e)) => format!("; whether its revert is committed is unknown ({e})"),
    };
    let hook = if hook_stopped {
        "; the redeploy hook was still running and was stopped, so the service may not run the \
         revert yet (or may be down, if the hook was restarting it): check it, and redeploy"
    } else {
        "; check whether the service runs the revert and recovered"
    };
    format!("{stopped}{committed}{hook}")
}

/// Whether a regressed `change` is remedied under `settings`: its flag turned off, or it is
/// reverted outside shadow mode. One that is not stays `regressed`: that is its verdict.
fn remedied_under(settings: &DaemonSettings, change: &ChangeRecord) -> bool {
    let shadow = settings
        .gate
        .as_ref()
        .is_some_and(|g| g.is_shadow(change.pattern.as_deref()));
    let flag_off = change.flag.is_some() && settings.flag_off.is_some();
    flag_off || (settings.rollback.is_some() && !shadow)
}

/// Whether an email about `change` was queued at or after its verdict: a regression with a
/// remedy to follow is told of once the remedy ends, so such an email says none followed.
fn told_at_its_verdict(store: &Store, change: &ChangeRecord) -> Result<bool, EngineError> {
    let Some(decided) = change.decided_at else {
        return Ok(false);
    };
    Ok(store
        .events_for(&change.id)?
        .iter()
        .any(|e| e.kind == EventKind::EmailQueued && e.at >= decided))
}

/// Whether a change that ended in `state` is handed to a person: escalated (the remediation
/// failed, or did not help), or inconclusive (the traffic could not tell, down to none at all
/// from an app that died and logs nothing).
fn asks_a_person(state: ChangeState) -> bool {
    matches!(state, ChangeState::Escalated | ChangeState::Inconclusive)
}

/// The longest a deploy announced as starting may take before its notification: past this, the
/// notification's own window (or `deploy_guard_secs`) is used instead.
const MAX_DEPLOY_SECS: f64 = 3600.0;

/// A change handed to a person leaves the service in a state nobody has checked: no AI change
/// is deployed on top of it until a person has looked and resumed deploys (`guardian resume`).
/// Watches and rollbacks go on. On the audit trail as guardian's own pause.
fn pause_for_a_person(
    store: &mut Store,
    settings: &DaemonSettings,
    change_id: &str,
    now: f64,
) -> Result<(), EngineError> {
    if settings.gate.is_none() || store.gate_paused()?.is_some() {
        return Ok(());
    }
    let state = store
        .get_change(change_id)?
        .map_or("escalated", |c| c.state.as_str());
    let why = format!(
        "{change_id} ended {state} and was handed to a person; approved proposals wait until a \
         person has checked the service and resumes deploys"
    );
    store.audit(
        "guardian",
        EventKind::GatePaused,
        None,
        Some(change_id),
        &serde_json::json!({ "why": why }),
        now,
    )?;
    tracing::warn!(change_id = %change_id, "deploys of proposals paused: {why}");
    Ok(())
}

/// `text` with `block` put in as its own paragraph before the signature (`-- `).
fn before_signature(text: &str, block: &str) -> String {
    match text.rfind("\n-- \n") {
        Some(at) => format!("{}\n{block}{}", &text[..at], &text[at..]),
        None => format!("{text}\n{block}"),
    }
}

impl Engine {
    /// Opens the state in `settings.state_dir` and picks up where the last run stopped. Watches
    /// that were in progress cannot be resumed yet (the core's state is not persisted): they
    /// are closed as `interrupted`, never as healthy.
    pub fn open(
        config: &Config,
        settings: &DaemonSettings,
        now: f64,
    ) -> Result<Engine, EngineError> {
        let store = Store::open(&settings.state_dir.join("guardian.db"))?;
        Engine::with_store(config, settings, store, now)
    }

    pub fn with_store(
        config: &Config,
        settings: &DaemonSettings,
        mut store: Store,
        now: f64,
    ) -> Result<Engine, EngineError> {
        let (snapshot, changed, discarded) =
            match load_snapshot(&settings.state_dir, &config.detector) {
                snapshot::Loaded::Nothing => (None, None, None),
                snapshot::Loaded::Usable { snapshot, changed } => (Some(*snapshot), changed, None),
                snapshot::Loaded::Discarded(why) => (None, None, Some(why)),
            };
        // Starting afresh loses the traffic history every baseline is drawn from, and any watch
        // in progress: the operator must be able to learn why, on the record.
        if let Some(why) = &discarded {
            tracing::warn!(
                "starting afresh: {why}; the traffic history is gone, so the next change waits \
                 for a new baseline ({} s of traffic)",
                config.detector.baseline_secs
            );
            store.audit(
                "guardian",
                EventKind::HistoryDiscarded,
                None,
                None,
                &serde_json::json!({ "why": why }),
                now,
            )?;
        }
        let resumed = match &snapshot {
            Some(Snapshot {
                phase: SavedPhase::Watching(id),
                ..
            }) => store
                .get_change(id)?
                .filter(|c| c.state == ChangeState::Watching)
                .map(|c| watched(&c)),
            _ => None,
        };
        // Before anything can start a hook: one a killed guardian left running must not
        // restart the service under the next deploy or rollback.
        let stopped_hook = settings
            .rollback
            .as_ref()
            .and_then(|r| r.hook_note.as_deref())
            .and_then(|note| crate::running::stop_leftover(note, crate::hook::DEFAULT_GRACE));
        if let Some(stopped) = &stopped_hook {
            tracing::warn!("{stopped}");
            store.audit(
                "guardian",
                EventKind::HookStopped,
                None,
                None,
                &serde_json::json!({ "note": stopped }),
                now,
            )?;
        }
        let flagging = flags::cut_short(&mut store, now)?;
        let mut escalated = Vec::new();
        for change in store.unfinished()? {
            if resumed.as_ref().is_some_and(|w| w.id == change.id) {
                continue;
            }
            if change.state == ChangeState::Regressed
                && (!remedied_under(settings, &change) || told_at_its_verdict(&store, &change)?)
            {
                // Its verdict is its end: a person was told, and nothing was begun that a stop
                // could have cut short (whatever the configuration says now: a rollback
                // configured since remedies the changes to come, not this one).
                continue;
            }
            let (state, note) = match change.state {
                ChangeState::Watching => (
                    ChangeState::Interrupted,
                    match &discarded {
                        Some(why) => format!(
                            "guardian stopped during the watch and restarted afresh ({why}); \
                             the verdict could not be completed"
                        ),
                        None => "guardian stopped during the watch; the verdict could not be \
                                 completed"
                            .to_owned(),
                    },
                ),
                _ => (
                    ChangeState::Escalated,
                    "guardian stopped between the regression and the end of the rollback"
                        .to_owned(),
                ),
            };
            let note = match state {
                ChangeState::Escalated if change.state == ChangeState::FlaggingOff => {
                    let flag = flagging
                        .iter()
                        .find(|(id, _)| *id == change.id)
                        .map(|(_, f)| f.as_str())
                        .or(change.flag.as_deref())
                        .unwrap_or("?");
                    format!(
                        "guardian stopped while turning flag {flag} off or checking whether that \
                         helped; it was not done again: check whether the flag is off and the \
                         service recovered (the change's code is still deployed)"
                    )
                }
                ChangeState::Escalated => {
                    cut_short(&note, settings, &change.id, stopped_hook.is_some())
                }
                _ => note,
            };
            store.set_state(&change.id, state, None, None, Some(&note), now)?;
            if state == ChangeState::Escalated {
                pause_for_a_person(&mut store, settings, &change.id, now)?;
                escalated.push(change.id);
            }
        }
        let (monitor, phase, saved_positions) = match snapshot {
            Some(mut snap) => {
                let phase = match resumed {
                    Some(change) => Phase::Watching(change),
                    None => Phase::Idle,
                };
                // New detector settings are applied as a reload applies them: the history is
                // kept, a watch in progress keeps the rules it began with.
                if let Some(changed) = &changed {
                    tracing::info!(
                        "[detector] settings changed since the state was saved ({changed}): \
                         they apply from the next change on"
                    );
                    snap.monitor.reconfigure(config.detector.clone());
                }
                (snap.monitor, phase, Some(snap.positions))
            }
            None => (Monitor::new(config.detector.clone()), Phase::Idle, None),
        };
        if let Phase::Watching(change) = &phase {
            tracing::info!(change_id = %change.id, "{}: the watch resumes where guardian stopped", change.id);
        }
        let sources = sources::from_settings(
            settings,
            config.detector.baseline_secs,
            saved_positions.as_deref(),
            &store,
        )?;
        let policy = match &settings.gate {
            Some(g) => Some(load_policy(&g.policy_file).map_err(EngineError::Config)?),
            None => None,
        };
        if let Some(p) = &policy {
            store.audit(
                "guardian",
                EventKind::PolicyLoaded,
                None,
                None,
                &serde_json::json!({ "policy_sha256": p.sha256 }),
                now,
            )?;
        }
        let audit_key = crate::audit::load_or_create_signing_key(&crate::audit::default_key_file(
            &settings.state_dir,
        ))
        .map_err(|e| EngineError::Config(e.to_string()))?;
        let link_key = crate::gate::links::LinkKey::load_or_create(
            &crate::gate::links::LinkKey::file(&settings.state_dir),
        )
        .map_err(|e| EngineError::Config(e.to_string()))?;
        let agent = agent::open(settings, &mut store, now)?;
        let health = health::open(settings, &mut store, now)?;
        let sentry_poller = match settings.sentry.as_ref().and_then(|s| s.api.as_ref()) {
            Some(api) => Some(sentry_poll::SentryPoller::new(api)?),
            None => None,
        };
        let mut engine = Engine {
            agent,
            health,
            sentry_poller,
            link_key,
            sentry_counted_at: f64::NEG_INFINITY,
            audit_key,
            audit_origin: crate::audit::origin_for(&settings.service),
            policy,
            never: gate::host_never_list(settings, None).0,
            series: crate::series::SeriesBins::new(SERIES_LATENESS_SECS),
            traffic_until: f64::INFINITY,
            digest_day: None,
            config: config.clone(),
            action: super::actions::from_settings(settings),
            due: None,
            flag_action: super::actions::flag_off_from_settings(settings),
            flag_jobs: Vec::new(),
            deploy_begun: None,
            settings: settings.clone(),
            supervisor: Supervisor::resumed(monitor, phase, settings).with_flag_ledger(
                super::flag_limits::FlagLedger::new(store.flags_turned_off_since(now - 86_400.0)?),
            ),
            store,
            sources,
            serving_at: None,
        };
        engine.resume_canary()?;
        // Told as any escalation is: the post-mortem, and the audit trail's checkpoint.
        for id in escalated {
            engine.alert(&id, now)?;
        }
        Ok(engine)
    }

    /// Where the API listens, as bound: the commands in the emails point there.
    pub fn serving_at(&mut self, addr: std::net::SocketAddr) {
        self.serving_at = Some(addr);
    }

    /// Stores the traffic bins still open (at shutdown: they would be lost otherwise).
    pub fn flush_series(&mut self) -> Result<(), EngineError> {
        let points = self.series.take_all();
        self.store.append_series(&points)?;
        Ok(())
    }

    /// A deploy is starting now (`guardian notify --starting`, before its restart): the change
    /// still being watched, if any, is superseded here, so that the restart's failures never
    /// count against it, and the next notification's deploy window begins here. Refused while
    /// a rollback or a deploy of guardian's own is under way. Returns the superseded change.
    pub fn deploy_starting(&mut self, now: f64) -> Result<Option<String>, EngineError> {
        self.tick(now)?;
        if let Some(busy) = self.supervisor.busy() {
            return Err(EngineError::Busy(busy));
        }
        let (superseded, effects) = self.supervisor.deploy_starting(now);
        self.apply(effects, now)?;
        // A deploy retried, or said twice: it began at the first, and what failed since is
        // the deploy's, never the next baseline's.
        self.deploy_begun = Some(self.pending_deploy_start(now).unwrap_or(now));
        tracing::info!(
            "a deploy is starting{}",
            superseded
                .as_deref()
                .map_or(String::new(), |id| format!("; {id} is superseded"))
        );
        Ok(superseded)
    }

    /// When a deploy said it was starting, if that is what the next notification at `now`
    /// would take its deploy window from (within [`MAX_DEPLOY_SECS`]).
    pub fn pending_deploy_start(&self, now: f64) -> Option<f64> {
        self.deploy_begun
            .filter(|&t| t <= now && now - t <= MAX_DEPLOY_SECS)
    }

    /// A change landed now: start watching it. A change still being watched is superseded:
    /// its verdict can no longer be told apart from the new change's.
    pub fn notify(
        &mut self,
        request: &ChangeRequest,
        now: f64,
    ) -> Result<ChangeRecord, EngineError> {
        Ok(self.notify_change(request, now)?.0)
    }

    /// As [`Engine::notify`]; the second value is false when the notification widened the
    /// canary of the change being watched instead of starting a watch.
    pub fn notify_change(
        &mut self,
        request: &ChangeRequest,
        now: f64,
    ) -> Result<(ChangeRecord, bool), EngineError> {
        let mut landing = request.landing(now).map_err(EngineError::BadRequest)?;
        self.tick(now)?;
        if let Some(busy) = self.supervisor.busy() {
            return Err(EngineError::Busy(busy));
        }
        if let Some(id) = self.widening(&request.commit, request.canary.as_ref())? {
            self.roll_out(&id, landing, request.canary.clone(), true, now)?;
            let record = self.store.get_change(&id)?.ok_or_else(|| {
                EngineError::NotFound(format!("change {id} is watched but not on record"))
            })?;
            return Ok((record, false));
        }
        let begun = self.pending_deploy_start(now);
        self.deploy_begun = None;
        landing.deploy_started_at = landing.deploy_started_at.or(begun);
        let mut request = request.clone();
        if let Some(p) = &request.proposal {
            let proposal = self.store.get_proposal(p)?;
            if let Some(change) = &proposal.change_id {
                return Err(EngineError::Conflict(format!(
                    "proposal {p} was already deployed as {change}"
                )));
            }
            // The change is the proposal's: its pattern and kind, which its track record is
            // about, are the proposal's too.
            if request
                .pattern
                .as_ref()
                .is_some_and(|pat| *pat != proposal.pattern)
            {
                return Err(EngineError::Conflict(format!(
                    "proposal {p} is a {}, not a {}",
                    proposal.pattern,
                    request.pattern.unwrap_or_default()
                )));
            }
            request.pattern = Some(proposal.pattern.clone());
            request.kind = proposal.kind.parse().unwrap_or(ChangeKind::Ai);
        }
        let request = &request;
        let fixes_issue = match (&request.issue, &request.proposal) {
            (Some(named), _) => match self.resolve_issue(named)? {
                NamedIssue {
                    sentry: Some(id), ..
                } => Some(id),
                NamedIssue { sentry: None, .. } => {
                    return Err(EngineError::BadRequest(format!(
                        "\"issue\" {named:?} is not a Sentry issue: a change can only claim to \
                         fix one whose events guardian hears"
                    )))
                }
            },
            (None, Some(p)) => self.store.get_proposal(p)?.sentry_issue,
            (None, None) => None,
        };
        // The flag a proposal declared is the change's, unless the notification names one.
        let flag = match (&request.flag, &request.proposal) {
            (Some(flag), _) => Some(flag.clone()),
            (None, Some(p)) => self.store.get_proposal(p)?.flag,
            (None, None) => None,
        };
        let record = self.store.insert_change(
            &NewChange {
                commit: request.commit.trim().to_owned(),
                kind: request.kind,
                pattern: request.pattern.clone(),
                summary: request.summary.clone(),
                landed_at: now,
                fixes_issue,
                flag,
            },
            now,
        )?;
        let effects = self
            .supervisor
            .change_landed(watched(&record), landing, &self.settings);
        self.apply(effects, now)?;
        self.roll_out(&record.id, landing, request.canary.clone(), false, now)?;
        if let Some(p) = &request.proposal {
            self.store.link_proposal(p, &record.id, "admin", now)?;
        }
        tracing::info!(
            change_id = %record.id,
            commit = %record.commit,
            "change {} landed: commit {} ({}), watching",
            record.id,
            record.commit,
            request.kind
        );
        Ok((record, true))
    }

    /// Lets time pass to `now`: the core judges every second before it, the traffic bins and
    /// the audit trail's checkpoints that are due are stored, and the supervisor's decisions are
    /// carried out. A remediation it starts is left for the owner ([`Engine::remediation_due`]).
    pub fn tick(&mut self, now: f64) -> Result<(), EngineError> {
        self.count_sentry_events(now)?;
        let effects = self.supervisor.tick(now, &self.settings);
        self.store.checkpoint_if_due(
            &self.audit_key,
            &self.audit_origin,
            now,
            AUDIT_CHECKPOINT_EVERY_SECS,
        )?;
        let closed = self.series.take_closed(now.min(self.traffic_until));
        if !closed.is_empty() {
            self.store.append_series(&closed)?;
            if closed.iter().any(|p| p.at % 3600 == 0) {
                self.store
                    .prune_series(now.floor() as i64 - SERIES_KEEP_SECS)?;
            }
        }
        self.apply(effects, now)
    }

    /// The remediation the supervisor decided on, with the action that carries it out, for the
    /// owner to run as a job and report back with [`Engine::remedied`]. Taken once.
    pub fn remediation_due(&mut self) -> Option<(Remediation, std::sync::Arc<dyn Action>)> {
        let job = self.due.take()?;
        let action = match &job.remedy {
            super::supervisor::Remedy::Revert => self.action.clone(),
            super::supervisor::Remedy::FlagOff { .. } => self
                .flag_action
                .clone()
                .map(|a| a as std::sync::Arc<dyn Action>),
        };
        match action {
            Some(action) => Some((job, action)),
            None => {
                // The supervisor remediates only when an action is configured; a reload that
                // removed it in between leaves the change to a person.
                tracing::error!(change_id = %job.change_id, "{}: no remediation configured any more", job.change_id);
                None
            }
        }
    }

    /// The remediation job ended: its account goes on the change's record, and the supervisor
    /// decides what comes next (check recovery, or hand over to a person).
    pub fn remedied(
        &mut self,
        action: EventKind,
        job: &Remediation,
        outcome: &Outcome,
        now: f64,
    ) -> Result<(), EngineError> {
        self.store
            .record_event(&job.change_id, action, &outcome.record, now)?;
        // The redeploy restarted processes, at most the hook's time ago.
        let took = self
            .settings
            .rollback
            .as_ref()
            .map_or(0.0, |r| f64::from(r.hook_timeout_secs));
        for source in &mut self.sources {
            source.deployed(now - took, now);
        }
        let effects = self
            .supervisor
            .remedied(&outcome.remedied, now, &self.settings);
        self.apply(effects, now)
    }

    /// Carries out the supervisor's decisions, in order.
    fn apply(&mut self, effects: Vec<Effect>, now: f64) -> Result<(), EngineError> {
        for effect in effects {
            match effect {
                Effect::Transition {
                    change_id,
                    state,
                    report,
                    decided_at,
                    note,
                } => {
                    let report = report.as_ref().map(report_json);
                    self.store.set_state(
                        &change_id,
                        state,
                        report.as_deref(),
                        decided_at,
                        note.as_deref(),
                        now,
                    )?;
                    if asks_a_person(state) {
                        pause_for_a_person(&mut self.store, &self.settings, &change_id, now)?;
                    }
                    self.queue_notifications(&change_id, now)?;
                }
                Effect::Event {
                    change_id,
                    kind,
                    detail,
                } => self.store.record_event(&change_id, kind, &detail, now)?,
                Effect::Alert { change_id } => self.alert(&change_id, now)?,
                Effect::Remediate(job) => self.due = Some(job),
                Effect::FlagOff {
                    change_id,
                    flag,
                    outcome,
                    note,
                } => self.record_flag_off(&change_id, &flag, outcome, &note, now)?,
                Effect::Save { report } => {
                    if let Some((id, report)) = report {
                        self.store.update_report(&id, &report_json(&report), now)?;
                    }
                    self.save_snapshot_or_log(now);
                }
            }
        }
        Ok(())
    }

    /// Once a UTC day has ended, queues the digest of the changes that stayed healthy during
    /// it (when mail is configured and healthy changes are digested). Idempotent: the digest's
    /// Message-ID is the day's, so asking twice queues one email.
    pub fn queue_digest(&mut self, now: f64) -> Result<(), EngineError> {
        let Some(mail) = self.settings.mail.clone().filter(|m| m.digest_healthy) else {
            return Ok(());
        };
        let today = (now / 86_400.0).floor() as i64;
        if self.digest_day == Some(today) {
            return Ok(());
        }
        self.digest_day = Some(today);
        let day_start = (today - 1) as f64 * 86_400.0;
        let healthy: Vec<ChangeRecord> = self
            .store
            .recent_changes(1000)?
            .into_iter()
            .filter(|c| {
                c.state == ChangeState::Healthy
                    && c.decided_at
                        .is_some_and(|d| d >= day_start && d < day_start + 86_400.0)
            })
            .collect();
        if let Some(email) =
            crate::report::render_digest(&self.settings.service, day_start, &healthy)
        {
            crate::report::enqueue(&mut self.store, &mail, None, &email, now)?;
        }
        Ok(())
    }

    /// Queues the change's new state for each `[[daemon.notify]]` target told of it, in the
    /// words of its alert email; the delivery loop sends them (`daemon::notify`).
    fn queue_notifications(&mut self, id: &str, now: f64) -> Result<(), EngineError> {
        if self.settings.notify.is_empty() {
            return Ok(());
        }
        let Some(record) = self.store.get_change(id)? else {
            return Ok(());
        };
        if !self
            .settings
            .notify
            .iter()
            .any(|t| t.states.contains(&record.state))
        {
            return Ok(());
        }
        let rollback = self.rollback_record(&record.id)?;
        let alert = crate::report::render_alert(&self.settings.service, &record, rollback.as_ref());
        let Some(outcome) =
            crate::report::notify::Outcome::of(&record, &alert, &self.settings.service, now)
        else {
            return Ok(());
        };
        for target in &self.settings.notify {
            if !target.states.contains(&record.state) {
                continue;
            }
            if let Some(body) = crate::report::notify::body(&target.kind, &outcome) {
                self.store.enqueue_notification(
                    &target.name,
                    &record.id,
                    record.state.as_str(),
                    &body,
                    now,
                )?;
            }
        }
        Ok(())
    }

    /// Queues the alert email for a change that reached `state`, when mail is configured. The
    /// outbox is durable: the email is sent by the delivery loop, retried until it goes.
    fn alert(&mut self, id: &str, now: f64) -> Result<(), EngineError> {
        let Some(mail) = self.settings.mail.clone() else {
            return Ok(());
        };
        let Some(record) = self.store.get_change(id)? else {
            return Ok(());
        };
        if record.state == ChangeState::RolledBack && self.stood_down(id)? {
            // The guardian whose push of the revert won tells people; a host that stood down
            // and recovered has nothing to add (one that did not recover is escalated, and says).
            tracing::info!(
                change_id = id,
                "rolled back on another guardian's revert: its alert is the one sent"
            );
            return Ok(());
        }
        let mut email = self.render_alert(&record)?;
        if asks_a_person(record.state) && self.settings.gate.is_some() {
            if let Some((by, why, _)) = self.store.gate_paused()? {
                email.text_body = before_signature(
                    &email.text_body,
                    &format!(
                        "Deploys of proposals are paused, by {by}: {why}.\nResume them once the \
                         service is right: guardian resume --config <your guardian.toml>\n"
                    ),
                );
            }
        }
        let flag_offs = self.store.flag_actions_for(id)?;
        if !flag_offs.is_empty() {
            email.text_body =
                before_signature(&email.text_body, &crate::report::flag_paragraph(&flag_offs));
        }
        email.text_body = self.with_checkpoint(&email.text_body, now)?;
        crate::report::enqueue(&mut self.store, &mail, Some(id), &email, now)?;
        Ok(())
    }

    /// An email's text with a fresh signed checkpoint of the audit trail before its signature:
    /// every email takes a copy of the log's state off the host, so a later rewrite or
    /// truncation of what it covers is detected (`guardian audit verify --checkpoint`).
    fn with_checkpoint(&mut self, text: &str, now: f64) -> Result<String, EngineError> {
        let note = self
            .store
            .checkpoint(&self.audit_key, &self.audit_origin, now)?
            .note_text();
        let block = format!(
            "Audit checkpoint\n----------------\n  Keep this email: the signed state of guardian's audit trail as it \
             sent it.\n  Check the trail against it with: guardian audit verify --config <guardian.toml> \
             --checkpoint <file with the lines below>\n\n{}\n",
            note.trim_end()
        );
        Ok(before_signature(text, &block))
    }

    /// What the latest rollback of change `id` ran, as recorded, for the words that tell it.
    fn rollback_record(&self, id: &str) -> Result<Option<serde_json::Value>, EngineError> {
        Ok(self
            .store
            .events_for(id)?
            .into_iter()
            .rev()
            .find(|e| e.kind == EventKind::Rollback)
            .map(|e| e.detail))
    }

    /// Whether the rollback of change `id` stood down for another guardian's revert.
    fn stood_down(&self, id: &str) -> Result<bool, EngineError> {
        Ok(self
            .rollback_record(id)?
            .and_then(|r| crate::report::actions::read_rollback(&r).ok())
            .is_some_and(|r| r.stood_down))
    }

    /// The alert email for a change as it stands, with what its rollback ran.
    pub fn render_alert(&self, record: &ChangeRecord) -> Result<crate::report::Email, EngineError> {
        let rollback = self.rollback_record(&record.id)?;
        // Anything but a healthy change gets its post-mortem, chart included, as the HTML part.
        let postmortem = match record.state {
            ChangeState::Healthy => None,
            _ => crate::gate::story::postmortem(
                &self.store,
                &self.settings.service,
                &record.id,
                self.recent_bins(),
            )?
            .map(|pm| pm.html()),
        };
        let mut email = crate::report::render_alert_with_postmortem(
            &self.settings.service,
            record,
            rollback.as_ref(),
            postmortem,
        );
        if let Some(line) = self.pattern_standing(record)? {
            if let Some(at) = email.text_body.find("Change id: ") {
                email.text_body.insert_str(at, &line);
            }
        }
        if let Some(at) = email.text_body.find("Change id: ") {
            let page = format!(
                "On the status page (sign in with a token): {}/changes/{}\n",
                self.reached_at(),
                record.id
            );
            email.text_body.insert_str(at, &page);
        }
        Ok(email)
    }

    /// Where the pattern of a change that came through the gate stands in the trust ledger
    /// now, as a line of the alert: a rollback or an ineffective fix has just demoted it, and
    /// the reader should not have to run `guardian trust` to learn that its next fix waits.
    fn pattern_standing(&self, record: &ChangeRecord) -> Result<Option<String>, EngineError> {
        if self.settings.gate.is_none() {
            return Ok(None);
        }
        let Some(proposal) = self.store.proposal_for_change(&record.id)? else {
            return Ok(None);
        };
        let ledger = self.trust()?;
        Ok(ledger
            .iter()
            .find(|t| t.pattern == proposal.pattern)
            .map(|t| {
                format!(
                    "Trust:     pattern {} now {}: {}\n",
                    crate::display::line(&t.pattern),
                    match t.level {
                        crate::gate::ledger::Level::Auto => "deploys alone",
                        crate::gate::ledger::Level::NeedsApproval => "needs a person's approval",
                    },
                    crate::display::line(&t.why)
                )
            }))
    }

    /// Saves the snapshot; a failure is logged, not fatal: the watch goes on, and only a
    /// restart would lose it (which then ends as `interrupted`, never healthy).
    fn save_snapshot_or_log(&self, now: f64) {
        if let Err(e) = self.save_snapshot(now) {
            tracing::error!(
                "cannot save the core's state in {}: {e}",
                self.settings.state_dir.display()
            );
        }
    }

    /// Applies a reloaded configuration. The detector's rules apply from the next change on;
    /// rollback settings at once. What needs a restart (the logs, the API address, the state
    /// directory, the token) is named in the returned list and left as it was.
    pub fn reload(&mut self, config: &Config, now: f64) -> Vec<&'static str> {
        let Some(new) = &config.daemon else {
            return vec!["the [daemon] section is gone (kept the running one)"];
        };
        let mut needs_restart = Vec::new();
        if new.logs != self.settings.logs {
            needs_restart.push("[daemon] logs");
        }
        if new.listen != self.settings.listen {
            needs_restart.push("[daemon] listen");
        }
        if new.metrics_listen != self.settings.metrics_listen {
            needs_restart.push("[daemon] metrics_listen");
        }
        if new.state_dir != self.settings.state_dir {
            needs_restart.push("[daemon] state_dir");
        }
        if new.token_file != self.settings.token_file {
            needs_restart.push("[daemon] token_file");
        }
        if new.mail != self.settings.mail {
            needs_restart.push("[daemon.mail]");
        }
        if new.sentry != self.settings.sentry {
            needs_restart.push("[daemon.sentry]");
        }
        if new.agent != self.settings.agent {
            needs_restart.push("[daemon.agent]");
        }
        if new.health != self.settings.health {
            needs_restart.push("[daemon.health]");
        }
        if new.notify != self.settings.notify {
            // The delivery loop holds the targets it started with.
            needs_restart.push("[[daemon.notify]]");
        }
        self.settings = DaemonSettings {
            notify: self.settings.notify.clone(),
            sentry: self.settings.sentry.clone(),
            agent: self.settings.agent.clone(),
            health: self.settings.health.clone(),
            logs: self.settings.logs.clone(),
            listen: self.settings.listen,
            metrics_listen: self.settings.metrics_listen,
            state_dir: self.settings.state_dir.clone(),
            token_file: self.settings.token_file.clone(),
            ..new.clone()
        };
        self.config = Config {
            daemon: Some(self.settings.clone()),
            ..config.clone()
        };
        self.supervisor
            .monitor_mut()
            .reconfigure(config.detector.clone());
        self.action = super::actions::from_settings(&self.settings);
        self.flag_action = super::actions::flag_off_from_settings(&self.settings);
        let tokens = |g: &Option<crate::config::GateSettings>| {
            g.as_ref()
                .map(|g| (g.agent_token_file.clone(), g.approvers.clone()))
        };
        if tokens(&new.gate) != tokens(&self.settings.gate) {
            needs_restart.push("[daemon.gate] tokens");
        }
        self.reload_policy(now);
        needs_restart
    }

    /// Reads the policy file again. A policy that cannot be read or is not valid is refused
    /// with a message and the running one kept; a new one goes on the audit trail.
    fn reload_policy(&mut self, now: f64) {
        let Some(gate) = &self.settings.gate else {
            self.policy = None;
            return;
        };
        match load_policy(&gate.policy_file) {
            Ok(p) => {
                if self.policy.as_ref().map(|old| &old.sha256) != Some(&p.sha256) {
                    tracing::info!(
                        "policy {} loaded (sha256 {})",
                        gate.policy_file.display(),
                        p.sha256
                    );
                    let detail = serde_json::json!({ "policy_sha256": p.sha256 });
                    if let Err(e) = self.store.audit(
                        "guardian",
                        EventKind::PolicyLoaded,
                        None,
                        None,
                        &detail,
                        now,
                    ) {
                        tracing::error!("cannot record the new policy: {e}");
                    }
                }
                self.policy = Some(p);
            }
            Err(e) => tracing::error!("{e}; keeping the policy already loaded"),
        }
    }

    pub fn rollback_settings(&self) -> Option<&crate::config::RollbackSettings> {
        self.settings.rollback.as_ref()
    }

    pub fn state_dir(&self) -> &Path {
        &self.settings.state_dir
    }
}

/// The change as the supervisor's decisions need it.
pub(super) fn watched(record: &ChangeRecord) -> Watched {
    Watched {
        id: record.id.clone(),
        kind: record.kind,
        commit: record.commit.clone(),
        pattern: record.pattern.clone(),
        fixes: record.fixes_issue.clone(),
        flag: record.flag.clone(),
    }
}

fn report_json(report: &Report) -> String {
    serde_json::to_string(report).unwrap_or_else(|_| "null".to_owned())
}

/// Reads a token file: its first line, trimmed. An empty token is refused: an API that accepts
/// an empty bearer token is an open API.
pub fn read_token(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let mut first = String::new();
    std::io::BufReader::new(file)
        .read_line(&mut first)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = first.trim().to_owned();
    if token.len() < 16 {
        return Err(format!(
            "the token in {} is too short ({} characters): use at least 16 random characters, \
             e.g. `head -c 32 /dev/urandom | base64 > {}`",
            path.display(),
            token.len(),
            path.display()
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InconclusivePolicy;

    const T0: f64 = 1_764_000_000.0;

    fn engine(dir: &Path, policy: InconclusivePolicy) -> Engine {
        let mut config = Config::parse(&format!(
            "[detector]\nwatch_secs = 10\nmin_requests_after = 1000000\n\
             [daemon]\nstate_dir = {dir:?}\n"
        ))
        .unwrap();
        let settings = config.daemon.as_mut().unwrap();
        settings.on_inconclusive.human = policy;
        let settings = settings.clone();
        Engine::with_store(&config, &settings, Store::open_in_memory().unwrap(), T0).unwrap()
    }

    fn request(kind: &str) -> ChangeRequest {
        serde_json::from_str(&format!(r#"{{"commit": "abc1234", "kind": "{kind}"}}"#)).unwrap()
    }

    #[test]
    fn an_inconclusive_watch_is_extended_once_then_closed_never_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = engine(dir.path(), InconclusivePolicy::Extend);
        let id = e.notify(&request("human"), T0).unwrap().id;
        e.tick(T0 + 11.0).unwrap();
        let c = e.change(&id).unwrap().unwrap().record;
        assert_eq!(c.state, ChangeState::Watching);
        assert!(c.note.unwrap().contains("one more"));
        e.tick(T0 + 23.0).unwrap();
        let c = e.change(&id).unwrap().unwrap().record;
        assert_eq!(c.state, ChangeState::Inconclusive);
    }

    #[test]
    fn a_change_that_leaves_no_trace_ends_inconclusive_and_pauses_deploys_of_proposals() {
        // An app that died on start and logs its own requests: nothing after the change.
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, "[paths]\nallow = [\"src/**\"]\n").unwrap();
        let config = Config::parse(&format!(
            "[detector]\nwatch_secs = 10\n[daemon]\nstate_dir = {:?}\n\
             [daemon.on_inconclusive]\nai = \"escalate\"\n\
             [daemon.gate]\npolicy_file = {policy:?}\n",
            dir.path()
        ))
        .unwrap();
        let settings = config.daemon.clone().unwrap();
        let mut e =
            Engine::with_store(&config, &settings, Store::open_in_memory().unwrap(), T0).unwrap();
        let id = e.notify(&request("ai"), T0).unwrap().id;
        for t in 1..=30 {
            e.tick(T0 + f64::from(t)).unwrap();
        }
        let c = e.change(&id).unwrap().unwrap().record;
        assert_eq!(c.state, ChangeState::Inconclusive, "{:?}", c.note);
        let (by, why, _) = e.store.gate_paused().unwrap().expect("deploys paused");
        assert_eq!(by, "guardian");
        assert!(why.contains(&format!("{id} ended inconclusive")), "{why}");
    }

    /// A daemon config with mail and `extra`, and a store holding one change (of `kind`,
    /// behind `flag`) left in each of `states` in turn, as a stop would leave it.
    fn left_in(
        dir: &Path,
        extra: &str,
        kind: ChangeKind,
        flag: Option<&str>,
        states: &[ChangeState],
    ) -> (Config, Store, ChangeRecord) {
        let config = Config::parse(&format!(
            "[daemon]\nstate_dir = {:?}\n[daemon.mail]\nfrom = \"g@example.com\"\n\
             to = [\"oncall@example.com\"]\nsmtp_host = \"127.0.0.1\"\nsecurity = \"none\"\n{extra}",
            dir
        ))
        .unwrap();
        let mut store = Store::open_in_memory().unwrap();
        let change = store
            .insert_change(
                &NewChange {
                    commit: "abc1234".into(),
                    kind,
                    pattern: None,
                    summary: None,
                    landed_at: T0,
                    fixes_issue: None,
                    flag: flag.map(str::to_owned),
                },
                T0,
            )
            .unwrap();
        for &state in states {
            store
                .set_state(&change.id, state, None, None, None, T0 + 60.0)
                .unwrap();
        }
        (config, store, change)
    }

    #[test]
    fn a_rollback_cut_short_by_a_restart_is_escalated_with_its_post_mortem_and_pauses_deploys() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, "[paths]\nallow = [\"src/**\"]\n").unwrap();
        let (config, store, change) = left_in(
            dir.path(),
            &format!("[daemon.gate]\npolicy_file = {policy:?}\n"),
            ChangeKind::Ai,
            None,
            &[ChangeState::Regressed, ChangeState::RollingBack],
        );
        let settings = config.daemon.clone().unwrap();

        let e = Engine::with_store(&config, &settings, store, T0 + 120.0).unwrap();
        let record = e.store.get_change(&change.id).unwrap().unwrap();
        assert_eq!(record.state, ChangeState::Escalated);
        let (by, why, _) = e.store.gate_paused().unwrap().expect("deploys paused");
        assert_eq!(by, "guardian");
        assert!(
            why.contains(&format!("{} ended escalated", change.id)),
            "{why}"
        );
        let emails = e.store.queued_emails(10).unwrap();
        assert_eq!(emails.len(), 1);
        let text = &emails[0].body;
        for said in [
            format!("git log --grep 'Guardian-Change: {}'", change.id),
            "do not revert again".to_owned(),
            "Deploys of proposals are paused, by guardian".to_owned(),
            "Audit checkpoint".to_owned(),
        ] {
            assert!(text.contains(&said), "{said:?} is not in:\n{text}");
        }
        assert!(!text.contains("<change id>"), "{text}");
        assert!(
            text.contains("check whether the service runs the revert and recovered"),
            "{text}"
        );
    }

    #[test]
    fn a_regression_with_nothing_to_remedy_it_stays_regressed_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (config, store, change) = left_in(
            dir.path(),
            "",
            ChangeKind::Human,
            None,
            &[ChangeState::Regressed],
        );
        let settings = config.daemon.clone().unwrap();

        let e = Engine::with_store(&config, &settings, store, T0 + 120.0).unwrap();
        let record = e.store.get_change(&change.id).unwrap().unwrap();
        assert_eq!(record.state, ChangeState::Regressed, "{:?}", record.note);
        assert!(e.store.gate_paused().unwrap().is_none());
        assert!(e.store.queued_emails(10).unwrap().is_empty());
    }

    #[test]
    fn a_regression_told_without_a_remedy_stays_regressed_when_a_rollback_is_configured_since() {
        let dir = tempfile::tempdir().unwrap();
        let (config, mut store, change) = left_in(
            dir.path(),
            &format!(
                "[daemon.rollback]\nrepo = {:?}\nhook = [\"true\"]\n",
                dir.path()
            ),
            ChangeKind::Human,
            None,
            &[],
        );
        store
            .set_state(
                &change.id,
                ChangeState::Regressed,
                None,
                Some(T0 + 60.0),
                None,
                T0 + 60.0,
            )
            .unwrap();
        let oncall = ["oncall@example.com".to_owned()];
        store
            .enqueue_email(
                Some(&change.id),
                "<a@g>",
                "regressed",
                "body",
                &oncall,
                T0 + 61.0,
            )
            .unwrap();
        let settings = config.daemon.clone().unwrap();

        let e = Engine::with_store(&config, &settings, store, T0 + 120.0).unwrap();
        let record = e.store.get_change(&change.id).unwrap().unwrap();
        assert_eq!(record.state, ChangeState::Regressed, "{:?}", record.note);
        assert!(e.store.gate_paused().unwrap().is_none());
    }

    #[test]
    fn a_flag_off_cut_short_by_a_restart_is_handed_to_a_person_and_never_redone() {
        let dir = tempfile::tempdir().unwrap();
        let (config, mut store, change) = left_in(
            dir.path(),
            "[daemon.flag_off]\nfile = \"/srv/app/flags.json\"\nflags = [\"new-*\"]\n\
             max_per_hour = 1\n",
            ChangeKind::Human,
            Some("new-total"),
            &[ChangeState::Regressed, ChangeState::FlaggingOff],
        );
        let settings = config.daemon.clone().unwrap();
        store
            .flag_action_started(
                &crate::store::NewFlagAction {
                    flag: "new-total",
                    change_id: Some(&change.id),
                    requested_by: "guardian",
                    reason: "regressed",
                    outcome: crate::daemon::supervisor::FlagOutcome::Running,
                    note: "",
                },
                T0 + 60.0,
            )
            .unwrap();

        let mut e = Engine::with_store(&config, &settings, store, T0 + 120.0).unwrap();
        let record = e.store.get_change(&change.id).unwrap().unwrap();
        assert_eq!(record.state, ChangeState::Escalated);
        let note = record.note.unwrap();
        assert!(
            note.contains("guardian stopped while turning flag new-total off"),
            "{note}"
        );
        let actions = e.store.flag_actions_for(&change.id).unwrap();
        assert_eq!(
            actions[0].outcome,
            crate::daemon::supervisor::FlagOutcome::CutShort
        );
        assert!(e.remediation_due().is_none() && e.flag_jobs_due().is_empty());
        // What was turned off before the restart still counts against the hour's limit.
        let asked = e
            .request_flag_off(
                &crate::gate::roles::Role::Admin,
                &FlagOffRequest {
                    flag: "new-search".into(),
                    reason: "checkout errors".into(),
                },
                T0 + 130.0,
            )
            .unwrap();
        assert_eq!(asked.unwrap_err().0.code(), "rate_limited");
        let emails = e.store.queued_emails(10).unwrap();
        assert!(
            emails[0].body.contains("Feature flag\n------------"),
            "{}",
            emails[0].body
        );
    }

    #[test]
    fn a_deploy_said_to_be_starting_twice_began_at_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = engine(dir.path(), InconclusivePolicy::Extend);
        assert_eq!(e.deploy_starting(T0 + 10.0).unwrap(), None);
        // Retried after a failed restart: the failures since the first belong to the deploy.
        e.deploy_starting(T0 + 20.0).unwrap();
        let id = e.notify(&request("human"), T0 + 30.0).unwrap().id;
        let live = e.change(&id).unwrap().unwrap().live.unwrap();
        let window = live.deploy_window.unwrap();
        assert_eq!((window.from, window.to), (T0 + 10.0, T0 + 30.0));
        // Used once: the next change without a start has the default window.
        let next = e.notify(&request("human"), T0 + 100.0).unwrap().id;
        let live = e.change(&next).unwrap().unwrap().live.unwrap();
        assert!(live.deploy_window.unwrap().from > T0 + 30.0);
    }

    #[test]
    fn healthy_changes_go_into_one_digest_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(&format!(
            "[daemon]\nstate_dir = {:?}\n[daemon.mail]\nfrom = \"g@example.com\"\n\
             to = [\"oncall@example.com\"]\nsmtp_host = \"127.0.0.1\"\nsecurity = \"none\"\n",
            dir.path()
        ))
        .unwrap();
        let settings = config.daemon.clone().unwrap();
        let mut e =
            Engine::with_store(&config, &settings, Store::open_in_memory().unwrap(), T0).unwrap();
        let id = e.notify(&request("human"), T0).unwrap().id;
        e.store
            .set_state(
                &id,
                ChangeState::Healthy,
                None,
                Some(T0 + 1800.0),
                None,
                T0 + 1800.0,
            )
            .unwrap();
        let next_day = ((T0 + 1800.0) / 86_400.0).floor() * 86_400.0 + 86_400.0 + 60.0;
        e.queue_digest(next_day).unwrap();
        e.queue_digest(next_day + 5.0).unwrap();
        assert_eq!(e.store.pending_emails().unwrap(), 1);
        let email = crate::report::render_digest(
            "app",
            next_day - 86_460.0,
            &[e.store.get_change(&id).unwrap().unwrap()],
        )
        .unwrap();
        assert!(email.text_body.contains(&id) && email.subject.contains("healthy"));
    }

    /// Feeds `secs` seconds of traffic from `from` at 20 requests a second, ticking each second.
    fn traffic(e: &mut Engine, from: f64, secs: u32, error_rate: f64) {
        for sec in 0..secs {
            let t = from + f64::from(sec);
            observe(
                e,
                (0..20).map(|i| (t + f64::from(i) / 20.0, f64::from(i) < error_rate * 20.0)),
            );
            e.tick(t + 1.0).unwrap();
        }
    }

    /// Feeds requests, each its time and whether it failed, through the app's own log format.
    fn observe(e: &mut Engine, requests: impl Iterator<Item = (f64, bool)>) {
        let lines: Vec<String> = requests
            .map(|(ts, failed)| {
                let status = if failed { 500 } else { 200 };
                format!(r#"{{"ts": {ts}, "status": {status}, "latency_ms": 20}}"#)
            })
            .collect();
        let events: Vec<_> = lines
            .iter()
            .map(|l| crate::input::parse_line(l, crate::input::Format::JsonLines).unwrap())
            .collect();
        e.observe(&events);
    }

    #[test]
    fn each_change_is_judged_against_the_traffic_just_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(&format!(
            "[detector]\nbaseline_secs = 300\nwatch_secs = 60\n[daemon]\nstate_dir = {:?}\n",
            dir.path()
        ))
        .unwrap();
        let settings = config.daemon.clone().unwrap();
        let mut e =
            Engine::with_store(&config, &settings, Store::open_in_memory().unwrap(), T0).unwrap();
        traffic(&mut e, T0 - 300.0, 300, 0.05);
        let first = e.notify(&request("human"), T0).unwrap().id;
        traffic(&mut e, T0, 120, 0.05);
        assert!(e
            .store
            .get_change(&first)
            .unwrap()
            .unwrap()
            .state
            .is_final());
        // Long after the first watch ended, a second change breaks things.
        traffic(&mut e, T0 + 120.0, 400, 0.05);
        let second = e.notify(&request("human"), T0 + 520.0).unwrap().id;
        traffic(&mut e, T0 + 520.0, 30, 0.5);
        let c = e.change(&second).unwrap().unwrap().record;
        assert_eq!(c.state, ChangeState::Regressed, "{:?}", c.note);
        let report = c.report.unwrap();
        let before = report["requests_before"].as_u64().unwrap();
        assert!(
            before >= 5000,
            "the baseline is the 5 minutes before: {before} requests"
        );
    }

    /// An engine with a 5-minute baseline and a 1-minute watch.
    fn short_windows(dir: &Path) -> Engine {
        let config = Config::parse(&format!(
            "[detector]\nbaseline_secs = 300\nwatch_secs = 60\n[daemon]\nstate_dir = {dir:?}\n"
        ))
        .unwrap();
        let settings = config.daemon.clone().unwrap();
        Engine::with_store(&config, &settings, Store::open_in_memory().unwrap(), T0).unwrap()
    }

    fn baseline_errors(e: &Engine, id: &str) -> u64 {
        let report = e.change(id).unwrap().unwrap().live.unwrap();
        report.signals[0].baseline.events
    }

    #[test]
    fn a_restart_under_new_detector_settings_keeps_the_history_and_the_watch_as_a_reload_does() {
        let dir = tempfile::tempdir().unwrap();
        let open = |watch_secs: u32, at: f64| {
            let config = Config::parse(&format!(
                "[detector]\nbaseline_secs = 300\nwatch_secs = {watch_secs}\n[daemon]\n\
                 state_dir = {:?}\n",
                dir.path()
            ))
            .unwrap();
            let settings = config.daemon.clone().unwrap();
            Engine::open(&config, &settings, at).unwrap()
        };
        let mut e = open(60, T0 - 300.0);
        traffic(&mut e, T0 - 300.0, 300, 0.05);
        let id = e.notify(&request("human"), T0).unwrap().id;
        traffic(&mut e, T0, 30, 0.05);
        e.save_snapshot(T0 + 30.0).unwrap();
        drop(e);

        let mut e = open(120, T0 + 30.0);
        // The watch goes on under the rules it began with, and ends after its minute.
        traffic(&mut e, T0 + 30.0, 32, 0.05);
        let c = e.change(&id).unwrap().unwrap().record;
        assert_eq!(c.state, ChangeState::Healthy, "{:?}", c.note);
        // The next change has the whole baseline, and the new watch length.
        let next = e.notify(&request("human"), T0 + 62.0).unwrap().id;
        let report = e.change(&next).unwrap().unwrap().live.unwrap();
        assert_eq!(report.baseline_window.covered_secs, 300.0);
        assert_eq!(report.watch_ends_at, T0 + 62.0 + 120.0);
    }

    #[test]
    fn the_canary_is_what_the_notification_names_and_naming_more_for_the_same_commit_widens_it() {
        let dir = tempfile::tempdir().unwrap();
        let open = |at: f64| {
            let config = Config::parse(&format!(
                "[detector]\nwatch_secs = 600\n[daemon]\nstate_dir = {:?}\n\
                 [[daemon.promql]]\nurl = \"http://127.0.0.1:9\"\ncanary_label = \"instance\"\n",
                dir.path()
            ))
            .unwrap();
            let settings = config.daemon.clone().unwrap();
            Engine::open(&config, &settings, at).unwrap()
        };
        let canary_now = |e: &Engine, at: f64| {
            let canary = e.status(at).unwrap().scrapes[0].canary.clone().unwrap();
            assert_eq!(canary.label, "instance");
            canary.values
        };
        let notify = |values: &[&str]| -> ChangeRequest {
            serde_json::from_value(serde_json::json!({"commit": "abc1234", "canary": values}))
                .unwrap()
        };
        let mut e = open(T0);
        assert!(
            canary_now(&e, T0).is_empty(),
            "none until a notification names it"
        );
        let (first, started) = e.notify_change(&notify(&["c"]), T0).unwrap();
        assert!(started);
        assert_eq!(canary_now(&e, T0), ["c"]);
        let (same, started) = e.notify_change(&notify(&["c", "b"]), T0 + 60.0).unwrap();
        assert!(!started, "the same commit, more hosts: the rollout widened");
        assert_eq!(same.id, first.id);
        assert_eq!(same.state, ChangeState::Watching);
        assert_eq!(canary_now(&e, T0 + 60.0), ["c", "b"]);
        // A host taken off the canary would carry the change's failures into the rest.
        match e.notify_change(&notify(&["b"]), T0 + 61.0) {
            Err(EngineError::Conflict(why)) => {
                assert!(
                    why.contains("only widens") && why.contains("drops c"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
        let named: Vec<_> = e
            .store
            .events_for(&first.id)
            .unwrap()
            .into_iter()
            .filter(|ev| ev.kind == EventKind::CanaryRollout)
            .map(|ev| ev.detail_as::<crate::scrape::Rollout>().unwrap().canary)
            .collect();
        assert_eq!(
            named,
            [
                Some(vec!["c".to_owned()]),
                Some(vec!["c".into(), "b".into()])
            ]
        );
        e.save_snapshot(T0 + 70.0).unwrap();
        drop(e);

        let mut e = open(T0 + 70.0);
        assert_eq!(
            canary_now(&e, T0 + 70.0),
            ["c", "b"],
            "taken up again after a restart"
        );
        // The commit rolled out to every host, notified without a canary: a change of its own,
        // the service as a whole.
        let promoted = e.notify(&request("human"), T0 + 100.0).unwrap();
        assert_ne!(promoted.id, first.id);
        assert!(canary_now(&e, T0 + 100.0).is_empty());
        assert_eq!(
            e.store.get_change(&first.id).unwrap().unwrap().state,
            ChangeState::Superseded
        );
    }

    #[test]
    fn a_canary_is_refused_where_no_source_tells_one_from_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = engine(dir.path(), InconclusivePolicy::Extend);
        let request: ChangeRequest =
            serde_json::from_value(serde_json::json!({"commit": "abc1234", "canary": ["c"]}))
                .unwrap();
        match e.notify(&request, T0) {
            Err(EngineError::BadRequest(why)) => assert!(why.contains("canary_label"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_saved_state_that_cannot_be_read_is_not_used_and_the_record_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SNAPSHOT_FILE),
            r#"{"version":1,"saved_at":0,"phase":"Idle","monitor":null,"positions":[]}"#,
        )
        .unwrap();
        let config = Config::parse(&format!("[daemon]\nstate_dir = {:?}\n", dir.path())).unwrap();
        let settings = config.daemon.clone().unwrap();
        let e = Engine::open(&config, &settings, T0).unwrap();
        let why: Vec<String> = e
            .store
            .conn
            .prepare("SELECT detail FROM events WHERE kind = 'history_discarded'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(why.len(), 1, "on the audit trail once");
        assert!(why[0].contains("cannot be read"), "{why:?}");
    }

    #[test]
    fn a_restart_just_before_the_notification_is_neither_baseline_nor_watch() {
        for started in [Some(T0 - 3.0), None] {
            let dir = tempfile::tempdir().unwrap();
            let mut e = short_windows(dir.path());
            traffic(&mut e, T0 - 303.0, 300, 0.05);
            // The restart: every request fails for 3 s, then the new version is live.
            traffic(&mut e, T0 - 3.0, 3, 1.0);
            let mut r = request("human");
            r.deploy_started_at = started;
            let id = e.notify(&r, T0).unwrap().id;
            let report = e.change(&id).unwrap().unwrap().live.unwrap();
            let window = report.deploy_window.unwrap();
            assert_eq!(window.given, started.is_some());
            // One error a second before the restart, none of the restart's 60.
            let errors = baseline_errors(&e, &id);
            let requests = report.signals[0].baseline.requests;
            assert_eq!(errors * 20, requests, "{started:?}: {errors} of {requests}");
            traffic(&mut e, T0, 61, 0.05);
            let c = e.change(&id).unwrap().unwrap().record;
            assert_ne!(c.state, ChangeState::Regressed, "{started:?}");
        }
    }

    #[test]
    fn a_change_right_after_a_healthy_one_gets_a_full_baseline() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = short_windows(dir.path());
        traffic(&mut e, T0 - 300.0, 300, 0.05);
        let first = e.notify(&request("human"), T0).unwrap().id;
        traffic(&mut e, T0, 62, 0.05);
        let c = e.change(&first).unwrap().unwrap().record;
        assert_eq!(c.state, ChangeState::Healthy, "{:?}", c.note);
        // 5 s after the verdict, the next change breaks things.
        traffic(&mut e, T0 + 62.0, 5, 0.05);
        let second = e.notify(&request("human"), T0 + 67.0).unwrap().id;
        let report = e.change(&second).unwrap().unwrap().live.unwrap();
        assert_eq!(report.baseline_window.covered_secs, 300.0);
        assert!(
            report.baseline_notes.is_empty(),
            "{:?}",
            report.baseline_notes
        );
        traffic(&mut e, T0 + 67.0, 20, 0.5);
        let c = e.change(&second).unwrap().unwrap().record;
        assert_eq!(c.state, ChangeState::Regressed, "{:?}", c.note);
    }

    /// Short windows, with Sentry's webhooks.
    fn with_sentry(dir: &Path) -> Engine {
        let config = Config::parse(&format!(
            "[detector]\nbaseline_secs = 300\nwatch_secs = 60\n[daemon]\nstate_dir = {dir:?}\n\
             [daemon.sentry]\nclient_secret_file = \"/nonexistent\"\n"
        ))
        .unwrap();
        let settings = config.daemon.clone().unwrap();
        Engine::with_store(&config, &settings, Store::open_in_memory().unwrap(), T0).unwrap()
    }

    /// Traffic that never fails as the access log tells it, while Sentry hears of an event of
    /// `issue` every `every` seconds.
    fn traffic_with_issue(e: &mut Engine, from: f64, secs: u32, issue: &str, every: u32) {
        use crate::sentry::{Event, Notice, Verified};
        for sec in 0..secs {
            let t = from + f64::from(sec);
            if sec % every == 0 {
                let event = Event {
                    event_id: format!("{issue}e{t}").replace('.', ""),
                    issue_id: issue.to_owned(),
                    title: "TypeError".into(),
                    culprit: None,
                    level: Some("error".into()),
                    at: t + 0.5,
                    release: Some(if t < T0 { "shop@1" } else { "shop@2" }.into()),
                    web_url: None,
                    files: vec!["app/totals.py".into()],
                };
                let delivery = Verified {
                    resource: "error".into(),
                    request_id: None,
                    body_sha256: format!("{issue}-{t}"),
                    sent_at: t + 0.6,
                };
                e.sentry_delivery(&delivery, &Notice::Error(event), t + 0.6)
                    .unwrap();
            }
            traffic(e, t, 1, 0.05);
        }
    }

    #[test]
    fn a_new_sentry_issue_firing_after_a_change_makes_it_regressed_where_the_log_sees_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = with_sentry(dir.path());
        // An old issue fires every 10 s (0.5% of requests), before and after.
        traffic_with_issue(&mut e, T0 - 300.0, 300, "100", 10);
        let id = e.notify(&request("human"), T0).unwrap().id;
        // After the change a new issue fires every second: 5.5% of requests in all. Every
        // request still answers 200: only Sentry can tell.
        for sec in 0..60 {
            let t = T0 + f64::from(sec);
            traffic_with_issue(&mut e, t, 1, "200", 1);
            if sec % 10 == 0 {
                traffic_with_issue(&mut e, t, 0, "100", 10);
            }
            if e.change(&id).unwrap().unwrap().record.state != ChangeState::Watching {
                break;
            }
        }
        let c = e.change(&id).unwrap().unwrap().record;
        assert_eq!(c.state, ChangeState::Regressed, "{:?}", c.note);
        let report: crate::core::Report =
            serde_json::from_value(c.report.clone().unwrap()).unwrap();
        let sentry = report
            .signals
            .iter()
            .find(|s| s.signal == crate::core::SignalKind::SentryEvents)
            .unwrap();
        assert!(sentry.regressed);
        assert!(report.signals.iter().filter(|s| s.regressed).count() == 1);
        // Counted in whole stored 10-second bins, which trail the traffic by 15 to 25 s.
        assert!(
            c.decided_at.unwrap() - T0 < 50.0,
            "decided {} s after the change",
            c.decided_at.unwrap() - T0
        );
        // Its alpha is its share of the detector's; the core's signals share the rest.
        let total: f64 = report.signals.iter().map(|s| s.alpha).sum();
        assert!((total - 0.01).abs() < 1e-9, "alphas add up to {total}");
    }

    #[test]
    fn the_post_mortem_names_an_old_issue_that_fired_more_after_the_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = with_sentry(dir.path());
        traffic_with_issue(&mut e, T0 - 300.0, 300, "100", 10);
        let id = e.notify(&request("human"), T0).unwrap().id;
        // The old issue now fires every second.
        traffic_with_issue(&mut e, T0, 60, "100", 1);
        let c = e.change(&id).unwrap().unwrap().record;
        assert_eq!(c.state, ChangeState::Regressed, "{:?}", c.note);
        let input = crate::report::postmortem::load(&e.store, "shop", &id)
            .unwrap()
            .unwrap();
        assert!(input.sentry_issues.is_empty(), "not a new issue");
        let [risen] = input.sentry_risen.as_slice() else {
            panic!("{:?}", input.sentry_risen)
        };
        assert_eq!(risen.issue.id, "100");
        // An event in 200 requests before; one in 20 after.
        assert!(
            risen.after.rate().unwrap() > 8.0 * risen.before.rate().unwrap(),
            "{risen:?}"
        );
        let md = crate::report::postmortem::Postmortem::new(input).markdown();
        assert!(
            md.contains("## Sentry issues firing more after the change"),
            "{md}"
        );
        // The release watched against the one before, as the events said theirs.
        assert!(md.contains("## Sentry events per release"), "{md}");
        assert!(md.contains("`shop@2` 60"), "{md}");
        assert!(md.contains("`shop@1` "), "{md}");
    }

    #[test]
    fn an_issue_is_named_by_id_short_id_or_sentrys_own_link_and_nothing_else() {
        use crate::sentry::{Issue, IssueAction, Notice, Verified};
        let dir = tempfile::tempdir().unwrap();
        let mut e = with_sentry(dir.path());
        for (id, short) in [
            ("7001", "SHOP-1"),
            ("7002", "SHOP-DUP"),
            ("7003", "shop-dup"),
        ] {
            let issue = Issue {
                id: id.into(),
                short_id: Some(short.into()),
                title: "TypeError".into(),
                culprit: None,
                level: Some("error".into()),
                status: Some("unresolved".into()),
                substatus: None,
                project: Some("shop".into()),
                web_url: Some(format!("https://sentry.acme.internal/issues/{id}/")),
                first_seen: T0 - 60.0,
                last_seen: None,
                count: Some(3),
                files: vec![],
            };
            let delivery = Verified {
                resource: "issue".into(),
                request_id: None,
                body_sha256: format!("issue-{id}"),
                sent_at: T0,
            };
            let notice = Notice::Issue {
                action: IssueAction::Created,
                issue,
            };
            e.sentry_delivery(&delivery, &notice, T0).unwrap();
        }
        let sentry = |named: &str| e.resolve_issue(named).map(|n| (n.sentry, n.url));
        let own = Some("https://sentry.acme.internal/issues/7001/".to_owned());
        assert_eq!(sentry("7001").unwrap(), (Some("7001".into()), own.clone()));
        assert_eq!(
            sentry("shop-1").unwrap(),
            (Some("7001".into()), own.clone())
        );
        // Sentry's own link, on sentry.io or where its issues link to; the link kept is the
        // issue's own, which is what is judged.
        assert_eq!(
            sentry("https://acme.sentry.io/issues/7001/?project=1").unwrap(),
            (Some("7001".into()), own.clone())
        );
        assert_eq!(
            sentry("https://sentry.acme.internal/issues/7001/")
                .unwrap()
                .0,
            Some("7001".into())
        );
        // Another tracker's issue 7001 is a link, not Sentry's issue.
        let github = "https://github.com/acme/shop/issues/7001";
        assert_eq!(sentry(github).unwrap(), (None, Some(github.into())));
        // Two issues sharing a short id are named by id.
        match e.resolve_issue("SHOP-DUP") {
            Err(EngineError::BadRequest(m)) => assert!(m.contains("more than one"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(sentry("7003").unwrap().0, Some("7003".into()));
    }

    #[test]
    fn sentry_events_as_before_leave_a_healthy_change_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = with_sentry(dir.path());
        traffic_with_issue(&mut e, T0 - 300.0, 300, "100", 5);
        let id = e.notify(&request("human"), T0).unwrap().id;
        // The watch's minute, and the time Sentry's counts take to reach its end.
        traffic_with_issue(&mut e, T0, 100, "100", 5);
        let c = e.change(&id).unwrap().unwrap().record;
        assert_eq!(c.state, ChangeState::Healthy, "{:?}", c.note);
        let report: crate::core::Report =
            serde_json::from_value(c.report.clone().unwrap()).unwrap();
        let sentry = report.signals.last().unwrap();
        assert_eq!(sentry.signal, crate::core::SignalKind::SentryEvents);
        assert!(
            !sentry.regressed && sentry.e_value < 5.0,
            "{}",
            sentry.e_value
        );
        // An event every 5 s over the baseline's whole 10-second bins (300 s, less the edges).
        assert!(
            (54..=60).contains(&sentry.baseline.events),
            "{}",
            sentry.baseline.events
        );
    }

    #[test]
    fn a_regressed_changes_sentry_events_stay_out_of_the_next_changes_baseline() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = with_sentry(dir.path());
        traffic_with_issue(&mut e, T0 - 300.0, 300, "100", 10);
        let bad = e.notify(&request("human"), T0).unwrap().id;
        traffic_with_issue(&mut e, T0, 90, "200", 1);
        let c = e.change(&bad).unwrap().unwrap().record;
        assert_eq!(c.state, ChangeState::Regressed, "{:?}", c.note);
        // The fix: only the old issue fires again, as it did before the bad change.
        let fix = e.notify(&request("human"), T0 + 90.0).unwrap().id;
        traffic_with_issue(&mut e, T0 + 90.0, 110, "100", 10);
        assert_eq!(
            e.change(&fix).unwrap().unwrap().record.state,
            ChangeState::Healthy
        );
        // The next change's baseline reaches back past the bad change's minute and a half,
        // and so does the count of Sentry's events against it.
        let next = e.notify(&request("human"), T0 + 200.0).unwrap().id;
        traffic_with_issue(&mut e, T0 + 200.0, 100, "100", 10);
        let c = e.change(&next).unwrap().unwrap().record;
        let report: crate::core::Report =
            serde_json::from_value(c.report.clone().unwrap()).unwrap();
        let window = &report.baseline_window;
        assert!(
            window
                .left_out
                .iter()
                .any(|s| s.from <= T0 && s.to >= T0 + 90.0),
            "{window:?}"
        );
        let sentry = report.signals.last().unwrap();
        assert_eq!(sentry.signal, crate::core::SignalKind::SentryEvents);
        // The old issue's rate (0.5% of requests), not the bad change's (5.5%).
        let (events, requests) = (sentry.baseline.events, sentry.baseline.requests);
        assert!(
            events * 1000 <= requests * 6,
            "{events} events in {requests} requests"
        );
        assert_eq!(c.state, ChangeState::Healthy, "{:?}", c.note);
    }

    #[test]
    fn a_deploy_start_that_cannot_be_right_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = short_windows(dir.path());
        for (started, says) in [
            (T0 + 60.0, "after now"),
            (T0 - 86_400.0, "is it in seconds"),
            (f64::NAN, "must be unix seconds"),
        ] {
            let mut r = request("human");
            r.deploy_started_at = Some(started);
            match e.notify(&r, T0) {
                Err(EngineError::BadRequest(m)) => {
                    assert!(m.contains("deploy_started_at") && m.contains(says), "{m}")
                }
                other => panic!("{started}: {other:?}"),
            }
        }
        assert!(e.recent(10).unwrap().is_empty());
    }

    #[test]
    fn an_inconclusive_ai_change_is_escalated_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = engine(dir.path(), InconclusivePolicy::Record);
        let id = e.notify(&request("ai"), T0).unwrap().id;
        e.tick(T0 + 11.0).unwrap();
        let c = e.change(&id).unwrap().unwrap().record;
        assert_eq!(c.state, ChangeState::Inconclusive);
        assert!(c.note.unwrap().contains("a person should look"));
    }

    #[test]
    fn a_regression_decided_while_a_change_is_notified_is_still_remediated() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(&format!(
            "[detector]\nbaseline_secs = 300\nwatch_secs = 60\n[daemon]\nstate_dir = {:?}\n\
             [daemon.rollback]\nrepo = \"/srv/app\"\nhook = [\"/bin/true\"]\n",
            dir.path()
        ))
        .unwrap();
        let settings = config.daemon.clone().unwrap();
        let mut e =
            Engine::with_store(&config, &settings, Store::open_in_memory().unwrap(), T0).unwrap();
        traffic(&mut e, T0 - 300.0, 300, 0.05);
        let first = e.notify(&request("human"), T0).unwrap().id;
        // Half the requests fail for 30 s, and nothing ticks until the next notification: its
        // own tick is the one that finds the regression.
        observe(
            &mut e,
            (0..600).map(|i| (T0 + f64::from(i) / 20.0, i % 2 == 0)),
        );
        let refused = e.notify(&request("human"), T0 + 31.0).unwrap_err();
        assert!(
            matches!(&refused, EngineError::Busy(id) if *id == first),
            "{refused}"
        );
        let (job, action) = e
            .remediation_due()
            .expect("the rollback is left for the owner");
        assert_eq!(
            (job.change_id.as_str(), action.kind()),
            (first.as_str(), EventKind::Rollback)
        );
        assert!(e.remediation_due().is_none(), "taken once");
        let c = e.change(&first).unwrap().unwrap().record;
        assert_eq!(c.state, ChangeState::RollingBack);
    }
}
