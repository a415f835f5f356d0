//! The engine's side of the agent trigger (`[daemon.agent]`), on its owner's thread: on each new
//! Sentry delivery about an issue, ask the pure decision (`agent::decide`), and on a yes record
//! the start and leave the run due for the owner to start as a job; record each run's end; at
//! start, record runs a stop of guardian's cut short (never run again blindly); what
//! `guardian status` shows of the agent. Nothing slow: a store read or two per delivery.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Engine, EngineError};
use crate::config::{AgentSettings, DaemonSettings};
use crate::daemon::agent::decide::{self, Decision, Memory, Sighting, Skip, REMEMBERED_SECS};
use crate::daemon::agent::input::{AgentInput, IssueInput, PolicyInput, StackInput, SCHEMA};
use crate::daemon::agent::{AgentJob, RunEnd};
use crate::sentry::{IssueAction, Notice};
use crate::store::{AgentRun, Store};

/// Issues whose last skip is remembered, so a storm of deliveries logs each reason once.
const TOLD_MAX: usize = 1024;
/// How long a leftover agent's group has between SIGTERM and SIGKILL, at start.
const LEFTOVER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The trigger's state in the engine.
pub(in crate::daemon) struct AgentTrigger {
    settings: AgentSettings,
    memory: Memory,
    /// Runs decided on and recorded, for the owner to start.
    due: Vec<AgentJob>,
    /// The last reason each issue was turned away for, as logged.
    told: HashMap<String, &'static str>,
}

impl AgentTrigger {
    /// The issues runs are under way on, with their runs.
    pub(in crate::daemon) fn running_issues(&self) -> impl Iterator<Item = (&str, &str)> {
        self.memory.running().map(|(issue, run, _)| (issue, run))
    }
}

/// What `guardian status` shows of the agent, when `[daemon.agent]` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Runs under way: run, issue, since when.
    pub running: Vec<RunningAgent>,
    pub runs_last_hour: u32,
    pub max_runs_per_hour: u32,
    /// The latest run, under way or ended.
    pub last: Option<AgentRun>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunningAgent {
    pub run: String,
    pub issue: String,
    pub started_at: f64,
}

/// The note of run `id`'s process group while it runs, in the state directory.
fn note_file(state_dir: &std::path::Path, id: &str) -> std::path::PathBuf {
    state_dir.join(format!("agent-{id}.running"))
}

/// Before the engine starts: runs a stop of guardian's cut short are recorded as such (their
/// group stopped if it still runs), never run again blindly; then the trigger, if configured,
/// with the memory of the runs of the last 90 days.
pub(super) fn open(
    settings: &DaemonSettings,
    store: &mut Store,
    now: f64,
) -> Result<Option<AgentTrigger>, EngineError> {
    for run in store.agent_runs_unfinished()? {
        let stopped =
            crate::running::stop_leftover(&note_file(&settings.state_dir, &run.id), LEFTOVER_GRACE)
                .is_some();
        let note = format!(
            "guardian stopped while the agent ran on issue {}{}; it is not run again on its own: \
             the issue is handed over again only if it comes back (a person may look at it, and \
             at any proposal the run made)",
            run.issue_id,
            if stopped {
                "; its process group still ran, and was stopped"
            } else {
                ""
            }
        );
        tracing::warn!(agent_run = %run.id, "agent: run {}: {note}", run.id);
        let end = RunEnd {
            outcome: "cut_short".into(),
            exit_code: None,
            signal: None,
            duration_secs: (now - run.started_at).max(0.0),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            note: Some(note),
        };
        store.agent_run_finished(&run.id, "cut_short", &finished_detail(&run, &end, &[]), now)?;
    }
    let Some(agent) = &settings.agent else {
        return Ok(None);
    };
    let runs = store.agent_runs_since(now - REMEMBERED_SECS)?;
    let memory = Memory::of_runs(
        runs.iter().map(|r| (r.issue_id.as_str(), r.started_at)),
        now,
    );
    Ok(Some(AgentTrigger {
        settings: agent.clone(),
        memory,
        due: Vec::new(),
        told: HashMap::new(),
    }))
}

/// What `agent_finished` records: the run, the issue, how it ended, its proposals.
fn finished_detail(run: &AgentRun, end: &RunEnd, proposals: &[String]) -> serde_json::Value {
    let mut detail = serde_json::to_value(end).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut detail {
        map.insert("run".into(), run.id.clone().into());
        map.insert("issue".into(), run.issue_id.clone().into());
        map.insert("proposals".into(), proposals.to_vec().into());
    }
    detail
}

