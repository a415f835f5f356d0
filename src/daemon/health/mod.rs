//! The app's health check and its restart (`[daemon.health]`), the first bounded action:
//! `decide.rs` is the pure state machine; this file the IO at its edges, each on a thread of
//! its own whose result comes back to the engine's owner as a message: the probe (an HTTP GET
//! with a timeout, `ureq`) and the restart command (through `process`: own process group,
//! timeout, bounded output).

pub mod decide;

use std::process::Command;
use std::time::{Duration, Instant};

use crate::daemon::agent::RunEnd;
use crate::daemon::engine::Engine;
use crate::daemon::owner::Owner;
use crate::process::Limits;
use decide::Probe;

/// Time between `SIGTERM` and `SIGKILL` for a restart command past its timeout.
const GRACE: Duration = Duration::from_secs(5);
/// Output kept of a restart command, per stream (the record keeps the agent's 4 KiB tail: [`RunEnd::of`]).
const HEAD_BYTES: usize = 4 << 10;
const TAIL_BYTES: usize = 8 << 10;
/// The variables of guardian's environment a restart command gets (`systemctl` needs no more);
/// systemd's notify socket and watchdog, addressed to guardian, are not among them.
const BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"];

/// A restart the engine decided on and recorded, for the owner to start.
#[derive(Clone, Debug)]
pub struct RestartJob {
    pub attempt: String,
    pub command: Vec<String>,
    pub timeout_secs: u32,
    /// The note of its process group while it runs, for the next start to stop it should
    /// guardian stop first.
    pub note: std::path::PathBuf,
}

/// Probes `url` on a thread of its own; the answer goes to the engine as a message.
pub fn probe(owner: &Owner<Engine>, url: String, timeout: Duration) {
    let owner = owner.clone();
    let spawned = std::thread::Builder::new()
        .name("health-probe".into())
        .spawn({
            let owner = owner.clone();
            move || {
                let probe = get(&url, timeout);
                owner.tell(move |e| e.health_probed(probe, super::now()));
            }
        });
    if let Err(e) = spawned {
        let probe = Probe::Failed(format!("no thread to probe on: {e}"));
        owner.tell(move |e| e.health_probed(probe, super::now()));
    }
}

/// One probe: healthy when the endpoint answers 2xx within `timeout` (redirects not followed:
/// a health endpoint that redirects is not answering).
pub fn get(url: &str, timeout: Duration) -> Probe {
    let agent = ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .build();
    match agent.get(url).call() {
        Ok(response) if (200..300).contains(&response.status()) => Probe::Ok,
        Ok(response) => Probe::Failed(format!("answered {}", response.status())),
        Err(ureq::Error::Status(code, _)) => Probe::Failed(format!("answered {code}")),
        Err(ureq::Error::Transport(t)) => {
            Probe::Failed(crate::display::line(&t.to_string()).into_owned())
        }
    }
}

/// Starts the restart on a thread of its own; its end goes to the engine as a message.
pub fn start(owner: &Owner<Engine>, job: RestartJob) {
    tracing::warn!(
        restart = %job.attempt,
        "health: restarting the app ({}): {}",
        job.attempt,
        crate::report::text::shell_line(&job.command)
    );
    let owner = owner.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("restart-{}", job.attempt))
        .spawn({
            let job = job.clone();
            let owner = owner.clone();
            move || {
                let end = run(&job);
                owner.tell(move |e| e.health_restarted(&job, &end, super::now()));
            }
        });
    if let Err(e) = spawned {
        let end = RunEnd::failed(format!("no thread to run it on: {e}"), 0.0);
        owner.tell(move |e| e.health_restarted(&job, &end, super::now()));
    }
}

/// Runs the restart command to its end or its timeout, in its own process group, with a
/// minimal environment. Blocking: on a thread of its own.
pub fn run(job: &RestartJob) -> RunEnd {
    let began = Instant::now();
    let Some((program, args)) = job.command.split_first() else {
        return RunEnd::failed("no command".into(), 0.0);
    };
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear();
    for name in BASE_ENV {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.env("GUARDIAN_RESTART", &job.attempt);
    let limits = Limits {
        timeout: Duration::from_secs(u64::from(job.timeout_secs)),
        grace: GRACE,
        drain: Duration::from_secs(2),
        head: HEAD_BYTES,
        tail: TAIL_BYTES,
    };
    let finished = crate::process::run_noted(cmd, None, &limits, Some(&job.note));
    let took = began.elapsed().as_secs_f64();
    let finished = match finished {
        Ok(f) => f,
        Err(e) => {
            return RunEnd::failed(
                format!(
                    "cannot run {}: {e}",
                    crate::report::text::shell_line(&job.command)
                ),
                took,
            )
        }
    };
    RunEnd::of(&finished, took)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_command_runs_in_a_minimal_environment_and_its_end_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let job = RestartJob {
            attempt: "rst_1".into(),
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo restarting $GUARDIAN_RESTART; echo oops >&2; exit 3".into(),
            ],
            timeout_secs: 5,
            note: dir.path().join("restart-rst_1.running"),
        };
        let end = run(&job);
        assert_eq!((end.outcome.as_str(), end.exit_code), ("exited", Some(3)));
        assert_eq!(end.stdout_tail, "restarting rst_1\n");
        assert_eq!(end.stderr_tail, "oops\n");
        let missing = run(&RestartJob {
            command: vec!["/nonexistent/restart".into()],
            ..job
        });
        assert_eq!(missing.outcome, "failed");
    }

    #[test]
    fn a_probe_of_nothing_listening_fails_saying_why() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        match get(&format!("http://{addr}/healthz"), Duration::from_secs(1)) {
            Probe::Failed(why) => assert!(!why.is_empty()),
            Probe::Ok => panic!("nothing listens"),
        }
    }
}
