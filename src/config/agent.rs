//! `[daemon.agent]`: the optional agent trigger. On a new Sentry issue that passes a filter,
//! guardian runs the operator's agent command, which answers (if at all) with a proposal through
//! the gate like any other. Needs `[daemon.sentry]` (where issues come from) and `[daemon.gate]`
//! with an agent token (how the fix comes back); refused otherwise.

use std::fmt;
use std::path::PathBuf;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::{ConfigError, GateSettings, RawAgent, SentrySettings};

const SECTION: &str = "daemon.agent";

/// Sentry's levels, least severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SentryLevel {
    Debug,
    Info,
    Warning,
    Error,
    Fatal,
}

impl SentryLevel {
    pub const ALL: [SentryLevel; 5] = [
        SentryLevel::Debug,
        SentryLevel::Info,
        SentryLevel::Warning,
        SentryLevel::Error,
        SentryLevel::Fatal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SentryLevel::Debug => "debug",
            SentryLevel::Info => "info",
            SentryLevel::Warning => "warning",
            SentryLevel::Error => "error",
            SentryLevel::Fatal => "fatal",
        }
    }

    /// The level Sentry sends as `text` (case aside; `warn` and `critical` as SDKs write them).
    pub fn read(text: &str) -> Option<SentryLevel> {
        match text.trim().to_ascii_lowercase().as_str() {
            "debug" => Some(SentryLevel::Debug),
            "info" => Some(SentryLevel::Info),
            "warning" | "warn" => Some(SentryLevel::Warning),
            "error" => Some(SentryLevel::Error),
            "fatal" | "critical" => Some(SentryLevel::Fatal),
            _ => None,
        }
    }
}

impl fmt::Display for SentryLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Repository globs where an issue is not handed to the agent: compiled once, kept with their
/// text so a refusal can name the glob. Case-insensitive (`src/Auth/x` is still auth code);
/// `*` stays within a directory, `**` crosses.
#[derive(Clone, Debug)]
pub struct DeniedPaths {
    globs: Vec<String>,
    set: GlobSet,
}

impl PartialEq for DeniedPaths {
    fn eq(&self, other: &DeniedPaths) -> bool {
        self.globs == other.globs
    }
}

impl Default for DeniedPaths {
    fn default() -> DeniedPaths {
        DeniedPaths {
            globs: Vec::new(),
            set: GlobSet::empty(),
        }
    }
}

impl DeniedPaths {
    /// Compiles `globs`; the error names the glob at fault.
    pub fn new(globs: &[String]) -> Result<DeniedPaths, String> {
        let mut builder = GlobSetBuilder::new();
        for (i, text) in globs.iter().enumerate() {
            if text.trim().is_empty() || text.starts_with('/') || text.split('/').any(|c| c == "..")
            {
                return Err(format!(
                    "[{i}] is {text:?}: globs match repository paths, with no leading `/` and no `..`"
                ));
            }
            let glob = GlobBuilder::new(text)
                .literal_separator(true)
                .case_insensitive(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("[{i}] is not a glob: {e}"))?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| e.to_string())?;
        Ok(DeniedPaths {
            globs: globs.to_vec(),
            set,
        })
    }

    /// The first glob `path` matches, if any.
    pub fn matching(&self, path: &str) -> Option<&str> {
        let path = path.trim_start_matches("./");
        self.set
            .matches(path)
            .first()
            .and_then(|&i| self.globs.get(i))
            .map(String::as_str)
    }

    pub fn globs(&self) -> &[String] {
        &self.globs
    }
}

