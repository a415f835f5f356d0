//! `[daemon.sentry]`: Sentry's webhooks as a source (`POST /v1/webhooks/sentry`): the file
//! holding the integration's client secret, which signs every delivery, and how old a delivery
//! may be; and, optionally, Sentry's API polled for what webhooks do not say (an open issue
//! growing): where, which organization and project, the file holding the auth token, how often.

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
    /// Sentry's API, polled for events; `None`: webhooks alone.
    pub api: Option<SentryApiSettings>,
}

/// Which project's events guardian asks Sentry's API for.
#[derive(Clone, Debug, PartialEq)]
pub enum SentryProject {
    /// The project's slug: asked for as `project:<slug>` in the query.
    Slug(String),
    /// The project's numeric id: Discover's `project` parameter.
    Id(u64),
}

/// `[daemon.sentry]`'s API keys: all of them, or none.
#[derive(Clone, Debug, PartialEq)]
pub struct SentryApiSettings {
    /// `https://sentry.io`, or a self-hosted Sentry's origin (no path, no trailing slash).
    pub api_url: String,
    /// The organization's slug.
    pub org: String,
    pub project: SentryProject,
    /// File holding an auth token (first line) with `org:read` (Discover) and `event:read`.
    pub auth_token_file: PathBuf,
    /// How often the API is asked for new events.
    pub poll_secs: u32,
    /// Only events of this environment, when set.
    pub environment: Option<String>,
}

/// A slug as Sentry makes them (lower-case letters, digits, `-` and `_`): it goes into a path
/// and a query, so nothing else is let through.
fn slug(key: &'static str, value: &str) -> Result<String, ConfigError> {
    let ok = (1..=100).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(ConfigError::invalid(
            "daemon.sentry",
            key,
            format!("must be a Sentry slug (letters, digits, - and _), got {value:?}"),
        ))
    }
}

impl RawSentry {
    /// The API keys, if any is set: all of them (but the optional ones), or an error naming
    /// the first one missing.
    fn api(&mut self) -> Result<Option<SentryApiSettings>, ConfigError> {
        const SECTION: &str = "daemon.sentry";
        let any = self.api_url.is_some()
            || self.org.is_some()
            || self.project.is_some()
            || self.project_id.is_some()
            || self.auth_token_file.is_some()
            || self.poll_secs.is_some()
            || self.environment.is_some();
        if !any {
            return Ok(None);
        }
        let missing = |key: &'static str, what: &str| {
            ConfigError::invalid(
                SECTION,
                key,
                format!("is missing: polling Sentry's API needs {what} (or set none of org, project, auth_token_file, poll_secs, environment, api_url)"),
            )
        };
        let org = self
            .org
            .take()
            .ok_or_else(|| missing("org", "the organization's slug"))?;
        let org = slug("org", &org)?;
        let project = match (self.project.take(), self.project_id.take()) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "project_id",
                    "and project both name the project: set one",
                ))
            }
            (Some(p), None) => SentryProject::Slug(slug("project", &p)?),
            (None, Some(id)) if id > 0 => SentryProject::Id(id as u64),
            (None, Some(id)) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "project_id",
                    format!("must be a project's numeric id (above 0), got {id}"),
                ))
            }
            (None, None) => return Err(missing("project", "the project's slug (or project_id)")),
        };
        let auth_token_file = self.auth_token_file.take().ok_or_else(|| {
            missing(
                "auth_token_file",
                "the file holding an auth token with org:read and event:read",
            )
        })?;
        let api_url = match self.api_url.take() {
            None => "https://sentry.io".to_owned(),
            Some(url) => {
                let bad = |why: &str| {
                    ConfigError::invalid(SECTION, "api_url", format!("{why}, got {url:?}"))
                };
                let parsed =
                    url::Url::parse(&url).map_err(|e| bad(&format!("is not a URL ({e})")))?;
                if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
                    return Err(bad(
                        "must be an http(s) origin such as https://sentry.example.com",
                    ));
                }
                if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
                    return Err(bad(
                        "must be the origin only (no path, query or fragment): guardian adds /api/0/...",
                    ));
                }
                if !parsed.username().is_empty() || parsed.password().is_some() {
                    return Err(bad(
                        "must not hold credentials: the token goes in auth_token_file",
                    ));
                }
                url.trim_end_matches('/').to_owned()
            }
        };
        let poll_secs = match self.poll_secs.take() {
            None => 30,
            Some(n) if (5..=3600).contains(&n) => n as u32,
            Some(n) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "poll_secs",
                    format!("must be whole seconds from 5 to 3600, got {n}"),
                ))
            }
        };
        let environment = match self.environment.take() {
            None => None,
            Some(e)
                if (1..=64).contains(&e.len())
                    && e.bytes().all(|b| b.is_ascii_graphic() && b != b'"') =>
            {
                Some(e)
            }
            Some(e) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "environment",
                    format!("must be an environment's name (1 to 64 printable characters, no spaces or quotes), got {e:?}"),
                ))
            }
        };
        Ok(Some(SentryApiSettings {
            api_url,
            org,
            project,
            auth_token_file,
            poll_secs,
            environment,
        }))
    }
}

