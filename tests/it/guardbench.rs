//! guardbench, the binary: its tables on standard output, and nothing else on standard error
//! when that is not a terminal (CI pipes it to a log).

use std::process::Command;

#[test]
fn piped_it_prints_the_tables_and_no_progress_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_guardbench"))
        .args([
            "--nulls",
            "2",
            "--regressions",
            "2",
            "--calibration",
            "2",
            "--rps",
            "1",
            "--only",
            "outage",
            "--skip-nulls",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("## Calibration of the peers"), "{stdout}");
    assert!(stdout.contains("| 1 rps | total outage |"), "{stdout}");
    // Standard error is a pipe here: the progress line is hidden, the closing line stays.
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "{stderr:?}"
    );
    assert!(!stderr.contains("rows done"), "{stderr:?}");
    assert!(stderr.starts_with("guardbench done in "), "{stderr:?}");
}