impl Engine {
    /// A new delivery from Sentry: if it is about an issue, decides whether the agent is run on
    /// it now, and if so records the start and leaves the run due. A failure is logged, never
    /// the delivery's: it is stored already.
    pub(super) fn agent_heard(&mut self, notice: &Notice, now: f64) {
        let (issue_id, reappeared) = match notice {
            Notice::Issue { action, issue } => {
                (issue.id.as_str(), *action == IssueAction::Unresolved)
            }
            Notice::Error(event) | Notice::Alert { event, .. } => (event.issue_id.as_str(), false),
            Notice::Unused { .. } => return,
        };
        if let Err(e) = self.agent_consider(issue_id, reappeared, now) {
            tracing::error!("agent: cannot decide on Sentry's delivery: {e}");
        }
    }

    /// An issue Sentry's API told of (described, or with new events): considered as a
    /// delivery of it would be, so an issue no webhook announced still reaches the agent.
    pub(super) fn agent_polled(&mut self, issue_id: &str, now: f64) {
        if let Err(e) = self.agent_consider(issue_id, false, now) {
            tracing::error!("agent: cannot decide on Sentry issue {issue_id} from a poll: {e}");
        }
    }

    fn agent_consider(
        &mut self,
        issue_id: &str,
        reappeared: bool,
        now: f64,
    ) -> Result<(), EngineError> {
        let Some(trigger) = &self.agent else {
            return Ok(());
        };
        // The storm's common case, without reading the issue: handed over already.
        if trigger.memory.settled(issue_id) && !reappeared {
            return Ok(());
        }
        let Some(issue) = self.store.sentry_issue(issue_id)? else {
            return Ok(());
        };
        let events_stored = self.store.sentry_events(issue_id, 0.0, now + 3600.0)?;
        let sighting = Sighting {
            issue_id,
            level: issue.level.as_deref(),
            status: issue.status.as_deref(),
            first_seen: issue.first_seen,
            events: issue.count.unwrap_or(0).max(events_stored),
            culprit: issue.culprit.as_deref(),
            files: &issue.files,
            reappeared,
        };
        let Some(trigger) = &mut self.agent else {
            return Ok(());
        };
        trigger.memory.heard(&sighting, now);
        let reason = match decide::decide(&trigger.settings, &trigger.memory, &sighting, now) {
            Decision::Skip(skip) => {
                tell_skip(trigger, &issue, &skip);
                return Ok(());
            }
            Decision::Run(reason) => reason,
        };
        trigger.told.remove(issue_id);
        let detail = serde_json::json!({
            "issue": issue.id,
            "short_id": issue.short_id,
            "title": issue.title,
            "level": issue.level,
            "events": sighting.events,
            "reason": reason.as_str(),
            "command": trigger.settings.command,
            "user": trigger.settings.user,
        });
        let run = self
            .store
            .agent_run_started(&issue.id, reason.as_str(), &detail, now)?;
        let input = AgentInput {
            schema: SCHEMA,
            run: run.id.clone(),
            service: self.settings.service.clone(),
            reason: reason.as_str().to_owned(),
            issue: IssueInput::of(&issue, events_stored),
            stack: StackInput {
                in_app_files: issue.files.clone(),
            },
            policy: self
                .policy
                .as_ref()
                .map(|p| PolicyInput::of(&p.policy, &p.sha256, &self.never)),
            trust: super::trust_ledger(&self.store, &self.trust_rules())?,
            deployed: None,
        };
        let Some(trigger) = &mut self.agent else {
            return Ok(());
        };
        trigger.memory.started(&issue.id, &run.id, now);
        trigger.due.push(AgentJob {
            note: note_file(&self.settings.state_dir, &run.id),
            input,
            settings: trigger.settings.clone(),
            deploy_repo: self.settings.rollback.as_ref().map(|r| r.repo.clone()),
            run,
        });
        Ok(())
    }

    /// The runs decided on, for the owner to start ([`crate::daemon::agent::start`]). Taken once.
    pub fn agents_due(&mut self) -> Vec<AgentJob> {
        self.agent
            .as_mut()
            .map(|t| std::mem::take(&mut t.due))
            .unwrap_or_default()
    }