impl RawSentry {
    pub fn validate(mut self) -> Result<SentrySettings, ConfigError> {
        const SECTION: &str = "daemon.sentry";
        let api = self.api()?;
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
            api,
        })
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::SentryProject;
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

    #[test]
    fn polling_sentrys_api_takes_all_its_keys_or_none() {
        let parse = |body: &str| {
            Config::parse(&format!(
                "[daemon]\n[daemon.sentry]\nclient_secret_file = \"/s\"\n{body}\n"
            ))
            .unwrap()
            .daemon
            .unwrap()
            .sentry
            .unwrap()
            .api
        };
        assert_eq!(parse(""), None, "webhooks alone");
        let api =
            parse("org = \"acme\"\nproject = \"shop-api\"\nauth_token_file = \"/t\"").unwrap();
        assert_eq!(
            (api.api_url.as_str(), api.poll_secs, &api.project),
            (
                "https://sentry.io",
                30,
                &SentryProject::Slug("shop-api".into())
            )
        );
        let api = parse(
            "api_url = \"https://sentry.example.com/\"\norg = \"acme\"\nproject_id = 42\n\
             auth_token_file = \"/t\"\npoll_secs = 10\nenvironment = \"production\"",
        )
        .unwrap();
        assert_eq!(api.api_url, "https://sentry.example.com");
        assert_eq!(api.project, SentryProject::Id(42));
        assert_eq!(api.environment.as_deref(), Some("production"));
        let sentry = |body: &str| {
            err(&format!(
                "[daemon]\n[daemon.sentry]\nclient_secret_file = \"/s\"\n{body}\n"
            ))
        };
        let full = "org = \"acme\"\nproject = \"shop\"\nauth_token_file = \"/t\"\n";
        expect!["[daemon.sentry] org is missing: polling Sentry's API needs the organization's slug (or set none of org, project, auth_token_file, poll_secs, environment, api_url)"]
            .assert_eq(&sentry("poll_secs = 30"));
        expect!["[daemon.sentry] auth_token_file is missing: polling Sentry's API needs the file holding an auth token with org:read and event:read (or set none of org, project, auth_token_file, poll_secs, environment, api_url)"]
            .assert_eq(&sentry("org = \"acme\"\nproject = \"shop\""));
        expect!["[daemon.sentry] project is missing: polling Sentry's API needs the project's slug (or project_id) (or set none of org, project, auth_token_file, poll_secs, environment, api_url)"]
            .assert_eq(&sentry("org = \"acme\"\nauth_token_file = \"/t\""));
        expect!["[daemon.sentry] project_id and project both name the project: set one"]
            .assert_eq(&sentry(&format!("{full}project_id = 3")));
        expect![[r#"[daemon.sentry] org must be a Sentry slug (letters, digits, - and _), got "acme/../x""#]]
            .assert_eq(&sentry("org = \"acme/../x\"\nproject = \"shop\"\nauth_token_file = \"/t\""));
        expect!["[daemon.sentry] poll_secs must be whole seconds from 5 to 3600, got 1"]
            .assert_eq(&sentry(&format!("{full}poll_secs = 1")));
        expect![[r#"[daemon.sentry] api_url must be the origin only (no path, query or fragment): guardian adds /api/0/..., got "https://sentry.io/api/0""#]]
            .assert_eq(&sentry(&format!("{full}api_url = \"https://sentry.io/api/0\"")));
        expect![[r#"[daemon.sentry] api_url must be an http(s) origin such as https://sentry.example.com, got "ftp://sentry.io""#]]
            .assert_eq(&sentry(&format!("{full}api_url = \"ftp://sentry.io\"")));
    }
}
