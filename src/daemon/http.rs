//! The HTTP API: deploy notifications, change states with their evidence, pushed observations
//! and status. Every request needs a bearer token; without one nothing is read or changed (but
//! `/metrics` and `/healthz`, the status page's sign-in form in `daemon::page`, and approval
//! links, which carry a credential of their own). The token says who is asking (`gate::roles::Role`), and each endpoint checks that role against
//! what it does before doing anything.
//!
//! No request can hold up the decision loop. Reads go to read-only connections of their own
//! (`Reads`; the database is in WAL mode) on blocking threads, at most a few at a time, and
//! ask the engine's owner (`daemon::owner`) only for what lives in memory. Writes are messages
//! to the owner, answered between two ticks; no handler holds a lock or a runtime worker while
//! it waits. Every token but the operator's has a rate
//! for reads and one for writes (`[daemon.limits]`); past it the answer is 429 with
//! `Retry-After`. Refusals (403, 429) go on the audit trail counted per token and window
//! (`daemon::refusals`), so a flood cannot fill the disk.
//!
//! Every request and answer is a type of `crate::api`, which the CLI shares.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use governor::clock::Clock as _;
use governor::{DefaultDirectRateLimiter, Quota};
use sha2::{Digest, Sha256};

use super::engine::{judge, Engine, EngineError, FlagRefused};
use super::owner::{self, Owner};
use super::refusals::{Refusal, Refusals};
use crate::api::{
    Accepted, ChangeRecord, ChangeRequest, ChangeView, DecisionRequest, ErrorAnswer,
    FlagOffRequest, PatternTrust, PauseRequest, PauseState, ProposalRecord, ProposalRequest,
    ProposalView, Status, WhoAmI,
};
use crate::config::Limits;
use crate::display;
use crate::gate::roles::{Action, Role};
use crate::input;
use crate::store::Store;

/// Largest request body accepted: notifications are small, pushed batches are bounded.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Reads served at the same time; more wait their turn without holding anything.
pub const READ_CONCURRENCY: usize = 4;
/// Proposals judged at the same time (each a `git apply` in a scratch index, which can take
/// seconds and hundreds of megabytes on a large patch); more wait their turn.
pub const JUDGE_CONCURRENCY: usize = 2;
/// The most proposal bytes a token may send at once, after a quiet spell: twice the largest
/// body accepted, so any single proposal fits.
const PROPOSAL_BYTES_BURST: u32 = 2 * MAX_BODY_BYTES as u32;

#[derive(Clone)]
pub struct Api {
    /// The engine's owner: every write, and every read of what lives only in memory.
    pub owner: Owner<Engine>,
    /// Each token: the SHA-256 it is compared by (in constant time), whose it is, and its
    /// rates (`None`: the operator's, not limited).
    pub tokens: Arc<Vec<Token>>,
    pub clock: fn() -> f64,
    pub reads: Arc<Reads>,
    pub refusals: Arc<Refusals>,
    /// See [`JUDGE_CONCURRENCY`].
    pub judging: Arc<tokio::sync::Semaphore>,
    /// One bucket for every request that comes without a valid token (approval links, wrong
    /// or missing tokens): see [`anonymous_limiter`].
    pub anonymous: Arc<DefaultDirectRateLimiter>,
    /// Sentry's webhooks (`[daemon.sentry]`), when configured.
    pub sentry: Option<Arc<super::webhooks::SentryHook>>,
    /// What `/metrics` counts at the API's edge, and the decision loop's last tick.
    pub metrics: Arc<super::metrics::Metrics>,
    /// Whether `/metrics` and `/healthz` are served here, beside the API (no
    /// `[daemon] metrics_listen`), or only on their own listener.
    pub metrics_on_api: bool,
    /// The status page's signed-in browsers (`daemon::page`).
    pub sessions: Arc<super::sessions::Sessions>,
    /// The service's name, for the page before sign-in.
    pub service: Arc<str>,
}

/// Requests a second without a valid token, all clients together, and their burst: far more
/// than people clicking approval links make, far fewer than a flood that would take the CPU a
/// watch's latency is measured on.
const ANONYMOUS_PER_SEC: u32 = 20;
const ANONYMOUS_BURST: u32 = 100;

/// The shared bucket of requests without a valid token.
pub fn anonymous_limiter() -> Arc<DefaultDirectRateLimiter> {
    let n = |v: u32| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN);
    Arc::new(DefaultDirectRateLimiter::direct(
        Quota::per_second(n(ANONYMOUS_PER_SEC)).allow_burst(n(ANONYMOUS_BURST)),
    ))
}

/// 429 when requests without a valid token are over their shared rate.
pub(super) fn anonymous_over(api: &Api) -> Option<Response> {
    api.anonymous.check().err().map(|_| {
        over_rate(
            1,
            &format!(
                "too many requests without a valid token: {ANONYMOUS_PER_SEC} a second are \
                 served, all clients together"
            ),
        )
    })
}

/// Holds approval-link requests to the shared rate of requests without a token.
async fn anonymous_rate(State(api): State<Api>, request: Request, next: Next) -> Response {
    match anonymous_over(&api) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// One API token.
pub struct Token {
    pub hash: [u8; 32],
    pub role: Role,
    pub limits: Option<TokenLimits>,
}

impl Token {
    /// A token for `role`; every role but the operator's is held to `limits`.
    pub fn new(hash: [u8; 32], role: Role, limits: &Limits) -> Token {
        let limits = (role != Role::Admin).then(|| TokenLimits::new(limits));
        Token { hash, role, limits }
    }
}

/// A token's two buckets (GCRA, from `governor`), and the rates they hold it to, for messages.
pub struct TokenLimits {
    reads: DefaultDirectRateLimiter,
    writes: DefaultDirectRateLimiter,
    proposal_bytes: DefaultDirectRateLimiter,
    rates: Limits,
}

impl TokenLimits {
    pub fn new(limits: &Limits) -> TokenLimits {
        let n = |v: u32| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN);
        TokenLimits {
            reads: DefaultDirectRateLimiter::direct(
                Quota::per_second(n(limits.reads_per_sec)).allow_burst(n(limits.reads_burst)),
            ),
            writes: DefaultDirectRateLimiter::direct(
                Quota::per_minute(n(limits.writes_per_min)).allow_burst(n(limits.writes_burst)),
            ),
            proposal_bytes: DefaultDirectRateLimiter::direct(
                Quota::per_hour(n(limits.proposal_bytes_per_hour))
                    .allow_burst(n(PROPOSAL_BYTES_BURST)),
            ),
            rates: *limits,
        }
    }

    /// `Ok` when a proposal of `bytes` may be taken now; else how many whole seconds to wait,
    /// and the rate it is over.
    fn check_proposal_bytes(&self, bytes: usize) -> Result<(), (u64, String)> {
        let rate = format!(
            "{} KiB of proposals an hour",
            self.rates.proposal_bytes_per_hour / 1024
        );
        let n =
            NonZeroU32::new(u32::try_from(bytes).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        match self.proposal_bytes.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.proposal_bytes.clock().now());
                Err((wait.as_secs() + u64::from(wait.subsec_nanos() > 0), rate))
            }
            // Larger than the bucket: the body limit makes this impossible; refuse for an hour.
            Err(_) => Err((3600, rate)),
        }
    }

    /// `Ok` when a request of this kind may go now; else how many whole seconds to wait, and
    /// the rate it is over.
    pub(super) fn check(&self, write: bool) -> Result<(), (u64, String)> {
        let (bucket, rate) = if write {
            (
                &self.writes,
                format!(
                    "{} writes a minute ({} at once)",
                    self.rates.writes_per_min, self.rates.writes_burst
                ),
            )
        } else {
            (
                &self.reads,
                format!(
                    "{} reads a second ({} at once)",
                    self.rates.reads_per_sec, self.rates.reads_burst
                ),
            )
        };
        bucket.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(bucket.clock().now());
            (wait.as_secs() + u64::from(wait.subsec_nanos() > 0), rate)
        })
    }
}

