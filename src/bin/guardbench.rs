//! guardbench: measures guardian's decision core against the oracle and its peers on simulated
//! deploys with a known truth. Seeded: the same command prints the same tables.
//!
//! Peers run twice: as shipped, and calibrated (one knob each, chosen on separate seeds so that
//! their false-rollback rate on the combined-nuisance null family is at most 1%, guardian's
//! alpha). Speed is only comparable between detectors calibrated to the same false-rollback rate.

use std::time::Instant;

use clap::Parser;
use guardian::bench::harness::{run_many, ttd_quantiles, wilson, GuardianCall, Outcome};
use guardian::bench::peers::{Argo, Flagger, Kayenta};
use guardian::bench::sim::{information_per_second, Nuisance, Regression, Scenario};
use guardian::bench::Detector;
use guardian::core::{DetectorSettings, Monitor, Request};

#[derive(Parser)]
#[command(about = "Benchmark guardian's decision core against an oracle and its peers")]
struct Args {
    /// Null deploys per nuisance and traffic level.
    #[arg(long, default_value_t = 200)]
    nulls: u64,
    /// Deploys per regression cell.
    #[arg(long, default_value_t = 100)]
    regressions: u64,
    /// Null deploys per traffic level used to calibrate the peers.
    #[arg(long, default_value_t = 200)]
    calibration: u64,
    /// Traffic levels, in requests per second.
    #[arg(long, value_delimiter = ',', default_value = "1,20,200")]
    rps: Vec<f64>,
    /// Only regression cells whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Skip the null families.
    #[arg(long)]
    skip_nulls: bool,
}

const PEERS: [&str; 3] = ["Flagger", "Argo", "Kayenta"];
const FLAGGER_KNOBS: [f64; 12] = [
    1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0,
];
const ARGO_KNOBS: [f64; 12] = [
    1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0, 40.0,
];
const KAYENTA_KNOBS: [f64; 8] = [0.98, 0.99, 0.995, 0.998, 0.999, 0.9999, 0.99999, 0.999999];

fn peer(i: usize, knob: f64) -> Box<dyn Detector> {
    match i {
        0 => Box::new(Flagger::calibrated(knob)),
        1 => Box::new(Argo::calibrated(knob)),
        _ => Box::new(Kayenta::calibrated(knob)),
    }
}

fn knobs(i: usize) -> &'static [f64] {
    match i {
        0 => &FLAGGER_KNOBS,
        1 => &ARGO_KNOBS,
        _ => &KAYENTA_KNOBS,
    }
}

fn as_shipped() -> Vec<Box<dyn Detector>> {
    vec![
        Box::new(Flagger::as_shipped()),
        Box::new(Argo::as_shipped()),
        Box::new(Kayenta::as_shipped()),
    ]
}

/// The knob per peer whose false-rollback rate on the combined null family is at most `target`,
/// the most sensitive such knob (knobs are ordered from most to least sensitive). `None` when
/// even the least sensitive knob rolls back too often.
fn calibrate(rps: f64, runs: u64, settings: &DetectorSettings, target: f64) -> Vec<Option<f64>> {
    let scenario = Scenario::before_after(rps, Nuisance::Combined, Regression::None);
    let all = || {
        (0..PEERS.len())
            .flat_map(|i| knobs(i).iter().map(move |&k| peer(i, k)))
            .collect::<Vec<_>>()
    };
    let out = run_many(scenario, runs, 50_000_001, settings, &all);
    let mut column = 0;
    (0..PEERS.len())
        .map(|i| {
            let mut chosen = None;
            for &k in knobs(i) {
                let fr = out.iter().filter(|o| o.peers[column].is_some()).count();
                column += 1;
                if chosen.is_none() && (fr as f64) <= target * out.len() as f64 {
                    chosen = Some(k);
                }
            }
            chosen
        })
        .collect()
}

fn pct(k: usize, n: usize) -> String {
    format!("{:.1}%", 100.0 * k as f64 / n.max(1) as f64)
}

