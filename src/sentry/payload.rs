//! What a verified Sentry delivery says, read into the few things guardian uses: which issue,
//! when it was first and last seen, how often, where in the code (the in-app files of its stack
//! trace), and what happened to it. Read strictly where guardian relies on a field (an issue's
//! id and first sighting, an event's issue and time) and leniently elsewhere, since Sentry adds
//! fields; a field that does not read is named with its path.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::webhook::{EVENT_FUTURE_SECS, ISSUE_REPLAY_WINDOW_SECS, REPLAY_WINDOW_SECS};

/// Files kept per issue or event, newest frame first: enough to match a fix's files.
const MAX_FILES: usize = 20;
/// Characters kept of any text from Sentry (titles, culprits, paths).
const MAX_TEXT: usize = 500;

/// A delivery, read.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    /// `issue`: an issue was created or changed state.
    Issue { action: IssueAction, issue: Issue },
    /// `error`: one event of an issue (Sentry sends one delivery per event).
    Error(Event),
    /// `event_alert`: an alert rule fired on an event.
    Alert { rule: String, event: Event },
    /// A resource guardian does not use (`installation`, `comment`, `metric_alert`, ...):
    /// accepted and left alone.
    Unused { resource: String },
}

#[derive(Clone, Debug, PartialEq)]
pub enum IssueAction {
    Created,
    Resolved,
    Assigned,
    Archived,
    Unresolved,
    /// An action added to Sentry after this version: the issue is still recorded.
    Other(String),
}

impl IssueAction {
    pub fn as_str(&self) -> &str {
        match self {
            IssueAction::Created => "created",
            IssueAction::Resolved => "resolved",
            IssueAction::Assigned => "assigned",
            IssueAction::Archived => "archived",
            IssueAction::Unresolved => "unresolved",
            IssueAction::Other(other) => other,
        }
    }
}

/// A Sentry issue as a delivery describes it, and as guardian keeps it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, Deserialize)]
pub struct Issue {
    pub id: String,
    pub short_id: Option<String>,
    pub title: String,
    pub culprit: Option<String>,
    pub level: Option<String>,
    /// `unresolved`, `resolved`, `ignored`, and why (`substatus`: `new`, `regressed`, ...).
    pub status: Option<String>,
    pub substatus: Option<String>,
    pub project: Option<String>,
    pub web_url: Option<String>,
    pub first_seen: f64,
    pub last_seen: Option<f64>,
    /// Events so far, as Sentry counts them.
    pub count: Option<u64>,
    pub files: Vec<String>,
}

/// One event of an issue.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub event_id: String,
    pub issue_id: String,
    pub title: String,
    pub culprit: Option<String>,
    pub level: Option<String>,
    /// When it happened (`timestamp`, else `datetime`).
    pub at: f64,
    pub release: Option<String>,
    pub web_url: Option<String>,
    /// The in-app files of its stack trace, newest frame first.
    pub files: Vec<String>,
}

impl Event {
    /// The issue this event belongs to, as far as an event can tell: its first sighting is
    /// unknown, so the event's own time stands in until an `issue` delivery says.
    pub fn issue(&self) -> Issue {
        Issue {
            id: self.issue_id.clone(),
            short_id: None,
            title: self.title.clone(),
            culprit: self.culprit.clone(),
            level: self.level.clone(),
            status: None,
            substatus: None,
            project: None,
            web_url: None,
            first_seen: self.at,
            last_seen: Some(self.at),
            count: None,
            files: self.files.clone(),
        }
    }
}

/// Why a signed delivery could not be used.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("the {resource} delivery does not read: {why}")]
    Malformed { resource: String, why: String },
    #[error(
        "stale event: {event} happened {age_hours:.1} h ago, longer ago than a delivery is \
         remembered (24 h), so a replay of it could not be told apart"
    )]
    StaleEvent { event: String, age_hours: f64 },
    #[error(
        "stale issue: {issue} was last seen {age_days:.0} days ago, longer ago than an issue \
         delivery is remembered (90 days), so a replay of it could not be told apart"
    )]
    StaleIssue { issue: String, age_days: f64 },
    #[error("{what} is {ahead_hours:.1} h ahead of guardian's clock: not a time Sentry sends")]
    Future { what: String, ahead_hours: f64 },
}

