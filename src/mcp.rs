//! `guardian mcp`: the agent's door. A Model Context Protocol server over stdio (the official
//! SDK, `rmcp`) that an agent's harness starts as a subprocess; each tool is one call to the
//! daemon's API with the agent's token, so the daemon decides what the agent may do, exactly
//! as for `guardian propose`. It refuses to start with any other token: a door for the agent
//! must not open with the operator's key.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, ServerHandler, ServiceExt};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{api_target, get, post, ApiArgs, EXIT_BAD_INPUT, EXIT_UNAVAILABLE};
use guardian::api::{self, ChangeKind, ChangeRecord, ChangeState, ProposalRequest, WhoAmI};

/// Incidents `incidents` lists at most, newest first.
const INCIDENTS: usize = 10;

#[derive(clap::Args)]
#[command(
    after_help = "Speaks MCP on standard input and output; logs nothing there. Point the \
                  agent's MCP configuration at this command with the agent's token file."
)]
pub struct McpArgs {
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Serves MCP on stdin/stdout until the client closes it.
pub fn run(args: &McpArgs) -> anyhow::Result<u8> {
    let (base, token) = api_target(&args.api)?;
    match get(&format!("{base}/v1/whoami"), &token) {
        Ok(v) => {
            let who: WhoAmI = api::read(&v, "whoami")?;
            if who.role != "agent" {
                eprintln!(
                    "guardian: guardian mcp holds only the agent's token ([daemon.gate] \
                     agent_token_file); this one is the {}'s",
                    who.role
                );
                return Ok(EXIT_BAD_INPUT);
            }
        }
        Err((code, message)) => {
            eprintln!("guardian: {message}");
            return Ok(code);
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let door = Door::new(base, token);
        let served = door.serve(rmcp::transport::stdio()).await;
        match served {
            Ok(service) => {
                let _ = service.waiting().await;
                Ok(0)
            }
            Err(e) => {
                eprintln!("guardian: the MCP client did not complete its handshake: {e}");
                Ok(EXIT_UNAVAILABLE)
            }
        }
    })
}

#[derive(Clone)]
struct Door {
    base: Arc<String>,
    token: Arc<String>,
    #[allow(dead_code)] // read by `tool_handler`
    tool_router: ToolRouter<Door>,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct PathsArgs {
    /// Repository paths, as in the diff (`src/orders/refund.py`).
    paths: Vec<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct ProposalArgs {
    /// The deployed commit the diff applies to (in the repository guardian deploys from).
    base: String,
    /// The change: `git diff --full-index --binary BASE COMMIT`.
    patch: String,
    /// The fix pattern: nil-check, timeout-bump, retry-wrap, feature-flag-off, other.
    pattern: String,
    /// One line on what it fixes.
    summary: String,
    /// The issue it fixes: a Sentry issue's id, short id or link (guardian then judges
    /// whether it stopped after the deploy: a fix after which it goes on firing is
    /// `ineffective` and counts against its pattern), or another tracker's link.
    issue: Option<String>,
    /// The feature flag the change is behind, if it is behind one: if it regresses, guardian
    /// turns the flag off first and reverts only if that did not help.
    flag: Option<String>,
    /// The tests were run and passed.
    #[serde(default)]
    tests_run: bool,
    /// The commit in the agent's repository, for the record.
    commit: Option<String>,
}

impl ProposalArgs {
    fn request(self) -> ProposalRequest {
        ProposalRequest {
            pattern: self.pattern,
            summary: self.summary,
            issue_url: None,
            issue: self.issue,
            flag: self.flag,
            tests_run: self.tests_run,
            base: self.base,
            commit: self.commit,
            patch: self.patch,
            kind: ChangeKind::Ai,
        }
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
struct FlagOffArgs {
    /// The feature flag to turn off, e.g. `new-checkout-total`.
    flag: String,
    /// Why, in one line (the issue, the errors seen): it goes on the audit trail and to the
    /// on-call email.
    reason: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct ProposalId {
    /// The proposal's id, as `propose` answered it: `prp_` and 12 hex digits.
    id: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct ChangeId {
    /// The change's id (`chg_` and 12 hex digits): a proposal's `change_id` once deployed, or
    /// an incident's `id`.
    id: String,
}

#[tool_router]
impl Door {
    fn new(base: String, token: String) -> Door {
        Door {
            base: Arc::new(base),
            token: Arc::new(token),
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "May I touch these paths? The sandbox policy's answer per path (allow or \
                       deny, with the rule), before writing a fix. Records nothing.",
        annotations(read_only_hint = true)
    )]
    async fn check_paths(&self, Parameters(a): Parameters<PathsArgs>) -> CallToolResult {
        self.call(Call::Post(
            "/v1/policy/paths".into(),
            json!({ "paths": a.paths }),
        ))
        .await
    }

    #[tool(
        description = "What the gate would decide on this diff now (deny, needs_approval or \
                       auto), with every rule that fired and the risk score. Records nothing.",
        annotations(read_only_hint = true)
    )]
    async fn check_proposal(&self, Parameters(a): Parameters<ProposalArgs>) -> CallToolResult {
        self.call(Call::Post(
            "/v1/proposals/check".into(),
            to_value(a.request()),
        ))
        .await
    }

    #[tool(
        description = "Proposes a fix. The gate judges it (the policy, the fix pattern's track \
                       record); it is denied, waits for a person, or is deployed and watched. \
                       Answers the proposal with its id."
    )]
    async fn propose(&self, Parameters(a): Parameters<ProposalArgs>) -> CallToolResult {
        self.call(Call::Post("/v1/proposals".into(), to_value(a.request())))
            .await
    }

    #[tool(
        description = "A proposal: its state (pending, approved, deployed, ...), the gate's \
                       reasons, and the change it became with that change's verdict.",
        annotations(read_only_hint = true)
    )]
    async fn proposal(&self, Parameters(a): Parameters<ProposalId>) -> CallToolResult {
        match checked_id(&a.id, "prp_") {
            Ok(id) => self.call(Call::Get(format!("/v1/proposals/{id}"))).await,
            Err(e) => e,
        }
    }

