//! Paths no policy can open to an AI change: the files that steer git itself wherever they are
//! in the tree, and the host's own files of guardian (its configuration, policy, tokens, state,
//! the redeploy hook) when they live inside the deployed repository. A change touching one is
//! denied whatever `[paths] allow` says.
//!
//! The git files, by name in any directory and in any case (a case-insensitive file system
//! opens `.GitAttributes` for `.gitattributes`):
//!
//! - `.gitattributes`: merge drivers (`merge=union` turns a revert that must conflict into a
//!   silent merge), diff and text conversion, filters, line endings;
//! - `.gitmodules`: submodules, fetched from URLs of the file's choosing;
//! - `.gitignore`: what `git clean -X` deletes and what packaging tools (`npm pack`, `git add
//!   -A` in a hook) leave out or take in; no fix pattern needs it;
//! - `.mailmap`: rewrites the authors `git log` shows, including of guardian's own commits;
//! - `.lfsconfig`: where git-lfs fetches content from.

use serde::Serialize;

/// Git's control files, by name, lower case.
pub const GIT_FILES: [&str; 5] = [
    ".gitattributes",
    ".gitmodules",
    ".gitignore",
    ".mailmap",
    ".lfsconfig",
];

/// The never-list: the fixed git files and the host's protected paths.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NeverList {
    /// Repository paths of guardian's own files, each with what it is ("guardian's policy
    /// file"). A directory protects everything under it; changing any directory or link
    /// above one (which changes what the path is) is refused too.
    pub host: Vec<(String, String)>,
}

impl NeverList {
    /// Why `path` may never be changed by a proposal, if it may not.
    pub fn check(&self, path: &str) -> Option<String> {
        let name = path.rsplit('/').next().unwrap_or(path);
        let folded = fold(name);
        if let Some(git) = GIT_FILES.iter().find(|g| **g == folded) {
            return Some(format!(
                "{path} is git's own {git}, which no policy lets an AI change touch"
            ));
        }
        for (protected, what) in &self.host {
            let hit = path == protected || is_under(protected, path) || is_under(path, protected);
            if hit {
                return Some(format!(
                    "{path} is or holds {what} ({protected}), which no policy lets an AI change touch"
                ));
            }
        }
        None
    }
}

/// Whether `path` lies under the directory `dir`.
fn is_under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// A name as a case-insensitive file system (or one that drops trailing dots and spaces, or
/// ignores zero-width characters, as NTFS and HFS+ do) would open it.
fn fold(name: &str) -> String {
    let kept: String = name
        .chars()
        .filter(|c| {
            !matches!(
                *c,
                '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{206A}'..='\u{206F}' | '\u{FEFF}'
            )
        })
        .collect();
    kept.trim_end_matches(['.', ' ']).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_files_are_refused_anywhere_and_in_any_spelling() {
        let never = NeverList::default();
        for path in [
            ".gitattributes",
            "src/.gitattributes",
            "src/deep/.GitModules",
            "lib/.gitignore",
            ".mailmap",
            "src/.lfsconfig",
            "src/.gitattributes.",
            "src/.git\u{200C}attributes",
        ] {
            let why = never.check(path).unwrap_or_else(|| panic!("{path} passed"));
            assert!(why.contains("no policy"), "{why}");
        }
        for path in [
            "src/gitattributes",
            "src/.gitattributes.rs",
            "docs/mailmap.md",
        ] {
            assert_eq!(never.check(path), None, "{path}");
        }
    }

    #[test]
    fn the_hosts_files_are_refused_with_what_holds_them() {
        let never = NeverList {
            host: vec![
                ("ops/policy.toml".into(), "guardian's policy file".into()),
                ("state".into(), "guardian's state directory".into()),
            ],
        };
        let why = never.check("ops/policy.toml").unwrap();
        assert!(why.contains("guardian's policy file"), "{why}");
        assert!(
            never.check("ops").is_some(),
            "a link or file replacing the directory"
        );
        assert!(
            never.check("state/guardian.db").is_some(),
            "inside a protected directory"
        );
        assert_eq!(never.check("ops/policy.toml.bak"), None);
        assert_eq!(never.check("opsx/policy.toml"), None);
    }
}
