//! `guardian mcp`, the agent's door, spoken to by a real MCP client (the official SDK's) over
//! stdio: the handshake, the tools it lists, and each tool's answer from a real daemon with
//! the gate, holding the agent's token and nothing more.

use std::process::Command;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

use super::gate::{Gate, ADMIN, AGENT};
use super::rollback::git;

async fn connect(g: &Gate) -> RunningService<RoleClient, ()> {
    let command = tokio::process::Command::new(env!("CARGO_BIN_EXE_guardian")).configure(|cmd| {
        cmd.args(["mcp", "--api", &g.api, "--token-file"])
            .arg(g.token_file(AGENT));
    });
    ().serve(TokioChildProcess::new(command).unwrap())
        .await
        .expect("the MCP handshake (initialize, initialized) completes")
}

async fn call(client: &RunningService<RoleClient, ()>, tool: &str, args: Value) -> CallToolResult {
    let mut params = CallToolRequestParams::new(tool.to_owned());
    if let Value::Object(map) = args {
        params = params.with_arguments(map);
    }
    client.call_tool(params).await.unwrap()
}

/// The tool's answer: the daemon's JSON, or its error text.
fn answer(result: &CallToolResult) -> (bool, Value) {
    let text = &result.content[0].as_text().expect("text content").text;
    (
        result.is_error == Some(true),
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_checks_proposes_and_follows_its_fix_through_mcp() {
    let g = Gate::start(0, false);
    let client = connect(&g).await;
    let info = client.peer_info().expect("the server said who it is");
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("guardian")
    );
    let mut tools: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    tools.sort();
    assert_eq!(
        tools,
        [
            "change",
            "check_paths",
            "check_proposal",
            "deployed",
            "flag_off",
            "incidents",
            "proposal",
            "propose",
            "sentry_issues",
            "trust_ledger"
        ]
    );

    // "May I touch this?" before writing anything.
    let (error, paths) = answer(
        &call(
            &client,
            "check_paths",
            json!({ "paths": ["src/settings.txt", "migrations/002.sql", "docs/x.md"] }),
        )
        .await,
    );
    assert!(!error, "{paths}");
    let verdicts: Vec<(&str, &str)> = paths
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap(), p["verdict"].as_str().unwrap()))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("src/settings.txt", "allow"),
            ("migrations/002.sql", "deny"),
            ("docs/x.md", "deny")
        ]
    );
    assert_eq!(
        paths[1]["why"],
        "migrations/002.sql matches the deny glob \"migrations/**\""
    );

    // A fix written on what is deployed, checked (nothing recorded), then proposed.
    let base = git(&g.agent_repo, &["rev-parse", "HEAD"]);
    let (error, deployed) = answer(&call(&client, "deployed", json!({})).await);
    assert!(!error, "{deployed}");
    assert_eq!(deployed["commit"], base.as_str());
    let commit = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 900\n",
        "Fix: slow upstream",
    );
    let patch = git(
        &g.agent_repo,
        &["diff", "--full-index", "--binary", &base, &commit],
    ) + "\n";
    let fix = json!({
        "base": base, "patch": patch, "pattern": "timeout-bump",
        "summary": "raise the upstream timeout", "tests_run": true, "commit": commit,
    });
    let (error, check) = answer(&call(&client, "check_proposal", fix.clone()).await);
    assert!(!error, "{check}");
    assert_eq!(check["decision"], "needs_approval", "{check}");
    assert_eq!(g.get("/v1/proposals"), json!([]), "a check records nothing");
    let (error, proposed) = answer(&call(&client, "propose", fix).await);
    assert!(!error, "{proposed}");
    assert_eq!(proposed["state"], "pending", "{proposed}");
    let id = proposed["id"].as_str().unwrap();
    let (error, followed) = answer(&call(&client, "proposal", json!({ "id": id })).await);
    assert!(!error, "{followed}");
    assert_eq!(
        (followed["id"].as_str(), followed["state"].as_str()),
        (Some(id), Some("pending"))
    );

    // A flag_off the operator did not configure: refused, saying why, and nothing done.
    let (error, refused) = answer(
        &call(
            &client,
            "flag_off",
            json!({ "flag": "new-total", "reason": "errors on checkout" }),
        )
        .await,
    );
    assert!(error, "{refused}");
    assert!(
        refused
            .to_string()
            .contains("flag_off refused, nothing was done: flag_off is not configured"),
        "{refused}"
    );

    // The ledger and the incidents (none yet).
    let (_, ledger) = answer(&call(&client, "trust_ledger", json!({})).await);
    assert!(
        ledger
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["pattern"] == "timeout-bump"),
        "{ledger}"
    );
    let (_, incidents) = answer(&call(&client, "incidents", json!({})).await);
    assert_eq!(incidents, json!([]));
    // No [daemon.sentry] here: nothing to say, and no error.
    let (error, sentry) = answer(&call(&client, "sentry_issues", json!({})).await);
    assert_eq!((error, sentry), (false, Value::Null));

    // What the agent may not do, it is told, and nothing happens.
    let (error, refused) = answer(&call(&client, "proposal", json!({ "id": "../v1/pause" })).await);
    assert!(error);
    assert_eq!(
        refused,
        "\"../v1/pause\" is not an id guardian gives (prp_ and 12 hex digits)"
    );
    let (error, denied) =
        answer(&call(&client, "change", json!({ "id": "chg_000000000000" })).await);
    assert!(error, "{denied}");
    client.cancel().await.unwrap();
}

#[test]
fn the_door_does_not_open_with_anything_but_the_agents_token() {
    let g = Gate::start(0, false);
    let out = Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(["mcp", "--api", &g.api, "--token-file"])
        .arg(g.token_file(ADMIN))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "guardian: guardian mcp holds only the agent's token ([daemon.gate] agent_token_file); \
         this one is the admin's\n"
    );
    assert!(out.stdout.is_empty(), "nothing on the protocol's channel");
}