/// Reads the body of a delivery of `resource`, received at `now`.
pub fn read(resource: &str, body: &[u8], now: f64) -> Result<Notice, PayloadError> {
    let malformed = |why: String| PayloadError::Malformed {
        resource: resource.to_owned(),
        why,
    };
    let parse = |body: &[u8]| -> Result<RawDelivery, PayloadError> {
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body)).map_err(
            |e| {
                let path = e.path().to_string();
                let why = e.into_inner();
                match path.as_str() {
                    "." | "?" => malformed(why.to_string()),
                    _ => malformed(format!("at {path}: {why}")),
                }
            },
        )
    };
    let fresh = |event: Event| {
        let age = now - event.at;
        if age > REPLAY_WINDOW_SECS {
            return Err(PayloadError::StaleEvent {
                event: event.event_id,
                age_hours: age / 3600.0,
            });
        }
        if -age > EVENT_FUTURE_SECS {
            return Err(PayloadError::Future {
                what: format!("event {}", event.event_id),
                ahead_hours: -age / 3600.0,
            });
        }
        Ok(event)
    };
    match resource {
        "issue" => {
            let raw = parse(body)?;
            let issue = raw
                .data
                .issue
                .ok_or_else(|| malformed("at data: no `issue`".into()))?;
            let action = match raw.action.as_deref() {
                Some("created") => IssueAction::Created,
                Some("resolved") => IssueAction::Resolved,
                Some("assigned") => IssueAction::Assigned,
                Some("archived") => IssueAction::Archived,
                Some("unresolved") => IssueAction::Unresolved,
                Some(other) => IssueAction::Other(text(other)),
                None => return Err(malformed("no `action`".into())),
            };
            let issue = issue
                .read()
                .map_err(|why| malformed(format!("at data.issue.{why}")))?;
            let latest = issue
                .last_seen
                .unwrap_or(issue.first_seen)
                .max(issue.first_seen);
            if now - latest > ISSUE_REPLAY_WINDOW_SECS {
                return Err(PayloadError::StaleIssue {
                    issue: issue.id,
                    age_days: (now - latest) / 86_400.0,
                });
            }
            if latest - now > EVENT_FUTURE_SECS {
                return Err(PayloadError::Future {
                    what: format!("issue {} (last seen)", issue.id),
                    ahead_hours: (latest - now) / 3600.0,
                });
            }
            Ok(Notice::Issue { action, issue })
        }
        "error" => {
            let raw = parse(body)?;
            let event = raw
                .data
                .error
                .ok_or_else(|| malformed("at data: no `error`".into()))?;
            let event = event
                .read()
                .map_err(|why| malformed(format!("at data.error.{why}")))?;
            Ok(Notice::Error(fresh(event)?))
        }
        "event_alert" => {
            let raw = parse(body)?;
            let event = raw
                .data
                .event
                .ok_or_else(|| malformed("at data: no `event`".into()))?;
            let event = event
                .read()
                .map_err(|why| malformed(format!("at data.event.{why}")))?;
            Ok(Notice::Alert {
                rule: raw
                    .data
                    .triggered_rule
                    .as_deref()
                    .map(text)
                    .unwrap_or_default(),
                event: fresh(event)?,
            })
        }
        other => {
            // Still JSON: a body that is not is a sender's mistake worth hearing about.
            serde_json::from_slice::<serde::de::IgnoredAny>(body)
                .map_err(|e| malformed(e.to_string()))?;
            Ok(Notice::Unused {
                resource: text(other),
            })
        }
    }
}

