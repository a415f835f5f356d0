//! `guardian run`: the daemon. Follows the access logs, serves the API, and every second lets
//! the decision core judge the change being watched. This module is the loop and the clock;
//! `engine` holds the state, `http` the API.

pub mod deploy;
pub mod engine;
pub mod http;
pub mod refusals;
pub mod rollback;
pub mod serve;
pub mod state_dir;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{Config, DaemonSettings};
use crate::sdnotify;
use engine::{Engine, EngineError};

/// How often the logs are read.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How often queued alert emails are tried.
const MAIL_EVERY: Duration = Duration::from_secs(5);

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the configuration has no [daemon] section: `guardian run` needs one (see config/guardian.toml)")]
    NotConfigured,
    /// The state directory cannot be made or is not private; the message says how to fix it.
    #[error("{0}")]
    StateDir(String),
    #[error("{0}")]
    Token(String),
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: String, error: std::io::Error },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the API server failed: {0}")]
    Serve(std::io::Error),
    #[error("[daemon.mail]: {0}")]
    Mail(String),
    #[error("[daemon.scrapes]: {0}")]
    Scrape(String),
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
}

/// One Prometheus target and its scraper, which keeps the previous counts between scrapes.
struct ScrapeJob {
    name: String,
    every: f64,
    next: f64,
    scraper: Arc<Mutex<crate::scrape::Scraper>>,
    busy: Arc<std::sync::atomic::AtomicBool>,
}

/// Scrapes on a blocking thread (an HTTP request with a timeout), then hands the counts to the
/// engine. A slow target skips a turn rather than piling requests up.
fn start_scrape(engine: Arc<Mutex<Engine>>, job: &ScrapeJob) {
    use std::sync::atomic::Ordering;
    if job.busy.swap(true, Ordering::AcqRel) {
        return;
    }
    let (name, scraper, busy) = (job.name.clone(), job.scraper.clone(), job.busy.clone());
    tokio::task::spawn_blocking(move || {
        let result = scraper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .scrape(now())
            .map_err(|e| e.to_string());
        engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .scraped(&name, result, now());
        busy.store(false, Ordering::Release);
    });
}

/// Sends the alert emails that are due, on a blocking thread with a database connection of its
/// own, so a slow SMTP server never holds up the API or the watch. One pass at a time.
fn deliver_mail(
    state_dir: &std::path::Path,
    mailer: Arc<crate::report::Mailer>,
    busy: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    if busy.swap(true, Ordering::AcqRel) {
        return;
    }
    let db = state_dir.join("guardian.db");
    tokio::task::spawn_blocking(move || {
        match crate::store::Store::open(&db) {
            Ok(mut store) => {
                let stats = crate::report::deliver_due(&mut store, &mailer, now());
                for e in &stats.errors {
                    tracing::warn!("mail: {e}");
                }
                if stats.sent > 0 {
                    tracing::info!("mail: sent {} email(s)", stats.sent);
                }
            }
            Err(e) => tracing::error!("mail: cannot open the outbox: {e}"),
        }
        busy.store(false, Ordering::Release);
    });
}

/// Tells systemd (when it supervises us) how we are; outside systemd this does nothing.
fn report_to_systemd(result: std::io::Result<bool>) {
    if let Err(e) = result {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// SIGHUP: read the configuration file again. A file that does not parse or validate is
/// refused with its message, and the running configuration stays.
fn reload(engine: &Arc<Mutex<Engine>>, path: Option<&std::path::Path>) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP: no configuration file to reload");
        return;
    };
    match Config::from_path(path) {
        Err(e) => tracing::error!("SIGHUP: kept the running configuration: {e}"),
        Ok(config) => {
            let mut e = engine.lock().unwrap_or_else(|p| p.into_inner());
            let needs_restart = e.reload(&config, now());
            if needs_restart.is_empty() {
                tracing::info!("SIGHUP: reloaded {}", path.display());
            } else {
                tracing::warn!(
                    "SIGHUP: reloaded {}; restart to apply changes to {}",
                    path.display(),
                    needs_restart.join(", ")
                );
            }
        }
    }
}

