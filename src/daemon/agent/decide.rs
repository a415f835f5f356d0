//! Whether a Sentry issue is handed to the agent now: pure (no store, no clock, no process).
//! The engine reads the issue as guardian keeps it into a [`Sighting`], keeps the [`Memory`] of
//! runs, and asks [`decide`] on every delivery about the issue; a run is started only on
//! [`Decision::Run`]. The rules, in the order they are asked:
//!
//! - one run per issue at a time, and never twice for the same issue, unless Sentry said it
//!   came back (`unresolved`) after the last run began;
//! - the filter: open (not resolved or ignored), new (first seen within a day) unless it came
//!   back, at least `min_level`, at least `min_events`, and neither its culprit nor any of its
//!   in-app files under `denied_paths`;
//! - at most `max_running` runs at once, and `max_runs_per_hour` started in any hour.
//!
//! An issue turned away by the last two is asked about again on its next delivery; one turned
//! away by the filter too (its count grows, its level may change).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use crate::config::{AgentSettings, SentryLevel};

/// An issue first seen longer ago than this is not new: it is handed over only if it comes back.
pub const NEW_WITHIN_SECS: f64 = 86_400.0;
/// The rate limit's window.
const HOUR: f64 = 3600.0;
/// How long a run is remembered for "never twice for the same issue": as long as guardian
/// remembers an issue not seen since (`store::sentry`).
pub const REMEMBERED_SECS: f64 = 90.0 * 86_400.0;

/// What guardian knows of an issue when a delivery about it arrives.
#[derive(Clone, Debug)]
pub struct Sighting<'a> {
    pub issue_id: &'a str,
    pub level: Option<&'a str>,
    /// `unresolved`, `resolved`, `ignored`, when Sentry said.
    pub status: Option<&'a str>,
    pub first_seen: f64,
    /// Events so far: Sentry's count, or the events guardian stored, whichever is more.
    pub events: u64,
    pub culprit: Option<&'a str>,
    /// Its in-app files, newest frame first.
    pub files: &'a [String],
    /// This delivery says the issue came back (Sentry's `unresolved`, a regression).
    pub reappeared: bool,
}

/// Why a run is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A new issue, never handed over before.
    New,
    /// An issue that came back after it was handed over (or that Sentry says came back).
    Reappeared,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::New => "new",
            Reason::Reappeared => "reappeared",
        }
    }
}

/// Why an issue is not handed over now.
#[derive(Clone, Debug, PartialEq)]
pub enum Skip {
    /// A run on this issue is under way.
    Running {
        run: String,
    },
    /// A run on this issue began at `at`, and the issue has not come back since.
    Handed {
        at: f64,
    },
    /// Sentry says it is resolved or ignored.
    Closed {
        status: String,
    },
    /// First seen more than a day before, and not come back: not a new issue.
    Old {
        first_seen: f64,
    },
    /// Its level is below `min_level` (or not one Sentry has).
    Level {
        level: Option<String>,
        min: SentryLevel,
    },
    FewEvents {
        events: u64,
        min: u64,
    },
    /// Its culprit or an in-app file is under a denied glob.
    Denied {
        path: String,
        glob: String,
    },
    /// `max_running` runs are under way.
    Busy {
        running: usize,
    },
    /// `max_runs_per_hour` runs began in the last hour; the next may start at `next_at`.
    RateLimited {
        runs: usize,
        next_at: f64,
    },
}

