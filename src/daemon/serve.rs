//! The API's connections, bounded: at most [`MAX_CONNECTIONS`] at once, a request's headers
//! within [`HEADER_TIMEOUT`], a connection no longer than [`CONNECTION_TIMEOUT`].
//!
//! `axum::serve` has neither a limit nor a header timeout, so a local process holding
//! connections open with half-sent headers could take every file descriptor guardian has, and
//! the next rollback failed to start git ("Too many open files"). A limit alone is not enough
//! either: a client that keeps every slot filled with half-sent headers (slowloris) kept a
//! deploy's `guardian notify` waiting in the accept queue past its timeout. So when every slot
//! is taken, the oldest connection open a second without a request under way (half-sent
//! headers, idle, closed by its client and not yet noticed) is closed to make room, else the
//! oldest open ten seconds (a client pipelining request after request keeps its connections
//! always serving): a client that sends its request at once, as every real one does, is served
//! whatever others hold open, at worst ten seconds later. Written here on hyper's own connection builder (what `axum::serve` uses underneath)
//! rather than with a crate, because the accept loop is the whole of it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tower::Service as _;

/// Connections served at once. Far below the 1,024 descriptors a service gets by default, so
/// logs, the database, git and the hook keep theirs.
pub const MAX_CONNECTIONS: usize = 128;
/// A client must send a request's headers within this, or the connection is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection lives longer than this: every request guardian serves takes milliseconds.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// How long requests under way may finish once guardian is stopping.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection keeps its place without a request under way, once every place is
/// taken: a moment, so that one just accepted and not read yet is not closed before its first
/// request. Older, it is holding half-sent headers, idle, or already closed by its client.
const IDLE_GRACE: Duration = Duration::from_secs(1);
/// How long a connection keeps its place while it serves requests, once every place is taken.
/// Requests take milliseconds, or seconds when they queue (a proposal waiting its turn to be
/// judged); a connection busy for longer is a client pipelining request after request on it,
/// which must not keep the next client out for more than this.
const BUSY_GRACE: Duration = Duration::from_secs(10);

/// A connection being served: when it was accepted, whether a request is under way on it, and
/// how to close it.
struct Live {
    since: std::time::Instant,
    serving: Arc<AtomicBool>,
    abort: AbortHandle,
}

/// The connection to close for a new one, all places being taken: the oldest open for
/// [`IDLE_GRACE`] without a request under way, else the oldest open for [`BUSY_GRACE`].
/// `None`: wait.
fn make_room(live: &mut VecDeque<Live>) -> Option<Live> {
    let idle = live
        .iter()
        .position(|c| !c.serving.load(Ordering::Relaxed) && c.since.elapsed() >= IDLE_GRACE);
    if let Some(at) = idle {
        return live.remove(at);
    }
    if live.front()?.since.elapsed() >= BUSY_GRACE {
        return live.pop_front();
    }
    None
}

/// Marks its connection as serving a request while it lives.
struct Serving(Arc<AtomicBool>);

impl Serving {
    fn start(flag: &Arc<AtomicBool>) -> Serving {
        flag.store(true, Ordering::Relaxed);
        Serving(flag.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
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
            if let Some(oldest) = make_room(&mut live) {
                oldest.abort.abort();
                continue;
            }
            // Every connection serves a request it began less than a moment ago: wait that
            // moment (one ending frees its place at once).
            tokio::select! {
                _ = connections.join_next() => {}
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
                () = &mut stopping => break,
            }
            live.retain(|c| !c.abort.is_finished());
        }
        let serving = Arc::new(AtomicBool::new(false));
        let flag = serving.clone();
        let router = router.clone();
        let service = hyper::service::service_fn(move |request| {
            let busy = Serving::start(&flag);
            let mut router = router.clone();
            async move {
                let answer = router.call(request).await;
                drop(busy);
                answer
            }
        });
        let abort = connections.spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
        });
        live.push_back(Live {
            since: std::time::Instant::now(),
            serving,
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
                    tokio::time::sleep(Duration::from_secs(12)).await;
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
    async fn past_the_limit_the_oldest_connection_without_a_request_makes_room() {
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
    async fn when_every_connection_is_busy_the_oldest_busy_for_ten_seconds_makes_room() {
        let (addr, stop) = started().await;
        tokio::task::spawn_blocking(move || {
            // 128 requests that each take 12 s (a client pipelining requests keeps its
            // connections just as busy).
            let busy: Vec<_> = (0..MAX_CONNECTIONS).map(|_| get(addr, "/slow")).collect();
            std::thread::sleep(Duration::from_millis(300));
            let started = std::time::Instant::now();
            let served = answer(get(addr, "/"), Duration::from_secs(20));
            assert!(served.starts_with("HTTP/1.1 200"), "{served}");
            // It waited for the oldest to have been busy ten seconds, not for the slow
            // ones to end...
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_secs(9) && waited < Duration::from_millis(11_500),
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