/// Runs a rollback on a blocking thread (git and the hook take seconds to minutes) and reports
/// its outcome to the engine.
fn start_rollback(
    engine: Arc<Mutex<Engine>>,
    job: rollback::RollbackJob,
    settings: crate::config::RollbackSettings,
) {
    tracing::warn!(
        change_id = %job.change_id,
        "{} regressed ({}); rolling back",
        job.change_id,
        job.reason
    );
    tokio::task::spawn_blocking(move || {
        let report = rollback::run(&settings, &job);
        match &report.escalation {
            Some(why) => tracing::error!(
                change_id = %job.change_id,
                "{}: escalated: {why}",
                job.change_id
            ),
            None => tracing::info!(
                change_id = %job.change_id,
                "{}: reverted in {} and redeployed; checking recovery",
                job.change_id,
                report.revert_commit.as_deref().unwrap_or("?")
            ),
        }
        let mut e = engine.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = e.rollback_finished(&job.change_id, &report, now()) {
            tracing::error!(
                change_id = %job.change_id,
                "{}: cannot record the rollback: {err}",
                job.change_id
            );
        }
    });
}

fn start_deploy(
    engine: Arc<Mutex<Engine>>,
    job: engine::DeployJob,
    settings: crate::config::RollbackSettings,
) {
    tracing::info!(
        proposal_id = %job.proposal_id,
        "deploying proposal {}",
        job.proposal_id
    );
    tokio::task::spawn_blocking(move || {
        let report = deploy::run(&settings, &job);
        let mut e = engine.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = e.deploy_finished(&job, &report, now()) {
            tracing::error!(
                proposal_id = %job.proposal_id,
                "{}: cannot record the deploy: {err}",
                job.proposal_id
            );
        }
    });
}

/// Where the API of a daemon running in this process listens, once it does (for `guardian
/// demo`, which runs the daemon in-process).
static ANNOUNCED: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();

pub fn announced_address() -> Option<std::net::SocketAddr> {
    ANNOUNCED.get().copied()
}

