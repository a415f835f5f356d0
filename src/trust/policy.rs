//! The sandbox policy: what an AI change may touch, how big it may be, what content needs a
//! person, when nothing deploys unattended, and how risk turns into a decision. It lives in its
//! own file, which the guardian reads and the agent cannot write (`config/policy.toml` is the
//! commented example).
//!
//! Read in two phases like the main configuration: TOML into a raw mirror, then validation into
//! [`Policy`], with errors that name the key. Globs are compiled here, once.
//!
//! Path matching: globs match repository paths (`src/a.rs`, no leading `/`); `*` does not cross
//! a `/`, `**` does. `deny` globs match regardless of case (`src/Auth/x` is still auth code),
//! `allow` globs match exactly; `deny` wins over `allow`, and a path no `allow` glob matches is
//! denied.

use std::fmt;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use super::pattern::Pattern;

/// The policy, validated.
#[derive(Clone, Debug)]
pub struct Policy {
    pub paths: PathRules,
    pub limits: Limits,
    pub content: ContentRules,
    /// Times when nothing deploys unattended: `auto` becomes `needs_approval`.
    pub windows: Vec<Window>,
    /// Services AI changes may target; empty means any.
    pub services: Vec<String>,
    pub risk: RiskSettings,
    pub trust: TrustSettings,
}

/// Compiled `[paths]` globs, each kept with its text so a deny can name the glob that fired.
#[derive(Clone, Debug)]
pub struct PathRules {
    allow_globs: Vec<String>,
    allow: GlobSet,
    deny_globs: Vec<String>,
    deny: GlobSet,
}

/// Why a path is not allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathVerdict {
    Allowed,
    /// A `deny` glob matched (its text).
    Denied(String),
    /// No `allow` glob matched.
    NotAllowed,
}

/// `[limits]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Distinct files a change may touch.
    pub max_files: usize,
    /// Added plus removed lines.
    pub max_lines: usize,
}

/// What a content rule does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    Deny,
    NeedsApproval,
    Allow,
}

/// `[content]`.
#[derive(Clone, Debug)]
pub struct ContentRules {
    /// A manifest or lock file gains a dependency (parsed from the whole file).
    pub new_dependencies: RuleAction,
    /// SQL DDL the file did not have before, or an ORM migration file.
    pub schema_changes: RuleAction,
    /// Where binary files may change (globs, exact case); everywhere else a binary change is
    /// denied.
    pub binary_globs: Vec<String>,
    binary: GlobSet,
}

impl ContentRules {
    /// Whether a binary file may change at `path`.
    pub fn binary_allowed(&self, path: &str) -> bool {
        self.binary.is_match(path)
    }
}

/// One `[[windows]]` entry: no unattended deploys on these days between these times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub name: String,
    /// Monday first.
    pub days: [bool; 7],
    /// Minutes after local midnight; `to` may be 1440 ("24:00"). A window with `from > to`
    /// runs past midnight and belongs to the day it starts on.
    pub from: u32,
    pub to: u32,
    /// Seconds east of UTC.
    pub utc_offset: i32,
}

/// `[risk]`.
#[derive(Clone, Debug)]
pub struct RiskSettings {
    /// A score below this may deploy alone (if nothing else needs a person).
    pub auto_below: u32,
    /// Critical areas: the highest weight among the globs a touched path matches is the
    /// change's path criticality.
    pub critical: Vec<(String, u32)>,
    critical_set: GlobSet,
}

/// `[trust]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustSettings {
    /// Approved changes that stayed healthy, none rolled back, before a pattern may go auto.
    pub promote_after: u32,
    /// Patterns that always need a person; `other` always does.
    pub human_only: Vec<Pattern>,
}

/// A policy file that is not accepted. Every message names the key.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not TOML, a value of the wrong type, or an unknown key (toml's message, with the line).
    #[error("{0}")]
    Syntax(String),
    #[error("[{section}] {key} {problem}")]
    Invalid {
        section: &'static str,
        key: String,
        problem: String,
    },
}

