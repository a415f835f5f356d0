//! The status page: `GET /` for a person in a browser, rendered on the server
//! (`report::page`), with sign-in and the approver's two forms.
//!
//! Sign-in takes one of the API's tokens once and answers with a session cookie (HttpOnly,
//! SameSite=Strict; `daemon::sessions`); the session acts with that token's role and rate
//! limits. Every form that changes anything is refused unless it carries the session's CSRF
//! token and, where the browser says where it came from (`Sec-Fetch-Site`, `Origin`), came from
//! this page's own origin. The API (`/v1/...`) never reads the cookie: a browser's session is
//! good for the page and nothing else. Every answer forbids framing and any script or style
//! that is not the daemon's own (Content-Security-Policy).

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::engine::{EngineError, PageLive};
use super::http::{self, Api, ApiError};
use super::refusals::Refusal;
use super::sessions::{same_secret, Session};
use crate::api::DecisionRequest;
use crate::gate::roles::{Action, Role};
use crate::report::page::{self as render, PageInput, Visitor};
use crate::store::Store;

/// The session cookie's name.
pub const COOKIE: &str = "guardian_session";
/// The most proposals the page shows with their diffs; `guardian proposals` lists them all.
const WAITING_SHOWN: usize = 20;
/// The latest proposals no longer waiting that the page lists, with what became of them.
const DECIDED_SHOWN: usize = 5;
/// The traffic the page charts when no change is watched.
const IDLE_CHART_SECS: i64 = 1800;
/// Forms are small: a token, a hash, a reason of at most 2,000 characters.
const FORM_LIMIT: usize = 16 * 1024;

/// The daemon's own script and stylesheet, and inline styles (the post-mortem's and the
/// chart's, written for email clients); nothing from elsewhere, no inline script, no framing.
const CONTENT_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' \
    'unsafe-inline'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/sign-in", post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/proposals/:id/:decision", post(decide))
        .route("/changes/:id", get(change))
        .route("/static/page.css", get(|| asset("text/css", render::CSS)))
        .route(
            "/static/page.js",
            get(|| asset("text/javascript", render::SCRIPT)),
        )
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
        .with_state(api)
}

async fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// An HTML answer with the page's protections.
fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Not `no-referrer`: with it browsers send `Origin: null` on the page's own forms.
            (header::REFERRER_POLICY, "same-origin"),
        ],
        body,
    )
        .into_response()
}

fn answer(status: StatusCode, title: &str, text: &str) -> Response {
    html(status, render::answer(title, text, status.is_success()))
}

/// Back to the status page after a form (303: the browser then GETs it).
fn see_page(cookie: Option<String>) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The `Set-Cookie` value for a session; `Secure` when a TLS proxy in front says the browser
/// came over https (guardian itself listens on plain HTTP, on loopback by default).
fn session_cookie(value: &str, max_age: f64, headers: &HeaderMap) -> String {
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={:.0}{}",
        max_age,
        if secure { "; Secure" } else { "" }
    )
}

/// The values of every session cookie the request carries. (Read by hand: the values are
/// base64url that guardian made, and this is the only cookie it reads.) Cookies are not kept
/// apart by port, so a page on another port of this host can set one too: every value is
/// looked at, never just the first.
fn cookie_values(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// A request from a signed-in browser: its session and the role it acts as.
struct SignedIn {
    session: Session,
    cookie: String,
    role: Role,
}

/// The live sessions the request's cookies stand for.
fn sessions_of(api: &Api, headers: &HeaderMap, now: f64) -> Vec<SignedIn> {
    let mut found: Vec<SignedIn> = Vec::new();
    for cookie in cookie_values(headers) {
        let Some(session) = api.sessions.find(cookie, now) else {
            continue;
        };
        let Some(token) = api.tokens.get(session.token) else {
            continue;
        };
        found.push(SignedIn {
            cookie: cookie.to_owned(),
            role: token.role.clone(),
            session,
        });
    }
    found
}

/// The session a page is shown for: the one the request's cookies stand for, or, when they
/// stand for sessions of different tokens (another page on this host set one), none, with
/// why.
fn signed_in(api: &Api, headers: &HeaderMap, now: f64) -> Result<Option<SignedIn>, &'static str> {
    let mut found = sessions_of(api, headers, now);
    if found
        .windows(2)
        .any(|w| w[0].session.token != w[1].session.token)
    {
        return Err(
            "This browser holds sessions of more than one token for guardian (a page \
                    on another port of this host can set one). Sign in again; signing in \
                    replaces them.",
        );
    }
    Ok(found.pop())
}

