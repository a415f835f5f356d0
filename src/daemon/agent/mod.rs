//! The agent trigger (`[daemon.agent]`): on a new Sentry issue that passes the filter, guardian
//! runs the operator's agent command with the issue, its stack, the policy, the ledger and what
//! is deployed as JSON on stdin ([`input`]) and the agent's token in its environment. Its fix
//! comes back, if at all, as a proposal through the gate like any other: guardian neither knows
//! nor cares which agent it is.
//!
//! Who decides what: [`decide`] is pure (whether an issue is handed over now); the engine
//! (`engine/agent.rs`) asks it on its owner's thread, records the start and leaves the run due;
//! the owner's clock starts each due run here, on a thread of its own ([`start`]), and the end
//! comes back to the engine as a message. The command runs through [`crate::process`]: its own
//! process group, the timeout on the whole group, output bounded, stdin written by a thread.

pub mod decide;
pub mod input;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::AgentSettings;
use crate::gate::roles::Role;
use crate::process::{Captured, End, Exit, Limits};
use crate::store::AgentRun;
use input::AgentInput;

/// After the timeout's SIGTERM, how long the agent's group has before SIGKILL.
const GRACE: Duration = Duration::from_secs(10);
/// Bytes of each output stream kept while it runs (its start, and its end).
const HEAD_BYTES: usize = 4 << 10;
const TAIL_BYTES: usize = 16 << 10;
/// Bytes of each stream's end put on the audit trail.
pub const RECORDED_TAIL_BYTES: usize = 4 << 10;
/// Variables of guardian's environment every run gets (when set): what a program needs to
/// find its tools and speak the locale; nothing else leaks from guardian's environment.
const BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"];

/// How the agent reaches guardian: the API's address and the agent's token. Held by the
/// owner's clock, handed to each run; never in the engine, never on the record.
pub struct Access {
    pub api: String,
    token: String,
}

impl Access {
    /// Reads `[daemon.agent] token_file`, which must hold the gate's agent token (one of
    /// `tokens`, with the agent's role): a run proposes as the agent and nothing more.
    /// `listen` is where the API listens; a wildcard address is reached on loopback.
    pub fn load(
        settings: &AgentSettings,
        listen: std::net::SocketAddr,
        tokens: &[([u8; 32], Role)],
    ) -> Result<Access, String> {
        if let Some(user) = &settings.user {
            same_user_refused(user)?;
        }
        let token = super::engine::read_token(&settings.token_file)
            .map_err(|e| format!("[daemon.agent] token_file: {e}"))?;
        let hash = super::http::hash_token(&token);
        match tokens.iter().find(|(h, _)| *h == hash) {
            Some((_, Role::Agent)) => {}
            Some((_, role)) => {
                return Err(format!(
                    "[daemon.agent] token_file {} holds the {role}'s token; the agent proposes \
                     with the gate's agent token ([daemon.gate] agent_token_file) and nothing more",
                    settings.token_file.display()
                ))
            }
            None => {
                return Err(format!(
                    "[daemon.agent] token_file {} holds no token guardian accepts; it must hold \
                     the gate's agent token ([daemon.gate] agent_token_file)",
                    settings.token_file.display()
                ))
            }
        }
        let mut addr = listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        Ok(Access {
            api: format!("http://{addr}"),
            token,
        })
    }
}

/// Refuses `user` when it is guardian's own (by name or uid): the agent would read what
/// guardian reads, its approvers' tokens among them.
fn same_user_refused(user: &str) -> Result<(), String> {
    use nix::unistd::{getuid, Uid, User};
    let own = getuid();
    let theirs = match user.parse::<u32>() {
        Ok(uid) => Some(Uid::from_raw(uid)),
        Err(_) => User::from_name(user).ok().flatten().map(|u| u.uid),
    };
    if theirs == Some(own) {
        return Err(format!(
            "[daemon.agent] user {user:?} is the user guardian runs as (uid {own}): the agent \
             would read guardian's tokens, the approvers' among them; give it an account of \
             its own"
        ));
    }
    Ok(())
}

