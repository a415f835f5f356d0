//! The status page in a real browser: Debian's Chromium, headless, driven through its
//! chromedriver (WebDriver, with `fantoccini`), against the real daemon of `gate.rs`' world
//! (guardian's clone, the redeploy hook, the app and its traffic). An approver signs in with
//! her token, approves the agent's fix from the page; it deploys, regresses and is rolled back,
//! and the page shows each stage as it happens. Forms forged on other origins decide nothing.
//! Screenshots at desktop and phone widths are kept in `$GUARDIAN_ARTIFACTS/status-page`
//! (`.ci/run` keeps them), or in cargo's target tmp directory.
//!
//! Without Chromium the test installs Debian's `chromium` and `chromium-driver`, or fails: it
//! never skips.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::gate::{stdout_json, Gate, ALICE, BOB};

/// Where the screenshots go.
fn artifacts() -> PathBuf {
    let root = std::env::var_os("GUARDIAN_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("artifacts"));
    let dir = root.join("status-page");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on a port of its own, and a headless Chromium session through it.
struct Browser {
    driver: Child,
    client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let chromium = super::common::debian_binary(
            "CHROMIUM",
            "/usr/bin/chromium",
            &["chromium", "chromium-driver"],
        );
        let chromedriver = super::common::debian_binary(
            "CHROMEDRIVER",
            "/usr/bin/chromedriver",
            &["chromium", "chromium-driver"],
        );
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(profile.path().join("chromedriver.log")).unwrap();
        // In a process group of its own, with the Chromium it starts: a test that fails
        // midway leaves no browser behind (see Drop).
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while ureq::get(&format!("{url}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            thread::sleep(Duration::from_millis(100));
        }
        // As the machine's notes say: without the background-networking flags Chromium keeps
        // trying hosts a closed network refuses.
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.path().join("profile").display()),
                    "--window-size=1280,1000",
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a Chromium session through chromedriver");
        Browser {
            driver,
            client,
            _profile: profile,
        }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    async fn attr(&self, css: &str, name: &str) -> Option<String> {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e.attr(name).await.unwrap(),
            Err(_) => None,
        }
    }

    /// Clicks `css`, then waits for what the next page shows (`then`, a CSS selector).
    async fn click(&self, css: &str, then: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(then))
            .await
            .unwrap_or_else(|e| panic!("after clicking {css}, no {then}: {e}"));
    }

    async fn body(&self) -> String {
        self.text("body").await
    }

    /// A screenshot of the page at `width` x `height`, kept as `name.png`.
    async fn shot(&self, name: &str, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = artifacts().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    /// Signs in; `then`: what the page shows after.
    async fn sign_in(&self, api: &str, token: &str, then: &str) {
        self.goto(&format!("{api}/")).await;
        self.client
            .find(Locator::Css("#token"))
            .await
            .unwrap()
            .send_keys(token)
            .await
            .unwrap();
        self.click("#sign-in button", then).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

/// Another origin's page, served on loopback: a form that posts to guardian's approve, as a
/// site an approver visits could make one, knowing the proposal's id and diff hash.
fn forger(target: &str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let page = format!(
        "<!doctype html><html><body><form method=\"post\" action=\"{target}\">\
         <input type=\"hidden\" name=\"diff_sha256\" value=\"forged\">\
         <input type=\"hidden\" name=\"csrf\" value=\"guessed\">\
         <button id=\"go\">Claim your prize</button></form></body></html>"
    );
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    port
}

#[test]
fn an_approver_approves_from_the_page_and_watches_the_deploy_regress_and_roll_back() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(whole_story());
}

async fn whole_story() {
    let g = Gate::start(0, true);
    let fix = g.agent_commits(
        "src/settings.txt",
        "timeout_ms = 1500\n",
        "Raise the timeout",
    );
    let p = stdout_json(&g.propose(&fix, "timeout-bump", "give <checkout> more time"));
    assert_eq!(p["decision"], "needs_approval", "{p}");
    let id = p["id"].as_str().unwrap().to_owned();
    let hash = p["diff_hash"].as_str().unwrap().to_owned();
    let b = Browser::start().await;

    // Alice signs in with her token once; the page shows the proposal, its diff escaped.
    b.sign_in(&g.api, ALICE, "#role").await;
    assert_eq!(b.text("#role").await, "approver:alice");
    let proposal = format!("#proposal-{id}");
    let shown = b.text(&proposal).await;
    assert!(shown.contains("give <checkout> more time"), "{shown}");
    assert!(shown.contains("+timeout_ms = 1500"), "{shown}");
    assert!(shown.contains(&hash), "the diff's hash is shown: {shown}");
    assert!(b.has("#routes").await, "each route's baseline readiness");
    assert!(b.text("#routes").await.contains("ready"));
    assert!(b.has("#chart svg").await, "the last half hour's traffic");
    b.shot("1-proposal-desktop", 1280, 1600).await;
    b.shot("1-proposal-phone", 390, 1800).await;
    b.client.set_window_size(1280, 1000).await.unwrap();

    // A request without the session cookie reads nothing and decides nothing.
    let page = ureq::get(&format!("{}/", g.api)).call().unwrap();
    assert!(!page.into_string().unwrap().contains(&id));
    let without = ureq::post(&format!("{}/proposals/{id}/approve", g.api))
        .send_form(&[("diff_sha256", hash.as_str()), ("csrf", "x")]);
    assert!(matches!(without, Err(ureq::Error::Status(401, _))));

    // Forms forged elsewhere, while Alice is signed in: from another site, the browser keeps
    // the cookie back (SameSite=Strict); from another origin of the same site, it sends it and
    // guardian refuses the form.
    let target = format!("{}/proposals/{id}/approve", g.api);
    let evil = forger(&target);
    b.goto(&format!("http://localhost:{evil}/")).await;
    b.click("#go", "main.narrow").await;
    let refused = b.body().await;
    assert!(refused.contains("Sign in first"), "{refused}");
    b.goto(&format!("http://127.0.0.1:{evil}/")).await;
    b.click("#go", "main.narrow").await;
    let refused = b.body().await;
    assert!(refused.contains("Refused"), "{refused}");
    assert_eq!(g.get(&format!("/v1/proposals/{id}"))["state"], "pending");

    // Alice approves from the page. The hook takes two seconds, so the deploy and the
    // rollback are seen under way.
    std::fs::write(g.file("live-mode.delay"), "2").unwrap();
    b.goto(&format!("{}/", g.api)).await;
    b.click(&format!("{proposal} button.approve"), "main.narrow")
        .await;
    let done = b.body().await;
    assert!(done.contains(&format!("{id} is approved")), "{done}");
    assert!(done.contains("decided by approver:alice"), "{done}");

    // The page, reloaded as a person would, through each stage; a screenshot of each.
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(150);
    let change_id = loop {
        assert!(
            Instant::now() < deadline,
            "the change did not settle; stages seen: {seen:?}"
        );
        b.goto(&format!("{}/", g.api)).await;
        let stage = if b.has("#deploying").await {
            Some("deploying".to_owned())
        } else {
            b.attr("#stage", "data-state").await
        };
        if let Some(stage) = stage {
            if seen.last() != Some(&stage) {
                if !seen.contains(&stage) {
                    let n = seen.len() + 2;
                    b.shot(&format!("{n}-{stage}-desktop"), 1280, 1600).await;
                    b.client.set_window_size(1280, 1000).await.unwrap();
                }
                if stage == "watching" {
                    assert!(b.has("#progress").await && b.has("#signals").await);
                    assert!(b.has("#chart svg").await, "the watch's chart");
                }
                seen.push(stage);
            }
        }
        let p = g.get(&format!("/v1/proposals/{id}"));
        if let Some(c) = p["change_id"].as_str() {
            let state = g.get(&format!("/v1/changes/{c}"))["state"].clone();
            if state == "rolled_back" && !b.has("#stage[data-state]").await {
                break c.to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for stage in ["deploying", "watching", "rolling_back", "verifying"] {
        assert!(
            seen.iter().any(|s| s == stage),
            "{stage} not seen: {seen:?}"
        );
    }
    let row = b.text(&format!("tr[data-change=\"{change_id}\"]")).await;
    assert!(row.contains("rolled_back"), "{row}");
    assert!(row.contains("errors"), "the evidence in a line: {row}");
    b.shot("6-rolled-back-desktop", 1280, 1600).await;
    b.shot("6-rolled-back-phone", 390, 2400).await;
    b.client.set_window_size(1280, 1000).await.unwrap();
    let decided = b.text(&format!("tr[data-proposal=\"{id}\"]")).await;
    assert!(
        decided.contains("deployed") && decided.contains("rolled_back"),
        "what became of the approved proposal: {decided}"
    );
    assert!(b.text("#trust").await.contains("timeout-bump"));
    assert!(b.text("#audit-head").await.contains("records"));

    // Its post-mortem is a click away.
    b.click(&format!("tr[data-change=\"{change_id}\"] a"), "svg")
        .await;
    let postmortem = b.body().await;
    assert!(postmortem.contains("Post-mortem: shop"), "{postmortem}");
    b.click("a[href=\"/\"]", "#live").await;

    // The page refreshes itself (its script, allowed by the page's policy) while no one types.
    std::fs::remove_file(g.file("live-mode.delay")).unwrap();
    g.agent_syncs();
    let fix = g.agent_commits("src/settings.txt", "timeout_ms = 600\n", "A smaller bump");
    let p = stdout_json(&g.propose(&fix, "timeout-bump", "a smaller bump"));
    let second = p["id"].as_str().unwrap().to_owned();
    b.goto(&format!("{}/", g.api)).await;
    assert!(b.has(&format!("#proposal-{second}")).await);
    let (code, _) = g.call(
        Some(ALICE),
        "POST",
        &format!("/v1/proposals/{second}/reject"),
        Some(json!({"diff_sha256": p["diff_hash"], "why": "not now"})),
    );
    assert_eq!(code, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.has(&format!("#proposal-{second}")).await {
        assert!(
            Instant::now() < deadline,
            "the page did not refresh by itself"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A viewer sees the same page, read only.
    b.click("header button", "#sign-in").await;
    g.agent_syncs();
    let fix = g.agent_commits("src/settings.txt", "timeout_ms = 700\n", "Another bump");
    let third = stdout_json(&g.propose(&fix, "timeout-bump", "another bump"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.sign_in(&g.api, BOB, "#role").await;
    assert!(b.text("header").await.contains("viewer:bob (read only)"));
    assert!(b.has(&format!("#proposal-{third}")).await);
    assert!(
        !b.has("button.approve").await,
        "a viewer gets no decision forms"
    );
    b.shot("7-viewer-phone", 390, 1800).await;
    assert_eq!(g.get(&format!("/v1/proposals/{third}"))["state"], "pending");
    b.client.clone().close().await.unwrap();
}
