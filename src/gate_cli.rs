//! The trust gate's commands: `propose`, `proposals`, `approve`, `reject`, `trust`, `pause`,
//! `resume`. Thin clients of the daemon's API: requests are sent from their `api` types and
//! answers read into theirs (an answer that does not read says which part, and the command
//! fails); which of them a caller may use is decided by the token it presents, never here.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use guardian::api::{
    self, DecisionRequest, DiffFacts, Effect, PatternTrust, PauseRequest, PauseState,
    ProposalRecord, ProposalRequest, ProposalState, ProposalView, UnreadableAnswer,
};
use guardian::trust::Decision;

use crate::{api_target, get, post, ApiArgs, EXIT_BAD_INPUT};

/// `guardian propose` exits with this when the policy denied the proposal.
const EXIT_DENIED: u8 = 1;

#[derive(Args)]
#[command(
    after_help = "Exit codes: 0 accepted (auto, or waiting for approval), 1 denied by the \
                        policy, 2 bad input, 4 the daemon could not be reached."
)]
pub struct ProposeArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The repository holding the change. Only read, under the same hardening as guardian's
    /// own git commands (no hooks, no command-running config); the diff is sent as data.
    #[arg(long, value_name = "PATH")]
    pub repo: PathBuf,
    /// The commit with the fix.
    #[arg(long)]
    pub commit: String,
    /// The commit the fix applies to, as deployed (default: the commit's parent).
    #[arg(long)]
    pub base: Option<String>,
    /// The fix pattern: nil-check, timeout-bump, retry-wrap, feature-flag-off, other.
    #[arg(long)]
    pub pattern: String,
    /// One line on what it fixes.
    #[arg(long)]
    pub summary: String,
    /// The issue it fixes: a Sentry issue's id, short id or link (guardian then judges
    /// whether it stopped after the deploy: a fix after which it goes on firing is
    /// `ineffective` and counts against its pattern), or another tracker's link.
    #[arg(long, value_name = "ISSUE")]
    pub issue: Option<String>,
    /// The feature flag the change is behind: if it regresses, guardian turns the flag off
    /// first ([daemon.flag_off]) and reverts only if that did not help.
    #[arg(long, value_name = "NAME")]
    pub flag: Option<String>,
    /// The tests were run and passed.
    #[arg(long)]
    pub tests_run: bool,
    /// Who wrote the change.
    #[arg(long, value_parser = ["ai", "human"], default_value = "ai")]
    pub kind: String,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ProposalsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Show this proposal in full, with its diff.
    pub id: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(
    after_help = "A decision binds to the diff's SHA-256: if the proposal's diff is not \
                        the one shown, it is refused. Exit codes: 0 done, 2 refused or bad \
                        input, 4 the daemon could not be reached."
)]
pub struct DecideArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The proposal, e.g. prp_0123456789ab.
    pub id: String,
    /// The SHA-256 of the diff being decided on (default: the one the daemon shows now,
    /// printed before deciding).
    #[arg(long, value_name = "SHA256")]
    pub diff: Option<String>,
    /// Why: recorded with the decision (a rejection must say it).
    #[arg(long)]
    pub why: Option<String>,
}

#[derive(Args)]
pub struct TrustArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[arg(long)]
    pub json: bool,
}

/// Prints the daemon's refusal and returns its exit code.
fn refused((code, message): (u8, String)) -> Result<u8> {
    eprintln!("guardian: {}", guardian::display::line(&message));
    Ok(code)
}

pub fn propose(args: &ProposeArgs) -> Result<u8> {
    let (base_url, token) = api_target(&args.api)?;
    let repo = guardian::git::Repo::open(&args.repo)
        .map_err(|e| anyhow::anyhow!("--repo {}: {e}", args.repo.display()))?;
    let base = args
        .base
        .clone()
        .unwrap_or_else(|| format!("{}^", args.commit));
    let (base, commit, patch) = repo
        .diff_between(&base, &args.commit)
        .map_err(|e| anyhow::anyhow!("cannot read the change from {}: {e}", args.repo.display()))?;
    if patch.trim().is_empty() {
        eprintln!("guardian: {base}..{commit} changes nothing; there is nothing to propose");
        return Ok(EXIT_BAD_INPUT);
    }
    let request = ProposalRequest {
        pattern: args.pattern.clone(),
        summary: args.summary.clone(),
        issue_url: None,
        issue: args.issue.clone(),
        flag: args.flag.clone(),
        tests_run: args.tests_run,
        base,
        commit: Some(commit),
        patch,
        kind: args.kind.parse().map_err(anyhow::Error::msg)?,
    };
    let answer = match post(&format!("{base_url}/v1/proposals"), &token, &request) {
        Ok(v) => v,
        Err(e) => return refused(e),
    };
    if args.json {
        outln!("{answer}");
    }
    let proposal: ProposalRecord = api::read(&answer, "proposal")?;
    if !args.json {
        out!("{}", render_proposal(&proposal)?);
    }
    Ok(if proposal.decision == Decision::Deny.as_str() {
        EXIT_DENIED
    } else {
        0
    })
}

