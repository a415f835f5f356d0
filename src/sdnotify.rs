//! The systemd notification protocol (sd_notify(3)): readiness, reload, stop, status and
//! watchdog pings for `Type=notify` units (`systemd/guardian.service`).
//!
//! # Why no libsystemd and no crate
//!
//! The protocol is one datagram of newline-separated `KEY=value` assignments sent to the
//! `AF_UNIX` socket named by `$NOTIFY_SOCKET`: a file system path, or an abstract socket when
//! the name starts with `@`. systemd takes the sender's pid from the kernel
//! (`SCM_CREDENTIALS` on its end), so the sender attaches nothing. `std`'s `UnixDatagram` does
//! all of it. Linking libsystemd would add a C dependency, and `unsafe` FFI, which the crate
//! forbids. A crate would add a dependency to audit for about forty lines.
//!
//! # Use
//!
//! - [`ready`] once the daemon serves: the database is open, the token has been read and
//!   the API listens. A `Type=notify` unit is "starting" until then.
//! - [`watchdog`] from the decision loop, every half of [`watchdog_interval`]. Ping only
//!   after the loop did its work, never from a separate timer task, which would keep pinging
//!   while the loop is stuck.
//! - [`reloading`] on SIGHUP before re-reading the configuration, then [`ready`] when done.
//! - [`stopping`] when shutting down. [`status`] for a one-line state shown by
//!   `systemctl status`.
//!
//! Every function returns `Ok(false)` when `$NOTIFY_SOCKET` is unset, which is the case
//! outside systemd and in tests, so callers need no special case. An `Err` means systemd
//! asked for notifications and did not get one. That is worth a log line, but not a reason
//! to stop: systemd's own timeouts act on missing notifications.
//!
//! The variables are left in the environment. Children cannot use them under
//! `NotifyAccess=main`, and the hook runner removes them anyway (see [`crate::hook`]).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

/// The service is up. Also ends a reload that [`reloading`] began.
pub const READY: &str = "READY=1";
/// The service is re-reading its configuration. [`READY`] ends the reload.
pub const RELOADING: &str = "RELOADING=1";
/// The service is shutting down.
pub const STOPPING: &str = "STOPPING=1";
/// The service is alive: resets the watchdog timer.
pub const WATCHDOG: &str = "WATCHDOG=1";

/// How long one send may block. A datagram socket blocks the sender while the receiver's
/// queue is full. PID 1 drains its queue promptly, but a wedged PID 1 must not also hang
/// the caller's decision loop.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `state` (one or more `KEY=value` lines) to `$NOTIFY_SOCKET`.
///
/// Returns `Ok(false)`, without sending, when `$NOTIFY_SOCKET` is unset or empty. Returns
/// `Ok(true)` when the datagram was sent.
pub fn notify(state: &str) -> io::Result<bool> {
    notify_at(std::env::var_os("NOTIFY_SOCKET").as_deref(), state)
}

/// [`notify`] with the socket given explicitly instead of read from the environment. `None`
/// or an empty name means "not under systemd" and returns `Ok(false)`.
pub fn notify_at(socket: Option<&OsStr>, state: &str) -> io::Result<bool> {
    let Some(socket) = socket.filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    if state.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an empty notification says nothing",
        ));
    }
    let sock = UnixDatagram::unbound()?;
    sock.set_write_timeout(Some(SEND_TIMEOUT))?;
    let bytes = socket.as_bytes();
    let sent = match bytes.first() {
        Some(b'@') => send_abstract(&sock, &bytes[1..], state.as_bytes())?,
        Some(b'/') => sock.send_to(state.as_bytes(), Path::new(socket))?,
        _ => {
            // systemd 254+ may also hand out "vsock:CID:PORT" (for VMs); guardian runs on
            // the host, where it is always a path or an abstract name.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "NOTIFY_SOCKET={:?} is neither an absolute path nor an abstract socket (@name)",
                    socket
                ),
            ));
        }
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!(
                "the notification was truncated: {sent} of {} bytes sent",
                state.len()
            ),
        ));
    }
    Ok(true)
}

/// Sends to an abstract socket: its name without the leading `@`, which on the wire is a
/// leading NUL byte.
#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &[u8], msg: &[u8]) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(msg, &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_sock: &UnixDatagram, _name: &[u8], _msg: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

/// `READY=1`: startup finished, or a reload finished.
pub fn ready() -> io::Result<bool> {
    notify(READY)
}

/// `RELOADING=1`: re-reading the configuration. Send [`ready`] when done.
///
/// systemd 253's `Type=notify-reload` also requires `MONOTONIC_USEC=`. The unit uses
/// `Type=notify` with `ExecReload=`, which does not.
pub fn reloading() -> io::Result<bool> {
    notify(RELOADING)
}

/// `STOPPING=1`: shutting down.
pub fn stopping() -> io::Result<bool> {
    notify(STOPPING)
}

/// `WATCHDOG=1`: alive. Send every half of [`watchdog_interval`].
pub fn watchdog() -> io::Result<bool> {
    notify(WATCHDOG)
}

/// `STATUS=text`: one line for `systemctl status`.
pub fn status(text: &str) -> io::Result<bool> {
    notify(&status_state(text))
}

/// The `STATUS=` assignment for `text`. Line breaks become spaces: a newline would end the
/// assignment, and what followed it would be read as another one (e.g. `READY=1`).
fn status_state(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("STATUS={line}")
}

