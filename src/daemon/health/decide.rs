//! The health check's decisions as a pure state machine (sans-IO, no clock): probe results,
//! restart ends and ticks go in with their time, effects come out as values (probe now, put
//! this on the audit trail, run the restart, email a person). The engine carries them out
//! (`engine/health.rs`); the tests below run an hour of a crashing app in microseconds.
//!
//! The rules it holds, whatever the probes say:
//! - only `failures` failed probes in a row act; one good probe starts the count again, so a
//!   flapping app (fail, ok, fail) is never restarted;
//! - at most `max_per_hour` restarts start in any hour, and none within `cooldown_secs` of the
//!   last (shadow restarts count as if run, so shadow shows what live would do);
//! - a restart must be followed by a good probe within `verify_secs` of its end;
//! - a person is told (`restart_escalated`) when the command fails, when the check does not pass
//!   in time, when the hour's restarts are spent, or when no restart is configured. After that
//!   guardian *holds*: it runs nothing more until the app is seen healthy again (on its own or
//!   by the person's hand), which is recorded (`health_recovered`) and arms it again. The hour's
//!   restarts still count then, so a crash loop cannot buy itself more by flapping;
//! - the hour's restarts spent are told once: a crash loop that flaps holds again quietly until
//!   a restart is made again (a new batch, which is news when it is spent in turn), across a
//!   restart of guardian too.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::change::EventKind;
use crate::config::HealthSettings;

/// How far back the rate limit looks.
pub const HOUR: f64 = 3600.0;

/// The settings the decisions need, in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub interval_secs: f64,
    pub timeout_secs: f64,
    pub failures: u32,
    pub restart: Option<RestartRules>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RestartRules {
    pub max_per_hour: u32,
    pub cooldown_secs: f64,
    pub verify_secs: f64,
    pub shadow: bool,
}

impl Rules {
    pub fn of(settings: &HealthSettings) -> Rules {
        Rules {
            interval_secs: f64::from(settings.interval_secs),
            timeout_secs: f64::from(settings.timeout_secs),
            failures: settings.failures.max(1),
            restart: settings.restart.as_ref().map(|r| RestartRules {
                max_per_hour: r.max_per_hour,
                cooldown_secs: f64::from(r.cooldown_secs),
                verify_secs: f64::from(r.verify_secs),
                shadow: r.shadow,
            }),
        }
    }
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    Ok,
    /// Failed, and why (the status, the timeout, the refused connection).
    Failed(String),
}

/// Why a person was told and guardian holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Escalation {
    /// No restart is configured: the failure itself is the news.
    NoAction,
    /// The hour's restarts are spent.
    RateLimited,
    /// The restart command failed (exit status, timeout, not started).
    CommandFailed,
    /// The restart ran but the check did not pass within `verify_secs`.
    NotVerified,
}

impl Escalation {
    pub fn as_str(self) -> &'static str {
        match self {
            Escalation::NoAction => "no_action",
            Escalation::RateLimited => "rate_limited",
            Escalation::CommandFailed => "command_failed",
            Escalation::NotVerified => "not_verified",
        }
    }
}

/// What goes on the audit trail, as the machine knows it (the engine adds what ran).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Note {
    /// `failures` probes failed in a row since `since`; the last said `why`.
    Failed {
        failures: u32,
        since: f64,
        why: String,
    },
    /// A restart was started (live) or would have been (shadow).
    Restart {
        attempt: String,
        shadow: bool,
        failures: u32,
        why: String,
        /// Restarts started in the hour before this one.
        restarts_last_hour: u32,
    },
    /// A good probe `after_secs` after the restart ended.
    Verified { attempt: String, after_secs: f64 },
    /// A person must act; guardian holds until the app is healthy again.
    Escalated {
        attempt: Option<String>,
        reason: Escalation,
        shadow: bool,
        why: String,
        restarts_last_hour: u32,
        max_per_hour: Option<u32>,
    },
    /// Healthy again after failing (or after an escalation), without a verified restart.
    Recovered { down_secs: f64, held: bool },
}

impl Note {
    /// The kind it is recorded under.
    pub fn kind(&self) -> EventKind {
        match self {
            Note::Failed { .. } => EventKind::HealthFailed,
            Note::Restart { shadow: false, .. } => EventKind::RestartStarted,
            Note::Restart { shadow: true, .. } => EventKind::RestartShadow,
            Note::Verified { .. } => EventKind::RestartVerified,
            Note::Escalated { .. } => EventKind::RestartEscalated,
            Note::Recovered { .. } => EventKind::HealthRecovered,
        }
    }
}