/// Read-only connections to the state database for the API's reads: each read runs on a
/// blocking thread with a connection of its own, at most [`READ_CONCURRENCY`] at a time, so
/// no read waits for the engine's lock or holds it.
pub struct Reads {
    db: PathBuf,
    idle: Mutex<Vec<Store>>,
    permits: tokio::sync::Semaphore,
}

impl Reads {
    pub fn new(db: PathBuf) -> Reads {
        Reads {
            db,
            idle: Mutex::new(Vec::new()),
            permits: tokio::sync::Semaphore::new(READ_CONCURRENCY),
        }
    }

    /// Runs `read` with a read-only connection, off the runtime's workers.
    pub async fn run<T, F>(self: &Arc<Self>, read: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, EngineError> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(|_| busy())?;
        let reads = self.clone();
        let done = tokio::task::spawn_blocking(move || {
            let idle = reads.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let store = match idle {
                Some(store) => store,
                None => Store::open_read_only(&reads.db)?,
            };
            let result = read(&store);
            reads
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(store);
            result
        })
        .await;
        match done {
            Ok(result) => result.map_err(ApiError::from),
            Err(e) => {
                tracing::error!("an API read failed: {e}");
                Err(busy())
            }
        }
    }
}

fn busy() -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "guardian is stopping or could not run the request".into(),
    )
}

/// Runs `work` with the engine, on its owner's thread, and waits for the answer without
/// holding a runtime worker.
pub(super) async fn with_engine<T, F>(api: &Api, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut Engine) -> Result<T, EngineError> + Send + 'static,
{
    match api.owner.call(work).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(owner::Gone) => Err(busy()),
    }
}

/// What lives only in the engine's memory (the live report, the live status), copied on its
/// owner's thread.
pub(super) async fn in_memory<T, F>(api: &Api, read: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut Engine) -> T + Send + 'static,
{
    api.owner.call(read).await.map_err(|owner::Gone| busy())
}

/// Counts a refused request; its record is written at once when it opens a new window for its
/// token (by the engine's owner: the request does not wait for it).
/// Counts a refusal; the first of its window is on the audit trail before the refusal is
/// answered, so a crash right after cannot lose it. (The rest of a window are counted in memory
/// and written when it ends: a crash loses at most that minute's count.)
pub(super) async fn note_refusal(api: &Api, role: &Role, what: Refusal) {
    let now = (api.clock)();
    let reason = match what {
        Refusal::Forbidden(_) => "forbidden",
        Refusal::RateLimited => "rate_limited",
    };
    api.metrics.refused(&role.actor(), reason);
    if let Some(first) = api.refusals.note(&role.actor(), what, now) {
        let _ = api
            .owner
            .call(move |e| e.record_refusals(&[first], now))
            .await;
    }
}

/// An error as the API answers it: a status and a sentence ([`ErrorAnswer`]).
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorAnswer { error: self.1 })).into_response()
    }
}

/// 429 with the seconds to wait, for a token over its rate.
fn too_many(role: &Role, wait_secs: u64, rate: &str) -> Response {
    over_rate(
        wait_secs,
        &format!("too many requests: the {role} token may make {rate}"),
    )
}

/// 429 saying what rate was passed and, in `Retry-After` and in words, when to come back.
fn over_rate(wait_secs: u64, what: &str) -> Response {
    let wait = wait_secs.max(1);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, wait.to_string())],
        Json(ErrorAnswer {
            error: format!("{what}; try again in {wait} s"),
        }),
    )
        .into_response()
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
        tracing::error!("an API request failed: {e}");
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
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            anonymous_rate,
        ))
        .with_state(api.clone());
    let webhooks = super::webhooks::router(api.clone());
    // `/metrics` and `/healthz` come without a token (Prometheus, a liveness probe); here
    // only when they have no listener of their own (`[daemon] metrics_listen`).
    let metrics = match api.metrics_on_api {
        true => super::metrics::router(api.clone()),
        false => Router::new(),
    };
    // The status page signs in with a token once and keeps a session cookie; the API never
    // reads that cookie, so a browser's session cannot be used against the API.
    let page = super::page::router(api.clone());
    let authed = Router::new()
        .route("/v1/changes", post(create_change).get(list_changes))
        .route("/v1/changes/:id", get(get_change))
        .route("/v1/deploys", post(deploy_starting))
        .route("/v1/observations", post(post_observations))
        .route("/v1/status", get(status))
        .route("/v1/proposals", post(create_proposal).get(list_proposals))
        .route("/v1/proposals/check", post(check_proposal))
        .route("/v1/proposals/:id", get(get_proposal))
        .route("/v1/whoami", get(whoami))
        .route("/v1/deployed", get(deployed))
        .route("/v1/policy/paths", post(check_paths))
        .route("/v1/proposals/:id/approve", post(approve_proposal))
        .route("/v1/proposals/:id/reject", post(reject_proposal))
        .route("/v1/trust", get(trust))
        .route("/v1/trust/actions", get(trust_actions))
        .route("/v1/pause", post(pause))
        .route("/v1/resume", post(resume))
        .route("/v1/actions/flag_off", post(flag_off))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint: see README.md for the API".into(),
            )
        })
        .layer(middleware::from_fn_with_state(api.clone(), authorize))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api);
    links
        .merge(webhooks)
        .merge(metrics)
        .merge(page)
        .merge(authed)
}

