//! Reading the watched app's own Prometheus `/metrics` into guardian's observations.
//!
//! Three steps, each usable alone:
//!
//! 1. [`fetch`] GETs the exposition (plain HTTP via ureq, with a timeout and a 16 MiB cap).
//! 2. [`parse_exposition`] turns the text exposition format (version 0.0.4) into [`Sample`]s.
//! 3. [`Scraper::ingest`] turns cumulative counters into per-interval deltas, grouped by route,
//!    with latency histograms mapped into the shared bucket layout of [`crate::core::histogram`].
//!
//! [`Scraper::scrape`] does all three.
//!
//! **A failed scrape is missing data, never zero errors.** When [`fetch`] (or parsing) fails,
//! there is no observation for that interval: the caller must not feed the core anything for it.
//! The scraper keeps its previous baseline, so the next successful scrape reports the deltas over
//! the whole gap (its [`Interval::start`] tells how long that was).
//!
//! Why a hand-written parser rather than a crate: the Rust crates for the text format
//! (`prometheus-parse`, `prometheus-scrape`, `prometheus-exposition-format-rs`, ...) are small,
//! rarely maintained, and pull in regex/chrono/nom for a line format that needs a couple of
//! hundred lines; the `prometheus` crate itself is for *exposing* metrics, not reading them. This
//! parser has no dependencies, reports the line and the reason for every error, and is fuzzed
//! (a property test) never to panic on garbage.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::time::Duration;

use crate::core::histogram::{bucket_of, upper_edge, Histogram, BUCKETS};
use crate::core::observation::{Aggregate, Arm};

/// The most requests one series may count in a second: a delta above it is not a count (a
/// corrupt or hostile value, `1e300`), and is skipped with a note rather than fed to the core.
pub const MAX_PER_SECOND: f64 = 10_000_000.0;
/// A series remembered while absent (read back from Prometheus) is forgotten after this long:
/// Prometheus's own staleness horizon, so label churn does not grow memory without end.
const FORGET_AFTER_SECS: f64 = 300.0;

/// Largest `/metrics` body accepted, in bytes.
pub const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// Ask for the classic text format: without this, some servers answer OpenMetrics or protobuf.
const ACCEPT: &str = "text/plain;version=0.0.4;q=1.0,*/*;q=0.1";

/// Where to scrape and which series count as requests, errors and latency.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrapeSpec {
    /// `http://host:port/metrics`. Plain HTTP only: the crate's ureq is built without TLS.
    pub url: String,
    /// Counter series summed as requests, e.g. `http_requests_total`.
    pub requests: Matcher,
    /// Counter series summed as errors, e.g. `http_requests_total` with `code` pattern `5..`.
    pub errors: Matcher,
    /// A histogram's base name, e.g. `http_request_duration_seconds`: its `_bucket` series are
    /// read (the `le` label is handled here; do not put it in the matcher).
    pub latency: Option<Matcher>,
    /// Group series by this label's value (a series without it goes to route `None`).
    pub route_label: Option<String>,
    /// Which series are the new version and which the old, when both serve at once (a canary):
    /// `None` when every series is the service as a whole.
    pub arms: Option<Arms>,
    /// Milliseconds per unit of the histogram's `le` values: 1000 for seconds, 1 for ms.
    pub latency_unit_ms: f64,
    /// Whole-request timeout: connect, headers and body.
    pub timeout: Duration,
}

impl ScrapeSpec {
    fn validate(&self) -> Result<(), String> {
        if !(self.latency_unit_ms.is_finite() && self.latency_unit_ms > 0.0) {
            return Err(format!(
                "latency_unit_ms must be a positive number, not {}",
                self.latency_unit_ms
            ));
        }
        if self.timeout.is_zero() {
            return Err("timeout must be more than zero".into());
        }
        Ok(())
    }
}

/// A canary against the rest: series whose `label` is one of the canary's values are the new
/// version, the others the old; a series without the label is on neither side (counted, and
/// reported, as unlabelled). Without a canary (none configured, or a notification named none)
/// every series is the service as a whole.
///
/// The canary is what the config names until a notification names another
/// (`guardian notify --canary`): a rollout that widens moves hosts to the canary as it goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Arms {
    pub label: String,
    /// The canary the config names: empty when each notification names it.
    pub canary: Vec<String>,
    /// What notifications named, oldest first.
    rollouts: Vec<Rollout>,
    /// The canary before the first of `rollouts`, once older ones were let go.
    before: Option<Vec<String>>,
}

/// A canary a notification named (`None`: none, so the config's): from `since`, series with
/// one of its values are the new version. From `held_from` to `since` (its deploy window) a
/// series whose side it changes is on neither side: its host was restarting, and its failures
/// are the restart's.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rollout {
    pub held_from: f64,
    pub since: f64,
    pub canary: Option<Vec<String>>,
}

/// Where a series' counts go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// No canary: the service as a whole.
    Whole,
    Arm(Arm),
    /// Changing sides in a rollout's deploy window: on neither.
    Held,
    /// Without the label that tells the sides: on neither.
    Unlabelled,
}

/// Rollouts kept: older ones are let go, the canary they left behind kept.
const MAX_ROLLOUTS: usize = 32;

impl Arms {
    pub fn new(label: String, canary: Vec<String>) -> Arms {
        Arms {
            label,
            canary,
            rollouts: Vec::new(),
            before: None,
        }
    }

    /// From `rollout.since` on, the canary is `rollout.canary`. Rollouts come in time order;
    /// one that would reorder them starts when the last one did.
    pub fn roll_out(&mut self, mut rollout: Rollout) {
        if let Some(last) = self.rollouts.last() {
            rollout.since = rollout.since.max(last.since);
            rollout.held_from = rollout.held_from.max(last.since);
        }
        rollout.held_from = rollout.held_from.min(rollout.since);
        self.rollouts.push(rollout);
        if self.rollouts.len() > MAX_ROLLOUTS {
            let gone = self.rollouts.remove(0);
            self.before = gone.canary;
        }
    }

    /// The canary's values at `at`: empty when there is none.
    pub fn canary_at(&self, at: f64) -> &[String] {
        match self.rollouts.iter().rposition(|r| r.since <= at) {
            Some(i) => self.named(i),
            None => self.before.as_deref().unwrap_or(&self.canary),
        }
    }

    /// The canary rollout `i` left.
    fn named(&self, i: usize) -> &[String] {
        self.rollouts[i].canary.as_deref().unwrap_or(&self.canary)
    }

    /// The side of series `s` at `at`.
    pub fn of(&self, s: &Sample, at: f64) -> Side {
        self.side(&s.labels, at)
    }

