//! The dependencies a manifest or lock file declares, read from the whole file, so that the
//! gate compares the set before and after a change however its lines were split, joined or
//! reordered. A dependency is its name and where it comes from (a registry, a git URL, a path):
//! moving `serde` from crates.io to someone's git repository is a new dependency, raising its
//! version is not.
//!
//! Parsed with the formats' own grammar (TOML, JSON) where the crate has one, and by lines for
//! the line-based formats (`requirements.txt`, `go.mod`, `go.sum`). Formats without a parser
//! here (`yarn.lock`, `Gemfile`, `pom.xml`, Gradle, ...) fall back to the first word of every
//! line that is not a comment: coarser, but still over the whole file.

use std::collections::BTreeSet;

use serde_json::Value as Json;
use toml::Value as Toml;

/// Manifest and lock files, by name.
const MANIFESTS: [&str; 24] = [
    "Cargo.toml",
    "Cargo.lock",
    "package.json",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "go.mod",
    "go.sum",
    "pyproject.toml",
    "poetry.lock",
    "Pipfile",
    "Pipfile.lock",
    "setup.py",
    "setup.cfg",
    "Gemfile",
    "Gemfile.lock",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
    "composer.json",
    "composer.lock",
    "mix.exs",
    "Package.swift",
    "uv.lock",
];

pub fn is_manifest(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    MANIFESTS.contains(&name)
        || (name.starts_with("requirements") && name.ends_with(".txt"))
        || name.ends_with(".csproj")
}

/// The dependencies `text` declares, as `section: name (source)` strings; an error names what
/// could not be read.
pub fn dependencies(path: &str, text: &str) -> Result<BTreeSet<String>, String> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let toml = || toml::from_str::<Toml>(text).map_err(|e| format!("not TOML: {e}"));
    let json = || serde_json::from_str::<Json>(text).map_err(|e| format!("not JSON: {e}"));
    let mut out = BTreeSet::new();
    match name {
        "Cargo.toml" => cargo_toml(&toml()?, &mut out),
        "Cargo.lock" | "poetry.lock" | "uv.lock" => lock_packages(&toml()?, &mut out),
        "pyproject.toml" => pyproject(&toml()?, &mut out),
        "Pipfile" => {
            let doc = toml()?;
            for section in ["packages", "dev-packages"] {
                toml_table(&doc, &[section], section, &mut out);
            }
            for s in array(doc.get("source")) {
                out.insert(format!("source: {}", str_of(s.get("url"))));
            }
        }
        "package.json" | "composer.json" => package_json(&json()?, &mut out),
        "package-lock.json" => {
            let doc = json()?;
            for (key, p) in object(doc.get("packages")) {
                if !key.is_empty() {
                    out.insert(format!("package: {key} ({})", source_of(p.get("resolved"))));
                }
            }
            for (key, p) in object(doc.get("dependencies")) {
                out.insert(format!("package: {key} ({})", source_of(p.get("resolved"))));
            }
        }
        "Pipfile.lock" => {
            let doc = json()?;
            for section in ["default", "develop"] {
                for (key, _) in object(doc.get(section)) {
                    out.insert(format!("{section}: {}", key.to_lowercase()));
                }
            }
        }
        "composer.lock" => {
            let doc = json()?;
            for section in ["packages", "packages-dev"] {
                for p in json_array(doc.get(section)) {
                    let name = p.get("name").and_then(Json::as_str).unwrap_or_default();
                    let url = p
                        .get("source")
                        .and_then(|s| s.get("url"))
                        .and_then(Json::as_str)
                        .unwrap_or("packagist");
                    out.insert(format!("{section}: {name} ({url})"));
                }
            }
        }
        "go.mod" => go_mod(text, &mut out),
        "go.sum" => {
            for line in text.lines() {
                if let Some(module) = line.split_whitespace().next() {
                    out.insert(format!("module: {module}"));
                }
            }
        }
        _ if name.starts_with("requirements") && name.ends_with(".txt") => {
            requirements(text, &mut out)
        }
        _ => {
            for line in text.lines() {
                let t = line.trim_start();
                if t.starts_with('#') || t.starts_with("//") || t.starts_with("<!--") {
                    continue;
                }
                if let Some(key) = entry_key(line) {
                    out.insert(format!("entry: {key}"));
                }
            }
        }
    }
    Ok(out)
}

