//! What the daemon decides about the change it watches, as a pure state machine: inputs in (a
//! change landed, time passed to `now`, a remediation finished), effects out as values (record
//! this transition, put this event on the record, alert a person, start this remediation, save
//! the progress). No store, no clock, no threads, in the spirit of `quinn-proto`: the engine
//! carries the effects out against the store, the mail outbox and the jobs, and tests drive
//! this on simulated time in milliseconds.
//!
//! The life of a change: `Watching` until the core's verdict; healthy, inconclusive (extended
//! once where the policy says so) or superseded end it; regressed starts the remediation when
//! one is configured (`Remediating`), whose success is checked on the traffic that follows
//! (`Verifying`) and whose failure goes to a person. A deploy of an approved proposal holds
//! the supervisor too (`Deploying`): one change at a time, so each verdict is about one change.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::change::{ChangeKind, ChangeState, EventKind};
use crate::config::{DaemonSettings, InconclusivePolicy};
use crate::core::evidence::Counts;
use crate::core::{
    ClaimVerdict, DetectorSettings, Landing, Monitor, Report, SignalKind, Span, Verdict,
};
use crate::report::units;
use crate::sentry::{ClaimWatch, QuietBefore, SentryWatch};

use super::flag_limits::{FlagLedger, Refusal};

/// How often the evidence of a change being watched is saved, and the core's state with it, so
/// a restart resumes the watch.
pub const SAVE_EVERY_SECS: f64 = 5.0;
/// Seconds after a remediation finishes before the recovery check counts traffic: the hook
/// returning is not the new version serving, and the first seconds still show the old one.
pub const RECOVERY_SETTLE_SECS: f64 = 3.0;
/// How long past its end a healthy watch waits for Sentry's counts to reach its end.
pub const SENTRY_WAIT_SECS: f64 = 60.0;

/// The change under watch, as far as the decisions need it.
#[derive(Clone, Debug, PartialEq)]
pub struct Watched {
    pub id: String,
    pub kind: ChangeKind,
    /// The commit or range deployed: what a remediation undoes.
    pub commit: String,
    /// The fix pattern it claims, when it came through the gate (shadow mode is per pattern).
    pub pattern: Option<String>,
    /// The Sentry issue it claims to fix, if it names one.
    pub fixes: Option<String>,
    /// The feature flag it is behind, if it declares one: turned off first when it regresses
    /// (`[daemon.flag_off]`), reverted only if that did not help.
    pub flag: Option<String>,
}

/// Where the supervisor stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    Idle,
    /// Watching whether the change made things worse.
    Watching(Watched),
    /// The change regressed; its remediation runs as a job.
    Remediating(Watched),
    /// Remediated: watching whether the service is back to its baseline.
    Verifying(Watched),
    /// An approved proposal is being applied and redeployed as a job.
    Deploying(String),
}

/// What a remediation is asked to undo, how, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Remediation {
    pub change_id: String,
    /// The commit or range that was deployed.
    pub commit: String,
    /// Why, in numbers: the regressed signals' evidence.
    pub reason: String,
    /// Which action: git revert and redeploy, or the change's feature flag turned off.
    pub remedy: Remedy,
}

/// The remediations the supervisor chooses between.
#[derive(Clone, Debug, PartialEq)]
pub enum Remedy {
    /// `git revert`, push, the redeploy hook (`[daemon.rollback]`).
    Revert,
    /// Turn the change's feature flag off (`[daemon.flag_off]`): seconds, no redeploy.
    FlagOff { flag: String },
}

/// How a flag_off went, for its track record (`flag_actions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagOutcome {
    /// Being turned off, or checked.
    Running,
    /// Turned off and the service recovered.
    Verified,
    /// Turned off, and the service did not recover: the change was reverted next.
    DidNotHelp,
    /// The flag could not be turned off.
    Failed,
    /// Shadow mode: decided and recorded, nothing done.
    Shadow,
    /// Not turned off: outside the allow-list, the rate limit or the cool-down, or a role
    /// without the right.
    Refused,
    /// Guardian stopped while it was under way; handed to a person, never redone blindly.
    CutShort,
    /// Turned off at a role's request (no change to check the recovery of).
    Done,
}

impl FlagOutcome {
    pub const ALL: [FlagOutcome; 8] = [
        FlagOutcome::Running,
        FlagOutcome::Verified,
        FlagOutcome::DidNotHelp,
        FlagOutcome::Failed,
        FlagOutcome::Shadow,
        FlagOutcome::Refused,
        FlagOutcome::CutShort,
        FlagOutcome::Done,
    ];

    /// The text stored.
    pub fn as_str(self) -> &'static str {
        match self {
            FlagOutcome::Running => "running",
            FlagOutcome::Verified => "verified",
            FlagOutcome::DidNotHelp => "did_not_help",
            FlagOutcome::Failed => "failed",
            FlagOutcome::Shadow => "shadow",
            FlagOutcome::Refused => "refused",
            FlagOutcome::CutShort => "cut_short",
            FlagOutcome::Done => "done",
        }
    }

    pub fn parse(text: &str) -> Option<FlagOutcome> {
        FlagOutcome::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

/// The flag being tried for the change being remediated, and the regression's reason (for the
/// revert that follows if it does not help).
#[derive(Clone, Debug, PartialEq)]
struct FlagStage {
    flag: String,
    why: String,
}

/// How a remediation ended, as far as the decisions need it.
#[derive(Clone, Debug, PartialEq)]
pub enum Remedied {
    /// Done (e.g. "reverted in 1a2b3c4 and redeployed"): check that the service recovered.
    Done(String),
    /// It could not be done; why, for the person who must take over.
    Failed(String),
}

/// What a `recovery_check` record says: the recovery watch's verdict and the evidence it rests
/// on. Written from the supervisor's effect, read back by the post-mortem.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecoveryCheck {
    pub verdict: Verdict,
    pub report: Option<Report>,
}

/// What the engine must do, in order.
#[derive(Clone, Debug)]
pub enum Effect {
    /// Record the change's move to `state`: with the evidence when it rests on it, the moment
    /// of the decision when there is one, and a note for people.
    Transition {
        change_id: String,
        state: ChangeState,
        report: Option<Report>,
        decided_at: Option<f64>,
        note: Option<String>,
    },
    /// Put an event on the change's record.
    Event {
        change_id: String,
        kind: EventKind,
        detail: serde_json::Value,
    },
    /// A person should hear of this change now (the alert email, when mail is configured).
    Alert { change_id: String },
    /// Start the remediation; its end comes back through [`Supervisor::remedied`].
    Remediate(Remediation),
    /// Save the evidence so far (when a change is being watched) and the core's state.
    Save { report: Option<(String, Report)> },
    /// Record how a change's flag_off went, for its track record: `Running`, `Shadow` and
    /// `Refused` begin a record, the others end the change's running one.
    FlagOff {
        change_id: String,
        flag: String,
        outcome: FlagOutcome,
        note: String,
    },
}

impl Effect {
    /// A verdict on the evidence: the move to `state` with the report it rests on.
    fn verdict(change_id: &str, state: ChangeState, report: Option<Report>) -> Effect {
        Effect::Transition {
            change_id: change_id.to_owned(),
            state,
            decided_at: report.as_ref().and_then(|r| r.decided_at),
            report,
            note: None,
        }
    }

    /// A move to `state` told in a note for people.
    fn noted(change_id: &str, state: ChangeState, note: impl Into<String>) -> Effect {
        Effect::Transition {
            change_id: change_id.to_owned(),
            state,
            report: None,
            decided_at: None,
            note: Some(note.into()),
        }
    }
}

/// The decisions' state: the core's monitor, the phase, and the changes whose watch was
/// already extended once.
pub struct Supervisor {
    monitor: Monitor,
    phase: Phase,
    extended: Vec<String>,
    saved_at: f64,
    /// Sentry's evidence about the change being watched, when `[daemon.sentry]` is set.
    sentry: Option<SentryWatch>,
    /// What became of the issue the change being watched claims to fix.
    claim: Option<ClaimWatch>,
    /// Why Sentry's counts stop short of the traffic's, as the engine last counted them.
    sentry_behind: Option<String>,
    /// Up to when every source's traffic is in (the core judges no later), and, for the change
    /// being watched or checked, why some of its traffic never came in time.
    traffic_until: f64,
    traffic_short: Option<(String, String)>,
    /// The flags turned off lately, which bound the next (`flag_limits`).
    flags: FlagLedger,
    /// While a change's flag is being turned off or checked: which, and why.
    flag_stage: Option<FlagStage>,
}

impl Supervisor {
    pub fn new(monitor: Monitor, phase: Phase) -> Supervisor {
        Supervisor {
            monitor,
            phase,
            extended: Vec::new(),
            saved_at: f64::NEG_INFINITY,
            sentry: None,
            claim: None,
            sentry_behind: None,
            traffic_until: f64::INFINITY,
            traffic_short: None,
            flags: FlagLedger::default(),
            flag_stage: None,
        }
    }