/// Why a form is refused as coming from elsewhere, when the browser says it did: another
/// site (`Sec-Fetch-Site`), or an `Origin` that is not this page's. Browsers send both on a
/// form's POST; a request without them is held to the CSRF token alone.
fn from_elsewhere(headers: &HeaderMap) -> Option<String> {
    // Every current browser says where a request came from; where it does, that is the
    // answer, and a proxy that rewrites `Host` does not matter.
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return (site != "same-origin" && site != "none")
            .then(|| format!("the form came from another site (Sec-Fetch-Site: {site})"));
    }
    let origin = headers.get(header::ORIGIN)?;
    let authority = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, authority)| authority);
    let served_as = [header::HOST.as_str(), "x-forwarded-host"]
        .into_iter()
        .filter_map(|name| headers.get(name).and_then(|h| h.to_str().ok()));
    let same = authority.is_some_and(|a| served_as.into_iter().any(|h| h == a));
    (!same).then(|| {
        format!(
            "the form came from {}, not from this page",
            crate::display::line(origin.to_str().unwrap_or("an unreadable origin"))
        )
    })
}

/// The value of `name` in a urlencoded form.
fn field(form: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(form)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A session's request held to its token's rate; the refusal as a page.
async fn within_rate(api: &Api, who: &SignedIn, write: bool) -> Result<(), Response> {
    let Some(limits) = api
        .tokens
        .get(who.session.token)
        .and_then(|t| t.limits.as_ref())
    else {
        return Ok(());
    };
    match limits.check(write) {
        Ok(()) => Ok(()),
        Err((wait, rate)) => Err(over_rate(api, &who.role, wait, &rate).await),
    }
}

/// 429 for a token over its rate, on the record, saying when to come back.
async fn over_rate(api: &Api, role: &Role, wait: u64, rate: &str) -> Response {
    http::note_refusal(api, role, Refusal::RateLimited).await;
    let mut page = answer(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        &format!("The {role} token may make {rate}; try again in {wait} s."),
    );
    page.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait.max(1)));
    page
}

fn failed(e: ApiError) -> Response {
    answer(e.0, "guardian could not do this", &e.1)
}

async fn page(State(api): State<Api>, headers: HeaderMap) -> Response {
    let now = (api.clock)();
    let who = match signed_in(&api, &headers, now) {
        Ok(Some(who)) => who,
        Ok(None) => return html(StatusCode::OK, render::sign_in(&api.service, None)),
        Err(why) => return html(StatusCode::OK, render::sign_in(&api.service, Some(why))),
    };
    if let Err(refused) = within_rate(&api, &who, false).await {
        return refused;
    }
    let live = match http::in_memory(&api, move |e| e.page_live(now)).await {
        Ok(live) => live,
        Err(e) => return failed(e),
    };
    let last_tick = api.metrics.last_tick();
    match api.reads.run(move |s| page_input(s, live, last_tick)).await {
        Ok(input) => html(
            StatusCode::OK,
            render::status_page(
                &input,
                &Visitor {
                    role: &who.role,
                    csrf: &who.session.csrf,
                },
            ),
        ),
        Err(e) => failed(e),
    }
}

