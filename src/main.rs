//! The `guardian` command line.
//!
//! Exit codes (mapped once, in [`exit_code`]): replay: 0 healthy, 1 regressed, 3 inconclusive,
//! 2 bad input (bad arguments, bad config, unreadable file, bad line). run, notify, status: 0
//! done, 2 bad input, 4 the daemon could not be reached or failed, 5 the daemon's state does
//! not allow it now (a rollback under way: try again once it is done). audit verify: 0 intact, 2
//! chain broken, 3 checkpoint mismatch or truncation, 4 bad signature, 1 could not check.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

/// Like `print!`, to standard output; a reader that stopped reading (`guardian trust | head`)
/// ends the command quietly, as SIGPIPE would, instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => { $crate::write_out(&format!($($arg)*)) };
}

/// Like `println!`; see [`out!`].
macro_rules! outln {
    ($($arg:tt)*) => { $crate::write_out(&format!("{}\n", format_args!($($arg)*))) };
}

mod gate_cli;
mod generate;
mod mcp;

use guardian::api;
use guardian::config::Config;
use guardian::core::Verdict;
use guardian::input::Format;
use guardian::replay::{self, Replay};

const EXIT_HEALTHY: u8 = 0;
const EXIT_REGRESSED: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;
const EXIT_INCONCLUSIVE: u8 = 3;
const EXIT_UNAVAILABLE: u8 = 4;
/// The daemon's state does not allow it now (409): a rollback or a deploy of its own is under
/// way, or it was done already. A script may try again once it is done.
const EXIT_CONFLICT: u8 = 5;

/// Decides whether a change made a service worse, with anytime-valid sequential tests.
#[derive(Parser)]
#[command(name = "guardian", version, about)]
#[command(after_help = "Each command's exit codes are in its --help.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replays recorded traffic around a change and says what guardian would have decided,
    /// and when. No side effects.
    Replay(ReplayArgs),
    /// Runs the daemon: follows the access logs, serves the API, watches each change.
    Run(RunArgs),
    /// Tells the daemon a change was just deployed; prints the change id.
    Notify(NotifyArgs),
    /// Shows the change being watched, recent verdicts and how the logs are read.
    Status(StatusArgs),
    /// Submits a change for the trust gate instead of deploying it; prints the decision
    /// (deny, needs_approval or auto) and why.
    Propose(gate_cli::ProposeArgs),
    /// Lists proposals, or shows one with its diff and the policy's reasons.
    Proposals(gate_cli::ProposalsArgs),
    /// Approves a proposal (bound to the exact diff shown); needs an approver's token.
    Approve(gate_cli::DecideArgs),
    /// Rejects a proposal, with --why; needs an approver's token.
    Reject(gate_cli::DecideArgs),
    /// Shows the trust ledger: each fix pattern's record and whether it may deploy alone.
    Trust(gate_cli::TrustArgs),
    /// Stops guardian deploying proposals (the operator's switch); --why is recorded.
    Pause(gate_cli::PauseArgs),
    /// Lets guardian deploy proposals again.
    Resume(gate_cli::PauseArgs),
    /// The agent's door: a Model Context Protocol server on stdin/stdout, with the agent's
    /// token (check paths and diffs against the policy, propose, follow proposals and
    /// changes, read incidents and the trust ledger).
    Mcp(mcp::McpArgs),
    /// The whole story in about a minute and a half: a tiny app, traffic, a bad AI fix, and
    /// guardian catching it, reverting it, redeploying and checking recovery. Needs only git.
    Demo(DemoArgs),
    /// Writes the post-mortem of a change: what happened, what guardian did, the evidence,
    /// and a chart of the traffic around it. Markdown by default. Reads the state database.
    Postmortem(PostmortemArgs),
    /// Checks, exports and vouches for the audit trail, the hash-chained record of everything
    /// guardian decided and did. Reads the state database, never writes it.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Shell completions and man pages, for packaging (packaging/build-deb).
    #[command(subcommand, hide = true)]
    Generate(generate::GenerateCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walks the whole chain; names each record edited, removed, reordered or cut off, and
    /// each checkpoint whose signature or contents do not hold. Safe while the daemon runs.
    #[command(
        after_help = "Exit codes: 0 intact, 2 chain broken (a record edited, removed or \
                      reordered), 3 a checkpoint does not match or the log was truncated, \
                      4 a bad signature, 1 could not check at all."
    )]
    Verify(AuditVerifyArgs),
    /// Writes the records as JSON lines, oldest first, with their hashes.
    Export(AuditExportArgs),
    /// Prints the public key that verifies checkpoints; keep it where this host cannot write.
    Pubkey(AuditPubkeyArgs),
}

