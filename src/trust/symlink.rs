//! Where a path in a tree really leads, followed the way the kernel follows it: one component
//! at a time, a symlink's target put in place of the component and resolved in its turn, `..`
//! applied to the directory reached so far (after the component before it was resolved, never
//! lexically on the text), at most [`MAX_HOPS`] links. Written by hand because it resolves
//! against a git tree (a map of links), not against a file system.

use std::collections::BTreeMap;

/// How many symlinks one path may pass through before it is called a loop (Linux's limit).
pub const MAX_HOPS: usize = 40;

/// The end of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// The real path in the tree (empty: the top level), and the links passed through, as
    /// `a -> b`.
    Inside { path: String, via: Vec<String> },
    /// Out of the tree: an absolute target, or `..` above the top level.
    Outside { via: Vec<String> },
    /// Into a `.git` directory (of this repository or one nested in it).
    IntoGit { via: Vec<String> },
    /// More than [`MAX_HOPS`] links.
    Loop,
}

impl Resolved {
    /// The links passed through, for messages.
    pub fn via(&self) -> String {
        match self {
            Resolved::Inside { via, .. }
            | Resolved::Outside { via }
            | Resolved::IntoGit { via } => via.join(", "),
            Resolved::Loop => String::new(),
        }
    }
}

/// Resolves `path` (relative to the top of the tree) through `links` (path -> target). The last
/// component is followed too when `follow_last`.
pub fn resolve(path: &str, links: &BTreeMap<String, String>, follow_last: bool) -> Resolved {
    let mut todo: Vec<String> = path.split('/').rev().map(str::to_owned).collect();
    let mut done: Vec<String> = Vec::new();
    let mut via: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                if done.pop().is_none() {
                    return Resolved::Outside { via };
                }
                continue;
            }
            _ => {}
        }
        let mut here = done.join("/");
        if !here.is_empty() {
            here.push('/');
        }
        here.push_str(&part);
        let last = todo.iter().all(|p| p.is_empty() || p == ".");
        match links.get(&here) {
            Some(target) if !last || follow_last => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Resolved::Loop;
                }
                via.push(format!("{here} -> {target}"));
                if target.starts_with('/') || target.is_empty() {
                    return Resolved::Outside { via };
                }
                todo.extend(target.split('/').rev().map(str::to_owned));
            }
            _ => {
                if part.eq_ignore_ascii_case(".git") {
                    return Resolved::IntoGit { via };
                }
                done.push(part);
            }
        }
    }
    Resolved::Inside {
        path: done.join("/"),
        via,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect()
    }

    fn inside(path: &str) -> String {
        path.to_owned()
    }

    fn end(r: Resolved) -> String {
        match r {
            Resolved::Inside { path, .. } => inside(&path),
            Resolved::Outside { .. } => "OUTSIDE".into(),
            Resolved::IntoGit { .. } => "GIT".into(),
            Resolved::Loop => "LOOP".into(),
        }
    }

    #[test]
    fn links_are_followed_in_order_and_named() {
        let l = links(&[("a", "b/c"), ("b", "d"), ("d/c", "../e")]);
        assert_eq!(
            resolve("a/x", &l, true),
            Resolved::Inside {
                path: "e/x".into(),
                via: vec!["a -> b/c".into(), "b -> d".into(), "d/c -> ../e".into()]
            }
        );
        assert_eq!(end(resolve("z/x", &l, true)), "z/x");
    }

    #[test]
    fn dot_dot_applies_after_the_link_before_it_is_resolved() {
        // `up` is the top of `src`'s parent: `src/l/up/..` is above the tree, not `src/l`.
        let l = links(&[("src/l/up", "../..")]);
        assert_eq!(end(resolve("src/l/up/../etc/passwd", &l, true)), "OUTSIDE");
        // Read lexically from src it would be src/l/etc/passwd; `up` is src, so it is
        // etc/passwd.
        let l = links(&[("src/l/up", ".."), ("src/x", "l/up/../etc/passwd")]);
        assert_eq!(end(resolve("src/x", &l, true)), "etc/passwd");
        let l = links(&[("src/l/up", ".."), ("src/x", "l/up/../../../etc/passwd")]);
        assert_eq!(end(resolve("src/x", &l, true)), "OUTSIDE");
        let l = links(&[("src/up", ".."), ("src/m", "up/migrations")]);
        assert_eq!(end(resolve("src/m", &l, true)), "migrations");
    }

    #[test]
    fn absolute_targets_loops_and_git_are_ends_of_their_own() {
        assert_eq!(
            end(resolve("src/p", &links(&[("src/p", "/etc/passwd")]), true)),
            "OUTSIDE"
        );
        assert_eq!(
            end(resolve("a", &links(&[("a", "b"), ("b", "a")]), true)),
            "LOOP"
        );
        assert_eq!(
            end(resolve(
                "src/c",
                &links(&[("src/c", "../.git/config")]),
                true
            )),
            "GIT"
        );
        assert_eq!(
            end(resolve("src/c", &links(&[("src/c", "../.GIT")]), true)),
            "GIT"
        );
    }

    #[test]
    fn the_last_component_is_followed_only_when_asked() {
        let l = links(&[("src/old", "../migrations")]);
        assert_eq!(end(resolve("src/old", &l, false)), "src/old");
        assert_eq!(end(resolve("src/old", &l, true)), "migrations");
    }
}
