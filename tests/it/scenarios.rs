//! Scenarios of the decision core: traffic in, verdict and key evidence out, compared with the
//! expectations checked in under `tests/it/expected/<scenario>.json`.
//!
//! The traffic is generated here by a small seeded generator (so it is the same on every
//! machine), or read from the samples in `testdata/`, and replayed through
//! `guardian::replay::replay` with the default configuration. Each scenario also states the
//! verdict it must reach, so a regenerated expectation cannot quietly encode a wrong one.
//!
//! The comparison is `expect-test`'s. When the core changes on purpose, regenerate the
//! expectations and review the diff:
//!
//! ```text
//! UPDATE_EXPECT=1 cargo test --test it scenarios
//! ```

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, Cursor};
use std::path::PathBuf;

use expect_test::expect_file;
use serde_json::{json, Value};

use guardian::config::Config;
use guardian::core::Verdict;
use guardian::input::Format;
use guardian::replay::{replay, replay_changes, ChangeSpec, Replay};

use super::common::{root, sample, CHANGE_AT};

/// SplitMix64: tiny, seeded, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Poisson by inversion; fine for the small means of one second of traffic.
    fn poisson(&mut self, mean: f64) -> u32 {
        let (mut k, mut p, mut cdf) = (0u32, (-mean).exp(), 0.0);
        let u = self.uniform();
        loop {
            cdf += p;
            if u < cdf || k > 10_000 {
                return k;
            }
            k += 1;
            p *= mean / f64::from(k);
        }
    }
}

#[derive(Clone, Copy)]
struct Route {
    name: &'static str,
    share: f64,
    median_ms: f64,
    sigma: f64,
}

const ROUTES: [Route; 3] = [
    Route {
        name: "/api/products",
        share: 0.55,
        median_ms: 40.0,
        sigma: 0.5,
    },
    Route {
        name: "/api/cart",
        share: 0.30,
        median_ms: 60.0,
        sigma: 0.5,
    },
    Route {
        name: "/checkout",
        share: 0.15,
        median_ms: 180.0,
        sigma: 0.6,
    },
];

/// One request as the generator makes it, before an effect changes it.
struct Req {
    route: usize,
    error: bool,
    latency_ms: f64,
}

/// What a change does to a request `secs_after` seconds after it landed.
type Effect = fn(secs_after: f64, req: &mut Req, rng: &mut Rng);

#[derive(Clone, Copy)]
struct Spec {
    seed: u64,
    /// Requests per second.
    rate: f64,
    before_secs: i64,
    after_secs: i64,
    error_rate: f64,
    /// Route shares, if not the usual ones.
    mix: Option<[f64; 3]>,
    /// Route shares after the change, if the mix shifts.
    mix_after: Option<[f64; 3]>,
    /// Seconds (relative to the change) when every request fails: a restart's 502s.
    burst: Option<(f64, f64)>,
    effect: Effect,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            seed: 1,
            rate: 10.0,
            before_secs: 1860,
            after_secs: 1860,
            error_rate: 0.01,
            mix: None,
            mix_after: None,
            burst: None,
            effect: |_, _, _| {},
        }
    }
}

/// JSON lines, sorted by time, around a change at [`CHANGE_AT`].
fn generate(spec: &Spec) -> String {
    let mut rng = Rng(spec.seed);
    let mut out = String::new();
    let mut times = Vec::new();
    for sec in -spec.before_secs..spec.after_secs {
        times.clear();
        for _ in 0..rng.poisson(spec.rate) {
            times.push(sec as f64 + rng.uniform());
        }
        times.sort_by(f64::total_cmp);
        for &t in &times {
            let shares = match spec.mix_after {
                Some(mix) if t >= 0.0 => mix,
                _ => spec.mix.unwrap_or(ROUTES.map(|r| r.share)),
            };
            let mut u = rng.uniform();
            let route = shares
                .iter()
                .position(|&s| {
                    u -= s;
                    u < 0.0
                })
                .unwrap_or(ROUTES.len() - 1);
            let r = ROUTES[route];
            let mut req = Req {
                route,
                error: rng.chance(spec.error_rate),
                latency_ms: rng.lognormal(r.median_ms, r.sigma),
            };
            if t >= 0.0 {
                (spec.effect)(t, &mut req, &mut rng);
            }
            let restarting = spec.burst.is_some_and(|(a, b)| (a..b).contains(&t));
            let _ = writeln!(
                out,
                r#"{{"ts":{:.3},"status":{},"latency_ms":{:.2},"route":"{}"}}"#,
                CHANGE_AT + t,
                if restarting {
                    502
                } else if req.error {
                    500
                } else {
                    200
                },
                req.latency_ms,
                ROUTES[req.route].name
            );
        }
    }
    out
}

