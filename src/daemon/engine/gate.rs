//! The engine's side of the trust gate: a proposal comes in, is judged by the policy
//! (`trust::assess`, pure) against the ledger and the moment, stored with its decision, decided
//! by a person when it needs one, then deployed from guardian's own clone and watched like any
//! change. In shadow mode everything is decided and recorded and nothing is done.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Engine, EngineError, Phase};
use crate::gate::ledger::{self, Level, PatternTrust};
use crate::gate::proposals::{NewProposal, ProposalError, ProposalRecord, ProposalState};
use crate::gate::roles::Role;
use crate::store::{ChangeKind, NewChange};
use crate::trust::{self, Decision, Pattern, Policy};

/// Largest patch accepted: an AI fix is small; the policy's limits are far below this.
pub const MAX_PATCH_BYTES: usize = 512 * 1024;
/// How far back recent regressions count against a proposal.
const RECENT_SECS: f64 = 86_400.0;

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
    fn validate(&self) -> Result<Pattern, String> {
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
        if self.patch.len() > MAX_PATCH_BYTES {
            return Err(format!(
                "\"patch\" is {} bytes; at most {MAX_PATCH_BYTES} are accepted",
                self.patch.len()
            ));
        }
        Ok(pattern)
    }

    /// The proposal as submitted, by `role`: denied until the policy says otherwise.
    fn as_submitted(&self, role: &Role, pattern: Pattern) -> NewProposal {
        NewProposal {
            proposer: role.actor(),
            kind: self.kind,
            pattern: pattern.as_str().to_owned(),
            summary: self.summary.trim().to_owned(),
            issue_url: self.issue_url.clone(),
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

/// A proposal with its diff, for a person deciding on it.
#[derive(Debug, Serialize)]
pub struct ProposalView {
    #[serde(flatten)]
    pub record: ProposalRecord,
    pub patch: String,
}

/// What git and the parser make of a proposal, worked out by [`judge`] before the engine's
/// lock is taken: the patch as read and the tree git made of it, or why there is none.
#[derive(Debug)]
pub enum Judged {
    Tree {
        diff: trust::Diff,
        tree: Box<trust::TreeChange>,
    },
    /// The patch is refused before it can be judged (unreadable, or git does not apply it):
    /// a denied proposal on the record, with this reason.
    Refused(String),
}

/// Reads a proposal and applies it in a scratch index of guardian's clone (`clone`). Runs
/// git, so it must not run under the engine's lock: the HTTP handler calls it on a blocking
/// thread, then hands the result to [`Engine::propose`].
pub fn judge(
    clone: Option<&std::path::Path>,
    request: &ProposalRequest,
) -> Result<Judged, EngineError> {
    request.validate().map_err(EngineError::BadRequest)?;
    let diff = match trust::diff::parse(&request.patch) {
        Ok(d) => d,
        // A patch the parser refuses is refused for what it tries (a path out of the tree,
        // a header that disagrees with itself, ...): a denied proposal on the record, not
        // just a bad request.
        Err(e) => return Ok(Judged::Refused(e.to_string())),
    };
    let Some(clone) = clone else {
        return Err(EngineError::BadRequest(
            "proposals need [daemon.rollback] repo: guardian's own clone to apply them in"
                .to_owned(),
        ));
    };
    let repo = crate::git::Repo::open(clone)
        .map_err(|e| EngineError::BadRequest(format!("cannot read guardian's clone: {e}")))?;
    let base = request.base.trim();
    let named: Vec<String> = diff.facts().paths;
    match repo.scratch_apply(base, &request.patch, &named) {
        Ok(crate::git::Scratch::Applied(tree)) => Ok(Judged::Tree { diff, tree }),
        Ok(crate::git::Scratch::Refused(why)) => Ok(Judged::Refused(why)),
        Err(e) => Err(EngineError::BadRequest(format!(
            "\"base\" {base} cannot be read in guardian's clone {} (fetch it first?): {e}",
            clone.display()
        ))),
    }
}

/// guardian's own files that live inside the deployed repository, as the never-list's host
/// paths, and a warning for each file the redeploy hook runs from there (its own changes are
/// refused, but not what it runs in turn). `config_file` is the configuration guardian was
/// started with, when known.
pub fn host_never_list(
    settings: &crate::config::DaemonSettings,
    config_file: Option<&std::path::Path>,
) -> (trust::NeverList, Vec<String>) {
    let mut never = trust::NeverList::default();
    let mut warnings = Vec::new();
    let Some(rollback) = &settings.rollback else {
        return (never, warnings);
    };
    let Ok(repo) = rollback.repo.canonicalize() else {
        return (never, warnings);
    };
    let mut mine: Vec<(std::path::PathBuf, String)> = vec![
        (
            settings.state_dir.clone(),
            "guardian's state directory".into(),
        ),
        (
            settings.token_file.clone(),
            "guardian's operator token".into(),
        ),
    ];
    if let Some(c) = config_file {
        mine.push((c.to_path_buf(), "guardian's configuration file".into()));
    }
    if let Some(g) = &settings.gate {
        mine.push((g.policy_file.clone(), "guardian's policy file".into()));
        mine.extend(
            g.agent_token_file
                .iter()
                .map(|t| (t.clone(), "the agent's token".into())),
        );
        mine.extend(
            g.approvers
                .iter()
                .map(|(name, t)| (t.clone(), format!("approver {name}'s token"))),
        );
    }
    if let Some(auth) = settings.mail.as_ref().and_then(|m| m.auth.as_ref()) {
        mine.push((
            auth.password_file.clone(),
            "guardian's mail password".into(),
        ));
    }
    for log in &settings.logs {
        mine.push((
            log.path.clone(),
            format!("the access log {} guardian follows", log.name),
        ));
    }
    // The hook's program and arguments that are files (relative ones run from the clone).
    let mut hook_files = Vec::new();
    for (i, arg) in rollback.hook.iter().enumerate() {
        let path = std::path::Path::new(arg);
        let file = if path.is_absolute() {
            path.to_path_buf()
        } else if i > 0 || arg.contains('/') {
            repo.join(path)
        } else {
            continue;
        };
        if file.is_file() {
            hook_files.push(file.clone());
            mine.push((file, "the redeploy hook".into()));
        }
    }
    for (path, what) in mine {
        // Both the path as configured and where it really is: a symlinked directory on the
        // way is protected by the first, the file itself by the second.
        let lexical = if path.is_absolute() {
            path.clone()
        } else {
            repo.join(&path)
        };
        let mut found = Vec::new();
        for candidate in [Some(lexical), path.canonicalize().ok()]
            .into_iter()
            .flatten()
        {
            if let Some(rel) = crate::git::inside(&repo, &candidate) {
                if !found.contains(&rel) {
                    found.push(rel);
                }
            }
        }
        if !found.is_empty() && hook_files.contains(&path) {
            warnings.push(format!(
                "the redeploy hook runs {}, which is inside the deployed repository {}: \
                 guardian refuses every proposal that changes it, but not the files it runs in \
                 turn; keep the hook outside the repository",
                path.display(),
                repo.display()
            ));
        }
        never
            .host
            .extend(found.into_iter().map(|rel| (rel, what.clone())));
    }
    (never, warnings)
}

/// A deploy the engine asks for: apply, push, redeploy.
#[derive(Clone, Debug)]
pub struct DeployJob {
    pub proposal_id: String,
    /// The commit the diff was judged against, and the tree the gate judged (and a person
    /// approved): exactly that is deployed, or nothing is.
    pub base: String,
    pub tree: String,
    pub patch: String,
    pub intent: String,
    pub message: String,
}

/// What a deploy did.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct DeployReport {
    /// The commit that carries the proposal, once applied.
    pub commit: Option<String>,
    /// `None` when applied and redeployed; otherwise why not.
    pub failure: Option<String>,
    /// Whether the service may now be running the change (the hook ran, or was started).
    pub maybe_deployed: bool,
    /// When the redeploy hook started, unix seconds: the deploy window begins there.
    #[serde(default)]
    pub hook_started_at: Option<f64>,
    pub steps: Vec<crate::daemon::step::Step>,
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
        self.policy.as_ref().ok_or_else(|| {
            EngineError::BadRequest(
                "this guardian takes no proposals: its config has no [daemon.gate] section"
                    .to_owned(),
            )
        })
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

    /// Where proposals are applied in scratch (guardian's clone), for [`judge`].
    pub fn proposal_clone(&self) -> Option<std::path::PathBuf> {
        self.settings.rollback.as_ref().map(|r| r.repo.clone())
    }

    /// Protects guardian's own files in the deployed repository, now that the configuration
    /// file is known too; returns the warnings to print at start.
    pub fn protect_host_files(&mut self, config_file: Option<&std::path::Path>) -> Vec<String> {
        let (never, warnings) = host_never_list(&self.settings, config_file);
        self.never = never;
        warnings
    }

    /// Judges a proposal (what [`judge`] made of it, outside the lock) and stores it with the
    /// decision. Pure but for the ledger and the store: no git runs here. Denied proposals are
    /// final; those needing approval wait for a person; `auto` ones are queued for deploy (in
    /// shadow mode: recorded as what would have happened).
    pub fn propose(
        &mut self,
        role: &Role,
        request: &ProposalRequest,
        judged: Judged,
        now: f64,
    ) -> Result<ProposalRecord, EngineError> {
        let pattern = request.validate().map_err(EngineError::BadRequest)?;
        // Who wrote the change is the token's to say: the agent's changes are AI changes
        // (stricter tolerances, escalation when inconclusive), whatever the request claims.
        let mut request = request.clone();
        if *role == Role::Agent {
            request.kind = ChangeKind::Ai;
        }
        let request = &request;
        let loaded = self.gate_policy()?;
        let policy_sha256 = loaded.sha256.clone();
        let (diff, tree) = match judged {
            Judged::Tree { diff, tree } => (diff, tree),
            Judged::Refused(why) => return self.deny_unreadable(role, request, pattern, &why, now),
        };
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
        let mut assessment =
            trust::assess(&loaded.policy, &self.never, &facts, &diff, &tree, &context);
        if request.kind == ChangeKind::Human && assessment.decision == Decision::Auto {
            // The ledger is about AI patterns; a person's change proposed here still gets a
            // second person.
            assessment.decision = Decision::NeedsApproval;
        }
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
                tree_sha: Some(tree.tree.clone()),
                ..request.as_submitted(role, pattern)
            },
            now,
        )?;
        logged(&record);
        if record.state == ProposalState::Pending {
            self.ask_for_approval(&record, now)?;
        }
        Ok(record)
    }

    fn deny_unreadable(
        &mut self,
        role: &Role,
        request: &ProposalRequest,
        pattern: Pattern,
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
                ..request.as_submitted(role, pattern)
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

    /// The next approved proposal to deploy, when nothing else is going on: one change at a
    /// time, so each verdict is about one change. Nothing while deploys are paused.
    pub fn next_deploy(&mut self, now: f64) -> Result<Option<DeployJob>, EngineError> {
        if *self.supervisor.phase() != Phase::Idle || self.settings.rollback.is_none() {
            return Ok(None);
        }
        if self.settings.gate.is_some() && self.store.gate_paused()?.is_some() {
            return Ok(None);
        }
        let Some(p) = self.store.approved_proposals()?.into_iter().next() else {
            return Ok(None);
        };
        if p.state == ProposalState::Deploying {
            // A deploy was under way when guardian stopped: whether the hook ran is unknown.
            self.store.advance_proposal(
                &p.id,
                ProposalState::DeployFailed,
                None,
                Some("guardian stopped during the deploy; check the clone and the service"),
                json!({}),
                now,
            )?;
            return Ok(None);
        }
        // The tree judged, and for a person's approval the tree they approved: one and the
        // same, or the record was tampered with and nothing is deployed.
        let tree = match (&p.tree_sha, &p.decided_by, &p.approved_tree) {
            (Some(t), None, _) => Some(t.clone()),
            (Some(t), Some(_), Some(a)) if t == a => Some(t.clone()),
            _ => None,
        };
        let Some(tree) = tree else {
            self.store.advance_proposal(
                &p.id,
                ProposalState::Deploying,
                None,
                None,
                json!({ "base": p.base_sha, "diff_sha256": p.diff_hash }),
                now,
            )?;
            self.store.advance_proposal(
                &p.id,
                ProposalState::DeployFailed,
                None,
                Some("no judged tree, or the approval is for another tree than the one judged: nothing deployed"),
                json!({ "tree": p.tree_sha, "approved_tree": p.approved_tree }),
                now,
            )?;
            return Ok(None);
        };
        self.store.advance_proposal(
            &p.id,
            ProposalState::Deploying,
            None,
            None,
            json!({ "base": p.base_sha, "diff_sha256": p.diff_hash, "tree": tree }),
            now,
        )?;
        self.supervisor.deploy_started(&p.id);
        let approval = match &p.decided_by {
            Some(by) => format!(
                "Approved by {by} for diff sha256 {} (tree {tree}).",
                p.diff_hash
            ),
            None => format!(
                "Deployed without a person: the policy scored it {} and the pattern is trusted.",
                p.assessment["risk"]["score"]
            ),
        };
        Ok(Some(DeployJob {
            base: p.base_sha.clone(),
            tree,
            intent: format!("{}-deploy", p.id),
            message: format!(
                "{}\n\nProposed by {} as {} ({}). {approval}\n\nGuardian-Proposal: {}\n",
                first_line(&p.summary),
                p.proposer,
                p.pattern,
                p.id,
                p.id
            ),
            proposal_id: p.id,
            patch: p.patch,
        }))
    }

    /// The deploy job ended. Deployed: watch it like any change. Otherwise a person must know.
    pub fn deploy_finished(
        &mut self,
        job: &DeployJob,
        report: &DeployReport,
        now: f64,
    ) -> Result<(), EngineError> {
        let detail = serde_json::to_value(report).unwrap_or_default();
        let p = self.store.get_proposal(&job.proposal_id)?;
        match (&report.commit, &report.failure) {
            (Some(commit), None) => {
                let record = self.store.insert_change(
                    &NewChange {
                        commit: commit.clone(),
                        kind: p.kind.parse().unwrap_or(ChangeKind::Ai),
                        pattern: Some(p.pattern.clone()),
                        summary: Some(p.summary.clone()),
                        landed_at: now,
                    },
                    now,
                )?;
                self.store.advance_proposal(
                    &p.id,
                    ProposalState::Deployed,
                    Some(&record.id),
                    Some(&format!("deployed as {commit}; watching as {}", record.id)),
                    detail,
                    now,
                )?;
                // The hook's restart is the deploy window: neither baseline nor watch.
                let landing = crate::core::Landing {
                    at: now,
                    deploy_started_at: report.hook_started_at.filter(|&t| t <= now),
                };
                let effects =
                    self.supervisor
                        .deployed(super::watched(&record), landing, &self.settings);
                self.apply(effects, now)?;
            }
            (_, failure) => {
                self.supervisor.deploy_failed();
                let why = failure
                    .clone()
                    .unwrap_or_else(|| "no commit was made".into());
                let record = self.store.advance_proposal(
                    &p.id,
                    ProposalState::DeployFailed,
                    None,
                    Some(&why),
                    detail,
                    now,
                )?;
                tracing::error!(proposal_id = %p.id, "{}: deploy failed: {why}", p.id);
                let subject = format!(
                    "[guardian] {}: deploy of {} FAILED — {}",
                    self.settings.service,
                    p.id,
                    first_line(&p.summary)
                );
                let state_now = if report.maybe_deployed {
                    format!(
                        "ACTION NEEDED: {} is committed in guardian's clone and the redeploy hook \
                         ran but failed, so what the service runs now is unknown. guardian is \
                         not watching it. Check the service, then revert {} or notify it.",
                        report.commit.as_deref().unwrap_or("the commit"),
                        report.commit.as_deref().unwrap_or("it")
                    )
                } else {
                    "Nothing was deployed: the clone and the service are as they were.".to_owned()
                };
                let body = format!(
                    "{state_now}\n\nProposal {}: {}\nWhy it failed: {}\n\n{}",
                    p.id,
                    crate::display::line(&p.summary),
                    crate::display::block(&why),
                    proposal_text(&record)
                );
                self.mail_proposal(&p.id, "deploy_failed", subject, body, &[], now)?;
            }
        }
        Ok(())
    }

    /// Queues an email about a proposal (when mail is configured), with its own Message-ID;
    /// `links` are the approval links whose placeholders the body holds.
    fn mail_proposal(
        &mut self,
        id: &str,
        what: &str,
        subject: String,
        body: String,
        links: &[String],
        now: f64,
    ) -> Result<(), EngineError> {
        let Some(mail) = self.settings.mail.clone() else {
            return Ok(());
        };
        let text = format!(
            "{body}\n-- \nSent by guardian, watching {}.\n",
            self.settings.service
        );
        let email = crate::report::Email {
            subject,
            text_body: self.with_checkpoint(&text, now)?,
            message_id: format!("<{id}.{what}@guardian>"),
            html: None,
        };
        crate::report::enqueue_with_links(&mut self.store, &mail, None, &email, links, now)?;
        Ok(())
    }

    /// Asks the approvers (the alert recipients) to look at a proposal that needs a person.
    fn ask_for_approval(&mut self, p: &ProposalRecord, now: f64) -> Result<(), EngineError> {
        let subject = format!(
            "[guardian] {}: approval needed for {} ({}) — {}",
            self.settings.service,
            p.id,
            p.pattern,
            first_line(&p.summary)
        );
        let body = format!(
            "A change written by {} waits for a person's decision.\n\n{}\n\
             To see the diff:   guardian proposals {} --token-file <your token>\n\
             To approve it:     guardian approve {} --diff {} --token-file <your token>\n\
             To reject it:      guardian reject {} --why \"...\" --token-file <your token>\n\
             The approval binds to this diff (sha256 {}); a changed diff needs a new one.\n",
            p.kind,
            proposal_text(p),
            p.id,
            p.id,
            p.diff_hash,
            p.id,
            p.diff_hash
        );
        let (links, ids) = match self.settings.gate.as_ref().and_then(|g| {
            g.approval_base_url
                .clone()
                .map(|url| (url, g.approval_link_secs))
        }) {
            Some((url, secs)) => {
                use crate::gate::links::placeholder;
                let expires = now + f64::from(secs);
                let (approve, reject) = self.store.create_approval_links(
                    &self.link_key,
                    &p.id,
                    &p.diff_hash,
                    expires,
                )?;
                let text = format!(
                    "\nOr with one click (each link works once, for this diff only, until {}):\n  \
                     approve: {url}/v1/links/{}\n  reject:  {url}/v1/links/{}\n",
                    crate::report::units::when(expires),
                    placeholder(&approve),
                    placeholder(&reject)
                );
                (text, vec![approve, reject])
            }
            None => (String::new(), Vec::new()),
        };
        self.mail_proposal(&p.id, "approval_needed", subject, body + &links, &ids, now)
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

/// A proposal in plain text: the decision and its reasons, the risk factors, the diff's size.
fn proposal_text(p: &ProposalRecord) -> String {
    let a = &p.assessment;
    use crate::display::line;
    let mut out = format!(
        "Proposal:  {}\nPattern:   {} (proposed by {})\nSummary:   {}\nDecision:  {}{}\n",
        p.id,
        line(&p.pattern),
        line(&p.proposer),
        line(&p.summary),
        p.decision,
        if p.shadow { " (shadow mode)" } else { "" }
    );
    if let Some(url) = &p.issue_url {
        out.push_str(&format!("Issue:     {}\n", line(url)));
    }
    for rule in a["rules"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  - {} ({}): {}\n",
            line(rule["rule"].as_str().unwrap_or_default()),
            line(rule["effect"].as_str().unwrap_or_default()),
            line(rule["message"].as_str().unwrap_or_default())
        ));
    }
    out.push_str(&format!("Risk:      {}/100\n", a["risk"]["score"]));
    for f in a["risk"]["factors"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:>+4}  {}: {}\n",
            f["points"].as_i64().unwrap_or(0),
            line(f["name"].as_str().unwrap_or_default()),
            line(f["why"].as_str().unwrap_or_default())
        ));
    }
    let facts = &a["facts"];
    out.push_str(&format!(
        "Diff:      {} file(s), +{} -{}: {}\n",
        facts["files"],
        facts["lines_added"],
        facts["lines_removed"],
        facts["paths"]
            .as_array()
            .map(|ps| ps
                .iter()
                .filter_map(|p| p.as_str())
                .map(line)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    ));
    out
}

