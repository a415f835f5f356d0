//! Trust per fix pattern, earned from the record. The ledger is not stored anywhere it could be
//! edited: it is computed from the proposals and the verdicts on the changes they became (both
//! in the audited store). A pattern starts needing approval, may deploy alone once enough
//! changes a person approved stayed healthy, and loses that at once on a rollback, or on a fix
//! that did not fix the issue it named (`ineffective`).
//!
//! Two ways to the same [`Tally`] per pattern: [`tally`] folds every entry (the definition),
//! and the store reads it from counts it keeps in the same transaction as each write
//! (`Store::ledger_tally`), at a cost that does not grow with the number of proposals.
//! [`standing`] turns tallies into the ledger; the store's tests check both ways agree.

use serde::{Deserialize, Serialize};

/// The fix patterns an agent can claim. `other` is never checked against the diff, so it is
/// never trusted to deploy alone.
pub const PATTERNS: [&str; 5] = [
    "nil-check",
    "timeout-bump",
    "retry-wrap",
    "feature-flag-off",
    "other",
];

/// How one proposal ended, as far as trust is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The policy denied it.
    Denied,
    /// Waiting for a person, or decided in shadow mode and never deployed.
    NotDeployed,
    /// A person rejected it.
    Rejected,
    /// Deployed and still being watched, or its watch ended without a verdict.
    Deployed,
    /// Deployed and the watch found it healthy.
    Healthy,
    /// Deployed and it made things worse (rolled back, or would have been in shadow mode).
    Regressed,
    /// Deployed, made nothing worse, and the issue it claimed to fix went on firing.
    Ineffective,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Denied,
        Outcome::NotDeployed,
        Outcome::Rejected,
        Outcome::Deployed,
        Outcome::Healthy,
        Outcome::Regressed,
        Outcome::Ineffective,
    ];

    /// Whether it takes a pattern's standing away: what promotion counts starts again after it.
    pub fn is_setback(self) -> bool {
        matches!(self, Outcome::Regressed | Outcome::Ineffective)
    }

    /// As stored (`proposals.outcome`, `proposal_tally.outcome`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Denied => "denied",
            Outcome::NotDeployed => "not_deployed",
            Outcome::Rejected => "rejected",
            Outcome::Deployed => "deployed",
            Outcome::Healthy => "healthy",
            Outcome::Regressed => "regressed",
            Outcome::Ineffective => "ineffective",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

/// One pattern's record in numbers: what [`standing`] needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub proposals: u32,
    pub denied: u32,
    pub approved: u32,
    pub rejected: u32,
    pub deployed: u32,
    pub healthy: u32,
    pub rollbacks: u32,
    /// Deployed fixes after which the issue they named went on firing.
    pub ineffective: u32,
    /// Approved changes that stayed healthy since the last setback (a rollback or an
    /// ineffective fix).
    pub earned: u32,
    pub last_rollback_at: Option<f64>,
    pub last_ineffective_at: Option<f64>,
}

impl Tally {
    /// Counts `n` proposals that ended `outcome` (and were approved by a person or not). Not
    /// `earned` nor `last_rollback_at`, which depend on the order of events.
    pub fn count(&mut self, outcome: Outcome, approved: bool, n: u32) {
        self.proposals += n;
        if approved {
            self.approved += n;
        }
        match outcome {
            Outcome::Denied => self.denied += n,
            Outcome::Rejected => self.rejected += n,
            Outcome::NotDeployed => {}
            Outcome::Deployed => self.deployed += n,
            Outcome::Healthy => {
                self.deployed += n;
                self.healthy += n;
            }
            Outcome::Regressed => {
                self.deployed += n;
                self.rollbacks += n;
            }
            Outcome::Ineffective => {
                self.deployed += n;
                self.ineffective += n;
            }
        }
    }
}

/// The tally of each pattern proposed, by folding every entry in time order: the definition
/// the store's counts must agree with.
pub fn tally(entries: &[Entry]) -> Vec<(String, Tally)> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.at.total_cmp(&b.at));
    let mut tallies: Vec<(String, Tally)> = Vec::new();
    for e in sorted {
        let at = match tallies.iter().position(|(p, _)| *p == e.pattern) {
            Some(i) => i,
            None => {
                tallies.push((e.pattern.clone(), Tally::default()));
                tallies.len() - 1
            }
        };
        let t = &mut tallies[at].1;
        t.count(e.outcome, e.approved, 1);
        match e.outcome {
            Outcome::Healthy => t.earned += u32::from(e.approved),
            Outcome::Regressed => {
                t.earned = 0;
                t.last_rollback_at = Some(e.at);
            }
            Outcome::Ineffective => {
                t.earned = 0;
                t.last_ineffective_at = Some(e.at);
            }
            _ => {}
        }
    }
    tallies
}

