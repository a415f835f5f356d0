//! guardbench: measures guardian's decision core against the oracle and its peers on simulated
//! deploys with a known truth. Seeded: the same command prints the same tables.
//!
//! Peers run twice: as shipped, and calibrated (one knob each, chosen on separate seeds so that
//! their false-rollback rate on the combined-nuisance null family is at most 1%, guardian's
//! alpha). Speed is only comparable between detectors calibrated to the same false-rollback rate.
//!
//! The tables go to standard output; while a row runs, standard error shows which one and how
//! long the benchmark has taken, when it is a terminal (`bench::progress`).

use std::sync::Mutex;
use std::time::Instant;

use clap::Parser;
use guardian::bench::harness::{run_many, ttd_quantiles, wilson, GuardianCall, Outcome};
use guardian::bench::peers::{Argo, Flagger, Kayenta};
use guardian::bench::progress::Progress;
use guardian::bench::sim::{
    information_per_second, Nuisance, Previous, Regression, Restart, Scenario,
};
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

/// The progress line on standard error (when it is a terminal) and when the benchmark began:
/// set once in `main`, told by every row as it starts and ends.
static PROGRESS: Mutex<Option<(Progress<std::io::Stderr>, Instant)>> = Mutex::new(None);

/// Says a row of the tables is under way.
fn row_starts(what: &str) {
    if let Ok(mut guard) = PROGRESS.lock() {
        if let Some((progress, started)) = guard.as_mut() {
            progress.row(what, started.elapsed());
        }
    }
}

/// Clears the progress line for the row to be printed.
fn row_ends() {
    if let Ok(mut guard) = PROGRESS.lock() {
        if let Some((progress, _)) = guard.as_mut() {
            progress.row_done();
        }
    }
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
    row_starts(&format!("{rps} rps: calibrating the peers"));
    let scenario = Scenario::before_after(rps, Nuisance::Combined, Regression::None);
    let all = || {
        (0..PEERS.len())
            .flat_map(|i| knobs(i).iter().map(move |&k| peer(i, k)))
            .collect::<Vec<_>>()
    };
    let out = run_many(scenario, runs, 50_000_001, settings, &all);
    row_ends();
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
    if let Ok(mut progress) = PROGRESS.lock() {
        *progress = Some((Progress::on_stderr(), started));
    }
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
            .unwrap_or_else(|| vec![None; PEERS.len()]);
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
        println!("{NULL_HEADER}");
        for &rps in &args.rps {
            let make = detectors_for(rps);
            for nuisance in Nuisance::ALL {
                let s = Scenario::before_after(rps, nuisance, Regression::None);
                println!("{}", null_row(s, args.nulls, &settings, &make));
            }
        }
    }

    println!("\n## Regressions: detection and time to detect\n");
    println!("{} deploys per cell, clean traffic. Each detector: detection rate within the 30-minute watch, then median / p90 time to detect in seconds after the onset; \"healthy\": regressions guardian called healthy (false healthy verdicts; \"thin\": of which with a thin signal left out). T* = ln(1/alpha)/I with alpha = 0.01 and I the KL information per second against the true baseline and against the nearest traffic the null allows (baseline error rate x1.10, latencies x1.05). \"vs T*null\" is guardian's median over T*null; \"vs oracle\" its median over the oracle's.\n", args.regressions);
    println!("{REGRESSION_HEADER}");
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
    production_section(&args, &settings, &detectors_for);
    fleet_section(&args, &settings, &detectors_for);

    println!("\n## Cost of the core\n");
    row_starts("the cost of the core");
    let (per_obs, per_sec) = core_cost(&settings);
    row_ends();
    println!("| what | cost |\n|---|---|\n| one request observed (3 routes, 200 req/s) | {per_obs:.0} ns |\n| one second judged (3 routes, 200 req/s, all tests) | {per_sec:.1} µs |");
    eprintln!(
        "guardbench done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

type Peers<'a> = dyn Fn() -> Vec<Box<dyn Detector>> + Sync + 'a;

/// One row of the null table: false rollbacks of guardian and of each peer.
fn null_row(s: Scenario, runs: u64, settings: &DetectorSettings, make: &Peers) -> String {
    null_row_as(s.nuisance.name(), s, runs, settings, make)
}

/// A null row whose second column says `what`.
fn null_row_as(
    what: &str,
    s: Scenario,
    runs: u64,
    settings: &DetectorSettings,
    make: &Peers,
) -> String {
    row_starts(&format!("{} rps: {what}, null", s.rps));
    let out = run_many(s, runs, 1, settings, make);
    row_ends();
    let n = out.len();
    let fr = out
        .iter()
        .filter(|o| matches!(o.guardian, GuardianCall::Regressed(..)))
        .count();
    let healthy = out
        .iter()
        .filter(|o| matches!(o.guardian, GuardianCall::Healthy { .. }))
        .count();
    let (lo, hi) = wilson(fr, n);
    let peers: Vec<String> = (0..6)
        .map(|i| pct(out.iter().filter(|o| o.peers[i].is_some()).count(), n))
        .collect();
    format!(
        "| {} rps | {} | **{}** | {:.1}-{:.1}% | {} / {} | {} |",
        s.rps,
        what,
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
    regression_row_as(&s.regression.name(), s, runs, settings, make).0
}

/// A regression row whose second column says `what`, and guardian's median time to detect.
fn regression_row_as(
    what: &str,
    s: Scenario,
    runs: u64,
    settings: &DetectorSettings,
    make: &Peers,
) -> (String, Option<f64>) {
    row_starts(&format!("{} rps: {what}", s.rps));
    let out = run_many(s, runs, 1_000_001, settings, make);
    row_ends();
    let healthy_with = |rule: Option<bool>| {
        out.iter()
            .filter(|o| match o.guardian {
                GuardianCall::Healthy { left_out } => rule.is_none_or(|r| r == left_out),
                _ => false,
            })
            .count()
    };
    // False healthy verdicts, and how many of them left a thin signal out.
    let false_healthy = match healthy_with(Some(true)) {
        0 => healthy_with(None).to_string(),
        thin => format!("{} ({thin} thin)", healthy_with(None)),
    };
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
                .map(|o| {
                    // A row run without peers (a reference for guardian alone) has none.
                    o.peers
                        .get(i)
                        .copied()
                        .flatten()
                        .map(|t| t - o.onset)
                        .filter(|&d| d >= 0.0)
                })
                .collect();
            cell(&times).0
        })
        .collect();
    let ratio = |a: Option<f64>, b: f64| match a {
        Some(a) if b.is_finite() && b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    };
    let row = format!(
        "| {} rps | {} | **{g_text}** | {false_healthy} | {o_text} | {:.0} | {} | {} | {} | {:.0} / {:.0} | {} |",
        s.rps,
        what,
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
    );
    (row, g_med)
}

