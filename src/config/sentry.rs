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
    /// The share of the detector's `alpha` given to Sentry's events as a signal; the core's
    /// signals share the rest, so a watch's false-rollback rate stays `alpha`.
    pub alpha_share: f64,
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
        let alpha_share = match self.alpha_share {
            None => 0.2,
            Some(s) if (0.01..=0.5).contains(&s) => s,
            Some(s) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "alpha_share",
                    format!("must be from 0.01 to 0.5 (a share of [detector] alpha), got {s}"),
                ))
            }
        };
        Ok(SentrySettings {
            client_secret_file,
            max_age_secs,
            alpha_share,
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
        assert_eq!((s.max_age_secs, s.alpha_share), (300, 0.2));
        let sentry = |body: &str| err(&format!("[daemon]\n[daemon.sentry]\n{body}\n"));
        expect!["[daemon.sentry] client_secret_file is missing: the file holding the Sentry integration's client secret, which signs every webhook delivery"]
            .assert_eq(&sentry("max_age_secs = 60"));
        expect!["[daemon.sentry] max_age_secs must be whole seconds from 10 to 3600, got 0"]
            .assert_eq(&sentry("client_secret_file = \"/s\"\nmax_age_secs = 0"));
        expect!["[daemon.sentry] alpha_share must be from 0.01 to 0.5 (a share of [detector] alpha), got 0.9"]
            .assert_eq(&sentry("client_secret_file = \"/s\"\nalpha_share = 0.9"));
    }
}
