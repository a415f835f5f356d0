//! The risk score of a proposal, 0 to 100: a sum of named factors, each with its points and one
//! line saying why, so the person approving reads how the number came about. The sum is clamped
//! to 0..=100; the policy's `[risk] auto_below` turns it into `auto` or `needs_approval`.
//!
//! The weights, in one place (points):
//!
//! | factor           | points                                                                |
//! |------------------|-----------------------------------------------------------------------|
//! | `path_criticality` | the highest `[risk] critical` weight a touched path matches (0-100) |
//! | `diff_size`      | 20 x lines changed / `max_lines`, at most 20                          |
//! | `diff_spread`    | 3 per file beyond the first + 3 per directory beyond the first, at most 15 |
//! | `pattern`        | timeout-bump 0, feature-flag-off 0, nil-check 5, retry-wrap 10, other 20 |
//! | `track_record`   | 10 per rollback of the pattern (at most 30); else 5 with no healthy record, or minus 1 per healthy approved change (at most -10) |
//! | `recent_rollbacks` | 10 per rollback of the service in the last 24 h, at most 20         |
//! | `error_budget`   | 15 x fraction spent; 25 when exhausted; 5 when unknown                |
//! | `traffic`        | 10 x (ratio to typical - 0.5), 0 to 15; 5 when unknown                |
//! | `tests`          | 10 when the proposer ran no tests                                     |
//! | `mode_executable` | 20 when the change makes a file executable                           |
//!
//! A small, trusted-pattern change to an ordinary path, with tests, on a quiet hour and a
//! healthy budget scores near 0; a change to checkout (weight 40) needs a person on its own.

use serde::{Deserialize, Serialize};

use super::diff::DiffFacts;
use super::pattern::Pattern;

/// One named part of the score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    pub name: String,
    pub points: i32,
    pub why: String,
}

/// The score and how it came about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Risk {
    /// The sum of the factors' points, clamped to 0..=100.
    pub score: u32,
    pub factors: Vec<Factor>,
}

/// A pattern's record in the trust ledger, as far as risk is concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrackRecord {
    /// Proposals of this pattern a person approved.
    pub approved: u32,
    /// Deployed changes of this pattern the watch found healthy.
    pub healthy: u32,
    /// Deployed changes of this pattern that were rolled back.
    pub rollbacks: u32,
}

/// Everything the score reads besides the diff.
#[derive(Clone, Debug, PartialEq)]
pub struct RiskInputs<'a> {
    pub pattern: Pattern,
    pub track_record: TrackRecord,
    /// Rollbacks of this service in the last 24 hours.
    pub recent_rollbacks: u32,
    /// Remaining fraction of the error budget (1.0 untouched, 0 or less exhausted).
    pub error_budget_remaining: Option<f64>,
    /// Traffic now relative to the typical traffic at this hour.
    pub traffic_ratio: Option<f64>,
    pub tests_run: bool,
    /// The most critical touched path and its weight, from the policy.
    pub criticality: Option<(&'a str, u32)>,
    pub max_lines: usize,
    /// Files the change makes executable (new ones included).
    pub executables: &'a [&'a str],
}

fn factor(name: &str, points: i32, why: String) -> Factor {
    Factor {
        name: name.to_owned(),
        points,
        why,
    }
}

