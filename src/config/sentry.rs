//! `[daemon.sentry]`: Sentry's webhooks as a source (`POST /v1/webhooks/sentry`): the file
//! holding the integration's client secret, which signs every delivery, and how old a delivery
//! may be.

use std::path::PathBuf;

use super::{ConfigError, RawSentry};

/// How guardian hears from Sentry.
#[derive(Clone, Debug, PartialEq)]
pub struct SentrySettings {
    /// File holding the internal integration's client secret (Sentry: Settings, Developer
    /// Settings, the integration, "Client Secret").
    pub client_secret_file: PathBuf,
    /// Deliveries sent longer ago than this are refused as stale.
    pub max_age_secs: u32,
}

impl RawSentry {
    pub fn validate(self) -> Result<SentrySettings, ConfigError> {
        const SECTION: &str = "daemon.sentry";
        let client_secret_file = self.client_secret_file.ok_or_else(|| {
            ConfigError::invalid(
                SECTION,
                "client_secret_file",
                "is missing: the file holding the Sentry integration's client secret, which \
                 signs every webhook delivery",
            )
        })?;
        let max_age_secs = match self.max_age_secs {
            None => 300,
            Some(n) if (10..=3600).contains(&n) => n as u32,
            Some(n) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "max_age_secs",
                    format!("must be whole seconds from 10 to 3600, got {n}"),
                ))
            }
        };
        Ok(SentrySettings {
            client_secret_file,
            max_age_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use crate::config::testing::err;
    use crate::config::Config;

    #[test]
    fn the_sentry_section_needs_its_secret_and_bounds_the_age_of_a_delivery() {
        let s = Config::parse(
            "[daemon]\n[daemon.sentry]\nclient_secret_file = \"/etc/guardian/sentry\"\n",
        )
        .unwrap()
        .daemon
        .unwrap()
        .sentry
        .unwrap();
        assert_eq!(s.max_age_secs, 300);
        let sentry = |body: &str| err(&format!("[daemon]\n[daemon.sentry]\n{body}\n"));
        expect!["[daemon.sentry] client_secret_file is missing: the file holding the Sentry integration's client secret, which signs every webhook delivery"]
            .assert_eq(&sentry("max_age_secs = 60"));
        expect!["[daemon.sentry] max_age_secs must be whole seconds from 10 to 3600, got 0"]
            .assert_eq(&sentry("client_secret_file = \"/s\"\nmax_age_secs = 0"));
    }
}
