//! Sentry's REST API, the IO half: one poll is a few HTTP requests (ureq, with timeouts and a
//! cap on each body), run on a thread of its own and never on the engine's owner
//! (`engine/sentry_poll.rs` starts it and takes its result). What the answers say is read by
//! `sentry::api`, the pure half.

use std::io::Read as _;
use std::time::Duration;

use crate::config::{SentryApiSettings, SentryProject};
use crate::sentry::api::{self, EventsQuery, Skipped};
use crate::sentry::{Event, Issue};

/// Pages of events one poll reads at most (of `api::PER_PAGE` rows): a poll that has more to
/// read takes the rest on the next turn, from where it stopped.
pub const MAX_PAGES: u32 = 10;
/// Issues whose details one poll asks for at most.
pub const MAX_ISSUES: usize = 10;
/// Bytes of an answer read at most.
const MAX_BODY: u64 = 8 << 20;
/// Skipped rows a poll keeps to report (the rest are only counted).
const SKIPPED_KEPT: usize = 5;

/// Why a request did not bring an answer to read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ApiFailure {
    /// 401 or 403: the token is wrong, revoked, or lacks a scope. Said once, not every poll.
    #[error(
        "Sentry's API refused the token ({status}{detail}): check that auth_token_file holds a \
         valid auth token with org:read and event:read for this organization"
    )]
    Refused { status: u16, detail: String },
    /// 429: Sentry asks guardian to wait (`Retry-After`, seconds).
    #[error("Sentry's API is rate limiting guardian (429; {})", wait_words(*.retry_after))]
    RateLimited { retry_after: Option<f64> },
    /// 5xx, or no answer at all: tried again later, backing off.
    #[error("Sentry's API is unavailable: {0}")]
    Unavailable(String),
    /// Any other answer (404: a wrong org or project; a redirect; a body that does not read).
    #[error("Sentry's API: {0}")]
    Other(String),
}

/// A 429's `Retry-After` in words: "retry after 40 s", or that it gave none.
fn wait_words(retry_after: Option<f64>) -> String {
    match retry_after {
        Some(secs) => format!("retry after {secs:.0} s"),
        None => "no Retry-After given".to_owned(),
    }
}

/// What one poll is to do.
#[derive(Clone, Debug, PartialEq)]
pub struct PollJob {
    /// Events in `[start, end)`, unix seconds.
    pub start: f64,
    pub end: f64,
    /// Issues whose details to fetch first.
    pub issues: Vec<String>,
}

/// What one poll brought.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PollResult {
    pub events: Vec<Event>,
    /// Issues whose details were fetched.
    pub issues: Vec<Issue>,
    /// The first few rows skipped, and how many in all.
    pub skipped: Vec<Skipped>,
    pub skipped_count: u64,
    pub pages: u32,
    /// How far the events read reach: `end` when every page was read, else the time of the
    /// last row read (rows come in time order), else `None` (nothing was read).
    pub reached: Option<f64>,
    /// Whether every page was read (else the next poll goes on from `reached` as it is,
    /// without the overlap, or it would read the same pages again).
    pub complete: bool,
    /// Why it stopped early, if it did.
    pub failure: Option<ApiFailure>,
}

/// Sentry's API, as configured: the client and the token.
pub struct SentryApi {
    agent: ureq::Agent,
    settings: SentryApiSettings,
    token: String,
}

