//! The trust gate's judgement of one AI proposal: what it may touch (the sandbox policy), how
//! risky it is, and whether the fix pattern it claims is what the diff does. One entry point,
//! [`assess`], which is pure: no IO and no clock (the time comes in [`Context`]), so every
//! decision can be replayed from the stored proposal.
//!
//! - `diff.rs` parses the patch (the change arrives as data, never as a checkout to run);
//! - `policy.rs` reads the policy file;
//! - `pattern.rs` checks a claimed pattern against the diff;
//! - `risk.rs` scores the change from named factors.
//!
//! The decision: any rule that denies -> `deny`; otherwise a score at or above `auto_below`, a
//! pattern not yet promoted by the ledger, a human-only pattern, a no-unattended window or a
//! content rule set to `needs_approval` -> `needs_approval`, with each reason listed; otherwise
//! `auto`.

pub mod diff;
pub mod pattern;
pub mod policy;
pub mod risk;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use diff::{Diff, DiffError, DiffFacts, FileDiff, FileStatus};
pub use pattern::{Pattern, PatternCheck};
pub use policy::{PathVerdict, Policy, PolicyError, RuleAction};
pub use risk::{Factor, Risk, TrackRecord};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Deny,
    NeedsApproval,
}

/// One rule that fired, and what it names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleHit {
    /// `paths.deny`, `paths.allow`, `paths.symlink`, `limits.max_files`, `limits.max_lines`,
    /// `content.new_dependencies`, `content.schema_changes`, `pattern_mismatch`,
    /// `services.allow`, `diff.empty`; and for approval: `risk.auto_below`,
    /// `trust.not_promoted`, `trust.human_only`, `windows`.
    pub rule: String,
    pub effect: Effect,
    /// Names the file, line, glob or limit.
    pub message: String,
}

/// The gate's judgement, stored as JSON with the proposal and shown to the approver.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Assessment {
    pub decision: Decision,
    pub rules: Vec<RuleHit>,
    pub risk: Risk,
    pub pattern_check: PatternCheck,
    pub facts: DiffFacts,
}

/// How many symlinks one path may pass through before it is called a loop.
const MAX_SYMLINK_HOPS: usize = 40;
/// At most this many hits per rule are listed (the rest are summed up in one more).
const MAX_HITS_PER_RULE: usize = 10;

