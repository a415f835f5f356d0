//! `guardian run`: the daemon. Follows the access logs, serves the API, and every second lets
//! the decision core judge the change being watched. This module wires it up and is the only
//! clock; `supervisor` makes the decisions as values, `engine` holds the state and carries them
//! out, `owner` is the one thread that holds the engine, `http` the API, and the jobs
//! (`actions`, `deploy`, scrapes, mail) run beside them.

pub mod actions;
pub mod agent;
pub mod deploy;
pub mod engine;
pub mod flag_limits;
pub mod health;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod owner;
pub mod page;
pub mod publish;
pub mod refusals;
pub mod sentry_api;
pub mod serve;
pub mod sessions;
pub mod state_dir;
pub mod step;
pub mod supervisor;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;

type Owner = owner::Owner<Engine>;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{Config, DaemonSettings};
use crate::sdnotify;
use engine::{Engine, EngineError};

/// How often the logs are read.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How often queued alert emails are tried.
const MAIL_EVERY: Duration = Duration::from_secs(5);
/// How often due notifications are sent.
const NOTIFY_EVERY: Duration = Duration::from_secs(2);

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
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
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
        if let Err(e) = send_due_mail(&db, &mailer, "") {
            tracing::error!("mail: {e}");
        }
        busy.store(false, Ordering::Release);
    });
}

/// One pass over the outbox in `db`: every email due is tried, and what happened logged
/// (`sent_when` after "sent N email(s)"). Returns the store, for what the caller reads next.
fn send_due_mail(
    db: &std::path::Path,
    mailer: &crate::report::Mailer,
    sent_when: &str,
) -> Result<crate::store::Store, String> {
    let mut store =
        crate::store::Store::open(db).map_err(|e| format!("cannot open the outbox: {e}"))?;
    let stats = crate::report::deliver_due(&mut store, mailer, now());
    for e in &stats.errors {
        tracing::warn!("mail: {e}");
    }
    if stats.sent > 0 {
        tracing::info!("mail: sent {} email(s){sent_when}", stats.sent);
    }
    Ok(store)
}

/// How long a stop waits for the emails still due to go out.
const LAST_MAIL_WITHIN: Duration = Duration::from_secs(10);

/// At a stop, once the engine has queued its last: one more pass over the outbox, within
/// [`LAST_MAIL_WITHIN`], so an email queued seconds before (a rollback's) does not wait for the
/// next start, which may never come on this state directory. What is left is said.
async fn deliver_last_mail(state_dir: &std::path::Path, mailer: Arc<crate::report::Mailer>) {
    let db = state_dir.join("guardian.db");
    let pass = tokio::task::spawn_blocking(move || {
        let store = send_due_mail(&db, &mailer, " before stopping")?;
        store
            .pending_emails()
            .map_err(|e| format!("cannot read the outbox: {e}"))
    });
    let left = match tokio::time::timeout(LAST_MAIL_WITHIN, pass).await {
        Ok(Ok(Ok(left))) => left,
        Ok(Ok(Err(e))) => {
            tracing::error!("mail: before stopping: {e}");
            return;
        }
        Ok(Err(join)) => {
            tracing::error!("mail: the last delivery failed: {join}");
            return;
        }
        Err(_) => {
            tracing::warn!(
                "mail: the SMTP server did not take the last emails within {} s; what is left \
                 in the outbox is sent when guardian starts again on {}",
                LAST_MAIL_WITHIN.as_secs(),
                state_dir.display()
            );
            return;
        }
    };
    if left > 0 {
        tracing::warn!(
            "mail: {left} email(s) not sent yet (refused, or waiting to be tried again); they \
             are sent when guardian starts again on {}",
            state_dir.display()
        );
    }
}