    /// The flags turned off lately, as the store remembers them (at start).
    pub fn with_flag_ledger(mut self, flags: FlagLedger) -> Supervisor {
        self.flags = flags;
        self
    }

    /// Whether `flag` may be turned off now at a role's request (`POST /v1/actions/flag_off`);
    /// if so it is counted against the bounds at once, so two requests cannot both pass.
    /// Returns whether it is only to be recorded (shadow).
    pub fn request_flag_off(
        &mut self,
        flag: &str,
        now: f64,
        rules: &DaemonSettings,
    ) -> Result<bool, Refusal> {
        let Some(settings) = &rules.flag_off else {
            return Err(Refusal::NotConfigured);
        };
        if let Some(busy) = self.busy() {
            return Err(Refusal::Busy(busy));
        }
        self.flags.check(flag, now, settings)?;
        self.flags.record(flag, now);
        Ok(settings.shadow)
    }

    /// A supervisor resumed after a restart: a change still being watched is judged on
    /// Sentry's events again, from the counts in the store (which a restart does not lose).
    pub fn resumed(monitor: Monitor, phase: Phase, rules: &DaemonSettings) -> Supervisor {
        let mut s = Supervisor::new(monitor, phase);
        if let (Phase::Watching(change), Some(report)) = (&s.phase, s.monitor.report()) {
            let change = change.clone();
            let settings = s.settings_for(&change, rules);
            s.watch_sentry(&change, report.change_at, settings, rules);
        }
        s
    }

    /// The detector's settings for `change`: an AI change is judged with the gate's stricter
    /// tolerances when they are set.
    fn settings_for(&self, change: &Watched, rules: &DaemonSettings) -> DetectorSettings {
        let mut settings = self.monitor.settings().clone();
        if change.kind == ChangeKind::Ai {
            let gate = rules.gate.as_ref();
            if let Some(t) = gate.and_then(|g| g.ai_error_tolerance) {
                settings.error_tolerance = t;
            }
            if let Some(t) = gate.and_then(|g| g.ai_latency_tolerance) {
                settings.latency_tolerance = t;
            }
        }
        settings
    }

    /// Starts Sentry's evidence about `change`, landed at `at`, if Sentry is configured; returns
    /// the core's settings less Sentry's share of alpha.
    fn watch_sentry(
        &mut self,
        change: &Watched,
        at: f64,
        mut settings: DetectorSettings,
        rules: &DaemonSettings,
    ) -> DetectorSettings {
        let Some(sentry) = &rules.sentry else {
            (self.sentry, self.claim) = (None, None);
            return settings;
        };
        // The claim's alpha is the detector's whole: a wrong "ineffective" is never a rollback.
        self.claim = change.fixes.as_deref().map(|issue| {
            ClaimWatch::new(
                issue,
                settings.alpha,
                settings.max_evidence_per_second,
                settings.watch_secs,
                at,
            )
        });
        // Sentry's share of alpha comes out of the core's, so a watch's false-rollback rate
        // stays the detector's alpha (a union bound).
        let alpha = settings.alpha * sentry.alpha_share;
        settings.alpha -= alpha;
        self.sentry = Some(SentryWatch::new(
            alpha,
            settings.error_tolerance,
            settings.max_evidence_per_second,
            settings.watch_secs,
            at,
        ));
        settings
    }

    /// The Sentry issue whose events the engine counts for the claim of the change being
    /// watched ([`Supervisor::claim_counts`]), in the same spans as [`Supervisor::sentry_window`].
    pub fn claimed_issue(&self) -> Option<&str> {
        match (&self.phase, &self.claim) {
            (Phase::Watching(_), Some(c)) => Some(c.issue()),
            _ => None,
        }
    }

    /// The claimed issue's events and the requests they are counted against, as they stand,
    /// and its quiet stretch before the change.
    pub fn claim_counts(
        &mut self,
        baseline: Counts,
        after: Counts,
        quiet: QuietBefore,
        until: f64,
    ) {
        if let Some(c) = &mut self.claim {
            c.update(baseline, after, quiet, until);
        }
    }

    /// When Sentry's events are being judged (a watch, or a recovery check): the spans the
    /// baseline covers (what the log's baseline left out, a rolled-back change, is left out
    /// of Sentry's too) and when the watch began, for the engine to count them in before each
    /// tick ([`Supervisor::sentry_counts`]).
    pub fn sentry_window(&self) -> Option<(Vec<Span>, f64)> {
        match (&self.phase, &self.sentry) {
            (Phase::Watching(_) | Phase::Verifying(_), Some(_)) => {
                let r = self.monitor.report()?;
                Some((r.baseline_window.covered(), r.change_at))
            }
            _ => None,
        }
    }

    /// Sentry's events and the requests they are counted against, as they stand: in the
    /// baseline's window, and since the change up to `until` (as the engine counted them in
    /// the store, in whole 10-second bins on both counts).
    pub fn sentry_counts(&mut self, baseline: Counts, after: Counts, until: f64) {
        if let Some(w) = &mut self.sentry {
            w.update(baseline, after, until);
        }
    }

    /// Every source's traffic is in up to `until`; `short` says why some came too late to be
    /// judged (its source failing or behind past its patience): a watch or recovery check that
    /// went on without it cannot end healthy.
    pub fn traffic_until(&mut self, until: f64, short: Option<(f64, String)>) {
        self.traffic_until = until;
        let change = match &self.phase {
            Phase::Watching(c) | Phase::Verifying(c) => &c.id,
            _ => return,
        };
        // Only traffic missing from the watch on counts: a gap inside the deploy window (a
        // canary restarting before the notification) is left out of both sides anyway.
        let watched_from = self.monitor.watch_change_at().unwrap_or(f64::NEG_INFINITY);
        if let Some((_, why)) = short.filter(|(at, _)| *at >= watched_from) {
            if self
                .traffic_short
                .as_ref()
                .is_none_or(|(id, _)| id != change)
            {
                tracing::warn!(change_id = %change, "{change}: judged on without some traffic: {why}");
                self.traffic_short = Some((change.clone(), why));
            }
        }
    }

    /// Why the traffic of the change being judged was short, if it was.
    fn traffic_short_of(&self, change: &str) -> Option<&str> {
        self.traffic_short
            .as_ref()
            .filter(|(id, _)| id == change)
            .map(|(_, why)| why.as_str())
    }

    /// Why Sentry's counts stop short of the traffic's (its API is polled, and failing or
    /// behind), or `None`: what a watch that ends before they catch up says instead of healthy.
    pub fn sentry_behind(&mut self, why: Option<String>) {
        self.sentry_behind = why;
    }