/// Where the state database is: from the config, or given directly.
#[derive(Args)]
struct AuditSource {
    /// Configuration file: the state database is in the state_dir of its [daemon] section.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "db",
        conflicts_with = "db"
    )]
    config: Option<PathBuf>,
    /// The state database itself (guardian.db in the state directory).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
}

#[derive(Args)]
struct AuditVerifyArgs {
    #[command(flatten)]
    source: AuditSource,
    /// A checkpoint kept off this host (a file holding the note from an alert email, or the
    /// whole email); detects a log cut short or rewritten since. Repeatable.
    #[arg(long, value_name = "FILE")]
    checkpoint: Vec<PathBuf>,
    /// The public key you kept (as `guardian audit pubkey` printed it), or a file holding it.
    /// Without it, signatures are checked with the key on this host.
    #[arg(long, value_name = "KEY|FILE")]
    pubkey: Option<String>,
}

#[derive(Args)]
struct AuditExportArgs {
    #[command(flatten)]
    source: AuditSource,
    /// Only records from this time on: unix seconds or RFC 3339 (2026-11-26T03:00:00Z).
    #[arg(long, value_name = "WHEN", value_parser = guardian::audit::parse_since)]
    since: Option<f64>,
}

#[derive(Args)]
struct AuditPubkeyArgs {
    /// Configuration file: the key is audit-signing.key in the state_dir of its [daemon]
    /// section.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "key",
        conflicts_with = "key"
    )]
    config: Option<PathBuf>,
    /// The signing key file itself.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

#[derive(Args)]
#[command(after_help = "Exit codes: 0 written, 2 no such change or bad input.")]
struct PostmortemArgs {
    /// The change id, e.g. chg_2ffca327b9c1 (guardian status lists them).
    id: String,
    /// Configuration file: the state database is in the state_dir of its [daemon] section,
    /// and the service's name comes from it.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "db",
        conflicts_with = "db"
    )]
    config: Option<PathBuf>,
    /// The state database itself (guardian.db in the state directory).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// A self-contained HTML page with the chart inline, as the alert email carries it.
    #[arg(long, conflicts_with = "svg")]
    html: bool,
    /// Only the chart, as SVG.
    #[arg(long)]
    svg: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Where to build the demo's repository, app and state (default: a temporary directory,
    /// removed at the end).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the temporary directory to look around afterwards.
    #[arg(long)]
    keep: bool,
}