/// What the machine asks of the world.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Probe the endpoint now; the answer comes back as [`Watch::probed`].
    Probe,
    /// Put this on the audit trail.
    Record(Note),
    /// Run the restart command; its end comes back as [`Watch::restart_finished`].
    Restart { attempt: String },
    /// Email a person about this (recorded too, by its own `Record`).
    Alert(Note),
}

/// Where the action stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Probing; failures are counted.
    Watching,
    /// The restart command runs; probes are not counted.
    Restarting { attempt: String, started_at: f64 },
    /// The command ended well: a good probe before `deadline` verifies it.
    Verifying {
        attempt: String,
        ended_at: f64,
        deadline: f64,
    },
    /// A person was told; nothing runs until the app is seen healthy.
    Held { since: f64, reason: Escalation },
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Watching => "watching",
            Phase::Restarting { .. } => "restarting",
            Phase::Verifying { .. } => "verifying",
            Phase::Held { .. } => "held",
        }
    }
}

/// The health check's state.
#[derive(Clone, Debug)]
pub struct Watch {
    rules: Rules,
    phase: Phase,
    /// Failed probes in a row, since when, and why the last failed.
    streak: u32,
    streak_since: f64,
    last_why: String,
    /// Whether this streak's failure is on the record (once per streak).
    streak_told: bool,
    /// Start times of the restarts (shadow ones too) of the last hour, oldest first.
    restarts: VecDeque<f64>,
    /// A probe is under way since then.
    probing: Option<f64>,
    next_probe_at: f64,
    last_ok_at: Option<f64>,
    last_probe_at: Option<f64>,
    /// When a person was last told the hour's restarts were spent. With no restart since, the
    /// hour's restarts are the ones they were told of, and a crash loop that flaps holds again
    /// without another email; any restart since makes a new batch, whose end is news.
    spent_told_at: Option<f64>,
}

/// What the audit trail holds of the action from before this start, so its limits, and what a
/// person was told of them, hold across a restart of guardian.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Start times of the restarts made, shadow ones too, in any order (those older than an
    /// hour are left out).
    pub restarts: Vec<f64>,
    /// When a person was last told the hour's restarts were spent.
    pub spent_told_at: Option<f64>,
}

/// What `guardian status` shows of the machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WatchView {
    pub phase: String,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_probe_at: Option<f64>,
    pub last_ok_at: Option<f64>,
    pub restarts_last_hour: u32,
    pub max_per_hour: Option<u32>,
    pub shadow: bool,
    /// While failing past `failures`: no restart before this (the cool-down since the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_until: Option<f64>,
}