/// What the page shows: the engine's memory (`live`) completed from the store.
fn page_input(
    store: &Store,
    live: PageLive,
    last_tick: Option<f64>,
) -> Result<PageInput, EngineError> {
    let mut status = live.status.complete(store)?;
    status.last_tick = last_tick;
    // The watched change's chart; else the last change's while it is recent (its markers say
    // what happened); else the last half hour's traffic.
    let recent = status
        .recent
        .first()
        .filter(|c| c.landed_at > status.now - IDLE_CHART_SECS as f64);
    let charted = status.watching.as_ref().map(|w| &w.record).or(recent);
    let chart = match charted {
        Some(c) => crate::gate::story::postmortem(store, &status.service, &c.id, live.recent_bins)?
            .map(|pm| {
                (
                    pm.svg(),
                    format!(
                        "Error rate and latency around {} ({}): its baseline before the deploy, \
                         after it the watch; what guardian did is marked.",
                        c.id, c.state
                    ),
                )
            }),
        None => {
            let to = crate::series::bin_start(status.now) + crate::series::BIN_SECS;
            let from = to - IDLE_CHART_SECS;
            let mut series = store.series_between(from, to)?;
            series.extend(live.recent_bins);
            Some((
                crate::report::chart::chart(&series, &[], None, from, to),
                "Error rate and latency over the last 30 minutes.".to_owned(),
            ))
        }
    };
    let (waiting, decided, patterns) = match &live.trust_rules {
        Some(rules) => (
            store.waiting_proposals(WAITING_SHOWN)?,
            store
                .recent_proposals(DECIDED_SHOWN + WAITING_SHOWN)?
                .into_iter()
                .filter(|p| p.state != crate::gate::proposals::ProposalState::Pending)
                .take(DECIDED_SHOWN)
                .collect(),
            super::engine::trust_ledger(store, rules)?,
        ),
        None => (Vec::new(), Vec::new(), Vec::new()),
    };
    Ok(PageInput {
        status,
        min_baseline_requests: live.min_baseline_requests,
        chart,
        waiting,
        decided,
        gate: live.trust_rules.is_some(),
        patterns,
        actions: crate::gate::actions::ledger(store)?,
        audit_head: store.audit_head()?,
        checkpoint: store.latest_checkpoint()?,
    })
}

async fn sign_in(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    // Where it came from first: a form on another site costs nothing and is refused.
    if let Some(why) = from_elsewhere(&headers) {
        api.metrics.refused("anonymous", "cross_site");
        return answer(StatusCode::FORBIDDEN, "Sign-in refused", &why);
    }
    let token = field(&body, "token").unwrap_or_default();
    let token = token.trim();
    let found = (!token.is_empty())
        .then(|| http::token_of(&api.tokens, &http::hash_token(token)))
        .flatten();
    // A valid token signs in whatever else is going on: wrong tokens, held to the shared
    // bucket of requests without one, cannot lock people out. (Guessing gains nothing from
    // this: tokens are at least 16 random characters.)
    let Some(i) = found else {
        if http::anonymous_over(&api).is_some() {
            api.metrics.refused("anonymous", "rate_limited");
            return answer(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-ins",
                "Too many requests without a valid token right now; try again in a few seconds.",
            );
        }
        api.metrics.refused("anonymous", "unauthorized");
        return html(
            StatusCode::UNAUTHORIZED,
            render::sign_in(
                &api.service,
                Some("That is not one of guardian's tokens. Nothing was signed in."),
            ),
        );
    };
    // A valid token's sign-ins count against its own rate for writes, as anything else it
    // does: signing in in a loop cannot fill the log or the session table's churn.
    if let Some(Err((wait, rate))) = api.tokens[i].limits.as_ref().map(|l| l.check(true)) {
        return over_rate(&api, &api.tokens[i].role, wait, &rate).await;
    }
    let now = (api.clock)();
    // The browser's other sessions (of this or another token) end: one browser, one session.
    for old in sessions_of(&api, &headers, now) {
        api.sessions.close(&old.cookie);
    }
    let (cookie, _) = api.sessions.open(i, now);
    tracing::info!(role = %api.tokens[i].role, "signed in to the status page");
    see_page(Some(session_cookie(
        &cookie,
        super::sessions::MAX_AGE_SECS,
        &headers,
    )))
}