#[derive(Args)]
#[command(after_help = "Stops cleanly on SIGTERM or Ctrl-C.")]
struct RunArgs {
    /// Configuration file with a [daemon] section.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

/// Where the daemon's API is and how to authenticate: from the config, or given directly, or
/// (for a command guardian's agent trigger runs) from `GUARDIAN_API` and `GUARDIAN_TOKEN`.
#[derive(Args)]
struct ApiArgs {
    /// Configuration file: the API address and token file come from its [daemon] section.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Base URL of the API, e.g. http://127.0.0.1:8707 (overrides the config; default:
    /// $GUARDIAN_API, which guardian sets for the agent's command).
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// File holding the bearer token (overrides the config; default: the token in
    /// $GUARDIAN_TOKEN, which guardian sets for the agent's command).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

#[derive(Args)]
#[command(
    after_help = "Exit codes: 0 notified, 2 bad input, 4 the daemon could not be reached, 5 not now \
                  (a rollback or guardian's own deploy is under way: try again once it is done)."
)]
struct NotifyArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The commit deployed, or a range A..B when several were deployed together.
    #[arg(long, required_unless_present = "starting")]
    commit: Option<String>,
    /// Say that a deploy is starting, before its restart: the change still being watched is
    /// superseded now (so the restart's failures never count against it), and the next
    /// notify's deploy window begins now. Takes no commit.
    #[arg(
        long,
        conflicts_with_all = ["commit", "kind", "pattern", "summary", "proposal", "deploy_started_at", "flag", "canary"]
    )]
    starting: bool,
    /// Who wrote the change (human when not given).
    #[arg(long, value_parser = ["ai", "human"])]
    kind: Option<String>,
    /// The fix pattern, e.g. nil-check, timeout-bump.
    #[arg(long)]
    pattern: Option<String>,
    /// One line on what the change does.
    #[arg(long)]
    summary: Option<String>,
    /// The proposal this deploy carries out (shadow mode: you deploy, guardian watches and
    /// keeps the record).
    #[arg(long, value_name = "ID")]
    proposal: Option<String>,
    /// The Sentry issue the change fixes (its id, short id or link): the watch then judges
    /// whether it stopped, and a fix after which it goes on firing is `ineffective`.
    #[arg(long, value_name = "ISSUE")]
    issue: Option<String>,
    /// The feature flag the change is behind: if it regresses, guardian turns the flag off
    /// first ([daemon.flag_off], within its allow-list and limits) and reverts only if that
    /// did not help.
    #[arg(long, value_name = "NAME")]
    flag: Option<String>,
    /// When the deploy began, in unix seconds (`date +%s` at the start of the hook): the
    /// traffic from then to now (the restart) is neither baseline nor watch. Without it, the
    /// daemon's deploy_guard_secs before now.
    #[arg(
        long,
        value_name = "UNIX_SECONDS",
        value_parser = parse_change_at,
        allow_hyphen_values = true
    )]
    deploy_started_at: Option<f64>,
    /// The values of canary_label ([[daemon.promql]]) that run this commit, e.g. the canary
    /// hosts' instances, comma-separated: compared against the rest as they serve side by
    /// side. Notify the same commit again with more values as the rollout widens; the watch
    /// follows it. Without it, the config's canary (none: the service as a whole).
    #[arg(long, value_name = "VALUE,...", value_delimiter = ',')]
    canary: Option<Vec<String>>,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Print the daemon's JSON instead of a summary.
    #[arg(long)]
    json: bool,
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
    /// When the change landed, in unix seconds (fractions allowed). Give it once per change to
    /// replay a day and its deploys: each is judged in turn, as the daemon would.
    #[arg(
        long,
        value_name = "UNIX_SECONDS",
        value_parser = parse_change_at,
        allow_hyphen_values = true,
        required = true
    )]
    change_at: Vec<f64>,
    /// When the deploy of the --change-at before it began: the traffic between (the restart)
    /// is neither baseline nor watch. Without it, deploy_guard_secs before the change.
    #[arg(
        long,
        value_name = "UNIX_SECONDS",
        value_parser = parse_change_at,
        allow_hyphen_values = true
    )]
    deploy_started_at: Vec<f64>,
    /// Each change with its deploy start, paired by position on the command line.
    #[arg(skip)]
    changes: Vec<replay::ChangeSpec>,
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
    let cli = match parse_cli() {
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

/// The command line, with what clap's derive cannot say by itself: which --deploy-started-at
/// belongs to which --change-at (the one before it).
fn parse_cli() -> Result<Cli, clap::Error> {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command().try_get_matches()?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let (Command::Replay(args), Some(m)) =
        (&mut cli.command, matches.subcommand_matches("replay"))
    {
        args.changes = paired_changes(m, args).map_err(|message| {
            Cli::command().error(clap::error::ErrorKind::ArgumentConflict, message)
        })?;
    }
    Ok(cli)
}

fn paired_changes(
    m: &clap::ArgMatches,
    args: &ReplayArgs,
) -> Result<Vec<replay::ChangeSpec>, String> {
    let positions =
        |id: &str| -> Vec<usize> { m.indices_of(id).map(|i| i.collect()).unwrap_or_default() };
    let at = positions("change_at");
    let mut changes: Vec<replay::ChangeSpec> = args
        .change_at
        .iter()
        .map(|&at| replay::ChangeSpec {
            at,
            deploy_started_at: None,
        })
        .collect();
    for (&started, i) in args
        .deploy_started_at
        .iter()
        .zip(positions("deploy_started_at"))
    {
        let owner = at.iter().rposition(|&j| j < i).ok_or_else(|| {
            format!("--deploy-started-at {started} must follow the --change-at it belongs to")
        })?;
        let change = &mut changes[owner];
        if change.deploy_started_at.replace(started).is_some() {
            return Err(format!(
                "two --deploy-started-at for the change at {}; give one after each --change-at",
                change.at
            ));
        }
    }
    Ok(changes)
}

/// See [`out!`]: writes `text` to standard output, or ends the command if nobody reads it.
fn write_out(text: &str) {
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("guardian: cannot write to standard output: {e}");
        std::process::exit(i32::from(EXIT_BAD_INPUT));
    }
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Replay(args) => run_replay(&args),
        Command::Run(args) => run_daemon(&args),
        Command::Notify(args) => run_notify(&args),
        Command::Status(args) => run_status(&args),
        Command::Propose(args) => gate_cli::propose(&args),
        Command::Proposals(args) => gate_cli::proposals(&args),
        Command::Approve(args) => gate_cli::decide(&args, true),
        Command::Reject(args) => gate_cli::decide(&args, false),
        Command::Trust(args) => gate_cli::trust(&args),
        Command::Mcp(args) => mcp::run(&args),
        Command::Pause(args) => gate_cli::pause(&args, true),
        Command::Resume(args) => gate_cli::pause(&args, false),
        Command::Postmortem(args) => run_postmortem(&args),
        Command::Audit(command) => run_audit(&command),
        Command::Generate(command) => {
            generate::run(&command, <Cli as clap::CommandFactory>::command())
        }
        Command::Demo(args) => match guardian::demo::run(args.dir, args.keep) {
            Ok(()) => Ok(0),
            Err(e) => {
                eprintln!("guardian demo: {e}");
                Ok(EXIT_UNAVAILABLE)
            }
        },
    }
}

