//! What `guardian status` and `GET /v1/changes/ID` show: the half that lives in the engine's
//! memory, copied on its owner's thread in microseconds, and the half read from the database
//! on a connection of the reader's own.

use serde::{Deserialize, Serialize};

use super::{
    AgentStatus, ChangeView, Engine, EngineError, HealthStatus, Phase, SentryStatus, SourceView,
};
use crate::core::Report;
use crate::store::{ChangeRecord, Store};
use crate::tail::TailStatus;

/// What `guardian status` shows of a log.
#[derive(Debug, Serialize, Deserialize)]
pub struct SourceStatus {
    pub name: String,
    #[serde(flatten)]
    pub tail: TailStatus,
    pub bad_lines: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_bad_line: Option<String>,
    /// When lines last arrived (unix seconds), and how long ago.
    pub last_read_at: Option<f64>,
    pub idle_secs: Option<f64>,
}

/// What `guardian status` shows of a Prometheus target.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ScrapeStatus {
    pub name: String,
    pub url: String,
    /// When the last scrape succeeded, and how long ago.
    pub last_ok_at: Option<f64>,
    pub age_secs: Option<f64>,
    /// Why the last scrape failed, when it did: that interval is missing data, never zero.
    pub last_error: Option<String>,
    pub failures: u64,
    /// A source read back from Prometheus's query API: the latest time its traffic is complete
    /// to (the core judges no second after it until its patience runs out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_until: Option<f64>,
    /// A source that tells a canary from the rest (`canary_label`): the label, and the values
    /// on the canary now (none: the service as a whole), as the config or the last
    /// notification named them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryNow>,
}

/// The canary a source compares against the rest now.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CanaryNow {
    pub label: String,
    pub values: Vec<String>,
    /// The config's canary: what a change notified without one gets (none: the service as a
    /// whole).
    #[serde(default)]
    pub configured: Vec<String>,
}

/// What `guardian status` shows: the answer to `GET /v1/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub service: String,
    pub now: f64,
    pub watching: Option<ChangeView>,
    /// When nothing is watched: the baseline a change notified now would be judged against,
    /// and what makes it thin.
    pub baseline_now: Option<crate::core::BaselinePreview>,
    pub recent: Vec<ChangeRecord>,
    pub sources: Vec<SourceStatus>,
    pub scrapes: Vec<ScrapeStatus>,
    /// Alert emails queued and not yet accepted by the SMTP server.
    pub pending_emails: usize,
    /// Why the latest try to send one failed, and how many tries it has had.
    pub pending_email_trouble: Option<(String, i64)>,
    /// Notifications (`[[daemon.notify]]`) queued and not yet accepted, and why the latest
    /// try failed (`target: error`).
    #[serde(default)]
    pub pending_notifications: usize,
    #[serde(default)]
    pub pending_notification_trouble: Option<String>,
    /// The proposal being deployed, if one is.
    pub deploying: Option<String>,
    /// Proposals waiting for a person.
    pub proposals_waiting: usize,
    /// Proposals approved and waiting to be deployed (after the change being watched).
    #[serde(default)]
    pub proposals_approved: usize,
    /// Deploys of proposals are paused: by whom, why, since when.
    pub deploys_paused: Option<(String, String, f64)>,
    /// What Sentry said lately, when `[daemon.sentry]` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentry: Option<SentryStatus>,
    /// When a deploy said it was starting (`notify --starting`) and no change has been
    /// notified since: the next notification's deploy window begins there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_starting: Option<f64>,
    /// The agent's runs, when `[daemon.agent]` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentStatus>,
    /// The health check and its restarts, when `[daemon.health]` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// The flag_off action's track record, when `[daemon.flag_off]` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag_off: Option<FlagOffStatus>,
    /// When the decision loop last ticked (`None`: not yet): a loop that stopped ticking
    /// decides nothing, whatever else the status says.
    #[serde(default)]
    pub last_tick: Option<f64>,
}

/// The flag_off action's track record: how its attempts ended, and the latest few.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlagOffStatus {
    pub tally: crate::store::FlagTally,
    pub max_per_hour: u32,
    pub shadow: bool,
    /// The latest attempts, newest first.
    pub recent: Vec<crate::store::FlagAction>,
}

/// What `guardian status` shows that lives in the engine's memory (see
/// [`Engine::live_status`]).
#[derive(Debug)]
pub struct LiveStatus {
    pub service: String,
    pub now: f64,
    /// The change watched (or being rolled back, or checked), with its evidence so far.
    pub watching: Option<(String, Option<Report>)>,
    pub baseline_now: Option<crate::core::BaselinePreview>,
    pub deploying: Option<String>,
    pub sources: Vec<SourceStatus>,
    pub scrapes: Vec<ScrapeStatus>,
    /// Whether Sentry's webhooks are configured (`[daemon.sentry]`).
    pub sentry: bool,
    /// The poller of Sentry's API, when it is polled.
    pub sentry_poll: Option<super::SentryPollStatus>,
    pub deploy_starting: Option<f64>,
    pub agent: Option<AgentStatus>,
    pub health: Option<HealthStatus>,
    /// `[daemon.flag_off]`'s `max_per_hour` and `shadow`, when it is set.
    pub flag_off: Option<(u32, bool)>,
}

