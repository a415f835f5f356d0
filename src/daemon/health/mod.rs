//! The app's health check and its restart (`[daemon.health]`), the first bounded action:
//! `decide.rs` is the pure state machine; this file the IO at its edges, each on a thread of
//! its own whose result comes back to the engine's owner as a message: the probe (an HTTP GET
//! with a timeout, `ureq`) and the restart command (through `process`: own process group,
//! timeout, bounded output).

pub mod decide;
