//! Several guardians, one action: three hosts of one service, each with its app, its access
//! log, its own clone of the service's repository and a guardian beside it, all sharing the
//! git remote and the on-call inbox. One bad commit is deployed to all three at the same
//! moment; each guardian sees it regress and reverts it. The push of the revert is the lease:
//! exactly one revert reaches the remote, the other two guardians stand down onto it, each
//! host's hook redeploys it once, every host recovers, and one email goes out.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::rollback::{commit_mode, drive, git, serve_app, smtp_server, write_healthy_history};

const TOKEN: &str = "fleet-token-0123456789";

/// One host: its guardian's clone, what its app serves, the daemon and its API.
struct Host {
    home: PathBuf,
    repo: PathBuf,
    live: PathBuf,
    config: PathBuf,
    daemon: Child,
    api: String,
}

impl Host {
    fn start(dir: &Path, name: &str, remote: &Path, smtp: std::net::SocketAddr) -> Host {
        let home = dir.join(name);
        std::fs::create_dir(&home).unwrap();
        let repo = home.join("app");
        git(
            dir,
            &[
                "clone",
                "-q",
                remote.to_str().unwrap(),
                repo.to_str().unwrap(),
            ],
        );
        let live = home.join("live-mode");
        std::fs::copy(repo.join("mode"), &live).unwrap();
        // The host's own redeploy: what guardian's clone says is what this host's app serves;
        // each run is counted.
        let hook = home.join("redeploy.sh");
        std::fs::write(
            &hook,
            "#!/bin/sh\nset -e\ncp \"$GUARDIAN_REPO/mode\" \"$LIVE\"\necho run >> \"$LIVE.deploys\"\n",
        )
        .unwrap();
        std::fs::write(home.join("token"), TOKEN).unwrap();
        let log = home.join("access.jsonl");
        write_healthy_history(&log);
        let config = home.join("guardian.toml");
        std::fs::write(
            &config,
            format!(
                "[detector]\nbaseline_secs = 600\nwatch_secs = 300\n\n\
                 [daemon]\nservice = \"shop\"\nstate_dir = {state:?}\nlisten = \"127.0.0.1:0\"\n\
                 token_file = {token:?}\n\n\
                 [[daemon.logs]]\npath = {log:?}\n\n\
                 [daemon.rollback]\nrepo = {repo:?}\nhook = [\"sh\", {hook:?}]\n\
                 hook_timeout_secs = 30\nverify_secs = 8\n\
                 push_remote = \"origin\"\npush_branch = \"main\"\n\n\
                 [daemon.mail]\nfrom = \"guardian-{name}@example.com\"\nto = [\"oncall@example.com\"]\n\
                 smtp_host = \"{ip}\"\nsmtp_port = {port}\nsecurity = \"none\"\n",
                state = home.join("state"),
                token = home.join("token"),
                ip = smtp.ip(),
                port = smtp.port(),
            ),
        )
        .unwrap();
        let (daemon, api) = super::common::spawn_daemon(&config, &[("LIVE", &live)]);
        Host {
            home,
            repo,
            live,
            config,
            daemon,
            api,
        }
    }

    /// The deploy of what the remote has now: the clone follows it, the app serves it.
    fn deploy(&self) -> String {
        git(&self.repo, &["pull", "-q", "--ff-only"]);
        std::fs::copy(self.repo.join("mode"), &self.live).unwrap();
        git(&self.repo, &["rev-parse", "HEAD"])
    }

    fn deploys(&self) -> usize {
        let mut counter = self.live.clone().into_os_string();
        counter.push(".deploys");
        std::fs::read_to_string(counter)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[test]
fn three_guardians_one_bad_change_one_revert_one_redeploy_per_host_one_email() {
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("shop.git");
    git(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", "shop.git"],
    );
    let dev = dir.path().join("dev");
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            remote.to_str().unwrap(),
            dev.to_str().unwrap(),
        ],
    );
    commit_mode(&dev, "ok", "first release");
    git(&dev, &["push", "-q", "origin", "HEAD:main"]);

    let (smtp, inbox) = smtp_server();
    let hosts: Vec<Host> = ["web1", "web2", "web3"]
        .iter()
        .map(|name| Host::start(dir.path(), name, &remote, smtp))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let drivers: Vec<_> = hosts
        .iter()
        .map(|h| {
            drive(
                serve_app(h.home.join("access.jsonl"), h.live.clone()),
                stop.clone(),
            )
        })
        .collect();
    thread::sleep(Duration::from_secs(1));

    // The bad commit reaches every host at once, and each guardian is told.
    let bad = commit_mode(&dev, "broken", "set mode to broken");
    git(&dev, &["push", "-q", "origin", "HEAD:main"]);
    for h in &hosts {
        assert_eq!(h.deploy(), bad);
    }
    let ids: Vec<String> = hosts
        .iter()
        .map(|h| super::common::notify(&h.config, &h.api, &bad, "human"))
        .collect();

    let changes: Vec<Value> = hosts
        .iter()
        .zip(&ids)
        .map(|(h, id)| super::common::settle(&h.api, TOKEN, id, 90))
        .collect();
    for c in &changes {
        assert_eq!(c["state"], "rolled_back", "{c}");
    }
    // Exactly one revert reached the remote.
    let reverts = git(
        &remote,
        &[
            "log",
            "--format=%H",
            "--grep",
            &format!("Guardian-Revert-Of: {bad}"),
            "main",
        ],
    );
    let reverts: Vec<&str> = reverts.lines().collect();
    assert_eq!(reverts.len(), 1, "{reverts:?}");
    // Every host runs it: its clone is at that revert, its hook ran once, its app is back.
    for h in &hosts {
        assert_eq!(git(&h.repo, &["rev-parse", "HEAD"]), reverts[0]);
        assert_eq!(h.deploys(), 1, "one redeploy on {}", h.repo.display());
        assert_eq!(std::fs::read_to_string(&h.live).unwrap().trim(), "ok");
    }
    // Two guardians stood down and say so on their record, naming the revert that won.
    let mut stood_down = 0;
    for (h, id) in hosts.iter().zip(&ids) {
        let store = guardian::store::Store::open(&h.home.join("state/guardian.db")).unwrap();
        let rollback = store
            .events_for(id)
            .unwrap()
            .into_iter()
            .find(|e| e.kind == guardian::store::EventKind::Rollback)
            .expect("a rollback record");
        if rollback.detail["stood_down"] == true {
            stood_down += 1;
            let steps = rollback.detail["steps"].to_string();
            assert!(steps.contains("stood down"), "{steps}");
            assert!(steps.contains(reverts[0]), "{steps}");
        }
    }
    assert_eq!(stood_down, 2);
    // One email: the guardian whose revert won tells the on-call engineer.
    let deadline = Instant::now() + Duration::from_secs(20);
    while inbox.lock().unwrap().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_secs(3));
    let mails = inbox.lock().unwrap().clone();
    assert_eq!(
        mails.len(),
        1,
        "{:?}",
        mails
            .iter()
            .map(|m| m.lines().find(|l| l.starts_with("Subject")).unwrap_or(""))
            .collect::<Vec<_>>()
    );
    stop.store(true, Ordering::Relaxed);
    for d in drivers {
        let _ = d.join();
    }
}
