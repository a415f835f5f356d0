//! What the agent's command reads on its standard input: one JSON document, [`AgentInput`],
//! versioned by `schema`. A field added later is optional; a field's meaning never changes
//! within a schema version. Everything in it is what the agent could ask the API for with its
//! own token (`GET /v1/trust`, `GET /v1/deployed`, `POST /v1/policy/paths`), handed over at
//! once so that a command needs no client to start.

use serde::{Deserialize, Serialize};

use crate::api::{Deployed, PatternTrust};
use crate::sentry::Issue;

/// The version of [`AgentInput`] this guardian writes.
pub const SCHEMA: u32 = 1;

/// The agent's input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentInput {
    /// [`SCHEMA`].
    pub schema: u32,
    /// This run's id (`agr_...`), also in `GUARDIAN_RUN`.
    pub run: String,
    /// The service guardian watches (`[daemon] service`).
    pub service: String,
    /// Why the agent runs: `new` (a new issue), `reappeared` (it came back after a run).
    pub reason: String,
    pub issue: IssueInput,
    pub stack: StackInput,
    /// The sandbox policy as the gate has it loaded: what a fix may touch and how big it may
    /// be. `None` only if the gate has none loaded.
    pub policy: Option<PolicyInput>,
    /// The trust ledger, as `GET /v1/trust` answers it.
    pub trust: Vec<PatternTrust>,
    /// What is deployed (`GET /v1/deployed`): the commit a fix must be based on. `None` when
    /// guardian deploys nothing (no `[daemon.rollback]`) or its clone could not be read (the
    /// daemon's log says why).
    pub deployed: Option<Deployed>,
}

/// The Sentry issue, as guardian keeps it (Sentry's last description, completed by events).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IssueInput {
    pub id: String,
    pub short_id: Option<String>,
    pub title: String,
    pub culprit: Option<String>,
    pub level: Option<String>,
    pub status: Option<String>,
    pub project: Option<String>,
    /// Unix seconds.
    pub first_seen: f64,
    pub last_seen: Option<f64>,
    /// Events so far, as Sentry counts them (when an `issue` delivery said).
    pub count: Option<u64>,
    /// Events guardian was told of one by one (`error` and `event_alert` deliveries).
    pub events_stored: u64,
    pub web_url: Option<String>,
}

impl IssueInput {
    pub fn of(issue: &Issue, events_stored: u64) -> IssueInput {
        IssueInput {
            id: issue.id.clone(),
            short_id: issue.short_id.clone(),
            title: issue.title.clone(),
            culprit: issue.culprit.clone(),
            level: issue.level.clone(),
            status: issue.status.clone(),
            project: issue.project.clone(),
            first_seen: issue.first_seen,
            last_seen: issue.last_seen,
            count: issue.count,
            events_stored,
            web_url: issue.web_url.clone(),
        }
    }
}

/// Where in the code: what guardian stored of the latest event's stack trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StackInput {
    /// The in-app files, newest frame (where it broke) first.
    pub in_app_files: Vec<String>,
}

/// The sandbox policy's rules a fix is judged by, as loaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyInput {
    /// The SHA-256 of the policy file as loaded (on the audit trail as `policy_loaded`).
    pub sha256: String,
    /// Globs: a path no `allow` glob matches is denied; `deny` wins and ignores case.
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// Paths no policy opens: guardian's own files in the repository, each with what it is
    /// (git's own files, `.git`, `.gitattributes` and the like, are never open either).
    pub never: Vec<NeverPath>,
    /// Distinct files, and added plus removed lines, a change may have.
    pub max_files: usize,
    pub max_lines: usize,
    /// `deny`, `needs_approval` or `allow`.
    pub new_dependencies: String,
    pub schema_changes: String,
    /// Globs where binary files may change.
    pub binary: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NeverPath {
    pub path: String,
    pub what: String,
}

impl PolicyInput {
    pub fn of(
        policy: &crate::trust::policy::Policy,
        sha256: &str,
        never: &crate::trust::NeverList,
    ) -> PolicyInput {
        let action = |a: crate::trust::policy::RuleAction| {
            serde_json::to_value(a)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        PolicyInput {
            sha256: sha256.to_owned(),
            allow: policy.paths.allow_globs().to_vec(),
            deny: policy.paths.deny_globs().to_vec(),
            never: never
                .host
                .iter()
                .map(|(path, what)| NeverPath {
                    path: path.clone(),
                    what: what.clone(),
                })
                .collect(),
            max_files: policy.limits.max_files,
            max_lines: policy.limits.max_lines,
            new_dependencies: action(policy.content.new_dependencies),
            schema_changes: action(policy.content.schema_changes),
            binary: policy.content.binary_globs.clone(),
        }
    }
}
