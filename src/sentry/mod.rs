//! Sentry as a source of evidence, the pure half: a webhook delivery checked for authenticity
//! (`webhook`) and read into what guardian uses of it (`payload`); the API's answers read
//! (`api`). No IO and no clock: the
//! daemon hands in the headers, the body and the time, and stores what comes out.

pub mod api;
pub mod claim;
pub mod evidence;
pub mod payload;
#[cfg(test)]
pub mod testing;
pub mod webhook;

pub use claim::{ClaimWatch, QuietBefore};
pub use evidence::SentryWatch;
pub use payload::{read, read_issue_details, Event, Issue, IssueAction, Notice, PayloadError};
pub use webhook::{
    verify, Headers, Refused, Verified, EVENT_FUTURE_SECS, ISSUE_REPLAY_WINDOW_SECS,
    REPLAY_WINDOW_SECS,
};
