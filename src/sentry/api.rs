//! Sentry's REST API, the pure half: what guardian asks it (Discover's events table, an issue's
//! details) and what it makes of the answers. Every row is outside input: one that does not
//! read is skipped naming its field, never trusted and never a panic; an event older than the
//! store remembers event ids, or far ahead of the clock, is refused as a webhook's would be.
//! The IO (`daemon::sentry_api`) sends the requests and hands the bodies and headers in here.

use serde::Deserialize;
use serde_json::Value;

use super::payload::{text, time};
use super::webhook::{EVENT_FUTURE_SECS, REPLAY_WINDOW_SECS};
use super::Event;
use crate::config::SentryProject;

/// The columns asked of Discover, in this order: enough to count an event once, in its issue
/// and release, at its time.
pub const EVENT_FIELDS: [&str; 6] = ["id", "issue.id", "timestamp", "release", "title", "culprit"];
/// Rows asked per page (Discover's most).
pub const PER_PAGE: u32 = 100;
/// Length of a cursor guardian follows, at most.
const MAX_CURSOR: usize = 200;

/// One request for a page of events: `GET {api_url}/api/0/organizations/{org}/events/`.
#[derive(Clone, Debug, PartialEq)]
pub struct EventsQuery<'a> {
    pub org: &'a str,
    pub project: &'a SentryProject,
    pub environment: Option<&'a str>,
    /// `[start, end)`, unix seconds.
    pub start: f64,
    pub end: f64,
    /// The `Link` header's next cursor, from the second page on.
    pub cursor: Option<&'a str>,
}

impl EventsQuery<'_> {
    /// The path under the API's origin.
    pub fn path(&self) -> String {
        format!("/api/0/organizations/{}/events/", self.org)
    }

    /// The query's parameters, in order (the IO URL-encodes them). A project named by its slug
    /// is asked for in the search query: Discover's `project` parameter takes ids only.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut params: Vec<(&'static str, String)> = EVENT_FIELDS
            .iter()
            .map(|f| ("field", (*f).to_owned()))
            .collect();
        let query = match self.project {
            SentryProject::Slug(slug) => format!("event.type:error project:{slug}"),
            SentryProject::Id(id) => {
                params.push(("project", id.to_string()));
                "event.type:error".to_owned()
            }
        };
        params.push(("query", query));
        if let Some(env) = self.environment {
            params.push(("environment", env.to_owned()));
        }
        params.push(("start", iso(self.start)));
        params.push(("end", iso(self.end)));
        params.push(("sort", "timestamp".to_owned()));
        params.push(("per_page", PER_PAGE.to_string()));
        if let Some(cursor) = self.cursor {
            params.push(("cursor", cursor.to_owned()));
        }
        params
    }
}

/// The path of an issue's details: `GET {api_url}/api/0/organizations/{org}/issues/{id}/`.
pub fn issue_path(org: &str, issue_id: &str) -> String {
    format!("/api/0/organizations/{org}/issues/{issue_id}/")
}

/// Unix seconds as ISO-8601 in UTC, to the millisecond.
pub fn iso(t: f64) -> String {
    let millis = (t * 1000.0).floor() as i64;
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// A page of Discover's events table, read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    /// The rows that read, in the order given.
    pub events: Vec<Event>,
    /// The rows that did not, with why.
    pub skipped: Vec<Skipped>,
    /// The latest time of any row that read (refused or not): how far the page reached.
    pub latest: Option<f64>,
    /// More rows came than asked for ([`PER_PAGE`]): the rest were left unread.
    pub truncated: bool,
}

/// A row left out.
#[derive(Clone, Debug, PartialEq)]
pub struct Skipped {
    /// Its place on the page, from 0.
    pub row: usize,
    /// The field that did not read (`id`, `issue.id`, `timestamp`, `release`, ...), or `row`.
    pub field: &'static str,
    pub why: String,
}

/// Why a page could not be read at all.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PageError {
    #[error("the events page does not read: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct RawPage {
    data: Vec<Value>,
}

/// Reads a page of events received at `now`: each row on its own, so one bad row costs only
/// itself.
pub fn read_events_page(body: &[u8], now: f64) -> Result<Page, PageError> {
    let raw: RawPage = serde_json::from_slice(body).map_err(|e| {
        PageError::Malformed(match e.classify() {
            serde_json::error::Category::Data => format!("no `data` list ({e})"),
            _ => e.to_string(),
        })
    })?;
    let mut page = Page {
        truncated: raw.data.len() > PER_PAGE as usize,
        ..Page::default()
    };
    for (row, value) in raw.data.iter().take(PER_PAGE as usize).enumerate() {
        match read_row(value) {
            Ok(event) => {
                page.latest = Some(page.latest.map_or(event.at, |l: f64| l.max(event.at)));
                let age = now - event.at;
                if age > REPLAY_WINDOW_SECS {
                    page.skipped.push(Skipped {
                        row,
                        field: "timestamp",
                        why: format!(
                            "{:.1} h ago, older than event ids are remembered (24 h)",
                            age / 3600.0
                        ),
                    });
                } else if -age > EVENT_FUTURE_SECS {
                    page.skipped.push(Skipped {
                        row,
                        field: "timestamp",
                        why: format!("{:.1} h ahead of guardian's clock", -age / 3600.0),
                    });
                } else {
                    page.events.push(event);
                }
            }
            Err((field, why)) => page.skipped.push(Skipped { row, field, why }),
        }
    }
    Ok(page)
}