    #[tool(
        description = "A change guardian watched: its state (watching, healthy, regressed, \
                       rolled_back, ...) and the evidence, signal by signal.",
        annotations(read_only_hint = true)
    )]
    async fn change(&self, Parameters(a): Parameters<ChangeId>) -> CallToolResult {
        match checked_id(&a.id, "chg_") {
            Ok(id) => self.call(Call::Get(format!("/v1/changes/{id}"))).await,
            Err(e) => e,
        }
    }

    #[tool(
        description = "Recent incidents: changes found to make things worse (regressed, \
                       rolled back, escalated), newest first, with their evidence.",
        annotations(read_only_hint = true)
    )]
    async fn incidents(&self) -> CallToolResult {
        let answer = match self.fetch(Call::Get("/v1/changes".into())).await {
            Ok(v) => v,
            Err(e) => return e,
        };
        let changes: Vec<ChangeRecord> = match api::read(&answer, "changes") {
            Ok(c) => c,
            Err(e) => return CallToolResult::error(vec![ContentBlock::text(e.to_string())]),
        };
        let incidents: Vec<ChangeRecord> = changes
            .into_iter()
            .filter(|c| {
                matches!(
                    c.state,
                    ChangeState::Regressed
                        | ChangeState::RollingBack
                        | ChangeState::Verifying
                        | ChangeState::RolledBack
                        | ChangeState::Escalated
                )
            })
            .take(INCIDENTS)
            .collect();
        CallToolResult::success(vec![ContentBlock::text(to_value(incidents).to_string())])
    }

    #[tool(
        description = "Turns a feature flag off now, without a deploy: for a regression you \
                       can stop by switching its feature off. Only flags on the operator's \
                       allow-list, within its rate limit and cool-down; every request, refused \
                       or done, is on the audit trail and emailed. A refusal says why and \
                       nothing is done."
    )]
    async fn flag_off(&self, Parameters(a): Parameters<FlagOffArgs>) -> CallToolResult {
        self.call(Call::Post(
            "/v1/actions/flag_off".into(),
            json!({ "flag": a.flag, "reason": a.reason }),
        ))
        .await
    }

    #[tool(
        description = "What is deployed now: the commit a new fix must be based on (the \
                       `base` of check_proposal and propose), rollbacks included.",
        annotations(read_only_hint = true)
    )]
    async fn deployed(&self) -> CallToolResult {
        self.call(Call::Get("/v1/deployed".into())).await
    }

    #[tool(
        description = "What Sentry said lately: the issues first seen since the change being \
                       watched landed (or in the last day), newest first, with their files and \
                       state, and when Sentry last delivered.",
        annotations(read_only_hint = true)
    )]
    async fn sentry_issues(&self) -> CallToolResult {
        match self.fetch(Call::Get("/v1/status".into())).await {
            Ok(status) => CallToolResult::success(vec![ContentBlock::text(
                status
                    .get("sentry")
                    .cloned()
                    .unwrap_or(Value::Null)
                    .to_string(),
            )]),
            Err(e) => e,
        }
    }

    #[tool(
        description = "The trust ledger: each fix pattern's track record (approved, healthy, \
                       rolled back) and whether it may deploy without a person.",
        annotations(read_only_hint = true)
    )]
    async fn trust_ledger(&self) -> CallToolResult {
        self.call(Call::Get("/v1/trust".into())).await
    }
}