fn run_generated(spec: &Spec) -> Replay {
    let text = generate(spec);
    replay(
        Cursor::new(text),
        Format::JsonLines,
        CHANGE_AT,
        &Config::default(),
    )
    .unwrap()
}

fn run_sample(name: &str, format: Format) -> Replay {
    let file = File::open(sample(name)).unwrap();
    replay(BufReader::new(file), format, CHANGE_AT, &Config::default()).unwrap()
}

/// Two significant digits: stable against the last bits of floating point, telling enough to
/// review. Written as a JSON number.
fn round2(x: f64) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    let r: f64 = format!("{x:.1e}").parse().unwrap();
    json!(r)
}

/// What a scenario's expectation holds: the verdict, when, and per signal whether it fired,
/// its e-value and effect, rounded.
fn summary(r: &Replay) -> Value {
    let signals: Vec<Value> = r
        .report
        .signals
        .iter()
        .map(|s| {
            let mut v = json!({
                "signal": s.signal,
                "regressed": s.regressed,
                "e_value": round2(s.e_value),
                "effect_ratio": s.effect_ratio.map(round2),
            });
            if !s.levels.is_empty() {
                v["levels"] = s
                    .levels
                    .iter()
                    .map(|l| {
                        json!({
                            "quantile": l.quantile,
                            "e_value": round2(l.e_value),
                            "after_over_baseline_ms": match (l.after_ms, l.baseline_ms) {
                                (Some(a), Some(b)) if b > 0.0 => round2(a / b),
                                _ => Value::Null,
                            },
                        })
                    })
                    .collect();
            }
            if s.regressed {
                v["worst_route"] = json!(s.worst_route);
            }
            if s.left_out {
                v["left_out"] = json!(true);
            }
            v
        })
        .collect();
    json!({
        "verdict": r.verdict_name(),
        "decided_at": r.decided_at,
        // Rounded: a float read back from JSON may differ in its last digit.
        "decided_after_secs": r.decided_at.map(|t| ((t - r.change_at) * 1000.0).round() / 1000.0),
        "signals": signals,
    })
}

/// Absolute: expect-test resolves a relative path from the topmost directory holding a
/// Cargo.toml, which need not be this crate's.
fn expected_path(name: &str) -> PathBuf {
    root()
        .join("tests/it/expected")
        .join(format!("{name}.json"))
}

/// Checks the verdict the scenario must reach, then compares the summary with the checked-in
/// expectation (or rewrites it under `UPDATE_EXPECT=1`).
fn check(name: &str, r: &Replay, verdict: Verdict) {
    let got = summary(r);
    assert_eq!(
        r.verdict,
        verdict,
        "scenario {name}: wrong verdict\n{}\n{}",
        serde_json::to_string_pretty(&got).unwrap(),
        r.render_text()
    );
    let pretty = serde_json::to_string_pretty(&got).unwrap() + "\n";
    expect_file![expected_path(name)].assert_eq(&pretty);
}

