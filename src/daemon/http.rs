//! The HTTP API: deploy notifications, change states with their evidence, pushed observations
//! and status. Every request needs a bearer token; without one nothing is read or changed. The
//! token says who is asking (`gate::roles::Role`), and each endpoint checks that role against
//! what it does before doing anything.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::engine::{judge, ChangeRequest, Engine, ProposalRequest};
use crate::gate::roles::{Action, Role};
use crate::input;

/// Largest request body accepted: notifications are small, pushed batches are bounded.
pub const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct Api {
    pub engine: Arc<Mutex<Engine>>,
    /// SHA-256 of each token and whose it is: requests are compared by hash, in constant time.
    pub tokens: Vec<([u8; 32], Role)>,
    pub clock: fn() -> f64,
}

/// An error as the API answers it: a status and a sentence.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<super::engine::EngineError> for ApiError {
    fn from(e: super::engine::EngineError) -> Self {
        use super::engine::EngineError as E;
        let status = match &e {
            E::Busy(_) | E::Conflict(_) => Some(StatusCode::CONFLICT),
            E::BadRequest(_) => Some(StatusCode::BAD_REQUEST),
            E::Forbidden(_) => Some(StatusCode::FORBIDDEN),
            E::NotFound(_) => Some(StatusCode::NOT_FOUND),
            _ => None,
        };
        if let Some(status) = status {
            return ApiError(status, e.to_string());
        }
        // Internal details stay in the daemon's log; the caller learns that it failed.
        eprintln!("guardian: API request failed: {e}");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: the request was not carried out (see the daemon's log)".into(),
        )
    }
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn router(api: Api) -> Router {
    // Approval links from the email carry their own one-time credential: no bearer token.
    let links = Router::new()
        .route("/v1/links/:secret", get(link_page).post(use_link))
        .layer(DefaultBodyLimit::max(4096))
        .with_state(api.clone());
    let authed = Router::new()
        .route("/v1/changes", post(create_change).get(list_changes))
        .route("/v1/changes/:id", get(get_change))
        .route("/v1/observations", post(post_observations))
        .route("/v1/status", get(status))
        .route("/v1/proposals", post(create_proposal).get(list_proposals))
        .route("/v1/proposals/:id", get(get_proposal))
        .route("/v1/proposals/:id/approve", post(approve_proposal))
        .route("/v1/proposals/:id/reject", post(reject_proposal))
        .route("/v1/trust", get(trust))
        .route("/v1/pause", post(pause))
        .route("/v1/resume", post(resume))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint: see README.md for the API".into(),
            )
        })
        .layer(middleware::from_fn_with_state(api.clone(), authorize))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api);
    links.merge(authed)
}

async fn authorize(State(api): State<Api>, mut request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(hash_token);
    match presented.map(|hash| role_of(&api.tokens, &hash)) {
        Some(Some(role)) => {
            request.extensions_mut().insert(role);
            next.run(request).await
        }
        Some(None) => ApiError(
            StatusCode::UNAUTHORIZED,
            "the bearer token is not valid".into(),
        )
        .into_response(),
        None => ApiError(
            StatusCode::UNAUTHORIZED,
            "missing \"Authorization: Bearer <token>\" (the token is in the file named by \
             [daemon] token_file)"
                .into(),
        )
        .into_response(),
    }
}

/// Whose token this is. Every token is compared, whichever matches, so timing says nothing
/// about which one (or how much of one) was right.
fn role_of(tokens: &[([u8; 32], Role)], presented: &[u8; 32]) -> Option<Role> {
    let mut found = None;
    for (hash, role) in tokens {
        if constant_time_eq(hash, presented) {
            found = Some(role.clone());
        }
    }
    found
}

/// Refuses, with 403 and a sentence, what this role may not do.
pub fn allow(api: &Api, role: &Role, action: Action) -> Result<(), ApiError> {
    if role.may(action) {
        return Ok(());
    }
    // On the record: an agent trying to approve its own change is worth knowing about.
    lock(api).refused(role, &format!("{action:?}"), (api.clock)());
    let what = match action {
        Action::Read => "read guardian's state",
        Action::Propose => "submit proposals",
        Action::Decide => "approve or reject proposals",
        Action::Notify => "notify deploys",
        Action::Observe => "push observations",
        Action::Pause => "pause or resume unattended deploys",
    };
    Err(ApiError(
        StatusCode::FORBIDDEN,
        format!("the {role} token may not {what}"),
    ))
}