fn invalid(
    section: &'static str,
    key: impl Into<String>,
    problem: impl fmt::Display,
) -> PolicyError {
    PolicyError::Invalid {
        section,
        key: key.into(),
        problem: problem.to_string(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    paths: RawPaths,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    content: RawContent,
    #[serde(default)]
    windows: Vec<RawWindow>,
    #[serde(default)]
    services: RawServices,
    #[serde(default)]
    risk: RawRisk,
    #[serde(default)]
    trust: RawTrust,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPaths {
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_files: Option<i64>,
    max_lines: Option<i64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContent {
    new_dependencies: Option<String>,
    schema_changes: Option<String>,
    #[serde(default)]
    binary: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    name: String,
    #[serde(default)]
    days: Vec<String>,
    from: String,
    to: String,
    #[serde(default)]
    utc_offset: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServices {
    #[serde(default)]
    allow: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRisk {
    auto_below: Option<i64>,
    #[serde(default)]
    critical: Vec<RawCritical>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCritical {
    glob: String,
    weight: i64,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    promote_after: Option<i64>,
    #[serde(default)]
    human_only: Vec<String>,
}

/// Defaults for keys the file leaves out.
pub const DEFAULT_MAX_FILES: usize = 5;
pub const DEFAULT_MAX_LINES: usize = 80;
pub const DEFAULT_AUTO_BELOW: u32 = 30;
pub const DEFAULT_PROMOTE_AFTER: u32 = 10;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Policy {
    /// Parses and validates the text of a policy file.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy =
            toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string().trim().into()))?;
        raw.validate()
    }

    /// Whether a pattern with this ledger record has earned deploying alone: `promote_after`
    /// approved changes that stayed healthy since its last rollback. The ledger computes
    /// the `earned` count; this is the policy's side of the comparison.
    pub fn promoted(&self, pattern: Pattern, earned_since_last_rollback: u32) -> bool {
        !self.trust.human_only.contains(&pattern)
            && earned_since_last_rollback >= self.trust.promote_after
    }
}

impl RawPolicy {
    fn validate(self) -> Result<Policy, PolicyError> {
        if self.paths.allow.is_empty() {
            return Err(invalid(
                "paths",
                "allow",
                "is empty: name at least one glob AI changes may touch, e.g. \"src/**\"",
            ));
        }
        let (allow, allow_globs) = globs("paths", "allow", &self.paths.allow, false)?;
        let (deny, deny_globs) = globs("paths", "deny", &self.paths.deny, true)?;

        let count =
            |key: &'static str, v: Option<i64>, default: usize| -> Result<usize, PolicyError> {
                match v {
                    None => Ok(default),
                    Some(n) if (1..=1_000_000).contains(&n) => Ok(n as usize),
                    Some(n) => Err(invalid(
                        "limits",
                        key,
                        format!("is {n}; it must be 1 to 1000000"),
                    )),
                }
            };
        let limits = Limits {
            max_files: count("max_files", self.limits.max_files, DEFAULT_MAX_FILES)?,
            max_lines: count("max_lines", self.limits.max_lines, DEFAULT_MAX_LINES)?,
        };

        let action = |key: &'static str, v: Option<String>| -> Result<RuleAction, PolicyError> {
            match v.as_deref() {
                None | Some("deny") => Ok(RuleAction::Deny),
                Some("needs_approval") => Ok(RuleAction::NeedsApproval),
                Some("allow") => Ok(RuleAction::Allow),
                Some(other) => Err(invalid(
                    "content",
                    key,
                    format!("is {other:?}; it must be \"deny\", \"needs_approval\" or \"allow\""),
                )),
            }
        };
        let (binary, binary_globs) = globs("content", "binary", &self.content.binary, false)?;
        let content = ContentRules {
            new_dependencies: action("new_dependencies", self.content.new_dependencies)?,
            schema_changes: action("schema_changes", self.content.schema_changes)?,
            binary_globs,
            binary,
        };

        let mut windows = Vec::new();
        for (i, w) in self.windows.into_iter().enumerate() {
            windows.push(window(i, w)?);
        }

        for (i, s) in self.services.allow.iter().enumerate() {
            if s.trim().is_empty() || s.chars().any(char::is_control) {
                return Err(invalid(
                    "services",
                    format!("allow[{i}]"),
                    "must be a service name",
                ));
            }
        }

        let auto_below = match self.risk.auto_below {
            None => DEFAULT_AUTO_BELOW,
            Some(n) if (0..=100).contains(&n) => n as u32,
            Some(n) => {
                return Err(invalid(
                    "risk",
                    "auto_below",
                    format!("is {n}; it must be 0 to 100 (0: nothing deploys alone)"),
                ))
            }
        };
        let mut critical = Vec::new();
        let mut builder = GlobSetBuilder::new();
        for (i, c) in self.risk.critical.iter().enumerate() {
            let key = format!("critical[{i}]");
            if !(0..=100).contains(&c.weight) {
                return Err(invalid(
                    "risk",
                    format!("{key}.weight"),
                    format!("is {}; it must be 0 to 100", c.weight),
                ));
            }
            builder.add(glob("risk", &format!("{key}.glob"), &c.glob, false)?);
            critical.push((c.glob.clone(), c.weight as u32));
        }
        let critical_set = builder
            .build()
            .map_err(|e| invalid("risk", "critical", e))?;

        let promote_after = match self.trust.promote_after {
            None => DEFAULT_PROMOTE_AFTER,
            Some(n) if (1..=10_000).contains(&n) => n as u32,
            Some(n) => {
                return Err(invalid(
                    "trust",
                    "promote_after",
                    format!("is {n}; it must be 1 to 10000"),
                ))
            }
        };
        let mut human_only = vec![Pattern::Other];
        for (i, name) in self.trust.human_only.iter().enumerate() {
            let p = Pattern::parse(name).ok_or_else(|| {
                invalid(
                    "trust",
                    format!("human_only[{i}]"),
                    format!(
                        "is {name:?}; patterns are {}",
                        Pattern::ALL.map(Pattern::as_str).join(", ")
                    ),
                )
            })?;
            if !human_only.contains(&p) {
                human_only.push(p);
            }
        }

        Ok(Policy {
            paths: PathRules {
                allow_globs,
                allow,
                deny_globs,
                deny,
            },
            limits,
            content,
            windows,
            services: self.services.allow,
            risk: RiskSettings {
                auto_below,
                critical,
                critical_set,
            },
            trust: TrustSettings {
                promote_after,
                human_only,
            },
        })
    }
}

fn glob(section: &'static str, key: &str, text: &str, any_case: bool) -> Result<Glob, PolicyError> {
    if text.starts_with('/') || text.split('/').any(|c| c == "..") {
        return Err(invalid(
            section,
            key.to_owned(),
            format!("is {text:?}: globs match repository paths, with no leading `/` and no `..`"),
        ));
    }
    GlobBuilder::new(text)
        .literal_separator(true)
        .case_insensitive(any_case)
        .backslash_escape(true)
        .build()
        .map_err(|e| invalid(section, key.to_owned(), format!("is not a glob: {e}")))
}

fn globs(
    section: &'static str,
    key: &'static str,
    texts: &[String],
    any_case: bool,
) -> Result<(GlobSet, Vec<String>), PolicyError> {
    let mut builder = GlobSetBuilder::new();
    for (i, t) in texts.iter().enumerate() {
        builder.add(glob(section, &format!("{key}[{i}]"), t, any_case)?);
    }
    let set = builder.build().map_err(|e| invalid(section, key, e))?;
    Ok((set, texts.to_vec()))
}

fn window(i: usize, w: RawWindow) -> Result<Window, PolicyError> {
    let key = |k: &str| format!("[{i}].{k}");
    if w.name.trim().is_empty() {
        return Err(invalid("windows", key("name"), "must not be empty"));
    }
    let mut days = [false; 7];
    if w.days.is_empty() {
        days = [true; 7];
    }
    for d in &w.days {
        let lower = d.to_ascii_lowercase();
        let idx = DAYS.iter().position(|x| *x == lower).ok_or_else(|| {
            invalid(
                "windows",
                key("days"),
                format!("has {d:?}; days are mon, tue, wed, thu, fri, sat, sun"),
            )
        })?;
        days[idx] = true;
    }
    let from = clock(&w.from, false).ok_or_else(|| {
        invalid(
            "windows",
            key("from"),
            format!("is {:?}; write HH:MM, e.g. \"11:30\"", w.from),
        )
    })?;
    let to = clock(&w.to, true).ok_or_else(|| {
        invalid(
            "windows",
            key("to"),
            format!("is {:?}; write HH:MM, e.g. \"13:30\" (or \"24:00\")", w.to),
        )
    })?;
    if from == to {
        return Err(invalid(
            "windows",
            key("to"),
            "equals from; for a whole day write from = \"00:00\", to = \"24:00\"",
        ));
    }
    let utc_offset = match &w.utc_offset {
        None => 0,
        Some(text) => offset(text).ok_or_else(|| {
            invalid(
                "windows",
                key("utc_offset"),
                format!("is {text:?}; write +HH:MM or -HH:MM, e.g. \"+01:00\""),
            )
        })?,
    };
    Ok(Window {
        name: w.name,
        days,
        from,
        to,
        utc_offset,
    })
}

/// `HH:MM` as minutes after midnight; `24:00` only when `end`.
fn clock(text: &str, end: bool) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if end => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// `+HH:MM`/`-HH:MM` (or `Z`) as seconds east of UTC.
fn offset(text: &str) -> Option<i32> {
    if text == "Z" {
        return Some(0);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let minutes = clock(rest, false)?;
    if minutes > 14 * 60 {
        return None;
    }
    Some(sign * minutes as i32 * 60)
}

impl PathRules {
    /// Where a repository path stands: `deny` first, then `allow`.
    pub fn check(&self, path: &str) -> PathVerdict {
        if let Some(&i) = self.deny.matches(path).first() {
            return PathVerdict::Denied(self.deny_globs[i].clone());
        }
        if self.allow.is_match(path) {
            PathVerdict::Allowed
        } else {
            PathVerdict::NotAllowed
        }
    }

    pub fn allow_globs(&self) -> &[String] {
        &self.allow_globs
    }

    pub fn deny_globs(&self) -> &[String] {
        &self.deny_globs
    }
}

impl RiskSettings {
    /// The highest critical weight among the globs `path` matches, and that glob.
    pub fn criticality(&self, path: &str) -> Option<(&str, u32)> {
        self.critical_set
            .matches(path)
            .into_iter()
            .map(|i| (self.critical[i].0.as_str(), self.critical[i].1))
            .max_by_key(|(_, w)| *w)
    }
}

impl Window {
    /// Whether unix time `now` falls inside the window.
    pub fn contains(&self, now: i64) -> bool {
        let local = now.saturating_add(i64::from(self.utc_offset));
        let day = local.div_euclid(86_400);
        let minute = (local.rem_euclid(86_400) / 60) as u32;
        // 1970-01-01 was a Thursday (index 3, Monday first).
        let weekday = (day + 3).rem_euclid(7) as usize;
        let yesterday = (weekday + 6) % 7;
        if self.from < self.to {
            self.days[weekday] && minute >= self.from && minute < self.to
        } else {
            (self.days[weekday] && minute >= self.from)
                || (self.days[yesterday] && minute < self.to)
        }
    }

    /// "mon-fri 11:30-13:30 UTC+01:00", for messages.
    pub fn describe(&self) -> String {
        let days: Vec<&str> = DAYS
            .iter()
            .zip(self.days)
            .filter(|(_, on)| *on)
            .map(|(d, _)| *d)
            .collect();
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        let off = self.utc_offset.abs() / 60;
        let sign = if self.utc_offset < 0 { '-' } else { '+' };
        format!(
            "{} {}-{} UTC{sign}{:02}:{:02}",
            days.join(","),
            hm(self.from),
            hm(self.to),
            off / 60,
            off % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[paths]\nallow = [\"src/**\"]\n";

    fn err(text: &str) -> String {
        Policy::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_policy_takes_the_documented_defaults() {
        let p = Policy::parse(MINIMAL).unwrap();
        assert_eq!(
            p.limits,
            Limits {
                max_files: 5,
                max_lines: 80
            }
        );
        assert_eq!(p.content.new_dependencies, RuleAction::Deny);
        assert_eq!(p.content.schema_changes, RuleAction::Deny);
        assert!(
            !p.content.binary_allowed("src/logo.png"),
            "no binary anywhere by default"
        );
        assert_eq!(p.risk.auto_below, 30);
        assert_eq!(p.trust.promote_after, 10);
        assert_eq!(p.trust.human_only, vec![Pattern::Other]);
        assert!(p.windows.is_empty() && p.services.is_empty());
    }

    #[test]
    fn deny_wins_over_allow_and_unlisted_paths_are_not_allowed() {
        let p = Policy::parse(
            "[paths]\nallow = [\"src/**\"]\ndeny = [\"**/auth/**\", \"**/policy.toml\"]\n",
        )
        .unwrap();
        assert_eq!(p.paths.check("src/api/handler.rs"), PathVerdict::Allowed);
        assert_eq!(
            p.paths.check("src/auth/login.rs"),
            PathVerdict::Denied("**/auth/**".into())
        );
        assert_eq!(
            p.paths.check("src/Auth/login.rs"),
            PathVerdict::Denied("**/auth/**".into()),
            "deny globs ignore case"
        );
        assert_eq!(
            p.paths.check("policy.toml"),
            PathVerdict::Denied("**/policy.toml".into()),
            "**/ matches the top level too"
        );
        assert_eq!(p.paths.check("README.md"), PathVerdict::NotAllowed);
        assert_eq!(
            p.paths.check("SRC/a.rs"),
            PathVerdict::NotAllowed,
            "allow is exact"
        );
    }

    #[test]
    fn a_single_star_does_not_cross_directories() {
        let p = Policy::parse("[paths]\nallow = [\"src/*.rs\"]\n").unwrap();
        assert_eq!(p.paths.check("src/a.rs"), PathVerdict::Allowed);
        assert_eq!(p.paths.check("src/auth/a.rs"), PathVerdict::NotAllowed);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[paths]\nallow = []\n", "[paths] allow is empty"),
            ("[paths]\nallow = [\"src/[\"]\n", "[paths] allow[0] is not a glob"),
            ("[paths]\nallow = [\"/src/**\"]\n", "[paths] allow[0]"),
            ("[paths]\nallow = [\"a\"]\ndeny = [\"x\", \"../y\"]\n", "[paths] deny[1]"),
            (
                "[paths]\nallow = [\"a\"]\n[limits]\nmax_files = 0\n",
                "[limits] max_files is 0",
            ),
            (
                "[paths]\nallow = [\"a\"]\n[content]\nschema_changes = \"maybe\"\n",
                "[content] schema_changes is \"maybe\"",
            ),
            (
                "[paths]\nallow = [\"a\"]\n[[windows]]\nname = \"x\"\nfrom = \"25:00\"\nto = \"26:00\"\n",
                "[windows] [0].from",
            ),
            (
                "[paths]\nallow = [\"a\"]\n[[windows]]\nname = \"x\"\ndays = [\"funday\"]\nfrom = \"01:00\"\nto = \"02:00\"\n",
                "[windows] [0].days has \"funday\"",
            ),
            (
                "[paths]\nallow = [\"a\"]\n[[windows]]\nname = \"x\"\nfrom = \"01:00\"\nto = \"02:00\"\nutc_offset = \"1h\"\n",
                "[windows] [0].utc_offset",
            ),
            (
                "[paths]\nallow = [\"a\"]\n[risk]\nauto_below = 101\n",
                "[risk] auto_below is 101",
            ),
            (
                "[paths]\nallow = [\"a\"]\n[risk]\ncritical = [{ glob = \"a/**\", weight = 400 }]\n",
                "[risk] critical[0].weight is 400",
            ),
            (
                "[paths]\nallow = [\"a\"]\n[trust]\npromote_after = 0\n",
                "[trust] promote_after is 0",
            ),
            (
                "[paths]\nallow = [\"a\"]\n[trust]\nhuman_only = [\"yolo\"]\n",
                "[trust] human_only[0] is \"yolo\"",
            ),
            ("[paths]\nallow = [\"a\"]\n[limits]\nmax_file = 3\n", "max_file"),
            ("[limits]\nmax_files = 3\n", "paths"),
        ];
        for (text, expected) in cases {
            let e = err(text);
            assert!(e.contains(expected), "{text:?}: {e:?} lacks {expected:?}");
        }
    }

    #[test]
    fn windows_follow_the_local_clock_and_days() {
        let p = Policy::parse(
            "[paths]\nallow = [\"a\"]\n[[windows]]\nname = \"lunch\"\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\nfrom = \"11:30\"\nto = \"13:30\"\nutc_offset = \"+01:00\"\n",
        )
        .unwrap();
        let w = &p.windows[0];
        // Thursday 2026-11-26 00:00 UTC.
        let thu = 1_795_651_200;
        let at = |h: i64, m: i64| thu + h * 3600 + m * 60;
        assert!(!w.contains(at(10, 29)), "11:29 local");
        assert!(w.contains(at(10, 30)), "11:30 local");
        assert!(w.contains(at(12, 29)), "13:29 local");
        assert!(!w.contains(at(12, 30)), "13:30 local is the end");
        assert!(!w.contains(at(10, 30) + 2 * 86_400), "Saturday");
        assert_eq!(w.describe(), "mon,tue,wed,thu,fri 11:30-13:30 UTC+01:00");
    }

    #[test]
    fn a_window_past_midnight_belongs_to_the_day_it_starts() {
        let p = Policy::parse(
            "[paths]\nallow = [\"a\"]\n[[windows]]\nname = \"batch\"\ndays = [\"fri\"]\nfrom = \"23:00\"\nto = \"02:00\"\n",
        )
        .unwrap();
        let w = &p.windows[0];
        let fri = 1_795_651_200 + 86_400;
        assert!(w.contains(fri + 23 * 3600 + 30 * 60), "Friday 23:30");
        assert!(w.contains(fri + 86_400 + 3600), "Saturday 01:00");
        assert!(
            !w.contains(fri + 3600),
            "Friday 01:00 belongs to Thursday's window"
        );
    }

    #[test]
    fn criticality_is_the_highest_matching_weight() {
        let p = Policy::parse(
            "[paths]\nallow = [\"src/**\"]\n[risk]\ncritical = [{ glob = \"src/**\", weight = 5 }, { glob = \"src/checkout/**\", weight = 40 }]\n",
        )
        .unwrap();
        assert_eq!(
            p.risk.criticality("src/checkout/pay.rs"),
            Some(("src/checkout/**", 40))
        );
        assert_eq!(p.risk.criticality("src/a.rs"), Some(("src/**", 5)));
        assert_eq!(p.risk.criticality("lib/a.rs"), None);
    }

    #[test]
    fn promotion_needs_the_count_and_never_applies_to_human_only_patterns() {
        let p = Policy::parse(
            "[paths]\nallow = [\"a\"]\n[trust]\npromote_after = 3\nhuman_only = [\"retry-wrap\"]\n",
        )
        .unwrap();
        assert!(!p.promoted(Pattern::TimeoutBump, 2));
        assert!(p.promoted(Pattern::TimeoutBump, 3));
        assert!(!p.promoted(Pattern::RetryWrap, 100));
        assert!(!p.promoted(Pattern::Other, 100));
    }
}