/// Sends the notifications that are due, as [`deliver_mail`] sends the emails.
fn deliver_notifications(
    state_dir: &std::path::Path,
    targets: Arc<Vec<crate::config::NotifyTarget>>,
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
                let (sent, errors) = notify::deliver_due(&mut store, &targets, now());
                for e in &errors {
                    tracing::warn!("notify: {e}");
                }
                if sent > 0 {
                    tracing::info!("notify: sent {sent} notification(s)");
                }
            }
            Err(e) => tracing::error!("notify: cannot open the outbox: {e}"),
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
fn reload(engine: &mut Engine, path: Option<&std::path::Path>) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP: no configuration file to reload");
        return;
    };
    match Config::from_path(path) {
        Err(e) => tracing::error!("SIGHUP: kept the running configuration: {e}"),
        Ok(config) => {
            let needs_restart = engine.reload(&config, now());
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

/// Runs a remediation on a thread of its own (git and the hook take seconds to minutes, or hang
/// until their timeout) and hands its outcome to the engine.
fn start_remediation(
    owner: &Owner,
    job: supervisor::Remediation,
    action: Arc<dyn actions::Action>,
) {
    tracing::warn!(
        change_id = %job.change_id,
        "{} regressed ({}); remediating: {}",
        job.change_id,
        job.reason,
        action.kind()
    );
    let owner = owner.clone();
    std::thread::spawn(move || {
        let outcome = action.run(&job);
        match &outcome.remedied {
            supervisor::Remedied::Failed(why) => tracing::error!(
                change_id = %job.change_id,
                "{}: escalated: {why}",
                job.change_id
            ),
            supervisor::Remedied::Done(what) => tracing::info!(
                change_id = %job.change_id,
                "{}: {what}; checking recovery",
                job.change_id
            ),
        }
        owner.tell(move |e| {
            if let Err(err) = e.remedied(action.kind(), &job, &outcome, now()) {
                tracing::error!(
                    change_id = %job.change_id,
                    "{}: cannot record the {}: {err}",
                    job.change_id,
                    action.kind()
                );
            }
        });
    });
}

/// Turns a flag off at a role's request on a thread of its own (the flag service may take
/// until its timeout) and hands the outcome to the engine.
fn start_flag_off(owner: &Owner, job: engine::FlagJob, action: Arc<actions::flag_off::FlagOff>) {
    tracing::warn!(
        "turning flag {} off, asked by {}: {}",
        job.flag,
        job.requested_by,
        job.reason
    );
    let owner = owner.clone();
    std::thread::spawn(move || {
        let report = action.turn_off(&job.flag);
        match &report.error {
            Some(error) => tracing::error!("flag {}: not turned off: {error}", job.flag),
            None => tracing::info!("flag {} turned off", job.flag),
        }
        owner.tell(move |e| {
            if let Err(err) = e.flag_job_finished(&job, &report, now()) {
                tracing::error!("flag {}: cannot record the flag_off: {err}", job.flag);
            }
        });
    });
}

fn start_deploy(owner: &Owner, job: engine::DeployJob, settings: crate::config::RollbackSettings) {
    tracing::info!(
        proposal_id = %job.proposal_id,
        "deploying proposal {}",
        job.proposal_id
    );
    let owner = owner.clone();
    std::thread::spawn(move || {
        let report = deploy::run(&settings, &job);
        owner.tell(move |e| {
            if let Err(err) = e.deploy_finished(&job, &report, now()) {
                tracing::error!(
                    proposal_id = %job.proposal_id,
                    "{}: cannot record the deploy: {err}",
                    job.proposal_id
                );
            }
        });
    });
}

/// What the engine's owner does every [`POLL_EVERY`]: poll the sources and judge, start the
/// rollbacks and deploys that are due, and tell systemd's watchdog it did.
struct Clock {
    refusals: Arc<refusals::Refusals>,
    /// How agent runs reach the API, when `[daemon.agent]` is set.
    agent: Option<Arc<agent::Access>>,
    watchdog_every: Option<Duration>,
    watchdog_sent: std::time::Instant,
    /// Where `/healthz` and `/metrics` read when the loop last ticked.
    metrics: Arc<metrics::Metrics>,
}

impl owner::Clockwork<Engine> for Clock {
    type Error = EngineError;

    fn tick(&mut self, e: &mut Engine, owner: &Owner) -> Result<(), EngineError> {
        let t = now();
        e.record_refusals(&self.refusals.due(t), t);
        e.poll_sources(t)?;
        e.poll_sentry_api(t)?;
        e.tick(t)?;
        if let Some((job, action)) = e.remediation_due() {
            start_remediation(owner, job, action);
        } else if let Some((job, settings)) = e.next_deploy(t)?.zip(e.rollback_settings().cloned())
        {
            start_deploy(owner, job, settings);
        }
        for (job, action) in e.flag_jobs_due() {
            start_flag_off(owner, job, action);
        }
        if let Some(access) = &self.agent {
            for job in e.agents_due() {
                agent::start(owner, job, access.clone());
            }
        }
        let due = e.health_tick(t);
        if let Some((url, timeout)) = due.probe {
            health::probe(owner, url, timeout);
        }
        for job in due.restarts {
            health::start(owner, job);
        }
        // Only a loop that just read the logs and judged a second proves it is alive.
        self.metrics.ticked(now());
        if self
            .watchdog_every
            .is_some_and(|every| self.watchdog_sent.elapsed() >= every)
        {
            report_to_systemd(sdnotify::watchdog());
            self.watchdog_sent = std::time::Instant::now();
        }
        Ok(())
    }

    fn stop(&mut self, e: &mut Engine) -> Result<(), EngineError> {
        let t = now();
        e.record_refusals(&self.refusals.drain(), t);
        e.poll_sources(t)?;
        // A remediation this last tick would start is not started while stopping: after the
        // restart the change is escalated to a person, never silently dropped.
        e.tick(t)?;
        if let Err(err) = e.flush_series() {
            tracing::error!("cannot store the last traffic bins: {err}");
        }
        if let Err(err) = e.save_snapshot(t) {
            tracing::error!("cannot save the core's state: {err}");
        }
        Ok(())
    }
}

/// Every API token and whose it is: the operator's (`token_file`), the agent's, each
/// approver's and each viewer's. Two roles sharing a token would let one act as the other: refused.
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
    for (name, file) in &settings.viewers {
        files.push((file.clone(), Role::Viewer(name.clone())));
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

/// Wall-clock unix seconds: the only clock the daemon reads.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What a daemon holds before it starts: its state directory (made private, and locked for as
/// long as this lives, so no second daemon ever runs on it) and the API's listener on the
/// configured address. Taken by the caller (`guardian run`, the demo, a test), which then knows
/// the address without asking the daemon; the lock first, so a second `guardian run` on the
/// same file is told of the first rather than of a port in use.
pub struct Bound {
    pub listener: tokio::net::TcpListener,
    lock: state_dir::Lock,
}

/// Prepares and locks the state directory, then binds the API's listener: see [`Bound`].
pub async fn bind(config: &Config) -> Result<Bound, DaemonError> {
    let settings = config.daemon.as_ref().ok_or(DaemonError::NotConfigured)?;
    for change in state_dir::prepare(&settings.state_dir).map_err(DaemonError::StateDir)? {
        tracing::info!("{change}");
    }
    let lock = state_dir::Lock::take(&settings.state_dir).map_err(DaemonError::StateDir)?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|error| DaemonError::Listen {
            addr: settings.listen.to_string(),
            error,
        })?;
    Ok(Bound { listener, lock })
}

/// Runs, serving the API on `bound`'s listener, until `shutdown` completes; then stops cleanly:
/// the API stops accepting, the logs are read one last time and their positions saved. The
/// state directory's lock is let go only when it returns, after the engine's thread ended.
/// `config_path`, when given, is re-read on SIGHUP: a bad file is refused with a message and the
/// running configuration kept.
pub async fn run(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    bound: Bound,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let Bound { listener, lock } = bound;
    let settings = config.daemon.clone().ok_or(DaemonError::NotConfigured)?;
    if lock.dir() != settings.state_dir {
        return Err(DaemonError::StateDir(format!(
            "the daemon was bound with the state directory {}, and configured with {}",
            lock.dir().display(),
            settings.state_dir.display()
        )));
    }
    // Installed first: a SIGHUP while starting must not take the default action (exit).
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(DaemonError::Signals)?;
    let tokens = read_tokens(&settings).map_err(DaemonError::Token)?;
    let sentry_hook = match &settings.sentry {
        Some(s) => Some(Arc::new(
            webhooks::SentryHook::load(s).map_err(DaemonError::Token)?,
        )),
        None => None,
    };
    let mut engine = Engine::open(&config, &settings, now())?;
    engine.serving_at(listener.local_addr().map_err(DaemonError::Serve)?);
    for warning in engine.protect_host_files(config_path.as_deref()) {
        tracing::warn!("{warning}");
    }
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
    let addr = listener.local_addr().map_err(DaemonError::Serve)?;
    let metrics_listener = match settings.metrics_listen {
        None => None,
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|error| {
            DaemonError::Listen {
                addr: addr.to_string(),
                error,
            }
        })?),
    };
    if let Some(Ok(addr)) = metrics_listener.as_ref().map(|l| l.local_addr()) {
        tracing::info!("/metrics and /healthz listening on {addr}");
    }

    let agent = match &settings.agent {
        Some(a) => Some(Arc::new(
            agent::Access::load(a, addr, &tokens).map_err(DaemonError::Token)?,
        )),
        None => None,
    };
    let refusals = Arc::new(refusals::Refusals::default());
    let metrics = Arc::new(metrics::Metrics::default());
    let clock = Clock {
        metrics: metrics.clone(),
        agent,
        refusals: refusals.clone(),
        watchdog_every: sdnotify::watchdog_interval().map(|i| i / 2),
        watchdog_sent: std::time::Instant::now(),
    };
    let (owner, mut ended) = owner::start(engine, POLL_EVERY, clock).map_err(DaemonError::Serve)?;
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
    let api = http::Api {
        owner: owner.clone(),
        tokens: Arc::new(
            tokens
                .into_iter()
                .map(|(hash, role)| http::Token::new(hash, role, &settings.limits))
                .collect(),
        ),
        clock: now,
        reads: Arc::new(http::Reads::new(settings.state_dir.join("guardian.db"))),
        refusals,
        judging: Arc::new(tokio::sync::Semaphore::new(http::JUDGE_CONCURRENCY)),
        anonymous: http::anonymous_limiter(),
        sentry: sentry_hook,
        metrics,
        metrics_on_api: metrics_listener.is_none(),
        sessions: Arc::default(),
        service: settings.service.as_str().into(),
    };
    let (server_stop, server_stopping) = tokio::sync::watch::channel(false);
    let metrics_server = metrics_listener.map(|listener| {
        let router = metrics::router(api.clone());
        tokio::spawn(serve::serve(listener, router, server_stopping.clone()))
    });
    let server = tokio::spawn(serve::serve(listener, http::router(api), server_stopping));
    report_to_systemd(sdnotify::ready());

    let mut mail_tick = tokio::time::interval(MAIL_EVERY);
    let mailing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Read once at start: a reload says the targets need a restart.
    let targets = Arc::new(settings.notify.clone());
    let mut notify_tick = tokio::time::interval(NOTIFY_EVERY);
    let notifying = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed = loop {
        tokio::select! {
            _ = notify_tick.tick(), if !targets.is_empty() => {
                deliver_notifications(&settings.state_dir, targets.clone(), notifying.clone());
            }
            _ = mail_tick.tick(), if mailer.is_some() => {
                owner.tell(|e| {
                    if let Err(err) = e.queue_digest(now()) {
                        tracing::error!("mail: cannot queue the daily digest: {err}");
                    }
                });
                if let Some(m) = &mailer {
                    deliver_mail(&settings.state_dir, m.clone(), mailing.clone());
                }
            }
            _ = hangup.recv() => {
                let path = config_path.clone();
                owner.tell(move |e| {
                    report_to_systemd(sdnotify::reloading());
                    reload(e, path.as_deref());
                    report_to_systemd(sdnotify::ready());
                });
            }
            // The owner ended on its own: its loop failed (the logs or the store).
            result = &mut ended => break Some(result),
            _ = stop_rx.wait_for(|stop| *stop) => break None,
        }
    };
    report_to_systemd(sdnotify::stopping());
    let _ = server_stop.send(true);
    let ended = match failed {
        Some(result) => result,
        None => {
            owner.stop();
            ended.await
        }
    };
    if let Some(m) = &mailer {
        // A pass of the mail tick may still be sending: let it finish first, so no email is
        // sent twice.
        let waited = std::time::Instant::now();
        let busy = || mailing.load(std::sync::atomic::Ordering::Acquire);
        while busy() && waited.elapsed() < LAST_MAIL_WITHIN {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if busy() {
            tracing::warn!(
                "mail: a delivery is still under way; what it does not send is sent when \
                 guardian starts again on {}",
                settings.state_dir.display()
            );
        } else {
            deliver_last_mail(&settings.state_dir, m.clone()).await;
        }
    }
    if let Err(join) = server.await {
        return Err(DaemonError::Serve(std::io::Error::other(join.to_string())));
    }
    if let Some(server) = metrics_server {
        if let Err(join) = server.await {
            return Err(DaemonError::Serve(std::io::Error::other(join.to_string())));
        }
    }
    match ended {
        Ok(Ok(())) => {
            tracing::info!("stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(DaemonError::Serve(std::io::Error::other(
            "the engine's thread ended without a word (it panicked: see above)",
        ))),
    }
}