/// An issue as Sentry's API describes it (`GET /api/0/organizations/{org}/issues/{id}/`):
/// the same fields, read as strictly, as an `issue` delivery's `data.issue`.
pub fn read_issue_details(body: &[u8]) -> Result<Issue, String> {
    let raw: RawIssue = serde_path_to_error::deserialize(
        &mut serde_json::Deserializer::from_slice(body),
    )
    .map_err(|e| {
        let path = e.path().to_string();
        let why = e.into_inner();
        match path.as_str() {
            "." | "?" => why.to_string(),
            _ => format!("at {path}: {why}"),
        }
    })?;
    raw.read()
}

#[derive(Deserialize)]
struct RawDelivery {
    action: Option<String>,
    data: RawData,
}

#[derive(Deserialize)]
struct RawData {
    issue: Option<RawIssue>,
    error: Option<RawEvent>,
    event: Option<RawEvent>,
    triggered_rule: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIssue {
    #[serde(deserialize_with = "id")]
    id: String,
    short_id: Option<String>,
    title: Option<String>,
    culprit: Option<String>,
    level: Option<String>,
    status: Option<String>,
    substatus: Option<String>,
    first_seen: Option<String>,
    last_seen: Option<String>,
    #[serde(default, deserialize_with = "count")]
    count: Option<u64>,
    project: Option<RawProject>,
    // Sentry's issue payloads are camelCase but for the links, which are snake_case.
    #[serde(rename = "web_url")]
    web_url: Option<String>,
    permalink: Option<String>,
    #[serde(default)]
    metadata: RawMetadata,
}

#[derive(Deserialize)]
struct RawProject {
    slug: Option<String>,
}

#[derive(Default, Deserialize)]
struct RawMetadata {
    filename: Option<String>,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(deserialize_with = "id")]
    event_id: String,
    #[serde(deserialize_with = "id")]
    issue_id: String,
    title: Option<String>,
    culprit: Option<String>,
    level: Option<String>,
    timestamp: Option<f64>,
    datetime: Option<String>,
    release: Option<String>,
    web_url: Option<String>,
    #[serde(default)]
    metadata: RawMetadata,
    exception: Option<RawExceptions>,
}

#[derive(Deserialize)]
struct RawExceptions {
    #[serde(default)]
    values: Vec<RawException>,
}

#[derive(Deserialize)]
struct RawException {
    stacktrace: Option<RawStacktrace>,
}

#[derive(Deserialize)]
struct RawStacktrace {
    #[serde(default)]
    frames: Vec<RawFrame>,
}

#[derive(Deserialize)]
struct RawFrame {
    filename: Option<String>,
    abs_path: Option<String>,
    in_app: Option<bool>,
}

impl RawIssue {
    fn read(self) -> Result<Issue, String> {
        let first_seen = self
            .first_seen
            .as_deref()
            .ok_or("firstSeen: missing")
            .and_then(|t| time(t).ok_or("firstSeen: not an RFC 3339 time"))?;
        let last_seen = match self.last_seen.as_deref() {
            None => None,
            Some(t) => Some(time(t).ok_or("lastSeen: not an RFC 3339 time")?),
        };
        // A short id is how people name the issue (`SHOP-API-1Z`), in logs and commands too.
        if let Some(short) = &self.short_id {
            let plain = (1..=64).contains(&short.len())
                && short
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !plain {
                return Err(
                    "shortId: not a short id (letters, digits, - _ . only, at most 64)".into(),
                );
            }
        }
        Ok(Issue {
            title: self.title.as_deref().map(text).unwrap_or_default(),
            short_id: self.short_id.as_deref().map(text),
            culprit: self.culprit.as_deref().map(text),
            level: self.level.as_deref().map(text),
            status: self.status.as_deref().map(text),
            substatus: self.substatus.as_deref().map(text),
            project: self.project.and_then(|p| p.slug).as_deref().map(text),
            web_url: self.web_url.or(self.permalink).as_deref().map(text),
            first_seen,
            last_seen,
            count: self.count,
            files: self
                .metadata
                .filename
                .as_deref()
                .map(text)
                .into_iter()
                .collect(),
            id: self.id,
        })
    }
}