/// The watchdog timeout systemd enforces on this process (`WatchdogSec=`), or `None` when
/// there is none: `$WATCHDOG_USEC` unset, zero or malformed, or `$WATCHDOG_PID` naming
/// another process, as when the variables were inherited from a parent.
///
/// Ping ([`watchdog`]) at half of this interval, as sd_watchdog_enabled(3) recommends.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var_os("WATCHDOG_USEC").as_deref(),
        std::env::var_os("WATCHDOG_PID").as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] on explicit values. An unset `pid` means "this process", as for
/// sd_watchdog_enabled(3). A malformed one means "not us".
fn watchdog_interval_from(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    our_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.parse().ok()?;
        if pid != our_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A datagram socket bound in a fresh directory, standing in for systemd's.
    fn listener() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (dir, path, sock)
    }

    fn receive(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_one_datagram_to_a_path_socket() {
        let (_dir, path, sock) = listener();
        assert!(notify_at(Some(path.as_os_str()), READY).unwrap());
        assert_eq!(receive(&sock), "READY=1");
        let several = "STATUS=watching shop\nWATCHDOG=1";
        assert!(notify_at(Some(path.as_os_str()), several).unwrap());
        assert_eq!(receive(&sock), several);
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_that_is_not_an_error() {
        assert!(!notify_at(None, READY).unwrap());
        assert!(!notify_at(Some(OsStr::new("")), READY).unwrap());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "guardian-sdnotify-test-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let env_value = format!("@{name}");
        assert!(notify_at(Some(OsStr::new(&env_value)), STOPPING).unwrap());
        assert_eq!(receive(&sock), "STOPPING=1");
    }

    #[test]
    fn a_relative_or_unknown_address_is_refused() {
        for bad in ["notify.sock", "vsock:2:1234"] {
            let err = notify_at(Some(OsStr::new(bad)), READY).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}: {err}");
        }
    }

    #[test]
    fn a_missing_listener_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nobody-listens.sock");
        assert!(notify_at(Some(path.as_os_str()), READY).is_err());
    }

    #[test]
    fn an_empty_notification_is_refused() {
        let (_dir, path, _sock) = listener();
        let err = notify_at(Some(path.as_os_str()), "").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn status_text_cannot_smuggle_other_assignments() {
        assert_eq!(status_state("watching shop"), "STATUS=watching shop");
        assert_eq!(status_state("x\nREADY=1\r\n"), "STATUS=x READY=1  ");
    }

    #[test]
    fn watchdog_interval_reads_usec_and_checks_the_pid() {
        let s = |v: &str| Some(OsStr::new(v).to_owned());
        let f = |usec: Option<std::ffi::OsString>, pid: Option<std::ffi::OsString>| {
            watchdog_interval_from(usec.as_deref(), pid.as_deref(), 4242)
        };
        assert_eq!(f(s("30000000"), None), Some(Duration::from_secs(30)));
        assert_eq!(f(s("30000000"), s("4242")), Some(Duration::from_secs(30)));
        assert_eq!(f(s("1500"), s("4242")), Some(Duration::from_micros(1500)));
        // Inherited from a parent: not ours.
        assert_eq!(f(s("30000000"), s("1")), None);
        assert_eq!(f(s("30000000"), s("pid")), None);
        assert_eq!(f(None, s("4242")), None);
        assert_eq!(f(s("0"), None), None);
        assert_eq!(f(s("-5"), None), None);
        assert_eq!(f(s("30s"), None), None);
        assert_eq!(f(s(""), None), None);
    }

    /// Set in the environment of the child that [`the_public_functions_read_the_environment`]
    /// starts: the child is this test binary, running only [`child_sends_what_the_parent_asks`].
    const CHILD: &str = "GUARDIAN_SDNOTIFY_TEST_CHILD";

    /// Runs the public, environment-reading functions in a child process whose environment
    /// holds `NOTIFY_SOCKET`. Setting the variable in this process could race other test
    /// threads reading the environment (`std::env::set_var` is not thread-safe), so the
    /// variables exist only in the child, for the duration of the test.
    #[test]
    fn the_public_functions_read_the_environment() {
        let (_dir, path, sock) = listener();
        let run_child = |socket: Option<&Path>| {
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.args([
                "--exact",
                "sdnotify::tests::child_sends_what_the_parent_asks",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env_remove("NOTIFY_SOCKET")
            .env("WATCHDOG_USEC", "30000000")
            .env_remove("WATCHDOG_PID");
            if let Some(socket) = socket {
                cmd.env("NOTIFY_SOCKET", socket);
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "child failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };

        let out = run_child(Some(&path));
        assert!(out.contains("sent: true true true true true"), "{out}");
        assert!(out.contains("watchdog interval: Some(30s)"), "{out}");
        let received: Vec<String> = (0..5).map(|_| receive(&sock)).collect();
        assert_eq!(
            received,
            [
                "READY=1",
                "RELOADING=1",
                "WATCHDOG=1",
                "STATUS=watching shop",
                "STOPPING=1"
            ]
        );

        let out = run_child(None);
        assert!(out.contains("sent: false false false false false"), "{out}");
    }

    /// The child's half of [`the_public_functions_read_the_environment`]; does nothing in a
    /// normal test run.
    #[test]
    fn child_sends_what_the_parent_asks() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let sent = [
            ready().unwrap(),
            reloading().unwrap(),
            watchdog().unwrap(),
            status("watching\nshop").unwrap(),
            stopping().unwrap(),
        ];
        println!("sent: {}", sent.map(|b| b.to_string()).join(" "));
        println!("watchdog interval: {:?}", watchdog_interval());
    }
}
