//! `POST /v1/webhooks/sentry`: Sentry's integration platform delivering issues, errors and
//! alerts. No bearer token (Sentry cannot send one): each delivery is signed with the
//! integration's client secret instead (`sentry::verify`), checked before anything else is
//! read. Refused deliveries share the bucket of requests without a token, so forgeries cannot
//! take the CPU; Sentry's own deliveries do not, so an error storm is heard in full.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};

use super::http::{anonymous_over, Api, ApiError, MAX_BODY_BYTES};
use crate::api::SentryReceipt;
use crate::sentry::{self, Headers, Notice, Refused};
use crate::store::Delivered;

/// What the handler needs of `[daemon.sentry]`: the secret, read once at start.
pub struct SentryHook {
    pub client_secret: Vec<u8>,
    pub max_age_secs: u32,
    /// When a refusal was last logged, and how many went unlogged since: one line a minute
    /// at most, so forged deliveries cannot flood the journal.
    warned: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
    /// The latest signed bodies and what became of them, so that one sent again (a replay, a
    /// retry) is answered from memory: no database transaction, no parse, and the shared rate
    /// of refused requests applies.
    recent: std::sync::Mutex<Recent>,
}

/// Bodies remembered in memory (the store remembers them all, for a day or 90 days).
const RECENT_BODIES: usize = 4096;

#[derive(Default)]
struct Recent {
    outcome: std::collections::HashMap<String, Option<String>>,
    order: std::collections::VecDeque<String>,
}

impl Recent {
    /// `None`: processed; `Some(why)`: refused for `why`.
    fn remember(&mut self, body_sha256: &str, refused: Option<String>) {
        if self
            .outcome
            .insert(body_sha256.to_owned(), refused)
            .is_none()
        {
            self.order.push_back(body_sha256.to_owned());
            if self.order.len() > RECENT_BODIES {
                if let Some(oldest) = self.order.pop_front() {
                    self.outcome.remove(&oldest);
                }
            }
        }
    }
}

impl SentryHook {
    /// Reads the client secret from its file (its first line; a secret file others can read
    /// is warned about, as a token file is).
    pub fn load(settings: &crate::config::SentrySettings) -> Result<SentryHook, String> {
        let file = &settings.client_secret_file;
        let text = std::fs::read_to_string(file).map_err(|e| {
            format!(
                "[daemon.sentry] client_secret_file: cannot read {}: {e}",
                file.display()
            )
        })?;
        let secret = text.lines().next().unwrap_or_default().trim().to_owned();
        if secret.len() < 16 {
            return Err(format!(
                "[daemon.sentry] client_secret_file: {} holds {} characters on its first line; \
                 put the integration's Client Secret there (Sentry: Settings, Developer \
                 Settings, the integration, Credentials), which signs every delivery",
                file.display(),
                secret.len()
            ));
        }
        if let Ok(meta) = std::fs::metadata(file) {
            use std::os::unix::fs::PermissionsExt as _;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "{} (Sentry's client secret) can be read by other users (mode {:o}); \
                     chmod 600 it, or hand it over as a systemd credential",
                    file.display(),
                    meta.permissions().mode() & 0o777
                );
            }
        }
        Ok(SentryHook {
            client_secret: secret.into_bytes(),
            max_age_secs: settings.max_age_secs,
            warned: Default::default(),
            recent: Default::default(),
        })
    }

    /// Logs a refused delivery: the first, then at most one line a minute with the count.
    fn warn(&self, why: &str) {
        let Ok(mut warned) = self.warned.lock() else {
            return;
        };
        let (last, unlogged) = &mut *warned;
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t).as_secs() < 60) {
            *unlogged += 1;
            return;
        }
        let more = match *unlogged {
            0 => String::new(),
            n => format!(" ({n} more refused in the minute before, not logged one by one)"),
        };
        tracing::warn!("sentry: delivery refused: {why}{more}");
        *last = Some(now);
        *unlogged = 0;
    }
}

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/v1/webhooks/sentry", post(sentry_delivery))
        // Not the bearer-token router's "missing Authorization" for a mistyped webhook URL.
        .route("/v1/webhooks/sentry/", any(no_such_webhook))
        .route("/v1/webhooks/*rest", any(no_such_webhook))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

async fn no_such_webhook() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such webhook: Sentry's is POST /v1/webhooks/sentry (no trailing slash)".into(),
    )
}

async fn sentry_delivery(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(hook) = api.sentry.clone() else {
        return ApiError(
            StatusCode::NOT_FOUND,
            "Sentry's webhooks are not configured here: set [daemon.sentry] client_secret_file"
                .into(),
        )
        .into_response();
    };
    match receive(&api, &hook, &headers, body).await {
        Ok(answer) => answer,
        Err(e) => e.into_response(),
    }
}