impl RawEvent {
    fn read(self) -> Result<Event, String> {
        let at = match (self.timestamp, self.datetime.as_deref()) {
            (Some(t), _) if t.is_finite() && t > 0.0 => t,
            (_, Some(t)) => time(t).ok_or("datetime: not an RFC 3339 time")?,
            _ => return Err("timestamp: missing (and no datetime)".into()),
        };
        // Sentry lists frames oldest first; the newest in-app frame is where it broke.
        let mut files: Vec<String> = Vec::new();
        let frames = self
            .exception
            .iter()
            .flat_map(|e| e.values.iter())
            .filter_map(|v| v.stacktrace.as_ref())
            .flat_map(|s| s.frames.iter().rev());
        for frame in frames.filter(|f| f.in_app == Some(true)) {
            if let Some(file) = frame.filename.as_deref().or(frame.abs_path.as_deref()) {
                let file = text(file);
                if !files.contains(&file) && files.len() < MAX_FILES {
                    files.push(file);
                }
            }
        }
        if files.is_empty() {
            files.extend(self.metadata.filename.as_deref().map(text));
        }
        Ok(Event {
            event_id: self.event_id,
            issue_id: self.issue_id,
            title: self.title.as_deref().map(text).unwrap_or_default(),
            culprit: self.culprit.as_deref().map(text),
            level: self.level.as_deref().map(text),
            at,
            release: self.release.as_deref().map(text),
            web_url: self.web_url.as_deref().map(text),
            files,
        })
    }
}

/// An id Sentry sends as a string (or, in older payloads, a number): digits and letters only,
/// since it becomes part of keys and commands.
pub(super) fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let id = match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        other => {
            return Err(serde::de::Error::custom(format!(
                "expected an id, got {other}"
            )))
        }
    };
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(serde::de::Error::custom(format!(
            "{:?} is not a Sentry id (letters and digits)",
            id.chars().take(70).collect::<String>()
        )));
    }
    Ok(id)
}

/// `count` is a string of digits in issue payloads, a number elsewhere.
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_u64()),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a count"))),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a count, got {other}"
        ))),
    }
}

pub(super) fn time(text: &str) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_micros()) / 1e6)
}

