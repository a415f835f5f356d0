//! What the API's clients (`guardian notify`, `status` and the gate's commands) read of a
//! configuration file: `[daemon] listen` and `token_file`, and nothing else. A deploy's
//! `notify` must not fail on a mistake in a part of the file it never uses (a bad
//! `[daemon.mail]` key, say) while the daemon it talks to runs on the settings it read at start;
//! the caller checks the whole file too and warns, since the daemon would refuse it at its next
//! start or reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// Where the daemon's API listens and the file holding the token to call it with.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiAccess {
    pub listen: SocketAddr,
    pub token_file: PathBuf,
}

/// The two keys, and whatever else the file holds ignored (unlike `RawConfig`, which refuses
/// unknown keys: checking them is the whole file's business, not a client's).
#[derive(Deserialize)]
struct RawFile {
    daemon: Option<RawDaemonAccess>,
}

#[derive(Deserialize)]
struct RawDaemonAccess {
    listen: Option<String>,
    token_file: Option<PathBuf>,
}

impl ApiAccess {
    /// Reads `[daemon] listen` and `token_file` from a file's text, validated as the daemon
    /// validates them; `None` when the file has no `[daemon]` section. Text that is not TOML
    /// at all is refused: where the API is cannot be known from it.
    pub fn parse(text: &str) -> Result<Option<ApiAccess>, ConfigError> {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string().trim().into()))?;
        let Some(daemon) = raw.daemon else {
            return Ok(None);
        };
        Ok(Some(ApiAccess {
            listen: super::daemon::listen(daemon.listen)?,
            token_file: super::daemon::token_file(daemon.token_file),
        }))
    }

    /// [`ApiAccess::parse`] on a file. Errors name the file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Option<ApiAccess>, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            path: path.to_owned(),
            error,
        })?;
        ApiAccess::parse(&text).map_err(|e| ConfigError::InFile {
            path: path.to_owned(),
            error: Box::new(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::config::Config;

    #[test]
    fn a_mistake_elsewhere_in_the_file_does_not_hide_where_the_api_is() {
        let text =
            "[daemon]\nlisten = \"127.0.0.1:9000\"\ntoken_file = \"/etc/guardian/ops.token\"\n\
                    \n[daemon.mail]\nsmtp_hots = \"mail.example\"\n\n[detector]\nalpha = 7\n";
        // The daemon refuses the file ...
        assert!(Config::parse(text).is_err());
        // ... and a client still finds the API in it.
        assert_eq!(
            ApiAccess::parse(text).unwrap(),
            Some(ApiAccess {
                listen: "127.0.0.1:9000".parse().unwrap(),
                token_file: PathBuf::from("/etc/guardian/ops.token"),
            })
        );
    }

    #[test]
    fn the_keys_default_as_the_daemons_do() {
        let access = ApiAccess::parse("[daemon]\nservice = \"shop\"\n")
            .unwrap()
            .unwrap();
        let daemon = Config::parse("[daemon]\nservice = \"shop\"\n")
            .unwrap()
            .daemon
            .unwrap();
        assert_eq!(access.listen, daemon.listen);
        assert_eq!(access.token_file, daemon.token_file);
        assert_eq!(
            ApiAccess::parse("[detector]\nalpha = 0.01\n").unwrap(),
            None
        );
    }

    #[test]
    fn a_mistake_in_what_a_client_needs_names_the_key_and_what_is_wrong() {
        let err = |text: &str| ApiAccess::parse(text).unwrap_err().to_string();
        expect![[r#"[daemon] listen must be an address and port such as 127.0.0.1:8707, got "localhost" (invalid socket address syntax)"#]]
            .assert_eq(&err("[daemon]\nlisten = \"localhost\"\n"));
        expect![[r#"
            TOML parse error at line 2, column 14
              |
            2 | token_file = 7
              |              ^
            invalid type: integer `7`, expected path string"#]]
        .assert_eq(&err("[daemon]\ntoken_file = 7\n"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guardian.toml");
        std::fs::write(&path, "[daemon]\nlisten = \"localhost\"\n").unwrap();
        let message = ApiAccess::from_path(&path).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}: [daemon] listen ", path.display())),
            "{message}"
        );
    }
}