impl Skip {
    /// A short name for logs and counters.
    pub fn key(&self) -> &'static str {
        match self {
            Skip::Running { .. } => "running",
            Skip::Handed { .. } => "handed",
            Skip::Closed { .. } => "closed",
            Skip::Old { .. } => "old",
            Skip::Level { .. } => "level",
            Skip::FewEvents { .. } => "few_events",
            Skip::Denied { .. } => "denied_path",
            Skip::Busy { .. } => "busy",
            Skip::RateLimited { .. } => "rate_limited",
        }
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::report::units::when;
        match self {
            Skip::Running { run } => write!(f, "run {run} on it is under way"),
            Skip::Handed { at } => write!(
                f,
                "it was handed to the agent at {} and has not come back since",
                when(*at)
            ),
            Skip::Closed { status } => write!(f, "Sentry says it is {status}"),
            Skip::Old { first_seen } => write!(
                f,
                "it is not new (first seen {}) and has not come back",
                when(*first_seen)
            ),
            Skip::Level {
                level: Some(l),
                min,
            } => {
                write!(f, "its level {l:?} is below min_level {min}")
            }
            Skip::Level { level: None, min } => {
                write!(
                    f,
                    "its level is unknown, so not known to reach min_level {min}"
                )
            }
            Skip::FewEvents { events, min } => {
                write!(f, "{events} events, fewer than min_events {min}")
            }
            Skip::Denied { path, glob } => {
                write!(f, "{path} is under denied_paths {glob:?}")
            }
            Skip::Busy { running } => write!(
                f,
                "{running} run{} under way, max_running",
                if *running == 1 { " is" } else { "s are" }
            ),
            Skip::RateLimited { runs, next_at } => write!(
                f,
                "{runs} runs began in the last hour, max_runs_per_hour; the next may start at {}",
                when(*next_at)
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Run(Reason),
    Skip(Skip),
}

/// What the trigger remembers of its runs: those under way, when runs began in the last hour,
/// when each issue was last handed over, and issues that came back since.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// Issue, and the run on it with when it began.
    running: BTreeMap<String, (String, f64)>,
    /// When the runs of the last hour began, oldest first.
    starts: VecDeque<f64>,
    /// When each issue's latest run began.
    handed: HashMap<String, f64>,
    /// When an issue came back, after its latest run began.
    came_back: HashMap<String, f64>,
}

impl Memory {
    /// The memory of `runs` (issue, when it began) of the last [`REMEMBERED_SECS`], none under
    /// way (a restart ends them all).
    pub fn of_runs<'a>(runs: impl IntoIterator<Item = (&'a str, f64)>, now: f64) -> Memory {
        let mut memory = Memory::default();
        for (issue, at) in runs {
            if at > now - HOUR {
                memory.starts.push_back(at);
            }
            let last = memory.handed.entry(issue.to_owned()).or_insert(at);
            *last = last.max(at);
        }
        memory
            .starts
            .make_contiguous()
            .sort_by(|a, b| a.total_cmp(b));
        memory
    }

    /// Notes what a delivery says before it is decided on: that the issue came back.
    pub fn heard(&mut self, sighting: &Sighting, now: f64) {
        if sighting.reappeared {
            self.came_back.insert(sighting.issue_id.to_owned(), now);
        }
    }

    /// A run on `issue` began at `now`.
    pub fn started(&mut self, issue: &str, run: &str, now: f64) {
        self.running.insert(issue.to_owned(), (run.to_owned(), now));
        self.starts.push_back(now);
        self.handed.insert(issue.to_owned(), now);
        self.came_back.remove(issue);
        // Bounded: forget what no decision can need any more.
        while self.starts.front().is_some_and(|&t| t <= now - HOUR) {
            self.starts.pop_front();
        }
        if self.handed.len() > 10_000 {
            self.handed.retain(|_, at| *at > now - REMEMBERED_SECS);
        }
        if self.came_back.len() > 10_000 {
            self.came_back.retain(|_, at| *at > now - REMEMBERED_SECS);
        }
    }

    /// The run on `issue` ended.
    pub fn finished(&mut self, issue: &str) {
        self.running.remove(issue);
    }

    /// The runs under way: issue, run, when it began.
    pub fn running(&self) -> impl Iterator<Item = (&str, &str, f64)> {
        self.running
            .iter()
            .map(|(i, (r, at))| (i.as_str(), r.as_str(), *at))
    }

    /// How many runs began in the hour before `now`.
    pub fn runs_last_hour(&self, now: f64) -> usize {
        self.starts
            .iter()
            .filter(|&&t| t > now - HOUR && t <= now)
            .count()
    }

    /// Whether `issue` was handed over and has not come back since: nothing a delivery about
    /// it can change, but coming back (checked before reading the issue, to spare the read).
    pub fn settled(&self, issue: &str) -> bool {
        self.running.contains_key(issue)
            || (self.handed.contains_key(issue) && !self.came_back.contains_key(issue))
    }
}

