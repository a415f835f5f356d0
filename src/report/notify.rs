//! A change's outcome as each notification target takes it (`[[daemon.notify]]`): a generic
//! webhook's JSON, a Slack incoming webhook's Block Kit message, Alertmanager's alerts. Pure:
//! the words are the alert email's own (its subject and first paragraph), so every place a
//! person is told says the same thing.

use serde_json::{json, Value};

use super::text::short_commit;
use crate::change::ChangeState;
use crate::config::{NotifyKind, Severity};
use crate::store::ChangeRecord;

/// Alertmanager keeps a firing alert this long without hearing of it again.
const FIRING_FOR_SECS: f64 = 24.0 * 3600.0;

/// What is told of a change that reached a state.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub service: String,
    pub change_id: String,
    pub commit: String,
    pub state: ChangeState,
    pub severity: Severity,
    /// The alert email's subject.
    pub title: String,
    /// The alert email's first paragraph: what happened and what guardian did, with the
    /// evidence.
    pub summary: String,
    pub pattern: Option<String>,
    pub fixes_issue: Option<String>,
    /// When the change landed, and when it reached the state.
    pub landed_at: f64,
    pub at: f64,
}

impl Outcome {
    /// The outcome of `change` as it stands, in the words of its alert email; `None`: its
    /// state is a step on the way, never told.
    pub fn of(
        change: &ChangeRecord,
        alert: &super::Email,
        service: &str,
        at: f64,
    ) -> Option<Outcome> {
        let severity = Severity::of(change.state)?;
        let summary = alert
            .text_body
            .split("\n\n")
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Some(Outcome {
            service: service.to_owned(),
            change_id: change.id.clone(),
            commit: change.commit.clone(),
            state: change.state,
            severity,
            title: alert.subject.clone(),
            summary,
            pattern: change.pattern.clone(),
            fixes_issue: change.fixes_issue.clone(),
            landed_at: change.landed_at,
            at,
        })
    }
}

/// The request body `kind` takes for `o`; `None`: this kind is not told of this state
/// (Alertmanager hears of what fires and resolves, not of a healthy change).
pub fn body(kind: &NotifyKind, o: &Outcome) -> Option<String> {
    let value = match kind {
        NotifyKind::Webhook { .. } => webhook(o),
        NotifyKind::Slack => slack(o),
        NotifyKind::Alertmanager => alertmanager(o)?,
    };
    Some(value.to_string())
}

fn rfc3339(t: f64) -> String {
    chrono::DateTime::from_timestamp_millis((t * 1000.0).round() as i64)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn webhook(o: &Outcome) -> Value {
    json!({
        "version": 1,
        "service": o.service,
        "change_id": o.change_id,
        "commit": o.commit,
        "state": o.state.as_str(),
        "severity": o.severity.as_str(),
        "title": o.title,
        "summary": o.summary,
        "pattern": o.pattern,
        "fixes_issue": o.fixes_issue,
        "landed_at": rfc3339(o.landed_at),
        "at": rfc3339(o.at),
        "postmortem": format!("guardian postmortem {}", o.change_id),
    })
}

/// Slack's mrkdwn takes `&`, `<` and `>` as markup: outside text is escaped.
fn mrkdwn(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn slack(o: &Outcome) -> Value {
    let outcome = match o.state {
        ChangeState::Regressed => "made things worse",
        ChangeState::RolledBack => "rolled back",
        ChangeState::FlaggedOff => "mitigated: flag turned off",
        ChangeState::Escalated => "ACTION NEEDED",
        ChangeState::Ineffective => "did not fix its issue",
        ChangeState::Inconclusive => "inconclusive",
        ChangeState::Healthy => "healthy",
        other => other.as_str(),
    };
    // A header is plain text of at most 150 characters.
    let header: String = o.title.chars().take(150).collect();
    let field = |name: &str, value: &str| json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", mrkdwn(value))});
    json!({
        "text": o.title,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": header}},
            {"type": "section", "fields": [
                field("Outcome", outcome),
                field("Service", &o.service),
                field("Commit", &short_commit(&o.commit)),
                field("Change", &o.change_id),
            ]},
            {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn(&o.summary)}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": format!(
                    "The post-mortem: `guardian postmortem {}` \u{2022} the trail: `guardian audit export`",
                    mrkdwn(&o.change_id)
                )},
            ]},
        ],
    })
}

