//! The decision core's settings, already validated. `Default` is what users get out of the box
//! (`config/guardian.toml` spells the same values out).

/// How the core decides. Durations are in seconds.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetectorSettings {
    /// Chance of rolling back a change that made nothing worse, per change.
    pub alpha: f64,
    /// Shares of `alpha` given to the error, slow-request and latency-distribution tests.
    /// They sum to 1: the tests are combined by a union bound.
    pub alpha_split: AlphaSplit,
    /// Traffic before the change that forms the baseline.
    pub baseline_secs: u32,
    /// How long a change is watched before it can be called healthy.
    pub watch_secs: u32,
    /// When a change does not say when its deploy began, the seconds just before it are taken
    /// as its deploy window: a restart's failed requests there are neither baseline nor watch.
    /// Never more than a tenth of `baseline_secs`.
    #[serde(default = "default_deploy_guard_secs")]
    pub deploy_guard_secs: u32,
    /// A change may raise the error rate (and the slow-request rate) by this relative amount
    /// before it counts as worse: 0.10 means 1.00% -> 1.10% is tolerated.
    pub error_tolerance: f64,
    /// A change may make latencies this much slower (relative) before it counts as worse.
    pub latency_tolerance: f64,
    /// "Slow" means slower than this quantile of the baseline ...
    pub slow_quantile: f64,
    /// ... unless an SLO threshold is set, in milliseconds.
    pub slow_threshold_ms: Option<f64>,
    /// Baseline quantiles at which the latency distribution is compared.
    pub latency_quantiles: Vec<f64>,
    /// Most log-evidence (nats) one second may add at low traffic; see `evidence::cap_for_second`.
    pub max_evidence_per_second: f64,
    /// Routes tracked separately; the rest share one stratum.
    pub max_routes: usize,
    /// A route's baseline needs this many requests to be compared at all.
    pub min_baseline_requests: u64,
    /// A latency threshold needs this many baseline requests above it to be trusted.
    pub min_baseline_tail: u64,
    /// Calling a change healthy needs at least this many requests after it ...
    pub min_requests_after: u64,
    /// ... and, with this confidence, ...
    pub healthy_confidence: f64,
    /// ... a bad-event rate no more than this many times the baseline's, ...
    pub healthy_max_ratio: f64,
    /// ... or an error rate below this absolute level.
    pub healthy_error_floor: f64,
}

fn default_deploy_guard_secs() -> u32 {
    60
}

/// Shares of alpha per test; see [`DetectorSettings::alpha_split`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlphaSplit {
    pub errors: f64,
    pub slow: f64,
    pub latency: f64,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        DetectorSettings {
            alpha: 0.01,
            alpha_split: AlphaSplit {
                errors: 0.6,
                slow: 0.2,
                latency: 0.2,
            },
            baseline_secs: 1800,
            watch_secs: 1800,
            deploy_guard_secs: default_deploy_guard_secs(),
            error_tolerance: 0.10,
            latency_tolerance: 0.05,
            slow_quantile: 0.99,
            slow_threshold_ms: None,
            latency_quantiles: vec![0.5, 0.75, 0.9, 0.95],
            max_evidence_per_second: 1.2,
            max_routes: 32,
            min_baseline_requests: 100,
            min_baseline_tail: 10,
            min_requests_after: 100,
            healthy_confidence: 0.95,
            healthy_max_ratio: 2.0,
            healthy_error_floor: 0.001,
        }
    }
}
