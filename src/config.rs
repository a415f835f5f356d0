//! The configuration file, read in two phases: TOML into [`RawConfig`], which mirrors the file
//! and knows only types, then validation into [`Config`], which knows what the values mean.
//! Every key is optional and defaults to [`DetectorSettings::default`] (see
//! `config/guardian.toml`, which spells the defaults out). Every error names the key at fault
//! and says what is wrong with it, for a person to fix.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::core::{AlphaSplit, DetectorSettings};

/// Everything guardian is configured with, validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub detector: DetectorSettings,
    pub input: InputSettings,
    /// How `guardian run` runs; `None` when the file has no `[daemon]` section (replay needs
    /// none).
    pub daemon: Option<DaemonSettings>,
}

/// How the daemon runs: where it keeps state, where it listens, what it watches.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonSettings {
    /// The service's name, in reports and alerts.
    pub service: String,
    /// Where the state database lives.
    pub state_dir: PathBuf,
    /// Address of the HTTP API; loopback unless the operator says otherwise.
    pub listen: std::net::SocketAddr,
    /// File holding the bearer token every API request must carry.
    pub token_file: PathBuf,
    /// Access logs to follow.
    pub logs: Vec<LogSource>,
    /// How to undo a change that made things worse; `None`: watch and record only.
    pub rollback: Option<RollbackSettings>,
    /// What an `inconclusive` verdict at the end of a watch leads to, per change kind.
    pub on_inconclusive: OnInconclusive,
    /// The app's own Prometheus endpoints to scrape.
    pub scrapes: Vec<ScrapeTarget>,
    /// How to email the on-call engineer; `None`: no email.
    pub mail: Option<MailSettings>,
    /// The trust gate (proposals, approvals, shadow mode); `None`: no proposals accepted.
    pub gate: Option<GateSettings>,
    /// How fast each token other than the operator's may call the API.
    pub limits: Limits,
}

/// Per-token request rates (`[daemon.limits]`): the agent's and each approver's token has a
/// bucket for reads and one for writes, so no token can keep guardian busy. The operator's
/// token is not limited: it carries deploy notifications and pushed observations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Reads (every `GET`) a token may make per second, on average ...
    pub reads_per_sec: u32,
    /// ... and at once after a quiet spell.
    pub reads_burst: u32,
    /// Writes (proposals, decisions, link uses) a token may make per minute, on average ...
    pub writes_per_min: u32,
    /// ... and at once.
    pub writes_burst: u32,
    /// Bytes of proposals (each stored with its whole patch, denied ones too) a token may send
    /// per hour: what bounds the disk an agent can fill within its write rate.
    pub proposal_bytes_per_hour: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            reads_per_sec: 10,
            reads_burst: 30,
            writes_per_min: 12,
            writes_burst: 10,
            proposal_bytes_per_hour: 8 << 20,
        }
    }
}

/// The trust gate: where the sandbox policy is, who may approve, and what runs in shadow mode.
#[derive(Clone, Debug, PartialEq)]
pub struct GateSettings {
    /// The sandbox policy, a file the agent cannot write; read at start and on SIGHUP.
    pub policy_file: PathBuf,
    /// The agent's token: it may propose and read, nothing else.
    pub agent_token_file: Option<PathBuf>,
    /// People who may approve or reject proposals, by name, each with their own token.
    pub approvers: Vec<(String, PathBuf)>,
    /// Decide and record everything, deploy and revert nothing.
    pub shadow: bool,
    /// Shadow mode for these patterns only (when `shadow` is off).
    pub shadow_patterns: Vec<String>,
    /// How long an approval link in an email stays valid.
    pub approval_link_secs: u32,
    /// Where approval links point (the API as the approver's browser reaches it), if links are
    /// to be sent at all.
    pub approval_base_url: Option<String>,
    /// Stricter tolerances for AI changes than `[detector]` gives everyone, if set.
    pub ai_error_tolerance: Option<f64>,
    pub ai_latency_tolerance: Option<f64>,
    /// The error rate the service's SLO allows (e.g. 0.001 for 99.9%): how much of the error
    /// budget is left goes into the risk score. `None`: the budget is unknown.
    pub slo_error_rate: Option<f64>,
}

impl GateSettings {
    /// Whether a proposal or change of this pattern is only decided and recorded.
    pub fn is_shadow(&self, pattern: Option<&str>) -> bool {
        self.shadow || pattern.is_some_and(|p| self.shadow_patterns.iter().any(|s| s == p))
    }
}

/// How guardian emails the on-call engineer.
#[derive(Clone, Debug, PartialEq)]
pub struct MailSettings {
    /// The sender address, e.g. `guardian@example.com` or `Guardian <guardian@example.com>`.
    pub from: String,
    /// The recipients, at least one.
    pub to: Vec<String>,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub security: MailSecurity,
    /// Log in to the server; the password is read from a file when the mailer is built.
    pub auth: Option<MailAuth>,
    /// Healthy changes are not mailed one by one (they go into a digest).
    pub digest_healthy: bool,
}

/// How the connection to the SMTP server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailSecurity {
    /// Plain connection upgraded with STARTTLS; the upgrade is required.
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No encryption: only to a server on this machine.
    None,
}

impl MailSecurity {
    pub fn as_str(self) -> &'static str {
        match self {
            MailSecurity::StartTls => "starttls",
            MailSecurity::Tls => "tls",
            MailSecurity::None => "none",
        }
    }
}

impl fmt::Display for MailSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SMTP login. The password stays in its file (readable by guardian only), never in the
/// configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct MailAuth {
    pub username: String,
    pub password_file: PathBuf,
}

/// One Prometheus endpoint guardian scrapes, and which series count as what.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrapeTarget {
    pub name: String,
    pub spec: crate::scrape::ScrapeSpec,
    pub interval_secs: u32,
}

/// Reads `name{label=pattern,...}`: a series name and label patterns, where `.` in a pattern
/// matches any one character (`code=5..`) and anything else matches itself.
fn selector(key: &'static str, text: &str) -> Result<crate::scrape::Matcher, ConfigError> {
    use crate::scrape::{LabelMatch, Matcher};
    let bad = |why: &str| {
        ConfigError::invalid(
            "daemon.scrapes",
            key,
            format!("{why} in {text:?}: write name{{label=pattern,...}}, e.g. http_requests_total{{code=5..}}"),
        )
    };
    let text = text.trim();
    let (name, labels) = match text.split_once('{') {
        None => (text, ""),
        Some((n, rest)) => (n, rest.strip_suffix('}').ok_or_else(|| bad("a missing }"))?),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    if !valid(name) {
        return Err(bad("a bad series name"));
    }
    let mut m = Matcher::new(name);
    for pair in labels.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (label, value) = pair
            .split_once('=')
            .ok_or_else(|| bad("a label without ="))?;
        let value = value.trim().trim_matches('"');
        if !valid(label.trim()) {
            return Err(bad("a bad label name"));
        }
        m = m.with(label.trim(), LabelMatch::pattern(value));
    }
    Ok(m)
}

