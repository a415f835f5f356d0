//! Sentry's verified deliveries, stored on the engine's owner (the store is its own), and what
//! `guardian status` shows of them.

use serde::{Deserialize, Serialize};

use super::{Engine, EngineError, SentryPollStatus};
use crate::core::evidence::Counts;
use crate::sentry::Issue as SentryIssue;
use crate::sentry::{Notice, QuietBefore, Verified};
use crate::store::{Delivered, Store};

/// How far back `guardian status` looks for new issues when no change is watched.
const LOOK_BACK_SECS: f64 = 86_400.0;
/// How often Sentry's events are counted while they are judged.
const COUNT_EVERY_SECS: f64 = 5.0;
/// New issues `guardian status` lists at most.
const SHOWN: u32 = 20;
/// Releases shown on each side of a change, at most.
const RELEASES_SHOWN: u32 = 3;

/// What `guardian status` shows of Sentry, when `[daemon.sentry]` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SentryStatus {
    /// When the last delivery arrived (within a day).
    pub last_delivery_at: Option<f64>,
    /// Issues first seen at or after `since`: the watched change's landing, else a day ago.
    pub since: f64,
    /// The newest of them (at most 20), newest first ...
    pub new_issues: Vec<SentryIssue>,
    /// ... of this many.
    #[serde(default)]
    pub new_issues_total: u64,
    /// Sentry's API polled for events, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<SentryPollStatus>,
    /// Events per release since the watched change landed, and over as long before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releases: Option<ReleaseEvents>,
}

/// Events per release (those whose events say theirs) after a change and over as long before
/// it: the release being watched against the one before, when Sentry is told releases.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseEvents {
    /// `[change, change + span)` and `[change - span, change)`, seconds (at most a day).
    pub span_secs: f64,
    /// The releases with the most events, most first (at most 3 each).
    pub after: Vec<(String, u64)>,
    pub before: Vec<(String, u64)>,
}

impl ReleaseEvents {
    /// Read from `store` for a change that landed at `change_at`, up to `to`; `None` when no
    /// event said its release.
    pub fn read(
        store: &Store,
        change_at: f64,
        to: f64,
    ) -> Result<Option<ReleaseEvents>, EngineError> {
        let span = (to - change_at).clamp(0.0, LOOK_BACK_SECS);
        let after = store.sentry_events_by_release(change_at, change_at + span, RELEASES_SHOWN)?;
        let before = store.sentry_events_by_release(change_at - span, change_at, RELEASES_SHOWN)?;
        Ok(
            (!after.is_empty() || !before.is_empty()).then_some(ReleaseEvents {
                span_secs: span,
                after,
                before,
            }),
        )
    }
}

impl SentryStatus {
    /// Read from `store`; `since`: when the watched change landed, if one is watched; `poll`:
    /// the poller's, from memory.
    pub fn read(
        store: &Store,
        now: f64,
        since: Option<f64>,
        poll: Option<SentryPollStatus>,
    ) -> Result<SentryStatus, EngineError> {
        let releases = match since {
            Some(change_at) => ReleaseEvents::read(store, change_at, now)?,
            None => None,
        };
        let since = since.unwrap_or(now - LOOK_BACK_SECS);
        Ok(SentryStatus {
            poll,
            releases,
            last_delivery_at: store.sentry_last_delivery()?,
            since,
            new_issues: store.sentry_issues_since(since, SHOWN)?,
            new_issues_total: store.sentry_issues_count_since(since)?,
        })
    }
}

/// The issue a change or a proposal says it fixes, as resolved (`Engine::resolve_issue`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamedIssue {
    /// The Sentry issue's id, when it is one guardian has heard of: the claim is judged.
    pub sentry: Option<String>,
    /// A link to it: as given, or the Sentry issue's own.
    pub url: Option<String>,
}