    /// The evidence of the change being watched: the core's, with Sentry's beside it.
    pub fn report(&self) -> Option<Report> {
        let mut report = self.monitor.report()?;
        if let (Some(w), Phase::Watching(_) | Phase::Remediating(_) | Phase::Verifying(_)) =
            (&self.sentry, &self.phase)
        {
            report.signals.push(w.report());
        }
        if let (Some(c), Phase::Watching(_) | Phase::Remediating(_)) = (&self.claim, &self.phase) {
            report.claim = Some(c.report());
        }
        Some(report)
    }

    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// Where observations go in, and what a reload reconfigures.
    pub fn monitor_mut(&mut self) -> &mut Monitor {
        &mut self.monitor
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Why a new change cannot be taken now (a remediation or a deploy is under way), if so.
    pub fn busy(&self) -> Option<String> {
        match &self.phase {
            Phase::Remediating(c) | Phase::Verifying(c) => Some(c.id.clone()),
            Phase::Deploying(p) => Some(format!("proposal {p} (a deploy)")),
            Phase::Idle | Phase::Watching(_) => None,
        }
    }

    /// A change landed: watch it. A change still being watched is superseded, since its
    /// verdict can no longer be told apart from the new change's. Call only when not
    /// [`busy`](Self::busy).
    pub fn change_landed(
        &mut self,
        change: Watched,
        landing: Landing,
        rules: &DaemonSettings,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        if let Phase::Watching(previous) = &self.phase {
            effects.push(Effect::Transition {
                change_id: previous.id.clone(),
                state: ChangeState::Superseded,
                report: self.report(),
                decided_at: None,
                note: Some(format!(
                    "another change, {}, landed during the watch",
                    change.id
                )),
            });
        }
        let settings = self.settings_for(&change, rules);
        let settings = self.watch_sentry(&change, landing.at, settings, rules);
        self.monitor.change_landed_with(landing, &settings);
        self.phase = Phase::Watching(change);
        // Saved at once, so that a restart from now on resumes this watch.
        effects.push(self.save(landing.at));
        effects
    }

    /// A deploy began at `at` (its restart comes next): a change still being watched is
    /// superseded there, so that the restart's failures are never counted against it. Call only
    /// when not [`busy`](Self::busy), after a tick to `at`. Returns the superseded change's id.
    pub fn deploy_starting(&mut self, at: f64) -> (Option<String>, Vec<Effect>) {
        let Phase::Watching(previous) = &self.phase else {
            return (None, Vec::new());
        };
        let id = previous.id.clone();
        let mut effects = vec![Effect::Transition {
            change_id: id.clone(),
            state: ChangeState::Superseded,
            report: self.report(),
            decided_at: None,
            note: Some("another deploy began during the watch".to_owned()),
        }];
        self.monitor.end_watch();
        self.phase = Phase::Idle;
        effects.push(self.save(at));
        (Some(id), effects)
    }

    /// Lets time pass to `now`: the core judges every second before it; a verdict that became
    /// final, or the end of a recovery check, decides what happens next.
    pub fn tick(&mut self, now: f64, rules: &DaemonSettings) -> Vec<Effect> {
        if self.phase == Phase::Idle {
            // The last change is decided and done with (a remediation keeps its watch until
            // the recovery check, which reuses its baseline): traffic builds the baseline again.
            self.monitor.end_watch();
        }
        let mut verdict = self.monitor.tick(now.min(self.traffic_until));
        // Sentry's events can show a change worse, or a recovery not come, whatever the log's
        // signals say.
        if matches!(verdict, Verdict::Watching | Verdict::Healthy)
            && matches!(self.phase, Phase::Watching(_) | Phase::Verifying(_))
            && self.sentry.as_ref().is_some_and(SentryWatch::regressed)
        {
            self.monitor.regressed_beside(now);
            verdict = Verdict::Regressed;
        }
        let due = now - self.saved_at >= SAVE_EVERY_SECS;
        if verdict == Verdict::Healthy && self.awaits_sentry(now) {
            return if due { vec![self.save(now)] } else { vec![] };
        }
        // Waited, and Sentry's events still do not reach the watch's end because its API
        // cannot be read: missing data never makes a change healthy.
        let sentry_short = match (&self.phase, verdict, &self.sentry_behind) {
            (Phase::Watching(_), Verdict::Healthy, Some(why)) if self.sentry.is_some() => {
                Some(why.clone())
            }
            _ => None,
        };
        // Some traffic came too late to be judged: missing data never makes a change healthy,
        // nor a recovery confirmed.
        let traffic_short = match (&self.phase, verdict) {
            (
                Phase::Watching(c) | Phase::Verifying(c),
                Verdict::Healthy | Verdict::Inconclusive,
            ) => self.traffic_short_of(&c.id).map(str::to_owned),
            _ => None,
        };
        if sentry_short.is_some() || traffic_short.is_some() {
            verdict = Verdict::Inconclusive;
        }
        if traffic_short.is_some() {
            self.monitor.traffic_unjudged();
        }
        let (change, verifying) = match &self.phase {
            Phase::Watching(c) => (c.clone(), false),
            Phase::Verifying(c) => (c.clone(), true),
            Phase::Idle | Phase::Remediating(_) | Phase::Deploying(_) => {
                return if due { vec![self.save(now)] } else { vec![] };
            }
        };
        if verdict == Verdict::Watching {
            return if due { vec![self.save(now)] } else { vec![] };
        }
        if verifying {
            return self.recovery_checked(change, verdict, now, rules);
        }
        let report = self.report();
        let still_firing = self
            .claim
            .as_ref()
            .is_some_and(|c| c.verdict() == ClaimVerdict::StillFiring);
        match verdict {
            Verdict::Regressed => self.regressed(change, report, now, rules),
            // Not shown worse, and shown not to fix what it claims: no rollback, and a person
            // hears of it. (Whether the log's evidence was enough to call it harmless, the fix
            // is shown not to work: that is what its pattern's record must say.)
            _ if still_firing => {
                self.phase = Phase::Idle;
                let mut ineffective = Effect::verdict(&change.id, ChangeState::Ineffective, report);
                if verdict != Verdict::Healthy {
                    if let Effect::Transition { note, .. } = &mut ineffective {
                        *note = Some(
                            "the issue it claims to fix went on firing; the log's evidence \
                             was not enough to call it harmless either"
                                .to_owned(),
                        );
                    }
                }
                vec![
                    ineffective,
                    Effect::Alert {
                        change_id: change.id,
                    },
                ]
            }
            Verdict::Healthy => {
                self.phase = Phase::Idle;
                let mut effects = vec![Effect::verdict(&change.id, ChangeState::Healthy, report)];
                // Healthy changes go into the day's digest, unless each is to be mailed.
                if rules.mail.as_ref().is_some_and(|m| !m.digest_healthy) {
                    effects.push(Effect::Alert {
                        change_id: change.id,
                    });
                }
                effects
            }
            _ => {
                let mut effects = self.inconclusive(change, report, now, rules);
                if let Some(why) = traffic_short {
                    for e in &mut effects {
                        if let Effect::Transition { note, .. } = e {
                            *note = Some(format!(
                                "the traffic seen was not shown worse, but some never came to \
                                 be judged ({why}); {}",
                                note.as_deref().unwrap_or_default()
                            ));
                        }
                    }
                }
                if let Some(why) = sentry_short {
                    for e in &mut effects {
                        if let Effect::Transition { note, .. } = e {
                            *note = Some(format!(
                                "the log saw nothing worse, but {why}, so the watch's end was \
                                 not judged by Sentry; {}",
                                note.as_deref().unwrap_or_default()
                            ));
                        }
                    }
                }
                effects
            }
        }
    }

    /// Whether a watch the log's signals call healthy waits for Sentry's counts, which trail
    /// the traffic (whole stored 10-second bins, 15 to 25 s), to reach its end: so its last
    /// stretch is judged by Sentry too, and a claim on the whole watch. At most
    /// [`SENTRY_WAIT_SECS`] past the end.
    fn awaits_sentry(&self, now: f64) -> bool {
        let (Phase::Watching(_), Some(w)) = (&self.phase, &self.sentry) else {
            return false;
        };
        let Some(end) = self.monitor.report().map(|r| r.watch_ends_at) else {
            return false;
        };
        now < end + SENTRY_WAIT_SECS && w.counted_until().is_none_or(|until| until < end)
    }

    /// The remediation job ended. Done: check whether the service recovers. Otherwise a person
    /// must take over.
    pub fn remedied(
        &mut self,
        outcome: &Remedied,
        now: f64,
        rules: &DaemonSettings,
    ) -> Vec<Effect> {
        let Phase::Remediating(change) = self.phase.clone() else {
            return vec![];
        };
        if let Some(stage) = self.flag_stage.clone() {
            return self.flag_remedied(change, stage, outcome, now, rules);
        }
        match outcome {
            Remedied::Failed(why) => {
                self.phase = Phase::Idle;
                vec![
                    Effect::noted(&change.id, ChangeState::Escalated, why.clone()),
                    Effect::Alert {
                        change_id: change.id,
                    },
                ]
            }
            Remedied::Done(what) => {
                let verify = rules.rollback.as_ref().map_or(120, |r| r.verify_secs);
                self.check_recovery(now, verify);
                let id = change.id.clone();
                self.phase = Phase::Verifying(change);
                vec![Effect::noted(
                    &id,
                    ChangeState::Verifying,
                    format!("{what}; checking recovery for {verify} s"),
                )]
            }
        }
    }

    /// Watches the traffic from a moment after `now` for `verify` seconds, against the
    /// baseline from before the change.
    fn check_recovery(&mut self, now: f64, verify: u32) {
        self.monitor
            .verify_recovery(now + RECOVERY_SETTLE_SECS, verify);
        // Sentry's events are judged again from the recovery's start, against the same
        // baseline: a remediation that did not stop them did not help.
        self.sentry = self
            .sentry
            .as_ref()
            .map(|w| w.restarted(now + RECOVERY_SETTLE_SECS, verify));
    }

    /// The change's flag was turned off, or could not be: check the recovery, or revert.
    fn flag_remedied(
        &mut self,
        change: Watched,
        stage: FlagStage,
        outcome: &Remedied,
        now: f64,
        rules: &DaemonSettings,
    ) -> Vec<Effect> {
        match outcome {
            Remedied::Failed(why) => {
                self.flag_stage = None;
                let mut effects = vec![Effect::FlagOff {
                    change_id: change.id.clone(),
                    flag: stage.flag.clone(),
                    outcome: FlagOutcome::Failed,
                    note: why.clone(),
                }];
                let what = format!("turning flag {} off failed ({why})", stage.flag);
                effects.extend(self.revert_after_flag(change, &what, stage.why, rules));
                effects
            }
            Remedied::Done(what) => {
                let verify = rules.flag_off.as_ref().map_or(60, |f| f.verify_secs);
                self.check_recovery(now, verify);
                let id = change.id.clone();
                self.phase = Phase::Verifying(change);
                vec![Effect::noted(
                    &id,
                    ChangeState::FlaggingOff,
                    format!("{what}; checking recovery for {verify} s"),
                )]
            }
        }
    }

    /// Turning the change's flag off did not do it: the usual path, a revert (or, with none
    /// configured, a person).
    fn revert_after_flag(
        &mut self,
        change: Watched,
        what: &str,
        why: String,
        rules: &DaemonSettings,
    ) -> Vec<Effect> {
        if rules.rollback.is_none() {
            self.phase = Phase::Idle;
            return vec![
                Effect::noted(
                    &change.id,
                    ChangeState::Escalated,
                    format!("{what}; rollback is not configured, so a person must decide"),
                ),
                Effect::Alert {
                    change_id: change.id,
                },
            ];
        }
        let effects = vec![
            Effect::noted(
                &change.id,
                ChangeState::RollingBack,
                format!("{what}; rolling back: {why}"),
            ),
            Effect::Remediate(Remediation {
                change_id: change.id.clone(),
                commit: change.commit.clone(),
                reason: why,
                remedy: Remedy::Revert,
            }),
        ];
        self.phase = Phase::Remediating(change);
        effects
    }

    /// An approved proposal's deploy starts, if nothing else is going on.
    pub fn deploy_started(&mut self, proposal_id: &str) -> bool {
        if self.phase != Phase::Idle {
            return false;
        }
        self.phase = Phase::Deploying(proposal_id.to_owned());
        true
    }

    /// The deploy ended without a change to watch.
    pub fn deploy_failed(&mut self) {
        if matches!(self.phase, Phase::Deploying(_)) {
            self.phase = Phase::Idle;
        }
    }

    /// The deploy ended with a change to watch: it is watched like any change.
    pub fn deployed(
        &mut self,
        change: Watched,
        landing: Landing,
        rules: &DaemonSettings,
    ) -> Vec<Effect> {
        self.phase = Phase::Idle;
        self.change_landed(change, landing, rules)
    }

    fn save(&mut self, now: f64) -> Effect {
        self.saved_at = now;
        let report = match &self.phase {
            Phase::Watching(c) => self.report().map(|r| (c.id.clone(), r)),
            _ => None,
        };
        Effect::Save { report }
    }

    fn regressed(
        &mut self,
        change: Watched,
        report: Option<Report>,
        now: f64,
        rules: &DaemonSettings,
    ) -> Vec<Effect> {
        let why = report.as_ref().map(reason).unwrap_or_default();
        let mut effects = vec![Effect::verdict(&change.id, ChangeState::Regressed, report)];
        let shadow = rules
            .gate
            .as_ref()
            .is_some_and(|g| g.is_shadow(change.pattern.as_deref()));
        // A change behind a flag is first mitigated by turning the flag off: seconds, and no
        // redeploy. Within the allow-list and the bounds only; otherwise the revert as usual.
        if let (Some(flag), Some(settings)) = (change.flag.clone(), &rules.flag_off) {
            match self.flags.check(&flag, now, settings) {
                Err(refusal) => effects.push(Effect::FlagOff {
                    change_id: change.id.clone(),
                    flag,
                    outcome: FlagOutcome::Refused,
                    note: format!("not turned off: {refusal}; reverting instead"),
                }),
                Ok(()) if shadow || settings.shadow => {
                    // Shadow mode: what would have been done goes on the record (and into the
                    // email), nothing is turned off, and the revert path follows as configured.
                    self.flags.record(&flag, now);
                    effects.push(Effect::FlagOff {
                        change_id: change.id.clone(),
                        flag: flag.clone(),
                        outcome: FlagOutcome::Shadow,
                        note: format!(
                            "shadow mode: would have turned flag {flag} off, checked the \
                             recovery for {} s, and reverted only if that did not help",
                            settings.verify_secs
                        ),
                    });
                }
                Ok(()) => {
                    self.flags.record(&flag, now);
                    effects.push(Effect::noted(
                        &change.id,
                        ChangeState::FlaggingOff,
                        format!("turning flag {flag} off: {why}"),
                    ));
                    effects.push(Effect::FlagOff {
                        change_id: change.id.clone(),
                        flag: flag.clone(),
                        outcome: FlagOutcome::Running,
                        note: why.clone(),
                    });
                    effects.push(Effect::Remediate(Remediation {
                        change_id: change.id.clone(),
                        commit: change.commit.clone(),
                        reason: why.clone(),
                        remedy: Remedy::FlagOff { flag: flag.clone() },
                    }));
                    self.flag_stage = Some(FlagStage { flag, why });
                    self.phase = Phase::Remediating(change);
                    return effects;
                }
            }
        }
        if rules.rollback.is_none() {
            // Nothing to undo it with: a person must know now.
            self.phase = Phase::Idle;
            effects.push(Effect::Alert {
                change_id: change.id,
            });
        } else if shadow {
            // Shadow mode: what guardian would have done goes on the record, and nothing is
            // done. A person still hears of it.
            self.phase = Phase::Idle;
            effects.push(Effect::Event {
                change_id: change.id.clone(),
                kind: EventKind::ShadowRollback,
                detail: json!({
                    "would_revert": change.commit,
                    "then": "push (if configured), the redeploy hook, a recovery check",
                    "why": why,
                }),
            });
            effects.push(Effect::Alert {
                change_id: change.id,
            });
        } else {
            effects.push(Effect::noted(
                &change.id,
                ChangeState::RollingBack,
                format!("rolling back: {why}"),
            ));
            effects.push(Effect::Remediate(Remediation {
                change_id: change.id.clone(),
                commit: change.commit.clone(),
                reason: why,
                remedy: Remedy::Revert,
            }));
            self.phase = Phase::Remediating(change);
        }
        effects
    }

    /// A window ended without enough evidence either way: the policy for the change's kind
    /// says whether to watch one more window (once), record it, or also tell a person. Never
    /// healthy.
    fn inconclusive(
        &mut self,
        change: Watched,
        report: Option<Report>,
        now: f64,
        rules: &DaemonSettings,
    ) -> Vec<Effect> {
        let policy = match change.kind {
            ChangeKind::Ai => rules.on_inconclusive.ai,
            ChangeKind::Human => rules.on_inconclusive.human,
        };
        if policy == InconclusivePolicy::Extend && !self.extended.contains(&change.id) {
            self.extended.push(change.id.clone());
            self.monitor.extend_watch(now);
            return vec![Effect::Transition {
                change_id: change.id,
                state: ChangeState::Watching,
                report,
                decided_at: None,
                note: Some("not enough evidence in the first window; watching one more".into()),
            }];
        }
        self.phase = Phase::Idle;
        let escalate = policy != InconclusivePolicy::Record;
        let note = if escalate {
            "not enough evidence either way by the end of the watch; a person should look"
        } else {
            "not enough evidence either way by the end of the watch"
        };
        let mut effects = vec![Effect::Transition {
            change_id: change.id.clone(),
            state: ChangeState::Inconclusive,
            report,
            decided_at: None,
            note: Some(note.into()),
        }];
        if escalate {
            effects.push(Effect::Alert {
                change_id: change.id,
            });
        }
        effects
    }

    /// The recovery check ended: back to the baseline is done; still worse, or not shown
    /// back, goes to a person.
    fn recovery_checked(
        &mut self,
        change: Watched,
        verdict: Verdict,
        _now: f64,
        rules: &DaemonSettings,
    ) -> Vec<Effect> {
        if let Some(stage) = self.flag_stage.take() {
            return self.flag_checked(change, stage, verdict, rules);
        }
        let report = self.report();
        let (state, note) = match verdict {
            Verdict::Healthy => (
                ChangeState::RolledBack,
                "reverted and redeployed; the service is back to its baseline".to_owned(),
            ),
            Verdict::Regressed => (
                ChangeState::Escalated,
                format!(
                    "the revert did not help: after the redeploy the service is still worse \
                     than before the change ({})",
                    report.as_ref().map(reason).unwrap_or_default()
                ),
            ),
            _ => (
                ChangeState::Escalated,
                format!(
                    "reverted and redeployed, but recovery could not be confirmed: {}",
                    match self.traffic_short_of(&change.id) {
                        Some(why) => format!("some traffic never came to be judged ({why})"),
                        None => report
                            .as_ref()
                            .map(unconfirmed_recovery)
                            .unwrap_or_else(|| "no traffic after the redeploy".to_owned()),
                    }
                ),
            ),
        };
        self.phase = Phase::Idle;
        vec![
            Effect::Event {
                change_id: change.id.clone(),
                kind: EventKind::RecoveryCheck,
                detail: serde_json::to_value(RecoveryCheck { verdict, report })
                    .expect("a report serializes"),
            },
            Effect::noted(&change.id, state, note),
            Effect::Alert {
                change_id: change.id,
            },
        ]
    }
}

impl Supervisor {
    /// The recovery check after the change's flag was turned off ended: back to the baseline
    /// is mitigated, the code still deployed behind the flag; anything else, the revert.
    fn flag_checked(
        &mut self,
        change: Watched,
        stage: FlagStage,
        verdict: Verdict,
        rules: &DaemonSettings,
    ) -> Vec<Effect> {
        let report = self.report();
        let check = Effect::Event {
            change_id: change.id.clone(),
            kind: EventKind::RecoveryCheck,
            detail: serde_json::to_value(RecoveryCheck {
                verdict,
                report: report.clone(),
            })
            .expect("a report serializes"),
        };
        let flag = stage.flag.clone();
        if verdict == Verdict::Healthy {
            self.phase = Phase::Idle;
            return vec![
                check,
                Effect::FlagOff {
                    change_id: change.id.clone(),
                    flag: flag.clone(),
                    outcome: FlagOutcome::Verified,
                    note: "the service is back to its baseline".to_owned(),
                },
                Effect::noted(
                    &change.id,
                    ChangeState::FlaggedOff,
                    format!(
                        "mitigated by turning flag {flag} off; the service is back to its \
                         baseline; the change's code is still deployed, behind the flag"
                    ),
                ),
                Effect::Alert {
                    change_id: change.id,
                },
            ];
        }
        let how = match verdict {
            Verdict::Regressed => format!(
                "the service is still worse than before the change ({})",
                report.as_ref().map(reason).unwrap_or_default()
            ),
            _ => format!(
                "recovery could not be confirmed: {}",
                report
                    .as_ref()
                    .map(unconfirmed_recovery)
                    .unwrap_or_else(|| "no traffic after the redeploy".to_owned())
                    .replace("after the redeploy", "after the flag was turned off")
            ),
        };
        let mut effects = vec![
            check,
            Effect::FlagOff {
                change_id: change.id.clone(),
                flag: flag.clone(),
                outcome: FlagOutcome::DidNotHelp,
                note: how.clone(),
            },
        ];
        let what = format!("turning flag {flag} off did not help: {how}");
        effects.extend(self.revert_after_flag(change, &what, stage.why, rules));
        effects
    }
}

/// Why a recovery watch ended without confirming recovery, in words for the alert.
fn unconfirmed_recovery(report: &Report) -> String {
    let errors = report
        .signals
        .iter()
        .find(|s| s.signal == SignalKind::Errors);
    match errors {
        _ if report.requests_after == 0 => "no traffic after the redeploy".to_owned(),
        Some(s) if s.after.requests > 0 => format!(
            "{} requests after the redeploy; errors {} before the change, {} after the \
             redeploy{}, not clearly back",
            units::count(report.requests_after),
            units::percent(s.baseline.rate),
            units::percent(s.after.rate),
            s.ratio_upper_bound.map_or(String::new(), |b| format!(
                " (up to {} the baseline)",
                units::ratio(b)
            )),
        ),
        _ => format!(
            "too little traffic after the redeploy ({} requests)",
            units::count(report.requests_after)
        ),
    }
}

/// The regressed signals' evidence, in a line: what the state note, the revert commit and the
/// hook are told ("errors 1.00% -> 9.03% (9.03x), e-value 412 >= 167"). Latency has no rate:
/// its effect is the median's ratio.
fn reason(report: &Report) -> String {
    let parts: Vec<String> = report
        .signals
        .iter()
        .filter(|s| s.regressed)
        .map(|s| {
            let name = crate::core::watch::signal_words(s.signal);
            let effect = match (s.signal, s.effect_ratio) {
                (SignalKind::Latency, Some(r)) => format!(": median {}", units::ratio(r)),
                (SignalKind::Latency, None) => String::new(),
                (_, r) => format!(
                    " {} -> {}{}",
                    units::percent(s.baseline.rate),
                    units::percent(s.after.rate),
                    r.map_or(String::new(), |r| format!(" ({})", units::ratio(r)))
                ),
            };
            format!(
                "{name}{effect}, e-value {} >= {}",
                units::evalue(s.e_value),
                units::evalue(s.e_value_threshold)
            )
        })
        .collect();
    if parts.is_empty() {
        "the change made the service worse".to_owned()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    //! The daemon's decisions on simulated time: traffic and ticks in, effects out, no store,
    //! no threads, no sleeping. A 5-minute baseline and a 1-minute watch at 20 requests a second.

    use super::*;
    use crate::config::{Config, GateSettings};
    use crate::core::Request;

    const T0: f64 = 1_764_000_000.0;

    fn rules(extra: &str) -> DaemonSettings {
        Config::parse(&format!("[daemon]\n{extra}"))
            .unwrap()
            .daemon
            .unwrap()
    }

    fn with_rollback() -> DaemonSettings {
        rules("[daemon.rollback]\nrepo = \"/srv/app\"\nhook = [\"/bin/redeploy\"]\nverify_secs = 60\n")
    }

    /// [`with_rollback`], with Sentry's webhooks.
    fn with_sentry() -> DaemonSettings {
        let mut rules = with_rollback();
        rules.sentry = Some(crate::config::SentrySettings {
            client_secret_file: "/etc/guardian/sentry".into(),
            max_age_secs: 300,
            alpha_share: 0.2,
            api: None,
        });
        rules
    }

    fn in_shadow(mut settings: DaemonSettings) -> DaemonSettings {
        settings.gate = Some(GateSettings {
            policy_file: "/etc/guardian/policy.toml".into(),
            agent_token_file: None,
            approvers: vec![],
            shadow: true,
            shadow_patterns: vec![],
            approval_link_secs: 3600,
            approval_base_url: None,
            ai_error_tolerance: None,
            ai_latency_tolerance: None,
            slo_error_rate: None,
        });
        settings
    }

    fn supervisor() -> Supervisor {
        let config = Config::parse("[detector]\nbaseline_secs = 300\nwatch_secs = 60\n").unwrap();
        Supervisor::new(Monitor::new(config.detector), Phase::Idle)
    }

    fn change(id: &str, kind: ChangeKind) -> Watched {
        Watched {
            id: id.into(),
            kind,
            commit: format!("{id}-commit"),
            pattern: None,
            fixes: None,
            flag: None,
        }
    }

    /// Feeds `secs` seconds of traffic from `from`, 20 requests a second failing at
    /// `error_rate`, ticking after each second; returns every effect in order.
    fn traffic(
        s: &mut Supervisor,
        rules: &DaemonSettings,
        from: f64,
        secs: u32,
        error_rate: f64,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        for sec in 0..secs {
            let t = from + f64::from(sec);
            for i in 0..20 {
                s.monitor_mut().observe_request(&Request {
                    ts: t + f64::from(i) / 20.0,
                    error: f64::from(i) < error_rate * 20.0,
                    latency_ms: Some(20.0),
                    route: None,
                    arm: None,
                });
            }
            effects.extend(s.tick(t + 1.0, rules));
        }
        effects
    }

    /// The effects that are decisions (saving progress is routine), as short words.
    fn decisions(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Transition {
                    change_id, state, ..
                } => Some(format!("{change_id} {}", state.as_str())),
                Effect::Event {
                    change_id, kind, ..
                } => Some(format!("{change_id} event {}", kind.as_str())),
                Effect::Alert { change_id } => Some(format!("{change_id} alert")),
                Effect::Remediate(r) => Some(match &r.remedy {
                    Remedy::Revert => format!("{} remediate {}", r.change_id, r.commit),
                    Remedy::FlagOff { flag } => format!("{} flag_off {flag}", r.change_id),
                }),
                Effect::FlagOff {
                    change_id,
                    flag,
                    outcome,
                    ..
                } => Some(format!("{change_id} flag {flag} {}", outcome.as_str())),
                Effect::Save { .. } => None,
            })
            .collect()
    }