/// What an `inconclusive` verdict leads to. It is never treated as healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InconclusivePolicy {
    /// Record it; nothing else.
    Record,
    /// Watch one more window against the same baseline, then apply `Escalate`.
    Extend,
    /// Email the on-call engineer (with `[daemon.mail]`).
    Escalate,
}

/// The policy per change kind: AI changes default to `escalate`, human ones to `record`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnInconclusive {
    pub ai: InconclusivePolicy,
    pub human: InconclusivePolicy,
}

impl Default for OnInconclusive {
    fn default() -> Self {
        OnInconclusive {
            ai: InconclusivePolicy::Escalate,
            human: InconclusivePolicy::Record,
        }
    }
}

/// How guardian undoes a regressed change.
#[derive(Clone, Debug, PartialEq)]
pub struct RollbackSettings {
    /// The git work tree the deploys come from; reverts are committed there.
    pub repo: PathBuf,
    /// Push the revert here (remote, branch) before redeploying, if set.
    pub push: Option<(String, String)>,
    /// The redeploy command, program first; run without a shell unless it is one.
    pub hook: Vec<String>,
    pub hook_timeout_secs: u32,
    /// How long to watch after the redeploy to confirm the service recovered.
    pub verify_secs: u32,
}

/// One access log the daemon follows.
#[derive(Clone, Debug, PartialEq)]
pub struct LogSource {
    /// Stable name under which the reading position is saved.
    pub name: String,
    pub path: PathBuf,
    pub format: crate::input::Format,
}

/// How log lines are read.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSettings {
    /// An HTTP status at or above this counts as an error (when the line has no explicit
    /// `error` flag).
    pub error_status_min: u16,
}

impl Default for InputSettings {
    fn default() -> Self {
        InputSettings {
            error_status_min: 500,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The causes are part of the message and deliberately not `#[source]`: error reporters
    // print the chain of sources, and the user would read each cause twice.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The text is not TOML, or a value has the wrong type, or a key is unknown. The message is
    /// toml's, with its line and column.
    #[error("{0}")]
    Syntax(String),
    /// A value of the right type but outside what it may be.
    #[error("[{section}] {key} {problem}")]
    Invalid {
        section: &'static str,
        /// The key as written in the file, e.g. `alpha_split.errors`.
        key: &'static str,
        problem: String,
    },
    /// Any of the above, in a named file.
    #[error("{}: {error}", path.display())]
    InFile {
        path: PathBuf,
        error: Box<ConfigError>,
    },
}

impl ConfigError {
    fn invalid(section: &'static str, key: &'static str, problem: impl fmt::Display) -> Self {
        ConfigError::Invalid {
            section,
            key,
            problem: problem.to_string(),
        }
    }
}

impl Config {
    /// Parses and validates the text of a configuration file.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string().trim().into()))?;
        raw.validate()
    }

    /// Reads, parses and validates a configuration file. Errors name the file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            path: path.to_owned(),
            error,
        })?;
        Config::parse(&text).map_err(|e| ConfigError::InFile {
            path: path.to_owned(),
            error: Box::new(e),
        })
    }
}

impl FromStr for Config {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text)
    }
}

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
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub logs: Vec<RawLog>,
    pub rollback: Option<RawRollback>,
    pub mail: Option<RawMail>,
    pub on_inconclusive: Option<RawOnInconclusive>,
    #[serde(default)]
    pub scrapes: Vec<RawScrape>,
    pub gate: Option<RawGate>,
    pub limits: Option<RawLimits>,
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

impl RawLimits {
    pub fn validate(self) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let rate = |key: &'static str, v: Option<i64>, default: u32, max: i64| match v {
            None => Ok(default),
            Some(n) if (1..=max).contains(&n) => Ok(n as u32),
            Some(n) => Err(ConfigError::invalid(
                "daemon.limits",
                key,
                format!("must be a whole number from 1 to {max}, got {n}"),
            )),
        };
        Ok(Limits {
            reads_per_sec: rate("reads_per_sec", self.reads_per_sec, d.reads_per_sec, 10_000)?,
            reads_burst: rate("reads_burst", self.reads_burst, d.reads_burst, 100_000)?,
            writes_per_min: rate(
                "writes_per_min",
                self.writes_per_min,
                d.writes_per_min,
                60_000,
            )?,
            writes_burst: rate("writes_burst", self.writes_burst, d.writes_burst, 100_000)?,
            proposal_bytes_per_hour: rate(
                "proposal_bytes_per_hour",
                self.proposal_bytes_per_hour,
                d.proposal_bytes_per_hour,
                i64::from(u32::MAX),
            )?,
        })
    }
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

impl RawGate {
    pub fn validate(self) -> Result<GateSettings, ConfigError> {
        const SECTION: &str = "daemon.gate";
        let policy_file = self.policy_file.ok_or_else(|| {
            ConfigError::invalid(
                SECTION,
                "policy_file",
                "is missing: the sandbox policy (see config/policy.toml)",
            )
        })?;
        for name in self.approvers.keys() {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
            if !ok {
                return Err(ConfigError::invalid(
                    SECTION,
                    "approvers",
                    format!(
                        "{name:?} is not a usable approver name: letters, digits, - _ . @, \
                         at most 64"
                    ),
                ));
            }
        }
        let approval_link_secs = match self.approval_link_secs {
            None => 86_400,
            Some(n) if (60..=7 * 86_400).contains(&n) => n as u32,
            Some(n) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "approval_link_secs",
                    format!("must be from 60 seconds to 7 days (604800), got {n}"),
                ))
            }
        };
        if let Some(url) = &self.approval_base_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError::invalid(
                    SECTION,
                    "approval_base_url",
                    format!("must be an http(s) URL, got {url:?}"),
                ));
            }
        }
        for (key, v) in [
            ("ai_error_tolerance", self.ai_error_tolerance),
            ("ai_latency_tolerance", self.ai_latency_tolerance),
        ] {
            if v.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
                return Err(ConfigError::invalid(
                    SECTION,
                    key,
                    format!(
                        "must be a fraction from 0 to 1 (0.05 tolerates 5% worse), got {}",
                        v.unwrap_or_default()
                    ),
                ));
            }
        }
        if let Some(v) = self.slo_error_rate {
            if !(v > 0.0 && v < 1.0) {
                return Err(ConfigError::invalid(
                    SECTION,
                    "slo_error_rate",
                    format!("must be a fraction between 0 and 1 (0.001 for 99.9%), got {v}"),
                ));
            }
        }
        Ok(GateSettings {
            slo_error_rate: self.slo_error_rate,
            ai_error_tolerance: self.ai_error_tolerance,
            ai_latency_tolerance: self.ai_latency_tolerance,
            policy_file,
            agent_token_file: self.agent_token_file,
            approvers: self.approvers.into_iter().collect(),
            shadow: self.shadow.unwrap_or(false),
            shadow_patterns: self.shadow_patterns,
            approval_link_secs,
            approval_base_url: self
                .approval_base_url
                .map(|u| u.trim_end_matches('/').to_owned()),
        })
    }
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