/// One row, or the field that does not read and why.
fn read_row(value: &Value) -> Result<Event, (&'static str, String)> {
    let Value::Object(row) = value else {
        return Err(("row", "not an object".to_owned()));
    };
    let event_id = id(row.get("id")).map_err(|why| ("id", why))?;
    let issue_id = id(row.get("issue.id")).map_err(|why| ("issue.id", why))?;
    let at = match row.get("timestamp") {
        Some(Value::String(t)) => time(t)
            .or_else(|| {
                // Discover may leave the offset out; its times are UTC.
                chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
                    .ok()
                    .map(|n| n.and_utc().timestamp_micros() as f64 / 1e6)
            })
            .ok_or((
                "timestamp",
                format!("{:?} is not an ISO-8601 time", short(t)),
            ))?,
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|t| t.is_finite() && *t > 0.0)
            .ok_or(("timestamp", format!("{n} is not a time")))?,
        None | Some(Value::Null) => return Err(("timestamp", "missing".to_owned())),
        Some(other) => return Err(("timestamp", format!("expected a time, got {}", kind(other)))),
    };
    let optional = |field: &'static str| match row.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(text(s))),
        Some(other) => Err((field, format!("expected text, got {}", kind(other)))),
    };
    let release = optional("release")?;
    let title = optional("title")?.unwrap_or_default();
    let culprit = optional("culprit")?;
    Ok(Event {
        event_id,
        issue_id,
        title,
        culprit,
        level: None,
        at,
        release,
        web_url: None,
        files: Vec::new(),
    })
}

/// An id as the webhook path reads them: a string or a number, letters and digits only.
fn id(value: Option<&Value>) -> Result<String, String> {
    let id = match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        None | Some(Value::Null) => return Err("missing".to_owned()),
        Some(other) => return Err(format!("expected an id, got {}", kind(other))),
    };
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "{:?} is not a Sentry id (letters and digits)",
            short(&id)
        ));
    }
    Ok(id)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Outside text quoted in a log line: its first 70 characters.
fn short(s: &str) -> String {
    s.chars().take(70).collect()
}

