//! The engine's one owner: a thread of its own that holds the engine (and with it the store),
//! ticks it on the clock, and between ticks runs what the API's handlers and finished jobs
//! send it, one message at a time.
//!
//! Nothing else touches the engine, so nothing waits on a lock, and no tokio worker ever runs
//! the engine's file reads and SQLite writes. Nothing slow runs here either: git, the redeploy
//! hook, scrapes and SMTP run as jobs on threads of their own, and their results come back as
//! messages. So a tick is late by at most one message (each takes milliseconds), whatever a
//! client or a hung hook does; the watchdog ping, sent after a tick, proves exactly that.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A piece of work for the owner: runs with the state, between two ticks.
type Work<S> = Box<dyn FnOnce(&mut S) + Send>;

enum Message<S> {
    Work(Work<S>),
    /// The last message: the work sent before it runs, then `Clockwork::stop`.
    Stop,
}

/// The handle everyone else holds: sends work to the owner of an `S` (the daemon's is the
/// [`Engine`](super::engine::Engine)).
pub struct Owner<S> {
    tx: mpsc::Sender<Message<S>>,
}

impl<S> Clone for Owner<S> {
    fn clone(&self) -> Self {
        Owner {
            tx: self.tx.clone(),
        }
    }
}

/// The owner has stopped (guardian is stopping, or its loop failed): nothing more is run.
#[derive(Debug)]
pub struct Gone;

/// How the owner's thread ended: its loop's error, if it failed; `Err(_)` if it panicked.
pub type Ended<E> = tokio::sync::oneshot::Receiver<Result<(), E>>;

impl<S: 'static> Owner<S> {
    /// Runs `work` with the state and waits for its answer without blocking the runtime.
    pub async fn call<T, F>(&self, work: F) -> Result<T, Gone>
    where
        T: Send + 'static,
        F: FnOnce(&mut S) -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Message::Work(Box::new(move |state| {
                let _ = tx.send(work(state));
            })))
            .map_err(|_| Gone)?;
        rx.await.map_err(|_| Gone)
    }

    /// Hands `work` to the owner and goes on: a job's result, a refusal to record.
    pub fn tell<F>(&self, work: F)
    where
        F: FnOnce(&mut S) + Send + 'static,
    {
        // Once the owner is gone guardian is stopping, and a restart redoes what this would
        // have recorded (a rollback's outcome is found again from git: see `Engine::open`).
        let _ = self.tx.send(Message::Work(Box::new(work)));
    }

    /// Asks the owner to finish: the work already sent runs first, then `Clockwork::stop`.
    pub fn stop(&self) {
        let _ = self.tx.send(Message::Stop);
    }
}

/// What the owner does on the clock, besides running messages.
pub trait Clockwork<S>: Send + 'static {
    type Error: Send + 'static;
    /// Every period: read the logs, judge, start the jobs that are due. An error ends the owner.
    fn tick(&mut self, state: &mut S, owner: &Owner<S>) -> Result<(), Self::Error>;
    /// Once, at the end: the last tick and what must be saved.
    fn stop(&mut self, state: &mut S) -> Result<(), Self::Error>;
}

/// Starts the owner of `state` on a thread of its own: it ticks every `every` and runs
/// messages in between until [`Owner::stop`] or a failed tick.
pub fn start<S, C>(
    state: S,
    every: Duration,
    clockwork: C,
) -> std::io::Result<(Owner<S>, Ended<C::Error>)>
where
    S: Send + 'static,
    C: Clockwork<S>,
{
    let (tx, rx) = mpsc::channel();
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let owner = Owner { tx };
    let own = owner.clone();
    std::thread::Builder::new()
        .name("guardian-engine".into())
        .spawn(move || {
            let _ = done_tx.send(run(state, &rx, every, clockwork, &own));
        })?;
    Ok((owner, done))
}

