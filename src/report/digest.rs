//! The daily digest: the changes that stayed healthy during one UTC day, in one email instead
//! of one each.

use super::evidence;
use super::text::printable;
use super::units::{percent, ratio};
use super::Email;
use crate::core::{Report, SignalKind};
use crate::store::ChangeRecord;

/// The daily digest of changes that stayed healthy during the UTC day starting at `day_start`
/// (unix seconds). `None` when there were none.
pub fn render_digest(service: &str, day_start: f64, healthy: &[ChangeRecord]) -> Option<Email> {
    if healthy.is_empty() {
        return None;
    }
    let day = chrono::DateTime::from_timestamp(day_start as i64, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("{day_start}"));
    let mut body = format!(
        "{} change{} to {service} stayed healthy on {day} (UTC). Nothing needs doing.\n\n",
        healthy.len(),
        if healthy.len() == 1 { "" } else { "s" }
    );
    for c in healthy {
        let errors = match evidence::stored(c) {
            Ok(Some(report)) => match &report.claim {
                Some(claim) => format!(
                    "{}\n      {}",
                    errors_line(&report),
                    printable(&evidence::claim_outcome(claim))
                ),
                None => errors_line(&report),
            },
            Ok(None) => "no evidence was recorded".to_owned(),
            Err(e) => format!("the evidence cannot be shown: {e}"),
        };
        body.push_str(&format!(
            "  {}  commit {}  {}{}  {}\n      {}\n",
            c.id,
            &c.commit[..c.commit.len().min(10)],
            c.kind.as_str(),
            c.pattern
                .as_deref()
                .map(|p| format!(" ({})", printable(p)))
                .unwrap_or_default(),
            printable(c.summary.as_deref().unwrap_or("")),
            errors
        ));
    }
    body.push_str("\n-- \nSent by guardian: a digest of healthy changes, once a day.\n");
    Some(Email {
        subject: format!(
            "[guardian] {service}: {} healthy change(s) on {day}",
            healthy.len()
        ),
        text_body: body,
        message_id: format!("<digest.{day}@guardian>"),
        html: None,
    })
}

/// "errors 0.50% -> 0.48%, bounded below 1.08x": the error rates and how far the harm is
/// bounded (empty when the report has no error signal).
fn errors_line(report: &Report) -> String {
    let Some(s) = report
        .signals
        .iter()
        .find(|s| s.signal == SignalKind::Errors)
    else {
        return String::new();
    };
    format!(
        "errors {} -> {}, bounded below {}",
        percent(s.baseline.rate),
        percent(s.after.rate),
        s.ratio_upper_bound.map_or("-".to_owned(), ratio)
    )
}
