//! `[[daemon.notify]]`: where a change's outcome is told besides email. Each target is a
//! generic webhook (JSON, signed), a Slack incoming webhook or an Alertmanager, with the change
//! states it is told of (by severity, or listed).

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use crate::change::ChangeState;

const SECTION: &str = "daemon.notify";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub url: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub min_severity: Option<String>,
    pub states: Option<Vec<String>>,
    pub timeout_secs: Option<i64>,
}

/// One place outcomes are told.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifyTarget {
    /// Unique among the targets: what the outbox and the logs call it.
    pub name: String,
    pub kind: NotifyKind,
    /// The webhook's URL; for Alertmanager, its base (`/api/v2/alerts` is added).
    pub url: String,
    /// The change states told, each once per change.
    pub states: Vec<ChangeState>,
    pub timeout_secs: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NotifyKind {
    /// JSON, signed with HMAC-SHA256 over the timestamp and the body when a secret is set.
    Webhook { secret_file: Option<PathBuf> },
    /// A Slack incoming webhook: Block Kit.
    Slack,
    /// Alertmanager's `POST /api/v2/alerts`: firing while a person is needed or a change is
    /// being undone, resolved when the service recovered.
    Alertmanager,
}

impl NotifyKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            NotifyKind::Webhook { .. } => "webhook",
            NotifyKind::Slack => "slack",
            NotifyKind::Alertmanager => "alertmanager",
        }
    }
}