/// The issue id in a Sentry issue link (`https://acme.sentry.io/issues/4711/`,
/// `https://sentry.io/organizations/acme/issues/4711/?project=1`), with the link's origin
/// (`https://acme.sentry.io`).
fn sentry_link_id(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let origin = &url[..scheme.len() + 3 + host_end];
    let (_, after) = rest[host_end..].split_once("/issues/")?;
    let id = after.split(['/', '?', '#']).next()?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some((origin, id))
}

/// Whether `origin` is sentry.io's (`https://sentry.io`, `https://acme.sentry.io`).
fn is_sentry_io(origin: &str) -> bool {
    let host = origin.split_once("://").map_or(origin, |(_, h)| h);
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    host == "sentry.io" || host.ends_with(".sentry.io")
}

impl Engine {
    /// What `named` (a proposal's or a notification's `issue`) refers to. A link to another
    /// tracker is kept as a link, as is any link without `[daemon.sentry]`. With it, a Sentry
    /// issue (its id, short id or link) must be one guardian has heard of, since the claim is
    /// judged on its events: a typo is refused rather than judged on nothing.
    pub fn resolve_issue(&self, named: &str) -> Result<NamedIssue, EngineError> {
        let named = named.trim();
        let is_url = named.starts_with("https://") || named.starts_with("http://");
        // Without Sentry's events nothing can be judged: a link is a link. A link is Sentry's
        // when it goes to sentry.io or to where the issues Sentry sent link to (a self-hosted
        // Sentry); another tracker's `/issues/12` is not Sentry's issue 12.
        let reference = match (is_url, &self.settings.sentry) {
            (true, None) => None,
            (true, Some(_)) => match sentry_link_id(named) {
                Some((origin, id))
                    if is_sentry_io(origin) || self.store.sentry_links_to(origin)? =>
                {
                    Some(id)
                }
                _ => None,
            },
            (false, _) => Some(named),
        };
        let Some(reference) = reference else {
            return Ok(NamedIssue {
                sentry: None,
                url: Some(named.to_owned()),
            });
        };
        if self.settings.sentry.is_none() {
            return Err(EngineError::BadRequest(format!(
                "\"issue\" {named:?} is not a link, and without [daemon.sentry] guardian knows \
                 no Sentry issues; give a link to the issue"
            )));
        }
        let mut found = self.store.sentry_issues_named(reference)?;
        match found.len() {
            1 => {
                let issue = found.remove(0);
                Ok(NamedIssue {
                    // The link shown is the issue's own, which is what is judged.
                    url: issue
                        .web_url
                        .clone()
                        .or_else(|| is_url.then(|| named.to_owned())),
                    sentry: Some(issue.id),
                })
            }
            0 => Err(EngineError::BadRequest(format!(
                "\"issue\" {named:?}: guardian has heard of no Sentry issue {reference:?} (by \
                 id or short id); name one Sentry has sent (`guardian status` lists the \
                 newest), or link another tracker's issue"
            ))),
            _ => Err(EngineError::BadRequest(format!(
                "\"issue\" {named:?}: more than one Sentry issue has the short id \
                 {reference:?} ({} and {}); name it by its id",
                found[0].id, found[1].id
            ))),
        }
    }