    /// A run ended: on the audit trail with the proposals the agent made while it ran, and in
    /// the journal.
    pub fn agent_finished(
        &mut self,
        job: &AgentJob,
        end: &RunEnd,
        now: f64,
    ) -> Result<(), EngineError> {
        if let Some(trigger) = &mut self.agent {
            trigger.memory.finished(&job.run.issue_id);
        }
        let proposals: Vec<String> = self
            .store
            .recent_proposals(50)?
            .into_iter()
            .filter(|p| {
                p.proposer == "agent" && p.created_at >= job.run.started_at && p.created_at <= now
            })
            .map(|p| p.id)
            .collect();
        self.store.agent_run_finished(
            &job.run.id,
            &end.outcome,
            &finished_detail(&job.run, end, &proposals),
            now,
        )?;
        let made = match proposals.len() {
            0 => "no proposal".to_owned(),
            _ => format!("proposed {}", proposals.join(", ")),
        };
        let line = format!(
            "agent: run {} on issue {} {}; {made}",
            job.run.id,
            job.run.issue_id,
            end.summary()
        );
        if end.succeeded() {
            tracing::info!(agent_run = %job.run.id, sentry_issue = %job.run.issue_id, "{line}");
        } else {
            let said = crate::display::line(end.stderr_tail.trim_end());
            let said: String = said
                .chars()
                .rev()
                .take(500)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            tracing::warn!(
                agent_run = %job.run.id,
                sentry_issue = %job.run.issue_id,
                "{line}{}{}",
                end.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(),
                if said.is_empty() { String::new() } else { format!("; its stderr ends: {said}") }
            );
        }
        Ok(())
    }

    /// What status shows of the agent that lives in memory (the last run is read later, off
    /// the owner: [`AgentStatus::complete`]).
    pub(super) fn agent_live(&self, now: f64) -> Option<AgentStatus> {
        let trigger = self.agent.as_ref()?;
        Some(AgentStatus {
            running: trigger
                .memory
                .running()
                .map(|(issue, run, at)| RunningAgent {
                    run: run.to_owned(),
                    issue: issue.to_owned(),
                    started_at: at,
                })
                .collect(),
            runs_last_hour: trigger.memory.runs_last_hour(now) as u32,
            max_runs_per_hour: trigger.settings.max_runs_per_hour,
            last: None,
        })
    }
}

impl AgentStatus {
    /// With the latest run, read from `store`.
    pub fn complete(mut self, store: &Store) -> Result<AgentStatus, EngineError> {
        self.last = store.agent_last_run()?;
        Ok(self)
    }
}