#[test]
fn the_generator_is_seeded_and_sorted() {
    let spec = Spec {
        before_secs: 20,
        after_secs: 20,
        ..Spec::default()
    };
    let a = generate(&spec);
    assert_eq!(a, generate(&spec));
    assert_ne!(a, generate(&Spec { seed: 2, ..spec }));
    let ts: Vec<f64> = a
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["ts"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    assert!((300..500).contains(&ts.len()), "{}", ts.len());
}

#[test]
fn steady_traffic_is_healthy() {
    let r = run_generated(&Spec::default());
    check("steady", &r, Verdict::Healthy);
}

#[test]
fn checkout_failing_is_caught_in_seconds() {
    let r = run_generated(&Spec {
        seed: 11,
        effect: |_, req, rng| {
            if req.route == 2 && rng.chance(0.3) {
                req.error = true;
            }
        },
        ..Spec::default()
    });
    check("checkout_errors", &r, Verdict::Regressed);
    assert!(r.decided_at.unwrap() - CHANGE_AT < 60.0);
}

#[test]
fn every_route_a_third_slower_is_a_latency_regression() {
    let r = run_generated(&Spec {
        seed: 12,
        effect: |_, req, _| req.latency_ms *= 1.33,
        ..Spec::default()
    });
    check("all_slower", &r, Verdict::Regressed);
}

#[test]
fn a_slow_tail_is_caught() {
    // 3% of requests get ten times slower; the median does not move.
    let r = run_generated(&Spec {
        seed: 13,
        effect: |_, req, rng| {
            if rng.chance(0.03) {
                req.latency_ms *= 10.0;
            }
        },
        ..Spec::default()
    });
    check("slow_tail", &r, Verdict::Regressed);
}

#[test]
fn errors_starting_ten_minutes_late_are_caught() {
    let r = run_generated(&Spec {
        seed: 14,
        effect: |t, req, rng| {
            if t >= 600.0 && rng.chance(0.04) {
                req.error = true;
            }
        },
        ..Spec::default()
    });
    check("late_onset", &r, Verdict::Regressed);
    assert!(r.decided_at.unwrap() - CHANGE_AT > 600.0);
}

#[test]
fn a_two_second_blip_is_not_a_regression() {
    let r = run_generated(&Spec {
        seed: 15,
        effect: |t, req, rng| {
            if (300.0..302.0).contains(&t) && rng.chance(0.5) {
                req.error = true;
            }
        },
        ..Spec::default()
    });
    check("blip", &r, Verdict::Healthy);
}

#[test]
fn more_traffic_on_the_slow_route_is_not_a_regression() {
    // After the change twice the share of /checkout, the slowest route: pooled latencies look
    // worse, but each route is compared with its own baseline.
    let r = run_generated(&Spec {
        seed: 16,
        mix_after: Some([0.45, 0.25, 0.30]),
        ..Spec::default()
    });
    check("mix_shift", &r, Verdict::Healthy);
}

#[test]
fn a_trickle_of_traffic_is_inconclusive() {
    let r = run_generated(&Spec {
        seed: 17,
        rate: 0.04,
        ..Spec::default()
    });
    check("trickle", &r, Verdict::Inconclusive);
    assert!(r.note().contains("min_requests_after"), "{}", r.note());
}

#[test]
fn a_recording_ending_early_is_inconclusive() {
    let r = run_generated(&Spec {
        seed: 18,
        after_secs: 900,
        ..Spec::default()
    });
    check("ends_early", &r, Verdict::Inconclusive);
    assert!(r.recording_ended_early);
}

#[test]
fn shipped_bad_deploy() {
    check(
        "sample_bad_deploy",
        &run_sample("bad_deploy.jsonl", Format::JsonLines),
        Verdict::Regressed,
    );
}

#[test]
fn shipped_healthy_deploy() {
    check(
        "sample_healthy_deploy",
        &run_sample("healthy_deploy.jsonl", Format::JsonLines),
        Verdict::Healthy,
    );
}

#[test]
fn shipped_nginx_outage() {
    check(
        "sample_outage_nginx",
        &run_sample("outage.nginx.log", Format::Nginx),
        Verdict::Regressed,
    );
}

// ---------------------------------------------------------------------------------------------
// Production is not a clean recording: restarts right before the notification, changes back to
// back, thin signals. About 30 requests a second, /checkout normally failing 0.2% of the time.

/// The traffic of the trial that found these: 30 req/s, few errors.
fn production() -> Spec {
    Spec {
        rate: 30.0,
        error_rate: 0.002,
        ..Spec::default()
    }
}

/// /checkout fails 5% of the time after the change: 25 times its normal rate.
fn checkout_five_percent(_: f64, req: &mut Req, rng: &mut Rng) {
    if req.route == 2 && rng.chance(0.05) {
        req.error = true;
    }
}

/// Replays generated traffic with several changes (at seconds relative to [`CHANGE_AT`], each
/// with its deploy's start if known).
fn run_day(spec: &Spec, changes: &[(f64, Option<f64>)]) -> Vec<Replay> {
    let changes: Vec<ChangeSpec> = changes
        .iter()
        .map(|&(at, started)| ChangeSpec {
            at: CHANGE_AT + at,
            deploy_started_at: started.map(|s| CHANGE_AT + s),
        })
        .collect();
    replay_changes(
        Cursor::new(generate(spec)),
        Format::JsonLines,
        &changes,
        &Config::default(),
    )
    .unwrap()
}

/// Like [`check`], for a day of changes: one verdict each, one expectation file.
fn check_day(name: &str, day: &[Replay], verdicts: &[&str]) {
    let got: Vec<Value> = day.iter().map(summary).collect();
    let names: Vec<&str> = day.iter().map(Replay::verdict_name).collect();
    assert_eq!(
        names,
        verdicts,
        "day {name}: wrong verdicts\n{}",
        day.iter()
            .map(Replay::render_text)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let pretty = serde_json::to_string_pretty(&got).unwrap() + "\n";
    expect_file![expected_path(name)].assert_eq(&pretty);
}

#[test]
fn a_restart_just_before_the_notification_does_not_hide_a_regression() {
    // The deploy restarts the app: 3 s of 502s, then the notification (as the README says:
    // once the new version is live). Before deploy windows, this burst was the tail of the
    // baseline and the 5% failure of /checkout was judged healthy ("0.53x").
    let with_burst = run_generated(&Spec {
        seed: 21,
        burst: Some((-3.0, 0.0)),
        effect: checkout_five_percent,
        ..production()
    });
    check(
        "restart_then_checkout_errors",
        &with_burst,
        Verdict::Regressed,
    );
    let clean = run_generated(&Spec {
        seed: 21,
        effect: checkout_five_percent,
        ..production()
    });
    assert_eq!(clean.verdict, Verdict::Regressed);
    // The burst costs nothing: the same traffic is decided at the same second.
    assert_eq!(with_burst.decided_at, clean.decided_at);
    let window = with_burst.report.deploy_window.unwrap();
    assert_eq!(window.to - window.from, 60.0);
    assert!(!window.given);
}

#[test]
fn a_restart_burst_before_a_clean_change_is_not_a_regression() {
    let spec = Spec {
        seed: 22,
        ..production()
    };
    let r = run_generated(&Spec {
        burst: Some((-3.0, 0.0)),
        ..spec
    });
    check("restart_then_nothing", &r, Verdict::Healthy);
    // Not one of the 502s is in the baseline.
    let without = run_generated(&spec);
    assert_eq!(
        r.report.signals[0].baseline.events,
        without.report.signals[0].baseline.events
    );
}

#[test]
fn a_long_deploy_given_its_start_is_left_out_whole() {
    // The deploy began two minutes before the notification and its first 20 s failed
    // everything: further back than the guard interval, so only --deploy-started-at keeps it
    // out of the baseline.
    let spec = Spec {
        seed: 23,
        effect: checkout_five_percent,
        ..production()
    };
    let burst = Spec {
        burst: Some((-120.0, -100.0)),
        ..spec
    };
    let given = run_day(&burst, &[(0.0, Some(-120.0))]);
    check_day("long_deploy_given", &given, &["regressed"]);
    let clean = run_day(&spec, &[(0.0, Some(-120.0))]);
    let errors = |day: &[Replay]| day[0].report.signals[0].baseline.events;
    assert_eq!(errors(&given), errors(&clean));
    let guessed = run_day(&burst, &[(0.0, None)]);
    assert!(errors(&guessed) > errors(&clean) + 100);
}

#[test]
fn a_change_right_after_a_healthy_one_gets_a_full_baseline() {
    // The first change is clean and judged healthy when its window ends, 30 minutes on; the
    // next lands 11 s later and breaks /checkout. Before the baseline was continuous, its
    // baseline was those 11 s, and a 30% failure went unjudged for the whole watch.
    let day = run_day(
        &Spec {
            seed: 24,
            after_secs: 2400,
            effect: |t, req, rng| {
                if t >= 1811.0 && req.route == 2 && rng.chance(0.3) {
                    req.error = true;
                }
            },
            ..production()
        },
        &[(0.0, None), (1811.0, Some(1806.0))],
    );
    check_day("back_to_back", &day, &["healthy", "regressed"]);
    let second = &day[1];
    assert!(second.decided_at.unwrap() - second.change_at < 30.0);
    assert_eq!(second.report.baseline_window.covered_secs, 1800.0);
    assert!(
        second.report.baseline_notes.is_empty(),
        "{:?}",
        second.report.baseline_notes
    );
}

#[test]
fn a_change_landing_mid_watch_supersedes_the_one_before() {
    let day = run_day(
        &Spec {
            seed: 25,
            after_secs: 2400,
            ..production()
        },
        &[(0.0, None), (300.0, None)],
    );
    check_day("superseded", &day, &["superseded", "healthy"]);
    assert!(day[0].report.requests_after > 0);
}

#[test]
fn a_thin_slow_request_signal_does_not_make_a_clean_change_inconclusive() {
    // One route at 0.6 req/s with 5% errors: errors bound the harm well, but only about 11
    // requests are above the baseline's p99, too few for the slow-request bound to ever get
    // under 2x. Clean changes are healthy with that signal left out, and say so.
    let thin = |seed| Spec {
        seed,
        rate: 0.6,
        mix: Some([1.0, 0.0, 0.0]),
        error_rate: 0.05,
        ..Spec::default()
    };
    let (mut compared, mut healthy) = (0, 0);
    for seed in 30..50 {
        let r = run_generated(&thin(seed));
        let slow = &r.report.signals[1];
        if slow.not_compared.is_some() {
            continue;
        }
        compared += 1;
        assert!(slow.thin.is_some(), "seed {seed}");
        if r.verdict == Verdict::Healthy {
            healthy += 1;
            assert!(slow.left_out);
            let text = r.render_text();
            assert!(
                text.contains("Not part of the verdict: slow requests"),
                "{text}"
            );
        }
        // 3% of requests five times slower: three times as many past the old p99. Never
        // waved through as healthy.
        let worse = run_generated(&Spec {
            effect: |_, req, rng| {
                if rng.chance(0.03) {
                    req.latency_ms *= 5.0;
                }
            },
            ..thin(seed)
        });
        assert_ne!(
            worse.verdict,
            Verdict::Healthy,
            "seed {seed}: {}",
            worse.render_text()
        );
    }
    assert!(compared >= 8, "{compared}");
    // Without the rule none would be; with it, most of them.
    assert!(healthy * 2 >= compared, "{healthy} of {compared} healthy");
    let first = (30..50)
        .map(|seed| run_generated(&thin(seed)))
        .find(|r| r.report.signals[1].left_out)
        .unwrap();
    check("thin_tail_clean", &first, Verdict::Healthy);
}

#[test]
fn a_real_nginx_log_with_restarting_deploys_is_judged_as_the_daemon_judged_it() {
    // Recorded behind real nginx (testdata/README.md): every deploy restarted the app and
    // nginx answered about 110 requests with 502 just before the notification.
    let config = Config::parse("[detector]\nbaseline_secs = 300\nwatch_secs = 300\n").unwrap();
    let changes = [
        ChangeSpec {
            at: 1_796_360_518.970,
            deploy_started_at: None,
        },
        ChangeSpec {
            at: 1_796_360_846.914,
            deploy_started_at: Some(1_796_360_842.976),
        },
        ChangeSpec {
            at: 1_796_361_178.045,
            deploy_started_at: Some(1_796_361_174.511),
        },
    ];
    let file = File::open(sample("restart_deploys.nginx.log")).unwrap();
    let day = replay_changes(BufReader::new(file), Format::Nginx, &changes, &config).unwrap();
    check_day(
        "nginx_restarts",
        &day,
        &["healthy", "inconclusive", "regressed"],
    );
    // Not one restart 502 in any baseline: each holds the app's own few errors only.
    for r in &day {
        let errors = &r.report.signals[0].baseline;
        assert!(
            errors.events < 30,
            "{} errors in {}",
            errors.events,
            errors.requests
        );
    }
    // The clean change with 8 errors in its baseline was warned about.
    assert!(day[1]
        .notes
        .iter()
        .any(|n| n.starts_with("errors: the baseline holds 8")));
    let bad = &day[2];
    assert!(bad.decided_at.unwrap() - bad.change_at < 20.0);
    assert_eq!(
        bad.report.signals[0].worst_route.as_deref(),
        Some("/checkout")
    );
}