/// Alertmanager's alerts: one alert per change, firing while the change is doing harm or a
/// person is needed, resolved when the service is back; a fix that did not fix its issue is
/// an alert of its own. Its labels are what a routing tree matches on.
fn alertmanager(o: &Outcome) -> Option<Value> {
    let (alertname, severity, firing) = match o.state {
        ChangeState::Regressed | ChangeState::Escalated => {
            ("GuardianChangeRegressed", "critical", true)
        }
        ChangeState::RolledBack | ChangeState::FlaggedOff => {
            ("GuardianChangeRegressed", "critical", false)
        }
        ChangeState::Ineffective => ("GuardianFixIneffective", "warning", true),
        _ => return None,
    };
    let ends_at = if firing { o.at + FIRING_FOR_SECS } else { o.at };
    Some(json!([{
        "labels": {
            "alertname": alertname,
            "service": o.service,
            "change_id": o.change_id,
            "severity": severity,
            "source": "guardian",
        },
        "annotations": {
            "summary": o.title,
            "description": o.summary,
            "state": o.state.as_str(),
            "commit": o.commit,
        },
        "startsAt": rfc3339(o.landed_at),
        "endsAt": rfc3339(ends_at),
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_764_000_000.0;

    fn outcome(state: ChangeState) -> Outcome {
        Outcome {
            service: "shop".into(),
            change_id: "chg_0123456789ab".into(),
            commit: "9c1e2f0a7b3d".into(),
            state,
            severity: Severity::of(state).unwrap(),
            title: "[guardian] shop: rolled back \u{2014} commit 9c1e2f0".into(),
            summary: "Commit 9c1e2f0 made shop worse: errors 0.40% -> 8.1% <script>&".into(),
            pattern: None,
            fixes_issue: None,
            landed_at: T0,
            at: T0 + 42.0,
        }
    }

    #[test]
    fn slack_gets_the_outcome_the_service_the_commit_and_the_evidence_escaped() {
        let body: Value = serde_json::from_str(
            &body(&NotifyKind::Slack, &outcome(ChangeState::RolledBack)).unwrap(),
        )
        .unwrap();
        assert_eq!(body["blocks"][0]["type"], "header");
        let fields = body["blocks"][1]["fields"].as_array().unwrap();
        assert_eq!(fields[0]["text"], "*Outcome*\nrolled back");
        assert_eq!(fields[2]["text"], "*Commit*\n9c1e2f0a7b");
        assert_eq!(
            body["blocks"][2]["text"]["text"],
            "Commit 9c1e2f0 made shop worse: errors 0.40% -&gt; 8.1% &lt;script&gt;&amp;"
        );
        assert!(
            body["text"].as_str().unwrap().contains("rolled back"),
            "the fallback text"
        );
    }

    #[test]
    fn alertmanager_fires_on_harm_and_resolves_the_same_alert_when_the_service_is_back() {
        let firing: Value = serde_json::from_str(
            &body(&NotifyKind::Alertmanager, &outcome(ChangeState::Regressed)).unwrap(),
        )
        .unwrap();
        let resolved: Value = serde_json::from_str(
            &body(&NotifyKind::Alertmanager, &outcome(ChangeState::RolledBack)).unwrap(),
        )
        .unwrap();
        assert_eq!(
            firing[0]["labels"], resolved[0]["labels"],
            "one alert, by its labels"
        );
        assert_eq!(firing[0]["labels"]["severity"], "critical");
        assert_eq!(
            firing[0]["endsAt"], "2025-11-25T16:00:42.000Z",
            "firing for a day"
        );
        assert_eq!(
            resolved[0]["endsAt"], "2025-11-24T16:00:42.000Z",
            "resolved now"
        );
        assert_eq!(
            body(&NotifyKind::Alertmanager, &outcome(ChangeState::Healthy)),
            None,
            "nothing fires for a healthy change"
        );
    }

    #[test]
    fn the_webhook_gets_the_outcome_as_data() {
        let kind = NotifyKind::Webhook { secret_file: None };
        let body: Value =
            serde_json::from_str(&body(&kind, &outcome(ChangeState::Escalated)).unwrap()).unwrap();
        assert_eq!(
            (
                body["state"].as_str(),
                body["severity"].as_str(),
                body["version"].as_u64()
            ),
            (Some("escalated"), Some("critical"), Some(1))
        );
        assert_eq!(body["at"], "2025-11-24T16:00:42.000Z");
    }
}
