//! The configuration file, read in two phases: TOML into [`RawConfig`], which mirrors the file
//! and knows only types, then validation into [`Config`], which knows what the values mean.
//! Every key is optional and defaults to [`DetectorSettings::default`] (see
//! `config/guardian.toml`, which spells the defaults out). Every error names the key at fault
//! and says what is wrong with it, for a person to fix.
//!
//! One file per concern: `raw` is the file's mirror; `access` the little the API's clients read
//! of it; `detector`, `input`, `daemon`,
//! `rollback`, `flag_off`, `mail`, `gate`, `sentry` and `agent` each hold a section's typed settings and its validation.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::core::DetectorSettings;
use gate::check_gate_against_detector;

pub use access::ApiAccess;
pub use agent::{AgentSettings, DeniedPaths, SentryLevel};
pub use daemon::{
    DaemonSettings, InconclusivePolicy, Limits, LogSource, OnInconclusive, PromqlSource,
    ScrapeTarget,
};
pub use flag_off::{
    check_flag_name, FlagList, FlagOffSettings, FlagRequester, FlagService, FlagTarget,
};
pub use gate::GateSettings;
pub use health::{HealthSettings, RestartSettings};
pub use input::InputSettings;
pub use mail::{MailAuth, MailSecurity, MailSettings};
pub use notify::{NotifyKind, NotifyTarget, Severity};
pub use raw::{
    RawAgent, RawAlphaSplit, RawConfig, RawDaemon, RawDetector, RawFlagOff, RawGate, RawInput,
    RawLimits, RawLog, RawMail, RawOnInconclusive, RawRollback, RawScrape, RawSentry,
};
pub use raw::{RawHealth, RawRestart};
pub use rollback::RollbackSettings;
pub use sentry::{SentryApiSettings, SentryProject, SentrySettings};

mod access;
mod agent;
mod daemon;
mod detector;
mod flag_off;
mod gate;
mod health;
mod input;
mod mail;
mod notify;
mod raw;
mod rollback;
mod sentry;

/// Everything guardian is configured with, validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub detector: DetectorSettings,
    pub input: InputSettings,
    /// How `guardian run` runs; `None` when the file has no `[daemon]` section (replay needs
    /// none).
    pub daemon: Option<DaemonSettings>,
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

/// What the tests of every section share.
#[cfg(test)]
mod testing {
    use super::Config;

    /// The message `text` is refused with.
    pub(super) fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    /// The message a `[detector]` section of `body` is refused with.
    pub(super) fn detector(body: &str) -> String {
        err(&format!("[detector]\n{body}\n"))
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::config::testing::{detector, err};

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
    fn the_example_config_spells_out_the_defaults() {
        let example = include_str!("../../config/guardian.toml");
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
    fn the_example_daemon_section_is_valid_once_uncommented() {
        let example = include_str!("../../config/guardian.toml");
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
        assert_eq!(daemon.promql.len(), 1);
        let gate = daemon.gate.expect("a [daemon.gate] section");
        assert_eq!(gate.approvers.len(), 1);
        assert!(!gate.shadow);
    }

    #[test]
    fn unknown_keys_are_named() {
        expect![[r#"
            TOML parse error at line 2, column 1
              |
            2 | alpah = 0.01
              | ^^^^^
            unknown field `alpah`, expected one of `alpha`, `alpha_split`, `baseline_secs`, `watch_secs`, `deploy_guard_secs`, `error_tolerance`, `latency_tolerance`, `slow_quantile`, `slow_threshold_ms`, `latency_quantiles`, `max_evidence_per_second`, `max_routes`, `min_baseline_requests`, `min_baseline_tail`, `min_requests_after`, `healthy_confidence`, `healthy_max_ratio`, `healthy_error_floor`"#]].assert_eq(&detector("alpah = 0.01"));
        expect![[r#"
            TOML parse error at line 2, column 44
              |
            2 | alpha_split = { errors = 0.5, slow = 0.25, latncy = 0.25 }
              |                                            ^^^^^^
            unknown field `latncy`, expected one of `errors`, `slow`, `latency`"#]]
        .assert_eq(&err(
            "[detector]\nalpha_split = { errors = 0.5, slow = 0.25, latncy = 0.25 }",
        ));
        expect![[r#"
            TOML parse error at line 2, column 1
              |
            2 | port = 1
              | ^^^^
            unknown field `port`, expected one of `service`, `state_dir`, `listen`, `metrics_listen`, `token_file`, `viewers`, `logs`, `rollback`, `mail`, `on_inconclusive`, `scrapes`, `promql`, `gate`, `limits`, `sentry`, `agent`, `health`, `flag_off`, `notify`"#]].assert_eq(&err("[daemon]\nport = 1"));
        expect![[r#"
            TOML parse error at line 1, column 2
              |
            1 | [deamon]
              |  ^^^^^^
            unknown field `deamon`, expected one of `detector`, `input`, `daemon`"#]]
        .assert_eq(&err("[deamon]\nport = 1"));
        expect![[r#"
            TOML parse error at line 2, column 1
              |
            2 | error_status = 500
              | ^^^^^^^^^^^^
            unknown field `error_status`, expected `error_status_min`"#]]
        .assert_eq(&err("[input]\nerror_status = 500"));
    }

    #[test]
    fn syntax_errors_keep_their_position() {
        expect![[r#"
            TOML parse error at line 3, column 14
              |
            3 | watch_secs = 
              |              ^
            invalid string
            expected `"`, `'`"#]]
        .assert_eq(&err("[detector]\nalpha = 0.01\nwatch_secs = \n"));
        expect![[r#"
            TOML parse error at line 2, column 9
              |
            2 | alpha = "0.01"
              |         ^^^^^^
            invalid type: string "0.01", expected f64"#]]
        .assert_eq(&detector("alpha = \"0.01\""));
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // The temporary directory differs from run to run; the rest of the message does not.
        let message = |path: &Path| {
            Config::from_path(path)
                .unwrap_err()
                .to_string()
                .replace(&dir.path().display().to_string(), "$DIR")
        };
        expect!["cannot read $DIR/nope.toml: No such file or directory (os error 2)"]
            .assert_eq(&message(&dir.path().join("nope.toml")));
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[detector]\nalpha = 2\n").unwrap();
        expect!["$DIR/bad.toml: [detector] alpha must be in (0, 0.5), got 2"]
            .assert_eq(&message(&bad));
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "").unwrap();
        assert_eq!(Config::from_path(&good).unwrap(), Config::default());
    }
}
