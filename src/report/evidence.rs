//! The core's report as the views read it: read back from the store into its own type, and
//! the words every view uses for a signal and where it stands.

use serde::Deserialize as _;
use serde_json::Value;

use super::units::{count, evalue, percent, quantile, ratio};
use crate::core::watch::signal_words;
use crate::core::{ClaimVerdict, Design, FixClaim, Report, SignalKind, SignalReport, Verdict};
use crate::store::ChangeRecord;

/// A stored report that does not read back as the core's `Report` (a damaged row, or one
/// written by a later version).
#[derive(Debug, thiserror::Error)]
#[error("the stored report cannot be read: {0}")]
pub struct UnreadableReport(#[from] serde_json::Error);

/// A report as stored (JSON in the store), read back into the type that wrote it.
pub fn read(stored: &Value) -> Result<Report, UnreadableReport> {
    Ok(Report::deserialize(stored)?)
}

/// The latest report of `change`: `Ok(None)` when none was recorded.
pub fn stored(change: &ChangeRecord) -> Result<Option<Report>, UnreadableReport> {
    change.report.as_ref().map(read).transpose()
}

/// A verdict as the JSON and the text spell it.
pub fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Watching => "watching",
        Verdict::Regressed => "regressed",
        Verdict::Healthy => "healthy",
        Verdict::Inconclusive => "inconclusive",
    }
}

/// A signal's name as the JSON spells it (`slow_requests`), for lists that show keys.
pub fn signal_key(kind: SignalKind) -> &'static str {
    match kind {
        SignalKind::Errors => "errors",
        SignalKind::SlowRequests => "slow_requests",
        SignalKind::Latency => "latency",
        SignalKind::SentryEvents => "sentry_events",
    }
}

/// Where a signal stands, in a word or two: never "not worse" for a signal that was not
/// compared, or that does not count towards the verdict.
pub fn standing(s: &SignalReport) -> &'static str {
    if s.regressed {
        "WORSE"
    } else if s.routes_compared == 0 {
        if s.leans_worse {
            "not compared; what there is leans towards harm"
        } else {
            "not compared"
        }
    } else if s.left_out {
        "left out: too few in the baseline"
    } else {
        match s.within_limits {
            Some(true) => "within limits",
            Some(false) => "not worse yet, not shown within limits",
            None => "not shown worse",
        }
    }
}

/// How bursty the signal's bad events were, when enough to discount its evidence.
pub fn bursts(s: &SignalReport) -> Option<String> {
    const NOTABLE: f64 = 1.05;
    if s.dispersion <= NOTABLE {
        return None;
    }
    let what = match s.signal {
        SignalKind::Errors => "errors",
        SignalKind::SlowRequests => "slow requests",
        SignalKind::SentryEvents => "Sentry's events",
        SignalKind::Latency => {
            let levels: Vec<String> = s
                .levels
                .iter()
                .filter(|l| l.dispersion > NOTABLE)
                .map(|l| format!("{} {:.1}x", quantile(l.quantile), l.dispersion))
                .collect();
            return Some(format!(
                "slowness comes in bursts ({} independent)",
                levels.join(", ")
            ));
        }
    };
    Some(format!(
        "{what} come in bursts ({:.1}x independent)",
        s.dispersion
    ))
}

/// What a report's two sides are called: the baseline before the change and the traffic after
/// it, or the old version and the new one serving side by side (a canary).
pub struct SideNames {
    /// "before" / "old"
    pub control: &'static str,
    /// "after" / "new"
    pub treatment: &'static str,
    /// What an effect is a multiple of: "the baseline" / "the old version's".
    pub reference: &'static str,
    /// The comparison, after "Compared".
    pub design: &'static str,
}

pub fn side_names(design: Design) -> SideNames {
    match design {
        Design::BeforeAfter => SideNames {
            control: "before",
            treatment: "after",
            reference: "the baseline",
            design: "after the change against the baseline before it",
        },
        Design::Concurrent => SideNames {
            control: "old",
            treatment: "new",
            reference: "the old version's",
            design: "the new version against the old one serving at the same time",
        },
    }
}

/// Why a signal was not compared, as the report says; reports stored before it said were only
/// ever short of baseline traffic.
pub fn not_compared_reason(s: &SignalReport) -> &str {
    s.not_compared
        .as_deref()
        .unwrap_or("no route had enough baseline traffic for this signal")
}

/// A signal's title for a heading or a table row.
pub fn title(s: &SignalReport) -> String {
    match s.signal {
        SignalKind::Errors => "Errors (share of failed requests)".to_owned(),
        SignalKind::SlowRequests => match s.threshold_ms {
            Some(t) => format!(
                "Slow requests (share slower than {})",
                super::units::ms(Some(t))
            ),
            None => "Slow requests".to_owned(),
        },
        SignalKind::Latency => "Latency (the whole distribution)".to_owned(),
        SignalKind::SentryEvents => "Sentry events (per request)".to_owned(),
    }
}

