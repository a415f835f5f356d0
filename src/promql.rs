//! Reading the service's counters back from Prometheus's HTTP API (`/api/v1/query_range`), or
//! from anything that speaks it (Thanos, Mimir, VictoriaMetrics): the fleet's traffic as one
//! source, each instance's series apart.
//!
//! guardian asks for the raw counters at a fixed step, never for `rate()` or `increase()`: those
//! extrapolate to fractions of a request, and a `sum()` across instances hides one instance's
//! counter reset in the others' growth. The counters come back per series, and the scraper that
//! reads an app's own `/metrics` ([`crate::scrape::Scraper`]) turns each step into whole counts
//! per route and side: resets, histograms and clamping are handled once, for both sources.
//!
//! **Missing data is never zero.** A query that fails, an answer that cannot be read, and a step
//! at which no request series exists at all (Prometheus down, or every instance unscraped and
//! marked stale) give no observation: the step is missing, said so in [`Read::missing`], and the
//! counts it should have had arrive with the next step that has data (the counters kept
//! counting). A series that goes missing and comes back is counted from its last value.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;

use serde::Deserialize;

use crate::core::observation::Arm;
use crate::scrape::{Interval, Rollout, Sample, ScrapeSpec, Scraper, Side};

/// Largest answer accepted, in bytes.
const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// Most series one read takes, over all its queries: a service's requests by route, code,
/// instance and bucket are far fewer; more is a selector that selects too much.
const MAX_SERIES: usize = 50_000;
/// A side absent longer than this is gone (a canary host taken out), no longer missing.
const FORGET_SIDE_SECS: f64 = 300.0;
/// After a deploy, at least this long (beyond its steps) for a restarted process to be
/// scraped and serving: a failed scrape, a load balancer that waits before sending it requests.
const MIN_SETTLE_SECS: f64 = 15.0;
/// Deploys kept: only the latest matter, as steps are read in time order.
const MAX_SETTLING: usize = 16;
/// Most characters of Prometheus's own words (its error, a result type) shown anywhere.
const MAX_SHOWN: usize = 200;
/// The furthest back one read reaches: a longer outage is read from its last hour (the counts
/// of the hours before arrive as one interval, nothing is lost).
const MAX_CATCH_UP_SECS: f64 = 3600.0;

/// Where to read, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct PromqlSpec {
    /// The API's base, e.g. `http://127.0.0.1:9090` (`/api/v1/query_range` is appended).
    pub url: String,
    /// Label matchers added to every series selector, in PromQL, e.g. `job="shop"`.
    pub selector: String,
    /// Which series count as requests, errors and latency, by route and side (`url` unused).
    pub series: ScrapeSpec,
    /// Seconds between the points read.
    pub step_secs: u32,
    /// How far behind the present to read: Prometheus's own scrape interval and ingestion, so
    /// a point read is one Prometheus already has.
    pub lag_secs: u32,
    /// How much history the first read takes (the baseline's, so a change notified just
    /// after guardian starts is judged against Prometheus's record, not against nothing).
    pub backfill_secs: u32,
}

/// Why a read gave nothing. Every variant names what was asked.
#[derive(Debug, thiserror::Error)]
pub enum PromqlError {
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url} answered HTTP {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        url: String,
        status: u16,
        detail: Option<String>,
    },
    #[error("{url}: the answer is not Prometheus's query API ({message})")]
    Answer { url: String, message: String },
    #[error("{url}: the query {query} failed: {message}")]
    Query {
        url: String,
        query: String,
        message: String,
    },
}

/// What one read brought.
#[derive(Debug, Default)]
pub struct Read {
    /// Per step, route and side, in time order.
    pub intervals: Vec<Interval>,
    /// The last step that had data: every count up to it has been handed over. `None` when no
    /// step read had any.
    pub until: Option<f64>,
    /// Why some steps had no data, when they did not.
    pub missing: Option<Missing>,
    /// Worth logging: resets, skipped series (as the scraper tells them).
    pub notes: Vec<String>,
    /// Prometheus answers, but no series it has is one guardian counts: a selector, a metric
    /// name or a canary label that matches nothing (said until one does).
    pub nothing_matched: Option<String>,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// One series of an answer: its name, its other labels, and its value at each step.
type SeriesPoints = (String, Vec<(String, String)>, BTreeMap<i64, f64>);

/// Data a read could not give at its time.
#[derive(Clone, Debug, PartialEq)]
pub struct Missing {
    /// The latest step with data missing.
    pub until: f64,
    pub why: String,
}

/// Reads a service's counters from Prometheus, step after step.
pub struct PromqlReader {
    spec: PromqlSpec,
    queries: Vec<String>,
    scraper: Scraper,
    agent: ureq::Agent,
    /// The last step read.
    last: Option<f64>,
    /// Whether any step had data yet: steps before the first are before the record began,
    /// not missing.
    began: bool,
    /// The sides (canary, the rest, or the service as a whole) whose request series were seen
    /// since the canary last changed, and the last step they were.
    sides_seen: BTreeMap<Side, f64>,
    /// The canary at the last step read: when a notification changes it, the sides seen
    /// before are not missing after.
    canary_then: Vec<String>,
    /// Deploys, from their start to when a process they restarted may still have no series
    /// (its failed scrape, its first request): a side absent then is restarting, not missing.
    settling: Vec<(f64, f64)>,
    /// The URL as shown: without credentials.
    shown_url: String,
    /// `Authorization` for the URL's credentials, sent as basic auth.
    authorization: Option<String>,
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Arm(Arm::Treatment) => "canary",
        Side::Arm(Arm::Control) => "rest of the fleet",
        _ => "service",
    }
}

impl PromqlReader {
    pub fn new(spec: PromqlSpec) -> Result<PromqlReader, String> {
        let scraper = Scraper::remembering(spec.series.clone()).map_err(|e| e.to_string())?;
        let mut names = vec![
            spec.series.requests.name.clone(),
            spec.series.errors.name.clone(),
        ];
        if let Some(l) = &spec.series.latency {
            names.push(format!("{}_bucket", l.name));
        }
        names.dedup();
        let queries = names
            .iter()
            .map(|n| match spec.selector.trim() {
                "" => n.clone(),
                s => format!("{n}{{{s}}}"),
            })
            .collect();
        // A Prometheus that redirects is followed nowhere: its answer is refused as it is.
        let agent = ureq::AgentBuilder::new()
            .timeout(spec.series.timeout)
            .redirects(0)
            .build();
        let (url, shown_url, authorization) = credentials(&spec.url)?;
        let spec = PromqlSpec { url, ..spec };
        Ok(PromqlReader {
            spec,
            queries,
            scraper,
            agent,
            last: None,
            began: false,
            sides_seen: BTreeMap::new(),
            canary_then: Vec::new(),
            settling: Vec::new(),
            shown_url,
            authorization,
        })
    }

