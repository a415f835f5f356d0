//! The never-list's host paths: guardian's own files inside the deployed repository.

use crate::trust;

/// guardian's own files that live inside the deployed repository, as the never-list's host
/// paths, and a warning for each file the redeploy hook runs from there (its own changes are
/// refused, but not what it runs in turn). `config_file` is the configuration guardian was
/// started with, when known.
pub fn host_never_list(
    settings: &crate::config::DaemonSettings,
    config_file: Option<&std::path::Path>,
) -> (trust::NeverList, Vec<String>) {
    let mut never = trust::NeverList::default();
    let mut warnings = Vec::new();
    let Some(rollback) = &settings.rollback else {
        return (never, warnings);
    };
    let Ok(repo) = rollback.repo.canonicalize() else {
        return (never, warnings);
    };
    let mut mine: Vec<(std::path::PathBuf, String)> = vec![
        (
            settings.state_dir.clone(),
            "guardian's state directory".into(),
        ),
        (
            settings.token_file.clone(),
            "guardian's operator token".into(),
        ),
    ];
    if let Some(c) = config_file {
        mine.push((c.to_path_buf(), "guardian's configuration file".into()));
    }
    if let Some(g) = &settings.gate {
        mine.push((g.policy_file.clone(), "guardian's policy file".into()));
        mine.extend(
            g.agent_token_file
                .iter()
                .map(|t| (t.clone(), "the agent's token".into())),
        );
        mine.extend(
            g.approvers
                .iter()
                .map(|(name, t)| (t.clone(), format!("approver {name}'s token"))),
        );
    }
    if let Some(auth) = settings.mail.as_ref().and_then(|m| m.auth.as_ref()) {
        mine.push((
            auth.password_file.clone(),
            "guardian's mail password".into(),
        ));
    }
    for log in &settings.logs {
        mine.push((
            log.path.clone(),
            format!("the access log {} guardian follows", log.name),
        ));
    }
    // The hook's program and arguments that are files (relative ones run from the clone).
    let mut hook_files = Vec::new();
    for (i, arg) in rollback.hook.iter().enumerate() {
        let path = std::path::Path::new(arg);
        let file = if path.is_absolute() {
            path.to_path_buf()
        } else if i > 0 || arg.contains('/') {
            repo.join(path)
        } else {
            continue;
        };
        if file.is_file() {
            hook_files.push(file.clone());
            mine.push((file, "the redeploy hook".into()));
        }
    }
    for (path, what) in mine {
        // Both the path as configured and where it really is: a symlinked directory on the
        // way is protected by the first, the file itself by the second.
        let lexical = if path.is_absolute() {
            path.clone()
        } else {
            repo.join(&path)
        };
        let mut found = Vec::new();
        for candidate in [Some(lexical), path.canonicalize().ok()]
            .into_iter()
            .flatten()
        {
            if let Some(rel) = crate::git::inside(&repo, &candidate) {
                if !found.contains(&rel) {
                    found.push(rel);
                }
            }
        }
        if !found.is_empty() && hook_files.contains(&path) {
            warnings.push(format!(
                "the redeploy hook runs {}, which is inside the deployed repository {}: \
                 guardian refuses every proposal that changes it, but not the files it runs in \
                 turn; keep the hook outside the repository",
                path.display(),
                repo.display()
            ));
        }
        never
            .host
            .extend(found.into_iter().map(|rel| (rel, what.clone())));
    }
    (never, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn guardians_own_files_inside_the_repository_are_never_open_and_the_hook_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("app");
        for sub in ["ops", "deploy", "src"] {
            std::fs::create_dir_all(repo.join(sub)).unwrap();
        }
        let files = [
            ("ops/policy.toml", "[paths]\nallow = [\"src/**\"]\n"),
            ("deploy/redeploy.sh", "#!/bin/sh\n"),
            ("ops/agent.token", "agent-token-0123456789abcdef"),
        ];
        for (f, text) in files {
            std::fs::write(repo.join(f), text).unwrap();
        }
        let outside = dir.path().join("token");
        std::fs::write(&outside, "admin-token-0123456789abcdef").unwrap();
        let config = Config::parse(&format!(
            "[daemon]\nstate_dir = {state:?}\ntoken_file = {outside:?}\n\
             [daemon.rollback]\nrepo = {repo:?}\nhook = [\"sh\", \"deploy/redeploy.sh\"]\n\
             [daemon.gate]\npolicy_file = {policy:?}\nagent_token_file = {agent:?}\n",
            state = repo.join(".guardian"),
            policy = repo.join("ops/policy.toml"),
            agent = repo.join("ops/agent.token"),
        ))
        .unwrap();
        std::fs::create_dir_all(repo.join(".guardian")).unwrap();
        let settings = config.daemon.unwrap();
        let config_file = repo.join("ops/guardian.toml");
        std::fs::write(&config_file, "").unwrap();
        let (never, warnings) = host_never_list(&settings, Some(&config_file));
        for (path, what) in [
            ("ops/policy.toml", "guardian's policy file"),
            ("deploy/redeploy.sh", "the redeploy hook"),
            ("ops/agent.token", "the agent's token"),
            ("ops/guardian.toml", "guardian's configuration file"),
            (".guardian/guardian.db", "guardian's state directory"),
        ] {
            let why = never
                .check(path)
                .unwrap_or_else(|| panic!("{path} is open"));
            assert!(why.contains(what), "{path}: {why}");
        }
        assert_eq!(never.check("src/main.rs"), None);
        assert!(
            never.host.iter().all(|(p, _)| !p.starts_with('/')),
            "repository paths: {:?}",
            never.host
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("redeploy.sh, which is inside the deployed repository"),
            "{}",
            warnings[0]
        );
    }
}
