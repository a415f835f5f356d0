//! The API's connections, bounded: at most [`MAX_CONNECTIONS`] at once, a request's headers
//! within [`HEADER_TIMEOUT`], a connection no longer than [`CONNECTION_TIMEOUT`].
//!
//! `axum::serve` has neither a limit nor a header timeout, so a local process holding
//! connections open with half-sent headers could take every file descriptor guardian has, and
//! the next rollback failed to start git ("Too many open files"). A limit alone is not enough
//! either: a client that keeps every slot filled with half-sent headers (slowloris) kept a
//! deploy's `guardian notify` waiting in the accept queue past its timeout. So when every slot
//! is taken, the connection open longest is closed to make room, once it has been open a
//! second (half-sent headers, idle, or request after request pipelined on it): a client that
//! sends its request at once, as every real one does, is served whatever others hold open.
//! Only connections all younger than a second make a new one wait (for milliseconds). Whether
//! a connection is "serving" says nothing: one just accepted has not been read yet, and a
//! pipelining client keeps its connections always serving. Written here on hyper's own connection builder (what `axum::serve` uses underneath)
//! rather than with a crate, because the accept loop is the whole of it.

use std::collections::VecDeque;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

/// Connections served at once. Far below the 1,024 descriptors a service gets by default, so
/// logs, the database, git and the hook keep theirs.
pub const MAX_CONNECTIONS: usize = 128;
/// A client must send a request's headers within this, or the connection is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection lives longer than this: every request guardian serves takes milliseconds.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// How long requests under way may finish once guardian is stopping.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection keeps its place once every place is taken. Every request guardian
/// answers takes milliseconds and every real client sends its request at once; a connection
/// open longer is one held on purpose (half-sent headers, request after request pipelined on
/// it) or idle, and must not keep the next client out. Younger ones are not closed: a
/// connection just accepted has not been read yet, whatever it will send.
const KEEPS_ITS_PLACE: Duration = Duration::from_secs(1);

/// A connection being served: when it was accepted, and how to close it.
struct Live {
    since: std::time::Instant,
    abort: AbortHandle,
}

/// Serves `router` on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    // Oldest first.
    let mut live: VecDeque<Live> = VecDeque::new();
    // The guard `wait_for` returns is dropped inside: it may not be held across an await.
    let stopping = async move {
        let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
    };
    tokio::pin!(stopping);
    loop {
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
        while connections.try_join_next().is_some() {}
        live.retain(|c| !c.abort.is_finished());
        while live.len() >= MAX_CONNECTIONS {
            // Oldest first: the one open longest makes room, once it has had its moment.
            if live
                .front()
                .is_some_and(|c| c.since.elapsed() >= KEEPS_ITS_PLACE)
            {
                if let Some(oldest) = live.pop_front() {
                    oldest.abort.abort();
                }
                continue;
            }
            tokio::select! {
                _ = connections.join_next() => {}
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
                () = &mut stopping => break,
            }
            live.retain(|c| !c.abort.is_finished());
        }
        let service = TowerToHyperService::new(router.clone());
        let abort = connections.spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
        });
        live.push_back(Live {
            since: std::time::Instant::now(),
            abort,
        });
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
        let router = Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    "slow"
                }),
            );
        let (tx, rx) = watch::channel(false);
        tokio::spawn(serve(listener, router, rx));
        (addr, tx)
    }

    fn get(addr: std::net::SocketAddr, path: &str) -> std::net::TcpStream {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        s
    }

    fn answer(mut s: std::net::TcpStream, within: Duration) -> String {
        s.set_read_timeout(Some(within)).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_limit_the_oldest_connection_held_a_second_makes_room() {
        let (addr, stop) = started().await;
        tokio::task::spawn_blocking(move || {
            // Every slot held with half a request, never finished (slowloris).
            let mut held: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS)
                .map(|_| {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                    s
                })
                .collect();
            std::thread::sleep(Duration::from_millis(300));
            // A client that sends its request at once is answered at once...
            let started = std::time::Instant::now();
            let served = answer(get(addr, "/"), Duration::from_secs(5));
            assert!(served.starts_with("HTTP/1.1 200"), "{served}");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{:?}",
                started.elapsed()
            );
            // ...in the place of the oldest held one, which was closed.
            let oldest = held.remove(0);
            oldest
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut buf = [0u8; 16];
            assert!(matches!((&oldest).read(&mut buf), Ok(0) | Err(_)));
        })
        .await
        .unwrap();
        let _ = stop.send(true);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_connection_held_a_second_makes_room_too_and_younger_ones_do_not() {
        let (addr, stop) = started().await;
        tokio::task::spawn_blocking(move || {
            // 128 requests that each take 2 s (a client pipelining requests keeps its
            // connections just as busy).
            let busy: Vec<_> = (0..MAX_CONNECTIONS).map(|_| get(addr, "/slow")).collect();
            std::thread::sleep(Duration::from_millis(300));
            let started = std::time::Instant::now();
            let served = answer(get(addr, "/"), Duration::from_secs(10));
            assert!(served.starts_with("HTTP/1.1 200"), "{served}");
            // It waited for the oldest to have been busy a second, not for the slow ones
            // to end...
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(400) && waited < Duration::from_millis(1600),
                "{waited:?}"
            );
            // ...and only the oldest was cut short.
            let answered = busy
                .into_iter()
                .map(|s| answer(s, Duration::from_secs(10)))
                .filter(|a| a.starts_with("HTTP/1.1 200") && a.ends_with("slow"))
                .count();
            assert_eq!(answered, MAX_CONNECTIONS - 1);
        })
        .await
        .unwrap();
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