fn main() {
    let args = Args::parse();
    let settings = DetectorSettings::default();
    let started = Instant::now();
    let mut calibrated: Vec<(f64, Vec<Option<f64>>)> = Vec::new();

    println!("## Calibration of the peers\n");
    println!("Knob chosen per traffic level so that the false-rollback rate on {} null deploys of the combined family (seeds apart from the evaluation's) is at most 1%.\n", args.calibration);
    println!("| traffic | Flagger (error % and p99 limit x k) | Argo (ratio c) | Kayenta (confidence level) |");
    println!("|---|---|---|---|");
    for &rps in &args.rps {
        let knobs = calibrate(rps, args.calibration, &settings, settings.alpha);
        let show = |k: Option<f64>| k.map_or("none reaches 1%".to_string(), |k| format!("{k}"));
        println!(
            "| {rps} rps | {} | {} | {} |",
            show(knobs[0]),
            show(knobs[1]),
            show(knobs[2])
        );
        calibrated.push((rps, knobs));
    }
    let detectors_for = |rps: f64| {
        let knobs = calibrated
            .iter()
            .find(|(r, _)| *r == rps)
            .map(|(_, k)| k.clone())
            .unwrap_or_default();
        move || {
            let mut d = as_shipped();
            for (i, k) in knobs.iter().enumerate() {
                // A peer that cannot reach the target runs at its least sensitive knob.
                let k = k.unwrap_or(*self::knobs(i).last().unwrap_or(&1.0));
                d.push(peer(i, k));
            }
            d
        }
    };

    if !args.skip_nulls {
        println!("\n## False rollbacks on null deploys (no regression)\n");
        println!("{} deploys per cell; 30 minutes of baseline, 30 minutes watched. Rate (Wilson 95% interval). guardian's verdicts on the rest: healthy / inconclusive.\n", args.nulls);
        println!("| traffic | nuisance | guardian | 95% CI | healthy / inconclusive | Flagger | Argo | Kayenta | Flagger cal. | Argo cal. | Kayenta cal. |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for &rps in &args.rps {
            let make = detectors_for(rps);
            for nuisance in Nuisance::ALL {
                let s = Scenario::before_after(rps, nuisance, Regression::None);
                println!("{}", null_row(s, args.nulls, &settings, &make));
            }
        }
    }

    println!("\n## Regressions: detection and time to detect\n");
    println!("{} deploys per cell, clean traffic. Each detector: detection rate within the 30-minute watch, then median / p90 time to detect in seconds after the onset. T* = ln(1/alpha)/I with alpha = 0.01 and I the KL information per second against the true baseline and against the nearest traffic the null allows (baseline error rate x1.10, latencies x1.05). \"vs T*null\" is guardian's median over T*null; \"vs oracle\" its median over the oracle's.\n", args.regressions);
    println!("| traffic | regression | guardian | oracle | T* base | T* null | vs T*null | vs oracle | bad requests before decision (guardian / oracle) | Flagger | Argo | Kayenta | Flagger cal. | Argo cal. | Kayenta cal. |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let regressions = [
        Regression::ErrorRate(1.25),
        Regression::ErrorRate(1.5),
        Regression::ErrorRate(2.0),
        Regression::ErrorRate(3.0),
        Regression::ErrorRate(5.0),
        Regression::ErrorRate(20.0),
        Regression::Outage,
        Regression::OneRouteBroken,
        Regression::Median(1.10),
        Regression::Median(1.25),
        Regression::Median(1.5),
        Regression::TailOnly(0.06),
        Regression::DelayedErrorRate(3.0),
    ];
    for &rps in &args.rps {
        let make = detectors_for(rps);
        for regression in regressions {
            if args
                .only
                .as_ref()
                .is_some_and(|o| !regression.name().contains(o.as_str()))
            {
                continue;
            }
            let s = Scenario::before_after(rps, Nuisance::Clean, regression);
            println!("{}", regression_row(s, args.regressions, &settings, &make));
        }
    }

    concurrent_section(&args, &settings, &detectors_for(20.0));

    println!("\n## Cost of the core\n");
    let (per_obs, per_sec) = core_cost(&settings);
    println!("| what | cost |\n|---|---|\n| one request observed (3 routes, 200 req/s) | {per_obs:.0} ns |\n| one second judged (3 routes, 200 req/s, all tests) | {per_sec:.1} µs |");
    eprintln!(
        "guardbench done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

type Peers<'a> = dyn Fn() -> Vec<Box<dyn Detector>> + Sync + 'a;

/// One row of the null table: false rollbacks of guardian and of each peer.
fn null_row(s: Scenario, runs: u64, settings: &DetectorSettings, make: &Peers) -> String {
    let out = run_many(s, runs, 1, settings, make);
    let n = out.len();
    let fr = out
        .iter()
        .filter(|o| matches!(o.guardian, GuardianCall::Regressed(..)))
        .count();
    let healthy = out
        .iter()
        .filter(|o| o.guardian == GuardianCall::Healthy)
        .count();
    let (lo, hi) = wilson(fr, n);
    let peers: Vec<String> = (0..6)
        .map(|i| pct(out.iter().filter(|o| o.peers[i].is_some()).count(), n))
        .collect();
    format!(
        "| {} rps | {} | **{}** | {:.1}-{:.1}% | {} / {} | {} |",
        s.rps,
        s.nuisance.name(),
        pct(fr, n),
        100.0 * lo,
        100.0 * hi,
        pct(healthy, n),
        pct(n - fr - healthy, n),
        peers.join(" | ")
    )
}

/// One row of the regression table: detection and time to detect of every detector.
fn regression_row(s: Scenario, runs: u64, settings: &DetectorSettings, make: &Peers) -> String {
    let out = run_many(s, runs, 1_000_001, settings, make);
    let guardian: Vec<Option<f64>> = out
        .iter()
        .map(|o| match o.guardian {
            GuardianCall::Regressed(t, _) => Some(t - o.onset),
            _ => None,
        })
        .collect();
    let oracle: Vec<Option<f64>> = out.iter().map(|o| o.oracle.map(|t| t - o.onset)).collect();
    let cell = |times: &[Option<f64>]| -> (String, Option<f64>) {
        let hits: Vec<f64> = times.iter().flatten().copied().collect();
        let q = ttd_quantiles(&hits);
        let text = match q {
            Some((m, p90)) => {
                format!("{} · {:.0} / {:.0}", pct(hits.len(), times.len()), m, p90)
            }
            None => format!("{} · -", pct(0, times.len())),
        };
        (text, q.map(|q| q.0))
    };
    let (g_text, g_med) = cell(&guardian);
    let (o_text, o_med) = cell(&oracle);
    let (i_base, i_null) =
        information_per_second(s, settings.error_tolerance, settings.latency_tolerance);
    let tstar = |i: f64| {
        if i > 0.0 {
            (1.0 / settings.alpha).ln() / i
        } else {
            f64::INFINITY
        }
    };
    let bad = |pick: &dyn Fn(&Outcome) -> Option<f64>| {
        let mut v: Vec<f64> = out.iter().map(|o| o.bad_before(pick(o))).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let bad_g = bad(&|o| match o.guardian {
        GuardianCall::Regressed(t, _) => Some(t),
        _ => None,
    });
    let bad_o = bad(&|o| o.oracle);
    let peers: Vec<String> = (0..6)
        .map(|i| {
            // A rollback before the onset is a false one, not a detection.
            let times: Vec<Option<f64>> = out
                .iter()
                .map(|o| o.peers[i].map(|t| t - o.onset).filter(|&d| d >= 0.0))
                .collect();
            cell(&times).0
        })
        .collect();
    let ratio = |a: Option<f64>, b: f64| match a {
        Some(a) if b.is_finite() && b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    };
    format!(
        "| {} rps | {} | **{g_text}** | {o_text} | {:.0} | {} | {} | {} | {:.0} / {:.0} | {} |",
        s.rps,
        s.regression.name(),
        tstar(i_base),
        if tstar(i_null).is_finite() {
            format!("{:.0}", tstar(i_null))
        } else {
            "inf".into()
        },
        ratio(g_med, tstar(i_null)),
        ratio(g_med, o_med.unwrap_or(f64::NAN)),
        bad_g,
        bad_o,
        peers.join(" | ")
    )
}

/// Old and new versions side by side: the design that cancels drift and incidents common to
/// both, at 20 req/s.
fn concurrent_section(args: &Args, settings: &DetectorSettings, make: &Peers) {
    println!("\n## Concurrent design: old and new versions side by side\n");
    println!("After the change, each route's traffic is split 50/50 between the old version (arm `control`) and the new one (arm `canary`); requests carry their arm and guardian compares the arms second by second. Only the new arm regresses. The incident family (every request on both versions fails 5x as often for two minutes, at a random time in the watch) is also run in the before/after design for contrast. Peers compare canary with control too. {} null deploys and {} regression deploys per cell, 20 req/s; peers calibrated as above for 20 req/s.\n", args.nulls, args.regressions);
    println!("| traffic | nuisance | guardian | 95% CI | healthy / inconclusive | Flagger | Argo | Kayenta | Flagger cal. | Argo cal. | Kayenta cal. |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for nuisance in [
        Nuisance::Clean,
        Nuisance::Diurnal,
        Nuisance::Incident,
        Nuisance::Combined,
    ] {
        let s = Scenario::concurrent(20.0, nuisance, Regression::None);
        println!(
            "{}",
            null_row(s, args.nulls, settings, make).replacen("20 rps", "20 rps, concurrent", 1)
        );
    }
    let s = Scenario::before_after(20.0, Nuisance::Incident, Regression::None);
    println!(
        "{}",
        null_row(s, args.nulls, settings, make).replacen("20 rps", "20 rps, before/after", 1)
    );
    println!();
    println!("| traffic | regression | guardian | oracle | T* base | T* null | vs T*null | vs oracle | bad requests before decision (guardian / oracle) | Flagger | Argo | Kayenta | Flagger cal. | Argo cal. | Kayenta cal. |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for regression in [
        Regression::ErrorRate(2.0),
        Regression::ErrorRate(5.0),
        Regression::Outage,
        Regression::Median(1.25),
        Regression::TailOnly(0.06),
    ] {
        let s = Scenario::concurrent(20.0, Nuisance::Clean, regression);
        println!(
            "{}",
            regression_row(s, args.regressions, settings, make).replacen(
                "20 rps",
                "20 rps, concurrent",
                1
            )
        );
    }
}

/// Nanoseconds per request fed to the core, and microseconds per second of traffic judged,
/// measured on one core with requests at 200 per second over three routes.
fn core_cost(settings: &DetectorSettings) -> (f64, f64) {
    let routes = ["/", "/search", "/checkout"];
    let t0 = 1_764_000_000.0;
    let mut monitor = Monitor::new(settings.clone());
    let per_second = 200u64;
    let before = 1_800 * per_second;
    let feed = |m: &mut Monitor, i: u64| {
        m.observe_request(&Request {
            ts: t0 - 1800.0 + i as f64 / per_second as f64,
            error: i % 97 == 0,
            latency_ms: Some(20.0 + (i % 113) as f64),
            route: Some(routes[(i % 3) as usize]),
            arm: None,
        });
    };
    let start = Instant::now();
    for i in 0..before {
        feed(&mut monitor, i);
    }
    let baseline_ns = start.elapsed().as_nanos() as f64 / before as f64;
    monitor.change_landed(t0);
    let after = 1_800 * per_second;
    let start = Instant::now();
    for i in before..before + after {
        feed(&mut monitor, i);
    }
    monitor.tick(t0 + 1800.0);
    let watch = start.elapsed();
    let watch_ns = watch.as_nanos() as f64 / after as f64;
    let per_obs = baseline_ns.max(watch_ns);
    (per_obs, watch.as_secs_f64() * 1e6 / 1800.0)
}
