//! Where the daemon's log goes: to the journal, with fields, when systemd runs guardian (so
//! `journalctl -u guardian -p warning` and `journalctl CHANGE_ID=chg_...` work, each line at its
//! priority), to standard error with timestamps otherwise. `RUST_LOG` filters either way
//! (`info` by default).
//!
//! Only the daemon logs this way: the commands a person runs (`notify`, `status`, `replay`)
//! write their answers and errors to standard output and standard error as they always have.

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

/// Installs the log for this process. A second call does nothing (a test, or the demo, may run
/// the daemon more than once in one process).
pub fn init() {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_the_journal() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry()
                .with(filter())
                .with(journald.with_syslog_identifier("guardian".to_owned()))
                .try_init();
            return;
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

/// systemd sets `JOURNAL_STREAM=<dev>:<inode>` when a service's standard error is connected to
/// the journal: it is, when those are standard error's own (a child whose stderr was redirected
/// elsewhere inherits the variable, and must not log to the journal behind its caller's back).
fn stderr_is_the_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(meta) => dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino()),
        Err(_) => false,
    }
}
