//! `guardian demo`: the whole story on one machine in about a minute, with nothing installed.
//!
//! A throw-away git repository holds a tiny app's configuration; the app (served by this same
//! binary) serves HTTP and writes an access log; a client drives traffic at it; guardian runs as
//! the real daemon on that log. Then an "AI fix" lands that breaks the app, guardian notices,
//! reverts it in the repository, runs the redeploy hook (a script that deploys what the
//! repository holds), and checks that the service recovered. Everything runs for real: only the
//! timings are shortened (a one-minute baseline, a short recovery check).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::config::Config;
use crate::daemon;

/// What the demo app serves, read from its deployed configuration file.
#[derive(Clone, Copy, Debug, PartialEq)]
struct AppBehaviour {
    error_rate: f64,
    latency_ms: u64,
}

fn read_behaviour(path: &Path) -> Option<AppBehaviour> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: toml::Value = toml::from_str(&text).ok()?;
    Some(AppBehaviour {
        error_rate: value.get("error_rate")?.as_float()?,
        latency_ms: value.get("latency_ms")?.as_integer()?.max(0) as u64,
    })
}

struct App {
    behaviour: Mutex<AppBehaviour>,
    log: Mutex<std::fs::File>,
    served: AtomicU64,
}

/// The app: fails a share of requests and writes one JSON line per request, as an app behind
/// a proxy would have its access log written.
async fn serve(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    let b = *app.behaviour.lock().unwrap_or_else(|p| p.into_inner());
    let n = app.served.fetch_add(1, Ordering::Relaxed);
    // A fixed pseudo-random sequence: the demo tells the same story every time.
    let draw = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    // The time the request takes is drawn from the same sequence (the configured latency, give
    // or take 20%) and logged as drawn, not measured: on a machine busy with other work (a CI
    // run, a laptop compiling) a 10 ms sleep takes 10 to 15 ms depending on the moment, and the
    // recovery check rightly calls that slower than the baseline. That is the host, not the
    // change, and the demo is about the change.
    let jitter = (n.wrapping_mul(0xD1B5_4A32_D192_ED03) >> 11) as f64 / (1u64 << 53) as f64;
    let latency_ms = b.latency_ms as f64 * (0.8 + 0.4 * jitter);
    tokio::time::sleep(Duration::from_secs_f64(latency_ms / 1000.0)).await;
    let status = if draw < b.error_rate { 500 } else { 200 };
    let line = format!(
        "{{\"ts\": {:.3}, \"status\": {status}, \"latency_ms\": {latency_ms:.1}, \"route\": \"/cart\"}}\n",
        daemon::now(),
    );
    let _ = app
        .log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .write_all(line.as_bytes());
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (code, if status == 200 { "ok\n" } else { "error\n" })
}

/// When the demo started: every line it prints says how far into the story it is.
static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn say(text: &str) {
    let elapsed = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    println!("[{elapsed:>5.1} s] {text}");
}

fn git(repo: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=demo developer",
            "-c",
            "user.email=dev@example.com",
        ])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run git (is it installed?): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

const GOOD: &str =
    "# The demo app's behaviour: what share of requests fail, how long each takes.\n\
                    error_rate = 0.01\nlatency_ms = 10\n";
const BAD: &str = "# The demo app's behaviour: what share of requests fail, how long each takes.\n\
                   # Fix: validate cart items strictly (rejects legacy item ids).\n\
                   error_rate = 0.45\nlatency_ms = 10\n";