const DETECTOR: &str = "detector";
const INPUT: &str = "input";
const DAEMON: &str = "daemon";

impl RawConfig {
    pub fn validate(self) -> Result<Config, ConfigError> {
        let config = Config {
            detector: self.detector.validate()?,
            input: self.input.validate()?,
            daemon: self.daemon.map(RawDaemon::validate).transpose()?,
        };
        if let Some(gate) = config.daemon.as_ref().and_then(|d| d.gate.as_ref()) {
            check_gate_against_detector(gate, &config.detector)?;
        }
        Ok(config)
    }
}

/// What `[daemon.gate]` says that only makes sense next to `[detector]` and the patterns: a
/// misspelled shadow pattern would leave the real one deploying for real, and an "AI
/// tolerance" looser than everyone's would make AI changes the less watched ones.
fn check_gate_against_detector(
    gate: &GateSettings,
    detector: &DetectorSettings,
) -> Result<(), ConfigError> {
    const SECTION: &str = "daemon.gate";
    let known = crate::gate::ledger::PATTERNS;
    if let Some(bad) = gate
        .shadow_patterns
        .iter()
        .find(|p| !known.contains(&p.as_str()))
    {
        return Err(ConfigError::invalid(
            SECTION,
            "shadow_patterns",
            format!(
                "{bad:?} is not a fix pattern; they are {}",
                known.join(", ")
            ),
        ));
    }
    for (key, ai, everyone) in [
        (
            "ai_error_tolerance",
            gate.ai_error_tolerance,
            detector.error_tolerance,
        ),
        (
            "ai_latency_tolerance",
            gate.ai_latency_tolerance,
            detector.latency_tolerance,
        ),
    ] {
        if ai.is_some_and(|t| t > everyone) {
            return Err(ConfigError::invalid(
                SECTION,
                key,
                format!(
                    "is {}, looser than the {everyone} [detector] gives every change: AI changes \
                     may be watched more strictly, not less",
                    ai.unwrap_or_default()
                ),
            ));
        }
    }
    Ok(())
}

impl RawDaemon {
    pub fn validate(self) -> Result<DaemonSettings, ConfigError> {
        let service = self.service.unwrap_or_else(|| "app".to_owned());
        if service.trim().is_empty() {
            return Err(ConfigError::invalid(DAEMON, "service", "must not be empty"));
        }
        let listen_text = self.listen.unwrap_or_else(|| "127.0.0.1:8707".to_owned());
        let listen: std::net::SocketAddr = listen_text.parse().map_err(|e| {
            ConfigError::invalid(
                DAEMON,
                "listen",
                format!(
                    "must be an address and port such as 127.0.0.1:8707, got {listen_text:?} ({e})"
                ),
            )
        })?;
        let mut logs = Vec::new();
        for (i, log) in self.logs.into_iter().enumerate() {
            let path = log.path.ok_or_else(|| {
                ConfigError::invalid(DAEMON, "logs.path", format!("is missing in log {}", i + 1))
            })?;
            let format = match log.format.as_deref() {
                None => crate::input::Format::JsonLines,
                Some(f) => f.parse().map_err(|e| {
                    ConfigError::invalid(DAEMON, "logs.format", format!("in log {}: {e}", i + 1))
                })?,
            };
            let name = log.name.unwrap_or_else(|| path.display().to_string());
            if logs.iter().any(|l: &LogSource| l.name == name) {
                return Err(ConfigError::invalid(
                    DAEMON,
                    "logs.name",
                    format!("{name:?} is used twice; each log needs its own name"),
                ));
            }
            logs.push(LogSource { name, path, format });
        }
        let rollback = self.rollback.map(RawRollback::validate).transpose()?;
        let mail = self.mail.map(RawMail::validate).transpose()?;
        let gate = self.gate.map(RawGate::validate).transpose()?;
        let limits = self.limits.unwrap_or_default().validate()?;
        let defaults = OnInconclusive::default();
        let policy =
            |key: &'static str, v: Option<String>, d: InconclusivePolicy| match v.as_deref() {
                None => Ok(d),
                Some("record") => Ok(InconclusivePolicy::Record),
                Some("extend") => Ok(InconclusivePolicy::Extend),
                Some("escalate") => Ok(InconclusivePolicy::Escalate),
                Some(other) => Err(ConfigError::invalid(
                    "daemon.on_inconclusive",
                    key,
                    format!("must be \"record\", \"extend\" or \"escalate\", got {other:?}"),
                )),
            };
        let raw = self.on_inconclusive.unwrap_or_default();
        let on_inconclusive = OnInconclusive {
            ai: policy("ai", raw.ai, defaults.ai)?,
            human: policy("human", raw.human, defaults.human)?,
        };
        let mut scrapes = Vec::new();
        for (i, raw) in self.scrapes.into_iter().enumerate() {
            let url = raw.url.ok_or_else(|| {
                ConfigError::invalid(
                    "daemon.scrapes",
                    "url",
                    format!("is missing in scrape {}", i + 1),
                )
            })?;
            if !url.starts_with("http://") {
                return Err(ConfigError::invalid(
                    "daemon.scrapes",
                    "url",
                    format!("must be a plain http:// URL (the app's /metrics on this host), got {url:?}"),
                ));
            }
            let requests = selector(
                "requests",
                raw.requests.as_deref().unwrap_or("http_requests_total"),
            )?;
            let errors = selector(
                "errors",
                raw.errors
                    .as_deref()
                    .unwrap_or("http_requests_total{code=5..}"),
            )?;
            let latency = raw
                .latency
                .as_deref()
                .map(|l| selector("latency", l))
                .transpose()?;
            let interval_secs = match raw.interval_secs {
                None => 10,
                Some(n) if (1..=3600).contains(&n) => n as u32,
                Some(n) => {
                    return Err(ConfigError::invalid(
                        "daemon.scrapes",
                        "interval_secs",
                        format!("must be whole seconds from 1 to 3600, got {n}"),
                    ))
                }
            };
            scrapes.push(ScrapeTarget {
                name: raw.name.unwrap_or_else(|| url.clone()),
                spec: crate::scrape::ScrapeSpec {
                    url,
                    requests,
                    errors,
                    latency,
                    route_label: raw.route_label,
                    latency_unit_ms: raw.latency_unit_ms.unwrap_or(1000.0),
                    timeout: std::time::Duration::from_secs(u64::from(interval_secs.min(10))),
                },
                interval_secs,
            });
        }
        Ok(DaemonSettings {
            gate,
            limits,
            scrapes,
            on_inconclusive,
            rollback,
            mail,
            service,
            state_dir: self
                .state_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/guardian")),
            listen,
            token_file: self
                .token_file
                .unwrap_or_else(|| PathBuf::from("/etc/guardian/token")),
            logs,
        })
    }
}

