//! The HTTP API's requests and answers, as types: one module the server (`daemon::http`) answers
//! with and the CLI (`guardian notify`, `status`, `propose`, `proposals`, `approve`, `reject`,
//! `trust`, `pause`, `resume`) sends requests from and reads answers into. A field renamed on
//! one side is renamed on the other, or does not compile; nothing is read by string key.
//!
//! | endpoint | request | answer |
//! | --- | --- | --- |
//! | `POST /v1/changes` | [`ChangeRequest`] | [`ChangeView`] (201) |
//! | `GET /v1/changes` | | [`ChangeRecord`]s |
//! | `GET /v1/changes/ID` | | [`ChangeView`] |
//! | `POST /v1/observations` | observations as JSON lines read them | [`Accepted`] (202) |
//! | `GET /v1/status` | | [`Status`] |
//! | `POST /v1/proposals` | [`ProposalRequest`] | [`ProposalRecord`] (201) |
//! | `GET /v1/proposals` | | [`ProposalRecord`]s |
//! | `GET /v1/proposals/ID` | | [`ProposalView`] |
//! | `POST /v1/proposals/check` | [`ProposalRequest`] | [`Assessment`]: what the gate would decide, recorded nowhere |
//! | `POST /v1/proposals/ID/approve`, `/reject` | [`DecisionRequest`] | [`ProposalRecord`] |
//! | `GET /v1/trust` | | [`PatternTrust`]s |
//! | `GET /v1/whoami` | | [`WhoAmI`] |
//! | `GET /v1/deployed` | | [`Deployed`] |
//! | `POST /v1/policy/paths` | [`PathsRequest`] | [`PathCheck`]s |
//! | `POST /v1/pause`, `/v1/resume` | [`PauseRequest`] | [`PauseState`] |
//! | `POST /v1/webhooks/sentry` | a Sentry delivery, signed | [`SentryReceipt`] (202) |
//! | any refusal or failure | | [`ErrorAnswer`] |
//!
//! The JSON is what the README documents and scripts read; the router's tests hold every
//! answer to its checked-in form (`tests/it/expected/api_wire.txt`) and read each back into
//! its type. Requests refuse fields they do not know (a typo is named, not ignored); answers
//! ignore them, so a newer daemon's additions do not break an older CLI. Documents stored by
//! the daemon travel as stored (a change's `report`, a proposal's `assessment`) and are read
//! into their types by [`crate::report::evidence::stored`] and [`assessment`].
//!
//! Most types live where they are made (the store's records, the engine's views and requests)
//! and are re-exported here; those made only for the API are defined here.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::core::{BaselinePreview, Report};
pub use crate::daemon::engine::{
    AgentStatus, CanaryNow, ChangeRequest, ChangeView, FlagOffAnswer, FlagOffRequest,
    FlagOffStatus, HealthStatus, HealthTrack, PathCheck, ProposalRequest, ProposalView,
    ReleaseEvents, ScrapeStatus, SentryPollStatus, SentryStatus, SourceStatus, Status,
};
pub use crate::gate::actions::{ActionTrack, Setback};
pub use crate::gate::ledger::{Level, PatternTrust};
pub use crate::gate::proposals::{ProposalRecord, ProposalState};
pub use crate::sentry::Issue as SentryIssue;
pub use crate::store::{ChangeKind, ChangeRecord, ChangeState, FlagAction, FlagTally};
pub use crate::tail::{Position, TailStatus};
pub use crate::trust::{Assessment, Decision, DiffFacts, Effect, Factor, Risk, RuleHit};

/// A person's decision on a proposal: the diff's hash they decided on, and why (a rejection
/// must say).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub diff_sha256: String,
    #[serde(default)]
    pub why: Option<String>,
}

/// Pausing or resuming deploys of proposals, and why (pausing must say: it goes on the audit
/// trail). An empty body is a request without `why`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    #[serde(default)]
    pub why: Option<String>,
}

/// Whether deploys of proposals are paused, by whom and why (both `null` when they are not).
/// The fields are in the order this answer has always been sent in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PauseState {
    pub by: Option<String>,
    pub paused: bool,
    pub why: Option<String>,
}

/// A deploy announced as starting (`POST /v1/deploys`): when, and the change it superseded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployStarting {
    pub at: f64,
    pub superseded: Option<String>,
}