/// A proposal id as guardian makes them (`prp_` and 12 hex digits), or why not.
fn proposal_id(id: &str) -> Result<&str, String> {
    let ok =
        id.len() == 16 && id.starts_with("prp_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(id)
    } else {
        Err(format!(
            "{id:?} is not a proposal id (prp_ and 12 hex digits; guardian proposals lists them)"
        ))
    }
}

pub fn proposals(args: &ProposalsArgs) -> Result<u8> {
    if let Some(Err(e)) = args.id.as_deref().map(proposal_id) {
        eprintln!("guardian: {e}");
        return Ok(EXIT_BAD_INPUT);
    }
    let (base, token) = api_target(&args.api)?;
    let url = match &args.id {
        Some(id) => format!("{base}/v1/proposals/{id}"),
        None => format!("{base}/v1/proposals"),
    };
    let answer = match get(&url, &token) {
        Ok(v) => v,
        Err(e) => return refused(e),
    };
    if args.json {
        outln!("{answer}");
    } else if args.id.is_some() {
        let view: ProposalView = api::read(&answer, "proposal")?;
        out!("{}", render_proposal(&view.record)?);
        outln!("\n{}", guardian::display::block(&view.patch));
    } else {
        let list: Vec<ProposalRecord> = api::read(&answer, "proposals")?;
        if list.is_empty() {
            outln!("no proposals yet");
        }
        // One proposal whose assessment does not read (a damaged row) does not hide the
        // others: its risk is left blank and what did not read is said after the list.
        let mut unreadable = Vec::new();
        for p in &list {
            let state = match &p.change_state {
                Some(change) => format!("{} ({})", p.state, text(change)),
                None => p.state.to_string(),
            };
            let risk = match api::assessment(p) {
                Ok(a) => a.risk.score.to_string(),
                Err(e) => {
                    unreadable.push(e);
                    "-".to_owned()
                }
            };
            outln!(
                "{}  {:<24} {:<15} {:<16} risk {:>3}  {}",
                text(&p.id),
                state,
                text(&p.decision),
                text(&p.pattern),
                risk,
                text(&p.summary)
            );
        }
        for e in unreadable {
            eprintln!("guardian: {e}");
        }
    }
    Ok(0)
}

pub fn decide(args: &DecideArgs, approve: bool) -> Result<u8> {
    if let Err(e) = proposal_id(&args.id) {
        eprintln!("guardian: {e}");
        return Ok(EXIT_BAD_INPUT);
    }
    let (base, token) = api_target(&args.api)?;
    if !approve && args.why.as_deref().is_none_or(|w| w.trim().is_empty()) {
        eprintln!("guardian: --why is required to reject: the agent and the record need a reason");
        return Ok(EXIT_BAD_INPUT);
    }
    let diff = match &args.diff {
        Some(d) => d.clone(),
        None => {
            let answer = match get(&format!("{base}/v1/proposals/{}", args.id), &token) {
                Ok(v) => v,
                Err(e) => return refused(e),
            };
            let view: ProposalView = api::read(&answer, "proposal")?;
            out!("{}", render_proposal(&view.record)?);
            text(&view.record.diff_hash)
        }
    };
    let verb = if approve { "approve" } else { "reject" };
    let request = DecisionRequest {
        diff_sha256: diff.clone(),
        why: args.why.clone(),
    };
    let answer = match post(
        &format!("{base}/v1/proposals/{}/{verb}", args.id),
        &token,
        &request,
    ) {
        Ok(v) => v,
        Err(e) => return refused(e),
    };
    let decided: ProposalRecord = api::read(&answer, "proposal")?;
    outln!(
        "{}: {}{} (diff sha256 {}){}",
        text(&decided.id),
        if approve { "approved" } else { "rejected" },
        decided
            .decided_by
            .as_deref()
            .map(|who| format!(" by {}", text(who)))
            .unwrap_or_default(),
        diff,
        match decided.state {
            ProposalState::Shadow => "; shadow mode: guardian will not deploy it",
            ProposalState::Approved => {
                "; guardian deploys it next, once no other change is being watched \
                 (guardian status)"
            }
            _ => "",
        }
    );
    Ok(0)
}