/// Runs the demo in `dir` (a new temporary directory when `None`), removing it at the end
/// unless `keep`.
pub fn run(dir: Option<PathBuf>, keep: bool) -> Result<(), String> {
    START.get_or_init(Instant::now);
    let temporary = dir.is_none();
    let root = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "guardian-demo-{}-{}",
            std::process::id(),
            daemon::now() as u64
        ))
    });
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let repo = root.join("app");
    let live = root.join("live");
    std::fs::create_dir_all(&repo).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&live).map_err(|e| e.to_string())?;
    say(&format!("workspace: {}", root.display()));

    // The repository the deploys come from, and the deployed copy the app serves.
    git(&repo, &["init", "-q", "-b", "main"])?;
    std::fs::write(repo.join("app.toml"), GOOD).map_err(|e| e.to_string())?;
    git(&repo, &["add", "app.toml"])?;
    git(&repo, &["commit", "-q", "-m", "app: first release"])?;
    std::fs::copy(repo.join("app.toml"), live.join("app.toml")).map_err(|e| e.to_string())?;
    let hook = root.join("redeploy.sh");
    std::fs::write(
        &hook,
        "#!/bin/sh\n# The redeploy hook: deploy what the repository holds.\nset -e\n\
         cp \"$GUARDIAN_REPO/app.toml\" \"$DEMO_LIVE/app.toml\"\n\
         echo \"deployed $(git -C \"$GUARDIAN_REPO\" rev-parse --short HEAD)\"\n",
    )
    .map_err(|e| e.to_string())?;
    std::env::set_var("DEMO_LIVE", &live);
    let token = random_token()?;
    write_private(&root.join("token"), &token)?;
    let log = root.join("access.jsonl");
    std::fs::write(&log, "").map_err(|e| e.to_string())?;
    // A request is slow past 250 ms, as a service's SLO would say, rather than past the
    // baseline's p99: the demo's app answers in 10 ms on the machine that also runs guardian
    // and the traffic, and on a loaded machine scheduling alone makes a share of them 20-30 ms,
    // which the recovery check would read as the revert leaving the service slower.
    let config_text = format!(
        "[detector]\nbaseline_secs = 60\nwatch_secs = 300\nslow_threshold_ms = 250\n\n\
         [daemon]\nservice = \"demo shop\"\nstate_dir = {:?}\nlisten = \"127.0.0.1:0\"\ntoken_file = {:?}\n\n\
         [[daemon.logs]]\nname = \"app\"\npath = {:?}\nformat = \"jsonl\"\n\n\
         [daemon.rollback]\nrepo = {:?}\nhook = [\"sh\", {:?}]\nhook_timeout_secs = 30\nverify_secs = 15\n",
        root.join("state"),
        root.join("token"),
        log,
        repo,
        hook
    );
    std::fs::write(root.join("guardian.toml"), &config_text).map_err(|e| e.to_string())?;
    let config = Config::parse(&config_text).map_err(|e| e.to_string())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let kept = keep || !temporary;
    let result = runtime.block_on(story(&root, &repo, &live, &log, config, &token));
    runtime.shutdown_timeout(Duration::from_secs(5));
    // Where to look is told only of files that stay: the daemon has stopped, so the record is
    // read from the state database, and a removed workspace is not pointed to at all.
    match &result {
        Ok(id) => println!("{}", look_next(&root, id, kept)),
        Err(_) if kept => say(&format!(
            "kept everything in {}; remove it with: rm -rf {}",
            root.display(),
            shell_word(&root)
        )),
        Err(_) => {}
    }
    if !kept {
        let _ = std::fs::remove_dir_all(&root);
    }
    result.map(|_| ())
}

/// The demo's closing words: where to look and how to remove it all, when its files are kept;
/// how to keep them, when they are not.
fn look_next(root: &Path, change_id: &str, kept: bool) -> String {
    if !kept {
        return format!(
            "The workspace {} is removed now. To look around afterwards (the revert, the \
             record, the post-mortem), run: guardian demo --keep",
            root.display()
        );
    }
    let config = root.join("guardian.toml");
    format!(
        "Where to look next (kept in {root}):\n\
         \x20 the revert:          git -C {repo} log -2 --stat\n\
         \x20 the post-mortem:     guardian postmortem {change_id} --config {config}\n\
         \x20 the audit trail:     guardian audit verify --config {config}\n\
         \x20 the state database:  {db}\n\
         \x20 the config it ran:   {config}\n\
         Remove it all with: rm -rf {root}",
        root = shell_word(root),
        repo = shell_word(&root.join("app")),
        config = shell_word(&config),
        db = shell_word(&root.join("state/guardian.db")),
    )
}

/// A path as one word a shell reads back the same.
fn shell_word(path: &Path) -> String {
    crate::report::text::shell_line(&[path.display().to_string()])
}

/// Writes a file only its owner may read, whatever the umask: the demo's API token.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::os::unix::fs::PermissionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    // One left by an earlier run in the same --dir keeps its mode: made private too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A bearer token for the demo's API, from the OS's randomness.
fn random_token() -> Result<String, String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

