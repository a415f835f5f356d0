//! Sends one email over SMTP (lettre, blocking, with timeouts), the text alone or with an HTML
//! alternative, and fills approval links into it as it goes.

use std::path::Path;
use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use super::text::printable;
use super::Email;
use crate::config::{MailSecurity, MailSettings};

/// How long connecting, and each command and reply, may take before a send fails.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an email could not be sent, or the mailer not built.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The settings cannot be used (an address, the password file).
    #[error("{0}")]
    Setup(String),
    /// The email cannot be built (e.g. a recipient stored in the outbox is not an address).
    #[error("building email {message_id}: {error}")]
    Message { message_id: String, error: String },
    /// The server could not be reached, or refused the email. `permanent` when it said so
    /// with a 5xx reply (it is retried all the same: a person must see it fail).
    #[error("sending email {message_id} via {server}: {error}")]
    Send {
        message_id: String,
        server: String,
        error: String,
        permanent: bool,
    },
}

/// Sends emails through the configured SMTP server. Blocking: call it from a blocking thread.
/// Each send opens its own connection.
pub struct Mailer {
    transport: SmtpTransport,
    from: Mailbox,
    to: Vec<String>,
    /// `host:port (security)`, for messages.
    server: String,
    /// Fills approval links into emails as they are sent (`gate::links`).
    pub(super) link_key: Option<crate::gate::links::LinkKey>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .field("to", &self.to)
            .finish()
    }
}

