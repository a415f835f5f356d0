//! `[daemon]`: how `guardian run` runs: where it keeps state and listens, the logs it follows
//! and the endpoints it scrapes, what an inconclusive verdict leads to, the API's rate limits;
//! its subsections (`rollback`, `mail`, `gate`) are validated in their own files.

use std::path::PathBuf;

use super::{
    AgentSettings, ConfigError, FlagOffSettings, GateSettings, MailSettings, RawAgent, RawDaemon,
    RawFlagOff, RawGate, RawLimits, RawMail, RawRollback, RawSentry, RollbackSettings,
    SentrySettings,
};

const DAEMON: &str = "daemon";

/// How the daemon runs: where it keeps state, where it listens, what it watches.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonSettings {
    /// The service's name, in reports and alerts.
    pub service: String,
    /// Where the state database lives.
    pub state_dir: PathBuf,
    /// Address of the HTTP API; loopback unless the operator says otherwise.
    pub listen: std::net::SocketAddr,
    /// Where `/metrics` and `/healthz` are served on their own, without the API; `None`: on
    /// the API's address, beside it.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// File holding the bearer token every API request must carry.
    pub token_file: PathBuf,
    /// People who may read guardian's state and nothing else (the status page, `status`),
    /// each by name with the file holding their token.
    pub viewers: Vec<(String, PathBuf)>,
    /// Access logs to follow.
    pub logs: Vec<LogSource>,
    /// How to undo a change that made things worse; `None`: watch and record only.
    pub rollback: Option<RollbackSettings>,
    /// What an `inconclusive` verdict at the end of a watch leads to, per change kind.
    pub on_inconclusive: OnInconclusive,
    /// The app's own Prometheus endpoints to scrape.
    pub scrapes: Vec<ScrapeTarget>,
    /// The service's counters read from Prometheus's query API (`[[daemon.promql]]`).
    pub promql: Vec<PromqlSource>,
    /// How to email the on-call engineer; `None`: no email.
    pub mail: Option<MailSettings>,
    /// The trust gate (proposals, approvals, shadow mode); `None`: no proposals accepted.
    pub gate: Option<GateSettings>,
    /// How fast each token other than the operator's may call the API.
    pub limits: Limits,
    /// Sentry's webhooks; `None`: `POST /v1/webhooks/sentry` answers 404.
    pub sentry: Option<SentrySettings>,
    /// The agent run on Sentry's issues (`[daemon.agent]`); `None`: no agent is run.
    pub agent: Option<AgentSettings>,
    /// The app's health check and its restart action (`[daemon.health]`); `None`: none.
    pub health: Option<super::HealthSettings>,
    /// Turning a change's feature flag off before reverting it, and on request
    /// (`[daemon.flag_off]`); `None`: never.
    pub flag_off: Option<FlagOffSettings>,
    /// Where outcomes are told besides email (`[[daemon.notify]]`): webhooks, Slack,
    /// Alertmanager.
    pub notify: Vec<super::NotifyTarget>,
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

/// One Prometheus endpoint guardian scrapes, and which series count as what.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrapeTarget {
    pub name: String,
    pub spec: crate::scrape::ScrapeSpec,
    pub interval_secs: u32,
}

/// A Prometheus (or anything with its query API) guardian reads the service's counters from.
#[derive(Clone, Debug, PartialEq)]
pub struct PromqlSource {
    pub name: String,
    pub spec: crate::promql::PromqlSpec,
}

/// Whole seconds in `range` for `key` of `section`, or `default`.
fn secs_in(
    section: &'static str,
    key: &'static str,
    value: Option<i64>,
    default: u32,
    range: std::ops::RangeInclusive<i64>,
) -> Result<u32, ConfigError> {
    match value {
        None => Ok(default),
        Some(n) if range.contains(&n) => Ok(n as u32),
        Some(n) => Err(ConfigError::invalid(
            section,
            key,
            format!(
                "must be whole seconds from {} to {}, got {n}",
                range.start(),
                range.end()
            ),
        )),
    }
}

