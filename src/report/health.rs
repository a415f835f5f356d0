//! What `guardian status` shows of the health check and its restarts (`[daemon.health]`):
//! where it stands, the hour's restarts against the limit, and the restart action's track
//! record; and the bounded actions' lines of `guardian trust`. Pure: renders what it is given.

use std::fmt::Write as _;

use super::units::{duration, when};
use crate::api::{ActionTrack, HealthStatus};
use crate::display;

/// The health check's lines in `guardian status`.
pub fn health_text(h: &HealthStatus, now: f64) -> String {
    let t = |text: &str| display::line(text).into_owned();
    let w = &h.watch;
    let mut out = String::new();
    let standing = match w.phase.as_str() {
        "watching" if w.consecutive_failures > 0 => format!(
            "failing ({} in a row: {}){}",
            w.consecutive_failures,
            t(w.last_error.as_deref().unwrap_or("?")),
            w.cooldown_until
                .map(|until| format!(
                    "; waiting out the cool-down: the next restart in {}",
                    duration((until - now).max(0.0))
                ))
                .unwrap_or_default()
        ),
        "watching" => "healthy".to_owned(),
        "restarting" => "restarting the app".to_owned(),
        "verifying" => "restarted; waiting for a good probe".to_owned(),
        "held" => "ESCALATED: a person must act; nothing is restarted until it is healthy again"
            .to_owned(),
        other => t(other),
    };
    let probed = w
        .last_probe_at
        .map(|at| format!(", probed {} ago", duration((now - at).max(0.0))))
        .unwrap_or_default();
    let _ = writeln!(out, "health: {} {standing}{probed}", t(&h.url));
    match (&h.restart, w.max_per_hour) {
        (Some(command), Some(max)) => {
            let _ = writeln!(
                out,
                "  restart{}: {} in the last hour (at most {max}): {}",
                if w.shadow {
                    " (shadow: decided, never run)"
                } else {
                    ""
                },
                w.restarts_last_hour,
                t(&super::text::shell_line(command))
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "  no restart configured: failures are told, nothing is run"
            );
        }
    }
    let k = &h.track;
    let _ = writeln!(
        out,
        "  track record: {} restart{}, {} verified, {} escalated, {} shadow; {} failure{} seen, {} recovered without one",
        k.restarts,
        if k.restarts == 1 { "" } else { "s" },
        k.verified,
        k.escalated,
        k.shadow,
        k.failed,
        if k.failed == 1 { "" } else { "s" },
        k.recovered
    );
    out
}

/// The bounded actions' part of `guardian trust`: a line each, its record and its last setback.
pub fn actions_text(actions: &[ActionTrack]) -> String {
    let mut out = format!(
        "{:<18} {:>8} {:>8} {:>9} {:>6} {:>7}  last setback\n",
        "action", "attempts", "verified", "escalated", "shadow", "refused"
    );
    for a in actions {
        let setback = match &a.last_setback {
            None => "none".to_owned(),
            Some(s) => {
                let what = match s.reason.as_str() {
                    "command_failed" => "the restart failed".to_owned(),
                    "not_verified" => "the restart did not help".to_owned(),
                    "rate_limited" => "the hour's restarts were spent".to_owned(),
                    "did_not_help" => "turning the flag off did not help".to_owned(),
                    "failed" => "the flag could not be turned off".to_owned(),
                    "cut_short" => "guardian stopped while it was under way".to_owned(),
                    other => display::line(other).into_owned(),
                };
                format!("{}: {what} ({})", when(s.at), display::line(&s.why))
            }
        };
        let _ = writeln!(
            out,
            "{:<18} {:>8} {:>8} {:>9} {:>6} {:>7}  {setback}",
            display::line(&a.action),
            a.attempts,
            a.verified,
            a.escalated,
            a.shadow,
            a.refused
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::api::HealthTrack;
    use crate::daemon::health::decide::WatchView;

    #[test]
    fn status_tells_where_the_check_stands_and_the_track_record() {
        let status = HealthStatus {
            url: "http://127.0.0.1:8080/healthz".into(),
            restart: Some(vec!["systemctl".into(), "restart".into(), "app".into()]),
            watch: WatchView {
                phase: "held".into(),
                consecutive_failures: 7,
                last_error: Some("answered 503".into()),
                last_probe_at: Some(98.0),
                last_ok_at: None,
                restarts_last_hour: 3,
                max_per_hour: Some(3),
                shadow: false,
                cooldown_until: None,
            },
            track: HealthTrack {
                failed: 4,
                restarts: 3,
                verified: 2,
                escalated: 1,
                shadow: 0,
                recovered: 0,
            },
        };
        expect![[r#"
            health: http://127.0.0.1:8080/healthz ESCALATED: a person must act; nothing is restarted until it is healthy again, probed 2 s ago
              restart: 3 in the last hour (at most 3): systemctl restart app
              track record: 3 restarts, 2 verified, 1 escalated, 0 shadow; 4 failures seen, 0 recovered without one
        "#]]
        .assert_eq(&health_text(&status, 100.0));
        let mut waiting = status.clone();
        waiting.watch.phase = "watching".into();
        waiting.watch.cooldown_until = Some(145.0);
        expect![[r#"
            health: http://127.0.0.1:8080/healthz failing (7 in a row: answered 503); waiting out the cool-down: the next restart in 45 s, probed 2 s ago
              restart: 3 in the last hour (at most 3): systemctl restart app
              track record: 3 restarts, 2 verified, 1 escalated, 0 shadow; 4 failures seen, 0 recovered without one
        "#]]
        .assert_eq(&health_text(&waiting, 100.0));
    }

    #[test]
    fn trust_shows_each_bounded_actions_record_and_its_last_setback() {
        use crate::api::Setback;
        let restart = ActionTrack {
            action: "restart".into(),
            attempts: 7,
            verified: 5,
            escalated: 2,
            shadow: 0,
            refused: 0,
            last_setback: Some(Setback {
                at: 1_764_000_000.0,
                reason: "not_verified".into(),
                why: "the health check did not pass within 30 s of the restart".into(),
            }),
        };
        let never = ActionTrack {
            action: "flag_off".into(),
            attempts: 0,
            verified: 0,
            escalated: 0,
            shadow: 0,
            refused: 2,
            last_setback: None,
        };
        expect![[r#"
            action             attempts verified escalated shadow refused  last setback
            restart                   7        5         2      0       0  2025-11-24 16:00:00 UTC (unix 1764000000): the restart did not help (the health check did not pass within 30 s of the restart)
            flag_off                  0        0         0      0       2  none
        "#]].assert_eq(&actions_text(&[restart, never]));
    }
}
