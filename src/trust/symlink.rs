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
    /// Through a link whose target is longer than [`MAX_TARGET_BYTES`].
    TooLong { via: Vec<String> },
    /// The caller's budget of components ran out before the end was found.
    Unjudged { via: Vec<String> },
}

impl Resolved {
    /// The links passed through, for messages.
    pub fn via(&self) -> String {
        match self {
            Resolved::Inside { via, .. }
            | Resolved::Outside { via }
            | Resolved::IntoGit { via }
            | Resolved::TooLong { via }
            | Resolved::Unjudged { via } => via.join(", "),
            Resolved::Loop => String::new(),
        }
    }
}

/// The longest symlink target the kernel creates (`PATH_MAX` less its terminating NUL): a
/// longer one cannot be a link on a real file system, so it is judged no further.
pub const MAX_TARGET_BYTES: usize = 4095;

/// Resolves `path` (relative to the top of the tree) through `links` (path -> target). The last
/// component is followed too when `follow_last`.
///
/// Linear in the components it walks: `.` and empty components are dropped as they are read,
/// and the path reached so far is kept as one string, so a target of thousands of `/.` costs
/// what it says and no more. Each call walks at most `MAX_HOPS` targets of at most
/// [`MAX_TARGET_BYTES`] (longer ones end as [`Resolved::TooLong`]).
///
/// `budget` is how many more components the caller lets it walk (shared by every path one
/// judgement resolves, so that thousands of small links through one long loop stay cheap);
/// spent, it ends as [`Resolved::Unjudged`].
pub fn resolve(
    path: &str,
    links: &BTreeMap<String, String>,
    follow_last: bool,
    budget: &mut usize,
) -> Resolved {
    let mut todo: Vec<&str> = Vec::new();
    push_components(&mut todo, path);
    // The path reached so far, and where each of its components starts in it.
    let mut here = String::new();
    let mut starts: Vec<usize> = Vec::new();
    let mut via: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        if *budget == 0 {
            return Resolved::Unjudged { via };
        }
        *budget -= 1;
        if part == ".." {
            match starts.pop() {
                None => return Resolved::Outside { via },
                Some(at) => here.truncate(at.saturating_sub(1)),
            }
            continue;
        }
        let at = if here.is_empty() { 0 } else { here.len() + 1 };
        if at > 0 {
            here.push('/');
        }
        here.push_str(part);
        let last = todo.is_empty();
        match links.get(&here) {
            Some(target) if !last || follow_last => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Resolved::Loop;
                }
                via.push(format!("{here} -> {}", shown(target)));
                if target.len() > MAX_TARGET_BYTES {
                    return Resolved::TooLong { via };
                }
                if target.starts_with('/') || target.is_empty() {
                    return Resolved::Outside { via };
                }
                here.truncate(at.saturating_sub(1));
                push_components(&mut todo, target);
            }
            _ => {
                if part.eq_ignore_ascii_case(".git") {
                    return Resolved::IntoGit { via };
                }
                starts.push(at);
            }
        }
    }
    Resolved::Inside { path: here, via }
}

/// A link's target as messages show it: whole when short, else its start and its length.
pub fn shown(target: &str) -> String {
    const SHOWN_CHARS: usize = 60;
    match target.char_indices().nth(SHOWN_CHARS) {
        None => target.to_owned(),
        Some((cut, _)) => format!("{}... ({} bytes)", &target[..cut], target.len()),
    }
}