/// Words that come before a dependency's name and are not it.
const DEPENDENCY_KEYWORDS: [&str; 12] = [
    "gem",
    "require",
    "implementation",
    "api",
    "compile",
    "compileonly",
    "runtimeonly",
    "testimplementation",
    "dependency",
    "pip",
    "package",
    "packagereference",
];

/// What a line of a format read by lines is about: its first word that is not a keyword
/// (`rails` in `gem 'rails', '~> 7'`, `lodash` in `lodash@^4:`).
fn entry_key(line: &str) -> Option<String> {
    line.split(|c: char| c.is_whitespace() || "=:,<>~!^@()'\"{}[];".contains(c))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .find(|w| !DEPENDENCY_KEYWORDS.contains(&w.as_str()))
}

fn array(v: Option<&Toml>) -> impl Iterator<Item = &Toml> {
    v.and_then(Toml::as_array).into_iter().flatten()
}

fn json_array(v: Option<&Json>) -> impl Iterator<Item = &Json> {
    v.and_then(Json::as_array).into_iter().flatten()
}

fn object(v: Option<&Json>) -> impl Iterator<Item = (&String, &Json)> {
    v.and_then(Json::as_object).into_iter().flatten()
}

fn str_of(v: Option<&Toml>) -> &str {
    v.and_then(Toml::as_str).unwrap_or_default()
}

/// Where a resolved URL points, without the version part: `https://registry.npmjs.org`.
fn source_of(v: Option<&Json>) -> String {
    let url = v.and_then(Json::as_str).unwrap_or("registry");
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split('/').next().unwrap_or_default();
            format!("{scheme}://{host}")
        }
        None => url.split(['#', '?']).next().unwrap_or_default().to_owned(),
    }
}

/// A Cargo- or Poetry-style dependency table at `path`: name -> version or a table saying
/// where it comes from.
fn toml_table(doc: &Toml, path: &[&str], section: &str, out: &mut BTreeSet<String>) {
    let mut t = Some(doc);
    for p in path {
        t = t.and_then(|v| v.get(p));
    }
    let Some(table) = t.and_then(Toml::as_table) else {
        return;
    };
    for (name, spec) in table {
        let source = match spec {
            Toml::Table(s) => {
                let real = s.get("package").and_then(Toml::as_str).unwrap_or(name);
                let from = ["git", "path", "url", "registry", "registry-index", "source"]
                    .iter()
                    .find_map(|k| s.get(*k).and_then(Toml::as_str).map(|v| format!("{k} {v}")))
                    .unwrap_or_else(|| "registry".to_owned());
                let workspace = s.get("workspace").and_then(Toml::as_bool) == Some(true);
                if workspace {
                    format!("{real}, workspace")
                } else {
                    format!("{real}, {from}")
                }
            }
            _ => format!("{name}, registry"),
        };
        out.insert(format!("{section}: {name} ({source})"));
    }
}

fn cargo_toml(doc: &Toml, out: &mut BTreeSet<String>) {
    const KINDS: [&str; 3] = ["dependencies", "dev-dependencies", "build-dependencies"];
    for kind in KINDS {
        toml_table(doc, &[kind], kind, out);
        toml_table(doc, &["workspace", kind], &format!("workspace.{kind}"), out);
    }
    for key in ["target", "patch"] {
        if let Some(t) = doc.get(key).and_then(Toml::as_table) {
            for (name, inner) in t {
                for kind in KINDS {
                    toml_table(inner, &[kind], &format!("{key}.{name}.{kind}"), out);
                }
                if key == "patch" {
                    toml_table(inner, &[], &format!("patch.{name}"), out);
                }
            }
        }
    }
    toml_table(doc, &["replace"], "replace", out);
}

/// `[[package]]` of Cargo.lock, poetry.lock, uv.lock: name and source, not version.
fn lock_packages(doc: &Toml, out: &mut BTreeSet<String>) {
    for p in array(doc.get("package")) {
        let name = str_of(p.get("name"));
        let source = match p.get("source") {
            Some(Toml::String(s)) => s.split(['#', '?']).next().unwrap_or_default().to_owned(),
            Some(Toml::Table(t)) => t
                .iter()
                .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or_default()))
                .filter(|s| !s.starts_with("reference") && !s.starts_with("resolved_reference"))
                .collect::<Vec<_>>()
                .join(", "),
            _ => "registry".to_owned(),
        };
        out.insert(format!("package: {name} ({source})"));
    }
}