/// `guardian audit verify` when it could not check at all (no database, unreadable
/// checkpoint): distinct from the codes that report tampering.
const EXIT_AUDIT_UNCHECKED: u8 = 1;

fn run_audit(command: &AuditCommand) -> Result<u8> {
    match command {
        AuditCommand::Verify(args) => match audit_verify(args) {
            Ok(code) => Ok(code),
            Err(e) => {
                eprintln!("guardian audit verify: cannot check: {e:#}");
                Ok(EXIT_AUDIT_UNCHECKED)
            }
        },
        AuditCommand::Export(args) => {
            let (db, _) = audit_paths(&args.source)?;
            let conn = guardian::audit::open_read_only(&db)?;
            let mut stdout = io::stdout().lock();
            match guardian::audit::export(&conn, args.since.unwrap_or(0.0), &mut stdout) {
                // A reader that stopped listening (`| head`) is not an error.
                Err(guardian::audit::AuditError::Io { error, .. })
                    if error.kind() == io::ErrorKind::BrokenPipe => {}
                other => {
                    other?;
                }
            }
            let _ = stdout.flush();
            Ok(0)
        }
        AuditCommand::Pubkey(args) => {
            let path = match (&args.key, &args.config) {
                (Some(key), _) => key.clone(),
                (None, Some(config)) => {
                    guardian::audit::default_key_file(&daemon_section(config)?.state_dir)
                }
                (None, None) => anyhow::bail!("--config or --key is needed to find the key"),
            };
            if !path.exists() {
                anyhow::bail!(
                    "no signing key at {} yet: the daemon makes it at its first checkpoint",
                    path.display()
                );
            }
            let key = guardian::audit::load_signing_key(&path)?;
            outln!(
                "{}",
                guardian::audit::verifier_key_text(&key.verifying_key())
            );
            Ok(0)
        }
    }
}

fn daemon_section(config: &Path) -> Result<guardian::config::DaemonSettings> {
    Config::from_path(config)?
        .daemon
        .with_context(|| format!("{} has no [daemon] section", config.display()))
}

/// The state database, and the signing key file beside it.
fn audit_paths(source: &AuditSource) -> Result<(PathBuf, PathBuf)> {
    let state_dir = match (&source.db, &source.config) {
        (Some(db), _) => {
            let dir = db.parent().unwrap_or(Path::new("."));
            return Ok((db.clone(), guardian::audit::default_key_file(dir)));
        }
        (None, Some(config)) => daemon_section(config)?.state_dir,
        (None, None) => anyhow::bail!("--config or --db is needed to find the state database"),
    };
    Ok((
        state_dir.join("guardian.db"),
        guardian::audit::default_key_file(&state_dir),
    ))
}

