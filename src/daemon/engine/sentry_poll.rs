//! Sentry's API polled beside its webhooks, the engine's side: every `poll_secs` a poll is
//! started on a thread of its own (`daemon::sentry_api`, a few HTTP requests with timeouts:
//! never on the owner), and its result is taken on a later turn of the owner, as a scrape's
//! is. Its events go into the store the webhooks' go into, each counted once whoever told it;
//! the issues they belong to that Sentry never described are asked for once. Where it reached,
//! what it took and what went wrong are kept for `guardian status`.

use std::collections::HashSet;
use std::sync::{mpsc, Arc};

use serde::{Deserialize, Serialize};

use super::{Engine, EngineError};
use crate::config::SentryApiSettings;
use crate::daemon::sentry_api::{ApiFailure, PollJob, PollResult, SentryApi};
use crate::sentry::REPLAY_WINDOW_SECS;

/// How far back the first poll asks: what a baseline can cover (later polls go on from where
/// the last reached).
const FIRST_LOOK_BACK_SECS: f64 = 3600.0;
/// Each poll asks again for the last two minutes before where the previous one reached:
/// Sentry ingests events some seconds late, and an event counted twice is counted once.
const OVERLAP_SECS: f64 = 120.0;
/// The longest wait between polls when Sentry's API fails or asks guardian to wait.
const MAX_BACKOFF_SECS: f64 = 600.0;
/// Skipped rows are logged at most once this often (with the count since).
const SKIP_LOG_EVERY_SECS: f64 = 60.0;
/// Issues remembered as asked for, at most (then forgotten all at once: asked again at worst).
const ASKED_KEPT: usize = 10_000;

/// What `guardian status` shows of the poller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SentryPollStatus {
    /// The organization and project polled (`acme/shop-api`, `acme/#42`).
    pub target: String,
    /// When the last poll ended, whatever its outcome.
    pub last_poll_at: Option<f64>,
    /// When a poll last read Sentry's answer through.
    pub last_ok_at: Option<f64>,
    /// How far in time the events read reach.
    pub reached: Option<f64>,
    /// Events the last poll took that no one had told guardian of; and since the start.
    pub last_new_events: u64,
    pub new_events_total: u64,
    /// Rows read since the start, and those skipped as unreadable or out of time.
    pub rows_total: u64,
    pub rows_skipped_total: u64,
    /// The last poll's failure, while it lasts.
    pub last_error: Option<String>,
    /// Polls in a row that failed.
    pub failures: u32,
    /// Whether the last poll read every page up to its end (else the next goes on from
    /// `reached` without the overlap).
    #[serde(default)]
    pub caught_up: bool,
}

/// The poller: its API client, when the next poll is due, and what is under way.
pub struct SentryPoller {
    api: Arc<SentryApi>,
    every: f64,
    next: f64,
    running: bool,
    /// Issues to ask Sentry about on the next poll, and those asked about already.
    undescribed: Vec<String>,
    asked: HashSet<String>,
    status: SentryPollStatus,
    /// Skipped rows not logged yet, and when they last were.
    skipped_unlogged: u64,
    skip_logged_at: f64,
    results: mpsc::Receiver<PollResult>,
    done: mpsc::Sender<PollResult>,
}

impl SentryPoller {
    pub fn new(settings: &SentryApiSettings) -> Result<SentryPoller, EngineError> {
        let api = SentryApi::load(settings).map_err(EngineError::Config)?;
        let (done, results) = mpsc::channel();
        let target = match &settings.project {
            crate::config::SentryProject::Slug(slug) => format!("{}/{slug}", settings.org),
            crate::config::SentryProject::Id(id) => format!("{}/#{id}", settings.org),
        };
        Ok(SentryPoller {
            api: Arc::new(api),
            every: f64::from(settings.poll_secs),
            next: f64::NEG_INFINITY,
            running: false,
            undescribed: Vec::new(),
            asked: HashSet::new(),
            status: SentryPollStatus {
                target,
                ..SentryPollStatus::default()
            },
            skipped_unlogged: 0,
            skip_logged_at: f64::NEG_INFINITY,
            results,
            done,
        })
    }

    pub fn status(&self) -> SentryPollStatus {
        self.status.clone()
    }

