//! The engine's side of the health check (`[daemon.health]`), on its owner's thread: feeds the
//! pure machine (`daemon::health::decide`) the probes' answers, the restarts' ends and the
//! clock, and carries out its effects: the audit trail, the alert emails, the probe and the
//! restart left due for the owner to start as jobs; and what `guardian status` shows of it,
//! the restart action's track record included. Nothing slow: a store write per effect.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Engine, EngineError};
use crate::change::EventKind;
use crate::config::{DaemonSettings, HealthSettings};
use crate::daemon::agent::RunEnd;
use crate::daemon::health::decide::{
    Effect, Escalation, History, Note, Probe, Rules, Watch, WatchView,
};
use crate::daemon::health::RestartJob;
use crate::report::text;
use crate::store::{LatestRecord, Store};

/// The health check's state in the engine.
pub(in crate::daemon) struct HealthCheck {
    settings: HealthSettings,
    watch: Watch,
    /// The machine asked for a probe: the owner starts it after this tick.
    probe_due: bool,
    /// Restarts decided on and recorded, for the owner to start.
    due: Vec<RestartJob>,
    /// The latest restart's end, for the email that tells how it went.
    last_run: Option<(String, RunEnd)>,
    /// The last failure's reason, as the machine recorded it, for the email.
    last_failure: Option<String>,
    track: HealthTrack,
}

/// The restart action's track record: every record of each kind the audit trail holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthTrack {
    /// Times the check failed `failures` times in a row.
    pub failed: u64,
    /// Restarts run, and of those verified (healthy again in time).
    pub restarts: u64,
    pub verified: u64,
    /// Times a person was told to act.
    pub escalated: u64,
    /// Restarts shadow mode would have run.
    pub shadow: u64,
    /// Times the app was healthy again without a verified restart.
    pub recovered: u64,
}

impl HealthTrack {
    fn read(store: &Store) -> Result<HealthTrack, EngineError> {
        Ok(HealthTrack {
            failed: store.count_events(EventKind::HealthFailed)?,
            restarts: store.count_events(EventKind::RestartStarted)?,
            verified: store.count_events(EventKind::RestartVerified)?,
            escalated: store.count_events(EventKind::RestartEscalated)?,
            shadow: store.count_events(EventKind::RestartShadow)?,
            recovered: store.count_events(EventKind::HealthRecovered)?,
        })
    }

    fn count(&mut self, kind: EventKind) {
        let n = match kind {
            EventKind::HealthFailed => &mut self.failed,
            EventKind::RestartStarted => &mut self.restarts,
            EventKind::RestartVerified => &mut self.verified,
            EventKind::RestartEscalated => &mut self.escalated,
            EventKind::RestartShadow => &mut self.shadow,
            EventKind::HealthRecovered => &mut self.recovered,
            _ => return,
        };
        *n += 1;
    }
}

/// What `guardian status` shows of the health check, when `[daemon.health]` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthStatus {
    pub url: String,
    /// The restart command, when one is configured.
    pub restart: Option<Vec<String>>,
    #[serde(flatten)]
    pub watch: WatchView,
    pub track: HealthTrack,
}

/// What the owner starts after a tick.
#[derive(Debug, Default)]
pub struct HealthDue {
    /// Probe this URL with this timeout.
    pub probe: Option<(String, Duration)>,
    pub restarts: Vec<RestartJob>,
}

/// The note of a restart's process group while it runs, in the state directory.
pub(in crate::daemon) fn note_file(
    state_dir: &std::path::Path,
    attempt: &str,
) -> std::path::PathBuf {
    state_dir.join(format!("restart-{attempt}.running"))
}

/// How long a leftover restart's group has between SIGTERM and SIGKILL, at start.
const LEFTOVER_GRACE: Duration = Duration::from_secs(5);