fn audit_verify(args: &AuditVerifyArgs) -> Result<u8> {
    use guardian::audit::{Checkpoint, KeySource, VerifyOptions};
    let (db, key_file) = audit_paths(&args.source)?;
    let key = match &args.pubkey {
        Some(given) => {
            let text = if Path::new(given).is_file() {
                std::fs::read_to_string(given).with_context(|| format!("cannot read {given}"))?
            } else {
                given.clone()
            };
            Some((
                guardian::audit::parse_verifier_key(&text)?,
                KeySource::Given,
            ))
        }
        // The key on this host, if this user may read it; else each checkpoint's own.
        None => guardian::audit::load_signing_key(&key_file)
            .ok()
            .map(|k| (k.verifying_key(), KeySource::KeyFile(key_file.clone()))),
    };
    let mut kept = Vec::new();
    for path in &args.checkpoint {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        kept.push(Checkpoint::find(&bytes).with_context(|| path.display().to_string())?);
    }
    let verification = guardian::audit::verify(&db, &VerifyOptions { key, kept })?;
    out!("{}", verification.render());
    Ok(verification.exit_code())
}

fn run_daemon(args: &RunArgs) -> Result<u8> {
    let config = Config::from_path(&args.config)?;
    guardian::logging::init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        // Registered before anything else, so a SIGTERM that arrives while the daemon starts
        // is a clean stop rather than the default disposition's kill.
        let shutdown = shutdown_signal().map_err(guardian::daemon::DaemonError::Signals)?;
        let bound = guardian::daemon::bind(&config).await?;
        guardian::daemon::run(config, Some(args.config.clone()), bound, shutdown).await
    });
    // A delivery given up on at the stop may still wait on its SMTP server: not for its
    // timeout, which would take the stop past systemd's `TimeoutStopSec`.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => Ok(0),
        Err(
            e @ (guardian::daemon::DaemonError::NotConfigured
            | guardian::daemon::DaemonError::Token(_)
            | guardian::daemon::DaemonError::StateDir(_)
            | guardian::daemon::DaemonError::Engine(
                guardian::daemon::engine::EngineError::Config(_),
            )),
        ) => {
            eprintln!("guardian: {e}");
            Ok(EXIT_BAD_INPUT)
        }
        Err(e) => {
            eprintln!("guardian: {e}");
            Ok(EXIT_UNAVAILABLE)
        }
    }
}

/// A future that completes on SIGTERM (systemd stopping the unit) or SIGINT (Ctrl-C); both
/// handlers are installed when this is called, not when the future is first polled.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// The API's base URL and token, from the flags or the config. Of the config, only `[daemon]
/// listen` and `token_file` are needed: a mistake elsewhere in it is a warning, never a failed
/// deploy hook.
fn api_target(args: &ApiArgs) -> Result<(String, String)> {
    let daemon = match &args.config {
        Some(path) => Some(
            guardian::config::ApiAccess::from_path(path)?
                .with_context(|| format!("{} has no [daemon] section", path.display()))?,
        ),
        None => None,
    };
    if let Some(path) = &args.config {
        if let Err(e) = Config::from_path(path) {
            eprintln!("{}", config_warning(&e));
        }
    }
    let base = match (&args.api, &daemon) {
        (Some(url), _) if !(url.starts_with("http://") || url.starts_with("https://")) => {
            anyhow::bail!("--api must be a URL such as http://127.0.0.1:8707, got {url:?}")
        }
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(d)) => format!("http://{}", d.listen),
        (None, None) => match std::env::var("GUARDIAN_API") {
            Ok(url) if url.starts_with("http://") || url.starts_with("https://") => {
                url.trim_end_matches('/').to_owned()
            }
            Ok(url) => anyhow::bail!(
                "GUARDIAN_API must be a URL such as http://127.0.0.1:8707, got {url:?}"
            ),
            Err(_) => anyhow::bail!("--api, --config or GUARDIAN_API is needed to find the daemon"),
        },
    };
    let token_file = match (&args.token_file, &daemon) {
        (Some(f), _) => f.clone(),
        (None, Some(d)) => d.token_file.clone(),
        (None, None) => {
            let token = std::env::var("GUARDIAN_TOKEN").map_err(|_| {
                anyhow::anyhow!(
                    "--token-file, --config or GUARDIAN_TOKEN is needed to authenticate"
                )
            })?;
            let token = token.trim().to_owned();
            if token.len() < 16 {
                anyhow::bail!(
                    "GUARDIAN_TOKEN holds {} characters; a token guardian gives has at least 16",
                    token.len()
                );
            }
            return Ok((base, token));
        }
    };
    let token = guardian::daemon::engine::read_token(&token_file).map_err(anyhow::Error::msg)?;
    Ok((base, token))
}