/// Whether the issue `s` is handed to the agent at `now`, under `rules` and what `memory` holds.
pub fn decide(rules: &AgentSettings, memory: &Memory, s: &Sighting, now: f64) -> Decision {
    if let Some((run, _)) = memory.running.get(s.issue_id) {
        return Decision::Skip(Skip::Running { run: run.clone() });
    }
    let came_back = memory.came_back.contains_key(s.issue_id) || s.reappeared;
    if let (Some(&at), false) = (memory.handed.get(s.issue_id), came_back) {
        return Decision::Skip(Skip::Handed { at });
    }
    let reason = if came_back {
        Reason::Reappeared
    } else {
        Reason::New
    };
    if let Some(status) = s
        .status
        .filter(|st| matches!(*st, "resolved" | "ignored" | "muted"))
    {
        return Decision::Skip(Skip::Closed {
            status: status.to_owned(),
        });
    }
    if reason == Reason::New && now - s.first_seen > NEW_WITHIN_SECS {
        return Decision::Skip(Skip::Old {
            first_seen: s.first_seen,
        });
    }
    let level = s.level.and_then(SentryLevel::read);
    if level.is_none_or(|l| l < rules.min_level) {
        return Decision::Skip(Skip::Level {
            level: s.level.map(str::to_owned),
            min: rules.min_level,
        });
    }
    if s.events < rules.min_events {
        return Decision::Skip(Skip::FewEvents {
            events: s.events,
            min: rules.min_events,
        });
    }
    if let Some((path, glob)) = denied(rules, s) {
        return Decision::Skip(Skip::Denied { path, glob });
    }
    let running = memory.running.len();
    if running >= rules.max_running as usize {
        return Decision::Skip(Skip::Busy { running });
    }
    let recent: Vec<f64> = memory
        .starts
        .iter()
        .copied()
        .filter(|&t| t > now - HOUR && t <= now)
        .collect();
    if recent.len() >= rules.max_runs_per_hour as usize {
        return Decision::Skip(Skip::RateLimited {
            runs: recent.len(),
            next_at: recent.first().copied().unwrap_or(now) + HOUR,
        });
    }
    Decision::Run(reason)
}

/// The first of the issue's in-app files, or its culprit, under a denied glob, with the glob.
/// Paths are read as a repository path whatever their form (`app\\auth\\views.py`,
/// `C:\\srv\\app\\auth`, `/srv/app/auth/views.py`). A culprit is a file
/// (`app/auth/views.py in login`), a module (`app.auth.views in login`, `app.auth` for a
/// package's `__init__`) or a transaction (`POST /api/auth/login`): each of its words is
/// matched as a path, a module also with its dots as slashes, and each also as a directory
/// (anything under it).
fn denied(rules: &AgentSettings, s: &Sighting) -> Option<(String, String)> {
    let globs = &rules.denied_paths;
    for file in s.files {
        let path = repository_path(file);
        if let Some(glob) = forms(&path).find_map(|c| globs.matching(&c)) {
            return Some((file.clone(), glob.to_owned()));
        }
    }
    let culprit = s.culprit?;
    for word in culprit.split_whitespace() {
        let path = repository_path(word);
        let mut candidates = vec![path.clone()];
        if !path.contains('/') && path.contains('.') {
            candidates.push(path.replace('.', "/"));
        }
        for candidate in candidates {
            if let Some(glob) = forms(&candidate).find_map(|c| globs.matching(&c)) {
                return Some((format!("culprit {culprit}"), glob.to_owned()));
            }
        }
    }
    None
}

/// A path as the repository would name it: `/` for `\\`, no drive letter, no leading `/`.
fn repository_path(raw: &str) -> String {
    let path = raw.replace('\\', "/");
    let path = match path.as_bytes() {
        [drive, b':', ..] if drive.is_ascii_alphabetic() => &path[2..],
        _ => &path[..],
    };
    path.trim_start_matches('/').to_owned()
}