/// A form from a signed-in browser, checked: the session, where it came from, its CSRF token.
async fn checked_form(api: &Api, headers: &HeaderMap, body: &[u8]) -> Result<SignedIn, Response> {
    let now = (api.clock)();
    let mut sessions = sessions_of(api, headers, now);
    if sessions.is_empty() {
        api.metrics.refused("anonymous", "unauthorized");
        return Err(answer(
            StatusCode::UNAUTHORIZED,
            "Sign in first",
            "This form needs a signed-in session (it may have expired); nothing was done.",
        ));
    }
    // The session the form was made for: the one whose CSRF secret it carries (a cookie
    // another page set cannot stand in for it).
    let csrf = field(body, "csrf").unwrap_or_default();
    let matching = sessions
        .iter()
        .position(|s| same_secret(&csrf, &s.session.csrf));
    let forged = match (from_elsewhere(headers), matching) {
        (Some(why), _) => Some(why),
        (None, None) => Some("the form does not carry this session's CSRF token".to_owned()),
        (None, Some(_)) => None,
    };
    if let Some(why) = forged {
        let role = sessions.swap_remove(matching.unwrap_or(0)).role;
        http::note_refusal(api, &role, Refusal::Forbidden("cross_site_form".into())).await;
        return Err(answer(
            StatusCode::FORBIDDEN,
            "Refused",
            &format!("Refused: {why}. Nothing was done; use the status page itself."),
        ));
    }
    Ok(sessions.swap_remove(matching.unwrap_or(0)))
}

async fn sign_out(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    match checked_form(&api, &headers, &body).await {
        Ok(who) => {
            api.sessions.close(&who.cookie);
            see_page(Some(session_cookie("", 0.0, &headers)))
        }
        Err(refused) => refused,
    }
}

async fn decide(
    State(api): State<Api>,
    Path((id, decision)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = match checked_form(&api, &headers, &body).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let approve = match decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return answer(
                StatusCode::NOT_FOUND,
                "No such form",
                "Approve or reject only.",
            )
        }
    };
    if let Err(refused) = within_rate(&api, &who, true).await {
        return refused;
    }
    if let Err(e) = http::allow(&api, &who.role, Action::Decide).await {
        return failed(e);
    }
    let request = DecisionRequest {
        diff_sha256: field(&body, "diff_sha256").unwrap_or_default(),
        why: field(&body, "why"),
    };
    let decided = http::decide_on(&api, who.role.clone(), id, request, approve).await;
    let p = match decided {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    // What happens next, as it stands: an approval waits while deploys are paused.
    let next = match approve {
        false => String::new(),
        true => match api.reads.run(|s| Ok(s.gate_paused()?)).await {
            Ok(Some((by, why, _))) => format!(
                " Deploys of proposals are paused by {by} ({why}): it deploys once they are \
                 resumed (guardian resume), then is watched."
            ),
            _ => " guardian deploys it when no other change is being watched, and watches it."
                .to_owned(),
        },
    };
    answer(
        StatusCode::OK,
        &format!("{} is {}", p.id, p.state),
        &format!(
            "Recorded on the audit trail as decided by {} for the diff with SHA-256 {}.{next}",
            p.decided_by.as_deref().unwrap_or("?"),
            p.diff_hash,
        ),
    )
}