/// One proposal, as the ledger reads it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub pattern: String,
    /// When its outcome was decided (its change's verdict; when it was proposed, for one that
    /// never became a change), unix seconds; entries are read in this order, so a setback
    /// resets what was earned before it was decided, whenever it was proposed.
    pub at: f64,
    /// A person approved it (as opposed to deploying alone, or never being decided).
    pub approved: bool,
    pub outcome: Outcome,
}

/// Whether a pattern may deploy without a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    NeedsApproval,
    Auto,
}

impl Level {
    /// The name the JSON gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::NeedsApproval => "needs_approval",
            Level::Auto => "auto",
        }
    }
}

/// One pattern's record and where it stands: the API's `GET /v1/trust` answers a list of these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatternTrust {
    pub pattern: String,
    pub level: Level,
    pub proposals: u32,
    pub denied: u32,
    pub approved: u32,
    pub rejected: u32,
    pub deployed: u32,
    pub healthy: u32,
    pub rollbacks: u32,
    /// Fixes after which the issue they named went on firing.
    #[serde(default)]
    pub ineffective: u32,
    /// Approved changes that stayed healthy since the last setback (a rollback or an
    /// ineffective fix): what promotion counts.
    pub earned: u32,
    pub needed: u32,
    pub last_rollback_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ineffective_at: Option<f64>,
    /// Why the pattern is where it is, in one sentence.
    pub why: String,
}

/// The ledger: every known pattern, plus any other pattern that has been proposed.
pub fn ledger(entries: &[Entry], promote_after: u32) -> Vec<PatternTrust> {
    standing(&tally(entries), promote_after)
}

/// Where each pattern stands given its tally: the known patterns first, in their usual order,
/// then any other pattern proposed, by name.
pub fn standing(tallies: &[(String, Tally)], promote_after: u32) -> Vec<PatternTrust> {
    let mut patterns: Vec<String> = PATTERNS.iter().map(|p| (*p).to_owned()).collect();
    let mut others: Vec<&String> = tallies
        .iter()
        .map(|(p, _)| p)
        .filter(|p| !PATTERNS.contains(&p.as_str()))
        .collect();
    others.sort();
    others.dedup();
    patterns.extend(others.into_iter().cloned());
    patterns
        .into_iter()
        .map(|pattern| {
            let tally = tallies
                .iter()
                .find(|(p, _)| *p == pattern)
                .map(|(_, t)| t.clone())
                .unwrap_or_default();
            let mut t = PatternTrust {
                level: Level::NeedsApproval,
                proposals: tally.proposals,
                denied: tally.denied,
                approved: tally.approved,
                rejected: tally.rejected,
                deployed: tally.deployed,
                healthy: tally.healthy,
                rollbacks: tally.rollbacks,
                ineffective: tally.ineffective,
                earned: tally.earned,
                needed: promote_after,
                last_rollback_at: tally.last_rollback_at,
                last_ineffective_at: tally.last_ineffective_at,
                why: String::new(),
                pattern,
            };
            let promotable = t.pattern != "other" && PATTERNS.contains(&t.pattern.as_str());
            if promotable && t.earned >= promote_after {
                t.level = Level::Auto;
            }
            t.why = why(&t, promotable);
            t
        })
        .collect()
}

fn why(t: &PatternTrust, promotable: bool) -> String {
    // Without [daemon.gate] there is no policy, so nothing is ever promoted.
    if t.needed == u32::MAX {
        return "no [daemon.gate] is configured: no pattern is promoted".to_owned();
    }
    if !promotable {
        return format!(
            "\"{}\" cannot be checked against the diff, so it always needs approval",
            t.pattern
        );
    }
    // The latest setback, which the streak counts from.
    let ineffective_last = match (t.last_ineffective_at, t.last_rollback_at) {
        (Some(i), Some(r)) => i > r,
        (Some(_), None) => true,
        _ => false,
    };
    let since = match (t.rollbacks > 0, t.ineffective > 0) {
        (false, false) => "",
        (true, false) => " since its last rollback",
        (false, true) => " since its last ineffective fix",
        (true, true) => " since its last rollback or ineffective fix",
    };
    match t.level {
        Level::Auto => format!(
            "{} approved changes stayed healthy{since} (promotion needs {}); a rollback or a fix \
             that does not stop its issue demotes it",
            t.earned, t.needed
        ),
        Level::NeedsApproval if (t.rollbacks > 0 || t.ineffective > 0) && t.earned == 0 => {
            format!(
                "demoted by {}; needs {} approved change{} healthy to deploy alone",
                if ineffective_last {
                    "a fix after which its issue went on firing"
                } else {
                    "a rollback"
                },
                t.needed,
                if t.needed == 1 {
                    " that stays"
                } else {
                    "s that stay"
                }
            )
        }
        Level::NeedsApproval => format!(
            "{} of {} approved changes that stayed healthy{since}",
            t.earned, t.needed
        ),
    }
}

