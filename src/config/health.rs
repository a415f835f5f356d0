//! `[daemon.health]`: guardian's own health check of the app (an HTTP endpoint probed every
//! few seconds) and `[daemon.health.restart]`, the first bounded action: after `failures`
//! failed probes in a row, run the operator's restart command, at most `max_per_hour` times an
//! hour and never twice within `cooldown_secs`, and check the app is healthy again within
//! `verify_secs` (else a person is told). `shadow`: decide, record and email, run nothing.

use super::{ConfigError, RawHealth, RawRestart};

const SECTION: &str = "daemon.health";
const RESTART: &str = "daemon.health.restart";

/// The health check, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthSettings {
    /// The app's health endpoint: healthy when it answers 2xx within the timeout.
    pub url: String,
    /// Seconds between probes.
    pub interval_secs: u32,
    /// A probe not answered within this is failed.
    pub timeout_secs: u32,
    /// Failed probes in a row before the app is taken to be down.
    pub failures: u32,
    /// What is done about it; `None`: failures are recorded and emailed, nothing is run.
    pub restart: Option<RestartSettings>,
}

/// The restart action, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct RestartSettings {
    /// The command, program first, run without a shell (e.g. `systemctl start --wait
    /// app-restart.service`, allowed by the polkit rule `systemd/` ships).
    pub command: Vec<String>,
    /// A run still going after this long is stopped (its whole process group), and failed.
    pub timeout_secs: u32,
    /// Restarts started in any hour (the hour before now), at most.
    pub max_per_hour: u32,
    /// No restart within this long of the last one.
    pub cooldown_secs: u32,
    /// After the restart the check must pass within this long, else a person is told.
    pub verify_secs: u32,
    /// Decide, record and email what would have been done; run nothing.
    pub shadow: bool,
}

fn bounded(
    section: &'static str,
    key: &'static str,
    v: Option<i64>,
    default: u32,
    (min, max): (i64, i64),
) -> Result<u32, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) if (min..=max).contains(&n) => Ok(n as u32),
        Some(n) => Err(ConfigError::invalid(
            section,
            key,
            format!("must be a whole number from {min} to {max}, got {n}"),
        )),
    }
}

