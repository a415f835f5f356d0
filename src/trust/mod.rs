//! The trust gate's judgement of one AI proposal: what it may touch (the sandbox policy), how
//! risky it is, and whether the fix pattern it claims is what the diff does. One entry point,
//! [`assess`], which is pure: no IO and no clock (the time comes in [`Context`]), so every
//! decision can be replayed from the stored proposal.
//!
//! The truth is the tree: git applies the patch in a scratch index of guardian's own clone
//! (`git::Repo::scratch_apply`), and every rule runs on what git made of it ([`TreeChange`]:
//! paths, modes, symlink targets, whole contents before and after). The patch text is only
//! what a person reads, so it must replay to exactly that tree (`tree::check_agreement`).
//!
//! - `diff/` parses the patch (the change arrives as data, never as a checkout to run);
//! - `ddl.rs` finds SQL that changes a schema in a file's text;
//! - `tree.rs` holds what git made of it and replays the patch against it;
//! - `symlink.rs` follows links on the resulting tree as the kernel does;
//! - `never.rs` is the fixed list of paths no policy opens (git's own files, guardian's);
//! - `manifest.rs` reads the dependencies a manifest or lock file declares;
//! - `policy.rs` reads the policy file;
//! - `pattern.rs` checks a claimed pattern against git's own diff of the whole change;
//! - `risk.rs` scores the change from named factors.
//!
//! The decision: any rule that denies -> `deny`; otherwise a score at or above `auto_below`, a
//! pattern not yet promoted by the ledger, a human-only pattern, a no-unattended window or a
//! content rule set to `needs_approval` -> `needs_approval`, with each reason listed; otherwise
//! `auto`.

pub mod ddl;
pub mod diff;
pub mod manifest;
pub mod never;
pub mod pattern;
pub mod policy;
pub mod risk;
pub mod symlink;
pub mod tree;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use diff::{Diff, DiffError, DiffFacts, FileDiff, FileStatus};
pub use never::NeverList;
pub use pattern::{Pattern, PatternCheck};
pub use policy::{PathVerdict, Policy, PolicyError, RuleAction};
pub use risk::{Factor, Risk, TrackRecord};
pub use symlink::Resolved;
pub use tree::{Blob, FileChange, TreeChange};

/// The mode git gives an executable file.
const EXECUTABLE_MODE: u32 = 0o100755;

/// What the proposer says about the change (the diff is judged separately).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalFacts {
    /// The service the change is for.
    pub service: String,
    /// The fix pattern the proposer claims.
    pub pattern: Pattern,
    /// Whether the proposer says it ran the tests.
    pub tests_run: bool,
}

/// What the guardian knows about the moment, passed in so that [`assess`] stays pure.
#[derive(Clone, Debug, PartialEq)]
pub struct Context {
    /// Now, unix seconds.
    pub now: i64,
    /// The ledger has promoted the claimed pattern (see [`Policy::promoted`]).
    pub pattern_trusted: bool,
    /// The claimed pattern's record in the ledger.
    pub track_record: TrackRecord,
    /// Rollbacks of this service in the last 24 hours.
    pub recent_rollbacks: u32,
    /// Remaining fraction of the error budget, if known.
    pub error_budget_remaining: Option<f64>,
    /// Traffic now relative to the typical traffic at this hour, if known.
    pub traffic_ratio: Option<f64>,
}

/// The gate's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Deny,
    NeedsApproval,
    Auto,
}

impl Decision {
    /// The name stored in `proposals.decision`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Deny => "deny",
            Decision::NeedsApproval => "needs_approval",
            Decision::Auto => "auto",
        }
    }
}

/// What a rule hit does to the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Deny,
    NeedsApproval,
}

impl Effect {
    /// The name stored in an assessment.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Deny => "deny",
            Effect::NeedsApproval => "needs_approval",
        }
    }
}

/// One rule that fired, and what it names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHit {
    /// `paths.deny`, `paths.allow`, `paths.symlink`, `limits.max_files`, `limits.max_lines`,
    /// `limits.symlink_steps`,
    /// `content.new_dependencies`, `content.schema_changes`, `pattern_mismatch`,
    /// `services.allow`, `diff.empty`; and for approval: `risk.auto_below`,
    /// `trust.not_promoted`, `trust.human_only`, `windows`.
    pub rule: String,
    pub effect: Effect,
    /// Names the file, line, glob or limit.
    pub message: String,
}