/// The warning about a configuration file the daemon would refuse, for a command that read
/// only where the API is from it: what is wrong, and what that means for the daemon, which
/// read the file when it started and goes on with what it read then.
fn config_warning(error: &guardian::config::ConfigError) -> String {
    format!(
        "guardian: warning: {error}\n  \
         guardian run would refuse to start with this file, and a reload (SIGHUP) would keep the \
         settings the running daemon read before; fix it before the next restart. This command \
         needs only [daemon] listen and token_file, and goes on."
    )
}

/// Asks the daemon for `url`. The answer as sent (what `--json` prints), to be read into its
/// `api` type with `api::read`; an error answer is shown with the daemon's own message.
fn get(url: &str, token: &str) -> std::result::Result<serde_json::Value, (u8, String)> {
    answer(authorized(ureq::get(url), token).call())
}

/// Sends `body`, an `api` request, to `url`; the answer as [`get`]'s.
fn post(
    url: &str,
    token: &str,
    body: &impl serde::Serialize,
) -> std::result::Result<serde_json::Value, (u8, String)> {
    answer(authorized(ureq::post(url), token).send_json(body))
}

fn authorized(request: ureq::Request, token: &str) -> ureq::Request {
    request
        .set("Authorization", &format!("Bearer {token}"))
        .timeout(std::time::Duration::from_secs(10))
}

fn answer(
    response: std::result::Result<ureq::Response, ureq::Error>,
) -> std::result::Result<serde_json::Value, (u8, String)> {
    match response {
        Ok(r) => r.into_json().map_err(|e| {
            (
                EXIT_UNAVAILABLE,
                format!("the daemon's answer is not JSON: {e}"),
            )
        }),
        Err(ureq::Error::Status(code, r)) => {
            let message = r
                .into_json::<api::ErrorAnswer>()
                .map(|answer| answer.error)
                .unwrap_or_default();
            let exit = match code {
                409 => EXIT_CONFLICT,
                ..500 => EXIT_BAD_INPUT,
                _ => EXIT_UNAVAILABLE,
            };
            Err((
                exit,
                format!(
                    "the daemon refused the request ({code}): {}",
                    guardian::display::line(&message)
                ),
            ))
        }
        Err(e) => Err((EXIT_UNAVAILABLE, format!("cannot reach the daemon: {e}"))),
    }
}