/// Compares two digests without an early exit, so timing says nothing about the token.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn lock(api: &Api) -> std::sync::MutexGuard<'_, Engine> {
    // A panic while holding the lock leaves the engine as it was between two operations,
    // which are each complete: keep serving rather than failing every request after it.
    api.engine.lock().unwrap_or_else(|p| p.into_inner())
}

async fn create_change(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    body: Bytes,
) -> Result<Response, ApiError> {
    allow(&api, &role, Action::Notify)?;
    let request: ChangeRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("bad change notification: {e}"),
        )
    })?;
    request
        .validate()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let record = lock(&api).notify(&request, (api.clock)())?;
    let location = format!("/v1/changes/{}", record.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(record),
    )
        .into_response())
}

async fn get_change(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    allow(&api, &role, Action::Read)?;
    let view = lock(&api).change(&id)?;
    match view {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no change with id {id:?}"),
        )),
    }
}

async fn list_changes(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
) -> Result<Response, ApiError> {
    allow(&api, &role, Action::Read)?;
    Ok(Json(lock(&api).recent(50)?).into_response())
}

async fn post_observations(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    body: Bytes,
) -> Result<Response, ApiError> {
    allow(&api, &role, Action::Observe)?;
    // Each element is read as the JSON-lines reader reads a line; the first bad one refuses the
    // whole batch, so a partly applied batch never happens.
    let bad = |e: String| ApiError(StatusCode::BAD_REQUEST, e);
    let items: Vec<Box<serde_json::value::RawValue>> =
        serde_json::from_slice(&body).map_err(|e| {
            bad(format!(
                "the body must be a JSON array of observations: {e}"
            ))
        })?;
    let events = items
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            input::jsonl::parse_line(raw.get()).map_err(|e| bad(format!("observation {i}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    lock(&api).observe(&events);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "accepted": events.len() })),
    )
        .into_response())
}

async fn status(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
) -> Result<Response, ApiError> {
    allow(&api, &role, Action::Read)?;
    let now = (api.clock)();
    Ok(Json(lock(&api).status(now)?).into_response())
}

async fn create_proposal(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    body: Bytes,
) -> Result<Response, ApiError> {
    allow(&api, &role, Action::Propose)?;
    let request: ProposalRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad proposal: {e}")))?;
    // git runs for the proposal (a scratch apply in guardian's clone) before the engine's lock
    // is taken, so it can never hold up a tick or a rollback; the lock is then held only to
    // judge (pure) and store.
    let clone = lock(&api).proposal_clone();
    let judged = {
        let request = request.clone();
        tokio::task::spawn_blocking(move || judge(clone.as_deref(), &request))
            .await
            .map_err(|e| {
                eprintln!("guardian: judging a proposal failed: {e}");
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error: the proposal was not judged (see the daemon's log)".into(),
                )
            })??
    };
    let record = lock(&api).propose(&role, &request, judged, (api.clock)())?;
    let location = format!("/v1/proposals/{}", record.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(record),
    )
        .into_response())
}

async fn list_proposals(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
) -> Result<Response, ApiError> {
    allow(&api, &role, Action::Read)?;
    Ok(Json(lock(&api).proposals(100)?).into_response())
}

async fn get_proposal(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    allow(&api, &role, Action::Read)?;
    Ok(Json(lock(&api).proposal(&id)?).into_response())
}

/// A person's decision on a proposal: the diff's hash they decided on, and why.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionRequest {
    diff_sha256: String,
    #[serde(default)]
    why: Option<String>,
}

async fn decide(
    api: Api,
    role: Role,
    id: String,
    body: Bytes,
    approve: bool,
) -> Result<Response, ApiError> {
    allow(&api, &role, Action::Decide)?;
    let request: DecisionRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("bad decision: {e} (send {{\"diff_sha256\": ..., \"why\": ...}})"),
        )
    })?;
    let why = request
        .why
        .as_deref()
        .map(str::trim)
        .filter(|w| !w.is_empty());
    if !approve && why.is_none() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a rejection needs \"why\"".into(),
        ));
    }
    if why.is_some_and(|w| w.chars().count() > 2000) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "\"why\" must be at most 2000 characters".into(),
        ));
    }
    let record = lock(&api).decide(
        &role,
        &id,
        approve,
        request.diff_sha256.trim(),
        why,
        (api.clock)(),
    )?;
    Ok(Json(record).into_response())
}

