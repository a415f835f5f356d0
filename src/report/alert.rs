//! The alert email about a change, for a person woken at 2 a.m.: what happened and what
//! guardian did, step by step (the redeploy among them), what to do when a person must act,
//! what changed, the evidence in numbers, how to undo the undo, and last every command
//! guardian ran. Pure: no
//! clock, no IO.
//!
//! Every email about a change has a deterministic Message-ID, `<change-id.state@guardian>`, so
//! that queuing it twice (e.g. after a crash) keeps one, and a resend is recognisably the same
//! email.

use std::fmt::Write as _;

use serde_json::Value;

use super::actions::{
    by_hand, commands_run, headline, read_rollback, state_label, undo_the_undo, what_guardian_did,
    Detail,
};
use super::evidence::{self, not_compared_reason, side_names, standing, title, verdict_name};
use super::text::{printable, short_commit};
use super::units::{count, duration, evalue, ms, percent, quantile, ratio, when};
use super::Email;
use crate::core::{Report, SignalKind};
use crate::store::{ChangeRecord, ChangeState};

/// The Message-ID of the email about `change_id` reaching `state`: the same every time, so a
/// resend after a crash is recognisably the same email (and the outbox keeps one).
pub fn message_id(change_id: &str, state: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("<{}.{}@guardian>", clean(change_id), clean(state))
}

/// Renders the alert about `change` (its current state), with the rollback report (the
/// `rollback` event's detail, as stored) when there was a rollback.
pub fn render_alert(service: &str, change: &ChangeRecord, rollback: Option<&Value>) -> Email {
    let report = evidence::stored(change);
    let rollback = rollback.map(read_rollback).transpose();
    let done = rollback.as_ref().ok().and_then(Option::as_ref);
    let short = short_commit(&change.commit);
    let commits = if change.commit.contains("..") {
        "commits"
    } else {
        "commit"
    };
    let label = state_label(change, done);
    let subject = printable(&format!(
        "[guardian] {service}: {label} \u{2014} {commits} {short}"
    ));
    let revert = done.and_then(|r| r.revert_commit.clone());

    let mut body = String::new();
    let w = &mut body;
    // What happened and what guardian did, first, in one paragraph.
    let _ = writeln!(
        w,
        "{}",
        headline(
            service,
            change,
            report.as_ref().ok().and_then(Option::as_ref),
            done,
            &short,
            revert.as_deref()
        )
    );
    w.push('\n');

    // The outcome of each step, and the redeploy step, next; what to do about it when a
    // person must act. The git commands' detail waits until the end.
    section(w, "What guardian did");
    what_guardian_did(w, change, &rollback, Detail::Outcomes);
    let mut commands = String::new();
    commands_run(&mut commands, &rollback);
    if !commands.is_empty() {
        w.push_str(
            "  Every command guardian ran is under \"Commands guardian ran\", at the end.\n",
        );
    }
    w.push('\n');

    if revert.is_none()
        && matches!(
            change.state,
            ChangeState::Escalated | ChangeState::Regressed
        )
    {
        section(w, "What you can do");
        by_hand(w, change, done);
        w.push('\n');
    }

    section(w, "What changed");
    field(w, "Commit", &change.commit);
    let kind = match &change.pattern {
        Some(p) => format!("{} (pattern: {p})", change.kind),
        None => change.kind.to_string(),
    };
    field(w, "Written by", &kind);
    if let Some(summary) = &change.summary {
        field(w, "Summary", summary);
    }
    if let Some(flag) = &change.flag {
        field(w, "Flag", flag);
    }
    field(w, "Landed", &when(change.landed_at));
    field(w, "Service", service);
    let state = match &change.note {
        Some(note) => format!("{} ({note})", change.state),
        None => change.state.to_string(),
    };
    field(w, "State now", &state);
    w.push('\n');

    section(w, "Evidence");
    match &report {
        Ok(Some(report)) => evidence_text(w, report, change.state),
        Ok(None) => w.push_str("  No evidence was recorded for this change.\n"),
        Err(e) => {
            let _ = writeln!(
                w,
                "  The evidence recorded for this change cannot be shown: {e}."
            );
        }
    }

    if let Some(revert) = revert.as_deref() {
        w.push('\n');
        section(w, "How to undo the undo");
        undo_the_undo(w, change, done, revert);
    }
    if !commands.is_empty() {
        w.push('\n');
        section(w, "Commands guardian ran");
        w.push_str(&commands);
    }
    w.push('\n');
    let _ = writeln!(w, "Change id: {}", change.id);
    let _ = writeln!(
        w,
        "Status:    guardian status --config <your guardian.toml>   (or GET /v1/changes/{})",
        change.id
    );
    let _ = writeln!(w, "-- \nSent by guardian, watching {service}.");

    Email {
        subject,
        text_body: body,
        message_id: message_id(&change.id, change.state.as_str()),
        html: None,
    }
}