async fn story(
    root: &Path,
    repo: &Path,
    live: &Path,
    log: &Path,
    config: Config,
    token: &str,
) -> Result<String, String> {
    // The app, reloading its deployed configuration when it changes.
    let app = Arc::new(App {
        behaviour: Mutex::new(read_behaviour(&live.join("app.toml")).ok_or("bad app.toml")?),
        log: Mutex::new(
            std::fs::OpenOptions::new()
                .append(true)
                .open(log)
                .map_err(|e| e.to_string())?,
        ),
        served: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let app_addr: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    let router = Router::new().fallback(get(serve)).with_state(app.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut app_stop = stop_rx.clone();
    let app_server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = app_stop.wait_for(|s| *s).await;
            })
            .await
    });
    let reload_app = app.clone();
    let live_config = live.join("app.toml");
    let mut reload_stop = stop_rx.clone();
    let reloader = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = reload_stop.wait_for(|s| *s) => break,
            }
            if let Some(b) = read_behaviour(&live_config) {
                let mut current = reload_app
                    .behaviour
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if *current != b {
                    *current = b;
                    say(&format!("app: now serving error_rate = {}", b.error_rate));
                }
            }
        }
    });
    say(&format!(
        "app serving on http://{app_addr}, writing its access log to {}",
        log.display()
    ));

    // A client: 50 requests a second.
    let driving = Arc::new(AtomicBool::new(true));
    let drive = driving.clone();
    let client = std::thread::spawn(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(5))
            .build();
        let url = format!("http://{app_addr}/cart");
        let mut next = Instant::now();
        while drive.load(Ordering::Relaxed) {
            let _ = agent.get(&url).call();
            next += Duration::from_millis(20);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });

    // guardian itself, the real daemon, on that log.
    let mut daemon_stop = stop_rx.clone();
    let bound = daemon::bind(&config).await.map_err(|e| e.to_string())?;
    let api = format!(
        "http://{}",
        bound.listener.local_addr().map_err(|e| e.to_string())?
    );
    let guardian = tokio::spawn(daemon::run(config, None, bound, async move {
        let _ = daemon_stop.wait_for(|s| *s).await;
    }));
    say(&format!("guardian running, API on {api}"));
    say("building a baseline: one minute of normal traffic (about 1% errors)...");
    tokio::time::sleep(Duration::from_secs(62)).await;

    // The "AI fix" that breaks the app, deployed and announced.
    std::fs::write(repo.join("app.toml"), BAD).map_err(|e| e.to_string())?;
    git(
        repo,
        &["commit", "-q", "-am", "Fix: validate cart items strictly"],
    )?;
    let bad = git(repo, &["rev-parse", "HEAD"])?;
    std::fs::copy(repo.join("app.toml"), live.join("app.toml")).map_err(|e| e.to_string())?;
    let body = serde_json::json!({"commit": bad, "kind": "ai", "pattern": "input-validation",
        "summary": "validate cart items strictly"});
    let change: crate::api::ChangeView = tokio::task::spawn_blocking({
        let (api, token) = (api.clone(), token.to_owned());
        move || {
            ureq::post(&format!("{api}/v1/changes"))
                .set("Authorization", &format!("Bearer {token}"))
                .send_json(body)
                .map_err(|e| e.to_string())?
                .into_json::<crate::api::ChangeView>()
                .map_err(|e| e.to_string())
        }
    })
    .await
    .map_err(|e| e.to_string())??;
    let id = change.record.id;
    say(&format!(
        "deployed an AI fix, commit {}, and told guardian: change {id}",
        &bad[..7]
    ));

    // Follow the change until guardian is done with it.
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let final_change = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let c = get_change(&api, token, &id).await?.record;
        let state = c.state.as_str();
        if state != last {
            let note = c.note.as_deref().unwrap_or("");
            say(&format!(
                "guardian: {state}{}{note}",
                if note.is_empty() { "" } else { ": " }
            ));
            state.clone_into(&mut last);
        }
        if c.state.is_final() || Instant::now() > deadline {
            break c;
        }
    };
    driving.store(false, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || client.join()).await;

    println!();
    println!("{}", explain(&final_change, repo)?);
    let _ = stop_tx.send(true);
    let _ = guardian.await;
    let _ = app_server.await;
    let _ = reloader.await;

    // The alert, as guardian renders it for the on-call engineer. The demo has no SMTP server,
    // so it is printed (with [daemon.mail] configured, the daemon queues and sends it).
    let store =
        crate::store::Store::open(&root.join("state/guardian.db")).map_err(|e| e.to_string())?;
    if let Some(record) = store.get_change(&id).map_err(|e| e.to_string())? {
        let rollback = store
            .events_for(&id)
            .map_err(|e| e.to_string())?
            .into_iter()
            .rev()
            .find(|e| e.kind == crate::store::EventKind::Rollback)
            .map(|e| e.detail);
        let email = crate::report::render_alert("demo shop", &record, rollback.as_ref());
        println!();
        println!("The alert email guardian sends (the demo prints it; configure [daemon.mail] to send it):");
        println!("----------------------------------------------------------------------");
        println!(
            "Subject: {}\nMessage-ID: {}\n",
            email.subject, email.message_id
        );
        println!("{}", email.text_body);
        println!("----------------------------------------------------------------------");
    }
    Ok(id)
}

