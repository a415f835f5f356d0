//! The engine's side of the trust gate: a proposal comes in, is judged by the policy
//! (`trust::assess`, pure) against the ledger and the moment, stored with its decision, decided
//! by a person when it needs one, then deployed from guardian's own clone and watched like any
//! change. In shadow mode everything is decided and recorded and nothing is done.
//!
//! Here: judging and storing a proposal, deciding it, the ledger. `request` is the proposal as
//! it comes in, `never` guardian's own files no proposal may touch, `deploy` the deploy of an
//! approved one, `mail` the emails about proposals.

mod deploy;
mod mail;
mod never;
mod request;

use crate::trust::Assessment;
pub use deploy::{DeployJob, DeployReport};
use mail::{first_line, proposal_text};
pub use never::host_never_list;
pub use request::{issue_reference, one_line, ProposalRequest};

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Engine, EngineError, NamedIssue};
use crate::gate::ledger::{self, Level, PatternTrust};
use crate::gate::proposals::{NewProposal, ProposalError, ProposalRecord, ProposalState};
use crate::gate::roles::Role;
use crate::store::ChangeKind;
use crate::trust::{self, Decision, Pattern, Policy};

/// How far back recent regressions count against a proposal.
const RECENT_SECS: f64 = 86_400.0;

/// A proposal with its diff, for a person deciding on it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProposalView {
    #[serde(flatten)]
    pub record: ProposalRecord,
    pub patch: String,
}

/// What judging a proposal needs from the engine, copied out in one cheap call so that the
/// judging itself (git, and rules whose cost grows with the change) runs away from the engine's
/// owner: guardian's clone, the policy and the paths no policy opens.
pub struct JudgingKit {
    clone: Option<std::path::PathBuf>,
    policy: Option<(Policy, String)>,
    never: trust::NeverList,
    service: String,
}

/// What git, the parser and the rules make of a proposal, worked out by [`judge`] off the
/// engine's owner: what the rules found in the tree git made of it, or why there is none.
pub enum Judged {
    Examined {
        examination: Box<trust::Examination>,
        /// The policy it was examined under.
        policy_sha256: String,
    },
    /// The patch is refused before it can be judged (unreadable, or git does not apply it):
    /// a denied proposal on the record, with this reason.
    Refused(String),
}

/// Reads a proposal, applies it in a scratch index of guardian's clone and runs every rule
/// that reads the change. Runs git and costs what the change costs, so it must not run on the
/// engine's owner: the HTTP handler calls it on a blocking thread with the [`JudgingKit`],
/// then hands the result to [`Engine::propose`].
pub fn judge(kit: &JudgingKit, request: &ProposalRequest) -> Result<Judged, EngineError> {
    let pattern = request.validate().map_err(EngineError::BadRequest)?;
    let Some((policy, policy_sha256)) = &kit.policy else {
        return Err(no_gate());
    };
    let diff = match trust::diff::parse(&request.patch) {
        Ok(d) => d,
        // A patch the parser refuses is refused for what it tries (a path out of the tree,
        // a header that disagrees with itself, ...): a denied proposal on the record, not
        // just a bad request.
        Err(e) => return Ok(Judged::Refused(e.to_string())),
    };
    let Some(clone) = &kit.clone else {
        return Err(EngineError::BadRequest(
            "proposals need [daemon.rollback] repo: guardian's own clone to apply them in"
                .to_owned(),
        ));
    };
    let repo = crate::git::Repo::open(clone)
        .map_err(|e| EngineError::BadRequest(format!("cannot read guardian's clone: {e}")))?;
    let base = request.base.trim();
    let named: Vec<String> = diff.facts().paths;
    let tree = match repo.scratch_apply(base, &request.patch, &named) {
        Ok(crate::git::Scratch::Applied(tree)) => tree,
        Ok(crate::git::Scratch::Refused(why)) => return Ok(Judged::Refused(why)),
        Err(e) => {
            return Err(EngineError::BadRequest(format!(
                "\"base\" {base} cannot be read in guardian's clone {} (fetch it first?): {e}",
                clone.display()
            )))
        }
    };
    let facts = trust::ProposalFacts {
        service: kit.service.clone(),
        pattern,
        tests_run: request.tests_run,
    };
    Ok(Judged::Examined {
        examination: Box::new(trust::examine(policy, &kit.never, &facts, &diff, &tree)),
        policy_sha256: policy_sha256.clone(),
    })
}

