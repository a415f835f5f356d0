//! The status page (`GET /`) and its small companions (sign-in, the answer to a form), as
//! HTML. Pure: what the daemon read (`PageInput`) and who is looking (`Visitor`) in, a
//! document out; no clock, no IO. Every outside string goes through `document::esc`, so a
//! proposal's summary or a diff can never become markup.
//!
//! The page needs no JavaScript: a script (`page.js`, served from the daemon, never inline, as
//! the page's Content-Security-Policy demands) only refreshes it while no one is typing. Its
//! CSS (`page.css`) is served the same way; the post-mortem's chart is inline SVG.

use std::fmt::Write as _;

use super::document::esc;
use super::evidence;
use super::units::{self, count, duration, evalue, when};
use crate::api::{
    ActionTrack, ChangeRecord, ChangeState, ChangeView, PatternTrust, ProposalRecord, Status,
};
use crate::core::{BaselineWindow, RouteBaseline, SignalKind};
use crate::gate::roles::Role;

/// The stylesheet, served at `/static/page.css`.
pub const CSS: &str = include_str!("page.css");
/// The refresh script, served at `/static/page.js`.
pub const SCRIPT: &str = include_str!("page.js");

/// What the page shows, read by the daemon at the moment of the request.
#[derive(Debug)]
pub struct PageInput {
    pub status: Status,
    /// Requests a route's baseline needs before the route is compared at all
    /// (`[detector] min_baseline_requests`).
    pub min_baseline_requests: u64,
    /// The chart (SVG) and what it shows: the watched change's, or the last half hour's.
    pub chart: Option<(String, String)>,
    /// Proposals waiting for a person, oldest first, with their patches.
    pub waiting: Vec<ProposalRecord>,
    /// The latest proposals no longer waiting (decided, deployed, failed), newest first,
    /// without patches.
    pub decided: Vec<ProposalRecord>,
    /// Whether this guardian has a trust gate at all.
    pub gate: bool,
    pub patterns: Vec<PatternTrust>,
    pub actions: Vec<ActionTrack>,
    /// The audit trail's size and the hash of its last record.
    pub audit_head: Option<(u64, [u8; 32])>,
    pub checkpoint: Option<crate::audit::Checkpoint>,
}

/// Who is looking, and the secret their forms carry back.
pub struct Visitor<'a> {
    pub role: &'a Role,
    pub csrf: &'a str,
}

/// A whole document around `body`, with the stylesheet and, when `refresh`, the script.
fn document(title: &str, body: &str, refresh: bool) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"same-origin\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/static/page.css\"></head>\n\
         <body>\n{body}{}</body></html>\n",
        esc(title),
        if refresh {
            "<script src=\"/static/page.js\"></script>\n"
        } else {
            ""
        }
    )
}