/// Outside text as kept: bounded. Shown through `display::line` wherever it is shown.
pub(super) fn text(s: &str) -> String {
    s.chars().take(MAX_TEXT).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentry::testing::payload;

    /// The time the checked-in deliveries were "received": minutes after their events.
    const NOW: f64 = 1_764_000_300.0;

    #[test]
    fn an_issue_delivery_reads_as_sentry_documents_it() {
        let notice = read("issue", &payload("issue_created.json"), NOW).unwrap();
        let Notice::Issue { action, issue } = notice else {
            panic!("{notice:?}")
        };
        assert_eq!(action, IssueAction::Created);
        assert_eq!(issue.id, "4504981122");
        assert_eq!(issue.short_id.as_deref(), Some("SHOP-API-1Z"));
        assert_eq!(issue.first_seen, 1_764_000_012.5);
        assert_eq!(issue.count, Some(3));
        assert_eq!(issue.files, ["app/checkout/totals.py"]);
        assert_eq!(
            issue.culprit.as_deref(),
            Some("app.checkout.totals in apply_coupon")
        );
        assert_eq!(issue.status.as_deref(), Some("unresolved"));
        assert_eq!(
            issue.web_url.as_deref(),
            Some("https://sentry.io/organizations/acme/issues/4504981122/")
        );
        let Notice::Issue { action, .. } =
            read("issue", &payload("issue_resolved.json"), NOW).unwrap()
        else {
            panic!()
        };
        assert_eq!(action, IssueAction::Resolved);
    }

    #[test]
    fn an_error_or_alert_delivery_reads_its_event_and_the_in_app_files_newest_first() {
        let Notice::Error(event) = read("error", &payload("error_created.json"), NOW).unwrap()
        else {
            panic!()
        };
        assert_eq!(event.issue_id, "4504981122");
        assert_eq!(event.at, 1_764_000_040.25);
        assert_eq!(event.release.as_deref(), Some("shop-api@9c1e2f0"));
        assert_eq!(
            event.files,
            ["app/checkout/totals.py", "app/checkout/views.py"],
            "library frames are left out"
        );
        let Notice::Alert { rule, event } =
            read("event_alert", &payload("event_alert_triggered.json"), NOW).unwrap()
        else {
            panic!()
        };
        assert_eq!(rule, "Checkout errors");
        assert_eq!(event.issue_id, "4504981122");
    }

    #[test]
    fn a_resource_guardian_does_not_use_is_accepted_and_left_alone() {
        assert_eq!(
            read("installation", br#"{"action":"created","data":{}}"#, NOW),
            Ok(Notice::Unused {
                resource: "installation".into()
            })
        );
    }

    #[test]
    fn a_delivery_that_does_not_read_is_refused_naming_where() {
        let err = |resource: &str, body: &str| {
            read(resource, body.as_bytes(), NOW)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("issue", "{"),
            "the issue delivery does not read: EOF while parsing an object at line 1 column 1"
        );
        assert_eq!(
            err("issue", r#"{"action":"created","data":{}}"#),
            "the issue delivery does not read: at data: no `issue`"
        );
        assert_eq!(
            err(
                "issue",
                r#"{"action":"created","data":{"issue":{"id":"12"}}}"#
            ),
            "the issue delivery does not read: at data.issue.firstSeen: missing"
        );
        assert_eq!(
            err("issue", r#"{"action":"created","data":{"issue":{"id":"1; rm -rf /","firstSeen":"2025-11-24T16:00:00Z"}}}"#),
            "the issue delivery does not read: at data.issue.id: \"1; rm -rf /\" is not a Sentry id (letters and digits) at line 1 column 55"
        );
        assert_eq!(
            err(
                "error",
                r#"{"action":"created","data":{"error":{"event_id":"a","issue_id":"1"}}}"#
            ),
            "the error delivery does not read: at data.error.timestamp: missing (and no datetime)"
        );
        assert_eq!(
            err("comment", "not json"),
            "the comment delivery does not read: expected ident at line 1 column 2"
        );
    }

    #[test]
    fn an_issue_not_seen_for_longer_than_its_deliveries_are_remembered_is_refused_as_stale() {
        let body = payload("issue_resolved.json");
        assert!(read("issue", &body, NOW + 80.0 * 86_400.0).is_ok());
        let e = read("issue", &body, NOW + 91.0 * 86_400.0).unwrap_err();
        assert!(matches!(e, PayloadError::StaleIssue { .. }), "{e}");
    }

    #[test]
    fn times_far_ahead_of_the_clock_are_refused() {
        let e = read("error", &payload("error_created.json"), NOW - 2.0 * 3600.0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "event c2f1e0d9b8a74c6e9f3a1b2c3d4e5f60 is 1.9 h ahead of guardian's clock: not a \
             time Sentry sends"
        );
        let e = read("issue", &payload("issue_created.json"), NOW - 2.0 * 3600.0).unwrap_err();
        assert!(matches!(e, PayloadError::Future { .. }), "{e}");
    }

    #[test]
    fn an_event_older_than_deliveries_are_remembered_is_refused_as_stale() {
        let body = payload("error_created.json");
        let e = read("error", &body, NOW + 2.0 * 86_400.0).unwrap_err();
        assert!(matches!(e, PayloadError::StaleEvent { .. }), "{e}");
    }
}