/// Judges one proposal. `symlinks` are the symlinks at the base commit at or above the touched
/// paths, as (path, target) (see `git::Repo::symlinks_along`); the patch's own new symlinks are
/// added here.
pub fn assess(
    policy: &Policy,
    proposal: &ProposalFacts,
    diff: &Diff,
    symlinks: &[(String, String)],
    context: &Context,
) -> Assessment {
    let facts = diff.facts();
    let mut hits = Hits::default();

    if diff.files.is_empty() || facts.paths.is_empty() {
        hits.deny("diff.empty", "the patch changes no file".to_owned());
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
    check_paths(policy, diff, symlinks, &mut hits);
    check_limits(policy, &facts, &mut hits);
    check_content(policy, diff, &mut hits);

    let pattern_check = pattern::check(proposal.pattern, diff);
    if let PatternCheck::Mismatch { reason, .. } = &pattern_check {
        hits.deny("pattern_mismatch", reason.clone());
    }

    let criticality = facts
        .paths
        .iter()
        .filter_map(|p| policy.risk.criticality(p).map(|(g, w)| (p.as_str(), g, w)))
        .max_by_key(|(_, _, w)| *w);
    let where_critical = criticality.map(|(p, g, _)| format!("{p} ({g})"));
    let risk = risk::score(
        &facts,
        &risk::RiskInputs {
            pattern: proposal.pattern,
            track_record: context.track_record,
            recent_rollbacks: context.recent_rollbacks,
            error_budget_remaining: context.error_budget_remaining,
            traffic_ratio: context.traffic_ratio,
            tests_run: proposal.tests_run,
            criticality: criticality
                .zip(where_critical.as_deref())
                .map(|((_, _, w), text)| (text, w)),
            max_lines: policy.limits.max_lines,
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

/// Every touched path, old and new, literally and where symlinks take it.
fn check_paths(policy: &Policy, diff: &Diff, symlinks: &[(String, String)], hits: &mut Hits) {
    // The links as they stand after the patch: the repository's, then the patch's own.
    let mut links: BTreeMap<String, String> = symlinks
        .iter()
        .map(|(p, t)| (p.trim_end_matches('/').to_owned(), t.clone()))
        .collect();
    // The symlinks the patch creates or changes, with their targets: written out, or carried
    // by a rename or copy of a link (whose relative target now starts somewhere else).
    let mut created: BTreeMap<&str, String> = BTreeMap::new();
    for f in &diff.files {
        let Some(path) = f.new_path.as_deref() else {
            continue;
        };
        let carried = match (f.status, f.old_path.as_deref()) {
            (FileStatus::Renamed | FileStatus::Copied, Some(old)) => links.get(old).cloned(),
            _ => None,
        };
        if let Some(target) = f.symlink_target().map(str::to_owned).or(carried) {
            created.insert(path, target);
        }
    }
    for (path, target) in &created {
        links.insert((*path).to_owned(), target.clone());
    }

    let mut seen = std::collections::BTreeSet::new();
    for f in &diff.files {
        for (path, role) in roles(f) {
            if !seen.insert(path.to_owned()) {
                continue;
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
            // A symlink the patch edits or deletes is written itself, not its target (the
            // target it gets is checked below).
            match resolve(path, &links, !f.is_symlink()) {
                Resolved::Inside(real, via) if real != path => {
                    if let Some(why) = not_allowed(policy, &real) {
                        hits.deny(
                            "paths.symlink",
                            format!("{path}{role} is really {real} (via {via}), which {why}"),
                        );
                    }
                }
                Resolved::Inside(..) => {}
                Resolved::Outside(via) => hits.deny(
                    "paths.symlink",
                    format!("{path}{role} leads outside the repository (via {via})"),
                ),
                Resolved::Loop => hits.deny(
                    "paths.symlink",
                    format!("{path}{role} passes through more than {MAX_SYMLINK_HOPS} symlinks"),
                ),
            }
        }
    }
    // A new or changed symlink must itself point somewhere allowed.
    for (path, target) in &created {
        let pointed = if target.starts_with('/') {
            None
        } else {
            join(diff::parent(path), target)
        };
        match pointed.map(|p| (resolve(&p, &links, true), p)) {
            None | Some((Resolved::Outside(_), _)) => hits.deny(
                "paths.symlink",
                format!("the new symlink {path} -> {target} points outside the repository"),
            ),
            Some((Resolved::Loop, _)) => hits.deny(
                "paths.symlink",
                format!("the new symlink {path} -> {target} is part of a loop"),
            ),
            Some((Resolved::Inside(real, _), _)) => {
                if let Some(why) = not_allowed(policy, &real) {
                    hits.deny(
                        "paths.symlink",
                        format!("the new symlink {path} -> {target} points to {real}, which {why}"),
                    );
                }
            }
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

#[derive(Debug, PartialEq, Eq)]
enum Resolved {
    /// The real repository path, and the links passed through (`a -> b, c -> d`).
    Inside(String, String),
    Outside(String),
    Loop,
}

/// `base/rel` with `.` and `..` applied; `None` if it climbs above the repository.
fn join(base: &str, rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = if base == "." || base.is_empty() {
        Vec::new()
    } else {
        base.split('/').collect()
    };
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// Follows symlinked components of `path` to the real path: every directory, and the last
/// component too when `follow_last`.
fn resolve(path: &str, links: &BTreeMap<String, String>, follow_last: bool) -> Resolved {
    let mut current = path.to_owned();
    let mut via: Vec<String> = Vec::new();
    'restart: for _ in 0..=MAX_SYMLINK_HOPS {
        let parts: Vec<&str> = current.split('/').filter(|c| !c.is_empty()).collect();
        for i in 0..parts.len() {
            if i + 1 == parts.len() && !follow_last {
                break;
            }
            let prefix = parts[..=i].join("/");
            if let Some(target) = links.get(&prefix) {
                via.push(format!("{prefix} -> {target}"));
                let rest = parts[i + 1..].join("/");
                let joined = if target.starts_with('/') {
                    None
                } else {
                    join(diff::parent(&prefix), target)
                };
                let Some(mut next) = joined else {
                    return Resolved::Outside(via.join(", "));
                };
                if !rest.is_empty() {
                    if !next.is_empty() {
                        next.push('/');
                    }
                    next.push_str(&rest);
                }
                match join(".", &next) {
                    Some(n) => current = n,
                    None => return Resolved::Outside(via.join(", ")),
                }
                continue 'restart;
            }
        }
        return Resolved::Inside(current, via.join(", "));
    }
    Resolved::Loop
}

/// Manifest and lock files: a line they gain may be a new dependency.
const MANIFESTS: [&str; 24] = [
    "Cargo.toml",
    "Cargo.lock",
    "package.json",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "go.mod",
    "go.sum",
    "pyproject.toml",
    "poetry.lock",
    "Pipfile",
    "Pipfile.lock",
    "setup.py",
    "setup.cfg",
    "Gemfile",
    "Gemfile.lock",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
    "composer.json",
    "composer.lock",
    "mix.exs",
    "Package.swift",
    "uv.lock",
];

fn is_manifest(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    MANIFESTS.contains(&name)
        || (name.starts_with("requirements") && name.ends_with(".txt"))
        || name.ends_with(".csproj")
}

/// Words that come before a dependency's name and are not it.
const DEPENDENCY_KEYWORDS: [&str; 12] = [
    "gem",
    "require",
    "implementation",
    "api",
    "compile",
    "compileonly",
    "runtimeonly",
    "testimplementation",
    "dependency",
    "pip",
    "package",
    "packagereference",
];

/// What a manifest line is about: its first word that is not a keyword (`serde` in
/// `serde = "1"`, `github.com/x/y` in `\tgithub.com/x/y v1.2.3`, `lodash` in `"lodash": "^4"`).
fn entry_key(line: &str) -> Option<String> {
    line.split(|c: char| c.is_whitespace() || "=:,<>~!^@()'\"{}[];".contains(c))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .find(|w| !DEPENDENCY_KEYWORDS.contains(&w.as_str()))
}

/// SQL that changes a schema.
const DDL: [&str; 9] = [
    "CREATE TABLE",
    "ALTER TABLE",
    "DROP TABLE",
    "CREATE INDEX",
    "CREATE UNIQUE INDEX",
    "DROP INDEX",
    "ADD COLUMN",
    "DROP COLUMN",
    "RENAME COLUMN",
];
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

fn check_content(policy: &Policy, diff: &Diff, hits: &mut Hits) {
    let deps = policy.content.new_dependencies;
    let schema = policy.content.schema_changes;
    for f in &diff.files {
        let path = f.path();
        if deps != RuleAction::Allow && is_manifest(path) {
            if f.status == FileStatus::Added {
                hits.act(
                    deps,
                    "content.new_dependencies",
                    format!("{path} is a new manifest or lock file"),
                );
            }
            let removed: std::collections::HashSet<String> = f
                .removed_lines()
                .filter_map(|l| entry_key(&l.text))
                .collect();
            for line in f.added_lines() {
                let Some(key) = entry_key(&line.text) else {
                    continue;
                };
                if !removed.contains(&key) && !line.text.trim_start().starts_with('#') {
                    hits.act(
                        deps,
                        "content.new_dependencies",
                        format!(
                            "{path}:{} adds {:?}: a manifest or lock file gains an entry",
                            line.new_line.unwrap_or(0),
                            line.text.trim()
                        ),
                    );
                }
            }
        }
        if schema != RuleAction::Allow {
            if f.paths().any(is_migration_file) {
                hits.act(
                    schema,
                    "content.schema_changes",
                    format!("{path} is a migration or schema file"),
                );
            }
            for line in f.added_lines() {
                let upper: String = line
                    .text
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_ascii_uppercase();
                if let Some(ddl) = DDL.iter().find(|d| upper.contains(*d)) {
                    hits.act(
                        schema,
                        "content.schema_changes",
                        format!(
                            "{path}:{} adds {ddl}: {:?}",
                            line.new_line.unwrap_or(0),
                            line.text.trim()
                        ),
                    );
                }
            }
        }
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