    /// A change that doubles the error rate tenfold, on a service with a 5-minute clean history.
    fn a_bad_change(s: &mut Supervisor, rules: &DaemonSettings, kind: ChangeKind) -> Vec<Effect> {
        traffic(s, rules, T0 - 300.0, 300, 0.05);
        s.change_landed(change("c1", kind), Landing::at(T0), rules);
        traffic(s, rules, T0, 30, 0.5)
    }

    /// Rollback, and flags turned off from a file, `extra` added to `[daemon.flag_off]`.
    fn with_flags(extra: &str) -> DaemonSettings {
        rules(&format!(
            "[daemon.rollback]\nrepo = \"/srv/app\"\nhook = [\"/bin/redeploy\"]\nverify_secs = 60\n\
             [daemon.flag_off]\nfile = \"/srv/app/flags.json\"\nflags = [\"new-*\"]\n\
             verify_secs = 30\n{extra}"
        ))
    }

    /// A change behind `flag` that makes errors tenfold, on a service with a clean history.
    fn a_bad_change_behind(s: &mut Supervisor, rules: &DaemonSettings, flag: &str) -> Vec<Effect> {
        traffic(s, rules, T0 - 300.0, 300, 0.05);
        let behind = Watched {
            flag: Some(flag.into()),
            ..change("c1", ChangeKind::Ai)
        };
        s.change_landed(behind, Landing::at(T0), rules);
        traffic(s, rules, T0, 30, 0.5)
    }

