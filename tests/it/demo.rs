//! The README's first command, `guardian demo`, end to end: it must tell the whole story on a
//! fresh machine and leave nothing running.

use std::process::Command;

#[test]
fn the_demo_catches_the_bad_fix_reverts_it_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Outcome: rolled_back"), "{stdout}");
    assert!(stdout.contains("Guardian-Revert-Of:"), "{stdout}");
    // The deployed app is back on the good version.
    let live = std::fs::read_to_string(dir.path().join("live/app.toml")).unwrap();
    assert!(live.contains("error_rate = 0.01"), "{live}");
    // Its token is private, as the daemon asks of every token file.
    use std::os::unix::fs::PermissionsExt as _;
    let token = std::fs::metadata(dir.path().join("token")).unwrap();
    assert_eq!(token.permissions().mode() & 0o777, 0o600);
    // Every file it points to after the story is there to look at, and so is a post-mortem.
    let look = stdout
        .split("Where to look next")
        .nth(1)
        .unwrap_or_else(|| panic!("no \"Where to look next\" in:\n{stdout}"));
    for file in ["state/guardian.db", "guardian.toml"] {
        let path = dir.path().join(file);
        assert!(look.contains(&path.display().to_string()), "{look}");
        assert!(path.exists(), "{}", path.display());
    }
    let postmortem = look
        .lines()
        .find_map(|l| l.trim().strip_prefix("the post-mortem:"))
        .expect("a post-mortem command");
    let words: Vec<&str> = postmortem.split_whitespace().collect();
    assert_eq!(words[0], "guardian", "{postmortem}");
    let out = Command::new(env!("CARGO_BIN_EXE_guardian"))
        .args(&words[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