fn no_gate() -> EngineError {
    EngineError::BadRequest(
        "this guardian takes no proposals: its config has no [daemon.gate] section".to_owned(),
    )
}

/// Paths checked at once, at most (`check_paths`).
const MAX_PATHS_CHECKED: usize = 1000;

/// Where a path stands under the policy (`POST /v1/policy/paths`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathCheck {
    pub path: String,
    /// `allow` or `deny`.
    pub verdict: String,
    /// Why it is denied: the rule, naming the glob or guardian's file.
    pub why: Option<String>,
    /// The risk a critical path adds (more risk may mean a person must approve).
    pub critical: Option<String>,
}

/// The gate's decision on a judged request, or why the patch was refused unread.
enum Assessed {
    Judged {
        assessment: Box<Assessment>,
        tree_sha: String,
        policy_sha256: String,
    },
    Refused(String),
}

/// The policy file's text and what it says, read at start and on reload.
pub struct LoadedPolicy {
    pub policy: Policy,
    pub sha256: String,
}

/// Reads and checks the policy file; the message names the file and the key.
pub fn load_policy(path: &std::path::Path) -> Result<LoadedPolicy, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the policy file {}: {e}", path.display()))?;
    let policy = Policy::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(LoadedPolicy {
        policy,
        sha256: hex(&Sha256::digest(text.as_bytes())),
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The policy's part in the trust ledger: how many approved healthy changes promote a
/// pattern, and the patterns that always need a person.
#[derive(Clone, Debug)]
pub struct TrustRules {
    pub promote_after: u32,
    pub human_only: Vec<String>,
}

/// The trust ledger read from `store` (the engine's, or a read-only one beside it) under
/// `rules`. Its cost does not grow with the number of proposals (`Store::ledger_tally`).
pub fn trust_ledger(
    store: &crate::store::Store,
    rules: &TrustRules,
) -> Result<Vec<PatternTrust>, EngineError> {
    let mut ledger = ledger::standing(&store.ledger_tally()?, rules.promote_after);
    for t in &mut ledger {
        if rules.human_only.contains(&t.pattern) {
            t.level = Level::NeedsApproval;
            t.why = format!("the policy says \"{}\" always needs a person", t.pattern);
        }
    }
    Ok(ledger)
}

/// A proposal with its diff, read from `store`.
pub fn proposal_view(store: &crate::store::Store, id: &str) -> Result<ProposalView, EngineError> {
    let record = store.get_proposal(id)?;
    Ok(ProposalView {
        patch: record.patch.clone(),
        record,
    })
}

/// What an approval link would do, read from `store`, for the page that asks to confirm it.
pub fn link_page(
    store: &crate::store::Store,
    secret: &str,
    now: f64,
) -> Result<(crate::gate::links::LinkGrant, ProposalView), EngineError> {
    let grant = store.peek_approval_link(secret, now)?;
    let view = proposal_view(store, &grant.proposal_id)?;
    Ok((grant, view))
}

impl From<ProposalError> for EngineError {
    fn from(e: ProposalError) -> Self {
        match e {
            ProposalError::Store(s) => EngineError::Store(s),
            ProposalError::NotFound(id) => {
                EngineError::NotFound(format!("no proposal with id {id:?}"))
            }
            ProposalError::Conflict(m) => EngineError::Conflict(m),
            ProposalError::Forbidden(m) => EngineError::Forbidden(m),
        }
    }
}

impl Engine {
    fn gate_policy(&self) -> Result<&LoadedPolicy, EngineError> {
        self.policy.as_ref().ok_or_else(no_gate)
    }

    pub(super) fn is_shadow(&self, pattern: Option<&str>) -> bool {
        self.settings
            .gate
            .as_ref()
            .is_some_and(|g| g.is_shadow(pattern))
    }

    /// The trust ledger as it stands: every pattern, its record, and why it is where it is.
    pub fn trust(&self) -> Result<Vec<PatternTrust>, EngineError> {
        trust_ledger(&self.store, &self.trust_rules())
    }

    /// What the policy says about trust, for [`trust_ledger`] (cheap: a copy of two settings).
    pub fn trust_rules(&self) -> TrustRules {
        match &self.policy {
            Some(p) => TrustRules {
                promote_after: p.policy.trust.promote_after,
                human_only: p
                    .policy
                    .trust
                    .human_only
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect(),
            },
            None => TrustRules {
                promote_after: u32::MAX,
                human_only: Vec::new(),
            },
        }
    }

    /// What [`judge`] needs, copied out (a clone of the policy: microseconds).
    /// guardian's clone, where what is deployed is committed (`[daemon.rollback] repo`).
    pub fn deploy_repo(&self) -> Option<std::path::PathBuf> {
        self.settings.rollback.as_ref().map(|r| r.repo.clone())
    }

    pub fn judging_kit(&self) -> JudgingKit {
        JudgingKit {
            clone: self.settings.rollback.as_ref().map(|r| r.repo.clone()),
            policy: self
                .policy
                .as_ref()
                .map(|p| (p.policy.clone(), p.sha256.clone())),
            never: self.never.clone(),
            service: self.settings.service.clone(),
        }
    }

    /// Protects guardian's own files in the deployed repository, now that the configuration
    /// file is known too; returns the warnings to print at start.
    pub fn protect_host_files(&mut self, config_file: Option<&std::path::Path>) -> Vec<String> {
        let (never, warnings) = host_never_list(&self.settings, config_file);
        self.never = never;
        warnings
    }

    /// Decides a proposal from what [`judge`] found in it (outside the owner) and the moment,
    /// and stores it with the decision. No git and no rule that reads the change runs here:
    /// the ledger and the store only. Denied proposals are final; those needing approval wait
    /// for a person; `auto` ones are queued for deploy (in shadow mode: recorded as what would
    /// have happened).
    pub fn propose(
        &mut self,
        role: &Role,
        request: &ProposalRequest,
        judged: Judged,
        now: f64,
    ) -> Result<ProposalRecord, EngineError> {
        let pattern = request.validate().map_err(EngineError::BadRequest)?;
        self.declarable_flag(request)?;
        // Who wrote the change is the token's to say: the agent's changes are AI changes
        // (stricter tolerances, escalation when inconclusive), whatever the request claims.
        let mut request = request.clone();
        if *role == Role::Agent {
            request.kind = ChangeKind::Ai;
        }
        let request = &request;
        let issue = self.named_issue(role, request)?;
        let (assessment, tree_sha, policy_sha256) =
            match self.assess(request, pattern, judged, now)? {
                Assessed::Judged {
                    assessment,
                    tree_sha,
                    policy_sha256,
                } => (assessment, tree_sha, policy_sha256),
                Assessed::Refused(why) => {
                    return self.deny_unreadable(role, request, pattern, &issue, &why, now)
                }
            };
        let shadow = self.is_shadow(Some(pattern.as_str()));
        let state = match (assessment.decision, shadow) {
            (Decision::Deny, _) => ProposalState::Denied,
            (Decision::NeedsApproval, _) => ProposalState::Pending,
            (Decision::Auto, false) => ProposalState::Approved,
            (Decision::Auto, true) => ProposalState::Shadow,
        };
        let mut assessment_json = serde_json::to_value(&assessment).unwrap_or_default();
        assessment_json["policy_sha256"] = json!(policy_sha256);
        if shadow {
            assessment_json["shadow"] = json!(match assessment.decision {
                Decision::Deny => "would deny",
                Decision::NeedsApproval => "would wait for a person's approval",
                Decision::Auto => "would deploy without a person",
            });
        }
        let record = self.store.insert_proposal(
            &NewProposal {
                decision: assessment.decision.as_str().to_owned(),
                assessment: assessment_json,
                shadow,
                state,
                tree_sha: Some(tree_sha),
                ..request.as_submitted(role, pattern, &issue)
            },
            now,
        )?;
        logged(&record);
        if record.state == ProposalState::Pending {
            self.ask_for_approval(&record, now)?;
        }
        Ok(record)
    }

    /// The issue a proposal names, resolved (`Engine::resolve_issue`). The agent's proposal
    /// while guardian has run it on an issue is that run's fix unless it names another Sentry
    /// issue: were it let off unnamed (or naming a link to another tracker), a fix that did not
    /// stop its issue would never be judged `ineffective`, and the agent could dodge its record
    /// by leaving `issue` out. With several runs under way it must say which.
    pub(in crate::daemon) fn named_issue(
        &self,
        role: &Role,
        request: &ProposalRequest,
    ) -> Result<NamedIssue, EngineError> {
        let named = match request.issue.as_deref() {
            Some(named) => self.resolve_issue(named)?,
            None => NamedIssue::default(),
        };
        if named.sentry.is_some() || *role != Role::Agent {
            return Ok(named);
        }
        let running: Vec<(&str, &str)> =
            self.agent.iter().flat_map(|a| a.running_issues()).collect();
        match running.as_slice() {
            [] => Ok(named),
            [(issue, _run)] => {
                let issue = self.store.sentry_issue(issue)?;
                Ok(NamedIssue {
                    url: named
                        .url
                        .or_else(|| issue.as_ref().and_then(|i| i.web_url.clone())),
                    sentry: issue.map(|i| i.id),
                })
            }
            several => Err(EngineError::BadRequest(format!(
                "\"issue\" must name a Sentry issue: guardian is running the agent on Sentry \
                 issues {}; name the one this fixes",
                several
                    .iter()
                    .map(|(issue, _)| *issue)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The gate's decision on a judged request (`judge`) as of `now`: the ledger and the moment
    /// added to what the rules found. Records nothing.
    fn assess(
        &self,
        request: &ProposalRequest,
        pattern: Pattern,
        judged: Judged,
        now: f64,
    ) -> Result<Assessed, EngineError> {
        let (examination, examined_under) = match judged {
            Judged::Examined {
                examination,
                policy_sha256,
            } => (examination, policy_sha256),
            Judged::Refused(why) => return Ok(Assessed::Refused(why)),
        };
        let policy_sha256 = self.gate_policy()?.sha256.clone();
        if examined_under != policy_sha256 {
            return Err(EngineError::Conflict(
                "the policy was reloaded while this proposal was being judged; send it again \
                 to have it judged under the policy now in force"
                    .to_owned(),
            ));
        }
        let ledger = self.trust()?;
        let standing = ledger.iter().find(|t| t.pattern == pattern.as_str());
        let loaded = self.gate_policy()?;
        let context = trust::Context {
            now: now.floor() as i64,
            pattern_trusted: standing.is_some_and(|t| {
                loaded.policy.promoted(pattern, t.earned) && t.level == Level::Auto
            }),
            track_record: trust::TrackRecord {
                approved: standing.map_or(0, |t| t.approved),
                healthy: standing.map_or(0, |t| t.healthy),
                rollbacks: standing.map_or(0, |t| t.rollbacks),
            },
            recent_rollbacks: self.store.regressions_since(now - RECENT_SECS)?,
            error_budget_remaining: self.error_budget_remaining(now),
            traffic_ratio: self.traffic_ratio(now),
        };
        let facts = trust::ProposalFacts {
            service: self.settings.service.clone(),
            pattern,
            tests_run: request.tests_run,
        };
        let tree_sha = examination.tree().to_owned();
        let mut assessment = trust::decide(&loaded.policy, &facts, *examination, &context);
        if request.kind == ChangeKind::Human && assessment.decision == Decision::Auto {
            // The ledger is about AI patterns; a person's change proposed here still gets a
            // second person.
            assessment.decision = Decision::NeedsApproval;
        }
        Ok(Assessed::Judged {
            assessment: Box::new(assessment),
            tree_sha,
            policy_sha256,
        })
    }

    /// Where each path stands under the policy in force, before any diff is written ("may I
    /// touch this?"): guardian's own files first, then `deny`, then `allow`, and the risk a
    /// critical path adds. Only the paths: limits, content rules and symlinks need the diff
    /// (`check_proposal`).
    pub fn check_paths(&self, paths: &[String]) -> Result<Vec<PathCheck>, EngineError> {
        let loaded = self.gate_policy()?;
        if paths.len() > MAX_PATHS_CHECKED {
            return Err(EngineError::BadRequest(format!(
                "at most {MAX_PATHS_CHECKED} paths at a time, got {}",
                paths.len()
            )));
        }
        Ok(paths
            .iter()
            .map(|path| {
                let shown = crate::display::line(path).into_owned();
                let (verdict, why) = if let Err(why) = trust::diff::check_path(path) {
                    // As the diff reader refuses it: no policy glob is asked about it.
                    ("deny", format!("{shown} {why}"))
                } else if let Some(why) = self.never.check(path) {
                    ("deny", why)
                } else {
                    match loaded.policy.paths.check(path) {
                        trust::PathVerdict::Denied(glob) => {
                            ("deny", format!("{shown} matches the deny glob {glob:?}"))
                        }
                        trust::PathVerdict::NotAllowed => (
                            "deny",
                            format!("{shown} matches no allow glob of the policy"),
                        ),
                        trust::PathVerdict::Allowed => ("allow", String::new()),
                    }
                };
                let critical = loaded.policy.risk.criticality(path).map(|(glob, points)| {
                    format!("critical ({glob:?}): adds {points} to the risk score")
                });
                PathCheck {
                    path: shown,
                    verdict: verdict.to_owned(),
                    why: (!why.is_empty()).then_some(why),
                    critical,
                }
            })
            .collect())
    }

    /// What the gate would decide on `request` now, recorded nowhere: "may I propose this?".
    /// A proposal may declare only a flag guardian may turn off: else a regression of its
    /// change would have guardian turn off some other allow-listed flag first (the agent's
    /// way to switch off a feature it does not own).
    fn declarable_flag(&self, request: &ProposalRequest) -> Result<(), EngineError> {
        match (&request.flag, &self.settings.flag_off) {
            (Some(flag), Some(settings)) if !settings.flags.allows(flag) => {
                Err(EngineError::BadRequest(format!(
                    "\"flag\" {flag:?} is not on [daemon.flag_off]'s allow-list (flags = {:?}): \
                     a proposal may declare only a flag guardian may turn off",
                    settings.flags.globs()
                )))
            }
            _ => Ok(()),
        }
    }

    /// The agent's requests are judged as AI changes, as [`Engine::propose`] judges them.
    pub fn check_proposal(
        &self,
        role: &Role,
        request: &ProposalRequest,
        judged: Judged,
        now: f64,
    ) -> Result<Assessment, EngineError> {
        let pattern = request.validate().map_err(EngineError::BadRequest)?;
        self.declarable_flag(request)?;
        // An issue the proposal could not name is refused now, not after the work.
        self.named_issue(role, request)?;
        let mut request = request.clone();
        if *role == Role::Agent {
            request.kind = ChangeKind::Ai;
        }
        Ok(match self.assess(&request, pattern, judged, now)? {
            Assessed::Judged { assessment, .. } => *assessment,
            Assessed::Refused(why) => Assessment {
                decision: Decision::Deny,
                rules: vec![trust::RuleHit {
                    rule: "diff.refused".into(),
                    effect: trust::Effect::Deny,
                    message: why,
                }],
                risk: trust::Risk {
                    score: 100,
                    factors: Vec::new(),
                },
                pattern_check: trust::PatternCheck::NotChecked,
                facts: Default::default(),
                base_tree: String::new(),
                tree: String::new(),
            },
        })
    }

    fn deny_unreadable(
        &mut self,
        role: &Role,
        request: &ProposalRequest,
        pattern: Pattern,
        issue: &NamedIssue,
        problem: &str,
        now: f64,
    ) -> Result<ProposalRecord, EngineError> {
        let policy_sha256 = self.gate_policy()?.sha256.clone();
        let assessment = json!({
            "decision": "deny",
            "rules": [{ "rule": "diff.refused", "effect": "deny", "message": problem }],
            "risk": { "score": 100, "factors": [] },
            "pattern_check": { "result": "not_checked" },
            "facts": {},
            "policy_sha256": policy_sha256,
        });
        let record = self.store.insert_proposal(
            &NewProposal {
                assessment,
                shadow: self.is_shadow(Some(pattern.as_str())),
                ..request.as_submitted(role, pattern, issue)
            },
            now,
        )?;
        logged(&record);
        Ok(record)
    }

    /// A person approves or rejects a proposal, bound to the diff they saw.
    pub fn decide(
        &mut self,
        role: &Role,
        id: &str,
        approve: bool,
        diff_sha256: &str,
        why: Option<&str>,
        now: f64,
    ) -> Result<ProposalRecord, EngineError> {
        self.gate_policy()?;
        let record =
            self.store
                .decide_proposal(id, approve, &role.actor(), diff_sha256, why, now)?;
        if approve && record.shadow {
            // Shadow mode: the approval is on the record (it counts once the team deploys the
            // change and notifies it with this proposal), but guardian deploys nothing.
            return Ok(self.store.advance_proposal(
                id,
                ProposalState::Shadow,
                None,
                Some("approved; shadow mode: guardian does not deploy it"),
                json!({}),
                now,
            )?);
        }
        Ok(record)
    }

    /// Uses an approval link from the email: once, before it expires, for the diff it was
    /// made for.
    pub fn use_link(&mut self, secret: &str, now: f64) -> Result<ProposalRecord, EngineError> {
        let grant = self.store.use_approval_link(secret, now)?;
        let role = Role::Approver("email-link".to_owned());
        let why = (grant.action == "reject").then_some("rejected from the approval email");
        self.decide(
            &role,
            &grant.proposal_id,
            grant.action == "approve",
            &grant.diff_hash,
            why,
            now,
        )
    }

    /// Writes the records of refused requests (`daemon::refusals`: one per token per window).
    /// A failure to record is logged: the refusals themselves stand either way.
    pub fn record_refusals(&mut self, windows: &[crate::daemon::refusals::Window], now: f64) {
        for w in windows {
            if let Err(e) = w.record(&mut self.store, now) {
                tracing::error!(
                    "cannot record {} refused request(s) by {}: {e}",
                    w.total(),
                    w.actor
                );
            }
        }
    }

    pub fn proposals(&self, limit: usize) -> Result<Vec<ProposalRecord>, EngineError> {
        Ok(self.store.recent_proposals(limit)?)
    }

    pub fn proposal(&self, id: &str) -> Result<ProposalView, EngineError> {
        proposal_view(&self.store, id)
    }

    /// Stops (`paused = true`) or resumes guardian deploying proposals; approved ones wait.
    /// Watches and rollbacks go on: the switch is about what guardian ships, not what it undoes.
    pub fn pause(
        &mut self,
        role: &Role,
        paused: bool,
        why: Option<&str>,
        now: f64,
    ) -> Result<Option<(String, String, f64)>, EngineError> {
        let kind = if paused {
            crate::store::EventKind::GatePaused
        } else {
            crate::store::EventKind::GateResumed
        };
        self.store
            .audit(&role.actor(), kind, None, None, &json!({ "why": why }), now)?;
        Ok(self.store.gate_paused()?)
    }

    /// How much of the error budget is left over the traffic guardian has kept (up to 14
    /// days): 1 - errors / (requests x the SLO's error rate). `None` without an SLO or traffic.
    fn error_budget_remaining(&self, now: f64) -> Option<f64> {
        let slo = self.settings.gate.as_ref()?.slo_error_rate?;
        let now = now.floor() as i64;
        let series = self.store.series_between(now - 14 * 86_400, now).ok()?;
        let requests: u64 = series.iter().map(|p| p.requests).sum();
        let errors: u64 = series.iter().map(|p| p.errors).sum();
        (requests > 0).then(|| 1.0 - errors as f64 / (requests as f64 * slo))
    }

    /// Requests in the last ten minutes against the average ten minutes of the day before:
    /// how busy the service is now compared with usual. `None` without a day of history.
    fn traffic_ratio(&self, now: f64) -> Option<f64> {
        let now = now.floor() as i64;
        let recent: u64 = self
            .store
            .series_between(now - 600, now)
            .ok()?
            .iter()
            .map(|p| p.requests)
            .sum();
        let day = self.store.series_between(now - 86_400, now - 600).ok()?;
        if day.len() < 360 {
            return None;
        }
        let per_bin = day.iter().map(|p| p.requests).sum::<u64>() as f64 / day.len() as f64;
        (per_bin > 0.0).then(|| recent as f64 / (per_bin * 60.0))
    }
}

/// A judged proposal goes in the daemon's log: who proposed what, and what the gate made of it.
fn logged(record: &ProposalRecord) {
    tracing::info!(
        proposal_id = %record.id,
        "proposal {} by {} ({}): {}",
        record.id,
        record.proposer,
        record.pattern,
        record.state
    );
}