    /// Hands the supervisor Sentry's events and the requests they are counted against, when
    /// it judges them: in the spans the baseline covers, and since the change, each in the
    /// same whole 10-second bins of the stored traffic series, so events and requests cover
    /// the same time (the bin the change landed in may hold its deploy's restart: it is left
    /// out). New counts come a bin at a time, and deliveries a few seconds late: counted every
    /// few seconds, not every tick.
    pub(super) fn count_sentry_events(&mut self, now: f64) -> Result<(), EngineError> {
        let Some((covered, change_at)) = self.supervisor.sentry_window() else {
            self.sentry_counted_at = f64::NEG_INFINITY;
            return Ok(());
        };
        if now - self.sentry_counted_at < COUNT_EVERY_SECS {
            return Ok(());
        }
        self.sentry_counted_at = now;
        let bin = |t: f64| (t / 10.0).floor() * 10.0;
        let covered: Vec<(f64, f64)> = covered
            .iter()
            .map(|span| (bin(span.from), bin(span.to)))
            .collect();
        let start = (change_at / 10.0).ceil() * 10.0;
        let (mut requests_after, until) = self.store.series_requests(start, now)?;
        let Some(mut until) = until else {
            return Ok(());
        };
        // Polled, Sentry's events are known only as far as the poll has read: counted past
        // that, an API that fails would read as a change without exceptions.
        let mut behind = None;
        if let Some(poll) = self.sentry_poll_status() {
            let reached = poll.reached.map_or(start, bin).max(start);
            if reached < until {
                until = reached;
                requests_after = self.store.series_requests(start, until)?.0;
                let read = match poll.reached {
                    Some(at) => format!("read only up to {}", crate::report::units::when(at)),
                    None => "not read yet".to_owned(),
                };
                behind = Some(match &poll.last_error {
                    Some(error) => {
                        format!("Sentry's API is failing ({error}): its events are {read}")
                    }
                    None => format!("Sentry's events are {read} (polled every few seconds)"),
                });
            }
        }
        self.supervisor.sentry_behind(behind);
        let mut requests_before = 0;
        for &(from, to) in &covered {
            requests_before += self.store.series_requests(from, to)?.0;
        }
        // Every issue's events, and the claimed issue's alone, over the same bins.
        let store = &self.store;
        let count = |issue: Option<&str>| -> Result<(Counts, Counts), EngineError> {
            let events = |from, to| match issue {
                None => store.sentry_events_all(from, to),
                Some(id) => store.sentry_events(id, from, to),
            };
            let mut baseline = Counts {
                requests: requests_before,
                events: 0,
            };
            for &(from, to) in &covered {
                baseline.events += events(from, to)?;
            }
            let after = Counts {
                requests: requests_after,
                events: events(start, until)?,
            };
            Ok((baseline, after))
        };
        let (baseline, after) = count(None)?;
        let claim = match self.supervisor.claimed_issue() {
            Some(issue) => {
                let (baseline, after) = count(Some(issue))?;
                // Its quiet stretch: the whole bins after its last event before the change's.
                let last_event_at = self.store.sentry_last_event_before(issue, change_at)?;
                let requests = match last_event_at {
                    Some(at) => self.store.series_requests(at + 10.0, bin(change_at))?.0,
                    None => 0,
                };
                let quiet = QuietBefore {
                    requests,
                    last_event_at,
                };
                Some((baseline, after, quiet))
            }
            None => None,
        };
        self.supervisor.sentry_counts(baseline, after, until);
        if let Some((baseline, after, quiet)) = claim {
            self.supervisor.claim_counts(baseline, after, quiet, until);
        }
        Ok(())
    }

    /// Records a delivery verified as Sentry's (`sentry::verify`), once.
    pub fn sentry_delivery(
        &mut self,
        delivery: &Verified,
        notice: &Notice,
        now: f64,
    ) -> Result<Delivered, EngineError> {
        let delivered = self.store.sentry_delivery(delivery, notice, now)?;
        match (&delivered, notice) {
            (Delivered::Duplicate { received_at }, _) => tracing::debug!(
                "sentry: {} delivery {} was processed at {received_at:.0}; not again",
                delivery.resource,
                delivery
                    .request_id
                    .as_deref()
                    .unwrap_or(&delivery.body_sha256)
            ),
            (Delivered::New, Notice::Issue { action, issue }) => tracing::info!(
                sentry_issue = %issue.id,
                "sentry: issue {} {}: {}",
                issue.short_id.as_deref().unwrap_or(&issue.id),
                action.as_str(),
                crate::display::line(&issue.title)
            ),
            (Delivered::New, _) => {
                tracing::debug!("sentry: {} delivery recorded", delivery.resource)
            }
        }
        if delivered == Delivered::New {
            self.agent_heard(notice, now);
        }
        Ok(delivered)
    }
}