    /// Reads on from step `at` (read before a restart) instead of from the backfill: `at` is
    /// read again, to know where each counter stood.
    pub fn resume_at(&mut self, at: f64) {
        self.last = Some(at - f64::from(self.spec.step_secs));
    }

    /// The URL it reads, credentials hidden.
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// The PromQL it asks, one per series name.
    pub fn queries(&self) -> &[String] {
        &self.queries
    }

    /// The step due last at `now`: a whole multiple of the step, `lag_secs` back.
    fn due(&self, now: f64) -> f64 {
        let step = f64::from(self.spec.step_secs);
        ((now - f64::from(self.spec.lag_secs)) / step).floor() * step
    }

    /// Reads every step after the last one read, up to the one due at `now`. On an error
    /// nothing changes: the next read asks again from the same step.
    pub fn read(&mut self, now: f64) -> Result<Read, PromqlError> {
        let step = f64::from(self.spec.step_secs);
        let end = self.due(now);
        let start = match self.last {
            None => end - (f64::from(self.spec.backfill_secs) / step).ceil() * step,
            Some(last) => last + step,
        }
        .max(end - MAX_CATCH_UP_SECS);
        if start > end {
            return Ok(Read::default());
        }
        // Each series once, with its points by step; samples are made one step at a time, so
        // memory follows the answer's size, not its points times its labels.
        let mut series: Vec<SeriesPoints> = Vec::new();
        for query in &self.queries {
            for s in self.query_range(query, start, end)? {
                let mut labels: Vec<(String, String)> = s.metric.into_iter().collect();
                let Some(i) = labels.iter().position(|(n, _)| n == "__name__") else {
                    continue;
                };
                let (_, name) = labels.remove(i);
                let points = s
                    .values
                    .into_iter()
                    .map(|(ts, v)| (ts.round() as i64, parse_value(&v)))
                    .collect();
                series.push((name, labels, points));
                if series.len() > MAX_SERIES {
                    return Err(PromqlError::Answer {
                        url: self.shown_url.clone(),
                        message: format!(
                            "more than {MAX_SERIES} series: narrow the selector or the matchers"
                        ),
                    });
                }
            }
        }
        let mut read = Read::default();
        let mut missing = Vec::new();
        let mut sides_missing: Vec<(f64, &'static str)> = Vec::new();
        let mut suspect_steps: Vec<f64> = Vec::new();
        let mut never_there: Option<(String, Vec<String>)> = None;
        let mut t = start;
        while t <= end {
            let step_at = t as i64;
            let samples: Vec<Sample> = series
                .iter()
                .filter_map(|(name, labels, points)| {
                    points.get(&step_at).map(|&value| Sample {
                        name: name.clone(),
                        labels: labels.clone(),
                        value,
                    })
                })
                .collect();
            if let Some(arms) = self.scraper.arms() {
                if arms.canary_at(t) != self.canary_then.as_slice() {
                    self.canary_then = arms.canary_at(t).to_vec();
                    self.sides_seen.clear();
                }
            }
            let requests = &self.spec.series.requests;
            let sides = self.sides_of(samples.iter().filter(|s| requests.matches(s)), t);
            let settling = self.settling.iter().any(|&(from, to)| from <= t && t <= to);
            if sides.is_empty() {
                // No request series at all: nothing is known of this step. The scraper is not
                // told, so the next step with data counts from the last one that had any.
                // While a deploy restarts every instance, that is the restart.
                if self.began && !settling {
                    missing.push(t);
                }
                t += step;
                continue;
            }
            // A side seen lately and absent now (the canary died, or went unscraped) is missing
            // data for that side, not a side without traffic; so is a canary named and never
            // there (a value mistyped, or it died in its deploy). Not while a deploy restarts.
            let canary = Side::Arm(Arm::Treatment);
            let named = self
                .scraper
                .arms()
                .is_some_and(|a| !a.canary_at(t).is_empty());
            if !settling {
                for (side, seen) in &self.sides_seen {
                    if !sides.contains(side) && t - seen < FORGET_SIDE_SECS {
                        sides_missing.push((t, side_name(*side)));
                    }
                }
                if named && !sides.contains(&canary) && !self.sides_seen.contains_key(&canary) {
                    sides_missing.push((t, side_name(canary)));
                    never_there = self
                        .scraper
                        .arms()
                        .map(|a| (a.label.clone(), a.canary_at(t).to_vec()));
                }
            }
            for side in sides {
                self.sides_seen.insert(side, t);
            }
            self.began = true;
            read.until = Some(t);
            let result = self.scraper.ingest(&samples, t);
            if result.suspect > 0 || (result.unowned > 0 && !settling) {
                suspect_steps.push(t);
            }
            read.intervals.extend(result.intervals);
            read.notes.extend(
                result
                    .notes
                    .into_iter()
                    .filter(|n| !n.contains("first seen")),
            );
            t += step;
        }
        let name = &self.spec.series.requests.name;
        let mut why = Vec::new();
        if let (Some(&first), Some(&last)) = (missing.first(), missing.last()) {
            why.push(format!(
                "no {name} series in Prometheus at {} steps from {} to {}",
                missing.len(),
                crate::report::units::when(first),
                crate::report::units::when(last),
            ));
        }
        if let (Some(&(first, side)), Some(&(last, _))) =
            (sides_missing.first(), sides_missing.last())
        {
            why.push(format!(
                "the {side}'s {name} series were missing at {} steps from {} to {}{}",
                sides_missing.len(),
                crate::report::units::when(first),
                crate::report::units::when(last),
                never_there
                    .map(|(label, values)| format!(
                        " (no series has {label} in {:?}: is the canary named right?)",
                        values
                    ))
                    .unwrap_or_default(),
            ));
        }
        if let (Some(&first), Some(&last)) = (suspect_steps.first(), suspect_steps.last()) {
            why.push(format!(
                "series vanished, jumped beyond any count or had no canary label at {} steps \
                 from {} to {}",
                suspect_steps.len(),
                crate::report::units::when(first),
                crate::report::units::when(last),
            ));
        }
        let latest = [
            missing.last(),
            sides_missing.last().map(|(t, _)| t),
            suspect_steps.last(),
        ]
        .into_iter()
        .flatten()
        .copied()
        .reduce(f64::max);
        read.missing = latest.map(|until| Missing {
            until,
            why: why.join("; "),
        });
        if !self.began {
            read.nothing_matched = Some(self.nothing_matched());
        } else if let Some(arms) = self.scraper.arms() {
            let canary = arms.canary_at(end);
            if !canary.is_empty() && !self.sides_seen.contains_key(&Side::Arm(Arm::Treatment)) {
                read.nothing_matched = Some(format!(
                    "no {} series has {} in {:?}: the canary is not compared until one does",
                    name, arms.label, canary
                ));
            }
        }
        self.last = Some(end);
        Ok(read)
    }

    fn nothing_matched(&self) -> String {
        let series = &self.spec.series;
        match &series.arms {
            Some(arms) => format!(
                "Prometheus answers, but no {} series from {} has the label {}: check selector, \
                 requests and canary_label",
                series.requests.name,
                self.queries.join(", "),
                arms.label
            ),
            None => format!(
                "Prometheus answers, but no {} series matches {}: check selector and requests",
                series.requests.name,
                self.queries.join(", ")
            ),
        }
    }

    /// The sides `requests` series are on at step `t`: the canary, the rest, or (without a
    /// canary) the service as a whole. A series on neither side is on none.
    fn sides_of<'a>(&self, requests: impl Iterator<Item = &'a Sample>, t: f64) -> BTreeSet<Side> {
        requests
            .map(|s| match self.scraper.arms() {
                None => Side::Whole,
                Some(arms) => arms.of(s, t),
            })
            .filter(|side| matches!(side, Side::Whole | Side::Arm(_)))
            .collect()
    }