    #[test]
    fn a_regressed_change_behind_a_flag_is_mitigated_by_turning_it_off_and_never_reverted() {
        let rules = with_flags("");
        let mut s = supervisor();
        let effects = a_bad_change_behind(&mut s, &rules, "new-total");
        assert_eq!(
            decisions(&effects),
            [
                "c1 regressed",
                "c1 flagging_off",
                "c1 flag new-total running",
                "c1 flag_off new-total"
            ]
        );
        assert_eq!(s.busy().as_deref(), Some("c1"));
        // The flag is off a second later; the traffic is back at once.
        let done = s.remedied(
            &Remedied::Done("turned flag new-total off (the flag service answered 200)".into()),
            T0 + 31.0,
            &rules,
        );
        assert_eq!(decisions(&done), ["c1 flagging_off"]);
        assert!(format!("{done:?}").contains("checking recovery for 30 s"));
        let effects = traffic(&mut s, &rules, T0 + 31.0, 40, 0.05);
        assert_eq!(
            decisions(&effects),
            [
                "c1 event recovery_check",
                "c1 flag new-total verified",
                "c1 flagged_off",
                "c1 alert"
            ]
        );
        assert!(
            format!("{effects:?}").contains("the change's code is still deployed, behind the flag"),
            "{effects:?}"
        );
        assert_eq!(*s.phase(), Phase::Idle);
    }