/// Before the engine starts: a restart a stop of guardian's cut short is recorded as such (its
/// group stopped if it still runs), never run again blindly; then the health check, if
/// configured, with the restarts of the last hour and the track record read from the trail.
pub(super) fn open(
    settings: &DaemonSettings,
    store: &mut Store,
    now: f64,
) -> Result<Option<HealthCheck>, EngineError> {
    // At most 60 an hour: the latest 64 of each cover any hour.
    let started = store.latest_events_of(EventKind::RestartStarted, 64)?;
    let finished = store.latest_events_of(EventKind::RestartFinished, 1)?;
    if let Some(LatestRecord {
        at,
        subject: Some(attempt),
        ..
    }) = started.first()
    {
        let ended = finished
            .first()
            .is_some_and(|f| f.subject.as_ref() == Some(attempt));
        if !ended {
            let stopped = crate::running::stop_leftover(
                &note_file(&settings.state_dir, attempt),
                LEFTOVER_GRACE,
            )
            .is_some();
            let note = format!(
                "guardian stopped while the restart ran{}; it is counted against the hour's \
                 limit and not resumed (a new restart needs new failed probes)",
                if stopped {
                    "; its process group still ran, and was stopped"
                } else {
                    ""
                }
            );
            tracing::warn!(restart = %attempt, "health: restart {attempt}: {note}");
            let detail = serde_json::json!({
                "attempt": attempt,
                "outcome": "cut_short",
                "duration_secs": (now - at).max(0.0),
                "note": note,
            });
            store.audit(
                "guardian",
                EventKind::RestartFinished,
                Some(attempt),
                None,
                &detail,
                now,
            )?;
        }
    }
    let Some(health) = &settings.health else {
        return Ok(None);
    };
    let mut restarts: Vec<f64> = started.iter().map(|r| r.at).collect();
    restarts.extend(
        store
            .latest_events_of(EventKind::RestartShadow, 64)?
            .into_iter()
            .map(|r| r.at),
    );
    // When a person was last told the hour's restarts were spent. It matters only when no
    // restart came after it, and every other escalation but `no_action` follows a restart of
    // its own: the latest few escalations hold it whenever it matters.
    let spent_told_at = store
        .latest_events_of(EventKind::RestartEscalated, 8)?
        .into_iter()
        .find(|r| {
            matches!(
                serde_json::from_value::<Note>(r.detail.clone()),
                Ok(Note::Escalated {
                    reason: Escalation::RateLimited,
                    ..
                })
            )
        })
        .map(|r| r.at);
    let history = History {
        restarts,
        spent_told_at,
    };
    Ok(Some(HealthCheck {
        settings: health.clone(),
        watch: Watch::new(Rules::of(health), &history, now),
        probe_due: false,
        due: Vec::new(),
        last_run: None,
        last_failure: None,
        track: HealthTrack::read(store)?,
    }))
}

impl Engine {
    /// The clock: the machine's tick, and what the owner is to start now.
    pub fn health_tick(&mut self, now: f64) -> HealthDue {
        let Some(check) = &mut self.health else {
            return HealthDue::default();
        };
        let effects = check.watch.tick(now);
        self.health_apply(effects, now);
        let Some(check) = &mut self.health else {
            return HealthDue::default();
        };
        HealthDue {
            probe: std::mem::take(&mut check.probe_due).then(|| {
                (
                    check.settings.url.clone(),
                    Duration::from_secs(u64::from(check.settings.timeout_secs)),
                )
            }),
            restarts: std::mem::take(&mut check.due),
        }
    }

    /// A probe's answer.
    pub fn health_probed(&mut self, probe: Probe, now: f64) {
        let Some(check) = &mut self.health else {
            return;
        };
        if let Probe::Failed(why) = &probe {
            tracing::debug!("health: {} failed: {why}", check.settings.url);
        }
        let effects = check.watch.probed(probe, now);
        self.health_apply(effects, now);
    }

