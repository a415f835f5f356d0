//! Counts of requests, errors and latencies: what the baseline window and the watch keep per
//! route instead of the requests themselves, so memory depends on the window, not the traffic.

use super::evidence::Counts;
use super::histogram::Histogram;

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub requests: u64,
    pub errors: u64,
    /// Latencies of the requests that reported one.
    #[serde(default)]
    pub latency: Histogram,
}

impl Tally {
    pub fn add_request(&mut self, error: bool, latency_ms: Option<f64>) {
        self.add_request_in(error, latency_ms.map(super::histogram::bucket_of));
    }

    /// Like [`Tally::add_request`], with the latency's bucket already found: a request is
    /// counted twice (in the history and in the watch), its bucket computed once.
    pub fn add_request_in(&mut self, error: bool, bucket: Option<usize>) {
        self.requests += 1;
        self.errors += u64::from(error);
        if let Some(b) = bucket {
            self.latency.add_to_bucket(b, 1);
        }
    }

    /// Counts from outside (a scrape, a push) may be anything: sums saturate, never overflow.
    pub fn add_counts(&mut self, requests: u64, errors: u64, latency: Option<&Histogram>) {
        self.requests = self.requests.saturating_add(requests);
        self.errors = self.errors.saturating_add(errors.min(requests));
        if let Some(h) = latency {
            self.latency.merge(h);
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.latency.merge(&other.latency);
    }

    pub fn clear(&mut self) {
        self.requests = 0;
        self.errors = 0;
        self.latency.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.latency.total() == 0
    }

    pub fn error_counts(&self) -> Counts {
        Counts {
            requests: self.requests,
            events: self.errors,
        }
    }

    /// Requests with a latency, and those in bucket `from` or slower.
    pub fn slower_counts(&self, from: usize) -> Counts {
        Counts {
            requests: self.latency.total(),
            events: self.latency.count_at_or_above(from),
        }
    }
}