/// A change's post-mortem, as the alert email's HTML part shows it.
async fn change(State(api): State<Api>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let now = (api.clock)();
    let Ok(Some(who)) = signed_in(&api, &headers, now) else {
        return see_page(None);
    };
    if let Err(refused) = within_rate(&api, &who, false).await {
        return refused;
    }
    let recent = match http::in_memory(&api, |e| e.recent_bins()).await {
        Ok(bins) => bins,
        Err(e) => return failed(e),
    };
    let service = api.service.to_string();
    let wanted = id.clone();
    let found = api
        .reads
        .run(move |s| {
            Ok(crate::gate::story::postmortem(
                s, &service, &wanted, recent,
            )?)
        })
        .await;
    match found {
        Ok(Some(pm)) => html(StatusCode::OK, pm.html_on_page()),
        Ok(None) => answer(
            StatusCode::NOT_FOUND,
            "No such change",
            &format!("guardian has no change {}.", crate::display::line(&id)),
        ),
        Err(e) => failed(e),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;
    use crate::daemon::http::tests::{api_with, app_and_a_fix, send, AGENT, ALICE, BOB_VIEWER};

    /// An answer: status, headers, body.
    async fn request(
        api: &Router,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, HeaderMap, String) {
        let mut r = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1:8707");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let response = api
            .clone()
            .oneshot(r.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 22).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    /// Signs in with `token`: the `Cookie` header to send from then on.
    async fn sign_in_as(api: &Router, token: &str) -> String {
        let form = format!("token={token}");
        let (status, headers, body) = request(api, "POST", "/sign-in", &[], &form).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
        let set = headers[header::SET_COOKIE].to_str().unwrap().to_owned();
        assert!(
            set.contains("; HttpOnly; SameSite=Strict;"),
            "the cookie is out of scripts' and other sites' reach: {set}"
        );
        set.split(';').next().unwrap().to_owned()
    }

    /// The page's CSRF token, as its forms carry it.
    fn csrf_of(page: &str) -> String {
        let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
        page[at..at + page[at..].find('"').unwrap()].to_owned()
    }

    /// A gate with one proposal waiting for a person: the API, the proposal's id and hash.
    async fn a_proposal_waiting(dir: &std::path::Path) -> (Router, String, String) {
        let (repo, base, patch) = app_and_a_fix(dir);
        let policy = dir.join("policy.toml");
        std::fs::write(
            &policy,
            "[paths]\nallow = [\"src/**\"]\n[risk]\nauto_below = 0\n[trust]\npromote_after = 10\n",
        )
        .unwrap();
        let api = api_with(
            dir,
            &format!(
                "[daemon.rollback]\nrepo = {repo:?}\nhook = [\"true\"]\n\
                 [daemon.gate]\npolicy_file = {policy:?}\n"
            ),
        );
        let body = serde_json::json!({
            "pattern": "timeout-bump", "summary": "give <checkout> more time",
            "tests_run": true, "base": base, "patch": patch,
        });
        let (status, p) = send(
            &api,
            "POST",
            "/v1/proposals",
            Some(AGENT),
            &body.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{p}");
        assert_eq!(p["decision"], "needs_approval", "{p}");
        let id = p["id"].as_str().unwrap().to_owned();
        let hash = p["diff_hash"].as_str().unwrap().to_owned();
        (api, id, hash)
    }

    fn proposal_state(api_dir: &std::path::Path, id: &str) -> String {
        let store = Store::open(&api_dir.join("state").join("guardian.db")).unwrap();
        store.get_proposal(id).unwrap().state.as_str().to_owned()
    }

    #[tokio::test]
    async fn without_a_session_the_page_asks_for_a_token_and_shows_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let (api, id, _) = a_proposal_waiting(dir.path()).await;
        let (status, headers, page) = request(&api, "GET", "/", &[], "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("id=\"sign-in\""), "{page}");
        assert!(!page.contains(&id));
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert!(headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self';"));

        let (status, _, page) = request(
            &api,
            "GET",
            "/",
            &[("cookie", "guardian_session=guessed")],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            page.contains("id=\"sign-in\""),
            "a made-up cookie is no session"
        );

        let (status, _, page) = request(&api, "POST", "/sign-in", &[], "token=wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            page.contains("That is not one of guardian&#39;s tokens"),
            "{page}"
        );
        let (status, _, _) = request(&api, "POST", "/sign-in", &[], "token=").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn an_approver_signs_in_once_and_approves_the_diff_shown_from_the_page() {
        let dir = tempfile::tempdir().unwrap();
        let (api, id, hash) = a_proposal_waiting(dir.path()).await;
        let cookie = sign_in_as(&api, ALICE).await;
        let (status, _, page) = request(&api, "GET", "/", &[("cookie", &cookie)], "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("approver:alice"), "{page}");
        assert!(page.contains("give &lt;checkout&gt; more time"));
        assert!(page.contains("<span class=\"add\">+timeout_ms = 800</span>"));
        let csrf = csrf_of(&page);

        // The cookie is the page's: the API still wants a bearer token.
        let (status, _, _) = request(&api, "GET", "/v1/status", &[("cookie", &cookie)], "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let form = format!("csrf={csrf}&diff_sha256={hash}");
        let path = format!("/proposals/{id}/approve");
        let (status, _, page) = request(&api, "POST", &path, &[("cookie", &cookie)], &form).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains(&format!("{id} is approved")), "{page}");
        assert!(page.contains("decided by approver:alice"), "{page}");
        assert_eq!(proposal_state(dir.path(), &id), "approved");
    }

    #[tokio::test]
    async fn a_form_without_the_session_s_csrf_token_or_from_another_site_decides_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (api, id, hash) = a_proposal_waiting(dir.path()).await;
        let cookie = sign_in_as(&api, ALICE).await;
        let (_, _, page) = request(&api, "GET", "/", &[("cookie", &cookie)], "").await;
        let csrf = csrf_of(&page);
        let path = format!("/proposals/{id}/approve");

        let no_csrf = format!("diff_sha256={hash}");
        let (status, _, page) =
            request(&api, "POST", &path, &[("cookie", &cookie)], &no_csrf).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
        assert!(
            page.contains("does not carry this session&#39;s CSRF token"),
            "{page}"
        );

        let wrong = format!("csrf=x{csrf}&diff_sha256={hash}");
        let (status, _, _) = request(&api, "POST", &path, &[("cookie", &cookie)], &wrong).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        let good = format!("csrf={csrf}&diff_sha256={hash}");
        for headers in [
            [
                ("cookie", cookie.as_str()),
                ("sec-fetch-site", "cross-site"),
            ],
            [
                ("cookie", cookie.as_str()),
                ("origin", "https://evil.example"),
            ],
            [("cookie", cookie.as_str()), ("origin", "null")],
        ] {
            let (status, _, page) = request(&api, "POST", &path, &headers, &good).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}: {page}");
        }
        // Without the cookie the browser's SameSite=Strict withholds on a cross-site form.
        let (status, _, _) = request(&api, "POST", &path, &[], &good).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // A sign-in from another site's form is refused too (login CSRF).
        let (status, _, _) = request(
            &api,
            "POST",
            "/sign-in",
            &[("origin", "https://evil.example")],
            &format!("token={ALICE}"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        assert_eq!(
            proposal_state(dir.path(), &id),
            "pending",
            "nothing decided"
        );
        let (status, _, page) = request(
            &api,
            "POST",
            &path,
            &[
                ("cookie", &cookie),
                ("origin", "http://127.0.0.1:8707"),
                ("sec-fetch-site", "same-origin"),
            ],
            &good,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the page's own form still works: {page}"
        );
    }

    #[tokio::test]
    async fn a_viewer_sees_the_page_but_cannot_decide_and_a_signed_out_session_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (api, id, hash) = a_proposal_waiting(dir.path()).await;
        let cookie = sign_in_as(&api, BOB_VIEWER).await;
        let (_, _, page) = request(&api, "GET", "/", &[("cookie", &cookie)], "").await;
        assert!(page.contains(&id) && page.contains("(read only)"), "{page}");
        assert!(!page.contains("/approve\""), "no forms to decide with");
        let csrf = csrf_of(&page);
        let form = format!("csrf={csrf}&diff_sha256={hash}");
        let path = format!("/proposals/{id}/approve");
        let (status, _, page) = request(&api, "POST", &path, &[("cookie", &cookie)], &form).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
        assert!(
            page.contains("the viewer:bob token may not approve"),
            "{page}"
        );
        assert_eq!(proposal_state(dir.path(), &id), "pending");

        let (status, headers, _) = request(
            &api,
            "POST",
            "/sign-out",
            &[("cookie", &cookie)],
            &format!("csrf={csrf}"),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"));
        let (_, _, page) = request(&api, "GET", "/", &[("cookie", &cookie)], "").await;
        assert!(page.contains("id=\"sign-in\""), "signed out");
    }

    #[tokio::test]
    async fn a_cookie_another_page_planted_neither_takes_over_nor_blocks_the_approver() {
        let dir = tempfile::tempdir().unwrap();
        let (api, id, hash) = a_proposal_waiting(dir.path()).await;
        let planted = sign_in_as(&api, AGENT).await;
        let alice = sign_in_as(&api, ALICE).await;
        // Both sent, the planted one first (a more specific path comes first).
        let both = format!("{planted}; {alice}");
        let (_, _, page) = request(&api, "GET", "/", &[("cookie", &both)], "").await;
        assert!(
            page.contains("id=\"sign-in\""),
            "no page for a mixed browser"
        );
        assert!(page.contains("more than one token"), "{page}");
        let (_, _, page) = request(&api, "GET", "/", &[("cookie", &alice)], "").await;
        let csrf = csrf_of(&page);
        let form = format!("csrf={csrf}&diff_sha256={hash}");
        let path = format!("/proposals/{id}/approve");
        let (status, _, page) = request(&api, "POST", &path, &[("cookie", &both)], &form).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the form's own session decides: {page}"
        );
        assert!(page.contains("decided by approver:alice"), "{page}");
    }

    #[tokio::test]
    async fn wrong_tokens_flooding_sign_in_do_not_lock_out_a_valid_one() {
        let dir = tempfile::tempdir().unwrap();
        let api = api_with(dir.path(), "");
        let mut limited = 0;
        for _ in 0..300 {
            let (status, _, _) = request(&api, "POST", "/sign-in", &[], "token=guess").await;
            limited += usize::from(status == StatusCode::TOO_MANY_REQUESTS);
        }
        assert!(limited > 0, "wrong tokens are held to the shared bucket");
        sign_in_as(&api, ALICE).await;
    }

    #[tokio::test]
    async fn behind_a_proxy_that_rewrites_host_the_page_s_own_forms_still_work() {
        let dir = tempfile::tempdir().unwrap();
        let api = api_with(dir.path(), "");
        let proxied = [
            [
                ("origin", "https://guardian.example"),
                ("sec-fetch-site", "same-origin"),
            ],
            [
                ("origin", "https://guardian.example"),
                ("x-forwarded-host", "guardian.example"),
            ],
        ];
        for headers in proxied {
            let form = format!("token={ALICE}");
            let (status, _, page) = request(&api, "POST", "/sign-in", &headers, &form).await;
            assert_eq!(status, StatusCode::SEE_OTHER, "{headers:?}: {page}");
        }
        let (status, _, _) = request(
            &api,
            "POST",
            "/sign-in",
            &[
                ("origin", "https://evil.example"),
                ("x-forwarded-host", "guardian.example"),
            ],
            &format!("token={ALICE}"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn the_page_s_own_script_and_stylesheet_are_served_and_nothing_else_runs() {
        let dir = tempfile::tempdir().unwrap();
        let api = api_with(dir.path(), "");
        let (status, headers, js) = request(&api, "GET", "/static/page.js", &[], "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/javascript");
        assert!(js.contains("setInterval"));
        let (status, _, css) = request(&api, "GET", "/static/page.css", &[], "").await;
        assert_eq!((status, css.contains("body {")), (StatusCode::OK, true));
    }
}