impl RawHealth {
    pub fn validate(self) -> Result<HealthSettings, ConfigError> {
        let url = self.url.unwrap_or_default();
        let parsed = url::Url::parse(&url).map_err(|e| {
            ConfigError::invalid(
                SECTION,
                "url",
                format!(
                    "must be the app's health endpoint, e.g. \"http://127.0.0.1:8080/healthz\", \
                     got {url:?} ({e})"
                ),
            )
        })?;
        // https is checked against the web's root certificates (ureq's rustls): a probe of a
        // self-signed endpoint fails, and says why in `guardian status`.
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(ConfigError::invalid(
                SECTION,
                "url",
                format!("must be an http:// or https:// address with a host, got {url:?}"),
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            // The address is shown in guardian status, the journal and every email.
            return Err(ConfigError::invalid(
                SECTION,
                "url",
                "must not carry a user or password: it is shown in status, the journal and \
                 emails",
            ));
        }
        let interval_secs = bounded(SECTION, "interval_secs", self.interval_secs, 5, (1, 3600))?;
        let timeout_secs = bounded(SECTION, "timeout_secs", self.timeout_secs, 2, (1, 60))?;
        if timeout_secs > interval_secs {
            return Err(ConfigError::invalid(
                SECTION,
                "timeout_secs",
                format!(
                    "must not be longer than interval_secs ({interval_secs}), got {timeout_secs}: \
                     a probe is not started while the last one is under way"
                ),
            ));
        }
        let failures = bounded(SECTION, "failures", self.failures, 3, (1, 100))?;
        let restart = self.restart.map(RawRestart::validate).transpose()?;
        if let Some(r) = &restart {
            // The probe right after the restart may find the app still starting: it needs
            // the time for one more.
            let least = interval_secs + timeout_secs;
            if r.verify_secs < least {
                return Err(ConfigError::invalid(
                    RESTART,
                    "verify_secs",
                    format!(
                        "must be at least [daemon.health] interval_secs + timeout_secs \
                         ({least}), got {}: a restarted app gets the probe right after the \
                         restart and at least one more to pass",
                        r.verify_secs
                    ),
                ));
            }
        }
        Ok(HealthSettings {
            url,
            interval_secs,
            timeout_secs,
            failures,
            restart,
        })
    }
}

impl RawRestart {
    fn validate(self) -> Result<RestartSettings, ConfigError> {
        let command = self.command.unwrap_or_default();
        if command.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(ConfigError::invalid(
                RESTART,
                "command",
                "must name the restart command, program first, e.g. \
                 [\"systemctl\", \"start\", \"--wait\", \"app-restart.service\"]",
            ));
        }
        let timeout_secs = bounded(RESTART, "timeout_secs", self.timeout_secs, 60, (1, 3600))?;
        let max_per_hour = bounded(RESTART, "max_per_hour", self.max_per_hour, 3, (1, 60))?;
        let cooldown_secs = bounded(RESTART, "cooldown_secs", self.cooldown_secs, 120, (0, 3600))?;
        let verify_secs = bounded(RESTART, "verify_secs", self.verify_secs, 30, (1, 3600))?;
        Ok(RestartSettings {
            command,
            timeout_secs,
            max_per_hour,
            cooldown_secs,
            verify_secs,
            shadow: self.shadow.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use crate::config::testing::err;
    use crate::config::Config;

    fn health(body: &str) -> String {
        err(&format!("[daemon]\n[daemon.health]\n{body}\n"))
    }

    #[test]
    fn the_health_section_has_defaults() {
        let h = Config::parse(
            "[daemon]\n[daemon.health]\nurl = \"http://127.0.0.1:8080/healthz\"\n\
             [daemon.health.restart]\ncommand = [\"systemctl\", \"restart\", \"app\"]\n",
        )
        .unwrap()
        .daemon
        .unwrap()
        .health
        .unwrap();
        assert_eq!((h.interval_secs, h.timeout_secs, h.failures), (5, 2, 3));
        let r = h.restart.unwrap();
        assert_eq!(
            (
                r.timeout_secs,
                r.max_per_hour,
                r.cooldown_secs,
                r.verify_secs,
                r.shadow
            ),
            (60, 3, 120, 30, false)
        );
    }

    #[test]
    fn a_health_endpoint_behind_tls_is_probed_over_https() {
        let h =
            Config::parse("[daemon]\n[daemon.health]\nurl = \"https://shop.example/healthz\"\n")
                .unwrap()
                .daemon
                .unwrap()
                .health
                .unwrap();
        assert_eq!(h.url, "https://shop.example/healthz");
    }

    #[test]
    fn the_health_section_refuses_what_it_cannot_use_naming_the_key() {
        expect![[r#"[daemon.health] url must be the app's health endpoint, e.g. "http://127.0.0.1:8080/healthz", got "" (relative URL without a base)"#]]
            .assert_eq(&health(""));
        expect![[r#"[daemon.health] url must be an http:// or https:// address with a host, got "file:///x""#]]
            .assert_eq(&health("url = \"file:///x\""));
        expect!["[daemon.health] url must not carry a user or password: it is shown in status, the journal and emails"]
            .assert_eq(&health("url = \"http://ops:secret@127.0.0.1:8080/healthz\""));
        expect![
            "[daemon.health] interval_secs must be a whole number from 1 to 3600, got 99999999999"
        ]
        .assert_eq(&health("url = \"http://a/\"\ninterval_secs = 99999999999"));
        expect!["[daemon.health] interval_secs must be a whole number from 1 to 3600, got 0"]
            .assert_eq(&health("url = \"http://a/\"\ninterval_secs = 0"));
        expect!["[daemon.health] timeout_secs must not be longer than interval_secs (5), got 9: a probe is not started while the last one is under way"]
            .assert_eq(&health("url = \"http://a/\"\ntimeout_secs = 9"));
        expect!["[daemon.health] failures must be a whole number from 1 to 100, got -1"]
            .assert_eq(&health("url = \"http://a/\"\nfailures = -1"));
        expect![[r#"[daemon.health.restart] command must name the restart command, program first, e.g. ["systemctl", "start", "--wait", "app-restart.service"]"#]]
            .assert_eq(&health("url = \"http://a/\"\n[daemon.health.restart]\ncommand = []"));
        expect!["[daemon.health.restart] max_per_hour must be a whole number from 1 to 60, got 0"]
            .assert_eq(&health(
                "url = \"http://a/\"\n[daemon.health.restart]\ncommand = [\"x\"]\nmax_per_hour = 0",
            ));
        expect!["[daemon.health.restart] verify_secs must be a whole number from 1 to 3600, got 0"]
            .assert_eq(&health(
                "url = \"http://a/\"\n[daemon.health.restart]\ncommand = [\"x\"]\nverify_secs = 0",
            ));
        expect!["[daemon.health.restart] verify_secs must be at least [daemon.health] interval_secs + timeout_secs (12), got 10: a restarted app gets the probe right after the restart and at least one more to pass"]
            .assert_eq(&health(
                "url = \"http://a/\"\ninterval_secs = 10\n[daemon.health.restart]\ncommand = [\"x\"]\nverify_secs = 10",
            ));
        expect![
            "[daemon.health.restart] cooldown_secs must be a whole number from 0 to 3600, got -5"
        ]
        .assert_eq(&health(
            "url = \"http://a/\"\n[daemon.health.restart]\ncommand = [\"x\"]\ncooldown_secs = -5",
        ));
        expect![
            "[daemon.health.restart] timeout_secs must be a whole number from 1 to 3600, got 0"
        ]
        .assert_eq(&health(
            "url = \"http://a/\"\n[daemon.health.restart]\ncommand = [\"x\"]\ntimeout_secs = 0",
        ));
        expect![[r#"[daemon.health.restart] command must name the restart command, program first, e.g. ["systemctl", "start", "--wait", "app-restart.service"]"#]]
            .assert_eq(&health("url = \"http://a/\"\n[daemon.health.restart]\nshadow = true"));
        // What TOML itself refuses names the key too, with its line.
        expect![[r#"
            TOML parse error at line 4, column 12
              |
            4 | failures = "3"
              |            ^^^
            invalid type: string "3", expected i64"#]]
        .assert_eq(&health("url = \"http://a/\"\nfailures = \"3\""));
        expect![[r#"
            TOML parse error at line 6, column 1
              |
            6 | max_per_hours = 3
              | ^^^^^^^^^^^^^
            unknown field `max_per_hours`, expected one of `command`, `timeout_secs`, `max_per_hour`, `cooldown_secs`, `verify_secs`, `shadow`"#]].assert_eq(&health(
            "url = \"http://a/\"\n[daemon.health.restart]\ncommand = [\"x\"]\nmax_per_hours = 3",
        ));
    }
}