fn run<S: 'static, C: Clockwork<S>>(
    mut state: S,
    rx: &mpsc::Receiver<Message<S>>,
    every: Duration,
    mut clockwork: C,
    own: &Owner<S>,
) -> Result<(), C::Error> {
    let mut next_tick = Instant::now();
    let ended = loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Message::Work(work)) => {
                // A panic in one piece of work leaves the engine as it was between two
                // operations, which are each complete: keep watching rather than stop. (The
                // caller sees its answer dropped.)
                if std::panic::catch_unwind(AssertUnwindSafe(|| work(&mut state))).is_err() {
                    tracing::error!("a request to the engine panicked; carrying on");
                }
            }
            Ok(Message::Stop) => break Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Not while `own` lives; a stop all the same.
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
        }
        // Checked after every message, so a stream of them never starves the clock.
        if Instant::now() >= next_tick {
            if let Err(e) = clockwork.tick(&mut state, own) {
                break Err(e);
            }
            // Late ticks are not caught up in a burst: the next is a full period away.
            next_tick = Instant::now() + every;
        }
    };
    let stopped = clockwork.stop(&mut state);
    ended.and(stopped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records when it ticked and what it saw; fails its tick when told to.
    struct Recorder {
        ticks: Arc<Mutex<Vec<Instant>>>,
        fail_at: Option<usize>,
    }

    impl Clockwork<Vec<u32>> for Recorder {
        type Error = String;
        fn tick(&mut self, state: &mut Vec<u32>, _: &Owner<Vec<u32>>) -> Result<(), String> {
            let mut ticks = self.ticks.lock().unwrap();
            ticks.push(Instant::now());
            if Some(ticks.len()) == self.fail_at {
                return Err(format!(
                    "tick {} failed with {} items",
                    ticks.len(),
                    state.len()
                ));
            }
            Ok(())
        }
        fn stop(&mut self, state: &mut Vec<u32>) -> Result<(), String> {
            state.push(u32::MAX);
            Ok(())
        }
    }

    type Ticks = Arc<Mutex<Vec<Instant>>>;

    fn started(fail_at: Option<usize>) -> (Owner<Vec<u32>>, Ended<String>, Ticks) {
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let clock = Recorder {
            ticks: ticks.clone(),
            fail_at,
        };
        let (owner, ended) = start(Vec::new(), Duration::from_millis(20), clock).unwrap();
        (owner, ended, ticks)
    }

    #[tokio::test]
    async fn work_runs_in_the_order_sent_and_calls_get_their_answer() {
        let (owner, _ended, _) = started(None);
        owner.tell(|v| v.push(1));
        owner.tell(|v| v.push(2));
        assert_eq!(owner.call(|v| v.clone()).await.unwrap(), vec![1, 2]);
    }

    #[tokio::test]
    async fn a_stream_of_work_does_not_starve_the_clock() {
        let (owner, _ended, ticks) = started(None);
        // Half a second of back-to-back work, each piece 1 ms: the ticks keep their pace.
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            for _ in 0..50 {
                owner.tell(|_| std::thread::sleep(Duration::from_millis(1)));
            }
            owner.call(|_| ()).await.unwrap();
        }
        let ticks = ticks.lock().unwrap();
        let longest = ticks.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(ticks.len() >= 10, "{} ticks in 500 ms", ticks.len());
        // One period plus the one piece of work under way, with room for a loaded machine.
        assert!(
            longest < Duration::from_millis(200),
            "a tick waited {longest:?}"
        );
    }

    #[tokio::test]
    async fn a_panicking_piece_of_work_is_dropped_and_the_owner_carries_on() {
        let (owner, _ended, _) = started(None);
        let lost = owner
            .call(|_: &mut Vec<u32>| -> u32 { panic!("a bug") })
            .await;
        assert!(lost.is_err());
        owner.tell(|v| v.push(7));
        assert_eq!(owner.call(|v| v.clone()).await.unwrap(), vec![7]);
    }

    #[tokio::test]
    async fn stop_runs_the_work_sent_before_it_then_the_last_words() {
        let (owner, ended, _) = started(None);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let copy = seen.clone();
        owner.tell(|v| v.push(1));
        owner.stop();
        owner.tell(move |v| copy.lock().unwrap().clone_from(v));
        assert_eq!(ended.await.unwrap(), Ok(()));
        // After the stop nothing runs, and asking says so.
        assert!(seen.lock().unwrap().is_empty());
        assert!(owner.call(|v| v.len()).await.is_err());
    }

    #[tokio::test]
    async fn a_failed_tick_ends_the_owner_with_its_error() {
        let (owner, ended, _) = started(Some(3));
        owner.tell(|v| v.push(1));
        assert_eq!(
            ended.await.unwrap(),
            Err("tick 3 failed with 1 items".to_owned())
        );
        assert!(owner.call(|v| v.len()).await.is_err());
    }
}