async fn approve_proposal(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    decide(api, role, id, body, true).await
}

async fn reject_proposal(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    decide(api, role, id, body, false).await
}

async fn trust(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
) -> Result<Response, ApiError> {
    allow(&api, &role, Action::Read)?;
    Ok(Json(lock(&api).trust()?).into_response())
}

/// Text made safe inside HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <meta name=\"referrer\" content=\"no-referrer\"></head>\
         <body style=\"font-family: sans-serif; max-width: 60em; margin: 2em auto\">\
         <h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

fn link_error(e: super::engine::EngineError) -> Response {
    let api = ApiError::from(e);
    page(
        api.0,
        "This link cannot be used",
        &format!("<p>{}</p>", escape(&api.1)),
    )
}

/// The page an approval link opens: what would be decided, and a button to do it. Opening it
/// decides nothing (mail scanners open links); only the button's POST does.
async fn link_page(State(api): State<Api>, Path(secret): Path<String>) -> Response {
    let now = (api.clock)();
    let (grant, view) = match lock(&api).link_page(&secret, now) {
        Ok(x) => x,
        Err(e) => return link_error(e),
    };
    let p = &view.record;
    let body = format!(
        "<p><b>{action}</b> proposal <code>{id}</code> ({pattern}, proposed by {proposer}): \
         {summary}</p><p>Decision of the policy: <b>{decision}</b>, risk {risk}/100. \
         This link is for the diff with SHA-256 <code>{hash}</code> only, works once, and \
         expires at {expires}.</p>\
         <form method=\"post\"><button type=\"submit\">{action} this diff</button></form>\
         <h2>The diff</h2><pre>{patch}</pre>",
        action = if grant.action == "approve" {
            "Approve"
        } else {
            "Reject"
        },
        id = escape(&p.id),
        pattern = escape(&p.pattern),
        proposer = escape(&p.proposer),
        summary = escape(&p.summary),
        decision = escape(&p.decision),
        risk = p.assessment["risk"]["score"],
        hash = escape(&grant.diff_hash),
        expires = escape(&crate::mail::when(grant.expires_at)),
        patch = escape(&view.patch),
    );
    page(StatusCode::OK, &format!("guardian: {}", p.id), &body)
}

async fn use_link(State(api): State<Api>, Path(secret): Path<String>) -> Response {
    let now = (api.clock)();
    let result = lock(&api).use_link(&secret, now);
    match result {
        Ok(p) => page(
            StatusCode::OK,
            &format!("guardian: {} is {}", p.id, p.state),
            &format!(
                "<p>Recorded on the audit trail as decided by {} for the diff with SHA-256 \
                 <code>{}</code>.</p>",
                escape(p.decided_by.as_deref().unwrap_or("?")),
                escape(&p.diff_hash)
            ),
        ),
        Err(e) => link_error(e),
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PauseRequest {
    #[serde(default)]
    why: Option<String>,
}

async fn switch(api: Api, role: Role, body: Bytes, paused: bool) -> Result<Response, ApiError> {
    allow(&api, &role, Action::Pause)?;
    let request: PauseRequest = if body.is_empty() {
        PauseRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("bad request: {e} (send {{\"why\": ...}})"),
            )
        })?
    };
    let why = request
        .why
        .as_deref()
        .map(str::trim)
        .filter(|w| !w.is_empty());
    if paused && why.is_none() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "pausing needs \"why\": it goes on the audit trail".into(),
        ));
    }
    let state = lock(&api).pause(&role, paused, why, (api.clock)())?;
    Ok(Json(json!({
        "paused": state.is_some(),
        "by": state.as_ref().map(|s| &s.0),
        "why": state.as_ref().map(|s| &s.1),
    }))
    .into_response())
}

async fn pause(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    body: Bytes,
) -> Result<Response, ApiError> {
    switch(api, role, body, true).await
}

async fn resume(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    body: Bytes,
) -> Result<Response, ApiError> {
    switch(api, role, body, false).await
}