impl Mailer {
    /// Builds the mailer; reads the SMTP password from its file. Connects to nothing yet.
    pub fn new(settings: &MailSettings) -> Result<Mailer, MailError> {
        let from: Mailbox = settings.from.parse().map_err(|e| {
            MailError::Setup(format!(
                "[daemon.mail] from {:?} is not an email address: {e}",
                settings.from
            ))
        })?;
        for to in &settings.to {
            to.parse::<Mailbox>().map_err(|e| {
                MailError::Setup(format!(
                    "[daemon.mail] to {to:?} is not an email address: {e}"
                ))
            })?;
        }
        let host = settings.smtp_host.trim();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        let tls = |host: &str| {
            TlsParameters::new(host.to_owned())
                .map_err(|e| MailError::Setup(format!("setting up TLS for {host}: {e}")))
        };
        let tls = match settings.security {
            MailSecurity::StartTls => Tls::Required(tls(&host)?),
            MailSecurity::Tls => Tls::Wrapper(tls(&host)?),
            MailSecurity::None => Tls::None,
        };
        let mut builder = SmtpTransport::builder_dangerous(host.clone())
            .port(settings.smtp_port)
            .tls(tls)
            .timeout(Some(SEND_TIMEOUT));
        if let Some(auth) = &settings.auth {
            let password = read_password(&auth.password_file)?;
            builder = builder.credentials(Credentials::new(auth.username.clone(), password));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            to: settings.to.clone(),
            server: format!("{host}:{} ({})", settings.smtp_port, settings.security),
            link_key: None,
        })
    }

    /// The key approval links are derived from: emails that hold links are sent with them.
    pub fn with_link_key(mut self, key: crate::gate::links::LinkKey) -> Mailer {
        self.link_key = Some(key);
        self
    }

    /// The configured recipients: what to queue an email for.
    pub fn recipients(&self) -> &[String] {
        &self.to
    }

    /// Sends `email` to the configured recipients.
    pub fn send(&self, email: &Email) -> Result<(), MailError> {
        self.send_to(email, &self.to)
    }

    /// Sends `email` to `to` (e.g. the recipients stored with it in the outbox).
    pub fn send_to(&self, email: &Email, to: &[String]) -> Result<(), MailError> {
        let message = self.message(email, to)?;
        self.transport
            .send(&message)
            .map(|_| ())
            .map_err(|e| MailError::Send {
                message_id: email.message_id.clone(),
                server: self.server.clone(),
                error: e.to_string(),
                permanent: e.is_permanent(),
            })
    }

    fn message(&self, email: &Email, to: &[String]) -> Result<Message, MailError> {
        let bad = |error: String| MailError::Message {
            message_id: email.message_id.clone(),
            error,
        };
        if to.is_empty() {
            return Err(bad("no recipient".to_owned()));
        }
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(printable(&email.subject))
            .message_id(Some(email.message_id.clone()))
            .header(AutoSubmitted);
        for address in to {
            let mailbox: Mailbox = address
                .parse()
                .map_err(|e| bad(format!("recipient {address:?}: {e}")))?;
            builder = builder.to(mailbox);
        }
        match &email.html {
            // Text first, HTML last: a client shows the last alternative it can display.
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                email.text_body.clone(),
                html.clone(),
            )),
            None => builder
                .header(ContentType::TEXT_PLAIN)
                .body(email.text_body.clone()),
        }
        .map_err(|e| bad(e.to_string()))
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834): tells vacation responders not to answer.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// The SMTP password: the file's first line, without its line ending.
fn read_password(path: &Path) -> Result<String, MailError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        MailError::Setup(format!(
            "cannot read the SMTP password file {}: {e}",
            path.display()
        ))
    })?;
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        return Err(MailError::Setup(format!(
            "the SMTP password file {} is empty: its first line must be the password",
            path.display()
        )));
    }
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener};
    use std::time::Duration;

    use super::*;
    use crate::config::MailAuth;
    use crate::report::testing::{sample_email, serve, settings, wait_for, Collector, REVERT};

    #[test]
    fn the_mailer_delivers_to_a_real_smtp_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Collector::default();
        let inbox = collector.inbox.clone();
        serve(listener, collector);

        let mailer = Mailer::new(&settings(addr)).unwrap();
        assert_eq!(
            mailer.recipients(),
            ["oncall@example.com", "lead@example.com"]
        );
        let email = sample_email();
        mailer.send(&email).unwrap();

        let got = wait_for(&inbox, 1, Duration::from_secs(10));
        assert_eq!(got.len(), 1);
        let received = &got[0];
        assert_eq!(received.from, "guardian@example.com");
        assert_eq!(received.to, ["oncall@example.com", "lead@example.com"]);
        let parsed = mail_parser::MessageParser::default()
            .parse(&received.data)
            .expect("a parsable message");
        assert_eq!(
            parsed.subject(),
            Some("[guardian] shop: rolled back \u{2014} commit 3f9a2c1b7d")
        );
        assert_eq!(
            parsed.message_id(),
            Some("chg_0123456789ab.rolled_back@guardian")
        );
        let from = parsed.from().unwrap().first().unwrap();
        assert_eq!(from.address(), Some("guardian@example.com"));
        assert_eq!(from.name(), Some("Guardian"));
        let to: Vec<_> = parsed
            .to()
            .unwrap()
            .iter()
            .filter_map(|a| a.address())
            .collect();
        assert_eq!(to, ["oncall@example.com", "lead@example.com"]);
        assert_eq!(
            parsed.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-generated")
        );
        assert!(parsed.date().is_some());
        let body = parsed.body_text(0).unwrap().replace("\r\n", "\n");
        // The body arrives as it was written (line endings aside), dots included.
        assert_eq!(body.trim_end(), email.text_body.trim_end());
        assert!(body.contains(&format!("git revert {REVERT}")));
        assert!(body.contains("\n.dot at the start\n..two dots\n.\n"));
    }

    #[test]
    fn the_password_is_read_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "127.0.0.1:2525".parse().unwrap();
        let mut s = settings(addr);
        s.auth = Some(MailAuth {
            username: "guardian".into(),
            password_file: dir.path().join("missing"),
        });
        let e = Mailer::new(&s).unwrap_err().to_string();
        assert!(e.contains("cannot read the SMTP password file"), "{e}");
        assert!(e.contains("missing"), "{e}");
        let file = dir.path().join("password");
        std::fs::write(&file, "\n").unwrap();
        s.auth.as_mut().unwrap().password_file = file.clone();
        let e = Mailer::new(&s).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        std::fs::write(&file, "s3cret with spaces\nignored\n").unwrap();
        assert_eq!(read_password(&file).unwrap(), "s3cret with spaces");
        let mailer = Mailer::new(&s).unwrap();
        assert!(!format!("{mailer:?}").contains("s3cret"));
        // TLS settings build without touching the network.
        for security in [MailSecurity::StartTls, MailSecurity::Tls] {
            s.security = security;
            s.smtp_host = "smtp.example.com".into();
            Mailer::new(&s).unwrap();
        }
    }
}
