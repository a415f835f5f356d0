//! The decision core: pure, deterministic, no IO and no clock. Time and observations come in as
//! values; verdicts and their evidence come out as values.

pub mod baseline;
pub mod evidence;
pub mod histogram;
pub mod monitor;
pub mod observation;
pub mod settings;
pub mod strata;
pub mod tally;
pub mod watch;

pub use histogram::Histogram;
pub use monitor::Monitor;
pub use observation::{Aggregate, Arm, Request};
pub use settings::{AlphaSplit, DetectorSettings};
pub use watch::{Design, Report, SignalKind, SignalReport, Verdict};
