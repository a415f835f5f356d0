//! The configuration file as written: one struct per table, types only, every key optional
//! and no unknown key accepted. What the values mean is the sections' business (`validate`).

use std::path::PathBuf;

use serde::Deserialize;

/// The file as written: types only, every key optional. Integers are read as `i64` (what TOML
/// has) so that a negative or oversized value gets our message rather than serde's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub detector: RawDetector,
    #[serde(default)]
    pub input: RawInput,
    pub daemon: Option<RawDaemon>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub service: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub metrics_listen: Option<String>,
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub viewers: std::collections::BTreeMap<String, PathBuf>,
    #[serde(default)]
    pub logs: Vec<RawLog>,
    pub rollback: Option<RawRollback>,
    pub mail: Option<RawMail>,
    pub on_inconclusive: Option<RawOnInconclusive>,
    #[serde(default)]
    pub scrapes: Vec<RawScrape>,
    #[serde(default)]
    pub promql: Vec<RawPromql>,
    pub gate: Option<RawGate>,
    pub limits: Option<RawLimits>,
    pub sentry: Option<RawSentry>,
    pub agent: Option<RawAgent>,
    pub health: Option<RawHealth>,
    pub flag_off: Option<RawFlagOff>,
    #[serde(default)]
    pub notify: Vec<super::notify::RawNotify>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub url: Option<String>,
    pub interval_secs: Option<i64>,
    pub timeout_secs: Option<i64>,
    pub failures: Option<i64>,
    pub restart: Option<RawRestart>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    pub command: Option<Vec<String>>,
    pub timeout_secs: Option<i64>,
    pub max_per_hour: Option<i64>,
    pub cooldown_secs: Option<i64>,
    pub verify_secs: Option<i64>,
    pub shadow: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlagOff {
    pub url: Option<String>,
    pub method: Option<String>,
    pub body: Option<String>,
    pub token_file: Option<PathBuf>,
    pub timeout_secs: Option<i64>,
    pub file: Option<PathBuf>,
    pub flags: Option<Vec<String>>,
    pub max_per_hour: Option<i64>,
    pub cooldown_secs: Option<i64>,
    pub verify_secs: Option<i64>,
    pub shadow: Option<bool>,
    pub roles: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub command: Option<Vec<String>>,
    pub workdir: Option<PathBuf>,
    pub timeout_secs: Option<i64>,
    pub min_level: Option<String>,
    pub min_events: Option<i64>,
    pub denied_paths: Option<Vec<String>>,
    pub max_runs_per_hour: Option<i64>,
    pub max_running: Option<i64>,
    pub user: Option<String>,
    pub as_guardian: Option<bool>,
    pub token_file: Option<PathBuf>,
    pub pass_env: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentry {
    pub client_secret_file: Option<PathBuf>,
    pub max_age_secs: Option<i64>,
    pub alpha_share: Option<f64>,
    pub api_url: Option<String>,
    pub org: Option<String>,
    pub project: Option<String>,
    pub project_id: Option<i64>,
    pub auth_token_file: Option<PathBuf>,
    pub poll_secs: Option<i64>,
    pub environment: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub reads_per_sec: Option<i64>,
    pub reads_burst: Option<i64>,
    pub writes_per_min: Option<i64>,
    pub writes_burst: Option<i64>,
    pub proposal_bytes_per_hour: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGate {
    pub policy_file: Option<PathBuf>,
    pub agent_token_file: Option<PathBuf>,
    #[serde(default)]
    pub approvers: std::collections::BTreeMap<String, PathBuf>,
    pub shadow: Option<bool>,
    #[serde(default)]
    pub shadow_patterns: Vec<String>,
    pub approval_link_secs: Option<i64>,
    pub approval_base_url: Option<String>,
    pub ai_error_tolerance: Option<f64>,
    pub ai_latency_tolerance: Option<f64>,
    pub slo_error_rate: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScrape {
    pub name: Option<String>,
    pub url: Option<String>,
    pub requests: Option<String>,
    pub errors: Option<String>,
    pub latency: Option<String>,
    pub route_label: Option<String>,
    pub latency_unit_ms: Option<f64>,
    pub interval_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPromql {
    pub name: Option<String>,
    pub url: Option<String>,
    pub selector: Option<String>,
    pub requests: Option<String>,
    pub errors: Option<String>,
    pub latency: Option<String>,
    pub route_label: Option<String>,
    pub latency_unit_ms: Option<f64>,
    pub canary_label: Option<String>,
    pub canary: Option<Vec<String>>,
    pub step_secs: Option<i64>,
    pub lag_secs: Option<i64>,
    pub timeout_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOnInconclusive {
    pub ai: Option<String>,
    pub human: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMail {
    pub from: Option<String>,
    pub to: Option<Vec<String>>,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<i64>,
    pub security: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Read only to be refused with a message that says where the password goes: a secret
    /// inline in the configuration ends up in backups, diffs and bug reports.
    pub password: Option<toml::Value>,
    pub digest_healthy: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollback {
    pub repo: Option<PathBuf>,
    pub push_remote: Option<String>,
    pub push_branch: Option<String>,
    pub hook: Option<Vec<String>>,
    pub hook_timeout_secs: Option<i64>,
    pub verify_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub name: Option<String>,
    pub path: Option<PathBuf>,
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetector {
    pub alpha: Option<f64>,
    pub alpha_split: Option<RawAlphaSplit>,
    pub baseline_secs: Option<i64>,
    pub watch_secs: Option<i64>,
    pub deploy_guard_secs: Option<i64>,
    pub error_tolerance: Option<f64>,
    pub latency_tolerance: Option<f64>,
    pub slow_quantile: Option<f64>,
    pub slow_threshold_ms: Option<f64>,
    pub latency_quantiles: Option<Vec<f64>>,
    pub max_evidence_per_second: Option<f64>,
    pub max_routes: Option<i64>,
    pub min_baseline_requests: Option<i64>,
    pub min_baseline_tail: Option<i64>,
    pub min_requests_after: Option<i64>,
    pub healthy_confidence: Option<f64>,
    pub healthy_max_ratio: Option<f64>,
    pub healthy_error_floor: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlphaSplit {
    pub errors: Option<f64>,
    pub slow: Option<f64>,
    pub latency: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    pub error_status_min: Option<i64>,
}