    fn side(&self, labels: &[(String, String)], at: f64) -> Side {
        let canary = self.canary_at(at);
        if canary.is_empty() {
            return Side::Whole;
        }
        let Some(value) = labels
            .iter()
            .find(|(n, _)| *n == self.label)
            .map(|(_, v)| v.as_str())
        else {
            return Side::Unlabelled;
        };
        let on = |set: &[String]| set.iter().any(|c| c == value);
        // In a rollout's deploy window, the canary in effect is the one before it.
        let moving = self
            .rollouts
            .iter()
            .position(|r| r.held_from <= at && at < r.since);
        if let Some(i) = moving {
            if on(canary) != on(self.named(i)) {
                return Side::Held;
            }
        }
        Side::Arm(if on(canary) {
            Arm::Treatment
        } else {
            Arm::Control
        })
    }
}

/// Selects series: by exact metric name, and by label values.
///
/// A label the series does not have is matched as the empty string, as in PromQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher {
    pub name: String,
    pub labels: Vec<(String, LabelMatch)>,
}

impl Matcher {
    pub fn new(name: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            labels: Vec::new(),
        }
    }

    /// Adds a label condition: `Matcher::new("x").with("code", LabelMatch::pattern("5.."))`.
    pub fn with(mut self, label: impl Into<String>, m: LabelMatch) -> Self {
        self.labels.push((label.into(), m));
        self
    }

    /// Whether `sample` is one of the selected series.
    pub fn matches(&self, sample: &Sample) -> bool {
        sample.name == self.name && self.labels_match(&sample.labels)
    }

    fn labels_match(&self, labels: &[(String, String)]) -> bool {
        self.labels.iter().all(|(name, m)| {
            let value = labels
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, v)| v.as_str());
            m.matches(value)
        })
    }
}

/// How a label value is matched. There is no regex: these cover what error and route
/// selection needs.
///
/// - `Equals("500")`: exactly that value.
/// - `Prefix("5")`: starts with it (`Prefix("")` matches anything, including a missing label).
/// - `OneOf(["500", "502", "503"])`: any of them exactly.
/// - `Pattern("5..")`: same length in characters, where each `.` matches any one character and
///   every other character matches itself (so `5..` is PromQL's `=~"5.."`). There is no escape
///   for a literal `.`: use `Equals` or `OneOf` for values that contain one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelMatch {
    Equals(String),
    Prefix(String),
    OneOf(Vec<String>),
    Pattern(String),
}

impl LabelMatch {
    pub fn pattern(p: impl Into<String>) -> Self {
        LabelMatch::Pattern(p.into())
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            LabelMatch::Equals(s) => value == s,
            LabelMatch::Prefix(p) => value.starts_with(p.as_str()),
            LabelMatch::OneOf(set) => set.iter().any(|s| s == value),
            LabelMatch::Pattern(p) => {
                let mut v = value.chars();
                for pc in p.chars() {
                    match v.next() {
                        Some(vc) if pc == '.' || pc == vc => {}
                        _ => return false,
                    }
                }
                v.next().is_none()
            }
        }
    }
}

/// One line of the exposition: a series and its value (the timestamp, if any, is dropped).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In the order the exposition gave them.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What was wrong with the exposition, and on which line (1-based).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parses the Prometheus text exposition format, version 0.0.4.
///
/// Comment lines (`#`, including `# HELP` and `# TYPE`) and blank lines are skipped; the types
/// are not needed, since the spec names the series it wants. Label values may contain the
/// escapes `\\`, `\"` and `\n`; values may be `+Inf`, `-Inf` or `NaN`; a trailing integer
/// timestamp is accepted and dropped. The first malformed line stops the parse: a scrape that
/// cannot be read entirely is not trusted partly.
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|message| ParseError {
            line: i + 1,
            message,
        })?;
        out.push(sample);
    }
    Ok(out)
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Takes bytes while `f` holds. `f` must only accept ASCII, so the cut is a char boundary.
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or("")
    }

    /// What is at the cursor, for error messages.
    fn found(&self) -> String {
        match self.s.get(self.pos..).and_then(|r| r.chars().next()) {
            None => "end of line".into(),
            Some(c) => format!("{c:?}"),
        }
    }
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn is_label_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_graphic()
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let mut c = Cursor { s: line, pos: 0 };
    let name = c.take_while(is_name_char);
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        c.pos = 0;
        return Err(format!("expected a metric name, found {}", c.found()));
    }
    let mut labels: Vec<(String, String)> = Vec::new();
    let spaced = c.skip_ws();
    if c.peek() == Some(b'{') {
        c.bump();
        parse_labels(&mut c, name, &mut labels)?;
        c.skip_ws();
    } else if !spaced && c.peek().is_some() {
        return Err(format!(
            "expected '{{' or a space after metric name {name}, found {}",
            c.found()
        ));
    }
    let value = c.take_while(is_token_char);
    if value.is_empty() {
        return Err(format!("missing value for {name}, found {}", c.found()));
    }
    let value: f64 = value
        .parse()
        .map_err(|_| format!("value {value:?} of {name} is not a number"))?;
    if c.skip_ws() {
        let ts = c.take_while(is_token_char);
        if !ts.is_empty() && ts.parse::<i64>().is_err() {
            return Err(format!(
                "timestamp {ts:?} of {name} is not an integer number of milliseconds"
            ));
        }
        c.skip_ws();
    }
    if c.peek().is_some() {
        return Err(format!(
            "unexpected {} after the value of {name}",
            c.found()
        ));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_labels(
    c: &mut Cursor<'_>,
    metric: &str,
    labels: &mut Vec<(String, String)>,
) -> Result<(), String> {
    loop {
        c.skip_ws();
        if c.peek() == Some(b'}') {
            c.bump();
            return Ok(());
        }
        let name = c.take_while(is_label_char);
        if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
            return Err(format!(
                "expected a label name or '}}' in {metric}, found {}",
                c.found()
            ));
        }
        c.skip_ws();
        if c.bump() != Some(b'=') {
            return Err(format!("expected '=' after label {name} of {metric}"));
        }
        c.skip_ws();
        if c.bump() != Some(b'"') {
            return Err(format!(
                "expected '\"' to open the value of label {name} of {metric}"
            ));
        }
        let mut value: Vec<u8> = Vec::new();
        loop {
            match c.bump() {
                None => return Err(format!("unterminated value of label {name} of {metric}")),
                Some(b'"') => break,
                Some(b'\\') => match c.bump() {
                    Some(b'\\') => value.push(b'\\'),
                    Some(b'"') => value.push(b'"'),
                    Some(b'n') => value.push(b'\n'),
                    _ => {
                        return Err(format!(
                            "unknown escape in the value of label {name} of {metric} \
                             (only \\\\, \\\" and \\n are allowed)"
                        ))
                    }
                },
                Some(b) => value.push(b),
            }
        }
        // Bytes were copied whole between ASCII delimiters of a &str, so this cannot fail; map
        // the error anyway rather than unwrap.
        let value = String::from_utf8(value)
            .map_err(|_| format!("value of label {name} of {metric} is not UTF-8"))?;
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("label {name} repeated in {metric}"));
        }
        labels.push((name.to_owned(), value));
        c.skip_ws();
        match c.bump() {
            Some(b',') => continue,
            Some(b'}') => return Ok(()),
            _ => {
                return Err(format!(
                    "expected ',' or '}}' after label {name} of {metric}"
                ))
            }
        }
    }
}