/// Logs why an issue is not handed over: once per issue and reason, so a storm of deliveries
/// about one issue is one line. An issue handed over already, or under way, is not news.
fn tell_skip(trigger: &mut AgentTrigger, issue: &crate::sentry::Issue, skip: &Skip) {
    let key = skip.key();
    if trigger.told.get(&issue.id) == Some(&key) {
        return;
    }
    if trigger.told.len() >= TOLD_MAX {
        trigger.told.clear();
    }
    trigger.told.insert(issue.id.clone(), key);
    let name = issue.short_id.as_deref().unwrap_or(&issue.id);
    // A file or culprit in the reason is Sentry's text: one visible line.
    let why = crate::display::line(&skip.to_string()).into_owned();
    match skip {
        Skip::Running { .. } | Skip::Handed { .. } => {
            tracing::debug!(sentry_issue = %issue.id, "agent: not run on issue {name}: {why}")
        }
        _ => tracing::info!(
            sentry_issue = %issue.id,
            "agent: not run on issue {name} ({}): {why}",
            crate::display::line(&issue.title)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::sentry::{Event, Issue, Verified};

    const T0: f64 = 1_764_000_000.0;

    fn engine(dir: &std::path::Path, store: Store) -> Engine {
        engine_with(dir, store, "")
    }

    /// The engine with `extra` lines in `[daemon.agent]`.
    fn engine_with(dir: &std::path::Path, store: Store, extra: &str) -> Engine {
        let policy = dir.join("policy.toml");
        std::fs::write(
            &policy,
            "[paths]\nallow = [\"src/**\"]\ndeny = [\"**/auth/**\"]\n",
        )
        .unwrap();
        let config = Config::parse(&format!(
            "[daemon]\nstate_dir = {dir:?}\n[daemon.sentry]\nclient_secret_file = \"/s\"\n\
             [daemon.gate]\npolicy_file = {policy:?}\nagent_token_file = \"/a\"\n\
             [daemon.agent]\nas_guardian = true\ncommand = [\"/bin/agent\"]\nmin_events = 2\n\
             denied_paths = [\"app/auth/**\"]\n{extra}"
        ))
        .unwrap();
        let settings = config.daemon.clone().unwrap();
        Engine::with_store(&config, &settings, store, T0).unwrap()
    }

    fn issue(id: &str, level: &str, count: u64, action: IssueAction) -> Notice {
        Notice::Issue {
            action,
            issue: Issue {
                id: id.into(),
                short_id: Some(format!("SHOP-{id}")),
                title: "TypeError".into(),
                culprit: Some("app/cart.py in total".into()),
                level: Some(level.into()),
                status: Some("unresolved".into()),
                substatus: None,
                project: Some("shop".into()),
                web_url: None,
                first_seen: T0 - 5.0,
                last_seen: Some(T0),
                count: Some(count),
                files: vec!["app/cart.py".into()],
            },
        }
    }

    fn deliver(e: &mut Engine, notice: Notice, n: u32, now: f64) {
        let delivery = Verified {
            resource: "issue".into(),
            request_id: None,
            body_sha256: format!("body-{n}"),
            sent_at: now,
        };
        e.sentry_delivery(&delivery, &notice, now).unwrap();
    }

    #[test]
    fn a_new_issue_that_passes_the_filter_is_run_once_with_the_issue_policy_and_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = engine(dir.path(), Store::open_in_memory().unwrap());
        // Too few events, then a warning: neither is handed over.
        deliver(&mut e, issue("1", "error", 1, IssueAction::Created), 1, T0);
        deliver(
            &mut e,
            issue("2", "warning", 9, IssueAction::Created),
            2,
            T0,
        );
        assert!(e.agents_due().is_empty());
        // Its events reach min_events: handed over, once.
        let event = |n: u32| {
            Notice::Error(Event {
                event_id: format!("e{n}"),
                issue_id: "1".into(),
                title: "TypeError".into(),
                culprit: None,
                level: Some("error".into()),
                at: T0 + f64::from(n),
                release: None,
                web_url: None,
                files: vec!["app/cart.py".into()],
            })
        };
        deliver(&mut e, event(3), 3, T0 + 3.0);
        assert!(e.agents_due().is_empty(), "1 of Sentry's count, 1 stored");
        deliver(&mut e, event(4), 4, T0 + 4.0);
        let due = e.agents_due();
        assert_eq!(due.len(), 1);
        let job = &due[0];
        assert_eq!(
            (job.run.issue_id.as_str(), job.input.reason.as_str()),
            ("1", "new")
        );
        assert_eq!(job.input.issue.short_id.as_deref(), Some("SHOP-1"));
        assert_eq!(job.input.issue.events_stored, 2);
        assert_eq!(job.input.stack.in_app_files, ["app/cart.py"]);
        let policy = job.input.policy.as_ref().unwrap();
        assert_eq!(
            (policy.allow.clone(), policy.deny.clone()),
            (vec!["src/**".to_owned()], vec!["**/auth/**".to_owned()])
        );
        assert!(job.input.trust.iter().any(|t| t.pattern == "nil-check"));
        deliver(&mut e, event(5), 5, T0 + 5.0);
        assert!(e.agents_due().is_empty(), "one run per issue");
        let status = e.status(T0 + 6.0).unwrap().agent.unwrap();
        assert_eq!(status.running.len(), 1);
        assert_eq!(
            status.last.as_ref().map(|r| r.id.as_str()),
            Some(job.run.id.as_str())
        );

        let end = RunEnd {
            outcome: "exited".into(),
            exit_code: Some(0),
            signal: None,
            duration_secs: 3.0,
            stdout_tail: "done\n".into(),
            stderr_tail: String::new(),
            stdout_bytes: 5,
            stderr_bytes: 0,
            note: None,
        };
        e.agent_finished(job, &end, T0 + 9.0).unwrap();
        deliver(&mut e, event(6), 6, T0 + 10.0);
        assert!(e.agents_due().is_empty(), "never twice");
        // Sentry says it came back: once more.
        deliver(
            &mut e,
            issue("1", "error", 30, IssueAction::Unresolved),
            7,
            T0 + 20.0,
        );
        let again = e.agents_due();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].input.reason, "reappeared");
        let status = e.status(T0 + 21.0).unwrap().agent.unwrap();
        assert_eq!(status.runs_last_hour, 2);
    }

    #[test]
    fn a_run_a_restart_cut_short_is_recorded_and_not_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guardian.db");
        let mut e = engine(dir.path(), Store::open(&path).unwrap());
        deliver(&mut e, issue("7", "fatal", 5, IssueAction::Created), 1, T0);
        let job = e.agents_due().pop().unwrap();
        drop(e);
        // guardian stops with the run under way, and starts again.
        let mut e = engine(dir.path(), Store::open(&path).unwrap());
        assert!(e.store.agent_runs_unfinished().unwrap().is_empty());
        let last = e.store.agent_last_run().unwrap().unwrap();
        assert_eq!(
            (last.id.as_str(), last.outcome.as_deref()),
            (job.run.id.as_str(), Some("cut_short"))
        );
        deliver(
            &mut e,
            issue("7", "fatal", 6, IssueAction::Assigned),
            2,
            T0 + 60.0,
        );
        assert!(e.agents_due().is_empty(), "not run again blindly");
        let detail: String = e
            .store
            .conn
            .query_row(
                "SELECT detail FROM events WHERE kind = 'agent_finished'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let finished: serde_json::Value = serde_json::from_str(&detail).unwrap();
        assert_eq!(finished["outcome"], "cut_short");
        assert!(
            finished["note"]
                .as_str()
                .unwrap()
                .contains("not run again on its own"),
            "{finished}"
        );
    }
    #[test]
    fn the_agents_proposal_naming_no_issue_is_its_runs_fix_and_with_two_runs_must_say_which() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = engine_with(
            dir.path(),
            Store::open_in_memory().unwrap(),
            "max_running = 2\n",
        );
        let unnamed = crate::daemon::engine::ProposalRequest {
            pattern: "timeout-bump".into(),
            summary: "raise the timeout".into(),
            issue_url: None,
            issue: None,
            flag: None,
            tests_run: true,
            base: "0".repeat(40),
            commit: None,
            patch: String::new(),
            kind: crate::store::ChangeKind::Ai,
        };
        let check = |e: &Engine| {
            e.check_proposal(
                &crate::gate::roles::Role::Agent,
                &unnamed,
                crate::daemon::engine::Judged::Refused("not judged here".into()),
                T0 + 10.0,
            )
        };
        deliver(&mut e, issue("7", "error", 5, IssueAction::Created), 1, T0);
        assert_eq!(e.agents_due().len(), 1);
        assert!(check(&e).is_ok(), "one run: the proposal is its fix");
        let agent = crate::gate::roles::Role::Agent;
        assert_eq!(
            e.named_issue(&agent, &unnamed).unwrap().sentry.as_deref(),
            Some("7")
        );
        // A link to another tracker does not take it off the run's issue.
        let linked = crate::daemon::engine::ProposalRequest {
            issue: Some("https://github.com/acme/shop/issues/7".into()),
            ..unnamed.clone()
        };
        let named = e.named_issue(&agent, &linked).unwrap();
        assert_eq!(
            (named.sentry.as_deref(), named.url.as_deref()),
            (Some("7"), Some("https://github.com/acme/shop/issues/7"))
        );
        deliver(&mut e, issue("8", "error", 5, IssueAction::Created), 2, T0);
        assert_eq!(e.agents_due().len(), 1);
        match check(&e) {
            Err(EngineError::BadRequest(why)) => {
                assert!(why.contains("7, 8") || why.contains("8, 7"), "{why}")
            }
            other => panic!("two runs: the proposal must name its issue, got {other:?}"),
        }
    }

    #[test]
    fn a_proposal_may_declare_only_a_flag_guardian_may_turn_off() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine_with(
            dir.path(),
            Store::open_in_memory().unwrap(),
            &format!(
                "\n[daemon.flag_off]\nfile = {:?}\nflags = [\"new-*\"]\n",
                dir.path().join("flags.json")
            ),
        );
        let proposal = |flag: &str| crate::daemon::engine::ProposalRequest {
            pattern: "timeout-bump".into(),
            summary: "raise the timeout".into(),
            issue_url: None,
            issue: None,
            flag: Some(flag.into()),
            tests_run: true,
            base: "0".repeat(40),
            commit: None,
            patch: String::new(),
            kind: crate::store::ChangeKind::Ai,
        };
        let check = |flag: &str| {
            e.check_proposal(
                &crate::gate::roles::Role::Agent,
                &proposal(flag),
                crate::daemon::engine::Judged::Refused("not judged here".into()),
                T0,
            )
        };
        match check("billing") {
            Err(EngineError::BadRequest(why)) => assert_eq!(
                why,
                "\"flag\" \"billing\" is not on [daemon.flag_off]'s allow-list (flags = \
                 [\"new-*\"]): a proposal may declare only a flag guardian may turn off"
            ),
            other => panic!("a flag off the allow-list is refused, got {other:?}"),
        }
        assert!(check("new-checkout").is_ok());
    }
}