impl SentryApi {
    /// Reads the auth token from its file (its first line; a file others can read is warned
    /// about, as token files are).
    pub fn load(settings: &SentryApiSettings) -> Result<SentryApi, String> {
        let file = &settings.auth_token_file;
        let text = std::fs::read_to_string(file).map_err(|e| {
            format!(
                "[daemon.sentry] auth_token_file: cannot read {}: {e}",
                file.display()
            )
        })?;
        let token = text.lines().next().unwrap_or_default().trim().to_owned();
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "[daemon.sentry] auth_token_file: {} holds no auth token on its first line ({} \
                 characters); make one in Sentry (Settings, Developer Settings, an internal \
                 integration's token, or Organization Tokens) with org:read and event:read",
                file.display(),
                token.len()
            ));
        }
        if let Ok(meta) = std::fs::metadata(file) {
            use std::os::unix::fs::PermissionsExt as _;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "{} (Sentry's auth token) can be read by other users (mode {:o}); \
                     chmod 600 it, or hand it over as a systemd credential",
                    file.display(),
                    meta.permissions().mode() & 0o777
                );
            }
        }
        let loopback = url::Url::parse(&settings.api_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .is_some_and(|h| h == "localhost" || h == "127.0.0.1" || h == "[::1]");
        if settings.api_url.starts_with("http://") && !loopback {
            tracing::warn!(
                "[daemon.sentry] api_url {} is plain HTTP: the auth token crosses the network \
                 unencrypted; use https",
                settings.api_url
            );
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            // The token goes to the configured origin only.
            .redirects(0)
            .user_agent(concat!("guardian/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(SentryApi {
            agent,
            settings: settings.clone(),
            token,
        })
    }

    pub fn settings(&self) -> &SentryApiSettings {
        &self.settings
    }

    /// One poll: the issues' details, then events page by page, at most [`MAX_PAGES`]. Reads
    /// no clock: `now` is the time the rows are judged against.
    pub fn poll(&self, job: &PollJob, now: f64) -> PollResult {
        let mut result = PollResult::default();
        for id in job.issues.iter().take(MAX_ISSUES) {
            match self.get(&api::issue_path(&self.settings.org, id), &[]) {
                Ok((body, _)) => match crate::sentry::read_issue_details(&body) {
                    Ok(issue) if &issue.id == id => result.issues.push(issue),
                    Ok(issue) => {
                        tracing::warn!("sentry api: asked for issue {id}, was told of {}", issue.id)
                    }
                    Err(why) => {
                        tracing::warn!("sentry api: issue {id}'s details do not read: {why}")
                    }
                },
                // An issue deleted or merged since: nothing to describe.
                Err(ApiFailure::Other(why)) => {
                    tracing::debug!("sentry api: issue {id}: {why}")
                }
                Err(failure) => {
                    result.failure = Some(failure);
                    return result;
                }
            }
        }
        let project: &SentryProject = &self.settings.project;
        let mut cursor: Option<String> = None;
        loop {
            let query = EventsQuery {
                org: &self.settings.org,
                project,
                environment: self.settings.environment.as_deref(),
                start: job.start,
                end: job.end,
                cursor: cursor.as_deref(),
            };
            let (body, link) = match self.get(&query.path(), &query.params()) {
                Ok(answer) => answer,
                Err(failure) => {
                    result.failure = Some(failure);
                    return result;
                }
            };
            let page = match api::read_events_page(&body, now) {
                Ok(page) => page,
                Err(e) => {
                    result.failure = Some(ApiFailure::Other(e.to_string()));
                    return result;
                }
            };
            result.pages += 1;
            result.skipped_count += page.skipped.len() as u64;
            let room = SKIPPED_KEPT.saturating_sub(result.skipped.len());
            result.skipped.extend(page.skipped.into_iter().take(room));
            result.events.extend(page.events);
            if let Some(latest) = page.latest {
                result.reached = Some(result.reached.map_or(latest, |r: f64| r.max(latest)));
            }
            cursor = link.as_deref().and_then(api::next_cursor);
            match cursor {
                None if !page.truncated => {
                    result.reached = Some(job.end);
                    result.complete = true;
                    return result;
                }
                Some(_) if !page.truncated && result.pages < MAX_PAGES => {}
                // Cut short: the next poll goes on from the last row read, or a second after
                // this one's start should every row read share its first instant.
                _ => {
                    result.reached = Some(result.reached.unwrap_or(job.start).max(job.start + 1.0));
                    return result;
                }
            }
        }
    }

    /// GETs `path` with `params`: the body and the `Link` header, or why not.
    fn get(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<(Vec<u8>, Option<String>), ApiFailure> {
        let mut request = self
            .agent
            .get(&format!("{}{path}", self.settings.api_url))
            .set("Authorization", &format!("Bearer {}", self.token))
            .set("Accept", "application/json");
        for (key, value) in params {
            request = request.query(key, value);
        }
        match request.call() {
            Ok(response) if response.status() == 200 => {
                let link = response.header("Link").map(str::to_owned);
                let mut body = Vec::new();
                response
                    .into_reader()
                    .take(MAX_BODY + 1)
                    .read_to_end(&mut body)
                    .map_err(|e| ApiFailure::Unavailable(format!("reading {path}: {e}")))?;
                if body.len() as u64 > MAX_BODY {
                    return Err(ApiFailure::Other(format!(
                        "{path} answered more than {} MiB",
                        MAX_BODY >> 20
                    )));
                }
                Ok((body, link))
            }
            Ok(response) => Err(ApiFailure::Other(format!(
                "{path} answered {}{}",
                response.status(),
                match response.header("Location") {
                    Some(to) => format!(
                        " to {}: set api_url to the origin that answers",
                        crate::display::line(&to.chars().take(200).collect::<String>())
                    ),
                    None => String::new(),
                }
            ))),
            Err(ureq::Error::Status(status, response)) => {
                let retry_after = response
                    .header("Retry-After")
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0);
                let detail = response
                    .into_json::<serde_json::Value>()
                    .ok()
                    .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
                    .map(|d| {
                        format!(
                            ": {}",
                            crate::display::line(&d.chars().take(200).collect::<String>())
                        )
                    })
                    .unwrap_or_default();
                Err(match status {
                    401 | 403 => ApiFailure::Refused { status, detail },
                    429 => ApiFailure::RateLimited { retry_after },
                    500..=599 => {
                        ApiFailure::Unavailable(format!("{path} answered {status}{detail}"))
                    }
                    _ => ApiFailure::Other(format!("{path} answered {status}{detail}")),
                })
            }
            Err(ureq::Error::Transport(t)) => Err(ApiFailure::Unavailable(format!(
                "{path}: {}{}",
                t.kind(),
                t.message().map(|m| format!(" ({m})")).unwrap_or_default()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_says_how_long_to_wait_in_plain_words() {
        let limited = ApiFailure::RateLimited {
            retry_after: Some(40.0),
        };
        assert_eq!(
            limited.to_string(),
            "Sentry's API is rate limiting guardian (429; retry after 40 s)"
        );
        let unsaid = ApiFailure::RateLimited { retry_after: None };
        assert_eq!(
            unsaid.to_string(),
            "Sentry's API is rate limiting guardian (429; no Retry-After given)"
        );
    }
}