impl RawDetector {
    pub fn validate(self) -> Result<DetectorSettings, ConfigError> {
        let d = DetectorSettings::default();
        let s = DetectorSettings {
            alpha: open_interval("alpha", self.alpha, d.alpha, 0.0, 0.5)?,
            alpha_split: validate_split(self.alpha_split, d.alpha_split)?,
            baseline_secs: seconds("baseline_secs", self.baseline_secs, d.baseline_secs)?,
            watch_secs: seconds("watch_secs", self.watch_secs, d.watch_secs)?,
            deploy_guard_secs: match self.deploy_guard_secs {
                None => d.deploy_guard_secs,
                Some(n) if (0..=3600).contains(&n) => n as u32,
                Some(n) => {
                    return Err(ConfigError::invalid(
                        DETECTOR,
                        "deploy_guard_secs",
                        format!("must be whole seconds from 0 to 3600, got {n}"),
                    ))
                }
            },
            error_tolerance: non_negative(
                "error_tolerance",
                self.error_tolerance,
                d.error_tolerance,
            )?,
            latency_tolerance: non_negative(
                "latency_tolerance",
                self.latency_tolerance,
                d.latency_tolerance,
            )?,
            slow_quantile: open_interval(
                "slow_quantile",
                self.slow_quantile,
                d.slow_quantile,
                0.0,
                1.0,
            )?,
            slow_threshold_ms: match self.slow_threshold_ms {
                None => d.slow_threshold_ms,
                Some(ms) => Some(positive("slow_threshold_ms", Some(ms), 0.0)?),
            },
            latency_quantiles: quantiles(self.latency_quantiles, d.latency_quantiles)?,
            max_evidence_per_second: positive(
                "max_evidence_per_second",
                self.max_evidence_per_second,
                d.max_evidence_per_second,
            )?,
            max_routes: match self.max_routes {
                None => d.max_routes,
                Some(n) if n >= 1 => usize::try_from(n).map_err(|_| {
                    ConfigError::invalid(DETECTOR, "max_routes", format!("is too large, got {n}"))
                })?,
                Some(n) => {
                    return Err(ConfigError::invalid(
                        DETECTOR,
                        "max_routes",
                        format!("must be at least 1, got {n}"),
                    ))
                }
            },
            min_baseline_requests: count(
                "min_baseline_requests",
                self.min_baseline_requests,
                d.min_baseline_requests,
            )?,
            min_baseline_tail: count(
                "min_baseline_tail",
                self.min_baseline_tail,
                d.min_baseline_tail,
            )?,
            min_requests_after: count(
                "min_requests_after",
                self.min_requests_after,
                d.min_requests_after,
            )?,
            healthy_confidence: open_interval(
                "healthy_confidence",
                self.healthy_confidence,
                d.healthy_confidence,
                0.0,
                1.0,
            )?,
            healthy_max_ratio: match self.healthy_max_ratio {
                None => d.healthy_max_ratio,
                Some(r) if r.is_finite() && r >= 1.0 => r,
                Some(r) => {
                    return Err(ConfigError::invalid(
                        DETECTOR,
                        "healthy_max_ratio",
                        format!(
                            "must be a finite number of at least 1 (a change need not improve \
                             things to be healthy), got {r}"
                        ),
                    ))
                }
            },
            healthy_error_floor: match self.healthy_error_floor {
                None => d.healthy_error_floor,
                Some(f) if (0.0..1.0).contains(&f) => f,
                Some(f) => {
                    return Err(ConfigError::invalid(
                        DETECTOR,
                        "healthy_error_floor",
                        format!("must be in [0, 1) (a share of requests), got {f}"),
                    ))
                }
            },
        };
        Ok(s)
    }
}

impl RawInput {
    pub fn validate(self) -> Result<InputSettings, ConfigError> {
        let d = InputSettings::default();
        let error_status_min = match self.error_status_min {
            None => d.error_status_min,
            Some(n) if (100..=599).contains(&n) => n as u16,
            Some(n) => {
                return Err(ConfigError::invalid(
                    INPUT,
                    "error_status_min",
                    format!("must be an HTTP status from 100 to 599, got {n}"),
                ))
            }
        };
        Ok(InputSettings { error_status_min })
    }
}

impl RawRollback {
    pub fn validate(self) -> Result<RollbackSettings, ConfigError> {
        const SECTION: &str = "daemon.rollback";
        let repo = self.repo.ok_or_else(|| {
            ConfigError::invalid(
                SECTION,
                "repo",
                "is missing: the git work tree to revert in",
            )
        })?;
        let hook = self.hook.unwrap_or_default();
        if hook.first().map_or(true, |p| p.trim().is_empty()) {
            return Err(ConfigError::invalid(
                SECTION,
                "hook",
                "must name the redeploy command, program first, e.g. [\"/usr/local/bin/redeploy\", \"--fast\"]",
            ));
        }
        let push = match (self.push_remote, self.push_branch) {
            (None, None) => None,
            (Some(r), Some(b)) if !r.is_empty() && !b.is_empty() => Some((r, b)),
            _ => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "push_remote",
                    "and push_branch go together: set both to push the revert, or neither",
                ))
            }
        };
        let secs = |key: &'static str, v: Option<i64>, default: u32| match v {
            None => Ok(default),
            Some(n) if (1..=86_400).contains(&n) => Ok(n as u32),
            Some(n) => Err(ConfigError::invalid(
                SECTION,
                key,
                format!("must be whole seconds from 1 to 86400, got {n}"),
            )),
        };
        Ok(RollbackSettings {
            repo,
            push,
            hook,
            hook_timeout_secs: secs("hook_timeout_secs", self.hook_timeout_secs, 300)?,
            verify_secs: secs("verify_secs", self.verify_secs, 120)?,
        })
    }
}