async fn receive(
    api: &Api,
    hook: &Arc<SentryHook>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let now = (api.clock)();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let sent = Headers {
        resource: header("sentry-hook-resource"),
        request_id: header("request-id"),
        timestamp: header("sentry-hook-timestamp"),
        signature: header("sentry-hook-signature"),
    };
    let verified = match sentry::verify(&hook.client_secret, &sent, &body, now, hook.max_age_secs) {
        Ok(v) => v,
        Err(refused) => {
            if let Some(too_many) = anonymous_over(api) {
                return Ok(too_many);
            }
            hook.warn(&refused.to_string());
            let status = match refused {
                Refused::NoSignature | Refused::BadSignature => StatusCode::UNAUTHORIZED,
                _ => StatusCode::BAD_REQUEST,
            };
            return Err(ApiError(status, refused.to_string()));
        }
    };
    let remembered = hook
        .recent
        .lock()
        .ok()
        .and_then(|r| r.outcome.get(&verified.body_sha256).cloned());
    if let Some(outcome) = remembered {
        if let Some(too_many) = anonymous_over(api) {
            return Ok(too_many);
        }
        return Err(match outcome {
            None => ApiError(
                StatusCode::CONFLICT,
                "this delivery was processed already: a replay (or a retry) is not processed \
                 again"
                    .into(),
            ),
            Some(why) => ApiError(StatusCode::BAD_REQUEST, why),
        });
    }
    let remember = |refused: Option<String>| {
        if let Ok(mut recent) = hook.recent.lock() {
            recent.remember(&verified.body_sha256, refused);
        }
    };
    let notice = match sentry::read(&verified.resource, &body, now) {
        Ok(notice) => notice,
        Err(e) => {
            let why = e.to_string();
            remember(Some(why.clone()));
            if let Some(too_many) = anonymous_over(api) {
                return Ok(too_many);
            }
            hook.warn(&why);
            return Err(ApiError(StatusCode::BAD_REQUEST, why));
        }
    };
    let receipt = SentryReceipt {
        resource: verified.resource.clone(),
        issue: match &notice {
            Notice::Issue { issue, .. } => Some(issue.id.clone()),
            Notice::Error(event) | Notice::Alert { event, .. } => Some(event.issue_id.clone()),
            Notice::Unused { .. } => None,
        },
        used: !matches!(notice, Notice::Unused { .. }),
    };
    let body_sha256 = verified.body_sha256.clone();
    let delivered =
        super::http::with_engine(api, move |e| e.sentry_delivery(&verified, &notice, now)).await?;
    if let Ok(mut recent) = hook.recent.lock() {
        recent.remember(&body_sha256, None);
    }
    match delivered {
        Delivered::New => Ok((StatusCode::ACCEPTED, Json(receipt)).into_response()),
        Delivered::Duplicate { received_at } => {
            if let Some(too_many) = anonymous_over(api) {
                return Ok(too_many);
            }
            Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "this delivery was processed at {}: a replay (or a retry) is not \
                     processed again",
                    crate::report::units::when(received_at)
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::Router;
    use serde_json::Value;
    use tower::ServiceExt as _;

    use crate::daemon::http::tests::{api_with, send, ADMIN, T0};
    use crate::sentry::testing::payload;
    use crate::sentry::webhook::sign;

    const SECRET: &str = "9f2d7c1e5a3b8d6f0e4c2a1b9d8e7f6a";

    /// guardian with `[daemon.sentry]`, its clock at `T0 + 1`.
    fn api(dir: &std::path::Path) -> Router {
        let secret = dir.join("sentry-secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        api_with(
            dir,
            &format!("[daemon.sentry]\nclient_secret_file = {secret:?}\n"),
        )
    }

    /// Posts `body` as Sentry would: `signature` (None: signed with the secret), sent at `at`.
    async fn deliver(
        api: &Router,
        resource: &str,
        request_id: &str,
        body: &[u8],
        signature: Option<&str>,
        at: &str,
    ) -> (StatusCode, Value) {
        let signature = signature.map_or_else(|| sign(SECRET.as_bytes(), body), str::to_owned);
        let request = axum::http::Request::builder()
            .method("POST")
            .uri("/v1/webhooks/sentry")
            .header("content-type", "application/json")
            .header("request-id", request_id)
            .header("sentry-hook-resource", resource)
            .header("sentry-hook-timestamp", at)
            .header("sentry-hook-signature", signature)
            .body(Body::from(body.to_vec()))
            .unwrap();
        let response = api.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    async fn new_issues(api: &Router) -> Vec<String> {
        let (_, status) = send(api, "GET", "/v1/status", Some(ADMIN), "").await;
        status["sentry"]["new_issues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_signed_delivery_is_taken_once_and_the_issue_shows_in_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(dir.path());
        let now = &format!("{}", T0 as i64);
        let body = payload("issue_created.json");
        let (status, receipt) = deliver(&api, "issue", "r-1", &body, None, now).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{receipt}");
        assert_eq!(
            receipt,
            serde_json::json!({"resource": "issue", "issue": "4504981122", "used": true})
        );
        assert_eq!(new_issues(&api).await, ["4504981122"]);
        // The same body again, whatever its request id and timestamp say: not processed again,
        // and answered from memory; sent on and on, it is held to the rate of refusals.
        let (status, answer) = deliver(&api, "issue", "r-2", &body, None, now).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            answer["error"],
            "this delivery was processed already: a replay (or a retry) is not processed again"
        );
        let mut answers = std::collections::BTreeMap::new();
        for i in 0..150 {
            let (status, _) = deliver(&api, "issue", &format!("r-{i}"), &body, None, now).await;
            *answers.entry(status.as_u16()).or_insert(0) += 1;
        }
        assert!(answers.get(&429).is_some_and(|&n| n >= 40), "{answers:?}");
        assert_eq!(new_issues(&api).await, ["4504981122"]);
        for (resource, file) in [
            ("error", "error_created.json"),
            ("event_alert", "event_alert_triggered.json"),
        ] {
            let (status, receipt) = deliver(&api, resource, file, &payload(file), None, now).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{resource}: {receipt}");
        }
        let (status, receipt) = deliver(
            &api,
            "installation",
            "r-9",
            br#"{"action":"created","data":{}}"#,
            None,
            now,
        )
        .await;
        assert_eq!(
            (status, receipt["used"].clone()),
            (StatusCode::ACCEPTED, Value::Bool(false))
        );
    }

    #[tokio::test]
    async fn forged_stale_or_malformed_deliveries_are_refused_and_nothing_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(dir.path());
        let now = &format!("{}", T0 as i64);
        let body = payload("issue_created.json");
        let forged = sign(b"not the client secret", &body);
        /// Resource, body, signature (None: the right one), timestamp; the answer.
        type Case<'a> = (
            &'a str,
            &'a [u8],
            Option<&'a str>,
            &'a str,
            StatusCode,
            &'a str,
        );
        let cases: [Case; 5] = [
            ("issue", &body, Some(&forged), now, StatusCode::UNAUTHORIZED,
             "Sentry-Hook-Signature is not the HMAC-SHA256 of this body under the client secret in [daemon.sentry] client_secret_file"),
            ("issue", &body, Some(""), now, StatusCode::UNAUTHORIZED,
             "Sentry-Hook-Signature is not the HMAC-SHA256 of this body under the client secret in [daemon.sentry] client_secret_file"),
            ("issue", &body, None, "1763999000", StatusCode::BAD_REQUEST,
             "stale delivery: Sentry-Hook-Timestamp is 1001 s old, more than max_age_secs (300 s) in [daemon.sentry]"),
            ("issue", br#"{"action":"created","data":{"issue":{"id":"1"}}}"#, None, now, StatusCode::BAD_REQUEST,
             "the issue delivery does not read: at data.issue.firstSeen: missing"),
            ("error", br#"{"action":"created","data":{"error":"#, None, now, StatusCode::BAD_REQUEST,
             "the error delivery does not read: at data.error: EOF while parsing a value at line 1 column 36"),
        ];
        for (resource, body, signature, at, expected_status, message) in cases {
            let (status, answer) = deliver(&api, resource, "r-1", body, signature, at).await;
            assert_eq!(
                (status, answer["error"].as_str().unwrap()),
                (expected_status, message)
            );
        }
        assert!(new_issues(&api).await.is_empty());
        // The genuine delivery still goes through: the refused ones were not remembered.
        let (status, _) = deliver(&api, "issue", "r-1", &body, None, now).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }

    #[tokio::test]
    async fn a_mistyped_webhook_url_is_told_so_not_asked_for_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(dir.path());
        let (status, answer) = send(&api, "POST", "/v1/webhooks/sentry/", None, "{}").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            answer["error"],
            "no such webhook: Sentry's is POST /v1/webhooks/sentry (no trailing slash)"
        );
    }

    #[tokio::test]
    async fn without_the_sentry_section_the_endpoint_says_how_to_configure_it() {
        let dir = tempfile::tempdir().unwrap();
        let api = api_with(dir.path(), "");
        let (status, answer) =
            deliver(&api, "issue", "r-1", b"{}", None, &format!("{}", T0 as i64)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            answer["error"],
            "Sentry's webhooks are not configured here: set [daemon.sentry] client_secret_file"
        );
    }
}