/// Why a scrape gave no observation. Every variant names the URL.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("scrape of {url} failed: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("scrape of {url} timed out after {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("scrape of {url} failed: {message}")]
    Transport { url: String, message: String },
    #[error("scrape of {url}: body is larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("scrape of {url}: body is not UTF-8")]
    NotUtf8 { url: String },
    #[error("scrape of {url}: {source}")]
    Parse {
        url: String,
        #[source]
        source: ParseError,
    },
    #[error("invalid scrape spec for {url}: {message}")]
    Spec { url: String, message: String },
}

fn is_timeout_io(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// GETs `spec.url` and returns the body.
///
/// An error means **no observation this interval**: the caller must record the interval as
/// missing data (and may alert on repeated failures), never as zero requests or zero errors. A
/// status other than 200, a timeout (`spec.timeout` covers connect, headers and body), a body
/// over [`MAX_BODY_BYTES`] or a body that is not UTF-8 are all errors.
///
/// Blocking: call it from a thread or `tokio::task::spawn_blocking`.
pub fn fetch(spec: &ScrapeSpec) -> Result<String, ScrapeError> {
    let url = || spec.url.clone();
    let agent = ureq::AgentBuilder::new().timeout(spec.timeout).build();
    let resp = match agent.get(&spec.url).set("Accept", ACCEPT).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(status, _)) => {
            return Err(ScrapeError::Status { url: url(), status })
        }
        Err(ureq::Error::Transport(t)) => {
            let timed_out = std::error::Error::source(&t)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(is_timeout_io);
            return Err(if timed_out {
                ScrapeError::Timeout {
                    url: url(),
                    timeout: spec.timeout,
                }
            } else {
                ScrapeError::Transport {
                    url: url(),
                    // ureq's message starts with the URL, which the error already names.
                    message: t.kind().to_string()
                        + &std::error::Error::source(&t)
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default(),
                }
            });
        }
    };
    if resp.status() != 200 {
        return Err(ScrapeError::Status {
            url: url(),
            status: resp.status(),
        });
    }
    let too_large = || ScrapeError::TooLarge {
        url: url(),
        limit: MAX_BODY_BYTES,
    };
    if resp
        .header("Content-Length")
        .and_then(|l| l.trim().parse::<u64>().ok())
        .is_some_and(|l| l > MAX_BODY_BYTES)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    resp.into_reader()
        .take(MAX_BODY_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| {
            if is_timeout_io(&e) {
                ScrapeError::Timeout {
                    url: url(),
                    timeout: spec.timeout,
                }
            } else {
                ScrapeError::Transport {
                    url: url(),
                    message: format!("reading the body: {e}"),
                }
            }
        })?;
    if body.len() as u64 > MAX_BODY_BYTES {
        return Err(too_large());
    }
    String::from_utf8(body).map_err(|_| ScrapeError::NotUtf8 { url: url() })
}

/// Counts for one route over one interval between two successful scrapes.
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    /// The `route_label` value; `None` when not grouping (or the series lacked the label).
    pub route: Option<String>,
    /// The side these series serve, when the spec tells canary from the rest.
    pub arm: Option<Arm>,
    /// Unix seconds of the previous successful scrape.
    pub start: f64,
    /// Unix seconds of this scrape.
    pub end: f64,
    pub requests: u64,
    /// Never more than `requests` (clamped, with a note).
    pub errors: u64,
    /// In the shared layout; `None` when the spec has no latency histogram or this route has
    /// no bucket series.
    pub latency: Option<Histogram>,
}

impl Interval {
    /// The core's view of this interval.
    pub fn aggregate(&self) -> Aggregate<'_> {
        Aggregate {
            ts: self.end,
            requests: self.requests,
            errors: self.errors,
            latency: self.latency.as_ref(),
            route: self.route.as_deref(),
            arm: self.arm,
        }
    }
}

/// What one scrape added.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScrapeResult {
    /// One per route and side, sorted by route (`None` first). Empty for the first scrape, which only
    /// sets the baseline, and when no selected series exist.
    pub intervals: Vec<Interval>,
    /// Things worth logging: counter resets, clamped errors, skipped series, nothing matched.
    pub notes: Vec<String>,
    /// Series whose counts this scrape cannot tell (read back from Prometheus only): one that
    /// jumped by more than any count, vanished while its process did not restart (a label
    /// renamed, a series dropped), or has no canary label while a canary is named. Their
    /// traffic is missing data, never zero.
    pub suspect: usize,
    /// Series without an `instance` that vanished (read back from Prometheus only): no restart
    /// or move of their process can be told, so only a deploy's restarts explain them.
    pub unowned: usize,
}

/// Notes about single series kept per scrape: a hostile or broken answer cannot flood the log.
const MAX_NOTES: usize = 10;

