//! The decision core: pure, deterministic, no IO and no clock. Time and observations come in as
//! values; verdicts and their evidence come out as values.

pub mod histogram;
pub mod observation;

pub use histogram::Histogram;
pub use observation::{Aggregate, Arm, Request};