    /// The next poll's job at `now`: from where the last reached (less the overlap), else an
    /// hour back; never older than the store remembers event ids, so an event is never
    /// counted twice.
    fn job(&mut self, now: f64) -> PollJob {
        let oldest = now - REPLAY_WINDOW_SECS + 3600.0;
        let start = match self.status.reached {
            Some(reached) if self.status.caught_up => reached - OVERLAP_SECS,
            Some(reached) => reached,
            None => now - FIRST_LOOK_BACK_SECS,
        }
        .max(oldest)
        .min(now - 1.0);
        let take = self
            .undescribed
            .len()
            .min(crate::daemon::sentry_api::MAX_ISSUES);
        let issues: Vec<String> = self.undescribed.drain(..take).collect();
        if self.asked.len() > ASKED_KEPT {
            self.asked.clear();
        }
        self.asked.extend(issues.iter().cloned());
        PollJob {
            start,
            end: now,
            issues,
        }
    }

    /// When to poll next after a poll that ended at `now` as `failure` says: on time when it
    /// worked; after `Retry-After` when rate limited; backing off (doubling, at most ten
    /// minutes) while Sentry is unavailable or refuses the token.
    fn schedule(&mut self, now: f64, failure: Option<&ApiFailure>) {
        let backoff = |failures: u32| {
            (self.every * 2f64.powi(failures.min(10) as i32)).min(MAX_BACKOFF_SECS.max(self.every))
        };
        self.next = now
            + match failure {
                None => self.every,
                Some(ApiFailure::RateLimited {
                    retry_after: Some(s),
                }) => s.clamp(self.every, 3600.0),
                Some(_) => backoff(self.status.failures),
            };
    }
}

impl Engine {
    /// Takes a finished poll's result and starts the next poll when one is due. On the owner:
    /// never waits on the network.
    pub fn poll_sentry_api(&mut self, now: f64) -> Result<(), EngineError> {
        let store = &mut self.store;
        let Some(poller) = self.sentry_poller.as_mut() else {
            return Ok(());
        };
        let mut heard: Vec<String> = Vec::new();
        while let Ok(result) = poller.results.try_recv() {
            poller.running = false;
            let polled = store.sentry_polled(&result.events, &result.issues, now)?;
            for id in polled.undescribed {
                if !poller.asked.contains(&id) && !poller.undescribed.contains(&id) {
                    poller.undescribed.push(id);
                }
            }
            for id in polled.heard {
                if !heard.contains(&id) {
                    heard.push(id);
                }
            }
            take(poller, &result, polled.new_events, now);
        }
        if !poller.running && now >= poller.next {
            let job = poller.job(now);
            poller.running = true;
            poller.next = now + poller.every;
            let (api, done) = (poller.api.clone(), poller.done.clone());
            // Stamped with this tick's time: the engine reads no clock.
            std::thread::spawn(move || {
                let _ = done.send(api.poll(&job, now));
            });
        }
        for id in heard {
            self.agent_polled(&id, now);
        }
        Ok(())
    }

    /// What `guardian status` shows of the poller, when Sentry's API is polled.
    pub(super) fn sentry_poll_status(&self) -> Option<SentryPollStatus> {
        self.sentry_poller.as_ref().map(SentryPoller::status)
    }
}