/// Puts `path`'s components on the stack, first on top, leaving out those that go nowhere.
fn push_components<'a>(todo: &mut Vec<&'a str>, path: &'a str) {
    todo.extend(path.rsplit('/').filter(|p| !p.is_empty() && *p != "."));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect()
    }

    fn resolve_all(path: &str, links: &BTreeMap<String, String>, follow_last: bool) -> Resolved {
        let mut budget = usize::MAX;
        resolve(path, links, follow_last, &mut budget)
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
            Resolved::TooLong { .. } => "TOO LONG".into(),
            Resolved::Unjudged { .. } => "UNJUDGED".into(),
        }
    }

    #[test]
    fn links_are_followed_in_order_and_named() {
        let l = links(&[("a", "b/c"), ("b", "d"), ("d/c", "../e")]);
        assert_eq!(
            resolve_all("a/x", &l, true),
            Resolved::Inside {
                path: "e/x".into(),
                via: vec!["a -> b/c".into(), "b -> d".into(), "d/c -> ../e".into()]
            }
        );
        assert_eq!(end(resolve_all("z/x", &l, true)), "z/x");
    }

    #[test]
    fn dot_dot_applies_after_the_link_before_it_is_resolved() {
        // `up` is the top of `src`'s parent: `src/l/up/..` is above the tree, not `src/l`.
        let l = links(&[("src/l/up", "../..")]);
        assert_eq!(
            end(resolve_all("src/l/up/../etc/passwd", &l, true)),
            "OUTSIDE"
        );
        // Read lexically from src it would be src/l/etc/passwd; `up` is src, so it is
        // etc/passwd.
        let l = links(&[("src/l/up", ".."), ("src/x", "l/up/../etc/passwd")]);
        assert_eq!(end(resolve_all("src/x", &l, true)), "etc/passwd");
        let l = links(&[("src/l/up", ".."), ("src/x", "l/up/../../../etc/passwd")]);
        assert_eq!(end(resolve_all("src/x", &l, true)), "OUTSIDE");
        let l = links(&[("src/up", ".."), ("src/m", "up/migrations")]);
        assert_eq!(end(resolve_all("src/m", &l, true)), "migrations");
    }

    #[test]
    fn absolute_targets_loops_and_git_are_ends_of_their_own() {
        assert_eq!(
            end(resolve_all(
                "src/p",
                &links(&[("src/p", "/etc/passwd")]),
                true
            )),
            "OUTSIDE"
        );
        assert_eq!(
            end(resolve_all("a", &links(&[("a", "b"), ("b", "a")]), true)),
            "LOOP"
        );
        assert_eq!(
            end(resolve_all(
                "src/c",
                &links(&[("src/c", "../.git/config")]),
                true
            )),
            "GIT"
        );
        assert_eq!(
            end(resolve_all("src/c", &links(&[("src/c", "../.GIT")]), true)),
            "GIT"
        );
    }

    #[test]
    fn the_last_component_is_followed_only_when_asked() {
        let l = links(&[("src/old", "../migrations")]);
        assert_eq!(end(resolve_all("src/old", &l, false)), "src/old");
        assert_eq!(end(resolve_all("src/old", &l, true)), "migrations");
    }

    #[test]
    fn a_target_longer_than_the_kernel_allows_is_not_followed() {
        let long = format!("a{}", "/.".repeat(MAX_TARGET_BYTES / 2 + 1));
        let l = links(&[("src/a", long.as_str()), ("src/b", "a")]);
        let r = resolve_all("src/b", &l, true);
        assert_eq!(
            r.via(),
            format!(
                "src/b -> a, src/a -> a{}... ({} bytes)",
                "/.".repeat(29) + "/",
                long.len()
            )
        );
        assert_eq!(end(r), "TOO LONG");
        // At the limit it is a target like any other: here, a loop.
        let fits = format!("a{}", "/.".repeat((MAX_TARGET_BYTES - 1) / 2));
        let l = links(&[("src/a", fits.as_str())]);
        assert_eq!(end(resolve_all("src/a", &l, true)), "LOOP");
    }

    #[test]
    fn the_budget_is_shared_and_ends_a_walk_when_spent() {
        // A loop of 2,000 components a hop, 40 hops: 80,000 components for one path.
        let fits = format!("a{}", "/.".repeat(2000));
        let l = links(&[("a", fits.as_str())]);
        let mut budget = 1_000_000;
        for _ in 0..12 {
            assert_eq!(end(resolve("a", &l, true, &mut budget)), "LOOP");
        }
        // `.` costs nothing: each path walked 41 components, not 80,000.
        assert_eq!(budget, 1_000_000 - 12 * 41);
        let deep = format!("a{}", "/b/..".repeat(2000));
        let l = links(&[("a", deep.as_str())]);
        let mut budget = 100_000;
        while !matches!(
            resolve("a", &l, true, &mut budget),
            Resolved::Unjudged { .. }
        ) {}
        assert_eq!(budget, 0);
    }
}