pub fn trust(args: &TrustArgs) -> Result<u8> {
    let (base, token) = api_target(&args.api)?;
    let answer = match get(&format!("{base}/v1/trust"), &token) {
        Ok(v) => v,
        Err(e) => return refused(e),
    };
    if args.json {
        outln!("{answer}");
        return Ok(0);
    }
    let ledger: Vec<PatternTrust> = api::read(&answer, "trust ledger")?;
    outln!(
        "{:<18} {:<15} {:>9} {:>8} {:>8} {:>7} {:>9} {:>11}  why",
        "pattern",
        "level",
        "proposed",
        "approved",
        "deployed",
        "healthy",
        "rollbacks",
        "ineffective"
    );
    for t in &ledger {
        outln!(
            "{:<18} {:<15} {:>9} {:>8} {:>8} {:>7} {:>9} {:>11}  {}",
            text(&t.pattern),
            t.level.as_str(),
            t.proposals,
            t.approved,
            t.deployed,
            t.healthy,
            t.rollbacks,
            t.ineffective,
            text(&t.why)
        );
    }
    // Beside the patterns, the bounded actions; a daemon older than them has no answer.
    match get(&format!("{base}/v1/trust/actions"), &token) {
        Ok(answer) => {
            let actions: Vec<api::ActionTrack> = api::read(&answer, "bounded actions")?;
            outln!("");
            out!("{}", guardian::report::health::actions_text(&actions));
        }
        Err((_, message)) => {
            outln!("");
            outln!(
                "bounded actions: not told by this daemon ({})",
                text(&message)
            );
        }
    }
    Ok(0)
}

/// Text from the daemon as one line a person can trust: strings come from outside (the
/// agent's summary, git's messages), so control and invisible characters are shown escaped.
fn text(raw: &str) -> String {
    guardian::display::line(raw).into_owned()
}

/// A proposal for a person: the decision first, then why, then what the diff does (a patch
/// refused before git read it has no numbers, and no line for them).
fn render_proposal(p: &ProposalRecord) -> Result<String, UnreadableAnswer> {
    let a = api::assessment(p)?;
    let mut out = format!(
        "{}: {} ({}){}\n  pattern {} by {}: {}\n  diff sha256 {}\n",
        text(&p.id),
        text(&p.decision),
        p.state,
        if p.shadow {
            " [shadow mode: nothing is deployed]"
        } else {
            ""
        },
        text(&p.pattern),
        text(&p.proposer),
        text(&p.summary),
        text(&p.diff_hash),
    );
    if let Some(issue) = &p.sentry_issue {
        out.push_str(&format!("  fixes Sentry issue {}\n", text(issue)));
    } else if let Some(url) = &p.issue_url {
        out.push_str(&format!("  issue {}\n", text(url)));
    }
    if let Some(flag) = &p.flag {
        out.push_str(&format!(
            "  behind flag {} (turned off first if it makes things worse)\n",
            text(flag)
        ));
    }
    for rule in &a.rules {
        out.push_str(&format!(
            "  {} {}: {}\n",
            if rule.effect == Effect::Deny {
                "DENY"
            } else {
                "needs approval"
            },
            text(&rule.rule),
            text(&rule.message)
        ));
    }
    out.push_str(&format!("  risk {}/100\n", a.risk.score));
    for f in &a.risk.factors {
        out.push_str(&format!(
            "    {:>+4}  {}: {}\n",
            f.points,
            text(&f.name),
            text(&f.why)
        ));
    }
    if a.facts != DiffFacts::default() {
        out.push_str(&format!(
            "  diff: {} file(s), +{} -{}\n",
            a.facts.files, a.facts.lines_added, a.facts.lines_removed
        ));
    }
    Ok(out)
}

#[derive(Args)]
#[command(
    after_help = "Watches and rollbacks go on while paused; approved proposals wait. \
                        Needs the operator's token."
)]
pub struct PauseArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Why (required to pause: it goes on the audit trail).
    #[arg(long)]
    pub why: Option<String>,
}

/// `guardian pause` / `guardian resume`: the operator's switch for deploys of proposals.
pub fn pause(args: &PauseArgs, paused: bool) -> Result<u8> {
    let (base, token) = api_target(&args.api)?;
    let path = if paused { "pause" } else { "resume" };
    let request = PauseRequest {
        why: args.why.clone(),
    };
    let answer = match post(&format!("{base}/v1/{path}"), &token, &request) {
        Ok(v) => v,
        Err(e) => return refused(e),
    };
    let state: PauseState = api::read(&answer, "pause switch")?;
    if state.paused {
        outln!(
            "deploys of proposals are paused by {}: {}",
            text(state.by.as_deref().unwrap_or_default()),
            text(state.why.as_deref().unwrap_or_default())
        );
    } else {
        outln!("deploys of proposals resume");
    }
    Ok(0)
}