    #[test]
    fn a_flag_that_did_not_help_is_followed_by_the_revert_judged_on_the_changes_harm() {
        let rules = with_flags("");
        let mut s = supervisor();
        a_bad_change_behind(&mut s, &rules, "new-total");
        s.remedied(&Remedied::Done("turned off".into()), T0 + 31.0, &rules);
        // The flag was not what made it worse: the errors go on.
        let effects = traffic(&mut s, &rules, T0 + 31.0, 40, 0.5);
        assert_eq!(
            decisions(&effects),
            [
                "c1 event recovery_check",
                "c1 flag new-total did_not_help",
                "c1 rolling_back",
                "c1 remediate c1-commit"
            ]
        );
        assert!(
            format!("{effects:?}").contains("turning flag new-total off did not help"),
            "{effects:?}"
        );
        let at = T0 + 71.0;
        let done = s.remedied(&Remedied::Done("reverted in abc".into()), at, &rules);
        assert_eq!(decisions(&done), ["c1 verifying"]);
        let effects = traffic(&mut s, &rules, at, 70, 0.05);
        assert_eq!(
            decisions(&effects),
            ["c1 event recovery_check", "c1 rolled_back", "c1 alert"]
        );
    }

    #[test]
    fn a_flag_that_could_not_be_turned_off_is_followed_by_the_revert() {
        let rules = with_flags("");
        let mut s = supervisor();
        a_bad_change_behind(&mut s, &rules, "new-total");
        let effects = s.remedied(
            &Remedied::Failed("the flag service answered 503".into()),
            T0 + 31.0,
            &rules,
        );
        assert_eq!(
            decisions(&effects),
            [
                "c1 flag new-total failed",
                "c1 rolling_back",
                "c1 remediate c1-commit"
            ]
        );
        assert!(format!("{effects:?}").contains("turning flag new-total off failed"));
    }

    #[test]
    fn a_flag_outside_the_allow_list_or_its_limits_is_left_alone_and_the_change_reverted() {
        let rules = with_flags("max_per_hour = 1\n");
        let mut s = supervisor();
        let effects = a_bad_change_behind(&mut s, &rules, "billing");
        assert_eq!(
            decisions(&effects),
            [
                "c1 regressed",
                "c1 flag billing refused",
                "c1 rolling_back",
                "c1 remediate c1-commit"
            ]
        );
        assert!(format!("{effects:?}").contains("is not on the allow-list"));
        // The hour's one flag_off was spent (at a role's request) before the change regressed.
        let mut s = supervisor();
        assert_eq!(
            s.request_flag_off("new-search", T0 - 10.0, &rules),
            Ok(false)
        );
        let effects = a_bad_change_behind(&mut s, &rules, "new-total");
        assert_eq!(decisions(&effects)[1], "c1 flag new-total refused");
        assert!(format!("{effects:?}").contains("the rate limit is spent"));
    }

    #[test]
    fn in_shadow_a_flag_is_recorded_not_turned_off_and_the_revert_path_follows() {
        let rules = with_flags("shadow = true\n");
        let mut s = supervisor();
        let effects = a_bad_change_behind(&mut s, &rules, "new-total");
        assert_eq!(
            decisions(&effects),
            [
                "c1 regressed",
                "c1 flag new-total shadow",
                "c1 rolling_back",
                "c1 remediate c1-commit"
            ]
        );
        // The gate in shadow mode: nothing is turned off and nothing reverted.
        let rules = in_shadow(with_flags(""));
        let mut s = supervisor();
        let effects = a_bad_change_behind(&mut s, &rules, "new-total");
        assert_eq!(
            decisions(&effects),
            [
                "c1 regressed",
                "c1 flag new-total shadow",
                "c1 event shadow_rollback",
                "c1 alert"
            ]
        );
    }

    #[test]
    fn a_request_to_turn_a_flag_off_waits_for_a_remediation_and_respects_the_cooldown() {
        let rules = with_flags("cooldown_secs = 600\n");
        let mut s = supervisor();
        a_bad_change_behind(&mut s, &rules, "new-total");
        let busy = s.request_flag_off("new-search", T0 + 31.0, &rules);
        assert_eq!(busy.unwrap_err().code(), "busy");
        let mut s = supervisor();
        assert_eq!(s.request_flag_off("new-search", T0, &rules), Ok(false));
        let again = s
            .request_flag_off("new-search", T0 + 60.0, &rules)
            .unwrap_err();
        assert_eq!(again.code(), "cooling_down");
        assert_eq!(
            supervisor().request_flag_off("new-search", T0, &with_rollback()),
            Err(Refusal::NotConfigured)
        );
    }

