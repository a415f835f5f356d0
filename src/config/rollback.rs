//! `[daemon.rollback]`: how guardian undoes a regressed change (the repository to revert in,
//! where to push, the redeploy hook and how long to confirm the recovery).

use std::path::PathBuf;

use super::{ConfigError, RawRollback};

/// How guardian undoes a regressed change.
#[derive(Clone, Debug, PartialEq)]
pub struct RollbackSettings {
    /// The git work tree the deploys come from; reverts are committed there.
    pub repo: PathBuf,
    /// Push the revert here (remote, branch) before redeploying, if set.
    pub push: Option<(String, String)>,
    /// The redeploy command, program first; run without a shell unless it is one.
    pub hook: Vec<String>,
    pub hook_timeout_secs: u32,
    /// How long to watch after the redeploy to confirm the service recovered.
    pub verify_secs: u32,
    /// Where the running hook is noted ([`crate::running`]): in the state directory.
    pub hook_note: Option<PathBuf>,
}

impl RawRollback {
    pub fn validate(self) -> Result<RollbackSettings, ConfigError> {
        const SECTION: &str = "daemon.rollback";
        let repo = self.repo.ok_or_else(|| {
            ConfigError::invalid(
                SECTION,
                "repo",
                "is missing: the git work tree to revert in",
            )
        })?;
        let hook = self.hook.unwrap_or_default();
        if hook.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(ConfigError::invalid(
                SECTION,
                "hook",
                "must name the redeploy command, program first, e.g. [\"/usr/local/bin/redeploy\", \"--fast\"]",
            ));
        }
        let push = match (self.push_remote, self.push_branch) {
            (None, None) => None,
            (Some(r), Some(b)) if !r.is_empty() && !b.is_empty() => Some((r, b)),
            _ => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "push_remote",
                    "and push_branch go together: set both to push the revert, or neither",
                ))
            }
        };
        let secs = |key: &'static str, v: Option<i64>, default: u32| match v {
            None => Ok(default),
            Some(n) if (1..=86_400).contains(&n) => Ok(n as u32),
            Some(n) => Err(ConfigError::invalid(
                SECTION,
                key,
                format!("must be whole seconds from 1 to 86400, got {n}"),
            )),
        };
        Ok(RollbackSettings {
            repo,
            push,
            hook,
            hook_timeout_secs: secs("hook_timeout_secs", self.hook_timeout_secs, 300)?,
            verify_secs: secs("verify_secs", self.verify_secs, 120)?,
            hook_note: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use crate::config::testing::err;
    use crate::config::Config;

    #[test]
    fn the_rollback_section_has_defaults_and_is_validated() {
        let r = Config::parse(
            "[daemon]\n[daemon.rollback]\nrepo = \"/srv/app\"\nhook = [\"/bin/redeploy\"]\n",
        )
        .unwrap()
        .daemon
        .unwrap()
        .rollback
        .unwrap();
        assert_eq!(
            (r.hook_timeout_secs, r.verify_secs, r.push),
            (300, 120, None)
        );
        let rollback = |body: &str| err(&format!("[daemon]\n[daemon.rollback]\n{body}\n"));
        expect!["[daemon.rollback] repo is missing: the git work tree to revert in"]
            .assert_eq(&rollback("hook = [\"x\"]"));
        expect![[r#"[daemon.rollback] hook must name the redeploy command, program first, e.g. ["/usr/local/bin/redeploy", "--fast"]"#]].assert_eq(&rollback("repo = \"/a\"\nhook = []"));
        expect!["[daemon.rollback] push_remote and push_branch go together: set both to push the revert, or neither"].assert_eq(&rollback(
            "repo = \"/a\"\nhook = [\"x\"]\npush_remote = \"origin\"",
        ));
    }
}
