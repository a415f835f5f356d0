//! guardbench: a traffic simulator with ground truth, the peers guardian is measured against,
//! and the harness that runs them side by side on the same streams.
//!
//! Every detector sees the same stream, one simulated second at a time, through [`Detector`].
//! Seconds before the change have `t < 0`; the change lands at `t = 0`.

pub mod harness;
pub mod mannwhitney;
pub mod peers;
pub mod progress;
pub mod sim;

use crate::core::{Arm, Histogram};

/// What one route served on one arm during one simulated second.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    /// Index of the route (0 when the scenario has one route).
    pub route: u8,
    /// `None` in before/after topologies; `Some` when old and new serve side by side.
    pub arm: Option<Arm>,
    pub requests: u32,
    pub errors: u32,
    pub latency: Histogram,
}

/// What a detector says after seeing a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Continue,
    /// Roll back now.
    Rollback,
}

/// A deploy-regression detector fed one second at a time.
pub trait Detector {
    /// Sees second `t` (relative to the change; negative before it). Called for every second in
    /// order, including seconds with no traffic (`cells` may be empty or hold zero counts).
    fn second(&mut self, t: i64, cells: &[Cell]) -> Call;
}

/// Sums cells over routes for one arm (`None`: all cells whatever their arm).
pub fn total(cells: &[Cell], arm: Option<Arm>) -> (u64, u64, Histogram) {
    let mut h = Histogram::new();
    let (mut n, mut e) = (0u64, 0u64);
    for c in cells.iter().filter(|c| arm.is_none() || c.arm == arm) {
        n += u64::from(c.requests);
        e += u64::from(c.errors);
        h.merge(&c.latency);
    }
    (n, e, h)
}