/// The cursor of the next page in a `Link` header, when Sentry says it holds results:
/// `<...>; rel="previous"; results="false"; cursor="...", <...>; rel="next"; results="true";
/// cursor="..."`. A cursor that is not plain text (or too long) is not followed.
pub fn next_cursor(link: &str) -> Option<String> {
    let mut rest = link;
    while let Some(open) = rest.find('<') {
        let close = open + rest[open..].find('>')?;
        let after = &rest[close + 1..];
        // This link's parameters run to the next link (`, <`) or the end.
        let end = after.find('<').unwrap_or(after.len());
        let (params, next) = after.split_at(end);
        let (mut rel, mut results, mut cursor) = (None, None, None);
        for param in params.split([';', ',']) {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim() {
                "rel" => rel = Some(value),
                "results" => results = Some(value),
                "cursor" => cursor = Some(value),
                _ => {}
            }
        }
        if rel == Some("next") {
            let plain = |c: &str| {
                (1..=MAX_CURSOR).contains(&c.len())
                    && c.bytes().all(|b| b.is_ascii_graphic() && b != b'"')
            };
            return match (results, cursor) {
                (Some("true"), Some(c)) if plain(c) => Some(c.to_owned()),
                _ => None,
            };
        }
        rest = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentry::payload::read_issue_details;
    use crate::sentry::testing::payload;

    /// Minutes after the checked-in rows.
    const NOW: f64 = 1_764_000_300.0;

    #[test]
    fn a_page_of_discover_rows_reads_as_sentry_documents_it() {
        let page = read_events_page(&payload("discover_events_page1.json"), NOW).unwrap();
        assert_eq!(page.skipped, []);
        let got: Vec<(&str, &str, f64, Option<&str>)> = page
            .events
            .iter()
            .map(|e| {
                (
                    e.event_id.as_str(),
                    e.issue_id.as_str(),
                    e.at,
                    e.release.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                    "4504981999",
                    1_764_000_005.0,
                    Some("shop-api@9c1e2f0")
                ),
                (
                    "1f1e2d3c4b5a69788796a5b4c3d2e1f0",
                    "4504981999",
                    1_764_000_007.25,
                    None
                ),
                (
                    "2f1e2d3c4b5a69788796a5b4c3d2e1f0",
                    "4504981122",
                    1_764_000_012.5,
                    Some("shop-api@a1b2c3d")
                ),
            ]
        );
        assert_eq!(page.events[0].culprit.as_deref(), Some("app.cart in total"));
        assert_eq!(page.latest, Some(1_764_000_012.5));
    }

    #[test]
    fn a_row_that_does_not_read_is_skipped_naming_its_field() {
        let page = read_events_page(&payload("discover_events_malformed.json"), NOW).unwrap();
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].event_id, "3f1e2d3c4b5a69788796a5b4c3d2e1f0");
        let skipped: Vec<String> = page
            .skipped
            .iter()
            .map(|s| format!("{} {}: {}", s.row, s.field, s.why))
            .collect();
        expect_test::expect![[r#"
            [
                "1 issue.id: missing",
                "2 timestamp: \"yesterday\" is not an ISO-8601 time",
                "3 id: \"6f1e2d3c; rm -rf /\" is not a Sentry id (letters and digits)",
                "4 timestamp: 23.9 h ahead of guardian's clock",
                "5 row: not an object",
                "6 release: expected text, got a number",
            ]
        "#]]
        .assert_debug_eq(&skipped);
        // An event older than event ids are remembered could be counted twice: refused.
        let late =
            read_events_page(&payload("discover_events_page1.json"), NOW + 2.0 * 86_400.0).unwrap();
        assert!(late.events.is_empty());
        assert_eq!(late.skipped.len(), 3);
        assert_eq!(late.skipped[0].field, "timestamp");
    }

    #[test]
    fn a_page_that_is_not_a_table_is_an_error() {
        let err = |body: &str| {
            read_events_page(body.as_bytes(), NOW)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("<html>"),
            "the events page does not read: expected value at line 1 column 1"
        );
        assert_eq!(
            err(r#"{"detail":"x"}"#),
            "the events page does not read: no `data` list (missing field `data` at line 1 column 14)"
        );
    }

    #[test]
    fn the_next_cursor_is_followed_only_while_sentry_says_there_are_results() {
        let link = r#"<https://sentry.io/api/0/organizations/acme/events/?cursor=0:0:1>; rel="previous"; results="false"; cursor="0:0:1", <https://sentry.io/api/0/organizations/acme/events/?field=id&field=count(),x&cursor=0:100:0>; rel="next"; results="true"; cursor="0:100:0""#;
        assert_eq!(next_cursor(link).as_deref(), Some("0:100:0"));
        let last = link.replace(r#"results="true""#, r#"results="false""#);
        assert_eq!(next_cursor(&last), None);
        assert_eq!(next_cursor(""), None);
        assert_eq!(next_cursor("<x>; rel=\"next\"; results=\"true\""), None);
        let odd = r#"<x>; rel="next"; results="true"; cursor="a b""#;
        assert_eq!(next_cursor(odd), None, "not plain text");
    }

    #[test]
    fn the_events_query_asks_for_errors_of_the_project_in_time_order() {
        let project = SentryProject::Slug("shop-api".into());
        let q = EventsQuery {
            org: "acme",
            project: &project,
            environment: Some("production"),
            start: 1_764_000_000.0,
            end: 1_764_000_030.5,
            cursor: Some("0:100:0"),
        };
        assert_eq!(q.path(), "/api/0/organizations/acme/events/");
        let params: Vec<String> = q.params().iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            params.join("&"),
            "field=id&field=issue.id&field=timestamp&field=release&field=title&field=culprit&\
             query=event.type:error project:shop-api&environment=production&\
             start=2025-11-24T16:00:00.000Z&end=2025-11-24T16:00:30.500Z&sort=timestamp&\
             per_page=100&cursor=0:100:0"
        );
        let by_id = SentryProject::Id(42);
        let q = EventsQuery {
            project: &by_id,
            environment: None,
            cursor: None,
            ..q
        };
        let params: Vec<String> = q.params().iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert!(params.contains(&"project=42".to_owned()), "{params:?}");
        assert!(
            params.contains(&"query=event.type:error".to_owned()),
            "{params:?}"
        );
    }

    #[test]
    fn an_issues_details_read_as_an_issue_delivery_does() {
        let issue = read_issue_details(&payload("issue_details.json")).unwrap();
        assert_eq!(issue.id, "4504981999");
        assert_eq!(issue.short_id.as_deref(), Some("SHOP-API-3F"));
        assert_eq!(issue.count, Some(1542));
        assert_eq!(issue.status.as_deref(), Some("unresolved"));
        assert_eq!(
            issue.web_url.as_deref(),
            Some("https://acme.sentry.io/issues/4504981999/")
        );
        assert_eq!(issue.files, ["app/cart.py"]);
        assert_eq!(issue.first_seen, 1_763_629_964.123);
        assert_eq!(
            read_issue_details(br#"{"id":"12"}"#).unwrap_err(),
            "firstSeen: missing"
        );
    }
}