impl Watch {
    /// A new watch, with what the audit trail holds of the action (read at start). The first
    /// probe is due at once.
    pub fn new(rules: Rules, history: &History, now: f64) -> Watch {
        let mut times: Vec<f64> = history
            .restarts
            .iter()
            .copied()
            .filter(|t| t.is_finite() && *t > now - HOUR && *t <= now)
            .collect();
        times.sort_by(f64::total_cmp);
        Watch {
            rules,
            phase: Phase::Watching,
            streak: 0,
            streak_since: now,
            last_why: String::new(),
            streak_told: false,
            restarts: times.into(),
            probing: None,
            next_probe_at: now,
            last_ok_at: None,
            last_probe_at: None,
            spent_told_at: history.spent_told_at.filter(|t| t.is_finite()),
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn view(&self, now: f64) -> WatchView {
        WatchView {
            phase: self.phase.name().to_owned(),
            consecutive_failures: self.streak,
            last_error: (self.streak > 0).then(|| self.last_why.clone()),
            last_probe_at: self.last_probe_at,
            last_ok_at: self.last_ok_at,
            restarts_last_hour: self.restarts_since(now - HOUR),
            max_per_hour: self.rules.restart.as_ref().map(|r| r.max_per_hour),
            shadow: self.rules.restart.as_ref().is_some_and(|r| r.shadow),
            cooldown_until: self.cooldown_until(now),
        }
    }

    /// When the cool-down lets the next restart run, while the app fails and waits for it.
    fn cooldown_until(&self, now: f64) -> Option<f64> {
        let restart = self.rules.restart.as_ref()?;
        let until = self.restarts.back()? + restart.cooldown_secs;
        (matches!(self.phase, Phase::Watching) && self.streak >= self.rules.failures && now < until)
            .then_some(until)
    }

    fn restarts_since(&self, t: f64) -> u32 {
        self.restarts.iter().filter(|&&s| s > t).count() as u32
    }

    /// The clock: a probe when one is due, the verification's deadline.
    pub fn tick(&mut self, now: f64) -> Vec<Effect> {
        let mut out = Vec::new();
        // A probe that never came back (its thread lost) does not stop the checking.
        let lost = self
            .probing
            .is_some_and(|at| now - at > self.rules.timeout_secs + self.rules.interval_secs + 5.0);
        if lost {
            self.probing = None;
        }
        if self.probing.is_none() && now >= self.next_probe_at {
            self.probing = Some(now);
            self.next_probe_at = now + self.rules.interval_secs;
            out.push(Effect::Probe);
        }
        if let Phase::Verifying {
            attempt, deadline, ..
        } = &self.phase
        {
            if now >= *deadline {
                let attempt = attempt.clone();
                let why = format!(
                    "the health check did not pass within {} of the restart{}",
                    crate::report::units::duration(
                        self.rules.restart.as_ref().map_or(0.0, |r| r.verify_secs)
                    ),
                    if self.streak > 0 {
                        format!("; it last said: {}", self.last_why)
                    } else {
                        String::new()
                    }
                );
                self.escalate(Some(attempt), Escalation::NotVerified, why, now, &mut out);
            }
        }
        out
    }

    /// A probe's answer, at `at`.
    pub fn probed(&mut self, probe: Probe, at: f64) -> Vec<Effect> {
        let mut out = Vec::new();
        let started = self.probing.take().unwrap_or(at);
        self.last_probe_at = Some(at);
        // A probe begun before the restart ended says nothing of what the restart did.
        let stale = matches!(self.phase, Phase::Verifying { ended_at, .. } if started < ended_at);
        if stale {
            return out;
        }
        match probe {
            Probe::Ok => {
                self.last_ok_at = Some(at);
                let down_since = self.streak_since;
                let was_told = self.streak_told;
                self.streak = 0;
                self.streak_told = false;
                match std::mem::replace(&mut self.phase, Phase::Watching) {
                    Phase::Verifying {
                        attempt, ended_at, ..
                    } => {
                        let note = Note::Verified {
                            attempt,
                            after_secs: (at - ended_at).max(0.0),
                        };
                        out.push(Effect::Record(note.clone()));
                        out.push(Effect::Alert(note));
                    }
                    Phase::Held { since, .. } => out.push(Effect::Record(Note::Recovered {
                        down_secs: (at - since.min(down_since)).max(0.0),
                        held: true,
                    })),
                    restarting @ Phase::Restarting { .. } => self.phase = restarting,
                    Phase::Watching if was_told => out.push(Effect::Record(Note::Recovered {
                        down_secs: (at - down_since).max(0.0),
                        held: false,
                    })),
                    Phase::Watching => {}
                }
            }
            Probe::Failed(why) => {
                if self.streak == 0 {
                    self.streak_since = at;
                }
                self.streak = self.streak.saturating_add(1);
                self.last_why = why;
                if matches!(self.phase, Phase::Watching) {
                    self.consider(at, &mut out);
                }
            }
        }
        out
    }

    /// The restart command ended, well or not (`why` when not).
    pub fn restart_finished(
        &mut self,
        attempt: &str,
        failed: Option<String>,
        at: f64,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        let ours = matches!(&self.phase, Phase::Restarting { attempt: a, .. } if a == attempt);
        if !ours {
            return out;
        }
        match failed {
            None => {
                let verify = self.rules.restart.as_ref().map_or(0.0, |r| r.verify_secs);
                self.phase = Phase::Verifying {
                    attempt: attempt.to_owned(),
                    ended_at: at,
                    deadline: at + verify,
                };
                // Counting starts again from the restart: only probes after it say anything.
                self.streak = 0;
                self.streak_told = false;
                // Probe at once (or once the probe under way is back): the sooner it is verified,
                // the sooner the person's email goes.
                self.next_probe_at = at;
            }
            Some(why) => self.escalate(
                Some(attempt.to_owned()),
                Escalation::CommandFailed,
                why,
                at,
                &mut out,
            ),
        }
        out
    }

    /// A failed probe while watching: act when the streak is long enough and the limits allow.
    fn consider(&mut self, now: f64, out: &mut Vec<Effect>) {
        if self.streak < self.rules.failures {
            return;
        }
        if !self.streak_told {
            self.streak_told = true;
            out.push(Effect::Record(Note::Failed {
                failures: self.streak,
                since: self.streak_since,
                why: self.last_why.clone(),
            }));
        }
        while self.restarts.front().is_some_and(|&t| t <= now - HOUR) {
            self.restarts.pop_front();
        }
        let Some(restart) = self.rules.restart.clone() else {
            let why = format!(
                "{} health checks failed in a row; no restart is configured",
                self.streak
            );
            self.escalate(None, Escalation::NoAction, why, now, out);
            return;
        };
        let done = self.restarts.len() as u32;
        if done >= restart.max_per_hour {
            let told = self
                .spent_told_at
                .zip(self.restarts.back())
                .is_some_and(|(told, &last)| told > last);
            if told {
                // The person knows of these very restarts: hold again, quietly.
                self.phase = Phase::Held {
                    since: now,
                    reason: Escalation::RateLimited,
                };
                return;
            }
            self.spent_told_at = Some(now);
            let why = format!(
                "{} health checks failed in a row, and the {done} restart{} allowed in an hour \
                 {} been made: the app keeps failing",
                self.streak,
                if done == 1 { "" } else { "s" },
                if done == 1 { "has" } else { "have" },
            );
            self.escalate(None, Escalation::RateLimited, why, now, out);
            return;
        }
        if self
            .restarts
            .back()
            .is_some_and(|&last| now < last + restart.cooldown_secs)
        {
            // Within the cool-down: wait; the next failed probe asks again.
            return;
        }
        let attempt = format!("rst_{}", (now * 1000.0) as i64);
        let note = Note::Restart {
            attempt: attempt.clone(),
            shadow: restart.shadow,
            failures: self.streak,
            why: self.last_why.clone(),
            restarts_last_hour: done,
        };
        self.restarts.push_back(now);
        out.push(Effect::Record(note.clone()));
        if restart.shadow {
            // Nothing ran, so the app is as down as it was: that is the news, once, and a
            // person must act (found in the user trial: counting again as if it had been tried
            // sent an email per shadow restart, none saying ACTION NEEDED, then a false "the
            // restarts allowed have been made"). Held until it is healthy, as after a live
            // restart that did not help.
            let why = format!(
                "{} health checks failed in a row; in shadow mode guardian would have restarted \
                 it and ran nothing, so it is still failing",
                self.streak
            );
            self.escalate(Some(attempt), Escalation::NoAction, why, now, out);
        } else {
            out.push(Effect::Restart {
                attempt: attempt.clone(),
            });
            self.phase = Phase::Restarting {
                attempt,
                started_at: now,
            };
        }
    }

    fn escalate(
        &mut self,
        attempt: Option<String>,
        reason: Escalation,
        why: String,
        now: f64,
        out: &mut Vec<Effect>,
    ) {
        let note = Note::Escalated {
            attempt,
            reason,
            shadow: self.rules.restart.as_ref().is_some_and(|r| r.shadow),
            why,
            restarts_last_hour: self.restarts_since(now - HOUR),
            max_per_hour: self.rules.restart.as_ref().map(|r| r.max_per_hour),
        };
        out.push(Effect::Record(note.clone()));
        out.push(Effect::Alert(note));
        self.phase = Phase::Held { since: now, reason };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_764_000_000.0;

    fn rules(shadow: bool) -> Rules {
        Rules {
            interval_secs: 5.0,
            timeout_secs: 2.0,
            failures: 3,
            restart: Some(RestartRules {
                max_per_hour: 3,
                cooldown_secs: 120.0,
                verify_secs: 30.0,
                shadow,
            }),
        }
    }

    /// The app as the simulation sees it, and what the machine did to it.
    struct Sim {
        watch: Watch,
        now: f64,
        log: Vec<Effect>,
        /// Restart commands run (live), by time.
        restarts: Vec<f64>,
    }

    impl Sim {
        fn new(rules: Rules) -> Sim {
            Sim {
                watch: Watch::new(rules, &History::default(), T0),
                now: T0,
                log: Vec::new(),
                restarts: Vec::new(),
            }
        }

        /// Runs `secs` of simulated time in one-second ticks; `healthy(t, restarts)` says what
        /// a probe at `t` finds; a restart command takes 2 s and ends well unless `fails`.
        fn run(&mut self, secs: f64, fails: bool, healthy: &dyn Fn(f64, &[f64]) -> bool) {
            let end = self.now + secs;
            let mut pending: Option<(String, f64)> = None;
            while self.now < end {
                self.now += 1.0;
                let now = self.now;
                if let Some((attempt, at)) = pending.clone() {
                    if now >= at {
                        pending = None;
                        let why = fails.then(|| "exited with status 1".to_owned());
                        let effects = self.watch.restart_finished(&attempt, why, now);
                        self.log.extend(effects);
                    }
                }
                let effects = self.watch.tick(now);
                for effect in effects {
                    if effect == Effect::Probe {
                        let probe = if healthy(now, &self.restarts) {
                            Probe::Ok
                        } else {
                            Probe::Failed("connection refused".into())
                        };
                        let more = self.watch.probed(probe, now);
                        for e in &more {
                            if let Effect::Restart { attempt } = e {
                                self.restarts.push(now);
                                pending = Some((attempt.clone(), now + 2.0));
                            }
                        }
                        self.log.extend(more);
                    } else {
                        self.log.push(effect);
                    }
                }
            }
        }

        fn kinds(&self) -> Vec<&'static str> {
            self.log
                .iter()
                .filter_map(|e| match e {
                    Effect::Record(n) => Some(n.kind().as_str()),
                    _ => None,
                })
                .collect()
        }

        fn alerts(&self) -> usize {
            self.log
                .iter()
                .filter(|e| matches!(e, Effect::Alert(_)))
                .count()
        }
    }

    #[test]
    fn a_crash_looping_app_gets_at_most_max_per_hour_restarts_then_one_escalation() {
        let mut sim = Sim::new(rules(false));
        // Each restart brings it up for 20 s, then it crashes again; it is down from the start.
        let up = |t: f64, restarts: &[f64]| {
            restarts
                .last()
                .is_some_and(|&r| t > r + 2.0 && t < r + 22.0)
        };
        sim.run(2.0 * HOUR, false, &up);
        assert_eq!(sim.restarts.len(), 3, "{:?}", sim.kinds());
        // Spaced by the cool-down at least.
        assert!(sim.restarts.windows(2).all(|w| w[1] - w[0] >= 120.0));
        let kinds = sim.kinds();
        assert_eq!(
            kinds.iter().filter(|k| **k == "restart_escalated").count(),
            1,
            "{kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| **k == "restart_verified").count(),
            3
        );
        assert_eq!(*kinds.last().unwrap(), "restart_escalated");
        assert!(matches!(
            sim.watch.phase(),
            Phase::Held {
                reason: Escalation::RateLimited,
                ..
            }
        ));
        // Two hours on, still held: no more restarts, no more emails, until it is healthy.
        let alerts = sim.alerts();
        sim.run(2.0 * HOUR, false, &|_, _| false);
        assert_eq!((sim.restarts.len(), sim.alerts()), (3, alerts));
    }

    #[test]
    fn a_probe_begun_before_the_restart_ended_does_not_verify_it() {
        let mut w = Watch::new(rules(false), &History::default(), T0);
        let mut at = T0;
        for _ in 0..3 {
            assert_eq!(w.tick(at), [Effect::Probe]);
            w.probed(Probe::Failed("503".into()), at + 0.5);
            at += 5.0;
        }
        let Phase::Restarting { attempt, .. } = w.phase().clone() else {
            panic!("{:?}", w.phase())
        };
        // A probe goes out while the command runs, and answers after it ended.
        assert_eq!(w.tick(at), [Effect::Probe]);
        assert!(w.restart_finished(&attempt, None, at + 1.0).is_empty());
        assert!(w.probed(Probe::Ok, at + 1.5).is_empty());
        assert!(matches!(w.phase(), Phase::Verifying { .. }));
        // The next probe, begun after it, does.
        assert_eq!(w.tick(at + 2.0), [Effect::Probe]);
        let effects = w.probed(Probe::Ok, at + 2.5);
        assert!(matches!(
            effects.first(),
            Some(Effect::Record(Note::Verified { .. }))
        ));
    }

    #[test]
    fn a_crash_loop_that_flaps_once_its_restarts_are_spent_is_told_once_an_hour() {
        let mut sim = Sim::new(rules(false));
        let up = |t: f64, restarts: &[f64]| {
            let after = restarts
                .last()
                .is_some_and(|&r| t > r + 2.0 && t < r + 22.0);
            // Once the restarts are spent, it comes back now and then on its own.
            after || (restarts.len() == 3 && ((t - T0) as i64 % 60) < 6)
        };
        sim.run(HOUR - 600.0, false, &up);
        let kinds = sim.kinds();
        assert_eq!(sim.restarts.len(), 3);
        assert_eq!(
            kinds.iter().filter(|k| **k == "restart_escalated").count(),
            1,
            "{kinds:?}"
        );
        assert!(kinds.iter().filter(|k| **k == "health_recovered").count() > 10);
    }

    #[test]
    fn flapping_does_not_restart() {
        let mut sim = Sim::new(rules(false));
        // Fails two probes in three, never three in a row.
        sim.run(HOUR, false, &|t, _| {
            ((t - T0) / 5.0).round() as i64 % 3 == 0
        });
        assert!(sim.restarts.is_empty());
        assert!(sim.kinds().is_empty(), "{:?}", sim.kinds());
        assert_eq!(sim.watch.view(sim.now).restarts_last_hour, 0);
    }

    #[test]
    fn a_restart_that_fixes_it_is_verified_and_emailed_once() {
        let mut sim = Sim::new(rules(false));
        sim.run(HOUR, false, &|t, restarts: &[f64]| {
            t < T0 + 60.0 || restarts.first().is_some_and(|&r| t > r + 4.0)
        });
        assert_eq!(sim.restarts.len(), 1);
        // Down at T0+60: probes at 61, 66, 71 fail; restarted at the third.
        assert_eq!(sim.restarts[0], T0 + 71.0);
        assert_eq!(
            sim.kinds(),
            ["health_failed", "restart_started", "restart_verified"]
        );
        assert_eq!(sim.alerts(), 1);
        assert_eq!(sim.watch.phase(), &Phase::Watching);
        let Some(Effect::Record(Note::Verified { after_secs, .. })) = sim
            .log
            .iter()
            .find(|e| matches!(e, Effect::Record(Note::Verified { .. })))
        else {
            panic!("no verification")
        };
        assert!(*after_secs <= 5.0, "{after_secs}");
    }

    #[test]
    fn a_restart_that_does_not_bring_it_back_is_escalated_and_not_repeated() {
        let mut sim = Sim::new(rules(false));
        sim.run(HOUR, false, &|_, _| false);
        assert_eq!(sim.restarts.len(), 1);
        assert_eq!(
            sim.kinds(),
            ["health_failed", "restart_started", "restart_escalated"]
        );
        assert!(matches!(
            sim.watch.phase(),
            Phase::Held {
                reason: Escalation::NotVerified,
                ..
            }
        ));
        // It comes back by a person's hand: recorded, and armed again.
        sim.run(60.0, false, &|_, _| true);
        assert_eq!(*sim.kinds().last().unwrap(), "health_recovered");
        assert_eq!(sim.watch.phase(), &Phase::Watching);
    }

    #[test]
    fn a_failing_restart_command_is_escalated() {
        let mut sim = Sim::new(rules(false));
        sim.run(600.0, true, &|_, _| false);
        assert_eq!(sim.restarts.len(), 1);
        let escalations: Vec<&Note> = sim
            .log
            .iter()
            .filter_map(|e| match e {
                Effect::Alert(n) => Some(n),
                _ => None,
            })
            .collect();
        assert!(matches!(
            escalations.as_slice(),
            [Note::Escalated {
                reason: Escalation::CommandFailed,
                ..
            }]
        ));
    }

    #[test]
    fn a_crash_within_the_cool_down_shows_when_the_next_restart_may_run() {
        let mut sim = Sim::new(rules(false));
        // Up for 20 s after its restart, then down again.
        let up = |t: f64, restarts: &[f64]| {
            restarts
                .last()
                .is_some_and(|&r| t > r + 2.0 && t < r + 22.0)
        };
        sim.run(60.0, false, &up);
        assert_eq!(sim.restarts.len(), 1);
        let view = sim.watch.view(sim.now);
        assert!(view.consecutive_failures >= 3, "{view:?}");
        assert_eq!(
            view.cooldown_until,
            Some(sim.restarts[0] + 120.0),
            "{view:?}"
        );
        sim.run(120.0, false, &up);
        assert_eq!(sim.restarts.len(), 2, "restarted once the cool-down ended");
    }

    #[test]
    fn shadow_runs_nothing_but_records_and_counts_what_it_would_have_done() {
        let mut sim = Sim::new(rules(true));
        sim.run(HOUR, false, &|_, _| false);
        assert!(sim.restarts.is_empty());
        assert!(!sim.log.iter().any(|e| matches!(e, Effect::Restart { .. })));
        let kinds = sim.kinds();
        // What live would do to a restart that did not help: one restart, then a person told
        // once (ACTION NEEDED), and nothing more while it stays down.
        assert_eq!(
            kinds,
            ["health_failed", "restart_shadow", "restart_escalated"],
            "{kinds:?}"
        );
        assert_eq!(sim.alerts(), 1);
    }

    #[test]
    fn the_hours_restarts_hold_across_a_restart_of_guardian() {
        let mut sim = Sim::new(rules(false));
        let history = History {
            restarts: vec![T0 - 3000.0, T0 - 2000.0, T0 - 60.0],
            spent_told_at: None,
        };
        sim.watch = Watch::new(rules(false), &history, T0);
        sim.run(120.0, false, &|_, _| false);
        assert!(sim.restarts.is_empty());
        assert_eq!(
            sim.kinds(),
            ["health_failed", "restart_escalated"],
            "{:?}",
            sim.log
        );
    }

    #[test]
    fn spent_restarts_told_before_a_restart_of_guardian_are_not_told_again() {
        let restarts = vec![T0 - 3000.0, T0 - 2000.0, T0 - 600.0];
        let told = Watch::new(
            rules(false),
            &History {
                restarts: restarts.clone(),
                spent_told_at: Some(T0 - 300.0),
            },
            T0,
        );
        let mut sim = Sim::new(rules(false));
        sim.watch = told;
        sim.run(120.0, false, &|_, _| false);
        assert_eq!(sim.kinds(), ["health_failed"], "{:?}", sim.log);
        assert!(matches!(sim.watch.phase(), Phase::Held { .. }));
        // Told before the latest restart: that was another batch, and this one is news.
        let mut sim = Sim::new(rules(false));
        sim.watch = Watch::new(
            rules(false),
            &History {
                restarts,
                spent_told_at: Some(T0 - 1000.0),
            },
            T0,
        );
        sim.run(120.0, false, &|_, _| false);
        assert_eq!(sim.kinds(), ["health_failed", "restart_escalated"]);
    }

    #[test]
    fn a_restart_made_after_the_person_was_told_is_news_when_the_hour_is_spent_again() {
        let mut sim = Sim::new(rules(false));
        // Down, but for a moment each minute; and 20 s after each restart.
        let up = |t: f64, restarts: &[f64]| {
            let after = restarts
                .last()
                .is_some_and(|&r| t > r + 2.0 && t < r + 22.0);
            after || ((t - T0) as i64 % 60) < 6
        };
        sim.run(4.0 * HOUR, false, &up);
        // R: a restart, E: a person told. Three spent in the first hour are told once; from then
        // on, each time the oldest leaves the hour one more is made (verified, and emailed),
        // which spends the hour again: told again, never left silent.
        let story: String = sim
            .kinds()
            .iter()
            .filter_map(|k| match *k {
                "restart_started" => Some('R'),
                "restart_escalated" => Some('E'),
                _ => None,
            })
            .collect();
        assert_eq!(story, "RRRERERERERERERERERERE");
        assert_eq!(sim.alerts(), 12 + 10);
    }

    #[test]
    fn without_a_restart_a_failure_is_told_once_and_its_recovery_recorded() {
        let mut r = rules(false);
        r.restart = None;
        let mut sim = Sim::new(r);
        sim.run(600.0, false, &|t, _| !(T0 + 30.0..=T0 + 300.0).contains(&t));
        assert_eq!(
            sim.kinds(),
            ["health_failed", "restart_escalated", "health_recovered"]
        );
        assert_eq!(sim.alerts(), 1);
    }
}