/// How many pushed observations were taken (all of them: one bad one refuses the batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub accepted: usize,
}

/// Paths to check against the policy (`POST /v1/policy/paths`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsRequest {
    pub paths: Vec<String>,
}

/// What is deployed (`GET /v1/deployed`): the HEAD of guardian's clone, the commit a new
/// proposal's `base` should be, rollbacks and deploys included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub commit: String,
}

/// Whose token a request came with (`GET /v1/whoami`): `admin`, `agent`, `approver:NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub role: String,
}

/// A Sentry delivery taken (`POST /v1/webhooks/sentry`, 202).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentryReceipt {
    /// `Sentry-Hook-Resource`, as sent.
    pub resource: String,
    /// The issue it is about, when it is about one.
    pub issue: Option<String>,
    /// Whether guardian uses this resource (`issue`, `error`, `event_alert`); others are
    /// accepted and left alone.
    pub used: bool,
}

/// Every refusal and failure: the status says which kind, the sentence what (naming the field
/// of a bad request).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub error: String,
}

/// A part of the daemon's answer that does not read as the type this guardian expects (a
/// daemon of another version, or a damaged stored document): which part, where in it, and why.
#[derive(Debug, thiserror::Error)]
#[error("the daemon's {part} cannot be read: {error}")]
pub struct UnreadableAnswer {
    part: String,
    error: String,
}

impl UnreadableAnswer {
    /// The part's name as the error says it (`status`, `proposal prp_0123456789ab`, ...).
    pub fn part(&self) -> &str {
        &self.part
    }
}

/// `answer` read as `T`; the error names `part` and the path to what did not read in it
/// (`watching.live.signals[0].e_value: invalid type ...`).
pub fn read<T: DeserializeOwned>(answer: &Value, part: &str) -> Result<T, UnreadableAnswer> {
    serde_path_to_error::deserialize(answer).map_err(|e| {
        let path = e.path().to_string();
        let error = e.into_inner().to_string();
        UnreadableAnswer {
            part: part.to_owned(),
            error: if path == "." {
                error
            } else {
                format!("{path}: {error}")
            },
        }
    })
}

/// A proposal's assessment, read as stored (see [`Assessment`]).
pub fn assessment(proposal: &ProposalRecord) -> Result<Assessment, UnreadableAnswer> {
    read(
        &proposal.assessment,
        &format!("assessment of proposal {}", proposal.id),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn what_does_not_read_is_named_with_where_it_is() {
        let e = read::<PauseState>(&json!({"by": null, "paused": "yes", "why": null}), "pause")
            .unwrap_err();
        assert_eq!(e.part(), "pause");
        assert_eq!(
            e.to_string(),
            "the daemon's pause cannot be read: paused: invalid type: string \"yes\", \
             expected a boolean"
        );
        let e = read::<Accepted>(&json!("accepted"), "answer").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the daemon's answer cannot be read: invalid type: string \"accepted\", expected \
             struct Accepted"
        );
    }

    #[test]
    fn answers_ignore_fields_they_do_not_know_and_requests_refuse_them() {
        let newer = json!({"by": "admin", "paused": true, "why": "freeze", "until": 5});
        assert!(read::<PauseState>(&newer, "pause").unwrap().paused);
        let typo = json!({"diff_sha256": "ab", "wy": "fine"});
        let e = read::<DecisionRequest>(&typo, "decision").unwrap_err();
        assert!(e.to_string().contains("unknown field `wy`"), "{e}");
    }

    #[test]
    fn a_refused_patch_assessment_reads_with_no_facts() {
        let stored = json!({
            "decision": "deny",
            "rules": [{ "rule": "diff.refused", "effect": "deny", "message": "path climbs" }],
            "risk": { "score": 100, "factors": [] },
            "pattern_check": { "result": "not_checked" },
            "facts": {},
            "policy_sha256": "ab12",
        });
        let a: Assessment = read(&stored, "assessment").unwrap();
        assert_eq!(a.decision, Decision::Deny);
        assert_eq!(a.rules[0].effect, Effect::Deny);
        assert_eq!(a.facts, DiffFacts::default());
        assert_eq!((a.base_tree.as_str(), a.tree.as_str()), ("", ""));
    }
}