    #[test]
    fn a_regressed_change_is_remediated_then_rolled_back_once_the_service_recovers() {
        let rules = with_rollback();
        let mut s = supervisor();
        let effects = a_bad_change(&mut s, &rules, ChangeKind::Human);
        assert_eq!(
            decisions(&effects),
            ["c1 regressed", "c1 rolling_back", "c1 remediate c1-commit"]
        );
        assert!(matches!(s.phase(), Phase::Remediating(c) if c.id == "c1"));
        assert_eq!(s.busy().as_deref(), Some("c1"));
        let Some(Effect::Remediate(job)) =
            effects.iter().find(|e| matches!(e, Effect::Remediate(_)))
        else {
            unreachable!()
        };
        assert!(
            job.reason.starts_with("errors 5.00% -> 50.00%"),
            "{}",
            job.reason
        );

        // The job runs for 20 s (traffic stays bad), then reports it is done.
        assert!(decisions(&traffic(&mut s, &rules, T0 + 30.0, 20, 0.5)).is_empty());
        let done = s.remedied(
            &Remedied::Done("reverted in abc and redeployed".into()),
            T0 + 50.0,
            &rules,
        );
        assert_eq!(decisions(&done), ["c1 verifying"]);
        let Effect::Transition { note, .. } = &done[0] else {
            unreachable!()
        };
        assert_eq!(
            note.as_deref(),
            Some("reverted in abc and redeployed; checking recovery for 60 s")
        );
        let effects = traffic(&mut s, &rules, T0 + 50.0, 70, 0.05);
        assert_eq!(
            decisions(&effects),
            ["c1 event recovery_check", "c1 rolled_back", "c1 alert"]
        );
        assert_eq!(*s.phase(), Phase::Idle);
        // The record is what it has always been (the verdict's text and the whole report), and
        // reads back in its type.
        let detail = effects
            .iter()
            .find_map(|e| match e {
                Effect::Event { detail, .. } => Some(detail),
                _ => None,
            })
            .unwrap();
        let keys: Vec<&String> = detail.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["report", "verdict"]);
        assert_eq!(detail["verdict"], "healthy");
        let check: RecoveryCheck = serde_json::from_value(detail.clone()).unwrap();
        assert_eq!(check.verdict, Verdict::Healthy);
        assert!(check.report.is_some_and(|r| r.requests_after > 0));
    }

    #[test]
    fn a_remediation_that_fails_goes_to_a_person_at_once() {
        let rules = with_rollback();
        let mut s = supervisor();
        a_bad_change(&mut s, &rules, ChangeKind::Human);
        let effects = s.remedied(
            &Remedied::Failed("reverting c1-commit conflicts with later commits".into()),
            T0 + 40.0,
            &rules,
        );
        assert_eq!(decisions(&effects), ["c1 escalated", "c1 alert"]);
        assert_eq!(*s.phase(), Phase::Idle);
        assert_eq!(s.busy(), None);
    }

    #[test]
    fn a_remediation_that_did_not_help_is_escalated_with_the_evidence() {
        let rules = with_rollback();
        let mut s = supervisor();
        a_bad_change(&mut s, &rules, ChangeKind::Human);
        s.remedied(&Remedied::Done("reverted".into()), T0 + 30.0, &rules);
        let effects = traffic(&mut s, &rules, T0 + 30.0, 70, 0.5);
        assert_eq!(
            decisions(&effects),
            ["c1 event recovery_check", "c1 escalated", "c1 alert"]
        );
        let note = effects.iter().find_map(|e| match e {
            Effect::Transition { note, .. } => note.clone(),
            _ => None,
        });
        assert!(
            note.as_deref().unwrap().starts_with("the revert did not help: after the redeploy the service is still worse than before the change (errors 5.00% -> 50.00%"),
            "{note:?}"
        );
    }

    /// `secs` seconds of traffic from `from` (failing at 5% as before the change), while
    /// Sentry hears of exceptions on 30% of the requests since `start`; 0.5% before.
    fn traffic_sentry_hears(
        s: &mut Supervisor,
        rules: &DaemonSettings,
        from: f64,
        secs: u32,
        start: f64,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        for sec in 0..secs {
            let t = from + f64::from(sec);
            let requests = (20.0 * (t + 1.0 - start)).max(0.0) as u64;
            s.sentry_counts(
                Counts {
                    requests: 6000,
                    events: 30,
                },
                Counts {
                    requests,
                    events: requests * 3 / 10,
                },
                t + 1.0,
            );
            effects.extend(traffic(s, rules, t, 1, 0.05));
        }
        effects
    }

    #[test]
    fn a_revert_after_which_sentry_still_hears_the_exceptions_is_no_recovery() {
        let rules = with_sentry();
        let mut s = supervisor();
        traffic(&mut s, &rules, T0 - 300.0, 300, 0.05);
        s.change_landed(change("c1", ChangeKind::Human), Landing::at(T0), &rules);
        let effects = traffic_sentry_hears(&mut s, &rules, T0, 30, T0);
        assert_eq!(
            decisions(&effects),
            ["c1 regressed", "c1 rolling_back", "c1 remediate c1-commit"],
            "the log sees nothing: Sentry alone shows it worse"
        );
        // The revert did not stop the exceptions.
        s.remedied(&Remedied::Done("reverted".into()), T0 + 30.0, &rules);
        let start = T0 + 30.0 + RECOVERY_SETTLE_SECS;
        let effects = traffic_sentry_hears(&mut s, &rules, T0 + 30.0, 70, start);
        assert_eq!(
            decisions(&effects),
            ["c1 event recovery_check", "c1 escalated", "c1 alert"]
        );
        assert!(
            format!("{effects:?}").contains("Sentry events"),
            "the note names the signal: {effects:?}"
        );
    }

    /// A fix of Sentry issue 4711 watched for its whole minute, the issue having fired on 5%
    /// of the baseline's requests and on `after_per_mille` of the requests since.
    fn a_fix_of_issue_4711(after_per_mille: u64) -> Vec<Effect> {
        let rules = with_sentry();
        let mut s = supervisor();
        traffic(&mut s, &rules, T0 - 300.0, 300, 0.05);
        let fix = Watched {
            fixes: Some("4711".into()),
            ..change("c1", ChangeKind::Ai)
        };
        s.change_landed(fix, Landing::at(T0), &rules);
        assert_eq!(s.claimed_issue(), Some("4711"));
        let mut effects = Vec::new();
        for sec in 0..70u32 {
            let t = T0 + f64::from(sec);
            let requests = 20 * (u64::from(sec) + 1);
            let base = Counts {
                requests: 6000,
                events: 300,
            };
            s.sentry_counts(
                base,
                Counts {
                    requests,
                    events: 0,
                },
                t + 1.0,
            );
            let after = Counts {
                requests,
                events: requests * after_per_mille / 1000,
            };
            s.claim_counts(base, after, QuietBefore::default(), t + 1.0);
            effects.extend(traffic(&mut s, &rules, t, 1, 0.05));
        }
        effects
    }

    #[test]
    fn a_fix_after_which_its_issue_goes_on_firing_is_ineffective_and_told_not_rolled_back() {
        let effects = a_fix_of_issue_4711(50);
        assert_eq!(decisions(&effects), ["c1 ineffective", "c1 alert"]);
        let Some(report) = effects.iter().find_map(|e| match e {
            Effect::Transition { report, .. } => report.as_ref(),
            _ => None,
        }) else {
            panic!("no verdict")
        };
        let claim = report.claim.as_ref().unwrap();
        assert_eq!(claim.verdict, crate::core::ClaimVerdict::StillFiring);
        assert_eq!(claim.issue, "4711");
    }

    #[test]
    fn a_fix_after_which_its_issue_stops_is_healthy_and_shown_fixed() {
        let effects = a_fix_of_issue_4711(0);
        assert_eq!(decisions(&effects), ["c1 healthy"]);
        let Some(report) = effects.iter().find_map(|e| match e {
            Effect::Transition { report, .. } => report.as_ref(),
            _ => None,
        }) else {
            panic!("no verdict")
        };
        let claim = report.claim.as_ref().unwrap();
        assert_eq!(claim.verdict, crate::core::ClaimVerdict::Fixed, "{claim:?}");
    }

    #[test]
    fn a_fix_shown_still_firing_is_ineffective_even_when_the_log_could_not_judge_it() {
        let rules = with_sentry();
        let mut s = supervisor();
        let fix = Watched {
            fixes: Some("4711".into()),
            ..change("c1", ChangeKind::Ai)
        };
        s.change_landed(fix, Landing::at(T0), &rules);
        // The log heard nothing (no baseline, no traffic): inconclusive on its own. Sentry's
        // counts show the issue firing on 5% of the requests before and after.
        let mut effects = Vec::new();
        for sec in 1..=61u32 {
            let until = T0 + f64::from(sec);
            let requests = 20 * u64::from(sec);
            let base = Counts {
                requests: 6000,
                events: 300,
            };
            s.claim_counts(
                base,
                Counts {
                    requests,
                    events: requests / 20,
                },
                QuietBefore::default(),
                until,
            );
            effects.extend(s.tick(until, &rules));
        }
        assert_eq!(decisions(&effects), ["c1 ineffective", "c1 alert"]);
        assert!(
            format!("{effects:?}").contains("not enough to call it harmless"),
            "the note says the log could not judge it: {effects:?}"
        );
    }

    /// When a clean one-minute watch with Sentry's counts `lag` seconds behind the traffic
    /// (or never counted, `None`) is called healthy, in seconds after the change.
    fn healthy_after(lag: Option<f64>) -> f64 {
        let rules = with_sentry();
        let mut s = supervisor();
        traffic(&mut s, &rules, T0 - 300.0, 300, 0.05);
        s.change_landed(change("c1", ChangeKind::Human), Landing::at(T0), &rules);
        for sec in 0..200u32 {
            let t = T0 + f64::from(sec);
            if let Some(lag) = lag {
                let until = t + 1.0 - lag;
                let requests = (20.0 * (until - T0)).max(0.0) as u64;
                let base = Counts {
                    requests: 6000,
                    events: 30,
                };
                let after = Counts {
                    requests,
                    events: requests / 200,
                };
                s.sentry_counts(base, after, until);
            }
            if decisions(&traffic(&mut s, &rules, t, 1, 0.05)) == ["c1 healthy"] {
                return t + 1.0 - T0;
            }
        }
        panic!("never healthy");
    }

    #[test]
    fn a_healthy_watch_waits_for_sentrys_counts_to_reach_its_end_for_a_minute_at_most() {
        assert_eq!(healthy_after(Some(0.0)), 60.0, "counts up to date: no wait");
        assert_eq!(
            healthy_after(Some(20.0)),
            80.0,
            "its last 20 s judged by Sentry too"
        );
        assert_eq!(
            healthy_after(None),
            60.0 + SENTRY_WAIT_SECS,
            "Sentry's counts stuck: waits a minute, not for ever"
        );
    }

    #[test]
    fn a_watch_whose_sentry_api_cannot_be_read_to_its_end_is_never_healthy() {
        let mut rules = with_sentry();
        rules.on_inconclusive.human = InconclusivePolicy::Record;
        let mut s = supervisor();
        traffic(&mut s, &rules, T0 - 300.0, 300, 0.05);
        s.change_landed(change("c1", ChangeKind::Human), Landing::at(T0), &rules);
        // The API failed 20 s into the watch: its events are known no further.
        s.sentry_behind(Some(
            "Sentry's API is failing (500): its events are read only up to T0+20".into(),
        ));
        let mut effects = Vec::new();
        for sec in 0..200u32 {
            let t = T0 + f64::from(sec);
            let base = Counts {
                requests: 6000,
                events: 30,
            };
            let after = Counts {
                requests: 400,
                events: 2,
            };
            s.sentry_counts(base, after, T0 + 20.0);
            effects.extend(traffic(&mut s, &rules, t, 1, 0.05));
            if !decisions(&effects).is_empty() {
                break;
            }
        }
        assert_eq!(decisions(&effects), ["c1 inconclusive"]);
        assert!(
            format!("{effects:?}").contains("Sentry's API is failing (500)"),
            "the note says why: {effects:?}"
        );
    }

    #[test]
    fn no_traffic_after_the_remediation_is_no_recovery() {
        let rules = with_rollback();
        let mut s = supervisor();
        a_bad_change(&mut s, &rules, ChangeKind::Human);
        s.remedied(&Remedied::Done("reverted".into()), T0 + 30.0, &rules);
        let effects: Vec<Effect> = (0..70)
            .flat_map(|t| s.tick(T0 + 31.0 + f64::from(t), &rules))
            .collect();
        assert_eq!(
            decisions(&effects),
            ["c1 event recovery_check", "c1 escalated", "c1 alert"]
        );
        assert!(format!("{effects:?}").contains("no traffic after the redeploy"));
    }

    #[test]
    fn in_shadow_mode_a_regression_is_recorded_and_told_and_nothing_is_done() {
        let rules = in_shadow(with_rollback());
        let mut s = supervisor();
        let effects = a_bad_change(&mut s, &rules, ChangeKind::Ai);
        assert_eq!(
            decisions(&effects),
            ["c1 regressed", "c1 event shadow_rollback", "c1 alert"]
        );
        assert_eq!(*s.phase(), Phase::Idle);
    }

    #[test]
    fn without_a_remediation_a_regression_is_told_to_a_person_at_once() {
        let rules = rules("");
        let mut s = supervisor();
        let effects = a_bad_change(&mut s, &rules, ChangeKind::Human);
        assert_eq!(decisions(&effects), ["c1 regressed", "c1 alert"]);
        assert_eq!(s.busy(), None);
    }

    #[test]
    fn a_healthy_change_is_mailed_alone_only_when_healthy_changes_are_not_digested() {
        for (mail, expected) in [
            ("", vec!["c1 healthy"]),
            ("digest_healthy = true", vec!["c1 healthy"]),
            ("digest_healthy = false", vec!["c1 healthy", "c1 alert"]),
        ] {
            let rules = if mail.is_empty() {
                rules("")
            } else {
                rules(&format!(
                    "[daemon.mail]\nfrom = \"g@example.com\"\nto = [\"o@example.com\"]\n\
                     smtp_host = \"127.0.0.1\"\nsecurity = \"none\"\n{mail}\n"
                ))
            };
            let mut s = supervisor();
            traffic(&mut s, &rules, T0 - 300.0, 300, 0.05);
            s.change_landed(change("c1", ChangeKind::Human), Landing::at(T0), &rules);
            let effects = traffic(&mut s, &rules, T0, 70, 0.05);
            assert_eq!(decisions(&effects), expected, "{mail}");
        }
    }

    #[test]
    fn an_inconclusive_watch_follows_the_policy_for_the_change_kind() {
        // No traffic at all: nothing can be shown either way.
        let quiet =
            |s: &mut Supervisor, rules: &DaemonSettings, from: f64, secs: u32| -> Vec<Effect> {
                (1..=secs)
                    .flat_map(|t| s.tick(from + f64::from(t), rules))
                    .collect()
            };
        let rules = rules("[daemon.on_inconclusive]\nai = \"extend\"\nhuman = \"record\"\n");
        let mut s = supervisor();
        s.change_landed(change("ai1", ChangeKind::Ai), Landing::at(T0), &rules);
        assert_eq!(decisions(&quiet(&mut s, &rules, T0, 61)), ["ai1 watching"]);
        assert_eq!(
            decisions(&quiet(&mut s, &rules, T0 + 61.0, 61)),
            ["ai1 inconclusive", "ai1 alert"],
            "extended once, then a person is told"
        );
        s.change_landed(
            change("h1", ChangeKind::Human),
            Landing::at(T0 + 200.0),
            &rules,
        );
        assert_eq!(
            decisions(&quiet(&mut s, &rules, T0 + 200.0, 61)),
            ["h1 inconclusive"],
            "recorded, nobody woken"
        );
    }

    #[test]
    fn a_deploy_starting_ends_the_watch_before_its_restart_can_count_against_it() {
        let rules = rules("");
        let mut s = supervisor();
        traffic(&mut s, &rules, T0 - 300.0, 300, 0.0);
        s.change_landed(change("c1", ChangeKind::Human), Landing::at(T0), &rules);
        traffic(&mut s, &rules, T0, 30, 0.0);
        let (superseded, effects) = s.deploy_starting(T0 + 30.0);
        assert_eq!(superseded.as_deref(), Some("c1"));
        assert_eq!(decisions(&effects), ["c1 superseded"]);
        assert_eq!(*s.phase(), Phase::Idle);
        // The next deploy's restart: every request fails for 20 s. Nothing is judged...
        let during = traffic(&mut s, &rules, T0 + 30.0, 20, 1.0);
        assert!(decisions(&during).is_empty(), "{:?}", decisions(&during));
        // ...and the change it brings is judged against the traffic before the deploy began.
        let landing = Landing {
            at: T0 + 50.0,
            deploy_started_at: Some(T0 + 30.0),
        };
        s.change_landed(change("c2", ChangeKind::Human), landing, &rules);
        let after = traffic(&mut s, &rules, T0 + 50.0, 60, 0.0);
        assert!(
            !decisions(&after).iter().any(|d| d.contains("regressed")),
            "{:?}",
            decisions(&after)
        );
        // Nothing being watched: nothing to end.
        let mut idle = supervisor();
        assert_eq!(idle.deploy_starting(T0).0, None);
    }

    #[test]
    fn a_change_landing_mid_watch_supersedes_the_one_before() {
        let rules = rules("");
        let mut s = supervisor();
        traffic(&mut s, &rules, T0 - 300.0, 300, 0.05);
        s.change_landed(change("c1", ChangeKind::Human), Landing::at(T0), &rules);
        traffic(&mut s, &rules, T0, 10, 0.05);
        let effects = s.change_landed(
            change("c2", ChangeKind::Human),
            Landing::at(T0 + 10.0),
            &rules,
        );
        assert_eq!(decisions(&effects), ["c1 superseded"]);
        let Effect::Transition { note, report, .. } = &effects[0] else {
            unreachable!()
        };
        assert_eq!(
            note.as_deref(),
            Some("another change, c2, landed during the watch")
        );
        assert!(report.is_some(), "the evidence so far goes with it");
        assert!(matches!(s.phase(), Phase::Watching(c) if c.id == "c2"));
    }

    #[test]
    fn a_deploy_holds_the_supervisor_until_it_ends() {
        let rules = with_rollback();
        let mut s = supervisor();
        assert!(s.deploy_started("p1"));
        assert!(!s.deploy_started("p2"), "one at a time");
        assert_eq!(s.busy().as_deref(), Some("proposal p1 (a deploy)"));
        s.deploy_failed();
        assert_eq!(s.busy(), None);
        assert!(s.deploy_started("p2"));
        s.deployed(change("c9", ChangeKind::Ai), Landing::at(T0), &rules);
        assert!(matches!(s.phase(), Phase::Watching(c) if c.id == "c9"));
    }

    #[test]
    fn progress_is_saved_every_five_seconds_with_the_evidence_while_watching() {
        let rules = rules("");
        let mut s = supervisor();
        traffic(&mut s, &rules, T0 - 300.0, 300, 0.05);
        let landed = s.change_landed(change("c1", ChangeKind::Human), Landing::at(T0), &rules);
        assert!(matches!(&landed[..], [Effect::Save { report: Some((id, _)) }] if id == "c1"));
        let saves: Vec<f64> = (1..=12)
            .filter(|t| {
                s.tick(T0 + f64::from(*t), &rules)
                    .iter()
                    .any(|e| matches!(e, Effect::Save { report: Some(_) }))
            })
            .map(f64::from)
            .collect();
        assert_eq!(saves, [5.0, 10.0]);
    }

    #[test]
    fn the_same_inputs_give_the_same_decisions() {
        let run = || {
            let rules = with_rollback();
            let mut s = supervisor();
            let mut all = a_bad_change(&mut s, &rules, ChangeKind::Ai);
            all.extend(s.remedied(&Remedied::Done("reverted".into()), T0 + 30.0, &rules));
            all.extend(traffic(&mut s, &rules, T0 + 30.0, 70, 0.05));
            format!("{all:?}")
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn the_reason_says_a_latency_regression_in_the_median_not_in_rates() {
        let rules = with_rollback();
        let mut s = supervisor();
        let slow = |s: &mut Supervisor, from: f64, secs: u32, latency: f64| {
            let mut effects = Vec::new();
            for sec in 0..secs {
                let t = from + f64::from(sec);
                for i in 0..20 {
                    s.monitor_mut().observe_request(&Request {
                        ts: t + f64::from(i) / 20.0,
                        error: false,
                        latency_ms: Some(latency * (0.8 + 0.02 * f64::from(i))),
                        route: None,
                        arm: None,
                    });
                }
                effects.extend(s.tick(t + 1.0, &rules));
            }
            effects
        };
        slow(&mut s, T0 - 300.0, 300, 20.0);
        s.change_landed(change("c1", ChangeKind::Human), Landing::at(T0), &rules);
        let effects = slow(&mut s, T0, 30, 60.0);
        let reason = effects
            .iter()
            .find_map(|e| match e {
                Effect::Remediate(job) => Some(job.reason.clone()),
                _ => None,
            })
            .expect("a threefold latency is a regression");
        assert!(
            reason.contains("latency: median 3.00x, e-value "),
            "{reason}"
        );
        assert!(!reason.contains('%'), "{reason}");
    }
}