    /// A restart command ended: on the audit trail, then to the machine.
    pub fn health_restarted(&mut self, job: &RestartJob, end: &RunEnd, now: f64) {
        let mut detail = serde_json::to_value(end).unwrap_or_default();
        if let serde_json::Value::Object(map) = &mut detail {
            map.insert("attempt".into(), job.attempt.clone().into());
            map.insert("command".into(), job.command.clone().into());
        }
        self.health_record(EventKind::RestartFinished, &job.attempt, &detail, now);
        let failed = (!end.succeeded()).then(|| {
            let mut why = format!(
                "the restart command {} {}",
                crate::report::text::shell_line(&job.command),
                end.summary()
            );
            if let Some(note) = &end.note {
                let _ = write!(why, " ({note})");
            }
            why
        });
        match &failed {
            None => {
                tracing::info!(restart = %job.attempt, "health: restart {} {}; verifying", job.attempt, end.summary())
            }
            Some(why) => tracing::warn!(restart = %job.attempt, "health: {why}"),
        }
        let Some(check) = &mut self.health else {
            return;
        };
        check.last_run = Some((job.attempt.clone(), end.clone()));
        let effects = check.watch.restart_finished(&job.attempt, failed, now);
        self.health_apply(effects, now);
    }

    /// What status shows of the health check.
    pub(super) fn health_live(&self, now: f64) -> Option<HealthStatus> {
        let check = self.health.as_ref()?;
        Some(HealthStatus {
            url: check.settings.url.clone(),
            restart: check.settings.restart.as_ref().map(|r| r.command.clone()),
            watch: check.watch.view(now),
            track: check.track.clone(),
        })
    }

    fn health_apply(&mut self, effects: Vec<Effect>, now: f64) {
        for effect in effects {
            let Some(check) = &mut self.health else {
                return;
            };
            match effect {
                Effect::Probe => check.probe_due = true,
                Effect::Restart { attempt } => {
                    if let Some(restart) = &check.settings.restart {
                        check.due.push(RestartJob {
                            note: note_file(&self.settings.state_dir, &attempt),
                            attempt,
                            command: restart.command.clone(),
                            timeout_secs: restart.timeout_secs,
                        });
                    }
                }
                Effect::Record(note) => {
                    if let Note::Failed { why, .. } = &note {
                        check.last_failure = Some(why.clone());
                    }
                    check.track.count(note.kind());
                    let subject = subject(&note);
                    let mut detail = serde_json::to_value(&note).unwrap_or_default();
                    if let serde_json::Value::Object(map) = &mut detail {
                        map.insert("url".into(), check.settings.url.clone().into());
                        if let (Note::Restart { .. }, Some(r)) = (&note, &check.settings.restart) {
                            map.insert("command".into(), r.command.clone().into());
                        }
                    }
                    tell(&note, &check.settings.url);
                    self.health_record(note.kind(), &subject, &detail, now);
                }
                Effect::Alert(note) => {
                    if let Err(e) = self.health_alert(&note, now) {
                        tracing::error!("health: cannot queue the email: {e}");
                    }
                }
            }
        }
    }

    fn health_record(
        &mut self,
        kind: EventKind,
        subject: &str,
        detail: &serde_json::Value,
        now: f64,
    ) {
        if let Err(e) = self
            .store
            .audit("guardian", kind, Some(subject), None, detail, now)
        {
            tracing::error!("health: cannot record {kind}: {e}");
        }
    }

    fn health_alert(&mut self, note: &Note, now: f64) -> Result<(), EngineError> {
        let Some(mail) = self.settings.mail.clone() else {
            return Ok(());
        };
        let Some(check) = &self.health else {
            return Ok(());
        };
        let mut email = render(&self.settings.service, check, note, now);
        email.text_body = self.with_checkpoint(&email.text_body, now)?;
        crate::report::enqueue(&mut self.store, &mail, None, &email, now)?;
        Ok(())
    }
}