fn run_notify(args: &NotifyArgs) -> Result<u8> {
    let (base, token) = api_target(&args.api)?;
    let Some(commit) = &args.commit else {
        return match post(
            &format!("{base}/v1/deploys"),
            &token,
            &serde_json::json!({}),
        ) {
            Ok(v) => {
                let started = api::read::<api::DeployStarting>(&v, "deploy")?;
                match started.superseded {
                    Some(id) => eprintln!(
                        "guardian: a deploy is starting; {id} was still being watched and is \
                         superseded (this deploy's restart will not count against it)"
                    ),
                    None => eprintln!("guardian: a deploy is starting"),
                }
                Ok(0)
            }
            Err((code, message)) => {
                eprintln!("guardian: {message}");
                Ok(code)
            }
        };
    };
    let request = api::ChangeRequest {
        commit: commit.clone(),
        kind: args
            .kind
            .as_deref()
            .unwrap_or("human")
            .parse()
            .map_err(anyhow::Error::msg)?,
        pattern: args.pattern.clone(),
        summary: args.summary.clone(),
        proposal: args.proposal.clone(),
        deploy_started_at: args.deploy_started_at,
        issue: args.issue.clone(),
        flag: args.flag.clone(),
        canary: args.canary.clone(),
    };
    match post(&format!("{base}/v1/changes"), &token, &request) {
        Ok(v) => {
            // The change is notified whatever follows: an answer that cannot be read is said,
            // not turned into a failure a script would retry.
            let change = match api::read::<api::ChangeRecord>(&v, "change") {
                Ok(change) => change,
                Err(e) => {
                    eprintln!("guardian: {e}");
                    return Ok(0);
                }
            };
            // The id alone on stdout, for scripts; what it is judged against on stderr.
            outln!("{}", change.id);
            if let Some(canary) = &args.canary {
                eprintln!(
                    "guardian: the canary of {} is {}, against the rest",
                    change.id,
                    canary.join(", ")
                );
            }
            match api::read::<api::ChangeView>(&v, "change") {
                Ok(view) => eprint!("{}", guardian::report::status::notified(&view)),
                Err(e) => eprintln!("guardian: {e}"),
            }
            Ok(0)
        }
        Err((code, message)) => {
            eprintln!("guardian: {message}");
            Ok(code)
        }
    }
}

fn run_status(args: &StatusArgs) -> Result<u8> {
    let (base, token) = api_target(&args.api)?;
    let status = match get(&format!("{base}/v1/status"), &token) {
        Ok(v) => v,
        Err((code, message)) => {
            eprintln!("guardian: {message}");
            return Ok(code);
        }
    };
    if args.json {
        outln!("{status}");
    } else {
        let status: api::Status = api::read(&status, "status")?;
        out!("{}", guardian::report::status::status(&status));
    }
    Ok(0)
}

fn run_postmortem(args: &PostmortemArgs) -> Result<u8> {
    let (db, service) = match (&args.db, &args.config) {
        (Some(db), _) => (db.clone(), "the service".to_owned()),
        (None, Some(path)) => {
            let daemon = Config::from_path(path)?
                .daemon
                .with_context(|| format!("{} has no [daemon] section", path.display()))?;
            (daemon.state_dir.join("guardian.db"), daemon.service)
        }
        (None, None) => anyhow::bail!("--config or --db is needed to find the state database"),
    };
    // Opening a path that does not exist would create an empty database there.
    if !db.is_file() {
        anyhow::bail!("no state database at {}", db.display());
    }
    let store = guardian::store::Store::open(&db)?;
    // Through the gate's story, so a change that came as a proposal shows what was claimed,
    // what the diff did and what the policy decided.
    let postmortem = guardian::gate::story::postmortem(&store, &service, &args.id, Vec::new())?
        .with_context(|| format!("no change with id {:?} in {}", args.id, db.display()))?;
    let text = if args.svg {
        postmortem.svg()
    } else if args.html {
        postmortem.html()
    } else {
        postmortem.markdown()
    };
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write the post-mortem to standard output")
        }
        _ => Ok(0),
    }
}

fn run_replay(args: &ReplayArgs) -> Result<u8> {
    let config = Config::from_path(&args.config)?;
    let reader = open_events(&args.events)?;
    let outcomes = replay::replay_changes(reader, args.format, &args.changes, &config)
        .with_context(|| args.events.display().to_string())?;
    let mut text = String::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        if args.json {
            text.push_str(&outcome.to_json());
            text.push('\n');
        } else {
            if outcomes.len() > 1 {
                text.push_str(&format!(
                    "{}Change {} of {}\n",
                    if i > 0 { "\n" } else { "" },
                    i + 1,
                    outcomes.len()
                ));
            }
            text.push_str(&outcome.render_text());
        }
    }
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
    Ok(exit_code(&outcomes))
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

/// The worst verdict decides: any change regressed, else any not shown healthy, else healthy.
fn exit_code(outcomes: &[Replay]) -> u8 {
    let verdicts = || outcomes.iter().map(|o| o.verdict);
    if verdicts().any(|v| v == Verdict::Regressed) {
        EXIT_REGRESSED
    } else if verdicts().all(|v| v == Verdict::Healthy) {
        EXIT_HEALTHY
    } else {
        EXIT_INCONCLUSIVE
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