/// The gate's judgement, stored as JSON with the proposal and shown to the approver; read
/// back (`api::assessment`) from what any version stored: a patch refused before git read it
/// has no facts (`{}`) and no trees, and assessments stored before trees were judged have none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub decision: Decision,
    pub rules: Vec<RuleHit>,
    pub risk: Risk,
    pub pattern_check: PatternCheck,
    /// The numbers of the whole change as git made it (see `TreeChange::canonical`).
    #[serde(default)]
    pub facts: DiffFacts,
    /// The base's tree and the tree judged: the one deployed, or nothing is.
    #[serde(default)]
    pub base_tree: String,
    #[serde(default)]
    pub tree: String,
}

/// The most path components all of one change's symlinks may take to follow (see
/// `symlink::resolve`): some milliseconds of work, and thousands of times what real links need.
const MAX_LINK_STEPS: usize = 1_000_000;

/// At most this many hits per rule are listed (the rest are summed up in one more).
const MAX_HITS_PER_RULE: usize = 10;

/// Judges one proposal: `diff` is the patch as sent (what the approver reads), `tree` what git
/// made of it in a scratch index of guardian's clone (what is deployed). Every rule runs on
/// `tree`; the patch must agree with it line for line, or it is denied. The same as
/// [`examine`] then [`decide`].
pub fn assess(
    policy: &Policy,
    never: &NeverList,
    proposal: &ProposalFacts,
    diff: &Diff,
    tree: &TreeChange,
    context: &Context,
) -> Assessment {
    decide(
        policy,
        proposal,
        examine(policy, never, proposal, diff, tree),
        context,
    )
}

/// What the rules find in a change before the moment is known: every rule that reads the
/// change itself (paths, links, contents, the pattern's check). This is the part whose cost
/// grows with the change, so the daemon runs it away from the decision loop, and
/// [`decide`] adds the ledger and the moment, in microseconds.
pub struct Examination {
    hits: Hits,
    pattern_check: PatternCheck,
    facts: DiffFacts,
    /// The most critical path touched, as `path (glob)`, and its weight.
    criticality: Option<(String, u32)>,
    /// Files the change makes executable.
    executables: Vec<String>,
    base_tree: String,
    tree: String,
}

impl Examination {
    /// The tree judged: the one deployed, or nothing is.
    pub fn tree(&self) -> &str {
        &self.tree
    }
}

/// Runs every rule that reads the change (see [`Examination`]).
pub fn examine(
    policy: &Policy,
    never: &NeverList,
    proposal: &ProposalFacts,
    diff: &Diff,
    tree: &TreeChange,
) -> Examination {
    let facts = tree.canonical.facts();
    let mut hits = Hits::default();

    if tree.files.is_empty() {
        hits.deny("diff.empty", "the patch changes no file".to_owned());
    }
    if let Err(why) = tree::check_agreement(diff, tree) {
        hits.deny(
            "diff.disagrees",
            format!("git applies this patch differently than it reads: {why}"),
        );
    }
    if !policy.services.is_empty() && !policy.services.contains(&proposal.service) {
        hits.deny(
            "services.allow",
            format!(
                "service {:?} is not one AI changes may target ({})",
                proposal.service,
                policy.services.join(", ")
            ),
        );
    }
    check_paths(policy, never, diff, tree, &mut hits);
    check_links(policy, tree, &mut hits);
    check_binary(policy, diff, tree, &mut hits);
    check_limits(policy, &facts, &mut hits);
    check_content(policy, tree, &mut hits);

    let pattern_check = pattern::check(proposal.pattern, &tree.canonical);
    if let PatternCheck::Mismatch { reason, .. } = &pattern_check {
        hits.deny("pattern_mismatch", reason.clone());
    }

    let criticality = tree
        .paths()
        .filter_map(|p| policy.risk.criticality(p).map(|(g, w)| (p, g, w)))
        .max_by_key(|(_, _, w)| *w)
        .map(|(p, g, w)| (format!("{p} ({g})"), w));
    let executables = tree
        .files
        .iter()
        .filter(|f| {
            f.new.as_ref().is_some_and(|n| n.mode == EXECUTABLE_MODE)
                && f.old.as_ref().is_none_or(|o| o.mode != EXECUTABLE_MODE)
        })
        .map(|f| f.path.clone())
        .collect();
    Examination {
        hits,
        pattern_check,
        facts,
        criticality,
        executables,
        base_tree: tree.base_tree.clone(),
        tree: tree.tree.clone(),
    }
}