/// The pattern's standing in the ledger (a pattern never seen needs approval).
pub fn level_of(ledger: &[PatternTrust], pattern: &str) -> Level {
    ledger
        .iter()
        .find(|t| t.pattern == pattern)
        .map_or(Level::NeedsApproval, |t| t.level)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pattern: &str, at: f64, approved: bool, outcome: Outcome) -> Entry {
        Entry {
            pattern: pattern.into(),
            at,
            approved,
            outcome,
        }
    }

    fn healthy_approved(pattern: &str, n: usize, from: f64) -> Vec<Entry> {
        (0..n)
            .map(|i| entry(pattern, from + i as f64, true, Outcome::Healthy))
            .collect()
    }

    fn standing(entries: &[Entry], pattern: &str) -> PatternTrust {
        ledger(entries, 10)
            .into_iter()
            .find(|t| t.pattern == pattern)
            .unwrap()
    }

    #[test]
    fn without_a_gate_no_pattern_is_promoted_and_the_ledger_says_so_not_a_count() {
        for t in super::standing(&[], u32::MAX) {
            assert_eq!(t.level, Level::NeedsApproval);
            assert_eq!(
                t.why,
                "no [daemon.gate] is configured: no pattern is promoted"
            );
        }
    }

    #[test]
    fn a_new_pattern_needs_approval() {
        let t = standing(&[], "nil-check");
        assert_eq!(t.level, Level::NeedsApproval);
        assert_eq!(t.why, "0 of 10 approved changes that stayed healthy");
    }

    #[test]
    fn ten_approved_healthy_changes_promote_a_pattern_and_nine_do_not() {
        let nine = healthy_approved("timeout-bump", 9, 0.0);
        assert_eq!(standing(&nine, "timeout-bump").level, Level::NeedsApproval);
        let ten = healthy_approved("timeout-bump", 10, 0.0);
        let t = standing(&ten, "timeout-bump");
        assert_eq!(t.level, Level::Auto);
        assert_eq!((t.approved, t.healthy, t.earned), (10, 10, 10));
        // Other patterns earn nothing from it.
        assert_eq!(standing(&ten, "nil-check").level, Level::NeedsApproval);
    }

    #[test]
    fn changes_that_deployed_alone_or_were_never_deployed_earn_nothing() {
        let mut entries = healthy_approved("retry-wrap", 5, 0.0);
        entries.extend(
            (0..5).map(|i| entry("retry-wrap", 10.0 + f64::from(i), false, Outcome::Healthy)),
        );
        entries.extend((0..5).map(|i| {
            entry(
                "retry-wrap",
                20.0 + f64::from(i),
                true,
                Outcome::NotDeployed,
            )
        }));
        let t = standing(&entries, "retry-wrap");
        assert_eq!(t.earned, 5);
        assert_eq!(t.level, Level::NeedsApproval);
    }

    #[test]
    fn a_rollback_demotes_at_once_and_the_record_starts_again() {
        let mut entries = healthy_approved("nil-check", 12, 0.0);
        entries.push(entry("nil-check", 100.0, false, Outcome::Regressed));
        let t = standing(&entries, "nil-check");
        assert_eq!(t.level, Level::NeedsApproval);
        assert_eq!(
            (t.rollbacks, t.earned, t.last_rollback_at),
            (1, 0, Some(100.0))
        );
        assert!(t.why.starts_with("demoted by a rollback"), "{}", t.why);
        entries.extend(healthy_approved("nil-check", 10, 200.0));
        let t = standing(&entries, "nil-check");
        assert_eq!(t.level, Level::Auto);
        assert!(t.why.contains("since its last rollback"), "{}", t.why);
    }

    #[test]
    fn order_is_by_time_not_by_how_the_entries_arrive() {
        let mut entries = healthy_approved("nil-check", 10, 200.0);
        entries.insert(0, entry("nil-check", 100.0, true, Outcome::Regressed));
        assert_eq!(standing(&entries, "nil-check").level, Level::Auto);
        entries.push(entry("nil-check", 300.0, true, Outcome::Regressed));
        assert_eq!(standing(&entries, "nil-check").level, Level::NeedsApproval);
    }

    #[test]
    fn other_and_unknown_patterns_never_deploy_alone() {
        for p in ["other", "refactor-everything"] {
            let t = standing(&healthy_approved(p, 50, 0.0), p);
            assert_eq!(t.level, Level::NeedsApproval, "{p}");
            assert!(t.why.contains("cannot be checked"), "{}", t.why);
        }
    }

    #[test]
    fn denials_and_rejections_are_counted_but_do_not_reset_the_record() {
        let mut entries = healthy_approved("feature-flag-off", 10, 0.0);
        entries.push(entry("feature-flag-off", 50.0, false, Outcome::Denied));
        entries.push(entry("feature-flag-off", 51.0, false, Outcome::Rejected));
        let t = standing(&entries, "feature-flag-off");
        assert_eq!((t.denied, t.rejected, t.proposals), (1, 1, 12));
        assert_eq!(t.level, Level::Auto);
    }
}