/// Wall-clock unix seconds: the only clock the daemon reads.
/// Every API token and whose it is: the operator's (`token_file`), the agent's and each
/// approver's. Two roles sharing a token would let one act as the other: refused.
fn read_tokens(
    settings: &DaemonSettings,
) -> Result<Vec<([u8; 32], crate::gate::roles::Role)>, String> {
    use crate::gate::roles::Role;
    let mut files = vec![(settings.token_file.clone(), Role::Admin)];
    if let Some(gate) = &settings.gate {
        if let Some(agent) = &gate.agent_token_file {
            files.push((agent.clone(), Role::Agent));
        }
        for (name, file) in &gate.approvers {
            files.push((file.clone(), Role::Approver(name.clone())));
        }
    }
    let mut tokens: Vec<([u8; 32], Role, std::path::PathBuf)> = Vec::new();
    for (file, role) in files {
        let hash = http::hash_token(&engine::read_token(&file)?);
        if let Ok(meta) = std::fs::metadata(&file) {
            use std::os::unix::fs::PermissionsExt as _;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "{} ({role}'s token) can be read by other users \
                     (mode {:o}); chmod 600 it, or hand it over as a systemd credential",
                    file.display(),
                    meta.permissions().mode() & 0o777
                );
            }
        }
        if let Some((_, other, other_file)) = tokens.iter().find(|(h, _, _)| *h == hash) {
            return Err(format!(
                "{} ({role}) holds the same token as {} ({other}): each role needs its own",
                file.display(),
                other_file.display()
            ));
        }
        tokens.push((hash, role, file));
    }
    Ok(tokens.into_iter().map(|(h, r, _)| (h, r)).collect())
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Runs until `shutdown` completes, then stops cleanly: the API stops accepting, the logs are
/// read one last time and their positions saved.
/// `config_path`, when given, is re-read on SIGHUP: a bad file is refused with a message and the
/// running configuration kept.
pub async fn run(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let settings = config.daemon.clone().ok_or(DaemonError::NotConfigured)?;
    // Installed first: a SIGHUP while starting must not take the default action (exit).
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(DaemonError::Signals)?;
    for change in state_dir::prepare(&settings.state_dir).map_err(DaemonError::StateDir)? {
        tracing::info!("{change}");
    }
    let tokens = read_tokens(&settings).map_err(DaemonError::Token)?;
    let mut opened = Engine::open(&config, &settings, now())?;
    for warning in opened.protect_host_files(config_path.as_deref()) {
        tracing::warn!("{warning}");
    }
    let engine = Arc::new(Mutex::new(opened));

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|error| DaemonError::Listen {
            addr: settings.listen.to_string(),
            error,
        })?;
    let addr = listener.local_addr().map_err(DaemonError::Serve)?;
    let _ = ANNOUNCED.set(addr);
    tracing::info!(
        "watching {} ({} log{}), API listening on {addr}",
        settings.service,
        settings.logs.len(),
        if settings.logs.len() == 1 { "" } else { "s" }
    );

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let refusals = Arc::new(refusals::Refusals::default());
    let api = http::Api {
        engine: engine.clone(),
        tokens: Arc::new(
            tokens
                .into_iter()
                .map(|(hash, role)| http::Token::new(hash, role, &settings.limits))
                .collect(),
        ),
        clock: now,
        reads: Arc::new(http::Reads::new(settings.state_dir.join("guardian.db"))),
        refusals: refusals.clone(),
        judging: Arc::new(tokio::sync::Semaphore::new(http::JUDGE_CONCURRENCY)),
    };
    let server = tokio::spawn(serve::serve(listener, http::router(api), stop_rx.clone()));

    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    report_to_systemd(sdnotify::ready());
    let watchdog_every = sdnotify::watchdog_interval().map(|i| i / 2);
    let mailer = match &settings.mail {
        Some(m) => {
            let links = crate::gate::links::LinkKey::load_or_create(
                &crate::gate::links::LinkKey::file(&settings.state_dir),
            )
            .map_err(|e| DaemonError::Mail(e.to_string()))?;
            Some(Arc::new(
                crate::report::Mailer::new(m)
                    .map_err(|e| DaemonError::Mail(e.to_string()))?
                    .with_link_key(links),
            ))
        }
        None => None,
    };
    let mut mail_tick = tokio::time::interval(MAIL_EVERY);
    let mut scrapers = Vec::new();
    for target in &settings.scrapes {
        let scraper = crate::scrape::Scraper::new(target.spec.clone())
            .map_err(|e| DaemonError::Scrape(e.to_string()))?;
        scrapers.push(ScrapeJob {
            name: target.name.clone(),
            every: f64::from(target.interval_secs),
            next: 0.0,
            scraper: Arc::new(Mutex::new(scraper)),
            busy: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        });
    }
    let mailing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut watchdog_sent = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = mail_tick.tick(), if mailer.is_some() => {
                if let Err(err) = engine.lock().unwrap_or_else(|p| p.into_inner()).queue_digest(now()) {
                    tracing::error!("mail: cannot queue the daily digest: {err}");
                }
                if let Some(m) = &mailer {
                    deliver_mail(&settings.state_dir, m.clone(), mailing.clone());
                }
            }
            _ = hangup.recv() => {
                report_to_systemd(sdnotify::reloading());
                reload(&engine, config_path.as_deref());
                report_to_systemd(sdnotify::ready());
            }
            _ = poll.tick() => {
                let t = now();
                for job in &mut scrapers {
                    if t >= job.next {
                        job.next = t + job.every;
                        start_scrape(engine.clone(), job);
                    }
                }
                let (job, deploy) = {
                    let mut e = engine.lock().unwrap_or_else(|p| p.into_inner());
                    let t = now();
                    e.record_refusals(&refusals.due(t), t);
                    e.poll_logs(t)?;
                    let job = e.tick(t)?.zip(e.rollback_settings().cloned());
                    let deploy = match job {
                        Some(_) => None,
                        None => e.next_deploy(t)?.zip(e.rollback_settings().cloned()),
                    };
                    (job, deploy)
                };
                if let Some((job, settings)) = job {
                    start_rollback(engine.clone(), job, settings);
                }
                if let Some((job, settings)) = deploy {
                    start_deploy(engine.clone(), job, settings);
                }
                // Only a loop that just read the logs and judged a second proves it is alive.
                if watchdog_every.is_some_and(|every| watchdog_sent.elapsed() >= every) {
                    report_to_systemd(sdnotify::watchdog());
                    watchdog_sent = std::time::Instant::now();
                }
            }
            _ = stop_rx.wait_for(|stop| *stop) => break,
        }
    }
    report_to_systemd(sdnotify::stopping());
    {
        let mut e = engine.lock().unwrap_or_else(|p| p.into_inner());
        let t = now();
        e.record_refusals(&refusals.drain(), t);
        e.poll_logs(t)?;
        // A rollback this last tick would start is not started while stopping: after the
        // restart the change is escalated to a person, never silently dropped.
        let _ = e.tick(t)?;
        if let Err(err) = e.flush_series() {
            tracing::error!("cannot store the last traffic bins: {err}");
        }
        if let Err(err) = e.save_snapshot(t) {
            tracing::error!("cannot save the core's state: {err}");
        }
    }
    if let Err(join) = server.await {
        return Err(DaemonError::Serve(std::io::Error::other(join.to_string())));
    }
    tracing::info!("stopped");
    Ok(())
}
