//! A deploy notification as the API and `guardian notify` send it, checked before the engine
//! acts on it.

use serde::{Deserialize, Serialize};

use crate::core::Landing;
use crate::store::ChangeKind;

/// A deploy notification, as the API and `guardian notify` send it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    /// The commit (or range `A..B`) that was deployed.
    pub commit: String,
    #[serde(default = "default_kind")]
    pub kind: ChangeKind,
    pub pattern: Option<String>,
    pub summary: Option<String>,
    /// The proposal this deploy carries out (shadow mode: the team deploys, guardian watches).
    #[serde(default)]
    pub proposal: Option<String>,
    /// When the deploy began, unix seconds: the traffic from then to the notification (the
    /// restart) is neither baseline nor watch. Without it, `deploy_guard_secs` before.
    #[serde(default)]
    pub deploy_started_at: Option<f64>,
    /// The Sentry issue it fixes (its id, short id or link): the watch then judges whether
    /// it stopped, and a fix that did not stop it is `ineffective`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue: Option<String>,
    /// The feature flag the change is behind: when it regresses, guardian turns the flag off
    /// first (`[daemon.flag_off]`) and reverts only if that did not help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
}

/// How long before its notification a deploy may have begun: longer is far likelier a wrong
/// time than a deploy, and would leave no baseline before it.
pub const MAX_DEPLOY_SECS: f64 = 6.0 * 3600.0;
/// A deploy start this far after the notification is the two clocks disagreeing a little.
const DEPLOY_CLOCK_SLACK_SECS: f64 = 5.0;

fn default_kind() -> ChangeKind {
    ChangeKind::Human
}

impl ChangeRequest {
    /// Refuses requests a person should fix, saying which field and why.
    pub fn validate(&self) -> Result<(), String> {
        let commit = self.commit.trim();
        let is_rev =
            |r: &str| (4..=64).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_hexdigit());
        let ok = match commit.split_once("..") {
            Some((a, b)) => is_rev(a) && is_rev(b),
            None => is_rev(commit),
        };
        if !ok {
            return Err(format!(
                "\"commit\" must be a commit id (4 to 64 hex digits) or a range A..B of them, got {commit:?}"
            ));
        }
        for (field, value, max) in [
            ("pattern", &self.pattern, 64),
            ("summary", &self.summary, 2000),
        ] {
            if value.as_ref().is_some_and(|v| v.chars().count() > max) {
                return Err(format!("\"{field}\" must be at most {max} characters"));
            }
            if let Some(v) = value {
                super::gate::one_line(field, v.trim())?;
            }
        }
        if let Some(issue) = &self.issue {
            super::gate::issue_reference(issue)?;
        }
        if let Some(flag) = &self.flag {
            crate::config::check_flag_name(flag).map_err(|e| format!("\"flag\" {e}"))?;
        }
        Ok(())
    }

    /// The change's landing at `now`, with its deploy's start checked against `now`.
    pub fn landing(&self, now: f64) -> Result<Landing, String> {
        let Some(started) = self.deploy_started_at else {
            return Ok(Landing::at(now));
        };
        if !started.is_finite() {
            return Err(format!(
                "\"deploy_started_at\" must be unix seconds, got {started}"
            ));
        }
        if started > now + DEPLOY_CLOCK_SLACK_SECS {
            return Err(format!(
                "\"deploy_started_at\" {started} is {:.0} s after now ({now:.0}): a deploy \
                 starts before it is notified",
                started - now
            ));
        }
        if started < now - MAX_DEPLOY_SECS {
            return Err(format!(
                "\"deploy_started_at\" {started} is {:.0} s before now ({now:.0}), more than \
                 the {MAX_DEPLOY_SECS:.0} s a deploy may take; is it in seconds?",
                now - started
            ));
        }
        Ok(Landing {
            at: now,
            deploy_started_at: Some(started.min(now)),
        })
    }
}
