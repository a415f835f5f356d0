//! Telling people what guardian decided and did: the alert email, the daily digest, the
//! post-mortem with its chart, and the delivery of emails.
//!
//! Rendering is pure (values in, text out: no clock, no IO) and reads the core's report in its
//! own type ([`evidence::stored`]), never by string key. Numbers go through [`units`] so every
//! view prints the same evidence the same way. Delivery is apart: [`mailer`] speaks SMTP and
//! [`outbox`] keeps the durable queue in the store; neither knows what an email says.
//!
//! - [`units`]: rates, ratios, e-values, latencies, counts, durations and times.
//! - [`text`]: outside text and commands as they are shown.
//! - [`evidence`]: the stored report read back, and the words for a signal and its standing.
//! - [`actions`]: what guardian did (the rollback's steps), how to undo the undo.
//! - [`status`]: `guardian status` and `notify` as text; [`page`]: the status page as HTML.
//! - [`alert`], [`digest`]: the emails. [`postmortem`] with [`document`] (the Markdown and HTML
//!   renderers) and [`chart`] (the SVG).

use serde::Serialize;

pub mod actions;
pub mod alert;
pub mod chart;
pub mod digest;
pub mod document;
pub mod evidence;
pub mod flags;
pub mod health;
pub mod mailer;
pub mod notify;
pub mod outbox;
pub mod page;
pub mod postmortem;
pub mod status;
pub mod text;
pub mod units;

#[cfg(test)]
mod testing;

pub use alert::{message_id, render_alert, render_alert_with_postmortem};
pub use digest::render_digest;
pub use flags::{flag_paragraph, render_flag_request};
pub use mailer::{MailError, Mailer};
pub use outbox::{deliver_due, enqueue, enqueue_with_links, retry_delay, DeliveryStats};

/// An email ready to send or queue. The sender and recipients come from the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Email {
    pub subject: String,
    pub text_body: String,
    /// The Message-ID header, angle brackets included.
    pub message_id: String,
    /// An HTML alternative (the post-mortem with its chart), sent with the text as
    /// multipart/alternative; the text alone must still say everything that matters.
    pub html: Option<String>,
}