async fn authorize(State(api): State<Api>, mut request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(hash_token);
    let found = presented.map(|hash| token_of(&api.tokens, &hash));
    let Some(Some(i)) = found else {
        if let Some(refused) = anonymous_over(&api) {
            api.metrics.refused("anonymous", "rate_limited");
            return refused;
        }
        api.metrics.refused("anonymous", "unauthorized");
        let why = if found.is_some() {
            "the bearer token is not valid"
        } else {
            "missing \"Authorization: Bearer <token>\" (the token is in the file named by \
             [daemon] token_file)"
        };
        return ApiError(StatusCode::UNAUTHORIZED, why.into()).into_response();
    };
    let token = &api.tokens[i];
    let write = !matches!(*request.method(), Method::GET | Method::HEAD);
    if let Some(Err((wait, rate))) = token.limits.as_ref().map(|l| l.check(write)) {
        note_refusal(&api, &token.role, Refusal::RateLimited).await;
        return too_many(&token.role, wait, &rate);
    }
    request.extensions_mut().insert(token.role.clone());
    request.extensions_mut().insert(TokenIndex(i));
    next.run(request).await
}

/// Which of [`Api::tokens`] a request came with.
#[derive(Clone, Copy)]
struct TokenIndex(usize);

/// Which token this is. Every token is compared, whichever matches, so timing says nothing
/// about which one (or how much of one) was right.
pub(super) fn token_of(tokens: &[Token], presented: &[u8; 32]) -> Option<usize> {
    let mut found = None;
    for (i, token) in tokens.iter().enumerate() {
        if constant_time_eq(&token.hash, presented) {
            found = Some(i);
        }
    }
    found
}

/// Refuses, with 403 and a sentence, what this role may not do.
pub async fn allow(api: &Api, role: &Role, action: Action) -> Result<(), ApiError> {
    if role.may(action) {
        return Ok(());
    }
    // On the record: an agent trying to approve its own change is worth knowing about.
    note_refusal(api, role, Refusal::Forbidden(format!("{action:?}"))).await;
    let what = match action {
        Action::Read => "read guardian's state",
        Action::Propose => "submit proposals",
        Action::Decide => "approve or reject proposals",
        Action::Notify => "notify deploys",
        Action::Observe => "push observations",
        Action::Pause => "pause or resume unattended deploys",
        Action::FlagOff => "turn feature flags off",
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

/// An answer with `201 Created` and where the new thing is.
type Created<T> = (StatusCode, [(header::HeaderName, String); 1], Json<T>);

fn created<T>(location: String, answer: T) -> Created<T> {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(answer),
    )
}

async fn deploy_starting(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
) -> Result<Json<crate::api::DeployStarting>, ApiError> {
    allow(&api, &role, Action::Notify).await?;
    let at = (api.clock)();
    let superseded = with_engine(&api, move |e| e.deploy_starting(at)).await?;
    Ok(Json(crate::api::DeployStarting { at, superseded }))
}

async fn create_change(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    body: Bytes,
) -> Result<Created<ChangeView>, ApiError> {
    allow(&api, &role, Action::Notify).await?;
    let request: ChangeRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("bad change notification: {e}"),
        )
    })?;
    request
        .validate()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    // The commit must be one guardian could revert: checked with git off the owner.
    if let Some(check) = in_memory(&api, |e| e.commit_check()).await? {
        let commit = request.commit.clone();
        tokio::task::spawn_blocking(move || check.run(&commit))
            .await
            .map_err(|_| busy())?
            .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    }
    let now = (api.clock)();
    let (view, started) = with_engine(&api, move |e| {
        let (record, started) = e.notify_change(&request, now)?;
        // With the live report, which says what baseline the change is judged against.
        let view = e
            .change(&record.id)?
            .unwrap_or(ChangeView { record, live: None });
        Ok((view, started))
    })
    .await?;
    let (status, location) = (
        // A canary widened: the watch it joined, not a new one.
        if started {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        format!("/v1/changes/{}", view.record.id),
    );
    Ok((status, [(header::LOCATION, location)], Json(view)))
}

async fn get_change(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
) -> Result<Json<ChangeView>, ApiError> {
    allow(&api, &role, Action::Read).await?;
    let live = {
        let id = id.clone();
        in_memory(&api, move |e| e.live_report(&id)).await?
    };
    let wanted = id.clone();
    let record = api.reads.run(move |s| Ok(s.get_change(&wanted)?)).await?;
    match record {
        Some(record) => Ok(Json(ChangeView { record, live })),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no change with id {:?}", display::line(&id)),
        )),
    }
}

async fn list_changes(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
) -> Result<Json<Vec<ChangeRecord>>, ApiError> {
    allow(&api, &role, Action::Read).await?;
    let recent = api.reads.run(|s| Ok(s.recent_changes(50)?)).await?;
    Ok(Json(recent))
}

async fn post_observations(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    allow(&api, &role, Action::Observe).await?;
    // Each element is read as the JSON-lines reader reads a line; the first bad one refuses the
    // whole batch, so a partly applied batch never happens.
    let bad = EngineError::BadRequest;
    let accepted = with_engine(&api, move |e| {
        // Parsed before the lock is taken, so a large batch holds it only while it is fed.
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
                input::jsonl::parse_line(raw.get())
                    .map_err(|e| bad(format!("observation {i}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        e.observe(&events);
        Ok(events.len())
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            accepted: accepted.await?,
        }),
    ))
}

async fn status(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
) -> Result<Json<Status>, ApiError> {
    allow(&api, &role, Action::Read).await?;
    let now = (api.clock)();
    let live = in_memory(&api, move |e| e.live_status(now)).await?;
    let mut status = api.reads.run(move |s| live.complete(s)).await?;
    status.last_tick = api.metrics.last_tick();
    Ok(Json(status))
}

async fn create_proposal(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    Extension(TokenIndex(token)): Extension<TokenIndex>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (request, judged) = match judge_request(&api, &role, token, &body).await? {
        Ok(judged) => judged,
        Err(refused) => return Ok(refused),
    };
    let now = (api.clock)();
    let record: ProposalRecord =
        with_engine(&api, move |e| e.propose(&role, &request, judged, now)).await?;
    api.metrics.proposed(&record.decision);
    Ok(created(format!("/v1/proposals/{}", record.id), record).into_response())
}

/// A proposal's request read and judged (`judge`: git and every rule that reads the change,
/// on a blocking thread, a few at a time), for `propose` and `check`; `Ok(Err(answer))` when
/// the token is over its proposal bytes.
async fn judge_request(
    api: &Api,
    role: &Role,
    token: usize,
    body: &Bytes,
) -> Result<Result<(ProposalRequest, super::engine::Judged), Response>, ApiError> {
    allow(api, role, Action::Propose).await?;
    if let Some(limits) = &api.tokens[token].limits {
        if let Err((wait, rate)) = limits.check_proposal_bytes(body.len()) {
            note_refusal(api, role, Refusal::RateLimited).await;
            return Ok(Err(too_many(role, wait, &rate)));
        }
    }
    // A few at a time: each judging is a git process that may take seconds and memory.
    let _judging = api.judging.acquire().await.map_err(|_| busy())?;
    let request: ProposalRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad proposal: {e}")))?;
    // git (a scratch apply in guardian's clone) and every rule that reads the change run on a
    // blocking thread, so however costly the patch they never hold up a tick or a rollback;
    // the engine's owner then only adds the ledger and the moment, and stores the decision.
    let kit = with_engine(api, |e| Ok(e.judging_kit())).await?;
    let judged = {
        let request = request.clone();
        tokio::task::spawn_blocking(move || judge(&kit, &request))
            .await
            .map_err(|e| {
                tracing::error!("judging a proposal failed: {e}");
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error: the proposal was not judged (see the daemon's log)".into(),
                )
            })??
    };
    Ok(Ok((request, judged)))
}

async fn check_proposal(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    Extension(TokenIndex(token)): Extension<TokenIndex>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (request, judged) = match judge_request(&api, &role, token, &body).await? {
        Ok(judged) => judged,
        Err(refused) => return Ok(refused),
    };
    let now = (api.clock)();
    let assessment = with_engine(&api, move |e| {
        e.check_proposal(&role, &request, judged, now)
    })
    .await?;
    Ok(Json(assessment).into_response())
}

/// "May I touch these paths?": the policy's answer per path, recorded nowhere.
async fn check_paths(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    body: Bytes,
) -> Result<Json<Vec<crate::api::PathCheck>>, ApiError> {
    allow(&api, &role, Action::Propose).await?;
    let request: crate::api::PathsRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad request: {e}")))?;
    Ok(Json(
        with_engine(&api, move |e| e.check_paths(&request.paths)).await?,
    ))
}

/// What is deployed: the HEAD of guardian's clone, read by git on a blocking thread.
async fn deployed(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
) -> Result<Json<crate::api::Deployed>, ApiError> {
    allow(&api, &role, Action::Read).await?;
    let repo = in_memory(&api, |e| e.deploy_repo()).await?.ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "this guardian deploys nothing: its config has no [daemon.rollback] repo".into(),
        )
    })?;
    let head = tokio::task::spawn_blocking(move || crate::git::Repo::open(&repo)?.head())
        .await
        .map_err(|_| busy())?
        .map_err(|e| {
            tracing::warn!("reading what is deployed: {e}");
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "guardian's clone cannot be read now (see the daemon's log)".into(),
            )
        })?;
    Ok(Json(crate::api::Deployed { commit: head }))
}