#[tool_handler]
impl ServerHandler for Door {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("guardian", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "guardian decides whether a fix may deploy, deploys it, watches it and rolls it \
                 back if it made things worse. Before writing a fix, check_paths; before \
                 proposing, check_proposal; then propose, and follow the proposal and its \
                 change. Everything goes through the sandbox policy with the agent's rights.",
            )
    }
}

enum Call {
    Get(String),
    Post(String, Value),
}

impl Door {
    /// The daemon's answer as the tool's result; a refusal as a tool error carrying the
    /// daemon's own message, so the agent reads why.
    async fn call(&self, call: Call) -> CallToolResult {
        match self.fetch(call).await {
            Ok(v) => CallToolResult::success(vec![ContentBlock::text(v.to_string())]),
            Err(e) => e,
        }
    }

    /// One request to the daemon, on a blocking thread (the HTTP client blocks).
    async fn fetch(&self, call: Call) -> Result<Value, CallToolResult> {
        let (base, token) = (self.base.clone(), self.token.clone());
        let answer = tokio::task::spawn_blocking(move || match call {
            Call::Get(path) => get(&format!("{base}{path}"), &token),
            Call::Post(path, body) => post(&format!("{base}{path}"), &token, &body),
        })
        .await
        .map_err(|e| (EXIT_UNAVAILABLE, format!("the request failed: {e}")))
        .and_then(|r| r);
        answer.map_err(|(_, message)| CallToolResult::error(vec![ContentBlock::text(message)]))
    }
}

/// An id as guardian makes them (`prefix` and 12 hex digits): anything else would put the
/// agent's text into a URL path.
fn checked_id<'a>(id: &'a str, prefix: &str) -> Result<&'a str, CallToolResult> {
    let ok = id
        .strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(id)
    } else {
        Err(CallToolResult::error(vec![ContentBlock::text(format!(
            "{:?} is not an id guardian gives ({prefix} and 12 hex digits)",
            guardian::display::line(id)
        ))]))
    }
}

fn to_value(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// Keeps `ErrorData` in use where the SDK wants it named.
#[allow(dead_code)]
type McpError = ErrorData;