    /// A deploy restarted processes from `from` to `to`: until a few steps after it (the
    /// restarted processes' first scrapes, their first requests), a side without series is
    /// restarting, not missing.
    pub fn deployed(&mut self, from: f64, to: f64) {
        let step = f64::from(self.spec.step_secs);
        let settle = f64::from(self.spec.lag_secs).max(MIN_SETTLE_SECS) + 2.0 * step;
        self.settling.push((from.min(to), to + settle));
        if self.settling.len() > MAX_SETTLING {
            self.settling.remove(0);
        }
    }

    /// From `rollout.since`, the canary is what a notification named.
    pub fn roll_out(&mut self, rollout: Rollout) -> bool {
        self.scraper.roll_out(rollout)
    }

    fn query_range(&self, query: &str, start: f64, end: f64) -> Result<Vec<Series>, PromqlError> {
        let url = format!("{}/api/v1/query_range", self.spec.url.trim_end_matches('/'));
        let shown = format!(
            "{}/api/v1/query_range",
            self.shown_url.trim_end_matches('/')
        );
        let mut request = self
            .agent
            .get(&url)
            .query("query", query)
            .query("start", &format!("{start:.3}"))
            .query("end", &format!("{end:.3}"))
            .query("step", &format!("{}s", self.spec.step_secs));
        if let Some(auth) = &self.authorization {
            request = request.set("Authorization", auth);
        }
        let (status, body) = match request.call() {
            Ok(r) => (r.status(), body_of(r, &shown)?),
            Err(ureq::Error::Status(status, r)) => (status, body_of(r, &shown).unwrap_or_default()),
            Err(ureq::Error::Transport(t)) => {
                return Err(PromqlError::Transport {
                    url: shown,
                    message: shown_text(
                        &(t.kind().to_string()
                            + &std::error::Error::source(&t)
                                .map(|e| format!(": {e}"))
                                .unwrap_or_default()),
                    ),
                })
            }
        };
        if (300..400).contains(&status) {
            return Err(PromqlError::Status {
                url: shown,
                status,
                detail: Some(
                    "a redirect, which guardian does not follow: give the final URL".into(),
                ),
            });
        }
        let answer: Result<Answer, _> = serde_json::from_str(&body);
        match answer {
            Ok(Answer {
                status: ok,
                data: Some(data),
                ..
            }) if ok == "success" && status == 200 => {
                if data.result_type != "matrix" {
                    return Err(PromqlError::Answer {
                        url: shown,
                        message: format!(
                            "a {} where a matrix was asked for",
                            shown_text(&data.result_type)
                        ),
                    });
                }
                Ok(data.result)
            }
            Ok(Answer {
                error: Some(message),
                ..
            }) => Err(PromqlError::Query {
                url: shown,
                query: query.to_owned(),
                message: shown_text(&message),
            }),
            Ok(_) if status != 200 => Err(PromqlError::Status {
                url: shown,
                status,
                detail: None,
            }),
            Ok(_) => Err(PromqlError::Answer {
                url: shown,
                message: "no data in a successful answer".into(),
            }),
            Err(_) if status != 200 => Err(PromqlError::Status {
                url: shown,
                status,
                detail: (!body.is_empty()).then(|| shown_text(&body)),
            }),
            Err(e) => Err(PromqlError::Answer {
                url: shown,
                message: shown_text(&e.to_string()),
            }),
        }
    }
}

/// Text from Prometheus as guardian shows it (logs, status, notes): one line, printable, short.
fn shown_text(text: &str) -> String {
    let cut: String = text.chars().take(MAX_SHOWN).collect();
    let more = if text.chars().nth(MAX_SHOWN).is_some() {
        "..."
    } else {
        ""
    };
    format!(
        "{}{more}",
        crate::report::text::printable(&cut.replace(['\n', '\r'], " "))
    )
}

/// The URL to ask without its credentials, the URL as shown (credentials hidden), and the
/// credentials as a basic `Authorization` header.
fn credentials(url: &str) -> Result<(String, String, Option<String>), String> {
    use base64::Engine as _;
    let mut parsed =
        url::Url::parse(url).map_err(|e| format!("url {:?}: {e}", userinfo_hidden(url)))?;
    if parsed.username().is_empty() && parsed.password().is_none() {
        return Ok((url.to_owned(), url.to_owned(), None));
    }
    let user = percent_decoded(parsed.username());
    if user.contains(':') {
        // RFC 7617: the user name ends at the first colon, so the server would read another.
        return Err(format!(
            "url {:?}: the user name has a colon, which basic auth cannot send",
            userinfo_hidden(url)
        ));
    }
    let pair = format!(
        "{user}:{}",
        percent_decoded(parsed.password().unwrap_or_default())
    );
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    );
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    let bare = parsed.to_string();
    let _ = parsed.set_username("***");
    Ok((bare, parsed.to_string(), Some(auth)))
}

