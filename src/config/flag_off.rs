//! `[daemon.flag_off]`: a bounded action, turning a feature flag off. Where the flag lives (an
//! HTTP call to the flag service, or a JSON file the app reads), which flags guardian may turn
//! off (the allow-list), how often (per hour, and a cool-down per flag), how long to check the
//! service recovered, whether only to record what it would do (shadow), and which roles may
//! ask for it through the API.

use std::path::PathBuf;

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::{ConfigError, RawFlagOff};

const SECTION: &str = "daemon.flag_off";

/// The longest flag name guardian takes.
pub const MAX_FLAG_LEN: usize = 100;

/// Whether `name` is a flag name guardian takes: 1 to 100 ASCII letters, digits and `_ - . :`,
/// so that it goes into a URL, a JSON body or a file's key as it is, and into a log or an email
/// as one plain word. The error names what is wrong, for the field's message.
pub fn check_flag_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_FLAG_LEN {
        return Err(format!(
            "must be 1 to {MAX_FLAG_LEN} characters, got {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(format!(
            "may hold only ASCII letters, digits and _ - . : (found {c:?})"
        ));
    }
    Ok(())
}

/// Where a flag is turned off.
#[derive(Clone, Debug, PartialEq)]
pub enum FlagTarget {
    /// An HTTP request to the flag service.
    Http(FlagService),
    /// A JSON object of flag name to `true`/`false` that the app reads: guardian sets the
    /// flag to `false` and leaves the other keys as they were, replacing the file atomically.
    File(PathBuf),
}

/// The flag service's request that turns a flag off.
#[derive(Clone, Debug, PartialEq)]
pub struct FlagService {
    /// `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// `http://` URL; `{flag}` is replaced by the flag's name.
    pub url: String,
    /// The request's JSON body, `{flag}` replaced likewise; none: an empty body.
    pub body: Option<String>,
    /// A file whose first line is sent as `Authorization: Bearer <token>`.
    pub token_file: Option<PathBuf>,
    pub timeout_secs: u32,
}

impl FlagService {
    /// `template` with the flag's name put in (names are plain words: see [`check_flag_name`]).
    pub fn fill(template: &str, flag: &str) -> String {
        template.replace("{flag}", flag)
    }
}

/// The roles that may ask for a flag to be turned off through the API (the operator always
/// may).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagRequester {
    Agent,
    Approver,
}

/// The flags guardian may turn off: globs over flag names (`*` any run of characters, `?` one),
/// kept with their text so that a refusal can quote them.
#[derive(Clone, Debug)]
pub struct FlagList {
    globs: Vec<String>,
    set: GlobSet,
}

impl PartialEq for FlagList {
    fn eq(&self, other: &FlagList) -> bool {
        self.globs == other.globs
    }
}

impl FlagList {
    /// Compiles `globs`; the error names the glob at fault.
    pub fn new(globs: &[String]) -> Result<FlagList, String> {
        let mut builder = GlobSetBuilder::new();
        for (i, text) in globs.iter().enumerate() {
            if text.trim().is_empty() {
                return Err(format!("[{i}] is empty"));
            }
            let glob = Glob::new(text).map_err(|e| format!("[{i}] is not a glob: {e}"))?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| e.to_string())?;
        Ok(FlagList {
            globs: globs.to_vec(),
            set,
        })
    }

    pub fn allows(&self, flag: &str) -> bool {
        self.set.is_match(flag)
    }

    pub fn globs(&self) -> &[String] {
        &self.globs
    }
}

/// `[daemon.flag_off]`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct FlagOffSettings {
    pub target: FlagTarget,
    /// The allow-list: no other flag is ever turned off.
    pub flags: FlagList,
    /// At most this many flags turned off (or, in shadow, that would have been) in any hour.
    pub max_per_hour: u32,
    /// The same flag is not turned off again within this many seconds.
    pub cooldown_secs: u32,
    /// How long to watch after turning a change's flag off to confirm the service recovered.
    pub verify_secs: u32,
    /// Decide and record (and email) what would be done; turn nothing off.
    pub shadow: bool,
    /// Who besides the operator may ask through the API (`POST /v1/actions/flag_off`).
    pub requesters: Vec<FlagRequester>,
}