const REGRESSION_HEADER: &str = "| traffic | regression | guardian | healthy | oracle | T* base | T* null | vs T*null | vs oracle | bad requests before decision (guardian / oracle) | Flagger | Argo | Kayenta | Flagger cal. | Argo cal. | Kayenta cal. |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";
const NULL_HEADER: &str = "| traffic | nuisance | guardian | 95% CI | healthy / inconclusive | Flagger | Argo | Kayenta | Flagger cal. | Argo cal. | Kayenta cal. |\n|---|---|---|---|---|---|---|---|---|---|---|";

/// Old and new versions side by side: the design that cancels drift and incidents common to
/// both, at 20 req/s.
fn concurrent_section(args: &Args, settings: &DetectorSettings, make: &Peers) {
    println!("\n## Concurrent design: old and new versions side by side\n");
    println!("After the change, each route's traffic is split 50/50 between the old version (arm `control`) and the new one (arm `canary`); requests carry their arm and guardian compares the arms second by second. Only the new arm regresses. The incident family (every request on both versions fails 5x as often for two minutes, at a random time in the watch) is also run in the before/after design for contrast. Peers compare canary with control too. {} null deploys and {} regression deploys per cell, 20 req/s; peers calibrated as above for 20 req/s.\n", args.nulls, args.regressions);
    println!("{NULL_HEADER}");
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
    println!("{REGRESSION_HEADER}");
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

/// What production does to deploys that clean recordings do not: the restart's failures just
/// before the notification, changes back to back, and too little traffic for the tail.
fn production_section<F, P>(args: &Args, settings: &DetectorSettings, detectors_for: &F)
where
    F: Fn(f64) -> P,
    P: Fn() -> Vec<Box<dyn Detector>> + Sync,
{
    let wanted = |r: &Regression| {
        args.only
            .as_ref()
            .is_none_or(|o| r.name().contains(o.as_str()))
    };
    // The last row takes the guard away: what the restart's burst does to a baseline that
    // keeps it (as guardian's did before deploy windows).
    let unguarded = DetectorSettings {
        deploy_guard_secs: 0,
        ..settings.clone()
    };
    let restarts = [
        (Restart::None, "no restart", settings),
        (Restart::Unannounced, "restart, start not given", settings),
        (Restart::Announced, "restart, --deploy-started-at", settings),
        (
            Restart::Unannounced,
            "restart, no guard (deploy_guard_secs = 0)",
            &unguarded,
        ),
    ];
    println!("\n## Production: restarts, changes back to back, thin tails\n");
    println!("### A restart just before the change\n");
    println!("The deploy restarts the service: for 1 to 5 s (drawn per deploy) just before the change is notified, every request fails at once (502s, refused connections). guardian is told when the deploy began (`--deploy-started-at`) or not (then the last `deploy_guard_secs` = 60 s are the deploy window). Peers see the same seconds. {} null and {} regression deploys per cell, clean traffic.\n", args.nulls, args.regressions);
    println!("{}", NULL_HEADER.replacen("nuisance", "deploy", 1));
    for &rps in &args.rps {
        let make = detectors_for(rps);
        for (restart, name, settings) in restarts {
            let s = Scenario {
                restart,
                ..Scenario::before_after(rps, Nuisance::Clean, Regression::None)
            };
            println!("{}", null_row_as(name, s, args.nulls, settings, &make));
        }
    }
    println!();
    println!(
        "{}",
        REGRESSION_HEADER
            .replacen(
                "| regression |",
                "| regression, deploy | vs no restart |",
                1
            )
            .replacen("|---|", "|---|---|", 1)
    );
    let regressions = [
        Regression::ErrorRate(2.0),
        Regression::ErrorRate(3.0),
        Regression::ErrorRate(5.0),
        Regression::Outage,
        Regression::OneRouteBroken,
    ];
    for &rps in &args.rps {
        let make = detectors_for(rps);
        for regression in regressions.iter().filter(|r| wanted(r)) {
            let mut reference = None;
            for (restart, name, settings) in restarts {
                let s = Scenario {
                    restart,
                    ..Scenario::before_after(rps, Nuisance::Clean, *regression)
                };
                let what = format!("{}, {name}", regression.name());
                let median = print_against(&what, reference, s, args.regressions, settings, &make);
                if restart == Restart::None {
                    reference = median;
                }
            }
        }
    }

    println!("\n### Changes back to back\n");
    println!("The measured change lands 5 s to 10 min (drawn per deploy) after the change before it was done with: a clean one judged healthy when its 30-minute window ended, or an outage that guardian caught and reverted (the service is back a minute after it landed; the recovery check lasts two minutes). guardian is driven as the daemon drives it; \"vs full baseline\" compares guardian's median time to detect with the same regression after 30 quiet minutes.\n");
    println!("{}", NULL_HEADER.replacen("nuisance", "before it", 1));
    let previous = [
        (Previous::Healthy, "after a healthy change"),
        (Previous::RolledBack, "after a rollback"),
    ];
    for &rps in &args.rps {
        let make = detectors_for(rps);
        for (before, name) in previous {
            let s = Scenario {
                previous: before,
                ..Scenario::before_after(rps, Nuisance::Clean, Regression::None)
            };
            println!("{}", null_row_as(name, s, args.nulls, settings, &make));
        }
    }
    println!();
    println!(
        "{}",
        REGRESSION_HEADER
            .replacen(
                "| regression |",
                "| regression, before it | vs full baseline |",
                1
            )
            .replacen("|---|", "|---|---|", 1)
    );
    for &rps in &args.rps {
        let make = detectors_for(rps);
        for regression in [
            Regression::ErrorRate(2.0),
            Regression::ErrorRate(5.0),
            Regression::Median(1.25),
        ]
        .iter()
        .filter(|r| wanted(r))
        {
            let full = Scenario::before_after(rps, Nuisance::Clean, *regression);
            let what = format!("{}, 30 quiet minutes", regression.name());
            let reference = print_against(&what, None, full, args.regressions, settings, &make);
            for (before, name) in previous {
                let s = Scenario {
                    previous: before,
                    ..full
                };
                let what = format!("{}, {name}", regression.name());
                print_against(&what, reference, s, args.regressions, settings, &make);
            }
        }
    }

    println!("\n### Thin tails\n");
    println!("So little traffic that about 10 to 20 requests of the baseline are above its p99: the slow-request signal can never bound the harm under `healthy_max_ratio`. It is left out of a healthy verdict while its data favour no harm over harm at the limit; \"of which thanks to that\" counts the healthy verdicts that needed it (without the rule they would be inconclusive). On regressions, \"healthy\" counts the false healthy verdicts. Peers run at their least sensitive knob: none is calibrated at this traffic.\n");
    println!(
        "| traffic | guardian false rollbacks | healthy | of which thanks to that | inconclusive |"
    );
    println!("|---|---|---|---|---|");
    let thin = [0.6, 1.2];
    for rps in thin {
        let s = Scenario::before_after(rps, Nuisance::Clean, Regression::None);
        row_starts(&format!("{rps} rps: thin tails, null"));
        let out = run_many(s, args.nulls, 1, settings, &|| Vec::new());
        row_ends();
        let n = out.len();
        let count =
            |f: &dyn Fn(&GuardianCall) -> bool| out.iter().filter(|o| f(&o.guardian)).count();
        let fr = count(&|g| matches!(g, GuardianCall::Regressed(..)));
        let healthy = count(&|g| matches!(g, GuardianCall::Healthy { .. }));
        let rescued = count(&|g| matches!(g, GuardianCall::Healthy { left_out: true }));
        println!(
            "| {rps} rps | {} | {} | {} | {} |",
            pct(fr, n),
            pct(healthy, n),
            pct(rescued, n),
            pct(n - fr - healthy, n)
        );
    }
    println!();
    println!("{REGRESSION_HEADER}");
    for rps in thin {
        let make = detectors_for(rps);
        for regression in [
            Regression::TailOnly(0.06),
            Regression::TailOnly(0.04),
            Regression::Median(1.25),
            Regression::ErrorRate(2.0),
            Regression::ErrorRate(5.0),
        ]
        .iter()
        .filter(|r| wanted(r))
        {
            let s = Scenario::before_after(rps, Nuisance::Clean, *regression);
            println!("{}", regression_row(s, args.regressions, settings, &make));
        }
    }

    println!("\n### A host that stalls\n");
    println!("The host stalls every two minutes on average, for 2 to 8 s, in which every request is 4x slower, before and after the change alike (a noisy neighbour, a paused VM). The null rows are in the false-rollback table above. Here, what it costs to detect a regression on such a host: \"vs steady host\" is guardian's median time to detect over the same regression's on clean traffic. {} deploys per cell.\n", args.regressions);
    println!(
        "{}",
        REGRESSION_HEADER
            .replacen("| regression |", "| regression | vs steady host |", 1)
            .replacen("|---|", "|---|---|", 1)
    );
    for &rps in &args.rps {
        let make = detectors_for(rps);
        for regression in [
            Regression::ErrorRate(3.0),
            Regression::Outage,
            Regression::Median(1.25),
            Regression::Median(1.5),
            Regression::TailOnly(0.06),
        ]
        .iter()
        .filter(|r| wanted(r))
        {
            // The same regression on a steady host, guardian only: the reference.
            let (_, reference) = regression_row_as(
                &regression.name(),
                Scenario::before_after(rps, Nuisance::Clean, *regression),
                args.regressions,
                settings,
                &|| Vec::new(),
            );
            let s = Scenario::before_after(rps, Nuisance::HostStalls, *regression);
            let what = format!("{} on a stalling host", regression.name());
            print_against(&what, reference, s, args.regressions, settings, &make);
        }
    }
}

/// A fleet behind a load balancer, deployed canary first: the canary hosts against the rest,
/// read from the fleet's metrics, or one canary host's log alone, before against after.
fn fleet_section<F, P>(args: &Args, settings: &DetectorSettings, detectors_for: &F)
where
    F: Fn(f64) -> P,
    P: Fn() -> Vec<Box<dyn Detector>> + Sync,
{
    const FLEET_RPS: f64 = 200.0;
    let wanted = |r: &Regression| {
        args.only
            .as_ref()
            .is_none_or(|o| r.name().contains(o.as_str()))
    };
    println!("\n## A fleet: the canary against the rest, or one host's log alone\n");
    println!("N hosts serve {FLEET_RPS} req/s in all, with a daily cycle in traffic, errors and latency common to every host (diurnal drift). A canary deploy puts the new version on k of them. guardian reading the fleet's metrics (`[[daemon.promql]]` with `canary_label`) compares the canary hosts with the rest as they serve side by side; a guardian beside one canary host reading its log sees that host's {FLEET_RPS}/N req/s, before against after. \"vs one host's log\" is the canary comparison's median time to detect over the one host's. \"limit\" is the least that ratio can be for any comparison immune to drift common to every host, N/(k(N-k)): such a comparison cannot lean on the baseline (the drift may have moved it), so each arm's rate is estimated from its own traffic, and the rest's noise adds to the canary's. {} null and {} regression deploys per cell; peers at the fleet's traffic are calibrated as above for 200 req/s, at one host's they run at their least sensitive knob.\n", args.nulls, args.regressions);
    println!(
        "{}",
        NULL_HEADER.replacen("nuisance", "canary, nuisance", 1)
    );
    let make = detectors_for(FLEET_RPS);
    let fleets = [(4u32, 1u32), (4, 2), (8, 1), (8, 4)];
    for (n, k) in fleets {
        for nuisance in [Nuisance::Diurnal, Nuisance::Combined] {
            let share = f64::from(k) / f64::from(n);
            let s = Scenario::canary(FLEET_RPS, share, nuisance, Regression::None);
            let what = format!("{k} of {n} hosts, {}", nuisance.name());
            println!("{}", null_row_as(&what, s, args.nulls, settings, &make));
        }
    }
    println!();
    println!(
        "{}",
        REGRESSION_HEADER
            .replacen(
                "| regression |",
                "| regression, judged from | vs one host's log | limit |",
                1
            )
            .replacen("|---|", "|---|---|---|", 1)
    );
    for regression in [
        Regression::ErrorRate(2.0),
        Regression::ErrorRate(5.0),
        Regression::Median(1.25),
    ]
    .iter()
    .filter(|r| wanted(r))
    {
        for n in [4u32, 8] {
            let host_rps = FLEET_RPS / f64::from(n);
            let s = Scenario::before_after(host_rps, Nuisance::Diurnal, *regression);
            let what = format!("{}, one host's log ({host_rps} req/s)", regression.name());
            let reference = print_against_with(
                &what,
                &["-".to_owned()],
                None,
                s,
                args.regressions,
                settings,
                &detectors_for(host_rps),
            );
            for k in [1, n / 2] {
                let share = f64::from(k) / f64::from(n);
                let s = Scenario::canary(FLEET_RPS, share, Nuisance::Diurnal, *regression);
                let what = format!("{}, {k} of {n} hosts against the rest", regression.name());
                let limit = format!("{:.2}x", drift_immune_limit(n, k));
                print_against_with(
                    &what,
                    &[limit],
                    reference,
                    s,
                    args.regressions,
                    settings,
                    &make,
                );
            }
        }
    }
}

/// Prints a regression row with, after its name, guardian's median time to detect over
/// `reference`'s ("-" for the reference itself); returns that median.
fn print_against(
    what: &str,
    reference: Option<f64>,
    s: Scenario,
    runs: u64,
    settings: &DetectorSettings,
    make: &Peers,
) -> Option<f64> {
    print_against_with(what, &[], reference, s, runs, settings, make)
}

/// `print_against`, with `columns` after the ratio.
fn print_against_with(
    what: &str,
    columns: &[String],
    reference: Option<f64>,
    s: Scenario,
    runs: u64,
    settings: &DetectorSettings,
    make: &Peers,
) -> Option<f64> {
    let (row, median) = regression_row_as(what, s, runs, settings, make);
    let vs = match (median, reference) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        (Some(_), Some(_)) => "same".to_owned(),
        _ => "-".to_owned(),
    };
    let after: String = columns.iter().map(|c| format!(" {c} |")).collect();
    let row = row.replacen(
        &format!("| {what} |"),
        &format!("| {what} | {vs} |{after}"),
        1,
    );
    println!("{row}");
    median
}

/// The least time to detect, over one host's log's, that a comparison of `k` canary hosts
/// against the other `n - k` can reach if it is to be immune to drift common to every host.
/// Such a comparison learns nothing from the baseline (the drift may have moved it): the effect
/// is a log-ratio of two rates each estimated from its arm's traffic alone, whose variance is
/// `1/n_canary + 1/n_rest` where one host's log, against a long baseline, has `1/n_host`. In
/// Fisher information, the canary's `k` hosts times the rest's share `(n - k)/n`, over one host.
fn drift_immune_limit(n: u32, k: u32) -> f64 {
    f64::from(n) / (f64::from(k) * f64::from(n - k))
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
            error: i.is_multiple_of(97),
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