/// Checks that `selector` is PromQL label matchers without braces (`job="shop",env!~"dev.*"`),
/// so that a typo is refused at start, naming where, rather than by Prometheus at every read.
/// Written here because the PromQL parsers on crates.io bring a whole grammar generator for
/// what is a list of `name op "string"`.
pub fn check_selector(selector: &str) -> Result<(), String> {
    let mut rest = selector.trim_start();
    let at = |rest: &str| selector.len() - rest.len() + 1;
    while !rest.is_empty() {
        // A label name: an identifier, or quoted (Prometheus 3's UTF-8 names).
        let name_len = if rest.starts_with(['"', '\'', '`']) {
            quoted_len(rest)
                .ok_or_else(|| format!("an unclosed quote at character {}", at(rest)))?
        } else {
            let n = rest
                .char_indices()
                .find(|&(i, c)| {
                    !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
                })
                .map_or(rest.len(), |(i, _)| i);
            if n == 0 {
                return Err(format!("a label name expected at character {}", at(rest)));
            }
            n
        };
        rest = rest[name_len..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .ok_or_else(|| format!("one of =, !=, =~, !~ expected at character {}", at(rest)))?;
        rest = rest[op.len()..].trim_start();
        if !rest.starts_with(['"', '\'', '`']) {
            return Err(format!("a quoted value expected at character {}", at(rest)));
        }
        let value_len = quoted_len(rest)
            .ok_or_else(|| format!("an unclosed quote at character {}", at(rest)))?;
        rest = rest[value_len..].trim_start();
        match rest.strip_prefix(',') {
            Some(after) => rest = after.trim_start(),
            None if rest.is_empty() => {}
            None => return Err(format!("a comma expected at character {}", at(rest))),
        }
    }
    Ok(())
}

/// The length of the quoted string `s` starts with, quotes included: `None` when unclosed.
fn quoted_len(s: &str) -> Option<usize> {
    let quote = s.chars().next()?;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quote != '`' => escaped = true,
            c if c == quote => return Some(i + c.len_utf8()),
            _ => {}
        }
    }
    None
}

/// `url` as guardian shows it: its credentials, if any, hidden.
pub fn shown_url(url: &str) -> String {
    credentials(url).map_or_else(|_| userinfo_hidden(url), |(_, shown, _)| shown)
}