/// The regressed signals in a phrase: "errors 0.50% -> 6.20%, 12.4x the baseline".
pub fn regression_summary(report: &Report) -> String {
    let reference = side_names(report.design).reference;
    report
        .signals
        .iter()
        .filter(|s| s.regressed)
        .map(|s| {
            let name = signal_words(s.signal);
            if s.signal == SignalKind::Latency {
                match s.effect_ratio {
                    Some(r) => format!("{name}: median {}", ratio(r)),
                    None => name.to_owned(),
                }
            } else {
                let mut text = format!(
                    "{name} {} -> {}",
                    percent(s.baseline.rate),
                    percent(s.after.rate)
                );
                if let Some(r) = s.effect_ratio {
                    text.push_str(&format!(", {} {reference}", ratio(r)));
                }
                text
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What became of the issue a change claims to fix, in a sentence without its full stop:
/// "Sentry issue 4711 went on firing: 31 events after the change where 30 were expected at
/// its old rate (0.50% of requests -> 0.52%)".
pub fn claim_outcome(claim: &FixClaim) -> String {
    let issue = format!("Sentry issue {}", claim.issue);
    let counted = format!(
        "{} after the change where {} {} expected at its old rate ({} of requests -> {})",
        events(claim.after.events),
        trim_count(claim.expected_after),
        if (claim.expected_after - 1.0).abs() < 0.05 {
            "was"
        } else {
            "were"
        },
        percent(claim.baseline.rate),
        percent(claim.after.rate)
    );
    let half = if (claim.null_ratio - 0.5).abs() < 1e-9 {
        "half".to_owned()
    } else {
        format!("{} of", ratio(claim.null_ratio))
    };
    match claim.verdict {
        ClaimVerdict::StillFiring => format!(
            "{issue} went on firing: {counted}; shown above {half} its old rate (evidence {} \
             against {})",
            evalue(claim.still_firing_e_value),
            evalue(claim.e_value_threshold)
        ),
        ClaimVerdict::Fixed => format!(
            "{issue} stopped: {counted}; shown below {half} its old rate (evidence {} against {})",
            evalue(claim.fixed_e_value),
            evalue(claim.e_value_threshold)
        ),
        ClaimVerdict::StoppedBefore => format!(
            "{issue} had stopped before the change, so its quiet after it is not the fix's \
             doing: {} requests came between its last event and the change where its old \
             rate gives {} (odds of none {}); {counted}",
            count(claim.requests_quiet_before),
            trim_count(claim.expected_quiet_before),
            odds(claim.expected_quiet_before)
        ),
        ClaimVerdict::NotShown => {
            format!("{issue}: {counted}; too few of its events to show whether the fix worked")
        }
        ClaimVerdict::NotCompared if claim.baseline.requests == 0 || claim.after.requests == 0 => {
            format!(
                "{issue}: its events were not counted yet (they are counted in whole 10-second \
                 bins, which trail the traffic by 15 to 25 s), so the fix was not judged on it"
            )
        }
        ClaimVerdict::NotCompared => format!(
            "{issue} had no events in the baseline ({} requests), so the fix could not be \
             judged on it",
            count(claim.baseline.requests)
        ),
    }
}

fn events(n: u64) -> String {
    format!("{} event{}", count(n), if n == 1 { "" } else { "s" })
}

/// The odds of no event where `expected` were expected (Poisson): "0.7%", "1 in 22,026".
fn odds(expected: f64) -> String {
    let p = (-expected).exp();
    if p >= 0.001 {
        format!("{:.1}%", p * 100.0)
    } else {
        format!("1 in {}", count((1.0 / p).min(1e15) as u64))
    }
}

/// An expected count: whole when large, one decimal when small.
fn trim_count(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::core::Design;

    fn fixtures() -> Vec<(String, Value)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/reports");
        let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, serde_json::from_str(&text).unwrap())
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn reports_stored_by_earlier_versions_still_read() {
        let all = fixtures();
        assert!(all.len() >= 10, "{all:?}");
        for (name, stored) in &all {
            let report = read(stored).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(report.signals.len(), 3, "{name}");
            assert_eq!(report.design, Design::BeforeAfter, "{name}");
            // What was read is what was stored: written again, every stored key is there with
            // its value (fields added later only add keys).
            let again = serde_json::to_value(&report).unwrap();
            for (key, value) in stored.as_object().unwrap() {
                if key != "signals" {
                    assert_eq!(&again[key], value, "{name}: {key}");
                }
            }
            for (i, signal) in stored["signals"].as_array().unwrap().iter().enumerate() {
                for (key, value) in signal.as_object().unwrap() {
                    let got = &again["signals"][i][key];
                    match (got.as_f64(), value.as_f64()) {
                        // A float printed by another serializer may differ in its last digit.
                        (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-12 * b.abs(), "{name}"),
                        _ => assert_eq!(got, value, "{name}: signal {i} {key}"),
                    }
                }
            }
        }
        let by_name = |n: &str| read(&all.iter().find(|(name, _)| name == n).unwrap().1).unwrap();
        let old = by_name("regressed_errors_as_of_f6eb853.json");
        assert_eq!(old.verdict, Verdict::Regressed);
        assert_eq!(old.deploy_window, None);
        assert!(old.baseline_routes.is_empty() && old.not_judged.is_none());
        assert!(!old.signals[1].left_out && old.signals[1].thin.is_none());
        let thin = by_name("healthy_thin_left_out.json");
        assert!(thin.signals[1].left_out && thin.signals[1].thin.is_some());
        assert!(thin.not_judged.unwrap().contains("slow requests"));
        let demo = by_name("daemon_demo_rolled_back.json");
        assert_eq!(demo.verdict, Verdict::Regressed);
        assert!(demo.signals[0].regressed);
    }

    #[test]
    fn an_overflowed_e_value_reads_back_as_infinite_and_nonsense_is_an_error() {
        let (_, mut stored) = fixtures().swap_remove(0);
        stored["signals"][0]["e_value"] = Value::Null;
        assert_eq!(read(&stored).unwrap().signals[0].e_value, f64::INFINITY);
        stored["signals"][0]["regressed"] = "yes".into();
        let e = read(&stored).unwrap_err().to_string();
        assert!(e.starts_with("the stored report cannot be read: "), "{e}");
        stored["signals"] = Value::Null;
        assert!(read(&stored).is_err());
    }
}