/// Keeps what a finished poll says for the status, logs what a person should hear (a failure
/// once when it starts or changes, skipped rows at most once a minute), and schedules the
/// next poll.
fn take(poller: &mut SentryPoller, result: &PollResult, new_events: u64, now: f64) {
    let status = &mut poller.status;
    status.last_poll_at = Some(now);
    status.rows_total += result.events.len() as u64 + result.skipped_count;
    status.rows_skipped_total += result.skipped_count;
    status.last_new_events = new_events;
    status.new_events_total += new_events;
    if let Some(reached) = result.reached {
        // Rows come in time order: a poll cut short by its page bound reached its last row,
        // and the next goes on from there (a poll starts at most the overlap before where the
        // last one reached, so this moves back by no more than that).
        status.reached = Some(reached);
        status.caught_up = result.complete;
    }
    poller.skipped_unlogged += result.skipped_count;
    if poller.skipped_unlogged > 0 && now - poller.skip_logged_at >= SKIP_LOG_EVERY_SECS {
        let first = result
            .skipped
            .first()
            .map(|s| format!("; e.g. row {} of a page: {} {}", s.row, s.field, s.why))
            .unwrap_or_default();
        tracing::warn!(
            "sentry api: {} event row{} skipped since the last report{}",
            poller.skipped_unlogged,
            if poller.skipped_unlogged == 1 {
                ""
            } else {
                "s"
            },
            crate::display::line(&first)
        );
        poller.skipped_unlogged = 0;
        poller.skip_logged_at = now;
    }
    match &result.failure {
        None => {
            if status.last_error.is_some() {
                tracing::info!("sentry api: polling works again");
            }
            status.last_ok_at = Some(now);
            status.last_error = None;
            status.failures = 0;
        }
        Some(failure) => {
            let said = failure.to_string();
            // Said once when it starts failing (or fails differently), not every poll.
            if status.last_error.as_ref() != Some(&said) {
                tracing::warn!("sentry api: {said} (polling goes on, less often)");
            }
            status.failures = status.failures.saturating_add(1);
            status.last_error = Some(said);
        }
    }
    poller.schedule(now, result.failure.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SentryProject;

    fn poller(dir: &std::path::Path) -> SentryPoller {
        let token = dir.join("token");
        std::fs::write(&token, "sntrys_0123456789abcdef\n").unwrap();
        SentryPoller::new(&SentryApiSettings {
            api_url: "http://127.0.0.1:9".into(),
            org: "acme".into(),
            project: SentryProject::Slug("shop".into()),
            auth_token_file: token,
            poll_secs: 30,
            environment: None,
        })
        .unwrap()
    }

    const NOW: f64 = 1_764_000_000.0;

    #[test]
    fn each_poll_goes_on_from_where_the_last_reached_less_the_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = poller(dir.path());
        let job = p.job(NOW);
        assert_eq!((job.start, job.end), (NOW - 3600.0, NOW));
        take(
            &mut p,
            &PollResult {
                reached: Some(NOW),
                complete: true,
                ..PollResult::default()
            },
            0,
            NOW,
        );
        assert_eq!(p.next, NOW + 30.0);
        let job = p.job(NOW + 30.0);
        assert_eq!(job.start, NOW - 120.0);
        // One cut short by its page bound goes on from its last row, without the overlap, or
        // it would read the same pages again.
        take(
            &mut p,
            &PollResult {
                reached: Some(NOW - 60.0),
                complete: false,
                ..PollResult::default()
            },
            0,
            NOW + 30.0,
        );
        let job = p.job(NOW + 60.0);
        assert_eq!(job.start, NOW - 60.0);
        // One that read nothing leaves where the last reached as it was.
        take(
            &mut p,
            &PollResult {
                reached: None,
                failure: Some(ApiFailure::Unavailable("503".into())),
                ..PollResult::default()
            },
            0,
            NOW + 31.0,
        );
        assert_eq!(p.status.reached, Some(NOW - 60.0));
        // After a long outage, never further back than event ids are remembered.
        let job = p.job(NOW + 2.0 * 86_400.0);
        assert_eq!(
            job.start,
            NOW + 2.0 * 86_400.0 - REPLAY_WINDOW_SECS + 3600.0
        );
    }

    #[test]
    fn failures_back_off_and_a_refused_token_is_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = poller(dir.path());
        let refused = PollResult {
            failure: Some(ApiFailure::Refused {
                status: 401,
                detail: ": Invalid token".into(),
            }),
            ..PollResult::default()
        };
        take(&mut p, &refused, 0, NOW);
        assert_eq!(p.next, NOW + 60.0);
        take(&mut p, &refused, 0, NOW + 60.0);
        assert_eq!(p.next, NOW + 60.0 + 120.0);
        for i in 0..10 {
            take(&mut p, &refused, 0, NOW + 1000.0 * f64::from(i));
        }
        assert_eq!(
            p.next,
            NOW + 9000.0 + MAX_BACKOFF_SECS,
            "at most ten minutes"
        );
        assert_eq!(
            p.status.last_error.as_deref(),
            Some(
                "Sentry's API refused the token (401: Invalid token): check that \
                 auth_token_file holds a valid auth token with org:read and event:read for \
                 this organization"
            )
        );
        let limited = PollResult {
            failure: Some(ApiFailure::RateLimited {
                retry_after: Some(90.0),
            }),
            ..PollResult::default()
        };
        take(&mut p, &limited, 0, NOW);
        assert_eq!(p.next, NOW + 90.0, "Retry-After is honoured");
        take(&mut p, &PollResult::default(), 0, NOW + 100.0);
        assert_eq!((p.status.failures, p.status.last_error.clone()), (0, None));
        assert_eq!(p.next, NOW + 130.0);
    }
}
