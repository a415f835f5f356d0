//! `[daemon.mail]`: how guardian emails the on-call engineer: addresses checked as email
//! addresses, the server and how the connection is protected (unencrypted only to this
//! machine), and a login whose password stays in its own file.

use std::fmt;
use std::path::PathBuf;

use super::{ConfigError, RawMail};

/// How guardian emails the on-call engineer.
#[derive(Clone, Debug, PartialEq)]
pub struct MailSettings {
    /// The sender address, e.g. `guardian@example.com` or `Guardian <guardian@example.com>`.
    pub from: String,
    /// The recipients, at least one.
    pub to: Vec<String>,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub security: MailSecurity,
    /// Log in to the server; the password is read from a file when the mailer is built.
    pub auth: Option<MailAuth>,
    /// Healthy changes are not mailed one by one (they go into a digest).
    pub digest_healthy: bool,
}

/// How the connection to the SMTP server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailSecurity {
    /// Plain connection upgraded with STARTTLS; the upgrade is required.
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No encryption: only to a server on this machine.
    None,
}

impl MailSecurity {
    pub fn as_str(self) -> &'static str {
        match self {
            MailSecurity::StartTls => "starttls",
            MailSecurity::Tls => "tls",
            MailSecurity::None => "none",
        }
    }
}

impl fmt::Display for MailSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SMTP login. The password stays in its file (readable by guardian only), never in the
/// configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct MailAuth {
    pub username: String,
    pub password_file: PathBuf,
}

impl RawMail {
    pub fn validate(self) -> Result<MailSettings, ConfigError> {
        const SECTION: &str = "daemon.mail";
        if self.password.is_some() {
            return Err(ConfigError::invalid(
                SECTION,
                "password",
                "must not be written in the configuration: put it in a file only guardian can \
                 read and set password_file to that file's path",
            ));
        }
        let address = |key: &'static str, value: String| {
            let trimmed = value.trim().to_owned();
            match trimmed.parse::<lettre::message::Mailbox>() {
                Ok(_) => Ok(trimmed),
                Err(e) => Err(ConfigError::invalid(
                    SECTION,
                    key,
                    format!(
                        "must be an email address such as \"guardian@example.com\" or \
                         \"Guardian <guardian@example.com>\", got {value:?} ({e})"
                    ),
                )),
            }
        };
        let from = address(
            "from",
            self.from.ok_or_else(|| {
                ConfigError::invalid(SECTION, "from", "is missing: the sender address")
            })?,
        )?;
        let to = self.to.unwrap_or_default();
        if to.is_empty() {
            return Err(ConfigError::invalid(
                SECTION,
                "to",
                "must list at least one recipient, e.g. [\"oncall@example.com\"]",
            ));
        }
        let to = to
            .into_iter()
            .map(|a| address("to", a))
            .collect::<Result<Vec<_>, _>>()?;
        let smtp_host = self
            .smtp_host
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        if smtp_host.is_empty() {
            return Err(ConfigError::invalid(
                SECTION,
                "smtp_host",
                "is missing: the SMTP server to send through, e.g. \"smtp.example.com\"",
            ));
        }
        if smtp_host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(ConfigError::invalid(
                SECTION,
                "smtp_host",
                format!(
                    "must be a host name or IP address (no scheme, no port), got {smtp_host:?}"
                ),
            ));
        }
        let security = match self.security.as_deref().map(str::trim) {
            None | Some("starttls") => MailSecurity::StartTls,
            Some("tls") => MailSecurity::Tls,
            Some("none") => MailSecurity::None,
            Some(other) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "security",
                    format!("must be \"starttls\", \"tls\" or \"none\", got {other:?}"),
                ))
            }
        };
        if security == MailSecurity::None && !is_loopback_host(&smtp_host) {
            return Err(ConfigError::invalid(
                SECTION,
                "security",
                format!(
                    "= \"none\" sends the alert (and any password) unencrypted, so it is only \
                     allowed for a server on this machine (localhost, 127.0.0.1, ::1); \
                     smtp_host is {smtp_host:?}: use \"starttls\" or \"tls\""
                ),
            ));
        }
        let default_port = match security {
            MailSecurity::Tls => 465,
            MailSecurity::StartTls | MailSecurity::None => 587,
        };
        let smtp_port = match self.smtp_port {
            None => default_port,
            Some(n) if (1..=65_535).contains(&n) => n as u16,
            Some(n) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "smtp_port",
                    format!("must be a TCP port from 1 to 65535, got {n}"),
                ))
            }
        };
        let auth = match (self.username, self.password_file) {
            (None, None) => None,
            (Some(username), Some(password_file)) => {
                if username.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        SECTION,
                        "username",
                        "must not be empty",
                    ));
                }
                if password_file.as_os_str().is_empty() {
                    return Err(ConfigError::invalid(
                        SECTION,
                        "password_file",
                        "must not be empty",
                    ));
                }
                Some(MailAuth {
                    username,
                    password_file,
                })
            }
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "password_file",
                    "is missing: username and password_file go together (the password is read \
                     from that file, never written in the configuration); set both, or neither",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "username",
                    "is missing: username and password_file go together; set both, or neither",
                ))
            }
        };
        Ok(MailSettings {
            from,
            to,
            smtp_host,
            smtp_port,
            security,
            auth,
            digest_healthy: self.digest_healthy.unwrap_or(true),
        })
    }
}