/// Adds what the moment says (the ledger, recent rollbacks, the error budget, traffic,
/// windows) to what [`examine`] found, and decides.
pub fn decide(
    policy: &Policy,
    proposal: &ProposalFacts,
    examination: Examination,
    context: &Context,
) -> Assessment {
    let Examination {
        mut hits,
        pattern_check,
        facts,
        criticality,
        executables,
        base_tree,
        tree,
    } = examination;
    let executables: Vec<&str> = executables.iter().map(String::as_str).collect();
    let risk = risk::score(
        &facts,
        &risk::RiskInputs {
            pattern: proposal.pattern,
            track_record: context.track_record,
            recent_rollbacks: context.recent_rollbacks,
            error_budget_remaining: context.error_budget_remaining,
            traffic_ratio: context.traffic_ratio,
            tests_run: proposal.tests_run,
            criticality: criticality.as_ref().map(|(text, w)| (text.as_str(), *w)),
            max_lines: policy.limits.max_lines,
            executables: &executables,
        },
    );

    if risk.score >= policy.risk.auto_below {
        hits.approve(
            "risk.auto_below",
            format!(
                "risk {} is at or above auto_below = {}",
                risk.score, policy.risk.auto_below
            ),
        );
    }
    if policy.trust.human_only.contains(&proposal.pattern) {
        hits.approve(
            "trust.human_only",
            format!("{} changes always need a person", proposal.pattern),
        );
    } else if !context.pattern_trusted {
        let r = context.track_record;
        hits.approve(
            "trust.not_promoted",
            format!(
                "{} is not trusted to deploy alone yet: it needs {} approved changes that stayed \
                 healthy with no rollback since (record: {} approved, {} healthy, {} rolled back)",
                proposal.pattern, policy.trust.promote_after, r.approved, r.healthy, r.rollbacks
            ),
        );
    }
    for w in policy.windows.iter().filter(|w| w.contains(context.now)) {
        hits.approve(
            "windows",
            format!(
                "inside the no-unattended window {:?} ({})",
                w.name,
                w.describe()
            ),
        );
    }

    let rules = hits.finish();
    let decision = if rules.iter().any(|h| h.effect == Effect::Deny) {
        Decision::Deny
    } else if rules.is_empty() {
        Decision::Auto
    } else {
        Decision::NeedsApproval
    };
    Assessment {
        decision,
        rules,
        risk,
        pattern_check,
        facts,
        base_tree,
        tree,
    }
}

/// Rule hits in the order they fired, capped per rule.
#[derive(Default)]
struct Hits {
    list: Vec<RuleHit>,
    per_rule: BTreeMap<String, usize>,
}

impl Hits {
    fn push(&mut self, rule: &str, effect: Effect, message: String) {
        let n = self.per_rule.entry(rule.to_owned()).or_default();
        *n += 1;
        if *n <= MAX_HITS_PER_RULE {
            self.list.push(RuleHit {
                rule: rule.to_owned(),
                effect,
                message,
            });
        }
    }

    fn deny(&mut self, rule: &str, message: String) {
        self.push(rule, Effect::Deny, message);
    }

    fn approve(&mut self, rule: &str, message: String) {
        self.push(rule, Effect::NeedsApproval, message);
    }

    fn act(&mut self, action: RuleAction, rule: &str, message: String) {
        match action {
            RuleAction::Deny => self.deny(rule, message),
            RuleAction::NeedsApproval => self.approve(rule, message),
            RuleAction::Allow => {}
        }
    }

    fn finish(mut self) -> Vec<RuleHit> {
        for (rule, n) in &self.per_rule {
            if *n > MAX_HITS_PER_RULE {
                let effect = self
                    .list
                    .iter()
                    .find(|h| &h.rule == rule)
                    .map_or(Effect::Deny, |h| h.effect);
                self.list.push(RuleHit {
                    rule: rule.clone(),
                    effect,
                    message: format!("and {} more like these", n - MAX_HITS_PER_RULE),
                });
            }
        }
        self.list
    }
}

/// Every touched path, old and new: what git changed, and what the patch names (a copy's
/// source is named, not changed). The never-list first, then the policy's globs.
fn check_paths(
    policy: &Policy,
    never: &NeverList,
    diff: &Diff,
    tree: &TreeChange,
    hits: &mut Hits,
) {
    let mut seen = BTreeSet::new();
    let named = diff.files.iter().flat_map(roles);
    let changed = tree.paths().map(|p| (p, ""));
    for (path, role) in named.chain(changed) {
        if !seen.insert(path.to_owned()) {
            continue;
        }
        if let Some(why) = never.check(path) {
            hits.deny("paths.never", why);
        }
        match policy.paths.check(path) {
            PathVerdict::Allowed => {}
            PathVerdict::Denied(glob) => hits.deny(
                "paths.deny",
                format!("{path}{role} matches the denied glob {glob:?}"),
            ),
            PathVerdict::NotAllowed => hits.deny(
                "paths.allow",
                format!(
                    "{path}{role} is not under any allowed glob ({})",
                    policy.paths.allow_globs().join(", ")
                ),
            ),
        }
    }
}