/// Whose token this is: lets a client (`guardian mcp`) refuse to hold more than it needs.
async fn whoami(Extension(role): Extension<Role>) -> Json<WhoAmI> {
    Json(WhoAmI {
        role: role.to_string(),
    })
}

async fn list_proposals(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
) -> Result<Json<Vec<ProposalRecord>>, ApiError> {
    allow(&api, &role, Action::Read).await?;
    let list = api.reads.run(|s| Ok(s.recent_proposals(100)?)).await?;
    Ok(Json(list))
}

async fn get_proposal(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
) -> Result<Json<ProposalView>, ApiError> {
    allow(&api, &role, Action::Read).await?;
    let view = api
        .reads
        .run(move |s| super::engine::proposal_view(s, &id))
        .await?;
    Ok(Json(view))
}

async fn decide(
    api: Api,
    role: Role,
    id: String,
    body: Bytes,
    approve: bool,
) -> Result<Json<ProposalRecord>, ApiError> {
    allow(&api, &role, Action::Decide).await?;
    let request: DecisionRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("bad decision: {e} (send {{\"diff_sha256\": ..., \"why\": ...}})"),
        )
    })?;
    Ok(Json(decide_on(&api, role, id, request, approve).await?))
}

/// A person's decision on a proposal, from the API or the status page's form, once the role
/// is known to decide: a rejection must say why, and the decision is bound to the diff's hash.
pub(super) async fn decide_on(
    api: &Api,
    role: Role,
    id: String,
    request: DecisionRequest,
    approve: bool,
) -> Result<ProposalRecord, ApiError> {
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
    let why = why.map(str::to_owned);
    let now = (api.clock)();
    with_engine(api, move |e| {
        e.decide(
            &role,
            &id,
            approve,
            request.diff_sha256.trim(),
            why.as_deref(),
            now,
        )
    })
    .await
}