/// The first line of a summary, shown safely (summaries stored before they had to be one line
/// may hold several, and control characters).
fn first_line(text: &str) -> String {
    crate::display::line(text.lines().next().unwrap_or_default().trim()).into_owned()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn guardians_own_files_inside_the_repository_are_never_open_and_the_hook_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("app");
        for sub in ["ops", "deploy", "src"] {
            std::fs::create_dir_all(repo.join(sub)).unwrap();
        }
        let files = [
            ("ops/policy.toml", "[paths]\nallow = [\"src/**\"]\n"),
            ("deploy/redeploy.sh", "#!/bin/sh\n"),
            ("ops/agent.token", "agent-token-0123456789abcdef"),
        ];
        for (f, text) in files {
            std::fs::write(repo.join(f), text).unwrap();
        }
        let outside = dir.path().join("token");
        std::fs::write(&outside, "admin-token-0123456789abcdef").unwrap();
        let config = Config::parse(&format!(
            "[daemon]\nstate_dir = {state:?}\ntoken_file = {outside:?}\n\
             [daemon.rollback]\nrepo = {repo:?}\nhook = [\"sh\", \"deploy/redeploy.sh\"]\n\
             [daemon.gate]\npolicy_file = {policy:?}\nagent_token_file = {agent:?}\n",
            state = repo.join(".guardian"),
            policy = repo.join("ops/policy.toml"),
            agent = repo.join("ops/agent.token"),
        ))
        .unwrap();
        std::fs::create_dir_all(repo.join(".guardian")).unwrap();
        let settings = config.daemon.unwrap();
        let config_file = repo.join("ops/guardian.toml");
        std::fs::write(&config_file, "").unwrap();
        let (never, warnings) = host_never_list(&settings, Some(&config_file));
        for (path, what) in [
            ("ops/policy.toml", "guardian's policy file"),
            ("deploy/redeploy.sh", "the redeploy hook"),
            ("ops/agent.token", "the agent's token"),
            ("ops/guardian.toml", "guardian's configuration file"),
            (".guardian/guardian.db", "guardian's state directory"),
        ] {
            let why = never
                .check(path)
                .unwrap_or_else(|| panic!("{path} is open"));
            assert!(why.contains(what), "{path}: {why}");
        }
        assert_eq!(never.check("src/main.rs"), None);
        assert!(
            never.host.iter().all(|(p, _)| !p.starts_with('/')),
            "repository paths: {:?}",
            never.host
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("redeploy.sh, which is inside the deployed repository"),
            "{}",
            warnings[0]
        );
    }
}