/// [`render_alert`] with the rendered post-mortem (`super::postmortem::Postmortem::html`) as
/// the HTML alternative. The text part stays the whole alert, plus one line saying where the
/// post-mortem is, for mail clients that show only text.
pub fn render_alert_with_postmortem(
    service: &str,
    change: &ChangeRecord,
    rollback: Option<&Value>,
    postmortem_html: Option<String>,
) -> Email {
    let mut email = render_alert(service, change, rollback);
    if postmortem_html.is_some() {
        let line = format!(
            "Post-mortem: in this email's HTML part, or guardian postmortem {} --config <your \
             guardian.toml>\n",
            change.id
        );
        match email.text_body.find("Change id: ") {
            Some(at) => email.text_body.insert_str(at, &line),
            None => email.text_body.push_str(&line),
        }
    }
    email.html = postmortem_html;
    email
}

/// Per signal: rates before and after, the effect, the e-value against its threshold, the
/// counts it rests on, when it was decided.
fn evidence_text(w: &mut String, report: &Report, state: ChangeState) {
    let verdict = match state {
        // The log's verdict is not the change's: its claim decided it.
        ChangeState::Ineffective => {
            "nothing shown worse, and the issue it claims to fix went on firing"
        }
        _ => verdict_name(report.verdict),
    };
    let decided = match report.decided_at {
        Some(d) => format!(
            "decided {} after the change ({verdict})",
            duration(d - report.change_at)
        ),
        None => format!("not decided (verdict: {verdict})"),
    };
    let names = side_names(report.design);
    let (old, new) = (names.control, names.treatment);
    let _ = writeln!(
        w,
        "  Compared {}: {} requests {old}, {} {new}; {decided}.",
        names.design,
        count(report.requests_before),
        count(report.requests_after),
    );
    for s in &report.signals {
        w.push('\n');
        let mut heading = format!("  {}: {}", title(s), standing(s));
        if let Some(route) = &s.worst_route {
            let _ = write!(heading, " (worst route: {route})");
        }
        let _ = writeln!(w, "{heading}");
        if s.routes_compared == 0 {
            let _ = writeln!(w, "    not compared: {}", not_compared_reason(s));
            continue;
        }
        if s.left_out {
            let baseline_events = s.thin.map_or("too few".to_owned(), |t| {
                format!("only {}", count(t.baseline_events))
            });
            let _ = writeln!(
                w,
                "    left out of the healthy verdict: {baseline_events} in the baseline, too few \
                 to ever bound the harm (its test still runs and can call a regression)",
            );
        }
        if s.signal == SignalKind::Latency {
            if let Some(r) = s.effect_ratio {
                let _ = writeln!(w, "    median:   {new} / {old} {}", ratio(r));
            }
            for level in &s.levels {
                let _ = writeln!(
                    w,
                    "    {}: {} -> {}; share slower than it (plus tolerance): {} -> {}; \
                     e-value {}",
                    quantile(level.quantile),
                    ms(level.baseline_ms),
                    ms(level.after_ms),
                    percent(level.baseline_share_slower),
                    percent(level.after_share_slower),
                    evalue(level.e_value),
                );
            }
            let _ = writeln!(
                w,
                "    requests: {} {old}, {} {new}",
                count(s.baseline.requests),
                count(s.after.requests)
            );
        } else {
            for (name, side) in [(old, &s.baseline), (new, &s.after)] {
                let name = format!("{name}:");
                let _ = writeln!(
                    w,
                    "    {name:<9} {:>6}  ({} of {} requests)",
                    percent(side.rate),
                    count(side.events),
                    count(side.requests),
                );
            }
            let mut effect = match s.effect_ratio {
                Some(r) => format!("{} {} rate", ratio(r), names.reference),
                None => format!("no ratio (no bad events {old}, or no traffic {new})"),
            };
            if let Some(u) = s.ratio_upper_bound {
                let _ = write!(effect, "; upper bound {}", ratio(u));
            }
            let _ = write!(
                effect,
                "; a rise to {} is tolerated (not counted as worse)",
                ratio(s.null_ratio)
            );
            let _ = writeln!(w, "    effect:   {effect}");
        }
        let crossed = if s.e_value >= s.e_value_threshold {
            "crossed"
        } else {
            "not crossed"
        };
        let _ = writeln!(
            w,
            "    e-value:  {} against a threshold of {} ({crossed}; alpha {})",
            evalue(s.e_value),
            evalue(s.e_value_threshold),
            s.alpha
        );
        if s.regressed {
            if let Some(d) = report.decided_at {
                let _ = writeln!(
                    w,
                    "    decided:  {} after the change",
                    duration(d - report.change_at)
                );
            }
        }
        if let Some(bursts) = evidence::bursts(s) {
            let _ = writeln!(w, "    {bursts}; evidence discounted by that");
        }
    }
    if report.signals.is_empty() {
        w.push_str("  The report names no signal.\n");
    }
    if let Some(claim) = &report.claim {
        let _ = writeln!(
            w,
            "\n  The issue it claims to fix: {}.",
            evidence::claim_outcome(claim)
        );
    }
}