/// A path, and the path as a directory (something under it), for matching against globs.
fn forms(path: &str) -> impl Iterator<Item = String> {
    [path.to_owned(), format!("{}/-", path.trim_end_matches('/'))].into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeniedPaths;

    const T0: f64 = 1_764_000_000.0;

    fn rules() -> AgentSettings {
        AgentSettings {
            command: vec!["/bin/agent".into()],
            workdir: None,
            timeout_secs: 60,
            min_level: SentryLevel::Error,
            min_events: 3,
            denied_paths: DeniedPaths::new(&["**/auth/**".into(), "migrations/**".into()]).unwrap(),
            max_runs_per_hour: 2,
            max_running: 1,
            user: None,
            token_file: "/a".into(),
            pass_env: Vec::new(),
        }
    }

    fn sighting<'a>(issue: &'a str, files: &'a [String]) -> Sighting<'a> {
        Sighting {
            issue_id: issue,
            level: Some("error"),
            status: Some("unresolved"),
            first_seen: T0,
            events: 5,
            culprit: Some("app.cart in total"),
            files,
            reappeared: false,
        }
    }

    fn skip(d: Decision) -> String {
        match d {
            Decision::Skip(s) => format!("{}: {s}", s.key()),
            Decision::Run(r) => format!("run ({})", r.as_str()),
        }
    }

    #[test]
    fn the_filter_hands_over_only_open_new_severe_frequent_issues_outside_denied_paths() {
        let (rules, memory) = (rules(), Memory::default());
        let files = vec!["app/cart.py".to_owned()];
        let now = T0 + 10.0;
        let s = sighting("1", &files);
        assert_eq!(decide(&rules, &memory, &s, now), Decision::Run(Reason::New));
        let cases: Vec<(Sighting, &str)> = vec![
            (
                Sighting {
                    level: Some("warning"),
                    ..s.clone()
                },
                "level: its level \"warning\" is below min_level error",
            ),
            (
                Sighting {
                    level: None,
                    ..s.clone()
                },
                "level: its level is unknown, so not known to reach min_level error",
            ),
            (
                Sighting {
                    events: 2,
                    ..s.clone()
                },
                "few_events: 2 events, fewer than min_events 3",
            ),
            (
                Sighting {
                    status: Some("resolved"),
                    ..s.clone()
                },
                "closed: Sentry says it is resolved",
            ),
            (
                Sighting {
                    first_seen: now - NEW_WITHIN_SECS - 1.0,
                    ..s.clone()
                },
                "old: it is not new (first seen 2025-11-23 16:00:09 UTC (unix 1763913609)) and has not come back",
            ),
            (
                Sighting {
                    culprit: Some("app.auth.views in login"),
                    ..s.clone()
                },
                "denied_path: culprit app.auth.views in login is under denied_paths \"**/auth/**\"",
            ),
        ];
        // However the path is written.
        for culprit in [
            "app.auth in login",
            "POST /api/auth/login",
            "app\\auth\\views.py in login",
            "C:\\srv\\app\\auth\\charge.cs",
        ] {
            let s = Sighting {
                culprit: Some(culprit),
                ..s.clone()
            };
            assert!(
                skip(decide(&rules, &memory, &s, now)).starts_with("denied_path: "),
                "{culprit} was handed over"
            );
        }
        for file in ["src\\auth\\session.py", "/srv/app/auth/session.py"] {
            let files = vec![file.to_owned()];
            assert!(
                skip(decide(&rules, &memory, &sighting("1", &files), now))
                    .starts_with("denied_path: "),
                "{file} was handed over"
            );
        }
        for (s, said) in cases {
            assert_eq!(skip(decide(&rules, &memory, &s, now)), said);
        }
        let files = vec!["app/cart.py".to_owned(), "src/Auth/session.py".to_owned()];
        assert_eq!(
            skip(decide(&rules, &memory, &sighting("1", &files), now)),
            "denied_path: src/Auth/session.py is under denied_paths \"**/auth/**\""
        );
        // Fatal is above error; a level as an SDK spells it reads.
        let fatal = Sighting {
            level: Some("FATAL"),
            ..sighting("1", &[])
        };
        assert_eq!(
            decide(&rules, &memory, &fatal, now),
            Decision::Run(Reason::New)
        );
    }

    #[test]
    fn one_run_per_issue_at_a_time_and_never_twice_unless_it_comes_back() {
        let rules = AgentSettings {
            max_running: 2,
            max_runs_per_hour: 10,
            ..rules()
        };
        let mut memory = Memory::default();
        let s = sighting("1", &[]);
        assert_eq!(decide(&rules, &memory, &s, T0), Decision::Run(Reason::New));
        memory.started("1", "agr_1", T0);
        assert_eq!(
            skip(decide(&rules, &memory, &s, T0 + 1.0)),
            "running: run agr_1 on it is under way"
        );
        // Another issue may run beside it.
        assert_eq!(
            decide(&rules, &memory, &sighting("2", &[]), T0 + 1.0),
            Decision::Run(Reason::New)
        );
        memory.finished("1");
        assert!(memory.settled("1"));
        assert_eq!(
            skip(decide(&rules, &memory, &s, T0 + 60.0)),
            "handed: it was handed to the agent at 2025-11-24 16:00:00 UTC (unix 1764000000) and has not come back since"
        );
        // Sentry says it came back: once more, then settled again.
        let back = Sighting {
            reappeared: true,
            ..s.clone()
        };
        memory.heard(&back, T0 + 120.0);
        assert!(!memory.settled("1"));
        assert_eq!(
            decide(&rules, &memory, &back, T0 + 120.0),
            Decision::Run(Reason::Reappeared)
        );
        // Heard, and decided on a later delivery (a run on another issue was in the way).
        assert_eq!(
            decide(&rules, &memory, &s, T0 + 121.0),
            Decision::Run(Reason::Reappeared)
        );
        memory.started("1", "agr_2", T0 + 121.0);
        memory.finished("1");
        assert_eq!(
            skip(decide(&rules, &memory, &s, T0 + 200.0))
                .split(':')
                .next(),
            Some("handed")
        );
        // A reappearance long after first sight is still handed over: it is not "old".
        let old_back = Sighting {
            first_seen: T0 - 30.0 * 86_400.0,
            reappeared: true,
            ..sighting("3", &[])
        };
        assert_eq!(
            decide(&rules, &memory, &old_back, T0 + 300.0),
            Decision::Run(Reason::Reappeared)
        );
    }

    #[test]
    fn runs_are_limited_at_once_and_per_hour() {
        let rules = rules();
        let mut memory = Memory::default();
        memory.started("1", "agr_1", T0);
        assert_eq!(
            skip(decide(&rules, &memory, &sighting("2", &[]), T0 + 5.0)),
            "busy: 1 run is under way, max_running"
        );
        memory.finished("1");
        memory.started("2", "agr_2", T0 + 10.0);
        memory.finished("2");
        assert_eq!(
            skip(decide(&rules, &memory, &sighting("3", &[]), T0 + 20.0)),
            "rate_limited: 2 runs began in the last hour, max_runs_per_hour; the next may start at 2025-11-24 17:00:00 UTC (unix 1764003600)"
        );
        // An hour after the first began, one more may.
        assert_eq!(
            decide(&rules, &memory, &sighting("3", &[]), T0 + 3600.5),
            Decision::Run(Reason::New)
        );
    }

    #[test]
    fn the_memory_of_a_restart_keeps_the_hours_runs_and_every_issue_handed_over() {
        let rules = rules();
        let now = T0 + 7200.0;
        let memory = Memory::of_runs([("1", T0), ("2", now - 100.0), ("3", now - 50.0)], now);
        assert_eq!(
            memory.running().count(),
            0,
            "none under way after a restart"
        );
        assert_eq!(
            skip(decide(&rules, &memory, &sighting("1", &[]), now))
                .split(':')
                .next(),
            Some("handed")
        );
        assert_eq!(
            skip(decide(&rules, &memory, &sighting("4", &[]), now))
                .split(':')
                .next(),
            Some("rate_limited")
        );
    }
}