impl super::raw::RawPromql {
    fn validate(self, i: usize) -> Result<PromqlSource, ConfigError> {
        const SECTION: &str = "daemon.promql";
        let url = self.url.ok_or_else(|| {
            ConfigError::invalid(
                SECTION,
                "url",
                format!("is missing in [[daemon.promql]] {}", i + 1),
            )
        })?;
        let bad_url = || {
            ConfigError::invalid(
                SECTION,
                "url",
                format!(
                    "must be the query API's base, e.g. http://127.0.0.1:9090, got {:?}",
                    crate::promql::shown_url(&url)
                ),
            )
        };
        match url::Url::parse(&url) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && url == url.trim() => {}
            _ => return Err(bad_url()),
        }
        let selector = self.selector.unwrap_or_default();
        if let (false, Err(e)) = (
            selector.contains(['{', '}', '\n']),
            crate::promql::check_selector(&selector),
        ) {
            return Err(ConfigError::invalid(
                SECTION,
                "selector",
                format!("is not PromQL label matchers: {e}, in {selector:?}"),
            ));
        }
        if selector.contains(['{', '}', '\n']) {
            return Err(ConfigError::invalid(
                SECTION,
                "selector",
                format!(
                    "is label matchers in PromQL without braces, e.g. job=\"shop\", got {selector:?}"
                ),
            ));
        }
        let arms = match (self.canary_label, self.canary) {
            (None, None) => None,
            // The canary comes from each notification (`guardian notify --canary`).
            (Some(label), None) => Some(crate::scrape::Arms::new(label, Vec::new())),
            (Some(label), Some(canary)) if !canary.is_empty() => {
                Some(crate::scrape::Arms::new(label, canary))
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "canary",
                    "is empty: leave it out to take the canary from each notification \
                     (guardian notify --canary VALUE,...), or name its values",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "canary",
                    "needs canary_label: the label that tells the new version's series (e.g. \
                     \"instance\" or \"version\"), whose values canary names",
                ))
            }
        };
        let step_secs = secs_in(SECTION, "step_secs", self.step_secs, 10, 1..=300)?;
        let lag_secs = secs_in(SECTION, "lag_secs", self.lag_secs, 30, 0..=3600)?;
        let timeout_secs = secs_in(SECTION, "timeout_secs", self.timeout_secs, 10, 1..=120)?;
        let latency_unit_ms = self.latency_unit_ms.unwrap_or(1000.0);
        if !(latency_unit_ms.is_finite() && latency_unit_ms > 0.0) {
            return Err(ConfigError::invalid(
                SECTION,
                "latency_unit_ms",
                format!("must be a positive number, got {latency_unit_ms}"),
            ));
        }
        Ok(PromqlSource {
            name: self.name.unwrap_or_else(|| crate::promql::shown_url(&url)),
            spec: crate::promql::PromqlSpec {
                url,
                selector,
                series: crate::scrape::ScrapeSpec {
                    url: String::new(),
                    requests: selector_of(
                        SECTION,
                        "requests",
                        self.requests.as_deref().unwrap_or("http_requests_total"),
                    )?,
                    errors: selector_of(
                        SECTION,
                        "errors",
                        self.errors
                            .as_deref()
                            .unwrap_or("http_requests_total{code=5..}"),
                    )?,
                    latency: self
                        .latency
                        .as_deref()
                        .map(|l| selector_of(SECTION, "latency", l))
                        .transpose()?,
                    route_label: self.route_label,
                    arms,
                    latency_unit_ms,
                    timeout: std::time::Duration::from_secs(u64::from(timeout_secs)),
                },
                step_secs,
                lag_secs,
                backfill_secs: 0,
            },
        })
    }
}