async fn approve_proposal(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ProposalRecord>, ApiError> {
    decide(api, role, id, body, true).await
}

async fn reject_proposal(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ProposalRecord>, ApiError> {
    decide(api, role, id, body, false).await
}

async fn trust(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
) -> Result<Json<Vec<PatternTrust>>, ApiError> {
    allow(&api, &role, Action::Read).await?;
    let rules = in_memory(&api, |e| e.trust_rules()).await?;
    let ledger = api
        .reads
        .run(move |s| super::engine::trust_ledger(s, &rules))
        .await?;
    Ok(Json(ledger))
}

/// The bounded actions' track records, read from the audit trail.
async fn trust_actions(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
) -> Result<Json<Vec<crate::api::ActionTrack>>, ApiError> {
    allow(&api, &role, Action::Read).await?;
    let ledger = api
        .reads
        .run(|s| Ok(crate::gate::actions::ledger(s)?))
        .await?;
    Ok(Json(ledger))
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
            // Never framed, no script, its form posts only here; and its address (the link's
            // secret) is never sent on as a referrer.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                 frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

fn link_error_page(e: ApiError) -> Response {
    page(
        e.0,
        "This link cannot be used",
        &format!("<p>{}</p>", escape(&e.1)),
    )
}

/// The page an approval link opens: what would be decided, and a button to do it. Opening it
/// decides nothing (mail scanners open links); only the button's POST does.
async fn link_page(State(api): State<Api>, Path(secret): Path<String>) -> Response {
    let now = (api.clock)();
    let looked_up = api
        .reads
        .run(move |s| super::engine::link_page(s, &secret, now))
        .await;
    let (grant, view) = match looked_up {
        Ok(x) => x,
        Err(e) => return link_error_page(e),
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
        pattern = escape(&display::line(&p.pattern)),
        proposer = escape(&display::line(&p.proposer)),
        summary = escape(&display::line(&p.summary)),
        decision = escape(&p.decision),
        risk = crate::api::assessment(p)
            .map_or_else(|_| "not readable".to_owned(), |a| a.risk.score.to_string()),
        hash = escape(&grant.diff_hash),
        expires = escape(&crate::report::units::when(grant.expires_at)),
        patch = escape(&display::block(&view.patch)),
    );
    page(StatusCode::OK, &format!("guardian: {}", p.id), &body)
}

async fn use_link(State(api): State<Api>, Path(secret): Path<String>) -> Response {
    let now = (api.clock)();
    // A link that is not valid is told so from a read connection: guessing links never
    // touches the engine's lock.
    let wanted = secret.clone();
    if let Err(e) = api
        .reads
        .run(move |s| Ok(s.peek_approval_link(&wanted, now)?))
        .await
    {
        return link_error_page(e);
    }
    let result = with_engine(&api, move |e| e.use_link(&secret, now)).await;
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
        Err(e) => link_error_page(e),
    }
}

async fn switch(
    api: Api,
    role: Role,
    body: Bytes,
    paused: bool,
) -> Result<Json<PauseState>, ApiError> {
    allow(&api, &role, Action::Pause).await?;
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
    let why = why.map(str::to_owned);
    let now = (api.clock)();
    let state = with_engine(&api, move |e| e.pause(&role, paused, why.as_deref(), now)).await?;
    Ok(Json(PauseState {
        paused: state.is_some(),
        by: state.as_ref().map(|s| s.0.clone()),
        why: state.map(|s| s.1),
    }))
}

async fn pause(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    body: Bytes,
) -> Result<Json<PauseState>, ApiError> {
    switch(api, role, body, true).await
}

async fn resume(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    body: Bytes,
) -> Result<Json<PauseState>, ApiError> {
    switch(api, role, body, false).await
}

/// `POST /v1/actions/flag_off`: a role asks for a feature flag to be turned off. 202 while it
/// is turned off in a job, 200 in shadow mode; refused with a status that says why (403 a flag
/// outside the allow-list or a role without the right, 429 with `Retry-After` past the rate
/// limit or in the cool-down, 409 during a remediation, 404 when flag_off is not configured),
/// the refusal on the audit trail and nothing done.
async fn flag_off(
    State(api): State<Api>,
    Extension(role): Extension<Role>,
    body: Bytes,
) -> Response {
    if let Err(e) = allow(&api, &role, Action::FlagOff).await {
        return e.into_response();
    }
    let request: FlagOffRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError(
                StatusCode::BAD_REQUEST,
                format!("bad flag_off request: {e} (send {{\"flag\": ..., \"reason\": ...}})"),
            )
            .into_response()
        }
    };
    let now = (api.clock)();
    let answer = with_engine(&api, move |e| e.request_flag_off(&role, &request, now)).await;
    match answer {
        Err(e) => e.into_response(),
        Ok(Ok(answer)) => {
            let status = match answer.outcome {
                crate::daemon::supervisor::FlagOutcome::Running => StatusCode::ACCEPTED,
                _ => StatusCode::OK,
            };
            (status, Json(answer)).into_response()
        }
        Ok(Err(FlagRefused(refusal))) => {
            use crate::daemon::flag_limits::Refusal as R;
            let status = match &refusal {
                R::NotConfigured => StatusCode::NOT_FOUND,
                R::NotAllowed { .. } | R::Role(_) => StatusCode::FORBIDDEN,
                R::Busy(_) | R::Watching(_) => StatusCode::CONFLICT,
                R::RateLimited { .. } | R::CoolingDown { .. } => StatusCode::TOO_MANY_REQUESTS,
            };
            let error = format!("flag_off refused, nothing was done: {refusal}");
            match refusal.retry_after() {
                Some(wait) => (
                    status,
                    [(header::RETRY_AFTER, wait.to_string())],
                    Json(ErrorAnswer { error }),
                )
                    .into_response(),
                None => ApiError(status, error).into_response(),
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::Config;
    use axum::body::Body;
    use serde_json::json;
    use tower::ServiceExt as _;

    pub(in crate::daemon) const ADMIN: &str = "admin-token-0123456789abcdef";
    pub(in crate::daemon) const AGENT: &str = "agent-token-0123456789abcdef";
    pub(in crate::daemon) const ALICE: &str = "alice-token-0123456789abcdef";
    pub(in crate::daemon) const BOB_VIEWER: &str = "bob-viewer-token-0123456789abcdef";
    pub(in crate::daemon) const T0: f64 = 1_764_000_000.0;

    /// Ticks nothing: these tests drive the API alone.
    struct Still;

    impl owner::Clockwork<Engine> for Still {
        type Error = EngineError;
        fn tick(&mut self, _: &mut Engine, _: &Owner<Engine>) -> Result<(), EngineError> {
            Ok(())
        }
        fn stop(&mut self, _: &mut Engine) -> Result<(), EngineError> {
            Ok(())
        }
    }

    /// The API of a real engine on a state directory in `dir`, served in-process.
    fn api(dir: &std::path::Path) -> Router {
        api_with(dir, "")
    }

    /// [`api`] with `extra` appended to the config, after the `[daemon]` keys.
    pub(in crate::daemon) fn api_with(dir: &std::path::Path, extra: &str) -> Router {
        let state = dir.join("state");
        let config = Config::parse(&format!("[daemon]\nstate_dir = {state:?}\n{extra}")).unwrap();
        let settings = config.daemon.clone().unwrap();
        crate::daemon::state_dir::prepare(&state).unwrap();
        let engine = Engine::open(&config, &settings, T0).unwrap();
        let (owner, _ended) =
            owner::start(engine, std::time::Duration::from_secs(3600), Still).unwrap();
        router(Api {
            owner,
            tokens: Arc::new(vec![
                Token::new(hash_token(ADMIN), Role::Admin, &Limits::default()),
                Token::new(hash_token(AGENT), Role::Agent, &Limits::default()),
                Token::new(
                    hash_token(ALICE),
                    Role::Approver("alice".into()),
                    &Limits::default(),
                ),
                Token::new(
                    hash_token(BOB_VIEWER),
                    Role::Viewer("bob".into()),
                    &Limits::default(),
                ),
            ]),
            clock: || T0 + 1.0,
            reads: Arc::new(Reads::new(state.join("guardian.db"))),
            refusals: Arc::new(Refusals::default()),
            judging: Arc::new(tokio::sync::Semaphore::new(JUDGE_CONCURRENCY)),
            anonymous: anonymous_limiter(),
            metrics: Arc::default(),
            metrics_on_api: true,
            sessions: Arc::default(),
            service: settings.service.as_str().into(),
            sentry: settings
                .sentry
                .as_ref()
                .map(|s| Arc::new(super::super::webhooks::SentryHook::load(s).unwrap())),
        })
    }

    pub(in crate::daemon) async fn send(
        api: &Router,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let (status, bytes) = send_raw(api, method, path, token, body).await;
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    /// The answer's status and its body as sent.
    async fn send_raw(
        api: &Router,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, Bytes) {
        let mut request = axum::http::Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = api
            .clone()
            .oneshot(request.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, bytes)
    }

    /// The flag_off attempts on the record, oldest first, as `outcome flag by`.
    fn flag_record(dir: &std::path::Path) -> Vec<String> {
        let store = crate::store::Store::open(&dir.join("state").join("guardian.db")).unwrap();
        let mut actions = store.recent_flag_actions(100).unwrap();
        actions.reverse();
        actions
            .iter()
            .map(|a| format!("{} {} {}", a.outcome.as_str(), a.flag, a.requested_by))
            .collect()
    }

    fn flags_config(dir: &std::path::Path, extra: &str) -> String {
        format!(
            "[daemon.flag_off]\nfile = {:?}\nflags = [\"new-*\"]\n{extra}",
            dir.join("flags.json")
        )
    }

    #[tokio::test]
    async fn a_flag_outside_the_allow_list_is_refused_with_a_clear_message_and_nothing_done() {
        let dir = tempfile::tempdir().unwrap();
        let api = api_with(dir.path(), &flags_config(dir.path(), ""));
        let body = r#"{"flag": "billing", "reason": "checkout errors since 10:02"}"#;
        let (status, answer) = send(&api, "POST", "/v1/actions/flag_off", Some(AGENT), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        assert_eq!(
            answer["error"],
            "flag_off refused, nothing was done: flag \"billing\" is not on the allow-list \
             ([daemon.flag_off] flags = [\"new-*\"]): guardian turns no other flag off"
        );
        assert!(
            !dir.path().join("flags.json").exists(),
            "nothing was written"
        );
        assert_eq!(flag_record(dir.path()), ["refused billing agent"]);
    }

    #[tokio::test]
    async fn a_flag_off_past_the_rate_limit_is_refused_with_when_to_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let api = api_with(dir.path(), &flags_config(dir.path(), "max_per_hour = 1\n"));
        let ask = |flag: &str| format!(r#"{{"flag": "{flag}", "reason": "checkout errors"}}"#);
        let (status, answer) = send(
            &api,
            "POST",
            "/v1/actions/flag_off",
            Some(AGENT),
            &ask("new-total"),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["outcome"], "running");
        let (status, bytes) = send_raw(
            &api,
            "POST",
            "/v1/actions/flag_off",
            Some(AGENT),
            &ask("new-search"),
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.starts_with(
                "flag_off refused, nothing was done: the rate limit is spent: 1 flag(s) turned \
                 off in the last hour ([daemon.flag_off] max_per_hour = 1); the next may go in"
            ),
            "{error}"
        );
        assert_eq!(
            flag_record(dir.path()),
            ["running new-total agent", "refused new-search agent"]
        );
    }

    #[tokio::test]
    async fn no_flag_is_turned_off_under_a_watched_change_but_by_the_operator() {
        let dir = tempfile::tempdir().unwrap();
        let api = api_with(dir.path(), &flags_config(dir.path(), ""));
        let (status, change) = send(
            &api,
            "POST",
            "/v1/changes",
            Some(ADMIN),
            r#"{"commit": "abc1234", "kind": "ai", "summary": "new checkout", "flag": "new-checkout"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{change}");
        // The agent cannot hide its change's harm behind its own flag, nor make a person's
        // change look bad with another: nothing is done, and the attempt is on the record.
        let body = r#"{"flag": "new-checkout", "reason": "tidy up"}"#;
        let (status, answer) = send(&api, "POST", "/v1/actions/flag_off", Some(AGENT), body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(
                "is being watched: a flag turned off now would change what it is judged on"
            ),
            "{answer}"
        );
        let (status, _) = send(&api, "POST", "/v1/actions/flag_off", Some(ALICE), body).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(
            !dir.path().join("flags.json").exists(),
            "nothing was written"
        );
        let (status, answer) = send(&api, "POST", "/v1/actions/flag_off", Some(ADMIN), body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "the operator may: {answer}");
        assert_eq!(
            flag_record(dir.path()),
            [
                "refused new-checkout agent",
                "refused new-checkout approver:alice",
                "running new-checkout admin"
            ]
        );
    }

    #[tokio::test]
    async fn a_role_without_the_right_to_turn_flags_off_is_refused_and_nothing_done() {
        let dir = tempfile::tempdir().unwrap();
        let api = api_with(
            dir.path(),
            &flags_config(dir.path(), "roles = [\"approver\"]\n"),
        );
        let body = r#"{"flag": "new-total", "reason": "checkout errors"}"#;
        let (status, answer) = send(&api, "POST", "/v1/actions/flag_off", Some(AGENT), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        assert_eq!(
            answer["error"],
            "flag_off refused, nothing was done: the agent token may not turn flags off: \
             [daemon.flag_off] roles does not include \"agent\""
        );
        let (status, answer) = send(&api, "POST", "/v1/actions/flag_off", Some(ALICE), body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(
            flag_record(dir.path()),
            [
                "refused new-total agent",
                "running new-total approver:alice"
            ]
        );
        // Without [daemon.flag_off] there is nothing to ask for.
        let other = tempfile::tempdir().unwrap();
        let bare = api_with(other.path(), "");
        let (status, answer) = send(&bare, "POST", "/v1/actions/flag_off", Some(AGENT), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        let (status, _) = send(
            &bare,
            "POST",
            "/v1/actions/flag_off",
            Some(AGENT),
            r#"{"flag": "a b", "reason": "x"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn without_the_token_nothing_is_read_or_changed() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(dir.path());
        for (method, path, body) in [
            ("GET", "/v1/status", ""),
            ("POST", "/v1/changes", r#"{"commit": "abc1234"}"#),
        ] {
            for token in [None, Some("not-the-token-0123456789")] {
                let (status, answer) = send(&api, method, path, token, body).await;
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path}: {answer}"
                );
            }
        }
        let (_, changes) = send(&api, "GET", "/v1/changes", Some(ADMIN), "").await;
        assert_eq!(changes, json!([]));
    }

    #[tokio::test]
    async fn requests_without_a_valid_token_share_one_rate_and_the_operator_is_not_held_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(dir.path());
        let mut codes = std::collections::BTreeMap::new();
        for i in 0..300 {
            let (code, _) = if i % 2 == 0 {
                send(&api, "GET", "/v1/status", Some("not-a-token"), "").await
            } else {
                send(&api, "GET", "/v1/links/guessed-secret", None, "").await
            };
            *codes.entry(code.as_u16()).or_insert(0) += 1;
        }
        // The burst is served (refused for what it is), the rest told to wait.
        assert!(codes.get(&429).is_some_and(|&n| n >= 150), "{codes:?}");
        assert!(
            codes.keys().all(|c| [401, 403, 404, 410, 429].contains(c)),
            "{codes:?}"
        );
        let (code, _) = send(&api, "GET", "/v1/status", Some(ADMIN), "").await;
        assert_eq!(code, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_notified_change_is_watched_and_the_status_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(dir.path());
        let (status, change) = send(
            &api,
            "POST",
            "/v1/changes",
            Some(ADMIN),
            r#"{"commit": "abc1234", "kind": "ai", "summary": "validate carts"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{change}");
        assert_eq!(
            (change["state"].as_str(), change["commit"].as_str()),
            (Some("watching"), Some("abc1234"))
        );
        let (status, now) = send(&api, "GET", "/v1/status", Some(ADMIN), "").await;
        assert_eq!(status, StatusCode::OK, "{now}");
        assert_eq!(now["watching"]["id"], change["id"], "{now}");
    }

    #[tokio::test]
    async fn a_bad_notification_is_refused_naming_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(dir.path());
        for (body, says) in [
            (
                r#"{"commit": "abc1234", "knd": "ai"}"#,
                "unknown field `knd`",
            ),
            (r#"{"kind": "ai"}"#, "missing field `commit`"),
            ("not json", "bad change notification"),
        ] {
            let (status, answer) = send(&api, "POST", "/v1/changes", Some(ADMIN), body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
            let error = answer["error"].as_str().unwrap_or_default();
            assert!(error.contains(says), "{body}: {error}");
        }
        let (_, changes) = send(&api, "GET", "/v1/changes", Some(ADMIN), "").await;
        assert_eq!(changes, json!([]));
    }

    #[test]
    fn an_agent_may_send_only_so_many_proposal_bytes_an_hour() {
        let limits = TokenLimits::new(&Limits {
            proposal_bytes_per_hour: 1 << 20,
            ..Limits::default()
        });
        // The burst takes four proposals of half a megabyte; the hour's rate, no more.
        for _ in 0..4 {
            assert!(limits.check_proposal_bytes(512 << 10).is_ok());
        }
        let (wait, rate) = limits.check_proposal_bytes(512 << 10).unwrap_err();
        assert!((1..=1800).contains(&wait), "{wait}");
        assert!(rate.contains("1024 KiB of proposals an hour"), "{rate}");
    }

    /// The shape of a JSON answer as sent: each key in the order it came, with the kind of its
    /// value, objects nested, an array as its elements' shapes (one for a run of the same).
    /// Field names, nesting, omitted fields and their order are what scripts and the README
    /// rely on.
    enum Shape {
        Leaf(&'static str),
        List(Vec<Shape>),
        Object(Vec<(String, Shape)>),
    }

    impl<'de> serde::Deserialize<'de> for Shape {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shape, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Shape;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("JSON")
                }
                fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
                    Ok(Shape::Leaf("bool"))
                }
                fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
                    Ok(Shape::Leaf("number"))
                }
                fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
                    Ok(Shape::Leaf("number"))
                }
                fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
                    Ok(Shape::Leaf("number"))
                }
                fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
                    Ok(Shape::Leaf("string"))
                }
                fn visit_unit<E>(self) -> Result<Shape, E> {
                    Ok(Shape::Leaf("null"))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Shape, A::Error> {
                    let mut items = Vec::new();
                    while let Some(item) = seq.next_element::<Shape>()? {
                        items.push(item);
                    }
                    Ok(Shape::List(items))
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Shape, A::Error> {
                    let mut fields = Vec::new();
                    while let Some(key) = map.next_key::<String>()? {
                        fields.push((key, map.next_value::<Shape>()?));
                    }
                    Ok(Shape::Object(fields))
                }
            }
            d.deserialize_any(Visit)
        }
    }

    impl Shape {
        fn of(bytes: &[u8]) -> Shape {
            serde_json::from_slice(bytes).unwrap()
        }

        fn render(&self, indent: usize, out: &mut String) {
            match self {
                Shape::Leaf(kind) => out.push_str(kind),
                Shape::List(items) => {
                    let mut shown: Vec<String> = Vec::new();
                    for item in items {
                        let mut text = String::new();
                        item.render(indent, &mut text);
                        if shown.last() != Some(&text) {
                            shown.push(text);
                        }
                    }
                    out.push_str(&format!("[{}]", shown.join(", ")));
                }
                Shape::Object(fields) if fields.is_empty() => out.push_str("{}"),
                Shape::Object(fields) => {
                    out.push_str("{\n");
                    for (key, value) in fields {
                        out.push_str(&"  ".repeat(indent + 1));
                        out.push_str(key);
                        out.push_str(": ");
                        value.render(indent + 1, out);
                        out.push('\n');
                    }
                    out.push_str(&"  ".repeat(indent));
                    out.push('}');
                }
            }
        }
    }

    /// Plain git for the fixture, away from the host's configuration.
    fn git(dir: &std::path::Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// guardian's clone of an app whose timeout is 500 ms, its commit, and a patch that makes
    /// the timeout 800 ms.
    pub(in crate::daemon) fn app_and_a_fix(
        dir: &std::path::Path,
    ) -> (std::path::PathBuf, String, String) {
        let repo = dir.join("app");
        std::fs::create_dir_all(repo.join("src")).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("src/settings.txt"), "timeout_ms = 500\n").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "first release"]);
        let base = git(&repo, &["rev-parse", "HEAD"]).trim().to_owned();
        std::fs::write(repo.join("src/settings.txt"), "timeout_ms = 800\n").unwrap();
        let patch = git(&repo, &["diff", "--full-index", "--binary"]);
        git(&repo, &["checkout", "-q", "--", "."]);
        (repo, base, patch)
    }

    /// The API's answers as [`every_answer_keeps_its_wire_form`] records them.
    struct Wire {
        api: Router,
        out: String,
    }

    impl Wire {
        /// Sends `name`'s method to `path` and records the answer: its status and its shape
        /// (the small ones as sent). The answer must read as `T`, as the CLI reads it, and
        /// write back as it was sent: the type holds every field, named and left out as on
        /// the wire.
        async fn call<T: serde::de::DeserializeOwned + serde::Serialize>(
            &mut self,
            name: &str,
            path: &str,
            token: Option<&str>,
            body: &str,
        ) -> T {
            let method = name.split(' ').next().unwrap();
            let (status, bytes) = send_raw(&self.api, method, path, token, body).await;
            let shown = if bytes.len() < 200 {
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                let mut text = String::new();
                Shape::of(&bytes).render(0, &mut text);
                text
            };
            self.out
                .push_str(&format!("{name} -> {}\n{shown}\n\n", status.as_u16()));
            let sent: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let read: T = crate::api::read(&sent, name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                serde_json::to_value(&read).unwrap(),
                sent,
                "{name}: read and written back, the answer is not what was sent"
            );
            read
        }
    }

    /// Every answer the API gives, from a real engine with the gate, in the form it is sent:
    /// its status line and its shape (or, for the small ones, its bytes), checked in; each
    /// read back into its `api` type and written again unchanged. The requests are sent from
    /// their `api` types, as the CLI sends them.
    #[tokio::test]
    async fn every_answer_keeps_its_wire_form() {
        use crate::api::*;
        let dir = tempfile::tempdir().unwrap();
        let (repo, base, patch) = app_and_a_fix(dir.path());
        let policy = dir.path().join("policy.toml");
        std::fs::write(
            &policy,
            "[paths]\nallow = [\"src/**\"]\n[limits]\nmax_files = 5\nmax_lines = 40\n\
             [risk]\nauto_below = 50\n[trust]\npromote_after = 10\n",
        )
        .unwrap();
        let log = dir.path().join("access.jsonl");
        let api = api_with(
            dir.path(),
            &format!(
                "[[daemon.logs]]\npath = {log:?}\n\
                 [[daemon.scrapes]]\nname = \"app\"\nurl = \"http://127.0.0.1:9/metrics\"\n\
                 [daemon.rollback]\nrepo = {repo:?}\nhook = [\"true\"]\n\
                 [daemon.gate]\npolicy_file = {policy:?}\n"
            ),
        );
        fn json(request: &impl serde::Serialize) -> String {
            serde_json::to_string(request).unwrap()
        }
        let proposal = |patch: &str| ProposalRequest {
            pattern: "timeout-bump".into(),
            summary: "give checkout more time".into(),
            issue_url: None,
            issue: None,
            flag: None,
            tests_run: true,
            base: base.clone(),
            commit: None,
            patch: patch.into(),
            kind: ChangeKind::Ai,
        };
        let mut wire = Wire {
            api,
            out: String::new(),
        };
        let (admin, agent, alice) = (Some(ADMIN), Some(AGENT), Some(ALICE));

        wire.call::<Status>("GET /v1/status (idle)", "/v1/status", admin, "")
            .await;
        let observations = format!(
            "[{{\"ts\": {}, \"status\": 200, \"latency_ms\": 12.5, \"route\": \"/\"}},\
             {{\"ts\": {}, \"status\": 500}}]",
            T0 - 5.0,
            T0 - 4.0
        );
        wire.call::<Accepted>(
            "POST /v1/observations",
            "/v1/observations",
            admin,
            &observations,
        )
        .await;
        // Nothing is watched yet: nothing is superseded (a change's id would differ each run).
        wire.call::<DeployStarting>("POST /v1/deploys", "/v1/deploys", admin, "")
            .await;
        let notified = ChangeRequest {
            // A commit of the repository guardian reverts in: it refuses any other.
            commit: base.clone(),
            kind: ChangeKind::Ai,
            pattern: None,
            summary: Some("validate carts".into()),
            proposal: None,
            deploy_started_at: None,
            issue: None,
            flag: None,
            canary: None,
        };
        let change: ChangeView = wire
            .call("POST /v1/changes", "/v1/changes", admin, &json(&notified))
            .await;
        assert_eq!(change.record.state, ChangeState::Watching);
        let path = format!("/v1/changes/{}", change.record.id);
        wire.call::<ChangeView>("GET /v1/changes/ID", &path, admin, "")
            .await;
        wire.call::<Vec<ChangeRecord>>("GET /v1/changes", "/v1/changes", admin, "")
            .await;
        wire.call::<Status>("GET /v1/status (watching)", "/v1/status", admin, "")
            .await;

        let first: ProposalRecord = wire
            .call(
                "POST /v1/proposals",
                "/v1/proposals",
                agent,
                &json(&proposal(&patch)),
            )
            .await;
        let facts = assessment(&first).unwrap().facts;
        assert_eq!((facts.files, facts.lines_added), (1, 1));
        let second: ProposalRecord = wire
            .call(
                "POST /v1/proposals (a second)",
                "/v1/proposals",
                agent,
                &json(&proposal(&patch)),
            )
            .await;
        let refused: ProposalRecord = wire
            .call(
                "POST /v1/proposals (refused patch)",
                "/v1/proposals",
                agent,
                &json(&proposal("diff --git a/../x b/../x\n")),
            )
            .await;
        assert_eq!(assessment(&refused).unwrap().facts, DiffFacts::default());
        wire.call::<Vec<ProposalRecord>>("GET /v1/proposals", "/v1/proposals", admin, "")
            .await;
        let path = format!("/v1/proposals/{}", first.id);
        let view: ProposalView = wire.call("GET /v1/proposals/ID", &path, admin, "").await;
        assert_eq!(view.patch, patch);
        let decision = DecisionRequest {
            diff_sha256: view.record.diff_hash,
            why: Some("looks right".into()),
        };
        let path = format!("/v1/proposals/{}/approve", first.id);
        let approved: ProposalRecord = wire
            .call(
                "POST /v1/proposals/ID/approve",
                &path,
                alice,
                &json(&decision),
            )
            .await;
        assert_eq!(approved.state, ProposalState::Approved);
        let path = format!("/v1/proposals/{}/reject", second.id);
        wire.call::<ProposalRecord>(
            "POST /v1/proposals/ID/reject",
            &path,
            alice,
            &json(&decision),
        )
        .await;
        wire.call::<Vec<PatternTrust>>("GET /v1/trust", "/v1/trust", admin, "")
            .await;
        wire.call::<Vec<ActionTrack>>("GET /v1/trust/actions", "/v1/trust/actions", admin, "")
            .await;
        let checked: crate::api::Assessment = wire
            .call(
                "POST /v1/proposals/check",
                "/v1/proposals/check",
                agent,
                &json(&proposal(&patch)),
            )
            .await;
        assert_eq!(checked.facts.files, 1);
        let paths = crate::api::PathsRequest {
            paths: vec!["src/a.txt".into(), "migrations/1.sql".into()],
        };
        wire.call::<Vec<crate::api::PathCheck>>(
            "POST /v1/policy/paths",
            "/v1/policy/paths",
            agent,
            &json(&paths),
        )
        .await;
        let who: crate::api::WhoAmI = wire.call("GET /v1/whoami", "/v1/whoami", agent, "").await;
        assert_eq!(who.role, "agent");

        let why = PauseRequest {
            why: Some("freeze".into()),
        };
        wire.call::<PauseState>("POST /v1/pause", "/v1/pause", admin, &json(&why))
            .await;
        wire.call::<Status>("GET /v1/status (paused)", "/v1/status", admin, "")
            .await;
        wire.call::<PauseState>("POST /v1/resume", "/v1/resume", admin, "")
            .await;

        wire.call::<ErrorAnswer>(
            "POST /v1/changes (bad)",
            "/v1/changes",
            admin,
            r#"{"knd": "ai"}"#,
        )
        .await;
        wire.call::<ErrorAnswer>("GET /v1/status (no token)", "/v1/status", None, "")
            .await;
        wire.call::<ErrorAnswer>("POST /v1/changes (agent)", "/v1/changes", agent, "{}")
            .await;
        wire.call::<ErrorAnswer>("GET /v1/nothing", "/v1/nothing", admin, "")
            .await;
        expect_test::expect_file![
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/expected/api_wire.txt")
        ]
        .assert_eq(&wire.out);
    }

    #[tokio::test]
    async fn metrics_and_healthz_answer_without_a_token_and_count_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let api = api_with(dir.path(), "");
        // A refused request is counted by role and reason before the scrape.
        let (status, _) = send(&api, "POST", "/v1/changes", Some(AGENT), "{}").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = send(&api, "GET", "/v1/status", None, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = send_raw(&api, "GET", "/metrics", None, "").await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::OK, "{text}");
        for line in [
            "guardian_refusals_total{role=\"agent\",reason=\"forbidden\"} 1",
            "guardian_refusals_total{role=\"anonymous\",reason=\"unauthorized\"} 1",
            // Read from the record and from the engine's memory: nothing decided, none watched.
            "guardian_changes_decided_total{kind=\"ai\",outcome=\"rolled_back\"} 0",
            "guardian_decision_seconds_count 0",
            "guardian_watching 0",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        // This test's engine never ticks: liveness says so.
        let (status, health) = send(&api, "GET", "/healthz", None, "").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
        assert_eq!(health["status"], "starting");
    }
}