impl LiveStatus {
    /// The whole status: this, and what `store` holds. Each read is by index or from a
    /// tally, so its cost does not grow with the record.
    pub fn complete(self, store: &Store) -> Result<Status, EngineError> {
        let notifications = store.pending_notifications()?;
        let watching = match self.watching {
            None => None,
            Some((id, live)) => store
                .get_change(&id)?
                .map(|record| ChangeView { record, live }),
        };
        let sentry = match self.sentry {
            false => None,
            true => {
                let since = watching.as_ref().map(|w| w.record.landed_at);
                Some(SentryStatus::read(
                    store,
                    self.now,
                    since,
                    self.sentry_poll,
                )?)
            }
        };
        Ok(Status {
            service: self.service,
            now: self.now,
            watching,
            baseline_now: self.baseline_now,
            recent: store.recent_changes(10)?,
            deploying: self.deploying,
            deploys_paused: store.gate_paused()?,
            proposals_waiting: store.pending_proposals()?,
            proposals_approved: store.approved_waiting()?,
            pending_emails: store.pending_emails()?,
            pending_email_trouble: store.pending_email_trouble()?,
            pending_notifications: notifications.0,
            pending_notification_trouble: notifications.1,
            scrapes: self.scrapes,
            sources: self.sources,
            sentry,
            deploy_starting: self.deploy_starting,
            agent: self.agent.map(|a| a.complete(store)).transpose()?,
            health: self.health,
            flag_off: match self.flag_off {
                None => None,
                Some((max_per_hour, shadow)) => Some(FlagOffStatus {
                    tally: store.flag_tally()?,
                    max_per_hour,
                    shadow,
                    recent: store.recent_flag_actions(5)?,
                }),
            },
            // The API's edge knows it (`daemon::metrics`), not the engine: filled in there.
            last_tick: None,
        })
    }
}

/// What the status page needs of the engine's memory, copied on its owner's thread; the rest
/// it reads from the store (`daemon::page`).
pub struct PageLive {
    pub status: LiveStatus,
    /// Traffic not stored yet (the open bins), for the chart's last seconds.
    pub recent_bins: Vec<crate::series::SeriesPoint>,
    pub min_baseline_requests: u64,
    /// The trust gate's rules, when there is a gate.
    pub trust_rules: Option<super::gate::TrustRules>,
}

impl Engine {
    /// See [`PageLive`].
    pub fn page_live(&self, now: f64) -> PageLive {
        PageLive {
            status: self.live_status(now),
            recent_bins: self.recent_bins(),
            min_baseline_requests: self.config.detector.min_baseline_requests,
            trust_rules: self.settings.gate.is_some().then(|| self.trust_rules()),
        }
    }

    /// Traffic not stored yet (the open bins): a chart drawn now needs it to show the last
    /// minute at all.
    pub fn recent_bins(&self) -> Vec<crate::series::SeriesPoint> {
        self.series.snapshot()
    }

    pub fn change(&self, id: &str) -> Result<Option<ChangeView>, EngineError> {
        let Some(record) = self.store.get_change(id)? else {
            return Ok(None);
        };
        let live = self.live_report(id);
        Ok(Some(ChangeView { record, live }))
    }

    pub fn recent(&self, limit: usize) -> Result<Vec<ChangeRecord>, EngineError> {
        Ok(self.store.recent_changes(limit)?)
    }

    pub fn status(&self, now: f64) -> Result<Status, EngineError> {
        self.live_status(now).complete(&self.store)
    }

    /// The evidence so far of change `id`, when it is the one being watched (or checked for
    /// recovery). In memory only: cheap under the engine's lock.
    pub fn live_report(&self, id: &str) -> Option<Report> {
        match self.supervisor.phase() {
            Phase::Watching(current) | Phase::Verifying(current) if current.id == id => {
                self.supervisor.report()
            }
            _ => None,
        }
    }

    /// The half of the status that lives in memory: taken under the engine's lock in
    /// microseconds; [`LiveStatus::complete`] reads the rest from the database, off the lock.
    pub fn live_status(&self, now: f64) -> LiveStatus {
        let watching = match self.supervisor.phase() {
            Phase::Idle | Phase::Deploying(_) => None,
            Phase::Watching(c) | Phase::Remediating(c) | Phase::Verifying(c) => {
                Some((c.id.clone(), self.live_report(&c.id)))
            }
        };
        let watching_none = watching.is_none();
        let (mut sources, mut scrapes) = (Vec::new(), Vec::new());
        for source in &self.sources {
            match source.status(now) {
                SourceView::Log(s) => sources.push(s),
                SourceView::Scrape(s) => scrapes.push(s),
            }
        }
        LiveStatus {
            service: self.settings.service.clone(),
            now,
            watching,
            // Only when nothing is watched: a watched change's report has its own baseline.
            baseline_now: watching_none.then(|| self.supervisor.monitor().baseline_preview(now)),
            deploying: match self.supervisor.phase() {
                Phase::Deploying(id) => Some(id.clone()),
                _ => None,
            },
            sources,
            scrapes,
            sentry: self.settings.sentry.is_some(),
            sentry_poll: self.sentry_poll_status(),
            deploy_starting: self.pending_deploy_start(now),
            agent: self.agent_live(now),
            health: self.health_live(now),
            flag_off: self
                .settings
                .flag_off
                .as_ref()
                .map(|f| (f.max_per_hour, f.shadow)),
        }
    }
}