/// Whether `host` names this machine: `localhost` (or a name under it), or a loopback address.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(&host);
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::config::Config;

    fn mail(body: &str) -> Result<MailSettings, ConfigError> {
        Config::parse(&format!("[daemon]\n[daemon.mail]\n{body}\n"))
            .map(|c| c.daemon.unwrap().mail.unwrap())
    }

    fn mail_err(body: &str) -> String {
        mail(body).unwrap_err().to_string()
    }

    const MAIL: &str = "from = \"guardian@example.com\"\nto = [\"oncall@example.com\"]\n";

    #[test]
    fn the_mail_section_has_defaults() {
        assert_eq!(
            Config::parse("[daemon]\n").unwrap().daemon.unwrap().mail,
            None
        );
        let m = mail(&format!("{MAIL}smtp_host = \"smtp.example.com\"")).unwrap();
        assert_eq!(
            m,
            MailSettings {
                from: "guardian@example.com".into(),
                to: vec!["oncall@example.com".into()],
                smtp_host: "smtp.example.com".into(),
                smtp_port: 587,
                security: MailSecurity::StartTls,
                auth: None,
                digest_healthy: true,
            }
        );
        let m = mail(
            "from = \"Guardian <guardian@example.com>\"\n\
             to = [\"a@example.com\", \"On call <b@example.com>\"]\n\
             smtp_host = \"smtp.example.com\"\nsmtp_port = 2525\nsecurity = \"tls\"\n\
             username = \"guardian\"\npassword_file = \"/etc/guardian/smtp-password\"\n\
             digest_healthy = false",
        )
        .unwrap();
        assert_eq!(m.from, "Guardian <guardian@example.com>");
        assert_eq!(m.to.len(), 2);
        assert_eq!((m.smtp_port, m.security), (2525, MailSecurity::Tls));
        assert_eq!(
            m.auth,
            Some(MailAuth {
                username: "guardian".into(),
                password_file: "/etc/guardian/smtp-password".into(),
            })
        );
        assert!(!m.digest_healthy);
        // Implicit TLS without a port means the SMTPS port.
        let m = mail(&format!("{MAIL}smtp_host = \"h\"\nsecurity = \"tls\"")).unwrap();
        assert_eq!(m.smtp_port, 465);
    }

    #[test]
    fn mail_addresses_and_server_are_checked() {
        expect!["[daemon.mail] from is missing: the sender address"]
            .assert_eq(&mail_err("to = [\"a@example.com\"]\nsmtp_host = \"h\""));
        expect![[r#"[daemon.mail] from must be an email address such as "guardian@example.com" or "Guardian <guardian@example.com>", got "not an address" (Invalid input)"#]].assert_eq(&mail_err(
            "from = \"not an address\"\nto = [\"a@example.com\"]\nsmtp_host = \"h\"",
        ));
        expect![[
            r#"[daemon.mail] to must list at least one recipient, e.g. ["oncall@example.com"]"#
        ]]
        .assert_eq(&mail_err("from = \"g@example.com\"\nsmtp_host = \"h\""));
        expect![[
            r#"[daemon.mail] to must list at least one recipient, e.g. ["oncall@example.com"]"#
        ]]
        .assert_eq(&mail_err(
            "from = \"g@example.com\"\nto = []\nsmtp_host = \"h\"",
        ));
        expect![[r#"[daemon.mail] to must be an email address such as "guardian@example.com" or "Guardian <guardian@example.com>", got "oops" (Invalid input)"#]].assert_eq(&mail_err(
            "from = \"g@example.com\"\nto = [\"ok@example.com\", \"oops\"]\nsmtp_host = \"h\"",
        ));
        // A single address where a list belongs is toml's type error, naming the key.
        expect![[r#"
            TOML parse error at line 4, column 6
              |
            4 | to = "a@example.com"
              |      ^^^^^^^^^^^^^^^
            invalid type: string "a@example.com", expected a sequence"#]]
        .assert_eq(&mail_err(
            "from = \"g@example.com\"\nto = \"a@example.com\"\nsmtp_host = \"h\"",
        ));
        expect![[r#"[daemon.mail] smtp_host is missing: the SMTP server to send through, e.g. "smtp.example.com""#]].assert_eq(&mail_err(MAIL));
        expect![[r#"[daemon.mail] smtp_host must be a host name or IP address (no scheme, no port), got "smtp://mail.example.com""#]].assert_eq(&mail_err(&format!(
            "{MAIL}smtp_host = \"smtp://mail.example.com\""
        )));
        let ports: Vec<String> = ["0", "65536", "-25"]
            .iter()
            .map(|port| mail_err(&format!("{MAIL}smtp_host = \"h\"\nsmtp_port = {port}")))
            .collect();
        expect![[r#"
            [daemon.mail] smtp_port must be a TCP port from 1 to 65535, got 0
            [daemon.mail] smtp_port must be a TCP port from 1 to 65535, got 65536
            [daemon.mail] smtp_port must be a TCP port from 1 to 65535, got -25"#]]
        .assert_eq(&ports.join("\n"));
        expect![[r#"[daemon.mail] security must be "starttls", "tls" or "none", got "ssl""#]]
            .assert_eq(&mail_err(&format!(
                "{MAIL}smtp_host = \"h\"\nsecurity = \"ssl\""
            )));
        expect![[r#"
            TOML parse error at line 6, column 1
              |
            6 | smtp_user = "x"
              | ^^^^^^^^^
            unknown field `smtp_user`, expected one of `from`, `to`, `smtp_host`, `smtp_port`, `security`, `username`, `password_file`, `password`, `digest_healthy`"#]].assert_eq(&mail_err(&format!(
            "{MAIL}smtp_host = \"h\"\nsmtp_user = \"x\""
        )));
    }

    #[test]
    fn unencrypted_mail_only_to_this_machine() {
        for host in [
            "localhost",
            "127.0.0.1",
            "127.0.0.53",
            "::1",
            "[::1]",
            "LocalHost.",
        ] {
            let m = mail(&format!(
                "{MAIL}smtp_host = \"{host}\"\nsecurity = \"none\""
            ))
            .unwrap();
            assert_eq!(m.security, MailSecurity::None, "{host}");
            assert_eq!(m.smtp_port, 587, "{host}");
        }
        let refused: Vec<String> = [
            "smtp.example.com",
            "10.0.0.5",
            "localhost.example.com",
            "::2",
        ]
        .iter()
        .map(|host| {
            mail_err(&format!(
                "{MAIL}smtp_host = \"{host}\"\nsecurity = \"none\""
            ))
        })
        .collect();
        expect![[r#"
            [daemon.mail] security = "none" sends the alert (and any password) unencrypted, so it is only allowed for a server on this machine (localhost, 127.0.0.1, ::1); smtp_host is "smtp.example.com": use "starttls" or "tls"
            [daemon.mail] security = "none" sends the alert (and any password) unencrypted, so it is only allowed for a server on this machine (localhost, 127.0.0.1, ::1); smtp_host is "10.0.0.5": use "starttls" or "tls"
            [daemon.mail] security = "none" sends the alert (and any password) unencrypted, so it is only allowed for a server on this machine (localhost, 127.0.0.1, ::1); smtp_host is "localhost.example.com": use "starttls" or "tls"
            [daemon.mail] security = "none" sends the alert (and any password) unencrypted, so it is only allowed for a server on this machine (localhost, 127.0.0.1, ::1); smtp_host is "::2": use "starttls" or "tls""#]].assert_eq(&refused.join("\n"));
    }

    #[test]
    fn the_smtp_password_comes_from_a_file() {
        let base = format!("{MAIL}smtp_host = \"h\"\n");
        expect!["[daemon.mail] password_file is missing: username and password_file go together (the password is read from that file, never written in the configuration); set both, or neither"].assert_eq(&mail_err(&format!("{base}username = \"u\"")));
        expect!["[daemon.mail] username is missing: username and password_file go together; set both, or neither"].assert_eq(&mail_err(&format!("{base}password_file = \"/p\"")));
        expect!["[daemon.mail] username must not be empty"].assert_eq(&mail_err(&format!(
            "{base}username = \" \"\npassword_file = \"/p\""
        )));
        let e = mail_err(&format!("{base}username = \"u\"\npassword = \"hunter2\""));
        expect!["[daemon.mail] password must not be written in the configuration: put it in a file only guardian can read and set password_file to that file's path"].assert_eq(&e);
        assert!(
            !e.contains("hunter2"),
            "the error must not repeat the secret: {e}"
        );
    }
}
