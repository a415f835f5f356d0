//! The decision core: pure, deterministic, no IO and no clock. Time and observations come in as
//! values; verdicts and their evidence come out as values.

pub mod baseline;
pub mod dispersion;
pub mod evidence;
pub mod histogram;
pub mod monitor;
pub mod observation;
pub mod settings;
pub mod strata;
pub mod tally;
pub mod watch;

pub use baseline::{BaselineWindow, Span};
pub use histogram::Histogram;
pub use monitor::{BaselinePreview, DeployWindow, Landing, Monitor, RouteBaseline};
pub use observation::{Aggregate, Arm, Request};
pub use settings::{AlphaSplit, DetectorSettings};
pub use watch::{ClaimVerdict, Design, FixClaim, Report, SignalKind, SignalReport, Verdict};

#[cfg(test)]
mod tidy {
    /// The core's sources, read at compile time.
    const SOURCES: [(&str, &str); 15] = [
        ("baseline.rs", include_str!("baseline.rs")),
        ("dispersion.rs", include_str!("dispersion.rs")),
        ("evidence.rs", include_str!("evidence.rs")),
        ("histogram.rs", include_str!("histogram.rs")),
        ("monitor.rs", include_str!("monitor.rs")),
        ("observation.rs", include_str!("observation.rs")),
        ("settings.rs", include_str!("settings.rs")),
        ("strata.rs", include_str!("strata.rs")),
        ("tally.rs", include_str!("tally.rs")),
        ("watch/mod.rs", include_str!("watch/mod.rs")),
        ("watch/readout.rs", include_str!("watch/readout.rs")),
        ("watch/report.rs", include_str!("watch/report.rs")),
        ("watch/signal.rs", include_str!("watch/signal.rs")),
        ("watch/thin.rs", include_str!("watch/thin.rs")),
        ("mod.rs", ""),
    ];

    #[test]
    fn the_core_does_no_io_and_reads_no_clock() {
        // Spelled in pieces so this file does not match itself.
        let forbidden = [
            ["std::", "fs"].concat(),
            ["std::", "net"].concat(),
            ["std::", "process"].concat(),
            ["std::", "io"].concat(),
            ["System", "Time"].concat(),
            ["Inst", "ant::"].concat(),
            ["tok", "io"].concat(),
            ["std::", "thread"].concat(),
        ];
        for (file, text) in SOURCES {
            for word in &forbidden {
                assert!(!text.contains(word.as_str()), "src/core/{file} uses {word}");
            }
        }
    }
}