/// The subject of a record: its restart, or the health check.
fn subject(note: &Note) -> String {
    match note {
        Note::Restart { attempt, .. } | Note::Verified { attempt, .. } => attempt.clone(),
        Note::Escalated {
            attempt: Some(attempt),
            ..
        } => attempt.clone(),
        _ => "health".to_owned(),
    }
}

/// The journal's line for a record.
fn tell(note: &Note, url: &str) {
    match note {
        Note::Failed { failures, why, .. } => {
            tracing::warn!("health: {url} failed {failures} times in a row: {why}")
        }
        Note::Restart {
            attempt,
            shadow: true,
            ..
        } => tracing::warn!(restart = %attempt, "health: shadow mode: would restart the app now ({attempt})"),
        Note::Restart { .. } => {}
        Note::Verified {
            attempt,
            after_secs,
        } => tracing::info!(
            restart = %attempt,
            "health: restart {attempt} verified: healthy {} after it",
            crate::report::units::duration(*after_secs)
        ),
        Note::Escalated { reason, why, .. } => tracing::error!(
            "health: a person must act ({}): {why}; guardian restarts nothing until {url} is healthy again",
            reason.as_str()
        ),
        Note::Recovered { down_secs, .. } => tracing::info!(
            "health: {url} healthy again after {}",
            crate::report::units::duration(*down_secs)
        ),
    }
}

