//! `[detector]`: the decision core's settings (`DetectorSettings`), each key checked against
//! what it may be, with the defaults the core gives.

use super::{ConfigError, RawAlphaSplit, RawDetector};
use crate::core::{AlphaSplit, DetectorSettings};

const DETECTOR: &str = "detector";

impl RawDetector {
    pub fn validate(self) -> Result<DetectorSettings, ConfigError> {
        let d = DetectorSettings::default();
        let s = DetectorSettings {
            alpha: open_interval("alpha", self.alpha, d.alpha, 0.0, 0.5)?,
            alpha_split: validate_split(self.alpha_split, d.alpha_split)?,
            baseline_secs: seconds("baseline_secs", self.baseline_secs, d.baseline_secs)?,
            watch_secs: seconds("watch_secs", self.watch_secs, d.watch_secs)?,
            deploy_guard_secs: match self.deploy_guard_secs {
                None => d.deploy_guard_secs,
                Some(n) if (0..=3600).contains(&n) => n as u32,
                Some(n) => {
                    return Err(ConfigError::invalid(
                        DETECTOR,
                        "deploy_guard_secs",
                        format!("must be whole seconds from 0 to 3600, got {n}"),
                    ))
                }
            },
            error_tolerance: non_negative(
                "error_tolerance",
                self.error_tolerance,
                d.error_tolerance,
            )?,
            latency_tolerance: non_negative(
                "latency_tolerance",
                self.latency_tolerance,
                d.latency_tolerance,
            )?,
            slow_quantile: open_interval(
                "slow_quantile",
                self.slow_quantile,
                d.slow_quantile,
                0.0,
                1.0,
            )?,
            slow_threshold_ms: match self.slow_threshold_ms {
                None => d.slow_threshold_ms,
                Some(ms) => Some(positive("slow_threshold_ms", Some(ms), 0.0)?),
            },
            latency_quantiles: quantiles(self.latency_quantiles, d.latency_quantiles)?,
            max_evidence_per_second: positive(
                "max_evidence_per_second",
                self.max_evidence_per_second,
                d.max_evidence_per_second,
            )?,
            max_routes: match self.max_routes {
                None => d.max_routes,
                Some(n) if n >= 1 => usize::try_from(n).map_err(|_| {
                    ConfigError::invalid(DETECTOR, "max_routes", format!("is too large, got {n}"))
                })?,
                Some(n) => {
                    return Err(ConfigError::invalid(
                        DETECTOR,
                        "max_routes",
                        format!("must be at least 1, got {n}"),
                    ))
                }
            },
            min_baseline_requests: count(
                "min_baseline_requests",
                self.min_baseline_requests,
                d.min_baseline_requests,
            )?,
            min_baseline_tail: count(
                "min_baseline_tail",
                self.min_baseline_tail,
                d.min_baseline_tail,
            )?,
            min_requests_after: count(
                "min_requests_after",
                self.min_requests_after,
                d.min_requests_after,
            )?,
            healthy_confidence: open_interval(
                "healthy_confidence",
                self.healthy_confidence,
                d.healthy_confidence,
                0.0,
                1.0,
            )?,
            healthy_max_ratio: match self.healthy_max_ratio {
                None => d.healthy_max_ratio,
                Some(r) if r.is_finite() && r >= 1.0 => r,
                Some(r) => {
                    return Err(ConfigError::invalid(
                        DETECTOR,
                        "healthy_max_ratio",
                        format!(
                            "must be a finite number of at least 1 (a change need not improve \
                             things to be healthy), got {r}"
                        ),
                    ))
                }
            },
            healthy_error_floor: match self.healthy_error_floor {
                None => d.healthy_error_floor,
                Some(f) if (0.0..1.0).contains(&f) => f,
                Some(f) => {
                    return Err(ConfigError::invalid(
                        DETECTOR,
                        "healthy_error_floor",
                        format!("must be in [0, 1) (a share of requests), got {f}"),
                    ))
                }
            },
        };
        Ok(s)
    }
}