/// The agent trigger, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSettings {
    /// The command, program first; run without a shell unless it is one.
    pub command: Vec<String>,
    /// Where it runs (its checkout, say); guardian's own working directory when unset.
    pub workdir: Option<PathBuf>,
    /// A run still going after this long is stopped (its whole process group), and recorded.
    pub timeout_secs: u32,
    /// Issues below this level are not handed over.
    pub min_level: SentryLevel,
    /// Events an issue must have reached (Sentry's count, or the events guardian stored).
    pub min_events: u64,
    /// An issue whose culprit or in-app files fall here is not handed over.
    pub denied_paths: DeniedPaths,
    /// Runs started in any hour, at most.
    pub max_runs_per_hour: u32,
    /// Runs going at once, at most (each for its own issue).
    pub max_running: u32,
    /// Run as this user, through `systemd-run --uid`; as guardian's own user when unset.
    pub user: Option<String>,
    /// The agent's token (the gate's agent role), handed over as `GUARDIAN_TOKEN`.
    pub token_file: PathBuf,
    /// Variables of guardian's environment the command also gets (e.g. its model's API key).
    pub pass_env: Vec<String>,
}

impl RawAgent {
    /// Validates the section; `sentry` and `gate` are the sections it depends on, as validated.
    pub fn validate(
        self,
        sentry: Option<&SentrySettings>,
        gate: Option<&GateSettings>,
    ) -> Result<AgentSettings, ConfigError> {
        let command = self.command.unwrap_or_default();
        if command.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(ConfigError::invalid(
                SECTION,
                "command",
                "must name the agent's command, program first, e.g. \
                 [\"/usr/local/bin/fix-issue\", \"--repo\", \"/srv/agent/app\"]",
            ));
        }
        if sentry.is_none() {
            return Err(ConfigError::invalid(
                SECTION,
                "command",
                "needs [daemon.sentry]: the agent is run on Sentry's issues, and without Sentry's \
                 webhooks there are none",
            ));
        }
        let Some(gate) = gate else {
            return Err(ConfigError::invalid(
                SECTION,
                "command",
                "needs [daemon.gate]: the agent's fix comes back as a proposal through the gate, \
                 and without it none is accepted",
            ));
        };
        let token_file =
            match (self.token_file, &gate.agent_token_file) {
                (Some(file), _) => file,
                (None, Some(file)) => file.clone(),
                (None, None) => return Err(ConfigError::invalid(
                    SECTION,
                    "token_file",
                    "is missing, and [daemon.gate] has no agent_token_file: the agent proposes \
                     with the gate's agent token; set [daemon.gate] agent_token_file",
                )),
            };
        if gate.agent_token_file.is_none() {
            return Err(ConfigError::invalid(
                SECTION,
                "token_file",
                "must be the gate's agent token, and [daemon.gate] has no agent_token_file: set \
                 it there (to this file)",
            ));
        }
        let timeout_secs = match self.timeout_secs {
            None => 1800,
            Some(n) if (5..=86_400).contains(&n) => n as u32,
            Some(n) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "timeout_secs",
                    format!("must be whole seconds from 5 to 86400, got {n}"),
                ))
            }
        };
        let min_level = match self.min_level.as_deref() {
            None => SentryLevel::Error,
            Some(text) => SentryLevel::read(text).ok_or_else(|| {
                ConfigError::invalid(
                    SECTION,
                    "min_level",
                    format!(
                        "must be one of {}, got {text:?}",
                        SentryLevel::ALL
                            .map(|l| format!("{:?}", l.as_str()))
                            .join(", ")
                    ),
                )
            })?,
        };
        let min_events = match self.min_events {
            None => 1,
            Some(n) if (1..=1_000_000_000).contains(&n) => n as u64,
            Some(n) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "min_events",
                    format!("must be a whole number from 1 to 1000000000, got {n}"),
                ))
            }
        };
        let denied_paths = DeniedPaths::new(&self.denied_paths.unwrap_or_default())
            .map_err(|why| ConfigError::invalid(SECTION, "denied_paths", why))?;
        let bounded = |key: &'static str, v: Option<i64>, default: u32, max: i64| match v {
            None => Ok(default),
            Some(n) if (1..=max).contains(&n) => Ok(n as u32),
            Some(n) => Err(ConfigError::invalid(
                SECTION,
                key,
                format!("must be a whole number from 1 to {max}, got {n}"),
            )),
        };
        let max_runs_per_hour = bounded("max_runs_per_hour", self.max_runs_per_hour, 4, 60)?;
        let max_running = bounded("max_running", self.max_running, 1, 8)?;
        // Whatever guardian's user can read, an agent run as that user can too: the approvers'
        // tokens, the audit key, the database. It could approve its own fixes.
        match (&self.user, self.as_guardian.unwrap_or(false)) {
            (None, false) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "user",
                    "is needed: an agent run as guardian's own user can read guardian's \
                     tokens (the approvers' too), its keys and its database, so it could approve \
                     its own fixes and rewrite the record; name an account of the agent's own \
                     (it is run through systemd-run), or set as_guardian = true on a host where \
                     that does not matter (a test host)"
                        .to_owned(),
                ))
            }
            (Some(_), true) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "as_guardian",
                    "cannot go with user: the agent runs either as user or as guardian".to_owned(),
                ))
            }
            _ => {}
        }
        if let Some(user) = &self.user {
            let ok = !user.is_empty()
                && user.len() <= 32
                && !user.starts_with('-')
                && user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return Err(ConfigError::invalid(
                    SECTION,
                    "user",
                    format!(
                        "must be a user name or uid (letters, digits, _ . -, at most 32, not \
                         starting with -), got {user:?}"
                    ),
                ));
            }
        }
        if let Some(dir) = &self.workdir {
            if !dir.is_absolute() {
                return Err(ConfigError::invalid(
                    SECTION,
                    "workdir",
                    format!("must be an absolute path, got {:?}", dir.display()),
                ));
            }
        }
        let pass_env = self.pass_env.unwrap_or_default();
        for name in &pass_env {
            let ok = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(ConfigError::invalid(
                    SECTION,
                    "pass_env",
                    format!("{name:?} is not an environment variable's name"),
                ));
            }
            if name.starts_with("GUARDIAN_") {
                return Err(ConfigError::invalid(
                    SECTION,
                    "pass_env",
                    format!("{name:?}: GUARDIAN_* variables are guardian's to set"),
                ));
            }
        }
        Ok(AgentSettings {
            command,
            workdir: self.workdir,
            timeout_secs,
            min_level,
            min_events,
            denied_paths,
            max_runs_per_hour,
            max_running,
            user: self.user,
            token_file,
            pass_env,
        })
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::config::testing::err;
    use crate::config::Config;

    const NEEDS: &str = "[daemon]\n[daemon.sentry]\nclient_secret_file = \"/s\"\n\
                         [daemon.gate]\npolicy_file = \"/p\"\nagent_token_file = \"/a\"\n";

    fn agent(body: &str) -> String {
        err(&format!(
            "{NEEDS}[daemon.agent]\nas_guardian = true\n{body}\n"
        ))
    }

    #[test]
    fn the_agent_section_has_defaults_and_takes_the_gates_agent_token() {
        let a = Config::parse(&format!(
            "{NEEDS}[daemon.agent]\ncommand = [\"/bin/fix\"]\ndenied_paths = [\"**/auth/**\"]\n\
             user = \"agent\"\n"
        ))
        .unwrap()
        .daemon
        .unwrap()
        .agent
        .unwrap();
        assert_eq!(
            (
                a.timeout_secs,
                a.min_level,
                a.min_events,
                a.max_runs_per_hour,
                a.max_running
            ),
            (1800, SentryLevel::Error, 1, 4, 1)
        );
        assert_eq!(a.token_file, PathBuf::from("/a"));
        assert_eq!(
            a.denied_paths.matching("src/Auth/login.py"),
            Some("**/auth/**")
        );
        assert_eq!(a.denied_paths.matching("src/cart.py"), None);
    }

    #[test]
    fn the_agent_section_refuses_what_it_cannot_use_naming_the_key() {
        expect![[r#"[daemon.agent] command must name the agent's command, program first, e.g. ["/usr/local/bin/fix-issue", "--repo", "/srv/agent/app"]"#]]
            .assert_eq(&agent("command = []"));
        expect!["[daemon.agent] command needs [daemon.sentry]: the agent is run on Sentry's issues, and without Sentry's webhooks there are none"]
            .assert_eq(&err("[daemon]\n[daemon.agent]\ncommand = [\"x\"]\n"));
        expect!["[daemon.agent] command needs [daemon.gate]: the agent's fix comes back as a proposal through the gate, and without it none is accepted"]
            .assert_eq(&err("[daemon]\n[daemon.sentry]\nclient_secret_file = \"/s\"\n[daemon.agent]\ncommand = [\"x\"]\n"));
        expect!["[daemon.agent] token_file is missing, and [daemon.gate] has no agent_token_file: the agent proposes with the gate's agent token; set [daemon.gate] agent_token_file"]
            .assert_eq(&err("[daemon]\n[daemon.sentry]\nclient_secret_file = \"/s\"\n[daemon.gate]\npolicy_file = \"/p\"\n[daemon.agent]\ncommand = [\"x\"]\n"));
        expect!["[daemon.agent] timeout_secs must be whole seconds from 5 to 86400, got 0"]
            .assert_eq(&agent("command = [\"x\"]\ntimeout_secs = 0"));
        expect![[r#"[daemon.agent] min_level must be one of "debug", "info", "warning", "error", "fatal", got "severe""#]]
            .assert_eq(&agent("command = [\"x\"]\nmin_level = \"severe\""));
        expect!["[daemon.agent] min_events must be a whole number from 1 to 1000000000, got 0"]
            .assert_eq(&agent("command = [\"x\"]\nmin_events = 0"));
        expect![[r#"[daemon.agent] denied_paths [1] is "/etc/**": globs match repository paths, with no leading `/` and no `..`"#]]
            .assert_eq(&agent("command = [\"x\"]\ndenied_paths = [\"a/**\", \"/etc/**\"]"));
        expect!["[daemon.agent] max_runs_per_hour must be a whole number from 1 to 60, got 0"]
            .assert_eq(&agent("command = [\"x\"]\nmax_runs_per_hour = 0"));
        expect!["[daemon.agent] max_running must be a whole number from 1 to 8, got 9"]
            .assert_eq(&agent("command = [\"x\"]\nmax_running = 9"));
        expect![[r#"[daemon.agent] user must be a user name or uid (letters, digits, _ . -, at most 32, not starting with -), got "--root""#]]
            .assert_eq(&err(&format!("{NEEDS}[daemon.agent]\ncommand = [\"x\"]\nuser = \"--root\"\n")));
        expect!["[daemon.agent] user is needed: an agent run as guardian's own user can read guardian's tokens (the approvers' too), its keys and its database, so it could approve its own fixes and rewrite the record; name an account of the agent's own (it is run through systemd-run), or set as_guardian = true on a host where that does not matter (a test host)"]
            .assert_eq(&err(&format!("{NEEDS}[daemon.agent]\ncommand = [\"x\"]\n")));
        expect!["[daemon.agent] as_guardian cannot go with user: the agent runs either as user or as guardian"]
            .assert_eq(&agent("command = [\"x\"]\nuser = \"agent\""));
        expect![[r#"[daemon.agent] workdir must be an absolute path, got "agent""#]]
            .assert_eq(&agent("command = [\"x\"]\nworkdir = \"agent\""));
        expect![[r#"[daemon.agent] pass_env "GUARDIAN_TOKEN": GUARDIAN_* variables are guardian's to set"#]]
            .assert_eq(&agent("command = [\"x\"]\npass_env = [\"GUARDIAN_TOKEN\"]"));
        expect![[r#"[daemon.agent] pass_env "A-B" is not an environment variable's name"#]]
            .assert_eq(&agent("command = [\"x\"]\npass_env = [\"A-B\"]"));
    }
}
