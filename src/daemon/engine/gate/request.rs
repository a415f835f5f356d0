//! A proposal as it comes in: the request and what a person must fix in it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::hex;
use crate::daemon::engine::NamedIssue;
use crate::gate::proposals::{NewProposal, ProposalState};
use crate::gate::roles::Role;
use crate::store::ChangeKind;
use crate::trust::{Decision, Pattern};

/// Largest patch accepted: an AI fix is small; the policy's limits are far below this.
pub const MAX_PATCH_BYTES: usize = 512 * 1024;

/// A proposal as the API and `guardian propose` send it: the change as a diff, never as a
/// checkout to run.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalRequest {
    /// The fix pattern claimed: nil-check, timeout-bump, retry-wrap, feature-flag-off, other.
    pub pattern: String,
    /// One line on what it fixes.
    pub summary: String,
    #[serde(default)]
    pub issue_url: Option<String>,
    /// The issue it fixes: a Sentry issue's id, short id or link (the watch then judges
    /// whether it stopped, and a fix that did not stop it is `ineffective`), or a link to
    /// another tracker's issue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue: Option<String>,
    /// The feature flag the change is behind: if it regresses, guardian turns the flag off
    /// first (`[daemon.flag_off]`) and reverts only if that did not help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    /// Whether the proposer ran the tests.
    #[serde(default)]
    pub tests_run: bool,
    /// The commit the diff applies to (in guardian's own clone).
    pub base: String,
    /// The commit in the proposer's repository, for the record.
    #[serde(default)]
    pub commit: Option<String>,
    /// `git diff --full-index --binary BASE COMMIT`.
    pub patch: String,
    #[serde(default = "ai")]
    pub kind: ChangeKind,
}

fn ai() -> ChangeKind {
    ChangeKind::Ai
}

/// Refuses an `issue` that cannot be an issue's id, short id or link: one short line of plain
/// text.
pub fn issue_reference(issue: &str) -> Result<(), String> {
    let plain = !issue
        .chars()
        .any(|c| c.is_whitespace() || crate::display::is_unsafe(c));
    if issue.is_empty() || issue.len() > 2000 || !plain {
        return Err(format!(
            "\"issue\" must be a Sentry issue's id, short id or link, or another tracker's \
             link (no spaces), got {issue:?}"
        ));
    }
    Ok(())
}

/// Refuses a field meant as one line of text that holds a line break, another control
/// character or a bidi override: shown to an approver it could forge lines or hide text.
pub fn one_line(field: &str, text: &str) -> Result<(), String> {
    match text
        .chars()
        .enumerate()
        .find(|(_, c)| crate::display::is_disruptive(*c))
    {
        None => Ok(()),
        Some((i, c)) => Err(format!(
            "\"{field}\" must be one line of plain text: character {} is {} ({}); send one \
             line, without control characters",
            i + 1,
            crate::display::line(&c.to_string()),
            match c {
                '\n' | '\r' => "a line break",
                c if c.is_control() => "a control character",
                _ => "a bidi control, which reorders what is shown",
            }
        )),
    }
}

impl ProposalRequest {
    /// Refuses what a person should fix, naming the field.
    pub(super) fn validate(&self) -> Result<Pattern, String> {
        let pattern = Pattern::parse(self.pattern.trim()).ok_or_else(|| {
            format!(
                "\"pattern\" must be one of {}, got {:?}",
                Pattern::ALL.map(|p| p.as_str()).join(", "),
                self.pattern
            )
        })?;
        let summary = self.summary.trim();
        if summary.is_empty() || summary.chars().count() > 2000 {
            return Err("\"summary\" must be 1 to 2000 characters".to_owned());
        }
        one_line("summary", summary)?;
        let is_sha =
            |s: &str| (7..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_sha(self.base.trim()) {
            return Err(format!(
                "\"base\" must be a commit id (7 to 64 hex digits), got {:?}",
                self.base
            ));
        }
        if let Some(c) = &self.commit {
            if !is_sha(c.trim()) {
                return Err(format!(
                    "\"commit\" must be a commit id (7 to 64 hex digits), got {c:?}"
                ));
            }
        }
        if let Some(url) = &self.issue_url {
            let plain = !url
                .chars()
                .any(|c| c.is_whitespace() || crate::display::is_unsafe(c));
            if !(url.starts_with("https://") || url.starts_with("http://"))
                || url.len() > 2000
                || !plain
            {
                return Err(format!("\"issue_url\" must be an http(s) URL, got {url:?}"));
            }
        }
        if let Some(issue) = &self.issue {
            issue_reference(issue)?;
        }
        if let Some(flag) = &self.flag {
            crate::config::check_flag_name(flag).map_err(|e| format!("\"flag\" {e}"))?;
        }
        if self.patch.len() > MAX_PATCH_BYTES {
            return Err(format!(
                "\"patch\" is {} bytes; at most {MAX_PATCH_BYTES} are accepted",
                self.patch.len()
            ));
        }
        Ok(pattern)
    }

    /// The proposal as submitted, by `role`: denied until the policy says otherwise.
    pub(super) fn as_submitted(
        &self,
        role: &Role,
        pattern: Pattern,
        issue: &NamedIssue,
    ) -> NewProposal {
        NewProposal {
            proposer: role.actor(),
            kind: self.kind,
            pattern: pattern.as_str().to_owned(),
            summary: self.summary.trim().to_owned(),
            issue_url: issue.url.clone().or_else(|| self.issue_url.clone()),
            sentry_issue: issue.sentry.clone(),
            flag: self.flag.clone(),
            tests_run: self.tests_run,
            base_sha: self.base.trim().to_owned(),
            claimed_sha: self.commit.as_ref().map(|c| c.trim().to_owned()),
            patch: self.patch.clone(),
            diff_hash: hex(&Sha256::digest(self.patch.as_bytes())),
            tree_sha: None,
            decision: Decision::Deny.as_str().to_owned(),
            assessment: serde_json::Value::Null,
            shadow: false,
            state: ProposalState::Denied,
        }
    }
}