/// A value strictly between `lo` and `hi`. NaN fails every comparison, so it is refused too.
fn open_interval(
    key: &'static str,
    v: Option<f64>,
    default: f64,
    lo: f64,
    hi: f64,
) -> Result<f64, ConfigError> {
    match v {
        None => Ok(default),
        Some(x) if x > lo && x < hi => Ok(x),
        Some(x) => Err(ConfigError::invalid(
            DETECTOR,
            key,
            format!("must be in ({lo}, {hi}), got {x}"),
        )),
    }
}

fn positive(key: &'static str, v: Option<f64>, default: f64) -> Result<f64, ConfigError> {
    match v {
        None => Ok(default),
        Some(x) if x > 0.0 && x.is_finite() => Ok(x),
        Some(x) => Err(ConfigError::invalid(
            DETECTOR,
            key,
            format!("must be a positive number, got {x}"),
        )),
    }
}

fn non_negative(key: &'static str, v: Option<f64>, default: f64) -> Result<f64, ConfigError> {
    match v {
        None => Ok(default),
        Some(x) if x >= 0.0 && x.is_finite() => Ok(x),
        Some(x) => Err(ConfigError::invalid(
            DETECTOR,
            key,
            format!("must be a finite number >= 0 (a relative tolerance: 0.1 is 10%), got {x}"),
        )),
    }
}

fn seconds(key: &'static str, v: Option<i64>, default: u32) -> Result<u32, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) if n > 0 => u32::try_from(n).map_err(|_| {
            ConfigError::invalid(DETECTOR, key, format!("is too long, got {n} seconds"))
        }),
        Some(n) => Err(ConfigError::invalid(
            DETECTOR,
            key,
            format!("must be a positive number of seconds, got {n}"),
        )),
    }
}

fn count(key: &'static str, v: Option<i64>, default: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) => u64::try_from(n).map_err(|_| {
            ConfigError::invalid(DETECTOR, key, format!("must be a count >= 0, got {n}"))
        }),
    }
}

