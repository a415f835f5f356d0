//! guardbench's progress on standard error, for a person watching a terminal: one line,
//! rewritten as each row of the tables starts (rows done, time so far, the row under way) and
//! cleared before the row is printed, so it never mixes with the tables on standard output.
//! Hidden when standard error is not a terminal: CI pipes it to a log, where a rewritten line
//! would only be noise.

use std::io::{IsTerminal as _, Write};
use std::time::Duration;

/// Erases the line the cursor is on and goes back to its start.
const CLEAR_LINE: &str = "\r\x1b[2K";

/// The progress line, or nothing when `out` is `None`.
pub struct Progress<W: Write> {
    out: Option<W>,
    rows_done: u64,
}

impl Progress<std::io::Stderr> {
    /// On standard error when it is a terminal; hidden otherwise.
    pub fn on_stderr() -> Self {
        let stderr = std::io::stderr();
        Progress::new(stderr.is_terminal().then_some(stderr))
    }
}

impl<W: Write> Progress<W> {
    /// Shown on `out`, or hidden when `None`.
    pub fn new(out: Option<W>) -> Self {
        Progress { out, rows_done: 0 }
    }

    /// Says a row is under way, `elapsed` after the benchmark began.
    pub fn row(&mut self, what: &str, elapsed: Duration) {
        let done = self.rows_done;
        self.show(&format!(
            "guardbench: {} done, {} so far; now {what} ...",
            rows(done),
            clock(elapsed)
        ));
    }

    /// A row is done: the line is cleared for it to be printed.
    pub fn row_done(&mut self) {
        self.rows_done += 1;
        self.show("");
    }

    /// What was written, for the tests.
    pub fn into_inner(self) -> Option<W> {
        self.out
    }

    fn show(&mut self, text: &str) {
        if let Some(out) = &mut self.out {
            // Progress is a courtesy: a terminal that went away must not stop the benchmark.
            let _ = write!(out, "{CLEAR_LINE}{text}").and_then(|()| out.flush());
        }
    }
}

fn rows(n: u64) -> String {
    format!("{n} row{}", if n == 1 { "" } else { "s" })
}

/// `1m05s`, or `42s` under a minute.
fn clock(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_sees_one_line_rewritten_and_cleared_before_each_row_is_printed() {
        let mut p = Progress::new(Some(Vec::new()));
        p.row("1 rps: calibration", Duration::from_secs(3));
        p.row_done();
        p.row("20 rps: error rate x3", Duration::from_secs(65));
        p.row_done();
        let text = String::from_utf8(p.into_inner().unwrap()).unwrap();
        assert_eq!(
            text,
            "\r\x1b[2Kguardbench: 0 rows done, 3s so far; now 1 rps: calibration ...\
             \r\x1b[2K\
             \r\x1b[2Kguardbench: 1 row done, 1m05s so far; now 20 rps: error rate x3 ...\
             \r\x1b[2K"
        );
        // Nothing is left on the line for the table's row to follow.
        assert!(text.ends_with(CLEAR_LINE));
    }
}