/// Scores a change.
pub fn score(facts: &DiffFacts, inputs: &RiskInputs) -> Risk {
    let mut f = Vec::new();

    f.push(match inputs.criticality {
        Some((path, weight)) => factor(
            "path_criticality",
            weight.min(100) as i32,
            format!("touches {path}, weight {weight}"),
        ),
        None => factor(
            "path_criticality",
            0,
            "touches no path the policy marks critical".to_owned(),
        ),
    });

    let lines = facts.lines_added + facts.lines_removed;
    let size = (20.0 * lines as f64 / inputs.max_lines.max(1) as f64)
        .round()
        .min(20.0) as i32;
    f.push(factor(
        "diff_size",
        size,
        format!(
            "{lines} lines changed (+{} -{}) of at most {}",
            facts.lines_added, facts.lines_removed, inputs.max_lines
        ),
    ));

    let extra_files = facts.files.saturating_sub(1);
    let extra_dirs = facts.directories.len().saturating_sub(1);
    let spread = (3 * (extra_files + extra_dirs)).min(15) as i32;
    f.push(factor(
        "diff_spread",
        spread,
        format!(
            "{} file{} in {} director{}",
            facts.files,
            if facts.files == 1 { "" } else { "s" },
            facts.directories.len(),
            if facts.directories.len() == 1 {
                "y"
            } else {
                "ies"
            }
        ),
    ));

    let (base, why) = match inputs.pattern {
        Pattern::TimeoutBump => (0, "a timeout bump changes numbers only"),
        Pattern::FeatureFlagOff => (0, "turning a flag off only turns code off"),
        Pattern::NilCheck => (5, "a nil check adds a branch"),
        Pattern::RetryWrap => (10, "a retry changes timing and load under failure"),
        Pattern::Other => (20, "an unchecked pattern: nothing verifies what it does"),
    };
    f.push(factor(
        "pattern",
        base,
        format!("{}: {why}", inputs.pattern),
    ));

    let r = inputs.track_record;
    f.push(if r.rollbacks > 0 {
        factor(
            "track_record",
            (10 * r.rollbacks).min(30) as i32,
            format!(
                "{} change{} of this pattern {} rolled back",
                r.rollbacks,
                if r.rollbacks == 1 { "" } else { "s" },
                if r.rollbacks == 1 { "was" } else { "were" }
            ),
        )
    } else if r.healthy == 0 {
        factor(
            "track_record",
            5,
            "no change of this pattern has been deployed and found healthy yet".to_owned(),
        )
    } else {
        factor(
            "track_record",
            -(r.healthy.min(10) as i32),
            format!(
                "{} healthy, {} approved, none rolled back",
                r.healthy, r.approved
            ),
        )
    });

    let recent = inputs.recent_rollbacks;
    f.push(factor(
        "recent_rollbacks",
        (10 * recent).min(20) as i32,
        format!(
            "{recent} rollback{} of this service in the last 24 h",
            if recent == 1 { "" } else { "s" }
        ),
    ));

    f.push(
        match inputs.error_budget_remaining.filter(|r| r.is_finite()) {
            None => factor("error_budget", 5, "error budget unknown".to_owned()),
            Some(r) if r <= 0.0 => factor("error_budget", 25, "error budget exhausted".to_owned()),
            Some(r) => {
                let r = r.min(1.0);
                factor(
                    "error_budget",
                    (15.0 * (1.0 - r)).round() as i32,
                    format!("{:.0}% of the error budget left", 100.0 * r),
                )
            }
        },
    );

    f.push(
        match inputs.traffic_ratio.filter(|r| r.is_finite() && *r >= 0.0) {
            None => factor("traffic", 5, "traffic at this hour unknown".to_owned()),
            Some(ratio) => factor(
                "traffic",
                (10.0 * (ratio - 0.5)).round().clamp(0.0, 15.0) as i32,
                format!("traffic is {ratio:.1}x the usual for this hour"),
            ),
        },
    );

    f.push(if inputs.tests_run {
        factor("tests", 0, "the proposer ran the tests".to_owned())
    } else {
        factor("tests", 10, "the proposer ran no tests".to_owned())
    });

    f.push(match inputs.executables {
        [] => factor("mode_executable", 0, "makes no file executable".to_owned()),
        files => factor(
            "mode_executable",
            20,
            format!(
                "makes {} executable{}",
                files.iter().take(3).copied().collect::<Vec<_>>().join(", "),
                if files.len() > 3 { " and more" } else { "" }
            ),
        ),
    });

    let sum: i32 = f.iter().map(|x| x.points).sum();
    Risk {
        score: sum.clamp(0, 100) as u32,
        factors: f,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(lines: usize, files: usize, dirs: &[&str]) -> DiffFacts {
        DiffFacts {
            files,
            lines_added: lines / 2,
            lines_removed: lines - lines / 2,
            directories: dirs.iter().map(|d| d.to_string()).collect(),
            ..DiffFacts::default()
        }
    }

    fn calm() -> RiskInputs<'static> {
        RiskInputs {
            pattern: Pattern::TimeoutBump,
            track_record: TrackRecord {
                approved: 12,
                healthy: 12,
                rollbacks: 0,
            },
            recent_rollbacks: 0,
            error_budget_remaining: Some(1.0),
            traffic_ratio: Some(0.5),
            tests_run: true,
            criticality: None,
            max_lines: 80,
            executables: &[],
        }
    }

    fn points(risk: &Risk, name: &str) -> i32 {
        risk.factors.iter().find(|f| f.name == name).unwrap().points
    }

    #[test]
    fn making_a_file_executable_counts() {
        let made = ["src/run.sh"];
        let r = score(
            &facts(2, 1, &["src"]),
            &RiskInputs {
                executables: &made,
                ..calm()
            },
        );
        assert_eq!(points(&r, "mode_executable"), 20);
        assert!(r
            .factors
            .iter()
            .any(|f| f.why == "makes src/run.sh executable"));
    }

    #[test]
    fn a_small_trusted_change_on_a_calm_hour_scores_near_zero() {
        let r = score(&facts(2, 1, &["src"]), &calm());
        assert_eq!(r.score, 0, "{r:#?}");
        assert_eq!(points(&r, "track_record"), -10);
        assert_eq!(r.factors.len(), 10);
    }

    #[test]
    fn every_factor_raises_the_score_when_it_gets_worse() {
        // No track record, so no discount hides the steps.
        let mut worse = calm();
        worse.track_record = TrackRecord::default();
        let fresh = score(&facts(10, 1, &["src"]), &worse);
        assert_eq!(points(&fresh, "track_record"), 5);
        type Step = Box<dyn Fn(&mut RiskInputs)>;
        let steps: Vec<(&str, Step)> = vec![
            (
                "path_criticality",
                Box::new(|i| i.criticality = Some(("src/checkout/**", 40))),
            ),
            ("recent_rollbacks", Box::new(|i| i.recent_rollbacks = 1)),
            (
                "error_budget",
                Box::new(|i| i.error_budget_remaining = Some(0.0)),
            ),
            ("traffic", Box::new(|i| i.traffic_ratio = Some(2.0))),
            ("tests", Box::new(|i| i.tests_run = false)),
            ("pattern", Box::new(|i| i.pattern = Pattern::RetryWrap)),
        ];
        for (name, step) in steps {
            let mut i = worse.clone();
            step(&mut i);
            let r = score(&facts(10, 1, &["src"]), &i);
            assert!(points(&r, name) > 0, "{name}: {r:#?}");
            assert!(r.score > fresh.score, "{name} did not raise the score");
        }
    }

    #[test]
    fn size_and_spread_grow_with_the_diff() {
        let small = score(&facts(8, 1, &["src"]), &calm());
        let big = score(&facts(80, 4, &["src", "src/a", "lib"]), &calm());
        assert_eq!(points(&small, "diff_size"), 2);
        assert_eq!(points(&big, "diff_size"), 20);
        assert_eq!(points(&small, "diff_spread"), 0);
        assert_eq!(points(&big, "diff_spread"), 15);
    }

    #[test]
    fn rollbacks_of_the_pattern_cancel_its_good_record() {
        let mut i = calm();
        i.track_record.rollbacks = 1;
        let r = score(&facts(2, 1, &["src"]), &i);
        assert_eq!(points(&r, "track_record"), 10);
        assert!(r
            .factors
            .iter()
            .any(|f| f.why == "1 change of this pattern was rolled back"));
    }

    #[test]
    fn unknowns_cost_a_little_and_nonsense_counts_as_unknown() {
        let mut i = calm();
        i.error_budget_remaining = None;
        i.traffic_ratio = Some(f64::NAN);
        let r = score(&facts(2, 1, &["src"]), &i);
        assert_eq!(points(&r, "error_budget"), 5);
        assert_eq!(points(&r, "traffic"), 5);
    }

    #[test]
    fn the_score_is_clamped_to_100() {
        let i = RiskInputs {
            pattern: Pattern::Other,
            track_record: TrackRecord {
                rollbacks: 9,
                ..TrackRecord::default()
            },
            recent_rollbacks: 9,
            error_budget_remaining: Some(-3.0),
            traffic_ratio: Some(1e9),
            tests_run: false,
            criticality: Some(("src/**", 100)),
            executables: &["a", "b", "c", "d"],
            max_lines: 1,
        };
        let r = score(&facts(1000, 50, &["a", "b", "c", "d", "e", "f"]), &i);
        assert_eq!(r.score, 100);
        assert!(r.factors.iter().map(|f| f.points).sum::<i32>() > 100);
    }
}
