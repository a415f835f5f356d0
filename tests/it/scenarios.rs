//! Scenarios of the decision core: traffic in, verdict and key evidence out, compared with the
//! expectations checked in under `tests/it/expected/<scenario>.json`.
//!
//! The traffic is generated here by a small seeded generator (so it is the same on every
//! machine), or read from the samples in `testdata/`, and replayed through
//! `guardian::replay::replay` with the default configuration. Each scenario also states the
//! verdict it must reach, so a regenerated expectation cannot quietly encode a wrong one.
//!
//! When the core changes on purpose, regenerate the expectations and review the diff:
//!
//! ```text
//! UPDATE_EXPECT=1 cargo test --test it scenarios
//! ```

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, Cursor};
use std::path::PathBuf;

use serde_json::{json, Value};

use guardian::config::Config;
use guardian::core::Verdict;
use guardian::input::Format;
use guardian::replay::{replay, verdict_name, Replay};

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

struct Spec {
    seed: u64,
    /// Requests per second.
    rate: f64,
    before_secs: i64,
    after_secs: i64,
    error_rate: f64,
    /// Route shares after the change, if the mix shifts.
    mix_after: Option<[f64; 3]>,
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
            mix_after: None,
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
                _ => ROUTES.map(|r| r.share),
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
            let _ = writeln!(
                out,
                r#"{{"ts":{:.3},"status":{},"latency_ms":{:.2},"route":"{}"}}"#,
                CHANGE_AT + t,
                if req.error { 500 } else { 200 },
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
            v
        })
        .collect();
    json!({
        "verdict": verdict_name(r.verdict),
        "decided_at": r.decided_at,
        "decided_after_secs": r.decided_at.map(|t| t - r.change_at),
        "signals": signals,
    })
}

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
    let path = expected_path(name);
    let pretty = serde_json::to_string_pretty(&got).unwrap() + "\n";
    if std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1") {
        std::fs::write(&path, &pretty).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "scenario {name}: no expectation at {} ({e}); run with UPDATE_EXPECT=1 to write it",
            path.display()
        )
    });
    let want: Value = serde_json::from_str(&want).unwrap();
    assert!(
        got == want,
        "scenario {name} differs from {}\n--- expected\n{}\n--- got\n{pretty}\
         If the core changed on purpose, rerun with UPDATE_EXPECT=1 and review the diff.",
        path.display(),
        serde_json::to_string_pretty(&want).unwrap(),
    );
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