/// The sign-in form, with why the last try failed.
pub fn sign_in(service: &str, error: Option<&str>) -> String {
    let mut body = format!(
        "<main class=\"narrow\"><h1>guardian · {}</h1>\n",
        esc(service)
    );
    if let Some(e) = error {
        let _ = writeln!(body, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    body.push_str(
        "<form method=\"post\" action=\"/sign-in\" id=\"sign-in\">\
         <label for=\"token\">Token</label>\
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" \
         required autofocus>\
         <button type=\"submit\">Sign in</button></form>\n\
         <p class=\"hint\">Any of guardian's tokens: the operator's (<code>[daemon] token_file</code>), \
         an approver's, or a viewer's (<code>[daemon] viewers</code>), who may only look. The \
         browser keeps a session cookie, not the token.</p></main>\n",
    );
    document(&format!("guardian · {service}: sign in"), &body, false)
}

/// A page that says what a form did (or why it did not), with the way back.
pub fn answer(title: &str, text: &str, ok: bool) -> String {
    let body = format!(
        "<main class=\"narrow\"><h1>{}</h1><p class=\"{}\" role=\"status\">{}</p>\
         <p><a href=\"/\">Back to the status page</a></p></main>\n",
        esc(title),
        if ok { "done" } else { "error" },
        esc(text)
    );
    document(title, &body, false)
}

/// The status page.
pub fn status_page(p: &PageInput, who: &Visitor<'_>) -> String {
    let s = &p.status;
    let mut b = String::new();
    let _ = write!(
        b,
        "<header><h1>guardian · {service}</h1><div class=\"who\">signed in as \
         <b id=\"role\">{role}</b>{readonly}\
         <form method=\"post\" action=\"/sign-out\">{csrf}<button type=\"submit\" \
         class=\"link\">Sign out</button></form></div></header>\n<main id=\"live\">\n",
        service = esc(&s.service),
        role = esc(&who.role.actor()),
        readonly = if who.role.may(crate::gate::roles::Action::Decide) {
            ""
        } else {
            " (read only)"
        },
        csrf = csrf_field(who.csrf),
    );
    let _ = writeln!(
        b,
        "<p class=\"meta\">As of {}. {}</p>",
        esc(&when(s.now)),
        match s.last_tick {
            Some(at) => format!(
                "The decision loop last ticked {} ago.",
                esc(&duration((s.now - at).max(0.0)))
            ),
            None => "<b>The decision loop has not ticked yet.</b>".to_owned(),
        }
    );
    now_section(&mut b, p);
    proposals_section(&mut b, p, who);
    changes_section(&mut b, &s.recent, s.now);
    trust_section(&mut b, p);
    delivery_section(&mut b, s);
    audit_section(&mut b, p);
    b.push_str("</main>\n");
    document(&format!("guardian · {}", s.service), &b, true)
}

fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// A stage's words and the class it is coloured by.
fn stage(c: &ChangeRecord) -> (String, &'static str) {
    match c.state {
        ChangeState::Watching => ("Watching".into(), "watching"),
        ChangeState::Regressed => ("Regressed: undoing it".into(), "bad"),
        ChangeState::RollingBack => ("Regressed: rolling back".into(), "bad"),
        ChangeState::FlaggingOff => (
            format!(
                "Regressed: flag {} turned off, checking the recovery",
                c.flag.as_deref().unwrap_or("?")
            ),
            "bad",
        ),
        ChangeState::Verifying => (
            "Rolled back: checking that the service recovered".into(),
            "bad",
        ),
        other => (other.as_str().replace('_', " "), state_class(other)),
    }
}

fn state_class(state: ChangeState) -> &'static str {
    match state {
        ChangeState::Healthy => "good",
        ChangeState::Watching => "watching",
        ChangeState::Inconclusive | ChangeState::Superseded | ChangeState::Interrupted => "quiet",
        _ => "bad",
    }
}

fn now_section(b: &mut String, p: &PageInput) {
    let s = &p.status;
    b.push_str("<section id=\"now\"><h2>Now</h2>\n");
    // A change handed to a person is the one thing here that asks for someone to act: it
    // leads, in words, until a newer change is decided.
    if let Some(c) = s
        .recent
        .first()
        .filter(|c| c.state == ChangeState::Escalated)
    {
        let _ = writeln!(
            b,
            "<p class=\"action\" id=\"action-needed\" role=\"alert\">ACTION NEEDED: \
             <a href=\"/changes/{id}\"><code>{id}</code></a> (commit <code>{commit}</code>) \
             was handed to a person: {why}. Its post-mortem says what guardian did and what \
             to check.</p>",
            id = esc(&c.id),
            commit = esc(&short(&c.commit)),
            why = esc(c.note.as_deref().unwrap_or("see its post-mortem")),
        );
    }
    match &s.watching {
        Some(w) => watched(b, w, s.now, p.min_baseline_requests),
        None => {
            b.push_str(
                "<p class=\"stage quiet\" id=\"stage\">No change is being watched</p>\n\
                 <p>A change notified now would be judged against this baseline:</p>\n",
            );
            if let Some(preview) = &s.baseline_now {
                baseline(
                    b,
                    &preview.window,
                    &preview.routes,
                    &preview.notes,
                    p.min_baseline_requests,
                );
            }
        }
    }
    if let Some((by, why, since)) = &s.deploys_paused {
        let _ = writeln!(
            b,
            "<p class=\"warn\">Deploys of proposals are paused by {} since {}: {}</p>",
            esc(by),
            esc(&when(*since)),
            esc(why)
        );
    }
    if let Some(id) = &s.deploying {
        let _ = writeln!(
            b,
            "<p class=\"stage watching\" id=\"deploying\">Deploying proposal <code>{}</code></p>",
            esc(id)
        );
    }
    if s.proposals_approved > 0 {
        let _ = writeln!(
            b,
            "<p>{} approved proposal(s) waiting to deploy (one change at a time).</p>",
            s.proposals_approved
        );
    }
    if let Some((svg, caption)) = &p.chart {
        let _ = writeln!(
            b,
            "<figure id=\"chart\"><div class=\"scroll\">{svg}</div>\
             <figcaption>{}</figcaption></figure>",
            esc(caption)
        );
    }
    b.push_str("</section>\n");
}

fn watched(b: &mut String, w: &ChangeView, now: f64, min_requests: u64) {
    let c = &w.record;
    let (words, class) = stage(c);
    let _ = writeln!(
        b,
        "<p class=\"stage {class}\" id=\"stage\" data-state=\"{}\">{}</p>",
        c.state.as_str(),
        esc(&words)
    );
    let _ = writeln!(
        b,
        "<p><a href=\"/changes/{id}\"><code>{id}</code></a> · commit <code>{commit}</code> · \
         {kind}{summary}</p>",
        id = esc(&c.id),
        commit = esc(&c.commit),
        kind = c.kind,
        summary = c
            .summary
            .as_deref()
            .map(|t| format!(" · {}", esc(t)))
            .unwrap_or_default(),
    );
    // Why it is being rolled back or checked, as the record says it.
    if !matches!(c.state, ChangeState::Watching) {
        if let Some(note) = &c.note {
            let _ = writeln!(b, "<p class=\"why\">{}</p>", esc(note));
        }
    }
    let Some(r) = &w.live else {
        return;
    };
    // A recovery check counts from its own start, not the change's.
    let started = match c.state {
        ChangeState::Verifying | ChangeState::FlaggingOff => r.change_at,
        _ => c.landed_at,
    };
    if let Some((elapsed, total)) = super::status::watch_progress(r, started, now) {
        let _ = writeln!(
            b,
            "<p class=\"progress\"><progress id=\"progress\" value=\"{elapsed:.0}\" \
             max=\"{total:.0}\"></progress> {} of {} ({:.0}%)</p>",
            esc(&duration(elapsed)),
            esc(&duration(total)),
            100.0 * elapsed / total
        );
    }
    // Before against after, or the canary's new version against the old one beside it.
    let (now, then) = match r.design {
        crate::core::Design::BeforeAfter => ("Now", "Baseline"),
        crate::core::Design::Concurrent => ("New", "Old"),
    };
    let _ = writeln!(
        b,
        "<div class=\"scroll\"><table id=\"signals\"><tr><th>Signal</th><th>Standing</th>\
         <th>{now}</th><th>{then}</th><th>Evidence (e-value)</th><th>Decides at</th></tr>",
    );
    for sig in &r.signals {
        let (after, before) = match sig.signal {
            SignalKind::Latency => (
                sig.effect_ratio
                    .map(|x| format!("median {}", units::ratio(x)))
                    .unwrap_or_else(|| "-".into()),
                "1.00x".to_owned(),
            ),
            _ => (
                units::percent(sig.after.rate),
                units::percent(sig.baseline.rate),
            ),
        };
        let _ = writeln!(
            b,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if sig.regressed { "bad" } else { "" },
            esc(&evidence::title(sig)),
            esc(evidence::standing(sig)),
            esc(&after),
            esc(&before),
            esc(&evalue(sig.e_value)),
            esc(&evalue(sig.e_value_threshold)),
        );
    }
    b.push_str("</table></div>\n");
    if let Some(claim) = &r.claim {
        let _ = writeln!(
            b,
            "<p>Claims to fix: {}</p>",
            esc(&evidence::claim_outcome(claim))
        );
    }
    baseline(
        b,
        &r.baseline_window,
        &r.baseline_routes,
        &r.baseline_notes,
        min_requests,
    );
}

/// The baseline, and each route's readiness: compared only with enough requests.
fn baseline(
    b: &mut String,
    window: &BaselineWindow,
    routes: &[RouteBaseline],
    notes: &[String],
    min_requests: u64,
) {
    let total: u64 = routes.iter().map(|r| r.requests).sum();
    let _ = writeln!(
        b,
        "<p id=\"baseline\">Baseline: {} of known-good traffic, {} requests{}.</p>",
        esc(&duration(window.covered_secs)),
        count(total),
        if window.excluded_secs > 0.0 {
            format!(
                " ({} in between left out: earlier deploys or incidents)",
                esc(&duration(window.excluded_secs))
            )
        } else {
            String::new()
        }
    );
    for note in notes {
        let _ = writeln!(b, "<p class=\"warn\">{}</p>", esc(note));
    }
    if routes.is_empty() {
        return;
    }
    b.push_str(
        "<div class=\"scroll\"><table id=\"routes\"><tr><th>Route</th><th>Ready</th>\
         <th>Requests</th><th>Errors</th></tr>\n",
    );
    for r in routes {
        let ready = if r.requests >= min_requests {
            "<td class=\"good\">ready</td>".to_owned()
        } else {
            format!(
                "<td class=\"warn\">thin: {} of {} needed</td>",
                count(r.requests),
                count(min_requests)
            )
        };
        let _ = writeln!(
            b,
            "<tr><td><code>{}</code></td>{ready}<td>{}</td><td>{}</td></tr>",
            esc(&r.route),
            count(r.requests),
            count(r.errors)
        );
    }
    b.push_str("</table></div>\n");
}

fn proposals_section(b: &mut String, p: &PageInput, who: &Visitor<'_>) {
    if !p.gate {
        return;
    }
    let waiting = p.status.proposals_waiting;
    let _ = writeln!(
        b,
        "<section id=\"proposals\"><h2>Proposals waiting for a person ({waiting})</h2>"
    );
    if p.waiting.is_empty() {
        b.push_str("<p class=\"quiet\">None.</p>\n");
    } else if waiting > p.waiting.len() {
        let _ = writeln!(
            b,
            "<p>The oldest {} are shown; <code>guardian proposals</code> lists them all.</p>",
            p.waiting.len()
        );
    }
    let decides = who.role.may(crate::gate::roles::Action::Decide);
    for prop in &p.waiting {
        proposal(b, prop, who, decides);
    }
    if !p.decided.is_empty() {
        // What became of the latest ones: a deploy that failed must not just vanish.
        b.push_str(
            "<h3>Decided lately</h3><div class=\"scroll\"><table id=\"decided\"><tr>\
             <th>Proposal</th><th>Pattern</th><th>State</th><th>By</th><th>Change</th>\
             <th>Note</th></tr>\n",
        );
        for d in &p.decided {
            let state = d.state.as_str();
            let class = match state {
                "deployed" | "approved" | "deploying" => "",
                _ => "bad",
            };
            let _ = writeln!(
                b,
                "<tr data-proposal=\"{id}\"><td><code>{id}</code></td><td>{pattern}</td>\
                 <td class=\"{class}\">{state}</td><td>{by}</td><td>{change}</td><td>{note}</td></tr>",
                id = esc(&d.id),
                pattern = esc(&d.pattern),
                by = esc(d.decided_by.as_deref().unwrap_or("the policy")),
                change = match (&d.change_id, &d.change_state) {
                    (Some(c), Some(st)) => format!(
                        "<a href=\"/changes/{c}\"><code>{c}</code></a> {}",
                        esc(st),
                        c = esc(c)
                    ),
                    (Some(c), None) => format!("<code>{}</code>", esc(c)),
                    _ => String::new(),
                },
                note = esc(d.note.as_deref().or(d.decided_note.as_deref()).unwrap_or("")),
            );
        }
        b.push_str("</table></div>\n");
    }
    b.push_str("</section>\n");
}

fn proposal(b: &mut String, p: &ProposalRecord, who: &Visitor<'_>, decides: bool) {
    let id = esc(&p.id);
    let _ = writeln!(
        b,
        "<article class=\"proposal\" id=\"proposal-{id}\"><h3><code>{id}</code> · {pattern}</h3>\n\
         <p>{summary}</p>\n<p class=\"meta\">Proposed by {proposer}, {at}. The policy says \
         <b>{decision}</b>{risk}.{flag}{issue}</p>",
        pattern = esc(&p.pattern),
        summary = esc(&p.summary),
        proposer = esc(&p.proposer),
        at = esc(&when(p.created_at)),
        decision = esc(&p.decision.replace('_', " ")),
        risk = match crate::api::assessment(p) {
            Ok(a) => format!(", risk {}/100", a.risk.score),
            Err(_) => ", its assessment cannot be read".to_owned(),
        },
        flag = p
            .flag
            .as_deref()
            .map(|f| format!(" Behind flag <code>{}</code>.", esc(f)))
            .unwrap_or_default(),
        issue = p
            .sentry_issue
            .as_deref()
            .map(|i| format!(" Claims to fix Sentry issue <code>{}</code>.", esc(i)))
            .unwrap_or_default(),
    );
    if let Ok(a) = crate::api::assessment(p) {
        // The factors that added to the score; the rest say "+0".
        let counted: Vec<_> = a.risk.factors.iter().filter(|f| f.points != 0).collect();
        if !counted.is_empty() {
            b.push_str("<ul class=\"factors\">");
            for f in counted {
                let _ = write!(b, "<li>{:+} {}</li>", f.points, esc(&f.why));
            }
            b.push_str("</ul>\n");
        }
    }
    let lines = p.patch.lines().count();
    let _ = writeln!(
        b,
        "<details open id=\"diff-{id}\"><summary>The diff ({lines} lines), SHA-256 <code class=\"hash\">{}</code>\
         </summary><pre class=\"diff\">{}</pre></details>",
        esc(&p.diff_hash),
        diff_lines(&p.patch)
    );
    if decides {
        let hidden = format!(
            "{}<input type=\"hidden\" name=\"diff_sha256\" value=\"{}\">",
            csrf_field(who.csrf),
            esc(&p.diff_hash)
        );
        let _ = writeln!(
            b,
            "<div class=\"decide\"><form method=\"post\" action=\"/proposals/{id}/approve\">\
             {hidden}<button type=\"submit\" class=\"approve\">Approve this diff</button></form>\
             <form method=\"post\" action=\"/proposals/{id}/reject\">{hidden}\
             <input type=\"text\" name=\"why\" required maxlength=\"2000\" \
             placeholder=\"why (goes on the audit trail)\" aria-label=\"why reject\">\
             <button type=\"submit\" class=\"reject\">Reject</button></form></div>"
        );
    } else {
        let _ = writeln!(
            b,
            "<p class=\"quiet\">An approver decides; the {} token may not.</p>",
            esc(&who.role.actor())
        );
    }
    b.push_str("</article>\n");
}

/// The patch, escaped line by line, added and removed lines marked for colour.
fn diff_lines(patch: &str) -> String {
    let mut out = String::with_capacity(patch.len() + patch.len() / 4);
    // Split on newlines only: `lines()` would drop a carriage return at a line's end, and a
    // `\r` the approver cannot see is a change they did not approve. `esc` shows it.
    for line in patch.split_terminator('\n') {
        let class = if line.starts_with("+++") || line.starts_with("---") {
            "file"
        } else if line.starts_with('+') {
            "add"
        } else if line.starts_with('-') {
            "del"
        } else if line.starts_with("@@") {
            "hunk"
        } else {
            ""
        };
        // Each line is a block of its own (its colour spans the width): no newline between.
        let _ = write!(out, "<span class=\"{class}\">{}</span>", esc(line));
    }
    out
}

fn changes_section(b: &mut String, recent: &[ChangeRecord], now: f64) {
    b.push_str("<section id=\"changes\"><h2>Recent changes</h2>\n");
    if recent.is_empty() {
        b.push_str("<p class=\"quiet\">None yet.</p></section>\n");
        return;
    }
    // What happened first, then to what and why, then when: a phone shows the first columns.
    b.push_str(
        "<div class=\"scroll\"><table><tr><th>Change</th><th>State</th><th>Evidence</th>\
         <th>Landed (UTC)</th><th>Commit</th><th>Kind</th></tr>\n",
    );
    for c in recent {
        // Why a person has it, when one does; else what regressed; else the record's note.
        let summary = match (c.state, evidence::stored(c)) {
            (ChangeState::Escalated | ChangeState::Inconclusive, _) if c.note.is_some() => {
                c.note.clone().unwrap_or_default()
            }
            (_, Ok(Some(r))) if r.signals.iter().any(|s| s.regressed) => {
                evidence::regression_summary(&r)
            }
            _ => c.note.clone().unwrap_or_default(),
        };
        let _ = writeln!(
            b,
            "<tr data-change=\"{id}\"><td><a href=\"/changes/{id}\"><code>{id}</code></a></td>\
             <td class=\"{class}\">{state}</td><td>{summary}</td><td>{landed}</td>\
             <td><code>{commit}</code></td><td>{kind}</td></tr>",
            id = esc(&c.id),
            landed = esc(&units::clock(c.landed_at, now)),
            commit = esc(&short(&c.commit)),
            kind = c.kind,
            class = state_class(c.state),
            state = c.state.as_str(),
            summary = esc(&summary),
        );
    }
    b.push_str("</table></div></section>\n");
}

fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}