impl RawMail {
    pub fn validate(self) -> Result<MailSettings, ConfigError> {
        const SECTION: &str = "daemon.mail";
        if self.password.is_some() {
            return Err(ConfigError::invalid(
                SECTION,
                "password",
                "must not be written in the configuration: put it in a file only guardian can \
                 read and set password_file to that file's path",
            ));
        }
        let address = |key: &'static str, value: String| {
            let trimmed = value.trim().to_owned();
            match trimmed.parse::<lettre::message::Mailbox>() {
                Ok(_) => Ok(trimmed),
                Err(e) => Err(ConfigError::invalid(
                    SECTION,
                    key,
                    format!(
                        "must be an email address such as \"guardian@example.com\" or \
                         \"Guardian <guardian@example.com>\", got {value:?} ({e})"
                    ),
                )),
            }
        };
        let from = address(
            "from",
            self.from.ok_or_else(|| {
                ConfigError::invalid(SECTION, "from", "is missing: the sender address")
            })?,
        )?;
        let to = self.to.unwrap_or_default();
        if to.is_empty() {
            return Err(ConfigError::invalid(
                SECTION,
                "to",
                "must list at least one recipient, e.g. [\"oncall@example.com\"]",
            ));
        }
        let to = to
            .into_iter()
            .map(|a| address("to", a))
            .collect::<Result<Vec<_>, _>>()?;
        let smtp_host = self
            .smtp_host
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        if smtp_host.is_empty() {
            return Err(ConfigError::invalid(
                SECTION,
                "smtp_host",
                "is missing: the SMTP server to send through, e.g. \"smtp.example.com\"",
            ));
        }
        if smtp_host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(ConfigError::invalid(
                SECTION,
                "smtp_host",
                format!(
                    "must be a host name or IP address (no scheme, no port), got {smtp_host:?}"
                ),
            ));
        }
        let security = match self.security.as_deref().map(str::trim) {
            None | Some("starttls") => MailSecurity::StartTls,
            Some("tls") => MailSecurity::Tls,
            Some("none") => MailSecurity::None,
            Some(other) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "security",
                    format!("must be \"starttls\", \"tls\" or \"none\", got {other:?}"),
                ))
            }
        };
        if security == MailSecurity::None && !is_loopback_host(&smtp_host) {
            return Err(ConfigError::invalid(
                SECTION,
                "security",
                format!(
                    "= \"none\" sends the alert (and any password) unencrypted, so it is only \
                     allowed for a server on this machine (localhost, 127.0.0.1, ::1); \
                     smtp_host is {smtp_host:?}: use \"starttls\" or \"tls\""
                ),
            ));
        }
        let default_port = match security {
            MailSecurity::Tls => 465,
            MailSecurity::StartTls | MailSecurity::None => 587,
        };
        let smtp_port = match self.smtp_port {
            None => default_port,
            Some(n) if (1..=65_535).contains(&n) => n as u16,
            Some(n) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "smtp_port",
                    format!("must be a TCP port from 1 to 65535, got {n}"),
                ))
            }
        };
        let auth = match (self.username, self.password_file) {
            (None, None) => None,
            (Some(username), Some(password_file)) => {
                if username.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        SECTION,
                        "username",
                        "must not be empty",
                    ));
                }
                if password_file.as_os_str().is_empty() {
                    return Err(ConfigError::invalid(
                        SECTION,
                        "password_file",
                        "must not be empty",
                    ));
                }
                Some(MailAuth {
                    username,
                    password_file,
                })
            }
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "password_file",
                    "is missing: username and password_file go together (the password is read \
                     from that file, never written in the configuration); set both, or neither",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "username",
                    "is missing: username and password_file go together; set both, or neither",
                ))
            }
        };
        Ok(MailSettings {
            from,
            to,
            smtp_host,
            smtp_port,
            security,
            auth,
            digest_healthy: self.digest_healthy.unwrap_or(true),
        })
    }
}

/// Whether `host` names this machine: `localhost` (or a name under it), or a loopback address.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(&host);
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// A value strictly between `lo` and `hi`. NaN fails every comparison, so it is refused too.
fn open_interval(
    key: &'static str,
    v: Option<f64>,
    default: f64,
    lo: f64,
    hi: f64,
) -> Result<f64, ConfigError> {
    match v {
        None => Ok(default),
        Some(x) if x > lo && x < hi => Ok(x),
        Some(x) => Err(ConfigError::invalid(
            DETECTOR,
            key,
            format!("must be in ({lo}, {hi}), got {x}"),
        )),
    }
}

fn positive(key: &'static str, v: Option<f64>, default: f64) -> Result<f64, ConfigError> {
    match v {
        None => Ok(default),
        Some(x) if x > 0.0 && x.is_finite() => Ok(x),
        Some(x) => Err(ConfigError::invalid(
            DETECTOR,
            key,
            format!("must be a positive number, got {x}"),
        )),
    }
}

fn non_negative(key: &'static str, v: Option<f64>, default: f64) -> Result<f64, ConfigError> {
    match v {
        None => Ok(default),
        Some(x) if x >= 0.0 && x.is_finite() => Ok(x),
        Some(x) => Err(ConfigError::invalid(
            DETECTOR,
            key,
            format!("must be a finite number >= 0 (a relative tolerance: 0.1 is 10%), got {x}"),
        )),
    }
}

fn seconds(key: &'static str, v: Option<i64>, default: u32) -> Result<u32, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) if n > 0 => u32::try_from(n).map_err(|_| {
            ConfigError::invalid(DETECTOR, key, format!("is too long, got {n} seconds"))
        }),
        Some(n) => Err(ConfigError::invalid(
            DETECTOR,
            key,
            format!("must be a positive number of seconds, got {n}"),
        )),
    }
}

fn count(key: &'static str, v: Option<i64>, default: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) => u64::try_from(n).map_err(|_| {
            ConfigError::invalid(DETECTOR, key, format!("must be a count >= 0, got {n}"))
        }),
    }
}