/// A run the engine decided on and recorded, for the owner to start.
#[derive(Clone, Debug)]
pub struct AgentJob {
    pub run: AgentRun,
    /// What goes on stdin; `deployed` is filled in on the run's thread (git is slow).
    pub input: AgentInput,
    pub settings: AgentSettings,
    /// guardian's clone, whose HEAD is what is deployed (`[daemon.rollback] repo`).
    pub deploy_repo: Option<PathBuf>,
    /// The note of the run's process group while it runs, for a restart to stop it.
    pub note: PathBuf,
}

/// How a run ended, as the audit trail's `agent_finished` tells it (with the run, the issue
/// and the proposals it made, added by the engine).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunEnd {
    /// `exited`, `timed_out` (its group was stopped), `failed` (it could not be started or
    /// waited for), `cut_short` (guardian stopped while it ran).
    pub outcome: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_secs: f64,
    /// The end of what it wrote (at most [`RECORDED_TAIL_BYTES`] each), and how much in all.
    pub stdout_tail: String,
    pub stderr_tail: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Why it failed, or what the runner noticed (a process that held its output, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl RunEnd {
    /// How a command the runner ran to its end (or its timeout) ended, `took` seconds after
    /// it began: the agent's run, or the health check's restart.
    pub(crate) fn of(finished: &crate::process::Finished, took: f64) -> RunEnd {
        let (outcome, exit) = match finished.end {
            End::Exited(exit) => ("exited", Some(exit)),
            End::TimedOut(exit) => ("timed_out", exit),
            End::Unknown(_) => ("failed", None),
        };
        let mut notes: Vec<String> = finished.events.iter().map(|e| format!("{e:?}")).collect();
        if let End::Unknown(e) = &finished.end {
            notes.insert(0, format!("how it ended is unknown: {e}"));
        }
        RunEnd {
            outcome: outcome.into(),
            exit_code: exit.and_then(Exit::code),
            signal: exit.and_then(Exit::signal),
            duration_secs: took,
            stdout_tail: tail(&finished.stdout),
            stderr_tail: tail(&finished.stderr),
            stdout_bytes: finished.stdout.total,
            stderr_bytes: finished.stderr.total,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        }
    }

    /// A command that could not be started or waited for.
    pub(crate) fn failed(why: String, duration_secs: f64) -> RunEnd {
        RunEnd {
            outcome: "failed".into(),
            exit_code: None,
            signal: None,
            duration_secs,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            note: Some(why),
        }
    }

    /// Whether it exited with status 0.
    pub fn succeeded(&self) -> bool {
        self.outcome == "exited" && self.exit_code == Some(0)
    }

    /// One line for a person: "exited 0 after 12 s", "timed out after 30 s (SIGKILL)".
    pub fn summary(&self) -> String {
        let took = crate::report::units::duration(self.duration_secs);
        let how = match (self.outcome.as_str(), self.exit_code, self.signal) {
            ("exited", Some(code), _) => format!("exited {code}"),
            ("exited", _, Some(sig)) => format!("died of signal {sig}"),
            ("timed_out", _, Some(9)) => "timed out, its group stopped with SIGKILL".into(),
            ("timed_out", _, _) => "timed out, its group stopped".into(),
            ("cut_short", ..) => "was cut short by a stop of guardian's".into(),
            (other, ..) => other.replace('_', " "),
        };
        format!("{how} after {took}")
    }
}

/// Starts `job` on a thread of its own; its end goes to the engine as a message.
pub fn start(
    owner: &super::owner::Owner<super::engine::Engine>,
    job: AgentJob,
    access: Arc<Access>,
) {
    tracing::info!(
        agent_run = %job.run.id,
        sentry_issue = %job.run.issue_id,
        "agent: run {} on issue {} ({}) starting: {}",
        job.run.id,
        job.input.issue.short_id.as_deref().unwrap_or(&job.run.issue_id),
        job.run.reason,
        crate::report::text::shell_line(&job.settings.command)
    );
    let owner = owner.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("agent-{}", job.run.id))
        .spawn({
            let job = job.clone();
            let owner = owner.clone();
            move || {
                let end = run(job.clone(), &access);
                owner.tell(move |e| {
                    if let Err(err) = e.agent_finished(&job, &end, super::now()) {
                        tracing::error!(
                            agent_run = %job.run.id,
                            "agent: cannot record the end of run {}: {err}",
                            job.run.id
                        );
                    }
                });
            }
        });
    if let Err(e) = spawned {
        let end = RunEnd::failed(format!("no thread to run it on: {e}"), 0.0);
        owner.tell(move |e| {
            if let Err(err) = e.agent_finished(&job, &end, super::now()) {
                tracing::error!("agent: cannot record the end of run {}: {err}", job.run.id);
            }
        });
    }
}