fn validate_split(raw: Option<RawAlphaSplit>, d: AlphaSplit) -> Result<AlphaSplit, ConfigError> {
    let Some(raw) = raw else { return Ok(d) };
    let split = AlphaSplit {
        errors: raw.errors.unwrap_or(d.errors),
        slow: raw.slow.unwrap_or(d.slow),
        latency: raw.latency.unwrap_or(d.latency),
    };
    for (key, share) in [
        ("alpha_split.errors", split.errors),
        ("alpha_split.slow", split.slow),
        ("alpha_split.latency", split.latency),
    ] {
        if !(share > 0.0 && share <= 1.0) {
            return Err(ConfigError::invalid(
                DETECTOR,
                key,
                format!("must be a positive share of alpha, at most 1, got {share}"),
            ));
        }
    }
    let sum = split.errors + split.slow + split.latency;
    if (sum - 1.0).abs() > 1e-9 {
        let unset = [raw.errors, raw.slow, raw.latency]
            .iter()
            .any(Option::is_none);
        return Err(ConfigError::invalid(
            DETECTOR,
            "alpha_split",
            format!(
                "shares must sum to 1, got errors {} + slow {} + latency {} = {}{}",
                split.errors,
                split.slow,
                split.latency,
                // Rounded: 0.6 + 0.2 + 0.3 is 1.1 to a person, not 1.0999999999999999.
                (sum * 1e9).round() / 1e9,
                if unset {
                    " (shares not set take their defaults)"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(split)
}

fn quantiles(v: Option<Vec<f64>>, default: Vec<f64>) -> Result<Vec<f64>, ConfigError> {
    let Some(qs) = v else { return Ok(default) };
    let key = "latency_quantiles";
    if qs.is_empty() {
        return Err(ConfigError::invalid(
            DETECTOR,
            key,
            "must list at least one quantile",
        ));
    }
    for &q in &qs {
        if !(q > 0.0 && q < 1.0) {
            return Err(ConfigError::invalid(
                DETECTOR,
                key,
                format!("must each be in (0, 1), got {q}"),
            ));
        }
    }
    if let Some(w) = qs.windows(2).find(|w| w[0] >= w[1]) {
        return Err(ConfigError::invalid(
            DETECTOR,
            key,
            format!("must be strictly increasing, got {} then {}", w[0], w[1]),
        ));
    }
    Ok(qs)
}

#[cfg(test)]
mod tests {
    use expect_test::{expect, Expect};

    use super::*;
    use crate::config::testing::detector;
    use crate::config::Config;

    #[test]
    fn values_are_read() {
        let c = Config::parse(
            "[detector]\nalpha = 0.05\nbaseline_secs = 600\nwatch_secs = 900\n\
             alpha_split = { errors = 0.5, slow = 0.3, latency = 0.2 }\n\
             slow_threshold_ms = 250\nlatency_quantiles = [0.5, 0.99]\nhealthy_max_ratio = 3\n\
             [input]\nerror_status_min = 400\n",
        )
        .unwrap();
        assert_eq!(c.detector.alpha, 0.05);
        assert_eq!(c.detector.baseline_secs, 600);
        assert_eq!(c.detector.watch_secs, 900);
        assert_eq!(c.detector.alpha_split.slow, 0.3);
        assert_eq!(c.detector.slow_threshold_ms, Some(250.0));
        assert_eq!(c.detector.latency_quantiles, [0.5, 0.99]);
        assert_eq!(c.detector.healthy_max_ratio, 3.0);
        assert_eq!(c.input.error_status_min, 400);
        // Keys not given keep their defaults.
        assert_eq!(
            c.detector.min_requests_after,
            DetectorSettings::default().min_requests_after
        );
    }

    #[test]
    fn alpha_split_as_a_table_of_its_own() {
        let c = Config::parse("[detector.alpha_split]\nerrors = 0.4\nslow = 0.3\nlatency = 0.3\n")
            .unwrap();
        assert_eq!(
            c.detector.alpha_split,
            AlphaSplit {
                errors: 0.4,
                slow: 0.3,
                latency: 0.3
            }
        );
    }

    /// Checks the whole message a `[detector]` section of `body` is refused with.
    fn check(body: &str, message: Expect) {
        message.assert_eq(&detector(body));
    }

    #[test]
    fn alpha_must_be_below_one_half() {
        check(
            "alpha = 1.5",
            expect!["[detector] alpha must be in (0, 0.5), got 1.5"],
        );
        check(
            "alpha = 0",
            expect!["[detector] alpha must be in (0, 0.5), got 0"],
        );
        check(
            "alpha = 0.5",
            expect!["[detector] alpha must be in (0, 0.5), got 0.5"],
        );
        check(
            "alpha = nan",
            expect!["[detector] alpha must be in (0, 0.5), got NaN"],
        );
    }

    #[test]
    fn alpha_split_shares_are_positive_and_sum_to_one() {
        check(
            "alpha_split = { errors = 0.6, slow = 0.2, latency = 0.3 }",
            expect!["[detector] alpha_split shares must sum to 1, got errors 0.6 + slow 0.2 + latency 0.3 = 1.1"],
        );
        check(
            "alpha_split = { errors = 1.0, slow = 0.0, latency = 0.0 }",
            expect![
                "[detector] alpha_split.slow must be a positive share of alpha, at most 1, got 0"
            ],
        );
        check(
            "alpha_split = { errors = -0.5, slow = 1.0, latency = 0.5 }",
            expect!["[detector] alpha_split.errors must be a positive share of alpha, at most 1, got -0.5"],
        );
        check("alpha_split = { errors = 0.9 }", expect!["[detector] alpha_split shares must sum to 1, got errors 0.9 + slow 0.2 + latency 0.2 = 1.3 (shares not set take their defaults)"]);
    }

    #[test]
    fn durations_are_positive_whole_seconds() {
        check(
            "baseline_secs = 0",
            expect!["[detector] baseline_secs must be a positive number of seconds, got 0"],
        );
        check(
            "watch_secs = -60",
            expect!["[detector] watch_secs must be a positive number of seconds, got -60"],
        );
        check(
            "watch_secs = 99999999999",
            expect!["[detector] watch_secs is too long, got 99999999999 seconds"],
        );
        // A fraction of a second is a type error, reported by toml with its position.
        check(
            "watch_secs = 1.5",
            expect![[r#"
            TOML parse error at line 2, column 14
              |
            2 | watch_secs = 1.5
              |              ^^^
            invalid type: floating point `1.5`, expected i64"#]],
        );
    }

    #[test]
    fn tolerances_are_not_negative() {
        check("error_tolerance = -0.1", expect!["[detector] error_tolerance must be a finite number >= 0 (a relative tolerance: 0.1 is 10%), got -0.1"]);
        check("latency_tolerance = inf", expect!["[detector] latency_tolerance must be a finite number >= 0 (a relative tolerance: 0.1 is 10%), got inf"]);
        assert_eq!(
            Config::parse("[detector]\nerror_tolerance = 0")
                .unwrap()
                .detector
                .error_tolerance,
            0.0
        );
    }

    #[test]
    fn quantiles_are_in_the_unit_interval_and_increasing() {
        check(
            "latency_quantiles = [0.5, 0.9, 0.75]",
            expect!["[detector] latency_quantiles must be strictly increasing, got 0.9 then 0.75"],
        );
        check(
            "latency_quantiles = [0.5, 0.5]",
            expect!["[detector] latency_quantiles must be strictly increasing, got 0.5 then 0.5"],
        );
        check(
            "latency_quantiles = [0.5, 1.0]",
            expect!["[detector] latency_quantiles must each be in (0, 1), got 1"],
        );
        check(
            "latency_quantiles = []",
            expect!["[detector] latency_quantiles must list at least one quantile"],
        );
        check(
            "slow_quantile = 1",
            expect!["[detector] slow_quantile must be in (0, 1), got 1"],
        );
        check(
            "slow_quantile = 0",
            expect!["[detector] slow_quantile must be in (0, 1), got 0"],
        );
    }

    #[test]
    fn slow_threshold_and_evidence_cap_are_positive() {
        check(
            "slow_threshold_ms = 0",
            expect!["[detector] slow_threshold_ms must be a positive number, got 0"],
        );
        check(
            "max_evidence_per_second = -1",
            expect!["[detector] max_evidence_per_second must be a positive number, got -1"],
        );
    }

    #[test]
    fn counts_are_not_negative_and_routes_at_least_one() {
        check(
            "min_baseline_requests = -1",
            expect!["[detector] min_baseline_requests must be a count >= 0, got -1"],
        );
        check(
            "min_baseline_tail = -3",
            expect!["[detector] min_baseline_tail must be a count >= 0, got -3"],
        );
        check(
            "min_requests_after = -3",
            expect!["[detector] min_requests_after must be a count >= 0, got -3"],
        );
        check(
            "max_routes = 0",
            expect!["[detector] max_routes must be at least 1, got 0"],
        );
    }

    #[test]
    fn healthy_limits() {
        check(
            "healthy_confidence = 1",
            expect!["[detector] healthy_confidence must be in (0, 1), got 1"],
        );
        check("healthy_max_ratio = 0.5", expect!["[detector] healthy_max_ratio must be a finite number of at least 1 (a change need not improve things to be healthy), got 0.5"]);
        check(
            "healthy_error_floor = 1",
            expect![
                "[detector] healthy_error_floor must be in [0, 1) (a share of requests), got 1"
            ],
        );
    }
}