fn section(w: &mut String, title: &str) {
    let _ = writeln!(w, "{title}\n{}", "-".repeat(title.chars().count()));
}

fn field(w: &mut String, name: &str, value: &str) {
    let _ = writeln!(w, "  {:<11} {}", format!("{name}:"), printable(value));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::daemon::step::Step;
    use crate::hook::HookStatus;
    use crate::report::testing::{
        change, command, expected, regressed_report, rollback, rollback_report, COMMIT,
    };

    #[test]
    fn a_rolled_back_change_is_explained() {
        let report = regressed_report();
        let rollback = rollback_report();
        let record = change(
            ChangeState::RolledBack,
            "reverted and redeployed; the service is back to its baseline",
            Some(report.clone()),
        );
        let email = render_alert("shop", &record, Some(&rollback));
        assert_eq!(
            email.subject,
            "[guardian] shop: rolled back \u{2014} commit 3f9a2c1b7d"
        );
        assert_eq!(email.message_id, "<chg_0123456789ab.rolled_back@guardian>");
        // The whole text, as the on-call engineer reads it: what happened and each step's
        // outcome first, then what changed, the evidence from the report, how to undo the
        // undo, and last every command with its exit status and the hook's output.
        expected("alert_rolled_back.txt").assert_eq(&email.text_body);
        let first = email.text_body.lines().next().unwrap();
        assert!(
            first.starts_with("Commit 3f9a2c1b7d made shop worse (errors "),
            "{first}"
        );
        // The numbers are the report's: the snapshot cannot drift from the core's evidence.
        let errors = &evidence::read(&report).unwrap().signals[0];
        assert!(errors.regressed);
        let before = format!(
            "before:   {:>6}  ({} of {} requests)",
            percent(errors.baseline.rate),
            count(errors.baseline.events),
            count(errors.baseline.requests)
        );
        assert!(email.text_body.contains(&before), "missing {before:?}");
        // Rendering is deterministic: a resend after a crash is the same email.
        assert_eq!(render_alert("shop", &record, Some(&rollback)), email);
    }

    #[test]
    fn the_outcome_and_the_redeploy_come_before_the_git_commands() {
        let record = change(
            ChangeState::RolledBack,
            "reverted and redeployed; the service is back to its baseline",
            Some(regressed_report()),
        );
        let body = render_alert("shop", &record, Some(&rollback_report())).text_body;
        let at = |needle: &str| {
            body.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing from:\n{body}"))
        };
        let redeploy = at("3. redeploy hook: exit 0 after 3.2 s");
        let first_git_command = at("$ git ");
        // The story first: the outcome, each step's in one line, the redeploy among them ...
        assert!(at("the service is back to its baseline") < redeploy);
        assert!(redeploy < at("What changed\n"));
        assert!(redeploy < at("Evidence\n"));
        // ... and the plumbing last, after what to do.
        assert!(at("How to undo the undo\n") < at("Commands guardian ran\n"));
        assert!(at("Commands guardian ran\n") < first_git_command);
        for command in [
            "$ git status --porcelain   [exit 0]",
            "$ git push --no-verify -- origin HEAD:refs/heads/main   [exit 0]",
            "| building shop",
        ] {
            assert!(at(command) > at("Commands guardian ran\n"), "{command}");
        }

        // When a person must act, what to do comes right after what guardian did.
        let conflict = json!({
            "revert_commit": null,
            "escalation": "reverting conflicts with later commits in src/pay.rs",
            "steps": [{
                "step": "git revert", "result": "conflict", "files": ["src/pay.rs"],
                "tree_restored": true,
                "commands": [command(&["revert", "--no-commit", COMMIT], Some(1), "error: could not revert")],
            }],
        });
        let record = change(ChangeState::Escalated, "x", Some(regressed_report()));
        let body = render_alert("shop", &record, Some(&conflict)).text_body;
        let at = |needle: &str| {
            body.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing from:\n{body}"))
        };
        assert!(
            at("What guardian did\n") < at("What you can do\n"),
            "{body}"
        );
        assert!(at("What you can do\n") < at("Evidence\n"), "{body}");
        assert!(at("Evidence\n") < at("$ git revert --no-commit"), "{body}");
    }

    #[test]
    fn a_revert_guardian_would_not_revert_is_never_advised_to_be_reverted_by_hand() {
        let refused = json!({
            "revert_commit": null,
            "escalation": format!("the revert failed: refusing to revert {COMMIT}: it is itself a revert (of 1111111111111111111111111111111111111111), and reverting it would put back the change it undid; a person decides that"),
            "steps": [{"step": "git revert", "result": "failed", "error": "refusing to revert"}],
        });
        let record = change(ChangeState::Escalated, "x", Some(regressed_report()));
        let body = render_alert("shop", &record, Some(&refused)).text_body;
        assert!(
            body.contains(&format!("{COMMIT} is itself a revert: do not revert it")),
            "{body}"
        );
        assert!(!body.contains(&format!("git revert {COMMIT}")), "{body}");
    }

    #[test]
    fn an_escalation_says_why_in_the_subject_and_first_line() {
        let report = regressed_report();
        let conflict = json!({
            "revert_commit": null,
            "escalation": "reverting 3f9a.. conflicts with later commits in src/pay.rs; the revert was aborted and the working tree is exactly as it was",
            "steps": [{
                "step": "git revert", "result": "conflict", "files": ["src/pay.rs"],
                "tree_restored": true,
                "commands": [command(&["revert", "--no-commit", COMMIT], Some(1), "error: could not revert 3f9a2c1\nhint: after resolving the conflicts")],
            }],
        });
        let record = change(ChangeState::Escalated, "x", Some(report.clone()));
        let email = render_alert("shop", &record, Some(&conflict));
        expected("alert_escalated_conflict.txt").assert_eq(&email.text_body);
        assert_eq!(
            email.subject,
            "[guardian] shop: escalated: revert conflicts \u{2014} commit 3f9a2c1b7d"
        );
        assert_eq!(email.message_id, "<chg_0123456789ab.escalated@guardian>");
        let body = &email.text_body;
        assert!(
            body.starts_with("ACTION NEEDED: commit 3f9a2c1b7d made shop worse"),
            "{body}"
        );
        assert!(
            body.contains("CONFLICT in src/pay.rs; aborted; the working tree is exactly as it was")
        );
        assert!(body.contains("[exit 1]"));
        assert!(body.contains("| hint: after resolving the conflicts"));
        assert!(body.contains("No revert commit was made."));
        assert!(!body.contains("How to undo the undo"));
        assert!(body.contains(&format!("git revert {COMMIT}   (resolve any conflicts")));

        // A hook that timed out.
        let mut timed_out = rollback();
        timed_out.escalation = Some("the revert is committed but the redeploy hook failed".into());
        let Step::Hook(hook) = &mut timed_out.steps[2] else {
            panic!("the third step is the hook")
        };
        hook.outcome.status = HookStatus::TimedOut {
            timeout: Duration::from_secs(60),
            code: None,
            signal: Some(9),
        };
        let timed_out = serde_json::to_value(timed_out).unwrap();
        let email = render_alert("shop", &record, Some(&timed_out));
        assert!(
            email.subject.contains("escalated: redeploy hook timed out"),
            "{}",
            email.subject
        );
        assert!(
            email.text_body.contains("redeploy hook: FAILED: "),
            "{}",
            email.text_body
        );
        assert!(email.text_body.contains("How to undo the undo"));

        // Reverted and redeployed, but the service stayed worse.
        let record = change(
            ChangeState::Escalated,
            "the revert did not help: after the redeploy the service is still worse",
            Some(report),
        );
        let email = render_alert("shop", &record, Some(&rollback_report()));
        assert!(
            email.subject.contains("escalated: revert did not help"),
            "{}",
            email.subject
        );
        assert!(email
            .text_body
            .contains("Handed to a person because: the revert did not help"));
    }

    #[test]
    fn a_regression_without_rollback_and_odd_inputs() {
        let mut record = change(ChangeState::Regressed, "n", Some(regressed_report()));
        record.commit = "abcdef0123456789..0123456789abcdef".into();
        record.pattern = None;
        let email = render_alert("shop\r\nBcc: x@evil.example", &record, None);
        assert!(!email.subject.contains('\n') && !email.subject.contains('\r'));
        assert!(email
            .subject
            .ends_with("regressed \u{2014} commits abcdef0123..0123456789"));
        assert!(email.text_body.contains("Rollback is not configured"));
        assert!(email
            .text_body
            .contains("rollback is not configured ([daemon.rollback]"));
        // No report, a rollback report of an unexpected shape: still an email, not a panic.
        let record = change(ChangeState::Escalated, "guardian stopped between ...", None);
        let email = render_alert("shop", &record, Some(&json!({"steps": "?"})));
        assert!(email.text_body.contains("No evidence was recorded"));
        assert!(email.text_body.contains(
            "  The rollback report recorded for this change cannot be shown: the stored rollback \
             report cannot be read: invalid type: string \"?\", expected a sequence.\n"
        ));
        assert!(
            email.subject.contains("guardian restarted mid-rollback"),
            "the note tells why: {}",
            email.subject
        );
        let email = render_alert("shop", &record, None);
        assert!(
            email.subject.contains("guardian restarted mid-rollback"),
            "{}",
            email.subject
        );
        assert_eq!(
            message_id("chg_1", "rolled_back"),
            "<chg_1.rolled_back@guardian>"
        );
        assert_eq!(message_id("a>b c", "x"), "<a_b_c.x@guardian>");
    }
}