fn trust_section(b: &mut String, p: &PageInput) {
    if !p.gate && p.actions.iter().all(|a| a.attempts == 0 && a.refused == 0) {
        return;
    }
    b.push_str("<section id=\"trust\"><h2>Trust ledger</h2>\n");
    if p.gate {
        if p.patterns.is_empty() {
            b.push_str("<p class=\"quiet\">No fix pattern has a record yet.</p>\n");
        } else {
            b.push_str(
                "<div class=\"scroll\"><table id=\"patterns\"><tr><th>Pattern</th><th>Level</th>\
                 <th>Earned</th><th>Healthy</th><th>Rolled back</th><th>Ineffective</th>\
                 <th>Why</th></tr>\n",
            );
            for t in &p.patterns {
                let _ = writeln!(
                    b,
                    "<tr><td><code>{}</code></td><td class=\"{}\">{}</td><td>{} of {}</td>\
                     <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&t.pattern),
                    match t.level {
                        crate::api::Level::Auto => "good",
                        crate::api::Level::NeedsApproval => "quiet",
                    },
                    t.level.as_str().replace('_', " "),
                    t.earned,
                    t.needed,
                    t.healthy,
                    t.rollbacks,
                    t.ineffective,
                    esc(&t.why)
                );
            }
            b.push_str("</table></div>\n");
        }
    }
    let actions: Vec<&ActionTrack> = p
        .actions
        .iter()
        .filter(|a| a.attempts > 0 || a.refused > 0)
        .collect();
    if !actions.is_empty() {
        b.push_str(
            "<div class=\"scroll\"><table id=\"actions\"><tr><th>Action</th><th>Attempts</th>\
             <th>Verified</th><th>Escalated</th><th>Shadow</th><th>Refused</th></tr>\n",
        );
        for a in actions {
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.action),
                a.attempts,
                a.verified,
                a.escalated,
                a.shadow,
                a.refused
            );
        }
        b.push_str("</table></div>\n");
    }
    b.push_str("</section>\n");
}