fn validate_split(raw: Option<RawAlphaSplit>, d: AlphaSplit) -> Result<AlphaSplit, ConfigError> {
    let Some(raw) = raw else { return Ok(d) };
    let split = AlphaSplit {
        errors: raw.errors.unwrap_or(d.errors),
        slow: raw.slow.unwrap_or(d.slow),
        latency: raw.latency.unwrap_or(d.latency),
    };
    for (key, share) in [
        ("alpha_split.errors", split.errors),
        ("alpha_split.slow", split.slow),
        ("alpha_split.latency", split.latency),
    ] {
        if !(share > 0.0 && share <= 1.0) {
            return Err(ConfigError::invalid(
                DETECTOR,
                key,
                format!("must be a positive share of alpha, at most 1, got {share}"),
            ));
        }
    }
    let sum = split.errors + split.slow + split.latency;
    if (sum - 1.0).abs() > 1e-9 {
        let unset = [raw.errors, raw.slow, raw.latency]
            .iter()
            .any(Option::is_none);
        return Err(ConfigError::invalid(
            DETECTOR,
            "alpha_split",
            format!(
                "shares must sum to 1, got errors {} + slow {} + latency {} = {}{}",
                split.errors,
                split.slow,
                split.latency,
                // Rounded: 0.6 + 0.2 + 0.3 is 1.1 to a person, not 1.0999999999999999.
                (sum * 1e9).round() / 1e9,
                if unset {
                    " (shares not set take their defaults)"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(split)
}

fn quantiles(v: Option<Vec<f64>>, default: Vec<f64>) -> Result<Vec<f64>, ConfigError> {
    let Some(qs) = v else { return Ok(default) };
    let key = "latency_quantiles";
    if qs.is_empty() {
        return Err(ConfigError::invalid(
            DETECTOR,
            key,
            "must list at least one quantile",
        ));
    }
    for &q in &qs {
        if !(q > 0.0 && q < 1.0) {
            return Err(ConfigError::invalid(
                DETECTOR,
                key,
                format!("must each be in (0, 1), got {q}"),
            ));
        }
    }
    if let Some(w) = qs.windows(2).find(|w| w[0] >= w[1]) {
        return Err(ConfigError::invalid(
            DETECTOR,
            key,
            format!("must be strictly increasing, got {} then {}", w[0], w[1]),
        ));
    }
    Ok(qs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    fn detector(body: &str) -> String {
        err(&format!("[detector]\n{body}\n"))
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(
            Config::parse("[detector]\n[input]\n").unwrap(),
            Config::default()
        );
        assert_eq!(Config::default().input.error_status_min, 500);
    }

    #[test]
    fn the_gate_refuses_an_unknown_shadow_pattern_and_a_looser_ai_tolerance() {
        let gate = |body: &str| {
            err(&format!(
                "[daemon]\nstate_dir = \"/tmp\"\n[daemon.gate]\npolicy_file = \"/p\"\n{body}"
            ))
        };
        let e = gate("shadow_patterns = [\"nil-chek\"]");
        assert!(
            e.contains("shadow_patterns") && e.contains("nil-chek"),
            "{e}"
        );
        let e = gate("ai_error_tolerance = 0.5");
        assert!(
            e.contains("ai_error_tolerance") && e.contains("looser"),
            "{e}"
        );
        let ok = Config::parse(
            "[daemon]\n[daemon.gate]\npolicy_file = \"/p\"\nai_error_tolerance = 0.05\n\
             shadow_patterns = [\"nil-check\"]\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn the_example_daemon_section_is_valid_once_uncommented() {
        let example = include_str!("../config/guardian.toml");
        let (replay, daemon) = example
            .split_once("# [daemon]")
            .expect("the example has a commented [daemon] section");
        let uncommented: String = std::iter::once("[daemon]")
            .chain(daemon.lines().skip(1).map(|l| {
                l.strip_prefix("# ")
                    .unwrap_or(l.strip_prefix('#').unwrap_or(l))
            }))
            .collect::<Vec<_>>()
            .join("\n");
        let config = Config::parse(&format!("{replay}\n{uncommented}")).unwrap();
        let daemon = config.daemon.expect("a [daemon] section");
        assert!(daemon.rollback.is_some() && daemon.mail.is_some());
        let gate = daemon.gate.expect("a [daemon.gate] section");
        assert_eq!(gate.approvers.len(), 1);
        assert!(!gate.shadow);
    }

    #[test]
    fn the_example_config_spells_out_the_defaults() {
        let example = include_str!("../config/guardian.toml");
        let parsed = Config::parse(example).unwrap();
        assert_eq!(parsed, Config::default());
        // And it spells them out rather than leaning on them: every key but the optional SLO
        // threshold is set in the file.
        let raw: RawConfig = toml::from_str(example).unwrap();
        let d = raw.detector;
        assert!(d.alpha.is_some() && d.baseline_secs.is_some() && d.watch_secs.is_some());
        let split = d.alpha_split.unwrap();
        assert!(split.errors.is_some() && split.slow.is_some() && split.latency.is_some());
        assert!(d.error_tolerance.is_some() && d.latency_tolerance.is_some());
        assert!(d.slow_quantile.is_some() && d.latency_quantiles.is_some());
        assert!(d.max_evidence_per_second.is_some() && d.max_routes.is_some());
        assert!(d.min_baseline_requests.is_some() && d.min_baseline_tail.is_some());
        assert!(d.min_requests_after.is_some() && d.healthy_confidence.is_some());
        assert!(d.healthy_max_ratio.is_some() && d.healthy_error_floor.is_some());
        assert!(raw.input.error_status_min.is_some());
    }

    #[test]
    fn values_are_read() {
        let c = Config::parse(
            "[detector]\nalpha = 0.05\nbaseline_secs = 600\nwatch_secs = 900\n\
             alpha_split = { errors = 0.5, slow = 0.3, latency = 0.2 }\n\
             slow_threshold_ms = 250\nlatency_quantiles = [0.5, 0.99]\nhealthy_max_ratio = 3\n\
             [input]\nerror_status_min = 400\n",
        )
        .unwrap();
        assert_eq!(c.detector.alpha, 0.05);
        assert_eq!(c.detector.baseline_secs, 600);
        assert_eq!(c.detector.watch_secs, 900);
        assert_eq!(c.detector.alpha_split.slow, 0.3);
        assert_eq!(c.detector.slow_threshold_ms, Some(250.0));
        assert_eq!(c.detector.latency_quantiles, [0.5, 0.99]);
        assert_eq!(c.detector.healthy_max_ratio, 3.0);
        assert_eq!(c.input.error_status_min, 400);
        // Keys not given keep their defaults.
        assert_eq!(
            c.detector.min_requests_after,
            DetectorSettings::default().min_requests_after
        );
    }

    #[test]
    fn alpha_split_as_a_table_of_its_own() {
        let c = Config::parse("[detector.alpha_split]\nerrors = 0.4\nslow = 0.3\nlatency = 0.3\n")
            .unwrap();
        assert_eq!(
            c.detector.alpha_split,
            AlphaSplit {
                errors: 0.4,
                slow: 0.3,
                latency: 0.3
            }
        );
    }

    #[test]
    fn alpha_must_be_below_one_half() {
        assert_eq!(
            detector("alpha = 1.5"),
            "[detector] alpha must be in (0, 0.5), got 1.5"
        );
        assert!(detector("alpha = 0").contains("got 0"));
        assert!(detector("alpha = 0.5").contains("alpha must be in (0, 0.5)"));
        assert!(detector("alpha = nan").contains("got NaN"));
    }

    #[test]
    fn alpha_split_shares_are_positive_and_sum_to_one() {
        let e = detector("alpha_split = { errors = 0.6, slow = 0.2, latency = 0.3 }");
        assert!(
            e.starts_with("[detector] alpha_split shares must sum to 1"),
            "{e}"
        );
        assert!(e.contains("= 1.1"), "{e}");
        let e = detector("alpha_split = { errors = 1.0, slow = 0.0, latency = 0.0 }");
        assert!(
            e.starts_with("[detector] alpha_split.slow must be a positive share"),
            "{e}"
        );
        let e = detector("alpha_split = { errors = -0.5, slow = 1.0, latency = 0.5 }");
        assert!(e.contains("alpha_split.errors"), "{e}");
        let e = detector("alpha_split = { errors = 0.9 }");
        assert!(e.contains("take their defaults"), "{e}");
    }

    #[test]
    fn durations_are_positive_whole_seconds() {
        assert_eq!(
            detector("baseline_secs = 0"),
            "[detector] baseline_secs must be a positive number of seconds, got 0"
        );
        assert!(detector("watch_secs = -60").contains("watch_secs must be a positive"));
        assert!(detector("watch_secs = 99999999999").contains("watch_secs is too long"));
        // A fraction of a second is a type error, reported by toml with its position.
        let e = detector("watch_secs = 1.5");
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("watch_secs"), "{e}");
    }

    #[test]
    fn tolerances_are_not_negative() {
        assert!(detector("error_tolerance = -0.1")
            .starts_with("[detector] error_tolerance must be a finite number >= 0"));
        assert!(detector("latency_tolerance = inf").contains("latency_tolerance"));
        assert_eq!(
            Config::parse("[detector]\nerror_tolerance = 0")
                .unwrap()
                .detector
                .error_tolerance,
            0.0
        );
    }

    #[test]
    fn quantiles_are_in_the_unit_interval_and_increasing() {
        assert_eq!(
            detector("latency_quantiles = [0.5, 0.9, 0.75]"),
            "[detector] latency_quantiles must be strictly increasing, got 0.9 then 0.75"
        );
        assert!(detector("latency_quantiles = [0.5, 0.5]").contains("strictly increasing"));
        assert!(
            detector("latency_quantiles = [0.5, 1.0]").contains("must each be in (0, 1), got 1")
        );
        assert!(detector("latency_quantiles = []").contains("at least one"));
        assert!(
            detector("slow_quantile = 1").starts_with("[detector] slow_quantile must be in (0, 1)")
        );
        assert!(detector("slow_quantile = 0").contains("slow_quantile"));
    }

    #[test]
    fn slow_threshold_and_evidence_cap_are_positive() {
        assert!(detector("slow_threshold_ms = 0")
            .starts_with("[detector] slow_threshold_ms must be a positive"));
        assert!(detector("max_evidence_per_second = -1").contains("max_evidence_per_second"));
    }

    #[test]
    fn counts_are_not_negative_and_routes_at_least_one() {
        assert_eq!(
            detector("min_baseline_requests = -1"),
            "[detector] min_baseline_requests must be a count >= 0, got -1"
        );
        assert!(detector("min_baseline_tail = -3").contains("min_baseline_tail"));
        assert!(detector("min_requests_after = -3").contains("min_requests_after"));
        assert_eq!(
            detector("max_routes = 0"),
            "[detector] max_routes must be at least 1, got 0"
        );
    }

    #[test]
    fn healthy_limits() {
        assert_eq!(
            detector("healthy_confidence = 1"),
            "[detector] healthy_confidence must be in (0, 1), got 1"
        );
        assert!(
            detector("healthy_max_ratio = 0.5").starts_with("[detector] healthy_max_ratio must be")
        );
        assert!(detector("healthy_error_floor = 1")
            .starts_with("[detector] healthy_error_floor must be in [0, 1)"));
    }

    #[test]
    fn error_status_is_an_http_status() {
        assert_eq!(
            err("[input]\nerror_status_min = 700"),
            "[input] error_status_min must be an HTTP status from 100 to 599, got 700"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = detector("alpah = 0.01");
        assert!(e.contains("unknown field `alpah`"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let e = err("[detector]\nalpha_split = { errors = 0.5, slow = 0.25, latncy = 0.25 }");
        assert!(e.contains("`latncy`"), "{e}");
        let e = err("[daemon]\nport = 1");
        assert!(e.contains("unknown field `port`"), "{e}");
        let e = err("[deamon]\nport = 1");
        assert!(e.contains("unknown field `deamon`"), "{e}");
        let e = err("[input]\nerror_status = 500");
        assert!(e.contains("`error_status`"), "{e}");
    }

    #[test]
    fn syntax_errors_keep_their_position() {
        let e = err("[detector]\nalpha = 0.01\nwatch_secs = \n");
        assert!(e.contains("line 3"), "{e}");
        let e = detector("alpha = \"0.01\"");
        assert!(e.contains("line 2") && e.contains("alpha"), "{e}");
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let e = Config::from_path(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read ") && e.contains("nope.toml"),
            "{e}"
        );
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[detector]\nalpha = 2\n").unwrap();
        let e = Config::from_path(&bad).unwrap_err().to_string();
        assert!(
            e.contains("bad.toml: [detector] alpha must be in (0, 0.5), got 2"),
            "{e}"
        );
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "").unwrap();
        assert_eq!(Config::from_path(&good).unwrap(), Config::default());
    }

    #[test]
    fn the_daemon_section_is_optional_and_validated() {
        assert_eq!(Config::parse("").unwrap().daemon, None);
        let c = Config::parse(
            "[daemon]\nservice = \"shop\"\nstate_dir = \"/tmp/g\"\n\
             [[daemon.logs]]\npath = \"/var/log/nginx/access.log\"\nformat = \"nginx\"\n",
        )
        .unwrap()
        .daemon
        .unwrap();
        assert_eq!(c.service, "shop");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8707");
        assert_eq!(c.logs[0].name, "/var/log/nginx/access.log");
        assert_eq!(c.logs[0].format, crate::input::Format::Nginx);
        let e = err("[daemon]\nlisten = \"localhost\"\n");
        assert!(
            e.contains("[daemon] listen must be an address and port"),
            "{e}"
        );
        let e = err("[daemon]\n[[daemon.logs]]\nformat = \"nginx\"\n");
        assert!(e.contains("logs.path is missing in log 1"), "{e}");
        let e = err("[daemon]\n[[daemon.logs]]\npath = \"a\"\nformat = \"csv\"\n");
        assert!(e.contains("logs.format") && e.contains("csv"), "{e}");
        let e = err("[daemon]\n[[daemon.logs]]\npath = \"a\"\n[[daemon.logs]]\npath = \"a\"\n");
        assert!(e.contains("used twice"), "{e}");
        let e = err("[daemon]\nlisten_on = \"x\"\n");
        assert!(e.contains("listen_on"), "{e}");
        let d = Config::parse("[daemon]\non_inconclusive = { human = \"extend\" }\n")
            .unwrap()
            .daemon
            .unwrap();
        assert_eq!(d.on_inconclusive.human, InconclusivePolicy::Extend);
        assert_eq!(d.on_inconclusive.ai, InconclusivePolicy::Escalate);
        let e = err("[daemon]\non_inconclusive = { ai = \"ignore\" }\n");
        assert!(e.contains("[daemon.on_inconclusive] ai must be"), "{e}");
        let r = Config::parse(
            "[daemon]\n[daemon.rollback]\nrepo = \"/srv/app\"\nhook = [\"/bin/redeploy\"]\n",
        )
        .unwrap()
        .daemon
        .unwrap()
        .rollback
        .unwrap();
        assert_eq!(
            (r.hook_timeout_secs, r.verify_secs, r.push),
            (300, 120, None)
        );
        let e = err("[daemon]\n[daemon.rollback]\nhook = [\"x\"]\n");
        assert!(e.contains("[daemon.rollback] repo is missing"), "{e}");
        let e = err("[daemon]\n[daemon.rollback]\nrepo = \"/a\"\nhook = []\n");
        assert!(e.contains("hook must name the redeploy command"), "{e}");
        let e = err("[daemon]\n[daemon.rollback]\nrepo = \"/a\"\nhook = [\"x\"]\npush_remote = \"origin\"\n");
        assert!(e.contains("push_branch go together"), "{e}");
    }

    fn mail(body: &str) -> Result<MailSettings, ConfigError> {
        Config::parse(&format!("[daemon]\n[daemon.mail]\n{body}\n"))
            .map(|c| c.daemon.unwrap().mail.unwrap())
    }

    fn mail_err(body: &str) -> String {
        mail(body).unwrap_err().to_string()
    }

    const MAIL: &str = "from = \"guardian@example.com\"\nto = [\"oncall@example.com\"]\n";

    #[test]
    fn the_mail_section_has_defaults() {
        assert_eq!(
            Config::parse("[daemon]\n").unwrap().daemon.unwrap().mail,
            None
        );
        let m = mail(&format!("{MAIL}smtp_host = \"smtp.example.com\"")).unwrap();
        assert_eq!(
            m,
            MailSettings {
                from: "guardian@example.com".into(),
                to: vec!["oncall@example.com".into()],
                smtp_host: "smtp.example.com".into(),
                smtp_port: 587,
                security: MailSecurity::StartTls,
                auth: None,
                digest_healthy: true,
            }
        );
        let m = mail(
            "from = \"Guardian <guardian@example.com>\"\n\
             to = [\"a@example.com\", \"On call <b@example.com>\"]\n\
             smtp_host = \"smtp.example.com\"\nsmtp_port = 2525\nsecurity = \"tls\"\n\
             username = \"guardian\"\npassword_file = \"/etc/guardian/smtp-password\"\n\
             digest_healthy = false",
        )
        .unwrap();
        assert_eq!(m.from, "Guardian <guardian@example.com>");
        assert_eq!(m.to.len(), 2);
        assert_eq!((m.smtp_port, m.security), (2525, MailSecurity::Tls));
        assert_eq!(
            m.auth,
            Some(MailAuth {
                username: "guardian".into(),
                password_file: "/etc/guardian/smtp-password".into(),
            })
        );
        assert!(!m.digest_healthy);
        // Implicit TLS without a port means the SMTPS port.
        let m = mail(&format!("{MAIL}smtp_host = \"h\"\nsecurity = \"tls\"")).unwrap();
        assert_eq!(m.smtp_port, 465);
    }

    #[test]
    fn mail_addresses_and_server_are_checked() {
        assert_eq!(
            mail_err("to = [\"a@example.com\"]\nsmtp_host = \"h\""),
            "[daemon.mail] from is missing: the sender address"
        );
        let e = mail_err("from = \"not an address\"\nto = [\"a@example.com\"]\nsmtp_host = \"h\"");
        assert!(
            e.starts_with("[daemon.mail] from must be an email address"),
            "{e}"
        );
        assert!(e.contains("not an address"), "{e}");
        let e = mail_err("from = \"g@example.com\"\nsmtp_host = \"h\"");
        assert!(
            e.starts_with("[daemon.mail] to must list at least one recipient"),
            "{e}"
        );
        let e = mail_err("from = \"g@example.com\"\nto = []\nsmtp_host = \"h\"");
        assert!(e.contains("to must list at least one"), "{e}");
        let e = mail_err(
            "from = \"g@example.com\"\nto = [\"ok@example.com\", \"oops\"]\nsmtp_host = \"h\"",
        );
        assert!(
            e.starts_with("[daemon.mail] to must be an email address"),
            "{e}"
        );
        assert!(e.contains("\"oops\""), "{e}");
        // A single address where a list belongs is toml's type error, naming the key.
        let e = mail_err("from = \"g@example.com\"\nto = \"a@example.com\"\nsmtp_host = \"h\"");
        assert!(e.contains("to"), "{e}");
        assert!(mail_err(MAIL).starts_with("[daemon.mail] smtp_host is missing"));
        let e = mail_err(&format!("{MAIL}smtp_host = \"smtp://mail.example.com\""));
        assert!(
            e.starts_with("[daemon.mail] smtp_host must be a host name"),
            "{e}"
        );
        for port in ["0", "65536", "-25"] {
            let e = mail_err(&format!("{MAIL}smtp_host = \"h\"\nsmtp_port = {port}"));
            assert_eq!(
                e,
                format!("[daemon.mail] smtp_port must be a TCP port from 1 to 65535, got {port}")
            );
        }
        let e = mail_err(&format!("{MAIL}smtp_host = \"h\"\nsecurity = \"ssl\""));
        assert_eq!(
            e,
            "[daemon.mail] security must be \"starttls\", \"tls\" or \"none\", got \"ssl\""
        );
        let e = mail_err(&format!("{MAIL}smtp_host = \"h\"\nsmtp_user = \"x\""));
        assert!(e.contains("unknown field `smtp_user`"), "{e}");
    }

    #[test]
    fn unencrypted_mail_only_to_this_machine() {
        for host in [
            "localhost",
            "127.0.0.1",
            "127.0.0.53",
            "::1",
            "[::1]",
            "LocalHost.",
        ] {
            let m = mail(&format!(
                "{MAIL}smtp_host = \"{host}\"\nsecurity = \"none\""
            ))
            .unwrap();
            assert_eq!(m.security, MailSecurity::None, "{host}");
            assert_eq!(m.smtp_port, 587, "{host}");
        }
        for host in [
            "smtp.example.com",
            "10.0.0.5",
            "localhost.example.com",
            "::2",
        ] {
            let e = mail_err(&format!(
                "{MAIL}smtp_host = \"{host}\"\nsecurity = \"none\""
            ));
            assert!(
                e.starts_with("[daemon.mail] security = \"none\" sends the alert"),
                "{host}: {e}"
            );
            assert!(e.contains(&format!("{host:?}")), "{e}");
            assert!(e.contains("use \"starttls\" or \"tls\""), "{e}");
        }
    }

    #[test]
    fn the_smtp_password_comes_from_a_file() {
        let base = format!("{MAIL}smtp_host = \"h\"\n");
        let e = mail_err(&format!("{base}username = \"u\""));
        assert!(
            e.starts_with("[daemon.mail] password_file is missing"),
            "{e}"
        );
        assert!(e.contains("set both, or neither"), "{e}");
        let e = mail_err(&format!("{base}password_file = \"/p\""));
        assert!(e.starts_with("[daemon.mail] username is missing"), "{e}");
        let e = mail_err(&format!("{base}username = \" \"\npassword_file = \"/p\""));
        assert_eq!(e, "[daemon.mail] username must not be empty");
        let e = mail_err(&format!("{base}username = \"u\"\npassword = \"hunter2\""));
        assert!(
            e.starts_with("[daemon.mail] password must not be written in the configuration"),
            "{e}"
        );
        assert!(e.contains("password_file"), "{e}");
        assert!(
            !e.contains("hunter2"),
            "the error must not repeat the secret: {e}"
        );
    }
}