/// Reads `name{label=pattern,...}`: a series name and label patterns, where `.` in a pattern
/// matches any one character (`code=5..`) and anything else matches itself.
fn selector_of(
    section: &'static str,
    key: &'static str,
    text: &str,
) -> Result<crate::scrape::Matcher, ConfigError> {
    use crate::scrape::{LabelMatch, Matcher};
    let bad = |why: &str| {
        ConfigError::invalid(
            section,
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
        if value.starts_with(['~', '=']) || label.ends_with('!') {
            return Err(bad(
                "a PromQL operator (=~, !=, !~): write label=pattern, where . matches any \
                 one character",
            ));
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

/// One access log the daemon follows.
#[derive(Clone, Debug, PartialEq)]
pub struct LogSource {
    /// Stable name under which the reading position is saved.
    pub name: String,
    pub path: PathBuf,
    pub format: crate::input::Format,
}

impl RawDaemon {
    pub fn validate(self) -> Result<DaemonSettings, ConfigError> {
        let service = self.service.unwrap_or_else(|| "app".to_owned());
        if service.trim().is_empty() {
            return Err(ConfigError::invalid(DAEMON, "service", "must not be empty"));
        }
        let listen = listen(self.listen)?;
        let metrics_listen = match self.metrics_listen {
            None => None,
            Some(text) => {
                let addr: std::net::SocketAddr = text.parse().map_err(|e| {
                    ConfigError::invalid(
                        DAEMON,
                        "metrics_listen",
                        format!(
                            "must be an address and port such as 127.0.0.1:9464, got {text:?} ({e})"
                        ),
                    )
                })?;
                // Port 0 is for tests (any free port); a fixed port must not be the API's.
                if addr == listen && addr.port() != 0 {
                    return Err(ConfigError::invalid(
                        DAEMON,
                        "metrics_listen",
                        format!("is {addr}, the API's own address (listen): leave it out to serve /metrics beside the API"),
                    ));
                }
                Some(addr)
            }
        };
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
        let sentry = self.sentry.map(RawSentry::validate).transpose()?;
        let agent = self
            .agent
            .map(|a: RawAgent| a.validate(sentry.as_ref(), gate.as_ref()))
            .transpose()?;
        let flag_off = self.flag_off.map(RawFlagOff::validate).transpose()?;
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
            let requests = selector_of(
                "daemon.scrapes",
                "requests",
                raw.requests.as_deref().unwrap_or("http_requests_total"),
            )?;
            let errors = selector_of(
                "daemon.scrapes",
                "errors",
                raw.errors
                    .as_deref()
                    .unwrap_or("http_requests_total{code=5..}"),
            )?;
            let latency = raw
                .latency
                .as_deref()
                .map(|l| selector_of("daemon.scrapes", "latency", l))
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
                    arms: None,
                    latency_unit_ms: raw.latency_unit_ms.unwrap_or(1000.0),
                    timeout: std::time::Duration::from_secs(u64::from(interval_secs.min(10))),
                },
                interval_secs,
            });
        }
        let promql = self
            .promql
            .into_iter()
            .enumerate()
            .map(|(i, raw)| raw.validate(i))
            .collect::<Result<Vec<_>, _>>()?;
        let state_dir = self
            .state_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/guardian"));
        let rollback = rollback.map(|r| RollbackSettings {
            hook_note: Some(crate::running::note_file(&state_dir)),
            ..r
        });
        let health = self.health.map(super::RawHealth::validate).transpose()?;
        let notify = super::notify::validate(self.notify)?;
        for name in self.viewers.keys() {
            super::gate::check_person_name(DAEMON, "viewers", name)?;
        }
        let viewers = self.viewers.into_iter().collect();
        Ok(DaemonSettings {
            notify,
            flag_off,
            agent,
            health,
            sentry,
            gate,
            limits,
            scrapes,
            promql,
            on_inconclusive,
            rollback,
            mail,
            service,
            state_dir,
            listen,
            metrics_listen,
            token_file: token_file(self.token_file),
            viewers,
            logs,
        })
    }
}

/// `[daemon] listen`, validated (the API's clients read it with [`super::ApiAccess`] too).
pub(super) fn listen(text: Option<String>) -> Result<std::net::SocketAddr, ConfigError> {
    let text = text.unwrap_or_else(|| "127.0.0.1:8707".to_owned());
    text.parse().map_err(|e| {
        ConfigError::invalid(
            DAEMON,
            "listen",
            format!("must be an address and port such as 127.0.0.1:8707, got {text:?} ({e})"),
        )
    })
}

