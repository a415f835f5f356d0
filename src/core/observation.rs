//! What the core is fed: single requests, or counts per interval as a metrics scrape gives them.

use super::histogram::Histogram;

/// Which side of a concurrent comparison a request was served by.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Arm {
    /// The old version, serving beside the new one.
    Control,
    /// The new version: the change under watch.
    Treatment,
}

impl Arm {
    /// Reads the label users put in their logs. Accepts the names peers use for each side.
    pub fn parse(label: &str) -> Option<Arm> {
        match label.to_ascii_lowercase().as_str() {
            "control" | "baseline" | "stable" | "old" | "primary" => Some(Arm::Control),
            "treatment" | "canary" | "new" | "candidate" => Some(Arm::Treatment),
            _ => None,
        }
    }
}

/// One request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Request<'a> {
    /// Unix seconds of traffic time.
    pub ts: f64,
    /// Whether the request failed (for HTTP, a status the configuration counts as an error).
    pub error: bool,
    /// `None` when the source does not report latency.
    pub latency_ms: Option<f64>,
    pub route: Option<&'a str>,
    pub arm: Option<Arm>,
}

/// Counts for one interval ending at `ts`, as a Prometheus scrape gives them.
#[derive(Clone, Copy, Debug)]
pub struct Aggregate<'a> {
    /// Unix seconds at the end of the interval.
    pub ts: f64,
    pub requests: u64,
    pub errors: u64,
    /// Latencies of those requests, if the source has a histogram.
    pub latency: Option<&'a Histogram>,
    pub route: Option<&'a str>,
    pub arm: Option<Arm>,
}