async fn get_change(api: &str, token: &str, id: &str) -> Result<crate::api::ChangeView, String> {
    let (url, auth) = (format!("{api}/v1/changes/{id}"), format!("Bearer {token}"));
    tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .set("Authorization", &auth)
            .call()
            .map_err(|e| e.to_string())?
            .into_json::<crate::api::ChangeView>()
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// What happened, in a few lines a person reads.
fn explain(change: &crate::api::ChangeRecord, repo: &Path) -> Result<String, String> {
    let mut out = String::new();
    out.push_str(&format!("Outcome: {}\n", change.state.as_str()));
    match change.report.as_ref().map(crate::report::evidence::read) {
        Some(Ok(report)) => {
            use crate::report::units::{duration, evalue, percent, ratio};
            for s in report.signals.iter().filter(|s| s.regressed) {
                out.push_str(&format!(
                    "  evidence: {} {} before -> {} after ({}), e-value {} >= {}{}\n",
                    crate::report::evidence::signal_key(s.signal),
                    percent(s.baseline.rate),
                    percent(s.after.rate),
                    s.effect_ratio.map_or("no ratio".to_owned(), ratio),
                    evalue(s.e_value),
                    evalue(s.e_value_threshold),
                    report.decided_at.map_or(String::new(), |d| format!(
                        ", decided {} after the change",
                        duration(d - report.change_at)
                    )),
                ));
            }
        }
        Some(Err(e)) => out.push_str(&format!("  evidence: {e}\n")),
        None => out.push_str("  evidence: none was recorded\n"),
    }
    let head = git(repo, &["log", "-1", "--format=%h %s%n%n%b"])?;
    out.push_str("  the repository's last commit, made by guardian:\n");
    for line in head.lines() {
        out.push_str(&format!("    {line}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closing_words_point_only_to_files_that_stay() {
        let root = Path::new("/tmp/guardian-demo-1-2");
        let removed = look_next(root, "chg_0123456789ab", false);
        assert!(!removed.contains("Where to look next"), "{removed}");
        assert!(removed.contains("guardian demo --keep"), "{removed}");

        let kept = look_next(root, "chg_0123456789ab", true);
        expect_test::expect![[r#"
            Where to look next (kept in /tmp/guardian-demo-1-2):
              the revert:          git -C /tmp/guardian-demo-1-2/app log -2 --stat
              the post-mortem:     guardian postmortem chg_0123456789ab --config /tmp/guardian-demo-1-2/guardian.toml
              the audit trail:     guardian audit verify --config /tmp/guardian-demo-1-2/guardian.toml
              the state database:  /tmp/guardian-demo-1-2/state/guardian.db
              the config it ran:   /tmp/guardian-demo-1-2/guardian.toml
            Remove it all with: rm -rf /tmp/guardian-demo-1-2"#]]
        .assert_eq(&kept);
        // A path with a space is one word for the shell.
        let spaced = look_next(Path::new("/tmp/my demo"), "chg_1", true);
        assert!(spaced.contains("rm -rf '/tmp/my demo'"), "{spaced}");
    }

    #[test]
    fn the_token_file_is_private_whatever_was_there() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, "0123456789abcdef").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0123456789abcdef");
    }
}
