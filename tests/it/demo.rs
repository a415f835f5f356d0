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
}