/// Runs `job` to its end or its timeout. Blocking: on a thread of its own.
pub fn run(mut job: AgentJob, access: &Access) -> RunEnd {
    let began = Instant::now();
    job.input.deployed = job.deploy_repo.as_deref().and_then(deployed);
    let stdin = match serde_json::to_vec(&job.input) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            bytes
        }
        Err(e) => return RunEnd::failed(format!("cannot write its input: {e}"), 0.0),
    };
    let limits = Limits {
        timeout: Duration::from_secs(u64::from(job.settings.timeout_secs)),
        grace: GRACE,
        drain: Duration::from_secs(2),
        head: HEAD_BYTES,
        tail: TAIL_BYTES,
    };
    let cmd = command(&job.settings, access, &job.run, |name| {
        std::env::var_os(name)
    });
    let finished = crate::process::run_noted(cmd, Some(stdin), &limits, Some(&job.note));
    let took = began.elapsed().as_secs_f64();
    let finished = match finished {
        Ok(f) => f,
        Err(e) => {
            return RunEnd::failed(
                format!(
                    "cannot run {}: {e}",
                    crate::report::text::shell_line(&job.settings.command)
                ),
                took,
            )
        }
    };
    // A run is over when its command is: whatever it left running in its process group
    // (`nohup ... &`) is stopped with it, so no run outlives its timeout or its slot. (One
    // that left the group, with `setsid`, is only contained by `user`'s transient unit.)
    if matches!(finished.end, End::Exited(_)) {
        if let Err(e) = crate::process::signal_group(finished.pid, nix::sys::signal::SIGKILL) {
            tracing::warn!(
                "agent: cannot stop what run {} left running: {e}",
                job.run.id
            );
        }
    }
    RunEnd::of(&finished, took)
}

/// What is deployed: the HEAD of guardian's clone (`GET /v1/deployed`).
fn deployed(repo: &Path) -> Option<crate::api::Deployed> {
    match crate::git::Repo::open(repo).and_then(|r| r.head()) {
        Ok(commit) => Some(crate::api::Deployed { commit }),
        Err(e) => {
            tracing::warn!(
                "agent: cannot read what is deployed in {}: {e}; the agent is told none",
                repo.display()
            );
            None
        }
    }
}

/// The end of a stream as text: at most [`RECORDED_TAIL_BYTES`], cut at a character.
fn tail(captured: &Captured) -> String {
    let mut bytes = captured.head.clone();
    if captured.dropped() > 0 {
        bytes.extend_from_slice(format!("\n[... {} bytes ...]\n", captured.dropped()).as_bytes());
    }
    bytes.extend_from_slice(&captured.tail);
    let from = bytes.len().saturating_sub(RECORDED_TAIL_BYTES);
    let text = String::from_utf8_lossy(&bytes[from..]).into_owned();
    // A cut in the middle of a character reads as U+FFFD: drop it.
    text.trim_start_matches('\u{fffd}').to_owned()
}

