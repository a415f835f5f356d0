//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// When the change in every sample landed: 2025-11-24 16:00:00 UTC.
pub const CHANGE_AT: f64 = 1_764_000_000.0;

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn sample(name: &str) -> PathBuf {
    root().join("testdata").join(name)
}

pub fn example_config() -> PathBuf {
    root().join("config").join("guardian.toml")
}

/// Runs `guardian` with `args`.
pub fn guardian(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(args)
        .output()
        .expect("the guardian binary runs")
}

/// Runs `guardian replay` on `events` with the example config, the samples' change time and
/// `extra` arguments.
pub fn replay(events: &Path, extra: &[&str]) -> Output {
    let change_at = CHANGE_AT.to_string();
    let config = example_config();
    let mut args = vec![
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--change-at",
        &change_at,
    ];
    args.extend_from_slice(extra);
    guardian(&args)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The exit code, with both streams shown if the process was killed instead.
pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed: {}\n{}", stdout(out), stderr(out)))
}

/// The one JSON object `--json` prints.
pub fn json(out: &Output) -> serde_json::Value {
    let text = stdout(out);
    assert_eq!(
        text.lines().count(),
        1,
        "--json prints exactly one line:\n{text}\nstderr: {}",
        stderr(out)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Writes `text` to a file in a fresh temporary directory, kept alive by the returned guard.
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Starts `guardian run --config <config>` with `envs` added, and returns the process and the
/// API's base URL once the daemon says where it listens. What the daemon logs is echoed to the
/// test's output (shown when a test fails).
pub fn spawn_daemon(config: &Path, envs: &[(&str, &Path)]) -> (std::process::Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_guardian"));
    command.args(["run", "--config"]).arg(config);
    for (k, v) in envs {
        command.env(k, v);
    }
    spawn(command)
}

/// Starts `command` (a `guardian run`, however it is wrapped) and returns the process and the
/// API's base URL once the daemon says where it listens.
pub fn spawn(mut command: Command) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    command.stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("the guardian binary runs");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("daemon: {line}");
            let addr = line.split("API listening on ").nth(1);
            if let Some(addr) = addr.and_then(|a| a.split_whitespace().next()) {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the daemon says where it listens");
    (child, format!("http://{addr}"))
}

/// A program from Debian's packages: `$<env>` when set, else `path`, installed with apt-get
/// when it is missing (as root, or through passwordless sudo), so `cargo test` needs nothing
/// installed by hand. Where it cannot be installed the test fails, saying so: it never skips.
pub fn debian_binary(env: &str, path: &str, packages: &[&str]) -> PathBuf {
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if let Some(given) = std::env::var_os(env) {
        let given = PathBuf::from(given);
        assert!(given.exists(), "{env}={} does not exist", given.display());
        return given;
    }
    let path = PathBuf::from(path);
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        let sudo: &[&str] = if nix::unistd::geteuid().is_root() {
            &[]
        } else {
            &["sudo", "-n"]
        };
        let run = |args: &[&str]| {
            let mut all: Vec<&str> = sudo.to_vec();
            all.extend_from_slice(args);
            eprintln!(
                "installing Debian's {packages:?} for a test: {}",
                all.join(" ")
            );
            Command::new(all[0])
                .args(&all[1..])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        let _ = run(&["apt-get", "update"]);
        let mut install = vec!["apt-get", "install", "-y", "--no-install-recommends"];
        install.extend_from_slice(packages);
        let _ = run(&install);
    }
    assert!(
        path.exists(),
        "{} is missing and apt-get could not install it (needs root or passwordless sudo): \
         install Debian's {packages:?}, or set {env} to the program",
        path.display()
    );
    path
}

/// `guardian notify` of `commit` to the daemon at `api`, as a deploy runs it: the change's id.
pub fn notify(config: &Path, api: &str, commit: &str, kind: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(["notify", "--config"])
        .arg(config)
        .args(["--api", api, "--commit", commit, "--kind", kind])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

/// Change `id` as the daemon at `api` shows it.
pub fn change(api: &str, token: &str, id: &str) -> serde_json::Value {
    ureq::get(&format!("{api}/v1/changes/{id}"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

/// Waits until change `id` is decided and its rollback done, for at most `secs`.
pub fn settle(api: &str, token: &str, id: &str, secs: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let c = change(api, token, id);
        let open = ["watching", "regressed", "rolling_back", "verifying"];
        if !open.contains(&c["state"].as_str().unwrap_or(""))
            || std::time::Instant::now() > deadline
        {
            return c;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