fn delivery_section(b: &mut String, s: &Status) {
    b.push_str("<section id=\"sources\"><h2>Sources and delivery</h2><ul>\n");
    for src in &s.sources {
        let _ = writeln!(
            b,
            "<li{}>Log <code>{}</code>: {}, {}, {} bad lines</li>",
            if src.tail.file_exists {
                ""
            } else {
                " class=\"warn\""
            },
            esc(&src.name),
            if src.tail.file_exists {
                "present"
            } else {
                "MISSING"
            },
            src.idle_secs.map_or("nothing read yet".to_owned(), |i| {
                format!("last line {} ago", esc(&duration(i)))
            }),
            src.bad_lines
        );
    }
    for t in &s.scrapes {
        let _ = writeln!(
            b,
            "<li>Scrape <code>{}</code>: {}{}</li>",
            esc(&t.name),
            t.age_secs
                .map_or("no successful scrape yet".to_owned(), |a| format!(
                    "last success {} ago",
                    esc(&duration(a))
                )),
            t.last_error
                .as_deref()
                .map(|e| format!("; last error: {}", esc(e)))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        b,
        "<li{}>Alert emails waiting: {}{}</li>",
        if s.pending_emails > 0 {
            " class=\"warn\""
        } else {
            ""
        },
        s.pending_emails,
        s.pending_email_trouble
            .as_ref()
            .map(|(e, tries)| format!(" (last of {tries} tries failed: {})", esc(e)))
            .unwrap_or_default()
    );
    let _ = writeln!(
        b,
        "<li{}>Notifications waiting: {}{}</li>",
        if s.pending_notifications > 0 {
            " class=\"warn\""
        } else {
            ""
        },
        s.pending_notifications,
        s.pending_notification_trouble
            .as_deref()
            .map(|e| format!(" (last try failed: {})", esc(e)))
            .unwrap_or_default()
    );
    b.push_str("</ul></section>\n");
}

fn audit_section(b: &mut String, p: &PageInput) {
    b.push_str("<section id=\"audit\"><h2>Audit trail</h2>\n");
    match p.audit_head {
        Some((size, hash)) => {
            let _ = writeln!(
                b,
                "<p id=\"audit-head\">{} records; the last one's hash is \
                 <code class=\"hash\">{}</code>.</p>",
                count(size),
                hex(&hash)
            );
        }
        None => b.push_str("<p class=\"quiet\">Empty.</p>\n"),
    }
    match &p.checkpoint {
        Some(c) => {
            let _ = writeln!(
                b,
                "<p id=\"checkpoint\">Last signed checkpoint: records 1 to {}, head \
                 <code class=\"hash\">{}</code>, key <code>{}</code>{}.</p>",
                count(c.size),
                hex(&c.head),
                hex(&c.key_id),
                c.recorded
                    .map(|(_, at)| format!(", signed {}", esc(&when(at))))
                    .unwrap_or_default()
            );
        }
        None => b.push_str("<p class=\"quiet\">No checkpoint signed yet.</p>\n"),
    }
    b.push_str(
        "<p class=\"hint\">Check the trail against a checkpoint an email carried: \
         <code>guardian audit verify</code>.</p></section>\n",
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testing::change;

    const T0: f64 = 1_764_000_000.0;

    fn status(recent: Vec<ChangeRecord>) -> Status {
        serde_json::from_value(serde_json::json!({
            "service": "shop<script>",
            "now": T0,
            "watching": null,
            "baseline_now": null,
            "recent": recent,
            "sources": [],
            "scrapes": [],
            "pending_emails": 0,
            "pending_email_trouble": null,
            "deploying": null,
            "proposals_waiting": 1,
            "deploys_paused": null,
            "last_tick": T0 - 0.2,
        }))
        .unwrap()
    }

    fn input(recent: Vec<ChangeRecord>, waiting: Vec<ProposalRecord>) -> PageInput {
        PageInput {
            status: status(recent),
            min_baseline_requests: 100,
            chart: None,
            waiting,
            decided: Vec::new(),
            gate: true,
            patterns: Vec::new(),
            actions: Vec::new(),
            audit_head: Some((42, [0xab; 32])),
            checkpoint: None,
        }
    }

    fn proposal(summary: &str, patch: &str) -> ProposalRecord {
        serde_json::from_value::<ProposalRecord>(serde_json::json!({
            "id": "prp_0123456789ab", "created_at": T0, "updated_at": T0,
            "proposer": "agent", "kind": "ai", "pattern": "nil_check", "summary": summary,
            "issue_url": null, "tests_run": true, "base_sha": "b", "claimed_sha": null,
            "diff_hash": "d1ff", "tree_sha": null, "decision": "needs_approval",
            "assessment": {}, "shadow": false, "state": "pending", "decided_by": null,
            "decided_note": null, "approved_hash": null, "approved_tree": null,
            "change_id": null, "change_state": null, "note": null,
        }))
        .map(|mut p| {
            p.patch = patch.to_owned();
            p
        })
        .unwrap()
    }

    #[test]
    fn outside_text_is_escaped_everywhere_it_is_shown() {
        let mut c = change(
            ChangeState::RolledBack,
            "<img src=x onerror=alert(1)>",
            None,
        );
        c.summary = Some("<b>bold</b>".into());
        let p = proposal(
            "</article><script>alert(1)</script>",
            "+<script>alert(2)</script>\n-\"quoted\" & 'single'\n",
        );
        let viewer = Role::Approver("alice".into());
        let page = status_page(
            &input(vec![c], vec![p]),
            &Visitor {
                role: &viewer,
                csrf: "c\"srf",
            },
        );
        for raw in ["<script>alert", "<img", "<b>bold", "c\"srf", "shop<script>"] {
            assert!(!page.contains(raw), "{raw} reached the page unescaped");
        }
        assert!(page.contains("&lt;script&gt;alert(2)&lt;/script&gt;"));
        assert!(
            page.contains("<span class=\"del\">-&quot;quoted&quot; &amp; &#39;single&#39;</span>")
        );
        assert_eq!(
            page.matches("<script").count(),
            1,
            "the one script is the page's own"
        );
        assert!(page.contains("<script src=\"/static/page.js\"></script>"));
    }

    #[test]
    fn an_approver_gets_forms_bound_to_the_diff_and_a_viewer_gets_none() {
        let waiting = vec![proposal("bump the timeout", "+x\n")];
        let alice = Role::Approver("alice".into());
        let page = status_page(
            &input(Vec::new(), waiting),
            &Visitor {
                role: &alice,
                csrf: "s3cret",
            },
        );
        assert!(page.contains("action=\"/proposals/prp_0123456789ab/approve\""));
        assert!(page.contains("action=\"/proposals/prp_0123456789ab/reject\""));
        assert_eq!(
            page.matches("name=\"diff_sha256\" value=\"d1ff\"").count(),
            2
        );
        // Every form carries the session's secret: the two decisions and sign-out.
        assert_eq!(page.matches("name=\"csrf\" value=\"s3cret\"").count(), 3);
        assert_eq!(page.matches("<form").count(), 3);

        let bob = Role::Viewer("bob".into());
        let page = status_page(
            &input(Vec::new(), vec![proposal("bump the timeout", "+x\n")]),
            &Visitor {
                role: &bob,
                csrf: "s3cret",
            },
        );
        assert!(!page.contains("/approve"));
        assert!(page.contains("viewer:bob</b> (read only)"));
        assert!(page.contains("An approver decides; the viewer:bob token may not."));
        assert_eq!(page.matches("<form").count(), 1, "sign-out only");
    }

    #[test]
    fn a_change_handed_to_a_person_leads_the_page_with_why() {
        let escalated = change(
            ChangeState::Escalated,
            "the revert did not help (slow requests 0.95% -> 5.05%)",
            None,
        );
        let admin = Role::Admin;
        let visitor = Visitor {
            role: &admin,
            csrf: "x",
        };
        let page = status_page(&input(vec![escalated.clone()], Vec::new()), &visitor);
        let banner = page.find("ACTION NEEDED").expect("a banner");
        assert!(
            banner < page.find("id=\"stage\"").unwrap(),
            "above everything else"
        );
        assert!(page.contains("handed to a person: the revert did not help (slow requests"));
        assert!(
            page.contains("<td class=\"bad\">escalated</td><td>the revert did not help"),
            "the row says why a person has it"
        );
        let mut later = change(ChangeState::Healthy, "", None);
        later.id = "chg_later".into();
        let page = status_page(&input(vec![later, escalated], Vec::new()), &visitor);
        assert!(
            !page.contains("ACTION NEEDED"),
            "once a newer change is decided"
        );
    }

    #[test]
    fn a_thin_route_is_shown_not_ready_with_what_it_needs() {
        let mut b = String::new();
        let routes = [
            RouteBaseline {
                route: "GET /".into(),
                requests: 5000,
                errors: 3,
            },
            RouteBaseline {
                route: "POST /pay".into(),
                requests: 40,
                errors: 0,
            },
        ];
        baseline(&mut b, &BaselineWindow::default(), &routes, &[], 100);
        assert!(
            b.contains(
                "<td><code>GET /</code></td><td class=\"good\">ready</td><td>5,000</td><td>3</td>"
            ),
            "{b}"
        );
        assert!(b.contains("thin: 40 of 100 needed"), "{b}");
        assert!(b.contains("5,040 requests"), "{b}");
    }

    #[test]
    fn the_sign_in_page_asks_for_a_token_and_says_why_it_failed() {
        let page = sign_in("shop", Some("that token is not <valid>"));
        assert!(page.contains("type=\"password\" id=\"token\" name=\"token\""));
        assert!(page.contains("that token is not &lt;valid&gt;"));
        assert!(
            !page.contains("<script"),
            "nothing to refresh before sign-in"
        );
    }
}