/// The command for a run: the agent's own, or, with `user`, `systemd-run` starting it as that
/// user in a transient service. Its environment is [`BASE_ENV`], `pass_env` and the
/// `GUARDIAN_*` variables only. `env` reads guardian's environment.
fn command(
    settings: &AgentSettings,
    access: &Access,
    run: &AgentRun,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Command {
    let ours = [
        ("GUARDIAN_API", access.api.as_str()),
        ("GUARDIAN_TOKEN", access.token.as_str()),
        ("GUARDIAN_RUN", run.id.as_str()),
        ("GUARDIAN_ISSUE", run.issue_id.as_str()),
    ];
    let passed: Vec<(&str, std::ffi::OsString)> = BASE_ENV
        .iter()
        .copied()
        .chain(settings.pass_env.iter().map(String::as_str))
        .filter_map(|name| env(name).map(|v| (name, v)))
        .collect();
    let mut cmd = match &settings.user {
        None => {
            let mut cmd = Command::new(&settings.command[0]);
            cmd.args(&settings.command[1..]);
            if let Some(dir) = &settings.workdir {
                cmd.current_dir(dir);
            }
            cmd
        }
        Some(user) => {
            let mut cmd = Command::new("systemd-run");
            cmd.arg(format!("--uid={user}"))
                .args(["--pipe", "--wait", "--collect", "--quiet"])
                .arg("--service-type=exec")
                .arg(format!("--unit=guardian-agent-{}", run.id))
                // systemd stops it at the timeout too, whatever becomes of systemd-run.
                .arg(format!(
                    "--property=RuntimeMaxSec={}",
                    settings.timeout_secs
                ))
                .arg(format!("--property=TimeoutStopSec={}", GRACE.as_secs()));
            if let Some(dir) = &settings.workdir {
                cmd.arg(format!("--working-directory={}", dir.display()));
            }
            // Named without a value: systemd-run takes each from its own environment, so no
            // value (the token least of all) is on its command line.
            for (name, _) in &ours {
                cmd.arg(format!("--setenv={name}"));
            }
            for (name, _) in &passed {
                if *name != "PATH" && *name != "HOME" {
                    cmd.arg(format!("--setenv={name}"));
                }
            }
            cmd.arg("--").args(&settings.command);
            cmd
        }
    };
    cmd.env_clear();
    for (name, value) in &passed {
        cmd.env(name, value);
    }
    for (name, value) in ours {
        cmd.env(name, value);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeniedPaths, SentryLevel};

    fn settings(command: &[&str]) -> AgentSettings {
        AgentSettings {
            command: command.iter().map(|s| s.to_string()).collect(),
            workdir: None,
            timeout_secs: 30,
            min_level: SentryLevel::Error,
            min_events: 1,
            denied_paths: DeniedPaths::default(),
            max_runs_per_hour: 4,
            max_running: 1,
            user: None,
            token_file: "/a".into(),
            pass_env: vec!["MODEL_KEY".into()],
        }
    }

    fn access() -> Access {
        Access {
            api: "http://127.0.0.1:8707".into(),
            token: "agent-token-0123456789".into(),
        }
    }

    fn agent_run() -> AgentRun {
        AgentRun {
            id: "agr_0123456789ab".into(),
            issue_id: "42".into(),
            reason: "new".into(),
            started_at: 0.0,
            ended_at: None,
            outcome: None,
        }
    }

    fn env(name: &str) -> Option<std::ffi::OsString> {
        match name {
            "PATH" => Some("/usr/bin:/bin".into()),
            "MODEL_KEY" => Some("sk-1".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("leak".into()),
            _ => None,
        }
    }

    fn words(cmd: &Command) -> (Vec<String>, Vec<String>) {
        let argv = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut envs: Vec<String> = cmd
            .get_envs()
            .filter_map(|(k, v)| {
                v.map(|v| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            })
            .collect();
        envs.sort();
        (argv, envs)
    }

    #[test]
    fn the_command_gets_the_token_and_the_api_and_nothing_else_of_guardians_environment() {
        let cmd = command(
            &settings(&["/bin/agent", "--fast"]),
            &access(),
            &agent_run(),
            env,
        );
        let (argv, envs) = words(&cmd);
        assert_eq!(argv, ["/bin/agent", "--fast"]);
        assert_eq!(
            envs,
            [
                "GUARDIAN_API=http://127.0.0.1:8707",
                "GUARDIAN_ISSUE=42",
                "GUARDIAN_RUN=agr_0123456789ab",
                "GUARDIAN_TOKEN=agent-token-0123456789",
                "MODEL_KEY=sk-1",
                "PATH=/usr/bin:/bin",
            ]
        );
    }

    #[test]
    fn as_another_user_it_runs_through_systemd_run_with_no_secret_on_the_command_line() {
        let mut s = settings(&["/bin/agent"]);
        s.user = Some("agent".into());
        s.workdir = Some("/srv/agent/app".into());
        let (argv, envs) = words(&command(&s, &access(), &agent_run(), env));
        expect_test::expect![[r#"
            systemd-run --uid=agent --pipe --wait --collect --quiet --service-type=exec --unit=guardian-agent-agr_0123456789ab --property=RuntimeMaxSec=30 --property=TimeoutStopSec=10 --working-directory=/srv/agent/app --setenv=GUARDIAN_API --setenv=GUARDIAN_TOKEN --setenv=GUARDIAN_RUN --setenv=GUARDIAN_ISSUE --setenv=MODEL_KEY -- /bin/agent"#]]
        .assert_eq(&argv.join(" "));
        assert!(!argv.iter().any(|a| a.contains("agent-token")));
        assert!(envs.contains(&"GUARDIAN_TOKEN=agent-token-0123456789".to_owned()));
    }

    #[test]
    fn the_agent_may_not_be_guardians_own_user() {
        let own = nix::unistd::getuid();
        let e = same_user_refused(&own.to_string()).unwrap_err();
        assert!(e.contains("is the user guardian runs as"), "{e}");
        assert!(same_user_refused(&(own.as_raw() + 1).to_string()).is_ok());
    }

    #[test]
    fn a_run_reads_its_input_and_a_hung_one_is_stopped_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen");
        let script = format!(
            "cat > {out:?}; echo \"run $GUARDIAN_RUN\"; echo oops >&2; \
             if [ \"$GUARDIAN_ISSUE\" = 43 ]; then sleep 60 & sleep 60; fi; \
             if [ \"$GUARDIAN_ISSUE\" = 45 ]; then nohup sleep 60 >/dev/null 2>&1 & \
             echo $! > {left:?}; fi",
            left = dir.path().join("left")
        );
        let job = |issue: &str, timeout_secs: u32| {
            let mut s = settings(&["sh", "-c", &script]);
            s.timeout_secs = timeout_secs;
            let mut run = agent_run();
            run.issue_id = issue.into();
            AgentJob {
                input: serde_json::from_value(serde_json::json!({
                    "schema": 1, "run": run.id, "service": "app", "reason": "new",
                    "issue": {"id": issue, "short_id": null, "title": "t", "culprit": null,
                              "level": "error", "status": null, "project": null,
                              "first_seen": 1.0, "last_seen": null, "count": 1,
                              "events_stored": 0, "web_url": null},
                    "stack": {"in_app_files": ["app/cart.py"]},
                    "policy": null, "trust": [], "deployed": null
                }))
                .unwrap(),
                run,
                settings: s,
                deploy_repo: None,
                note: dir.path().join("agent.running"),
            }
        };
        let end = run(job("42", 30), &access());
        assert_eq!(
            (
                end.outcome.as_str(),
                end.exit_code,
                end.stdout_tail.as_str(),
                end.stderr_tail.as_str()
            ),
            ("exited", Some(0), "run agr_0123456789ab\n", "oops\n")
        );
        assert!(end.succeeded(), "{}", end.summary());
        let seen: AgentInput =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(seen.stack.in_app_files, ["app/cart.py"]);

        let started = Instant::now();
        let end = run(job("43", 5), &access());
        assert_eq!(end.outcome, "timed_out", "{end:?}");
        assert!(end.summary().starts_with("timed out"), "{}", end.summary());
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(
            !dir.path().join("agent.running").exists(),
            "the note is gone"
        );

        // What a run leaves running in its group when it exits is stopped with it.
        let end = run(job("45", 30), &access());
        assert_eq!(end.outcome, "exited", "{end:?}");
        let left = std::fs::read_to_string(dir.path().join("left")).unwrap();
        let stat = format!("/proc/{}/stat", left.trim());
        let deadline = Instant::now() + Duration::from_secs(5);
        // Gone, or a zombie its parent (this container's init) has not reaped yet.
        while std::fs::read_to_string(&stat)
            .is_ok_and(|s| !s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
        {
            assert!(Instant::now() < deadline, "the run's leftover still runs");
            std::thread::sleep(Duration::from_millis(50));
        }

        let mut missing = job("44", 5);
        missing.settings.command = vec!["/nonexistent/agent".into()];
        let end = run(missing, &access());
        assert_eq!(end.outcome, "failed");
        assert!(
            end.note
                .as_deref()
                .unwrap()
                .starts_with("cannot run /nonexistent/agent: "),
            "{end:?}"
        );
    }
}