impl RawFlagOff {
    pub fn validate(self) -> Result<FlagOffSettings, ConfigError> {
        let target = match (self.url, self.file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "file",
                    "and url are two places for the flags: set url (the flag service) or file \
                     (a file the app reads), not both",
                ))
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    SECTION,
                    "url",
                    "is missing: set url (an HTTP request to the flag service) or file (a JSON \
                     file of flag -> true/false the app reads)",
                ))
            }
            (None, Some(file)) => {
                for (key, set) in [
                    ("method", self.method.is_some()),
                    ("body", self.body.is_some()),
                    ("token_file", self.token_file.is_some()),
                    ("timeout_secs", self.timeout_secs.is_some()),
                ] {
                    if set {
                        return Err(ConfigError::invalid(
                            SECTION,
                            key,
                            "goes with url (the flag service), not with file",
                        ));
                    }
                }
                if !file.is_absolute() {
                    return Err(ConfigError::invalid(
                        SECTION,
                        "file",
                        format!("must be an absolute path, got {}", file.display()),
                    ));
                }
                FlagTarget::File(file)
            }
            (Some(url), None) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::invalid(
                        SECTION,
                        "url",
                        format!("must be the flag service's http:// or https:// URL, got {url:?}"),
                    ));
                }
                if url.parse::<url::Url>().is_err() {
                    return Err(ConfigError::invalid(
                        SECTION,
                        "url",
                        format!("is not a URL: {url:?}"),
                    ));
                }
                let method = self.method.unwrap_or_else(|| "POST".to_owned());
                if !["POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                    return Err(ConfigError::invalid(
                        SECTION,
                        "method",
                        format!(
                            "must be \"POST\", \"PUT\", \"PATCH\" or \"DELETE\", got {method:?}"
                        ),
                    ));
                }
                let names_flag = url.contains("{flag}")
                    || self.body.as_deref().is_some_and(|b| b.contains("{flag}"));
                if !names_flag {
                    return Err(ConfigError::invalid(
                        SECTION,
                        "url",
                        "must name the flag: put {flag} in url or in body",
                    ));
                }
                if let Some(body) = &self.body {
                    // With a plain flag name in it, the body must be JSON.
                    let sample = FlagService::fill(body, "flag");
                    if let Err(e) = serde_json::from_str::<serde_json::Value>(&sample) {
                        return Err(ConfigError::invalid(
                            SECTION,
                            "body",
                            format!("must be JSON (with {{flag}} where the name goes): {e}"),
                        ));
                    }
                }
                let timeout_secs = match self.timeout_secs {
                    None => 10,
                    Some(n) if (1..=120).contains(&n) => n as u32,
                    Some(n) => {
                        return Err(ConfigError::invalid(
                            SECTION,
                            "timeout_secs",
                            format!("must be whole seconds from 1 to 120, got {n}"),
                        ))
                    }
                };
                FlagTarget::Http(FlagService {
                    method,
                    url,
                    body: self.body,
                    token_file: self.token_file,
                    timeout_secs,
                })
            }
        };
        let globs = self.flags.unwrap_or_default();
        if globs.is_empty() {
            return Err(ConfigError::invalid(
                SECTION,
                "flags",
                "is missing or empty: the allow-list of flags guardian may turn off, e.g. \
                 [\"checkout-*\", \"new-search\"]",
            ));
        }
        let flags = FlagList::new(&globs).map_err(|e| ConfigError::invalid(SECTION, "flags", e))?;
        let whole = |key: &'static str, v: Option<i64>, range: (i64, i64), default: u32| match v {
            None => Ok(default),
            Some(n) if (range.0..=range.1).contains(&n) => Ok(n as u32),
            Some(n) => Err(ConfigError::invalid(
                SECTION,
                key,
                format!("must be from {} to {}, got {n}", range.0, range.1),
            )),
        };
        let mut requesters = Vec::new();
        for (i, role) in self
            .roles
            .unwrap_or_else(|| vec!["agent".to_owned(), "approver".to_owned()])
            .iter()
            .enumerate()
        {
            let r = match role.as_str() {
                "agent" => FlagRequester::Agent,
                "approver" => FlagRequester::Approver,
                other => {
                    return Err(ConfigError::invalid(
                        SECTION,
                        "roles",
                        format!(
                            "[{i}] must be \"agent\" or \"approver\" (the operator always may), \
                             got {other:?}"
                        ),
                    ))
                }
            };
            if !requesters.contains(&r) {
                requesters.push(r);
            }
        }
        Ok(FlagOffSettings {
            target,
            flags,
            max_per_hour: whole("max_per_hour", self.max_per_hour, (1, 100), 6)?,
            cooldown_secs: whole("cooldown_secs", self.cooldown_secs, (0, 86_400), 600)?,
            verify_secs: whole("verify_secs", self.verify_secs, (1, 86_400), 60)?,
            shadow: self.shadow.unwrap_or(false),
            requesters,
        })
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::config::testing::err;
    use crate::config::Config;

    fn settings(body: &str) -> FlagOffSettings {
        Config::parse(&format!("[daemon]\n[daemon.flag_off]\n{body}\n"))
            .unwrap()
            .daemon
            .unwrap()
            .flag_off
            .unwrap()
    }

    #[test]
    fn a_flag_service_or_a_file_with_an_allow_list_and_defaults() {
        let s = settings(
            "url = \"http://127.0.0.1:9000/flags/{flag}\"\nflags = [\"checkout-*\", \"search\"]",
        );
        assert_eq!(
            s.target,
            FlagTarget::Http(FlagService {
                method: "POST".into(),
                url: "http://127.0.0.1:9000/flags/{flag}".into(),
                body: None,
                token_file: None,
                timeout_secs: 10,
            })
        );
        assert_eq!(
            (s.max_per_hour, s.cooldown_secs, s.verify_secs, s.shadow),
            (6, 600, 60, false)
        );
        assert_eq!(
            s.requesters,
            [FlagRequester::Agent, FlagRequester::Approver]
        );
        assert!(s.flags.allows("checkout-v2") && s.flags.allows("search"));
        let hosted = settings("url = \"https://flags.example/api/{flag}\"\nflags = [\"search\"]");
        assert!(
            matches!(&hosted.target, FlagTarget::Http(s) if s.url.starts_with("https://")),
            "a hosted flag service is called over TLS"
        );
        assert!(!s.flags.allows("searching") && !s.flags.allows("billing"));
        let f = settings(
            "file = \"/etc/app/flags.json\"\nflags = [\"*\"]\nshadow = true\nroles = [\"approver\"]",
        );
        assert_eq!(f.target, FlagTarget::File("/etc/app/flags.json".into()));
        assert!(f.shadow);
        assert_eq!(f.requesters, [FlagRequester::Approver]);
    }

    #[test]
    fn every_bad_key_is_named() {
        let e = |body: &str| err(&format!("[daemon]\n[daemon.flag_off]\n{body}\n"));
        let url = "url = \"http://f/{flag}\"\n";
        expect![[r#"[daemon.flag_off] url is missing: set url (an HTTP request to the flag service) or file (a JSON file of flag -> true/false the app reads)"#]]
            .assert_eq(&e("flags = [\"a\"]"));
        expect!["[daemon.flag_off] file and url are two places for the flags: set url (the flag service) or file (a file the app reads), not both"]
            .assert_eq(&e(&format!("{url}file = \"/f\"\nflags = [\"a\"]")));
        expect!["[daemon.flag_off] body goes with url (the flag service), not with file"]
            .assert_eq(&e("file = \"/f\"\nbody = \"{}\"\nflags = [\"a\"]"));
        expect!["[daemon.flag_off] file must be an absolute path, got flags.json"]
            .assert_eq(&e("file = \"flags.json\"\nflags = [\"a\"]"));
        expect![[r#"[daemon.flag_off] url must be the flag service's http:// or https:// URL, got "ftp://f/{flag}""#]]
            .assert_eq(&e("url = \"ftp://f/{flag}\"\nflags = [\"a\"]"));
        expect!["[daemon.flag_off] url must name the flag: put {flag} in url or in body"]
            .assert_eq(&e("url = \"http://f/flags\"\nflags = [\"a\"]"));
        expect![[
            r#"[daemon.flag_off] method must be "POST", "PUT", "PATCH" or "DELETE", got "GET""#
        ]]
        .assert_eq(&e(&format!("{url}method = \"GET\"\nflags = [\"a\"]")));
        expect!["[daemon.flag_off] body must be JSON (with {flag} where the name goes): expected value at line 1 column 1"]
            .assert_eq(&e(&format!("{url}body = \"off\"\nflags = [\"a\"]")));
        expect!["[daemon.flag_off] timeout_secs must be whole seconds from 1 to 120, got 0"]
            .assert_eq(&e(&format!("{url}timeout_secs = 0\nflags = [\"a\"]")));
        expect![[r#"[daemon.flag_off] flags is missing or empty: the allow-list of flags guardian may turn off, e.g. ["checkout-*", "new-search"]"#]]
            .assert_eq(&e(url));
        expect!["[daemon.flag_off] flags [1] is not a glob: error parsing glob 'a[': unclosed character class; missing ']'"]
            .assert_eq(&e(&format!("{url}flags = [\"a\", \"a[\"]")));
        expect!["[daemon.flag_off] max_per_hour must be from 1 to 100, got 0"]
            .assert_eq(&e(&format!("{url}flags = [\"a\"]\nmax_per_hour = 0")));
        expect!["[daemon.flag_off] cooldown_secs must be from 0 to 86400, got -1"]
            .assert_eq(&e(&format!("{url}flags = [\"a\"]\ncooldown_secs = -1")));
        expect!["[daemon.flag_off] verify_secs must be from 1 to 86400, got 0"]
            .assert_eq(&e(&format!("{url}flags = [\"a\"]\nverify_secs = 0")));
        expect![[r#"[daemon.flag_off] roles [0] must be "agent" or "approver" (the operator always may), got "admin""#]]
            .assert_eq(&e(&format!("{url}flags = [\"a\"]\nroles = [\"admin\"]")));
    }

    #[test]
    fn a_flag_name_is_one_plain_word() {
        assert!(check_flag_name("checkout-v2.new_total:eu").is_ok());
        for bad in ["", "a b", "a/b", "a\"b", "{flag}", &"x".repeat(101)] {
            assert!(check_flag_name(bad).is_err(), "{bad:?}");
        }
    }
}