fn pyproject(doc: &Toml, out: &mut BTreeSet<String>) {
    let pep508 = |section: &str, v: Option<&Toml>, out: &mut BTreeSet<String>| {
        for d in array(v).filter_map(Toml::as_str) {
            out.insert(format!("{section}: {}", requirement(d)));
        }
    };
    let project = doc.get("project");
    pep508("project", project.and_then(|p| p.get("dependencies")), out);
    if let Some(t) = project
        .and_then(|p| p.get("optional-dependencies"))
        .and_then(Toml::as_table)
    {
        for (extra, list) in t {
            pep508(&format!("extra {extra}"), Some(list), out);
        }
    }
    if let Some(t) = doc.get("dependency-groups").and_then(Toml::as_table) {
        for (group, list) in t {
            pep508(&format!("group {group}"), Some(list), out);
        }
    }
    pep508(
        "build-system",
        doc.get("build-system").and_then(|b| b.get("requires")),
        out,
    );
    for section in ["dependencies", "dev-dependencies"] {
        toml_table(doc, &["tool", "poetry", section], section, out);
    }
    if let Some(groups) = doc
        .get("tool")
        .and_then(|t| t.get("poetry"))
        .and_then(|p| p.get("group"))
        .and_then(Toml::as_table)
    {
        for (g, inner) in groups {
            toml_table(inner, &["dependencies"], &format!("group {g}"), out);
        }
    }
    toml_table(doc, &["tool", "uv", "sources"], "uv source", out);
}

fn package_json(doc: &Json, out: &mut BTreeSet<String>) {
    for section in [
        "dependencies",
        "devDependencies",
        "peerDependencies",
        "optionalDependencies",
        "overrides",
        "resolutions",
        "require",
        "require-dev",
    ] {
        for (name, spec) in object(doc.get(section)) {
            let spec = spec.as_str().unwrap_or("(nested)");
            let registry = spec
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || " .*^~<>=|-+xX".contains(c));
            let source = if registry { "registry" } else { spec };
            out.insert(format!("{section}: {name} ({source})"));
        }
    }
    for section in ["bundledDependencies", "bundleDependencies"] {
        for name in json_array(doc.get(section)).filter_map(Json::as_str) {
            out.insert(format!("{section}: {name}"));
        }
    }
    for r in json_array(doc.get("repositories")) {
        let url = r.get("url").and_then(Json::as_str).unwrap_or_default();
        out.insert(format!("repository: {url}"));
    }
}

/// A PEP 508 requirement's name (normalized) and direct URL, without its version.
fn requirement(text: &str) -> String {
    let text = text.split(';').next().unwrap_or_default().trim();
    let (name_part, url) = match text.split_once(" @ ").or_else(|| text.split_once('@')) {
        Some((n, u)) => (n, Some(u.trim())),
        None => (text, None),
    };
    let name: String = name_part
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect::<String>()
        .to_lowercase()
        .replace(['_', '.'], "-");
    match url {
        Some(u) => format!("{name} ({u})"),
        None => format!("{name} (index)"),
    }
}

fn requirements(text: &str, out: &mut BTreeSet<String>) {
    // A backslash at the end of a line continues it.
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    for line in joined.lines() {
        let line = match line.find(" #") {
            Some(i) => &line[..i],
            None => line,
        }
        .trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('-') {
            // Options that fetch from elsewhere or pull in more: -r, -c, -e, --index-url, ...
            out.insert(format!(
                "option: {}",
                line.split_whitespace().collect::<Vec<_>>().join(" ")
            ));
        } else if line.contains("://") && !line.contains(" @ ") {
            out.insert(format!("url: {line}"));
        } else {
            out.insert(format!("requirement: {}", requirement(line)));
        }
    }
}