/// Every symlink of the result whose destination the change sets or moves (a new or changed
/// link, or an old one that now resolves elsewhere through a link the change made) must land
/// inside the tree, outside `.git`, on ground the policy allows. Resolved on the resulting
/// tree as the kernel would (see `symlink.rs`).
fn check_links(policy: &Policy, tree: &TreeChange, hits: &mut Hits) {
    let mut budget = MAX_LINK_STEPS;
    for (path, target) in &tree.links_after {
        let after = symlink::resolve(path, &tree.links_after, true, &mut budget);
        let new = tree.links_before.get(path) != Some(target);
        if !new && symlink::resolve(path, &tree.links_before, true, &mut budget) == after {
            continue;
        }
        let target = symlink::shown(target);
        let what = if new {
            format!("the new symlink {path} -> {target}")
        } else {
            format!("the symlink {path} -> {target}, which the change redirects,")
        };
        match &after {
            Resolved::Inside { path: real, via } => {
                let why = if real.is_empty() {
                    Some("is the repository's top level".to_owned())
                } else {
                    not_allowed(policy, real)
                };
                if let Some(why) = why {
                    let real = if real.is_empty() { "." } else { real.as_str() };
                    hits.deny(
                        "paths.symlink",
                        format!(
                            "{what} points to {real} (via {}), which {why}",
                            via.join(", ")
                        ),
                    );
                }
            }
            Resolved::Outside { .. } => hits.deny(
                "paths.symlink",
                format!("{what} points outside the repository (via {})", after.via()),
            ),
            Resolved::IntoGit { .. } => hits.deny(
                "paths.symlink",
                format!("{what} points into .git (via {})", after.via()),
            ),
            Resolved::Loop => hits.deny(
                "paths.symlink",
                format!(
                    "{what} is part of a loop (more than {} symlinks)",
                    symlink::MAX_HOPS
                ),
            ),
            Resolved::TooLong { .. } => hits.deny(
                "paths.symlink",
                format!(
                    "{what} passes through a symlink whose target is longer than the {} bytes \
                     a kernel allows (via {})",
                    symlink::MAX_TARGET_BYTES,
                    after.via()
                ),
            ),
            Resolved::Unjudged { .. } => {
                hits.deny(
                    "limits.symlink_steps",
                    format!(
                        "{what} was not followed to its end, nor were the links after it: the \
                         change's symlinks take more than {MAX_LINK_STEPS} steps to follow in \
                         all, more than any real change needs"
                    ),
                );
                break;
            }
        }
    }
}

/// Binary files change only where the policy allows them, and never as a patch no one can
/// read: a section sent as a `GIT binary patch` must really be binary.
fn check_binary(policy: &Policy, diff: &Diff, tree: &TreeChange, hits: &mut Hits) {
    let by_path: BTreeMap<&str, &FileChange> =
        tree.files.iter().map(|f| (f.path.as_str(), f)).collect();
    for f in diff.files.iter().filter(|f| f.binary) {
        let Some(change) = f.new_path.as_deref().and_then(|p| by_path.get(p)) else {
            continue;
        };
        if change.new.as_ref().is_some_and(|n| n.text().is_some()) {
            hits.deny(
                "content.binary",
                format!(
                    "{} is sent as a binary patch but is text: send it as a text diff, so that \
                     a person can read what it does",
                    change.path
                ),
            );
        }
    }
    for f in &tree.files {
        let binary = [&f.old, &f.new]
            .into_iter()
            .flatten()
            .any(|b| !b.is_symlink() && b.text().is_none());
        if binary && !policy.content.binary_allowed(&f.path) {
            hits.deny(
                "content.binary",
                format!(
                    "{} is binary (or not UTF-8 text), and no [content] binary glob allows it",
                    f.path
                ),
            );
        }
    }
}

/// The paths of one file section, each with how to describe it in a message.
fn roles(f: &FileDiff) -> Vec<(&str, &'static str)> {
    match (&f.old_path, &f.new_path, f.status) {
        (Some(old), Some(new), FileStatus::Renamed) => {
            vec![
                (old.as_str(), " (renamed from)"),
                (new.as_str(), " (renamed to)"),
            ]
        }
        (Some(old), Some(new), FileStatus::Copied) => {
            vec![
                (old.as_str(), " (copied from)"),
                (new.as_str(), " (copied to)"),
            ]
        }
        _ => f.paths().map(|p| (p, "")).collect(),
    }
}