/// Labels as a note shows them: escaped, and at most 200 characters.
fn shown_labels(labels: &[(String, String)]) -> String {
    let text = format!("{labels:?}");
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

/// Label pairs, sorted by name.
type Labels = Vec<(String, String)>;
/// Per series, its cumulative value and when it was last seen.
type Counters = HashMap<SeriesKey, (f64, f64)>;
type SeriesKey = (String, Labels);

/// The label Prometheus gives every series of a scrape target.
const INSTANCE: &str = "instance";

fn label_of<'a>(labels: &'a Labels, name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `key` without the label `name`.
fn without(key: &SeriesKey, name: &str) -> SeriesKey {
    let mut labels = key.1.clone();
    labels.retain(|(n, _)| n != name);
    (key.0.clone(), labels)
}

fn series_key(s: &Sample) -> SeriesKey {
    let mut labels = s.labels.clone();
    labels.sort();
    (s.name.clone(), labels)
}

#[derive(Default)]
struct RouteAcc {
    requests: u64,
    errors: u64,
    /// Histogram series (labels without `le`) → (le, delta of the cumulative bucket).
    buckets: BTreeMap<Labels, Vec<(f64, u64)>>,
}

/// Turns successive scrapes of cumulative counters into per-interval deltas.
///
/// Keep one per scraped target for as long as the daemon runs: a new `Scraper`'s first scrape
/// only sets the baseline.
pub struct Scraper {
    spec: ScrapeSpec,
    latency_bucket_name: Option<String>,
    /// Time of the previous successful scrape, and per selected series its cumulative value
    /// and when it was last seen (later than that scrape only for a remembered absent series).
    previous: Option<(f64, Counters)>,
    /// Series absent from a scrape are remembered, not forgotten (see [`Scraper::remembering`]).
    remember: bool,
}

impl Scraper {
    /// Which series are the canary and which the rest, when it tells them apart.
    pub fn arms(&self) -> Option<&Arms> {
        self.spec.arms.as_ref()
    }

    /// From `rollout.since`, the canary is what a notification named. False when this scraper
    /// tells no sides apart (no `canary_label`).
    pub fn roll_out(&mut self, rollout: Rollout) -> bool {
        match &mut self.spec.arms {
            Some(arms) => {
                arms.roll_out(rollout);
                true
            }
            None => false,
        }
    }

    pub fn new(spec: ScrapeSpec) -> Result<Scraper, ScrapeError> {
        spec.validate().map_err(|message| ScrapeError::Spec {
            url: spec.url.clone(),
            message,
        })?;
        Ok(Scraper {
            latency_bucket_name: spec.latency.as_ref().map(|m| format!("{}_bucket", m.name)),
            spec,
            previous: None,
            remember: false,
        })
    }

    /// A scraper for counters read back from Prometheus rather than from the app: there a series
    /// goes missing when Prometheus failed to scrape its instance (it marks it stale), not when
    /// the app restarted, so a series that comes back is counted from its last value (or from
    /// zero if it went down: a reset), never from zero, which would count its whole history.
    pub fn remembering(spec: ScrapeSpec) -> Result<Scraper, ScrapeError> {
        let mut scraper = Scraper::new(spec)?;
        scraper.remember = true;
        Ok(scraper)
    }

    pub fn spec(&self) -> &ScrapeSpec {
        &self.spec
    }

    /// Fetch, parse and ingest. On error the baseline is kept, so nothing is lost: the next
    /// success covers the gap. The error means "no observation", never "zero errors".
    pub fn scrape(&mut self, now: f64) -> Result<ScrapeResult, ScrapeError> {
        let body = fetch(&self.spec)?;
        let samples = parse_exposition(&body).map_err(|source| ScrapeError::Parse {
            url: self.spec.url.clone(),
            source,
        })?;
        Ok(self.ingest(&samples, now))
    }

    /// Deltas since the previous call, per route.
    ///
    /// - The first call only records the baseline and returns no intervals.
    /// - A counter lower than before was reset (the app restarted): its new value is the delta,
    ///   as Prometheus' `rate()` does; a count is never negative.
    /// - A series absent from this scrape is forgotten. A series seen for the first time after
    ///   the baseline counts from zero: client libraries create labelled series at their first
    ///   increment, so e.g. the first `code="500"` series after a deploy holds exactly the new
    ///   errors, and treating it as a baseline would hide them.
    /// - Non-finite or negative values of selected series are skipped, with a note.
    pub fn ingest(&mut self, samples: &[Sample], now: f64) -> ScrapeResult {
        let mut notes = Vec::new();
        let mut current: Counters = HashMap::new();
        let mut routes: BTreeMap<(Option<String>, Option<Arm>), RouteAcc> = BTreeMap::new();
        let (mut matched_requests, mut resets, mut new_series) = (false, 0usize, 0usize);
        let (mut duplicates, mut implausible, mut unlabelled) = (0usize, 0usize, 0usize);
        // Targets with a counter that went down (a process restarted, which recreates series
        // lazily and so explains its series vanishing). A series merely new is no restart: it
        // is how a rename would look.
        let mut restarted_targets: std::collections::HashSet<String> = Default::default();
        // Targets with a counter that went on from where it was: a process that restarted
        // has none (one small counter going down is not a restart).
        let mut went_on: std::collections::HashSet<String> = Default::default();
        let baseline = self.previous.as_ref();

        for s in samples {
            let is_requests = self.spec.requests.matches(s);
            let is_errors = self.spec.errors.matches(s);
            let is_bucket = match (&self.spec.latency, &self.latency_bucket_name) {
                (Some(m), Some(bucket)) => {
                    s.name == *bucket
                        && m.labels_match(&s.labels)
                        && s.labels.iter().any(|(n, _)| n == "le")
                }
                _ => false,
            };
            if !(is_requests || is_errors || is_bucket) {
                continue;
            }
            matched_requests |= is_requests;
            if !s.value.is_finite() || s.value < 0.0 {
                if notes.len() < MAX_NOTES {
                    notes.push(format!(
                        "skipped {} {}: value {}",
                        s.name,
                        shown_labels(&s.labels),
                        s.value
                    ));
                }
                continue;
            }
            let le = if is_bucket {
                match s.label("le").map(|v| v.trim().parse::<f64>()) {
                    Some(Ok(le)) if !le.is_nan() => Some(le),
                    _ => {
                        if notes.len() < MAX_NOTES {
                            notes.push(format!(
                                "skipped {} {}: bad le",
                                s.name,
                                shown_labels(&s.labels)
                            ));
                        }
                        continue;
                    }
                }
            } else {
                None
            };
            let key = series_key(s);
            if current.contains_key(&key) {
                duplicates += 1;
                continue;
            }
            let Some((start, before)) = baseline else {
                current.insert(key, (s.value, now));
                continue;
            };
            let previous = before.get(&key).map(|&(v, _)| v);
            let side = self
                .spec
                .arms
                .as_ref()
                .map_or(Side::Whole, |a| a.of(s, now));
            let delta = match previous {
                Some(prev) if s.value >= prev => {
                    if let (true, Some(target)) = (prev > 0.0, s.label(INSTANCE)) {
                        went_on.insert(target.to_owned());
                    }
                    s.value - prev
                }
                Some(_) => {
                    resets += 1;
                    if let Some(target) = s.label(INSTANCE) {
                        restarted_targets.insert(target.to_owned());
                    }
                    s.value
                }
                None => {
                    new_series += 1;
                    s.value
                }
            };
            if delta > MAX_PER_SECOND * (now - start).max(1.0) {
                // Not a count: skipped, and counted on from its new value (so one jump does
                // not hide what follows); what it should have counted is missing.
                implausible += 1;
                current.insert(key, (s.value, now));
                continue;
            }
            current.insert(key.clone(), (s.value, now));
            // `as` saturates; counters are whole numbers in practice.
            let delta = delta.round() as u64;
            let route = self
                .spec
                .route_label
                .as_deref()
                .and_then(|l| s.label(l))
                .map(str::to_owned);
            let arm = match &self.spec.arms {
                None => None,
                Some(_) => match side {
                    Side::Whole => None,
                    Side::Arm(arm) => Some(arm),
                    // Its host restarting into the canary: counted on from here, on no side.
                    Side::Held => continue,
                    // On neither side: a canary comparison cannot place it.
                    Side::Unlabelled => {
                        unlabelled += 1;
                        continue;
                    }
                },
            };
            let acc = routes.entry((route, arm)).or_default();
            if is_requests {
                acc.requests = acc.requests.saturating_add(delta);
            }
            if is_errors {
                acc.errors = acc.errors.saturating_add(delta);
            }
            if let Some(le) = le {
                let mut rest = key.1;
                rest.retain(|(n, _)| n != "le");
                acc.buckets.entry(rest).or_default().push((le, delta));
            }
        }

        if !matched_requests {
            notes.push(format!(
                "no series matched the requests selector {}",
                self.spec.requests.name
            ));
        }
        if duplicates > 0 {
            notes.push(format!("{duplicates} duplicate series ignored"));
        }
        if let (Some(arms), true) = (&self.spec.arms, unlabelled > 0) {
            notes.push(format!(
                "{unlabelled} series without the label {} left out: on neither side, so what \
                 they counted is missing",
                arms.label
            ));
        }
        if implausible > 0 {
            notes.push(format!(
                "{implausible} series skipped: they grew by more than {MAX_PER_SECOND} a second, \
                 which no counter of requests does"
            ));
        }
        if resets > 0 {
            notes.push(format!(
                "{resets} series went down since the last scrape (the app restarted?): counted from zero"
            ));
        }
        if new_series > 0 {
            notes.push(format!(
                "{new_series} series first seen since the last scrape: counted from zero"
            ));
        }

        let mut intervals = Vec::new();
        if let Some((start, _)) = baseline {
            for ((route, arm), acc) in routes {
                let mut errors = acc.errors;
                if errors > acc.requests {
                    notes.push(format!(
                        "route {route:?}: {errors} errors but {} requests; errors clamped",
                        acc.requests
                    ));
                    errors = acc.requests;
                }
                let latency = (self.spec.latency.is_some() && !acc.buckets.is_empty()).then(|| {
                    let mut h = Histogram::new();
                    for (_, mut buckets) in acc.buckets {
                        add_buckets(&mut h, &mut buckets, self.spec.latency_unit_ms);
                    }
                    h
                });
                intervals.push(Interval {
                    route,
                    arm,
                    start: *start,
                    end: now,
                    requests: acc.requests,
                    errors,
                    latency,
                });
            }
        }
        let (mut vanished, mut unowned) = (0, 0);
        let mut first_vanished: Option<String> = None;
        if let (true, Some((start, before))) = (self.remember, baseline) {
            // A target that is not there at all is down or restarting (its counts go on, or
            // start again, when it is back); a series that moved sides (its version label
            // changed in a deploy, its whole target with it) is there under its new value.
            let targets: std::collections::HashSet<&str> = current
                .keys()
                .filter_map(|k| label_of(&k.1, INSTANCE))
                .collect();
            let targets_before: std::collections::HashSet<&str> = before
                .iter()
                .filter(|(_, &(_, seen))| seen == *start)
                .filter_map(|(k, _)| label_of(&k.1, INSTANCE))
                .collect();
            let restarted_target =
                |target: &str| restarted_targets.contains(target) && !went_on.contains(target);
            // (A series' target never changes: moving from one to another is not a move.)
            let canary_label = (self.spec.arms.as_ref())
                .map(|a| a.label.as_str())
                .filter(|l| *l != INSTANCE);
            let moved: std::collections::HashSet<SeriesKey> = current
                .keys()
                .filter(|k| !before.contains_key(*k))
                .filter_map(|k| canary_label.map(|l| without(k, l)))
                .collect();
            // Per target, the values of the canary label it still has series under (a set:
            // looked up once per vanished series, of which an answer may hold thousands).
            let under: std::collections::HashSet<(Option<&str>, Option<&str>)> = canary_label
                .map(|l| {
                    current
                        .keys()
                        .map(|k| (label_of(&k.1, INSTANCE), label_of(&k.1, l)))
                        .collect()
                })
                .unwrap_or_default();
            for (key, &(_, seen)) in before {
                if current.contains_key(key) {
                    continue;
                }
                // The process (scrape target) a series comes from is its `instance`, which
                // Prometheus sets (unless a job has `honor_labels`, which hands it to the app).
                // Without one (a push gateway, a recording rule) there is no process guardian
                // can tell: the app could name it anything, so no restart or move of "its
                // process" excuses it vanishing; only a deploy's restarts do, which the reader
                // knows of and the scraper does not.
                let Some(target) = label_of(&key.1, INSTANCE) else {
                    if seen == *start {
                        // A deploy's restarts take the old version's series away, never the
                        // canary's: the canary's vanishing is missing whenever it happens.
                        let side = self.spec.arms.as_ref().map(|a| a.side(&key.1, now));
                        match side {
                            Some(Side::Arm(Arm::Treatment)) => vanished += 1,
                            _ => unowned += 1,
                        }
                        first_vanished
                            .get_or_insert_with(|| format!("{} {}", key.0, shown_labels(&key.1)));
                    }
                    continue;
                };
                // There at the last step, not now; or absent with its whole target, which is
                // back without restarting: what it counted meanwhile is not there either.
                let gone = seen == *start
                    || (targets.contains(target) && !targets_before.contains(target));
                if !gone {
                    continue;
                }
                // Its process restarted (a series not there until its first count again), or
                // its target is gone: not missing.
                let restarted = restarted_target(target) || !targets.contains(target);
                let moved_sides = canary_label.is_some_and(|l| {
                    moved.contains(&without(key, l))
                        && !under.contains(&(Some(target), label_of(&key.1, l)))
                });
                if !restarted && !moved_sides {
                    vanished += 1;
                    first_vanished
                        .get_or_insert_with(|| format!("{} {}", key.0, shown_labels(&key.1)));
                }
            }
        }
        if vanished > 0 {
            notes.push(format!(
                "{vanished} series vanished while the process serving them did not restart (a \
                 label renamed, a series dropped), e.g. {}: what they counted is missing",
                first_vanished.clone().unwrap_or_default()
            ));
        }
        if unowned > 0 {
            notes.push(format!(
                "{unowned} series without an instance label vanished, e.g. {}: what they \
                 counted is missing unless a deploy restarted them",
                first_vanished.unwrap_or_default()
            ));
        }
        if self.remember {
            if let Some((_, before)) = self.previous.take() {
                for (key, (value, seen)) in before {
                    if now - seen < FORGET_AFTER_SECS {
                        current.entry(key).or_insert((value, seen));
                    }
                }
            }
        }
        self.previous = Some((now, current));
        ScrapeResult {
            intervals,
            notes,
            suspect: if self.remember {
                implausible + vanished + unlabelled
            } else {
                0
            },
            unowned: if self.remember { unowned } else { 0 },
        }
    }
}

/// The shared-layout bucket for a Prometheus bucket with upper bound `le_ms`: the one containing
/// `le_ms`, so a latency is never counted faster than it may have been.
pub fn bucket_for_le(le_ms: f64) -> usize {
    if le_ms.is_nan() || le_ms == f64::INFINITY {
        return BUCKETS - 1;
    }
    let b = bucket_of(le_ms);
    // Floating point may put an `le` sitting on an edge in the bucket below it.
    if upper_edge(b) <= le_ms {
        (b + 1).min(BUCKETS - 1)
    } else {
        b
    }
}

/// Adds one Prometheus histogram's bucket deltas (`(le, cumulative delta)`) to `h`.
fn add_buckets(h: &mut Histogram, buckets: &mut [(f64, u64)], unit_ms: f64) {
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut below = 0u64;
    for &(le, cumulative) in buckets.iter() {
        // Cumulative deltas can dip when series are read mid-update or reset unevenly: never
        // let that make a negative count.
        let mut n = cumulative.saturating_sub(below);
        below = below.max(cumulative);
        let bucket = bucket_for_le(le * unit_ms);
        while n > 0 {
            let part = n.min(u64::from(u32::MAX));
            h.add_to_bucket(bucket, part as u32);
            n -= part;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::histogram::lower_edge;
    use std::io::Write;
    use std::net::TcpListener;

    const EXPOSITION: &str = r#"# HELP http_requests_total Requests served.
# TYPE http_requests_total counter
http_requests_total{route="/cart",code="200"} 1027 1395066363000
http_requests_total{route="/cart",code="500"} 3
http_requests_total{code="503",route="/login"} 1.0e1
http_requests_total{route="/weird \"quoted\" \\ path\nnext",code="200",} 7
# A plain comment.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{route="/cart",le="0.05"} 24054
http_request_duration_seconds_bucket{route="/cart",le="0.1"} 33444
http_request_duration_seconds_bucket{route="/cart",le="+Inf"} 144320
http_request_duration_seconds_sum{route="/cart"} 53423
http_request_duration_seconds_count{route="/cart"} 144320
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds{quantile="0.99"} NaN
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
temperature -Inf
up +Inf
"#;

    #[test]
    fn the_canary_is_what_the_last_notification_named_and_a_host_moving_sides_is_held_in_its_window(
    ) {
        let on = |value: &str| vec![("instance".to_owned(), value.to_owned())];
        let mut arms = Arms::new("instance".into(), Vec::new());
        assert_eq!(
            arms.side(&on("a"), 100.0),
            Side::Whole,
            "no canary: the whole service"
        );
        arms.roll_out(Rollout {
            held_from: 90.0,
            since: 100.0,
            canary: Some(vec!["c".into()]),
        });
        assert_eq!(arms.side(&on("c"), 95.0), Side::Whole, "before the deploy");
        assert_eq!(arms.side(&on("c"), 100.0), Side::Arm(Arm::Treatment));
        assert_eq!(arms.side(&on("b"), 100.0), Side::Arm(Arm::Control));
        assert_eq!(arms.side(&[], 100.0), Side::Unlabelled);
        // The rollout widens to b, whose restart runs from 190 to 200.
        arms.roll_out(Rollout {
            held_from: 190.0,
            since: 200.0,
            canary: Some(vec!["c".into(), "b".into()]),
        });
        assert_eq!(arms.side(&on("b"), 189.0), Side::Arm(Arm::Control));
        assert_eq!(
            arms.side(&on("b"), 195.0),
            Side::Held,
            "restarting into the canary"
        );
        assert_eq!(
            arms.side(&on("c"), 195.0),
            Side::Arm(Arm::Treatment),
            "not moving"
        );
        assert_eq!(
            arms.side(&on("a"), 195.0),
            Side::Arm(Arm::Control),
            "not moving"
        );
        assert_eq!(arms.side(&on("b"), 200.0), Side::Arm(Arm::Treatment));
        // A notification naming none: the config's canary (none) from its deploy on.
        arms.roll_out(Rollout {
            held_from: 300.0,
            since: 310.0,
            canary: None,
        });
        assert_eq!(arms.side(&on("b"), 310.0), Side::Whole);
        assert_eq!(arms.canary_at(250.0), ["c", "b"]);
        // Rollouts long past are let go; the canary they left stays.
        for i in 0..MAX_ROLLOUTS {
            arms.roll_out(Rollout {
                held_from: 400.0 + i as f64,
                since: 400.0 + i as f64,
                canary: Some(vec!["c".into()]),
            });
        }
        assert_eq!(arms.rollouts.len(), MAX_ROLLOUTS);
        assert_eq!(
            arms.canary_at(0.0),
            Vec::<String>::new(),
            "the last one let go named none"
        );
        assert_eq!(arms.canary_at(1000.0), ["c"]);
    }

    #[test]
    fn a_rollout_out_of_order_starts_when_the_last_one_did() {
        let mut arms = Arms::new("instance".into(), vec!["c".into()]);
        arms.roll_out(Rollout {
            held_from: 100.0,
            since: 110.0,
            canary: Some(vec!["b".into()]),
        });
        arms.roll_out(Rollout {
            held_from: 50.0,
            since: 60.0,
            canary: Some(vec!["a".into()]),
        });
        assert_eq!(arms.canary_at(105.0), ["c"], "the config's until the first");
        assert_eq!(arms.canary_at(110.0), ["a"]);
    }

    fn spec(url: &str) -> ScrapeSpec {
        ScrapeSpec {
            url: url.into(),
            requests: Matcher::new("http_requests_total"),
            errors: Matcher::new("http_requests_total").with("code", LabelMatch::pattern("5..")),
            latency: Some(Matcher::new("http_request_duration_seconds")),
            route_label: None,
            arms: None,
            latency_unit_ms: 1000.0,
            timeout: Duration::from_secs(2),
        }
    }

    fn requests(route: &str, code: &str, v: f64) -> Sample {
        Sample {
            name: "http_requests_total".into(),
            labels: vec![("route".into(), route.into()), ("code".into(), code.into())],
            value: v,
        }
    }

    fn bucket(route: &str, le: &str, v: f64) -> Sample {
        Sample {
            name: "http_request_duration_seconds_bucket".into(),
            labels: vec![("route".into(), route.into()), ("le".into(), le.into())],
            value: v,
        }
    }

    #[test]
    fn parses_a_realistic_exposition() {
        let s = parse_exposition(EXPOSITION).unwrap();
        assert_eq!(s.len(), 15);
        assert_eq!(s[0].name, "http_requests_total");
        assert_eq!(
            s[0].labels,
            vec![
                ("route".into(), "/cart".into()),
                ("code".into(), "200".into())
            ]
        );
        assert_eq!(s[0].value, 1027.0);
        assert_eq!(s[2].value, 10.0);
        assert_eq!(s[3].label("route"), Some("/weird \"quoted\" \\ path\nnext"));
        assert_eq!(s[6].label("le"), Some("+Inf"));
        assert!(s[10].value.is_nan());
        assert_eq!(s[13].value, f64::NEG_INFINITY);
        assert_eq!(s[14].value, f64::INFINITY);

        // The summary and the histogram's _sum/_count are parsed but select nothing.
        let mut sc = Scraper::new(spec("http://x")).unwrap();
        sc.ingest(&s, 0.0);
        let r = sc.ingest(&s, 10.0);
        assert_eq!(r.intervals.len(), 1);
        assert_eq!(r.intervals[0].requests, 0);
        assert_eq!(r.intervals[0].latency.as_ref().unwrap().total(), 0);
    }

    #[test]
    fn parse_errors_name_the_line_and_the_problem() {
        let cases = [
            ("ok 1\nbad{a=\"x} 1\n", 2, "unterminated"),
            ("# c\n\nx{a=\"\\q\"} 1", 3, "unknown escape"),
            ("x{a=\"1\",a=\"2\"} 1", 1, "repeated"),
            ("x 1 notatime", 1, "timestamp"),
            ("x one", 1, "not a number"),
            ("x", 1, "missing value"),
            ("x{1a=\"\"} 1", 1, "label name"),
            ("9x 1", 1, "metric name"),
            ("x 1 2 3", 1, "unexpected"),
            ("x{a \"b\"} 1", 1, "'='"),
            ("x{a=\"b\" c=\"d\"} 1", 1, "','"),
        ];
        for (text, line, what) in cases {
            let e = parse_exposition(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(what), "{text:?}: {e}");
        }
        // CRLF and leading spaces are fine.
        let s = parse_exposition("  a_b:c{x=\"y\"}  2.5  \r\nz 1\r\n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].value, 2.5);
    }

    #[test]
    fn label_patterns() {
        let p = LabelMatch::pattern("5..");
        assert!(p.matches("500") && p.matches("599"));
        assert!(!p.matches("50") && !p.matches("5000") && !p.matches("404"));
        assert!(LabelMatch::Prefix("/api".into()).matches("/api/x"));
        assert!(LabelMatch::OneOf(vec!["a".into(), "b".into()]).matches("b"));
        assert!(!LabelMatch::Equals("a".into()).matches("ab"));
        // A missing label matches as "".
        let m = Matcher::new("x").with("code", LabelMatch::Equals(String::new()));
        assert!(m.matches(&Sample {
            name: "x".into(),
            labels: vec![],
            value: 1.0
        }));
    }

    #[test]
    fn deltas_over_three_scrapes() {
        let mut sc = Scraper::new(spec("http://x")).unwrap();
        let first = sc.ingest(
            &[requests("/a", "200", 100.0), requests("/a", "500", 2.0)],
            1000.0,
        );
        assert!(first.intervals.is_empty(), "the first scrape is a baseline");
        let second = sc.ingest(
            &[requests("/a", "200", 150.0), requests("/a", "500", 5.0)],
            1010.0,
        );
        let i = &second.intervals[0];
        assert_eq!((i.requests, i.errors), (53, 3));
        assert_eq!((i.start, i.end, i.route.as_deref()), (1000.0, 1010.0, None));
        let third = sc.ingest(
            &[requests("/a", "200", 150.0), requests("/a", "500", 5.0)],
            1020.0,
        );
        assert_eq!(
            (third.intervals[0].requests, third.intervals[0].errors),
            (0, 0)
        );
        assert_eq!(third.intervals[0].aggregate().ts, 1020.0);
    }

    #[test]
    fn a_counter_reset_counts_from_zero_and_is_never_negative() {
        let mut sc = Scraper::new(spec("http://x")).unwrap();
        sc.ingest(
            &[requests("/a", "200", 5000.0), requests("/a", "500", 40.0)],
            0.0,
        );
        // The app restarted: 30 requests since, 4 of them errors.
        let r = sc.ingest(
            &[requests("/a", "200", 26.0), requests("/a", "500", 4.0)],
            10.0,
        );
        assert_eq!((r.intervals[0].requests, r.intervals[0].errors), (30, 4));
        assert!(
            r.notes.iter().any(|n| n.contains("restarted")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn vanished_series_are_forgotten_and_new_ones_count_from_zero() {
        let mut sc = Scraper::new(spec("http://x")).unwrap();
        sc.ingest(&[requests("/a", "200", 100.0)], 0.0);
        // A first 500 appears: its series is new and holds exactly the new errors.
        let r = sc.ingest(
            &[requests("/a", "200", 110.0), requests("/a", "500", 2.0)],
            10.0,
        );
        assert_eq!((r.intervals[0].requests, r.intervals[0].errors), (12, 2));
        // The 500 series vanishes (restart), then comes back at 1: counted as 1, not -1.
        sc.ingest(&[requests("/a", "200", 111.0)], 20.0);
        let r = sc.ingest(
            &[requests("/a", "200", 112.0), requests("/a", "500", 1.0)],
            30.0,
        );
        assert_eq!((r.intervals[0].requests, r.intervals[0].errors), (2, 1));
    }

    #[test]
    fn errors_above_requests_are_clamped_and_noted() {
        let mut s = spec("http://x");
        s.errors = Matcher::new("http_errors_total");
        let mut sc = Scraper::new(s).unwrap();
        let err = |v| Sample {
            name: "http_errors_total".into(),
            labels: vec![],
            value: v,
        };
        sc.ingest(&[requests("/a", "200", 10.0), err(0.0)], 0.0);
        let r = sc.ingest(&[requests("/a", "200", 12.0), err(5.0)], 10.0);
        assert_eq!((r.intervals[0].requests, r.intervals[0].errors), (2, 2));
        assert!(r.notes.iter().any(|n| n.contains("clamped")));
    }

    #[test]
    fn routes_are_grouped_by_label() {
        let mut s = spec("http://x");
        s.route_label = Some("route".into());
        let mut sc = Scraper::new(s).unwrap();
        let scrape = |n: f64| {
            vec![
                requests("/a", "200", 10.0 * n),
                requests("/a", "503", n),
                requests("/b", "200", 20.0 * n),
                requests("/b", "404", 2.0 * n),
                Sample {
                    name: "http_requests_total".into(),
                    labels: vec![],
                    value: 3.0 * n,
                },
            ]
        };
        sc.ingest(&scrape(1.0), 0.0);
        let r = sc.ingest(&scrape(2.0), 10.0);
        let got: Vec<_> = r
            .intervals
            .iter()
            .map(|i| (i.route.as_deref(), i.requests, i.errors))
            .collect();
        assert_eq!(
            got,
            vec![(None, 3, 0), (Some("/a"), 11, 1), (Some("/b"), 22, 0)]
        );
    }

    #[test]
    fn latency_buckets_land_at_or_above_their_le() {
        let les = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "1", "+Inf"];
        let mut sc = Scraper::new(spec("http://x")).unwrap();
        let cumulative = |scale: f64| -> Vec<Sample> {
            // Per-bucket counts 1..=8 (times scale), made cumulative.
            let mut total = 0.0;
            les.iter()
                .enumerate()
                .map(|(i, le)| {
                    total += (i as f64 + 1.0) * scale;
                    bucket("/a", le, total)
                })
                .collect()
        };
        sc.ingest(&cumulative(1.0), 0.0);
        let r = sc.ingest(&cumulative(3.0), 10.0);
        let h = r.intervals[0].latency.as_ref().unwrap();
        assert_eq!(h.total(), 2 * (1..=8).sum::<u64>());
        for (i, le) in les.iter().enumerate() {
            let le_ms = le.parse::<f64>().unwrap() * 1000.0;
            let b = bucket_for_le(le_ms);
            assert_eq!(u64::from(h.counts()[b]), 2 * (i as u64 + 1), "le {le}");
            assert!(
                upper_edge(b) > le_ms || b == BUCKETS - 1,
                "le {le} counted below itself"
            );
            assert!(
                le_ms.is_infinite() || lower_edge(b) <= le_ms,
                "le {le} too far up"
            );
        }
        assert_eq!(bucket_for_le(f64::INFINITY), BUCKETS - 1);
        // Every edge of the layout, taken as an `le`, is placed at or above itself.
        for i in 1..BUCKETS {
            let e = lower_edge(i);
            assert!(upper_edge(bucket_for_le(e)) > e, "edge {i}");
        }
    }

    #[test]
    fn histogram_series_are_differenced_per_series_and_never_negative() {
        let mut sc = Scraper::new(spec("http://x")).unwrap();
        let with_method = |m: &str, le: &str, v: f64| {
            let mut s = bucket("/a", le, v);
            s.labels.push(("method".into(), m.into()));
            s
        };
        sc.ingest(
            &[
                with_method("GET", "0.1", 10.0),
                with_method("GET", "+Inf", 10.0),
                with_method("POST", "0.1", 0.0),
                with_method("POST", "+Inf", 5.0),
            ],
            0.0,
        );
        // GET's +Inf delta (1) is below its 0.1 delta (3): an uneven read, not a negative count.
        let r = sc.ingest(
            &[
                with_method("GET", "0.1", 13.0),
                with_method("GET", "+Inf", 11.0),
                with_method("POST", "0.1", 1.0),
                with_method("POST", "+Inf", 8.0),
            ],
            10.0,
        );
        let h = r.intervals[0].latency.as_ref().unwrap();
        assert_eq!(h.counts()[bucket_for_le(100.0)], 4);
        assert_eq!(h.counts()[BUCKETS - 1], 2);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC*") {
            let _ = parse_exposition(&text);
        }

        #[test]
        fn parsing_exposition_like_garbage_never_panics(
            text in "([a-z_:{}=\",\\\\ \t#\n\r.+-]|[0-9]|Inf|NaN|le|é|\u{1F600}){0,200}"
        ) {
            if let Ok(samples) = parse_exposition(&text) {
                let mut s = spec("http://x");
                s.route_label = Some("a".into());
                let mut sc = Scraper::new(s).unwrap();
                sc.ingest(&samples, 0.0);
                sc.ingest(&samples, 1.0);
            }
        }
    }

    /// Serves one request on 127.0.0.1 with `response`, returning the URL.
    fn serve_once(response: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(&response);
            }
        });
        format!("http://{addr}/metrics")
    }

    fn http(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn fetches_and_scrapes_a_real_server() {
        let url = serve_once(http("200 OK", EXPOSITION));
        let body = fetch(&spec(&url)).unwrap();
        assert_eq!(parse_exposition(&body).unwrap().len(), 15);

        let mut sc = Scraper::new(spec(&serve_once(http("200 OK", EXPOSITION)))).unwrap();
        assert!(sc.scrape(0.0).unwrap().intervals.is_empty());
    }

    #[test]
    fn fetch_errors_name_the_url() {
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/metrics", l.local_addr().unwrap())
        };
        let e = fetch(&spec(&closed)).unwrap_err();
        assert!(matches!(e, ScrapeError::Transport { .. }), "{e:?}");
        assert!(e.to_string().contains(&closed), "{e}");

        let url = serve_once(http("503 Service Unavailable", "down"));
        let e = fetch(&spec(&url)).unwrap_err();
        assert!(
            matches!(e, ScrapeError::Status { status: 503, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains(&url), "{e}");

        let url = serve_once(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                MAX_BODY_BYTES + 1
            )
            .into_bytes(),
        );
        let e = fetch(&spec(&url)).unwrap_err();
        assert!(matches!(e, ScrapeError::TooLarge { .. }), "{e:?}");
        assert!(e.to_string().contains(&url), "{e}");

        let url = serve_once(http("200 OK", "x{a=\"b\"} oops\n"));
        let e = Scraper::new(spec(&url)).unwrap().scrape(0.0).unwrap_err();
        assert!(
            e.to_string().contains(&url) && e.to_string().contains("line 1"),
            "{e}"
        );
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let mut s = spec(&url);
        s.timeout = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let e = fetch(&s).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(e, ScrapeError::Timeout { .. }), "{e:?}");
        assert!(e.to_string().contains(&url), "{e}");
        drop(listener);
    }

    #[test]
    fn a_spec_with_a_bad_unit_is_refused() {
        let mut s = spec("http://x");
        s.latency_unit_ms = 0.0;
        assert!(Scraper::new(s).is_err());
    }
}