fn go_mod(text: &str, out: &mut BTreeSet<String>) {
    let mut block: Option<String> = None;
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if line == ")" {
            block = None;
            continue;
        }
        let (verb, rest) = match &block {
            Some(v) => (v.clone(), line),
            None => match line.split_once(char::is_whitespace) {
                Some((v, r)) => (v.to_owned(), r.trim()),
                None => continue,
            },
        };
        if rest == "(" {
            block = Some(verb);
            continue;
        }
        match verb.as_str() {
            "require" | "tool" => {
                let module = rest.split_whitespace().next().unwrap_or_default();
                out.insert(format!("{verb}: {module}"));
            }
            "replace" => {
                let (from, to) = rest.split_once("=>").unwrap_or((rest, ""));
                let from = from.split_whitespace().next().unwrap_or_default();
                let to = to.split_whitespace().next().unwrap_or_default();
                out.insert(format!("replace: {from} => {to}"));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn added(path: &str, before: &str, after: &str) -> Vec<String> {
        let b = dependencies(path, before).unwrap();
        let a = dependencies(path, after).unwrap();
        a.difference(&b).cloned().collect()
    }

    #[test]
    fn cargo_new_crates_and_new_sources_count_and_versions_do_not() {
        let before = "[package]\nname = \"x\"\n[dependencies]\nserde = \"1\"\n";
        assert_eq!(
            added(
                "Cargo.toml",
                before,
                "[package]\nname = \"x\"\n[dependencies]\nserde = \"1.0.200\"\n"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            added(
                "Cargo.toml",
                before,
                "[package]\nname = \"x\"\n[dependencies]\nserde = \"1\"\n[target.'cfg(unix)'.dependencies]\nlibc = \"0.2\"\n"
            ),
            ["target.cfg(unix).dependencies: libc (libc, registry)"]
        );
        assert_eq!(
            added(
                "Cargo.toml",
                before,
                "[dependencies]\nserde = { git = \"https://evil.example/serde\" }\n"
            ),
            ["dependencies: serde (serde, git https://evil.example/serde)"]
        );
        // However the lines are split: one inline table over several lines is still one.
        assert_eq!(
            added(
                "Cargo.toml",
                before,
                "[dependencies]\nserde = \"1\"\n\n[dependencies.left-pad]\nversion = \"1\"\n"
            ),
            ["dependencies: left-pad (left-pad, registry)"]
        );
    }

    #[test]
    fn package_json_requirements_and_go_mod() {
        let before = "{\"dependencies\": {\"lodash\": \"^4.17.20\"}}";
        assert!(added(
            "package.json",
            before,
            "{\"dependencies\": {\"lodash\": \"^4.17.21\"}}"
        )
        .is_empty());
        assert_eq!(
            added(
                "lib/package.json",
                before,
                "{\"dependencies\": {\"lodash\": \"^4.17.20\", \"left-pad\": \"^1.3.0\"}}"
            ),
            ["dependencies: left-pad (registry)"]
        );
        assert_eq!(
            added(
                "package.json",
                before,
                "{\"dependencies\": {\"lodash\": \"github:evil/lodash\"}}"
            ),
            ["dependencies: lodash (github:evil/lodash)"]
        );
        assert_eq!(
            added(
                "requirements-dev.txt",
                "requests==2.31.0\n",
                "Requests==2.32.0\nflask>=3\n"
            ),
            ["requirement: flask (index)"]
        );
        assert_eq!(
            added(
                "requirements.txt",
                "requests==2.31.0\n",
                "requests==2.31.0\n--extra-index-url https://evil.example/simple\n"
            ),
            ["option: --extra-index-url https://evil.example/simple"]
        );
        assert_eq!(
            added(
                "go.mod",
                "module x\n\nrequire (\n\tgithub.com/a/b v1.0.0\n)\n",
                "module x\n\nrequire (\n\tgithub.com/a/b v1.2.0\n\tgithub.com/c/d v0.1.0 // indirect\n)\nreplace github.com/a/b => ../b\n"
            ),
            ["replace: github.com/a/b => ../b", "require: github.com/c/d"]
        );
    }

    #[test]
    fn unreadable_manifests_say_why_and_unknown_formats_fall_back_to_lines() {
        assert!(dependencies("Cargo.toml", "[dependencies\n")
            .unwrap_err()
            .contains("not TOML"));
        assert!(dependencies("package.json", "{")
            .unwrap_err()
            .contains("not JSON"));
        assert_eq!(
            added(
                "Gemfile",
                "gem 'rails', '~> 7'\n",
                "gem 'rails', '~> 7.1'\n# gem 'x'\ngem 'pry'\n"
            ),
            ["entry: pry"]
        );
    }
}
