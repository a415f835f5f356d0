//! The API's connections, bounded: at most [`MAX_CONNECTIONS`] at once, a request's headers
//! within [`HEADER_TIMEOUT`], a connection no longer than [`CONNECTION_TIMEOUT`].
//!
//! `axum::serve` has neither a limit nor a header timeout, so a local process holding
//! connections open with half-sent headers could take every file descriptor guardian has, and
//! the next rollback failed to start git ("Too many open files"). Written here on hyper's own
//! connection builder (what `axum::serve` uses underneath) rather than with a crate, because
//! the accept loop is the whole of it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Connections served at once; past it a new one waits in the kernel's accept queue (holding
/// none of guardian's file descriptors) until one closes. Far below the 1,024 descriptors a
/// service gets by default, so logs, the database, git and the hook keep theirs.
pub const MAX_CONNECTIONS: usize = 128;
/// A client must send a request's headers within this, or the connection is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection lives longer than this: every request guardian serves takes milliseconds.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// How long requests under way may finish once guardian is stopping.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    // The guard `wait_for` returns is dropped inside: it may not be held across an await.
    let stopping = async move {
        let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
    };
    tokio::pin!(stopping);
    loop {
        // A slot first, then a connection: one over the limit is not refused (a client that
        // churns connections briefly holds more slots than it uses, and a reset is an error to
        // it) but left unaccepted until a slot frees, at worst one header timeout later.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut stopping => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: wait for some to close rather than spin.
                    tracing::warn!("API: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stopping => break,
        };
        let service = TowerToHyperService::new(router.clone());
        connections.spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    let drained = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drained).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    async fn started() -> (std::net::SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (tx, rx) = watch::channel(false);
        tokio::spawn(serve(listener, router, rx));
        (addr, tx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_past_the_limit_wait_for_a_slot_and_are_served_when_one_frees() {
        let (addr, stop) = started().await;
        let answer = tokio::task::spawn_blocking(move || {
            let held: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS)
                .map(|_| {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    // Half a request, never finished.
                    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
                    s
                })
                .collect();
            std::thread::sleep(Duration::from_millis(300));
            // One more: the kernel takes it, guardian does not serve it yet...
            let mut waiting = std::net::TcpStream::connect(addr).unwrap();
            waiting
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            waiting
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut buf = [0u8; 16];
            let early = waiting.read(&mut buf);
            assert!(
                matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut),
                "served or closed past the limit: {early:?}"
            );
            // ...until a held one goes away: then it is answered, not reset.
            drop(held);
            waiting
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut answer = String::new();
            let _ = waiting.read_to_string(&mut answer);
            answer
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let _ = stop.send(true);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_never_finishes_its_headers_is_let_go() {
        let (addr, stop) = started().await;
        let waited = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            s.set_read_timeout(Some(HEADER_TIMEOUT * 3)).unwrap();
            let started = std::time::Instant::now();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            started.elapsed()
        })
        .await
        .unwrap();
        assert!(waited < HEADER_TIMEOUT * 2, "held for {waited:?}");
        let _ = stop.send(true);
    }
}