/// How much a change's state asks of the people told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// The severity of reaching `state`; `None`: a step on the way, never told.
    pub fn of(state: ChangeState) -> Option<Severity> {
        use ChangeState::*;
        match state {
            Regressed | Escalated => Some(Severity::Critical),
            RolledBack | FlaggedOff | Ineffective | Inconclusive => Some(Severity::Warning),
            Healthy => Some(Severity::Info),
            Watching | Superseded | Interrupted | FlaggingOff | RollingBack | Verifying => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    fn parse(text: &str) -> Option<Severity> {
        match text {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// The states a target is told of when it lists none: warning and above.
fn states_from(min: Severity) -> Vec<ChangeState> {
    ChangeState::ALL
        .iter()
        .copied()
        .filter(|&s| Severity::of(s).is_some_and(|sev| sev >= min))
        .collect()
}

/// Validates the targets, in order; names are unique (by default the kind, then `kind-2`...).
pub fn validate(raw: Vec<RawNotify>) -> Result<Vec<NotifyTarget>, ConfigError> {
    let mut targets: Vec<NotifyTarget> = Vec::new();
    for r in raw {
        let target = r.validate(&targets)?;
        targets.push(target);
    }
    Ok(targets)
}

impl RawNotify {
    fn validate(self, before: &[NotifyTarget]) -> Result<NotifyTarget, ConfigError> {
        let kind = match self.kind.as_deref() {
            Some("webhook") => NotifyKind::Webhook {
                secret_file: self.secret_file,
            },
            Some(other @ ("slack" | "alertmanager")) => {
                if self.secret_file.is_some() {
                    return Err(ConfigError::invalid(
                        SECTION,
                        "secret_file",
                        format!("signs a kind = \"webhook\" target's requests, not a {other}'s"),
                    ));
                }
                if other == "slack" {
                    NotifyKind::Slack
                } else {
                    NotifyKind::Alertmanager
                }
            }
            Some(other) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "kind",
                    format!("must be \"webhook\", \"slack\" or \"alertmanager\", got {other:?}"),
                ))
            }
            None => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "kind",
                    "is missing: \"webhook\", \"slack\" or \"alertmanager\"",
                ))
            }
        };
        let url = self.url.unwrap_or_default();
        let parsed = url::Url::parse(&url).map_err(|e| {
            ConfigError::invalid(
                SECTION,
                "url",
                format!("must be an http:// or https:// URL, got {url:?} ({e})"),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(ConfigError::invalid(
                SECTION,
                "url",
                format!("must be an http:// or https:// URL with a host, got {url:?}"),
            ));
        }
        let url = match kind {
            // Alertmanager's base, as its users write it: the API path is guardian's to add.
            NotifyKind::Alertmanager => url.trim_end_matches('/').to_owned(),
            _ => url,
        };
        let name = match self.name {
            Some(name) => {
                if name.is_empty()
                    || name.len() > 40
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                {
                    return Err(ConfigError::invalid(
                        SECTION,
                        "name",
                        format!("must be 1 to 40 ASCII letters, digits, - and _, got {name:?}"),
                    ));
                }
                if before.iter().any(|t| t.name == name) {
                    return Err(ConfigError::invalid(
                        SECTION,
                        "name",
                        format!("{name:?} names two targets: give each its own"),
                    ));
                }
                name
            }
            None => {
                let base = kind.as_str();
                let taken = |n: &str| before.iter().any(|t| t.name == n);
                (1..)
                    .map(|i| {
                        if i == 1 {
                            base.to_owned()
                        } else {
                            format!("{base}-{i}")
                        }
                    })
                    .find(|n| !taken(n))
                    .unwrap_or_default()
            }
        };
        let states = match (self.states, self.min_severity) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "states",
                    "and min_severity both choose what is told: set one",
                ))
            }
            (Some(list), None) => {
                let mut states = Vec::new();
                for text in list {
                    let state = ChangeState::ALL
                        .iter()
                        .copied()
                        .find(|s| s.as_str() == text && Severity::of(*s).is_some());
                    match state {
                        Some(s) if !states.contains(&s) => states.push(s),
                        Some(_) => {}
                        None => {
                            let told: Vec<&str> = ChangeState::ALL
                                .iter()
                                .filter(|s| Severity::of(**s).is_some())
                                .map(|s| s.as_str())
                                .collect();
                            return Err(ConfigError::invalid(
                                SECTION,
                                "states",
                                format!("{text:?} is not a state told: one of {}", told.join(", ")),
                            ));
                        }
                    }
                }
                if states.is_empty() {
                    return Err(ConfigError::invalid(
                        SECTION,
                        "states",
                        "is empty: list the states to tell, or remove the target",
                    ));
                }
                states
            }
            (None, Some(text)) => match Severity::parse(&text) {
                Some(min) => states_from(min),
                None => {
                    return Err(ConfigError::invalid(
                        SECTION,
                        "min_severity",
                        format!("must be \"info\", \"warning\" or \"critical\", got {text:?}"),
                    ))
                }
            },
            (None, None) => states_from(Severity::Warning),
        };
        let timeout_secs = match self.timeout_secs {
            None => 10,
            Some(n) if (1..=120).contains(&n) => n as u32,
            Some(n) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "timeout_secs",
                    format!("must be whole seconds from 1 to 120, got {n}"),
                ))
            }
        };
        Ok(NotifyTarget {
            name,
            kind,
            url,
            states,
            timeout_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::config::Config;

    fn targets(body: &str) -> Vec<NotifyTarget> {
        Config::parse(&format!("[daemon]\n{body}"))
            .unwrap()
            .daemon
            .unwrap()
            .notify
    }

    fn err(body: &str) -> String {
        Config::parse(&format!("[daemon]\n{body}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn each_target_is_told_warning_and_above_by_default_under_a_name_of_its_own() {
        let t = targets(
            "[[daemon.notify]]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/x\"\n\
             [[daemon.notify]]\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:9093/\"\n\
             [[daemon.notify]]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/y\"\n\
             min_severity = \"critical\"\n",
        );
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["slack", "alertmanager", "slack-2"]);
        let states: Vec<&str> = t[0].states.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            states,
            [
                "regressed",
                "ineffective",
                "inconclusive",
                "flagged_off",
                "rolled_back",
                "escalated"
            ]
        );
        assert_eq!(t[1].url, "http://127.0.0.1:9093", "the API path is added");
        assert_eq!(
            t[2].states,
            [ChangeState::Regressed, ChangeState::Escalated]
        );
    }

    #[test]
    fn a_target_that_cannot_work_is_refused_naming_the_key() {
        expect![[
            r#"[daemon.notify] kind must be "webhook", "slack" or "alertmanager", got "teams""#
        ]]
        .assert_eq(&err(
            "[[daemon.notify]]\nkind = \"teams\"\nurl = \"http://a/\"\n",
        ));
        expect![[r#"[daemon.notify] url must be an http:// or https:// URL with a host, got "file:///tmp/x""#]]
            .assert_eq(&err("[[daemon.notify]]\nkind = \"webhook\"\nurl = \"file:///tmp/x\"\n"));
        expect![[r#"[daemon.notify] states "rolling_back" is not a state told: one of healthy, regressed, ineffective, inconclusive, flagged_off, rolled_back, escalated"#]]
            .assert_eq(&err(
                "[[daemon.notify]]\nkind = \"webhook\"\nurl = \"http://a/\"\nstates = [\"rolling_back\"]\n",
            ));
        expect![[r#"[daemon.notify] secret_file signs a kind = "webhook" target's requests, not a slack's"#]]
            .assert_eq(&err(
                "[[daemon.notify]]\nkind = \"slack\"\nurl = \"http://a/\"\nsecret_file = \"/etc/x\"\n",
            ));
        expect![[r#"[daemon.notify] name "ops" names two targets: give each its own"#]].assert_eq(
            &err(
                "[[daemon.notify]]\nname = \"ops\"\nkind = \"slack\"\nurl = \"http://a/\"\n\
                 [[daemon.notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"http://b/\"\n",
            ),
        );
    }
}