/// The email about `note`: plain text, what failed, what was run and how it ended, and the
/// verification. Its Message-ID is the record's, so a resend after a crash is the same email.
fn render(service: &str, check: &HealthCheck, note: &Note, now: f64) -> crate::report::Email {
    let url = &check.settings.url;
    let command = check
        .settings
        .restart
        .as_ref()
        .map(|r| text::printable(&text::shell_line(&r.command)));
    let mut body = String::new();
    let (subject, id) = match note {
        Note::Verified {
            attempt,
            after_secs,
        } => {
            let _ = writeln!(
                body,
                "guardian restarted {service} after its health check failed, and it is healthy \
                 again ({} after the restart ended).\n",
                crate::report::units::duration(*after_secs)
            );
            (
                format!("[guardian] {service}: restarted, healthy again"),
                format!("{attempt}.verified"),
            )
        }
        Note::Restart {
            attempt,
            failures,
            why,
            ..
        } => {
            let _ = writeln!(
                body,
                "SHADOW MODE: guardian would have restarted {service} now, and did nothing.\n\n\
                 {failures} health checks of {url} failed in a row; the last: {why}\n\
                 Would have run: {}\n",
                command.as_deref().unwrap_or("(none)")
            );
            (
                format!("[guardian] {service}: shadow: would have restarted it"),
                format!("{attempt}.shadow"),
            )
        }
        Note::Escalated {
            attempt,
            reason,
            why,
            ..
        } => {
            // The reason is written for the journal's line too: here it starts a sentence.
            let mut chars = why.chars();
            let why: String = chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect())
                .unwrap_or_default();
            let _ = writeln!(
                body,
                "ACTION NEEDED: {service}'s health check is failing and guardian has stopped \
                 acting on it.\n\n{why}.\n\nguardian restarts nothing more until {url} answers \
                 healthy again (by itself or by your hand).\n"
            );
            let what = match reason {
                Escalation::NoAction => "health check failing",
                Escalation::RateLimited => "restarts spent, still failing",
                Escalation::CommandFailed => "the restart failed",
                Escalation::NotVerified => "the restart did not help",
            };
            (
                format!("[guardian] {service}: ACTION NEEDED: {what}"),
                format!(
                    "{}.escalated",
                    attempt
                        .clone()
                        .unwrap_or_else(|| format!("health_{}", (now * 1000.0) as i64))
                ),
            )
        }
        Note::Failed { .. } | Note::Recovered { .. } => (
            format!("[guardian] {service}: health check"),
            format!("health_{}", (now * 1000.0) as i64),
        ),
    };
    if let Some(why) = &check.last_failure {
        // The probe's error often names the URL already.
        let failed = if why.starts_with(url.as_str()) {
            why.clone()
        } else {
            format!("{url}: {why}")
        };
        let _ = writeln!(body, "What failed\n-----------\n  {failed}\n");
    }
    let attempt = match note {
        Note::Verified { attempt, .. } => Some(attempt),
        Note::Escalated { attempt, .. } => attempt.as_ref(),
        _ => None,
    };
    let ran = match (check.last_run.as_ref(), note) {
        (Some((a, end)), _) if Some(a) == attempt => Some(("What guardian ran", a, end)),
        // Told the hour's restarts are spent, a person is shown how the last of them went.
        (
            Some((a, end)),
            Note::Escalated {
                reason: Escalation::RateLimited,
                ..
            },
        ) => Some(("The last restart guardian ran", a, end)),
        _ => None,
    };
    if let Some((title, attempt, end)) = ran {
        let _ = writeln!(
            body,
            "{title}\n{}\n  {}   ({attempt})\n  It {}.",
            "-".repeat(title.len()),
            command.as_deref().unwrap_or("(none)"),
            end.summary()
        );
        if end.succeeded() {
            // A failed run's note is in the reason above already.
            if let Some(note) = &end.note {
                let _ = writeln!(body, "  Note: {}", text::printable(note));
            }
        }
        for (name, out, total) in [
            ("stdout", &end.stdout_tail, end.stdout_bytes),
            ("stderr", &end.stderr_tail, end.stderr_bytes),
        ] {
            let lines = text::tail(out, text::OUTPUT_TAIL_LINES);
            if lines.is_empty() {
                let _ = writeln!(body, "  It printed nothing on {name}.");
                continue;
            }
            let _ = writeln!(
                body,
                "  The last lines of its {name} ({} bytes in all):",
                crate::report::units::count(total)
            );
            for line in lines {
                let _ = writeln!(body, "    | {line}");
            }
        }
        body.push('\n');
    }
    let view = check.watch.view(now);
    if let Some(max) = view.max_per_hour {
        let _ = writeln!(
            body,
            "Restarts in the last hour: {} of at most {max}.",
            view.restarts_last_hour
        );
    }
    let _ = writeln!(
        body,
        "The record: guardian audit export --config <guardian.toml>; kinds health_failed, \
         restart_started, restart_finished, restart_verified, restart_escalated, \
         restart_shadow, health_recovered.\n"
    );
    crate::report::Email {
        subject,
        text_body: body,
        message_id: format!("<{id}@guardian>"),
        html: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const T0: f64 = 1_764_000_000.0;

    fn engine(dir: &std::path::Path, store: Store, now: f64) -> Engine {
        let config = Config::parse(&format!(
            "[daemon]\nstate_dir = {dir:?}\n[daemon.health]\nurl = \"http://127.0.0.1:9/h\"\n\
             interval_secs = 1\ntimeout_secs = 1\nfailures = 2\n\
             [daemon.health.restart]\ncommand = [\"/bin/true\"]\nmax_per_hour = 2\n\
             cooldown_secs = 0\n"
        ))
        .unwrap();
        let settings = config.daemon.clone().unwrap();
        Engine::with_store(&config, &settings, store, now).unwrap()
    }

    /// Two failed probes: the restart is recorded and left due.
    fn fail_twice(e: &mut Engine, at: f64) -> Vec<RestartJob> {
        for i in 0..2 {
            let t = at + f64::from(i);
            assert!(e.health_tick(t).probe.is_some());
            e.health_probed(Probe::Failed("answered 503".into()), t + 0.1);
        }
        let due = e.health_tick(at + 2.0);
        if due.probe.is_some() {
            // Under way while the restart runs: not counted.
            e.health_probed(Probe::Failed("answered 503".into()), at + 2.1);
        }
        due.restarts
    }

    #[test]
    fn a_restart_a_stop_cut_short_is_recorded_and_counts_against_the_hour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guardian.db");
        let mut e = engine(dir.path(), Store::open(&path).unwrap(), T0);
        let due = fail_twice(&mut e, T0);
        assert_eq!(due.len(), 1);
        let status = e.status(T0 + 2.0).unwrap().health.unwrap();
        assert_eq!(
            (status.watch.phase.as_str(), status.track.restarts),
            ("restarting", 1)
        );
        drop(e);
        // guardian stops with the restart under way, and starts again.
        let mut e = engine(dir.path(), Store::open(&path).unwrap(), T0 + 10.0);
        let detail: String = e
            .store
            .conn
            .query_row(
                "SELECT detail FROM events WHERE kind = 'restart_finished'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let finished: serde_json::Value = serde_json::from_str(&detail).unwrap();
        assert_eq!(finished["outcome"], "cut_short");
        assert_eq!(finished["attempt"], due[0].attempt.as_str());
        // One restart of the two left this hour.
        let again = fail_twice(&mut e, T0 + 10.0);
        assert_eq!(again.len(), 1);
        e.health_restarted(&again[0], &crate::daemon::health::run(&again[0]), T0 + 13.0);
        assert!(e.health_tick(T0 + 13.0).probe.is_some());
        e.health_probed(Probe::Failed("answered 503".into()), T0 + 13.1);
        // Never verified: escalated, and held.
        e.health_tick(T0 + 60.0);
        let status = e.status(T0 + 60.0).unwrap().health.unwrap();
        assert_eq!(status.watch.phase, "held");
        assert_eq!(
            (
                status.track.restarts,
                status.track.escalated,
                status.watch.restarts_last_hour
            ),
            (2, 1, 2)
        );
    }

    #[test]
    fn spent_restarts_are_told_once_across_a_restart_of_guardian() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guardian.db");
        let mut e = engine(dir.path(), Store::open(&path).unwrap(), T0);
        let mut at = T0;
        for _ in 0..2 {
            let due = fail_twice(&mut e, at);
            assert_eq!(due.len(), 1);
            e.health_restarted(&due[0], &crate::daemon::health::run(&due[0]), at + 3.0);
            assert!(e.health_tick(at + 3.0).probe.is_some());
            e.health_probed(Probe::Ok, at + 3.1);
            at += 10.0;
        }
        // The hour's two restarts are spent: a person is told.
        assert!(fail_twice(&mut e, at).is_empty());
        let track = e.status(at + 3.0).unwrap().health.unwrap().track;
        assert_eq!((track.restarts, track.verified, track.escalated), (2, 2, 1));
        drop(e);
        // guardian restarts; the app comes back for a moment and fails again.
        let at = at + 10.0;
        let mut e = engine(dir.path(), Store::open(&path).unwrap(), at);
        assert!(e.health_tick(at).probe.is_some());
        e.health_probed(Probe::Ok, at + 0.1);
        assert!(fail_twice(&mut e, at + 1.0).is_empty());
        let status = e.status(at + 4.0).unwrap().health.unwrap();
        assert_eq!(status.watch.phase, "held");
        assert_eq!((status.track.failed, status.track.escalated), (4, 1));
        // The trust ledger's line reads the same records.
        let restart = crate::gate::actions::ledger(&e.store).unwrap().remove(0);
        assert_eq!(
            (
                restart.attempts,
                restart.verified,
                restart.escalated,
                restart.shadow
            ),
            (2, 2, 1, 0)
        );
        let setback = restart.last_setback.unwrap();
        assert_eq!(setback.reason, "rate_limited");
        assert!((setback.at - (T0 + 21.1)).abs() < 1e-6, "{setback:?}");
    }

    /// The email the machine's latest escalation sends, as a person reads it.
    fn escalation_email(e: &Engine, now: f64) -> String {
        let latest = e
            .store
            .latest_events_of(EventKind::RestartEscalated, 1)
            .unwrap();
        let note: Note = serde_json::from_value(latest[0].detail.clone()).unwrap();
        let email = render("shop", e.health.as_ref().unwrap(), &note, now);
        format!("Subject: {}\n\n{}", email.subject, email.text_body)
    }

    fn ended(exit_code: i32, stdout: &str, stderr: &str) -> RunEnd {
        RunEnd {
            outcome: "exited".into(),
            exit_code: Some(exit_code),
            signal: None,
            duration_secs: 1.5,
            stdout_tail: stdout.into(),
            stderr_tail: stderr.into(),
            stdout_bytes: stdout.len() as u64,
            stderr_bytes: 12_345,
            note: None,
        }
    }

    #[test]
    fn a_failed_restarts_email_says_what_failed_what_ran_what_it_printed_and_the_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = engine(
            dir.path(),
            Store::open(&dir.path().join("g.db")).unwrap(),
            T0,
        );
        let due = fail_twice(&mut e, T0);
        let end = ended(
            4,
            "",
            "\u{1b}[31mJob for app.service failed.\u{1b}[0m\nSee 'journalctl -xeu app.service'.\n",
        );
        e.health_restarted(&due[0], &end, T0 + 3.5);
        expect_test::expect![[r#"
            Subject: [guardian] shop: ACTION NEEDED: the restart failed

            ACTION NEEDED: shop's health check is failing and guardian has stopped acting on it.

            The restart command /bin/true exited 4 after 1.5 s.

            guardian restarts nothing more until http://127.0.0.1:9/h answers healthy again (by itself or by your hand).

            What failed
            -----------
              http://127.0.0.1:9/h: answered 503

            What guardian ran
            -----------------
              /bin/true   (rst_1764000001100)
              It exited 4 after 1.5 s.
              It printed nothing on stdout.
              The last lines of its stderr (12,345 bytes in all):
                | \x1b[31mJob for app.service failed.\x1b[0m
                | See 'journalctl -xeu app.service'.

            Restarts in the last hour: 1 of at most 2.
            The record: guardian audit export --config <guardian.toml>; kinds health_failed, restart_started, restart_finished, restart_verified, restart_escalated, restart_shadow, health_recovered.

        "#]]
        .assert_eq(&escalation_email(&e, T0 + 3.5));
    }

    #[test]
    fn the_email_that_the_hours_restarts_are_spent_shows_how_the_last_went() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = engine(
            dir.path(),
            Store::open(&dir.path().join("g.db")).unwrap(),
            T0,
        );
        let mut at = T0;
        for _ in 0..2 {
            let due = fail_twice(&mut e, at);
            let end = ended(0, "restarting app.service\n", "");
            e.health_restarted(&due[0], &end, at + 3.0);
            assert!(e.health_tick(at + 3.0).probe.is_some());
            e.health_probed(Probe::Ok, at + 3.1);
            at += 10.0;
        }
        assert!(fail_twice(&mut e, at).is_empty());
        expect_test::expect![[r#"
            Subject: [guardian] shop: ACTION NEEDED: restarts spent, still failing

            ACTION NEEDED: shop's health check is failing and guardian has stopped acting on it.

            2 health checks failed in a row, and the 2 restarts allowed in an hour have been made: the app keeps failing.

            guardian restarts nothing more until http://127.0.0.1:9/h answers healthy again (by itself or by your hand).

            What failed
            -----------
              http://127.0.0.1:9/h: answered 503

            The last restart guardian ran
            -----------------------------
              /bin/true   (rst_1764000011100)
              It exited 0 after 1.5 s.
              The last lines of its stdout (23 bytes in all):
                | restarting app.service
              It printed nothing on stderr.

            Restarts in the last hour: 2 of at most 2.
            The record: guardian audit export --config <guardian.toml>; kinds health_failed, restart_started, restart_finished, restart_verified, restart_escalated, restart_shadow, health_recovered.

        "#]].assert_eq(&escalation_email(&e, at + 2.0));
    }
}
