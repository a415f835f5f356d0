//! `[daemon.gate]`: the trust gate's settings: the sandbox policy file, the agent's and the
//! approvers' tokens, shadow mode, approval links, stricter tolerances for AI changes; and what
//! only makes sense checked against `[detector]` and the known fix patterns.

use std::path::PathBuf;

use super::{ConfigError, RawGate};
use crate::core::DetectorSettings;

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

/// A person's name as a token's owner (`approvers`, `viewers`): it goes into the audit trail
/// as `approver:NAME`, so it is a plain word.
pub(super) fn check_person_name(
    section: &'static str,
    key: &'static str,
    name: &str,
) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if ok {
        return Ok(());
    }
    Err(ConfigError::invalid(
        section,
        key,
        format!("{name:?} is not a usable name: letters, digits, - _ . @, at most 64"),
    ))
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
            check_person_name(SECTION, "approvers", name)?;
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

/// What `[daemon.gate]` says that only makes sense next to `[detector]` and the patterns: a
/// misspelled shadow pattern would leave the real one deploying for real, and an "AI
/// tolerance" looser than everyone's would make AI changes the less watched ones.
pub(super) fn check_gate_against_detector(
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

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use crate::config::testing::err;
    use crate::config::Config;

    #[test]
    fn the_gate_refuses_an_unknown_shadow_pattern_and_a_looser_ai_tolerance() {
        let gate = |body: &str| {
            err(&format!(
                "[daemon]\nstate_dir = \"/tmp\"\n[daemon.gate]\npolicy_file = \"/p\"\n{body}"
            ))
        };
        expect![[r#"[daemon.gate] shadow_patterns "nil-chek" is not a fix pattern; they are nil-check, timeout-bump, retry-wrap, feature-flag-off, other"#]].assert_eq(&gate("shadow_patterns = [\"nil-chek\"]"));
        expect!["[daemon.gate] ai_error_tolerance is 0.5, looser than the 0.1 [detector] gives every change: AI changes may be watched more strictly, not less"].assert_eq(&gate("ai_error_tolerance = 0.5"));
        let ok = Config::parse(
            "[daemon]\n[daemon.gate]\npolicy_file = \"/p\"\nai_error_tolerance = 0.05\n\
             shadow_patterns = [\"nil-check\"]\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }
}