/// Why a resolved path is off limits, if it is.
fn not_allowed(policy: &Policy, path: &str) -> Option<String> {
    match policy.paths.check(path) {
        PathVerdict::Allowed => None,
        PathVerdict::Denied(glob) => Some(format!("matches the denied glob {glob:?}")),
        PathVerdict::NotAllowed => Some("is not under any allowed glob".to_owned()),
    }
}

/// Directories that hold ORM migrations.
const MIGRATION_DIRS: [&str; 6] = [
    "migrations",
    "migrate",
    "alembic",
    "flyway",
    "liquibase",
    "migration",
];
/// Files that are a schema.
const SCHEMA_FILES: [&str; 4] = ["schema.rb", "structure.sql", "schema.prisma", "schema.sql"];

fn is_migration_file(path: &str) -> bool {
    let mut parts = path.split('/').rev();
    let name = parts.next().unwrap_or(path).to_ascii_lowercase();
    SCHEMA_FILES.contains(&name.as_str())
        || parts.any(|d| MIGRATION_DIRS.contains(&d.to_ascii_lowercase().as_str()))
}

/// The content rules, on whole files before and after: a manifest's dependencies, parsed;
/// DDL anywhere in a file's resulting text; migration and schema files by path.
fn check_content(policy: &Policy, tree: &TreeChange, hits: &mut Hits) {
    let deps = policy.content.new_dependencies;
    let schema = policy.content.schema_changes;
    for f in &tree.files {
        let path = f.path.as_str();
        // Deleting a migration is a schema change too.
        if schema != RuleAction::Allow && is_migration_file(path) {
            hits.act(
                schema,
                "content.schema_changes",
                format!("{path} is a migration or schema file"),
            );
        }
        let Some(new) = f.new.as_ref() else {
            continue;
        };
        if new.is_symlink() {
            // A manifest that becomes a link is whatever file it points to.
            if deps != RuleAction::Allow && manifest::is_manifest(path) {
                hits.act(
                    deps,
                    "content.new_dependencies",
                    format!("{path} becomes a symlink, so its dependencies are another file's"),
                );
            }
            continue;
        }
        let old_text = f
            .old
            .as_ref()
            .filter(|o| !o.is_symlink())
            .and_then(Blob::text);
        if deps != RuleAction::Allow && manifest::is_manifest(path) {
            check_manifest(deps, path, f.old.as_ref().map(|_| old_text), new, hits);
        }
        if schema != RuleAction::Allow {
            if let Some(text) = new.text() {
                let before = old_text.map(|t| ddl::find(path, t)).unwrap_or_default();
                for (ddl, at) in ddl::find(path, text) {
                    let had = before.get(ddl).map_or(0, Vec::len);
                    if at.len() > had {
                        hits.act(
                            schema,
                            "content.schema_changes",
                            format!(
                                "{path}:{} adds {ddl} ({} in the file now, {had} before)",
                                at[had],
                                at.len()
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// `old`: `None` for a new file, `Some(None)` for an old version that is not text.
fn check_manifest(
    action: RuleAction,
    path: &str,
    old: Option<Option<&str>>,
    new: &Blob,
    hits: &mut Hits,
) {
    let rule = "content.new_dependencies";
    let Some(old) = old else {
        hits.act(
            action,
            rule,
            format!("{path} is a new manifest or lock file"),
        );
        return;
    };
    let read = |text: Option<&str>| match text {
        Some(t) => manifest::read(path, t),
        None => Err("not text".to_owned()),
    };
    let after = match read(new.text()) {
        Ok(a) => a,
        Err(e) => {
            hits.act(
                action,
                rule,
                format!("{path} cannot be read ({e}), so whether it gains a dependency is unknown"),
            );
            return;
        }
    };
    let before = read(old).unwrap_or_default();
    for gained in after.gained_since(&before, path) {
        hits.act(action, rule, gained);
    }
}

fn check_limits(policy: &Policy, facts: &DiffFacts, hits: &mut Hits) {
    let l = policy.limits;
    if facts.files > l.max_files {
        hits.deny(
            "limits.max_files",
            format!(
                "the change touches {} files; the limit is {}",
                facts.files, l.max_files
            ),
        );
    }
    let lines = facts.lines_added + facts.lines_removed;
    if lines > l.max_lines {
        hits.deny(
            "limits.max_lines",
            format!(
                "the change adds {} and removes {} lines ({lines}); the limit is {}",
                facts.lines_added, facts.lines_removed, l.max_lines
            ),
        );
    }
}

#[cfg(test)]
mod tests;
