//! The `guardian` command line.
//!
//! Exit codes (mapped once, in [`exit_code`]): 0 healthy, 1 regressed, 3 inconclusive, 2 bad
//! input (bad arguments, bad config, unreadable file, bad line).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use guardian::config::Config;
use guardian::core::Verdict;
use guardian::input::Format;
use guardian::replay::{self, Replay};

const EXIT_HEALTHY: u8 = 0;
const EXIT_REGRESSED: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;
const EXIT_INCONCLUSIVE: u8 = 3;

/// Decides whether a change made a service worse, with anytime-valid sequential tests.
#[derive(Parser)]
#[command(name = "guardian", version, about)]
#[command(after_help = "Exit codes: 0 healthy, 1 regressed, 3 inconclusive, 2 bad input.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replays recorded traffic around a change and says what guardian would have decided,
    /// and when. No side effects.
    Replay(ReplayArgs),
}

#[derive(Args)]
#[command(after_help = "Exit codes: 0 healthy, 1 regressed, 3 inconclusive, 2 bad input.")]
struct ReplayArgs {
    /// Configuration file (TOML); config/guardian.toml lists every key and its default.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Recorded traffic, one request per line, sorted by time; "-" reads standard input.
    #[arg(long, value_name = "FILE")]
    events: PathBuf,
    /// When the change landed, in unix seconds (fractions allowed).
    #[arg(
        long,
        value_name = "UNIX_SECONDS",
        value_parser = parse_change_at,
        allow_hyphen_values = true
    )]
    change_at: f64,
    /// Layout of the events file: JSON lines, or nginx combined with $request_time appended.
    #[arg(long, value_name = "jsonl|nginx", default_value = "jsonl", value_parser = parse_format)]
    format: Format,
    /// Print one JSON object instead of a summary for people.
    #[arg(long)]
    json: bool,
}

/// Past this a number is far likelier to be milliseconds than a date in the year 5138.
const MAX_UNIX_SECONDS: f64 = 1e11;

fn parse_change_at(s: &str) -> Result<f64, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected unix seconds such as 1764000000, got {s:?}"))?;
    if !secs.is_finite() {
        Err(format!(
            "must be a finite number of unix seconds, got {s:?}"
        ))
    } else if secs < 0.0 {
        Err(format!("must be unix seconds after 1970, got {s}"))
    } else if secs > MAX_UNIX_SECONDS {
        Err(format!(
            "must be unix seconds, got {s}, which looks like milliseconds or finer"
        ))
    } else {
        Ok(secs)
    }
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse::<Format>().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Usage errors exit with 2 (bad input); --help and --version with 0.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_BAD_INPUT } else { 0 });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("guardian: {e:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Replay(args) => run_replay(&args),
    }
}

fn run_replay(args: &ReplayArgs) -> Result<u8> {
    let config = Config::from_path(&args.config)?;
    let reader = open_events(&args.events)?;
    let outcome = replay::replay(reader, args.format, args.change_at, &config)
        .with_context(|| args.events.display().to_string())?;
    let text = if args.json {
        format!("{}\n", outcome.to_json())
    } else {
        outcome.render_text()
    };
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A reader that stopped listening (`| head`) does not change the verdict.
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            return Err(e).context("cannot write the verdict to standard output")
        }
        _ => {}
    }
    Ok(exit_code(&outcome))
}

fn open_events(path: &Path) -> Result<Box<dyn BufRead>> {
    if path == Path::new("-") {
        return Ok(Box::new(io::stdin().lock()));
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        anyhow::bail!("{} is a directory, not a file of events", path.display());
    }
    Ok(Box::new(BufReader::with_capacity(1 << 16, file)))
}

fn exit_code(outcome: &Replay) -> u8 {
    match outcome.verdict {
        Verdict::Healthy => EXIT_HEALTHY,
        Verdict::Regressed => EXIT_REGRESSED,
        Verdict::Inconclusive | Verdict::Watching => EXIT_INCONCLUSIVE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn change_at_must_be_plain_unix_seconds() {
        assert_eq!(parse_change_at("1764000000.5"), Ok(1_764_000_000.5));
        assert!(parse_change_at("NaN").unwrap_err().contains("finite"));
        assert!(parse_change_at("inf").unwrap_err().contains("finite"));
        assert!(parse_change_at("-5").unwrap_err().contains("after 1970"));
        assert!(parse_change_at("1764000000000")
            .unwrap_err()
            .contains("milliseconds"));
        assert!(parse_change_at("yesterday")
            .unwrap_err()
            .contains("\"yesterday\""));
    }
}
