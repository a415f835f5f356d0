//! The flag_off actions as people read them: the paragraph an alert about a change gets when
//! its flag was tried (or would have been, or was refused), and the email about a flag turned
//! off at a role's request. Pure: records in, text out.

use std::fmt::Write as _;

use super::text::printable;
use super::units::when;
use super::Email;
use crate::daemon::supervisor::FlagOutcome;
use crate::store::FlagAction;

/// An outcome in words.
pub fn outcome_words(outcome: FlagOutcome) -> &'static str {
    match outcome {
        FlagOutcome::Running => "under way",
        FlagOutcome::Verified => "turned off, and the service recovered",
        FlagOutcome::DidNotHelp => "turned off, but the service did not recover",
        FlagOutcome::Failed => "could not be turned off",
        FlagOutcome::Shadow => "shadow mode: would have been turned off; nothing was done",
        FlagOutcome::Refused => "not turned off (refused)",
        FlagOutcome::CutShort => "cut short by a stop of guardian's; not done again",
        FlagOutcome::Done => "turned off",
    }
}

/// What was done with a change's feature flag, as a paragraph of the alert.
pub fn flag_paragraph(actions: &[FlagAction]) -> String {
    let mut w = String::from("Feature flag\n------------\n");
    for a in actions {
        let _ = writeln!(
            w,
            "  {}: flag {}: {}{}",
            when(a.started_at),
            printable(&a.flag),
            outcome_words(a.outcome),
            a.note
                .as_deref()
                .filter(|n| !n.is_empty())
                .map(|n| format!(" ({})", printable(n)))
                .unwrap_or_default()
        );
    }
    if actions.iter().any(|a| a.outcome == FlagOutcome::Verified) {
        w.push_str(
            "  The change's code is still deployed: nothing was reverted. Turning the flag on \
             again brings the regression back; fix or revert the change first.\n",
        );
    }
    // A flag turned off that did not help stays off after the revert: guardian never turns
    // a flag on. Someone must, or the feature stays switched off.
    for a in actions
        .iter()
        .filter(|a| a.outcome == FlagOutcome::DidNotHelp)
    {
        let _ = writeln!(
            w,
            "  Flag {} is STILL OFF: turning it off did not help, and guardian turns no flag \
             back on. Turn it on again once the service is right (it was not the cause).",
            printable(&a.flag)
        );
    }
    w
}

/// The email about a flag turned off (or, in shadow, not) at a role's request.
pub fn render_flag_request(service: &str, a: &FlagAction) -> Email {
    let flag = printable(&a.flag);
    let by = printable(&a.requested_by);
    let subject = printable(&format!(
        "[guardian] {service}: flag {flag} {} \u{2014} asked by {by}",
        match a.outcome {
            FlagOutcome::Done => "turned off",
            FlagOutcome::Failed => "NOT turned off",
            FlagOutcome::Shadow => "would be turned off (shadow)",
            _ => "flag_off",
        }
    ));
    let mut w = String::new();
    let _ = writeln!(
        w,
        "{by} asked guardian to turn feature flag {flag} off on {service}: {}.",
        outcome_words(a.outcome)
    );
    if a.outcome == FlagOutcome::Failed {
        w.push_str(
            "ACTION NEEDED: check the flag service and turn the flag off by hand if it must be.\n",
        );
    }
    w.push('\n');
    let _ = writeln!(w, "  Flag:       {flag}");
    let _ = writeln!(w, "  Asked by:   {by}");
    let _ = writeln!(w, "  Why:        {}", printable(&a.reason));
    let _ = writeln!(w, "  Asked at:   {}", when(a.started_at));
    if let Some(note) = a.note.as_deref().filter(|n| !n.is_empty()) {
        let _ = writeln!(w, "  What:       {}", printable(note));
    }
    let _ = writeln!(w, "  Record:     {}", a.id);
    w.push_str(
        "\nNo change's recovery is checked for a flag turned off on request: check the service.\n",
    );
    let _ = writeln!(w, "-- \nSent by guardian, watching {service}.");
    Email {
        subject,
        text_body: w,
        message_id: super::message_id(&a.id, a.outcome.as_str()),
        html: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(outcome: FlagOutcome, note: &str) -> FlagAction {
        FlagAction {
            id: "flg_0123456789ab".into(),
            flag: "new-search".into(),
            change_id: Some("chg_0123456789ab".into()),
            requested_by: "guardian".into(),
            reason: "errors rose".into(),
            started_at: 1_764_000_000.0,
            ended_at: Some(1_764_000_030.0),
            outcome,
            note: Some(note.into()),
        }
    }

    #[test]
    fn a_flag_that_did_not_help_is_said_to_be_still_off() {
        let text = flag_paragraph(&[action(
            FlagOutcome::DidNotHelp,
            "the service is still worse than before the change",
        )]);
        assert!(
            text.contains("Flag new-search is STILL OFF"),
            "the person must turn it back on: {text}"
        );
        let mitigated = flag_paragraph(&[action(FlagOutcome::Verified, "recovered")]);
        assert!(!mitigated.contains("STILL OFF"), "{mitigated}");
        assert!(mitigated.contains("still deployed"), "{mitigated}");
    }
}
