//! guardbench: measures guardian's decision core against the oracle and its peers on simulated
//! deploys with a known truth. Seeded: the same command prints the same table.

use std::time::Instant;

use clap::Parser;
use guardian::bench::harness::{run_many, ttd_quantiles, wilson, GuardianCall};
use guardian::bench::sim::{information_per_second, Nuisance, Regression, Scenario};
use guardian::core::DetectorSettings;

#[derive(Parser)]
struct Args {
    /// Null deploys per nuisance and traffic level.
    #[arg(long, default_value_t = 200)]
    nulls: u64,
    /// Deploys per regression cell.
    #[arg(long, default_value_t = 100)]
    regressions: u64,
    #[arg(long, value_delimiter = ',', default_value = "1,20,200")]
    rps: Vec<f64>,
}

fn main() {
    let args = Args::parse();
    let settings = DetectorSettings::default();
    let no_peers = || Vec::new();
    let started = Instant::now();
    println!("| traffic | nuisance | runs | false rollbacks | 95% CI | healthy | inconclusive |");
    println!("|---|---|---|---|---|---|---|");
    for &rps in &args.rps {
        for nuisance in Nuisance::ALL {
            let s = Scenario { rps, nuisance, regression: Regression::None };
            let out = run_many(s, args.nulls, 1, &settings, &no_peers);
            let fr = out.iter().filter(|o| matches!(o.guardian, GuardianCall::Regressed(_))).count();
            let healthy = out.iter().filter(|o| o.guardian == GuardianCall::Healthy).count();
            let n = out.len();
            let (lo, hi) = wilson(fr, n);
            println!("| {rps} rps | {} | {n} | {:.2}% | {:.2}-{:.2}% | {:.0}% | {:.0}% |", nuisance.name(),
                100.0 * fr as f64 / n as f64, 100.0 * lo, 100.0 * hi,
                100.0 * healthy as f64 / n as f64, 100.0 * (n - fr - healthy) as f64 / n as f64);
        }
    }
    println!();
    println!("| traffic | regression | detected | median TTD | p90 | oracle median | ratio to oracle | T* (vs baseline) | T* (vs null) | median/T*null |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let regressions = [
        Regression::ErrorRate(1.25), Regression::ErrorRate(1.5), Regression::ErrorRate(2.0),
        Regression::ErrorRate(5.0), Regression::ErrorRate(20.0), Regression::Outage,
        Regression::OneRouteBroken, Regression::Median(1.10), Regression::Median(1.25),
        Regression::Median(1.5), Regression::TailOnly(0.06), Regression::DelayedErrorRate(3.0),
    ];
    for &rps in &args.rps {
        for regression in regressions {
            let s = Scenario { rps, nuisance: Nuisance::Clean, regression };
            let out = run_many(s, args.regressions, 1_000_001, &settings, &no_peers);
            let ttd: Vec<f64> = out.iter().filter_map(|o| match o.guardian {
                GuardianCall::Regressed(t) => Some(t - o.onset), _ => None }).collect();
            let oracle: Vec<f64> = out.iter().filter_map(|o| o.oracle.map(|t| t - o.onset)).collect();
            let (i_base, i_null) = information_per_second(s, settings.error_tolerance, settings.latency_tolerance);
            let tstar = |i: f64| (1.0 / settings.alpha).ln() / i;
            let q = ttd_quantiles(&ttd);
            let oq = ttd_quantiles(&oracle);
            println!("| {rps} | {} | {:.0}% | {} | {} | {} | {} | {:.0} s | {} | {} |",
                regression.name(), 100.0 * ttd.len() as f64 / out.len() as f64,
                q.map_or("-".into(), |q| format!("{:.0} s", q.0)),
                q.map_or("-".into(), |q| format!("{:.0} s", q.1)),
                oq.map_or("-".into(), |q| format!("{:.0} s", q.0)),
                match (q, oq) { (Some(a), Some(b)) => format!("{:.2}", a.0 / b.0), _ => "-".into() },
                tstar(i_base),
                if i_null > 0.0 { format!("{:.0} s", tstar(i_null)) } else { "inf".into() },
                match q { Some(a) if i_null > 0.0 => format!("{:.2}", a.0 / tstar(i_null)), _ => "-".into() });
        }
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}