/// `url` with whatever is before the last `@` of its authority shown as `***`, by its text
/// alone: for a URL that does not parse, whose credentials must not be shown either.
fn userinfo_hidden(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => {
            let sep = if url.contains("://") { "://" } else { "" };
            format!("{scheme}{sep}***{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

fn percent_decoded(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn body_of(r: ureq::Response, url: &str) -> Result<String, PromqlError> {
    let mut body = String::new();
    r.into_reader()
        .take(MAX_BODY_BYTES + 1)
        .read_to_string(&mut body)
        .map_err(|e| PromqlError::Transport {
            url: url.to_owned(),
            message: format!("reading the answer: {e}"),
        })?;
    if body.len() as u64 > MAX_BODY_BYTES {
        return Err(PromqlError::Answer {
            url: url.to_owned(),
            message: format!("larger than {MAX_BODY_BYTES} bytes"),
        });
    }
    Ok(body)
}

/// Prometheus writes sample values as strings, with `NaN`, `+Inf` and `-Inf` spelled so.
fn parse_value(v: &str) -> f64 {
    match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => v.parse().unwrap_or(f64::NAN),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::observation::Arm;
    use crate::scrape::{Arms, Matcher, Rollout};

    /// A Prometheus of one thread answering `query_range` from `answer(query, start, end)`.
    fn fake_prometheus(
        answer: impl Fn(&str, f64, f64) -> (u16, String) + Send + 'static,
    ) -> String {
        fake_prometheus_seeing(move |q, s, e, _| answer(q, s, e))
    }

    /// Like `fake_prometheus`, and `answer` also sees the request's `Authorization`.
    fn fake_prometheus_seeing(
        answer: impl Fn(&str, f64, f64, Option<&str>) -> (u16, String) + Send + 'static,
    ) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            use std::io::{BufRead, BufReader, Write};
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                reader.read_line(&mut line).unwrap();
                let mut auth = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap() <= 2 {
                        break;
                    }
                    if let Some((name, value)) = h.split_once(':') {
                        if name.eq_ignore_ascii_case("authorization") {
                            auth = Some(value.trim().to_owned());
                        }
                    }
                }
                let target = line.split(' ').nth(1).unwrap();
                let parsed = url::Url::parse(&format!("http://x{target}")).unwrap();
                let get = |k: &str| {
                    parsed
                        .query_pairs()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                let (status, body) = answer(
                    &get("query"),
                    get("start").parse().unwrap_or(0.0),
                    get("end").parse().unwrap_or(0.0),
                    auth.as_deref(),
                );
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    fn spec(url: &str) -> PromqlSpec {
        PromqlSpec {
            url: url.to_owned(),
            selector: "job=\"shop\"".into(),
            series: ScrapeSpec {
                url: String::new(),
                requests: Matcher::new("http_requests_total"),
                errors: Matcher::new("http_requests_total")
                    .with("code", crate::scrape::LabelMatch::pattern("5..")),
                latency: None,
                route_label: None,
                arms: Some(Arms::new("instance".into(), vec!["b".into()])),
                latency_unit_ms: 1000.0,
                timeout: Duration::from_secs(2),
            },
            step_secs: 10,
            lag_secs: 30,
            backfill_secs: 0,
        }
    }

    /// A matrix of `http_requests_total` on instances a and b: per instance, `(code, value at t)`.
    type Points = Vec<(f64, f64)>;

    fn matrix(series: &[(&str, &str, Points)]) -> String {
        answer(
            series
                .iter()
                .map(|(instance, code, values)| {
                    labelled(&[("instance", instance), ("code", code)], values)
                })
                .collect(),
        )
    }

    /// One `http_requests_total{job="shop"}` series with `labels` besides, as a matrix holds it.
    fn labelled(labels: &[(&str, &str)], values: &Points) -> serde_json::Value {
        let mut metric = serde_json::json!({"__name__": "http_requests_total", "job": "shop"});
        for (name, value) in labels {
            metric[*name] = (*value).into();
        }
        serde_json::json!({
            "metric": metric,
            "values": values.iter().map(|(t, v)| serde_json::json!([t, v.to_string()])).collect::<Vec<_>>(),
        })
    }

    /// A successful matrix answer holding `result`.
    fn answer(result: Vec<serde_json::Value>) -> String {
        serde_json::json!({"status": "success", "data": {"resultType": "matrix", "result": result}})
            .to_string()
    }

    #[test]
    fn counters_become_whole_counts_per_step_and_side_and_a_reset_is_not_negative() {
        let url = fake_prometheus(|query, start, end| {
            assert_eq!(query, "http_requests_total{job=\"shop\"}");
            let points = |f: fn(f64) -> f64| {
                let mut v = Vec::new();
                let mut t = start;
                while t <= end {
                    v.push((t, f(t)));
                    t += 10.0;
                }
                v
            };
            (
                200,
                matrix(&[
                    ("a", "200", points(|t| (t - 1000.0) * 2.0)),
                    // b restarts at 1040: its counter starts again from 0.
                    (
                        "b",
                        "200",
                        points(|t| if t < 1040.0 { t - 1000.0 } else { t - 1040.0 }),
                    ),
                    ("b", "500", points(|t| ((t - 1000.0) / 10.0).floor())),
                ]),
            )
        });
        let mut r = PromqlReader::new(spec(&url)).unwrap();
        let first = r.read(1030.0).unwrap();
        assert!(
            first.intervals.is_empty(),
            "the first step only sets where counting starts"
        );
        assert_eq!(first.until, Some(1000.0));
        let read = r.read(1090.0).unwrap();
        assert_eq!(read.until, Some(1060.0));
        assert!(read.missing.is_none());
        let at = |t: f64, arm: Arm| {
            read.intervals
                .iter()
                .find(|i| i.end == t && i.arm == Some(arm))
                .map(|i| (i.requests, i.errors))
        };
        assert_eq!(at(1010.0, Arm::Control), Some((20, 0)));
        assert_eq!(at(1010.0, Arm::Treatment), Some((11, 1)));
        // The reset: b's 200s counter went from 30 to 0; counted from zero, never negative.
        assert_eq!(at(1040.0, Arm::Treatment), Some((1, 1)));
        assert_eq!(at(1050.0, Arm::Treatment), Some((11, 1)));
    }

    #[test]
    fn a_step_with_no_series_is_missing_and_its_counts_come_with_the_next_step_that_has_data() {
        let url = fake_prometheus(|_, start, end| {
            let mut v = Vec::new();
            let mut t = start;
            while t <= end {
                // Prometheus had nothing for 1020 and 1030 (its scrapes failed, the series went stale).
                if !(1020.0..=1030.0).contains(&t) {
                    v.push((t, t - 1000.0));
                }
                t += 10.0;
            }
            (200, matrix(&[("a", "200", v)]))
        });
        let mut r = PromqlReader::new(spec(&url)).unwrap();
        r.read(1030.0).unwrap();
        let read = r.read(1080.0).unwrap();
        assert_eq!(read.until, Some(1050.0));
        let counts: Vec<(f64, u64)> = read.intervals.iter().map(|i| (i.end, i.requests)).collect();
        assert_eq!(counts, vec![(1010.0, 10), (1040.0, 30), (1050.0, 10)]);
        let missing = read.missing.unwrap().why;
        assert!(missing.contains("at 2 steps"), "{missing}");
    }

    #[test]
    fn a_failing_prometheus_is_an_error_that_names_it_and_loses_nothing() {
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = up.clone();
        let url = fake_prometheus(move |_, start, end| {
            if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                return (
                    422,
                    r#"{"status":"error","errorType":"execution","error":"query timed out"}"#
                        .into(),
                );
            }
            let mut v = Vec::new();
            let mut t = start;
            while t <= end {
                v.push((t, t - 1000.0));
                t += 10.0;
            }
            (200, matrix(&[("a", "200", v)]))
        });
        let mut r = PromqlReader::new(spec(&url)).unwrap();
        r.read(1030.0).unwrap();
        up.store(false, std::sync::atomic::Ordering::SeqCst);
        let e = r.read(1060.0).unwrap_err().to_string();
        assert!(e.contains(&url) && e.contains("query timed out"), "{e}");
        up.store(true, std::sync::atomic::Ordering::SeqCst);
        let read = r.read(1060.0).unwrap();
        let total: u64 = read.intervals.iter().map(|i| i.requests).sum();
        assert_eq!(total, 30, "the steps asked while it failed are asked again");
        let down = PromqlReader::new(spec("http://127.0.0.1:1"))
            .unwrap()
            .read(1030.0);
        assert!(down.unwrap_err().to_string().contains("127.0.0.1:1"));
    }

    #[test]
    fn an_answer_that_is_not_prometheus_is_refused() {
        for (status, body, says) in [
            (
                200,
                "<html>login</html>".to_owned(),
                "not Prometheus's query API",
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.into(),
                "a vector",
            ),
            (502, "bad gateway".into(), "HTTP 502: bad gateway"),
        ] {
            let url = fake_prometheus(move |_, _, _| (status, body.clone()));
            let e = PromqlReader::new(spec(&url))
                .unwrap()
                .read(1030.0)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    /// Points of `f(t)` at every step from `start` to `end`.
    fn points(start: f64, end: f64, f: impl Fn(f64) -> f64) -> Points {
        let mut v = Vec::new();
        let mut t = start;
        while t <= end {
            v.push((t, f(t)));
            t += 10.0;
        }
        v
    }

    #[test]
    fn a_canary_whose_series_vanish_is_missing_data_not_a_canary_without_traffic() {
        let url = fake_prometheus(|_, start, end| {
            let canary: Points = points(start, end, |t| t - 1000.0)
                .into_iter()
                .filter(|&(t, _)| t < 1030.0)
                .collect();
            (
                200,
                matrix(&[
                    ("a", "200", points(start, end, |t| t - 1000.0)),
                    ("b", "200", canary),
                ]),
            )
        });
        let mut r = PromqlReader::new(spec(&url)).unwrap();
        r.read(1030.0).unwrap();
        let read = r.read(1080.0).unwrap();
        assert_eq!(read.until, Some(1050.0), "the rest's data is in");
        let missing = read.missing.unwrap().why;
        assert!(
            missing.contains("the canary's http_requests_total series were missing at 3 steps"),
            "{missing}"
        );
    }

    #[test]
    fn a_notification_s_canary_splits_the_series_from_its_deploy_on_and_a_widening_moves_a_host() {
        let url = fake_prometheus(|_, start, end| {
            (
                200,
                matrix(&[
                    ("a", "200", points(start, end, |t| t - 1000.0)),
                    ("b", "200", points(start, end, |t| 2.0 * (t - 1000.0))),
                    ("c", "200", points(start, end, |t| 3.0 * (t - 1000.0))),
                ]),
            )
        });
        let mut spec = spec(&url);
        spec.series.arms = Some(Arms::new("instance".into(), Vec::new()));
        let mut r = PromqlReader::new(spec).unwrap();
        r.read(1030.0).unwrap();
        assert!(r.roll_out(Rollout {
            held_from: 1005.0,
            since: 1015.0,
            canary: Some(vec!["c".into()]),
        }));
        assert!(r.roll_out(Rollout {
            held_from: 1035.0,
            since: 1045.0,
            canary: Some(vec!["c".into(), "b".into()]),
        }));
        let read = r.read(1090.0).unwrap();
        assert!(read.missing.is_none(), "{:?}", read.missing);
        assert!(read.nothing_matched.is_none(), "{:?}", read.nothing_matched);
        let at = |t: f64| {
            let mut sides: Vec<_> = read
                .intervals
                .iter()
                .filter(|i| i.end == t)
                .map(|i| (i.arm, i.requests))
                .collect();
            sides.sort();
            sides
        };
        assert_eq!(
            at(1010.0),
            [(None, 60)],
            "before the canary: the service as a whole"
        );
        assert_eq!(
            at(1020.0),
            [(Some(Arm::Control), 30), (Some(Arm::Treatment), 30)]
        );
        assert_eq!(
            at(1040.0),
            [(Some(Arm::Control), 10), (Some(Arm::Treatment), 30)],
            "b restarting into the canary is on neither side"
        );
        assert_eq!(
            at(1050.0),
            [(Some(Arm::Control), 10), (Some(Arm::Treatment), 50)]
        );
    }

    #[test]
    fn a_canary_absent_while_its_deploy_settles_is_restarting_and_after_it_missing() {
        // Canary b is restarted by the deploy at 1040 and has no series until 1070; it dies
        // again at 1150.
        let url = fake_prometheus(|_, start, end| {
            let b: Points = points(start, end, |t| match t < 1040.0 {
                true => t - 1000.0,
                false => t - 1070.0,
            })
            .into_iter()
            .filter(|&(t, _)| t < 1040.0 || (1070.0..1150.0).contains(&t))
            .collect();
            (
                200,
                matrix(&[
                    ("a", "200", points(start, end, |t| t - 1000.0)),
                    ("b", "200", b),
                ]),
            )
        });
        let mut r = PromqlReader::new(spec(&url)).unwrap();
        r.read(1030.0).unwrap();
        r.deployed(1035.0, 1045.0);
        let read = r.read(1130.0).unwrap();
        assert_eq!(read.missing, None, "restarting within 50 s of its deploy");
        let read = r.read(1210.0).unwrap();
        assert_eq!(
            read.missing.map(|m| m.until),
            Some(1180.0),
            "dead afterwards"
        );

        // A canary named by a notification that no series has (a typo): missing once its
        // deploy has settled.
        let url = fake_prometheus(|_, start, end| {
            (
                200,
                matrix(&[("a", "200", points(start, end, |t| t - 1000.0))]),
            )
        });
        let mut notified = spec(&url);
        notified.series.arms = Some(Arms::new("instance".into(), Vec::new()));
        let mut r = PromqlReader::new(notified).unwrap();
        r.read(1030.0).unwrap();
        r.deployed(1035.0, 1045.0);
        r.roll_out(Rollout {
            held_from: 1035.0,
            since: 1045.0,
            canary: Some(vec!["bb".into()]),
        });
        let read = r.read(1130.0).unwrap();
        let missing = read.missing.unwrap();
        assert_eq!(missing.until, 1100.0);
        assert!(
            missing
                .why
                .contains("the canary's http_requests_total series were missing at 1 steps"),
            "{}",
            missing.why
        );
    }

    #[test]
    fn a_canary_no_series_is_on_is_said() {
        let url = fake_prometheus(|_, start, end| {
            (
                200,
                matrix(&[("a", "200", points(start, end, |t| t - 1000.0))]),
            )
        });
        let mut r = PromqlReader::new(spec(&url)).unwrap();
        let read = r.read(1030.0).unwrap();
        let said = read.nothing_matched.unwrap();
        assert!(said.contains("the canary is not compared"), "{said}");
    }

    #[test]
    fn a_selector_is_label_matchers_and_a_mistake_is_named_where_it_is() {
        for ok in [
            "",
            "job=\"shop\"",
            " job = \"shop\" , env!~'dev.*', ",
            "a=~`x\\d`,\"my.label\"!=\"a\\\"b\"",
        ] {
            assert_eq!(check_selector(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("job=\"shop\") or (up", "a comma expected at character 11"),
            ("job=\"shop", "an unclosed quote at character 5"),
            ("job=shop", "a quoted value expected at character 5"),
            ("job==\"shop\"", "a quoted value expected at character 5"),
            (
                "job \"shop\"",
                "one of =, !=, =~, !~ expected at character 5",
            ),
            ("=\"shop\"", "a label name expected at character 1"),
            (
                "job=\"a\",,env=\"b\"",
                "a label name expected at character 9",
            ),
        ] {
            assert_eq!(check_selector(bad), Err(says.to_owned()), "{bad}");
        }
    }

    #[test]
    fn credentials_in_a_url_that_does_not_parse_are_not_shown_either() {
        assert_eq!(
            shown_url("http://user:s3cr3t@[::1"),
            "http://***@[::1",
            "a URL that does not parse"
        );
        let e = PromqlReader::new(spec("http://user:s3cr3t@[::1"))
            .err()
            .unwrap();
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = PromqlReader::new(spec("http://us%3Aer:pw@127.0.0.1:9090"))
            .err()
            .unwrap();
        assert!(e.contains("colon"), "{e}");
        assert_eq!(
            shown_url("http://127.0.0.1:9090/a@b"),
            "http://127.0.0.1:9090/a@b"
        );
    }

    #[test]
    fn credentials_in_the_url_are_sent_as_basic_auth_and_never_shown() {
        let url = fake_prometheus_seeing(|_, start, end, auth| {
            // user:p+ss@word, as base64.
            if auth != Some("Basic dXNlcjpwK3NzQHdvcmQ=") {
                return (
                    401,
                    format!("{{\"status\":\"error\",\"error\":\"auth {auth:?}\"}}"),
                );
            }
            (200, matrix(&[("a", "200", points(start, end, |t| t))]))
        });
        let with = url.replace("http://", "http://user:p+ss%40word@");
        let mut r = PromqlReader::new(spec(&with)).unwrap();
        assert!(!r.shown_url().contains("p+ss"), "{}", r.shown_url());
        assert!(r.shown_url().contains("***@"), "{}", r.shown_url());
        r.read(1030.0).unwrap();
        let e = PromqlReader::new(spec(&url.replace("http://", "http://user:wrong@")))
            .unwrap()
            .read(1030.0)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("wrong"), "{e}");
    }

    #[test]
    fn prometheus_s_own_words_are_shown_on_one_line_and_short() {
        let url = fake_prometheus(|_, _, _| {
            let message = format!(
                "bad\\nFAKE INFO change healthy\\u001b[31m{}",
                "x".repeat(100_000)
            );
            (
                422,
                format!("{{\"status\":\"error\",\"error\":\"{message}\"}}"),
            )
        });
        let e = PromqlReader::new(spec(&url))
            .unwrap()
            .read(1030.0)
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n') && !e.contains('\u{1b}'), "{e}");
        assert!(e.len() < 600, "{}", e.len());
    }

    #[test]
    fn a_value_no_counter_reaches_is_skipped_not_counted() {
        let url = fake_prometheus(|_, start, end| {
            let v = points(start, end, |t| if t == 1020.0 { 1e300 } else { t - 1000.0 });
            (200, matrix(&[("a", "200", v)]))
        });
        let mut whole = spec(&url);
        whole.series.arms = None;
        let mut r = PromqlReader::new(whole).unwrap();
        r.read(1030.0).unwrap();
        let read = r.read(1070.0).unwrap();
        let counts: Vec<(f64, u64)> = read.intervals.iter().map(|i| (i.end, i.requests)).collect();
        // 1e300 is not counted; the counter going back to 30 reads as a reset.
        assert_eq!(counts, vec![(1010.0, 10), (1030.0, 30), (1040.0, 10)]);
        assert!(
            read.notes
                .iter()
                .any(|n| n.contains("which no counter of requests does")),
            "{:?}",
            read.notes
        );
        let missing = read.missing.unwrap();
        assert!(missing.why.contains("jumped beyond any count"));
        assert_eq!(missing.until, 1020.0);
    }

    #[test]
    fn after_one_jump_beyond_any_count_a_counter_is_counted_on_from_where_it_jumped_to() {
        let url = fake_prometheus(|_, start, end| {
            let v = points(
                start,
                end,
                |t| if t < 1020.0 { t - 1000.0 } else { 1e15 + t },
            );
            (200, matrix(&[("b", "500", v)]))
        });
        let mut r = PromqlReader::new(spec(&url)).unwrap();
        r.read(1030.0).unwrap();
        let read = r.read(1070.0).unwrap();
        let errors: Vec<(f64, u64)> = read.intervals.iter().map(|i| (i.end, i.errors)).collect();
        assert_eq!(errors, vec![(1010.0, 10), (1030.0, 10), (1040.0, 10)]);
        assert_eq!(read.missing.map(|m| m.until), Some(1020.0));
    }

    #[test]
    fn an_error_series_hidden_behind_a_missed_scrape_or_a_counter_reset_or_a_version_is_missing() {
        let two_hosts = |url: &str| {
            let mut s = spec(url);
            s.series.arms = Some(Arms::new("instance".into(), vec!["b".into(), "b2".into()]));
            s
        };
        let read = |spec: PromqlSpec| {
            let mut r = PromqlReader::new(spec).unwrap();
            r.read(1030.0).unwrap();
            r.read(1090.0).unwrap().missing.map(|m| m.until)
        };
        // b misses the scrape at 1030 and is back at 1040 without its 500s, its 200s going on.
        let missed = fake_prometheus(|_, start, end| {
            let up = |t: f64| t != 1030.0;
            let ok = points(start, end, |t| t - 1000.0);
            let b_ok: Points = ok.iter().copied().filter(|&(t, _)| up(t)).collect();
            let b_failed: Points = points(start, end, |t| (t - 1000.0) / 10.0)
                .into_iter()
                .filter(|&(t, _)| t < 1030.0)
                .collect();
            (
                200,
                matrix(&[
                    ("b", "200", b_ok),
                    ("b", "500", b_failed),
                    ("b2", "200", ok.clone()),
                    ("a", "200", ok),
                ]),
            )
        });
        assert_eq!(
            read(two_hosts(&missed)),
            Some(1040.0),
            "back without its 500s"
        );
        // b's 500s vanish at 1030 as a small counter of b goes down; its 200s go on.
        let reset = fake_prometheus(|_, start, end| {
            let ok = points(start, end, |t| t - 1000.0);
            let failed: Points = points(start, end, |t| (t - 1000.0) / 10.0)
                .into_iter()
                .filter(|&(t, _)| t < 1030.0)
                .collect();
            let small = points(start, end, |t| if t < 1030.0 { 5.0 } else { 1.0 });
            (
                200,
                matrix(&[
                    ("b", "200", ok.clone()),
                    ("b", "500", failed),
                    ("b", "204", small),
                    ("b2", "200", ok.clone()),
                    ("a", "200", ok),
                ]),
            )
        });
        assert_eq!(
            read(two_hosts(&reset)),
            Some(1030.0),
            "one counter down is no restart"
        );
        // Told apart by version: the canary's 500s alone move to a version never seen.
        let relabelled = fake_prometheus(|_, start, end| {
            let series = |version: &str, instance: &str, code: &str, values: Points| {
                labelled(
                    &[("version", version), ("instance", instance), ("code", code)],
                    &values,
                )
            };
            let ok = points(start, end, |t| t - 1000.0);
            let failed = points(start, end, |t| (t - 1000.0) / 10.0);
            let (before, after): (Points, Points) = failed.iter().partition(|&&(t, _)| t < 1030.0);
            let result = vec![
                series("v1", "h1", "200", ok.clone()),
                series("v2", "h3", "200", ok),
                series("v2", "h3", "500", before),
                series("v9", "h3", "500", after),
            ];
            (200, answer(result))
        });
        let mut by_version = spec(&relabelled);
        by_version.series.arms = Some(Arms::new("version".into(), vec!["v2".into()]));
        assert_eq!(
            read(by_version),
            Some(1030.0),
            "its 200s are still v2: no move"
        );
    }

    #[test]
    fn without_instance_a_vanished_series_is_missing_unless_a_deploy_restarted_the_old_version() {
        // Series from a push gateway or a recording rule: a `pod`, a `version`, no `instance`,
        // so no process guardian can tell (the app names its pods). p1 runs v1, the canary
        // pods p2 and p3 v2. At 1030 `vanishing`'s 500s series vanishes while `restarting`
        // restarts; `deployed` is when a deploy was notified.
        let read = |vanishing: &'static str, restarting: &'static str, deployed: bool| {
            let prometheus = fake_prometheus(move |_, start, end| {
                let series = |pod: &str, version: &str, code: &str, values: Points| {
                    labelled(
                        &[("pod", pod), ("version", version), ("code", code)],
                        &values,
                    )
                };
                let ok = |pod: &str| {
                    points(start, end, |t| match t >= 1030.0 && pod == restarting {
                        true => t - 1030.0,
                        false => t - 1000.0,
                    })
                };
                let failed = |pod: &str| -> Points {
                    points(start, end, |t| (t - 1000.0) / 10.0)
                        .into_iter()
                        .filter(|&(t, _)| t < 1030.0 || pod != vanishing)
                        .collect()
                };
                let result = vec![
                    series("p1", "v1", "200", ok("p1")),
                    series("p1", "v1", "500", failed("p1")),
                    series("p2", "v2", "200", ok("p2")),
                    series("p2", "v2", "500", failed("p2")),
                    series("p3", "v2", "200", ok("p3")),
                ];
                (200, answer(result))
            });
            let mut by_version = spec(&prometheus);
            by_version.series.arms = Some(Arms::new("version".into(), vec!["v2".into()]));
            let mut r = PromqlReader::new(by_version).unwrap();
            r.read(1020.0).unwrap();
            if deployed {
                r.deployed(1025.0, 1028.0);
            }
            r.read(1070.0).unwrap().missing.map(|m| m.until)
        };
        for (vanishing, restarting) in [("p1", "p1"), ("p2", "p2"), ("p2", "p3")] {
            assert_eq!(
                read(vanishing, restarting, false),
                Some(1030.0),
                "{vanishing}'s 500s vanish as {restarting} restarts, no deploy"
            );
        }
        assert_eq!(
            read("p1", "p1", true),
            None,
            "a deploy restarted the old version's p1"
        );
        assert_eq!(
            read("p2", "p2", true),
            Some(1030.0),
            "a deploy explains no canary series vanishing"
        );
    }

    #[test]
    fn a_series_without_the_canary_label_while_a_canary_is_named_is_missing() {
        // Host h2 runs the canary (v2), but exports its 500s without a version: on neither side.
        let prometheus = fake_prometheus(|_, start, end| {
            let series = |instance: &str, version: Option<&str>, code: &str, values: Points| {
                let mut labels = vec![("instance", instance), ("code", code)];
                labels.extend(version.map(|v| ("version", v)));
                labelled(&labels, &values)
            };
            let ok = points(start, end, |t| t - 1000.0);
            let failed = points(start, end, |t| (t - 1000.0) / 2.0);
            let result = vec![
                series("h1", Some("v1"), "200", ok.clone()),
                series("h2", Some("v2"), "200", ok),
                series("h2", None, "500", failed),
            ];
            (200, answer(result))
        });
        let mut by_version = spec(&prometheus);
        by_version.series.arms = Some(Arms::new("version".into(), vec!["v2".into()]));
        let mut r = PromqlReader::new(by_version).unwrap();
        r.read(1020.0).unwrap();
        let missing = r.read(1060.0).unwrap().missing.expect("missing");
        assert!(missing.why.contains("no canary label"), "{}", missing.why);
    }

    #[test]
    fn a_host_down_for_a_while_or_moving_to_the_new_version_is_not_missing_data() {
        // Control host a is down (not scraped) at 1030 and 1040, back from zero at 1050.
        let down = fake_prometheus(|_, start, end| {
            let a = points(
                start,
                end,
                |t| if t < 1050.0 { t - 1000.0 } else { t - 1050.0 },
            )
            .into_iter()
            .filter(|&(t, _)| !(1030.0..1050.0).contains(&t))
            .collect();
            (
                200,
                matrix(&[
                    ("a", "200", a),
                    ("c", "200", points(start, end, |t| t - 1000.0)),
                    ("b", "200", points(start, end, |t| t - 1000.0)),
                ]),
            )
        });
        let mut r = PromqlReader::new(spec(&down)).unwrap();
        r.read(1030.0).unwrap();
        assert_eq!(r.read(1090.0).unwrap().missing, None);

        // Told apart by version: host h2 restarts from v1 into v2 at 1030 (a rollout widening).
        let moved = fake_prometheus(|_, start, end| {
            let series = |version: &str, instance: &str, values: Points| {
                labelled(
                    &[
                        ("version", version),
                        ("instance", instance),
                        ("code", "200"),
                    ],
                    &values,
                )
            };
            let all = points(start, end, |t| t - 1000.0);
            let (v1, v2): (Points, Points) = all.iter().partition(|&&(t, _)| t < 1030.0);
            let v2 = v2.into_iter().map(|(t, _)| (t, t - 1030.0)).collect();
            let result = vec![
                series("v1", "h1", all.clone()),
                series("v1", "h2", v1),
                series("v2", "h2", v2),
                series("v2", "h3", all),
            ];
            (200, answer(result))
        });
        let mut by_version = spec(&moved);
        by_version.series.arms = Some(Arms::new("version".into(), vec!["v2".into()]));
        let mut r = PromqlReader::new(by_version).unwrap();
        r.read(1030.0).unwrap();
        let read = r.read(1090.0).unwrap();
        assert_eq!(read.missing, None);
        let canary_at = |t: f64| {
            read.intervals
                .iter()
                .filter(|i| i.end == t && i.arm == Some(Arm::Treatment))
                .map(|i| i.requests)
                .sum::<u64>()
        };
        assert_eq!(
            (canary_at(1020.0), canary_at(1040.0)),
            (10, 20),
            "h2 joined the canary"
        );
    }

    #[test]
    fn a_series_that_vanishes_without_a_restart_is_missing_and_with_one_it_is_not() {
        // The canary's 500s series vanishes at 1030 while its 200s go on (a label renamed).
        let renamed = fake_prometheus(|_, start, end| {
            let ok = points(start, end, |t| t - 1000.0);
            let failed = points(start, end, |t| (t - 1000.0) / 10.0)
                .into_iter()
                .filter(|&(t, _)| t < 1030.0)
                .collect();
            (200, matrix(&[("b", "200", ok), ("b", "500", failed)]))
        });
        let mut r = PromqlReader::new(spec(&renamed)).unwrap();
        r.read(1030.0).unwrap();
        let read = r.read(1070.0).unwrap();
        let missing = read.missing.unwrap();
        assert!(missing.why.contains("vanished"));
        assert_eq!(missing.until, 1030.0);
        // The canary restarts at 1030: its 200s counter starts again, and its 500s series is
        // not there until its first error. Nothing is missing.
        let restarted = fake_prometheus(|_, start, end| {
            let ok = points(
                start,
                end,
                |t| if t < 1030.0 { t - 1000.0 } else { t - 1030.0 },
            );
            let failed = points(start, end, |t| (t - 1000.0) / 10.0)
                .into_iter()
                .filter(|&(t, _)| t < 1030.0)
                .collect();
            (200, matrix(&[("b", "200", ok), ("b", "500", failed)]))
        });
        let mut r = PromqlReader::new(spec(&restarted)).unwrap();
        r.read(1030.0).unwrap();
        let read = r.read(1070.0).unwrap();
        assert_eq!(read.missing, None);
        // The 500s series vanishes as a new series appears on the canary (its errors now
        // counted under another code), or as another canary host restarts with one: missing,
        // as the process the series was in did not restart.
        for other in ["b", "b2"] {
            let hidden = fake_prometheus(move |_, start, end| {
                let ok = points(start, end, |t| t - 1000.0);
                let failed: Points = points(start, end, |t| (t - 1000.0) / 10.0)
                    .into_iter()
                    .filter(|&(t, _)| t < 1030.0)
                    .collect();
                let elsewhere: Points = points(start, end, |t| (t - 1000.0) / 10.0)
                    .into_iter()
                    .filter(|&(t, _)| t >= 1030.0)
                    .collect();
                (
                    200,
                    matrix(&[
                        ("b", "200", ok),
                        ("b", "500", failed),
                        // b2 restarts at 1030 when it is the one with the new series.
                        (
                            "b2",
                            "200",
                            points(start, end, |t| match t < 1030.0 || other == "b" {
                                true => t - 1000.0,
                                false => t - 1030.0,
                            }),
                        ),
                        (other, "E500", elsewhere),
                    ]),
                )
            });
            let mut two_hosts = spec(&hidden);
            two_hosts.series.arms =
                Some(Arms::new("instance".into(), vec!["b".into(), "b2".into()]));
            let mut r = PromqlReader::new(two_hosts).unwrap();
            r.read(1030.0).unwrap();
            let missing = r.read(1070.0).unwrap().missing;
            assert_eq!(
                missing.map(|m| m.until),
                Some(1030.0),
                "new series on {other}"
            );
        }
    }
}