/// `[daemon] token_file`, or its default.
pub(super) fn token_file(path: Option<PathBuf>) -> PathBuf {
    path.unwrap_or_else(|| PathBuf::from("/etc/guardian/token"))
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

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::config::testing::err;
    use crate::config::Config;

    #[test]
    fn a_promql_source_reads_its_series_and_canary_and_every_mistake_is_named() {
        let c = Config::parse(
            "[daemon]\n[[daemon.promql]]\nurl = \"http://127.0.0.1:9090\"\nselector = 'job=\"shop\"'\n\
             route_label = \"handler\"\ncanary_label = \"instance\"\ncanary = [\"10.0.0.3:8080\"]\n",
        )
        .unwrap()
        .daemon
        .unwrap();
        let p = &c.promql[0];
        assert_eq!(p.name, "http://127.0.0.1:9090");
        assert_eq!((p.spec.step_secs, p.spec.lag_secs), (10, 30));
        assert_eq!(p.spec.series.requests.name, "http_requests_total");
        let arms = p.spec.series.arms.as_ref().unwrap();
        assert_eq!((arms.label.as_str(), arms.canary.len()), ("instance", 1));
        let from_notifications = Config::parse(
            "[daemon]\n[[daemon.promql]]\nurl = \"http://p:9090\"\ncanary_label = \"instance\"\n",
        )
        .unwrap()
        .daemon
        .unwrap();
        let arms = from_notifications.promql[0]
            .spec
            .series
            .arms
            .as_ref()
            .unwrap();
        assert!(
            arms.canary.is_empty(),
            "a canary label alone: the canary is what each notification names"
        );
        let promql = |body: &str| err(&format!("[daemon]\n[[daemon.promql]]\n{body}\n"));
        for (body, says) in [
            ("selector = 'job=\"shop\"'", "url is missing"),
            ("url = \"prometheus:9090\"", "query API's base"),
            (
                "url = \"http://p:9090/api/v1/query?x=1\"",
                "query API's base",
            ),
            (
                "url = \"http://p:9090\"\nselector = '{job=\"shop\"}'",
                "without braces",
            ),
            (
                "url = \"http://p:9090\"\nselector = 'job=\"shop\") or (up'",
                "is not PromQL label matchers: a comma expected at character 11",
            ),
            (
                "url = \"http://p:9090\"\ncanary = [\"a\"]",
                "canary needs canary_label",
            ),
            (
                "url = \"http://p:9090\"\ncanary_label = \"instance\"\ncanary = []",
                "leave it out to take the canary from each notification",
            ),
            (
                "url = \"http://p:9090\"\nstep_secs = 0",
                "step_secs must be whole seconds from 1 to 300",
            ),
            (
                "url = \"http://p:9090\"\nlatency_unit_ms = -1",
                "latency_unit_ms must be a positive number",
            ),
            (
                "url = \"http://p:9090\"\nerrors = \"x{code\"",
                "[daemon.promql] errors",
            ),
        ] {
            let e = promql(body);
            assert!(e.contains(says), "{body}: {e}");
        }
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
        expect![[r#"[daemon] listen must be an address and port such as 127.0.0.1:8707, got "localhost" (invalid socket address syntax)"#]].assert_eq(&err("[daemon]\nlisten = \"localhost\"\n"));
        assert_eq!(
            c.metrics_listen, None,
            "/metrics is served beside the API by default"
        );
        expect!["[daemon] logs.path is missing in log 1"]
            .assert_eq(&err("[daemon]\n[[daemon.logs]]\nformat = \"nginx\"\n"));
        expect![[r#"[daemon] logs.format in log 1: unknown log format "csv": expected "jsonl" or "nginx""#]].assert_eq(&err(
            "[daemon]\n[[daemon.logs]]\npath = \"a\"\nformat = \"csv\"\n",
        ));
        expect![[r#"[daemon] logs.name "a" is used twice; each log needs its own name"#]]
            .assert_eq(&err(
                "[daemon]\n[[daemon.logs]]\npath = \"a\"\n[[daemon.logs]]\npath = \"a\"\n",
            ));
        expect![[r#"
            TOML parse error at line 2, column 1
              |
            2 | listen_on = "x"
              | ^^^^^^^^^
            unknown field `listen_on`, expected one of `service`, `state_dir`, `listen`, `metrics_listen`, `token_file`, `viewers`, `logs`, `rollback`, `mail`, `on_inconclusive`, `scrapes`, `promql`, `gate`, `limits`, `sentry`, `agent`, `health`, `flag_off`, `notify`"#]].assert_eq(&err("[daemon]\nlisten_on = \"x\"\n"));
        let d = Config::parse("[daemon]\non_inconclusive = { human = \"extend\" }\n")
            .unwrap()
            .daemon
            .unwrap();
        assert_eq!(d.on_inconclusive.human, InconclusivePolicy::Extend);
        assert_eq!(d.on_inconclusive.ai, InconclusivePolicy::Escalate);
        expect![[
            r#"[daemon.on_inconclusive] ai must be "record", "extend" or "escalate", got "ignore""#
        ]]
        .assert_eq(&err("[daemon]\non_inconclusive = { ai = \"ignore\" }\n"));
    }

    #[test]
    fn metrics_may_have_a_listener_of_their_own() {
        let d = Config::parse("[daemon]\nmetrics_listen = \"127.0.0.1:9464\"\n")
            .unwrap()
            .daemon
            .unwrap();
        assert_eq!(
            d.metrics_listen.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:9464")
        );
        expect![[r#"[daemon] metrics_listen must be an address and port such as 127.0.0.1:9464, got "9464" (invalid socket address syntax)"#]].assert_eq(&err("[daemon]\nmetrics_listen = \"9464\"\n"));
        expect!["[daemon] metrics_listen is 127.0.0.1:8707, the API's own address (listen): leave it out to serve /metrics beside the API"].assert_eq(&err("[daemon]\nmetrics_listen = \"127.0.0.1:8707\"\n"));
    }
}
